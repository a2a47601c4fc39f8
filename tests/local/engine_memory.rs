//! The engine against the in-memory registry double: races staged exactly
//! between its reads and writes, failure paths, the keep-tag gate, tag
//! ownership, and the call budget (constant whatever the repository holds).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{fixture, tag};
use ecr_remediator::Digest;
use ecr_remediator::RawManifest;
use ecr_remediator::RepositoryName;
use ecr_remediator::decide::plan::Action;
use ecr_remediator::engine::audit::{ActionOutcome, AuditError, AuditRecord, AuditSink, Outcome, Trigger};
use ecr_remediator::engine::registry::memory::{MemoryRegistry, RepoState, store};
use ecr_remediator::engine::registry::{Registry, RegistryError};
use ecr_remediator::engine::retry::RetryPolicy;
use ecr_remediator::engine::{Engine, Job};
use ecr_remediator::oci::signature::Referrer;
use ecr_remediator::policy::{Mode, PolicySet};
use ecr_remediator::vocabulary::Vocabulary;
use serde_json::json;

fn repo() -> RepositoryName {
    RepositoryName::parse("team/app").unwrap()
}

/// An audit sink keeping what it is given; it can be told to fail.
#[derive(Default)]
struct Audit {
    records: Mutex<Vec<AuditRecord>>,
    failures: AtomicUsize,
}

impl AuditSink for Audit {
    async fn write(&self, record: &AuditRecord) -> Result<(), AuditError> {
        if self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(AuditError::Unavailable {
                destination: "test".into(),
                message: "down".into(),
            });
        }
        self.records.lock().unwrap().push(record.clone());
        Ok(())
    }

    /// The trail read back: every record written, as JSON.
    async fn earlier_records(
        &self,
        _event_id: &str,
        _index: &Digest,
        _since_ms: i64,
    ) -> Result<Option<Vec<serde_json::Value>>, AuditError> {
        let records = self.records.lock().unwrap();
        Ok(Some(
            records
                .iter()
                .map(|r| serde_json::from_str(&r.to_json()).unwrap())
                .collect(),
        ))
    }
}

fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 5,
        base: Duration::from_millis(1),
        cap: Duration::from_millis(5),
    }
}

async fn run(reg: &MemoryRegistry, audit: &Audit, policies: &PolicySet, job: &Job) -> AuditRecord {
    delivery(reg, audit, policies, job, 2).await
}

/// The engine as delivery `attempt` of the event runs it.
async fn delivery(reg: &MemoryRegistry, audit: &Audit, policies: &PolicySet, job: &Job, attempt: u32) -> AuditRecord {
    Engine {
        registry: reg,
        audit,
        policies,
        retry: fast_retries(),
        deadline: None,
        request_id: Some(format!("req-{attempt}")),
        attempt: Some(attempt),
    }
    .remediate(job)
    .await
}

/// The engine with an audit sink that always works.
async fn handle(reg: &MemoryRegistry, policies: &PolicySet, job: &Job) -> AuditRecord {
    run(reg, &Audit::default(), policies, job).await
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

fn job(index: &Digest, pushed_tag: &str) -> Job {
    Job {
        purpose: ecr_remediator::Purpose::Remediate,
        trigger: Trigger::Push,
        event_id: Some("e1".into()),
        account: None,
        region: None,
        replicated_from: None,
        repository: repo(),
        digest: index.clone(),
        tag: Some(tag(pushed_tag)),
        // The event of the push itself (the double's clock is logical, its
        // pushes long past): the grace period runs from the push.
        tag_arrived_ms: Some(0),
    }
}

/// ECR's throttling answer.
fn throttled(operation: &'static str) -> RegistryError {
    RegistryError::Throttled {
        operation,
        message: "Rate exceeded".into(),
    }
}

/// What ECR answers a caller its IAM policy does not allow.
fn access_denied(operation: &'static str) -> RegistryError {
    RegistryError::Service {
        operation,
        code: "AccessDeniedException".into(),
        message: "not allowed".into(),
    }
}

fn raw(v: &serde_json::Value) -> RawManifest {
    RawManifest::parse(serde_json::to_vec(v).unwrap(), None).unwrap()
}

/// A distinct runnable image manifest (`salt` changes its config digest).
fn image(salt: &str) -> RawManifest {
    raw(&json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": Digest::sha256_of(salt.as_bytes()).to_string(), "size": 10},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": Digest::sha256_of(format!("layer-{salt}").as_bytes()).to_string(), "size": 100}]
    }))
}

/// A legacy BuildKit attestation manifest describing `subject`.
fn attestation(salt: &str) -> RawManifest {
    raw(&json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": Digest::sha256_of(format!("att-config-{salt}").as_bytes()).to_string(), "size": 10},
        "layers": [{"mediaType": "application/vnd.in-toto+json",
                    "digest": Digest::sha256_of(format!("att-{salt}").as_bytes()).to_string(), "size": 100,
                    "annotations": {"in-toto.io/predicate-type": "https://slsa.dev/provenance/v0.2"}}]
    }))
}

fn entry(m: &RawManifest, platform: Option<(&str, &str)>) -> serde_json::Value {
    let mut e =
        json!({"mediaType": m.media_type().as_str(), "digest": m.digest().to_string(), "size": m.bytes().len()});
    if let Some((os, arch)) = platform {
        e["platform"] = json!({"os": os, "architecture": arch});
    }
    e
}

fn attestation_entry(m: &RawManifest, subject: &RawManifest) -> serde_json::Value {
    let mut e = entry(m, Some(("unknown", "unknown")));
    e["annotations"] = json!({
        "vnd.docker.reference.type": "attestation-manifest",
        "vnd.docker.reference.digest": subject.digest().to_string()
    });
    e
}

/// What a default buildx push stored.
struct Push {
    index: RawManifest,
    image: RawManifest,
    attestation: RawManifest,
}

/// Pushes a buildx-shaped single-platform index as `pushed_tag`, with extra entries.
fn push_buildx(reg: &MemoryRegistry, salt: &str, pushed_tag: &str, extra: &[RawManifest]) -> Push {
    let img = image(salt);
    let att = attestation(salt);
    let mut entries = vec![entry(&img, Some(("linux", "arm64"))), attestation_entry(&att, &img)];
    for m in extra {
        reg.push(&repo(), m, None).unwrap();
        entries.push(entry(m, None));
    }
    let index =
        raw(&json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries}));
    reg.push(&repo(), &img, None).unwrap();
    reg.push(&repo(), &att, None).unwrap();
    reg.push(&repo(), &index, Some(&tag(pushed_tag))).unwrap();
    Push {
        index,
        image: img,
        attestation: att,
    }
}

fn registry(immutable: bool) -> MemoryRegistry {
    let reg = MemoryRegistry::new();
    reg.create_repository(&repo(), immutable);
    reg
}

fn state(reg: &MemoryRegistry) -> RepoState {
    reg.state(&repo()).unwrap()
}

fn target(reg: &MemoryRegistry, t: &str) -> Option<Digest> {
    state(reg).tags.get(&tag(t)).cloned()
}

fn code(record: &AuditRecord) -> String {
    match &record.outcome {
        Outcome::Skipped { code, .. } => code.to_string(),
        other => format!("{other:?}"),
    }
}

fn outcome_of<'r>(record: &'r AuditRecord, target: &Digest) -> &'r ActionOutcome {
    &record
        .actions
        .iter()
        .find(|a| a.action.target() == target)
        .unwrap_or_else(|| panic!("no action on {target}: {:#?}", record.actions))
        .outcome
}

#[tokio::test]
async fn promote_reads_three_times_writes_twice_and_never_lists() {
    let reg = registry(false);
    let p = push_buildx(&reg, "a", "v7", &[]);
    let record = handle(
        &reg,
        &policies(Mode::Promote, false, true),
        &job(p.index.digest(), "v7"),
    )
    .await;
    assert_eq!(record.outcome, Outcome::Remediated, "{record:#?}");
    let calls = reg.calls();
    assert_eq!(calls.get("DescribeImages"), None, "{calls:?}");
    assert_eq!(
        calls["BatchGetImage"], 3,
        "index+tag, children+candidate tags, one precondition check: {calls:?}"
    );
    assert_eq!(calls["PutImage"], 2, "{calls:?}");
    assert_eq!(target(&reg, "v7").as_ref(), Some(p.image.digest()));
    assert_eq!(target(&reg, "v7-index").as_ref(), Some(p.index.digest()));
}

#[tokio::test]
async fn delete_mode_costs_the_same_calls_in_a_repository_of_any_size() {
    let mut counts = Vec::new();
    for others in [0usize, 300] {
        let reg = registry(false);
        for i in 0..others {
            push_buildx(&reg, &format!("other-{i}"), &format!("o{i}"), &[]);
        }
        let p = push_buildx(&reg, "a", "v7", &[]);
        let before = reg.calls();
        let record = handle(
            &reg,
            &policies(Mode::Promote, true, false),
            &job(p.index.digest(), "v7"),
        )
        .await;
        assert_eq!(record.outcome, Outcome::Remediated, "{record:#?}");
        let s = state(&reg);
        assert!(!s.images.contains_key(p.index.digest()) && !s.images.contains_key(p.attestation.digest()));
        assert_eq!(target(&reg, "v7").as_ref(), Some(p.image.digest()));
        let after = reg.calls();
        let delta: BTreeMap<&str, usize> = after
            .iter()
            .map(|(k, v)| (*k, v - before.get(k).copied().unwrap_or(0)))
            .filter(|(_, v)| *v > 0)
            .collect();
        counts.push(delta);
    }
    assert_eq!(counts[0], counts[1], "per-push calls must not grow with the repository");
    let reads = counts[0].get("BatchGetImage").unwrap() + counts[0].get("DescribeImages").unwrap();
    // Three reads and one DescribeImages for the candidates' push and pull
    // times (the evidence a deletion waits on); right before deleting, one
    // batch again (their tags and pull times, their companion tags).
    assert!(reads <= 6, "{:?}", counts[0]);
    // What is attached to the index, its image and its attestation (what
    // signs the index and the image the tag moves to, and what the
    // deletions wait on): one ListImageReferrers each; their companion tags
    // ride in the second BatchGetImage. Then the two candidates' again,
    // right before deleting.
    assert_eq!(counts[0].get("ListImageReferrers"), Some(&5), "{:?}", counts[0]);
    // What runs in the account: one scan (which the ECR adapter caches).
    assert_eq!(counts[0].get("ScanWorkloads"), Some(&1), "{:?}", counts[0]);
}

