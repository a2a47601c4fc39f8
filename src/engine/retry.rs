//! How long to wait before trying a failed call again.
//!
//! The service does its own retrying instead of the AWS SDK's standard mode:
//! the SDK's retry quota is a token bucket that empties under sustained
//! throttling and then stops retrying at all ("not enough retry quota"),
//! which turned a slow registry into dead-lettered events. Here every
//! retryable failure (throttling, 5xx, transport) waits with capped
//! exponential backoff and full jitter, up to a number of attempts: sustained
//! throttling slows the service down, it does not make it give up. Pure: the
//! caller sleeps.

use std::time::Duration;

/// Attempts and backoff for retryable failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    /// The first backoff's upper bound.
    pub base: Duration,
    /// The largest upper bound a backoff may have.
    pub cap: Duration,
}

/// Default attempts per call.
pub const DEFAULT_ATTEMPTS: u32 = 10;

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: DEFAULT_ATTEMPTS,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// A policy with `max_attempts` attempts and the default backoff.
    pub fn with_attempts(max_attempts: u32) -> Self {
        RetryPolicy {
            max_attempts: max_attempts.max(1),
            ..Self::default()
        }
    }

    /// The wait after failed attempt number `attempt` (1-based), or `None`
    /// when no attempt is left. `unit` in `[0, 1)` is the jitter draw.
    pub fn backoff(&self, attempt: u32, unit: f64) -> Option<Duration> {
        if attempt >= self.max_attempts {
            return None;
        }
        let exp = self
            .base
            .saturating_mul(1u32.checked_shl(attempt.saturating_sub(1).min(20)).unwrap_or(u32::MAX));
        let bound = exp.min(self.cap);
        // Full jitter, but never less than a tenth of the bound, so a retry
        // never hammers the service back-to-back.
        let unit = if unit.is_finite() { unit.clamp(0.0, 1.0) } else { 0.5 };
        Some(bound.mul_f64(0.1 + 0.9 * unit))
    }
}

/// A small jitter source (xorshift), seeded from the clock: no dependency,
/// and different processes draw differently.
#[derive(Debug, Clone)]
pub struct Jitter(u64);

impl Jitter {
    /// Seeded from the current time and a per-process address.
    pub fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let seed = (nanos as u64) ^ u64::from(std::process::id()).rotate_left(32) ^ 0x9E37_79B9_7F4A_7C15;
        Jitter(seed | 1)
    }

    /// A draw in `[0, 1)`.
    pub fn next_unit(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl Default for Jitter {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs `call` until it succeeds, fails for good, or runs out of attempts
/// (or of time before `deadline`), waiting with backoff in between.
pub async fn retrying<T, F, Fut>(
    policy: &RetryPolicy,
    deadline: Option<tokio::time::Instant>,
    mut call: F,
) -> Result<T, crate::engine::registry::RegistryError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, crate::engine::registry::RegistryError>>,
{
    let mut jitter = Jitter::new();
    let mut attempt = 1;
    loop {
        match call().await {
            Err(e) if e.is_retryable() => {
                wait_before_retry(policy, deadline, attempt, &mut jitter, &e).await?;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Waits before attempt `attempt + 1`, or gives `e` back when no attempt or
/// time is left.
pub async fn wait_before_retry(
    policy: &RetryPolicy,
    deadline: Option<tokio::time::Instant>,
    attempt: u32,
    jitter: &mut Jitter,
    e: &crate::engine::registry::RegistryError,
) -> Result<(), crate::engine::registry::RegistryError> {
    let Some(wait) = policy.backoff(attempt, jitter.next_unit()) else {
        return Err(e.clone());
    };
    if deadline.is_some_and(|d| tokio::time::Instant::now() + wait >= d) {
        return Err(e.clone());
    }
    tracing::debug!(error = %e, attempt, wait_ms = wait.as_millis() as u64, "retryable failure; waiting");
    tokio::time::sleep(wait).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_and_stops_after_the_last_attempt() {
        let p = RetryPolicy::with_attempts(10);
        assert_eq!(p.backoff(1, 1.0), Some(Duration::from_millis(100)));
        assert_eq!(p.backoff(2, 1.0), Some(Duration::from_millis(200)));
        assert_eq!(p.backoff(9, 1.0), Some(Duration::from_secs(5)));
        assert_eq!(p.backoff(10, 1.0), None);
        assert_eq!(p.backoff(1, 0.0), Some(Duration::from_millis(10)));
        assert_eq!(RetryPolicy::with_attempts(0).max_attempts, 1);
        assert_eq!(RetryPolicy::with_attempts(1).backoff(1, 0.5), None);
        // Huge attempt numbers saturate rather than overflow.
        assert_eq!(
            RetryPolicy::with_attempts(u32::MAX).backoff(1000, 1.0),
            Some(Duration::from_secs(5))
        );
    }

    #[test]
    fn jitter_draws_stay_in_range_and_vary() {
        let mut j = Jitter::new();
        let draws: Vec<f64> = (0..1000).map(|_| j.next_unit()).collect();
        assert!(draws.iter().all(|u| (0.0..1.0).contains(u)));
        let mean = draws.iter().sum::<f64>() / 1000.0;
        assert!((0.4..0.6).contains(&mean), "{mean}");
    }
}
