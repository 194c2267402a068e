//! The replica's sync thread: it follows the change feed on a connection of
//! its own, waking on news, after every reconnect and on a short poll, and
//! prunes the feed now and then.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::SyncState;
use crate::error::{Error, IoError, Result};
use crate::storage::{ChangeFeed, Subscriber};

const MIN_BACKOFF: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_millis(250);

/// What the sync thread drives: the store, which applies what it reads.
pub(crate) trait Follower: Send + Sync + 'static {
    /// Reads the change feed and applies it (or reloads a snapshot when the
    /// feed no longer reaches back far enough). Blocks on the database.
    fn sync_from(&self, feed: &mut dyn ChangeFeed) -> Result<()>;
}

/// Starts the replica's sync thread. It holds the store weakly and ends when
/// the store is dropped.
pub(crate) fn spawn(
    state: Arc<SyncState>,
    subscriber: Subscriber,
    target: Weak<dyn Follower>,
) -> Result<()> {
    std::thread::Builder::new()
        .name("tokenvault-sync".into())
        .spawn(move || run(&state, &subscriber, &target))
        .map(drop)
        .map_err(|e| {
            Error::Io(IoError::with_source(
                format!("cannot start the sync thread: {e}"),
                e,
            ))
        })
}

/// A new feed, listening when the options say so; `None` (after noting the
/// error) when there is none to be had now.
fn subscribe(rep: &SyncState, subscriber: &Subscriber) -> Option<Box<dyn ChangeFeed>> {
    let mut feed = match subscriber() {
        Ok(f) => f,
        Err(e) => {
            rep.note_error(&e);
            return None;
        }
    };
    if rep.opts.listen {
        if let Err(e) = feed.listen() {
            rep.note_error(&e);
            if feed.is_closed() {
                return None;
            }
            // No LISTEN on this server: polling alone.
        }
    }
    Some(feed)
}

fn run(rep: &SyncState, subscriber: &Subscriber, target: &Weak<dyn Follower>) {
    let poll = rep.opts.poll();
    let retention = rep.opts.change_log_retention;
    let prune_every = (retention / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let mut feed: Option<Box<dyn ChangeFeed>> = None;
    let mut backoff = MIN_BACKOFF;
    let mut ever_connected = false;
    let mut last_prune = Instant::now();
    while !rep.stopped() {
        let f = match feed.as_mut() {
            Some(f) => f,
            None => match subscribe(rep, subscriber) {
                Some(f) => {
                    if ever_connected {
                        rep.reconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    ever_connected = true;
                    rep.connected.store(true, Ordering::Release);
                    feed.insert(f)
                }
                None => {
                    rep.nap(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            },
        };
        // Catch up: after (re)connecting, on each notification, on each poll.
        let synced = match target.upgrade() {
            Some(store) => store.sync_from(&mut **f),
            None => return,
        };
        if let Err(e) = synced {
            rep.note_error(&e);
            if f.is_closed() {
                rep.connected.store(false, Ordering::Release);
                feed = None;
            }
            rep.nap(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
            continue;
        }
        backoff = MIN_BACKOFF;
        if last_prune.elapsed() >= prune_every {
            last_prune = Instant::now();
            // Best effort: any replica may prune, and the next one retries.
            if let Err(e) = f.prune(retention) {
                rep.note_error(&e);
            }
        }
        if let Err(e) = f.wait(poll) {
            rep.note_error(&e);
            rep.connected.store(false, Ordering::Release);
            feed = None;
        }
    }
}
