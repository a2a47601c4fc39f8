//! Reading what the planner needs: a constant number of calls per push,
//! whatever the repository holds.
//!
//! 1. `BatchGetImage` of the index and of its pushed tag's current target;
//! 2. `BatchGetImage` of the children whose bytes are needed (runnable and
//!    attestation entries) and of the tags the plan may write (derived tags,
//!    the keep tag), which also tells what holds each of those tags;
//! 3. only when the pushed tag points at what looks like the remediation of
//!    an older index (a concurrent handling raced this push): `DescribeImages`
//!    of the two indexes, to compare their push times.
//!
//! Nothing here lists the repository.

use std::collections::BTreeSet;

use super::{Engine, Job, Known, skipped};
use crate::decide::plan::remediation_target;
use crate::decide::planned::Plan;
use crate::decide::skip::{SkipCode, SkipReason};
use crate::decide::view::{Held, RepositoryView};
use crate::engine::audit::{AuditSink, Outcome};
use crate::engine::registry::{FetchFailure, Fetched, ImageRef, Registry, RegistryError};
use crate::oci::classify::{Classification, EntryClass, ManifestKind, classify, classify_manifest};
use crate::oci::companion::companion_tags;
use crate::oci::digest::Digest;
use crate::oci::manifest::RawManifest;
use crate::oci::media_type::ManifestMediaType;
use crate::oci::names::{ImageTag, RepositoryName};
use crate::policy::{Mode, Policy};

/// What the planner gets.
#[derive(Debug)]
pub(super) struct Snapshot {
    /// The pushed index, bytes as stored.
    pub index: RawManifest,
    /// Its classification, refined with the children read.
    pub classification: Classification,
    /// What is known of the repository.
    pub view: RepositoryView,
    /// Manifests read, by digest.
    pub known: Known,
    /// See [`crate::decide::plan::PlanInput::stale_holder`].
    pub stale_holder: Option<Digest>,
    /// When the image was pushed (read for cleanups only).
    pub pushed_at_ms: Option<i64>,
}

/// The result of reading.
#[derive(Debug)]
pub(super) enum Read {
    /// Nothing to plan (index gone, invalid, unreadable).
    Skip(Outcome),
    /// Ready to plan.
    Ready(Box<Snapshot>),
}

fn held(m: &RawManifest) -> Held {
    match classify_manifest(m.manifest()) {
        ManifestKind::Index => Held::Index,
        ManifestKind::Image => Held::Runnable,
        _ => Held::Other,
    }
}

/// The manifest asked for by digest, or the outcome that ends the handling.
fn asked_for(
    found: Option<Result<RawManifest, FetchFailure>>,
    digest: &Digest,
) -> Result<Result<RawManifest, Outcome>, RegistryError> {
    Ok(Err(match found {
        Some(Ok(m)) if m.digest() == digest => return Ok(Ok(m)),
        Some(Ok(m)) => {
            return Err(RegistryError::InvalidResponse {
                operation: "BatchGetImage",
                problem: format!("asked for {digest} and got {}", m.digest()),
            });
        }
        Some(Err(FetchFailure::NotFound)) | None => {
            skipped(SkipCode::IndexGone, "the image no longer exists in the repository")
        }
        Some(Err(FetchFailure::Invalid { error, .. })) => skipped(
            SkipCode::InvalidManifest,
            format!(
                "the stored manifest is not valid: {}",
                crate::decide::skip::chain(&error)
            ),
        ),
        Some(Err(e @ FetchFailure::Other { .. })) => skipped(
            SkipCode::Unreadable,
            format!("the registry could not serve the image: {e}"),
        ),
    }))
}

/// The ids to read to learn which companion tags of `subjects` exist.
pub(super) fn companion_ids(subjects: &[Digest]) -> Vec<ImageRef> {
    subjects
        .iter()
        .flat_map(|s| companion_tags(s).into_iter().map(|(_, t)| ImageRef::Tag(t)))
        .collect()
}

