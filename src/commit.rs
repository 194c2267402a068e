//! Group commit: concurrent durable callers share one sync.
//!
//! A caller commits its batch (not yet durable) and takes a ticket; then it
//! waits until a sync covers that ticket. One caller at a time leads a
//! sync; the others that arrive meanwhile watch it end, and each sync
//! covers every batch committed before it started. The leader may wait a
//! little (the linger) for a management call about to commit.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::error::Result;

/// Group commit: concurrent durable callers share one flush. Its counters
/// are its own: the store reads and moves them through its methods.
pub(crate) struct Flusher {
    /// Whether a flush is under way (its leader does not hold this lock
    /// while it flushes, so that callers it made durable leave at once).
    flushing: Mutex<bool>,
    /// Signalled when a flush ends.
    done: Condvar,
    /// `flushing`, readable without the lock.
    in_flight: AtomicBool,
    /// Callers waiting for a flush to end.
    waiting: AtomicUsize,
    written: AtomicU64,
    flushed: AtomicU64,
    lazy: AtomicU64,
    /// How long the last flush took, in nanoseconds.
    flush_ns: AtomicU64,
    /// Management calls that want or hold the catalog to write: each will
    /// commit within microseconds (see [`Flusher::linger`]).
    writers: AtomicUsize,
    /// Callers waited for the last flush: durable calls are arriving
    /// together, and the next leader waits for a companion.
    callers_arriving_together: AtomicBool,
}

/// A management call counted among the writers while it lives.
pub(crate) struct WriterMark<'a>(&'a AtomicUsize);

impl Drop for WriterMark<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Release);
    }
}

/// A flush leader does not linger when a flush is shorter than this,
/// and never longer than [`LINGER_MAX`] (see [`Flusher::linger`]).
const LINGER_MIN: Duration = Duration::from_micros(5);
const LINGER_MAX: Duration = Duration::from_micros(500);
/// The longest a caller watches a flush under way before it sleeps.
const SPIN_MAX: Duration = Duration::from_micros(1000);

impl Flusher {
    pub(crate) fn new() -> Flusher {
        Flusher {
            flushing: Mutex::new(false),
            done: Condvar::new(),
            in_flight: AtomicBool::new(false),
            waiting: AtomicUsize::new(0),
            written: AtomicU64::new(0),
            flushed: AtomicU64::new(0),
            lazy: AtomicU64::new(0),
            flush_ns: AtomicU64::new(0),
            writers: AtomicUsize::new(0),
            callers_arriving_together: AtomicBool::new(false),
        }
    }

