//! The AWS CLI's configuration flags, and the check every AWS-using command
//! makes before its first real call (see `ecr_remediator::aws::preflight`).

use ecr_remediator::aws::preflight::{AwsOverrides, check};
use ecr_remediator::oci::names::AccountId;

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
    let sdk = ecr_remediator::aws::load_config_with(max_attempts, &args.overrides()).await;
    let account = check(&sdk).await?;
    Ok((sdk, account))
}
