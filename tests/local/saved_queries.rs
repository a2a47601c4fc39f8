//! The template's saved Logs Insights queries are the queries the `audit`
//! command sends, so console users and CLI users get the same answers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ecr_remediator::decide::action::ActionKind;
use ecr_remediator::engine::audit::OutcomeKind;
use ecr_remediator::trail::filter::{DigestQuery, Filter, Order, records_query, stats_query};
use ecr_remediator::trail::query::MAX_ROWS;

/// The placeholder digest of the saved query (`audit show` takes any digest).
const PLACEHOLDER: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

/// The saved queries: name, the command it mirrors, the query.
fn expected() -> Vec<(&'static str, &'static str, String)> {
    vec![
        (
            "ecr-remediator/image-history",
            "ecr-remediator audit show DIGEST",
            records_query(
                &Filter {
                    digest: Some(DigestQuery::parse(PLACEHOLDER).unwrap()),
                    ..Filter::default()
                },
                Order::OldestFirst,
                MAX_ROWS,
            ),
        ),
        (
            "ecr-remediator/deletions",
            "ecr-remediator audit --action delete",
            records_query(
                &Filter {
                    action: Some(ActionKind::Delete),
                    ..Filter::default()
                },
                Order::NewestFirst,
                100,
            ),
        ),
        (
            "ecr-remediator/failures",
            "ecr-remediator audit --outcome failed",
            records_query(
                &Filter {
                    outcome: Some(OutcomeKind::Failed),
                    ..Filter::default()
                },
                Order::NewestFirst,
                100,
            ),
        ),
        (
            "ecr-remediator/stats",
            "ecr-remediator audit stats",
            stats_query(&Filter::default()),
        ),
    ]
}

/// `Name:` → the `QueryString: |` block under it (comment lines dropped).
fn saved(template: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let lines: Vec<&str> = template.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let Some(name) = line.trim().strip_prefix("Name: ecr-remediator/") else {
            continue;
        };
        let start = (i..lines.len()).find(|j| lines[*j].trim() == "QueryString: |").unwrap();
        let indent = lines[start + 1].len() - lines[start + 1].trim_start().len();
        let body: Vec<&str> = lines[start + 1..]
            .iter()
            .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() >= indent)
            .map(|l| l.get(indent..).unwrap_or(""))
            .filter(|l| !l.starts_with('#'))
            .collect();
        out.push((format!("ecr-remediator/{name}"), body.join("\n").trim_end().to_owned()));
    }
    out
}

#[test]
fn the_saved_queries_are_the_cli_queries() {
    let template = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/infra/template.yaml")).unwrap();
    let got = saved(&template);
    let want: Vec<(String, String)> = expected().into_iter().map(|(n, _, q)| (n.to_owned(), q)).collect();
    if std::env::var_os("PRINT_SAVED_QUERIES").is_some() {
        for (name, command, query) in expected() {
            println!("{name}  ({command})\n{query}\n");
        }
    }
    assert_eq!(got, want);
}
