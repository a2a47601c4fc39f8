//! The registries of an organisation's member accounts, for the hub
//! deployment: each reached through the member role `infra/member.yaml`
//! creates (`sts:AssumeRole` with the external id). Each has its own
//! credentials, which the SDK refreshes before they expire (one
//! `AssumeRole` per account per credential lifetime), and its own
//! `PutImage` token bucket: ECR's quota is per account and region, so one
//! busy account never slows another.
//!
//! Memory stays flat in the number of accounts: every account's client uses
//! the process's one HTTP client (connection pool, TLS configuration), and
//! at most [`MEMBER_CACHE_SIZE`] accounts' registries are kept, least
//! recently used first out. An evicted account costs one `AssumeRole` when
//! it comes back, and its token bucket starts full again.

use std::future::Future;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::Arc;

use aws_config::sts::AssumeRoleProvider;
use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, future};
use lru::LruCache;
use tokio::sync::Mutex;

use crate::aws::ecr::EcrRegistry;
use crate::aws::{ecr_client, partition, with_shared_http_client};
use crate::engine::registry::{AccountRegistries, RegistryError};
use crate::oci::names::AccountId;

/// How many member accounts' registries (credentials, token bucket,
/// repository-tag cache: a few KB each) a process keeps at most.
pub const MEMBER_CACHE_SIZE: usize = 256;

/// The member role's provider, handing out first the credentials the hub
/// obtained when it checked the role, so that first use costs one
/// `AssumeRole`, not two; later refreshes go to the role.
#[derive(Debug)]
struct Primed {
    first: std::sync::Mutex<Option<Credentials>>,
    role: AssumeRoleProvider,
}

impl ProvideCredentials for Primed {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        let first = self.first.lock().ok().and_then(|mut f| f.take());
        match first {
            Some(c) => future::ProvideCredentials::ready(Ok(c)),
            None => self.role.provide_credentials(),
        }
    }
}

/// How the hub reaches member accounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberAccess {
    /// The role's name, the same in every member account.
    pub role_name: String,
    /// The `sts:ExternalId` the role's trust policy requires.
    pub external_id: String,
}

/// Member registries, created on first use, the most recently used kept.
pub struct MemberRegistries {
    sdk: aws_config::SdkConfig,
    access: MemberAccess,
    put_tps: f64,
    put_burst: u32,
    cache: Mutex<LruCache<AccountId, Arc<EcrRegistry>>>,
}

impl std::fmt::Debug for MemberRegistries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberRegistries")
            .field("role_name", &self.access.role_name)
            .field("external_id", &"<redacted>")
            .field("put_tps", &self.put_tps)
            .finish_non_exhaustive()
    }
}

impl MemberRegistries {
    /// Member registries from the hub's own configuration, paced like the
    /// hub's, at most [`MEMBER_CACHE_SIZE`] kept.
    pub fn new(sdk: &aws_config::SdkConfig, access: MemberAccess, put_tps: f64, put_burst: u32) -> Self {
        Self::with_capacity(sdk, access, put_tps, put_burst, MEMBER_CACHE_SIZE)
    }

    /// [`Self::new`] keeping at most `capacity` accounts' registries (at least one).
    pub fn with_capacity(
        sdk: &aws_config::SdkConfig,
        access: MemberAccess,
        put_tps: f64,
        put_burst: u32,
        capacity: usize,
    ) -> Self {
        MemberRegistries {
            sdk: with_shared_http_client(sdk),
            access,
            put_tps,
            put_burst,
            cache: Mutex::new(LruCache::new(NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN))),
        }
    }

    /// How many accounts' registries are kept now (never more than the capacity).
    pub async fn kept(&self) -> usize {
        self.cache.lock().await.len()
    }

    /// The member role's ARN in `account`.
    pub fn role_arn(&self, account: &AccountId) -> String {
        let region = self.sdk.region().map(|r| r.as_ref().to_owned());
        format!(
            "arn:{}:iam::{account}:role/{}",
            partition(region.as_deref()),
            self.access.role_name
        )
    }

    async fn create(&self, account: &AccountId) -> Result<EcrRegistry, RegistryError> {
        let role = self.role_arn(account);
        tracing::debug!(%account, role = %role, "creating the member account's registry");
        let provider = AssumeRoleProvider::builder(role.clone())
            .external_id(self.access.external_id.clone())
            .session_name("ecr-remediator")
            .configure(&self.sdk)
            .build()
            .await;
        // Assume once now, so a missing or untrusting role is this account's
        // clear failure rather than an opaque credentials error on every call;
        // the client's first call uses these credentials.
        let first = provider.provide_credentials().await.map_err(|e| {
            let message = format!("cannot assume {role}: {}", crate::decide::skip::chain(&e));
            if message.contains("AccessDenied") || message.contains("not authorized") {
                RegistryError::Service {
                    operation: "AssumeRole",
                    code: "AccessDenied".to_owned(),
                    message,
                }
            } else {
                RegistryError::Unavailable {
                    operation: "AssumeRole",
                    message,
                }
            }
        })?;
        let primed = Primed {
            first: std::sync::Mutex::new(Some(first)),
            role: provider,
        };
        // Its own identity cache: the one the hub's configuration shares holds
        // 64 providers at most and evicts at random, which with more member
        // accounts than that would assume their roles again and again.
        let sdk = self
            .sdk
            .to_builder()
            .identity_cache(aws_config::identity::IdentityCache::lazy().build())
            .credentials_provider(aws_credential_types::provider::SharedCredentialsProvider::new(primed));
        let sdk = sdk.build();
        let client = ecr_client(&sdk);
        Ok(EcrRegistry::new(client, self.put_tps, self.put_burst)
            .in_account(account)
            .with_workloads(&sdk))
    }
}

impl AccountRegistries<EcrRegistry> for MemberRegistries {
    fn registry_for<'a>(
        &'a self,
        account: &'a AccountId,
    ) -> Pin<Box<dyn Future<Output = Result<Arc<EcrRegistry>, RegistryError>> + Send + 'a>> {
        Box::pin(async move {
            if let Some(r) = self.cache.lock().await.get(account) {
                return Ok(Arc::clone(r));
            }
            // Not under the lock: one account's slow or failing role never
            // holds up another's. Of two concurrent creations, the first kept
            // wins; keeping one may evict the least recently used account
            // (a handling still using it keeps it alive until it ends).
            let created = Arc::new(self.create(account).await?);
            let mut cache = self.cache.lock().await;
            Ok(Arc::clone(cache.get_or_insert(account.clone(), || created)))
        })
    }
}
