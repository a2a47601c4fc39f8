//! [`Registry`] on Amazon ECR (aws-sdk-ecr).
//!
//! One adapter, one file: each method of the trait is one ECR API call with
//! its paging, batching (100 ids per call) and error mapping, next to the
//! `PutImage` token bucket they share; split, the ECR semantics (ECR-FACTS)
//! would be spread over several files.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_ecr::Client;
use aws_sdk_ecr::types::{ImageFailureCode, ImageIdentifier};
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::registry_error;
use super::tag_cache::TagCache;
use crate::engine::registry::{
    DeleteOutcome, FetchFailure, Fetched, ImageInfo, ImageRef, PutOutcome, Registry, RegistryError,
};
use crate::oci::digest::Digest;
use crate::oci::manifest::RawManifest;
use crate::oci::media_type::ManifestMediaType;
use crate::oci::names::{AccountId, ImageTag, RepositoryName};
use crate::oci::signature::Referrer;
use crate::sweep::replication;

use crate::service::config::{DEFAULT_PUT_BURST, DEFAULT_PUT_TPS};

/// ECR's limit of image ids per `BatchGetImage`/`BatchDeleteImage`/`DescribeImages`.
pub const MAX_IDS_PER_CALL: usize = 100;

/// The ECR adapter. It makes one HTTP request per call: retrying is the
/// engine's (see [`crate::engine::retry`]), so that a write is only ever retried
/// after its preconditions were checked again.
#[derive(Debug)]
pub struct EcrRegistry {
    client: Client,
    bucket: Mutex<Bucket>,
    tags: std::sync::Mutex<TagCache>,
    /// The registry's account, when known: repository ARNs are then built,
    /// not looked up.
    account: Option<AccountId>,
    /// The scan of what runs in the account (`None`: not configured, so
    /// nothing is known to be unused and nothing is deleted where the policy
    /// asks for the evidence).
    workloads: Option<super::workloads::WorkloadScanner>,
}

