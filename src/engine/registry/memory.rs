//! An in-memory registry with ECR's rules, for unit tests (feature
//! `test-util`; never in the shipped binaries).
//!
//! Digests are over the exact bytes; an index needs its children; a child an
//! index refers to cannot be deleted; tags move unless the repository is
//! immutable. Calls are counted per ECR operation, failures can be scripted
//! per operation, and a hook can change the registry just before a chosen
//! call, to stage races precisely.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::{DeleteOutcome, FetchFailure, Fetched, ImageInfo, ImageRef, PutOutcome, Registry, RegistryError};
use crate::decide::usage::InUse;
use crate::oci::digest::Digest;
use crate::oci::manifest::{Manifest, RawManifest};
use crate::oci::names::{ImageTag, RepositoryName};
use crate::oci::signature::Referrer;

/// One repository's content.
#[derive(Debug, Default, Clone)]
pub struct RepoState {
    /// Manifests by digest.
    pub images: BTreeMap<Digest, RawManifest>,
    /// Tag -> digest.
    pub tags: BTreeMap<ImageTag, Digest>,
    /// Tag immutability.
    pub immutable: bool,
    /// First-push time of each image (a logical clock, in milliseconds).
    pub pushed_at: BTreeMap<Digest, i64>,
    /// The repository's resource tags (key -> value).
    pub resource_tags: BTreeMap<String, String>,
    /// When each image was last pulled (`lastRecordedPullTime`, ms since the epoch), when it was.
    pub pulled_at: BTreeMap<Digest, i64>,
    clock: i64,
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

/// A hook run just before a call: the operation, how many calls of it were
/// made before this one, and every repository's state to change.
pub type Hook = Box<dyn FnMut(&'static str, usize, &mut BTreeMap<String, RepoState>) + Send>;

/// The in-memory registry.
#[derive(Default)]
pub struct MemoryRegistry {
    repos: Mutex<BTreeMap<String, RepoState>>,
    calls: Mutex<BTreeMap<&'static str, usize>>,
    failures: Mutex<BTreeMap<&'static str, VecDeque<RegistryError>>>,
    hook: Mutex<Option<Hook>>,
    in_use: Mutex<Option<Result<InUse, RegistryError>>>,
}

impl std::fmt::Debug for MemoryRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryRegistry")
            .field("repos", &self.repos)
            .field("calls", &self.calls)
            .finish_non_exhaustive()
    }
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

    /// Sets (or, with `None`, removes) a resource tag of the repository.
    pub fn tag_repository(&self, name: &RepositoryName, key: &str, value: Option<&str>) {
        if let Some(repo) = lock(&self.repos).get_mut(name.as_str()) {
            match value {
                Some(v) => repo.resource_tags.insert(key.to_owned(), v.to_owned()),
                None => repo.resource_tags.remove(key),
            };
        }
    }

    /// What the workload scan answers from now on (`Err`: the scan fails);
    /// by default nothing is in use. Each answer counts one `ScanWorkloads` call.
    pub fn set_in_use(&self, answer: Result<InUse, RegistryError>) {
        *lock(&self.in_use) = Some(answer);
    }

    /// Records a pull of `digest` at `at_ms` (as ECR's `lastRecordedPullTime`).
    pub fn record_pull(&self, name: &RepositoryName, digest: &Digest, at_ms: i64) {
        if let Some(repo) = lock(&self.repos).get_mut(name.as_str()) {
            repo.pulled_at.insert(digest.clone(), at_ms);
        }
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

    /// Runs `hook` just before every later call (replacing any earlier hook).
    pub fn on_call(&self, hook: impl FnMut(&'static str, usize, &mut BTreeMap<String, RepoState>) + Send + 'static) {
        *lock(&self.hook) = Some(Box::new(hook));
    }

    fn enter(&self, operation: &'static str) -> Result<(), RegistryError> {
        let before = {
            let mut calls = lock(&self.calls);
            let n = calls.entry(operation).or_default();
            *n += 1;
            *n - 1
        };
        if let Some(hook) = lock(&self.hook).as_mut() {
            hook(operation, before, &mut lock(&self.repos));
        }
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
        repository: Some(name.clone()),
    }
}

/// Stores a manifest (and tag) with ECR's rules, as `PutImage` would.
pub fn store(repo: &mut RepoState, manifest: &RawManifest, tag: Option<&ImageTag>) -> Result<(), RegistryError> {
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
            tag: Some(t.clone()),
        });
    }
    if !repo.images.contains_key(digest) {
        repo.clock += 1000;
        repo.pushed_at.insert(digest.clone(), repo.clock);
    }
    repo.images.insert(digest.clone(), manifest.clone());
    if let Some(t) = tag {
        repo.tags.insert(t.clone(), digest.clone());
    }
    Ok(())
}