/// Records, for each of `subjects` whose companion tags were all read in
/// `fetched`, which exist. A tag the registry could not serve (archived,
/// any failure but "not found") counts as existing: something is there.
pub(super) fn note_companions(view: &mut RepositoryView, subjects: &[Digest], fetched: &Fetched) {
    for subject in subjects {
        let mut found = Vec::new();
        let mut complete = true;
        for (companion, tag) in companion_tags(subject) {
            match fetched.iter().find(|(id, _)| *id == ImageRef::Tag(tag.clone())) {
                None => complete = false,
                Some((_, Err(FetchFailure::NotFound))) => {}
                Some(_) => found.push((companion, tag)),
            }
        }
        if complete {
            view.set_companion_tags(subject, found);
        }
    }
}

/// Records a manifest the registry served (under `tag`, when read by tag).
pub(super) fn note(view: &mut RepositoryView, known: &mut Known, m: &RawManifest, tag: Option<&ImageTag>) {
    let d = m.digest().clone();
    // A tag maps to one digest in a single read, so this cannot clash; a
    // clash would mean the registry contradicted itself, and the tag is then
    // simply not recorded (the planner treats it as unknown, never taken).
    let _ = view.insert_image(d.clone(), tag.cloned());
    if m.media_type().is_index() {
        view.insert_index(d.clone(), m.entries().iter().map(|e| e.digest.clone()).collect());
    } else {
        view.set_kind(&d, held(m));
    }
    if let Some(subject) = m.subject() {
        view.set_subject(&d, &subject.digest);
    }
    known.entry(d).or_insert_with(|| m.clone());
}

/// The derived tags of every runnable entry, and the keep tag when the mode
/// moves the pushed tag; never the pushed tag itself.
fn candidate_tags(policy: &Policy, c: &Classification, tag: &ImageTag) -> Vec<ImageTag> {
    let mut out = BTreeSet::new();
    for e in &c.entries {
        if let EntryClass::Runnable { platform: Some(p) } = &e.class
            && let Ok(t) = policy.tag_template.render(tag, Some(p))
        {
            out.insert(t);
        }
    }
    if matches!(policy.mode, Mode::Promote | Mode::Strip)
        && let Some(keep) = &policy.keep_tag
        && let Ok(t) = keep.render(tag, None)
    {
        out.insert(t);
    }
    out.remove(tag);
    out.into_iter().collect()
}

