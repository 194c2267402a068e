//! Opening and closing a store.

use super::*;

impl TokenStore {
    /// Opens (or creates) the store in directory `path` with default
    /// settings; the key file is `path` with `.key` appended.
    ///
    /// **Blocks** while the store loads: about 0.9 s per million tokens after a
    /// [`close`](TokenStore::close) (perf report, `open_to_verify_ms`), 2–3 s
    /// per million after a drop without one; then, for 65,536 tokens or
    /// more, a few milliseconds more to hand the memory the load freed back
    /// to the system (see [`Config::open`]).
    ///
    /// # Errors
    /// As [`Config::open`].
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let store = tokenvault::TokenStore::open(dir.path().join("tokens.db"))?;
    /// # drop(store);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open(path: impl AsRef<std::path::Path>) -> Result<TokenStore> {
        Config::new(path).open()
    }

    /// A temporary store with default settings, deleted when dropped.
    ///
    /// **Blocks** for a few milliseconds (it creates a directory and sled's
    /// files).
    ///
    /// # Errors
    /// [`Error::Io`] if the temporary files cannot be created.
    ///
    /// ```
    /// let store = tokenvault::TokenStore::temporary()?;
    /// # drop(store);
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn temporary() -> Result<TokenStore> {
        Config::temporary().open()
    }

    pub(crate) fn open_with(cfg: Config) -> Result<TokenStore> {
        #[cfg(feature = "postgres")]
        if cfg.postgres.is_some() {
            if cfg.read_only {
                return Err(Error::InvalidArgument(
                    "read_only is for a store on disk, not a shared PostgreSQL store".into(),
                ));
            }
            return replicated::open(cfg);
        }
        cfg.validate()?;
        // Whether the store exists, or the error of a file system that
        // cannot say (e.g. gone: never taken for "missing").
        let exists = |p: &std::path::Path| p.try_exists().map_err(crate::error::io_error);
        if let Some(p) = &cfg.path {
            if (!cfg.create_if_missing || cfg.read_only) && !exists(p)? {
                return Err(Error::NotFound(format!(
                    "no token store at {} (create one first)",
                    p.display()
                )));
            }
        }
        if let Some(p) = cfg.path.as_ref().filter(|_| cfg.create_new) {
            if exists(p)? {
                return Err(Error::Conflict(format!(
                    "a token store already exists at {}",
                    p.display()
                )));
            }
        }
        let key = match (&cfg.key, cfg.key_file_path()) {
            (Some(k), _) => k.clone(),
            (None, Some(kf)) => {
                let exists = match &cfg.path {
                    Some(p) => exists(p)?,
                    None => false,
                };
                let loose = cfg.allow_loose_key_permissions;
                let (key, created) = load_or_create(&kf, !exists, loose)?;
                if cfg.create_new && !created {
                    return Err(Error::Conflict(format!(
                        "a key file already exists at {}: another store was created there \
                         first, or the key file was left without its store (move it away)",
                        kf.display()
                    )));
                }
                key
            }
            (None, None) => StoreKey::generate()?,
        };
        let store = if cfg.read_only {
            // Nothing to recover from at run time: it never writes.
            let backend = crate::storage::open_embedded_read_only(
                cfg.path.as_deref().unwrap_or(std::path::Path::new("")),
                cfg.cache_bytes,
            )?;
            Self::with_backend(Box::new(backend), cfg, key)?
        } else {
            Self::open_recoverable(cfg, key)?
        };
        // What the load freed goes back to the system, the loader gone.
        store.inner.mem.give_back_after_load();
        Ok(store)
    }

    pub(super) fn with_backend(
        backend: Box<dyn Backend>,
        cfg: Config,
        key: StoreKey,
    ) -> Result<TokenStore> {
        let fingerprint = key.derive(FINGERPRINT_CONTEXT);
        let (current, older) = backend.schema();
        match backend.meta_get("schema")? {
            Some(_) if cfg.create_new => {
                return Err(Error::Conflict(
                    "a token store already exists there (created meanwhile)".into(),
                ))
            }
            None if cfg.read_only => {
                return Err(Error::NotFound(
                    "no token store there yet (a read-only open creates none)".into(),
                ))
            }
            None => {
                backend.meta_put("key_fingerprint", &fingerprint[..16])?;
                backend.meta_put("schema", current)?;
            }
            Some(v) if v == current || older.contains(&&v[..]) => {
                let stored = backend.meta_get("key_fingerprint")?;
                let ok = stored
                    .as_deref()
                    .is_some_and(|s| bool::from(s.ct_eq(&fingerprint[..16])));
                if !ok {
                    return Err(Error::KeyMismatch);
                }
                if v != current && cfg.read_only {
                    return Err(Error::Conflict(format!(
                        "the store has the older format {:?}: open it once without read_only \
                         to upgrade it",
                        String::from_utf8_lossy(&v)
                    )));
                }
                if v != current {
                    backend.upgrade(&v)?;
                    backend.meta_put("schema", current)?;
                }
            }
            Some(v) => {
                return Err(Error::Corrupt(format!(
                    "unknown schema version {:?}",
                    String::from_utf8_lossy(&v)
                )))
            }
        }
        let policy = Arc::new(cfg.policy.clone());
        let mut inner = Inner {
            policy: policy.clone(),
            clock: cfg.clock.clone(),
            prefix: cfg.prefix.clone(),
            refresh_key: Box::new(key.derive("tokenvault 2026-11 refresh verifier").into()),
            access_key: Box::new(key.derive("tokenvault 2026-11 access verifier").into()),
            access_ttl: cfg.access_ttl.as_secs(),
            cap: cfg.max_access_per_refresh,
            durable_exchange: cfg.durable_exchange,
            lazy_flush_every: cfg.lazy_flush_every,
            retention: cfg.retention.as_secs(),
            pending_window: cfg.pending_claim_window.as_secs().max(1),
            rotation_leeway: cfg
                .rotation_leeway
                .as_secs()
                .min(super::rotate_on_use::MAX_ROTATION_LEEWAY),
            audit_retention: cfg.audit_retention.as_secs(),
            max_live: cfg.max_live_tokens_per_member,
            denials: Mutex::new(denials::Denials::default()),
            mem: Memory::new(policy.clone()),
            flusher: Flusher::new(),
            skipped: 0,
            unlisted: 0,
            warm_start: false,
            event_seq: AtomicU64::new(0),
            replica: None,
            scope_names: crate::policy::interned_names(&cfg.policy),
            recovery: None,
            backend,
        };
        // Loading is applying every stored record to empty memory, one at
        // a time as the backend reads it (from several threads at once).
        let mut tries = 0;
        let loaded = loop {
            let loader = crate::memory::Loader::new(&inner.mem);
            let loaded = inner.backend.load(&Sink(&loader))?;
            if !loaded.again {
                inner.unlisted = loader.finish();
                break loaded;
            }
            // What the backend handed over is not to be trusted (see
            // `Loaded::again`): thrown away with the memory made of it.
            drop(loader);
            inner.mem = Memory::new(policy.clone());
            tries += 1;
            if tries > 1 {
                return Err(Error::Io("the store's records could not be loaded".into()));
            }
        };
        inner.skipped = loaded.skipped;
        inner.warm_start = loaded.warm;
        inner.event_seq = AtomicU64::new(loaded.last_event_seq);
        Ok(TokenStore {
            inner: Arc::new(inner),
        })
    }

    pub(crate) fn downgrade(&self) -> std::sync::Weak<Inner> {
        Arc::downgrade(&self.inner)
    }

    pub(crate) fn upgrade(weak: &std::sync::Weak<Inner>) -> Option<TokenStore> {
        weak.upgrade().map(|inner| TokenStore { inner })
    }

    /// The token prefix of this store (e.g. `tv`). Does not block.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The directory of a store on disk, as it was opened (none for a
    /// temporary or shared store). Does not block.
    #[cfg_attr(not(feature = "admin"), allow(dead_code))]
    pub(crate) fn dir(&self) -> Option<&std::path::Path> {
        self.inner.dir()
    }

    /// The role → scopes policy of this store. Does not block.
    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }
}

