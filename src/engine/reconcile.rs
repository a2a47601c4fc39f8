//! A redelivered event reconciles what an earlier delivery left in the trail.
//!
//! Deletions go out only after a checkpoint record listing them reached the
//! trail (`in_progress`, each deletion `pending`). When the delivery that
//! wrote it dies, or cannot write its final record, before the message is
//! deleted, the queue delivers the event again; that delivery finds the
//! deleted manifests gone and would say nothing about them. So, on a
//! delivery after the first, the engine reads the event's earlier records
//! back from the trail ([`crate::engine::audit::AuditSink::earlier_records`]),
//! takes each checkpoint no record of the same delivery closed
//! ([`open_checkpoints`], pure), confirms each pending deletion against the
//! registry (gone now), and records it as applied by that delivery
//! (`earlier_attempt`), with `deleted` and `reclaimed_bytes` counting it.
//!
//! What "confirmed" means: the checkpoint says the deletion was about to
//! happen and the manifest is gone now. Nothing else deletes by digest in
//! the window between them, unless someone else deletes the same manifest
//! then: the record says "confirmed gone", never more.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::engine::action::{Action, DeleteRole};
use crate::oci::digest::Digest;
use crate::oci::names::ImageTag;

/// A deletion an earlier delivery's checkpoint listed as pending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingDeletion {
    /// The deletion, as planned.
    pub action: Action,
    /// What it was expected to free.
    pub bytes: Option<u64>,
    /// The delivery attempt whose checkpoint listed it (the latest, when
    /// several did: an earlier one that deleted it would have left nothing
    /// for a later one to plan).
    pub attempt: Option<u32>,
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

/// One pending deletion of a checkpoint, or None when the entry is not one
/// (or names something this version cannot read: it is then left alone).
fn pending(a: &Value, attempt: Option<u32>) -> Option<PendingDeletion> {
    if text(a, "action") != Some("delete") || text(a, "outcome") != Some("pending") {
        return None;
    }
    let digest = Digest::parse(text(a, "digest")?).ok()?;
    let role = role(text(a, "role")?)?;
    let removes_tags = match a.get("removes_tags") {
        None => Vec::new(),
        Some(tags) => tags
            .as_array()?
            .iter()
            .map(|t| t.as_str().and_then(|t| ImageTag::parse(t).ok()))
            .collect::<Option<Vec<_>>>()?,
    };
    Some(PendingDeletion {
        action: Action::Delete {
            digest,
            role,
            removes_tags,
        },
        bytes: a.get("bytes").and_then(Value::as_u64),
        attempt,
    })
}

/// The deletions pending in the checkpoints of `event_id`'s handling of
/// `index` that no later record of the same delivery closed, each once
/// (attributed to the latest such checkpoint), from `records` as written
/// (oldest first or not: the order does not matter). Records of other
/// events or indexes, and of the delivery `current`, are ignored.
pub fn open_checkpoints(
    records: &[Value],
    event_id: &str,
    index: &Digest,
    current: Option<u32>,
) -> Vec<PendingDeletion> {
    let index = index.to_string();
    let ours: Vec<&Value> = records
        .iter()
        .filter(|r| text(r, "event_id") == Some(event_id) && text(r, "index_digest") == Some(index.as_str()))
        .filter(|r| current.is_none() || attempt_of(r) != current)
        .collect();
    let closed: Vec<(Option<u32>, Option<&str>)> = ours
        .iter()
        .filter(|r| text(r, "outcome") != Some("in_progress"))
        .map(|r| delivery_of(r))
        .collect();
    let mut out: BTreeMap<Digest, PendingDeletion> = BTreeMap::new();
    for r in &ours {
        if text(r, "outcome") != Some("in_progress") || closed.contains(&delivery_of(r)) {
            continue;
        }
        let attempt = attempt_of(r);
        for a in r.get("actions").and_then(Value::as_array).into_iter().flatten() {
            let Some(p) = pending(a, attempt) else { continue };
            let d = p.action.target().clone();
            match out.get(&d) {
                Some(seen) if seen.attempt >= attempt => {}
                _ => {
                    out.insert(d, p);
                }
            }
        }
    }
    out.into_values().collect()
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
            "outcome": "in_progress", "final": false,
            "actions": deletes.iter().map(|(digest, role)| json!({
                "action": "delete", "digest": digest.to_string(), "role": role, "outcome": "pending", "bytes": 10
            })).collect::<Vec<_>>(),
        })
    }

    fn closing(attempt: u32, request: &str) -> Value {
        json!({"event_id": "e1", "index_digest": d(0).to_string(), "attempt": attempt,
               "request_id": request, "outcome": "remediated", "final": true, "actions": []})
    }

    #[test]
    fn a_checkpoint_without_its_final_record_is_open() {
        let records = vec![checkpoint(1, "r1", &[(d(0), "index"), (d(1), "attestation")])];
        let open = open_checkpoints(&records, "e1", &d(0), Some(2));
        let digests: Vec<&Digest> = open.iter().map(|p| p.action.target()).collect();
        assert_eq!(digests.len(), 2);
        assert!(digests.contains(&&d(0)) && digests.contains(&&d(1)));
        assert!(open.iter().all(|p| p.attempt == Some(1) && p.bytes == Some(10)));
    }

    #[test]
    fn a_checkpoint_its_own_delivery_closed_is_not() {
        let records = vec![checkpoint(1, "r1", &[(d(1), "attestation")]), closing(1, "r1")];
        assert!(open_checkpoints(&records, "e1", &d(0), Some(2)).is_empty());
        // A final record of another delivery does not close it.
        let records = vec![checkpoint(1, "r1", &[(d(1), "attestation")]), closing(2, "r2")];
        assert_eq!(open_checkpoints(&records, "e1", &d(0), Some(3)).len(), 1);
    }

    #[test]
    fn other_events_indexes_and_the_current_delivery_are_ignored() {
        let mut other = checkpoint(1, "r1", &[(d(1), "attestation")]);
        other["event_id"] = json!("e2");
        let mut other_index = checkpoint(1, "r1", &[(d(1), "attestation")]);
        other_index["index_digest"] = json!(d(9).to_string());
        let current = checkpoint(2, "r2", &[(d(1), "attestation")]);
        assert!(open_checkpoints(&[other, other_index, current], "e1", &d(0), Some(2)).is_empty());
    }

    #[test]
    fn a_deletion_in_two_open_checkpoints_is_the_later_ones() {
        let records = vec![
            checkpoint(2, "r2", &[(d(1), "attestation")]),
            checkpoint(1, "r1", &[(d(1), "attestation")]),
        ];
        let open = open_checkpoints(&records, "e1", &d(0), Some(3));
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].attempt, Some(2));
    }

    #[test]
    fn entries_that_are_not_pending_deletions_are_skipped() {
        let mut r = checkpoint(1, "r1", &[(d(1), "attestation"), (d(2), "no_such_role")]);
        r["actions"]
            .as_array_mut()
            .unwrap()
            .push(json!({"action": "move_tag", "tag": "v1", "outcome": "pending"}));
        let open = open_checkpoints(&[r], "e1", &d(0), Some(2));
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].action.target(), &d(1));
    }
}
