//! Classification of index entries and standalone manifests.
//!
//! The rule everywhere: a class is given only on positive evidence. Anything
//! not recognised is [`EntryClass::Other`], and `Other` entries are never
//! touched by a plan.

use serde::Serialize;

use crate::oci::digest::Digest;
use crate::oci::manifest::{Descriptor, ImageManifest, Manifest, Platform, RawManifest};
use crate::oci::media_type::{self as mt, ManifestMediaType};

/// Index annotation naming the kind of reference an entry is.
pub const REFERENCE_TYPE: &str = "vnd.docker.reference.type";
/// Index annotation naming the manifest an attestation describes.
pub const REFERENCE_DIGEST: &str = "vnd.docker.reference.digest";
/// The [`REFERENCE_TYPE`] value of BuildKit attestation manifests.
pub const ATTESTATION_MANIFEST: &str = "attestation-manifest";
/// Layer annotation carrying an in-toto predicate type.
pub const PREDICATE_TYPE: &str = "in-toto.io/predicate-type";

/// Why an entry was classified [`EntryClass::Other`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum OtherReason {
    /// Platform `unknown/unknown` without any attestation marker.
    UnknownPlatformWithoutMarker,
    /// `vnd.docker.reference.type` other than `attestation-manifest`.
    ForeignReferenceType {
        /// The annotation's value.
        reference_type: String,
    },
    /// Marked as an attestation but without a valid subject digest.
    AttestationWithoutSubject,
    /// An artifact type this product does not act on (Helm, SOCI, SBOM referrers, …).
    Artifact {
        /// The artifact (or config) type.
        artifact_type: String,
    },
    /// A media type that is neither an image manifest nor an index.
    UnsupportedMediaType {
        /// The entry's media type.
        media_type: String,
    },
    /// The entry looked runnable or like an attestation but the fetched child
    /// manifest contradicts it.
    ContradictedByManifest,
}

/// The class of one index entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryClass {
    /// An image manifest for a real platform.
    Runnable {
        /// Its platform; `None` when the entry carries none and the child's
        /// config has not been read. A tag is never derived from an unknown platform.
        platform: Option<Platform>,
    },
    /// A provenance/SBOM attestation manifest.
    Attestation {
        /// The manifest it describes, when known.
        subject: Option<Digest>,
    },
    /// A cosign, notation or Sigstore-bundle signature.
    Signature,
    /// A nested index.
    Index,
    /// Anything not positively recognised.
    Other(OtherReason),
}

impl EntryClass {
    /// `runnable`, `attestation`, `signature`, `index` or `other`.
    pub fn name(&self) -> &'static str {
        match self {
            EntryClass::Runnable { .. } => "runnable",
            EntryClass::Attestation { .. } => "attestation",
            EntryClass::Signature => "signature",
            EntryClass::Index => "index",
            EntryClass::Other(_) => "other",
        }
    }

    /// True for classes a plan must never write to or delete.
    pub fn is_protected(&self) -> bool {
        matches!(self, EntryClass::Signature | EntryClass::Index | EntryClass::Other(_))
    }
}

/// One index entry with its position and class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassifiedEntry {
    /// 0-based position in the index's `manifests`.
    pub position: usize,
    /// The entry's descriptor.
    pub descriptor: Descriptor,
    /// Its class.
    pub class: EntryClass,
}

impl ClassifiedEntry {
    /// The entry's digest.
    pub fn digest(&self) -> &Digest {
        &self.descriptor.digest
    }