impl<R: Registry, A: crate::engine::audit::AuditSink> Engine<'_, R, A> {
    /// Reads the snapshot for one job.
    pub(super) async fn read(&self, policy: &Policy, job: &Job) -> Result<Read, RegistryError> {
        let repo = &job.repository;
        // 1. The index and its tag's current target, in one call.
        let mut ids = vec![ImageRef::Digest(job.digest.clone())];
        ids.extend(job.tag.iter().cloned().map(ImageRef::Tag));
        let mut first = self.retry(|| self.registry.get_images(repo, &ids)).await?.into_iter();
        let index = match asked_for(first.next().map(|(_, r)| r), &job.digest)? {
            Ok(m) => m,
            Err(outcome) => return Ok(Read::Skip(outcome)),
        };
        let mut view = RepositoryView::new();
        let mut known = Known::new();
        note(&mut view, &mut known, &index, None);
        match (&job.tag, first.next()) {
            (Some(tag), Some((_, Ok(target)))) => note(&mut view, &mut known, &target, Some(tag)),
            (
                Some(tag),
                Some((_, Err(e @ (FetchFailure::Other { .. } | FetchFailure::Invalid { digest: None, .. })))),
            ) => {
                view.set_unreadable_tag(tag.clone(), e.to_string());
            }
            _ => {}
        }
        let mut classification = classify(&index);

        // 2. Children whose bytes are needed, and the tags the plan may write.
        let mut second: Vec<ImageRef> = Vec::new();
        let mut wanted = BTreeSet::new();
        for e in &classification.entries {
            let needs_bytes = matches!(e.class, EntryClass::Runnable { .. } | EntryClass::Attestation { .. });
            if needs_bytes && !known.contains_key(e.digest()) && wanted.insert(e.digest().clone()) {
                second.push(ImageRef::Digest(e.digest().clone()));
            }
        }
        let candidates = match &job.tag {
            Some(tag) if index.media_type().is_index() => candidate_tags(policy, &classification, tag),
            _ => Vec::new(),
        };
        second.extend(candidates.iter().cloned().map(ImageRef::Tag));
        // What the plan may delete (the index, its attestations): their
        // companion tags ride in this read, so that a deletion's check of
        // what is attached costs only its `ListImageReferrers`.
        let deletable: Vec<Digest> = if policy.may_delete() && index.media_type().is_index() {
            std::iter::once(index.digest().clone())
                .chain(
                    classification
                        .entries
                        .iter()
                        .filter(|e| matches!(e.class, EntryClass::Attestation { .. }))
                        .map(|e| e.digest().clone()),
                )
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect()
        } else {
            Vec::new()
        };
        // A tag moving off the index: what signs the index and, under
        // promote, the image it moves to (a strip's new index is signed by
        // nothing). Cosign's `.sig` companions ride here; the referrers are
        // listed by the planner's signature gate (`evidence.rs`).
        let mut companions: BTreeSet<Digest> = deletable.into_iter().collect();
        if index.media_type().is_index() && matches!(policy.mode, Mode::Promote | Mode::Strip) {
            companions.insert(index.digest().clone());
            if policy.mode == Mode::Promote
                && let Some(image) = remediation_target(&index, &classification, policy)
            {
                companions.insert(image);
            }
        }
        let companions: Vec<Digest> = companions.into_iter().collect();
        second.extend(companion_ids(&companions));
        if !second.is_empty() {
            let fetched = self.retry(|| self.registry.get_images(repo, &second)).await?;
            note_companions(&mut view, &companions, &fetched);
            for (id, result) in fetched {
                match (id, result) {
                    (ImageRef::Digest(d), Ok(m)) if m.digest() == &d => note(&mut view, &mut known, &m, None),
                    // Gone or unreadable: left out of the view, so the planner
                    // neither tags nor deletes it.
                    (ImageRef::Digest(_), _) => {}
                    (ImageRef::Tag(t), Ok(m)) => note(&mut view, &mut known, &m, Some(&t)),
                    (ImageRef::Tag(_), Err(FetchFailure::NotFound)) => {}
                    // Held by something that is not a valid manifest: certainly
                    // not ours, so recorded as such and never taken.
                    (ImageRef::Tag(t), Err(FetchFailure::Invalid { digest: Some(d), .. })) => {
                        let _ = view.insert_image(d.clone(), [t]);
                        view.set_kind(&d, Held::Other);
                    }
                    // Held by an image the registry will not serve (archived:
                    // it cannot be pulled): something holds it, so it is
                    // never taken, and the reason is recorded.
                    (ImageRef::Tag(t), Err(e)) => view.set_unreadable_tag(t, e.to_string()),
                }
            }
        }
        for e in &mut classification.entries {
            if let Some(child) = known.get(e.digest()) {
                e.refine_with_child(child, None);
            }
        }
        // Entries whose bytes are not needed exist all the same: ECR stored
        // the index only once every manifest it lists was in the repository,
        // and refuses to delete a manifest an index still lists.
        for e in &classification.entries {
            if !wanted.contains(e.digest()) && !view.contains(e.digest()) {
                let kind = match e.class {
                    EntryClass::Index => Held::Index,
                    _ => Held::Other,
                };
                view.set_kind(e.digest(), kind);
            }
        }

        let stale_holder = self
            .stale_holder(policy, job, &index, &classification, &view, &known)
            .await?;
        Ok(Read::Ready(Box::new(Snapshot {
            index,
            classification,
            view,
            known,
            stale_holder,
            pushed_at_ms: None,
        })))
    }

    /// Reads a cleanup candidate: its bytes, its children's (when it is an
    /// index), then the tags and push times of it, its entries and (for an
    /// attestation) its subject in one `DescribeImages`. At most 3 reads.
    pub(super) async fn read_cleanup(&self, job: &Job) -> Result<Read, RegistryError> {
        let repo = &job.repository;
        // The candidate, and its companion tags (it is read to be deleted).
        let own = [job.digest.clone()];
        let mut ids = vec![ImageRef::Digest(job.digest.clone())];
        ids.extend(companion_ids(&own));
        let fetched = self.retry(|| self.registry.get_images(repo, &ids)).await?;
        let mut view = RepositoryView::new();
        let mut known = Known::new();
        note_companions(&mut view, &own, &fetched);
        let mut first = fetched.into_iter();
        let candidate = match asked_for(first.next().map(|(_, r)| r), &job.digest)? {
            Ok(m) => m,
            Err(outcome) => return Ok(Read::Skip(outcome)),
        };
        note(&mut view, &mut known, &candidate, None);
        let mut classification = classify(&candidate);
        let mut described: Vec<Digest> = vec![candidate.digest().clone()];
        let mut stripped_copy = None;
        if candidate.media_type().is_index() {
            let attestations: Vec<Digest> = classification
                .entries
                .iter()
                .filter(|e| matches!(e.class, EntryClass::Attestation { .. }))
                .map(|e| e.digest().clone())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let mut children: Vec<ImageRef> = classification
                .entries
                .iter()
                .filter(|e| matches!(e.class, EntryClass::Runnable { .. } | EntryClass::Attestation { .. }))
                .map(|e| ImageRef::Digest(e.digest().clone()))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            children.extend(companion_ids(&attestations));
            // A strip leaves the index's stripped copy under the tag: its
            // digest is computed (from the entries as listed), and whether it
            // exists read in this call, so that `DescribeImages` (which fails
            // as a whole for one missing image) only asks for it when it does.
            let copy = crate::decide::plan::stripped(&candidate, &classification).ok();
            children.extend(copy.iter().map(|c| ImageRef::Digest(c.digest().clone())));
            if !children.is_empty() {
                let fetched = self.retry(|| self.registry.get_images(repo, &children)).await?;
                note_companions(&mut view, &attestations, &fetched);
                for (id, result) in fetched {
                    if let (ImageRef::Digest(d), Ok(m)) = (id, result)
                        && m.digest() == &d
                    {
                        note(&mut view, &mut known, &m, None);
                    }
                }
            }
            for e in &mut classification.entries {
                if let Some(child) = known.get(e.digest()) {
                    e.refine_with_child(child, None);
                }
            }
            described.extend(classification.entries.iter().map(|e| e.digest().clone()));
            // The copy a strip made from the entries as classified now; when
            // refining changed them, no copy is looked for (the leftover is kept).
            stripped_copy = crate::decide::plan::stripped(&candidate, &classification)
                .ok()
                .filter(|c| copy.as_ref().is_some_and(|o| o.digest() == c.digest()) && known.contains_key(c.digest()));
            described.extend(stripped_copy.iter().map(|s| s.digest().clone()));
        } else if let ManifestKind::Attestation { subject: Some(s), .. } = classify_manifest(candidate.manifest()) {
            described.push(s);
        }
        described.sort();
        described.dedup();
        let info = self.retry(|| self.registry.describe_images(repo, &described)).await?;
        note_times(&mut view, &info);
        let mut pushed_at_ms = None;
        for (d, detail) in info {
            let Some(detail) = detail else { continue };
            let mut tags = Vec::new();
            for t in &detail.tags {
                match ImageTag::parse(t) {
                    Ok(t) => tags.push(t),
                    Err(e) => {
                        return Ok(Read::Skip(skipped(
                            SkipCode::Unreadable,
                            format!("{d} has a tag the service cannot read ({t:?}: {e}); left alone"),
                        )));
                    }
                }
            }
            if d == job.digest {
                pushed_at_ms = detail.pushed_at_ms;
            }
            if let Some(subject) = &detail.subject {
                view.set_subject(&d, subject);
            }
            // Two images claiming one tag in one answer: the registry
            // contradicted itself; the tag stays on the first.
            let _ = view.insert_image(d.clone(), tags);
            if let Some(copy) = stripped_copy.as_ref().filter(|c| c.digest() == &d) {
                view.insert_index(d.clone(), copy.entries().iter().map(|e| e.digest.clone()).collect());
            }
            if !known.contains_key(&d) && view.kind_of(&d).is_none() {
                let kind = match detail.media_type.as_deref().and_then(ManifestMediaType::parse) {
                    Some(mt) if mt.is_index() => Held::Index,
                    _ => Held::Other,
                };
                view.set_kind(&d, kind);
            }
        }
        Ok(Read::Ready(Box::new(Snapshot {
            index: candidate,
            classification,
            view,
            known,
            stale_holder: None,
            pushed_at_ms,
        })))
    }

    /// When the pushed tag points at the remediation target of the index the
    /// keep tag holds, and that index was pushed before this one, the tag
    /// holds a stale write of a handling that raced this push.
    async fn stale_holder(
        &self,
        policy: &Policy,
        job: &Job,
        index: &RawManifest,
        classification: &Classification,
        view: &RepositoryView,
        known: &Known,
    ) -> Result<Option<Digest>, RegistryError> {
        let (Some(tag), Some(keep)) = (&job.tag, &policy.keep_tag) else {
            return Ok(None);
        };
        if !matches!(policy.mode, Mode::Promote | Mode::Strip) {
            return Ok(None);
        }
        let Some(now) = view.tag_target(tag) else {
            return Ok(None);
        };
        if now == index.digest() || Some(now) == remediation_target(index, classification, policy).as_ref() {
            return Ok(None);
        }
        let Ok(keep) = keep.render(tag, None) else {
            return Ok(None);
        };
        let Some(older) = view
            .tag_target(&keep)
            .filter(|d| *d != index.digest())
            .and_then(|d| known.get(d))
            .filter(|m| ManifestMediaType::is_index(m.media_type()))
        else {
            return Ok(None);
        };
        if remediation_target(older, &classify(older), policy).as_ref() != Some(now) {
            return Ok(None);
        }
        let ids = [older.digest().clone(), index.digest().clone()];
        let info = self
            .retry(|| self.registry.describe_images(&job.repository, &ids))
            .await?;
        let pushed = |d: &Digest| info.get(d).and_then(Option::as_ref).and_then(|i| i.pushed_at_ms);
        Ok(match (pushed(older.digest()), pushed(index.digest())) {
            (Some(a), Some(b)) if a < b => Some(now.clone()),
            _ => None,
        })
    }
}

/// Records the push and pull times `DescribeImages` gave.
pub(super) fn note_times(
    view: &mut RepositoryView,
    info: &std::collections::BTreeMap<Digest, Option<crate::engine::registry::ImageInfo>>,
) {
    for (d, detail) in info {
        match detail {
            Some(detail) => {
                view.set_pull_time(d, detail.last_pulled_ms);
                if let Some(at) = detail.pushed_at_ms {
                    view.set_pushed_at(d, at);
                }
            }
            // Gone: nothing pulls it from here any more; the deletion
            // itself finds it gone.
            None => view.set_pull_time(d, None),
        }
    }
}

// ---- Attachments ----
//
// Reading what is attached to the manifests a plan would delete: their
// companion tags and their OCI referrers (see [`crate::engine::keep`]).
//
// Read only when a deletion waits on it: the planner marks such a
// manifest `attachments_unknown` (or `usage_unknown`, see
// [`crate::engine::read`]), the engine reads, and plans again.
// Companion tags ride in a `BatchGetImage` the reader already makes where
// it can (the per-push path's second read); referrers cost one
// `ListImageReferrers` per manifest, made concurrently.

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
                    note(view, known, m, Some(t));
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
