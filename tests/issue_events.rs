//! The audit event of `generate` and `assign` is stored inside the refresh
//! record it created (one write per issued token), yet the audit trail reads
//! as if each event were stored on its own: after a reopen, after the record
//! is purged, and with sequence numbers that keep increasing.

mod common;

use std::path::Path;
use std::time::Duration;

use tokenvault::{Actor, AuditEvent, GenerateOptions, ManualClock, Role};

const T0: u64 = 1_790_000_000;

fn open(path: &Path, clock: &ManualClock) -> tokenvault::TokenStore {
    common::store::keyed(path, 9)
        .clock(clock.clone())
        .retention(Duration::from_secs(10))
        .open()
        .unwrap()
}

/// Keys in one tree, read with sled itself (which may hold its file lock a
/// moment after the store is dropped).
fn keys_in(path: &Path, tree: &str) -> usize {
    common::raw_sled(path).open_tree(tree).unwrap().len()
}

fn strictly_newest_first(events: &[AuditEvent]) {
    for w in events.windows(2) {
        assert!(w[0].seq > w[1].seq, "{:?} then {:?}", w[0].seq, w[1].seq);
    }
}

#[test]
fn issue_events_survive_reopen_and_purge() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let clock = ManualClock::new(T0);
    let olivia = Actor::new("acme", "olivia");
    let uma = Actor::new("acme", "uma");
    let (short_id, kept_id, before) = {
        let store = open(&path, &clock);
        store.add_member("acme", "olivia", Role::Owner).unwrap();
        store.add_member("acme", "uma", Role::User).unwrap();
        clock.advance(1);
        let short = store
            .generate(
                &uma,
                GenerateOptions {
                    expires_in: Some(5),
                    ..Default::default()
                },
            )
            .unwrap();
        clock.advance(1);
        let kept = store.assign(&olivia, "uma", Default::default()).unwrap();
        let events = store.audit(&olivia, 100).unwrap();
        strictly_newest_first(&events);
        let issued: Vec<_> = events
            .iter()
            .filter(|e| e.action.starts_with("token."))
            .collect();
        assert_eq!(issued.len(), 2, "{events:?}");
        assert_eq!(issued[0].action, "token.assign");
        assert_eq!(issued[0].actor, "olivia");
        assert_eq!(issued[0].at, T0 + 2);
        assert_eq!(
            issued[0].target.as_deref(),
            Some(format!("{} for uma", kept.info.id).as_str())
        );
        assert_eq!(issued[1].action, "token.generate");
        assert_eq!(issued[1].actor, "uma");
        assert_eq!(issued[1].at, T0 + 1);
        assert_eq!(issued[1].outcome, "ok");
        assert_eq!(
            issued[1].target.as_deref(),
            Some(format!("{} for uma", short.info.id).as_str())
        );
        store.flush().unwrap();
        (short.info.id, kept.info.id, events)
    };
    // Issuing wrote no key of its own in the events tree: only the two
    // membership events are there.
    assert_eq!(keys_in(&path, "events"), 2);
    assert_eq!(keys_in(&path, "refresh"), 2);

    let store = open(&path, &clock);
    assert_eq!(store.audit(&olivia, 100).unwrap(), before);
    assert_eq!(store.check_integrity().unwrap().events, 4);
    // A newer event gets a newer number than the newest issue event.
    store.revoke(&olivia, &kept_id, None).unwrap();
    let after = store.audit(&olivia, 100).unwrap();
    strictly_newest_first(&after);
    assert_eq!(after[0].action, "token.revoke");
    assert_eq!(&after[1..], &before[..]);
    // `limit` takes the newest across both kinds of storage.
    assert_eq!(store.audit(&olivia, 2).unwrap(), &after[..2]);

    // Purging the expired token moves its issue event to the events tree.
    clock.advance(100);
    let report = store.purge_expired(100).unwrap();
    assert!(report.refresh_removed >= 1, "{report:?}");
    let listed: Vec<_> = store
        .list_own(&uma)
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert!(!listed.contains(&short_id));
    let purged = store.audit(&olivia, 100).unwrap();
    assert!(
        purged.iter().any(|e| e.action == "token.generate"
            && e.target.as_deref() == Some(&*format!("{short_id} for uma"))),
        "{purged:?}"
    );
    assert!(purged.ends_with(&before[1..]), "{purged:?}");
    assert!(store.check_integrity().unwrap().is_clean());
    store.flush().unwrap();
    drop(store);

    // And numbering goes on above everything stored, across a reopen.
    let store = open(&path, &clock);
    assert_eq!(store.audit(&olivia, 100).unwrap(), purged);
    store.generate(&uma, Default::default()).unwrap();
    let last = store.audit(&olivia, 100).unwrap();
    strictly_newest_first(&last);
    assert_eq!(last[0].action, "token.generate");
    assert!(last[0].seq > purged[0].seq);
}
