//! DESIGN.md's invariants, each by its number, plus expiry through the
//! injectable clock, growth control and the store key: the promises a token
//! store is trusted with.

mod common;

use common::raw_sled;
use std::time::Duration;

use tokenvault::token::{decode_raw, TokenKind};
use tokenvault::{
    Actor, Config, Error, GenerateOptions, ManualClock, RevokeScope, Role, StoreKey, TokenStore,
};

const T0: u64 = 1_800_000_000;

fn seeded(config: Config) -> (TokenStore, Actor, Actor) {
    let store = config.open().unwrap();
    let (olivia, _, uma) = common::store::seed_acme(&store);
    (store, olivia, uma)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn invariant_1_no_secret_on_disk_or_in_debug() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("store.db");
    let mut secrets: Vec<String> = Vec::new();
    {
        let (store, olivia, uma) = seeded(Config::new(&db));
        let a = store
            .generate(&uma, GenerateOptions::default().label("laptop"))
            .unwrap();
        let b = store.assign(&olivia, "adam", Default::default()).unwrap();
        let g1 = store.exchange(a.token.expose()).unwrap();
        let g2 = store.exchange(b.token.expose()).unwrap();
        store.revoke(&olivia, &b.info.id, Some("test")).unwrap();
        store.revoke_access(g1.access_token.expose()).unwrap();
        for dbg in [
            format!("{a:?}"),
            format!("{b:?}"),
            format!("{g1:?}"),
            format!("{g2:?}"),
            format!("{store:?}"),
            format!("{:?}", store.list_org(&olivia).unwrap()),
            format!("{:?}", store.verify(g2.access_token.expose())),
        ] {
            for t in [&a.token, &b.token, &g1.access_token, &g2.access_token] {
                assert!(!dbg.contains(&t.expose()[4..]), "secret in Debug: {dbg}");
            }
        }
        secrets.extend([&a.token, &b.token].iter().map(|t| t.expose().to_string()));
        secrets.extend(
            [&g1.access_token, &g2.access_token]
                .iter()
                .map(|t| t.expose().to_string()),
        );
        store.flush().unwrap();
    }
    let files = files_under(&db);
    assert!(!files.is_empty());
    let blobs: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    for t in &secrets {
        let kind = if t.starts_with("tvr_") {
            TokenKind::Refresh
        } else {
            TokenKind::Access
        };
        let (_, raw) = decode_raw("tv", kind, t).unwrap();
        let base62 = &t.as_bytes()[4 + 22..4 + 66]; // the secret's digits
        for b in &blobs {
            assert!(!contains(b, &raw), "raw secret bytes on disk");
            assert!(!contains(b, t.as_bytes()), "token text on disk");
            assert!(!contains(b, base62), "secret's base62 text on disk");
        }
    }
    // A debug print of the key and the config is redacted.
    let key = StoreKey::from_bytes([0x5a; 32]);
    assert!(!format!("{key:?}").contains("5a"));
    assert!(!format!("{:?}", Config::temporary().key(key)).contains("90"));
}

#[test]
fn invariant_2_revocation_holds_across_threads_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let key = StoreKey::from_bytes([7; 32]);
    let (refresh, access) = {
        let (store, olivia, uma) = seeded(Config::new(&db).key(key.clone()));
        let t = store.generate(&uma, Default::default()).unwrap();
        let grants: Vec<_> = (0..3)
            .map(|_| store.exchange(t.token.expose()).unwrap())
            .collect();
        store.revoke(&olivia, &t.info.id, None).unwrap();
        // In another thread, right after the call returned.
        let s2 = store.clone();
        let a2: Vec<String> = grants
            .iter()
            .map(|g| g.access_token.expose().to_string())
            .collect();
        std::thread::spawn(move || {
            for a in a2 {
                assert!(matches!(s2.verify(&a), Err(Error::Revoked)));
            }
        })
        .join()
        .unwrap();
        // No flush here: revoke is durable on return by itself.
        (
            t.token.expose().to_string(),
            grants[0].access_token.expose().to_string(),
        )
    };
    let store = Config::new(&db).key(key).open().unwrap();
    assert!(matches!(store.verify(&access), Err(Error::Revoked)));
    assert!(matches!(store.exchange(&refresh), Err(Error::Revoked)));
}

