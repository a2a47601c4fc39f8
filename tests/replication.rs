//! Replicated repositories (issue 22), against the emulator: ECR's
//! replication copies a push into another region, whose registry receives
//! `ECR Replication Action` events instead of PUSH. A deployment in the
//! destination region remediates the replicated index there, as a push; the
//! source's own remediation, replicated too, is not handled a second time;
//! a deployment never acts on an event from another region's registry.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use aws_config::Region;
use harness::*;
use serde_json::{Value, json};

const WEST: &str = "us-west-2";

/// The replication configuration is registry-wide: one test at a time sets it.
static REGISTRY_CONFIG: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Replicates repositories named `prefix…` of the test registry into `WEST`.
fn replicate_to_west(prefix: &str) {
    python_script(&format!(
        "import boto3; boto3.client('ecr').put_replication_configuration(replicationConfiguration={{'rules': [\
         {{'destinations': [{{'region': '{WEST}', 'registryId': '{ACCOUNT}'}}], \
           'repositoryFilters': [{{'filter': '{prefix}', 'filterType': 'PREFIX_MATCH'}}]}}]}})"
    ));
}

fn no_replication() {
    python_script(
        "import boto3; boto3.client('ecr').put_replication_configuration(replicationConfiguration={'rules': []})",
    );
}

