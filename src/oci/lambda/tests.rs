//! Tests of [`super`] (test code only: it is compiled under `#[cfg(test)]`).
#![cfg(test)]

use serde_json::{Value, json};

use super::*;
use crate::oci::media_type::{OCI_EMPTY, OCI_INDEX, OCI_MANIFEST};

const GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
const FOREIGN: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

fn digest(n: u8) -> String {
    format!("sha256:{}", format!("{n:02x}").repeat(32))
}

fn layer(n: u8, media_type: &str, size: u64) -> Value {
    json!({"mediaType": media_type, "digest": digest(n), "size": size})
}

fn image(config: &str, layers: Vec<Value>) -> RawManifest {
    let doc = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": config, "digest": digest(200), "size": 1469},
        "layers": layers,
    });
    RawManifest::parse(serde_json::to_vec(&doc).unwrap(), None).unwrap()
}

fn linux(arch: &str) -> Platform {
    Platform::new("linux", arch, None)
}

struct Target(Platform);

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl PlatformTarget for Target {
    fn matches(&self, p: &Platform) -> bool {
        p.os == self.0.os && p.architecture == self.0.architecture
    }
}

#[test]
fn a_plain_linux_image_with_gzip_layers_is_deployable_on_both_architectures() {
    let m = image(OCI_CONFIG, vec![layer(1, GZIP, 3_000_000), layer(2, GZIP, 100)]);
    assert_eq!(verdict(&m, Some(&linux("arm64")), None), Verdict::Yes);
    assert_eq!(verdict(&m, Some(&linux("amd64")), None), Verdict::Yes);
    assert_eq!(
        verdict(&m, Some(&Platform::new("linux", "arm64", Some("v8"))), None),
        Verdict::Yes
    );
    let docker = image(
        DOCKER_CONFIG,
        vec![layer(1, "application/vnd.docker.image.rootfs.diff.tar.gzip", 9)],
    );
    assert_eq!(verdict(&docker, Some(&linux("amd64")), None), Verdict::Yes);
}

#[test]
fn windows_other_architectures_and_the_wrong_target_are_refused() {
    let m = image(OCI_CONFIG, vec![layer(1, GZIP, 10)]);
    let windows = verdict(&m, Some(&Platform::new("windows", "amd64", None)), None);
    assert_eq!(
        windows,
        Verdict::No {
            reasons: vec![Refusal::NotLinux { os: "windows".into() }]
        }
    );
    assert!(verdict(&m, Some(&linux("s390x")), None).is_no());
    assert!(verdict(&m, Some(&Platform::new("linux", "arm", Some("v7"))), None).is_no());
    let target = Target(linux("arm64"));
    let v = verdict(&m, Some(&linux("amd64")), Some(&target));
    assert!(
        v.describe()
            .contains("built for linux/amd64, the policy targets linux/arm64"),
        "{v:?}"
    );
    assert_eq!(verdict(&m, Some(&linux("arm64")), Some(&target)), Verdict::Yes);
}

#[test]
fn an_index_of_one_or_two_platforms_or_a_nested_index_is_refused() {
    for entries in [
        vec![
            json!({"mediaType": OCI_MANIFEST, "digest": digest(1), "size": 1, "platform": {"os": "linux", "architecture": "arm64"}}),
        ],
        vec![
            json!({"mediaType": OCI_MANIFEST, "digest": digest(1), "size": 1, "platform": {"os": "linux", "architecture": "arm64"}}),
            json!({"mediaType": OCI_MANIFEST, "digest": digest(2), "size": 1, "platform": {"os": "linux", "architecture": "amd64"}}),
        ],
        vec![json!({"mediaType": OCI_INDEX, "digest": digest(3), "size": 1})],
    ] {
        let doc = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries});
        let m = RawManifest::parse(serde_json::to_vec(&doc).unwrap(), None).unwrap();
        let v = verdict(&m, Some(&linux("arm64")), None);
        assert!(
            matches!(&v, Verdict::No { reasons } if matches!(reasons[..], [Refusal::NotAnImageManifest { .. }])),
            "{v:?}"
        );
    }
}

#[test]
fn an_artifact_is_refused_for_its_config() {
    let m = image(OCI_EMPTY, vec![layer(1, "application/vnd.in-toto+json", 10)]);
    let v = verdict(&m, Some(&linux("arm64")), None);
    let Verdict::No { reasons } = v else { panic!("{v:?}") };
    assert_eq!(
        reasons,
        vec![Refusal::ConfigNotAnImage {
            media_type: OCI_EMPTY.into()
        }]
    );
}

