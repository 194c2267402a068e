//! The PostgreSQL backend (cargo feature `postgres`): the same storage
//! boundary as sled, in a database that several service replicas share.
//!
//! The client is the synchronous `postgres` crate (it drives
//! `tokio-postgres` on a small runtime of its own), because [`Backend`] is
//! synchronous and the store must not require the host to run an async
//! runtime.
//!
//! # Schema
//!
//! Tables are named `tokenvault_*` and live in the connection's default
//! schema (set `search_path` in the connection string to use another one).
//! They are created and upgraded on open by the numbered [`MIGRATIONS`],
//! inside one transaction that holds a transaction-scoped advisory lock, so
//! replicas that start at once migrate one after the other and the later ones
//! find the work done. A database migrated by a newer tokenvault is refused.
//!
//! # The change log
//!
//! Every transaction that changes what verification depends on (a
//! revocation, a cutoff, a member added, changed or removed, an access token
//! revoked, any delete) also bumps the single row of `tokenvault_epoch`
//! (`UPDATE … SET seq = seq + 1 RETURNING seq`), appends its changes to
//! `tokenvault_changes` under that sequence number, and sends
//! `pg_notify('tokenvault', seq)`. The row lock on the epoch row is held to
//! commit, so a later transaction gets a higher number *and* commits later:
//! a reader that has seen sequence N has seen every transaction numbered
//! below N. (A plain serial column does not give this: a transaction can take
//! 301 and commit after another reader already saw 302.) New tokens
//! (generate, assign, exchange) are not logged: replicas read them through on
//! a miss.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::ThreadId;
use std::time::Duration;

use parking_lot::{Condvar, Mutex, MutexGuard};
use postgres::error::SqlState;
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::FromSql;
use postgres::{Client, IsolationLevel, NoTls, Row, Statement};
use serde::{Deserialize, Serialize};

use super::{
    Backend, ChangeFeed, IntegrityReport, LoadSink, Loaded, LogBatch, ManageLock, ReadThrough,
    SharedBackend, Snapshot, Subscriber,
};
use crate::change::{Change, Committed};
use crate::codec::StoredState;
use crate::codec::{
    decode, decode_access, decode_event, decode_refresh, encode, encode_access, encode_event,
    encode_refresh_bare, AccessRecord, EventRecord, MemberRecord, OrgPolicyRecord, RefreshRecord,
};
use crate::error::{Error, IoError, Result};
use crate::policy::Role;

mod conn;
mod integrity;
mod log;
mod schema;

use conn::{Conn, ConnSpec};
use integrity::check_integrity;
use log::{decode_row, LogChange};
use schema::*;

fn pg(e: postgres::Error) -> Error {
    match e.code() {
        Some(c) if *c == SqlState::EXCLUSION_VIOLATION => {
            Error::Conflict("the organization already has an Owner".into())
        }
        Some(c) if *c == SqlState::LOCK_NOT_AVAILABLE => {
            Error::Io("PostgreSQL: timed out waiting for another replica's management call".into())
        }
        Some(c) if *c == SqlState::FOREIGN_KEY_VIOLATION => {
            Error::Conflict("the refresh token was purged meanwhile".into())
        }
        _ => Error::Io(IoError::with_source(format!("PostgreSQL: {e}"), e)),
    }
}

