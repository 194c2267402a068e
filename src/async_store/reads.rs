//! Pages of lists and audit, maintenance, statistics and a replica's sync.

use crate::{
    Actor, AuditEvent, IntegrityReport, Page, Paged, PurgeReport, Result, Stats, TokenId, TokenInfo,
};

use super::AsyncTokenStore;
#[cfg(doc)]
use crate::TokenStore;

impl AsyncTokenStore {
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
