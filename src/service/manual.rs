//! The image an operator names on the command line (`remediate`): a tag, a
//! digest or both, resolved once against the registry into the jobs to run,
//! or one clear reason there is nothing to run.

use crate::engine::registry::{FetchFailure, ImageRef, Registry, RegistryError};
use crate::engine::retry::{RetryPolicy, retrying};
use crate::oci::digest::Digest;
use crate::oci::names::{ImageTag, RepositoryName};

/// What the operator named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Named {
    /// A tag: its index is looked up.
    Tag(ImageTag),
    /// A digest: its tags are looked up.
    Digest(Digest),
    /// Both: the index, as pushed with this tag.
    Both(Digest, ImageTag),
}

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// One handling per (index, tag).
    Images(Vec<(Digest, Option<ImageTag>)>),
    /// The tag already points at a single image manifest: deployable as it
    /// is, nothing to remediate.
    AlreadyAnImage {
        /// The tag.
        tag: ImageTag,
        /// The image manifest it points at.
        digest: Digest,
    },
}

/// Why there is nothing to run.
#[derive(Debug, thiserror::Error)]
pub enum ManualError {
    /// No such tag.
    #[error("{repository}:{tag} does not exist")]
    NoSuchTag {
        /// Repository.
        repository: RepositoryName,
        /// Tag.
        tag: ImageTag,
    },
    /// No such image.
    #[error("{repository}@{digest} does not exist")]
    NoSuchImage {
        /// Repository.
        repository: RepositoryName,
        /// Digest.
        digest: Digest,
    },
    /// The image has no tag to remediate.
    #[error("{repository}@{digest} has no tag: nothing to remediate (give the tag it was pushed with, --image-tag)")]
    Untagged {
        /// Repository.
        repository: RepositoryName,
        /// Digest.
        digest: Digest,
    },
    /// The registry could not answer.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// Resolves what the operator named in `repository`: a tag to its index, a
/// digest to its tags (each handled), both checked to exist.
pub async fn resolve<R: Registry>(
    registry: &R,
    retry: &RetryPolicy,
    repository: &RepositoryName,
    named: Named,
) -> Result<Resolved, ManualError> {
    let no_tag = |tag: &ImageTag| ManualError::NoSuchTag {
        repository: repository.clone(),
        tag: tag.clone(),
    };
    let no_image = |digest: &Digest| ManualError::NoSuchImage {
        repository: repository.clone(),
        digest: digest.clone(),
    };
    match named {
        Named::Tag(tag) => {
            let ids = [ImageRef::Tag(tag.clone())];
            let got = retrying(retry, None, || registry.get_images(repository, &ids)).await?;
            match got.into_iter().next().map(|(_, r)| r) {
                Some(Ok(m)) if m.media_type().is_index() => Ok(Resolved::Images(vec![(m.digest().clone(), Some(tag))])),
                Some(Ok(m)) => Ok(Resolved::AlreadyAnImage {
                    tag,
                    digest: m.digest().clone(),
                }),
                // A manifest the registry serves but this tool cannot read:
                // the engine says why, with the digest.
                Some(Err(FetchFailure::Invalid { digest: Some(d), .. })) => Ok(Resolved::Images(vec![(d, Some(tag))])),
                Some(Err(FetchFailure::NotFound)) | None => Err(no_tag(&tag)),
                Some(Err(e)) => Err(RegistryError::InvalidResponse {
                    operation: "BatchGetImage",
                    problem: format!("{repository}:{tag}: {e}"),
                }
                .into()),
            }
        }
        Named::Digest(digest) => {
            let info = retrying(retry, None, || {
                registry.describe_images(repository, std::slice::from_ref(&digest))
            })
            .await?;
            let Some(Some(image)) = info.get(&digest) else {
                return Err(no_image(&digest));
            };
            let tags: Vec<ImageTag> = image.tags.iter().filter_map(|t| ImageTag::parse(t).ok()).collect();
            if tags.is_empty() {
                return Err(ManualError::Untagged {
                    repository: repository.clone(),
                    digest,
                });
            }
            Ok(Resolved::Images(
                tags.into_iter().map(|t| (digest.clone(), Some(t))).collect(),
            ))
        }
        Named::Both(digest, tag) => {
            let ids = [ImageRef::Digest(digest.clone()), ImageRef::Tag(tag.clone())];
            let got = retrying(retry, None, || registry.get_images(repository, &ids)).await?;
            let mut found = got.into_iter().map(|(_, r)| r);
            if matches!(found.next(), Some(Err(FetchFailure::NotFound)) | None) {
                return Err(no_image(&digest));
            }
            if matches!(found.next(), Some(Err(FetchFailure::NotFound)) | None) {
                return Err(no_tag(&tag));
            }
            Ok(Resolved::Images(vec![(digest, Some(tag))]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::registry::memory::MemoryRegistry;
    use crate::oci::manifest::RawManifest;

    fn raw(v: &serde_json::Value) -> RawManifest {
        RawManifest::parse(serde_json::to_vec(v).unwrap(), None).unwrap()
    }

    fn setup() -> (MemoryRegistry, RepositoryName, RawManifest, RawManifest) {
        let reg = MemoryRegistry::new();
        let repo = RepositoryName::parse("team/app").unwrap();
        reg.create_repository(&repo, false);
        let image = raw(&serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": Digest::sha256_of(b"c").to_string(), "size": 1},
            "layers": []
        }));
        let index = raw(&serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": image.digest().to_string(),
                           "size": image.bytes().len(), "platform": {"os": "linux", "architecture": "arm64"}}]
        }));
        reg.push(&repo, &image, Some(&ImageTag::parse("img").unwrap())).unwrap();
        reg.push(&repo, &index, Some(&ImageTag::parse("v1").unwrap())).unwrap();
        (reg, repo, index, image)
    }

    fn t(s: &str) -> ImageTag {
        ImageTag::parse(s).unwrap()
    }

    #[tokio::test]
    async fn a_tag_alone_finds_its_index_and_a_digest_alone_its_tags() {
        let (reg, repo, index, image) = setup();
        let retry = RetryPolicy::default();
        let got = resolve(&reg, &retry, &repo, Named::Tag(t("v1"))).await.unwrap();
        assert_eq!(got, Resolved::Images(vec![(index.digest().clone(), Some(t("v1")))]));
        let got = resolve(&reg, &retry, &repo, Named::Digest(index.digest().clone()))
            .await
            .unwrap();
        assert_eq!(got, Resolved::Images(vec![(index.digest().clone(), Some(t("v1")))]));
        let got = resolve(&reg, &retry, &repo, Named::Tag(t("img"))).await.unwrap();
        assert_eq!(
            got,
            Resolved::AlreadyAnImage {
                tag: t("img"),
                digest: image.digest().clone()
            }
        );
    }

    #[tokio::test]
    async fn what_does_not_exist_is_named_in_one_line() {
        let (reg, repo, index, _) = setup();
        let retry = RetryPolicy::default();
        let e = resolve(&reg, &retry, &repo, Named::Tag(t("v9"))).await.unwrap_err();
        assert_eq!(e.to_string(), "team/app:v9 does not exist");
        let missing = Digest::sha256_of(b"nothing");
        let e = resolve(&reg, &retry, &repo, Named::Digest(missing.clone()))
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), format!("team/app@{missing} does not exist"));
        let e = resolve(&reg, &retry, &repo, Named::Both(missing.clone(), t("v1")))
            .await
            .unwrap_err();
        assert!(matches!(e, ManualError::NoSuchImage { .. }));
        let e = resolve(&reg, &retry, &repo, Named::Both(index.digest().clone(), t("v9")))
            .await
            .unwrap_err();
        assert!(matches!(e, ManualError::NoSuchTag { .. }));
    }
}
