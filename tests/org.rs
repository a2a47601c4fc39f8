//! The organisation-wide hub on the emulator: a push in a member account is
//! remediated there by the hub acting through the member role (as
//! `infra/member.yaml` creates it), audited with the member's account; an
//! account without the role gets an audited failure, and the others are
//! unaffected.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use ecr_remediator::Delivery;
use harness::*;
use serde_json::Value;

const EXTERNAL_ID: &str = "hub-secret-0123456789";
const MEMBER_A: &str = "222222222222";
const MEMBER_B: &str = "333333333333";

/// In `account`, as its Organizations admin role: the member role (unless
/// `with_role` is false), a repository, and a default buildx push of `v1`.
/// Returns (index, runnable).
fn member_push(account: &str, repo: &str, with_role: bool) -> (String, String) {
    let out = python_script(&format!(
        r#"
import boto3, json
from ecr_emulator.oci import build_buildx_layout
from ecr_emulator.push import push
sts = boto3.client("sts")
me = sts.get_caller_identity()
c = sts.assume_role(RoleArn="arn:aws:iam::{account}:role/OrganizationAccountAccessRole", RoleSessionName="setup")["Credentials"]
s = boto3.Session(aws_access_key_id=c["AccessKeyId"], aws_secret_access_key=c["SecretAccessKey"], aws_session_token=c["SessionToken"])
if {with_role}:
    trust = {{"Version": "2012-10-17", "Statement": [{{"Effect": "Allow", "Principal": {{"AWS": "arn:aws:iam::" + me["Account"] + ":root"}},
        "Action": "sts:AssumeRole", "Condition": {{"StringEquals": {{"sts:ExternalId": "{EXTERNAL_ID}", "aws:PrincipalArn": me["Arn"]}}}}}}]}}
    iam = s.client("iam")
    try:
        iam.create_role(RoleName="ecr-remediator-member", AssumeRolePolicyDocument=json.dumps(trust))
    except iam.exceptions.EntityAlreadyExistsException:
        pass
ecr = s.client("ecr")
ecr.create_repository(repositoryName="{repo}")
stored = push(ecr, "{repo}", build_buildx_layout(["linux/arm64"], salt="{repo}"), ["v1"])
print(json.dumps([stored[-1].digest, stored[0].digest]))
"#,
        with_role = if with_role { "True" } else { "False" },
    ));
    let v: (String, String) = serde_json::from_str(out.trim().lines().last().unwrap()).unwrap();
    v
}

/// Tags in `repo` of `account`, read through its admin role.
fn member_tags(account: &str, repo: &str) -> Value {
    let out = python_script(&format!(
        r#"
import boto3, json
c = boto3.client("sts").assume_role(RoleArn="arn:aws:iam::{account}:role/OrganizationAccountAccessRole", RoleSessionName="read")["Credentials"]
ecr = boto3.Session(aws_access_key_id=c["AccessKeyId"], aws_secret_access_key=c["SecretAccessKey"], aws_session_token=c["SessionToken"]).client("ecr")
print(json.dumps({{t: d["imageDigest"] for d in ecr.describe_images(repositoryName="{repo}")["imageDetails"] for t in d.get("imageTags", [])}}))
"#
    ));
    serde_json::from_str(out.trim().lines().last().unwrap()).unwrap()
}

/// The hub's handler (this account's, acting in members through their role) in `mode`.
async fn hub(
    mode: &str,
) -> ecr_remediator::Handler<ecr_remediator::aws::ecr::EcrRegistry, ecr_remediator::aws::audit::EventBridgeAudit> {
    handler(&[
        ("ECR_REMEDIATOR_MODE", mode),
        ("ECR_REMEDIATOR_MEMBER_ROLE", "ecr-remediator-member"),
        ("ECR_REMEDIATOR_EXTERNAL_ID", EXTERNAL_ID),
        ("ECR_REMEDIATOR_ACCOUNT_ID", ACCOUNT),
    ])
    .await
}

/// The CLI configured as the hub.
fn as_hub(mut command: std::process::Command) -> std::process::Command {
    command
        .env("ECR_REMEDIATOR_MEMBER_ROLE", "ecr-remediator-member")
        .env("ECR_REMEDIATOR_EXTERNAL_ID", EXTERNAL_ID)
        .env("ECR_REMEDIATOR_ACCOUNT_ID", ACCOUNT);
    command
}

