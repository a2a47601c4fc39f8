//! What people ask of the audit trail, as flags, turned into CloudWatch Logs
//! Insights queries (pure). The same text goes to the template's saved
//! queries, so the console and the CLI give the same answers.
//!
//! Records reach the log group as EventBridge events (the record under
//! `detail`), so fields are named `detail.…`. Each question becomes one
//! `filter` line; a question Insights can only approximate (a digest or an
//! action anywhere in the record) is narrowed server-side with `like` and
//! checked exactly on the client by [`Filter::matches`].

use std::fmt::Write as _;

use serde_json::Value;

use crate::decide::action::ActionKind;
use crate::engine::audit::{AUDIT_SCHEMA, OutcomeKind};
use crate::oci::digest::Digest;
use crate::oci::names::{AccountId, ImageTag, RepositoryName};
use crate::vocabulary::Vocabulary;

/// The questions of one `audit` command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// This repository exactly.
    pub repository: Option<RepositoryName>,
    /// Repositories starting with this.
    pub repository_prefix: Option<String>,
    /// The index, or any manifest a record tagged, moved or deleted.
    pub digest: Option<DigestQuery>,
    /// The pushed tag.
    pub tag: Option<ImageTag>,
    /// The overall outcome.
    pub outcome: Option<OutcomeKind>,
    /// Records with at least one action of this kind.
    pub action: Option<ActionKind>,
    /// The account the image is in.
    pub account: Option<AccountId>,
    /// The triggering event's id (or a request's id).
    pub event_id: Option<String>,
}

/// An Insights string literal.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// An Insights regex literal matching `s` at the start.
fn prefix_regex(s: &str) -> String {
    let mut out = String::from("/^");
    for c in s.chars() {
        if !c.is_ascii_alphanumeric() {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('/');
    out
}

impl Filter {
    /// The filter lines, one per question, the record schema first.
    pub fn insights_lines(&self) -> Vec<String> {
        let mut lines = vec![format!("filter detail.schema = {}", quoted(AUDIT_SCHEMA))];
        if let Some(r) = &self.repository {
            lines.push(format!("filter detail.repository = {}", quoted(r.as_str())));
        }
        if let Some(p) = &self.repository_prefix {
            lines.push(format!("filter detail.repository like {}", prefix_regex(p)));
        }
        if let Some(d) = &self.digest {
            lines.push(format!("filter @message like {}", quoted(d.text())));
        }
        if let Some(t) = &self.tag {
            lines.push(format!("filter detail.tag = {}", quoted(t.as_str())));
        }
        if let Some(o) = self.outcome {
            lines.push(format!("filter detail.outcome = {}", quoted(o.as_str())));
        }
        if let Some(a) = self.action {
            // Compact or spaced JSON alike: `"action":"delete"`, `"action": "delete"`.
            lines.push(format!("filter @message like /\"action\":\\s*\"{}\"/", a.as_str()));
        }
        if let Some(a) = &self.account {
            lines.push(format!("filter detail.account = {}", quoted(a.as_str())));
        }
        if let Some(e) = &self.event_id {
            lines.push(format!("filter detail.event_id = {}", quoted(e)));
        }
        lines
    }

    /// The exact check of a record (the `detail` of a log event) against
    /// every question, including those the query only narrows.
    pub fn matches(&self, record: &Value) -> bool {
        let text = |k: &str| record.get(k).and_then(Value::as_str);
        let eq = |k: &str, want: Option<&str>| want.is_none_or(|w| text(k) == Some(w));
        eq("repository", self.repository.as_ref().map(RepositoryName::as_str))
            && self
                .repository_prefix
                .as_deref()
                .is_none_or(|p| text("repository").is_some_and(|r| r.starts_with(p)))
            && eq("tag", self.tag.as_ref().map(ImageTag::as_str))
            && eq("account", self.account.as_ref().map(AccountId::as_str))
            && eq("event_id", self.event_id.as_deref())
            && self.outcome.is_none_or(|o| text("outcome") == Some(o.as_str()))
            && self.action.is_none_or(|a| {
                actions(record).any(|act| act.get("action").and_then(Value::as_str) == Some(a.as_str()))
            })
            && self.digest.as_ref().is_none_or(|d| mentions(record, d))
    }
}

fn actions(record: &Value) -> impl Iterator<Item = &Value> {
    record.get("actions").and_then(Value::as_array).into_iter().flatten()
}

/// A digest as the CLI accepts it back: whole (`sha256:…`), or a prefix of
/// its hex as the tables print it (at least 6 characters, `sha256:`
/// optional). A prefix must name one image: see [`digests_matching`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestQuery {
    /// `sha256:` and the hex (all of it, or the prefix), lowercase.
    text: String,
    whole: bool,
}

/// Shortest digest prefix accepted.
pub const MIN_PREFIX: usize = 6;

impl DigestQuery {
    /// Parses a whole digest or a prefix of one.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Ok(d) = Digest::parse(s) {
            return Ok(Self::whole(&d));
        }
        let hex = s.strip_prefix("sha256:").unwrap_or(s);
        if hex.len() < MIN_PREFIX || hex.len() >= 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!(
                "{s:?} is neither a digest (sha256: and 64 hex characters) nor a prefix of one ({MIN_PREFIX} to 63 hex characters)"
            ));
        }
        Ok(DigestQuery {
            text: format!("sha256:{}", hex.to_ascii_lowercase()),
            whole: false,
        })
    }

    /// The query for exactly `digest`.
    pub fn whole(digest: &Digest) -> Self {
        DigestQuery {
            text: digest.to_string(),
            whole: true,
        }
    }

    /// What is searched for (`sha256:` and the hex or its prefix).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether this is a whole digest rather than a prefix.
    pub fn is_whole(&self) -> bool {
        self.whole
    }

    /// True when `value` (a digest as a record writes it) is this one.
    pub fn matches(&self, value: &str) -> bool {
        if self.whole {
            value == self.text
        } else {
            value.starts_with(&self.text)
        }
    }
}

