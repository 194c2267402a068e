//! Failing syncs (docs/durability.md, DESIGN.md invariants 2 and 6): the
//! store runs on the power-loss filesystem (`support/powerfs.rs`) switched
//! to fail every fsync/fdatasync (or every write) for a while, in both of
//! its modes (a kind disk that keeps a failed sync's pages pending, and
//! Linux's, which drops them from the write-back but keeps them readable
//! until a restart). Then:
//! - (also with the file system dead, every request answering `ENOTCONN`
//!   as when its daemon is gone)
//! - the first durable call answers `io` (its own sync failed), the later
//!   ones (revoke, set_role, remove_member) and `flush` `io` or
//!   `unavailable` (refused while the store cannot open its storage
//!   again), `close` `io`, and dropping a store without
//!   closing it does not panic (sled 0.34.7 unwraps its own sync when its
//!   database is dropped): the calls run in a child process, this test
//!   binary run again, which must exit 0 with no panic on its standard
//!   error (a panic in one of sled's threads shows there too); afterwards
//!   the store opens, consistent, with what was durable before the fault;
//! - a revocation that failed is retried once syncs work again (while the
//!   answer is `io` or `unavailable`): the retry answers `Ok` only after a
//!   sync (the filesystem counts them), and after
//!   a power cut right after it the token is refused (by id, then by the
//!   token itself; the cut follows the second, whose sync would also cover
//!   the first: the count is what tells each retry synced);
//! - `tokenvault` commands exit non-zero (not 101, a panic) with exactly one
//!   JSON document of kind `io` on standard output (sled itself syncs while
//!   it opens a database, so these fail as early as the open);
//! - eight boots, each of one call while syncs fail, syncs back, the call
//!   retried (the store reopens its storage), then a kill and a restart of
//!   the file system (the page cache gone): every boot opens, with every
//!   acknowledged change and no token of a failed issue (in Linux's mode
//!   the store before the fix was unopenable, `corrupt`, after a few).
//!   `TOKENVAULT_SOAK=1` runs that 20 times in each mode.
//!
//! Needs root and `/dev/fuse`: ignored under a plain `cargo test` (run with
//! `-- --ignored`, as `.ci/run` does); where they are missing each test
//! prints a note and passes, unless `TOKENVAULT_FAULTS_REQUIRED` is set.

mod common;
#[path = "support/powerfs.rs"]
mod powerfs;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Stdio};

use powerfs::{disk_in, Disk, Mode};
use tokenvault::{Actor, Error, Role, TokenStore};

const CHILD_ENV: &str = "TOKENVAULT_SYNC_FAULT_CHILD";
const MODE_ENV: &str = "TOKENVAULT_SYNC_FAULT_MODE";
/// Begins each protocol line a child writes.
const MARK: &str = "@@ ";

fn open(path: &Path) -> tokenvault::Result<TokenStore> {
    common::store::keyed(path, 7).open()
}

/// The kind of a call's answer: `ok` or the error's kind.
fn kind<T>(r: &tokenvault::Result<T>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(e) => e.kind(),
    }
}

/// One line to the parent (a pipe, never the store's disk).
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(format!("{line}\n").as_bytes());
    let _ = out.flush();
}

/// Waits for the parent's next line.
fn hear() -> String {
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    line.trim().to_string()
}

/// This test binary run again as a child in `mode` on the store at `path`.
struct Peer {
    child: Child,
    to: ChildStdin,
    from: BufReader<ChildStdout>,
    err_path: std::path::PathBuf,
}

impl Peer {
    fn spawn(test: &str, disk: &Disk, mode: &str) -> Peer {
        let err_path = disk
            .path()
            .parent()
            .expect("mount parent")
            .join(format!("{mode}.stderr"));
        let stderr = std::fs::File::create(&err_path).expect("stderr file");
        let mut child = common::child::this_test(test)
            .env(CHILD_ENV, disk.path().join("store"))
            .env(MODE_ENV, mode)
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawning the child");
        let to = child.stdin.take().expect("stdin");
        let from = BufReader::new(child.stdout.take().expect("stdout"));
        Peer {
            child,
            to,
            from,
            err_path,
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err_path).unwrap_or_default()
    }

    /// The child's next line of the protocol (the test harness's own lines
    /// are skipped).
    fn next(&mut self) -> String {
        loop {
            let mut line = String::new();
            let n = self.from.read_line(&mut line).expect("reading the child");
            assert!(n > 0, "the child stopped early:\n{}", self.stderr());
            // The test harness may have begun the line ("test … ... ").
            if let Some(at) = line.find(MARK) {
                return line[at + MARK.len()..].trim().to_string();
            }
        }
    }

    /// As [`Peer::next`], or `None` once the child's output ends.
    fn next_or_end(&mut self) -> Option<String> {
        loop {
            let mut line = String::new();
            let n = self.from.read_line(&mut line).ok()?;
            if n == 0 {
                return None;
            }
            if let Some(at) = line.find(MARK) {
                return Some(line[at + MARK.len()..].trim().to_string());
            }
        }
    }

    fn tell(&mut self, line: &str) {
        writeln!(self.to, "{line}").expect("writing to the child");
        self.to.flush().expect("flushing to the child");
    }
}

