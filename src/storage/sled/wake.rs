//! A flush that sled 0.34.7 would leave waiting forever once a write of its
//! log failed.
//!
//! `Db::flush` ends in `make_stable` (sled's `pagecache/iobuf.rs`, in
//! `make_stable_inner`): it seals the log buffer holding what it must make
//! stable, then waits on the condition variable `interval_updated` until
//! the buffer's write marks its range stable, or until it finds sled's
//! global error set (it checks the error before each wait, under the
//! `intervals` lock, and waits without a timeout). A sealed buffer is
//! written by whoever leaves it last: the sealer itself when no thread
//! was still copying into it (`maybe_seal_and_write_iobuf`: on a failed
//! write it stores the global error and then wakes every waiter), or the
//! last writer to leave it (`Log::exit_reservation`, `pagecache/logger.rs`
//! lines 438-445: on a failed write it stores the global error and wakes
//! nobody). So when a buffer that a durable call sealed is written by
//! another thread (sled's background flusher, which seals the current
//! buffer every half second, or another call still copying its record into
//! it) and that write fails (a dead file system, a full disk), the flush
//! waits for a wake-up that only a later sled operation gives: the next
//! reservation, flush or seal of a non-empty buffer finds the error and
//! wakes every waiter. Where none comes (the caller alone, or every other
//! caller waiting behind it for the store's group commit, and sled's
//! flusher finding an empty buffer), the flush waits forever.
//!
//! [`flush`] runs sled's flush on the caller's thread, as before, and
//! counts it among the flushes under way that one watcher thread (shared
//! by every database of the process, started with the first flush) looks
//! at while any is under way: every [`TICK`] it reads the global error of
//! each one's database (`sled::Config::global_error`, public in sled
//! 0.34.7 though left out of its documentation; it reads the cell the
//! running database stores its error in, which every clone of the
//! `Config` it was opened with shares). Once it is set, the watcher flushes that database once more from a
//! short-lived thread of its own: with the error set, that flush returns at
//! once and, on its way out, wakes every waiter, so the stuck flush returns
//! the error too, and the durable call answers `io` with the store marked
//! failed. The normal path costs one uncontended lock on entry and one on
//! leaving (and, after a second without any flush, waking the watcher); a
//! stuck flush is released within about [`TICK`] of the failed write.
//!
//! Not covered: sled's concurrency control is one lock for the process;
//! a transaction started between the failed write and the watcher's flush
//! waits for the stuck flush to let go of it, and the watcher's flush
//! waits behind that transaction. Then both stay parked (the watcher's
//! short-lived thread with them, the watcher itself goes on), as sled
//! would leave them without this module.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// How often the watcher reads the global error of the databases whose
/// flush is under way.
pub(super) const TICK: Duration = Duration::from_millis(10);

/// How long the watcher keeps ticking after the last flush ended, before
/// it waits for the next one to wake it (so that a run of durable calls
/// costs them no wake-up each).
const LINGER: Duration = Duration::from_secs(1);

/// How long after waking a database's waiters the watcher does it again
/// while that flush is still under way, and how many times at most (a
/// waking flush held by sled's concurrency control stays parked: no more
/// threads than this are left so).
const POKE_AGAIN: Duration = Duration::from_millis(500);
const POKES: u32 = 3;

/// One flush under way.
struct Flushing {
    id: u64,
    db: sled::Db,
    /// The configuration the database was opened with: its global error
    /// is the running database's.
    cfg: sled::Config,
    /// When the watcher last woke the database's waiters for it, and how
    /// many times it did.
    poked: Option<Instant>,
    pokes: u32,
}

#[derive(Default)]
struct State {
    flushing: Vec<Flushing>,
    next_id: u64,
    /// Whether the watcher waits with no timeout (nothing under way for a
    /// while): a new flush wakes it.
    idle: bool,
    /// Whether a watcher thread runs.
    started: bool,
}

struct Watch {
    state: Mutex<State>,
    wake: Condvar,
}

fn watch() -> &'static Watch {
    static WATCH: OnceLock<Watch> = OnceLock::new();
    WATCH.get_or_init(|| Watch {
        state: Mutex::new(State::default()),
        wake: Condvar::new(),
    })
}

/// `db.flush()`, which returns sled's error rather than wait forever when
/// a write of the log fails under it (see the module's documentation).
/// `cfg` is the configuration `db` was opened with. Blocks for the flush
/// (the writes and `sync_file_range` of what is not yet written), about
/// [`TICK`] more when a write failed.
pub(super) fn flush(db: &sled::Db, cfg: &sled::Config) -> sled::Result<usize> {
    let w = watch();
    let id = {
        let mut s = w.state.lock();
        if !s.started {
            s.started = spawn_watcher(w);
        }
        let id = s.next_id;
        s.next_id += 1;
        s.flushing.push(Flushing {
            id,
            db: db.clone(),
            cfg: cfg.clone(),
            poked: None,
            pokes: 0,
        });
        if s.idle {
            s.idle = false;
            w.wake.notify_one();
        }
        id
    };
    let flushed = db.flush();
    let done = {
        let mut s = w.state.lock();
        s.flushing
            .iter()
            .position(|f| f.id == id)
            .map(|at| s.flushing.swap_remove(at))
    };
    // The handle is let go of outside the lock.
    drop(done);
    flushed
}

/// Starts the watcher; false if no thread could be had (then flushes go
/// unwatched, as sled's own, until one can).
fn spawn_watcher(w: &'static Watch) -> bool {
    std::thread::Builder::new()
        .name("tokenvault-flush-watch".into())
        .spawn(move || run(w))
        .is_ok()
}

fn run(w: &'static Watch) {
    let mut last_busy = Instant::now();
    let mut s = w.state.lock();
    loop {
        if s.flushing.is_empty() && last_busy.elapsed() >= LINGER {
            s.idle = true;
            w.wake.wait(&mut s);
            s.idle = false;
            last_busy = Instant::now();
            continue;
        }
        w.wake.wait_for(&mut s, TICK);
        if !s.flushing.is_empty() {
            last_busy = Instant::now();
        }
        let mut stuck = Vec::new();
        for f in s.flushing.iter_mut() {
            let due = f.pokes < POKES && f.poked.is_none_or(|at| at.elapsed() >= POKE_AGAIN);
            if let (true, Err(e)) = (due, f.cfg.global_error()) {
                f.poked = Some(Instant::now());
                f.pokes += 1;
                stuck.push(f.db.clone());
                #[cfg(any(feature = "admin", feature = "http"))]
                tracing::warn!(
                    target: "tokenvault::storage",
                    "a write of sled's log failed ({e}) while a flush waited for it: \
                     waking that flush, which answers the error"
                );
                #[cfg(not(any(feature = "admin", feature = "http")))]
                drop(e);
            }
        }
        if stuck.is_empty() {
            continue;
        }
        drop(s);
        for db in stuck {
            // sled's error is set: this flush returns it at once and wakes
            // every waiter of the database on its way out. Its own thread,
            // so that the watcher goes on even if sled's concurrency
            // control holds it (see the module's documentation).
            // Where no thread can be had, tried again after POKE_AGAIN.
            let poke = move || drop(db.flush());
            let _ = std::thread::Builder::new()
                .name("tokenvault-flush-wake".into())
                .spawn(poke);
        }
        s = w.state.lock();
    }
}
