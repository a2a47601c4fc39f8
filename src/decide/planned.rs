//! What a plan is: the writes in order, the tags they rely on, what was
//! skipped and why, and explanations. Made by [`crate::decide::plan()`] and its
//! helpers, replayed by the view, executed by the applier.

use serde::Serialize;

use crate::decide::action::Action;
use crate::decide::skip::{SkipReason, Skipped};
use crate::oci::digest::Digest;
use crate::oci::lambda::Verdict;
use crate::oci::manifest::Platform;
use crate::oci::names::ImageTag;
use crate::oci::signature::Signing;
use crate::policy::{Mode, Policy};

/// The result of planning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// The mode acted in (promote may fall back to tag).
    pub mode: Mode,
    /// The mode the policy asked for.
    pub requested_mode: Mode,
    /// Whether the policy is a dry run.
    pub dry_run: bool,
    /// Writes, in the order they must run.
    pub actions: Vec<Action>,
    /// Writes this plan would make that the read found already done (a
    /// redelivered event, or a handling that resumes an earlier one): the
    /// record lists them as `already`, so the trail accounts for every tag
    /// this service wrote whatever died before its record was written.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub in_place: Vec<Action>,
    /// Tags that must still point where they did at planning, besides the
    /// ones the writes themselves move (checked right before the writes).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub guards: Vec<(ImageTag, Digest)>,
    /// What was not done and why.
    pub skipped: Vec<Skipped>,
    /// Explanations (fallbacks, resumptions, settings without effect).
    pub notes: Vec<String>,
    /// When deletions wait for the grace period after the push: the instant
    /// (ms since the epoch) a follow-up may attempt them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deferred_until_ms: Option<i64>,
    /// For a promotion (or one refused because of signatures): what signs
    /// the index and what signs the image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing: Option<Signing>,
    /// The images this plan makes deployable by a tag (the promoted image,
    /// or each image given a derived tag), with Lambda's verdict on each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deployability: Vec<Deployable>,
}

/// An image a plan makes deployable by a tag, and whether Lambda would take it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Deployable {
    /// The tag that deploys it.
    pub tag: ImageTag,
    /// The image manifest.
    pub digest: Digest,
    /// Its platform, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Lambda's verdict (`verdict`: yes, no with `reasons`, unknown with `unchecked`).
    #[serde(flatten)]
    pub verdict: Verdict,
}

impl Plan {
    pub(crate) fn new(policy: &Policy) -> Self {
        Plan {
            mode: policy.mode,
            requested_mode: policy.mode,
            dry_run: policy.dry_run,
            actions: Vec::new(),
            in_place: Vec::new(),
            guards: Vec::new(),
            skipped: Vec::new(),
            notes: Vec::new(),
            deferred_until_ms: None,
            signing: None,
            deployability: Vec::new(),
        }
    }

    /// True when the plan has no write.
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }

    /// The reason the whole plan was skipped, if it was.
    pub fn halted(&self) -> Option<&SkipReason> {
        self.skipped
            .iter()
            .find(|s| s.action.is_none() && s.digest.is_none())
            .map(|s| &s.reason)
    }

    pub(crate) fn halt(mut self, reason: SkipReason) -> Self {
        self.actions.clear();
        self.guards.clear();
        self.skipped.push(Skipped {
            action: None,
            digest: None,
            reason,
        });
        self
    }

    pub(crate) fn skip_entry(&mut self, digest: &Digest, reason: SkipReason) {
        self.skipped.push(Skipped {
            action: None,
            digest: Some(digest.clone()),
            reason,
        });
    }
}
