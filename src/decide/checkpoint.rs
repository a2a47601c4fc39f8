//! A redelivered event reconciles what an earlier delivery left in the trail.
//!
//! Writes and deletions go out only after a checkpoint record listing them
//! reached the trail (`in_progress`, each action `pending`). When the
//! delivery that wrote it dies, or cannot write its final record, before the
//! message is deleted, the queue delivers the event again; that delivery
//! finds the work done and would not say who did it. So, on a delivery after
//! the first, the engine reads the event's earlier records back from the
//! trail (the audit sink's `earlier_records`), takes each
//! checkpoint no record of the same delivery closed ([`open_checkpoints`],
//! pure), and:
//!
//! - a pending deletion whose manifest is gone now is recorded as applied by
//!   that delivery (`earlier_attempt`), `deleted` and `reclaimed_bytes`
//!   counting it;
//! - a pending write found in place (`already`) is attributed to it;
//! - a pending write no longer in place because a newer push moved the tag
//!   on is recorded as `unconfirmed`: the registry cannot tell whether it
//!   happened.
//!
//! What "confirmed" means: the checkpoint says the action was about to
//! happen and its effect is there now. Someone else doing the same thing in
//! between cannot be told apart: the record says "confirmed", never more.

use serde_json::Value;

use crate::decide::action::{Action, ActionKind, DeleteRole, TagRole};
use crate::oci::digest::Digest;
use crate::oci::manifest::RawManifest;
use crate::oci::names::ImageTag;

/// What an earlier delivery's checkpoint listed as pending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pending {
    /// A deletion, as planned, with what it was expected to free.
    Deletion {
        /// The deletion.
        action: Action,
        /// What it was expected to free.
        bytes: Option<u64>,
    },
    /// A tag write.
    Write(PendingWrite),
}

/// A tag write an earlier delivery's checkpoint listed, as the record says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingWrite {
    /// Which kind of write.
    pub kind: ActionKind,
    /// The tag.
    pub tag: ImageTag,
    /// Where it was to point.
    pub target: Digest,
    /// Why (absent for a stripped index: the pushed tag).
    pub role: TagRole,
    /// Where it pointed before (a move), or the index it replaces (a stripped index).
    pub from: Option<Digest>,
}

impl PendingWrite {
    /// The write as an action; a stripped index needs its manifest (`None`
    /// when the registry no longer has it: then there is no action to name).
    pub fn action(&self, manifest: Option<&RawManifest>) -> Option<Action> {
        let (tag, role) = (self.tag.clone(), self.role);
        Some(match self.kind {
            ActionKind::AddTag => Action::AddTag {
                tag,
                digest: self.target.clone(),
                role,
            },
            ActionKind::MoveTag => Action::MoveTag {
                tag,
                from: self.from.clone()?,
                to: self.target.clone(),
                role,
            },
            ActionKind::PutIndex => Action::PutIndex {
                tag,
                manifest: Box::new(manifest.filter(|m| m.digest() == &self.target)?.clone()),
                replaces: self.from.clone()?,
            },
            ActionKind::PutReferrer | ActionKind::Delete => return None,
        })
    }
}

/// One pending action of an open checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingAction {
    /// What.
    pub pending: Pending,
    /// The delivery attempt whose checkpoint listed it (the latest, when
    /// several did: an earlier one that did it would have left nothing for a
    /// later one to plan).
    pub attempt: Option<u32>,
}

impl PendingAction {
    /// What identifies it among the pending actions.
    fn key(&self) -> (Option<&ImageTag>, &Digest) {
        match &self.pending {
            Pending::Deletion { action, .. } => (None, action.target()),
            Pending::Write(w) => (Some(&w.tag), &w.target),
        }
    }

