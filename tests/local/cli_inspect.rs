//! The `ecr-remediator inspect` command, run as a user would.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use ecr_remediator::RawManifest;
use ecr_remediator::oci::inspect::InspectReport;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/manifests")
        .join(name)
}

fn inspect(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ecr-remediator"))
        .arg("inspect")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn seed_case_prints_exactly_the_specified_json() {
    let path = fixture("buildx-single-platform-index.json");
    let (code, out, err) = inspect(&[path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let bytes = std::fs::read(&path).unwrap();
    let digest = ecr_remediator::Digest::sha256_of(&bytes);
    let image = "sha256:73a961b1cc025a771134b89dab34385225d012e1edf7e91e2a8485e22bc88834";
    let entries: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let att = entries["manifests"][1]["digest"].as_str().unwrap();
    let expected = format!(
        concat!(
            r#"{{"digest":"{}","media_type":"application/vnd.oci.image.index.v1+json","kind":"index","entries":["#,
            r#"{{"digest":"{}","media_type":"application/vnd.oci.image.manifest.v1+json","class":"runnable","platform":"linux/arm64"}},"#,
            r#"{{"digest":"{}","media_type":"application/vnd.oci.image.manifest.v1+json","class":"attestation","subject":"{}"}}],"#,
            r#""lambda":{{"verdict":"no","reasons":[{{"rule":"not_an_image_manifest","media_type":"application/vnd.oci.image.index.v1+json"}}]}}}}"#,
            "\n"
        ),
        digest, image, att, image
    );
    assert_eq!(out, expected);
}

#[test]
fn every_fixture_inspects_like_the_library_classifies() {
    for entry in std::fs::read_dir(fixture("")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let (code, out, err) = inspect(&[path.to_str().unwrap()]);
        assert_eq!(code, 0, "{}: {err}", path.display());
        let m = RawManifest::parse(std::fs::read(&path).unwrap(), None).unwrap();
        let want = serde_json::to_string(&InspectReport::of(&m, None)).unwrap();
        assert_eq!(out.trim_end(), want, "{}", path.display());
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["entries"].is_array(), v["kind"] == "index", "{}", path.display());
    }
}

#[test]
fn image_manifest_has_no_entries_and_standalone_attestation_has_subject() {
    let (code, out, _) = inspect(&[fixture("docker-v2-image.json").to_str().unwrap()]);
    assert_eq!(code, 0);
    assert_eq!(
        out.trim_end(),
        r#"{"digest":"sha256:4c1c50d0ffc614f90b93b07d778028dc765548e823f676fb027f61d281ac380d","media_type":"application/vnd.docker.distribution.manifest.v2+json","kind":"image","lambda":{"verdict":"unknown","unchecked":[{"check":"platform"}]}}"#
    );
    // Its platform, as an index entry would name it, settles the verdict;
    // a platform Lambda does not run is refused; a malformed one is a usage error.
    let image = fixture("docker-v2-image.json");
    let (code, out, _) = inspect(&[image.to_str().unwrap(), "--platform", "linux/amd64"]);
    assert_eq!(code, 0);
    assert!(out.contains(r#""lambda":{"verdict":"yes"}"#), "{out}");
    let (_, out, _) = inspect(&[image.to_str().unwrap(), "--platform", "windows/amd64"]);
    assert!(out.contains(r#""rule":"not_linux""#), "{out}");
    let (code, out, err) = inspect(&[image.to_str().unwrap(), "--platform", "amd64"]);
    assert_ne!(code, 0);
    assert!(out.is_empty() && err.contains("os/arch"), "{err}");
    let (_, out, _) = inspect(&[fixture("buildkit-attestation-artifact.json").to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["kind"], "attestation");
    assert_eq!(
        v["subject"],
        "sha256:73a961b1cc025a771134b89dab34385225d012e1edf7e91e2a8485e22bc88834"
    );
    assert_eq!(v["referrer"], true, "a manifest with a subject is an OCI referrer");
    assert!(!v["predicate_types"].as_array().unwrap().is_empty(), "{v}");
}

#[test]
fn media_type_flag_is_honoured_and_checked() {
    let helm = fixture("helm-chart.json");
    let (code, out, _) = inspect(&[helm.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(out.contains(r#""media_type":"application/vnd.oci.image.manifest.v1+json""#));
    let (code, _, err) = inspect(&[
        fixture("postgres-17.11-index.json").to_str().unwrap(),
        "--media-type",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("mediaType"), "{err}");
}

#[test]
fn invalid_input_is_one_line_on_stderr_and_exit_2() {
    let dir = std::env::temp_dir().join(format!("ecr-remediator-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty.json", Vec::new()),
        ("text.json", b"hello".to_vec()),
        ("truncated.json", b"{\"schemaVersion\":2,\"manifests\":[".to_vec()),
        ("schema1.json", b"{\"schemaVersion\":1,\"name\":\"x\"}".to_vec()),
        ("huge.json", vec![b' '; 4 * 1024 * 1024 + 1]),
    ];
    for (name, bytes) in cases {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        let (code, out, err) = inspect(&[path.to_str().unwrap()]);
        assert_eq!(code, 2, "{name}");
        assert!(out.is_empty(), "{name}: {out}");
        assert_eq!(err.lines().count(), 1, "{name}: {err}");
        assert!(err.starts_with("error: "), "{name}: {err}");
    }
    let (code, _, err) = inspect(&[dir.join("missing.json").to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot read"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
#[cfg(unix)]
fn an_endless_input_is_read_only_to_the_size_limit() {
    // /dev/zero never ends: the command must stop at ECR's 4 MiB limit, not
    // read until memory runs out. A runaway read is killed after 30 s.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ecr-remediator"))
        .args(["inspect", "/dev/zero"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > std::time::Duration::from_secs(30) {
            let _ = child.kill();
            panic!("inspect /dev/zero did not stop");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("4194304") || err.contains("4 MiB") || err.contains("limit"),
        "{err}"
    );
}
