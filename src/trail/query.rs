//! Running Insights queries: polling with progress and a timeout, retries
//! of throttled calls, and splitting the window past the 10,000-row limit.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use crate::engine::audit::{AUDIT_DETAIL_TYPE, AUDIT_SOURCE};
use crate::trail::filter::{Filter, Order, records_query, stats_query};
use crate::trail::{Insights, QueryPage, QueryStatus, TrailError};

/// Most rows one Insights query returns.
pub const MAX_ROWS: u32 = 10_000;

/// A time window, in epoch milliseconds (both ends included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Start.
    pub start_ms: i64,
    /// End.
    pub end_ms: i64,
}

/// Told how a query is going (the CLI draws a progress line).
pub trait QueryProgress {
    /// A poll: the status, events matched and bytes scanned so far.
    fn poll(&mut self, status: &QueryStatus, records_matched: f64, bytes_scanned: f64);
}

/// A [`QueryProgress`] that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl QueryProgress for Silent {
    fn poll(&mut self, _: &QueryStatus, _: f64, _: f64) {}
}

/// How queries run.
#[derive(Debug, Clone, Copy)]
pub struct Runner {
    /// Give up on (and stop) a query after this long.
    pub timeout: Duration,
    /// First wait between polls (doubles up to 2 s).
    pub poll: Duration,
    /// Attempts per call when throttled or unavailable.
    pub attempts: u32,
}

impl Default for Runner {
    fn default() -> Self {
        Runner {
            timeout: Duration::from_secs(300),
            poll: Duration::from_millis(250),
            attempts: 6,
        }
    }
}

/// Which records of a window, and how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Take {
    /// Newest or oldest first.
    pub order: Order,
    /// At most this many (0: all).
    pub limit: usize,
}

/// One audit record found in the trail.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    /// When the log event was stored (`@timestamp`, as Insights prints it, UTC).
    pub timestamp: String,
    /// The record as written (the event's `detail`).
    pub record: Value,
}