fn col<'a, T: FromSql<'a>>(row: &'a Row, i: usize) -> Result<T> {
    row.try_get(i)
        .map_err(|e| Error::Corrupt(format!("unexpected PostgreSQL column: {e}")))
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn id_of(v: &[u8]) -> Result<[u8; 16]> {
    v.try_into()
        .map_err(|_| Error::Corrupt("a stored token id is not 16 bytes".into()))
}

/// The connection that holds the management lock, for the thread that holds
/// it.
#[derive(Default)]
struct Manager {
    busy: bool,
    /// The thread holding the lock, and the serial of the connection that
    /// took it: commits of that thread go through that connection only.
    owner: Option<(ThreadId, u64)>,
}

struct Connections {
    spec: ConnSpec,
    cap: i64,
    pool: Vec<Mutex<Option<Conn>>>,
    next: AtomicUsize,
    writer: Mutex<Option<Conn>>,
    manager: Mutex<Manager>,
    manager_free: Condvar,
    loaded_seq: AtomicU64,
}

/// The PostgreSQL [`Backend`]: a small pool of connections, plus one
/// connection for management calls. Cheap to clone.
#[derive(Clone)]
pub(crate) struct PgBackend {
    sh: Arc<Connections>,
}

/// Held by a management call on a shared store: no other replica's
/// management call runs until it is dropped (a session-level advisory lock
/// on a dedicated connection, which this thread's commits then use).
struct PgManageLock {
    sh: Arc<Connections>,
}

impl ManageLock for PgManageLock {}

impl Drop for PgManageLock {
    fn drop(&mut self) {
        let mut w = self.sh.writer.lock();
        let ok = match w.as_mut() {
            Some(c) => c
                .client
                .execute("SELECT pg_advisory_unlock($1)", &[&MANAGE_LOCK])
                .is_ok(),
            None => true,
        };
        if !ok {
            // Closing the session releases the lock on the server.
            *w = None;
        }
        drop(w);
        let mut m = self.sh.manager.lock();
        m.owner = None;
        m.busy = false;
        drop(m);
        self.sh.manager_free.notify_one();
    }
}

impl PgBackend {
    /// Connects, migrates, and records the key fingerprint.
    pub(crate) fn open(opts: &super::SharedSpec<'_>) -> Result<Self> {
        let spec = ConnSpec::parse(opts.url, opts.connect_timeout, opts.lock_timeout)?;
        let (pool_size, cap) = (opts.pool_size, opts.cap);
        let (fingerprint, create) = (opts.fingerprint, opts.create_if_missing);
        let mut c = spec.client(None)?;
        migrate(&mut c, fingerprint, create)?;
        let first = spec.connect(None)?;
        drop(c);
        let pool: Vec<Mutex<Option<Conn>>> =
            (0..pool_size.max(1)).map(|_| Mutex::new(None)).collect();
        *pool[0].lock() = Some(first);
        Ok(PgBackend {
            sh: Arc::new(Connections {
                spec,
                cap: i64::try_from(cap).unwrap_or(i64::MAX),
                pool,
                next: AtomicUsize::new(0),
                writer: Mutex::new(None),
                manager: Mutex::new(Manager::default()),
                manager_free: Condvar::new(),
                loaded_seq: AtomicU64::new(0),
            }),
        })
    }

    /// Takes the fleet-wide management lock (waiting for this process's
    /// other management calls first, then for other replicas', up to the
    /// lock timeout).
    fn take_manage_lock(&self) -> Result<PgManageLock> {
        let sh = &self.sh;
        {
            let mut m = sh.manager.lock();
            while m.busy {
                sh.manager_free.wait(&mut m);
            }
            m.busy = true;
        }
        // From here the guard releases the local claim, whatever happens.
        let guard = PgManageLock { sh: sh.clone() };
        let mut w = sh.writer.lock();
        for attempt in 0..2 {
            if w.as_ref().is_some_and(Conn::is_closed) {
                *w = None;
            }
            let new_conn = w.is_none();
            if new_conn {
                *w = Some(sh.spec.connect(Some("tokenvault-manage"))?);
            }
            let Some(c) = w.as_mut() else { continue };
            match c
                .client
                .execute("SELECT pg_advisory_lock($1)", &[&MANAGE_LOCK])
            {
                Ok(_) => {
                    let serial = c.serial;
                    drop(w);
                    sh.manager.lock().owner = Some((std::thread::current().id(), serial));
                    return Ok(guard);
                }
                Err(e) => {
                    if !c.is_closed() {
                        return Err(pg(e));
                    }
                    *w = None;
                    // An idle connection that died (a server restart):
                    // nothing was held on it, so one more try is safe.
                    if new_conn || attempt == 1 {
                        return Err(pg(e));
                    }
                }
            }
        }
        Err(Error::Io("PostgreSQL: no management connection".into()))
    }

    /// Runs `f` on a connection: the management connection for the thread
    /// that holds the management lock, a pooled one otherwise. A pooled
    /// connection found dead is replaced and `f` tried once more when
    /// `retry` says that is safe.
    fn with_conn<R>(
        &self,
        retry: impl Fn() -> bool,
        mut f: impl FnMut(&mut Conn) -> Result<R>,
    ) -> Result<R> {
        let sh = &self.sh;
        let me = std::thread::current().id();
        let owner = sh.manager.lock().owner;
        if let Some((thread, serial)) = owner {
            if thread == me {
                let mut w = sh.writer.lock();
                let c = match w.as_mut() {
                    Some(c) if c.serial == serial && !c.is_closed() => c,
                    _ => {
                        *w = None;
                        return Err(Error::Io(
                            "PostgreSQL: lost the connection that held the management lock".into(),
                        ));
                    }
                };
                let r = f(c);
                if c.is_closed() {
                    *w = None;
                }
                return r;
            }
        }
        let mut g = self.checkout();
        for attempt in 0..2 {
            if g.as_ref().is_some_and(Conn::is_closed) {
                *g = None;
            }
            let new_conn = g.is_none();
            if new_conn {
                *g = Some(sh.spec.connect(None)?);
            }
            let Some(c) = g.as_mut() else { continue };
            match f(c) {
                Ok(r) => return Ok(r),
                Err(e) => {
                    if c.is_closed() {
                        *g = None;
                        if retry() && !new_conn && attempt == 0 {
                            continue;
                        }
                    }
                    return Err(e);
                }
            }
        }
        Err(Error::Io("PostgreSQL: no connection".into()))
    }

    fn checkout(&self) -> MutexGuard<'_, Option<Conn>> {
        let pool = &self.sh.pool;
        let start = self.sh.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..pool.len() {
            if let Some(g) = pool[(start + i) % pool.len()].try_lock() {
                return g;
            }
        }
        pool[start % pool.len()].lock()
    }
}

