//! Signatures that arrived after a promotion, found from a sweep's one
//! listing of a repository (pure; no call per image).
//!
//! The common CI order is push, sign the pushed digest, deploy, within
//! seconds, while the service promotes in those same seconds: the signature
//! then lands on the index after the tag has moved to the image, and
//! verification by tag fails. The service does not move the tag back (that
//! would make the tag undeployable on Lambda again, the product's promise,
//! and move a tag backwards): it reports the gap and what to do.
//!
//! A promotion is recognised by the keep tag: `{tag}` on an image manifest
//! and the policy's keep tag for `{tag}` on an index. Without a keep tag the
//! index is untagged and the listing cannot tell which index an image came
//! from: such gaps are found only when a push of the signature is handled.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::engine::registry::ImageInfo;
use crate::oci::companion::Companion;
use crate::oci::digest::Digest;
use crate::oci::media_type::ManifestMediaType;
use crate::oci::names::{ImageTag, RepositoryName};
use crate::oci::signature::{Signature, SignatureKind};
use crate::policy::Policy;

/// A promoted tag whose index is signed and whose image is not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SignatureGap {
    /// The repository.
    pub repository: RepositoryName,
    /// The pushed tag, now on the image.
    pub tag: ImageTag,
    /// The index the tag was pushed with (under the keep tag).
    pub index: Digest,
    /// The image the tag points to.
    pub image: Digest,
    /// What signs the index.
    pub index_signatures: Vec<Signature>,
}

impl SignatureGap {
    /// What to do about it, for the operator.
    pub fn advice(&self) -> String {
        format!(
            "{tag} points to the unsigned image {image} while its index {index} is signed: verification of {tag} \
             fails; sign the image digest (cosign sign --recursive signs an index and its images), or verify the \
             index by digest",
            tag = self.tag,
            image = self.image,
            index = self.index
        )
    }
}

fn is_index(info: &ImageInfo) -> bool {
    info.media_type
        .as_deref()
        .and_then(ManifestMediaType::parse)
        .is_some_and(ManifestMediaType::is_index)
}

/// A promoted tag found in a listing, with what the listing shows of the
/// signatures of its index and its image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promotion {
    /// The pushed tag, now on the image.
    pub tag: ImageTag,
    /// The index, under the keep tag.
    pub index: Digest,
    /// The image.
    pub image: Digest,
    /// What signs the index (cosign tags, referrers whose listed artifact
    /// media type is a signature format).
    pub index_signatures: Vec<Signature>,
    /// What signs the image, likewise.
    pub image_signatures: Vec<Signature>,
    /// Referrers of the index whose kind the listing does not tell (ECR
    /// may report an artifact's config media type): `ListImageReferrers`
    /// says.
    pub index_referrers_unread: bool,
    /// Likewise for the image.
    pub image_referrers_unread: bool,
}

impl Promotion {
    /// The gap in `repository`, once the signatures are known: the index
    /// signed, the image not.
    pub fn gap(self, repository: &RepositoryName) -> Option<SignatureGap> {
        (!self.index_signatures.is_empty() && self.image_signatures.is_empty()).then(|| SignatureGap {
            repository: repository.clone(),
            tag: self.tag,
            index: self.index,
            image: self.image,
            index_signatures: self.index_signatures,
        })
    }
}