#[test]
fn invariant_2_bulk_revocations_cascade() {
    let clock = ManualClock::new(T0);
    let (store, olivia, uma) = seeded(Config::temporary().clock(clock.clone()));
    let old = store.generate(&uma, Default::default()).unwrap();
    let old_access = store.exchange(old.token.expose()).unwrap().access_token;
    clock.advance(100);
    let new = store.generate(&uma, Default::default()).unwrap();
    // Everything of uma's issued before T0 + 50.
    let n = store
        .revoke_all(&olivia, RevokeScope::Member("uma".into()), Some(T0 + 50))
        .unwrap();
    assert_eq!(n, 1);
    assert!(matches!(
        store.verify(old_access.expose()),
        Err(Error::Revoked)
    ));
    assert!(store.exchange(new.token.expose()).is_ok());
    // An earlier cutoff does not undo a later one (the latest wins).
    store
        .revoke_all(&olivia, RevokeScope::Org, Some(T0 + 10))
        .unwrap();
    assert!(matches!(
        store.exchange(old.token.expose()),
        Err(Error::Revoked)
    ));
    assert!(store.exchange(new.token.expose()).is_ok());
    // A cutoff in the future is refused and changes nothing.
    assert!(matches!(
        store.revoke_all(&olivia, RevokeScope::Org, Some(T0 + 10_000)),
        Err(Error::InvalidArgument(_))
    ));
    assert!(store.exchange(new.token.expose()).is_ok());
    // Every token of the org.
    assert_eq!(
        store.revoke_all(&olivia, RevokeScope::Org, None).unwrap(),
        1
    );
    assert!(matches!(
        store.exchange(new.token.expose()),
        Err(Error::Revoked)
    ));
}

#[test]
fn invariant_3_scopes_follow_the_current_role() {
    let (store, olivia, _) = seeded(Config::temporary());
    let t = store.assign(&olivia, "adam", Default::default()).unwrap();
    let access = store.exchange(t.token.expose()).unwrap().access_token;
    assert!(store.authorize(access.expose(), "user-write").is_ok());
    // Demotion: the token loses the Admin scopes at once.
    store.set_role("acme", "adam", Role::User).unwrap();
    let p = store.verify(access.expose()).unwrap();
    assert_eq!(p.role, Role::User);
    assert!(!p.scopes.contains("user-write"));
    assert!(p.scopes.contains("incident-write"));
    // Promotion back never grants more than the token carries.
    store.set_role("acme", "adam", Role::Admin).unwrap();
    let narrow = store
        .assign(&olivia, "adam", GenerateOptions::default().scopes(["read"]))
        .unwrap();
    let na = store.exchange(narrow.token.expose()).unwrap().access_token;
    store.transfer_ownership("acme", "adam").unwrap();
    let p = store.verify(na.expose()).unwrap();
    assert_eq!(p.role, Role::Owner);
    assert_eq!(p.scopes.to_vec(), vec!["read".to_string()]);
    // Removal: the member's tokens never verify again.
    let (store, olivia, uma) = seeded(Config::temporary());
    let t = store.generate(&uma, Default::default()).unwrap();
    let access = store.exchange(t.token.expose()).unwrap().access_token;
    assert_eq!(store.remove_member("acme", "uma").unwrap(), 1);
    assert!(matches!(store.verify(access.expose()), Err(Error::Revoked)));
    assert!(matches!(
        store.exchange(t.token.expose()),
        Err(Error::Revoked)
    ));
    // Re-adding the same user id does not revive old tokens.
    store.add_member("acme", "uma", Role::User).unwrap();
    assert!(matches!(store.verify(access.expose()), Err(Error::Revoked)));
    assert!(store.list_org(&olivia).unwrap()[0].state.as_str() == "revoked");
}

