//! `ecr-remediator serve` as a process on a queue fed by the emulator's own
//! ECR events through an EventBridge rule: the path a container deployment takes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::harness;

use std::process::Command;

use harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_remediates_pushes_delivered_by_eventbridge_and_ignores_its_own_retags() {
    let repo = unique("worker");
    create_repository(&repo, false);
    let audit = AuditQueue::new(&repo).await;
    let sqs = aws_sdk_sqs::Client::new(&sdk_config().await);
    let name = format!("{}-pushes", repo.replace('/', "-"));
    // Every image action in the repository, so the worker also sees the child
    // pushes and its own retags (the deployed rule filters those out earlier).
    let pattern = serde_json::json!({"source": ["aws.ecr"], "detail-type": ["ECR Image Action"], "detail": {"repository-name": [repo]}});
    let queue = rule_to_queue(&name, &pattern).await;

    let pushed = push_buildx(&repo, "v7", &["linux/arm64"], "worker");

    let run = || serve_until_idle(&queue, &[]).output().unwrap();
    let out = run();
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{log}\n{}", String::from_utf8_lossy(&out.stderr));
    let t = tags(&repo).await;
    assert_eq!(t["v7"], pushed.runnable(), "{log}");
    assert_eq!(t["v7-index"], pushed.index);

    // Three push events, then the worker's own two retags (v7-index on the
    // index, v7 on the image manifest): all consumed, four skipped, one record.
    let skipped = log.lines().filter(|l| l.contains("event skipped")).count();
    assert_eq!(skipped, 4, "two child pushes and two own retags are skipped:\n{log}");
    assert!(log.contains("worker stopped") && log.contains("\"handled\":5"), "{log}");
    let records = audit.finals().await;
    assert_eq!(records.len(), 1, "{records:#?}");
    assert_eq!(records[0]["outcome"], "remediated");
    assert!(
        log.lines().any(|l| l.starts_with("{\"audit_record\":")),
        "the record is also a log line"
    );

    // A second run finds nothing to do and writes nothing.
    emulator().clear_calls(&repo);
    let again = run();
    assert!(again.status.success());
    let calls = emulator().calls(&repo);
    assert!(!calls.contains_key("ecr:PutImage"), "{calls:?}");
    let left = sqs
        .get_queue_attributes()
        .queue_url(&queue)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await
        .unwrap();
    let n = left.attributes().unwrap()[&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages].clone();
    assert_eq!(n, "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_stops_cleanly_on_sigterm() {
    let sqs = aws_sdk_sqs::Client::new(&sdk_config().await);
    let name = unique("sigterm").replace('/', "-");
    let queue = create_queue(&sqs, &name).await;
    let child = cli(&["serve", "--queue-url", &queue, "--wait", "20"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let started = std::time::Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("shutdown requested"), "{log}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "stopped without waiting out the long poll"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remediate_handles_one_image_now_and_prints_its_record() {
    let repo = unique("cli");
    create_repository(&repo, false);
    let pushed = push_buildx(&repo, "v7", &["linux/arm64"], "cli");
    let base = [
        "remediate",
        "--repository",
        &repo,
        "--image-digest",
        &pushed.index,
        "--image-tag",
        "v7",
        "--mode",
        "promote",
    ];

    let run = |args: &[&str]| {
        let out = cli(args).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    // The dry run: a table of what would change, nothing written.
    let (code, out, err) = run(&[&base[..], &["--dry-run"]].concat());
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("REPOSITORY"), "{out}");
    assert!(out.contains("would remediate") && out.contains("move v7 -> "), "{out}");
    assert!(out.lines().count() == 2, "one line per tag: {out}");
    let (_, out, _) = run(&[&base[..], &["--dry-run", "--output", "json"]].concat());
    let record: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(record["trigger"], "manual");
    assert_eq!(record["policy"]["dry_run"], true);
    assert_eq!(record["outcome"], "planned");
    assert_eq!(tags(&repo).await["v7"], pushed.index, "dry run writes nothing");

    // The tag alone is enough: its index is looked up.
    let (code, out, err) = run(&[
        "remediate",
        "--repository",
        &repo,
        "--image-tag",
        "v7",
        "--output",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let record: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(record["outcome"], "remediated");
    assert_eq!(record["index_digest"], pushed.index.as_str());
    assert_eq!(tags(&repo).await["v7"], pushed.runnable());
    // Asked again, the tag is an image already.
    let (code, out, _) = run(&["remediate", "--repository", &repo, "--image-tag", "v7"]);
    assert_eq!(code, 0);
    assert!(out.contains("deployable as it is, nothing to remediate"), "{out}");

    // What does not exist, or no longer points where it was named: one line, exit 1.
    let missing = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
    push_buildx(&repo, "v8", &["linux/arm64"], "cli-8");
    for (args, says) in [
        (vec!["--image-tag", "v9"], format!("{repo}:v9 does not exist")),
        (
            vec!["--image-digest", missing],
            format!("{repo}@{missing} does not exist"),
        ),
        (
            vec!["--image-digest", &pushed.index, "--image-tag", "v8"],
            "superseded".to_owned(),
        ),
    ] {
        let mut all = vec!["remediate", "--repository", &repo];
        all.extend(args);
        let (code, _, err) = run(&all);
        assert_eq!(code, 1, "{all:?}: {err}");
        assert!(err.contains(&says), "{all:?}: {err}");
        assert!(err.lines().count() <= 2, "{err}");
    }
    let (code, _, err) = run(&["remediate", "--repository", &repo, "--image-digest", "sha256:nope"]);
    assert_eq!(code, 2);
    assert!(err.contains("--image-digest"), "{err}");
    let (code, _, err) = run(&["remediate", "--repository", &repo]);
    assert_eq!(code, 2);
    assert!(err.contains("--image-tag"), "{err}");

    // Policy knobs as flags: the platform to promote, no keep tag.
    push_buildx(&repo, "v10", &["linux/amd64", "linux/arm64"], "cli-10");
    let (code, out, err) = run(&[
        "remediate",
        "--repository",
        &repo,
        "--image-tag",
        "v10",
        "--promote-platform",
        "linux/arm64",
        "--keep-tag",
        "false",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("remediated") && out.contains("move v10 -> "), "{out}");
    assert!(!tags(&repo).await.contains_key("v10-index"), "no keep tag asked for");
    // A policy file beside a policy variable would silently ignore one: refused.
    let file = std::env::temp_dir().join(format!("{}.toml", repo.replace('/', "-")));
    std::fs::write(&file, "[default]\nmode = \"tag\"\n").unwrap();
    let (code, _, err) = run_cli(
        &[
            "remediate",
            "--repository",
            &repo,
            "--image-tag",
            "v8",
            "--config",
            file.to_str().unwrap(),
        ],
        &[("ECR_REMEDIATOR_MODE", "promote")],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("ECR_REMEDIATOR_MODE") && err.contains("--config"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_of_a_received_batch_stays_invisible_until_handled() {
    let repo = unique("batch-visibility");
    create_repository(&repo, false);
    let audit = AuditQueue::new(&repo).await;
    let sqs = aws_sdk_sqs::Client::new(&sdk_config().await);
    let queue = create_queue(&sqs, &format!("{}-q", repo.replace('/', "-"))).await;
    let mut events = Vec::new();
    for tag in ["v1", "v2", "v3"] {
        let pushed = push_buildx(&repo, tag, &["linux/arm64"], &format!("batch-{tag}"));
        events.push(push_event(&repo, &pushed.index, tag, OCI_INDEX));
    }
    for e in &events {
        sqs.send_message()
            .queue_url(&queue)
            .message_body(e)
            .send()
            .await
            .unwrap();
    }
    // Each handling takes over two seconds, the visibility timeout is two:
    // the third message of the batch waits about five seconds for its turn.
    emulator().control(
        "POST",
        "faults",
        Some(serde_json::json!({"operation": "BatchGetImage", "repository": repo, "latency_ms": 800})),
    );
    // Two workers, as two Lambda instances would be: whatever one holds, the
    // other must not receive.
    let spawn = || {
        cli(&[
            "serve",
            "--queue-url",
            &queue,
            "--wait",
            "1",
            "--visibility-timeout",
            "2",
            "--exit-when-idle",
            "--mode",
            "tag",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
    };
    let first = spawn();
    std::thread::sleep(std::time::Duration::from_millis(300));
    // The second worker keeps polling until the first is done.
    let mut second_runs = Vec::new();
    let mut first = Some(first);
    let mut out = None;
    while out.is_none() {
        let second = spawn().wait_with_output().unwrap();
        second_runs.push(second);
        if let Some(f) = first.as_mut()
            && f.try_wait().unwrap().is_some()
        {
            out = first.take().map(|f| f.wait_with_output().unwrap());
        }
    }
    let out = out.unwrap();
    for s in &second_runs {
        assert!(s.status.success(), "{}", String::from_utf8_lossy(&s.stderr));
    }
    emulator().control(
        "POST",
        "faults",
        Some(serde_json::json!({"operation": "BatchGetImage", "repository": repo})),
    );
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{log}\n{}", String::from_utf8_lossy(&out.stderr));
    let records = audit.finals().await;
    let mut ids: Vec<&str> = records.iter().map(|r| r["event_id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    let before = ids.len();
    ids.dedup();
    assert_eq!(before, ids.len(), "a message was handled twice: {records:#?}");
    assert_eq!(ids.len(), 3, "{records:#?}");
    let _ = log;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_runs_an_account_sweep_a_message_asks_for_and_then_its_requests() {
    let repo = unique("worker-sweep");
    create_repository(&repo, false);
    let pushed = push_buildx(&repo, "v3", &["linux/arm64"], "worker-sweep");
    let sqs = aws_sdk_sqs::Client::new(&sdk_config().await);
    let queue = create_queue(&sqs, &format!("{}-sweeps", repo.replace('/', "-"))).await;
    // What a hub's schedule puts on the queue for its own account.
    sqs.send_message()
        .queue_url(&queue)
        .message_body(ecr_remediator::service::message::Request::SweepAccount(None).body())
        .send()
        .await
        .unwrap();
    let out = serve_until_idle(&queue, &[])
        .env("ECR_REMEDIATOR_SWEEP_PREFIXES", &repo)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{log}\n{}", String::from_utf8_lossy(&out.stderr));
    let t = tags(&repo).await;
    assert_eq!(
        t["v3"],
        pushed.runnable(),
        "the sweep's request came back through the queue and was handled: {log}"
    );
    assert!(
        log.contains("\"handled\":2"),
        "the sweep message, then the image's request: {log}"
    );
}

/// `--stack`: the CLI's records go where the deployed stack's do (its audit
/// bus), with the caller's account and the region.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remediate_with_stack_writes_to_the_stacks_audit_bus() {
    let repo = unique("cli-stack");
    create_repository(&repo, false);
    let pushed = push_buildx(&repo, "v1", &["linux/arm64"], "cli-stack");
    let sdk = sdk_config().await;
    let name = repo.replace('/', "-");
    let events = aws_sdk_eventbridge::Client::new(&sdk);
    let bus = events
        .create_event_bus()
        .name(format!("{name}-audit"))
        .send()
        .await
        .unwrap()
        .event_bus_arn()
        .unwrap()
        .to_owned();
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let queue = create_queue(&sqs, &name).await;
    events
        .put_rule()
        .name(&name)
        .event_bus_name(&bus)
        .event_pattern(serde_json::json!({"source": ["ecr-remediator"]}).to_string())
        .send()
        .await
        .unwrap();
    events
        .put_targets()
        .rule(&name)
        .event_bus_name(&bus)
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("q")
                .arn(format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{name}"))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let template = serde_json::json!({
        "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {"AuditBusArn": {"Value": bus}, "AuditLogGroupName": {"Value": format!("/{name}")}},
    });
    aws_sdk_cloudformation::Client::new(&sdk)
        .create_stack()
        .stack_name(&name)
        .template_body(template.to_string())
        .send()
        .await
        .unwrap();
    let (code, _, err) = run_cli(
        &[
            "remediate",
            "--repository",
            &repo,
            "--image-tag",
            "v1",
            "--stack",
            &name,
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let got = sqs
        .receive_message()
        .queue_url(&queue)
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap();
    let records: Vec<serde_json::Value> = got
        .messages()
        .iter()
        .map(|m| serde_json::from_str::<serde_json::Value>(m.body().unwrap()).unwrap()["detail"].clone())
        .collect();
    let last = records
        .iter()
        .find(|r| r["final"] == true)
        .unwrap_or_else(|| panic!("{records:#?}"));
    assert_eq!(last["index_digest"], pushed.index.as_str());
    assert_eq!(last["account"], ACCOUNT, "the caller's account");
    assert_eq!(last["region"], REGION);
    let (code, _, err) = run_cli(
        &[
            "remediate",
            "--repository",
            &repo,
            "--image-tag",
            "v1",
            "--stack",
            "no-such-stack",
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert!(err.contains("no-such-stack"), "{err}");
}

/// Issue 36, item 1: an event from another account, in a deployment with no
/// member role, is refused with no registry call and recorded, even when a
/// repository of that name exists in this account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_from_another_account_is_refused_without_a_member_role() {
    let repo = unique("foreign");
    create_repository(&repo, false);
    let p = push_buildx(&repo, "v1", &["linux/arm64"], &repo);
    emulator().clear_calls(&repo);
    let event = push_event(&repo, &p.index, "v1", OCI_INDEX).replace(ACCOUNT, "333333333333");
    let queue = queue_with_message(&format!("{}-q", repo.replace('/', "-")), &event).await;
    let out = serve_until_idle(&queue, &[])
        .env("ECR_REMEDIATOR_ACCOUNT_ID", ACCOUNT)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{log}");
    let calls = emulator().calls(&repo);
    assert!(calls.is_empty(), "no registry call: {calls:?}");
    assert_eq!(tags(&repo).await["v1"], p.index, "nothing moved:\n{log}");
    let record = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|l| l["audit_record"].clone())
        .find(|r| r["index_digest"] == p.index.as_str())
        .unwrap_or_else(|| panic!("a record:\n{log}"));
    assert_eq!(record["code"], "other_account", "{record}");
    assert_eq!(record["account"], "333333333333", "{record}");
}
