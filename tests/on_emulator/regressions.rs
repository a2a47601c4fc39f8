//! Regressions of the adversarial findings of issue 9, each reproduced on
//! the ECR emulator with the real AWS SDK: long tags and the keep-tag gate,
//! concurrent handlings of pushes of one tag, tags the service could not
//! have written, foreign 200-character tags, failures labelled with their
//! real operation, strip next to SOCI/signature/nested entries.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::harness;

use std::sync::Arc;

use ecr_remediator::service::handler::{Delivery, EventResult};
use ecr_remediator::vocabulary::Vocabulary;
use harness::*;
use serde_json::{Value, json};

async fn fresh(prefix: &str) -> (String, AuditQueue) {
    let repo = unique(prefix);
    create_repository(&repo, false);
    let audit = AuditQueue::new(&repo).await;
    (repo, audit)
}

/// Promote, delete orphans, no keep tag: the policy that deletes.
const DELETE_MODE: [(&str, &str); 4] = [
    ("ECR_REMEDIATOR_MODE", "promote"),
    ("ECR_REMEDIATOR_DELETE_ORPHANS", "true"),
    ("ECR_REMEDIATOR_GRACE_PERIOD", "0s"),
    ("ECR_REMEDIATOR_KEEP_TAG", "false"),
];

/// Handles the push event of `pushed` as `v7`.
async fn handle_v7(
    h: &ecr_remediator::Handler<ecr_remediator::aws::ecr::EcrRegistry, ecr_remediator::aws::audit::EventBridgeAudit>,
    repo: &str,
    pushed: &Pushed,
) -> EventResult {
    h.handle_text(&push_event(repo, &pushed.index, "v7", OCI_INDEX), Delivery::default())
        .await
        .unwrap()
}

async fn final_records(audit: &AuditQueue) -> Vec<Value> {
    audit
        .records()
        .await
        .into_iter()
        .filter(|r| r["outcome"] != "in_progress")
        .collect()
}

fn outcome(r: &EventResult) -> &str {
    match r {
        EventResult::Handled { outcome, .. } => outcome.as_str(),
        EventResult::Ignored { .. } => "ignored",
        other => panic!("not an image's result: {other:?}"),
    }
}