#[tokio::test]
async fn a_manifest_tagged_right_before_the_deletion_is_kept() {
    let reg = registry(false);
    let p = push_buildx(&reg, "a", "v7", &[]);
    let att = p.attestation.clone();
    // The moment the pushed tag moves, somebody tags the attestation.
    reg.on_call(move |op, n, repos| {
        if op == "PutImage" && n == 0 {
            let r = repos.get_mut("team/app").unwrap();
            store(r, &att, Some(&tag("sbom-pinned"))).unwrap();
        }
    });
    let record = handle(
        &reg,
        &policies(Mode::Promote, true, false),
        &job(p.index.digest(), "v7"),
    )
    .await;
    assert!(
        state(&reg).images.contains_key(p.attestation.digest()),
        "tagged since planning: kept"
    );
    assert!(
        matches!(outcome_of(&record, p.attestation.digest()), ActionOutcome::Skipped { reason } if reason.contains("sbom-pinned")),
        "{record:#?}"
    );
    assert!(
        !state(&reg).images.contains_key(p.index.digest()),
        "the untagged index still goes"
    );
}

#[tokio::test]
async fn a_keep_tag_that_cannot_be_written_stops_everything() {
    // 123 characters: the keep tag would be 129, over the OCI limit.
    let long = "v".repeat(123);
    for mode in [Mode::Promote, Mode::Strip] {
        let reg = registry(false);
        let p = push_buildx(&reg, "a", &long, &[]);
        let record = handle(&reg, &policies(mode, true, true), &job(p.index.digest(), &long)).await;
        assert_eq!(code(&record), "keep_tag_invalid", "{record:#?}");
        assert_eq!(
            target(&reg, &long).as_ref(),
            Some(p.index.digest()),
            "pushed tag not moved"
        );
        assert_eq!(state(&reg).images.len(), 3, "nothing deleted");
        assert_eq!(reg.calls().get("PutImage"), None);
    }
}

#[tokio::test]
async fn a_keep_tag_held_by_a_non_index_is_never_taken() {
    let reg = registry(false);
    let mine = image("user");
    reg.push(&repo(), &mine, Some(&tag("v7-index"))).unwrap();
    let p = push_buildx(&reg, "a", "v7", &[]);
    let record = handle(&reg, &policies(Mode::Promote, true, true), &job(p.index.digest(), "v7")).await;
    assert_eq!(code(&record), "keep_tag_taken", "{record:#?}");
    assert_eq!(target(&reg, "v7-index").as_ref(), Some(mine.digest()));
    assert_eq!(target(&reg, "v7").as_ref(), Some(p.index.digest()));
    assert_eq!(reg.calls().get("PutImage"), None);
}

#[tokio::test]
async fn a_derived_tag_held_by_an_index_is_never_taken_and_the_record_names_it() {
    let reg = registry(false);
    let users = push_buildx(&reg, "user", "v7-linux-arm64", &[]);
    let p = push_buildx(&reg, "a", "v7", &[]);
    let record = handle(&reg, &policies(Mode::Tag, false, true), &job(p.index.digest(), "v7")).await;
    assert_eq!(target(&reg, "v7-linux-arm64").as_ref(), Some(users.index.digest()));
    let text = serde_json::to_string(&record).unwrap();
    assert!(text.contains("derived_tag_taken"), "{text}");
    assert!(text.contains(&users.index.digest().to_string()), "{text}");
    assert_eq!(reg.calls().get("PutImage"), None);
}

#[tokio::test]
async fn a_derived_tag_on_an_older_runnable_is_moved() {
    let reg = registry(false);
    let old = image("old");
    reg.push(&repo(), &old, Some(&tag("v7-linux-arm64"))).unwrap();
    let p = push_buildx(&reg, "a", "v7", &[]);
    let record = handle(&reg, &policies(Mode::Tag, false, true), &job(p.index.digest(), "v7")).await;
    assert_eq!(record.outcome, Outcome::Remediated, "{record:#?}");
    assert_eq!(target(&reg, "v7-linux-arm64").as_ref(), Some(p.image.digest()));
}

#[tokio::test]
async fn a_push_landing_between_planning_and_writing_is_never_overwritten() {
    let reg = registry(false);
    let a = push_buildx(&reg, "a", "v1", &[]);
    let img = image("b");
    let att = attestation("b");
    let index_b = raw(
        &json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [entry(&img, Some(("linux", "arm64"))), attestation_entry(&att, &img)]}),
    );
    let b = index_b.clone();
    // Push B lands right before A's precondition check.
    reg.on_call(move |op, n, repos| {
        if op == "BatchGetImage" && n == 2 {
            let r = repos.get_mut("team/app").unwrap();
            store(r, &img, None).unwrap();
            store(r, &att, None).unwrap();
            store(r, &b, Some(&tag("v1"))).unwrap();
        }
    });
    let record = handle(&reg, &policies(Mode::Promote, true, true), &job(a.index.digest(), "v1")).await;
    assert_eq!(code(&record), "superseded", "{record:#?}");
    assert_eq!(
        target(&reg, "v1").as_ref(),
        Some(index_b.digest()),
        "the newer push keeps its tag"
    );
    assert_eq!(reg.calls().get("PutImage"), None);
    assert!(
        record.notes.iter().any(|n| n.contains("planned again")),
        "{:?}",
        record.notes
    );
}

#[tokio::test]
async fn a_stale_remediation_of_an_older_push_is_taken_over_by_the_newer_one() {
    let reg = registry(false);
    let set = policies(Mode::Promote, false, true);
    let a = push_buildx(&reg, "a", "v1", &[]);
    let b = push_buildx(&reg, "b", "v1", &[]);
    // A's handling read before B's push and wrote after it: v1 on A's image,
    // v1-index on A's index, B's index untagged.
    reg.push(&repo(), &a.image, Some(&tag("v1"))).unwrap();
    reg.push(&repo(), &a.index, Some(&tag("v1-index"))).unwrap();
    let record = handle(&reg, &set, &job(b.index.digest(), "v1")).await;
    assert_eq!(record.outcome, Outcome::Remediated, "{record:#?}");
    assert_eq!(
        target(&reg, "v1").as_ref(),
        Some(b.image.digest()),
        "never an older image than the newest push"
    );
    assert_eq!(
        target(&reg, "v1-index").as_ref(),
        Some(b.index.digest()),
        "the newer provenance is reachable"
    );
    assert!(
        record.notes.iter().any(|n| n.contains("taken over")),
        "{:?}",
        record.notes
    );
}

#[tokio::test]
async fn a_newer_remediation_is_not_taken_over_by_a_late_event_of_an_older_push() {
    let reg = registry(false);
    let set = policies(Mode::Promote, false, true);
    let a = push_buildx(&reg, "a", "v1", &[]);
    let b = push_buildx(&reg, "b", "v1", &[]);
    let first = handle(&reg, &set, &job(b.index.digest(), "v1")).await;
    assert_eq!(first.outcome, Outcome::Remediated);
    // A's event arrives late (events are unordered).
    let late = handle(&reg, &set, &job(a.index.digest(), "v1")).await;
    assert_eq!(code(&late), "superseded", "{late:#?}");
    assert_eq!(target(&reg, "v1").as_ref(), Some(b.image.digest()));
    assert_eq!(target(&reg, "v1-index").as_ref(), Some(b.index.digest()));
}

#[tokio::test]
async fn a_throttled_write_is_retried_only_after_a_fresh_check() {
    let reg = registry(false);
    let p = push_buildx(&reg, "a", "v7", &[]);
    reg.fail_next("PutImage", [throttled("PutImage")]);
    let record = handle(
        &reg,
        &policies(Mode::Promote, false, true),
        &job(p.index.digest(), "v7"),
    )
    .await;
    assert_eq!(record.outcome, Outcome::Remediated, "{record:#?}");
    let calls = reg.calls();
    assert_eq!(
        calls["BatchGetImage"], 4,
        "a second precondition check before the retry: {calls:?}"
    );
    assert_eq!(calls["PutImage"], 3, "{calls:?}");
    assert_eq!(target(&reg, "v7").as_ref(), Some(p.image.digest()));
}

#[tokio::test]
async fn a_push_during_a_throttled_retry_stops_the_move() {
    let reg = registry(false);
    let p = push_buildx(&reg, "a", "v7", &[]);
    let newer = image("newer");
    let n2 = newer.clone();
    reg.fail_next("PutImage", [throttled("PutImage")]);
    reg.on_call(move |op, n, repos| {
        if op == "BatchGetImage" && n == 3 {
            store(repos.get_mut("team/app").unwrap(), &n2, Some(&tag("v7"))).unwrap();
        }
    });
    let record = handle(
        &reg,
        &policies(Mode::Promote, false, true),
        &job(p.index.digest(), "v7"),
    )
    .await;
    assert_eq!(code(&record), "superseded", "{record:#?}");
    assert_eq!(target(&reg, "v7").as_ref(), Some(newer.digest()));
}

