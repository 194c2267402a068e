//! The performance report: one table of medians, each with the
//! ratio to its baseline, and a JSON file for machines.
//!
//! ```text
//! cargo run --release --example perf_report -- [--quick] [--json FILE] [--tokens N]
//! cargo run --release --features cli --example perf_report -- --metrics ...
//! ```
//!
//! `--metrics` (built with the `cli` feature) installs the Prometheus
//! recorder before the store opens, as `tokenvault serve --metrics-listen`
//! does, so that every figure is measured with metrics being recorded;
//! compare with a run without it for the cost of metrics on the verify path.
//!
//! The store is built in a child process (the same executable), so that the
//! memory and the open time measured here are those of a service that opens
//! an existing store of `--tokens` tokens (default 1,000,000; 100,000 with
//! `--quick`). Token strings travel from the child over a pipe, never
//! through a file.

#![recursion_limit = "256"]

#[path = "../benches/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use support::random::*;
use support::*;
use tokenvault::{Actor, Config, Error, RevokeScope, Role, StoreKey};

const KEY: [u8; 32] = [0x42; 32];
/// The cap of live access tokens per refresh token in the report's store:
/// raised from the default 10 so that one family can hold 10,000.
const CAP: usize = 10_001;
/// Distinct access tokens of the random-order measurements (fewer when
/// the store holds fewer).
const RANDOM_DISTINCT: usize = 100_000;
/// The seed of the random orders: the floor's process makes the same ones.
const RANDOM_SEED: u64 = 0x005e_ed0f_7a11_0c8d;
const MIB: f64 = 1024.0 * 1024.0;

struct Opts {
    quick: bool,
    metrics: bool,
    json: Option<PathBuf>,
    tokens: usize,
}

