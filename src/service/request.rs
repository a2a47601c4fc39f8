//! The service's own requests, on the wire: objects keyed by
//! [`REQUEST_KEY`] (`{"ecr-remediator": "sweep"}`, `"remediate"`,
//! `"cleanup"`), a format of their own, never ECR events carrying fields ECR
//! does not send. A sweep enqueues them; [`crate::service::message`] reads them.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::engine::audit::Trigger;
use crate::engine::{Job, Purpose};
use crate::oci::digest::Digest;
use crate::oci::names::{AccountId, ImageTag, RepositoryName};

/// The key that marks the service's own requests: `{"ecr-remediator": "sweep"}`.
pub const REQUEST_KEY: &str = "ecr-remediator";

/// A request of the service's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// The schedule's sweep: every account this deployment covers.
    SweepAll,
    /// One account's sweep (`None`: the deployment's own), as a hub's
    /// schedule fans it out on the queue.
    SweepAccount(Option<AccountId>),
    /// One image or leftover a sweep found, to handle as the per-push path does.
    Image(ImageRequest),
}

/// What a sweep asks the per-push path to do with one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRequest {
    /// The request's id (it becomes the record's `event_id`).
    pub id: Option<String>,
    /// The account (`None`: the deployment's own).
    pub account: Option<AccountId>,
    /// The repository.
    pub repository: RepositoryName,
    /// The image (index) or leftover.
    pub digest: Digest,
    /// What to do.
    pub work: Work,
    /// Set on the follow-up a handling scheduled for itself (its deferred
    /// deletions): the record's trigger is `follow_up`.
    pub follow_up: bool,
    /// On a follow-up: when the tag arrived, as the first handling knew it
    /// (ms since the epoch), so the grace period is not restarted.
    pub tag_arrived_ms: Option<i64>,
}

/// The work of an [`ImageRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    /// Remediate this tagged index.
    Remediate {
        /// The tag.
        tag: ImageTag,
    },
    /// Clean this leftover up, if it was pushed at least this long ago.
    Cleanup {
        /// The minimum age, in seconds (never below
        /// [`crate::decide::cleanup::DEFAULT_MIN_AGE_S`] once handled).
        min_age_s: u64,
    },
}

/// The service's requests on the wire.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "ecr-remediator", rename_all = "kebab-case", deny_unknown_fields)]
enum Wire {
    Sweep {
        // Absent: every account; `null`: the deployment's own.
        #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
        account: Option<Option<AccountId>>,
    },
    Remediate {
        #[serde(default)]
        id: Option<String>,
        #[serde(default)]
        account: Option<AccountId>,
        repository: RepositoryName,
        digest: Digest,
        tag: ImageTag,
        #[serde(default, rename = "follow-up", skip_serializing_if = "std::ops::Not::not")]
        follow_up: bool,
        #[serde(default, rename = "tag-arrived-ms", skip_serializing_if = "Option::is_none")]
        tag_arrived_ms: Option<i64>,
    },
    Cleanup {
        #[serde(default)]
        id: Option<String>,
        #[serde(default)]
        account: Option<AccountId>,
        repository: RepositoryName,
        digest: Digest,
        #[serde(rename = "min-age-s")]
        min_age_s: u64,
        #[serde(default, rename = "follow-up", skip_serializing_if = "std::ops::Not::not")]
        follow_up: bool,
    },
}

/// A field that is present (even as `null`) is `Some`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

impl Request {
    /// Reads a request (an object keyed by [`REQUEST_KEY`]).
    pub(crate) fn from_value(value: Value) -> Result<Request, serde_json::Error> {
        let wire: Wire = serde_json::from_value(value)?;
        Ok(match wire {
            Wire::Sweep { account: None } => Request::SweepAll,
            Wire::Sweep { account: Some(a) } => Request::SweepAccount(a),
            Wire::Remediate {
                id,
                account,
                repository,
                digest,
                tag,
                follow_up,
                tag_arrived_ms,
            } => Request::Image(ImageRequest {
                id,
                account,
                repository,
                digest,
                work: Work::Remediate { tag },
                follow_up,
                tag_arrived_ms,
            }),
            Wire::Cleanup {
                id,
                account,
                repository,
                digest,
                min_age_s,
                follow_up,
            } => Request::Image(ImageRequest {
                id,
                account,
                repository,
                digest,
                work: Work::Cleanup { min_age_s },
                follow_up,
                tag_arrived_ms: None,
            }),
        })
    }

