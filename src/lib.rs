//! ecr-remediator: repairs what a default `docker buildx build --push` leaves
//! in Amazon ECR.
//!
//! This library is the pure core: the manifest model ([`manifest`]),
//! classification ([`classify`]), policy ([`policy`]) and planning
//! ([`plan`]). Nothing here does IO or knows the AWS SDK; adapters and
//! binaries sit at the edge. See `ARCHITECTURE.md` for the map.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod audit;
pub mod aws;
pub mod classify;
pub mod config;
pub mod digest;
pub mod engine;
pub mod event;
pub mod glob;
pub mod handler;
pub mod inspect;
pub mod logging;
pub mod manifest;
pub mod media_type;
pub mod names;
pub mod plan;
pub mod policy;
pub mod registry;
pub mod repository;
pub mod retry;
pub mod template;
