//! What each command does: open the store, call the library, shape the
//! answer. The `tokenvault` binary runs a command here on a store it opens
//! itself ([`run`]); the admin socket runs it here on the store its process
//! holds ([`on_open_store`]): the same code either way.
#![allow(missing_docs)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{Config, TokenStore};
use serde_json::json;
use zeroize::Zeroizing;

use super::cli::{Cli, Command, MemberCommand, OrgCommand, TokenCommand};
use super::error::CliError;
use super::output::Report;

mod maintenance;
mod members;
mod tokens;

use maintenance::{audit, check, purge, stats};
use members::member;
use tokens::{exchange, token, verify};
pub use tokens::{read_stdin, MAX_STDIN};

/// Whom a command runs for.
pub enum Caller<'a> {
    /// The `tokenvault` process itself: standard input is its own, and
    /// `purge` draws a progress bar when standard error is a terminal.
    Local,
    /// A client of the admin socket: standard input, when a command reads
    /// it (a TOKEN given as `-`), is asked of the client through this
    /// function (at most `MAX_STDIN` + 1 bytes); nothing is drawn.
    Remote(&'a mut dyn FnMut() -> std::io::Result<Zeroizing<Vec<u8>>>),
}

impl Caller<'_> {
    fn is_local(&self) -> bool {
        matches!(self, Caller::Local)
    }
}

/// Runs the parsed command line in this process, opening the store itself.
/// **Blocks** for the open, the command and the close.
///
/// # Errors
/// A [`CliError`] with the kind and exit code the command answers (the
/// store's error kinds, `usage`, `io`…), as `tokenvault` prints it.
pub fn run(cli: &Cli) -> Result<Report, CliError> {
    let db = &cli.global.db;
    let loose = cli.global.allow_loose_key_permissions;
    match &cli.command {
        Command::Init => init(db, loose),
        Command::Demo => super::demo::run(),
        other if writes_nothing(other) => {
            // Opened to read only: on a full disk it still answers, and it
            // leaves the store as it found it (no checkpoint, the
            // warm-start files kept).
            let store = open_existing_as(db, loose, true)?;
            let result = on_store(&store, other, &mut Caller::Local);
            let closed = store.close();
            let report = match result {
                // A refusal is audited: the same command on the store
                // opened for writing records it (and is refused the same
                // way). Where that cannot be written (a full disk), the
                // answer is still the refusal.
                Err(e) if e.kind == "forbidden" => {
                    let _ = run_writing(db, loose, other);
                    return Err(e);
                }
                other => other?,
            };
            if let Err(e) = closed {
                super::output::print_stderr(&format!(
                    "warning: the command succeeded, but closing the store failed: {e}"
                ));
            }
            Ok(report)
        }
        other => run_writing(db, loose, other),
    }
}

/// Runs a command on the store opened for writing: every write (the audit
/// entry of a refused call too) is durable before it returns, and the
/// store is checkpointed.
fn run_writing(db: &Path, loose: bool, cmd: &Command) -> Result<Report, CliError> {
    // Before the store opens: its metrics register on first use.
    #[cfg(feature = "cli")]
    if let Command::Serve {
        metrics_listen: Some(_),
        ..
    } = cmd
    {
        super::serve::install_metrics()?;
    }
    let store = open_existing(db, loose)?;
    let result = on_store(&store, cmd, &mut Caller::Local);
    // Every write, including the audit entry of a refused call, is
    // durable before the process exits, and sled is checkpointed so
    // that the next command's open has no log to replay.
    let Ok(report) = result else {
        let _ = store.close();
        return result;
    };
    // Once everything is durable the call has succeeded: a failed
    // checkpoint after it (a full disk) only costs the next open
    // its log replay, so it is a warning, not a failure.
    if let Err(e) = store.flush() {
        let _ = store.close();
        return Err(e.into());
    }
    // `serve` may leave a request's store call finishing on a
    // blocking thread: give it a few seconds to let go.
    match store.close_timeout(Duration::from_secs(5)) {
        Ok(closed) if !closed.last_handle => {
            super::output::print_stderr(&format!(
                "warning: the command succeeded and its changes are durable, but the \
                 store was not checkpointed ({closed}; the next open replays the log \
                 instead)"
            ));
        }
        Ok(_) => {}
        Err(e) => {
            super::output::print_stderr(&format!(
                "warning: the command succeeded and its changes are durable, but the \
                 checkpoint after it failed (the next open replays the log instead): {e}"
            ));
        }
    }
    Ok(report)
}

/// The key file the library uses for `db`: the same path with `.key`
/// appended to its last component.
pub fn key_file(db: &Path) -> Result<PathBuf, CliError> {
    let name = db.file_name().ok_or_else(|| {
        CliError::new(
            "usage",
            format!(
                "--db {} does not name a directory (e.g. ./tokenvault.db)",
                db.display()
            ),
        )
    })?;
    let mut name = name.to_os_string();
    name.push(".key");
    Ok(db.with_file_name(name))
}

