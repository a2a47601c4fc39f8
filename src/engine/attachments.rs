//! Reading what is attached to the manifests a plan would delete: their
//! companion tags and their OCI referrers (see [`crate::engine::keep`]).
//!
//! Read only when a deletion waits on it: the planner marks such a
//! manifest `attachments_unknown` (or `usage_unknown`, see
//! [`crate::engine::evidence`]), the engine reads, and plans again.
//! Companion tags ride in a `BatchGetImage` the reader already makes where
//! it can (the per-push path's second read); referrers cost one
//! `ListImageReferrers` per manifest, made concurrently.

use std::collections::BTreeSet;

use super::read::{self, companion_ids, note_companions};
use super::{Engine, Known};
use crate::engine::audit::AuditSink;
use crate::engine::planned::Plan;
use crate::engine::registry::{ImageRef, Registry, RegistryError};
use crate::engine::skip::SkipReason;
use crate::engine::view::RepositoryView;
use crate::oci::classify::{Classification, EntryClass};
use crate::oci::digest::Digest;
use crate::oci::names::RepositoryName;

/// The manifests whose evidence the plan waits on: those it kept as
/// `attachments_unknown` or `usage_unknown` and, when the index is one,
/// every attestation entry that could be deleted after it (so that one read
/// covers all).
pub(super) fn waiting_on(plan: &Plan, classification: &Classification, view: &RepositoryView) -> Vec<Digest> {
    let mut out: BTreeSet<Digest> = plan
        .skipped
        .iter()
        .filter(|s| matches!(s.reason, SkipReason::AttachmentsUnknown | SkipReason::UsageUnknown))
        .map(|s| s.digest.clone().unwrap_or_else(|| classification.digest.clone()))
        .collect();
    if out.contains(&classification.digest) {
        for e in &classification.entries {
            if matches!(e.class, EntryClass::Attestation { .. }) && view.subject_of(e.digest()).is_none() {
                out.insert(e.digest().clone());
            }
        }
    }
    out.into_iter().collect()
}

impl<R: Registry, A: AuditSink> Engine<'_, R, A> {
    /// Reads again what is attached to `digests` (their companion tags in
    /// one `BatchGetImage`, their referrers of any status with one
    /// `ListImageReferrers` each, all at once), replacing what `view` knew:
    /// what is not read again is unknown, and keeps its manifest.
    pub(super) async fn reread_attachments(
        &self,
        repository: &RepositoryName,
        view: &mut RepositoryView,
        digests: &[Digest],
    ) -> Result<(), RegistryError> {
        for d in digests {
            view.forget_attachments(d);
        }
        let ids = companion_ids(digests);
        let (fetched, lists) = futures_util::future::try_join(
            self.retry(|| self.registry.get_images(repository, &ids)),
            futures_util::future::try_join_all(
                digests
                    .iter()
                    .map(|d| async move { self.retry(|| self.registry.list_referrers(repository, d)).await }),
            ),
        )
        .await?;
        note_companions(view, digests, &fetched);
        for (d, referrers) in digests.iter().zip(lists) {
            view.set_listed_referrers(d, referrers);
        }
        Ok(())
    }

    /// Reads the attachments of `digests` into `view`: the companion tags not
    /// read yet (one `BatchGetImage`) and the referrers of each (one
    /// `ListImageReferrers` each, concurrently).
    pub(super) async fn read_attachments(
        &self,
        repository: &RepositoryName,
        view: &mut RepositoryView,
        known: &mut Known,
        digests: &[Digest],
    ) -> Result<(), RegistryError> {
        let unread: Vec<Digest> = digests
            .iter()
            .filter(|d| !view.companion_tags_read(d))
            .cloned()
            .collect();
        if !unread.is_empty() {
            let ids = companion_ids(&unread);
            let fetched = self.retry(|| self.registry.get_images(repository, &ids)).await?;
            note_companions(view, &unread, &fetched);
            for (id, result) in &fetched {
                if let (ImageRef::Tag(t), Ok(m)) = (id, result) {
                    read::note(view, known, m, Some(t));
                }
            }
        }
        let lists = futures_util::future::try_join_all(
            digests
                .iter()
                .map(|d| async move { self.retry(|| self.registry.list_referrers(repository, d)).await }),
        )
        .await?;
        for (d, referrers) in digests.iter().zip(lists) {
            view.set_listed_referrers(d, referrers);
        }
        Ok(())
    }
}