/// The child's side: a store with two members and a token each, made
/// durable; then, once told, the calls while syncs (or writes) fail.
fn child(path: &Path, mode: &str) {
    let store = open(path).expect("open");
    let ann = Actor::new("acme", "ann");
    store.add_member("acme", "ann", Role::Owner).expect("ann");
    store.add_member("acme", "bob", Role::User).expect("bob");
    let t1 = store.generate(&ann, Default::default()).expect("t1");
    let t2 = store
        .generate(&Actor::new("acme", "bob"), Default::default())
        .expect("t2");
    say(&format!(
        "@@ ready {} {}",
        t1.token.expose(),
        t2.token.expose()
    ));
    if mode == "retry" {
        // Revoke by id, then by the token itself; each fails, then is
        // retried (as a client would, while the answer is `io`) once told
        // that syncs work again.
        assert_eq!(hear(), "go");
        let r = store.revoke(&ann, &t1.info.id, None);
        say(&format!("@@ {}", kind(&r)));
        assert_eq!(hear(), "retry");
        let r = retried(|| store.revoke(&ann, &t1.info.id, None));
        say(&format!("@@ {}", kind(&r)));
        assert_eq!(hear(), "go");
        let r = store.revoke_refresh(t2.token.expose(), None);
        say(&format!("@@ {}", kind(&r)));
        assert_eq!(hear(), "retry");
        let r = retried(|| store.revoke_refresh(t2.token.expose(), None));
        say(&format!("@@ {}", kind(&r)));
        // The power goes now: the parent kills this process.
        hear();
        return;
    }
    assert_eq!(hear(), "go");
    say(&format!(
        "@@ generate {}",
        kind(&store.generate(&ann, Default::default()))
    ));
    say(&format!(
        "@@ revoke {}",
        kind(&store.revoke(&ann, &t1.info.id, None))
    ));
    say(&format!(
        "@@ set_role {}",
        kind(&store.set_role("acme", "bob", Role::Admin))
    ));
    say(&format!(
        "@@ remove_member {}",
        kind(&store.remove_member("acme", "bob"))
    ));
    say(&format!("@@ flush {}", kind(&store.flush())));
    if mode.ends_with("close") {
        say(&format!("@@ close {}", kind(&store.close())));
    } else {
        drop(store);
        say("@@ dropped ok");
    }
}

/// A retry as a client makes it: again while the answer is `io` (a
/// revocation's own sync failed: retrying is safe) or `unavailable` (the
/// store is opening its storage again after a fault), for at most twenty
/// seconds (a loaded machine).
fn retried<T>(mut call: impl FnMut() -> tokenvault::Result<T>) -> tokenvault::Result<T> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let r = call();
        match &r {
            Err(e)
                if matches!(e.kind(), "io" | "unavailable")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            _ => return r,
        }
    }
}

fn child_env() -> Option<(std::path::PathBuf, String)> {
    let path = std::env::var_os(CHILD_ENV)?;
    Some((path.into(), std::env::var(MODE_ENV).unwrap_or_default()))
}

/// In the child process a test runs of itself, runs `body` with the
/// store's path and the mode, and says so (the test then returns).
fn ran_as_child(body: impl FnOnce(&Path, &str)) -> bool {
    match child_env() {
        Some((path, mode)) => {
            body(&path, &mode);
            true
        }
        None => false,
    }
}

/// A fresh disk of `fs` for `test`, its mode printed first; none (as
/// [`disk_in`] says) where the file system cannot be had.
fn fresh_disk(test: &str, fs: Mode) -> Option<Disk> {
    let disk = disk_in(test, fs)?;
    println!("{fs:?}:");
    Some(disk)
}

/// Runs the library calls in a child with the fault of `mode` switched on;
/// returns the child's standard error after checking its answers and exit.
fn faulted_calls(test: &str, disk: &mut Disk, mode: &str) {
    let mut peer = Peer::spawn(test, disk, mode);
    let ready = peer.next();
    let t1 = ready.split(' ').nth(1).expect("t1").to_string();
    if mode.starts_with("writes") {
        disk.fail_writes(Some(libc::ENOSPC));
    } else if mode.starts_with("dead") {
        disk.die();
    } else {
        disk.fail_syncs(Some(libc::EIO));
    }
    peer.tell("go");
    let last = if mode.ends_with("close") {
        "close"
    } else {
        "dropped"
    };
    let mut answers = Vec::new();
    for call in ["generate", "revoke", "set_role", "remove_member", "flush"] {
        let line = peer.next();
        // The first call's own sync (or write) failed: `io`. The later ones
        // find the storage failed and not open again yet (`unavailable`),
        // or commit and fail their own sync (`io`).
        let io = format!("{call} io");
        let refused = format!("{call} unavailable");
        assert!(
            line == io || (call != "generate" && line == refused),
            "{mode}: {line} after {answers:?}"
        );
        answers.push(line);
    }
    let line = peer.next();
    let want = if last == "close" {
        "close io"
    } else {
        "dropped ok"
    };
    assert_eq!(line, want, "{mode}");
    let status = peer.child.wait().expect("reaping the child");
    let err = peer.stderr();
    assert!(
        status.success() && !err.contains("panicked"),
        "{mode}: the child failed ({status}):\n{err}"
    );
    let c = disk.counters();
    assert!(
        c.failed_syncs + c.failed_writes + c.after_cut > 0,
        "{mode}: no fault was met: {c:?}"
    );
    // The store is not bricked: after a power cut it opens with what was
    // durable before the fault, consistent.
    disk.restart().expect("restarting the filesystem");
    let store = open(&disk.path().join("store")).expect("reopening after the faults");
    assert_eq!(store.member_role("acme", "bob"), Some(Role::User), "{mode}");
    assert!(store.verify_refresh(&t1).is_ok(), "{mode}");
    let report = store.check_integrity().expect("check");
    assert!(report.problems.is_empty(), "{mode}: {:?}", report.problems);
    store.close().expect("close");
    println!("{mode}: {answers:?}, then {line}; faults met: {c:?}");
}

