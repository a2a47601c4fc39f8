//! Handling one image end to end: load, classify, plan, apply, record.
//!
//! Works against any [`Registry`]; the ECR adapter and the in-memory double
//! behave the same. Registry calls, in order:
//!
//! 1. one `BatchGetImage` for the index and the current target of its tag;
//! 2. one for the children whose bytes are needed (runnable and attestation
//!    entries) together with the derived and keep tags the plan may write;
//! 3. only when deletions are possible: the repository listing and the bytes
//!    of every other index in it, so the planner can prove nothing still
//!    refers to what it would delete;
//! 4. the plan's writes, each re-checked just before it runs.
//!
//! Every outcome ends in the returned [`AuditRecord`]; nothing panics and
//! nothing is deleted on bad input.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Instant, SystemTime};

use crate::audit::{
    ActionOutcome, ActionRecord, AuditRecord, ClassificationSummary, Failure, Outcome, PolicySummary, Trigger,
};
use crate::classify::{EntryClass, classify, classify_manifest};
use crate::digest::Digest;
use crate::manifest::RawManifest;
use crate::media_type::ManifestMediaType;
use crate::names::{ImageTag, RepositoryName};
use crate::plan::{Action, Plan, PlanInput, TagRole, plan};
use crate::policy::{Mode, Policy, PolicySet};
use crate::registry::{DeleteOutcome, FetchFailure, ImageRef, PutOutcome, Registry, RegistryError};
use crate::repository::RepositoryView;

/// One image to handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// What started it.
    pub trigger: Trigger,
    /// The event id, for push-triggered jobs.
    pub event_id: Option<String>,
    /// Account (from the event), when known.
    pub account: Option<String>,
    /// Region (from the event), when known.
    pub region: Option<String>,
    /// Repository.
    pub repository: RepositoryName,
    /// The pushed image's digest.
    pub digest: Digest,
    /// The tag it was pushed with.
    pub tag: Option<ImageTag>,
}

/// Handles one image and returns its audit record.
pub async fn remediate<R: Registry>(registry: &R, policies: &PolicySet, job: &Job) -> AuditRecord {
    let started = Instant::now();
    let mut record = AuditRecord::new(job.trigger, Some(job.repository.as_str()), SystemTime::now());
    record.event_id = job.event_id.clone();
    record.account = job.account.clone();
    record.region = job.region.clone();
    record.index_digest = Some(job.digest.to_string());
    record.tag = job.tag.as_ref().map(ToString::to_string);
    let selected = policies.select(&job.repository);
    record.policy = Some(PolicySummary {
        rule: selected.rule.to_owned(),
        mode: selected.policy.mode,
        requested_mode: selected.policy.mode,
        dry_run: selected.policy.dry_run,
        delete_orphans: selected.policy.delete_orphans,
    });
    record.outcome = match run(registry, selected.policy, job, &mut record).await {
        Ok(outcome) => outcome,
        Err(e) => failed(&e),
    };
    record.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    record
}

fn failed(e: &RegistryError) -> Outcome {
    Outcome::Failed(e.into())
}

fn skipped(code: &str, reason: impl Into<String>) -> Outcome {
    Outcome::Skipped {
        code: code.to_owned(),
        reason: reason.into(),
    }
}

/// The manifests read so far, by digest.
type Known = BTreeMap<Digest, RawManifest>;

