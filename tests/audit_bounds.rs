//! Growth bounds of the management surface: a refused call is audited in a
//! bounded record, an actor's repeated refusals are one event with a
//! count, audit events have a retention, and a member holds a bounded
//! number of live refresh tokens.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use tokenvault::{Actor, AuditEvent, Config, Error, ManualClock, RevokeScope, Role, TokenStore};

const DAY: u64 = 24 * 3600;
const START: u64 = 1_800_000_000;

fn seeded(cfg: Config) -> (TokenStore, Actor, Actor, Actor) {
    let store = cfg.open().unwrap();
    let (olivia, adam, uma) = common::store::seed_acme(&store);
    (store, olivia, adam, uma)
}

fn denied<'a>(events: &'a [AuditEvent], actor: &str, action: &str) -> Vec<&'a AuditEvent> {
    events
        .iter()
        .filter(|e| e.actor == actor && e.action == action && e.outcome.starts_with("denied"))
        .collect()
}

fn all_events(store: &TokenStore, owner: &Actor) -> Vec<AuditEvent> {
    store.audit(owner, 100_000).unwrap()
}

/// 1,500 refused assignments, each to another 16 KB user id (before
/// bounded audit records they grew the store by 34 MB), grow it by less
/// than 1 MiB, and stay in the audit trail: one event counting them all,
/// its target cut to size, also after the store is closed and reopened.
#[test]
fn refusals_with_16_kb_ids_grow_the_store_by_less_than_a_mebibyte() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.db");
    let (store, olivia, adam, _) = seeded(Config::new(&path));
    store.flush().unwrap();
    let before = store.stats().unwrap().disk_bytes;
    for i in 0..1_500 {
        let id = format!("{i:05}{}", "é".repeat(8 * 1024));
        assert_eq!(id.len(), 16 * 1024 + 5);
        let e = store.assign(&adam, &id, Default::default()).unwrap_err();
        assert_eq!(e.kind(), "forbidden", "{e}");
    }
    store.flush().unwrap();
    let after = store.stats().unwrap().disk_bytes;
    let growth = after.saturating_sub(before);
    eprintln!("1,500 refusals with 16 KB ids grew the store by {growth} bytes");
    assert!(growth < 1024 * 1024, "grew by {growth} bytes");

    let check = |store: &TokenStore| {
        let events = all_events(store, &olivia);
        let refused = denied(&events, "adam", "token.assign");
        assert_eq!(refused.len(), 1, "{refused:?}");
        let e = refused[0];
        assert_eq!(e.count, 1_500);
        assert!(e.last_at >= e.at);
        let target = e.target.as_deref().unwrap();
        assert!(target.len() <= 176, "{}", target.len());
        assert!(target.starts_with("00000é"), "the first refusal's target");
        assert!(target.ends_with('…'));
        assert!(e.outcome.len() <= 80);
        assert_eq!(e.outcome, "denied: only the Owner may assign tokens");
        for e in &events {
            let text = e.target.as_deref().unwrap_or("").len() + e.outcome.len();
            assert!(text <= 256, "{e:?}");
        }
    };
    check(&store);
    store.close().unwrap();
    let store = Config::new(&path).open().unwrap();
    check(&store);
    assert!(store.check_integrity().unwrap().is_clean());
}

