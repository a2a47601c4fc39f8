//! Table-driven tests over the fixture corpus in `tests/fixtures/manifests`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use ecr_remediator::Digest;
use ecr_remediator::RawManifest;
use ecr_remediator::oci::classify::{EntryClass, ManifestKind, classify};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Catalog {
    fixture: Vec<Fixture>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Fixture {
    file: String,
    provenance: String,
    source: String,
    published_digest: Option<String>,
    media_type: Option<String>,
    kind: String,
    #[serde(default)]
    classes: Vec<String>,
    platforms: Option<Vec<String>>,
    subjects: Option<Vec<String>>,
    subject: Option<String>,
    lambda: String,
    lambda_platform: Option<String>,
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/manifests")
}

fn catalog() -> Catalog {
    toml::from_str(&std::fs::read_to_string(dir().join("catalog.toml")).unwrap()).unwrap()
}

#[test]
fn every_fixture_file_is_catalogued_and_every_entry_exists() {
    let listed: BTreeSet<String> = catalog().fixture.into_iter().map(|f| f.file).collect();
    let present: BTreeSet<String> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".json"))
        .collect();
    assert_eq!(listed, present);
}

#[test]
fn served_fixtures_match_their_published_digests() {
    let mut served = 0;
    for f in catalog().fixture {
        assert!(
            ["served", "unverified", "constructed"].contains(&f.provenance.as_str()),
            "{}: bad provenance",
            f.file
        );
        assert!(!f.source.trim().is_empty(), "{}: source missing", f.file);
        let bytes = std::fs::read(dir().join(&f.file)).unwrap();
        match (f.provenance.as_str(), &f.published_digest) {
            ("served", Some(d)) => {
                served += 1;
                assert_eq!(Digest::sha256_of(&bytes), Digest::parse(d).unwrap(), "{}", f.file);
            }
            ("served", None) => panic!("{}: a served fixture needs its published digest", f.file),
            _ => {}
        }
    }
    assert!(served >= 6, "the corpus must keep its real registry documents");
}

#[test]
fn every_fixture_classifies_as_catalogued() {
    for f in catalog().fixture {
        let bytes = std::fs::read(dir().join(&f.file)).unwrap();
        let m =
            RawManifest::parse(bytes.clone(), f.media_type.as_deref()).unwrap_or_else(|e| panic!("{}: {e}", f.file));
        assert_eq!(m.bytes(), bytes.as_slice(), "{}: bytes must be kept as-is", f.file);
        let c = classify(&m);
        assert_eq!(c.kind.name(), f.kind, "{}", f.file);
        let classes: Vec<&str> = c.entries.iter().map(|e| e.class.name()).collect();
        assert_eq!(classes, f.classes, "{}", f.file);
        if let Some(want) = &f.platforms {
            let got: Vec<String> = c
                .entries
                .iter()
                .filter_map(|e| match &e.class {
                    EntryClass::Runnable { platform: Some(p) } => Some(p.to_string()),
                    _ => None,
                })
                .collect();
            assert_eq!(&got, want, "{}", f.file);
        }
        if let Some(want) = &f.subjects {
            let got: Vec<String> = c
                .entries
                .iter()
                .filter_map(|e| match &e.class {
                    EntryClass::Attestation { subject } => subject.as_ref().map(ToString::to_string),
                    _ => None,
                })
                .collect();
            assert_eq!(&got, want, "{}", f.file);
        }
        if let Some(want) = &f.subject {
            match &c.kind {
                ManifestKind::Attestation { subject, .. } => {
                    assert_eq!(
                        subject.as_ref().map(ToString::to_string).as_deref(),
                        Some(want.as_str())
                    )
                }
                other => panic!("{}: {other:?} has no subject", f.file),
            }
        }
    }
}

#[test]
fn attestation_predicate_types_are_read_from_layers() {
    let bytes = std::fs::read(dir().join("buildkit-attestation-artifact.json")).unwrap();
    let c = classify(&RawManifest::parse(bytes, None).unwrap());
    let ManifestKind::Attestation { predicate_types, .. } = c.kind else {
        panic!("not an attestation")
    };
    assert_eq!(
        predicate_types,
        ["https://slsa.dev/provenance/v1", "https://spdx.dev/Document"]
    );
}

#[test]
fn every_truncation_of_every_fixture_is_an_error_not_a_panic() {
    for f in catalog().fixture {
        let bytes = std::fs::read(dir().join(&f.file)).unwrap();
        for cut in 0..bytes.len() {
            assert!(
                RawManifest::parse(bytes[..cut].to_vec(), f.media_type.as_deref()).is_err(),
                "{} cut at {cut} parsed",
                f.file
            );
        }
    }
}

#[test]
fn wrong_types_are_errors() {
    let base = std::fs::read_to_string(dir().join("buildx-single-platform-index.json")).unwrap();
    for (from, to) in [
        ("\"schemaVersion\":2", "\"schemaVersion\":\"2\""),
        ("\"schemaVersion\":2", "\"schemaVersion\":3"),
        ("\"manifests\":[", "\"manifests\":{\"x\":["),
        ("\"platform\":{", "\"platform\":[{"),
        ("\"size\":", "\"size\":-"),
        (
            "\"annotations\":{\"vnd.docker.reference.digest\":\"",
            "\"annotations\":{\"vnd.docker.reference.digest\":1,\"x\":\"",
        ),
        ("\"digest\":\"sha256:", "\"digest\":\"md5:"),
    ] {
        let bad = base.replacen(from, to, 1);
        assert_ne!(bad, base, "mutation {from} did not apply");
        assert!(
            RawManifest::parse(bad.into_bytes(), None).is_err(),
            "{from} -> {to} parsed"
        );
    }
}

/// Lambda's verdict on each document of the corpus, as catalogued: every
/// index and artifact refused, the two real image manifests deployable on
/// their platform, the undocumented layer types of the rest unknown.
#[test]
fn every_fixture_gets_its_catalogued_lambda_verdict() {
    use ecr_remediator::oci::lambda::verdict;
    use ecr_remediator::oci::manifest::Platform;
    for f in catalog().fixture {
        let bytes = std::fs::read(dir().join(&f.file)).unwrap();
        let m = RawManifest::parse(bytes, f.media_type.as_deref()).unwrap();
        let platform = f.lambda_platform.as_deref().map(|p| {
            let (os, arch) = p.split_once('/').unwrap();
            Platform::new(os, arch, None)
        });
        let v = verdict(&m, platform.as_ref(), None);
        assert_eq!(v.word(), f.lambda, "{}: {}", f.file, v.describe());
    }
    // Without its platform, even a deployable image is only `unknown`.
    let bytes = std::fs::read(dir().join("buildx-arm64-image.json")).unwrap();
    let v = verdict(&RawManifest::parse(bytes, None).unwrap(), None, None);
    assert_eq!(v.describe(), "unknown: platform not known");
}
