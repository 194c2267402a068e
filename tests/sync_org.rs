//! `sync_org`: membership in one call. Any mix of adds, role changes, an
//! ownership move and removals in any input order; idempotent; audited;
//! refused as `usage` for zero or two Owners with nothing changed; what a
//! re-promotion gives back; and atomic across SIGKILL (DESIGN.md
//! invariant 6): after a kill in the middle the organization is wholly as
//! before or wholly as asked.

mod common;

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::child::{this_test, Rng};
use tokenvault::{Actor, Error, GenerateOptions, Role, RoleChange, TokenStore};

fn roles(store: &TokenStore, org: &str) -> Vec<(String, Role)> {
    store.members(org)
}

fn owned(v: &[(&str, Role)]) -> Vec<(String, Role)> {
    let mut v: Vec<(String, Role)> = v.iter().map(|(u, r)| (u.to_string(), *r)).collect();
    v.sort();
    v
}

#[test]
fn one_call_adds_changes_moves_ownership_and_removes_in_any_order() {
    let store = TokenStore::temporary().unwrap();
    let (olivia, adam, uma) = common::store::seed_acme(&store);
    store.add_member("acme", "sam", Role::Stakeholder).unwrap();
    let umas = store.generate(&uma, Default::default()).unwrap();
    store.generate(&uma, Default::default()).unwrap();
    let adams = store.generate(&adam, Default::default()).unwrap();
    let before = store.audit(&olivia, 10_000).unwrap().len();

    // The new Owner first, then a removal implied, an add, a demotion of
    // the old Owner, a promotion: no ordering rules.
    let want = [
        ("adam", Role::Owner),
        ("zoe", Role::User),
        ("olivia", Role::Admin),
        ("sam", Role::User),
    ];
    let report = store.sync_org("acme", want).unwrap();
    assert_eq!(report.added, vec![("zoe".to_string(), Role::User)]);
    let changed: Vec<(&str, Role, Role)> = report
        .role_changed
        .iter()
        .map(|c: &RoleChange| (c.user.as_str(), c.from, c.to))
        .collect();
    assert_eq!(
        changed,
        vec![
            ("adam", Role::Admin, Role::Owner),
            ("olivia", Role::Owner, Role::Admin),
            ("sam", Role::Stakeholder, Role::User),
        ]
    );
    assert_eq!(report.removed, vec!["uma".to_string()]);
    assert_eq!(report.new_owner.as_deref(), Some("adam"));
    assert_eq!(report.tokens_revoked, 2);
    assert_eq!(roles(&store, "acme"), owned(&want));

    // The removed member's tokens are revoked; the others' work.
    assert!(matches!(
        store.exchange(umas.token.expose()),
        Err(Error::Revoked | Error::InvalidToken)
    ));
    store.exchange(adams.token.expose()).unwrap();
    let adam_owner = Actor::new("acme", "adam");

    // Audited, one event per change, by the host.
    let events = store.audit(&adam_owner, 10_000).unwrap();
    assert_eq!(events.len(), before + 5);
    let mut new: Vec<(String, Option<String>)> = events[..5]
        .iter()
        .map(|e| {
            assert_eq!(e.actor, "host");
            (e.action.clone(), e.target.clone())
        })
        .collect();
    new.sort();
    let s = |a: &str, t: &str| (a.to_string(), Some(t.to_string()));
    assert_eq!(
        new,
        vec![
            s("member.add", "zoe as user"),
            s("member.remove", "uma"),
            s("member.role", "olivia to admin"),
            s("member.role", "sam to user"),
            s("member.transfer", "adam"),
        ]
    );

    // Idempotent: the same list again (in another order) changes and
    // audits nothing.
    let mut again = want;
    again.reverse();
    let report = store.sync_org("acme", again).unwrap();
    assert!(report.is_empty(), "{report:?}");
    assert_eq!(report.new_owner, None);
    assert_eq!(store.audit(&adam_owner, 10_000).unwrap().len(), before + 5);
    assert_eq!(roles(&store, "acme"), owned(&want));

    // The new Owner owns; the old one no longer does.
    store.list_org(&adam_owner).unwrap();
    assert!(matches!(store.list_org(&olivia), Err(Error::Forbidden(_))));
}