/// Refusals of one actor for one action and reason within an hour of the
/// first are one event; another reason, another action or another actor
/// is another event; after the hour a new event starts and the old one
/// keeps its count. Counts written by `flush` are there after a reopen
/// that follows no `close`.
#[test]
fn repeated_refusals_are_one_event_with_a_count() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.db");
    let clock = ManualClock::new(START);
    let cfg = || Config::new(&path).clock(clock.clone());
    let (store, olivia, adam, uma) = seeded(cfg());
    for _ in 0..7 {
        store.assign(&adam, "uma", Default::default()).unwrap_err();
        clock.advance(10);
    }
    for _ in 0..3 {
        store.assign(&uma, "adam", Default::default()).unwrap_err();
        store.list_org(&adam).unwrap_err();
    }
    // A different reason for the same action: revoking another's token.
    let t = store.generate(&uma, Default::default()).unwrap();
    store.revoke(&adam, &t.info.id, None).unwrap_err();
    store
        .revoke_all(&adam, RevokeScope::Member("uma".into()), None)
        .unwrap_err();
    store.revoke_all(&adam, RevokeScope::Org, None).unwrap_err();

    let events = all_events(&store, &olivia);
    let a = denied(&events, "adam", "token.assign");
    assert_eq!(a.len(), 1);
    assert_eq!((a[0].count, a[0].last_at - a[0].at), (7, 60));
    let u = denied(&events, "uma", "token.assign");
    assert_eq!((u.len(), u[0].count), (1, 3));
    let l = denied(&events, "adam", "token.list_org");
    assert_eq!((l.len(), l[0].count), (1, 3));
    assert_eq!(denied(&events, "adam", "token.revoke").len(), 1);
    let bulk = denied(&events, "adam", "token.revoke_all");
    assert_eq!(bulk.len(), 2, "two reasons, two events");
    assert!(bulk.iter().all(|e| e.count == 1));
    let ok: Vec<_> = events.iter().filter(|e| e.outcome == "ok").collect();
    assert!(ok.iter().all(|e| e.count == 1 && e.last_at == e.at));

    // An hour after the first refusal, the next one starts a new event.
    clock.advance(3_600);
    store.assign(&adam, "uma", Default::default()).unwrap_err();
    store.assign(&adam, "uma", Default::default()).unwrap_err();
    store.flush().unwrap();
    drop(store);
    let store = cfg().open().unwrap();
    let events = all_events(&store, &olivia);
    let a = denied(&events, "adam", "token.assign");
    let counts: Vec<u64> = a.iter().map(|e| e.count).collect();
    assert_eq!(counts, vec![2, 7], "newest first");
    // Numbering goes on above every stored event.
    store.assign(&adam, "uma", Default::default()).unwrap_err();
    let newest = &all_events(&store, &olivia)[0];
    assert_eq!((newest.action.as_str(), newest.count), ("token.assign", 1));
    assert!(newest.seq > events[0].seq);
}

