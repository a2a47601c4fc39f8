//! Deletions gated on what uses an image outside the registry, against the
//! emulator's ECR, ECS and Lambda through the real SDK and the real binary:
//! an ECS service that pinned the index digest, a Lambda function, a recent
//! pull, a scan that is denied, and the grace period after a push.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use ecr_remediator::Digest;
use ecr_remediator::engine::registry::Registry;
use harness::*;
use serde_json::Value;

const KEEP_OFF: [(&str, &str); 1] = [("ECR_REMEDIATOR_KEEP_TAG", "false")];
/// Promote and delete at once (no grace period), as an operator would ask for a test.
const DELETE_NOW: [&str; 5] = ["--mode", "promote", "--delete-orphans", "--grace-period", "0s"];

fn uri(repo: &str, reference: &str) -> String {
    let sep = if reference.starts_with("sha256:") { "@" } else { ":" };
    format!("{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{repo}{sep}{reference}")
}

fn remediate(repo: &str, p: &Pushed, extra: &[&str]) -> Value {
    remediate_record(repo, &p.index, "v1", extra, &KEEP_OFF)
}

fn sweep(repo: &str) -> (Vec<Value>, Value) {
    let mut args = vec!["sweep", "--repository", repo, "--output", "json", "--min-age", "0s"];
    args.extend_from_slice(&DELETE_NOW);
    let (code, out, err) = run_cli(&args, &KEEP_OFF);
    assert_eq!(code, 0, "{out}\n{err}");
    sweep_json(&out)
}

/// An ECS service (no task running: nothing pulls) whose deployment
/// resolved `image`; returns the service's ARN.
fn ecs_service(name: &str, image: &str) -> String {
    python_script(&format!(
        "import boto3\n\
         ecs = boto3.client('ecs')\n\
         ecs.create_cluster(clusterName='{name}')\n\
         td = ecs.register_task_definition(family='{name}', containerDefinitions=[{{'name': 'app', 'image': '{image}', 'memory': 128}}])\n\
         s = ecs.create_service(cluster='{name}', serviceName='{name}', taskDefinition=td['taskDefinition']['taskDefinitionArn'], desiredCount=0)\n\
         print(s['service']['serviceArn'])"
    ))
    .trim()
    .to_owned()
}