#[tokio::test]
async fn sustained_throttling_runs_out_of_attempts_as_a_retryable_failure() {
    let reg = registry(false);
    let p = push_buildx(&reg, "a", "v7", &[]);
    reg.fail_next("PutImage", (0..20).map(|_| throttled("PutImage")));
    let record = handle(
        &reg,
        &policies(Mode::Promote, true, false),
        &job(p.index.digest(), "v7"),
    )
    .await;
    assert!(record.needs_retry(), "{:?}", record.outcome);
    assert!(!record.is_final);
    assert_eq!(
        reg.calls().get("BatchDeleteImage"),
        None,
        "no deletion after a failed write"
    );
    assert_eq!(target(&reg, "v7").as_ref(), Some(p.index.digest()));
}

#[tokio::test]
async fn deletions_wait_for_their_checkpoint_in_the_audit_trail() {
    let reg = registry(false);
    let p = push_buildx(&reg, "a", "v7", &[]);
    let audit = Audit::default();
    audit.failures.store(100, Ordering::SeqCst);
    let set = policies(Mode::Promote, true, false);
    let record = run(&reg, &audit, &set, &job(p.index.digest(), "v7")).await;
    assert!(record.needs_retry(), "{:?}", record.outcome);
    assert_eq!(
        reg.calls().get("BatchDeleteImage"),
        None,
        "nothing deleted without a checkpoint"
    );
    assert!(state(&reg).images.contains_key(p.attestation.digest()));
    // The retry, with the trail back, finishes and the checkpoint lists the deletions first.
    audit.failures.store(0, Ordering::SeqCst);
    let retry = run(&reg, &audit, &set, &job(p.index.digest(), "v7")).await;
    assert_eq!(retry.outcome, Outcome::Remediated, "{retry:#?}");
    let written = audit.records.lock().unwrap().clone();
    assert_eq!(written.len(), 1);
    assert_eq!(written[0].outcome, Outcome::InProgress);
    assert!(!written[0].is_final);
    let pending: Vec<&Digest> = written[0]
        .actions
        .iter()
        .filter(|a| a.outcome == ActionOutcome::Pending)
        .map(|a| a.action.target())
        .collect();
    assert_eq!(
        pending,
        vec![p.image.digest(), p.index.digest(), p.attestation.digest()],
        "the move of v7, then the deletions"
    );
    assert!(!state(&reg).images.contains_key(p.attestation.digest()));
}

#[tokio::test]
async fn an_attestation_another_index_still_lists_is_kept_not_failed() {
    let reg = registry(false);
    let p = push_buildx(&reg, "a", "v7", &[]);
    // Another index (untagged, unknown to the engine) lists the attestation too.
    let other = raw(
        &json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [entry(&p.image, Some(("linux", "arm64"))), attestation_entry(&p.attestation, &p.image),
                      entry(&image("x"), Some(("linux", "amd64")))]}),
    );
    reg.push(&repo(), &image("x"), None).unwrap();
    reg.push(&repo(), &other, None).unwrap();
    let record = handle(
        &reg,
        &policies(Mode::Promote, true, false),
        &job(p.index.digest(), "v7"),
    )
    .await;
    assert_eq!(record.outcome, Outcome::Remediated, "{record:#?}");
    assert!(
        matches!(outcome_of(&record, p.attestation.digest()), ActionOutcome::Skipped { reason } if reason.contains("still referenced")),
        "{record:#?}"
    );
    assert!(state(&reg).images.contains_key(p.attestation.digest()));
}

#[tokio::test]
async fn an_immutable_pushed_tag_falls_back_to_derived_tags_decided_by_the_planner() {
    let reg = registry(true);
    let p = push_buildx(&reg, "a", "v7", &[]);
    let record = handle(
        &reg,
        &policies(Mode::Promote, false, true),
        &job(p.index.digest(), "v7"),
    )
    .await;
    assert_eq!(record.outcome, Outcome::Remediated, "{record:#?}");
    assert_eq!(target(&reg, "v7").as_ref(), Some(p.index.digest()));
    assert_eq!(target(&reg, "v7-linux-arm64").as_ref(), Some(p.image.digest()));
    assert_eq!(record.policy.as_ref().unwrap().mode, Mode::Tag);
    assert!(
        record.notes.iter().any(|n| n.contains("immutable")),
        "{:?}",
        record.notes
    );
}

#[tokio::test]
async fn strip_keeps_soci_and_signature_entries_without_delete() {
    let reg = registry(false);
    let soci = fixture("soci-index-v2.json");
    let sig = fixture("notation-signature.json");
    let p = push_buildx(&reg, "a", "v7", &[soci.clone(), sig.clone()]);
    let record = handle(&reg, &policies(Mode::Strip, false, true), &job(p.index.digest(), "v7")).await;
    assert_eq!(record.outcome, Outcome::Remediated, "{record:#?}");
    let s = state(&reg);
    let stripped = &s.images[&s.tags[&tag("v7")]];
    let kept: Vec<&Digest> = stripped.entries().iter().map(|e| &e.digest).collect();
    assert_eq!(kept, vec![p.image.digest(), soci.digest(), sig.digest()]);
    assert_eq!(target(&reg, "v7-index").as_ref(), Some(p.index.digest()));
}

#[tokio::test]
async fn a_repository_with_300_character_tags_is_handled() {
    let reg = registry(false);
    let long = "x".repeat(300);
    let p = push_buildx(&reg, "a", "v7", &[]);
    reg.push(&repo(), &p.index, Some(&tag(&long))).unwrap();
    let record = handle(
        &reg,
        &policies(Mode::Promote, true, false),
        &job(p.index.digest(), "v7"),
    )
    .await;
    assert_eq!(record.outcome, Outcome::Remediated, "{record:#?}");
    assert!(
        matches!(outcome_of(&record, p.index.digest()), ActionOutcome::Skipped { reason } if reason.starts_with("still_tagged") && reason.contains(&long)),
        "the index keeps its other, long tag: {record:#?}"
    );
}

#[tokio::test]
async fn the_same_event_twice_writes_once() {
    let reg = registry(false);
    let p = push_buildx(&reg, "a", "v7", &[]);
    let set = policies(Mode::Strip, true, false);
    let first = handle(&reg, &set, &job(p.index.digest(), "v7")).await;
    assert_eq!(first.outcome, Outcome::Remediated, "{first:#?}");
    let writes = reg.calls().get("PutImage").copied();
    let again = handle(&reg, &set, &job(p.index.digest(), "v7")).await;
    assert_eq!(code(&again), "index_gone");
    assert_eq!(reg.calls().get("PutImage").copied(), writes);
}

/// The actions of `record` found done, as (kind, target).
fn already(record: &AuditRecord) -> Vec<(String, Digest)> {
    record
        .actions
        .iter()
        .filter(|a| a.outcome == ActionOutcome::Already)
        .map(|a| (a.action.kind().as_str().to_owned(), a.action.target().clone()))
        .collect()
}

#[tokio::test]
async fn a_redelivery_records_the_writes_an_earlier_delivery_made_as_already() {
    // Delivery 1 moved the tags and died before its record was written.
    let reg = registry(false);
    let p = push_buildx(&reg, "a", "v7", &[]);
    let set = policies(Mode::Promote, false, true);
    let audit = Audit::default();
    let first = delivery(&reg, &audit, &set, &job(p.index.digest(), "v7"), 1).await;
    assert_eq!(first.outcome, Outcome::Remediated, "{first:#?}");
    let puts = reg.calls().get("PutImage").copied();
    // Delivery 2 finds both writes in place and says so.
    let again = delivery(&reg, &audit, &set, &job(p.index.digest(), "v7"), 2).await;
    assert_eq!(again.outcome, Outcome::Noop, "{again:#?}");
    assert_eq!(
        already(&again),
        vec![
            ("add_tag".to_owned(), p.index.digest().clone()),
            ("move_tag".to_owned(), p.image.digest().clone())
        ],
        "{again:#?}"
    );
    assert!(
        again.notes.iter().any(|n| n.contains("earlier delivery")),
        "{:?}",
        again.notes
    );
    assert!(
        again.actions.iter().all(|a| a.earlier_attempt == Some(1)),
        "delivery 1's checkpoint listed them: {again:#?}"
    );
    assert_eq!(reg.calls().get("PutImage").copied(), puts, "nothing written again");

    // A strip's new index, found under the pushed tag, is the same.
    let reg = registry(false);
    let p = push_buildx(&reg, "b", "v8", &[]);
    let set = policies(Mode::Strip, false, true);
    delivery(&reg, &audit, &set, &job(p.index.digest(), "v8"), 1).await;
    let stripped = target(&reg, "v8").unwrap();
    let again = delivery(&reg, &audit, &set, &job(p.index.digest(), "v8"), 2).await;
    assert_eq!(
        already(&again),
        vec![
            ("add_tag".to_owned(), p.index.digest().clone()),
            ("put_index".to_owned(), stripped)
        ],
        "{again:#?}"
    );
}