/// Adds `tag` to an existing image, byte for byte, as `aws ecr put-image` would.
fn retag(repository: &str, digest: &str, tag: &str) {
    let script = format!(
        "import boto3\n\
         ecr = boto3.client('ecr')\n\
         img = ecr.batch_get_image(repositoryName='{repository}', imageIds=[{{'imageDigest': '{digest}'}}],\n\
           acceptedMediaTypes=['application/vnd.oci.image.index.v1+json', 'application/vnd.oci.image.manifest.v1+json'])['images'][0]\n\
         ecr.put_image(repositoryName='{repository}', imageManifest=img['imageManifest'],\n\
           imageManifestMediaType=img['imageManifestMediaType'], imageTag='{tag}')\n"
    );
    python_script(&script);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_tag_too_long_to_write_keeps_the_pushed_tag_and_deletes_nothing() {
    let long = "t".repeat(123);
    for mode in ["promote", "strip"] {
        let (repo, audit) = fresh(&format!("long-keep-{mode}")).await;
        let pushed = push_buildx(&repo, &long, &["linux/arm64"], mode);
        let h = handler(&[
            ("ECR_REMEDIATOR_MODE", mode),
            ("ECR_REMEDIATOR_DELETE_ORPHANS", "true"),
            ("ECR_REMEDIATOR_GRACE_PERIOD", "0s"),
        ])
        .await;
        let r = h
            .handle_text(&push_event(&repo, &pushed.index, &long, OCI_INDEX), Delivery::default())
            .await
            .unwrap();
        assert_eq!(outcome(&r), "skipped", "{r:?}");
        assert_eq!(tags(&repo).await[&long], pushed.index, "{mode}: pushed tag not moved");
        assert_eq!(list(&repo).await.len(), 3, "{mode}: nothing deleted");
        let records = final_records(&audit).await;
        assert_eq!(records[0]["code"], "keep_tag_invalid", "{records:#?}");
        assert!(records[0]["reason"].as_str().unwrap().contains("128"), "{records:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pushes_of_one_tag_handled_at_the_same_time_end_on_the_newer_push() {
    for mode in ["promote", "strip"] {
        let (repo, audit) = fresh(&format!("race-{mode}")).await;
        let a = push_buildx(&repo, "v1", &["linux/arm64"], &format!("race-a-{mode}"));
        // Every read of this repository takes 700 ms: handling A reads v1 -> A,
        // then B is pushed while A is still planning.
        emulator().control(
            "POST",
            "faults",
            Some(json!({"operation": "BatchGetImage", "repository": repo, "latency_ms": 700})),
        );
        let h = Arc::new(
            handler(&[
                ("ECR_REMEDIATOR_MODE", mode),
                ("ECR_REMEDIATOR_DELETE_ORPHANS", "true"),
                ("ECR_REMEDIATOR_GRACE_PERIOD", "0s"),
            ])
            .await,
        );
        let event_a = push_event(&repo, &a.index, "v1", OCI_INDEX);
        let ha = Arc::clone(&h);
        let first = tokio::spawn(async move { ha.handle_text(&event_a, Delivery::default()).await });
        tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
        let b = push_buildx(&repo, "v1", &["linux/arm64"], &format!("race-b-{mode}"));
        let event_b = push_event(&repo, &b.index, "v1", OCI_INDEX);
        let hb = Arc::clone(&h);
        let second = tokio::spawn(async move { hb.handle_text(&event_b, Delivery::default()).await });
        let (ra, rb) = (first.await.unwrap().unwrap(), second.await.unwrap().unwrap());
        emulator().control(
            "POST",
            "faults",
            Some(json!({"operation": "BatchGetImage", "repository": repo})),
        );
        assert_eq!(outcome(&rb), "remediated", "{mode}: {rb:?}");
        assert_eq!(outcome(&ra), "skipped", "{mode}: {ra:?}");
        let t = tags(&repo).await;
        assert_eq!(
            t["v1-index"], b.index,
            "{mode}: the newer push's provenance is reachable"
        );
        match mode {
            "promote" => assert_eq!(t["v1"], b.runnable(), "never an older image than the newest push"),
            _ => {
                let images = list(&repo).await;
                let v1 = images.iter().find(|i| i.tags.contains(&"v1".to_owned())).unwrap();
                assert_ne!(v1.digest, a.index);
                assert_ne!(v1.digest, b.index, "v1 is B's stripped index");
            }
        }
        let records = final_records(&audit).await;
        assert_eq!(records.len(), 2, "{records:#?}");
        let of_a = records.iter().find(|r| r["index_digest"] == a.index.as_str()).unwrap();
        assert_eq!(of_a["code"], "superseded", "{of_a:#}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_derived_tag_on_a_users_index_is_never_taken() {
    let (repo, audit) = fresh("derived-taken").await;
    let users = push_buildx(&repo, "v1-linux-arm64", &["linux/arm64"], "users");
    let pushed = push_buildx(&repo, "v1", &["linux/arm64"], "ours");
    let h = handler(&[("ECR_REMEDIATOR_MODE", "tag")]).await;
    h.handle_text(&push_event(&repo, &pushed.index, "v1", OCI_INDEX), Delivery::default())
        .await
        .unwrap();
    assert_eq!(tags(&repo).await["v1-linux-arm64"], users.index);
    let records = final_records(&audit).await;
    let skipped = records[0]["skipped"].as_array().unwrap();
    let taken = skipped
        .iter()
        .find(|s| s["reason"] == "derived_tag_taken")
        .unwrap_or_else(|| panic!("{records:#?}"));
    assert_eq!(taken["holder"], users.index.as_str());
    assert_eq!(taken["tag"], "v1-linux-arm64");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_character_foreign_tag_does_not_break_delete_mode() {
    let (repo, audit) = fresh("long-foreign").await;
    let pushed = push_buildx(&repo, "v7", &["linux/arm64"], "long-foreign");
    let other = push_buildx(&repo, "other", &["linux/arm64"], "long-other");
    retag(&repo, &other.index, &"x".repeat(200));
    retag(&repo, &pushed.index, &"y".repeat(200));
    let h = handler(&DELETE_MODE).await;
    let r = handle_v7(&h, &repo, &pushed).await;
    assert_eq!(outcome(&r), "remediated", "{r:?}");
    let t = tags(&repo).await;
    assert_eq!(t["v7"], pushed.runnable());
    assert_eq!(
        t[&"y".repeat(200)],
        pushed.index,
        "the index keeps its other tag and is not deleted"
    );
    let records = final_records(&audit).await;
    let index_action = records[0]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["action"] == "delete" && a["digest"] == pushed.index.as_str())
        .unwrap();
    assert_eq!(index_action["outcome"], "skipped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_describe_images_is_retryable_and_named() {
    let (repo, audit) = fresh("describe-fails").await;
    let pushed = push_buildx(&repo, "v7", &["linux/arm64"], "describe-fails");
    emulator().fault(&repo, "DescribeImages", &["ServerException"; 8]);
    let h = handler(&DELETE_MODE).await;
    let event = push_event(&repo, &pushed.index, "v7", OCI_INDEX);
    let err = h.handle_text(&event, Delivery::default()).await.unwrap_err();
    assert!(err.to_string().contains("DescribeImages"), "{err}");
    let records = final_records(&audit).await;
    assert_eq!(records[0]["outcome"], "failed");
    assert_eq!(records[0]["retryable"], true);
    assert_eq!(records[0]["final"], false);
    emulator().fault(&repo, "DescribeImages", &[]);
    assert_eq!(list(&repo).await.len(), 3, "nothing deleted without the tag check");
    // Redelivered once the registry recovers: finished.
    let again = h.handle_text(&event, Delivery::default()).await.unwrap();
    assert_eq!(outcome(&again), "remediated", "{again:?}");
    assert_eq!(list(&repo).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strip_next_to_soci_signature_and_nested_entries_keeps_them() {
    let (repo, audit) = fresh("strip-extras").await;
    let pushed = push_buildx_with(
        &repo,
        "v7",
        &["linux/arm64"],
        "strip-extras",
        &["--extra", "soci", "--extra", "signature", "--extra", "nested"],
    );
    let h = handler(&[("ECR_REMEDIATOR_MODE", "strip")]).await;
    let r = handle_v7(&h, &repo, &pushed).await;
    assert_eq!(outcome(&r), "remediated", "{r:?}");
    let t = tags(&repo).await;
    assert_eq!(t["v7-index"], pushed.index);
    let stripped = get_manifest(&repo, &t["v7"]).await;
    let entries: Vec<&str> = stripped["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["digest"].as_str().unwrap())
        .collect();
    // Everything but the attestation, in order: image, SOCI, signature, nested index.
    let expected: Vec<&str> = pushed.children[..4].iter().map(String::as_str).collect();
    assert_eq!(entries, expected);
    assert_eq!(final_records(&audit).await[0]["outcome"], "remediated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attestation_held_by_an_archived_index_is_kept() {
    let (repo, audit) = fresh("archived").await;
    let pushed = push_buildx(&repo, "v7", &["linux/arm64"], "archived");
    // Another index (an older copy with an annotation) lists the same
    // attestation, then goes to the archive storage class: DescribeImages no
    // longer lists it, but it still holds its children.
    let script = format!(
        "import boto3, json\n\
         ecr = boto3.client('ecr')\n\
         img = ecr.batch_get_image(repositoryName='{repo}', imageIds=[{{'imageDigest': '{index}'}}],\n\
           acceptedMediaTypes=['application/vnd.oci.image.index.v1+json'])['images'][0]\n\
         doc = json.loads(img['imageManifest'])\n\
         doc['annotations'] = {{'copy': 'archived'}}\n\
         body = json.dumps(doc, separators=(',', ':'))\n\
         print(ecr.put_image(repositoryName='{repo}', imageManifest=body, imageManifestMediaType=doc['mediaType'])['image']['imageId']['imageDigest'])\n",
        index = pushed.index
    );
    let archived = python_script(&script).trim().to_owned();
    emulator().control(
        "POST",
        "status",
        Some(json!({"repository": repo, "digest": archived, "status": "ARCHIVED"})),
    );
    assert!(
        list(&repo).await.iter().all(|i| i.digest != archived),
        "not listed once archived"
    );
    let h = handler(&DELETE_MODE).await;
    let r = handle_v7(&h, &repo, &pushed).await;
    assert_eq!(outcome(&r), "remediated", "{r:?}");
    let remaining: Vec<String> = list(&repo).await.into_iter().map(|i| i.digest).collect();
    assert!(remaining.contains(&pushed.attestation().to_owned()), "{remaining:?}");
    assert!(!remaining.contains(&pushed.index), "{remaining:?}");
    let records = final_records(&audit).await;
    let att = records[0]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["digest"] == pushed.attestation())
        .unwrap();
    assert_eq!(att["outcome"], "skipped");
    assert!(att["reason"].as_str().unwrap().contains("still referenced"), "{att}");
}
