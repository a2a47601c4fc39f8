//! Undoing a promotion (`ecr-remediator undo`): the pushed tag back on the
//! index a remediation kept under a keep tag, by that index's exact bytes
//! (so its digest, and every signature made on it, still match). Pure; the
//! write goes through the applier like every other (checkpoint record,
//! the tag re-read right before `PutImage`).
//!
//! It refuses when the tag has moved on since the promotion (it names
//! something no remediation of the kept index made: a newer push), and
//! when the repository's policy would move the tag off the index again on
//! the push event the undo itself causes.

use crate::decide::action::{Action, TagRole};
use crate::decide::planned::Plan;
use crate::decide::retire::made_by_remediation;
use crate::decide::skip::SkipReason;
use crate::oci::classify::classify;
use crate::oci::digest::Digest;
use crate::oci::manifest::RawManifest;
use crate::oci::names::ImageTag;
use crate::policy::{Mode, Policy};

/// What the undo planner looks at.
#[derive(Debug, Clone, Copy)]
pub struct UndoInput<'a> {
    /// The tag to put back.
    pub tag: &'a ImageTag,
    /// What it names now (`None`: it does not exist).
    pub now: Option<&'a Digest>,
    /// The indexes found under its keep tags, with the keep tag each is under.
    pub kept: &'a [(ImageTag, RawManifest)],
    /// Every keep tag looked at.
    pub tried: &'a [ImageTag],
    /// The repository's policy, its own `ecr-remediator:mode` tag applied.
    pub policy: &'a Policy,
}

/// Plans the undo: one move of the tag back onto the kept index, nothing
/// when it is there already, or a halt saying why not.
pub fn plan_undo(input: &UndoInput<'_>) -> Plan {
    let UndoInput {
        tag,
        now,
        kept,
        tried,
        policy,
    } = *input;
    let mut p = Plan::new(policy);
    if matches!(policy.mode, Mode::Promote | Mode::Strip) {
        return p.halt(SkipReason::WouldRemediateAgain { mode: policy.mode });
    }
    let Some(now) = now else {
        return p.halt(SkipReason::MovedOn {
            tag: tag.clone(),
            now: None,
        });
    };
    if kept.is_empty() {
        return p.halt(SkipReason::NoKeptIndex { tried: tried.to_vec() });
    }
    if let Some((keep_tag, _)) = kept.iter().find(|(_, index)| index.digest() == now) {
        p.notes.push(format!(
            "{tag} already names the index kept under {keep_tag}: nothing to undo"
        ));
        return p;
    }
    let made: Vec<&(ImageTag, RawManifest)> = kept
        .iter()
        .filter(|(_, index)| made_by_remediation(index, &classify(index), now))
        .collect();
    let mut digests: Vec<&Digest> = made.iter().map(|(_, m)| m.digest()).collect();
    digests.sort();
    digests.dedup();
    if digests.len() > 1 {
        return p.halt(SkipReason::SeveralKeptIndexes {
            tags: made.iter().map(|(t, _)| t.clone()).collect(),
        });
    }
    let Some((keep_tag, index)) = made.first() else {
        return p.halt(SkipReason::MovedOn {
            tag: tag.clone(),
            now: Some(now.clone()),
        });
    };
    p.notes.push(format!(
        "{tag} back on the index kept under {keep_tag}, by its exact bytes (the keep tag stays)"
    ));
    p.actions.push(Action::MoveTag {
        tag: tag.clone(),
        from: now.clone(),
        to: index.digest().clone(),
        role: TagRole::Pushed,
    });
    p
}
