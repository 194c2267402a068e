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

use super::{Backend, IntegrityReport, Loaded, Snapshot, SLOT_ANY};
use crate::change::Change;
use crate::codec::StoredState;
use crate::codec::{
    decode, decode_event, encode, encode_event, AccessRecord, EventRecord, MemberRecord,
    RefreshRecord, RefreshView,
};
use crate::error::{Error, IoError, Result};
use crate::policy::Role;

/// The schema migrations, in order. A migration is never edited once
/// released; a change of schema is a new entry.
pub(crate) const MIGRATIONS: &[(i32, &str)] = &[(
    1,
    r#"
CREATE TABLE tokenvault_meta (
    name text PRIMARY KEY,
    value bytea NOT NULL
);
CREATE TABLE tokenvault_members (
    org text NOT NULL,
    member text NOT NULL,
    role smallint NOT NULL,
    not_before bigint NOT NULL,
    PRIMARY KEY (org, member),
    -- One Owner per organization (3 is Role::Owner); deferred so that a
    -- transfer of ownership may write the new Owner before the old one.
    CONSTRAINT tokenvault_one_owner EXCLUDE USING btree (org WITH =)
        WHERE (role = 3) DEFERRABLE INITIALLY DEFERRED
);
CREATE TABLE tokenvault_cutoffs (
    org text PRIMARY KEY,
    at bigint NOT NULL
);
CREATE TABLE tokenvault_refresh (
    id bytea PRIMARY KEY,
    org text NOT NULL,
    member text NOT NULL,
    revoked boolean NOT NULL,
    last_refresh bigint,
    record bytea NOT NULL
);
CREATE INDEX tokenvault_refresh_by_member ON tokenvault_refresh (org, member);
CREATE TABLE tokenvault_access (
    id bytea PRIMARY KEY,
    refresh_id bytea NOT NULL REFERENCES tokenvault_refresh (id),
    n bigint GENERATED ALWAYS AS IDENTITY,
    revoked boolean NOT NULL,
    record bytea NOT NULL
);
CREATE INDEX tokenvault_access_by_refresh ON tokenvault_access (refresh_id, n);
CREATE SEQUENCE tokenvault_event_seq;
CREATE TABLE tokenvault_events (
    seq bigint PRIMARY KEY,
    org text NOT NULL,
    record bytea NOT NULL
);
CREATE INDEX tokenvault_events_by_org ON tokenvault_events (org, seq);
CREATE TABLE tokenvault_epoch (
    id int PRIMARY KEY CHECK (id = 1),
    seq bigint NOT NULL,
    floor bigint NOT NULL
);
INSERT INTO tokenvault_epoch (id, seq, floor) VALUES (1, 0, 0);
CREATE TABLE tokenvault_changes (
    seq bigint NOT NULL,
    n bigint NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    body bytea NOT NULL,
    PRIMARY KEY (seq, n)
);
"#,
)];

/// The tables, for sizes and tests.
pub(crate) const TABLES: &[&str] = &[
    "tokenvault_meta",
    "tokenvault_members",
    "tokenvault_cutoffs",
    "tokenvault_refresh",
    "tokenvault_access",
    "tokenvault_events",
    "tokenvault_epoch",
    "tokenvault_changes",
    "tokenvault_migrations",
];

/// The `LISTEN` channel.
pub(crate) const CHANNEL: &str = "tokenvault";
/// Advisory lock taken (per transaction) while migrating.
const MIGRATE_LOCK: i64 = 0x546f_6b56_6175_6c74;
/// Advisory lock taken (per session) by a management call on any replica.
const MANAGE_LOCK: i64 = MIGRATE_LOCK + 1;
/// A replica further behind than this many change rows reloads a snapshot.
pub(crate) const MAX_LOG_ROWS: i64 = 50_000;

/// One logged change: what a replica applies to its memory. The variant
/// order is part of the stored format (`tokenvault_changes.body`).
#[derive(Debug, Serialize, Deserialize)]
enum LogChange {
    PutMember(MemberRecord),
    DeleteMember {
        org: String,
        user: String,
    },
    PutOrgCutoff {
        org: String,
        at: u64,
    },
    RevokeRefresh(RefreshRecord),
    DeleteRefresh {
        id: [u8; 16],
        org: String,
        user: String,
    },
    RevokeAccess(AccessRecord),
    DeleteAccess {
        refresh_id: [u8; 16],
        id: [u8; 16],
    },
}

impl LogChange {
    fn into_change(self) -> Change {
        match self {
            LogChange::PutMember(m) => Change::PutMember(m),
            LogChange::DeleteMember { org, user } => Change::DeleteMember { org, user },
            LogChange::PutOrgCutoff { org, at } => Change::PutOrgCutoff { org, at },
            LogChange::RevokeRefresh(r) => match r.state {
                StoredState::Revoked { at, by, reason } => Change::RevokeRefresh {
                    id: r.id,
                    at,
                    by,
                    reason,
                },
                // Logged only when revoked; an active one is news to memory.
                StoredState::Active => Change::LoadRefresh(r),
            },
            LogChange::DeleteRefresh { id, org, user } => Change::DeleteRefresh { id, org, user },
            LogChange::RevokeAccess(a) => Change::RevokeAccess {
                rec: a,
                slot: SLOT_ANY,
            },
            LogChange::DeleteAccess { refresh_id, id } => Change::DeleteAccess {
                refresh_id,
                id,
                slot: SLOT_ANY,
            },
        }
    }
}

