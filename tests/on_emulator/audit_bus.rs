//! Issue 36, item 6, the forged half: who may put a record on the audit
//! trail. The local stack's audit bus carries the policy `infra/template.yaml`
//! gives the created bus (only the function's role and `AuditWriterArns`
//! write; here the test credentials stand for the function).

use serde_json::{Value, json};

use crate::harness::*;

/// The local stack `name` (`ecr_emulator.local_stack`): (audit bus ARN, audit log group).
fn guarded_stack(name: &str, prefix: &str) -> (String, String) {
    let out = python_script(&format!(
        "import json, os, boto3\n\
         from ecr_emulator.local_stack import create\n\
         s = create(boto3.Session(region_name='us-east-1'), os.environ['AWS_ENDPOINT_URL'], '{name}', ['{prefix}'])\n\
         bus = boto3.client('events', endpoint_url=os.environ['AWS_ENDPOINT_URL']).describe_event_bus(Name='{name}-audit')\n\
         print(json.dumps([bus['Arn'], s['log_group']]))"
    ));
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    (v[0].as_str().unwrap().to_owned(), v[1].as_str().unwrap().to_owned())
}

/// Credentials of a new role `role` of the account, one whose own policy
/// allows `events:PutEvents` on `*` (as a broad operator or CI role may):
/// (access key id, secret, session token).
fn another_role(role: &str) -> (String, String, String) {
    let out = python_script(&format!(
        "import json, os, boto3\n\
         url = os.environ['AWS_ENDPOINT_URL']\n\
         iam = boto3.client('iam', endpoint_url=url)\n\
         trust = {{'Version': '2012-10-17', 'Statement': [{{'Effect': 'Allow', 'Principal': {{'AWS': 'arn:aws:iam::123456789012:root'}}, 'Action': 'sts:AssumeRole'}}]}}\n\
         arn = iam.create_role(RoleName='{role}', AssumeRolePolicyDocument=json.dumps(trust))['Role']['Arn']\n\
         allow = {{'Version': '2012-10-17', 'Statement': [{{'Effect': 'Allow', 'Action': 'events:PutEvents', 'Resource': '*'}}]}}\n\
         iam.put_role_policy(RoleName='{role}', PolicyName='all-events', PolicyDocument=json.dumps(allow))\n\
         c = boto3.client('sts', endpoint_url=url).assume_role(RoleArn=arn, RoleSessionName='other')['Credentials']\n\
         print(json.dumps([c['AccessKeyId'], c['SecretAccessKey'], c['SessionToken']]))"
    ));
    let v: Vec<String> = serde_json::from_str(out.trim()).unwrap();
    (v[0].clone(), v[1].clone(), v[2].clone())
}