#[tokio::test]
async fn a_superseded_redelivery_still_accounts_for_the_keep_tag_in_place() {
    let reg = registry(false);
    let p = push_buildx(&reg, "a", "v7", &[]);
    let set = policies(Mode::Promote, false, true);
    let audit = Audit::default();
    delivery(&reg, &audit, &set, &job(p.index.digest(), "v7"), 1).await;
    // A newer push of v7 lands before delivery 2.
    let newer = push_buildx(&reg, "b", "v7", &[]);
    let again = delivery(&reg, &audit, &set, &job(p.index.digest(), "v7"), 2).await;
    assert_eq!(code(&again), "superseded", "{again:#?}");
    assert_eq!(
        already(&again),
        vec![("add_tag".to_owned(), p.index.digest().clone())],
        "v7-index is still on the index: {again:#?}"
    );
    assert_eq!(target(&reg, "v7").as_ref(), Some(newer.index.digest()));
    // The move of v7 cannot be told from the registry any more: delivery 1's
    // checkpoint listed it, and the record says it is unconfirmed.
    let moved = again
        .actions
        .iter()
        .find(|a| a.action.kind().as_str() == "move_tag")
        .unwrap_or_else(|| panic!("{again:#?}"));
    assert!(matches!(moved.outcome, ActionOutcome::Unconfirmed { .. }), "{again:#?}");
    assert_eq!(moved.earlier_attempt, Some(1));
    assert_eq!(moved.action.target(), p.image.digest());
    // Without a checkpoint listing it (a first delivery), nothing is claimed.
    let reg = registry(false);
    let p = push_buildx(&reg, "c", "v7", &[]);
    push_buildx(&reg, "d", "v7", &[]);
    let first = delivery(&reg, &Audit::default(), &set, &job(p.index.digest(), "v7"), 1).await;
    assert_eq!(code(&first), "superseded");
    assert!(first.actions.is_empty(), "{first:#?}");
}

#[tokio::test]
async fn a_redelivery_confirms_the_deletions_an_earlier_delivery_made_before_its_record_was_lost() {
    let reg = registry(false);
    let p = push_buildx(&reg, "a", "v7", &[]);
    let set = policies(Mode::Promote, true, false);
    let audit = Audit::default();
    // Delivery 1: checkpoint written, deletions applied, final record lost.
    let lost = delivery(&reg, &audit, &set, &job(p.index.digest(), "v7"), 1).await;
    assert_eq!(lost.deleted, 2, "{lost:#?}");
    // Delivery 2 finds the index gone; its record says what delivery 1 did.
    let again = delivery(&reg, &audit, &set, &job(p.index.digest(), "v7"), 2).await;
    assert_eq!(again.outcome, Outcome::Remediated, "{again:#?}");
    assert_eq!(again.deleted, lost.deleted);
    assert_eq!(again.reclaimed_bytes, lost.reclaimed_bytes);
    for d in [p.index.digest(), p.attestation.digest()] {
        let a = again.actions.iter().find(|a| a.action.target() == d).unwrap();
        assert_eq!(a.outcome, ActionOutcome::Applied, "{again:#?}");
        assert_eq!(a.earlier_attempt, Some(1), "{again:#?}");
    }
    // A strip that deleted the index it replaced: its new index is found
    // under the tag and attributed, though the index the event names is gone.
    let reg = registry(false);
    let p = push_buildx(&reg, "s", "v7", &[]);
    let strip = policies(Mode::Strip, true, false);
    let audit = Audit::default();
    delivery(&reg, &audit, &strip, &job(p.index.digest(), "v7"), 1).await;
    let stripped = target(&reg, "v7").unwrap();
    let again = delivery(&reg, &audit, &strip, &job(p.index.digest(), "v7"), 2).await;
    assert_eq!(again.outcome, Outcome::Remediated, "{again:#?}");
    let put = again
        .actions
        .iter()
        .find(|a| a.action.kind().as_str() == "put_index")
        .unwrap_or_else(|| panic!("{again:#?}"));
    assert_eq!(
        (put.action.target(), &put.outcome),
        (&stripped, &ActionOutcome::Already)
    );
    assert_eq!(put.earlier_attempt, Some(1));
    assert_eq!(again.deleted, 2, "{again:#?}");
    // Had delivery 1's final record been written, nothing is claimed twice.
    let reg = registry(false);
    let p = push_buildx(&reg, "b", "v7", &[]);
    let audit = Audit::default();
    let written = delivery(&reg, &audit, &set, &job(p.index.digest(), "v7"), 1).await;
    audit.write(&written).await.unwrap();
    let again = delivery(&reg, &audit, &set, &job(p.index.digest(), "v7"), 2).await;
    assert_eq!(code(&again), "index_gone", "{again:#?}");
    assert_eq!(again.deleted, 0);
    // And a pending deletion whose manifest is still there is not claimed.
    let reg = registry(false);
    let p = push_buildx(&reg, "c", "v7", &[]);
    let audit = Audit::default();
    delivery(&reg, &audit, &set, &job(p.index.digest(), "v7"), 1).await;
    reg.push(&repo(), &p.attestation, None).unwrap();
    let again = delivery(&reg, &audit, &set, &job(p.index.digest(), "v7"), 2).await;
    assert_eq!(again.deleted, 1, "the index only: {again:#?}");
    assert!(
        again.notes.iter().any(|n| n.contains("still there")),
        "{:?}",
        again.notes
    );
}

#[tokio::test]
async fn a_non_retryable_write_failure_stops_the_plan_and_is_recorded() {
    let reg = registry(false);
    let p = push_buildx(&reg, "a", "v7", &[]);
    reg.fail_next("PutImage", [access_denied("PutImage")]);
    let record = handle(
        &reg,
        &policies(Mode::Promote, true, false),
        &job(p.index.digest(), "v7"),
    )
    .await;
    match &record.outcome {
        Outcome::Failed(f) => {
            assert_eq!(f.code, "AccessDeniedException");
            assert!(!f.retryable);
        }
        other => panic!("{other:?}"),
    }
    assert!(record.is_final);
    assert!(matches!(record.actions[0].outcome, ActionOutcome::Failed(_)));
    assert!(
        record.actions[1..]
            .iter()
            .all(|a| matches!(&a.outcome, ActionOutcome::Skipped { reason } if reason.contains("not attempted")))
    );
    assert_eq!(state(&reg).images.len(), 3);
}

#[tokio::test]
async fn dry_run_plans_and_records_but_writes_nothing() {
    let reg = registry(false);
    let p = push_buildx(&reg, "a", "v7", &[]);
    let mut set = policies(Mode::Promote, true, false);
    set.default.dry_run = true;
    let audit = Audit::default();
    let record = run(&reg, &audit, &set, &job(p.index.digest(), "v7")).await;
    assert_eq!(record.outcome, Outcome::Planned);
    let planned: Vec<&str> = record
        .actions
        .iter()
        .filter(|a| a.outcome == ActionOutcome::Planned)
        .map(|a| a.action.kind().as_str())
        .collect();
    assert_eq!(planned, vec!["move_tag", "delete", "delete"], "{record:#?}");
    assert!(
        audit.records.lock().unwrap().is_empty(),
        "no checkpoint: nothing will happen"
    );
    assert_eq!(reg.calls().get("PutImage"), None);
    assert_eq!(reg.calls().get("BatchDeleteImage"), None);
}

#[tokio::test]
async fn strip_mode_reads_its_own_new_index_and_leaves_it_alone() {
    let reg = registry(false);
    let p = push_buildx(&reg, "a", "v7", &[]);
    let set = policies(Mode::Strip, false, true);
    let first = handle(&reg, &set, &job(p.index.digest(), "v7")).await;
    assert_eq!(first.outcome, Outcome::Remediated);
    let stripped = target(&reg, "v7").unwrap();
    assert_ne!(&stripped, p.index.digest());
    let before = reg.calls();
    let second = handle(&reg, &set, &job(&stripped, "v7")).await;
    assert_eq!(code(&second), "nothing_to_strip");
    assert_eq!(reg.calls().get("PutImage"), before.get("PutImage"));
    assert_eq!(target(&reg, "v7"), Some(stripped));
}

#[tokio::test]
async fn a_keep_tag_taken_between_planning_and_writing_stops_the_move() {
    let reg = registry(false);
    let p = push_buildx(&reg, "a", "v7", &[]);
    let theirs = image("theirs");
    reg.push(&repo(), &theirs, None).unwrap();
    let t2 = theirs.clone();
    // Another writer puts v7-index on an image right before the precondition check.
    reg.on_call(move |op, n, repos| {
        if op == "BatchGetImage" && n == 2 {
            store(repos.get_mut("team/app").unwrap(), &t2, Some(&tag("v7-index"))).unwrap();
        }
    });
    let record = handle(&reg, &policies(Mode::Promote, true, true), &job(p.index.digest(), "v7")).await;
    assert_eq!(code(&record), "keep_tag_taken", "{record:#?}");
    assert_eq!(
        target(&reg, "v7").as_ref(),
        Some(p.index.digest()),
        "the pushed tag is not moved"
    );
    assert_eq!(target(&reg, "v7-index").as_ref(), Some(theirs.digest()));
    assert_eq!(reg.calls().get("PutImage"), None);
}

// ---- Sweep cleanup of leftovers -------------------------------------------

fn cleanup_job(digest: &Digest, min_age_s: u64) -> Job {
    Job {
        purpose: ecr_remediator::Purpose::Cleanup { min_age_s },
        trigger: Trigger::Sweep,
        event_id: None,
        account: None,
        region: None,
        replicated_from: None,
        repository: repo(),
        digest: digest.clone(),
        tag: None,
        tag_arrived_ms: None,
    }
}

/// A push promoted with the keep tag off and deletion off: the index is left
/// untagged, the tag on its image.
fn leftover_index(reg: &MemoryRegistry, salt: &str, t: &str) -> Push {
    let p = push_buildx(reg, salt, t, &[]);
    store_tag(reg, &p.image, t);
    p
}

/// Moves `t` onto `m` (as a remediation or a user's `crane tag` would).
fn store_tag(reg: &MemoryRegistry, m: &RawManifest, t: &str) {
    reg.push(&repo(), m, Some(&tag(t))).unwrap();
}

fn deleted(record: &AuditRecord) -> Vec<Digest> {
    record
        .actions
        .iter()
        .filter(|a| a.outcome == ActionOutcome::Applied && matches!(a.action, Action::Delete { .. }))
        .map(|a| a.action.target().clone())
        .collect()
}

