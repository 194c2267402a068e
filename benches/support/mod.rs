//! Shared by `benches/tokenvault.rs` and `examples/perf_report.rs`: how a
//! benchmark store is populated, and the three baselines (the floor of a
//! stored lookup, a JWT, raw sled writes).
//!
//! A store of `tokens` tokens holds `tokens / 2` refresh tokens, each
//! exchanged once (so `tokens / 2` live access tokens), spread over
//! organizations of 50 members with about 100 refresh tokens per member.
#![allow(dead_code)]

pub mod random;
pub mod timed_store;

use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokenvault::{Actor, Role, TokenStore};

/// Members per organization in a benchmark store.
pub const ORG_MEMBERS: usize = 50;

/// How a store of `tokens` tokens is laid out.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub orgs: usize,
    pub members_per_org: usize,
    pub refresh_per_member: usize,
}

impl Layout {
    pub fn for_tokens(tokens: usize) -> Layout {
        let refresh = (tokens / 2).max(1);
        let members = (refresh / 100).max(1);
        let members_per_org = members.min(ORG_MEMBERS);
        let orgs = members.div_ceil(members_per_org);
        let refresh_per_member = refresh.div_ceil(orgs * members_per_org);
        Layout {
            orgs,
            members_per_org,
            refresh_per_member,
        }
    }

    pub fn refresh_tokens(&self) -> usize {
        self.orgs * self.members_per_org * self.refresh_per_member
    }

    pub fn tokens(&self) -> usize {
        2 * self.refresh_tokens()
    }
}

pub fn org_name(o: usize) -> String {
    format!("org{o:05}")
}

pub fn user_name(m: usize) -> String {
    format!("user{m:03}")
}

pub fn role_of(m: usize) -> Role {
    match m {
        0 => Role::Owner,
        m if m % 10 == 1 => Role::Admin,
        _ => Role::User,
    }
}

/// Token strings kept from a populated store (a sample, so that holding
/// them does not weigh on the memory measured).
#[derive(Debug, Default, Clone)]
pub struct Sample {
    pub access: Vec<String>,
    pub refresh: Vec<String>,
}

/// Adds the members and fills an empty store with `layout`, keeping about
/// `keep` access tokens (and as many refresh tokens) spread over the store.
/// The storage engine's page cache for a store being built by
/// [`populate`] (the default is 64 MiB): the builder issues tokens of
/// random ids, so once the trees outgrow the cache nearly every insert
/// would read and decode a page of them again. A store opened for
/// measurement keeps the default.
pub const BUILD_CACHE_BYTES: u64 = 3 << 30;

pub fn populate(store: &TokenStore, layout: Layout, keep: usize) -> tokenvault::Result<Sample> {
    populate_visit(store, layout, keep, &mut |_, _| {})
}

/// [`populate`], showing `visit` every (refresh, access) token pair in
/// issue order: organization by organization, member by member.
pub fn populate_visit(
    store: &TokenStore,
    layout: Layout,
    keep: usize,
    visit: &mut dyn FnMut(&str, &str),
) -> tokenvault::Result<Sample> {
    let stride = (layout.refresh_tokens() / keep.max(1)).max(1);
    let mut sample = Sample::default();
    let mut n = 0usize;
    // Organizations in groups, each group's members added organization by
    // organization (one atomic, durable call each) and their tokens issued
    // in one bulk call (large batches, one sync at its end).
    const ORGS_PER_CALL: usize = 64;
    for first in (0..layout.orgs).step_by(ORGS_PER_CALL) {
        let orgs = first..(first + ORGS_PER_CALL).min(layout.orgs);
        let mut holders = Vec::with_capacity(orgs.len() * layout.members_per_org);
        for o in orgs {
            let org = org_name(o);
            let members: Vec<(String, Role)> = (0..layout.members_per_org)
                .map(|m| (user_name(m), role_of(m)))
                .collect();
            store.sync_org(&org, members)?;
            for m in 0..layout.members_per_org {
                holders.push((
                    Actor::new(org.clone(), user_name(m)),
                    layout.refresh_per_member,
                ));
            }
        }
        store.bulk_issue_many_for_benchmarks(&holders, 1, &mut |_, r, a| {
            if let Some(first) = a.first() {
                visit(r.expose(), first.expose());
            }
            if n.is_multiple_of(stride) && sample.access.len() < keep {
                sample.refresh.push(r.expose().to_string());
                sample
                    .access
                    .extend(a.iter().map(|t| t.expose().to_string()));
            }
            n += 1;
        })?;
    }
    Ok(sample)
}

// ----- baseline (a): the floor of a stored lookup -----

/// A record of the size of the store's access records, encoded the same
/// way (a version byte, then bincode 2 standard).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FloorRecord {
    pub id: [u8; 16],
    pub refresh_id: [u8; 16],
    pub issued_at: u64,
    pub expires_at: u64,
    pub revoked: bool,
    pub verifier: [u8; 32],
}

pub fn floor_key(i: u64) -> [u8; 32] {
    *blake3::hash(&i.to_le_bytes()).as_bytes()
}

