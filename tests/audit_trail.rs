//! No applied action is ever missing from the audit trail, whatever fails
//! afterwards: deletions go out only after a checkpoint record listing them
//! reached the audit bus, and a redelivery records what an earlier delivery
//! did (writes found in place, deletions its checkpoint listed). One test
//! function: faults on `PutEvents` apply to the whole emulator, so nothing
//! else may run beside it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use ecr_remediator::Delivery;
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

    redeliveries_account_for_what_an_earlier_delivery_did().await;
    every_delivery_claims_only_its_own_checkpoints().await;
    a_follow_ups_redelivery_through_serve_is_reconciled().await;
    a_put_events_call_refused_as_a_whole_is_not_retried_and_nothing_acts().await;
}

/// A `PutEvents` call refused as a whole (`AccessDeniedException`, as for a
/// caller whose identity policy does not allow it): the checkpoint is not
/// written, so nothing acts, and neither it nor the final record is retried
/// (a retry would take the calls the faults below leave free).
async fn a_put_events_call_refused_as_a_whole_is_not_retried_and_nothing_acts() {
    let repo = unique("trail-refused");
    create_repository(&repo, false);
    let audit = AuditQueue::new(&repo).await;
    let pushed = push_buildx(&repo, "v1", &["linux/arm64"], "refused-1");
    let h = handler(&[("ECR_REMEDIATOR_MODE", "promote")]).await;
    put_events_faults(&["AccessDeniedException", "AccessDeniedException"]);
    let event = push_event(&repo, &pushed.index, "v1", OCI_INDEX);
    let err = h
        .handle_text(&event, Delivery::default())
        .await
        .unwrap_err()
        .to_string();
    put_events_faults(&[]);
    assert!(err.contains("refused") && err.contains("AuditWriterArns"), "{err}");
    assert_eq!(tags(&repo).await["v1"], pushed.index, "nothing acted: {err}");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let records = audit.records().await;
    assert!(records.is_empty(), "not retried: {records:#?}");
}

fn delivery(attempt: u32) -> Delivery {
    Delivery {
        attempt: Some(attempt),
        ..Delivery::default()
    }
}

