//! The audit record: one versioned JSON document per handled image.
//!
//! Written to an EventBridge bus (source [`AUDIT_SOURCE`], detail-type
//! [`AUDIT_DETAIL_TYPE`]) and as a JSON log line. A record larger than
//! EventBridge's entry limit is cut down by [`AuditRecord::to_bounded_json`]
//! with a `truncated` marker, never dropped.

use std::future::Future;
use std::time::SystemTime;

use serde::Serialize;

use crate::decide::action::Action;
use crate::decide::skip::SkipCode;
use crate::decide::skip::Skipped;
use crate::engine::registry::RegistryError;
use crate::oci::classify::{Classification, EntryClass, ManifestKind};
use crate::oci::digest::Digest;
use crate::oci::names::AccountId;
use crate::oci::signature::Signing;
use crate::policy::Mode;

/// The record's schema name.
pub const AUDIT_SCHEMA: &str = "ecr-remediator/audit-record";
/// The record's schema version; bumped on any incompatible change.
pub const AUDIT_SCHEMA_VERSION: u32 = 1;
/// EventBridge `source` of audit records.
pub const AUDIT_SOURCE: &str = "ecr-remediator";
/// EventBridge `detail-type` of audit records.
pub const AUDIT_DETAIL_TYPE: &str = "ECR Remediation Record";
/// The most detail bytes a record may take: EventBridge's 256 KiB entry limit,
/// less room for the source, detail-type and entry overhead.
pub const MAX_DETAIL_BYTES: usize = 256 * 1024 - 1024;

/// The most text one field of a record carries (an id, a name, a reason, a
/// note), in bytes: longer text, such as malformed input quoted in a
/// reason, is cut with a marker saying how much was left out, so every field
/// is bounded whatever the input (and quoting, which can double it).
pub const MAX_FIELD_BYTES: usize = 4096;

/// What started the handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// An ECR push event.
    Push,
    /// A person, with `ecr-remediator remediate`.
    Manual,
    /// A reconciliation sweep.
    Sweep,
    /// The follow-up a handling scheduled for itself (deletions deferred
    /// for the grace period after the push).
    FollowUp,
    /// An ECR replication event: the image arrived from another registry
    /// (cross-region or cross-account replication) and is handled as a push
    /// in this one.
    Replication,
}

/// The policy that applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicySummary {
    /// The rule's name, or `default`.
    pub rule: String,
    /// Why that rule applied: the repository glob that matched, or that no
    /// rule matched.
    pub source: String,
    /// The mode acted in.
    pub mode: Mode,
    /// The mode the policy asked for (differs when promote fell back to tag).
    pub requested_mode: Mode,
    /// Dry run.
    pub dry_run: bool,
    /// Whether orphan deletion is on.
    pub delete_orphans: bool,
    /// The repository's `ecr-remediator:mode` tag as read (absent when the
    /// repository has none or the rule ignores it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository_tag: Option<String>,
}

/// A runnable entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunnableEntry {
    /// Its digest.
    pub digest: Digest,
    /// `os/arch[/variant]`, when known.
    pub platform: Option<String>,
}

/// An attestation entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttestationEntry {
    /// Its digest.
    pub digest: Digest,
    /// The manifest it describes.
    pub subject: Option<Digest>,
    /// Predicate types of its statements, when its manifest was read.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub predicate_types: Vec<String>,
}

/// Any other entry (left alone).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OtherEntry {
    /// Its digest.
    pub digest: Digest,
    /// Its class (`signature`, `index`, `other`).
    pub class: String,
}

/// What the image was found to contain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct ClassificationSummary {
    /// `index`, `image`, ...
    pub kind: String,
    /// The manifest media type.
    pub media_type: String,
    /// Runnable entries.
    pub runnable: Vec<RunnableEntry>,
    /// Attestation entries.
    pub attestations: Vec<AttestationEntry>,
    /// Everything else.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub other: Vec<OtherEntry>,
}

