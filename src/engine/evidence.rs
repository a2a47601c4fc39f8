//! Reading what a deletion waits on, only when it waits on it, then
//! planning again: what is attached to the candidates
//! (`engine::read`), when they were pushed and last pulled
//! (one `DescribeImages`), and what runs in the account (the registry's
//! workload scan, cached by the adapter).
//!
//! Rounds, each reading only what is missing: attachments and push/pull
//! times first; the scan last, once the plan still wants to delete after
//! the grace period (within it, deletions are deferred and nothing is
//! scanned: a push never pays for a scan). A scan that fails is recorded in
//! the view, and every deletion then keeps its candidate (`in_use_unknown`).

use super::Engine;
use crate::decide::planned::Plan;
use crate::decide::skip::SkipReason;
use crate::engine::audit::AuditSink;
use crate::engine::registry::{Registry, RegistryError};
use crate::oci::classify::Classification;
use crate::oci::digest::Digest;
use crate::oci::names::RepositoryName;
use crate::policy::Policy;

/// How long after a push a workload may still be resolving the image's
/// tag (an ECS deployment records the digest it resolved within seconds):
/// a scan must have started at least this long after the candidate's push
/// to be used for it.
pub const SETTLE_MS: i64 = 60_000;

/// Most reading rounds before the plan is taken as it is (what is still
/// unread then keeps its manifest, and a tag whose signatures are unread
/// stays): the index's signatures, the image's, attachments and times, the
/// scan.
const ROUNDS: usize = 5;

/// The manifests whose signatures the plan's signature gate waits on.
fn plan_waits_on_signatures(plan: &Plan, classification: &Classification) -> Vec<Digest> {
    plan.skipped
        .iter()
        .filter(|s| matches!(s.reason, SkipReason::SignaturesUnknown))
        .map(|s| s.digest.clone().unwrap_or_else(|| classification.digest.clone()))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

impl<R: Registry, A: AuditSink> Engine<'_, R, A> {
    /// Plans with `planned`; while a deletion waits on evidence, reads it
    /// and plans again. The dry run goes through here too, so it reads and
    /// plans exactly as the real run.
    pub(super) async fn plan_with_evidence(
        &self,
        repository: &RepositoryName,
        policy: &Policy,
        snapshot: &mut super::read::Snapshot,
        planned: impl Fn(&super::read::Snapshot) -> Plan,
    ) -> Result<Plan, RegistryError> {
        let mut plan = planned(snapshot);
        for _ in 0..ROUNDS {
            if !self.read_evidence(repository, policy, &plan, snapshot).await? {
                break;
            }
            plan = planned(snapshot);
        }
        Ok(plan)
    }

    /// Reads the next evidence `plan` waits on (what signs the manifests a
    /// tag moves between first, then attachments and times, then the scan);
    /// false when nothing was missing.
    async fn read_evidence(
        &self,
        repository: &RepositoryName,
        policy: &Policy,
        plan: &Plan,
        snapshot: &mut super::read::Snapshot,
    ) -> Result<bool, RegistryError> {
        let super::read::Snapshot {
            classification,
            view,
            known,
            ..
        } = snapshot;
        let signatures: Vec<Digest> = plan_waits_on_signatures(plan, classification)
            .into_iter()
            .filter(|d| view.attachments(d).is_none())
            .collect();
        if !signatures.is_empty() {
            self.read_attachments(repository, view, known, &signatures).await?;
            return Ok(true);
        }
        let waiting = super::read::waiting_on(plan, classification, view);
        if waiting.is_empty() {
            return Ok(false);
        }
        let no_attachments: Vec<Digest> = waiting
            .iter()
            .filter(|d| view.attachments(d).is_none())
            .cloned()
            .collect();
        let mut undescribed: Vec<Digest> = waiting
            .iter()
            .filter(|d| view.pull_time(d).is_none())
            .cloned()
            .collect();
        if view.pushed_at(&classification.digest).is_none() && waiting.contains(&classification.digest) {
            undescribed.push(classification.digest.clone());
        }
        undescribed.sort();
        undescribed.dedup();
        if !no_attachments.is_empty() || !undescribed.is_empty() {
            if !no_attachments.is_empty() {
                self.read_attachments(repository, view, known, &no_attachments).await?;
            }
            if !undescribed.is_empty() {
                let info = self
                    .retry(|| self.registry.describe_images(repository, &undescribed))
                    .await?;
                super::read::note_times(view, &info);
            }
            return Ok(true);
        }
        if policy.keep_if_in_use && view.in_use().is_none() {
            let now = crate::time::now_ms();
            let newest_push = waiting.iter().filter_map(|d| view.pushed_at(d)).max();
            let not_before = newest_push.map_or(now, |p| p.saturating_add(SETTLE_MS).min(now));
            let scan = self.registry.images_in_use(not_before).await;
            view.set_in_use(scan.map_err(|e| e.to_string()));
            return Ok(true);
        }
        Ok(false)
    }
}
