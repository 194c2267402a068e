//! The PostgreSQL backend against a real server: the seed story and the
//! invariants on a shared store, two and three replicas on one database
//! (revocation propagation within the staleness bound, measured; the
//! listener's connection killed mid-stream; commits forced out of order;
//! a replica behind the pruned change log), concurrent first opens, and the
//! server stopped while replicas run.
//!
//! The server comes from `TOKENVAULT_PG_URL` (a libpq connection string with
//! rights to create databases and roles; `.ci/postgres.sh` starts a
//! throwaway cluster, sets it and runs these tests with `--include-ignored`).
//! Every test that needs the server is `#[ignore]`d, so that a plain
//! `cargo test --all-features` shows it as skipped rather than passed; run
//! on its own without the variable, such a test prints a note and returns,
//! unless `TOKENVAULT_PG_REQUIRED` is set, which makes that an error. The outage test also needs
//! `TOKENVAULT_PG_CTL`, a `pg_ctl` command line to which it appends `stop`
//! or `start`. Each test works in a database of its own.

#![cfg(feature = "postgres")]

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Barrier, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use common::store::seed_acme;
use postgres::{Client, NoTls};
use tokenvault::token::{decode_raw, encode_raw, TokenKind};
use tokenvault::{
    Actor, Config, Error, GenerateOptions, PostgresOptions, RevokeScope, Role, StoreKey,
    TokenState, TokenStore,
};

/// Held shared by every test, exclusively by the one that stops the server.
static SERVER: RwLock<()> = RwLock::new(());
static DB_SERIAL: AtomicU32 = AtomicU32::new(0);
const BOUND: Duration = Duration::from_millis(1000);

fn shared_server() -> RwLockReadGuard<'static, ()> {
    SERVER.read().unwrap_or_else(|e| e.into_inner())
}

fn exclusive_server() -> RwLockWriteGuard<'static, ()> {
    SERVER.write().unwrap_or_else(|e| e.into_inner())
}

fn admin_url() -> Option<String> {
    match std::env::var("TOKENVAULT_PG_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            assert!(
                std::env::var_os("TOKENVAULT_PG_REQUIRED").is_none(),
                "TOKENVAULT_PG_REQUIRED is set but TOKENVAULT_PG_URL is not"
            );
            eprintln!(
                "note: skipping a PostgreSQL test: TOKENVAULT_PG_URL is not set \
                 (.ci/postgres.sh starts a throwaway server and sets it)"
            );
            None
        }
    }
}

fn quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// `base` with another database and, optionally, another user, as a
/// key=value connection string.
fn url_with(base: &str, dbname: &str, user: Option<&str>) -> String {
    let c: postgres::Config = base.parse().expect("TOKENVAULT_PG_URL parses");
    let mut parts = Vec::new();
    for h in c.get_hosts() {
        match h {
            postgres::config::Host::Tcp(name) => parts.push(format!("host={}", quote(name))),
            postgres::config::Host::Unix(path) => {
                parts.push(format!("host={}", quote(&path.to_string_lossy())))
            }
        }
    }
    if let Some(p) = c.get_ports().first() {
        parts.push(format!("port={p}"));
    }
    if let Some(u) = user.or(c.get_user()) {
        parts.push(format!("user={}", quote(u)));
    }
    if user.is_none() {
        if let Some(pw) = c.get_password() {
            parts.push(format!("password={}", quote(&String::from_utf8_lossy(pw))));
        }
    }
    parts.push(format!("dbname={}", quote(dbname)));
    parts.join(" ")
}

/// A database of the test's own, dropped at the end.
struct TestDb {
    admin: String,
    name: String,
    url: String,
}

impl TestDb {
    fn new(tag: &str) -> Option<TestDb> {
        let admin = admin_url()?;
        let name = format!(
            "tv_{tag}_{}_{}",
            std::process::id(),
            DB_SERIAL.fetch_add(1, Ordering::Relaxed)
        );
        let mut c = Client::connect(&admin, NoTls).expect("connect to TOKENVAULT_PG_URL");
        c.batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
            .unwrap();
        c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        let url = url_with(&admin, &name, None);
        Some(TestDb { admin, name, url })
    }

    /// A superuser connection to this database.
    fn sql(&self) -> Client {
        Client::connect(&self.url, NoTls).unwrap()
    }

    fn open(&self, key: &StoreKey) -> TokenStore {
        open_on(&self.url, key, BOUND)
    }

    /// The change log's epoch: every commit so far is numbered at most this.
    fn epoch(&self) -> u64 {
        let seq: i64 = self
            .sql()
            .query_one("SELECT seq FROM tokenvault_epoch", &[])
            .unwrap()
            .get(0);
        seq as u64
    }

