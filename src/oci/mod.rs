//! The OCI/Docker manifest model and what an index's entries are: pure data,
//! no IO.

pub mod build;
pub mod classify;
pub mod companion;
pub mod digest;
pub mod inspect;
pub mod lambda;
pub mod manifest;
pub mod media_type;
pub mod names;
pub mod referrer;
pub mod signature;
