//! The public [`TokenStore`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};
use subtle::ConstantTimeEq;

use crate::codec::{
    self, AccessRecord, EventRecord, IssueEvent, MemberRecord, RefreshRecord, StoredState,
};
use crate::config::{load_or_create, Config, StoreKey};
use crate::error::{Error, Result};
use crate::hot::{
    AccessHot, MemberHot, OrgHot, RefreshExtra, RefreshHot, Sharded, CHECK_KNOWN, ROLE_REMOVED,
};
use crate::policy::{may, Action, Policy, Role};
use crate::storage::{Backend, Change, IntegrityReport};
use crate::token::{self, TokenId, TokenKind};
use crate::types::*;
use crate::Clock;

// Hooks for a store on a shared backend (PostgreSQL): freshness and
// read-through for verification, the management lock, the replica's sync.
#[path = "store/loader.rs"]
mod loader;
// Reopening the storage and reloading memory after a storage fault.
#[path = "store/recover.rs"]
mod recover;
#[cfg(feature = "postgres")]
#[path = "store/shared.rs"]
mod shared;
#[cfg(not(feature = "postgres"))]
#[path = "store/unshared.rs"]
mod shared;

// Refused calls in the audit trail, coalesced.
#[path = "store/denials.rs"]
mod denials;

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
            .field("refresh_tokens", &self.inner.refresh.len())
            .field("access_tokens", &self.inner.access.len())
            .finish_non_exhaustive()
    }
}

struct OrgEntry {
    hot: Arc<OrgHot>,
    members: HashMap<String, Arc<MemberHot>>,
    /// Members no longer present who still hold (revoked) tokens, by user
    /// id: what those tokens hang on, and where lists find them. Gone with
    /// their last token, or when the user is added again (the new member
    /// takes over their list).
    ghosts: HashMap<String, Arc<MemberHot>>,
    owner: Option<String>,
}

#[derive(Default)]
struct Catalog {
    orgs: HashMap<String, OrgEntry>,
}

impl Catalog {
    fn org_mut(&mut self, org: &str) -> &mut OrgEntry {
        self.orgs
            .entry(org.to_string())
            .or_insert_with(|| OrgEntry {
                hot: Arc::new(OrgHot {
                    id: Arc::from(org),
                    not_before: AtomicU64::new(0),
                }),
                members: HashMap::new(),
                ghosts: HashMap::new(),
                owner: None,
            })
    }

    fn member(&self, org: &str, user: &str) -> Option<&Arc<MemberHot>> {
        self.orgs.get(org)?.members.get(user)
    }

    /// The refresh tokens stored for `org`, or for one member of it (also
    /// those of a removed member, until they are purged), each with its
    /// issue event's sequence number.
    fn held(&self, org: &str, user: Option<&str>) -> Vec<([u8; 16], u64)> {
        let mut holders: Vec<&Arc<MemberHot>> = Vec::new();
        if let Some(entry) = self.orgs.get(org) {
            match user {
                Some(u) => {
                    holders.extend(entry.members.get(u));
                    holders.extend(entry.ghosts.get(u));
                }
                None => {
                    holders.extend(entry.members.values());
                    holders.extend(entry.ghosts.values());
                }
            }
        }
        let mut out = Vec::new();
        // Each list once (a user is a member or a ghost, so they should not
        // repeat; a repeat would list a token twice).
        let mut seen = std::collections::HashSet::new();
        for m in holders {
            if seen.insert(Arc::as_ptr(&m.held) as usize) {
                out.extend(m.held.lock().iter().map(|(id, seq)| (*id, *seq)));
            }
        }
        out
    }

    /// The member a token of `(org, user)` hangs on: the member, or a
    /// removed stand-in.
    fn holder(&mut self, org: &str, user: &str) -> Arc<MemberHot> {
        if let Some(m) = self.member(org, user) {
            return m.clone();
        }
        let entry = self.org_mut(org);
        let org_hot = entry.hot.clone();
        entry
            .ghosts
            .entry(user.to_string())
            .or_insert_with(|| Arc::new(MemberHot::new(org_hot, user, ROLE_REMOVED, 0)))
            .clone()
    }
}

/// Group commit: concurrent durable callers share one flush.
struct Flusher {
    /// Whether a flush is under way (its leader does not hold this lock
    /// while it flushes, so that callers it made durable leave at once).
    flushing: Mutex<bool>,
    /// Signalled when a flush ends.
    done: Condvar,
    /// `flushing`, readable without the lock.
    in_flight: AtomicBool,
    /// Callers waiting for a flush to end.
    waiting: AtomicUsize,
    written: AtomicU64,
    flushed: AtomicU64,
    lazy: AtomicU64,
    /// How long the last flush took, in nanoseconds.
    flush_ns: AtomicU64,
    /// Management calls that want or hold the catalog to write: each will
    /// commit within microseconds (see [`Inner::linger`]).
    writers: AtomicUsize,
    /// Callers waited for the last flush: durable calls are arriving
    /// together, and the next leader waits for a companion.
    shared: AtomicBool,
}

/// The catalog held by a management call that writes; while it lives the
/// call counts in [`Flusher::writers`].
struct WriteGuard<'a> {
    // Dropped first: the catalog is free before the call stops counting.
    cat: shared::CatalogGuard<'a>,
    _writer: WriterMark<'a>,
}

/// The catalog held by a call issuing a token: shared with other issues
/// on an embedded store (see [`Inner::lock_for_issue`]).
struct IssueGuard<'a> {
    cat: shared::IssueCatalog<'a>,
    _writer: WriterMark<'a>,
}

impl std::ops::Deref for IssueGuard<'_> {
    type Target = Catalog;
    fn deref(&self) -> &Catalog {
        &self.cat
    }
}

struct WriterMark<'a>(&'a AtomicUsize);

impl Drop for WriterMark<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Release);
    }
}

impl std::ops::Deref for WriteGuard<'_> {
    type Target = Catalog;
    fn deref(&self) -> &Catalog {
        &self.cat
    }
}

impl std::ops::DerefMut for WriteGuard<'_> {
    fn deref_mut(&mut self) -> &mut Catalog {
        &mut self.cat
    }
}

/// A flush leader does not linger when a flush is shorter than this,
/// and never longer than [`LINGER_MAX`] (see [`Inner::linger`]).
const LINGER_MIN: Duration = Duration::from_micros(5);
const LINGER_MAX: Duration = Duration::from_micros(500);
/// The longest a caller watches a flush under way before it sleeps.
const SPIN_MAX: Duration = Duration::from_micros(1000);

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
    /// How long audit events are kept, in seconds.
    audit_retention: u64,
    /// Live refresh tokens a member may hold.
    max_live: usize,
    /// Refusals coalesced in the audit trail (see `store/denials.rs`).
    denials: Mutex<denials::Denials>,
    refresh: Sharded<Arc<RefreshHot>>,
    access: Sharded<AccessHot>,
    catalog: RwLock<Catalog>,
    flusher: Flusher,
    skipped: u64,
    /// Tokens loaded that could not be put in their member's list (see
    /// `Loader::finish`): lists fail closed while there are any.
    unlisted: u64,
    /// Whether the open read warm-start files (see [`TokenStore::close`]).
    warm_start: bool,
    /// The last audit sequence number handed out.
    event_seq: AtomicU64,
    /// Set when the backend is shared with other replicas.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    shared: Option<shared::Slot>,
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

