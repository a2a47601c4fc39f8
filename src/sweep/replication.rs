//! ECR replication as a sweep sees it (pure): which destinations a
//! repository is replicated to, and how a destination drifted from its
//! source.
//!
//! ECR replicates pushes (this service's own writes included), never
//! deletions (ECR-FACTS §8). So a destination keeps every manifest its
//! source cleaned, and a tag moved in the destination alone (by a
//! deployment there, or by hand) stays moved. The sweep of a source
//! reports both, per destination it can read.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::engine::registry::ImageInfo;
pub use crate::engine::registry::{ReplicationDestination as Destination, ReplicationRule as Rule};
use crate::oci::digest::Digest;
use crate::oci::names::RepositoryName;

/// How many examples of each kind of drift a report keeps.
pub const EXAMPLES: usize = 5;

/// The destinations `repository` is replicated to under `rules`, each once.
pub fn destinations<'r>(rules: &'r [Rule], repository: &RepositoryName) -> Vec<&'r Destination> {
    let mut out: Vec<&Destination> = rules
        .iter()
        .filter(|r| r.prefixes.is_empty() || r.prefixes.iter().any(|p| repository.as_str().starts_with(p.as_str())))
        .flat_map(|r| &r.destinations)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// A tag that points at different manifests in the source and the destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TagDrift {
    /// The tag.
    pub tag: String,
    /// Its manifest in the source.
    pub source: Digest,
    /// Its manifest in the destination (`None`: the tag is missing there).
    pub destination: Option<Digest>,
}

/// How one destination differs from its source, for one repository.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Drift {
    /// Tags of the source that point elsewhere, or nowhere, in the destination.
    pub tags_differ: usize,
    /// Up to [`EXAMPLES`] of them.
    pub tag_examples: Vec<TagDrift>,
    /// Manifests only the destination holds: deleted in the source (ECR
    /// does not replicate deletions) or pushed to the destination directly.
    pub only_in_destination: usize,
    /// Their size as the destination reports it.
    pub only_in_destination_bytes: u64,
    /// Up to [`EXAMPLES`] of them.
    pub only_in_destination_examples: Vec<Digest>,
}

impl Drift {
    /// True when the destination holds what the source holds, tags included.
    pub fn is_empty(&self) -> bool {
        self.tags_differ == 0 && self.only_in_destination == 0
    }
}

/// Compares a destination's listing with its source's.
pub fn drift(source: &[(Digest, ImageInfo)], destination: &[(Digest, ImageInfo)]) -> Drift {
    let tags = |listing: &[(Digest, ImageInfo)]| -> BTreeMap<String, Digest> {
        listing
            .iter()
            .flat_map(|(d, info)| info.tags.iter().map(move |t| (t.clone(), d.clone())))
            .collect()
    };
    let (here, there) = (tags(source), tags(destination));
    let mut out = Drift::default();
    for (tag, digest) in &here {
        let theirs = there.get(tag);
        if theirs != Some(digest) {
            out.tags_differ += 1;
            if out.tag_examples.len() < EXAMPLES {
                out.tag_examples.push(TagDrift {
                    tag: tag.clone(),
                    source: digest.clone(),
                    destination: theirs.cloned(),
                });
            }
        }
    }
    let present: std::collections::BTreeSet<&Digest> = source.iter().map(|(d, _)| d).collect();
    for (digest, info) in destination {
        if !present.contains(digest) {
            out.only_in_destination += 1;
            out.only_in_destination_bytes += info.size_bytes.and_then(|s| u64::try_from(s).ok()).unwrap_or(0);
            if out.only_in_destination_examples.len() < EXAMPLES {
                out.only_in_destination_examples.push(digest.clone());
            }
        }
    }
    out
}

/// What a sweep reports about one destination of one repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DriftReport {
    /// The repository (the same name in both registries).
    pub repository: String,
    /// The destination.
    pub destination: Destination,
    /// How it differs (`None` when it could not be read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift: Option<Drift>,
    /// Why it could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreadable: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::names::AccountId;

    fn d(n: u8) -> Digest {
        Digest::parse(&format!("sha256:{}", format!("{n:02x}").repeat(32))).unwrap()
    }

    fn image(n: u8, tags: &[&str], size: i64) -> (Digest, ImageInfo) {
        (
            d(n),
            ImageInfo {
                tags: tags.iter().map(|t| (*t).to_owned()).collect(),
                size_bytes: Some(size),
                ..ImageInfo::default()
            },
        )
    }

    fn dest(region: &str) -> Destination {
        Destination {
            account: AccountId::parse("123456789012").unwrap(),
            region: region.to_owned(),
        }
    }

    #[test]
    fn a_replica_that_kept_what_the_source_deleted_and_a_tag_moved_there_is_reported() {
        // The source promoted v1 and deleted the index and its attestation;
        // the destination replicated the promotion, not the deletions; v2 was
        // moved in the destination alone; v3 never arrived there.
        let source = [image(1, &["v1"], 100), image(4, &["v2"], 10), image(6, &["v3"], 10)];
        let destination = [
            image(1, &["v1"], 100),
            image(2, &[], 30),
            image(3, &[], 7),
            image(4, &[], 10),
            image(5, &["v2"], 10),
        ];
        let got = drift(&source, &destination);
        assert_eq!(got.only_in_destination, 3);
        assert_eq!(got.only_in_destination_bytes, 47);
        assert_eq!(got.tags_differ, 2);
        assert_eq!(
            got.tag_examples,
            vec![
                TagDrift {
                    tag: "v2".into(),
                    source: d(4),
                    destination: Some(d(5))
                },
                TagDrift {
                    tag: "v3".into(),
                    source: d(6),
                    destination: None
                },
            ]
        );
        assert!(drift(&source, &source).is_empty());
    }

    #[test]
    fn examples_are_bounded_whatever_the_drift() {
        let destination: Vec<_> = (0..200).map(|n| image(n, &[], 1)).collect();
        let got = drift(&[], &destination);
        assert_eq!(got.only_in_destination, 200);
        assert_eq!(got.only_in_destination_examples.len(), EXAMPLES);
    }

    #[test]
    fn destinations_follow_the_prefix_filters_each_once() {
        let rules = [
            Rule {
                destinations: vec![dest("us-west-2")],
                prefixes: vec!["team/".into()],
            },
            Rule {
                destinations: vec![dest("us-west-2"), dest("eu-west-1")],
                prefixes: vec![],
            },
        ];
        let team = RepositoryName::parse("team/app").unwrap();
        let other = RepositoryName::parse("other/app").unwrap();
        assert_eq!(
            destinations(&rules, &team),
            vec![&dest("eu-west-1"), &dest("us-west-2")]
        );
        assert_eq!(destinations(&rules[..1], &other), Vec::<&Destination>::new());
    }
}