#[test]
fn invariant_3_scopes_are_narrowed_at_issue() {
    let (store, _, uma) = seeded(Config::temporary());
    // A User cannot ask for an Admin scope.
    assert!(matches!(
        store.generate(&uma, GenerateOptions::default().scopes(["user-write"])),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        store.generate(&uma, GenerateOptions::default().scopes(["no-such"])),
        Err(Error::InvalidArgument(_))
    ));
    assert!(store.list_own(&uma).unwrap().is_empty());
}

#[test]
fn invariant_4_denied_calls_change_nothing() {
    let (store, olivia, uma) = seeded(Config::temporary());
    let t = store.generate(&olivia, Default::default()).unwrap();
    let before = format!("{:?}", store.list_org(&olivia).unwrap());
    assert!(matches!(
        store.revoke(&uma, &t.info.id, None),
        Err(Error::Forbidden(_))
    ));
    assert!(matches!(
        store.assign(&uma, "adam", Default::default()),
        Err(Error::Forbidden(_))
    ));
    assert!(matches!(
        store.revoke_all(&uma, RevokeScope::Org, None),
        Err(Error::Forbidden(_))
    ));
    assert_eq!(before, format!("{:?}", store.list_org(&olivia).unwrap()));
    assert!(store.exchange(t.token.expose()).is_ok());
}

#[test]
fn invariant_5_malformed_tokens_get_their_error() {
    let clock = ManualClock::new(T0);
    let (store, _, uma) = seeded(
        Config::temporary()
            .clock(clock.clone())
            .access_ttl(Duration::from_secs(60)),
    );
    let t = store.generate(&uma, Default::default()).unwrap();
    let good = t.token.expose().to_string();
    let access = store.exchange(&good).unwrap().access_token;
    let access = access.expose().to_string();
    let (id, secret) = decode_raw("tv", TokenKind::Refresh, &good).unwrap();
    let mut wrong = secret;
    wrong[0] ^= 1;
    let wrong_secret = tokenvault::token::encode_raw("tv", TokenKind::Refresh, id, wrong);
    let unknown_id = tokenvault::token::encode_raw("tv", TokenKind::Refresh, [9; 16], secret);
    let mut bad_check = good.clone().into_bytes();
    let last = bad_check.len() - 1;
    bad_check[last] = if bad_check[last] == b'0' { b'1' } else { b'0' };
    let bad_check = String::from_utf8(bad_check).unwrap();
    let cases: Vec<(&str, String, &str)> = vec![
        ("empty", String::new(), "malformed"),
        ("wrong prefix", format!("xx{}", &good[2..]), "malformed"),
        ("wrong kind", access.clone(), "malformed"),
        ("bad checksum", bad_check, "malformed"),
        ("truncated", good[..good.len() - 1].to_string(), "malformed"),
        ("too long", format!("{good}0"), "malformed"),
        ("huge", "a".repeat(1 << 20), "malformed"),
        (
            "non-ascii",
            format!("{}é", &good[..good.len() - 2]),
            "malformed",
        ),
        ("spaces", format!(" {}", &good[1..]), "malformed"),
        ("unknown id", unknown_id, "invalid_token"),
        ("wrong secret", wrong_secret.clone(), "invalid_token"),
    ];
    for (what, tok, kind) in &cases {
        let got = store.exchange(tok).map(|_| ()).unwrap_err();
        assert_eq!(got.kind(), *kind, "{what}: {got}");
        if *what == "wrong kind" {
            // An access token presented as a refresh token; it is a valid
            // access token, so verification accepts it.
            assert!(store.verify(tok).is_ok());
            continue;
        }
        // Verification reports the same for the access-kind spellings.
        let as_access = tok.replacen("tvr_", "tva_", 1);
        let e = store.verify(&as_access).unwrap_err();
        assert!(
            e.kind() == "malformed" || e.kind() == "invalid_token",
            "{what}: {e}"
        );
    }
    // Expired is said only after the secret matched.
    clock.advance(61);
    assert!(matches!(store.verify(&access), Err(Error::Expired)));
    let (aid, asecret) = decode_raw("tv", TokenKind::Access, &access).unwrap();
    let mut w = asecret;
    w[5] ^= 0x80;
    let wrong_access = tokenvault::token::encode_raw("tv", TokenKind::Access, aid, w);
    assert!(matches!(
        store.verify(&wrong_access),
        Err(Error::InvalidToken)
    ));
    // Revoked too.
    store.revoke(&uma, &t.info.id, None).unwrap();
    assert!(matches!(store.exchange(&good), Err(Error::Revoked)));
    assert!(matches!(
        store.exchange(&wrong_secret),
        Err(Error::InvalidToken)
    ));
}