async fn run<R: Registry>(
    registry: &R,
    policy: &Policy,
    job: &Job,
    record: &mut AuditRecord,
) -> Result<Outcome, RegistryError> {
    let repo = &job.repository;
    // 1. The index and its tag's current target, in one call.
    let mut ids = vec![ImageRef::Digest(job.digest.clone())];
    ids.extend(job.tag.iter().cloned().map(ImageRef::Tag));
    let mut first = registry.get_images(repo, &ids).await?.into_iter();
    let index = match first.next().map(|(_, r)| r) {
        Some(Ok(m)) if m.digest() == &job.digest => m,
        Some(Ok(m)) => {
            return Err(RegistryError::InvalidResponse {
                operation: "BatchGetImage",
                problem: format!("asked for {} and got {}", job.digest, m.digest()),
            });
        }
        Some(Err(FetchFailure::NotFound)) | None => {
            return Ok(skipped("index_gone", "the image no longer exists in the repository"));
        }
        Some(Err(FetchFailure::Invalid(e))) => {
            return Ok(skipped(
                "invalid_manifest",
                format!("the stored manifest is not valid: {e}"),
            ));
        }
        Some(Err(e @ FetchFailure::Other { .. })) => {
            return Ok(skipped(
                "unreadable",
                format!("the registry could not serve the image: {e}"),
            ));
        }
    };
    let tag_target = match first.next().map(|(_, r)| r) {
        Some(Ok(m)) => Some(m),
        _ => None,
    };

    let mut classification = classify(&index);
    let mut known: Known = BTreeMap::new();
    known.insert(index.digest().clone(), index.clone());
    if let Some(t) = &tag_target {
        known.insert(t.digest().clone(), t.clone());
    }
    let mut view = RepositoryView::new(false);

    // 2. Children whose bytes are needed, and the tags the plan may write.
    let mut second: Vec<ImageRef> = Vec::new();
    let mut wanted = BTreeSet::new();
    for e in &classification.entries {
        if matches!(e.class, EntryClass::Runnable { .. } | EntryClass::Attestation { .. })
            && !known.contains_key(e.digest())
            && wanted.insert(e.digest().clone())
        {
            second.push(ImageRef::Digest(e.digest().clone()));
        }
    }
    let candidate_tags = match &job.tag {
        Some(tag) if ManifestMediaType::is_index(index.media_type()) => candidate_tags(policy, &classification, tag),
        _ => Vec::new(),
    };
    second.extend(candidate_tags.iter().cloned().map(ImageRef::Tag));
    if !second.is_empty() {
        for (id, result) in registry.get_images(repo, &second).await? {
            match (id, result) {
                (ImageRef::Digest(d), Ok(m)) if m.digest() == &d => {
                    known.insert(d, m);
                }
                (ImageRef::Tag(t), Ok(m)) => {
                    known.entry(m.digest().clone()).or_insert_with(|| m.clone());
                    insert_tagged(&mut view, m.digest(), &t)?;
                }
                _ => {}
            }
        }
    }
    for e in &mut classification.entries {
        if let Some(child) = known.get(e.digest()) {
            e.refine_with_child(child, None);
        }
    }
    record.classification = Some(ClassificationSummary::of(&classification, |d| {
        known.get(d).map(|m| classify_manifest(m.manifest()))
    }));

    // 3. The whole repository, only when the plan may delete.
    let deletes_possible = policy.delete_orphans && matches!(policy.mode, Mode::Promote | Mode::Strip);
    if deletes_possible {
        view = full_view(registry, repo, &mut known).await?;
    } else {
        for m in known.values() {
            if !view.contains(m.digest()) {
                view.insert_image(m.digest().clone(), Vec::<ImageTag>::new())
                    .map_err(|e| invalid("view", e))?;
            }
            if m.media_type().is_index() {
                view.insert_index(
                    m.digest().clone(),
                    m.entries().iter().map(|e| e.digest.clone()).collect(),
                );
            }
        }
        if let (Some(tag), Some(target)) = (&job.tag, &tag_target) {
            insert_tagged(&mut view, target.digest(), tag)?;
        }
    }

    let the_plan = plan(&PlanInput {
        manifest: &index,
        classification: &classification,
        tag: job.tag.as_ref(),
        view: &view,
        policy,
    });
    if let Some(p) = record.policy.as_mut() {
        p.mode = the_plan.mode;
        p.requested_mode = the_plan.requested_mode;
    }
    record.skipped = the_plan.skipped.clone();
    record.notes = the_plan.notes.clone();
    if let Some(reason) = the_plan.halted() {
        return Ok(skipped(&reason_code(reason), reason.to_string()));
    }
    if the_plan.dry_run || the_plan.mode == Mode::Observe {
        return Ok(Outcome::Noop);
    }
    // 4. Apply.
    let mut applier = Applier {
        registry,
        repo,
        policy,
        known: &known,
        classification_platforms: runnable_platforms(&classification),
        records: Vec::new(),
    };
    applier.apply(&the_plan, job.tag.as_ref()).await;
    record.actions = applier.records;
    Ok(overall(&record.actions))
}

fn invalid(what: &str, e: impl std::fmt::Display) -> RegistryError {
    RegistryError::InvalidResponse {
        operation: "BatchGetImage",
        problem: format!("{what}: {e}"),
    }
}

fn insert_tagged(view: &mut RepositoryView, digest: &Digest, tag: &ImageTag) -> Result<(), RegistryError> {
    view.insert_image(digest.clone(), [tag.clone()])
        .map_err(|e| invalid("tags", e))
}

