//! What other tools still need is never deleted or rewritten (issue 18), on
//! the emulator with the real binary: signed indexes, attached provenance,
//! referrers tag-schema indexes, the service's own kept indexes after a
//! policy change; explicit flags win over a repository's tag; strip
//! leftovers are found; archived images are neither taken nor fatal.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use harness::*;
use serde_json::Value;

const KEEP_OFF: [(&str, &str); 1] = [("ECR_REMEDIATOR_KEEP_TAG", "false")];
/// A promote sweep that cleans leftovers now: no minimum age, no grace period.
const CLEAN_NOW: [&str; 7] = [
    "--mode",
    "promote",
    "--delete-orphans",
    "--grace-period",
    "0s",
    "--min-age",
    "0s",
];

fn remediate(repo: &str, digest: &str, tag: &str, extra: &[&str], env: &[(&str, &str)]) -> Value {
    remediate_record(repo, digest, tag, extra, env)
}

fn sweep(repo: &str, extra: &[&str], env: &[(&str, &str)]) -> (Vec<Value>, Value) {
    let mut args = vec!["sweep", "--repository", repo, "--output", "json"];
    args.extend_from_slice(extra);
    let (code, out, err) = run_cli(&args, env);
    assert_eq!(code, 0, "{out}\n{err}");
    sweep_json(&out)
}