/// What one read of the change log returned, all from one snapshot.
#[derive(Debug, Default)]
pub(crate) struct LogBatch {
    /// The epoch: every transaction up to this number is reflected.
    pub seq: u64,
    /// Rows up to this number may have been pruned.
    pub floor: u64,
    /// `(seq, body)` of each row after the asked-for number, in order.
    pub rows: Vec<(u64, Vec<u8>)>,
    /// Whether the read stopped at [`MAX_LOG_ROWS`].
    pub truncated: bool,
}

impl LogBatch {
    /// The changes after `applied`, or `None` when they cannot be had from
    /// the log (pruned, too many, a hole, or an undecodable row): the caller
    /// then reloads a snapshot.
    ///
    /// This replica's own transactions come back too and are applied a
    /// second time, which changes nothing: each management call catches up
    /// before it commits, so what lies between its first and second
    /// application is only other replicas' deletions and access-token
    /// revocations, which commute with it.
    pub(crate) fn changes_after(&self, applied: u64) -> Option<Vec<Change>> {
        if self.truncated || applied < self.floor {
            return None;
        }
        let mut expect = applied + 1;
        let mut out = Vec::new();
        for (seq, body) in &self.rows {
            if *seq <= applied {
                continue;
            }
            if *seq == expect {
                expect += 1;
            } else if *seq + 1 != expect {
                return None;
            }
            out.push(decode::<LogChange>(body, "change log").ok()?.into_change());
        }
        if self.seq > applied && expect != self.seq + 1 {
            return None;
        }
        Some(out)
    }
}

/// A refresh record read through, with its last exchange.
pub(crate) struct ReadThrough {
    pub log: LogBatch,
    pub refresh: Option<(RefreshRecord, Option<u64>)>,
    pub access: Option<AccessRecord>,
}

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

/// How to reach the database, and the per-connection settings.
#[derive(Clone)]
pub(crate) struct ConnSpec {
    config: postgres::Config,
    lock_timeout: Duration,
}

impl ConnSpec {
    /// Parses a connection string (`postgresql://…` or `host=… user=…`).
    pub(crate) fn parse(
        url: &str,
        connect_timeout: Duration,
        lock_timeout: Duration,
    ) -> Result<Self> {
        let mut config: postgres::Config = url.parse().map_err(|e| {
            Error::InvalidArgument(format!("invalid PostgreSQL connection string: {e}"))
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(connect_timeout);
        }
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(10));
        if config.get_application_name().is_none() {
            config.application_name("tokenvault");
        }
        Ok(ConnSpec {
            config,
            lock_timeout,
        })
    }

    fn client(&self, application_name: Option<&str>) -> Result<Client> {
        let mut config = self.config.clone();
        if let Some(a) = application_name {
            config.application_name(a);
        }
        config.connect(NoTls).map_err(pg)
    }

    /// A connection with every statement prepared.
    pub(crate) fn connect(&self, application_name: Option<&str>) -> Result<Conn> {
        static SERIAL: AtomicU64 = AtomicU64::new(1);
        let mut client = self.client(application_name)?;
        client
            .batch_execute(&format!(
                "SET lock_timeout = {}",
                self.lock_timeout.as_millis().max(1)
            ))
            .map_err(pg)?;
        let st = Stmts::prepare(&mut client)?;
        Ok(Conn {
            client,
            st,
            serial: SERIAL.fetch_add(1, Ordering::Relaxed),
        })
    }
}

struct Stmts {
    member_put: Statement,
    member_del: Statement,
    cutoff_put: Statement,
    refresh_ins: Statement,
    refresh_revoke: Statement,
    refresh_del_access: Statement,
    refresh_del: Statement,
    last_refresh: Statement,
    access_ins: Statement,
    access_revoke: Statement,
    access_del: Statement,
    access_cap: Statement,
    event_ins: Statement,
    epoch_bump: Statement,
    log_ins: Statement,
    notify: Statement,
    fetch: Statement,
    meta_get: Statement,
    meta_put: Statement,
    refresh_get: Statement,
    refresh_org: Statement,
    refresh_member: Statement,
    events: Statement,
    event_new: Statement,
    event_put: Statement,
    events_oldest: Statement,
    events_del: Statement,
}