/// ECR's `imageSizeInBytes`: an image's layers; an index's largest listed manifest.
fn size_of(repo: &RepoState, m: &RawManifest) -> u64 {
    match m.manifest() {
        Manifest::Image(image) => image.layers.iter().map(|l| l.size).sum(),
        Manifest::Index(index) => index
            .manifests
            .iter()
            .filter_map(|e| repo.images.get(&e.digest))
            .map(|child| match child.manifest() {
                Manifest::Image(image) => image.layers.iter().map(|l| l.size).sum(),
                Manifest::Index(_) => 0,
            })
            .max()
            .unwrap_or(0),
    }
}

fn info_of(repo: &RepoState, d: &Digest) -> Option<ImageInfo> {
    let m = repo.images.get(d)?;
    Some(ImageInfo {
        tags: repo.tags_of(d).iter().map(ToString::to_string).collect(),
        pushed_at_ms: repo.pushed_at.get(d).copied(),
        last_pulled_ms: repo.pulled_at.get(d).copied(),
        media_type: Some(m.media_type().as_str().to_owned()),
        artifact_media_type: None,
        size_bytes: i64::try_from(size_of(repo, m)).ok(),
        subject: m.subject().map(|s| s.digest.clone()),
    })
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
        tag: Option<&ImageTag>,
    ) -> Result<PutOutcome, RegistryError> {
        self.with_repo("PutImage", repository, |repo| {
            let done = match tag {
                Some(tag) => repo.tags.get(tag) == Some(manifest.digest()),
                None => repo.images.contains_key(manifest.digest()),
            };
            if done {
                return Ok(PutOutcome::AlreadyExists);
            }
            store(repo, manifest, tag).map(|()| PutOutcome::Stored)
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
                            repo.pushed_at.remove(d);
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

    async fn describe_images(
        &self,
        repository: &RepositoryName,
        digests: &[Digest],
    ) -> Result<BTreeMap<Digest, Option<ImageInfo>>, RegistryError> {
        self.with_repo("DescribeImages", repository, |repo| {
            Ok(digests.iter().map(|d| (d.clone(), info_of(repo, d))).collect())
        })
    }

    async fn images_in_use(&self, not_before_ms: i64) -> Result<std::sync::Arc<InUse>, RegistryError> {
        self.enter("ScanWorkloads")?;
        match lock(&self.in_use).clone() {
            None => Ok(std::sync::Arc::new(InUse::new(not_before_ms))),
            Some(Ok(found)) => Ok(std::sync::Arc::new(found)),
            Some(Err(e)) => Err(e),
        }
    }

    async fn list_repositories(&self) -> Result<Vec<RepositoryName>, RegistryError> {
        self.enter("DescribeRepositories")?;
        Ok(lock(&self.repos)
            .keys()
            .filter_map(|n| RepositoryName::parse(n).ok())
            .collect())
    }

    async fn list_referrers(
        &self,
        repository: &RepositoryName,
        subject: &Digest,
    ) -> Result<Vec<Referrer>, RegistryError> {
        self.with_repo("ListImageReferrers", repository, |repo| {
            let mut found: Vec<(i64, Referrer)> = repo
                .images
                .iter()
                .filter(|(_, m)| m.subject().is_some_and(|s| &s.digest == subject))
                .map(|(d, m)| {
                    (
                        repo.pushed_at.get(d).copied().unwrap_or(0),
                        Referrer::new(d.clone(), m.artifact_type()),
                    )
                })
                .collect();
            found.sort();
            Ok(found.into_iter().map(|(_, r)| r).collect())
        })
    }

    async fn repository_tag(&self, repository: &RepositoryName, key: &str) -> Result<Option<String>, RegistryError> {
        self.with_repo("ListTagsForResource", repository, |repo| {
            Ok(repo.resource_tags.get(key).cloned())
        })
    }

    async fn list_images(&self, repository: &RepositoryName) -> Result<Vec<(Digest, ImageInfo)>, RegistryError> {
        self.with_repo("DescribeImages", repository, |repo| {
            Ok(repo
                .images
                .keys()
                .filter_map(|d| info_of(repo, d).map(|i| (d.clone(), i)))
                .collect())
        })
    }
}
