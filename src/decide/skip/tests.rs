//! Tests of [`super`] (test code only: it is compiled under `#[cfg(test)]`).
#![cfg(test)]

use super::*;
use crate::decide::action::DeleteRole;
use crate::vocabulary::{Vocabulary, assert_serde_agrees};

/// One of each reason, as the planner makes them.
fn every_reason() -> Vec<SkipReason> {
    let d = Digest::sha256_of(b"x");
    let t = ImageTag::parse("v1").unwrap_or_else(|e| panic!("{e}"));
    let e = String::from("why");
    vec![
        SkipReason::Inconsistent,
        SkipReason::NotAnIndex,
        SkipReason::Untagged,
        SkipReason::OwnKeepTag { tag: t.clone() },
        SkipReason::IndexGone,
        SkipReason::Superseded { now: Some(d.clone()) },
        SkipReason::NoRunnable,
        SkipReason::UnknownPlatform,
        SkipReason::InvalidDerivedTag { error: e.clone() },
        SkipReason::KeepTagInvalid { error: e.clone() },
        SkipReason::KeepTagTaken {
            tag: t.clone(),
            holder: d.clone(),
        },
        SkipReason::DerivedTagTaken {
            tag: t.clone(),
            holder: d.clone(),
        },
        SkipReason::DerivedTagCollision { tag: t.clone() },
        SkipReason::DerivedTagClash { tag: t.clone() },
        SkipReason::ChildMissing,
        SkipReason::NothingToStrip,
        SkipReason::StripWouldEmpty,
        SkipReason::StripFailed { error: e.clone() },
        SkipReason::StillTagged { tags: vec![t.clone()] },
        SkipReason::StillReferenced { by: vec![d.clone()] },
        SkipReason::ProtectedEntry,
        SkipReason::NotInView,
        SkipReason::MaxDeletes { planned: 3, max: 2 },
        SkipReason::CleanupNotEnabled,
        SkipReason::IndexesKept,
        SkipReason::TooRecent {
            age_s: Some(5),
            min_age_s: 3600,
        },
        SkipReason::NotRemediated,
        SkipReason::AttachedReferrer { subject: d.clone() },
        SkipReason::NotAnAttestation { kind: "image".into() },
        SkipReason::ReferrerCopyFailed { error: e.clone() },
        SkipReason::ProvenanceUncovered { why: e.clone() },
        SkipReason::HasCompanion {
            companion: Companion::Signature,
            tag: t.clone(),
        },
        SkipReason::HasReferrers {
            referrers: vec![d.clone()],
        },
        SkipReason::AttachmentsUnknown,
        SkipReason::CompanionTag {
            tag: t.clone(),
            companion: Companion::Signature,
            subject: d.clone(),
        },
        SkipReason::TagUnreadable { tag: t, why: e.clone() },
        SkipReason::RetireNotEnabled { why: e.clone() },
        SkipReason::NotKept,
        SkipReason::OrphansKept,
        SkipReason::Conflict { error: e },
    ]
}

#[test]
fn every_reason_is_recorded_under_its_own_code() {
    let reasons = every_reason();
    let mut codes = std::collections::BTreeSet::new();
    for r in &reasons {
        let skipped = Skipped {
            action: Some(Action::Delete {
                digest: Digest::sha256_of(b"y"),
                role: DeleteRole::Attestation,
                removes_tags: Vec::new(),
            }),
            digest: None,
            reason: r.clone(),
        };
        let written = serde_json::to_value(&skipped).unwrap_or_default();
        assert_eq!(written["reason"].as_str(), Some(r.code().as_str()), "{r:?}");
        assert!(!r.to_string().is_empty());
        codes.insert(r.code());
    }
    assert_eq!(codes.len(), reasons.len(), "no two reasons share a code");
    assert_serde_agrees::<SkipCode>();
    assert_eq!(SkipCode::from_word("too-recent"), Some(SkipCode::TooRecent));
    assert_eq!("superseded".parse::<SkipCode>(), Ok(SkipCode::Superseded));
    assert!("supersede".parse::<SkipCode>().is_err());
}