impl ClassificationSummary {
    /// Summarises a classification; `child_kind` gives the kind of a child
    /// manifest that was read (for predicate types).
    pub fn of(c: &Classification, child_kind: impl Fn(&Digest) -> Option<ManifestKind>) -> Self {
        let mut out = ClassificationSummary {
            kind: c.kind.name().to_owned(),
            media_type: c.media_type.as_str().to_owned(),
            ..Default::default()
        };
        for e in &c.entries {
            match &e.class {
                EntryClass::Runnable { platform } => out.runnable.push(RunnableEntry {
                    digest: e.digest().clone(),
                    platform: platform.as_ref().map(ToString::to_string),
                }),
                EntryClass::Attestation { subject } => {
                    let predicate_types = match child_kind(e.digest()) {
                        Some(ManifestKind::Attestation { predicate_types, .. }) => predicate_types,
                        _ => Vec::new(),
                    };
                    out.attestations.push(AttestationEntry {
                        digest: e.digest().clone(),
                        subject: subject.clone(),
                        predicate_types,
                    });
                }
                other => out.other.push(OtherEntry {
                    digest: e.digest().clone(),
                    class: other.name().to_owned(),
                }),
            }
        }
        out
    }
}

/// How one action ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ActionOutcome {
    /// Done now.
    Applied,
    /// Found already done (a retry, or a duplicate event).
    Already,
    /// Planned and about to run (only in an `in_progress` checkpoint).
    Pending,
    /// A dry run: the real run on the same registry would attempt it.
    Planned,
    /// Pending in an earlier delivery's checkpoint whose final record was
    /// never written, and no longer in place (a newer push moved the tag
    /// on): it may or may not have happened; the registry cannot tell.
    Unconfirmed {
        /// What was found instead.
        reason: String,
    },
    /// Not done, for this reason.
    Skipped {
        /// Why.
        reason: String,
    },
    /// Attempted and failed.
    Failed(Failure),
}

/// A failure, as recorded for one action or for the whole record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// Stable error code.
    pub code: String,
    /// The error.
    pub error: String,
    /// Whether a retry may succeed (for the record: the invocation then fails so it is retried).
    pub retryable: bool,
}

impl From<&RegistryError> for Failure {
    fn from(e: &RegistryError) -> Self {
        Failure {
            code: e.code().to_owned(),
            error: e.to_string(),
            retryable: e.is_retryable(),
        }
    }
}

/// One action and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActionRecord {
    /// The action.
    #[serde(flatten)]
    pub action: Action,
    /// Its outcome.
    #[serde(flatten)]
    pub outcome: ActionOutcome,
    /// For a deletion: the storage it frees (applied), or is expected to
    /// free (pending, in a checkpoint).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Set on an action an earlier delivery of the same event applied and
    /// this record confirmed against the registry (that delivery's final
    /// record was never written): its attempt (SQS `ApproximateReceiveCount`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub earlier_attempt: Option<u32>,
}

impl ActionRecord {
    /// An action and how it ended, nothing more known.
    pub fn new(action: Action, outcome: ActionOutcome) -> Self {
        ActionRecord {
            action,
            outcome,
            bytes: None,
            earlier_attempt: None,
        }
    }
}

/// The overall outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// At least one write was made and nothing failed.
    Remediated,
    /// Nothing needed doing (or it was all done already).
    Noop,
    /// A dry run with something to do: its actions are `planned`, what the
    /// real run on the same registry would attempt. Nothing was written.
    Planned,
    /// Not handled, for this reason.
    Skipped {
        /// Stable reason code.
        code: SkipCode,
        /// Explanation.
        reason: String,
    },
    /// Something failed.
    Failed(Failure),
    /// A checkpoint written right before deletions, listing them, so that no
    /// deletion is ever applied without being in the audit trail; the final
    /// record of the same handling follows it.
    InProgress,
}

crate::vocabulary::vocabulary! {
    /// The kind of an [`Outcome`]: the record's `outcome` field, and what
    /// `audit --outcome` and the metrics name.
    pub enum OutcomeKind {
        /// At least one write was made and nothing failed.
        Remediated = "remediated",
        /// Nothing needed doing (or it was all done already).
        Noop = "noop",
        /// A dry run with something to do (nothing written).
        Planned = "planned",
        /// Not handled, for a reason.
        Skipped = "skipped",
        /// Something failed.
        Failed = "failed",
        /// A checkpoint written right before deletions.
        InProgress = "in_progress",
    }
}

