//! The per-IP limit on collect (GCRA via governor), with the numbers for the
//! `X-RateLimit-Limit/Remaining/Reset` headers and `Retry-After`.

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

type Limiter =
    RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, DefaultClock, StateInformationMiddleware>;

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDecision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Unix seconds when the allowance is full again.
    pub reset_unix: u64,
    /// Seconds to wait before retrying (when refused).
    pub retry_after_secs: u64,
}

/// Requests per minute per IP.
#[derive(Clone)]
pub struct CollectLimiter {
    limiter: Arc<Limiter>,
    per_minute: u32,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl CollectLimiter {
    /// `None` when `per_minute` is 0 (limit off).
    pub fn new(per_minute: u32) -> Option<Self> {
        let n = NonZeroU32::new(per_minute)?;
        let limiter = RateLimiter::dashmap(Quota::per_minute(n))
            .with_middleware::<StateInformationMiddleware>();
        Some(Self {
            limiter: Arc::new(limiter),
            per_minute,
        })
    }

    pub fn check(&self, ip: IpAddr) -> RateDecision {
        let secs_per_token = 60.0 / self.per_minute as f64;
        match self.limiter.check_key(&ip) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                let refill = ((self.per_minute - remaining) as f64 * secs_per_token).ceil() as u64;
                RateDecision {
                    allowed: true,
                    limit: self.per_minute,
                    remaining,
                    reset_unix: unix_now() + refill,
                    retry_after_secs: 0,
                }
            }
            Err(not_until) => {
                let wait = not_until
                    .wait_time_from(DefaultClock::default().now())
                    .as_secs_f64()
                    .ceil() as u64;
                RateDecision {
                    allowed: false,
                    limit: self.per_minute,
                    remaining: 0,
                    reset_unix: unix_now() + (60.0_f64).ceil() as u64,
                    retry_after_secs: wait.max(1),
                }
            }
        }
    }

    /// Drops state for IPs that have been quiet long enough to be back at full allowance.
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_is_enforced_per_ip() {
        assert!(CollectLimiter::new(0).is_none(), "0 turns the limit off");
        let l = CollectLimiter::new(3).unwrap_or_else(|| unreachable!());
        let a: IpAddr = [1, 1, 1, 1].into();
        let b: IpAddr = [2, 2, 2, 2].into();
        let first = l.check(a);
        assert!(first.allowed);
        assert_eq!((first.limit, first.remaining), (3, 2));
        assert!(l.check(a).allowed);
        assert!(l.check(a).allowed);
        let refused = l.check(a);
        assert!(!refused.allowed);
        assert!(refused.retry_after_secs >= 1);
        assert!(l.check(b).allowed, "another IP has its own allowance");
    }
}
