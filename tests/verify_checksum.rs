//! Verification remembers each access token's checksum after computing it
//! once. The answers must stay those of parsing first (invariant 5): a
//! changed checksum is `Malformed` whether or not the token was verified
//! before, and an unknown id or wrong secret is `InvalidToken` only when
//! the checksum is right.

use tokenvault::token::{decode_raw, encode_raw, TokenKind};
use tokenvault::{Actor, Error, Role, SecretToken, TokenStore};

/// The same token with its last checksum digit changed.
fn bad_checksum(token: &str) -> String {
    let mut b = token.as_bytes().to_vec();
    let last = b.len() - 1;
    b[last] = if b[last] == b'A' { b'B' } else { b'A' };
    String::from_utf8(b).unwrap()
}

/// A temporary store where ann (Owner of acme) holds a token, and an
/// access token made from it.
fn store_with_an_access_token() -> (TokenStore, SecretToken) {
    let store = TokenStore::temporary().unwrap();
    store.add_member("acme", "ann", Role::Owner).unwrap();
    let t = store
        .generate(&Actor::new("acme", "ann"), Default::default())
        .unwrap();
    let good = store.exchange(t.token.expose()).unwrap().access_token;
    (store, good)
}

#[test]
fn a_changed_checksum_is_malformed_before_and_after_a_verification() {
    let (store, good) = store_with_an_access_token();
    let bad = bad_checksum(good.expose());
    // Never verified yet: the checksum is computed.
    assert!(matches!(store.verify(&bad), Err(Error::Malformed(_))));
    assert!(store.verify(good.expose()).is_ok());
    // Verified once: the remembered checksum is compared.
    for _ in 0..3 {
        assert!(matches!(store.verify(&bad), Err(Error::Malformed(_))));
        assert!(store.verify(good.expose()).is_ok());
    }
    assert!(matches!(
        store.authorize(&bad, "read"),
        Err(Error::Malformed(_))
    ));
}

#[test]
fn unknown_ids_and_wrong_secrets_are_invalid_only_with_a_right_checksum() {
    let (store, good) = store_with_an_access_token();
    assert!(store.verify(good.expose()).is_ok());
    let (id, secret) = decode_raw("tv", TokenKind::Access, good.expose()).unwrap();
    let mut other = secret;
    other[0] ^= 1;
    // Known id, wrong secret, well-formed.
    let wrong_secret = encode_raw("tv", TokenKind::Access, id, other);
    assert!(matches!(
        store.verify(&wrong_secret),
        Err(Error::InvalidToken)
    ));
    assert!(matches!(
        store.verify(&bad_checksum(&wrong_secret)),
        Err(Error::Malformed(_))
    ));
    // Unknown id, well-formed and not.
    let unknown = encode_raw("tv", TokenKind::Access, [3; 16], secret);
    assert!(matches!(store.verify(&unknown), Err(Error::InvalidToken)));
    assert!(matches!(
        store.verify(&bad_checksum(&unknown)),
        Err(Error::Malformed(_))
    ));
    // The right token still verifies after all that.
    assert!(store.verify(good.expose()).is_ok());
}
