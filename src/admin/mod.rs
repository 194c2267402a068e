//! The operator's commands on an open store, and the local admin socket
//! through which the `tokenvault` command line reaches a store that a
//! running process holds (cargo feature `admin`; the socket on Unix).
//!
//! A store on disk is held by one process at a time. While `tokenvault
//! serve` (or a host service) holds it, a `tokenvault` command on that
//! store cannot open it; instead it sends its command line to the admin
//! socket `DB/admin.sock` (see [`socket_path`]), and the holding process
//! runs the command with the very code the binary runs on a store it opens
//! itself ([`run_command`]), then answers with what the command printed and
//! its exit code. Same flags, same output, same `--json` documents, same
//! exit codes; the policy checks (`--as`) and the audit trail are the
//! store's own, in the holding process.
//!
//! A host offers the socket with one call, [`serve_admin`], and keeps the
//! returned [`AdminSocket`] for as long as it holds the store:
//!
//! ```
//! # #[cfg(unix)] {
//! let dir = tempfile::tempdir()?;
//! let store = tokenvault::TokenStore::open(dir.path().join("tokens.db"))?;
//! store.add_member("acme", "olivia", tokenvault::Role::Owner)?;
//! let socket = tokenvault::admin::serve_admin(&store)?;
//! assert!(socket.path().ends_with("tokens.db/admin.sock"));
//!
//! // What `tokenvault --db DIR/tokens.db member list acme` now does
//! // through the socket:
//! let mut client = tokenvault::admin::AdminClient::connect(socket.path())?;
//! let out = client.run(&["member", "list", "acme"], &mut std::io::empty())?;
//! assert_eq!(out.exit_code(), 0);
//! assert!(out.stdout().contains("olivia"));
//!
//! drop(socket); // stops serving and removes the socket file
//! store.close()?;
//! # }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The socket file has mode 0600 inside the store's directory (mode 0700),
//! and each connection's peer is checked with `SO_PEERCRED`: only the
//! process's own user, or root, is served. The protocol (JSON lines, each
//! request at most [`MAX_REQUEST`] bytes, sent within the request timeout)
//! is described in `docs/operations.md` › Admin socket.

mod cli;
#[cfg(unix)]
mod client;
mod commands;
mod demo;
mod error;
#[cfg(feature = "cli")]
mod logs;
mod output;
mod parse;
#[cfg(feature = "cli")]
mod serve;
#[cfg(unix)]
mod server;

use std::path::{Path, PathBuf};

#[cfg(unix)]
pub use client::AdminClient;
pub use output::CommandOutput;
#[cfg(unix)]
pub use server::{serve_admin, serve_admin_with, AdminConfig, AdminSocket};

use crate::TokenStore;

/// The name of the admin socket in a store's directory.
pub const SOCKET_NAME: &str = "admin.sock";

/// The most bytes one line of the protocol may hold (a request, or the
/// standard input a client sends when asked); a longer one is answered
/// with an error and the connection closed.
pub const MAX_REQUEST: usize = 256 * 1024;

/// The admin socket of the store in directory `db`: `db/admin.sock`. Does
/// not block.
///
/// ```
/// let p = tokenvault::admin::socket_path("/var/lib/tokens.db");
/// assert_eq!(p, std::path::Path::new("/var/lib/tokens.db/admin.sock"));
/// ```
pub fn socket_path(db: impl AsRef<Path>) -> PathBuf {
    db.as_ref().join(SOCKET_NAME)
}

/// Runs one `tokenvault` command line (without the program name, e.g.
/// `["token", "list", "--as", "acme/olivia", "--json"]`) on an open store,
/// as the binary would on that store, and returns what it printed and its
/// exit code. This is what the admin socket runs for each request.
///
/// `--db` and the other global options about opening a store are accepted
/// and ignored: the command runs on `store`. `init`, `demo` and `serve` do
/// not run this way (bad usage, exit 2). A TOKEN given as `-` is read from
/// `stdin` (at most 64 KiB are read). After the command, every write is
/// made durable ([`TokenStore::flush`]).
///
/// Nothing fails as a Rust error: a refusal, a storage fault or a bad
/// command line is in the output (exit code 1 or 2), exactly as the binary
/// prints it.
///
/// Blocks for the command's store calls and a flush: a few milliseconds
/// for most commands, longer for `purge` and `check` on a large store.
///
/// ```
/// use tokenvault::admin::run_command;
///
/// let store = tokenvault::TokenStore::temporary()?;
/// let out = run_command(&store, &["member", "add", "acme", "olivia", "owner"], &mut std::io::empty());
/// assert_eq!((out.exit_code(), out.stdout()), (0, "Added olivia to acme as owner.\n"));
///
/// // Refused by the policy, as on the command line: exit 1.
/// let out = run_command(&store, &["token", "list", "--all", "--as", "acme/nobody"], &mut std::io::empty());
/// assert_eq!(out.exit_code(), 1);
/// # Ok::<(), tokenvault::Error>(())
/// ```
pub fn run_command<S: AsRef<str>>(
    store: &TokenStore,
    args: &[S],
    stdin: &mut dyn std::io::Read,
) -> CommandOutput {
    let args: Vec<String> = args.iter().map(|a| a.as_ref().to_string()).collect();
    let mut ask = || commands::read_stdin(stdin);
    execute(store, &args, &mut commands::Caller::Remote(&mut ask)).0
}

/// Runs a command line for a caller other than this process's own user,
/// and says which command it was (its subcommand words, for the log: no
/// argument, which may hold a token).
pub(crate) fn execute(
    store: &TokenStore,
    args: &[String],
    caller: &mut commands::Caller<'_>,
) -> (CommandOutput, String) {
    let (cli, words) = match cli::parse_remote(args) {
        Ok(parsed) => parsed,
        Err(e) => return (output::render_usage(&e, args), "(bad usage)".into()),
    };
    let result = commands::on_open_store(store, &cli.command, caller);
    (
        output::render(result, cli.global.json, args),
        words.join(" "),
    )
}

/// The command line's internals, for the `tokenvault` binary only: not
/// public API, no semver promise.
#[doc(hidden)]
pub mod __cli {
    pub use super::cli::{Cli, Command};
    pub use super::commands::{run, Caller};
    pub use super::error::CliError;
    pub use super::output::{render, render_usage, secret_args};
}
