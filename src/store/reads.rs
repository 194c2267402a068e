//! Reading and editing one token by id, and the lists and the audit trail
//! a page at a time.

use super::*;

/// Where a page of a list or of the audit trail starts, and how long it
/// is: the items after the cursor `after` (from the first when `None`), at
/// most `limit` of them (all the rest when `None`).
///
/// The cursor is the last item of the page before: its [`TokenInfo::id`]
/// for the token lists ([`TokenStore::list_own_page`],
/// [`TokenStore::list_org_page`]), its [`AuditEvent::seq`] for the audit
/// trail ([`TokenStore::audit_page`]). [`Paged::next`] hands it over.
///
/// ```
/// use tokenvault::{Page, TokenId};
/// let first: Page<TokenId> = Page::new().limit(20);
/// assert_eq!(first.limit, Some(20));
/// assert_eq!(first.after, None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Page<C> {
    /// The cursor: the page starts after this item.
    pub after: Option<C>,
    /// The most items the page holds.
    pub limit: Option<usize>,
}

impl<C> Default for Page<C> {
    fn default() -> Self {
        Page {
            after: None,
            limit: None,
        }
    }
}

impl<C> Page<C> {
    /// Every item, from the first. Does not block.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts after the item `cursor` (the previous page's [`Paged::next`]).
    /// Does not block.
    pub fn after(mut self, cursor: C) -> Self {
        self.after = Some(cursor);
        self
    }

    /// At most `n` items (at least 1: a page of 0 is refused). Does not
    /// block.
    pub fn limit(mut self, n: usize) -> Self {
        self.limit = Some(n);
        self
    }

    fn check(&self) -> Result<()> {
        if self.limit == Some(0) {
            return Err(Error::InvalidArgument("limit must be positive".into()));
        }
        Ok(())
    }
}

/// One page: its items and, when more follow, the cursor of the next page.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Paged<T, C> {
    /// The page's items, in the order of the unpaginated call.
    pub items: Vec<T>,
    /// The cursor for [`Page::after`] of the next page (the last item's);
    /// `None` when this page ends the list. Always `None` for a page
    /// without a limit.
    pub next: Option<C>,
}

impl<T, C> Paged<T, C> {
    /// Cuts `items` (the page's, with one more beyond it when there is
    /// one) to `limit` and sets the next cursor.
    fn cut(mut items: Vec<T>, limit: Option<usize>, cursor: impl Fn(&T) -> C) -> Self {
        let next = match limit {
            Some(n) if items.len() > n => {
                items.truncate(n);
                items.last().map(cursor)
            }
            _ => None,
        };
        Paged { items, next }
    }
}

impl TokenStore {
    /// One token, by id: its holder or the Owner of its organization may
    /// read it. Never the secret. Blocks for one read of the token's
    /// record (microseconds on sled; a round trip on PostgreSQL).
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown id or a token of another
    /// organization (the two are answered alike); [`Error::Forbidden`] if
    /// the actor is not a member, or neither the holder nor the Owner;
    /// [`Error::Io`] or [`Error::Corrupt`] if storage fails; on a shared
    /// store, [`Error::Unavailable`] when the replica cannot catch up or
    /// its database fails the read (it never answers from stale memory).
    ///
    /// ```
    /// use tokenvault::{Actor, Role, TokenStore};
    /// let store = TokenStore::temporary()?;
    /// store.add_member("acme", "ann", Role::Owner)?;
    /// store.add_member("acme", "bob", Role::User)?;
    /// let bob = Actor::new("acme", "bob");
    /// let t = store.generate(&bob, Default::default())?;
    /// assert_eq!(store.get(&bob, &t.info.id)?.user, "bob");
    /// // The Owner reads it too.
    /// assert_eq!(store.get(&Actor::new("acme", "ann"), &t.info.id)?.id, t.info.id);
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn get(&self, actor: &Actor, id: &TokenId) -> Result<TokenInfo> {
        let inner = &*self.inner;
        // The read gate (see `read.rs`): on a shared store the replica is
        // fresh enough or the call fails closed, and a token another
        // replica issued is read through; then the catalog, caught up.
        let fresh = inner.read_refresh(&id.0)?;
        let cat = inner.lock_catalog_for_read()?;
        let role = inner.actor_role(&cat, actor, "token.get")?;
        let hot = fresh.refresh(&id.0);
        inner.check_holder_or_owner(actor, role, id, hot, "token.get", Action::ListOrg)?;
        let rec = fresh
            .refresh_record(&id.0)?
            .ok_or_else(|| Error::NotFound(format!("no token with id {id}")))?;
        Ok(inner.info_of(rec, inner.now()))
    }

