//! Adapters to AWS services: the only code that imports `aws_sdk_*`.
//!
//! Configuration (region, credentials, endpoint) comes from the standard AWS
//! chain, so `AWS_ENDPOINT_URL` points every client at a local emulator.
//! SDK errors are mapped to the core's error types here and nowhere else.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_ecr::error::ProvideErrorMetadata;
use aws_sdk_ecr::error::SdkError;

use crate::engine::registry::RegistryError;
use crate::engine::retry::RetryPolicy;
use crate::service::config::ServiceConfig;
use crate::service::handler::Handler;

pub mod audit;
pub mod ecr;
pub mod logs;
pub mod members;
pub mod preflight;
pub mod pull_exclusion;
pub mod selftest;
pub mod sqs;
pub mod ssm;
pub(crate) mod tag_cache;
pub(crate) mod workloads;

/// The partition of a region (`aws`, `aws-cn`, `aws-us-gov`).
pub(crate) fn partition(region: Option<&str>) -> &'static str {
    match region {
        Some(r) if r.starts_with("cn-") => "aws-cn",
        Some(r) if r.starts_with("us-gov-") => "aws-us-gov",
        _ => "aws",
    }
}

/// The HTTP client every AWS client of the process shares: one connection
/// pool, one TLS configuration and root store, whatever the number of
/// clients (a hub makes one ECR client per member account; without sharing,
/// each loads its own root store and keeps its own pool, about 245 KB an
/// account). The same stack the SDK builds by default (hyper 1, rustls with
/// aws-lc, proxy settings from the environment), built once.
pub fn shared_http_client() -> aws_sdk_ecr::config::SharedHttpClient {
    use aws_smithy_http_client::{Builder, ConnectorBuilder, proxy::ProxyConfig, tls};
    Builder::new().build_with_connector_fn(|settings, components| {
        let mut connector =
            ConnectorBuilder::default().tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::AwsLc));
        connector.set_connector_settings(settings.cloned());
        if let Some(c) = components {
            connector.set_sleep_impl(c.sleep_impl());
        }
        connector.set_proxy_config(Some(ProxyConfig::from_env()));
        connector.build()
    })
}

/// `sdk` with the process's shared HTTP client, unless it already has one.
pub fn with_shared_http_client(sdk: &aws_config::SdkConfig) -> aws_config::SdkConfig {
    if sdk.http_client().is_some() {
        return sdk.clone();
    }
    sdk.to_builder().http_client(shared_http_client()).build()
}

/// Loads the shared AWS configuration: the standard chain (so
/// `AWS_ENDPOINT_URL` points every client at a local emulator), one HTTP
/// client for every client ([`shared_http_client`]), the SDK's standard
/// retries for the clients that keep them (SQS), and timeouts.
pub async fn load_config(max_attempts: u32) -> aws_config::SdkConfig {
    load_config_with(max_attempts, &preflight::AwsOverrides::default()).await
}

/// [`load_config`] with the command line's `--region`, `--profile` and
/// `--endpoint-url` over the standard chain.
pub async fn load_config_with(max_attempts: u32, overrides: &preflight::AwsOverrides) -> aws_config::SdkConfig {
    let mut loader = preflight::apply(aws_config::defaults(BehaviorVersion::latest()), overrides);
    if let Some(profile) = &overrides.profile {
        loader =
            loader.credentials_provider(preflight::profile_credentials(profile, overrides.region.as_deref()).await);
    }
    loader
        .http_client(shared_http_client())
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(max_attempts.max(1))
                .with_initial_backoff(Duration::from_millis(100))
                .with_max_backoff(Duration::from_secs(5)),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(Duration::from_secs(20))
                .operation_timeout(Duration::from_secs(60))
                .build(),
        )
        .load()
        .await
}

/// An ECR client with the SDK's retries off: the engine retries, with no
/// retry quota to run out under sustained throttling, and re-checks every
/// precondition before retrying a write.
pub fn ecr_client(sdk: &aws_config::SdkConfig) -> aws_sdk_ecr::Client {
    let conf = aws_sdk_ecr::config::Builder::from(sdk)
        .retry_config(RetryConfig::disabled())
        .build();
    aws_sdk_ecr::Client::from_conf(conf)
}

/// An EventBridge client with the SDK's retries off (the handler retries
/// audit writes itself, for the same reason as [`ecr_client`]).
pub fn eventbridge_client(sdk: &aws_config::SdkConfig) -> aws_sdk_eventbridge::Client {
    let conf = aws_sdk_eventbridge::config::Builder::from(sdk)
        .retry_config(RetryConfig::disabled())
        .build();
    aws_sdk_eventbridge::Client::from_conf(conf)
}

/// The service wired to ECR and EventBridge with the standard AWS configuration.
pub async fn handler(
    config: &ServiceConfig,
) -> Result<Handler<ecr::EcrRegistry, audit::EventBridgeAudit>, crate::service::live_policy::LiveError> {
    let sdk = load_config(config.max_attempts).await;
    let mut h = handler_with(&sdk, config);
    attach_live_policy(&mut h, &sdk, config, None).await?;
    Ok(h)
}

