//! Reading and editing one token by id (`get`, `set_label`) and paging
//! the lists and the audit trail: the holder-or-Owner policy (DESIGN.md
//! invariants 4 and 7), labels checked and durable, and pages that neither
//! skip nor repeat a token while others are issued and revoked.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokenvault::{Actor, Error, Page, Role, TokenId, TokenInfo, TokenStore};

/// `acme` (olivia Owner, adam Admin, uma User) and `beta` (bea Owner).
fn two_orgs() -> (TokenStore, Actor, Actor, Actor, Actor) {
    let store = TokenStore::temporary().unwrap();
    let (olivia, adam, uma) = common::store::seed_acme(&store);
    store.add_member("beta", "bea", Role::Owner).unwrap();
    (store, olivia, adam, uma, Actor::new("beta", "bea"))
}

fn audit_len(store: &TokenStore, owner: &Actor) -> usize {
    store.audit(owner, 10_000).unwrap().len()
}

#[test]
fn get_is_for_the_holder_and_the_owner_only() {
    let (store, olivia, adam, uma, bea) = two_orgs();
    let t = store
        .generate(&uma, tokenvault::GenerateOptions::default().label("ci"))
        .unwrap();
    let id = t.info.id;
    let mine = store.get(&uma, &id).unwrap();
    assert_eq!(mine, store.list_own(&uma).unwrap()[0]);
    assert_eq!(mine.label.as_deref(), Some("ci"));
    assert_eq!(store.get(&olivia, &id).unwrap(), mine);

    // Another member of the org: refused, and the refusal audited.
    let before = audit_len(&store, &olivia);
    let e = store.get(&adam, &id).unwrap_err();
    assert!(matches!(e, Error::Forbidden(_)), "{e:?}");
    let events = store.audit(&olivia, 10_000).unwrap();
    assert_eq!(events.len(), before + 1);
    assert_eq!(events[0].action, "token.get");
    assert!(events[0].outcome.starts_with("denied"), "{:?}", events[0]);

    // The Owner of another org: as an unknown id, and not audited there.
    let beta_before = audit_len(&store, &bea);
    let e = store.get(&bea, &id).unwrap_err();
    assert_eq!(e.kind(), "not_found", "{e:?}");
    let unknown = store.get(&bea, &TokenId::from_bytes([7; 16])).unwrap_err();
    assert_eq!(unknown.kind(), "not_found");
    assert_eq!(
        e.to_string().replace(&id.to_string(), "ID"),
        unknown
            .to_string()
            .replace(&TokenId::from_bytes([7; 16]).to_string(), "ID")
    );
    assert_eq!(audit_len(&store, &bea), beta_before);

    // Not a member at all.
    let e = store.get(&Actor::new("acme", "mallory"), &id).unwrap_err();
    assert!(matches!(e, Error::Forbidden(_)), "{e:?}");
}

#[test]
fn set_label_is_checked_audited_and_changes_nothing_when_refused() {
    let (store, olivia, adam, uma, bea) = two_orgs();
    let id = store.generate(&uma, Default::default()).unwrap().info.id;

    let info = store.set_label(&uma, &id, Some("laptop")).unwrap();
    assert_eq!(info.label.as_deref(), Some("laptop"));
    assert_eq!(
        store.get(&uma, &id).unwrap().label.as_deref(),
        Some("laptop")
    );
    let ev = &store.audit(&olivia, 1).unwrap()[0];
    assert_eq!(
        (ev.action.as_str(), ev.actor.as_str(), ev.target.as_deref()),
        ("token.label", "uma", Some(id.to_string().as_str()))
    );

    // The Owner may; the label may also go.
    let info = store.set_label(&olivia, &id, None).unwrap();
    assert_eq!(info.label, None);
    store.set_label(&olivia, &id, Some("laptop")).unwrap();

    // Refusals change nothing.
    let refused: Vec<(Actor, Option<String>, &str)> = vec![
        (adam.clone(), Some("mine now".into()), "forbidden"),
        (bea.clone(), Some("x".into()), "not_found"),
        (uma.clone(), Some("tab\there".into()), "usage"),
        (uma.clone(), Some("é".repeat(129)), "usage"),
        (Actor::new("acme", "mallory"), Some("x".into()), "forbidden"),
    ];
    for (actor, label, kind) in refused {
        let e = store.set_label(&actor, &id, label.as_deref()).unwrap_err();
        assert_eq!(e.kind(), kind, "{actor:?} {label:?}: {e:?}");
        assert_eq!(
            store.get(&uma, &id).unwrap().label.as_deref(),
            Some("laptop")
        );
    }
    // A label at the limit is fine, as at issue.
    let max = "a".repeat(256);
    assert_eq!(
        store.set_label(&uma, &id, Some(&max)).unwrap().label,
        Some(max)
    );
    // Revoked tokens keep their label editable; unknown ids are not found.
    store.revoke(&uma, &id, None).unwrap();
    store.set_label(&uma, &id, Some("old laptop")).unwrap();
    let e = store
        .set_label(&uma, &TokenId::from_bytes([9; 16]), Some("x"))
        .unwrap_err();
    assert_eq!(e.kind(), "not_found");
}

