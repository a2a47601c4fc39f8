//! The emulator tier's tests that touch only their own repositories, queues
//! and parameters (faults scoped to a repository): one binary, one emulator
//! process. Tests that change account-wide state (faults on every caller's
//! `PutEvents`, `StartQuery` or `ListClusters`, registry settings, global
//! call counters) stay in their own binaries (`tests/*.rs`), each with its
//! own emulator, so they cannot disturb these.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../harness/mod.rs"]
mod harness;

mod audit_bus;
mod live;
mod policy_store;
mod queued;
mod referrers;
mod regressions;
mod worker;
