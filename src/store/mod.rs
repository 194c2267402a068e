//! The public [`TokenStore`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use subtle::ConstantTimeEq;

use crate::change::{Change, Committed};
use crate::codec::{self, AccessRecord, EventRecord, RefreshRecord, StoredState};
use crate::commit::{Flusher, WriterMark};
use crate::config::{load_or_create, Config, StoreKey};
use crate::error::{Error, Result};
use crate::memory::{Catalog, Memory, RefreshArc, RefreshHot, Usable};
use crate::policy::{may, Action, Policy, Role};
use crate::storage::{Backend, IntegrityReport};
use crate::token::{self, TokenId, TokenKind};
use crate::types::*;
use crate::Clock;

// Reopening the storage and reloading memory after a storage fault.
mod recover;
// Hooks for a store on a shared backend (PostgreSQL): freshness and
// read-through for verification, the management lock, the replica's sync;
// no-ops for an embedded store.
#[cfg(not(feature = "postgres"))]
mod embedded;
#[cfg(feature = "postgres")]
mod replicated;
#[cfg(not(feature = "postgres"))]
use embedded as replicated;

// Refused calls in the audit trail, coalesced.
mod denials;

// The public surface, one file per concern.
#[cfg(feature = "__bench")]
mod bench;
mod close;
mod issue;
mod maintenance;
#[cfg(feature = "http")]
mod member_ops;
mod members;
mod open;
// The read gate: how every read path reaches memory (freshness and
// read-through on a shared store).
mod pending;
mod policy_org;
mod read;
mod reads;
mod revoke;
mod rotate;
mod rotate_on_use;
mod suspend;
mod sync_org;
mod verify;

pub use reads::{Page, Paged};
pub use rotate::{Grace, Rotated};
pub use rotate_on_use::OAuthGrant;
pub use sync_org::{RoleChange, SyncReport};

/// Derives the key fingerprint kept in the meta tree (and by shared backends).
const FINGERPRINT_CONTEXT: &str = "tokenvault 2026-11 key fingerprint";
const HOST: &str = "host";
const MAX_ID: usize = 128;
const MAX_LABEL: usize = 256;
const MAX_REASON: usize = 512;
/// An audit event's target and outcome are cut to these many bytes (their
/// free text is at most 256 bytes; its other strings are validated ids and
/// the action's name). The target of an issue, "`id` for `user`", fits.
const MAX_AUDIT_TARGET: usize = 176;
const MAX_AUDIT_OUTCOME: usize = 80;

/// An embedded store of refresh tokens, the access tokens derived from them,
/// their revocation, and the policy of who may do which.
///
/// Cheap to clone (an `Arc` inside) and `Send + Sync`: share one store
/// between threads. See the [crate documentation](crate) for an example.
#[derive(Clone)]
pub struct TokenStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TokenStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenStore")
            .field("prefix", &self.inner.prefix)
            .field("refresh_tokens", &self.inner.mem.refresh_count())
            .field("access_tokens", &self.inner.mem.access_count())
            .finish_non_exhaustive()
    }
}

/// The catalog held by a call that writes (through `G`, the kind of lock
/// it takes); while it lives the call counts in [`Flusher::writers`].
struct Held<'a, G> {
    // Dropped first: the catalog is free before the call stops counting.
    cat: G,
    _writer: WriterMark<'a>,
}

/// The catalog held by a management call that writes: exclusively.
type WriteGuard<'a> = Held<'a, replicated::CatalogGuard<'a>>;

/// The catalog held by a call issuing a token: shared with other issues
/// on an embedded store (see [`Inner::lock_for_issue`]).
type IssueGuard<'a> = Held<'a, replicated::IssueCatalog<'a>>;

impl<G: std::ops::Deref<Target = Catalog>> std::ops::Deref for Held<'_, G> {
    type Target = Catalog;
    fn deref(&self) -> &Catalog {
        &self.cat
    }
}