#[test]
fn a_label_survives_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let id = {
        let store = common::store::keyed(&path, 3).open().unwrap();
        let (_, _, uma) = common::store::seed_acme(&store);
        let id = store.generate(&uma, Default::default()).unwrap().info.id;
        store.set_label(&uma, &id, Some("renamed")).unwrap();
        // Dropped without close: the label was durable on return.
        drop(store);
        id
    };
    let store = common::store::keyed(&path, 3).open().unwrap();
    let uma = Actor::new("acme", "uma");
    assert_eq!(
        store.get(&uma, &id).unwrap().label.as_deref(),
        Some("renamed")
    );
    assert!(store.check_integrity().unwrap().is_clean());
}

/// Walks a list page by page with `limit`.
fn walk(
    limit: usize,
    mut page: impl FnMut(Page<TokenId>) -> tokenvault::Result<tokenvault::Paged<TokenInfo, TokenId>>,
) -> Vec<TokenInfo> {
    let mut out = Vec::new();
    let mut after = None;
    for _ in 0..10_000 {
        let mut p = Page::new().limit(limit);
        if let Some(c) = after {
            p = p.after(c);
        }
        let got = page(p).unwrap();
        assert!(got.items.len() <= limit);
        out.extend(got.items);
        match got.next {
            Some(c) => {
                assert_eq!(
                    Some(c),
                    out.last().map(|t| t.id),
                    "next is the last item's id"
                );
                after = Some(c);
            }
            None => return out,
        }
    }
    panic!("the walk did not end");
}

#[test]
fn pages_of_lists_add_up_to_the_whole_list() {
    let (store, olivia, adam, uma, _) = two_orgs();
    for i in 0..7 {
        let who = [&olivia, &adam, &uma][i % 3];
        store.generate(who, Default::default()).unwrap();
    }
    for limit in [1, 2, 3, 7, 50] {
        assert_eq!(
            walk(limit, |p| store.list_org_page(&olivia, p)),
            store.list_org(&olivia).unwrap(),
            "limit {limit}"
        );
        assert_eq!(
            walk(limit, |p| store.list_own_page(&uma, p)),
            store.list_own(&uma).unwrap()
        );
    }
    // uma holds two: a full last page says there is no next one.
    assert_eq!(store.list_own(&uma).unwrap().len(), 2);
    let all = store.list_own_page(&uma, Page::new().limit(1)).unwrap();
    let last = store
        .list_own_page(&uma, Page::new().after(all.next.unwrap()).limit(1))
        .unwrap();
    assert_eq!((last.items.len(), last.next), (1, None));
    // Without a limit: everything after the cursor, no next.
    let first = store.list_org(&olivia).unwrap()[0].id;
    let rest = store
        .list_org_page(&olivia, Page::new().after(first))
        .unwrap();
    assert_eq!(rest.items.len(), 6);
    assert_eq!(rest.next, None);

    // Bad pages are usage errors; the policy is list_org's.
    let e = store.list_own_page(&uma, Page::new().limit(0)).unwrap_err();
    assert_eq!(e.kind(), "usage");
    let adams = store.list_own(&adam).unwrap()[0].id;
    let e = store
        .list_own_page(&uma, Page::new().after(adams))
        .unwrap_err();
    assert_eq!(
        e.kind(),
        "usage",
        "another member's token is no cursor of uma's list"
    );
    let e = store.list_org_page(&uma, Page::new()).unwrap_err();
    assert!(matches!(e, Error::Forbidden(_)));
}

