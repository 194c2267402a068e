//! The seed's story end to end (Squadcast's public API refresh token page):
//! profile generation, the Owner's assignment, the member's own list,
//! exchange, verification, role restriction, and the revocation cascade.

mod common;

use tokenvault::{Actor, Error, GenerateOptions, Role, TokenState, TokenStore};

#[test]
fn squadcast_refresh_token_story() {
    let store = TokenStore::temporary().unwrap();
    let (olivia, adam, uma) = common::store::seed_acme(&store);

    // My Profile › Generate New Token.
    let own = store
        .generate(&uma, GenerateOptions::default().label("laptop"))
        .unwrap();
    assert!(own.token.expose().starts_with("tvr_"));
    assert_eq!(own.info.created_by, "uma");
    assert_eq!(own.info.role_at_issue, Role::User);

    // Settings › API Tokens › Assign Token To User.
    let to_adam = store
        .assign(&olivia, "adam", GenerateOptions::default().label("tf"))
        .unwrap();
    let to_uma = store.assign(&olivia, "uma", Default::default()).unwrap();
    assert_eq!(to_adam.info.user, "adam");
    assert_eq!(to_adam.info.role_at_issue, Role::Admin);

    // The assigned tokens show on the members' own profile pages.
    let umas: Vec<_> = store.list_own(&uma).unwrap();
    let mut ids: Vec<_> = umas.iter().map(|t| t.id).collect();
    ids.sort();
    let mut want = vec![own.info.id, to_uma.info.id];
    want.sort();
    assert_eq!(ids, want);
    let assigned = umas.iter().find(|t| t.id == to_uma.info.id).unwrap();
    assert_eq!(assigned.created_by, "olivia");
    let adams = store.list_own(&adam).unwrap();
    assert_eq!(adams.len(), 1);
    assert_eq!(adams[0].id, to_adam.info.id);
    // The Owner sees all of them.
    assert_eq!(store.list_org(&olivia).unwrap().len(), 3);

    // Exchange, then call the API with the access token.
    let g1 = store.exchange(to_uma.token.expose()).unwrap();
    let g2 = store.exchange(to_uma.token.expose()).unwrap();
    assert_eq!(g1.token_type, "Bearer");
    assert_eq!(g1.refresh_token.expose(), to_uma.token.expose());
    assert!(g1.expires_at > g1.issued_at);
    let who = store.verify(g1.access_token.expose()).unwrap();
    assert_eq!(
        (&*who.org, &*who.user, who.role),
        ("acme", "uma", Role::User)
    );
    assert_eq!(who.refresh_id, to_uma.info.id);
    assert!(store
        .authorize(g1.access_token.expose(), "incident-write")
        .is_ok());
    // A User token is denied an Admin scope.
    assert!(matches!(
        store.authorize(g1.access_token.expose(), "user-write"),
        Err(Error::InsufficientScope(_))
    ));
    // An Admin token has it.
    let ga = store.exchange(to_adam.token.expose()).unwrap();
    assert!(store
        .authorize(ga.access_token.expose(), "user-write")
        .is_ok());
    assert!(matches!(
        store.authorize(ga.access_token.expose(), "org-admin"),
        Err(Error::InsufficientScope(_))
    ));
    let find = |id| {
        store
            .list_own(&uma)
            .unwrap()
            .into_iter()
            .find(|t| t.id == id)
            .unwrap()
    };
    assert!(find(to_uma.info.id).last_refresh.is_some());
    assert!(find(own.info.id).last_refresh.is_none());

    // Revoke: every derived access token is rejected, and the refresh token too.
    store
        .revoke(&olivia, &to_uma.info.id, Some("rotated"))
        .unwrap();
    for g in [&g1, &g2] {
        assert!(matches!(
            store.verify(g.access_token.expose()),
            Err(Error::Revoked)
        ));
    }
    assert!(matches!(
        store.exchange(to_uma.token.expose()),
        Err(Error::Revoked)
    ));
    assert!(matches!(
        &find(to_uma.info.id).state,
        TokenState::Revoked { by, reason: Some(r), .. } if by == "olivia" && r == "rotated"
    ));
    // Uma's own token and Adam's are untouched.
    assert!(store.exchange(own.token.expose()).is_ok());
    assert!(store.verify(ga.access_token.expose()).is_ok());
}

#[test]
fn story_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let (refresh, access, revoked_access) = {
        let store = TokenStore::open(&path).unwrap();
        store.add_member("acme", "olivia", Role::Owner).unwrap();
        store.add_member("acme", "uma", Role::User).unwrap();
        let olivia = Actor::new("acme", "olivia");
        let keep = store.assign(&olivia, "uma", Default::default()).unwrap();
        let gone = store.assign(&olivia, "uma", Default::default()).unwrap();
        let a = store.exchange(keep.token.expose()).unwrap();
        let b = store.exchange(gone.token.expose()).unwrap();
        store.revoke(&olivia, &gone.info.id, None).unwrap();
        store.flush().unwrap();
        (keep.token, a.access_token, b.access_token)
    };
    let store = TokenStore::open(&path).unwrap();
    assert_eq!(&*store.verify(access.expose()).unwrap().user, "uma");
    assert!(matches!(
        store.verify(revoked_access.expose()),
        Err(Error::Revoked)
    ));
    assert!(store.exchange(refresh.expose()).is_ok());
    assert!(store.check_integrity().unwrap().is_clean());
}

#[test]
fn audit_sequence_numbers_continue_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    let owner = Actor::new("acme", "olivia");
    {
        let store = TokenStore::open(&path).unwrap();
        store.add_member("acme", "olivia", Role::Owner).unwrap();
        store.generate(&owner, Default::default()).unwrap();
    }
    let store = TokenStore::open(&path).unwrap();
    store.generate(&owner, Default::default()).unwrap();
    let seqs: Vec<u64> = store
        .audit(&owner, 10)
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, vec![3, 2, 1]);
}
