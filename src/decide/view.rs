//! A pure model of one ECR repository's state, as far as the planner needs it.
//!
//! [`RepositoryView`] records which images exist, their tags and which
//! children each index references. [`RepositoryView::apply`] replays a plan
//! action with ECR's semantics (a tag moves, an index cannot be stored before
//! its children, a referenced child cannot be deleted), which lets the planner
//! reason about "after the plan" and lets tests check plans without a
//! registry.

use std::collections::{BTreeMap, BTreeSet};

use crate::decide::action::Action;
use crate::decide::usage::InUse;
use crate::oci::companion::Companion;
use crate::oci::digest::Digest;
use crate::oci::names::ImageTag;
use crate::oci::signature::{Referrer, Signature};

/// What is known of a repository.
///
/// Images absent from the view are *unknown*, not necessarily absent from
/// the registry; the planner never deletes or tags what it does not know.
/// The view is partial by design (the service reads a constant amount per
/// push, never the whole repository): references it does not know of are
/// enforced by ECR itself at delete time (`ImageReferencedByManifestList`),
/// and tags it does not know of are re-read right before any deletion.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepositoryView {
    images: BTreeMap<Digest, BTreeSet<ImageTag>>,
    tags: BTreeMap<ImageTag, Digest>,
    indexes: BTreeMap<Digest, Vec<Digest>>,
    kinds: BTreeMap<Digest, Held>,
    subjects: BTreeMap<Digest, Digest>,
    companions: BTreeMap<Digest, Vec<(Companion, ImageTag)>>,
    listed_referrers: BTreeMap<Digest, Vec<Referrer>>,
    unreadable_tags: BTreeMap<ImageTag, String>,
    pulls: BTreeMap<Digest, Option<i64>>,
    pushed: BTreeMap<Digest, i64>,
    in_use: Option<Result<std::sync::Arc<InUse>, String>>,
}

/// What is attached to a manifest from outside any index: what
/// `ListImageReferrers` lists for it (signatures, SBOMs, attestations with
/// its digest as `subject`) and the companion tags other tools give it
/// (see [`crate::oci::companion`]). Known only once read; a manifest whose
/// attachments were not read is never deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attachments {
    /// Manifests whose `subject` is this one, as the registry listed them.
    pub referrers: Vec<Referrer>,
    /// Its companion tags that exist, and what holds each.
    pub companion_tags: Vec<(Companion, ImageTag)>,
}

impl Attachments {
    /// True when nothing is attached.
    pub fn is_empty(&self) -> bool {
        self.referrers.is_empty() && self.companion_tags.is_empty()
    }

    /// The referrers' digests.
    pub fn referrer_digests(&self) -> Vec<Digest> {
        self.referrers.iter().map(|r| r.digest.clone()).collect()
    }

    /// What signs the manifest: its cosign `.sig` companion tag and the
    /// referrers whose artifact type is a signature format.
    pub fn signatures(&self) -> Vec<Signature> {
        let tags = self
            .companion_tags
            .iter()
            .filter(|(c, _)| *c == Companion::Signature)
            .map(|(_, t)| Signature::tag(t));
        let referrers = self
            .referrers
            .iter()
            .filter_map(|r| r.signature.map(|k| Signature::referrer(k, &r.digest)));
        tags.chain(referrers).collect()
    }
}

/// What kind of manifest an image is, as far as tag ownership goes: the
/// service only ever puts a derived tag on a runnable image manifest and a
/// keep tag on an index, so a tag held by anything else is not one it wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Held {
    /// An image index or manifest list.
    Index,
    /// A runnable image manifest.
    Runnable,
    /// Anything else (attestation, signature, artifact).
    Other,
}

/// A state change that ECR would refuse (or that contradicts the view).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ViewError {
    /// One tag on two images.
    #[error("tag {tag} is given to both {first} and {second}")]
    DuplicateTag {
        /// The tag.
        tag: ImageTag,
        /// First holder.
        first: Digest,
        /// Second holder.
        second: Digest,
    },
    /// The image is not in the view.
    #[error("image {0} is not in the repository")]
    ImageNotFound(Digest),
    /// `ReferencedImagesNotFoundException`.
    #[error("index {index} refers to {missing}, which is not in the repository")]
    ReferencedImagesNotFound {
        /// The index being stored.
        index: Digest,
        /// A missing child.
        missing: Digest,
    },
    /// `ImageReferencedByManifestList`.
    #[error("{child} is referenced by index {index}")]
    ImageReferencedByManifestList {
        /// The image being deleted.
        child: Digest,
        /// An index referring to it.
        index: Digest,
    },
}

impl RepositoryView {
    /// An empty view.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records what kind of manifest `digest` is.
    pub fn set_kind(&mut self, digest: &Digest, kind: Held) {
        self.images.entry(digest.clone()).or_default();
        self.kinds.insert(digest.clone(), kind);
    }

