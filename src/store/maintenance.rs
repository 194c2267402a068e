//! The audit trail, growth (purge), integrity, statistics and flushing.

use super::*;

impl TokenStore {
    /// The audit trail of the actor's organization, newest first (Owner
    /// only): every management call with who, what, when and the outcome,
    /// including refused ones. An actor's refusals for the same action and
    /// reason within an hour of the first are one event with their
    /// [`AuditEvent::count`]; each event's target and outcome are cut to
    /// 176 and 80 bytes (marked with `…`). Events go after
    /// [`Config::audit_retention`] (see [`TokenStore::purge_expired`]).
    ///
    /// **Blocks** while it reads up to `limit` events from disk (tens of µs for
    /// a few events; not timed separately by the perf report).
    ///
    /// # Errors
    /// [`Error::Forbidden`] unless the actor is the Owner; [`Error::Io`] or
    /// [`Error::Corrupt`] if storage fails; on a shared store
    /// [`Error::Unavailable`] when the replica cannot catch up with the
    /// change log (it fails closed).
    ///
    /// ```
    /// use tokenvault::{Actor, Role, TokenStore};
    /// let store = TokenStore::temporary()?;
    /// store.add_member("acme", "ann", Role::Owner)?;
    /// let events = store.audit(&Actor::new("acme", "ann"), 10)?;
    /// assert_eq!(events[0].action, "member.add");
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn audit(&self, actor: &Actor, limit: usize) -> Result<Vec<AuditEvent>> {
        self.audit_before(actor, u64::MAX, limit)
    }

    /// The newest `limit` events of the actor's organization numbered
    /// below `before`: [`TokenStore::audit`], and a page of
    /// [`TokenStore::audit_page`].
    pub(super) fn audit_before(
        &self,
        actor: &Actor,
        before: u64,
        limit: usize,
    ) -> Result<Vec<AuditEvent>> {
        let inner = &*self.inner;
        inner.recover()?;
        {
            let cat = inner.lock_catalog_for_read()?;
            let role = inner.actor_role(&cat, actor, "audit")?;
            if !may(role, Action::Audit) {
                return Err(inner.deny(
                    actor,
                    "audit",
                    None,
                    "only the Owner may read the audit trail",
                ));
            }
        }
        let mut events = inner.backend.events(&actor.org, before, limit)?;
        inner.overlay_denials(&actor.org, &mut events);
        Ok(events
            .into_iter()
            .map(|e| AuditEvent {
                seq: e.seq,
                at: e.at,
                org: e.org,
                actor: e.actor,
                action: e.action,
                target: e.target,
                outcome: e.outcome,
                count: e.count.max(1),
                last_at: e.last_at.max(e.at),
            })
            .collect())
    }

    /// Removes, in one bounded batch of at most `limit` records, access
    /// records that can no longer verify (expired, revoked, or of a revoked
    /// or expired refresh token), refresh records revoked or expired for
    /// longer than the retention and, once none of those is left, audit
    /// events whose last call is older than [`Config::audit_retention`]
    /// (oldest first). Call again while `more` is true. Also writes the
    /// counts of coalesced refusals kept in memory (see
    /// [`TokenStore::audit`]). Lazily durable.
    ///
    /// **Blocks** while it removes up to `limit` records in one durable commit
    /// (perf report, `purge_ms`: about 2 s for every batch of a 100,000-token
    /// store).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a zero limit; [`Error::Io`] if storage
    /// fails.
    ///
    /// ```
    /// use tokenvault::{Actor, Config, ManualClock, Role};
    /// let clock = ManualClock::new(1_000_000);
    /// let store = Config::temporary().clock(clock.clone()).open()?;
    /// store.add_member("acme", "ann", Role::Owner)?;
    /// let t = store.generate(&Actor::new("acme", "ann"), Default::default())?;
    /// store.exchange(t.token.expose())?;
    /// clock.advance(7_200);
    /// let report = store.purge_expired(1_000)?;
    /// assert_eq!(report.access_removed, 1);
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn purge_expired(&self, limit: usize) -> Result<PurgeReport> {
        if limit == 0 {
            return Err(Error::InvalidArgument("limit must be positive".into()));
        }
        let mut report = self.purge_records(limit)?;
        let inner = &*self.inner;
        // Events made at or before this time are past the retention (none
        // while the clock is not that far from 0).
        let before = inner.now().checked_sub(inner.audit_retention);
        inner.write_denials(before.unwrap_or(0));
        if let (Some(before), false) = (before, report.more) {
            let used = report.access_removed + report.refresh_removed;
            let left = usize::try_from(used).map_or(0, |u| limit.saturating_sub(u));
            if left == 0 {
                report.more = true;
            } else {
                let (removed, more) = inner.backend.purge_events(before, left)?;
                if removed > 0 {
                    inner.lazy_written();
                }
                report.events_removed = removed;
                report.more = more;
            }
        }
        let r = &report;
        crate::observe::purged(
            r.access_removed,
            r.refresh_removed,
            r.events_removed,
            r.more,
        );
        Ok(report)
    }