impl SharedBackend for PgBackend {
    fn loaded_seq(&self) -> u64 {
        self.sh.loaded_seq.load(Ordering::Acquire)
    }

    fn manage_lock(&self) -> Result<Box<dyn ManageLock>> {
        Ok(Box::new(self.take_manage_lock()?))
    }

    /// On a pooled connection (or the management one).
    fn read(
        &self,
        after: u64,
        access: Option<&[u8; 16]>,
        refresh: Option<&[u8; 16]>,
    ) -> Result<ReadThrough> {
        self.with_conn(|| true, |c| c.fetch(after, access, refresh))
    }

    fn snapshot(&self) -> Result<(Snapshot, u64)> {
        self.with_conn(|| true, Conn::snapshot)
    }

    fn subscriber(&self) -> Subscriber {
        let spec = self.sh.spec.clone();
        Box::new(move || {
            let feed: Box<dyn ChangeFeed> = Box::new(spec.connect(Some("tokenvault-sync"))?);
            Ok(feed)
        })
    }
}

impl ChangeFeed for Conn {
    fn listen(&mut self) -> Result<()> {
        Conn::listen(self)
    }

    fn is_closed(&self) -> bool {
        Conn::is_closed(self)
    }

    fn read(&mut self, after: u64) -> Result<LogBatch> {
        Ok(self.fetch(after, None, None)?.log)
    }

    fn snapshot(&mut self) -> Result<(Snapshot, u64)> {
        Conn::snapshot(self)
    }

    fn prune(&mut self, retention: Duration) -> Result<u64> {
        Conn::prune(self, retention)
    }

