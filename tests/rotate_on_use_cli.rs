//! `org policy --rotate-on-use true|false` through the `tokenvault` binary:
//! the exact `--json` document, the setting kept across runs, only the
//! Owner may change it, and a token generated afterwards rotates on its
//! OAuth refresh (checked through the library on the same database).
#![cfg(feature = "cli")]

mod common;

use common::args::words;
use common::vault::Vault;
use serde_json::json;

#[test]
fn org_policy_turns_rotation_on_use_on_and_off() {
    let v = Vault::with_acme(&[("olivia", "owner"), ("uma", "user")]);
    let on = v.ok(&words("org policy --as acme/olivia --rotate-on-use true"));
    assert_eq!(
        on,
        json!({"org": "acme", "max_lifetime": null, "unused_expiry": null, "rotate_on_use": true})
    );
    // Kept: printed again without options.
    assert_eq!(v.ok(&words("org policy --as acme/olivia")), on);
    // Only the Owner; nothing changes on a refusal.
    v.fail(
        &words("org policy --as acme/uma --rotate-on-use false"),
        1,
        "forbidden",
    );
    v.fail(
        &words("org policy --as acme/olivia --rotate-on-use maybe"),
        2,
        "usage",
    );
    assert_eq!(v.ok(&words("org policy --as acme/olivia")), on);

    // A token of the organization now rotates on its OAuth refresh.
    let t = v.ok(&words("token generate --as acme/uma"));
    let secret = t["token"].as_str().expect("token").to_string();
    {
        let store = tokenvault::Config::new(&v.db).open().unwrap();
        let g = store.oauth_refresh(&secret, &[] as &[&str]).unwrap();
        assert!(g.refresh_token.is_some());
        store.close().unwrap();
    }

    let off = v.ok(&words("org policy --as acme/olivia --rotate-on-use false"));
    assert_eq!(off["rotate_on_use"], false, "{off}");
    let audit = v.ok(&words("audit --as acme/olivia"));
    let text = audit.to_string();
    assert!(text.contains("rotate_on_use=true"), "{text}");
    assert!(text.contains("token.rotate_on_use"), "{text}");
}
