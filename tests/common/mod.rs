//! Shared by test files (each has `mod common;`).

use std::path::Path;
use std::time::{Duration, Instant};

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