/// Every promoted tag of the listing (`{tag}` on an image, the keep tag of
/// `{tag}` on an index). Linear in the listing: one pass to index tags and
/// referrers.
pub fn promotions(listing: &[(Digest, ImageInfo)], policy: &Policy) -> Vec<Promotion> {
    let Some(keep) = &policy.keep_tag else {
        return Vec::new();
    };
    // Tag → (holder, whether it is an index); subject → its referrers, as
    // signatures when the listing tells.
    let mut holders: BTreeMap<&str, (&Digest, bool)> = BTreeMap::new();
    let mut referrers: BTreeMap<&Digest, Vec<Option<Signature>>> = BTreeMap::new();
    for (d, info) in listing {
        let index = is_index(info);
        for t in &info.tags {
            holders.insert(t.as_str(), (d, index));
        }
        if let Some(subject) = info.subject.as_ref() {
            let kind = info
                .artifact_media_type
                .as_deref()
                .and_then(SignatureKind::of_artifact_type);
            referrers
                .entry(subject)
                .or_default()
                .push(kind.map(|k| Signature::referrer(k, d)));
        }
    }
    let signatures = |digest: &Digest| {
        let mut out: Vec<Signature> = Companion::Signature
            .tag_for(digest)
            .filter(|t| holders.contains_key(t.as_str()))
            .map(|t| Signature::tag(&t))
            .into_iter()
            .collect();
        let listed = referrers.get(digest).map_or(&[][..], Vec::as_slice);
        out.extend(listed.iter().flatten().cloned());
        (out, listed.iter().any(Option::is_none))
    };
    let mut found = Vec::new();
    for (image, info) in listing.iter().filter(|(_, info)| !is_index(info)) {
        for tag in info.tags.iter().filter_map(|t| ImageTag::parse(t).ok()) {
            let Ok(keep_tag) = keep.render(&tag, None) else {
                continue;
            };
            let Some((index, true)) = holders.get(keep_tag.as_str()).copied() else {
                continue;
            };
            let (index_signatures, index_referrers_unread) = signatures(index);
            let (image_signatures, image_referrers_unread) = signatures(image);
            found.push(Promotion {
                tag,
                index: index.clone(),
                image: image.clone(),
                index_signatures,
                image_signatures,
                index_referrers_unread,
                image_referrers_unread,
            });
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> Digest {
        Digest::parse(&format!("sha256:{}", c.to_string().repeat(64))).unwrap()
    }

    fn info(tags: &[&str], index: bool, subject: Option<Digest>, artifact: Option<&str>) -> ImageInfo {
        ImageInfo {
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            pushed_at_ms: Some(0),
            media_type: Some(
                if index {
                    "application/vnd.oci.image.index.v1+json"
                } else {
                    "application/vnd.oci.image.manifest.v1+json"
                }
                .to_owned(),
            ),
            artifact_media_type: artifact.map(str::to_owned),
            size_bytes: None,
            subject,
            last_pulled_ms: None,
        }
    }

    #[test]
    fn a_signed_index_with_an_unsigned_promoted_image_is_a_gap_until_the_image_is_signed() {
        let policy = Policy::default();
        let sig_tag = format!("sha256-{}.sig", "a".repeat(64));
        let mut listing = vec![
            (d('a'), info(&["v1-index"], true, None, None)),
            (d('b'), info(&["v1"], false, None, None)),
            (d('c'), info(&[&sig_tag], false, None, None)),
            // An SBOM of the image is not a signature; its kind is known.
            (d('e'), info(&[], false, Some(d('b')), Some("application/spdx+json"))),
        ];
        let found = promotions(&listing, &policy);
        assert_eq!(found.len(), 1);
        assert!(found[0].image_referrers_unread, "an SBOM's type may hide a signature's");
        let repo = RepositoryName::parse("team/app").unwrap();
        let gap = found[0].clone().gap(&repo).unwrap();
        assert_eq!((gap.tag.as_str(), &gap.index, &gap.image), ("v1", &d('a'), &d('b')));
        assert_eq!(
            gap.index_signatures,
            vec![Signature::tag(&ImageTag::parse(&sig_tag).unwrap())]
        );

        listing.push((
            d('f'),
            info(
                &[],
                false,
                Some(d('b')),
                Some(crate::oci::media_type::NOTATION_SIGNATURE),
            ),
        ));
        assert_eq!(
            promotions(&listing, &policy)[0].clone().gap(&repo),
            None,
            "the image is signed too"
        );

        // No keep tag: the listing cannot pair an image with its index.
        let no_keep = Policy {
            keep_tag: None,
            ..Policy::default()
        };
        assert!(promotions(&listing, &no_keep).is_empty());
    }
}