#[tokio::test]
async fn cleanup_deletes_an_index_a_remediation_left_untagged_and_its_attestations_only() {
    let reg = registry(false);
    let p = leftover_index(&reg, "a", "v1");
    assert!(state(&reg).tags_of(p.index.digest()).is_empty());
    let audit = Audit::default();
    let record = run(
        &reg,
        &audit,
        &policies(Mode::Promote, true, false),
        &cleanup_job(p.index.digest(), 0),
    )
    .await;
    assert_eq!(record.outcome, Outcome::Remediated, "{record:#?}");
    assert_eq!(record.trigger, Trigger::Sweep);
    assert_eq!(
        deleted(&record),
        vec![p.index.digest().clone(), p.attestation.digest().clone()]
    );
    let s = state(&reg);
    assert!(
        s.images.contains_key(p.image.digest()),
        "the runnable image is never deleted"
    );
    assert_eq!(target(&reg, "v1").as_ref(), Some(p.image.digest()));
    assert!(!s.images.contains_key(p.index.digest()) && !s.images.contains_key(p.attestation.digest()));
    // The checkpoint went first.
    let checkpoints = audit.records.lock().unwrap().clone();
    assert_eq!(checkpoints.len(), 1);
    assert_eq!(checkpoints[0].outcome, Outcome::InProgress);
    // Run again: nothing left to do.
    let again = handle(
        &reg,
        &policies(Mode::Promote, true, false),
        &cleanup_job(p.index.digest(), 0),
    )
    .await;
    assert_eq!(code(&again), "index_gone", "{again:#?}");
}

#[tokio::test]
async fn cleanup_leaves_superseded_pushes_kept_indexes_young_leftovers_and_other_policies_alone() {
    let reg = registry(false);
    // Superseded: v1 pushed twice, the first index untagged, its image untagged too.
    let old = push_buildx(&reg, "old", "v1", &[]);
    push_buildx(&reg, "new", "v1", &[]);
    let delete = policies(Mode::Promote, true, false);
    let r = handle(&reg, &delete, &cleanup_job(old.index.digest(), 0)).await;
    assert_eq!(code(&r), "not_remediated", "{r:#?}");

    let left = leftover_index(&reg, "left", "v2");
    for (policy, expected) in [
        (policies(Mode::Promote, false, false), "cleanup_not_enabled"),
        (policies(Mode::Observe, true, false), "cleanup_not_enabled"),
        (policies(Mode::Promote, true, true), "indexes_kept"),
        (policies(Mode::Tag, true, false), "indexes_kept"),
    ] {
        let r = handle(&reg, &policy, &cleanup_job(left.index.digest(), 0)).await;
        assert_eq!(code(&r), expected, "{r:#?}");
    }
    // Younger than the minimum age (a century).
    let r = handle(&reg, &delete, &cleanup_job(left.index.digest(), 3_155_760_000)).await;
    assert_eq!(code(&r), "too_recent", "{r:#?}");
    // Tagged since the sweep listed it.
    store_tag(&reg, &left.index, "pinned");
    let r = handle(&reg, &delete, &cleanup_job(left.index.digest(), 0)).await;
    assert_eq!(code(&r), "still_tagged", "{r:#?}");
    for p in [&old, &left] {
        assert!(state(&reg).images.contains_key(p.index.digest()));
        assert!(state(&reg).images.contains_key(p.attestation.digest()));
    }
}

#[tokio::test]
async fn cleanup_deletes_an_orphaned_attestation_but_never_a_listed_attached_or_runnable_one() {
    let reg = registry(false);
    let delete = policies(Mode::Strip, true, true);
    // Orphaned: its index was deleted by hand.
    let p = push_buildx(&reg, "a", "v1", &[]);
    let gone = reg.delete_images(&repo(), &[p.index.digest().clone()]).await.unwrap();
    assert_eq!(gone.len(), 1);
    reg.push(&repo(), &p.image, Some(&tag("v1"))).unwrap();
    let r = handle(&reg, &delete, &cleanup_job(p.attestation.digest(), 0)).await;
    assert_eq!(r.outcome, Outcome::Remediated, "{r:#?}");
    assert_eq!(deleted(&r), vec![p.attestation.digest().clone()]);
    assert!(state(&reg).images.contains_key(p.image.digest()));

    // Still listed by its index: ECR keeps it, and so does the plan.
    let q = push_buildx(&reg, "b", "v2", &[]);
    let r = handle(&reg, &delete, &cleanup_job(q.attestation.digest(), 0)).await;
    assert!(state(&reg).images.contains_key(q.attestation.digest()), "{r:#?}");
    // A runnable image is never a cleanup's target.
    let r = handle(&reg, &delete, &cleanup_job(q.image.digest(), 0)).await;
    assert_eq!(code(&r), "not_an_attestation", "{r:#?}");
    // An attestation attached to an image in the repository (OCI subject).
    let attached = raw(&json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.docker.attestation.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                   "digest": Digest::sha256_of(b"{}").to_string(), "size": 2},
        "layers": [{"mediaType": "application/vnd.in-toto+json",
                    "digest": Digest::sha256_of(b"statement").to_string(), "size": 100,
                    "annotations": {"in-toto.io/predicate-type": "https://slsa.dev/provenance/v1"}}],
        "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": q.image.digest().to_string(), "size": q.image.bytes().len()}
    }));
    reg.push(&repo(), &attached, None).unwrap();
    let r = handle(&reg, &delete, &cleanup_job(attached.digest(), 0)).await;
    assert_eq!(code(&r), "attached_referrer", "{r:#?}");
    // A dry run plans the deletion and makes none.
    let orphan = attestation("lonely");
    reg.push(&repo(), &orphan, None).unwrap();
    let mut dry = policies(Mode::Strip, true, true);
    dry.default.dry_run = true;
    let r = handle(&reg, &dry, &cleanup_job(orphan.digest(), 0)).await;
    assert_eq!(r.outcome, Outcome::Planned, "{r:#?}");
    assert!(
        r.actions
            .iter()
            .any(|a| a.action.is_delete() && a.outcome == ActionOutcome::Planned && a.bytes == Some(100)),
        "{r:#?}"
    );
    assert!(state(&reg).images.contains_key(orphan.digest()));
}

// ---- provenance = referrers ------------------------------------------------

fn referrer_policies() -> PolicySet {
    let mut p = policies(Mode::Promote, true, false);
    p.default.provenance = ecr_remediator::policy::Provenance::Referrers;
    p
}

#[tokio::test]
async fn referrers_are_written_and_verified_before_the_attestation_is_deleted() {
    let reg = registry(false);
    let p = push_buildx(&reg, "a", "v1", &[]);
    let audit = Audit::default();
    let record = run(&reg, &audit, &referrer_policies(), &job(p.index.digest(), "v1")).await;
    assert_eq!(record.outcome, Outcome::Remediated, "{record:#?}");
    let kinds: Vec<&str> = record
        .actions
        .iter()
        .map(|a| match a.action {
            Action::PutReferrer { .. } => "referrer",
            Action::Delete { .. } => "delete",
            _ => "tag",
        })
        .collect();
    assert_eq!(kinds, vec!["tag", "referrer", "delete", "delete"], "{record:#?}");
    let copy = record.actions[1].action.target().clone();
    // What signs the index and the image, what is attached to the
    // attestation (before planning the deletions), then the copy verified once.
    assert_eq!(
        reg.calls()["ListImageReferrers"],
        6,
        "three attachment checks, one verification, the index and attestation again right before deleting"
    );
    let referrers = reg.list_referrers(&repo(), p.image.digest()).await.unwrap();
    assert_eq!(referrers, vec![Referrer::new(copy.clone(), None)]);
    let s = state(&reg);
    assert!(s.images.contains_key(&copy) && !s.images.contains_key(p.attestation.digest()));
    assert!(!s.images.contains_key(p.index.digest()));
    // The checkpoint lists the deletions; the copy was already written.
    let checkpoint = audit.records.lock().unwrap()[0].clone();
    assert_eq!(checkpoint.outcome, Outcome::InProgress);
}

#[tokio::test]
async fn an_unverified_referrer_keeps_the_index_and_its_attestations() {
    let reg = registry(false);
    let p = push_buildx(&reg, "b", "v1", &[]);
    // ECR does not list the copy (here: it vanishes before every listing).
    let image = p.image.digest().clone();
    reg.on_call(move |op, _, repos| {
        if op == "ListImageReferrers"
            && let Some(r) = repos.get_mut("team/app")
        {
            let copies: Vec<Digest> = r
                .images
                .iter()
                .filter(|(_, m)| match m.manifest() {
                    ecr_remediator::oci::manifest::Manifest::Image(i) => {
                        i.subject.as_ref().is_some_and(|s| s.digest == image)
                    }
                    _ => false,
                })
                .map(|(d, _)| d.clone())
                .collect();
            for d in copies {
                r.images.remove(&d);
            }
        }
    });
    let record = handle(&reg, &referrer_policies(), &job(p.index.digest(), "v1")).await;
    let s = state(&reg);
    assert!(s.images.contains_key(p.index.digest()), "the index is kept");
    assert!(s.images.contains_key(p.attestation.digest()), "its attestation is kept");
    assert_eq!(
        target(&reg, "v1").as_ref(),
        Some(p.image.digest()),
        "the tag still moved"
    );
    let skipped: Vec<&ActionOutcome> = record
        .actions
        .iter()
        .filter(|a| a.action.is_delete())
        .map(|a| &a.outcome)
        .collect();
    assert_eq!(skipped.len(), 2, "{record:#?}");
    assert!(
        skipped.iter().all(
            |o| matches!(o, ActionOutcome::Skipped { reason } if reason.contains("referrer copies are not in place"))
        ),
        "{record:#?}"
    );
    // The record says the handling is incomplete, and when a follow-up
    // retries the deletions (the handler enqueues it).
    assert_eq!(
        record.incomplete,
        Some(ecr_remediator::decide::skip::SkipCode::ReferrersUnverified),
        "{record:#?}"
    );
    assert!(record.deferred_until.is_some(), "{record:#?}");
    assert_eq!(
        reg.calls()["ListImageReferrers"],
        3 + 3,
        "three attachment checks, then listed again before giving up"
    );
}

