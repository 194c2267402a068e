//! Opening a store: [`Config`] and the store key.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::policy::Policy;
use crate::store::TokenStore;

/// The 32-byte key that makes stored verifiers useless without it.
///
/// Give it from the host's secret manager with [`StoreKey::from_bytes`], or
/// let the store create a key file beside the database on first open. Its
/// `Debug` output is redacted and its memory is wiped on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct StoreKey(pub(crate) [u8; 32]);

impl StoreKey {
    /// A key from raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        StoreKey(bytes)
    }

    /// A new random key from the operating system's CSPRNG.
    ///
    /// # Errors
    /// [`Error::Io`] if the operating system's random source fails.
    ///
    /// ```
    /// let a = tokenvault::StoreKey::generate()?;
    /// let b = tokenvault::StoreKey::generate()?;
    /// assert_ne!(a.as_bytes(), b.as_bytes());
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    pub fn generate() -> Result<Self> {
        let mut k = [0u8; 32];
        crate::token::os_random(&mut k)?;
        Ok(StoreKey(k))
    }

    /// The raw bytes (for handing to a secret manager).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub(crate) fn derive(&self, context: &str) -> [u8; 32] {
        blake3::derive_key(context, &self.0)
    }
}

impl fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoreKey(redacted)")
    }
}

/// How to open a [`TokenStore`]. Every setting has a sensible default; see
/// each method.
///
/// ```
/// use std::time::Duration;
/// use tokenvault::{Config, ManualClock};
/// let store = Config::temporary()
///     .access_ttl(Duration::from_secs(600))
///     .max_access_per_refresh(4)
///     .prefix("sq")
///     .clock(ManualClock::new(1_700_000_000))
///     .open()?;
/// # drop(store);
/// # Ok::<(), tokenvault::Error>(())
/// ```
#[derive(Clone)]
pub struct Config {
    pub(crate) path: Option<PathBuf>,
    pub(crate) key: Option<StoreKey>,
    pub(crate) key_file: Option<PathBuf>,
    pub(crate) access_ttl: Duration,
    pub(crate) max_access_per_refresh: usize,
    pub(crate) prefix: String,
    pub(crate) policy: Policy,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) durable_exchange: bool,
    pub(crate) lazy_flush_every: u64,
    pub(crate) retention: Duration,
    pub(crate) audit_retention: Duration,
    pub(crate) max_live_tokens_per_member: usize,
    pub(crate) create_if_missing: bool,
    pub(crate) cache_bytes: u64,
    /// A shared PostgreSQL store instead of sled (see `Config::postgres`).
    #[cfg(feature = "postgres")]
    pub(crate) postgres: Option<crate::replica::PostgresOptions>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Config");
        d.field("path", &self.path)
            .field("key", &self.key.as_ref().map(|_| "redacted"))
            .field("key_file", &self.key_file)
            .field("access_ttl", &self.access_ttl)
            .field("max_access_per_refresh", &self.max_access_per_refresh)
            .field("prefix", &self.prefix)
            .field("durable_exchange", &self.durable_exchange)
            .field("retention", &self.retention)
            .field("audit_retention", &self.audit_retention)
            .field(
                "max_live_tokens_per_member",
                &self.max_live_tokens_per_member,
            );
        #[cfg(feature = "postgres")]
        d.field("postgres", &self.postgres);
        d.finish_non_exhaustive()
    }
}

impl Config {
    fn base(path: Option<PathBuf>) -> Self {
        Config {
            path,
            key: None,
            key_file: None,
            access_ttl: Duration::from_secs(3600),
            max_access_per_refresh: 10,
            prefix: "tv".into(),
            policy: Policy::default(),
            clock: Arc::new(SystemClock),
            durable_exchange: false,
            lazy_flush_every: 1024,
            retention: Duration::from_secs(30 * 24 * 3600),
            audit_retention: Duration::from_secs(400 * 24 * 3600),
            max_live_tokens_per_member: 100,
            create_if_missing: true,
            cache_bytes: 64 * 1024 * 1024,
            #[cfg(feature = "postgres")]
            postgres: None,
        }
    }

    /// A store in the directory `path` (created if missing, unless
    /// [`Config::create_if_missing`] says otherwise).
    pub fn new(path: impl AsRef<Path>) -> Self {
        Config::base(Some(path.as_ref().to_path_buf()))
    }

    /// A store that lives in a temporary directory and is deleted when the
    /// last handle is dropped; for tests and examples. Without an explicit
    /// key, a random key is used.
    pub fn temporary() -> Self {
        Config::base(None)
    }

    /// The store key (default: read from the key file, or created there on
    /// first open; random for a temporary store).
    pub fn key(mut self, key: StoreKey) -> Self {
        self.key = Some(key);
        self
    }

    /// Where the key file lives (default: the database path with `.key`
    /// appended, e.g. `tokenvault.db.key`). Created with mode 0600.
    pub fn key_file(mut self, path: impl AsRef<Path>) -> Self {
        self.key_file = Some(path.as_ref().to_path_buf());
        self
    }

    /// Lifetime of access tokens (default one hour; at least one second).
    pub fn access_ttl(mut self, ttl: Duration) -> Self {
        self.access_ttl = ttl;
        self
    }

    /// How many live access tokens one refresh token may have; an exchange
    /// beyond it evicts the oldest (default 10, at least 1).
    pub fn max_access_per_refresh(mut self, n: usize) -> Self {
        self.max_access_per_refresh = n;
        self
    }

