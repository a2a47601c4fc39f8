//! The Lambda function refuses to start on bad configuration, naming the setting.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn init_with(vars: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bootstrap"));
    cmd.env_clear()
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn bad_configuration_fails_init_naming_the_setting() {
    for (var, value, expect) in [
        ("ECR_REMEDIATOR_MODE", "yolo", "ECR_REMEDIATOR_MODE"),
        ("ECR_REMEDIATOR_PUT_TPS", "50", "ECR_REMEDIATOR_PUT_TPS"),
        ("ECR_REMEDIATOR_MAX_DELETES", "many", "ECR_REMEDIATOR_MAX_DELETES"),
    ] {
        let (ok, text) = init_with(&[(var, value)]);
        assert!(!ok, "{var}={value} must fail init");
        assert!(text.contains(expect), "{var}={value}: {text}");
        assert!(text.contains("invalid configuration"), "{text}");
    }
}

#[test]
fn a_policy_file_and_policy_variables_together_are_refused() {
    let (ok, text) = init_with(&[
        ("ECR_REMEDIATOR_POLICY_FILE", "/nonexistent.toml"),
        ("ECR_REMEDIATOR_MODE", "tag"),
    ]);
    assert!(!ok);
    assert!(text.contains("ECR_REMEDIATOR_POLICY_FILE"), "{text}");
}
