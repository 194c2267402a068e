//! Random verification alone, for comparing builds side by side on a noisy
//! machine: builds a store of TOKENS tokens (the layout of `perf_report`)
//! in a temporary directory, closes and reopens it, then verifies the same
//! 100,000 access tokens of it (fewer in a smaller store) in one random
//! order, PASSES times, and prints the median pass's time per verification.
//!
//! ```text
//! cargo run --release --example verify_random -- [TOKENS] [PASSES]
//! ```
//!
//! Defaults: 1,000,000 tokens, 15 passes. Run two builds' binaries in turn,
//! several times each: `perf_report` measures the same thing among many
//! others, in a longer run that a noisy machine disturbs more.

#[path = "../benches/support/mod.rs"]
mod support;

use std::time::Instant;

use tokenvault::{Config, StoreKey};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let tokens: usize = args.next().map_or(Ok(1_000_000), |a| a.parse())?;
    let passes: usize = args.next().map_or(Ok(15), |a| a.parse())?;
    if tokens < 2 || passes == 0 {
        return Err("TOKENS must be at least 2 and PASSES at least 1".into());
    }
    let dir = tempfile::tempdir()?;
    let config = || {
        Config::new(dir.path().join("store"))
            .key(StoreKey::from_bytes([0x42; 32]))
            .max_access_per_refresh(10_001)
            .max_live_tokens_per_member(usize::MAX)
    };
    let store = config().cache_bytes(support::BUILD_CACHE_BYTES).open()?;
    let layout = support::Layout::for_tokens(tokens);
    let sample = support::populate(&store, layout, 100_000)?;
    store.close()?;
    let store = config().open()?;
    let access = &sample.access;
    // One random order (fixed seed), the same for every build.
    let order = support::random::shuffled(access.len(), 0x9e37_79b9_7f4a_7c15);
    let mut per_pass = Vec::with_capacity(passes);
    for _ in 0..passes {
        let t = Instant::now();
        for &k in &order {
            store.verify(&access[k as usize])?;
        }
        per_pass.push(t.elapsed().as_nanos() as f64 / order.len() as f64);
    }
    per_pass.sort_by(f64::total_cmp);
    println!(
        "{} tokens: verify in random order over {} access tokens took {:.0} ns (median of {passes} passes; {:.0}-{:.0})",
        layout.tokens(),
        order.len(),
        per_pass[passes / 2],
        per_pass[0],
        per_pass[passes - 1]
    );
    store.close()?;
    Ok(())
}