fn parse_args() -> Result<Opts, String> {
    let mut quick = false;
    let mut metrics = false;
    let mut json = None;
    let mut tokens = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--metrics" => metrics = true,
            "--json" => json = Some(PathBuf::from(args.next().ok_or("--json needs a file")?)),
            "--tokens" => {
                let n: usize = args
                    .next()
                    .ok_or("--tokens needs a number")?
                    .replace('_', "")
                    .parse()
                    .map_err(|_| "--tokens needs a number")?;
                if n < 2_000 {
                    return Err("--tokens must be at least 2000".into());
                }
                tokens = Some(n);
            }
            "-h" | "--help" => {
                println!("usage: perf_report [--quick] [--metrics] [--json FILE] [--tokens N]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    let tokens = tokens.unwrap_or(if quick { 100_000 } else { 1_000_000 });
    Ok(Opts {
        quick,
        metrics,
        json,
        tokens,
    })
}

/// The one place where the report's store is configured: the builder
/// child, the measured open and the reopens all take their `Config` from
/// here. A store limit that the report's workload exceeds is raised here
/// (the report issues far more refresh tokens per member than a service
/// would: about 100 each when the store is built, then thousands more over
/// 64 members in the write benchmarks).
/// The median nanoseconds of a call of `check` over the items of `order`,
/// each in turn and around again: at least `calls` calls and one whole
/// pass, in batches of `per`.
fn median_ns_over(calls: usize, order: &[u32], per: usize, mut check: impl FnMut(usize)) -> f64 {
    let mut v = time_batches(calls.max(order.len()) / per, per, |i| {
        check(order[i % order.len()] as usize)
    });
    median(&mut v)
}

fn store_config(path: &Path) -> Config {
    Config::new(path)
        .key(StoreKey::from_bytes(KEY))
        .max_access_per_refresh(CAP)
        .max_live_tokens_per_member(usize::MAX)
}

/// The organization of the members whose tokens `durable_revoke_ns` revokes
/// (made by the builder, after the rest of the store).
const REVOKE_ORG: &str = "perf-revoke";
/// Refresh tokens per member of `REVOKE_ORG` (fewer than the default cap
/// of live refresh tokens per member, so the set needs no raised limit).
const REVOKE_PER_MEMBER: usize = 50;

fn revoke_user(m: usize) -> String {
    format!("r{m:04}")
}

/// Builder: `n` refresh tokens held by the members of `REVOKE_ORG`, each
/// exchanged once (so each has one access token). Made in the builder so
/// that in the measuring process their records are as cold as any token
/// of the store (the warm-start open does not read sled). Returns
/// (member index, refresh token, access token).
fn revoke_set(
    store: &tokenvault::TokenStore,
    n: usize,
) -> tokenvault::Result<Vec<(usize, String, String)>> {
    let mut out = Vec::with_capacity(n);
    let mut m = 0;
    while out.len() < n {
        let user = revoke_user(m);
        store.add_member(
            REVOKE_ORG,
            &user,
            if m == 0 { Role::Owner } else { Role::User },
        )?;
        let mut refresh = Vec::new();
        store.bulk_issue_for_benchmarks(
            &Actor::new(REVOKE_ORG, &user),
            REVOKE_PER_MEMBER.min(n - out.len()),
            0,
            &mut |r, _| refresh.push(r),
        )?;
        for r in refresh {
            let access = store.exchange(r.expose())?.access_token;
            out.push((m, r.expose().to_string(), access.expose().to_string()));
        }
        m += 1;
    }
    Ok(out)
}

/// Child mode: build the store and the floor database, print the sample.
fn build_child(
    dir: &Path,
    tokens: usize,
    keep: usize,
    revokes: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let layout = Layout::for_tokens(tokens);
    let t = Instant::now();
    let store = store_config(&dir.join("store"))
        .cache_bytes(BUILD_CACHE_BYTES)
        .open()?;
    // Every (refresh, access) pair, for the measurements in random order.
    let (mut all_refresh, mut all_access) = (Texts::default(), Texts::default());
    let sample = populate_visit(&store, layout, keep, &mut |r, a| {
        all_refresh.push(r);
        all_access.push(a);
    })?;
    store.flush()?;
    let build_ms = t.elapsed().as_secs_f64() * 1e3;
    eprintln!("built in {:.1} s; closing it ...", build_ms / 1e3);
    let to_revoke = revoke_set(&store, revokes)?;
    store.flush()?;
    // A clean shutdown: `close` checkpoints sled (see its docs), so the
    // measured open is that of a service restarted after closing the store.
    let t = Instant::now();
    store.close()?;
    let close_ms = t.elapsed().as_secs_f64() * 1e3;
    eprintln!(
        "closed in {:.1} s; building the floor database ...",
        close_ms / 1e3
    );
    let t = Instant::now();
    let floor = floor_db(&dir.join("floor"), layout.tokens() as u64);
    drop(floor);
    let floor_ms = t.elapsed().as_secs_f64() * 1e3;
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::new(out.lock());
    for a in &sample.access {
        writeln!(out, "A {a}")?;
    }
    for r in &sample.refresh {
        writeln!(out, "R {r}")?;
    }
    for (m, r, a) in &to_revoke {
        writeln!(out, "V {m} {r} {a}")?;
    }
    for k in 0..all_access.len() {
        writeln!(out, "P {} {}", all_refresh.get(k), all_access.get(k))?;
    }
    writeln!(out, "BUILD {build_ms}")?;
    writeln!(out, "CLOSE {close_ms}")?;
    writeln!(out, "FLOOR {floor_ms}")?;
    out.flush()?;
    Ok(())
}

/// Child mode: opens the store at `dir`, exchanges the refresh tokens read
/// from stdin (one a line, until an empty line: secrets travel over a
/// pipe, never in arguments) without a sync, says `READY` and waits to be
/// killed (SIGKILL) with those writes in sled's log, as a service that
/// crashes while serving.
fn crash_child(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let store = store_config(dir).open()?;
    let mut lines = std::io::stdin().lock().lines();
    let mut written = 0;
    for line in lines.by_ref() {
        let line = line?;
        if line.is_empty() {
            break;
        }
        // A token the benchmarks revoked is refused: the others write.
        written += usize::from(store.exchange(&line).is_ok());
    }
    if written == 0 {
        return Err("no exchange went through".into());
    }
    println!("READY");
    std::io::stdout().flush()?;
    // Until the parent kills this process (or closes the pipe, if it
    // fails first).
    for line in lines {
        line?;
    }
    Ok(())
}

/// The open after a crash: a child opens the store, writes and is killed
/// with SIGKILL once it says so; then the time from `open` to the first
/// verification here. The store must be closed (dropped) by the caller.
fn open_after_kill_ms(
    dir: &Path,
    refresh: &[String],
    probe: &str,
) -> Result<f64, Box<dyn std::error::Error>> {
    let mut child = Command::new(std::env::current_exe()?)
        .arg("--crash-child")
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let ready = (|| -> Result<bool, Box<dyn std::error::Error>> {
        let mut stdin = child.stdin.take().ok_or("no pipe")?;
        for r in refresh {
            writeln!(stdin, "{r}")?;
        }
        writeln!(stdin)?;
        stdin.flush()?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().ok_or("no pipe")?).read_line(&mut line)?;
        // Kept open until the kill: the child waits on it.
        std::mem::forget(stdin);
        Ok(line.trim() == "READY")
    })();
    child.kill()?;
    child.wait()?;
    if !ready? {
        return Err("the crash child did not get ready".into());
    }
    let t = Instant::now();
    let s = store_config(dir).open()?;
    s.verify(probe)?;
    Ok(t.elapsed().as_secs_f64() * 1e3)
}

/// Child mode: the baselines, measured in a process of their own so that
/// the memory of the floor database does not count as the store's. Prints
/// `name value` lines.
fn baselines_child(dir: &Path, tokens: usize, q: bool) -> Result<(), Box<dyn std::error::Error>> {
    let floor_db = floor_db(&dir.join("floor"), tokens as u64);
    let floor_disk_bytes_per_record = floor_db.size_on_disk()? as f64 / tokens as f64;
    let floor = Floor::new(&floor_db, tokens as u64);
    // sled's own scan (first, on a freshly opened database, as the
    // store's open does) of as many records as the store holds tokens: opening
    // a store must read each token's record once.
    let t = Instant::now();
    let scanned = floor.tree.iter().count();
    let sled_scan_ms = t.elapsed().as_secs_f64() * 1e3;
    assert_eq!(scanned, tokens);
    // Once a process has used a sled batch or transaction, every sled
    // operation takes sled's global concurrency-control lock. The store
    // uses transactions, so the baselines are measured in that mode too.
    sled_batch2(&floor.tree, 1 << 44);
    let mut rng_state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        rng_state
    };
    let idx: Vec<u64> = (0..if q { 20_000 } else { 100_000 })
        .map(|_| next() % tokens as u64)
        .collect();
    let mut v = time_batches(idx.len() / 100, 100, |i| {
        assert!(floor.check(idx[i]));
    });
    let floor_ns = median(&mut v);
    let jwt = Jwt::new();
    let mut v = time_batches(if q { 50 } else { 200 }, 100, |_| {
        std::hint::black_box(jwt.check());
    });
    let jwt_ns = median(&mut v);
    let mut v = time_each(if q { 5_000 } else { 20_000 }, |i| {
        sled_insert(&floor.tree, i as u64)
    });
    let sled_insert_ns = median(&mut v);
    let mut v = time_each(if q { 300 } else { 1_000 }, |i| {
        sled_insert(&floor.tree, (1 << 40) + i as u64);
        floor_db.flush().expect("flush");
    });
    let sled_insert_flush_ns = median(&mut v);
    // The same, made durable: sled's `flush` on Linux ends with
    // `sync_file_range` only, so the file its log lives in (`db`) is then
    // fdatasynced, as the store's durable calls do.
    let db_file = std::fs::File::open(dir.join("floor").join("db"))?;
    let mut v = time_each(if q { 300 } else { 1_000 }, |i| {
        sled_insert(&floor.tree, (1 << 45) + i as u64);
        floor_db.flush().expect("flush");
        db_file.sync_data().expect("fdatasync");
    });
    let sled_insert_flush_sync_ns = median(&mut v);
    drop(db_file);
    let mut v = time_each(if q { 300 } else { 1_000 }, |i| {
        sled_batch2(&floor.tree, (1 << 42) + i as u64);
        floor_db.flush().expect("flush");
    });
    let sled_batch_flush_ns = median(&mut v);
    let batch_job = |t: usize, n: u64| {
        sled_batch2(&floor.tree, (1 << 43) + ((t as u64) << 32) + n);
        floor_db.flush().expect("flush");
    };
    let dur = Duration::from_millis(if q { 400 } else { 1000 });
    let mut r = Vec::new();
    for k in 0..3u64 {
        let a = throughput(1, dur, |t, n| batch_job(t, n + (k << 24))).per_sec;
        let b = throughput(2, dur, |t, n| batch_job(t + 2, n + (k << 24))).per_sec;
        r.push(b / a);
    }
    let sled_batch_flush_threads2_speedup = median(&mut r);
    drop(floor);
    drop(floor_db);
    let sqlite_update_full_ns = sqlite_update_full(&dir.join("sqlite"), tokens / 2, q)?;

    for (name, v) in [
        ("floor_ns", floor_ns),
        ("jwt_ns", jwt_ns),
        ("sled_insert_ns", sled_insert_ns),
        ("sled_insert_flush_ns", sled_insert_flush_ns),
        ("sled_insert_flush_sync_ns", sled_insert_flush_sync_ns),
        ("sqlite_update_full_ns", sqlite_update_full_ns),
        ("sled_batch_flush_ns", sled_batch_flush_ns),
        (
            "sled_batch_flush_threads2_speedup",
            sled_batch_flush_threads2_speedup,
        ),
        ("sled_scan_ms", sled_scan_ms),
        ("floor_disk_bytes_per_record", floor_disk_bytes_per_record),
    ] {
        println!("{name} {v}");
    }
    Ok(())
}

/// Baseline (e): what a durable one-row change costs in SQLite. A table of
/// `rows` rows keyed like the store's records (16 random-looking bytes, a
/// record of an access record's size), in WAL mode with `synchronous=FULL`
/// (each commit syncs the WAL), in `dir` (on the store's disk); the median
/// of one-row `UPDATE`s, each its own transaction (autocommit), on distinct
/// rows spread over the table.
fn sqlite_update_full(dir: &Path, rows: usize, q: bool) -> Result<f64, Box<dyn std::error::Error>> {
    std::fs::create_dir_all(dir)?;
    let mut db = rusqlite::Connection::open(dir.join("tokens.db"))?;
    let mode: String = db.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(format!("sqlite refused WAL mode (journal_mode {mode})").into());
    }
    db.execute_batch("PRAGMA synchronous = FULL")?;
    let sync: i64 = db.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
    if sync != 2 {
        return Err(format!("sqlite synchronous is {sync}, not FULL (2)").into());
    }
    db.execute_batch(
        "CREATE TABLE refresh (id BLOB PRIMARY KEY, record BLOB NOT NULL) WITHOUT ROWID",
    )?;
    let id = |i: u64| floor_key(i)[..16].to_vec();
    let tx = db.transaction()?;
    {
        let mut ins = tx.prepare("INSERT INTO refresh (id, record) VALUES (?1, ?2)")?;
        for i in 0..rows as u64 {
            ins.execute(rusqlite::params![id(i), floor_value(i)])?;
        }
    }
    tx.commit()?;
    // The load went through the WAL: copy it into the database and start
    // the WAL over. SQLite keeps the WAL file at its size (no
    // `journal_size_limit`), so the commits below overwrite it in place,
    // as in a long-running service, rather than grow a fresh file.
    db.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()))?;
    let n = (if q { 300 } else { 1_000 }).min(rows / 2);
    // Distinct rows spread over the table: a stride coprime with `rows`.
    let mut stride = (rows as u64 * 5 / 8) | 1;
    while gcd(stride, rows as u64) != 1 {
        stride += 2;
    }
    let mut upd = db.prepare("UPDATE refresh SET record = ?2 WHERE id = ?1")?;
    let mut v = Vec::with_capacity(n);
    // The first 100 commits warm the statement and the pages up, untimed.
    for k in 0..(n + 100) as u64 {
        let i = (k * stride + 7) % rows as u64;
        let mut rec = floor_value(i);
        // The record changes as a revocation changes it (its flag).
        let last = rec.len() - 1;
        rec[last] ^= 1;
        let t = Instant::now();
        let changed = upd.execute(rusqlite::params![id(i), rec])?;
        if k >= 100 {
            v.push(t.elapsed().as_nanos() as f64);
        }
        if changed != 1 {
            return Err(format!("sqlite UPDATE changed {changed} rows, not 1").into());
        }
    }
    Ok(median(&mut v))
}

