//! The audit trail's query side: "what happened to my image?" answered from
//! the log group the audit records reach (EventBridge → CloudWatch Logs).
//!
//! CloudWatch Logs Insights rather than `FilterLogEvents`: the same query
//! text serves the CLI and the template's saved queries (console users and
//! CLI users see the same answers), `stats` aggregates server-side for
//! `audit stats` whatever the window, and nested JSON fields are addressed
//! directly. Its limits are handled here: at most 10,000 rows per query
//! (the window is split in two until each half fits), and queries are
//! asynchronous (polled, with progress, until a timeout that stops them).
//!
//! [`filter`] builds the queries (pure), [`query`] runs them through the
//! [`Insights`] trait (its SDK adapter is in `src/aws/logs.rs`), [`history`]
//! folds what repeated deliveries repeat (pure), [`render`] prints tables,
//! CSV and JSON.

use std::future::Future;

pub mod filter;
pub mod history;
pub mod query;
pub mod render;

/// Where a query stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryStatus {
    /// Queued.
    Scheduled,
    /// Running.
    Running,
    /// Done: the rows are final.
    Complete,
    /// Failed in CloudWatch.
    Failed,
    /// Stopped.
    Cancelled,
    /// CloudWatch's own time limit (60 minutes) ran out.
    Timeout,
    /// A status this version does not know.
    Other(String),
}

/// One answer of `GetQueryResults`.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryPage {
    /// The status.
    pub status: QueryStatus,
    /// Rows, each a list of (field, value).
    pub rows: Vec<Vec<(String, String)>>,
    /// Log events matched so far.
    pub records_matched: f64,
    /// Bytes scanned so far.
    pub bytes_scanned: f64,
}

/// CloudWatch Logs Insights, as the trail needs it.
pub trait Insights: Sync {
    /// Starts a query over `[start_s, end_s]` (epoch seconds) of one log
    /// group; returns its id.
    fn start_query(
        &self,
        log_group: &str,
        start_s: i64,
        end_s: i64,
        query: &str,
        limit: u32,
    ) -> impl Future<Output = Result<String, TrailError>> + Send;
    /// The query's status and, once complete, its rows.
    fn query_results(&self, query_id: &str) -> impl Future<Output = Result<QueryPage, TrailError>> + Send;
    /// Stops a running query.
    fn stop_query(&self, query_id: &str) -> impl Future<Output = Result<(), TrailError>> + Send;
}

/// Why a question could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum TrailError {
    /// No such log group.
    #[error(
        "log group {log_group} does not exist in this account and region (check --log-group or --stack, and AWS_REGION)"
    )]
    UnknownLogGroup {
        /// The log group.
        log_group: String,
    },
    /// The caller may not query it.
    #[error(
        "not allowed to query {log_group}: {message} (the caller needs logs:StartQuery, logs:GetQueryResults and logs:StopQuery on it)"
    )]
    AccessDenied {
        /// The log group.
        log_group: String,
        /// AWS's message.
        message: String,
    },
    /// The query outlived `--query-timeout`.
    #[error(
        "the query did not finish within {seconds} s and was stopped (narrow --since/--until or raise --query-timeout)"
    )]
    Timeout {
        /// The timeout.
        seconds: u64,
    },
    /// CloudWatch ended the query without results.
    #[error("the query ended with status {status}")]
    QueryEnded {
        /// The status.
        status: String,
    },
    /// CloudWatch refused the query text.
    #[error("CloudWatch Logs refused the query: {message}")]
    Malformed {
        /// AWS's message.
        message: String,
    },
    /// A call failed.
    #[error("CloudWatch Logs {operation} failed: {message}")]
    Unavailable {
        /// The operation.
        operation: &'static str,
        /// What happened.
        message: String,
        /// Whether trying again may help (throttling, 5xx, network).
        retryable: bool,
    },
    /// The stack does not say where its records are.
    #[error("stack {stack}: {problem}")]
    Stack {
        /// The stack.
        stack: String,
        /// What is wrong.
        problem: String,
    },
    /// A row is not an audit record.
    #[error("a result row is not an audit record: {problem}")]
    BadRow {
        /// What is wrong.
        problem: String,
    },
}
