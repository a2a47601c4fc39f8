//! The policy a repository gets once its own `ecr-remediator:mode` tag is
//! applied to the rule's (see [`crate::policy::repository_tag`]): one read,
//! shared by the per-image line and the sweeps.

use crate::engine::registry::{Registry, RegistryError};
use crate::engine::retry::{RetryPolicy, retrying};
use crate::oci::names::RepositoryName;
use crate::policy::Policy;
use crate::policy::repository_tag::{self, MODE_TAG_KEY, Resolved};

/// The rule's `policy` with `repository`'s tag applied, and the tag's value
/// as read (`None`: no tag, or the rule ignores it and it was not read).
/// Reading the tag is retried like any read; a read that fails is an error,
/// never a guess (an opted-out repository must not be acted on).
pub async fn resolve<R: Registry>(
    registry: &R,
    retry: &RetryPolicy,
    deadline: Option<tokio::time::Instant>,
    policy: &Policy,
    repository: &RepositoryName,
) -> Result<(Resolved, Option<String>), RegistryError> {
    if !policy.repository_tag.reads_tag() {
        return Ok((repository_tag::resolve(policy, None), None));
    }
    let value = retrying(retry, deadline, || registry.repository_tag(repository, MODE_TAG_KEY)).await?;
    Ok((repository_tag::resolve(policy, value.as_deref()), value))
}
