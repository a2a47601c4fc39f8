//! Referrer copies: an attestation manifest re-attached to the image it
//! describes as an OCI 1.1 referrer (its `subject`), so provenance and SBOM
//! stay reachable through the referrers API after the index that carried
//! them is gone.
//!
//! The copy keeps the attestation's config and layers byte-for-byte (the
//! in-toto statements are untouched; their subject digest is already the
//! image's) and its annotations, sets `subject` to the image's descriptor
//! and `artifactType` to BuildKit's attestation artifact type, and is
//! serialised compactly in a fixed field order, so the same attestation and
//! subject always give the same bytes and digest (a retry writes nothing new).

use serde_json::{Map, Value, json};

use crate::oci::manifest::{Descriptor, Manifest, ManifestError, RawManifest};
use crate::oci::media_type::{self as mt, ManifestMediaType};

/// The `artifactType` of the copies: the one BuildKit gives attestation
/// manifests in their OCI-artifact form, which registries' referrers views
/// and tools (`oras discover`, `docker buildx imagetools`) show as such.
pub const ATTESTATION_ARTIFACT_TYPE: &str = mt::DOCKER_ATTESTATION_MANIFEST;

/// The referrer copy of `attestation` for the image `subject` (an image
/// manifest's descriptor: media type, digest, size; other fields are dropped).
pub fn referrer_copy(attestation: &RawManifest, subject: &Descriptor) -> Result<RawManifest, ManifestError> {
    let structure = |problem| ManifestError::Structure {
        media_type: attestation.media_type(),
        problem,
    };
    let Manifest::Image(image) = attestation.manifest() else {
        return Err(structure("only an image manifest can be copied as a referrer"));
    };
    if attestation.media_type() != ManifestMediaType::OciManifest {
        return Err(structure("only an OCI image manifest can carry a subject"));
    }
    let subject_type = ManifestMediaType::parse(&subject.media_type);
    if subject_type.is_none_or(ManifestMediaType::is_index) {
        return Err(structure("the subject must be an image manifest"));
    }
    let descriptor = |d: &Descriptor| serde_json::to_value(d).map_err(ManifestError::Json);
    let mut doc = Map::new();
    doc.insert("schemaVersion".into(), json!(2));
    doc.insert("mediaType".into(), json!(ManifestMediaType::OciManifest.as_str()));
    doc.insert("artifactType".into(), json!(ATTESTATION_ARTIFACT_TYPE));
    doc.insert("config".into(), descriptor(&image.config)?);
    doc.insert(
        "layers".into(),
        Value::Array(image.layers.iter().map(descriptor).collect::<Result<_, _>>()?),
    );
    doc.insert(
        "subject".into(),
        json!({"mediaType": subject.media_type, "digest": subject.digest.to_string(), "size": subject.size}),
    );
    if !image.annotations.is_empty() {
        doc.insert("annotations".into(), json!(image.annotations));
    }
    let bytes = serde_json::to_vec(&Value::Object(doc)).map_err(ManifestError::Json)?;
    RawManifest::parse(bytes, Some(ManifestMediaType::OciManifest.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::classify::{ManifestKind, classify_manifest};
    use crate::oci::digest::Digest;

    fn raw(v: &Value) -> RawManifest {
        RawManifest::parse(serde_json::to_vec(v).unwrap(), None).unwrap()
    }

    fn image() -> RawManifest {
        raw(&json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": Digest::sha256_of(b"c").to_string(), "size": 1},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": Digest::sha256_of(b"l").to_string(), "size": 9}]
        }))
    }

    fn legacy_attestation() -> RawManifest {
        raw(&json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": Digest::sha256_of(b"ac").to_string(), "size": 241},
            "layers": [
                {"mediaType": "application/vnd.in-toto+json", "digest": Digest::sha256_of(b"prov").to_string(), "size": 1500,
                 "annotations": {"in-toto.io/predicate-type": "https://slsa.dev/provenance/v0.2"}},
                {"mediaType": "application/vnd.in-toto+json", "digest": Digest::sha256_of(b"sbom").to_string(), "size": 9000,
                 "annotations": {"in-toto.io/predicate-type": "https://spdx.dev/Document"}}
            ]
        }))
    }

    #[test]
    fn the_copy_keeps_the_statements_and_points_at_the_image_deterministically() {
        let att = legacy_attestation();
        let img = image();
        let copy = referrer_copy(&att, &img.descriptor()).unwrap();
        assert_eq!(
            copy,
            referrer_copy(&att, &img.descriptor()).unwrap(),
            "same input, same bytes"
        );
        let (Manifest::Image(orig), Manifest::Image(new)) = (att.manifest(), copy.manifest()) else {
            panic!("not image manifests")
        };
        assert_eq!(new.layers, orig.layers, "statements untouched");
        assert_eq!(new.config, orig.config);
        assert_eq!(new.subject.as_ref().map(|s| &s.digest), Some(img.digest()));
        assert_eq!(new.artifact_type.as_deref(), Some(ATTESTATION_ARTIFACT_TYPE));
        match classify_manifest(copy.manifest()) {
            ManifestKind::Attestation {
                subject,
                predicate_types,
            } => {
                assert_eq!(subject.as_ref(), Some(img.digest()));
                assert_eq!(predicate_types.len(), 2);
            }
            other => panic!("classified as {other:?}"),
        }
        // A different subject, a different copy.
        let other = referrer_copy(&att, &legacy_attestation().descriptor()).unwrap();
        assert_ne!(other.digest(), copy.digest());
    }

    #[test]
    fn only_an_oci_image_manifest_is_copied_onto_an_image_manifest() {
        let att = legacy_attestation();
        let mut index_subject = image().descriptor();
        index_subject.media_type = "application/vnd.oci.image.index.v1+json".into();
        assert!(referrer_copy(&att, &index_subject).is_err());
        let index =
            raw(&json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []}));
        assert!(referrer_copy(&index, &image().descriptor()).is_err());
        let docker = raw(&json!({
            "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": Digest::sha256_of(b"c").to_string(), "size": 1},
            "layers": []
        }));
        assert!(referrer_copy(&docker, &image().descriptor()).is_err());
    }
}
