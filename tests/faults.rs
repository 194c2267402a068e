//! Faults of the file system under a store on disk: an unfinished sled
//! snapshot left behind, a full disk (a small tmpfs; needs root), two
//! creators of one store at once, file modes under a permissive umask, and
//! a store held by another process.
//!
//! Tests that need a mount are `#[ignore]`d (a plain `cargo test` shows
//! them as ignored; `-- --ignored` runs them, as `.ci/run` does); run
//! without root they print a note and pass, and fail
//! instead when `TOKENVAULT_FAULTS_REQUIRED` is set (as CI does).
#![cfg(unix)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokenvault::{Actor, Config, Error, GenerateOptions, IssuedToken, Role, TokenStore};

fn required() -> bool {
    std::env::var_os("TOKENVAULT_FAULTS_REQUIRED").is_some()
}

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let skip = |why: String| {
            assert!(!required(), "TOKENVAULT_FAULTS_REQUIRED is set, but {why}");
            eprintln!("note: skipped, {why} (run as root to test a full disk)");
            None
        };
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return skip("not running as root".into());
        }
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
            .arg("tmpfs")
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs { dir }),
            Ok(o) => skip(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => skip(format!("mount cannot run: {e}")),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Fills the file system of `path` with a ballast file until it is full;
/// returns the file's path.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let p = dir.join("ballast");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&p)
        .unwrap();
    for chunk in [1 << 16, 4096, 512, 1] {
        let buf = vec![0x55u8; chunk];
        while f.write_all(&buf).is_ok() {}
    }
    let _ = f.sync_all();
    p
}

/// Frees `bytes` of the ballast (or all of it).
fn free(ballast: &Path, bytes: Option<u64>) {
    match bytes {
        None => std::fs::remove_file(ballast).unwrap(),
        Some(b) => {
            let len = std::fs::metadata(ballast).unwrap().len();
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(ballast)
                .unwrap();
            f.set_len(len.saturating_sub(b)).unwrap();
        }
    }
}

fn is_disk_full(e: &Error) -> bool {
    e.kind() == "io" && e.to_string().contains("the disk is full")
}

/// A call's answer while the disk stays full: its own write failed (`io`),
/// or it was refused while the store cannot open its storage again yet
/// (`unavailable`); either says the disk is full.
fn refused_for_a_full_disk(e: &Error) -> bool {
    matches!(e.kind(), "io" | "unavailable") && e.to_string().contains("the disk is full")
}

/// Retries `f` for up to 20 s while it fails with `io` or `unavailable`
/// (the store retries its reopen at most every 100 ms).
fn eventually<T>(what: &str, mut f: impl FnMut() -> tokenvault::Result<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if matches!(e.kind(), "io" | "unavailable") && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("{what} still fails once space is free: {e}"),
        }
    }
}

/// Opens the store with no practical cap on live tokens per member (the
/// tests issue thousands to fill a disk).
fn open(path: &Path) -> tokenvault::Result<TokenStore> {
    Config::new(path).max_live_tokens_per_member(1 << 20).open()
}

fn owner_store(path: &Path) -> (TokenStore, Actor) {
    let store = open(path).unwrap();
    store.add_member("acme", "ann", Role::Owner).unwrap();
    (store, Actor::new("acme", "ann"))
}

/// Checks that `t` verifies in `store` as itself.
fn assert_live(store: &TokenStore, t: &IssuedToken) {
    assert_eq!(
        store.verify_refresh(t.token.expose()).unwrap().id,
        t.info.id
    );
}

/// The newest finished snapshot of a database.
fn newest_snapshot(db: &Path) -> Option<(u64, PathBuf)> {
    std::fs::read_dir(db)
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            let name = e.file_name().into_string().ok()?;
            let lsn = name.strip_prefix("snap.")?;
            Some((u64::from_str_radix(lsn, 16).ok()?, e.path()))
        })
        .max()
}

fn generating(db: &Path) -> usize {
    std::fs::read_dir(db)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            let name = name.to_string_lossy();
            name.starts_with("snap.") && name.ends_with(".generating")
        })
        .count()
}

// ----- leftover snapshots -----

/// An empty `snap.FFFFFFFFFFFFFFFF.generating` made by hand, and a real
/// snapshot cut in half under a `.generating` name, leave a store that
/// opens with everything it held, and are gone after the open.
#[test]
fn an_unfinished_snapshot_does_not_brick_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.db");
    let (store, ann) = owner_store(&path);
    let t = store.generate(&ann, GenerateOptions::default()).unwrap();
    let revoked = store.generate(&ann, GenerateOptions::default()).unwrap();
    store.revoke(&ann, &revoked.info.id, None).unwrap();
    store.close().unwrap();

    // By hand: an empty `.generating` file, as a snapshot cut short leaves.
    std::fs::write(path.join("snap.FFFFFFFFFFFFFFFF.generating"), b"").unwrap();
    let store = TokenStore::open(&path).expect("an empty leftover must not brick the store");
    assert_live(&store, &t);
    assert!(matches!(
        store.verify_refresh(revoked.token.expose()),
        Err(Error::Revoked)
    ));
    assert_eq!(generating(&path), 0);
    store.close().unwrap();

    // A real snapshot, truncated, under the name of a newer one.
    let (lsn, snap) = newest_snapshot(&path).expect("close leaves a snapshot");
    let bytes = std::fs::read(&snap).unwrap();
    assert!(bytes.len() > 12, "{} bytes", bytes.len());
    for cut in [bytes.len() / 2, bytes.len() - 1] {
        let name = format!("snap.{:016X}.generating", lsn + 1);
        std::fs::write(path.join(&name), &bytes[..cut]).unwrap();
        let store = TokenStore::open(&path).expect("a truncated leftover must not brick it");
        assert_live(&store, &t);
        assert!(store.verify_refresh(revoked.token.expose()).is_err());
        assert!(store.check_integrity().unwrap().is_clean());
        assert_eq!(generating(&path), 0);
        store.close().unwrap();
    }
    // Real damage is still reported: a finished snapshot cut short.
    let newest = newest_snapshot(&path).unwrap().1;
    std::fs::write(&newest, &bytes[..bytes.len() / 2]).unwrap();
    let e = TokenStore::open(&path).unwrap_err();
    assert_eq!(e.kind(), "corrupt", "{e}");
}