/// Runs the hash-map floor in a child process: sends it every (refresh,
/// access) pair and reads back (`floor_random_ns`, `floor_bytes_per_token`).
fn floor_in_child(
    layout: Layout,
    refresh: &Texts,
    access: &Texts,
    prefix: &str,
    q: bool,
) -> Result<[f64; 2], Box<dyn std::error::Error>> {
    let mut child = Command::new(std::env::current_exe()?)
        .arg("--floor")
        .arg(prefix)
        .arg(layout.orgs.to_string())
        .arg(layout.members_per_org.to_string())
        .arg(layout.refresh_per_member.to_string())
        .arg(if q { "quick" } else { "full" })
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    {
        let mut input = std::io::BufWriter::new(child.stdin.take().ok_or("no pipe")?);
        for k in 0..access.len() {
            writeln!(input, "P {} {}", refresh.get(k), access.get(k))?;
        }
        input.flush()?;
    }
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().ok_or("no pipe")?, &mut out)?;
    if !child.wait()?.success() {
        return Err("the floor process failed".into());
    }
    let mut figures = std::collections::HashMap::new();
    for line in out.lines() {
        if let Some((k, v)) = line.split_once(' ') {
            figures.insert(k.to_string(), v.parse::<f64>()?);
        }
    }
    let get = |k: &str| {
        figures
            .get(k)
            .copied()
            .ok_or(format!("floor figure {k} missing"))
    };
    Ok([get("floor_random_ns")?, get("floor_bytes_per_token")?])
}

/// Child mode: the hash-map floor over the pairs read from standard input,
/// in the same random order as the store's measurement. Prints its median
/// and the resident bytes its map adds per record.
fn floor_child(prefix: &str, layout: Layout, q: bool) -> Result<(), Box<dyn std::error::Error>> {
    let (mut refresh, mut access) = (Texts::default(), Texts::default());
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        match line
            .strip_prefix("P ")
            .and_then(|rest| rest.split_once(' '))
        {
            Some((r, a)) => {
                refresh.push(r);
                access.push(a);
            }
            None => return Err(format!("unexpected line: {line}").into()),
        }
    }
    let random = random_subset(access.len(), RANDOM_DISTINCT, RANDOM_SEED);
    let before = rss_mib();
    let mut orgs: std::collections::HashMap<usize, std::sync::Arc<str>> = Default::default();
    let mut users: std::collections::HashMap<(usize, usize), std::sync::Arc<str>> =
        Default::default();
    let floor = FloorMap::new(prefix, KEY, &refresh, &access, |k| {
        let (o, m) = owner_of_pair(layout, k);
        let org = orgs.entry(o).or_insert_with(|| org_name(o).into()).clone();
        let user = users
            .entry((o, m))
            .or_insert_with(|| user_name(m).into())
            .clone();
        (org, user)
    });
    let after = rss_mib();
    let bytes_per_record = (after - before) * MIB / floor.len().max(1) as f64;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let per = 1000.min(random.len());
    let ns = median_ns_over(if q { 200_000 } else { 500_000 }, &random, per, |k| {
        let r = floor.check(access.get(k), now);
        assert!(r.is_some(), "a token of the floor verifies");
    });
    println!("floor_random_ns {ns}");
    println!("floor_bytes_per_token {bytes_per_record}");
    Ok(())
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

struct Row {
    name: &'static str,
    value: f64,
    unit: &'static str,
    baseline: Option<(&'static str, f64)>,
    target: &'static str,
    met: Option<bool>,
}

fn row(
    name: &'static str,
    value: f64,
    unit: &'static str,
    baseline: Option<(&'static str, f64)>,
    target: &'static str,
    met: Option<bool>,
) -> Row {
    Row {
        name,
        value,
        unit,
        baseline,
        target,
        met,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--build-store") {
        let dir = PathBuf::from(&args[2]);
        let tokens: usize = args[3].parse().expect("tokens");
        let keep: usize = args[4].parse().expect("keep");
        let revokes: usize = args[5].parse().expect("revokes");
        if let Err(e) = build_child(&dir, tokens, keep, revokes) {
            eprintln!("building the store failed: {e}");
            std::process::exit(1);
        }
        return;
    }
    if args.get(1).map(String::as_str) == Some("--floor") {
        let layout = Layout {
            orgs: args[3].parse().expect("orgs"),
            members_per_org: args[4].parse().expect("members"),
            refresh_per_member: args[5].parse().expect("tokens per member"),
        };
        if let Err(e) = floor_child(&args[2], layout, args[6] == "quick") {
            eprintln!("the floor failed: {e}");
            std::process::exit(1);
        }
        return;
    }
    if args.get(1).map(String::as_str) == Some("--crash-child") {
        if let Err(e) = crash_child(Path::new(&args[2])) {
            eprintln!("the crash child failed: {e}");
            std::process::exit(1);
        }
        return;
    }
    if args.get(1).map(String::as_str) == Some("--baselines") {
        let dir = PathBuf::from(&args[2]);
        let tokens: usize = args[3].parse().expect("tokens");
        if let Err(e) = baselines_child(&dir, tokens, args[4] == "quick") {
            eprintln!("the baselines failed: {e}");
            std::process::exit(1);
        }
        return;
    }
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("perf_report: {e}");
            std::process::exit(2);
        }
    };
    if opts.metrics {
        if let Err(e) = install_recorder() {
            eprintln!("perf_report: {e}");
            std::process::exit(2);
        }
    }
    if let Err(e) = run(&opts) {
        eprintln!("perf_report failed: {e}");
        std::process::exit(1);
    }
    #[cfg(feature = "cli")]
    if let Some(h) = HANDLE.get() {
        let text = h.render();
        for line in text.lines() {
            if line.starts_with("tokenvault_verifications_total") {
                eprintln!("metrics: {line}");
            }
        }
    }
}

/// The Prometheus recorder, installed before the store opens (its metrics
/// register on first use); kept for the life of the process.
#[cfg(feature = "cli")]
fn install_recorder() -> Result<(), String> {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
    tokenvault::describe_metrics();
    eprintln!("metrics: the Prometheus recorder is installed");
    // Rendered at the end, so that the recorder is seen to have counted.
    let _ = HANDLE.set(handle);
    Ok(())
}

#[cfg(feature = "cli")]
static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
    std::sync::OnceLock::new();

#[cfg(not(feature = "cli"))]
fn install_recorder() -> Result<(), String> {
    Err("--metrics needs the `cli` feature (cargo run --release --features cli ...)".into())
}

