//! A deployment's policy kept where it can change without a redeploy (an
//! SSM parameter holding the policy file's TOML), re-read at most once a
//! minute.
//!
//! Why Parameter Store: the policy travels with the stack (the template
//! names the parameter and grants reading it, and nothing else), changes
//! are versioned and in CloudTrail, and a new version applies within a
//! minute on every warm function, with no redeploy. (A template parameter
//! would need a redeploy; Lambda's 4 KB of environment would not hold a
//! team's rules.)
//!
//! Fails safe: the first load must succeed (the function does not start on
//! a placeholder); a later version that does not parse, or would delete
//! when the role cannot, is refused and the last good policy stays, with a
//! warning in the log each time it is read.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::policy::organization::OrganizationalUnits;
use crate::policy::{PolicyError, PolicySet};

/// How long a policy read is used before the parameter is read again.
pub const RELOAD_EVERY: Duration = Duration::from_secs(60);

/// The longest a handling waits on a re-read of the policy (well inside any
/// invocation's time): a store that does not answer by then leaves the last
/// good policy in force, and the record says it may be stale.
pub const REFRESH_WAIT: Duration = Duration::from_secs(2);

/// One version of the stored policy document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The TOML text.
    pub text: String,
    /// Its version (the parameter's).
    pub version: i64,
}

/// Where the policy document is stored.
pub trait PolicyStore: Send + Sync {
    /// The current version of the document; the error says why it could not be read.
    fn fetch(&self) -> Pin<Box<dyn Future<Output = Result<Stored, String>> + Send + '_>>;

    /// What it is, for messages (`SSM parameter /ecr-remediator/policy`).
    fn describe(&self) -> String;
}

/// Why the policy could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// The store could not be read.
    #[error("cannot read the policy from {store}: {message}")]
    Unreadable {
        /// The store.
        store: String,
        /// Why.
        message: String,
    },
    /// The document is not a valid policy here.
    #[error("the policy in {store} (version {version}) is refused: {error}")]
    Invalid {
        /// The store.
        store: String,
        /// Its version.
        version: i64,
        /// Why.
        error: PolicyError,
    },
}

struct Current {
    policies: Arc<PolicySet>,
    version: i64,
    read_at: Instant,
    /// Why the last re-read did not give the store's current policy, if it did not.
    stale: Option<String>,
}

/// A change every version read gets (the command line's overrides).
pub type Overlay = Arc<dyn Fn(&mut PolicySet) + Send + Sync>;

/// The policy, re-read from its store at most every [`RELOAD_EVERY`].
pub struct LivePolicy {
    store: Arc<dyn PolicyStore>,
    overlay: Option<Overlay>,
    units: OrganizationalUnits,
    deletion_allowed: bool,
    every: Duration,
    current: Mutex<Current>,
}

impl std::fmt::Debug for LivePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LivePolicy")
            .field("store", &self.store.describe())
            .finish()
    }
}

fn parse(
    stored: &Stored,
    store: &str,
    units: &OrganizationalUnits,
    deletion_allowed: bool,
    overlay: Option<&Overlay>,
) -> Result<PolicySet, LiveError> {
    PolicySet::from_toml(&stored.text)
        .and_then(|p| p.with_organizational_units(units))
        .map(|mut p| {
            if let Some(o) = overlay {
                o(&mut p);
            }
            p
        })
        .and_then(|p| p.within_deletion_permission(deletion_allowed))
        .map_err(|error| LiveError::Invalid {
            store: store.to_owned(),
            version: stored.version,
            error,
        })
}

impl LivePolicy {
    /// Loads the first version: it must be readable and valid. `overlay`
    /// changes every version read (the command line's overrides).
    pub async fn load(
        store: Arc<dyn PolicyStore>,
        units: OrganizationalUnits,
        deletion_allowed: bool,
        every: Duration,
        overlay: Option<Overlay>,
    ) -> Result<Self, LiveError> {
        let stored = store.fetch().await.map_err(|message| LiveError::Unreadable {
            store: store.describe(),
            message,
        })?;
        let policies = parse(&stored, &store.describe(), &units, deletion_allowed, overlay.as_ref())?;
        tracing::info!(store = %store.describe(), version = stored.version, "policy loaded");
        Ok(LivePolicy {
            store,
            overlay,
            units,
            deletion_allowed,
            every,
            current: Mutex::new(Current {
                policies: Arc::new(policies),
                version: stored.version,
                read_at: Instant::now(),
                stale: None,
            }),
        })
    }

