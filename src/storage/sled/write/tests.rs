//! The write path's own tests: batches against what single changes write, slots, events kept in records.

use super::*;
use crate::codec::{IssueEvent, RefreshRecord};
use crate::policy::Role;

fn record(n: u8) -> RefreshRecord {
    RefreshRecord {
        id: [n; 16],
        org: if n == 8 { "other" } else { "acme" }.into(),
        user: if n.is_multiple_of(2) { "ann" } else { "bob" }.into(),
        role_at_issue: Role::User,
        scopes: vec!["user-read".into()],
        label: n.is_multiple_of(3).then(|| format!("label {n}")),
        created_at: 1_000 + u64::from(n),
        created_by: "ann".into(),
        expires_at: n.is_multiple_of(4).then_some(9_000),
        state: if n == 3 {
            StoredState::Revoked {
                at: 500,
                by: "ann".into(),
                reason: None,
            }
        } else {
            StoredState::Active
        },
        verifier: [n.wrapping_mul(7); 32],
        life: Default::default(),
        issue: (!n.is_multiple_of(2)).then_some(IssueEvent {
            seq: u64::from(n),
            assigned: n == 5,
        }),
    }
}

fn refresh_tree(b: &SledBackend) -> Vec<(Vec<u8>, Vec<u8>)> {
    b.refresh
        .iter()
        .map(|kv| {
            let (k, v) = kv.unwrap();
            (k.to_vec(), v.to_vec())
        })
        .collect()
}

/// A bulk revocation writes what one revocation per token would, byte
/// for byte, and counts only the tokens it changed.
#[test]
fn revoke_many_writes_what_one_by_one_would() {
    let one_by_one = SledBackend::open(None, 1 << 20).unwrap();
    let bulk = SledBackend::open(None, 1 << 20).unwrap();
    for b in [&one_by_one, &bulk] {
        for n in 1..=8 {
            b.write(&[Change::IssueRefresh(record(n))]).unwrap();
        }
    }
    // Token 3 is revoked already; 8 is another organization's.
    let held: Vec<[u8; 16]> = (1..=7).map(|n| [n; 16]).collect();
    let reason = Some("bulk revocation".to_string());
    let each: Vec<Change> = held
        .iter()
        .map(|id| Change::RevokeRefresh {
            id: *id,
            at: 2_000,
            by: "ann".into(),
            reason: reason.clone(),
        })
        .collect();
    assert_eq!(one_by_one.write(&each).unwrap(), Committed::default());
    let done = bulk
        .write(&[Change::RevokeMany {
            org: "acme".into(),
            user: None,
            before: u64::MAX,
            at: 2_000,
            by: "ann".into(),
            reason,
        }])
        .unwrap();
    let want: Vec<[u8; 16]> = [1, 2, 4, 5, 6, 7].iter().map(|n| [*n; 16]).collect();
    assert_eq!(done.revoked, want);
    assert_eq!(refresh_tree(&bulk), refresh_tree(&one_by_one));
    let untouched = decode_refresh(&bulk.refresh.get([8u8; 16]).unwrap().unwrap()).unwrap();
    assert_eq!(untouched.state, StoredState::Active);

    // A token the owner table names and the disk lacks is skipped and
    // not counted (as a listing of the member's tokens would skip it);
    // the others are revoked.
    bulk.owners.issued("other", "ann", [42; 16], 0);
    let done = bulk
        .write(&[Change::RevokeMany {
            org: "other".into(),
            user: None,
            before: u64::MAX,
            at: 3_000,
            by: "ann".into(),
            reason: None,
        }])
        .unwrap();
    assert_eq!(done.revoked, vec![[8; 16]]);
    assert!(bulk.refresh.get([42u8; 16]).unwrap().is_none());
    let revoked = decode_refresh(&bulk.refresh.get([8u8; 16]).unwrap().unwrap()).unwrap();
    assert!(
        matches!(revoked.state, StoredState::Revoked { at: 3_000, .. }),
        "{:?}",
        revoked.state
    );
    // The terms are checked: a token of another member, or created at
    // or after the cutoff, stays active.
    bulk.write(&[
        Change::IssueRefresh(record(10)),
        Change::IssueRefresh(record(11)),
    ])
    .unwrap();
    let done = bulk
        .write(&[Change::RevokeMany {
            org: "acme".into(),
            user: Some("ann".into()),
            before: 1_010,
            at: 3_500,
            by: "ann".into(),
            reason: None,
        }])
        .unwrap();
    // 10 is ann's but created at 1_010; 11 is bob's.
    assert_eq!(done.revoked, Vec::<[u8; 16]>::new());
    let done = bulk
        .write(&[Change::RevokeMany {
            org: "acme".into(),
            user: Some("ann".into()),
            before: 1_011,
            at: 3_500,
            by: "ann".into(),
            reason: None,
        }])
        .unwrap();
    assert_eq!(done.revoked, vec![[10; 16]]);
    // A single revocation of a token the disk lacks is corruption, and
    // nothing is written (not even the active token 9 revoked beside
    // it).
    bulk.write(&[Change::IssueRefresh(record(9))]).unwrap();
    let before = refresh_tree(&bulk);
    let err = bulk
        .write(&[
            Change::RevokeRefresh {
                id: [9; 16],
                at: 4_000,
                by: "ann".into(),
                reason: None,
            },
            Change::RevokeRefresh {
                id: [42; 16],
                at: 4_000,
                by: "ann".into(),
                reason: None,
            },
        ])
        .unwrap_err();
    assert!(matches!(err, Error::Corrupt(_)), "{err:?}");
    assert_eq!(refresh_tree(&bulk), before);
}

