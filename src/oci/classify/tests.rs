//! Tests of [`super`] (test code only: it is compiled under `#[cfg(test)]`).
#![cfg(test)]

use std::collections::BTreeMap;

use super::*;

fn dg(n: u8) -> Digest {
    Digest::parse(&format!("sha256:{}", format!("{n:02x}").repeat(32))).unwrap()
}

fn desc(media_type: &str, platform: Option<Platform>) -> Descriptor {
    Descriptor {
        media_type: media_type.to_owned(),
        digest: dg(1),
        size: 1,
        platform,
        artifact_type: None,
        annotations: BTreeMap::new(),
        urls: Vec::new(),
    }
}

fn unknown() -> Option<Platform> {
    Some(Platform::new("unknown", "unknown", None))
}

#[test]
fn entry_rules() {
    let linux = Some(Platform::new("linux", "arm64", Some("v8")));
    assert_eq!(
        classify_entry(&desc(mt::OCI_MANIFEST, linux.clone())),
        EntryClass::Runnable { platform: linux }
    );
    assert_eq!(
        classify_entry(&desc(mt::DOCKER_MANIFEST, None)),
        EntryClass::Runnable { platform: None }
    );
    assert_eq!(classify_entry(&desc(mt::OCI_INDEX, None)), EntryClass::Index);
    assert_eq!(
        classify_entry(&desc(mt::OCI_MANIFEST, unknown())),
        EntryClass::Other(OtherReason::UnknownPlatformWithoutMarker)
    );
    assert!(matches!(
        classify_entry(&desc("application/vnd.oci.artifact.manifest.v1+json", None)),
        EntryClass::Other(OtherReason::UnsupportedMediaType { .. })
    ));

    let mut att = desc(mt::OCI_MANIFEST, unknown());
    att.annotations
        .insert(REFERENCE_TYPE.into(), ATTESTATION_MANIFEST.into());
    assert_eq!(
        classify_entry(&att),
        EntryClass::Other(OtherReason::AttestationWithoutSubject)
    );
    att.annotations.insert(REFERENCE_DIGEST.into(), dg(7).to_string());
    assert_eq!(classify_entry(&att), EntryClass::Attestation { subject: Some(dg(7)) });

    let mut builder = att.clone();
    builder.annotations.insert(REFERENCE_TYPE.into(), "builder".into());
    assert!(matches!(
        classify_entry(&builder),
        EntryClass::Other(OtherReason::ForeignReferenceType { .. })
    ));

    let mut new_att = desc(mt::OCI_MANIFEST, None);
    new_att.artifact_type = Some(mt::DOCKER_ATTESTATION_MANIFEST.into());
    assert_eq!(classify_entry(&new_att), EntryClass::Attestation { subject: None });

    let mut sig = desc(mt::OCI_MANIFEST, None);
    sig.artifact_type = Some(mt::SIGSTORE_BUNDLE_V03.into());
    assert_eq!(classify_entry(&sig), EntryClass::Signature);
    sig.artifact_type = Some(mt::NOTATION_SIGNATURE.into());
    assert_eq!(classify_entry(&sig), EntryClass::Signature);
    sig.artifact_type = Some("application/vnd.amazon.soci.index.v2+json".into());
    assert!(matches!(
        classify_entry(&sig),
        EntryClass::Other(OtherReason::Artifact { .. })
    ));
}

fn image(config: &str, layers: &[&str], artifact_type: Option<&str>, subject: bool) -> ImageManifest {
    ImageManifest {
        config: desc(config, None),
        layers: layers.iter().map(|l| desc(l, None)).collect(),
        artifact_type: artifact_type.map(str::to_owned),
        subject: subject.then(|| desc(mt::OCI_MANIFEST, None)),
        annotations: BTreeMap::new(),
    }
}

#[test]
fn manifest_rules() {
    let k = |im: ImageManifest| classify_image(&im).name();
    assert_eq!(
        k(image(
            mt::OCI_CONFIG,
            &["application/vnd.oci.image.layer.v1.tar+gzip"],
            None,
            false
        )),
        "image"
    );
    assert_eq!(k(image(mt::DOCKER_CONFIG, &[], None, false)), "image");
    assert_eq!(
        k(image(mt::OCI_CONFIG, &[mt::IN_TOTO, mt::IN_TOTO], None, false)),
        "attestation"
    );
    assert_eq!(
        k(image(
            mt::OCI_EMPTY,
            &[mt::IN_TOTO],
            Some(mt::DOCKER_ATTESTATION_MANIFEST),
            true
        )),
        "attestation"
    );
    assert_eq!(
        k(image(mt::OCI_CONFIG, &[mt::COSIGN_SIMPLESIGNING], None, false)),
        "signature"
    );
    assert_eq!(
        k(image(
            mt::OCI_EMPTY,
            &["application/jose+json"],
            Some(mt::NOTATION_SIGNATURE),
            true
        )),
        "signature"
    );
    assert_eq!(k(image(mt::NOTATION_SIGNATURE, &[], None, true)), "signature");
    assert_eq!(
        k(image(
            mt::HELM_CONFIG,
            &["application/vnd.cncf.helm.chart.content.v1.tar+gzip"],
            None,
            false
        )),
        "artifact"
    );
    assert_eq!(
        k(image(
            mt::OCI_EMPTY,
            &[mt::IN_TOTO],
            Some("application/spdx+json"),
            true
        )),
        "artifact"
    );
    assert_eq!(
        k(image(
            mt::OCI_CONFIG,
            &["application/vnd.oci.image.layer.v1.tar"],
            None,
            true
        )),
        "artifact"
    );
    assert_eq!(k(image(mt::OCI_CONFIG, &[mt::DSSE_ENVELOPE], None, false)), "signature");
    assert_eq!(k(image(mt::OCI_CONFIG, &["text/spdx+json"], None, false)), "artifact");
}

#[test]
fn refinement_only_moves_to_safer_classes() {
    let child_bytes = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:0101010101010101010101010101010101010101010101010101010101010101","size":1},"layers":[]}"#;
    let child = RawManifest::parse(child_bytes.to_vec(), None).unwrap();
    let mut e = ClassifiedEntry {
        position: 0,
        descriptor: Descriptor {
            digest: child.digest().clone(),
            ..desc(mt::OCI_MANIFEST, None)
        },
        class: EntryClass::Runnable { platform: None },
    };
    e.refine_with_child(&child, Some(Platform::new("linux", "amd64", None)));
    assert_eq!(
        e.class,
        EntryClass::Runnable {
            platform: Some(Platform::new("linux", "amd64", None))
        }
    );

    e.class = EntryClass::Attestation { subject: Some(dg(2)) };
    e.refine_with_child(&child, None);
    assert_eq!(e.class, EntryClass::Other(OtherReason::ContradictedByManifest));

    // A different child (digest mismatch) changes nothing.
    e.class = EntryClass::Runnable { platform: None };
    e.descriptor.digest = dg(9);
    e.refine_with_child(&child, Some(Platform::new("linux", "amd64", None)));
    assert_eq!(e.class, EntryClass::Runnable { platform: None });
}
