//! The manifest model: descriptors, platforms, and a manifest sum type parsed
//! from the exact bytes a registry served.
//!
//! [`RawManifest`] keeps those bytes untouched next to the parsed view: every
//! later write of a manifest (a retag with `PutImage`) sends the same bytes,
//! because the digest is over bytes, not over JSON meaning.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::oci::digest::Digest;
use crate::oci::media_type::ManifestMediaType;

/// ECR's limit on a manifest's size: 4 MiB.
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

/// The most entries an index may have before it is refused as absurd.
///
/// A 20-platform build with one attestation per platform has 40 entries;
/// Docker Hub's busiest official images have under 30.
pub const MAX_INDEX_ENTRIES: usize = 1024;

/// Why bytes are not a manifest this product can handle.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Larger than [`MAX_MANIFEST_BYTES`].
    #[error("manifest is {0} bytes, over ECR's 4 MiB limit")]
    TooLarge(usize),
    /// Not JSON, or JSON of the wrong shape.
    #[error("manifest is not a valid JSON manifest document")]
    Json(#[source] serde_json::Error),
    /// `schemaVersion` missing or other than 2.
    #[error("manifest schemaVersion is {0}, only 2 is supported")]
    SchemaVersion(String),
    /// A media type that is not one of the four manifest types.
    #[error("unsupported manifest media type {0:?}")]
    UnknownMediaType(String),
    /// The document's `mediaType` differs from the one the registry reported.
    #[error("manifest declares mediaType {declared:?} but the registry reported {reported:?}")]
    MediaTypeMismatch {
        /// From the document.
        declared: String,
        /// From the registry (or the caller).
        reported: String,
    },
    /// Neither the document nor the caller says what it is, and its shape is ambiguous.
    #[error("cannot tell the manifest's media type: no mediaType field and {0}")]
    UndeterminedMediaType(&'static str),
    /// Fields that contradict the media type (an index without `manifests`, …).
    #[error("manifest of type {media_type} is malformed: {problem}")]
    Structure {
        /// The resolved media type.
        media_type: ManifestMediaType,
        /// What is wrong.
        problem: &'static str,
    },
    /// More than [`MAX_INDEX_ENTRIES`] entries.
    #[error("index has {0} entries, more than the {MAX_INDEX_ENTRIES} this tool accepts")]
    TooManyEntries(usize),
}

/// A target platform, as written in an index entry or an image config.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Platform {
    /// `os`, e.g. `linux`.
    pub os: String,
    /// `architecture`, e.g. `arm64`.
    pub architecture: String,
    /// `variant`, e.g. `v8`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// `os.version` (Windows images).
    #[serde(rename = "os.version", default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    /// `os.features`.
    #[serde(rename = "os.features", default, skip_serializing_if = "Vec::is_empty")]
    pub os_features: Vec<String>,
}

impl Platform {
    /// A platform from its parts.
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Self {
        Platform {
            os: os.to_owned(),
            architecture: architecture.to_owned(),
            variant: variant.map(str::to_owned),
            os_version: None,
            os_features: Vec::new(),
        }
    }

    /// True for BuildKit's `unknown/unknown` (or any platform naming `unknown`).
    pub fn is_unknown(&self) -> bool {
        self.os.is_empty() || self.architecture.is_empty() || self.os == "unknown" || self.architecture == "unknown"
    }
}

impl fmt::Display for Platform {
    /// `os/architecture[/variant]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// A content descriptor: what an index entry, a config or a layer points at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the referenced content.
    pub media_type: String,
    /// Digest of the referenced content.
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
    /// Platform (index entries only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Artifact type (OCI 1.1 index entries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Where else the content may be fetched from (foreign layers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
}

impl Descriptor {
    /// The annotation `key`, if set.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.get(key).map(String::as_str)
    }
}

/// An image index or Docker manifest list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageIndex {
    /// The entries, in document order.
    pub manifests: Vec<Descriptor>,
    /// `artifactType`, if any.
    pub artifact_type: Option<String>,
    /// `subject`, if any.
    pub subject: Option<Descriptor>,
    /// Index annotations.
    pub annotations: BTreeMap<String, String>,
}

/// A single image manifest (OCI or Docker v2 schema 2), possibly an artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageManifest {
    /// The config descriptor.
    pub config: Descriptor,
    /// The layers.
    pub layers: Vec<Descriptor>,
    /// `artifactType`, if any.
    pub artifact_type: Option<String>,
    /// `subject`, if any.
    pub subject: Option<Descriptor>,
    /// Manifest annotations.
    pub annotations: BTreeMap<String, String>,
}

/// A parsed manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Manifest {
    /// An OCI index or Docker manifest list.
    Index(Box<ImageIndex>),
    /// An image manifest.
    Image(Box<ImageManifest>),
}

/// A manifest together with the exact bytes it was parsed from and their digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawManifest {
    bytes: Vec<u8>,
    digest: Digest,
    media_type: ManifestMediaType,
    manifest: Manifest,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    schema_version: Option<i64>,
    media_type: Option<String>,
    manifests: Option<Vec<Descriptor>>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    artifact_type: Option<String>,
    subject: Option<Descriptor>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