#[tokio::test]
async fn a_leftover_index_is_cleaned_up_only_after_its_provenance_is_attached() {
    let reg = registry(false);
    let p = leftover_index(&reg, "ref-left", "v1");
    let record = handle(&reg, &referrer_policies(), &cleanup_job(p.index.digest(), 0)).await;
    assert_eq!(record.outcome, Outcome::Remediated, "{record:#?}");
    let copy = record
        .actions
        .iter()
        .find(|a| matches!(a.action, Action::PutReferrer { .. }))
        .map(|a| a.action.target().clone())
        .expect("a referrer copy");
    assert_eq!(
        deleted(&record),
        vec![p.index.digest().clone(), p.attestation.digest().clone()]
    );
    assert_eq!(
        reg.list_referrers(&repo(), p.image.digest()).await.unwrap(),
        vec![Referrer::new(copy, None)]
    );
    // Orphaned attestations of unknown images are kept under referrers.
    let orphan = attestation("ref-orphan");
    reg.push(&repo(), &orphan, None).unwrap();
    let r = handle(&reg, &referrer_policies(), &cleanup_job(orphan.digest(), 0)).await;
    assert_eq!(code(&r), "provenance_uncovered", "{r:#?}");
    assert!(state(&reg).images.contains_key(orphan.digest()));
}

#[tokio::test]
async fn the_repository_tag_picks_the_mode_or_opts_out_and_the_record_says_so() {
    // The rule says tag mode with deletion on; the repository's tag says promote.
    let reg = registry(false);
    let p = push_buildx(&reg, "a", "v7", &[]);
    reg.tag_repository(&repo(), "ecr-remediator:mode", Some("promote"));
    let record = handle(&reg, &policies(Mode::Tag, true, true), &job(p.index.digest(), "v7")).await;
    assert_eq!(record.outcome, Outcome::Remediated, "{record:#?}");
    assert_eq!(target(&reg, "v7").as_ref(), Some(p.image.digest()), "promoted");
    let policy = record.policy.as_ref().unwrap();
    assert_eq!(policy.mode, Mode::Promote);
    assert_eq!(policy.repository_tag.as_deref(), Some("promote"));
    assert_eq!(
        policy.source,
        "no rule matched: the default policy; repository tag ecr-remediator:mode=promote chose the mode"
    );
    assert_eq!(reg.calls()["ListTagsForResource"], 1);

    // `off`: nothing is read or written, and the record says why.
    for (value, code) in [("off", "opted_out"), ("promote please", "invalid_repository_tag")] {
        let reg = registry(false);
        let p = push_buildx(&reg, "a", "v7", &[]);
        reg.tag_repository(&repo(), "ecr-remediator:mode", Some(value));
        let before = state(&reg);
        let record = handle(
            &reg,
            &policies(Mode::Promote, true, false),
            &job(p.index.digest(), "v7"),
        )
        .await;
        assert!(
            matches!(&record.outcome, Outcome::Skipped { code: c, .. } if c.as_str() == code),
            "{value}: {record:#?}"
        );
        assert_eq!(reg.calls().get("BatchGetImage"), None, "{value}: not even read");
        assert_eq!(state(&reg).tags, before.tags);
        assert_eq!(state(&reg).images.len(), before.images.len());
        assert!(record.is_final);
    }
}

#[tokio::test]
async fn a_rule_can_require_an_opt_in_or_ignore_the_repository_tag() {
    let set = |use_: &str| {
        PolicySet::from_env_vars(&BTreeMap::from([
            ("ECR_REMEDIATOR_MODE".to_owned(), "promote".to_owned()),
            ("ECR_REMEDIATOR_REPOSITORY_TAG".to_owned(), use_.to_owned()),
        ]))
        .unwrap()
    };
    // Required, no tag: left alone.
    let reg = registry(false);
    let p = push_buildx(&reg, "a", "v7", &[]);
    let record = handle(&reg, &set("required"), &job(p.index.digest(), "v7")).await;
    assert_eq!(code(&record), "opted_out", "{record:#?}");
    assert_eq!(target(&reg, "v7").as_ref(), Some(p.index.digest()));
    // Required, `on`: the rule's mode.
    reg.tag_repository(&repo(), "ecr-remediator:mode", Some("on"));
    let record = handle(&reg, &set("required"), &job(p.index.digest(), "v7")).await;
    assert_eq!(record.outcome, Outcome::Remediated, "{record:#?}");
    assert_eq!(target(&reg, "v7").as_ref(), Some(p.image.digest()));
    // Ignored: the tag is never read, and `off` changes nothing.
    let reg = registry(false);
    let p = push_buildx(&reg, "a", "v7", &[]);
    reg.tag_repository(&repo(), "ecr-remediator:mode", Some("off"));
    let record = handle(&reg, &set("ignored"), &job(p.index.digest(), "v7")).await;
    assert_eq!(record.outcome, Outcome::Remediated, "{record:#?}");
    assert_eq!(reg.calls().get("ListTagsForResource"), None);
}

#[tokio::test]
async fn a_repository_tag_that_cannot_be_read_is_a_failure_that_touches_nothing() {
    let reg = registry(false);
    let p = push_buildx(&reg, "a", "v7", &[]);
    reg.fail_next("ListTagsForResource", [access_denied("ListTagsForResource")]);
    let record = handle(
        &reg,
        &policies(Mode::Promote, true, false),
        &job(p.index.digest(), "v7"),
    )
    .await;
    assert!(
        matches!(&record.outcome, Outcome::Failed(f) if f.code == "AccessDeniedException" && !f.retryable),
        "{record:#?}"
    );
    assert_eq!(target(&reg, "v7").as_ref(), Some(p.index.digest()), "nothing moved");
    assert_eq!(reg.calls().get("PutImage"), None);
    // Throttling is retried like any read.
    reg.fail_next("ListTagsForResource", [throttled("ListTagsForResource")]);
    let record = handle(
        &reg,
        &policies(Mode::Promote, true, false),
        &job(p.index.digest(), "v7"),
    )
    .await;
    assert_eq!(record.outcome, Outcome::Remediated, "{record:#?}");
}

/// Golden records: the audit record is a published schema (version 1) that
/// dashboards, saved queries and compliance exports read. Each case's
/// records (checkpoint included) are compared, field for field, with the file
/// under `tests/fixtures/records/`; only the instant and the duration vary
/// from run to run. Renaming an enum variant or a field fails here.
/// `ECR_REMEDIATOR_UPDATE_GOLDEN=1` rewrites the files, for a change of the
/// schema made on purpose (which also bumps `schema_version`).
mod golden {
    use super::*;

    fn normalised(record: &AuditRecord) -> serde_json::Value {
        let mut v = serde_json::to_value(record).unwrap();
        let o = v.as_object_mut().unwrap();
        assert!(
            o.remove("started_at")
                .is_some_and(|t| t.as_str().is_some_and(|t| t.ends_with('Z')))
        );
        assert!(o.remove("duration_ms").is_some_and(|d| d.is_u64()));
        v
    }

    fn check(name: &str, records: &[AuditRecord]) {
        let got = serde_json::Value::Array(records.iter().map(normalised).collect());
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/records")
            .join(format!("{name}.json"));
        if std::env::var_os("ECR_REMEDIATOR_UPDATE_GOLDEN").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, serde_json::to_string_pretty(&got).unwrap() + "\n").unwrap();
        }
        let want: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
                .unwrap();
        assert_eq!(
            got,
            want,
            "the records of {name} changed; if on purpose, bump the schema version and rerun with ECR_REMEDIATOR_UPDATE_GOLDEN=1:\n{}",
            serde_json::to_string_pretty(&got).unwrap()
        );
        for r in records {
            assert_eq!(r.schema_version, 1);
        }
    }

    /// The checkpoint(s) the engine wrote, then the final record.
    async fn records(reg: &MemoryRegistry, policies: &PolicySet, job: &Job) -> Vec<AuditRecord> {
        let audit = Audit::default();
        let last = run(reg, &audit, policies, job).await;
        let mut all = audit.records.lock().unwrap().clone();
        all.push(last);
        all
    }

    #[tokio::test]
    async fn a_promotion_that_deletes_with_its_checkpoint() {
        let reg = registry(false);
        let p = push_buildx(&reg, "golden-promote", "v1", &[]);
        let got = records(
            &reg,
            &policies(Mode::Promote, true, false),
            &job(p.index.digest(), "v1"),
        )
        .await;
        assert_eq!(got.len(), 2, "checkpoint, then the final record");
        assert_eq!(got[0].attempt, Some(2), "the checkpoint says its attempt");
        assert_eq!(got[0].attempt, got[1].attempt, "the same as the final record's");
        check("promote-delete", &got);
    }

    #[tokio::test]
    async fn a_strip_under_a_keep_tag() {
        let reg = registry(false);
        let p = push_buildx(&reg, "golden-strip", "v1", &[]);
        let got = records(&reg, &policies(Mode::Strip, false, true), &job(p.index.digest(), "v1")).await;
        check("strip-keep", &got);
    }

    #[tokio::test]
    async fn the_tag_pass_of_the_default_policy() {
        let reg = registry(false);
        let p = push_buildx(&reg, "golden-tag", "v1", &[]);
        let got = records(&reg, &policies(Mode::Tag, false, true), &job(p.index.digest(), "v1")).await;
        check("tag", &got);
    }

    #[tokio::test]
    async fn a_superseded_push_and_a_failure() {
        let reg = registry(false);
        let old = push_buildx(&reg, "golden-old", "v1", &[]);
        push_buildx(&reg, "golden-new", "v1", &[]);
        let superseded = records(
            &reg,
            &policies(Mode::Promote, true, false),
            &job(old.index.digest(), "v1"),
        )
        .await;
        check("superseded", &superseded);
        let reg = registry(false);
        let p = push_buildx(&reg, "golden-denied", "v1", &[]);
        reg.fail_next("PutImage", [access_denied("PutImage")]);
        let failed = records(
            &reg,
            &policies(Mode::Promote, false, true),
            &job(p.index.digest(), "v1"),
        )
        .await;
        check("failed", &failed);
    }

    #[tokio::test]
    async fn what_the_handler_refuses() {
        let mut h = ecr_remediator::Handler::new(registry(false), Audit::default(), PolicySet::default());
        h.log_records = false;
        let delivery = ecr_remediator::Delivery::default;
        h.handle_text("{not json", delivery()).await.unwrap();
        h.handle_text(
            r#"{"ecr-remediator":"cleanup","account":"999999999999","repository":"team/app","digest":"sha256:42b5e3bd0b6a7e2a6f1f4ab6b3e6c0c5d2b4a1f0e9d8c7b6a5f4e3d2c1b0a998","min-age-s":0}"#,
            delivery(),
        )
        .await
        .unwrap();
        h.handle_text(r#"{"ecr-remediator":"sweep"}"#, delivery())
            .await
            .unwrap();
        let got = h.audit.records.lock().unwrap().clone();
        assert_eq!(got.len(), 3, "{got:#?}");
        check("refused", &got);
    }
}

