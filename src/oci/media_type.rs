//! Media types met in Amazon ECR, as named constants.
//!
//! The four *manifest* media types are modelled as an enum
//! ([`ManifestMediaType`]), and how a layer is stored as another
//! ([`LayerFormat`]); every other media type (configs, artifact types) is an
//! open set and stays a string compared against these constants.

use std::fmt;

use serde::{Serialize, Serializer};

/// OCI image index (`application/vnd.oci.image.index.v1+json`).
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker manifest list v2 (`application/vnd.docker.distribution.manifest.list.v2+json`).
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// OCI image manifest (`application/vnd.oci.image.manifest.v1+json`).
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Docker image manifest v2 schema 2 (`application/vnd.docker.distribution.manifest.v2+json`).
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// OCI image configuration.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker image configuration.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// The OCI empty descriptor (`{}`), used as config by artifacts.
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";

/// An in-toto statement layer (BuildKit attestations, cosign attestations).
pub const IN_TOTO: &str = "application/vnd.in-toto+json";
/// The `artifactType` of attestation manifests written by newer BuildKit.
pub const DOCKER_ATTESTATION_MANIFEST: &str = "application/vnd.docker.attestation.manifest.v1+json";
/// The config media type BuildKit documents for attestation manifests.
pub const DOCKER_ATTESTATION_CONFIG: &str = "application/vnd.docker.attestation.config.v1+json";

/// Layer of a legacy cosign signature (`sha256-<hex>.sig` tag).
pub const COSIGN_SIMPLESIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// Layer of a cosign attestation (`sha256-<hex>.att` tag): a DSSE envelope.
pub const DSSE_ENVELOPE: &str = "application/vnd.dsse.envelope.v1+json";
/// Layer annotation holding a cosign signature.
pub const COSIGN_SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// Artifact type of cosign signatures stored as OCI 1.1 referrers.
pub const COSIGN_ARTIFACT_SIG: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
/// Prefix of Sigstore bundle artifact types (`…bundle.v0.3+json` and later).
pub const SIGSTORE_BUNDLE_PREFIX: &str = "application/vnd.dev.sigstore.bundle";
/// Sigstore bundle v0.3 artifact type, as written by cosign.
pub const SIGSTORE_BUNDLE_V03: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// Notation (Notary Project) signature artifact type.
pub const NOTATION_SIGNATURE: &str = "application/vnd.cncf.notary.signature";

/// Helm chart config.
pub const HELM_CONFIG: &str = "application/vnd.cncf.helm.config.v1+json";
/// Prefix of SOCI index artifact types (`…soci.index.v1+json`, `…v2+json`).
pub const SOCI_INDEX_PREFIX: &str = "application/vnd.amazon.soci.index.";

/// The four manifest media types ECR stores and this product understands.
///
/// Anything else (schema 1 manifests, ORAS artifact manifests, …) is refused
/// when parsing, with [`crate::oci::manifest::ManifestError::UnknownMediaType`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ManifestMediaType {
    /// [`OCI_INDEX`]
    OciIndex,
    /// [`DOCKER_MANIFEST_LIST`]
    DockerManifestList,
    /// [`OCI_MANIFEST`]
    OciManifest,
    /// [`DOCKER_MANIFEST`]
    DockerManifest,
}

impl ManifestMediaType {
    /// Every manifest media type, in the order `BatchGetImage` should accept them.
    pub const ALL: [ManifestMediaType; 4] = [
        ManifestMediaType::OciIndex,
        ManifestMediaType::DockerManifestList,
        ManifestMediaType::OciManifest,
        ManifestMediaType::DockerManifest,
    ];

    /// Parses one of the four manifest media type strings (exact match).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            OCI_INDEX => Some(Self::OciIndex),
            DOCKER_MANIFEST_LIST => Some(Self::DockerManifestList),
            OCI_MANIFEST => Some(Self::OciManifest),
            DOCKER_MANIFEST => Some(Self::DockerManifest),
            _ => None,
        }
    }

    /// The media type string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OciIndex => OCI_INDEX,
            Self::DockerManifestList => DOCKER_MANIFEST_LIST,
            Self::OciManifest => OCI_MANIFEST,
            Self::DockerManifest => DOCKER_MANIFEST,
        }
    }

    /// True for the two index types (OCI index, Docker manifest list).
    pub fn is_index(self) -> bool {
        matches!(self, Self::OciIndex | Self::DockerManifestList)
    }
}

impl fmt::Display for ManifestMediaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ManifestMediaType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// A signature format, as its artifact type (or config or layer media type) names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureMedia {
    /// A Notation (Notary Project) signature.
    Notation,
    /// A cosign signature stored as an OCI 1.1 referrer.
    Cosign,
    /// A Sigstore bundle (any version).
    SigstoreBundle,
}

impl SignatureMedia {
    /// The signature format `media_type` names, if it names one: the one
    /// definition of "is this a signature's type".
    pub fn of(media_type: &str) -> Option<Self> {
        let t = media_type.trim();
        if t == NOTATION_SIGNATURE {
            Some(Self::Notation)
        } else if t == COSIGN_ARTIFACT_SIG {
            Some(Self::Cosign)
        } else if t.starts_with(SIGSTORE_BUNDLE_PREFIX) {
            Some(Self::SigstoreBundle)
        } else {
            None
        }
    }
}

