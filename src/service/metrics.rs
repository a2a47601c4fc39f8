//! Operational metrics in CloudWatch embedded metric format (EMF): one JSON
//! log line per audit record, which CloudWatch turns into metrics when the
//! function's log group receives it. No `PutMetricData` call, no extra
//! permission.
//!
//! Cardinality is chosen for cost (each distinct dimension combination is
//! one custom metric):
//!
//! - `Images` and `HandlingLatency` overall and by `Outcome`
//!   (`remediated`, `noop`, `skipped`, `failed`, `retrying`);
//! - `Images` by `Outcome` and `Reason` (the skip reason code or the failure
//!   code, a bounded set);
//! - `ManifestsDeleted`, `BytesReclaimed`, `TagsAdded`, `TagsMoved` and
//!   `IndexesWritten` overall;
//! - `IndexSigned` (a promotion kept off a signed index, or made anyway
//!   with a warning), `KeptInUse` (deletions refused because a workload uses
//!   the manifest or it was recently pulled) and `InUseUnknown` (deletions
//!   refused because the workload scan failed) and `Incomplete` (a handling
//!   that could not finish, retried by a follow-up: `incomplete` in the
//!   record), `LambdaWouldRefuse` and `LambdaUnknown` (images made
//!   deployable by a tag whose Lambda verdict is `no`, or `unknown`:
//!   `deployability` in the record) overall;
//! - per scheduled sweep: `SignatureGaps` (promoted tags whose index is
//!   signed and whose image is not, see [`sweep_emf`]);
//! - with [`MetricsConfig::per_repository`]: `Images`, `ManifestsDeleted` and
//!   `BytesReclaimed` by `Repository` (off by default: one metric per
//!   repository and name, which a registry of thousands of repositories pays for).
//!
//! `failed` counts failures that will not be retried (not retryable, or the
//! queue's last delivery): what the template's alarm watches. A retryable
//! failure that will be delivered again is `retrying`.

use serde_json::{Value, json};

use crate::decide::action::Action;
use crate::decide::skip::SkipCode;
use crate::engine::audit::{ActionOutcome, AuditRecord, Outcome};
use crate::vocabulary::Vocabulary;

/// Namespace of the metrics (default).
pub const DEFAULT_NAMESPACE: &str = "ECRRemediator";

/// What to emit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// The CloudWatch namespace.
    pub namespace: String,
    /// Also emit per-repository metrics.
    pub per_repository: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            namespace: DEFAULT_NAMESPACE.to_owned(),
            per_repository: false,
        }
    }
}

/// The `Outcome` dimension of a record.
pub fn outcome_dimension(record: &AuditRecord) -> &'static str {
    match &record.outcome {
        Outcome::Failed(_) if !record.is_final => "retrying",
        other => other.kind().as_str(),
    }
}

fn reason_dimension(record: &AuditRecord) -> String {
    match &record.outcome {
        Outcome::Skipped { code, .. } => code.as_str().to_owned(),
        Outcome::Failed(f) => f.code.clone(),
        _ => "none".to_owned(),
    }
}

