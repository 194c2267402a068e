//! What each command does: open the store, call the library, shape the
//! answer. The `tokenvault` binary runs a command here on a store it opens
//! itself ([`run`]); the admin socket runs it here on the store its process
//! holds ([`on_open_store`]): the same code either way.
#![allow(missing_docs)]

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{
    Config, GenerateOptions, Grace, IssuedToken, Page, RevokeScope, Role, TokenInfo, TokenStore,
};
use serde_json::{json, Value};
use zeroize::Zeroizing;

use super::cli::{Cli, Command, IssueArgs, MemberCommand, OrgCommand, TokenCommand};
use super::error::CliError;
use super::output::{plural, when, Report, Table};
use super::parse::format_time;

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

fn member(store: &TokenStore, cmd: &MemberCommand) -> Result<Report, CliError> {
    match cmd {
        MemberCommand::Add { org, user, role } => {
            store.add_member(org, user, *role)?;
            Ok(Report::new(
                json!({ "org": org, "user": user, "role": role }),
                format!("Added {user} to {org} as {role}."),
            ))
        }
        MemberCommand::Role { org, user, role } => {
            store.set_role(org, user, *role)?;
            Ok(Report::new(
                json!({ "org": org, "user": user, "role": role }),
                format!("{org}/{user} is now {role}; their tokens carry at most a {role}'s scopes from now on."),
            ))
        }
        MemberCommand::Remove { org, user } => {
            let n = store.remove_member(org, user)?;
            Ok(Report::new(
                json!({ "org": org, "user": user, "revoked": n }),
                format!(
                    "Removed {user} from {org} and revoked {}.",
                    plural(n as u64, "refresh token", "refresh tokens")
                ),
            ))
        }
        MemberCommand::Transfer { org, new_owner } => {
            let previous = owner_of(store, org);
            store.transfer_ownership(org, new_owner)?;
            let human = match &previous {
                Some(p) if p == new_owner => format!("{new_owner} is already the Owner of {org}."),
                Some(p) => format!("{new_owner} is now the Owner of {org}; {p} became an Admin."),
                None => format!("{new_owner} is now the Owner of {org}."),
            };
            Ok(Report::new(
                json!({ "org": org, "owner": new_owner, "previous_owner": previous }),
                human,
            ))
        }
        MemberCommand::List { org } => {
            let members = store.members(org);
            if members.is_empty() {
                return Err(CliError::new(
                    "not_found",
                    format!("no organization {org} (it has no members)"),
                ));
            }
            let mut table = Table::new(["USER", "ROLE"]);
            for (u, r) in &members {
                table.row(vec![u.clone(), r.to_string()]);
            }
            let list: Vec<Value> = members
                .iter()
                .map(|(u, r)| json!({ "user": u, "role": r }))
                .collect();
            Ok(Report::new(
                json!({ "org": org, "members": list }),
                table.render(),
            ))
        }
    }
}

fn owner_of(store: &TokenStore, org: &str) -> Option<String> {
    store
        .members(org)
        .into_iter()
        .find(|(_, r)| *r == Role::Owner)
        .map(|(u, _)| u)
}

// ----- tokens -----

fn options(a: &IssueArgs) -> GenerateOptions {
    GenerateOptions {
        label: a.label.clone(),
        scopes: a.scopes.clone(),
        expires_in: a.expires_in,
    }
}