    /// The policy to apply now: re-read when the last read is older than
    /// the reload interval; the last good one when the store cannot be read
    /// or holds a version that is refused.
    pub async fn current(&self) -> Arc<PolicySet> {
        let mut current = self.current.lock().await;
        if current.read_at.elapsed() < self.every {
            return current.policies.clone();
        }
        current.read_at = Instant::now();
        let fetched = match tokio::time::timeout(REFRESH_WAIT, self.store.fetch()).await {
            Ok(fetched) => fetched,
            Err(_) => Err(format!("no answer within {} s", REFRESH_WAIT.as_secs())),
        };
        current.stale = None;
        match fetched {
            Err(message) => {
                tracing::warn!(store = %self.store.describe(), %message, "cannot re-read the policy; the last one read stays");
                current.stale = Some(format!(
                    "{} could not be re-read ({message}); version {} applied",
                    self.store.describe(),
                    current.version
                ));
            }
            Ok(stored) if stored.version == current.version => {}
            Ok(stored) => match parse(
                &stored,
                &self.store.describe(),
                &self.units,
                self.deletion_allowed,
                self.overlay.as_ref(),
            ) {
                Ok(p) => {
                    tracing::info!(store = %self.store.describe(), version = stored.version, "policy reloaded");
                    current.policies = Arc::new(p);
                    current.version = stored.version;
                }
                Err(e) => {
                    tracing::error!(error = %e, version = current.version, "new policy refused; the last good one stays");
                    current.stale = Some(format!(
                        "version {} of {} is refused; version {} applied",
                        stored.version,
                        self.store.describe(),
                        current.version
                    ));
                }
            },
        }
        current.policies.clone()
    }

    /// Why the policy in force may not be the store's current one (its
    /// last re-read failed, timed out or was refused), if it may not.
    pub async fn stale(&self) -> Option<String> {
        self.current.lock().await.stale.clone()
    }

    /// The version in use.
    pub async fn version(&self) -> i64 {
        self.current.lock().await.version
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;

    use super::*;
    use crate::policy::Mode;

    struct Fake(StdMutex<Result<Stored, String>>);

    impl PolicyStore for Fake {
        fn fetch(&self) -> Pin<Box<dyn Future<Output = Result<Stored, String>> + Send + '_>> {
            let got = self.0.lock().unwrap().clone();
            Box::pin(async move { got })
        }
        fn describe(&self) -> String {
            "the fake".to_owned()
        }
    }

    fn set(store: &Fake, text: &str, version: i64) {
        *store.0.lock().unwrap() = Ok(Stored {
            text: text.to_owned(),
            version,
        });
    }

    #[tokio::test]
    async fn a_new_version_applies_an_invalid_one_is_refused_and_the_last_good_stays() {
        let store = Arc::new(Fake(StdMutex::new(Err("not yet".into()))));
        let e = LivePolicy::load(
            store.clone(),
            OrganizationalUnits::default(),
            false,
            Duration::ZERO,
            None,
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("not yet"), "{e}");
        set(&store, "[default]\nmode = \"tag\"\n", 1);
        let live = LivePolicy::load(
            store.clone(),
            OrganizationalUnits::default(),
            false,
            Duration::ZERO,
            None,
        )
        .await
        .unwrap();
        assert_eq!(live.current().await.default.mode, Mode::Tag);
        set(&store, "[default]\nmode = \"strip\"\n", 2);
        assert_eq!(live.current().await.default.mode, Mode::Strip);
        // Not TOML, then a policy that deletes where the role cannot: refused.
        set(&store, "[default\nmode = ", 3);
        assert_eq!(live.current().await.default.mode, Mode::Strip);
        set(&store, "[default]\nmode = \"promote\"\ndelete_orphans = true\n", 4);
        assert_eq!(live.current().await.default.mode, Mode::Strip);
        assert_eq!(live.version().await, 2);
        // The store down: the last good one stays.
        *store.0.lock().unwrap() = Err("throttled".into());
        assert_eq!(live.current().await.default.mode, Mode::Strip);
    }

    /// A store that never answers.
    struct Hanging;

    impl PolicyStore for Hanging {
        fn fetch(&self) -> Pin<Box<dyn Future<Output = Result<Stored, String>> + Send + '_>> {
            Box::pin(std::future::pending())
        }
        fn describe(&self) -> String {
            "the hanging store".to_owned()
        }
    }

    #[tokio::test]
    async fn a_store_that_hangs_delays_a_handling_by_the_bound_at_most_and_is_said_stale() {
        let store = Arc::new(Fake(StdMutex::new(Ok(Stored {
            text: "[default]\nmode = \"tag\"\n".into(),
            version: 1,
        }))));
        let mut live = LivePolicy::load(store, OrganizationalUnits::default(), false, Duration::ZERO, None)
            .await
            .unwrap();
        assert_eq!(live.stale().await, None);
        live.store = Arc::new(Hanging);
        let started = Instant::now();
        assert_eq!(live.current().await.default.mode, Mode::Tag, "the last good policy");
        assert!(
            started.elapsed() <= REFRESH_WAIT + Duration::from_millis(500),
            "{:?}",
            started.elapsed()
        );
        let why = live.stale().await.expect("said stale");
        assert!(
            why.contains("no answer within 2 s") && why.contains("version 1 applied"),
            "{why}"
        );
    }

    #[tokio::test]
    async fn within_the_interval_the_store_is_not_read_again() {
        let store = Arc::new(Fake(StdMutex::new(Ok(Stored {
            text: "[default]\nmode = \"tag\"\n".into(),
            version: 1,
        }))));
        let live = LivePolicy::load(store.clone(), OrganizationalUnits::default(), true, RELOAD_EVERY, None)
            .await
            .unwrap();
        set(&store, "[default]\nmode = \"strip\"\n", 2);
        assert_eq!(
            live.current().await.default.mode,
            Mode::Tag,
            "read again only after a minute"
        );
    }
}
