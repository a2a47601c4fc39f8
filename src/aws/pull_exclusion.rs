//! Whether the CLI's own reads count as pulls.
//!
//! ECR updates an image's `lastRecordedPullTime` when it is read, except for
//! principals on the registry's pull-time update exclusion list. A sweep or
//! a dry run from a principal not on it marks every manifest it read as
//! recently pulled, and the deletion gate then keeps them all for
//! `keep_if_pulled_within` (30 days by default), in this run and in the
//! deployed function's. The templates list the function's role; an
//! operator's role must be listed too (or the run made through the stack's
//! role). One `ListPullTimeUpdateExclusions` before a run that reads images.

use super::registry_error;
use crate::engine::registry::RegistryError;

/// An IAM principal as the exclusion list compares it: account, kind
/// (`role` or `user`) and name. A role's path is not in its sessions' ARNs,
/// so it does not count.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Principal<'a> {
    partition: &'a str,
    account: &'a str,
    kind: &'a str,
    name: &'a str,
}

/// The principal an ARN names: an IAM role or user (with any path), or an
/// assumed-role session (`arn:aws:sts::A:assumed-role/NAME/SESSION`), which
/// is its role. `None` for anything else (federated users, root).
fn principal(arn: &str) -> Option<Principal<'_>> {
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(partition), Some(service), Some(""), Some(account), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    let (kind, rest) = resource.split_once('/')?;
    let name = match (service, kind) {
        ("sts", "assumed-role") => rest.split('/').next()?,
        ("iam", "role" | "user") => rest.rsplit('/').next()?,
        _ => return None,
    };
    let kind = if kind == "assumed-role" { "role" } else { kind };
    (!name.is_empty()).then_some(Principal {
        partition,
        account,
        kind,
        name,
    })
}

/// The IAM ARN to put on the list for `caller` (a session's role).
pub fn listable_arn(caller: &str) -> String {
    match principal(caller) {
        Some(p) => format!("arn:{}:iam::{}:{}/{}", p.partition, p.account, p.kind, p.name),
        None => caller.to_owned(),
    }
}

/// Whether `caller` (an STS caller identity ARN) is on `exclusions`.
pub fn excluded(caller: &str, exclusions: &[String]) -> bool {
    let Some(me) = principal(caller) else {
        return false;
    };
    exclusions.iter().any(|e| principal(e).as_ref() == Some(&me))
}

/// Every principal on the registry's exclusion list (at most a few dozen:
/// ECR's quota), page by page.
async fn listed(sdk: &aws_config::SdkConfig) -> Result<Vec<String>, RegistryError> {
    let client = aws_sdk_ecr::Client::new(sdk);
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = client
            .list_pull_time_update_exclusions()
            .set_next_token(token.take())
            .send()
            .await
            .map_err(|e| registry_error("ListPullTimeUpdateExclusions", e))?;
        out.extend(page.pull_time_update_exclusions().iter().cloned());
        match page.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_owned()),
            _ => return Ok(out),
        }
    }
}

/// One line saying that `caller`'s reads count as pulls, with the fix, or
/// that it could not be told; `None` when the caller is on the list.
pub async fn note(sdk: &aws_config::SdkConfig, caller: &str) -> Option<String> {
    match listed(sdk).await {
        Ok(list) if excluded(caller, &list) => None,
        Ok(_) => {
            let arn = listable_arn(caller);
            // A session's ARN does not carry its role's path; the role's own ARN does.
            let path = if caller.contains(":assumed-role/") {
                " (the role's ARN as IAM gives it: with its path, if it has one)"
            } else {
                ""
            };
            Some(format!(
                "note: {arn} is not on this registry's pull-time update exclusion list: every image this run reads \
                 counts as pulled and is kept from deletion for keep_if_pulled_within (30 days by default); add it \
                 (aws ecr register-pull-time-update-exclusion --principal-arn {arn}){path} or run through the \
                 stack's role"
            ))
        }
        Err(e) => Some(format!(
            "note: cannot tell whether this run's reads count as pulls ({e}): unless {} is on the registry's \
             pull-time update exclusion list, what it reads is kept from deletion for keep_if_pulled_within",
            listable_arn(caller)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_its_role_whatever_the_roles_path() {
        let list = vec![
            "arn:aws:iam::123456789012:role/platform/Operator".to_owned(),
            "arn:aws:iam::123456789012:user/ci".to_owned(),
        ];
        assert!(excluded("arn:aws:sts::123456789012:assumed-role/Operator/alice", &list));
        assert!(excluded("arn:aws:iam::123456789012:user/ci", &list));
        assert!(!excluded("arn:aws:sts::123456789012:assumed-role/Admin/alice", &list));
        assert!(!excluded(
            "arn:aws:sts::222222222222:assumed-role/Operator/alice",
            &list
        ));
        assert!(!excluded("arn:aws:iam::123456789012:root", &list));
        assert_eq!(
            listable_arn("arn:aws:sts::123456789012:assumed-role/Operator/alice"),
            "arn:aws:iam::123456789012:role/Operator"
        );
    }
}
