//! DESIGN.md's management policy table, cell by cell: every role × every
//! management call × the same organization and another one, with the expected
//! answer, and proof that each denied call changed nothing (invariants 4, 7).

use tokenvault::{Actor, Error, GenerateOptions, RevokeScope, Role, TokenId, TokenStore};

struct World {
    store: TokenStore,
    /// A token of each member, by (org, user).
    tokens: Vec<(String, String, TokenId, String)>,
}

const USERS: [(&str, Role); 4] = [
    ("owner", Role::Owner),
    ("admin", Role::Admin),
    ("user", Role::User),
    ("viewer", Role::Stakeholder),
];

fn world() -> World {
    let store = TokenStore::temporary().unwrap();
    let mut tokens = Vec::new();
    for org in ["a", "b"] {
        for (u, r) in USERS {
            store.add_member(org, u, r).unwrap();
        }
        for (u, _) in USERS {
            let t = store
                .generate(&Actor::new(org, u), GenerateOptions::default())
                .unwrap();
            tokens.push((org.into(), u.into(), t.info.id, t.token.expose().into()));
        }
    }
    World { store, tokens }
}

/// Everything a denied call must leave alone: every token's listing and
/// whether it still exchanges, and every membership.
fn snapshot(w: &World) -> String {
    let mut s = String::new();
    for org in ["a", "b"] {
        let owner = Actor::new(org, "owner");
        s += &format!("{:?}\n", w.store.members(org));
        for t in w.store.list_org(&owner).unwrap() {
            s += &format!("{} {} {:?} {:?}\n", t.id, t.user, t.state, t.label);
        }
    }
    for (_, _, _, secret) in &w.tokens {
        s += &format!("{}\n", w.store.exchange(secret).is_ok());
    }
    s
}

fn token_of(w: &World, org: &str, user: &str) -> TokenId {
    w.tokens
        .iter()
        .find(|(o, u, _, _)| o == org && u == user)
        .unwrap()
        .2
}

/// Runs `call` on a fresh world and checks: allowed → Ok; denied →
/// Forbidden and nothing changed.
fn check(
    what: &str,
    role: Role,
    allowed: bool,
    call: impl Fn(&World, &Actor) -> Result<(), Error>,
) {
    let w = world();
    let actor = Actor::new("a", USERS.iter().find(|(_, r)| *r == role).unwrap().0);
    let before = snapshot(&w);
    let res = call(&w, &actor);
    if allowed {
        assert!(res.is_ok(), "{what} by {role}: expected Ok, got {res:?}");
    } else {
        let kind = res.as_ref().err().map(Error::kind);
        assert_eq!(
            kind,
            Some("forbidden"),
            "{what} by {role}: expected Forbidden, got {res:?}"
        );
        // The snapshot itself exchanges tokens (which only bumps
        // last_refresh), so compare two snapshots taken the same way.
        assert_eq!(before, snapshot(&w), "{what} by {role} changed state");
    }
}

fn is_owner(r: Role) -> bool {
    r == Role::Owner
}

#[test]
fn every_role_may_generate_list_and_revoke_their_own() {
    for (_, role) in USERS {
        check("generate own", role, true, |w, a| {
            w.store.generate(a, Default::default()).map(|_| ())
        });
        check("list own", role, true, |w, a| {
            let l = w.store.list_own(a)?;
            assert_eq!(l.len(), 1);
            assert_eq!(l[0].user, a.user);
            Ok(())
        });
        check("revoke own", role, true, |w, a| {
            let id = token_of(w, "a", &a.user);
            w.store.revoke(a, &id, None)?;
            assert!(w.store.list_own(a)?[0].state.as_str() == "revoked");
            Ok(())
        });
        check("revoke all own", role, true, |w, a| {
            let n = w
                .store
                .revoke_all(a, RevokeScope::Member(a.user.clone()), None)?;
            assert_eq!(n, 1);
            Ok(())
        });
    }
}