/// Every refusal is counted, none twice, when actors are refused from
/// several threads at once.
#[test]
fn concurrent_refusals_are_all_counted() {
    let (store, olivia, adam, uma) = seeded(Config::temporary());
    let threads = 4;
    let each = 250;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (store, barrier) = (store.clone(), barrier.clone());
            let actor = if t % 2 == 0 {
                adam.clone()
            } else {
                uma.clone()
            };
            std::thread::spawn(move || {
                barrier.wait();
                for i in 0..each {
                    let to = format!("someone-{t}-{i}");
                    assert!(matches!(
                        store.assign(&actor, &to, Default::default()),
                        Err(Error::Forbidden(_))
                    ));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let events = all_events(&store, &olivia);
    for who in ["adam", "uma"] {
        let total: u64 = denied(&events, who, "token.assign")
            .iter()
            .map(|e| e.count)
            .sum();
        assert_eq!(total, 2 * each, "{who}");
    }
}

/// Audit events older than the audit retention go with `purge_expired`,
/// in bounded batches, oldest first; newer ones stay; the default is 400
/// days.
#[test]
fn audit_events_expire_after_the_audit_retention() {
    let clock = ManualClock::new(START);
    let (store, olivia, _, uma) = seeded(
        Config::temporary()
            .clock(clock.clone())
            .audit_retention(Duration::from_secs(100 * DAY)),
    );
    for u in ["a1", "a2", "a3", "a4"] {
        store.add_member("acme", u, Role::User).unwrap();
    }
    store.add_member("beta", "bea", Role::Owner).unwrap();
    store.add_member("beta", "bo", Role::User).unwrap();
    clock.advance(60 * DAY);
    store.add_member("acme", "newer", Role::User).unwrap();
    store.add_member("beta", "newer", Role::User).unwrap();
    store.list_org(&uma).unwrap_err();
    clock.advance(41 * DAY);

    // Bounded batches: one event each, `more` until the old ones are gone.
    let mut removed = Vec::new();
    loop {
        let r = store.purge_expired(1).unwrap();
        assert!(r.events_removed <= 1);
        removed.push(r.events_removed);
        if !r.more {
            break;
        }
        assert!(removed.len() < 50, "purge makes no progress");
    }
    // acme's seven and beta's two from the start.
    assert_eq!(removed.iter().sum::<u64>(), 9, "{removed:?}");
    let acme = all_events(&store, &olivia);
    let actions: Vec<(&str, Option<&str>)> = acme
        .iter()
        .map(|e| (e.action.as_str(), e.target.as_deref()))
        .collect();
    assert_eq!(
        actions,
        vec![
            ("token.list_org", None),
            ("member.add", Some("newer as user"))
        ]
    );
    let beta = all_events(&store, &Actor::new("beta", "bea"));
    assert_eq!(beta.len(), 1);
    assert_eq!(store.purge_expired(1_000).unwrap().events_removed, 0);

    // The default: 400 days.
    let clock = ManualClock::new(START);
    let (store, olivia, _, _) = seeded(Config::temporary().clock(clock.clone()));
    clock.advance(399 * DAY);
    assert_eq!(store.purge_expired(1_000).unwrap().events_removed, 0);
    assert_eq!(all_events(&store, &olivia).len(), 3);
    clock.advance(2 * DAY);
    assert_eq!(store.purge_expired(1_000).unwrap().events_removed, 3);
    assert!(all_events(&store, &olivia).is_empty());
}

/// A coalesced event's age is its last refusal's: it stays while that is
/// within the retention, with its count.
#[test]
fn a_coalesced_event_lasts_from_its_last_refusal() {
    let clock = ManualClock::new(START);
    let (store, olivia, adam, _) = seeded(
        Config::temporary()
            .clock(clock.clone())
            .audit_retention(Duration::from_secs(1_800)),
    );
    store.list_org(&adam).unwrap_err();
    clock.advance(1_000);
    store.list_org(&adam).unwrap_err();
    clock.advance(1_000);
    // The member.add events (at the start) go; the refusal, last 1,000 s
    // ago, stays.
    assert_eq!(store.purge_expired(100).unwrap().events_removed, 3);
    let events = all_events(&store, &olivia);
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].count, events[0].last_at), (2, START + 1_000));
    // Kept until exactly the retention has passed since the last refusal.
    clock.advance(799);
    assert_eq!(store.purge_expired(100).unwrap().events_removed, 0);
    clock.advance(1);
    assert_eq!(store.purge_expired(100).unwrap().events_removed, 1);
    assert!(all_events(&store, &olivia).is_empty());
}

/// 200 generates past the cap are refused with `limit` and change
/// nothing: the list, the counts, the audit trail and the size on disk
/// are as before; an assignment counts against its assignee.
#[test]
fn generates_past_the_cap_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (store, olivia, _, uma) = seeded(Config::new(dir.path().join("tokens.db")));
    for _ in 0..99 {
        store.generate(&uma, Default::default()).unwrap();
    }
    store.assign(&olivia, "uma", Default::default()).unwrap();
    store.flush().unwrap();
    let list = store.list_own(&uma).unwrap();
    assert_eq!(list.len(), 100);
    let stats = store.stats().unwrap();
    let events = all_events(&store, &olivia);
    for i in 0..200 {
        let e = if i % 4 == 0 {
            store.assign(&olivia, "uma", Default::default())
        } else {
            store.generate(&uma, Default::default())
        }
        .unwrap_err();
        assert!(matches!(e, Error::Limit(_)), "{e}");
        assert_eq!(e.kind(), "limit");
    }
    store.flush().unwrap();
    assert_eq!(store.list_own(&uma).unwrap(), list);
    assert_eq!(store.stats().unwrap(), stats);
    assert_eq!(all_events(&store, &olivia), events);
    // The Owner's own tokens are not uma's.
    store.generate(&olivia, Default::default()).unwrap();
    // A revoked token no longer counts.
    store.revoke(&uma, &list[0].id, None).unwrap();
    store.generate(&uma, Default::default()).unwrap();
    assert!(matches!(
        store.generate(&uma, Default::default()),
        Err(Error::Limit(_))
    ));
    assert!(store.check_integrity().unwrap().is_clean());
}