/// The file system's modes every test runs in.
const MODES: [Mode; 2] = [Mode::Kind, Mode::Linux];

#[test]
#[ignore = "needs root and /dev/fuse: cargo test --test sync_faults -- --ignored"]
fn durable_calls_flush_close_and_drop_answer_errors_while_syncs_fail() {
    if ran_as_child(child) {
        return;
    }
    let test = "durable_calls_flush_close_and_drop_answer_errors_while_syncs_fail";
    for fs in MODES {
        for mode in [
            "syncs-drop",
            "syncs-close",
            "writes-drop",
            "dead-drop",
            "dead-close",
        ] {
            let Some(mut disk) = fresh_disk(test, fs) else {
                return;
            };
            faulted_calls(test, &mut disk, mode);
        }
    }
}

#[test]
#[ignore = "needs root and /dev/fuse: cargo test --test sync_faults -- --ignored"]
fn a_failed_revocation_retried_is_ok_only_once_synced_and_survives_a_cut() {
    if ran_as_child(child) {
        return;
    }
    let test = "a_failed_revocation_retried_is_ok_only_once_synced_and_survives_a_cut";
    for fs in MODES {
        let Some(mut disk) = fresh_disk(test, fs) else {
            return;
        };
        revocation_retried(test, &mut disk);
    }
}

fn revocation_retried(test: &str, disk: &mut Disk) {
    let mut peer = Peer::spawn(test, disk, "retry");
    let ready = peer.next();
    let tokens: Vec<String> = ready.split(' ').skip(1).map(String::from).collect();
    for how in ["revoke", "revoke_refresh"] {
        disk.fail_syncs(Some(libc::EIO));
        peer.tell("go");
        let answer = peer.next();
        assert!(
            answer == "io" || answer == "unavailable",
            "{how} while syncs fail: {answer}"
        );
        disk.fail_syncs(None);
        let before = disk.counters().fsyncs;
        peer.tell("retry");
        assert_eq!(peer.next(), "ok", "{how} retried");
        let after = disk.counters().fsyncs;
        println!("{how}: fsyncs {before} before the retry, {after} once it answered");
        assert!(
            after > before,
            "{how}: the retry answered Ok without a sync ({before} fsyncs before and after)"
        );
    }
    disk.cut();
    peer.child.kill().expect("SIGKILL");
    peer.child.wait().expect("reaping the child");
    disk.restart().expect("restarting the filesystem");
    let store = open(&disk.path().join("store")).expect("reopening after the cut");
    for t in &tokens {
        assert!(
            matches!(store.verify_refresh(t), Err(Error::Revoked)),
            "an acknowledged revocation was lost at the cut: {:?}",
            store.verify_refresh(t).map(|i| i.id)
        );
        assert!(store.exchange(t).is_err(), "a revoked token exchanged");
    }
    let report = store.check_integrity().expect("check");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    store.close().expect("close");
}

#[cfg(feature = "cli")]
#[test]
#[ignore = "needs root and /dev/fuse: cargo test --test sync_faults -- --ignored"]
fn cli_commands_answer_one_io_document_while_syncs_fail() {
    let test = "cli_commands_answer_one_io_document_while_syncs_fail";
    for fs in MODES {
        let Some(disk) = fresh_disk(test, fs) else {
            return;
        };
        cli_commands(&disk);
    }
}

#[cfg(feature = "cli")]
fn cli_commands(disk: &Disk) {
    let db = disk.path().join("store.db");
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tokenvault"))
            .env_remove("TOKENVAULT_DB")
            .env("RUST_BACKTRACE", "1")
            .arg("--db")
            .arg(&db)
            .arg("--json")
            .args(args)
            .output()
            .expect("run tokenvault")
    };
    let ok = |args: &[&str]| {
        let out = run(args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("one JSON document")
    };
    ok(&["init"]);
    ok(&["member", "add", "acme", "olivia", "owner"]);
    ok(&["member", "add", "acme", "uma", "user"]);
    let id = ok(&["token", "generate", "--as", "acme/uma"])["id"]
        .as_str()
        .expect("id")
        .to_string();
    disk.fail_syncs(Some(libc::EIO));
    let commands: [&[&str]; 5] = [
        &["token", "generate", "--as", "acme/olivia"],
        &["token", "revoke", "--as", "acme/olivia", &id],
        &["member", "role", "acme", "uma", "admin"],
        &["member", "remove", "acme", "uma"],
        &["member", "add", "acme", "sam", "stakeholder"],
    ];
    for args in commands {
        let out = run(args);
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        let code = out.status.code();
        assert!(
            code.is_some_and(|c| c != 0 && c != 101) && !stderr.contains("panicked"),
            "{args:?} exited {code:?}:\n{stdout}{stderr}"
        );
        let docs: Vec<serde_json::Value> = serde_json::Deserializer::from_slice(&out.stdout)
            .into_iter()
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {stdout}"));
        assert_eq!(docs.len(), 1, "{args:?}: {stdout}");
        assert_eq!(docs[0]["error"]["kind"], "io", "{args:?}: {stdout}");
        println!("{args:?} → exit {code:?}: {}", docs[0]["error"]["message"]);
    }
    assert!(disk.counters().failed_syncs > 0);
    // Syncs work again: the store is not bricked (what a failed call wrote
    // may or may not be there, as after any failed sync).
    disk.fail_syncs(None);
    assert!(ok(&["member", "list", "acme"])["members"].is_array());
    assert_eq!(ok(&["check"])["clean"], true);
}

