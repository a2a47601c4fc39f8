//! What signs a manifest: signatures are attached to one digest (never to a
//! tag), by a cosign companion tag (`sha256-<hex>.sig`) or by an OCI
//! referrer whose artifact type is a signature format.
//!
//! Verifiers (cosign verify, Notation, Kyverno, sigstore policy-controller)
//! check the digest a tag resolves to, so moving a tag from a signed index
//! to an unsigned image breaks verification by tag: the planner's
//! signature gate keeps such a tag where it is.

use std::fmt;

use serde::Serialize;

use crate::oci::digest::Digest;
use crate::oci::media_type as mt;
use crate::oci::names::ImageTag;

crate::vocabulary::vocabulary! {
    /// A signature format the service recognises.
    pub enum SignatureKind {
        /// cosign's legacy companion tag `sha256-<hex>.sig`.
        CosignTag = "cosign_tag",
        /// A Notation (Notary Project) signature referrer; AWS Signer and ECR
        /// managed signing write these.
        Notation = "notation",
        /// A Sigstore bundle referrer (cosign with the new bundle format).
        SigstoreBundle = "sigstore_bundle",
        /// A cosign signature stored as an OCI 1.1 referrer.
        CosignReferrer = "cosign_referrer",
    }
}

impl SignatureKind {
    /// The signature format of a referrer with `artifact_type`, if it is one.
    pub fn of_artifact_type(artifact_type: &str) -> Option<SignatureKind> {
        Some(match mt::SignatureMedia::of(artifact_type)? {
            mt::SignatureMedia::Notation => SignatureKind::Notation,
            mt::SignatureMedia::Cosign => SignatureKind::CosignReferrer,
            mt::SignatureMedia::SigstoreBundle => SignatureKind::SigstoreBundle,
        })
    }
}

/// One signature of a manifest and where it is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Signature {
    /// Its format.
    pub kind: SignatureKind,
    /// The companion tag, or the referrer's digest.
    pub at: String,
}

impl Signature {
    /// A cosign companion signature tag.
    pub fn tag(tag: &ImageTag) -> Self {
        Signature {
            kind: SignatureKind::CosignTag,
            at: tag.to_string(),
        }
    }

    /// A signature referrer.
    pub fn referrer(kind: SignatureKind, digest: &Digest) -> Self {
        Signature {
            kind,
            at: digest.to_string(),
        }
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.at)
    }
}

/// For a promotion: what signs the pushed index and what signs the image
/// its tag moves to, as the audit record states them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Signing {
    /// Signatures of the pushed index.
    pub index: Vec<Signature>,
    /// Signatures of the image the tag moves to (none for the new index a
    /// strip writes).
    pub image: Vec<Signature>,
}

/// A referrer of a manifest as the registry lists it: its digest and, when
/// the registry reports one, what kind of signature it is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Referrer {
    /// The referrer's digest.
    pub digest: Digest,
    /// Its signature format, when its artifact type is one.
    pub signature: Option<SignatureKind>,
}

impl Referrer {
    /// A referrer from what the registry listed.
    pub fn new(digest: Digest, artifact_type: Option<&str>) -> Self {
        Referrer {
            digest,
            signature: artifact_type.and_then(SignatureKind::of_artifact_type),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_formats_are_recognised_by_artifact_type_alone() {
        assert_eq!(
            SignatureKind::of_artifact_type("application/vnd.cncf.notary.signature"),
            Some(SignatureKind::Notation)
        );
        assert_eq!(
            SignatureKind::of_artifact_type("application/vnd.dev.sigstore.bundle.v0.3+json"),
            Some(SignatureKind::SigstoreBundle)
        );
        assert_eq!(
            SignatureKind::of_artifact_type("application/vnd.dev.sigstore.bundle+json;version=0.3"),
            Some(SignatureKind::SigstoreBundle)
        );
        assert_eq!(
            SignatureKind::of_artifact_type("application/vnd.dev.cosign.artifact.sig.v1+json"),
            Some(SignatureKind::CosignReferrer)
        );
        // SBOMs, provenance and in-toto attestations are not signatures.
        for other in [
            "application/spdx+json",
            "application/vnd.in-toto+json",
            "application/vnd.dev.cosign.artifact.sbom.v1+json",
            "application/vnd.oci.image.config.v1+json",
            "",
        ] {
            assert_eq!(SignatureKind::of_artifact_type(other), None, "{other}");
        }
    }
}