#[test]
fn invariant_5_corrupted_records_on_disk_do_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let key = StoreKey::from_bytes([3; 32]);
    let (tok, id) = {
        let (store, _, uma) = seeded(Config::new(&db).key(key.clone()));
        let t = store.generate(&uma, Default::default()).unwrap();
        store.generate(&uma, Default::default()).unwrap();
        store.exchange(t.token.expose()).unwrap();
        (t.token.expose().to_string(), t.info.id)
    };
    let garbage: [&[u8]; 5] = [
        b"",
        b"\x01",
        b"\x09garbage",
        b"\x01\xff\xff\xff\xff\xff\xff\xff\xff\xff",
        &[1u8; 300],
    ];
    for (i, bytes) in garbage.iter().enumerate() {
        {
            let raw = raw_sled(&db);
            raw.open_tree("refresh")
                .unwrap()
                .insert(id.as_bytes(), *bytes)
                .unwrap();
            raw.open_tree("members")
                .unwrap()
                .insert(format!("junk{i}"), *bytes)
                .unwrap();
            raw.open_tree("access")
                .unwrap()
                .insert([i as u8; 32], *bytes)
                .unwrap();
            raw.flush().unwrap();
        }
        let store = Config::new(&db).key(key.clone()).open().unwrap();
        // The token whose record is unreadable fails closed.
        let e = store.exchange(&tok).unwrap_err();
        assert_eq!(e.kind(), "invalid_token", "case {i}: {e}");
        let report = store.check_integrity().unwrap();
        assert!(!report.is_clean(), "case {i}: corruption not reported");
        // Listing reports the corruption as an error instead of panicking.
        let listed = store.list_own(&Actor::new("acme", "uma"));
        assert!(matches!(listed, Err(Error::Corrupt(_))), "case {i}");
    }
}

#[test]
fn invariant_6_indexes_agree_with_records() {
    let clock = ManualClock::new(T0);
    let (store, olivia, uma) = seeded(
        Config::temporary()
            .clock(clock.clone())
            .max_access_per_refresh(2)
            .retention(Duration::from_secs(10)),
    );
    let a = store.generate(&uma, Default::default()).unwrap();
    for _ in 0..5 {
        store.exchange(a.token.expose()).unwrap();
    }
    let b = store.assign(&olivia, "adam", Default::default()).unwrap();
    store.exchange(b.token.expose()).unwrap();
    store.revoke(&olivia, &b.info.id, None).unwrap();
    assert!(store.check_integrity().unwrap().is_clean());
    clock.advance(3_600 + 20);
    let mut total = tokenvault::PurgeReport::default();
    loop {
        let r = store.purge_expired(1).unwrap();
        total.access_removed += r.access_removed;
        total.refresh_removed += r.refresh_removed;
        assert!(store.check_integrity().unwrap().is_clean());
        if !r.more {
            break;
        }
    }
    // Two live access tokens of `a` (the cap), one of `b`, and `b` itself.
    assert_eq!(total.access_removed, 3);
    assert_eq!(total.refresh_removed, 1);
    let report = store.check_integrity().unwrap();
    assert_eq!(report.refresh_tokens, 1);
    assert_eq!(report.access_tokens, 0);
}

