//! The service around the engine: ECR events and their triage, the handler
//! for Lambda payloads and SQS messages, and configuration from the
//! environment.

pub mod config;
pub mod event;
pub mod handler;
pub mod metrics;
pub mod sweep;
