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

use crate::{
    AccessGrant, Actor, AuditEvent, ClientInfo, CloseReport, Config, Error, GenerateOptions, Grace,
    IntegrityReport, IssuedToken, OrgPolicy, Page, Paged, Policy, Principal, PurgeReport, Result,
    RevokeScope, Role, Rotated, Stats, SyncReport, TokenId, TokenInfo, TokenStore,
};

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

    /// [`TokenStore::generate`] on a blocking thread.
    ///
    /// **Blocks** a blocking thread for one durable commit (an fdatasync):
    /// about 0.2 ms median on this project's machine (perf report,
    /// `durable_issue_ns`), a few ms at p99 on a busy disk.
    ///
    /// # Errors
    /// As [`TokenStore::generate`].
    ///
    /// ```
    /// use tokenvault::{Actor, AsyncTokenStore, Role};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tokenvault::Error> {
    /// let store = AsyncTokenStore::temporary().await?;
    /// store.add_member("acme", "ann", Role::Owner).await?;
    /// let t = store.generate(&Actor::new("acme", "ann"), Default::default()).await?;
    /// assert!(t.token.expose().starts_with("tvr_"));
    /// # Ok(()) }
    /// ```
    pub async fn generate(&self, actor: &Actor, opts: GenerateOptions) -> Result<IssuedToken> {
        let actor = actor.clone();
        self.run(move |s| s.generate(&actor, opts)).await
    }

    /// [`TokenStore::assign`] on a blocking thread; blocks as
    /// [`AsyncTokenStore::generate`] (perf report, `durable_assign_ns`).
    ///
    /// # Errors
    /// As [`TokenStore::assign`].
    ///
    /// ```
    /// use tokenvault::{Actor, AsyncTokenStore, Role};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tokenvault::Error> {
    /// let store = AsyncTokenStore::temporary().await?;
    /// store.add_member("acme", "ann", Role::Owner).await?;
    /// store.add_member("acme", "bob", Role::User).await?;
    /// let t = store.assign(&Actor::new("acme", "ann"), "bob",
    /// Default::default()).await?;
    /// assert_eq!(t.info.user, "bob");
    /// # Ok(()) }
    /// ```
    pub async fn assign(
        &self,
        actor: &Actor,
        user: &str,
        opts: GenerateOptions,
    ) -> Result<IssuedToken> {
        let (actor, user) = (actor.clone(), user.to_owned());
        self.run(move |s| s.assign(&actor, &user, opts)).await
    }

    /// [`TokenStore::list_own`] on a blocking thread.
    ///
    /// **Blocks** a blocking thread while it reads the member's token
    /// records from disk: about 0.2 ms for a member holding 100 tokens (perf
    /// report, `list_own_us`, at 100,000 tokens), more for more tokens.
    ///
    /// # Errors
    /// As [`TokenStore::list_own`].
    ///
    /// ```
    /// use tokenvault::{Actor, AsyncTokenStore, Role};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tokenvault::Error> {
    /// let store = AsyncTokenStore::temporary().await?;
    /// store.add_member("acme", "ann", Role::Owner).await?;
    /// let ann = Actor::new("acme", "ann");
    /// store.generate(&ann, Default::default()).await?;
    /// assert_eq!(store.list_own(&ann).await?.len(), 1);
    /// # Ok(()) }
    /// ```
    pub async fn list_own(&self, actor: &Actor) -> Result<Vec<TokenInfo>> {
        let actor = actor.clone();
        self.run(move |s| s.list_own(&actor)).await
    }

    /// [`TokenStore::list_org`] on a blocking thread; blocks as
    /// [`AsyncTokenStore::list_own`], for every token of the organization.
    ///
    /// # Errors
    /// As [`TokenStore::list_org`].
    ///
    /// ```
    /// use tokenvault::{Actor, AsyncTokenStore, Role};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tokenvault::Error> {
    /// let store = AsyncTokenStore::temporary().await?;
    /// store.add_member("acme", "ann", Role::Owner).await?;
    /// store.add_member("acme", "bob", Role::User).await?;
    /// store.generate(&Actor::new("acme", "bob"), Default::default()).await?;
    /// assert_eq!(store.list_org(&Actor::new("acme", "ann")).await?.len(), 1);
    /// # Ok(()) }
    /// ```
    pub async fn list_org(&self, actor: &Actor) -> Result<Vec<TokenInfo>> {
        let actor = actor.clone();
        self.run(move |s| s.list_org(&actor)).await
    }

    /// [`TokenStore::exchange`] on a blocking thread.
    ///
    /// **Blocks** a blocking thread for one sled insert, lazily durable:
    /// about 15 µs median (perf report, `exchange_ns`); with
    /// [`Config::durable_exchange`], for an fdatasync as
    /// [`AsyncTokenStore::generate`].
    ///
    /// # Errors
    /// As [`TokenStore::exchange`].
    ///
    /// ```
    /// use tokenvault::{Actor, AsyncTokenStore, Role};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tokenvault::Error> {
    /// let store = AsyncTokenStore::temporary().await?;
    /// store.add_member("acme", "ann", Role::Owner).await?;
    /// let t = store.generate(&Actor::new("acme", "ann"), Default::default()).await?;
    /// let grant = store.exchange(t.token.expose()).await?;
    /// assert!(store.verify(grant.access_token.expose()).is_ok());
    /// # Ok(()) }
    /// ```
    pub async fn exchange(&self, refresh_token: &str) -> Result<AccessGrant> {
        let token = crate::SecretToken::from_str_unchecked(refresh_token);
        self.run(move |s| s.exchange(token.expose())).await
    }

    /// [`TokenStore::exchange_with_scopes`] off the async workers: an access
    /// token narrowed to `scopes`. Blocks (on tokio's blocking pool, never
    /// on a worker) as [`AsyncTokenStore::exchange`].
    ///
    /// # Errors
    /// As [`TokenStore::exchange_with_scopes`].
    ///
    /// ```
    /// use tokenvault::{Actor, AsyncTokenStore, Role};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tokenvault::Error> {
    /// let store = AsyncTokenStore::temporary().await?;
    /// store.add_member("acme", "ann", Role::Owner).await?;
    /// let t = store.generate(&Actor::new("acme", "ann"), Default::default()).await?;
    /// let grant = store.exchange_with_scopes(t.token.expose(), &["read"]).await?;
    /// let who = store.verify(grant.access_token.expose())?;
    /// assert!(!who.scopes.contains("org-admin"));
    /// # Ok(()) }
    /// ```
    pub async fn exchange_with_scopes<S: AsRef<str>>(
        &self,
        refresh_token: &str,
        scopes: &[S],
    ) -> Result<AccessGrant> {
        let token = crate::SecretToken::from_str_unchecked(refresh_token);
        let scopes: Vec<String> = scopes.iter().map(|s| s.as_ref().to_string()).collect();
        self.run(move |s| s.exchange_with_scopes(token.expose(), &scopes))
            .await
    }

    /// [`TokenStore::exchange_from`] off the async workers: an exchange
    /// that records its client (address and user agent) as the token's
    /// last use. Blocks (on tokio's blocking pool, never on a worker) as
    /// [`AsyncTokenStore::exchange`].
    ///
    /// # Errors
    /// As [`TokenStore::exchange_from`].
    ///
    /// ```
    /// use tokenvault::{Actor, AsyncTokenStore, ClientInfo, Role};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tokenvault::Error> {
    /// let store = AsyncTokenStore::temporary().await?;
    /// store.add_member("acme", "ann", Role::Owner).await?;
    /// let ann = Actor::new("acme", "ann");
    /// let t = store.generate(&ann, Default::default()).await?;
    /// let client = ClientInfo::new(None, Some("deploy-bot/1.2"));
    /// store.exchange_from::<&str>(t.token.expose(), None, &client).await?;
    /// let listed = store.list_own(&ann).await?;
    /// assert_eq!(listed[0].last_used_agent.as_deref(), Some("deploy-bot/1.2"));
    /// # Ok(()) }
    /// ```
    pub async fn exchange_from<S: AsRef<str>>(
        &self,
        refresh_token: &str,
        scopes: Option<&[S]>,
        client: &ClientInfo,
    ) -> Result<AccessGrant> {
        let token = crate::SecretToken::from_str_unchecked(refresh_token);
        let scopes: Option<Vec<String>> =
            scopes.map(|s| s.iter().map(|s| s.as_ref().to_string()).collect());
        let client = client.clone();
        self.run(move |s| s.exchange_from(token.expose(), scopes.as_deref(), &client))
            .await
    }

    /// [`TokenStore::oauth_refresh`] off the async workers: the refresh of
    /// an OAuth client, which rotates the refresh token when its
    /// organization rotates on use. Blocks (on tokio's blocking pool, never
    /// on a worker) as [`AsyncTokenStore::exchange`], plus one durable
    /// commit (about 0.2–0.4 ms on an idle disk) when it rotates.
    ///
    /// # Errors
    /// As [`TokenStore::oauth_refresh`].
    ///
    /// ```
    /// use tokenvault::{Actor, AsyncTokenStore, OrgPolicy, Role};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tokenvault::Error> {
    /// let store = AsyncTokenStore::temporary().await?;
    /// store.add_member("acme", "ann", Role::Owner).await?;
    /// let ann = Actor::new("acme", "ann");
    /// store.set_org_policy(&ann, OrgPolicy::default().rotate_on_use(true)).await?;
    /// let t = store.generate(&ann, Default::default()).await?;
    /// let g = store.oauth_refresh(t.token.expose(), &[] as &[&str]).await?;
    /// assert!(g.refresh_token.is_some());
    /// assert!(store.verify(g.access.access_token.expose()).is_ok());
    /// # Ok(()) }
    /// ```
    pub async fn oauth_refresh<S: AsRef<str>>(
        &self,
        refresh_token: &str,
        scopes: &[S],
    ) -> Result<crate::OAuthGrant> {
        let token = crate::SecretToken::from_str_unchecked(refresh_token);
        let scopes: Vec<String> = scopes.iter().map(|s| s.as_ref().to_string()).collect();
        self.run(move |s| s.oauth_refresh(token.expose(), &scopes))
            .await
    }

    /// [`TokenStore::verify`]: synchronous, it reads memory only on an
    /// embedded store (about 0.3 µs, perf report `verify_hot_ns`; a first
    /// touch after an open about 1 µs). Does not block on an embedded
    /// store; on a shared (PostgreSQL) store a token the replica does not
    /// hold yet is read through, which blocks: there, use
    /// [`AsyncTokenStore::try_verify`].
    ///
    /// # Errors
    /// As [`TokenStore::verify`].
    ///
    /// ```
    /// use tokenvault::{AsyncTokenStore, Error};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tokenvault::Error> {
    /// let store = AsyncTokenStore::temporary().await?;
    /// assert!(matches!(store.verify("tva_nonsense"), Err(Error::Malformed(_))));
    /// # Ok(()) }
    /// ```
    pub fn verify(&self, access_token: &str) -> Result<Principal> {
        self.store.verify(access_token)
    }

    /// [`TokenStore::try_verify`]: [`AsyncTokenStore::verify`] from memory
    /// alone, `Ok(None)` when a shared (PostgreSQL) store would have to
    /// read the token through first (then `run(|s| s.verify(token))`);
    /// on an embedded store never `None`. Never blocks.
    ///
    /// # Errors
    /// As [`TokenStore::try_verify`].
    ///
    /// ```
    /// use tokenvault::{Actor, AsyncTokenStore, Role};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tokenvault::Error> {
    /// let store = AsyncTokenStore::temporary().await?;
    /// store.add_member("acme", "bob", Role::User).await?;
    /// let t = store.generate(&Actor::new("acme", "bob"), Default::default()).await?;
    /// let access = store.exchange(t.token.expose()).await?.access_token;
    /// let token = access.expose().to_string();
    /// let who = match store.try_verify(&token)? {
    ///     Some(p) => p,
    ///     None => store.run(move |s| s.verify(&token)).await?,
    /// };
    /// assert_eq!(&*who.user, "bob");
    /// # Ok(()) }
    /// ```
    pub fn try_verify(&self, access_token: &str) -> Result<Option<Principal>> {
        self.store.try_verify(access_token)
    }

    /// [`TokenStore::authorize`]: synchronous, as
    /// [`AsyncTokenStore::verify`]. Does not block.
    ///
    /// # Errors
    /// As [`TokenStore::authorize`].
    ///
    /// ```
    /// use tokenvault::{Actor, AsyncTokenStore, Error, Role};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tokenvault::Error> {
    /// let store = AsyncTokenStore::temporary().await?;
    /// store.add_member("acme", "bob", Role::User).await?;
    /// let t = store.generate(&Actor::new("acme", "bob"), Default::default()).await?;
    /// let access = store.exchange(t.token.expose()).await?.access_token;
    /// assert!(matches!(
    ///     store.authorize(access.expose(), "user-write"),
    ///     Err(Error::InsufficientScope(_))
    /// ));
    /// # Ok(()) }
    /// ```
    pub fn authorize(&self, access_token: &str, scope: &str) -> Result<Principal> {
        self.store.authorize(access_token, scope)
    }

    /// [`TokenStore::verify_refresh`] on a blocking thread.
    ///
    /// **Blocks** a blocking thread for one record read from sled: 2 µs at
    /// 100,000 tokens, 17 µs at a million (perf report, `floor_ns`: blake3, a
    /// sled get and a decode).
    ///
    /// # Errors
    /// As [`TokenStore::verify_refresh`].
    ///
    /// ```
    /// use tokenvault::{Actor, AsyncTokenStore, Role};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tokenvault::Error> {
    /// let store = AsyncTokenStore::temporary().await?;
    /// store.add_member("acme", "ann", Role::Owner).await?;
    /// let t = store.generate(&Actor::new("acme", "ann"), Default::default()).await?;
    /// assert_eq!(store.verify_refresh(t.token.expose()).await?.id, t.info.id);
    /// # Ok(()) }
    /// ```
    pub async fn verify_refresh(&self, refresh_token: &str) -> Result<TokenInfo> {
        let token = crate::SecretToken::from_str_unchecked(refresh_token);
        self.run(move |s| s.verify_refresh(token.expose())).await
    }

    /// [`TokenStore::revoke`] on a blocking thread.
    ///
    /// **Blocks** a blocking thread for one durable commit: about 0.26 ms
    /// median for a token with one access token (perf report,
    /// `durable_revoke_ns`), 0.4–1 ms with 10,000 live access tokens
    /// (`revoke_10k_ms`), 4–71 ms at p99 while another thread exchanges flat
    /// out (`revoke_p99_under_load_ms`, 1,000,000 and 100,000 tokens, the
    /// latter at load 10).
    ///
    /// # Errors
    /// As [`TokenStore::revoke`].
    ///
    /// ```
    /// use tokenvault::{Actor, AsyncTokenStore, Role};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tokenvault::Error> {
    /// let store = AsyncTokenStore::temporary().await?;
    /// store.add_member("acme", "ann", Role::Owner).await?;
    /// let ann = Actor::new("acme", "ann");
    /// let t = store.generate(&ann, Default::default()).await?;
    /// store.revoke(&ann, &t.info.id, Some("rotated")).await?;
    /// assert!(store.verify_refresh(t.token.expose()).await.is_err());
    /// # Ok(()) }
    /// ```
    pub async fn revoke(&self, actor: &Actor, id: &TokenId, reason: Option<&str>) -> Result<()> {
        let (actor, id, reason) = (actor.clone(), *id, reason.map(str::to_owned));
        self.run(move |s| s.revoke(&actor, &id, reason.as_deref()))
            .await
    }

    /// The HTTP front's revocation by id: another organization's token is
    /// answered as an unknown id.
    #[cfg(feature = "http")]
    pub(crate) async fn revoke_in_own_org(&self, actor: &Actor, id: &TokenId) -> Result<()> {
        let (actor, id) = (actor.clone(), *id);
        self.run(move |s| s.revoke_in_own_org(&actor, &id)).await
    }

    /// [`TokenStore::revoke_refresh`] on a blocking thread; blocks as
    /// [`AsyncTokenStore::revoke`].
    ///
    /// # Errors
    /// As [`TokenStore::revoke_refresh`].
    ///
    /// ```
    /// use tokenvault::{Actor, AsyncTokenStore, Role};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tokenvault::Error> {
    /// let store = AsyncTokenStore::temporary().await?;
    /// store.add_member("acme", "ann", Role::Owner).await?;
    /// let t = store.generate(&Actor::new("acme", "ann"), Default::default()).await?;
    /// store.revoke_refresh(t.token.expose(), Some("leaked")).await?;
    /// assert!(store.verify_refresh(t.token.expose()).await.is_err());
    /// # Ok(()) }
    /// ```
    pub async fn revoke_refresh(&self, refresh_token: &str, reason: Option<&str>) -> Result<()> {
        let token = crate::SecretToken::from_str_unchecked(refresh_token);
        let reason = reason.map(str::to_owned);
        self.run(move |s| s.revoke_refresh(token.expose(), reason.as_deref()))
            .await
    }

    /// [`TokenStore::revoke_all`] on a blocking thread.
    ///
    /// **Blocks** a blocking thread for one durable commit over every token
    /// covered: about 0.8 ms for a member's 100 tokens (perf report,
    /// `revoke_all_member_ms`), longer for a large organization.
    ///
    /// # Errors
    /// As [`TokenStore::revoke_all`].
    ///
    /// ```
    /// use tokenvault::{Actor, AsyncTokenStore, RevokeScope, Role};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tokenvault::Error> {
    /// let store = AsyncTokenStore::temporary().await?;
    /// store.add_member("acme", "ann", Role::Owner).await?;
    /// let ann = Actor::new("acme", "ann");
    /// store.generate(&ann, Default::default()).await?;
    /// assert_eq!(store.revoke_all(&ann, RevokeScope::Org, None).await?, 1);
    /// # Ok(()) }
    /// ```
    pub async fn revoke_all(
        &self,
        actor: &Actor,
        scope: RevokeScope,
        before: Option<u64>,
    ) -> Result<usize> {
        let actor = actor.clone();
        self.run(move |s| s.revoke_all(&actor, scope, before)).await
    }

    /// [`TokenStore::revoke_access`] on a blocking thread; blocks as
    /// [`AsyncTokenStore::revoke`].
    ///
    /// # Errors
    /// As [`TokenStore::revoke_access`].
    ///
    /// ```
    /// use tokenvault::{Actor, AsyncTokenStore, Role};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tokenvault::Error> {
    /// let store = AsyncTokenStore::temporary().await?;
    /// store.add_member("acme", "ann", Role::Owner).await?;
    /// let t = store.generate(&Actor::new("acme", "ann"), Default::default()).await?;
    /// let access = store.exchange(t.token.expose()).await?.access_token;
    /// store.revoke_access(access.expose()).await?;
    /// assert!(store.verify(access.expose()).is_err());
    /// # Ok(()) }
    /// ```
    pub async fn revoke_access(&self, access_token: &str) -> Result<()> {
        let token = crate::SecretToken::from_str_unchecked(access_token);
        self.run(move |s| s.revoke_access(token.expose())).await
    }

    /// [`TokenStore::add_member`] on a blocking thread.
    ///
    /// **Blocks** a blocking thread for one durable commit, as
    /// [`AsyncTokenStore::generate`] (about 0.2 ms median; a few ms at
    /// p99 on a busy disk; not timed separately by the perf report).
    ///
    /// # Errors
    /// As [`TokenStore::add_member`].
    ///
    /// ```
    /// use tokenvault::{AsyncTokenStore, Role};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tokenvault::Error> {
    /// let store = AsyncTokenStore::temporary().await?;
    /// store.add_member("acme", "ann", Role::Owner).await?;
    /// assert_eq!(store.member_role("acme", "ann"), Some(Role::Owner));
    /// # Ok(()) }
    /// ```
    pub async fn add_member(&self, org: &str, user: &str, role: Role) -> Result<()> {
        let (org, user) = (org.to_owned(), user.to_owned());
        self.run(move |s| s.add_member(&org, &user, role)).await
    }

    /// [`TokenStore::set_role`] on a blocking thread; blocks as
    /// [`AsyncTokenStore::add_member`].
    ///
    /// # Errors
    /// As [`TokenStore::set_role`].
    ///
    /// ```
    /// use tokenvault::{AsyncTokenStore, Role};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tokenvault::Error> {
    /// let store = AsyncTokenStore::temporary().await?;
    /// store.add_member("acme", "ann", Role::Owner).await?;
    /// store.add_member("acme", "bob", Role::User).await?;
    /// store.set_role("acme", "bob", Role::Admin).await?;
    /// assert_eq!(store.member_role("acme", "bob"), Some(Role::Admin));
    /// # Ok(()) }
    /// ```
    pub async fn set_role(&self, org: &str, user: &str, role: Role) -> Result<()> {
        let (org, user) = (org.to_owned(), user.to_owned());
        self.run(move |s| s.set_role(&org, &user, role)).await
    }

    /// [`TokenStore::transfer_ownership`] on a blocking thread; blocks as
    /// [`AsyncTokenStore::add_member`].
    ///
    /// # Errors
    /// As [`TokenStore::transfer_ownership`].
    ///
    /// ```
    /// use tokenvault::{AsyncTokenStore, Role};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tokenvault::Error> {
    /// let store = AsyncTokenStore::temporary().await?;
    /// store.add_member("acme", "ann", Role::Owner).await?;
    /// store.add_member("acme", "bob", Role::Admin).await?;
    /// store.transfer_ownership("acme", "bob").await?;
    /// assert_eq!(store.member_role("acme", "bob"), Some(Role::Owner));
    /// # Ok(()) }
    /// ```
    pub async fn transfer_ownership(&self, org: &str, new_owner: &str) -> Result<()> {
        let (org, new_owner) = (org.to_owned(), new_owner.to_owned());
        self.run(move |s| s.transfer_ownership(&org, &new_owner))
            .await
    }

    /// [`TokenStore::remove_member`] on a blocking thread.
    ///
    /// **Blocks** a blocking thread for one durable commit that also
    /// revokes the member's tokens: as [`AsyncTokenStore::revoke_all`] for
    /// one member.
    ///
    /// # Errors
    /// As [`TokenStore::remove_member`].
    ///
    /// ```
    /// use tokenvault::{Actor, AsyncTokenStore, Role};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tokenvault::Error> {
    /// let store = AsyncTokenStore::temporary().await?;
    /// store.add_member("acme", "ann", Role::Owner).await?;
    /// store.add_member("acme", "bob", Role::User).await?;
    /// store.generate(&Actor::new("acme", "bob"), Default::default()).await?;
    /// assert_eq!(store.remove_member("acme", "bob").await?, 1);
    /// # Ok(()) }
    /// ```
    pub async fn remove_member(&self, org: &str, user: &str) -> Result<usize> {
        let (org, user) = (org.to_owned(), user.to_owned());
        self.run(move |s| s.remove_member(&org, &user)).await
    }

    /// [`TokenStore::sync_org`] on a blocking thread (the list is
    /// collected first).
    ///
    /// **Blocks** a blocking thread for one durable commit under the
    /// membership catalog's exclusive lock: about as long as
    /// [`AsyncTokenStore::add_member`] (an fdatasync, a few ms at p99),
    /// plus the work of revoking the tokens of members it removes.
    ///
    /// # Errors
    /// As [`TokenStore::sync_org`].
    ///
    /// ```
    /// use tokenvault::{AsyncTokenStore, Role};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tokenvault::Error> {
    /// let store = AsyncTokenStore::temporary().await?;
    /// let report = store.sync_org("acme", [("ann", Role::Owner), ("bob", Role::User)]).await?;
    /// assert_eq!(report.added.len(), 2);
    /// # Ok(()) }
    /// ```
    pub async fn sync_org<I, U>(&self, org: &str, members: I) -> Result<SyncReport>
    where
        I: IntoIterator<Item = (U, Role)>,
        U: AsRef<str>,
    {
        let org = org.to_owned();
        let members: Vec<(String, Role)> = members
            .into_iter()
            .map(|(u, r)| (u.as_ref().to_owned(), r))
            .collect();
        self.run(move |s| s.sync_org(&org, members)).await
    }

    /// [`TokenStore::get`] on a blocking thread.
    ///
    /// **Blocks** a blocking thread for one read of the token's record
    /// (microseconds on sled; a database round trip on PostgreSQL).
    ///
    /// # Errors
    /// As [`TokenStore::get`].
    ///
    /// ```
    /// use tokenvault::{Actor, AsyncTokenStore, Role};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tokenvault::Error> {
    /// let store = AsyncTokenStore::temporary().await?;
    /// store.add_member("acme", "ann", Role::Owner).await?;
    /// let ann = Actor::new("acme", "ann");
    /// let t = store.generate(&ann, Default::default()).await?;
    /// assert_eq!(store.get(&ann, &t.info.id).await?.id, t.info.id);
    /// # Ok(()) }
    /// ```
    pub async fn get(&self, actor: &Actor, id: &TokenId) -> Result<TokenInfo> {
        let (actor, id) = (actor.clone(), *id);
        self.run(move |s| s.get(&actor, &id)).await
    }

    /// [`TokenStore::assign_pending`] on a blocking thread.
    ///
    /// **Blocks** a blocking thread for one durable commit, as
    /// [`AsyncTokenStore::assign`].
    ///
    /// # Errors
    /// As [`TokenStore::assign_pending`].
    ///
    /// ```
    /// use tokenvault::{Actor, AsyncTokenStore, Role, TokenState};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tokenvault::Error> {
    /// let store = AsyncTokenStore::temporary().await?;
    /// store.add_member("acme", "ann", Role::Owner).await?;
    /// store.add_member("acme", "bob", Role::User).await?;
    /// let ann = Actor::new("acme", "ann");
    /// let info = store.assign_pending(&ann, "bob", Default::default()).await?;
    /// assert_eq!(info.state, TokenState::Pending);
    /// let t = store.claim(&Actor::new("acme", "bob"), &info.id).await?;
    /// assert_eq!(t.info.state, TokenState::Active);
    /// # Ok(()) }
    /// ```
    pub async fn assign_pending(
        &self,
        actor: &Actor,
        user: &str,
        opts: GenerateOptions,
    ) -> Result<TokenInfo> {
        let (actor, user) = (actor.clone(), user.to_string());
        self.run(move |s| s.assign_pending(&actor, &user, opts))
            .await
    }

    /// [`TokenStore::claim`] on a blocking thread.
    ///
    /// **Blocks** a blocking thread for one durable commit, as
    /// [`AsyncTokenStore::generate`].
    ///
    /// # Errors
    /// As [`TokenStore::claim`].
    ///
    /// ```
    /// use tokenvault::{Actor, AsyncTokenStore, Role};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tokenvault::Error> {
    /// let store = AsyncTokenStore::temporary().await?;
    /// store.add_member("acme", "ann", Role::Owner).await?;
    /// store.add_member("acme", "bob", Role::User).await?;
    /// let ann = Actor::new("acme", "ann");
    /// let info = store.assign_pending(&ann, "bob", Default::default()).await?;
    /// let t = store.claim(&Actor::new("acme", "bob"), &info.id).await?;
    /// assert!(store.exchange(t.token.expose()).await.is_ok());
    /// # Ok(()) }
    /// ```
    pub async fn claim(&self, actor: &Actor, id: &TokenId) -> Result<IssuedToken> {
        let (actor, id) = (actor.clone(), *id);
        self.run(move |s| s.claim(&actor, &id)).await
    }

    /// [`TokenStore::rotate`] on a blocking thread.
    ///
    /// **Blocks** a blocking thread for one durable commit, as
    /// [`AsyncTokenStore::generate`] (an fdatasync: about 0.2–0.4 ms on an
    /// idle disk).
    ///
    /// # Errors
    /// As [`TokenStore::rotate`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use tokenvault::{Actor, AsyncTokenStore, Role};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tokenvault::Error> {
    /// let store = AsyncTokenStore::temporary().await?;
    /// store.add_member("acme", "ann", Role::Owner).await?;
    /// let ann = Actor::new("acme", "ann");
    /// let t = store.generate(&ann, Default::default()).await?;
    /// let r = store.rotate(&ann, &t.info.id, Duration::from_secs(60)).await?;
    /// assert_eq!(r.replaces, t.info.id);
    /// # Ok(()) }
    /// ```
    pub async fn rotate(
        &self,
        actor: &Actor,
        id: &TokenId,
        grace: impl Into<Grace>,
    ) -> Result<Rotated> {
        let (actor, id, grace) = (actor.clone(), *id, grace.into());
        self.run(move |s| s.rotate(&actor, &id, grace)).await
    }

    /// [`TokenStore::disable`] on a blocking thread.
    ///
    /// **Blocks** a blocking thread for one durable commit, as
    /// [`AsyncTokenStore::revoke`].
    ///
    /// # Errors
    /// As [`TokenStore::disable`].
    ///
    /// ```
    /// use tokenvault::{Actor, AsyncTokenStore, Role, TokenState};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tokenvault::Error> {
    /// let store = AsyncTokenStore::temporary().await?;
    /// store.add_member("acme", "ann", Role::Owner).await?;
    /// let ann = Actor::new("acme", "ann");
    /// let t = store.generate(&ann, Default::default()).await?;
    /// assert_eq!(store.disable(&ann, &t.info.id).await?.state, TokenState::Disabled);
    /// assert_eq!(store.enable(&ann, &t.info.id).await?.state, TokenState::Active);
    /// # Ok(()) }
    /// ```
    pub async fn disable(&self, actor: &Actor, id: &TokenId) -> Result<TokenInfo> {
        let (actor, id) = (actor.clone(), *id);
        self.run(move |s| s.disable(&actor, &id)).await
    }

    /// [`TokenStore::enable`] on a blocking thread.
    ///
    /// **Blocks** a blocking thread for one durable commit, as
    /// [`AsyncTokenStore::revoke`].
    ///
    /// # Errors
    /// As [`TokenStore::enable`].
    ///
    /// ```
    /// use tokenvault::{Actor, AsyncTokenStore, Role, TokenState};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tokenvault::Error> {
    /// let store = AsyncTokenStore::temporary().await?;
    /// store.add_member("acme", "ann", Role::Owner).await?;
    /// let ann = Actor::new("acme", "ann");
    /// let t = store.generate(&ann, Default::default()).await?;
    /// store.disable(&ann, &t.info.id).await?;
    /// assert_eq!(store.enable(&ann, &t.info.id).await?.state, TokenState::Active);
    /// # Ok(()) }
    /// ```
    pub async fn enable(&self, actor: &Actor, id: &TokenId) -> Result<TokenInfo> {
        let (actor, id) = (actor.clone(), *id);
        self.run(move |s| s.enable(&actor, &id)).await
    }

    /// [`TokenStore::org_policy`] on a blocking thread (it reads memory;
    /// on a shared store it may first catch up with the change log).
    ///
    /// # Errors
    /// As [`TokenStore::org_policy`].
    ///
    /// ```
    /// use tokenvault::{Actor, AsyncTokenStore, OrgPolicy, Role};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tokenvault::Error> {
    /// let store = AsyncTokenStore::temporary().await?;
    /// store.add_member("acme", "ann", Role::Owner).await?;
    /// let ann = Actor::new("acme", "ann");
    /// assert_eq!(store.org_policy(&ann).await?, OrgPolicy::default());
    /// # Ok(()) }
    /// ```
    pub async fn org_policy(&self, actor: &Actor) -> Result<OrgPolicy> {
        let actor = actor.clone();
        self.run(move |s| s.org_policy(&actor)).await
    }

    /// [`TokenStore::set_org_policy`] on a blocking thread.
    ///
    /// **Blocks** a blocking thread for one durable commit, as
    /// [`AsyncTokenStore::revoke`].
    ///
    /// # Errors
    /// As [`TokenStore::set_org_policy`].
    ///
    /// ```
    /// use tokenvault::{Actor, AsyncTokenStore, OrgPolicy, Role};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tokenvault::Error> {
    /// let store = AsyncTokenStore::temporary().await?;
    /// store.add_member("acme", "ann", Role::Owner).await?;
    /// let ann = Actor::new("acme", "ann");
    /// let p = OrgPolicy::default().unused_expiry(Some(90 * 86_400));
    /// assert_eq!(store.set_org_policy(&ann, p).await?, p);
    /// # Ok(()) }
    /// ```
    pub async fn set_org_policy(&self, actor: &Actor, policy: OrgPolicy) -> Result<OrgPolicy> {
        let actor = actor.clone();
        self.run(move |s| s.set_org_policy(&actor, policy)).await
    }

    /// [`TokenStore::set_label`] on a blocking thread.
    ///
    /// **Blocks** a blocking thread for one durable commit: about as long
    /// as [`AsyncTokenStore::revoke`] (an fdatasync).
    ///
    /// # Errors
    /// As [`TokenStore::set_label`].
    ///
    /// ```
    /// use tokenvault::{Actor, AsyncTokenStore, Role};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tokenvault::Error> {
    /// let store = AsyncTokenStore::temporary().await?;
    /// store.add_member("acme", "ann", Role::Owner).await?;
    /// let ann = Actor::new("acme", "ann");
    /// let t = store.generate(&ann, Default::default()).await?;
    /// let info = store.set_label(&ann, &t.info.id, Some("ci")).await?;
    /// assert_eq!(info.label.as_deref(), Some("ci"));
    /// # Ok(()) }
    /// ```
    pub async fn set_label(
        &self,
        actor: &Actor,
        id: &TokenId,
        label: Option<&str>,
    ) -> Result<TokenInfo> {
        let (actor, id, label) = (actor.clone(), *id, label.map(str::to_owned));
        self.run(move |s| s.set_label(&actor, &id, label.as_deref()))
            .await
    }

    /// [`TokenStore::list_own_page`] on a blocking thread; blocks as
    /// [`AsyncTokenStore::list_own`].
    ///
    /// # Errors
    /// As [`TokenStore::list_own_page`].
    ///
    /// ```
    /// use tokenvault::{Actor, AsyncTokenStore, Page, Role};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tokenvault::Error> {
    /// let store = AsyncTokenStore::temporary().await?;
    /// store.add_member("acme", "ann", Role::Owner).await?;
    /// let ann = Actor::new("acme", "ann");
    /// store.generate(&ann, Default::default()).await?;
    /// let page = store.list_own_page(&ann, Page::new().limit(10)).await?;
    /// assert_eq!((page.items.len(), page.next), (1, None));
    /// # Ok(()) }
    /// ```
    pub async fn list_own_page(
        &self,
        actor: &Actor,
        page: Page<TokenId>,
    ) -> Result<Paged<TokenInfo, TokenId>> {
        let actor = actor.clone();
        self.run(move |s| s.list_own_page(&actor, page)).await
    }

    /// [`TokenStore::list_org_page`] on a blocking thread; blocks as
    /// [`AsyncTokenStore::list_org`].
    ///
    /// # Errors
    /// As [`TokenStore::list_org_page`].
    ///
    /// ```
    /// use tokenvault::{Actor, AsyncTokenStore, Page, Role};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tokenvault::Error> {
    /// let store = AsyncTokenStore::temporary().await?;
    /// store.add_member("acme", "ann", Role::Owner).await?;
    /// let ann = Actor::new("acme", "ann");
    /// store.generate(&ann, Default::default()).await?;
    /// let page = store.list_org_page(&ann, Page::new().limit(10)).await?;
    /// assert_eq!(page.items.len(), 1);
    /// # Ok(()) }
    /// ```
    pub async fn list_org_page(
        &self,
        actor: &Actor,
        page: Page<TokenId>,
    ) -> Result<Paged<TokenInfo, TokenId>> {
        let actor = actor.clone();
        self.run(move |s| s.list_org_page(&actor, page)).await
    }

    /// [`TokenStore::audit_page`] on a blocking thread; blocks as
    /// [`AsyncTokenStore::audit`], for the page's events.
    ///
    /// # Errors
    /// As [`TokenStore::audit_page`].
    ///
    /// ```
    /// use tokenvault::{Actor, AsyncTokenStore, Page, Role};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tokenvault::Error> {
    /// let store = AsyncTokenStore::temporary().await?;
    /// store.add_member("acme", "ann", Role::Owner).await?;
    /// let page = store.audit_page(&Actor::new("acme", "ann"), Page::new().limit(1)).await?;
    /// assert_eq!(page.items[0].action, "member.add");
    /// # Ok(()) }
    /// ```
    pub async fn audit_page(
        &self,
        actor: &Actor,
        page: Page<u64>,
    ) -> Result<Paged<AuditEvent, u64>> {
        let actor = actor.clone();
        self.run(move |s| s.audit_page(&actor, page)).await
    }

    /// [`TokenStore::member_role`]: memory only. Does not block.
    pub fn member_role(&self, org: &str, user: &str) -> Option<Role> {
        self.store.member_role(org, user)
    }

    /// [`TokenStore::members`]: memory only. Does not block.
    pub fn members(&self, org: &str) -> Vec<(String, Role)> {
        self.store.members(org)
    }

    /// [`TokenStore::audit`] on a blocking thread.
    ///
    /// **Blocks** a blocking thread while it reads up to `limit` events
    /// from disk (a sled scan of the organization's events: tens of µs for
    /// a few events, about as long per event as a list per token; not timed
    /// separately by the perf report).
    ///
    /// # Errors
    /// As [`TokenStore::audit`].
    ///
    /// ```
    /// use tokenvault::{Actor, AsyncTokenStore, Role};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tokenvault::Error> {
    /// let store = AsyncTokenStore::temporary().await?;
    /// store.add_member("acme", "ann", Role::Owner).await?;
    /// let events = store.audit(&Actor::new("acme", "ann"), 10).await?;
    /// assert_eq!(events[0].action, "member.add");
    /// # Ok(()) }
    /// ```
    pub async fn audit(&self, actor: &Actor, limit: usize) -> Result<Vec<AuditEvent>> {
        let actor = actor.clone();
        self.run(move |s| s.audit(&actor, limit)).await
    }

    /// [`TokenStore::purge_expired`] on a blocking thread.
    ///
    /// **Blocks** a blocking thread while it removes up to `limit` records
    /// in one durable commit (perf report, `purge_ms`: about 2 s for every
    /// batch of a 100,000-token store).
    ///
    /// # Errors
    /// As [`TokenStore::purge_expired`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tokenvault::Error> {
    /// let store = tokenvault::AsyncTokenStore::temporary().await?;
    /// assert!(!store.purge_expired(1_000).await?.more);
    /// # Ok(()) }
    /// ```
    pub async fn purge_expired(&self, limit: usize) -> Result<PurgeReport> {
        self.run(move |s| s.purge_expired(limit)).await
    }

    /// [`TokenStore::check_integrity`] on a blocking thread.
    ///
    /// **Blocks** a blocking thread while it reads every record: about as
    /// long as sled's own scan, 2–3 s per million tokens (perf report,
    /// `sled_scan_ms`). Management calls wait for it meanwhile.
    ///
    /// # Errors
    /// As [`TokenStore::check_integrity`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tokenvault::Error> {
    /// let store = tokenvault::AsyncTokenStore::temporary().await?;
    /// assert!(store.check_integrity().await?.is_clean());
    /// # Ok(()) }
    /// ```
    pub async fn check_integrity(&self) -> Result<IntegrityReport> {
        self.run(|s| s.check_integrity()).await
    }

    /// [`TokenStore::stats`] on a blocking thread.
    ///
    /// **Blocks** a blocking thread while it counts tokens in memory and
    /// sizes the files on disk (milliseconds per hundred thousand tokens).
    ///
    /// # Errors
    /// As [`TokenStore::stats`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tokenvault::Error> {
    /// let store = tokenvault::AsyncTokenStore::temporary().await?;
    /// assert_eq!(store.stats().await?.active, 0);
    /// # Ok(()) }
    /// ```
    pub async fn stats(&self) -> Result<Stats> {
        self.run(|s| s.stats()).await
    }

    /// [`TokenStore::flush`] on a blocking thread.
    ///
    /// **Blocks** a blocking thread for one flush and fdatasync: about
    /// 0.1–0.3 ms (perf report, `sled_insert_flush_sync_ns` less the
    /// insert), more on a busy disk.
    ///
    /// # Errors
    /// As [`TokenStore::flush`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tokenvault::Error> {
    /// tokenvault::AsyncTokenStore::temporary().await?.flush().await?;
    /// # Ok(()) }
    /// ```
    pub async fn flush(&self) -> Result<()> {
        self.run(|s| s.flush()).await
    }

    /// [`TokenStore::sync_status`]: memory only. Does not block.
    #[cfg(feature = "postgres")]
    pub fn sync_status(&self) -> Option<crate::SyncStatus> {
        self.store.sync_status()
    }

    /// [`TokenStore::catch_up`] on a blocking thread.
    ///
    /// **Blocks** a blocking thread for PostgreSQL round trips (one read of
    /// the change log since this replica's position); nothing for an
    /// embedded store.
    ///
    /// # Errors
    /// As [`TokenStore::catch_up`].
    ///
    /// ```no_run
    /// use tokenvault::{AsyncTokenStore, Config, StoreKey};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tokenvault::Error> {
    /// let cfg = Config::postgres("host=/run/postgresql dbname=tokens")
    ///     .key(StoreKey::from_bytes([7; 32]));
    /// let store = AsyncTokenStore::open_config(cfg).await?;
    /// store.catch_up().await?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "postgres")]
    pub async fn catch_up(&self) -> Result<()> {
        self.run(|s| s.catch_up()).await
    }
}
