//! OCI referrers on the emulator through the real SDK: a referrer copy of a
//! buildx attestation is accepted by ECR (its config and statements are
//! already in the repository) and listed for the image it describes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::harness;

use ecr_remediator::Digest;
use ecr_remediator::RepositoryName;
use ecr_remediator::engine::registry::{ImageRef, Registry};
use ecr_remediator::oci::referrer::referrer_copy;
use harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_referrer_copy_is_stored_and_listed_for_its_image() {
    let repo = unique("referrers");
    create_repository(&repo, false);
    let pushed = push_buildx(&repo, "v1", &["linux/arm64"], "referrers");
    let h = handler(&[]).await;
    let name = RepositoryName::parse(&repo).unwrap();
    let ids: Vec<ImageRef> = [pushed.runnable(), pushed.attestation()]
        .iter()
        .map(|d| ImageRef::Digest(Digest::parse(d).unwrap()))
        .collect();
    let got = h.registry.get_images(&name, &ids).await.unwrap();
    let image = got[0].1.as_ref().unwrap().clone();
    let attestation = got[1].1.as_ref().unwrap().clone();
    let copy = referrer_copy(&attestation, &image.descriptor()).unwrap();
    assert!(
        h.registry
            .list_referrers(&name, image.digest())
            .await
            .unwrap()
            .is_empty(),
        "a default buildx push has no referrer"
    );
    let body = String::from_utf8(copy.bytes().to_vec()).unwrap();
    python_script(&format!(
        "import boto3; boto3.client('ecr').put_image(repositoryName={repo:?}, imageManifest={body:?}, \
         imageManifestMediaType='application/vnd.oci.image.manifest.v1+json')"
    ));
    let listed = h.registry.list_referrers(&name, image.digest()).await.unwrap();
    let listed: Vec<_> = listed.into_iter().map(|r| (r.digest, r.signature)).collect();
    assert_eq!(
        listed,
        vec![(copy.digest().clone(), None)],
        "a provenance copy, not a signature"
    );
    assert!(
        h.registry
            .list_referrers(&name, attestation.digest())
            .await
            .unwrap()
            .is_empty()
    );
}

const REFERRERS: [(&str, &str); 5] = [
    ("ECR_REMEDIATOR_KEEP_TAG", "false"),
    ("ECR_REMEDIATOR_DELETE_ORPHANS", "true"),
    ("ECR_REMEDIATOR_GRACE_PERIOD", "0s"),
    ("ECR_REMEDIATOR_PROVENANCE", "referrers"),
    ("ECR_REMEDIATOR_PUT_TPS", "10"),
];

async fn handle(repo: &str, pushed: &Pushed, tag: &str, mode: &str) -> serde_json::Value {
    let mut policy = REFERRERS.to_vec();
    policy.push(("ECR_REMEDIATOR_MODE", mode));
    let h = handler(&policy).await;
    let audit = AuditQueue::new(repo).await;
    h.handle_text(
        &push_event(repo, &pushed.index, tag, OCI_INDEX),
        ecr_remediator::Delivery::default(),
    )
    .await
    .unwrap();
    audit
        .records()
        .await
        .into_iter()
        .rfind(|r| r["outcome"] != "in_progress")
        .unwrap()
}

/// `(digest, artifactType)` of the referrers ECR lists for `subject`.
fn referrers_of(repo: &str, subject: &str) -> Vec<(String, String)> {
    let out = python_script(&format!(
        "import boto3, json\n\
         r = boto3.client('ecr').list_image_referrers(repositoryName={repo:?}, subjectId={{'imageDigest': {subject:?}}})\n\
         print(json.dumps([[x['digest'], x.get('artifactType', '')] for x in r['referrers']]))"
    ));
    serde_json::from_str::<Vec<(String, String)>>(out.trim()).unwrap()
}