fn token(store: &TokenStore, cmd: &TokenCommand) -> Result<Report, CliError> {
    match cmd {
        TokenCommand::Generate { actor, issue } => {
            let t = store.generate(actor, options(issue))?;
            Ok(issued(&t))
        }
        TokenCommand::Assign {
            actor,
            to,
            issue,
            pending: true,
        } => {
            let i = store.assign_pending(actor, to, options(issue))?;
            Ok(Report::new(
                json!({
                    "id": i.id.to_string(),
                    "user": i.user,
                    "role": i.role_at_issue,
                    "scopes": i.scopes,
                    "expires_at": i.expires_at,
                    "state": i.state.as_str(),
                }),
                format!(
                    "Refresh token {} assigned to {}/{}, pending: no secret is shown here; \
                     {} claims it with `tokenvault token claim --as {}/{} {}`.",
                    i.id, i.org, i.user, i.user, i.org, i.user, i.id
                ),
            ))
        }
        TokenCommand::Assign {
            actor, to, issue, ..
        } => {
            let t = store.assign(actor, to, options(issue))?;
            Ok(issued(&t))
        }
        TokenCommand::Claim { actor, id } => {
            let t = store.claim(actor, id)?;
            Ok(issued(&t))
        }
        TokenCommand::List {
            actor,
            all,
            after,
            limit,
        } => {
            let mut page = Page::new();
            if let Some(c) = after {
                page = page.after(*c);
            }
            if let Some(n) = limit {
                page = page.limit(usize::try_from(*n).unwrap_or(usize::MAX));
            }
            let paged = if *all {
                store.list_org_page(actor, page)?
            } else {
                store.list_own_page(actor, page)?
            };
            let tokens = paged.items;
            let mut json = json!({ "tokens": tokens.iter().map(token_json).collect::<Vec<_>>() });
            if limit.is_some() {
                json["next"] = json!(paged.next.map(|c| c.to_string()));
            }
            let mut human = if tokens.is_empty() {
                "No tokens.".to_string()
            } else {
                token_table(&tokens)
            };
            if let Some(c) = paged.next {
                human.push_str(&format!("\nMore: --after {c}"));
            }
            Ok(Report::new(json, human))
        }
        TokenCommand::Show { actor, id } => {
            let t = store.get(actor, id)?;
            Ok(Report::new(
                token_json(&t),
                token_table(std::slice::from_ref(&t)),
            ))
        }
        TokenCommand::Label { actor, id, label } => {
            let t = store.set_label(actor, id, Some(label))?;
            Ok(Report::new(
                token_json(&t),
                format!("Token {id} is now labelled {label:?}."),
            ))
        }
        TokenCommand::Rotate { actor, id, grace } => {
            let grace = grace.map_or(Grace::DEFAULT, Grace::from);
            let r = store.rotate(actor, id, grace)?;
            let mut report = issued(&r.issued);
            report.json["replaces"] = json!(r.replaces.to_string());
            report.json["old_expires_at"] = json!(r.old_expires_at);
            report.human = format!(
                "{}\nIt replaces token {}, which stops working {}.",
                report.human,
                r.replaces,
                format_time(r.old_expires_at)
            );
            Ok(report)
        }
        TokenCommand::Disable { actor, id } => {
            let t = store.disable(actor, id)?;
            Ok(Report::new(
                json!({ "id": id.to_string(), "state": t.state.as_str() }),
                format!(
                    "Token {id} is {}: it and its access tokens are refused until enabled.",
                    t.state
                ),
            ))
        }
        TokenCommand::Enable { actor, id } => {
            let t = store.enable(actor, id)?;
            Ok(Report::new(
                json!({ "id": id.to_string(), "state": t.state.as_str() }),
                format!("Token {id} is {}.", t.state),
            ))
        }
        TokenCommand::Revoke { actor, id, reason } => {
            store.revoke(actor, id, reason.as_deref())?;
            Ok(Report::new(
                json!({ "id": id.to_string(), "revoked": true }),
                format!("Revoked token {id}; it and every access token derived from it are rejected from now on."),
            ))
        }
        TokenCommand::RevokeAll {
            actor,
            user,
            org: _,
            before,
        } => {
            let scope = match user {
                Some(u) => RevokeScope::Member(u.clone()),
                None => RevokeScope::Org,
            };
            let n = store.revoke_all(actor, scope, *before)?;
            let whose = match user {
                Some(u) => format!("of {}/{u}", actor.org),
                None => format!("of the organization {}", actor.org),
            };
            let cutoff = match before {
                Some(t) => format!(" issued before {}", format_time(*t)),
                None => String::new(),
            };
            Ok(Report::new(
                json!({ "revoked": n, "org": actor.org, "user": user, "before": before }),
                format!(
                    "Revoked {} {whose}{cutoff}.",
                    plural(n as u64, "refresh token", "refresh tokens")
                ),
            ))
        }
    }
}

fn issued(t: &IssuedToken) -> Report {
    let i = &t.info;
    let secret = t.token.expose();
    let json = json!({
        "id": i.id.to_string(),
        "token": secret,
        "user": i.user,
        "role": i.role_at_issue,
        "scopes": i.scopes,
        "expires_at": i.expires_at,
    });
    let by = if i.created_by == i.user {
        String::new()
    } else {
        format!(", assigned by {}", i.created_by)
    };
    let human = format!(
        "Refresh token {} for {}/{} ({}{by}), scopes {}, expires {}.\n\
         It is shown only this once; store it now:\n{secret}",
        i.id,
        i.org,
        i.user,
        i.role_at_issue,
        i.scopes.join(","),
        when(i.expires_at, "never"),
    );
    Report::new(json, human)
}

fn token_json(t: &TokenInfo) -> Value {
    json!({
        "id": t.id.to_string(),
        "user": t.user,
        "role": t.role_at_issue,
        "scopes": t.scopes,
        "label": t.label,
        "created_at": t.created_at,
        "created_by": t.created_by,
        "expires_at": t.expires_at,
        "last_refresh": t.last_refresh,
        "last_used_ip": t.last_used_ip.map(|ip| ip.to_string()),
        "last_used_agent": t.last_used_agent,
        "state": t.state.as_str(),
    })
}