/// Whether `p` exists; a file system that cannot say (gone, failing) is an
/// `io` error, never taken for "missing".
fn exists(p: &Path) -> Result<bool, CliError> {
    p.try_exists()
        .map_err(|e| CliError::new("io", format!("cannot look at {}: {e}", p.display())))
}

/// The commands that only read (`verify`, `token list|show`, `member
/// list`, `audit`, `stats`, `check`): they open the store read-only.
fn writes_nothing(cmd: &Command) -> bool {
    matches!(
        cmd,
        Command::Verify { .. }
            | Command::Audit { .. }
            | Command::Stats
            | Command::Check
            | Command::Token(TokenCommand::List { .. } | TokenCommand::Show { .. })
            | Command::Member(MemberCommand::List { .. })
    )
}

/// Opens an existing store; creates nothing when it is missing.
pub fn open_existing(db: &Path, loose: bool) -> Result<TokenStore, CliError> {
    open_existing_as(db, loose, false)
}

/// [`open_existing`], read-only if `read_only` (see
/// `crate::Config::read_only`).
fn open_existing_as(db: &Path, loose: bool, read_only: bool) -> Result<TokenStore, CliError> {
    let kf = key_file(db)?;
    if !exists(db)? {
        return Err(CliError::new(
            "not_found",
            format!(
                "no token store at {} (create one with `tokenvault init`, or pass --db PATH)",
                db.display()
            ),
        ));
    }
    if !exists(&kf)? {
        return Err(CliError::new(
            "key_mismatch",
            format!(
                "the key file {} of the store {} is missing; the store opens only with the key it was created with",
                kf.display(),
                db.display()
            ),
        ));
    }
    Ok(Config::new(db)
        .create_if_missing(false)
        .allow_loose_key_permissions(loose)
        .read_only(read_only)
        .open()?)
}

fn init(db: &Path, loose: bool) -> Result<Report, CliError> {
    let kf = key_file(db)?;
    if exists(db)? {
        return Err(CliError::new(
            "conflict",
            format!("a token store already exists at {}", db.display()),
        ));
    }
    if exists(&kf)? {
        return Err(CliError::new(
            "conflict",
            format!(
                "a key file already exists at {} without its store; move it away first",
                kf.display()
            ),
        ));
    }
    // Of two `init`s racing on one path, one creates the store and the
    // other answers `conflict` (or, while the first holds it, `io`).
    let store = Config::new(db)
        .create_new(true)
        .allow_loose_key_permissions(loose)
        .open()?;
    store.flush()?;
    match store.close() {
        Ok(closed) if !closed.last_handle => super::output::print_stderr(&format!(
            "warning: the store was created, but not checkpointed: {closed}"
        )),
        Ok(_) => {}
        Err(e) => super::output::print_stderr(&format!(
            "warning: the store was created, but the checkpoint after it failed: {e}"
        )),
    }
    Ok(Report::new(
        json!({ "db": db.display().to_string(), "key_file": kf.display().to_string() }),
        format!(
            "Created a token store at {} with its key file {} (mode 0600; keep it secret and back it up).\n\
             Next: tokenvault member add ORG USER owner",
            db.display(),
            kf.display()
        ),
    ))
}

/// Runs a command for a client of the admin socket on the store this
/// process holds, then makes every write durable (as [`run`] does before
/// its process exits). `init`, `demo` and `serve` do not run there.
pub fn on_open_store(
    store: &TokenStore,
    cmd: &Command,
    caller: &mut Caller<'_>,
) -> Result<Report, CliError> {
    if let Some(name) = cmd.local_only() {
        return Err(CliError::new(
            "usage",
            format!("`{name}` does not run through the admin socket; run it where the store is"),
        ));
    }
    let result = on_store(store, cmd, caller);
    // Also after a refusal: its audit entry is made durable, as the local
    // run's close makes it.
    match (result, store.flush()) {
        (Ok(report), Ok(())) => Ok(report),
        (Ok(_), Err(e)) => Err(e.into()),
        (Err(e), _) => Err(e),
    }
}

