//! Remediation policy: what to do with an image, chosen per repository.
//!
//! A [`PolicySet`] is an ordered list of rules (repository globs → settings)
//! plus a default. It is loaded from a TOML file ([`PolicySet::from_toml`]) or
//! from environment variables ([`load`]); anything invalid is refused with a
//! message naming the field.

pub mod glob;
mod load;
pub(crate) mod organization;
pub mod repository_tag;
pub mod template;

use std::fmt;

use crate::oci::manifest::Platform;
use crate::oci::names::{AccountId, ImageTag, RepositoryName};
use crate::policy::glob::Glob;
use crate::policy::repository_tag::RepositoryTagUse;
use crate::policy::template::TagTemplate;

crate::vocabulary::vocabulary! {
    /// What a plan may do.
    pub enum Mode {
        /// Classify and record; change nothing.
        Observe = "observe",
        /// Give each runnable manifest a derived per-platform tag.
        Tag = "tag",
        /// Move the pushed tag onto the single runnable manifest.
        Promote = "promote",
        /// Replace the index with one without attestation entries.
        Strip = "strip",
    }
}

/// A platform to promote, e.g. `linux/arm64` or `linux/arm/v7`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformSelector {
    os: String,
    architecture: String,
    variant: Option<String>,
}

impl PlatformSelector {
    /// Parses `os/arch[/variant]`.
    pub fn parse(s: &str) -> Option<Self> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.');
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Some(PlatformSelector {
                os: (*os).to_owned(),
                architecture: (*arch).to_owned(),
                variant: None,
            }),
            [os, arch, variant] if ok(os) && ok(arch) && ok(variant) => Some(PlatformSelector {
                os: (*os).to_owned(),
                architecture: (*arch).to_owned(),
                variant: Some((*variant).to_owned()),
            }),
            _ => None,
        }
    }

    /// True when `p` is this platform. A selector without variant matches any
    /// variant; with one, the platform's variant must match after the usual
    /// normalisation (arm64 ≡ arm64/v8, arm ≡ arm/v7).
    pub fn matches(&self, p: &Platform) -> bool {
        if self.os != p.os || self.architecture != p.architecture {
            return false;
        }
        match &self.variant {
            None => true,
            Some(want) => {
                let default = match p.architecture.as_str() {
                    "arm64" => Some("v8"),
                    "arm" => Some("v7"),
                    _ => None,
                };
                p.variant.as_deref().or(default) == Some(want.as_str())
            }
        }
    }
}

impl crate::oci::lambda::PlatformTarget for PlatformSelector {
    fn matches(&self, platform: &Platform) -> bool {
        PlatformSelector::matches(self, platform)
    }
}

impl fmt::Display for PlatformSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// Where provenance and SBOM attestations live once the tag moves off the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Provenance {
    /// In the original index (kept under the keep tag, or deleted with it).
    #[default]
    Index,
    /// Copied as OCI referrers of the image each describes, verified listed
    /// before the index and its attestations may be deleted.
    Referrers,
}

impl Provenance {
    /// Parses `index` or `referrers`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "index" => Some(Provenance::Index),
            "referrers" => Some(Provenance::Referrers),
            _ => None,
        }
    }
}

/// The default cap on deletions per image.
pub const DEFAULT_MAX_DELETES: u32 = 10;

/// Default of [`Policy::keep_if_pulled_within_s`]: 30 days. ECR refreshes
/// `lastRecordedPullTime` only about once a day, so a window must be well
/// over a day to mean anything; a month covers workloads that pull by
/// digest weekly or monthly (batch jobs, node replacement, scale-from-zero).
/// What it keeps is an index or an attestation of a few kilobytes; what a
/// wrong deletion costs is an outage.
pub const DEFAULT_KEEP_IF_PULLED_WITHIN_S: u64 = 30 * 86_400;

/// Default of [`Policy::grace_period_s`]: 15 minutes, the longest delay one
/// SQS message can carry, and longer than the usual CI sequence after a push
/// (sign the pushed digest, start a deployment), so a signature or a
/// deployment that resolved the tag before the promotion is seen before
/// anything is deleted.
pub const DEFAULT_GRACE_PERIOD_S: u64 = 900;

/// The longest grace period a policy may set (a week): deletions wait for a
/// follow-up, and an instant beyond what a record can write would make it
/// come back at once, forever.
pub const MAX_GRACE_PERIOD_S: u64 = 7 * 24 * 3600;

/// A grace period as a policy may set it: at most [`MAX_GRACE_PERIOD_S`].
pub fn grace_period_s(seconds: u64) -> Result<u64, String> {
    if seconds > MAX_GRACE_PERIOD_S {
        return Err(format!(
            "a grace period of {seconds} s is longer than the {MAX_GRACE_PERIOD_S} s (7d) allowed"
        ));
    }
    Ok(seconds)
}

