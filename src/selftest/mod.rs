//! Proof in the user's own account that a deployed stack does its job:
//! `ecr-remediator selftest --stack NAME`.
//!
//! One scratch repository inside the stack's scope; a tiny real image
//! pushed as a default `docker buildx build --push` stores it (an index
//! with a provenance attestation, [`crate::oci::build`]); the deployed
//! function's final audit record of that push awaited in the stack's log
//! group; then the checks: the tag names an image manifest, provenance is
//! still reachable, the record says Lambda takes it, nothing was written
//! outside the scratch repository; optionally a throwaway Lambda function
//! created from the tag. Whatever it created is removed at the end, after a
//! failure or an interruption too (unless asked to keep it).
//!
//! Every AWS call goes through [`Account`] (the SDK adapter is
//! `aws::selftest`) and the audit trail through [`Insights`].

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use crate::oci::build::{AttestationFormat, Blob, BuildxImage};
use crate::oci::digest::Digest;
use crate::oci::lambda::LambdaArchitecture;
use crate::oci::manifest::RawManifest;
use crate::oci::media_type::ManifestMediaType;
use crate::oci::names::{AccountId, ImageTag, RepositoryName};
use crate::trail::filter::{DigestQuery, Filter, Order};
use crate::trail::query::{Runner, Silent, Take, Window};
use crate::trail::{Insights, TrailError};

pub mod writers;

/// The tag the self-test pushes.
pub const TAG: &str = "selftest";

/// A call the self-test made failed; the message is the service's own
/// (Lambda's refusal, ECR's error), for the user to read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{operation}: {message}")]
pub struct CallError {
    /// The API operation (`CreateRepository`, `CreateFunction`, …).
    pub operation: &'static str,
    /// What the service said.
    pub message: String,
}

/// A Lambda function's state, as `GetFunctionConfiguration` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FunctionState {
    /// Being created (Lambda's asynchronous checks of the image run now).
    Pending,
    /// Ready to invoke.
    Active,
    /// Lambda refused it, with its reason.
    Failed(String),
}

/// The AWS calls the self-test makes in the user's account.
pub trait Account: Send + Sync {
    /// `CreateRepository` with the resource tag `ecr-remediator:mode=on`
    /// (an opt-in where the stack requires one); its URI.
    fn create_repository(&self, name: &RepositoryName) -> impl Future<Output = Result<String, CallError>> + Send;
    /// Uploads one blob (`InitiateLayerUpload`, `UploadLayerPart`,
    /// `CompleteLayerUpload`; already there is fine).
    fn upload_blob(
        &self,
        repository: &RepositoryName,
        blob: &Blob,
    ) -> impl Future<Output = Result<(), CallError>> + Send;
    /// `PutImage` of `manifest` (exact bytes), under `tag` when given.
    fn put_manifest(
        &self,
        repository: &RepositoryName,
        manifest: &RawManifest,
        tag: Option<&ImageTag>,
    ) -> impl Future<Output = Result<(), CallError>> + Send;
    /// What `tag` names: its digest and media type (`None`: no such tag).
    fn resolve_tag(
        &self,
        repository: &RepositoryName,
        tag: &ImageTag,
    ) -> impl Future<Output = Result<Option<(Digest, ManifestMediaType)>, CallError>> + Send;
    /// The tags of `digest` (`DescribeImages`; `None`: not in the repository).
    fn tags_of(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
    ) -> impl Future<Output = Result<Option<Vec<String>>, CallError>> + Send;
    /// The referrers of `digest`, of any status (`ListImageReferrers`).
    fn referrers(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
    ) -> impl Future<Output = Result<Vec<Digest>, CallError>> + Send;
    /// Where the registry's replication rules copy `repository` to
    /// (`account/region` each): replicas the clean-up cannot remove.
    fn replicas_of(&self, repository: &RepositoryName) -> impl Future<Output = Result<Vec<String>, CallError>> + Send;
    /// `DeleteRepository` with `force` (its images with it).
    fn delete_repository(&self, repository: &RepositoryName) -> impl Future<Output = Result<(), CallError>> + Send;
    /// `CreateFunction` from a container image.
    fn create_function(
        &self,
        name: &str,
        image_uri: &str,
        role_arn: &str,
        architecture: &str,
    ) -> impl Future<Output = Result<(), CallError>> + Send;
    /// `GetFunctionConfiguration`'s state.
    fn function_state(&self, name: &str) -> impl Future<Output = Result<FunctionState, CallError>> + Send;
    /// `DeleteFunction`.
    fn delete_function(&self, name: &str) -> impl Future<Output = Result<(), CallError>> + Send;
    /// The resource policy of the event bus `bus` (an ARN), `None` when it has none.
    fn event_bus_policy(&self, bus: &str) -> impl Future<Output = Result<Option<String>, CallError>> + Send;
}

