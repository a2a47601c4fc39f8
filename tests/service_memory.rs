//! The service against the in-memory registry double: races between planning
//! and applying, error paths and the call budget, which the emulator cannot
//! stage as precisely.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{fixture, tag};
use ecr_remediator::audit::{ActionOutcome, Outcome, Trigger};
use ecr_remediator::digest::Digest;
use ecr_remediator::manifest::RawManifest;
use ecr_remediator::names::{ImageTag, RepositoryName};
use ecr_remediator::policy::{Mode, PolicySet};
use ecr_remediator::registry::memory::MemoryRegistry;
use ecr_remediator::registry::{
    DeleteOutcome, FetchFailure, Fetched, ImageRef, ImageSummary, PutOutcome, Registry, RegistryError,
};
use ecr_remediator::service::{Job, remediate};

fn repo() -> RepositoryName {
    RepositoryName::parse("team/app").unwrap()
}

/// The buildx fixture pushed as `v7`: (registry, index, runnable, attestation).
fn pushed() -> (MemoryRegistry, RawManifest, Digest, Digest) {
    let reg = MemoryRegistry::new();
    reg.create_repository(&repo(), false);
    let image = fixture("buildx-arm64-image.json");
    let attestation = fixture("buildkit-attestation-legacy.json");
    let index = fixture("buildx-single-platform-index.json");
    reg.push(&repo(), &image, None).unwrap();
    reg.push(&repo(), &attestation, None).unwrap();
    reg.push(&repo(), &index, Some(&tag("v7"))).unwrap();
    (reg, index, image.digest().clone(), attestation.digest().clone())
}

fn policies(mode: Mode, delete: bool, keep: bool) -> PolicySet {
    let mut vars = BTreeMap::new();
    vars.insert("ECR_REMEDIATOR_MODE".to_owned(), mode.as_str().to_owned());
    vars.insert("ECR_REMEDIATOR_DELETE_ORPHANS".to_owned(), delete.to_string());
    if !keep {
        vars.insert("ECR_REMEDIATOR_KEEP_TAG".to_owned(), "false".to_owned());
    }
    PolicySet::from_env_vars(&vars).unwrap()
}

fn job(index: &RawManifest) -> Job {
    Job {
        trigger: Trigger::Push,
        event_id: Some("e1".into()),
        account: None,
        region: None,
        repository: repo(),
        digest: index.digest().clone(),
        tag: Some(tag("v7")),
    }
}

#[tokio::test]
async fn promote_without_deletion_reads_twice_and_never_lists_the_repository() {
    let (reg, index, runnable, _) = pushed();
    let record = remediate(&reg, &policies(Mode::Promote, false, true), &job(&index)).await;
    assert_eq!(record.outcome, Outcome::Remediated);
    let calls = reg.calls();
    assert_eq!(calls.get("DescribeImages"), None, "{calls:?}");
    // 2 planning reads + 1 re-check per tag write; 2 writes.
    assert_eq!(calls["BatchGetImage"], 4, "{calls:?}");
    assert_eq!(calls["PutImage"], 2, "{calls:?}");
    let state = reg.state(&repo()).unwrap();
    assert_eq!(state.tags[&tag("v7")], runnable);
}

/// A registry that tags the attestation behind the service's back right
/// after the service's first write: the deletion planned before must not happen.
struct TagsAttestationMidway {
    inner: MemoryRegistry,
    attestation: RawManifest,
    done: AtomicBool,
}

impl Registry for TagsAttestationMidway {
    async fn get_images(&self, r: &RepositoryName, ids: &[ImageRef]) -> Result<Fetched, RegistryError> {
        self.inner.get_images(r, ids).await
    }
    async fn put_image(&self, r: &RepositoryName, m: &RawManifest, t: &ImageTag) -> Result<PutOutcome, RegistryError> {
        let out = self.inner.put_image(r, m, t).await;
        if !self.done.swap(true, Ordering::SeqCst) {
            self.inner
                .push(r, &self.attestation, Some(&tag("sbom-pinned")))
                .unwrap();
        }
        out
    }
    async fn delete_images(
        &self,
        r: &RepositoryName,
        d: &[Digest],
    ) -> Result<Vec<(Digest, DeleteOutcome)>, RegistryError> {
        self.inner.delete_images(r, d).await
    }
    async fn list_images(&self, r: &RepositoryName) -> Result<Vec<ImageSummary>, RegistryError> {
        self.inner.list_images(r).await
    }
    async fn tags_of(
        &self,
        r: &RepositoryName,
        d: &[Digest],
    ) -> Result<BTreeMap<Digest, Option<Vec<ImageTag>>>, RegistryError> {
        self.inner.tags_of(r, d).await
    }
}

#[tokio::test]
async fn a_manifest_tagged_after_planning_is_not_deleted() {
    let (inner, index, runnable, attestation) = pushed();
    let att_manifest = inner.state(&repo()).unwrap().images[&attestation].clone();
    let reg = TagsAttestationMidway {
        inner,
        attestation: att_manifest,
        done: AtomicBool::new(false),
    };
    let record = remediate(&reg, &policies(Mode::Promote, true, false), &job(&index)).await;
    let state = reg.inner.state(&repo()).unwrap();
    assert!(state.images.contains_key(&attestation), "tagged since planning: kept");
    assert_eq!(state.tags[&tag("v7")], runnable);
    let att = record
        .actions
        .iter()
        .find(|a| a.action.target() == &attestation)
        .unwrap();
    assert!(
        matches!(&att.outcome, ActionOutcome::Skipped { reason } if reason.contains("tagged since planning")),
        "{att:?}"
    );
    assert!(
        !state.images.contains_key(index.digest()),
        "the untagged index still goes"
    );
}

