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
    document.statement.iter().find_map(exempted).map_or_else(
        || Writers::Anyone("no statement of the audit bus's policy denies events:PutEvents to other principals".into()),
        Writers::Only,
    )
}

/// The principals a statement exempts from denying everyone else
/// `events:PutEvents`, when it is such a statement: `Deny`, every
/// principal, the action, and no condition but the exemption (and the
/// `Null` guard that spares principals with no ARN).
fn exempted(s: &Statement) -> Option<Vec<String>> {
    let puts = s.action.as_ref().is_some_and(|a| {
        a.items()
            .iter()
            .any(|x| matches!(*x, "events:PutEvents" | "events:*" | "*"))
    });
    if s.effect != Effect::Deny || !s.principal.as_ref().is_some_and(Principal::everyone) || !puts {
        return None;
    }
    let mut exempt = None;
    for (operator, tests) in &s.condition {
        for (key, values) in tests {
            let on_arn = key.eq_ignore_ascii_case(PRINCIPAL_ARN);
            match operator.as_str() {
                "ArnNotLike" | "ArnNotEquals" | "StringNotLike" | "StringNotEquals" if on_arn => {
                    exempt = Some(values.items().into_iter().map(str::to_owned).collect());
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
        // A denial narrowed by another condition leaves the rest free.
        let narrowed = deny(
            r#"{"ArnNotLike":{"aws:PrincipalArn":["arn:aws:iam::1:role/f"]},"StringEquals":{"aws:PrincipalAccount":"2"}}"#,
        );
        assert!(matches!(audit_writers(BUS, Some(&narrowed)), Writers::Anyone(_)));
    }
}