/// The derived tags of every runnable entry, and the keep tag.
fn candidate_tags(policy: &Policy, c: &crate::classify::Classification, tag: &ImageTag) -> Vec<ImageTag> {
    let mut out = BTreeSet::new();
    for e in &c.entries {
        if let EntryClass::Runnable { platform: Some(p) } = &e.class
            && let Ok(t) = policy.tag_template.render(tag, Some(p))
        {
            out.insert(t);
        }
    }
    if let Some(keep) = &policy.keep_tag
        && let Ok(t) = keep.render(tag, None)
    {
        out.insert(t);
    }
    out.remove(tag);
    out.into_iter().collect()
}

fn runnable_platforms(c: &crate::classify::Classification) -> BTreeMap<Digest, crate::manifest::Platform> {
    c.entries
        .iter()
        .filter_map(|e| match &e.class {
            EntryClass::Runnable { platform: Some(p) } => Some((e.digest().clone(), p.clone())),
            _ => None,
        })
        .collect()
}

/// Lists the repository and reads every index in it, so the view knows every
/// reference. An index that cannot be read leaves the view incomplete, and
/// the planner then deletes nothing.
async fn full_view<R: Registry>(
    registry: &R,
    repo: &RepositoryName,
    known: &mut Known,
) -> Result<RepositoryView, RegistryError> {
    let images = registry.list_images(repo).await?;
    let unread: Vec<ImageRef> = images
        .iter()
        .filter(|i| {
            let index = i
                .media_type
                .as_deref()
                .and_then(ManifestMediaType::parse)
                .is_none_or(ManifestMediaType::is_index);
            index && !known.contains_key(&i.digest)
        })
        .map(|i| ImageRef::Digest(i.digest.clone()))
        .collect();
    let mut complete = true;
    if !unread.is_empty() {
        for (id, result) in registry.get_images(repo, &unread).await? {
            match result {
                Ok(m) => {
                    known.insert(m.digest().clone(), m);
                }
                // Gone since the listing: it refers to nothing any more.
                Err(FetchFailure::NotFound) => {}
                Err(_) => {
                    tracing::warn!(image = %id, "could not read an index of the repository; no deletion this time");
                    complete = false;
                }
            }
        }
    }
    let mut view = RepositoryView::new(complete);
    for image in &images {
        view.insert_image(image.digest.clone(), image.tags.clone())
            .map_err(|e| invalid("DescribeImages", e))?;
        if let Some(m) = known.get(&image.digest).filter(|m| m.media_type().is_index()) {
            view.insert_index(
                m.digest().clone(),
                m.entries().iter().map(|e| e.digest.clone()).collect(),
            );
        }
    }
    Ok(view)
}

fn reason_code(reason: &crate::plan::SkipReason) -> String {
    serde_json::to_value(reason)
        .ok()
        .and_then(|v| v.get("reason").and_then(|r| r.as_str()).map(str::to_owned))
        .unwrap_or_else(|| "skipped".to_owned())
}

fn overall(actions: &[ActionRecord]) -> Outcome {
    let failures: Vec<&Failure> = actions
        .iter()
        .filter_map(|a| match &a.outcome {
            ActionOutcome::Failed(f) => Some(f),
            _ => None,
        })
        .collect();
    if let Some(first) = failures.first() {
        return Outcome::Failed(Failure {
            retryable: failures.iter().any(|f| f.retryable),
            ..(*first).clone()
        });
    }
    if actions.iter().any(|a| a.outcome == ActionOutcome::Applied) {
        Outcome::Remediated
    } else {
        Outcome::Noop
    }
}

struct Applier<'a, R> {
    registry: &'a R,
    repo: &'a RepositoryName,
    policy: &'a Policy,
    known: &'a Known,
    classification_platforms: BTreeMap<Digest, crate::manifest::Platform>,
    records: Vec<ActionRecord>,
}

