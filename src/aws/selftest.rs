//! The self-test's calls in the user's account ([`crate::selftest::Account`]):
//! ECR through the registry adapter where it already reads ([`EcrRegistry`])
//! and the SDK for the rest (repository, blobs, manifests), Lambda for the
//! throwaway function, CloudFormation for the stack.

use aws_sdk_ecr::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ecr::primitives::Blob as SdkBlob;

use crate::aws::ecr::EcrRegistry;
use crate::engine::registry::{FetchFailure, ImageRef, Registry};
use crate::oci::build::Blob;
use crate::oci::digest::Digest;
use crate::oci::manifest::RawManifest;
use crate::oci::media_type::ManifestMediaType;
use crate::oci::names::{ImageTag, RepositoryName};
use crate::selftest::{Account, CallError, FunctionState, Stack};

/// The self-test's account: ECR and Lambda clients of one configuration.
#[derive(Debug)]
pub struct SdkAccount {
    ecr: aws_sdk_ecr::Client,
    registry: EcrRegistry,
    lambda: aws_sdk_lambda::Client,
    events: aws_sdk_eventbridge::Client,
}

impl SdkAccount {
    /// The account `sdk` reaches.
    pub fn new(sdk: &aws_config::SdkConfig) -> Self {
        let ecr = crate::aws::ecr_client(sdk);
        SdkAccount {
            registry: EcrRegistry::new(ecr.clone(), 10.0, 10),
            ecr,
            lambda: aws_sdk_lambda::Client::new(sdk),
            events: aws_sdk_eventbridge::Client::new(sdk),
        }
    }
}