    /// The access and refresh records' part of [`TokenStore::purge_expired`].
    pub(super) fn purge_records(&self, limit: usize) -> Result<PurgeReport> {
        let inner = &*self.inner;
        let mut cat = inner.lock_for_write()?;
        let now = inner.now();
        let mut report = PurgeReport::default();
        // Refresh records past retention, with all their access records.
        let mut dead: Vec<RefreshArc> = Vec::new();
        let mut budget = limit;
        inner.mem.for_each_refresh(|_, r| {
            let u = r.usable(now);
            let gone_since = if u.is_revoked() {
                Some(inner.mem.revoked_at(&r.id()))
            } else if u == Usable::Expired {
                Some(r.ends_at())
            } else {
                None
            };
            if let Some(t) = gone_since {
                if t.saturating_add(inner.retention) <= now {
                    if budget == 0 {
                        report.more = true;
                        return false;
                    }
                    budget -= 1;
                    dead.push(r.clone());
                }
            }
            true
        });
        // Access records that can no longer verify.
        let dead_set: std::collections::HashSet<[u8; 16]> = dead.iter().map(|r| r.id()).collect();
        let mut useless: Vec<(RefreshArc, [u8; 16])> = Vec::new();
        if !report.more {
            inner.mem.for_each_access(|id, a| {
                let gone = !a.usable(now).is_live();
                if gone && !dead_set.contains(&a.refresh().id()) {
                    if budget == 0 {
                        report.more = true;
                        return false;
                    }
                    budget -= 1;
                    useless.push((a.refresh().clone(), *id));
                }
                true
            });
        }
        if dead.is_empty() && useless.is_empty() {
            return Ok(report);
        }
        // Every family touched is locked (in id order) from here to the end
        // of the commit, as an exchange locks its family: no exchange adds
        // to or evicts from a family between this read and the commit.
        useless.sort_by_key(|(r, id)| (r.id(), *id));
        let mut families: Vec<RefreshArc> = dead.clone();
        families.extend(useless.iter().map(|(r, _)| r.clone()));
        families.sort_by_key(|r| r.id());
        families.dedup_by_key(|r| r.id());
        let mut guards: Vec<_> = families.iter().map(|r| r.lock_family()).collect();
        let mut per_family: Vec<Vec<Change>> = Vec::with_capacity(families.len());
        let mut refresh_changes = Vec::with_capacity(dead.len());
        let mut access_removed = 0u64;
        let mut u = 0;
        for r in &families {
            let mut fam = Vec::new();
            if dead_set.contains(&r.id()) {
                for id in inner.family_live(r, usize::MAX)? {
                    fam.push(Change::DeleteAccess {
                        refresh_id: r.id(),
                        id,
                    });
                }
                refresh_changes.push(Change::DeleteRefresh {
                    id: r.id(),
                    org: r.member().org_id().to_string(),
                    user: r.member().user().to_string(),
                });
            }
            while u < useless.len() && useless[u].0.id() == r.id() {
                let id = useless[u].1;
                if inner.mem.family_holds(r, &id) {
                    fam.push(Change::DeleteAccess {
                        refresh_id: r.id(),
                        id,
                    });
                }
                u += 1;
            }
            access_removed += fam.len() as u64;
            // The newest access record of a family tells its last exchange;
            // keep that time when records of a surviving family go.
            if !fam.is_empty() && !dead_set.contains(&r.id()) {
                if let Some(at) = r.last_refresh() {
                    fam.push(Change::PutLastRefresh {
                        id: r.id(),
                        at,
                        client: inner.mem.client_of(&r.id()),
                    });
                }
            }
            per_family.push(fam);
        }
        let mut changes: Vec<Change> = per_family.iter().flatten().cloned().collect();
        changes.extend(refresh_changes.iter().cloned());
        if changes.is_empty() {
            return Ok(report);
        }
        let ticket = inner.commit(&changes)?;
        for ((r, book), fam) in families.iter().zip(guards.iter_mut()).zip(&per_family) {
            inner.mem.apply_family(r, book, fam);
        }
        drop(guards);
        inner
            .mem
            .apply(&mut cat, &refresh_changes, &Committed::default());
        report.refresh_removed = dead.len() as u64;
        report.access_removed = access_removed;
        drop(cat);
        inner.lazy(ticket)?;
        Ok(report)
    }

