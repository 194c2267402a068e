//! Times `TokenStore::open` of one store, again and again, to compare builds
//! side by side on a noisy machine (run two builds' binaries alternately).
//!
//! ```text
//! cargo run --release --example open_time -- DIR [TOKENS]
//! ```
//!
//! The first run with a new `DIR` builds a store of `TOKENS` tokens there
//! (default 1,000,000; the layout of `perf_report`) and closes it; later runs
//! open it `OPENS` times (environment, default 3), each after a pause, and
//! print the wall-clock time of the open, the CPU time the process spent in
//! it (all threads), the CPU time spent in the 2.5 s after it returned
//! (work left running in the background) with the resident memory then,
//! and the time of the `close` that follows (which writes the warm-start
//! files the next open reads). With `WATCH=S` in the environment, it also
//! prints the resident memory every 5 s for S seconds (rounded down to a
//! multiple of 5) after each open, before that open's line
//! (sled's flusher rewrites pages in the background after an open, reading
//! them into its cache). With `CACHE_MIB=N`, the opens give sled a page
//! cache of N MiB (`Config::cache_bytes`) instead of the default.

#[path = "../benches/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::timed_store::TimedStore;
use support::{process_cpu_ms, rss_mib, BUILD_CACHE_BYTES};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let timed = TimedStore::from_args("usage: open_time DIR [TOKENS]")?;
    if timed.build_if_missing(timed.config().cache_bytes(BUILD_CACHE_BYTES))? {
        return Ok(());
    }
    let opens: usize = std::env::var("OPENS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let watch: u64 = std::env::var("WATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut config = timed.config();
    if let Some(mib) = std::env::var("CACHE_MIB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        config = config.cache_bytes(mib << 20);
    }
    for _ in 0..opens {
        std::thread::sleep(Duration::from_millis(1500));
        let cpu = process_cpu_ms();
        let t = Instant::now();
        let store = config.clone().open()?;
        let wall = t.elapsed();
        let open_cpu = process_cpu_ms() - cpu;
        let cpu = process_cpu_ms();
        std::thread::sleep(Duration::from_millis(2500));
        let (after_cpu, rss) = (process_cpu_ms() - cpu, rss_mib());
        for waited in (5..=watch).step_by(5) {
            std::thread::sleep(Duration::from_secs(5));
            println!(
                "  {:.1} s after the open: rss {:.1} MiB",
                2.5 + waited as f64,
                rss_mib()
            );
        }
        let t = Instant::now();
        store.close()?;
        println!(
            "open {:.3} s, cpu {:.0} ms; after it: cpu {:.0} ms, rss {:.0} MiB; close {:.3} s",
            wall.as_secs_f64(),
            open_cpu,
            after_cpu,
            rss,
            t.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
