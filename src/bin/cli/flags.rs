//! Flags several subcommands share: the policy overrides, the output format.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::ValueEnum;
use clap::builder::TypedValueParser as _;
use ecr_remediator::ServiceConfig;
use ecr_remediator::policy::template::TagTemplate;
use ecr_remediator::policy::{Mode, PlatformSelector, Policy, PolicySet};
use ecr_remediator::service::live_policy::Overlay;
use ecr_remediator::vocabulary::Vocabulary;

/// Policy overrides on the command line.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct PolicyFlags {
    /// Policy file (TOML); instead of the ECR_REMEDIATOR_* policy variables.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Write the audit records where this deployed stack's go (its AuditBusArn
    /// output), and read them back from its audit log group.
    #[arg(long, value_name = "NAME")]
    pub(crate) stack: Option<String>,
    /// Override the mode.
    #[arg(long, value_parser = word::<Mode>())]
    mode: Option<Mode>,
    /// Delete orphaned attestation manifests (promote and strip modes).
    #[arg(long)]
    delete_orphans: bool,
    /// How long after a push its deletions wait (0s: at once; default 15m),
    /// so a deployment or a signature that came right after the push is seen.
    #[arg(long, value_name = "DURATION", value_parser = grace_period)]
    grace_period: Option<u64>,
    /// Plan and record, write nothing: what the real run would do, action by action.
    #[arg(long)]
    dry_run: bool,
    /// The keep tag's template (`{tag}-index` by default), or `false`: no keep tag.
    #[arg(long, value_name = "TEMPLATE|false", value_parser = keep_tag)]
    keep_tag: Option<KeepTag>,
    /// The platform promote moves the tag to when an index has several (os/arch[/variant]).
    #[arg(long, value_name = "OS/ARCH", value_parser = platform)]
    promote_platform: Option<PlatformSelector>,
}

/// `--keep-tag`'s value.
#[derive(Debug, Clone)]
pub(crate) enum KeepTag {
    /// No keep tag.
    Off,
    /// This template.
    Template(TagTemplate),
}

fn keep_tag(s: &str) -> Result<KeepTag, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "false" | "off" | "none" => Ok(KeepTag::Off),
        _ => TagTemplate::parse_keep(s)
            .map(KeepTag::Template)
            .map_err(|e| e.to_string()),
    }
}

fn platform(s: &str) -> Result<PlatformSelector, String> {
    PlatformSelector::parse(s).ok_or_else(|| format!("{s:?} is not os/arch or os/arch/variant (linux/arm64)"))
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutputFormat {
    Table,
    Json,
}

/// A parser for one of the library's vocabularies: the possible values are
/// the words the records and the policy use (`-` accepted for `_`).
pub(crate) fn word<T: Vocabulary + Send + Sync>() -> impl clap::builder::TypedValueParser<Value = T> {
    let values = T::ALL.iter().map(|v| {
        let word = v.as_str();
        let value = clap::builder::PossibleValue::new(word);
        if word.contains('_') {
            value.alias(word.replace('_', "-"))
        } else {
            value
        }
    });
    clap::builder::PossibleValuesParser::new(values)
        .try_map(|s: String| T::from_word(&s).ok_or_else(|| format!("{s:?} is not one of: {}", T::listing())))
}

impl PolicyFlags {
    /// `--dry-run`.
    pub(crate) fn dry_run(&self) -> bool {
        self.dry_run
    }

    /// Whether `--mode` was given.
    pub(crate) fn mode_given(&self) -> bool {
        self.mode.is_some()
    }

    pub(crate) fn config(&self) -> anyhow::Result<ServiceConfig> {
        if let Some(file) = &self.config {
            // The file decides the whole policy: a policy variable set beside
            // it would be silently ignored.
            let set: Vec<&str> = ecr_remediator::policy::ENV_VARS
                .iter()
                .chain(&[ecr_remediator::policy::ENV_POLICY_PARAMETER])
                .filter(|k| std::env::var(k).is_ok_and(|v| !v.trim().is_empty()))
                .copied()
                .collect();
            anyhow::ensure!(
                set.is_empty(),
                "--config {} decides the policy, but {} is also set and would be ignored: unset it, or use the \
                 flags (--mode, --keep-tag, …) for this run",
                file.display(),
                set.join(", ")
            );
        }
        let mut config = ServiceConfig::from_env().context("invalid configuration")?;
        if let Some(file) = &self.config {
            let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
            let vars: std::collections::BTreeMap<String, String> = std::env::vars().collect();
            let units = ecr_remediator::policy::organizational_units(&vars)?;
            config.policies = PolicySet::from_toml(&text)
                .and_then(|p| p.with_organizational_units(&units))
                .with_context(|| format!("invalid policy file {}", file.display()))?;
        }
        (self.overlay())(&mut config.policies);
        Ok(config)
    }

    /// The overrides, as a change to any policy set (a reloaded one too).
    pub(crate) fn overlay(&self) -> Overlay {
        let flags = self.clone();
        Arc::new(move |set: &mut PolicySet| {
            let apply = |p: &mut Policy| {
                if let Some(m) = flags.mode {
                    p.mode = m;
                    // The operator's choice for this run: a repository tag does not change it.
                    p.mode_pinned = true;
                }
                p.delete_orphans |= flags.delete_orphans;
                if let Some(s) = flags.grace_period {
                    p.grace_period_s = s;
                }
                p.dry_run |= flags.dry_run;
                match &flags.keep_tag {
                    Some(KeepTag::Off) => p.keep_tag = None,
                    Some(KeepTag::Template(t)) => p.keep_tag = Some(t.clone()),
                    None => {}
                }
                if let Some(pl) = &flags.promote_platform {
                    p.promote_platform = Some(pl.clone());
                }
            };
            apply(&mut set.default);
            set.rules.iter_mut().for_each(|r| apply(&mut r.policy));
        })
    }
}

/// `--grace-period`: a duration, at most what a policy may set.
fn grace_period(text: &str) -> Result<u64, String> {
    ecr_remediator::time::parse_duration_s(text).and_then(ecr_remediator::policy::grace_period_s)
}
