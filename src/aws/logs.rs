//! CloudWatch Logs Insights for the audit trail ([`crate::trail::Insights`]),
//! and the audit log group named by a stack's outputs (CloudFormation).

use aws_sdk_cloudwatchlogs::Client;
use aws_sdk_cloudwatchlogs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_cloudwatchlogs::types::QueryStatus as SdkStatus;

use crate::trail::{Insights, QueryPage, QueryStatus, TrailError};

/// The stack output naming the audit log group (see `infra/template.yaml`).
pub const AUDIT_LOG_GROUP_OUTPUT: &str = "AuditLogGroupName";

/// Insights through the SDK.
#[derive(Debug, Clone)]
pub struct LogsInsights {
    client: Client,
}

impl LogsInsights {
    /// Wraps a client.
    pub fn new(client: Client) -> Self {
        LogsInsights { client }
    }

    /// A client from the shared configuration (the SDK's own retries stay on:
    /// the runner only retries what they give up on).
    pub fn from_config(sdk: &aws_config::SdkConfig) -> Self {
        Self::new(Client::new(sdk))
    }
}

fn trail_error<E, R>(operation: &'static str, log_group: &str, err: SdkError<E, R>) -> TrailError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    let retryable_transport = |message: String| TrailError::Unavailable {
        operation,
        message,
        retryable: true,
    };
    match err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            let code = e.code().unwrap_or("Unknown");
            let message = e.message().unwrap_or_default().to_owned();
            match code {
                "ResourceNotFoundException" if operation == "StartQuery" => TrailError::UnknownLogGroup {
                    log_group: log_group.to_owned(),
                },
                "AccessDeniedException" | "AccessDenied" | "UnauthorizedOperation" => TrailError::AccessDenied {
                    log_group: log_group.to_owned(),
                    message,
                },
                "MalformedQueryException" | "InvalidParameterException" => TrailError::Malformed { message },
                "ThrottlingException" | "LimitExceededException" | "ServiceUnavailableException" => {
                    TrailError::Unavailable {
                        operation,
                        message: format!("{code}: {message}"),
                        retryable: true,
                    }
                }
                other => TrailError::Unavailable {
                    operation,
                    retryable: other.contains("Internal") || other.contains("ServiceUnavailable"),
                    message: format!("{other}: {message}"),
                },
            }
        }
        SdkError::TimeoutError(_) => retryable_transport("timed out".into()),
        SdkError::DispatchFailure(d) => retryable_transport(format!("could not reach the service: {d:?}")),
        SdkError::ResponseError(r) => retryable_transport(format!("unreadable response: {r:?}")),
        other => TrailError::Unavailable {
            operation,
            message: other.to_string(),
            retryable: false,
        },
    }
}

impl Insights for LogsInsights {
    async fn start_query(
        &self,
        log_group: &str,
        start_s: i64,
        end_s: i64,
        query: &str,
        limit: u32,
    ) -> Result<String, TrailError> {
        let reply = self
            .client
            .start_query()
            .log_group_name(log_group)
            .start_time(start_s)
            .end_time(end_s)
            .query_string(query)
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(|e| trail_error("StartQuery", log_group, e))?;
        reply.query_id.ok_or_else(|| TrailError::Unavailable {
            operation: "StartQuery",
            message: "no query id in the answer".into(),
            retryable: false,
        })
    }

    async fn query_results(&self, query_id: &str) -> Result<QueryPage, TrailError> {
        let reply = self
            .client
            .get_query_results()
            .query_id(query_id)
            .send()
            .await
            .map_err(|e| trail_error("GetQueryResults", "", e))?;
        let status = match reply.status() {
            Some(SdkStatus::Scheduled) => QueryStatus::Scheduled,
            Some(SdkStatus::Running) => QueryStatus::Running,
            Some(SdkStatus::Complete) => QueryStatus::Complete,
            Some(SdkStatus::Failed) => QueryStatus::Failed,
            Some(SdkStatus::Cancelled) => QueryStatus::Cancelled,
            Some(SdkStatus::Timeout) => QueryStatus::Timeout,
            Some(other) => QueryStatus::Other(other.as_str().to_owned()),
            None => QueryStatus::Other("missing".into()),
        };
        let rows = reply
            .results()
            .iter()
            .map(|row| {
                row.iter()
                    .filter_map(|f| Some((f.field()?.to_owned(), f.value()?.to_owned())))
                    .collect()
            })
            .collect();
        let stats = reply.statistics();
        Ok(QueryPage {
            status,
            rows,
            records_matched: stats.map_or(0.0, |s| s.records_matched()),
            bytes_scanned: stats.map_or(0.0, |s| s.bytes_scanned()),
        })
    }

    async fn stop_query(&self, query_id: &str) -> Result<(), TrailError> {
        self.client
            .stop_query()
            .query_id(query_id)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| trail_error("StopQuery", "", e))
    }
}

/// The audit log group a stack of `infra/template.yaml` created (its
/// `AuditLogGroupName` output).
pub async fn stack_audit_log_group(sdk: &aws_config::SdkConfig, stack: &str) -> Result<String, TrailError> {
    stack_output(sdk, stack, AUDIT_LOG_GROUP_OUTPUT).await
}

/// The stack output naming the audit bus (see `infra/template.yaml`).
pub const AUDIT_BUS_OUTPUT: &str = "AuditBusArn";

/// One output of a CloudFormation stack, by key.
pub async fn stack_output(sdk: &aws_config::SdkConfig, stack: &str, key: &str) -> Result<String, TrailError> {
    let client = aws_sdk_cloudformation::Client::new(sdk);
    let reply = client.describe_stacks().stack_name(stack).send().await.map_err(|e| {
        let problem = match &e {
            SdkError::ServiceError(s) => {
                let m = s.err().message().unwrap_or_default().to_owned();
                if m.contains("does not exist") {
                    "no such stack in this account and region".to_owned()
                } else {
                    format!("{}: {m}", s.err().code().unwrap_or("Error"))
                }
            }
            other => other.to_string(),
        };
        TrailError::Stack {
            stack: stack.to_owned(),
            problem,
        }
    })?;
    let found = reply.stacks().first().and_then(|s| {
        s.outputs()
            .iter()
            .find(|o| o.output_key() == Some(key))
            .and_then(|o| o.output_value())
    });
    found.map(str::to_owned).ok_or_else(|| TrailError::Stack {
        stack: stack.to_owned(),
        problem: format!("no {key} output (is it an ecr-remediator stack?)"),
    })
}
