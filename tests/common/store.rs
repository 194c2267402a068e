//! Store fixtures: a keyed configuration, the `acme` organization's usual
//! members, and raw sled access to a store's directory.

use std::path::Path;
use std::time::{Duration, Instant};

use tokenvault::{Actor, Config, Role, StoreKey, TokenStore};

/// The configuration of a store at `path` whose key is 32 bytes of `key`;
/// the caller adds its own settings and opens it.
pub fn keyed(path: impl AsRef<Path>, key: u8) -> Config {
    Config::new(path.as_ref()).key(StoreKey::from_bytes([key; 32]))
}

/// Adds olivia (Owner), adam (Admin) and uma (User) to `acme`, in that
/// order, and returns their actors in the same order.
pub fn seed_acme(store: &TokenStore) -> (Actor, Actor, Actor) {
    store.add_member("acme", "olivia", Role::Owner).unwrap();
    store.add_member("acme", "adam", Role::Admin).unwrap();
    store.add_member("acme", "uma", Role::User).unwrap();
    (
        Actor::new("acme", "olivia"),
        Actor::new("acme", "adam"),
        Actor::new("acme", "uma"),
    )
}

/// sled itself on a store's directory, waiting for the file lock that sled
/// may hold a moment after the store is dropped (its background threads let
/// go of the file a little later).
pub fn raw_sled(path: &Path) -> sled::Db {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match sled::open(path) {
            Ok(db) => return db,
            Err(e) if Instant::now() > deadline => panic!("{e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}
