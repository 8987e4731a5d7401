//! Per-connection rate limiting (governor's GCRA) and the abuse rule that
//! closes a connection over its limit in each of 10 consecutive seconds.
//!
//! The limiter reads tokio's clock, so tests drive refill with paused time.

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use std::num::NonZeroU32;
use tokio::time::{Duration, Instant};

/// A clock that follows tokio's (pausable) time.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    type Instant = std::time::Instant;

    fn now(&self) -> Self::Instant {
        Instant::now().into_std()
    }
}

/// How many consecutive seconds over the limit close the connection (4008).
pub const ABUSE_SECONDS: u64 = 10;

/// What the session should do with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Process it.
    Allow,
    /// Drop it; answer with `rate_limited` when `notify` is true (always for
    /// requests with an `id`, at most once a second otherwise).
    Drop {
        /// Whether an id-less drop should be reported now.
        notify_unidentified: bool,
    },
    /// Drop it and close the connection with 4008.
    Abuse,
}

/// One connection's limiter.
#[derive(Debug)]
pub struct Limiter {
    gcra: RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<std::time::Instant>>,
    start: Instant,
    /// The last whole second (since `start`) with a dropped message.
    last_violation: Option<u64>,
    /// Consecutive seconds with drops, ending at `last_violation`.
    streak: u64,
    /// The second in which an id-less drop was last reported.
    last_report: Option<u64>,
}

impl Limiter {
    /// `per_sec` sustained, `burst` at once.
    pub fn new(per_sec: u32, burst: u32) -> Self {
        let per_sec = NonZeroU32::new(per_sec).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        Self {
            gcra: RateLimiter::direct_with_clock(
                Quota::per_second(per_sec).allow_burst(burst),
                TokioClock,
            ),
            start: Instant::now(),
            last_violation: None,
            streak: 0,
            last_report: None,
        }
    }

    /// Accounts for one incoming message.
    pub fn check(&mut self) -> Verdict {
        if self.gcra.check().is_ok() {
            return Verdict::Allow;
        }
        let second = Instant::now()
            .saturating_duration_since(self.start)
            .as_secs();
        match self.last_violation {
            Some(prev) if prev == second => {}
            Some(prev) if prev + 1 == second => self.streak += 1,
            _ => self.streak = 1,
        }
        self.last_violation = Some(second);
        if self.streak >= ABUSE_SECONDS {
            return Verdict::Abuse;
        }
        let notify = self.last_report != Some(second);
        if notify {
            self.last_report = Some(second);
        }
        Verdict::Drop {
            notify_unidentified: notify,
        }
    }
}

/// One second, for tests.
pub const SECOND: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn burst_then_refill() {
        let mut l = Limiter::new(10, 5);
        for _ in 0..5 {
            assert_eq!(l.check(), Verdict::Allow);
        }
        assert_eq!(
            l.check(),
            Verdict::Drop {
                notify_unidentified: true
            }
        );
        assert_eq!(
            l.check(),
            Verdict::Drop {
                notify_unidentified: false
            }
        );
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(l.check(), Verdict::Allow);
    }

    #[tokio::test(start_paused = true)]
    async fn ten_consecutive_seconds_is_abuse() {
        let mut l = Limiter::new(1, 1);
        for s in 0..ABUSE_SECONDS {
            // The first message of a second may pass; flood the rest.
            let mut verdicts = Vec::new();
            for _ in 0..20 {
                verdicts.push(l.check());
            }
            if s + 1 < ABUSE_SECONDS {
                assert!(!verdicts.contains(&Verdict::Abuse), "second {s}");
            } else {
                assert!(verdicts.contains(&Verdict::Abuse), "second {s}");
            }
            tokio::time::advance(SECOND).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_second_resets_the_streak() {
        let mut l = Limiter::new(1, 1);
        for s in 0..(ABUSE_SECONDS * 2) {
            if s % 5 != 4 {
                for _ in 0..20 {
                    assert_ne!(l.check(), Verdict::Abuse);
                }
            }
            tokio::time::advance(SECOND).await;
        }
    }
}
