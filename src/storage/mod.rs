//! The storage boundary. The rest of the crate speaks to storage only through
//! [`Backend`], whose calls are at the level of the domain (put a member,
//! put a refresh record, append an event, load everything, ...), so that a
//! backend other than sled is one new module rather than a rewrite.

pub(crate) use crate::change::{Change, Committed};
use crate::codec::{
    AccessRecord, EventRecord, MemberRecord, OrgPolicyRecord, RefreshRecord, RefreshView,
};
use crate::error::Result;
use crate::types::ClientInfo;

// What a backend that several replicas share offers besides `Backend`.
#[cfg(feature = "postgres")]
mod feed;
#[cfg(feature = "postgres")]
mod postgres;
mod sled;

#[cfg(feature = "postgres")]
pub(crate) use feed::{
    ChangeFeed, LogBatch, ManageLock, ReadThrough, SharedBackend, Snapshot, Subscriber,
};

pub(crate) use self::sled::files::{
    open as open_embedded, open_read_only as open_embedded_read_only,
};
/// The embedded engine's entry points for the store: open a store's
/// directory, to write or to read only.
#[cfg(test)]
pub(crate) use self::sled::tests::move_refresh_record;

/// Where and how to reach a shared backend (PostgreSQL), as the store's
/// configuration gives it.
#[cfg(feature = "postgres")]
pub(crate) struct SharedSpec<'a> {
    pub url: &'a str,
    pub connect_timeout: std::time::Duration,
    pub lock_timeout: std::time::Duration,
    pub pool_size: usize,
    /// The cap on live access tokens per refresh token.
    pub cap: usize,
    /// Proves the store key without revealing it.
    pub fingerprint: &'a [u8],
    pub create_if_missing: bool,
}

/// Opens a shared backend: connects, migrates the schema, checks the key
/// fingerprint. The same storage, seen as a [`Backend`] for the store's
/// writes and as a [`SharedBackend`] for the replica. Blocks on the
/// database.
#[cfg(feature = "postgres")]
pub(crate) fn open_shared(
    spec: &SharedSpec<'_>,
) -> Result<(Box<dyn Backend>, std::sync::Arc<dyn SharedBackend>)> {
    let b = postgres::PgBackend::open(spec)?;
    Ok((Box::new(b.clone()), std::sync::Arc::new(b)))
}

/// What loading found besides the records it handed over.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    /// The highest audit sequence number committed.
    pub last_event_seq: u64,
    /// Records that could not be decoded and were left out (fail closed:
    /// a token whose record is unreadable does not verify).
    pub skipped: u64,
    /// Whether the records came from warm-start files (sled, after a clean
    /// close) rather than from the database itself.
    pub warm: bool,
    /// The records handed over are not to be trusted (warm-start files
    /// found damaged only after some of their entries were handed over):
    /// the caller discards what it made of them and loads again into an
    /// empty sink.
    pub again: bool,
}

/// What [`Backend::load`] hands each stored record to (the store passes
/// memory's loader). Calls come in phases: organization cutoffs and
/// members; then refresh and access records, each refresh record before
/// the access records of its family, from several threads at once and in
/// any other order; then last-exchange times.
pub(crate) trait LoadSink: Sync {
    fn org_cutoff(&self, org: String, at: u64);
    /// An organization's token policy (with the cutoffs, before members).
    fn org_policy(&self, org: String, policy: OrgPolicyRecord);
    fn member(&self, m: MemberRecord);
    /// A refresh record, read in place where the backend can.
    fn refresh(&self, r: &RefreshView<'_>);
    /// An access record.
    fn access(&self, rec: AccessRecord);
    /// A refresh token's last exchange: its time, and its client if known.
    fn last_refresh(&self, id: [u8; 16], at: u64, client: Option<ClientInfo>);
}

/// What [`crate::TokenStore::check_integrity`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct IntegrityReport {
    /// Members checked.
    pub members: u64,
    /// Refresh records checked.
    pub refresh_tokens: u64,
    /// Access records checked.
    pub access_tokens: u64,
    /// Audit events checked.
    pub events: u64,
    /// Each problem found, in words (an index entry without its record, a
    /// record without its index entry, an undecodable value, ...).
    pub problems: Vec<String>,
}

impl IntegrityReport {
    /// Whether no problem was found.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// What [`Backend::close`] did besides making every write durable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Closed {
    /// A checkpoint was written (the next open has no log to replay).
    pub(crate) checkpoint: bool,
    /// Warm-start files were written (the next open reads them instead of
    /// the engine's trees).
    pub(crate) warm_start: bool,
}

