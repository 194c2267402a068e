//! Membership: members, roles, ownership, a directory sync.

use crate::{Result, Role, SyncReport};

use super::AsyncTokenStore;
#[cfg(doc)]
use crate::TokenStore;

impl AsyncTokenStore {
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

    /// [`TokenStore::member_role`]: memory only. Does not block.
    pub fn member_role(&self, org: &str, user: &str) -> Option<Role> {
        self.store.member_role(org, user)
    }

    /// [`TokenStore::members`]: memory only. Does not block.
    pub fn members(&self, org: &str) -> Vec<(String, Role)> {
        self.store.members(org)
    }
}
