//! The deployment's policy in an SSM parameter, against the emulator: read
//! at start (refused when invalid), a new version applied without a
//! restart, an invalid version refused while the last good one stays.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::harness;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ecr_remediator::Delivery;
use ecr_remediator::ServiceConfig;
use ecr_remediator::service::live_policy::LivePolicy;
use harness::*;

async fn put(ssm: &aws_sdk_ssm::Client, name: &str, text: &str) {
    ssm.put_parameter()
        .name(name)
        .value(text)
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .overwrite(true)
        .send()
        .await
        .unwrap();
}

fn config(vars: &[(&str, &str)]) -> Result<ServiceConfig, String> {
    let vars: BTreeMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    ServiceConfig::from_vars(&vars, |_: &str| Err(std::io::Error::other("no file"))).map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_parameter_is_read_at_start_and_reloaded_without_a_restart() {
    let sdk = sdk_config().await;
    let ssm = aws_sdk_ssm::Client::new(&sdk);
    let repo = unique("live-policy");
    create_repository(&repo, false);
    let name = format!("/test/{repo}/policy");
    let audit = AuditQueue::new(&repo).await;

    // Beside the individual variables, the parameter is refused: one would be ignored.
    let e = config(&[
        ("ECR_REMEDIATOR_POLICY_PARAMETER", &name),
        ("ECR_REMEDIATOR_MODE", "tag"),
    ])
    .unwrap_err();
    assert!(e.contains("ECR_REMEDIATOR_MODE"), "{e}");

    // A policy that deletes, where the role cannot: refused at start.
    put(&ssm, &name, "[default]\nmode = \"promote\"\ndelete_orphans = true\n").await;
    let c = config(&[
        ("ECR_REMEDIATOR_POLICY_PARAMETER", &name),
        ("ECR_REMEDIATOR_DELETION_ALLOWED", "false"),
    ])
    .unwrap();
    let mut h = ecr_remediator::aws::handler_with(&sdk, &c);
    let e = ecr_remediator::aws::attach_live_policy(&mut h, &sdk, &c, None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("DeleteOrphans=true"), "{e}");

    // Tag mode from the parameter.
    put(&ssm, &name, "[default]\nmode = \"tag\"\n").await;
    let c = config(&[("ECR_REMEDIATOR_POLICY_PARAMETER", &name)]).unwrap();
    let mut h = ecr_remediator::aws::handler_with(&sdk, &c);
    h.log_records = false;
    h.retry = test_retries();
    let store = Arc::new(ecr_remediator::aws::ssm::SsmPolicy::new(&sdk, name.clone()));
    h.live_policy = Some(Arc::new(
        LivePolicy::load(store, c.organizational_units.clone(), true, Duration::ZERO, None)
            .await
            .unwrap(),
    ));
    let first = push_buildx(&repo, "v1", &["linux/arm64"], "live-1");
    h.handle_text(&push_event(&repo, &first.index, "v1", OCI_INDEX), Delivery::default())
        .await
        .unwrap();
    assert_eq!(tags(&repo).await["v1"], first.index, "tag mode: v1 stays on the index");

    // A new version applies to the next event, no restart.
    put(&ssm, &name, "[default]\nmode = \"promote\"\n").await;
    let second = push_buildx(&repo, "v2", &["linux/arm64"], "live-2");
    h.handle_text(&push_event(&repo, &second.index, "v2", OCI_INDEX), Delivery::default())
        .await
        .unwrap();
    assert_eq!(
        tags(&repo).await["v2"],
        second.runnable(),
        "promoted by the new version"
    );

    // A version that does not parse is refused; the last good one stays.
    put(&ssm, &name, "[default\nmode = ").await;
    let third = push_buildx(&repo, "v3", &["linux/arm64"], "live-3");
    h.handle_text(&push_event(&repo, &third.index, "v3", OCI_INDEX), Delivery::default())
        .await
        .unwrap();
    assert_eq!(tags(&repo).await["v3"], third.runnable());
    let modes: Vec<String> = audit
        .finals()
        .await
        .iter()
        .map(|r| r["policy"]["mode"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(modes, vec!["tag", "promote", "promote"]);
}
