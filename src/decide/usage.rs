//! Evidence that something outside the registry uses an image: what runs in
//! the image's account (ECS, Lambda) by digest, and when the registry last
//! recorded a pull. Pure data; the scan itself is the adapter's
//! (`aws::workloads`), reached through the registry's `images_in_use`.
//!
//! A deletion needs this evidence (see `crate::decide::gate::keeps`):
//! unknown evidence keeps, as does a scan that failed.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::oci::digest::Digest;

crate::vocabulary::vocabulary! {
    /// What kind of workload uses an image.
    pub enum WorkloadKind {
        /// An ECS service: one of its current service revisions resolved the image to this digest.
        EcsService = "ecs_service",
        /// A running (or starting) ECS task's container reports this digest.
        EcsTask = "ecs_task",
        /// A task definition an ECS service or task uses names the image by this digest.
        EcsTaskDefinition = "ecs_task_definition",
        /// A Lambda function (or one of its versions) resolved its image to this digest.
        LambdaFunction = "lambda_function",
    }
}

/// One workload that uses an image.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Workload {
    /// What it is.
    pub kind: WorkloadKind,
    /// Its ARN (or name, when the service gives no ARN).
    pub name: String,
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind, self.name)
    }
}

/// What one scan of an account's workloads found: every image digest a
/// workload uses, whatever repository it names (a digest is the content,
/// so matching on it alone can only keep more).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InUse {
    by_digest: BTreeMap<Digest, Vec<Workload>>,
    /// When the scan started (milliseconds since the epoch): it cannot have
    /// seen anything that started using an image after this.
    pub scanned_at_ms: i64,
    /// How many workloads were looked at (services, tasks, functions).
    pub workloads_seen: usize,
}

/// At most this many workloads are named for one digest in a record.
pub const NAMED_PER_DIGEST: usize = 5;

impl InUse {
    /// An empty scan made at `scanned_at_ms`.
    pub fn new(scanned_at_ms: i64) -> Self {
        InUse {
            by_digest: BTreeMap::new(),
            scanned_at_ms,
            workloads_seen: 0,
        }
    }

    /// Notes that `workload` uses `digest`.
    pub fn add(&mut self, digest: Digest, workload: Workload) {
        let users = self.by_digest.entry(digest).or_default();
        if !users.contains(&workload) {
            users.push(workload);
        }
    }

    /// Who uses `digest` (empty when nothing seen does).
    pub fn users(&self, digest: &Digest) -> &[Workload] {
        self.by_digest.get(digest).map_or(&[], Vec::as_slice)
    }

    /// How many distinct digests are in use.
    pub fn digests(&self) -> usize {
        self.by_digest.len()
    }
}

/// Finds the image digest in an image reference as ECS and Lambda report it
/// (`<registry>/<repository>@sha256:<hex>`, possibly with a tag before the
/// `@`); `None` for a reference by tag only.
pub fn digest_in_reference(reference: &str) -> Option<Digest> {
    let (_, digest) = reference.rsplit_once('@')?;
    Digest::parse(digest).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    #[test]
    fn digests_are_found_in_references_by_digest_only() {
        let d = Digest::parse(&format!("sha256:{HEX}")).unwrap();
        let uri = format!("123456789012.dkr.ecr.us-east-1.amazonaws.com/team/app@sha256:{HEX}");
        assert_eq!(digest_in_reference(&uri), Some(d.clone()));
        let tagged = format!("123456789012.dkr.ecr.us-east-1.amazonaws.com/app:v1@sha256:{HEX}");
        assert_eq!(digest_in_reference(&tagged), Some(d));
        assert_eq!(
            digest_in_reference("123456789012.dkr.ecr.us-east-1.amazonaws.com/app:v1"),
            None
        );
        assert_eq!(digest_in_reference("app@sha256:short"), None);
    }

    #[test]
    fn a_workload_is_named_once_per_digest() {
        let d = Digest::parse(&format!("sha256:{HEX}")).unwrap();
        let mut found = InUse::new(0);
        let w = Workload {
            kind: WorkloadKind::EcsService,
            name: "arn:aws:ecs:us-east-1:123456789012:service/c/s".into(),
        };
        found.add(d.clone(), w.clone());
        found.add(d.clone(), w.clone());
        assert_eq!(found.users(&d), &[w]);
        assert_eq!(found.digests(), 1);
    }
}
