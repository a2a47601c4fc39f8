//! `ecr-remediator serve` as a process on a queue fed by the emulator's own
//! ECR events through an EventBridge rule: the path a container deployment takes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::process::Command;

use harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_remediates_pushes_delivered_by_eventbridge_and_ignores_its_own_retags() {
    let repo = unique("worker");
    create_repository(&repo, false);
    let audit = AuditQueue::new(&repo).await;
    let sdk = sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let events = aws_sdk_eventbridge::Client::new(&sdk);
    let name = format!("{}-pushes", repo.replace('/', "-"));
    let queue = sqs
        .create_queue()
        .queue_name(&name)
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_owned();
    // Every image action in the repository, so the worker also sees the child
    // pushes and its own retags (the deployed rule filters those out earlier).
    let pattern = serde_json::json!({"source": ["aws.ecr"], "detail-type": ["ECR Image Action"], "detail": {"repository-name": [repo]}});
    events
        .put_rule()
        .name(&name)
        .event_pattern(pattern.to_string())
        .send()
        .await
        .unwrap();
    events
        .put_targets()
        .rule(&name)
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

    let pushed = push_buildx(&repo, "v7", &["linux/arm64"], "worker");

    let run = || {
        Command::new(env!("CARGO_BIN_EXE_ecr-remediator"))
            .args([
                "serve",
                "--queue-url",
                &queue,
                "--wait",
                "1",
                "--exit-when-idle",
                "--mode",
                "promote",
            ])
            .env("AWS_ENDPOINT_URL", &emulator().url)
            .env("AWS_REGION", REGION)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("ECR_REMEDIATOR_POLICY_FILE")
            .output()
            .unwrap()
    };
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
    let records = audit.records().await;
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
