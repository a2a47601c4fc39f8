//! What runs in one account and region by digest: the workload scan behind
//! [`crate::engine::registry::Registry::images_in_use`] (aws-sdk-ecs,
//! aws-sdk-lambda), through the registry's own credentials.
//!
//! - **ECS**, per cluster: each service's current service revisions
//!   (`DescribeServices` → `currentServiceRevisions`, then
//!   `DescribeServiceRevisions`, whose `containerImages[].imageDigest` is the
//!   digest ECS resolved the tag to and starts every later task with); the
//!   running tasks' containers (`ListTasks`, `DescribeTasks`:
//!   `containers[].imageDigest`); the task definitions those services and
//!   tasks use, when they name an image by digest (`DescribeTaskDefinition`,
//!   cached for good: a task definition revision never changes).
//! - **Lambda**: every version of every image function (`ListFunctions`
//!   with all versions, then `GetFunction` for `ResolvedImageUri`, cached by
//!   the version's `CodeSha256`, so a steady state costs the listing only).
//!
//! One scan at a time per account (callers wait for it and share its
//! result); a scan is reused while it is younger than [`MAX_AGE`] and
//! started after what the caller needs it to have seen. Any failure (access
//! denied, throttling after the SDK's retries) fails the whole scan: the
//! caller then deletes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use tokio::sync::Mutex;

use super::registry_error;
use crate::decide::usage::{InUse, Workload, WorkloadKind, digest_in_reference};
use crate::engine::registry::RegistryError;
use crate::oci::digest::Digest;

/// How long one scan's result is reused.
pub const MAX_AGE: Duration = Duration::from_secs(300);

/// ECS calls one scan has in flight at once (ECS's read APIs are rate
/// limited per account; a handful in parallel stays well under).
const CONCURRENCY: usize = 4;

/// Task definition revisions whose images are remembered (they never
/// change): every ACTIVE revision of a busy account, and more.
const TASK_DEFINITIONS_KEPT: usize = 65_536;

/// The scan of one account's workloads, with its cache.
#[derive(Debug)]
pub struct WorkloadScanner {
    sdk: aws_config::SdkConfig,
    max_age: Duration,
    state: Mutex<ScanState>,
}

#[derive(Debug, Default)]
struct ScanState {
    last: Option<Arc<InUse>>,
    /// Task definition ARN → the digests its containers name.
    task_definitions: BTreeMap<String, Vec<Digest>>,
    /// Lambda function version ARN and `CodeSha256` → the digest it resolved to.
    functions: BTreeMap<(String, String), Option<Digest>>,
}

impl WorkloadScanner {
    /// A scanner through `sdk`'s credentials and region.
    pub fn new(sdk: &aws_config::SdkConfig) -> Self {
        WorkloadScanner {
            sdk: sdk.clone(),
            max_age: MAX_AGE,
            state: Mutex::new(ScanState::default()),
        }
    }

    /// What is in use, from a scan that started at or after `not_before_ms`
    /// and is younger than the maximum age (scanning again otherwise).
    pub async fn in_use(&self, not_before_ms: i64) -> Result<Arc<InUse>, RegistryError> {
        let mut state = self.state.lock().await;
        let now = crate::time::now_ms();
        let max_age_ms = i64::try_from(self.max_age.as_millis()).unwrap_or(i64::MAX);
        if let Some(last) = &state.last
            && last.scanned_at_ms >= not_before_ms
            && now.saturating_sub(last.scanned_at_ms) <= max_age_ms
        {
            return Ok(Arc::clone(last));
        }
        let mut found = InUse::new(now);
        let started = std::time::Instant::now();
        let mut workloads = 0;
        let ecs = aws_sdk_ecs::Client::new(&self.sdk);
        let lambda = aws_sdk_lambda::Client::new(&self.sdk);
        scan_ecs(&ecs, &mut state, &mut found, &mut workloads).await?;
        scan_lambda(&lambda, &mut state, &mut found, &mut workloads).await?;
        found.workloads_seen = workloads;
        tracing::info!(
            workloads,
            digests = found.digests(),
            ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "workload scan"
        );
        let found = Arc::new(found);
        state.last = Some(Arc::clone(&found));
        Ok(found)
    }
}

