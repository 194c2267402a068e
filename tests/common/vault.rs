//! A store on disk driven through the `tokenvault` binary with `--json`,
//! as a user would: each call runs the binary once and answers its exit
//! code and the JSON document it printed (on stdout, or on stderr for an
//! error).

use std::path::PathBuf;

use assert_cmd::Command;
use serde_json::Value;

pub struct Vault {
    pub dir: tempfile::TempDir,
    pub db: PathBuf,
}

impl Vault {
    /// A new store with the members `members` of acme, each a
    /// (user, role) pair.
    pub fn with_acme(members: &[(&str, &str)]) -> Vault {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("tokens.db");
        let v = Vault { dir, db };
        v.ok(&["init"]);
        for (user, role) in members {
            v.ok(&["member", "add", "acme", user, role]);
        }
        v
    }

    /// Runs the binary on this store: its exit code and its document.
    pub fn run(&self, args: &[&str]) -> (Option<i32>, Value) {
        let out = Command::cargo_bin("tokenvault")
            .unwrap()
            .current_dir(self.dir.path())
            .env_remove("TOKENVAULT_DB")
            .arg("--db")
            .arg(&self.db)
            .arg("--json")
            .args(args)
            .output()
            .unwrap();
        let text = if out.stdout.is_empty() {
            &out.stderr
        } else {
            &out.stdout
        };
        let doc = serde_json::from_slice(text).unwrap_or_else(|e| {
            panic!(
                "{args:?}: not JSON ({e}): {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.code(), doc)
    }

    /// Runs a command that succeeds; its document.
    pub fn ok(&self, args: &[&str]) -> Value {
        let (code, doc) = self.run(args);
        assert_eq!(code, Some(0), "{args:?}: {doc}");
        doc
    }

    /// Runs a command that fails with exit code `code` and error kind
    /// `kind`.
    pub fn fail(&self, args: &[&str], code: i32, kind: &str) {
        let (got, doc) = self.run(args);
        assert_eq!(got, Some(code), "{args:?}: {doc}");
        assert_eq!(doc["error"]["kind"], kind, "{args:?}: {doc}");
    }
}
