//! Tests of [`super`] (test code only: it is compiled under `#[cfg(test)]`).
#![cfg(test)]

use super::*;

fn d(n: u8) -> String {
    format!("sha256:{}", format!("{n:02x}").repeat(32))
}

fn index_json() -> String {
    format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":10,"platform":{{"architecture":"arm64","os":"linux","variant":"v8"}}}},
{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":5,"platform":{{"architecture":"unknown","os":"unknown"}},
 "annotations":{{"vnd.docker.reference.type":"attestation-manifest","vnd.docker.reference.digest":"{}"}}}}],
"annotations":{{"org.opencontainers.image.created":"2026-01-01T00:00:00Z"}}}}"#,
        d(1),
        d(2),
        d(1)
    )
}

#[test]
fn parses_index_and_keeps_bytes() {
    let json = index_json();
    let m = RawManifest::parse(json.clone().into_bytes(), None).unwrap();
    assert_eq!(m.bytes(), json.as_bytes());
    assert_eq!(*m.digest(), Digest::sha256_of(json.as_bytes()));
    assert_eq!(m.media_type(), ManifestMediaType::OciIndex);
    assert_eq!(m.entries().len(), 2);
    assert_eq!(m.entries()[0].platform.as_ref().unwrap().to_string(), "linux/arm64/v8");
}

#[test]
fn media_type_resolution() {
    let no_mt = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":1}}]}}"#,
        d(3)
    );
    let m = RawManifest::parse(no_mt.clone().into_bytes(), None).unwrap();
    assert_eq!(m.media_type(), ManifestMediaType::OciIndex);
    let m = RawManifest::parse(
        no_mt.clone().into_bytes(),
        Some("application/vnd.docker.distribution.manifest.list.v2+json"),
    )
    .unwrap();
    assert_eq!(m.media_type(), ManifestMediaType::DockerManifestList);
    let err = RawManifest::parse(no_mt.into_bytes(), Some("application/vnd.oci.image.manifest.v1+json")).unwrap_err();
    assert!(matches!(err, ManifestError::Structure { .. }), "{err}");
    let err = RawManifest::parse(
        index_json().into_bytes(),
        Some("application/vnd.oci.image.manifest.v1+json"),
    )
    .unwrap_err();
    assert!(matches!(err, ManifestError::MediaTypeMismatch { .. }), "{err}");
    let err = RawManifest::parse(index_json().into_bytes(), Some("text/plain")).unwrap_err();
    assert!(matches!(err, ManifestError::UnknownMediaType(_)), "{err}");
}

#[test]
fn refuses_bad_documents() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"".to_vec(), "empty"),
        (b"not json".to_vec(), "not json"),
        (b"[]".to_vec(), "array"),
        (b"{\"schemaVersion\":1}".to_vec(), "schema 1"),
        (b"{\"schemaVersion\":\"2\",\"manifests\":[]}".to_vec(), "string schema"),
        (b"{\"manifests\":[]}".to_vec(), "no schema"),
        (b"{\"schemaVersion\":2}".to_vec(), "no shape"),
        (
            b"{\"schemaVersion\":2,\"manifests\":[{\"digest\":\"sha256:00\",\"size\":1,\"mediaType\":\"x\"}]}".to_vec(),
            "bad digest",
        ),
        (
            b"{\"schemaVersion\":2,\"manifests\":[{\"size\":1}]}".to_vec(),
            "no digest",
        ),
        (
            format!(
                "{{\"schemaVersion\":2,\"manifests\":[{{\"mediaType\":\"x\",\"digest\":\"{}\",\"size\":-1}}]}}",
                d(1)
            )
            .into_bytes(),
            "negative size",
        ),
        (
            b"{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"layers\":[]}"
                .to_vec(),
            "no config",
        ),
        (
            b"{\"schemaVersion\":2,\"mediaType\":\"application/vnd.docker.distribution.manifest.v1+prettyjws\"}"
                .to_vec(),
            "schema1 media type",
        ),
        (index_json().as_bytes()[..100].to_vec(), "truncated"),
    ];
    for (bytes, what) in cases {
        assert!(RawManifest::parse(bytes, None).is_err(), "{what} should be refused");
    }
}

#[test]
fn refuses_huge_and_absurd() {
    let big = vec![b' '; MAX_MANIFEST_BYTES + 1];
    assert!(matches!(RawManifest::parse(big, None), Err(ManifestError::TooLarge(_))));
    let entry = format!(
        r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":1}}"#,
        d(9)
    );
    let many = vec![entry; MAX_INDEX_ENTRIES + 1].join(",");
    let doc = format!(r#"{{"schemaVersion":2,"manifests":[{many}]}}"#);
    assert!(matches!(
        RawManifest::parse(doc.into_bytes(), None),
        Err(ManifestError::TooManyEntries(_))
    ));
}

#[test]
fn without_entries_keeps_everything_else() {
    let m = RawManifest::parse(index_json().into_bytes(), None).unwrap();
    let stripped = m.without_entries(&BTreeSet::from([1])).unwrap();
    assert_eq!(stripped.entries().len(), 1);
    assert_eq!(stripped.entries()[0], m.entries()[0]);
    let Manifest::Index(i) = stripped.manifest() else {
        panic!("not an index")
    };
    assert_eq!(i.annotations.len(), 1);
    assert_ne!(stripped.digest(), m.digest());
    // deterministic
    assert_eq!(
        m.without_entries(&BTreeSet::from([1])).unwrap().bytes(),
        stripped.bytes()
    );
    // key order preserved: schemaVersion first as in the source
    assert!(stripped.bytes().starts_with(b"{\"schemaVersion\":2,\"mediaType\""));
}