/// `audit show DIGEST` (one history), as JSON records.
fn show(group: &str, digest: &str) -> Vec<Value> {
    let (code, out, err) = audit_cli(&["show", digest, "--log-group", group, "--output", "json"]);
    assert_eq!(code, 0, "{err}");
    out.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Promote, deleting orphans at once (no keep tag, no grace period), its
/// trail read back from `group`.
async fn deleting_at_once(
    group: &str,
) -> ecr_remediator::Handler<ecr_remediator::aws::ecr::EcrRegistry, ecr_remediator::aws::audit::EventBridgeAudit> {
    handler(&[
        ("ECR_REMEDIATOR_MODE", "promote"),
        ("ECR_REMEDIATOR_DELETE_ORPHANS", "true"),
        ("ECR_REMEDIATOR_GRACE_PERIOD", "0s"),
        ("ECR_REMEDIATOR_KEEP_TAG", "false"),
        ("ECR_REMEDIATOR_AUDIT_LOG_GROUP", group),
    ])
    .await
}

async fn redeliveries_account_for_what_an_earlier_delivery_did() {
    let repo = unique("trail-redelivered");
    create_repository(&repo, false);
    let group = format!("/test/{}", unique("trail-redelivered"));
    log_group_rule(&group, &[&repo]).await;
    let deleting = deleting_at_once(&group).await;

    // 1. Delivery 1 deletes, then its final record fails on every attempt;
    //    delivery 2 (the trail back) confirms the deletions from delivery 1's
    //    checkpoint, and `audit show` of each deleted manifest says so.
    let pushed = push_buildx(&repo, "v1", &["linux/arm64"], "redelivered-1");
    let event = push_event(&repo, &pushed.index, "v1", OCI_INDEX);
    put_events_faults(&["ok", "InternalError", "InternalError", "InternalError", "InternalError"]);
    assert!(deleting.handle_text(&event, delivery(1)).await.is_err());
    put_events_faults(&[]);
    assert_eq!(
        list(&repo).await.len(),
        1,
        "delivery 1 deleted the index and its attestation"
    );
    deleting.handle_text(&event, delivery(2)).await.unwrap();
    for deleted in [pushed.index.as_str(), pushed.attestation()] {
        let history = show(&group, deleted);
        let last = history.last().unwrap();
        assert_eq!(last["attempt"], 2, "{history:#?}");
        assert_eq!(last["final"], true);
        assert_eq!(last["outcome"], "remediated", "{last:#}");
        assert_eq!(last["deleted"], 2, "{last:#}");
        assert!(last["reclaimed_bytes"].as_u64().unwrap() > 0, "{last:#}");
        let action = last["actions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["action"] == "delete" && a["digest"] == deleted)
            .unwrap_or_else(|| panic!("{last:#}"));
        assert_eq!(action["outcome"], "applied", "{last:#}");
        assert_eq!(action["earlier_attempt"], 1, "{last:#}");
    }

    // 2. A write, then the handling dies before its record is written (here:
    //    every PutEvents after the checkpoint fails): the redelivery records
    //    the writes it finds in place as already, attributed to delivery 1.
    let keeping = handler(&[
        ("ECR_REMEDIATOR_MODE", "promote"),
        ("ECR_REMEDIATOR_AUDIT_LOG_GROUP", &group),
    ])
    .await;
    let pushed = push_buildx(&repo, "v2", &["linux/arm64"], "redelivered-2");
    let event = push_event(&repo, &pushed.index, "v2", OCI_INDEX);
    put_events_faults(&["ok", "InternalError", "InternalError", "InternalError", "InternalError"]);
    assert!(keeping.handle_text(&event, delivery(1)).await.is_err());
    put_events_faults(&[]);
    assert_eq!(tags(&repo).await["v2"], pushed.runnable(), "delivery 1 moved v2");
    keeping.handle_text(&event, delivery(2)).await.unwrap();
    let history = show(&group, &pushed.index);
    let steps: Vec<&str> = history.iter().map(|r| r["outcome"].as_str().unwrap()).collect();
    assert_eq!(
        steps,
        vec!["in_progress", "noop"],
        "delivery 1's checkpoint, delivery 2's record"
    );
    let found: Vec<(&str, &str, &Value)> = history[1]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["action"].as_str().unwrap(),
                a["outcome"].as_str().unwrap(),
                &a["earlier_attempt"],
            )
        })
        .collect();
    assert_eq!(
        found,
        vec![("add_tag", "already", &json!(1)), ("move_tag", "already", &json!(1))],
        "{history:#?}"
    );

    // 3. A kill after the record and before the message is deleted: the event
    //    is delivered again and writes a second final record. `audit` shows
    //    one history; every record as written with --all-records.
    let pushed = push_buildx(&repo, "v3", &["linux/arm64"], "redelivered-3");
    let event = push_event(&repo, &pushed.index, "v3", OCI_INDEX);
    keeping.handle_text(&event, delivery(1)).await.unwrap();
    keeping.handle_text(&event, delivery(2)).await.unwrap();
    let history = show(&group, &pushed.index);
    assert_eq!(history.len(), 1, "{history:#?}");
    assert_eq!(history[0]["outcome"], "remediated");
    assert_eq!(history[0]["attempt"], 1);
    let (_, out, _) = audit_cli(&[
        "show",
        &pushed.index,
        "--log-group",
        &group,
        "--output",
        "json",
        "--all-records",
    ]);
    let finals: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["final"] == true)
        .collect();
    assert_eq!(finals.len(), 2, "{out}");
    assert_eq!(finals[1]["outcome"], "noop");
}

