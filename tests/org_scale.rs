//! The hub's per-account state is bounded (issue 25): with more member
//! accounts than its cache holds, it keeps at most that many registries, and
//! it assumes each account's role once per credential lifetime (once more
//! only after the account was evicted). Its own test binary, so that its
//! emulator counts only its own `AssumeRole` calls.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

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
async fn more_accounts_than_the_cache_holds_keep_memory_bounded_and_assume_once_each() {
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
        let registry = registries.registry_for(account).await.unwrap();
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
    let last = registries.registry_for(&accounts[4]).await.unwrap();
    last.list_repositories().await.unwrap();
    assert_eq!(assume_role_calls() - before, 5);
    // The first was evicted: it comes back for one more AssumeRole.
    let first = registries.registry_for(&accounts[0]).await.unwrap();
    first.list_repositories().await.unwrap();
    assert_eq!(assume_role_calls() - before, 6);
    assert_eq!(registries.kept().await, 2);
}