fn token_table(tokens: &[TokenInfo]) -> String {
    let mut table = Table::new([
        "ID",
        "USER",
        "ROLE",
        "STATE",
        "LABEL",
        "CREATED",
        "BY",
        "EXPIRES",
        "LAST REFRESH",
        "SCOPES",
    ]);
    for t in tokens {
        table.row(vec![
            t.id.to_string(),
            t.user.clone(),
            t.role_at_issue.to_string(),
            t.state.as_str().to_string(),
            t.label.clone().unwrap_or_else(|| "-".into()),
            format_time(t.created_at),
            t.created_by.clone(),
            when(t.expires_at, "never"),
            when(t.last_refresh, "never"),
            t.scopes.join(","),
        ]);
    }
    table.render()
}

// ----- exchange and verification -----

/// Most a token read from standard input may be; longer input is refused.
pub const MAX_STDIN: u64 = 64 * 1024;

/// The token argument, or standard input's content for `-` (surrounding
/// whitespace and the trailing newline removed).
fn token_text(arg: &str, caller: &mut Caller<'_>) -> Result<Zeroizing<String>, CliError> {
    if arg != "-" {
        return Ok(Zeroizing::new(arg.to_string()));
    }
    let raw = match caller {
        Caller::Local => read_stdin(&mut std::io::stdin().lock())?,
        Caller::Remote(ask) => ask()?,
    };
    if raw.len() as u64 > MAX_STDIN {
        return Err(CliError::new(
            "malformed",
            "standard input is far longer than a token",
        ));
    }
    let text = std::str::from_utf8(&raw)
        .map_err(|_| CliError::new("malformed", "standard input is not text"))?
        .trim();
    if text.is_empty() {
        return Err(CliError::new("malformed", "standard input held no token"));
    }
    Ok(Zeroizing::new(text.to_string()))
}

/// Reads at most [`MAX_STDIN`] + 1 bytes: enough to tell a token from
/// input far longer than one.
pub fn read_stdin(input: &mut dyn Read) -> std::io::Result<Zeroizing<Vec<u8>>> {
    let mut raw = Zeroizing::new(Vec::new());
    input.take(MAX_STDIN + 1).read_to_end(&mut raw)?;
    Ok(raw)
}

fn exchange(store: &TokenStore, arg: &str, caller: &mut Caller<'_>) -> Result<Report, CliError> {
    let refresh = token_text(arg, caller)?;
    let g = store.exchange(&refresh)?;
    let json = json!({
        "data": {
            "access_token": g.access_token.expose(),
            "expires_at": g.expires_at,
            "issued_at": g.issued_at,
            "refresh_token": g.refresh_token.expose(),
            "type": g.token_type,
        }
    });
    let human = format!(
        "Access token ({}) from refresh token {}, issued {}, expires {}:\n{}",
        g.token_type,
        g.refresh_id,
        format_time(g.issued_at),
        format_time(g.expires_at),
        g.access_token.expose()
    );
    Ok(Report::new(json, human))
}

fn verify(
    store: &TokenStore,
    arg: &str,
    scope: Option<&str>,
    caller: &mut Caller<'_>,
) -> Result<Report, CliError> {
    let access = token_text(arg, caller)?;
    let p = match scope {
        Some(s) => store.authorize(&access, s)?,
        None => store.verify(&access)?,
    };
    let scopes = p.scopes.to_vec();
    let json = json!({
        "org": &*p.org,
        "user": &*p.user,
        "role": p.role,
        "scopes": scopes,
        "refresh_id": p.refresh_id.to_string(),
        "expires_at": p.expires_at,
    });
    let granted = match scope {
        Some(s) => format!(" It grants `{s}`."),
        None => String::new(),
    };
    let human = format!(
        "Valid: {}/{} ({}), scopes {}; from refresh token {}; expires {}.{granted}",
        p.org,
        p.user,
        p.role,
        if scopes.is_empty() {
            "(none)".to_string()
        } else {
            scopes.join(",")
        },
        p.refresh_id,
        format_time(p.expires_at),
    );
    Ok(Report::new(json, human))
}

// ----- operations -----

/// Events shown by `audit` without `--limit`.
const AUDIT_DEFAULT_LIMIT: usize = 50;

