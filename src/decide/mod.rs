//! Decisions, pure: no IO, no `async`, nothing of the IO line (`engine`) or above.
//!
//! From what the engine read ([`view::RepositoryView`], the classified index,
//! the policy, now), each module answers one question:
//!
//! - [`plan`]: what to do with one pushed index (tag or promote, derived
//!   tags, the keep tag), as an ordered [`planned::Plan`] of [`action`]s and
//!   [`skip`]ped actions with their reasons;
//! - `deletion`: which of its attestations (and the index) a remediation
//!   frees, and when (`provenance`: whether provenance survives them);
//! - [`cleanup`], [`retire`], `undo`: what to do with one leftover, one
//!   kept index, one promotion to take back;
//! - `gate`: **the deletion gate**, the one rule every deletion on every
//!   path passes, and again right before the call;
//! - `checkpoint`: what an earlier delivery's checkpoint left open.
//!
//! [`view`] and [`usage`] are the evidence the decisions read.

pub mod action;
pub(crate) mod checkpoint;
pub mod cleanup;
pub(crate) mod deletion;
pub(crate) mod gate;
pub mod plan;
pub(crate) mod planned;
pub(crate) mod provenance;
pub mod retire;
pub mod skip;
pub(crate) mod undo;
pub mod usage;
pub mod view;