/// One boot of the brick harness, in the child: opens the store (saying
/// how that went), then runs the parent's commands, one answer each.
fn boot_child(path: &Path) {
    let store = match open(path) {
        Ok(s) => s,
        Err(e) => {
            say(&format!("@@ open {} {e}", e.kind()));
            return;
        }
    };
    say("@@ open ok");
    let ann = Actor::new("acme", "ann");
    loop {
        let line = hear();
        let mut words = line.split(' ');
        match words.next().unwrap_or_default() {
            "setup" => {
                let r = store.add_member("acme", "ann", Role::Owner);
                say(&format!("@@ {}", kind(&r)));
            }
            "list" => match store.list_org(&ann) {
                Ok(tokens) => {
                    let listed: Vec<String> = tokens
                        .iter()
                        .map(|t| format!("{}:{}", t.id, t.state.as_str()))
                        .collect();
                    say(&format!("@@ listed {}", listed.join(" ")));
                }
                Err(e) => say(&format!("@@ list {} {e}", e.kind())),
            },
            "gen" => match store.generate(&ann, Default::default()) {
                Ok(t) => say(&format!("@@ ok {}", t.info.id)),
                Err(e) => say(&format!("@@ {}", e.kind())),
            },
            "gen-retried" => match retried(|| store.generate(&ann, Default::default())) {
                Ok(t) => say(&format!("@@ ok {}", t.info.id)),
                Err(e) => say(&format!("@@ {} {e}", e.kind())),
            },
            "revoke" | "revoke-retried" => {
                let id: tokenvault::TokenId =
                    words.next().unwrap_or_default().parse().expect("an id");
                let r = if line.starts_with("revoke-retried") {
                    retried(|| store.revoke(&ann, &id, None))
                } else {
                    store.revoke(&ann, &id, None)
                };
                say(&format!("@@ {}", kind(&r)));
            }
            // The parent kills this process next (or has gone).
            _ => {
                hear();
                return;
            }
        }
    }
}

/// What the parent knows was acknowledged, to check each boot against.
#[derive(Default)]
struct Acknowledged {
    /// Token ids issued `Ok`, and whether a revocation of each was.
    tokens: std::collections::BTreeMap<String, bool>,
}

/// What one run of the brick harness saw.
#[derive(Debug, Default)]
struct Run {
    /// Boots (after the first) whose open succeeded.
    opened: usize,
    /// The open that failed, if one did (the run stops there).
    unopenable: Option<String>,
    /// Acknowledged changes missing after a boot.
    lost: Vec<String>,
    /// Tokens of failed issues listed after a boot.
    unissued_listed: Vec<String>,
}

/// One run of the brick harness: `boots` boots, each of one call while
/// syncs fail (an issue, then a revocation, in turn), syncs back, the call
/// retried (the store reopens its storage), a kill and a restart of the
/// file system; each boot's open is checked against what was
/// acknowledged.
fn boots(test: &str, fs: Mode, boots: usize) -> Run {
    let mut run = Run::default();
    let Some(mut disk) = disk_in(test, fs) else {
        run.opened = boots;
        return run;
    };
    let mut acked = Acknowledged::default();
    // Tokens of failed issues already counted (listed at an earlier boot).
    let mut ghosts = std::collections::BTreeSet::new();
    for boot in 0..=boots {
        let mut peer = Peer::spawn(test, &disk, "boot");
        let opened = peer.next();
        if opened != "open ok" {
            run.unopenable = Some(format!("{fs:?}: boot {boot} of {boots}: {opened}"));
            return run;
        }
        if boot > 0 {
            run.opened += 1;
        }
        if boot == 0 {
            peer.tell("setup");
            assert_eq!(peer.next(), "ok", "setup");
        }
        peer.tell("list");
        let listed = peer.next();
        let Some(listed) = listed.strip_prefix("listed") else {
            run.unopenable = Some(format!("{fs:?}: boot {boot}: {listed}"));
            return run;
        };
        let listed: std::collections::BTreeMap<String, String> = listed
            .split_whitespace()
            .filter_map(|w| w.split_once(':'))
            .map(|(id, state)| (id.to_string(), state.to_string()))
            .collect();
        // No acknowledged change lost (a revocation is acknowledged only
        // once retried `Ok`), and nothing listed that was not issued `Ok`.
        for (id, revoked) in &acked.tokens {
            let want = if *revoked { "revoked" } else { "active" };
            match listed.get(id) {
                Some(got) if got == want => {}
                got => run
                    .lost
                    .push(format!("boot {boot}: {id} {want}, listed {got:?}")),
            }
        }
        for id in listed.keys() {
            if !acked.tokens.contains_key(id) && ghosts.insert(id.clone()) {
                run.unissued_listed.push(format!("boot {boot}: {id}"));
            }
        }
        if boot == boots {
            peer.tell("end");
            let _ = peer.child.kill();
            let _ = peer.child.wait();
            break;
        }
        peer.tell("gen");
        let id = peer.next();
        let id = id.strip_prefix("ok ").expect("an issue while syncs work");
        acked.tokens.insert(id.to_string(), false);
        disk.fail_syncs(Some(libc::EIO));
        if boot % 2 == 0 {
            peer.tell("gen");
            let answer = peer.next();
            assert!(
                answer == "io" || answer == "unavailable",
                "an issue while syncs fail: {answer}"
            );
            disk.fail_syncs(None);
            peer.tell("gen-retried");
            let id = peer.next();
            let id = id
                .strip_prefix("ok ")
                .unwrap_or_else(|| panic!("retried: {id}"));
            acked.tokens.insert(id.to_string(), false);
        } else {
            let victim = acked
                .tokens
                .iter()
                .find(|(_, revoked)| !**revoked)
                .map(|(id, _)| id.clone())
                .expect("a live token");
            peer.tell(&format!("revoke {victim}"));
            let answer = peer.next();
            assert!(
                answer == "io" || answer == "unavailable",
                "a revocation while syncs fail: {answer}"
            );
            disk.fail_syncs(None);
            peer.tell(&format!("revoke-retried {victim}"));
            assert_eq!(peer.next(), "ok", "the revocation retried");
            acked.tokens.insert(victim, true);
        }
        // The power goes: the process is killed, the cache is lost.
        disk.cut();
        let _ = peer.child.kill();
        let _ = peer.child.wait();
        disk.restart().expect("restarting the file system");
    }
    run
}

