//! Guards the `tokenvault` command-line tool by driving the built binary: the seed story, the policy table's refusals (exit 1, `forbidden`, nothing changed), every `--json` shape, the exit codes, and bad input (malformed token, unknown role, missing database, wrong key, tokens read from stdin).
#![cfg(feature = "cli")]

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;
use serde_json::Value;
use tokenvault::token::encode_raw;
use tokenvault::TokenKind;

/// A temporary directory with a store path in it (not yet created).
struct Vault {
    dir: tempfile::TempDir,
    db: PathBuf,
}

impl Vault {
    /// An empty directory: no store.
    fn empty() -> Vault {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("tokens.db");
        Vault { dir, db }
    }

    /// A store with org acme: olivia (owner), adam (admin), uma (user),
    /// sam (stakeholder).
    fn seeded() -> Vault {
        let v = Vault::empty();
        v.ok(&["init"]);
        for (user, role) in [
            ("olivia", "owner"),
            ("adam", "admin"),
            ("uma", "user"),
            ("sam", "stakeholder"),
        ] {
            v.ok(&["member", "add", "acme", user, role]);
        }
        v
    }

    /// The binary, run in the vault's directory with `--db` set.
    fn cmd(&self) -> Command {
        let mut c = Command::cargo_bin("tokenvault").expect("binary built with --features cli");
        c.current_dir(self.dir.path())
            .env_remove("TOKENVAULT_DB")
            .arg("--db")
            .arg(&self.db);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run tokenvault")
    }

    /// Runs with `--json`, expects exit 0, returns the document.
    fn ok(&self, args: &[&str]) -> Value {
        let out = self
            .cmd()
            .arg("--json")
            .args(args)
            .output()
            .expect("run tokenvault");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        json_of(&out)
    }

    /// Runs with `--json`, expects `code` and an error of `kind`.
    fn fail(&self, args: &[&str], code: i32, kind: &str) -> Value {
        let out = self
            .cmd()
            .arg("--json")
            .args(args)
            .output()
            .expect("run tokenvault");
        let doc = json_of(&out);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {doc}");
        assert_error_shape(&doc, kind);
        doc
    }

    fn key_file(&self) -> PathBuf {
        self.dir.path().join("tokens.db.key")
    }

    /// Every token of acme as the Owner sees them, and the members.
    fn snapshot(&self) -> (Value, Value) {
        (
            self.ok(&["token", "list", "--as", "acme/olivia", "--all"]),
            self.ok(&["member", "list", "acme"]),
        )
    }
}

fn json_of(out: &Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}): {text:?}; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().expect("an object").keys().cloned().collect();
    k.sort();
    k
}

fn sorted(names: &[&str]) -> Vec<String> {
    let mut k: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    k.sort();
    k
}

