//! [`AsyncTokenStore`]: the store's calls as futures (cargo feature
//! `tokio`).
//!
//! Each call that may wait for the disk (or for PostgreSQL) runs on tokio's
//! blocking threads ([`tokio::task::spawn_blocking`]), so an async worker
//! never waits for an fsync. Verification (`verify`, `authorize`) reads
//! memory only on an embedded store and stays a plain synchronous call.
//!
//! Adding a call is a few lines: an `async fn` that clones what it borrows
//! and hands a closure to [`AsyncTokenStore::run`].

use std::path::PathBuf;
use std::time::Duration;

use crate::{CloseReport, Config, Error, Policy, Result, TokenStore};

mod lifecycle;
mod members;
mod reads;
mod tokens;

/// How long [`AsyncTokenStore::close_timeout`] sleeps between two looks at
/// the handle count, at most.
const MAX_POLL: Duration = Duration::from_millis(20);

/// A [`TokenStore`] for async code (cargo feature `tokio`): the same calls,
/// as futures that run the blocking work (an fdatasync, a read of sled's
/// pages, a PostgreSQL round trip) on tokio's blocking threads, off the
/// async workers.
///
/// Cheap to clone (one `Arc` inside, the same as [`TokenStore`]'s) and
/// `Send + Sync`; both faces are views of the same store:
/// [`From<TokenStore>`](#impl-From<TokenStore>-for-AsyncTokenStore),
/// [`AsyncTokenStore::into_sync`] and [`AsyncTokenStore::sync`] convert
/// without copying anything.
///
/// Which calls block, and for how long, is in each call's documentation
/// and in the table of `docs/async.md`. [`AsyncTokenStore::verify`] and
/// [`AsyncTokenStore::authorize`] stay synchronous: they read memory only
/// (hundreds of nanoseconds), cheaper than a hop to another thread.
///
/// The calls must run inside a tokio runtime (they panic otherwise, as
/// `spawn_blocking` does). A call whose future is dropped before it
/// completes still runs to its end on its blocking thread: a write is
/// either wholly done or not started, never cut in half. If the store call
/// panics, the panic is resumed in the awaiting task.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tokenvault::Error> {
/// use tokenvault::{Actor, AsyncTokenStore, GenerateOptions, Role};
///
/// let store = AsyncTokenStore::temporary().await?; // or ::open(path)
/// store.add_member("acme", "olivia", Role::Owner).await?;
/// let owner = Actor::new("acme", "olivia");
/// let issued = store.generate(&owner, GenerateOptions::default()).await?;
/// let grant = store.exchange(issued.token.expose()).await?;
/// let who = store.authorize(grant.access_token.expose(), "read")?; // no await
/// assert_eq!(&*who.user, "olivia");
///
/// // At shutdown: waits (bounded) for other handles, then checkpoints.
/// let report = store.close_timeout(std::time::Duration::from_secs(5)).await?;
/// assert!(report.last_handle);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct AsyncTokenStore {
    store: TokenStore,
}

impl From<TokenStore> for AsyncTokenStore {
    fn from(store: TokenStore) -> Self {
        AsyncTokenStore { store }
    }
}

impl From<AsyncTokenStore> for TokenStore {
    fn from(store: AsyncTokenStore) -> Self {
        store.store
    }
}

impl AsyncTokenStore {
    /// The async face of `store` (the same store: no copy).
    pub fn new(store: TokenStore) -> Self {
        AsyncTokenStore { store }
    }

    /// The synchronous face of this store (the same store: no copy).
    pub fn into_sync(self) -> TokenStore {
        self.store
    }

    /// The synchronous face, borrowed: for calls that do not block
    /// ([`TokenStore::members`], [`TokenStore::prefix`], ...) or for a
    /// thread of the host's own.
    pub fn sync(&self) -> &TokenStore {
        &self.store
    }