/// The disk fills while `close` checkpoints (a tmpfs with the ballast
/// taking all but a little): whatever `close` answers, once space is
/// free the store opens (never `corrupt`) with every acknowledged change.
#[test]
#[ignore = "needs root (mounts a tmpfs): cargo test --test faults -- --ignored"]
fn a_disk_filled_during_close_does_not_brick_the_store() {
    let Some(fs) = Tmpfs::mount("4m") else { return };
    let path = fs.path().join("tokens.db");
    let mut leftovers = 0;
    let mut close_failed = 0;
    for (round, room) in [0u64, 1024, 4096, 8192, 16384, 32768, 65536]
        .into_iter()
        .enumerate()
    {
        let store = open(&path).unwrap();
        if round == 0 {
            store.add_member("acme", "ann", Role::Owner).unwrap();
        }
        let ann = Actor::new("acme", "ann");
        let mut acked = Vec::new();
        for _ in 0..50 {
            acked.push(store.generate(&ann, GenerateOptions::default()).unwrap());
        }
        let ballast = fill(fs.path());
        free(&ballast, Some(room));
        // Anything but a panic.
        match store.close() {
            Ok(_) => {}
            Err(e) => {
                assert_eq!(e.kind(), "io", "{e}");
                close_failed += 1;
            }
        }
        leftovers += generating(&path);
        free(&ballast, None);
        let store = eventually("open", || TokenStore::open(&path));
        for t in &acked {
            assert_live(&store, t);
        }
        assert!(store.check_integrity().unwrap().is_clean());
        store.close().unwrap();
    }
    eprintln!("close failed {close_failed} times, leaving {leftovers} unfinished snapshots");
}

// ----- a full disk -----

/// On a full disk the first failing call answers `io` "the disk is full",
/// later ones `io` or `unavailable` saying so, and nothing panics; verification keeps answering from memory; once the ballast is
/// deleted, the same store (no restart) generates, revokes and exchanges
/// again, and after a reopen every acknowledged change is there.
#[test]
#[ignore = "needs root (mounts a tmpfs): cargo test --test faults -- --ignored"]
fn a_full_disk_fails_calls_cleanly_and_the_store_writes_again_once_space_is_free() {
    let Some(fs) = Tmpfs::mount("4m") else { return };
    let path = fs.path().join("tokens.db");
    let (store, ann) = owner_store(&path);
    store.add_member("acme", "bob", Role::User).unwrap();
    let bob = Actor::new("acme", "bob");
    let kept = store.generate(&bob, GenerateOptions::default()).unwrap();
    let victim = store.generate(&bob, GenerateOptions::default()).unwrap();
    let access = store.exchange(kept.token.expose()).unwrap().access_token;
    let ballast = fill(fs.path());

    let mut acked = vec![kept.clone()];
    let mut first = None;
    for _ in 0..100_000 {
        match store.generate(&bob, GenerateOptions::default()) {
            Ok(t) => acked.push(t),
            Err(e) => {
                first = Some(e);
                break;
            }
        }
    }
    let e = first.expect("the disk never filled");
    assert!(is_disk_full(&e), "{e}");
    // Every kind of call, while full: a clear error or a success, no panic.
    let mut victim_revoked = false;
    for _ in 0..20 {
        match store.revoke(&bob, &victim.info.id, None) {
            Ok(()) => victim_revoked = true,
            Err(e) => assert!(refused_for_a_full_disk(&e), "revoke: {e}"),
        }
        match store.exchange(kept.token.expose()) {
            Ok(_) => {}
            Err(e) => assert!(refused_for_a_full_disk(&e), "exchange: {e}"),
        }
        match store.add_member("acme", "cy", Role::User) {
            Ok(()) | Err(Error::Conflict(_)) => {}
            Err(e) => assert!(refused_for_a_full_disk(&e), "add_member: {e}"),
        }
        match store.generate(&bob, GenerateOptions::default()) {
            Ok(t) => acked.push(t),
            Err(e) => assert!(refused_for_a_full_disk(&e), "generate: {e}"),
        }
        if let Err(e) = store.flush() {
            assert!(refused_for_a_full_disk(&e), "flush: {e}");
        }
        // Verification answers from memory meanwhile (or, right after a
        // reopen dropped the lazily durable access token, says it is gone).
        match store.verify(access.expose()) {
            Ok(p) => assert_eq!(&*p.user, "bob"),
            Err(e) => assert_eq!(e.kind(), "invalid_token", "{e}"),
        }
        std::thread::sleep(Duration::from_millis(10));
    }

    free(&ballast, None);
    let fresh = eventually("generate", || {
        store.generate(&bob, GenerateOptions::default())
    });
    acked.push(fresh.clone());
    store.revoke(&bob, &victim.info.id, None).unwrap();
    let grant = store.exchange(fresh.token.expose()).unwrap();
    assert_eq!(
        &*store.verify(grant.access_token.expose()).unwrap().user,
        "bob"
    );
    store
        .revoke(&ann, &fresh.info.id, Some("after the fault"))
        .unwrap();
    assert!(matches!(
        store.verify(grant.access_token.expose()),
        Err(Error::Revoked)
    ));
    let _ = victim_revoked;
    store.close().unwrap();

    let store = TokenStore::open(&path).unwrap();
    for t in &acked[..acked.len() - 1] {
        assert_live(&store, t);
    }
    assert!(matches!(
        store.verify_refresh(victim.token.expose()),
        Err(Error::Revoked)
    ));
    assert!(matches!(
        store.verify_refresh(fresh.token.expose()),
        Err(Error::Revoked)
    ));
    assert!(store.check_integrity().unwrap().is_clean());
}

