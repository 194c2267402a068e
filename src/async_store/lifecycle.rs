//! The token lifecycle: pending assignment, claim, rotation, suspension, the organization's policy, labels.

use crate::{
    Actor, GenerateOptions, Grace, IssuedToken, OrgPolicy, Result, Rotated, TokenId, TokenInfo,
};

use super::AsyncTokenStore;
#[cfg(doc)]
use crate::TokenStore;

impl AsyncTokenStore {
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
}
