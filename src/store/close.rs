//! Closing a handle, and saying what the close did.

use std::time::{Duration, Instant};

use super::*;

/// How long [`TokenStore::close_timeout`] sleeps between two looks at the
/// handle count, at most (it starts at a millisecond and doubles).
const MAX_POLL: Duration = Duration::from_millis(20);

impl TokenStore {
    /// Closes this handle: makes every write durable and, when it is the
    /// last handle of the store, lets go of the storage in a state that is
    /// quick to open again. The [`CloseReport`] says which of the two it
    /// did.
    ///
    /// On sled, closing the last handle is a checkpoint. sled 0.34 records
    /// where its log stands only when it opens a database, so the first
    /// open after a burst of writes replays them (about a second per
    /// million tokens written); `close` does that replay now, while the
    /// service is shutting down, rather than at its next start.
    ///
    /// It also copies the token records into warm-start files (in the
    /// database directory, `warm-start/`), which the next open reads in one
    /// sequential pass instead of walking sled's trees page by page (at a
    /// million tokens, about one second instead of two to three: see
    /// `docs/performance.md`). They are
    /// only a cache of what sled holds, used only if nothing was written
    /// since they were made (opening takes their marker out of the database,
    /// durably, before any write) and only if their blake3 hashes match; the
    /// open that reads them deletes them. Making them costs a scan of the
    /// records at close (about a second per million tokens) and, while the
    /// store is closed, about 120 bytes of disk per token.
    ///
    /// Dropping a store without closing it loses nothing: the next open
    /// replays sled's log and reads its trees instead.
    ///
    /// A store opened with [`Config::read_only`](crate::Config::read_only)
    /// writes nothing at close: no checkpoint and no warm-start files (the
    /// report says so), and those of the last close stay valid.
    ///
    /// While other handles (clones, an HTTP server's, an
    /// [`AsyncTokenStore`](crate::AsyncTokenStore)'s, a call still running
    /// on a blocking thread) are open, this only flushes, and the report
    /// says how many remain ([`CloseReport::handles_remaining`]); use
    /// [`TokenStore::close_timeout`] to wait for them first.
    ///
    /// **Blocks**: on the last handle, for the checkpoint and the
    /// warm-start files, about 4 s per million tokens held (perf report,
    /// `close_ms`: 3.4–4.8 s at 1,000,000 tokens), a few milliseconds for a
    /// small store; otherwise for one flush (an fdatasync, about 0.1–0.3
    /// ms, more on a busy disk).
    ///
    /// # Errors
    /// [`Error::Io`] if the flush fails or the storage cannot be opened for
    /// the checkpoint, or another process holds the store directory for
    /// more than two seconds (the checkpoint is then skipped and the report
    /// says so; the writes are durable by then; failing to write the
    /// warm-start files is no error, the report says they were not written:
    /// the next open reads the trees), [`Error::Corrupt`] if sled finds its
    /// files damaged while doing so; on a shared store, as
    /// [`TokenStore::flush`].
    ///
    /// ```
    /// use tokenvault::{Actor, Role, TokenStore};
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("tokens.db");
    /// let store = TokenStore::open(&path)?;
    /// store.add_member("acme", "ann", Role::Owner)?;
    /// let t = store.generate(&Actor::new("acme", "ann"), Default::default())?;
    ///
    /// // A clone still open: this close only flushes, and says so.
    /// let other = store.clone();
    /// let report = store.close()?;
    /// assert!(!report.last_handle);
    /// assert_eq!(report.handles_remaining, 1);
    ///
    /// // The last handle: checkpoint and warm-start files.
    /// let report = other.close()?;
    /// assert!(report.last_handle && report.checkpoint && report.warm_start_files);
    ///
    /// let store = TokenStore::open(&path)?;
    /// assert_eq!(store.verify_refresh(t.token.expose())?.id, t.info.id);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn close(self) -> Result<CloseReport> {
        self.inner.write_denials(0);
        match Arc::try_unwrap(self.inner) {
            Ok(inner) => {
                // A storage that failed (and was not opened again since,
                // e.g. no call came after the disk had room again) is
                // opened again first where it can be, so that its changes
                // are synced and checkpointed rather than reported lost.
                let _ = inner.recover_now();
                // A replica's sync thread is told to stop before the storage
                // closes (it holds no handle of the store meanwhile).
                let Inner {
                    backend, replica, ..
                } = inner;
                #[cfg_attr(not(feature = "postgres"), allow(clippy::drop_non_drop))]
                drop(replica);
                let done = backend.close()?;
                Ok(CloseReport {
                    last_handle: true,
                    handles_remaining: 0,
                    checkpoint: done.checkpoint,
                    warm_start_files: done.warm_start,
                })
            }
            Err(inner) => {
                let others = Arc::strong_count(&inner).saturating_sub(1);
                TokenStore { inner }.flush()?;
                Ok(CloseReport {
                    last_handle: false,
                    handles_remaining: others,
                    checkpoint: false,
                    warm_start_files: false,
                })
            }
        }
    }

    /// [`TokenStore::close`], after waiting up to `timeout` for the other
    /// handles of the store to be dropped (an HTTP server's connections
    /// letting go, a call finishing on a blocking thread). If some are
    /// still open when the time is up, this closes as `close` does with
    /// other handles open: it flushes, and the report says how many
    /// remain.
    ///
    /// **Blocks**: up to `timeout` while other handles remain (it looks
    /// again every few milliseconds), then as [`TokenStore::close`]. In
    /// async code, call [`AsyncTokenStore::close_timeout`](crate::AsyncTokenStore::close_timeout),
    /// which waits without holding a worker.
    ///
    /// # Errors
    /// As [`TokenStore::close`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use tokenvault::TokenStore;
    /// let dir = tempfile::tempdir()?;
    /// let store = TokenStore::open(dir.path().join("tokens.db"))?;
    /// let busy = store.clone();
    /// let worker = std::thread::spawn(move || {
    ///     std::thread::sleep(Duration::from_millis(50));
    ///     drop(busy);
    /// });
    /// let report = store.close_timeout(Duration::from_secs(30))?;
    /// assert!(report.last_handle && report.checkpoint);
    /// # worker.join().unwrap();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn close_timeout(self, timeout: Duration) -> Result<CloseReport> {
        let deadline = Instant::now().checked_add(timeout);
        let mut pause = Duration::from_millis(1);
        while self.handles() > 1 {
            let now = Instant::now();
            let left = match deadline {
                Some(d) if d > now => d - now,
                Some(_) => break,
                // A timeout too long to add to now: as good as forever.
                None => MAX_POLL,
            };
            std::thread::sleep(pause.min(left));
            pause = (pause * 2).min(MAX_POLL);
        }
        self.close()
    }

    /// How many handles of this store are open, this one included.
    pub(crate) fn handles(&self) -> usize {
        Arc::strong_count(&self.inner)
    }
}