#[test]
fn only_the_owner_acts_on_others_in_the_same_org() {
    for (_, role) in USERS {
        let allowed = is_owner(role);
        check("assign to user", role, allowed, |w, a| {
            let t = w.store.assign(a, "user", Default::default())?;
            assert_eq!(t.info.user, "user");
            assert_eq!(t.info.created_by, a.user);
            Ok(())
        });
        check("assign to admin", role, allowed, |w, a| {
            w.store.assign(a, "admin", Default::default()).map(|_| ())
        });
        check("list org", role, allowed, |w, a| {
            let l = w.store.list_org(a)?;
            assert_eq!(l.len(), 4);
            assert!(l.iter().all(|t| t.org == "a"));
            Ok(())
        });
        let victim = if role == Role::User { "viewer" } else { "user" };
        check("revoke another's token", role, allowed, |w, a| {
            w.store.revoke(a, &token_of(w, "a", victim), None)
        });
        check("revoke all of another member", role, allowed, |w, a| {
            w.store
                .revoke_all(a, RevokeScope::Member(victim.into()), None)
                .map(|n| assert_eq!(n, 1))
        });
        check("revoke all of the org", role, allowed, |w, a| {
            w.store
                .revoke_all(a, RevokeScope::Org, None)
                .map(|n| assert_eq!(n, 4))
        });
        check("audit", role, allowed, |w, a| {
            assert!(!w.store.audit(a, 100)?.is_empty());
            Ok(())
        });
    }
}

#[test]
fn nothing_crosses_an_org() {
    for (_, role) in USERS {
        // Revoking another org's token is refused, whoever asks.
        check("revoke other org's token", role, false, |w, a| {
            w.store.revoke(a, &token_of(w, "b", "user"), None)
        });
        check("revoke other org's owner token", role, false, |w, a| {
            w.store.revoke(a, &token_of(w, "b", "owner"), None)
        });
    }
    let w = world();
    let before = snapshot(&w);
    let owner_a = Actor::new("a", "owner");
    // Assigning to a member of another org: there is no such member here.
    assert!(matches!(
        w.store.assign(&owner_a, "only-in-b", Default::default()),
        Err(Error::NotFound(_))
    ));
    // Listing and bulk revocation see only the actor's own org.
    assert!(w
        .store
        .list_org(&owner_a)
        .unwrap()
        .iter()
        .all(|t| t.org == "a"));
    w.store.add_member("b", "only-in-b", Role::User).unwrap();
    let t = w
        .store
        .generate(&Actor::new("b", "only-in-b"), Default::default())
        .unwrap();
    assert_eq!(
        w.store
            .revoke_all(&owner_a, RevokeScope::Member("only-in-b".into()), None)
            .unwrap(),
        0
    );
    assert!(w.store.exchange(t.token.expose()).is_ok());
    // An audit of org a shows nothing of org b.
    assert!(w
        .store
        .audit(&owner_a, 1000)
        .unwrap()
        .iter()
        .all(|e| e.org == "a"));
    // A stranger (not a member of the org named) is refused everything.
    let stranger = Actor::new("a", "mallory");
    assert!(matches!(
        w.store.generate(&stranger, Default::default()),
        Err(Error::Forbidden(_))
    ));
    assert!(matches!(
        w.store.list_own(&stranger),
        Err(Error::Forbidden(_))
    ));
    assert!(matches!(
        w.store.revoke(&stranger, &token_of(&w, "a", "user"), None),
        Err(Error::Forbidden(_))
    ));
    // The same user id in another org is another person.
    let owner_b_in_a = Actor::new("b", "owner");
    assert!(matches!(
        w.store
            .revoke(&owner_b_in_a, &token_of(&w, "a", "owner"), None),
        Err(Error::Forbidden(_))
    ));
    let after_members: Vec<_> = w.store.members("a");
    assert_eq!(after_members.len(), 4);
    assert_eq!(before.lines().next(), snapshot(&w).lines().next());
}

#[test]
fn roles_come_from_the_store_not_the_caller() {
    let w = world();
    // The admin is promoted to Owner only through a transfer; until then
    // every Owner-only call stays refused.
    let admin = Actor::new("a", "admin");
    assert!(matches!(w.store.list_org(&admin), Err(Error::Forbidden(_))));
    w.store.transfer_ownership("a", "admin").unwrap();
    assert_eq!(w.store.list_org(&admin).unwrap().len(), 4);
    // The former Owner is now an Admin and refused.
    assert!(matches!(
        w.store.list_org(&Actor::new("a", "owner")),
        Err(Error::Forbidden(_))
    ));
}

#[test]
fn denied_calls_are_audited() {
    let w = world();
    let user = Actor::new("a", "user");
    assert!(w.store.list_org(&user).is_err());
    let events = w.store.audit(&Actor::new("a", "owner"), 5).unwrap();
    assert_eq!(events[0].actor, "user");
    assert_eq!(events[0].action, "token.list_org");
    assert!(events[0].outcome.starts_with("denied"));
}