#[test]
fn zstd_estargz_foreign_and_unknown_layers_are_unknown_not_guessed() {
    let zstd = image(OCI_CONFIG, vec![layer(1, GZIP, 10), layer(2, ZSTD, 10)]);
    let v = verdict(&zstd, Some(&linux("amd64")), None);
    assert_eq!(
        v,
        Verdict::Unknown {
            unchecked: vec![Unchecked::LayerMediaType {
                digest: Digest::parse(&digest(2)).unwrap(),
                media_type: ZSTD.into()
            }]
        }
    );
    let mut stargz = layer(3, GZIP, 10);
    stargz["annotations"] = json!({ESTARGZ_TOC: digest(4)});
    let v = verdict(&image(OCI_CONFIG, vec![stargz]), Some(&linux("amd64")), None);
    assert!(matches!(&v, Verdict::Unknown { unchecked } if matches!(unchecked[..], [Unchecked::EstargzLayer { .. }])));
    let mut foreign = layer(5, FOREIGN, 10);
    foreign["urls"] = json!(["https://mcr.microsoft.com/v2/windows/blobs/x"]);
    let v = verdict(&image(DOCKER_CONFIG, vec![foreign]), Some(&linux("amd64")), None);
    assert_eq!(v.word(), "unknown");
    assert!(v.describe().contains("outside ECR"), "{}", v.describe());
    // A refusal outweighs what could not be checked.
    let v = verdict(&zstd, Some(&Platform::new("windows", "amd64", None)), None);
    assert!(v.is_no());
}

#[test]
fn an_unknown_platform_or_an_undocumented_variant_is_unknown() {
    let m = image(OCI_CONFIG, vec![layer(1, GZIP, 10)]);
    assert_eq!(
        verdict(&m, None, None),
        Verdict::Unknown {
            unchecked: vec![Unchecked::Platform]
        }
    );
    let unknown = Platform::new("unknown", "unknown", None);
    assert_eq!(verdict(&m, Some(&unknown), None).word(), "unknown");
    let v3 = Platform::new("linux", "amd64", Some("v3"));
    assert_eq!(verdict(&m, Some(&v3), None).word(), "unknown");
    let arm_v9 = Platform::new("linux", "arm64", Some("v9"));
    assert_eq!(verdict(&m, Some(&arm_v9), None).word(), "unknown");
    // arm64/v8 is what every arm64 image is: buildx writes it.
    let arm_v8 = Platform::new("linux", "arm64", Some("v8"));
    assert_eq!(verdict(&m, Some(&arm_v8), None), Verdict::Yes);
}

#[test]
fn only_a_size_the_manifest_proves_over_ten_gib_is_refused() {
    let gib = 1024 * 1024 * 1024;
    // Compressed: 10.5 GiB of gzip holds at least 10.4 GiB.
    let big = image(
        OCI_CONFIG,
        vec![layer(1, GZIP, 5 * gib), layer(2, GZIP, 5 * gib + gib / 2)],
    );
    let v = verdict(&big, Some(&linux("amd64")), None);
    assert!(
        matches!(&v, Verdict::No { reasons } if matches!(reasons[..], [Refusal::TooLarge { .. }])),
        "{v:?}"
    );
    // Exactly the limit in an uncompressed layer is allowed; one byte more is not.
    let at = image(
        OCI_CONFIG,
        vec![layer(
            1,
            "application/vnd.oci.image.layer.v1.tar",
            MAX_UNCOMPRESSED_BYTES,
        )],
    );
    assert_eq!(verdict(&at, Some(&linux("amd64")), None), Verdict::Yes);
    let over = image(
        OCI_CONFIG,
        vec![
            layer(1, "application/vnd.oci.image.layer.v1.tar", MAX_UNCOMPRESSED_BYTES),
            layer(2, "application/vnd.oci.image.layer.v1.tar", 1),
        ],
    );
    assert!(verdict(&over, Some(&linux("amd64")), None).is_no());
    // 10 GiB of gzip may hold slightly less than 10 GiB: not certainly over.
    let gz = image(OCI_CONFIG, vec![layer(1, GZIP, MAX_UNCOMPRESSED_BYTES + 1)]);
    assert_eq!(verdict(&gz, Some(&linux("amd64")), None), Verdict::Yes);
    // Sizes that overflow a u64 when added are still over.
    let huge = image(
        OCI_CONFIG,
        vec![
            layer(1, "application/vnd.oci.image.layer.v1.tar", u64::MAX),
            layer(2, "application/vnd.oci.image.layer.v1.tar", u64::MAX),
        ],
    );
    assert!(verdict(&huge, Some(&linux("amd64")), None).is_no());
}

#[test]
fn a_manifest_over_the_recommended_size_is_unknown() {
    let layers: Vec<Value> = (0..170).map(|n| layer(n, GZIP, 10)).collect();
    let m = image(OCI_CONFIG, layers);
    assert!(m.bytes().len() >= RECOMMENDED_MANIFEST_BYTES, "{}", m.bytes().len());
    let v = verdict(&m, Some(&linux("amd64")), None);
    assert!(
        matches!(&v, Verdict::Unknown { unchecked } if matches!(unchecked[..], [Unchecked::ManifestSize { .. }])),
        "{v:?}"
    );
}

#[test]
fn the_record_spells_the_verdict_in_words() {
    let m = image(OCI_CONFIG, vec![layer(1, ZSTD, 10)]);
    let v = serde_json::to_value(verdict(&m, Some(&Platform::new("windows", "amd64", None)), None)).unwrap();
    assert_eq!(
        v,
        json!({"verdict": "no", "reasons": [{"rule": "not_linux", "os": "windows"}]})
    );
    let v = serde_json::to_value(verdict(&m, Some(&linux("amd64")), None)).unwrap();
    assert_eq!(v["verdict"], "unknown");
    assert_eq!(v["unchecked"][0]["check"], "layer_media_type");
}
