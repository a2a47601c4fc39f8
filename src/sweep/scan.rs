//! What every sweep reads of a registry: the repositories in scope, each
//! repository's leftovers, and the jobs its selection makes. Shared by the
//! in-process sweep (`service::sweep`) and the scheduled one
//! (`service::enqueue`).

use std::collections::{BTreeMap, BTreeSet};

use crate::engine::audit::Trigger;
use crate::engine::registry::{FetchFailure, ImageInfo, ImageRef, Registry, RegistryError};
use crate::engine::retry::{RetryPolicy, retrying};
use crate::engine::{Job, Purpose};
use crate::oci::classify::{classify, classify_manifest};
use crate::oci::digest::Digest;
use crate::oci::names::{AccountId, ImageTag, RepositoryName};
use crate::oci::signature::{Referrer, Signature};
use crate::policy::Policy;
use crate::sweep::select::{CleanupSelection, References, Selection, indexes, select_cleanup, unlisted};
use crate::sweep::signing::{SignatureGap, promotions};

/// Which repositories a sweep covers.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// These repositories (when empty: every repository, or those with a prefix below).
    pub repositories: Vec<RepositoryName>,
    /// Repositories whose name starts with one of these.
    pub prefixes: Vec<String>,
    /// The account to sweep (a member account, through the handler's member
    /// role); `None`: the handler's own.
    pub account: Option<AccountId>,
}

/// Image ids per `BatchGetImage` call (ECR's limit).
const BATCH: usize = 100;

/// Finds one repository's leftovers (see [`crate::decide::cleanup`]): reads
/// every index once and every untagged manifest no index lists, `BATCH` at a
/// time, then selects. Costs O(repository / 100) reads, once per sweep.
pub async fn leftovers<R: Registry>(
    registry: &R,
    retry: &RetryPolicy,
    repository: &RepositoryName,
    listing: &[(Digest, ImageInfo)],
    policy: &Policy,
    selection: &Selection,
    now_ms: i64,
) -> Result<CleanupSelection, RegistryError> {
    let tagged: BTreeSet<&Digest> = listing
        .iter()
        .filter(|(_, i)| !i.tags.is_empty())
        .map(|(d, _)| d)
        .collect();
    let mut refs = References::default();
    for chunk in indexes(listing).chunks(BATCH) {
        let ids: Vec<ImageRef> = chunk.iter().cloned().map(ImageRef::Digest).collect();
        for (id, result) in retrying(retry, None, || registry.get_images(repository, &ids)).await? {
            match (id, result) {
                (ImageRef::Digest(d), Ok(m)) if m.digest() == &d => refs.add(&m, &classify(&m), tagged.contains(&d)),
                // Deleted since the listing: it lists nothing any more.
                (_, Err(FetchFailure::NotFound)) => {}
                _ => refs.add_unreadable(),
            }
        }
    }
    let mut kinds = BTreeMap::new();
    for chunk in unlisted(listing, &refs).chunks(BATCH) {
        let ids: Vec<ImageRef> = chunk.iter().cloned().map(ImageRef::Digest).collect();
        for (id, result) in retrying(retry, None, || registry.get_images(repository, &ids)).await? {
            if let (ImageRef::Digest(d), Ok(m)) = (id, result)
                && m.digest() == &d
            {
                kinds.insert(d, classify_manifest(m.manifest()));
            }
        }
    }
    Ok(select_cleanup(listing, &refs, &kinds, policy, selection, now_ms))
}

/// The promoted tags of one repository whose index is signed and whose
/// image is not (see `crate::sweep::signing`): from the listing, plus one
/// `ListImageReferrers` for an index (then its image) only where the listing
/// shows referrers it cannot classify. Once per sweep, never per push.
pub async fn signature_gaps<R: Registry>(
    registry: &R,
    retry: &RetryPolicy,
    repository: &RepositoryName,
    listing: &[(Digest, ImageInfo)],
    policy: &Policy,
) -> Result<Vec<SignatureGap>, RegistryError> {
    let signed = |referrers: Vec<Referrer>| -> Vec<Signature> {
        referrers
            .into_iter()
            .filter_map(|r| r.signature.map(|k| Signature::referrer(k, &r.digest)))
            .collect()
    };
    let mut gaps = Vec::new();
    for mut p in promotions(listing, policy) {
        if p.index_signatures.is_empty() && p.index_referrers_unread {
            p.index_signatures = signed(retrying(retry, None, || registry.list_referrers(repository, &p.index)).await?);
        }
        if !p.index_signatures.is_empty() && p.image_signatures.is_empty() && p.image_referrers_unread {
            p.image_signatures = signed(retrying(retry, None, || registry.list_referrers(repository, &p.image)).await?);
        }
        gaps.extend(p.gap(repository));
    }
    Ok(gaps)
}

/// Logs each signature gap with what to do about it.
pub fn report_gaps(repo: &RepositoryName, gaps: &[SignatureGap]) {
    for gap in gaps {
        tracing::warn!(repository = %repo, tag = %gap.tag, index = %gap.index, image = %gap.image,
            "signed after promotion: {}", gap.advice());
    }
}

/// The repositories in scope, in name order.
pub async fn repositories<R: Registry>(
    registry: &R,
    scope: &Scope,
    retry: &RetryPolicy,
) -> Result<Vec<RepositoryName>, RegistryError> {
    // Selectors combine: the repositories named, and those under any prefix
    // named (every repository when neither is).
    let mut out: Vec<RepositoryName> = scope.repositories.clone();
    if scope.repositories.is_empty() || !scope.prefixes.is_empty() {
        out.extend(
            retrying(retry, None, || registry.list_repositories())
                .await?
                .into_iter()
                .filter(|r| {
                    scope.prefixes.is_empty() || scope.prefixes.iter().any(|p| r.as_str().starts_with(p.as_str()))
                }),
        );
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The jobs a sweep makes of one repository's selection.
pub(crate) fn jobs_of(
    repository: &RepositoryName,
    account: Option<&AccountId>,
    remediate: Vec<(Digest, ImageTag)>,
    cleanup: Vec<Digest>,
    selection: &Selection,
) -> Vec<Job> {
    let job = |purpose, digest, tag| Job {
        purpose,
        trigger: Trigger::Sweep,
        event_id: None,
        account: account.cloned(),
        region: None,
        replicated_from: None,
        repository: repository.clone(),
        digest,
        tag,
        tag_arrived_ms: None,
    };
    let purpose = Purpose::Cleanup {
        min_age_s: selection.min_age_s,
    };
    remediate
        .into_iter()
        .map(|(d, t)| job(Purpose::Remediate, d, Some(t)))
        .chain(cleanup.into_iter().map(|d| job(purpose, d, None)))
        .collect()
}