#[tokio::test]
async fn a_non_retryable_write_failure_stops_the_plan_and_is_recorded() {
    let (reg, index, _, attestation) = pushed();
    reg.fail_next(
        "PutImage",
        [RegistryError::Service {
            operation: "PutImage",
            code: "AccessDeniedException".into(),
            message: "not allowed".into(),
        }],
    );
    let record = remediate(&reg, &policies(Mode::Promote, true, false), &job(&index)).await;
    match &record.outcome {
        Outcome::Failed(f) => {
            assert_eq!(f.code, "AccessDeniedException");
            assert!(!f.retryable);
        }
        other => panic!("{other:?}"),
    }
    assert!(!record.needs_retry());
    let outcomes: Vec<&ActionOutcome> = record.actions.iter().map(|a| &a.outcome).collect();
    assert!(matches!(outcomes[0], ActionOutcome::Failed(_)));
    assert!(
        outcomes[1..]
            .iter()
            .all(|o| matches!(o, ActionOutcome::Skipped { reason } if reason.contains("not attempted")))
    );
    let state = reg.state(&repo()).unwrap();
    assert!(state.images.contains_key(&attestation) && state.images.contains_key(index.digest()));
    assert_eq!(state.tags[&tag("v7")], *index.digest());
}

#[tokio::test]
async fn a_throttled_read_fails_the_record_as_retryable_with_no_write() {
    let (reg, index, _, _) = pushed();
    reg.fail_next(
        "BatchGetImage",
        [RegistryError::Throttled {
            operation: "BatchGetImage",
            message: "Rate exceeded".into(),
        }],
    );
    let record = remediate(&reg, &policies(Mode::Promote, true, false), &job(&index)).await;
    assert!(record.needs_retry(), "{:?}", record.outcome);
    assert_eq!(reg.calls().get("PutImage"), None);
}

/// A registry whose stored index is not a valid manifest.
struct Corrupt(MemoryRegistry);

impl Registry for Corrupt {
    async fn get_images(&self, _: &RepositoryName, ids: &[ImageRef]) -> Result<Fetched, RegistryError> {
        Ok(ids
            .iter()
            .map(|id| {
                let e = RawManifest::parse(b"{\"schemaVersion\": 3}".to_vec(), None).unwrap_err();
                (id.clone(), Err(FetchFailure::Invalid(e)))
            })
            .collect())
    }
    async fn put_image(&self, r: &RepositoryName, m: &RawManifest, t: &ImageTag) -> Result<PutOutcome, RegistryError> {
        self.0.put_image(r, m, t).await
    }
    async fn delete_images(
        &self,
        r: &RepositoryName,
        d: &[Digest],
    ) -> Result<Vec<(Digest, DeleteOutcome)>, RegistryError> {
        self.0.delete_images(r, d).await
    }
    async fn list_images(&self, r: &RepositoryName) -> Result<Vec<ImageSummary>, RegistryError> {
        self.0.list_images(r).await
    }
    async fn tags_of(
        &self,
        r: &RepositoryName,
        d: &[Digest],
    ) -> Result<BTreeMap<Digest, Option<Vec<ImageTag>>>, RegistryError> {
        self.0.tags_of(r, d).await
    }
}

#[tokio::test]
async fn an_invalid_stored_manifest_is_skipped_with_its_reason_and_nothing_written() {
    let (inner, index, _, _) = pushed();
    let reg = Corrupt(inner);
    let record = remediate(&reg, &policies(Mode::Strip, true, false), &job(&index)).await;
    match &record.outcome {
        Outcome::Skipped { code, reason } => {
            assert_eq!(code, "invalid_manifest");
            assert!(reason.contains("schemaVersion"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(reg.0.calls().get("PutImage"), None);
    assert_eq!(reg.0.calls().get("BatchDeleteImage"), None);
}

#[tokio::test]
async fn dry_run_plans_and_records_but_writes_nothing() {
    let (reg, index, _, _) = pushed();
    let mut set = policies(Mode::Promote, true, false);
    set.default.dry_run = true;
    let record = remediate(&reg, &set, &job(&index)).await;
    assert_eq!(record.outcome, Outcome::Noop);
    assert!(record.actions.is_empty());
    assert!(
        !record.skipped.is_empty(),
        "the planned writes are listed as skipped (dry run)"
    );
    assert_eq!(reg.calls().get("PutImage"), None);
    assert_eq!(reg.calls().get("BatchDeleteImage"), None);
}

#[tokio::test]
async fn strip_mode_reads_its_own_new_index_once_and_leaves_it_alone() {
    let (reg, index, _, _) = pushed();
    let set = policies(Mode::Strip, false, true);
    let first = remediate(&reg, &set, &job(&index)).await;
    assert_eq!(first.outcome, Outcome::Remediated);
    let state = reg.state(&repo()).unwrap();
    let stripped = state.tags[&tag("v7")].clone();
    assert_ne!(&stripped, index.digest());
    let own = Job {
        digest: stripped.clone(),
        ..job(&index)
    };
    let before = reg.calls();
    let second = remediate(&reg, &set, &own).await;
    match &second.outcome {
        Outcome::Skipped { code, .. } => assert_eq!(code, "nothing_to_strip"),
        other => panic!("{other:?}"),
    }
    let after = reg.calls();
    assert_eq!(after.get("PutImage"), before.get("PutImage"));
    assert_eq!(reg.state(&repo()).unwrap().tags[&tag("v7")], stripped);
}
