//! Integration-test harness: a private ECR emulator per test binary, real
//! AWS SDK clients pointed at it, and the pusher for buildx-shaped images.
//!
//! The emulator is `.venv/bin/python -m ecr_emulator` (built by `make venv`,
//! which `make test` runs first). It is started once per test binary on a
//! free loopback port and stops when the binary exits (it watches its stdin).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ecr::config::Credentials;
use ecr_remediator::Handler;
use ecr_remediator::ServiceConfig;
use ecr_remediator::aws::{audit::EventBridgeAudit, ecr::EcrRegistry};
use serde_json::Value;

pub const REGION: &str = "us-east-1";
pub const ACCOUNT: &str = "123456789012";

pub struct Emulator {
    pub url: String,
    port: u16,
    _child: Mutex<Child>,
    _stdin: Mutex<ChildStdin>,
}

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn python() -> PathBuf {
    let p = root().join(".venv/bin/python");
    assert!(
        p.exists(),
        "{} not found: run `make venv` first (`make test` does it)",
        p.display()
    );
    p
}

/// The emulator shared by every test of this binary.
pub fn emulator() -> &'static Emulator {
    static EMULATOR: OnceLock<Emulator> = OnceLock::new();
    EMULATOR.get_or_init(|| {
        let mut child = Command::new(python())
            .args(["-m", "ecr_emulator", "--port", "0", "--exit-on-stdin-eof"])
            // The test user's reads (the service's, here) are not pulls, as the
            // stack registers its function's role: set up, not built in.
            .args(["--pull-time-exclusion", &format!("arn:aws:iam::{ACCOUNT}:user/moto")])
            .env("PYTHONPATH", root().join("tests/emulator"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the emulator");
        let stdin = child.stdin.take().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line.trim().rsplit(' ').next().unwrap().to_owned();
        assert!(url.starts_with("http://127.0.0.1:"), "emulator did not start: {line:?}");
        let port = url.rsplit(':').next().unwrap().parse().unwrap();
        Emulator {
            url,
            port,
            _child: Mutex::new(child),
            _stdin: Mutex::new(stdin),
        }
    })
}

impl Emulator {
    /// A control-API call; returns the JSON body.
    pub fn control(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            stream,
            "{method} /_emulator/{path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(" 200 "), "control {method} {path}: {head}\n{body}");
        serde_json::from_str(body).unwrap()
    }

    /// ECR calls made on one repository, per `ecr:Operation`.
    pub fn calls(&self, repository: &str) -> BTreeMap<String, u64> {
        let v = self.control(
            "GET",
            &format!("calls?repository={}", repository.replace('/', "%2F")),
            None,
        );
        serde_json::from_value(v).unwrap()
    }

    pub fn clear_calls(&self, repository: &str) {
        self.control(
            "DELETE",
            &format!("calls?repository={}", repository.replace('/', "%2F")),
            None,
        );
    }

    /// Scripts faults for one operation on one repository.
    pub fn fault(&self, repository: &str, operation: &str, sequence: &[&str]) {
        self.control(
            "POST",
            "faults",
            Some(serde_json::json!({"operation": operation, "repository": repository, "sequence": sequence})),
        );
    }

    pub fn injected(&self) -> Value {
        self.control("GET", "faults", None)["injected"].clone()
    }
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh repository name.
pub fn unique(prefix: &str) -> String {
    format!(
        "live/{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

pub async fn sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(&emulator().url)
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "static"))
        .retry_config(
            aws_config::retry::RetryConfig::standard()
                .with_max_attempts(4)
                .with_initial_backoff(std::time::Duration::from_millis(20)),
        )
        .load()
        .await
}

/// The service wired to the emulator with a policy given as environment variables.
pub async fn handler(policy: &[(&str, &str)]) -> Handler<EcrRegistry, EventBridgeAudit> {
    let vars: BTreeMap<String, String> = policy.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    let mut config = ServiceConfig::from_vars(&vars, |_: &str| Err(std::io::Error::other("no policy file"))).unwrap();
    config.put_tps = 10.0;
    let mut h = ecr_remediator::aws::handler_with(&sdk_config().await, &config);
    h.log_records = false;
    h.retry = test_retries();
    h
}

/// A delivery as a queue makes it: its receive count and request id.
pub fn delivered(attempt: u32, request_id: &str) -> ecr_remediator::Delivery {
    ecr_remediator::Delivery {
        attempt: Some(attempt),
        request_id: Some(request_id.to_owned()),
        ..ecr_remediator::Delivery::default()
    }
}

/// Few, fast retries, so that tests can exhaust them with scripted faults.
pub fn test_retries() -> ecr_remediator::engine::retry::RetryPolicy {
    ecr_remediator::engine::retry::RetryPolicy {
        max_attempts: 4,
        base: std::time::Duration::from_millis(20),
        cap: std::time::Duration::from_millis(200),
    }
}

/// What the pusher stored.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub index: String,
    /// Children in index order.
    pub children: Vec<String>,
}