/// The sweep of a source reports how its replicas drifted: ECR replicates
/// the promotion but not the deletions, so the replica keeps the index and
/// the attestation the source deleted; a tag moved in the replica alone is
/// reported too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_reports_replicas_that_drifted_from_their_source() {
    let _one = REGISTRY_CONFIG.lock().await;
    let repo = unique("drift");
    create_repository(&repo, false);
    replicate_to_west(&repo);
    let v1 = push_buildx(&repo, "v1", &["linux/arm64"], "drift-1");
    let v2 = push_buildx(&repo, "v2", &["linux/arm64"], "drift-2");
    let sweep = |extra: &[&str]| {
        let mut args = vec!["sweep", "--repository", repo.as_str(), "--output", "json"];
        args.extend_from_slice(extra);
        run_cli(&args, &[("ECR_REMEDIATOR_KEEP_TAG", "false")])
    };
    // In step: nothing to report.
    let (code, out, err) = sweep(&["--dry-run"]);
    assert_eq!(code, 0, "{err}");
    let (_, summary) = sweep_json(&out);
    assert_eq!(summary["replication_drift"], json!([]), "{summary}");

    // The source promotes v1 and deletes its index and attestation; the
    // replica gets the promotion, keeps what was deleted.
    let (code, out, err) = sweep(&[
        "--tag",
        "v1",
        "--mode",
        "promote",
        "--delete-orphans",
        "--grace-period",
        "0s",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(tags(&repo).await["v1"], v1.runnable());
    assert_eq!(
        west_tags(&repo).await["v1"],
        v1.runnable(),
        "the promotion is replicated"
    );
    // v2 moved in the replica alone.
    python_script(&format!(
        "import boto3; e = boto3.client('ecr', region_name='{WEST}'); \
         m = e.batch_get_image(repositoryName='{repo}', imageIds=[{{'imageDigest': '{}'}}])['images'][0]['imageManifest']; \
         e.put_image(repositoryName='{repo}', imageManifest=m, imageTag='v2')",
        v2.runnable()
    ));

    let (code, out, err) = sweep(&["--dry-run"]);
    assert_eq!(code, 0, "a drifted replica is reported, not a failure: {err}");
    let (_, summary) = sweep_json(&out);
    let reports = summary["replication_drift"].as_array().unwrap();
    assert_eq!(reports.len(), 1, "{summary}");
    let r = &reports[0];
    assert_eq!(r["destination"], json!({"account": ACCOUNT, "region": WEST}));
    let drift = &r["drift"];
    assert_eq!(drift["only_in_destination"], 2, "the index and the attestation: {r}");
    let kept: Vec<&str> = drift["only_in_destination_examples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert!(
        kept.contains(&v1.index.as_str()) && kept.contains(&v1.attestation()),
        "{r}"
    );
    assert_eq!(drift["tags_differ"], 1, "{r}");
    assert_eq!(drift["tag_examples"][0]["tag"], "v2");
    assert_eq!(drift["tag_examples"][0]["destination"], v2.runnable());

    // The table says it in a line a person reads.
    let (_, table, _) = run_cli(&["sweep", "--repository", repo.as_str(), "--dry-run"], &[]);
    let line = table
        .lines()
        .find(|l| l.starts_with("replica drift"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        line.contains(WEST) && line.contains("1 tag(s) differ (v2)") && line.contains("2 manifest(s)"),
        "{line}"
    );
    no_replication();
}

async fn west() -> aws_config::SdkConfig {
    sdk_config().await.into_builder().region(Region::new(WEST)).build()
}

/// The tags of `repository` in the destination region.
async fn west_tags(repository: &str) -> std::collections::BTreeMap<String, String> {
    let ecr = aws_sdk_ecr::Client::new(&west().await);
    let reply = ecr.describe_images().repository_name(repository).send().await.unwrap();
    reply
        .image_details()
        .iter()
        .flat_map(|d| {
            d.image_tags()
                .iter()
                .map(|t| (t.clone(), d.image_digest().unwrap().to_owned()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A queue in the destination region fed by the template's replication rule pattern.
async fn west_queue(name: &str, repository: &str) -> String {
    let config = west().await;
    let sqs = aws_sdk_sqs::Client::new(&config);
    let url = sqs
        .create_queue()
        .queue_name(name)
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_owned();
    let events = aws_sdk_eventbridge::Client::new(&config);
    let pattern = json!({"source": ["aws.ecr"], "detail-type": ["ECR Replication Action"],
        "detail": {"action-type": ["REPLICATE"], "result": ["SUCCESS"], "image-tag": [{"anything-but": [""]}],
                   "repository-name": [{"prefix": repository}]}});
    events
        .put_rule()
        .name(name)
        .event_pattern(pattern.to_string())
        .send()
        .await
        .unwrap();
    events
        .put_targets()
        .rule(name)
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("q")
                .arn(format!("arn:aws:sqs:{WEST}:{ACCOUNT}:{name}"))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    url
}

/// Runs a `serve` worker in `region` over `queue` until it is idle; its records.
fn serve_in(region: &str, queue: &str) -> Vec<Value> {
    let out = serve_until_idle(queue, &[]).env("AWS_REGION", region).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v.get("audit_record").cloned())
        .filter(|r| r["final"] == true)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_index_is_remediated_in_the_destination_region() {
    let _one = REGISTRY_CONFIG.lock().await;
    let repo = unique("replicated");
    create_repository(&repo, false);
    replicate_to_west(&repo);
    let name = repo.replace('/', "-");
    let west_queue = west_queue(&format!("{name}-west"), &repo).await;
    let east_queue = rule_to_queue(
        &format!("{name}-east"),
        &json!({"source": ["aws.ecr"], "detail-type": ["ECR Image Action"],
                "detail": {"action-type": ["PUSH"], "repository-name": [repo.as_str()]}}),
    )
    .await;

    let pushed = push_buildx(&repo, "v1", &["linux/arm64"], "replicated");
    assert_eq!(west_tags(&repo).await["v1"], pushed.index, "replicated as pushed");

    // The destination's deployment handles the replicated index first (a
    // source region without a deployment, or one running behind): it is
    // remediated there, as a push.
    let first = serve_in(WEST, &west_queue);
    let kinds = |records: &[Value]| -> Vec<String> {
        records
            .iter()
            .map(|r| format!("{} {} {}", r["tag"], r["outcome"], r["code"]))
            .collect()
    };
    let index_record = first
        .iter()
        .find(|r| r["index_digest"] == pushed.index.as_str() && r["tag"] == "v1")
        .unwrap_or_else(|| panic!("no record of the replicated index: {:?}", kinds(&first)));
    assert_eq!(index_record["outcome"], "remediated", "{index_record}");
    assert_eq!(index_record["trigger"], "replication");
    assert_eq!(index_record["region"], WEST);
    assert_eq!(
        index_record["replicated_from"],
        json!({"account": ACCOUNT, "region": REGION})
    );
    assert_eq!(index_record["deployability"][0]["verdict"], "yes", "{index_record}");
    let after = west_tags(&repo).await;
    assert_eq!(
        after["v1"],
        pushed.runnable(),
        "deployable by its tag in the destination"
    );
    assert_eq!(after["v1-index"], pushed.index, "provenance kept there too");
    assert_eq!(
        tags(&repo).await["v1"],
        pushed.index,
        "the source registry is not the destination's business"
    );

    // The source region's deployment remediates the push there; ECR
    // replicates its writes (the keep tag, the moved tag) into the
    // destination, whose deployment then changes nothing more.
    let east = serve_in(REGION, &east_queue);
    assert!(
        east.iter()
            .any(|r| r["outcome"] == "remediated" && r["trigger"] == "push"),
        "{east:?}"
    );
    assert_eq!(tags(&repo).await["v1"], pushed.runnable());
    let again = serve_in(WEST, &west_queue);
    assert!(
        again
            .iter()
            .all(|r| r["outcome"] != "remediated" && r["outcome"] != "failed"),
        "the source's replicated writes are not handled as new pushes: {:?}",
        kinds(&again)
    );
    // The source's promotion, replicated as a tagged image manifest: not an index.
    assert!(
        again
            .iter()
            .any(|r| r["index_digest"] == pushed.runnable() && r["code"] == "not_an_index"),
        "{:?}",
        kinds(&again)
    );
    assert_eq!(
        west_tags(&repo).await,
        after,
        "the destination as its own handling left it"
    );

    // A replication event forwarded to a deployment in another region is
    // refused there, nothing read or written.
    let stray = json!({
        "version": "0", "id": "stray-1", "detail-type": "ECR Replication Action", "source": "aws.ecr",
        "account": ACCOUNT, "time": "2026-12-04T12:00:00Z", "region": WEST, "resources": [],
        "detail": {"result": "SUCCESS", "repository-name": repo, "image-digest": pushed.index,
                   "source-account": ACCOUNT, "action-type": "REPLICATE", "source-region": REGION, "image-tag": "v1"}
    });
    let queue = queue_with_message(&format!("{name}-stray"), &stray.to_string()).await;
    emulator().clear_calls(&repo);
    let refused = serve_in(REGION, &queue);
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["outcome"], "skipped");
    assert_eq!(refused[0]["code"], "other_region");
    assert!(
        emulator().calls(&repo).is_empty(),
        "nothing read: {:?}",
        emulator().calls(&repo)
    );
    python_script(
        "import boto3; boto3.client('ecr').put_replication_configuration(replicationConfiguration={'rules': []})",
    );
}
