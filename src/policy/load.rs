//! Loading policies: the TOML file, the environment variables, and the
//! organisational-unit map, each checked field by field with a message
//! naming the field.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::oci::names::AccountId;
use crate::policy::glob::Glob;
use crate::policy::organization::OrganizationalUnits;
use crate::policy::repository_tag::RepositoryTagUse;
use crate::policy::template::TagTemplate;
use crate::policy::{Mode, PlatformSelector, Policy, PolicySet, Provenance, Rule};
use crate::vocabulary::Vocabulary;

impl PolicySet {
    /// Parses a policy file (TOML). See `policy.example.toml`. Rules naming
    /// organisational units match no account until
    /// [`Self::with_organizational_units`] fills them ([`load`] does).
    pub fn from_toml(text: &str) -> Result<Self, PolicyError> {
        let doc: FileDoc = toml::from_str(text).map_err(|e| PolicyError::Toml(e.to_string()))?;
        let default = match doc.default {
            Some(d) => d.apply_to(&Policy::default(), "default")?,
            None => Policy::default(),
        };
        let mut rules = Vec::with_capacity(doc.rules.len());
        for (i, r) in doc.rules.into_iter().enumerate() {
            let path = format!("rules[{i}]");
            if r.repositories.is_empty() && r.accounts.is_empty() && r.organizational_units.is_empty() {
                return Err(PolicyError::field(
                    format!("{path}.repositories"),
                    "must list at least one pattern (or the rule must name accounts or organizational units)",
                ));
            }
            if let Some(bad) = r
                .organizational_units
                .iter()
                .find(|ou| !crate::policy::organization::is_organizational_unit_id(ou))
            {
                return Err(PolicyError::field(
                    format!("{path}.organizational_units"),
                    format!("{bad:?} is not an organizational unit id (ou-xxxx-yyyyyyyy) or root id (r-xxxx)"),
                ));
            }
            let accounts = r
                .accounts
                .iter()
                .map(|a| AccountId::parse(a).map_err(|e| PolicyError::field(format!("{path}.accounts"), e.to_string())))
                .collect::<Result<Vec<_>, _>>()?;
            let repositories = r
                .repositories
                .iter()
                .map(|p| Glob::parse(p).map_err(|e| PolicyError::field(format!("{path}.repositories"), e.to_string())))
                .collect::<Result<Vec<_>, _>>()?;
            let name = r.name.clone().unwrap_or_else(|| path.clone());
            let policy = r.settings().apply_to(&default, &path)?;
            rules.push(Rule {
                name,
                repositories,
                accounts,
                organizational_units: r
                    .organizational_units
                    .iter()
                    .map(|ou| (ou.clone(), Vec::new()))
                    .collect(),
                policy,
            });
        }
        Ok(PolicySet { rules, default })
    }

    /// Fills each rule's organisational units with their accounts from
    /// `units`; a unit a rule names that the map lacks is refused, so a rule
    /// never silently matches nothing.
    pub fn with_organizational_units(mut self, units: &OrganizationalUnits) -> Result<Self, PolicyError> {
        for (i, rule) in self.rules.iter_mut().enumerate() {
            for (ou, accounts) in &mut rule.organizational_units {
                *accounts = units
                    .accounts(ou)
                    .ok_or_else(|| {
                        PolicyError::field(
                            format!("rules[{i}].organizational_units"),
                            format!("{ou} is not in {ENV_ORGANIZATIONAL_UNITS} (the OrganizationalUnits parameter)"),
                        )
                    })?
                    .to_vec();
            }
        }
        Ok(self)
    }

    /// Refuses a policy that would delete (its default or any rule) when the
    /// deployment cannot (its role has no `ecr:BatchDeleteImage`): the
    /// policy is never silently narrowed to what the role allows.
    pub fn within_deletion_permission(self, deletion_allowed: bool) -> Result<Self, PolicyError> {
        if deletion_allowed {
            return Ok(self);
        }
        let deleting = std::iter::once(("default", &self.default))
            .chain(self.rules.iter().map(|r| (r.name.as_str(), &r.policy)))
            .find(|(_, p)| p.delete_orphans);
        if let Some((name, _)) = deleting {
            return Err(PolicyError::field(
                if name == "default" {
                    "default.delete_orphans".to_owned()
                } else {
                    format!("rule {name:?}: delete_orphans")
                },
                format!(
                    "deletes, but this deployment's role cannot ({ENV_DELETION_ALLOWED}=false): deploy with \
                     DeleteOrphans=true, or set delete_orphans = false"
                ),
            ));
        }
        Ok(self)
    }

