//! Exchanges at the cap of live access tokens per refresh token, where
//! each exchange evicts the family's oldest access token: the median time
//! of one, over rounds of exchanges spread across many families.
//!
//! ```text
//! cargo run --release --example exchange_at_cap -- [FAMILIES] [CAP]
//! ```
//!
//! Builds a store in a temporary directory with FAMILIES refresh tokens
//! (default 2,000) and a cap of CAP (default 10), exchanges each token CAP
//! times so that every family is full, then times seven rounds of
//! 5 × FAMILIES exchanges, each family in turn, and prints the median
//! round's time per exchange.

use std::time::Instant;

use tokenvault::{Actor, Config, Role, StoreKey};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let families: usize = args.next().map_or(Ok(2_000), |a| a.parse())?;
    let cap: usize = args.next().map_or(Ok(10), |a| a.parse())?;
    if families == 0 || cap == 0 {
        return Err("FAMILIES and CAP must be at least 1".into());
    }
    let dir = tempfile::tempdir()?;
    let store = Config::new(dir.path().join("store"))
        .key(StoreKey::from_bytes([0x42; 32]))
        .max_access_per_refresh(cap)
        .max_live_tokens_per_member(usize::MAX)
        .open()?;
    let mut refresh = Vec::with_capacity(families);
    for i in 0..families {
        let user = format!("u{}", i % 100);
        if i < 100 {
            store.add_member("acme", &user, Role::User)?;
        }
        let t = store.generate(&Actor::new("acme", &user), Default::default())?;
        refresh.push(t.token.expose().to_string());
    }
    for r in &refresh {
        for _ in 0..cap {
            store.exchange(r)?;
        }
    }
    let mut per_round = Vec::with_capacity(7);
    for round in 0..7 {
        let n = 5 * families;
        let t = Instant::now();
        for i in 0..n {
            store.exchange(&refresh[(i + round) % families])?;
        }
        per_round.push(t.elapsed().as_nanos() as f64 / n as f64);
    }
    per_round.sort_by(f64::total_cmp);
    println!(
        "{families} families, cap {cap}: an exchange at the cap took {:.0} ns (median of 7 rounds; {:.0}-{:.0})",
        per_round[3], per_round[0], per_round[6]
    );
    store.close()?;
    Ok(())
}