impl Outcome {
    /// Its kind.
    pub fn kind(&self) -> OutcomeKind {
        match self {
            Outcome::Remediated => OutcomeKind::Remediated,
            Outcome::Noop => OutcomeKind::Noop,
            Outcome::Planned => OutcomeKind::Planned,
            Outcome::Skipped { .. } => OutcomeKind::Skipped,
            Outcome::Failed(_) => OutcomeKind::Failed,
            Outcome::InProgress => OutcomeKind::InProgress,
        }
    }
}

/// What truncation removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Truncation {
    /// Size of the full record.
    pub original_bytes: usize,
    /// Action records left out (from the end).
    pub actions_omitted: usize,
    /// Classification entries left out (from the end of each list).
    pub entries_omitted: usize,
    /// Planner skip records left out.
    pub skipped_omitted: usize,
    /// Notes left out.
    pub notes_omitted: usize,
    /// Deployability verdicts and signatures left out (from the end of each list).
    #[serde(skip_serializing_if = "is_zero")]
    pub other_omitted: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// One audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditRecord {
    /// [`AUDIT_SCHEMA`].
    pub schema: &'static str,
    /// [`AUDIT_SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The triggering event's id.
    pub event_id: Option<String>,
    /// The Lambda request id of the invocation that handled it, when run in Lambda.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Account.
    pub account: Option<AccountId>,
    /// Region.
    pub region: Option<String>,
    /// Repository (absent only for an event too malformed to name one).
    pub repository: Option<String>,
    /// The handled image (index) digest.
    pub index_digest: Option<String>,
    /// The pushed tag.
    pub tag: Option<String>,
    /// What started it.
    pub trigger: Trigger,
    /// The policy applied.
    pub policy: Option<PolicySummary>,
    /// Classification.
    pub classification: Option<ClassificationSummary>,
    /// Every planned action with its outcome, in order.
    pub actions: Vec<ActionRecord>,
    /// What the planner skipped and why.
    pub skipped: Vec<Skipped>,
    /// Explanations.
    pub notes: Vec<String>,
    /// Manifests this handling deleted (applied deletions).
    pub deleted: u32,
    /// Their size as `DescribeImages` reported it right before deleting.
    pub reclaimed_bytes: u64,
    /// When deletions wait for the grace period after the push: when a
    /// follow-up will attempt them (RFC 3339), every check run again then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deferred_until: Option<String>,
    /// Set when the handling could not finish what it planned and a
    /// follow-up retries it (`deferred_until` says when): why, as a code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incomplete: Option<SkipCode>,
    /// For a promotion (or a fallback because of signatures): what signs
    /// the pushed index and what signs the promoted image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing: Option<Signing>,
    /// The images this handling makes deployable by a tag, with Lambda's
    /// verdict on each (`yes`, `no` with reasons, `unknown` with what could
    /// not be checked).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deployability: Vec<crate::decide::planned::Deployable>,
    /// For a replicated image: the registry it was replicated from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicated_from: Option<crate::engine::ReplicaSource>,
    /// Overall outcome.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// Whether this is the last record of this image's handling for this
    /// event: false for an `in_progress` checkpoint and for a retryable
    /// failure that will be delivered again.
    #[serde(rename = "final")]
    pub is_final: bool,
    /// Delivery attempt of the event (SQS receive count), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// Start time, RFC 3339 UTC.
    pub started_at: String,
    /// Duration in milliseconds.
    pub duration_ms: u64,
    /// Present when the record was cut to fit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncated: Option<Truncation>,
}

impl AuditRecord {
    /// A record with only its identity filled in, outcome `noop`.
    pub fn new(trigger: Trigger, repository: Option<&str>, started: SystemTime) -> Self {
        AuditRecord {
            schema: AUDIT_SCHEMA,
            schema_version: AUDIT_SCHEMA_VERSION,
            event_id: None,
            request_id: None,
            account: None,
            region: None,
            repository: repository.map(str::to_owned),
            index_digest: None,
            tag: None,
            trigger,
            policy: None,
            classification: None,
            actions: Vec::new(),
            skipped: Vec::new(),
            notes: Vec::new(),
            deleted: 0,
            reclaimed_bytes: 0,
            deferred_until: None,
            incomplete: None,
            signing: None,
            deployability: Vec::new(),
            replicated_from: None,
            outcome: Outcome::Noop,
            is_final: true,
            attempt: None,
            started_at: rfc3339(started),
            duration_ms: 0,
            truncated: None,
        }
    }