    /// Builds a single-default policy from `ECR_REMEDIATOR_*` variables
    /// (see [`ENV_VARS`]); unset or empty variables keep the defaults.
    pub fn from_env_vars(vars: &BTreeMap<String, String>) -> Result<Self, PolicyError> {
        let get = |k: &str| vars.get(k).map(String::as_str).filter(|v| !v.trim().is_empty());
        let bool_var = |k: &str| -> Result<Option<bool>, PolicyError> {
            get(k)
                .map(|v| match v.trim().to_ascii_lowercase().as_str() {
                    "true" | "1" | "yes" | "on" => Ok(true),
                    "false" | "0" | "no" | "off" => Ok(false),
                    _ => Err(PolicyError::field(k, format!("{v:?} is not a boolean (true/false)"))),
                })
                .transpose()
        };
        let keep = get(ENV_KEEP_TAG).map(|v| match v.trim().to_ascii_lowercase().as_str() {
            "false" | "off" | "none" | "disabled" => KeepDoc::Enabled(false),
            "true" | "on" => KeepDoc::Enabled(true),
            _ => KeepDoc::Template(v.to_owned()),
        });
        let max_deletes = get(ENV_MAX_DELETES)
            .map(|v| {
                v.trim()
                    .parse::<u32>()
                    .map_err(|_| PolicyError::field(ENV_MAX_DELETES, format!("{v:?} is not a non-negative integer")))
            })
            .transpose()?;
        let settings = SettingsDoc {
            mode: get(ENV_MODE).map(str::to_owned),
            tag_template: get(ENV_TAG_TEMPLATE).map(str::to_owned),
            keep_tag: keep,
            promote_platform: get(ENV_PROMOTE_PLATFORM).map(str::to_owned),
            delete_orphans: bool_var(ENV_DELETE_ORPHANS)?,
            max_deletes,
            dry_run: bool_var(ENV_DRY_RUN)?,
            provenance: get(ENV_PROVENANCE).map(str::to_owned),
            repository_tag: get(ENV_REPOSITORY_TAG).map(str::to_owned),
            keep_tag_history: get(ENV_KEEP_TAG_HISTORY).map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect()
            }),
            keep_if_pulled_within: get(ENV_KEEP_IF_PULLED_WITHIN).map(str::to_owned),
            keep_if_in_use: bool_var(ENV_KEEP_IF_IN_USE)?,
            grace_period: get(ENV_GRACE_PERIOD).map(str::to_owned),
            promote_signed_index: bool_var(ENV_PROMOTE_SIGNED_INDEX)?,
            promote_when_lambda_refuses: bool_var(ENV_PROMOTE_WHEN_LAMBDA_REFUSES)?,
        };
        let default = settings.apply_to_env(&Policy::default())?;
        Ok(PolicySet {
            rules: Vec::new(),
            default,
        })
    }
}