#[test]
#[ignore = "needs root and /dev/fuse: cargo test --test sync_faults -- --ignored"]
fn eight_boots_through_failed_syncs_keep_the_store_openable_and_whole() {
    if ran_as_child(|path, mode| {
        if mode == "boot" {
            boot_child(path);
        }
    }) {
        return;
    }
    let test = "eight_boots_through_failed_syncs_keep_the_store_openable_and_whole";
    let soak = std::env::var_os("TOKENVAULT_SOAK").is_some();
    let runs = if soak { 20 } else { 1 };
    let mut failures = Vec::new();
    for fs in MODES {
        let mut whole = 0;
        for _ in 0..runs {
            let run = boots(test, fs, 8);
            println!(
                "{fs:?}: {} of 8 boots opened{}; {} acknowledged changes missing; {} tokens \
                 of failed issues listed",
                run.opened,
                run.unopenable
                    .as_deref()
                    .map_or(String::new(), |u| format!(" (then unopenable: {u})")),
                run.lost.len(),
                run.unissued_listed.len(),
            );
            if run.opened == 8 && run.lost.is_empty() && run.unissued_listed.is_empty() {
                whole += 1;
            } else {
                failures.push(run);
            }
        }
        println!("{fs:?}: {whole} of {runs} runs whole after every boot");
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

// ----- a file system that dies (its FUSE daemon gone, its device gone) -----

/// The errors a dead file system answers: a FUSE daemon gone (`ENOTCONN`,
/// `ECONNABORTED`) or a device gone (`EIO`). Each crash point uses one in
/// turn.
const DEATHS: [i32; 3] = [libc::ENOTCONN, libc::EIO, libc::ECONNABORTED];

/// The child of a crash-point run: a workload of library calls (every
/// answer ignored: any may fail once the file system is dead), then,
/// after telling the parent, the drop or the close of the store. Exits 0
/// unless something panicked.
fn dying_child(path: &Path, mode: &str) {
    let calls = || -> tokenvault::Result<TokenStore> {
        let store = open(path)?;
        let ann = Actor::new("acme", "ann");
        let _ = store.add_member("acme", "ann", Role::Owner);
        let _ = store.add_member("acme", "bob", Role::User);
        let t1 = store.generate(&ann, Default::default());
        let _ = store.generate(&Actor::new("acme", "bob"), Default::default());
        if let Ok(t) = &t1 {
            if let Ok(grant) = store.exchange(t.token.expose()) {
                let _ = store.verify(grant.access_token.expose());
            }
            let _ = store.revoke(&ann, &t.info.id, None);
        }
        let _ = store.set_role("acme", "bob", Role::Admin);
        let _ = store.list_org(&ann);
        let _ = store.flush();
        Ok(store)
    };
    let store = calls();
    // The parent notes how many requests the calls took.
    say("@@ calls done");
    hear();
    match store {
        Ok(store) if mode == "close" => say(&format!("@@ close {}", kind(&store.close()))),
        Ok(store) => {
            drop(store);
            say("@@ dropped");
        }
        Err(e) => say(&format!("@@ open {}", e.kind())),
    }
}

/// How one crash-point run ended.
#[derive(Debug)]
struct Death {
    point: u64,
    errno: i32,
    /// The child's exit status, or `None` if it had to be killed.
    status: Option<std::process::ExitStatus>,
    /// It was killed after waiting 60 s for it: a call that never returned
    /// (sled 0.34 can wait forever for a write the dead file system
    /// failed; see docs/faults.md).
    hung: bool,
    /// Its standard error mentions a panic.
    panicked: bool,
    stderr: String,
}

impl Death {
    /// The end of the run at `point` (answering `errno`) whose child ended
    /// with `status` (`None`: killed after hanging), having said `stderr`.
    fn new(
        (point, errno): (u64, i32),
        status: Option<std::process::ExitStatus>,
        stderr: String,
    ) -> Death {
        Death {
            point,
            errno,
            hung: status.is_none(),
            status,
            panicked: stderr.contains("panicked"),
            stderr,
        }
    }
}

/// One crash-point run of `test`'s `mode` killed at `point` with `errno`.
/// Outside a soak, a run that hung is run once more at the same point and
/// errno, and counts as hung only if it hangs again: one order of events
/// in sled 0.34.7 still leaves a flush waiting after the store woke it
/// (about one crash point in 5,000; docs/faults.md), and CI's short run
/// must not fail on it by chance. A soak counts every hang.
fn run_point(test: &str, mode: &str, (point, errno): (u64, i32), soak: bool) -> Death {
    let (death, _, _) = die_during_calls(test, mode, Some((point, errno)));
    if !death.hung || soak {
        return death;
    }
    println!("hung once: point {point} errno {errno}; running it again");
    let (again, _, _) = die_during_calls(test, mode, Some((point, errno)));
    again
}

/// Waits up to 60 s (a loaded machine) for a child, then kills it.
fn wait_bounded(child: &mut Child) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// One crash-point run of the library workload `mode` (`drop`, `close` or
/// `busy`): the file system dies after `point` requests (never, for
/// `None`: a measuring run); returns how it ended and the request counts
/// at the end of the calls and at the end of the run.
fn die_during_calls(test: &str, mode: &str, point: Option<(u64, i32)>) -> (Death, u64, u64) {
    let disk = disk_in(test, Mode::Linux).expect("checked by the caller");
    if let Some((n, errno)) = point {
        disk.die_after(n, errno);
    }
    let mut peer = Peer::spawn(test, &disk, mode);
    // A call left waiting forever by the dead file system must not hang
    // the test: a watchdog kills the child after 60 s without its line.
    let pid = peer.child.id().to_string();
    let (done, watch) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        let timed_out = watch
            .recv_timeout(std::time::Duration::from_secs(60))
            .is_err();
        if timed_out {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid])
                .status();
        }
        timed_out
    });
    let said = peer.next_or_end();
    let _ = done.send(());
    let killed = watchdog.join().expect("the watchdog");
    let point = point.unwrap_or((u64::MAX, 0));
    if said.as_deref() != Some("calls done") {
        // Hung (killed above) or ended during the calls.
        let status = wait_bounded(&mut peer.child).filter(|_| !killed);
        let calls = disk.counters().requests;
        let death = Death::new(point, status, peer.stderr());
        return (death, calls, calls);
    }
    let calls = disk.counters().requests;
    peer.tell("go");
    let status = wait_bounded(&mut peer.child);
    let total = disk.counters().requests;
    let death = Death::new(point, status, peer.stderr());
    (death, calls, total)
}