/// The settings applied to one repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// What the plan may do.
    pub mode: Mode,
    /// Template for derived per-platform tags (`tag` mode and promote's fallback).
    pub tag_template: TagTemplate,
    /// Template of the tag that keeps a replaced index reachable (promote,
    /// strip); `None` disables it.
    pub keep_tag: Option<TagTemplate>,
    /// In promote mode, the platform to promote when the index has several.
    pub promote_platform: Option<PlatformSelector>,
    /// Delete attestation manifests (and an index the plan left untagged) once
    /// nothing references them.
    pub delete_orphans: bool,
    /// Most deletions one image may cause; above it, no deletion happens.
    pub max_deletes: u32,
    /// Plan and record, write nothing.
    pub dry_run: bool,
    /// Where attestations of a remediated image are kept.
    pub provenance: Provenance,
    /// What the repository's `ecr-remediator:mode` tag may do (see
    /// [`repository_tag`]).
    pub repository_tag: RepositoryTagUse,
    /// Keep-tag templates used before (`keep_tag_history`): tags they could
    /// have written are still recognised as this service's, never handled
    /// as pushed tags (see [`Policy::is_keep_tag`]).
    pub keep_tag_history: Vec<TagTemplate>,
    /// Set when the operator chose the mode for this run (`--mode`): the
    /// repository's tag may not change it (it may still opt out).
    pub mode_pinned: bool,
    /// A deletion candidate pulled within this many seconds (ECR's
    /// `lastRecordedPullTime`) is kept (`recently_pulled`); `None` turns the
    /// check off. See [`DEFAULT_KEEP_IF_PULLED_WITHIN_S`].
    pub keep_if_pulled_within_s: Option<u64>,
    /// Keep a deletion candidate that a workload in its account uses by
    /// digest (ECS services, tasks and task definitions, Lambda functions),
    /// found by a scan of that account (`in_use`); a scan that fails keeps
    /// everything. Off, nothing is scanned and this evidence is not looked at.
    pub keep_if_in_use: bool,
    /// The per-push path deletes nothing until this many seconds after the
    /// index was pushed: the deletion is deferred to a follow-up request on
    /// the queue (or the next sweep) that runs every gate again. See
    /// [`DEFAULT_GRACE_PERIOD_S`].
    pub grace_period_s: u64,
    /// Promote an image even when the pushed index is signed and the image
    /// is not (verification by tag then fails until the image is signed);
    /// off, such a push falls back to tag mode (`index_signed`).
    pub promote_signed_index: bool,
    /// Promote an image even when Lambda would refuse it (a `no` verdict,
    /// see [`crate::oci::lambda`]): the record and a metric warn. Off, such
    /// a push gets derived tags only, its tag staying on the index.
    pub promote_when_lambda_refuses: bool,
}

impl Policy {
    /// True when a remediation under this policy may delete: `delete_orphans`
    /// in a mode that moves the pushed tag off the index (promote, strip),
    /// with no keep tag left on it.
    pub fn may_delete(&self) -> bool {
        self.delete_orphans && matches!(self.mode, Mode::Promote | Mode::Strip) && self.keep_tag.is_none()
    }

    /// True when `tag` has the shape of a keep tag this service writes or
    /// wrote: the current template, the built-in default (`{tag}-index`,
    /// whatever the policy says today) or one in `keep_tag_history`. Such a
    /// tag is never handled as a pushed tag, so a policy change (the keep tag
    /// turned off or changed) never turns the indexes earlier runs kept into
    /// images to remediate. Retiring them is a separate, explicit action
    /// (`sweep --retire-kept-indexes`).
    pub fn is_keep_tag(&self, tag: &ImageTag) -> bool {
        self.keep_templates().any(|t| t.could_have_written(tag))
    }

    fn keep_templates(&self) -> impl Iterator<Item = &TagTemplate> {
        self.keep_tag
            .iter()
            .chain(std::iter::once(TagTemplate::default_keep_ref()))
            .chain(&self.keep_tag_history)
    }

    /// The keep tags `tag` could have been kept under: rendered with the
    /// current, default and earlier keep-tag templates (`v1` → `v1-index`).
    pub fn keep_tags_for(&self, tag: &ImageTag) -> Vec<ImageTag> {
        let mut out: Vec<ImageTag> = self.keep_templates().filter_map(|t| t.render(tag, None).ok()).collect();
        out.sort();
        out.dedup();
        out
    }

    /// The pushed tags `tag` could be the keep tag of, under the current,
    /// default or earlier keep-tag templates (`v1-index` → `v1`). A tag of
    /// that shape is not evidence that the service kept anything: retiring
    /// also checks what the pushed tag points at now.
    pub fn kept_for(&self, tag: &ImageTag) -> Vec<ImageTag> {
        let mut out: Vec<ImageTag> = self.keep_templates().filter_map(|t| t.source_tag(tag)).collect();
        out.sort();
        out.dedup();
        out
    }
}

