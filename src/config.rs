//! Opening a store: [`Config`] and the store key.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::clock::{Clock, SystemClock};
use crate::error::{Error, IoError, Result};
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
    pub(crate) allow_loose_key_permissions: bool,
    pub(crate) create_new: bool,
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
            allow_loose_key_permissions: false,
            create_new: false,
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

    /// Whether a key file that group or others may access is accepted
    /// (default false: opening refuses it with [`Error::KeyFileExposed`],
    /// kind `key_mismatch`, as ssh refuses such a private key). For a host
    /// whose key file must be shared with a group (say, read through a
    /// group-owned secret mount); the store's own files stay 0600.
    pub fn allow_loose_key_permissions(mut self, yes: bool) -> Self {
        self.allow_loose_key_permissions = yes;
        self
    }

    /// Whether opening must create the store (default false). With true,
    /// opening a store that exists, or whose key file exists, fails with
    /// [`Error::Conflict`] and changes nothing; of two callers creating one
    /// store at once, exactly one succeeds (as `tokenvault init` does).
    pub fn create_new(mut self, yes: bool) -> Self {
        self.create_new = yes;
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
    /// - [`Error::KeyFileExposed`] (kind `key_mismatch`) if group or others
    ///   may access the key file (see
    ///   [`Config::allow_loose_key_permissions`]);
    /// - [`Error::Conflict`] with [`Config::create_new`] if the store or its
    ///   key file exists;
    /// - [`Error::Corrupt`] for a store of an unknown format version;
    /// - [`Error::Io`] if the files cannot be read or written (the disk is
    ///   full, or another process holds the store: the message says which).
    ///
    /// Blocks while it reads the store; waits up to two seconds for a store
    /// that another handle in this process is letting go of.
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
/// A key file that group or others may access is refused unless
/// `loose` allows it.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) fn load_or_create_key(path: &Path, create: bool, loose: bool) -> Result<StoreKey> {
    load_or_create(path, create, loose).map(|(key, _)| key)
}

/// [`load_or_create_key`], and whether this call made the key file.
///
/// Two callers creating one key file at once (two processes, two opens)
/// each write a key of their own to a file of their own and hard-link it
/// to `path`: a link never replaces a file, so the first one made stands,
/// and the other reads it. A key file is never seen half written: it
/// appears (by the link) only once its whole content is on disk.
pub(crate) fn load_or_create(path: &Path, create: bool, loose: bool) -> Result<(StoreKey, bool)> {
    // A new key is tried at most a few times: each failure means another
    // caller's file appeared (then it is read) or vanished meanwhile.
    for _ in 0..8 {
        match read_key_file(path, loose) {
            Ok(key) => return Ok((key, false)),
            Err(None) if create => {
                let key = StoreKey::generate()?;
                if write_key_file(path, &key)? {
                    return Ok((key, true));
                }
            }
            Err(None) => return Err(Error::KeyMismatch),
            Err(Some(e)) => return Err(e),
        }
    }
    Err(Error::Io(IoError::from(format!(
        "the key file {} keeps appearing and vanishing; is another program replacing it?",
        path.display()
    ))))
}

/// The key in the file at `path`; `Err(None)` if there is no such file.
fn read_key_file(path: &Path, loose: bool) -> std::result::Result<StoreKey, Option<Error>> {
    use std::io::Read;
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(None),
        Err(e) => {
            return Err(Some(Error::Io(IoError::with_source(
                format!("cannot read key file {}: {e}", path.display()),
                e,
            ))))
        }
    };
    #[cfg(unix)]
    if !loose {
        use std::os::unix::fs::PermissionsExt;
        let mode = f
            .metadata()
            .map_err(|e| {
                Some(Error::Io(IoError::with_source(
                    format!("cannot read key file {}: {e}", path.display()),
                    e,
                )))
            })?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(Some(Error::KeyFileExposed(format!(
                "the key file {p} has mode {m:04o}, so other users may read the store key; \
                 run `chmod 600 {p}` (or, where the host needs it, open with \
                 Config::allow_loose_key_permissions(true))",
                p = path.display(),
                m = mode & 0o7777
            ))));
        }
    }
    #[cfg(not(unix))]
    let _ = loose;
    // One byte more than a key, to tell a long file from a key.
    let mut buf = zeroize::Zeroizing::new([0u8; 33]);
    let mut n = 0;
    loop {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => {
                n += k;
                if n == buf.len() {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(Some(Error::Io(IoError::with_source(
                    format!("cannot read key file {}: {e}", path.display()),
                    e,
                ))))
            }
        }
    }
    if n != 32 {
        return Err(Some(Error::Corrupt(format!(
            "key file {} is not 32 bytes",
            path.display()
        ))));
    }
    let mut arr = [0u8; 32];
    arr.copy_from_slice(&buf[..32]);
    Ok(StoreKey(arr))
}

/// Writes `key` as the key file at `path` unless one exists: true if this
/// call made it, false if another was there first (nothing is changed then).
fn write_key_file(path: &Path, key: &StoreKey) -> Result<bool> {
    use std::io::Write;
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent {
        std::fs::create_dir_all(parent)?;
    }
    // A side file of this caller's own (its name is random): written whole
    // and synced, then linked into place. A crash midway leaves only a side
    // file, never a short key file; concurrent creators never touch each
    // other's side files.
    let mut tag = [0u8; 8];
    crate::token::os_random(&mut tag)?;
    let mut side = path.as_os_str().to_os_string();
    side.push(format!(
        ".new-{}-{:016x}",
        std::process::id(),
        u64::from_le_bytes(tag)
    ));
    let side = PathBuf::from(side);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&side).map_err(|e| {
        Error::Io(IoError::with_source(
            format!("cannot create key file {}: {e}", side.display()),
            e,
        ))
    })?;
    let written = (|| -> std::io::Result<()> {
        // The mode whatever the umask.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        f.write_all(&key.0)?;
        f.sync_all()
    })();
    drop(f);
    let linked = written.and_then(|()| std::fs::hard_link(&side, path));
    let _ = std::fs::remove_file(&side);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => {
            let mut err = crate::storage::sled_files::io_error(e);
            if let Error::Io(m) = &mut err {
                let reworded = format!("cannot create key file {}: {m}", path.display());
                *m.message_mut() = reworded;
            }
            return Err(err);
        }
    }
    // The new name is durable once its directory is.
    crate::storage::sled_files::sync_dir(parent.unwrap_or(Path::new(".")))?;
    Ok(true)
}