/// `count` crash points spread over `from..to`, at least one apart.
fn spread(from: u64, to: u64, count: u64) -> Vec<u64> {
    let span = to.saturating_sub(from).max(1);
    let step = (span / count.max(1)).max(1);
    (0..count)
        .map(|i| from + i * step)
        .filter(|p| *p < to.max(from + 1))
        .collect()
}

/// Kills the file system at many points of a workload of library calls
/// followed by the store's drop, or its close: no run panics (sled 0.34.7
/// unwraps its own sync when its last database handle goes; a failure
/// there was a panic, exit 101) and every child exits 0. The points are
/// counted in file system requests, half of them spread over the calls
/// and half over the drop or close; each death answers `ENOTCONN`, `EIO`
/// or `ECONNABORTED` in turn. CI runs a few dozen points;
/// `TOKENVAULT_SOAK=1` runs every point.
#[test]
#[ignore = "needs root and /dev/fuse: cargo test --test sync_faults -- --ignored"]
fn a_file_system_that_dies_at_any_point_panics_nothing() {
    if ran_as_child(dying_child) {
        return;
    }
    let test = "a_file_system_that_dies_at_any_point_panics_nothing";
    if disk_in(test, Mode::Linux).is_none() {
        return;
    }
    let soak = std::env::var_os("TOKENVAULT_SOAK").is_some();
    let mut bad = Vec::new();
    // Runs whose child never returned from a call once the file system
    // died (sled 0.34.7's flush waited forever for a write that failed
    // before the store woke it; docs/faults.md): killed by the watchdog,
    // and a failure.
    let mut hung = Vec::new();
    let mut runs = 0;
    for mode in ["drop", "close"] {
        let (clean, calls, total) = die_during_calls(test, mode, None);
        assert!(
            clean.status.is_some_and(|s| s.success()) && !clean.panicked,
            "{mode}: the workload fails on a live file system: {clean:?}"
        );
        let points: Vec<u64> = if soak {
            (0..total).collect()
        } else {
            let mut p = spread(0, calls, 12);
            p.extend(spread(calls, total + 2, 12));
            p
        };
        let mut panics = 0;
        for (i, point) in points.iter().enumerate() {
            let errno = DEATHS[i % DEATHS.len()];
            let death = run_point(test, mode, (*point, errno), soak);
            runs += 1;
            if death.hung && !death.panicked {
                hung.push(death);
            } else if death.panicked || !death.status.is_some_and(|s| s.success()) {
                panics += usize::from(death.panicked);
                bad.push(death);
            }
        }
        println!(
            "{mode}: {} crash points (the calls took {calls} requests, the whole run \
             {total}): {panics} panicked",
            points.len()
        );
    }
    let panics = bad.iter().filter(|d| d.panicked).count();
    println!(
        "{panics} of {runs} runs panicked; {} ended badly; {} hung in sled and were killed",
        bad.len(),
        hung.len()
    );
    for d in hung.iter().take(3) {
        println!("hung: point {} errno {}", d.point, d.errno);
    }
    for d in bad.iter().take(3) {
        println!(
            "point {} errno {} status {:?}:\n{}",
            d.point, d.errno, d.status, d.stderr
        );
    }
    assert!(bad.is_empty(), "{} of {runs} runs ended badly", bad.len());
    assert!(hung.is_empty(), "{} of {runs} runs hung", hung.len());
}