fn on_store(
    store: &TokenStore,
    cmd: &Command,
    caller: &mut Caller<'_>,
) -> Result<Report, CliError> {
    match cmd {
        Command::Member(m) => member(store, m),
        Command::Token(t) => token(store, t),
        Command::Org(OrgCommand::Policy {
            actor,
            max_lifetime,
            unused_expiry,
            rotate_on_use,
        }) => {
            let mut p = store.org_policy(actor)?;
            if max_lifetime.is_some() || unused_expiry.is_some() || rotate_on_use.is_some() {
                if let Some(l) = max_lifetime {
                    p.max_lifetime = l.0;
                }
                if let Some(l) = unused_expiry {
                    p.unused_expiry = l.0;
                }
                if let Some(r) = rotate_on_use {
                    p.rotate_on_use = *r;
                }
                p = store.set_org_policy(actor, p)?;
            }
            let secs = |v: Option<u64>| v.map_or_else(|| "none".to_string(), |s| format!("{s}s"));
            Ok(Report::new(
                json!({
                    "org": actor.org,
                    "max_lifetime": p.max_lifetime,
                    "unused_expiry": p.unused_expiry,
                    "rotate_on_use": p.rotate_on_use,
                }),
                format!(
                    "Token policy of {}: max lifetime {}, unused expiry {}, rotate on use {}.",
                    actor.org,
                    secs(p.max_lifetime),
                    secs(p.unused_expiry),
                    p.rotate_on_use
                ),
            ))
        }
        Command::Exchange { token } => exchange(store, token, caller),
        Command::Verify { token, scope } => verify(store, token, scope.as_deref(), caller),
        Command::Audit {
            actor,
            limit,
            after,
        } => audit(store, actor, *limit, *after),
        Command::Purge { batch } => purge(store, *batch as usize, caller.is_local()),
        Command::Check => check(store),
        Command::Stats => stats(store),
        #[cfg(feature = "cli")]
        Command::Serve {
            listen,
            rate_per_minute,
            rate_burst,
            max_connections,
            max_connections_per_peer,
            first_request_timeout,
            metrics_listen,
            log_format,
            tls_cert,
            tls_key,
            no_admin_socket,
        } => {
            let limits = ServeLimits {
                max_connections: *max_connections,
                per_peer: *max_connections_per_peer,
                first_request_secs: *first_request_timeout,
                admin_socket: !*no_admin_socket,
            };
            let extras = super::serve::Extras {
                metrics_listen: *metrics_listen,
                log_format: log_format.clone(),
                tls: tls_cert.clone().zip(tls_key.clone()),
            };
            serve(
                store,
                *listen,
                *rate_per_minute,
                *rate_burst,
                &limits,
                &extras,
            )
        }
        #[cfg(not(feature = "cli"))]
        Command::Serve { .. } => Err(CliError::new(
            "usage",
            "`serve` needs the `cli` feature of tokenvault",
        )),
        Command::Init | Command::Demo => unreachable_command(),
    }
}

/// The connection limits of `serve`'s flags, and whether it offers the
/// admin socket.
#[cfg(feature = "cli")]
struct ServeLimits {
    max_connections: u64,
    per_peer: Option<u64>,
    first_request_secs: u64,
    admin_socket: bool,
}

#[cfg(feature = "cli")]
fn serve(
    store: &TokenStore,
    listen: std::net::SocketAddr,
    per_minute: u32,
    burst: u32,
    limits: &ServeLimits,
    extras: &super::serve::Extras,
) -> Result<Report, CliError> {
    use crate::http::{HttpConfig, RateLimit};
    // Logs go to standard error.
    super::logs::init(&extras.log_format);
    // A bad certificate or key is an error before anything is served.
    let tls = extras.load_tls()?;
    let cfg = if per_minute == 0 {
        HttpConfig::default().no_rate_limit()
    } else {
        HttpConfig::default().rate_limit(RateLimit { per_minute, burst })
    };
    let count = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
    // The operator's server describes itself at GET /openapi.json.
    let mut cfg = cfg
        .openapi(true)
        .max_connections(count(limits.max_connections))
        .first_request_timeout(std::time::Duration::from_secs(limits.first_request_secs));
    if let Some(n) = limits.per_peer {
        cfg = cfg.max_connections_per_peer(count(n));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::new("io", format!("cannot start the runtime: {e}")))?;
    // The command line reaches the store through the admin socket while
    // this process holds it; without one, `serve` still serves HTTP.
    let admin = limits.admin_socket.then(|| admin_socket(store)).flatten();
    let served = rt.block_on(super::serve::run(store, listen, &cfg, extras, tls));
    // Removes the socket file, after the requests in progress (bounded).
    drop(admin);
    served?;
    Ok(Report::new(
        json!({ "served": listen.to_string() }),
        format!("Stopped serving on {listen}."),
    ))
}

/// Offers the admin socket, or logs why not and goes on without it.
#[cfg(feature = "cli")]
fn admin_socket(store: &TokenStore) -> Option<super::AdminSocket> {
    #[cfg(unix)]
    match super::serve_admin(store) {
        Ok(socket) => {
            tracing::info!(
                target: "tokenvault::admin",
                "admin socket at {} (the tokenvault command line on this store goes through it)",
                socket.path().display()
            );
            Some(socket)
        }
        Err(e) => {
            tracing::warn!(
                target: "tokenvault::admin",
                "no admin socket, serving without one (the command line cannot reach this \
                 store while it runs): {e}"
            );
            None
        }
    }
    #[cfg(not(unix))]
    {
        let _ = store;
        None
    }
}

fn unreachable_command() -> Result<Report, CliError> {
    Err(CliError::new(
        "usage",
        "this command does not run on an existing store",
    ))
}

// ----- members -----