    /// Whether every store in `stores` read the change log up to `epoch`
    /// within ten seconds.
    fn caught_up(stores: &[&TokenStore], epoch: u64) -> bool {
        eventually(Duration::from_secs(10), || {
            stores
                .iter()
                .all(|s| s.sync_status().unwrap().applied_seq >= epoch)
        })
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut c) = Client::connect(&self.admin, NoTls) {
            let _ = c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

fn options(url: &str, bound: Duration) -> PostgresOptions {
    PostgresOptions::new(url)
        .staleness_bound(bound)
        .pool_size(2)
}

fn open_on(url: &str, key: &StoreKey, bound: Duration) -> TokenStore {
    // Some tests issue hundreds of tokens to one member.
    Config::postgres_with(options(url, bound))
        .key(key.clone())
        .max_live_tokens_per_member(10_000)
        .open()
        .unwrap()
}

fn key() -> StoreKey {
    StoreKey::generate().unwrap()
}

/// Waits (bounded) until `f` holds; returns whether it did.
fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn kind<T: std::fmt::Debug>(r: Result<T, Error>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(e) => e.kind(),
    }
}

// ----- without a server -----

#[test]
fn bad_configuration_is_refused_before_connecting() {
    let k = key();
    let e = Config::postgres("host=/nonexistent user=x")
        .open()
        .unwrap_err();
    assert!(
        e.kind() == "usage" && e.to_string().contains("store key"),
        "{e}"
    );
    let e = Config::postgres("postgresql://[broken")
        .key(k.clone())
        .open()
        .unwrap_err();
    assert_eq!(e.kind(), "usage", "{e}");
    for opts in [
        PostgresOptions::new("host=/x").staleness_bound(Duration::from_millis(1)),
        PostgresOptions::new("host=/x").poll_interval(Duration::from_secs(2)),
        PostgresOptions::new("host=/x").pool_size(0),
        PostgresOptions::new("host=/x").read_through_per_second(0),
    ] {
        let e = Config::postgres_with(opts)
            .key(k.clone())
            .open()
            .unwrap_err();
        assert_eq!(e.kind(), "usage", "{e}");
    }
    // Unreachable server: a clear I/O error.
    let e = Config::postgres("host=/nonexistent-dir-for-tokenvault user=x dbname=y")
        .key(k)
        .open()
        .unwrap_err();
    assert_eq!(e.kind(), "io", "{e}");
}

#[test]
fn the_connection_string_never_shows_in_debug() {
    let c = Config::postgres("postgresql://svc:hunter2-secret@127.0.0.1/tokens");
    let shown = format!("{c:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("PostgresOptions"), "{shown}");
}

// ----- one replica -----

/// The seed's story (tests/seed_story.rs) on a PostgreSQL store, then again
/// after reopening it.
#[test]
#[ignore = "needs PostgreSQL: .ci/postgres.sh"]
fn seed_story_on_postgres() {
    let _g = shared_server();
    let Some(db) = TestDb::new("seed") else {
        return;
    };
    let k = key();
    let store = db.open(&k);
    let (olivia, adam, uma) = seed_acme(&store);
    let own = store
        .generate(&uma, GenerateOptions::default().label("laptop"))
        .unwrap();
    assert!(own.token.expose().starts_with("tvr_"));
    assert_eq!(own.info.role_at_issue, Role::User);
    let to_adam = store
        .assign(&olivia, "adam", GenerateOptions::default().label("tf"))
        .unwrap();
    let to_uma = store.assign(&olivia, "uma", Default::default()).unwrap();
    let mut ids: Vec<_> = store.list_own(&uma).unwrap().iter().map(|t| t.id).collect();
    ids.sort();
    let mut want = vec![own.info.id, to_uma.info.id];
    want.sort();
    assert_eq!(ids, want);
    assert_eq!(store.list_own(&adam).unwrap()[0].id, to_adam.info.id);
    assert_eq!(store.list_org(&olivia).unwrap().len(), 3);
    assert_eq!(kind(store.list_org(&uma)), "forbidden");

    let g1 = store.exchange(to_uma.token.expose()).unwrap();
    let g2 = store.exchange(to_uma.token.expose()).unwrap();
    let who = store.verify(g1.access_token.expose()).unwrap();
    assert_eq!((&*who.user, who.role), ("uma", Role::User));
    assert!(store
        .authorize(g1.access_token.expose(), "incident-write")
        .is_ok());
    assert_eq!(
        kind(store.authorize(g1.access_token.expose(), "user-write")),
        "insufficient_scope"
    );
    let ga = store.exchange(to_adam.token.expose()).unwrap();
    assert!(store
        .authorize(ga.access_token.expose(), "user-write")
        .is_ok());

    store
        .revoke(&olivia, &to_uma.info.id, Some("rotated"))
        .unwrap();
    for g in [&g1, &g2] {
        assert_eq!(kind(store.verify(g.access_token.expose())), "revoked");
    }
    assert_eq!(kind(store.exchange(to_uma.token.expose())), "revoked");
    let listed = store.list_own(&uma).unwrap();
    let revoked = listed.iter().find(|t| t.id == to_uma.info.id).unwrap();
    assert!(matches!(
        &revoked.state,
        TokenState::Revoked { by, reason: Some(r), .. } if by == "olivia" && r == "rotated"
    ));
    assert!(store.exchange(own.token.expose()).is_ok());
    assert!(store.verify(ga.access_token.expose()).is_ok());
    let events = store.audit(&olivia, 100).unwrap();
    assert!(events.iter().any(|e| e.action == "token.revoke"));
    assert!(events.windows(2).all(|w| w[0].seq > w[1].seq));
    let report = store.check_integrity().unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!(report.refresh_tokens, 3);

    // Invariant 1: no secret in any table, as text or as bytes.
    let mut sql = db.sql();
    let mut dump = String::new();
    for table in [
        "meta", "members", "cutoffs", "refresh", "access", "events", "epoch", "changes",
    ] {
        for row in sql
            .query(&format!("SELECT t::text FROM tokenvault_{table} t"), &[])
            .unwrap()
        {
            dump.push_str(row.get::<_, &str>(0));
            dump.push('\n');
        }
    }
    assert!(
        dump.contains(&hex(own.info.id.as_bytes())),
        "the dump is not hex"
    );
    for (t, kind) in [
        (&own.token, TokenKind::Refresh),
        (&to_uma.token, TokenKind::Refresh),
        (&g1.access_token, TokenKind::Access),
        (&ga.access_token, TokenKind::Access),
    ] {
        let (_, secret) = decode_raw("tv", kind, t.expose()).unwrap();
        assert!(!dump.contains(&t.expose()[4..]));
        assert!(!dump.contains(&hex(&secret)), "a secret is stored");
    }

    // Reopened: everything is where it was.
    drop(store);
    let store = db.open(&k);
    assert_eq!(
        &*store.verify(ga.access_token.expose()).unwrap().user,
        "adam"
    );
    assert_eq!(kind(store.verify(g1.access_token.expose())), "revoked");
    assert!(store.exchange(own.token.expose()).is_ok());
    assert_eq!(store.member_role("acme", "uma"), Some(Role::User));
    // Another key is refused.
    let e = Config::postgres_with(options(&db.url, BOUND))
        .key(key())
        .open()
        .unwrap_err();
    assert!(matches!(e, Error::KeyMismatch), "{e}");
}

/// DESIGN.md's invariants 2, 3, 4, 6 and 7 across two replicas: each change
/// made on one is in force on the other.
#[test]
#[ignore = "needs PostgreSQL: .ci/postgres.sh"]
fn invariants_hold_across_replicas() {
    let _g = shared_server();
    let Some(db) = TestDb::new("inv") else {
        return;
    };
    let k = key();
    let a = db.open(&k);
    let b = db.open(&k);
    let (olivia, adam, uma) = seed_acme(&a);
    a.add_member("other", "oscar", Role::Owner).unwrap();
    let oscar = Actor::new("other", "oscar");
    // Management on B sees members added on A (it catches up first).
    let t_adam = b.generate(&adam, Default::default()).unwrap();
    let t_uma = b.generate(&uma, Default::default()).unwrap();
    let t_uma2 = a.generate(&uma, Default::default()).unwrap();
    let g_adam = a.exchange(t_adam.token.expose()).unwrap();
    let g_uma = a.exchange(t_uma.token.expose()).unwrap();
    let g_uma2 = b.exchange(t_uma2.token.expose()).unwrap();
    // Read through: tokens made on one replica verify on the other.
    assert!(b
        .authorize(g_adam.access_token.expose(), "user-write")
        .is_ok());
    assert!(b.verify(g_uma.access_token.expose()).is_ok());
    assert!(a.verify(g_uma2.access_token.expose()).is_ok());

    // 7 and 4: another org's Owner touches nothing, and is refused on both.
    assert_eq!(kind(b.revoke(&oscar, &t_uma.info.id, None)), "forbidden");
    assert_eq!(kind(a.revoke(&uma, &t_adam.info.id, None)), "forbidden");
    assert!(b.verify(g_uma.access_token.expose()).is_ok());

    // 3: a demotion on A cuts the scopes on B.
    a.set_role("acme", "adam", Role::User).unwrap();
    std::thread::sleep(BOUND);
    assert_eq!(
        kind(b.authorize(g_adam.access_token.expose(), "user-write")),
        "insufficient_scope"
    );
    assert_eq!(b.member_role("acme", "adam"), Some(Role::User));

    // 2: revoke_access on B is in force on A.
    b.revoke_access(g_uma2.access_token.expose()).unwrap();
    std::thread::sleep(BOUND);
    assert_eq!(kind(a.verify(g_uma2.access_token.expose())), "revoked");
    assert!(a.exchange(t_uma2.token.expose()).is_ok());

    // A cutoff on B revokes on A, for tokens issued before it.
    assert_eq!(
        kind(b.revoke_all(
            &olivia,
            RevokeScope::Member("uma".into()),
            Some(u64::MAX / 2)
        )),
        "usage"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        b.revoke_all(&olivia, RevokeScope::Member("uma".into()), Some(now + 1))
            .unwrap(),
        2
    );
    std::thread::sleep(BOUND);
    assert_eq!(kind(a.verify(g_uma.access_token.expose())), "revoked");
    assert_eq!(kind(a.exchange(t_uma2.token.expose())), "revoked");

    // 3: member removal on A stops every token of the member on B.
    let t_adam2 = a.generate(&adam, Default::default()).unwrap();
    let g_adam2 = b.exchange(t_adam2.token.expose()).unwrap();
    assert_eq!(a.remove_member("acme", "adam").unwrap(), 2);
    std::thread::sleep(BOUND);
    for g in [&g_adam, &g_adam2] {
        assert_eq!(kind(b.verify(g.access_token.expose())), "revoked");
    }
    assert_eq!(b.member_role("acme", "adam"), None);

    // One Owner per org, whichever replica asks.
    assert_eq!(kind(b.add_member("acme", "zed", Role::Owner)), "conflict");
    a.add_member("acme", "zed", Role::Admin).unwrap();
    b.transfer_ownership("acme", "zed").unwrap();
    std::thread::sleep(BOUND);
    assert_eq!(a.member_role("acme", "zed"), Some(Role::Owner));
    assert_eq!(a.member_role("acme", "olivia"), Some(Role::Admin));

    // 6: both replicas agree with the database.
    for s in [&a, &b] {
        let r = s.check_integrity().unwrap();
        assert!(r.is_clean(), "{:?}", r.problems);
    }
}

/// A member removed and added again on one replica keeps working there and
/// on another once that replica's own changes come back through the log
/// (which must not apply the removal a second time).
#[test]
#[ignore = "needs PostgreSQL: .ci/postgres.sh"]
fn a_member_added_again_keeps_working_on_every_replica() {
    let _g = shared_server();
    let Some(db) = TestDb::new("readd") else {
        return;
    };
    let k = key();
    let a = db.open(&k);
    let b = db.open(&k);
    let (_, _, uma) = seed_acme(&a);
    a.add_member("acme", "bob", Role::User).unwrap();
    let old = a
        .generate(&Actor::new("acme", "bob"), Default::default())
        .unwrap();
    let g_old = a.exchange(old.token.expose()).unwrap();
    a.remove_member("acme", "bob").unwrap();
    a.add_member("acme", "bob", Role::Admin).unwrap();
    let t = a
        .generate(&Actor::new("acme", "bob"), Default::default())
        .unwrap();
    let g = a.exchange(t.token.expose()).unwrap();
    let g_uma = a
        .exchange(a.generate(&uma, Default::default()).unwrap().token.expose())
        .unwrap();
    // Both replicas have read the log past all of it.
    let epoch = db.epoch();
    assert!(epoch >= 4);
    assert!(TestDb::caught_up(&[&a, &b], epoch));
    std::thread::sleep(BOUND);
    for s in [&a, &b] {
        assert!(s.authorize(g.access_token.expose(), "user-write").is_ok());
        assert_eq!(kind(s.verify(g_old.access_token.expose())), "revoked");
        assert!(s.verify(g_uma.access_token.expose()).is_ok());
        assert_eq!(s.member_role("acme", "bob"), Some(Role::Admin));
    }
}

/// Membership in one call and the token reads on a shared store: an
/// ownership move to a new member, a demotion and a removal made by
/// `sync_org` on replica A hold on replica B once it has read the log (no
/// snapshot reload: the intents are followed, the label row included); B's
/// `get` finds a token A issued at once (read through the gate) and shows
/// the label A set.
#[test]
#[ignore = "needs PostgreSQL: .ci/postgres.sh"]
fn sync_org_and_token_reads_reach_every_replica() {
    let _g = shared_server();
    let Some(db) = TestDb::new("syncorg") else {
        return;
    };
    let k = key();
    let a = db.open(&k);
    let b = db.open(&k);
    let (olivia, adam, uma) = seed_acme(&a);
    let umas = a.generate(&uma, Default::default()).unwrap();
    let g_uma = a.exchange(umas.token.expose()).unwrap();
    // On B at once, before its sync thread need have heard of it.
    let got = b.get(&uma, &umas.info.id).unwrap();
    assert_eq!((got.id, got.user.as_str()), (umas.info.id, "uma"));
    assert_eq!(b.get(&olivia, &umas.info.id).unwrap().id, umas.info.id);
    assert_eq!(kind(b.get(&adam, &umas.info.id)), "forbidden");
    a.set_label(&uma, &umas.info.id, Some("ci")).unwrap();
    assert_eq!(
        b.get(&uma, &umas.info.id).unwrap().label.as_deref(),
        Some("ci")
    );

    let reloads = b.sync_status().unwrap().reloads;
    let report = a
        .sync_org(
            "acme",
            [
                ("nina", Role::Owner),
                ("olivia", Role::User),
                ("adam", Role::Admin),
            ],
        )
        .unwrap();
    assert_eq!(report.new_owner.as_deref(), Some("nina"));
    assert_eq!(report.removed, vec!["uma".to_string()]);
    assert_eq!(report.tokens_revoked, 1);
    assert!(TestDb::caught_up(&[&a, &b], db.epoch()));
    std::thread::sleep(BOUND);
    let want = vec![
        ("adam".to_string(), Role::Admin),
        ("nina".to_string(), Role::Owner),
        ("olivia".to_string(), Role::User),
    ];
    for s in [&a, &b] {
        assert_eq!(s.members("acme"), want);
        assert_eq!(kind(s.verify(g_uma.access_token.expose())), "revoked");
        assert_eq!(kind(s.exchange(umas.token.expose())), "revoked");
    }
    assert_eq!(b.sync_status().unwrap().reloads, reloads);
    // The same list again changes nothing, on either replica.
    assert!(b
        .sync_org(
            "acme",
            [
                ("adam", Role::Admin),
                ("olivia", Role::User),
                ("nina", Role::Owner),
            ],
        )
        .unwrap()
        .is_empty());
    // The new Owner reads the removed member's (revoked) token on B.
    let nina = Actor::new("acme", "nina");
    let seen = b.get(&nina, &umas.info.id).unwrap();
    assert!(
        matches!(seen.state, tokenvault::TokenState::Revoked { .. }),
        "{seen:?}"
    );
}

/// A bulk revocation on one replica revokes, in the database, tokens that
/// another replica issued (whether or not this one has applied them from the
/// change log yet), counts them, and the issuing replica's memory follows
/// through the change log (no snapshot reload), also when the revocation is
/// logged in several rows. Tokens issued after it stay usable everywhere.
#[test]
#[ignore = "needs PostgreSQL: .ci/postgres.sh"]
fn bulk_revocation_reaches_tokens_another_replica_issued() {
    let _g = shared_server();
    let Some(db) = TestDb::new("bulk") else {
        return;
    };
    let k = key();
    let a = db.open(&k);
    let b = db.open(&k);
    let (olivia, adam, uma) = seed_acme(&a);
    // More of uma's tokens than one log row names, issued on B only.
    b.catch_up().unwrap();
    let mut on_b = Vec::new();
    b.bulk_issue_for_benchmarks(&uma, 1_100, 1, &mut |r, acc| on_b.push((r, acc)))
        .unwrap();
    let t_b = b.generate(&uma, Default::default()).unwrap();
    let g_b = b.exchange(t_b.token.expose()).unwrap();
    let t_a = a.generate(&uma, Default::default()).unwrap();
    let g_adam = b
        .exchange(
            b.generate(&adam, Default::default())
                .unwrap()
                .token
                .expose(),
        )
        .unwrap();
    // The database selects the tokens, whatever A's memory holds of B's so
    // far (they reach A through the change log, perhaps not yet).
    assert!(b.verify(on_b[7].1[0].expose()).is_ok());
    assert!(b.verify(g_b.access_token.expose()).is_ok());
    let reloads = b.sync_status().unwrap().reloads;

    assert_eq!(
        a.revoke_all(&olivia, RevokeScope::Member("uma".into()), None)
            .unwrap(),
        1_102
    );
    assert!(TestDb::caught_up(&[&b], db.epoch()));
    assert_eq!(b.sync_status().unwrap().reloads, reloads);
    assert_eq!(kind(b.verify(g_b.access_token.expose())), "revoked");
    assert_eq!(kind(b.exchange(t_b.token.expose())), "revoked");
    for (r, acc) in on_b.iter().step_by(97).chain(on_b.last()) {
        assert_eq!(kind(b.verify(acc[0].expose())), "revoked");
        assert_eq!(kind(b.exchange(r.expose())), "revoked");
        assert_eq!(kind(a.exchange(r.expose())), "revoked");
    }
    assert_eq!(kind(a.exchange(t_a.token.expose())), "revoked");
    // Another member's token is untouched.
    assert!(b.verify(g_adam.access_token.expose()).is_ok());
    // Nothing left of uma's to revoke, whichever replica asks.
    assert_eq!(
        b.revoke_all(&olivia, RevokeScope::Member("uma".into()), None)
            .unwrap(),
        0
    );

    // Removing a member revokes what another replica issued to them too;
    // what is issued afterwards (the member added again) stays usable once
    // every replica has read the log past the removal.
    let t_adam = b.generate(&adam, Default::default()).unwrap();
    assert_eq!(a.remove_member("acme", "adam").unwrap(), 2);
    a.add_member("acme", "adam", Role::User).unwrap();
    let t_new = b.generate(&adam, Default::default()).unwrap();
    let t_uma = a.generate(&uma, Default::default()).unwrap();
    assert!(TestDb::caught_up(&[&a, &b], db.epoch()));
    std::thread::sleep(BOUND);
    for s in [&a, &b] {
        assert_eq!(kind(s.verify(g_adam.access_token.expose())), "revoked");
        assert_eq!(kind(s.exchange(t_adam.token.expose())), "revoked");
        assert!(s.exchange(t_new.token.expose()).is_ok());
        assert!(s.exchange(t_uma.token.expose()).is_ok());
        let r = s.check_integrity().unwrap();
        assert!(r.is_clean(), "{:?}", r.problems);
    }
    // The count and the audit trail are the embedded store's.
    let events: Vec<(String, Option<String>)> = a
        .audit(&olivia, 100)
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "token.revoke_all" || e.action == "member.remove")
        .map(|e| (e.action, e.target))
        .collect();
    assert_eq!(
        events,
        [
            ("member.remove".to_string(), Some("adam".to_string())),
            ("token.revoke_all".to_string(), Some("uma".to_string())),
            ("token.revoke_all".to_string(), Some("uma".to_string())),
        ]
    );
}

/// The cap of live access tokens per refresh token holds over exchanges on
/// several replicas, and the evicted tokens stop verifying everywhere.
#[test]
#[ignore = "needs PostgreSQL: .ci/postgres.sh"]
fn the_access_cap_holds_across_replicas() {
    let _g = shared_server();
    let Some(db) = TestDb::new("cap") else {
        return;
    };
    let k = key();
    let cfg = |url: &str| {
        Config::postgres_with(options(url, BOUND))
            .key(k.clone())
            .max_access_per_refresh(2)
            .open()
            .unwrap()
    };
    let a = cfg(&db.url);
    let b = cfg(&db.url);
    let (_, _, uma) = seed_acme(&a);
    let t = a.generate(&uma, Default::default()).unwrap();
    let grants: Vec<_> = (0..6)
        .map(|i| {
            let s = if i % 2 == 0 { &a } else { &b };
            s.exchange(t.token.expose()).unwrap()
        })
        .collect();
    let mut c = db.sql();
    let live: i64 = c
        .query_one("SELECT count(*) FROM tokenvault_access", &[])
        .unwrap()
        .get(0);
    assert_eq!(live, 2);
    std::thread::sleep(BOUND);
    for s in [&a, &b] {
        let ok = grants
            .iter()
            .filter(|g| s.verify(g.access_token.expose()).is_ok())
            .count();
        assert_eq!(ok, 2);
        assert!(s.verify(grants[5].access_token.expose()).is_ok());
    }
}

/// Replicas that start at once on an empty database migrate it once; a
/// database from a newer tokenvault, or none at all with
/// `create_if_missing(false)`, is refused.
#[test]
#[ignore = "needs PostgreSQL: .ci/postgres.sh"]
fn concurrent_first_opens_migrate_once() {
    let _g = shared_server();
    let Some(db) = TestDb::new("mig") else {
        return;
    };
    let k = key();
    let e = Config::postgres_with(options(&db.url, BOUND))
        .key(k.clone())
        .create_if_missing(false)
        .open()
        .unwrap_err();
    assert_eq!(e.kind(), "not_found", "{e}");
    let n = 4;
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let (url, k, barrier) = (db.url.clone(), k.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                Config::postgres_with(options(&url, BOUND)).key(k).open()
            })
        })
        .collect();
    let stores: Vec<TokenStore> = handles
        .into_iter()
        .map(|h| h.join().unwrap().unwrap())
        .collect();
    let mut c = db.sql();
    let rows: i64 = c
        .query_one("SELECT count(*) FROM tokenvault_migrations", &[])
        .unwrap()
        .get(0);
    // Each migration once (1: the tables; 2: organizations' policies; 3:
    // the client of a token's last exchange).
    assert_eq!(rows, 3);
    stores[0].add_member("acme", "olivia", Role::Owner).unwrap();
    assert!(stores[3].catch_up().is_ok());
    assert_eq!(stores[3].member_role("acme", "olivia"), Some(Role::Owner));
    drop(stores);
    c.batch_execute("INSERT INTO tokenvault_migrations (version) VALUES (999)")
        .unwrap();
    let e = Config::postgres_with(options(&db.url, BOUND))
        .key(k)
        .open()
        .unwrap_err();
    assert!(
        e.kind() == "corrupt" && e.to_string().contains("newer"),
        "{e}"
    );
}