/// The child of a crash-point run of durable calls made together: four
/// threads each issue a token and revoke it, over and over (every answer
/// ignored: any may fail once the file system is dead), so that one
/// call's flush seals sled's log buffer while another call is still
/// copying its record into it, and that call's thread writes the buffer;
/// then, after telling the parent, the store is dropped. Exits 0 unless
/// something panicked.
fn busy_child(path: &Path) {
    // The store's warnings (a flush it woke) reach the parent through the
    // child's standard error.
    #[cfg(feature = "cli")]
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .try_init();
    let calls = || -> tokenvault::Result<TokenStore> {
        let store = open(path)?;
        let _ = store.add_member("acme", "ann", Role::Owner);
        std::thread::scope(|s| {
            for _ in 0..BUSY_THREADS {
                s.spawn(|| {
                    let ann = Actor::new("acme", "ann");
                    for _ in 0..BUSY_ROUNDS {
                        if let Ok(t) = store.generate(&ann, Default::default()) {
                            let _ = store.revoke(&ann, &t.info.id, None);
                        }
                    }
                });
            }
        });
        Ok(store)
    };
    let store = calls();
    say("@@ calls done");
    hear();
    match store {
        Ok(store) => {
            drop(store);
            say("@@ dropped");
        }
        Err(e) => say(&format!("@@ open {}", e.kind())),
    }
}

/// How many threads of [`busy_child`] make durable calls together, and
/// how many tokens each issues and revokes.
const BUSY_THREADS: usize = 4;
const BUSY_ROUNDS: usize = 10;

/// Kills the file system at many points of durable calls made together
/// by four threads: every call returns (an error once the file system is
/// dead), none waits forever, and the child exits 0 without a panic.
/// sled 0.34.7 leaves a flush waiting forever when the write of the log
/// buffer it sealed fails in another thread (docs/faults.md); the store
/// wakes it. A child that has not ended 60 s after the file system died is
/// killed and counted as hung, a failure (the run stops at the third).
/// That order of events is rare: about one crash point in 400 met it
/// before the fix, so CI runs 120 points spread over the calls and
/// `TOKENVAULT_SOAK=1` kills it at every request of the calls, three times
/// over.
#[test]
#[ignore = "needs root and /dev/fuse: cargo test --test sync_faults -- --ignored"]
fn durable_calls_made_together_return_when_the_file_system_dies() {
    if let Some((path, _)) = child_env() {
        busy_child(&path);
        return;
    }
    let test = "durable_calls_made_together_return_when_the_file_system_dies";
    if disk_in(test, Mode::Linux).is_none() {
        return;
    }
    let (clean, calls, total) = die_during_calls(test, "busy", None);
    assert!(
        clean.status.is_some_and(|s| s.success()) && !clean.panicked,
        "the workload fails on a live file system: {clean:?}"
    );
    let soak = std::env::var_os("TOKENVAULT_SOAK").is_some();
    let points: Vec<u64> = if soak {
        (0..3).flat_map(|_| 0..calls).collect()
    } else {
        spread(0, calls, 120)
    };
    let (mut hung, mut bad, mut runs, mut woken) = (Vec::new(), Vec::new(), 0, 0);
    for (i, point) in points.iter().enumerate() {
        let errno = DEATHS[i % DEATHS.len()];
        let death = run_point(test, "busy", (*point, errno), soak);
        runs += 1;
        if death.stderr.contains("waking that flush") {
            println!("woken: point {point} errno {errno}");
            woken += 1;
        }
        if death.hung {
            println!("hung: point {point} errno {errno}");
            hung.push(death);
            if hung.len() >= 3 {
                break;
            }
        } else if death.panicked || !death.status.is_some_and(|s| s.success()) {
            bad.push(death);
        }
    }
    println!(
        "{runs} crash points of {} (the calls took {calls} requests, the whole run {total}): \
         {} hung, {} ended badly; the store woke a flush sled left waiting in {woken}",
        points.len(),
        hung.len(),
        bad.len()
    );
    for d in bad.iter().take(3) {
        println!(
            "point {} errno {} status {:?}:\n{}",
            d.point, d.errno, d.status, d.stderr
        );
    }
    assert!(hung.is_empty(), "{} of {runs} runs hung", hung.len());
    assert!(bad.is_empty(), "{} of {runs} runs ended badly", bad.len());
}