/// Only live tokens count: expired ones, revoked ones, and those a cutoff
/// or a removal revoked do not; the cap is a setting; zero is refused.
#[test]
fn only_live_tokens_count_against_the_cap() {
    let clock = ManualClock::new(START);
    let (store, olivia, _, uma) = seeded(
        Config::temporary()
            .clock(clock.clone())
            .max_live_tokens_per_member(3),
    );
    let short = tokenvault::GenerateOptions::default().expires_in(10);
    for _ in 0..3 {
        store.generate(&uma, short.clone()).unwrap();
    }
    assert_eq!(
        store.generate(&uma, Default::default()).unwrap_err().kind(),
        "limit"
    );
    clock.advance(10);
    for _ in 0..3 {
        store.generate(&uma, Default::default()).unwrap();
    }
    assert_eq!(
        store
            .assign(&olivia, "uma", Default::default())
            .unwrap_err()
            .kind(),
        "limit"
    );
    clock.advance(1);
    store
        .revoke_all(&olivia, RevokeScope::Member("uma".into()), Some(START + 11))
        .unwrap();
    store.assign(&olivia, "uma", Default::default()).unwrap();
    store.generate(&uma, Default::default()).unwrap();
    store.generate(&uma, Default::default()).unwrap();
    assert_eq!(
        store.generate(&uma, Default::default()).unwrap_err().kind(),
        "limit"
    );
    store.remove_member("acme", "uma").unwrap();
    store.add_member("acme", "uma", Role::User).unwrap();
    store.generate(&uma, Default::default()).unwrap();
    assert_eq!(store.list_own(&uma).unwrap().len(), 10);

    assert!(matches!(
        Config::temporary().max_live_tokens_per_member(0).open(),
        Err(Error::InvalidArgument(_))
    ));
}

/// Memory counts a member's stored tokens and the backend lists them once
/// the count reaches the cap: the count is rebuilt by a reopen (so the cap
/// still holds), taken down by a purge (so the member may issue again),
/// and kept across a removal and a return.
#[test]
fn the_cap_holds_across_a_reopen_a_purge_and_a_return() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.db");
    let clock = ManualClock::new(START);
    let cfg = || {
        Config::new(&path)
            .clock(clock.clone())
            .max_live_tokens_per_member(3)
            .retention(Duration::from_secs(60))
    };
    let (store, olivia, _, uma) = seeded(cfg());
    for _ in 0..3 {
        store.generate(&uma, Default::default()).unwrap();
    }
    store.close().unwrap();
    let store = cfg().open().unwrap();
    let refused = |store: &TokenStore| {
        store
            .generate(&uma, Default::default())
            .err()
            .map(|e| e.kind())
    };
    assert_eq!(refused(&store), Some("limit"), "counted again at open");
    // Removed and back: the same three tokens, revoked by the removal.
    store.remove_member("acme", "uma").unwrap();
    store.add_member("acme", "uma", Role::User).unwrap();
    assert_eq!(store.list_own(&uma).unwrap().len(), 3);
    for _ in 0..3 {
        store.generate(&uma, Default::default()).unwrap();
    }
    assert_eq!(refused(&store), Some("limit"));
    // The three revoked ones purged: three stored, all live.
    clock.advance(120);
    let report = store.purge_expired(1_000).unwrap();
    assert_eq!(report.refresh_removed, 3);
    assert_eq!(store.list_own(&uma).unwrap().len(), 3);
    assert_eq!(refused(&store), Some("limit"));
    store
        .revoke_all(&olivia, RevokeScope::Member("uma".into()), None)
        .unwrap();
    clock.advance(120);
    assert_eq!(store.purge_expired(1_000).unwrap().refresh_removed, 3);
    assert!(store.list_own(&uma).unwrap().is_empty());
    store.close().unwrap();
    let store = cfg().open().unwrap();
    for _ in 0..3 {
        store.generate(&uma, Default::default()).unwrap();
    }
    assert_eq!(refused(&store), Some("limit"));
}