impl<G: std::ops::DerefMut<Target = Catalog>> std::ops::DerefMut for Held<'_, G> {
    fn deref_mut(&mut self) -> &mut Catalog {
        &mut self.cat
    }
}

pub(crate) struct Inner {
    backend: Box<dyn Backend>,
    policy: Arc<Policy>,
    clock: Arc<dyn Clock>,
    prefix: String,
    /// Wiped when the store is dropped. Boxed, so that taking `Inner`
    /// apart (see [`TokenStore::close`]) moves a pointer, not the key.
    refresh_key: Box<zeroize::Zeroizing<[u8; 32]>>,
    access_key: Box<zeroize::Zeroizing<[u8; 32]>>,
    access_ttl: u64,
    cap: usize,
    durable_exchange: bool,
    lazy_flush_every: u64,
    retention: u64,
    /// Seconds a pending assignment waits to be claimed.
    pending_window: u64,
    /// Seconds a token spent by a rotation on use keeps working.
    rotation_leeway: u64,
    /// How long audit events are kept, in seconds.
    audit_retention: u64,
    /// Live refresh tokens a member may hold.
    max_live: usize,
    /// Refusals coalesced in the audit trail (see `store/denials.rs`).
    denials: Mutex<denials::Denials>,
    /// The in-memory verification state (its one owner: `crate::memory`).
    mem: Memory,
    flusher: Flusher,
    skipped: u64,
    /// Tokens loaded whose member could not be found to count them (see
    /// `Loader::finish`): lists fail closed while there are any.
    unlisted: u64,
    /// Whether the open read warm-start files (see [`TokenStore::close`]).
    warm_start: bool,
    /// The last audit sequence number handed out.
    event_seq: AtomicU64,
    /// Set when the backend is shared with other replicas.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    replica: Option<replicated::Replica>,
    /// The policy's scope names, interned (see [`crate::policy::interned_names`]).
    scope_names: &'static [Box<str>],
    /// How a store on disk reopens its storage after a fault (none for a
    /// temporary or shared store).
    recovery: Option<recover::Recovery>,
}

/// How [`TokenStore::revoke`] answers a token of another organization.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Foreign {
    /// Refused and audited, as the policy table says.
    Forbidden,
    /// As an unknown id.
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    Unknown,
}

/// Unicode's format characters (general category Cf, Unicode 15.1): the
/// invisible ones (soft hyphen, zero-width space and joiners, word joiner,
/// byte-order mark, tags) and the bidirectional controls (U+200E, U+200F,
/// U+202A–U+202E, U+2066–U+2069), which make look-alike ids and reorder
/// what a table shows.
fn is_format_char(c: char) -> bool {
    matches!(
        u32::from(c),
        0x00AD
            | 0x0600..=0x0605
            | 0x061C
            | 0x06DD
            | 0x070F
            | 0x0890..=0x0891
            | 0x08E2
            | 0x180E
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x2064
            | 0x2066..=0x206F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0001
            | 0xE0020..=0xE007F
    )
}

/// Control and format characters: never in a new id or label.
fn is_unprintable(c: char) -> bool {
    c.is_control() || is_format_char(c)
}

fn check_id(what: &str, s: &str) -> Result<()> {
    if s.is_empty() || s.len() > MAX_ID || s.chars().any(is_unprintable) {
        return Err(Error::InvalidArgument(format!(
            "{what} id must be 1 to {MAX_ID} bytes without control or format characters"
        )));
    }
    if what == "organization" && s.contains('/') {
        return Err(Error::InvalidArgument(
            "organization id must not contain `/`".into(),
        ));
    }
    Ok(())
}

fn check_text(what: &str, s: &str, max: usize) -> Result<()> {
    if s.len() > max || s.chars().any(char::is_control) {
        return Err(Error::InvalidArgument(format!(
            "{what} must be at most {max} bytes without control characters"
        )));
    }
    Ok(())
}