impl std::str::FromStr for DigestQuery {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse(s)
    }
}

/// The digests a record is about: its index, and every manifest one of its
/// actions tagged, moved a tag from or to, wrote or deleted.
fn digests_of(record: &Value) -> impl Iterator<Item = &str> {
    record
        .get("index_digest")
        .and_then(Value::as_str)
        .into_iter()
        .chain(actions(record).flat_map(|a| {
            ["digest", "to", "from", "manifest", "replaces"]
                .into_iter()
                .filter_map(|k| a.get(k).and_then(Value::as_str))
        }))
}

/// True when the record is about `digest`: its index, or a manifest one of
/// its actions tagged, moved a tag from or to, wrote or deleted.
pub fn mentions(record: &Value, digest: &DigestQuery) -> bool {
    digests_of(record).any(|d| digest.matches(d))
}

/// The whole digests `query` matches in `records`: more than one means a
/// prefix that is ambiguous in the window.
pub fn digests_matching<'r>(records: impl IntoIterator<Item = &'r Value>, query: &DigestQuery) -> Vec<String> {
    let mut out: Vec<String> = records
        .into_iter()
        .flat_map(digests_of)
        .filter(|d| query.matches(d))
        .map(str::to_owned)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Which records first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Newest first (lists).
    NewestFirst,
    /// Oldest first (the history of one image).
    OldestFirst,
}

/// The query listing records.
pub fn records_query(filter: &Filter, order: Order, limit: u32) -> String {
    let mut q = String::from("fields @timestamp, @message");
    for line in filter.insights_lines() {
        let _ = write!(q, "\n| {line}");
    }
    let dir = match order {
        Order::NewestFirst => "desc",
        Order::OldestFirst => "asc",
    };
    let _ = write!(q, "\n| sort @timestamp {dir}\n| limit {limit}");
    q
}