/// The commands of the CLI crash-point runs, in order (`{id}`: the id the
/// generate printed; `{token}`: its secret; `{access}`: the exchange's
/// access token).
#[cfg(feature = "cli")]
const CLI_WORKLOAD: [&[&str]; 12] = [
    &["init"],
    &["member", "add", "acme", "olivia", "owner"],
    &["member", "add", "acme", "uma", "user"],
    &["token", "generate", "--as", "acme/uma"],
    &["exchange", "{token}"],
    &["verify", "{access}"],
    &["token", "list", "--as", "acme/olivia"],
    &["token", "show", "--as", "acme/olivia", "{id}"],
    &["token", "revoke", "--as", "acme/olivia", "{id}"],
    &["audit", "--as", "acme/olivia"],
    &["stats"],
    &["check"],
];

/// One CLI crash-point run: the workload's commands on a file system that
/// dies after `point` requests (never, for `None`). Returns the request
/// count at the end and, for each command that ended badly (a panic, an
/// exit other than 0 or 1, or a failure that is not exactly one JSON
/// document of kind `io`), a line saying how.
#[cfg(feature = "cli")]
fn cli_dies(test: &str, point: Option<(u64, i32)>) -> (u64, Vec<String>) {
    let disk = disk_in(test, Mode::Linux).expect("checked by the caller");
    let db = disk.path().join("store.db");
    if let Some((n, errno)) = point {
        disk.die_after(n, errno);
    }
    let mut bad = Vec::new();
    let (mut id, mut token, mut access) = (String::new(), String::new(), String::new());
    for args in CLI_WORKLOAD {
        let args: Vec<String> = args
            .iter()
            .map(|a| match *a {
                "{id}" => id.clone(),
                "{token}" => token.clone(),
                "{access}" => access.clone(),
                other => other.to_string(),
            })
            .collect();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tokenvault"))
            .env_remove("TOKENVAULT_DB")
            .env("RUST_BACKTRACE", "1")
            .arg("--db")
            .arg(&db)
            .arg("--json")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run tokenvault");
        // Small outputs: the pipes do not fill before the exit.
        let status = wait_bounded(&mut child);
        let read = |r: Option<&mut dyn std::io::Read>| {
            let mut s = String::new();
            if let Some(r) = r {
                let _ = r.read_to_string(&mut s);
            }
            s
        };
        let stdout = read(child.stdout.as_mut().map(|r| r as &mut dyn std::io::Read));
        let stderr = read(child.stderr.as_mut().map(|r| r as &mut dyn std::io::Read));
        let docs: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&stdout)
            .into_iter()
            .collect::<Result<_, _>>()
            .unwrap_or_default();
        let code = status.and_then(|s| s.code());
        let said = format!("{args:?} exited {code:?}: {stdout}{stderr}");
        if stderr.contains("panicked") || code == Some(101) {
            bad.push(format!("panic: {said}"));
            continue;
        }
        match code {
            Some(0) if docs.len() == 1 => {
                let d = &docs[0];
                if let Some(v) = d["id"].as_str() {
                    id = v.to_string();
                }
                if let Some(v) = d["token"].as_str() {
                    token = v.to_string();
                }
                if let Some(v) = d["data"]["access_token"].as_str() {
                    access = v.to_string();
                }
            }
            Some(1) if docs.len() == 1 && docs[0]["error"]["kind"] == "io" => {}
            // A command that needs what an earlier failed command did not
            // make answers for that (usage: no token given; not found).
            Some(1 | 2) if docs.len() == 1 && point.is_some() && needs_earlier(&args, &docs[0]) => {
            }
            _ => bad.push(said),
        }
    }
    (disk.counters().requests, bad)
}

/// Whether a failure is that of a command run without what an earlier
/// command, which failed, would have given it (a token or an id).
#[cfg(feature = "cli")]
fn needs_earlier(args: &[String], doc: &serde_json::Value) -> bool {
    let empty_arg = args.iter().any(|a| a.is_empty());
    empty_arg && matches!(doc["error"]["kind"].as_str(), Some("usage" | "malformed"))
}

/// Every CLI command on a file system that dies at one of many points of
/// a workload (init, writes, then every read-only command) exits 0, or 1
/// with exactly one JSON document of kind `io`; none panics. CI runs a few
/// dozen points; `TOKENVAULT_SOAK=1` runs one every few requests.
#[cfg(feature = "cli")]
#[test]
#[ignore = "needs root and /dev/fuse: cargo test --test sync_faults -- --ignored"]
fn cli_commands_on_a_file_system_that_dies_exit_1_with_one_io_document() {
    let test = "cli_commands_on_a_file_system_that_dies_exit_1_with_one_io_document";
    if disk_in(test, Mode::Linux).is_none() {
        return;
    }
    let (total, bad) = cli_dies(test, None);
    assert!(bad.is_empty(), "on a live file system: {bad:#?}");
    let soak = std::env::var_os("TOKENVAULT_SOAK").is_some();
    let points = spread(0, total, if soak { total.min(600) } else { 30 });
    let mut all = Vec::new();
    for (i, point) in points.iter().enumerate() {
        let errno = DEATHS[i % DEATHS.len()];
        let (_, bad) = cli_dies(test, Some((*point, errno)));
        all.extend(
            bad.into_iter()
                .map(|b| format!("point {point} errno {errno}: {b}")),
        );
    }
    let panics = all.iter().filter(|b| b.contains("panic")).count();
    println!(
        "{} crash points over {total} requests: {} commands ended badly, {panics} of them \
         with a panic",
        points.len(),
        all.len()
    );
    for b in all.iter().take(5) {
        println!("{b}");
    }
    assert!(all.is_empty(), "{all:#?}");
}
