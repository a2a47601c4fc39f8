//! Which `ECR Image Action` and `ECR Replication Action` events are work.
//!
//! ECR emits one PUSH event per stored manifest (ECR-FACTS §3): each child of
//! a buildx index arrives untagged with an image-manifest media type, the
//! index with its tag. Only a successful PUSH of a tagged index is work; all
//! else is skipped here, before any registry call, with a typed reason.
//!
//! A replication rule copies what is pushed (and what this service writes)
//! into the destination registry, which receives `ECR Replication Action`
//! events (`action-type: REPLICATE`, with `source-account` and
//! `source-region`, and no media type) instead of PUSH. A successful
//! REPLICATE of a tagged manifest is handled as a push in the destination:
//! the registry read tells an index from an image (the source's own
//! promotions arrive as tagged image manifests and end as `not_an_index`);
//! keep tags and companion tags are recognised by shape, as for a push.

use std::fmt;

use crate::engine::audit::Trigger;
use crate::engine::{Job, Purpose, ReplicaSource};
use crate::oci::companion::parse_companion;
use crate::oci::digest::Digest;
use crate::oci::media_type::ManifestMediaType;
use crate::oci::names::AccountId;
use crate::oci::names::{ImageTag, RepositoryName};
use crate::service::message::{Ignored, ImageAction, ImageEvent, MessageError, Problem};

/// What to do with one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Triage {
    /// Handle this pushed, tagged index.
    Handle(Job),
    /// Skip, for this reason.
    Ignore(Ignored),
}

fn field(event: &ImageAction, field: &'static str, problem: impl fmt::Display) -> MessageError {
    MessageError::new(
        event.id.clone(),
        Problem::Field {
            field,
            problem: problem.to_string(),
        },
    )
}