/// What the self-test knows of the deployed stack.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stack {
    /// Its name.
    pub name: String,
    /// Its audit log group (`AuditLogGroupName` output).
    pub audit_log_group: String,
    /// Its function (`FunctionName` output), when it says.
    pub function: Option<String>,
    /// Its `RepositoryPrefixes` (empty: every repository).
    pub prefixes: Vec<String>,
    /// Its audit bus (`AuditBusArn` output), when it says.
    pub audit_bus: Option<String>,
    /// Its function's role (`FunctionRoleArn` output), when it says.
    pub function_role: Option<String>,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Where.
    pub account: AccountId,
    /// Where.
    pub region: String,
    /// The stack.
    pub stack: Stack,
    /// The scratch repository to create (`None`: one named after the run,
    /// under the stack's first prefix).
    pub repository: Option<RepositoryName>,
    /// The image's platform (`os/arch[/variant]`).
    pub platform: String,
    /// The attestation form.
    pub format: AttestationFormat,
    /// How long to wait for the function's record (and for a function to go Active).
    pub timeout: Duration,
    /// With `--create-function`: the execution role of the throwaway function.
    pub create_function: Option<String>,
    /// Leave what was created for inspection.
    pub keep: bool,
    /// This run's id (unique names and digests).
    pub run_id: String,
}

/// How one step went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Done, or holds.
    Ok,
    /// Failed: the verdict is a failure.
    Failed,
    /// Not run (an earlier step failed, or not asked for).
    Skipped,
}

/// One step, as printed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// Its name.
    pub step: &'static str,
    /// How it went.
    pub status: Status,
    /// What it did or found, or what to do about it.
    pub detail: String,
}

/// The self-test's report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Passed: every step ok (skipped ones only when not asked for).
    pub passed: bool,
    /// Interrupted (Ctrl-C): the steps stop, the clean-up runs.
    pub interrupted: bool,
    /// Where.
    pub account: AccountId,
    /// Where.
    pub region: String,
    /// The stack.
    pub stack: String,
    /// The scratch repository.
    pub repository: Option<String>,
    /// The pushed index.
    pub index: Option<String>,
    /// Every step, in order.
    pub steps: Vec<Step>,
    /// What was removed at the end (or kept, with `--keep`).
    pub cleanup: Vec<Step>,
}

/// Told how the run goes (a progress line on a terminal).
pub trait Progress: Send {
    /// A step finished.
    fn step(&mut self, step: &Step);
    /// Still waiting for the function's record, this long so far.
    fn waiting(&mut self, elapsed: Duration);
}

/// A [`Progress`] that says nothing.
#[derive(Debug, Default)]
pub struct Quiet;

impl Progress for Quiet {
    fn step(&mut self, _: &Step) {}
    fn waiting(&mut self, _: Duration) {}
}

/// The platform to build for, if Lambda runs it (`oci::lambda`'s rule:
/// `linux/arm64` or `linux/amd64`); anything else is refused before any
/// call (an image Lambda cannot run proves nothing about the stack).
pub fn lambda_platform(text: &str) -> Result<LambdaArchitecture, String> {
    let platform = crate::oci::build::parse_platform(text).map_err(|e| e.to_string())?;
    LambdaArchitecture::running(&platform)
        .map_err(|why| format!("platform {text}: Lambda does not run it ({why}); give linux/arm64 or linux/amd64"))
}