impl Stmts {
    fn prepare(c: &mut Client) -> Result<Stmts> {
        let mut p = |sql: &str| c.prepare(sql).map_err(pg);
        Ok(Stmts {
            member_put: p(
                "INSERT INTO tokenvault_members (org, member, role, not_before) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (org, member) DO UPDATE \
                 SET role = EXCLUDED.role, \
                 not_before = GREATEST(tokenvault_members.not_before, EXCLUDED.not_before)",
            )?,
            member_del: p("DELETE FROM tokenvault_members WHERE org = $1 AND member = $2")?,
            cutoff_put: p(
                "INSERT INTO tokenvault_cutoffs (org, at) VALUES ($1, $2) \
                 ON CONFLICT (org) DO UPDATE SET at = GREATEST(tokenvault_cutoffs.at, EXCLUDED.at)",
            )?,
            refresh_ins: p(
                "INSERT INTO tokenvault_refresh (id, org, member, revoked, record) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
            )?,
            // Revocation is one-way: an active record never replaces a revoked one.
            refresh_revoke: p("UPDATE tokenvault_refresh SET revoked = true, record = $2 \
                 WHERE id = $1 AND NOT revoked")?,
            refresh_del_access: p(
                "DELETE FROM tokenvault_access WHERE refresh_id = $1 RETURNING id",
            )?,
            refresh_del: p("DELETE FROM tokenvault_refresh WHERE id = $1")?,
            last_refresh: p("UPDATE tokenvault_refresh \
                 SET last_refresh = GREATEST(COALESCE(last_refresh, 0), $2) WHERE id = $1")?,
            access_ins: p(
                "INSERT INTO tokenvault_access (id, refresh_id, revoked, record) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING",
            )?,
            access_revoke: p("UPDATE tokenvault_access SET revoked = true, record = $2 \
                 WHERE id = $1 AND NOT revoked")?,
            access_del: p("DELETE FROM tokenvault_access WHERE id = $1")?,
            // The cap of live access tokens per refresh token, over every
            // replica's exchanges: the newest `$2` stay.
            access_cap: p("DELETE FROM tokenvault_access WHERE id IN ( \
                 SELECT id FROM tokenvault_access WHERE refresh_id = $1 \
                 ORDER BY n DESC OFFSET $2) RETURNING id")?,
            event_ins: p("INSERT INTO tokenvault_events (seq, org, record) \
                 VALUES (nextval('tokenvault_event_seq'), $1, $2)")?,
            epoch_bump: p("UPDATE tokenvault_epoch SET seq = seq + 1 WHERE id = 1 RETURNING seq")?,
            log_ins: p("INSERT INTO tokenvault_changes (seq, n, body) \
                 SELECT $1, t.n, t.body FROM unnest($2::bytea[]) WITH ORDINALITY AS t(body, n)")?,
            notify: p("SELECT pg_notify($1, $2)")?,
            // One statement, so one snapshot: the epoch, the log after $1,
            // and optionally an access record ($2) and a refresh record ($3,
            // or the parent of $2).
            fetch: p(
                "WITH e AS (SELECT seq, floor FROM tokenvault_epoch WHERE id = 1) \
                 SELECT 0::int2, e.seq, e.floor, NULL::bytea FROM e \
                 UNION ALL (SELECT 1::int2, c.seq, c.n, c.body \
                   FROM tokenvault_changes c, e WHERE c.seq > $1 AND c.seq <= e.seq \
                   ORDER BY c.seq, c.n LIMIT $4) \
                 UNION ALL SELECT 2::int2, 0, 0, a.record FROM tokenvault_access a WHERE a.id = $2 \
                 UNION ALL SELECT 3::int2, 0, COALESCE(r.last_refresh, -1), r.record \
                   FROM tokenvault_refresh r WHERE r.id = $3 \
                   OR r.id = (SELECT refresh_id FROM tokenvault_access WHERE id = $2)",
            )?,
            meta_get: p("SELECT value FROM tokenvault_meta WHERE name = $1")?,
            meta_put: p("INSERT INTO tokenvault_meta (name, value) VALUES ($1, $2) \
                 ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value")?,
            refresh_get: p("SELECT record FROM tokenvault_refresh WHERE id = $1")?,
            refresh_org: p("SELECT record FROM tokenvault_refresh WHERE org = $1")?,
            refresh_member: p(
                "SELECT record FROM tokenvault_refresh WHERE org = $1 AND member = $2",
            )?,
            events: p("SELECT seq, record FROM tokenvault_events WHERE org = $1 \
                 ORDER BY seq DESC LIMIT $2")?,
            event_new: p("INSERT INTO tokenvault_events (seq, org, record) \
                 VALUES (nextval('tokenvault_event_seq'), $1, $2) RETURNING seq")?,
            event_put: p("UPDATE tokenvault_events SET record = $2 WHERE seq = $1")?,
            events_oldest: p("SELECT seq, record FROM tokenvault_events ORDER BY seq LIMIT $1")?,
            events_del: p("DELETE FROM tokenvault_events WHERE seq = ANY($1)")?,
        })
    }
}

/// One connection and its prepared statements.
pub(crate) struct Conn {
    client: Client,
    st: Stmts,
    serial: u64,
}