/// Several threads write while the disk fills and frees: each call either
/// succeeds (and its change is there after a reopen) or fails with `io`
/// (its own write or sync failed) or `unavailable` (refused while the store
/// opens its storage again); a revocation acknowledged is never lost, and
/// nothing deadlocks.
///
/// A revocation that failed leaves its token live (or may have taken
/// effect): each worker retries it before it issues again, as a client
/// would. Without that, a loaded machine (more failed calls per second)
/// left enough live tokens behind to reach bob's cap of live tokens, and
/// `generate` answered `limit`.
#[test]
#[ignore = "needs root (mounts a tmpfs): cargo test --test faults -- --ignored"]
fn concurrent_callers_through_a_full_disk() {
    let Some(fs) = Tmpfs::mount("4m") else { return };
    let path = fs.path().join("tokens.db");
    let (store, _ann) = owner_store(&path);
    store.add_member("acme", "bob", Role::User).unwrap();
    let bob = Actor::new("acme", "bob");
    let ballast = fill(fs.path());
    free(&ballast, Some(64 * 1024));
    let stop = std::sync::atomic::AtomicBool::new(false);
    let failures = std::sync::atomic::AtomicU64::new(0);
    // Set once the ballast is gone; then counts the issues that succeed.
    let freed = std::sync::atomic::AtomicBool::new(false);
    let issued_after = std::sync::atomic::AtomicU64::new(0);
    // A call that failed: its own write or sync failed, or it was refused
    // while the store opens its storage again.
    let failed = |e: &Error| {
        assert!(matches!(e.kind(), "io" | "unavailable"), "{e}");
        failures.fetch_add(1, Ordering::Relaxed);
    };
    let (acked, revoked) = std::thread::scope(|s| {
        let workers: Vec<_> = (0..3)
            .map(|_| {
                s.spawn(|| {
                    let mut acked = Vec::new();
                    let mut revoked = Vec::new();
                    // The token whose revocation failed, retried first.
                    let mut pending: Option<tokenvault::IssuedToken> = None;
                    while !stop.load(Ordering::Relaxed) {
                        if let Some(t) = pending.take() {
                            match store.revoke(&bob, &t.info.id, None) {
                                Ok(()) => revoked.push(t),
                                Err(e) => {
                                    failed(&e);
                                    pending = Some(t);
                                    continue;
                                }
                            }
                        }
                        match store.generate(&bob, GenerateOptions::default()) {
                            Ok(t) => {
                                if freed.load(Ordering::Acquire) {
                                    issued_after.fetch_add(1, Ordering::AcqRel);
                                }
                                if let Ok(g) = store.exchange(t.token.expose()) {
                                    let _ = store.verify(g.access_token.expose());
                                }
                                match store.revoke(&bob, &t.info.id, None) {
                                    Ok(()) => revoked.push(t.clone()),
                                    Err(e) => {
                                        failed(&e);
                                        pending = Some(t.clone());
                                    }
                                }
                                acked.push(t);
                            }
                            Err(e) => failed(&e),
                        }
                    }
                    (acked, revoked)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(1500));
        free(&ballast, None);
        freed.store(true, Ordering::Release);
        // The workers stop once they issue again (at most 30 s, a loaded
        // machine), not after a fixed time: running on, they could fill the
        // disk anew and leave `close` no room for its checkpoint (as they
        // did on a loaded machine).
        let deadline = Instant::now() + Duration::from_secs(30);
        while issued_after.load(Ordering::Acquire) < 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        stop.store(true, Ordering::Relaxed);
        let mut acked = Vec::new();
        let mut revoked = Vec::new();
        for w in workers {
            let (a, r) = w.join().expect("a worker panicked");
            acked.extend(a);
            revoked.extend(r);
        }
        (acked, revoked)
    });
    store.close().unwrap();
    let store = TokenStore::open(&path).unwrap();
    let revoked_ids: std::collections::HashSet<_> = revoked.iter().map(|t| t.info.id).collect();
    for t in &acked {
        match store.verify_refresh(t.token.expose()) {
            Ok(info) => assert!(!revoked_ids.contains(&info.id), "a revocation was lost"),
            Err(Error::Revoked) => {}
            Err(e) => panic!("an acknowledged token is gone: {e}"),
        }
    }
    assert!(store.check_integrity().unwrap().is_clean());
    let failures = failures.into_inner();
    eprintln!(
        "{} generated, {} revoked, {failures} calls failed",
        acked.len(),
        revoked.len()
    );
    assert!(failures > 0, "the disk never filled");
    assert!(
        issued_after.into_inner() >= 3,
        "the workers did not issue again once space was free"
    );
    assert!(!revoked.is_empty());
}

// ----- creation -----

/// Two opens creating one store at once, 100 times: each either opens the
/// store or fails with the `io` lock error while the other holds it;
/// never `key_mismatch`, and the store then opens with its key file.
#[test]
fn two_opens_creating_one_store_agree_on_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut lock_errors = 0;
    for i in 0..100 {
        let path = dir.path().join(format!("s{i}.db"));
        let barrier = std::sync::Barrier::new(2);
        let outcomes: Vec<Result<(), Error>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        Config::new(&path).open().map(drop)
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for o in &outcomes {
            match o {
                Ok(()) => {}
                Err(e) if e.kind() == "io" && e.to_string().contains("another process") => {
                    lock_errors += 1
                }
                Err(e) => panic!("pair {i}: {e}"),
            }
        }
        assert!(outcomes.iter().any(Result::is_ok), "pair {i}: {outcomes:?}");
        let store = Config::new(&path).create_if_missing(false).open();
        assert!(store.is_ok(), "pair {i}: {:?}", store.err());
    }
    eprintln!("{lock_errors} lock errors in 100 pairs");
}

// ----- permissions -----

/// Runs this test binary's test `name` in a child process with umask 000.
fn in_child_with_umask_000(name: &str) {
    let out = common::child::this_test(name)
        .env("TOKENVAULT_UMASK_CHILD", "1")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 passed"), "{text}");
    assert!(text.contains("modes checked"), "{text}");
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

/// Every file and directory of the store, the key file included.
fn modes(db: &Path) -> Vec<(PathBuf, u32)> {
    let mut out = vec![(db.to_path_buf(), mode(db))];
    let mut dirs = vec![db.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p.clone());
            }
            out.push((p.clone(), mode(&p)));
        }
    }
    out
}