#[test]
fn pages_neither_skip_nor_repeat_under_concurrent_issue_and_revoke() {
    let store = TokenStore::temporary().unwrap();
    let (olivia, _, uma) = common::store::seed_acme(&store);
    // The tokens alive throughout: 40 of uma's (some revoked on the way,
    // which leaves them listed).
    let steady: HashSet<TokenId> = (0..40)
        .map(|_| store.generate(&uma, Default::default()).unwrap().info.id)
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let churn = {
        let (store, uma, stop) = (store.clone(), uma.clone(), stop.clone());
        let steady: Vec<TokenId> = steady.iter().copied().collect();
        std::thread::spawn(move || {
            let mut n = 0usize;
            // Bounded, so that the list stays small enough to walk often.
            while !stop.load(Ordering::Acquire) && n < 150 {
                // Issue one, revoke it again (the member stays under the
                // cap), and now and then revoke a steady one.
                let t = store.generate(&uma, Default::default()).unwrap();
                store.revoke(&uma, &t.info.id, None).unwrap();
                if n.is_multiple_of(3) {
                    store
                        .revoke(&uma, &steady[n / 3 % steady.len()], None)
                        .unwrap();
                }
                n += 1;
            }
            n
        })
    };
    let mut walks = 0;
    // A number of walks, not a time: each overlaps the churn's calls.
    while walks < 8 {
        for (list, owner_view) in [("own", false), ("org", true)] {
            let got = if owner_view {
                walk(3, |p| store.list_org_page(&olivia, p))
            } else {
                walk(3, |p| store.list_own_page(&uma, p))
            };
            let mut seen: HashMap<TokenId, usize> = HashMap::new();
            for t in &got {
                *seen.entry(t.id).or_default() += 1;
            }
            let repeated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
            assert!(
                repeated.is_empty(),
                "{list} walk {walks}: repeated {repeated:?}"
            );
            let missing: Vec<_> = steady.iter().filter(|id| !seen.contains_key(id)).collect();
            assert!(
                missing.is_empty(),
                "{list} walk {walks}: skipped {missing:?}"
            );
        }
        walks += 1;
    }
    stop.store(true, Ordering::Release);
    let churned = churn.join().unwrap();
    assert!(churned > 0, "the churn thread never ran");
}

#[test]
fn audit_pages_add_up_and_stay_put_while_events_are_added() {
    let (store, olivia, _, uma, _) = two_orgs();
    for _ in 0..9 {
        store.generate(&uma, Default::default()).unwrap();
    }
    let snapshot = store.audit(&olivia, 10_000).unwrap();
    let top = snapshot[0].seq;
    // Walk by 4 while new events are made between pages.
    let mut got = Vec::new();
    let mut after: Option<u64> = None;
    loop {
        let mut p = Page::new().limit(4);
        if let Some(c) = after {
            p = p.after(c);
        }
        let page = store.audit_page(&olivia, p).unwrap();
        got.extend(page.items);
        store.generate(&uma, Default::default()).unwrap();
        match page.next {
            Some(c) => {
                assert_eq!(Some(c), got.last().map(|e| e.seq));
                after = Some(c);
            }
            None => break,
        }
    }
    let old: Vec<_> = got.iter().filter(|e| e.seq <= top).cloned().collect();
    assert_eq!(
        old, snapshot,
        "the events before the walk, each once, in order"
    );
    let seqs: HashSet<u64> = got.iter().map(|e| e.seq).collect();
    assert_eq!(seqs.len(), got.len(), "no event twice");
    // Without a limit: everything older than the cursor.
    let rest = store
        .audit_page(&olivia, Page::new().after(snapshot[2].seq))
        .unwrap();
    assert_eq!(rest.items, snapshot[3..].to_vec());
    assert_eq!(rest.next, None);
    assert_eq!(
        store
            .audit_page(&olivia, Page::new().limit(0))
            .unwrap_err()
            .kind(),
        "usage"
    );
    assert!(matches!(
        store.audit_page(&uma, Page::new()).unwrap_err(),
        Error::Forbidden(_)
    ));
}

/// On a shared PostgreSQL store (when `TOKENVAULT_PG_URL` names a server,
/// as `.ci/postgres.sh` sets it): a label set through one replica is read
/// through another, and the audit pages by the database's numbers.
#[cfg(feature = "postgres")]
#[test]
#[ignore = "needs PostgreSQL: .ci/postgres.sh"]
fn labels_and_audit_pages_on_a_shared_store() {
    let Some(db) = common::pg::ScratchDb::new("reads") else {
        return;
    };
    let open = db.replicas();
    {
        let (one, two) = (open(), open());
        let (olivia, _, uma) = common::store::seed_acme(&one);
        let id = one.generate(&uma, Default::default()).unwrap().info.id;
        one.set_label(&uma, &id, Some("from one")).unwrap();
        assert_eq!(
            two.get(&olivia, &id).unwrap().label.as_deref(),
            Some("from one")
        );
        let r = two
            .sync_org("acme", [("olivia", Role::Owner), ("uma", Role::Admin)])
            .unwrap();
        assert_eq!(r.removed, vec!["adam".to_string()]);
        one.catch_up().unwrap();
        assert_eq!(one.member_role("acme", "adam"), None);
        let all = one.audit(&olivia, 1000).unwrap();
        let walked = walk_audit(&one, &olivia, 2);
        assert_eq!(walked, all);
        one.close().unwrap();
        two.close().unwrap();
    }
    drop(open);
    drop(db);
}

#[cfg(feature = "postgres")]
fn walk_audit(store: &TokenStore, owner: &Actor, limit: usize) -> Vec<tokenvault::AuditEvent> {
    let mut out = Vec::new();
    let mut p = Page::new().limit(limit);
    loop {
        let page = store.audit_page(owner, p).unwrap();
        out.extend(page.items);
        match page.next {
            Some(c) => p = Page::new().after(c).limit(limit),
            None => return out,
        }
    }
}
