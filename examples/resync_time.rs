//! Times what an open costs after a failed sync of the store (see
//! `docs/durability.md`): every file of the store is read and written back
//! in place and synced before sled reads them. Compared with a plain open
//! of the same store, on the same machine, one after the other.
//!
//! ```text
//! cargo run --release --example resync_time -- DIR [TOKENS]
//! ```
//!
//! The first run with a new `DIR` builds a store of `TOKENS` tokens there
//! (default 1,000,000; the layout of `perf_report`) and closes it. Every
//! run then opens it plainly (and closes it), then opens it once more with
//! the failed-sync marker in place, and prints both times and the store's
//! size. The page cache is left as it is (warm, from the build or the run
//! before): the rewrite's reads cost more when the files are not cached.

#[path = "../benches/support/mod.rs"]
mod support;

use std::time::Instant;

use support::{populate, Layout};
use tokenvault::{Config, StoreKey};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().ok_or("usage: resync_time DIR [TOKENS]")?);
    let tokens: usize = match args.next() {
        Some(n) => n.replace('_', "").parse()?,
        None => 1_000_000,
    };
    let config = || {
        Config::new(&dir)
            .key(StoreKey::from_bytes([0x42; 32]))
            .max_access_per_refresh(10_001)
    };
    if !dir.exists() {
        let t = Instant::now();
        let store = config().open()?;
        populate(&store, Layout::for_tokens(tokens), 10)?;
        store.close()?;
        println!(
            "built {tokens} tokens in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
    let bytes: u64 = walk(&dir);
    let t = Instant::now();
    let store = config().open()?;
    let plain = t.elapsed();
    store.close()?;
    // The marker a failed sync leaves (its first line is not read).
    std::fs::write(dir.join("unsynced"), b"a sync failed\n")?;
    let t = Instant::now();
    let store = config().open()?;
    let rewritten = t.elapsed();
    assert!(
        !dir.join("unsynced").exists(),
        "the open did not take the marker"
    );
    store.close()?;
    println!(
        "{{\"tokens\": {tokens}, \"store_bytes\": {bytes}, \"open_ms\": {:.0}, \
         \"open_after_failed_sync_ms\": {:.0}}}",
        plain.as_secs_f64() * 1e3,
        rewritten.as_secs_f64() * 1e3
    );
    Ok(())
}

/// Bytes of every file under `dir`.
fn walk(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => dirs.push(e.path()),
                Ok(_) => total += e.metadata().map_or(0, |m| m.len()),
                Err(_) => {}
            }
        }
    }
    total
}
