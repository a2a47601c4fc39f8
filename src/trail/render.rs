//! The trail's answers as people read them: an aligned table, CSV for
//! compliance exports (RFC 4180), or the records as written (JSON lines).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::trail::query::{Found, StatsRow};

/// The columns of the record table and CSV.
pub const COLUMNS: [&str; 8] = [
    "TIME",
    "ACCOUNT",
    "REPOSITORY",
    "TAG",
    "INDEX",
    "OUTCOME",
    "ACTIONS",
    "REASON",
];

fn text<'v>(record: &'v Value, key: &str) -> &'v str {
    record.get(key).and_then(Value::as_str).unwrap_or("")
}

/// `move_tag 1, delete 2`: the applied actions by kind (planned ones in a
/// checkpoint or a dry run are counted as such).
pub fn actions_summary(record: &Value) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for a in record.get("actions").and_then(Value::as_array).into_iter().flatten() {
        let kind = a.get("action").and_then(Value::as_str).unwrap_or("?");
        let outcome = a.get("outcome").and_then(Value::as_str).unwrap_or("?");
        let key = match outcome {
            "applied" => kind.to_owned(),
            other => format!("{kind} ({other})"),
        };
        *counts.entry(key).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why: the skip code and reason, or the failure code and error.
pub fn reason(record: &Value) -> String {
    let (code, why) = match text(record, "outcome") {
        "skipped" => (text(record, "code"), text(record, "reason")),
        "failed" => (text(record, "code"), text(record, "error")),
        _ => return String::new(),
    };
    // Most reasons already begin with their code ("superseded: …").
    if why.starts_with(code) {
        why.to_owned()
    } else {
        format!("{code}: {why}")
    }
}

/// The digest without its algorithm, first 12 hex characters.
pub fn short_digest(d: &str) -> String {
    let hex = d.split_once(':').map_or(d, |(_, h)| h);
    hex.chars().take(12).collect()
}

fn cells(found: &Found, full_digest: bool) -> [String; 8] {
    let r = &found.record;
    let index = text(r, "index_digest");
    [
        found.timestamp.clone(),
        text(r, "account").to_owned(),
        text(r, "repository").to_owned(),
        text(r, "tag").to_owned(),
        if full_digest {
            index.to_owned()
        } else {
            short_digest(index)
        },
        text(r, "outcome").to_owned(),
        actions_summary(r),
        reason(r),
    ]
}

fn clip(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// An aligned table: one row per record, the reason clipped to `reason_width`.
pub fn table(found: &[Found], reason_width: usize) -> String {
    let rows: Vec<[String; 8]> = found
        .iter()
        .map(|f| {
            let mut c = cells(f, false);
            c[7] = clip(&c[7], reason_width);
            c
        })
        .collect();
    aligned(&COLUMNS, rows.iter().map(|r| r.to_vec()).collect())
}

/// A plain table as `gh` and the AWS CLI print them: a header row, columns
/// two spaces apart, no borders, nothing wrapped or cut (the caller clips).
pub fn aligned(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut t = comfy_table::Table::new();
    t.load_style(comfy_table::presets::NOTHING)
        .set_content_arrangement(comfy_table::ContentArrangement::Disabled)
        .set_header(header.iter().map(comfy_table::Cell::new));
    for r in rows {
        t.add_row(r);
    }
    let last = header.len().saturating_sub(1);
    for (i, column) in t.column_iter_mut().enumerate() {
        column.set_padding((0, if i == last { 0 } else { 2 }));
    }
    let mut out = String::new();
    for line in t.lines() {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// One CSV cell. A value a spreadsheet would run as a formula (starting
/// with `=`, `+`, `-`, `@`, a tab or a carriage return: tags, event ids and
/// reasons come from whoever pushes or sends) is neutralised as OWASP's CSV
/// injection guidance says: a leading `'`, and the cell quoted.
fn csv_field(s: &str) -> String {
    let formula = s.starts_with(['=', '+', '-', '@', '\t', '\r']);
    if formula {
        format!("\"'{}\"", s.replace('"', "\"\""))
    } else if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// CSV with a header: the table's columns (full digest, full reason), then
/// the event id and request id.
pub fn csv(found: &[Found]) -> String {
    let mut out = String::new();
    let header: Vec<String> = COLUMNS
        .iter()
        .map(|c| c.to_lowercase())
        .chain(["event_id".to_owned(), "request_id".to_owned()])
        .collect();
    out.push_str(&header.join(","));
    out.push_str("\r\n");
    for f in found {
        let mut row: Vec<String> = cells(f, true).to_vec();
        row.push(text(&f.record, "event_id").to_owned());
        row.push(text(&f.record, "request_id").to_owned());
        out.push_str(&row.iter().map(|c| csv_field(c)).collect::<Vec<_>>().join(","));
        out.push_str("\r\n");
    }
    out
}

/// The records as written, one JSON document per line.
pub fn json_lines(found: &[Found]) -> String {
    found.iter().map(|f| format!("{}\n", f.record)).collect()
}

/// Totals of a stats answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Totals {
    /// Records.
    pub records: u64,
    /// Manifests deleted.
    pub deleted: u64,
    /// Bytes reclaimed.
    pub reclaimed_bytes: u64,
    /// Records by outcome.
    pub by_outcome: BTreeMap<String, u64>,
}

/// Sums the rows.
pub fn totals(rows: &[StatsRow]) -> Totals {
    let mut t = Totals::default();
    for r in rows {
        t.records += r.records;
        t.deleted += r.deleted;
        t.reclaimed_bytes += r.reclaimed_bytes;
        *t.by_outcome.entry(r.outcome.clone()).or_default() += r.records;
    }
    t
}

/// The stats table, with a total line.
pub fn stats_table(rows: &[StatsRow]) -> String {
    let header = ["REPOSITORY", "OUTCOME", "RECORDS", "DELETED", "BYTES RECLAIMED"];
    let t = totals(rows);
    let mut body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.repository.clone(),
                r.outcome.clone(),
                r.records.to_string(),
                r.deleted.to_string(),
                r.reclaimed_bytes.to_string(),
            ]
        })
        .collect();
    body.push(vec![
        "(all)".into(),
        "".into(),
        t.records.to_string(),
        t.deleted.to_string(),
        t.reclaimed_bytes.to_string(),
    ]);
    aligned(&header, body)
}

/// The stats as CSV.
pub fn stats_csv(rows: &[StatsRow]) -> String {
    let mut out = String::from("repository,outcome,records,deleted,reclaimed_bytes\r\n");
    for r in rows {
        out.push_str(&format!(
            "{},{},{},{},{}\r\n",
            csv_field(&r.repository),
            csv_field(&r.outcome),
            r.records,
            r.deleted,
            r.reclaimed_bytes
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn found(record: Value) -> Found {
        Found {
            timestamp: "2026-11-23 12:00:00.000".into(),
            record,
        }
    }

    #[test]
    fn table_and_csv_show_what_happened_and_why() {
        let records = vec![
            found(
                json!({"repository": "team/app", "tag": "v1", "index_digest": "sha256:0123456789abcdef0123",
                "outcome": "remediated", "account": "111122223333", "event_id": "e1", "request_id": "r1",
                "actions": [{"action": "move_tag", "outcome": "applied"}, {"action": "delete", "outcome": "applied"},
                            {"action": "delete", "outcome": "skipped", "reason": "tagged"}]}),
            ),
            found(
                json!({"repository": "team/app", "tag": "v2", "outcome": "skipped", "code": "superseded",
                "reason": "superseded: the tag now points to sha256:9, a newer push", "actions": []}),
            ),
        ];
        let t = table(&records, 40);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("TIME") && lines[0].ends_with("REASON"), "{t}");
        assert!(
            lines[1].contains("0123456789ab ") && lines[1].contains("delete 1, delete (skipped) 1, move_tag 1"),
            "{t}"
        );
        assert!(
            lines[2].ends_with("…") && lines[2].contains("  superseded: the tag now"),
            "{t}"
        );
        let c = csv(&records);
        let rows: Vec<&str> = c.split("\r\n").collect();
        assert_eq!(
            rows[0],
            "time,account,repository,tag,index,outcome,actions,reason,event_id,request_id"
        );
        assert!(
            rows[1].contains(",sha256:0123456789abcdef0123,") && rows[1].ends_with(",e1,r1"),
            "{c}"
        );
        assert!(rows[1].contains("\"delete 1, delete (skipped) 1, move_tag 1\""), "{c}");
        assert_eq!(json_lines(&records).lines().count(), 2);
    }

    #[test]
    fn csv_cells_a_spreadsheet_would_run_are_neutralised() {
        let records = vec![found(json!({
            "repository": "team/app", "tag": "=HYPERLINK(\"http://x\",\"y\")", "outcome": "skipped",
            "reason": "-2+3", "event_id": "+cmd|' /C calc'!A0", "request_id": "@SUM(1,2)", "account": "\t1"
        }))];
        let c = csv(&records);
        let row = c.split("\r\n").nth(1).unwrap();
        for cell in [
            "\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\"",
            "\"'-2+3\"",
            "\"'+cmd|' /C calc'!A0\"",
            "\"'@SUM(1,2)\"",
            "\"'\t1\"",
        ] {
            assert!(row.contains(cell), "{cell} in {row}");
        }
        // Nothing else is touched: no cell of the row starts a formula.
        assert!(row.contains(",team/app,"), "{row}");
        for cell in row.split(',') {
            assert!(!cell.starts_with(['=', '+', '-', '@']), "{cell} in {row}");
        }
        assert_eq!(csv_field("sha256:ab"), "sha256:ab");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
    }

    #[test]
    fn stats_add_up() {
        let rows = vec![
            StatsRow {
                repository: "a".into(),
                outcome: "remediated".into(),
                records: 3,
                deleted: 4,
                reclaimed_bytes: 100,
            },
            StatsRow {
                repository: "b".into(),
                outcome: "failed".into(),
                records: 1,
                deleted: 0,
                reclaimed_bytes: 0,
            },
        ];
        let t = totals(&rows);
        assert_eq!((t.records, t.deleted, t.reclaimed_bytes), (4, 4, 100));
        assert!(stats_table(&rows).lines().last().unwrap().starts_with("(all)"));
        assert_eq!(stats_csv(&rows).lines().count(), 3);
    }
}