impl Conn {
    /// Whether the connection is known to be gone.
    pub(crate) fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Starts listening for change notifications.
    pub(crate) fn listen(&mut self) -> Result<()> {
        self.client
            .batch_execute(&format!("LISTEN {CHANNEL}"))
            .map_err(pg)
    }

    /// Waits up to `timeout` for a notification; drains any others. Returns
    /// whether one came. An error or a closed connection is an error.
    pub(crate) fn wait(&mut self, timeout: Duration) -> Result<bool> {
        let mut n = self.client.notifications();
        let got = n.timeout_iter(timeout).next().map_err(pg)?.is_some();
        if got {
            while n.iter().next().map_err(pg)?.is_some() {}
        }
        drop(n);
        if self.client.is_closed() {
            return Err(Error::Io("PostgreSQL: the connection was closed".into()));
        }
        Ok(got)
    }

    /// Reads the log after `after`, and optionally an access record and a
    /// refresh record (or the access record's parent), in one snapshot.
    pub(crate) fn fetch(
        &mut self,
        after: u64,
        access: Option<&[u8; 16]>,
        refresh: Option<&[u8; 16]>,
    ) -> Result<ReadThrough> {
        let a: Option<&[u8]> = access.map(|a| &a[..]);
        let r: Option<&[u8]> = refresh.map(|r| &r[..]);
        let rows = self
            .client
            .query(&self.st.fetch, &[&i64_of(after), &a, &r, &MAX_LOG_ROWS])
            .map_err(pg)?;
        let mut out = ReadThrough {
            log: LogBatch::default(),
            refresh: None,
            access: None,
        };
        let mut have_epoch = false;
        for row in &rows {
            let kind: i16 = col(row, 0)?;
            let a: i64 = col(row, 1)?;
            let b: i64 = col(row, 2)?;
            match kind {
                0 => {
                    out.log.seq = u64_of(a);
                    out.log.floor = u64_of(b);
                    have_epoch = true;
                }
                1 => out.log.rows.push((u64_of(a), col(row, 3)?)),
                2 => {
                    let body: Vec<u8> = col(row, 3)?;
                    out.access = Some(decode::<AccessRecord>(&body, "access")?);
                }
                _ => {
                    let body: Vec<u8> = col(row, 3)?;
                    let rec = decode::<RefreshRecord>(&body, "refresh")?;
                    out.refresh = Some((rec, u64::try_from(b).ok()));
                }
            }
        }
        if !have_epoch {
            return Err(Error::Corrupt("the tokenvault_epoch row is missing".into()));
        }
        out.log.rows.sort_by_key(|(seq, _)| *seq);
        out.log.truncated = out.log.rows.len() as i64 >= MAX_LOG_ROWS;
        Ok(out)
    }

    /// Everything that lives in memory, and the epoch it reflects, from one
    /// repeatable-read snapshot.
    pub(crate) fn snapshot(&mut self) -> Result<(Snapshot, u64)> {
        let mut tx = self
            .client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .map_err(pg)?;
        let row = tx
            .query_one("SELECT seq FROM tokenvault_epoch WHERE id = 1", &[])
            .map_err(pg)?;
        let seq = u64_of(col(&row, 0)?);
        let mut s = Snapshot::default();
        for row in tx
            .query(
                "SELECT org, member, role, not_before FROM tokenvault_members",
                &[],
            )
            .map_err(pg)?
        {
            let role: i16 = col(&row, 2)?;
            match u8::try_from(role).ok().and_then(Role::from_index) {
                Some(role) => s.members.push(MemberRecord {
                    org: col(&row, 0)?,
                    user: col(&row, 1)?,
                    role,
                    not_before: u64_of(col(&row, 3)?),
                }),
                None => s.skipped += 1,
            }
        }
        for row in tx
            .query("SELECT org, at FROM tokenvault_cutoffs", &[])
            .map_err(pg)?
        {
            s.org_cutoffs.push((col(&row, 0)?, u64_of(col(&row, 1)?)));
        }
        let mut it = tx
            .query_raw(
                "SELECT record, last_refresh FROM tokenvault_refresh",
                std::iter::empty::<i32>(),
            )
            .map_err(pg)?;
        while let Some(row) = it.next().map_err(pg)? {
            let body: &[u8] = col(&row, 0)?;
            match decode::<RefreshRecord>(body, "refresh") {
                Ok(r) => {
                    if let Some(at) = col::<Option<i64>>(&row, 1)? {
                        s.last_refresh.push((r.id, u64_of(at)));
                    }
                    s.refresh.push(r);
                }
                Err(_) => s.skipped += 1,
            }
        }
        drop(it);
        let mut it = tx
            .query_raw(
                "SELECT record FROM tokenvault_access",
                std::iter::empty::<i32>(),
            )
            .map_err(pg)?;
        while let Some(row) = it.next().map_err(pg)? {
            let body: &[u8] = col(&row, 0)?;
            match decode::<AccessRecord>(body, "access") {
                Ok(a) => s.access.push(a),
                Err(_) => s.skipped += 1,
            }
        }
        drop(it);
        tx.commit().map_err(pg)?;
        Ok((s, seq))
    }