    /// The token prefix: 1 to 16 lowercase ASCII letters or digits (default
    /// `tv`, giving `tvr_…` and `tva_…`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The role → scopes policy (default [`Policy::default`]).
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// The clock (default the system clock).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Whether `exchange` waits for its write to be durable (default false:
    /// an access token lost to a crash costs the client one more exchange,
    /// never security, since revocations are durable).
    pub fn durable_exchange(mut self, yes: bool) -> Self {
        self.durable_exchange = yes;
        self
    }

    /// After this many lazy writes the writer flushes, so that the backlog a
    /// durable call inherits stays small (default 1024, at least 1).
    pub fn lazy_flush_every(mut self, n: u64) -> Self {
        self.lazy_flush_every = n;
        self
    }

    /// How long revoked and expired refresh records are kept (for the lists
    /// and the audit) before `purge_expired` removes them (default 30 days).
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// How long audit events are kept before `purge_expired` removes them
    /// (default 400 days), counted from an event's last call. On sled the
    /// issue event of a token still stored stays with the token.
    pub fn audit_retention(mut self, retention: Duration) -> Self {
        self.audit_retention = retention;
        self
    }

    /// How many live (active, unexpired) refresh tokens one member may
    /// hold (default 100, at least 1); a token the Owner assigns counts
    /// against the member it is assigned to. `generate` or `assign` past
    /// it fails with [`Error::Limit`] and changes nothing.
    pub fn max_live_tokens_per_member(mut self, n: usize) -> Self {
        self.max_live_tokens_per_member = n;
        self
    }

    /// Whether opening creates a missing store (default true). With false,
    /// opening a path that does not exist fails with [`Error::NotFound`] and
    /// creates nothing.
    pub fn create_if_missing(mut self, yes: bool) -> Self {
        self.create_if_missing = yes;
        self
    }

    /// Bytes of page cache the storage engine may use (default 64 MiB).
    pub fn cache_bytes(mut self, bytes: u64) -> Self {
        self.cache_bytes = bytes;
        self
    }

    /// Opens the store.
    ///
    /// # Errors
    /// - [`Error::InvalidArgument`] for a bad setting (prefix, zero TTL or
    ///   cap);
    /// - [`Error::NotFound`] if the store does not exist and
    ///   `create_if_missing` is false;
    /// - [`Error::KeyMismatch`] if the key is not the one the store was
    ///   created with (or the key file is missing for an existing store);
    /// - [`Error::Corrupt`] for a store of an unknown format version;
    /// - [`Error::Io`] if the files cannot be read or written.
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

    pub(crate) fn validate(&self) -> Result<()> {
        crate::token::validate_prefix(&self.prefix)?;
        if self.access_ttl.as_secs() == 0 {
            return Err(Error::InvalidArgument(
                "access_ttl must be at least one second".into(),
            ));
        }
        if self.max_access_per_refresh == 0 {
            return Err(Error::InvalidArgument(
                "max_access_per_refresh must be at least 1".into(),
            ));
        }
        if self.max_live_tokens_per_member == 0 {
            return Err(Error::InvalidArgument(
                "max_live_tokens_per_member must be at least 1".into(),
            ));
        }
        if self.lazy_flush_every == 0 {
            return Err(Error::InvalidArgument(
                "lazy_flush_every must be at least 1".into(),
            ));
        }
        Ok(())
    }

    pub(crate) fn key_file_path(&self) -> Option<PathBuf> {
        if let Some(k) = &self.key_file {
            return Some(k.clone());
        }
        let p = self.path.as_ref()?;
        let mut name = p.file_name()?.to_os_string();
        name.push(".key");
        Some(p.with_file_name(name))
    }
}

/// Reads the key file, or creates it (mode 0600) when `create` is true.
pub(crate) fn load_or_create_key(path: &Path, create: bool) -> Result<StoreKey> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let arr: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                Error::Corrupt(format!("key file {} is not 32 bytes", path.display()))
            })?;
            let mut bytes = bytes;
            bytes.zeroize();
            Ok(StoreKey(arr))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            let key = StoreKey::generate()?;
            write_key_file(path, &key)?;
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::KeyMismatch),
        Err(e) => Err(Error::Io(format!(
            "cannot read key file {}: {e}",
            path.display()
        ))),
    }
}

fn write_key_file(path: &Path, key: &StoreKey) -> Result<()> {
    use std::io::Write;
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent)?;
        }
    }
    // Written whole to a side file, then renamed: a crash midway leaves no
    // short key file behind, only a side file that the next open replaces.
    let mut side = path.as_os_str().to_os_string();
    side.push(".new");
    let side = PathBuf::from(side);
    let _ = std::fs::remove_file(&side);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(&side)
        .map_err(|e| Error::Io(format!("cannot create key file {}: {e}", side.display())))?;
    f.write_all(&key.0)?;
    f.sync_all()?;
    drop(f);
    // A hard link never replaces an existing file: if another process made
    // the key first, its key stands and this open fails clearly.
    let linked = std::fs::hard_link(&side, path);
    let _ = std::fs::remove_file(&side);
    linked.map_err(|e| Error::Io(format!("cannot create key file {}: {e}", path.display())))?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if let Ok(dir) = std::fs::File::open(parent) {
            let _ = dir.sync_all();
        }
    }
    Ok(())
}
