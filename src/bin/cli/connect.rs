//! The AWS CLI's configuration flags, and the check every AWS-using command
//! makes before its first real call (see `ecr_remediator::aws::preflight`).

use ecr_remediator::AccountId;
use ecr_remediator::aws::preflight::{AwsOverrides, check};

/// `--region`, `--profile`, `--endpoint-url`: as the AWS CLI reads them,
/// over the standard chain (environment, shared config and credentials files, SSO).
#[derive(clap::Args, Debug, Clone, Default)]
pub(crate) struct AwsArgs {
    /// The AWS region (default: AWS_REGION, then the profile's).
    #[arg(long, global = true, value_name = "REGION")]
    region: Option<String>,
    /// A named profile from the shared AWS configuration (default: AWS_PROFILE).
    #[arg(long, global = true, value_name = "NAME")]
    profile: Option<String>,
    /// Send every AWS call to this URL (default: AWS_ENDPOINT_URL), e.g. a local emulator.
    #[arg(long, global = true, value_name = "URL")]
    endpoint_url: Option<String>,
}

impl AwsArgs {
    fn overrides(&self) -> AwsOverrides {
        AwsOverrides {
            region: self.region.clone(),
            profile: self.profile.clone(),
            endpoint_url: self.endpoint_url.clone(),
        }
    }
}

/// The AWS configuration, checked: within seconds, one readable line when
/// it cannot reach AWS. Returns it with the caller's account.
pub(crate) async fn connect(args: &AwsArgs, max_attempts: u32) -> anyhow::Result<(aws_config::SdkConfig, AccountId)> {
    let overrides = args.overrides();
    let sdk = ecr_remediator::aws::load_config_with(max_attempts, &overrides).await;
    let caller = check(&sdk, &overrides).await?;
    Ok((sdk, caller.account))
}

/// Like [`connect`], for a command that reads images: says in one line on
/// stderr when the caller's reads count as pulls (it is not on the
/// registry's pull-time update exclusion list), which keeps what it reads
/// from deletion for `keep_if_pulled_within`.
pub(crate) async fn connect_to_read(
    args: &AwsArgs,
    max_attempts: u32,
) -> anyhow::Result<(aws_config::SdkConfig, AccountId)> {
    let overrides = args.overrides();
    let sdk = ecr_remediator::aws::load_config_with(max_attempts, &overrides).await;
    let caller = check(&sdk, &overrides).await?;
    if let Some(note) = ecr_remediator::aws::pull_exclusion::note(&sdk, &caller.arn).await {
        eprintln!("{note}");
    }
    Ok((sdk, caller.account))
}

/// With `--stack`: the audit records go to the stack's audit bus and are
/// read back from its audit log group, as the deployed function's are.
pub(crate) async fn use_stack(
    sdk: &aws_config::SdkConfig,
    config: &mut ecr_remediator::ServiceConfig,
    stack: Option<&str>,
) -> anyhow::Result<()> {
    use ecr_remediator::aws::logs::{AUDIT_BUS_OUTPUT, AUDIT_LOG_GROUP_OUTPUT, stack_output};
    let Some(stack) = stack else {
        return Ok(());
    };
    config.audit_bus = stack_output(sdk, stack, AUDIT_BUS_OUTPUT).await?;
    config.audit_log_group = Some(stack_output(sdk, stack, AUDIT_LOG_GROUP_OUTPUT).await?);
    Ok(())
}
