//! Before an interactive command's first real call: can this configuration
//! reach AWS at all? A missing region, missing credentials or an endpoint
//! that does not answer is named in one line within seconds, instead of a
//! retry storm ending in a Debug struct.
//!
//! One STS `GetCallerIdentity` (no permission needed, no retries, a short
//! timeout) after the region and credentials are looked up; it also gives
//! the caller's account, which the CLI's audit records carry.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_credential_types::provider::ProvideCredentials as _;
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_sts::error::{ProvideErrorMetadata, SdkError};

use crate::oci::names::AccountId;

/// How long each step may take.
const STEP: Duration = Duration::from_secs(5);

/// What the command line overrides of the standard AWS configuration chain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AwsOverrides {
    /// `--region`.
    pub region: Option<String>,
    /// `--profile`.
    pub profile: Option<String>,
    /// `--endpoint-url`.
    pub endpoint_url: Option<String>,
}

/// Why this configuration cannot reach AWS, in words that say what to set.
#[derive(Debug, thiserror::Error)]
pub enum ConfigProblem {
    /// No region anywhere in the chain.
    #[error("no AWS region: pass --region, or set AWS_REGION (or `region` in your AWS profile)")]
    NoRegion,
    /// No credentials anywhere in the chain (or the profile's are unusable).
    #[error(
        "no usable AWS credentials ({detail}): pass --profile or set AWS_PROFILE (`aws sso login` first for SSO), or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    )]
    NoCredentials {
        /// What the credential chain said.
        detail: String,
    },
    /// The endpoint did not answer.
    #[error("cannot reach {endpoint} ({detail}): check --endpoint-url / AWS_ENDPOINT_URL, the network and any proxy")]
    Unreachable {
        /// The endpoint tried.
        endpoint: String,
        /// What failed.
        detail: String,
    },
    /// The profile asked for (`--profile` or `AWS_PROFILE`) is in neither
    /// shared file: the AWS CLI's own words.
    #[error("The config profile ({0}) could not be found")]
    UnknownProfile(String),
    /// The shared config or credentials file cannot be read.
    #[error("cannot read the shared AWS configuration: {0}")]
    BadConfigFile(String),
    /// AWS answered and refused the credentials.
    #[error("AWS refused the credentials: {code}: {message}")]
    Refused {
        /// The error code.
        code: String,
        /// Its message.
        message: String,
    },
}

/// The standard chain with the command line's overrides, with the AWS
/// CLI's precedence: an explicit `--profile` takes its credentials from
/// that profile (static keys, `role_arn`, IAM Identity Center,
/// `credential_process`), never from access keys in the environment; the
/// region stays `--region`, then `AWS_REGION`, then the profile's.
pub fn apply(loader: aws_config::ConfigLoader, overrides: &AwsOverrides) -> aws_config::ConfigLoader {
    let mut loader = loader;
    if let Some(r) = &overrides.region {
        loader = loader.region(aws_config::Region::new(r.clone()));
    }
    if let Some(p) = &overrides.profile {
        loader = loader.profile_name(p);
    }
    if let Some(e) = &overrides.endpoint_url {
        loader = loader.endpoint_url(e);
    }
    loader
}

/// The credentials of `--profile` alone, never the environment's keys (the
/// AWS CLI's precedence): static keys, `role_arn` with its source, IAM
/// Identity Center, `credential_process`. Its own calls (STS, the SSO
/// portal) go to the region `--region`, `AWS_REGION` or the profile names,
/// through the shared HTTP client.
pub async fn profile_credentials(
    profile: &str,
    region: Option<&str>,
) -> aws_config::profile::ProfileFileCredentialsProvider {
    let region = match region {
        Some(r) => Some(aws_config::Region::new(r.to_owned())),
        None => {
            aws_config::default_provider::region::DefaultRegionChain::builder()
                .profile_name(profile)
                .build()
                .region()
                .await
        }
    };
    let config = aws_config::provider_config::ProviderConfig::without_region()
        .with_region(region)
        .with_http_client(super::shared_http_client());
    aws_config::profile::ProfileFileCredentialsProvider::builder()
        .configure(&config)
        .profile_name(profile)
        .build()
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().trim().to_owned()
}