    /// Walks every stored record and index and reports any index entry
    /// without its record, record without its index entries, or undecodable
    /// value.
    ///
    /// **Blocks** while it reads every record, about as long as sled's own
    /// scan: 2–3 s per million tokens (perf report, `sled_scan_ms`); management
    /// calls wait meanwhile.
    ///
    /// # Errors
    /// [`Error::Io`] if storage cannot be read.
    ///
    /// ```
    /// let store = tokenvault::TokenStore::temporary()?;
    /// assert!(store.check_integrity()?.is_clean());
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn check_integrity(&self) -> Result<IntegrityReport> {
        self.inner.recover()?;
        let _cat = self.inner.mem.catalog_write();
        let mut r = self.inner.backend.check_integrity()?;
        if self.inner.skipped > 0 && r.problems.is_empty() {
            r.problems.push(format!(
                "{} undecodable records were skipped when the store was opened",
                self.inner.skipped
            ));
        }
        Ok(r)
    }

    /// Counts of organizations, members, tokens by state, and bytes on disk.
    ///
    /// **Blocks** while it counts tokens in memory and sizes the files on disk
    /// (milliseconds per hundred thousand tokens).
    ///
    /// # Errors
    /// [`Error::Io`] if the size on disk cannot be read.
    ///
    /// ```
    /// let store = tokenvault::TokenStore::temporary()?;
    /// store.add_member("acme", "ann", tokenvault::Role::Owner)?;
    /// assert_eq!(store.stats()?.members, 1);
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn stats(&self) -> Result<Stats> {
        let inner = &*self.inner;
        inner.recover()?;
        let mut s = Stats::default();
        {
            let cat = inner.mem.catalog_write();
            (s.orgs, s.members) = cat.counts();
        }
        let now = inner.now();
        inner.mem.for_each_refresh(|_, r| {
            match r.usable(now) {
                Usable::Yes(_) | Usable::Disabled | Usable::Pending => s.active += 1,
                Usable::Expired => s.expired += 1,
                Usable::Revoked | Usable::CutOff | Usable::Removed => s.revoked += 1,
            }
            true
        });
        s.access_tokens = inner.mem.access_count() as u64;
        s.disk_bytes = inner.backend.size_on_disk()?;
        s.warm_start = inner.warm_start;
        Ok(s)
    }

    /// Makes every write so far durable, with the counts of coalesced
    /// refusals kept in memory (see [`TokenStore::audit`]). Blocks for the
    /// flush.
    ///
    /// # Errors
    /// [`Error::Io`] if storage fails, also when a write made since the last
    /// flush was lost to a storage fault (the store reopened its storage
    /// without it; a later flush succeeds again); [`Error::Unavailable`]
    /// while the storage cannot be opened again after a fault yet.
    ///
    /// ```
    /// tokenvault::TokenStore::temporary()?.flush()?;
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn flush(&self) -> Result<()> {
        self.inner.write_denials(0);
        let t = self.inner.flusher.written();
        // After a storage fault: reopened first, and a write lost to the
        // fault fails the flush (it cannot be made durable any more).
        self.inner.recover()?;
        self.inner.sync(t.max(1))
    }
}