/// A promotion with no keep tag and no deletion: `v1` on the image, the index untagged.
fn leftover(repo: &str, salt: &str, options: &[&str]) -> Pushed {
    create_repository(repo, false);
    let p = push_buildx_with(repo, "v1", &["linux/arm64"], salt, options);
    let r = remediate(repo, &p.index, "v1", &["--mode", "promote"], &KEEP_OFF);
    assert_eq!(r["outcome"], "remediated", "{r}");
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_leftover_index_is_never_deleted_by_a_sweep() {
    for kind in ["notation", "cosign"] {
        let repo = unique(&format!("signed-{kind}"));
        let p = leftover(&repo, &format!("signed-{kind}"), &[]);
        let signature = attach(&repo, &p.index, kind);
        let (records, summary) = sweep(&repo, &CLEAN_NOW, &KEEP_OFF);
        let listing = list(&repo).await;
        assert!(present(&listing, &p.index), "{kind}: the signed index was deleted");
        assert!(
            present(&listing, p.attestation()),
            "{kind}: its attestation was deleted"
        );
        assert!(
            present(&listing, signature["digest"].as_str().unwrap()),
            "{kind}: the signature is gone"
        );
        assert_eq!(summary["manifests_deleted"], 0, "{kind}: {summary}");
        let record = records.iter().find(|r| r["index_digest"] == p.index).unwrap();
        let code = if kind == "notation" {
            "has_referrers"
        } else {
            "has_companion"
        };
        assert_eq!(record["outcome"], "skipped", "{record}");
        assert_eq!(record["code"], code, "{kind}: the record names what kept it: {record}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_index_keeps_its_tag_unless_the_image_is_signed_too_or_the_policy_allows() {
    for (kind, reason, signature) in [
        ("notation", "has_referrers", "notation"),
        ("cosign", "has_companion", "cosign_tag"),
    ] {
        // The index alone is signed: promote falls back to tag mode.
        let repo = unique(&format!("signed-push-{kind}"));
        create_repository(&repo, false);
        let p = push_buildx(&repo, "v1", &["linux/arm64"], &format!("signed-push-{kind}"));
        attach(&repo, &p.index, kind);
        let promote = ["--mode", "promote", "--delete-orphans", "--grace-period", "0s"];
        let r = remediate(&repo, &p.index, "v1", &promote, &KEEP_OFF);
        assert_eq!(r["policy"]["mode"], "tag", "{kind}: {r}");
        let now = tags(&repo).await;
        assert_eq!(
            now["v1"], p.index,
            "{kind}: verification by tag still finds the signed index"
        );
        assert_eq!(now["v1-linux-arm64"], p.runnable(), "{kind}: the derived tag deploys");
        assert_eq!(skip_of(&r, &p.index).unwrap()["reason"], "index_signed", "{kind}: {r}");
        assert_eq!(r["signing"]["index"][0]["kind"], signature, "{kind}: {r}");
        assert_eq!(r["signing"]["image"], serde_json::json!([]), "{kind}: {r}");
        assert_eq!(r["deleted"], 0, "{kind}: {r}");

        // promote_signed_index: the tag moves anyway, with a warning; the
        // signed index is still never deleted.
        let repo = unique(&format!("signed-anyway-{kind}"));
        create_repository(&repo, false);
        let p = push_buildx(&repo, "v1", &["linux/arm64"], &format!("signed-anyway-{kind}"));
        attach(&repo, &p.index, kind);
        let mut env = KEEP_OFF.to_vec();
        env.push(("ECR_REMEDIATOR_PROMOTE_SIGNED_INDEX", "true"));
        let r = remediate(&repo, &p.index, "v1", &promote, &env);
        assert_eq!(r["outcome"], "remediated", "{kind}: {r}");
        assert_eq!(tags(&repo).await["v1"], p.runnable(), "{kind}: the tag deploys");
        assert!(
            r["notes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n.as_str().unwrap().starts_with("warning: the index is signed")),
            "{kind}: {r}"
        );
        let listing = list(&repo).await;
        assert!(
            present(&listing, &p.index) && present(&listing, p.attestation()),
            "{kind}"
        );
        assert_eq!(skip_of(&r, &p.index).unwrap()["reason"], reason, "{kind}: {r}");

        // cosign sign --recursive: the image is signed too, promote as usual.
        let repo = unique(&format!("signed-both-{kind}"));
        create_repository(&repo, false);
        let p = push_buildx(&repo, "v1", &["linux/arm64"], &format!("signed-both-{kind}"));
        attach(&repo, &p.index, kind);
        attach(&repo, p.runnable(), kind);
        let r = remediate(&repo, &p.index, "v1", &promote, &KEEP_OFF);
        assert_eq!(r["outcome"], "remediated", "{kind}: {r}");
        assert_eq!(r["policy"]["mode"], "promote", "{kind}: {r}");
        assert_eq!(tags(&repo).await["v1"], p.runnable(), "{kind}: the tag deploys");
        assert_eq!(r["signing"]["image"][0]["kind"], signature, "{kind}: {r}");
        assert!(present(&list(&repo).await, &p.index), "{kind}: the signed index stays");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provenance_attached_to_its_image_survives_promote_and_strip_with_deletion() {
    for mode in ["promote", "strip"] {
        let repo = unique(&format!("attached-{mode}"));
        create_repository(&repo, false);
        let p = push_buildx_with(
            &repo,
            "v1",
            &["linux/arm64"],
            &format!("attached-{mode}"),
            &["--attestation-format", "artifact"],
        );
        let r = remediate(
            &repo,
            &p.index,
            "v1",
            &["--mode", mode, "--delete-orphans", "--grace-period", "0s"],
            &KEEP_OFF,
        );
        assert_eq!(r["outcome"], "remediated", "{mode}: {r}");
        let listing = list(&repo).await;
        assert!(present(&listing, p.attestation()), "{mode}: provenance deleted");
        assert_eq!(
            referrer_digests(&repo, p.runnable()),
            vec![p.attestation().to_owned()],
            "{mode}: ECR lists the provenance for the image"
        );
        let skip = skip_of(&r, p.attestation()).unwrap();
        assert_eq!(skip["reason"], "attached_referrer", "{mode}: {r}");
        if mode == "promote" {
            assert!(!present(&listing, &p.index), "the index itself goes");
            assert_eq!(r["deleted"], 1, "{r}");
        }
    }
    // The sweep's cleanup of such a leftover does the same.
    let repo = unique("attached-sweep");
    let p = leftover(&repo, "attached-sweep", &["--attestation-format", "artifact"]);
    let (_, summary) = sweep(&repo, &CLEAN_NOW, &KEEP_OFF);
    let listing = list(&repo).await;
    assert!(!present(&listing, &p.index), "{summary}");
    assert!(present(&listing, p.attestation()), "{summary}");
    assert_eq!(referrer_digests(&repo, p.runnable()), vec![p.attestation().to_owned()]);
    assert_eq!(summary["manifests_deleted"], 1, "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_referrers_tag_schema_index_is_never_remediated_or_deleted() {
    let repo = unique("tag-schema");
    create_repository(&repo, false);
    let p = push_buildx(&repo, "v1", &["linux/arm64"], "tag-schema");
    let fallback = attach(&repo, p.runnable(), "referrers-index");
    let schema_tag = fallback["tag"].as_str().unwrap().to_owned();
    for mode in ["strip", "promote"] {
        let (records, summary) = sweep(
            &repo,
            &[
                "--mode",
                mode,
                "--delete-orphans",
                "--grace-period",
                "0s",
                "--min-age",
                "0s",
            ],
            &KEEP_OFF,
        );
        assert!(
            records.iter().all(|r| r["tag"] != schema_tag.as_str()),
            "{mode}: handled as a pushed tag: {records:?}"
        );
        assert_eq!(summary["not_touched"]["referrers_index"], 1, "{mode}: {summary}");
        let t = tags(&repo).await;
        assert_eq!(t[&schema_tag], fallback["digest"], "{mode}: the tag moved");
        assert!(!t.contains_key(&format!("{schema_tag}-index")), "{mode}: {t:?}");
        let listing = list(&repo).await;
        for d in fallback["stored"].as_array().unwrap() {
            assert!(present(&listing, d.as_str().unwrap()), "{mode}: {d} deleted");
        }
    }
    // The image the fallback describes stays (whatever became of its own push).
    assert!(present(&list(&repo).await, p.runnable()));
    // Asked directly, the same: its tag is the referrers index of the image.
    let r = remediate(
        &repo,
        fallback["digest"].as_str().unwrap(),
        &schema_tag,
        &["--mode", "strip", "--delete-orphans", "--grace-period", "0s"],
        &KEEP_OFF,
    );
    assert_eq!(r["code"], "companion_tag", "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turning_the_keep_tag_off_never_turns_kept_indexes_into_pushed_tags() {
    let repo = unique("policy-change");
    create_repository(&repo, false);
    let mut pushed = Vec::new();
    for v in ["v1", "v2", "v3"] {
        let p = push_buildx(&repo, v, &["linux/arm64"], &format!("policy-change-{v}"));
        // The default policy with promote: the index stays under `<tag>-index`.
        let r = remediate(&repo, &p.index, v, &["--mode", "promote"], &[]);
        assert_eq!(r["outcome"], "remediated", "{r}");
        pushed.push(p);
    }
    let before = tags(&repo).await;
    assert_eq!(before["v1-index"], pushed[0].index);
    let (records, summary) = sweep(&repo, &CLEAN_NOW, &KEEP_OFF);
    assert_eq!(tags(&repo).await, before, "{records:?}");
    assert_eq!(summary["manifests_deleted"], 0, "{summary}");
    assert!(records.iter().all(|r| r["tag"] != "v1-index"), "{records:?}");
    let listing = list(&repo).await;
    for p in &pushed {
        assert!(present(&listing, &p.index) && present(&listing, p.attestation()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observe_run_never_writes_whatever_the_repository_tag_says() {
    for (repo_mode, command) in [("promote", "sweep"), ("strip", "remediate")] {
        let repo = unique(&format!("observe-{repo_mode}"));
        create_repository(&repo, false);
        tag_repository(&repo, "ecr-remediator:mode", repo_mode);
        let p = push_buildx(&repo, "v1", &["linux/arm64"], &format!("observe-{repo_mode}"));
        emulator().clear_calls(&repo);
        let before = tags(&repo).await;
        let record = if command == "sweep" {
            let (records, _) = sweep(&repo, &["--mode", "observe"], &[]);
            records[0].clone()
        } else {
            remediate(&repo, &p.index, "v1", &["--mode", "observe"], &[])
        };
        assert_eq!(tags(&repo).await, before, "{command} --mode observe wrote: {record}");
        assert_eq!(emulator().calls(&repo).get("ecr:PutImage"), None);
        assert_eq!(record["policy"]["mode"], "observe", "{record}");
        assert!(
            record["policy"]["source"].as_str().unwrap().contains("overridden"),
            "{record}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strip_leftovers_are_found_and_cleaned() {
    let repo = unique("strip-leftover");
    create_repository(&repo, false);
    let p = push_buildx(&repo, "v1", &["linux/arm64"], "strip-leftover");
    let r = remediate(&repo, &p.index, "v1", &["--mode", "strip"], &KEEP_OFF);
    assert_eq!(r["outcome"], "remediated", "{r}");
    let stripped = tags(&repo).await["v1"].clone();
    assert_ne!(stripped, p.index);
    let index_bytes = python_script(&format!(
        "import boto3\n\
         img = boto3.client('ecr').batch_get_image(repositoryName='{repo}', imageIds=[{{'imageDigest': '{}'}}],\n\
           acceptedMediaTypes=['application/vnd.oci.image.index.v1+json'])['images'][0]\n\
         print(len(img['imageManifest'].encode()))",
        p.index
    ))
    .trim()
    .parse::<u64>()
    .unwrap();
    let attestation_size = python_script(&format!(
        "import boto3\n\
         d = boto3.client('ecr').describe_images(repositoryName='{repo}', imageIds=[{{'imageDigest': '{}'}}])\n\
         print(d['imageDetails'][0]['imageSizeInBytes'])",
        p.attestation()
    ))
    .trim()
    .parse::<u64>()
    .unwrap();
    let (records, summary) = sweep(
        &repo,
        &[
            "--mode",
            "strip",
            "--delete-orphans",
            "--grace-period",
            "0s",
            "--min-age",
            "0s",
        ],
        &KEEP_OFF,
    );
    let listing = list(&repo).await;
    assert!(!present(&listing, &p.index), "{records:?}");
    assert!(!present(&listing, p.attestation()), "{records:?}");
    assert!(present(&listing, &stripped) && present(&listing, p.runnable()));
    assert_eq!(summary["manifests_deleted"], 2, "{summary}");
    // Bytes: the index's own document (ECR reports an index's size as its
    // largest child's, whose layers stay) plus the attestation's size.
    assert_eq!(
        summary["bytes_reclaimed"].as_u64().unwrap(),
        index_bytes + attestation_size,
        "{summary}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_derived_tag_held_by_an_archived_image_is_skipped_not_taken() {
    let repo = unique("archived-derived");
    create_repository(&repo, false);
    let first = push_buildx(&repo, "v1", &["linux/arm64"], "archived-derived-1");
    let r = remediate(&repo, &first.index, "v1", &["--mode", "tag"], &[]);
    assert_eq!(r["outcome"], "remediated", "{r}");
    emulator().control(
        "POST",
        "status",
        Some(serde_json::json!({"repository": repo, "digest": first.runnable(), "status": "ARCHIVED"})),
    );
    let second = push_buildx(&repo, "v1", &["linux/arm64"], "archived-derived-2");
    let r = remediate(&repo, &second.index, "v1", &["--mode", "tag"], &[]);
    assert_ne!(r["outcome"], "failed", "{r}");
    let skip = skip_of(&r, second.runnable()).unwrap();
    assert_eq!(skip["reason"], "tag_unreadable", "{r}");
    assert!(
        !tags(&repo).await.contains_key("v1-linux-arm64"),
        "not moved to the new image"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_tag_held_by_an_archived_index_is_neither_taken_nor_fatal() {
    let repo = unique("archived-keep");
    create_repository(&repo, false);
    let first = push_buildx(&repo, "v1", &["linux/arm64"], "archived-keep-1");
    remediate(&repo, &first.index, "v1", &["--mode", "promote"], &[]);
    assert_eq!(tags(&repo).await["v1-index"], first.index);
    emulator().control(
        "POST",
        "status",
        Some(serde_json::json!({"repository": repo, "digest": first.index, "status": "ARCHIVED"})),
    );
    let second = push_buildx(&repo, "v1", &["linux/arm64"], "archived-keep-2");
    let r = remediate(&repo, &second.index, "v1", &["--mode", "promote"], &[]);
    assert_eq!(r["outcome"], "skipped", "{r}");
    assert_eq!(r["code"], "tag_unreadable", "{r}");
    let t = tags(&repo).await;
    assert_eq!(
        t["v1"], second.index,
        "the pushed tag is not moved without its keep tag"
    );
}

/// Three pushes remediated under the default keep tag: `vN` on the image,
/// `vN-index` on the index.
async fn kept(repo: &str, salt: &str) -> Vec<Pushed> {
    create_repository(repo, false);
    let mut out = Vec::new();
    for v in ["v1", "v2", "v3"] {
        let p = push_buildx(repo, v, &["linux/arm64"], &format!("{salt}-{v}"));
        let r = remediate(repo, &p.index, v, &["--mode", "promote"], &[]);
        assert_eq!(r["outcome"], "remediated", "{r}");
        out.push(p);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_indexes_are_retired_only_on_request_shown_by_the_dry_run_signed_ones_stay() {
    let repo = unique("retire");
    let pushed = kept(&repo, "retire").await;
    attach(&repo, &pushed[2].index, "notation");
    let args = [
        "--mode",
        "promote",
        "--retire-kept-indexes",
        "--min-age",
        "0s",
        "--grace-period",
        "0s",
    ];

    // With the keep tag still on, the rule keeps them on purpose.
    let (records, summary) = sweep(&repo, &args, &[]);
    assert_eq!(summary["manifests_deleted"], 0, "{summary}");
    assert!(records.iter().any(|r| r["code"] == "retire_not_enabled"), "{records:?}");

    // The dry run shows what the real run does, and writes nothing.
    let before = list(&repo).await.len();
    let mut dry = args.to_vec();
    dry.push("--dry-run");
    let (records, _) = sweep(&repo, &dry, &KEEP_OFF);
    assert_eq!(list(&repo).await.len(), before, "a dry run deletes nothing");
    let planned: Vec<&Value> = records
        .iter()
        .flat_map(|r| r["actions"].as_array().unwrap())
        .filter(|a| a["outcome"] == "planned" && a["role"] == "kept_index")
        .collect();
    assert_eq!(planned.len(), 2, "{records:?}");

    let (records, summary) = sweep(&repo, &args, &KEEP_OFF);
    assert_eq!(summary["kept_indexes_retired"], 2, "{summary}");
    assert_eq!(
        summary["manifests_deleted"], 2,
        "attestations stay without --delete-orphans: {summary}"
    );
    let t = tags(&repo).await;
    assert!(!t.contains_key("v1-index") && !t.contains_key("v2-index"), "{t:?}");
    assert_eq!(t["v3-index"], pushed[2].index, "the signed index stays");
    let listing = list(&repo).await;
    for p in &pushed[..2] {
        assert!(!present(&listing, &p.index));
        assert!(present(&listing, p.attestation()), "left: delete_orphans is off");
        assert_eq!(
            t[&format!("v{}", 1 + pushed.iter().position(|q| q.index == p.index).unwrap())],
            p.runnable()
        );
    }
    let signed = records.iter().find(|r| r["index_digest"] == pushed[2].index).unwrap();
    assert_eq!(signed["code"], "has_referrers", "{signed}");
    // The trail finds a retirement as a deletion.
    let retired = records.iter().find(|r| r["index_digest"] == pushed[0].index).unwrap();
    let delete = retired["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["action"] == "delete")
        .unwrap();
    assert_eq!(delete["role"], "kept_index", "{retired}");
    assert_eq!(delete["removes_tags"], serde_json::json!(["v1-index"]), "{retired}");
    assert_eq!(delete["outcome"], "applied", "{retired}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retiring_under_provenance_referrers_attaches_the_provenance_first() {
    let repo = unique("retire-referrers");
    let pushed = kept(&repo, "retire-referrers").await;
    let env = [
        ("ECR_REMEDIATOR_KEEP_TAG", "false"),
        ("ECR_REMEDIATOR_PROVENANCE", "referrers"),
    ];
    let (_, summary) = sweep(
        &repo,
        &[
            "--mode",
            "promote",
            "--retire-kept-indexes",
            "--delete-orphans",
            "--grace-period",
            "0s",
            "--min-age",
            "0s",
        ],
        &env,
    );
    assert_eq!(summary["kept_indexes_retired"], 3, "{summary}");
    let listing = list(&repo).await;
    for p in &pushed {
        assert!(!present(&listing, &p.index) && !present(&listing, p.attestation()));
        let referrers = referrer_digests(&repo, p.runnable());
        assert_eq!(referrers.len(), 1, "the provenance is attached to the image first");
        let copy = get_manifest(&repo, &referrers[0]).await;
        assert_eq!(copy["subject"]["digest"], p.runnable());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leftovers_cleanup_reads_a_constant_number_of_times() {
    let repo = unique("cleanup-budget");
    let p = leftover(&repo, "cleanup-budget", &[]);
    emulator().clear_calls(&repo);
    let (_, summary) = sweep(&repo, &CLEAN_NOW, &KEEP_OFF);
    assert_eq!(summary["manifests_deleted"], 2, "{summary}");
    let calls = emulator().calls(&repo);
    assert!(!present(&list(&repo).await, &p.index));
    // The sweep: one listing, one read of its indexes, one of its unlisted
    // manifests (none here). The leftover: its bytes and companion tags,
    // its children's (and the stripped copy it would have had), one
    // DescribeImages, one ListImageReferrers each for it and its
    // attestation; right before deleting, the gate's one batch of reads
    // again (tags and pull times, companion tags, referrers); the deletions.
    let expect = |op: &str| calls.get(&format!("ecr:{op}")).copied().unwrap_or(0);
    assert_eq!(
        expect("DescribeImages"),
        3,
        "listing, the candidate's details, the re-read: {calls:?}"
    );
    assert_eq!(expect("ListImageReferrers"), 4, "{calls:?}");
    assert_eq!(expect("BatchGetImage"), 4, "{calls:?}");
    assert_eq!(expect("BatchDeleteImage"), 2, "{calls:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signature_pushed_after_the_promotion_is_reported_by_the_sweep_and_nothing_moves() {
    for kind in ["notation", "cosign"] {
        let repo = unique(&format!("late-sig-{kind}"));
        create_repository(&repo, false);
        let p = push_buildx(&repo, "v1", &["linux/arm64"], &format!("late-sig-{kind}"));
        // The common CI order: the push is promoted, then the pushed digest is signed.
        let r = remediate(&repo, &p.index, "v1", &["--mode", "promote"], &[]);
        assert_eq!(r["outcome"], "remediated", "{r}");
        attach(&repo, &p.index, kind);
        let audit = AuditQueue::new(&repo).await;
        let (_, summary) = sweep(&repo, &["--mode", "promote"], &[]);
        let gaps = summary["signature_gaps"].as_array().unwrap();
        assert_eq!(gaps.len(), 1, "{kind}: {summary}");
        assert_eq!(gaps[0]["tag"], "v1");
        assert_eq!(gaps[0]["index"], p.index.as_str());
        assert_eq!(gaps[0]["image"], p.runnable());
        let t = tags(&repo).await;
        assert_eq!(t["v1"], p.runnable(), "{kind}: the tag is not moved back");
        assert_eq!(t["v1-index"], p.index);
        // The audit trail says so, with what to do.
        let records = audit.records().await;
        let gap = records
            .iter()
            .find(|r| r["code"] == "signed_after_promotion")
            .unwrap_or_else(|| panic!("{kind}: {records:?}"));
        assert_eq!(gap["index_digest"], p.index.as_str());
        assert_eq!(gap["tag"], "v1");
        assert_eq!(gap["outcome"], "skipped");
        assert!(
            gap["reason"].as_str().unwrap().contains("sign the image digest"),
            "{gap}"
        );
        // The table says what to do.
        let (code, out, _) = run_cli(&["sweep", "--repository", &repo, "--mode", "promote"], &[]);
        assert_eq!(code, 0);
        assert!(
            out.contains("signed index only") && out.contains("cosign sign --recursive"),
            "{out}"
        );

        // Signing the image too closes the gap.
        attach(&repo, p.runnable(), kind);
        let (_, summary) = sweep(&repo, &["--mode", "promote"], &[]);
        assert_eq!(summary["signature_gaps"], serde_json::json!([]), "{kind}: {summary}");
    }
}

// ---------------------------------------------------------------------------
// One deletion gate (issue 33): the five reproductions, through the real
// binary on the emulator.

/// Promote and delete at once, as an operator asking for a test would.
const DELETE_NOW: [&str; 5] = ["--mode", "promote", "--delete-orphans", "--grace-period", "0s"];

fn uri(repo: &str, reference: &str) -> String {
    let sep = if reference.starts_with("sha256:") { "@" } else { ":" };
    format!("{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{repo}{sep}{reference}")
}

/// Registers an ECS task definition (no service, no task) naming `image`;
/// returns its ARN.
fn task_definition(family: &str, image: &str) -> String {
    python_script(&format!(
        "import boto3\n\
         ecs = boto3.client('ecs')\n\
         td = ecs.register_task_definition(family='{family}', containerDefinitions=[{{'name': 'app', 'image': '{image}', 'memory': 128}}])\n\
         print(td['taskDefinition']['taskDefinitionArn'])"
    ))
    .trim()
    .to_owned()
}

fn deregister(arn: &str) {
    python_script(&format!(
        "import boto3\nboto3.client('ecs').deregister_task_definition(taskDefinition='{arn}')"
    ));
}

/// Moves `digest` to the archive storage class.
fn archive(repo: &str, digest: &str) {
    emulator().control(
        "POST",
        "status",
        Some(serde_json::json!({"repository": repo, "digest": digest, "status": "ARCHIVED"})),
    );
}

/// The deletions a record lists with `outcome`.
fn deletions<'a>(record: &'a Value, outcome: &str) -> Vec<&'a Value> {
    record["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "delete" && a["outcome"] == outcome)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_active_task_definition_naming_the_index_keeps_it_though_nothing_runs_it() {
    let repo = unique("gate-task-definition");
    create_repository(&repo, false);
    let p = push_buildx(&repo, "v1", &["linux/arm64"], "gate-task-definition");
    let arn = task_definition(&repo.replace('/', "-"), &uri(&repo, &p.index));

    let mut dry = DELETE_NOW.to_vec();
    dry.push("--dry-run");
    let planned = remediate(&repo, &p.index, "v1", &dry, &KEEP_OFF);
    assert!(
        deletions(&planned, "planned").is_empty(),
        "the dry run plans no deletion: {planned}"
    );
    let r = remediate(&repo, &p.index, "v1", &DELETE_NOW, &KEEP_OFF);
    assert_eq!(r["outcome"], "remediated", "{r}");
    assert_eq!(tags(&repo).await["v1"], p.runnable(), "the tag deploys");
    let kept = skip_of(&r, &p.index).expect("the index is kept");
    assert_eq!(kept["reason"], "in_use", "{r}");
    assert_eq!(kept["by"][0]["kind"], "ecs_task_definition", "{r}");
    assert!(kept["by"][0]["name"].as_str().unwrap().starts_with(&arn), "{r}");
    assert_eq!(r["deleted"], 0, "{r}");
    let listing = list(&repo).await;
    assert!(present(&listing, &p.index) && present(&listing, p.attestation()));

    // Deregistered (INACTIVE, nothing runs it): the leftover goes.
    deregister(&arn);
    let (_, summary) = sweep(&repo, &CLEAN_NOW, &KEEP_OFF);
    assert_eq!(summary["manifests_deleted"], 2, "the control case: {summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archived_signature_keeps_its_index_on_the_push_path_and_from_retirement() {
    // The per-push path: the index is signed (the signature archived since),
    // so promote falls back to tag mode and nothing is deleted.
    let repo = unique("gate-archived-push");
    create_repository(&repo, false);
    let p = push_buildx(&repo, "v1", &["linux/arm64"], "gate-archived-push");
    let signature = attach(&repo, &p.index, "notation");
    archive(&repo, signature["digest"].as_str().unwrap());
    let r = remediate(&repo, &p.index, "v1", &DELETE_NOW, &KEEP_OFF);
    assert_eq!(r["signing"]["index"][0]["kind"], "notation", "{r}");
    assert_eq!(skip_of(&r, &p.index).unwrap()["reason"], "index_signed", "{r}");
    assert_eq!(
        tags(&repo).await["v1"],
        p.index,
        "verification by tag still finds the index"
    );
    assert_eq!(r["deleted"], 0, "{r}");
    assert!(present(&list(&repo).await, &p.index));

    // Retirement: the kept index whose signature is archived stays.
    let repo = unique("gate-archived-retire");
    let pushed = kept(&repo, "gate-archived-retire").await;
    let signature = attach(&repo, &pushed[0].index, "notation");
    archive(&repo, signature["digest"].as_str().unwrap());
    let args = [
        "--mode",
        "promote",
        "--retire-kept-indexes",
        "--min-age",
        "0s",
        "--grace-period",
        "0s",
    ];
    let (records, summary) = sweep(&repo, &args, &KEEP_OFF);
    assert_eq!(summary["kept_indexes_retired"], 2, "the two unsigned ones: {summary}");
    assert_eq!(tags(&repo).await["v1-index"], pushed[0].index, "the signed one stays");
    let signed = records.iter().find(|r| r["index_digest"] == pushed[0].index).unwrap();
    assert_eq!(signed["code"], "has_referrers", "{signed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_is_retired_only_on_evidence_that_a_remediation_kept_it() {
    let repo = unique("gate-retire-evidence");
    let pushed = kept(&repo, "gate-retire-evidence").await;
    // A user's own indexes whose tags merely look like keep tags.
    let search = push_buildx(&repo, "search-index", &["linux/arm64"], "gate-search");
    let nightly = push_buildx(&repo, "nightly-prev", &["linux/arm64"], "gate-nightly");
    // A kept index the user also tagged with a keep-shaped tag of their own.
    retag(&repo, &pushed[2].index, "release-index");
    let mut env = KEEP_OFF.to_vec();
    env.push(("ECR_REMEDIATOR_KEEP_TAG_HISTORY", "{tag}-prev"));
    let args = [
        "--mode",
        "promote",
        "--retire-kept-indexes",
        "--min-age",
        "0s",
        "--grace-period",
        "0s",
    ];

    let mut dry = args.to_vec();
    dry.push("--dry-run");
    let (planned, _) = sweep(&repo, &dry, &env);
    let (records, summary) = sweep(&repo, &args, &env);
    assert_eq!(
        summary["kept_indexes_retired"], 2,
        "the two this service kept and nobody else tagged: {summary}"
    );
    let planned_deletions: usize = planned.iter().map(|r| deletions(r, "planned").len()).sum();
    let applied: usize = records.iter().map(|r| deletions(r, "applied").len()).sum();
    assert_eq!(planned_deletions, applied, "the dry run plans the real run's deletions");
    let t = tags(&repo).await;
    assert_eq!(t["search-index"], search.index, "{t:?}");
    assert_eq!(t["nightly-prev"], nightly.index, "{t:?}");
    for p in [&search, &nightly] {
        let r = records.iter().find(|r| r["index_digest"] == p.index).unwrap();
        assert_eq!(r["code"], "not_kept_by_us", "{r}");
    }
    let listing = list(&repo).await;
    for p in &pushed[..2] {
        assert!(!present(&listing, &p.index), "a kept index is retired");
    }
    let mine = records.iter().find(|r| r["index_digest"] == pushed[2].index).unwrap();
    assert_eq!(mine["code"], "still_tagged", "{mine}");
    assert_eq!(t["release-index"], pushed[2].index, "the user's tag and its index stay");
    assert_eq!(t["v3-index"], pushed[2].index);
}

/// Makes everything `p` pushed two hours old (`imagePushedAt`).
fn two_hours_old(repo: &str, p: &Pushed) {
    for d in std::iter::once(&p.index).chain(&p.children) {
        emulator().control(
            "POST",
            "age",
            Some(serde_json::json!({"repository": repo, "digest": d, "seconds": 7200})),
        );
    }
}

/// Puts `digest`'s manifest back under `tag` (a rollback by re-tag).
fn retag(repo: &str, digest: &str, tag: &str) {
    python_script(&format!(
        "import boto3\n\
         ecr = boto3.client('ecr')\n\
         types = ['application/vnd.oci.image.index.v1+json', 'application/vnd.docker.distribution.manifest.list.v2+json']\n\
         img = ecr.batch_get_image(repositoryName='{repo}', imageIds=[{{'imageDigest': '{digest}'}}], acceptedMediaTypes=types)['images'][0]\n\
         ecr.put_image(repositoryName='{repo}', imageManifest=img['imageManifest'], imageManifestMediaType=img['imageManifestMediaType'], imageTag='{tag}')"
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_tag_waits_for_the_grace_period_from_when_the_tag_arrived() {
    let repo = unique("gate-retag");
    create_repository(&repo, false);
    let old = push_buildx(&repo, "v1", &["linux/arm64"], "gate-retag-1");
    two_hours_old(&repo, &old);
    push_buildx(&repo, "v1", &["linux/arm64"], "gate-retag-2");
    // The rollback: v1 back on the index pushed two hours ago.
    retag(&repo, &old.index, "v1");
    assert_eq!(tags(&repo).await["v1"], old.index);

    // The default grace period (15 minutes), from now: nothing deleted.
    let promote = ["--mode", "promote", "--delete-orphans"];
    let r = remediate(&repo, &old.index, "v1", &promote, &KEEP_OFF);
    assert_eq!(r["outcome"], "remediated", "{r}");
    assert_eq!(tags(&repo).await["v1"], old.runnable(), "the tag deploys");
    assert_eq!(r["deleted"], 0, "{r}");
    let deferred = r["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["reason"] == "grace_period")
        .count();
    assert_eq!(deferred, 2, "the index and its attestation wait: {r}");
    let listing = list(&repo).await;
    assert!(present(&listing, &old.index) && present(&listing, old.attestation()));

    // Through an event, the same: the event's time says when the tag came.
    let repo = unique("gate-retag-event");
    create_repository(&repo, false);
    let old = push_buildx(&repo, "v1", &["linux/arm64"], "gate-retag-event-1");
    two_hours_old(&repo, &old);
    let sqs = aws_sdk_sqs::Client::new(&sdk_config().await);
    let queue = create_queue(&sqs, &format!("{}-q", repo.replace('/', "-"))).await;
    sqs.send_message()
        .queue_url(&queue)
        .message_body(push_event(&repo, &old.index, "v1", OCI_INDEX))
        .send()
        .await
        .unwrap();
    let out = serve_until_idle(&queue, &["--delete-orphans"])
        .env("ECR_REMEDIATOR_KEEP_TAG", "false")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{log}");
    let listing = list(&repo).await;
    assert!(present(&listing, &old.index), "deferred, not deleted:\n{log}");
    assert!(log.contains("grace_period"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signature_pushed_during_the_workload_scan_keeps_the_index() {
    let repo = unique("gate-scan-race");
    create_repository(&repo, false);
    let p = push_buildx(&repo, "v1", &["linux/arm64"], "gate-scan-race");
    // A slow workload scan: four seconds in ListClusters.
    emulator().control(
        "POST",
        "faults",
        Some(serde_json::json!({"operation": "ecs:ListClusters", "latency_ms": 4000})),
    );
    let mut args = vec![
        "remediate",
        "--repository",
        &repo,
        "--image-digest",
        &p.index,
        "--image-tag",
        "v1",
        "--output",
        "json",
    ];
    args.extend_from_slice(&DELETE_NOW);
    let scans = || {
        emulator().control("GET", "calls", None)["ecs:ListClusters"]
            .as_u64()
            .unwrap_or(0)
    };
    let scans_before = scans();
    let mut command = cli(&args);
    command.env("ECR_REMEDIATOR_KEEP_TAG", "false");
    let child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once the deletion's evidence is read (its pull time), the scan starts:
    // sign the index in the middle of it.
    let started = std::time::Instant::now();
    while (emulator().calls(&repo).get("ecr:DescribeImages").copied().unwrap_or(0) == 0 || scans() == scans_before)
        && started.elapsed() < std::time::Duration::from_secs(20)
    {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    let signature = attach(&repo, &p.index, "notation");
    let out = child.wait_with_output().unwrap();
    emulator().control(
        "POST",
        "faults",
        Some(serde_json::json!({"operation": "ecs:ListClusters"})),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_str(&stdout).unwrap();
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(4),
        "the scan was slow"
    );
    let listing = list(&repo).await;
    assert!(present(&listing, &p.index), "the signed index stays: {r}");
    assert!(present(&listing, p.attestation()), "and what it lists: {r}");
    assert!(present(&listing, signature["digest"].as_str().unwrap()));
    assert_eq!(r["deleted"], 0, "{r}");
    let kept = deletions(&r, "skipped");
    assert!(
        kept.iter()
            .any(|a| a["digest"] == p.index && a["reason"].as_str().unwrap().starts_with("has_referrers")),
        "the record says what kept it, right before deleting: {r}"
    );
}

/// Issue 34, item 9: `undo` puts the tag back on the kept index by its
/// exact bytes (the same digest), says what it would do first, refuses
/// while the repository would be promoted again, and when the tag has
/// moved on since.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undo_puts_the_tag_back_on_the_kept_index_by_its_exact_bytes() {
    let repo = unique("undo");
    create_repository(&repo, false);
    let p = push_buildx(&repo, "v1", &["linux/arm64"], "undo");
    let r = remediate(&repo, &p.index, "v1", &["--mode", "promote"], &[]);
    assert_eq!(r["outcome"], "remediated", "{r}");
    assert_eq!(tags(&repo).await["v1"], p.runnable());
    let undo = |extra: &[&str]| {
        let mut args = vec!["undo", "--repository", &repo, "--image-tag", "v1", "--output", "json"];
        args.extend_from_slice(extra);
        let (code, out, err) = run_cli(&args, &[]);
        let record: Value = serde_json::from_str(out.trim()).unwrap_or(Value::Null);
        (code, record, err)
    };

    // The repository would be promoted again: refused, nothing changed.
    let (code, record, err) = undo(&[]);
    assert_eq!(code, 1, "{record}\n{err}");
    assert_eq!(record["code"], "would_remediate_again", "{record}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert_eq!(tags(&repo).await["v1"], p.runnable());

    // The run's own --mode cannot speak for the deployed service.
    let (code, out, err) = run_cli(
        &["undo", "--repository", &repo, "--image-tag", "v1", "--mode", "tag"],
        &[],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("undo takes no --mode"), "{err}");

    // Opted out: the dry run shows the move and writes nothing.
    tag_repository(&repo, "ecr-remediator:mode", "off");
    let (code, record, err) = undo(&["--dry-run"]);
    assert_eq!(code, 0, "{record}\n{err}");
    assert_eq!(record["actions"][0]["action"], "move_tag", "{record}");
    assert_eq!(record["actions"][0]["outcome"], "planned", "{record}");
    assert_eq!(tags(&repo).await["v1"], p.runnable(), "a dry run writes nothing");

    // For real: the same digest as pushed, the keep tag still there.
    let (code, record, err) = undo(&[]);
    assert_eq!(code, 0, "{record}\n{err}");
    assert_eq!(record["outcome"], "remediated", "{record}");
    assert_eq!(record["index_digest"], p.index.as_str(), "{record}");
    let t = tags(&repo).await;
    assert_eq!(t["v1"], p.index, "the tag names the original index digest again");
    assert_eq!(t["v1-index"], p.index);
    // Again: nothing to undo.
    let (code, record, _) = undo(&[]);
    assert_eq!(code, 0, "{record}");
    assert_eq!(record["outcome"], "noop", "{record}");

    // A newer push moved the tag on: never moved back.
    let newer = push_buildx(&repo, "v1", &["linux/arm64"], "undo-newer");
    let (code, record, err) = undo(&[]);
    assert_eq!(code, 1, "{record}\n{err}");
    assert_eq!(record["code"], "moved_on", "{record}");
    assert_eq!(tags(&repo).await["v1"], newer.index);
}