/// Path of a TOML policy file; when set, no other policy variable may be set.
pub const ENV_POLICY_FILE: &str = "ECR_REMEDIATOR_POLICY_FILE";
/// The name of an SSM parameter holding the policy file's text (TOML),
/// reloaded while the service runs (see `service::live_policy`).
pub const ENV_POLICY_PARAMETER: &str = "ECR_REMEDIATOR_POLICY_PARAMETER";
/// `false` when the deployment's role cannot delete (the template sets it
/// from `DeleteOrphans`): a policy that deletes is then refused.
pub const ENV_DELETION_ALLOWED: &str = "ECR_REMEDIATOR_DELETION_ALLOWED";
/// `observe | tag | promote | strip`.
pub const ENV_MODE: &str = "ECR_REMEDIATOR_MODE";
/// Derived-tag template.
pub const ENV_TAG_TEMPLATE: &str = "ECR_REMEDIATOR_TAG_TEMPLATE";
/// Keep-tag template, or `false` to disable.
pub const ENV_KEEP_TAG: &str = "ECR_REMEDIATOR_KEEP_TAG";
/// Platform to promote, e.g. `linux/arm64`.
pub const ENV_PROMOTE_PLATFORM: &str = "ECR_REMEDIATOR_PROMOTE_PLATFORM";
/// `true` to delete orphaned attestations.
pub const ENV_DELETE_ORPHANS: &str = "ECR_REMEDIATOR_DELETE_ORPHANS";
/// Deletion cap per image.
pub const ENV_MAX_DELETES: &str = "ECR_REMEDIATOR_MAX_DELETES";
/// `true` to plan without writing.
pub const ENV_DRY_RUN: &str = "ECR_REMEDIATOR_DRY_RUN";
/// `index` (default) or `referrers`.
pub const ENV_PROVENANCE: &str = "ECR_REMEDIATOR_PROVENANCE";
/// `allowed` (default), `ignored` or `required`: what a repository's
/// `ecr-remediator:mode` tag may do.
pub const ENV_REPOSITORY_TAG: &str = "ECR_REMEDIATOR_REPOSITORY_TAG";
/// Keep-tag templates used before, comma-separated (`{tag}-orig,kept-{tag}`).
pub const ENV_KEEP_TAG_HISTORY: &str = "ECR_REMEDIATOR_KEEP_TAG_HISTORY";
/// A window (`30d`, `12h`) or `off`: keep deletion candidates pulled within it.
pub const ENV_KEEP_IF_PULLED_WITHIN: &str = "ECR_REMEDIATOR_KEEP_IF_PULLED_WITHIN";
/// `true` (default) to keep deletion candidates that a workload uses (ECS, Lambda).
pub const ENV_KEEP_IF_IN_USE: &str = "ECR_REMEDIATOR_KEEP_IF_IN_USE";
/// How long after a push its deletions wait (`15m`, `0s`).
pub const ENV_GRACE_PERIOD: &str = "ECR_REMEDIATOR_GRACE_PERIOD";
/// `true` to promote even when only the pushed index is signed.
pub const ENV_PROMOTE_SIGNED_INDEX: &str = "ECR_REMEDIATOR_PROMOTE_SIGNED_INDEX";
/// `true` (default) to promote an image Lambda would refuse (with a warning
/// in the record); `false` keeps such a push in tag mode.
pub const ENV_PROMOTE_WHEN_LAMBDA_REFUSES: &str = "ECR_REMEDIATOR_PROMOTE_WHEN_LAMBDA_REFUSES";
/// The organisational-unit map rules may refer to:
/// `ou-aaaa-bbbbbbbb=111111111111,222222222222;ou-cccc-dddddddd=333333333333`.
/// Read with a policy file or without one.
pub const ENV_ORGANIZATIONAL_UNITS: &str = "ECR_REMEDIATOR_ORGANIZATIONAL_UNITS";

/// Every policy variable.
pub const ENV_VARS: [&str; 16] = [
    ENV_POLICY_FILE,
    ENV_MODE,
    ENV_TAG_TEMPLATE,
    ENV_KEEP_TAG,
    ENV_PROMOTE_PLATFORM,
    ENV_DELETE_ORPHANS,
    ENV_MAX_DELETES,
    ENV_DRY_RUN,
    ENV_PROVENANCE,
    ENV_REPOSITORY_TAG,
    ENV_KEEP_TAG_HISTORY,
    ENV_KEEP_IF_PULLED_WITHIN,
    ENV_KEEP_IF_IN_USE,
    ENV_GRACE_PERIOD,
    ENV_PROMOTE_SIGNED_INDEX,
    ENV_PROMOTE_WHEN_LAMBDA_REFUSES,
];