/// True when `artifact_type` (or a config or layer media type) marks a signature.
pub fn is_signature_type(artifact_type: &str) -> bool {
    SignatureMedia::of(artifact_type).is_some()
}

/// What a manifest's artifact type (or, without one, its config media
/// type) says it is: the one place a listing's `artifactMediaType` is told
/// apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtifactFamily {
    /// A container image (no artifact type, or an image config).
    Image,
    /// A signature (Notation, cosign, Sigstore bundle).
    Signature,
    /// A Helm chart.
    HelmChart,
    /// A SOCI index.
    SociIndex,
    /// Any other artifact.
    Other,
}

impl ArtifactFamily {
    /// The family of `media_type` (empty: an image).
    pub fn of(media_type: &str) -> Self {
        let t = media_type.trim();
        if t.is_empty() || t == OCI_CONFIG || t == DOCKER_CONFIG {
            Self::Image
        } else if is_signature_type(t) || t == COSIGN_SIMPLESIGNING {
            Self::Signature
        } else if t == HELM_CONFIG {
            Self::HelmChart
        } else if t.starts_with(SOCI_INDEX_PREFIX) {
            Self::SociIndex
        } else {
            Self::Other
        }
    }
}

/// OCI tar layer, uncompressed.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI tar layer, gzip-compressed.
pub const OCI_LAYER_TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI tar layer, zstd-compressed.
pub const OCI_LAYER_TAR_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// Docker tar layer, uncompressed.
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// Docker tar layer, gzip-compressed.
pub const DOCKER_LAYER_TAR_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// How a filesystem layer is stored, parsed from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerFormat {
    /// An uncompressed tar (OCI or Docker).
    Tar,
    /// A gzip-compressed tar (OCI or Docker).
    TarGzip,
    /// A zstd-compressed tar (OCI).
    TarZstd,
    /// Anything else: Docker foreign layers, non-distributable layers, other
    /// compressions, non-layer content.
    Other,
}

impl LayerFormat {
    /// The format of a layer with this media type (exact match).
    pub fn of(media_type: &str) -> Self {
        match media_type {
            OCI_LAYER_TAR | DOCKER_LAYER_TAR => Self::Tar,
            OCI_LAYER_TAR_GZIP | DOCKER_LAYER_TAR_GZIP => Self::TarGzip,
            OCI_LAYER_TAR_ZSTD => Self::TarZstd,
            _ => Self::Other,
        }
    }
}

/// True for filesystem layer media types of runnable images (OCI and Docker,
/// compressed or not, including Windows foreign layers).
pub fn is_image_layer(media_type: &str) -> bool {
    media_type.starts_with("application/vnd.oci.image.layer.")
        || media_type.starts_with("application/vnd.docker.image.rootfs.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_media_types_round_trip() {
        for mt in ManifestMediaType::ALL {
            assert_eq!(ManifestMediaType::parse(mt.as_str()), Some(mt));
        }
        assert_eq!(ManifestMediaType::parse("application/json"), None);
        assert_eq!(
            ManifestMediaType::parse("application/vnd.docker.distribution.manifest.v1+prettyjws"),
            None
        );
    }

    #[test]
    fn signature_types() {
        assert!(is_signature_type(NOTATION_SIGNATURE));
        assert!(is_signature_type(SIGSTORE_BUNDLE_V03));
        assert!(is_signature_type(
            "application/vnd.dev.sigstore.bundle+json;version=0.3"
        ));
        assert!(is_signature_type(COSIGN_ARTIFACT_SIG));
        assert!(!is_signature_type(DOCKER_ATTESTATION_MANIFEST));
        assert!(!is_signature_type(HELM_CONFIG));
    }

    #[test]
    fn layer_formats() {
        assert_eq!(LayerFormat::of(OCI_LAYER_TAR), LayerFormat::Tar);
        assert_eq!(LayerFormat::of(DOCKER_LAYER_TAR), LayerFormat::Tar);
        assert_eq!(LayerFormat::of(OCI_LAYER_TAR_GZIP), LayerFormat::TarGzip);
        assert_eq!(LayerFormat::of(DOCKER_LAYER_TAR_GZIP), LayerFormat::TarGzip);
        assert_eq!(LayerFormat::of(OCI_LAYER_TAR_ZSTD), LayerFormat::TarZstd);
        for other in [
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
            "application/vnd.oci.image.layer.v1.tar+gzip ",
            IN_TOTO,
        ] {
            assert_eq!(LayerFormat::of(other), LayerFormat::Other, "{other}");
        }
    }

    #[test]
    fn image_layers() {
        assert!(is_image_layer("application/vnd.oci.image.layer.v1.tar+gzip"));
        assert!(is_image_layer("application/vnd.oci.image.layer.v1.tar+zstd"));
        assert!(is_image_layer("application/vnd.docker.image.rootfs.diff.tar.gzip"));
        assert!(is_image_layer(
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
        ));
        assert!(!is_image_layer(IN_TOTO));
        assert!(!is_image_layer("application/vnd.cncf.helm.chart.content.v1.tar+gzip"));
    }
}