    /// Runs `f` on the synchronous face on tokio's blocking threads and
    /// waits for its answer: the one helper every call of this face goes
    /// through, public so that a host can run several calls in one hop
    /// (e.g. [`TokenStore::verify_refresh`] then a check of its own, then
    /// [`TokenStore::exchange`]).
    ///
    /// **Blocks** a blocking thread (never an async worker) for as long as
    /// `f` runs.
    ///
    /// # Errors
    /// What `f` returns. [`Error::Unavailable`] (through `E: From<Error>`)
    /// if the runtime is shutting down and the closure could not run.
    /// Panics if `f` panics (the panic is resumed here).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tokenvault::Error> {
    /// let store = tokenvault::AsyncTokenStore::temporary().await?;
    /// let n = store.run(|s| Ok::<_, tokenvault::Error>(s.members("acme").len())).await?;
    /// assert_eq!(n, 0);
    /// # Ok(()) }
    /// ```
    pub async fn run<T, E, F>(&self, f: F) -> std::result::Result<T, E>
    where
        F: FnOnce(&TokenStore) -> std::result::Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<Error> + Send + 'static,
    {
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || f(&store)).await {
            Ok(r) => r,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(E::from(Error::Unavailable(
                "the async runtime is shutting down; the call did not run".into(),
            ))),
        }
    }

    /// [`TokenStore::open`] on a blocking thread.
    ///
    /// **Blocks** a blocking thread while the store loads: about 0.9 s per
    /// million tokens after a [`close`](Self::close) (perf report,
    /// `open_to_verify_ms`), 2–3 s per million after a drop without one;
    /// waits up to two seconds more for a store this process is letting go
    /// of.
    ///
    /// # Errors
    /// As [`Config::open`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let store =
    /// tokenvault::AsyncTokenStore::open(dir.path().join("tokens.db")).await?;
    /// store.close().await?;
    /// # Ok(()) }
    /// ```
    pub async fn open(path: impl Into<PathBuf>) -> Result<AsyncTokenStore> {
        Self::open_config(Config::new(path.into())).await
    }

    /// [`Config::open`] on a blocking thread; blocks as
    /// [`AsyncTokenStore::open`].
    ///
    /// # Errors
    /// As [`Config::open`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let cfg = tokenvault::Config::new(dir.path().join("tokens.db")).prefix("acme");
    /// let store = tokenvault::AsyncTokenStore::open_config(cfg).await?;
    /// assert_eq!(store.prefix(), "acme");
    /// # Ok(()) }
    /// ```
    pub async fn open_config(cfg: Config) -> Result<AsyncTokenStore> {
        let opened = tokio::task::spawn_blocking(move || cfg.open()).await;
        match opened {
            Ok(r) => r.map(AsyncTokenStore::from),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(Error::Unavailable(
                "the async runtime is shutting down; the store was not opened".into(),
            )),
        }
    }

    /// [`TokenStore::temporary`] on a blocking thread (a few milliseconds:
    /// it creates a directory and sled's files).
    ///
    /// # Errors
    /// [`Error::Io`] if the temporary files cannot be created.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tokenvault::Error> {
    /// let store = tokenvault::AsyncTokenStore::temporary().await?;
    /// assert_eq!(store.prefix(), "tv");
    /// # Ok(()) }
    /// ```
    pub async fn temporary() -> Result<AsyncTokenStore> {
        Self::open_config(Config::temporary()).await
    }

    /// The token prefix of this store. Does not block.
    pub fn prefix(&self) -> &str {
        self.store.prefix()
    }

    /// The role → scopes policy of this store. Does not block.
    pub fn policy(&self) -> &Policy {
        self.store.policy()
    }

    /// [`TokenStore::close`] on a blocking thread: the report says whether
    /// this was the last handle (checkpoint, warm-start files) or how many
    /// handles remain.
    ///
    /// **Blocks** a blocking thread: on the last handle about 4 s per
    /// million tokens (perf report, `close_ms`), milliseconds for a small
    /// store; otherwise one flush.
    ///
    /// # Errors
    /// As [`TokenStore::close`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let store =
    /// tokenvault::AsyncTokenStore::open(dir.path().join("tokens.db")).await?;
    /// let report = store.close().await?;
    /// assert!(report.last_handle && report.checkpoint);
    /// # Ok(()) }
    /// ```
    pub async fn close(self) -> Result<CloseReport> {
        let AsyncTokenStore { store } = self;
        let closed = tokio::task::spawn_blocking(move || store.close()).await;
        match closed {
            Ok(r) => r,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(Error::Unavailable(
                "the async runtime is shutting down; the store was not closed".into(),
            )),
        }
    }

    /// [`TokenStore::close_timeout`] without holding a thread while it
    /// waits: waits up to `timeout` (on tokio's timer) for the other handles
    /// of the store to go (a server's connections, calls still running),
    /// then closes as [`AsyncTokenStore::close`]. The report says how many
    /// handles remained if the time ran out.
    ///
    /// **Blocks** no async worker; the close itself blocks a blocking
    /// thread as [`AsyncTokenStore::close`].
    ///
    /// # Errors
    /// As [`TokenStore::close`].
    ///
    /// ```
    /// use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let store =
    /// tokenvault::AsyncTokenStore::open(dir.path().join("tokens.db")).await?;
    /// let busy = store.clone();
    /// tokio::spawn(async move {
    ///     tokio::time::sleep(Duration::from_millis(20)).await;
    ///     drop(busy);
    /// });
    /// let report = store.close_timeout(Duration::from_secs(30)).await?;
    /// assert!(report.last_handle);
    /// # Ok(()) }
    /// ```
    pub async fn close_timeout(self, timeout: Duration) -> Result<CloseReport> {
        let waited = tokio::time::timeout(timeout, async {
            let mut pause = Duration::from_millis(1);
            while self.store.handles() > 1 {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_POLL);
            }
        })
        .await;
        // Out of time: close says how many handles remain.
        let _ = waited;
        self.close().await
    }
}