    /// Deletes change rows older than `retention` and raises the floor, in
    /// one transaction. Returns how many rows went.
    pub(crate) fn prune(&mut self, retention: Duration) -> Result<u64> {
        let mut tx = self.client.transaction().map_err(pg)?;
        let secs = retention.as_secs_f64();
        let row = tx
            .query_one(
                "SELECT COALESCE(max(seq), 0) FROM tokenvault_changes \
                 WHERE at < clock_timestamp() - make_interval(secs => $1)",
                &[&secs],
            )
            .map_err(pg)?;
        let upto: i64 = col(&row, 0)?;
        if upto == 0 {
            return Ok(0);
        }
        tx.execute(
            "UPDATE tokenvault_epoch SET floor = GREATEST(floor, $1) WHERE id = 1",
            &[&upto],
        )
        .map_err(pg)?;
        let n = tx
            .execute("DELETE FROM tokenvault_changes WHERE seq <= $1", &[&upto])
            .map_err(pg)?;
        tx.commit().map_err(pg)?;
        Ok(n)
    }

    fn commit(
        &mut self,
        changes: &[Change],
        cap: i64,
        began: &std::cell::Cell<bool>,
    ) -> Result<Option<u64>> {
        let st = &self.st;
        let mut tx = self.client.transaction().map_err(pg)?;
        began.set(true);
        let mut logged: Vec<LogChange> = Vec::new();
        let mut capped: Vec<[u8; 16]> = Vec::new();
        for c in changes {
            match c {
                Change::PutMember(m) => {
                    tx.execute(
                        &st.member_put,
                        &[
                            &m.org,
                            &m.user,
                            &(m.role as u8 as i16),
                            &i64_of(m.not_before),
                        ],
                    )
                    .map_err(pg)?;
                    logged.push(LogChange::PutMember(m.clone()));
                }
                Change::DeleteMember { org, user } => {
                    tx.execute(&st.member_del, &[org, user]).map_err(pg)?;
                    logged.push(LogChange::DeleteMember {
                        org: org.clone(),
                        user: user.clone(),
                    });
                }
                Change::PutOrgCutoff { org, at } => {
                    tx.execute(&st.cutoff_put, &[org, &i64_of(*at)])
                        .map_err(pg)?;
                    logged.push(LogChange::PutOrgCutoff {
                        org: org.clone(),
                        at: *at,
                    });
                }
                Change::IssueRefresh(r) => {
                    let body = encode(r)?;
                    tx.execute(
                        &st.refresh_ins,
                        &[&&r.id[..], &r.org, &r.user, &false, &body],
                    )
                    .map_err(pg)?;
                }
                Change::LoadRefresh(_) => {
                    return Err(Error::Corrupt(
                        "a loaded record is not a change to commit (a bug in tokenvault)".into(),
                    ));
                }
                Change::RevokeRefresh { id, at, by, reason } => {
                    let Some(row) = tx.query_opt(&st.refresh_get, &[&&id[..]]).map_err(pg)? else {
                        return Err(Error::Corrupt(format!(
                            "token {} is in memory but not in the database",
                            crate::token::TokenId(*id)
                        )));
                    };
                    let mut r: RefreshRecord = decode(col::<&[u8]>(&row, 0)?, "refresh")?;
                    if r.state == StoredState::Active {
                        r.state = StoredState::Revoked {
                            at: *at,
                            by: by.clone(),
                            reason: reason.clone(),
                        };
                        tx.execute(&st.refresh_revoke, &[&&r.id[..], &encode(&r)?])
                            .map_err(pg)?;
                        logged.push(LogChange::RevokeRefresh(r));
                    }
                }
                Change::DeleteRefresh { id, org, user } => {
                    for row in tx.query(&st.refresh_del_access, &[&&id[..]]).map_err(pg)? {
                        let aid: &[u8] = col(&row, 0)?;
                        logged.push(LogChange::DeleteAccess {
                            refresh_id: *id,
                            id: id_of(aid)?,
                        });
                    }
                    tx.execute(&st.refresh_del, &[&&id[..]]).map_err(pg)?;
                    logged.push(LogChange::DeleteRefresh {
                        id: *id,
                        org: org.clone(),
                        user: user.clone(),
                    });
                }
                Change::PutLastRefresh { id, at } => {
                    tx.execute(&st.last_refresh, &[&&id[..], &i64_of(*at)])
                        .map_err(pg)?;
                }
                Change::RevokeAccess { rec: a, .. } => {
                    tx.execute(&st.access_revoke, &[&&a.id[..], &encode(a)?])
                        .map_err(pg)?;
                    logged.push(LogChange::RevokeAccess(a.clone()));
                }
                Change::PutAccess { rec: a, .. } => {
                    tx.execute(
                        &st.access_ins,
                        &[&&a.id[..], &&a.refresh_id[..], &false, &encode(a)?],
                    )
                    .map_err(pg)?;
                    if !capped.contains(&a.refresh_id) {
                        capped.push(a.refresh_id);
                    }
                }
                Change::DeleteAccess { refresh_id, id, .. } => {
                    tx.execute(&st.access_del, &[&&id[..]]).map_err(pg)?;
                    logged.push(LogChange::DeleteAccess {
                        refresh_id: *refresh_id,
                        id: *id,
                    });
                }
                Change::Event(e) => {
                    tx.execute(&st.event_ins, &[&e.org, &encode_event(e)?])
                        .map_err(pg)?;
                }
            }
        }
        for refresh_id in capped {
            for row in tx
                .query(&st.access_cap, &[&&refresh_id[..], &cap])
                .map_err(pg)?
            {
                let aid: &[u8] = col(&row, 0)?;
                logged.push(LogChange::DeleteAccess {
                    refresh_id,
                    id: id_of(aid)?,
                });
            }
        }
        let mut seq = None;
        if !logged.is_empty() {
            let bodies = logged.iter().map(encode).collect::<Result<Vec<_>>>()?;
            // Last, so that the epoch row is locked for as short as can be;
            // the lock is held to commit, which is what orders commits.
            let row = tx.query_one(&st.epoch_bump, &[]).map_err(pg)?;
            let s: i64 = col(&row, 0)?;
            tx.execute(&st.log_ins, &[&s, &bodies]).map_err(pg)?;
            tx.execute(&st.notify, &[&CHANNEL, &s.to_string()])
                .map_err(pg)?;
            seq = Some(u64_of(s));
        }
        tx.commit().map_err(pg)?;
        Ok(seq)
    }
}

