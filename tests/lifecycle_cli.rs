//! The `tokenvault` binary's lifecycle commands, driven as a user would:
//! `token rotate` (with `--grace`), `token disable` and `token enable`, the
//! exact `--json` documents they print, the state lists show, and the
//! refusals (kind and exit code, nothing changed).
#![cfg(feature = "cli")]

mod common;

use common::args::words;
use common::vault::Vault;
use serde_json::Value;

/// A store with acme: olivia (owner), adam (admin), uma (user).
fn seeded() -> Vault {
    Vault::with_acme(&[("olivia", "owner"), ("adam", "admin"), ("uma", "user")])
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap()
}

#[test]
fn rotate_prints_the_new_token_and_what_it_replaces() {
    let v = seeded();
    let old = v.ok(&words(
        "token generate --as acme/uma --label ci --scopes read --expires-in 30d",
    ));
    let id = s(&old["id"]);
    let r = v.ok(&[
        "token", "rotate", "--as", "acme/uma", id, "--grace", "1h30m",
    ]);
    assert_eq!(
        keys(&r),
        [
            "expires_at",
            "id",
            "old_expires_at",
            "replaces",
            "role",
            "scopes",
            "token",
            "user"
        ]
    );
    assert_eq!(r["replaces"], old["id"]);
    assert_ne!(r["id"], old["id"]);
    assert_eq!(r["user"], "uma");
    assert_eq!(r["role"], "user");
    assert_eq!(r["scopes"], serde_json::json!(["read"]));
    assert_eq!(r["expires_at"], old["expires_at"]);
    assert!(s(&r["token"]).starts_with("tvr_"));
    let old_expires_at = r["old_expires_at"].as_u64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        old_expires_at > now + 5_000 && old_expires_at <= now + 5_400,
        "{old_expires_at} vs now {now}"
    );
    // Both exchange during the grace period.
    v.ok(&["exchange", s(&old["token"])]);
    v.ok(&["exchange", s(&r["token"])]);
    // Again: a conflict (exit 1), nothing made.
    v.fail(&["token", "rotate", "--as", "acme/uma", id], 1, "conflict");
    let listed = v.ok(&["token", "list", "--as", "acme/uma"]);
    assert_eq!(listed["tokens"].as_array().unwrap().len(), 2);

    // --grace 0 (and 0s) ends the old token at once.
    let next = v.ok(&[
        "token",
        "rotate",
        "--as",
        "acme/olivia",
        s(&r["id"]),
        "--grace",
        "0s",
    ]);
    assert_eq!(next["replaces"], r["id"]);
    v.fail(&["exchange", s(&r["token"])], 1, "expired");
    v.ok(&["exchange", s(&next["token"])]);
    let t = v.ok(&["token", "generate", "--as", "acme/uma"]);
    v.ok(&[
        "token",
        "rotate",
        "--as",
        "acme/uma",
        s(&t["id"]),
        "--grace",
        "0",
    ]);
    // The default grace is 24 hours.
    let t = v.ok(&["token", "generate", "--as", "acme/uma"]);
    let d = v.ok(&["token", "rotate", "--as", "acme/uma", s(&t["id"])]);
    let left = d["old_expires_at"].as_u64().unwrap() - now;
    assert!((86_300..=86_500).contains(&left), "{left}");
}

#[test]
fn rotate_refuses_bad_input_and_others_tokens() {
    let v = seeded();
    let t = v.ok(&["token", "generate", "--as", "acme/uma"]);
    let id = s(&t["id"]);
    for bad in ["-1", "1x", "1h30", "soon", ""] {
        v.fail(
            &["token", "rotate", "--as", "acme/uma", id, "--grace", bad],
            2,
            "usage",
        );
    }
    // Over 7 days: the library's own refusal, also `usage`.
    v.fail(
        &["token", "rotate", "--as", "acme/uma", id, "--grace", "8d"],
        2,
        "usage",
    );
    v.fail(
        &["token", "rotate", "--as", "acme/adam", id],
        1,
        "forbidden",
    );
    let listed = v.ok(&["token", "list", "--as", "acme/uma"]);
    assert_eq!(listed["tokens"].as_array().unwrap().len(), 1);
    assert_eq!(listed["tokens"][0]["state"], "active");
}

