//! The store that the timing examples (`open_time`, `resync_time`) open
//! again and again: their arguments, its configuration and its first build.

use std::error::Error;
use std::path::PathBuf;
use std::time::Instant;

use tokenvault::{Config, StoreKey};

use super::{populate, Layout};

/// A store directory and how many tokens it is built with.
pub struct TimedStore {
    pub dir: PathBuf,
    pub tokens: usize,
}

impl TimedStore {
    /// From the arguments `DIR [TOKENS]` (`TOKENS` defaults to 1,000,000
    /// and may be written `1_000_000`); `usage` is the error without `DIR`.
    pub fn from_args(usage: &'static str) -> Result<TimedStore, Box<dyn Error>> {
        let mut args = std::env::args().skip(1);
        let dir = PathBuf::from(args.next().ok_or(usage)?);
        let tokens: usize = match args.next() {
            Some(n) => n.replace('_', "").parse()?,
            None => 1_000_000,
        };
        Ok(TimedStore { dir, tokens })
    }

    /// Its configuration: a fixed key, and room for every access token a
    /// benchmark store keeps per refresh token.
    pub fn config(&self) -> Config {
        Config::new(&self.dir)
            .key(StoreKey::from_bytes([0x42; 32]))
            .max_access_per_refresh(10_001)
    }

    /// When the directory does not exist yet, builds the store there with
    /// `config` (the layout of `perf_report`), closes it, prints how long
    /// that took and answers true; otherwise does nothing and answers false.
    pub fn build_if_missing(&self, config: Config) -> Result<bool, Box<dyn Error>> {
        if self.dir.exists() {
            return Ok(false);
        }
        let t = Instant::now();
        let store = config.open()?;
        populate(&store, Layout::for_tokens(self.tokens), 10)?;
        store.close()?;
        println!(
            "built {} tokens in {:.1} s",
            self.tokens,
            t.elapsed().as_secs_f64()
        );
        Ok(true)
    }
}