impl Runner {
    async fn call<T, F, Fut>(&self, mut f: F) -> Result<T, TrailError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, TrailError>>,
    {
        let mut wait = Duration::from_millis(200);
        let mut attempt = 1;
        loop {
            match f().await {
                Err(TrailError::Unavailable { retryable: true, .. }) if attempt < self.attempts => {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Runs one query to completion and returns its rows.
    pub async fn run<I: Insights>(
        &self,
        insights: &I,
        log_group: &str,
        window: Window,
        query: &str,
        limit: u32,
        progress: &mut impl QueryProgress,
    ) -> Result<Vec<Vec<(String, String)>>, TrailError> {
        let start_s = window.start_ms.div_euclid(1000);
        let end_s = window.end_ms.div_euclid(1000);
        let id = self
            .call(|| insights.start_query(log_group, start_s, end_s, query, limit))
            .await?;
        let started = tokio::time::Instant::now();
        let mut wait = self.poll;
        loop {
            let page: QueryPage = self.call(|| insights.query_results(&id)).await?;
            progress.poll(&page.status, page.records_matched, page.bytes_scanned);
            match page.status {
                QueryStatus::Complete => return Ok(page.rows),
                QueryStatus::Scheduled | QueryStatus::Running => {}
                QueryStatus::Failed => {
                    return Err(TrailError::QueryEnded {
                        status: "Failed".into(),
                    });
                }
                QueryStatus::Cancelled => {
                    return Err(TrailError::QueryEnded {
                        status: "Cancelled".into(),
                    });
                }
                QueryStatus::Timeout => {
                    return Err(TrailError::QueryEnded {
                        status: "Timeout".into(),
                    });
                }
                QueryStatus::Other(s) => return Err(TrailError::QueryEnded { status: s }),
            }
            if started.elapsed() + wait > self.timeout {
                // Best effort: a query left running costs scanning, not correctness.
                let _ = insights.stop_query(&id).await;
                return Err(TrailError::Timeout {
                    seconds: self.timeout.as_secs(),
                });
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(2));
        }
    }

    /// The records matching `filter` in `window`, newest or oldest first, at
    /// most `limit` of them (0: all). A window whose answer fills a query is
    /// split in two halves, each queried on its own, until every part fits.
    pub async fn records<I: Insights>(
        &self,
        insights: &I,
        log_group: &str,
        window: Window,
        filter: &Filter,
        take: Take,
        progress: &mut impl QueryProgress,
    ) -> Result<Vec<Found>, TrailError> {
        let Take { order, limit } = take;
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        // Windows still to query, the next one last.
        let mut todo = vec![window];
        while let Some(w) = todo.pop() {
            if limit > 0 && out.len() >= limit {
                break;
            }
            let want = if limit == 0 {
                MAX_ROWS
            } else {
                u32::try_from(limit - out.len()).unwrap_or(MAX_ROWS).min(MAX_ROWS)
            };
            let query = records_query(filter, order, want);
            let rows = self.run(insights, log_group, w, &query, want, progress).await?;
            let full = rows.len() >= MAX_ROWS as usize;
            // A full answer may hide more: split when the window can be split
            // and this part was not asked for fewer rows than it holds.
            if full && want == MAX_ROWS && w.end_ms - w.start_ms >= 2000 {
                let mid = w.start_ms + (w.end_ms - w.start_ms) / 2;
                let (early, late) = (
                    Window {
                        start_ms: w.start_ms,
                        end_ms: mid,
                    },
                    Window {
                        start_ms: mid + 1,
                        end_ms: w.end_ms,
                    },
                );
                match order {
                    Order::NewestFirst => todo.extend([early, late]),
                    Order::OldestFirst => todo.extend([late, early]),
                }
                continue;
            }
            if full && want == MAX_ROWS {
                tracing::warn!(
                    start_ms = w.start_ms,
                    end_ms = w.end_ms,
                    "over 10,000 records within two seconds: some are not shown"
                );
            }
            for row in rows {
                let Some(found) = found(&row)? else {
                    continue;
                };
                let ptr = field(&row, "@ptr").unwrap_or_default().to_owned();
                if (ptr.is_empty() || seen.insert(ptr)) && filter.matches(&found.record) {
                    out.push(found);
                }
            }
        }
        if limit > 0 {
            out.truncate(limit);
        }
        Ok(out)
    }

    /// Counts per repository and outcome (see [`stats_query`]).
    pub async fn stats<I: Insights>(
        &self,
        insights: &I,
        log_group: &str,
        window: Window,
        filter: &Filter,
        progress: &mut impl QueryProgress,
    ) -> Result<Vec<StatsRow>, TrailError> {
        let rows = self
            .run(insights, log_group, window, &stats_query(filter), MAX_ROWS, progress)
            .await?;
        let number = |row: &[(String, String)], k: &str| {
            field(row, k)
                .and_then(|v| v.parse::<f64>().ok())
                .map_or(0, |n| n.max(0.0) as u64)
        };
        Ok(rows
            .iter()
            .map(|row| StatsRow {
                repository: field(row, "detail.repository").unwrap_or_default().to_owned(),
                outcome: field(row, "detail.outcome").unwrap_or_default().to_owned(),
                records: number(row, "records"),
                deleted: number(row, "deleted"),
                reclaimed_bytes: number(row, "reclaimed_bytes"),
            })
            .collect())
    }
}

/// One line of `audit stats`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StatsRow {
    /// Repository.
    pub repository: String,
    /// Outcome.
    pub outcome: String,
    /// Records.
    pub records: u64,
    /// Manifests deleted.
    pub deleted: u64,
    /// Bytes reclaimed.
    pub reclaimed_bytes: u64,
}

fn field<'r>(row: &'r [(String, String)], name: &str) -> Option<&'r str> {
    row.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// The record a row holds, or `None` when the row's event is not an audit
/// record (another `source` or `detail-type`): whatever else reaches the log
/// group is never taken for one, by a reader or by the reconciler.
fn found(row: &[(String, String)]) -> Result<Option<Found>, TrailError> {
    let message = field(row, "@message").ok_or_else(|| TrailError::BadRow {
        problem: "no @message".into(),
    })?;
    let event: Value = serde_json::from_str(message).map_err(|e| TrailError::BadRow {
        problem: format!("@message is not JSON: {e}"),
    })?;
    if !written_by_the_service(&event) {
        tracing::debug!(
            source = %event["source"],
            detail_type = %event["detail-type"],
            "a log event that is not an audit record: left out"
        );
        return Ok(None);
    }
    let record = match event.get("detail") {
        Some(d) if d.is_object() => d.clone(),
        _ => {
            return Err(TrailError::BadRow {
                problem: "no detail object in the event".into(),
            });
        }
    };
    Ok(Some(Found {
        timestamp: field(row, "@timestamp").unwrap_or_default().to_owned(),
        record,
    }))
}

/// Whether an EventBridge event is an audit record as the service sends it:
/// its `source` and `detail-type`, which only a principal the audit bus's
/// policy admits can put there (see docs/audit.md).
fn written_by_the_service(event: &Value) -> bool {
    event.get("source").and_then(Value::as_str) == Some(AUDIT_SOURCE)
        && event.get("detail-type").and_then(Value::as_str) == Some(AUDIT_DETAIL_TYPE)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use serde_json::json;

    use super::*;

    /// An Insights double holding timestamped EventBridge events (see
    /// [`audit_event`]); answers with at most `limit` rows of the window,
    /// newest first, after one `Running` poll.
    #[derive(Default)]
    struct Fake {
        events: Vec<(i64, Value)>,
        queries: Mutex<Vec<(i64, i64, u32)>>,
        polls: Mutex<u32>,
    }

    impl Insights for Fake {
        async fn start_query(
            &self,
            _: &str,
            start_s: i64,
            end_s: i64,
            query: &str,
            limit: u32,
        ) -> Result<String, TrailError> {
            self.queries.lock().unwrap().push((start_s, end_s, limit));
            Ok(format!("{start_s}-{end_s}-{limit}-{}", query.contains("asc")))
        }
        async fn query_results(&self, id: &str) -> Result<QueryPage, TrailError> {
            let mut polls = self.polls.lock().unwrap();
            *polls += 1;
            if *polls % 2 == 1 {
                return Ok(QueryPage {
                    status: QueryStatus::Running,
                    rows: vec![],
                    records_matched: 0.0,
                    bytes_scanned: 0.0,
                });
            }
            let parts: Vec<&str> = id.split('-').collect();
            let (s, e, limit, asc): (i64, i64, usize, bool) = (
                parts[0].parse().unwrap(),
                parts[1].parse().unwrap(),
                parts[2].parse().unwrap(),
                parts[3] == "true",
            );
            let mut rows: Vec<&(i64, Value)> = self
                .events
                .iter()
                .filter(|(t, _)| *t >= s * 1000 && *t <= e * 1000 + 999)
                .collect();
            rows.sort_by_key(|(t, _)| if asc { *t } else { -*t });
            Ok(QueryPage {
                status: QueryStatus::Complete,
                rows: rows
                    .into_iter()
                    .take(limit)
                    .map(|(t, v)| {
                        vec![
                            ("@timestamp".into(), t.to_string()),
                            ("@message".into(), v.to_string()),
                            ("@ptr".into(), format!("p{t}")),
                        ]
                    })
                    .collect(),
                records_matched: 1.0,
                bytes_scanned: 1.0,
            })
        }
        async fn stop_query(&self, _: &str) -> Result<(), TrailError> {
            Ok(())
        }
    }

    fn fast() -> Runner {
        Runner {
            timeout: Duration::from_secs(5),
            poll: Duration::from_millis(1),
            attempts: 2,
        }
    }

    #[tokio::test]
    async fn past_ten_thousand_rows_the_window_is_split_and_nothing_is_lost_or_repeated() {
        // 25,000 records, 4 a second.
        let events: Vec<(i64, Value)> = (0..25_000)
            .map(|i| (1_000_000 + i * 250, audit_event(json!({"repository": "r", "n": i}))))
            .collect();
        let fake = Fake {
            events,
            ..Fake::default()
        };
        let window = Window {
            start_ms: 1_000_000,
            end_ms: 1_000_000 + 25_000 * 250,
        };
        let all = fast()
            .records(
                &fake,
                "g",
                window,
                &Filter::default(),
                Take {
                    order: Order::OldestFirst,
                    limit: 0,
                },
                &mut Silent,
            )
            .await
            .unwrap();
        assert_eq!(all.len(), 25_000);
        let ns: Vec<i64> = all.iter().map(|f| f.record["n"].as_i64().unwrap()).collect();
        assert!(ns.windows(2).all(|w| w[0] < w[1]), "oldest first, no repeat");
        assert!(fake.queries.lock().unwrap().len() > 3, "split");
        let newest = fast()
            .records(
                &fake,
                "g",
                window,
                &Filter::default(),
                Take {
                    order: Order::NewestFirst,
                    limit: 5,
                },
                &mut Silent,
            )
            .await
            .unwrap();
        let ns: Vec<i64> = newest.iter().map(|f| f.record["n"].as_i64().unwrap()).collect();
        assert_eq!(ns, vec![24_999, 24_998, 24_997, 24_996, 24_995]);
    }

    /// `record` as the audit rule delivers it to the log group: the event
    /// the service put on the bus.
    fn audit_event(record: Value) -> Value {
        json!({"source": AUDIT_SOURCE, "detail-type": AUDIT_DETAIL_TYPE, "detail": record})
    }

    #[tokio::test]
    async fn only_the_services_audit_records_are_taken_from_the_log_group() {
        let record = json!({"repository": "r", "outcome": "in_progress"});
        let events = vec![
            (1_000_000, audit_event(json!({"repository": "r", "n": 1}))),
            (
                1_001_000,
                json!({"source": "ecr-remediator.forged", "detail-type": AUDIT_DETAIL_TYPE, "detail": record}),
            ),
            (
                1_002_000,
                json!({"source": AUDIT_SOURCE, "detail-type": "Something Else", "detail": record}),
            ),
            (1_003_000, json!({"detail": record})),
        ];
        let fake = Fake {
            events,
            ..Fake::default()
        };
        let window = Window {
            start_ms: 1_000_000,
            end_ms: 1_010_000,
        };
        let take = Take {
            order: Order::OldestFirst,
            limit: 0,
        };
        let found = fast()
            .records(&fake, "g", window, &Filter::default(), take, &mut Silent)
            .await
            .unwrap();
        let records: Vec<&Value> = found.iter().map(|f| &f.record).collect();
        assert_eq!(records, vec![&json!({"repository": "r", "n": 1})]);
    }

    #[tokio::test]
    async fn a_query_that_outlives_the_timeout_is_stopped_with_a_clear_error() {
        struct Slow;
        impl Insights for Slow {
            async fn start_query(&self, _: &str, _: i64, _: i64, _: &str, _: u32) -> Result<String, TrailError> {
                Ok("q".into())
            }
            async fn query_results(&self, _: &str) -> Result<QueryPage, TrailError> {
                Ok(QueryPage {
                    status: QueryStatus::Running,
                    rows: vec![],
                    records_matched: 0.0,
                    bytes_scanned: 0.0,
                })
            }
            async fn stop_query(&self, _: &str) -> Result<(), TrailError> {
                Ok(())
            }
        }
        let runner = Runner {
            timeout: Duration::from_millis(50),
            ..fast()
        };
        let err = runner
            .run(
                &Slow,
                "g",
                Window { start_ms: 0, end_ms: 1 },
                "fields @message",
                1,
                &mut Silent,
            )
            .await
            .unwrap_err();
        assert!(matches!(err, TrailError::Timeout { .. }), "{err}");
        assert!(err.to_string().contains("--query-timeout"));
    }
}