fn access(id: u8, family: u8) -> AccessRecord {
    AccessRecord {
        id: [id; 16],
        refresh_id: [family; 16],
        issued_at: u64::from(id),
        expires_at: 10_000,
        revoked: false,
        verifier: [id; 32],
        scopes: None,
    }
}

/// The access tree as (slot, access id, revoked) of family `family`.
fn stored(b: &SledBackend, family: u8) -> Vec<(u32, u8, bool)> {
    b.access
        .scan_prefix([family; 16])
        .map(|kv| {
            let (k, v) = kv.unwrap();
            let a = decode_access(&v).unwrap();
            (slot_of(&k).unwrap(), a.id[0], a.revoked)
        })
        .collect()
}

/// The backend finds each access record's slot itself: a new record
/// takes a free slot, an eviction's new record the evicted one's (one
/// insert), a revocation and a deletion find the record by id, and a
/// failed write changes no slot.
#[test]
fn access_changes_name_records_by_id_and_sled_keeps_the_slots() {
    let b = SledBackend::open(None, 1 << 20).unwrap();
    b.write(&[Change::IssueRefresh(record(1))]).unwrap();
    for n in 10..13 {
        b.write(&[Change::PutAccess(access(n, 1))]).unwrap();
    }
    assert_eq!(
        stored(&b, 1),
        vec![(0, 10, false), (1, 11, false), (2, 12, false)]
    );
    // Records past slot 0: the family's slots are kept, as the tree has
    // them.
    assert_eq!(
        b.slots.kept(&[1; 16]),
        Some(slots::read(&b.access, &[1; 16]).unwrap())
    );
    // Past the cap: the oldest goes, the new record takes its key.
    b.write(&[
        Change::DeleteAccess {
            refresh_id: [1; 16],
            id: [10; 16],
        },
        Change::PutAccess(access(13, 1)),
    ])
    .unwrap();
    assert_eq!(
        stored(&b, 1),
        vec![(0, 13, false), (1, 11, false), (2, 12, false)]
    );
    b.write(&[Change::RevokeAccess {
        refresh_id: [1; 16],
        id: [12; 16],
    }])
    .unwrap();
    // A purge deletes by id; the freed slot is the next one taken.
    b.write(&[Change::DeleteAccess {
        refresh_id: [1; 16],
        id: [11; 16],
    }])
    .unwrap();
    assert_eq!(stored(&b, 1), vec![(0, 13, false), (2, 12, true)]);
    b.write(&[Change::PutAccess(access(14, 1))]).unwrap();
    assert_eq!(
        stored(&b, 1),
        vec![(0, 13, false), (1, 14, false), (2, 12, true)]
    );
    // Revoking or deleting what is not stored writes nothing.
    b.write(&[
        Change::RevokeAccess {
            refresh_id: [1; 16],
            id: [99; 16],
        },
        Change::DeleteAccess {
            refresh_id: [1; 16],
            id: [98; 16],
        },
    ])
    .unwrap();
    assert_eq!(stored(&b, 1).len(), 3);
    // A batch that fails (a label for a token the disk lacks) leaves
    // the slots as they were: the next record takes slot 3.
    let err = b
        .write(&[
            Change::PutAccess(access(15, 1)),
            Change::SetLabel {
                id: [42; 16],
                label: None,
            },
        ])
        .unwrap_err();
    assert!(matches!(err, Error::Corrupt(_)), "{err:?}");
    assert_eq!(stored(&b, 1).len(), 3);
    b.write(&[Change::PutAccess(access(16, 1))]).unwrap();
    assert_eq!(stored(&b, 1).last(), Some(&(3, 16, false)));
    // Deleting the family forgets its slots.
    let mut purge: Vec<Change> = [13u8, 14, 12, 16]
        .iter()
        .map(|n| Change::DeleteAccess {
            refresh_id: [1; 16],
            id: [*n; 16],
        })
        .collect();
    purge.push(Change::DeleteRefresh {
        id: [1; 16],
        org: "acme".into(),
        user: "bob".into(),
    });
    b.write(&purge).unwrap();
    assert!(stored(&b, 1).is_empty());
    assert_eq!(
        slots::read(&b.access, &[1; 16]).unwrap(),
        slots::Family::Empty
    );
    assert_eq!(b.slots.kept(&[1; 16]), None);
    // A family whose one record sits in slot 0 is not kept: its slots are
    // read back from the tree.
    b.write(&[Change::IssueRefresh(record(3))]).unwrap();
    b.write(&[Change::PutAccess(access(20, 3))]).unwrap();
    b.write(&[
        Change::DeleteAccess {
            refresh_id: [3; 16],
            id: [20; 16],
        },
        Change::PutAccess(access(21, 3)),
    ])
    .unwrap();
    assert_eq!(stored(&b, 3), vec![(0, 21, false)]);
    assert_eq!(b.slots.kept(&[3; 16]), None);
    // A second record goes past slot 0; once the first is gone, only slot
    // 1 is taken: kept still. A failed batch changes nothing kept.
    b.write(&[Change::PutAccess(access(22, 3))]).unwrap();
    assert!(b.slots.kept(&[3; 16]).is_some());
    b.write(&[Change::DeleteAccess {
        refresh_id: [3; 16],
        id: [21; 16],
    }])
    .unwrap();
    let kept = b.slots.kept(&[3; 16]);
    assert_eq!(kept, Some(slots::read(&b.access, &[3; 16]).unwrap()));
    b.write(&[
        Change::PutAccess(access(23, 3)),
        Change::SetLabel {
            id: [42; 16],
            label: None,
        },
    ])
    .unwrap_err();
    assert_eq!(b.slots.kept(&[3; 16]), kept);
    assert_eq!(stored(&b, 3), vec![(1, 22, false)]);
}