#[test]
fn disable_and_enable_print_the_id_and_state() {
    let v = seeded();
    let t = v.ok(&["token", "generate", "--as", "acme/uma"]);
    let id = s(&t["id"]);
    let access = v.ok(&["exchange", s(&t["token"])]);
    let d = v.ok(&["token", "disable", "--as", "acme/uma", id]);
    assert_eq!(d, serde_json::json!({"id": id, "state": "disabled"}));
    v.fail(&["exchange", s(&t["token"])], 1, "disabled");
    v.fail(
        &["verify", s(&access["data"]["access_token"])],
        1,
        "disabled",
    );
    let mine = v.ok(&["token", "list", "--as", "acme/uma"]);
    assert_eq!(mine["tokens"][0]["state"], "disabled");
    let all = v.ok(&["token", "list", "--as", "acme/olivia", "--all"]);
    assert_eq!(all["tokens"][0]["state"], "disabled");
    assert_eq!(
        v.ok(&["token", "show", "--as", "acme/uma", id])["state"],
        "disabled"
    );
    v.fail(
        &["token", "enable", "--as", "acme/adam", id],
        1,
        "forbidden",
    );
    let e = v.ok(&["token", "enable", "--as", "acme/olivia", id]);
    assert_eq!(e, serde_json::json!({"id": id, "state": "active"}));
    v.ok(&["exchange", s(&t["token"])]);
    // Revoked meanwhile: enabling says so.
    v.ok(&["token", "disable", "--as", "acme/uma", id]);
    v.ok(&["token", "revoke", "--as", "acme/uma", id]);
    v.fail(&["token", "enable", "--as", "acme/uma", id], 1, "revoked");
    let audit = v.ok(&["audit", "--as", "acme/olivia"]);
    let actions: Vec<&str> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| s(&e["action"]))
        .collect();
    assert!(actions.contains(&"token.disable"), "{actions:?}");
    assert!(actions.contains(&"token.enable"), "{actions:?}");
}

#[test]
fn org_policy_prints_and_changes_the_policy() {
    let v = seeded();
    let p = v.ok(&["org", "policy", "--as", "acme/olivia"]);
    assert_eq!(
        p,
        serde_json::json!({"org": "acme", "max_lifetime": null, "unused_expiry": null, "rotate_on_use": false})
    );
    let p = v.ok(&words("org policy --as acme/olivia --max-lifetime 30d --unused-expiry 1h30m --rotate-on-use false"));
    assert_eq!(
        p,
        serde_json::json!({"org": "acme", "max_lifetime": 2_592_000, "unused_expiry": 5_400, "rotate_on_use": false})
    );
    // Only what is given changes; `none` lifts a limit.
    let p = v.ok(&words("org policy --as acme/olivia --unused-expiry none"));
    assert_eq!(p["max_lifetime"], 2_592_000);
    assert_eq!(p["unused_expiry"], Value::Null);
    assert_eq!(v.ok(&["org", "policy", "--as", "acme/olivia"]), p);
    // A new token gets the maximum lifetime; more is refused.
    let t = v.ok(&["token", "generate", "--as", "acme/uma"]);
    assert!(t["expires_at"].is_u64());
    v.fail(
        &words("token generate --as acme/uma --expires-in 31d"),
        2,
        "usage",
    );
    // Refusals: not the Owner, bad durations.
    v.fail(&["org", "policy", "--as", "acme/uma"], 1, "forbidden");
    v.fail(
        &["org", "policy", "--as", "acme/adam", "--max-lifetime", "1d"],
        1,
        "forbidden",
    );
    for bad in ["0", "-1", "soon"] {
        v.fail(
            &[
                "org",
                "policy",
                "--as",
                "acme/olivia",
                "--max-lifetime",
                bad,
            ],
            2,
            "usage",
        );
    }
    assert_eq!(v.ok(&["org", "policy", "--as", "acme/olivia"]), p);
}

#[test]
fn a_pending_assignment_prints_no_secret_and_the_member_claims_it() {
    let v = seeded();
    let a = v.ok(&words(
        "token assign --as acme/olivia --to uma --label ci --pending",
    ));
    assert!(a.get("token").is_none(), "{a}");
    assert_eq!(a["state"], "pending");
    assert_eq!(a["user"], "uma");
    let id = s(&a["id"]).to_string();
    let mine = v.ok(&["token", "list", "--as", "acme/uma"]);
    assert_eq!(mine["tokens"][0]["state"], "pending");
    v.fail(
        &["token", "claim", "--as", "acme/olivia", &id],
        1,
        "forbidden",
    );
    let c = v.ok(&["token", "claim", "--as", "acme/uma", &id]);
    assert_eq!(
        keys(&c),
        ["expires_at", "id", "role", "scopes", "token", "user"]
    );
    assert_eq!(c["id"], a["id"]);
    v.ok(&["exchange", s(&c["token"])]);
    v.fail(&["token", "claim", "--as", "acme/uma", &id], 1, "conflict");
    // Without --pending, the assignment shows the secret as before.
    let plain = v.ok(&["token", "assign", "--as", "acme/olivia", "--to", "uma"]);
    assert!(s(&plain["token"]).starts_with("tvr_"));
}
