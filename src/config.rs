//! Opening a store: [`Config`] and the store key.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::clock::{Clock, SystemClock};
use crate::error::{Error, IoError, Result};
use crate::policy::Policy;

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

/// How to open a [`TokenStore`](crate::TokenStore). Every setting has a sensible default; see
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
    pub(crate) pending_claim_window: Duration,
    pub(crate) rotation_leeway: Duration,
    pub(crate) audit_retention: Duration,
    pub(crate) max_live_tokens_per_member: usize,
    pub(crate) create_if_missing: bool,
    pub(crate) cache_bytes: u64,
    pub(crate) allow_loose_key_permissions: bool,
    pub(crate) create_new: bool,
    pub(crate) read_only: bool,
    /// A shared PostgreSQL store instead of sled (see `Config::postgres`).
    #[cfg(feature = "postgres")]
    pub(crate) postgres: Option<PostgresOptions>,
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
            .field("pending_claim_window", &self.pending_claim_window)
            .field("rotation_leeway", &self.rotation_leeway)
            .field("audit_retention", &self.audit_retention)
            .field(
                "max_live_tokens_per_member",
                &self.max_live_tokens_per_member,
            )
            .field("read_only", &self.read_only);
        #[cfg(feature = "postgres")]
        d.field("postgres", &self.postgres);
        d.finish_non_exhaustive()
    }
}

/// The smallest page cache [`Config::cache_bytes`] accepts (sled's own
/// floor is 256 bytes, and it panics below it; a page is the least that
/// makes sense).
const MIN_CACHE_BYTES: u64 = 4096;

/// The longest access token lifetime ([`Config::access_ttl`]): what fits
/// in the 30 bits that memory keeps it in (see `memory::entries`).
pub(crate) const MAX_ACCESS_TTL_SECS: u64 = (1 << 30) - 1;

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
            pending_claim_window: Duration::from_secs(7 * 24 * 3600),
            rotation_leeway: Duration::ZERO,
            audit_retention: Duration::from_secs(400 * 24 * 3600),
            max_live_tokens_per_member: 100,
            create_if_missing: true,
            cache_bytes: 64 * 1024 * 1024,
            allow_loose_key_permissions: false,
            create_new: false,
            read_only: false,
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

    /// Lifetime of access tokens (default one hour; at least one second, at
    /// most 2^30 seconds, about 34 years: memory keeps an access token's
    /// lifetime in 30 bits).
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

    /// How long a token assigned pending (`TokenStore::assign_pending`)
    /// waits for its member to claim it before it expires unclaimed
    /// (default 7 days).
    pub fn pending_claim_window(mut self, window: Duration) -> Self {
        self.pending_claim_window = window;
        self
    }

    /// How long a refresh token spent by a rotation on use (an
    /// organization's `rotate_on_use`, see
    /// [`TokenStore::oauth_refresh`](crate::TokenStore::oauth_refresh))
    /// keeps working, for a client that retries a refresh whose answer it
    /// lost (default 0: spent at once; whole seconds, at most 5 minutes,
    /// more is cut to that). Presented after it, the token is a reuse and
    /// its whole rotation family is revoked.
    pub fn rotation_leeway(mut self, leeway: Duration) -> Self {
        self.rotation_leeway = leeway;
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

    /// Bytes of page cache the storage engine may use (default 64 MiB, at
    /// least 4096: opening refuses less with [`Error::InvalidArgument`]).
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

    /// Whether the store is opened to read only (default false): for a
    /// tool that looks without changing anything (the CLI's `verify`,
    /// `token list`, `stats`, `check`, ...), so that it works on a full
    /// disk and leaves the store exactly as it found it.
    ///
    /// A read-only open writes nothing of its own: it keeps the warm-start
    /// files and their marker (see [`TokenStore::close`](crate::TokenStore::close)), and its close
    /// writes neither a checkpoint nor new warm-start files. Only recovery
    /// may write at open: sled's own after an unclean stop, and the rewrite
    /// after a failed sync on this boot (see `docs/durability.md`); on a
    /// full disk that open then fails with [`Error::Io`] saying the disk
    /// is full and that the open needed room to recover. Every call that
    /// would change the store fails with [`Error::Conflict`] and changes
    /// nothing; refused calls are not recorded in the audit trail. The
    /// store must exist ([`Config::create_if_missing`] does not apply).
    /// For a store on disk only (not [`Config::temporary`], nor a shared
    /// PostgreSQL store): opening otherwise fails with
    /// [`Error::InvalidArgument`].
    ///
    /// ```
    /// use tokenvault::{Config, Role, TokenStore};
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("tokens.db");
    /// let store = TokenStore::open(&path)?;
    /// store.add_member("acme", "ann", Role::Owner)?;
    /// store.close()?;
    ///
    /// let looking = Config::new(&path).read_only(true).open()?;
    /// assert_eq!(looking.member_role("acme", "ann"), Some(Role::Owner));
    /// let e = looking.add_member("acme", "bob", Role::User).unwrap_err();
    /// assert_eq!(e.kind(), "conflict");
    /// let report = looking.close()?;
    /// assert!(report.last_handle && !report.checkpoint);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn read_only(mut self, yes: bool) -> Self {
        self.read_only = yes;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        crate::token::validate_prefix(&self.prefix)?;
        if self.read_only && self.path.is_none() {
            return Err(Error::InvalidArgument(
                "read_only needs a store on disk, not a temporary one".into(),
            ));
        }
        if self.access_ttl.as_secs() == 0 {
            return Err(Error::InvalidArgument(
                "access_ttl must be at least one second".into(),
            ));
        }
        if self.access_ttl.as_secs() > MAX_ACCESS_TTL_SECS {
            return Err(Error::InvalidArgument(format!(
                "access_ttl must be at most {MAX_ACCESS_TTL_SECS} seconds (34 years)"
            )));
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
        if self.cache_bytes < MIN_CACHE_BYTES {
            return Err(Error::InvalidArgument(format!(
                "cache_bytes must be at least {MIN_CACHE_BYTES}"
            )));
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
            let mut err = crate::error::io_error(e);
            if let Error::Io(m) = &mut err {
                let reworded = format!("cannot create key file {}: {m}", path.display());
                *m.message_mut() = reworded;
            }
            return Err(err);
        }
    }
    // The new name is durable once its directory is (fsync of the
    // directory itself).
    std::fs::File::open(parent.unwrap_or(Path::new(".")))
        .and_then(|dir| dir.sync_all())
        .map_err(crate::error::io_error)?;
    Ok(true)
}