/// A token bucket for `PutImage`: `burst` calls at once, `rate` per second
/// sustained. A reservation may take the balance below zero; the caller then
/// waits until its debt is paid back, so concurrent callers queue fairly.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn refund(&mut self, count: usize) {
        self.tokens = (self.tokens + count as f64).min(self.burst);
    }

    fn reserve(&mut self, count: usize, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.tokens -= count as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

impl EcrRegistry {
    /// An adapter over `client`, allowing `put_burst` `PutImage` calls at
    /// once and `put_tps` per second sustained. `client` should have the
    /// SDK's own retries off (see [`super::ecr_client`]).
    pub fn new(client: Client, put_tps: f64, put_burst: u32) -> Self {
        let rate = if put_tps.is_finite() && put_tps > 0.0 {
            put_tps
        } else {
            DEFAULT_PUT_TPS
        };
        let burst = f64::from(if put_burst == 0 { DEFAULT_PUT_BURST } else { put_burst });
        EcrRegistry {
            client,
            bucket: Mutex::new(Bucket {
                rate,
                burst,
                tokens: burst,
                last: Instant::now(),
            }),
            tags: std::sync::Mutex::new(TagCache::default()),
            account: None,
            workloads: None,
        }
    }

    /// The same adapter, scanning what runs in its account (ECS, Lambda)
    /// through `sdk`'s credentials (the same as the client's).
    pub fn with_workloads(mut self, sdk: &aws_config::SdkConfig) -> Self {
        self.workloads = Some(super::workloads::WorkloadScanner::new(sdk));
        self
    }

    /// The same adapter, knowing its registry's account (the member role's,
    /// or the deployment's own): repository ARNs are then built from the
    /// account and the client's region, with no `DescribeRepositories`.
    pub fn in_account(mut self, account: &AccountId) -> Self {
        self.account = Some(account.clone());
        self
    }

    fn tag_cache(&self) -> std::sync::MutexGuard<'_, TagCache> {
        self.tags.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The repository's ARN: built when the account is known, else
    /// `DescribeRepositories` (once per repository; then cached).
    async fn repository_arn(&self, repository: &RepositoryName) -> Result<String, RegistryError> {
        if let Some(arn) = self.tag_cache().arn(repository) {
            return Ok(arn.to_owned());
        }
        let region = self.client.config().region().map(|r| r.as_ref().to_owned());
        if let (Some(account), Some(region)) = (&self.account, region) {
            let partition = super::partition(Some(&region));
            return Ok(format!(
                "arn:{partition}:ecr:{region}:{account}:repository/{repository}"
            ));
        }
        let reply = self
            .client
            .describe_repositories()
            .repository_names(repository.as_str())
            .send()
            .await
            .map_err(|e| registry_error("DescribeRepositories", e).about(repository, None))?;
        reply
            .repositories()
            .iter()
            .find(|r| r.repository_name() == Some(repository.as_str()))
            .and_then(|r| r.repository_arn())
            .map(str::to_owned)
            .ok_or_else(|| RegistryError::InvalidResponse {
                operation: "DescribeRepositories",
                problem: format!("no ARN for repository {repository}"),
            })
    }
}

fn identifier(id: &ImageRef) -> ImageIdentifier {
    match id {
        ImageRef::Digest(d) => ImageIdentifier::builder().image_digest(d.to_string()).build(),
        ImageRef::Tag(t) => ImageIdentifier::builder().image_tag(t.as_str()).build(),
    }
}

fn matches(id: &ImageRef, got: Option<&ImageIdentifier>) -> bool {
    let Some(got) = got else { return false };
    match id {
        ImageRef::Digest(d) => got.image_digest() == Some(d.to_string().as_str()),
        ImageRef::Tag(t) => got.image_tag() == Some(t.as_str()),
    }
}

impl Registry for EcrRegistry {
    async fn images_in_use(
        &self,
        not_before_ms: i64,
    ) -> Result<std::sync::Arc<crate::decide::usage::InUse>, RegistryError> {
        match &self.workloads {
            Some(scanner) => scanner.in_use(not_before_ms).await,
            None => Err(RegistryError::Service {
                operation: "ScanWorkloads",
                code: "NotConfigured".to_owned(),
                message: "this registry client has no workload scan configured".to_owned(),
            }),
        }
    }

    async fn get_images(&self, repository: &RepositoryName, ids: &[ImageRef]) -> Result<Fetched, RegistryError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(MAX_IDS_PER_CALL) {
            let mut request = self
                .client
                .batch_get_image()
                .repository_name(repository.as_str())
                .set_image_ids(Some(chunk.iter().map(identifier).collect()));
            for mt in ManifestMediaType::ALL {
                request = request.accepted_media_types(mt.as_str());
            }
            let reply = request
                .send()
                .await
                .map_err(|e| registry_error("BatchGetImage", e).about(repository, None))?;
            for id in chunk {
                let result = if let Some(image) = reply.images().iter().find(|i| matches(id, i.image_id())) {
                    match image.image_manifest() {
                        Some(text) => RawManifest::parse(text.as_bytes().to_vec(), image.image_manifest_media_type())
                            .map_err(|error| FetchFailure::Invalid {
                                digest: image
                                    .image_id()
                                    .and_then(ImageIdentifier::image_digest)
                                    .and_then(|d| Digest::parse(d).ok()),
                                error,
                            }),
                        None => Err(FetchFailure::Other {
                            code: "NoManifest".to_owned(),
                            reason: "BatchGetImage returned the image without its manifest".to_owned(),
                        }),
                    }
                } else if let Some(f) = reply.failures().iter().find(|f| matches(id, f.image_id())) {
                    match f.failure_code() {
                        Some(ImageFailureCode::ImageNotFound) => Err(FetchFailure::NotFound),
                        code => Err(FetchFailure::Other {
                            code: code.map_or("Unknown", ImageFailureCode::as_str).to_owned(),
                            reason: f.failure_reason().unwrap_or_default().to_owned(),
                        }),
                    }
                } else {
                    Err(FetchFailure::NotFound)
                };
                out.push((id.clone(), result));
            }
        }
        Ok(out)
    }

    async fn put_image(
        &self,
        repository: &RepositoryName,
        manifest: &RawManifest,
        tag: Option<&ImageTag>,
    ) -> Result<PutOutcome, RegistryError> {
        let text = std::str::from_utf8(manifest.bytes()).map_err(|e| RegistryError::InvalidResponse {
            operation: "PutImage",
            problem: format!("manifest is not UTF-8: {e}"),
        })?;
        let sent = self
            .client
            .put_image()
            .repository_name(repository.as_str())
            .image_manifest(text)
            .image_manifest_media_type(manifest.media_type().as_str())
            .image_digest(manifest.digest().to_string())
            .set_image_tag(tag.map(|t| t.as_str().to_owned()))
            .send()
            .await;
        match sent {
            Ok(_) => Ok(PutOutcome::Stored),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_image_already_exists_exception()) =>
            {
                Ok(PutOutcome::AlreadyExists)
            }
            Err(e) => {
                let e = registry_error("PutImage", e).about(repository, tag);
                if matches!(e, RegistryError::Throttled { .. }) {
                    // ECR did not take the call, so it used none of the quota:
                    // give the token back (the engine still backs off).
                    self.bucket.lock().await.refund(1);
                }
                Err(e)
            }
        }
    }

    async fn delete_images(
        &self,
        repository: &RepositoryName,
        digests: &[Digest],
    ) -> Result<Vec<(Digest, DeleteOutcome)>, RegistryError> {
        let mut out = Vec::with_capacity(digests.len());
        for chunk in digests.chunks(MAX_IDS_PER_CALL) {
            let reply = self
                .client
                .batch_delete_image()
                .repository_name(repository.as_str())
                .set_image_ids(Some(
                    chunk.iter().map(|d| identifier(&ImageRef::Digest(d.clone()))).collect(),
                ))
                .send()
                .await
                .map_err(|e| registry_error("BatchDeleteImage", e).about(repository, None))?;
            for d in chunk {
                let deleted = reply
                    .image_ids()
                    .iter()
                    .any(|i| i.image_digest() == Some(d.to_string().as_str()));
                let failure = reply
                    .failures()
                    .iter()
                    .find(|f| f.image_id().and_then(ImageIdentifier::image_digest) == Some(d.to_string().as_str()));
                let outcome = match (deleted, failure) {
                    (true, _) => DeleteOutcome::Deleted,
                    (false, Some(f)) => match f.failure_code() {
                        Some(ImageFailureCode::ImageNotFound) => DeleteOutcome::NotFound,
                        Some(ImageFailureCode::ImageReferencedByManifestList) => {
                            DeleteOutcome::ReferencedByManifestList
                        }
                        code => DeleteOutcome::Failed {
                            code: code.map_or("Unknown", ImageFailureCode::as_str).to_owned(),
                            reason: f.failure_reason().unwrap_or_default().to_owned(),
                        },
                    },
                    (false, None) => DeleteOutcome::Failed {
                        code: "NoResult".to_owned(),
                        reason: "BatchDeleteImage reported neither success nor failure".to_owned(),
                    },
                };
                out.push((d.clone(), outcome));
            }
        }
        Ok(out)
    }

    async fn describe_images(
        &self,
        repository: &RepositoryName,
        digests: &[Digest],
    ) -> Result<BTreeMap<Digest, Option<ImageInfo>>, RegistryError> {
        let mut out: BTreeMap<Digest, Option<ImageInfo>> = BTreeMap::new();
        for chunk in digests.chunks(MAX_IDS_PER_CALL) {
            match self.describe(repository, chunk).await {
                Ok(found) => out.extend(found),
                // One missing image fails the whole call (ImageNotFoundException):
                // only then, ask one by one.
                Err(DescribeError::NotFound) => {
                    for d in chunk {
                        match self.describe(repository, std::slice::from_ref(d)).await {
                            Ok(found) => out.extend(found),
                            Err(DescribeError::NotFound) => {
                                out.insert(d.clone(), None);
                            }
                            Err(DescribeError::Other(e)) => return Err(e),
                        }
                    }
                }
                Err(DescribeError::Other(e)) => return Err(e),
            }
        }
        for d in digests {
            out.entry(d.clone()).or_insert(None);
        }
        Ok(out)
    }

    async fn repository_tag(&self, repository: &RepositoryName, key: &str) -> Result<Option<String>, RegistryError> {
        if let Some(tags) = self.tag_cache().fresh(repository, std::time::Instant::now()) {
            return Ok(tags.get(key).cloned());
        }
        let arn = self.repository_arn(repository).await?;
        let reply = match self.client.list_tags_for_resource().resource_arn(&arn).send().await {
            Ok(reply) => reply,
            Err(e) => {
                let e = registry_error("ListTagsForResource", e).about(repository, None);
                if matches!(e, RegistryError::RepositoryNotFound { .. }) {
                    self.tag_cache().forget(repository);
                }
                return Err(e);
            }
        };
        let tags: BTreeMap<String, String> = reply
            .tags()
            .iter()
            .map(|t| (t.key().to_owned(), t.value().to_owned()))
            .collect();
        let value = tags.get(key).cloned();
        self.tag_cache().store(repository, arn, tags, std::time::Instant::now());
        Ok(value)
    }

    async fn list_repositories(&self) -> Result<Vec<RepositoryName>, RegistryError> {
        let mut pages = self
            .client
            .describe_repositories()
            .max_results(1000)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| registry_error("DescribeRepositories", e))?;
            for r in page.repositories() {
                let name = r.repository_name().unwrap_or_default();
                out.push(RepositoryName::parse(name).map_err(|e| RegistryError::InvalidResponse {
                    operation: "DescribeRepositories",
                    problem: e.to_string(),
                })?);
            }
        }
        Ok(out)
    }

    async fn list_images(&self, repository: &RepositoryName) -> Result<Vec<(Digest, ImageInfo)>, RegistryError> {
        list_images_with(&self.client, repository).await
    }

    async fn replication_rules(&self) -> Result<Vec<replication::Rule>, RegistryError> {
        let reply = self
            .client
            .describe_registry()
            .send()
            .await
            .map_err(|e| registry_error("DescribeRegistry", e))?;
        let Some(config) = reply.replication_configuration() else {
            return Ok(Vec::new());
        };
        config
            .rules()
            .iter()
            .map(|rule| {
                let destinations = rule
                    .destinations()
                    .iter()
                    .map(|d| {
                        Ok(replication::Destination {
                            account: AccountId::parse(d.registry_id()).map_err(|e| RegistryError::InvalidResponse {
                                operation: "DescribeRegistry",
                                problem: format!("registryId: {e}"),
                            })?,
                            region: d.region().to_owned(),
                        })
                    })
                    .collect::<Result<Vec<_>, RegistryError>>()?;
                let prefixes = rule
                    .repository_filters()
                    .iter()
                    .map(|f| f.filter().to_owned())
                    .collect();
                Ok(replication::Rule { destinations, prefixes })
            })
            .collect()
    }

    async fn list_images_in_region(
        &self,
        region: &str,
        repository: &RepositoryName,
    ) -> Result<Option<Vec<(Digest, ImageInfo)>>, RegistryError> {
        let config = self
            .client
            .config()
            .to_builder()
            .region(aws_sdk_ecr::config::Region::new(region.to_owned()))
            .build();
        list_images_with(&Client::from_conf(config), repository).await.map(Some)
    }

    async fn list_referrers(
        &self,
        repository: &RepositoryName,
        subject: &Digest,
    ) -> Result<Vec<Referrer>, RegistryError> {
        let id = aws_sdk_ecr::types::SubjectIdentifier::builder()
            .image_digest(subject.to_string())
            .build()
            .map_err(|e| RegistryError::InvalidResponse {
                operation: "ListImageReferrers",
                problem: e.to_string(),
            })?;
        let any_status = aws_sdk_ecr::types::ListImageReferrersFilter::builder()
            .artifact_status(aws_sdk_ecr::types::ArtifactStatusFilter::Any)
            .build();
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_image_referrers()
                .repository_name(repository.as_str())
                .subject_id(id.clone())
                // Without a status filter ECR lists ACTIVE referrers only: an
                // archived signature keeps its subject as much as an active one.
                .filter(any_status.clone())
                .max_results(50)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| registry_error("ListImageReferrers", e).about(repository, None))?;
            for r in page.referrers() {
                let d = Digest::parse(r.digest()).map_err(|e| RegistryError::InvalidResponse {
                    operation: "ListImageReferrers",
                    problem: e.to_string(),
                })?;
                out.push(Referrer::new(d, r.artifact_type()));
            }
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_owned()),
                _ => return Ok(out),
            }
        }
    }

    async fn refund_puts(&self, count: usize) {
        self.bucket.lock().await.refund(count);
    }

    async fn reserve_puts(&self, count: usize) {
        let wait = self.bucket.lock().await.reserve(count, Instant::now());
        if !wait.is_zero() {
            tracing::debug!(wait_ms = wait.as_millis() as u64, "PutImage rate limit");
            tokio::time::sleep(wait).await;
        }
    }
}