/// A made-up token with a valid checksum costs one database read, once;
/// a flood of them meets the read-through budget.
#[test]
#[ignore = "needs PostgreSQL: .ci/postgres.sh"]
fn made_up_tokens_are_read_once_and_rate_limited() {
    let _g = shared_server();
    let Some(db) = TestDb::new("fake") else {
        return;
    };
    let store = Config::postgres_with(options(&db.url, BOUND).read_through_per_second(1))
        .key(key())
        .open()
        .unwrap();
    let fake = |i: u8| encode_raw("tv", TokenKind::Access, [i; 16], [9; 32]);
    let before = store.sync_status().unwrap().read_throughs;
    assert_eq!(kind(store.verify(&fake(1))), "invalid_token");
    assert_eq!(store.sync_status().unwrap().read_throughs, before + 1);
    // The same id again: known absent, no read.
    assert_eq!(kind(store.verify(&fake(1))), "invalid_token");
    assert_eq!(store.sync_status().unwrap().read_throughs, before + 1);
    // A burst of new ones exceeds one read per second.
    let kinds: Vec<_> = (2..8).map(|i| kind(store.verify(&fake(i)))).collect();
    assert!(kinds.contains(&"limit"), "{kinds:?}");
    assert!(kinds.iter().all(|k| *k == "limit" || *k == "invalid_token"));
}

