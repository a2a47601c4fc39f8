//! The live path against the ECR emulator: real AWS SDK clients over HTTP,
//! images pushed by the pusher the way `docker push` stores them, events as
//! ECR sends them, audit records read back from EventBridge through SQS.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::harness;

use ecr_remediator::engine::audit::OutcomeKind;
use ecr_remediator::service::handler::{Delivery, EventResult};
use harness::*;
use serde_json::Value;

type H = ecr_remediator::Handler<ecr_remediator::aws::ecr::EcrRegistry, ecr_remediator::aws::audit::EventBridgeAudit>;

async fn fresh(prefix: &str, immutable: bool) -> (String, AuditQueue) {
    let repo = unique(prefix);
    create_repository(&repo, immutable);
    let audit = AuditQueue::new(&repo).await;
    (repo, audit)
}

async fn handle_push(h: &H, repo: &str, pushed: &Pushed, tag: &str) -> EventResult {
    h.handle_text(&push_event(repo, &pushed.index, tag, OCI_INDEX), Delivery::default())
        .await
        .unwrap()
}

fn actions(record: &Value) -> Vec<(String, String)> {
    record["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["action"].as_str().unwrap().to_owned(),
                a["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The one final record of a handling; a handling that deletes also wrote
/// an `in_progress` checkpoint listing its deletions first.
async fn one_record(audit: &AuditQueue) -> Value {
    let records = audit.records().await;
    let (checkpoints, finals): (Vec<Value>, Vec<Value>) =
        records.into_iter().partition(|r| r["outcome"] == "in_progress");
    assert_eq!(finals.len(), 1, "{finals:#?}");
    let record = finals.into_iter().next().unwrap();
    assert_eq!(record["final"], true, "{record}");
    let deletes = record["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "delete" && a["outcome"] == "applied")
        .count();
    if deletes > 0 {
        assert_eq!(checkpoints.len(), 1, "deletions without a checkpoint: {record}");
        assert_eq!(checkpoints[0]["final"], false);
        let pending = checkpoints[0]["actions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["outcome"] == "pending")
            .count();
        assert!(pending >= deletes, "{:#?}", checkpoints[0]);
    }
    record
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_case_promote_puts_v7_on_the_image_and_keeps_provenance_under_v7_index() {
    let (repo, audit) = fresh("seed", false).await;
    let pushed = push_buildx(&repo, "v7", &["linux/arm64"], "seed");
    let h = handler(&[("ECR_REMEDIATOR_MODE", "promote")]).await;
    let result = handle_push(&h, &repo, &pushed, "v7").await;
    assert!(
        matches!(
            result,
            EventResult::Handled {
                outcome: OutcomeKind::Remediated,
                ..
            }
        ),
        "{result:?}"
    );

    let t = tags(&repo).await;
    assert_eq!(t["v7"], pushed.runnable());
    assert_eq!(t["v7-index"], pushed.index);
    let images = list(&repo).await;
    let v7 = images.iter().find(|i| i.digest == pushed.runnable()).unwrap();
    assert_eq!(
        v7.media_type, OCI_MANIFEST,
        "v7 is a single image manifest, as Lambda needs"
    );
    assert_eq!(
        untagged(&repo).await,
        vec![pushed.attestation().to_owned()],
        "provenance kept"
    );

    let record = one_record(&audit).await;
    assert_eq!(record["schema"], "ecr-remediator/audit-record");
    assert_eq!(record["schema_version"], 1);
    assert_eq!(record["outcome"], "remediated");
    assert_eq!(record["trigger"], "push");
    assert_eq!(record["repository"], repo.as_str());
    assert_eq!(record["index_digest"], pushed.index.as_str());
    assert_eq!(record["policy"]["mode"], "promote");
    assert_eq!(record["classification"]["runnable"][0]["platform"], "linux/arm64");
    assert_eq!(
        record["classification"]["attestations"][0]["subject"],
        pushed.runnable()
    );
    assert_eq!(
        record["classification"]["attestations"][0]["predicate_types"][0],
        "https://slsa.dev/provenance/v0.2"
    );
    assert_eq!(
        actions(&record),
        vec![
            ("add_tag".into(), "applied".into()),
            ("move_tag".into(), "applied".into())
        ]
    );
    assert!(record["event_id"].as_str().unwrap().starts_with("evt-"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_with_delete_on_and_keep_off_leaves_no_untagged_attestation() {
    let (repo, audit) = fresh("seed-delete", false).await;
    let pushed = push_buildx(&repo, "v7", &["linux/arm64"], "seed-delete");
    let h = handler(&[
        ("ECR_REMEDIATOR_MODE", "promote"),
        ("ECR_REMEDIATOR_DELETE_ORPHANS", "true"),
        ("ECR_REMEDIATOR_GRACE_PERIOD", "0s"),
        ("ECR_REMEDIATOR_KEEP_TAG", "false"),
    ])
    .await;
    handle_push(&h, &repo, &pushed, "v7").await;
    let images = list(&repo).await;
    assert_eq!(images.len(), 1, "{images:?}");
    assert_eq!(images[0].digest, pushed.runnable());
    assert_eq!(images[0].tags, vec!["v7".to_owned()]);
    let record = one_record(&audit).await;
    assert_eq!(
        actions(&record),
        vec![
            ("move_tag".into(), "applied".into()),
            ("delete".into(), "applied".into()),
            ("delete".into(), "applied".into())
        ]
    );
}

/// Expected state after handling a single-platform buildx push of `v7`.
#[derive(Debug)]
struct Expect {
    v7_on: &'static str,
    extra_tags: &'static [(&'static str, &'static str)],
    images: usize,
    outcome: &'static str,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mode_with_delete_off_and_on() {
    // keep tag on (the default): the replaced index stays tagged, so nothing is orphaned.
    let cases: [(&str, bool, Expect); 8] = [
        (
            "observe",
            false,
            Expect {
                v7_on: "index",
                extra_tags: &[],
                images: 3,
                outcome: "noop",
            },
        ),
        (
            "observe",
            true,
            Expect {
                v7_on: "index",
                extra_tags: &[],
                images: 3,
                outcome: "noop",
            },
        ),
        (
            "tag",
            false,
            Expect {
                v7_on: "index",
                extra_tags: &[("v7-linux-arm64", "runnable")],
                images: 3,
                outcome: "remediated",
            },
        ),
        (
            "tag",
            true,
            Expect {
                v7_on: "index",
                extra_tags: &[("v7-linux-arm64", "runnable")],
                images: 3,
                outcome: "remediated",
            },
        ),
        (
            "promote",
            false,
            Expect {
                v7_on: "runnable",
                extra_tags: &[("v7-index", "index")],
                images: 3,
                outcome: "remediated",
            },
        ),
        (
            "promote",
            true,
            Expect {
                v7_on: "runnable",
                extra_tags: &[("v7-index", "index")],
                images: 3,
                outcome: "remediated",
            },
        ),
        (
            "strip",
            false,
            Expect {
                v7_on: "new",
                extra_tags: &[("v7-index", "index")],
                images: 4,
                outcome: "remediated",
            },
        ),
        (
            "strip",
            true,
            Expect {
                v7_on: "new",
                extra_tags: &[("v7-index", "index")],
                images: 4,
                outcome: "remediated",
            },
        ),
    ];
    for (mode, delete, expect) in cases {
        let (repo, audit) = fresh(&format!("{mode}-{delete}"), false).await;
        let pushed = push_buildx(&repo, "v7", &["linux/arm64"], &format!("{mode}-{delete}"));
        let h = handler(&[
            ("ECR_REMEDIATOR_MODE", mode),
            ("ECR_REMEDIATOR_DELETE_ORPHANS", if delete { "true" } else { "false" }),
            ("ECR_REMEDIATOR_GRACE_PERIOD", "0s"),
        ])
        .await;
        handle_push(&h, &repo, &pushed, "v7").await;
        let resolve = |which: &str| match which {
            "index" => pushed.index.clone(),
            "runnable" => pushed.runnable().to_owned(),
            other => other.to_owned(),
        };
        let t = tags(&repo).await;
        let images = list(&repo).await;
        let context = format!("{mode} delete={delete}: {t:?}");
        if expect.v7_on == "new" {
            let new = images.iter().find(|i| i.digest == t["v7"]).unwrap();
            assert_ne!(t["v7"], pushed.index, "{context}");
            assert_eq!(new.media_type, OCI_INDEX, "{context}");
        } else {
            assert_eq!(t["v7"], resolve(expect.v7_on), "{context}");
        }
        for (tag, which) in expect.extra_tags {
            assert_eq!(t[*tag], resolve(which), "{context}");
        }
        assert_eq!(t.len(), 1 + expect.extra_tags.len(), "{context}");
        assert_eq!(images.len(), expect.images, "{context}");
        assert!(
            images.iter().any(|i| i.digest == pushed.attestation()),
            "{context}: attestation kept"
        );
        let record = one_record(&audit).await;
        assert_eq!(record["outcome"], expect.outcome, "{context}");
        assert_eq!(record["policy"]["delete_orphans"], delete, "{context}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strip_without_keep_tag_deletes_the_old_index_and_its_attestation() {
    let (repo, audit) = fresh("strip-delete", false).await;
    let pushed = push_buildx(&repo, "v7", &["linux/arm64"], "strip-delete");
    let h = handler(&[
        ("ECR_REMEDIATOR_MODE", "strip"),
        ("ECR_REMEDIATOR_DELETE_ORPHANS", "true"),
        ("ECR_REMEDIATOR_GRACE_PERIOD", "0s"),
        ("ECR_REMEDIATOR_KEEP_TAG", "false"),
    ])
    .await;
    handle_push(&h, &repo, &pushed, "v7").await;
    let images = list(&repo).await;
    let digests: Vec<&str> = images.iter().map(|i| i.digest.as_str()).collect();
    assert_eq!(images.len(), 2, "{images:?}");
    assert!(digests.contains(&pushed.runnable()));
    assert!(!digests.contains(&pushed.index.as_str()));
    assert!(!digests.contains(&pushed.attestation()));
    assert_eq!(one_record(&audit).await["outcome"], "remediated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_platform_index_gets_a_tag_per_platform_and_promotes_only_when_told_which() {
    let (repo, audit) = fresh("multi", false).await;
    let pushed = push_buildx(&repo, "v1", &["linux/amd64", "linux/arm64"], "multi");
    let amd64 = pushed.children[0].clone();
    let arm64 = pushed.children[1].clone();

    let promote = handler(&[("ECR_REMEDIATOR_MODE", "promote")]).await;
    handle_push(&promote, &repo, &pushed, "v1").await;
    let t = tags(&repo).await;
    assert_eq!(t["v1"], pushed.index, "two platforms and no promote_platform: v1 stays");
    assert_eq!(t["v1-linux-amd64"], amd64);
    assert_eq!(t["v1-linux-arm64"], arm64);
    let record = one_record(&audit).await;
    assert_eq!(record["policy"]["mode"], "tag");
    assert_eq!(record["policy"]["requested_mode"], "promote");
    assert!(
        record["notes"][0].as_str().unwrap().contains("fell back to tag mode"),
        "{record}"
    );

    let pushed2 = push_buildx(&repo, "v2", &["linux/amd64", "linux/arm64"], "multi2");
    let chosen = handler(&[
        ("ECR_REMEDIATOR_MODE", "promote"),
        ("ECR_REMEDIATOR_PROMOTE_PLATFORM", "linux/amd64"),
    ])
    .await;
    handle_push(&chosen, &repo, &pushed2, "v2").await;
    let t = tags(&repo).await;
    assert_eq!(t["v2"], pushed2.children[0]);
    assert_eq!(t["v2-index"], pushed2.index);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immutable_repository_falls_back_to_the_derived_tag_and_says_so() {
    let (repo, audit) = fresh("immutable", true).await;
    let pushed = push_buildx(&repo, "v7", &["linux/arm64"], "immutable");
    let h = handler(&[
        ("ECR_REMEDIATOR_MODE", "promote"),
        ("ECR_REMEDIATOR_DELETE_ORPHANS", "true"),
        ("ECR_REMEDIATOR_GRACE_PERIOD", "0s"),
    ])
    .await;
    handle_push(&h, &repo, &pushed, "v7").await;
    let t = tags(&repo).await;
    assert_eq!(t["v7"], pushed.index, "an immutable tag is never moved");
    assert_eq!(t["v7-linux-arm64"], pushed.runnable());
    assert_eq!(list(&repo).await.len(), 3, "nothing deleted");
    let record = one_record(&audit).await;
    let acts = record["actions"].as_array().unwrap();
    let moved = acts.iter().find(|a| a["action"] == "move_tag").unwrap();
    assert_eq!(moved["outcome"], "skipped");
    assert!(moved["reason"].as_str().unwrap().contains("immutable"), "{moved}");
    let fallback = acts.iter().find(|a| a["tag"] == "v7-linux-arm64").unwrap();
    assert_eq!(fallback["outcome"], "applied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_moved_by_a_newer_push_is_not_clobbered() {
    let (repo, audit) = fresh("superseded", false).await;
    let old = push_buildx(&repo, "v7", &["linux/arm64"], "old");
    let new = push_buildx(&repo, "v7", &["linux/arm64"], "new");
    let emu = emulator();
    emu.clear_calls(&repo);
    let h = handler(&[
        ("ECR_REMEDIATOR_MODE", "promote"),
        ("ECR_REMEDIATOR_DELETE_ORPHANS", "true"),
        ("ECR_REMEDIATOR_GRACE_PERIOD", "0s"),
    ])
    .await;
    handle_push(&h, &repo, &old, "v7").await;
    assert_eq!(tags(&repo).await["v7"], new.index);
    let calls = emu.calls(&repo);
    assert!(
        !calls.contains_key("ecr:PutImage") && !calls.contains_key("ecr:BatchDeleteImage"),
        "{calls:?}"
    );
    let record = one_record(&audit).await;
    assert_eq!(record["outcome"], "skipped");
    assert_eq!(record["code"], "superseded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_event_twice_writes_once() {
    let (repo, audit) = fresh("twice", false).await;
    let pushed = push_buildx(&repo, "v7", &["linux/arm64"], "twice");
    let h = handler(&[("ECR_REMEDIATOR_MODE", "promote")]).await;
    let event = push_event(&repo, &pushed.index, "v7", OCI_INDEX);
    h.handle_text(&event, Delivery::default()).await.unwrap();
    let emu = emulator();
    emu.clear_calls(&repo);
    let second = h.handle_text(&event, Delivery::default()).await.unwrap();
    assert!(
        matches!(
            second,
            EventResult::Handled {
                outcome: OutcomeKind::Noop,
                ..
            }
        ),
        "{second:?}"
    );
    let calls = emu.calls(&repo);
    assert!(!calls.contains_key("ecr:PutImage"), "{calls:?}");
    let records = audit.finals().await;
    assert_eq!(records.len(), 2);
    assert_eq!(records[1]["outcome"], "noop");
    // What the first handling wrote is found in place, and said so.
    let found = records[1]["actions"].as_array().unwrap();
    assert!(
        !found.is_empty() && found.iter().all(|a| a["outcome"] == "already"),
        "{found:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_pushes_own_retags_and_deletes_cost_no_ecr_call() {
    let (repo, audit) = fresh("ignored", false).await;
    let pushed = push_buildx(&repo, "v7", &["linux/arm64"], "ignored");
    let emu = emulator();
    emu.clear_calls(&repo);
    let h = handler(&[("ECR_REMEDIATOR_MODE", "promote")]).await;
    let mut delete = serde_json::from_str::<Value>(&push_event(&repo, &pushed.index, "v7", OCI_INDEX)).unwrap();
    delete["detail"]["action-type"] = "DELETE".into();
    let mut failed = serde_json::from_str::<Value>(&push_event(&repo, &pushed.index, "v7", OCI_INDEX)).unwrap();
    failed["detail"]["result"] = "FAILURE".into();
    let mut scan = serde_json::from_str::<Value>(&push_event(&repo, &pushed.index, "v7", OCI_INDEX)).unwrap();
    scan["detail-type"] = "ECR Image Scan".into();
    let events = [
        push_event(&repo, pushed.runnable(), "", OCI_MANIFEST),
        push_event(&repo, pushed.attestation(), "", OCI_MANIFEST),
        push_event(&repo, pushed.runnable(), "v7", OCI_MANIFEST),
        push_event(&repo, &pushed.index, "v7-index", OCI_INDEX),
        delete.to_string(),
        failed.to_string(),
        scan.to_string(),
    ];
    for e in &events {
        let r = h.handle_text(e, Delivery::default()).await.unwrap();
        assert!(matches!(r, EventResult::Ignored { .. }), "{e}: {r:?}");
    }
    assert_eq!(emu.calls(&repo), Default::default());
    assert!(audit.records().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_deleted_before_handling_is_skipped() {
    let (repo, audit) = fresh("gone", false).await;
    let pushed = push_buildx(&repo, "v7", &["linux/arm64"], "gone");
    let ecr = aws_sdk_ecr::Client::new(&sdk_config().await);
    ecr.batch_delete_image()
        .repository_name(&repo)
        .image_ids(
            aws_sdk_ecr::types::ImageIdentifier::builder()
                .image_digest(&pushed.index)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let h = handler(&[
        ("ECR_REMEDIATOR_MODE", "promote"),
        ("ECR_REMEDIATOR_DELETE_ORPHANS", "true"),
        ("ECR_REMEDIATOR_GRACE_PERIOD", "0s"),
    ])
    .await;
    handle_push(&h, &repo, &pushed, "v7").await;
    let record = one_record(&audit).await;
    assert_eq!(record["outcome"], "skipped");
    assert_eq!(record["code"], "index_gone");
    assert_eq!(list(&repo).await.len(), 2, "nothing else touched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_events_are_recorded_not_retried_and_touch_nothing() {
    let h = handler(&[("ECR_REMEDIATOR_MODE", "promote")]).await;
    for bad in [
        "{not json".to_owned(),
        serde_json::json!({"source": "aws.ecr", "detail-type": "ECR Image Action", "detail": {"action-type": "PUSH"}})
            .to_string(),
        push_event("live/x", "sha256:1234", "v7", OCI_INDEX),
    ] {
        let r = h.handle_text(&bad, Delivery::default()).await.unwrap();
        assert!(
            matches!(
                r,
                EventResult::Handled {
                    outcome: OutcomeKind::Skipped,
                    ..
                }
            ),
            "{bad}: {r:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_puts_and_failing_reads_are_retried_and_end_right() {
    let (repo, audit) = fresh("faults", false).await;
    let pushed = push_buildx(&repo, "v7", &["linux/arm64"], "faults");
    let emu = emulator();
    emu.fault(&repo, "PutImage", &["ThrottlingException", "ThrottlingException"]);
    emu.fault(&repo, "BatchGetImage", &["ServerException", "ServerException"]);
    let h = handler(&[("ECR_REMEDIATOR_MODE", "promote")]).await;
    let r = handle_push(&h, &repo, &pushed, "v7").await;
    assert!(
        matches!(
            r,
            EventResult::Handled {
                outcome: OutcomeKind::Remediated,
                ..
            }
        ),
        "{r:?}"
    );
    assert_eq!(tags(&repo).await["v7"], pushed.runnable());
    let injected = emu.injected();
    assert_eq!(injected[format!("PutImage@{repo}")]["ThrottlingException"], 2);
    assert_eq!(injected[format!("BatchGetImage@{repo}")]["ServerException"], 2);
    assert_eq!(one_record(&audit).await["outcome"], "remediated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_retries_run_out_the_event_fails_and_its_redelivery_finishes_the_job() {
    let (repo, audit) = fresh("exhausted", false).await;
    let pushed = push_buildx(&repo, "v7", &["linux/arm64"], "exhausted");
    let emu = emulator();
    emu.fault(&repo, "PutImage", &["ServerException"; 8]);
    let h = handler(&[("ECR_REMEDIATOR_MODE", "promote")]).await;
    let event = push_event(&repo, &pushed.index, "v7", OCI_INDEX);
    let err = h.handle_text(&event, Delivery::default()).await.unwrap_err();
    assert!(err.to_string().contains("retried"), "{err}");
    let failed = audit.finals().await;
    assert_eq!(failed[0]["outcome"], "failed");
    assert_eq!(failed[0]["retryable"], true);
    assert_eq!(tags(&repo).await["v7"], pushed.index, "nothing half-done to v7");
    // The queue delivers the event again once the registry recovers.
    emu.fault(&repo, "PutImage", &[]);
    let again = h.handle_text(&event, Delivery::default()).await.unwrap();
    assert!(
        matches!(
            again,
            EventResult::Handled {
                outcome: OutcomeKind::Remediated,
                ..
            }
        ),
        "{again:?}"
    );
    assert_eq!(tags(&repo).await["v7"], pushed.runnable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_record_that_cannot_be_written_fails_the_event() {
    let (repo, _audit) = fresh("no-bus", false).await;
    let pushed = push_buildx(&repo, "v7", &["linux/arm64"], "no-bus");
    let h = handler(&[("ECR_REMEDIATOR_MODE", "tag")]).await;
    let h = ecr_remediator::Handler {
        audit: ecr_remediator::aws::audit::EventBridgeAudit::new(
            aws_sdk_eventbridge::Client::new(&sdk_config().await),
            "no-such-bus",
        ),
        ..h
    };
    let err = h
        .handle_text(&push_event(&repo, &pushed.index, "v7", OCI_INDEX), Delivery::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no-such-bus"), "{err}");
    // Nothing is written before its checkpoint is in the trail.
    let t = tags(&repo).await;
    assert!(!t.contains_key("v7-linux-arm64"), "{t:?}");
    assert_eq!(t["v7"], pushed.index);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sqs_batch_reports_only_the_failed_messages() {
    let (ok_repo, _a) = fresh("batch-ok", false).await;
    let (bad_repo, _b) = fresh("batch-bad", false).await;
    let ok = push_buildx(&ok_repo, "v1", &["linux/arm64"], "batch-ok");
    let bad = push_buildx(&bad_repo, "v1", &["linux/arm64"], "batch-bad");
    emulator().fault(&bad_repo, "BatchGetImage", &["ServerException"; 8]);
    let h = handler(&[("ECR_REMEDIATOR_MODE", "promote")]).await;
    let batch = serde_json::json!({"Records": [
        {"messageId": "m-ok", "eventSource": "aws:sqs", "body": push_event(&ok_repo, &ok.index, "v1", OCI_INDEX)},
        {"messageId": "m-bad", "eventSource": "aws:sqs", "body": push_event(&bad_repo, &bad.index, "v1", OCI_INDEX)},
        {"messageId": "m-child", "eventSource": "aws:sqs", "body": push_event(&ok_repo, ok.runnable(), "", OCI_MANIFEST)},
    ]});
    let response = h.handle_lambda(batch.clone(), None, Some("req-batch")).await.unwrap();
    assert_eq!(
        response,
        serde_json::json!({"batchItemFailures": [{"itemIdentifier": "m-bad"}]})
    );
    assert_eq!(tags(&ok_repo).await["v1"], ok.runnable());
}

/// Issue 36, item 2: input near SQS's size limit makes a record that fits
/// one EventBridge entry, written once; the handling is not retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_input_is_recorded_once_within_the_entry_limit() {
    let (repo, audit) = fresh("oversized", false).await;
    let h = handler(&[("ECR_REMEDIATOR_MODE", "promote")]).await;
    let gone = format!("sha256:{}", "0".repeat(64));
    let request = serde_json::json!({
        "ecr-remediator": "remediate", "id": "i".repeat(261_800), "repository": repo,
        "digest": gone, "tag": "v1",
    })
    .to_string();
    let result = h.handle_text(&request, Delivery::default()).await;
    assert!(result.is_ok(), "not retried: {result:?}");
    let records = audit.records().await;
    assert_eq!(records.len(), 1, "{records:#?}");
    let written = serde_json::to_string(&records[0]).unwrap();
    assert!(
        written.len() <= ecr_remediator::engine::audit::MAX_DETAIL_BYTES,
        "{}",
        written.len()
    );
    assert_eq!(records[0]["fields_cut"], 1, "{}", &written[..400]);
    assert_eq!(records[0]["code"], "index_gone");
}

/// A push whose repository was deleted before it was handled (a selftest's
/// clean-up, a team removing a repository): nothing to do, nothing failed,
/// so no failure alarm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_into_a_repository_deleted_since_is_skipped_not_failed() {
    let (repo, audit) = fresh("deleted-since", false).await;
    let pushed = push_buildx(&repo, "v1", &["linux/arm64"], "deleted-since");
    aws_sdk_ecr::Client::new(&sdk_config().await)
        .delete_repository()
        .repository_name(&repo)
        .force(true)
        .send()
        .await
        .unwrap();
    let h = handler(&[("ECR_REMEDIATOR_MODE", "promote")]).await;
    let result = handle_push(&h, &repo, &pushed, "v1").await;
    assert!(format!("{result:?}").contains("Skipped"), "{result:?}");
    let records = audit.records().await;
    assert_eq!(records.len(), 1, "{records:#?}");
    assert_eq!(records[0]["outcome"], "skipped", "{:#}", records[0]);
    assert_eq!(records[0]["code"], "index_gone");
    assert!(
        records[0]["reason"]
            .as_str()
            .unwrap()
            .contains("the repository no longer exists")
    );
}
