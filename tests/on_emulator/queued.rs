//! Requests that travel through the queue keep what they ask for (issue 20,
//! items 1 and 3), through `serve` and through the Lambda handler alike: a
//! scheduled sweep's cleanup request cleans up when it is handled, and a
//! repository that cannot be listed does not stop the sweep of the others.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::harness;

use harness::*;

/// The schedule's request to sweep this deployment's own account.
const SWEEP_OWN: &str = r#"{"ecr-remediator":"sweep","account":null}"#;

/// Runs `command`: (exit code, stdout, stderr).
fn run(command: &mut std::process::Command) -> (i32, String, String) {
    let out = command.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn age(repo: &str, digest: &str, seconds: u64) {
    emulator().control(
        "POST",
        "age",
        Some(serde_json::json!({"repository": repo, "digest": digest, "seconds": seconds})),
    );
}

/// A leftover two hours old: `v1` promoted without deletion, its index and
/// attestation untagged.
fn leftover(repo: &str) -> Pushed {
    create_repository(repo, false);
    let p = push_buildx(repo, "v1", &["linux/arm64"], repo);
    // An earlier promotion without deletion: the index is a leftover, two hours old.
    remediate_record(
        repo,
        &p.index,
        "v1",
        &["--mode", "promote"],
        &[("ECR_REMEDIATOR_KEEP_TAG", "false")],
    );
    for d in std::iter::once(&p.index).chain(&p.children) {
        age(repo, d, 7200);
    }
    p
}

/// Only the runnable image is left, under `v1`.
async fn cleaned(repo: &str, p: &Pushed, log: &str) {
    let listing: Vec<String> = list(repo).await.into_iter().map(|l| l.digest).collect();
    assert!(!listing.contains(&p.index), "the leftover index is deleted:\n{log}");
    assert!(
        !listing.contains(&p.attestation().to_owned()),
        "and its attestation:\n{log}"
    );
    assert!(listing.contains(&p.runnable().to_owned()));
    assert_eq!(tags(repo).await["v1"], p.runnable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_cleanup_through_the_queue_deletes_the_leftover() {
    let repo = unique("queued-cleanup");
    let p = leftover(&repo);
    let queue = queue_with_message(&format!("{}-q", repo.replace('/', "-")), SWEEP_OWN).await;
    let (code, out, err) = run(serve_until_idle(&queue, &["--delete-orphans", "--grace-period", "0s"])
        .env("ECR_REMEDIATOR_KEEP_TAG", "false")
        .env("ECR_REMEDIATOR_SWEEP_PREFIXES", &repo));
    assert_eq!(code, 0, "{out}\n{err}");
    cleaned(&repo, &p, &out).await;
}

/// The Lambda function's handler, as Lambda's SQS event source mapping calls it.
async fn lambda(queue: &str, prefixes: &[&str], policy: &[(&str, &str)]) -> Vec<serde_json::Value> {
    let mut h = handler(policy).await;
    sweeping_into(&mut h, queue, prefixes).await;
    lambda_until_idle(&h, queue).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_cleanup_through_the_lambda_handler_deletes_the_leftover() {
    let repo = unique("lambda-cleanup");
    let p = leftover(&repo);
    let queue = queue_with_message(&format!("{}-q", repo.replace('/', "-")), SWEEP_OWN).await;
    let policy = [
        ("ECR_REMEDIATOR_MODE", "promote"),
        ("ECR_REMEDIATOR_DELETE_ORPHANS", "true"),
        ("ECR_REMEDIATOR_GRACE_PERIOD", "0s"),
        ("ECR_REMEDIATOR_KEEP_TAG", "false"),
    ];
    let responses = lambda(&queue, &[&repo], &policy).await;
    let log = format!("{responses:#?}");
    assert!(
        responses
            .iter()
            .all(|r| r["batchItemFailures"].as_array().is_some_and(Vec::is_empty)),
        "{log}"
    );
    assert!(responses.len() >= 2, "the sweep, then its requests: {log}");
    cleaned(&repo, &p, &log).await;
}

/// Two repositories under `prefix/`, `a` refusing to be listed every time (a
/// member role limited to some prefixes looks like this), `b` with `v1` to
/// promote; a queue holding the schedule's sweep of this account.
/// Returns (`a`, `b`, what was pushed to `b`, the queue).
async fn one_unlistable(prefix: &str) -> (String, String, Pushed, String) {
    let (denied, fine) = (format!("{prefix}/a"), format!("{prefix}/b"));
    create_repository(&denied, false);
    create_repository(&fine, false);
    push_buildx(&denied, "v1", &["linux/arm64"], &denied);
    let p = push_buildx(&fine, "v1", &["linux/arm64"], &fine);
    emulator().fault(&denied, "ecr:DescribeImages", &["AccessDeniedException"; 50]);
    let queue = queue_with_message(&format!("{}-q", prefix.replace('/', "-")), SWEEP_OWN).await;
    (denied, fine, p, queue)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_that_cannot_be_listed_does_not_stop_the_scheduled_sweep() {
    let prefix = unique("queued-partial");
    let (denied, fine, p, queue) = one_unlistable(&prefix).await;
    let (code, out, err) =
        run(serve_until_idle(&queue, &[]).env("ECR_REMEDIATOR_SWEEP_PREFIXES", format!("{prefix}/")));
    emulator().fault(&denied, "ecr:DescribeImages", &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(
        tags(&fine).await["v1"],
        p.runnable(),
        "the other repository is swept:\n{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains("cannot read the repository") && l.contains(&denied)),
        "the failing repository is reported:\n{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_that_cannot_be_listed_does_not_stop_the_sweep_in_the_lambda_handler() {
    let prefix = unique("lambda-partial");
    let (denied, fine, p, queue) = one_unlistable(&prefix).await;
    let swept = format!("{prefix}/");
    let responses = lambda(&queue, &[&swept], &[("ECR_REMEDIATOR_MODE", "promote")]).await;
    emulator().fault(&denied, "ecr:DescribeImages", &[]);
    assert_eq!(tags(&fine).await["v1"], p.runnable(), "the other repository is swept");
    assert!(
        responses
            .iter()
            .all(|r| r["batchItemFailures"].as_array().is_some_and(Vec::is_empty)),
        "the sweep message is handled, not redelivered: {responses:#?}"
    );
}
