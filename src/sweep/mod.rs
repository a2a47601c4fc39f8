//! Whole-registry walks, for sweeps only (never on the per-push path):
//! which repositories are in [`scan::Scope`], **the one per-repository
//! walk** (`walk`) that the CLI's sweep and the scheduled sweep (which
//! enqueues requests) both call, what a listing selects ([`select`]), and
//! what a sweep reports without changing: signature gaps (`signing`) and
//! replication drift (`replication`).

pub(crate) mod replication;
pub mod scan;
pub mod select;
pub(crate) mod signing;
pub(crate) mod walk;