fn check_id(what: &str, s: &str) -> Result<()> {
    if s.is_empty() || s.len() > MAX_ID || s.chars().any(char::is_control) {
        return Err(Error::InvalidArgument(format!(
            "{what} id must be 1 to {MAX_ID} bytes without control characters"
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

fn verifier(key: &[u8; 32], secret: &[u8; 32]) -> [u8; 32] {
    *blake3::keyed_hash(key, secret).as_bytes()
}

/// Constant-time equality of two verifiers: the words are folded without
/// branching and only the folded result is compared, in constant time.
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut acc = 0u64;
    for i in 0..4 {
        let (mut x, mut y) = ([0u8; 8], [0u8; 8]);
        x.copy_from_slice(&a[i * 8..i * 8 + 8]);
        y.copy_from_slice(&b[i * 8..i * 8 + 8]);
        acc |= u64::from_ne_bytes(x) ^ u64::from_ne_bytes(y);
    }
    acc.ct_eq(&0).into()
}

impl TokenStore {
    /// Opens (or creates) the store in directory `path` with default
    /// settings; the key file is `path` with `.key` appended.
    ///
    /// # Errors
    /// As [`Config::open`].
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let store = tokenvault::TokenStore::open(dir.path().join("tokens.db"))?;
    /// # drop(store);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open(path: impl AsRef<std::path::Path>) -> Result<TokenStore> {
        Config::new(path).open()
    }

    /// A temporary store with default settings, deleted when dropped.
    ///
    /// # Errors
    /// [`Error::Io`] if the temporary files cannot be created.
    ///
    /// ```
    /// let store = tokenvault::TokenStore::temporary()?;
    /// # drop(store);
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn temporary() -> Result<TokenStore> {
        Config::temporary().open()
    }

    pub(crate) fn open_with(cfg: Config) -> Result<TokenStore> {
        #[cfg(feature = "postgres")]
        if cfg.postgres.is_some() {
            return shared::open(cfg);
        }
        cfg.validate()?;
        if let Some(p) = &cfg.path {
            if !cfg.create_if_missing && !p.exists() {
                return Err(Error::NotFound(format!(
                    "no token store at {} (create one first)",
                    p.display()
                )));
            }
        }
        if let Some(p) = cfg.path.as_ref().filter(|_| cfg.create_new) {
            if p.exists() {
                return Err(Error::Conflict(format!(
                    "a token store already exists at {}",
                    p.display()
                )));
            }
        }
        let key = match (&cfg.key, cfg.key_file_path()) {
            (Some(k), _) => k.clone(),
            (None, Some(kf)) => {
                let exists = cfg.path.as_ref().is_some_and(|p| p.exists());
                let loose = cfg.allow_loose_key_permissions;
                let (key, created) = load_or_create(&kf, !exists, loose)?;
                if cfg.create_new && !created {
                    return Err(Error::Conflict(format!(
                        "a key file already exists at {}: another store was created there \
                         first, or the key file was left without its store (move it away)",
                        kf.display()
                    )));
                }
                key
            }
            (None, None) => StoreKey::generate()?,
        };
        Self::open_recoverable(cfg, key)
    }

    fn with_backend(backend: Box<dyn Backend>, cfg: Config, key: StoreKey) -> Result<TokenStore> {
        let fingerprint = key.derive(FINGERPRINT_CONTEXT);
        let (current, older) = backend.schema();
        match backend.meta_get("schema")? {
            Some(_) if cfg.create_new => {
                return Err(Error::Conflict(
                    "a token store already exists there (created meanwhile)".into(),
                ))
            }
            None => {
                backend.meta_put("key_fingerprint", &fingerprint[..16])?;
                backend.meta_put("schema", current)?;
            }
            Some(v) if v == current || older.contains(&&v[..]) => {
                let stored = backend.meta_get("key_fingerprint")?;
                let ok = stored
                    .as_deref()
                    .is_some_and(|s| bool::from(s.ct_eq(&fingerprint[..16])));
                if !ok {
                    return Err(Error::KeyMismatch);
                }
                if v != current {
                    backend.upgrade(&v)?;
                    backend.meta_put("schema", current)?;
                }
            }
            Some(v) => {
                return Err(Error::Corrupt(format!(
                    "unknown schema version {:?}",
                    String::from_utf8_lossy(&v)
                )))
            }
        }
        let mut inner = Inner {
            policy: Arc::new(cfg.policy.clone()),
            clock: cfg.clock.clone(),
            prefix: cfg.prefix.clone(),
            refresh_key: Box::new(key.derive("tokenvault 2026-11 refresh verifier").into()),
            access_key: Box::new(key.derive("tokenvault 2026-11 access verifier").into()),
            access_ttl: cfg.access_ttl.as_secs(),
            cap: cfg.max_access_per_refresh,
            durable_exchange: cfg.durable_exchange,
            lazy_flush_every: cfg.lazy_flush_every,
            retention: cfg.retention.as_secs(),
            audit_retention: cfg.audit_retention.as_secs(),
            max_live: cfg.max_live_tokens_per_member,
            denials: Mutex::new(denials::Denials::default()),
            refresh: Sharded::new(),
            access: Sharded::new(),
            catalog: RwLock::new(Catalog::default()),
            flusher: Flusher {
                flushing: Mutex::new(false),
                done: Condvar::new(),
                in_flight: AtomicBool::new(false),
                waiting: AtomicUsize::new(0),
                written: AtomicU64::new(0),
                flushed: AtomicU64::new(0),
                lazy: AtomicU64::new(0),
                flush_ns: AtomicU64::new(0),
                writers: AtomicUsize::new(0),
                shared: AtomicBool::new(false),
            },
            skipped: 0,
            unlisted: 0,
            warm_start: false,
            event_seq: AtomicU64::new(0),
            shared: None,
            scope_names: crate::policy::interned_names(&cfg.policy),
            recovery: None,
            backend,
        };
        // Loading is applying every stored record to empty memory, one at
        // a time as the backend reads it (from several threads at once).
        let loaded = {
            let loader = loader::Loader::new(&inner);
            let loaded = inner
                .backend
                .load(&|c| loader.apply(c), &|r| loader.refresh(r))?;
            inner.unlisted = loader.finish();
            loaded
        };
        // Access records came in no particular order: each family's live
        // list must be oldest first (the cap evicts from the front).
        inner.refresh.for_each(|_, r| {
            let mut extra = r.extra.lock();
            if extra.live.len() > 1 {
                let mut keyed: Vec<(u64, [u8; 16], u32)> = extra
                    .live
                    .iter()
                    .map(|&(id, slot)| {
                        let at = inner.access.with(&id, |a| a.map_or(0, |a| a.issued_at));
                        (at, id, slot)
                    })
                    .collect();
                keyed.sort_unstable();
                extra.live = keyed.into_iter().map(|(_, id, slot)| (id, slot)).collect();
            }
            true
        });
        inner.skipped = loaded.skipped;
        inner.warm_start = loaded.warm;
        inner.event_seq = AtomicU64::new(loaded.last_event_seq);
        Ok(TokenStore {
            inner: Arc::new(inner),
        })
    }

    pub(crate) fn downgrade(&self) -> std::sync::Weak<Inner> {
        Arc::downgrade(&self.inner)
    }

    pub(crate) fn upgrade(weak: &std::sync::Weak<Inner>) -> Option<TokenStore> {
        weak.upgrade().map(|inner| TokenStore { inner })
    }

    /// The token prefix of this store (e.g. `tv`).
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The role → scopes policy of this store.
    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    // ----- membership (kept in sync by the host) -----

    /// Adds `user` to `org` with `role`. An organization has exactly one
    /// Owner: add it with [`Role::Owner`] first, then the others. Durable on
    /// return.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty or overlong id;
    /// [`Error::Conflict`] if the member exists or the org already has an
    /// Owner; [`Error::Io`] if storage fails.
    ///
    /// ```
    /// use tokenvault::{Role, TokenStore};
    /// let store = TokenStore::temporary()?;
    /// store.add_member("acme", "ann", Role::Owner)?;
    /// assert!(store.add_member("acme", "bob", Role::Owner).is_err());
    /// assert_eq!(store.member_role("acme", "ann"), Some(Role::Owner));
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn add_member(&self, org: &str, user: &str, role: Role) -> Result<()> {
        check_id("organization", org)?;
        check_id("user", user)?;
        let inner = &*self.inner;
        let mut cat = inner.lock_for_write()?;
        if let Some(e) = cat.orgs.get(org) {
            if e.members.contains_key(user) {
                return Err(Error::Conflict(format!(
                    "{user} is already a member of {org}"
                )));
            }
            if role == Role::Owner {
                if let Some(o) = &e.owner {
                    return Err(Error::Conflict(format!(
                        "{org} already has an Owner ({o}); transfer ownership instead"
                    )));
                }
            }
        }
        let rec = MemberRecord {
            org: org.into(),
            user: user.into(),
            role,
            not_before: 0,
        };
        let changes = vec![
            Change::PutMember(rec),
            inner.event(
                org,
                HOST,
                "member.add",
                Some(format!("{user} as {role}")),
                "ok",
            )?,
        ];
        let ticket = inner.commit_apply(&mut cat, &changes)?;
        drop(cat);
        inner.sync(ticket)
    }

    /// Changes a member's role. The Owner's role changes only through
    /// [`TokenStore::transfer_ownership`]. Tokens keep their scopes but at
    /// verification they are cut to the new role's at once. Durable on
    /// return.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown member; [`Error::Conflict`] when
    /// asked to make or unmake the Owner; [`Error::Io`] if storage fails.
    ///
    /// ```
    /// use tokenvault::{Role, TokenStore};
    /// let store = TokenStore::temporary()?;
    /// store.add_member("acme", "ann", Role::Owner)?;
    /// store.add_member("acme", "bob", Role::Admin)?;
    /// store.set_role("acme", "bob", Role::User)?;
    /// assert_eq!(store.member_role("acme", "bob"), Some(Role::User));
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn set_role(&self, org: &str, user: &str, role: Role) -> Result<()> {
        let inner = &*self.inner;
        let mut cat = inner.lock_for_write()?;
        let m = cat
            .member(org, user)
            .ok_or_else(|| Error::NotFound(format!("{user} is not a member of {org}")))?
            .clone();
        let current = m.role().unwrap_or(Role::Stakeholder);
        if role == Role::Owner && current != Role::Owner {
            return Err(Error::Conflict(
                "use transfer_ownership to make a member the Owner".into(),
            ));
        }
        if current == Role::Owner && role != Role::Owner {
            return Err(Error::Conflict(
                "the Owner's role changes only by transferring ownership".into(),
            ));
        }
        let rec = MemberRecord {
            org: org.into(),
            user: user.into(),
            role,
            not_before: m.not_before.load(Ordering::Acquire),
        };
        let changes = vec![
            Change::PutMember(rec),
            inner.event(
                org,
                HOST,
                "member.role",
                Some(format!("{user} to {role}")),
                "ok",
            )?,
        ];
        let ticket = inner.commit_apply(&mut cat, &changes)?;
        drop(cat);
        inner.sync(ticket)
    }

    /// Makes `new_owner` (already a member) the Owner of `org`; the previous
    /// Owner becomes an Admin. Durable on return.
    ///
    /// # Errors
    /// [`Error::NotFound`] if `new_owner` is not a member; [`Error::Io`] if
    /// storage fails.
    ///
    /// ```
    /// use tokenvault::{Role, TokenStore};
    /// let store = TokenStore::temporary()?;
    /// store.add_member("acme", "ann", Role::Owner)?;
    /// store.add_member("acme", "bob", Role::Admin)?;
    /// store.transfer_ownership("acme", "bob")?;
    /// assert_eq!(store.member_role("acme", "bob"), Some(Role::Owner));
    /// assert_eq!(store.member_role("acme", "ann"), Some(Role::Admin));
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn transfer_ownership(&self, org: &str, new_owner: &str) -> Result<()> {
        let inner = &*self.inner;
        let mut cat = inner.lock_for_write()?;
        let new = cat
            .member(org, new_owner)
            .ok_or_else(|| Error::NotFound(format!("{new_owner} is not a member of {org}")))?
            .clone();
        if new.role() == Some(Role::Owner) {
            return Ok(());
        }
        let old_owner = cat.orgs.get(org).and_then(|e| e.owner.clone());
        let old = old_owner
            .as_deref()
            .and_then(|o| cat.member(org, o))
            .cloned();
        let mut changes = vec![Change::PutMember(MemberRecord {
            org: org.into(),
            user: new_owner.into(),
            role: Role::Owner,
            not_before: new.not_before.load(Ordering::Acquire),
        })];
        if let Some(o) = &old {
            changes.push(Change::PutMember(MemberRecord {
                org: org.into(),
                user: o.user.to_string(),
                role: Role::Admin,
                not_before: o.not_before.load(Ordering::Acquire),
            }));
        }
        changes.push(inner.event(org, HOST, "member.transfer", Some(new_owner.into()), "ok")?);
        let ticket = inner.commit_apply(&mut cat, &changes)?;
        drop(cat);
        inner.sync(ticket)
    }

    /// Removes a member and revokes every one of their tokens, durably. The
    /// Owner cannot be removed (transfer ownership first). Returns how many
    /// refresh tokens were revoked.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown member; [`Error::Conflict`] for the
    /// Owner; [`Error::Io`] if storage fails.
    ///
    /// ```
    /// use tokenvault::{Actor, Role, TokenStore};
    /// let store = TokenStore::temporary()?;
    /// store.add_member("acme", "ann", Role::Owner)?;
    /// store.add_member("acme", "bob", Role::User)?;
    /// let t = store.generate(&Actor::new("acme", "bob"), Default::default())?;
    /// assert_eq!(store.remove_member("acme", "bob")?, 1);
    /// assert!(store.exchange(t.token.expose()).is_err());
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn remove_member(&self, org: &str, user: &str) -> Result<usize> {
        let inner = &*self.inner;
        let mut cat = inner.lock_for_write()?;
        let m = cat
            .member(org, user)
            .ok_or_else(|| Error::NotFound(format!("{user} is not a member of {org}")))?
            .clone();
        if m.role() == Some(Role::Owner) {
            return Err(Error::Conflict(
                "the Owner cannot be removed; transfer ownership first".into(),
            ));
        }
        let now = inner.now();
        let mut changes = Vec::new();
        let ids = inner.revoke_records(
            &cat,
            org,
            Some(user),
            |_| true,
            now,
            HOST,
            Some("member removed"),
            &mut changes,
        )?;
        changes.push(Change::DeleteMember {
            org: org.into(),
            user: user.into(),
        });
        changes.push(inner.event(org, HOST, "member.remove", Some(user.into()), "ok")?);
        let ticket = inner.commit_apply(&mut cat, &changes)?;
        drop(cat);
        inner.sync(ticket)?;
        Ok(ids.len())
    }

    /// A member's current role, if they are a member.
    pub fn member_role(&self, org: &str, user: &str) -> Option<Role> {
        let cat = self.inner.catalog.read();
        cat.member(org, user).and_then(|m| m.role())
    }

    /// The members of `org` and their roles, sorted by user id.
    pub fn members(&self, org: &str) -> Vec<(String, Role)> {
        let cat = self.inner.catalog.read();
        let mut out: Vec<(String, Role)> = cat
            .orgs
            .get(org)
            .map(|e| {
                e.members
                    .iter()
                    .filter_map(|(u, m)| m.role().map(|r| (u.clone(), r)))
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    // ----- refresh tokens -----

    /// A member creates their own refresh token (the profile page's
    /// "Generate New Token"). The secret is in the answer and nowhere else.
    /// Durable on return.
    ///
    /// # Errors
    /// [`Error::Forbidden`] if the actor is not a member;
    /// [`Error::InvalidArgument`] for a scope outside the member's role, an
    /// unknown scope, a zero expiry, or a bad label; [`Error::Limit`] if the
    /// member already holds [`Config::max_live_tokens_per_member`] live
    /// refresh tokens (nothing is changed or audited); [`Error::Io`] if
    /// storage fails.
    ///
    /// ```
    /// use tokenvault::{Actor, GenerateOptions, Role, TokenStore};
    /// let store = TokenStore::temporary()?;
    /// store.add_member("acme", "ann", Role::Owner)?;
    /// let issued = store.generate(
    ///     &Actor::new("acme", "ann"),
    ///     GenerateOptions::default().label("ci").scopes(["read"]),
    /// )?;
    /// assert!(issued.token.expose().starts_with("tvr_"));
    /// assert_eq!(issued.info.scopes, vec!["read".to_string()]);
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn generate(&self, actor: &Actor, opts: GenerateOptions) -> Result<IssuedToken> {
        self.issue(actor, None, opts)
    }

    /// The Owner creates a token for another member of the organization
    /// (Settings › API Tokens › Assign Token To User). It shows in that
    /// member's own list, with the Owner as `created_by`. Durable on return.
    ///
    /// # Errors
    /// [`Error::Forbidden`] unless the actor is the Owner of the org;
    /// [`Error::NotFound`] if `user` is not a member; [`Error::Limit`] if
    /// `user` (not the Owner) is at the cap of live refresh tokens;
    /// otherwise as [`TokenStore::generate`].
    ///
    /// ```
    /// use tokenvault::{Actor, Role, TokenStore};
    /// let store = TokenStore::temporary()?;
    /// store.add_member("acme", "ann", Role::Owner)?;
    /// store.add_member("acme", "bob", Role::User)?;
    /// let t = store.assign(&Actor::new("acme", "ann"), "bob", Default::default())?;
    /// assert_eq!(t.info.created_by, "ann");
    /// let bobs = store.list_own(&Actor::new("acme", "bob"))?;
    /// assert_eq!(bobs[0].id, t.info.id);
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn assign(&self, actor: &Actor, user: &str, opts: GenerateOptions) -> Result<IssuedToken> {
        self.issue(actor, Some(user), opts)
    }

    fn issue(&self, actor: &Actor, to: Option<&str>, opts: GenerateOptions) -> Result<IssuedToken> {
        let inner = &*self.inner;
        if let Some(l) = &opts.label {
            check_text("label", l, MAX_LABEL)?;
        }
        if opts.expires_in == Some(0) {
            return Err(Error::InvalidArgument("expires_in must be positive".into()));
        }
        let action = if to.is_some() {
            "token.assign"
        } else {
            "token.generate"
        };
        // The secret and its verifier are made before taking the catalog,
        // so that concurrent calls do this work side by side.
        let (id, secret) = loop {
            let (id, secret) = token::fresh()?;
            if !inner.refresh.contains(&id.0) {
                break (id, secret);
            }
        };
        let check = verifier(&inner.refresh_key, &secret.0);
        let cat = inner.lock_for_issue()?;
        let role = inner.actor_role(&cat, actor, action)?;
        let subject = to.unwrap_or(&actor.user);
        if to.is_some() && !may(role, Action::AssignOther) {
            return Err(inner.deny(
                actor,
                action,
                Some(subject.into()),
                "only the Owner may assign tokens",
            ));
        }
        let member = cat
            .member(&actor.org, subject)
            .ok_or_else(|| Error::NotFound(format!("{subject} is not a member of {}", actor.org)))?
            .clone();
        let subject_role = member.role().unwrap_or(Role::Stakeholder);
        let scopes = inner.policy.narrow(subject_role, opts.scopes.as_deref())?;
        let now = inner.now();
        // The cap on the member's live tokens. Their list is held from the
        // count to the insert, so concurrent issues for the same member
        // (which share the catalog) are counted one after another. Only a
        // member listing at least the cap's worth of tokens, live or not,
        // is counted one by one.
        let held_list = member.held.clone();
        let mut held = held_list.lock();
        if held.len() >= inner.max_live {
            let live = held
                .keys()
                .filter(|id| {
                    inner.refresh.with(id, |r| {
                        r.is_some_and(|r| !r.is_revoked() && r.expires_at > now)
                    })
                })
                .count();
            if live >= inner.max_live {
                return Err(Error::Limit(format!(
                    "{subject} already holds {live} live refresh tokens, the most a member \
                     may hold: revoke one first"
                )));
            }
        }
        // The audit event travels with the record (a backend may store
        // it inside, making the issue one write): same time, same words.
        let mut event = inner.event_record(
            &actor.org,
            &actor.user,
            action,
            Some(codec::issue_target(&id.0, subject)),
            "ok",
        );
        event.at = now;
        event.last_at = now;
        let seq = event.seq;
        let rec = RefreshRecord {
            id: id.0,
            org: actor.org.clone(),
            user: subject.into(),
            role_at_issue: subject_role,
            scopes: inner.policy.names(scopes),
            label: opts.label.clone(),
            created_at: now,
            created_by: actor.user.clone(),
            expires_at: opts.expires_in.map(|s| now.saturating_add(s)),
            state: StoredState::Active,
            verifier: check,
            issue: Some(IssueEvent {
                seq,
                assigned: to.is_some(),
            }),
        };
        let changes = vec![Change::PutRefresh(rec.clone()), Change::Event(event)];
        let ticket = inner.commit(&changes)?;
        // The record hangs on its member, who is one (checked above, and
        // nobody can remove them meanwhile): no catalog change is needed.
        held.insert(rec.id, seq);
        inner
            .refresh
            .insert(rec.id, Arc::new(inner.hot_of(&rec, member)));
        drop(held);
        drop(cat);
        inner.sync(ticket)?;
        Ok(IssuedToken {
            token: token::encode(&inner.prefix, TokenKind::Refresh, &id, &secret),
            info: inner.info_of(rec, now),
        })
    }

    /// The actor's own tokens (the profile page), including those the Owner
    /// assigned to them, oldest first.
    ///
    /// # Errors
    /// [`Error::Forbidden`] if the actor is not a member; [`Error::Io`] or
    /// [`Error::Corrupt`] if storage fails.
    ///
    /// ```
    /// use tokenvault::{Actor, Role, TokenStore};
    /// let store = TokenStore::temporary()?;
    /// store.add_member("acme", "ann", Role::Owner)?;
    /// let ann = Actor::new("acme", "ann");
    /// store.generate(&ann, Default::default())?;
    /// assert_eq!(store.list_own(&ann)?.len(), 1);
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn list_own(&self, actor: &Actor) -> Result<Vec<TokenInfo>> {
        let inner = &*self.inner;
        inner.recover()?;
        let cat = inner.lock_for_read()?;
        inner.actor_role(&cat, actor, "token.list")?;
        inner.list(&cat, &actor.org, Some(&actor.user))
    }

    /// Every token of the actor's organization (Settings › API Tokens);
    /// Owner only. Oldest first.
    ///
    /// # Errors
    /// [`Error::Forbidden`] unless the actor is the Owner; [`Error::Io`] or
    /// [`Error::Corrupt`] if storage fails.
    ///
    /// ```
    /// use tokenvault::{Actor, Role, TokenStore};
    /// let store = TokenStore::temporary()?;
    /// store.add_member("acme", "ann", Role::Owner)?;
    /// store.add_member("acme", "bob", Role::User)?;
    /// store.generate(&Actor::new("acme", "bob"), Default::default())?;
    /// assert_eq!(store.list_org(&Actor::new("acme", "ann"))?.len(), 1);
    /// assert!(store.list_org(&Actor::new("acme", "bob")).is_err());
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn list_org(&self, actor: &Actor) -> Result<Vec<TokenInfo>> {
        let inner = &*self.inner;
        inner.recover()?;
        let cat = inner.lock_for_read()?;
        let role = inner.actor_role(&cat, actor, "token.list_org")?;
        if !may(role, Action::ListOrg) {
            return Err(inner.deny(
                actor,
                "token.list_org",
                None,
                "only the Owner may list every token",
            ));
        }
        inner.list(&cat, &actor.org, None)
    }

    // ----- exchange and verification -----

    /// Trades a refresh token for a short-lived access token
    /// (`GET /oauth/access-token`) and records the time as `last_refresh`.
    /// Lazily durable unless [`Config::durable_exchange`] is set.
    ///
    /// # Errors
    /// [`Error::Malformed`] for a string that is not a refresh token;
    /// [`Error::InvalidToken`] for an unknown id or a wrong secret;
    /// [`Error::Revoked`] / [`Error::Expired`] (said only after the secret
    /// matched); [`Error::Io`] if storage fails, or on a shared (PostgreSQL)
    /// store whose replica is stale (it fails closed, see
    /// [`TokenStore::verify`]), or when the store reopened its storage
    /// after a fault while the call ran (try again); [`Error::Limit`] when
    /// the replica's budget of reads for tokens it does not hold is spent.
    ///
    /// ```
    /// use tokenvault::{Actor, Role, TokenStore};
    /// let store = TokenStore::temporary()?;
    /// store.add_member("acme", "ann", Role::Owner)?;
    /// let t = store.generate(&Actor::new("acme", "ann"), Default::default())?;
    /// let grant = store.exchange(t.token.expose())?;
    /// assert_eq!(grant.token_type, "Bearer");
    /// assert!(grant.expires_at > grant.issued_at);
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn exchange(&self, refresh_token: &str) -> Result<AccessGrant> {
        let inner = &*self.inner;
        let parsed = token::parse(&inner.prefix, TokenKind::Refresh, refresh_token)?;
        inner.recover()?;
        let generation = inner.generation();
        inner.fresh_refresh(&parsed.id.0)?;
        let v = verifier(&inner.refresh_key, &parsed.secret.0);
        let parent = inner
            .refresh
            .get(&parsed.id.0)
            .filter(|r| ct_eq(&r.verifier, &v))
            .ok_or(Error::InvalidToken)?;
        let now = inner.now();
        if parent.is_revoked() {
            return Err(Error::Revoked);
        }
        if parent.expires_at <= now {
            return Err(Error::Expired);
        }
        let (aid, asecret) = loop {
            let (id, secret) = token::fresh()?;
            if !inner.access.contains(&id.0) {
                break (id, secret);
            }
        };
        let expires_at = now.saturating_add(inner.access_ttl).min(parent.expires_at);
        let rec = AccessRecord {
            id: aid.0,
            refresh_id: parent.id,
            issued_at: now,
            expires_at,
            revoked: false,
            verifier: verifier(&inner.access_key, &asecret.0),
        };
        let ticket = {
            let mut extra = parent.extra.lock();
            // Checked again under the family's lock: a purge holds the lock
            // of every family it touches until memory agrees with disk, so
            // no access record is written for a family being deleted (an
            // orphan), nor for one revoked or expired meanwhile.
            if !inner.refresh.contains(&parent.id) {
                return Err(Error::InvalidToken);
            }
            if parent.is_revoked() {
                return Err(Error::Revoked);
            }
            if parent.expires_at <= inner.now() {
                return Err(Error::Expired);
            }
            // Past the cap, the new record takes the slot of the oldest,
            // which evicts it in the same single write. (More than `cap`
            // live records only if the cap was lowered since they were
            // made: those are deleted in the same atomic batch.)
            let mut changes = Vec::with_capacity(1);
            let slot = match extra.live.len().checked_sub(inner.cap) {
                Some(excess) => {
                    for &(id, slot) in &extra.live[..excess] {
                        changes.push(Change::DeleteAccess {
                            refresh_id: parent.id,
                            id,
                            slot,
                        });
                    }
                    extra.live[excess].1
                }
                None => extra.free_slot(inner.cap),
            };
            changes.push(Change::PutAccess { rec, slot });
            let _gate = inner.gate(generation)?;
            let ticket = inner.commit(&changes)?;
            inner.apply_family(&parent, &mut extra, &changes);
            ticket
        };
        if inner.durable_exchange {
            inner.sync(ticket)?;
        } else {
            inner.lazy(ticket)?;
        }
        Ok(AccessGrant {
            access_token: token::encode(&inner.prefix, TokenKind::Access, &aid, &asecret),
            expires_at,
            issued_at: now,
            refresh_token: token::SecretToken::from_str_unchecked(refresh_token),
            token_type: "Bearer",
            access_id: aid,
            refresh_id: TokenId(parent.id),
        })
    }

    /// Checks an access token (`Authorization: Bearer …`) and says whom it
    /// speaks for. Reads memory only: no disk, no global lock. On a store
    /// shared through PostgreSQL (feature `postgres`), a token this replica
    /// does not hold yet (made on another replica) is read from the database
    /// once, and a replica that has not synchronised within its staleness
    /// bound fails closed rather than answer from stale memory.
    ///
    /// # Errors
    /// [`Error::Malformed`], [`Error::InvalidToken`], [`Error::Revoked`] (the
    /// token, its refresh token, or its holder's membership is gone),
    /// [`Error::Expired`]; on a shared store also [`Error::Io`] (the replica
    /// is stale, or the database cannot be read) and [`Error::Limit`] (too
    /// many reads of tokens this replica does not hold: try again).
    ///
    /// ```
    /// use tokenvault::{Actor, Role, TokenStore};
    /// let store = TokenStore::temporary()?;
    /// store.add_member("acme", "bob", Role::User)?;
    /// let t = store.generate(&Actor::new("acme", "bob"), Default::default())?;
    /// let grant = store.exchange(t.token.expose())?;
    /// let who = store.verify(grant.access_token.expose())?;
    /// assert_eq!(&*who.user, "bob");
    /// assert!(who.scopes.contains("incident-write"));
    /// assert!(!who.scopes.contains("user-write"));
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn verify(&self, access_token: &str) -> Result<Principal> {
        let inner = &*self.inner;
        let kind = TokenKind::Access;
        let u = token::parse_unchecked(&inner.prefix, kind, access_token)?;
        inner.fresh_access(&u.parsed.id.0, || {
            u.claimed == u64::from(u.expected(&inner.prefix, kind))
        })?;
        let v = verifier(&inner.access_key, &u.parsed.secret.0);
        let now = inner.now();
        let checksum_mismatch = || Error::Malformed("checksum mismatch");
        inner.access.with(&u.parsed.id.0, |a| {
            // As `token::parse` would: a wrong checksum is Malformed before
            // anything is said about the id or the secret.
            let a = match a {
                Some(a) if ct_eq(&a.verifier, &v) => a,
                _ if u.claimed != u64::from(u.expected(&inner.prefix, kind)) => {
                    return Err(checksum_mismatch())
                }
                _ => return Err(Error::InvalidToken),
            };
            // The secret matched, so the right checksum is that of the token
            // issued: computed once, then compared without hashing.
            let known = a.check.load(Ordering::Relaxed);
            let expected = if known & CHECK_KNOWN != 0 {
                known as u32
            } else {
                let e = u.expected(&inner.prefix, kind);
                a.check.store(CHECK_KNOWN | u64::from(e), Ordering::Relaxed);
                e
            };
            if u.claimed != u64::from(expected) {
                return Err(checksum_mismatch());
            }
            let r = &a.refresh;
            if a.revoked.load(Ordering::Acquire) || r.is_revoked() {
                return Err(Error::Revoked);
            }
            let role = r.member.role().ok_or(Error::Revoked)?;
            if a.expires_at <= now || r.expires_at <= now {
                return Err(Error::Expired);
            }
            let (org, user) = r.member.names();
            Ok(Principal {
                org,
                user,
                role,
                scopes: Scopes {
                    set: r.scopes.and(inner.policy.mask(role)),
                    names: inner.scope_names,
                },
                refresh_id: TokenId(r.id),
                access_id: u.parsed.id,
                issued_at: a.issued_at,
                expires_at: a.expires_at,
            })
        })
    }

    /// Checks a refresh token without exchanging it, and says which token it
    /// is: for a front that must know a presented refresh token's holder
    /// (RFC 7662 introspection, RFC 7009 revocation, a rate limit keyed by
    /// token). Records nothing and issues nothing.
    ///
    /// # Errors
    /// As [`TokenStore::exchange`]: [`Error::Malformed`],
    /// [`Error::InvalidToken`] for an unknown id or a wrong secret, then
    /// [`Error::Revoked`] (the token, a cutoff, or the holder's membership)
    /// or [`Error::Expired`]; [`Error::Io`] or [`Error::Corrupt`] if its
    /// record cannot be read.
    ///
    /// ```
    /// use tokenvault::{Actor, Error, Role, TokenStore};
    /// let store = TokenStore::temporary()?;
    /// store.add_member("acme", "ann", Role::Owner)?;
    /// let ann = Actor::new("acme", "ann");
    /// let t = store.generate(&ann, Default::default())?;
    /// let info = store.verify_refresh(t.token.expose())?;
    /// assert_eq!((info.id, info.user.as_str()), (t.info.id, "ann"));
    /// store.revoke(&ann, &t.info.id, None)?;
    /// assert!(matches!(store.verify_refresh(t.token.expose()), Err(Error::Revoked)));
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn verify_refresh(&self, refresh_token: &str) -> Result<TokenInfo> {
        let inner = &*self.inner;
        let parsed = token::parse(&inner.prefix, TokenKind::Refresh, refresh_token)?;
        inner.recover()?;
        let v = verifier(&inner.refresh_key, &parsed.secret.0);
        let hot = inner
            .refresh
            .get(&parsed.id.0)
            .filter(|r| ct_eq(&r.verifier, &v))
            .ok_or(Error::InvalidToken)?;
        if hot.is_revoked() {
            return Err(Error::Revoked);
        }
        let now = inner.now();
        if hot.expires_at <= now {
            return Err(Error::Expired);
        }
        // Purged between the two reads: as good as unknown.
        let rec = inner
            .backend
            .get_refresh(&hot.id)?
            .ok_or(Error::InvalidToken)?;
        Ok(inner.info_of(rec, now))
    }

    /// [`TokenStore::verify`], then requires `scope` among the effective
    /// scopes.
    ///
    /// # Errors
    /// As [`TokenStore::verify`], and [`Error::InsufficientScope`] when the
    /// scope is not granted.
    ///
    /// ```
    /// use tokenvault::{Actor, Error, Role, TokenStore};
    /// let store = TokenStore::temporary()?;
    /// store.add_member("acme", "bob", Role::User)?;
    /// let t = store.generate(&Actor::new("acme", "bob"), Default::default())?;
    /// let access = store.exchange(t.token.expose())?.access_token;
    /// assert!(store.authorize(access.expose(), "read").is_ok());
    /// assert!(matches!(
    ///     store.authorize(access.expose(), "user-write"),
    ///     Err(Error::InsufficientScope(_))
    /// ));
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn authorize(&self, access_token: &str, scope: &str) -> Result<Principal> {
        let p = self.verify(access_token)?;
        if p.scopes.contains(scope) {
            Ok(p)
        } else {
            Err(Error::InsufficientScope(scope.into()))
        }
    }

    // ----- revocation -----

    /// Revokes one refresh token and, with it, every access token derived
    /// from it. Its holder or the Owner of its org may do so. Durable and in
    /// force on return. Revoking a revoked token changes nothing and succeeds.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown id; [`Error::Forbidden`] if the
    /// actor is neither the holder nor the Owner of its org (or is in another
    /// org); [`Error::InvalidArgument`] for a bad reason text; [`Error::Io`]
    /// if storage fails.
    ///
    /// ```
    /// use tokenvault::{Actor, Error, Role, TokenStore};
    /// let store = TokenStore::temporary()?;
    /// store.add_member("acme", "ann", Role::Owner)?;
    /// let ann = Actor::new("acme", "ann");
    /// let t = store.generate(&ann, Default::default())?;
    /// let access = store.exchange(t.token.expose())?.access_token;
    /// store.revoke(&ann, &t.info.id, Some("leaked"))?;
    /// assert!(matches!(store.verify(access.expose()), Err(Error::Revoked)));
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn revoke(&self, actor: &Actor, id: &TokenId, reason: Option<&str>) -> Result<()> {
        self.revoke_with(actor, id, reason, Foreign::Forbidden)
    }

    /// [`TokenStore::revoke`] for a front that answers another
    /// organization's token exactly as an unknown id (the HTTP API): such a
    /// token is [`Error::NotFound`], found by the same steps as an unknown
    /// one and not audited (an unknown id is not either).
    #[cfg(feature = "http")]
    pub(crate) fn revoke_in_own_org(&self, actor: &Actor, id: &TokenId) -> Result<()> {
        self.revoke_with(actor, id, None, Foreign::Unknown)
    }

    fn revoke_with(
        &self,
        actor: &Actor,
        id: &TokenId,
        reason: Option<&str>,
        foreign: Foreign,
    ) -> Result<()> {
        if let Some(r) = reason {
            check_text("reason", r, MAX_REASON)?;
        }
        let inner = &*self.inner;
        let mut cat = inner.lock_for_write()?;
        let role = inner.actor_role(&cat, actor, "token.revoke")?;
        inner.find_refresh(&mut cat, &id.0)?;
        let hot = inner
            .refresh
            .get(&id.0)
            .ok_or_else(|| Error::NotFound(format!("no token with id {id}")))?;
        if *hot.member.org.id != *actor.org && foreign == Foreign::Unknown {
            return Err(Error::NotFound(format!("no token with id {id}")));
        }
        let target = Some(id.to_string());
        if *hot.member.org.id != *actor.org {
            return Err(inner.deny(
                actor,
                "token.revoke",
                target,
                "the token belongs to another organization",
            ));
        }
        let own = *hot.member.user == *actor.user;
        if !own && !may(role, Action::RevokeOther) {
            return Err(inner.deny(
                actor,
                "token.revoke",
                target,
                "only the Owner may revoke another member's token",
            ));
        }
        let now = inner.now();
        let mut rec = inner
            .backend
            .get_refresh(&id.0)?
            .ok_or_else(|| Error::Corrupt(format!("token {id} is in memory but not on disk")))?;
        if rec.state != StoredState::Active {
            // Revoked already, perhaps by a call whose sync failed: this
            // answer, too, says the revocation is durable.
            drop(cat);
            return inner.sync_written();
        }
        rec.state = StoredState::Revoked {
            at: now,
            by: actor.user.clone(),
            reason: reason.map(Into::into),
        };
        let changes = vec![
            Change::PutRefresh(rec),
            inner.event(&actor.org, &actor.user, "token.revoke", target, "ok")?,
        ];
        let ticket = inner.commit_apply(&mut cat, &changes)?;
        drop(cat);
        inner.sync(ticket)
    }

    /// Revokes a refresh token presented by whoever holds it (RFC 7009's
    /// revocation endpoint for refresh tokens), and with it every access
    /// token derived from it. Holding the secret is the authority: the
    /// revocation is made and audited as the token's holder. A token that is
    /// already revoked or expired is left as it is, and the call succeeds.
    /// Durable and in force on return.
    ///
    /// # Errors
    /// [`Error::Malformed`] or [`Error::InvalidToken`] if the string is not a
    /// known refresh token of this store; [`Error::InvalidArgument`] for a
    /// bad reason text; [`Error::Io`] if storage fails.
    ///
    /// ```
    /// use tokenvault::{Actor, Error, Role, TokenStore};
    /// let store = TokenStore::temporary()?;
    /// store.add_member("acme", "bob", Role::User)?;
    /// let t = store.generate(&Actor::new("acme", "bob"), Default::default())?;
    /// let access = store.exchange(t.token.expose())?.access_token;
    /// store.revoke_refresh(t.token.expose(), Some("leaked"))?;
    /// assert!(matches!(store.verify(access.expose()), Err(Error::Revoked)));
    /// // Again: nothing left to do, still a success.
    /// store.revoke_refresh(t.token.expose(), None)?;
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn revoke_refresh(&self, refresh_token: &str, reason: Option<&str>) -> Result<()> {
        if let Some(r) = reason {
            check_text("reason", r, MAX_REASON)?;
        }
        let info = match self.verify_refresh(refresh_token) {
            Ok(info) => info,
            // Nothing left to do, once what is written is durable (the
            // revocation may be that of a call whose sync failed).
            Err(Error::Revoked | Error::Expired) => return self.inner.sync_written(),
            Err(e) => return Err(e),
        };
        match self.revoke(&Actor::new(info.org, info.user), &info.id, reason) {
            // The holder left the organization meanwhile, which revoked the
            // token already.
            Err(Error::Forbidden(_)) if self.verify_refresh(refresh_token).is_err() => Ok(()),
            Err(Error::NotFound(_)) => Ok(()),
            r => r,
        }
    }

    /// Bulk revocation: every token of one member (the member themselves or
    /// the Owner), or of the whole organization (the Owner), optionally only
    /// those issued before `before` (Unix seconds, not in the future). With
    /// `before`, the cutoff is also kept (the latest cutoff wins) so that
    /// verification checks it too. Durable and in force on return. Returns
    /// how many refresh tokens were revoked.
    ///
    /// # Errors
    /// [`Error::Forbidden`] per the policy table; [`Error::InvalidArgument`]
    /// for a cutoff in the future; [`Error::Io`] if storage fails.
    ///
    /// ```
    /// use tokenvault::{Actor, RevokeScope, Role, TokenStore};
    /// let store = TokenStore::temporary()?;
    /// store.add_member("acme", "ann", Role::Owner)?;
    /// store.add_member("acme", "bob", Role::User)?;
    /// let ann = Actor::new("acme", "ann");
    /// store.generate(&Actor::new("acme", "bob"), Default::default())?;
    /// store.generate(&ann, Default::default())?;
    /// assert_eq!(store.revoke_all(&ann, RevokeScope::Org, None)?, 2);
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn revoke_all(
        &self,
        actor: &Actor,
        scope: RevokeScope,
        before: Option<u64>,
    ) -> Result<usize> {
        let inner = &*self.inner;
        let mut cat = inner.lock_for_write()?;
        let role = inner.actor_role(&cat, actor, "token.revoke_all")?;
        let now = inner.now();
        let (user, target) = match &scope {
            RevokeScope::Member(u) => {
                if *u != actor.user && !may(role, Action::BulkRevokeOther) {
                    return Err(inner.deny(
                        actor,
                        "token.revoke_all",
                        Some(u.clone()),
                        "only the Owner may revoke another member's tokens",
                    ));
                }
                (Some(u.as_str()), u.clone())
            }
            RevokeScope::Org => {
                if !may(role, Action::BulkRevokeOrg) {
                    return Err(inner.deny(
                        actor,
                        "token.revoke_all",
                        Some("org".into()),
                        "only the Owner may revoke every token of the organization",
                    ));
                }
                (None, "org".to_string())
            }
        };
        if let Some(t) = before {
            if t > now {
                return Err(Error::InvalidArgument(
                    "the cutoff time cannot be in the future".into(),
                ));
            }
        }
        let cutoff = before.unwrap_or(u64::MAX);
        let mut changes = Vec::new();
        let ids = inner.revoke_records(
            &cat,
            &actor.org,
            user,
            |r| r.created_at < cutoff,
            now,
            &actor.user,
            Some(if before.is_some() {
                "revoked before cutoff"
            } else {
                "bulk revocation"
            }),
            &mut changes,
        )?;
        if let Some(t) = before {
            match user {
                Some(u) => {
                    if let Some(m) = cat.member(&actor.org, u) {
                        let at = m.not_before.load(Ordering::Acquire).max(t);
                        changes.push(Change::PutMember(MemberRecord {
                            org: actor.org.clone(),
                            user: u.into(),
                            role: m.role().unwrap_or(Role::Stakeholder),
                            not_before: at,
                        }));
                    }
                }
                None => {
                    let at = cat
                        .org_mut(&actor.org)
                        .hot
                        .not_before
                        .load(Ordering::Acquire)
                        .max(t);
                    changes.push(Change::PutOrgCutoff {
                        org: actor.org.clone(),
                        at,
                    });
                }
            }
        }
        let what = match before {
            Some(t) => format!("{target} before {t}"),
            None => target,
        };
        changes.push(inner.event(
            &actor.org,
            &actor.user,
            "token.revoke_all",
            Some(what),
            "ok",
        )?);
        let ticket = inner.commit_apply(&mut cat, &changes)?;
        drop(cat);
        inner.sync(ticket)?;
        Ok(ids.len())
    }

    /// Revokes a single access token, presented by its holder (as RFC 7009's
    /// revocation endpoint does). Its refresh token stays usable. Durable on
    /// return; revoking a revoked token succeeds.
    ///
    /// # Errors
    /// [`Error::Malformed`] or [`Error::InvalidToken`] if the token is not a
    /// known access token of this store; [`Error::Io`] if storage fails.
    ///
    /// ```
    /// use tokenvault::{Actor, Error, Role, TokenStore};
    /// let store = TokenStore::temporary()?;
    /// store.add_member("acme", "ann", Role::Owner)?;
    /// let t = store.generate(&Actor::new("acme", "ann"), Default::default())?;
    /// let access = store.exchange(t.token.expose())?.access_token;
    /// store.revoke_access(access.expose())?;
    /// assert!(matches!(store.verify(access.expose()), Err(Error::Revoked)));
    /// assert!(store.exchange(t.token.expose()).is_ok());
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn revoke_access(&self, access_token: &str) -> Result<()> {
        let inner = &*self.inner;
        let parsed = token::parse(&inner.prefix, TokenKind::Access, access_token)?;
        inner.recover()?;
        let generation = inner.generation();
        inner.fresh_access(&parsed.id.0, || true)?;
        let v = verifier(&inner.access_key, &parsed.secret.0);
        let found = inner.access.with(&parsed.id.0, |a| {
            a.filter(|a| ct_eq(&a.verifier, &v)).map(|a| {
                (
                    a.refresh.clone(),
                    AccessRecord {
                        id: parsed.id.0,
                        refresh_id: a.refresh.id,
                        issued_at: a.issued_at,
                        expires_at: a.expires_at,
                        revoked: true,
                        verifier: a.verifier,
                    },
                    a.slot,
                    a.revoked.load(Ordering::Acquire),
                )
            })
        });
        let (parent, rec, slot, already) = found.ok_or(Error::InvalidToken)?;
        if already {
            return Ok(());
        }
        let ticket = {
            let mut extra = parent.extra.lock();
            if !extra.live.contains(&(rec.id, slot)) {
                // Purged or evicted meanwhile: nothing left to revoke.
                return Ok(());
            }
            let changes = [Change::PutAccess { rec, slot }];
            let _gate = inner.gate(generation)?;
            let ticket = inner.commit(&changes)?;
            inner.apply_family(&parent, &mut extra, &changes);
            ticket
        };
        inner.sync(ticket)
    }

    // ----- audit, growth, operations -----

    /// The audit trail of the actor's organization, newest first (Owner
    /// only): every management call with who, what, when and the outcome,
    /// including refused ones. An actor's refusals for the same action and
    /// reason within an hour of the first are one event with their
    /// [`AuditEvent::count`]; each event's target and outcome are cut to
    /// 176 and 80 bytes (marked with `…`). Events go after
    /// [`Config::audit_retention`] (see [`TokenStore::purge_expired`]).
    ///
    /// # Errors
    /// [`Error::Forbidden`] unless the actor is the Owner; [`Error::Io`] or
    /// [`Error::Corrupt`] if storage fails.
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
        let inner = &*self.inner;
        inner.recover()?;
        let issued = {
            let cat = inner.lock_for_read()?;
            let role = inner.actor_role(&cat, actor, "audit")?;
            if !may(role, Action::Audit) {
                return Err(inner.deny(
                    actor,
                    "audit",
                    None,
                    "only the Owner may read the audit trail",
                ));
            }
            // The issue events stored inside the organization's records.
            let mut issued = cat.held(&actor.org, None);
            issued.retain(|(_, seq)| *seq != 0);
            issued
        };
        let mut events = inner.backend.events(&actor.org, limit, &issued)?;
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
        Ok(report)
    }

    /// The access and refresh records' part of [`TokenStore::purge_expired`].
    fn purge_records(&self, limit: usize) -> Result<PurgeReport> {
        let inner = &*self.inner;
        let mut cat = inner.lock_for_write()?;
        let now = inner.now();
        let mut report = PurgeReport::default();
        // Refresh records past retention, with all their access records.
        let mut dead: Vec<Arc<RefreshHot>> = Vec::new();
        let mut budget = limit;
        inner.refresh.for_each(|_, r| {
            let gone_since = if r.is_revoked() {
                Some(r.revoked_at.load(Ordering::Acquire))
            } else if r.expires_at <= now {
                Some(r.expires_at)
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
        let dead_set: std::collections::HashSet<[u8; 16]> = dead.iter().map(|r| r.id).collect();
        let mut useless: Vec<(Arc<RefreshHot>, [u8; 16])> = Vec::new();
        if !report.more {
            inner.access.for_each(|id, a| {
                let gone = a.expires_at <= now
                    || a.revoked.load(Ordering::Acquire)
                    || a.refresh.is_revoked()
                    || a.refresh.expires_at <= now;
                if gone && !dead_set.contains(&a.refresh.id) {
                    if budget == 0 {
                        report.more = true;
                        return false;
                    }
                    budget -= 1;
                    useless.push((a.refresh.clone(), *id));
                }
                true
            });
        }
        if dead.is_empty() && useless.is_empty() {
            return Ok(report);
        }
        // Every family touched is locked (in id order) from here to the end
        // of the commit, as an exchange locks its family: a slot read here
        // cannot be taken over by a concurrent exchange before it is
        // deleted.
        useless.sort_by_key(|(r, id)| (r.id, *id));
        let mut families: Vec<Arc<RefreshHot>> = dead.clone();
        families.extend(useless.iter().map(|(r, _)| r.clone()));
        families.sort_by_key(|r| r.id);
        families.dedup_by_key(|r| r.id);
        let mut guards: Vec<_> = families.iter().map(|r| r.extra.lock()).collect();
        let mut per_family: Vec<Vec<Change>> = Vec::with_capacity(families.len());
        let mut refresh_changes = Vec::with_capacity(dead.len());
        let mut access_removed = 0u64;
        let mut u = 0;
        for (r, extra) in families.iter().zip(guards.iter()) {
            let mut fam = Vec::new();
            if dead_set.contains(&r.id) {
                for &(id, slot) in &extra.live {
                    fam.push(Change::DeleteAccess {
                        refresh_id: r.id,
                        id,
                        slot,
                    });
                }
                refresh_changes.push(Change::DeleteRefresh {
                    id: r.id,
                    org: r.member.org.id.to_string(),
                    user: r.member.user.to_string(),
                });
            }
            while u < useless.len() && useless[u].0.id == r.id {
                let id = useless[u].1;
                if let Some(&(_, slot)) = extra.live.iter().find(|(x, _)| *x == id) {
                    fam.push(Change::DeleteAccess {
                        refresh_id: r.id,
                        id,
                        slot,
                    });
                }
                u += 1;
            }
            access_removed += fam.len() as u64;
            // The newest access record of a family tells its last exchange;
            // keep that time when records of a surviving family go.
            if !fam.is_empty() && !dead_set.contains(&r.id) {
                if let Some(at) = extra.last_refresh {
                    fam.push(Change::PutLastRefresh { id: r.id, at });
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
        for ((r, extra), fam) in families.iter().zip(guards.iter_mut()).zip(&per_family) {
            inner.apply_family(r, extra, fam);
        }
        drop(guards);
        inner.apply(&mut cat, &refresh_changes);
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
        let _cat = self.inner.catalog.write();
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
            let cat = inner.catalog.write();
            for e in cat.orgs.values() {
                if !e.members.is_empty() {
                    s.orgs += 1;
                }
                s.members += e.members.len() as u64;
            }
        }
        let now = inner.now();
        inner.refresh.for_each(|_, r| {
            if r.is_revoked() {
                s.revoked += 1;
            } else if r.expires_at <= now {
                s.expired += 1;
            } else {
                s.active += 1;
            }
            true
        });
        s.access_tokens = inner.access.len() as u64;
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
    /// without it; a later flush succeeds again).
    ///
    /// ```
    /// tokenvault::TokenStore::temporary()?.flush()?;
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn flush(&self) -> Result<()> {
        self.inner.write_denials(0);
        let t = self.inner.flusher.written.load(Ordering::Acquire);
        // After a storage fault: reopened first, and a write lost to the
        // fault fails the flush (it cannot be made durable any more).
        self.inner.recover()?;
        self.inner.sync(t.max(1))
    }

    /// Closes this handle: makes every write durable and, when it is the
    /// last handle of the store, lets go of the storage in a state that is
    /// quick to open again.
    ///
    /// On sled this is a checkpoint. sled 0.34 records where its log
    /// stands only when it opens a database, so the first open after a
    /// burst of writes replays them (about a second per million tokens
    /// written); `close` does that replay now, while the service is
    /// shutting down, rather than at its next start.
    ///
    /// It also copies the token records into warm-start files (in the
    /// database directory, `warm-start/`), which the next open reads in one
    /// sequential pass instead of walking sled's trees page by page (at a
    /// million tokens, about one second instead of two to three: README ›
    /// Performance). They are
    /// only a cache of what sled holds, used only if nothing was written
    /// since they were made (opening takes their marker out of the database,
    /// durably, before any write) and only if their blake3 hashes match; the
    /// open that reads them deletes them. Making them costs a scan of the
    /// records at close (about a second per million tokens) and, while the
    /// store is closed, about 120 bytes of disk per token.
    ///
    /// Dropping a store without closing it loses nothing: the next open
    /// replays sled's log and reads its trees instead. While other handles
    /// (clones, an HTTP server) are still open, this only flushes.
    ///
    /// # Errors
    /// [`Error::Io`] if the flush fails or the storage cannot be opened for
    /// the checkpoint (the writes are durable by then; failing to write the
    /// warm-start files is no error: the next open reads the trees),
    /// [`Error::Corrupt`] if sled finds its files damaged while doing so; on a shared store,
    /// as [`TokenStore::flush`].
    ///
    /// ```
    /// use tokenvault::{Actor, Role, TokenStore};
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("tokens.db");
    /// let store = TokenStore::open(&path)?;
    /// store.add_member("acme", "ann", Role::Owner)?;
    /// let t = store.generate(&Actor::new("acme", "ann"), Default::default())?;
    /// store.close()?;
    /// let store = TokenStore::open(&path)?;
    /// assert_eq!(store.verify_refresh(t.token.expose())?.id, t.info.id);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn close(self) -> Result<()> {
        self.inner.write_denials(0);
        match Arc::try_unwrap(self.inner) {
            Ok(inner) => {
                // A replica's sync thread is told to stop before the storage
                // closes (it holds no handle of the store meanwhile).
                let Inner {
                    backend, shared, ..
                } = inner;
                drop(shared);
                backend.close()
            }
            Err(inner) => TokenStore { inner }.flush(),
        }
    }

    /// **For benchmarks only; not part of the supported API.** Issues
    /// `count` refresh tokens to the actor, as [`TokenStore::generate`] with
    /// default options would, and exchanges each of them `exchanges` times,
    /// writing in atomic batches of up to 2,048 tokens (one audit event per
    /// batch) and flushing once at the end, so that a benchmark builds a
    /// store of a million tokens in seconds. `sink` receives each refresh
    /// token with its access tokens. The cap of live tokens per member
    /// ([`Config::max_live_tokens_per_member`]) does not apply here.
    ///
    /// # Errors
    /// [`Error::Forbidden`] if the actor is not a member;
    /// [`Error::InvalidArgument`] if `exchanges` exceeds the cap of live
    /// access tokens per refresh token; [`Error::Io`] if storage fails.
    ///
    /// ```
    /// use tokenvault::{Actor, Role, TokenStore};
    /// let store = TokenStore::temporary()?;
    /// store.add_member("acme", "ann", Role::Owner)?;
    /// let mut access = Vec::new();
    /// store.bulk_issue_for_benchmarks(&Actor::new("acme", "ann"), 3, 1, &mut |_, a| {
    ///     access.extend(a)
    /// })?;
    /// assert_eq!(access.len(), 3);
    /// assert!(store.verify(access[0].expose()).is_ok());
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    #[doc(hidden)]
    pub fn bulk_issue_for_benchmarks(
        &self,
        actor: &Actor,
        count: usize,
        exchanges: usize,
        sink: &mut dyn FnMut(token::SecretToken, Vec<token::SecretToken>),
    ) -> Result<()> {
        const BATCH: usize = 2048;
        let inner = &*self.inner;
        if exchanges > inner.cap {
            return Err(Error::InvalidArgument(
                "more exchanges per token than the cap of live access tokens".into(),
            ));
        }
        let mut done = 0;
        while done < count {
            let n = BATCH.min(count - done);
            let mut cat = inner.catalog.write();
            let role = inner.actor_role(&cat, actor, "token.bulk_generate")?;
            let scopes = inner.policy.names(inner.policy.narrow(role, None)?);
            let now = inner.now();
            let mut changes = Vec::with_capacity(n * (2 + exchanges) + 1);
            let mut secrets = Vec::with_capacity(n);
            for _ in 0..n {
                let (id, secret) = loop {
                    let (id, secret) = token::fresh()?;
                    if !inner.refresh.contains(&id.0) {
                        break (id, secret);
                    }
                };
                changes.push(Change::PutRefresh(RefreshRecord {
                    id: id.0,
                    org: actor.org.clone(),
                    user: actor.user.clone(),
                    role_at_issue: role,
                    scopes: scopes.clone(),
                    label: None,
                    created_at: now,
                    created_by: actor.user.clone(),
                    expires_at: None,
                    state: StoredState::Active,
                    verifier: verifier(&inner.refresh_key, &secret.0),
                    issue: None,
                }));
                let mut access = Vec::with_capacity(exchanges);
                for slot in 0..exchanges as u32 {
                    let (aid, asecret) = loop {
                        let (aid, asecret) = token::fresh()?;
                        if !inner.access.contains(&aid.0) {
                            break (aid, asecret);
                        }
                    };
                    let rec = AccessRecord {
                        id: aid.0,
                        refresh_id: id.0,
                        issued_at: now,
                        expires_at: now.saturating_add(inner.access_ttl),
                        revoked: false,
                        verifier: verifier(&inner.access_key, &asecret.0),
                    };
                    changes.push(Change::PutAccess { rec, slot });
                    access.push((aid, asecret));
                }
                secrets.push((id, secret, access));
            }
            changes.push(inner.event(
                &actor.org,
                &actor.user,
                "token.bulk_generate",
                Some(format!("{n} tokens")),
                "ok",
            )?);
            inner.commit_apply(&mut cat, &changes)?;
            drop(cat);
            for (id, secret, access) in secrets {
                let tokens = access
                    .iter()
                    .map(|(aid, s)| token::encode(&inner.prefix, TokenKind::Access, aid, s))
                    .collect();
                sink(
                    token::encode(&inner.prefix, TokenKind::Refresh, &id, &secret),
                    tokens,
                );
            }
            done += n;
        }
        self.flush()
    }
}

impl Inner {
    fn now(&self) -> u64 {
        self.clock.now()
    }

    /// Brings the in-memory state in line with a committed batch. Every
    /// write path goes through here (and so does loading at open), so memory
    /// and storage cannot drift apart call by call.
    fn apply(&self, cat: &mut Catalog, changes: &[Change]) {
        for c in changes {
            match c {
                Change::PutMember(m) => {
                    match cat.member(&m.org, &m.user).cloned() {
                        Some(hot) => {
                            hot.set_role(Some(m.role));
                            hot.not_before.fetch_max(m.not_before, Ordering::AcqRel);
                        }
                        None => {
                            // Added again: the removed member's tokens are
                            // listed with the new member's.
                            let entry = cat.org_mut(&m.org);
                            let held = entry
                                .ghosts
                                .remove(&m.user)
                                .map(|g| g.held.clone())
                                .unwrap_or_default();
                            let hot = Arc::new(MemberHot::sharing(
                                entry.hot.clone(),
                                &m.user,
                                m.role as u8,
                                m.not_before,
                                held,
                            ));
                            entry.members.insert(m.user.clone(), hot);
                        }
                    }
                    let entry = cat.org_mut(&m.org);
                    if m.role == Role::Owner {
                        entry.owner = Some(m.user.clone());
                    } else if entry.owner.as_deref() == Some(m.user.as_str()) {
                        entry.owner = None;
                    }
                }
                Change::DeleteMember { org, user } => {
                    let entry = cat.org_mut(org);
                    if let Some(hot) = entry.members.remove(user) {
                        hot.set_role(None);
                        if entry.owner.as_deref() == Some(user.as_str()) {
                            entry.owner = None;
                        }
                        // Their tokens, revoked, stay listed until purged.
                        if !hot.held.lock().is_empty() {
                            entry.ghosts.insert(user.clone(), hot);
                        }
                    }
                }
                Change::PutOrgCutoff { org, at } => {
                    cat.org_mut(org)
                        .hot
                        .not_before
                        .fetch_max(*at, Ordering::AcqRel);
                }
                Change::PutRefresh(r) => match self.refresh.get(&r.id) {
                    Some(hot) => {
                        // Revocation is one-way.
                        if let StoredState::Revoked { at, .. } = r.state {
                            hot.revoked_at.store(at, Ordering::Release);
                            hot.revoked.store(true, Ordering::Release);
                        }
                    }
                    None => {
                        let member = cat.holder(&r.org, &r.user);
                        self.put_new_refresh(r, member);
                    }
                },
                Change::DeleteRefresh { id, org, user } => {
                    if let Some(gone) = self.refresh.remove(id) {
                        let mut held = gone.member.held.lock();
                        held.remove(id);
                        // A removed member's stand-in goes with its last
                        // token.
                        if held.is_empty() {
                            drop(held);
                            if let Some(entry) = cat.orgs.get_mut(org) {
                                if entry
                                    .ghosts
                                    .get(user)
                                    .is_some_and(|g| Arc::ptr_eq(&g.held, &gone.member.held))
                                {
                                    entry.ghosts.remove(user);
                                }
                            }
                        }
                    }
                }
                Change::PutAccess { .. }
                | Change::DeleteAccess { .. }
                | Change::PutLastRefresh { .. } => {
                    let id = match c {
                        Change::PutAccess { rec, .. } => rec.refresh_id,
                        Change::DeleteAccess { refresh_id, .. } => *refresh_id,
                        Change::PutLastRefresh { id, .. } => *id,
                        _ => unreachable!("matched above"),
                    };
                    if let Some(parent) = self.refresh.get(&id) {
                        let mut extra = parent.extra.lock();
                        self.apply_family(&parent, &mut extra, std::slice::from_ref(c));
                    }
                }
                Change::Event(_) => {}
            }
        }
    }

    /// The access-token part of [`Inner::apply`] for one family whose lock
    /// the caller holds (the exchange path).
    fn apply_family(&self, parent: &Arc<RefreshHot>, extra: &mut RefreshExtra, changes: &[Change]) {
        for c in changes {
            match c {
                Change::PutAccess { rec: a, slot } => {
                    let updated = self.access.with(&a.id, |old| match old {
                        Some(old) => {
                            if a.revoked {
                                old.revoked.store(true, Ordering::Release);
                            }
                            true
                        }
                        None => false,
                    });
                    if updated {
                        continue;
                    }
                    // A record put in a used slot replaces (evicts) the one
                    // there. Slots at or past `next_slot` are free; a record
                    // from a backend without slots takes the next free one.
                    let slot = &if *slot == crate::storage::SLOT_ANY {
                        extra.next_slot
                    } else {
                        *slot
                    };
                    if *slot < extra.next_slot {
                        if let Some(i) = extra.live.iter().position(|(_, s)| s == slot) {
                            let (old, _) = extra.live.remove(i);
                            self.access.remove(&old);
                        }
                    }
                    extra.next_slot = extra.next_slot.max(slot.saturating_add(1));
                    extra.live.push((a.id, *slot));
                    extra.last_refresh = Some(
                        extra
                            .last_refresh
                            .map_or(a.issued_at, |l| l.max(a.issued_at)),
                    );
                    self.access.insert(
                        a.id,
                        AccessHot {
                            refresh: parent.clone(),
                            verifier: a.verifier,
                            issued_at: a.issued_at,
                            expires_at: a.expires_at,
                            slot: *slot,
                            revoked: AtomicBool::new(a.revoked),
                            check: AtomicU64::new(0),
                        },
                    );
                }
                Change::DeleteAccess { id, .. } => {
                    self.access.remove(id);
                    extra.live.retain(|(x, _)| x != id);
                }
                Change::PutLastRefresh { at, .. } => {
                    extra.last_refresh = Some(extra.last_refresh.map_or(*at, |l| l.max(*at)));
                }
                _ => {}
            }
        }
    }

    /// Puts a refresh record new to memory, hanging on `member`.
    fn put_new_refresh(&self, r: &RefreshRecord, member: Arc<MemberHot>) {
        member
            .held
            .lock()
            .insert(r.id, r.issue.map_or(0, |i| i.seq));
        self.refresh.insert(r.id, Arc::new(self.hot_of(r, member)));
    }

    fn hot_of(&self, r: &RefreshRecord, member: Arc<MemberHot>) -> RefreshHot {
        self.hot_of_view(&r.view(), member)
    }

    fn hot_of_view(&self, r: &codec::RefreshView<'_>, member: Arc<MemberHot>) -> RefreshHot {
        RefreshHot {
            id: r.id,
            member,
            verifier: r.verifier,
            scopes: self.policy.set_of(&r.scopes),
            created_at: r.created_at,
            expires_at: r.expires_at.unwrap_or(u64::MAX),
            revoked: AtomicBool::new(r.revoked_at.is_some()),
            revoked_at: AtomicU64::new(r.revoked_at.unwrap_or(0)),
            extra: Mutex::new(RefreshExtra::default()),
        }
    }

    fn info_of(&self, r: RefreshRecord, now: u64) -> TokenInfo {
        let hot = self.refresh.get(&r.id);
        let last_refresh = hot.as_ref().and_then(|h| h.extra.lock().last_refresh);
        let state = match r.state {
            StoredState::Revoked { at, by, reason } => TokenState::Revoked { at, by, reason },
            StoredState::Active if hot.as_ref().is_some_and(|h| h.is_revoked()) => {
                TokenState::Revoked {
                    at: hot.as_ref().map_or(0, |h| h.member.cutoff()),
                    by: HOST.into(),
                    reason: Some("cutoff or membership".into()),
                }
            }
            StoredState::Active if r.expires_at.is_some_and(|e| e <= now) => TokenState::Expired,
            StoredState::Active => TokenState::Active,
        };
        TokenInfo {
            id: TokenId(r.id),
            org: r.org,
            user: r.user,
            role_at_issue: r.role_at_issue,
            scopes: r.scopes,
            label: r.label,
            created_at: r.created_at,
            created_by: r.created_by,
            expires_at: r.expires_at,
            last_refresh,
            state,
        }
    }

    fn list(&self, cat: &Catalog, org: &str, user: Option<&str>) -> Result<Vec<TokenInfo>> {
        let unreadable = self.backend.unreadable_refresh() + self.unlisted;
        if unreadable != 0 {
            return Err(Error::Corrupt(format!(
                "{unreadable} refresh records found unreadable when the store was opened: \
                 whose they are is unknown, so no list can be shown complete (they never \
                 verify; check_integrity names them; the count is taken again at the next open)"
            )));
        }
        let now = self.now();
        let held: Vec<[u8; 16]> = cat.held(org, user).into_iter().map(|(id, _)| id).collect();
        let mut recs = self.backend.list_refresh(org, user, &held)?;
        recs.sort_by_key(|r| (r.created_at, r.id));
        Ok(recs.into_iter().map(|r| self.info_of(r, now)).collect())
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
        if check_id("organization", &actor.org).is_ok() && check_id("user", &actor.user).is_ok() {
            let ev = self.event_record(
                &actor.org,
                &actor.user,
                action,
                target,
                &format!("denied: {why}"),
            );
            self.audit_denial(ev);
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

    /// Adds to `changes` the revocation of each active refresh record of
    /// `org` (or of one member) that `pick` selects; returns their ids.
    #[allow(clippy::too_many_arguments)]
    fn revoke_records(
        &self,
        cat: &Catalog,
        org: &str,
        user: Option<&str>,
        pick: impl Fn(&RefreshRecord) -> bool,
        now: u64,
        by: &str,
        reason: Option<&str>,
        changes: &mut Vec<Change>,
    ) -> Result<Vec<[u8; 16]>> {
        let mut ids = Vec::new();
        let held: Vec<[u8; 16]> = cat.held(org, user).into_iter().map(|(id, _)| id).collect();
        for mut r in self.backend.list_refresh(org, user, &held)? {
            if r.state == StoredState::Active && pick(&r) {
                ids.push(r.id);
                r.state = StoredState::Revoked {
                    at: now,
                    by: by.into(),
                    reason: reason.map(Into::into),
                };
                changes.push(Change::PutRefresh(r));
            }
        }
        Ok(ids)
    }

    /// Commits a batch, brings memory in line, and returns the ticket for
    /// [`Inner::sync`].
    fn commit_apply(&self, cat: &mut Catalog, changes: &[Change]) -> Result<u64> {
        let ticket = self.commit(changes)?;
        self.apply(cat, changes);
        Ok(ticket)
    }

    /// Commits a batch and returns its ticket for [`Inner::sync`].
    fn commit(&self, changes: &[Change]) -> Result<u64> {
        self.backend.commit(changes)?;
        Ok(self.flusher.written.fetch_add(1, Ordering::AcqRel) + 1)
    }

    /// Waits until every batch committed so far is durable.
    fn sync_written(&self) -> Result<()> {
        self.sync(self.flusher.written.load(Ordering::Acquire))
    }

    /// Waits until the batch with `ticket` is durable; concurrent callers
    /// share one flush.
    fn sync(&self, ticket: u64) -> Result<()> {
        let r = self.sync_with(ticket, true);
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
        self.flush_upto(ticket, linger)?;
        match self.lost(ticket) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The flush of [`Inner::sync_with`].
    fn flush_upto(&self, ticket: u64, linger: bool) -> Result<()> {
        let f = &self.flusher;
        if f.flushed.load(Ordering::Acquire) >= ticket {
            return Ok(());
        }
        // A flush under way may well cover this write: watch it end
        // rather than sleep (waking a sleeper costs more than the wait
        // saves), for no longer than its leader's linger and a flush take
        // (twice the last flush: the linger is at most one).
        if f.in_flight.load(Ordering::Acquire) {
            f.waiting.fetch_add(1, Ordering::AcqRel);
            let flush = Duration::from_nanos(f.flush_ns.load(Ordering::Relaxed));
            let budget = (2 * flush).min(SPIN_MAX);
            let started = Instant::now();
            while f.in_flight.load(Ordering::Acquire) && started.elapsed() < budget {
                std::thread::yield_now();
            }
            f.waiting.fetch_sub(1, Ordering::AcqRel);
        }
        {
            let mut flushing = f.flushing.lock();
            loop {
                if f.flushed.load(Ordering::Acquire) >= ticket {
                    return Ok(());
                }
                if !*flushing {
                    *flushing = true;
                    f.in_flight.store(true, Ordering::Release);
                    break;
                }
                f.waiting.fetch_add(1, Ordering::AcqRel);
                f.done.wait(&mut flushing);
                f.waiting.fetch_sub(1, Ordering::AcqRel);
            }
        }
        // This caller leads the next flush. Whatever happens (an error, a
        // panic in the engine), leadership is handed back on the way out.
        struct Lead<'a>(&'a Flusher);
        impl Drop for Lead<'_> {
            fn drop(&mut self) {
                let f = self.0;
                let mut flushing = f.flushing.lock();
                *flushing = false;
                f.in_flight.store(false, Ordering::Release);
                drop(flushing);
                f.done.notify_all();
            }
        }
        let lead = Lead(f);
        if linger {
            self.linger(ticket);
        }
        let target = f.written.load(Ordering::Acquire);
        let started = Instant::now();
        self.backend.sync()?;
        let took = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        f.flush_ns.store(took, Ordering::Relaxed);
        f.flushed.fetch_max(target, Ordering::AcqRel);
        f.lazy.store(0, Ordering::Release);
        // Callers waited for this flush: durable calls are arriving
        // together, and the next leader waits for a companion.
        f.shared
            .store(f.waiting.load(Ordering::Acquire) > 0, Ordering::Relaxed);
        drop(lead);
        Ok(())
    }

    /// The catalog, for a call issuing a token. Issuing reads the catalog
    /// (the actor's role, the subject's membership) and adds a record that
    /// no other call can touch yet; every call that changes membership or
    /// roles takes the catalog exclusively, so each issue still happens
    /// wholly before or after it, and concurrent issues write their records
    /// side by side (their sled inserts, a few microseconds of page reads
    /// each, no longer queue behind one another).
    fn lock_for_issue(&self) -> Result<IssueGuard<'_>> {
        self.recover()?;
        self.flusher.writers.fetch_add(1, Ordering::AcqRel);
        let writer = WriterMark(&self.flusher.writers);
        let cat = self.lock_catalog_for_issue()?;
        Ok(IssueGuard {
            cat,
            _writer: writer,
        })
    }

    /// The catalog, for a management call that writes.
    fn lock_for_write(&self) -> Result<WriteGuard<'_>> {
        self.recover()?;
        self.flusher.writers.fetch_add(1, Ordering::AcqRel);
        let writer = WriterMark(&self.flusher.writers);
        let cat = self.lock_catalog_for_write()?;
        Ok(WriteGuard {
            cat,
            _writer: writer,
        })
    }

    /// Group commit's other half. Every management call that writes holds
    /// the catalog from its checks to its commit and lets go before it
    /// waits for the flush. The flush leader waits before flushing while
    /// such a call wants or holds the catalog (it is microseconds from
    /// committing), and, when callers waited for the previous flush (calls
    /// are arriving together), until another call's write is in the flush
    /// (one committed after the leader's own `ticket`, or one committed
    /// before it whose caller now waits): then one flush makes both
    /// durable, where flushing at once would make the other call wait for a
    /// flush of its own. The wait is at most as long
    /// as the last flush (and [`LINGER_MAX`]): waiting longer would cost
    /// more than the flush it saves; where flushing is nearly free
    /// (a backend whose commits are already durable) there is none. A
    /// caller alone, with no call before it waiting, does not wait.
    fn linger(&self, ticket: u64) {
        let f = &self.flusher;
        let recent = f.shared.load(Ordering::Relaxed);
        if !recent && f.writers.load(Ordering::Acquire) == 0 {
            return;
        }
        let flush = Duration::from_nanos(f.flush_ns.load(Ordering::Relaxed));
        let budget = flush.min(LINGER_MAX);
        if budget < LINGER_MIN {
            return;
        }
        let started = Instant::now();
        loop {
            // Done once no call is under way and, if calls have been
            // arriving together, another one's write will be in the flush.
            let quiet = f.writers.load(Ordering::Acquire) == 0;
            let companion = || {
                f.written.load(Ordering::Acquire) > ticket || f.waiting.load(Ordering::Acquire) > 0
            };
            if quiet && (!recent || companion()) {
                break;
            }
            if started.elapsed() >= budget {
                break;
            }
            std::thread::yield_now();
        }
    }

    /// A lazy write: flushed by the engine in the background, or here once
    /// enough lazy writes have piled up, so a later durable call never
    /// inherits a long backlog.
    fn lazy(&self, ticket: u64) -> Result<()> {
        let n = self.flusher.lazy.fetch_add(1, Ordering::AcqRel) + 1;
        if n >= self.lazy_flush_every {
            self.sync_with(ticket, false)?;
        }
        Ok(())
    }
}