#[test]
fn expiry_through_the_injectable_clock() {
    let clock = ManualClock::new(T0);
    let (store, _, uma) = seeded(
        Config::temporary()
            .clock(clock.clone())
            .access_ttl(Duration::from_secs(600)),
    );
    let t = store
        .generate(&uma, GenerateOptions::default().expires_in(1_000))
        .unwrap();
    assert_eq!(t.info.expires_at, Some(T0 + 1_000));
    let g = store.exchange(t.token.expose()).unwrap();
    assert_eq!(g.expires_at, T0 + 600);
    clock.advance(599);
    assert!(store.verify(g.access_token.expose()).is_ok());
    clock.advance(1);
    assert!(matches!(
        store.verify(g.access_token.expose()),
        Err(Error::Expired)
    ));
    // An access token never outlives its refresh token.
    let g2 = store.exchange(t.token.expose()).unwrap();
    assert_eq!(g2.expires_at, T0 + 1_000);
    clock.advance(400);
    assert!(matches!(
        store.exchange(t.token.expose()),
        Err(Error::Expired)
    ));
    assert_eq!(store.list_own(&uma).unwrap()[0].state.as_str(), "expired");
}

#[test]
fn the_cap_evicts_the_oldest_access_tokens() {
    let (store, _, uma) = seeded(Config::temporary().max_access_per_refresh(3));
    let t = store.generate(&uma, Default::default()).unwrap();
    let grants: Vec<_> = (0..5)
        .map(|_| store.exchange(t.token.expose()).unwrap())
        .collect();
    for (i, g) in grants.iter().enumerate() {
        let ok = store.verify(g.access_token.expose()).is_ok();
        assert_eq!(ok, i >= 2, "access token #{i}");
    }
    assert_eq!(store.stats().unwrap().access_tokens, 3);
}

#[test]
fn the_store_key_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("k.db");
    drop(TokenStore::open(&db).unwrap());
    let key_file = dir.path().join("k.db.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // Reopening with the key file works; with another key it is refused.
    drop(TokenStore::open(&db).unwrap());
    let e = Config::new(&db)
        .key(StoreKey::from_bytes([1; 32]))
        .open()
        .unwrap_err();
    assert!(matches!(e, Error::KeyMismatch));
    // A lost key file is a key mismatch, not a silently new key.
    std::fs::remove_file(&key_file).unwrap();
    assert!(matches!(TokenStore::open(&db), Err(Error::KeyMismatch)));
    assert!(!key_file.exists());
    // A store that does not exist is not created unless asked.
    let missing = dir.path().join("missing.db");
    assert!(matches!(
        Config::new(&missing).create_if_missing(false).open(),
        Err(Error::NotFound(_))
    ));
    assert!(!missing.exists());
}

/// A page cache too small for the storage engine is refused at open,
/// before anything is created (the engine itself would panic on it).
#[test]
fn a_cache_too_small_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    for bytes in [0, 1, 255, 4095] {
        let e = Config::new(&path).cache_bytes(bytes).open().unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{bytes}: {e}");
        assert!(e.to_string().contains("cache_bytes"), "{e}");
        assert!(!path.exists());
    }
    let store = Config::new(&path).cache_bytes(4096).open().unwrap();
    store.add_member("a", "o", Role::Owner).unwrap();
}

#[test]
fn bad_arguments_are_refused_cleanly() {
    let store = TokenStore::temporary().unwrap();
    assert!(matches!(
        store.add_member("", "x", Role::User),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        store.add_member("a/b", "x", Role::User),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        store.add_member("a", &"x".repeat(200), Role::User),
        Err(Error::InvalidArgument(_))
    ));
    store.add_member("a", "o", Role::Owner).unwrap();
    assert!(matches!(
        store.add_member("a", "o", Role::User),
        Err(Error::Conflict(_))
    ));
    assert!(matches!(
        store.set_role("a", "o", Role::User),
        Err(Error::Conflict(_))
    ));
    assert!(matches!(
        store.remove_member("a", "o"),
        Err(Error::Conflict(_))
    ));
    assert!(matches!(
        store.remove_member("a", "nobody"),
        Err(Error::NotFound(_))
    ));
    let o = Actor::new("a", "o");
    assert!(matches!(
        store.generate(&o, GenerateOptions::default().label("bad\nlabel")),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        store.generate(&o, GenerateOptions::default().expires_in(0)),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        store.revoke(&o, &"00".repeat(16).parse().unwrap(), None),
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        store.purge_expired(0),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        Config::temporary().prefix("Bad_").open(),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(store.members("a"), vec![("o".to_string(), Role::Owner)]);
    assert!(store.list_own(&o).unwrap().is_empty());
}
