//! The one per-repository walk every sweep makes: the repository's
//! `ecr-remediator:mode` tag, one listing, the leftovers (when sought), the
//! signature gaps, the replication drift (when asked), and the jobs the
//! selection makes. The CLI's sweep handles the jobs in process
//! (`service::sweep`); the scheduled sweep enqueues them
//! (`service::enqueue`). Both call [`Walk::repository`], so both
//! select, skip and report the same way.

use crate::engine::audit::{Trigger, now_ms};
use crate::engine::registry::{ImageInfo, Registry, RegistryError};
use crate::engine::repository_policy;
use crate::engine::retry::{RetryPolicy, retrying};
use crate::engine::{Job, Purpose};
use crate::oci::digest::Digest;
use crate::oci::names::{AccountId, RepositoryName};
use crate::policy::PolicySet;
use crate::policy::repository_tag::Resolved;
use crate::sweep::replication::{self, DriftReport};
use crate::sweep::scan::{Scope, jobs_of, leftovers, report_gaps, signature_gaps};
use crate::sweep::select::{CleanupSelection, Selection, SweepPlan, Untouched, cleanup_enabled, select};
use crate::sweep::signing::SignatureGap;

/// What a walk reads with: the registry (the caller's own, or a member's),
/// the retry settings of the handler that runs it, the policies, what is
/// swept and what is selected.
#[derive(Debug)]
pub struct Walk<'a, R> {
    /// The registry walked.
    pub registry: &'a R,
    /// Retries of every read (the handler's settings).
    pub retry: &'a RetryPolicy,
    /// The deployment's policies.
    pub policies: &'a PolicySet,
    /// What is swept.
    pub scope: &'a Scope,
    /// What is selected.
    pub selection: &'a Selection,
    /// When set: compare each repository with its replication destinations.
    pub replicas: Option<Replicas<'a>>,
}

/// What a walk needs to compare replicas: the registry's replication rules
/// and where the walk runs.
#[derive(Debug, Clone, Copy)]
pub struct Replicas<'a> {
    /// The registry's replication rules.
    pub rules: &'a [replication::Rule],
    /// The account walked.
    pub account: Option<&'a AccountId>,
    /// The region walked.
    pub region: Option<&'a str>,
}

/// What the walk found in one repository.
#[derive(Debug)]
pub enum Walked {
    /// Its tag could not be read, or it could not be listed: nothing else is known.
    Failed(RegistryError),
    /// Its `ecr-remediator:mode` tag (or its absence, where the rule asks
    /// for an opt-in) leaves it alone, with the reason.
    LeftAlone(String),
    /// Listed.
    Listed(Box<Found>),
}

/// A repository the walk listed.
#[derive(Debug)]
pub struct Found {
    /// Indexes in the listing.
    pub indexes_seen: usize,
    /// Tagged indexes whose only tags are keep tags (fine from the listing alone).
    pub already_fine: usize,
    /// Images left alone, by reason (the selection's and the leftover search's).
    pub untouched: Vec<(Untouched, usize)>,
    /// What the per-push path should handle: tagged indexes, then leftovers.
    pub jobs: Vec<Job>,
    /// How many of `jobs` are leftovers.
    pub leftovers: usize,
    /// Kept indexes to retire (only with `--retire-kept-indexes`; never queued).
    pub retire: Vec<Job>,
    /// Promoted tags signed on the index and not on the image.
    pub gaps: Vec<SignatureGap>,
    /// Replication destinations that differ (or could not be read).
    pub drift: Vec<DriftReport>,
    /// What could not be read, though the repository was listed
    /// (`signatures not checked: …`, `leftovers not sought: …`).
    pub errors: Vec<String>,
}

/// The job that retires one kept index (only on the operator's request).
fn retire_job(repo: &RepositoryName, account: Option<&AccountId>, digest: Digest, selection: &Selection) -> Job {
    Job {
        purpose: Purpose::Retire {
            min_age_s: selection.min_age_s,
        },
        trigger: Trigger::Sweep,
        event_id: None,
        account: account.cloned(),
        region: None,
        replicated_from: None,
        repository: repo.clone(),
        digest,
        tag: None,
        tag_arrived_ms: None,
    }
}