/// The EMF document for one record (none for an `in_progress` checkpoint,
/// whose final record follows).
pub fn emf(record: &AuditRecord, config: &MetricsConfig, timestamp_ms: i64) -> Option<Value> {
    if record.outcome == Outcome::InProgress {
        return None;
    }
    let applied = |kind: fn(&Action) -> bool| {
        record
            .actions
            .iter()
            .filter(|a| a.outcome == ActionOutcome::Applied && kind(&a.action))
            .count()
    };
    let count = |n: &str| json!({"Name": n, "Unit": "Count"});
    let mut directives = vec![
        json!({
            "Namespace": config.namespace,
            "Dimensions": [[], ["Outcome"]],
            "Metrics": [count("Images"), {"Name": "HandlingLatency", "Unit": "Milliseconds"}],
        }),
        json!({
            "Namespace": config.namespace,
            "Dimensions": [["Outcome", "Reason"]],
            "Metrics": [count("Images")],
        }),
        json!({
            "Namespace": config.namespace,
            "Dimensions": [[]],
            "Metrics": [
                count("ManifestsDeleted"),
                {"Name": "BytesReclaimed", "Unit": "Bytes"},
                count("TagsAdded"),
                count("TagsMoved"),
                count("IndexesWritten"),
                count("IndexSigned"),
                count("KeptInUse"),
                count("InUseUnknown"),
                count("Incomplete"),
                count("LambdaWouldRefuse"),
                count("LambdaUnknown"),
            ],
        }),
    ];
    let skipped = |codes: &[SkipCode]| {
        record
            .skipped
            .iter()
            .filter(|s| codes.contains(&s.reason.code()))
            .count()
    };
    let repository = record.repository.clone().unwrap_or_else(|| "unknown".to_owned());
    if config.per_repository {
        directives.push(json!({
            "Namespace": config.namespace,
            "Dimensions": [["Repository"]],
            "Metrics": [count("Images"), count("ManifestsDeleted"), {"Name": "BytesReclaimed", "Unit": "Bytes"}],
        }));
    }
    let mut doc = json!({
        "_aws": {"Timestamp": timestamp_ms, "CloudWatchMetrics": directives},
        "Outcome": outcome_dimension(record),
        "Reason": reason_dimension(record),
        "Images": 1,
        "HandlingLatency": record.duration_ms,
        "ManifestsDeleted": record.deleted,
        "BytesReclaimed": record.reclaimed_bytes,
        "TagsAdded": applied(|a| matches!(a, Action::AddTag { .. })),
        "TagsMoved": applied(|a| matches!(a, Action::MoveTag { .. })),
        "IndexesWritten": applied(|a| matches!(a, Action::PutIndex { .. })),
        // A handling that moved (or kept) a tag on a signed index; a sweep's
        // signature-gap record is counted by `SignatureGaps` instead.
        "IndexSigned": usize::from(
            !matches!(record.outcome, Outcome::Skipped { .. })
                && record.signing.as_ref().is_some_and(|s| !s.index.is_empty()),
        ),
        "KeptInUse": skipped(&[SkipCode::InUse, SkipCode::RecentlyPulled]),
        "InUseUnknown": skipped(&[SkipCode::InUseUnknown]),
        "Incomplete": usize::from(record.incomplete.is_some()),
        // Images made deployable by a tag that Lambda would refuse, or whose
        // verdict is unknown (`deployability` in the record).
        "LambdaWouldRefuse": record.deployability.iter().filter(|d| d.verdict.is_no()).count(),
        "LambdaUnknown": record.deployability.iter().filter(|d| d.verdict.is_unknown()).count(),
        // Not dimensions: searchable context in the log line.
        "repository": repository,
        "index_digest": record.index_digest,
        "trigger": record.trigger,
        "request_id": record.request_id,
    });
    if config.per_repository {
        doc["Repository"] = doc["repository"].clone();
    }
    Some(doc)
}

