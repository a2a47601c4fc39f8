//! `ecr-remediator selftest` against a local stack: the emulator, the
//! stack's push and audit rules, and a `serve` worker playing the function
//! (`ecr_emulator.local_stack`, as `make demo` wires it). Its own binary:
//! each stack's audit rule takes every record on the default bus, and its
//! workers run beside the tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use harness::*;
use serde_json::Value;

struct LocalStack {
    name: String,
    serve_args: Vec<String>,
}

/// A local stack named `name`, scoped to repositories under `name/`.
fn local_stack(name: &str) -> LocalStack {
    let out = python_script(&format!(
        "from ecr_emulator.local_stack import main; main(['--name', '{name}', '--prefix', '{name}/'])"
    ));
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    LocalStack {
        name: name.to_owned(),
        serve_args: v["serve_args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect(),
    }
}

/// The stack's function: a `serve` worker with `policy` (stopped when dropped).
struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn worker(stack: &LocalStack, policy: &[(&str, &str)]) -> Worker {
    let args: Vec<&str> = stack.serve_args.iter().map(String::as_str).collect();
    let mut cmd = cli(&args);
    for (k, v) in policy {
        cmd.env(k, v);
    }
    Worker(cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap())
}

fn selftest(stack: &LocalStack, extra: &[&str]) -> (i32, String, String, Duration) {
    let mut args = vec!["selftest", "--stack", stack.name.as_str()];
    args.extend_from_slice(extra);
    let started = Instant::now();
    let out = cli(&args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        started.elapsed(),
    )
}

/// The repositories and functions left under the stack's name.
async fn left_behind(stack: &LocalStack) -> Vec<String> {
    let sdk = sdk_config().await;
    let mut out: Vec<String> = aws_sdk_ecr::Client::new(&sdk)
        .describe_repositories()
        .send()
        .await
        .unwrap()
        .repositories()
        .iter()
        .filter_map(|r| r.repository_name())
        .filter(|n| n.starts_with(&format!("{}/", stack.name)))
        .map(str::to_owned)
        .collect();
    let functions = python_script(
        "import boto3; print('\\n'.join(f['FunctionName'] for f in boto3.client('lambda').list_functions()['Functions']))",
    );
    out.extend(
        functions
            .lines()
            .filter(|f| f.starts_with("ecr-remediator-selftest-"))
            .map(str::to_owned),
    );
    out
}

fn execution_role() -> String {
    python_script(
        "import boto3, json\n\
         iam = boto3.client('iam')\n\
         doc = json.dumps({'Version': '2012-10-17', 'Statement': [{'Effect': 'Allow', \
           'Principal': {'Service': 'lambda.amazonaws.com'}, 'Action': 'sts:AssumeRole'}]})\n\
         try:\n    print(iam.create_role(RoleName='selftest-exec', AssumeRolePolicyDocument=doc)['Role']['Arn'])\n\
         except iam.exceptions.EntityAlreadyExistsException:\n    print(iam.get_role(RoleName='selftest-exec')['Role']['Arn'])",
    )
    .trim()
    .to_owned()
}

fn step<'a>(stdout: &'a str, name: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(name))
        .unwrap_or_else(|| panic!("no {name} line in:\n{stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_local_stack_passes_and_nothing_it_created_remains() {
    let stack = local_stack("st-healthy");
    let _worker = worker(&stack, &[("ECR_REMEDIATOR_MODE", "promote")]);
    let role = execution_role();
    let (code, out, err, _) = selftest(&stack, &["--timeout", "60s", "--create-function", "--role-arn", &role]);
    assert_eq!(code, 0, "{out}\n{err}");
    for name in [
        "repository",
        "push",
        "record",
        "tag",
        "provenance",
        "deployability",
        "scope",
        "writers",
        "lambda",
    ] {
        assert!(step(&out, name).trim_start().starts_with("ok"), "{name}:\n{out}");
    }
    assert!(
        step(&out, "writers").contains("only arn:aws:iam::123456789012:user/moto may write records on the audit bus"),
        "{out}"
    );
    assert!(step(&out, "lambda").contains("Active after"), "{out}");
    assert!(
        out.lines().last().unwrap().starts_with("PASSED: stack st-healthy"),
        "{out}"
    );
    assert!(out.contains("account 123456789012, region us-east-1"), "{out}");
    assert_eq!(left_behind(&stack).await, Vec::<String>::new(), "{out}");

    // The legacy attestation form, as JSON, kept for inspection.
    let (code, out, err, _) = selftest(
        &stack,
        &[
            "--timeout",
            "60s",
            "--attestation-format",
            "legacy",
            "--keep",
            "--output",
            "json",
        ],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["passed"], true);
    let repository = report["repository"].as_str().unwrap();
    assert_eq!(left_behind(&stack).await, vec![repository.to_owned()]);
    assert!(
        report["cleanup"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("kept for inspection")
    );
    aws_sdk_ecr::Client::new(&sdk_config().await)
        .delete_repository()
        .repository_name(repository)
        .force(true)
        .send()
        .await
        .unwrap();
}

/// A stack whose audit bus lets anyone in the account write (its policy
/// removed, as on a stack deployed with `AuditBus=default`): the function
/// works, but the trail cannot be trusted, and the verdict says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_bus_anyone_may_write_to_fails_the_writers_step() {
    let stack = local_stack("st-openbus");
    python_script(
        "import boto3; boto3.client('events').remove_permission(EventBusName='st-openbus-audit', RemoveAllPermissions=True)",
    );
    let _worker = worker(&stack, &[("ECR_REMEDIATOR_MODE", "promote")]);
    let (code, out, err, _) = selftest(&stack, &["--timeout", "60s"]);
    assert_eq!(code, 1, "{out}\n{err}");
    let writers = step(&out, "writers");
    assert!(writers.trim_start().starts_with("FAILED"), "{out}");
    assert!(
        writers.contains("the audit bus has no resource policy")
            && writers.contains("AuditBus=create")
            && writers.contains("AuditWriterArns"),
        "{out}"
    );
    assert!(
        step(&out, "tag").trim_start().starts_with("ok"),
        "the function still works:\n{out}"
    );
    assert!(out.lines().last().unwrap().contains("failed: writers"), "{out}");
    assert_eq!(left_behind(&stack).await, Vec::<String>::new(), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stack_whose_function_receives_nothing_fails_within_the_timeout() {
    let stack = local_stack("st-stopped");
    let (code, out, err, took) = selftest(&stack, &["--timeout", "6s"]);
    assert_eq!(code, 1, "{out}\n{err}");
    let record = step(&out, "record");
    assert!(
        record.contains("no audit record of the push within 6 s: the function is not receiving ECR push events"),
        "{out}"
    );
    assert!(record.contains("/aws/lambda/st-stopped-function"), "{out}");
    assert!(took < Duration::from_secs(40), "{took:?}");
    assert!(
        out.lines().last().unwrap().starts_with("FAILED: stack st-stopped"),
        "{out}"
    );
    assert_eq!(left_behind(&stack).await, Vec::<String>::new(), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_mode_fails_the_deployability_steps_with_the_setting_to_change_and_lambdas_refusal() {
    let stack = local_stack("st-tagmode");
    let _worker = worker(&stack, &[("ECR_REMEDIATOR_MODE", "tag")]);
    let role = execution_role();
    let (code, out, err, _) = selftest(&stack, &["--timeout", "60s", "--create-function", "--role-arn", &role]);
    assert_eq!(code, 1, "{out}\n{err}");
    let tag = step(&out, "tag");
    assert!(tag.trim_start().starts_with("FAILED"), "{out}");
    assert!(
        tag.contains("still names the index: the stack's mode is tag") && tag.contains("Mode to promote"),
        "{out}"
    );
    let lambda = step(&out, "lambda");
    assert!(
        lambda.contains("Lambda refused") && lambda.contains("is not supported"),
        "{out}"
    );
    assert_eq!(left_behind(&stack).await, Vec::<String>::new(), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_run_removes_what_it_created() {
    let stack = local_stack("st-interrupted");
    let mut child = cli(&["selftest", "--stack", &stack.name, "--timeout", "5m"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until it pushed (no worker: it then waits for the record).
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    while !seen.contains(" push ") {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "{seen}");
        seen.push_str(&line);
    }
    assert!(
        !left_behind(&stack).await.is_empty(),
        "the scratch repository exists while it runs"
    );
    let interrupted = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut reader, &mut rest).unwrap();
    let status = child.wait().unwrap();
    seen.push_str(&rest);
    assert_eq!(status.code(), Some(1), "{seen}");
    assert!(seen.contains("interrupted"), "{seen}");
    assert!(step(&seen, "cleanup").contains("deleted repository"), "{seen}");
    assert_eq!(left_behind(&stack).await, Vec::<String>::new(), "{seen}");
}

#[test]
fn a_typo_is_one_line_and_a_nonzero_exit() {
    let out = cli(&["selftest", "--stack", "s", "--platform", "linux"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("is not os/architecture"), "{err}");
    let out = cli(&["selftest", "--stack", "no-such-stack"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no-such-stack") && err.contains("no such stack"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupt_while_the_repository_is_being_created_still_removes_it() {
    let stack = local_stack("st-racing");
    let repository = "st-racing/scratch";
    emulator().control(
        "POST",
        "faults",
        Some(serde_json::json!({"operation": "CreateRepository", "repository": repository, "latency_ms": 2000})),
    );
    let child = cli(&[
        "selftest",
        "--stack",
        &stack.name,
        "--repository",
        repository,
        "--timeout",
        "5m",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let interrupted = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let out = child.wait_with_output().unwrap();
    emulator().control(
        "POST",
        "faults",
        Some(serde_json::json!({"operation": "CreateRepository", "repository": repository})),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("interrupted"), "{stdout}");
    assert!(
        step(&stdout, "cleanup").contains("deleted repository st-racing/scratch"),
        "{stdout}"
    );
    assert_eq!(left_behind(&stack).await, Vec::<String>::new(), "{stdout}");
}