fn assert_private(db: &Path) {
    let all = modes(db);
    assert!(all.len() > 3, "{all:?}");
    for (p, m) in all {
        let want = if p.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(m, want, "{} has mode {m:o}", p.display());
    }
}

/// Under umask 000 a new store's directory is 0700 and every file in it
/// 0600, after open and after close (whose checkpoint writes new files),
/// and the key file is 0600; an existing store with loose modes is
/// tightened by the next open.
#[test]
fn store_files_are_private_whatever_the_umask() {
    if std::env::var_os("TOKENVAULT_UMASK_CHILD").is_none() {
        return in_child_with_umask_000("store_files_are_private_whatever_the_umask");
    }
    // SAFETY: umask has no preconditions; this child runs this test alone.
    unsafe { libc::umask(0) };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.db");
    let key = dir.path().join("tokens.db.key");
    let (store, ann) = owner_store(&path);
    assert_private(&path);
    assert_eq!(mode(&key), 0o600);
    store.generate(&ann, GenerateOptions::default()).unwrap();
    store.close().unwrap();
    assert_private(&path);
    // Loosened by hand (as an older version left them): tightened at open.
    for (p, _) in modes(&path) {
        let m = if p.is_dir() { 0o777 } else { 0o666 };
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(m)).unwrap();
    }
    let store = TokenStore::open(&path).unwrap();
    assert_private(&path);
    drop(store);
    println!("modes checked");
}

/// A key file group or others may read is refused as `key_mismatch`,
/// naming the fix, and changes nothing; the opt-out opens it; `chmod 600`
/// opens it.
#[test]
fn a_key_file_others_may_read_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.db");
    let key = dir.path().join("tokens.db.key");
    let (store, ann) = owner_store(&path);
    let t = store.generate(&ann, GenerateOptions::default()).unwrap();
    store.close().unwrap();
    for m in [0o644, 0o640, 0o604, 0o660] {
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(m)).unwrap();
        let e = TokenStore::open(&path).unwrap_err();
        assert_eq!(e.kind(), "key_mismatch", "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("chmod 600 {}", key.display())),
            "{msg}"
        );
        assert_eq!(mode(&key), m, "the refusal changed the key file");
    }
    let store = Config::new(&path)
        .allow_loose_key_permissions(true)
        .open()
        .unwrap();
    assert_live(&store, &t);
    store.close().unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let store = TokenStore::open(&path).unwrap();
    assert_live(&store, &t);
}

// ----- read-only opens and the store directory's lock -----

type Files = std::collections::BTreeMap<PathBuf, Vec<u8>>;

/// The files added, removed or changed from `before` to `after`.
fn changed(before: &Files, after: &Files) -> Vec<PathBuf> {
    before
        .keys()
        .chain(after.keys())
        .filter(|p| before.get(*p) != after.get(*p))
        .cloned()
        .collect()
}