fn member_event(account: &str, repo: &str, index: &str) -> String {
    let mut event: Value = serde_json::from_str(&push_event(repo, index, "v1", OCI_INDEX)).unwrap();
    event["account"] = account.into();
    event.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_remediates_in_the_member_account_and_one_account_failing_affects_no_other() {
    let repo_a = unique("org-a");
    let repo_b = unique("org-b");
    let (index_a, runnable_a) = member_push(MEMBER_A, &repo_a, true);
    let (index_b, _) = member_push(MEMBER_B, &repo_b, false);
    let audit_a = AuditQueue::new(&repo_a).await;
    let audit_b = AuditQueue::new(&repo_b).await;
    let hub = hub("promote").await;

    // B has no member role: an audited failure for B, not retried.
    let b = hub
        .handle_text(&member_event(MEMBER_B, &repo_b, &index_b), Delivery::default())
        .await;
    assert!(b.is_ok(), "not retryable, so the event is consumed: {b:?}");
    let records = audit_b.records().await;
    assert_eq!(records.len(), 1, "{records:#?}");
    assert_eq!(records[0]["outcome"], "failed");
    assert_eq!(records[0]["code"], "AccessDenied", "{:#}", records[0]);
    assert_eq!(records[0]["account"], MEMBER_B);
    assert_eq!(records[0]["final"], true);
    let error = records[0]["error"].as_str().unwrap();
    assert!(
        error.contains("arn:aws:iam::333333333333:role/ecr-remediator-member"),
        "{error}"
    );

    // A is remediated in A, through its role, and audited with A's account.
    let a = hub
        .handle_text(&member_event(MEMBER_A, &repo_a, &index_a), Delivery::default())
        .await
        .unwrap();
    assert_eq!(serde_json::to_value(&a).unwrap()["outcome"], "remediated", "{a:?}");
    let t = member_tags(MEMBER_A, &repo_a);
    assert_eq!(t["v1"], runnable_a.as_str(), "v1 promoted in the member account");
    assert_eq!(t["v1-index"], index_a.as_str());
    let records = audit_a.finals().await;
    assert_eq!(records.len(), 1, "{records:#?}");
    assert_eq!(records[0]["account"], MEMBER_A);
    // Nothing happened in the hub's own account.
    assert!(
        !list_repository_names().contains(&repo_a),
        "the member repository is not in the hub account"
    );
}

fn list_repository_names() -> Vec<String> {
    let out = python_script(
        "import boto3, json; print(json.dumps([r['repositoryName'] for r in boto3.client('ecr').describe_repositories()['repositories']]))",
    );
    serde_json::from_str(out.trim().lines().last().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_reaches_member_accounts_and_one_without_the_role_fails_alone() {
    let repo = unique("org-sweep");
    let (index, runnable) = member_push(MEMBER_A, &repo, true);
    let repo_b = unique("org-sweep-b");
    member_push(MEMBER_B, &repo_b, false);
    let out = as_hub(cli(&[
        "sweep",
        "--account",
        MEMBER_A,
        "--account",
        MEMBER_B,
        "--repository",
        &repo,
        "--mode",
        "promote",
        "--output",
        "json",
    ]))
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "B has no role: {stdout}\n{stderr}");
    assert!(
        stderr.contains(&format!("account {MEMBER_B}")) && stderr.contains("AccessDenied"),
        "{stderr}"
    );
    let records: Vec<Value> = stdout
        .lines()
        .filter(|l| l.starts_with("{\"schema\""))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 1, "{stdout}");
    assert_eq!(records[0]["account"], MEMBER_A);
    assert_eq!(records[0]["trigger"], "sweep");
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(summary["account"], MEMBER_A);
    assert_eq!(summary["summary"]["remediated"], 1);
    let t = member_tags(MEMBER_A, &repo);
    assert_eq!(t["v1"], runnable.as_str());
    assert_eq!(t["v1-index"], index.as_str());

    // --all-accounts: this account, then each listed member; B still fails alone.
    let out = as_hub(cli(&[
        "sweep",
        "--all-accounts",
        "--repository",
        &repo,
        "--output",
        "json",
    ]))
    .env("ECR_REMEDIATOR_MEMBER_ACCOUNTS", format!("{MEMBER_A}, {MEMBER_B}"))
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains(&format!("account {MEMBER_B}")), "{stderr}");
    let summaries: Vec<Value> = stdout
        .lines()
        .filter(|l| l.starts_with("{\"account\"") || l.starts_with("{\"summary\""))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(summaries.len(), 2, "this account and A: {stdout}");
    let out = as_hub(cli(&["sweep", "--all-accounts"]))
        .env("ECR_REMEDIATOR_MEMBER_ACCOUNTS", "1234")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ECR_REMEDIATOR_MEMBER_ACCOUNTS"));
}