/// The profile a configuration asks for by name: `--profile`, else
/// `AWS_PROFILE`; `None` for the implicit default.
pub fn selected_profile(overrides: &AwsOverrides) -> Option<String> {
    overrides
        .profile
        .clone()
        .or_else(|| std::env::var("AWS_PROFILE").ok())
        .filter(|p| !p.is_empty())
}

/// Whether the shared config or credentials file (as `AWS_CONFIG_FILE` and
/// `AWS_SHARED_CREDENTIALS_FILE` place them) defines `profile`. `default`
/// needs no file, as in the AWS CLI.
pub async fn profile_exists(profile: &str) -> Result<bool, ConfigProblem> {
    if profile == "default" {
        return Ok(true);
    }
    let set = aws_config::profile::load(
        &aws_types::os_shim_internal::Fs::real(),
        &aws_types::os_shim_internal::Env::real(),
        &aws_runtime::env_config::file::EnvConfigFiles::default(),
        Some(std::borrow::Cow::Owned(profile.to_owned())),
    )
    .await
    .map_err(|e| ConfigProblem::BadConfigFile(first_line(&e.to_string())))?;
    Ok(set.get_profile(profile).is_some())
}

/// Who the configuration acts as: STS `GetCallerIdentity`'s answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The account.
    pub account: AccountId,
    /// The caller's ARN (a user, a role's session, …).
    pub arn: String,
}

/// Checks that `sdk`, made from `overrides`, can reach AWS; the caller when
/// it can.
pub async fn check(sdk: &aws_config::SdkConfig, overrides: &AwsOverrides) -> Result<Caller, ConfigProblem> {
    if let Some(profile) = selected_profile(overrides)
        && !profile_exists(&profile).await?
    {
        return Err(ConfigProblem::UnknownProfile(profile));
    }
    if sdk.region().is_none() {
        return Err(ConfigProblem::NoRegion);
    }
    let Some(provider) = sdk.credentials_provider() else {
        return Err(ConfigProblem::NoCredentials {
            detail: "no credential provider".to_owned(),
        });
    };
    match tokio::time::timeout(STEP, provider.provide_credentials()).await {
        Err(_) => {
            return Err(ConfigProblem::NoCredentials {
                detail: format!("none found within {} s", STEP.as_secs()),
            });
        }
        Ok(Err(e)) => {
            let detail = match &e {
                CredentialsError::CredentialsNotLoaded(_) => "none in the environment, the shared config and \
                                                             credentials files, SSO, or container or instance metadata"
                    .to_owned(),
                other => root_cause(other),
            };
            return Err(ConfigProblem::NoCredentials { detail });
        }
        Ok(Ok(_)) => {}
    }
    let conf = aws_sdk_sts::config::Builder::from(sdk)
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(STEP)
                .operation_timeout(STEP)
                .build(),
        )
        .build();
    let endpoint = sdk.endpoint_url().map_or_else(
        || {
            format!(
                "AWS STS in {}",
                sdk.region().map_or_else(String::new, ToString::to_string)
            )
        },
        str::to_owned,
    );
    let reply = aws_sdk_sts::Client::from_conf(conf)
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| match e {
            SdkError::ServiceError(s) => match s.err().code() {
                Some(code) => ConfigProblem::Refused {
                    code: code.to_owned(),
                    message: s.err().message().unwrap_or_default().to_owned(),
                },
                // No AWS error code: something else answered (a proxy, a firewall).
                None => ConfigProblem::Unreachable {
                    endpoint: endpoint.clone(),
                    detail: format!("HTTP {} from something that is not AWS", s.raw().status().as_u16()),
                },
            },
            SdkError::TimeoutError(_) => ConfigProblem::Unreachable {
                endpoint: endpoint.clone(),
                detail: format!("no answer within {} s", STEP.as_secs()),
            },
            other => ConfigProblem::Unreachable {
                endpoint: endpoint.clone(),
                detail: root_cause(&other),
            },
        })?;
    let account = reply.account().unwrap_or_default();
    let account = AccountId::parse(account).map_err(|_| ConfigProblem::Refused {
        code: "InvalidResponse".to_owned(),
        message: format!("GetCallerIdentity returned the account {account:?}"),
    })?;
    Ok(Caller {
        account,
        arn: reply.arn().unwrap_or_default().to_owned(),
    })
}

/// The innermost cause of an error, on one line (`Connection refused (os error 111)`).
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    first_line(&cause.to_string())
}