    /// The ticket of a batch just committed (the flush that covers it makes
    /// it durable).
    pub(crate) fn ticket(&self) -> u64 {
        self.written.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// The ticket of the last batch committed.
    pub(crate) fn written(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    /// The highest ticket known durable.
    pub(crate) fn flushed(&self) -> u64 {
        self.flushed.load(Ordering::Acquire)
    }

    /// Counts one lazy write; returns how many have piled up since the
    /// last flush.
    pub(crate) fn lazy_write(&self) -> u64 {
        self.lazy.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Counts a management call that wants or holds the catalog to write
    /// (see [`Flusher::linger`]) until the returned mark is dropped.
    pub(crate) fn writer(&self) -> WriterMark<'_> {
        self.writers.fetch_add(1, Ordering::AcqRel);
        WriterMark(&self.writers)
    }

    /// After the storage was reopened with nothing under way: every ticket
    /// up to `barrier` counts as durable (one past those handed out, so a
    /// flush asked for later has nothing lost to wait for), and no lazy
    /// write is pending.
    pub(crate) fn restart_at(&self, barrier: u64) {
        self.written.store(barrier, Ordering::Release);
        self.flushed.fetch_max(barrier, Ordering::AcqRel);
        self.lazy.store(0, Ordering::Release);
    }

    /// The flush of a durable call: sync up to `ticket`, through `sync`.
    pub(crate) fn flush_upto(
        &self,
        ticket: u64,
        linger: bool,
        sync: &dyn Fn() -> Result<()>,
    ) -> Result<()> {
        let f = self;
        if f.flushed.load(Ordering::Acquire) >= ticket {
            return Ok(());
        }
        // A flush under way may well cover this write: watch it end
        // rather than sleep (waking a sleeper costs more than the wait
        // saves), for no longer than its leader's linger and a flush take
        // (twice the last flush: the linger is at most one).
        if f.in_flight.load(Ordering::Acquire) {
            f.waiting.fetch_add(1, Ordering::AcqRel);
            let flush = Duration::from_nanos(f.flush_ns.load(Ordering::Relaxed));
            let budget = (2 * flush).min(SPIN_MAX);
            let started = Instant::now();
            while f.in_flight.load(Ordering::Acquire) && started.elapsed() < budget {
                std::thread::yield_now();
            }
            f.waiting.fetch_sub(1, Ordering::AcqRel);
        }
        {
            let mut flushing = f.flushing.lock();
            loop {
                if f.flushed.load(Ordering::Acquire) >= ticket {
                    return Ok(());
                }
                if !*flushing {
                    *flushing = true;
                    f.in_flight.store(true, Ordering::Release);
                    break;
                }
                f.waiting.fetch_add(1, Ordering::AcqRel);
                f.done.wait(&mut flushing);
                f.waiting.fetch_sub(1, Ordering::AcqRel);
            }
        }
        // This caller leads the next flush. Whatever happens (an error, a
        // panic in the engine), leadership is handed back on the way out.
        struct Lead<'a>(&'a Flusher);
        impl Drop for Lead<'_> {
            fn drop(&mut self) {
                let f = self.0;
                let mut flushing = f.flushing.lock();
                *flushing = false;
                f.in_flight.store(false, Ordering::Release);
                drop(flushing);
                f.done.notify_all();
            }
        }
        let lead = Lead(f);
        if linger {
            self.linger(ticket);
        }
        let target = f.written.load(Ordering::Acquire);
        let started = Instant::now();
        sync()?;
        let elapsed = started.elapsed();
        let before = f.flushed.load(Ordering::Acquire);
        crate::observe::synced(elapsed, target.saturating_sub(before));
        let took = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        f.flush_ns.store(took, Ordering::Relaxed);
        f.flushed.fetch_max(target, Ordering::AcqRel);
        f.lazy.store(0, Ordering::Release);
        // Callers waited for this flush: durable calls are arriving
        // together, and the next leader waits for a companion.
        f.callers_arriving_together
            .store(f.waiting.load(Ordering::Acquire) > 0, Ordering::Relaxed);
        drop(lead);
        Ok(())
    }

    /// Group commit's other half. Every management call that writes holds
    /// the catalog from its checks to its commit and lets go before it
    /// waits for the flush. The flush leader waits before flushing while
    /// such a call wants or holds the catalog (it is microseconds from
    /// committing), and, when callers waited for the previous flush (calls
    /// are arriving together), until another call's write is in the flush
    /// (one committed after the leader's own `ticket`, or one committed
    /// before it whose caller now waits): then one flush makes both
    /// durable, where flushing at once would make the other call wait for a
    /// flush of its own. The wait is at most as long
    /// as the last flush (and [`LINGER_MAX`]): waiting longer would cost
    /// more than the flush it saves; where flushing is nearly free
    /// (a backend whose commits are already durable) there is none. A
    /// caller alone, with no call before it waiting, does not wait.
    fn linger(&self, ticket: u64) {
        let f = self;
        let recent = f.callers_arriving_together.load(Ordering::Relaxed);
        if !recent && f.writers.load(Ordering::Acquire) == 0 {
            return;
        }
        let flush = Duration::from_nanos(f.flush_ns.load(Ordering::Relaxed));
        let budget = flush.min(LINGER_MAX);
        if budget < LINGER_MIN {
            return;
        }
        let started = Instant::now();
        loop {
            // Done once no call is under way and, if calls have been
            // arriving together, another one's write will be in the flush.
            let quiet = f.writers.load(Ordering::Acquire) == 0;
            let companion = || {
                f.written.load(Ordering::Acquire) > ticket || f.waiting.load(Ordering::Acquire) > 0
            };
            if quiet && (!recent || companion()) {
                break;
            }
            if started.elapsed() >= budget {
                break;
            }
            std::thread::yield_now();
        }
    }
}