/// The organisational-unit map of [`ENV_ORGANIZATIONAL_UNITS`] (empty when unset).
pub fn organizational_units(vars: &BTreeMap<String, String>) -> Result<OrganizationalUnits, PolicyError> {
    match vars.get(ENV_ORGANIZATIONAL_UNITS).filter(|v| !v.trim().is_empty()) {
        Some(text) => {
            OrganizationalUnits::parse(text).map_err(|problem| PolicyError::field(ENV_ORGANIZATIONAL_UNITS, problem))
        }
        None => Ok(OrganizationalUnits::default()),
    }
}

/// Loads the policy from the environment: from the file named by
/// [`ENV_POLICY_FILE`] (read with `read_file`), else from the individual
/// variables. Setting both is refused, so no setting is silently ignored.
pub fn load<E>(
    vars: &BTreeMap<String, String>,
    read_file: impl FnOnce(&str) -> Result<String, E>,
) -> Result<PolicySet, PolicyError>
where
    E: std::error::Error + Send + Sync + 'static,
{
    let set = |k: &&&str| vars.get(**k).is_some_and(|v| !v.trim().is_empty());
    let units = match vars.get(ENV_ORGANIZATIONAL_UNITS).filter(|v| !v.trim().is_empty()) {
        Some(text) => {
            OrganizationalUnits::parse(text).map_err(|problem| PolicyError::field(ENV_ORGANIZATIONAL_UNITS, problem))?
        }
        None => OrganizationalUnits::default(),
    };
    let deletion_allowed = match vars.get(ENV_DELETION_ALLOWED).map(|v| v.trim().to_ascii_lowercase()) {
        None => true,
        Some(v) if v.is_empty() || v == "true" => true,
        Some(v) if v == "false" => false,
        Some(v) => {
            return Err(PolicyError::field(
                ENV_DELETION_ALLOWED,
                format!("{v:?} is not a boolean (true/false)"),
            ));
        }
    };
    if vars.get(ENV_POLICY_PARAMETER).is_some_and(|v| !v.trim().is_empty()) {
        let others: Vec<&str> = ENV_VARS.iter().filter(set).copied().collect();
        if !others.is_empty() {
            return Err(PolicyError::field(
                ENV_POLICY_PARAMETER,
                format!(
                    "is set, so the policy comes from that parameter; also setting {} would be ignored",
                    others.join(", ")
                ),
            ));
        }
        // The parameter is read (and re-read) by the service itself; until
        // then nothing may run on a placeholder: see `service::live_policy`.
        return Ok(PolicySet::default());
    }
    let policies = match vars.get(ENV_POLICY_FILE).filter(|v| !v.trim().is_empty()) {
        Some(path) => {
            let others: Vec<&str> = ENV_VARS[1..].iter().filter(set).copied().collect();
            if !others.is_empty() {
                return Err(PolicyError::field(
                    ENV_POLICY_FILE,
                    format!(
                        "is set, so the policy comes from that file; also setting {} would be ignored — \
                         move those settings into the file",
                        others.join(", ")
                    ),
                ));
            }
            let text = read_file(path).map_err(|e| PolicyError::Read {
                path: path.clone(),
                source: Box::new(e),
            })?;
            PolicySet::from_toml(&text).map_err(|e| e.in_file(path))?
        }
        None => PolicySet::from_env_vars(vars)?,
    };
    policies
        .with_organizational_units(&units)?
        .within_deletion_permission(deletion_allowed)
}

/// An invalid policy configuration.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A field has an invalid value.
    #[error("invalid policy: {field}: {problem}")]
    Field {
        /// The field's path (`rules[1].mode`) or variable name.
        field: String,
        /// What is wrong.
        problem: String,
    },
    /// The TOML does not parse (unknown field, wrong type, syntax).
    #[error("invalid policy file: {0}")]
    Toml(String),
    /// The policy file could not be read.
    #[error("cannot read policy file {path}")]
    Read {
        /// The path.
        path: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An error inside a named file.
    #[error("{path}: {inner}")]
    InFile {
        /// The file.
        path: String,
        /// The error.
        inner: Box<PolicyError>,
    },
}

impl PolicyError {
    fn field(field: impl Into<String>, problem: impl Into<String>) -> Self {
        PolicyError::Field {
            field: field.into(),
            problem: problem.into(),
        }
    }

