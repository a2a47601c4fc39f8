//! A short-lived cache of repositories' resource tags, so a burst of pushes
//! to one repository costs one `ListTagsForResource`, and a changed tag takes
//! effect within [`REPOSITORY_TAG_TTL`].

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::oci::names::RepositoryName;

/// How long a repository's tags are trusted once read.
pub const REPOSITORY_TAG_TTL: Duration = Duration::from_secs(60);

/// Most repositories remembered; past it, the cache starts afresh (bounded
/// memory in a long-lived worker, at the cost of a few extra reads).
pub const MAX_CACHED_REPOSITORIES: usize = 10_000;

#[derive(Debug, Clone)]
struct Entry {
    arn: String,
    tags: Option<(Instant, BTreeMap<String, String>)>,
}

/// Repository → its ARN (kept; it never changes for a name) and its tags
/// (kept for [`REPOSITORY_TAG_TTL`]).
#[derive(Debug, Default)]
pub struct TagCache {
    entries: HashMap<RepositoryName, Entry>,
}

impl TagCache {
    /// The repository's tags, if read less than the TTL before `now`.
    pub fn fresh(&self, repository: &RepositoryName, now: Instant) -> Option<&BTreeMap<String, String>> {
        let (at, tags) = self.entries.get(repository)?.tags.as_ref()?;
        (now.saturating_duration_since(*at) < REPOSITORY_TAG_TTL).then_some(tags)
    }

    /// The repository's ARN, if known.
    pub fn arn(&self, repository: &RepositoryName) -> Option<&str> {
        self.entries.get(repository).map(|e| e.arn.as_str())
    }

    /// Remembers the repository's ARN and the tags read at `now`.
    pub fn store(&mut self, repository: &RepositoryName, arn: String, tags: BTreeMap<String, String>, now: Instant) {
        if self.entries.len() >= MAX_CACHED_REPOSITORIES && !self.entries.contains_key(repository) {
            self.entries.clear();
        }
        self.entries.insert(
            repository.clone(),
            Entry {
                arn,
                tags: Some((now, tags)),
            },
        );
    }

    /// Forgets the repository (it was not found: it may be created again
    /// with another ARN's tags).
    pub fn forget(&mut self, repository: &RepositoryName) {
        self.entries.remove(repository);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(s: &str) -> RepositoryName {
        RepositoryName::parse(&format!("repo-{s}")).unwrap()
    }

    #[test]
    fn tags_expire_and_arns_stay() {
        let mut c = TagCache::default();
        let t0 = Instant::now();
        let tags = BTreeMap::from([("ecr-remediator:mode".to_owned(), "off".to_owned())]);
        assert!(c.fresh(&repo("a"), t0).is_none());
        c.store(&repo("a"), "arn:a".to_owned(), tags.clone(), t0);
        assert_eq!(c.fresh(&repo("a"), t0 + Duration::from_secs(59)), Some(&tags));
        assert!(c.fresh(&repo("a"), t0 + REPOSITORY_TAG_TTL).is_none(), "expired");
        assert_eq!(c.arn(&repo("a")), Some("arn:a"), "the ARN outlives the tags");
        assert!(c.fresh(&repo("b"), t0).is_none());
        c.forget(&repo("a"));
        assert!(c.arn(&repo("a")).is_none());
    }

    #[test]
    fn memory_is_bounded() {
        let mut c = TagCache::default();
        let now = Instant::now();
        for i in 0..=MAX_CACHED_REPOSITORIES {
            c.store(&repo(&format!("r{i}")), format!("arn:{i}"), BTreeMap::new(), now);
        }
        assert!(c.entries.len() <= MAX_CACHED_REPOSITORIES);
        assert!(c.fresh(&repo(&format!("r{MAX_CACHED_REPOSITORIES}")), now).is_some());
    }
}