/// A new token's label: as [`check_text`], and without format characters
/// (labels are shown in tables beside ids).
fn check_label(s: &str, max: usize) -> Result<()> {
    if s.len() > max || s.chars().any(is_unprintable) {
        return Err(Error::InvalidArgument(format!(
            "label must be at most {max} bytes without control or format characters"
        )));
    }
    Ok(())
}

fn verifier(key: &[u8; 32], secret: &[u8; 32]) -> [u8; 32] {
    *blake3::keyed_hash(key, secret).as_bytes()
}

impl Inner {
    fn now(&self) -> u64 {
        self.clock.now()
    }

    /// The oldest `limit` access tokens of `parent`'s family that memory
    /// holds, oldest first: from the backend's records of the family
    /// (memory keeps only their count), less any memory does not hold. For
    /// a writer holding the family's lock, so that none is added or
    /// evicted meanwhile. Blocks on storage (on sled, at most one lookup;
    /// on a shared store, a query). On a shared store the database may
    /// name tokens a replica's memory does not hold yet, so fewer may come
    /// back; the database's own cap holds there.
    ///
    /// # Errors
    ///
    /// What the backend's read fails with.
    pub(super) fn family_live(
        &self,
        parent: &crate::memory::RefreshArc,
        limit: usize,
    ) -> Result<Vec<[u8; 16]>> {
        Ok(self
            .backend
            .family_access(&parent.id(), limit)?
            .into_iter()
            .filter(|id| self.mem.family_holds(parent, id))
            .take(limit)
            .collect())
    }

    fn actor_role(&self, cat: &Catalog, actor: &Actor, action: &str) -> Result<Role> {
        match cat.member(&actor.org, &actor.user).and_then(|m| m.role()) {
            Some(r) => Ok(r),
            None => Err(self.deny(
                actor,
                action,
                None,
                "the actor is not a member of the organization",
            )),
        }
    }

    /// Records a refused call in the audit trail (lazily, coalesced with
    /// the actor's like refusals: see `store/denials.rs`) and makes the
    /// error.
    fn deny(&self, actor: &Actor, action: &str, target: Option<String>, why: &str) -> Error {
        self.deny_as(actor, action, target, false, why)
    }

    /// [`Inner::deny`] for a refusal whose target names an existing member
    /// or token of the actor's organization: it is counted only with the
    /// actor's like refusals naming the same target, so that no other
    /// target hides it in the audit trail.
    fn deny_named(&self, actor: &Actor, action: &str, target: String, why: &str) -> Error {
        self.deny_as(actor, action, Some(target), true, why)
    }

    fn deny_as(
        &self,
        actor: &Actor,
        action: &str,
        target: Option<String>,
        known: bool,
        why: &str,
    ) -> Error {
        // Ids made before format characters were refused still have their
        // refusals audited: only the bounds that keep the record small and
        // printable apply here.
        let storable =
            |s: &str| !s.is_empty() && s.len() <= MAX_ID && !s.chars().any(char::is_control);
        if storable(&actor.org) && storable(&actor.user) {
            let ev = self.event_record(
                &actor.org,
                &actor.user,
                action,
                target,
                &format!("denied: {why}"),
            );
            self.audit_denial(ev, known);
        }
        Error::Forbidden(why.into())
    }

    fn event(
        &self,
        org: &str,
        actor: &str,
        action: &str,
        target: Option<String>,
        outcome: &str,
    ) -> Result<Change> {
        Ok(Change::Event(
            self.event_record(org, actor, action, target, outcome),
        ))
    }

    /// An audit event with the next sequence number.
    fn event_record(
        &self,
        org: &str,
        actor: &str,
        action: &str,
        target: Option<String>,
        outcome: &str,
    ) -> EventRecord {
        let at = self.now();
        EventRecord {
            seq: self.event_seq.fetch_add(1, Ordering::AcqRel) + 1,
            at,
            org: org.into(),
            actor: actor.into(),
            action: action.into(),
            target: target.map(|t| codec::truncate_text(&t, MAX_AUDIT_TARGET)),
            outcome: codec::truncate_text(outcome, MAX_AUDIT_OUTCOME),
            count: 1,
            last_at: at,
        }
    }

