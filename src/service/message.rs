//! Every input the service accepts, as one closed type parsed in one place.
//!
//! The Lambda function receives a direct EventBridge event, an SQS batch, or
//! the schedule's payload; the `serve` worker receives SQS message bodies.
//! Each of them is parsed here, once, into a [`Message`]; the handler
//! dispatches on it ([`crate::service::handler::Handler::handle`]). Nothing
//! else in the service looks at raw JSON.
//!
//! Two families of messages exist:
//! - **ECR's events** (`source: aws.ecr`), kept in the shape ECR sends them
//!   (ECR-FACTS §3), as `aws_lambda_events`' EventBridge type;
//! - **the service's own requests**, objects keyed by [`REQUEST_KEY`]: the
//!   schedule's sweep, one account's sweep (a hub's fan-out), and the image
//!   and cleanup requests a sweep enqueues. They are a typed format of their
//!   own, never ECR events carrying fields ECR does not send.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::oci::companion::Companion;
use crate::oci::names::AccountId;

pub use crate::service::request::{ImageRequest, REQUEST_KEY, Request, Work};

/// The `source` of ECR's events.
pub const ECR_SOURCE: &str = "aws.ecr";
/// The `detail-type` of ECR's image events.
pub const IMAGE_ACTION: &str = "ECR Image Action";
/// The `detail-type` of ECR's replication events: an image a replication
/// rule copied into this registry (`action-type: REPLICATE`).
pub const REPLICATION_ACTION: &str = "ECR Replication Action";
/// The `detail` of an `ECR Image Action` event.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
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
    /// Replication events: the account the image was replicated from.
    #[serde(rename = "source-account", default)]
    pub source_account: Option<String>,
    /// Replication events: the region the image was replicated from.
    #[serde(rename = "source-region", default)]
    pub source_region: Option<String>,
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
    /// From ECR but neither an image action nor a replication (a scan, ...).
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
            Ignored::OtherDetailType { detail_type } => {
                write!(
                    f,
                    "detail-type {detail_type} is neither {IMAGE_ACTION} nor {REPLICATION_ACTION}"
                )
            }
            Ignored::NotPush { action_type } => write!(f, "action-type {action_type} is not PUSH (nor REPLICATE)"),
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

/// One input, parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// An `ECR Image Action` event (a push, a deletion, ...), to be triaged.
    ImageAction(ImageAction),
    /// A request of the service's own.
    Request(Request),
    /// An event the service does not handle (another source or event type):
    /// skipped, at no registry call.
    Ignored {
        /// The event's id.
        event_id: Option<String>,
        /// Why.
        reason: Ignored,
    },
}

/// Which of ECR's two image events an [`ImageAction`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageEvent {
    /// `ECR Image Action`: a push, a deletion, a storage-class change.
    Action,
    /// `ECR Replication Action`: a replication into this registry.
    Replication,
}

/// An `ECR Image Action` or `ECR Replication Action` event: the envelope's
/// identity and its detail.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageAction {
    /// Which event it is.
    pub event: ImageEvent,
    /// The event id.
    pub id: Option<String>,
    /// The account the image is in.
    pub account: Option<AccountId>,
    /// The region.
    pub region: Option<String>,
    /// The event's `time` (ms since the epoch): when the tag arrived.
    pub time_ms: Option<i64>,
    /// The detail, as ECR sends it (its fields are read by
    /// `crate::service::triage::triage`).
    pub detail: ImageActionDetail,
}

/// An input that cannot be understood: recorded as `skipped`
/// (`malformed_event`), never retried.
#[derive(Debug, thiserror::Error)]
#[error("{problem}")]
pub struct MessageError {
    /// The event's id, when it could be read.
    pub event_id: Option<String>,
    /// What is wrong.
    pub problem: Problem,
}