fn call_error<E, R>(operation: &'static str, err: SdkError<E, R>) -> CallError
where
    E: ProvideErrorMetadata + std::error::Error,
    R: std::fmt::Debug,
{
    let message = match &err {
        SdkError::ServiceError(s) => {
            let e = s.err();
            format!(
                "{}: {}",
                e.code().unwrap_or("Error"),
                e.message().unwrap_or("no message")
            )
        }
        other => other.to_string(),
    };
    CallError { operation, message }
}

fn code_of<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> Option<&str> {
    match err {
        SdkError::ServiceError(s) => s.err().code(),
        _ => None,
    }
}

fn registry_call(operation: &'static str) -> impl Fn(crate::engine::registry::RegistryError) -> CallError {
    move |e| CallError {
        operation,
        message: e.to_string(),
    }
}

impl Account for SdkAccount {
    async fn event_bus_policy(&self, bus: &str) -> Result<Option<String>, CallError> {
        let described = self
            .events
            .describe_event_bus()
            .name(bus)
            .send()
            .await
            .map_err(|e| call_error("DescribeEventBus", e))?;
        Ok(described.policy().map(str::to_owned))
    }

    async fn create_repository(&self, name: &RepositoryName) -> Result<String, CallError> {
        let opt_in = aws_sdk_ecr::types::Tag::builder()
            .key(crate::policy::repository_tag::MODE_TAG_KEY)
            .value("on")
            .build()
            .map_err(|e| CallError {
                operation: "CreateRepository",
                message: e.to_string(),
            })?;
        let reply = self
            .ecr
            .create_repository()
            .repository_name(name.as_str())
            .tags(opt_in)
            .send()
            .await
            .map_err(|e| call_error("CreateRepository", e))?;
        reply
            .repository()
            .and_then(|r| r.repository_uri())
            .map(str::to_owned)
            .ok_or(CallError {
                operation: "CreateRepository",
                message: "no repositoryUri in the reply".to_owned(),
            })
    }

    async fn upload_blob(&self, repository: &RepositoryName, blob: &Blob) -> Result<(), CallError> {
        let started = self
            .ecr
            .initiate_layer_upload()
            .repository_name(repository.as_str())
            .send()
            .await
            .map_err(|e| call_error("InitiateLayerUpload", e))?;
        let upload_id = started.upload_id().unwrap_or_default().to_owned();
        let last = i64::try_from(blob.bytes.len()).unwrap_or(i64::MAX).saturating_sub(1);
        self.ecr
            .upload_layer_part()
            .repository_name(repository.as_str())
            .upload_id(&upload_id)
            .part_first_byte(0)
            .part_last_byte(last)
            .layer_part_blob(SdkBlob::new(blob.bytes.clone()))
            .send()
            .await
            .map_err(|e| call_error("UploadLayerPart", e))?;
        match self
            .ecr
            .complete_layer_upload()
            .repository_name(repository.as_str())
            .upload_id(&upload_id)
            .layer_digests(blob.digest.to_string())
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if code_of(&e) == Some("LayerAlreadyExistsException") => Ok(()),
            Err(e) => Err(call_error("CompleteLayerUpload", e)),
        }
    }

    async fn put_manifest(
        &self,
        repository: &RepositoryName,
        manifest: &RawManifest,
        tag: Option<&ImageTag>,
    ) -> Result<(), CallError> {
        let text = String::from_utf8(manifest.bytes().to_vec()).map_err(|e| CallError {
            operation: "PutImage",
            message: e.to_string(),
        })?;
        let put = self
            .ecr
            .put_image()
            .repository_name(repository.as_str())
            .image_manifest(text)
            .image_manifest_media_type(manifest.media_type().as_str())
            .image_digest(manifest.digest().to_string())
            .set_image_tag(tag.map(ToString::to_string));
        match put.send().await {
            Ok(_) => Ok(()),
            Err(e) if code_of(&e) == Some("ImageAlreadyExistsException") => Ok(()),
            Err(e) => Err(call_error("PutImage", e)),
        }
    }

    async fn resolve_tag(
        &self,
        repository: &RepositoryName,
        tag: &ImageTag,
    ) -> Result<Option<(Digest, ManifestMediaType)>, CallError> {
        let got = self
            .registry
            .get_images(repository, &[ImageRef::Tag(tag.clone())])
            .await
            .map_err(registry_call("BatchGetImage"))?;
        match got.into_iter().next().map(|(_, r)| r) {
            Some(Ok(m)) => Ok(Some((m.digest().clone(), m.media_type()))),
            Some(Err(FetchFailure::NotFound)) | None => Ok(None),
            Some(Err(e)) => Err(CallError {
                operation: "BatchGetImage",
                message: format!("{e:?}"),
            }),
        }
    }

    async fn tags_of(&self, repository: &RepositoryName, digest: &Digest) -> Result<Option<Vec<String>>, CallError> {
        let described = self
            .registry
            .describe_images(repository, std::slice::from_ref(digest))
            .await
            .map_err(registry_call("DescribeImages"))?;
        Ok(described
            .into_iter()
            .find(|(d, _)| d == digest)
            .and_then(|(_, info)| info)
            .map(|info| info.tags))
    }

    async fn referrers(&self, repository: &RepositoryName, digest: &Digest) -> Result<Vec<Digest>, CallError> {
        let referrers = self
            .registry
            .list_referrers(repository, digest)
            .await
            .map_err(registry_call("ListImageReferrers"))?;
        Ok(referrers.into_iter().map(|r| r.digest).collect())
    }

    async fn replicas_of(&self, repository: &RepositoryName) -> Result<Vec<String>, CallError> {
        let rules = self
            .registry
            .replication_rules()
            .await
            .map_err(registry_call("DescribeRegistry"))?;
        Ok(crate::sweep::replication::destinations(&rules, repository)
            .into_iter()
            .map(|d| format!("{}/{}", d.account, d.region))
            .collect())
    }

    async fn delete_repository(&self, repository: &RepositoryName) -> Result<(), CallError> {
        match self
            .ecr
            .delete_repository()
            .repository_name(repository.as_str())
            .force(true)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if code_of(&e) == Some("RepositoryNotFoundException") => Ok(()),
            Err(e) => Err(call_error("DeleteRepository", e)),
        }
    }

    async fn create_function(
        &self,
        name: &str,
        image_uri: &str,
        role_arn: &str,
        architecture: &str,
    ) -> Result<(), CallError> {
        use aws_sdk_lambda::types::{Architecture, FunctionCode, PackageType};
        self.lambda
            .create_function()
            .function_name(name)
            .package_type(PackageType::Image)
            .code(FunctionCode::builder().image_uri(image_uri).build())
            .role(role_arn)
            .architectures(Architecture::from(architecture))
            .description("ecr-remediator selftest: deleted when the test ends")
            .send()
            .await
            .map_err(|e| call_error("CreateFunction", e))?;
        Ok(())
    }

    async fn function_state(&self, name: &str) -> Result<FunctionState, CallError> {
        use aws_sdk_lambda::types::State;
        let c = self
            .lambda
            .get_function_configuration()
            .function_name(name)
            .send()
            .await
            .map_err(|e| call_error("GetFunctionConfiguration", e))?;
        Ok(match c.state() {
            Some(State::Active) => FunctionState::Active,
            Some(State::Failed) => FunctionState::Failed(format!(
                "{}: {}",
                c.state_reason_code().map_or("Failed", |r| r.as_str()),
                c.state_reason().unwrap_or("no reason given")
            )),
            _ => FunctionState::Pending,
        })
    }

    async fn delete_function(&self, name: &str) -> Result<(), CallError> {
        match self.lambda.delete_function().function_name(name).send().await {
            Ok(_) => Ok(()),
            Err(e) if code_of(&e) == Some("ResourceNotFoundException") => Ok(()),
            Err(e) => Err(call_error("DeleteFunction", e)),
        }
    }
}

/// What the self-test needs of stack `name`: its audit log group and
/// function (outputs) and its repository prefixes (parameter).
pub async fn stack(sdk: &aws_config::SdkConfig, name: &str) -> Result<Stack, crate::trail::TrailError> {
    use crate::aws::logs::{AUDIT_LOG_GROUP_OUTPUT, stack_output};
    let audit_log_group = stack_output(sdk, name, AUDIT_LOG_GROUP_OUTPUT).await?;
    let function = stack_output(sdk, name, "FunctionName").await.ok();
    let described = aws_sdk_cloudformation::Client::new(sdk)
        .describe_stacks()
        .stack_name(name)
        .send()
        .await
        .map_err(|e| crate::trail::TrailError::Stack {
            stack: name.to_owned(),
            problem: e.to_string(),
        })?;
    let prefixes = described
        .stacks()
        .first()
        .and_then(|s| {
            s.parameters()
                .iter()
                .find(|p| p.parameter_key() == Some("RepositoryPrefixes"))
        })
        .and_then(|p| p.parameter_value())
        .map(crate::service::config::prefix_list)
        .unwrap_or_default();
    Ok(Stack {
        name: name.to_owned(),
        audit_log_group,
        function,
        prefixes,
        audit_bus: stack_output(sdk, name, "AuditBusArn").await.ok(),
        function_role: stack_output(sdk, name, "FunctionRoleArn").await.ok(),
    })
}