    /// Commits a batch, brings memory in line, and returns the ticket for
    /// [`Inner::sync`].
    fn commit_apply(&self, cat: &mut Catalog, changes: &[Change]) -> Result<u64> {
        self.commit_apply_counted(cat, changes)
            .map(|(ticket, _)| ticket)
    }

    /// [`Inner::commit_apply`], also returning what the backend reported
    /// of the batch (how many tokens a bulk revocation revoked).
    fn commit_apply_counted(
        &self,
        cat: &mut Catalog,
        changes: &[Change],
    ) -> Result<(u64, Committed)> {
        let done = self.backend.commit(changes)?;
        let ticket = self.ticket();
        self.mem.apply(cat, changes, &done);
        Ok((ticket, done))
    }

    /// Commits a batch and returns its ticket for [`Inner::sync`].
    fn commit(&self, changes: &[Change]) -> Result<u64> {
        self.backend.commit(changes)?;
        Ok(self.ticket())
    }

    /// The ticket of a batch just committed.
    fn ticket(&self) -> u64 {
        self.flusher.ticket()
    }

    /// Waits until every batch committed so far is durable.
    fn sync_written(&self) -> Result<()> {
        self.sync(self.flusher.written())
    }

    /// Waits until the batch with `ticket` is durable; concurrent callers
    /// share one flush.
    fn sync(&self, ticket: u64) -> Result<()> {
        let started = crate::observe::start();
        let r = self.sync_with(ticket, true);
        crate::observe::durable_wait(started);
        if r.is_err() {
            // A failed storage is reopened at once where it can be, so that
            // memory drops what this failed call changed in it (otherwise
            // the next call tries again).
            let _ = self.recover();
        }
        r
    }

    /// [`Inner::sync`]; `linger` lets the flush leader wait for a
    /// management call under way (never for a caller that may hold the
    /// catalog itself).
    fn sync_with(&self, ticket: u64, linger: bool) -> Result<()> {
        self.flusher
            .flush_upto(ticket, linger, &|| self.backend.sync())?;
        match self.lost(ticket) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The catalog, for a call issuing a token. Issuing reads the catalog
    /// (the actor's role, the subject's membership) and adds a record that
    /// no other call can touch yet; every call that changes membership or
    /// roles takes the catalog exclusively, so each issue still happens
    /// wholly before or after it, and concurrent issues write their records
    /// side by side (their sled inserts, a few microseconds of page reads
    /// each, no longer queue behind one another).
    fn lock_for_issue(&self) -> Result<IssueGuard<'_>> {
        self.hold(Self::lock_catalog_for_issue)
    }

    /// The catalog, for a management call that writes.
    fn lock_for_write(&self) -> Result<WriteGuard<'_>> {
        self.hold(Self::lock_catalog_for_write)
    }

    /// Recovers a failed storage first, then counts the call as a writer
    /// and takes the catalog through `lock`.
    fn hold<'a, G>(&'a self, lock: impl FnOnce(&'a Self) -> Result<G>) -> Result<Held<'a, G>> {
        self.recover()?;
        let writer = self.flusher.writer();
        let cat = lock(self)?;
        Ok(Held {
            cat,
            _writer: writer,
        })
    }

    /// A lazy write: flushed by the engine in the background, or here once
    /// enough lazy writes have piled up, so a later durable call never
    /// inherits a long backlog.
    fn lazy(&self, ticket: u64) -> Result<()> {
        let n = self.flusher.lazy_write();
        if n >= self.lazy_flush_every {
            self.sync_with(ticket, false)?;
        }
        Ok(())
    }
}