    /// Changes a token's label (`None` removes it): its holder or the
    /// Owner of its organization may, revoked tokens included. The label is
    /// checked as at issue (at most 256 bytes, no control characters).
    /// Audited (`token.label`); durable on return (one fsync, about as
    /// long as a `revoke`). Returns the token as it now stands.
    ///
    /// **Blocks** for one durable write (an fdatasync shared with concurrent
    /// callers: about 0.2–0.4 ms on an idle disk, 1.4 ms measured on a busy
    /// one).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (kind `usage`) for a bad label;
    /// [`Error::NotFound`] for an unknown id or a token of another
    /// organization; [`Error::Forbidden`] if the actor is not a member, or
    /// neither the holder nor the Owner; [`Error::Io`] if storage fails.
    /// Nothing changes on an error.
    ///
    /// ```
    /// use tokenvault::{Actor, Role, TokenStore};
    /// let store = TokenStore::temporary()?;
    /// store.add_member("acme", "ann", Role::Owner)?;
    /// let ann = Actor::new("acme", "ann");
    /// let t = store.generate(&ann, Default::default())?;
    /// let info = store.set_label(&ann, &t.info.id, Some("deploy bot"))?;
    /// assert_eq!(info.label.as_deref(), Some("deploy bot"));
    /// assert!(store.set_label(&ann, &t.info.id, Some("bad\nlabel")).is_err());
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn set_label(&self, actor: &Actor, id: &TokenId, label: Option<&str>) -> Result<TokenInfo> {
        crate::observe::call(
            crate::observe::Call::SetLabel,
            self.set_label_unobserved(actor, id, label),
        )
    }

    fn set_label_unobserved(
        &self,
        actor: &Actor,
        id: &TokenId,
        label: Option<&str>,
    ) -> Result<TokenInfo> {
        if let Some(l) = label {
            check_text("label", l, MAX_LABEL)?;
        }
        let inner = &*self.inner;
        let mut cat = inner.lock_for_write()?;
        let role = inner.actor_role(&cat, actor, "token.label")?;
        inner.find_refresh(&mut cat, &id.0)?;
        let hot = inner.mem.refresh(&id.0);
        inner.check_holder_or_owner(actor, role, id, hot, "token.label", Action::RevokeOther)?;
        let mut rec = inner.record_of(id)?;
        rec.label = label.map(Into::into);
        let changes = vec![
            Change::SetLabel {
                id: id.0,
                label: rec.label.clone(),
            },
            inner.event(
                &actor.org,
                &actor.user,
                "token.label",
                Some(id.to_string()),
                "ok",
            )?,
        ];
        let ticket = inner.commit_apply(&mut cat, &changes)?;
        let info = inner.info_of(rec, inner.now());
        drop(cat);
        inner.sync(ticket)?;
        Ok(info)
    }

    /// [`TokenStore::list_own`] a page at a time: the same tokens in the
    /// same order (oldest first; tokens made in the same second by id),
    /// those after `page.after` (a token id of this list). A token issued
    /// or revoked between two pages moves nothing else: no token that
    /// exists throughout is skipped or shown twice (a new one shows on a
    /// later page if it sorts after the cursor). Blocks as `list_own`
    /// does: it reads the member's records from disk.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (kind `usage`) for a zero limit or a
    /// cursor that is not a token of this list (e.g. one purged since);
    /// otherwise as [`TokenStore::list_own`].
    ///
    /// ```
    /// use tokenvault::{Actor, Page, Role, TokenStore};
    /// let store = TokenStore::temporary()?;
    /// store.add_member("acme", "ann", Role::Owner)?;
    /// let ann = Actor::new("acme", "ann");
    /// for _ in 0..3 {
    ///     store.generate(&ann, Default::default())?;
    /// }
    /// let first = store.list_own_page(&ann, Page::new().limit(2))?;
    /// assert_eq!(first.items.len(), 2);
    /// let cursor = first.next.expect("a third token follows");
    /// let rest = store.list_own_page(&ann, Page::new().after(cursor).limit(2))?;
    /// assert_eq!(rest.items.len(), 1);
    /// assert_eq!(rest.next, None);
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn list_own_page(
        &self,
        actor: &Actor,
        page: Page<TokenId>,
    ) -> Result<Paged<TokenInfo, TokenId>> {
        page.check()?;
        page_of(self.list_own(actor)?, page)
    }