/// A Lambda function from `image`; returns its ARN.
fn lambda_function(name: &str, image: &str) -> String {
    python_script(&format!(
        "import boto3, json\n\
         iam = boto3.client('iam')\n\
         trust = json.dumps({{'Version': '2012-10-17', 'Statement': [{{'Effect': 'Allow', 'Principal': {{'Service': 'lambda.amazonaws.com'}}, 'Action': 'sts:AssumeRole'}}]}})\n\
         role = iam.create_role(RoleName='{name}', AssumeRolePolicyDocument=trust)['Role']['Arn']\n\
         f = boto3.client('lambda').create_function(FunctionName='{name}', Role=role, PackageType='Image', Code={{'ImageUri': '{image}'}})\n\
         print(f['FunctionArn'])"
    ))
    .trim()
    .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_a_workload_uses_or_recently_pulled_is_deleted_the_grace_period_defers_and_a_failed_scan_deletes_nothing()
 {
    // 1. An ECS service deployed while v1 was the index: it pinned the
    //    index digest. The push is promoted (the tag deploys) but the index
    //    is kept, by the per-push path and by the sweep.
    let repo = unique("in-use-ecs");
    create_repository(&repo, false);
    let p = push_buildx(&repo, "v1", &["linux/arm64"], "in-use-ecs");
    let service = ecs_service(&repo.replace('/', "-"), &uri(&repo, "v1"));
    let r = remediate(&repo, &p, &DELETE_NOW);
    assert_eq!(r["outcome"], "remediated", "{r}");
    assert_eq!(tags(&repo).await["v1"], p.runnable(), "the tag still deploys");
    let kept = skip_of(&r, &p.index).expect("the index is kept");
    assert_eq!(kept["reason"], "in_use", "{r}");
    assert_eq!(kept["by"][0]["kind"], "ecs_service", "{r}");
    assert_eq!(kept["by"][0]["name"], service.as_str(), "{r}");
    assert_eq!(r["deleted"], 0, "{r}");
    let (records, summary) = sweep(&repo);
    assert_eq!(summary["manifests_deleted"], 0, "{summary}");
    assert!(
        summary["changes_not_made"]["in_use"].as_u64().unwrap_or(0) >= 1,
        "the summary counts the deletion not made, by reason: {summary}"
    );
    assert!(present(&list(&repo).await, &p.index), "{records:?}");
    assert!(
        records
            .iter()
            .any(|r| r["skipped"].as_array().unwrap().iter().any(|s| s["reason"] == "in_use")),
        "{records:?}"
    );

    // 2. A leftover pulled an hour ago (a node pulling by digest) is kept
    //    by the sweep; the same leftover unpulled goes.
    let pulled = unique("in-use-pulled");
    create_repository(&pulled, false);
    let p = push_buildx(&pulled, "v1", &["linux/arm64"], "in-use-pulled");
    let r = remediate(&pulled, &p, &["--mode", "promote"]);
    assert_eq!(r["outcome"], "remediated", "{r}");
    emulator().control(
        "POST",
        "pull",
        Some(serde_json::json!({"repository": pulled, "digest": p.index, "seconds_ago": 3600})),
    );
    let (records, summary) = sweep(&pulled);
    assert_eq!(summary["manifests_deleted"], 0, "{summary}");
    assert!(present(&list(&pulled).await, &p.index));
    let record = records.iter().find(|r| r["index_digest"] == p.index).unwrap();
    assert_eq!(
        skip_of(record, &p.index).unwrap()["reason"],
        "recently_pulled",
        "{record}"
    );
    let unpulled = unique("in-use-unpulled");
    create_repository(&unpulled, false);
    let q = push_buildx(&unpulled, "v1", &["linux/arm64"], "in-use-unpulled");
    remediate(&unpulled, &q, &["--mode", "promote"]);
    let (_, summary) = sweep(&unpulled);
    assert_eq!(summary["manifests_deleted"], 2, "the control case: {summary}");

    // 3. The scan sees every kind of workload by digest, through the SDK.
    let scanned = unique("in-use-scan");
    create_repository(&scanned, false);
    let s = push_buildx(&scanned, "v1", &["linux/arm64"], "in-use-scan");
    let function = lambda_function(&scanned.replace('/', "-"), &uri(&scanned, s.runnable()));
    let pinned = ecs_service(
        &format!("{}-pinned", scanned.replace('/', "-")),
        &uri(&scanned, &s.index),
    );
    let h = handler(&[]).await;
    let found = h.registry.images_in_use(ecr_remediator::now_ms()).await.unwrap();
    let users = |d: &str| {
        found
            .users(&Digest::parse(d).unwrap())
            .iter()
            .map(|w| (w.kind.to_string(), w.name.clone()))
            .collect::<Vec<_>>()
    };
    assert!(
        users(s.runnable())
            .iter()
            .any(|(k, n)| k == "lambda_function" && n.starts_with(&function)),
        "{:?}",
        users(s.runnable())
    );
    let index_users = users(&s.index);
    assert!(
        index_users.iter().any(|(k, n)| k == "ecs_service" && *n == pinned),
        "{index_users:?}"
    );
    assert!(
        index_users.iter().any(|(k, _)| k == "ecs_task_definition"),
        "{index_users:?}"
    );
    assert!(users(s.attestation()).is_empty());

    // 4. The grace period (its follow-up scans too).
    the_grace_period_defers_the_deletions_to_a_follow_up_that_runs_every_check().await;

    // 5. Run last (the fault is global to this test binary's emulator): a
    //    scan that is denied deletes nothing, and the record says why.
    let denied = unique("in-use-denied");
    create_repository(&denied, false);
    let d = push_buildx(&denied, "v1", &["linux/arm64"], "in-use-denied");
    emulator().control(
        "POST",
        "faults",
        Some(serde_json::json!({"operation": "ecs:ListClusters", "error": "AccessDeniedException", "rate": 1.0})),
    );
    let r = remediate(&denied, &d, &DELETE_NOW);
    emulator().control(
        "POST",
        "faults",
        Some(serde_json::json!({"operation": "ecs:ListClusters"})),
    );
    assert_eq!(r["outcome"], "remediated", "the tag still moves: {r}");
    assert_eq!(r["deleted"], 0, "{r}");
    let why = skip_of(&r, &d.index).unwrap();
    assert_eq!(why["reason"], "in_use_unknown", "{r}");
    assert!(why["why"].as_str().unwrap().contains("AccessDenied"), "{r}");
    let listing = list(&denied).await;
    assert!(present(&listing, &d.index) && present(&listing, d.attestation()));
}

/// Called before the denied scan of the test above: the fault it injects is
/// global to this binary's emulator, and the follow-up here scans.
async fn the_grace_period_defers_the_deletions_to_a_follow_up_that_runs_every_check() {
    let repo = unique("grace");
    create_repository(&repo, false);
    let queue_name = format!("{}-pushes", repo.replace('/', "-"));
    let pattern = serde_json::json!({"source": ["aws.ecr"], "detail-type": ["ECR Image Action"],
        "detail": {"repository-name": [repo]}});
    let queue = rule_to_queue(&queue_name, &pattern).await;
    let audit = AuditQueue::new(&repo).await;
    let p = push_buildx(&repo, "v1", &["linux/arm64"], "grace");

    // The push: promoted at once, deletions deferred by 6 s.
    let serve = |grace: &str| {
        let out = serve_until_idle(&queue, &["--delete-orphans", "--grace-period", grace])
            .env("ECR_REMEDIATOR_KEEP_TAG", "false")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    serve("6s");
    assert_eq!(tags(&repo).await["v1"], p.runnable());
    let listing = list(&repo).await;
    assert!(present(&listing, &p.index) && present(&listing, p.attestation()));
    let records = audit.records().await;
    let first = records.iter().find(|r| r["outcome"] == "remediated").unwrap();
    assert_eq!(first["deleted"], 0, "{first}");
    assert!(first["deferred_until"].is_string(), "{first}");
    let deferred: Vec<&Value> = first["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["reason"] == "grace_period")
        .map(|s| &s["action"]["digest"])
        .collect();
    assert_eq!(deferred, [&p.index, p.attestation()], "{first}");
    assert!(
        first["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str().unwrap().starts_with("follow-up enqueued")),
        "{first}"
    );

    // The follow-up, delivered after the delay: every check runs again and
    // the leftovers go.
    tokio::time::sleep(std::time::Duration::from_secs(7)).await;
    serve("6s");
    let listing = list(&repo).await;
    assert!(
        !present(&listing, &p.index) && !present(&listing, p.attestation()),
        "{listing:?}"
    );
    assert!(present(&listing, p.runnable()));
    let records = audit.records().await;
    let follow_up = records
        .iter()
        .find(|r| r["trigger"] == "follow_up" && r["final"] == true)
        .unwrap_or_else(|| panic!("{records:?}"));
    assert_eq!(follow_up["deleted"], 2, "{follow_up}");
    // Its own event id, naming the push it follows: the trail links the two.
    assert_eq!(
        follow_up["event_id"].as_str().unwrap(),
        format!("{}/follow-up-1", first["event_id"].as_str().unwrap()),
    );
}