    fn in_file(self, path: &str) -> Self {
        PolicyError::InFile {
            path: path.to_owned(),
            inner: Box::new(self),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    default: Option<SettingsDoc>,
    #[serde(default)]
    rules: Vec<RuleDoc>,
}

#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum KeepDoc {
    Enabled(bool),
    Template(String),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SettingsDoc {
    mode: Option<String>,
    tag_template: Option<String>,
    keep_tag: Option<KeepDoc>,
    promote_platform: Option<String>,
    delete_orphans: Option<bool>,
    max_deletes: Option<u32>,
    dry_run: Option<bool>,
    provenance: Option<String>,
    repository_tag: Option<String>,
    keep_tag_history: Option<Vec<String>>,
    keep_if_pulled_within: Option<String>,
    keep_if_in_use: Option<bool>,
    grace_period: Option<String>,
    promote_signed_index: Option<bool>,
    promote_when_lambda_refuses: Option<bool>,
}

/// A rule's keys: its own plus a copy of [`SettingsDoc`]'s (not `flatten`,
/// which would let unknown keys through and drop key names from errors).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleDoc {
    name: Option<String>,
    #[serde(default)]
    repositories: Vec<String>,
    #[serde(default)]
    accounts: Vec<String>,
    #[serde(default)]
    organizational_units: Vec<String>,
    mode: Option<String>,
    tag_template: Option<String>,
    keep_tag: Option<KeepDoc>,
    promote_platform: Option<String>,
    delete_orphans: Option<bool>,
    max_deletes: Option<u32>,
    dry_run: Option<bool>,
    provenance: Option<String>,
    repository_tag: Option<String>,
    keep_tag_history: Option<Vec<String>>,
    keep_if_pulled_within: Option<String>,
    keep_if_in_use: Option<bool>,
    grace_period: Option<String>,
    promote_signed_index: Option<bool>,
    promote_when_lambda_refuses: Option<bool>,
}

impl RuleDoc {
    fn settings(&self) -> SettingsDoc {
        SettingsDoc {
            mode: self.mode.clone(),
            tag_template: self.tag_template.clone(),
            keep_tag: self.keep_tag.clone(),
            promote_platform: self.promote_platform.clone(),
            delete_orphans: self.delete_orphans,
            max_deletes: self.max_deletes,
            dry_run: self.dry_run,
            provenance: self.provenance.clone(),
            repository_tag: self.repository_tag.clone(),
            keep_tag_history: self.keep_tag_history.clone(),
            keep_if_pulled_within: self.keep_if_pulled_within.clone(),
            keep_if_in_use: self.keep_if_in_use,
            grace_period: self.grace_period.clone(),
            promote_signed_index: self.promote_signed_index,
            promote_when_lambda_refuses: self.promote_when_lambda_refuses,
        }
    }
}

/// Largest accepted `max_deletes`: one index plus one attestation per entry.
const MAX_MAX_DELETES: u32 = 1 + crate::oci::manifest::MAX_INDEX_ENTRIES as u32;

impl SettingsDoc {
    /// Field names are TOML paths (`rules[0].mode`).
    fn apply_to(self, base: &Policy, path: &str) -> Result<Policy, PolicyError> {
        self.apply(base, |f| format!("{path}.{f}"))
    }

    /// Field names are environment variables.
    fn apply_to_env(self, base: &Policy) -> Result<Policy, PolicyError> {
        self.apply(base, |f| {
            match f {
                "mode" => ENV_MODE,
                "tag_template" => ENV_TAG_TEMPLATE,
                "keep_tag" => ENV_KEEP_TAG,
                "promote_platform" => ENV_PROMOTE_PLATFORM,
                "delete_orphans" => ENV_DELETE_ORPHANS,
                "max_deletes" => ENV_MAX_DELETES,
                "provenance" => ENV_PROVENANCE,
                "repository_tag" => ENV_REPOSITORY_TAG,
                "keep_tag_history" => ENV_KEEP_TAG_HISTORY,
                "keep_if_pulled_within" => ENV_KEEP_IF_PULLED_WITHIN,
                "keep_if_in_use" => ENV_KEEP_IF_IN_USE,
                "grace_period" => ENV_GRACE_PERIOD,
                "promote_signed_index" => ENV_PROMOTE_SIGNED_INDEX,
                "promote_when_lambda_refuses" => ENV_PROMOTE_WHEN_LAMBDA_REFUSES,
                _ => ENV_DRY_RUN,
            }
            .to_owned()
        })
    }

