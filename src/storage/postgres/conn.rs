//! Connections: how to reach the database, the prepared statements, and
//! one connection's calls (commit, fetch, snapshot, listen).

use super::*;
use crate::types::ClientInfo;

/// How to reach the database, and the per-connection settings.
#[derive(Clone)]
pub(crate) struct ConnSpec {
    pub(crate) config: postgres::Config,
    pub(crate) lock_timeout: Duration,
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

    pub(crate) fn client(&self, application_name: Option<&str>) -> Result<Client> {
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

pub(crate) struct Stmts {
    pub(crate) member_put: Statement,
    pub(crate) member_role: Statement,
    pub(crate) member_cutoff: Statement,
    pub(crate) member_del: Statement,
    pub(crate) cutoff_put: Statement,
    pub(crate) policy_put: Statement,
    pub(crate) refresh_ins: Statement,
    pub(crate) refresh_revoke: Statement,
    pub(crate) refresh_label: Statement,
    pub(crate) refresh_active_org: Statement,
    pub(crate) refresh_active_member: Statement,
    pub(crate) refresh_revoke_many: Statement,
    pub(crate) refresh_del_access: Statement,
    pub(crate) refresh_del: Statement,
    pub(crate) last_refresh: Statement,
    pub(crate) access_ins: Statement,
    pub(crate) access_get: Statement,
    pub(crate) access_revoke: Statement,
    pub(crate) access_del: Statement,
    pub(crate) access_cap: Statement,
    pub(crate) event_ins: Statement,
    pub(crate) epoch_bump: Statement,
    pub(crate) log_ins: Statement,
    pub(crate) notify: Statement,
    pub(crate) fetch: Statement,
    pub(crate) meta_get: Statement,
    pub(crate) meta_put: Statement,
    pub(crate) refresh_get: Statement,
    pub(crate) access_family: Statement,
    pub(crate) refresh_org: Statement,
    pub(crate) refresh_member: Statement,
    pub(crate) events: Statement,
    pub(crate) event_new: Statement,
    pub(crate) event_put: Statement,
    pub(crate) events_oldest: Statement,
    pub(crate) events_del: Statement,
}

impl Stmts {
    pub(crate) fn prepare(c: &mut Client) -> Result<Stmts> {
        let mut p = |sql: &str| c.prepare(sql).map_err(pg);
        Ok(Stmts {
            member_put: p(
                "INSERT INTO tokenvault_members (org, member, role, not_before) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (org, member) DO UPDATE \
                 SET role = EXCLUDED.role, \
                 not_before = GREATEST(tokenvault_members.not_before, EXCLUDED.not_before)",
            )?,
            member_role: p("UPDATE tokenvault_members SET role = $3 \
                 WHERE org = $1 AND member = $2")?,
            member_cutoff: p("UPDATE tokenvault_members \
                 SET not_before = GREATEST(not_before, $3) WHERE org = $1 AND member = $2")?,
            member_del: p("DELETE FROM tokenvault_members WHERE org = $1 AND member = $2")?,
            cutoff_put: p(
                "INSERT INTO tokenvault_cutoffs (org, at) VALUES ($1, $2) \
                 ON CONFLICT (org) DO UPDATE SET at = GREATEST(tokenvault_cutoffs.at, EXCLUDED.at)",
            )?,
            policy_put: p(
                "INSERT INTO tokenvault_org_policy (org, record) VALUES ($1, $2) \
                 ON CONFLICT (org) DO UPDATE SET record = EXCLUDED.record",
            )?,
            refresh_ins: p(
                "INSERT INTO tokenvault_refresh (id, org, member, revoked, record) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
            )?,
            // Revocation is one-way: an active record never replaces a revoked one.
            refresh_revoke: p("UPDATE tokenvault_refresh SET revoked = true, record = $2 \
                 WHERE id = $1 AND NOT revoked")?,
            // A new label: the record put back as it is otherwise.
            refresh_label: p("UPDATE tokenvault_refresh SET record = $2 WHERE id = $1")?,
            // A bulk revocation's candidates, then their revoked records
            // put back (ids and records in two arrays) where still active.
            refresh_active_org: p("SELECT record FROM tokenvault_refresh \
                 WHERE org = $1 AND NOT revoked")?,
            refresh_active_member: p("SELECT record FROM tokenvault_refresh \
                 WHERE org = $1 AND member = $2 AND NOT revoked")?,
            refresh_revoke_many: p("UPDATE tokenvault_refresh AS r \
                 SET revoked = true, record = u.record \
                 FROM unnest($1::bytea[], $2::bytea[]) AS u(id, record) \
                 WHERE r.id = u.id AND NOT r.revoked RETURNING r.id")?,
            refresh_del_access: p(
                "DELETE FROM tokenvault_access WHERE refresh_id = $1 RETURNING id",
            )?,
            refresh_del: p("DELETE FROM tokenvault_refresh WHERE id = $1")?,
            // The client goes with the latest time: an older write (a purge
            // on a replica that missed a later exchange) leaves it.
            last_refresh: p("UPDATE tokenvault_refresh \
                 SET last_refresh = GREATEST(COALESCE(last_refresh, 0), $2), \
                 last_ip = CASE WHEN $2 >= COALESCE(last_refresh, 0) \
                   THEN $3::inet ELSE last_ip END, \
                 last_agent = CASE WHEN $2 >= COALESCE(last_refresh, 0) \
                   THEN $4::text ELSE last_agent END \
                 WHERE id = $1")?,
            access_ins: p(
                "INSERT INTO tokenvault_access (id, refresh_id, revoked, record) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING",
            )?,
            access_get: p("SELECT record FROM tokenvault_access WHERE id = $1")?,
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
                 SELECT 0::int2, e.seq, e.floor, NULL::bytea, NULL::inet, NULL::text FROM e \
                 UNION ALL (SELECT 1::int2, c.seq, c.n, c.body, NULL::inet, NULL::text \
                   FROM tokenvault_changes c, e WHERE c.seq > $1 AND c.seq <= e.seq \
                   ORDER BY c.seq, c.n LIMIT $4) \
                 UNION ALL SELECT 2::int2, 0, 0, a.record, NULL::inet, NULL::text \
                   FROM tokenvault_access a WHERE a.id = $2 \
                 UNION ALL SELECT 3::int2, 0, COALESCE(r.last_refresh, -1), r.record, \
                   r.last_ip, r.last_agent \
                   FROM tokenvault_refresh r WHERE r.id = $3 \
                   OR r.id = (SELECT refresh_id FROM tokenvault_access WHERE id = $2)",
            )?,
            meta_get: p("SELECT value FROM tokenvault_meta WHERE name = $1")?,
            meta_put: p("INSERT INTO tokenvault_meta (name, value) VALUES ($1, $2) \
                 ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value")?,
            refresh_get: p("SELECT record FROM tokenvault_refresh WHERE id = $1")?,
            // A family's access records in the order they were stored
            // (`n`, as the cap's own statement orders them).
            access_family: p("SELECT id FROM tokenvault_access WHERE refresh_id = $1 \
                 ORDER BY n LIMIT $2")?,
            refresh_org: p("SELECT record FROM tokenvault_refresh WHERE org = $1")?,
            refresh_member: p(
                "SELECT record FROM tokenvault_refresh WHERE org = $1 AND member = $2",
            )?,
            events: p("SELECT seq, record FROM tokenvault_events WHERE org = $1 \
                 AND seq < $3 ORDER BY seq DESC LIMIT $2")?,
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
    pub(crate) client: Client,
    pub(crate) st: Stmts,
    pub(crate) serial: u64,
}

/// Sets the role of the stored member `(org, user)`; one memory holds and
/// the database lacks is corruption.
fn set_role(
    tx: &mut postgres::Transaction<'_>,
    st: &Stmts,
    org: &str,
    user: &str,
    role: Role,
) -> Result<()> {
    let n = tx
        .execute(&st.member_role, &[&org, &user, &(role as u8 as i16)])
        .map_err(pg)?;
    if n == 0 {
        return Err(Error::Corrupt(format!(
            "member {user} of {org} is in memory but not in the database"
        )));
    }
    Ok(())
}

/// Reads, changes with `f` and writes back the stored refresh record `id`
/// inside `tx`; one memory knows of and the database lacks is corruption.
fn update_refresh(
    tx: &mut postgres::Transaction<'_>,
    st: &Stmts,
    id: &[u8; 16],
    f: impl FnOnce(&mut RefreshRecord),
) -> Result<()> {
    let Some(row) = tx.query_opt(&st.refresh_get, &[&&id[..]]).map_err(pg)? else {
        return Err(Error::Corrupt(format!(
            "token {} is in memory but not in the database",
            crate::token::TokenId(*id)
        )));
    };
    let mut r: RefreshRecord = decode_refresh(col::<&[u8]>(&row, 0)?)?;
    f(&mut r);
    tx.execute(&st.refresh_label, &[&&r.id[..], &encode_refresh_bare(&r)?])
        .map_err(pg)?;
    Ok(())
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
                1 => out
                    .log
                    .rows
                    .push((u64_of(a), decode_row(col::<&[u8]>(row, 3)?))),
                2 => {
                    let body: Vec<u8> = col(row, 3)?;
                    out.access = Some(decode_access(&body)?);
                }
                _ => {
                    let body: Vec<u8> = col(row, 3)?;
                    let rec = decode_refresh(&body)?;
                    let last = u64::try_from(b).ok().map(|at| (at, client_of(row, 4)));
                    out.refresh = Some((rec, last));
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

    /// A read-only transaction in which every read sees one snapshot
    /// (repeatable read).
    pub(crate) fn read_only_snapshot(&mut self) -> Result<postgres::Transaction<'_>> {
        self.client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .map_err(pg)
    }

    /// Everything that lives in memory, and the epoch it reflects, from one
    /// repeatable-read snapshot.
    pub(crate) fn snapshot(&mut self) -> Result<(Snapshot, u64)> {
        let mut tx = self.read_only_snapshot()?;
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
        for row in tx
            .query("SELECT org, record FROM tokenvault_org_policy", &[])
            .map_err(pg)?
        {
            match decode::<OrgPolicyRecord>(col::<&[u8]>(&row, 1)?, "org policy") {
                Ok(p) => s.org_policies.push((col(&row, 0)?, p)),
                Err(_) => s.skipped += 1,
            }
        }
        let mut it = tx
            .query_raw(
                "SELECT record, last_refresh, last_ip, last_agent FROM tokenvault_refresh",
                std::iter::empty::<i32>(),
            )
            .map_err(pg)?;
        while let Some(row) = it.next().map_err(pg)? {
            let body: &[u8] = col(&row, 0)?;
            match decode_refresh(body) {
                Ok(r) => {
                    if let Some(at) = col::<Option<i64>>(&row, 1)? {
                        s.last_refresh.push((r.id, u64_of(at), client_of(&row, 2)));
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
            match decode_access(body) {
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

    pub(crate) fn commit(
        &mut self,
        changes: &[Change],
        cap: i64,
        began: &std::cell::Cell<bool>,
    ) -> Result<(Option<u64>, Committed)> {
        let st = &self.st;
        let mut tx = self.client.transaction().map_err(pg)?;
        began.set(true);
        let mut logged: Vec<LogChange> = Vec::new();
        let mut capped: Vec<[u8; 16]> = Vec::new();
        let mut done = Committed::default();
        for c in changes {
            match c {
                Change::AddMember { org, user, role } => {
                    tx.execute(&st.member_put, &[org, user, &(*role as u8 as i16), &0i64])
                        .map_err(pg)?;
                    logged.push(LogChange::AddMember {
                        org: org.clone(),
                        user: user.clone(),
                        role: *role,
                    });
                }
                Change::SetRole { org, user, role } => {
                    set_role(&mut tx, st, org, user, *role)?;
                    logged.push(LogChange::SetRole {
                        org: org.clone(),
                        user: user.clone(),
                        role: *role,
                    });
                }
                Change::MoveOwnership { org, to, from } => {
                    if let Some(from) = from {
                        set_role(&mut tx, st, org, from, Role::Admin)?;
                    }
                    set_role(&mut tx, st, org, to, Role::Owner)?;
                    logged.push(LogChange::MoveOwnership {
                        org: org.clone(),
                        to: to.clone(),
                        from: from.clone(),
                    });
                }
                Change::RemoveMember { org, user } => {
                    tx.execute(&st.member_del, &[org, user]).map_err(pg)?;
                    logged.push(LogChange::RemoveMember {
                        org: org.clone(),
                        user: user.clone(),
                    });
                }
                Change::MemberCutoff { org, user, at } => {
                    tx.execute(&st.member_cutoff, &[org, user, &i64_of(*at)])
                        .map_err(pg)?;
                    logged.push(LogChange::MemberCutoff {
                        org: org.clone(),
                        user: user.clone(),
                        at: *at,
                    });
                }
                Change::OrgCutoff { org, at } => {
                    tx.execute(&st.cutoff_put, &[org, &i64_of(*at)])
                        .map_err(pg)?;
                    logged.push(LogChange::OrgCutoff {
                        org: org.clone(),
                        at: *at,
                    });
                }
                Change::IssueRefresh(r) => {
                    let body = encode_refresh_bare(r)?;
                    tx.execute(
                        &st.refresh_ins,
                        &[&&r.id[..], &r.org, &r.user, &false, &body],
                    )
                    .map_err(pg)?;
                    logged.push(if r.life == Default::default() {
                        LogChange::Issued(r.clone())
                    } else {
                        LogChange::IssuedWithLife {
                            rec: r.clone(),
                            life: r.life.clone(),
                        }
                    });
                }
                Change::RevokeRefresh { id, at, by, reason } => {
                    let Some(row) = tx.query_opt(&st.refresh_get, &[&&id[..]]).map_err(pg)? else {
                        return Err(Error::Corrupt(format!(
                            "token {} is in memory but not in the database",
                            crate::token::TokenId(*id)
                        )));
                    };
                    let mut r: RefreshRecord = decode_refresh(col::<&[u8]>(&row, 0)?)?;
                    if r.state.revocable() {
                        r.state = StoredState::Revoked {
                            at: *at,
                            by: by.clone(),
                            reason: reason.clone(),
                        };
                        tx.execute(&st.refresh_revoke, &[&&r.id[..], &encode_refresh_bare(&r)?])
                            .map_err(pg)?;
                        logged.push(LogChange::RevokeRefresh {
                            id: *id,
                            at: *at,
                            by: by.clone(),
                            reason: reason.clone(),
                        });
                    }
                }
                Change::RevokeMany {
                    org,
                    user,
                    before,
                    at,
                    by,
                    reason,
                } => {
                    // Selected here, by owner (the tables also hold other
                    // replicas' tokens).
                    let rows = match user {
                        Some(u) => tx.query(&st.refresh_active_member, &[org, u]),
                        None => tx.query(&st.refresh_active_org, &[org]),
                    }
                    .map_err(pg)?;
                    // The stored record carries the state, so each is
                    // decoded, revoked and encoded here, as `RevokeRefresh`
                    // does it, and all are put back by one statement.
                    let mut ids: Vec<Vec<u8>> = Vec::new();
                    let mut bodies: Vec<Vec<u8>> = Vec::new();
                    for row in &rows {
                        let mut r: RefreshRecord = decode_refresh(col::<&[u8]>(row, 0)?)?;
                        if !r.revocable_before(*before) {
                            continue;
                        }
                        r.state = StoredState::Revoked {
                            at: *at,
                            by: by.clone(),
                            reason: reason.clone(),
                        };
                        ids.push(r.id.to_vec());
                        bodies.push(encode_refresh_bare(&r)?);
                    }
                    let mut revoked: Vec<[u8; 16]> = Vec::new();
                    if !ids.is_empty() {
                        for row in tx
                            .query(&st.refresh_revoke_many, &[&ids, &bodies])
                            .map_err(pg)?
                        {
                            revoked.push(id_of(col(&row, 0)?)?);
                        }
                    }
                    revoked.sort_unstable();
                    for chunk in revoked.chunks(log::IDS_PER_ROW) {
                        logged.push(LogChange::RevokeMany {
                            ids: chunk.to_vec(),
                            at: *at,
                            by: by.clone(),
                            reason: reason.clone(),
                        });
                    }
                    done.revoked.extend(revoked);
                }
                Change::RevokeFamily {
                    org,
                    user,
                    family,
                    at,
                    by,
                    reason,
                } => {
                    // Selected here, among the member's tokens, by their
                    // stored family; logged as the ids revoked, as
                    // RevokeMany is.
                    let rows = tx
                        .query(&st.refresh_active_member, &[org, user])
                        .map_err(pg)?;
                    let mut revoked: Vec<[u8; 16]> = Vec::new();
                    for row in &rows {
                        let mut r: RefreshRecord = decode_refresh(col::<&[u8]>(row, 0)?)?;
                        if r.family_root() != *family || !r.state.revocable() {
                            continue;
                        }
                        r.state = StoredState::Revoked {
                            at: *at,
                            by: by.clone(),
                            reason: reason.clone(),
                        };
                        tx.execute(&st.refresh_revoke, &[&&r.id[..], &encode_refresh_bare(&r)?])
                            .map_err(pg)?;
                        revoked.push(r.id);
                    }
                    revoked.sort_unstable();
                    for chunk in revoked.chunks(log::IDS_PER_ROW) {
                        logged.push(LogChange::RevokeMany {
                            ids: chunk.to_vec(),
                            at: *at,
                            by: by.clone(),
                            reason: reason.clone(),
                        });
                    }
                    done.revoked.extend(revoked);
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
                Change::SetLabel { id, label } => {
                    update_refresh(&mut tx, st, id, |r| r.label = label.clone())?;
                    logged.push(LogChange::SetLabel {
                        id: *id,
                        label: label.clone(),
                    });
                }
                Change::SetOrgPolicy { org, policy } => {
                    tx.execute(&st.policy_put, &[org, &encode(policy)?])
                        .map_err(pg)?;
                    logged.push(LogChange::SetOrgPolicy {
                        org: org.clone(),
                        policy: *policy,
                    });
                }
                Change::Claim(rec) => {
                    update_refresh(&mut tx, st, &rec.id, |r| {
                        r.verifier = rec.verifier;
                        r.life = rec.life.clone();
                    })?;
                    logged.push(LogChange::Claim(rec.clone()));
                }
                Change::SetDisabled { id, disabled } => {
                    update_refresh(&mut tx, st, id, |r| r.life.disabled = *disabled)?;
                    logged.push(LogChange::SetDisabled {
                        id: *id,
                        disabled: *disabled,
                    });
                }
                Change::Rotate { old, dies_at, new } => {
                    update_refresh(&mut tx, st, old, |r| r.rotate_to(*dies_at))?;
                    let body = encode_refresh_bare(new)?;
                    tx.execute(
                        &st.refresh_ins,
                        &[&&new.id[..], &new.org, &new.user, &false, &body],
                    )
                    .map_err(pg)?;
                    logged.push(LogChange::Rotate {
                        old: *old,
                        dies_at: *dies_at,
                        new: new.clone(),
                    });
                }
                Change::RotateOnUse { old, dies_at, new } => {
                    update_refresh(&mut tx, st, old, |r| r.spend_to(*dies_at))?;
                    let body = encode_refresh_bare(new)?;
                    tx.execute(
                        &st.refresh_ins,
                        &[&&new.id[..], &new.org, &new.user, &false, &body],
                    )
                    .map_err(pg)?;
                    logged.push(LogChange::RotateOnUse {
                        old: *old,
                        dies_at: *dies_at,
                        new: new.clone(),
                        family: new.family_root(),
                    });
                }
                Change::PutLastRefresh { id, at, client } => {
                    let ip = client.as_ref().and_then(|c| c.ip());
                    let agent = client.as_ref().and_then(|c| c.user_agent());
                    tx.execute(&st.last_refresh, &[&&id[..], &i64_of(*at), &ip, &agent])
                        .map_err(pg)?;
                }
                Change::RevokeAccess { refresh_id, id } => {
                    // Gone meanwhile (purged on another replica): nothing
                    // left to revoke.
                    if let Some(row) = tx.query_opt(&st.access_get, &[&&id[..]]).map_err(pg)? {
                        let mut a = decode_access(col::<&[u8]>(&row, 0)?)?;
                        if !a.revoked {
                            a.revoked = true;
                            tx.execute(&st.access_revoke, &[&&id[..], &encode_access(&a)?])
                                .map_err(pg)?;
                            logged.push(LogChange::RevokeAccess {
                                refresh_id: *refresh_id,
                                id: *id,
                            });
                        }
                    }
                }
                Change::PutAccess(a) => {
                    tx.execute(
                        &st.access_ins,
                        &[&&a.id[..], &&a.refresh_id[..], &false, &encode_access(a)?],
                    )
                    .map_err(pg)?;
                    if !capped.contains(&a.refresh_id) {
                        capped.push(a.refresh_id);
                    }
                }
                Change::DeleteAccess { refresh_id, id } => {
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
        Ok((seq, done))
    }
}

/// The client of a last exchange from the columns `at` (`last_ip`) and
/// `at + 1` (`last_agent`), cleaned as when it was recorded; `None` when
/// neither says anything (or a column cannot be read: the client is only
/// shown, never trusted).
fn client_of(row: &Row, at: usize) -> Option<ClientInfo> {
    let ip: Option<std::net::IpAddr> = row.try_get(at).ok().flatten();
    let agent: Option<String> = row.try_get(at + 1).ok().flatten();
    let c = ClientInfo::new(ip, agent.as_deref());
    (!c.is_empty()).then_some(c)
}