/// The scratch repository's name: `--repository`, or
/// `<first prefix>ecr-remediator-selftest-<run>`; refused (with the prefix
/// to allow) when it is outside the stack's scope or not a valid name.
pub fn scratch_repository(plan: &Plan) -> Result<RepositoryName, String> {
    let prefixes = &plan.stack.prefixes;
    let name = match &plan.repository {
        Some(named) => named.to_string(),
        None => format!(
            "{}ecr-remediator-selftest-{}",
            prefixes.first().map_or("", String::as_str),
            plan.run_id
        ),
    };
    if !prefixes.is_empty() && !prefixes.iter().any(|p| name.starts_with(p.as_str())) {
        return Err(format!(
            "repository {name} is outside stack {}'s scope (RepositoryPrefixes: {}): name one under a prefix with \
             --repository",
            plan.stack.name,
            prefixes.join(", ")
        ));
    }
    RepositoryName::parse(&name).map_err(|_| {
        format!(
            "stack {}'s scope cannot hold a scratch repository ({name} is not a repository name): add the prefix \
             ecr-remediator-selftest- to its RepositoryPrefixes parameter, or name one with --repository",
            plan.stack.name
        )
    })
}

struct Run<'a, A, I, P> {
    stop: &'a AtomicBool,
    account: &'a A,
    insights: &'a I,
    plan: &'a Plan,
    progress: &'a mut P,
    steps: Vec<Step>,
    repository: Option<RepositoryName>,
    function: Option<String>,
    index: Option<Digest>,
}