/// The dry run is a promise: over generated registries (modes, keep tag,
/// deletion, one to three platforms, earlier pushes of the same tags handled
/// or not), a dry run writes nothing, and the real run on the same registry
/// then attempts exactly the actions the dry run planned.
mod dry_run_equals_the_real_run {
    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    struct Case {
        mode: Mode,
        keep: bool,
        delete: bool,
        /// Each push: (tag number, platforms, handled for real before the last).
        pushes: Vec<(u8, usize, bool)>,
    }

    fn case() -> impl Strategy<Value = Case> {
        (
            prop::sample::select(vec![Mode::Tag, Mode::Promote, Mode::Strip]),
            any::<bool>(),
            any::<bool>(),
            prop::collection::vec((0u8..3, 1usize..4, any::<bool>()), 1..6),
        )
            .prop_map(|(mode, keep, delete, pushes)| Case {
                mode,
                keep,
                delete,
                pushes,
            })
    }

    /// A buildx index of `platforms` images, each with its attestation.
    fn push_platforms(reg: &MemoryRegistry, salt: &str, pushed_tag: &str, platforms: usize) -> Digest {
        let arches = ["arm64", "amd64", "riscv64"];
        let mut entries = Vec::new();
        for arch in arches.iter().take(platforms) {
            let img = image(&format!("{salt}-{arch}"));
            let att = attestation(&format!("{salt}-{arch}"));
            reg.push(&repo(), &img, None).unwrap();
            reg.push(&repo(), &att, None).unwrap();
            entries.push(entry(&img, Some(("linux", arch))));
            entries.push(attestation_entry(&att, &img));
        }
        let index = raw(
            &json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries}),
        );
        reg.push(&repo(), &index, Some(&tag(pushed_tag))).unwrap();
        index.digest().clone()
    }

    fn set(c: &Case, dry_run: bool) -> PolicySet {
        let mut vars = BTreeMap::new();
        vars.insert("ECR_REMEDIATOR_MODE".to_owned(), c.mode.as_str().to_owned());
        vars.insert("ECR_REMEDIATOR_DELETE_ORPHANS".to_owned(), c.delete.to_string());
        vars.insert("ECR_REMEDIATOR_GRACE_PERIOD".to_owned(), "0s".to_owned());
        vars.insert("ECR_REMEDIATOR_DRY_RUN".to_owned(), dry_run.to_string());
        if !c.keep {
            vars.insert("ECR_REMEDIATOR_KEEP_TAG".to_owned(), "false".to_owned());
        }
        PolicySet::from_env_vars(&vars).unwrap()
    }

    /// What a record attempted (or planned), as comparable text, sorted.
    fn attempted(record: &AuditRecord) -> Vec<String> {
        let mut out: Vec<String> = record
            .actions
            .iter()
            .filter(|a| {
                matches!(
                    a.outcome,
                    ActionOutcome::Planned | ActionOutcome::Applied | ActionOutcome::Skipped { .. }
                ) || (a.outcome == ActionOutcome::Already && !a.action.is_delete())
            })
            .map(|a| a.action.to_string())
            .collect();
        out.sort();
        out
    }

    fn run_case(c: &Case) -> Result<(), TestCaseError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let reg = registry(false);
            let mut jobs = Vec::new();
            for (n, (t, platforms, _)) in c.pushes.iter().enumerate() {
                let pushed_tag = format!("v{t}");
                let digest = push_platforms(&reg, &format!("p{n}"), &pushed_tag, *platforms);
                jobs.push(job(&digest, &pushed_tag));
            }
            let (last, earlier) = jobs.split_last().unwrap();
            for (j, (_, _, handled)) in earlier.iter().zip(&c.pushes) {
                if *handled {
                    handle(&reg, &set(c, false), j).await;
                }
            }
            let before = state(&reg);
            let dry = handle(&reg, &set(c, true), last).await;
            let after = state(&reg);
            prop_assert_eq!(&before.tags, &after.tags, "the dry run wrote a tag: {:#?}", dry);
            prop_assert_eq!(
                before.images.keys().collect::<Vec<_>>(),
                after.images.keys().collect::<Vec<_>>(),
                "the dry run stored or deleted a manifest: {:#?}",
                dry
            );
            let real = handle(&reg, &set(c, false), last).await;
            prop_assert_eq!(attempted(&dry), attempted(&real), "dry {:#?}\nreal {:#?}", dry, real);
            let planned = dry.actions.iter().any(|a| a.outcome == ActionOutcome::Planned);
            prop_assert_eq!(planned, dry.outcome == Outcome::Planned);
            if planned {
                prop_assert_eq!(&real.outcome, &Outcome::Remediated, "{:#?}", real);
            } else {
                prop_assert_eq!(
                    dry.outcome.kind(),
                    real.outcome.kind(),
                    "dry {:#?}\nreal {:#?}",
                    dry,
                    real
                );
            }
            let planned_deletes = dry
                .actions
                .iter()
                .filter(|a| a.outcome == ActionOutcome::Planned && a.action.is_delete());
            prop_assert_eq!(planned_deletes.clone().count(), real.deleted as usize);
            prop_assert_eq!(
                planned_deletes.filter_map(|a| a.bytes).sum::<u64>(),
                real.reclaimed_bytes
            );
            Ok(())
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]
        #[test]
        fn over_generated_registries(c in case()) {
            run_case(&c)?;
        }
    }
}

/// An index of one image for `platform` (plus its attestation), pushed as `pushed_tag`.
fn push_for(reg: &MemoryRegistry, salt: &str, pushed_tag: &str, platform: (&str, &str)) -> Push {
    let img = image(salt);
    let att = attestation(salt);
    let entries = vec![entry(&img, Some(platform)), attestation_entry(&att, &img)];
    let index =
        raw(&json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries}));
    reg.push(&repo(), &img, None).unwrap();
    reg.push(&repo(), &att, None).unwrap();
    reg.push(&repo(), &index, Some(&tag(pushed_tag))).unwrap();
    Push {
        index,
        image: img,
        attestation: att,
    }
}

/// Issue 22: the record says whether Lambda would take what the pushed tag
/// now deploys; a `no` is promoted with a warning, or, when the policy says
/// so, the tag stays on the index and only a derived tag is written.
#[tokio::test]
async fn the_record_carries_lambdas_verdict_and_the_policy_decides_what_a_no_does() {
    let reg = registry(false);
    let linux = push_for(&reg, "lx", "v1", ("linux", "arm64"));
    let record = handle(
        &reg,
        &policies(Mode::Promote, false, true),
        &job(linux.index.digest(), "v1"),
    )
    .await;
    let json: serde_json::Value = serde_json::from_str(&record.to_json()).unwrap();
    assert_eq!(
        json["deployability"],
        json!([{"tag": "v1", "digest": linux.image.digest().to_string(),
                "platform": {"os": "linux", "architecture": "arm64"}, "verdict": "yes"}])
    );

    // A Windows image: promoted anyway (the default), the record and a note warn.
    let windows = push_for(&reg, "win", "w1", ("windows", "amd64"));
    let record = handle(
        &reg,
        &policies(Mode::Promote, false, true),
        &job(windows.index.digest(), "w1"),
    )
    .await;
    assert_eq!(target(&reg, "w1").as_ref(), Some(windows.image.digest()));
    assert!(record.deployability[0].verdict.is_no());
    assert!(
        record.notes.iter().any(|n| n.contains("Lambda would refuse w1")),
        "{:?}",
        record.notes
    );
    let metrics = ecr_remediator::service::metrics::emf(&record, &Default::default(), 0).unwrap();
    assert_eq!(metrics["LambdaWouldRefuse"], 1);

    // The policy keeps tag mode for an image Lambda would refuse.
    let mut vars = BTreeMap::new();
    vars.insert("ECR_REMEDIATOR_MODE".to_owned(), "promote".to_owned());
    vars.insert(
        "ECR_REMEDIATOR_PROMOTE_WHEN_LAMBDA_REFUSES".to_owned(),
        "false".to_owned(),
    );
    let strict = PolicySet::from_env_vars(&vars).unwrap();
    let other = push_for(&reg, "win2", "w2", ("windows", "amd64"));
    let record = handle(&reg, &strict, &job(other.index.digest(), "w2")).await;
    assert_eq!(
        target(&reg, "w2").as_ref(),
        Some(other.index.digest()),
        "the tag stays on the index"
    );
    assert_eq!(target(&reg, "w2-windows-amd64").as_ref(), Some(other.image.digest()));
    assert_eq!(record.policy.as_ref().unwrap().mode, Mode::Tag);
    assert!(
        record
            .notes
            .iter()
            .any(|n| n.contains("promote_when_lambda_refuses is off")),
        "{:?}",
        record.notes
    );
    assert_eq!(record.deployability[0].tag, tag("w2-windows-amd64"));
    assert!(record.deployability[0].verdict.is_no());
    // The same policy promotes what Lambda takes.
    let fine = push_for(&reg, "lx2", "v2", ("linux", "amd64"));
    handle(&reg, &strict, &job(fine.index.digest(), "v2")).await;
    assert_eq!(target(&reg, "v2").as_ref(), Some(fine.image.digest()));
}

