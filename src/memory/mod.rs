//! In-memory verification state, kept coherent with every write.
//!
//! Verification reads only these structures: sharded maps, each shard
//! behind a read lock whose lock word is the reading thread's own
//! (crossbeam's `ShardedLock`), plus atomics; so the verify path touches no
//! disk, takes no global lock, and writes no memory another core reads. Writers update them after the storage commit
//! and before returning (calls that change membership or roles hold the
//! store's catalog exclusively; token issues share it).
//!
//! Code outside this module reads memory (the maps, the catalog, the
//! entries) through methods, and changes it only through these methods of
//! [`Memory`], all defined in this module:
//!
//! - [`Memory::apply`]: a committed batch of [`Change`](crate::change::Change)s, the path every
//!   write of the store and every change a replica reads from the feed
//!   takes;
//! - [`Memory::apply_family`]: a batch of one family's access-token
//!   changes, by a writer holding that family's lock (exchange, revoking an
//!   access token);
//! - [`Memory::put_issued`]: a refresh token just issued, by an issue that
//!   holds its member's count of stored tokens (issues share the catalog,
//!   so they cannot go through `apply`);
//! - [`Memory::load`]: stored records as they stand ([`Stored`], memory's
//!   own inputs, never committed): a replica's snapshot and read-through;
//!   and [`Loader`], the same for opening a store, from the backend's
//!   loader threads at once (its [`Loader::finish`] counts each member's
//!   tokens);
//! - [`Memory::replace_with`]: memory reloaded after a storage fault, put
//!   in place record by record.
//!
//! Entries are built in one place each ([`Memory::hot_of_view`] for a
//! refresh token, `AccessHot::new` for an access token), and whether a
//! token is usable now is one rule (`state.rs`). Access entries sit in
//! their map's table; refresh entries in slots of the memory's slab
//! (`slab.rs`), which the refresh map and each access entry of the family
//! refer to. A family's entry counts the access tokens memory holds of it;
//! which they are, oldest first, the backend's records say (read only
//! when the cap evicts or a purge removes the family).

use std::sync::Arc;

use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::codec::{AccessRecord, MemberRecord, OrgPolicyRecord, RefreshRecord};
use crate::policy::{Policy, ScopeSet};
use crate::types::ClientInfo;

mod apply;
mod catalog;
mod entries;
mod family;
mod loader;
mod maps;
mod slab;
mod state;

pub(crate) use catalog::Catalog;
pub(crate) use entries::{AccessHot, HeldTokens, MemberHot, RefreshHot};
pub(crate) use loader::Loader;
use maps::Sharded;
pub(crate) use state::Usable;

/// A reference to a refresh entry: an `Arc` whose entry sits in a slot of
/// its memory's slab (see `slab.rs`).
pub(crate) type RefreshArc = slab::SlabArc<RefreshHot>;

/// A reference to a member: an `Arc` whose entry sits in a slot of the
/// process's slab of members (see [`member_arc`]), four bytes in each
/// refresh entry.
pub(crate) type MemberArc = slab::SlabArc<MemberHot>;

/// Puts a member in the process's slab of members (one for every store
/// of the process: members are few beside tokens, and a slab of its own
/// per memory would hold a chunk per loader thread for them). Its chunks
/// stay for the process; their freed slots serve the next members.
pub(super) fn member_arc(m: MemberHot) -> MemberArc {
    static MEMBERS: std::sync::LazyLock<slab::Slab<MemberHot>> =
        std::sync::LazyLock::new(slab::Slab::new);
    MEMBERS.alloc(m)
}

/// The fewest tokens a load must have put in memory for it to give the
/// allocator's free pages back afterwards ([`Memory::give_back_after_load`]):
/// below it, what the load freed is small, and trimming a large host
/// process's allocator at every open of a small store (tests, tools) would
/// cost it more than it gives back.
const GIVE_BACK_FROM_TOKENS: usize = 65_536;