fn layers(m: &serde_json::Value) -> Vec<String> {
    m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_attaches_provenance_and_sbom_to_the_image_and_leaves_no_stray_manifest() {
    for (format, extra) in [
        ("legacy", vec!["--sbom"]),
        ("artifact", vec!["--attestation-format", "artifact", "--sbom"]),
    ] {
        let repo = unique(&format!("ref-promote-{format}"));
        create_repository(&repo, false);
        let pushed = push_buildx_with(&repo, "v1", &["linux/arm64"], &format!("ref-{format}"), &extra);
        let attestation = get_manifest(&repo, pushed.attestation()).await;
        let record = handle(&repo, &pushed, "v1", "promote").await;
        assert_eq!(record["outcome"], "remediated", "{record:#}");
        let t = tags(&repo).await;
        assert_eq!(t["v1"], pushed.runnable(), "v1 is the image manifest Lambda takes");
        let listed = referrers_of(&repo, pushed.runnable());
        assert_eq!(listed.len(), 1, "{format}: {listed:?}");
        assert_eq!(listed[0].1, "application/vnd.docker.attestation.manifest.v1+json");
        let referrer = get_manifest(&repo, &listed[0].0).await;
        assert_eq!(
            layers(&referrer),
            layers(&attestation),
            "the statements are the pushed ones, byte for byte"
        );
        assert_eq!(referrer["subject"]["digest"], pushed.runnable());
        let put: Vec<&serde_json::Value> = record["actions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["action"] == "put_referrer")
            .collect();
        if format == "legacy" {
            assert_eq!(put.len(), 1, "{record:#}");
            assert_eq!(put[0]["digest"], listed[0].0.as_str());
            assert_eq!(put[0]["subject"], pushed.runnable());
            assert_eq!(
                put[0]["predicate_types"].as_array().unwrap().len(),
                2,
                "provenance and SBOM"
            );
        } else {
            assert!(
                put.is_empty(),
                "an artifact attestation already refers to the image: {record:#}"
            );
            assert_eq!(listed[0].0, pushed.attestation(), "kept as it was pushed");
        }
        // Untagged: only the referrer; the index and any copied attestation are gone.
        let untagged = untagged(&repo).await;
        assert_eq!(untagged, vec![listed[0].0.clone()], "{format}");
        // Handling the push again writes nothing.
        emulator().clear_calls(&repo);
        let again = handle(&repo, &pushed, "v1", "promote").await;
        assert_eq!(again["outcome"], "skipped", "{again:#}");
        let calls = emulator().calls(&repo);
        assert!(
            !calls.contains_key("ecr:PutImage") && !calls.contains_key("ecr:BatchDeleteImage"),
            "{calls:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_platform_gets_its_own_provenance_in_strip_and_tag_modes() {
    for mode in ["strip", "tag"] {
        let repo = unique(&format!("ref-{mode}"));
        create_repository(&repo, false);
        let pushed = push_buildx(
            &repo,
            "v2",
            &["linux/amd64", "linux/arm64"],
            &format!("ref-multi-{mode}"),
        );
        let record = handle(&repo, &pushed, "v2", mode).await;
        assert_eq!(record["outcome"], "remediated", "{record:#}");
        let runnables: Vec<String> = record["classification"]["runnable"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["digest"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(runnables.len(), 2);
        let mut referrers = Vec::new();
        for r in &runnables {
            let listed = referrers_of(&repo, r);
            assert_eq!(listed.len(), 1, "{mode}: one referrer per platform image: {listed:?}");
            let m = get_manifest(&repo, &listed[0].0).await;
            assert_eq!(m["subject"]["digest"], r.as_str());
            referrers.push(listed[0].0.clone());
        }
        let untagged: std::collections::BTreeSet<String> = untagged(&repo).await.into_iter().collect();
        if mode == "strip" {
            // The stripped index holds both images; the original index and its attestations are gone.
            let expected: std::collections::BTreeSet<String> = runnables.iter().chain(&referrers).cloned().collect();
            assert_eq!(
                untagged, expected,
                "only referrers and the images the stripped index needs"
            );
            assert!(!untagged.contains(&pushed.index));
        } else {
            // Tag mode keeps the index (and its attestations) under v2.
            assert_eq!(tags(&repo).await["v2"], pushed.index);
            assert!(referrers.iter().all(|r| untagged.contains(r)));
        }
    }
}