    /// The request a sweep enqueues for `job`: a remediation for a tagged
    /// index, a cleanup for a leftover. Retiring kept indexes is never
    /// requested through a queue (whoever may send there must not be able to
    /// ask for it): such a job travels as a cleanup, whose planner keeps
    /// every tagged index.
    pub fn for_job(job: &Job) -> Request {
        let hex = job.digest.to_string();
        let short = hex.get(7..19).unwrap_or(&hex).to_owned();
        let work = match (job.purpose, &job.tag) {
            (Purpose::Remediate, Some(tag)) => Work::Remediate { tag: tag.clone() },
            (Purpose::Cleanup { min_age_s } | Purpose::Retire { min_age_s }, _) => Work::Cleanup { min_age_s },
            // Never through a queue either: a cleanup keeps every tagged index.
            (Purpose::Undo, _) => Work::Cleanup {
                min_age_s: crate::decide::cleanup::DEFAULT_MIN_AGE_S,
            },
            // A remediation needs its tag; without one there is nothing the
            // per-push path would do but leave it, which a cleanup does too.
            (Purpose::Remediate, None) => Work::Cleanup {
                min_age_s: crate::decide::cleanup::DEFAULT_MIN_AGE_S,
            },
        };
        // Unique per account, repository, image and sweep run: a request id
        // is the record's event id, and the reconciler claims only records
        // of the same event (see `docs/audit.md`, "What identifies a delivery").
        let scope = format!(
            "{}/{}/{}/{}",
            job.account.as_ref().map_or("", AccountId::as_str),
            job.repository,
            job.digest,
            crate::time::now_ms()
        );
        let unique = Digest::sha256_of(scope.as_bytes());
        let unique = &unique.hex()[..12];
        let id = match &work {
            Work::Remediate { tag } => format!("sweep-{short}-{tag}-{unique}"),
            Work::Cleanup { .. } => format!("sweep-{short}-cleanup-{unique}"),
        };
        Request::Image(ImageRequest {
            id: Some(id),
            account: job.account.clone(),
            repository: job.repository.clone(),
            digest: job.digest.clone(),
            work,
            follow_up: false,
            tag_arrived_ms: None,
        })
    }

    /// The follow-up `job` schedules for itself when its deletions wait for
    /// the grace period: the same work again (a remediation finds its writes
    /// done and plans the deletions; a cleanup plans them again), trigger
    /// `follow_up`. Its id is its own, and names its lineage: the push's
    /// event id with `/follow-up-N` (the Nth follow-up of that push), so its
    /// records are never taken for the push's, nor the push's for its.
    pub fn follow_up(job: &Job) -> Request {
        let Request::Image(mut request) = Request::for_job(job) else {
            return Request::for_job(job);
        };
        request.follow_up = true;
        if let Some(event_id) = &job.event_id {
            request.id = Some(follow_up_id(event_id));
        }
        if matches!(request.work, Work::Remediate { .. }) {
            request.tag_arrived_ms = job.tag_arrived_ms;
        }
        Request::Image(request)
    }

    /// The message body.
    pub fn body(&self) -> String {
        let wire = match self.clone() {
            Request::SweepAll => Wire::Sweep { account: None },
            Request::SweepAccount(a) => Wire::Sweep { account: Some(a) },
            Request::Image(ImageRequest {
                id,
                account,
                repository,
                digest,
                work,
                follow_up,
                tag_arrived_ms,
            }) => match work {
                Work::Remediate { tag } => Wire::Remediate {
                    id,
                    account,
                    repository,
                    digest,
                    tag,
                    follow_up,
                    tag_arrived_ms,
                },
                Work::Cleanup { min_age_s } => Wire::Cleanup {
                    id,
                    account,
                    repository,
                    digest,
                    min_age_s,
                    follow_up,
                },
            },
        };
        serde_json::to_string(&wire).unwrap_or_default()
    }
}

/// The id of the next follow-up of the handling whose event id is
/// `event_id`: `<push event id>/follow-up-N`, N counting from 1.
fn follow_up_id(event_id: &str) -> String {
    let (root, n) = match event_id.rsplit_once("/follow-up-") {
        Some((root, n)) => match n.parse::<u32>() {
            Ok(n) => (root, n.saturating_add(1)),
            Err(_) => (event_id, 1),
        },
        None => (event_id, 1),
    };
    format!("{root}/follow-up-{n}")
}