impl Default for Policy {
    /// `promote` mode (a single-platform index's tag moves onto its image,
    /// the index kept under the keep tag; several platforms and none chosen:
    /// per-platform tags, the pushed tag stays), default templates, no
    /// deletion, no dry run.
    fn default() -> Self {
        Policy {
            mode: Mode::Promote,
            tag_template: TagTemplate::default_derived(),
            keep_tag: Some(TagTemplate::default_keep()),
            promote_platform: None,
            delete_orphans: false,
            max_deletes: DEFAULT_MAX_DELETES,
            dry_run: false,
            provenance: Provenance::Index,
            repository_tag: RepositoryTagUse::Allowed,
            keep_tag_history: Vec::new(),
            mode_pinned: false,
            keep_if_pulled_within_s: Some(DEFAULT_KEEP_IF_PULLED_WITHIN_S),
            keep_if_in_use: true,
            grace_period_s: DEFAULT_GRACE_PERIOD_S,
            promote_signed_index: false,
            promote_when_lambda_refuses: true,
        }
    }
}

/// One rule of a [`PolicySet`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Name used in audit records (`rules[N]` when not given).
    pub name: String,
    /// Repository globs; the rule applies when any matches (empty: any
    /// repository of the rule's accounts).
    pub repositories: Vec<Glob>,
    /// Account ids (organisation-wide hub); the rule applies only to images
    /// in one of them (empty, with no organisational units: any account).
    pub accounts: Vec<AccountId>,
    /// Organisational units the rule names, each with its member accounts
    /// (from the map in [`ENV_ORGANIZATIONAL_UNITS`]); an image in one of
    /// these accounts matches too.
    pub organizational_units: Vec<(String, Vec<AccountId>)>,
    /// The settings.
    pub policy: Policy,
}

/// Ordered rules plus a default: the whole policy configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicySet {
    /// Rules, first match wins.
    pub rules: Vec<Rule>,
    /// Applied when no rule matches.
    pub default: Policy,
}

/// The policy chosen for a repository and the rule that chose it.
#[derive(Debug, Clone, Copy)]
pub struct Selected<'a> {
    /// The rule's name, or `default`.
    pub rule: &'a str,
    /// The repository glob that matched (none for the default, or a rule of accounts only).
    pub matched: Option<&'a Glob>,
    /// The account the rule matched on, for a rule with accounts.
    pub account: Option<&'a AccountId>,
    /// The organisational unit through which the account matched.
    pub organizational_unit: Option<&'a str>,
    /// The settings.
    pub policy: &'a Policy,
}

impl Selected<'_> {
    /// Why this rule applied, for audit records.
    pub fn source(&self) -> String {
        let via = self
            .organizational_unit
            .map(|ou| format!(" (organizational unit {ou})"))
            .unwrap_or_default();
        match (self.matched, self.account) {
            (Some(g), Some(a)) => format!("repository matched {g} in account {a}{via}"),
            (Some(g), None) => format!("repository matched {g}"),
            (None, Some(a)) => format!("account {a}{via} matched"),
            (None, None) => "no rule matched: the default policy".to_owned(),
        }
    }
}

impl PolicySet {
    /// The first rule matching `repository`, else the default.
    pub fn select(&self, repository: &RepositoryName) -> Selected<'_> {
        self.select_for(repository, None)
    }

    /// The first rule matching `repository` in `account` (`None`: the
    /// deployment's own, which only rules without `accounts` match), else the
    /// default. Rules are tried in order; a rule applies when its repository
    /// globs (if any) and its accounts (if any) both match.
    pub fn select_for(&self, repository: &RepositoryName, account: Option<&AccountId>) -> Selected<'_> {
        self.rules
            .iter()
            .find_map(|r| {
                let glob = r.repositories.iter().find(|g| g.matches(repository.as_str()));
                if !r.repositories.is_empty() && glob.is_none() {
                    return None;
                }
                let named = account.and_then(|a| r.accounts.iter().find(|x| *x == a));
                let via_ou = match named {
                    Some(_) => None,
                    None => account.and_then(|a| {
                        r.organizational_units
                            .iter()
                            .find_map(|(ou, members)| members.iter().find(|x| *x == a).map(|x| (ou, x)))
                    }),
                };
                let restricted = !r.accounts.is_empty() || !r.organizational_units.is_empty();
                if restricted && named.is_none() && via_ou.is_none() {
                    return None;
                }
                Some(Selected {
                    rule: &r.name,
                    matched: glob,
                    account: named.or(via_ou.map(|(_, a)| a)),
                    organizational_unit: via_ou.map(|(ou, _)| ou.as_str()),
                    policy: &r.policy,
                })
            })
            .unwrap_or(Selected {
                rule: "default",
                matched: None,
                account: None,
                organizational_unit: None,
                policy: &self.default,
            })
    }
}

pub use load::{
    ENV_DELETE_ORPHANS, ENV_DELETION_ALLOWED, ENV_DRY_RUN, ENV_KEEP_TAG, ENV_KEEP_TAG_HISTORY, ENV_MAX_DELETES,
    ENV_MODE, ENV_ORGANIZATIONAL_UNITS, ENV_POLICY_FILE, ENV_POLICY_PARAMETER, ENV_PROMOTE_PLATFORM, ENV_PROVENANCE,
    ENV_REPOSITORY_TAG, ENV_TAG_TEMPLATE, ENV_VARS, PolicyError, load, organizational_units,
};