    /// The record as compact JSON of at most `limit` bytes, cutting lists
    /// from the end (with a `truncated` marker) when it is larger. Identity,
    /// policy and outcome are always kept.
    pub fn to_bounded_json(&self, limit: usize) -> String {
        let full = bounded_fields(self);
        if full.len() <= limit {
            return full;
        }
        let signing = self.signing.as_ref().map_or(0, |s| s.index.len().max(s.image.len()));
        let mut keep = self
            .actions
            .len()
            .max(self.skipped.len())
            .max(self.notes.len())
            .max(self.deployability.len())
            .max(signing)
            .max(
                self.classification
                    .as_ref()
                    .map_or(0, |c| c.runnable.len().max(c.attestations.len()).max(c.other.len())),
            );
        loop {
            keep /= 2;
            let cut = self.cut(keep, full.len());
            let text = bounded_fields(&cut);
            if text.len() <= limit {
                return text;
            }
            if keep == 0 {
                // Every list is empty and every field within its bound: what
                // is left is the identity, the policy and the outcome, far
                // below any limit a caller gives; cut the policy too if not.
                let mut bare = cut;
                bare.policy = None;
                bare.classification = None;
                return bounded_fields(&bare);
            }
        }
    }

    fn cut(&self, keep: usize, original_bytes: usize) -> AuditRecord {
        let mut r = self.clone();
        let mut entries_omitted = 0;
        if let Some(c) = r.classification.as_mut() {
            entries_omitted += c.runnable.len().saturating_sub(keep)
                + c.attestations.len().saturating_sub(keep)
                + c.other.len().saturating_sub(keep);
            c.runnable.truncate(keep);
            c.attestations.truncate(keep);
            c.other.truncate(keep);
        }
        let t = Truncation {
            original_bytes,
            actions_omitted: r.actions.len().saturating_sub(keep),
            entries_omitted,
            skipped_omitted: r.skipped.len().saturating_sub(keep),
            notes_omitted: r.notes.len().saturating_sub(keep),
            other_omitted: 0,
        };
        r.actions.truncate(keep);
        r.skipped.truncate(keep);
        r.notes.truncate(keep);
        let mut t = t;
        t.other_omitted = r.deployability.len().saturating_sub(keep);
        r.deployability.truncate(keep);
        if let Some(signing) = r.signing.as_mut() {
            t.other_omitted += signing.index.len().saturating_sub(keep) + signing.image.len().saturating_sub(keep);
            signing.index.truncate(keep);
            signing.image.truncate(keep);
        }
        r.truncated = Some(t);
        r
    }

    /// The full record as compact JSON (unbounded: see [`Self::to_bounded_json`]).
    pub fn to_json(&self) -> String {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"schema\":\"{AUDIT_SCHEMA}\",\"error\":\"{e}\"}}"))
    }

    /// Whether the invocation that produced this record should fail (so it is retried).
    pub fn needs_retry(&self) -> bool {
        matches!(&self.outcome, Outcome::Failed(f) if f.retryable)
    }
}

/// Could not write an audit record.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The bus refused the record for good: the same record from the same
    /// principal would be refused again (`AccessDeniedException` when the
    /// bus's policy does not admit the caller, a malformed entry), so it is
    /// not retried.
    #[error("audit record refused by {destination}: {code}: {message}{hint}")]
    Refused {
        /// Whom or what it refuses.
        of: Refusal,
        /// Where it was sent.
        destination: String,
        /// The error code.
        code: String,
        /// The message.
        message: String,
        /// What to change, when known (begins with a separator), else empty.
        hint: &'static str,
    },
    /// The bus accepted the call but rejected the entry, for now (throttled,
    /// an internal failure): worth another try.
    #[error("audit record rejected by {destination}: {code}: {message}")]
    Rejected {
        /// Where it was sent.
        destination: String,
        /// The error code.
        code: String,
        /// The message.
        message: String,
    },
    /// The call failed.
    #[error("could not write the audit record to {destination}: {message}")]
    Unavailable {
        /// Where it was sent.
        destination: String,
        /// What happened.
        message: String,
    },
    /// Reading the trail back failed.
    #[error("could not read the audit trail in {source_name}: {message}")]
    Unreadable {
        /// What was read (a log group).
        source_name: String,
        /// What happened.
        message: String,
    },
}

