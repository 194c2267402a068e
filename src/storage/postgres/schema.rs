//! The schema: its migrations, in order, and the tables.

use super::*;

/// The schema migrations, in order. A migration is never edited once
/// released; a change of schema is a new entry.
pub(crate) const MIGRATIONS: &[(i32, &str)] = &[
    (
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
    ),
    (
        2,
        r#"
CREATE TABLE tokenvault_org_policy (
    org text PRIMARY KEY,
    record bytea NOT NULL
);
"#,
    ),
    (
        3,
        r#"
ALTER TABLE tokenvault_refresh
    ADD COLUMN last_ip inet,
    ADD COLUMN last_agent text;
"#,
    ),
];

/// The tables, for sizes and tests.
pub(crate) const TABLES: &[&str] = &[
    "tokenvault_meta",
    "tokenvault_members",
    "tokenvault_cutoffs",
    "tokenvault_org_policy",
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
pub(crate) const MIGRATE_LOCK: i64 = 0x546f_6b56_6175_6c74;
/// Advisory lock taken (per session) by a management call on any replica.
pub(crate) const MANAGE_LOCK: i64 = MIGRATE_LOCK + 1;
/// A replica further behind than this many change rows reloads a snapshot.
pub(crate) const MAX_LOG_ROWS: i64 = 50_000;

/// Creates or upgrades the schema and records the key fingerprint, under a
/// transaction-scoped advisory lock. With `create` false, a database without
/// the schema is [`Error::NotFound`].
pub(crate) fn migrate(c: &mut Client, fingerprint: &[u8], create: bool) -> Result<()> {
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
