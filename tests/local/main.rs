//! The pure and in-memory tiers, and the CLI's local checks: one test
//! binary (each links the whole crate and the AWS SDK, so fewer binaries
//! build and link faster). Nothing here needs the Python emulator.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

mod bootstrap_init;
mod cli_aws_config;
mod cli_inspect;
mod engine_memory;
mod fixtures;
mod layers;
mod plan_properties;
mod plan_scenarios;
mod saved_queries;
