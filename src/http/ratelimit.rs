//! The per-refresh-token rate limit on exchanges: a token bucket per refresh
//! token id, in memory.
//!
//! Only exchanges whose refresh token verified are charged, so nobody can
//! drain the bucket of a token they do not hold (token ids are public: they
//! appear in lists). The map holds a bucket only for tokens exchanged
//! recently; full buckets are dropped when it grows, a few per exchange, so
//! that no exchange waits on a sweep of the whole map.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use parking_lot::Mutex;

use crate::TokenId;

/// How many buckets may pile up before full (idle) ones are swept.
const SWEEP_AT: usize = 4096;
/// Buckets one exchange looks at when sweeping: more than the one it may
/// add, so the map shrinks back under [`SWEEP_AT`] while it is swept.
const SWEEP_STEP: usize = 16;

/// A per-refresh-token limit on `GET /oauth/access-token`: `burst` exchanges
/// at once, refilled at `per_minute` a minute. `per_minute` is what the token
/// list reports as `rate_limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Exchanges a minute, sustained (at least 1).
    pub per_minute: u32,
    /// Exchanges allowed back to back (at least 1).
    pub burst: u32,
}

impl Default for RateLimit {
    /// 60 a minute, bursts of 10.
    fn default() -> Self {
        RateLimit {
            per_minute: 60,
            burst: 10,
        }
    }
}

/// One exchange in bucket units: the refill is `per_minute` units a
/// microsecond, so an exchange costs a minute's worth of microseconds.
/// Integer arithmetic keeps `Retry-After` exact.
const COST: u64 = 60_000_000;

struct Bucket {
    units: u64,
    at: Instant,
}

pub(crate) struct RateLimiter {
    limit: RateLimit,
    buckets: Mutex<Buckets>,
}

#[derive(Default)]
struct Buckets {
    map: HashMap<[u8; 16], Bucket>,
    /// Every key of `map` once, oldest looked at first: the sweep's turn.
    order: VecDeque<[u8; 16]>,
}

impl RateLimiter {
    pub(crate) fn new(limit: RateLimit) -> Self {
        RateLimiter {
            limit: RateLimit {
                per_minute: limit.per_minute.max(1),
                burst: limit.burst.max(1),
            },
            buckets: Mutex::new(Buckets::default()),
        }
    }

    /// The limit in force (zeros raised to one).
    pub(crate) fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Takes one exchange from the bucket of `id`, or says after how many
    /// seconds (at least 1) one will be available.
    pub(crate) fn take(&self, id: &TokenId) -> Result<(), u64> {
        self.take_at(id, Instant::now())
    }

    fn take_at(&self, id: &TokenId, now: Instant) -> Result<(), u64> {
        let capacity = u64::from(self.limit.burst) * COST;
        let rate = u64::from(self.limit.per_minute);
        let fill = |b: &Bucket| {
            let micros = now.saturating_duration_since(b.at).as_micros();
            let micros = u64::try_from(micros).unwrap_or(u64::MAX);
            b.units
                .saturating_add(micros.saturating_mul(rate))
                .min(capacity)
        };
        let mut guard = self.buckets.lock();
        let Buckets { map, order } = &mut *guard;
        if map.len() >= SWEEP_AT {
            for _ in 0..SWEEP_STEP.min(order.len()) {
                let Some(k) = order.pop_front() else { break };
                match map.get(&k) {
                    Some(b) if fill(b) < capacity => order.push_back(k),
                    _ => {
                        map.remove(&k);
                    }
                }
            }
        }
        let key = *id.as_bytes();
        let b = map.entry(key).or_insert_with(|| {
            order.push_back(key);
            Bucket {
                units: capacity,
                at: now,
            }
        });
        b.units = fill(b);
        b.at = now;
        if b.units >= COST {
            b.units -= COST;
            Ok(())
        } else {
            let micros = (COST - b.units).div_ceil(rate);
            Err(micros.div_ceil(1_000_000).max(1))
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.buckets.lock().map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_refill() {
        let rl = RateLimiter::new(RateLimit {
            per_minute: 60,
            burst: 2,
        });
        let id = TokenId::from_bytes([1; 16]);
        let t0 = Instant::now();
        assert_eq!(rl.take_at(&id, t0), Ok(()));
        assert_eq!(rl.take_at(&id, t0), Ok(()));
        assert_eq!(rl.take_at(&id, t0), Err(1));
        // Another token has its own bucket.
        assert_eq!(rl.take_at(&TokenId::from_bytes([2; 16]), t0), Ok(()));
        // One second refills one exchange at 60 a minute.
        assert_eq!(rl.take_at(&id, t0 + Duration::from_secs(1)), Ok(()));
        assert!(rl.take_at(&id, t0 + Duration::from_secs(1)).is_err());
    }

    #[test]
    fn retry_after_counts_the_refill() {
        let rl = RateLimiter::new(RateLimit {
            per_minute: 2,
            burst: 1,
        });
        let id = TokenId::from_bytes([3; 16]);
        let t0 = Instant::now();
        assert_eq!(rl.take_at(&id, t0), Ok(()));
        assert_eq!(rl.take_at(&id, t0), Err(30));
        assert_eq!(rl.take_at(&id, t0 + Duration::from_secs(10)), Err(20));
        assert_eq!(rl.take_at(&id, t0 + Duration::from_secs(30)), Ok(()));
    }

    #[test]
    fn idle_buckets_are_swept() {
        let rl = RateLimiter::new(RateLimit {
            per_minute: 6000,
            burst: 1,
        });
        let t0 = Instant::now();
        for i in 0..SWEEP_AT as u32 {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&i.to_be_bytes());
            assert!(rl.take_at(&TokenId::from_bytes(b), t0).is_ok());
        }
        assert_eq!(rl.tracked(), SWEEP_AT);
        // A second later every bucket is full again: each exchange drops a
        // few of them, never the whole map at once.
        let later = t0 + Duration::from_secs(1);
        assert!(rl.take_at(&TokenId::from_bytes([9; 16]), later).is_ok());
        assert_eq!(rl.tracked(), SWEEP_AT + 1 - SWEEP_STEP);
        for i in 0..200u32 {
            let mut b = [0xff; 16];
            b[..4].copy_from_slice(&i.to_be_bytes());
            assert!(rl.take_at(&TokenId::from_bytes(b), later).is_ok());
            assert!(rl.tracked() <= SWEEP_AT + 1, "{}", rl.tracked());
        }
        // Swept while over the bound, then left alone below it.
        assert!(rl.tracked() <= SWEEP_AT, "{}", rl.tracked());
        // A bucket still refilling is kept when its turn comes.
        let busy = TokenId::from_bytes([7; 16]);
        let rl = RateLimiter::new(RateLimit {
            per_minute: 1,
            burst: 1,
        });
        assert!(rl.take_at(&busy, t0).is_ok());
        for i in 0..(2 * SWEEP_AT) as u32 {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&i.to_be_bytes());
            let _ = rl.take_at(&TokenId::from_bytes(b), t0 + Duration::from_secs(1));
        }
        assert_eq!(rl.take_at(&busy, t0 + Duration::from_secs(2)), Err(58));
    }

    #[test]
    fn zero_settings_are_raised_to_one() {
        let rl = RateLimiter::new(RateLimit {
            per_minute: 0,
            burst: 0,
        });
        let id = TokenId::from_bytes([4; 16]);
        let t0 = Instant::now();
        assert_eq!(rl.take_at(&id, t0), Ok(()));
        assert_eq!(rl.take_at(&id, t0), Err(60));
    }
}