impl<A: Account, I: Insights, P: Progress> Run<'_, A, I, P> {
    /// Interrupted: no further step starts (a call in flight finishes, so
    /// whatever it created is known and removed).
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Waits `d`, or less when interrupted.
    async fn pause(&self, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until && !self.stopped() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn say(&mut self, step: &'static str, status: Status, detail: impl Into<String>) -> bool {
        let step = Step {
            step,
            status,
            detail: detail.into(),
        };
        self.progress.step(&step);
        self.steps.push(step);
        status != Status::Failed
    }

    /// The steps up to the first failure; false on a failure.
    async fn steps(&mut self) -> bool {
        let plan = self.plan;
        let repo = match scratch_repository(plan) {
            Ok(r) => r,
            Err(why) => return self.say("repository", Status::Failed, why),
        };
        let uri = match self.account.create_repository(&repo).await {
            Ok(uri) => uri,
            // A retry after a lost reply finds the repository it created:
            // a name with this run's id is this run's.
            Err(e) if plan.repository.is_none() && e.message.starts_with("RepositoryAlreadyExistsException") => {
                self.repository = Some(repo.clone());
                return self.say("repository", Status::Failed, format!("{repo}: {e}; removed at the end"));
            }
            Err(e) => return self.say("repository", Status::Failed, format!("cannot create {repo}: {e}")),
        };
        self.repository = Some(repo.clone());
        let replicas = match self.account.replicas_of(&repo).await {
            Ok(r) if r.is_empty() => String::new(),
            Ok(r) => format!(
                "; the registry replicates it to {}: those replicas are not removed at the end, delete them there",
                r.join(", ")
            ),
            Err(e) => format!("; its replication rules could not be read ({e})"),
        };
        self.say(
            "repository",
            Status::Ok,
            format!("created {repo} (tag ecr-remediator:mode=on){replicas}"),
        );
        if self.stopped() {
            return false;
        }
        let built = match crate::oci::build::buildx_image(&plan.platform, plan.format, &plan.run_id) {
            Ok(b) => b,
            Err(e) => return self.say("push", Status::Failed, e.to_string()),
        };
        let Ok(tag) = ImageTag::parse(TAG) else {
            return self.say("push", Status::Failed, format!("{TAG} is not a tag"));
        };
        if let Err(e) = self.push(&repo, &built, &tag).await {
            return self.say("push", Status::Failed, e.to_string());
        }
        self.index = Some(built.index.digest().clone());
        if self.stopped() {
            return false;
        }
        let form = match plan.format {
            AttestationFormat::Subject => "with subject (BuildKit >= 0.32)",
            AttestationFormat::Legacy => "legacy form",
        };
        self.say(
            "push",
            Status::Ok,
            format!(
                "{repo}:{TAG} = index {} (image {} {}, provenance attestation {}, {form}), as docker buildx pushes it",
                short(built.index.digest()),
                short(built.image.digest()),
                plan.platform,
                short(built.attestation.digest())
            ),
        );
        let Some(record) = self.await_record(&repo, built.index.digest()).await else {
            return false;
        };
        if self.stopped() {
            return false;
        }
        let mut ok = self.check_tag(&repo, &tag, &built, &record).await;
        ok &= self.check_provenance(&repo, &built).await;
        ok &= self.check_deployability(&record);
        ok &= self.check_scope(&repo, built.index.digest()).await;
        ok &= self.check_writers().await;
        if self.stopped() {
            return false;
        }
        // Lambda's own word, also when a check above failed: it says in its
        // words why it refuses the tag.
        let lambda = match &plan.create_function {
            Some(role) => self.check_function(&uri, role).await,
            None => self.say(
                "lambda",
                Status::Skipped,
                "not asked (--create-function --role-arn ARN creates a throwaway function from the tag)",
            ),
        };
        ok && lambda
    }

    async fn push(&self, repo: &RepositoryName, built: &BuildxImage, tag: &ImageTag) -> Result<(), CallError> {
        for blob in &built.blobs {
            self.account.upload_blob(repo, blob).await?;
        }
        self.account.put_manifest(repo, &built.image, None).await?;
        self.account.put_manifest(repo, &built.attestation, None).await?;
        self.account.put_manifest(repo, &built.index, Some(tag)).await
    }

    /// The function's final record of the push, polled until the timeout.
    async fn await_record(&mut self, repo: &RepositoryName, index: &Digest) -> Option<Value> {
        let started = Instant::now();
        let since = crate::time::now_ms() - 60_000;
        loop {
            match self.records(index, since).await {
                Ok(records) => {
                    let last = records
                        .into_iter()
                        .rev()
                        .find(|r| r["final"] == true && r["repository"] == repo.as_str());
                    if let Some(record) = last {
                        let outcome = record["outcome"].as_str().unwrap_or("?").to_owned();
                        let secs = started.elapsed().as_secs();
                        let ok = matches!(outcome.as_str(), "remediated" | "noop");
                        let detail = if ok {
                            format!("the function handled the push in {secs} s: outcome {outcome}")
                        } else {
                            format!(
                                "the function's record says {outcome}{}: {}",
                                record["code"].as_str().map(|c| format!(" ({c})")).unwrap_or_default(),
                                record["reason"].as_str().or(record["error"].as_str()).unwrap_or("")
                            )
                        };
                        self.say("record", if ok { Status::Ok } else { Status::Failed }, detail);
                        return ok.then_some(record);
                    }
                }
                Err(e) => {
                    self.say("record", Status::Failed, format!("cannot read the audit trail: {e}"));
                    return None;
                }
            }
            if self.stopped() {
                return None;
            }
            if started.elapsed() >= self.plan.timeout {
                self.say(
                    "record",
                    Status::Failed,
                    format!(
                        "no audit record of the push within {} s: the function is not receiving ECR push events. \
                         Look at the stack's push rule (EventBridge, PushRuleArn), its push queue and dead-letter \
                         queue (PushQueueUrl, PushDeadLetterQueueUrl), and the function's own log group{}",
                        self.plan.timeout.as_secs(),
                        self.plan
                            .stack
                            .function
                            .as_deref()
                            .map(|f| format!(" (/aws/lambda/{f})"))
                            .unwrap_or_default()
                    ),
                );
                return None;
            }
            self.progress.waiting(started.elapsed());
            self.pause(Duration::from_secs(2)).await;
        }
    }

    async fn records(&self, index: &Digest, since: i64) -> Result<Vec<Value>, TrailError> {
        let runner = Runner {
            timeout: Duration::from_secs(60),
            poll: Duration::from_millis(250),
            attempts: 4,
        };
        let filter = Filter {
            digest: Some(DigestQuery::whole(index)),
            ..Filter::default()
        };
        let window = Window {
            start_ms: since,
            end_ms: crate::time::now_ms() + 60_000,
        };
        let take = Take {
            order: Order::OldestFirst,
            limit: 0,
        };
        let found = runner
            .records(
                self.insights,
                &self.plan.stack.audit_log_group,
                window,
                &filter,
                take,
                &mut Silent,
            )
            .await?;
        Ok(found.into_iter().map(|f| f.record).collect())
    }

    async fn check_tag(&mut self, repo: &RepositoryName, tag: &ImageTag, built: &BuildxImage, record: &Value) -> bool {
        match self.account.resolve_tag(repo, tag).await {
            Ok(Some((digest, media_type))) if !media_type.is_index() => self.say(
                "tag",
                Status::Ok,
                format!(
                    "{repo}:{tag} names an image manifest ({}, {media_type})",
                    short(&digest)
                ),
            ),
            Ok(Some((digest, _))) => {
                let mode = record["policy"]["mode"].as_str().unwrap_or("?");
                let advice = if digest == *built.index.digest() {
                    format!(
                        "{repo}:{tag} still names the index: the stack's mode is {mode}, which leaves the tag on it. \
                         Set the stack parameter Mode to promote (or strip) to make repo:tag deployable to Lambda, \
                         or deploy by the per-platform tag the record names"
                    )
                } else {
                    format!(
                        "{repo}:{tag} names another index ({}): the stack's mode is {mode}",
                        short(&digest)
                    )
                };
                self.say("tag", Status::Failed, advice)
            }
            Ok(None) => self.say("tag", Status::Failed, format!("{repo}:{tag} no longer exists")),
            Err(e) => self.say("tag", Status::Failed, e.to_string()),
        }
    }

    async fn check_provenance(&mut self, repo: &RepositoryName, built: &BuildxImage) -> bool {
        let index = built.index.digest();
        match self.account.tags_of(repo, index).await {
            Ok(Some(tags)) if !tags.is_empty() => {
                return self.say(
                    "provenance",
                    Status::Ok,
                    format!("kept: the index {} under {}", short(index), tags.join(", ")),
                );
            }
            Ok(_) => {}
            Err(e) => return self.say("provenance", Status::Failed, e.to_string()),
        }
        match self.account.referrers(repo, built.image.digest()).await {
            Ok(referrers) if !referrers.is_empty() => self.say(
                "provenance",
                Status::Ok,
                format!(
                    "kept: as OCI referrer(s) of the image: {}",
                    referrers.iter().map(short).collect::<Vec<_>>().join(", ")
                ),
            ),
            Ok(_) => self.say(
                "provenance",
                Status::Failed,
                "lost: no tag names the index and the image has no referrer; the stack's policy dropped the \
                 provenance (set Provenance to index or referrers, KeepTag on)",
            ),
            Err(e) => self.say("provenance", Status::Failed, e.to_string()),
        }
    }

    fn check_deployability(&mut self, record: &Value) -> bool {
        let verdicts: Vec<&Value> = record["deployability"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| d["tag"] == TAG)
            .collect();
        match verdicts.first() {
            Some(d) if d["verdict"] == "yes" => self.say(
                "deployability",
                Status::Ok,
                format!("the record says Lambda takes {TAG}: verdict yes"),
            ),
            Some(d) => self.say(
                "deployability",
                Status::Failed,
                format!(
                    "the record says verdict {} for {TAG}: {}",
                    d["verdict"].as_str().unwrap_or("?"),
                    d["reasons"]
                ),
            ),
            None => self.say(
                "deployability",
                Status::Failed,
                format!("the record makes nothing deployable by {TAG}: the stack's mode leaves an index on the tag"),
            ),
        }
    }

    async fn check_scope(&mut self, repo: &RepositoryName, index: &Digest) -> bool {
        match self.records(index, crate::time::now_ms() - 3_600_000).await {
            Ok(records) => {
                let elsewhere: Vec<String> = records
                    .iter()
                    .filter_map(|r| r["repository"].as_str())
                    .filter(|r| *r != repo.as_str())
                    .map(str::to_owned)
                    .collect();
                if elsewhere.is_empty() {
                    self.say(
                        "scope",
                        Status::Ok,
                        format!("{} record(s) of the push, all in {repo}", records.len()),
                    )
                } else {
                    self.say(
                        "scope",
                        Status::Failed,
                        format!("records of the push name other repositories: {}", elsewhere.join(", ")),
                    )
                }
            }
            Err(e) => self.say("scope", Status::Failed, format!("cannot read the audit trail: {e}")),
        }
    }

    /// Only the service may put records on the stack's audit bus (its
    /// policy), so the trail the record came from is the service's.
    async fn check_writers(&mut self) -> bool {
        let stack = &self.plan.stack;
        let Some(bus) = stack.audit_bus.clone() else {
            return self.say(
                "writers",
                Status::Skipped,
                "the stack names no audit bus (AuditBusArn output)",
            );
        };
        let policy = match self.account.event_bus_policy(&bus).await {
            Ok(p) => p,
            Err(e) => {
                return self.say(
                    "writers",
                    Status::Failed,
                    format!("cannot read the audit bus's policy: {e}"),
                );
            }
        };
        match writers::audit_writers(&bus, policy.as_deref()) {
            writers::Writers::Only(list) => {
                let function = stack.function_role.as_deref();
                let others: Vec<&str> = list
                    .iter()
                    .map(String::as_str)
                    .filter(|w| Some(*w) != function)
                    .collect();
                let who = match (function.is_some_and(|f| list.iter().any(|w| w == f)), others.is_empty()) {
                    (true, true) => "only the function's role".to_owned(),
                    (true, false) => format!("only the function's role and {} (AuditWriterArns)", others.join(", ")),
                    (false, _) => format!("only {}", others.join(", ")),
                };
                self.say(
                    "writers",
                    Status::Ok,
                    format!("{who} may write records on the audit bus"),
                )
            }
            writers::Writers::Anyone(why) => self.say(
                "writers",
                Status::Failed,
                format!(
                    "{why}: any principal of the account allowed events:PutEvents can write a record that looks like \
                     the function's. Deploy the stack with AuditBus=create (the default), naming operators' roles in \
                     AuditWriterArns"
                ),
            ),
        }
    }

    async fn check_function(&mut self, repository_uri: &str, role: &str) -> bool {
        let name = format!("ecr-remediator-selftest-{}", self.plan.run_id);
        let uri = format!("{repository_uri}:{TAG}");
        let arch = if self.plan.platform.contains("arm64") {
            "arm64"
        } else {
            "x86_64"
        };
        if let Err(e) = self.account.create_function(&name, &uri, role, arch).await {
            return self.say("lambda", Status::Failed, format!("Lambda refused {uri}: {}", e.message));
        }
        self.function = Some(name.clone());
        let started = Instant::now();
        loop {
            match self.account.function_state(&name).await {
                Ok(FunctionState::Active) => {
                    return self.say(
                        "lambda",
                        Status::Ok,
                        format!(
                            "created function {name} from {uri}; Active after {} s",
                            started.elapsed().as_secs()
                        ),
                    );
                }
                Ok(FunctionState::Failed(reason)) => {
                    return self.say("lambda", Status::Failed, format!("Lambda refused {uri}: {reason}"));
                }
                Ok(FunctionState::Pending) if self.stopped() => return false,
                Ok(FunctionState::Pending) if started.elapsed() < self.plan.timeout => {
                    self.pause(Duration::from_secs(2)).await;
                }
                Ok(FunctionState::Pending) => {
                    return self.say(
                        "lambda",
                        Status::Failed,
                        format!("function {name} still Pending after {} s", self.plan.timeout.as_secs()),
                    );
                }
                Err(e) => return self.say("lambda", Status::Failed, e.to_string()),
            }
        }
    }

    /// Removes what the run created (or says it is kept).
    async fn cleanup(&mut self) -> Vec<Step> {
        let mut out = Vec::new();
        let kept = |what: String| Step {
            step: "cleanup",
            status: Status::Skipped,
            detail: format!("kept for inspection (--keep): {what}"),
        };
        if let Some(function) = self.function.take() {
            out.push(if self.plan.keep {
                kept(format!("function {function}"))
            } else {
                match self.account.delete_function(&function).await {
                    Ok(()) => ok_step(format!("deleted function {function}")),
                    Err(e) => failed_step(format!("function {function} not deleted: {e}")),
                }
            });
        }
        if let Some(repo) = self.repository.take() {
            out.push(if self.plan.keep {
                kept(format!("repository {repo}"))
            } else {
                match self.account.delete_repository(&repo).await {
                    Ok(()) => ok_step(format!("deleted repository {repo} and its images")),
                    Err(e) => failed_step(format!("repository {repo} not deleted: {e}")),
                }
            });
        }
        for step in &out {
            self.progress.step(step);
        }
        out
    }
}