    /// [`TokenStore::list_org`] a page at a time (Owner only), as
    /// [`TokenStore::list_own_page`] pages the member's own list. Blocks
    /// as `list_org` does: it reads the organization's records from disk.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (kind `usage`) for a zero limit or a
    /// cursor that is not a token of the organization; otherwise as
    /// [`TokenStore::list_org`].
    ///
    /// ```
    /// use tokenvault::{Actor, Page, Role, TokenStore};
    /// let store = TokenStore::temporary()?;
    /// store.add_member("acme", "ann", Role::Owner)?;
    /// let ann = Actor::new("acme", "ann");
    /// store.generate(&ann, Default::default())?;
    /// let page = store.list_org_page(&ann, Page::new().limit(10))?;
    /// assert_eq!((page.items.len(), page.next), (1, None));
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn list_org_page(
        &self,
        actor: &Actor,
        page: Page<TokenId>,
    ) -> Result<Paged<TokenInfo, TokenId>> {
        page.check()?;
        page_of(self.list_org(actor)?, page)
    }

    /// [`TokenStore::audit`] a page at a time (Owner only): newest first,
    /// the events numbered below `page.after` (an [`AuditEvent::seq`]).
    /// Events made between two pages are newer than any shown, so none
    /// already listed moves. Blocks for a read of the page's events from
    /// disk (as `audit`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (kind `usage`) for a zero limit;
    /// otherwise as [`TokenStore::audit`].
    ///
    /// ```
    /// use tokenvault::{Actor, Page, Role, TokenStore};
    /// let store = TokenStore::temporary()?;
    /// store.add_member("acme", "ann", Role::Owner)?;
    /// store.add_member("acme", "bob", Role::User)?;
    /// let ann = Actor::new("acme", "ann");
    /// let newest = store.audit_page(&ann, Page::new().limit(1))?;
    /// assert_eq!(newest.items[0].action, "member.add");
    /// let older = store.audit_page(&ann, Page::new().after(newest.next.unwrap()))?;
    /// assert_eq!(older.items.len(), 1);
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn audit_page(&self, actor: &Actor, page: Page<u64>) -> Result<Paged<AuditEvent, u64>> {
        page.check()?;
        let fetch = page.limit.map_or(usize::MAX, |n| n.saturating_add(1));
        let events = self.audit_before(actor, page.after.unwrap_or(u64::MAX), fetch)?;
        Ok(Paged::cut(events, page.limit, |e| e.seq))
    }
}

/// The page of `list` (a whole token list, in its order) that `page` asks for.
fn page_of(list: Vec<TokenInfo>, page: Page<TokenId>) -> Result<Paged<TokenInfo, TokenId>> {
    let start = match page.after {
        None => 0,
        Some(c) => match list.iter().position(|t| t.id == c) {
            Some(i) => i + 1,
            None => {
                return Err(Error::InvalidArgument(format!(
                    "cursor {c} is not a token of this list"
                )))
            }
        },
    };
    let mut items = list;
    items.drain(..start);
    if let Some(n) = page.limit {
        items.truncate(n.saturating_add(1));
    }
    Ok(Paged::cut(items, page.limit, |t| t.id))
}

impl Inner {
    /// Whether `actor` (of `role`) may act on the token `id` (`hot`, as
    /// memory holds it, if it does): its holder may; another member only
    /// with `other`. A token of another organization is answered as an
    /// unknown one, and not audited.
    pub(super) fn check_holder_or_owner(
        &self,
        actor: &Actor,
        role: Role,
        id: &TokenId,
        hot: Option<RefreshArc>,
        action: &str,
        other: Action,
    ) -> Result<()> {
        let unknown = || Error::NotFound(format!("no token with id {id}"));
        let hot = hot.ok_or_else(unknown)?;
        if *hot.member().org_id() != *actor.org {
            return Err(unknown());
        }
        if *hot.member().user() != *actor.user && !may(role, other) {
            return Err(self.deny(
                actor,
                action,
                Some(id.to_string()),
                "only the holder or the Owner may do this to a token",
            ));
        }
        Ok(())
    }

    /// The stored record of a token memory holds.
    pub(super) fn record_of(&self, id: &TokenId) -> Result<RefreshRecord> {
        self.backend
            .get_refresh(&id.0)?
            .ok_or_else(|| Error::NotFound(format!("no token with id {id}")))
    }
}
