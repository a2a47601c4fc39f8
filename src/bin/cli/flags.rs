//! Flags several subcommands share: the policy overrides, the output format.

use std::path::PathBuf;

use anyhow::Context;
use clap::ValueEnum;
use clap::builder::TypedValueParser as _;
use ecr_remediator::policy::{Mode, Policy, PolicySet};
use ecr_remediator::service::config::ServiceConfig;
use ecr_remediator::vocabulary::Vocabulary;

/// Policy overrides on the command line.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct PolicyFlags {
    /// Policy file (TOML); instead of the ECR_REMEDIATOR_* policy variables.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Override the mode.
    #[arg(long, value_parser = word::<Mode>())]
    mode: Option<Mode>,
    /// Delete orphaned attestation manifests (promote and strip modes).
    #[arg(long)]
    delete_orphans: bool,
    /// How long after a push its deletions wait (0s: at once; default 15m),
    /// so a deployment or a signature that came right after the push is seen.
    #[arg(long, value_name = "DURATION", value_parser = ecr_remediator::time::parse_duration_s)]
    grace_period: Option<u64>,
    /// Plan and record, write nothing.
    #[arg(long)]
    dry_run: bool,
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
    pub(crate) fn config(&self) -> anyhow::Result<ServiceConfig> {
        let mut config = ServiceConfig::from_env().context("invalid configuration")?;
        if let Some(file) = &self.config {
            let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
            let vars: std::collections::BTreeMap<String, String> = std::env::vars().collect();
            let units = ecr_remediator::policy::organizational_units(&vars)?;
            config.policies = PolicySet::from_toml(&text)
                .and_then(|p| p.with_organizational_units(&units))
                .with_context(|| format!("invalid policy file {}", file.display()))?;
        }
        let apply = |p: &mut Policy| {
            if let Some(m) = self.mode {
                p.mode = m;
                // The operator's choice for this run: a repository tag does not change it.
                p.mode_pinned = true;
            }
            p.delete_orphans |= self.delete_orphans;
            if let Some(s) = self.grace_period {
                p.grace_period_s = s;
            }
            p.dry_run |= self.dry_run;
        };
        apply(&mut config.policies.default);
        config.policies.rules.iter_mut().for_each(|r| apply(&mut r.policy));
        Ok(config)
    }
}