    /// True when `action` is this pending one (a write: the same tag to the
    /// same image, added or moved; a deletion: of the same image).
    pub fn is(&self, action: &Action) -> bool {
        match &self.pending {
            Pending::Deletion { action: a, .. } => action.is_delete() && a.target() == action.target(),
            Pending::Write(w) => action.tag() == Some(&w.tag) && action.target() == &w.target,
        }
    }
}

fn text<'v>(v: &'v Value, key: &str) -> Option<&'v str> {
    v.get(key).and_then(Value::as_str)
}

fn attempt_of(v: &Value) -> Option<u32> {
    v.get("attempt")
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
}

/// The delivery a record belongs to: its attempt and request id.
fn delivery_of(v: &Value) -> (Option<u32>, Option<&str>) {
    (attempt_of(v), text(v, "request_id"))
}

fn role(s: &str) -> Option<DeleteRole> {
    Some(match s {
        "index" => DeleteRole::Index,
        "attestation" => DeleteRole::Attestation,
        "kept_index" => DeleteRole::KeptIndex,
        _ => return None,
    })
}

/// One pending action of a checkpoint, or None when the entry is not one
/// (or names something this version cannot read: it is then left alone).
fn pending(a: &Value, attempt: Option<u32>) -> Option<PendingAction> {
    if text(a, "outcome") != Some("pending") {
        return None;
    }
    let digest = |k: &str| text(a, k).and_then(|d| Digest::parse(d).ok());
    let pending = match text(a, "action")? {
        "delete" => {
            let role = role(text(a, "role")?)?;
            let removes_tags = match a.get("removes_tags") {
                None => Vec::new(),
                Some(tags) => tags
                    .as_array()?
                    .iter()
                    .map(|t| t.as_str().and_then(|t| ImageTag::parse(t).ok()))
                    .collect::<Option<Vec<_>>>()?,
            };
            Pending::Deletion {
                action: Action::Delete {
                    digest: digest("digest")?,
                    role,
                    removes_tags,
                },
                bytes: a.get("bytes").and_then(Value::as_u64),
            }
        }
        kind @ ("add_tag" | "move_tag" | "put_index") => {
            let (kind, target, from) = match kind {
                "add_tag" => (ActionKind::AddTag, digest("digest")?, None),
                "move_tag" => (ActionKind::MoveTag, digest("to")?, Some(digest("from")?)),
                _ => (ActionKind::PutIndex, digest("digest")?, Some(digest("replaces")?)),
            };
            let role = match text(a, "role") {
                None if kind == ActionKind::PutIndex => TagRole::Pushed,
                Some("pushed") => TagRole::Pushed,
                Some("derived") => TagRole::Derived,
                Some("keep") => TagRole::Keep,
                _ => return None,
            };
            Pending::Write(PendingWrite {
                kind,
                tag: ImageTag::parse(text(a, "tag")?).ok()?,
                target,
                role,
                from,
            })
        }
        _ => return None,
    };
    Some(PendingAction { pending, attempt })
}

/// Whose checkpoints a delivery may claim: the records of the same event,
/// about the same index, in the same account, region and repository. The
/// one definition of what ties an earlier record to this handling.
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    /// The delivery's event id (a follow-up has its own, see `docs/audit.md`).
    pub event_id: &'a str,
    /// The index handled.
    pub index: &'a Digest,
    /// The account the handling acts in (`None`: not known, and a record
    /// must not name one either).
    pub account: Option<&'a str>,
    /// The region the handling acts in (likewise).
    pub region: Option<&'a str>,
    /// The repository.
    pub repository: &'a str,
    /// This delivery (its attempt and request id): its own records are not
    /// earlier ones. A redrive from the dead-letter queue may start the
    /// attempt again at 1, so a delivery is told apart by both.
    pub current: (Option<u32>, Option<&'a str>),
}