/// Creates or upgrades the schema and records the key fingerprint, under a
/// transaction-scoped advisory lock. With `create` false, a database without
/// the schema is [`Error::NotFound`].
fn migrate(c: &mut Client, fingerprint: &[u8], create: bool) -> Result<()> {
    let mut tx = c.transaction().map_err(pg)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK])
        .map_err(pg)?;
    let exists: bool = col(
        &tx.query_one(
            "SELECT to_regclass('tokenvault_migrations') IS NOT NULL",
            &[],
        )
        .map_err(pg)?,
        0,
    )?;
    if !exists {
        if !create {
            return Err(Error::NotFound(
                "no tokenvault schema in this database (create one first)".into(),
            ));
        }
        tx.batch_execute(
            "CREATE TABLE tokenvault_migrations (\
             version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .map_err(pg)?;
    }
    let current: i32 = col(
        &tx.query_one(
            "SELECT COALESCE(max(version), 0) FROM tokenvault_migrations",
            &[],
        )
        .map_err(pg)?,
        0,
    )?;
    let latest = MIGRATIONS.last().map_or(0, |m| m.0);
    if current > latest {
        return Err(Error::Corrupt(format!(
            "the database schema is at version {current}, newer than this tokenvault \
             knows ({latest}); upgrade tokenvault"
        )));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        tx.batch_execute(sql).map_err(pg)?;
        tx.execute(
            "INSERT INTO tokenvault_migrations (version) VALUES ($1)",
            &[version],
        )
        .map_err(pg)?;
    }
    // The first replica to get here sets the key fingerprint; the store then
    // checks it, so a replica with another key is refused.
    let have: Option<Row> = tx
        .query_opt(
            "SELECT 1 FROM tokenvault_meta WHERE name = 'key_fingerprint'",
            &[],
        )
        .map_err(pg)?;
    if have.is_none() {
        tx.execute(
            "INSERT INTO tokenvault_meta (name, value) VALUES \
             ('key_fingerprint', $1), ('schema', $2) ON CONFLICT (name) DO NOTHING",
            &[&fingerprint, &&b"1"[..]],
        )
        .map_err(pg)?;
    }
    tx.commit().map_err(pg)
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

struct Shared {
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
    sh: Arc<Shared>,
}

/// Held by a management call on a shared store: no other replica's
/// management call runs until it is dropped (a session-level advisory lock
/// on a dedicated connection, which this thread's commits then use).
pub(crate) struct ManageLock {
    sh: Arc<Shared>,
}

impl Drop for ManageLock {
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
    pub(crate) fn open(
        spec: ConnSpec,
        pool_size: usize,
        cap: usize,
        fingerprint: &[u8],
        create: bool,
    ) -> Result<Self> {
        let mut c = spec.client(None)?;
        migrate(&mut c, fingerprint, create)?;
        let first = spec.connect(None)?;
        drop(c);
        let pool: Vec<Mutex<Option<Conn>>> =
            (0..pool_size.max(1)).map(|_| Mutex::new(None)).collect();
        *pool[0].lock() = Some(first);
        Ok(PgBackend {
            sh: Arc::new(Shared {
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

    /// The epoch of the last [`Backend::load`].
    pub(crate) fn loaded_seq(&self) -> u64 {
        self.sh.loaded_seq.load(Ordering::Acquire)
    }

    /// Takes the fleet-wide management lock (waiting for this process's
    /// other management calls first, then for other replicas', up to the
    /// lock timeout).
    pub(crate) fn manage_lock(&self) -> Result<ManageLock> {
        let sh = &self.sh;
        {
            let mut m = sh.manager.lock();
            while m.busy {
                sh.manager_free.wait(&mut m);
            }
            m.busy = true;
        }
        // From here the guard releases the local claim, whatever happens.
        let guard = ManageLock { sh: sh.clone() };
        let mut w = sh.writer.lock();
        for attempt in 0..2 {
            if w.as_ref().is_some_and(Conn::is_closed) {
                *w = None;
            }
            let fresh = w.is_none();
            if fresh {
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
                    if fresh || attempt == 1 {
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
            let fresh = g.is_none();
            if fresh {
                *g = Some(sh.spec.connect(None)?);
            }
            let Some(c) = g.as_mut() else { continue };
            match f(c) {
                Ok(r) => return Ok(r),
                Err(e) => {
                    if c.is_closed() {
                        *g = None;
                        if retry() && !fresh && attempt == 0 {
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

    /// See [`Conn::fetch`]; on a pooled connection (or the management one).
    pub(crate) fn fetch(
        &self,
        after: u64,
        access: Option<&[u8; 16]>,
        refresh: Option<&[u8; 16]>,
    ) -> Result<ReadThrough> {
        self.with_conn(|| true, |c| c.fetch(after, access, refresh))
    }

    /// See [`Conn::snapshot`].
    pub(crate) fn snapshot(&self) -> Result<(Snapshot, u64)> {
        self.with_conn(|| true, Conn::snapshot)
    }
}

impl Backend for PgBackend {
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

    fn load(
        &self,
        apply: &(dyn Fn(Change) + Sync),
        refresh: &(dyn Fn(&RefreshView<'_>) + Sync),
    ) -> Result<Loaded> {
        let (s, seq) = self.snapshot()?;
        self.sh.loaded_seq.store(seq, Ordering::Release);
        let skipped = s.skipped;
        for c in s.into_changes() {
            match c {
                Change::LoadRefresh(r) => refresh(&r.view()),
                other => apply(other),
            }
        }
        // Events are numbered by a database sequence at commit.
        Ok(Loaded {
            last_event_seq: 0,
            skipped,
            warm: false,
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

    fn commit(&self, changes: &[Change]) -> Result<()> {
        let cap = self.sh.cap;
        // A failure at BEGIN (a connection that died while idle) is safe to
        // retry; a failure after it is not (the commit may have happened).
        let began = std::cell::Cell::new(false);
        self.with_conn(|| !began.get(), |c| c.commit(changes, cap, &began))
            .map(drop)
    }

    fn sync(&self) -> Result<()> {
        // A commit is durable when it returns (synchronous_commit).
        Ok(())
    }

    fn get_refresh(&self, id: &[u8; 16]) -> Result<Option<RefreshRecord>> {
        self.with_conn(
            || true,
            |c| match c
                .client
                .query_opt(&c.st.refresh_get, &[&&id[..]])
                .map_err(pg)?
            {
                Some(row) => Ok(Some(decode(col::<&[u8]>(&row, 0)?, "refresh")?)),
                None => Ok(None),
            },
        )
    }

    fn list_refresh(
        &self,
        org: &str,
        user: Option<&str>,
        _held: &[[u8; 16]],
    ) -> Result<Vec<RefreshRecord>> {
        self.with_conn(
            || true,
            |c| {
                let rows = match user {
                    Some(u) => c.client.query(&c.st.refresh_member, &[&org, &u]),
                    None => c.client.query(&c.st.refresh_org, &[&org]),
                }
                .map_err(pg)?;
                rows.iter()
                    .map(|row| decode(col::<&[u8]>(row, 0)?, "refresh"))
                    .collect()
            },
        )
    }

    fn events(
        &self,
        org: &str,
        limit: usize,
        _issued: &[([u8; 16], u64)],
    ) -> Result<Vec<EventRecord>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with_conn(
            || true,
            |c| {
                let rows = c.client.query(&c.st.events, &[&org, &limit]).map_err(pg)?;
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

fn check_integrity(c: &mut Conn) -> Result<IntegrityReport> {
    let mut r = IntegrityReport::default();
    let mut tx = c
        .client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .map_err(pg)?;
    let p = &mut r.problems;
    for row in tx
        .query("SELECT org, member, role FROM tokenvault_members", &[])
        .map_err(pg)?
    {
        r.members += 1;
        let role: i16 = col(&row, 2)?;
        if u8::try_from(role).ok().and_then(Role::from_index).is_none() {
            let (org, user): (String, String) = (col(&row, 0)?, col(&row, 1)?);
            p.push(format!("member {org}/{user} has an unknown role {role}"));
        }
    }
    let mut refresh_ids = HashSet::new();
    for row in tx
        .query(
            "SELECT id, org, member, revoked, record FROM tokenvault_refresh",
            &[],
        )
        .map_err(pg)?
    {
        r.refresh_tokens += 1;
        let id: &[u8] = col(&row, 0)?;
        match decode::<RefreshRecord>(col::<&[u8]>(&row, 4)?, "refresh") {
            Ok(rec) => {
                let revoked = rec.state != StoredState::Active;
                if rec.id[..] != *id
                    || rec.org != col::<&str>(&row, 1)?
                    || rec.user != col::<&str>(&row, 2)?
                    || revoked != col::<bool>(&row, 3)?
                {
                    p.push(format!(
                        "refresh record {} disagrees with its columns",
                        crate::TokenId(rec.id)
                    ));
                }
                refresh_ids.insert(rec.id);
            }
            Err(e) => p.push(format!("refresh: {e}")),
        }
    }
    for row in tx
        .query(
            "SELECT id, refresh_id, revoked, record FROM tokenvault_access",
            &[],
        )
        .map_err(pg)?
    {
        r.access_tokens += 1;
        let id: &[u8] = col(&row, 0)?;
        let parent: &[u8] = col(&row, 1)?;
        match decode::<AccessRecord>(col::<&[u8]>(&row, 3)?, "access") {
            Ok(a) => {
                if a.id[..] != *id
                    || a.refresh_id[..] != *parent
                    || a.revoked != col::<bool>(&row, 2)?
                {
                    p.push(format!(
                        "access record {} disagrees with its columns",
                        crate::TokenId(a.id)
                    ));
                }
                if !refresh_ids.contains(&a.refresh_id) {
                    p.push(format!(
                        "access record {} without its refresh record",
                        crate::TokenId(a.id)
                    ));
                }
            }
            Err(e) => p.push(format!("access: {e}")),
        }
    }
    for row in tx
        .query("SELECT record FROM tokenvault_events", &[])
        .map_err(pg)?
    {
        r.events += 1;
        if let Err(e) = decode_event(col::<&[u8]>(&row, 0)?) {
            p.push(format!("events: {e}"));
        }
    }
    let row = tx
        .query_one("SELECT seq, floor FROM tokenvault_epoch WHERE id = 1", &[])
        .map_err(pg)?;
    let (seq, floor): (i64, i64) = (col(&row, 0)?, col(&row, 1)?);
    let mut seen: HashMap<i64, ()> = HashMap::new();
    for row in tx
        .query("SELECT seq, body FROM tokenvault_changes", &[])
        .map_err(pg)?
    {
        let s: i64 = col(&row, 0)?;
        if s <= floor || s > seq {
            p.push(format!(
                "change log row {s} outside ({floor}, {seq}] of the epoch row"
            ));
        }
        seen.insert(s, ());
        if let Err(e) = decode::<LogChange>(col::<&[u8]>(&row, 1)?, "change log") {
            p.push(format!("change log row {s}: {e}"));
        }
    }
    let expected = usize::try_from(seq - floor).unwrap_or(0);
    if seen.len() != expected {
        p.push(format!(
            "change log holds {} of the {expected} transactions after the floor",
            seen.len()
        ));
    }
    tx.commit().map_err(pg)?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member_body(user: &str) -> Vec<u8> {
        encode(&LogChange::PutMember(MemberRecord {
            org: "acme".into(),
            user: user.into(),
            role: Role::User,
            not_before: 0,
        }))
        .unwrap()
    }

    fn batch(seq: u64, floor: u64, rows: &[u64]) -> LogBatch {
        LogBatch {
            seq,
            floor,
            rows: rows.iter().map(|s| (*s, member_body("u"))).collect(),
            truncated: false,
        }
    }

    #[test]
    fn changes_after_needs_every_sequence_number() {
        // Two rows for 3, one for 4: contiguous from 2.
        let b = batch(4, 0, &[3, 3, 4]);
        assert_eq!(b.changes_after(2).map(|c| c.len()), Some(3));
        // Nothing new.
        assert_eq!(b.changes_after(4).map(|c| c.len()), Some(0));
        // A hole (3 missing when 1 is applied).
        assert!(b.changes_after(1).is_none());
        // Rows pruned past what is applied.
        let pruned = batch(4, 3, &[4]);
        assert!(pruned.changes_after(2).is_none());
        assert_eq!(pruned.changes_after(3).map(|c| c.len()), Some(1));
        // The epoch says 5 but the rows stop at 4.
        assert!(batch(5, 0, &[3, 4]).changes_after(2).is_none());
        // Truncated reads and undecodable rows mean a reload.
        let mut t = batch(4, 0, &[3, 4]);
        t.truncated = true;
        assert!(t.changes_after(2).is_none());
        let mut bad = batch(3, 0, &[3]);
        bad.rows[0].1 = vec![1, 200];
        assert!(bad.changes_after(2).is_none());
    }
}
