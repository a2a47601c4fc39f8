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
    let repo = unique("replicated");
    create_repository(&repo, false);
    python_script(&format!(
        "import boto3; boto3.client('ecr').put_replication_configuration(replicationConfiguration={{'rules': [\
         {{'destinations': [{{'region': '{WEST}', 'registryId': '{ACCOUNT}'}}], \
           'repositoryFilters': [{{'filter': '{repo}', 'filterType': 'PREFIX_MATCH'}}]}}]}})"
    ));
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