impl ImageRequest {
    /// The job this request asks for (trigger `sweep`). A cleanup is never
    /// younger than the default minimum age: whoever may send to the queue
    /// (in a hub, any principal of the organisation) must not be able to ask
    /// for the deletion of a manifest a push still in progress may need.
    /// `sweep --min-age` runs in-process, not through here.
    pub fn job(&self) -> Job {
        let (purpose, tag) = match &self.work {
            Work::Remediate { tag } => (Purpose::Remediate, Some(tag.clone())),
            Work::Cleanup { min_age_s } => (
                Purpose::Cleanup {
                    min_age_s: (*min_age_s).max(crate::decide::cleanup::DEFAULT_MIN_AGE_S),
                },
                None,
            ),
        };
        Job {
            purpose,
            trigger: if self.follow_up {
                Trigger::FollowUp
            } else {
                Trigger::Sweep
            },
            event_id: self.id.clone(),
            account: self.account.clone(),
            region: None,
            replicated_from: None,
            repository: self.repository.clone(),
            digest: self.digest.clone(),
            tag,
            // Only a follow-up carries when its tag arrived (never later than
            // now); any other request is a first handling, which starts it.
            tag_arrived_ms: self
                .tag_arrived_ms
                .filter(|_| self.follow_up)
                .map(|t| t.min(crate::time::now_ms())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::message::Message;

    const DIGEST: &str = "sha256:42b5e3bd0b6a7e2a6f1f4ab6b3e6c0c5d2b4a1f0e9d8c7b6a5f4e3d2c1b0a998";

    #[test]
    fn sweeps_parse_by_account_and_nothing_else_is_one() {
        let sweep = |v: Value| match Message::parse(v) {
            Ok(Message::Request(r)) => Ok(r),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.to_string()),
        };
        assert_eq!(
            sweep(serde_json::json!({"ecr-remediator": "sweep"})),
            Ok(Request::SweepAll)
        );
        assert_eq!(
            sweep(serde_json::json!({"ecr-remediator": "sweep", "account": null})),
            Ok(Request::SweepAccount(None))
        );
        let member = AccountId::parse("222222222222").unwrap();
        assert_eq!(
            sweep(serde_json::json!({"ecr-remediator": "sweep", "account": "222222222222"})),
            Ok(Request::SweepAccount(Some(member)))
        );
        for bad in [
            serde_json::json!({"ecr-remediator": "sweep", "account": "12"}),
            serde_json::json!({"ecr-remediator": "sweep", "account": 222222222222_u64}),
            serde_json::json!({"ecr-remediator": "sweeps"}),
            serde_json::json!({"ecr-remediator": "sweep", "acount": null}),
        ] {
            let err = sweep(bad.clone()).unwrap_err();
            assert!(err.contains("ecr-remediator request"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_sweeps_requests_round_trip_to_its_jobs() {
        let job = |purpose, tag: Option<&str>| Job {
            purpose,
            trigger: Trigger::Sweep,
            event_id: None,
            account: Some(AccountId::parse("222222222222").unwrap()),
            region: None,
            replicated_from: None,
            repository: RepositoryName::parse("team/app").unwrap(),
            digest: Digest::parse(DIGEST).unwrap(),
            tag: tag.map(|t| ImageTag::parse(t).unwrap()),
            tag_arrived_ms: None,
        };
        let handled = |j: &Job| {
            let Ok(Message::Request(Request::Image(r))) = Message::parse_text(&Request::for_job(j).body()) else {
                panic!("not an image request")
            };
            r.job()
        };
        for original in [
            job(Purpose::Remediate, Some("v7")),
            job(Purpose::Cleanup { min_age_s: 3600 }, None),
            job(Purpose::Cleanup { min_age_s: 86_400 }, None),
        ] {
            let got = handled(&original);
            assert!(got.event_id.as_deref().is_some_and(|id| id.starts_with("sweep-")));
            assert_eq!(Job { event_id: None, ..got }, original);
        }
        // Younger than the default: the default. Retiring: a cleanup.
        let floor = crate::decide::cleanup::DEFAULT_MIN_AGE_S;
        assert_eq!(
            handled(&job(Purpose::Cleanup { min_age_s: 0 }, None)).purpose,
            Purpose::Cleanup { min_age_s: floor }
        );
        assert_eq!(
            handled(&job(Purpose::Retire { min_age_s: 7200 }, None)).purpose,
            Purpose::Cleanup { min_age_s: 7200 }
        );
        // Hand-written requests are checked like ECR's fields.
        let err = Message::parse_text(
            r#"{"ecr-remediator":"cleanup","repository":"Team","digest":"sha256:x","min-age-s":0}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("repository"), "{err}");
    }
}
