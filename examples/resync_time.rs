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

use support::timed_store::TimedStore;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let timed = TimedStore::from_args("usage: resync_time DIR [TOKENS]")?;
    timed.build_if_missing(timed.config())?;
    let (dir, tokens) = (&timed.dir, timed.tokens);
    let bytes: u64 = walk(dir);
    let t = Instant::now();
    let store = timed.config().open()?;
    let plain = t.elapsed();
    store.close()?;
    // The marker a failed sync leaves (its first line is not read).
    std::fs::write(dir.join("unsynced"), b"a sync failed\n")?;
    let t = Instant::now();
    let store = timed.config().open()?;
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