/// Threads issuing to one member at once never take them past the cap:
/// exactly the cap's worth succeed.
#[test]
fn concurrent_issues_for_one_member_stop_exactly_at_the_cap() {
    for round in 0..5 {
        let (store, olivia, _, uma) = seeded(Config::temporary().max_live_tokens_per_member(40));
        let threads = 4;
        let barrier = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (store, barrier) = (store.clone(), barrier.clone());
                let (olivia, uma) = (olivia.clone(), uma.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let mut ids = Vec::new();
                    for _ in 0..20 {
                        let r = if t == 0 {
                            store.assign(&olivia, "uma", Default::default())
                        } else {
                            store.generate(&uma, Default::default())
                        };
                        match r {
                            Ok(t) => ids.push(t.info.id),
                            Err(e) => assert_eq!(e.kind(), "limit", "{e}"),
                        }
                    }
                    ids
                })
            })
            .collect();
        let ids: Vec<_> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        assert_eq!(ids.len(), 40, "round {round}");
        let listed: HashSet<_> = store
            .list_own(&uma)
            .unwrap()
            .into_iter()
            .map(|t| t.id)
            .collect();
        assert_eq!(listed, ids.into_iter().collect::<HashSet<_>>());
    }
}

/// The same through HTTP: 1,500 `POST /v3/refresh-token` by an Admin with
/// a 16,000-byte `user_id` are each answered 403 and grow the store by
/// less than 1 MiB.
#[cfg(feature = "http")]
#[test]
fn refused_http_assignments_with_16_kb_ids_grow_the_store_by_less_than_a_mebibyte() {
    use tower::ServiceExt;
    let dir = tempfile::tempdir().unwrap();
    let (store, olivia, adam, _) = seeded(Config::new(dir.path().join("tokens.db")));
    let refresh = store.generate(&adam, Default::default()).unwrap();
    let bearer = store.exchange(refresh.token.expose()).unwrap().access_token;
    let app = tokenvault::http::router(store.clone());
    store.flush().unwrap();
    let before = store.stats().unwrap().disk_bytes;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for i in 0..1_500 {
        let body = format!(r#"{{"user_id":"{i:05}{}"}}"#, "u".repeat(15_995));
        let req = axum::http::Request::post("/v3/refresh-token")
            .header("authorization", format!("Bearer {}", bearer.expose()))
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body))
            .unwrap();
        let resp = rt.block_on(app.clone().oneshot(req)).unwrap();
        assert_eq!(resp.status(), 403, "request {i}");
    }
    store.flush().unwrap();
    let growth = store.stats().unwrap().disk_bytes.saturating_sub(before);
    eprintln!("1,500 refused HTTP assignments grew the store by {growth} bytes");
    assert!(growth < 1024 * 1024, "grew by {growth} bytes");
    let events = all_events(&store, &olivia);
    let refused = denied(&events, "adam", "token.assign");
    assert_eq!(refused.iter().map(|e| e.count).sum::<u64>(), 1_500);
    assert_eq!(refused.len(), 1);
}