    /// The kind of a known image, when it was recorded.
    pub fn kind_of(&self, digest: &Digest) -> Option<Held> {
        self.kinds.get(digest).copied()
    }

    /// Records that `digest` is an OCI referrer of `subject` (its manifest's
    /// `subject` field, or `DescribeImages`' `subjectManifestDigest`).
    pub fn set_subject(&mut self, digest: &Digest, subject: &Digest) {
        self.subjects.insert(digest.clone(), subject.clone());
    }

    /// The OCI subject of a known manifest, when it has one.
    pub fn subject_of(&self, digest: &Digest) -> Option<&Digest> {
        self.subjects.get(digest)
    }

    /// Records which companion tags of `digest` exist (all of them were read).
    pub fn set_companion_tags(&mut self, digest: &Digest, found: Vec<(Companion, ImageTag)>) {
        self.companions.insert(digest.clone(), found);
    }

    /// Forgets what is attached to `digest` (before reading it again: what
    /// is not read again is then unknown, and keeps it).
    pub fn forget_attachments(&mut self, digest: &Digest) {
        self.companions.remove(digest);
        self.listed_referrers.remove(digest);
    }

    /// True when the companion tags of `digest` were read.
    pub fn companion_tags_read(&self, digest: &Digest) -> bool {
        self.companions.contains_key(digest)
    }

    /// Records what `ListImageReferrers` lists for `digest`.
    pub fn set_listed_referrers(&mut self, digest: &Digest, referrers: Vec<Referrer>) {
        self.listed_referrers.insert(digest.clone(), referrers);
    }

    /// Records what is attached to `digest` (both its companion tags and its
    /// listed referrers), as read from the registry.
    pub fn set_attachments(&mut self, digest: &Digest, attachments: Attachments) {
        self.set_companion_tags(digest, attachments.companion_tags);
        self.set_listed_referrers(digest, attachments.referrers);
    }

    /// What is attached to `digest`: `None` unless both its companion tags
    /// and its referrers were read.
    pub fn attachments(&self, digest: &Digest) -> Option<Attachments> {
        let companion_tags = self.companions.get(digest)?.clone();
        let referrers = self.listed_referrers.get(digest)?.clone();
        Some(Attachments {
            referrers,
            companion_tags,
        })
    }

    /// Records when the registry last recorded a pull of `digest`
    /// (`lastRecordedPullTime`, ms; `None`: never), as read.
    pub fn set_pull_time(&mut self, digest: &Digest, pulled_at_ms: Option<i64>) {
        self.pulls.insert(digest.clone(), pulled_at_ms);
    }

    /// When `digest` was last pulled: `None` when not read, `Some(None)` when
    /// the registry has no pull on record.
    pub fn pull_time(&self, digest: &Digest) -> Option<Option<i64>> {
        self.pulls.get(digest).copied()
    }

    /// Records when `digest` was pushed (ms), as read.
    pub fn set_pushed_at(&mut self, digest: &Digest, pushed_at_ms: i64) {
        self.pushed.insert(digest.clone(), pushed_at_ms);
    }

    /// When `digest` was pushed, if read.
    pub fn pushed_at(&self, digest: &Digest) -> Option<i64> {
        self.pushed.get(digest).copied()
    }

    /// Records what the scan of the account's workloads found, or why it failed.
    pub fn set_in_use(&mut self, scan: Result<std::sync::Arc<InUse>, String>) {
        self.in_use = Some(scan);
    }

    /// What the workload scan found: `None` when not read.
    pub fn in_use(&self) -> Option<&Result<std::sync::Arc<InUse>, String>> {
        self.in_use.as_ref()
    }

    /// Records that `tag` exists but what holds it could not be read (an
    /// archived image, a failure the registry reported): it is never taken.
    pub fn set_unreadable_tag(&mut self, tag: ImageTag, why: String) {
        self.unreadable_tags.insert(tag, why);
    }

    /// Why the holder of `tag` could not be read, when it could not.
    pub fn unreadable_tag(&self, tag: &ImageTag) -> Option<&str> {
        self.unreadable_tags.get(tag).map(String::as_str)
    }

    /// Records an image and its tags (adding to any already recorded).
    pub fn insert_image(&mut self, digest: Digest, tags: impl IntoIterator<Item = ImageTag>) -> Result<(), ViewError> {
        let entry = self.images.entry(digest.clone()).or_default();
        for tag in tags {
            if let Some(holder) = self.tags.get(&tag)
                && *holder != digest
            {
                return Err(ViewError::DuplicateTag {
                    tag,
                    first: holder.clone(),
                    second: digest,
                });
            }
            self.tags.insert(tag.clone(), digest.clone());
            entry.insert(tag);
        }
        Ok(())
    }