/// The EMF document of a scheduled sweep: the signature gaps it found
/// (nothing else: each image it enqueued has its own record and metrics).
pub fn sweep_emf(signature_gaps: usize, config: &MetricsConfig, timestamp_ms: i64) -> Value {
    json!({
        "_aws": {"Timestamp": timestamp_ms, "CloudWatchMetrics": [{
            "Namespace": config.namespace,
            "Dimensions": [[]],
            "Metrics": [{"Name": "SignatureGaps", "Unit": "Count"}],
        }]},
        "SignatureGaps": signature_gaps,
    })
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::decide::action::DeleteRole;
    use crate::engine::audit::{ActionRecord, Failure, Trigger};
    use crate::oci::digest::Digest;

    fn record(outcome: Outcome, is_final: bool) -> AuditRecord {
        let mut r = AuditRecord::new(Trigger::Push, Some("team/app"), SystemTime::UNIX_EPOCH);
        r.outcome = outcome;
        r.is_final = is_final;
        r.duration_ms = 42;
        r
    }

    /// Every metric named in a directive has a numeric value and every
    /// dimension a string value in the document: what CloudWatch requires.
    fn valid(doc: &Value) -> bool {
        let directives = doc["_aws"]["CloudWatchMetrics"].as_array().unwrap();
        directives.iter().all(|d| {
            d["Metrics"]
                .as_array()
                .unwrap()
                .iter()
                .all(|m| doc[m["Name"].as_str().unwrap()].is_number())
                && d["Dimensions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .flat_map(|set| set.as_array().unwrap())
                    .all(|dim| doc[dim.as_str().unwrap()].is_string())
        })
    }

    #[test]
    fn signed_indexes_kept_manifests_and_incomplete_handlings_are_counted_once() {
        use crate::decide::skip::{SkipReason, Skipped};
        use crate::oci::signature::{Signature, SignatureKind, Signing};
        let signed = Signing {
            index: vec![Signature::referrer(SignatureKind::Notation, &Digest::sha256_of(b"sig"))],
            image: Vec::new(),
        };
        let mut r = record(Outcome::Remediated, true);
        r.signing = Some(signed.clone());
        r.incomplete = Some(SkipCode::ReferrersUnverified);
        for reason in [
            SkipReason::InUse {
                by: Vec::new(),
                count: 1,
            },
            SkipReason::RecentlyPulled {
                pulled_at: "2026-12-01T00:00:00Z".into(),
                within_s: 60,
            },
            SkipReason::InUseUnknown { why: "denied".into() },
        ] {
            r.skipped.push(Skipped {
                action: None,
                digest: Some(Digest::sha256_of(b"x")),
                reason,
            });
        }
        let doc = emf(&r, &MetricsConfig::default(), 7).unwrap();
        assert!(valid(&doc), "{doc:#}");
        assert_eq!(
            (
                &doc["IndexSigned"],
                &doc["KeptInUse"],
                &doc["InUseUnknown"],
                &doc["Incomplete"]
            ),
            (&json!(1), &json!(2), &json!(1), &json!(1))
        );
        // A sweep's signature-gap record is a SignatureGaps, not a handling of a signed index.
        let mut gap = record(
            Outcome::Skipped {
                code: SkipCode::SignedAfterPromotion,
                reason: "sign the image".into(),
            },
            true,
        );
        gap.signing = Some(signed);
        assert_eq!(emf(&gap, &MetricsConfig::default(), 7).unwrap()["IndexSigned"], 0);
        assert_eq!(sweep_emf(3, &MetricsConfig::default(), 7)["SignatureGaps"], 3);
    }

    #[test]
    fn a_remediation_with_deletions_counts_its_actions() {
        let mut r = record(Outcome::Remediated, true);
        r.deleted = 2;
        r.reclaimed_bytes = 1234;
        r.actions.push(ActionRecord::new(
            Action::Delete {
                digest: Digest::sha256_of(b"x"),
                role: DeleteRole::Index,
                removes_tags: Vec::new(),
            },
            ActionOutcome::Applied,
        ));
        let doc = emf(&r, &MetricsConfig::default(), 7).unwrap();
        assert!(valid(&doc), "{doc:#}");
        assert_eq!(doc["Outcome"], "remediated");
        assert_eq!(doc["Reason"], "none");
        assert_eq!(doc["ManifestsDeleted"], 2);
        assert_eq!(doc["BytesReclaimed"], 1234);
        assert_eq!(doc["_aws"]["Timestamp"], 7);
        assert!(
            doc.get("Repository").is_none(),
            "no per-repository dimension by default"
        );
        let per_repo = emf(
            &r,
            &MetricsConfig {
                per_repository: true,
                ..MetricsConfig::default()
            },
            7,
        )
        .unwrap();
        assert!(valid(&per_repo));
        assert_eq!(per_repo["Repository"], "team/app");
    }

    #[test]
    fn failures_are_failed_only_when_no_retry_follows_and_checkpoints_are_not_counted() {
        let failure = Failure {
            code: "AccessDenied".into(),
            error: "no".into(),
            retryable: true,
        };
        let last = emf(
            &record(Outcome::Failed(failure.clone()), true),
            &MetricsConfig::default(),
            0,
        )
        .unwrap();
        assert_eq!(
            (last["Outcome"].as_str(), last["Reason"].as_str()),
            (Some("failed"), Some("AccessDenied"))
        );
        let again = emf(&record(Outcome::Failed(failure), false), &MetricsConfig::default(), 0).unwrap();
        assert_eq!(again["Outcome"], "retrying");
        let skipped = emf(
            &record(
                Outcome::Skipped {
                    code: crate::decide::skip::SkipCode::Superseded,
                    reason: "…".into(),
                },
                true,
            ),
            &MetricsConfig::default(),
            0,
        )
        .unwrap();
        assert!(valid(&skipped));
        assert_eq!(skipped["Reason"], "superseded");
        assert!(emf(&record(Outcome::InProgress, false), &MetricsConfig::default(), 0).is_none());
    }
}
