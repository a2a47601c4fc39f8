//! The registry as the service sees it: a small trait, with no SDK type in it.
//!
//! The real adapter (`aws::ecr`) implements it with aws-sdk-ecr; `memory` (feature `test-util`)
//! is an in-memory double with ECR's rules for unit tests. Calls map to ECR
//! operations one to one, so call counts mean the same on both.

use std::collections::BTreeMap;
use std::future::Future;

use serde::Serialize;

use crate::oci::digest::Digest;
use crate::oci::manifest::{ManifestError, RawManifest};
use crate::oci::names::{AccountId, ImageTag, RepositoryName};
use crate::oci::signature::Referrer;

#[cfg(any(test, feature = "test-util"))]
pub mod memory;

/// An image named by digest or by tag.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(untagged)]
pub enum ImageRef {
    /// By digest.
    Digest(Digest),
    /// By tag.
    Tag(ImageTag),
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageRef::Digest(d) => write!(f, "{d}"),
            ImageRef::Tag(t) => write!(f, ":{t}"),
        }
    }
}

/// Why one image of a batch could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FetchFailure {
    /// No such image or tag.
    #[error("not found")]
    NotFound,
    /// The registry served something that is not a valid manifest.
    #[error("invalid manifest: {error}")]
    Invalid {
        /// The image's digest, as the registry named it.
        digest: Option<Digest>,
        /// What is wrong with it.
        #[source]
        error: ManifestError,
    },
    /// Any other per-image failure the registry reported.
    #[error("{code}: {reason}")]
    Other {
        /// The registry's failure code.
        code: String,
        /// Its explanation.
        reason: String,
    },
}

/// The result of reading several images in one call, in request order.
pub type Fetched = Vec<(ImageRef, Result<RawManifest, FetchFailure>)>;

/// What `put_image` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The registry stored the manifest or tag.
    Stored,
    /// That digest already had that tag (`ImageAlreadyExistsException`).
    AlreadyExists,
}

/// What deleting one image did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum DeleteOutcome {
    /// Deleted.
    Deleted,
    /// It was already gone.
    NotFound,
    /// An index in the repository still refers to it.
    ReferencedByManifestList,
    /// Another per-image failure.
    Failed {
        /// The registry's failure code.
        code: String,
        /// Its explanation.
        reason: String,
    },
}

/// One destination registry of a replication rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ReplicationDestination {
    /// Its account (`registryId`).
    pub account: AccountId,
    /// Its region.
    pub region: String,
}

/// A replication rule (`DescribeRegistry`): repositories whose name starts
/// with one of `prefixes` (every repository when there is none) are
/// replicated to each of `destinations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationRule {
    /// Its destinations.
    pub destinations: Vec<ReplicationDestination>,
    /// Its `PREFIX_MATCH` filters.
    pub prefixes: Vec<String>,
}

/// What `DescribeImages` says of one image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageInfo {
    /// Its tags, as ECR reports them (any length ECR accepts; never parsed,
    /// so a foreign tag can never make a read fail).
    pub tags: Vec<String>,
    /// When it was first pushed, as milliseconds since the Unix epoch.
    pub pushed_at_ms: Option<i64>,
    /// Its manifest media type, as reported.
    pub media_type: Option<String>,
    /// Its config media type (`artifactMediaType`), as reported.
    pub artifact_media_type: Option<String>,
    /// Its size in bytes, as reported (for an index, ECR reports the size of
    /// the largest manifest it lists, not its own).
    pub size_bytes: Option<i64>,
    /// The manifest it is an OCI referrer of (`subjectManifestDigest`), if any.
    pub subject: Option<Digest>,
    /// When the registry last recorded a pull (`lastRecordedPullTime`, ms
    /// since the epoch; ECR refreshes it about once a day and not for
    /// principals on its pull-time update exclusion list).
    pub last_pulled_ms: Option<i64>,
}

