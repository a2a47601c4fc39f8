//! ecr-remediator: repairs what a default `docker buildx build --push` leaves
//! in Amazon ECR.
//!
//! Layers, each depending only on the ones above it:
//!
//! - [`vocabulary`] and [`time`]: the words, instants and durations records,
//!   flags and filters share (pure);
//! - [`oci`]: the manifest model, digests, names, classification (pure);
//! - [`policy`]: per-repository policy, globs, tag templates (pure);
//! - [`decide`]: the decisions (what to do with one pushed index, one
//!   leftover, one kept index; the one deletion gate), pure;
//! - [`engine`]: the IO line, read → decide → apply, over the [`Registry`]
//!   and [`AuditSink`] traits (no AWS SDK);
//! - [`sweep`]: whole-registry walks (selection, the one per-repository
//!   walk, signature gaps, replication drift);
//! - [`service`]: every input parsed once into a message, the one handler
//!   the Lambda function and the SQS worker call, sweeps, configuration,
//!   metrics;
//! - [`trail`]: audit-trail questions as CloudWatch Logs Insights queries,
//!   run over the [`trail::Insights`] trait, and their rendering;
//! - [`aws`]: the adapters, the only code that imports `aws_sdk_*`.
//!
//! The binaries (`src/bin/`) are thin wiring. Start from the names
//! re-exported below; see `ARCHITECTURE.md` for the map.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod aws;
pub mod decide;
pub mod engine;
pub mod logging;
pub mod oci;
pub mod policy;
pub mod selftest;
pub mod service;
pub mod sweep;
pub mod time;
pub mod trail;
pub mod vocabulary;

// The façade: what the binaries and tests start from.
pub use engine::audit::{AuditRecord, AuditSink, Outcome, Trigger};
pub use engine::registry::{Registry, RegistryError};
pub use engine::{Engine, Job, Purpose};
pub use oci::digest::Digest;
pub use oci::manifest::RawManifest;
pub use oci::names::{AccountId, ImageTag, RepositoryName};
pub use policy::{Mode, Policy, PolicySet};
pub use service::config::ServiceConfig;
pub use service::handler::{Delivery, Handler};
pub use sweep::signing::SignatureGap;
pub use time::now_ms;
