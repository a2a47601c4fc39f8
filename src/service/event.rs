//! ECR's `ECR Image Action` EventBridge event, and which ones the service handles.
//!
//! ECR emits one PUSH event per stored manifest (ECR-FACTS §3): each child of
//! a buildx index arrives untagged with an image-manifest media type, the
//! index with its tag. Only a successful PUSH of a tagged index is work; all
//! else is skipped here, before any registry call, with a typed reason.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::engine::audit::Trigger;
use crate::engine::{Job, Purpose};
use crate::oci::companion::{Companion, parse_companion};
use crate::oci::digest::Digest;
use crate::oci::media_type::ManifestMediaType;
use crate::oci::names::{ImageTag, RepositoryName};

/// The `source` of ECR's events.
pub const ECR_SOURCE: &str = "aws.ecr";
/// The `detail-type` of ECR's image events.
pub const IMAGE_ACTION: &str = "ECR Image Action";
/// The `source` of the service's own requests (a scheduled sweep enqueues one
/// per image that needs work).
pub const REQUEST_SOURCE: &str = "ecr-remediator";
/// The `detail-type` of those requests; their detail has the shape of an
/// `ECR Image Action` PUSH detail.
pub const REQUEST_DETAIL_TYPE: &str = "ECR Remediation Request";

/// An EventBridge event with its detail left raw (parsed once the type is
/// known): `aws_lambda_events`' own type, as Rust Lambda users expect.
pub type Envelope = aws_lambda_events::event::eventbridge::EventBridgeEvent<serde_json::Value>;

/// The `detail` of an `ECR Image Action` event.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ImageActionDetail {
    /// `SUCCESS` or `FAILURE`.
    pub result: String,
    /// Repository name.
    #[serde(rename = "repository-name")]
    pub repository_name: String,
    /// Digest of the manifest.
    #[serde(rename = "image-digest")]
    pub image_digest: String,
    /// `PUSH`, `DELETE`, `UPDATE_STORAGE_CLASS`, ...
    #[serde(rename = "action-type")]
    pub action_type: String,
    /// The tag, `""` when untagged.
    #[serde(rename = "image-tag", default)]
    pub image_tag: Option<String>,
    /// The manifest's media type (absent in some older events).
    #[serde(rename = "manifest-media-type", default)]
    pub manifest_media_type: Option<String>,
    /// The config media type (image manifests only).
    #[serde(rename = "artifact-media-type", default)]
    pub artifact_media_type: Option<String>,
    /// In a sweep's request only (never in ECR's events): clean this leftover
    /// up if it was pushed at least this many seconds ago (see
    /// [`crate::engine::cleanup`]).
    #[serde(rename = "cleanup-min-age-s", default, skip_serializing_if = "Option::is_none")]
    pub cleanup_min_age_s: Option<u64>,
}

/// Why an event is not handled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Ignored {
    /// Not from ECR.
    OtherSource {
        /// The source.
        source: String,
    },
    /// From ECR but not an image action (scan, replication, ...).
    OtherDetailType {
        /// The detail-type.
        detail_type: String,
    },
    /// Not a PUSH (DELETE, UPDATE_STORAGE_CLASS, ...).
    NotPush {
        /// The action type.
        action_type: String,
    },
    /// The push failed.
    Failed,
    /// A single manifest (a child of an index, or the service's own retag).
    NotAnIndex {
        /// Its media type.
        media_type: String,
    },
    /// Untagged: a child manifest being stored.
    Untagged,
    /// A tag shaped like the service's own keep tag.
    OwnKeepTag {
        /// The tag.
        tag: String,
    },
    /// A companion tag (cosign's `.sig`/`.att`/`.sbom`, the referrers tag
    /// schema's index): another manifest's attachment, not an image to remediate.
    CompanionTag {
        /// The tag.
        tag: String,
        /// What it attaches.
        companion: Companion,
        /// The manifest it attaches to.
        subject: String,
    },
}

impl fmt::Display for Ignored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ignored::OtherSource { source } => write!(f, "event source {source} is not {ECR_SOURCE}"),
            Ignored::OtherDetailType { detail_type } => write!(f, "detail-type {detail_type} is not {IMAGE_ACTION}"),
            Ignored::NotPush { action_type } => write!(f, "action-type {action_type} is not PUSH"),
            Ignored::Failed => f.write_str("the push failed (result FAILURE)"),
            Ignored::NotAnIndex { media_type } => {
                write!(f, "{media_type} is a single manifest (a child push or our own retag)")
            }
            Ignored::Untagged => f.write_str("untagged push (a child manifest)"),
            Ignored::OwnKeepTag { tag } => write!(f, "tag {tag} has the shape of our own keep tag"),
            Ignored::CompanionTag {
                tag,
                companion,
                subject,
            } => {
                write!(
                    f,
                    "tag {tag} is the {companion} of {subject}, not an image to remediate"
                )
            }
        }
    }
}