/// The query counting records per repository and outcome, with deletions
/// and bytes reclaimed (checkpoints left out: their final record counts).
pub fn stats_query(filter: &Filter) -> String {
    let mut q = String::new();
    for line in filter.insights_lines() {
        if !q.is_empty() {
            q.push_str("\n| ");
        }
        q.push_str(&line);
    }
    q.push_str(
        "\n| filter detail.outcome != \"in_progress\"\
         \n| stats count(*) as records, sum(detail.deleted) as deleted, sum(detail.reclaimed_bytes) as reclaimed_bytes \
         by detail.repository, detail.outcome\n| sort records desc",
    );
    q
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn each_question_is_one_filter_line_with_safe_literals() {
        let d = Digest::sha256_of(b"x");
        let f = Filter {
            repository_prefix: Some("team-a/".into()),
            digest: Some(DigestQuery::whole(&d)),
            outcome: Some(OutcomeKind::Failed),
            action: Some(ActionKind::Delete),
            tag: Some(ImageTag::parse("v\"1").unwrap()),
            ..Filter::default()
        };
        let q = records_query(&f, Order::NewestFirst, 50);
        assert_eq!(
            q,
            format!(
                "fields @timestamp, @message\n| filter detail.schema = \"ecr-remediator/audit-record\"\n\
                 | filter detail.repository like /^team\\-a\\//\n| filter @message like \"{d}\"\n\
                 | filter detail.tag = \"v\\\"1\"\n| filter detail.outcome = \"failed\"\n\
                 | filter @message like /\"action\":\\s*\"delete\"/\n| sort @timestamp desc\n| limit 50"
            )
        );
        assert!(stats_query(&Filter::default()).starts_with("filter detail.schema = "));
    }

    #[test]
    fn the_client_check_is_exact_where_the_query_only_narrows() {
        let d = Digest::sha256_of(b"x");
        let record = json!({
            "repository": "team-a/api", "tag": "v1", "outcome": "remediated", "account": "111122223333",
            "index_digest": "sha256:0000",
            "actions": [{"action": "move_tag", "tag": "v1", "from": "sha256:0000", "to": d.to_string(), "outcome": "applied"}],
        });
        let f = |f: Filter| f.matches(&record);
        assert!(f(Filter::default()));
        assert!(f(Filter {
            digest: Some(DigestQuery::whole(&d)),
            ..Filter::default()
        }));
        assert!(!f(Filter {
            digest: Some(DigestQuery::whole(&Digest::sha256_of(b"y"))),
            ..Filter::default()
        }));
        // The short digest a table prints is accepted back.
        let short = &d.to_string()["sha256:".len().."sha256:".len() + 12];
        assert!(f(Filter {
            digest: Some(DigestQuery::parse(short).unwrap()),
            ..Filter::default()
        }));
        assert_eq!(
            digests_matching([&record], &DigestQuery::parse(short).unwrap()),
            vec![d.to_string()]
        );
        assert_eq!(
            digests_matching(
                [&record],
                &DigestQuery::parse("sha256:0000000").unwrap_or_else(|e| panic!("{e}"))
            )
            .len(),
            0
        );
        assert!(DigestQuery::parse("abc").is_err(), "too short to name one image");
        assert!(DigestQuery::parse("xyz123").is_err());
        assert!(f(Filter {
            action: Some(ActionKind::MoveTag),
            ..Filter::default()
        }));
        assert!(!f(Filter {
            action: Some(ActionKind::Delete),
            ..Filter::default()
        }));
        assert!(f(Filter {
            repository_prefix: Some("team-a/".into()),
            account: Some(AccountId::parse("111122223333").unwrap()),
            ..Filter::default()
        }));
        assert!(!f(Filter {
            repository: Some(RepositoryName::parse("team-a").unwrap()),
            ..Filter::default()
        }));
        assert!(!f(Filter {
            outcome: Some(OutcomeKind::Failed),
            ..Filter::default()
        }));
    }
}