async fn scan_ecs(
    ecs: &aws_sdk_ecs::Client,
    state: &mut ScanState,
    found: &mut InUse,
    workloads: &mut usize,
) -> Result<(), RegistryError> {
    let clusters: Vec<String> = ecs
        .list_clusters()
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(|e| registry_error("ecs:ListClusters", e))?;
    let per_cluster: Vec<ClusterUse> = futures_util::stream::iter(clusters)
        .map(|cluster| scan_cluster(ecs, cluster))
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    let mut revisions: Vec<String> = Vec::new();
    let mut task_definitions: BTreeMap<String, Workload> = BTreeMap::new();
    for c in per_cluster {
        *workloads += c.workloads;
        for (digest, workload) in c.digests {
            found.add(digest, workload);
        }
        revisions.extend(c.revisions);
        for (arn, user) in c.task_definitions {
            task_definitions.entry(arn).or_insert(user);
        }
    }
    // The digests ECS resolved for each service's current revisions.
    let chunks: Vec<Vec<String>> = revisions.chunks(20).map(<[_]>::to_vec).collect();
    let described: Vec<Vec<(Digest, Workload)>> = futures_util::stream::iter(chunks)
        .map(|chunk| async move {
            let reply = ecs
                .describe_service_revisions()
                .set_service_revision_arns(Some(chunk))
                .send()
                .await
                .map_err(|e| registry_error("ecs:DescribeServiceRevisions", e))?;
            let mut out = Vec::new();
            for revision in reply.service_revisions() {
                let service = revision.service_arn().unwrap_or_default().to_owned();
                for image in revision.container_images() {
                    if let Some(digest) = reported_digest(image.image_digest(), image.image()) {
                        out.push((
                            digest,
                            Workload {
                                kind: WorkloadKind::EcsService,
                                name: service.clone(),
                            },
                        ));
                    }
                }
            }
            Ok::<_, RegistryError>(out)
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    for (digest, workload) in described.into_iter().flatten() {
        found.add(digest, workload);
    }
    // Every ACTIVE revision counts, whether or not anything runs it now:
    // RunTask, EventBridge Scheduler or a scheduled task may start it at any
    // time. (Those a deployment still references were added above, whatever
    // their status.)
    let active: Vec<String> = ecs
        .list_task_definitions()
        .status(aws_sdk_ecs::types::TaskDefinitionStatus::Active)
        .max_results(100)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(|e| registry_error("ecs:ListTaskDefinitions", e))?;
    *workloads += active.len();
    for arn in active {
        task_definitions.entry(arn.clone()).or_insert(Workload {
            kind: WorkloadKind::EcsTaskDefinition,
            name: arn,
        });
    }
    // Task definitions naming an image by digest (read once per revision, ever).
    let unread: Vec<String> = task_definitions
        .keys()
        .filter(|arn| !state.task_definitions.contains_key(*arn))
        .cloned()
        .collect();
    let read: Vec<(String, Vec<Digest>)> = futures_util::stream::iter(unread)
        .map(|arn| async move {
            let reply = ecs
                .describe_task_definition()
                .task_definition(&arn)
                .send()
                .await
                .map_err(|e| registry_error("ecs:DescribeTaskDefinition", e))?;
            let digests = reply
                .task_definition()
                .map(|t| {
                    t.container_definitions()
                        .iter()
                        .filter_map(|c| c.image().and_then(digest_in_reference))
                        .collect()
                })
                .unwrap_or_default();
            Ok::<_, RegistryError>((arn, digests))
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    state.task_definitions.extend(read);
    for (arn, user) in &task_definitions {
        // Every one was read above (a failed read fails the scan).
        let Some(digests) = state.task_definitions.get(arn) else {
            continue;
        };
        let name = if user.name == *arn {
            format!("{arn} (registered, ACTIVE)")
        } else {
            format!("{arn} (used by {})", user.name)
        };
        for digest in digests {
            found.add(
                digest.clone(),
                Workload {
                    kind: WorkloadKind::EcsTaskDefinition,
                    name: name.clone(),
                },
            );
        }
    }
    // Only now that every digest is in `found`: forget revisions nothing
    // lists any more (deregistered and unused), and keep the cache bounded.
    state
        .task_definitions
        .retain(|arn, _| task_definitions.contains_key(arn));
    if state.task_definitions.len() > TASK_DEFINITIONS_KEPT {
        tracing::warn!(
            task_definitions = state.task_definitions.len(),
            kept = TASK_DEFINITIONS_KEPT,
            "more task definitions in use or ACTIVE than the cache holds: each scan reads some again"
        );
        let over = state.task_definitions.len() - TASK_DEFINITIONS_KEPT;
        let drop: Vec<String> = state.task_definitions.keys().take(over).cloned().collect();
        for arn in &drop {
            state.task_definitions.remove(arn);
        }
    }
    Ok(())
}

/// What one cluster's services and tasks use.
#[derive(Debug, Default)]
struct ClusterUse {
    workloads: usize,
    digests: Vec<(Digest, Workload)>,
    /// Service revision ARNs to describe.
    revisions: Vec<String>,
    /// Task definitions in use, with one user.
    task_definitions: Vec<(String, Workload)>,
}

async fn scan_cluster(ecs: &aws_sdk_ecs::Client, cluster: String) -> Result<ClusterUse, RegistryError> {
    let mut out = ClusterUse::default();
    let services: Vec<String> = ecs
        .list_services()
        .cluster(&cluster)
        .max_results(100)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(|e| registry_error("ecs:ListServices", e))?;
    for chunk in services.chunks(10) {
        let reply = ecs
            .describe_services()
            .cluster(&cluster)
            .set_services(Some(chunk.to_vec()))
            .send()
            .await
            .map_err(|e| registry_error("ecs:DescribeServices", e))?;
        for service in reply.services() {
            out.workloads += 1;
            let arn = service.service_arn().unwrap_or_default().to_owned();
            let user = Workload {
                kind: WorkloadKind::EcsService,
                name: arn.clone(),
            };
            for revision in service.current_service_revisions() {
                if let Some(r) = revision.arn() {
                    out.revisions.push(r.to_owned());
                }
            }
            let definitions: BTreeSet<&str> = service
                .deployments()
                .iter()
                .filter_map(|d| d.task_definition())
                .chain(service.task_definition())
                .collect();
            for definition in definitions {
                out.task_definitions.push((definition.to_owned(), user.clone()));
            }
        }
    }
    let tasks: Vec<String> = ecs
        .list_tasks()
        .cluster(&cluster)
        .max_results(100)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(|e| registry_error("ecs:ListTasks", e))?;
    for chunk in tasks.chunks(100) {
        let reply = ecs
            .describe_tasks()
            .cluster(&cluster)
            .set_tasks(Some(chunk.to_vec()))
            .send()
            .await
            .map_err(|e| registry_error("ecs:DescribeTasks", e))?;
        for task in reply.tasks() {
            out.workloads += 1;
            let user = Workload {
                kind: WorkloadKind::EcsTask,
                name: task.task_arn().unwrap_or_default().to_owned(),
            };
            for container in task.containers() {
                if let Some(digest) = reported_digest(container.image_digest(), container.image()) {
                    out.digests.push((digest, user.clone()));
                }
            }
            if let Some(definition) = task.task_definition_arn() {
                out.task_definitions.push((definition.to_owned(), user));
            }
        }
    }
    Ok(out)
}

async fn scan_lambda(
    lambda: &aws_sdk_lambda::Client,
    state: &mut ScanState,
    found: &mut InUse,
    workloads: &mut usize,
) -> Result<(), RegistryError> {
    let functions: Vec<aws_sdk_lambda::types::FunctionConfiguration> = lambda
        .list_functions()
        .function_version(aws_sdk_lambda::types::FunctionVersion::All)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(|e| registry_error("lambda:ListFunctions", e))?;
    let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
    let mut unread: Vec<(String, String, String)> = Vec::new();
    for f in &functions {
        if f.package_type() != Some(&aws_sdk_lambda::types::PackageType::Image) {
            continue;
        }
        *workloads += 1;
        let arn = f.function_arn().unwrap_or_default().to_owned();
        let version = f.version().unwrap_or("$LATEST").to_owned();
        let key = (
            qualified(&arn, &version),
            f.code_sha256().unwrap_or_default().to_owned(),
        );
        if !state.functions.contains_key(&key) {
            unread.push((arn, version, key.1.clone()));
        }
        seen.insert(key);
    }
    let read: Vec<((String, String), Option<Digest>)> = futures_util::stream::iter(unread)
        .map(|(arn, version, sha)| async move {
            let reply = lambda
                .get_function()
                .function_name(unqualified(&arn))
                .qualifier(&version)
                .send()
                .await
                .map_err(|e| registry_error("lambda:GetFunction", e))?;
            let digest = reply
                .code()
                .and_then(|c| c.resolved_image_uri().or(c.image_uri()))
                .and_then(digest_in_reference);
            Ok::<_, RegistryError>(((qualified(&arn, &version), sha), digest))
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    state.functions.extend(read);
    // Forget versions that are gone.
    state.functions.retain(|k, _| seen.contains(k));
    for ((name, _), digest) in &state.functions {
        if let Some(digest) = digest {
            found.add(
                digest.clone(),
                Workload {
                    kind: WorkloadKind::LambdaFunction,
                    name: name.clone(),
                },
            );
        }
    }
    Ok(())
}

/// The digest ECS reports for a container (`imageDigest`), or the one its
/// image reference names (`repo@sha256:…`).
fn reported_digest(image_digest: Option<&str>, image: Option<&str>) -> Option<Digest> {
    image_digest
        .and_then(|d| Digest::parse(d).ok())
        .or_else(|| image.and_then(digest_in_reference))
}

/// `arn` with its version as qualifier (`…:function:f:3`, `…:function:f:$LATEST`).
fn qualified(arn: &str, version: &str) -> String {
    let base = unqualified(arn);
    format!("{base}:{version}")
}

/// A function ARN without its qualifier (`arn:aws:lambda:r:a:function:f`).
fn unqualified(arn: &str) -> &str {
    match arn.match_indices(':').nth(6) {
        Some((i, _)) => &arn[..i],
        None => arn,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_arns_lose_and_gain_their_qualifier() {
        let base = "arn:aws:lambda:us-east-1:123456789012:function:app";
        assert_eq!(unqualified(base), base);
        assert_eq!(unqualified(&format!("{base}:3")), base);
        assert_eq!(qualified(&format!("{base}:3"), "3"), format!("{base}:3"));
        assert_eq!(qualified(base, "$LATEST"), format!("{base}:$LATEST"));
    }
}
