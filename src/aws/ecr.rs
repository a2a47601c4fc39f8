//! [`Registry`] on Amazon ECR (aws-sdk-ecr).

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_ecr::Client;
use aws_sdk_ecr::types::{ImageFailureCode, ImageIdentifier};
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::registry_error;
use crate::digest::Digest;
use crate::manifest::RawManifest;
use crate::media_type::ManifestMediaType;
use crate::names::{ImageTag, RepositoryName};
use crate::registry::{
    DeleteOutcome, FetchFailure, Fetched, ImageRef, ImageSummary, PutOutcome, Registry, RegistryError,
};

use crate::config::DEFAULT_PUT_TPS;

/// ECR's limit of image ids per `BatchGetImage`/`BatchDeleteImage`/`DescribeImages`.
pub const MAX_IDS_PER_CALL: usize = 100;

/// The ECR adapter.
#[derive(Debug)]
pub struct EcrRegistry {
    client: Client,
    put_interval: Duration,
    next_put: Mutex<Instant>,
}

impl EcrRegistry {
    /// An adapter over `client`, issuing at most `put_tps` `PutImage` calls per second.
    pub fn new(client: Client, put_tps: f64) -> Self {
        let tps = if put_tps.is_finite() && put_tps > 0.0 {
            put_tps
        } else {
            DEFAULT_PUT_TPS
        };
        EcrRegistry {
            client,
            put_interval: Duration::from_secs_f64(1.0 / tps),
            next_put: Mutex::new(Instant::now()),
        }
    }

    /// Waits for the client-side `PutImage` rate limit.
    async fn pace_put(&self) {
        let wait_until = {
            let mut next = self.next_put.lock().await;
            let now = Instant::now();
            let slot = (*next).max(now);
            *next = slot + self.put_interval;
            slot
        };
        tokio::time::sleep_until(wait_until).await;
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
            let reply = request.send().await.map_err(|e| registry_error("BatchGetImage", e))?;
            for id in chunk {
                let result = if let Some(image) = reply.images().iter().find(|i| matches(id, i.image_id())) {
                    match image.image_manifest() {
                        Some(text) => RawManifest::parse(text.as_bytes().to_vec(), image.image_manifest_media_type())
                            .map_err(FetchFailure::Invalid),
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
        tag: &ImageTag,
    ) -> Result<PutOutcome, RegistryError> {
        let text = std::str::from_utf8(manifest.bytes()).map_err(|e| RegistryError::InvalidResponse {
            operation: "PutImage",
            problem: format!("manifest is not UTF-8: {e}"),
        })?;
        self.pace_put().await;
        let sent = self
            .client
            .put_image()
            .repository_name(repository.as_str())
            .image_manifest(text)
            .image_manifest_media_type(manifest.media_type().as_str())
            .image_digest(manifest.digest().to_string())
            .image_tag(tag.as_str())
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
            Err(e) => Err(registry_error("PutImage", e)),
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
                .map_err(|e| registry_error("BatchDeleteImage", e))?;
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

    async fn list_images(&self, repository: &RepositoryName) -> Result<Vec<ImageSummary>, RegistryError> {
        let mut pages = self
            .client
            .describe_images()
            .repository_name(repository.as_str())
            .max_results(1000)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| registry_error("DescribeImages", e))?;
            for detail in page.image_details() {
                out.push(summary(detail)?);
            }
        }
        Ok(out)
    }

    async fn tags_of(
        &self,
        repository: &RepositoryName,
        digests: &[Digest],
    ) -> Result<BTreeMap<Digest, Option<Vec<ImageTag>>>, RegistryError> {
        let mut out: BTreeMap<Digest, Option<Vec<ImageTag>>> = BTreeMap::new();
        for chunk in digests.chunks(MAX_IDS_PER_CALL) {
            match self.describe(repository, chunk).await {
                Ok(found) => out.extend(found),
                // One missing image fails the whole call: ask one by one.
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
        Ok(out)
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
    ) -> Result<Vec<(Digest, Option<Vec<ImageTag>>)>, DescribeError> {
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
            Err(e) => return Err(DescribeError::Other(registry_error("DescribeImages", e))),
        };
        reply
            .image_details()
            .iter()
            .map(|d| summary(d).map(|s| (s.digest, Some(s.tags))))
            .collect::<Result<_, _>>()
            .map_err(DescribeError::Other)
    }
}

fn summary(detail: &aws_sdk_ecr::types::ImageDetail) -> Result<ImageSummary, RegistryError> {
    let bad = |problem: String| RegistryError::InvalidResponse {
        operation: "DescribeImages",
        problem,
    };
    let digest = Digest::parse(detail.image_digest().unwrap_or_default()).map_err(|e| bad(e.to_string()))?;
    let tags = detail
        .image_tags()
        .iter()
        .map(|t| ImageTag::parse(t).map_err(|e| bad(format!("tag {t}: {e}"))))
        .collect::<Result<_, _>>()?;
    Ok(ImageSummary {
        digest,
        tags,
        media_type: detail.image_manifest_media_type().map(str::to_owned),
    })
}