impl Found {
    /// What could not be read, though the repository was listed, on one
    /// line (`None`: everything was).
    pub fn problems(&self) -> Option<String> {
        (!self.errors.is_empty()).then(|| self.errors.join("; "))
    }
}

impl<R: Registry> Walk<'_, R> {
    /// Walks one repository.
    pub async fn repository(&self, repo: &RepositoryName) -> Walked {
        let rule = self.policies.select_for(repo, self.scope.account.as_ref()).policy;
        let policy = match repository_policy::resolve(self.registry, self.retry, None, rule, repo).await {
            Err(e) => return Walked::Failed(e),
            Ok((Resolved::Apply { policy, .. }, _)) => *policy,
            Ok((left_alone, _)) => return Walked::LeftAlone(left_alone.to_string()),
        };
        let listing = match retrying(self.retry, None, || self.registry.list_images(repo)).await {
            Err(e) => return Walked::Failed(e),
            Ok(listing) => listing,
        };
        let mut errors = Vec::new();
        let cleanup = if cleanup_enabled(&policy, self.selection) {
            match leftovers(
                self.registry,
                self.retry,
                repo,
                &listing,
                &policy,
                self.selection,
                now_ms(),
            )
            .await
            {
                Ok(found) => found,
                Err(e) => {
                    tracing::warn!(repository = %repo, error = %e, "cannot read the repository's indexes; no leftovers sought");
                    errors.push(format!("leftovers not sought: {e}"));
                    CleanupSelection::default()
                }
            }
        } else {
            CleanupSelection::default()
        };
        let gaps = match signature_gaps(self.registry, self.retry, repo, &listing, &policy).await {
            Ok(gaps) => gaps,
            Err(e) => {
                tracing::warn!(repository = %repo, error = %e, "cannot read what signs its promoted images");
                errors.push(format!("signatures not checked: {e}"));
                Vec::new()
            }
        };
        report_gaps(repo, &gaps);
        let drift = match self.replicas {
            Some(replicas) => self.drift(repo, &listing, replicas).await,
            None => Vec::new(),
        };
        let SweepPlan {
            jobs,
            indexes_seen,
            already_fine,
            retire,
            untouched,
        } = select(&listing, &policy, self.selection);
        let account = self.scope.account.as_ref();
        let leftovers = cleanup.jobs.len();
        let retire = retire
            .into_iter()
            .map(|d| retire_job(repo, account, d, self.selection))
            .collect();
        Walked::Listed(Box::new(Found {
            indexes_seen,
            already_fine,
            untouched: untouched.into_iter().chain(cleanup.untouched).collect(),
            jobs: jobs_of(repo, account, jobs, cleanup.jobs, self.selection),
            leftovers,
            retire,
            gaps,
            drift,
            errors,
        }))
    }

    /// How each replication destination of `repository` differs from this
    /// source (`listing`): only destinations that drifted or could not be
    /// read. A destination in this account and another region is listed
    /// through the walk's registry; another account's registry is not read
    /// here (sweep that account, or from its hub, to compare).
    async fn drift(
        &self,
        repository: &RepositoryName,
        listing: &[(Digest, ImageInfo)],
        replicas: Replicas<'_>,
    ) -> Vec<DriftReport> {
        let mut out = Vec::new();
        for destination in replication::destinations(replicas.rules, repository) {
            let report = |drift, unreadable| DriftReport {
                repository: repository.to_string(),
                destination: destination.clone(),
                drift,
                unreadable,
            };
            if replicas.account.is_some_and(|a| *a != destination.account) {
                out.push(report(
                    None,
                    Some("another account's registry: not read from here; sweep that account to compare".to_owned()),
                ));
                continue;
            }
            if replicas.region == Some(destination.region.as_str()) {
                continue;
            }
            let region = destination.region.as_str();
            match retrying(self.retry, None, || {
                self.registry.list_images_in_region(region, repository)
            })
            .await
            {
                Ok(Some(theirs)) => {
                    let drift = replication::drift(listing, &theirs);
                    if !drift.is_empty() {
                        out.push(report(Some(drift), None));
                    }
                }
                Ok(None) => out.push(report(None, Some("this registry cannot read other regions".to_owned()))),
                Err(e) => out.push(report(None, Some(e.to_string()))),
            }
        }
        out
    }
}