/// The last record of `history`, with its deletions' (outcome, earlier attempt).
fn deletions_of(record: &Value) -> Vec<(String, Value)> {
    record["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "delete")
        .map(|a| (a["outcome"].as_str().unwrap().to_owned(), a["earlier_attempt"].clone()))
        .collect()
}

/// Issue 36, items 5 to 7: what identifies a delivery, and what the
/// reconciler may claim.
async fn every_delivery_claims_only_its_own_checkpoints() {
    let repo = unique("trail-identity");
    let other = unique("trail-identity-other");
    create_repository(&repo, false);
    create_repository(&other, false);
    let group = format!("/test/{}", unique("trail-identity"));
    log_group_rule(&group, &[&repo, &other]).await;
    let sqs = aws_sdk_sqs::Client::new(&sdk_config().await);
    let queue = create_queue(&sqs, &unique("follow-ups").replace('/', "-")).await;
    let deferring = handler(&[
        ("ECR_REMEDIATOR_MODE", "promote"),
        ("ECR_REMEDIATOR_DELETE_ORPHANS", "true"),
        ("ECR_REMEDIATOR_GRACE_PERIOD", "1s"),
        ("ECR_REMEDIATOR_KEEP_TAG", "false"),
        ("ECR_REMEDIATOR_AUDIT_LOG_GROUP", &group),
        ("ECR_REMEDIATOR_QUEUE_URL", &queue),
    ])
    .await;

    // 5. The push defers its deletions and enqueues its follow-up; the
    //    follow-up deletes, and its final record is lost; the follow-up's
    //    redelivery says what its first delivery did (before: the push's own
    //    final record, same event id and attempt, "closed" the follow-up's
    //    checkpoint, and the redelivery said `index_gone`, deleted 0).
    let pushed = push_buildx(&repo, "v5", &["linux/arm64"], "identity-5");
    let event = push_event(&repo, &pushed.index, "v5", OCI_INDEX);
    deferring
        .handle_text(&event, delivered(1, "lambda-push"))
        .await
        .unwrap();
    let mut follow_up = None;
    for _ in 0..20 {
        let got = sqs
            .receive_message()
            .queue_url(&queue)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        if let Some(m) = got.messages().first() {
            follow_up = m.body().map(str::to_owned);
            break;
        }
    }
    let follow_up = follow_up.expect("the push enqueued its follow-up");
    let body: Value = serde_json::from_str(&follow_up).unwrap();
    let push_id = serde_json::from_str::<Value>(&event).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(body["id"], format!("{push_id}/follow-up-1"), "{body}");
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    put_events_faults(&["ok", "InternalError", "InternalError", "InternalError", "InternalError"]);
    assert!(deferring.handle_text(&follow_up, delivered(1, "sqs-a")).await.is_err());
    put_events_faults(&[]);
    assert_eq!(
        list(&repo).await.len(),
        1,
        "the follow-up deleted the index and its attestation"
    );
    deferring.handle_text(&follow_up, delivered(2, "sqs-b")).await.unwrap();
    let history = show(&group, &pushed.index);
    let last = history.last().unwrap();
    assert_eq!(last["trigger"], "follow_up", "{history:#?}");
    assert_eq!(last["attempt"], 2, "{last:#}");
    assert_eq!(last["deleted"], 2, "{last:#}");
    assert_eq!(
        deletions_of(last),
        vec![("applied".to_owned(), json!(1)), ("applied".to_owned(), json!(1))],
        "{last:#}"
    );

    // 7. Every delivery of an event was cut; the dead-letter queue's redrive
    //    starts the receive count again: the redriven delivery (attempt 1,
    //    another receive) still closes the trail.
    let deleting = deleting_at_once(&group).await;
    let pushed = push_buildx(&repo, "v7", &["linux/arm64"], "identity-7");
    let event = push_event(&repo, &pushed.index, "v7", OCI_INDEX);
    put_events_faults(&["ok", "InternalError", "InternalError", "InternalError", "InternalError"]);
    assert!(deleting.handle_text(&event, delivered(1, "sqs-cut")).await.is_err());
    put_events_faults(&[]);
    deleting
        .handle_text(&event, delivered(1, "sqs-redriven"))
        .await
        .unwrap();
    let history = show(&group, &pushed.index);
    let last = history.last().unwrap();
    assert_eq!(last["request_id"], "sqs-redriven", "{history:#?}");
    assert_eq!(last["outcome"], "remediated", "{last:#}");
    assert_eq!(last["deleted"], 2, "{last:#}");
    assert_eq!(
        deletions_of(last),
        vec![("applied".to_owned(), json!(1)), ("applied".to_owned(), json!(1))],
        "{last:#}"
    );

    // 6. The same request id in another repository: a checkpoint left open
    //    in `repo` is never claimed by `other`'s request for the same digest
    //    (which `other` never held).
    let pushed = push_buildx(&repo, "v6", &["linux/arm64"], "identity-6");
    let id = unique("sweep-repeated");
    let request = |repository: &str| {
        json!({"ecr-remediator": "remediate", "id": id, "repository": repository,
               "digest": pushed.index, "tag": "v6"})
        .to_string()
    };
    put_events_faults(&["ok", "InternalError", "InternalError", "InternalError", "InternalError"]);
    assert!(
        deleting
            .handle_text(&request(&repo), delivered(1, "sqs-p"))
            .await
            .is_err()
    );
    put_events_faults(&[]);
    deleting
        .handle_text(&request(&other), delivered(2, "sqs-q"))
        .await
        .unwrap();
    let (_, out, _) = audit_cli(&["--repository", &other, "--log-group", &group, "--output", "json"]);
    let records: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(records.len(), 1, "{out}");
    assert_eq!(records[0]["code"], "index_gone", "{out}");
    assert_eq!(records[0]["deleted"], 0, "{out}");
    assert!(deletions_of(&records[0]).is_empty(), "{out}");
}

/// Issue 36, item 5, through the real `serve`: the push defers its
/// deletions and enqueues its follow-up on the same queue; the follow-up
/// deletes and its final record is lost; SQS delivers it again (receive
/// count 2) and that delivery says what the first one did.
async fn a_follow_ups_redelivery_through_serve_is_reconciled() {
    let repo = unique("trail-serve");
    create_repository(&repo, false);
    let group = format!("/test/{}", unique("trail-serve"));
    log_group_rule(&group, &[&repo]).await;
    let pushed = push_buildx(&repo, "v9", &["linux/arm64"], "serve-9");
    let event = push_event(&repo, &pushed.index, "v9", OCI_INDEX);
    let queue = queue_with_message(&unique("serve-follow-up").replace('/', "-"), &event).await;
    // The push: checkpoint and final record; the follow-up: its checkpoint,
    // then its final record fails on every attempt of its first delivery.
    put_events_faults(&[
        "ok",
        "ok",
        "ok",
        "InternalError",
        "InternalError",
        "InternalError",
        "InternalError",
    ]);
    let out = cli(&[
        "serve",
        "--queue-url",
        &queue,
        "--wait",
        "3",
        "--visibility-timeout",
        "1",
        "--exit-when-idle",
        "--mode",
        "promote",
        "--delete-orphans",
        "--grace-period",
        "1s",
    ])
    .env("ECR_REMEDIATOR_KEEP_TAG", "false")
    .env("ECR_REMEDIATOR_MAX_ATTEMPTS", "4")
    .env("ECR_REMEDIATOR_QUEUE_URL", &queue)
    .env("ECR_REMEDIATOR_AUDIT_LOG_GROUP", &group)
    .output()
    .unwrap();
    put_events_faults(&[]);
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{log}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        list(&repo).await.len(),
        1,
        "the follow-up deleted the index and its attestation\n{log}"
    );
    let history = show(&group, &pushed.index);
    let last = history.last().unwrap();
    let steps: Vec<(&Value, &Value, &Value)> = history
        .iter()
        .map(|r| (&r["trigger"], &r["outcome"], &r["attempt"]))
        .collect();
    assert_eq!(last["trigger"], "follow_up", "{history:#?}");
    assert_eq!(last["attempt"], 2, "{steps:?}\n{log}");
    assert!(last["request_id"].as_str().unwrap().starts_with("sqs-"), "{last:#}");
    assert!(last["event_id"].as_str().unwrap().ends_with("/follow-up-1"), "{last:#}");
    assert_eq!(last["deleted"], 2, "{last:#}");
    assert_eq!(
        deletions_of(last),
        vec![("applied".to_owned(), json!(1)), ("applied".to_owned(), json!(1))],
        "{last:#}"
    );
}
