//! No applied action is ever missing from the audit trail, whatever fails
//! afterwards: deletions go out only after a checkpoint record listing them
//! reached the audit bus. Its own test binary: faults on `PutEvents` apply to
//! the whole emulator, so nothing else may run beside it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use ecr_remediator::service::handler::Delivery;
use harness::*;
use serde_json::{Value, json};

fn put_events_faults(sequence: &[&str]) {
    emulator().control(
        "POST",
        "faults",
        Some(json!({"operation": "PutEvents", "sequence": sequence})),
    );
}

fn deleted_in_trail(records: &[Value]) -> Vec<String> {
    let mut out: Vec<String> = records
        .iter()
        .flat_map(|r| r["actions"].as_array().cloned().unwrap_or_default())
        .filter(|a| a["action"] == "delete" && (a["outcome"] == "pending" || a["outcome"] == "applied"))
        .map(|a| a["digest"].as_str().unwrap().to_owned())
        .collect();
    out.sort();
    out.dedup();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletions_are_in_the_trail_even_when_the_final_record_is_lost() {
    let h = handler(&[
        ("ECR_REMEDIATOR_MODE", "promote"),
        ("ECR_REMEDIATOR_DELETE_ORPHANS", "true"),
        ("ECR_REMEDIATOR_GRACE_PERIOD", "0s"),
        ("ECR_REMEDIATOR_KEEP_TAG", "false"),
    ])
    .await;

    // 1. The final record cannot be written (every attempt fails) after the
    //    deletions: the checkpoint written before them holds them.
    let repo = unique("trail-final-lost");
    create_repository(&repo, false);
    let audit = AuditQueue::new(&repo).await;
    let pushed = push_buildx(&repo, "v7", &["linux/arm64"], "trail-1");
    put_events_faults(&["ok", "InternalError", "InternalError", "InternalError", "InternalError"]);
    let event = push_event(&repo, &pushed.index, "v7", OCI_INDEX);
    let err = h.handle_text(&event, Delivery::default()).await.unwrap_err();
    assert!(err.to_string().contains("retried"), "{err}");
    let remaining: Vec<String> = list(&repo).await.into_iter().map(|l| l.digest).collect();
    assert_eq!(remaining, vec![pushed.runnable().to_owned()], "the deletions happened");
    // The redelivery finds the index gone and says so.
    put_events_faults(&[]);
    h.handle_text(&event, Delivery::default()).await.unwrap();
    let trail = audit.records().await;
    let mut expected = vec![pushed.index.clone(), pushed.attestation().to_owned()];
    expected.sort();
    assert_eq!(deleted_in_trail(&trail), expected, "{trail:#?}");
    assert_eq!(trail[0]["outcome"], "in_progress");
    assert_eq!(trail.last().unwrap()["code"], "index_gone");

    // 2. The trail is down before the deletions: nothing is deleted, and the
    //    redelivery does it all, checkpoint first.
    let repo = unique("trail-down");
    create_repository(&repo, false);
    let audit = AuditQueue::new(&repo).await;
    let pushed = push_buildx(&repo, "v7", &["linux/arm64"], "trail-2");
    put_events_faults(&["InternalError"; 8]);
    let event = push_event(&repo, &pushed.index, "v7", OCI_INDEX);
    assert!(h.handle_text(&event, Delivery::default()).await.is_err());
    put_events_faults(&[]);
    assert_eq!(list(&repo).await.len(), 3, "nothing deleted while the trail is down");
    h.handle_text(&event, Delivery::default()).await.unwrap();
    assert_eq!(list(&repo).await.len(), 1);
    let trail = audit.records().await;
    let outcomes: Vec<&str> = trail.iter().map(|r| r["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, vec!["in_progress", "remediated"], "{trail:#?}");
    let mut expected = vec![pushed.index.clone(), pushed.attestation().to_owned()];
    expected.sort();
    assert_eq!(deleted_in_trail(&trail), expected);
}