    /// Refines the class with the child manifest's content, once fetched.
    ///
    /// Only ever moves an entry to a *safer* class: a runnable whose manifest
    /// turns out to be an attestation, signature or artifact becomes that; an
    /// attestation whose manifest is a plain image becomes `other` (so it is
    /// never deleted). A runnable without platform takes `config_platform`
    /// (read from the child's image config) when given and real.
    pub fn refine_with_child(&mut self, child: &RawManifest, config_platform: Option<Platform>) {
        if child.digest() != self.digest() {
            return;
        }
        let kind = classify_manifest(child.manifest());
        match (&self.class, kind) {
            (EntryClass::Runnable { .. }, ManifestKind::Attestation { subject, .. }) => {
                self.class = EntryClass::Attestation { subject };
            }
            (EntryClass::Runnable { .. }, ManifestKind::Signature) => {
                self.class = EntryClass::Signature;
            }
            (EntryClass::Runnable { .. }, ManifestKind::Index) => self.class = EntryClass::Index,
            (EntryClass::Runnable { .. }, ManifestKind::Artifact { .. })
            | (EntryClass::Attestation { .. }, ManifestKind::Image)
            | (EntryClass::Attestation { .. }, ManifestKind::Signature)
            | (EntryClass::Attestation { .. }, ManifestKind::Index)
            | (EntryClass::Attestation { .. }, ManifestKind::Artifact { .. }) => {
                self.class = EntryClass::Other(OtherReason::ContradictedByManifest);
            }
            (EntryClass::Runnable { platform: None }, ManifestKind::Image) => {
                if let Some(p) = config_platform.filter(|p| !p.is_unknown()) {
                    self.class = EntryClass::Runnable { platform: Some(p) };
                }
            }
            (EntryClass::Attestation { subject: None }, ManifestKind::Attestation { subject, .. }) => {
                self.class = EntryClass::Attestation { subject };
            }
            _ => {}
        }
    }
}

/// Classifies one index entry from its descriptor alone.
pub fn classify_entry(d: &Descriptor) -> EntryClass {
    let media = ManifestMediaType::parse(&d.media_type);
    match media {
        Some(m) if m.is_index() => return EntryClass::Index,
        Some(_) => {}
        None => {
            return EntryClass::Other(OtherReason::UnsupportedMediaType {
                media_type: d.media_type.clone(),
            });
        }
    }
    let subject_annotation = d.annotation(REFERENCE_DIGEST).and_then(|s| Digest::parse(s).ok());
    if let Some(rt) = d.annotation(REFERENCE_TYPE) {
        if rt != ATTESTATION_MANIFEST {
            return EntryClass::Other(OtherReason::ForeignReferenceType {
                reference_type: rt.to_owned(),
            });
        }
        return match subject_annotation {
            Some(subject) => EntryClass::Attestation { subject: Some(subject) },
            None => EntryClass::Other(OtherReason::AttestationWithoutSubject),
        };
    }
    if let Some(at) = d.artifact_type.as_deref() {
        if at == mt::DOCKER_ATTESTATION_MANIFEST {
            return EntryClass::Attestation {
                subject: subject_annotation,
            };
        }
        if mt::is_signature_type(at) {
            return EntryClass::Signature;
        }
        return EntryClass::Other(OtherReason::Artifact {
            artifact_type: at.to_owned(),
        });
    }
    match &d.platform {
        Some(p) if p.is_unknown() => EntryClass::Other(OtherReason::UnknownPlatformWithoutMarker),
        Some(p) => EntryClass::Runnable {
            platform: Some(p.clone()),
        },
        None => EntryClass::Runnable { platform: None },
    }
}

/// What a standalone manifest is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestKind {
    /// An index or manifest list.
    Index,
    /// A runnable image manifest.
    Image,
    /// An attestation manifest.
    Attestation {
        /// The described manifest (`subject` field), when present.
        subject: Option<Digest>,
        /// In-toto predicate types of its layers.
        predicate_types: Vec<String>,
    },
    /// A signature.
    Signature,
    /// Any other artifact (Helm chart, SOCI index, SBOM referrer, …).
    Artifact {
        /// The artifact or config type that identified it.
        artifact_type: String,
    },
}

impl ManifestKind {
    /// `index`, `image`, `attestation`, `signature` or `artifact`.
    pub fn name(&self) -> &'static str {
        match self {
            ManifestKind::Index => "index",
            ManifestKind::Image => "image",
            ManifestKind::Attestation { .. } => "attestation",
            ManifestKind::Signature => "signature",
            ManifestKind::Artifact { .. } => "artifact",
        }
    }
}

