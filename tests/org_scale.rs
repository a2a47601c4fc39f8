//! The hub's per-account state is bounded (issue 25): with more member
//! accounts than its cache holds, it keeps at most that many registries, and
//! it assumes each account's role once per credential lifetime (once more
//! only after the account was evicted). Its own test binary, so that its
//! emulator counts only its own `AssumeRole` calls.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use ecr_remediator::AccountId;
use ecr_remediator::aws::members::{MemberAccess, MemberRegistries};
use ecr_remediator::engine::registry::{AccountRegistries, Registry};
use harness::*;

const EXTERNAL_ID: &str = "hub-secret-0123456789";
const ROLE: &str = "ecr-remediator-member";

/// The member role (trusting this test's principal, with the external id)
/// and one repository in each of `accounts`.
fn members(accounts: &[String]) {
    let list = serde_json::to_string(accounts).unwrap();
    python_script(&format!(
        r#"
import boto3, json
from ecr_emulator.testing import account_session, member_role_trust
me = boto3.client("sts").get_caller_identity()
url = boto3.client("ecr").meta.endpoint_url
for account in {list}:
    s = account_session(url, account)
    trust = member_role_trust(me["Arn"], "{EXTERNAL_ID}", me["Account"])
    s.client("iam").create_role(RoleName="{ROLE}", AssumeRolePolicyDocument=json.dumps(trust))
    s.client("ecr").create_repository(repositoryName="scale/app")
"#
    ));
}

fn assume_role_calls() -> u64 {
    emulator().control("GET", "calls", None)["sts:AssumeRole"]
        .as_u64()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hubs_per_account_state_is_bounded_and_each_role_assumed_once() {
    let accounts: Vec<String> = (0..5).map(|n| format!("4444444444{n:02}")).collect();
    members(&accounts);
    let sdk = sdk_config().await;
    let access = MemberAccess {
        role_name: ROLE.to_owned(),
        external_id: EXTERNAL_ID.to_owned(),
    };
    let registries = MemberRegistries::with_capacity(&sdk, access, 10.0, 10, 2);
    let before = assume_role_calls();
    for account in &accounts {
        let registry = registries
            .registry_for(&AccountId::parse(account).unwrap())
            .await
            .unwrap();
        // A call with the account's credentials: no second AssumeRole for it.
        let repos = registry.list_repositories().await.unwrap();
        assert_eq!(repos.len(), 1, "{account}: {repos:?}");
        assert!(registries.kept().await <= 2, "more registries kept than the bound");
    }
    assert_eq!(
        assume_role_calls() - before,
        5,
        "one AssumeRole per account on first use"
    );
    // The most recent account is kept: no AssumeRole to use it again.
    let last = registries
        .registry_for(&AccountId::parse(&accounts[4]).unwrap())
        .await
        .unwrap();
    last.list_repositories().await.unwrap();
    assert_eq!(assume_role_calls() - before, 5);
    // The first was evicted: it comes back for one more AssumeRole.
    let first = registries
        .registry_for(&AccountId::parse(&accounts[0]).unwrap())
        .await
        .unwrap();
    first.list_repositories().await.unwrap();
    assert_eq!(assume_role_calls() - before, 6);
    assert_eq!(registries.kept().await, 2);

    // Beyond the 64 credential providers the SDK's shared cache holds, each
    // account used twice still assumes its role once (in the same test: the
    // emulator's count is per process).
    let accounts: Vec<String> = (0..70).map(|n| format!("6666666666{n:02}")).collect();
    let me: serde_json::Value = serde_json::from_str(
        python_script("import boto3, json; print(json.dumps(boto3.client('sts').get_caller_identity()))").trim(),
    )
    .unwrap();
    let trust = serde_json::json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::{}:root", me["Account"].as_str().unwrap())},
        "Action": "sts:AssumeRole",
        "Condition": {"StringEquals": {"sts:ExternalId": EXTERNAL_ID, "aws:PrincipalArn": me["Arn"]}}}]});
    emulator().control(
        "POST",
        "members",
        Some(serde_json::json!({"accounts": accounts, "role_name": ROLE, "trust": trust, "repository": "many/app", "count": 1})),
    );
    let access = MemberAccess {
        role_name: ROLE.to_owned(),
        external_id: EXTERNAL_ID.to_owned(),
    };
    let registries = MemberRegistries::new(&sdk_config().await, access, 10.0, 10);
    let before = assume_role_calls();
    for round in 0..2 {
        for account in &accounts {
            let registry = registries
                .registry_for(&AccountId::parse(account).unwrap())
                .await
                .unwrap();
            let repos = registry.list_repositories().await.unwrap();
            assert_eq!(repos.len(), 1, "round {round}, {account}");
        }
    }
    assert_eq!(
        assume_role_calls() - before,
        70,
        "used twice, each account's role assumed once"
    );
}
