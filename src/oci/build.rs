//! A tiny but real container image, built in memory, wrapped as a default
//! `docker buildx build --push` stores it: an OCI index listing the image
//! manifest and its provenance attestation manifest. What `selftest` pushes.
//!
//! The image: one gzip-compressed tar layer (an executable `/selftest`
//! script and a `VERSION` file) and an image config naming its platform,
//! its entrypoint and the layer's uncompressed digest. The attestation
//! carries one in-toto SLSA v0.2 provenance statement about the image, in
//! either form BuildKit writes:
//!
//! - [`AttestationFormat::Subject`] (BuildKit ≥ 0.32, the default):
//!   `artifactType` `application/vnd.docker.attestation.manifest.v1+json`,
//!   the empty config, and a `subject` naming the image;
//! - [`AttestationFormat::Legacy`]: an image config with platform
//!   `unknown/unknown` and no `subject`.
//!
//! Both are listed in the index with platform `unknown/unknown` and the
//! `vnd.docker.reference.*` annotations. Nothing here does IO.

use serde_json::{Value, json};

use crate::oci::digest::Digest;
use crate::oci::manifest::{ManifestError, Platform, RawManifest};
use crate::oci::media_type as mt;

/// The predicate type of BuildKit's provenance statements.
pub const SLSA_PROVENANCE_V02: &str = "https://slsa.dev/provenance/v0.2";

/// Which attestation form BuildKit writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttestationFormat {
    /// An OCI artifact with `subject` (BuildKit ≥ 0.32).
    #[default]
    Subject,
    /// An image-shaped manifest without `subject` (earlier BuildKit).
    Legacy,
}

/// A blob to upload before the manifests that name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// Its digest.
    pub digest: Digest,
    /// Its media type, as the manifests describe it.
    pub media_type: &'static str,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

impl Blob {
    fn new(media_type: &'static str, bytes: Vec<u8>) -> Self {
        Blob {
            digest: Digest::sha256_of(&bytes),
            media_type,
            bytes,
        }
    }

    fn descriptor(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest.to_string(), "size": self.bytes.len()})
    }
}

/// What a default buildx push stores, in the order `docker push` sends it:
/// the blobs, the image manifest, the attestation manifest, then the index
/// (the only one tagged).
#[derive(Debug, Clone)]
pub struct BuildxImage {
    /// Layer, image config, attestation config, statement: each uploaded once.
    pub blobs: Vec<Blob>,
    /// The runnable image manifest.
    pub image: RawManifest,
    /// Its platform.
    pub platform: Platform,
    /// The provenance attestation manifest.
    pub attestation: RawManifest,
    /// The index listing both.
    pub index: RawManifest,
}

/// Why an image could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The platform is not `os/arch[/variant]`.
    #[error("platform {0:?} is not os/architecture[/variant] (e.g. linux/arm64)")]
    Platform(String),
    /// The layer could not be written (in memory: not expected).
    #[error("cannot write the layer: {0}")]
    Layer(#[from] std::io::Error),
    /// A manifest did not parse back (a defect).
    #[error(transparent)]
    Manifest(#[from] ManifestError),
}

/// Parses `os/architecture[/variant]`.
pub fn parse_platform(text: &str) -> Result<Platform, BuildError> {
    let parts: Vec<&str> = text.split('/').collect();
    let valid = |p: &&str| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    match parts.as_slice() {
        [os, arch] if parts.iter().all(valid) => Ok(Platform::new(os, arch, None)),
        [os, arch, variant] if parts.iter().all(valid) => Ok(Platform::new(os, arch, Some(variant))),
        _ => Err(BuildError::Platform(text.to_owned())),
    }
}

/// A gzip-compressed tar of `files` (path, mode, bytes), and the digest of
/// the uncompressed tar (the config's `diff_id`).
fn layer(files: &[(&str, u32, &[u8])]) -> Result<(Vec<u8>, Digest), std::io::Error> {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, mode, bytes) in files {
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(*mode);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, path, *bytes)?;
    }
    let tar = tar.into_inner()?;
    let diff_id = Digest::sha256_of(&tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &tar)?;
    Ok((gz.finish()?, diff_id))
}

fn compact(value: &Value) -> Vec<u8> {
    // A `Value` of strings, numbers and maps always serialises.
    serde_json::to_vec(value).unwrap_or_default()
}

