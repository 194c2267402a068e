//! An opt-in background purge.

use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::{Error, IoError, Result};
use crate::store::TokenStore;

/// A running janitor thread; dropping (or [`Janitor::stop`]) ends it.
#[derive(Debug)]
pub struct Janitor {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Janitor {
    /// Stops the thread and waits for it.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Janitor {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl TokenStore {
    /// Starts a thread that calls [`TokenStore::purge_expired`] with `batch`
    /// every `every`, draining all that is due each time. It holds only a
    /// weak reference: it ends when the store's last handle is dropped, or
    /// when the returned [`Janitor`] is stopped or dropped.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a zero batch or interval;
    /// [`Error::Io`] if the thread cannot be started.
    ///
    /// ```
    /// use std::time::Duration;
    /// let store = tokenvault::TokenStore::temporary()?;
    /// let janitor = store.spawn_janitor(Duration::from_secs(60), 1_000)?;
    /// janitor.stop();
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn spawn_janitor(&self, every: Duration, batch: usize) -> Result<Janitor> {
        if batch == 0 || every.is_zero() {
            return Err(Error::InvalidArgument(
                "the janitor needs a positive batch and interval".into(),
            ));
        }
        let weak = self.downgrade();
        let (tx, rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("tokenvault-janitor".into())
            .spawn(move || loop {
                match rx.recv_timeout(every) {
                    Err(RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
                let Some(store) = TokenStore::upgrade(&weak) else {
                    return;
                };
                // Errors are retried at the next tick; nothing to report to.
                while let Ok(report) = store.purge_expired(batch) {
                    if !report.more {
                        break;
                    }
                }
            })
            .map_err(|e| {
                Error::Io(IoError::with_source(
                    format!("cannot start the janitor thread: {e}"),
                    e,
                ))
            })?;
        Ok(Janitor {
            stop: Some(tx),
            thread: Some(thread),
        })
    }
}
