//! One history per event: folding what at-least-once delivery repeats.
//!
//! A queue delivers an event at least once. A handling killed between
//! writing its final record and deleting its message is delivered again, and
//! the redelivery writes a second final record: it finds every write in
//! place (`already`) and applies nothing. A checkpoint (`in_progress`) is
//! followed by the final record of the same delivery, which restates each of
//! its actions with how it ended. Neither adds a fact, and both read like
//! contradictions next to the record that does. [`fold`] leaves them out
//! (pure); `audit --all-records` shows every record as written.

use serde_json::Value;

use crate::trail::query::Found;

/// What [`fold`] kept and how many it left out.
#[derive(Debug, Clone, PartialEq)]
pub struct Folded {
    /// The records kept, in the order given.
    pub kept: Vec<Found>,
    /// Checkpoints their own delivery's later record restates.
    pub checkpoints: usize,
    /// Final records of a repeated delivery that applied nothing new.
    pub repeats: usize,
}

fn text<'v>(v: &'v Value, key: &str) -> Option<&'v str> {
    v.get(key).and_then(Value::as_str)
}

/// The handling a record belongs to: its event and index (None for a
/// record without an event id, which is never folded).
fn handling(r: &Value) -> Option<(&str, &str)> {
    Some((text(r, "event_id")?, text(r, "index_digest").unwrap_or_default()))
}

/// The delivery a record belongs to.
fn delivery(r: &Value) -> (Option<u64>, Option<&str>) {
    (r.get("attempt").and_then(Value::as_u64), text(r, "request_id"))
}

fn is_checkpoint(r: &Value) -> bool {
    text(r, "outcome") == Some("in_progress")
}

fn is_final(r: &Value) -> bool {
    r.get("final").and_then(Value::as_bool) == Some(true)
}

/// True when the record applied nothing: no action applied, nothing deleted,
/// and it neither failed nor is a checkpoint.
fn applied_nothing(r: &Value) -> bool {
    let applied = r
        .get("actions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|a| text(a, "outcome") == Some("applied"));
    !applied
        && r.get("deleted").and_then(Value::as_u64).unwrap_or(0) == 0
        && matches!(text(r, "outcome"), Some("noop" | "skipped"))
}

/// Folds `found` (oldest first, as `audit show` reads it, or newest first)
/// into one history per event.
pub fn fold(found: Vec<Found>) -> Folded {
    let records: Vec<&Value> = found.iter().map(|f| &f.record).collect();
    let mut drop = vec![false; found.len()];
    let (mut checkpoints, mut repeats) = (0, 0);
    for (i, r) in records.iter().enumerate() {
        let Some(h) = handling(r) else { continue };
        let same = |o: &Value| handling(o) == Some(h);
        if is_checkpoint(r) {
            let restated = records
                .iter()
                .any(|o| same(o) && !is_checkpoint(o) && delivery(o) == delivery(r));
            if restated {
                drop[i] = true;
                checkpoints += 1;
            }
            continue;
        }
        if !is_final(r) || !applied_nothing(r) {
            continue;
        }
        // A repeat: another final record of the same handling, from an
        // earlier delivery, is kept.
        let attempt = delivery(r).0;
        let earlier_final = records.iter().enumerate().any(|(j, o)| {
            j != i
                && !drop[j]
                && same(o)
                && is_final(o)
                && !is_checkpoint(o)
                && match (delivery(o).0, attempt) {
                    (Some(a), Some(b)) => a < b,
                    _ => j < i,
                }
        });
        if earlier_final {
            drop[i] = true;
            repeats += 1;
        }
    }
    let kept = found
        .into_iter()
        .zip(drop)
        .filter_map(|(f, d)| (!d).then_some(f))
        .collect();
    Folded {
        kept,
        checkpoints,
        repeats,
    }
}

impl Folded {
    /// A line saying what was left out, if anything.
    pub fn summary(&self) -> Option<String> {
        let mut parts = Vec::new();
        if self.checkpoints > 0 {
            parts.push(format!(
                "{} checkpoint(s) restated by their final record",
                self.checkpoints
            ));
        }
        if self.repeats > 0 {
            parts.push(format!(
                "{} repeated delivery record(s) that applied nothing",
                self.repeats
            ));
        }
        (!parts.is_empty()).then(|| format!("not shown: {} (--all-records shows them)", parts.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn found(record: Value) -> Found {
        Found {
            timestamp: String::new(),
            record,
        }
    }

    fn rec(attempt: u64, outcome: &str, final_: bool, action_outcome: &str) -> Found {
        found(json!({
            "event_id": "e1", "index_digest": "sha256:aa", "attempt": attempt, "request_id": format!("r{attempt}"),
            "outcome": outcome, "final": final_, "deleted": 0,
            "actions": [{"action": "move_tag", "tag": "v1", "outcome": action_outcome}],
        }))
    }

    fn outcomes(f: &Folded) -> Vec<(u64, String)> {
        f.kept
            .iter()
            .map(|f| {
                (
                    f.record["attempt"].as_u64().unwrap(),
                    f.record["outcome"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn a_repeated_delivery_that_found_everything_done_is_folded_into_the_first() {
        let f = fold(vec![
            rec(1, "in_progress", false, "pending"),
            rec(1, "remediated", true, "applied"),
            rec(2, "noop", true, "already"),
        ]);
        assert_eq!(outcomes(&f), vec![(1, "remediated".to_owned())]);
        assert_eq!((f.checkpoints, f.repeats), (1, 1));
        assert!(f.summary().unwrap().contains("--all-records"));
    }

    #[test]
    fn what_adds_a_fact_is_kept() {
        // Delivery 1's final record was lost: its checkpoint stays, and the
        // redelivery that says what was applied stays.
        let f = fold(vec![
            rec(1, "in_progress", false, "pending"),
            rec(2, "remediated", true, "applied"),
        ]);
        assert_eq!(f.kept.len(), 2);
        // A retryable failure, then the delivery that did the work.
        let f = fold(vec![
            rec(1, "failed", false, "failed"),
            rec(2, "remediated", true, "applied"),
        ]);
        assert_eq!(f.kept.len(), 2);
        // Two events, each with one final record.
        let mut other = rec(1, "noop", true, "already");
        other.record["event_id"] = json!("e2");
        let f = fold(vec![rec(1, "remediated", true, "applied"), other]);
        assert_eq!(f.kept.len(), 2);
        assert_eq!(f.summary(), None);
    }

    #[test]
    fn newest_first_keeps_the_earliest_delivery_too() {
        let f = fold(vec![
            rec(2, "noop", true, "already"),
            rec(1, "remediated", true, "applied"),
        ]);
        assert_eq!(outcomes(&f), vec![(1, "remediated".to_owned())]);
    }
}