impl Pushed {
    pub fn runnable(&self) -> &str {
        &self.children[0]
    }
    pub fn attestation(&self) -> &str {
        self.children.last().unwrap()
    }
}

fn run_python(args: &[&str]) -> String {
    run_python_with(args, &[])
}

/// Runs Python against the emulator with the test credentials, `env`
/// overriding any of them (another principal's keys).
fn run_python_with(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new(python())
        .args(args)
        .env("PYTHONPATH", root().join("tests/emulator"))
        .env("AWS_ENDPOINT_URL", &emulator().url)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_DEFAULT_REGION", REGION)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a Python script (boto3 available) against the emulator; returns its stdout.
pub fn python_script(script: &str) -> String {
    run_python(&["-c", script])
}

/// [`python_script`] with `env` set (e.g. another principal's credentials).
pub fn python_script_with(script: &str, env: &[(&str, &str)]) -> String {
    run_python_with(&["-c", script], env)
}

/// The manifest stored under `digest`, parsed.
pub async fn get_manifest(repository: &str, digest: &str) -> Value {
    let ecr = aws_sdk_ecr::Client::new(&sdk_config().await);
    let mut request = ecr.batch_get_image().repository_name(repository).image_ids(
        aws_sdk_ecr::types::ImageIdentifier::builder()
            .image_digest(digest)
            .build(),
    );
    for mt in ecr_remediator::oci::media_type::ManifestMediaType::ALL {
        request = request.accepted_media_types(mt.as_str());
    }
    let reply = request.send().await.unwrap();
    serde_json::from_str(reply.images()[0].image_manifest().unwrap()).unwrap()
}

pub fn create_repository(name: &str, immutable: bool) {
    let mutability = if immutable { "IMMUTABLE" } else { "MUTABLE" };
    run_python(&[
        "-c",
        &format!(
            "import boto3; boto3.client('ecr').create_repository(repositoryName='{name}', imageTagMutability='{mutability}')"
        ),
    ]);
}

/// Builds a default-buildx OCI layout (image(s) + provenance) and pushes it as `tag`.
pub fn push_buildx(repository: &str, tag: &str, platforms: &[&str], salt: &str) -> Pushed {
    push_buildx_with(repository, tag, platforms, salt, &[])
}

/// [`push_buildx`] with more builder options (`--extra soci`, `--sbom`, ...).
pub fn push_buildx_with(repository: &str, tag: &str, platforms: &[&str], salt: &str, options: &[&str]) -> Pushed {
    let dir = std::env::temp_dir().join(format!("ecr-remediator-{}", unique("layout").replace('/', "-")));
    let dir_s = dir.to_string_lossy().into_owned();
    let mut args = vec!["-m", "ecr_emulator.oci", "build", dir_s.as_str(), "--salt", salt];
    for p in platforms {
        args.push("--platform");
        args.push(p);
    }
    args.extend_from_slice(options);
    run_python(&args);
    let out = run_python(&[
        "-m",
        "ecr_emulator.push",
        "--repository",
        repository,
        "--tag",
        tag,
        &dir_s,
    ]);
    let _ = std::fs::remove_dir_all(Path::new(&dir));
    let lines: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let (top, children) = lines.split_last().unwrap();
    Pushed {
        index: top["digest"].as_str().unwrap().to_owned(),
        children: children
            .iter()
            .map(|c| c["digest"].as_str().unwrap().to_owned())
            .collect(),
    }
}

/// One image as DescribeImages shows it.
#[derive(Debug, Clone)]
pub struct Listed {
    pub digest: String,
    pub tags: Vec<String>,
    pub media_type: String,
}

pub async fn list(repository: &str) -> Vec<Listed> {
    let ecr = aws_sdk_ecr::Client::new(&sdk_config().await);
    let reply = ecr.describe_images().repository_name(repository).send().await.unwrap();
    reply
        .image_details()
        .iter()
        .map(|d| Listed {
            digest: d.image_digest().unwrap().to_owned(),
            tags: d.image_tags().to_vec(),
            media_type: d.image_manifest_media_type().unwrap_or_default().to_owned(),
        })
        .collect()
}

pub async fn tags(repository: &str) -> BTreeMap<String, String> {
    list(repository)
        .await
        .into_iter()
        .flat_map(|l| l.tags.into_iter().map(move |t| (t, l.digest.clone())))
        .collect()
}

pub async fn untagged(repository: &str) -> Vec<String> {
    list(repository)
        .await
        .into_iter()
        .filter(|l| l.tags.is_empty())
        .map(|l| l.digest)
        .collect()
}

/// An `ECR Image Action` PUSH event as ECR sends it.
pub fn push_event(repository: &str, digest: &str, tag: &str, media_type: &str) -> String {
    let mut detail = serde_json::json!({
        "result": "SUCCESS", "repository-name": repository, "image-digest": digest,
        "action-type": "PUSH", "image-tag": tag, "manifest-media-type": media_type
    });
    if media_type.contains("manifest.v1") || media_type.contains("manifest.v2") {
        detail["artifact-media-type"] = "application/vnd.oci.image.config.v1+json".into();
    }
    serde_json::json!({
        "version": "0", "id": format!("evt-{}", COUNTER.fetch_add(1, Ordering::SeqCst)),
        "detail-type": "ECR Image Action", "source": "aws.ecr", "account": ACCOUNT,
        "time": ecr_remediator::time::rfc3339_ms(ecr_remediator::now_ms()), "region": REGION,
        "resources": [], "detail": detail
    })
    .to_string()
}

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// Creates an SQS queue and returns its URL.
pub async fn create_queue(sqs: &aws_sdk_sqs::Client, name: &str) -> String {
    sqs.create_queue()
        .queue_name(name)
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_owned()
}

/// A rule `name` on the default bus sending the events matching `pattern` to `target` (an ARN).
pub async fn rule_to(name: &str, pattern: &Value, target: &str) {
    let events = aws_sdk_eventbridge::Client::new(&sdk_config().await);
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
                .id("target")
                .arn(target)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
}

/// A queue named `name` fed by a rule `name` on the default bus; returns the queue URL.
pub async fn rule_to_queue(name: &str, pattern: &Value) -> String {
    let sqs = aws_sdk_sqs::Client::new(&sdk_config().await);
    let url = create_queue(&sqs, name).await;
    rule_to(name, pattern, &format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{name}")).await;
    url
}

/// The `ecr-remediator` binary with the emulator's endpoint and test credentials.
pub fn cli(args: &[&str]) -> std::process::Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ecr-remediator"));
    cmd.args(args)
        .env("AWS_ENDPOINT_URL", &emulator().url)
        .env("AWS_REGION", REGION)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("ECR_REMEDIATOR_POLICY_FILE");
    cmd
}

/// An SQS queue receiving this repository's audit records through an EventBridge rule.
pub struct AuditQueue {
    sqs: aws_sdk_sqs::Client,
    url: String,
}

impl AuditQueue {
    pub async fn new(repository: &str) -> Self {
        let pattern = serde_json::json!({
            "source": ["ecr-remediator"], "detail-type": ["ECR Remediation Record"],
            "detail": {"repository": [repository]}
        });
        let url = rule_to_queue(&repository.replace('/', "-"), &pattern).await;
        AuditQueue {
            sqs: aws_sdk_sqs::Client::new(&sdk_config().await),
            url,
        }
    }

    /// The records delivered so far without the checkpoints (`in_progress`)
    /// each handling writes before its first write or deletion.
    pub async fn finals(&self) -> Vec<Value> {
        self.records()
            .await
            .into_iter()
            .filter(|r| r["outcome"] != "in_progress")
            .collect()
    }

    /// Every audit record delivered so far (the `detail` of each event).
    pub async fn records(&self) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            let reply = self
                .sqs
                .receive_message()
                .queue_url(&self.url)
                .max_number_of_messages(10)
                .send()
                .await
                .unwrap();
            if reply.messages().is_empty() {
                return out;
            }
            for m in reply.messages() {
                let event: Value = serde_json::from_str(m.body().unwrap()).unwrap();
                assert_eq!(event["source"], "ecr-remediator");
                out.push(event["detail"].clone());
                self.sqs
                    .delete_message()
                    .queue_url(&self.url)
                    .receipt_handle(m.receipt_handle().unwrap())
                    .send()
                    .await
                    .unwrap();
            }
        }
    }
}