/// Every file under `dir` with its bytes (the whole state a command could
/// change).
fn files_of(dir: &Path) -> Files {
    let mut out = std::collections::BTreeMap::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                dirs.push(e.path());
            } else {
                out.insert(e.path(), std::fs::read(e.path()).unwrap());
            }
        }
    }
    out
}

/// A read-only open after a close reads the warm-start files and leaves
/// every file of the store as it found it (no checkpoint, no warm-start
/// files written or removed, the marker still valid: the next open is a
/// warm start again); writes fail as `conflict` and change nothing.
#[test]
fn a_read_only_open_changes_no_file_and_keeps_the_warm_start_valid() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tokens.db");
    let (store, ann) = owner_store(&db);
    store.add_member("acme", "uma", Role::User).unwrap();
    let t = store.generate(&ann, GenerateOptions::default()).unwrap();
    let report = store.close().unwrap();
    assert!(report.checkpoint && report.warm_start_files, "{report:?}");
    let before = files_of(&db);
    for _ in 0..3 {
        let ro = Config::new(&db).read_only(true).open().unwrap();
        assert!(
            ro.stats().unwrap().warm_start,
            "the warm-start files were not read"
        );
        assert_live(&ro, &t);
        assert_eq!(ro.list_org(&ann).unwrap().len(), 1);
        assert!(ro.check_integrity().unwrap().problems.is_empty());
        let e = ro.add_member("acme", "sam", Role::User).unwrap_err();
        assert_eq!(e.kind(), "conflict", "{e}");
        let e = ro.revoke(&ann, &t.info.id, None).unwrap_err();
        assert_eq!(e.kind(), "conflict", "{e}");
        assert!(
            ro.verify_refresh(t.token.expose()).is_ok(),
            "a refused revoke took effect"
        );
        let e = ro.generate(&ann, GenerateOptions::default()).unwrap_err();
        assert_eq!(e.kind(), "conflict", "{e}");
        assert_eq!(ro.list_org(&ann).unwrap().len(), 1);
        let closed = ro.close().unwrap();
        assert!(closed.last_handle && !closed.checkpoint && !closed.warm_start_files);
        let changed = changed(&before, &files_of(&db));
        assert!(changed.is_empty(), "a read-only open changed {changed:?}");
    }
    // The marker is still valid: a normal open starts warm, with everything.
    let store = open(&db).unwrap();
    assert!(store.stats().unwrap().warm_start);
    assert_eq!(store.member_role("acme", "sam"), None);
    store.add_member("acme", "sam", Role::User).unwrap();
    store.close().unwrap();
    // A read-only open of a missing store creates nothing.
    let missing = dir.path().join("missing.db");
    let e = Config::new(&missing).read_only(true).open().unwrap_err();
    assert_eq!(e.kind(), "not_found", "{e}");
    assert!(!missing.exists());
    let e = Config::temporary().read_only(true).open().unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
}

/// The store directory's lock held by another process (here: another
/// open file description, as `flock DIR sleep 60` would hold it) when the
/// last handle closes: the close waits about 2 s, skips its checkpoint and
/// says so (`io`, "the checkpoint was skipped", "held by another
/// process"); everything was durable before, so the store opens with it.
#[test]
fn close_skips_its_checkpoint_when_the_directory_is_held_past_the_wait() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tokens.db");
    let (store, _) = owner_store(&db);
    store.add_member("acme", "uma", Role::User).unwrap();
    let held = std::fs::File::open(&db).unwrap();
    held.lock().unwrap();
    let started = Instant::now();
    let e = store.close().unwrap_err();
    let waited = started.elapsed();
    drop(held);
    assert_eq!(e.kind(), "io", "{e}");
    let msg = e.to_string();
    assert!(msg.contains("the checkpoint was skipped"), "{msg}");
    assert!(msg.contains("held by another process"), "{msg}");
    assert!(
        waited >= Duration::from_millis(1900),
        "gave up after {waited:?}"
    );
    // A generous bound for a loaded machine: the point is that it ends.
    assert!(waited < Duration::from_secs(60), "waited {waited:?}");
    let store = open(&db).unwrap();
    assert_eq!(store.member_role("acme", "uma"), Some(Role::User));
    store.close().unwrap();
}