#[test]
fn a_new_org_and_an_owner_who_leaves() {
    let store = TokenStore::temporary().unwrap();
    let r = store
        .sync_org("beta", vec![("bea".to_string(), Role::Owner)])
        .unwrap();
    assert_eq!(r.added, vec![("bea".to_string(), Role::Owner)]);
    assert_eq!(r.new_owner.as_deref(), Some("bea"));
    let bea = store
        .generate(&Actor::new("beta", "bea"), Default::default())
        .unwrap();
    // The Owner leaves in the same call that names the next one.
    let r = store
        .sync_org("beta", [("bob", Role::Admin), ("cy", Role::Owner)])
        .unwrap();
    assert_eq!(r.removed, vec!["bea".to_string()]);
    assert_eq!(r.tokens_revoked, 1);
    assert_eq!(r.new_owner.as_deref(), Some("cy"));
    assert_eq!(
        roles(&store, "beta"),
        owned(&[("bob", Role::Admin), ("cy", Role::Owner)])
    );
    assert!(store.exchange(bea.token.expose()).is_err());
    // The catalog agrees: cy may assign, bob may not.
    store
        .assign(&Actor::new("beta", "cy"), "bob", Default::default())
        .unwrap();
    assert!(store
        .assign(&Actor::new("beta", "bob"), "cy", Default::default())
        .is_err());
}

#[test]
fn bad_lists_are_usage_errors_and_change_nothing() {
    let store = TokenStore::temporary().unwrap();
    let (olivia, _, _) = common::store::seed_acme(&store);
    let members = roles(&store, "acme");
    let events = store.audit(&olivia, 10_000).unwrap();
    let bad: Vec<Vec<(&str, Role)>> = vec![
        vec![],
        vec![("olivia", Role::Admin), ("adam", Role::Admin)],
        vec![("olivia", Role::Owner), ("adam", Role::Owner)],
        vec![
            ("olivia", Role::Owner),
            ("adam", Role::User),
            ("adam", Role::User),
        ],
        vec![("olivia", Role::Owner), ("", Role::User)],
        vec![("olivia", Role::Owner), ("bad\nid", Role::User)],
    ];
    for list in bad {
        let e = store.sync_org("acme", list.clone()).unwrap_err();
        assert_eq!(e.kind(), "usage", "{list:?}: {e:?}");
        assert!(matches!(e, Error::InvalidArgument(_)));
        assert_eq!(roles(&store, "acme"), members, "{list:?}");
        assert_eq!(store.audit(&olivia, 10_000).unwrap(), events, "{list:?}");
    }
    let e = store.sync_org("a/b", [("x", Role::Owner)]).unwrap_err();
    assert_eq!(e.kind(), "usage");
    // The message says what is wrong.
    let e = store
        .sync_org("acme", [("olivia", Role::Owner), ("adam", Role::Owner)])
        .unwrap_err();
    assert!(e.to_string().contains("exactly one Owner"), "{e}");
}

/// `sync_org` to olivia (Owner), adam and uma with the roles given.
fn sync_acme(store: &TokenStore, adam: Role, uma: Role) {
    store
        .sync_org(
            "acme",
            [("olivia", Role::Owner), ("adam", adam), ("uma", uma)],
        )
        .unwrap();
}

#[test]
fn re_promotion_gives_old_tokens_back_what_they_were_issued_with_and_no_more() {
    let store = TokenStore::temporary().unwrap();
    let (_, adam, uma) = common::store::seed_acme(&store);
    let admin_token = store
        .generate(
            &adam,
            GenerateOptions::default().scopes(["read", "user-write"]),
        )
        .unwrap();
    let user_token = store.generate(&uma, Default::default()).unwrap();
    let access =
        |t: &tokenvault::IssuedToken| store.exchange(t.token.expose()).unwrap().access_token;
    let (a, u) = (access(&admin_token), access(&user_token));
    store.authorize(a.expose(), "user-write").unwrap();

    // Demoted to User: the Admin scope goes at once.
    sync_acme(&store, Role::User, Role::User);
    assert!(matches!(
        store.authorize(a.expose(), "user-write"),
        Err(Error::InsufficientScope(_))
    ));
    store.authorize(a.expose(), "read").unwrap();

    // Promoted back, and uma promoted to Admin: adam's old token (and its
    // access token) has user-write again; uma's, issued to a User, gains
    // no Admin scope.
    sync_acme(&store, Role::Admin, Role::Admin);
    store.authorize(a.expose(), "user-write").unwrap();
    assert!(matches!(
        store.authorize(u.expose(), "user-write"),
        Err(Error::InsufficientScope(_))
    ));
    assert!(store
        .verify(u.expose())
        .unwrap()
        .scopes
        .contains("incident-write"));

    // Removed and listed again: a new member, the old tokens stay revoked.
    store
        .sync_org("acme", [("olivia", Role::Owner), ("uma", Role::Admin)])
        .unwrap();
    sync_acme(&store, Role::Admin, Role::Admin);
    assert!(store.verify(a.expose()).is_err());
    assert!(store.exchange(admin_token.token.expose()).is_err());
}