    /// Sets the tags of `digest` to exactly `tags`, as the registry reported
    /// them just now (a tag it held before and no longer holds is gone; a
    /// tag another image held before moved here).
    pub fn replace_tags(&mut self, digest: &Digest, tags: impl IntoIterator<Item = ImageTag>) {
        if let Some(old) = self.images.insert(digest.clone(), BTreeSet::new()) {
            for t in old {
                if self.tags.get(&t) == Some(digest) {
                    self.tags.remove(&t);
                }
            }
        }
        for t in tags {
            self.put_tag(&t, digest);
        }
    }

    /// Records that `index` refers to `children` (and that it is an index).
    pub fn insert_index(&mut self, index: Digest, children: Vec<Digest>) {
        self.images.entry(index.clone()).or_default();
        self.kinds.insert(index.clone(), Held::Index);
        self.indexes.insert(index, children);
    }

    /// True when the image is known to exist.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.images.contains_key(digest)
    }

    /// The image's tags, if the image is known.
    pub fn tags_of(&self, digest: &Digest) -> Option<&BTreeSet<ImageTag>> {
        self.images.get(digest)
    }

    /// The image a tag points to, if the tag is known.
    pub fn tag_target(&self, tag: &ImageTag) -> Option<&Digest> {
        self.tags.get(tag)
    }

    /// Known indexes (other than `except`) that refer to `digest`.
    pub fn referrers(&self, digest: &Digest, except: Option<&Digest>) -> Vec<Digest> {
        self.indexes
            .iter()
            .filter(|(idx, children)| Some(*idx) != except && children.contains(digest))
            .map(|(idx, _)| idx.clone())
            .collect()
    }

    /// Every known image and its tags.
    pub fn images(&self) -> impl Iterator<Item = (&Digest, &BTreeSet<ImageTag>)> {
        self.images.iter()
    }

    /// Children of a known index.
    pub fn children_of(&self, index: &Digest) -> Option<&[Digest]> {
        self.indexes.get(index).map(Vec::as_slice)
    }

    /// Removes `tag` from whatever holds it (as deleting its holder with it does).
    pub fn remove_tag(&mut self, tag: &ImageTag) {
        if let Some(holder) = self.tags.remove(tag)
            && let Some(t) = self.images.get_mut(&holder)
        {
            t.remove(tag);
        }
    }

    fn put_tag(&mut self, tag: &ImageTag, digest: &Digest) {
        if let Some(prev) = self.tags.insert(tag.clone(), digest.clone())
            && let Some(t) = self.images.get_mut(&prev)
        {
            t.remove(tag);
        }
        self.images.entry(digest.clone()).or_default().insert(tag.clone());
    }

    /// Applies one action with ECR's semantics.
    pub fn apply(&mut self, action: &Action) -> Result<(), ViewError> {
        match action {
            Action::AddTag { tag, digest, .. } | Action::MoveTag { tag, to: digest, .. } => {
                if !self.contains(digest) {
                    return Err(ViewError::ImageNotFound(digest.clone()));
                }
                self.put_tag(tag, digest);
            }
            Action::PutIndex { tag, manifest, .. } => {
                let digest = manifest.digest().clone();
                let children: Vec<Digest> = manifest.entries().iter().map(|d| d.digest.clone()).collect();
                if let Some(missing) = children.iter().find(|c| !self.contains(c)) {
                    return Err(ViewError::ReferencedImagesNotFound {
                        index: digest,
                        missing: missing.clone(),
                    });
                }
                self.insert_index(digest.clone(), children);
                self.put_tag(tag, &digest);
            }
            Action::PutReferrer { manifest, subject, .. } => {
                // An untagged artifact; ECR accepts a subject it does not hold yet.
                let d = manifest.digest().clone();
                self.images.entry(d.clone()).or_default();
                self.kinds.insert(d.clone(), Held::Other);
                self.subjects.insert(d.clone(), subject.clone());
                if let Some(listed) = self.listed_referrers.get_mut(subject)
                    && !listed.iter().any(|r| r.digest == d)
                {
                    // Our copies are attestations, never signatures.
                    listed.push(Referrer::new(d, None));
                }
            }
            Action::Delete { digest, .. } => {
                if !self.contains(digest) {
                    return Err(ViewError::ImageNotFound(digest.clone()));
                }
                if let Some(index) = self.referrers(digest, Some(digest)).into_iter().next() {
                    return Err(ViewError::ImageReferencedByManifestList {
                        child: digest.clone(),
                        index,
                    });
                }
                if let Some(tags) = self.images.remove(digest) {
                    for t in tags {
                        self.tags.remove(&t);
                    }
                }
                self.indexes.remove(digest);
                self.kinds.remove(digest);
                self.subjects.remove(digest);
                self.companions.remove(digest);
                self.listed_referrers.remove(digest);
            }
        }
        Ok(())
    }
}