/// Issue 33: one deletion gate on every path. Over generated registries,
/// workloads, signatures (present before the run, or pushed while the
/// workload scan runs), pull times, user tags and indexes tagged like keep
/// tags: no path (push, cleanup sweep, retirement) deletes a manifest any
/// evidence keeps, and the dry run plans exactly the real run's deletions.
mod one_gate_on_every_path {
    use proptest::prelude::*;

    use super::*;
    use ecr_remediator::Purpose;
    use ecr_remediator::decide::usage::{InUse, Workload, WorkloadKind};

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Path {
        Push,
        Cleanup,
        Retire,
        /// Retirement of a user's own index whose tag looks like a keep tag.
        RetireForeign,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Signed {
        No,
        Before,
        DuringScan,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Pull {
        Never,
        Recent,
        LongAgo,
    }

    #[derive(Debug, Clone)]
    struct Case {
        path: Path,
        signed: Signed,
        index_in_use: bool,
        attestation_in_use: bool,
        index_pulled: Pull,
        attestation_pulled: Pull,
        attestation_tagged: bool,
    }

    fn pull() -> impl Strategy<Value = Pull> {
        prop_oneof![3 => Just(Pull::Never), 1 => Just(Pull::Recent), 1 => Just(Pull::LongAgo)]
    }

    fn case() -> impl Strategy<Value = Case> {
        (
            prop_oneof![
                Just(Path::Push),
                Just(Path::Cleanup),
                Just(Path::Retire),
                Just(Path::RetireForeign)
            ],
            prop_oneof![3 => Just(Signed::No), 1 => Just(Signed::Before), 1 => Just(Signed::DuringScan)],
            prop::bool::weighted(0.2),
            prop::bool::weighted(0.2),
            pull(),
            pull(),
            prop::bool::weighted(0.2),
        )
            .prop_map(
                |(
                    path,
                    signed,
                    index_in_use,
                    attestation_in_use,
                    index_pulled,
                    attestation_pulled,
                    attestation_tagged,
                )| {
                    Case {
                        path,
                        signed,
                        index_in_use,
                        attestation_in_use,
                        index_pulled,
                        attestation_pulled,
                        attestation_tagged,
                    }
                },
            )
    }

    /// A Notation signature of `subject` (an OCI referrer).
    fn notation(subject: &RawManifest, salt: &str) -> RawManifest {
        raw(&json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/vnd.cncf.notary.signature",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                       "digest": Digest::sha256_of(b"{}").to_string(), "size": 2},
            "layers": [{"mediaType": "application/jose+json",
                        "digest": Digest::sha256_of(format!("sig-{salt}").as_bytes()).to_string(), "size": 10}],
            "subject": {"mediaType": subject.media_type().as_str(), "digest": subject.digest().to_string(),
                        "size": subject.bytes().len()}
        }))
    }

    fn set(keep: bool, delete: bool, dry_run: bool) -> PolicySet {
        let mut vars = BTreeMap::new();
        vars.insert("ECR_REMEDIATOR_MODE".to_owned(), "promote".to_owned());
        vars.insert("ECR_REMEDIATOR_DELETE_ORPHANS".to_owned(), delete.to_string());
        vars.insert("ECR_REMEDIATOR_GRACE_PERIOD".to_owned(), "0s".to_owned());
        vars.insert("ECR_REMEDIATOR_DRY_RUN".to_owned(), dry_run.to_string());
        if !keep {
            vars.insert("ECR_REMEDIATOR_KEEP_TAG".to_owned(), "false".to_owned());
        }
        PolicySet::from_env_vars(&vars).unwrap()
    }

    fn sweep_job(purpose: Purpose, digest: &Digest) -> Job {
        Job {
            purpose,
            tag: None,
            ..cleanup_job(digest, 0)
        }
    }

    fn run_case(c: &Case) -> Result<(), TestCaseError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let reg = registry(false);
            let pushed_tag = if c.path == Path::RetireForeign {
                "search-index"
            } else {
                "v1"
            };
            let p = push_buildx(&reg, "a", pushed_tag, &[]);
            // What each path finds: a fresh push; a leftover of a promotion
            // that deleted nothing; an index kept under v1-index; a user's
            // own index tagged search-index.
            let job = match c.path {
                Path::Push => job(p.index.digest(), "v1"),
                Path::Cleanup => {
                    handle(&reg, &set(false, false, false), &job(p.index.digest(), "v1")).await;
                    sweep_job(Purpose::Cleanup { min_age_s: 0 }, p.index.digest())
                }
                Path::Retire => {
                    handle(&reg, &set(true, false, false), &job(p.index.digest(), "v1")).await;
                    sweep_job(Purpose::Retire { min_age_s: 0 }, p.index.digest())
                }
                Path::RetireForeign => sweep_job(Purpose::Retire { min_age_s: 0 }, p.index.digest()),
            };
            let now = ecr_remediator::now_ms();
            let mut scan = InUse::new(now);
            for (used, m) in [(c.index_in_use, &p.index), (c.attestation_in_use, &p.attestation)] {
                if used {
                    scan.add(
                        m.digest().clone(),
                        Workload {
                            kind: WorkloadKind::EcsTaskDefinition,
                            name: "arn:aws:ecs:us-east-1:123456789012:task-definition/nightly:3".to_owned(),
                        },
                    );
                }
            }
            reg.set_in_use(Ok(scan));
            for (pulled, m) in [(c.index_pulled, &p.index), (c.attestation_pulled, &p.attestation)] {
                match pulled {
                    Pull::Never => {}
                    Pull::Recent => reg.record_pull(&repo(), m.digest(), now - 3_600_000),
                    Pull::LongAgo => reg.record_pull(&repo(), m.digest(), now - 400 * 86_400_000),
                }
            }
            if c.attestation_tagged {
                store_tag(&reg, &p.attestation, "sbom-pinned");
            }
            let signature = notation(&p.index, "a");
            if c.signed == Signed::Before {
                reg.push(&repo(), &signature, None).unwrap();
            }

            let before = state(&reg);
            let dry = handle(&reg, &set(false, true, true), &job).await;
            let after_dry = state(&reg);
            prop_assert_eq!(&before.tags, &after_dry.tags, "the dry run wrote a tag: {:#?}", dry);
            prop_assert_eq!(
                before.images.keys().collect::<Vec<_>>(),
                after_dry.images.keys().collect::<Vec<_>>(),
                "the dry run stored or deleted a manifest: {:#?}",
                dry
            );
            if c.signed == Signed::DuringScan {
                let sig = signature.clone();
                reg.on_call(move |op, _, repos| {
                    if op == "ScanWorkloads" {
                        let r = repos.get_mut("team/app").unwrap();
                        let _ = store(r, &sig, None);
                    }
                });
            }
            let real = handle(&reg, &set(false, true, false), &job).await;
            let after = state(&reg);
            let gone = |m: &RawManifest| !after.images.contains_key(m.digest());

            // Nothing any evidence keeps is deleted.
            prop_assert!(!gone(&p.image), "the runnable image was deleted: {:#?}", real);
            let index_kept = c.signed != Signed::No
                || c.index_in_use
                || c.index_pulled == Pull::Recent
                || c.path == Path::RetireForeign;
            if index_kept {
                prop_assert!(!gone(&p.index), "{:?}: the index was deleted: {:#?}", c, real);
            }
            let attestation_kept =
                c.attestation_in_use || c.attestation_pulled == Pull::Recent || c.attestation_tagged || !gone(&p.index);
            if attestation_kept {
                prop_assert!(
                    !gone(&p.attestation),
                    "{:?}: the attestation was deleted: {:#?}",
                    c,
                    real
                );
            }
            // Where nothing keeps them, the path does its job.
            let free = !index_kept;
            if free {
                prop_assert!(gone(&p.index), "{:?}: nothing kept the index: {:#?}", c, real);
            }
            // The dry run planned what the real run deleted (but what was
            // signed in between).
            if c.signed != Signed::DuringScan {
                let mut planned: Vec<Digest> = dry
                    .actions
                    .iter()
                    .filter(|a| a.outcome == ActionOutcome::Planned && a.action.is_delete())
                    .map(|a| a.action.target().clone())
                    .collect();
                planned.sort();
                let mut applied = deleted(&real);
                applied.sort();
                prop_assert_eq!(planned, applied, "dry {:#?}\nreal {:#?}", dry, real);
            }
            Ok(())
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
        #[test]
        fn no_path_deletes_what_evidence_keeps_and_the_dry_run_plans_the_same(c in case()) {
            run_case(&c)?;
        }
    }
}