fn run(opts: &Opts) -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    let layout = Layout::for_tokens(opts.tokens);
    let tokens = layout.tokens();
    let q = opts.quick;
    let keep = if q { 5_000 } else { 20_000 };
    // Distinct refresh tokens revoked for `durable_revoke_ns`.
    let revokes = if q { 300 } else { 1_000 };
    let dir = tempfile::tempdir()?;
    eprintln!(
        "building a store of {tokens} tokens ({} orgs x {} members x {} refresh tokens, each exchanged once) ...",
        layout.orgs, layout.members_per_org, layout.refresh_per_member
    );
    let mut child = Command::new(std::env::current_exe()?)
        .arg("--build-store")
        .arg(dir.path())
        .arg(tokens.to_string())
        .arg(keep.to_string())
        .arg(revokes.to_string())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut sample = Sample::default();
    let mut to_revoke: Vec<(usize, String, String)> = Vec::with_capacity(revokes);
    // Every token pair of the store, in issue order.
    let (mut all_refresh, mut all_access) = (Texts::default(), Texts::default());
    let (mut build_ms, mut close_ms, mut floor_build_ms) = (0.0, 0.0, 0.0);
    for line in BufReader::new(child.stdout.take().ok_or("no pipe")?).lines() {
        let line = line?;
        match line.split_once(' ') {
            Some(("A", t)) => sample.access.push(t.to_string()),
            Some(("R", t)) => sample.refresh.push(t.to_string()),
            Some(("V", rest)) => {
                let mut f = rest.splitn(3, ' ');
                match (f.next(), f.next(), f.next()) {
                    (Some(m), Some(r), Some(a)) => {
                        to_revoke.push((m.parse()?, r.to_string(), a.to_string()))
                    }
                    _ => return Err(format!("unexpected line from the builder: {line}").into()),
                }
            }
            Some(("P", rest)) => match rest.split_once(' ') {
                Some((r, a)) => {
                    all_refresh.push(r);
                    all_access.push(a);
                }
                None => return Err(format!("unexpected line from the builder: {line}").into()),
            },
            Some(("BUILD", v)) => build_ms = v.parse()?,
            Some(("CLOSE", v)) => close_ms = v.parse()?,
            Some(("FLOOR", v)) => floor_build_ms = v.parse()?,
            _ => return Err(format!("unexpected line from the builder: {line}").into()),
        }
    }
    if !child.wait()?.success() {
        return Err("the builder process failed".into());
    }
    if to_revoke.len() != revokes {
        return Err(format!(
            "the builder made {} tokens to revoke, not {revokes}",
            to_revoke.len()
        )
        .into());
    }
    eprintln!(
        "built in {:.1} s (floor database {:.1} s); {} sample tokens",
        build_ms / 1e3,
        floor_build_ms / 1e3,
        sample.access.len()
    );

    // ----- baselines, in a process of their own -----
    let out = Command::new(std::env::current_exe()?)
        .arg("--baselines")
        .arg(dir.path())
        .arg(tokens.to_string())
        .arg(if q { "quick" } else { "full" })
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        return Err("the baselines process failed".into());
    }
    let mut base = std::collections::HashMap::new();
    for line in String::from_utf8(out.stdout)?.lines() {
        if let Some((k, v)) = line.split_once(' ') {
            base.insert(k.to_string(), v.parse::<f64>()?);
        }
    }
    let get = |k: &str| base.get(k).copied().ok_or(format!("baseline {k} missing"));
    let floor_ns = get("floor_ns")?;
    let jwt_ns = get("jwt_ns")?;
    let sled_insert_ns = get("sled_insert_ns")?;
    let sled_insert_flush_ns = get("sled_insert_flush_ns")?;
    let sled_insert_flush_sync_ns = get("sled_insert_flush_sync_ns")?;
    let sqlite_update_full_ns = get("sqlite_update_full_ns")?;
    let sled_batch_flush_ns = get("sled_batch_flush_ns")?;
    let sled_batch_flush_threads2_speedup = get("sled_batch_flush_threads2_speedup")?;
    let sled_scan_ms = get("sled_scan_ms")?;
    let floor_disk_bytes_per_record = get("floor_disk_bytes_per_record")?;

    // ----- open, cold and hot verification -----
    // The builder closed the store: besides sled's files, its warm-start
    // files wait for this open (which reads and deletes them).
    let warm_bytes_per_token = std::fs::read_dir(dir.path().join("store").join("warm-start"))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum::<u64>()
        })
        .unwrap_or(0) as f64
        / tokens as f64;
    // The orders of the random measurements, made before the open so that
    // their memory does not count as the store's: `random` is
    // min(100,000, all) distinct access tokens of the store in a random
    // order, `everyone` every access token in another.
    let random = random_subset(all_access.len(), RANDOM_DISTINCT, RANDOM_SEED);
    let everyone = shuffled(all_access.len(), RANDOM_SEED ^ 0xa5a5);
    let steal_start = cpu_steal();
    // The open gives the allocator's free pages back (see
    // `give_back_freed_pages`): the build's are given back first, so that
    // the difference is the store's alone.
    give_back_freed_pages();
    let rss_before_open = rss_mib();
    let cpu = process_cpu_ms();
    let t = Instant::now();
    let store = store_config(&dir.path().join("store")).open()?;
    let open_ms = t.elapsed().as_secs_f64() * 1e3;
    let open_cpu_ms = process_cpu_ms() - cpu;
    let first = Instant::now();
    store.verify(&sample.access[0])?;
    let open_to_verify_ms = open_ms + first.elapsed().as_secs_f64() * 1e3;

    let per = 50;
    let cold_batches = (sample.access.len() - 1) / per;
    let mut cold = time_batches(cold_batches, per, |i| {
        let r = store.verify(&sample.access[1 + i]);
        assert!(r.is_ok(), "sample token verifies");
    });
    let verify_cold_ns = median(&mut cold);

    let hot: Vec<&String> = sample.access.iter().take(64).collect();
    let mut v = time_batches(if q { 300 } else { 1000 }, 1000, |i| {
        let r = store.verify(hot[i % hot.len()]);
        assert!(r.is_ok());
    });
    let verify_hot_ns = median(&mut v);
    let mut v = time_batches(if q { 100 } else { 300 }, 1000, |i| {
        let r = store.authorize(hot[i % hot.len()], "read");
        assert!(r.is_ok());
    });
    let authorize_ns = median(&mut v);
    // The last checksum digit changed (to another digit than it was).
    let (body, last) = hot[0].split_at(hot[0].len() - 1);
    let malformed = format!("{body}{}", if last == "x" { "y" } else { "x" });
    let mut v = time_batches(if q { 100 } else { 300 }, 1000, |_| {
        assert!(matches!(store.verify(&malformed), Err(Error::Malformed(_))));
    });
    let verify_malformed_ns = median(&mut v);
    let unknown = tokenvault::token::encode_raw(
        store.prefix(),
        tokenvault::TokenKind::Access,
        [9; 16],
        [9; 32],
    );
    let mut v = time_batches(if q { 100 } else { 300 }, 1000, |_| {
        assert!(matches!(store.verify(&unknown), Err(Error::InvalidToken)));
    });
    let verify_unknown_ns = median(&mut v);
    let rss_after_open = rss_mib();

    // Two threads verifying against one. The sample is in issue order
    // (member by member): its two halves hold different members' tokens;
    // interleaved, both threads verify the same members at once.
    let n = sample.access.len().min(4096);
    let split: [Vec<&String>; 2] = [
        sample.access[..n / 2].iter().collect(),
        sample.access[n / 2..n].iter().collect(),
    ];
    let interleaved: [Vec<&String>; 2] = [
        sample.access[..n].iter().step_by(2).collect(),
        sample.access[..n].iter().skip(1).step_by(2).collect(),
    ];
    let scaling = |halves: &[Vec<&String>; 2], rounds: usize| {
        // Thread `t` verifies half `(t + first) % 2`.
        let store = &store;
        let job = |first: usize| {
            move |t: usize, n: u64| {
                let set = &halves[(t + first) % 2];
                let r = store.verify(set[n as usize % set.len()]);
                assert!(r.is_ok());
            }
        };
        let dur = Duration::from_millis(if q { 250 } else { 500 });
        let (mut ratios, mut cpu_ratios, mut waits) = (Vec::new(), Vec::new(), Vec::new());
        let (mut one, mut two) = (Vec::new(), Vec::new());
        let (mut first, mut second) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            // One thread does the pair's work one half at a time: its rate
            // is the mean of its rates on each half (the halves hold
            // different tokens, not necessarily as quick to verify).
            let a = [
                throughput(1, dur / 2, job(0)),
                throughput(1, dur / 2, job(1)),
            ];
            let a_rate = (a[0].per_sec + a[1].per_sec) / 2.0;
            let a_cpu = (a[0].per_cpu_sec + a[1].per_cpu_sec) / 2.0;
            let b = throughput(2, dur, job(0));
            one.push(a_rate);
            first.push(a[0].per_sec);
            second.push(a[1].per_sec);
            two.push(b.per_sec);
            ratios.push(b.per_sec / a_rate);
            cpu_ratios.push(2.0 * b.per_cpu_sec / a_cpu);
            waits.push(b.waiting);
        }
        [
            median(&mut ratios),
            // What two cores of its own would give: two threads' calls per
            // CPU second against one thread's (contention shows here;
            // other processes taking the cores do not).
            median(&mut cpu_ratios),
            median(&mut waits),
            median(&mut one),
            median(&mut two),
            median(&mut first),
            median(&mut second),
        ]
    };
    let [verify_threads2_speedup, verify_threads2_speedup_cpu, verify_threads2_waiting, verify_1t_ops, verify_2t_ops, verify_1t_first_half_ops, verify_1t_second_half_ops] =
        scaling(&split, if q { 6 } else { 10 });
    let [same_member_speedup, same_member_speedup_cpu, ..] =
        scaling(&interleaved, if q { 4 } else { 6 });

    // ----- verification in random order, as services meet it -----
    let per = 1000.min(random.len());
    let mut v = time_batches(
        (if q { 200_000 } else { 500_000 }).max(random.len()) / per,
        per,
        |i| {
            let r = store.verify(all_access.get(random[i % random.len()] as usize));
            assert!(r.is_ok(), "a token of the store verifies");
        },
    );
    let verify_random_ns = median(&mut v);
    let mut v = time_batches(everyone.len() / per, per, |i| {
        let r = store.verify(all_access.get(everyone[i] as usize));
        assert!(r.is_ok(), "a token of the store verifies");
    });
    let verify_random_all_ns = median(&mut v);
    // Every token has now been verified once: whatever the store builds
    // on first touch is resident.
    let rss_touched = rss_mib();
    let rss_bytes_per_token =
        (rss_touched.max(rss_after_open) - rss_before_open) * MIB / tokens as f64;
    let random_job = |t: usize, n: u64| {
        let k = (n as usize).wrapping_mul(2).wrapping_add(t) % random.len();
        let r = store.verify(all_access.get(random[k] as usize));
        assert!(r.is_ok());
    };
    let dur = Duration::from_millis(if q { 250 } else { 500 });
    let mut r = Vec::new();
    for _ in 0..if q { 5 } else { 9 } {
        let a = throughput(1, dur, random_job).per_sec;
        let b = throughput(2, dur, random_job).per_sec;
        r.push(b / a);
    }
    let verify_random_threads2_speedup = median(&mut r);

    // The hardware's limit over the same texts in the same order: parse and
    // checksum, keyed blake3, one 64-byte slot of a table of the store's
    // size, a constant-time compare.
    // (Two ids may share a slot, as in any table indexed by a hash: the
    // later token's verifier is kept, the earlier one compares unequal at
    // the same cost. The matches are counted so that no work is elided.)
    let limit = Limit::new(store.prefix(), KEY, &all_access, tokens);
    let mut matched = 0usize;
    let limit_random_ns = median_ns_over(if q { 200_000 } else { 500_000 }, &random, per, |k| {
        matched += usize::from(limit.check(all_access.get(k)));
    });
    assert!(
        std::hint::black_box(matched) > 0,
        "the limit's table holds the tokens"
    );
    drop(limit);

    // The stateless yardsticks over as many distinct tokens, in random order.
    let jwts = JwtSet::new(random.len());
    let jwt_order = shuffled(jwts.tokens.len(), RANDOM_SEED ^ 0x7);
    let jwt_fast_ns = median_ns_over(if q { 100_000 } else { 300_000 }, &jwt_order, per, |k| {
        assert!(jwts.check(k));
    });
    drop(jwts);
    let pasetos = PasetoSet::new(random.len().min(if q { 20_000 } else { 100_000 }));
    let paseto_order = shuffled(pasetos.tokens.len(), RANDOM_SEED ^ 0x9);
    let paseto_local_ns =
        median_ns_over(if q { 40_000 } else { 100_000 }, &paseto_order, per, |k| {
            assert!(pasetos.check(k));
        });
    drop(pasetos);

    // The hash-map floor, in a process of its own so that its memory is
    // measured alone: the same pairs, the same order.
    let [floor_random_ns, floor_bytes_per_token] =
        floor_in_child(layout, &all_refresh, &all_access, store.prefix(), q)?;

    // ----- exchange, generate, assign -----
    let refresh = &sample.refresh;
    let mut v = time_each(if q { 5_000 } else { 20_000 }, |i| {
        store
            .exchange(&refresh[i % refresh.len()])
            .expect("exchange");
    });
    let exchange_ns = median(&mut v);
    // The same, naming a client (the HTTP front's way): after each token's
    // first, the client is the one recorded and nothing more is written.
    let client = tokenvault::ClientInfo::new(Some([127, 0, 0, 1].into()), Some("perf-report/1"));
    let mut v = time_each(if q { 5_000 } else { 20_000 }, |i| {
        store
            .exchange_from::<&str>(&refresh[i % refresh.len()], None, &client)
            .expect("exchange_from");
    });
    let exchange_from_ns = median(&mut v);
    let actors: Vec<Actor> = (0..layout.orgs.min(8))
        .flat_map(|o| {
            (0..layout.members_per_org.min(8)).map(move |m| Actor::new(org_name(o), user_name(m)))
        })
        .collect();
    let mut v = time_each(if q { 300 } else { 1_000 }, |i| {
        store
            .generate(&actors[i % actors.len()], Default::default())
            .expect("generate");
    });
    let durable_issue_ns = median(&mut v);
    let owners: Vec<(Actor, String)> = (0..layout.orgs.min(8))
        .map(|o| (Actor::new(org_name(o), user_name(0)), user_name(2)))
        .collect();
    let mut v = time_each(if q { 200 } else { 500 }, |i| {
        let (a, u) = &owners[i % owners.len()];
        store.assign(a, u, Default::default()).expect("assign");
    });
    let durable_assign_ns = median(&mut v);
    let issue_job = |t: usize, n: u64| {
        let a = &actors[(t * 7 + n as usize) % actors.len()];
        store.generate(a, Default::default()).expect("generate");
    };
    let dur = Duration::from_millis(if q { 500 } else { 1500 });
    let (mut r, mut one_d, mut two_d) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        let a = throughput(1, dur, issue_job).per_sec;
        let b = throughput(2, dur, issue_job).per_sec;
        r.push(b / a);
        one_d.push(a);
        two_d.push(b);
    }
    let durable_threads2_speedup = median(&mut r);
    let d1 = median(&mut one_d);
    let d2 = median(&mut two_d);

    // ----- revocation -----
    store.add_member(&org_name(0), "revoker", Role::User)?;
    let revoker = Actor::new(org_name(0), "revoker");
    let mut revoke_ms = Vec::new();
    for live in [0usize, 100, 10_000] {
        let reps = if live == 10_000 {
            if q {
                3
            } else {
                7
            }
        } else if q {
            20
        } else {
            50
        };
        let mut v = Vec::new();
        for _ in 0..reps {
            // The family gets its live access tokens the way a client would
            // give it them: by exchanges.
            let issued = store.generate(&revoker, Default::default())?;
            let mut last = None;
            for _ in 0..live {
                last = Some(store.exchange(issued.token.expose())?.access_token);
            }
            let t = Instant::now();
            store.revoke(&revoker, &issued.info.id, None)?;
            v.push(t.elapsed().as_secs_f64() * 1e3);
            if let Some(last) = last {
                assert!(matches!(store.verify(last.expose()), Err(Error::Revoked)));
            }
        }
        revoke_ms.push(median(&mut v));
    }
    let revoke_10k_ms = revoke_ms[2];

    // Durable revoke of a refresh token with one access token: the
    // builder's tokens (each exchanged once there), over many members,
    // revoked by their holders in an order unrelated to their issue.
    let mut order: Vec<usize> = (0..to_revoke.len()).collect();
    let mut shuffle_state = 0x2545_f491_4f6c_dd1du64;
    for i in (1..order.len()).rev() {
        shuffle_state ^= shuffle_state << 13;
        shuffle_state ^= shuffle_state >> 7;
        shuffle_state ^= shuffle_state << 17;
        order.swap(i, (shuffle_state % (i as u64 + 1)) as usize);
    }
    let revoke_targets: Vec<(Actor, tokenvault::TokenId)> = order
        .iter()
        .map(|&k| {
            let (m, r, _) = &to_revoke[k];
            let (_, id) = tokenvault::token::inspect(store.prefix(), r)?;
            Ok((Actor::new(REVOKE_ORG, revoke_user(*m)), id))
        })
        .collect::<Result<_, Error>>()?;
    let mut v = time_each(revoke_targets.len(), |i| {
        let (a, id) = &revoke_targets[i];
        store.revoke(a, id, None).expect("revoke");
    });
    let durable_revoke_ns = median(&mut v);
    for (_, r, a) in &to_revoke {
        assert!(matches!(store.exchange(r), Err(Error::Revoked)));
        assert!(matches!(store.verify(a), Err(Error::Revoked)));
    }

    // Revoke-all of a member with 100 tokens.
    let mut v = Vec::new();
    for k in 0..if q { 5 } else { 15 } {
        let user = format!("bulk{k}");
        store.add_member(&org_name(0), &user, Role::User)?;
        let a = Actor::new(org_name(0), &user);
        store.bulk_issue_for_benchmarks(&a, 100, 1, &mut |_, _| {})?;
        let t = Instant::now();
        let n = store.revoke_all(&a, RevokeScope::Member(user.clone()), None)?;
        v.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(n, 100);
    }
    let revoke_all_ms = median(&mut v);

    // List own (about 100 tokens).
    let member = Actor::new(org_name(0), user_name(5));
    let mut v = time_each(if q { 50 } else { 200 }, |_| {
        std::hint::black_box(store.list_own(&member).expect("list"));
    });
    let list_own_us = median(&mut v) / 1e3;

    // Durable revokes while another thread exchanges flat out.
    let n_revokes = if q { 200 } else { 1_000 };
    let mut victims = Vec::new();
    store.bulk_issue_for_benchmarks(&revoker, n_revokes, 0, &mut |r, _| victims.push(r))?;
    let ids: Vec<_> = victims
        .iter()
        .map(|r| tokenvault::token::inspect(store.prefix(), r.expose()).map(|(_, id)| id))
        .collect::<Result<_, _>>()?;
    let stop = AtomicBool::new(false);
    let exchanged = AtomicU64::new(0);
    let load_started = Instant::now();
    let mut lat = std::thread::scope(|s| {
        s.spawn(|| {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                store
                    .exchange(&refresh[i % refresh.len()])
                    .expect("exchange");
                i += 1;
            }
            exchanged.store(i as u64, Ordering::Relaxed);
        });
        std::thread::sleep(Duration::from_millis(200));
        let mut lat = Vec::with_capacity(ids.len());
        for id in &ids {
            let t = Instant::now();
            store.revoke(&revoker, id, None).expect("revoke");
            lat.push(t.elapsed().as_secs_f64() * 1e3);
            std::thread::sleep(Duration::from_micros(500));
        }
        stop.store(true, Ordering::Relaxed);
        lat
    });
    let load_secs = load_started.elapsed().as_secs_f64();
    let revoke_p99_under_load_ms = percentile(&mut lat, 0.99);
    let revoke_p50_under_load_ms = median(&mut lat);
    let exchanges_under_load = exchanged.load(Ordering::Relaxed) as f64 / load_secs;
    for v in &victims {
        assert!(matches!(store.exchange(v.expose()), Err(Error::Revoked)));
    }

    // Random verification while another thread exchanges and revokes flat
    // out: the latency of each call, its 99th percentile.
    let mut victims = Vec::new();
    store.bulk_issue_for_benchmarks(&revoker, if q { 2_000 } else { 5_000 }, 0, &mut |r, _| {
        victims.push(r)
    })?;
    let victim_ids: Vec<_> = victims
        .iter()
        .map(|r| tokenvault::token::inspect(store.prefix(), r.expose()).map(|(_, id)| id))
        .collect::<Result<_, _>>()?;
    let stop = AtomicBool::new(false);
    let writes = AtomicU64::new(0);
    let mut lat = std::thread::scope(|s| {
        s.spawn(|| {
            let (mut i, mut next) = (0usize, 0usize);
            while !stop.load(Ordering::Relaxed) {
                store
                    .exchange(&refresh[i % refresh.len()])
                    .expect("exchange");
                if i % 4 == 3 && next < victim_ids.len() {
                    store
                        .revoke(&revoker, &victim_ids[next], None)
                        .expect("revoke");
                    next += 1;
                }
                i += 1;
            }
            writes.store((i + next) as u64, Ordering::Relaxed);
        });
        // Let the writer get going before measuring.
        std::thread::sleep(Duration::from_millis(100));
        let dur = Duration::from_millis(if q { 1_000 } else { 3_000 });
        let started = Instant::now();
        let mut lat = Vec::with_capacity(1 << 20);
        let mut k = 0usize;
        while started.elapsed() < dur {
            for _ in 0..256 {
                let text = all_access.get(random[k % random.len()] as usize);
                let t = Instant::now();
                let r = store.verify(text);
                lat.push(t.elapsed().as_nanos() as f64);
                assert!(r.is_ok(), "a token of the store verifies");
                k += 1;
            }
        }
        stop.store(true, Ordering::Relaxed);
        lat
    });
    let verify_random_p99_under_writes_ns = percentile(&mut lat, 0.99);
    let writes_beside_verify = writes.load(Ordering::Relaxed);

    // ----- growth: purge, then bytes on disk -----
    let t = Instant::now();
    let mut purged = 0;
    loop {
        let r = store.purge_expired(10_000)?;
        purged += r.access_removed + r.refresh_removed;
        if !r.more {
            break;
        }
    }
    let purge_ms = t.elapsed().as_secs_f64() * 1e3;
    store.flush()?;
    let stats = store.stats()?;
    let held = stats.active + stats.revoked + stats.expired + stats.access_tokens;
    let disk_bytes_per_token = stats.disk_bytes as f64 / held as f64;
    let rss_end = rss_mib();
    // Open again, twice, after dropping the store without `close` (as after
    // a crash): the first open replays sled's log of the benchmark writes
    // above, the second has nothing to replay.
    drop(store);
    let mut reopen_ms = [0.0; 2];
    for r in &mut reopen_ms {
        let t = Instant::now();
        let s = store_config(&dir.path().join("store")).open()?;
        s.verify(&sample.access[0])?;
        *r = t.elapsed().as_secs_f64() * 1e3;
    }
    // Open after a crash: killed (SIGKILL) with writes in sled's log.
    let open_after_kill_ms = open_after_kill_ms(
        &dir.path().join("store"),
        &sample.refresh[..sample.refresh.len().min(100)],
        &sample.access[0],
    )?;
    let steal_end = cpu_steal();
    let steal_share =
        (steal_end.0 - steal_start.0) as f64 / (steal_end.1 - steal_start.1).max(1) as f64;
    // The memory of a process holding the store of `tokens` tokens and
    // serving verifications: measured after the open and the verification
    // benchmarks. The end of the run is reported beside it (the write
    // benchmarks add ~140k tokens, purge, and spawn some fifty threads,
    // each with its own allocator arena).
    let rss = rss_after_open;

    // ----- report -----
    let le = |v: f64, limit: f64| Some(v <= limit);
    let jwt = Some(("jwt", jwt_ns));
    let limit = Some(("limit", limit_random_ns));
    let floor_map = Some(("floor map", floor_random_ns));
    let jwt_fast = Some(("jwt fast", jwt_fast_ns));
    let insert = Some(("sled insert", sled_insert_ns));
    let insert_flush = Some(("insert+flush", sled_insert_flush_ns));
    let insert_flush_sync = Some(("insert+flush+sync", sled_insert_flush_sync_ns));
    let sqlite_full = Some(("sqlite FULL", sqlite_update_full_ns));
    let durable_issue_vs_sync = durable_issue_ns / sled_insert_flush_sync_ns;
    let durable_issue_vs_sqlite = durable_issue_ns / sqlite_update_full_ns;
    let durable_revoke_vs_sync = durable_revoke_ns / sled_insert_flush_sync_ns;
    let durable_revoke_vs_sqlite = durable_revoke_ns / sqlite_update_full_ns;
    #[rustfmt::skip]
    let rows = vec![
        row("verify, valid, hot", verify_hot_ns, "ns", jwt, "<= 0.25 x jwt", le(verify_hot_ns, 0.25 * jwt_ns)),
        row("verify, first touch after reopen", verify_cold_ns, "ns", jwt, "<= 1.0 x jwt", le(verify_cold_ns, jwt_ns)),
        row("verify, malformed", verify_malformed_ns, "ns", jwt, "", None),
        row("verify, unknown id", verify_unknown_ns, "ns", jwt, "", None),
        row("authorize", authorize_ns, "ns", jwt, "", None),
        row("verify, random over 100k distinct", verify_random_ns, "ns", limit, "<= 2 x limit", le(verify_random_ns, 2.0 * limit_random_ns)),
        row("  same, to the hash-map floor", verify_random_ns, "ns", floor_map, "<= 0.5 x floor map", le(verify_random_ns, 0.5 * floor_random_ns)),
        row("  same, to the fastest JWT", verify_random_ns, "ns", jwt_fast, "<= 0.25 x jwt fast", le(verify_random_ns, 0.25 * jwt_fast_ns)),
        row("  verify hot, to the fastest JWT", verify_hot_ns, "ns", jwt_fast, "<= 0.15 x jwt fast", le(verify_hot_ns, 0.15 * jwt_fast_ns)),
        row("verify, random over every token", verify_random_all_ns, "ns", limit, "", None),
        row("verify random, p99 beside writes", verify_random_p99_under_writes_ns, "ns", Some(("verify random", verify_random_ns)), "<= 5 x verify random", le(verify_random_p99_under_writes_ns, 5.0 * verify_random_ns)),
        row("verify random, 2 threads / 1", verify_random_threads2_speedup, "x", None, ">= 1.8", Some(verify_random_threads2_speedup >= 1.8)),
        row("limit: parse+blake3+1 slot read", limit_random_ns, "ns", None, "baseline (f)", None),
        row("floor map: HashMap, records inline", floor_random_ns, "ns", None, "baseline (g)", None),
        row("jwt fast: HS256, random, 100k", jwt_fast_ns, "ns", None, "baseline (h)", None),
        row("paseto v4.local, random", paseto_local_ns, "ns", None, "baseline (i)", None),
        row("resident bytes per stored token", rss_bytes_per_token, "B", Some(("floor map", floor_bytes_per_token)), "<= 128, <= 0.5 x floor map", Some(rss_bytes_per_token <= 128.0 && rss_bytes_per_token <= 0.5 * floor_bytes_per_token)),
        row("  floor map bytes per record", floor_bytes_per_token, "B", None, "baseline (g)", None),
        row("floor: blake3 + sled get + decode", floor_ns, "ns", None, "baseline (a)", None),
        row("jwt: HS256 decode+validate", jwt_ns, "ns", None, "baseline (b)", None),
        row("verify, 1 thread", verify_1t_ops, "ops/s", None, "", None),
        row("verify, 2 threads", verify_2t_ops, "ops/s", None, "", None),
        row("verify speedup, 2 threads / 1", verify_threads2_speedup, "x", None, ">= 1.8", Some(verify_threads2_speedup >= 1.8)),
        row("  same, per CPU second (2 x ratio)", verify_threads2_speedup_cpu, "x", None, ">= 1.8", Some(verify_threads2_speedup_cpu >= 1.8)),
        row("  2 threads waiting for a core", verify_threads2_waiting * 100.0, "%", None, "", None),
        row("  same, both threads on the same members", same_member_speedup, "x", None, "", None),
        row("    per CPU second", same_member_speedup_cpu, "x", None, "", None),
        row("exchange (lazy)", exchange_ns, "ns", insert, "<= 2 x insert", le(exchange_ns, 2.0 * sled_insert_ns)),
        row("  same, naming its client", exchange_from_ns, "ns", None, "", None),
        row("sled insert", sled_insert_ns, "ns", None, "baseline (c)", None),
        row("generate (durable)", durable_issue_ns, "ns", insert_flush_sync, "<= 1.25 x insert+flush+sync", le(durable_issue_ns, 1.25 * sled_insert_flush_sync_ns)),
        row("  same, to sqlite UPDATE (FULL)", durable_issue_ns, "ns", sqlite_full, "", None),
        row("  same, to insert+flush (no sync)", durable_issue_ns, "ns", insert_flush, "", None),
        row("assign (durable)", durable_assign_ns, "ns", insert_flush_sync, "", None),
        row("revoke (durable), 1 access token", durable_revoke_ns, "ns", sqlite_full, "<= 1.0 x sqlite FULL", le(durable_revoke_ns, sqlite_update_full_ns)),
        row("  same, to insert+flush+sync", durable_revoke_ns, "ns", insert_flush_sync, "", None),
        row("sled insert + flush", sled_insert_flush_ns, "ns", None, "baseline (c)", None),
        row("sled insert + flush + fdatasync db", sled_insert_flush_sync_ns, "ns", None, "baseline (d)", None),
        row("sqlite UPDATE, WAL, synchronous=FULL", sqlite_update_full_ns, "ns", None, "baseline (e)", None),
        row("sled Batch of 2 + flush", sled_batch_flush_ns, "ns", insert_flush, "floor of an atomic multi-key write", None),
        row("generate, 1 thread", d1, "ops/s", None, "", None),
        row("generate, 2 threads", d2, "ops/s", None, "", None),
        row("generate speedup, 2 threads / 1", durable_threads2_speedup, "x", None, ">= 1.5", Some(durable_threads2_speedup >= 1.5)),
        row("  sled Batch+flush, 2 threads / 1", sled_batch_flush_threads2_speedup, "x", None, "same, raw sled", None),
        row("revoke, 0 live access", revoke_ms[0], "ms", None, "", None),
        row("revoke, 100 live access", revoke_ms[1], "ms", None, "", None),
        row("revoke, 10,000 live access", revoke_10k_ms, "ms", None, "<= 20 ms", le(revoke_10k_ms, 20.0)),
        row("revoke p50 under exchange load", revoke_p50_under_load_ms, "ms", None, "", None),
        row("revoke p99 under exchange load", revoke_p99_under_load_ms, "ms", None, "<= 50 ms", le(revoke_p99_under_load_ms, 50.0)),
        row("revoke-all, member of 100 tokens", revoke_all_ms, "ms", None, "", None),
        row("list own (~100 tokens)", list_own_us, "us", None, "", None),
        row("purge (all batches)", purge_ms, "ms", None, "", None),
        row("open, ready to verify", open_to_verify_ms, "ms", None, "<= 2000 ms", le(open_to_verify_ms, 2000.0)),
        row("  CPU time of the open (all threads)", open_cpu_ms, "ms", None, "", None),
        row("  close after building it", close_ms, "ms", None, "checkpoint + warm-start files", None),
        row("  warm-start files while closed", warm_bytes_per_token, "B/token", None, "read and deleted by the open", None),
        row("  open after the benchmarks, not closed", reopen_ms[0], "ms", None, "replays sled's log, reads its trees", None),
        row("  open after SIGKILL while writing", open_after_kill_ms, "ms", None, "replays sled's log, reads its trees", None),
        row("  open again, nothing to replay", reopen_ms[1], "ms", None, "reads sled's trees", None),
        row("  sled scan of as many records", sled_scan_ms, "ms", None, "floor of an eager open", None),
        row("disk bytes per token (after purge)", disk_bytes_per_token, "B", None, "<= 400", le(disk_bytes_per_token, 400.0)),
        row("  sled bytes per 108-byte record", floor_disk_bytes_per_record, "B", None, "floor db, same count", None),
        row("resident memory, store open and serving", rss, "MiB", None, "<= 512", le(rss, 512.0)),
        row("  at the end of the run", rss_end, "MiB", None, "", None),
    ];
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "tokenvault perf report: {tokens} tokens ({} mode), {} cores ({:.0}% stolen by the hypervisor during the run), load average {}",
        if q { "quick" } else { "full" },
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        steal_share * 100.0,
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "{:<38} {:>14} {:<6} {:>26} {:<28} met",
        "measure (median)", "value", "unit", "ratio to baseline", "target"
    );
    println!("{}", "-".repeat(126));
    for r in &rows {
        let ratio = match r.baseline {
            Some((name, b)) => format!("{:.3} x {name}", r.value / b),
            None => String::new(),
        };
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "",
        };
        println!(
            "{:<38} {:>14} {:<6} {:>26} {:<28} {}",
            r.name,
            fmt_num(r.value),
            r.unit,
            ratio,
            r.target,
            met
        );
    }
    println!(
        "(store opened in {open_ms:.0} ms; {exchanges_under_load:.0} exchanges/s ran beside the revokes; purge removed {purged} records; {held} tokens held after purge; rss {rss_after_open:.0} MiB after open, {rss_end:.0} MiB at the end, {rss_before_open:.0} MiB before open; total {:.1} s)",
        started.elapsed().as_secs_f64()
    );

    if let Some(path) = &opts.json {
        let json = serde_json::json!({
            "tokens": tokens,
            "quick": q,
            "verify_hot_ns": verify_hot_ns,
            "verify_cold_ns": verify_cold_ns,
            "verify_malformed_ns": verify_malformed_ns,
            "verify_unknown_ns": verify_unknown_ns,
            "authorize_ns": authorize_ns,
            "floor_ns": floor_ns,
            "jwt_ns": jwt_ns,
            "exchange_ns": exchange_ns,
            "exchange_from_ns": exchange_from_ns,
            "sled_insert_ns": sled_insert_ns,
            "durable_issue_ns": durable_issue_ns,
            "durable_assign_ns": durable_assign_ns,
            "sled_insert_flush_ns": sled_insert_flush_ns,
            "sled_insert_flush_sync_ns": sled_insert_flush_sync_ns,
            "sqlite_update_full_ns": sqlite_update_full_ns,
            "durable_revoke_ns": durable_revoke_ns,
            "durable_issue_vs_sync": durable_issue_vs_sync,
            "durable_issue_vs_sqlite": durable_issue_vs_sqlite,
            "durable_revoke_vs_sync": durable_revoke_vs_sync,
            "durable_revoke_vs_sqlite": durable_revoke_vs_sqlite,
            "durable_threads2_speedup": durable_threads2_speedup,
            "revoke_0_ms": revoke_ms[0],
            "revoke_100_ms": revoke_ms[1],
            "revoke_10k_ms": revoke_10k_ms,
            "revoke_all_member_ms": revoke_all_ms,
            "revoke_p50_under_load_ms": revoke_p50_under_load_ms,
            "revoke_p99_under_load_ms": revoke_p99_under_load_ms,
            "exchanges_per_s_under_load": exchanges_under_load,
            "verify_threads2_speedup": verify_threads2_speedup,
            "sled_batch_flush_ns": sled_batch_flush_ns,
            "sled_batch_flush_threads2_speedup": sled_batch_flush_threads2_speedup,
            "sled_scan_ms": sled_scan_ms,
            "open_cpu_ms": open_cpu_ms,
            "reopen_ms": reopen_ms[0],
            "reopen_again_ms": reopen_ms[1],
            "open_after_kill_ms": open_after_kill_ms,
            "floor_disk_bytes_per_record": floor_disk_bytes_per_record,
            "cpu_steal_share": steal_share,
            "verify_threads2_speedup_cpu": verify_threads2_speedup_cpu,
            "verify_threads2_same_members_speedup": same_member_speedup,
            "verify_threads2_same_members_speedup_cpu": same_member_speedup_cpu,
            "verify_threads2_waiting_share": verify_threads2_waiting,
            "verify_1thread_ops": verify_1t_ops,
            "verify_1thread_first_half_ops": verify_1t_first_half_ops,
            "verify_1thread_second_half_ops": verify_1t_second_half_ops,
            "verify_2threads_ops": verify_2t_ops,
            "list_own_us": list_own_us,
            "purge_ms": purge_ms,
            "open_ms": open_ms,
            "open_to_verify_ms": open_to_verify_ms,
            "build_ms": build_ms,
            "close_ms": close_ms,
            "warm_bytes_per_token": warm_bytes_per_token,
            "disk_bytes_per_token": disk_bytes_per_token,
            "rss_mib": rss,
            "rss_after_open_mib": rss_after_open,
            "rss_end_mib": rss_end,
            "verify_random_ns": verify_random_ns,
            "verify_random_all_ns": verify_random_all_ns,
            "limit_random_ns": limit_random_ns,
            "floor_random_ns": floor_random_ns,
            "jwt_fast_ns": jwt_fast_ns,
            "paseto_local_ns": paseto_local_ns,
            "rss_bytes_per_token": rss_bytes_per_token,
            "floor_bytes_per_token": floor_bytes_per_token,
            "verify_random_p99_under_writes_ns": verify_random_p99_under_writes_ns,
            "verify_random_threads2_speedup": verify_random_threads2_speedup,
            "random_distinct_tokens": random.len(),
            "writes_beside_verify_random": writes_beside_verify,
        });
        std::fs::write(path, serde_json::to_string_pretty(&json)? + "\n")?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn fmt_num(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}