/// A storage engine.
pub(crate) trait Backend: Send + Sync + 'static {
    /// Reads a metadata value.
    fn meta_get(&self, name: &str) -> Result<Option<Vec<u8>>>;
    /// Writes a metadata value durably.
    fn meta_put(&self, name: &str, value: &[u8]) -> Result<()>;
    /// Hands every record that lives in memory over to `sink`, one at a
    /// time (nothing is held in between), in the phases [`LoadSink`] says.
    fn load(&self, sink: &dyn LoadSink) -> Result<Loaded>;
    /// Applies a batch atomically (all or nothing, also across a crash),
    /// each intent explicitly, and reports what the store could not know
    /// beforehand (which tokens a [`Change::RevokeMany`] revoked). Not
    /// necessarily durable on return: see [`Backend::sync`].
    fn commit(&self, changes: &[Change]) -> Result<Committed>;
    /// The schema version this backend writes, and the older ones
    /// [`Backend::upgrade`] brings to it. Each backend has its own: a
    /// layout change of one says nothing about another.
    fn schema(&self) -> (&'static [u8], &'static [&'static [u8]]);
    /// Brings data written by an older schema version (`from`, one that
    /// [`Backend::schema`] names) to the current layout. Idempotent; each
    /// step atomic.
    fn upgrade(&self, from: &[u8]) -> Result<()>;
    /// Makes every batch committed before the call durable.
    fn sync(&self) -> Result<()>;
    /// Makes everything durable and lets go of the storage, leaving it
    /// quick to open again where the engine allows (sled: a checkpoint),
    /// and says what it did beyond the sync.
    fn close(self: Box<Self>) -> Result<Closed> {
        self.sync()?;
        Ok(Closed::default())
    }
    /// One refresh record.
    fn get_refresh(&self, id: &[u8; 16]) -> Result<Option<RefreshRecord>>;
    /// The ids of the first `limit` access records stored in the family of
    /// the refresh token `refresh_id`, oldest first: in the order they were
    /// written (an exchange writes its family's records in the order it
    /// issues them; a sled store read back at open orders them by issue
    /// time, then by [`crate::token::issue_order`]). What the cap on a
    /// family's live access tokens evicts from, and what a purge removes
    /// with the family.
    fn family_access(&self, refresh_id: &[u8; 16], limit: usize) -> Result<Vec<[u8; 16]>>;
    /// The refresh records of an organization, or of one member of it
    /// (also those of a removed member, until purged), in any order.
    fn list_refresh(&self, org: &str, user: Option<&str>) -> Result<Vec<RefreshRecord>>;
    /// The ids of the refresh records of one member of `org` (also those
    /// of a removed member, until purged), in any order: what the cap on a
    /// member's live tokens counts once their stored tokens reach it. It
    /// may name a few other records too (the embedded backend reads its
    /// records by a prefix of their ids): the caller keeps the member's.
    fn refresh_ids(&self, org: &str, user: &str) -> Result<Vec<[u8; 16]>> {
        Ok(self
            .list_refresh(org, Some(user))?
            .into_iter()
            .map(|r| r.id)
            .collect())
    }
    /// The newest `limit` events of `org` numbered below `before` (a page
    /// of the audit trail; `u64::MAX` for the newest), newest first, issue
    /// events included wherever the backend keeps them.
    fn events(&self, org: &str, before: u64, limit: usize) -> Result<Vec<EventRecord>>;
    /// Writes one audit event on its own (a refused call's): a new event
    /// when `stored` is `None`, returning the number it is stored under
    /// (sled: its `seq`; PostgreSQL: the database's); otherwise replaces
    /// the event stored under that number (a coalesced refusal whose count
    /// and last time grew). Not necessarily durable on return.
    fn put_event(&self, e: &EventRecord, stored: Option<u64>) -> Result<u64>;
    /// Deletes at most `limit` audit events whose last call was at or
    /// before `before` (Unix seconds), oldest first; returns how many went and
    /// whether more may remain.
    fn purge_events(&self, before: u64, limit: usize) -> Result<(u64, bool)>;
    /// Walks all stored data and reports inconsistencies.
    fn check_integrity(&self) -> Result<IntegrityReport>;
    /// How many refresh records were found unreadable at open and left
    /// out, when the backend cannot tell whose they are (a list that might
    /// miss one is refused rather than shown incomplete).
    fn unreadable_refresh(&self) -> u64 {
        0
    }
    /// Bytes used on disk.
    fn size_on_disk(&self) -> Result<u64>;
    /// Notes that the issue of refresh token `id` failed (its sync did):
    /// a later open of this storage that finds its record after all (a
    /// disk that kept the write) removes it, so that a token nobody
    /// received is never live. Best effort, never fails.
    fn note_failed_issue(&self, _id: &[u8; 16]) {}
    /// After an I/O error: lets go of this storage and opens it again, so
    /// that the store can reload memory from what it holds. Returns the
    /// storage to use from now on and whether it was opened again. Where
    /// it was not, the storage returned answers every call with
    /// [`crate::Error::Unavailable`] (or is this one, kept while letting go
    /// of it is not safe yet) and a later `reopen` tries again. Blocks for
    /// the open (on sled after a failed sync: a read and a write of every
    /// file, see `docs/durability.md`).
    fn reopen(self: Box<Self>) -> (Box<dyn Backend>, Result<()>);
}

/// [`Backend::reopen`] of a storage that is not opened again after a fault
/// (each of its calls reaches the storage afresh, or it is not the store's
/// own).
pub(crate) fn not_reopened(b: Box<dyn Backend>) -> (Box<dyn Backend>, Result<()>) {
    (
        b,
        Err(crate::Error::Unavailable(
            "this storage is not opened again after a fault".into(),
        )),
    )
}
