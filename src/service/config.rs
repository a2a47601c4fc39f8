//! Service configuration from the environment, validated once at start-up.
//!
//! The policy comes from [`crate::policy::load`]; the settings here are the
//! service's own. Every error names the variable.

use std::collections::BTreeMap;

use crate::oci::names::AccountId;
use crate::policy::{PolicyError, PolicySet, load};
use crate::service::metrics::{DEFAULT_NAMESPACE, MetricsConfig};

/// Audit bus name or ARN (default: `default`).
pub const ENV_AUDIT_BUS: &str = "ECR_REMEDIATOR_AUDIT_BUS";
/// The log group the audit bus's rule delivers records to: a redelivered
/// event reads an earlier delivery's checkpoint back from it (unset: no
/// read-back; the `audit` command reads the same variable).
pub const ENV_AUDIT_LOG_GROUP: &str = "ECR_REMEDIATOR_AUDIT_LOG_GROUP";
/// Client-side `PutImage` calls per second (default 2).
pub const ENV_PUT_TPS: &str = "ECR_REMEDIATOR_PUT_TPS";
/// `PutImage` calls allowed at once before pacing starts (default 4).
pub const ENV_PUT_BURST: &str = "ECR_REMEDIATOR_PUT_BURST";
/// Attempts per AWS call, the first included (default 10).
pub const ENV_MAX_ATTEMPTS: &str = "ECR_REMEDIATOR_MAX_ATTEMPTS";
/// The queue's `maxReceiveCount`: the record of the last delivery is final.
pub const ENV_MAX_RECEIVE_COUNT: &str = "ECR_REMEDIATOR_MAX_RECEIVE_COUNT";
/// The push queue's URL: where a scheduled sweep enqueues its requests.
pub const ENV_QUEUE_URL: &str = "ECR_REMEDIATOR_QUEUE_URL";
/// Comma-separated repository name prefixes a scheduled sweep covers (empty: all).
pub const ENV_SWEEP_PREFIXES: &str = "ECR_REMEDIATOR_SWEEP_PREFIXES";

/// `true` (default) or `false`: emit metrics (embedded metric format) with each record's log line.
pub const ENV_METRICS: &str = "ECR_REMEDIATOR_METRICS";
/// CloudWatch namespace of the metrics (default `ECRRemediator`).
pub const ENV_METRICS_NAMESPACE: &str = "ECR_REMEDIATOR_METRICS_NAMESPACE";
/// `true` to add per-repository metrics (default `false`: one custom metric per repository).
pub const ENV_METRICS_PER_REPOSITORY: &str = "ECR_REMEDIATOR_METRICS_PER_REPOSITORY";

/// Organisation-wide hub: the role to assume in member accounts (its name,
/// the same in each; see `infra/member.yaml`). Unset: act in this account only.
pub const ENV_MEMBER_ROLE: &str = "ECR_REMEDIATOR_MEMBER_ROLE";
/// The `sts:ExternalId` the member role requires (at least 16 characters).
pub const ENV_EXTERNAL_ID: &str = "ECR_REMEDIATOR_EXTERNAL_ID";
/// This deployment's own account id: its pushes are handled without a role.
pub const ENV_ACCOUNT_ID: &str = "ECR_REMEDIATOR_ACCOUNT_ID";
/// Comma-separated member account ids the scheduled sweep (and `sweep
/// --all-accounts`) covers besides this one.
pub const ENV_MEMBER_ACCOUNTS: &str = "ECR_REMEDIATOR_MEMBER_ACCOUNTS";

/// Default `PutImage` rate: well under ECR's 10 TPS per account and region,
/// which every `docker push` shares.
pub const DEFAULT_PUT_TPS: f64 = 2.0;
/// Default `PutImage` burst: a two-platform push's writes go out without waiting.
pub const DEFAULT_PUT_BURST: u32 = 4;
/// Default attempts per AWS call.
pub const DEFAULT_MAX_ATTEMPTS: u32 = crate::engine::retry::DEFAULT_ATTEMPTS;