fn audit(
    store: &TokenStore,
    actor: &crate::Actor,
    limit: Option<u64>,
    after: Option<u64>,
) -> Result<Report, CliError> {
    let n = limit.map_or(AUDIT_DEFAULT_LIMIT, |n| {
        usize::try_from(n).unwrap_or(usize::MAX)
    });
    let mut page = Page::new().limit(n);
    if let Some(c) = after {
        page = page.after(c);
    }
    let paged = store.audit_page(actor, page)?;
    let events = paged.items;
    // `AuditEvent`'s own serialization is the CLI's shape.
    let list = serde_json::to_value(&events)
        .map_err(|e| CliError::new("io", format!("cannot encode the audit events: {e}")))?;
    let mut table = Table::new(["SEQ", "TIME", "ACTOR", "ACTION", "TARGET", "OUTCOME"]);
    for e in &events {
        table.row(vec![
            e.seq.to_string(),
            format_time(e.at),
            e.actor.clone(),
            e.action.clone(),
            e.target.clone().unwrap_or_else(|| "-".into()),
            if e.count > 1 {
                format!(
                    "{} (x{}, last {})",
                    e.outcome,
                    e.count,
                    format_time(e.last_at)
                )
            } else {
                e.outcome.clone()
            },
        ]);
    }
    let mut human = if events.is_empty() {
        "No audit events.".to_string()
    } else {
        table.render()
    };
    if let (Some(c), Some(_)) = (paged.next, limit) {
        human.push_str(&format!("\nMore: --after {c}"));
    }
    let mut json = json!({ "events": list });
    if limit.is_some() {
        json["next"] = json!(paged.next);
    }
    Ok(Report::new(json, human))
}

fn purge(store: &TokenStore, batch: usize, local: bool) -> Result<Report, CliError> {
    let bar = (local && std::io::stderr().is_terminal()).then(|| {
        let bar =
            indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{spinner} purging: {pos} records removed, batch {msg} [{elapsed}]",
        ) {
            bar.set_style(style);
        }
        bar.enable_steady_tick(Duration::from_millis(100));
        bar
    });
    let (mut access, mut refresh, mut events, mut batches) = (0u64, 0u64, 0u64, 0u64);
    let result = loop {
        let r = match store.purge_expired(batch) {
            Ok(r) => r,
            Err(e) => break Err(e),
        };
        batches += 1;
        access += r.access_removed;
        refresh += r.refresh_removed;
        events += r.events_removed;
        if let Some(b) = &bar {
            b.set_position(access + refresh + events);
            b.set_message(batches.to_string());
        }
        // A batch that removed nothing cannot make progress: stop there.
        if !r.more || r.access_removed + r.refresh_removed + r.events_removed == 0 {
            break Ok(());
        }
    };
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    result?;
    Ok(Report::new(
        json!({
            "access_removed": access,
            "refresh_removed": refresh,
            "events_removed": events,
            "batches": batches
        }),
        format!(
            "Purged {}, {} and {} in {}.",
            plural(access, "access record", "access records"),
            plural(refresh, "refresh record", "refresh records"),
            plural(events, "audit event", "audit events"),
            plural(batches, "batch", "batches"),
        ),
    ))
}

fn check(store: &TokenStore) -> Result<Report, CliError> {
    let r = store.check_integrity()?;
    if !r.is_clean() {
        let mut e = CliError::new(
            "corrupt",
            format!(
                "the integrity check found {}",
                plural(r.problems.len() as u64, "problem", "problems")
            ),
        );
        e.details = r.problems;
        return Err(e);
    }
    Ok(Report::new(
        json!({
            "clean": true,
            "members": r.members,
            "refresh_tokens": r.refresh_tokens,
            "access_tokens": r.access_tokens,
            "events": r.events,
            "problems": [],
        }),
        format!(
            "Integrity check passed: {}, {}, {} and {} checked, no problems.",
            plural(r.members, "member", "members"),
            plural(r.refresh_tokens, "refresh record", "refresh records"),
            plural(r.access_tokens, "access record", "access records"),
            plural(r.events, "audit event", "audit events"),
        ),
    ))
}

fn stats(store: &TokenStore) -> Result<Report, CliError> {
    let s = store.stats()?;
    let json = json!({
        "orgs": s.orgs,
        "members": s.members,
        "tokens": { "active": s.active, "revoked": s.revoked, "expired": s.expired },
        "access_tokens": s.access_tokens,
        "disk_bytes": s.disk_bytes,
    });
    let mut table = Table::new(["organizations", &s.orgs.to_string()]);
    table.row(vec!["members".into(), s.members.to_string()]);
    table.row(vec!["tokens active".into(), s.active.to_string()]);
    table.row(vec!["tokens revoked".into(), s.revoked.to_string()]);
    table.row(vec!["tokens expired".into(), s.expired.to_string()]);
    table.row(vec![
        "access tokens held".into(),
        s.access_tokens.to_string(),
    ]);
    table.row(vec![
        "size on disk".into(),
        format!("{} bytes", s.disk_bytes),
    ]);
    Ok(Report::new(json, table.render()))
}
