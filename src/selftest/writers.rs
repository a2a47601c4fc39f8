//! Who may put a record on a stack's audit bus, read from the bus's
//! resource policy (pure). The template's created bus denies
//! `events:PutEvents` to every principal but the function's role and
//! `AuditWriterArns` (docs/audit.md); a bus without that denial lets any
//! principal of the account allowed `events:PutEvents` write a record that
//! looks like the function's.

use std::collections::BTreeMap;

use serde::Deserialize;

/// What a bus's policy allows of writers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Writers {
    /// Only these principals (ARN patterns, as `ArnNotLike` takes them).
    Only(Vec<String>),
    /// Any principal of the account allowed `events:PutEvents`, and why.
    Anyone(String),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn items(&self) -> Vec<&str> {
        match self {
            OneOrMany::One(s) => vec![s.as_str()],
            OneOrMany::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
enum Effect {
    Allow,
    Deny,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Principal {
    Named(String),
    Typed(BTreeMap<String, OneOrMany>),
}

impl Principal {
    fn everyone(&self) -> bool {
        match self {
            Principal::Named(s) => s == "*",
            Principal::Typed(m) => m.get("AWS").is_some_and(|p| p.items() == ["*"]),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Statement {
    effect: Effect,
    principal: Option<Principal>,
    action: Option<OneOrMany>,
    resource: Option<OneOrMany>,
    #[serde(default)]
    condition: BTreeMap<String, BTreeMap<String, OneOrMany>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Document {
    #[serde(default)]
    statement: Vec<Statement>,
}

const PRINCIPAL_ARN: &str = "aws:principalarn";

/// The writers `policy` (the bus's resource policy as `DescribeEventBus`
/// gives it; `None`: it has none) leaves on the bus `bus_arn`.
pub fn audit_writers(bus_arn: &str, policy: Option<&str>) -> Writers {
    if bus_arn.ends_with(":event-bus/default") {
        return Writers::Anyone("the stack writes to the account's default bus (AuditBus=default)".into());
    }
    let Some(policy) = policy else {
        return Writers::Anyone("the audit bus has no resource policy".into());
    };
    let Ok(document) = serde_json::from_str::<Document>(policy) else {
        return Writers::Anyone("the audit bus's resource policy could not be read".into());
    };
    let Some(exempt) = document.statement.iter().find_map(|s| exempted(s, bus_arn)) else {
        return Writers::Anyone(
            "no statement of the audit bus's policy denies events:PutEvents to other principals".into(),
        );
    };
    match exempt.iter().find(|w| covers_every_role(w)) {
        Some(w) => Writers::Anyone(format!(
            "the audit bus's policy exempts {w}, which covers every principal of an account"
        )),
        None => Writers::Only(exempt),
    }
}

/// Whether an exemption pattern names every role or user of an account
/// (`*`, `arn:aws:iam::*:...`, `arn:aws:iam::A:*`, `...:role/*`).
fn covers_every_role(pattern: &str) -> bool {
    let parts: Vec<&str> = pattern.splitn(6, ':').collect();
    let [_, _, _, _, account, resource] = parts.as_slice() else {
        return true;
    };
    account.contains(['*', '?'])
        || resource.starts_with(['*', '?'])
        || ["role/", "user/"].iter().any(|kind| {
            resource
                .strip_prefix(kind)
                .is_some_and(|rest| rest.starts_with(['*', '?']))
        })
}

/// The principals a statement exempts from denying everyone else
/// `events:PutEvents`, when it is such a statement: `Deny`, every
/// principal, the action, and no condition but the exemption (and the
/// `Null` guard that spares principals with no ARN).
fn exempted(s: &Statement, bus_arn: &str) -> Option<Vec<String>> {
    let on_the_bus = s
        .resource
        .as_ref()
        .is_none_or(|r| r.items().iter().any(|x| *x == "*" || *x == bus_arn));
    if !on_the_bus {
        return None;
    }
    let puts = s.action.as_ref().is_some_and(|a| {
        a.items()
            .iter()
            .any(|x| matches!(*x, "events:PutEvents" | "events:*" | "*"))
    });
    if s.effect != Effect::Deny || !s.principal.as_ref().is_some_and(Principal::everyone) || !puts {
        return None;
    }
    let mut exempt: Option<Vec<String>> = None;
    for (operator, tests) in &s.condition {
        for (key, values) in tests {
            let on_arn = key.eq_ignore_ascii_case(PRINCIPAL_ARN);
            match operator.as_str() {
                // Several negated operators: the denial spares what any of them spares.
                "ArnNotLike" | "ArnNotEquals" | "StringNotLike" | "StringNotEquals" if on_arn => {
                    exempt
                        .get_or_insert_with(Vec::new)
                        .extend(values.items().into_iter().map(str::to_owned));
                }
                "Null" if on_arn && values.items() == ["false"] => {}
                _ => return None,
            }
        }
    }
    exempt
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUS: &str = "arn:aws:events:us-east-1:123456789012:event-bus/s-audit";

    fn deny(condition: &str) -> String {
        format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Sid":"OnlyTheServiceWritesAuditRecords","Effect":"Deny",
               "Principal":"*","Action":"events:PutEvents","Resource":"{BUS}","Condition":{condition}}}]}}"#
        )
    }

    #[test]
    fn the_templates_policy_leaves_only_the_function_and_the_named_operators() {
        let policy = deny(
            r#"{"Null":{"aws:PrincipalArn":"false"},"ArnNotLike":{"aws:PrincipalArn":
               ["arn:aws:iam::123456789012:role/s-FunctionRole-X","arn:aws:iam::123456789012:role/platform-*"]}}"#,
        );
        assert_eq!(
            audit_writers(BUS, Some(&policy)),
            Writers::Only(vec![
                "arn:aws:iam::123456789012:role/s-FunctionRole-X".into(),
                "arn:aws:iam::123456789012:role/platform-*".into()
            ])
        );
    }

    #[test]
    fn a_bus_anyone_in_the_account_may_write_to_is_said_so() {
        for (bus, policy) in [
            ("arn:aws:events:us-east-1:123456789012:event-bus/default", None),
            (BUS, None),
            (BUS, Some("not json")),
            // An Allow grants; it takes nobody's right away.
            (
                BUS,
                Some(
                    r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":"events:PutEvents"}]}"#,
                ),
            ),
        ] {
            assert!(
                matches!(audit_writers(bus, policy), Writers::Anyone(_)),
                "{bus} {policy:?}"
            );
        }
        // An exemption of every role, or a denial on another bus, guards nothing.
        for wide in [
            "*",
            "arn:aws:iam::123456789012:*",
            "arn:aws:iam::123456789012:role/*",
            "arn:aws:iam::*:role/f",
        ] {
            let policy = deny(&format!(
                r#"{{"ArnNotLike":{{"aws:PrincipalArn":["arn:aws:iam::1:role/f","{wide}"]}}}}"#
            ));
            assert!(
                matches!(audit_writers(BUS, Some(&policy)), Writers::Anyone(_)),
                "{wide}"
            );
        }
        let elsewhere = deny(r#"{"ArnNotLike":{"aws:PrincipalArn":["arn:aws:iam::1:role/f"]}}"#)
            .replace(BUS, "arn:aws:events:us-east-1:123456789012:event-bus/other");
        assert!(matches!(audit_writers(BUS, Some(&elsewhere)), Writers::Anyone(_)));
        // Two negated operators: the union is what is spared.
        let two = deny(
            r#"{"ArnNotLike":{"aws:PrincipalArn":["arn:aws:iam::1:role/f"]},"StringNotEquals":{"aws:PrincipalArn":["arn:aws:iam::1:role/g"]}}"#,
        );
        assert_eq!(
            audit_writers(BUS, Some(&two)),
            Writers::Only(vec!["arn:aws:iam::1:role/f".into(), "arn:aws:iam::1:role/g".into()])
        );
        // A denial narrowed by another condition leaves the rest free.
        let narrowed = deny(
            r#"{"ArnNotLike":{"aws:PrincipalArn":["arn:aws:iam::1:role/f"]},"StringEquals":{"aws:PrincipalAccount":"2"}}"#,
        );
        assert!(matches!(audit_writers(BUS, Some(&narrowed)), Writers::Anyone(_)));
    }
}