    fn apply(self, base: &Policy, name: impl Fn(&str) -> String) -> Result<Policy, PolicyError> {
        let mut p = base.clone();
        if let Some(m) = self.mode {
            p.mode = Mode::from_word(&m).ok_or_else(|| {
                PolicyError::field(
                    name("mode"),
                    format!("unknown mode {m:?} (expected observe, tag, promote or strip)"),
                )
            })?;
        }
        if let Some(t) = self.tag_template {
            p.tag_template =
                TagTemplate::parse_derived(&t).map_err(|e| PolicyError::field(name("tag_template"), e.to_string()))?;
        }
        match self.keep_tag {
            None => {}
            Some(KeepDoc::Enabled(false)) => p.keep_tag = None,
            Some(KeepDoc::Enabled(true)) if p.keep_tag.is_none() => p.keep_tag = Some(TagTemplate::default_keep()),
            Some(KeepDoc::Enabled(true)) => {}
            Some(KeepDoc::Template(t)) => {
                p.keep_tag =
                    Some(TagTemplate::parse_keep(&t).map_err(|e| PolicyError::field(name("keep_tag"), e.to_string()))?);
            }
        }
        if let Some(s) = self.promote_platform {
            p.promote_platform = Some(PlatformSelector::parse(&s).ok_or_else(|| {
                PolicyError::field(
                    name("promote_platform"),
                    format!("{s:?} is not os/arch or os/arch/variant"),
                )
            })?);
        }
        if let Some(d) = self.delete_orphans {
            p.delete_orphans = d;
        }
        if let Some(m) = self.max_deletes {
            if m > MAX_MAX_DELETES {
                return Err(PolicyError::field(
                    name("max_deletes"),
                    format!("{m} is over the limit of {MAX_MAX_DELETES}"),
                ));
            }
            p.max_deletes = m;
        }
        if let Some(d) = self.dry_run {
            p.dry_run = d;
        }
        if let Some(v) = self.provenance {
            p.provenance = Provenance::parse(&v).ok_or_else(|| {
                PolicyError::field(
                    name("provenance"),
                    format!("unknown provenance {v:?} (expected index or referrers)"),
                )
            })?;
        }
        if let Some(history) = self.keep_tag_history {
            p.keep_tag_history = history
                .iter()
                .map(|t| TagTemplate::parse_keep(t.trim()))
                .collect::<Result<_, _>>()
                .map_err(|e| PolicyError::field(name("keep_tag_history"), e.to_string()))?;
        }
        if let Some(v) = self.repository_tag {
            p.repository_tag = RepositoryTagUse::parse(&v).ok_or_else(|| {
                PolicyError::field(
                    name("repository_tag"),
                    format!("unknown repository_tag {v:?} (expected allowed, ignored or required)"),
                )
            })?;
        }
        if let Some(v) = self.keep_if_pulled_within {
            p.keep_if_pulled_within_s = match v.trim().to_ascii_lowercase().as_str() {
                "off" | "false" | "none" | "disabled" => None,
                _ => Some(
                    crate::time::parse_duration_s(v.trim())
                        .map_err(|e| PolicyError::field(name("keep_if_pulled_within"), format!("{e} (or off)")))?,
                ),
            };
        }
        if let Some(v) = self.keep_if_in_use {
            p.keep_if_in_use = v;
        }
        if let Some(v) = self.grace_period {
            p.grace_period_s = crate::time::parse_duration_s(v.trim())
                .and_then(crate::policy::grace_period_s)
                .map_err(|e| PolicyError::field(name("grace_period"), e))?;
        }
        if let Some(v) = self.promote_signed_index {
            p.promote_signed_index = v;
        }
        if let Some(v) = self.promote_when_lambda_refuses {
            p.promote_when_lambda_refuses = v;
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests;