/// Everything the service needs besides AWS's own configuration.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The policies.
    pub policies: PolicySet,
    /// The SSM parameter holding the policy (TOML), re-read while running
    /// (see [`crate::service::live_policy`]); [`Self::policies`] is then unused.
    pub policy_parameter: Option<String>,
    /// The organisational units rules may name (for a reloaded policy).
    pub organizational_units: crate::policy::organization::OrganizationalUnits,
    /// Whether the deployment's role may delete (a policy that deletes is
    /// refused otherwise).
    pub deletion_allowed: bool,
    /// The audit bus.
    pub audit_bus: String,
    /// The log group the audit records reach, when known.
    pub audit_log_group: Option<String>,
    /// `PutImage` calls per second.
    pub put_tps: f64,
    /// `PutImage` calls allowed at once.
    pub put_burst: u32,
    /// Attempts per AWS call.
    pub max_attempts: u32,
    /// The queue's `maxReceiveCount`, when known.
    pub max_receive_count: Option<u32>,
    /// The push queue's URL, for scheduled sweeps.
    pub queue_url: Option<String>,
    /// Repository prefixes of scheduled sweeps (empty: every repository).
    pub sweep_prefixes: Vec<String>,
    /// Metrics to emit with each record's log line (none: off).
    pub metrics: Option<MetricsConfig>,
    /// Member accounts (organisation-wide hub), when configured.
    pub members: Option<Members>,
    /// This deployment's own account ([`ENV_ACCOUNT_ID`]), when given.
    pub account_id: Option<AccountId>,
}

/// How the hub acts in member accounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Members {
    /// The member role's name.
    pub role_name: String,
    /// The external id its trust policy requires.
    pub external_id: String,
    /// This deployment's own account (handled without a role).
    pub own_account: AccountId,
    /// The member accounts sweeps cover (pushes come from any member).
    pub accounts: Vec<AccountId>,
}

/// A stack's `RepositoryPrefixes` as the template joins them (`a/,b-`):
/// the one reading of its scope, for the function's sweeps and `selftest`.
/// Empty: every repository.
pub fn prefix_list(joined: &str) -> Vec<String> {
    joined
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Invalid configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The policy is invalid.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// A service setting is invalid.
    #[error("invalid configuration: {variable}={value:?}: {problem}")]
    Setting {
        /// The variable.
        variable: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        problem: &'static str,
    },
}

/// Parses [`ENV_MEMBER_ACCOUNTS`]: comma-separated 12-digit ids, blanks
/// ignored, duplicates dropped, order kept.
pub fn member_accounts(text: &str) -> Result<Vec<AccountId>, ConfigError> {
    let mut out: Vec<AccountId> = Vec::new();
    for a in text.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        let a = AccountId::parse(a).map_err(|_| ConfigError::Setting {
            variable: ENV_MEMBER_ACCOUNTS,
            value: a.to_owned(),
            problem: "must be comma-separated 12-digit account ids",
        })?;
        if !out.contains(&a) {
            out.push(a);
        }
    }
    Ok(out)
}