/// Classifies a standalone manifest from its content.
pub fn classify_manifest(m: &Manifest) -> ManifestKind {
    match m {
        Manifest::Index(_) => ManifestKind::Index,
        Manifest::Image(im) => classify_image(im),
    }
}

fn classify_image(im: &ImageManifest) -> ManifestKind {
    let config_type = im.config.media_type.as_str();
    let subject = im.subject.as_ref().map(|s| s.digest.clone());
    let predicate_types = || {
        im.layers
            .iter()
            .filter_map(|l| l.annotation(PREDICATE_TYPE).map(str::to_owned))
            .collect::<Vec<_>>()
    };
    let all_in_toto = !im.layers.is_empty() && im.layers.iter().all(|l| l.media_type == mt::IN_TOTO);
    if im.artifact_type.as_deref() == Some(mt::DOCKER_ATTESTATION_MANIFEST)
        || config_type == mt::DOCKER_ATTESTATION_CONFIG
        || (all_in_toto && im.artifact_type.is_none())
    {
        return ManifestKind::Attestation {
            subject,
            predicate_types: predicate_types(),
        };
    }
    let signature_marker = im.artifact_type.as_deref().is_some_and(mt::is_signature_type)
        || mt::is_signature_type(config_type)
        || im.layers.iter().any(|l| {
            l.media_type == mt::COSIGN_SIMPLESIGNING
                || l.media_type == mt::DSSE_ENVELOPE
                || mt::is_signature_type(&l.media_type)
                || l.annotation(mt::COSIGN_SIGNATURE_ANNOTATION).is_some()
        });
    if signature_marker {
        return ManifestKind::Signature;
    }
    if let Some(at) = &im.artifact_type {
        return ManifestKind::Artifact {
            artifact_type: at.clone(),
        };
    }
    if config_type != mt::OCI_CONFIG && config_type != mt::DOCKER_CONFIG {
        return ManifestKind::Artifact {
            artifact_type: config_type.to_owned(),
        };
    }
    if let Some(s) = &im.subject {
        // A referrer with an image config: not something to run or retag.
        return ManifestKind::Artifact {
            artifact_type: format!("referrer of {}", s.digest),
        };
    }
    if let Some(l) = im.layers.iter().find(|l| !mt::is_image_layer(&l.media_type)) {
        // e.g. a cosign `.sbom` manifest: image config, SPDX layer.
        return ManifestKind::Artifact {
            artifact_type: l.media_type.clone(),
        };
    }
    ManifestKind::Image
}

/// A manifest's classification: its kind and, for an index, each entry's class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    /// Digest of the manifest's bytes.
    pub digest: Digest,
    /// The manifest's media type.
    pub media_type: ManifestMediaType,
    /// What the manifest is.
    pub kind: ManifestKind,
    /// Entries, in document order (empty unless `kind` is `Index`).
    pub entries: Vec<ClassifiedEntry>,
}

impl Classification {
    /// Positions (in `manifests`) of the attestation entries: what strip mode removes.
    pub fn attestation_positions(&self) -> std::collections::BTreeSet<usize> {
        self.entries
            .iter()
            .filter(|e| matches!(e.class, EntryClass::Attestation { .. }))
            .map(|e| e.position)
            .collect()
    }
}

/// Classifies a parsed manifest and, for an index, each of its entries.
pub fn classify(m: &RawManifest) -> Classification {
    let entries = m
        .entries()
        .iter()
        .enumerate()
        .map(|(position, d)| ClassifiedEntry {
            position,
            descriptor: d.clone(),
            class: classify_entry(d),
        })
        .collect();
    Classification {
        digest: m.digest().clone(),
        media_type: m.media_type(),
        kind: classify_manifest(m.manifest()),
        entries,
    }
}

#[cfg(test)]
mod tests;