    fn wait(&mut self, timeout: Duration) -> Result<bool> {
        Conn::wait(self, timeout)
    }
}

impl Backend for PgBackend {
    fn reopen(self: Box<Self>) -> (Box<dyn Backend>, Result<()>) {
        // Each call takes a pooled connection afresh: nothing to reopen.
        crate::storage::not_reopened(self)
    }
    fn meta_get(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.with_conn(
            || true,
            |c| match c.client.query_opt(&c.st.meta_get, &[&name]).map_err(pg)? {
                Some(row) => Ok(Some(col(&row, 0)?)),
                None => Ok(None),
            },
        )
    }

    fn meta_put(&self, name: &str, value: &[u8]) -> Result<()> {
        self.with_conn(
            || true,
            |c| {
                c.client
                    .execute(&c.st.meta_put, &[&name, &value])
                    .map_err(pg)
                    .map(drop)
            },
        )
    }

    fn load(&self, sink: &dyn LoadSink) -> Result<Loaded> {
        let (s, seq) = self.snapshot()?;
        self.sh.loaded_seq.store(seq, Ordering::Release);
        let skipped = s.skipped;
        s.hand_over(sink);
        // Events are numbered by a database sequence at commit.
        Ok(Loaded {
            last_event_seq: 0,
            skipped,
            warm: false,
            again: false,
        })
    }

    fn schema(&self) -> (&'static [u8], &'static [&'static [u8]]) {
        // The SQL tables have their own migrations; this value only ever
        // said "2" (and "1" before it) and stays so that replicas of an
        // older release keep opening the database.
        (b"2", &[b"1"])
    }

    fn upgrade(&self, _from: &[u8]) -> Result<()> {
        // The SQL schema has its own migrations; access-record slots are a
        // sled key layout and mean nothing here.
        Ok(())
    }

    fn commit(&self, changes: &[Change]) -> Result<Committed> {
        let cap = self.sh.cap;
        // A failure at BEGIN (a connection that died while idle) is safe to
        // retry; a failure after it is not (the commit may have happened).
        let began = std::cell::Cell::new(false);
        self.with_conn(|| !began.get(), |c| c.commit(changes, cap, &began))
            .map(|(_, done)| done)
    }

    fn sync(&self) -> Result<()> {
        // A commit is durable when it returns (synchronous_commit).
        Ok(())
    }

    fn family_access(&self, refresh_id: &[u8; 16], limit: usize) -> Result<Vec<[u8; 16]>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with_conn(
            || true,
            |c| {
                let rows = c
                    .client
                    .query(&c.st.access_family, &[&&refresh_id[..], &limit])
                    .map_err(pg)?;
                let mut ids = Vec::with_capacity(rows.len());
                for row in rows {
                    let raw: &[u8] = col(&row, 0)?;
                    let id: [u8; 16] = raw.try_into().map_err(|_| {
                        Error::Corrupt(format!(
                            "an access id of {} bytes in tokenvault_access",
                            raw.len()
                        ))
                    })?;
                    ids.push(id);
                }
                Ok(ids)
            },
        )
    }

    fn get_refresh(&self, id: &[u8; 16]) -> Result<Option<RefreshRecord>> {
        self.with_conn(
            || true,
            |c| match c
                .client
                .query_opt(&c.st.refresh_get, &[&&id[..]])
                .map_err(pg)?
            {
                Some(row) => Ok(Some(decode_refresh(col::<&[u8]>(&row, 0)?)?)),
                None => Ok(None),
            },
        )
    }

    fn list_refresh(&self, org: &str, user: Option<&str>) -> Result<Vec<RefreshRecord>> {
        self.with_conn(
            || true,
            |c| {
                let rows = match user {
                    Some(u) => c.client.query(&c.st.refresh_member, &[&org, &u]),
                    None => c.client.query(&c.st.refresh_org, &[&org]),
                }
                .map_err(pg)?;
                rows.iter()
                    .map(|row| decode_refresh(col::<&[u8]>(row, 0)?))
                    .collect()
            },
        )
    }