impl Config {
    /// Opens the store.
    ///
    /// # Errors
    /// - [`Error::InvalidArgument`] for a bad setting (prefix, zero TTL or
    ///   cap);
    /// - [`Error::NotFound`] if the store does not exist and
    ///   `create_if_missing` is false, or [`Config::read_only`] is set;
    /// - [`Error::KeyMismatch`] if the key is not the one the store was
    ///   created with (or the key file is missing for an existing store);
    /// - [`Error::KeyFileExposed`] (kind `key_mismatch`) if group or others
    ///   may access the key file (see
    ///   [`Config::allow_loose_key_permissions`]);
    /// - [`Error::Conflict`] with [`Config::create_new`] if the store or its
    ///   key file exists;
    /// - [`Error::Corrupt`] for a store of an unknown format version;
    /// - [`Error::Conflict`] with [`Config::read_only`] for a store of an
    ///   older format version (a read-only open cannot upgrade it);
    /// - [`Error::Io`] if the files cannot be read or written (the disk is
    ///   full, or another process holds the store: the message says which;
    ///   with [`Config::read_only`], a full disk means the open needed room
    ///   to recover the store after an unclean stop), or the file system
    ///   cannot say whether the store exists (e.g. gone).
    ///
    /// Blocks while it reads the store (after a failed sync of the store on
    /// this boot, it first reads and writes back all of its files, see
    /// `docs/durability.md`); after loading 65,536 tokens or more, it
    /// hands the memory that loading freed back to the system (with
    /// glibc: `malloc_trim`, a few milliseconds; it trims the whole
    /// process's allocator, not only the store's);
    /// waits up to two seconds for a store that
    /// another handle in this process is letting go of, or whose directory
    /// another process holds, then fails with [`Error::Io`] saying so.
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("tokens.db");
    /// let store = tokenvault::Config::new(&path).open()?;
    /// drop(store);
    /// assert!(path.with_file_name("tokens.db.key").exists());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open(self) -> Result<TokenStore> {
        TokenStore::open_with(self)
    }
}

/// Memory's loader as the sink of a backend's load.
struct Sink<'a, 'm>(&'a crate::memory::Loader<'m>);

impl crate::storage::LoadSink for Sink<'_, '_> {
    fn org_cutoff(&self, org: String, at: u64) {
        self.0.org_cutoff(org, at);
    }
    fn org_policy(&self, org: String, policy: crate::codec::OrgPolicyRecord) {
        self.0.org_policy(org, policy);
    }
    fn member(&self, m: crate::codec::MemberRecord) {
        self.0.member(m);
    }
    fn refresh(&self, r: &crate::codec::RefreshView<'_>) {
        self.0.refresh(r);
    }
    fn access(&self, rec: AccessRecord) {
        self.0.access(rec);
    }
    fn last_refresh(&self, id: [u8; 16], at: u64, client: Option<crate::types::ClientInfo>) {
        self.0.last_refresh(id, at, client);
    }
}