/// The store commits a new token and its issue event as two changes;
/// sled keeps the event inside the record (one insert), lists it in the
/// audit trail from there, and writes an event that does not match the
/// record to the events tree.
#[test]
fn sled_keeps_the_issue_event_inside_the_record_itself() {
    let b = SledBackend::open(None, 1 << 20).unwrap();
    let mut r = record(2);
    r.issue = None;
    let event = |r: &RefreshRecord, seq: u64| EventRecord {
        seq,
        at: r.created_at,
        org: r.org.clone(),
        actor: r.created_by.clone(),
        action: "token.generate".into(),
        target: Some(issue_target(&r.id, &r.user)),
        outcome: "ok".into(),
        count: 1,
        last_at: r.created_at,
    };
    let e = event(&r, 5);
    b.write(&[Change::IssueRefresh(r.clone()), Change::Event(e.clone())])
        .unwrap();
    let stored = decode_refresh(&b.refresh.get([2u8; 16]).unwrap().unwrap()).unwrap();
    assert_eq!(
        stored.issue,
        Some(IssueEvent {
            seq: 5,
            assigned: false
        })
    );
    assert_eq!(b.events.len(), 0, "carried, not written beside it");
    assert_eq!(b.events("acme", u64::MAX, 10).unwrap(), vec![e.clone()]);
    assert_eq!(b.list_refresh("acme", Some("ann")).unwrap().len(), 1);
    // An event that says something else is stored on its own, in a
    // batch (here with a second token) as alone.
    let mut r4 = record(4);
    r4.issue = None;
    let mut other = event(&r4, 6);
    other.outcome = "ok, and more".into();
    b.write(&[Change::IssueRefresh(r4), Change::Event(other.clone())])
        .unwrap();
    let stored = decode_refresh(&b.refresh.get([4u8; 16]).unwrap().unwrap()).unwrap();
    assert_eq!(stored.issue, None);
    assert_eq!(b.events.len(), 1);
    let mut r6 = record(6);
    r6.issue = None;
    let e6 = event(&r6, 7);
    b.write(&[
        Change::IssueRefresh(r6),
        Change::Event(e6.clone()),
        Change::PutLastRefresh {
            id: [2; 16],
            at: 9,
            client: None,
        },
    ])
    .unwrap();
    assert_eq!(
        b.events("acme", u64::MAX, 10).unwrap(),
        vec![e6, other, e],
        "newest first, from the records and the tree"
    );
    assert_eq!(b.events.len(), 1);
}

