//! What a plan does to the registry: one write or deletion, with why.
//!
//! Shared by the planner (which makes actions), the repository view (which
//! replays them with ECR's rules) and the applier (which executes them).

use std::fmt;

use serde::{Serialize, Serializer};

use crate::oci::digest::Digest;
use crate::oci::manifest::RawManifest;
use crate::oci::names::ImageTag;

/// Why a tag is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TagRole {
    /// The tag that was pushed (moved by promote and strip).
    Pushed,
    /// A per-platform tag derived from the template.
    Derived,
    /// The tag keeping a replaced index reachable.
    Keep,
}

/// What is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeleteRole {
    /// The remediated index, left untagged by the plan.
    Index,
    /// An attestation manifest nothing references any more.
    Attestation,
    /// An index an earlier run kept under a keep tag, retired on request
    /// (`sweep --retire-kept-indexes`): its keep tags go with it.
    KeptIndex,
}

/// One write to the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Give an image a tag that does not exist yet.
    AddTag {
        /// The tag.
        tag: ImageTag,
        /// The image.
        digest: Digest,
        /// Why.
        role: TagRole,
    },
    /// Move an existing tag to another image.
    MoveTag {
        /// The tag.
        tag: ImageTag,
        /// Where it points now.
        from: Digest,
        /// Where it will point.
        to: Digest,
        /// Why.
        role: TagRole,
    },
    /// Store a new index (strip mode) under the pushed tag.
    PutIndex {
        /// The tag it gets.
        tag: ImageTag,
        /// The new index, bytes included.
        #[serde(rename = "digest", serialize_with = "manifest_digest")]
        manifest: Box<RawManifest>,
        /// The index it replaces.
        replaces: Digest,
    },
    /// Store an attestation's referrer copy (untagged): the same statements
    /// with `subject` = the image they describe (see [`crate::oci::referrer`]).
    PutReferrer {
        /// The copy, bytes included.
        #[serde(rename = "digest", serialize_with = "manifest_digest")]
        manifest: Box<RawManifest>,
        /// The image it is attached to.
        subject: Digest,
        /// The attestation it copies.
        attestation: Digest,
        /// In-toto predicate types of its statements.
        predicate_types: Vec<String>,
    },
    /// Delete an image by digest.
    Delete {
        /// The image.
        digest: Digest,
        /// Why.
        role: DeleteRole,
        /// The tags the deletion removes with it (a retired kept index's keep
        /// tags). Empty for every other deletion: the image must be untagged,
        /// and any tag found on it right before deleting keeps it.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        removes_tags: Vec<ImageTag>,
    },
}

crate::vocabulary::vocabulary! {
    /// The kind of an [`Action`]: its `action` field in the record, and what
    /// `audit --action` names.
    pub enum ActionKind {
        /// [`Action::AddTag`].
        AddTag = "add_tag",
        /// [`Action::MoveTag`].
        MoveTag = "move_tag",
        /// [`Action::PutIndex`].
        PutIndex = "put_index",
        /// [`Action::PutReferrer`].
        PutReferrer = "put_referrer",
        /// [`Action::Delete`].
        Delete = "delete",
    }
}

#[allow(clippy::borrowed_box)] // the signature serde's `serialize_with` calls
fn manifest_digest<S: Serializer>(m: &Box<RawManifest>, s: S) -> Result<S::Ok, S::Error> {
    m.digest().serialize(s)
}

impl Action {
    /// Its kind.
    pub fn kind(&self) -> ActionKind {
        match self {
            Action::AddTag { .. } => ActionKind::AddTag,
            Action::MoveTag { .. } => ActionKind::MoveTag,
            Action::PutIndex { .. } => ActionKind::PutIndex,
            Action::PutReferrer { .. } => ActionKind::PutReferrer,
            Action::Delete { .. } => ActionKind::Delete,
        }
    }

    /// The image this action writes to or deletes.
    pub fn target(&self) -> &Digest {
        match self {
            Action::AddTag { digest, .. } | Action::Delete { digest, .. } => digest,
            Action::MoveTag { to, .. } => to,
            Action::PutIndex { manifest, .. } | Action::PutReferrer { manifest, .. } => manifest.digest(),
        }
    }

    /// The tag this action writes, if it writes one.
    pub fn tag(&self) -> Option<&ImageTag> {
        match self {
            Action::AddTag { tag, .. } | Action::MoveTag { tag, .. } | Action::PutIndex { tag, .. } => Some(tag),
            Action::PutReferrer { .. } | Action::Delete { .. } => None,
        }
    }

    /// True for [`Action::Delete`].
    pub fn is_delete(&self) -> bool {
        matches!(self, Action::Delete { .. })
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::AddTag { tag, digest, .. } => write!(f, "tag {digest} as {tag}"),
            Action::MoveTag { tag, from, to, .. } => write!(f, "move {tag} from {from} to {to}"),
            Action::PutIndex {
                tag,
                manifest,
                replaces,
            } => {
                write!(f, "put index {} as {tag}, replacing {replaces}", manifest.digest())
            }
            Action::PutReferrer {
                manifest,
                subject,
                attestation,
                ..
            } => write!(
                f,
                "attach referrer {} (copy of {attestation}) to {subject}",
                manifest.digest()
            ),
            Action::Delete {
                digest,
                role,
                removes_tags,
            } => {
                let what = match role {
                    DeleteRole::Index => "index",
                    DeleteRole::Attestation => "attestation",
                    DeleteRole::KeptIndex => "kept index",
                };
                write!(f, "delete {what} {digest}")?;
                if !removes_tags.is_empty() {
                    let t: Vec<&str> = removes_tags.iter().map(ImageTag::as_str).collect();
                    write!(f, " with its keep tag(s) {}", t.join(", "))?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocabulary::{Vocabulary, assert_serde_agrees};

    #[test]
    fn every_action_is_recorded_under_its_kind() {
        let d = Digest::sha256_of(b"x");
        let t = ImageTag::parse("v1").unwrap_or_else(|e| panic!("{e}"));
        let m = Box::new(
            RawManifest::parse(
                br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#.to_vec(),
                None,
            )
            .unwrap_or_else(|e| panic!("{e}")),
        );
        let actions = [
            Action::AddTag {
                tag: t.clone(),
                digest: d.clone(),
                role: TagRole::Derived,
            },
            Action::MoveTag {
                tag: t.clone(),
                from: d.clone(),
                to: d.clone(),
                role: TagRole::Pushed,
            },
            Action::PutIndex {
                tag: t,
                manifest: m.clone(),
                replaces: d.clone(),
            },
            Action::PutReferrer {
                manifest: m,
                subject: d.clone(),
                attestation: d.clone(),
                predicate_types: Vec::new(),
            },
            Action::Delete {
                digest: d,
                role: DeleteRole::Index,
                removes_tags: Vec::new(),
            },
        ];
        let kinds: Vec<ActionKind> = actions.iter().map(Action::kind).collect();
        assert_eq!(kinds, ActionKind::ALL, "one action of each kind, in order");
        for a in &actions {
            let written = serde_json::to_value(a).unwrap_or_default();
            assert_eq!(written["action"].as_str(), Some(a.kind().as_str()), "{a:?}");
        }
        assert_serde_agrees::<ActionKind>();
        assert_eq!(ActionKind::from_word("move-tag"), Some(ActionKind::MoveTag));
    }
}