/// The environment that makes a process act with `creds`.
fn as_role(creds: &(String, String, String)) -> [(&'static str, &str); 3] {
    [
        ("AWS_ACCESS_KEY_ID", &creds.0),
        ("AWS_SECRET_ACCESS_KEY", &creds.1),
        ("AWS_SESSION_TOKEN", &creds.2),
    ]
}

/// `PutEvents` of `detail` as an audit record on `bus`, sent with `creds`;
/// returns EventBridge's reply.
fn put_record_as(creds: &(String, String, String), bus: &str, detail: &Value) -> Value {
    let script = format!(
        "import json, os, boto3\n\
         entry = {{'Source': 'ecr-remediator', 'DetailType': 'ECR Remediation Record', 'Detail': os.environ['FORGED'], 'EventBusName': '{bus}'}}\n\
         events = boto3.client('events', endpoint_url=os.environ['AWS_ENDPOINT_URL'])\n\
         print(json.dumps(events.put_events(Entries=[entry])))"
    );
    let forged = detail.to_string();
    let mut env = as_role(creds).to_vec();
    env.push(("FORGED", &forged));
    let out = python_script_with(&script, &env);
    serde_json::from_str(out.trim()).unwrap()
}

/// A checkpoint forged on the audit bus (as a delivery that never ran,
/// listing a deletion and a tag write) is refused there, so the redelivery
/// it was aimed at claims nothing: before the bus had its policy, that
/// redelivery recorded the forged deletion as `applied`, counted in
/// `deleted` and `reclaimed_bytes`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_forged_on_the_audit_bus_is_refused_and_never_claimed() {
    let repo = unique("forged/app");
    let stack = unique("forged").replace('/', "-");
    create_repository(&repo, false);
    let (bus, group) = guarded_stack(&stack, &repo);
    let h = handler(&[
        ("ECR_REMEDIATOR_MODE", "promote"),
        ("ECR_REMEDIATOR_AUDIT_BUS", &bus),
        ("ECR_REMEDIATOR_AUDIT_LOG_GROUP", &group),
    ])
    .await;
    let pushed = push_buildx(&repo, "v1", &["linux/arm64"], &repo);
    let event = push_event(&repo, &pushed.index, "v1", OCI_INDEX);
    h.handle_text(&event, delivered(1, "lambda-1")).await.unwrap();
    let history = wait_for_history(&group, &pushed.index, 2).await;
    let mut forged = history
        .iter()
        .find(|r| r["outcome"] == "in_progress")
        .unwrap_or_else(|| panic!("the genuine checkpoint: {history:#?}"))
        .clone();
    forged["request_id"] = json!("lambda-forged");
    forged["actions"].as_array_mut().unwrap().push(
        json!({"action": "delete", "digest": format!("sha256:{}", "ab".repeat(32)),
                     "role": "attestation", "outcome": "pending", "bytes": 123_456}),
    );

    let forger = another_role(&format!("{stack}-forger"));
    let reply = put_record_as(&forger, &bus, &forged);
    assert_eq!(reply["FailedEntryCount"], 1, "{reply:#}");
    assert_eq!(reply["Entries"][0]["ErrorCode"], "AccessDeniedException", "{reply:#}");

    h.handle_text(&event, delivered(2, "lambda-2")).await.unwrap();
    let history = wait_for_history(&group, &pushed.index, 3).await;
    assert_eq!(history.len(), 3, "the service's records only: {history:#?}");
    let last = history.last().unwrap();
    assert_eq!(last["request_id"], "lambda-2", "{last:#}");
    assert_eq!(last["deleted"], 0, "{last:#}");
    assert_eq!(last["reclaimed_bytes"], 0, "{last:#}");
    let claimed: Vec<&Value> = last["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| !a["earlier_attempt"].is_null())
        .collect();
    assert!(claimed.is_empty(), "nothing claimed from a forged checkpoint: {last:#}");
}

/// The records of `index`'s history in `group`, once there are `count`.
async fn wait_for_history(group: &str, index: &str, count: usize) -> Vec<Value> {
    let mut records = Vec::new();
    for _ in 0..50 {
        let (code, out, err) = audit_cli(&["show", index, "--log-group", group, "--all-records", "--output", "json"]);
        assert_eq!(code, 0, "{err}");
        records = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        if records.len() >= count {
            return records;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    records
}

/// An operator's command with `--stack`, run as a principal the stack's audit
/// bus does not admit (not in `AuditWriterArns`): it stops before acting,
/// with one line naming the parameter, and does not retry the refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_run_as_a_principal_the_audit_bus_refuses_stops_before_acting() {
    let repo = unique("refused/app");
    let stack = unique("refused").replace('/', "-");
    create_repository(&repo, false);
    let _ = guarded_stack(&stack, &repo);
    let pushed = push_buildx(&repo, "v1", &["linux/arm64"], &repo);
    let creds = another_role(&format!("{stack}-operator"));
    emulator().clear_calls(&repo);
    let started = std::time::Instant::now();
    let out = cli(&[
        "remediate",
        "--repository",
        &repo,
        "--image-tag",
        "v1",
        "--mode",
        "promote",
        "--stack",
        &stack,
    ])
    .envs(as_role(&creds))
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "not retried");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "one error line: {err}");
    assert!(!err.contains("ERROR"), "said once, not logged again: {err}");
    assert!(
        errors[0].contains("AccessDeniedException") && errors[0].contains("AuditWriterArns"),
        "{err}"
    );
    assert!(!errors[0].contains("retried"), "nothing retries a one-off run: {err}");
    assert_eq!(tags(&repo).await["v1"], pushed.index, "nothing moved");
    let calls = emulator().calls(&repo);
    assert!(!calls.keys().any(|c| c.contains("PutImage")), "no write: {calls:?}");

    // A sweep starts no image after the first refusal (every further one
    // would be refused too); those under way (4 at once) finish.
    for n in 2..=10 {
        push_buildx(&repo, &format!("v{n}"), &["linux/arm64"], &format!("{repo}-{n}"));
    }
    emulator().clear_calls(&repo);
    let out = cli(&[
        "sweep",
        "--repository",
        &repo,
        "--mode",
        "promote",
        "--stack",
        &stack,
        "--output",
        "json",
    ])
    .envs(as_role(&creds))
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("the sweep stopped") && err.contains("AuditWriterArns"),
        "{err}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: Value =
        serde_json::from_str::<Value>(stdout.trim().lines().last().unwrap()).unwrap()["summary"].clone();
    let handled = summary["images_handled"].as_u64().unwrap();
    assert!(handled <= 5, "stopped early, not after every image: {summary:#}");
    assert!(
        summary["stopped"].as_str().unwrap().contains("AccessDeniedException"),
        "{summary:#}"
    );
    let calls = emulator().calls(&repo);
    assert!(!calls.keys().any(|c| c.contains("PutImage")), "no write: {calls:?}");
}