/// A registry call that failed as a whole.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RegistryError {
    /// The repository does not exist.
    #[error("{operation}: repository {} does not exist", named(repository.as_ref()))]
    RepositoryNotFound {
        /// The operation.
        operation: &'static str,
        /// The repository, when the caller said which.
        repository: Option<RepositoryName>,
    },
    /// The tag exists and the repository's tag immutability forbids moving it.
    #[error("{operation}: tag {} is immutable in this repository", named(tag.as_ref()))]
    TagImmutable {
        /// The operation.
        operation: &'static str,
        /// The tag, when the caller said which.
        tag: Option<ImageTag>,
    },
    /// An index refers to manifests the repository does not have.
    #[error("{operation}: the index refers to images not in the repository: {message}")]
    ReferencedImagesNotFound {
        /// The operation.
        operation: &'static str,
        /// The registry's message.
        message: String,
    },
    /// Throttled, after the SDK's own retries.
    #[error("{operation}: throttled: {message}")]
    Throttled {
        /// The operation.
        operation: &'static str,
        /// The registry's message.
        message: String,
    },
    /// A server-side or transport failure, after retries.
    #[error("{operation}: service unavailable: {message}")]
    Unavailable {
        /// The operation.
        operation: &'static str,
        /// What happened.
        message: String,
    },
    /// Any other error the service returned (access denied, invalid parameter, ...).
    #[error("{operation}: {code}: {message}")]
    Service {
        /// The operation.
        operation: &'static str,
        /// The error code.
        code: String,
        /// The message.
        message: String,
    },
    /// The response did not make sense.
    #[error("{operation}: unexpected response: {problem}")]
    InvalidResponse {
        /// The operation.
        operation: &'static str,
        /// What is wrong.
        problem: String,
    },
}

/// A name in an error message, or what stands for it when unknown.
fn named(name: Option<&impl std::fmt::Display>) -> String {
    name.map_or_else(|| "(unnamed)".to_owned(), ToString::to_string)
}

impl RegistryError {
    /// The error, naming the repository (and tag) the call was about: an
    /// adapter knows them, the service's message does not always say.
    #[must_use]
    pub fn about(self, repository: &RepositoryName, tag: Option<&ImageTag>) -> Self {
        match self {
            RegistryError::RepositoryNotFound { operation, .. } => RegistryError::RepositoryNotFound {
                operation,
                repository: Some(repository.clone()),
            },
            RegistryError::TagImmutable { operation, tag: None } => RegistryError::TagImmutable {
                operation,
                tag: tag.cloned(),
            },
            other => other,
        }
    }

    /// True when trying again later may succeed (throttling, 5xx, transport).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            RegistryError::Throttled { .. } | RegistryError::Unavailable { .. }
        )
    }

    /// A short stable code for audit records.
    pub fn code(&self) -> &str {
        match self {
            RegistryError::RepositoryNotFound { .. } => "RepositoryNotFound",
            RegistryError::TagImmutable { .. } => "ImageTagAlreadyExists",
            RegistryError::ReferencedImagesNotFound { .. } => "ReferencedImagesNotFound",
            RegistryError::Throttled { .. } => "Throttled",
            RegistryError::Unavailable { .. } => "Unavailable",
            RegistryError::Service { code, .. } => code,
            RegistryError::InvalidResponse { .. } => "InvalidResponse",
        }
    }
}

/// Registries of other accounts (an organisation's members), each reached
/// through a role there: one per account, kept, so each has its own
/// credentials (refreshed before they expire) and its own `PutImage` pacing.
pub trait AccountRegistries<R>: Send + Sync + std::fmt::Debug {
    /// The registry of `account` in this region. An error (the role is
    /// missing, does not trust the caller, the external id is wrong) is for
    /// that account alone.
    fn registry_for<'a>(
        &'a self,
        account: &'a AccountId,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<std::sync::Arc<R>, RegistryError>> + Send + 'a>>;
}

/// The registry operations the service uses.
pub trait Registry: Sync {
    /// Reads images by digest or tag in one call (`BatchGetImage`, ≤ 100 ids;
    /// the adapter splits larger requests). Manifest bytes are exactly as stored.
    fn get_images(
        &self,
        repository: &RepositoryName,
        ids: &[ImageRef],
    ) -> impl Future<Output = Result<Fetched, RegistryError>> + Send;

