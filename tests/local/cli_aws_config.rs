//! AWS configuration mistakes, as a user makes them: each is named in one
//! line, with what to set, within seconds, and the exit status is 1. No
//! emulator: nothing here may reach a service.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, Instant};

/// Runs the CLI with only `env` (and PATH): no inherited AWS configuration.
fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, Duration) {
    let empty = std::env::temp_dir().join("ecr-remediator-no-aws-config");
    std::fs::create_dir_all(&empty).unwrap();
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_ecr-remediator"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", &empty)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stderr).unwrap(),
        started.elapsed(),
    )
}

const KEYS: [(&str, &str); 2] = [("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")];

fn one_line_naming(err: &str, words: &[&str]) {
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    for w in words {
        assert!(err.contains(w), "{w:?} in: {err}");
    }
}

#[test]
fn no_region_is_named_with_what_to_set() {
    for args in [
        &["remediate", "--repository", "team/app", "--image-tag", "v1"][..],
        &["sweep", "--dry-run"],
        &["audit", "--log-group", "g"],
    ] {
        let (code, err, took) = run(args, &KEYS);
        assert_eq!(code, 1, "{args:?}: {err}");
        one_line_naming(&err, &["no AWS region", "--region", "AWS_REGION"]);
        assert!(took < Duration::from_secs(5), "{took:?}");
    }
}

#[test]
fn no_credentials_are_named_with_what_to_set() {
    let (code, err, took) = run(
        &[
            "remediate",
            "--repository",
            "team/app",
            "--image-tag",
            "v1",
            "--region",
            "eu-west-1",
        ],
        &[],
    );
    assert_eq!(code, 1, "{err}");
    one_line_naming(&err, &["no usable AWS credentials", "AWS_PROFILE", "AWS_ACCESS_KEY_ID"]);
    assert!(took < Duration::from_secs(10), "{took:?}");
}

/// A shared config directory of its own: `config` holds `profiles`.
fn aws_dir(name: &str, config: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ecr-remediator-aws-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config"), config).unwrap();
    std::fs::write(dir.join("credentials"), "").unwrap();
    dir
}

#[test]
fn an_unknown_profile_is_an_error_as_in_the_aws_cli_even_with_keys_in_the_environment() {
    let dir = aws_dir("unknown", "[profile member]\nregion = eu-west-1\n");
    let (config, credentials) = (dir.join("config"), dir.join("credentials"));
    let files = [
        ("AWS_CONFIG_FILE", config.to_str().unwrap()),
        ("AWS_SHARED_CREDENTIALS_FILE", credentials.to_str().unwrap()),
    ];
    let mut env = KEYS.to_vec();
    env.extend_from_slice(&files);
    let (code, err, took) = run(&["sweep", "--profile", "nosuch", "--dry-run"], &env);
    assert_eq!(code, 1, "{err}");
    one_line_naming(&err, &["The config profile (nosuch) could not be found"]);
    assert!(took < Duration::from_secs(5), "{took:?}");
    env.push(("AWS_PROFILE", "nosuch"));
    let (code, err, _) = run(&["sweep", "--dry-run"], &env);
    assert_eq!(code, 1, "{err}");
    one_line_naming(&err, &["The config profile (nosuch) could not be found"]);
}

#[test]
fn an_explicit_profile_beats_keys_in_the_environment_and_credential_process_works() {
    // The profile's credentials come from a process, which leaves a mark.
    let dir = std::env::temp_dir().join(format!("ecr-remediator-aws-process-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mark = dir.join("process-ran");
    let _ = std::fs::remove_file(&mark);
    let script = dir.join("creds.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ntouch {}\necho '{{\"Version\": 1, \"AccessKeyId\": \"member\", \"SecretAccessKey\": \"member\"}}'\n",
            mark.display()
        ),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&script)
        .status()
        .unwrap();
    let dir = aws_dir(
        "process",
        &format!(
            "[profile member]\nregion = eu-west-1\ncredential_process = {}\n",
            script.display()
        ),
    );
    let config = dir.join("config");
    let mut env = KEYS.to_vec();
    env.push(("AWS_CONFIG_FILE", config.to_str().unwrap()));
    // Nothing listens there: the command stops after its credentials are read.
    env.push(("AWS_ENDPOINT_URL", "http://127.0.0.1:1"));
    let (code, err, _) = run(&["sweep", "--profile", "member", "--dry-run"], &env);
    assert_eq!(code, 1, "{err}");
    assert!(
        mark.exists(),
        "the member profile's credentials were used, not the environment's: {err}"
    );
    one_line_naming(&err, &["cannot reach http://127.0.0.1:1"]);
    // Without --profile, the environment's keys are used, as the AWS CLI does.
    std::fs::remove_file(&mark).unwrap();
    let (code, err, _) = run(&["sweep", "--region", "eu-west-1", "--dry-run"], &env);
    assert_eq!(code, 1, "{err}");
    assert!(!mark.exists(), "{err}");
}

#[test]
fn an_endpoint_that_does_not_answer_is_named_at_once() {
    // Nothing listens on port 1 of the loopback address.
    let (code, err, took) = run(
        &[
            "sweep",
            "--endpoint-url",
            "http://127.0.0.1:1",
            "--region",
            "us-east-1",
            "--dry-run",
        ],
        &KEYS,
    );
    assert_eq!(code, 1, "{err}");
    one_line_naming(&err, &["cannot reach http://127.0.0.1:1", "AWS_ENDPOINT_URL"]);
    assert!(took < Duration::from_secs(5), "no retry storm: {took:?}");
}
