//! `ecr-remediator sweep` against the emulator: a registry of pushes made
//! before the service existed ends in the state the per-push path would
//! have left; a second sweep writes nothing; a dry run writes nothing; an
//! interrupted sweep, run again, finishes without repeating writes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::collections::BTreeMap;

use ecr_remediator::Delivery;
use harness::*;
use serde_json::Value;

/// The same pushes (same salts, so the same digests) into `repo`.
fn seed(repo: &str, immutable: bool) -> Vec<(String, Pushed)> {
    create_repository(repo, immutable);
    let mut out = Vec::new();
    for (tag, platforms, options) in [
        ("v1", vec!["linux/arm64"], vec![]),
        (
            "v2",
            vec!["linux/arm64"],
            vec!["--attestation-format", "artifact", "--sbom"],
        ),
        ("v3", vec!["linux/amd64", "linux/arm64"], vec![]),
        (
            "v4",
            vec!["linux/arm64"],
            vec!["--extra", "soci", "--extra", "signature", "--extra", "nested"],
        ),
    ] {
        let pushed = push_buildx_with(repo, tag, &platforms, &format!("sweep-{tag}"), &options);
        out.push((tag.to_owned(), pushed));
    }
    // Count only what the service calls from here on.
    emulator().clear_calls(repo);
    out
}

