//! An in-memory registry with ECR's rules, for unit tests.
//!
//! Digests are over the exact bytes; an index needs its children; a child an
//! index refers to cannot be deleted; tags move unless the repository is
//! immutable. Calls are counted per ECR operation, and failures can be
//! scripted per operation.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::{DeleteOutcome, FetchFailure, Fetched, ImageRef, ImageSummary, PutOutcome, Registry, RegistryError};
use crate::digest::Digest;
use crate::manifest::RawManifest;
use crate::names::{ImageTag, RepositoryName};

/// One repository's content.
#[derive(Debug, Default, Clone)]
pub struct RepoState {
    /// Manifests by digest.
    pub images: BTreeMap<Digest, RawManifest>,
    /// Tag -> digest.
    pub tags: BTreeMap<ImageTag, Digest>,
    /// Tag immutability.
    pub immutable: bool,
}

impl RepoState {
    /// The tags of `digest`.
    pub fn tags_of(&self, digest: &Digest) -> Vec<ImageTag> {
        self.tags
            .iter()
            .filter(|(_, d)| *d == digest)
            .map(|(t, _)| t.clone())
            .collect()
    }

    fn referenced(&self, digest: &Digest) -> bool {
        self.images
            .values()
            .any(|m| m.digest() != digest && m.entries().iter().any(|e| &e.digest == digest))
    }
}

/// The in-memory registry.
#[derive(Debug, Default)]
pub struct MemoryRegistry {
    repos: Mutex<BTreeMap<String, RepoState>>,
    calls: Mutex<BTreeMap<&'static str, usize>>,
    failures: Mutex<BTreeMap<&'static str, VecDeque<RegistryError>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MemoryRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates an empty repository.
    pub fn create_repository(&self, name: &RepositoryName, immutable: bool) {
        lock(&self.repos).insert(
            name.as_str().to_owned(),
            RepoState {
                immutable,
                ..RepoState::default()
            },
        );
    }

    /// Stores a manifest as a client push would (children must exist first).
    pub fn push(
        &self,
        name: &RepositoryName,
        manifest: &RawManifest,
        tag: Option<&ImageTag>,
    ) -> Result<(), RegistryError> {
        let mut repos = lock(&self.repos);
        let repo = repos
            .get_mut(name.as_str())
            .ok_or_else(|| not_found("PutImage", name))?;
        store(repo, manifest, tag)
    }

    /// A copy of a repository's content.
    pub fn state(&self, name: &RepositoryName) -> Option<RepoState> {
        lock(&self.repos).get(name.as_str()).cloned()
    }

    /// Calls made per ECR operation.
    pub fn calls(&self) -> BTreeMap<&'static str, usize> {
        lock(&self.calls).clone()
    }

    /// Total calls made.
    pub fn total_calls(&self) -> usize {
        lock(&self.calls).values().sum()
    }

    /// Makes the next calls of `operation` fail with these errors, in order.
    pub fn fail_next(&self, operation: &'static str, errors: impl IntoIterator<Item = RegistryError>) {
        lock(&self.failures).entry(operation).or_default().extend(errors);
    }

    fn enter(&self, operation: &'static str) -> Result<(), RegistryError> {
        *lock(&self.calls).entry(operation).or_default() += 1;
        match lock(&self.failures).get_mut(operation).and_then(VecDeque::pop_front) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn with_repo<T>(
        &self,
        operation: &'static str,
        name: &RepositoryName,
        f: impl FnOnce(&mut RepoState) -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        self.enter(operation)?;
        let mut repos = lock(&self.repos);
        let repo = repos.get_mut(name.as_str()).ok_or_else(|| not_found(operation, name))?;
        f(repo)
    }
}

fn not_found(operation: &'static str, name: &RepositoryName) -> RegistryError {
    RegistryError::RepositoryNotFound {
        operation,
        repository: name.as_str().to_owned(),
    }
}

fn store(repo: &mut RepoState, manifest: &RawManifest, tag: Option<&ImageTag>) -> Result<(), RegistryError> {
    let digest = manifest.digest();
    let missing: Vec<String> = manifest
        .entries()
        .iter()
        .filter(|e| !repo.images.contains_key(&e.digest))
        .map(|e| e.digest.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(RegistryError::ReferencedImagesNotFound {
            operation: "PutImage",
            message: missing.join(", "),
        });
    }
    if let Some(t) = tag
        && repo.immutable
        && repo.tags.get(t).is_some_and(|d| d != digest)
    {
        return Err(RegistryError::TagImmutable {
            operation: "PutImage",
            tag: t.to_string(),
        });
    }
    repo.images.insert(digest.clone(), manifest.clone());
    if let Some(t) = tag {
        repo.tags.insert(t.clone(), digest.clone());
    }
    Ok(())
}

impl Registry for MemoryRegistry {
    async fn get_images(&self, repository: &RepositoryName, ids: &[ImageRef]) -> Result<Fetched, RegistryError> {
        self.with_repo("BatchGetImage", repository, |repo| {
            Ok(ids
                .iter()
                .map(|id| {
                    let digest = match id {
                        ImageRef::Digest(d) => Some(d.clone()),
                        ImageRef::Tag(t) => repo.tags.get(t).cloned(),
                    };
                    let found = digest
                        .and_then(|d| repo.images.get(&d).cloned())
                        .ok_or(FetchFailure::NotFound);
                    (id.clone(), found)
                })
                .collect())
        })
    }

    async fn put_image(
        &self,
        repository: &RepositoryName,
        manifest: &RawManifest,
        tag: &ImageTag,
    ) -> Result<PutOutcome, RegistryError> {
        self.with_repo("PutImage", repository, |repo| {
            if repo.tags.get(tag) == Some(manifest.digest()) {
                return Ok(PutOutcome::AlreadyExists);
            }
            store(repo, manifest, Some(tag)).map(|()| PutOutcome::Stored)
        })
    }

    async fn delete_images(
        &self,
        repository: &RepositoryName,
        digests: &[Digest],
    ) -> Result<Vec<(Digest, DeleteOutcome)>, RegistryError> {
        let mut out = Vec::new();
        for chunk in digests.chunks(100) {
            let part = self.with_repo("BatchDeleteImage", repository, |repo| {
                Ok(chunk
                    .iter()
                    .map(|d| {
                        let outcome = if !repo.images.contains_key(d) {
                            DeleteOutcome::NotFound
                        } else if repo.referenced(d) {
                            DeleteOutcome::ReferencedByManifestList
                        } else {
                            repo.images.remove(d);
                            repo.tags.retain(|_, t| t != d);
                            DeleteOutcome::Deleted
                        };
                        (d.clone(), outcome)
                    })
                    .collect::<Vec<_>>())
            })?;
            out.extend(part);
        }
        Ok(out)
    }

    async fn list_images(&self, repository: &RepositoryName) -> Result<Vec<ImageSummary>, RegistryError> {
        self.with_repo("DescribeImages", repository, |repo| {
            Ok(repo
                .images
                .iter()
                .map(|(d, m)| ImageSummary {
                    digest: d.clone(),
                    tags: repo.tags_of(d),
                    media_type: Some(m.media_type().as_str().to_owned()),
                })
                .collect())
        })
    }

    async fn tags_of(
        &self,
        repository: &RepositoryName,
        digests: &[Digest],
    ) -> Result<BTreeMap<Digest, Option<Vec<ImageTag>>>, RegistryError> {
        self.with_repo("DescribeImages", repository, |repo| {
            Ok(digests
                .iter()
                .map(|d| (d.clone(), repo.images.contains_key(d).then(|| repo.tags_of(d))))
                .collect())
        })
    }
}