impl ServiceConfig {
    /// Reads the configuration from `vars` (reading a policy file with `read_file`).
    pub fn from_vars<E>(
        vars: &BTreeMap<String, String>,
        read_file: impl FnOnce(&str) -> Result<String, E>,
    ) -> Result<Self, ConfigError>
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        let policies = load(vars, read_file)?;
        let get = |k: &str| vars.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
        let policy_parameter = get(crate::policy::ENV_POLICY_PARAMETER).map(str::to_owned);
        let organizational_units = crate::policy::organizational_units(vars)?;
        // `load` refused anything else.
        let deletion_allowed = get(crate::policy::ENV_DELETION_ALLOWED).is_none_or(|v| v.eq_ignore_ascii_case("true"));
        let audit_bus = get(ENV_AUDIT_BUS).unwrap_or("default").to_owned();
        let audit_log_group = get(ENV_AUDIT_LOG_GROUP).map(str::to_owned);
        let put_tps = match get(ENV_PUT_TPS) {
            None => DEFAULT_PUT_TPS,
            Some(v) => match v.parse::<f64>() {
                Ok(n) if n.is_finite() && n > 0.0 && n <= 10.0 => n,
                _ => {
                    return Err(ConfigError::Setting {
                        variable: ENV_PUT_TPS,
                        value: v.to_owned(),
                        problem: "must be a number above 0 and at most 10 (ECR's PutImage quota)",
                    });
                }
            },
        };
        let whole = |variable: &'static str, range: std::ops::RangeInclusive<u32>, problem: &'static str| {
            get(variable)
                .map(|v| match v.parse::<u32>() {
                    Ok(n) if range.contains(&n) => Ok(n),
                    _ => Err(ConfigError::Setting {
                        variable,
                        value: v.to_owned(),
                        problem,
                    }),
                })
                .transpose()
        };
        let max_attempts =
            whole(ENV_MAX_ATTEMPTS, 1..=50, "must be a whole number from 1 to 50")?.unwrap_or(DEFAULT_MAX_ATTEMPTS);
        let put_burst =
            whole(ENV_PUT_BURST, 1..=10, "must be a whole number from 1 to 10")?.unwrap_or(DEFAULT_PUT_BURST);
        let max_receive_count = whole(ENV_MAX_RECEIVE_COUNT, 1..=1000, "must be a whole number from 1 to 1000")?;
        let queue_url = get(ENV_QUEUE_URL).map(str::to_owned);
        let sweep_prefixes = get(ENV_SWEEP_PREFIXES).map(prefix_list).unwrap_or_default();
        let flag = |variable: &'static str, default: bool| match get(variable) {
            None => Ok(default),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
            Some(v) => Err(ConfigError::Setting {
                variable,
                value: v.to_owned(),
                problem: "must be true or false",
            }),
        };
        let namespace = get(ENV_METRICS_NAMESPACE).unwrap_or(DEFAULT_NAMESPACE);
        if namespace.len() > 255 || namespace.starts_with(':') || namespace.contains(|c: char| c.is_control()) {
            return Err(ConfigError::Setting {
                variable: ENV_METRICS_NAMESPACE,
                value: namespace.to_owned(),
                problem: "must be a CloudWatch namespace (1 to 255 printable characters, not starting with ':')",
            });
        }
        let metrics = flag(ENV_METRICS, true)?
            .then(|| -> Result<MetricsConfig, ConfigError> {
                Ok(MetricsConfig {
                    namespace: namespace.to_owned(),
                    per_repository: flag(ENV_METRICS_PER_REPOSITORY, false)?,
                })
            })
            .transpose()?;
        let members = match get(ENV_MEMBER_ROLE) {
            None => None,
            Some(role) => {
                let setting = |variable: &'static str, value: &str, problem: &'static str| ConfigError::Setting {
                    variable,
                    value: value.to_owned(),
                    problem,
                };
                if role.len() > 64 || !role.chars().all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c)) {
                    return Err(setting(ENV_MEMBER_ROLE, role, "must be an IAM role name"));
                }
                let external_id = get(ENV_EXTERNAL_ID).unwrap_or_default();
                if external_id.len() < 16 {
                    return Err(setting(
                        ENV_EXTERNAL_ID,
                        "<redacted>",
                        "must be set, at least 16 characters, when ECR_REMEDIATOR_MEMBER_ROLE is",
                    ));
                }
                let given = get(ENV_ACCOUNT_ID).unwrap_or_default();
                let account = AccountId::parse(given).map_err(|_| {
                    setting(
                        ENV_ACCOUNT_ID,
                        given,
                        "must be this deployment's 12-digit account id when ECR_REMEDIATOR_MEMBER_ROLE is set",
                    )
                })?;
                let accounts = member_accounts(get(ENV_MEMBER_ACCOUNTS).unwrap_or_default())?;
                Some(Members {
                    role_name: role.to_owned(),
                    external_id: external_id.to_owned(),
                    accounts: accounts.into_iter().filter(|a| *a != account).collect(),
                    own_account: account,
                })
            }
        };
        let account_id = match get(ENV_ACCOUNT_ID) {
            None => None,
            Some(a) => Some(AccountId::parse(a).map_err(|_| ConfigError::Setting {
                variable: ENV_ACCOUNT_ID,
                value: a.to_owned(),
                problem: "must be a 12-digit account id",
            })?),
        };
        Ok(ServiceConfig {
            account_id,
            members,
            metrics,
            policies,
            policy_parameter,
            organizational_units,
            deletion_allowed,
            audit_bus,
            audit_log_group,
            put_tps,
            put_burst,
            max_attempts,
            max_receive_count,
            queue_url,
            sweep_prefixes,
        })
    }

    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        let vars: BTreeMap<String, String> = std::env::vars().collect();
        Self::from_vars(&vars, |path: &str| std::fs::read_to_string(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn no_file(_: &str) -> Result<String, std::io::Error> {
        Err(std::io::Error::other("no file"))
    }

    #[test]
    fn defaults_are_safe() {
        let c = ServiceConfig::from_vars(&vars(&[]), no_file).unwrap();
        assert_eq!(c.audit_bus, "default");
        assert!((c.put_tps - DEFAULT_PUT_TPS).abs() < f64::EPSILON);
        assert_eq!(c.max_attempts, DEFAULT_MAX_ATTEMPTS);
        assert_eq!(c.policies.default.mode, crate::policy::Mode::Promote);
        assert!(!c.policies.default.delete_orphans);
        assert_eq!(c.metrics, Some(MetricsConfig::default()));
        let off = ServiceConfig::from_vars(&vars(&[(ENV_METRICS, "false")]), no_file).unwrap();
        assert_eq!(off.metrics, None);
        let per_repo = ServiceConfig::from_vars(
            &vars(&[
                (ENV_METRICS_PER_REPOSITORY, "TRUE"),
                (ENV_METRICS_NAMESPACE, "Platform/ECR"),
            ]),
            no_file,
        )
        .unwrap();
        assert_eq!(
            per_repo.metrics,
            Some(MetricsConfig {
                namespace: "Platform/ECR".into(),
                per_repository: true
            })
        );
    }

    #[test]
    fn a_hub_needs_its_external_id_and_account() {
        let hub = [
            (ENV_MEMBER_ROLE, "ecr-remediator-member"),
            (ENV_EXTERNAL_ID, "0123456789abcdef"),
            (ENV_ACCOUNT_ID, "111122223333"),
        ];
        let c = ServiceConfig::from_vars(&vars(&hub), no_file).unwrap();
        assert_eq!(
            c.members,
            Some(Members {
                role_name: "ecr-remediator-member".into(),
                external_id: "0123456789abcdef".into(),
                own_account: AccountId::parse("111122223333").unwrap(),
                accounts: Vec::new(),
            })
        );
        let mut with_members = hub.to_vec();
        with_members.push((ENV_MEMBER_ACCOUNTS, " 222222222222,111122223333, 222222222222 ,"));
        let c = ServiceConfig::from_vars(&vars(&with_members), no_file).unwrap();
        assert_eq!(
            c.members.unwrap().accounts,
            [AccountId::parse("222222222222").unwrap()],
            "own account and repeats dropped"
        );
        with_members.push((ENV_MEMBER_ACCOUNTS, "2222"));
        let err = ServiceConfig::from_vars(&vars(&with_members), no_file)
            .unwrap_err()
            .to_string();
        assert!(err.contains(ENV_MEMBER_ACCOUNTS), "{err}");
        assert_eq!(ServiceConfig::from_vars(&vars(&[]), no_file).unwrap().members, None);
        for (i, bad, variable) in [
            (1, "short", ENV_EXTERNAL_ID),
            (2, "1111", ENV_ACCOUNT_ID),
            (0, "no spaces allowed", ENV_MEMBER_ROLE),
        ] {
            let mut v = hub;
            v[i].1 = bad;
            let err = ServiceConfig::from_vars(&vars(&v), no_file).unwrap_err().to_string();
            assert!(err.contains(variable), "{err}");
            assert!(
                !err.contains("0123456789abcdef"),
                "the external id is never printed: {err}"
            );
        }
    }

    #[test]
    fn errors_name_the_variable() {
        for (k, v) in [
            (ENV_PUT_TPS, "50"),
            (ENV_PUT_TPS, "fast"),
            (ENV_MAX_ATTEMPTS, "0"),
            (ENV_METRICS, "yes"),
            (ENV_METRICS_NAMESPACE, ":bad"),
        ] {
            let err = ServiceConfig::from_vars(&vars(&[(k, v)]), no_file)
                .unwrap_err()
                .to_string();
            assert!(err.contains(k), "{err}");
        }
        let err = ServiceConfig::from_vars(&vars(&[("ECR_REMEDIATOR_MODE", "yolo")]), no_file)
            .unwrap_err()
            .to_string();
        assert!(err.contains("ECR_REMEDIATOR_MODE") || err.contains("mode"), "{err}");
    }
}