enum DescribeError {
    NotFound,
    Other(RegistryError),
}

impl EcrRegistry {
    async fn describe(
        &self,
        repository: &RepositoryName,
        digests: &[Digest],
    ) -> Result<Vec<(Digest, Option<ImageInfo>)>, DescribeError> {
        let reply = self
            .client
            .describe_images()
            .repository_name(repository.as_str())
            .set_image_ids(Some(
                digests
                    .iter()
                    .map(|d| identifier(&ImageRef::Digest(d.clone())))
                    .collect(),
            ))
            .send()
            .await;
        let reply = match reply {
            Ok(r) => r,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_image_not_found_exception()) => {
                return Err(DescribeError::NotFound);
            }
            Err(e) => {
                return Err(DescribeError::Other(
                    registry_error("DescribeImages", e).about(repository, None),
                ));
            }
        };
        reply
            .image_details()
            .iter()
            .map(|detail| {
                image_entry(detail)
                    .map(|(d, info)| (d, Some(info)))
                    .map_err(DescribeError::Other)
            })
            .collect()
    }
}

/// Every active image of `repository` through `client` (`DescribeImages`, paginated).
async fn list_images_with(
    client: &Client,
    repository: &RepositoryName,
) -> Result<Vec<(Digest, ImageInfo)>, RegistryError> {
    let mut pages = client
        .describe_images()
        .repository_name(repository.as_str())
        .max_results(1000)
        .into_paginator()
        .send();
    let mut out = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| registry_error("DescribeImages", e).about(repository, None))?;
        for detail in page.image_details() {
            out.push(image_entry(detail)?);
        }
    }
    Ok(out)
}