impl AuditError {
    /// Whether the trail refused the record for good: another try of the
    /// same record by the same caller would be refused too.
    pub fn is_refusal(&self) -> bool {
        matches!(self, AuditError::Refused { .. })
    }

    /// Whether the trail refuses the caller: every record it sends would be
    /// refused, so nothing more should be attempted under it.
    pub fn refuses_the_caller(&self) -> bool {
        matches!(
            self,
            AuditError::Refused {
                of: Refusal::Caller,
                ..
            }
        )
    }
}

/// What a refused record says about the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The caller may not write records there: every record it sends is
    /// refused (the bus's policy, its own IAM policy).
    Caller,
    /// This record was refused (its content); another may go through.
    Record,
}

/// Where audit records go.
pub trait AuditSink: Sync {
    /// Writes one record; an error means it was not stored.
    fn write(&self, record: &AuditRecord) -> impl Future<Output = Result<(), AuditError>> + Send;

    /// The records already in the trail about `event_id`'s handling of
    /// `index`, written from `since_ms` on, as written (JSON), for a
    /// redelivery to reconcile (see `crate::decide::checkpoint`). `None`
    /// when this sink cannot be read back (the default).
    fn earlier_records(
        &self,
        event_id: &str,
        index: &crate::oci::digest::Digest,
        since_ms: i64,
    ) -> impl Future<Output = Result<Option<Vec<serde_json::Value>>, AuditError>> + Send {
        let _ = (event_id, index, since_ms);
        async { Ok(None) }
    }
}

/// Writes `record` to `sink`, retrying every failure but a refusal with
/// `policy`'s backoff and never waiting past `deadline`; the last error when
/// none succeeded.
pub async fn write_with_retries<A: AuditSink>(
    sink: &A,
    record: &AuditRecord,
    policy: &crate::engine::retry::RetryPolicy,
    deadline: Option<tokio::time::Instant>,
) -> Result<(), AuditError> {
    let mut jitter = crate::engine::retry::Jitter::new();
    let mut attempt = 1;
    loop {
        let Err(e) = sink.write(record).await else {
            return Ok(());
        };
        if e.is_refusal() {
            return Err(e);
        }
        match policy.backoff(attempt, jitter.next_unit()) {
            Some(wait) if deadline.is_none_or(|d| tokio::time::Instant::now() + wait < d) => {
                tracing::warn!(error = %e, attempt, "audit record not written; retrying");
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            _ => return Err(e),
        }
    }
}

/// The audit record as one JSON log line on stdout (`{"audit_record": {...}}`),
/// so CloudWatch Logs Insights can query its fields.
pub fn log_line(record: &AuditRecord) -> String {
    format!("{{\"audit_record\":{}}}", record.to_bounded_json(MAX_DETAIL_BYTES))
}

/// `record` as compact JSON with every string cut to [`MAX_FIELD_BYTES`];
/// when any was, `fields_cut` says how many.
fn bounded_fields(record: &AuditRecord) -> String {
    let Ok(mut value) = serde_json::to_value(record) else {
        return record.to_json();
    };
    let cut = cut_long_strings(&mut value, MAX_FIELD_BYTES);
    if cut > 0
        && let Some(object) = value.as_object_mut()
    {
        object.insert("fields_cut".to_owned(), serde_json::Value::from(cut));
    }
    value.to_string()
}

/// Cuts every string in `value` longer than `max` bytes (at a character
/// boundary, with a marker); returns how many were cut.
fn cut_long_strings(value: &mut serde_json::Value, max: usize) -> usize {
    use serde_json::Value;
    match value {
        Value::String(s) if s.len() > max => {
            let mut end = max;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            let left_out = s.len() - end;
            s.truncate(end);
            s.push_str(&format!("… [{left_out} more bytes cut]"));
            1
        }
        Value::Array(items) => items.iter_mut().map(|v| cut_long_strings(v, max)).sum(),
        Value::Object(fields) => fields.values_mut().map(|v| cut_long_strings(v, max)).sum(),
        _ => 0,
    }
}

pub use crate::time::{now_ms, rfc3339};

#[cfg(test)]
mod tests;
