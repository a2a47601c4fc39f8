//! `ecr-remediator audit` against records written by the real service path:
//! pushes → EventBridge → queue → `serve` worker → audit records on the bus →
//! rule → CloudWatch Logs, then questions through CloudWatch Logs Insights.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use harness::*;
use serde_json::Value;

struct Trail {
    group: String,
    repo: String,
    failing: String,
    superseded: Pushed,
    remediated: Pushed,
    other: Pushed,
}

/// Two repositories' pushes handled by the worker: a superseded push, a
/// promotion with deletions, a second image, and a push ECR refuses to
/// retag (AccessDenied: a failure that is not retried).
async fn trail() -> Trail {
    let repo = unique("audit");
    let failing = unique("audit-denied");
    create_repository(&repo, false);
    create_repository(&failing, false);
    let group = format!("/test/{}", unique("audit-trail"));
    log_group_rule(&group, &[&repo, &failing]).await;
    let queue_name = format!("{}-pushes", repo.replace('/', "-"));
    let pattern = serde_json::json!({"source": ["aws.ecr"], "detail-type": ["ECR Image Action"],
        "detail": {"repository-name": [repo, failing]}});
    let queue = rule_to_queue(&queue_name, &pattern).await;

    let superseded = push_buildx(&repo, "v1", &["linux/arm64"], "audit-1a");
    let remediated = push_buildx(&repo, "v1", &["linux/arm64"], "audit-1b");
    let other = push_buildx(&repo, "v2", &["linux/arm64"], "audit-2");
    push_buildx(&failing, "v1", &["linux/arm64"], "audit-denied");
    emulator().control(
        "POST",
        "faults",
        Some(serde_json::json!({"operation": "ecr:PutImage", "repository": failing, "error": "AccessDeniedException", "rate": 1.0})),
    );
    let out = serve_until_idle(&queue, &["--delete-orphans", "--grace-period", "0s"])
        .env("ECR_REMEDIATOR_KEEP_TAG", "false")
        .output()
        .unwrap();
    emulator().control(
        "POST",
        "faults",
        Some(serde_json::json!({"operation": "ecr:PutImage", "repository": failing})),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Trail {
        group,
        repo,
        failing,
        superseded,
        remediated,
        other,
    }
}

fn audit(args: &[&str]) -> (i32, String, String) {
    audit_cli(args)
}

fn json_lines(out: &str) -> Vec<Value> {
    out.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn questions_about_images_are_answered_from_the_trail_the_service_wrote() {
    let t = trail().await;
    let g = t.group.as_str();

    // Everything about the repository, newest first, as written.
    let (code, out, err) = audit(&[
        "--log-group",
        g,
        "--repository",
        &t.repo,
        "--output",
        "json",
        "--all-records",
    ]);
    assert_eq!(code, 0, "{err}");
    let records = json_lines(&out);
    let outcomes: Vec<&str> = records.iter().map(|r| r["outcome"].as_str().unwrap()).collect();
    // v1 (superseded), v1 (checkpoint, then remediated), v2 (checkpoint, then remediated).
    assert_eq!(records.len(), 5, "{outcomes:?}");
    assert_eq!(outcomes.iter().filter(|o| **o == "in_progress").count(), 2);
    assert!(records.iter().all(|r| r["repository"] == t.repo.as_str()));
    assert!(records.iter().all(|r| r["schema"] == "ecr-remediator/audit-record"));

    // The history of one image, oldest first: the checkpoint, then the record.
    let show = |extra: &[&str]| {
        let mut args = vec!["show", &t.remediated.index, "--log-group", g, "--output", "json"];
        args.extend_from_slice(extra);
        let (code, out, err) = audit(&args);
        assert_eq!(code, 0, "{err}");
        (json_lines(&out), err)
    };
    let (history, _) = show(&["--all-records"]);
    let steps: Vec<&str> = history.iter().map(|r| r["outcome"].as_str().unwrap()).collect();
    assert_eq!(steps, vec!["in_progress", "remediated"], "{history:#?}");
    assert_eq!(history[1]["deleted"], 2, "the index and its attestation");
    assert!(history[1]["reclaimed_bytes"].as_u64().unwrap() > 0);
    // By default, one history: the final record restates the checkpoint.
    let (history, err) = show(&[]);
    assert_eq!(history.len(), 1, "{history:#?}");
    assert_eq!(history[0]["outcome"], "remediated");
    assert!(err.contains("1 checkpoint(s) restated"), "{err}");
    // The short digest the table prints is accepted back.
    let short = &t.remediated.index["sha256:".len().."sha256:".len() + 12];
    let (code, out, err) = audit(&["show", short, "--log-group", g, "--output", "json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json_lines(&out), history);
    let (code, _, err) = audit(&["show", "abc", "--log-group", g]);
    assert_eq!(code, 2, "{err}");

    // A manifest a record deleted leads to that record.
    let (_, out, _) = audit(&[
        "--log-group",
        g,
        "--digest",
        t.remediated.attestation(),
        "--outcome",
        "remediated",
        "--output",
        "json",
    ]);
    let about = json_lines(&out);
    assert_eq!(about.len(), 1, "{out}");
    assert_eq!(about[0]["index_digest"], t.remediated.index.as_str());

    // By outcome, action, tag and account.
    let (_, out, _) = audit(&["--log-group", g, "--outcome", "skipped", "--output", "json"]);
    let skipped = json_lines(&out);
    assert_eq!(skipped.len(), 1, "{out}");
    assert_eq!(skipped[0]["code"], "superseded");
    assert_eq!(skipped[0]["index_digest"], t.superseded.index.as_str());
    let (_, out, _) = audit(&[
        "--log-group",
        g,
        "--action",
        "delete",
        "--outcome",
        "remediated",
        "--output",
        "json",
    ]);
    assert_eq!(json_lines(&out).len(), 2, "{out}");
    let (_, out, _) = audit(&["--log-group", g, "--tag", "v2", "--output", "json"]);
    let v2 = json_lines(&out);
    assert!(
        !v2.is_empty() && v2.iter().all(|r| r["index_digest"] == t.other.index.as_str()),
        "{out}"
    );
    let (_, out, _) = audit(&[
        "--log-group",
        g,
        "--account",
        ACCOUNT,
        "--limit",
        "2",
        "--output",
        "json",
        "--all-records",
    ]);
    assert_eq!(json_lines(&out).len(), 2, "--limit");

    // The failure that is not retried, found by outcome and repository prefix.
    let prefix = t.failing.trim_end_matches(|c: char| c != '-');
    let (_, out, _) = audit(&[
        "--log-group",
        g,
        "--repository-prefix",
        prefix,
        "--outcome",
        "failed",
        "--output",
        "json",
    ]);
    let failed = json_lines(&out);
    assert_eq!(failed.len(), 1, "{out}");
    assert_eq!(failed[0]["repository"], t.failing.as_str());
    assert_eq!(failed[0]["final"], true, "not retryable: no retry to come");

    // The readable table and the CSV export.
    let (code, out, _) = audit(&["--log-group", g, "--repository", &t.repo]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("TIME") && lines[0].contains("OUTCOME"), "{out}");
    let short = &t.remediated.index["sha256:".len().."sha256:".len() + 12];
    assert!(
        lines.iter().any(|l| l.contains(short) && l.contains("remediated")),
        "{out}"
    );
    assert!(lines.iter().any(|l| l.contains("superseded")), "{out}");
    let (_, out, _) = audit(&["--log-group", g, "--repository", &t.repo, "--output", "csv"]);
    let rows: Vec<&str> = out.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(
        rows[0],
        "time,account,repository,tag,index,outcome,actions,reason,event_id,request_id"
    );
    assert_eq!(
        rows.len(),
        4,
        "the header and three handlings (checkpoints folded): {out}"
    );

    // Stats over the window.
    let (code, out, err) = audit(&["stats", "--log-group", g, "--output", "json"]);
    assert_eq!(code, 0, "{err}");
    let stats: Value = serde_json::from_str(&out).unwrap();
    let totals = &stats["totals"];
    assert_eq!(totals["by_outcome"]["remediated"], 2, "{stats:#}");
    assert_eq!(totals["by_outcome"]["skipped"], 1);
    assert_eq!(totals["by_outcome"]["failed"], 1);
    assert_eq!(totals["deleted"], 4, "{stats:#}");
    let (_, out, _) = audit(&["stats", "--log-group", g, "--repository", &t.repo]);
    assert!(out.lines().last().unwrap().starts_with("(all)"), "{out}");

    // Run last: the faults below are global to this test binary's emulator.
    the_stack_names_the_log_group_and_errors_say_what_to_do().await;
}

async fn the_stack_names_the_log_group_and_errors_say_what_to_do() {
    let group = format!("/test/{}", unique("audit-stack"));
    let sdk = sdk_config().await;
    aws_sdk_cloudwatchlogs::Client::new(&sdk)
        .create_log_group()
        .log_group_name(&group)
        .send()
        .await
        .unwrap();
    let stack = unique("audit-stack").replace('/', "-");
    let template = serde_json::json!({
        "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {"AuditLogGroupName": {"Value": group}},
    });
    aws_sdk_cloudformation::Client::new(&sdk)
        .create_stack()
        .stack_name(&stack)
        .template_body(template.to_string())
        .send()
        .await
        .unwrap();
    let (code, out, err) = audit(&["--stack", &stack]);
    assert_eq!(code, 0, "{err}");
    assert!(out.is_empty() && err.contains("no audit record matches"), "{out}{err}");

    let (code, _, err) = audit(&["--stack", "no-such-stack"]);
    assert_eq!(code, 1);
    assert!(err.contains("no-such-stack") && err.contains("no such stack"), "{err}");
    let (code, _, err) = audit(&["--log-group", "/no/such/group"]);
    assert_eq!(code, 1);
    assert!(err.contains("/no/such/group does not exist"), "{err}");
    let (code, _, err) = audit(&[]);
    assert_eq!(code, 1);
    assert!(err.contains("--log-group NAME or --stack NAME"), "{err}");
    let (code, _, err) = audit(&["--log-group", &group, "--since", "7x"]);
    assert_eq!(code, 1);
    assert!(err.contains("--since"), "{err}");
    // Malformed values are usage errors, refused before anything is asked (exit 2).
    let (code, _, err) = audit(&["--log-group", &group, "--digest", "sha256:nothex"]);
    assert_eq!(code, 2);
    assert!(err.contains("--digest"), "{err}");
    let (code, _, err) = audit(&["--log-group", &group, "--account", "1234"]);
    assert_eq!(code, 2);
    assert!(err.contains("--account") && err.contains("12 digits"), "{err}");

    emulator().control(
        "POST",
        "faults",
        Some(serde_json::json!({"operation": "logs:StartQuery", "error": "AccessDeniedException", "rate": 1.0})),
    );
    let (code, _, err) = audit(&["--log-group", &group]);
    emulator().control(
        "POST",
        "faults",
        Some(serde_json::json!({"operation": "logs:StartQuery"})),
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("not allowed to query") && err.contains("logs:StartQuery"),
        "{err}"
    );

    emulator().control(
        "POST",
        "config",
        Some(serde_json::json!({"insights_running_polls": 100000})),
    );
    let (code, _, err) = audit(&["--log-group", &group, "--query-timeout", "2s"]);
    emulator().control("POST", "config", Some(serde_json::json!({"insights_running_polls": 1})));
    assert_eq!(code, 1);
    assert!(err.contains("did not finish within 2 s"), "{err}");
}

/// Issue 36, item 4: a digest prefix two images share is refused whatever
/// the limit and the subcommand, though the newest records (within the
/// limit) are all about one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ambiguous_digest_prefix_is_refused_before_the_limit() {
    let group = format!("/test/{}", unique("audit-ambiguous"));
    let logs = aws_sdk_cloudwatchlogs::Client::new(&sdk_config().await);
    logs.create_log_group().log_group_name(&group).send().await.unwrap();
    logs.create_log_stream()
        .log_group_name(&group)
        .log_stream_name("s")
        .send()
        .await
        .unwrap();
    let (x, y) = (
        format!("sha256:abcdef1{}", "0".repeat(57)),
        format!("sha256:abcdef1{}", "1".repeat(57)),
    );
    let now = ecr_remediator::now_ms();
    // X once, long ago; then Y 120 times, newer.
    let events: Vec<_> = std::iter::once((now - 3_600_000, &x))
        .chain((0..120).map(|i| (now - 60_000 + i, &y)))
        .map(|(at, digest)| {
            let message = serde_json::json!({
                "version": "0", "source": "ecr-remediator", "detail-type": "ECR Remediation Record",
                "detail": {"schema": "ecr-remediator/audit-record", "schema_version": 1, "repository": "team/app",
                           "index_digest": digest, "outcome": "noop", "actions": [], "skipped": [], "notes": []}
            });
            aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
                .timestamp(at)
                .message(message.to_string())
                .build()
                .unwrap()
        })
        .collect();
    logs.put_log_events()
        .log_group_name(&group)
        .log_stream_name("s")
        .set_log_events(Some(events))
        .send()
        .await
        .unwrap();
    for args in [
        vec!["--log-group", &group, "--digest", "sha256:abcdef1"],
        vec!["--log-group", &group, "--digest", "sha256:abcdef1", "--limit", "1"],
        vec!["stats", "--log-group", &group, "--digest", "sha256:abcdef1"],
        vec!["show", "sha256:abcdef1", "--log-group", &group],
    ] {
        let (code, out, err) = audit(&args);
        assert_eq!(code, 1, "{args:?}: {out}{err}");
        assert!(err.contains("names more than one image"), "{args:?}: {err}");
        assert!(err.contains(&x) && err.contains(&y), "{args:?}: {err}");
    }
    // A prefix only Y has is fine.
    let (code, out, err) = audit(&[
        "--log-group",
        &group,
        "--digest",
        "sha256:abcdef11",
        "--limit",
        "1",
        "--output",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json_lines(&out).len(), 1, "{out}");
}