/// Writers of one family at once never choose the same slot: each holds
/// the family's stripe from reading its slots off the tree to writing its
/// record, so every record is stored, under a slot of its own.
#[test]
fn writers_of_one_family_at_once_keep_every_record() {
    let b = SledBackend::open(None, 1 << 20).unwrap();
    b.write(&[Change::IssueRefresh(record(1))]).unwrap();
    std::thread::scope(|s| {
        for t in 0..4u8 {
            let b = &b;
            s.spawn(move || {
                for n in 0..25u8 {
                    let rec = access(10 + t * 25 + n, 1);
                    if n % 2 == 0 {
                        b.write(&[Change::PutAccess(rec)]).unwrap();
                    } else {
                        // Through the batch path: with another family's
                        // record beside it.
                        b.write(&[Change::PutAccess(rec), Change::PutAccess(access(n, 2 + t))])
                            .unwrap();
                    }
                }
            });
        }
    });
    let got = stored(&b, 1);
    let mut ids: Vec<u8> = got.iter().map(|(_, id, _)| *id).collect();
    ids.sort_unstable();
    assert_eq!(ids, (10..110).collect::<Vec<u8>>());
    let slots: Vec<u32> = got.iter().map(|(slot, _, _)| *slot).collect();
    assert_eq!(slots, (0..100).collect::<Vec<u32>>());
}

/// Tokens whose ids begin alike (the backend's table by owner keeps six
/// bytes of each id): each listed and its issue event shown, a bulk
/// revocation reaches them all, the deletion of an id that is not stored
/// forgets none, and once one is deleted the other's event is still
/// shown, newest first among the rest.
#[test]
fn tokens_whose_ids_begin_alike_are_each_found() {
    let b = SledBackend::open(None, 1 << 20).unwrap();
    let alike = |n: u8, seq: u64| {
        let mut r = record(1);
        r.id[15] = n;
        r.issue = Some(IssueEvent {
            seq,
            assigned: false,
        });
        r
    };
    let (a, c) = (alike(10, 20), alike(11, 21));
    let mut other = record(7);
    other.issue = Some(IssueEvent {
        seq: 22,
        assigned: false,
    });
    for r in [&a, &c, &other] {
        b.write(&[Change::IssueRefresh(r.clone())]).unwrap();
    }
    let ids = |b: &SledBackend| {
        let mut v: Vec<[u8; 16]> = b
            .list_refresh("acme", Some("bob"))
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        v.sort_unstable();
        v
    };
    let seqs = |b: &SledBackend, limit: usize| -> Vec<u64> {
        b.events("acme", u64::MAX, limit)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect()
    };
    assert_eq!(ids(&b), vec![a.id, c.id, other.id]);
    assert_eq!(seqs(&b, 10), vec![22, 21, 20]);
    assert_eq!(seqs(&b, 2), vec![22, 21]);
    // A record written again under its id: still one of each, and a page
    // as long as asked.
    b.write(&[Change::IssueRefresh(c.clone())]).unwrap();
    assert_eq!(ids(&b), vec![a.id, c.id, other.id]);
    assert_eq!(seqs(&b, 3), vec![22, 21, 20]);
    let mut held = b.refresh_ids("acme", "bob").unwrap();
    held.sort_unstable();
    held.dedup();
    assert_eq!(held, vec![a.id, c.id, other.id]);
    let mut absent = a.id;
    absent[15] = 12;
    let delete = |id: [u8; 16]| Change::DeleteRefresh {
        id,
        org: "acme".into(),
        user: "bob".into(),
    };
    b.write(&[delete(absent)]).unwrap();
    assert_eq!(ids(&b), vec![a.id, c.id, other.id], "none forgotten");
    let revoked = b
        .write(&[Change::RevokeMany {
            org: "acme".into(),
            user: Some("bob".into()),
            before: u64::MAX,
            at: 2_000,
            by: "ann".into(),
            reason: None,
        }])
        .unwrap()
        .revoked;
    assert_eq!(revoked, vec![a.id, c.id, other.id]);
    b.write(&[delete(c.id)]).unwrap();
    assert_eq!(ids(&b), vec![a.id, other.id]);
    // c's event moved to the events tree with its record; a's is read
    // from its record, its number no longer kept.
    assert_eq!(seqs(&b, 10), vec![22, 21, 20]);
    assert_eq!(seqs(&b, 1), vec![22]);
    b.write(&[delete(a.id)]).unwrap();
    assert_eq!(ids(&b), vec![other.id]);
    assert_eq!(seqs(&b, 10), vec![22, 21, 20]);
}
