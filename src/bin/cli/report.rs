//! How the CLI shows what a handling did or would do, in a few words.

use ecr_remediator::Digest;
use ecr_remediator::decide::action::{Action, DeleteRole};
use ecr_remediator::engine::audit::{ActionOutcome, AuditRecord, Outcome};
use ecr_remediator::trail::render;

/// One action in a few words, digests shortened as the tables show them.
pub(crate) fn brief(action: &Action) -> String {
    let short = |d: &Digest| render::short_digest(&d.to_string());
    match action {
        Action::AddTag { tag, digest, .. } => format!("tag {tag} -> {}", short(digest)),
        Action::MoveTag { tag, to, .. } => format!("move {tag} -> {}", short(to)),
        Action::PutIndex { tag, manifest, .. } => format!("write index {} as {tag}", short(manifest.digest())),
        Action::PutReferrer { manifest, subject, .. } => {
            format!("attach {} to {}", short(manifest.digest()), short(subject))
        }
        Action::Delete { digest, role, .. } => {
            let role = match role {
                DeleteRole::Index => "index",
                DeleteRole::Attestation => "attestation",
                DeleteRole::KeptIndex => "kept index",
            };
            format!("delete {role} {}", short(digest))
        }
    }
}

/// The outcome as a person reads it: with the mode acted in when it is not
/// the one asked for (promote falling back to per-platform tags).
pub(crate) fn outcome(record: &AuditRecord) -> String {
    let base = match &record.outcome {
        Outcome::Skipped { code, .. } => return format!("skipped ({code})"),
        Outcome::Planned => "would remediate".to_owned(),
        other => other.kind().to_string(),
    };
    match &record.policy {
        Some(p) if p.mode != p.requested_mode => format!("{base} ({} mode, not {})", p.mode, p.requested_mode),
        _ => base,
    }
}

/// Every change the handling did not make, with why: actions skipped when
/// attempted (a deletion the gate kept right before the call) and what the
/// plan left out (deletions deferred or kept, tags not taken).
fn not_done(record: &AuditRecord) -> Vec<String> {
    let short = |d: &Digest| render::short_digest(&d.to_string());
    let attempted = record.actions.iter().filter_map(|a| match &a.outcome {
        ActionOutcome::Skipped { reason } => Some(format!("not {}: {reason}", brief(&a.action))),
        _ => None,
    });
    let planned = record.skipped.iter().filter_map(|s| match (&s.action, &s.digest) {
        (Some(a), _) => Some(format!("not {}: {}", brief(a), s.reason)),
        (None, Some(d)) => Some(format!("{}: {}", short(d), s.reason)),
        // The handling as a whole: the outcome says it.
        (None, None) => None,
    });
    attempted.chain(planned).collect()
}

/// What changed (or would), or why nothing did; None when nothing needed doing.
pub(crate) fn detail(record: &AuditRecord) -> Option<String> {
    match &record.outcome {
        Outcome::Skipped { reason, .. } => Some(reason.clone()),
        Outcome::Failed(f) => Some(f.error.clone()),
        Outcome::Noop => {
            let why = not_done(record);
            (!why.is_empty()).then(|| why.join("; "))
        }
        Outcome::Remediated | Outcome::Planned => Some(
            record
                .actions
                .iter()
                .filter(|a| matches!(a.outcome, ActionOutcome::Applied | ActionOutcome::Planned))
                .map(|a| brief(&a.action))
                .chain(not_done(record))
                // What Lambda would make of a tag the handling made
                // deployable, when it is not a plain yes.
                .chain(
                    record
                        .deployability
                        .iter()
                        .filter(|d| d.verdict != ecr_remediator::oci::lambda::Verdict::Yes)
                        .map(|d| {
                            let text = d.verdict.describe();
                            let why = text.split_once(": ").map_or(text.as_str(), |(_, why)| why);
                            if d.verdict.is_no() {
                                format!("Lambda would refuse {}: {why}", d.tag)
                            } else {
                                format!("Lambda may refuse {}, not checked: {why}", d.tag)
                            }
                        }),
                )
                .collect::<Vec<_>>()
                .join("; "),
        ),
        Outcome::InProgress => None,
    }
}

/// A table row: repository, tag, short index digest, outcome, detail.
pub(crate) fn row(record: &AuditRecord) -> Vec<String> {
    let digest = record.index_digest.as_deref().unwrap_or_default();
    vec![
        record.repository.clone().unwrap_or_default(),
        record.tag.clone().unwrap_or_default(),
        render::short_digest(digest),
        outcome(record),
        detail(record).unwrap_or_else(|| "nothing to do".to_owned()),
    ]
}

/// The header of [`row`]s.
pub(crate) const HEADER: [&str; 5] = ["REPOSITORY", "TAG", "INDEX", "OUTCOME", "DETAIL"];