/// A log group fed by an audit rule on the default bus (records of `repos`),
/// as the template wires the stack's audit log group.
pub async fn log_group_rule(group: &str, repos: &[&str]) {
    aws_sdk_cloudwatchlogs::Client::new(&sdk_config().await)
        .create_log_group()
        .log_group_name(group)
        .send()
        .await
        .unwrap();
    let pattern = serde_json::json!({
        "source": ["ecr-remediator"], "detail-type": ["ECR Remediation Record"],
        "detail": {"repository": repos}
    });
    let name = group.trim_start_matches('/').replace('/', "-");
    rule_to(
        &name,
        &pattern,
        &format!("arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{group}"),
    )
    .await;
}

/// Runs `ecr-remediator audit ARGS…` and returns (exit code, stdout, stderr).
pub fn audit_cli(args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["audit"];
    all.extend_from_slice(args);
    let out = cli(&all).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Stores a `kind` attachment of `digest` (`notation`, `cosign`,
/// `referrers-index`; see `ecr_emulator/sign.py`); returns what was stored.
pub fn attach(repository: &str, digest: &str, kind: &str) -> Value {
    let out = run_python(&[
        "-m",
        "ecr_emulator.sign",
        "--repository",
        repository,
        "--digest",
        digest,
        "--as",
        kind,
    ]);
    serde_json::from_str(out.trim()).unwrap()
}

/// `ListImageReferrers` of `subject`: the referrers' digests, oldest first.
pub fn referrer_digests(repository: &str, subject: &str) -> Vec<String> {
    let out = python_script(&format!(
        "import boto3, json\n\
         r = boto3.client('ecr').list_image_referrers(repositoryName='{repository}', subjectId={{'imageDigest': '{subject}'}})\n\
         print(json.dumps([d['digest'] for d in r['referrers']]))"
    ));
    serde_json::from_str(out.trim()).unwrap()
}

/// Runs the `ecr-remediator` binary with extra environment variables; returns
/// (exit code, stdout, stderr).
pub fn run_cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = cli(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The audit records (`{"schema"...` lines) and the summary of `sweep --output json`.
pub fn sweep_json(stdout: &str) -> (Vec<Value>, Value) {
    let records = stdout
        .lines()
        .filter(|l| l.starts_with("{\"schema\""))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let last = stdout.lines().last().unwrap_or("{}");
    let summary = serde_json::from_str::<Value>(last).unwrap()["summary"].clone();
    (records, summary)
}

/// Sets the repository's resource tag `key=value`.
pub fn tag_repository(repository: &str, key: &str, value: &str) {
    python_script(&format!(
        "import boto3\n\
         ecr = boto3.client('ecr')\n\
         arn = ecr.describe_repositories(repositoryNames=['{repository}'])['repositories'][0]['repositoryArn']\n\
         ecr.tag_resource(resourceArn=arn, tags=[{{'Key': '{key}', 'Value': '{value}'}}])"
    ));
}

/// `serve` in promote mode (plus `extra` flags) on `queue`, until a receive finds nothing.
pub fn serve_until_idle(queue: &str, extra: &[&str]) -> Command {
    let mut args = vec![
        "serve",
        "--queue-url",
        queue,
        "--wait",
        "1",
        "--exit-when-idle",
        "--mode",
        "promote",
    ];
    args.extend_from_slice(extra);
    cli(&args)
}

/// A new queue named `name` holding one message, `body`; returns its URL.
pub async fn queue_with_message(name: &str, body: &str) -> String {
    let sqs = aws_sdk_sqs::Client::new(&sdk_config().await);
    let url = create_queue(&sqs, name).await;
    sqs.send_message()
        .queue_url(&url)
        .message_body(body)
        .send()
        .await
        .unwrap();
    url
}

/// The handler's sweeps put their requests on `queue`, sweeping repositories under `prefixes`.
pub async fn sweeping_into(h: &mut Handler<EcrRegistry, EventBridgeAudit>, queue: &str, prefixes: &[&str]) {
    let sqs = aws_sdk_sqs::Client::new(&sdk_config().await);
    h.sweeps = Some(ecr_remediator::service::handler::Sweeps {
        queue: std::sync::Arc::new(ecr_remediator::aws::sqs::SqsJobQueue::new(sqs, queue)),
        prefixes: prefixes.iter().map(|p| (*p).to_owned()).collect(),
    });
}

/// What Lambda's SQS event source mapping does with the function: receive up
/// to 10 messages, invoke [`Handler::handle_lambda`] with them as one SQS
/// event, delete those its partial batch response does not name; until a
/// receive finds nothing (or 50 rounds). Returns the function's responses.
pub async fn lambda_until_idle(h: &Handler<EcrRegistry, EventBridgeAudit>, queue: &str) -> Vec<Value> {
    use aws_sdk_sqs::types::MessageSystemAttributeName;
    let sqs = aws_sdk_sqs::Client::new(&sdk_config().await);
    let mut responses = Vec::new();
    for _ in 0..50 {
        let got = sqs
            .receive_message()
            .queue_url(queue)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .visibility_timeout(30)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .unwrap();
        let messages = got.messages();
        if messages.is_empty() {
            break;
        }
        let records: Vec<Value> = messages
            .iter()
            .map(|m| {
                let count = m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .cloned()
                    .unwrap_or_else(|| "1".to_owned());
                serde_json::json!({
                    "messageId": m.message_id(), "receiptHandle": m.receipt_handle(), "body": m.body(),
                    "attributes": {"ApproximateReceiveCount": count}, "messageAttributes": {},
                    "md5OfBody": m.md5_of_body(), "eventSource": "aws:sqs",
                    "eventSourceARN": format!("arn:aws:sqs:{REGION}:{ACCOUNT}:queue"), "awsRegion": REGION
                })
            })
            .collect();
        let response = h
            .handle_lambda(serde_json::json!({ "Records": records }), None, Some("lambda-test"))
            .await
            .unwrap();
        let failed: Vec<&str> = response["batchItemFailures"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f["itemIdentifier"].as_str())
            .collect();
        for m in messages {
            if !failed.contains(&m.message_id().unwrap_or_default()) {
                sqs.delete_message()
                    .queue_url(queue)
                    .receipt_handle(m.receipt_handle().unwrap())
                    .send()
                    .await
                    .unwrap();
            }
        }
        responses.push(response);
    }
    responses
}

/// True when `listing` holds `digest`.
pub fn present(listing: &[Listed], digest: &str) -> bool {
    listing.iter().any(|l| l.digest == digest)
}

/// `ecr-remediator remediate` of `digest` pushed as `tag`, with `extra` flags
/// and environment; asserts it succeeded and returns its record.
pub fn remediate_record(repo: &str, digest: &str, tag: &str, extra: &[&str], env: &[(&str, &str)]) -> Value {
    let mut args = vec![
        "remediate",
        "--repository",
        repo,
        "--image-digest",
        digest,
        "--image-tag",
        tag,
        "--output",
        "json",
    ];
    args.extend_from_slice(extra);
    let (code, out, err) = run_cli(&args, env);
    assert_eq!(code, 0, "{out}\n{err}");
    serde_json::from_str(&out).unwrap()
}

/// The planner's skip record for `digest` in an audit record, if any.
pub fn skip_of<'a>(record: &'a Value, digest: &str) -> Option<&'a Value> {
    record["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["digest"] == digest)
}
