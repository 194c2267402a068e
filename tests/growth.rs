//! Growth control: the opt-in janitor purges what can no longer verify, and
//! stops with its handle or with the store.

use std::time::{Duration, Instant};

use tokenvault::{Actor, Config, ManualClock, Role};

#[test]
fn janitor_purges_expired_access_tokens() {
    let clock = ManualClock::new(1_800_000_000);
    let store = Config::temporary().clock(clock.clone()).open().unwrap();
    store.add_member("acme", "ann", Role::Owner).unwrap();
    let t = store
        .generate(&Actor::new("acme", "ann"), Default::default())
        .unwrap();
    for _ in 0..5 {
        store.exchange(t.token.expose()).unwrap();
    }
    assert_eq!(store.stats().unwrap().access_tokens, 5);
    let janitor = store.spawn_janitor(Duration::from_millis(10), 2).unwrap();
    clock.advance(3_601);
    let deadline = Instant::now() + Duration::from_secs(20);
    while store.stats().unwrap().access_tokens > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(store.stats().unwrap().access_tokens, 0);
    janitor.stop();
    // The refresh token itself is still live.
    assert!(store.exchange(t.token.expose()).is_ok());
    assert!(store.check_integrity().unwrap().is_clean());
}

#[test]
fn janitor_refuses_zero_settings() {
    let store = tokenvault::TokenStore::temporary().unwrap();
    assert!(store.spawn_janitor(Duration::ZERO, 10).is_err());
    assert!(store.spawn_janitor(Duration::from_secs(1), 0).is_err());
}
