//! ecr-remediator: repairs what a default `docker buildx build --push` leaves
//! in Amazon ECR.
//!
//! Layers, each depending only on the ones above it:
//!
//! - [`vocabulary`] and [`time`]: the words, instants and durations records,
//!   flags and filters share (pure);
//! - [`oci`]: the manifest model, digests, names, classification (pure);
//! - [`policy`]: per-repository policy, globs, tag templates (pure);
//! - [`engine`]: the planner and the read → plan → apply line over the
//!   [`engine::registry::Registry`] and [`engine::audit::AuditSink`] traits
//!   (no AWS SDK);
//! - [`service`]: every input parsed once into a message, the one handler
//!   the Lambda function and the SQS worker call, sweeps, configuration,
//!   metrics;
//! - [`trail`]: audit-trail questions as CloudWatch Logs Insights queries,
//!   run over the [`trail::Insights`] trait, and their rendering;
//! - [`aws`]: the adapters, the only code that imports `aws_sdk_*`.
//!
//! The binaries (`src/bin/`) are thin wiring. See `ARCHITECTURE.md` for the map.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod aws;
pub mod decide;
pub mod engine;
pub mod logging;
pub mod oci;
pub mod policy;
pub mod service;
pub mod sweep;
pub mod time;
pub mod trail;
pub mod vocabulary;
