//! Tests of [`super`] (test code only: it is compiled under `#[cfg(test)]`).
#![cfg(test)]

use super::*;
use crate::policy::PolicySet;

fn info(media_type: &str, tags: &[&str], pushed: i64) -> ImageInfo {
    ImageInfo {
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        pushed_at_ms: Some(pushed),
        media_type: Some(media_type.to_owned()),
        artifact_media_type: None,
        size_bytes: Some(100),
        subject: None,
        last_pulled_ms: None,
    }
}

const INDEX: &str = "application/vnd.oci.image.index.v1+json";
const IMAGE: &str = "application/vnd.oci.image.manifest.v1+json";

#[test]
fn tagged_indexes_are_handled_oldest_first_and_keep_tags_count_as_done() {
    let policy = PolicySet::default().default;
    let d = |n: u8| Digest::sha256_of(&[n]);
    let sig = format!("sha256-{}.sig", d(2).hex());
    let listing = vec![
        (d(1), info(INDEX, &["v2"], 20)),
        (d(2), info(INDEX, &["v1", "latest"], 10)),
        (d(3), info(INDEX, &["v0-index"], 5)),
        (d(4), info(INDEX, &[], 1)),
        (d(5), info(IMAGE, &["plain"], 1)),
        (d(6), info(IMAGE, &[sig.as_str()], 1)),
    ];
    let plan = select(&listing, &policy, &Selection::default());
    let jobs: Vec<(Digest, &str)> = plan.jobs.iter().map(|(d, t)| (d.clone(), t.as_str())).collect();
    assert_eq!(jobs, vec![(d(2), "latest"), (d(2), "v1"), (d(1), "v2")]);
    assert_eq!(plan.indexes_seen, 4);
    assert_eq!(plan.already_fine, 1);
    assert_eq!(plan.untouched[&Untouched::UntaggedIndex], 1);
    assert_eq!(plan.untouched[&Untouched::Signature], 1);
    let since = select(
        &listing,
        &policy,
        &Selection {
            since_ms: Some(15),
            tag: Some(Glob::parse_tag("v*").unwrap()),
            ..Selection::default()
        },
    );
    assert_eq!(since.jobs, vec![(d(1), ImageTag::parse("v2").unwrap())]);
}

fn raw(v: &serde_json::Value) -> crate::oci::manifest::RawManifest {
    crate::oci::manifest::RawManifest::parse(serde_json::to_vec(v).unwrap(), None).unwrap()
}

/// An index of one runnable image and one legacy attestation.
fn index(image: &Digest, att: &Digest) -> crate::oci::manifest::RawManifest {
    raw(&serde_json::json!({
        "schemaVersion": 2, "mediaType": INDEX,
        "manifests": [
            {"mediaType": IMAGE, "digest": image.to_string(), "size": 1,
             "platform": {"os": "linux", "architecture": "arm64"}},
            {"mediaType": IMAGE, "digest": att.to_string(), "size": 1,
             "platform": {"os": "unknown", "architecture": "unknown"},
             "annotations": {"vnd.docker.reference.type": "attestation-manifest",
                             "vnd.docker.reference.digest": image.to_string()}}
        ]
    }))
}

#[test]
fn cleanup_picks_remediation_leftovers_and_orphans_and_says_why_it_leaves_the_rest() {
    use crate::oci::classify::classify;
    let d = |n: u8| Digest::sha256_of(&[n]);
    let now = 10_000_000;
    let old = now - 7_200_000;
    let att = |subject: Option<Digest>| ManifestKind::Attestation {
        subject,
        predicate_types: vec![],
    };
    // 1: untagged index whose image (2) is tagged: a leftover; 3 its attestation.
    let leftover = index(&d(2), &d(3));
    // 4: untagged index whose image (5) is untagged: superseded; 6 its attestation.
    let superseded = index(&d(5), &d(6));
    // 7: untagged index listed by the tagged index 8.
    let nested = index(&d(2), &d(9));
    let outer = raw(&serde_json::json!({
        "schemaVersion": 2, "mediaType": INDEX,
        "manifests": [{"mediaType": INDEX, "digest": nested.digest().to_string(), "size": 1}]
    }));
    let listing = vec![
        (leftover.digest().clone(), info(INDEX, &[], old)),
        (d(2), info(IMAGE, &["v1"], old)),
        (d(3), info(IMAGE, &[], old)),
        (superseded.digest().clone(), info(INDEX, &[], old)),
        (d(5), info(IMAGE, &[], old)),
        (d(6), info(IMAGE, &[], old)),
        (nested.digest().clone(), info(INDEX, &[], old)),
        (d(9), info(IMAGE, &[], old)),
        (outer.digest().clone(), info(INDEX, &["nested"], old)),
        // Unlisted: an orphan, a young orphan, an attached referrer, a runnable.
        (d(10), info(IMAGE, &[], old)),
        (d(11), info(IMAGE, &[], now - 1000)),
        (d(12), info(IMAGE, &[], old)),
        (d(13), info(IMAGE, &[], old)),
    ];
    let mut refs = References::default();
    for (m, tagged) in [
        (&leftover, false),
        (&superseded, false),
        (&nested, false),
        (&outer, true),
    ] {
        refs.add(m, &classify(m), tagged);
    }
    let mut want_read = unlisted(&listing, &refs);
    want_read.sort();
    let mut expected = vec![d(10), d(11), d(12), d(13)];
    expected.sort();
    assert_eq!(want_read, expected, "indexes' entries are not read again");
    let kinds: BTreeMap<Digest, ManifestKind> = [
        (d(10), att(None)),
        (d(11), att(None)),
        (d(12), att(Some(d(2)))),
        (d(13), ManifestKind::Image),
    ]
    .into_iter()
    .collect();
    let mut policy = PolicySet::default().default;
    policy.mode = Mode::Promote;
    policy.delete_orphans = true;
    policy.keep_tag = None;
    let selection = Selection::default();
    assert!(cleanup_enabled(&policy, &selection));
    let got = select_cleanup(&listing, &refs, &kinds, &policy, &selection, now);
    let mut want = vec![leftover.digest().clone(), d(10)];
    want.sort();
    assert_eq!(got.jobs, want, "same push time: digest order");
    let untouched: Vec<(Untouched, usize)> = got.untouched.into_iter().collect();
    assert_eq!(
        untouched,
        vec![
            (Untouched::ReferencedIndex, 1),
            (Untouched::SupersededIndex, 1),
            (Untouched::RecentLeftover, 1),
            (Untouched::AttachedReferrer, 1),
        ]
    );
    // With a keep tag, untagged indexes are never a remediation's leftover.
    policy.keep_tag = PolicySet::default().default.keep_tag;
    let got = select_cleanup(&listing, &refs, &kinds, &policy, &selection, now);
    assert_eq!(got.jobs, vec![d(10)]);
    assert_eq!(got.untouched[&Untouched::UntaggedIndex], 2);
    // A tag filter turns cleanup off; an unreadable index turns orphan search off.
    let filtered = Selection {
        tag: Some(Glob::parse_tag("v*").unwrap()),
        ..Selection::default()
    };
    assert!(!cleanup_enabled(&policy, &filtered));
    refs.add_unreadable();
    assert!(unlisted(&listing, &refs).is_empty());
}
