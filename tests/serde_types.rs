//! serde on the public value types (cargo feature `serde`): names are the
//! lowercase ones of `Display`/`FromStr` and the CLI's JSON, values round
//! trip, bad input is refused with an error, and no secret serializes
//! unless asked for through `IssuedToken::showing_secret`.
#![cfg(feature = "serde")]

use serde_json::{json, Value};
use tokenvault::{
    Actor, AuditEvent, GenerateOptions, RevokeScope, Role, TokenId, TokenInfo, TokenKind,
    TokenState, TokenStore,
};

#[test]
fn roles_serialize_as_their_display_names() {
    for role in Role::ALL {
        let v = serde_json::to_value(role).unwrap();
        assert_eq!(v, Value::String(role.to_string()));
        assert_eq!(role.to_string().parse::<Role>().unwrap(), role);
        assert_eq!(serde_json::from_value::<Role>(v).unwrap(), role);
    }
    // What earlier releases wrote still reads.
    assert_eq!(
        serde_json::from_value::<Role>(json!("Owner")).unwrap(),
        Role::Owner
    );
    assert!(serde_json::from_value::<Role>(json!("root")).is_err());
}

#[test]
fn token_info_state_and_id_round_trip() {
    let store = TokenStore::temporary().unwrap();
    store.add_member("acme", "ann", Role::Owner).unwrap();
    let ann = Actor::new("acme", "ann");
    let t = store
        .generate(
            &ann,
            GenerateOptions::default().label("ci").scopes(["read"]),
        )
        .unwrap();
    let v = serde_json::to_value(&t.info).unwrap();
    assert_eq!(v["id"], json!(t.info.id.to_string()));
    assert_eq!(v["role_at_issue"], json!("owner"));
    assert_eq!(v["state"], json!(t.info.state.to_string()));
    assert_eq!(v["state"], json!("active"));
    assert_eq!(v["scopes"], json!(["read"]));
    let back: TokenInfo = serde_json::from_value(v).unwrap();
    assert_eq!(back, t.info);

    store.revoke(&ann, &t.info.id, Some("rotated")).unwrap();
    let revoked = store.list_own(&ann).unwrap().remove(0);
    let v = serde_json::to_value(&revoked).unwrap();
    assert_eq!(v["state"], json!("revoked"));
    assert_eq!(v["revoked_by"], json!("ann"));
    assert_eq!(v["revoke_reason"], json!("rotated"));
    assert!(matches!(revoked.state, TokenState::Revoked { .. }));
    let back: TokenInfo = serde_json::from_value(v).unwrap();
    assert_eq!(back, revoked);

    // A bad id is an error, not a panic.
    for bad in [json!("xyz"), json!(42), json!("0".repeat(33))] {
        assert!(serde_json::from_value::<TokenId>(bad).is_err());
    }
    assert_eq!(
        serde_json::to_value(TokenKind::Refresh).unwrap(),
        json!("refresh")
    );
}

#[test]
fn no_secret_serializes_unless_shown_deliberately() {
    let store = TokenStore::temporary().unwrap();
    store.add_member("acme", "ann", Role::Owner).unwrap();
    let ann = Actor::new("acme", "ann");
    let t = store.generate(&ann, GenerateOptions::default()).unwrap();
    let secret = t.token.expose().to_string();

    let plain = serde_json::to_string(&t).unwrap();
    assert!(!plain.contains(&secret), "{plain}");
    assert_eq!(
        serde_json::to_value(&t).unwrap(),
        serde_json::to_value(&t.info).unwrap()
    );
    let shown = serde_json::to_value(t.showing_secret()).unwrap();
    assert_eq!(shown["token"], json!(secret));
    assert_eq!(shown["id"], json!(t.info.id.to_string()));
    assert!(!format!("{:?}", t.showing_secret()).contains(&secret));

    // A principal serializes without any token text.
    let grant = store.exchange(&secret).unwrap();
    let p = store.verify(grant.access_token.expose()).unwrap();
    let v = serde_json::to_value(&p).unwrap();
    assert_eq!(v["org"], json!("acme"));
    assert_eq!(v["user"], json!("ann"));
    assert_eq!(v["role"], json!("owner"));
    assert_eq!(v["scopes"], json!(p.scopes.to_vec()));
    let text = v.to_string();
    assert!(!text.contains(grant.access_token.expose()) && !text.contains(&secret));
}

#[test]
fn audit_events_and_other_values_round_trip() {
    let store = TokenStore::temporary().unwrap();
    store.add_member("acme", "ann", Role::Owner).unwrap();
    let ann = Actor::new("acme", "ann");
    let events = store.audit(&ann, 10).unwrap();
    let v = serde_json::to_value(&events).unwrap();
    assert_eq!(v[0]["action"], json!("member.add"));
    let keys: Vec<&str> = v[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut want = vec![
        "seq", "at", "org", "actor", "action", "target", "outcome", "count", "last_at",
    ];
    want.sort_unstable();
    let mut got = keys.clone();
    got.sort_unstable();
    assert_eq!(got, want);
    let back: Vec<AuditEvent> = serde_json::from_value(v).unwrap();
    assert_eq!(back, events);

    let a: Actor = serde_json::from_value(json!({"org": "acme", "user": "ann"})).unwrap();
    assert_eq!(a, ann);
    assert_eq!(
        serde_json::to_value(RevokeScope::Org).unwrap(),
        json!("org")
    );
    let stats = store.stats().unwrap();
    let back = serde_json::from_value(serde_json::to_value(stats).unwrap()).unwrap();
    assert_eq!(stats, back);
    let report = store.close().unwrap();
    assert_eq!(
        serde_json::to_value(report).unwrap()["last_handle"],
        json!(true)
    );
}