impl<R: Registry> Applier<'_, R> {
    fn push(&mut self, action: &Action, outcome: ActionOutcome) {
        self.records.push(ActionRecord {
            action: action.clone(),
            outcome,
        });
    }

    fn fail(&mut self, action: &Action, e: &RegistryError) {
        self.push(action, ActionOutcome::Failed(e.into()));
    }

    async fn apply(&mut self, plan: &Plan, pushed: Option<&ImageTag>) {
        // Set when a write did not happen as planned: deletions then stop,
        // since they were planned on the assumption that every write landed.
        let mut hold_deletes: Option<String> = None;
        let mut stop: Option<String> = None;
        let mut i = 0;
        while i < plan.actions.len() {
            let action = &plan.actions[i];
            if let Some(why) = &stop {
                self.push(action, ActionOutcome::Skipped { reason: why.clone() });
                i += 1;
                continue;
            }
            if action.is_delete() {
                let run: Vec<&Action> = plan.actions[i..].iter().take_while(|a| a.is_delete()).collect();
                i += run.len();
                match &hold_deletes {
                    Some(why) => {
                        for a in run {
                            self.push(a, ActionOutcome::Skipped { reason: why.clone() });
                        }
                    }
                    None => {
                        if let Err(e) = self.delete(&run).await {
                            stop = Some(format!("not attempted: an earlier action failed ({})", e.code()));
                        }
                    }
                }
                continue;
            }
            i += 1;
            let result = match action {
                Action::AddTag { tag, digest, .. } => self.tag(action, tag, digest, None).await,
                Action::MoveTag { tag, from, to, .. } => self.tag(action, tag, to, Some(from)).await,
                Action::PutIndex {
                    tag,
                    manifest,
                    replaces,
                } => self.put_index(action, tag, manifest, replaces).await,
                Action::Delete { .. } => Ok(true),
            };
            match result {
                Ok(true) => {}
                Ok(false) => {
                    hold_deletes.get_or_insert_with(|| "not attempted: an earlier write did not happen".to_owned());
                }
                Err(e) => {
                    self.fail(action, &e);
                    stop = Some(format!("not attempted: an earlier action failed ({})", e.code()));
                }
            }
            // After an immutable-tag refusal of the pushed tag, fall back to derived tags.
            if let Some(ActionOutcome::Skipped { reason }) = self.records.last().map(|r| &r.outcome)
                && reason.starts_with(IMMUTABLE_FALLBACK)
                && let Some(tag) = pushed
            {
                let targets: Vec<Digest> = match action {
                    Action::MoveTag { to, .. } => vec![to.clone()],
                    Action::PutIndex { .. } => self.classification_platforms.keys().cloned().collect(),
                    _ => Vec::new(),
                };
                for d in targets {
                    if let Some((fallback, derived)) = self.derived_action(tag, &d)
                        && let Err(e) = self.tag(&fallback, &derived, &d, None).await
                    {
                        self.fail(&fallback, &e);
                    }
                }
            }
        }
    }

    fn derived_action(&self, tag: &ImageTag, digest: &Digest) -> Option<(Action, ImageTag)> {
        let platform = self.classification_platforms.get(digest)?;
        let derived = self.policy.tag_template.render(tag, Some(platform)).ok()?;
        let already = self
            .records
            .iter()
            .any(|r| matches!(&r.action, Action::AddTag { tag: t, digest: d, .. } if *t == derived && d == digest));
        (!already).then(|| {
            let action = Action::AddTag {
                tag: derived.clone(),
                digest: digest.clone(),
                role: TagRole::Derived,
            };
            (action, derived)
        })
    }

    /// Points `tag` at `to`; with `from`, only while the tag still points there.
    /// Ok(false) when the write did not happen (skipped).
    async fn tag(
        &mut self,
        action: &Action,
        tag: &ImageTag,
        to: &Digest,
        from: Option<&Digest>,
    ) -> Result<bool, RegistryError> {
        let Some(manifest) = self.known.get(to) else {
            self.push(
                action,
                ActionOutcome::Skipped {
                    reason: format!("the manifest {to} could not be read"),
                },
            );
            return Ok(false);
        };
        let now = current_target(self.registry, self.repo, tag).await?;
        match (&now, from) {
            (Some(d), _) if d == to => {
                self.push(action, ActionOutcome::Already);
                return Ok(true);
            }
            (Some(d), Some(f)) if d != f => {
                self.push(
                    action,
                    ActionOutcome::Skipped {
                        reason: format!("superseded: {tag} now points at {d}"),
                    },
                );
                return Ok(false);
            }
            (None, Some(_)) => {
                self.push(
                    action,
                    ActionOutcome::Skipped {
                        reason: format!("{tag} was deleted before it could be moved"),
                    },
                );
                return Ok(false);
            }
            (Some(d), None) => {
                self.push(
                    action,
                    ActionOutcome::Skipped {
                        reason: format!("{tag} already points at {d}; not moved"),
                    },
                );
                return Ok(false);
            }
            _ => {}
        }
        self.write(action, manifest, tag).await
    }

    async fn put_index(
        &mut self,
        action: &Action,
        tag: &ImageTag,
        manifest: &RawManifest,
        replaces: &Digest,
    ) -> Result<bool, RegistryError> {
        let now = current_target(self.registry, self.repo, tag).await?;
        if now.as_ref() == Some(manifest.digest()) {
            self.push(action, ActionOutcome::Already);
            return Ok(true);
        }
        if now.as_ref() != Some(replaces) {
            let reason = match now {
                Some(d) => format!("superseded: {tag} now points at {d}"),
                None => format!("{tag} was deleted before the index could be replaced"),
            };
            self.push(action, ActionOutcome::Skipped { reason });
            return Ok(false);
        }
        self.write(action, manifest, tag).await
    }

    /// `PutImage` of `manifest` as `tag`, recording the outcome. Ok(false) when
    /// the repository's tag immutability refused it (the caller falls back to
    /// derived tags).
    async fn write(&mut self, action: &Action, manifest: &RawManifest, tag: &ImageTag) -> Result<bool, RegistryError> {
        match self.registry.put_image(self.repo, manifest, tag).await {
            Ok(PutOutcome::Stored) => self.push(action, ActionOutcome::Applied),
            Ok(PutOutcome::AlreadyExists) => self.push(action, ActionOutcome::Already),
            Err(RegistryError::TagImmutable { .. }) => {
                self.push(
                    action,
                    ActionOutcome::Skipped {
                        reason: format!(
                            "{IMMUTABLE_FALLBACK}: {tag} cannot be changed; derived tag(s) written instead"
                        ),
                    },
                );
                return Ok(false);
            }
            Err(e) => return Err(e),
        }
        Ok(true)
    }

    /// Deletes a run of planned deletions: indexes first, in their own call,
    /// then the rest; each only if it is still untagged just before.
    async fn delete(&mut self, run: &[&Action]) -> Result<(), RegistryError> {
        let digests: Vec<Digest> = run.iter().map(|a| a.target().clone()).collect();
        let tags = self.registry.tags_of(self.repo, &digests).await?;
        let mut go: Vec<&Action> = Vec::new();
        for a in run {
            match tags.get(a.target()) {
                Some(Some(t)) if !t.is_empty() => {
                    let list: Vec<String> = t.iter().map(ToString::to_string).collect();
                    self.push(
                        a,
                        ActionOutcome::Skipped {
                            reason: format!("tagged since planning ({}); never deleted", list.join(", ")),
                        },
                    );
                }
                Some(None) => self.push(a, ActionOutcome::Already),
                _ => go.push(a),
            }
        }
        let (indexes, rest): (Vec<&Action>, Vec<&Action>) = go.into_iter().partition(|a| {
            matches!(
                a,
                Action::Delete {
                    role: crate::plan::DeleteRole::Index,
                    ..
                }
            )
        });
        for group in [indexes, rest] {
            if group.is_empty() {
                continue;
            }
            let ds: Vec<Digest> = group.iter().map(|a| a.target().clone()).collect();
            let results: BTreeMap<Digest, DeleteOutcome> = match self.registry.delete_images(self.repo, &ds).await {
                Ok(r) => r.into_iter().collect(),
                Err(e) => {
                    for a in &group {
                        self.fail(a, &e);
                    }
                    return Err(e);
                }
            };
            for a in group {
                let outcome = match results.get(a.target()) {
                    Some(DeleteOutcome::Deleted) => ActionOutcome::Applied,
                    Some(DeleteOutcome::NotFound) => ActionOutcome::Already,
                    Some(DeleteOutcome::ReferencedByManifestList) => ActionOutcome::Skipped {
                        reason: "an index in the repository still refers to it (ImageReferencedByManifestList)"
                            .to_owned(),
                    },
                    Some(DeleteOutcome::Failed { code, reason }) => ActionOutcome::Failed(Failure {
                        code: code.clone(),
                        error: reason.clone(),
                        retryable: false,
                    }),
                    None => ActionOutcome::Failed(Failure {
                        code: "InvalidResponse".to_owned(),
                        error: "BatchDeleteImage said nothing about this image".to_owned(),
                        retryable: true,
                    }),
                };
                self.push(a, outcome);
            }
        }
        Ok(())
    }
}

const IMMUTABLE_FALLBACK: &str = "immutable tag";

async fn current_target<R: Registry>(
    registry: &R,
    repo: &RepositoryName,
    tag: &ImageTag,
) -> Result<Option<Digest>, RegistryError> {
    let got = registry.get_images(repo, &[ImageRef::Tag(tag.clone())]).await?;
    Ok(match got.into_iter().next() {
        Some((_, Ok(m))) => Some(m.digest().clone()),
        _ => None,
    })
}
