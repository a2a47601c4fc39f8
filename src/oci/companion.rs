//! Tags other tools put next to a manifest to attach things to it, by name
//! rather than by the OCI `subject` field.
//!
//! - The OCI distribution spec's **referrers tag schema** (the fallback for
//!   registries without the referrers API): an index tagged `sha256-<hex>`
//!   lists the referrers of the manifest `sha256:<hex>`.
//! - **cosign's legacy companions**: `sha256-<hex>.sig` (signatures),
//!   `.att` (attestations), `.sbom` (SBOMs) of `sha256:<hex>`.
//!
//! A manifest with any of these tags has something attached to it: it is
//! never deleted. A manifest *holding* such a tag is that attachment: it is
//! never remediated (its tag is not a pushed image's tag).

use std::fmt;

use serde::Serialize;

use crate::oci::digest::Digest;
use crate::oci::names::ImageTag;

/// What a companion tag attaches to its subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Companion {
    /// `sha256-<hex>`: the referrers tag schema's index.
    ReferrersIndex,
    /// `sha256-<hex>.sig`: cosign signatures.
    Signature,
    /// `sha256-<hex>.att`: cosign attestations.
    Attestation,
    /// `sha256-<hex>.sbom`: cosign SBOMs.
    Sbom,
}

impl Companion {
    /// Every kind, in the order their tags are read.
    pub const ALL: [Companion; 4] = [
        Companion::ReferrersIndex,
        Companion::Signature,
        Companion::Attestation,
        Companion::Sbom,
    ];

    fn suffix(self) -> &'static str {
        match self {
            Companion::ReferrersIndex => "",
            Companion::Signature => ".sig",
            Companion::Attestation => ".att",
            Companion::Sbom => ".sbom",
        }
    }

    /// A short description, for records.
    pub fn describe(self) -> &'static str {
        match self {
            Companion::ReferrersIndex => "referrers index (OCI referrers tag schema)",
            Companion::Signature => "cosign signature",
            Companion::Attestation => "cosign attestation",
            Companion::Sbom => "cosign SBOM",
        }
    }

    /// The companion tag of this kind for `subject` (`None` for a digest
    /// algorithm the tag schema does not name, which never happens for sha256).
    pub fn tag_for(self, subject: &Digest) -> Option<ImageTag> {
        ImageTag::parse(&format!(
            "{}-{}{}",
            subject.algorithm().as_str(),
            subject.hex(),
            self.suffix()
        ))
        .ok()
    }
}

impl fmt::Display for Companion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// Every companion tag `subject` may have, in [`Companion::ALL`] order.
pub fn companion_tags(subject: &Digest) -> Vec<(Companion, ImageTag)> {
    Companion::ALL
        .iter()
        .filter_map(|c| c.tag_for(subject).map(|t| (*c, t)))
        .collect()
}

/// When `tag` is a companion tag: what it attaches, and to which manifest.
pub fn parse_companion(tag: &ImageTag) -> Option<(Companion, Digest)> {
    let (algorithm, rest) = tag.as_str().split_once('-')?;
    if !matches!(algorithm, "sha256" | "sha512") {
        return None;
    }
    let (hex, kind) = match rest.split_once('.') {
        None => (rest, Companion::ReferrersIndex),
        Some((hex, "sig")) => (hex, Companion::Signature),
        Some((hex, "att")) => (hex, Companion::Attestation),
        Some((hex, "sbom")) => (hex, Companion::Sbom),
        Some(_) => return None,
    };
    let digest = Digest::parse(&format!("{algorithm}:{hex}")).ok()?;
    Some((kind, digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn companion_tags_round_trip_and_nothing_else_is_one() {
        let d = Digest::sha256_of(b"index");
        let tags = companion_tags(&d);
        assert_eq!(tags.len(), 4);
        for (kind, tag) in &tags {
            assert_eq!(parse_companion(tag), Some((*kind, d.clone())), "{tag}");
        }
        assert_eq!(tags[0].1.as_str(), format!("sha256-{}", d.hex()));
        assert_eq!(tags[1].1.as_str(), format!("sha256-{}.sig", d.hex()));
        for other in [
            "v1",
            "sha256-abc",
            "sha256-abc.sig",
            &format!("sha256-{}.zip", d.hex()),
            &format!("sha256-{}x", d.hex()),
            &format!("sha256-{}", d.hex().to_uppercase()),
            &format!("sha512-{}", d.hex()),
        ] {
            assert_eq!(parse_companion(&ImageTag::parse(other).unwrap()), None, "{other}");
        }
    }
}