/// Decides whether a parsed `ECR Image Action` event is work, without any
/// registry call.
///
/// `keep_tag` is the keep-tag template of the repository's policy (if any):
/// a tag of that shape is the service's own write and is never handled again.
/// A PUSH without `manifest-media-type` is handled (the registry tells).
pub fn triage(
    event: &ImageAction,
    is_keep_tag: impl Fn(&RepositoryName, &ImageTag) -> bool,
) -> Result<Triage, MessageError> {
    let detail = &event.detail;
    let expected = match event.event {
        ImageEvent::Action => "PUSH",
        ImageEvent::Replication => "REPLICATE",
    };
    if detail.action_type != expected {
        return Ok(Triage::Ignore(Ignored::NotPush {
            action_type: detail.action_type.clone(),
        }));
    }
    if detail.result != "SUCCESS" {
        return Ok(Triage::Ignore(Ignored::Failed));
    }
    if let Some(mt) = &detail.manifest_media_type
        && !ManifestMediaType::parse(mt).is_some_and(ManifestMediaType::is_index)
    {
        return Ok(Triage::Ignore(Ignored::NotAnIndex { media_type: mt.clone() }));
    }
    let repository = RepositoryName::parse(&detail.repository_name).map_err(|e| field(event, "repository-name", e))?;
    let digest = Digest::parse(&detail.image_digest).map_err(|e| field(event, "image-digest", e))?;
    let tag = match detail.image_tag.as_deref() {
        None | Some("") => return Ok(Triage::Ignore(Ignored::Untagged)),
        Some(t) => ImageTag::parse(t).map_err(|e| field(event, "image-tag", e))?,
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
    let (trigger, replicated_from) = match event.event {
        ImageEvent::Action => (Trigger::Push, None),
        ImageEvent::Replication => {
            let account = detail
                .source_account
                .as_deref()
                .map(AccountId::parse)
                .transpose()
                .map_err(|e| field(event, "source-account", e))?;
            (
                Trigger::Replication,
                Some(ReplicaSource {
                    account,
                    region: detail.source_region.clone(),
                }),
            )
        }
    };
    Ok(Triage::Handle(Job {
        purpose: Purpose::Remediate,
        trigger,
        event_id: event.id.clone(),
        account: event.account.clone(),
        region: event.region.clone(),
        replicated_from,
        repository,
        digest,
        tag: Some(tag),
        tag_arrived_ms: event.time_ms,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::template::TagTemplate;
    use crate::service::message::{ECR_SOURCE, IMAGE_ACTION, Message, REPLICATION_ACTION};

    const INDEX: &str = "application/vnd.oci.image.index.v1+json";
    const DIGEST: &str = "sha256:42b5e3bd0b6a7e2a6f1f4ab6b3e6c0c5d2b4a1f0e9d8c7b6a5f4e3d2c1b0a998";

    /// An event as ECR sends it, parsed the one way every input is.
    struct Event(serde_json::Value);

    impl Event {
        fn parsed(&self) -> ImageAction {
            match Message::parse(self.0.clone()) {
                Ok(Message::ImageAction(a)) => a,
                other => panic!("not an image action: {other:?}"),
            }
        }
    }

    fn push(tag: &str, media_type: &str) -> Event {
        Event(serde_json::json!({
            "version": "0", "id": "e1", "detail-type": IMAGE_ACTION, "source": ECR_SOURCE,
            "account": "123456789012", "time": "2026-11-23T12:00:00Z", "region": "eu-central-1",
            "resources": [], "detail": {
                "result": "SUCCESS", "repository-name": "team/app", "image-digest": DIGEST,
                "action-type": "PUSH", "image-tag": tag, "manifest-media-type": media_type
            }
        }))
    }

    fn keep(_: &RepositoryName, tag: &ImageTag) -> bool {
        crate::policy::Policy::default().is_keep_tag(tag)
    }

    fn run(e: &Event) -> Triage {
        triage(&e.parsed(), keep).unwrap()
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
        delete.0["detail"]["action-type"] = "DELETE".into();
        assert!(matches!(run(&delete), Triage::Ignore(Ignored::NotPush { .. })));
        let mut failed = push("v7", INDEX);
        failed.0["detail"]["result"] = "FAILURE".into();
        assert_eq!(run(&failed), Triage::Ignore(Ignored::Failed));
    }

    #[test]
    fn missing_media_type_is_handled_and_the_registry_decides() {
        let mut e = push("v7", INDEX);
        e.0["detail"].as_object_mut().unwrap().remove("manifest-media-type");
        assert!(matches!(run(&e), Triage::Handle(_)));
    }

    #[test]
    fn malformed_events_are_errors_naming_the_problem() {
        let mut e = push("v7", INDEX);
        e.0["detail"]["image-digest"] = "sha256:nothex".into();
        let err = triage(&e.parsed(), keep).unwrap_err().to_string();
        assert!(err.contains("image-digest"), "{err}");
        let mut e = push("v7", INDEX);
        e.0["detail"]["repository-name"] = "Team/App".into();
        let err = triage(&e.parsed(), keep).unwrap_err().to_string();
        assert!(err.contains("repository-name"), "{err}");
        let mut e = push("v7", INDEX);
        e.0["detail"].as_object_mut().unwrap().remove("repository-name");
        let err = Message::parse(e.0).unwrap_err().to_string();
        assert!(err.contains("repository-name"), "{err}");
        let mut e = push("bad tag!", INDEX);
        e.0["detail"]["image-tag"] = "bad tag!".into();
        assert!(triage(&e.parsed(), keep).is_err());
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
            triage(&e.parsed(), |_, t| off.is_keep_tag(t)).unwrap(),
            Triage::Ignore(Ignored::OwnKeepTag { .. })
        ));
        // A template used before, listed in the history.
        let mut changed = off.clone();
        changed.keep_tag_history = vec![TagTemplate::parse_keep("kept-{tag}").unwrap()];
        let e = push("kept-v7", INDEX);
        assert!(matches!(
            triage(&e.parsed(), |_, t| changed.is_keep_tag(t)).unwrap(),
            Triage::Ignore(Ignored::OwnKeepTag { .. })
        ));
        assert!(matches!(
            triage(&e.parsed(), |_, t| off.is_keep_tag(t)).unwrap(),
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

    /// A replication event as ECR sends it into the destination registry.
    fn replicate(tag: &str) -> Event {
        Event(serde_json::json!({
            "version": "0", "id": "r1", "detail-type": REPLICATION_ACTION, "source": ECR_SOURCE,
            "account": "123456789012", "time": "2026-11-23T12:00:05Z", "region": "eu-west-1",
            "resources": ["arn:aws:ecr:eu-west-1:123456789012:repository/team/app"], "detail": {
                "result": "SUCCESS", "repository-name": "team/app", "image-digest": DIGEST,
                "source-account": "123456789012", "action-type": "REPLICATE",
                "source-region": "eu-central-1", "image-tag": tag
            }
        }))
    }

    #[test]
    fn a_replicated_tagged_manifest_is_handled_as_a_push_in_the_destination() {
        let Triage::Handle(job) = run(&replicate("v7")) else {
            panic!("not handled")
        };
        assert_eq!(job.trigger, Trigger::Replication);
        assert_eq!(job.region.as_deref(), Some("eu-west-1"), "the destination's registry");
        let from = job.replicated_from.unwrap();
        assert_eq!(from.region.as_deref(), Some("eu-central-1"));
        assert_eq!(from.account.unwrap().as_str(), "123456789012");
        // Children, the source's keep tags and failures are not work, as for a push.
        assert_eq!(run(&replicate("")), Triage::Ignore(Ignored::Untagged));
        assert!(matches!(
            run(&replicate("v7-index")),
            Triage::Ignore(Ignored::OwnKeepTag { .. })
        ));
        let mut failed = replicate("v7");
        failed.0["detail"]["result"] = "FAILURE".into();
        assert_eq!(run(&failed), Triage::Ignore(Ignored::Failed));
        // A PUSH inside a replication event, or REPLICATE inside an image
        // action, is not what ECR sends: not work.
        let mut odd = replicate("v7");
        odd.0["detail"]["action-type"] = "PUSH".into();
        assert!(matches!(run(&odd), Triage::Ignore(Ignored::NotPush { .. })));
        let mut odd = push("v7", INDEX);
        odd.0["detail"]["action-type"] = "REPLICATE".into();
        assert!(matches!(run(&odd), Triage::Ignore(Ignored::NotPush { .. })));
        let mut bad = replicate("v7");
        bad.0["detail"]["source-account"] = "12".into();
        assert!(
            triage(&bad.parsed(), keep)
                .unwrap_err()
                .to_string()
                .contains("source-account")
        );
    }
}