const CHILD_ENV: &str = "TOKENVAULT_SYNC_CRASH_CHILD";

/// The two memberships the crash child alternates between: every kind of
/// change each way (ownership moves, adds, removals, role changes).
fn state(n: u64) -> Vec<(String, Role)> {
    let list: &[(&str, Role)] = if n.is_multiple_of(2) {
        &[
            ("o", Role::Owner),
            ("a", Role::Admin),
            ("b", Role::User),
            ("c", Role::User),
            ("d", Role::Stakeholder),
        ]
    } else {
        &[
            ("a", Role::Owner),
            ("o", Role::User),
            ("c", Role::Admin),
            ("e", Role::User),
            ("f", Role::User),
            ("g", Role::Admin),
        ]
    };
    owned(list)
}

fn open(dir: &Path) -> TokenStore {
    common::store::keyed(dir.join("db"), 5).open().unwrap()
}

/// Syncs `acme` to state 0, 1, 2, … until killed; logs `try n` before and
/// `ok n` after each call, synced.
fn child(dir: &Path) {
    let store = open(dir);
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("acks.log"))
        .unwrap();
    let first = std::fs::read_to_string(dir.join("acks.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("try ")?.parse::<u64>().ok())
        .max()
        .map_or(0, |n| n + 1);
    for n in first..first + 100_000 {
        writeln!(log, "try {n}").unwrap();
        log.sync_data().unwrap();
        store.sync_org("acme", state(n)).unwrap();
        writeln!(log, "ok {n}").unwrap();
        log.sync_data().unwrap();
    }
}

#[test]
fn a_kill_in_the_middle_leaves_the_org_wholly_before_or_after() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        child(Path::new(&dir));
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut rng = Rng(0xC0FF_EE00 ^ u64::from(std::process::id()));
    let mut acked = 0;
    for cycle in 0..40 {
        let mut c = this_test("a_kill_in_the_middle_leaves_the_org_wholly_before_or_after")
            .env(CHILD_ENV, dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Wait until the child has acknowledged a new call (bounded, not a
        // bare sleep), then a little more so the kill lands anywhere.
        let acks_before = acks(dir).0;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while acks(dir).0 <= acks_before && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(rng.next() % 40));
        assert!(
            c.try_wait().unwrap().is_none(),
            "cycle {cycle}: the child stopped"
        );
        c.kill().unwrap();
        c.wait().unwrap();

        let (oks, last_ok, last_try) = acks(dir);
        assert!(oks > 0, "cycle {cycle}: nothing acknowledged in 60 s");
        acked = oks;
        let store = open(dir);
        let got = roles(&store, "acme");
        let allowed: Vec<Vec<(String, Role)>> = [last_ok, last_try]
            .into_iter()
            .flatten()
            .map(state)
            .collect();
        assert!(
            allowed.contains(&got),
            "cycle {cycle}: a mix after the kill: {got:?} (acknowledged {last_ok:?}, in flight {last_try:?})"
        );
        assert_eq!(
            got.iter().filter(|(_, r)| *r == Role::Owner).count(),
            1,
            "cycle {cycle}"
        );
        let report = store.check_integrity().unwrap();
        assert!(report.is_clean(), "cycle {cycle}: {:?}", report.problems);
        drop(store);
    }
    assert!(acked > 0);
}

/// (how many calls were acknowledged, the last acknowledged state, the
/// state of a call tried after it and not acknowledged).
fn acks(dir: &Path) -> (usize, Option<u64>, Option<u64>) {
    let text = std::fs::read_to_string(dir.join("acks.log")).unwrap_or_default();
    let (mut oks, mut last_ok, mut last_try) = (0, None, None);
    for l in text.lines() {
        if let Some(n) = l.strip_prefix("ok ").and_then(|n| n.parse().ok()) {
            oks += 1;
            last_ok = Some(n);
            last_try = None;
        } else if let Some(n) = l.strip_prefix("try ").and_then(|n| n.parse().ok()) {
            last_try = Some(n);
        }
    }
    (oks, last_ok, last_try)
}