/// What is wrong with an input.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// Not JSON.
    #[error("malformed message: not JSON: {0}")]
    Json(#[source] serde_json::Error),
    /// Neither an EventBridge event nor a request of this service.
    #[error("malformed event: {0}")]
    Envelope(#[source] serde_json::Error),
    /// The event's account is not an account id.
    #[error("malformed event: account: {0}")]
    Account(#[source] crate::oci::names::NameError),
    /// The ECR detail lacks a field or has a wrong type.
    #[error("malformed ECR Image Action detail: {0}")]
    Detail(#[source] serde_json::Error),
    /// A field of the detail has an invalid value.
    #[error("malformed ECR Image Action detail: {field}: {problem}")]
    Field {
        /// The field.
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// A request of this service's that is not one it knows.
    #[error("malformed ecr-remediator request: {0}")]
    Request(#[source] serde_json::Error),
}

impl MessageError {
    pub(crate) fn new(event_id: Option<String>, problem: Problem) -> Self {
        MessageError { event_id, problem }
    }
}

/// An EventBridge event with its detail left raw until its type is known:
/// `aws_lambda_events`' own type, as Rust Lambda users expect.
type Envelope = aws_lambda_events::event::eventbridge::EventBridgeEvent<Value>;

impl Message {
    /// Parses message text (an SQS body).
    pub fn parse_text(text: &str) -> Result<Message, MessageError> {
        let value = serde_json::from_str(text).map_err(|e| MessageError::new(None, Problem::Json(e)))?;
        Message::parse(value)
    }

    /// Parses one message.
    pub fn parse(value: Value) -> Result<Message, MessageError> {
        if value.get(REQUEST_KEY).is_some() {
            let id = value.get("id").and_then(Value::as_str).map(str::to_owned);
            return Request::from_value(value)
                .map(Message::Request)
                .map_err(|e| MessageError::new(id, Problem::Request(e)));
        }
        let envelope: Envelope =
            serde_json::from_value(value).map_err(|e| MessageError::new(None, Problem::Envelope(e)))?;
        let id = envelope.id.clone();
        let ignored = |reason| {
            Ok(Message::Ignored {
                event_id: id.clone(),
                reason,
            })
        };
        if envelope.source != ECR_SOURCE {
            return ignored(Ignored::OtherSource {
                source: envelope.source,
            });
        }
        let event = match envelope.detail_type.as_str() {
            IMAGE_ACTION => ImageEvent::Action,
            REPLICATION_ACTION => ImageEvent::Replication,
            _ => {
                return ignored(Ignored::OtherDetailType {
                    detail_type: envelope.detail_type,
                });
            }
        };
        let account = envelope
            .account
            .as_deref()
            .map(AccountId::parse)
            .transpose()
            .map_err(|e| MessageError::new(id.clone(), Problem::Account(e)))?;
        let detail =
            serde_json::from_value(envelope.detail).map_err(|e| MessageError::new(id.clone(), Problem::Detail(e)))?;
        Ok(Message::ImageAction(ImageAction {
            event,
            id,
            account,
            region: envelope.region,
            time_ms: envelope.time.map(|t| t.timestamp_millis()),
            detail,
        }))
    }
}

/// A Lambda payload: one message, or an SQS batch of them.
#[derive(Debug)]
pub enum Payload {
    /// A direct invocation: an EventBridge event or the schedule's payload.
    One(Box<Result<Message, MessageError>>),
    /// An SQS batch.
    Batch(Vec<Queued>),
}

/// One message of an SQS batch.
#[derive(Debug)]
pub struct Queued {
    /// The SQS message id (what a partial batch response names).
    pub message_id: String,
    /// The delivery attempt (`ApproximateReceiveCount`), when given.
    pub attempt: Option<u32>,
    /// The body, parsed.
    pub message: Result<Message, MessageError>,
}

impl Payload {
    /// Parses a Lambda payload: an SQS batch is `Records` whose every entry
    /// has `eventSource: aws:sqs`; anything else is one message.
    pub fn parse(value: Value) -> Payload {
        let is_batch = value.get("Records").and_then(Value::as_array).is_some_and(|records| {
            !records.is_empty()
                && records
                    .iter()
                    .all(|r| r.get("eventSource").and_then(Value::as_str) == Some("aws:sqs"))
        });
        if !is_batch {
            return Payload::One(Box::new(Message::parse(value)));
        }
        match serde_json::from_value::<aws_lambda_events::event::sqs::SqsEvent>(value) {
            Ok(batch) => Payload::Batch(
                batch
                    .records
                    .into_iter()
                    .map(|m| Queued {
                        attempt: m.attributes.get("ApproximateReceiveCount").and_then(|n| n.parse().ok()),
                        message: Message::parse_text(m.body.as_deref().unwrap_or_default()),
                        message_id: m.message_id.unwrap_or_default(),
                    })
                    .collect(),
            ),
            Err(e) => Payload::One(Box::new(Err(MessageError::new(None, Problem::Envelope(e))))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:42b5e3bd0b6a7e2a6f1f4ab6b3e6c0c5d2b4a1f0e9d8c7b6a5f4e3d2c1b0a998";

    fn ecr(source: &str, detail_type: &str) -> Value {
        serde_json::json!({
            "version": "0", "id": "e1", "detail-type": detail_type, "source": source,
            "account": "123456789012", "time": "2026-11-23T12:00:00Z", "region": "eu-central-1",
            "resources": [], "detail": {
                "result": "SUCCESS", "repository-name": "team/app", "image-digest": DIGEST,
                "action-type": "PUSH", "image-tag": "v1"
            }
        })
    }

    #[test]
    fn ecr_events_are_image_actions_and_others_are_ignored_by_kind() {
        let Ok(Message::ImageAction(a)) = Message::parse(ecr("aws.ecr", "ECR Image Action")) else {
            panic!("not an image action")
        };
        assert_eq!(a.account.as_ref().map(AccountId::as_str), Some("123456789012"));
        assert_eq!(a.detail.repository_name, "team/app");
        assert!(matches!(
            Message::parse(ecr("aws.ecr", "ECR Image Scan")),
            Ok(Message::Ignored {
                reason: Ignored::OtherDetailType { .. },
                ..
            })
        ));
        assert!(matches!(
            Message::parse(ecr("aws.s3", "Object Created")),
            Ok(Message::Ignored {
                reason: Ignored::OtherSource { .. },
                ..
            })
        ));
        // What an earlier version enqueued: not ECR's, not a request of ours.
        assert!(matches!(
            Message::parse(ecr("ecr-remediator", "ECR Remediation Request")),
            Ok(Message::Ignored { .. })
        ));
    }

    #[test]
    fn malformed_inputs_name_the_problem_and_keep_the_event_id() {
        let err = Message::parse_text("{").unwrap_err();
        assert!(err.to_string().contains("not JSON"), "{err}");
        let mut bad = ecr("aws.ecr", "ECR Image Action");
        bad["account"] = "12".into();
        let err = Message::parse(bad).unwrap_err();
        assert_eq!(err.event_id.as_deref(), Some("e1"));
        assert!(err.to_string().contains("account"), "{err}");
        let mut bad = ecr("aws.ecr", "ECR Image Action");
        bad["detail"] = serde_json::json!({"result": "SUCCESS"});
        assert!(Message::parse(bad).unwrap_err().to_string().contains("detail"));
    }

    #[test]
    fn lambda_payloads_are_batches_only_when_every_record_is_from_sqs() {
        let record = |body: &str| {
            serde_json::json!({"messageId": "m1", "eventSource": "aws:sqs", "body": body,
                "attributes": {"ApproximateReceiveCount": "3"}, "messageAttributes": {}})
        };
        let batch = serde_json::json!({"Records": [record("{\"ecr-remediator\":\"sweep\"}"), record("{")]});
        let Payload::Batch(messages) = Payload::parse(batch) else {
            panic!("not a batch")
        };
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0].attempt, Some(3));
        assert!(matches!(messages[0].message, Ok(Message::Request(Request::SweepAll))));
        assert!(messages[1].message.is_err());
        let s3 = serde_json::json!({"Records": [{"eventSource": "aws:s3"}]});
        assert!(matches!(Payload::parse(s3), Payload::One(m) if m.is_err()));
        let event = Payload::parse(ecr("aws.ecr", "ECR Image Action"));
        assert!(matches!(event, Payload::One(m) if matches!(*m, Ok(Message::ImageAction(_)))));
    }
}