/// An event that cannot be understood.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// Not an EventBridge event.
    #[error("malformed event: {0}")]
    Json(#[source] serde_json::Error),
    /// The ECR detail lacks a field or has a wrong type.
    #[error("malformed ECR Image Action detail: {0}")]
    Detail(#[source] serde_json::Error),
    /// A field has an invalid value.
    #[error("malformed ECR Image Action detail: {field}: {problem}")]
    Field {
        /// The field.
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
}

/// What to do with one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Triage {
    /// Handle this pushed, tagged index (or a sweep's request for one).
    Handle(Job),
    /// Skip, for this reason.
    Ignore(Ignored),
}

/// Parses an EventBridge event from JSON text.
pub fn parse_envelope(text: &str) -> Result<Envelope, EventError> {
    serde_json::from_str(text).map_err(EventError::Json)
}

fn parse_repository(detail: &ImageActionDetail) -> Result<RepositoryName, EventError> {
    RepositoryName::parse(&detail.repository_name).map_err(|e| EventError::Field {
        field: "repository-name",
        problem: e.to_string(),
    })
}

fn parse_digest(detail: &ImageActionDetail) -> Result<Digest, EventError> {
    Digest::parse(&detail.image_digest).map_err(|e| EventError::Field {
        field: "image-digest",
        problem: e.to_string(),
    })
}

/// Decides whether `event` is work, without any registry call.
///
/// `keep_tag` is the keep-tag template of the repository's policy (if any):
/// a tag of that shape is the service's own write and is never handled again.
/// A PUSH without `manifest-media-type` is handled (the registry tells).
pub fn triage(
    event: &Envelope,
    is_keep_tag: impl Fn(&RepositoryName, &ImageTag) -> bool,
) -> Result<Triage, EventError> {
    let trigger = match (event.source.as_str(), event.detail_type.as_str()) {
        (ECR_SOURCE, IMAGE_ACTION) => Trigger::Push,
        (REQUEST_SOURCE, REQUEST_DETAIL_TYPE) => Trigger::Sweep,
        (ECR_SOURCE | REQUEST_SOURCE, other) => {
            return Ok(Triage::Ignore(Ignored::OtherDetailType {
                detail_type: other.to_owned(),
            }));
        }
        (source, _) => {
            return Ok(Triage::Ignore(Ignored::OtherSource {
                source: source.to_owned(),
            }));
        }
    };
    let detail: ImageActionDetail = serde_json::from_value(event.detail.clone()).map_err(EventError::Detail)?;
    if detail.action_type != "PUSH" {
        return Ok(Triage::Ignore(Ignored::NotPush {
            action_type: detail.action_type,
        }));
    }
    if detail.result != "SUCCESS" {
        return Ok(Triage::Ignore(Ignored::Failed));
    }
    if let (Trigger::Sweep, Some(min_age_s)) = (trigger, detail.cleanup_min_age_s) {
        // Never younger than the default: whoever may send to the queue (in a
        // hub, any principal of the organisation) must not be able to ask for
        // the deletion of a manifest a push still in progress may need.
        // `sweep --min-age` runs in-process, not through here.
        let min_age_s = min_age_s.max(crate::engine::cleanup::DEFAULT_MIN_AGE_S);
        return Ok(Triage::Handle(Job {
            purpose: Purpose::Cleanup { min_age_s },
            trigger,
            event_id: event.id.clone(),
            account: event.account.clone(),
            region: event.region.clone(),
            repository: parse_repository(&detail)?,
            digest: parse_digest(&detail)?,
            tag: None,
        }));
    }
    if let Some(mt) = &detail.manifest_media_type
        && !ManifestMediaType::parse(mt).is_some_and(ManifestMediaType::is_index)
    {
        return Ok(Triage::Ignore(Ignored::NotAnIndex { media_type: mt.clone() }));
    }
    let repository = parse_repository(&detail)?;
    let digest = parse_digest(&detail)?;
    let tag = match detail.image_tag.as_deref() {
        None | Some("") => return Ok(Triage::Ignore(Ignored::Untagged)),
        Some(t) => ImageTag::parse(t).map_err(|e| EventError::Field {
            field: "image-tag",
            problem: e.to_string(),
        })?,
    };
    if let Some((companion, subject)) = parse_companion(&tag) {
        return Ok(Triage::Ignore(Ignored::CompanionTag {
            tag: tag.as_str().to_owned(),
            companion,
            subject: subject.to_string(),
        }));
    }
    if is_keep_tag(&repository, &tag) {
        return Ok(Triage::Ignore(Ignored::OwnKeepTag {
            tag: tag.as_str().to_owned(),
        }));
    }
    Ok(Triage::Handle(Job {
        purpose: Purpose::Remediate,
        trigger,
        event_id: event.id.clone(),
        account: event.account.clone(),
        region: event.region.clone(),
        repository,
        digest,
        tag: Some(tag),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::template::TagTemplate;

    const INDEX: &str = "application/vnd.oci.image.index.v1+json";
    const DIGEST: &str = "sha256:42b5e3bd0b6a7e2a6f1f4ab6b3e6c0c5d2b4a1f0e9d8c7b6a5f4e3d2c1b0a998";

    fn event(detail: serde_json::Value) -> Envelope {
        serde_json::from_value(serde_json::json!({
            "version": "0", "id": "e1", "detail-type": IMAGE_ACTION, "source": ECR_SOURCE,
            "account": "123456789012", "time": "2026-11-23T12:00:00Z", "region": "eu-central-1",
            "resources": [], "detail": detail
        }))
        .unwrap()
    }

    fn push(tag: &str, media_type: &str) -> Envelope {
        event(serde_json::json!({
            "result": "SUCCESS", "repository-name": "team/app", "image-digest": DIGEST,
            "action-type": "PUSH", "image-tag": tag, "manifest-media-type": media_type
        }))
    }

    fn keep(_: &RepositoryName, tag: &ImageTag) -> bool {
        crate::policy::Policy::default().is_keep_tag(tag)
    }

    fn run(e: &Envelope) -> Triage {
        triage(e, keep).unwrap()
    }

    #[test]
    fn a_tagged_index_push_is_handled() {
        let Triage::Handle(p) = run(&push("v7", INDEX)) else {
            panic!("not handled")
        };
        assert_eq!(p.repository.as_str(), "team/app");
        assert_eq!(p.tag.as_ref().map(ImageTag::as_str), Some("v7"));
        assert_eq!(p.digest.to_string(), DIGEST);
        assert_eq!(p.event_id.as_deref(), Some("e1"));
        let list = push("v7", "application/vnd.docker.distribution.manifest.list.v2+json");
        assert!(matches!(run(&list), Triage::Handle(_)));
    }

    #[test]
    fn children_own_retags_deletes_and_other_events_are_ignored() {
        let image = "application/vnd.oci.image.manifest.v1+json";
        assert_eq!(run(&push("", INDEX)), Triage::Ignore(Ignored::Untagged));
        assert!(matches!(
            run(&push("", image)),
            Triage::Ignore(Ignored::NotAnIndex { .. })
        ));
        assert!(matches!(
            run(&push("v7", image)),
            Triage::Ignore(Ignored::NotAnIndex { .. })
        ));
        assert!(matches!(
            run(&push("v7-index", INDEX)),
            Triage::Ignore(Ignored::OwnKeepTag { .. })
        ));
        let mut delete = push("v7", INDEX);
        delete.detail["action-type"] = "DELETE".into();
        assert!(matches!(run(&delete), Triage::Ignore(Ignored::NotPush { .. })));
        let mut failed = push("v7", INDEX);
        failed.detail["result"] = "FAILURE".into();
        assert_eq!(run(&failed), Triage::Ignore(Ignored::Failed));
        let mut scan = push("v7", INDEX);
        scan.detail_type = "ECR Image Scan".into();
        assert!(matches!(run(&scan), Triage::Ignore(Ignored::OtherDetailType { .. })));
        let mut other = push("v7", INDEX);
        other.source = "aws.s3".into();
        assert!(matches!(run(&other), Triage::Ignore(Ignored::OtherSource { .. })));
    }

    #[test]
    fn a_sweep_request_is_handled_as_a_sweep() {
        let mut e = push("v7", INDEX);
        e.source = REQUEST_SOURCE.into();
        e.detail_type = REQUEST_DETAIL_TYPE.into();
        let Triage::Handle(p) = run(&e) else {
            panic!("not handled")
        };
        assert_eq!(p.trigger, Trigger::Sweep);
        assert_eq!(
            run(&push("v7", INDEX)),
            Triage::Handle(Job {
                purpose: Purpose::Remediate,
                trigger: Trigger::Push,
                ..p
            })
        );
        e.detail_type = "Something Else".into();
        assert!(matches!(run(&e), Triage::Ignore(Ignored::OtherDetailType { .. })));
    }

    #[test]
    fn a_sweeps_requests_give_back_its_jobs_and_ecr_cannot_ask_for_a_cleanup() {
        let job_of = |purpose, tag| Job {
            purpose,
            trigger: Trigger::Sweep,
            event_id: None,
            account: None,
            region: None,
            repository: RepositoryName::parse("team/app").unwrap(),
            digest: Digest::sha256_of(b"x"),
            tag,
        };
        // The job a request gives back: the one it was made of, or with the
        // default minimum age when it asked for a younger one.
        let handled = |job: &Job| {
            let event = parse_envelope(&crate::service::sweep::request_event(job)).unwrap();
            let Triage::Handle(got) = run(&event) else {
                panic!("not handled: {event:?}")
            };
            Job { event_id: None, ..got }
        };
        for (purpose, tag) in [
            (Purpose::Remediate, Some(ImageTag::parse("v7").unwrap())),
            (Purpose::Cleanup { min_age_s: 3600 }, None),
            (Purpose::Cleanup { min_age_s: 86_400 }, None),
        ] {
            let job = job_of(purpose, tag);
            assert_eq!(handled(&job), job);
        }
        let young = handled(&job_of(Purpose::Cleanup { min_age_s: 0 }, None));
        assert_eq!(
            young.purpose,
            Purpose::Cleanup {
                min_age_s: crate::engine::cleanup::DEFAULT_MIN_AGE_S
            }
        );
        // The same detail from ECR is an untagged push, never a cleanup.
        let mut e = push("", "application/vnd.oci.image.manifest.v1+json");
        e.detail["cleanup-min-age-s"] = 0.into();
        assert!(matches!(run(&e), Triage::Ignore(_)));
    }

    #[test]
    fn missing_media_type_is_handled_and_the_registry_decides() {
        let mut e = push("v7", INDEX);
        e.detail.as_object_mut().unwrap().remove("manifest-media-type");
        assert!(matches!(run(&e), Triage::Handle(_)));
    }

    #[test]
    fn malformed_events_are_errors_naming_the_problem() {
        assert!(parse_envelope("{").is_err());
        assert!(parse_envelope("{\"source\": 1}").is_err());
        let mut e = push("v7", INDEX);
        e.detail["image-digest"] = "sha256:nothex".into();
        let err = triage(&e, keep).unwrap_err().to_string();
        assert!(err.contains("image-digest"), "{err}");
        let mut e = push("v7", INDEX);
        e.detail.as_object_mut().unwrap().remove("repository-name");
        let err = triage(&e, keep).unwrap_err().to_string();
        assert!(err.contains("repository-name"), "{err}");
        let mut e = push("bad tag!", INDEX);
        e.detail["image-tag"] = "bad tag!".into();
        assert!(triage(&e, keep).is_err());
    }

    #[test]
    fn keep_tags_are_recognised_whatever_the_policy_says_today() {
        // Keep tag turned off: earlier runs' `-index` tags are still ours.
        let off = crate::policy::Policy {
            keep_tag: None,
            ..Default::default()
        };
        let e = push("v7-index", INDEX);
        assert!(matches!(
            triage(&e, |_, t| off.is_keep_tag(t)).unwrap(),
            Triage::Ignore(Ignored::OwnKeepTag { .. })
        ));
        // A template used before, listed in the history.
        let mut changed = off.clone();
        changed.keep_tag_history = vec![TagTemplate::parse_keep("kept-{tag}").unwrap()];
        let e = push("kept-v7", INDEX);
        assert!(matches!(
            triage(&e, |_, t| changed.is_keep_tag(t)).unwrap(),
            Triage::Ignore(Ignored::OwnKeepTag { .. })
        ));
        assert!(matches!(
            triage(&e, |_, t| off.is_keep_tag(t)).unwrap(),
            Triage::Handle(_)
        ));
    }

    #[test]
    fn companion_tags_are_never_remediated() {
        let hex = "ab".repeat(32);
        for tag in [
            format!("sha256-{hex}"),
            format!("sha256-{hex}.sig"),
            format!("sha256-{hex}.att"),
        ] {
            let Triage::Ignore(Ignored::CompanionTag { subject, .. }) = run(&push(&tag, INDEX)) else {
                panic!("{tag} handled")
            };
            assert_eq!(subject, format!("sha256:{hex}"));
        }
    }
}