// ----- replicas -----

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Revoke on A; every verification on B that starts after the staleness
/// bound fails. Propagation (revoke called on A → B rejects) is measured
/// over 300 revocations and printed, never asserted.
#[test]
#[ignore = "needs PostgreSQL: .ci/postgres.sh"]
fn revocation_on_one_replica_is_in_force_on_another_within_the_bound() {
    let _g = shared_server();
    let Some(db) = TestDb::new("prop") else {
        return;
    };
    let k = key();
    let a = db.open(&k);
    let b = db.open(&k);
    let (olivia, _, uma) = seed_acme(&a);
    let n = 300;
    let mut tokens = Vec::with_capacity(n);
    for _ in 0..n {
        let t = a.generate(&uma, Default::default()).unwrap();
        let g = a.exchange(t.token.expose()).unwrap();
        // Loaded on B (read through).
        assert!(b.verify(g.access_token.expose()).is_ok());
        tokens.push((t.info.id, g.access_token));
    }
    let mut propagation = Vec::with_capacity(n);
    let mut after_return = Vec::with_capacity(n);
    let mut revoke_calls = Vec::with_capacity(n);
    for (i, (id, access)) in tokens.iter().enumerate() {
        let t0 = Instant::now();
        a.revoke(&olivia, id, None).unwrap();
        let returned = Instant::now();
        revoke_calls.push(returned - t0);
        let limit = returned + Duration::from_secs(30);
        loop {
            let started = Instant::now();
            match b.verify(access.expose()) {
                Err(Error::Revoked) => {
                    propagation.push(started.max(t0) - t0);
                    after_return.push(started.saturating_duration_since(returned));
                    break;
                }
                Ok(_) => assert!(
                    started <= returned + BOUND,
                    "revocation {i}: B verified a revoked token {:?} after the revoke returned",
                    started - returned
                ),
                // Stale (fail closed: `unavailable`) or a failed read
                // through (`io`) counts as a failure, but is not the
                // propagation being measured: keep looking.
                Err(e) => assert!(matches!(e.kind(), "unavailable" | "io"), "{e}"),
            }
            assert!(Instant::now() < limit, "revocation {i} never reached B");
            std::thread::yield_now();
        }
        if i % 50 == 0 {
            // The promise itself, checked after waiting the bound out.
            std::thread::sleep((returned + BOUND).saturating_duration_since(Instant::now()));
            assert!(b.verify(access.expose()).is_err());
        }
    }
    propagation.sort();
    after_return.sort();
    revoke_calls.sort();
    println!(
        "propagation A→B over {n} revocations (revoke called → B rejects): \
         p50 {:?}, p99 {:?}, max {:?}; after the revoke returned: p50 {:?}, p99 {:?}, \
         max {:?}; the revoke call itself: p50 {:?}, p99 {:?}",
        percentile(&propagation, 0.50),
        percentile(&propagation, 0.99),
        propagation[n - 1],
        percentile(&after_return, 0.50),
        percentile(&after_return, 0.99),
        after_return[n - 1],
        percentile(&revoke_calls, 0.50),
        percentile(&revoke_calls, 0.99),
    );
    let status = b.sync_status().unwrap();
    assert!(status.applied_seq >= n as u64, "{status:?}");
}