fn ok_step(detail: String) -> Step {
    Step {
        step: "cleanup",
        status: Status::Ok,
        detail,
    }
}

fn failed_step(detail: String) -> Step {
    Step {
        step: "cleanup",
        status: Status::Failed,
        detail,
    }
}

fn short(d: &Digest) -> String {
    format!("sha256:{}", d.hex().get(..12).unwrap_or(d.hex()))
}

/// Runs the self-test; `interrupt` resolving (Ctrl-C) stops the steps, and
/// the clean-up runs in every case.
pub async fn run<A: Account, I: Insights, P: Progress>(
    account: &A,
    insights: &I,
    plan: &Plan,
    progress: &mut P,
    interrupt: impl Future<Output = ()>,
) -> Report {
    let stop = AtomicBool::new(false);
    let mut run = Run {
        stop: &stop,
        account,
        insights,
        plan,
        progress,
        steps: Vec::new(),
        repository: None,
        function: None,
        index: None,
    };
    // The interrupt only raises the flag: the call in flight finishes, so
    // what it created is recorded and removed below.
    let passed = {
        let steps = run.steps();
        let watch = async {
            interrupt.await;
            stop.store(true, Ordering::SeqCst);
            std::future::pending::<bool>().await
        };
        tokio::pin!(steps);
        tokio::pin!(watch);
        tokio::select! {
            passed = &mut steps => passed,
            never = &mut watch => never,
        }
    };
    let interrupted = stop.load(Ordering::SeqCst);
    if interrupted {
        run.say(
            "interrupted",
            Status::Failed,
            "stopped (Ctrl-C); removing what was created",
        );
    }
    let repository = run.repository.as_ref().map(ToString::to_string);
    let index = run.index.as_ref().map(ToString::to_string);
    let cleanup = run.cleanup().await;
    let cleaned = cleanup.iter().all(|s| s.status != Status::Failed);
    Report {
        passed: passed && cleaned && !interrupted,
        interrupted,
        account: plan.account.clone(),
        region: plan.region.clone(),
        stack: plan.stack.name.clone(),
        repository,
        index,
        steps: run.steps,
        cleanup,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(prefixes: &[&str], repository: Option<&str>) -> Plan {
        Plan {
            account: AccountId::parse("123456789012").unwrap(),
            region: "us-east-1".into(),
            stack: Stack {
                name: "prod".into(),
                audit_log_group: "/g".into(),
                function: None,
                prefixes: prefixes.iter().map(|p| (*p).to_owned()).collect(),
                ..Stack::default()
            },
            repository: repository.map(|r| RepositoryName::parse(r).unwrap()),
            platform: "linux/arm64".into(),
            format: AttestationFormat::Subject,
            timeout: Duration::from_secs(1),
            create_function: None,
            keep: false,
            run_id: "r1".into(),
        }
    }

    #[test]
    fn only_platforms_lambda_runs_are_taken() {
        for ok in ["linux/arm64", "linux/arm64/v8", "linux/amd64"] {
            assert!(lambda_platform(ok).is_ok(), "{ok}");
        }
        for refused in ["linux/ppc64le", "windows/amd64", "linux/arm/v7", "linux"] {
            assert!(lambda_platform(refused).is_err(), "{refused}");
        }
    }

    #[test]
    fn the_scratch_repository_lies_in_the_stacks_scope_or_is_refused_with_what_to_allow() {
        assert_eq!(
            scratch_repository(&plan(&[], None)).unwrap().as_str(),
            "ecr-remediator-selftest-r1"
        );
        assert_eq!(
            scratch_repository(&plan(&["team-a/", "b-"], None)).unwrap().as_str(),
            "team-a/ecr-remediator-selftest-r1"
        );
        let outside = scratch_repository(&plan(&["team-a/"], Some("other/x"))).unwrap_err();
        assert!(
            outside.contains("outside stack prod's scope") && outside.contains("team-a/"),
            "{outside}"
        );
        // A prefix no repository name can continue (upper case) names the prefix to allow.
        let invalid = scratch_repository(&plan(&["Team/"], None)).unwrap_err();
        assert!(invalid.contains("ecr-remediator-selftest-"), "{invalid}");
    }
}
