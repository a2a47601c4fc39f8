//! [`PolicyStore`] on an SSM parameter (`GetParameter`): the policy file's
//! text, and the parameter's version.

use std::future::Future;
use std::pin::Pin;

use aws_sdk_ssm::error::DisplayErrorContext;

use crate::service::live_policy::{PolicyStore, Stored};

/// A policy kept in an SSM parameter.
#[derive(Debug, Clone)]
pub struct SsmPolicy {
    client: aws_sdk_ssm::Client,
    name: String,
}

impl SsmPolicy {
    /// The parameter `name` (a name or ARN).
    pub fn new(sdk: &aws_config::SdkConfig, name: impl Into<String>) -> Self {
        SsmPolicy {
            client: aws_sdk_ssm::Client::new(sdk),
            name: name.into(),
        }
    }
}

impl PolicyStore for SsmPolicy {
    fn fetch(&self) -> Pin<Box<dyn Future<Output = Result<Stored, String>> + Send + '_>> {
        Box::pin(async move {
            let reply = self
                .client
                .get_parameter()
                .name(&self.name)
                .with_decryption(true)
                .send()
                .await
                .map_err(|e| DisplayErrorContext(e).to_string())?;
            let parameter = reply.parameter().ok_or("no parameter in the answer")?;
            Ok(Stored {
                text: parameter.value().unwrap_or_default().to_owned(),
                version: parameter.version(),
            })
        })
    }

    fn describe(&self) -> String {
        format!("SSM parameter {}", self.name)
    }
}