/// Builds the image for `platform`; `salt` makes its digests unique (a run id).
pub fn buildx_image(platform: &str, format: AttestationFormat, salt: &str) -> Result<BuildxImage, BuildError> {
    let parsed = parse_platform(platform)?;
    let script = format!("#!/bin/sh\necho 'ecr-remediator selftest {salt} ({platform})'\n");
    let (gz, diff_id) = layer(&[
        ("selftest", 0o755, script.as_bytes()),
        ("VERSION", 0o644, format!("{salt}\n").as_bytes()),
    ])?;
    let layer = Blob::new(mt::OCI_LAYER_TAR_GZIP, gz);
    let mut config = json!({
        "architecture": parsed.architecture,
        "os": parsed.os,
        "config": {"Entrypoint": ["/selftest"], "Env": ["PATH=/usr/bin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id.to_string()]},
        "history": [{"created_by": "ecr-remediator selftest", "comment": "built in memory"}],
    });
    if let (Some(variant), Some(c)) = (&parsed.variant, config.as_object_mut()) {
        c.insert("variant".to_owned(), json!(variant));
    }
    let config = Blob::new(mt::OCI_CONFIG, compact(&config));
    let image = json!({
        "schemaVersion": 2, "mediaType": mt::OCI_MANIFEST,
        "config": config.descriptor(), "layers": [layer.descriptor()],
    });
    let image = RawManifest::parse(compact(&image), Some(mt::OCI_MANIFEST))?;
    let statement = json!({
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": SLSA_PROVENANCE_V02,
        "subject": [{"name": format!("pkg:docker/ecr-remediator-selftest@{salt}?platform={}", platform.replace('/', "%2F")),
                     "digest": {"sha256": image.digest().hex()}}],
        "predicate": {"builder": {"id": ""}, "buildType": "https://mobyproject.org/buildkit@v1",
                      "invocation": {"environment": {"platform": platform}},
                      "metadata": {"buildInvocationID": salt, "reproducible": false}},
    });
    let statement = Blob::new(mt::IN_TOTO, compact(&statement));
    let mut statement_descriptor = statement.descriptor();
    statement_descriptor["annotations"] = json!({"in-toto.io/predicate-type": SLSA_PROVENANCE_V02});
    let image_descriptor = image.descriptor();
    let subject =
        json!({"mediaType": mt::OCI_MANIFEST, "digest": image.digest().to_string(), "size": image.bytes().len()});
    let (attestation_config, attestation) = match format {
        AttestationFormat::Subject => {
            let empty = Blob::new(mt::OCI_EMPTY, b"{}".to_vec());
            let doc = json!({
                "schemaVersion": 2, "mediaType": mt::OCI_MANIFEST,
                "artifactType": mt::DOCKER_ATTESTATION_MANIFEST,
                "config": empty.descriptor(), "layers": [statement_descriptor], "subject": subject,
            });
            (empty, doc)
        }
        AttestationFormat::Legacy => {
            let config = json!({
                "architecture": "unknown", "os": "unknown", "config": {},
                "rootfs": {"type": "layers", "diff_ids": [statement.digest.to_string()]},
            });
            let config = Blob::new(mt::OCI_CONFIG, compact(&config));
            let doc = json!({
                "schemaVersion": 2, "mediaType": mt::OCI_MANIFEST,
                "config": config.descriptor(), "layers": [statement_descriptor],
            });
            (config, doc)
        }
    };
    let attestation = RawManifest::parse(compact(&attestation), Some(mt::OCI_MANIFEST))?;
    let mut platform_json = json!({"architecture": parsed.architecture, "os": parsed.os});
    if let Some(variant) = &parsed.variant {
        platform_json["variant"] = json!(variant);
    }
    let mut image_entry = serde_json::to_value(&image_descriptor).unwrap_or_default();
    image_entry["platform"] = platform_json;
    let attestation_entry = json!({
        "mediaType": mt::OCI_MANIFEST, "digest": attestation.digest().to_string(), "size": attestation.bytes().len(),
        "annotations": {"vnd.docker.reference.digest": image.digest().to_string(),
                        "vnd.docker.reference.type": "attestation-manifest"},
        "platform": {"architecture": "unknown", "os": "unknown"},
    });
    let index = json!({"schemaVersion": 2, "mediaType": mt::OCI_INDEX, "manifests": [image_entry, attestation_entry]});
    let index = RawManifest::parse(compact(&index), Some(mt::OCI_INDEX))?;
    Ok(BuildxImage {
        blobs: vec![layer, config, attestation_config, statement],
        image,
        platform: parsed,
        attestation,
        index,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::classify::{EntryClass, classify};
    use crate::oci::lambda::{Verdict, verdict};

    #[test]
    fn a_default_buildx_push_in_either_attestation_form() {
        for format in [AttestationFormat::Subject, AttestationFormat::Legacy] {
            let built = buildx_image("linux/arm64", format, "run-1").unwrap();
            let c = classify(&built.index);
            let kinds: Vec<bool> = c
                .entries
                .iter()
                .map(|e| matches!(e.class, EntryClass::Runnable { .. }))
                .collect();
            assert_eq!(kinds, [true, false], "{format:?}: {c:?}");
            assert!(
                matches!(&c.entries[1].class, EntryClass::Attestation { subject: Some(s) } if s == built.image.digest()),
                "{format:?}: {c:?}"
            );
            assert_eq!(
                built.attestation.subject().is_some(),
                format == AttestationFormat::Subject
            );
            // Every blob a manifest names is uploaded, and its digest is over its bytes.
            for b in &built.blobs {
                assert!(b.digest.verifies(&b.bytes));
            }
            // Lambda takes the image.
            let v = verdict(&built.image, Some(&built.platform), None);
            assert_eq!(v, Verdict::Yes);
        }
        let a = buildx_image("linux/amd64", AttestationFormat::Subject, "a").unwrap();
        let b = buildx_image("linux/amd64", AttestationFormat::Subject, "b").unwrap();
        assert_ne!(
            a.index.digest(),
            b.index.digest(),
            "the salt makes each run's digests its own"
        );
    }

    #[test]
    fn platforms_parse_or_say_what_is_wrong() {
        assert_eq!(parse_platform("linux/arm64/v8").unwrap().variant.as_deref(), Some("v8"));
        for bad in ["linux", "linux/", "linux/arm64/v8/x", "linux arm64", ""] {
            assert!(parse_platform(bad).is_err(), "{bad}");
        }
    }
}