/// Without `LISTEN` (as on engines that lack it) the poll alone carries
/// revocations across within the bound.
#[test]
#[ignore = "needs PostgreSQL: .ci/postgres.sh"]
fn polling_alone_keeps_replicas_within_the_bound() {
    let _g = shared_server();
    let Some(db) = TestDb::new("poll") else {
        return;
    };
    let k = key();
    let a = db.open(&k);
    let b = Config::postgres_with(options(&db.url, BOUND).listen(false))
        .key(k)
        .open()
        .unwrap();
    let (olivia, _, uma) = seed_acme(&a);
    let n = 30;
    let mut propagation = Vec::new();
    for i in 0..n {
        let t = a.generate(&uma, Default::default()).unwrap();
        let g = a.exchange(t.token.expose()).unwrap();
        assert!(b.verify(g.access_token.expose()).is_ok());
        // Spread the revocations over B's poll period, which the loop would
        // otherwise lock onto.
        std::thread::sleep(BOUND / 4 * (i * 7 % n) / n);
        let t0 = Instant::now();
        a.revoke(&olivia, &t.info.id, None).unwrap();
        let returned = Instant::now();
        loop {
            let started = Instant::now();
            match b.verify(g.access_token.expose()) {
                Err(Error::Revoked) => {
                    propagation.push(started - t0);
                    break;
                }
                Ok(_) => assert!(
                    started <= returned + BOUND,
                    "revocation {i}: verified {:?} after the revoke returned",
                    started - returned
                ),
                Err(e) => assert!(matches!(e.kind(), "unavailable" | "io"), "{e}"),
            }
            assert!(returned.elapsed() < Duration::from_secs(30));
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    propagation.sort();
    println!(
        "propagation A→B by polling alone (every {:?}) over {n} revocations: p50 {:?}, p99 {:?}",
        BOUND / 4,
        percentile(&propagation, 0.50),
        percentile(&propagation, 0.99),
    );
    assert!(b.sync_status().unwrap().connected);
}

/// The listening connections are killed (`pg_terminate_backend`) over and
/// over while revocations stream in; after catch-up none is missed.
#[test]
#[ignore = "needs PostgreSQL: .ci/postgres.sh"]
fn killed_listener_misses_no_revocation() {
    let _g = shared_server();
    let Some(db) = TestDb::new("kill") else {
        return;
    };
    let k = key();
    let a = db.open(&k);
    let b = db.open(&k);
    let (olivia, _, uma) = seed_acme(&a);
    let n = 120;
    let mut tokens = Vec::new();
    for _ in 0..n {
        let t = a.generate(&uma, Default::default()).unwrap();
        let g = a.exchange(t.token.expose()).unwrap();
        assert!(b.verify(g.access_token.expose()).is_ok());
        tokens.push((t.info.id, g.access_token));
    }
    let ids: Vec<_> = tokens.iter().map(|t| t.0).collect();
    let writer = {
        let a = a.clone();
        let olivia = olivia.clone();
        std::thread::spawn(move || {
            for id in &ids {
                a.revoke(&olivia, id, None).unwrap();
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let mut sql = db.sql();
    let mut killed = 0;
    while !writer.is_finished() {
        let rows = sql
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = current_database() AND application_name = 'tokenvault-sync'",
                &[],
            )
            .unwrap();
        killed += rows.iter().filter(|r| r.get::<_, bool>(0)).count();
        std::thread::sleep(Duration::from_millis(15));
    }
    writer.join().unwrap();
    assert!(killed > 0, "no listener was killed");
    assert!(eventually(Duration::from_secs(30), || {
        let s = b.sync_status().unwrap();
        s.connected && s.fresh && s.reconnects > 0
    }));
    // Everything committed before now is applied once the bound has passed.
    std::thread::sleep(BOUND);
    for (i, (_, access)) in tokens.iter().enumerate() {
        assert_eq!(kind(b.verify(access.expose())), "revoked", "token {i}");
    }
    println!(
        "killed {killed} listening connections; B reconnected {} times",
        b.sync_status().unwrap().reconnects
    );
}

/// The hazard of a plain serial column, shown on a scratch table, and the
/// same interleaving forced on two replicas' commits: B's commit waits for
/// A's, so C, which reads meanwhile, never skips A's revocation.
#[test]
#[ignore = "needs PostgreSQL: .ci/postgres.sh"]
fn out_of_order_commits_cannot_skip_a_revocation() {
    let _g = shared_server();
    let Some(db) = TestDb::new("order") else {
        return;
    };
    // The hazard: transaction 1 takes 1, transaction 2 takes 2 and commits
    // first; a reader that saw 2 then asks for "> 2" and never sees 1.
    let mut t1 = db.sql();
    let mut t2 = db.sql();
    let mut reader = db.sql();
    reader
        .batch_execute("CREATE TABLE naive_log (seq serial PRIMARY KEY, what text)")
        .unwrap();
    t1.batch_execute("BEGIN; INSERT INTO naive_log (what) VALUES ('revoke x')")
        .unwrap();
    t2.batch_execute("BEGIN; INSERT INTO naive_log (what) VALUES ('revoke y'); COMMIT")
        .unwrap();
    let seen: i32 = reader
        .query_one("SELECT max(seq) FROM naive_log", &[])
        .unwrap()
        .get(0);
    t1.batch_execute("COMMIT").unwrap();
    let later = reader
        .query("SELECT what FROM naive_log WHERE seq > $1", &[&seen])
        .unwrap();
    assert_eq!(seen, 2);
    assert!(later.is_empty(), "the naive log did not lose `revoke x`");

    // The same interleaving through tokenvault.
    let k = key();
    let a = db.open(&k);
    let b = db.open(&k);
    let c = db.open(&k);
    let (olivia, _, uma) = seed_acme(&a);
    let tx = a.generate(&uma, Default::default()).unwrap();
    let gx = a.exchange(tx.token.expose()).unwrap();
    let ty = b.generate(&uma, Default::default()).unwrap();
    let gy = b.exchange(ty.token.expose()).unwrap();
    assert!(c.verify(gx.access_token.expose()).is_ok());
    assert!(c.verify(gy.access_token.expose()).is_ok());
    let epoch = |s: &mut Client| -> i64 {
        s.query_one("SELECT seq FROM tokenvault_epoch", &[])
            .unwrap()
            .get(0)
    };
    let base = epoch(&mut reader);
    // Stall writers of the change log: A will hold the epoch row (its
    // sequence number taken) while it waits here.
    let mut stall = db.sql();
    stall
        .batch_execute("BEGIN; LOCK TABLE tokenvault_changes IN EXCLUSIVE MODE")
        .unwrap();
    let waiting = |s: &mut Client| -> i64 {
        s.query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND wait_event_type = 'Lock'",
            &[],
        )
        .unwrap()
        .get(0)
    };
    let ax = {
        let (a, olivia, id) = (a.clone(), olivia.clone(), tx.info.id);
        std::thread::spawn(move || a.revoke(&olivia, &id, None))
    };
    assert!(eventually(Duration::from_secs(20), || waiting(&mut reader) >= 1));
    // B's transaction takes the next number only after A's commits.
    let by = {
        let (b, token) = (b.clone(), gy.access_token.expose().to_string());
        std::thread::spawn(move || b.revoke_access(&token))
    };
    assert!(eventually(Duration::from_secs(20), || waiting(&mut reader) >= 2));
    assert!(!by.is_finished(), "B committed past A's open transaction");
    // C reads meanwhile: neither revocation is visible yet, and C is fresh.
    assert!(c.catch_up().is_ok());
    assert!(c.verify(gx.access_token.expose()).is_ok());
    assert!(c.verify(gy.access_token.expose()).is_ok());
    assert_eq!(epoch(&mut reader), base);
    stall.batch_execute("COMMIT").unwrap();
    ax.join().unwrap().unwrap();
    by.join().unwrap().unwrap();
    assert_eq!(epoch(&mut reader), base + 2);
    // In sequence order: A's revocation is base + 1, B's is base + 2.
    let order: Vec<i64> = reader
        .query(
            "SELECT DISTINCT seq FROM tokenvault_changes WHERE seq > $1 ORDER BY seq",
            &[&base],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(order, vec![base + 1, base + 2]);
    std::thread::sleep(BOUND);
    assert_eq!(kind(c.verify(gx.access_token.expose())), "revoked");
    assert_eq!(kind(c.verify(gy.access_token.expose())), "revoked");
}

/// A replica cut off from the change log while it is pruned fails closed,
/// then reloads a snapshot when it can read again, and misses nothing.
#[test]
#[ignore = "needs PostgreSQL: .ci/postgres.sh"]
fn replica_behind_the_pruned_log_reloads_a_snapshot() {
    let _g = shared_server();
    let Some(db) = TestDb::new("prune") else {
        return;
    };
    let k = key();
    let a = db.open(&k);
    let (olivia, adam, uma) = seed_acme(&a);
    // B connects as a role whose read access to the log the test controls.
    let role = format!("{}_b", db.name);
    let mut sql = db.sql();
    sql.batch_execute(&format!(
        "DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN; \
         GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}; \
         GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role};"
    ))
    .unwrap();
    let b_url = url_with(&db.admin, &db.name, Some(&role));
    let b = open_on(&b_url, &k, BOUND);
    let t = a.generate(&uma, Default::default()).unwrap();
    let g = a.exchange(t.token.expose()).unwrap();
    let t2 = a.generate(&adam, Default::default()).unwrap();
    let g2 = a.exchange(t2.token.expose()).unwrap();
    assert!(b.verify(g.access_token.expose()).is_ok());
    assert!(b.authorize(g2.access_token.expose(), "user-write").is_ok());

    sql.batch_execute(&format!("REVOKE SELECT ON tokenvault_changes FROM {role}"))
        .unwrap();
    a.revoke(&olivia, &t.info.id, None).unwrap();
    a.set_role("acme", "adam", Role::User).unwrap();
    sql.batch_execute(
        "BEGIN; UPDATE tokenvault_epoch SET floor = seq; DELETE FROM tokenvault_changes; COMMIT",
    )
    .unwrap();
    // B cannot sync: past the bound it fails closed.
    std::thread::sleep(BOUND + Duration::from_millis(300));
    let e = b.verify(g.access_token.expose()).unwrap_err();
    assert!(
        matches!(&e, Error::Unavailable(m) if m.contains("stale")),
        "{e}"
    );
    assert_eq!(kind(b.verify(g2.access_token.expose())), "unavailable");

    sql.batch_execute(&format!("GRANT SELECT ON tokenvault_changes TO {role}"))
        .unwrap();
    assert!(eventually(Duration::from_secs(30), || {
        b.sync_status().unwrap().fresh
    }));
    assert!(b.sync_status().unwrap().reloads >= 1);
    assert_eq!(kind(b.verify(g.access_token.expose())), "revoked");
    assert_eq!(
        kind(b.authorize(g2.access_token.expose(), "user-write")),
        "insufficient_scope"
    );
    drop(b);
    let _ = sql.batch_execute(&format!("DROP OWNED BY {role}; DROP ROLE IF EXISTS {role}"));
}

/// Replicas prune the change log past its retention themselves; replicas
/// that keep up, and replicas opened afterwards, miss nothing.
#[test]
#[ignore = "needs PostgreSQL: .ci/postgres.sh"]
fn replicas_prune_the_change_log() {
    let _g = shared_server();
    let Some(db) = TestDb::new("retain") else {
        return;
    };
    let k = key();
    let a = Config::postgres_with(options(&db.url, BOUND).change_log_retention(Duration::ZERO))
        .key(k.clone())
        .open()
        .unwrap();
    let b = db.open(&k);
    let (olivia, _, uma) = seed_acme(&a);
    let mut grants = Vec::new();
    for _ in 0..5 {
        let t = a.generate(&uma, Default::default()).unwrap();
        let g = b.exchange(t.token.expose()).unwrap();
        a.revoke(&olivia, &t.info.id, None).unwrap();
        grants.push(g);
    }
    let mut sql = db.sql();
    assert!(eventually(Duration::from_secs(20), || {
        let r = sql
            .query_one(
                "SELECT e.seq, e.floor, (SELECT count(*) FROM tokenvault_changes) \
                 FROM tokenvault_epoch e",
                &[],
            )
            .unwrap();
        let (seq, floor, rows): (i64, i64, i64) = (r.get(0), r.get(1), r.get(2));
        seq >= 6 && floor == seq && rows == 0
    }));
    let c = db.open(&k);
    std::thread::sleep(BOUND);
    for s in [&a, &b, &c] {
        for g in &grants {
            assert_eq!(kind(s.verify(g.access_token.expose())), "revoked");
        }
        let r = s.check_integrity().unwrap();
        assert!(r.is_clean(), "{:?}", r.problems);
    }
}

/// Waits (bounded) until `store` answers `want` for `f`; false if it never
/// did within ten seconds.
fn becomes<T: std::fmt::Debug>(want: &str, mut f: impl FnMut() -> Result<T, Error>) -> bool {
    eventually(Duration::from_secs(10), || kind(f()) == want)
}

/// Sleeps until `since + BOUND` has passed (a wait for the promise's own
/// deadline, not for an event).
fn past_the_bound(since: Instant) {
    std::thread::sleep(
        (since + BOUND + Duration::from_millis(50)).saturating_duration_since(Instant::now()),
    );
}

/// Every read path of replica B for tokens issued on replica A, through the
/// library: B checks, exchanges, revokes and introspects them at once
/// (before B's sync thread need have heard of them), and a revocation made
/// through B is in force on A within the bound.
#[test]
#[ignore = "needs PostgreSQL: .ci/postgres.sh"]
fn every_read_path_reaches_tokens_another_replica_issued() {
    let _g = shared_server();
    let Some(db) = TestDb::new("reads") else {
        return;
    };
    let k = key();
    let a = db.open(&k);
    let b = db.open(&k);
    let (olivia, _, uma) = seed_acme(&a);

    // verify_refresh on B of a token A just issued: found, not invalid.
    let first = a.generate(&uma, Default::default()).unwrap();
    let info = b.verify_refresh(first.token.expose()).unwrap();
    assert_eq!((info.id, info.user.as_str()), (first.info.id, "uma"));
    // exchange on B.
    let grant = b.exchange(first.token.expose()).unwrap();
    assert!(a.verify(grant.access_token.expose()).is_ok());

    // revoke_refresh on B of a second token A issued; A's exchange of it
    // fails once the bound has passed (and says `revoked` soon after).
    let second = a.generate(&uma, Default::default()).unwrap();
    let on_a = a.exchange(second.token.expose()).unwrap();
    b.revoke_refresh(second.token.expose(), Some("through B"))
        .unwrap();
    let returned = Instant::now();
    assert_eq!(kind(b.exchange(second.token.expose())), "revoked");
    assert_eq!(kind(b.verify_refresh(second.token.expose())), "revoked");
    past_the_bound(returned);
    let e = kind(a.exchange(second.token.expose()));
    assert!(e == "revoked" || e == "unavailable", "{e}");
    assert!(becomes("revoked", || a.exchange(second.token.expose())));
    assert!(becomes("revoked", || a.verify(on_a.access_token.expose())));
    // Revoking it again, on either replica, succeeds and changes nothing.
    b.revoke_refresh(second.token.expose(), None).unwrap();
    a.revoke_refresh(second.token.expose(), None).unwrap();

    // verify, authorize, try_verify and revoke_access on B of access
    // tokens minted on A.
    let third = a.generate(&uma, Default::default()).unwrap();
    let g1 = a.exchange(third.token.expose()).unwrap();
    let g2 = a.exchange(third.token.expose()).unwrap();
    let who = b.verify(g1.access_token.expose()).unwrap();
    assert_eq!(&*who.user, "uma");
    assert!(b.authorize(g1.access_token.expose(), "read").is_ok());
    assert_eq!(
        kind(b.authorize(g1.access_token.expose(), "user-write")),
        "insufficient_scope"
    );
    assert!(b.try_verify(g1.access_token.expose()).unwrap().is_some());
    b.revoke_access(g2.access_token.expose()).unwrap();
    let returned = Instant::now();
    assert_eq!(kind(b.verify(g2.access_token.expose())), "revoked");
    past_the_bound(returned);
    assert_ne!(kind(a.verify(g2.access_token.expose())), "ok");
    assert!(becomes("revoked", || a.verify(g2.access_token.expose())));
    assert!(a.verify(g1.access_token.expose()).is_ok());

    // Lists and the audit trail on B show what A issued.
    let mine: Vec<_> = b
        .list_own(&uma)
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    for t in [&first, &second, &third] {
        assert!(mine.contains(&t.info.id));
    }
    assert_eq!(b.list_org(&olivia).unwrap().len(), mine.len());
    assert!(b
        .audit(&olivia, 100)
        .unwrap()
        .iter()
        .any(|e| e.action == "token.revoke"));

    // A token issued on A is in B's memory before it is first presented
    // (new refresh tokens are in the change log): B's first use of it
    // needs no read-through.
    let fourth = a.generate(&uma, Default::default()).unwrap();
    assert!(TestDb::caught_up(&[&b], db.epoch()));
    let reads = b.sync_status().unwrap().read_throughs;
    assert!(b.verify_refresh(fourth.token.expose()).is_ok());
    assert_eq!(b.sync_status().unwrap().read_throughs, reads);
}

/// Replica B's HTTP front (Squadcast's routes, RFC 7009 and RFC 7662, a host
/// route behind `require_bearer` and one with the `Authorized` extractor)
/// for tokens issued and exchanged on replica A: each answers, and a
/// revocation through B holds on A within the bound.
#[cfg(feature = "http")]
#[test]
#[ignore = "needs PostgreSQL: .ci/postgres.sh"]
fn the_http_front_of_one_replica_serves_tokens_of_another() {
    use axum::routing::get;
    use axum::{Extension, Router};
    use common::http::{client, Server};
    use reqwest::StatusCode;
    use serde_json::Value;
    use tokenvault::http::{self, require_bearer, Authorized, HttpConfig};

    let _g = shared_server();
    let Some(db) = TestDb::new("http") else {
        return;
    };
    let k = key();
    let a = db.open(&k);
    let b = db.open(&k);
    let (olivia, _, uma) = seed_acme(&a);
    let cfg = HttpConfig::default().no_rate_limit();
    async fn whoami(Authorized(p): Authorized) -> String {
        p.user.to_string()
    }
    let app = Router::new()
        .route("/layer", get(whoami).layer(require_bearer(&b)))
        .route("/extractor", get(whoami).layer(Extension(b.clone())))
        .merge(http::app(b.clone(), &cfg));
    let s = Server::start_app(app, cfg);
    let c = client();
    let form = |bearer: &str, path: &str, body: String| {
        c.post(s.url(path))
            .bearer_auth(bearer)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .unwrap()
    };
    let get_with = |path: &str, bearer: &str| {
        c.get(s.url(path))
            .bearer_auth(bearer)
            .send()
            .unwrap()
            .status()
    };
    // The Owner's bearer, minted on A: B's routes must read it through.
    let owner = a.generate(&olivia, Default::default()).unwrap();
    let owner_bearer = a.exchange(owner.token.expose()).unwrap().access_token;
    let owner_bearer = owner_bearer.expose();

    // GET /oauth/access-token on B for a token issued on A.
    let first = a.generate(&uma, Default::default()).unwrap();
    let res = c
        .get(s.url("/oauth/access-token"))
        .header("X-Refresh-Token", first.token.expose())
        .send()
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let v: Value = res.json().unwrap();
    let minted_on_b = v["data"]["access_token"].as_str().unwrap().to_string();
    assert!(a.verify(&minted_on_b).is_ok());

    // GET /v3/refresh-token on B lists what A issued.
    let res = c
        .get(s.url("/v3/refresh-token"))
        .bearer_auth(owner_bearer)
        .send()
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let v: Value = res.json().unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 2, "{v}");

    // RFC 7662 then RFC 7009 on B for a token issued on A.
    let second = a.generate(&uma, Default::default()).unwrap();
    let introspect = |t: &str| -> Value {
        let res = form(owner_bearer, "/oauth/introspect", format!("token={t}"));
        assert_eq!(res.status(), StatusCode::OK);
        res.json().unwrap()
    };
    assert_eq!(introspect(second.token.expose())["active"], true);
    let res = form(
        owner_bearer,
        "/oauth/revoke",
        format!(
            "token={}&token_type_hint=refresh_token",
            second.token.expose()
        ),
    );
    assert_eq!(res.status(), StatusCode::OK);
    let returned = Instant::now();
    assert_eq!(introspect(second.token.expose())["active"], false);
    past_the_bound(returned);
    assert_ne!(kind(a.exchange(second.token.expose())), "ok");
    assert!(becomes("revoked", || a.exchange(second.token.expose())));

    // An access token minted on A, revoked through B's RFC 7009 endpoint.
    let g = a.exchange(first.token.expose()).unwrap();
    assert_eq!(introspect(g.access_token.expose())["active"], true);
    let res = form(
        owner_bearer,
        "/oauth/revoke",
        format!("token={}", g.access_token.expose()),
    );
    assert_eq!(res.status(), StatusCode::OK);
    assert!(becomes("revoked", || a.verify(g.access_token.expose())));

    // POST and DELETE /v3/refresh-token on B; the token made on B works on
    // A, the one deleted through B is revoked on A.
    let res = c
        .post(s.url("/v3/refresh-token"))
        .bearer_auth(owner_bearer)
        .json(&serde_json::json!({"user_id": "uma"}))
        .send()
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let v: Value = res.json().unwrap();
    let made_on_b = v["data"]["token"].as_str().unwrap().to_string();
    assert!(a.exchange(&made_on_b).is_ok());
    let third = a.generate(&uma, Default::default()).unwrap();
    let res = c
        .delete(s.url(&format!("/v3/refresh-token/{}", third.info.id)))
        .bearer_auth(owner_bearer)
        .send()
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert!(becomes("revoked", || a.exchange(third.token.expose())));

    // The tower layer and the extractor on B, each first meeting an access
    // token minted on A: 200, then 401 once the token is revoked on A.
    for path in ["/layer", "/extractor"] {
        let t = a.generate(&uma, Default::default()).unwrap();
        let access = a.exchange(t.token.expose()).unwrap().access_token;
        assert_eq!(get_with(path, access.expose()), StatusCode::OK, "{path}");
        a.revoke(&uma, &t.info.id, None).unwrap();
        assert!(
            eventually(Duration::from_secs(10), || get_with(path, access.expose())
                == StatusCode::UNAUTHORIZED),
            "{path}"
        );
    }
    drop(s);
}

/// Starts the server when dropped while armed.
struct Restart(bool);

impl Drop for Restart {
    fn drop(&mut self) {
        if self.0 {
            let _ = std::panic::catch_unwind(|| pg_ctl("start"));
        }
    }
}

fn pg_ctl(action: &str) -> bool {
    let Ok(cmd) = std::env::var("TOKENVAULT_PG_CTL") else {
        return false;
    };
    let mut parts = cmd.split_whitespace();
    let Some(program) = parts.next() else {
        return false;
    };
    let out = std::process::Command::new(program)
        .args(parts)
        .args(action.split_whitespace())
        .output()
        .expect("run TOKENVAULT_PG_CTL");
    assert!(
        out.status.success(),
        "pg_ctl {action}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    true
}

/// PostgreSQL stopped under two running replicas: a read that must reach
/// the database fails closed at once; past the bound every read path fails
/// closed (`unavailable`, on the library and through B's HTTP front, for
/// tokens of either replica), management calls return a clear error; when
/// the server is back both recover and nothing committed is lost.
#[test]
#[ignore = "needs PostgreSQL: .ci/postgres.sh"]
fn server_stopped_fails_closed_then_recovers() {
    if std::env::var_os("TOKENVAULT_PG_CTL").is_none() {
        if admin_url().is_some() {
            eprintln!("note: skipping the outage test: TOKENVAULT_PG_CTL is not set");
        }
        return;
    }
    let _g = exclusive_server();
    let Some(db) = TestDb::new("outage") else {
        return;
    };
    let k = key();
    let a = db.open(&k);
    let b = db.open(&k);
    let (olivia, _, uma) = seed_acme(&a);
    let keep = a.generate(&uma, Default::default()).unwrap();
    let gone = a.generate(&uma, Default::default()).unwrap();
    let g_keep = a.exchange(keep.token.expose()).unwrap();
    let g_gone = b.exchange(gone.token.expose()).unwrap();
    assert!(b.verify(g_keep.access_token.expose()).is_ok());
    assert!(a.verify(g_gone.access_token.expose()).is_ok());
    // Minted on A, never seen by B: B must read it through.
    let unseen = a.exchange(keep.token.expose()).unwrap();
    #[cfg(feature = "http")]
    let front = outage_front(&a, &b, &olivia);
    // Committed just before the stop; B may not have seen it yet.
    a.revoke(&olivia, &gone.info.id, Some("before the outage"))
        .unwrap();

    assert!(pg_ctl("stop -m fast"));
    // Whatever happens below, the server is started again for other tests.
    let mut restart = Restart(true);
    let stopped = Instant::now();
    // A read-through meeting the stopped server fails closed, within the
    // bound as after it (never `io`, never an answer).
    assert_eq!(kind(b.verify(unseen.access_token.expose())), "unavailable");
    std::thread::sleep(BOUND + Duration::from_millis(300));
    for s in [&a, &b] {
        for g in [&g_keep, &g_gone] {
            let e = s.verify(g.access_token.expose()).unwrap_err();
            assert!(
                matches!(&e, Error::Unavailable(m) if m.contains("stale")),
                "{e}"
            );
            assert_eq!(kind(s.try_verify(g.access_token.expose())), "unavailable");
            assert_eq!(
                kind(s.authorize(g.access_token.expose(), "read")),
                "unavailable"
            );
            assert_eq!(
                kind(s.revoke_access(g.access_token.expose())),
                "unavailable"
            );
        }
        assert!(!s.sync_status().unwrap().fresh);
        // Every read by refresh token, never from stale memory.
        for t in [&keep, &gone] {
            assert_eq!(kind(s.verify_refresh(t.token.expose())), "unavailable");
            assert_eq!(kind(s.exchange(t.token.expose())), "unavailable");
            assert_eq!(
                kind(s.revoke_refresh(t.token.expose(), None)),
                "unavailable"
            );
        }
        assert_eq!(kind(s.list_own(&uma)), "unavailable");
        assert_eq!(kind(s.get(&uma, &keep.info.id)), "unavailable");
        assert_eq!(kind(s.list_org(&olivia)), "unavailable");
        assert_eq!(kind(s.audit(&olivia, 10)), "unavailable");
    }
    let e = a.revoke(&olivia, &keep.info.id, None).unwrap_err();
    assert_eq!(e.kind(), "io", "{e}");
    assert!(e.to_string().contains("PostgreSQL"), "{e}");
    assert_eq!(kind(b.generate(&uma, Default::default())), "io");
    #[cfg(feature = "http")]
    front.all_unavailable(&keep, &g_keep);
    println!("server stopped for {:?}", stopped.elapsed());

    assert!(pg_ctl("start"));
    restart.0 = false;
    for s in [&a, &b] {
        assert!(
            eventually(Duration::from_secs(60), || s.sync_status().unwrap().fresh),
            "{:?}",
            s.sync_status()
        );
    }
    // Nothing lost: the kept token works, the revoked one stays revoked on
    // both, and the revoke that failed during the outage changed nothing.
    for s in [&a, &b] {
        assert!(s.verify(g_keep.access_token.expose()).is_ok());
        assert_eq!(kind(s.verify(g_gone.access_token.expose())), "revoked");
        assert_eq!(kind(s.verify_refresh(gone.token.expose())), "revoked");
        assert!(s.verify_refresh(keep.token.expose()).is_ok());
        assert!(s.list_own(&uma).is_ok());
    }
    assert!(b.verify(unseen.access_token.expose()).is_ok());
    assert!(b.exchange(keep.token.expose()).is_ok());
    // Management works again, on both, at the first try.
    a.revoke(&olivia, &keep.info.id, None).unwrap();
    let fresh = b.generate(&uma, Default::default()).unwrap();
    assert!(a.exchange(fresh.token.expose()).is_ok());
    std::thread::sleep(BOUND);
    assert_eq!(kind(b.verify(g_keep.access_token.expose())), "revoked");
    let r = a.check_integrity().unwrap();
    assert!(r.is_clean(), "{:?}", r.problems);
}

/// Replica B's HTTP front for the outage test, with the Owner's bearer and
/// a host route behind the layer and one with the extractor.
#[cfg(feature = "http")]
struct OutageFront {
    server: common::http::Server,
    owner_bearer: String,
}

#[cfg(feature = "http")]
fn outage_front(a: &TokenStore, b: &TokenStore, olivia: &Actor) -> OutageFront {
    use axum::routing::get;
    use axum::{Extension, Router};
    use tokenvault::http::{self, require_bearer, Authorized, HttpConfig};
    async fn whoami(Authorized(p): Authorized) -> String {
        p.user.to_string()
    }
    let cfg = HttpConfig::default().no_rate_limit();
    let app = Router::new()
        .route("/layer", get(whoami).layer(require_bearer(b)))
        .route("/extractor", get(whoami).layer(Extension(b.clone())))
        .merge(http::app(b.clone(), &cfg));
    let server = common::http::Server::start_app(app, cfg);
    let owner = a.generate(olivia, Default::default()).unwrap();
    let owner_bearer = a.exchange(owner.token.expose()).unwrap().access_token;
    OutageFront {
        server,
        owner_bearer: owner_bearer.expose().to_string(),
    }
}

#[cfg(feature = "http")]
impl OutageFront {
    /// Every route answers 503 (never 200, 401 or an answer from stale
    /// memory) for a refresh token and an access token of A's.
    fn all_unavailable(&self, refresh: &tokenvault::IssuedToken, access: &tokenvault::AccessGrant) {
        use reqwest::StatusCode;
        let c = common::http::client();
        let s = &self.server;
        let bearer = self.owner_bearer.as_str();
        let form = |path: &str, body: String| {
            c.post(s.url(path))
                .bearer_auth(bearer)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .unwrap()
                .status()
        };
        let want = StatusCode::SERVICE_UNAVAILABLE;
        let res = c
            .get(s.url("/oauth/access-token"))
            .header("X-Refresh-Token", refresh.token.expose())
            .send()
            .unwrap();
        assert_eq!(res.status(), want, "/oauth/access-token");
        let get = |path: &str, t: &str| c.get(s.url(path)).bearer_auth(t).send().unwrap().status();
        assert_eq!(get("/v3/refresh-token", bearer), want, "list");
        assert_eq!(get("/layer", access.access_token.expose()), want, "layer");
        assert_eq!(
            get("/extractor", access.access_token.expose()),
            want,
            "extractor"
        );
        for t in [refresh.token.expose(), access.access_token.expose()] {
            assert_eq!(
                form("/oauth/introspect", format!("token={t}")),
                want,
                "introspect"
            );
            assert_eq!(form("/oauth/revoke", format!("token={t}")), want, "revoke");
        }
        let res = c
            .delete(s.url(&format!("/v3/refresh-token/{}", refresh.info.id)))
            .bearer_auth(bearer)
            .send()
            .unwrap();
        assert_eq!(res.status(), want, "delete");
    }
}

/// Growth bounds on a shared store: 300 refusals with 16 KB ids are one
/// audit event with their count, its target cut to size (read by another
/// replica once written); events older than the audit retention go with
/// `purge_expired`, newer ones stay; the cap of live tokens per member
/// answers `limit` and changes nothing.
#[test]
#[ignore = "needs PostgreSQL: .ci/postgres.sh"]
fn refusals_are_coalesced_and_old_events_purged() {
    let _g = shared_server();
    let Some(db) = TestDb::new("audit_bounds") else {
        return;
    };
    let k = key();
    let clock = tokenvault::ManualClock::new(1_800_000_000);
    let open = || {
        Config::postgres_with(options(&db.url, BOUND))
            .key(k.clone())
            .clock(clock.clone())
            .audit_retention(Duration::from_secs(86_400))
            .max_live_tokens_per_member(3)
            .open()
            .unwrap()
    };
    let a = open();
    let b = open();
    let (olivia, adam, uma) = seed_acme(&a);
    for i in 0..300 {
        let id = format!("{i:05}{}", "x".repeat(16 * 1024));
        let e = a.assign(&adam, &id, Default::default()).unwrap_err();
        assert_eq!(e.kind(), "forbidden");
    }
    a.flush().unwrap();
    for store in [&a, &b] {
        let events = store.audit(&olivia, 100).unwrap();
        let refused: Vec<_> = events
            .iter()
            .filter(|e| e.action == "token.assign" && e.actor == "adam")
            .collect();
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert_eq!(refused[0].count, 300);
        let target = refused[0].target.as_deref().unwrap();
        assert!(target.len() <= 176 && target.ends_with('…'), "{target}");
    }

    // The cap: three live tokens, then `limit`, nothing changed.
    for _ in 0..3 {
        a.generate(&uma, Default::default()).unwrap();
    }
    let list = a.list_own(&uma).unwrap();
    let events = a.audit(&olivia, 100).unwrap();
    for _ in 0..20 {
        assert_eq!(
            a.generate(&uma, Default::default()).unwrap_err().kind(),
            "limit"
        );
    }
    assert_eq!(a.list_own(&uma).unwrap(), list);
    assert_eq!(a.audit(&olivia, 100).unwrap(), events);

    // Retention: a day later, everything above is old; one newer event.
    clock.advance(86_400);
    a.add_member("acme", "newer", Role::User).unwrap();
    let mut removed = 0;
    loop {
        let r = b.purge_expired(2).unwrap();
        removed += r.events_removed;
        if !r.more {
            break;
        }
    }
    // Three member additions, the coalesced refusal and the three issue
    // events (rows of their own here, unlike on sled).
    assert_eq!(removed, 7);
    let left: Vec<String> = a
        .audit(&olivia, 100)
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(left, vec!["member.add"]);
}

/// The value of the sample `name` (no labels) in a Prometheus text page.
#[cfg(all(feature = "http", feature = "cli"))]
fn sample(page: &str, name: &str) -> Option<f64> {
    page.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (n, v) = l.split_once(' ')?;
        (n == name).then(|| v.trim().parse().ok())?
    })
}

#[cfg(all(feature = "http", feature = "cli"))]
#[test]
#[ignore = "needs PostgreSQL: .ci/postgres.sh"]
fn a_replicas_gauges_follow_its_change_feed() {
    use metrics_exporter_prometheus::PrometheusBuilder;
    let _g = shared_server();
    let Some(db) = TestDb::new("gauges") else {
        return;
    };
    let k = key();
    let a = db.open(&k);
    let b = db.open(&k);
    let (_, _, uma) = seed_acme(&a);
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let scrape = |s: &TokenStore| {
        metrics::with_local_recorder(&recorder, || {
            tokenvault::http::record_store_gauges(s).unwrap()
        });
        handle.render()
    };

    // B reads A's writes from the feed: its applied sequence reaches the
    // log's epoch and the gauges say so.
    let issued = a.generate(&uma, Default::default()).unwrap();
    assert!(TestDb::caught_up(&[&b], db.epoch()));
    let page = scrape(&b);
    let applied = sample(&page, "tokenvault_replica_applied_seq").unwrap();
    assert!(applied >= db.epoch() as f64, "{applied} < {}", db.epoch());
    assert_eq!(sample(&page, "tokenvault_replica_fresh"), Some(1.0));
    assert_eq!(sample(&page, "tokenvault_replica_connected"), Some(1.0));
    let stale = sample(&page, "tokenvault_replica_staleness_seconds").unwrap();
    assert!(stale < BOUND.as_secs_f64() * 10.0, "staleness {stale}");
    let before = sample(&page, "tokenvault_replica_read_throughs_total").unwrap_or(0.0);

    // A token B has not seen yet (its feed may lag): a verify of an access
    // token minted on A either finds it in memory or reads through; the
    // counter never goes back, and the applied sequence moves on.
    let grant = a.exchange(issued.token.expose()).unwrap();
    assert!(b.verify(grant.access_token.expose()).is_ok());
    // A revocation through A is a change-feed row: B applies it.
    let epoch = db.epoch();
    a.revoke_refresh(issued.token.expose(), None).unwrap();
    assert!(db.epoch() > epoch);
    assert!(TestDb::caught_up(&[&b], db.epoch()));
    let page = scrape(&b);
    let after = sample(&page, "tokenvault_replica_read_throughs_total").unwrap_or(0.0);
    assert!(
        after >= before,
        "read-throughs went back: {before} → {after}"
    );
    assert!(sample(&page, "tokenvault_replica_applied_seq").unwrap() > applied);
    // No token text or id in the page.
    assert!(!page.contains(issued.token.expose()));
    assert!(!page.contains(&issued.info.id.to_string()));
}
