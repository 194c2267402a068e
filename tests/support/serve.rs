//! A running `tokenvault serve` for the operations tests (metrics, logs,
//! TLS): a store made with the CLI, the server as a child process whose
//! standard error is kept line by line, and its addresses read from its log.
//! Every wait is bounded (60 s) and waits for an event, never a bare sleep.
#![allow(dead_code)]

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_tokenvault");
pub const PATIENCE: Duration = Duration::from_secs(60);

/// The binary on the store `db` (`TOKENVAULT_DB` unset); the caller adds
/// the rest.
pub fn tv(db: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.arg("--db").arg(db).env_remove("TOKENVAULT_DB");
    c
}

/// Runs `command` to its end; its exit code and the one JSON document it
/// printed (panics if it printed anything else).
pub fn run_json(command: &mut Command) -> (Option<i32>, Value) {
    let out = command.output().expect("run tokenvault");
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not one JSON document ({e}): {out:?}"));
    (out.status.code(), v)
}

/// Runs the CLI with `--json` on `db` and returns its document; panics on a
/// failure.
pub fn cli(db: &Path, args: &[&str]) -> Value {
    let out = tv(db)
        .arg("--json")
        .args(args)
        .output()
        .expect("run tokenvault");
    assert!(out.status.success(), "{args:?}: {out:?}");
    serde_json::from_slice(&out.stdout).expect("one JSON document")
}

/// A store with acme: olivia (Owner), uma (User).
pub fn seeded_store(dir: &Path) -> PathBuf {
    let db = dir.join("tv.db");
    cli(&db, &["init"]);
    cli(&db, &["member", "add", "acme", "olivia", "owner"]);
    cli(&db, &["member", "add", "acme", "uma", "user"]);
    db
}

/// A running `serve`; killed when dropped.
pub struct Served {
    child: Option<Child>,
    lines: Receiver<String>,
    /// Every line of standard error so far (without terminal colours).
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Served {
    /// `tokenvault --db DB serve --listen 127.0.0.1:0 EXTRA...`.
    pub fn start(db: &Path, extra: &[&str]) -> Served {
        let mut child = tv(db)
            .args(["serve", "--listen", "127.0.0.1:0", "--rate-per-minute", "0"])
            .args(extra)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn serve");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let keep = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let plain = strip_ansi(&line);
                keep.lock().unwrap().push(plain.clone());
                if tx.send(plain).is_err() {
                    // Nobody waits any more; keep collecting the log.
                }
            }
        });
        Served {
            child: Some(child),
            lines: rx,
            log,
        }
    }

    /// The next line of the log holding `needle` (panics after
    /// [`PATIENCE`], or if the server exits first).
    pub fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            match self.lines.recv_timeout(Duration::from_millis(200)) {
                Ok(l) if l.contains(needle) => return l,
                Ok(_) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if let Some(Some(st)) = self.child.as_mut().map(|c| c.try_wait().ok().flatten())
                    {
                        panic!(
                            "serve exited ({st}) before logging {needle:?}: {:?}",
                            self.log
                        );
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    panic!("serve closed its log before {needle:?}: {:?}", self.log)
                }
            }
        }
        panic!("serve never logged {needle:?}: {:?}", self.log);
    }

    /// The address of the log line holding `needle` (`addr=…` in text,
    /// `"addr"` in JSON).
    pub fn addr_of(&mut self, needle: &str) -> std::net::SocketAddr {
        let line = self.wait_for(needle);
        addr_in(&line).unwrap_or_else(|| panic!("no address in {line:?}"))
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    /// Sends `sig` to the server.
    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(st.success());
    }

    /// SIGTERM, then waits for the exit (bounded); the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(st) = child.try_wait().expect("wait") {
                return st;
            }
            assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The whole log so far, one string.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn addr_in(line: &str) -> Option<std::net::SocketAddr> {
    if let Ok(v) = serde_json::from_str::<Value>(line) {
        return v["addr"].as_str()?.parse().ok();
    }
    let at = line.find("addr=")? + "addr=".len();
    line[at..].split_whitespace().next()?.parse().ok()
}

/// `line` without its terminal colours.
pub fn strip_ansi(line: &str) -> String {
    let mut plain = String::new();
    let mut esc = false;
    for c in line.chars() {
        match (esc, c) {
            (false, '\u{1b}') => esc = true,
            (true, 'm') => esc = false,
            (true, _) => {}
            (false, c) => plain.push(c),
        }
    }
    plain
}
