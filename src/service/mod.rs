//! The service around the engine: every input parsed once into a
//! [`message::Message`], triage of ECR's events, the one handler the Lambda
//! function, the SQS worker and the CLI call, sweeps (in-process, or
//! enqueued as requests), metrics, and configuration from the environment.

pub mod config;
pub(crate) mod enqueue;
pub mod handler;
pub(crate) mod lambda;
pub mod live_policy;
pub mod manual;
pub mod message;
pub mod metrics;
pub(crate) mod request;
pub mod sweep;
pub(crate) mod triage;