    /// Stores `manifest` (byte for byte) with `tag`, or untagged (`PutImage`).
    fn put_image(
        &self,
        repository: &RepositoryName,
        manifest: &RawManifest,
        tag: Option<&ImageTag>,
    ) -> impl Future<Output = Result<PutOutcome, RegistryError>> + Send;

    /// Deletes images by digest (`BatchDeleteImage` in chunks of ≤ 100), in order.
    fn delete_images(
        &self,
        repository: &RepositoryName,
        digests: &[Digest],
    ) -> impl Future<Output = Result<Vec<(Digest, DeleteOutcome)>, RegistryError>> + Send;

    /// Details of each of `digests` (`DescribeImages` by `imageIds`, at most
    /// 100 per call); `None` for an image that no longer exists.
    fn describe_images(
        &self,
        repository: &RepositoryName,
        digests: &[Digest],
    ) -> impl Future<Output = Result<BTreeMap<Digest, Option<ImageInfo>>, RegistryError>> + Send;

    /// Every repository of the registry (`DescribeRepositories`, paginated).
    /// For sweeps only: the per-push path never lists.
    fn list_repositories(&self) -> impl Future<Output = Result<Vec<RepositoryName>, RegistryError>> + Send;

    /// Every active image of a repository with its details (`DescribeImages`,
    /// paginated). For sweeps only, once per repository per sweep.
    fn list_images(
        &self,
        repository: &RepositoryName,
    ) -> impl Future<Output = Result<Vec<(Digest, ImageInfo)>, RegistryError>> + Send;

    /// The registry's replication rules (`DescribeRegistry`). For sweeps
    /// only. The default: none (a registry that does not replicate).
    fn replication_rules(&self) -> impl Future<Output = Result<Vec<ReplicationRule>, RegistryError>> + Send {
        async { Ok(Vec::new()) }
    }

    /// Every active image of `repository` in this account's registry in
    /// `region` (a replication destination), as [`Registry::list_images`];
    /// `None` when this registry cannot reach another region. For sweeps only.
    fn list_images_in_region(
        &self,
        region: &str,
        repository: &RepositoryName,
    ) -> impl Future<Output = Result<Option<Vec<(Digest, ImageInfo)>>, RegistryError>> + Send {
        let _ = (region, repository);
        async { Ok(None) }
    }

    /// The manifests whose OCI `subject` is `subject` (`ListImageReferrers`,
    /// paginated; active ones only), oldest first, each with its signature
    /// format when its artifact type is one.
    fn list_referrers(
        &self,
        repository: &RepositoryName,
        subject: &Digest,
    ) -> impl Future<Output = Result<Vec<Referrer>, RegistryError>> + Send;

    /// The value of the repository's resource tag `key`, if it has one
    /// (`ListTagsForResource`). The ECR adapter caches answers briefly (see
    /// `aws::tag_cache::REPOSITORY_TAG_TTL`), so a burst of pushes to one repository
    /// costs one call.
    fn repository_tag(
        &self,
        repository: &RepositoryName,
        key: &str,
    ) -> impl Future<Output = Result<Option<String>, RegistryError>> + Send;

    /// What runs in this registry's account and region by digest (ECS
    /// services, tasks and task definitions, Lambda functions): not an ECR
    /// call, but reached through the same credentials (a member account's
    /// role in a hub). Answers from a scan that started at or after
    /// `not_before_ms` and is not older than the adapter's bound, scanning
    /// again otherwise. An error means nothing is known: every deletion then
    /// keeps its candidate.
    fn images_in_use(
        &self,
        not_before_ms: i64,
    ) -> impl Future<Output = Result<std::sync::Arc<crate::decide::usage::InUse>, RegistryError>> + Send;

    /// Waits until `count` `PutImage` calls may be made under the client-side
    /// rate limit, and reserves them. The engine calls it *before* its
    /// precondition check, so no pacing ever sits between a check and the
    /// write it guards. The default does not limit.
    fn reserve_puts(&self, count: usize) -> impl Future<Output = ()> + Send {
        let _ = count;
        async {}
    }

    /// Gives back `count` reserved `PutImage` calls that were not made (the
    /// precondition check failed or found the writes done). The default does
    /// nothing.
    fn refund_puts(&self, count: usize) -> impl Future<Output = ()> + Send {
        let _ = count;
        async {}
    }
}