/// Hands the pages that the allocator holds free back to the system
/// (glibc's `malloc_trim`; elsewhere nothing). Blocks for a few
/// milliseconds, holding each of the allocator's arenas in turn.
#[allow(unsafe_code)]
fn give_back_freed_pages() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` takes no pointer; it only returns whole free
    // pages of glibc's own arenas to the system, under their locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A refresh entry holds its id: its table's slots keep only the bits of
/// the id that place it (see [`crate::idmap::Placed`]), a lookup compares
/// the rest in the entry, which every caller reads next anyway.
impl crate::idmap::HoldsId for RefreshArc {
    #[inline(always)]
    fn held_id(&self) -> [u8; 16] {
        self.id
    }
}

/// A stored record as it stands, for memory only: what loading, a
/// replica's snapshot and a read-through hand over. Not a change: nothing
/// commits it.
#[derive(Debug)]
pub(crate) enum Stored {
    /// A member, with their role and own cutoff.
    Member(MemberRecord),
    /// An organization's cutoff.
    OrgCutoff { org: String, at: u64 },
    /// An organization's token policy.
    OrgPolicy {
        org: String,
        policy: OrgPolicyRecord,
    },
    /// A refresh record, in whatever state it is (a shared store's).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    Refresh(RefreshRecord),
    /// An access record, the newest of its family (evicting nothing).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    Access(AccessRecord),
    /// The time of a refresh token's last exchange, and its client if
    /// known.
    LastRefresh {
        id: [u8; 16],
        at: u64,
        client: Option<ClientInfo>,
    },
}

/// The in-memory verification state: its one owner (see the module doc for
/// the methods that change it).
pub(crate) struct Memory {
    /// Refresh entries by id (each slot: 4 bytes of the id's placing bits
    /// and the entry's 4-byte slab reference).
    refresh: Sharded<RefreshArc, crate::idmap::Placed>,
    /// Where the refresh entries are: slots of 2 MiB chunks.
    slab: slab::Slab<RefreshHot>,
    /// Access entries by id.
    access: Sharded<AccessHot>,
    /// The scopes each access token narrowed at exchange was narrowed to,
    /// by its id: for those only (their entries say so, see
    /// [`AccessHot::is_narrowed`]), put in before the entry and taken out
    /// after it.
    narrowed: Sharded<ScopeSet>,
    /// The client of each family's last exchange, by refresh id, for the
    /// families whose host named one (changed under the family's lock, or
    /// once the family's entry is gone).
    clients: Sharded<Box<ClientInfo>>,
    /// When each refresh token revoked itself was revoked (the first
    /// revocation's time, as its record keeps), by id: what the purge's
    /// retention counts from. Only revoked tokens have one, until they are
    /// purged; changed with
    /// the catalog held exclusively, or by the loader.
    revoked: Sharded<u64>,
    /// The catalog: writers hold it exclusively, issues and readers share
    /// it; its contents change only through this module's methods.
    catalog: RwLock<Catalog>,
    policy: Arc<Policy>,
}

/// Reading memory: what code outside this module sees of it. None of these
/// creates or changes anything.
impl Memory {
    /// The refresh token `id`, if memory holds it.
    #[inline]
    pub(crate) fn refresh(&self, id: &[u8; 16]) -> Option<RefreshArc> {
        self.refresh.get(id)
    }
    /// Runs `f` on the refresh token `id` as memory holds it (no
    /// reference count taken).
    #[inline]
    pub(crate) fn refresh_with<R>(
        &self,
        id: &[u8; 16],
        f: impl FnOnce(Option<&RefreshArc>) -> R,
    ) -> R {
        self.refresh.with(id, f)
    }
    /// Whether memory holds the refresh token `id`.
    #[inline]
    pub(crate) fn has_refresh(&self, id: &[u8; 16]) -> bool {
        self.refresh.contains(id)
    }
    /// Runs `f` on the access token `id` as memory holds it, under its
    /// shard's read lock.
    #[inline(always)]
    pub(crate) fn access_with<R>(
        &self,
        id: &[u8; 16],
        f: impl FnOnce(Option<&AccessHot>) -> R,
    ) -> R {
        self.access.with(id, f)
    }
    /// The scopes the access token `id`, whose entry is `a`, may grant at
    /// most, before its refresh token's scopes and its holder's current
    /// role cut them: those it was narrowed to at exchange, or every scope
    /// when it was not narrowed. (Narrowed scopes missing from memory,
    /// which its mutators never leave, would grant none.)
    #[inline]
    pub(crate) fn access_scopes_of(&self, id: &[u8; 16], a: &AccessHot) -> ScopeSet {
        if a.is_narrowed() {
            self.narrowed.get(id).unwrap_or(ScopeSet(0))
        } else {
            entries::ALL_SCOPES
        }
    }
    /// Whether memory holds the access token `id`.
    #[inline]
    pub(crate) fn has_access(&self, id: &[u8; 16]) -> bool {
        self.access.contains(id)
    }
    /// Whether memory holds the access token `id` in the family of
    /// `parent` (a writer asks under the family's lock). By the family's
    /// id, not its entry: memory reloaded after a storage fault holds the
    /// same families in new entries, and a writer still holding an old one
    /// must go on to the gate, which refuses it, rather than conclude that
    /// the token is gone.
    #[inline]
    pub(crate) fn family_holds(&self, parent: &RefreshArc, id: &[u8; 16]) -> bool {
        let family = parent.id();
        self.access
            .with(id, |a| a.is_some_and(|a| a.refresh().id() == family))
    }
    /// The client of the last exchange of the refresh token `id`, if its
    /// host named one.
    pub(crate) fn client_of(&self, id: &[u8; 16]) -> Option<ClientInfo> {
        self.clients.with(id, |c| c.map(|c| ClientInfo::clone(c)))
    }
    /// Whether `client` is the one recorded for the last exchange of the
    /// refresh token `id` (`None`: none is).
    pub(crate) fn client_is(&self, id: &[u8; 16], client: Option<&ClientInfo>) -> bool {
        self.clients.with(id, |c| c.map(|c| &**c) == client)
    }
    /// When the refresh token `id` was revoked itself (the first
    /// revocation's time); 0 if memory holds no such time (never revoked
    /// itself, or gone).
    pub(crate) fn revoked_at(&self, id: &[u8; 16]) -> u64 {
        self.revoked.get(id).unwrap_or(0)
    }
    /// Calls `f` on each refresh token until it returns `false`.
    pub(crate) fn for_each_refresh(&self, f: impl FnMut(&[u8; 16], &RefreshArc) -> bool) {
        self.refresh.for_each(f)
    }
    /// Calls `f` on each access token until it returns `false`.
    pub(crate) fn for_each_access(&self, f: impl FnMut(&[u8; 16], &AccessHot) -> bool) {
        self.access.for_each(f)
    }
    /// How many refresh tokens memory holds.
    pub(crate) fn refresh_count(&self) -> usize {
        self.refresh.len()
    }
    /// How many access tokens memory holds.
    pub(crate) fn access_count(&self) -> usize {
        self.access.len()
    }
    /// After a load into this memory (an open, a reload after a fault, a
    /// replica's reload from a snapshot):
    /// hands what the load freed back to the system, when it held at least
    /// [`GIVE_BACK_FROM_TOKENS`] tokens. Call it once the loader is gone:
    /// what the load allocated and dropped (records decoded, the backend's
    /// lists, the loader's list of every token's member) stays resident in
    /// the allocator's arenas otherwise, and the loader's own lists are
    /// freed only when it is dropped (about 13 bytes per stored token at a
    /// million, see `docs/performance.md`, "What a load leaves behind").
    /// Trims the whole process's allocator (glibc only); blocks for a few
    /// milliseconds.
    pub(crate) fn give_back_after_load(&self) {
        if self.refresh_count() + self.access_count() >= GIVE_BACK_FROM_TOKENS {
            give_back_freed_pages();
        }
    }
    /// The catalog, shared: for reading it, and for an issue (issues share
    /// it; see [`Memory::put_issued`]).
    #[inline]
    pub(crate) fn catalog_read(&self) -> RwLockReadGuard<'_, Catalog> {
        self.catalog.read()
    }
    /// The catalog, exclusively: what a writer holds from its checks to
    /// [`Memory::apply`]. [`Catalog`] has no method that changes it outside
    /// this module, so holding it changes nothing by itself.
    #[inline]
    pub(crate) fn catalog_write(&self) -> RwLockWriteGuard<'_, Catalog> {
        self.catalog.write()
    }
}

impl Memory {
    pub(crate) fn new(policy: Arc<Policy>) -> Memory {
        Memory {
            refresh: Sharded::new(),
            slab: slab::Slab::new(),
            access: Sharded::new(),
            narrowed: Sharded::new(),
            clients: Sharded::new(),
            revoked: Sharded::new(),
            catalog: RwLock::new(Catalog::default()),
            policy,
        }
    }

    /// The scope set an access record is narrowed to in memory, if it is
    /// narrowed: its scope names as the policy's bits (names the policy no
    /// longer knows grant nothing).
    pub(super) fn narrowed_scopes(&self, rec: &AccessRecord) -> Option<ScopeSet> {
        rec.scopes.as_ref().map(|names| self.policy.set_of(names))
    }

    /// Replaces this memory by `reloaded` (loaded anew after a storage fault)
    /// record by record, so that a verification meanwhile sees each token
    /// either as before or as after; `cat` is this memory's catalog, held
    /// exclusively by the caller. The reloaded memory's refresh entries
    /// stay in its slab's chunks, which live on while those entries do
    /// (their freed slots are not handed out again: a fault's reload costs
    /// its memory until the entries it brought in are gone).
    pub(crate) fn replace_with(&self, cat: &mut Catalog, reloaded: Memory) {
        let Memory {
            refresh,
            access,
            narrowed,
            clients,
            revoked,
            catalog,
            ..
        } = reloaded;
        let stale_refresh = self.refresh.ids_not_in(&refresh);
        let stale_access = self.access.ids_not_in(&access);
        let stale_narrowed = self.narrowed.ids_not_in(&narrowed);
        let stale_clients = self.clients.ids_not_in(&clients);
        let stale_revoked = self.revoked.ids_not_in(&revoked);
        for (_, r) in refresh.into_entries() {
            self.refresh.insert(r);
        }
        // Narrowed scopes in before their entries, out after them.
        for (id, n) in narrowed.into_entries() {
            self.narrowed.insert(id, n);
        }
        for (id, a) in access.into_entries() {
            self.access.insert(id, a);
        }
        for id in &stale_access {
            self.access.remove(id);
        }
        for id in &stale_narrowed {
            self.narrowed.remove(id);
        }
        for (id, c) in clients.into_entries() {
            self.clients.insert(id, c);
        }
        for id in &stale_clients {
            self.clients.remove(id);
        }
        for (id, at) in revoked.into_entries() {
            self.revoked.insert(id, at);
        }
        for id in &stale_revoked {
            self.revoked.remove(id);
        }
        for id in &stale_refresh {
            self.refresh.remove(id);
        }
        *cat = catalog.into_inner();
    }

    /// Puts a refresh record just issued in memory, counted with `member`'s
    /// tokens in `held` (their count, which the issue has held locked
    /// since it read it): with no catalog change, the member being one.
    pub(crate) fn put_issued(
        &self,
        mut held: HeldTokens<'_>,
        r: &RefreshRecord,
        member: &MemberArc,
    ) {
        held.add_one();
        self.refresh
            .insert(self.slab.alloc(self.hot_of(r, member.clone())));
    }
}
