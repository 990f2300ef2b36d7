//! Waiting for the cloud: exponential backoff with full jitter under a deadline.
//!
//! Every wait in jaam (a resource reaching a state, a lock being released, a
//! retry after a transient failure) goes through [`poll`], never a fixed sleep.
//! Real AWS takes ~30 s to start an instance and moto answers at once; one
//! helper that backs off from a small first delay serves both.

use std::future::Future;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

/// How to back off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay (before jitter).
    pub initial: Duration,
    /// The largest delay (before jitter).
    pub max: Duration,
    /// Give up once this much time has passed since the first attempt.
    pub deadline: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(50),
            max: Duration::from_secs(10),
            deadline: Duration::from_secs(600),
        }
    }
}

impl Backoff {
    /// The delay before attempt `attempt` (from 0): `initial * 2^attempt`, capped at
    /// `max`, then a uniformly random fraction of it between a half and the whole
    /// ("equal jitter": spreads retries without ever polling in a tight loop).
    pub fn delay(&self, attempt: u32) -> Duration {
        let base = self
            .initial
            .saturating_mul(2u32.saturating_pow(attempt.min(30)))
            .min(self.max);
        let half = base / 2;
        let jitter = rand::rng().random_range(0..=half.as_micros().max(1) as u64);
        half + Duration::from_micros(jitter)
    }
}

/// Why a wait ended without success.
#[derive(Debug, thiserror::Error)]
pub enum Error<E> {
    /// The deadline passed before the condition held.
    #[error("gave up after {waited:?} ({attempts} attempts)")]
    Timeout {
        /// How long it waited.
        waited: Duration,
        /// How many times it checked.
        attempts: u32,
    },
    /// The check itself failed.
    #[error("check failed")]
    Failed(#[source] E),
}

/// Calls `check` until it answers `Some`, backing off between attempts.
///
/// # Errors
/// [`Error::Timeout`] when the deadline passes first; [`Error::Failed`] as soon as
/// `check` fails.
///
/// # Cancellation
/// Dropping the future stops the wait between attempts.
pub async fn poll<T, E, F, Fut>(backoff: Backoff, mut check: F) -> Result<T, Error<E>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, E>>,
{
    let started = Instant::now();
    let mut attempt = 0;
    loop {
        if let Some(value) = check().await.map_err(Error::Failed)? {
            return Ok(value);
        }
        let delay = backoff.delay(attempt);
        attempt += 1;
        let waited = started.elapsed();
        if waited + delay > backoff.deadline {
            return Err(Error::Timeout {
                waited,
                attempts: attempt,
            });
        }
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn poll_should_retry_until_ready_then_return() {
        let mut calls = 0;
        let backoff = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            deadline: Duration::from_secs(60),
        };
        let value = poll(backoff, || {
            calls += 1;
            let ready = calls >= 4;
            async move { Ok::<_, ()>(ready.then_some(calls)) }
        })
        .await
        .unwrap();
        assert_eq!(value, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn poll_should_give_up_at_the_deadline() {
        let backoff = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            deadline: Duration::from_secs(5),
        };
        let started = Instant::now();
        let error = poll(backoff, || async { Ok::<Option<()>, ()>(None) })
            .await
            .unwrap_err();
        assert!(matches!(error, Error::Timeout { .. }));
        assert!(started.elapsed() <= Duration::from_secs(5));
    }

    #[test]
    fn delay_should_grow_and_stay_under_max() {
        let backoff = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
            deadline: Duration::from_secs(60),
        };
        assert!(backoff.delay(0) <= Duration::from_millis(100));
        assert!(backoff.delay(0) >= Duration::from_millis(50));
        assert!(backoff.delay(20) <= Duration::from_secs(2));
        assert!(backoff.delay(20) >= Duration::from_secs(1));
    }
}
