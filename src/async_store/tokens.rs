//! Issuing, exchanging, verifying and revoking tokens.

use crate::{
    AccessGrant, Actor, ClientInfo, GenerateOptions, IssuedToken, Principal, Result, RevokeScope,
    TokenId, TokenInfo,
};

use super::AsyncTokenStore;
#[cfg(doc)]
use crate::{Config, TokenStore};

impl AsyncTokenStore {
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
}
