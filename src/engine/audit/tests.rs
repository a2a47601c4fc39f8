//! Tests of [`super`] (test code only: it is compiled under `#[cfg(test)]`).
#![cfg(test)]

use std::time::UNIX_EPOCH;

use super::*;
use crate::decide::action::DeleteRole;
use crate::vocabulary::Vocabulary;

fn digest(n: u8) -> Digest {
    Digest::sha256_of(&[n])
}

#[test]
fn outcomes_are_recorded_under_their_kind() {
    crate::vocabulary::assert_serde_agrees::<OutcomeKind>();
    let skipped = Outcome::Skipped {
        code: SkipCode::Untagged,
        reason: "x".into(),
    };
    for o in [Outcome::Remediated, Outcome::Noop, skipped, Outcome::InProgress] {
        let written = serde_json::to_value(&o).unwrap();
        assert_eq!(written["outcome"].as_str(), Some(o.kind().as_str()), "{o:?}");
    }
}

#[test]
fn record_has_schema_and_flattened_outcomes() {
    let mut r = AuditRecord::new(Trigger::Push, Some("team/app"), UNIX_EPOCH);
    r.actions.push(ActionRecord::new(
        Action::Delete {
            digest: digest(1),
            role: DeleteRole::Attestation,
            removes_tags: Vec::new(),
        },
        ActionOutcome::Skipped { reason: "x".into() },
    ));
    r.outcome = Outcome::Skipped {
        code: crate::decide::skip::SkipCode::Superseded,
        reason: "moved".into(),
    };
    let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(v["schema"], AUDIT_SCHEMA);
    assert_eq!(v["schema_version"], 1);
    assert_eq!(v["trigger"], "push");
    assert_eq!(v["outcome"], "skipped");
    assert_eq!(v["code"], "superseded");
    assert_eq!(v["actions"][0]["action"], "delete");
    assert_eq!(v["actions"][0]["outcome"], "skipped");
    assert!(v.get("truncated").is_none());
}

#[test]
fn oversized_records_are_truncated_with_a_marker_not_dropped() {
    let mut r = AuditRecord::new(Trigger::Sweep, Some("team/app"), UNIX_EPOCH);
    for i in 0..5000u32 {
        r.actions.push(ActionRecord::new(
            Action::Delete {
                digest: Digest::sha256_of(&i.to_be_bytes()),
                role: DeleteRole::Attestation,
                removes_tags: Vec::new(),
            },
            ActionOutcome::Applied,
        ));
    }
    r.outcome = Outcome::Remediated;
    let full = r.to_json();
    assert!(full.len() > MAX_DETAIL_BYTES);
    let text = r.to_bounded_json(MAX_DETAIL_BYTES);
    assert!(text.len() <= MAX_DETAIL_BYTES);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["outcome"], "remediated");
    assert_eq!(v["truncated"]["original_bytes"], full.len());
    let kept = v["actions"].as_array().unwrap().len();
    assert!(kept > 100, "kept {kept}");
    assert_eq!(v["truncated"]["actions_omitted"], 5000 - kept);
    assert_eq!(r.to_bounded_json(usize::MAX), full);
}

#[test]
fn every_field_is_bounded_whatever_the_input() {
    // An id near SQS's limit, and malformed input quoted in a reason
    // (quoting doubles a string of `"`): the record still fits one
    // EventBridge entry, says what it cut, and keeps its identity.
    let mut r = AuditRecord::new(Trigger::Sweep, Some("team/app"), UNIX_EPOCH);
    r.event_id = Some("x".repeat(261_800));
    let quoted = serde_json::to_string(&"\"".repeat(100_000)).unwrap();
    r.outcome = Outcome::Skipped {
        code: SkipCode::MalformedEvent,
        reason: format!("repository-name {quoted} is not a repository name"),
    };
    r.notes.push("é".repeat(10_000));
    let text = r.to_bounded_json(MAX_DETAIL_BYTES);
    // Three fields at most MAX_FIELD_BYTES each (JSON's escaping of `"`
    // doubles one of them), and the rest of the record.
    assert!(text.len() < 4 * MAX_FIELD_BYTES + 2048, "{}", text.len());
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["fields_cut"], 3, "{v}");
    assert_eq!(v["repository"], "team/app");
    assert_eq!(v["code"], "malformed_event");
    assert!(
        v["event_id"].as_str().unwrap().ends_with("[257704 more bytes cut]"),
        "{}",
        &v["event_id"]
    );
    let note = v["notes"][0].as_str().unwrap();
    assert!(note.starts_with("éé") && note.contains("more bytes cut"), "{note}");
    // A record within the bounds is written as it is.
    let small = AuditRecord::new(Trigger::Push, Some("team/app"), UNIX_EPOCH);
    assert_eq!(small.to_bounded_json(MAX_DETAIL_BYTES), small.to_json());
}