fn sweep(args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["sweep"];
    all.extend_from_slice(args);
    let out = cli(&all).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn puts(repo: &str) -> u64 {
    emulator().calls(repo).get("ecr:PutImage").copied().unwrap_or(0)
}

/// Per image (index, tag): what the run attempted (a real run) or planned
/// (a dry run), as `kind tag target`, sorted.
fn attempted(stdout: &str) -> BTreeMap<(String, String), Vec<String>> {
    let mut out: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for line in stdout.lines().filter(|l| l.starts_with("{\"schema\"")) {
        let r: Value = serde_json::from_str(line).unwrap();
        let key = (
            r["index_digest"].as_str().unwrap_or_default().to_owned(),
            r["tag"].as_str().unwrap_or_default().to_owned(),
        );
        let mut acts: Vec<String> = r["actions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["outcome"] != "already")
            .map(|a| {
                let target = a.get("to").or_else(|| a.get("digest")).unwrap();
                format!("{} {} {}", a["action"], a.get("tag").unwrap_or(&Value::Null), target)
            })
            .collect();
        acts.sort();
        out.insert(key, acts);
    }
    out
}

/// The summary counts a dry run must predict.
fn counts(s: &Value) -> Vec<(&'static str, Value)> {
    [
        "remediated",
        "already_fine",
        "already_fine_by_keep_tag",
        "skipped",
        "failed",
        "manifests_deleted",
        "bytes_reclaimed",
        "images_handled",
    ]
    .into_iter()
    .map(|k| (k, s[k].clone()))
    .collect()
}

fn summary(stdout: &str) -> Value {
    let last = stdout.lines().last().unwrap();
    serde_json::from_str::<Value>(last).unwrap()["summary"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_leaves_the_registry_as_the_per_push_path_would() {
    let swept = unique("swept");
    let pushed = unique("pushed");
    let pushes = seed(&swept, false);
    seed(&pushed, false);
    let policy = [("ECR_REMEDIATOR_MODE", "promote")];

    // Dry run first: the report, nothing written.
    let before = tags(&swept).await;
    let (code, out, err) = sweep(&["--repository", &swept, "--mode", "promote", "--dry-run"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("images handled        4"), "{out}");
    assert!(out.contains("dry run: nothing was written"), "{out}");
    assert!(out.contains("would remediate       4"), "{out}");
    assert!(out.contains("move v1 -> "), "each image's planned actions: {out}");
    let (_, dry_json, _) = sweep(&[
        "--repository",
        &swept,
        "--mode",
        "promote",
        "--dry-run",
        "--output",
        "json",
    ]);
    assert_eq!(puts(&swept), 0, "a dry run writes nothing");
    assert_eq!(tags(&swept).await, before);

    // The per-push path on the twin repository.
    let h = handler(&policy).await;
    for (tag, p) in &pushes {
        h.handle_text(&push_event(&pushed, &p.index, tag, OCI_INDEX), Delivery::default())
            .await
            .unwrap();
    }
    let (code, out, err) = sweep(&["--repository", &swept, "--mode", "promote", "--output", "json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let records: Vec<Value> = out
        .lines()
        .filter(|l| l.starts_with("{\"schema\""))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 4, "{out}");
    assert!(records.iter().all(|r| r["trigger"] == "sweep"), "{out}");
    let s = summary(&out);
    assert_eq!(s["remediated"], 4, "{s}");
    // The dry run said exactly this: the same actions per image, the same counts.
    assert_eq!(attempted(&dry_json), attempted(&out));
    assert_eq!(counts(&summary(&dry_json)), counts(&s));
    assert_eq!(summary(&dry_json)["dry_run"], true);
    assert_eq!(s["failed"], 0);
    assert_eq!(s["repositories_scanned"], 1);
    // v4's nested index is listed by v4's index and untagged: reported, not touched.
    assert_eq!(s["not_touched"]["untagged_index"], 1, "{s}");
    assert_eq!(s["indexes_seen"], 5, "{s}");
    assert_eq!(
        tags(&swept).await,
        tags(&pushed).await,
        "same end state as the per-push path"
    );
    let t = tags(&swept).await;
    assert_eq!(t["v1"], pushes[0].1.runnable());
    assert_eq!(t["v1-index"], pushes[0].1.index);
    assert_eq!(
        t["v3"], pushes[2].1.index,
        "two platforms and no promote_platform: tag mode"
    );
    assert!(t.contains_key("v3-linux-amd64") && t.contains_key("v3-linux-arm64"));

    // A second sweep finds everything done and writes nothing; its dry run
    // predicts the same counts, those known from the listing alone included.
    let writes = puts(&swept);
    let (_, dry_again, _) = sweep(&[
        "--repository",
        &swept,
        "--mode",
        "promote",
        "--dry-run",
        "--output",
        "json",
    ]);
    let (code, out, _) = sweep(&["--repository", &swept, "--mode", "promote", "--output", "json"]);
    assert_eq!(code, 0);
    let s = summary(&out);
    assert_eq!(counts(&summary(&dry_again)), counts(&s));
    assert_eq!(s["remediated"], 0, "{s}");
    assert_eq!(puts(&swept), writes, "the second sweep wrote something");
    // v1, v2 and v4 were promoted: their indexes carry only keep tags, so
    // they are fine from the listing alone; v3 (tag mode) is read again.
    assert_eq!(s["already_fine"], 4, "{s}");
    assert_eq!(s["already_fine_by_keep_tag"], 3, "{s}");
    assert_eq!(s["images_handled"], 1, "{s}");
    let (_, table, _) = sweep(&["--repository", &swept, "--mode", "promote"]);
    assert!(
        table.contains("already fine          4  (3 known by their keep tag alone, not read again)"),
        "the table says why fewer images were handled than are fine: {table}"
    );

    // A prefix nothing starts with (a typo) is said on stderr, not only as zeros.
    let typo = format!("{swept}-typo/");
    let (code, out, err) = sweep(&["--repository-prefix", &typo]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("repositories scanned  0"), "{out}");
    assert!(
        err.contains(&format!(
            "has no repository whose name starts with {typo} in this region"
        )),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_immutable_repositories_and_the_table_report() {
    let repo = unique("sweep-delete");
    let pushes = seed(&repo, false);
    let (code, out, err) = sweep(&[
        "--repository-prefix",
        &repo,
        "--mode",
        "strip",
        "--delete-orphans",
        "--grace-period",
        "0s",
        "--tag",
        "v[12]*",
        "--dry-run",
    ]);
    // A glob's set: v1 and v2 are selected (a dry run, so the rest of the test starts untouched).
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("images handled        2"), "{out}");
    let with_keep_off = |args: &[&str]| {
        let mut all = vec!["sweep"];
        all.extend_from_slice(args);
        let out = cli(&all).env("ECR_REMEDIATOR_KEEP_TAG", "false").output().unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = with_keep_off(&[
        "--repository",
        &repo,
        "--mode",
        "strip",
        "--delete-orphans",
        "--grace-period",
        "0s",
        "--tag",
        "v?",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("REPOSITORY") && out.contains("remediated"), "{out}");
    assert!(out.contains("not touched"), "{out}");
    let remaining: Vec<String> = list(&repo).await.into_iter().map(|l| l.digest).collect();
    for (tag, p) in &pushes {
        assert!(!remaining.contains(&p.index), "the stripped-away index is deleted");
        if tag == "v2" {
            // BuildKit's artifact form names its image as subject: attached
            // to it, never an orphan.
            assert!(
                remaining.contains(&p.attestation().to_owned()),
                "{tag}: provenance kept"
            );
            assert_eq!(referrer_digests(&repo, p.runnable()), vec![p.attestation().to_owned()]);
        } else {
            assert!(
                !remaining.contains(&p.attestation().to_owned()),
                "{tag}: its attestation too"
            );
        }
        assert!(remaining.contains(&p.runnable().to_owned()));
    }
    let bytes: Vec<&str> = out.lines().filter(|l| l.starts_with("bytes reclaimed")).collect();
    assert!(!bytes[0].ends_with(" 0"), "{out}");

    let immutable = unique("sweep-immutable");
    let pushes = seed(&immutable, true);
    let (code, out, err) = sweep(&["--repository", &immutable, "--mode", "promote", "--output", "json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let t = tags(&immutable).await;
    assert_eq!(t["v1"], pushes[0].1.index, "an immutable tag never moves");
    assert_eq!(t["v1-linux-arm64"], pushes[0].1.runnable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_sweep_run_again_finishes_without_repeating_writes() {
    let repo = unique("sweep-resume");
    let pushes = seed(&repo, false);
    // Slow reads, so the first run is interrupted half way.
    emulator().control(
        "POST",
        "faults",
        Some(serde_json::json!({"operation": "BatchGetImage", "repository": repo, "latency_ms": 400})),
    );
    let mut child = cli(&["sweep", "--repository", &repo, "--mode", "promote"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Each image takes three reads (1.2 s); stop during the third.
    std::thread::sleep(std::time::Duration::from_millis(3000));
    child.kill().unwrap();
    child.wait().unwrap();
    emulator().control(
        "POST",
        "faults",
        Some(serde_json::json!({"operation": "BatchGetImage", "repository": repo})),
    );
    let first = puts(&repo);
    assert!(first > 0, "the first run wrote nothing before it was stopped");
    let (code, out, err) = sweep(&["--repository", &repo, "--mode", "promote", "--output", "json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let t = tags(&repo).await;
    for (tag, p) in &pushes[..2] {
        assert_eq!(t[tag.as_str()], p.runnable());
        assert_eq!(t[&format!("{tag}-index")], p.index);
    }
    // Writes in all: 2 per promoted image (keep tag + move) and 2 derived tags
    // for the two-platform index: nothing written twice.
    let expected_writes: u64 = 2 + 2 + 2 + 2;
    assert_eq!(puts(&repo), expected_writes, "a write was repeated");
    let records: BTreeMap<String, String> = out
        .lines()
        .filter(|l| l.starts_with("{\"schema\""))
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|r| {
            (
                r["tag"].as_str().unwrap().to_owned(),
                r["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    // What the first run finished is seen as done from the listing (its
    // index holds only the keep tag) and not handled again.
    assert!(records.len() < 4, "{records:?}");
    assert!(summary(&out)["already_fine"].as_u64().unwrap() >= 1, "{out}");
}

async fn delete_by_hand(repo: &str, digest: &str) {
    let ecr = aws_sdk_ecr::Client::new(&sdk_config().await);
    let reply = ecr
        .batch_delete_image()
        .repository_name(repo)
        .image_ids(
            aws_sdk_ecr::types::ImageIdentifier::builder()
                .image_digest(digest)
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert!(reply.failures().is_empty(), "{:?}", reply.failures());
}

fn sweep_keep_off(args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["sweep"];
    all.extend_from_slice(args);
    let out = cli(&all).env("ECR_REMEDIATOR_KEEP_TAG", "false").output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftovers_of_earlier_runs_and_orphaned_attestations_are_cleaned_up_and_nothing_else() {
    let repo = unique("sweep-leftovers");
    create_repository(&repo, false);
    // Remediated before deletion was enabled: promote, keep tag off.
    let h = handler(&[("ECR_REMEDIATOR_MODE", "promote"), ("ECR_REMEDIATOR_KEEP_TAG", "false")]).await;
    let remediate = |p: &Pushed, tag: &str| {
        let event = push_event(&repo, &p.index, tag, OCI_INDEX);
        let h = &h;
        async move {
            h.handle_text(&event, Delivery::default()).await.unwrap();
        }
    };
    let v1 = push_buildx(&repo, "v1", &["linux/arm64"], "left-v1");
    remediate(&v1, "v1").await;
    let v2 = push_buildx_with(
        &repo,
        "v2",
        &["linux/arm64"],
        "left-v2",
        &["--attestation-format", "artifact", "--sbom"],
    );
    remediate(&v2, "v2").await;
    // A superseded push: v4 pushed twice, the first index and image untagged.
    let superseded = push_buildx(&repo, "v4", &["linux/arm64"], "superseded-1");
    let v4 = push_buildx(&repo, "v4", &["linux/arm64"], "superseded-2");
    remediate(&v4, "v4").await;
    // A leftover listing a nested index (which lists v5's image).
    let v5 = push_buildx_with(&repo, "v5", &["linux/arm64"], "nested", &["--extra", "nested"]);
    remediate(&v5, "v5").await;
    let nested_index = list(&repo)
        .await
        .into_iter()
        .find(|l| v5.children.contains(&l.digest) && l.media_type == OCI_INDEX)
        .unwrap()
        .digest;
    let t = tags(&repo).await;
    for (tag, p) in [("v1", &v1), ("v2", &v2), ("v4", &v4), ("v5", &v5)] {
        assert_eq!(t[tag], p.runnable(), "the setup promoted {tag}");
    }
    // An index deleted by hand leaves its attestation orphaned.
    let orphaned = push_buildx(&repo, "v3", &["linux/arm64"], "orphaned");
    delete_by_hand(&repo, &orphaned.index).await;
    let before = list(&repo).await;
    emulator().clear_calls(&repo);
    let policy = [
        "--repository",
        repo.as_str(),
        "--mode",
        "promote",
        "--delete-orphans",
        "--grace-period",
        "0s",
    ];

    // Fresh leftovers are younger than the default minimum age: reported, kept.
    let (code, out, err) = sweep_keep_off(&policy);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("leftover younger than the minimum age 5"), "{out}");
    assert_eq!(list(&repo).await.len(), before.len(), "nothing deleted");

    // A dry run with no minimum age: the report, nothing deleted.
    let mut args = policy.to_vec();
    args.extend(["--min-age", "0s", "--dry-run", "--output", "json"]);
    let (code, dry_out, err) = sweep_keep_off(&args);
    assert_eq!(code, 0, "{dry_out}\n{err}");
    let dry = summary(&dry_out);
    assert_eq!(dry["leftovers_handled"], 5, "{dry}");
    assert_eq!(list(&repo).await.len(), before.len(), "a dry run deletes nothing");

    let mut args = policy.to_vec();
    args.extend(["--min-age", "0s", "--output", "json"]);
    let (code, out, err) = sweep_keep_off(&args);
    assert_eq!(code, 0, "{out}\n{err}");
    let s = summary(&out);
    assert_eq!(s["leftovers_handled"], 5, "{s}");
    assert_eq!(s["failed"], 0, "{s}");
    // The dry run predicted it: the same deletions, the same counts and bytes.
    assert_eq!(attempted(&dry_out), attempted(&out));
    assert_eq!(counts(&dry), counts(&s));
    assert_eq!(s["not_touched"]["superseded_index"], 1, "{s}");
    assert_eq!(s["not_touched"]["referenced_index"], 1, "{s}");
    assert!(s["bytes_reclaimed"].as_i64().unwrap() > 0, "{s}");
    let records: Vec<Value> = out
        .lines()
        .filter(|l| l.starts_with("{\"schema\""))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 5, "one record per leftover: {out}");
    assert!(
        records
            .iter()
            .all(|r| r["trigger"] == "sweep" && r["outcome"] == "remediated"),
        "{out}"
    );
    let after: Vec<String> = list(&repo).await.into_iter().map(|l| l.digest).collect();
    for p in [&v1, &v2, &v4, &v5] {
        assert!(!after.contains(&p.index), "the leftover index is deleted");
        assert!(after.contains(&p.runnable().to_owned()), "never the image");
    }
    for p in [&v1, &v4] {
        for c in &p.children[1..] {
            assert!(!after.contains(c), "its attestations too");
        }
    }
    // v2's attestation (BuildKit's artifact form) is attached to its image:
    // the index goes, the provenance stays, listed for the image.
    assert!(after.contains(&v2.attestation().to_owned()), "attached provenance kept");
    assert_eq!(
        referrer_digests(&repo, v2.runnable()),
        vec![v2.attestation().to_owned()]
    );
    assert!(
        !after.contains(&orphaned.attestation().to_owned()),
        "the orphan is deleted"
    );
    assert!(after.contains(&orphaned.runnable().to_owned()));
    assert!(after.contains(&superseded.index), "a superseded push is not a leftover");
    assert!(after.contains(&superseded.attestation().to_owned()));
    assert!(after.contains(&nested_index), "listed when the sweep read the registry");

    // The next sweep finds the nested index its parent's deletion freed (its
    // image is tagged), and the one after finds nothing.
    let (code, out, _) = sweep_keep_off(&args);
    assert_eq!(code, 0);
    let s = summary(&out);
    assert_eq!(s["leftovers_handled"], 1, "{s}");
    assert_eq!(s["manifests_deleted"], 1, "{s}");
    assert!(!list(&repo).await.iter().any(|l| l.digest == nested_index));
    let (code, out, _) = sweep_keep_off(&args);
    assert_eq!(code, 0);
    let s = summary(&out);
    assert_eq!(s["leftovers_handled"], 0, "{s}");
    assert_eq!(s["manifests_deleted"], 0, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_that_does_not_exist_is_named_once_in_the_error() {
    let missing = unique("no-such-repository");
    let (code, out, err) = sweep(&["--repository", &missing, "--output", "json"]);
    assert_eq!(code, 1, "{out}\n{err}");
    let errors = &summary(&out)["repository_errors"];
    let said = errors[&missing].as_str().unwrap_or_default();
    assert!(
        said.contains(&format!("repository {missing} does not exist")),
        "{errors}"
    );
    assert_eq!(
        said.matches(&missing).count(),
        1,
        "named once, not the service's message: {said}"
    );
}

/// Text as a person reads it off a terminal: escape sequences removed,
/// split into the frames that carriage returns and newlines separate.
fn frames(raw: &str) -> Vec<String> {
    let mut text = String::new();
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                // Parameters, then one final byte in @..~.
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            text.push('\n');
        } else {
            text.push(c);
        }
    }
    text.split(['\r', '\n'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The sweep as a person sees it (issue 21): run under a pseudo-terminal
/// (`script`), stderr shows a progress line that never counts past its
/// total, and the report on stdout (redirected to a file) is plain text;
/// piped, stderr carries no progress line and no escape sequence at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_progress_line_is_drawn_on_a_terminal_only() {
    let repo = unique("sweep-tty");
    seed(&repo, false);
    let dir = std::env::temp_dir().join(unique("sweep-tty-out"));
    std::fs::create_dir_all(&dir).unwrap();
    let stdout_file = dir.join("stdout.txt");
    let line = format!(
        "'{}' sweep --repository '{repo}' --mode tag --dry-run > '{}'",
        env!("CARGO_BIN_EXE_ecr-remediator"),
        stdout_file.display()
    );
    // cli()'s environment (emulator endpoint, test credentials), for `script`.
    let env = cli(&[]);
    let mut script = std::process::Command::new("script");
    script.args(["--quiet", "--return", "--command", &line, "/dev/null"]);
    for (k, v) in env.get_envs() {
        match v {
            Some(v) => script.env(k, v),
            None => script.env_remove(k),
        };
    }
    let out = script.stdin(std::process::Stdio::null()).output().unwrap();
    let terminal = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{terminal}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let drawn: Vec<(u64, u64)> = frames(&terminal)
        .iter()
        .filter_map(|f| {
            let counts = f.split("images ").nth(1)?.split_whitespace().next()?;
            let (pos, len) = counts.split_once('/')?;
            Some((pos.parse().ok()?, len.parse().ok()?))
        })
        .collect();
    assert!(!drawn.is_empty(), "a terminal sees the progress line: {terminal:?}");
    assert!(
        drawn.iter().all(|(pos, len)| pos <= len),
        "never past its total: {drawn:?}"
    );
    let report = std::fs::read_to_string(&stdout_file).unwrap();
    assert!(report.contains("would remediate"), "{report}");
    assert!(!report.contains('\u{1b}'), "the report is plain text: {report:?}");
    assert!(!report.contains(" ETA "), "no progress in the report: {report}");

    let (code, piped_out, piped_err) = sweep(&["--repository", &repo, "--mode", "tag", "--dry-run"]);
    assert_eq!(code, 0, "{piped_err}");
    assert_eq!(piped_out, report, "the same report whether stderr is a terminal or not");
    assert!(
        !piped_err.contains('\u{1b}') && !piped_err.contains(" ETA "),
        "{piped_err:?}"
    );
}

/// Issue 22: the sweep counts the images Lambda would refuse among those it
/// makes deployable by a tag, and says why in the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_counts_images_lambda_would_refuse() {
    let repo = unique("sweep-lambda");
    create_repository(&repo, false);
    push_buildx(&repo, "linux", &["linux/arm64"], "sweep-lambda-1");
    push_buildx(&repo, "win", &["windows/amd64"], "sweep-lambda-2");
    let (code, out, err) = sweep(&[
        "--repository",
        &repo,
        "--mode",
        "promote",
        "--dry-run",
        "--output",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let (records, summary) = sweep_json(&out);
    assert_eq!(summary["lambda_would_refuse"], 1, "{summary}");
    assert_eq!(summary["lambda_unknown"], 0, "{summary}");
    let win = records.iter().find(|r| r["tag"] == "win").unwrap();
    assert_eq!(win["deployability"][0]["reasons"][0]["rule"], "not_linux", "{win}");
    let (_, table, _) = sweep(&["--repository", &repo, "--mode", "promote", "--dry-run"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("Lambda would refuse") && l.ends_with(" 1")),
        "{table}"
    );
    assert!(table.contains("Lambda would refuse win: windows image"), "{table}");
}

/// Issue 34, items 3 to 6: a sweep says where it acted (every record, the
/// summary, the table's heading), its selectors combine, a repository left
/// alone by its tag is not reported as missing, and a dry run that handled
/// nothing still says it is one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_says_where_it_acted_and_its_selectors_combine() {
    let prefix = unique("where");
    let named = format!("{prefix}-one/app");
    let bulk = [format!("{prefix}-bulk/a"), format!("{prefix}-bulk/b")];
    for repo in std::iter::once(&named).chain(&bulk) {
        create_repository(repo, false);
        push_buildx(repo, "v1", &["linux/arm64"], repo);
    }
    let bulk_prefix = format!("{prefix}-bulk/");
    let (code, out, err) = sweep(&[
        "--repository",
        &named,
        "--repository-prefix",
        &bulk_prefix,
        "--dry-run",
        "--output",
        "json",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    let (records, summary) = sweep_json(&out);
    assert_eq!(
        summary["repositories_scanned"], 3,
        "the named one and both under the prefix: {summary}"
    );
    assert_eq!(summary["account"], ACCOUNT, "{summary}");
    assert_eq!(summary["region"], REGION, "{summary}");
    assert_eq!(records.len(), 3, "{out}");
    for r in &records {
        assert_eq!(r["account"], ACCOUNT, "{r}");
        assert_eq!(r["region"], REGION, "{r}");
    }

    // The table's heading says where, and that it is a dry run.
    let (code, out, _) = sweep(&["--repository", &named, "--dry-run"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.lines()
            .next()
            .unwrap()
            .contains(&format!("account {ACCOUNT} · region {REGION} · dry run")),
        "{out}"
    );

    // Nothing to handle: still a dry run, with dry-run words.
    let empty = format!("{prefix}-none/");
    let (code, out, err) = sweep(&["--repository-prefix", &empty, "--dry-run", "--output", "json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let (_, summary) = sweep_json(&out);
    assert_eq!(summary["dry_run"], true, "{summary}");
    assert!(err.contains("has no repository"), "a mistyped prefix is said: {err}");

    // A repository its tag leaves alone exists: no note says otherwise.
    let off = format!("{prefix}-off/app");
    create_repository(&off, false);
    tag_repository(&off, "ecr-remediator:mode", "off");
    let off_prefix = format!("{prefix}-off/");
    let (code, out, err) = sweep(&["--repository-prefix", &off_prefix, "--output", "json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let (_, summary) = sweep_json(&out);
    assert_eq!(
        summary["repositories_left_alone"].as_object().unwrap().len(),
        1,
        "{summary}"
    );
    assert!(!err.contains("has no repository"), "{err}");
}

/// Issue 34, item 2: a profile that reaches its account through IAM
/// Identity Center works once `aws sso login` has cached a token (here,
/// the token the emulator's portal was told to accept), even with other
/// keys in the environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sso_profile_with_a_cached_token_reaches_the_registry() {
    let home = std::env::temp_dir().join(format!("ecr-remediator-sso-{}", std::process::id()));
    let aws = home.join(".aws");
    std::fs::create_dir_all(aws.join("sso/cache")).unwrap();
    std::fs::write(
        aws.join("config"),
        format!(
            "[profile deployer]\nsso_session = corp\nsso_account_id = {ACCOUNT}\nsso_role_name = Deployer\n\
             region = {REGION}\n\n[sso-session corp]\nsso_start_url = https://corp.awsapps.com/start\n\
             sso_region = {REGION}\nsso_registration_scopes = sso:account:access\n"
        ),
    )
    .unwrap();
    let token = format!("sso-token-{}", std::process::id());
    // `aws sso login` caches the session's token under the SHA-1 of its name ("corp").
    std::fs::write(
        aws.join("sso/cache/ee0bfd2552fbd840c02cc48b6e823320543c450f.json"),
        serde_json::json!({
            "startUrl": "https://corp.awsapps.com/start", "region": REGION,
            "accessToken": token, "expiresAt": "2099-01-01T00:00:00Z"
        })
        .to_string(),
    )
    .unwrap();
    emulator().control(
        "POST",
        "sso-token",
        Some(serde_json::json!({"token": token, "account_id": ACCOUNT, "role_name": "Deployer"})),
    );
    let before = emulator().control("GET", "calls", None)["sso:GetRoleCredentials"]
        .as_u64()
        .unwrap_or(0);
    let prefix = format!("{}/", unique("sso-none"));
    let out = cli(&[
        "sweep",
        "--profile",
        "deployer",
        "--repository-prefix",
        &prefix,
        "--dry-run",
        "--output",
        "json",
    ])
    .env("HOME", &home)
    .env("AWS_CONFIG_FILE", aws.join("config"))
    .env("AWS_SHARED_CREDENTIALS_FILE", aws.join("credentials"))
    .output()
    .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let after = emulator().control("GET", "calls", None)["sso:GetRoleCredentials"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        after > before,
        "the profile's credentials came from the portal: {stderr}"
    );
    let (_, summary) = sweep_json(&stdout);
    assert_eq!(summary["account"], ACCOUNT, "{summary}");
}

/// Issue 34, item 8: a principal not on the registry's pull-time update
/// exclusion list is told, in one line with the fix, that what its run reads
/// counts as pulled (and so is kept from deletion); one on the list is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_whose_reads_count_as_pulls_is_told_how_to_stop_it() {
    let repo = unique("pull-exclusion");
    create_repository(&repo, false);
    let p = push_buildx(&repo, "v1", &["linux/arm64"], &repo);
    let user = repo.replace('/', "-");
    let keys: Value = serde_json::from_str(
        python_script(&format!(
            "import boto3, json\n\
             iam = boto3.client('iam')\n\
             iam.create_user(UserName='{user}')\n\
             k = iam.create_access_key(UserName='{user}')['AccessKey']\n\
             print(json.dumps({{'id': k['AccessKeyId'], 'secret': k['SecretAccessKey']}}))"
        ))
        .trim(),
    )
    .unwrap();
    let run = |id: &str, secret: &str| {
        let out = cli(&["sweep", "--repository", &repo, "--dry-run", "--output", "json"])
            .env("AWS_ACCESS_KEY_ID", id)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // The test user is on the list (as the stack's role is): no note.
    let err = run("testing", "testing");
    assert!(!err.contains("pull-time update exclusion"), "{err}");
    // Another user is not: told once, with the command that fixes it.
    let err = run(keys["id"].as_str().unwrap(), keys["secret"].as_str().unwrap());
    let notes: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("pull-time update exclusion list"))
        .collect();
    assert_eq!(notes.len(), 1, "{err}");
    assert!(
        notes[0].contains(&format!(
            "aws ecr register-pull-time-update-exclusion --principal-arn arn:aws:iam::{ACCOUNT}:user/{user}"
        )),
        "{err}"
    );
    // And it is so: that user's read made the index recently pulled.
    let pulled = python_script(&format!(
        "import boto3\n\
         d = boto3.client('ecr').describe_images(repositoryName='{repo}', imageIds=[{{'imageDigest': '{}'}}])\n\
         print('lastRecordedPullTime' in d['imageDetails'][0])",
        p.index
    ));
    assert_eq!(pulled.trim(), "True", "the read counted as a pull");
}

/// Issue 34, item 10: `inspect` reads from the registry what a tag or a
/// digest names, and gives the same report as for a file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_reads_what_a_tag_or_digest_names_from_the_registry() {
    let repo = unique("inspect");
    create_repository(&repo, false);
    let p = push_buildx(&repo, "v1", &["linux/arm64"], &repo);
    let inspect = |args: &[&str]| {
        let mut all = vec!["inspect", "--repository", &repo];
        all.extend_from_slice(args);
        let out = cli(&all).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = inspect(&["--image-tag", "v1"]);
    assert_eq!(code, 0, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["digest"], p.index.as_str(), "{report}");
    assert_eq!(report["kind"], "index", "{report}");
    assert_eq!(report["lambda"]["verdict"], "no", "{report}");
    let (code, out, err) = inspect(&["--image-digest", p.runnable(), "--platform", "linux/arm64"]);
    assert_eq!(code, 0, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["lambda"]["verdict"], "yes", "{report}");
    let (code, _, err) = inspect(&["--image-tag", "nope"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(&format!("{repo}:nope does not exist")), "{err}");
}

/// Issue 34, item 1: a `--profile` that assumes a role from a source
/// profile works (its STS call has a region and reaches the endpoint).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_profile_assumes_its_role() {
    let role = unique("deployer").replace('/', "-");
    python_script(&format!(
        "import boto3, json\n\
         trust = json.dumps({{'Version': '2012-10-17', 'Statement': [{{'Effect': 'Allow', 'Principal': {{'AWS': 'arn:aws:iam::{ACCOUNT}:root'}}, 'Action': 'sts:AssumeRole'}}]}})\n\
         boto3.client('iam').create_role(RoleName='{role}', AssumeRolePolicyDocument=trust)"
    ));
    let dir = std::env::temp_dir().join(format!("ecr-remediator-role-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("config"),
        format!(
            "[profile base]\nregion = {REGION}\n\n[profile deploy]\nrole_arn = arn:aws:iam::{ACCOUNT}:role/{role}\n\
             source_profile = base\nregion = {REGION}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("credentials"),
        "[base]\naws_access_key_id = testing\naws_secret_access_key = testing\n",
    )
    .unwrap();
    let assumed = || {
        emulator().control("GET", "calls", None)["sts:AssumeRole"]
            .as_u64()
            .unwrap_or(0)
    };
    let before = assumed();
    let prefix = format!("{}/", unique("role-none"));
    let out = cli(&[
        "sweep",
        "--profile",
        "deploy",
        "--repository-prefix",
        &prefix,
        "--dry-run",
        "--output",
        "json",
    ])
    .env("AWS_CONFIG_FILE", dir.join("config"))
    .env("AWS_SHARED_CREDENTIALS_FILE", dir.join("credentials"))
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(assumed() > before, "the role was assumed: {stderr}");
}
