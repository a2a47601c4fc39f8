//! The `inspect` report: a manifest's classification as stable JSON, and
//! Lambda's verdict on it ([`crate::oci::lambda`]).
//!
//! Shape (keys in this order; `entries` only for indexes, `platform` only when
//! known, `subject` only for attestations; `lambda` last, on every manifest):
//!
//! ```json
//! {"digest":"sha256:…","media_type":"application/vnd.oci.image.index.v1+json","kind":"index",
//!  "entries":[{"digest":"sha256:…","media_type":"…","class":"runnable","platform":"linux/arm64/v8"},
//!             {"digest":"sha256:…","media_type":"…","class":"attestation","subject":"sha256:…"}],
//!  "lambda":{"verdict":"no","reasons":[{"rule":"not_an_image_manifest","media_type":"…"}]}}
//! ```

use serde::Serialize;

use crate::oci::classify::{Classification, EntryClass, ManifestKind, classify};
use crate::oci::digest::Digest;
use crate::oci::lambda::{Verdict, verdict};
use crate::oci::manifest::{Platform, RawManifest};

/// The report for one manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InspectReport {
    /// SHA-256 of the bytes.
    pub digest: Digest,
    /// Media type.
    pub media_type: String,
    /// `index | image | attestation | signature | artifact`.
    pub kind: &'static str,
    /// Subject of a standalone attestation, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<Digest>,
    /// True when the manifest names a `subject`: an OCI referrer, listed by
    /// `ListImageReferrers` for that image and never an orphan while it exists.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub referrer: bool,
    /// In-toto predicate types of an attestation's statements.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub predicate_types: Vec<String>,
    /// Entries of an index.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entries: Option<Vec<EntryReport>>,
    /// Whether Lambda would take this manifest as it is (an image manifest
    /// needs its platform, which only its index entry or config names).
    pub lambda: Verdict,
}

/// The report for one index entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntryReport {
    /// Digest of the entry.
    pub digest: Digest,
    /// Its media type.
    pub media_type: String,
    /// `runnable | attestation | signature | index | other`.
    pub class: &'static str,
    /// `os/architecture[/variant]`, for runnable entries whose platform is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// The described manifest, for attestations whose subject is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<Digest>,
}

impl InspectReport {
    /// The report on `manifest`, whose platform (for an image manifest) is
    /// `platform` when the caller knows it.
    pub fn of(manifest: &RawManifest, platform: Option<&Platform>) -> Self {
        InspectReport::classified(&classify(manifest), verdict(manifest, platform, None))
    }

    fn classified(c: &Classification, lambda: Verdict) -> Self {
        let entries = matches!(c.kind, ManifestKind::Index).then(|| {
            c.entries
                .iter()
                .map(|e| EntryReport {
                    digest: e.digest().clone(),
                    media_type: e.descriptor.media_type.clone(),
                    class: e.class.name(),
                    platform: match &e.class {
                        EntryClass::Runnable { platform } => platform.as_ref().map(ToString::to_string),
                        _ => None,
                    },
                    subject: match &e.class {
                        EntryClass::Attestation { subject } => subject.clone(),
                        _ => None,
                    },
                })
                .collect()
        });
        let (subject, predicate_types) = match &c.kind {
            ManifestKind::Attestation {
                subject,
                predicate_types,
            } => (subject.clone(), predicate_types.clone()),
            _ => (None, Vec::new()),
        };
        InspectReport {
            digest: c.digest.clone(),
            media_type: c.media_type.as_str().to_owned(),
            kind: c.kind.name(),
            referrer: subject.is_some(),
            subject,
            predicate_types,
            entries,
            lambda,
        }
    }
}