pub fn floor_value(i: u64) -> Vec<u8> {
    let k = floor_key(i);
    let mut id = [0u8; 16];
    id.copy_from_slice(&k[..16]);
    let rec = FloorRecord {
        id,
        refresh_id: id,
        issued_at: 1_780_000_000 + i,
        expires_at: 1_780_003_600 + i,
        revoked: false,
        verifier: k,
    };
    let mut out = vec![1u8];
    out.extend(bincode::serde::encode_to_vec(&rec, bincode::config::standard()).expect("encodes"));
    out
}

/// Opens (creating if needed) a raw sled database at `path` whose tree
/// `floor` holds `n` keys `floor_key(0..n)`.
pub fn floor_db(path: &Path, n: u64) -> sled::Db {
    // sled lets go of its file lock when its background threads end, a
    // moment after the last handle is dropped: an open right after the
    // fill waits for that (generously bounded).
    let open = |cache: u64| {
        let t = std::time::Instant::now();
        loop {
            match sled::Config::new().path(path).cache_capacity(cache).open() {
                Ok(db) => return db,
                Err(sled::Error::Io(e))
                    if e.to_string().contains("could not acquire lock")
                        && t.elapsed() < std::time::Duration::from_secs(120) =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => panic!("floor db opens: {e:?}"),
            }
        }
    };
    let db = open(64 * 1024 * 1024);
    let tree = db.open_tree("floor").expect("tree");
    if (tree.len() as u64) < n {
        // Filled in key order (see `fill_floor`), then opened again as it
        // is measured.
        drop(tree);
        drop(db);
        fill_floor(&open(256 * 1024 * 1024), n);
        return open(64 * 1024 * 1024);
    }
    db
}

/// Puts the keys `floor_key(0..n)` in the tree `floor` of `db`: one insert
/// each, in key order (each page of the tree fills once, after the last),
/// with a flush every 160,000. sled keeps what an `apply_batch` wrote in
/// memory far beyond its cache size: 1M keys filled in batches of 10,000
/// peaked at 3.2 GB resident (a 10M fill grew past 20 GB and was killed),
/// the same keys inserted one by one in order at 0.34 GB, in less time
/// (6.1 s against 9.3 s).
fn fill_floor(db: &sled::Db, n: u64) {
    let tree = db.open_tree("floor").expect("tree");
    let mut order: Vec<([u8; 32], u64)> = (0..n).map(|i| (floor_key(i), i)).collect();
    order.sort_unstable();
    for (b, chunk) in order.chunks(10_000).enumerate() {
        for (k, j) in chunk {
            tree.insert(&k[..], floor_value(*j)).expect("insert");
        }
        if b % 16 == 15 {
            db.flush().expect("flush");
        }
    }
    db.flush().expect("flush");
}

/// The floor: what the cheapest stored verification costs — a keyed blake3
/// hash of a 32-byte secret, one sled `get`, one bincode decode.
pub struct Floor {
    pub tree: sled::Tree,
    pub n: u64,
    key: [u8; 32],
}

impl Floor {
    pub fn new(db: &sled::Db, n: u64) -> Floor {
        Floor {
            tree: db.open_tree("floor").expect("tree"),
            n,
            key: [42u8; 32],
        }
    }

    /// One stored verification of record `i`.
    pub fn check(&self, i: u64) -> bool {
        let secret = floor_key(i ^ 0x5a5a);
        let v = blake3::keyed_hash(&self.key, &secret);
        let bytes = self
            .tree
            .get(floor_key(i % self.n))
            .expect("get")
            .expect("present");
        let (rec, _): (FloorRecord, usize) =
            bincode::serde::decode_from_slice(&bytes[1..], bincode::config::standard())
                .expect("decodes");
        rec.verifier[0] == v.as_bytes()[0] || rec.expires_at > 0
    }
}

// ----- baseline (b): a JWT -----

/// Claims comparable to what `verify` answers: subject, organization,
/// scopes, issue and expiry times.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub org: String,
    pub scope: String,
    pub iat: u64,
    pub exp: u64,
}

pub struct Jwt {
    key: jsonwebtoken::DecodingKey,
    validation: jsonwebtoken::Validation,
    pub token: String,
}

impl Jwt {
    pub fn new() -> Jwt {
        let secret = [7u8; 32];
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let claims = Claims {
            sub: user_name(17),
            org: org_name(3),
            scope: "read squad-read incident-write".into(),
            iat: now,
            exp: now + 3600,
        };
        let enc = jsonwebtoken::EncodingKey::from_secret(&secret).expect("key");
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &enc,
        )
        .expect("encodes");
        Jwt {
            key: jsonwebtoken::DecodingKey::from_secret(&secret).expect("key"),
            validation: jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256),
            token,
        }
    }

    /// HS256 decode + validate (signature, `exp`).
    pub fn check(&self) -> Claims {
        jsonwebtoken::decode::<Claims>(&self.token, &self.key, &self.validation)
            .expect("valid")
            .claims
    }
}

impl Default for Jwt {
    fn default() -> Self {
        Jwt::new()
    }
}

// ----- baseline (c): raw sled writes -----

