//! What a replica knows of its own freshness: the change-feed position its
//! memory reflects, when its last sync started (the staleness bound is
//! measured from there), the read-through budget and the ids known absent,
//! and the counters [`SyncStatus`] reports.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::config::PostgresOptions;
use crate::error::{Error, Result};

/// How fresh a replica is; see [`crate::TokenStore::sync_status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncStatus {
    /// The change-log sequence number this replica has applied.
    pub applied_seq: u64,
    /// Time since the start of the last successful sync (`None`: never).
    pub since_last_sync: Option<Duration>,
    /// Whether verification currently answers (within the staleness bound).
    pub fresh: bool,
    /// Whether the sync connection (which `LISTEN`s, unless polling alone)
    /// is up.
    pub connected: bool,
    /// How many times the listening connection was re-established.
    pub reconnects: u64,
    /// How many times a full snapshot was reloaded (after falling behind the
    /// pruned change log).
    pub reloads: u64,
    /// Database reads for tokens not in memory.
    pub read_throughs: u64,
    /// The last sync error, if the last attempt failed.
    pub last_error: Option<String>,
}

const MISS_CACHE: usize = 65_536;

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Ids a read-through found in no table: made up (a real token's record is
/// committed before its secret is handed out), so never worth reading again.
#[derive(Default)]
struct Misses {
    set: HashSet<[u8; 16]>,
    order: VecDeque<[u8; 16]>,
}

/// One replica's freshness, shared by its store and its sync thread.
pub(crate) struct SyncState {
    base: Instant,
    bound: Duration,
    pub(crate) opts: PostgresOptions,
    applied: AtomicU64,
    /// Nanoseconds since `base`, plus one, of the start of the last
    /// successful sync; 0 when there was none.
    last_ok: AtomicU64,
    pub(super) connected: AtomicBool,
    stop: AtomicBool,
    pub(super) reconnects: AtomicU64,
    reloads: AtomicU64,
    read_throughs: AtomicU64,
    last_error: Mutex<Option<String>>,
    misses: Mutex<Misses>,
    bucket: Mutex<Bucket>,
}

impl SyncState {
    pub(crate) fn new(opts: PostgresOptions) -> Self {
        let now = Instant::now();
        SyncState {
            base: now,
            bound: opts.staleness_bound,
            bucket: Mutex::new(Bucket {
                tokens: f64::from(opts.read_through_per_second),
                at: now,
            }),
            opts,
            applied: AtomicU64::new(0),
            last_ok: AtomicU64::new(0),
            connected: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            reconnects: AtomicU64::new(0),
            reloads: AtomicU64::new(0),
            read_throughs: AtomicU64::new(0),
            last_error: Mutex::new(None),
            misses: Mutex::new(Misses::default()),
        }
    }

    /// A timestamp for [`SyncState::mark_ok`], taken before a sync reads.
    pub(crate) fn now(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }

    pub(crate) fn applied(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }

    /// Called under the catalog lock, after memory reflects `seq`.
    pub(crate) fn set_applied(&self, seq: u64) {
        self.applied.fetch_max(seq, Ordering::AcqRel);
    }

    /// Memory now reflects every commit made before `started`.
    pub(crate) fn mark_ok(&self, started: u64) {
        self.last_ok.fetch_max(started, Ordering::AcqRel);
        *self.last_error.lock() = None;
    }

    pub(crate) fn note_error(&self, e: &Error) {
        *self.last_error.lock() = Some(e.to_string());
    }

    pub(crate) fn note_reload(&self) {
        self.reloads.fetch_add(1, Ordering::Relaxed);
    }

    /// Ok when the last successful sync started within the staleness bound.
    #[inline]
    pub(crate) fn check_fresh(&self) -> Result<()> {
        let last = self.last_ok.load(Ordering::Acquire);
        let now = self.now();
        if last != 0 && now.saturating_sub(last) <= self.bound.as_nanos() as u64 {
            return Ok(());
        }
        Err(self.stale(now, last))
    }

    #[cold]
    fn stale(&self, now: u64, last: u64) -> Error {
        let since = if last == 0 {
            "never synchronised".to_string()
        } else {
            format!(
                "last synchronised {:?} ago",
                Duration::from_nanos(now.saturating_sub(last))
            )
        };
        Error::Unavailable(format!(
            "this replica's view of the shared token store is stale ({since}, bound {:?}); \
             failing closed until PostgreSQL is reachable again",
            self.bound
        ))
    }

    /// Whether `id` was found in no table by an earlier read-through.
    pub(crate) fn known_missing(&self, id: &[u8; 16]) -> bool {
        self.misses.lock().set.contains(id)
    }

    /// Whether a read-through for `id` is pointless (known absent), else
    /// takes one unit of the read-through budget or fails with
    /// [`Error::Limit`].
    pub(crate) fn admit_read(&self, id: &[u8; 16]) -> Result<bool> {
        if self.misses.lock().set.contains(id) {
            return Ok(false);
        }
        let rate = f64::from(self.opts.read_through_per_second);
        let mut b = self.bucket.lock();
        let now = Instant::now();
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(rate);
        b.at = now;
        if b.tokens < 1.0 {
            return Err(Error::Limit(
                "too many lookups of tokens this replica does not hold; try again shortly".into(),
            ));
        }
        b.tokens -= 1.0;
        self.read_throughs.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    pub(crate) fn remember_missing(&self, id: [u8; 16]) {
        let mut m = self.misses.lock();
        if m.set.insert(id) {
            m.order.push_back(id);
            if m.order.len() > MISS_CACHE {
                if let Some(old) = m.order.pop_front() {
                    m.set.remove(&old);
                }
            }
        }
    }

    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    pub(super) fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    pub(crate) fn status(&self) -> SyncStatus {
        let last = self.last_ok.load(Ordering::Acquire);
        SyncStatus {
            applied_seq: self.applied(),
            since_last_sync: (last != 0)
                .then(|| Duration::from_nanos(self.now().saturating_sub(last))),
            fresh: self.check_fresh().is_ok(),
            connected: self.connected.load(Ordering::Acquire),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            reloads: self.reloads.load(Ordering::Relaxed),
            read_throughs: self.read_throughs.load(Ordering::Relaxed),
            last_error: self.last_error.lock().clone(),
        }
    }

    /// Sleeps up to `d`, waking early when stopped.
    pub(super) fn nap(&self, d: Duration) {
        let end = Instant::now() + d;
        while !self.stopped() {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            std::thread::sleep(left.min(Duration::from_millis(20)));
        }
    }
}