#[cfg(feature = "postgres")]
mod postgres_options {
    use std::fmt;
    use std::time::Duration;

    use super::Config;
    use crate::error::{Error, Result};

    /// Settings of a store on PostgreSQL; give them to
    /// [`Config::postgres_with`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use tokenvault::{Config, PostgresOptions, StoreKey};
    /// let config = Config::postgres_with(
    ///     PostgresOptions::new("host=127.0.0.1 user=tokenvault dbname=tokens")
    ///         .staleness_bound(Duration::from_millis(500))
    ///         .pool_size(8),
    /// )
    /// .key(StoreKey::from_bytes([7; 32]));
    /// # drop(config);
    /// ```
    #[derive(Clone)]
    pub struct PostgresOptions {
        pub(crate) url: String,
        pub(crate) staleness_bound: Duration,
        pub(crate) poll_interval: Option<Duration>,
        pub(crate) pool_size: usize,
        pub(crate) change_log_retention: Duration,
        pub(crate) read_through_per_second: u32,
        pub(crate) connect_timeout: Duration,
        pub(crate) lock_timeout: Duration,
        pub(crate) listen: bool,
    }

    impl fmt::Debug for PostgresOptions {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            // The connection string may hold a password: never shown.
            f.debug_struct("PostgresOptions")
                .field("url", &"redacted")
                .field("staleness_bound", &self.staleness_bound)
                .field("poll_interval", &self.poll())
                .field("pool_size", &self.pool_size)
                .field("change_log_retention", &self.change_log_retention)
                .field("read_through_per_second", &self.read_through_per_second)
                .field("listen", &self.listen)
                .finish_non_exhaustive()
        }
    }

    impl PostgresOptions {
        /// Options for the database at `url`, a libpq-style connection string:
        /// `postgresql://user:password@host:port/dbname` or
        /// `host=… port=… user=… dbname=…` (a `host` that starts with `/` is a
        /// Unix socket directory). TLS is not supported: use a Unix socket, a
        /// loopback address, or a TLS-terminating proxy beside the replica.
        pub fn new(url: impl Into<String>) -> Self {
            PostgresOptions {
                url: url.into(),
                staleness_bound: Duration::from_secs(1),
                poll_interval: None,
                pool_size: 4,
                change_log_retention: Duration::from_secs(600),
                read_through_per_second: 1000,
                connect_timeout: Duration::from_secs(2),
                lock_timeout: Duration::from_secs(5),
                listen: true,
            }
        }

        /// Whether to wait for `NOTIFY` (default true). With false, or when the
        /// server refuses `LISTEN` (engines that speak PostgreSQL's protocol
        /// without it), replicas learn of changes by polling alone: changes
        /// then take up to the poll interval to arrive, and the staleness bound
        /// holds all the same.
        pub fn listen(mut self, yes: bool) -> Self {
            self.listen = yes;
            self
        }

        /// How long a replica may go without a successful sync before
        /// verification fails closed (default 1 s, at least 10 ms). A
        /// revocation committed on any replica is in force on every replica for
        /// each verification that starts this long after the revocation
        /// returned.
        pub fn staleness_bound(mut self, bound: Duration) -> Self {
            self.staleness_bound = bound;
            self
        }

        /// How often a replica polls the change log when no notification comes
        /// (default a quarter of the staleness bound; must be below it). The
        /// poll is what keeps an idle replica fresh, and the fallback where
        /// `LISTEN`/`NOTIFY` is missing.
        pub fn poll_interval(mut self, every: Duration) -> Self {
            self.poll_interval = Some(every);
            self
        }

        /// Connections for commits and reads (default 4, 1 to 64); each replica
        /// also holds one for listening and, during management calls, one for
        /// the management lock.
        pub fn pool_size(mut self, n: usize) -> Self {
            self.pool_size = n;
            self
        }

        /// How long change-log rows are kept (default 10 minutes). A replica
        /// that was cut off for longer reloads a full snapshot instead.
        pub fn change_log_retention(mut self, retention: Duration) -> Self {
            self.change_log_retention = retention;
            self
        }

        /// At most this many database reads per second for tokens this replica
        /// does not hold in memory (default 1000, at least 1). Beyond it such a
        /// token gets [`Error::Limit`] (try again) instead of a database read: a
        /// guard against floods of made-up tokens, whose checksums anyone can
        /// compute.
        pub fn read_through_per_second(mut self, n: u32) -> Self {
            self.read_through_per_second = n;
            self
        }

        /// How long to wait for a connection (default 2 s), unless the
        /// connection string sets `connect_timeout`.
        pub fn connect_timeout(mut self, timeout: Duration) -> Self {
            self.connect_timeout = timeout;
            self
        }

        /// How long a management call waits for another replica's management
        /// call to finish (default 5 s).
        pub fn lock_timeout(mut self, timeout: Duration) -> Self {
            self.lock_timeout = timeout;
            self
        }

        pub(crate) fn poll(&self) -> Duration {
            self.poll_interval.unwrap_or(self.staleness_bound / 4)
        }

        pub(crate) fn validate(&self) -> Result<()> {
            let bad = |m: &str| Err(Error::InvalidArgument(m.into()));
            if self.staleness_bound < Duration::from_millis(10) {
                return bad("staleness_bound must be at least 10 ms");
            }
            if self.poll().is_zero() || self.poll() >= self.staleness_bound {
                return bad("poll_interval must be positive and below the staleness bound");
            }
            if !(1..=64).contains(&self.pool_size) {
                return bad("pool_size must be 1 to 64");
            }
            if self.read_through_per_second == 0 {
                return bad("read_through_per_second must be at least 1");
            }
            if self.connect_timeout.is_zero() || self.lock_timeout.is_zero() {
                return bad("connect_timeout and lock_timeout must be positive");
            }
            Ok(())
        }
    }

    impl Config {
        /// A store in the PostgreSQL database at `url`, shared by every replica
        /// opened on it, with default [`PostgresOptions`]. The store key must be
        /// given ([`Config::key`], or an existing [`Config::key_file`]), the
        /// same on every replica. The sled-only settings (path, cache, lazy
        /// flushing) do not apply.
        ///
        /// ```no_run
        /// use tokenvault::{Config, StoreKey};
        /// # let key_bytes = [7u8; 32];
        /// let store = Config::postgres("host=/run/postgresql user=svc dbname=tokens")
        ///     .key(StoreKey::from_bytes(key_bytes))
        ///     .open()?;
        /// # drop(store);
        /// # Ok::<(), tokenvault::Error>(())
        /// ```
        pub fn postgres(url: impl Into<String>) -> Self {
            Config::postgres_with(PostgresOptions::new(url))
        }

        /// A store on PostgreSQL with the given options; see
        /// [`Config::postgres`].
        pub fn postgres_with(options: PostgresOptions) -> Self {
            let mut c = Config::temporary();
            c.postgres = Some(options);
            c
        }
    }
}
#[cfg(feature = "postgres")]
pub use postgres_options::PostgresOptions;