/// When the configuration names a policy parameter: loads it (it must be
/// readable and valid) and keeps it live in the handler, re-read every
/// [`crate::service::live_policy::RELOAD_EVERY`].
pub async fn attach_live_policy<R, A>(
    handler: &mut Handler<R, A>,
    sdk: &aws_config::SdkConfig,
    config: &ServiceConfig,
    overlay: Option<crate::service::live_policy::Overlay>,
) -> Result<(), crate::service::live_policy::LiveError>
where
    R: crate::engine::registry::Registry,
    A: crate::engine::audit::AuditSink,
{
    use crate::service::live_policy::{LivePolicy, RELOAD_EVERY};
    let Some(name) = &config.policy_parameter else {
        return Ok(());
    };
    let store = std::sync::Arc::new(ssm::SsmPolicy::new(sdk, name.clone()));
    let live = LivePolicy::load(
        store,
        config.organizational_units.clone(),
        config.deletion_allowed,
        RELOAD_EVERY,
        overlay,
    )
    .await?;
    handler.live_policy = Some(std::sync::Arc::new(live));
    Ok(())
}

/// The service wired to ECR and EventBridge with a given AWS configuration.
pub fn handler_with(
    sdk: &aws_config::SdkConfig,
    config: &ServiceConfig,
) -> Handler<ecr::EcrRegistry, audit::EventBridgeAudit> {
    let mut h = Handler::new(
        match &config.account_id {
            Some(account) => ecr::EcrRegistry::new(ecr_client(sdk), config.put_tps, config.put_burst)
                .in_account(account)
                .with_workloads(sdk),
            None => ecr::EcrRegistry::new(ecr_client(sdk), config.put_tps, config.put_burst).with_workloads(sdk),
        },
        {
            let sink = audit::EventBridgeAudit::new(eventbridge_client(sdk), config.audit_bus.clone());
            match &config.audit_log_group {
                Some(group) => sink.reading_from(logs::LogsInsights::from_config(sdk), group.clone()),
                None => sink,
            }
        },
        config.policies.clone(),
    );
    h.retry = RetryPolicy::with_attempts(config.max_attempts);
    h.own_region = sdk.region().map(ToString::to_string);
    h.max_receive_count = config.max_receive_count;
    h.metrics = config.metrics.clone();
    if let Some(m) = &config.members {
        let access = members::MemberAccess {
            role_name: m.role_name.clone(),
            external_id: m.external_id.clone(),
        };
        h.members = Some(std::sync::Arc::new(members::MemberRegistries::new(
            sdk,
            access,
            config.put_tps,
            config.put_burst,
        )));
        h.own_account = Some(m.own_account.clone());
        h.member_accounts = m.accounts.iter().cloned().collect();
    } else {
        // A single-account deployment: a request naming its own account by id is its own.
        h.own_account.clone_from(&config.account_id);
    }
    h.sweeps = config.queue_url.as_ref().map(|url| crate::service::handler::Sweeps {
        queue: std::sync::Arc::new(sqs::SqsJobQueue::new(aws_sdk_sqs::Client::new(sdk), url.clone())),
        prefixes: config.sweep_prefixes.clone(),
    });
    h
}

/// Maps an SDK error to the core's registry error.
pub(crate) fn registry_error<E, R>(operation: &'static str, err: SdkError<E, R>) -> RegistryError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    match err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            let code = e.code().unwrap_or("Unknown").to_owned();
            let message = e.message().unwrap_or_default().to_owned();
            classify_code(operation, code, message)
        }
        SdkError::TimeoutError(_) => RegistryError::Unavailable {
            operation,
            message: "timed out".to_owned(),
        },
        SdkError::DispatchFailure(d) => RegistryError::Unavailable {
            operation,
            message: format!("could not reach the service: {d:?}"),
        },
        SdkError::ResponseError(r) => RegistryError::Unavailable {
            operation,
            message: format!("unreadable response: {r:?}"),
        },
        other => RegistryError::Service {
            operation,
            code: "ClientError".to_owned(),
            message: other.to_string(),
        },
    }
}

/// Maps an AWS error code to the core's registry error.
pub(crate) fn classify_code(operation: &'static str, code: String, message: String) -> RegistryError {
    match code.as_str() {
        "ThrottlingException" | "TooManyRequestsException" | "RequestLimitExceeded" | "Throttling" => {
            RegistryError::Throttled { operation, message }
        }
        "ServerException"
        | "InternalError"
        | "InternalFailure"
        | "InternalServerError"
        | "ServiceUnavailable"
        | "ServiceUnavailableException" => RegistryError::Unavailable { operation, message },
        // The message repeats the name the caller knows (and `about` fills in).
        "RepositoryNotFoundException" => RegistryError::RepositoryNotFound {
            operation,
            repository: None,
        },
        "ImageTagAlreadyExistsException" => RegistryError::TagImmutable { operation, tag: None },
        "ReferencedImagesNotFoundException" => RegistryError::ReferencedImagesNotFound { operation, message },
        _ => RegistryError::Service {
            operation,
            code,
            message,
        },
    }
}