/// One `DescribeImages` detail as the core sees it.
fn image_entry(detail: &aws_sdk_ecr::types::ImageDetail) -> Result<(Digest, ImageInfo), RegistryError> {
    let digest =
        Digest::parse(detail.image_digest().unwrap_or_default()).map_err(|e| RegistryError::InvalidResponse {
            operation: "DescribeImages",
            problem: e.to_string(),
        })?;
    let info = ImageInfo {
        tags: detail.image_tags().to_vec(),
        pushed_at_ms: detail.image_pushed_at().and_then(|t| t.to_millis().ok()),
        media_type: detail.image_manifest_media_type().map(str::to_owned),
        artifact_media_type: detail.artifact_media_type().map(str::to_owned),
        size_bytes: detail.image_size_in_bytes(),
        subject: detail.subject_manifest_digest().and_then(|d| Digest::parse(d).ok()),
        last_pulled_ms: detail.last_recorded_pull_time().and_then(|t| t.to_millis().ok()),
    };
    Ok((digest, info))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_a_burst_then_paces() {
        let start = Instant::now();
        let mut b = Bucket {
            rate: 2.0,
            burst: 4.0,
            tokens: 4.0,
            last: start,
        };
        assert_eq!(b.reserve(2, start), Duration::ZERO);
        assert_eq!(b.reserve(2, start), Duration::ZERO);
        // Empty: the next call waits half a second at 2 per second.
        assert_eq!(b.reserve(1, start), Duration::from_millis(500));
        // Refilled after a while, never above the burst.
        let later = start + Duration::from_secs(60);
        assert_eq!(b.reserve(4, later), Duration::ZERO);
        assert_eq!(b.reserve(1, later), Duration::from_millis(500));
        // Calls not made (or throttled, so not counted by ECR) come back, up to the burst.
        b.refund(3);
        assert_eq!(b.reserve(2, later), Duration::ZERO);
        b.refund(100);
        assert_eq!(b.reserve(4, later), Duration::ZERO);
        assert_eq!(b.reserve(1, later), Duration::from_millis(500));
    }
}