/// Sets the resource tag `ecr-remediator:mode` of `repo` in `account`, as its owner would.
fn tag_member_repository(account: &str, repo: &str, mode: &str) {
    python_script(&format!(
        r#"
import boto3
c = boto3.client("sts").assume_role(RoleArn="arn:aws:iam::{account}:role/OrganizationAccountAccessRole", RoleSessionName="owner")["Credentials"]
ecr = boto3.Session(aws_access_key_id=c["AccessKeyId"], aws_secret_access_key=c["SecretAccessKey"], aws_session_token=c["SessionToken"]).client("ecr")
arn = ecr.describe_repositories(repositoryNames=["{repo}"])["repositories"][0]["repositoryArn"]
ecr.tag_resource(resourceArn=arn, tags=[{{"Key": "ecr-remediator:mode", "Value": "{mode}"}}])
"#
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_repository_tag_picks_its_mode_or_opts_it_out() {
    let promoted = unique("org-tag-promote");
    let opted_out = unique("org-tag-off");
    let (index, runnable) = member_push(MEMBER_A, &promoted, true);
    let (index_off, _) = member_push(MEMBER_A, &opted_out, true);
    tag_member_repository(MEMBER_A, &promoted, "promote");
    tag_member_repository(MEMBER_A, &opted_out, "off");
    let audit = AuditQueue::new(&promoted).await;
    let audit_off = AuditQueue::new(&opted_out).await;
    // The hub's rule says tag mode; each repository's owner chose otherwise.
    let hub = hub("tag").await;
    let emu = emulator();
    emu.clear_calls(&promoted);

    for _ in 0..2 {
        hub.handle_text(&member_event(MEMBER_A, &promoted, &index), Delivery::default())
            .await
            .unwrap();
    }
    let t = member_tags(MEMBER_A, &promoted);
    assert_eq!(t["v1"], runnable.as_str(), "promoted, as the repository's tag asked");
    let records = audit.finals().await;
    assert_eq!(records.len(), 2, "{records:#?}");
    assert_eq!(records[0]["outcome"], "remediated", "{:#}", records[0]);
    assert_eq!(records[0]["policy"]["mode"], "promote");
    assert_eq!(records[0]["policy"]["repository_tag"], "promote");
    assert_eq!(
        records[0]["policy"]["source"],
        "no rule matched: the default policy; repository tag ecr-remediator:mode=promote chose the mode"
    );
    assert_eq!(records[0]["account"], MEMBER_A);
    let calls = emu.calls(&promoted);
    assert_eq!(
        calls.get("ecr:ListTagsForResource").copied(),
        Some(1),
        "read once with the member's credentials, then cached: {calls:?}"
    );
    assert_eq!(
        calls.get("ecr:DescribeRepositories"),
        None,
        "the member's account is known, so the repository ARN is built: {calls:?}"
    );

    hub.handle_text(&member_event(MEMBER_A, &opted_out, &index_off), Delivery::default())
        .await
        .unwrap();
    let records = audit_off.records().await;
    assert_eq!(records.len(), 1, "{records:#?}");
    assert_eq!(records[0]["outcome"], "skipped");
    assert_eq!(records[0]["code"], "opted_out", "{:#}", records[0]);
    assert_eq!(
        member_tags(MEMBER_A, &opted_out)["v1"],
        index_off.as_str(),
        "left alone"
    );

    // A sweep of the member account leaves the opted-out repository unlisted, and says so.
    let out = as_hub(cli(&[
        "sweep",
        "--account",
        MEMBER_A,
        "--repository",
        &opted_out,
        "--repository",
        &promoted,
        "--output",
        "json",
    ]))
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let left = &summary["summary"]["repositories_left_alone"];
    assert!(
        left[opted_out.as_str()]
            .as_str()
            .unwrap()
            .contains("ecr-remediator:mode=off"),
        "{summary:#}"
    );
    assert_eq!(
        summary["summary"]["repositories_scanned"], 1,
        "only the promoted one is listed"
    );
    assert_eq!(member_tags(MEMBER_A, &opted_out)["v1"], index_off.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_sweep_of_an_account_the_hub_does_not_list_is_refused_and_recorded() {
    // 444444444444 has the member role but is not in the hub's list.
    let unlisted = "444444444444";
    let repo = unique("not-listed");
    let (index, _) = member_push(unlisted, &repo, true);
    let queue = queue_with_message(
        &format!("{}-hub", repo.replace('/', "-")),
        &format!(r#"{{"ecr-remediator":"sweep","account":"{unlisted}"}}"#),
    )
    .await;
    let sqs = aws_sdk_sqs::Client::new(&sdk_config().await);
    let out = as_hub(serve_until_idle(&queue, &[]))
        .env("ECR_REMEDIATOR_MEMBER_ACCOUNTS", MEMBER_A)
        .env("ECR_REMEDIATOR_SWEEP_PREFIXES", &repo)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{log}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        member_tags(unlisted, &repo)["v1"],
        index,
        "nothing promoted in an unlisted account"
    );
    let record: Value = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|v| v.get("audit_record").cloned())
        .expect("the refusal is recorded");
    assert_eq!(record["outcome"], "skipped", "{record}");
    assert_eq!(record["code"], "account_not_listed", "{record}");
    assert_eq!(record["account"], unlisted);
    // Handled (refused), not left for redelivery.
    let left = sqs
        .get_queue_attributes()
        .queue_url(&queue)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await
        .unwrap();
    let count = |k| {
        left.attributes()
            .and_then(|a| a.get(&k))
            .map_or(0, |v| v.parse::<u32>().unwrap())
    };
    assert_eq!(
        count(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            + count(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_the_lambda_handler_the_schedule_sweeps_listed_accounts_and_refuses_the_others() {
    let repo = unique("lambda-hub");
    let (_, runnable) = member_push(MEMBER_A, &repo, true);
    // 555555555555 has the member role but is not in the hub's list.
    let unlisted = "555555555555";
    let repo_u = unique("lambda-hub-unlisted");
    let (index_u, _) = member_push(unlisted, &repo_u, true);
    let sqs = aws_sdk_sqs::Client::new(&sdk_config().await);
    let queue = create_queue(&sqs, &format!("{}-hub", repo.replace('/', "-"))).await;
    let mut hub = handler(&[
        ("ECR_REMEDIATOR_MODE", "promote"),
        ("ECR_REMEDIATOR_MEMBER_ROLE", "ecr-remediator-member"),
        ("ECR_REMEDIATOR_EXTERNAL_ID", EXTERNAL_ID),
        ("ECR_REMEDIATOR_ACCOUNT_ID", ACCOUNT),
        ("ECR_REMEDIATOR_MEMBER_ACCOUNTS", MEMBER_A),
    ])
    .await;
    sweeping_into(&mut hub, &queue, &[&repo, &repo_u]).await;

    // The schedule invokes the function directly: one sweep request per listed account.
    let fanned = hub
        .handle_lambda(serde_json::json!({"ecr-remediator": "sweep"}), None, Some("schedule"))
        .await
        .unwrap();
    assert_eq!(fanned["result"], "fanned_out", "{fanned}");
    assert_eq!(fanned["accounts"], serde_json::json!([null, MEMBER_A]));
    // Anyone who may send to the queue asks for an unlisted account, by sweep and by image.
    for body in [
        format!(r#"{{"ecr-remediator":"sweep","account":"{unlisted}"}}"#),
        format!(
            r#"{{"ecr-remediator":"remediate","account":"{unlisted}","repository":"{repo_u}","digest":"{index_u}","tag":"v1"}}"#
        ),
    ] {
        sqs.send_message()
            .queue_url(&queue)
            .message_body(body)
            .send()
            .await
            .unwrap();
    }
    let responses = lambda_until_idle(&hub, &queue).await;
    assert!(
        responses
            .iter()
            .all(|r| r["batchItemFailures"].as_array().is_some_and(Vec::is_empty)),
        "{responses:#?}"
    );
    assert_eq!(
        member_tags(MEMBER_A, &repo)["v1"],
        runnable.as_str(),
        "the listed member's image is promoted by the request its sweep enqueued"
    );
    assert_eq!(
        member_tags(unlisted, &repo_u)["v1"],
        index_u.as_str(),
        "nothing is done in an unlisted account"
    );
}