impl RawManifest {
    /// Parses `bytes`, given the media type the registry reported (ECR's
    /// `imageManifestMediaType`), if known.
    ///
    /// The media type is the document's `mediaType` when present (it must then
    /// agree with `reported`), else `reported`, else inferred from the shape
    /// (`manifests` → OCI index, `config` → OCI manifest).
    pub fn parse(bytes: Vec<u8>, reported: Option<&str>) -> Result<Self, ManifestError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge(bytes.len()));
        }
        let doc: Document = serde_json::from_slice(&bytes).map_err(ManifestError::Json)?;
        match doc.schema_version {
            Some(2) => {}
            Some(v) => return Err(ManifestError::SchemaVersion(v.to_string())),
            None => return Err(ManifestError::SchemaVersion("missing".to_owned())),
        }
        let known = |s: &str| ManifestMediaType::parse(s).ok_or_else(|| ManifestError::UnknownMediaType(s.to_owned()));
        let media_type = match (doc.media_type.as_deref(), reported) {
            (Some(declared), Some(reported)) => {
                let d = known(declared)?;
                let r = known(reported)?;
                if d != r {
                    return Err(ManifestError::MediaTypeMismatch {
                        declared: declared.to_owned(),
                        reported: reported.to_owned(),
                    });
                }
                d
            }
            (Some(declared), None) => known(declared)?,
            (None, Some(reported)) => known(reported)?,
            (None, None) => match (doc.manifests.is_some(), doc.config.is_some()) {
                (true, false) => ManifestMediaType::OciIndex,
                (false, true) => ManifestMediaType::OciManifest,
                (true, true) => {
                    return Err(ManifestError::UndeterminedMediaType("it has both manifests and config"));
                }
                (false, false) => {
                    return Err(ManifestError::UndeterminedMediaType(
                        "it has neither manifests nor config",
                    ));
                }
            },
        };
        let structure = |problem| ManifestError::Structure { media_type, problem };
        let manifest = if media_type.is_index() {
            if doc.config.is_some() || doc.layers.is_some() {
                return Err(structure("an index must not have config or layers"));
            }
            let manifests = doc
                .manifests
                .ok_or_else(|| structure("an index needs a manifests array"))?;
            if manifests.len() > MAX_INDEX_ENTRIES {
                return Err(ManifestError::TooManyEntries(manifests.len()));
            }
            Manifest::Index(Box::new(ImageIndex {
                manifests,
                artifact_type: doc.artifact_type,
                subject: doc.subject,
                annotations: doc.annotations,
            }))
        } else {
            if doc.manifests.is_some() {
                return Err(structure("an image manifest must not have manifests"));
            }
            let config = doc
                .config
                .ok_or_else(|| structure("an image manifest needs a config descriptor"))?;
            let layers = doc
                .layers
                .ok_or_else(|| structure("an image manifest needs a layers array"))?;
            Manifest::Image(Box::new(ImageManifest {
                config,
                layers,
                artifact_type: doc.artifact_type,
                subject: doc.subject,
                annotations: doc.annotations,
            }))
        };
        let digest = Digest::sha256_of(&bytes);
        Ok(RawManifest {
            bytes,
            digest,
            media_type,
            manifest,
        })
    }

    /// The exact bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// SHA-256 of [`Self::bytes`].
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// The resolved media type.
    pub fn media_type(&self) -> ManifestMediaType {
        self.media_type
    }

    /// The parsed view.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The descriptor pointing at this manifest (media type, digest, size).
    pub fn descriptor(&self) -> Descriptor {
        Descriptor {
            media_type: self.media_type.as_str().to_owned(),
            digest: self.digest.clone(),
            size: self.bytes.len() as u64,
            platform: None,
            artifact_type: None,
            annotations: BTreeMap::new(),
            urls: Vec::new(),
        }
    }

    /// The OCI `subject` this manifest names (it is a referrer of it), if any.
    pub fn subject(&self) -> Option<&Descriptor> {
        match &self.manifest {
            Manifest::Index(i) => i.subject.as_ref(),
            Manifest::Image(i) => i.subject.as_ref(),
        }
    }

    /// The artifact type the referrers API reports for this manifest: its
    /// `artifactType`, else its config's media type (image manifests).
    pub fn artifact_type(&self) -> Option<&str> {
        match &self.manifest {
            Manifest::Index(i) => i.artifact_type.as_deref(),
            Manifest::Image(i) => i.artifact_type.as_deref().or(Some(i.config.media_type.as_str())),
        }
    }

    /// The index entries (empty for an image manifest).
    pub fn entries(&self) -> &[Descriptor] {
        match &self.manifest {
            Manifest::Index(i) => &i.manifests,
            Manifest::Image(_) => &[],
        }
    }

    /// A new index equal to this one without the entries at `positions`
    /// (0-based positions in `manifests`); every other field, entry and
    /// annotation is kept in order. The result is serialised compactly, so it
    /// is deterministic for given input bytes and positions.
    pub fn without_entries(&self, positions: &BTreeSet<usize>) -> Result<RawManifest, ManifestError> {
        let structure = |problem| ManifestError::Structure {
            media_type: self.media_type,
            problem,
        };
        if !self.media_type.is_index() {
            return Err(structure("only an index has entries to remove"));
        }
        let mut value: serde_json::Value = serde_json::from_slice(&self.bytes).map_err(ManifestError::Json)?;
        let manifests = value
            .get_mut("manifests")
            .and_then(serde_json::Value::as_array_mut)
            .ok_or_else(|| structure("an index needs a manifests array"))?;
        let kept: Vec<serde_json::Value> = std::mem::take(manifests)
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !positions.contains(i))
            .map(|(_, v)| v)
            .collect();
        *manifests = kept;
        let bytes = serde_json::to_vec(&value).map_err(ManifestError::Json)?;
        RawManifest::parse(bytes, Some(self.media_type.as_str()))
    }
}

#[cfg(test)]
mod tests;