    fn events(&self, org: &str, before: u64, limit: usize) -> Result<Vec<EventRecord>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let before = i64_of(before);
        self.with_conn(
            || true,
            |c| {
                let rows = c
                    .client
                    .query(&c.st.events, &[&org, &limit, &before])
                    .map_err(pg)?;
                rows.iter()
                    .map(|row| {
                        let mut e = decode_event(col::<&[u8]>(row, 1)?)?;
                        e.seq = u64_of(col(row, 0)?);
                        Ok(e)
                    })
                    .collect()
            },
        )
    }

    fn put_event(&self, e: &EventRecord, stored: Option<u64>) -> Result<u64> {
        let body = encode_event(e)?;
        match stored {
            // An insert that may have happened is not retried (it would
            // audit the refusal twice).
            None => self.with_conn(
                || false,
                |c| {
                    let row = c
                        .client
                        .query_one(&c.st.event_new, &[&e.org, &body])
                        .map_err(pg)?;
                    Ok(u64_of(col(&row, 0)?))
                },
            ),
            Some(seq) => self.with_conn(
                || true,
                |c| {
                    c.client
                        .execute(&c.st.event_put, &[&i64_of(seq), &body])
                        .map_err(pg)?;
                    Ok(seq)
                },
            ),
        }
    }

    fn purge_events(&self, before: u64, limit: usize) -> Result<(u64, bool)> {
        // Events are numbered by one sequence for the whole database, in
        // the order they were made: the oldest go until one is recent
        // enough.
        let want = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with_conn(
            || true,
            |c| {
                let rows = c.client.query(&c.st.events_oldest, &[&want]).map_err(pg)?;
                let mut doomed: Vec<i64> = Vec::new();
                let mut recent = false;
                for row in &rows {
                    let seq: i64 = col(row, 0)?;
                    match decode_event(col::<&[u8]>(row, 1)?) {
                        Ok(e) if e.last_at.max(e.at) > before => {
                            recent = true;
                            break;
                        }
                        Ok(_) => doomed.push(seq),
                        // Left for check_integrity to name.
                        Err(_) => {}
                    }
                }
                if !doomed.is_empty() {
                    c.client.execute(&c.st.events_del, &[&doomed]).map_err(pg)?;
                }
                // More only after progress: a batch of undecodable rows
                // alone would otherwise be read again and again.
                let more = !recent && !doomed.is_empty() && rows.len() as i64 == want;
                Ok((doomed.len() as u64, more))
            },
        )
    }

    fn check_integrity(&self) -> Result<IntegrityReport> {
        self.with_conn(|| true, check_integrity)
    }

    fn size_on_disk(&self) -> Result<u64> {
        self.with_conn(
            || true,
            |c| {
                let mut total = 0u64;
                for t in TABLES {
                    let row = c
                        .client
                        .query_one(
                            "SELECT COALESCE(pg_total_relation_size(to_regclass($1)), 0)",
                            &[t],
                        )
                        .map_err(pg)?;
                    total += u64_of(col(&row, 0)?);
                }
                Ok(total)
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member_body(user: &str) -> Vec<u8> {
        encode(&LogChange::OldPutMember(MemberRecord {
            org: "acme".into(),
            user: user.into(),
            role: Role::User,
            not_before: 0,
        }))
        .unwrap()
    }

    #[test]
    fn a_log_row_decodes_to_its_change_or_to_nothing() {
        let got = decode_row(&member_body("u"));
        assert!(
            matches!(got.as_deref(), Some([Change::AddMember { user, .. }]) if user == "u"),
            "{got:?}"
        );
        assert!(decode_row(&[1, 200]).is_none());
        assert!(decode_row(&[]).is_none());
    }
}