fn assert_error_shape(doc: &Value, kind: &str) {
    assert_eq!(keys(doc), ["error"], "{doc}");
    assert_eq!(keys(&doc["error"]), ["kind", "message"], "{doc}");
    assert_eq!(doc["error"]["kind"], kind, "{doc}");
    assert!(
        !doc["error"]["message"].as_str().unwrap_or("").is_empty(),
        "an error needs a message: {doc}"
    );
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

fn state_of(list: &Value, id: &str) -> String {
    list["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .find(|t| t["id"] == id)
        .map(|t| s(&t["state"]).to_string())
        .unwrap_or_else(|| panic!("{id} not in {list}"))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

#[test]
fn seed_story_end_to_end() {
    let v = Vault::seeded();
    // uma's own token, then the Owner's assignments.
    let own = v.ok(&["token", "generate", "--as", "acme/uma", "--label", "laptop"]);
    let for_adam = v.ok(&[
        "token",
        "assign",
        "--as",
        "acme/olivia",
        "--to",
        "adam",
        "--label",
        "terraform",
    ]);
    let for_uma = v.ok(&[
        "token",
        "assign",
        "--as",
        "acme/olivia",
        "--to",
        "uma",
        "--label",
        "ci",
    ]);
    assert_eq!(for_uma["user"], "uma");
    assert_eq!(for_adam["role"], "admin");

    // Tokens the Owner assigned show in the member's own list.
    let mine = v.ok(&["token", "list", "--as", "acme/uma"]);
    let list = mine["tokens"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    let assigned = list
        .iter()
        .find(|t| t["id"] == for_uma["id"])
        .expect("assigned token listed");
    assert_eq!(assigned["created_by"], "olivia");
    assert_eq!(assigned["label"], "ci");
    assert!(list
        .iter()
        .any(|t| t["id"] == own["id"] && t["created_by"] == "uma"));
    assert_eq!(
        v.ok(&["token", "list", "--as", "acme/olivia", "--all"])["tokens"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    // Exchange, verify, role restriction.
    let grant = v.ok(&["exchange", s(&for_uma["token"])]);
    let access = s(&grant["data"]["access_token"]).to_string();
    let who = v.ok(&["verify", &access]);
    assert_eq!(
        (s(&who["org"]), s(&who["user"]), s(&who["role"])),
        ("acme", "uma", "user")
    );
    assert_eq!(who["refresh_id"], for_uma["id"]);
    v.ok(&["verify", &access, "--scope", "incident-write"]);
    v.fail(
        &["verify", &access, "--scope", "user-write"],
        1,
        "insufficient_scope",
    );
    let listed = v.ok(&["token", "list", "--as", "acme/uma"]);
    let rec = listed["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == for_uma["id"])
        .unwrap()
        .clone();
    assert!(
        rec["last_refresh"].is_u64(),
        "exchange records last_refresh: {rec}"
    );

    // The Owner revokes uma's token: the access token dies with it.
    let revoked = v.ok(&[
        "token",
        "revoke",
        "--as",
        "acme/olivia",
        s(&for_uma["id"]),
        "--reason",
        "rotated",
    ]);
    assert_eq!(revoked["revoked"], true);
    v.fail(&["verify", &access], 1, "revoked");
    v.fail(&["exchange", s(&for_uma["token"])], 1, "revoked");
    let after = v.ok(&["token", "list", "--as", "acme/uma"]);
    assert_eq!(state_of(&after, s(&for_uma["id"])), "revoked");
    assert_eq!(state_of(&after, s(&own["id"])), "active");

    // Demoting adam takes the Admin scope from his live access token.
    let adam_access = v.ok(&["exchange", s(&for_adam["token"])])["data"]["access_token"].clone();
    v.ok(&["verify", s(&adam_access), "--scope", "user-write"]);
    assert_eq!(
        v.ok(&["member", "role", "acme", "adam", "user"])["role"],
        "user"
    );
    v.fail(
        &["verify", s(&adam_access), "--scope", "user-write"],
        1,
        "insufficient_scope",
    );
    assert_eq!(v.ok(&["verify", s(&adam_access)])["role"], "user");

    // Removing uma revokes her remaining token.
    assert_eq!(v.ok(&["member", "remove", "acme", "uma"])["revoked"], 1);
    v.fail(&["exchange", s(&own["token"])], 1, "revoked");

    // The audit trail, newest first, has it all.
    let audit = v.ok(&["audit", "--as", "acme/olivia", "--limit", "3"]);
    let events = audit["events"].as_array().unwrap();
    assert_eq!(events.len(), 3);
    assert_eq!(events[0]["action"], "member.remove");
    assert!(events[0]["seq"].as_u64() > events[1]["seq"].as_u64());
    assert_eq!(
        keys(&events[0]),
        sorted(&["seq", "at", "org", "actor", "action", "target", "outcome", "count", "last_at"])
    );

    let check = v.ok(&["check"]);
    assert_eq!(check["clean"], true);
}

#[test]
fn policy_refusals_exit_1_forbidden_and_change_nothing() {
    let v = Vault::seeded();
    v.ok(&["member", "add", "globex", "gina", "owner"]);
    let uma_tok = v.ok(&["token", "generate", "--as", "acme/uma"]);
    let adam_tok = v.ok(&["token", "generate", "--as", "acme/adam"]);
    let uma_id = s(&uma_tok["id"]).to_string();
    let before = v.snapshot();

    let refusals: Vec<Vec<&str>> = vec![
        // assign: Owner only
        vec!["token", "assign", "--as", "acme/adam", "--to", "uma"],
        vec!["token", "assign", "--as", "acme/uma", "--to", "sam"],
        vec!["token", "assign", "--as", "acme/sam", "--to", "uma"],
        // list every token: Owner only
        vec!["token", "list", "--as", "acme/adam", "--all"],
        vec!["token", "list", "--as", "acme/uma", "--all"],
        // revoke another member's token: Owner only
        vec!["token", "revoke", "--as", "acme/adam", &uma_id],
        vec!["token", "revoke", "--as", "acme/sam", &uma_id],
        // bulk: Owner only for others and for the org
        vec!["token", "revoke-all", "--as", "acme/adam", "--user", "uma"],
        vec!["token", "revoke-all", "--as", "acme/adam", "--org"],
        vec!["token", "revoke-all", "--as", "acme/uma", "--org"],
        // audit: Owner only
        vec!["audit", "--as", "acme/adam"],
        // nothing crosses an org
        vec!["token", "revoke", "--as", "globex/gina", &uma_id],
        vec!["token", "list", "--as", "globex/uma"],
        // not a member
        vec!["token", "generate", "--as", "acme/mallory"],
    ];
    for args in &refusals {
        v.fail(args, 1, "forbidden");
        assert_eq!(v.snapshot(), before, "{args:?} changed the store");
    }
    // The refused revocation really left the token usable.
    v.ok(&["exchange", s(&uma_tok["token"])]);

    // What the table allows: own tokens for every role, the Owner for all.
    v.ok(&["token", "generate", "--as", "acme/sam"]);
    v.ok(&["token", "revoke", "--as", "acme/adam", s(&adam_tok["id"])]);
    assert_eq!(
        v.ok(&["token", "revoke-all", "--as", "acme/uma", "--user", "uma"])["revoked"],
        1
    );
    assert_eq!(
        v.ok(&["token", "revoke-all", "--as", "acme/olivia", "--org"])["revoked"],
        1
    );
    // Refusals are in the audit trail.
    let audit = v.ok(&["audit", "--as", "acme/olivia", "--limit", "100"]);
    let denied = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| s(&e["outcome"]).starts_with("denied"))
        .count();
    assert!(denied >= 10, "refusals are audited: {audit}");
}

#[test]
fn json_shapes() {
    let v = Vault::seeded();
    let gen = v.ok(&[
        "token",
        "generate",
        "--as",
        "acme/uma",
        "--scopes",
        "read,incident-write",
        "--label",
        "x",
    ]);
    let shape = sorted(&["id", "token", "user", "role", "scopes", "expires_at"]);
    assert_eq!(keys(&gen), shape);
    assert!(s(&gen["token"]).starts_with("tvr_"));
    assert_eq!(s(&gen["id"]).len(), 32);
    assert_eq!(gen["scopes"], serde_json::json!(["read", "incident-write"]));
    assert!(gen["expires_at"].is_null());

    let asg = v.ok(&[
        "token",
        "assign",
        "--as",
        "acme/olivia",
        "--to",
        "adam",
        "--expires-in",
        "30d",
    ]);
    assert_eq!(keys(&asg), shape);
    assert_eq!((s(&asg["user"]), s(&asg["role"])), ("adam", "admin"));
    let exp = asg["expires_at"]
        .as_u64()
        .expect("expires_at is unix seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(exp.abs_diff(now + 30 * 86_400) < 60, "{exp} vs {now}");

    let ex = v.ok(&["exchange", s(&gen["token"])]);
    assert_eq!(keys(&ex), ["data"]);
    assert_eq!(
        keys(&ex["data"]),
        sorted(&[
            "access_token",
            "expires_at",
            "issued_at",
            "refresh_token",
            "type"
        ])
    );
    assert_eq!(ex["data"]["type"], "Bearer");
    assert_eq!(ex["data"]["refresh_token"], gen["token"]);
    assert!(s(&ex["data"]["access_token"]).starts_with("tva_"));
    assert!(ex["data"]["expires_at"].as_u64() > ex["data"]["issued_at"].as_u64());

    let who = v.ok(&["verify", s(&ex["data"]["access_token"])]);
    assert_eq!(
        keys(&who),
        sorted(&["org", "user", "role", "scopes", "refresh_id", "expires_at"])
    );
    assert_eq!(who["scopes"], serde_json::json!(["read", "incident-write"]));
    assert_eq!(who["expires_at"], ex["data"]["expires_at"]);

    let list = v.ok(&["token", "list", "--as", "acme/olivia", "--all"]);
    assert_eq!(keys(&list), ["tokens"]);
    let tokens = list["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 2);
    let tshape = sorted(&[
        "id",
        "user",
        "role",
        "scopes",
        "label",
        "created_at",
        "created_by",
        "expires_at",
        "last_refresh",
        "last_used_ip",
        "last_used_agent",
        "state",
    ]);
    for t in tokens {
        assert_eq!(keys(t), tshape);
        assert!(t["created_at"].is_u64());
    }
    let t = tokens.iter().find(|t| t["id"] == gen["id"]).unwrap();
    assert_eq!(
        (
            s(&t["user"]),
            s(&t["role"]),
            s(&t["label"]),
            s(&t["created_by"]),
            s(&t["state"])
        ),
        ("uma", "user", "x", "uma", "active")
    );
    let a = tokens.iter().find(|t| t["id"] == asg["id"]).unwrap();
    assert!(a["label"].is_null() && a["last_refresh"].is_null());
    assert!(a["last_used_ip"].is_null() && a["last_used_agent"].is_null());
    assert_eq!(a["expires_at"], asg["expires_at"]);

    let members = v.ok(&["member", "list", "acme"]);
    assert_eq!(
        members["members"][0],
        serde_json::json!({"user": "adam", "role": "admin"})
    );
    assert_eq!(members["members"].as_array().unwrap().len(), 4);

    let stats = v.ok(&["stats"]);
    assert_eq!(stats["members"], 4);
    assert_eq!(stats["orgs"], 1);
    assert_eq!(
        stats["tokens"],
        serde_json::json!({"active": 2, "revoked": 0, "expired": 0})
    );
    assert_eq!(stats["access_tokens"], 1);
    assert!(stats["disk_bytes"].as_u64() > Some(0));

    let purge = v.ok(&["purge"]);
    assert_eq!(
        keys(&purge),
        sorted(&[
            "access_removed",
            "refresh_removed",
            "events_removed",
            "batches"
        ])
    );

    // Errors: one document on stdout, nothing else.
    let out = v
        .cmd()
        .args(["--json", "exchange", "tvr_nope"])
        .output()
        .unwrap();
    assert_error_shape(&json_of(&out), "malformed");
}

#[test]
fn token_states_active_revoked_expired() {
    let v = Vault::seeded();
    let short = v.ok(&[
        "token",
        "generate",
        "--as",
        "acme/uma",
        "--expires-in",
        "1s",
    ]);
    let gone = v.ok(&["token", "generate", "--as", "acme/uma"]);
    let live = v.ok(&[
        "token",
        "generate",
        "--as",
        "acme/uma",
        "--expires-in",
        "1h",
    ]);
    v.ok(&["token", "revoke", "--as", "acme/uma", s(&gone["id"])]);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let list = v.ok(&["token", "list", "--as", "acme/uma"]);
    assert_eq!(state_of(&list, s(&short["id"])), "expired");
    assert_eq!(state_of(&list, s(&gone["id"])), "revoked");
    assert_eq!(state_of(&list, s(&live["id"])), "active");
    v.fail(&["exchange", s(&short["token"])], 1, "expired");
    let stats = v.ok(&["stats"]);
    assert_eq!(
        stats["tokens"],
        serde_json::json!({"active": 1, "revoked": 1, "expired": 1})
    );
}

#[test]
fn exit_codes() {
    let v = Vault::seeded();
    let code = |args: &[&str]| v.run(args).status.code();
    assert_eq!(code(&["stats"]), Some(0));
    assert_eq!(code(&["--help"]), Some(0));
    assert_eq!(
        code(&["token", "list", "--as", "acme/adam", "--all"]),
        Some(1)
    );
    for usage in [
        &[][..],
        &["frobnicate"],
        &["member", "add", "acme", "zed"],
        &["member", "add", "acme", "zed", "boss"],
        &["token", "generate"],
        &["token", "generate", "--as", "acme"],
        &[
            "token",
            "generate",
            "--as",
            "acme/uma",
            "--expires-in",
            "soon",
        ],
        &["token", "revoke", "--as", "acme/olivia", "not-an-id"],
        &["token", "revoke-all", "--as", "acme/olivia"],
        &[
            "token",
            "revoke-all",
            "--as",
            "acme/olivia",
            "--org",
            "--user",
            "uma",
        ],
        &[
            "token",
            "revoke-all",
            "--as",
            "acme/olivia",
            "--org",
            "--before",
            "yesterday",
        ],
        &["audit", "--as", "acme/olivia", "--limit", "-3"],
        &["purge", "--batch", "0"],
        &["stats", "--frob"],
    ] {
        let out = v.run(usage);
        assert_eq!(out.status.code(), Some(2), "{usage:?}");
        assert!(
            out.stdout.is_empty(),
            "{usage:?}: usage errors go to stderr without --json"
        );
        assert!(!out.stderr.is_empty(), "{usage:?}: says what is wrong");
        // With --json, the same failure is a usage document on stdout.
        v.fail(usage, 2, "usage");
    }
    // The library's InvalidArgument is bad usage too: a scope above the role,
    // a cutoff in the future.
    v.fail(
        &[
            "token",
            "generate",
            "--as",
            "acme/uma",
            "--scopes",
            "user-write",
        ],
        2,
        "usage",
    );
    v.fail(
        &[
            "token",
            "revoke-all",
            "--as",
            "acme/olivia",
            "--org",
            "--before",
            "2999-01-01T00:00:00Z",
        ],
        2,
        "usage",
    );
    assert_eq!(
        v.ok(&["token", "list", "--as", "acme/uma"])["tokens"],
        serde_json::json!([])
    );
    // Conflicts and unknowns are refusals.
    v.fail(&["member", "add", "acme", "uma", "user"], 1, "conflict");
    v.fail(&["member", "add", "acme", "zed", "owner"], 1, "conflict");
    v.fail(&["member", "remove", "acme", "olivia"], 1, "conflict");
    v.fail(
        &["member", "role", "acme", "nobody", "user"],
        1,
        "not_found",
    );
    v.fail(&["member", "list", "initech"], 1, "not_found");
    v.fail(
        &[
            "token",
            "revoke",
            "--as",
            "acme/olivia",
            "0123456789abcdef0123456789abcdef",
        ],
        1,
        "not_found",
    );
    v.fail(
        &["token", "assign", "--as", "acme/olivia", "--to", "ghost"],
        1,
        "not_found",
    );
}

#[test]
fn global_options_before_or_after_the_command() {
    let v = Vault::seeded();
    let db = v.db.to_str().unwrap();
    let after = Command::cargo_bin("tokenvault")
        .unwrap()
        .current_dir(v.dir.path())
        .env_remove("TOKENVAULT_DB")
        .args(["member", "list", "acme", "--db", db, "--json"])
        .output()
        .unwrap();
    assert_eq!(after.status.code(), Some(0));
    assert_eq!(json_of(&after)["members"].as_array().unwrap().len(), 4);
    let mixed = Command::cargo_bin("tokenvault")
        .unwrap()
        .current_dir(v.dir.path())
        .env_remove("TOKENVAULT_DB")
        .args(["--json", "member", "--db", db, "list", "acme"])
        .output()
        .unwrap();
    assert_eq!(json_of(&mixed), json_of(&after));

    // TOKENVAULT_DB names the store when --db is absent.
    let env = Command::cargo_bin("tokenvault")
        .unwrap()
        .current_dir(v.dir.path())
        .env("TOKENVAULT_DB", db)
        .args(["stats", "--json"])
        .output()
        .unwrap();
    assert_eq!(json_of(&env)["members"], 4);

    // Without either, ./tokenvault.db in the working directory.
    let dir = tempfile::tempdir().unwrap();
    let init = Command::cargo_bin("tokenvault")
        .unwrap()
        .current_dir(dir.path())
        .env_remove("TOKENVAULT_DB")
        .arg("init")
        .output()
        .unwrap();
    assert_eq!(init.status.code(), Some(0));
    assert!(dir.path().join("tokenvault.db").is_dir());
    assert!(dir.path().join("tokenvault.db.key").is_file());
}

#[test]
fn human_output_is_tables_and_sentences() {
    let v = Vault::seeded();
    let out = v.run(&["token", "generate", "--as", "acme/uma", "--label", "laptop"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    let token = text.lines().last().unwrap();
    assert!(
        token.starts_with("tvr_"),
        "the token is printed on its own line: {text}"
    );
    assert_eq!(text.matches(token).count(), 1, "printed once");
    // The printed token works.
    v.ok(&["exchange", token]);

    let out = v.run(&["member", "list", "acme"]);
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["USER", "ROLE"]
    );
    let col = lines[0].find("ROLE").unwrap();
    for l in &lines[1..] {
        assert_eq!(l[col..].split_whitespace().count(), 1, "aligned: {text}");
    }
    let out = v.run(&["token", "list", "--as", "acme/uma"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("ID"), "{text}");
    assert!(text.contains("laptop") && text.contains("active"), "{text}");
    assert!(!text.contains("tvr_"), "lists never show secrets: {text}");

    let out = v.run(&["token", "list", "--as", "acme/adam", "--all"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("only the Owner"), "{err}");

    // purge without a terminal: no progress bar escapes.
    let out = v.run(&["purge"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8(out.stdout).unwrap().starts_with("Purged"));
}

/// A token pasted where an id or a name belongs is recognized and never
/// repeated: not in a usage error, not in a refusal, with or without
/// `--json`.
#[test]
fn a_token_where_an_id_belongs_is_never_echoed() {
    let v = Vault::seeded();
    let tok = v.ok(&["token", "generate", "--as", "acme/uma"]);
    let secret = s(&tok["token"]).to_string();
    // Any stretch of the token's digits would leak part of the secret.
    let digits = &secret[secret.len() - 30..];
    let leaks = |out: &Output| {
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        all.contains(digits)
    };
    for json in [false, true] {
        let mut args = vec!["token", "revoke", "--as", "acme/uma", secret.as_str()];
        if json {
            args.insert(0, "--json");
        }
        let out = v.run(&args);
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        assert!(!leaks(&out), "the secret was echoed: {out:?}");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("this is a token, not a token id"), "{text}");
        if json {
            assert_error_shape(&json_of(&out), "usage");
        }
        // A token given as a member's name, to a call the store refuses.
        let to = format!("--to={secret}");
        let mut args = vec!["token", "assign", "--as", "acme/olivia", to.as_str()];
        if json {
            args.insert(0, "--json");
        }
        let out = v.run(&args);
        assert_ne!(out.status.code(), Some(0), "{out:?}");
        assert!(!leaks(&out), "the secret was echoed: {out:?}");
        // And as an actor that is no ORG/USER.
        let mut args = vec!["token", "list", "--as", secret.as_str()];
        if json {
            args.insert(0, "--json");
        }
        let out = v.run(&args);
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        assert!(!leaks(&out), "the secret was echoed: {out:?}");
    }
    // The token still works: nothing was revoked.
    let ex = v.ok(&["exchange", secret.as_str()]);
    assert!(ex["data"]["access_token"].is_string(), "{ex}");
}

#[test]
fn malformed_and_unknown_tokens_are_refused() {
    let v = Vault::seeded();
    let t = v.ok(&["token", "generate", "--as", "acme/uma"]);
    let real = s(&t["token"]).to_string();
    // A typo breaks the checksum.
    let mut typo = real.clone().into_bytes();
    let last = typo.len() - 5;
    typo[last] = if typo[last] == b'A' { b'B' } else { b'A' };
    let typo = String::from_utf8(typo).unwrap();
    for bad in ["", "hello", "tvr_", "tva_abc", &typo, &format!("{real}x")] {
        v.fail(&["exchange", bad], 1, "malformed");
        v.fail(&["verify", bad], 1, "malformed");
    }
    // A refresh token is not an access token.
    v.fail(&["verify", &real], 1, "malformed");
    // Well formed, but unknown id or wrong secret: the same invalid_token.
    let unknown = encode_raw("tv", TokenKind::Refresh, [7; 16], [9; 32]);
    v.fail(&["exchange", &unknown], 1, "invalid_token");
    let mut id = [0u8; 16];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s(&t["id"])[2 * i..2 * i + 2], 16).unwrap();
    }
    let wrong_secret = encode_raw("tv", TokenKind::Refresh, id, [1; 32]);
    v.fail(&["exchange", &wrong_secret], 1, "invalid_token");
    v.fail(
        &[
            "verify",
            &encode_raw("tv", TokenKind::Access, [7; 16], [9; 32]),
        ],
        1,
        "invalid_token",
    );
    // Nothing changed: the real token still works and was never refreshed.
    let list = v.ok(&["token", "list", "--as", "acme/uma"]);
    assert!(list["tokens"][0]["last_refresh"].is_null());
    v.ok(&["exchange", &real]);
}

#[test]
fn tokens_read_from_stdin() {
    let v = Vault::seeded();
    let t = v.ok(&["token", "generate", "--as", "acme/uma"]);
    let out = v
        .cmd()
        .args(["--json", "exchange", "-"])
        .write_stdin(format!("{}\n", s(&t["token"])))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let grant = json_of(&out);
    assert_eq!(grant["data"]["refresh_token"], t["token"]);
    let access = s(&grant["data"]["access_token"]);
    let out = v
        .cmd()
        .args(["verify", "-", "--scope", "read", "--json"])
        .write_stdin(format!("{access}\r\n"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(json_of(&out)["user"], "uma");
    // Empty or garbage input is a malformed token.
    for input in ["", "\n", "not a token\n"] {
        let out = v
            .cmd()
            .args(["--json", "exchange", "-"])
            .write_stdin(input)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert_error_shape(&json_of(&out), "malformed");
    }
}

#[test]
fn missing_database_is_an_error_and_nothing_is_created() {
    let v = Vault::empty();
    for args in [
        &["stats"][..],
        &["check"],
        &["purge"],
        &["member", "add", "acme", "olivia", "owner"],
        &["member", "list", "acme"],
        &["token", "list", "--as", "acme/olivia"],
        &["exchange", "tvr_x"],
        &["audit", "--as", "acme/olivia"],
    ] {
        let doc = v.fail(args, 1, "not_found");
        assert!(s(&doc["error"]["message"]).contains("tokens.db"), "{doc}");
        assert!(!v.db.exists(), "{args:?} created the store");
        assert!(!v.key_file().exists(), "{args:?} created a key file");
    }
    // Nested missing directories are not created either.
    let deep = v.dir.path().join("a/b/c.db");
    let out = Command::cargo_bin("tokenvault")
        .unwrap()
        .args(["--db", deep.to_str().unwrap(), "stats"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("no token store"));
    assert!(!v.dir.path().join("a").exists());
    assert_eq!(std::fs::read_dir(v.dir.path()).unwrap().count(), 0);
    // demo uses its own temporary store and leaves none behind.
    v.ok(&["demo"]);
    assert_eq!(std::fs::read_dir(v.dir.path()).unwrap().count(), 0);
}

#[test]
fn init_creates_once_then_conflicts() {
    let v = Vault::empty();
    let doc = v.ok(&["init"]);
    assert_eq!(doc["db"], v.db.to_str().unwrap());
    assert!(v.db.is_dir());
    let key = std::fs::read(v.key_file()).unwrap();
    assert_eq!(key.len(), 32);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(v.key_file())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    v.ok(&["member", "add", "acme", "olivia", "owner"]);
    v.fail(&["init"], 1, "conflict");
    // The second init changed nothing.
    assert_eq!(std::fs::read(v.key_file()).unwrap(), key);
    assert_eq!(v.ok(&["stats"])["members"], 1);
    // A stray key file without its store is not silently reused.
    let other = Vault::empty();
    std::fs::write(other.key_file(), [3u8; 32]).unwrap();
    other.fail(&["init"], 1, "conflict");
    assert!(!other.db.exists());
}

#[test]
fn wrong_or_missing_key_is_key_mismatch() {
    let v = Vault::seeded();
    let t = v.ok(&["token", "generate", "--as", "acme/uma"]);
    let copy = Vault::empty();
    copy_dir(&v.db, &copy.db);
    std::fs::write(copy.key_file(), [0x5a; 32]).unwrap();
    for args in [
        &["stats"][..],
        &["member", "list", "acme"],
        &["exchange", s(&t["token"])],
    ] {
        let doc = copy.fail(args, 1, "key_mismatch");
        assert!(s(&doc["error"]["message"]).contains("key"), "{doc}");
    }
    // The original, with its own key, is untouched and works.
    v.ok(&["exchange", s(&t["token"])]);
    // With the right key the copy opens: the refusal changed nothing.
    std::fs::copy(v.key_file(), copy.key_file()).unwrap();
    assert_eq!(copy.ok(&["stats"])["members"], 4);
    // A store whose key file is gone is refused, and no new key is made.
    std::fs::remove_file(copy.key_file()).unwrap();
    copy.fail(&["stats"], 1, "key_mismatch");
    assert!(!copy.key_file().exists());
    // A key file of the wrong size is refused too.
    std::fs::write(copy.key_file(), [1u8; 7]).unwrap();
    let out = copy.cmd().args(["--json", "stats"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn member_management() {
    let v = Vault::seeded();
    let t = v.ok(&["token", "assign", "--as", "acme/olivia", "--to", "adam"]);
    let tr = v.ok(&["member", "transfer", "acme", "adam"]);
    assert_eq!(
        (s(&tr["owner"]), s(&tr["previous_owner"])),
        ("adam", "olivia")
    );
    let m = v.ok(&["member", "list", "acme"]);
    let role = |u: &str| {
        m["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["user"] == u)
            .map(|x| s(&x["role"]).to_string())
    };
    assert_eq!(role("adam").as_deref(), Some("owner"));
    assert_eq!(role("olivia").as_deref(), Some("admin"));
    // The new Owner may list everything; the old one may not.
    v.ok(&["token", "list", "--as", "acme/adam", "--all"]);
    v.fail(
        &["token", "list", "--as", "acme/olivia", "--all"],
        1,
        "forbidden",
    );
    // Roles parse in any case; the Owner's role moves only by transfer.
    assert_eq!(
        v.ok(&["member", "role", "acme", "uma", "ADMIN"])["role"],
        "admin"
    );
    v.fail(&["member", "role", "acme", "uma", "owner"], 1, "conflict");
    v.fail(&["member", "transfer", "acme", "nobody"], 1, "not_found");
    // Removing a member revokes their tokens.
    v.ok(&["member", "transfer", "acme", "olivia"]);
    assert_eq!(v.ok(&["member", "remove", "acme", "adam"])["revoked"], 1);
    v.fail(&["exchange", s(&t["token"])], 1, "revoked");
    assert_eq!(
        v.ok(&["member", "list", "acme"])["members"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

#[test]
fn revoke_all_with_a_cutoff() {
    let v = Vault::seeded();
    let old = v.ok(&["token", "generate", "--as", "acme/uma"]);
    let adam = v.ok(&["token", "generate", "--as", "acme/adam"]);
    // A cutoff before anything was issued revokes nothing.
    let none = v.ok(&[
        "token",
        "revoke-all",
        "--as",
        "acme/olivia",
        "--org",
        "--before",
        "2001-09-09T01:46:40Z",
    ]);
    assert_eq!(none["revoked"], 0);
    assert_eq!(none["before"], 1_000_000_000);
    let none = v.ok(&[
        "token",
        "revoke-all",
        "--as",
        "acme/olivia",
        "--user",
        "uma",
        "--before",
        "1000000000",
    ]);
    assert_eq!(none["revoked"], 0);
    // Tokens are stamped in whole seconds: wait for the next one.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let r = v.ok(&[
        "token",
        "revoke-all",
        "--as",
        "acme/olivia",
        "--user",
        "uma",
        "--before",
        "now",
    ]);
    assert_eq!(r["revoked"], 1);
    assert_eq!(r["user"], "uma");
    v.fail(&["exchange", s(&old["token"])], 1, "revoked");
    v.ok(&["exchange", s(&adam["token"])]);
    let fresh = v.ok(&["token", "generate", "--as", "acme/uma"]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let r = v.ok(&["token", "revoke-all", "--as", "acme/olivia", "--org"]);
    assert_eq!(r["revoked"], 2);
    v.fail(&["exchange", s(&fresh["token"])], 1, "revoked");
    v.fail(&["exchange", s(&adam["token"])], 1, "revoked");
}

#[test]
fn check_reports_damage_with_exit_1() {
    let v = Vault::seeded();
    v.ok(&["token", "generate", "--as", "acme/uma"]);
    assert_eq!(v.ok(&["check"])["problems"], serde_json::json!([]));
    {
        // A last-exchange entry whose refresh record does not exist.
        let db = sled::open(&v.db).unwrap();
        let tree = db.open_tree("last_refresh").unwrap();
        tree.insert(b"0123456789abcdef", &7u64.to_be_bytes()[..])
            .unwrap();
        db.flush().unwrap();
    }
    let out = v.cmd().args(["--json", "check"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let doc = json_of(&out);
    assert_eq!(doc["error"]["kind"], "corrupt", "{doc}");
    assert!(
        doc["error"]["details"][0]
            .as_str()
            .unwrap()
            .contains("last_refresh entry without its refresh record"),
        "{doc}"
    );
    let out = v.run(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("last_refresh entry without its refresh record"));
}

#[test]
fn demo_narrates_the_seed_story() {
    let v = Vault::empty();
    let out = v.run(&["demo"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "olivia",
        "assigned",
        "forbidden",
        "Bearer",
        "revoked",
        "demoted",
        "audit",
        "no problems",
    ] {
        assert!(text.contains(needle), "the demo mentions {needle}: {text}");
    }
    let doc = v.ok(&["demo"]);
    assert!(doc["steps"].as_array().unwrap().len() >= 10);
    assert!(!v.db.exists());
}

/// `tokenvault serve` answers Squadcast's exchange endpoint on loopback and
/// stops on SIGTERM (std's `Child::kill` sends SIGKILL, so use `kill`).
#[test]
fn serve_answers_the_exchange_endpoint() {
    let v = Vault::seeded();
    let issued = v.ok(&["token", "generate", "--as", "acme/uma"]);
    let token = issued["token"].as_str().unwrap().to_string();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let bin = assert_cmd::cargo::cargo_bin("tokenvault");
    let mut child = std::process::Command::new(bin)
        .arg("--db")
        .arg(&v.db)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/oauth/access-token");
    let client = reqwest::blocking::Client::new();
    let mut answer = None;
    for _ in 0..100 {
        match client.get(&url).header("X-Refresh-Token", &token).send() {
            Ok(r) => {
                answer = Some(r);
                break;
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    }
    let answer = answer.expect("server came up");
    assert_eq!(answer.status().as_u16(), 200);
    let body: Value = answer.json().unwrap();
    assert_eq!(body["data"]["type"], "Bearer");
    let missing = client.get(&url).send().unwrap();
    assert_eq!(missing.status().as_u16(), 400);
    let stopped = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

// ----- one token by id, labels, pages -----

#[test]
fn token_show_and_label_print_one_list_item() {
    let v = Vault::seeded();
    v.ok(&["member", "add", "globex", "gina", "owner"]);
    let t = v.ok(&["token", "generate", "--as", "acme/uma", "--label", "laptop"]);
    let id = s(&t["id"]).to_string();
    let listed = v.ok(&["token", "list", "--as", "acme/uma"])["tokens"][0].clone();
    // Exactly the item `token list` prints, for the holder and the Owner.
    assert_eq!(v.ok(&["token", "show", "--as", "acme/uma", &id]), listed);
    assert_eq!(v.ok(&["token", "show", "--as", "acme/olivia", &id]), listed);

    let relabelled = v.ok(&["token", "label", "--as", "acme/uma", &id, "work laptop"]);
    assert_eq!(relabelled["label"], "work laptop");
    let listed = v.ok(&["token", "list", "--as", "acme/uma"])["tokens"][0].clone();
    assert_eq!(relabelled, listed);
    assert_eq!(
        v.ok(&["token", "label", "--as", "acme/olivia", &id, "owner's pick"])["label"],
        "owner's pick"
    );
    let audit = v.ok(&["audit", "--as", "acme/olivia", "--limit", "2"]);
    assert_eq!(audit["events"][0]["action"], "token.label");
    assert_eq!(audit["events"][0]["actor"], "olivia");

    // Refusals change nothing: another member, another org's Owner, a
    // bad label, an unknown id.
    let before = v.snapshot();
    v.fail(&["token", "show", "--as", "acme/adam", &id], 1, "forbidden");
    v.fail(
        &["token", "label", "--as", "acme/adam", &id, "x"],
        1,
        "forbidden",
    );
    v.fail(
        &["token", "show", "--as", "globex/gina", &id],
        1,
        "not_found",
    );
    v.fail(
        &["token", "label", "--as", "globex/gina", &id, "x"],
        1,
        "not_found",
    );
    v.fail(
        &["token", "label", "--as", "acme/uma", &id, "a\u{7}b"],
        2,
        "usage",
    );
    v.fail(
        &["token", "label", "--as", "acme/uma", &id, &"x".repeat(257)],
        2,
        "usage",
    );
    v.fail(
        &[
            "token",
            "show",
            "--as",
            "acme/uma",
            "00000000000000000000000000000000",
        ],
        1,
        "not_found",
    );
    v.fail(&["token", "show", "--as", "acme/uma", "nope"], 2, "usage");
    assert_eq!(v.snapshot(), before);
}

#[test]
fn token_list_and_audit_page_with_after_and_limit() {
    let v = Vault::seeded();
    for who in [
        "acme/uma",
        "acme/adam",
        "acme/uma",
        "acme/olivia",
        "acme/uma",
    ] {
        v.ok(&["token", "generate", "--as", who]);
    }
    let all = v.ok(&["token", "list", "--as", "acme/olivia", "--all"]);
    assert_eq!(keys(&all), ["tokens"], "no `next` without --limit");
    let all = all["tokens"].as_array().unwrap().clone();
    assert_eq!(all.len(), 5);

    let mut walked: Vec<Value> = Vec::new();
    let mut args: Vec<String> = vec![];
    loop {
        let mut a = vec![
            "token",
            "list",
            "--as",
            "acme/olivia",
            "--all",
            "--limit",
            "2",
        ];
        a.extend(args.iter().map(String::as_str));
        let page = v.ok(&a);
        assert_eq!(keys(&page), ["next", "tokens"]);
        let items = page["tokens"].as_array().unwrap();
        assert!(items.len() <= 2);
        walked.extend(items.iter().cloned());
        if page["next"].is_null() {
            break;
        }
        assert_eq!(
            page["next"],
            walked.last().unwrap()["id"],
            "next is the last id"
        );
        args = vec!["--after".into(), s(&page["next"]).into()];
    }
    assert_eq!(walked, all);
    // --after alone: the rest of the list, shaped as today.
    let rest = v.ok(&[
        "token",
        "list",
        "--as",
        "acme/olivia",
        "--all",
        "--after",
        s(&all[2]["id"]),
    ]);
    assert_eq!(keys(&rest), ["tokens"]);
    assert_eq!(rest["tokens"].as_array().unwrap(), &all[3..].to_vec());
    // A member's own list, and bad pages.
    let own = v.ok(&["token", "list", "--as", "acme/uma", "--limit", "3"]);
    assert_eq!(own["tokens"].as_array().unwrap().len(), 3);
    assert!(own["next"].is_null());
    v.fail(
        &["token", "list", "--as", "acme/uma", "--limit", "0"],
        2,
        "usage",
    );
    v.fail(
        &["token", "list", "--as", "acme/uma", "--after", "zz"],
        2,
        "usage",
    );
    let adams = s(&v.ok(&["token", "list", "--as", "acme/adam"])["tokens"][0]["id"]).to_string();
    v.fail(
        &["token", "list", "--as", "acme/uma", "--after", &adams],
        2,
        "usage",
    );

    // The audit: newest first, cursor = seq.
    let full = v.ok(&["audit", "--as", "acme/olivia"]);
    assert_eq!(keys(&full), ["events"], "no `next` without --limit");
    let full = full["events"].as_array().unwrap().clone();
    let first = v.ok(&["audit", "--as", "acme/olivia", "--limit", "4"]);
    assert_eq!(keys(&first), ["events", "next"]);
    assert_eq!(first["events"].as_array().unwrap(), &full[..4].to_vec());
    assert_eq!(first["next"], full[3]["seq"]);
    let cursor = first["next"].to_string();
    let second = v.ok(&[
        "audit",
        "--as",
        "acme/olivia",
        "--after",
        &cursor,
        "--limit",
        "100",
    ]);
    assert_eq!(second["events"].as_array().unwrap(), &full[4..].to_vec());
    assert!(second["next"].is_null());
    v.fail(
        &["audit", "--as", "acme/olivia", "--limit", "0"],
        2,
        "usage",
    );
}