/// `create_new` refuses an existing store or key file, changing nothing.
#[test]
fn create_new_refuses_what_exists() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.db");
    let store = Config::new(&path).create_new(true).open().unwrap();
    store.close().unwrap();
    let e = Config::new(&path).create_new(true).open().unwrap_err();
    assert_eq!(e.kind(), "conflict", "{e}");
    let other = dir.path().join("other.db");
    std::fs::write(dir.path().join("other.db.key"), [7u8; 32]).unwrap();
    std::fs::set_permissions(
        dir.path().join("other.db.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let e = Config::new(&other).create_new(true).open().unwrap_err();
    assert_eq!(e.kind(), "conflict", "{e}");
    assert!(!other.exists());
}

// ----- the command-line tool -----

#[cfg(feature = "cli")]
mod cli {
    use super::*;
    use serde_json::Value;
    use std::process::{Child, Command, Output, Stdio};

    fn bin() -> PathBuf {
        assert_cmd::cargo::cargo_bin("tokenvault")
    }

    /// The binary on the store `db`, the caller adds the rest.
    fn tv(db: &Path) -> Command {
        let mut c = Command::new(bin());
        c.env_remove("TOKENVAULT_DB").arg("--db").arg(db);
        c
    }

    fn run(db: &Path, args: &[&str]) -> Output {
        tv(db).arg("--json").args(args).output().unwrap()
    }

    /// A port nobody listens on (bound, then let go).
    fn free_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }

    fn doc(out: &Output) -> Value {
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "not one JSON document ({e}): {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    fn ok(db: &Path, args: &[&str]) -> Value {
        let out = run(db, args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        doc(&out)
    }

    fn spawn_init(db: &Path) -> Child {
        tv(db)
            .args(["--json", "init"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Two `tokenvault init` on one fresh path at once, 100 times: exactly
    /// one creates the store, the other answers `conflict` (or `io` while
    /// the first holds it); the store then opens with its key file.
    #[test]
    fn two_inits_at_once_create_one_store() {
        let dir = tempfile::tempdir().unwrap();
        let mut conflicts = 0;
        for i in 0..100 {
            let db = dir.path().join(format!("s{i}.db"));
            let (a, b) = (spawn_init(&db), spawn_init(&db));
            let outs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
            let mut created = 0;
            for out in &outs {
                let d = doc(out);
                match out.status.code() {
                    Some(0) => created += 1,
                    Some(1) => {
                        let kind = d["error"]["kind"].as_str().unwrap();
                        assert!(kind == "conflict" || kind == "io", "pair {i}: {d}");
                        conflicts += usize::from(kind == "conflict");
                    }
                    other => panic!("pair {i}: exit {other:?}: {d}"),
                }
            }
            assert_eq!(created, 1, "pair {i}");
            let stats = run(&db, &["stats"]);
            assert_eq!(stats.status.code(), Some(0), "pair {i}: {}", doc(&stats));
        }
        eprintln!("{conflicts} conflicts in 100 pairs");
    }

    /// A store held by a running `tokenvault serve`: a command fails as `io`
    /// with one sentence saying so, not a debug dump.
    #[test]
    fn a_store_held_by_another_process_is_said_in_words() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("tokens.db");
        ok(&db, &["init"]);
        // Without its admin socket: with one, the command goes through it
        // (tests/admin_socket.rs).
        let (mut server, _port) = serve_with(&db, &["--no-admin-socket"]);
        let out = run(&db, &["stats"]);
        stop(&mut server);
        let d = doc(&out);
        assert_eq!(out.status.code(), Some(1), "{d}");
        assert_eq!(d["error"]["kind"], "io", "{d}");
        let msg = d["error"]["message"].as_str().unwrap();
        assert!(msg.contains("held by another process"), "{msg}");
        assert!(msg.contains("offers no admin socket"), "{msg}");
        assert!(
            !msg.contains("Os {") && !msg.contains("WouldBlock"),
            "{msg}"
        );
        // Once the server is gone the command works.
        ok(&db, &["stats"]);
    }

    /// `serve` on a store whose directory another process holds (as
    /// `flock DIR sleep 60` would, here this test process): it does not
    /// hang; after the 2 s lock wait it exits 1 with one `io` document
    /// saying the store is held by another process.
    #[test]
    fn serve_on_a_store_held_by_another_process_exits_1_instead_of_hanging() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("tokens.db");
        ok(&db, &["init"]);
        let held = std::fs::File::open(&db).unwrap();
        held.lock().unwrap();
        let port = free_port();
        let started = Instant::now();
        let mut child = tv(&db)
            .args(["--json", "serve", "--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // A generous bound for a loaded machine; a hang ends here.
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let waited = started.elapsed();
        let out = child.wait_with_output().unwrap();
        drop(held);
        let status = status.unwrap_or_else(|| panic!("serve still ran after {waited:?}"));
        let d = doc(&out);
        assert_eq!(status.code(), Some(1), "{d}");
        assert_eq!(d["error"]["kind"], "io", "{d}");
        let msg = d["error"]["message"].as_str().unwrap();
        assert!(msg.contains("held by another process"), "{msg}");
        assert!(
            waited >= Duration::from_millis(1900),
            "gave up after {waited:?}"
        );
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "something listens"
        );
        // Once it is let go, the store serves commands again.
        ok(&db, &["stats"]);
    }

    /// A key file others may read: refused as `key_mismatch` naming
    /// `chmod 600`, accepted with the flag or its environment variable.
    #[test]
    fn the_cli_refuses_a_loose_key_file_unless_told() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("tokens.db");
        let key = dir.path().join("tokens.db.key");
        ok(&db, &["init"]);
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let out = run(&db, &["stats"]);
        let d = doc(&out);
        assert_eq!(out.status.code(), Some(1), "{d}");
        assert_eq!(d["error"]["kind"], "key_mismatch", "{d}");
        let msg = d["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains(&format!("chmod 600 {}", key.display())),
            "{msg}"
        );
        ok(&db, &["--allow-loose-key-permissions", "stats"]);
        let out = Command::new(bin())
            .env("TOKENVAULT_ALLOW_LOOSE_KEY_PERMISSIONS", "1")
            .arg("--db")
            .arg(&db)
            .args(["--json", "stats"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", doc(&out));
        assert_eq!(mode(&key), 0o644, "the key file's mode was changed");
    }

    fn serve(db: &Path) -> (Child, u16) {
        serve_with(db, &[])
    }

    fn serve_with(db: &Path, extra: &[&str]) -> (Child, u16) {
        let port = free_port();
        let child = tv(db)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the server did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        (child, port)
    }

    fn stop(child: &mut Child) {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let _ = child.wait();
    }

    /// On a full disk the read-only commands (`verify`, `token list`,
    /// `token show`, `member list`, `audit`, `stats`, `check`) answer, exit
    /// 0 with the right output, and write nothing: every file of the store
    /// is as before, and the next open starts warm (the warm-start marker
    /// still valid). A command that changes something still fails with
    /// `io` "the disk is full". After an unclean stop, a read-only command
    /// either answers or fails saying the open needed room to recover.
    #[test]
    #[ignore = "needs root (mounts a tmpfs): cargo test --test faults -- --ignored"]
    fn read_only_commands_answer_on_a_full_disk() {
        let Some(fs) = Tmpfs::mount("4m") else { return };
        let db = fs.path().join("tokens.db");
        ok(&db, &["init"]);
        ok(&db, &["member", "add", "acme", "olivia", "owner"]);
        ok(&db, &["member", "add", "acme", "uma", "user"]);
        let t = ok(&db, &["token", "generate", "--as", "acme/uma"]);
        let id = t["id"].as_str().unwrap().to_string();
        let grant = ok(&db, &["exchange", t["token"].as_str().unwrap()]);
        let access = grant["data"]["access_token"].as_str().unwrap().to_string();
        let before = files_of(&db);
        let ballast = fill(fs.path());
        type Check<'a> = &'a dyn Fn(&Value) -> bool;
        let reads: [(&[&str], Check); 7] = [
            (&["verify", &access], &|d| d["user"] == "uma"),
            (&["token", "list", "--as", "acme/olivia", "--all"], &|d| {
                d.to_string().contains(&id)
            }),
            (&["token", "show", "--as", "acme/olivia", &id], &|d| {
                d.to_string().contains(&id)
            }),
            (&["member", "list", "acme"], &|d| {
                d.to_string().contains("olivia") && d.to_string().contains("uma")
            }),
            (&["audit", "--as", "acme/olivia"], &|d| {
                d.to_string().contains("uma")
            }),
            (&["stats"], &|d| d.is_object()),
            (&["check"], &|d| d["clean"] == true),
        ];
        for (args, right) in reads {
            let out = run(&db, args);
            let d = doc(&out);
            assert_eq!(
                out.status.code(),
                Some(0),
                "{args:?} on a full disk: {d} {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(right(&d), "{args:?}: {d}");
            println!("{args:?} on a full disk: exit 0");
        }
        let changed = changed(&before, &files_of(&db));
        assert!(changed.is_empty(), "read-only commands changed {changed:?}");
        free(&ballast, None);
        let store = Config::new(&db).read_only(true).open().unwrap();
        assert!(
            store.stats().unwrap().warm_start,
            "the warm-start marker went"
        );
        store.close().unwrap();
        // An unclean stop (the store dropped without a close after a
        // write, as a killed process leaves it: sled replays its log at the
        // next open), then a full disk: the read-only command answers, or
        // fails saying that the open needed room to recover.
        let store = open(&db).unwrap();
        store.add_member("acme", "wes", Role::User).unwrap();
        drop(store);
        let ballast = fill(fs.path());
        let out = run(&db, &["member", "list", "acme"]);
        let d = doc(&out);
        match out.status.code() {
            Some(0) => assert!(d.to_string().contains("wes"), "{d}"),
            Some(1) => {
                let msg = d["error"]["message"].as_str().unwrap();
                assert!(
                    msg.contains("the disk is full") && msg.contains("recover"),
                    "{msg}"
                );
            }
            other => panic!("exit {other:?}: {d}"),
        }
        println!("a read-only command after an unclean stop on a full disk: {d}");
        // A change fails as before: `io` "the disk is full", or succeeds
        // where sled's log still had room.
        let out = run(&db, &["member", "add", "acme", "sam", "user"]);
        let d = doc(&out);
        match out.status.code() {
            Some(0) => {}
            Some(1) => assert!(d.to_string().contains("the disk is full"), "{d}"),
            other => panic!("a change on a full disk: exit {other:?}: {d}"),
        }
        println!("a change on a full disk: {d}");
        free(&ballast, None);
    }

    /// `tokenvault serve` on a full disk: POST, DELETE and the exchange
    /// answer 5xx (never a crash); once the ballast is deleted they answer
    /// 2xx again, from the same process.
    #[test]
    #[ignore = "needs root (mounts a tmpfs): cargo test --test faults -- --ignored"]
    fn serve_writes_again_once_space_is_free() {
        let Some(fs) = Tmpfs::mount("4m") else { return };
        let db = fs.path().join("tokens.db");
        ok(&db, &["init"]);
        ok(&db, &["member", "add", "acme", "olivia", "owner"]);
        let t = ok(&db, &["token", "generate", "--as", "acme/olivia"]);
        let refresh = t["token"].as_str().unwrap().to_string();
        let grant = ok(&db, &["exchange", &refresh]);
        let bearer = format!("Bearer {}", grant["data"]["access_token"].as_str().unwrap());
        let (mut server, port) = serve(&db);
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::blocking::Client::new();
        let post = || {
            client
                .post(format!("{base}/v3/refresh-token"))
                .header("Authorization", &bearer)
                .header("Content-Type", "application/json")
                .body(r#"{"user_id":"olivia"}"#)
                .send()
                .unwrap()
        };
        let exchange = || {
            client
                .get(format!("{base}/oauth/access-token"))
                .header("X-Refresh-Token", &refresh)
                .send()
                .unwrap()
                .status()
                .as_u16()
        };
        let delete = |id: &str| {
            client
                .delete(format!("{base}/v3/refresh-token/{id}"))
                .header("Authorization", &bearer)
                .send()
                .unwrap()
                .status()
                .as_u16()
        };
        let r = post();
        assert_eq!(r.status().as_u16(), 201);
        let victim: Value = r.json().unwrap();
        let victim_id = victim["data"]["id"].as_str().unwrap().to_string();
        let ballast = fill(fs.path());
        let mut full = false;
        for _ in 0..20_000 {
            // Each token made is revoked again: the member stays below the
            // cap of live tokens while the disk fills.
            let r = post();
            let st = r.status().as_u16();
            if st >= 500 {
                full = true;
                break;
            }
            assert_eq!(st, 201);
            let made: Value = r.json().unwrap();
            let st = delete(made["data"]["id"].as_str().unwrap());
            if st >= 500 {
                full = true;
                break;
            }
            assert_eq!(st, 204);
        }
        assert!(full, "the disk never filled");
        for _ in 0..5 {
            let st = delete(&victim_id);
            assert!(st >= 500 || st == 204, "DELETE answered {st}");
            let st = exchange();
            assert!(st >= 500 || st == 200, "exchange answered {st}");
            let st = post().status().as_u16();
            assert!(st >= 500 || st == 201, "POST answered {st}");
        }
        assert!(server.try_wait().unwrap().is_none(), "the server died");
        free(&ballast, None);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let st = post().status().as_u16();
            if st == 201 {
                break;
            }
            assert!(
                st >= 500 && Instant::now() < deadline,
                "POST answered {st} after freeing"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(delete(&victim_id), 204);
        assert_eq!(exchange(), 200);
        stop(&mut server);
        let d = run(
            &db,
            &["exchange", victim["data"]["token"].as_str().unwrap()],
        );
        assert_eq!(doc(&d)["error"]["kind"], "revoked", "{}", doc(&d));
    }

    /// CLI calls on a nearly full disk, with less and less room: each exits
    /// 0 with its change made (warning on stderr when the checkpoint after
    /// it failed), or 1 with `io` "the disk is full" and no change; never
    /// a panic.
    #[test]
    #[ignore = "needs root (mounts a tmpfs): cargo test --test faults -- --ignored"]
    fn cli_on_a_nearly_full_disk_reports_what_it_did() {
        let Some(fs) = Tmpfs::mount("4m") else { return };
        let db = fs.path().join("tokens.db");
        ok(&db, &["init"]);
        ok(&db, &["member", "add", "acme", "olivia", "owner"]);
        let (mut warned, mut failed, mut clean) = (0, 0, 0);
        let mut n = 0;
        for room in [0u64, 2048, 8192, 16384, 32768, 65536] {
            let ballast = fill(fs.path());
            free(&ballast, Some(room));
            // Calls until one fails (or twenty succeed): each is checked
            // once space is free again.
            let mut outcomes = Vec::new();
            for _ in 0..20 {
                n += 1;
                let user = format!("u{n}");
                let out = run(&db, &["member", "add", "acme", &user, "user"]);
                let code = out.status.code();
                outcomes.push((user, out));
                if code != Some(0) {
                    break;
                }
            }
            free(&ballast, None);
            let members = ok(&db, &["member", "list", "acme"]).to_string();
            for (user, out) in outcomes {
                let stderr = String::from_utf8_lossy(&out.stderr).to_string();
                let d = doc(&out);
                let present = members.contains(&format!("\"{user}\""));
                match out.status.code() {
                    Some(0) => {
                        assert!(
                            present,
                            "room {room}: success without the change: {members}"
                        );
                        if stderr.contains("warning") {
                            assert!(stderr.contains("checkpoint"), "{stderr}");
                            warned += 1;
                        } else {
                            clean += 1;
                        }
                    }
                    Some(1) => {
                        assert_eq!(d["error"]["kind"], "io", "room {room}: {d}");
                        let msg = d["error"]["message"].as_str().unwrap();
                        assert!(msg.contains("the disk is full"), "room {room}: {msg}");
                        assert!(!present, "room {room}: failure, yet the change was made");
                        failed += 1;
                    }
                    other => panic!("room {room}: exit {other:?}: {d} {stderr}"),
                }
            }
        }
        eprintln!("{clean} clean, {warned} with a checkpoint warning, {failed} failed");
        assert!(failed > 0, "the disk never filled");
        // Whether a commit fits where the checkpoint after it does not
        // depends on sled's page use: seen in every run so far, but not
        // required (each such outcome is checked above when it happens).
        if warned == 0 {
            eprintln!("note: no call met a failed checkpoint in this run");
        }
    }
}