/// One atomic sled write of two access-record-sized values (a `Batch`):
/// sled seals its log buffer before and after such a write, as it does for
/// a transaction, so this is the floor of any multi-key atomic write.
pub fn sled_batch2(tree: &sled::Tree, i: u64) {
    let mut b = sled::Batch::default();
    b.insert(&floor_key(i ^ (1 << 61))[..], floor_value(i));
    b.insert(&floor_key(i ^ (3 << 60))[..], floor_value(i));
    tree.apply_batch(b).expect("batch");
}

/// One sled insert of an access-record-sized value under a fresh key.
pub fn sled_insert(tree: &sled::Tree, i: u64) {
    let k = floor_key(i ^ (1 << 62));
    tree.insert(&k[..], floor_value(i)).expect("insert");
}

// ----- measuring -----

pub fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let idx = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[idx.min(v.len() - 1)]
}

/// Nanoseconds of each of `n` calls.
pub fn time_each(n: usize, mut f: impl FnMut(usize)) -> Vec<f64> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        f(i);
        out.push(t.elapsed().as_nanos() as f64);
    }
    out
}

/// Nanoseconds per call, one figure per batch of `per_batch` calls.
pub fn time_batches(batches: usize, per_batch: usize, mut f: impl FnMut(usize)) -> Vec<f64> {
    let mut out = Vec::with_capacity(batches);
    let mut i = 0;
    for _ in 0..batches {
        let t = Instant::now();
        for _ in 0..per_batch {
            f(i);
            i += 1;
        }
        out.push(t.elapsed().as_nanos() as f64 / per_batch as f64);
    }
    out
}

/// What `threads` threads running a job for a while achieved.
#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    /// Calls per second of wall-clock time, all threads together.
    pub per_sec: f64,
    /// Calls per second of CPU time the threads got (from
    /// /proc/thread-self/schedstat): what the job costs, whatever else
    /// the machine runs.
    pub per_cpu_sec: f64,
    /// Share of the wall-clock time the threads spent waiting for a core
    /// (other processes had it).
    pub waiting: f64,
}

/// (on-CPU ns, runqueue-wait ns) of the calling thread, if the kernel says.
pub fn thread_sched_ns() -> Option<(u64, u64)> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let mut it = s.split_whitespace().map(|v| v.parse::<u64>().ok());
    Some((it.next()??, it.next()??))
}

/// Runs `f(thread, n)` on `threads` threads for `dur`.
pub fn throughput<F>(threads: usize, dur: Duration, f: F) -> Throughput
where
    F: Fn(usize, u64) + Sync,
{
    let stop = std::sync::atomic::AtomicBool::new(false);
    let start = Instant::now();
    let results: Vec<(u64, u64, u64)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let f = &f;
                let stop = &stop;
                s.spawn(move || {
                    let before = thread_sched_ns().unwrap_or((0, 0));
                    let mut n = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        for _ in 0..64 {
                            f(t, n);
                            n += 1;
                        }
                    }
                    let after = thread_sched_ns().unwrap_or((0, 0));
                    (n, after.0 - before.0, after.1 - before.1)
                })
            })
            .collect();
        std::thread::sleep(dur);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let wall = start.elapsed().as_secs_f64();
    let ops: u64 = results.iter().map(|r| r.0).sum();
    let cpu: u64 = results.iter().map(|r| r.1).sum();
    let wait: u64 = results.iter().map(|r| r.2).sum();
    Throughput {
        per_sec: ops as f64 / wall,
        per_cpu_sec: if cpu > 0 {
            ops as f64 / (cpu as f64 / 1e9)
        } else {
            f64::NAN
        },
        waiting: wait as f64 / 1e9 / (wall * threads as f64),
    }
}

/// CPU time this process used so far, all threads (also ended ones), ms
/// (utime + stime of /proc/self/stat, in 10 ms ticks).
pub fn process_cpu_ms() -> f64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    match (
        f.get(11).and_then(|v| v.parse::<f64>().ok()),
        f.get(12).and_then(|v| v.parse::<f64>().ok()),
    ) {
        (Some(u), Some(s)) => (u + s) * 10.0,
        _ => f64::NAN,
    }
}

/// (steal, total) jiffies of all CPUs so far, from /proc/stat: the share of
/// time the hypervisor gave the cores to someone else.
pub fn cpu_steal() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = s.lines().next().unwrap_or("");
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total = v.iter().take(8).sum();
    (v.get(7).copied().unwrap_or(0), total)
}

/// Returns the allocator's free pages to the system (glibc's
/// `malloc_trim`), as the store does after its load: called before a
/// "before" reading of the resident memory, so that what an earlier phase
/// freed (building the store) is not counted as given back by the store.
pub fn give_back_freed_pages() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: no pointer passed; glibc releases whole free pages only.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// This process's resident memory, MiB (`VmRSS` of /proc/self/status).
pub fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// The organization and member index of the `k`th (refresh, access) pair
/// that [`populate_visit`] shows.
pub fn owner_of_pair(layout: Layout, k: usize) -> (usize, usize) {
    let member = k / layout.refresh_per_member;
    (
        member / layout.members_per_org,
        member % layout.members_per_org,
    )
}
