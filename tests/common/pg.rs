//! A scratch PostgreSQL database for one test, on the server that
//! `.ci/postgres.sh` starts (`TOKENVAULT_PG_URL`), dropped when the test
//! ends, passed or failed.

use postgres::{Client, NoTls};
use tokenvault::{Config, ManualClock, PostgresOptions, StoreKey, TokenStore};

/// A database of its own for one test; dropped (with its connections) on
/// drop.
pub struct ScratchDb {
    admin: String,
    name: String,
    /// The connection string of the new database.
    pub url: String,
}

impl ScratchDb {
    /// A new, empty database named after `tag` and this process. `None`
    /// when `TOKENVAULT_PG_URL` is unset (the test then returns early; it is
    /// `#[ignore]`d in a plain run), and a failure when it is unset while
    /// `TOKENVAULT_PG_REQUIRED` says a server must be there.
    pub fn new(tag: &str) -> Option<ScratchDb> {
        let Some(admin) = std::env::var("TOKENVAULT_PG_URL")
            .ok()
            .filter(|u| !u.is_empty())
        else {
            assert!(
                std::env::var_os("TOKENVAULT_PG_REQUIRED").is_none(),
                "TOKENVAULT_PG_REQUIRED is set but TOKENVAULT_PG_URL is not"
            );
            eprintln!("note: skipped: TOKENVAULT_PG_URL is not set");
            return None;
        };
        let name = format!("tv_{tag}_{}", std::process::id());
        let mut c = Client::connect(&admin, NoTls).expect("connect to TOKENVAULT_PG_URL");
        c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .unwrap();
        c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        let url = format!("{admin} dbname={name}");
        Some(ScratchDb { admin, name, url })
    }

    /// Opens replicas of one store on this database: each call opens
    /// another, all with the same new key and a pool of two connections.
    pub fn replicas(&self) -> impl Fn() -> TokenStore + '_ {
        self.replicas_with(|c| c)
    }

    /// [`ScratchDb::replicas`], every replica on `clock`.
    #[allow(dead_code)]
    pub fn replicas_on(&self, clock: &ManualClock) -> impl Fn() -> TokenStore + '_ {
        let clock = clock.clone();
        self.replicas_with(move |c| c.clock(clock.clone()))
    }

    fn replicas_with<'a>(
        &'a self,
        more: impl Fn(Config) -> Config + 'a,
    ) -> impl Fn() -> TokenStore + 'a {
        let key = StoreKey::generate().unwrap();
        move || {
            more(
                Config::postgres_with(PostgresOptions::new(&self.url).pool_size(2))
                    .key(key.clone()),
            )
            .open()
            .unwrap()
        }
    }
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        if let Ok(mut c) = Client::connect(&self.admin, NoTls) {
            let _ = c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}