/// Through HTTP, an issue past the member cap is 429 without
/// `Retry-After` (waiting does not help; revoking does), and changes
/// nothing.
#[cfg(feature = "http")]
#[test]
fn http_issues_past_the_cap_are_429_without_retry_after() {
    use tower::ServiceExt;
    let (store, _, adam, _) = seeded(Config::temporary().max_live_tokens_per_member(2));
    let refresh = store.generate(&adam, Default::default()).unwrap();
    let bearer = store.exchange(refresh.token.expose()).unwrap().access_token;
    let app = tokenvault::http::router(store.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let post = || {
        let req = axum::http::Request::post("/v3/refresh-token")
            .header("authorization", format!("Bearer {}", bearer.expose()))
            .header("content-type", "application/json")
            .body(axum::body::Body::from(r#"{"user_id":"adam"}"#))
            .unwrap();
        rt.block_on(app.clone().oneshot(req)).unwrap()
    };
    assert_eq!(post().status(), 201);
    let listed = store.list_own(&adam).unwrap();
    assert_eq!(listed.len(), 2);
    for _ in 0..5 {
        let resp = post();
        assert_eq!(resp.status(), 429);
        assert!(resp.headers().get("retry-after").is_none());
    }
    assert_eq!(store.list_own(&adam).unwrap(), listed);
}

/// A decoy cannot blind the audit: an Admin's refused call naming a
/// non-member, then 30 refused assignments to the Owner and 1,530 to
/// non-members (1,500 of them with 16 KB ids). The Owner's `tokenvault
/// audit --json` shows an event whose target is the Owner with count 30,
/// the Admin's refusals sum to 1,561, and the store grows by less than
/// 1 MiB.
#[cfg(feature = "cli")]
#[test]
fn a_decoy_refusal_does_not_hide_refusals_naming_a_member() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.db");
    let (store, _olivia, adam, _) = seeded(Config::new(&path));
    store.flush().unwrap();
    let before = store.stats().unwrap().disk_bytes;
    let refused = |to: &str| {
        let e = store.assign(&adam, to, Default::default()).unwrap_err();
        assert_eq!(e.kind(), "forbidden", "{e}");
    };
    refused("decoy");
    for _ in 0..30 {
        refused("olivia");
    }
    for i in 0..1_530 {
        if i < 1_500 {
            refused(&format!("{i:05}{}", "é".repeat(8 * 1024)));
        } else {
            refused(&format!("nobody-{i}"));
        }
    }
    store.flush().unwrap();
    let growth = store.stats().unwrap().disk_bytes.saturating_sub(before);
    eprintln!("1,561 refusals (1,500 with 16 KB ids) grew the store by {growth} bytes");
    assert!(growth < 1024 * 1024, "grew by {growth} bytes");
    store.close().unwrap();

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tokenvault"))
        .env_remove("TOKENVAULT_DB")
        .arg("--db")
        .arg(&path)
        .args(["audit", "--as", "acme/olivia", "--json", "--limit", "1000"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let events = doc["events"].as_array().expect("events");
    let adams: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| {
            e["actor"] == "adam"
                && e["action"] == "token.assign"
                && e["outcome"]
                    .as_str()
                    .is_some_and(|o| o.starts_with("denied"))
        })
        .collect();
    let owner: Vec<_> = adams.iter().filter(|e| e["target"] == "olivia").collect();
    assert_eq!(owner.len(), 1, "{adams:?}");
    assert_eq!(owner[0]["count"], 30, "{adams:?}");
    let total: u64 = adams.iter().map(|e| e["count"].as_u64().unwrap()).sum();
    assert_eq!(total, 1_561, "{adams:?}");
    // No event counting a refusal that named the Owner shows another target.
    assert!(
        adams
            .iter()
            .filter(|e| e["target"] != "olivia")
            .all(|e| e["count"].as_u64() == Some(1_531)),
        "{adams:?}"
    );
}

/// Refusals naming existing members or tokens have an event per target;
/// those naming nothing known still coalesce into one.
#[test]
fn refusals_naming_members_or_tokens_are_counted_per_target() {
    let (store, olivia, adam, uma) = seeded(Config::temporary());
    let uma_token = store.generate(&uma, Default::default()).unwrap().info.id;
    for _ in 0..3 {
        assert!(store.assign(&adam, "uma", Default::default()).is_err());
        assert!(store.assign(&adam, "olivia", Default::default()).is_err());
        assert!(store.assign(&adam, "ghost", Default::default()).is_err());
        assert!(store.assign(&adam, "phantom", Default::default()).is_err());
        assert!(store.revoke(&adam, &uma_token, None).is_err());
        assert!(store
            .revoke_all(&adam, RevokeScope::Member("uma".into()), None)
            .is_err());
    }
    let events = all_events(&store, &olivia);
    let count_of = |action: &str, target: &str| -> Vec<u64> {
        denied(&events, "adam", action)
            .iter()
            .filter(|e| e.target.as_deref() == Some(target))
            .map(|e| e.count)
            .collect()
    };
    assert_eq!(count_of("token.assign", "uma"), vec![3]);
    assert_eq!(count_of("token.assign", "olivia"), vec![3]);
    // The unknown names: one event, under the first of them.
    assert_eq!(count_of("token.assign", "ghost"), vec![6]);
    assert!(count_of("token.assign", "phantom").is_empty());
    assert_eq!(count_of("token.revoke", &uma_token.to_string()), vec![3]);
    assert_eq!(count_of("token.revoke_all", "uma"), vec![3]);
}