#[test]
fn a_record_of_the_largest_index_fits_whatever_it_lists() {
    // 1024 entries (the most an index may have), each deployable by a long
    // tag and signed: every list is cut, the record fits and says so.
    use crate::decide::planned::Deployable;
    use crate::oci::lambda::Verdict;
    use crate::oci::manifest::Platform;
    use crate::oci::signature::{Signature, SignatureKind, Signing};
    let mut r = AuditRecord::new(Trigger::Push, Some("team/app"), UNIX_EPOCH);
    let arch = "a".repeat(55);
    for n in 0..1024u32 {
        let d = Digest::sha256_of(&n.to_be_bytes());
        r.deployability.push(Deployable {
            tag: crate::oci::names::ImageTag::parse(&format!("{}-{n}", "t".repeat(60))).unwrap(),
            digest: d.clone(),
            platform: Some(Platform::new("linux", &arch, None)),
            verdict: Verdict::Yes,
        });
    }
    let signatures: Vec<Signature> = (0..1024u32)
        .map(|n| Signature::referrer(SignatureKind::Notation, &Digest::sha256_of(&n.to_le_bytes())))
        .collect();
    r.signing = Some(Signing {
        index: signatures.clone(),
        image: signatures,
    });
    let text = r.to_bounded_json(MAX_DETAIL_BYTES);
    assert!(text.len() <= MAX_DETAIL_BYTES, "{}", text.len());
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(
        v["truncated"]["other_omitted"].as_u64().unwrap() > 0,
        "{}",
        &v["truncated"]
    );
    assert_eq!(v["repository"], "team/app");
    // A limit below what lists alone can reach still gives a record within it.
    let small = r.to_bounded_json(8 * 1024);
    assert!(small.len() <= 8 * 1024, "{}", small.len());
}

/// A sink answering with `error` (built anew each call) and counting calls.
struct Failing {
    calls: std::sync::atomic::AtomicU32,
    refused: bool,
}

impl AuditSink for Failing {
    async fn write(&self, _: &AuditRecord) -> Result<(), AuditError> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Err(if self.refused {
            AuditError::Refused {
                of: Refusal::Caller,
                destination: "event bus audit".into(),
                code: "AccessDeniedException".into(),
                message: "explicit deny".into(),
                hint: "; add it to AuditWriterArns",
            }
        } else {
            AuditError::Rejected {
                destination: "event bus audit".into(),
                code: "ThrottlingException".into(),
                message: "slow down".into(),
            }
        })
    }
}

#[tokio::test]
async fn a_refused_record_is_not_retried_and_a_throttled_one_is() {
    let policy = crate::engine::retry::RetryPolicy {
        max_attempts: 4,
        base: std::time::Duration::from_millis(1),
        cap: std::time::Duration::from_millis(2),
    };
    let record = AuditRecord::new(Trigger::Push, Some("team/app"), UNIX_EPOCH);
    let refusing = Failing {
        calls: 0.into(),
        refused: true,
    };
    let err = write_with_retries(&refusing, &record, &policy, None).await.unwrap_err();
    assert_eq!(refusing.calls.into_inner(), 1);
    assert_eq!(
        err.to_string(),
        "audit record refused by event bus audit: AccessDeniedException: explicit deny; add it to AuditWriterArns"
    );
    let throttled = Failing {
        calls: 0.into(),
        refused: false,
    };
    assert!(write_with_retries(&throttled, &record, &policy, None).await.is_err());
    assert_eq!(throttled.calls.into_inner(), 4);
}
