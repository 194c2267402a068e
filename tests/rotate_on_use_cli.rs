//! `org policy --rotate-on-use true|false` through the `tokenvault` binary:
//! the exact `--json` document, the setting kept across runs, only the
//! Owner may change it, and a token generated afterwards rotates on its
//! OAuth refresh (checked through the library on the same database).
#![cfg(feature = "cli")]

use std::path::PathBuf;

use assert_cmd::Command;
use serde_json::{json, Value};

struct Vault {
    dir: tempfile::TempDir,
    db: PathBuf,
}

impl Vault {
    fn seeded() -> Vault {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("tokens.db");
        let v = Vault { dir, db };
        v.run(&["init"], 0);
        for (user, role) in [("olivia", "owner"), ("uma", "user")] {
            v.run(&["member", "add", "acme", user, role], 0);
        }
        v
    }

    fn run(&self, args: &[&str], code: i32) -> Value {
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
        let doc: Value = serde_json::from_slice(text).unwrap_or_else(|e| {
            panic!(
                "{args:?}: not JSON ({e}): {}",
                String::from_utf8_lossy(text)
            )
        });
        assert_eq!(out.status.code(), Some(code), "{args:?}: {doc}");
        doc
    }
}

#[test]
fn org_policy_turns_rotation_on_use_on_and_off() {
    let v = Vault::seeded();
    let on = v.run(
        &[
            "org",
            "policy",
            "--as",
            "acme/olivia",
            "--rotate-on-use",
            "true",
        ],
        0,
    );
    assert_eq!(
        on,
        json!({"org": "acme", "max_lifetime": null, "unused_expiry": null, "rotate_on_use": true})
    );
    // Kept: printed again without options.
    assert_eq!(v.run(&["org", "policy", "--as", "acme/olivia"], 0), on);
    // Only the Owner; nothing changes on a refusal.
    let e = v.run(
        &[
            "org",
            "policy",
            "--as",
            "acme/uma",
            "--rotate-on-use",
            "false",
        ],
        1,
    );
    assert_eq!(e["error"]["kind"], "forbidden", "{e}");
    let e = v.run(
        &[
            "org",
            "policy",
            "--as",
            "acme/olivia",
            "--rotate-on-use",
            "maybe",
        ],
        2,
    );
    assert_eq!(e["error"]["kind"], "usage", "{e}");
    assert_eq!(v.run(&["org", "policy", "--as", "acme/olivia"], 0), on);

    // A token of the organization now rotates on its OAuth refresh.
    let t = v.run(&["token", "generate", "--as", "acme/uma"], 0);
    let secret = t["token"].as_str().expect("token").to_string();
    {
        let store = tokenvault::Config::new(&v.db).open().unwrap();
        let g = store.oauth_refresh(&secret, &[] as &[&str]).unwrap();
        assert!(g.refresh_token.is_some());
        store.close().unwrap();
    }

    let off = v.run(
        &[
            "org",
            "policy",
            "--as",
            "acme/olivia",
            "--rotate-on-use",
            "false",
        ],
        0,
    );
    assert_eq!(off["rotate_on_use"], false, "{off}");
    let audit = v.run(&["audit", "--as", "acme/olivia"], 0);
    let text = audit.to_string();
    assert!(text.contains("rotate_on_use=true"), "{text}");
    assert!(text.contains("token.rotate_on_use"), "{text}");
}