impl Claim<'_> {
    /// True when `record` is an earlier record of the same handling.
    fn covers(&self, record: &Value) -> bool {
        let index = self.index.to_string();
        text(record, "event_id") == Some(self.event_id)
            && text(record, "index_digest") == Some(index.as_str())
            && text(record, "account") == self.account
            && text(record, "region") == self.region
            && text(record, "repository") == Some(self.repository)
            && delivery_of(record) != self.current
    }
}

/// The actions pending in the checkpoints `claim` covers that no later
/// record of the same delivery closed, each once (attributed to the latest
/// such checkpoint), from `records` as written (oldest first or not: the
/// order does not matter). Every other record is ignored: another event's,
/// index's, account's, region's or repository's, and the current delivery's.
pub fn open_checkpoints(records: &[Value], claim: &Claim<'_>) -> Vec<PendingAction> {
    let ours: Vec<&Value> = records.iter().filter(|r| claim.covers(r)).collect();
    let closed: Vec<(Option<u32>, Option<&str>)> = ours
        .iter()
        .filter(|r| text(r, "outcome") != Some("in_progress"))
        .map(|r| delivery_of(r))
        .collect();
    let mut out: Vec<PendingAction> = Vec::new();
    for r in &ours {
        if text(r, "outcome") != Some("in_progress") || closed.contains(&delivery_of(r)) {
            continue;
        }
        let attempt = attempt_of(r);
        for a in r.get("actions").and_then(Value::as_array).into_iter().flatten() {
            let Some(p) = pending(a, attempt) else { continue };
            match out.iter_mut().find(|seen| seen.key() == p.key()) {
                Some(seen) if seen.attempt >= attempt => {}
                Some(seen) => *seen = p,
                None => out.push(p),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn d(n: u8) -> Digest {
        Digest::sha256_of(&[n])
    }

    fn checkpoint(attempt: u32, request: &str, deletes: &[(Digest, &str)]) -> Value {
        json!({
            "event_id": "e1", "index_digest": d(0).to_string(), "attempt": attempt, "request_id": request,
            "account": "123456789012", "region": "us-east-1", "repository": "app",
            "outcome": "in_progress", "final": false,
            "actions": deletes.iter().map(|(digest, role)| json!({
                "action": "delete", "digest": digest.to_string(), "role": role, "outcome": "pending", "bytes": 10
            })).collect::<Vec<_>>(),
        })
    }

    fn closing(attempt: u32, request: &str) -> Value {
        json!({"event_id": "e1", "index_digest": d(0).to_string(), "attempt": attempt,
               "account": "123456789012", "region": "us-east-1", "repository": "app", "request_id": request, "outcome": "remediated", "final": true, "actions": []})
    }

    fn claim(index: &Digest, current: u32) -> Claim<'_> {
        Claim {
            event_id: "e1",
            index,
            account: Some("123456789012"),
            region: Some("us-east-1"),
            repository: "app",
            current: (Some(current), Some("this-delivery")),
        }
    }

    #[test]
    fn a_checkpoint_without_its_final_record_is_open() {
        let records = vec![checkpoint(1, "r1", &[(d(0), "index"), (d(1), "attestation")])];
        let open = open_checkpoints(&records, &claim(&d(0), 2));
        let digests: Vec<&Digest> = open.iter().map(|p| p.key().1).collect();
        assert_eq!(digests.len(), 2);
        assert!(digests.contains(&&d(0)) && digests.contains(&&d(1)));
        assert!(
            open.iter()
                .all(|p| p.attempt == Some(1) && matches!(p.pending, Pending::Deletion { bytes: Some(10), .. }))
        );
    }

    #[test]
    fn a_checkpoint_its_own_delivery_closed_is_not() {
        let records = vec![checkpoint(1, "r1", &[(d(1), "attestation")]), closing(1, "r1")];
        assert!(open_checkpoints(&records, &claim(&d(0), 2)).is_empty());
        // A final record of another delivery does not close it.
        let records = vec![checkpoint(1, "r1", &[(d(1), "attestation")]), closing(2, "r2")];
        assert_eq!(open_checkpoints(&records, &claim(&d(0), 3)).len(), 1);
    }

    #[test]
    fn other_events_indexes_and_the_current_delivery_are_ignored() {
        let mut other = checkpoint(1, "r1", &[(d(1), "attestation")]);
        other["event_id"] = json!("e2");
        let mut other_index = checkpoint(1, "r1", &[(d(1), "attestation")]);
        other_index["index_digest"] = json!(d(9).to_string());
        let current = checkpoint(2, "this-delivery", &[(d(1), "attestation")]);
        assert!(open_checkpoints(&[other, other_index, current], &claim(&d(0), 2)).is_empty());
        // The same event id and index elsewhere: another repository, account
        // or region (a request id that repeats), or a record naming none.
        for (field, value) in [
            ("repository", json!("other")),
            ("account", json!("333333333333")),
            ("region", json!("eu-west-1")),
            ("account", Value::Null),
        ] {
            let mut elsewhere = checkpoint(1, "r1", &[(d(1), "attestation")]);
            elsewhere[field] = value;
            assert!(open_checkpoints(&[elsewhere], &claim(&d(0), 2)).is_empty(), "{field}");
        }
        assert_eq!(
            open_checkpoints(&[checkpoint(1, "r1", &[(d(1), "attestation")])], &claim(&d(0), 2)).len(),
            1
        );
    }

    #[test]
    fn a_redriven_delivery_at_attempt_one_claims_the_cut_one() {
        // The dead-letter queue's redrive starts the receive count again: the
        // cut delivery and this one both say attempt 1; the request ids differ.
        let records = vec![checkpoint(1, "sqs-cut", &[(d(1), "attestation")])];
        let index = d(0);
        let mut this = claim(&index, 1);
        assert_eq!(open_checkpoints(&records, &this).len(), 1);
        this.current = (Some(1), Some("sqs-cut"));
        assert!(open_checkpoints(&records, &this).is_empty());
    }

    #[test]
    fn a_deletion_in_two_open_checkpoints_is_the_later_ones() {
        let records = vec![
            checkpoint(2, "r2", &[(d(1), "attestation")]),
            checkpoint(1, "r1", &[(d(1), "attestation")]),
        ];
        let open = open_checkpoints(&records, &claim(&d(0), 3));
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].attempt, Some(2));
    }

    #[test]
    fn pending_writes_are_read_and_unreadable_entries_skipped() {
        let mut r = checkpoint(1, "r1", &[(d(1), "attestation"), (d(2), "no_such_role")]);
        let actions = r["actions"].as_array_mut().unwrap();
        actions.push(json!({"action": "move_tag", "tag": "v1", "from": d(0).to_string(), "to": d(3).to_string(), "role": "pushed", "outcome": "pending"}));
        actions.push(json!({"action": "add_tag", "tag": "v1-index", "digest": d(0).to_string(), "role": "keep", "outcome": "pending"}));
        actions.push(json!({"action": "move_tag", "tag": "v1", "outcome": "pending"}));
        actions.push(json!({"action": "add_tag", "tag": "v2", "digest": d(5).to_string(), "outcome": "applied"}));
        let open = open_checkpoints(&[r], &claim(&d(0), 2));
        let keys: Vec<(Option<&str>, &Digest)> = open
            .iter()
            .map(|p| (p.key().0.map(ImageTag::as_str), p.key().1))
            .collect();
        assert_eq!(
            keys,
            vec![(None, &d(1)), (Some("v1"), &d(3)), (Some("v1-index"), &d(0))]
        );
        let moved = Action::MoveTag {
            tag: ImageTag::parse("v1").unwrap(),
            from: d(9),
            to: d(3),
            role: crate::decide::action::TagRole::Pushed,
        };
        assert!(
            open[1].is(&moved),
            "the same tag to the same image, whatever it moved from"
        );
        assert!(!open[2].is(&moved));
    }
}
