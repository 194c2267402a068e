//! `tokenvault`: the operator's command-line tool (cargo feature `cli`).
//!
//! Every command takes `--db PATH` (default `./tokenvault.db`, or
//! `TOKENVAULT_DB`) and `--json`, before or after its name. With `--json`
//! each run prints exactly one JSON document on standard output, a failure
//! included (`{"error": {"kind": …, "message": …}}`).
//!
//! Exit codes: 0 success; 1 the request was refused or failed; 2 bad usage.
//! Bad usage is what clap rejects (unknown command or flag, missing or
//! malformed value such as an unknown role) and what the library rejects as
//! `InvalidArgument` (kind `usage`: e.g. a scope outside the member's role,
//! a cutoff in the future).
//!
//! The commands live in the library (`tokenvault::admin`), so that a
//! process holding the store runs the very same code for a command that
//! reaches it through its admin socket: while another process offers the
//! socket `DB/admin.sock`, every command on the store (all but `init`,
//! `demo` and `serve`) is sent there instead of opening the store here.

use std::ffi::OsString;
use std::io;
use std::path::Path;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::Parser;
use tokenvault::admin::__cli::{self, Cli, CliError};
#[cfg(unix)]
use tokenvault::admin::AdminClient;
use tokenvault::admin::CommandOutput;

fn main() -> ExitCode {
    let args_os: Vec<OsString> = std::env::args_os().collect();
    let args: Vec<String> = args_os
        .iter()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let cli = match Cli::try_parse_from(&args_os) {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            // Help text goes to stdout (styled on a terminal); nothing
            // sensible to do if that fails.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let out = __cli::render_usage(&e, &args);
            if out.stdout().is_empty() && out.stderr() == e.render().to_string() {
                // Nothing redacted: clap prints it, styled on a terminal.
                let _ = e.print();
                return ExitCode::from(out.exit_code());
            }
            return exit(&out);
        }
    };
    let json = cli.global.json;
    #[cfg(unix)]
    if cli.command.local_only().is_none() {
        let socket = tokenvault::admin::socket_path(&cli.global.db);
        match AdminClient::connect(&socket) {
            Ok(mut client) => return through_socket(&mut client, &args_os, &args, json),
            Err(e) => {
                let out = __cli::render(
                    held_without_socket(__cli::run(&cli), &cli.global.db, &socket, &e),
                    json,
                    &args,
                );
                return exit(&out);
            }
        }
    }
    exit(&__cli::render(__cli::run(&cli), json, &args))
}

/// Runs the command line in the process that holds the store.
#[cfg(unix)]
fn through_socket(
    client: &mut AdminClient,
    args_os: &[OsString],
    args: &[String],
    json: bool,
) -> ExitCode {
    if args_os.iter().skip(1).any(|a| a.to_str().is_none()) {
        let e = CliError::new(
            "usage",
            "an argument is not UTF-8, which the admin socket cannot carry",
        );
        return exit(&__cli::render(Err(e), json, args));
    }
    match client.run(args, &mut io::stdin().lock()) {
        Ok(out) => exit(&out),
        Err(e) => {
            let kind = if e.kind() == io::ErrorKind::PermissionDenied {
                "forbidden"
            } else {
                "io"
            };
            let e = CliError::new(kind, format!("through the admin socket: {e}"));
            exit(&__cli::render(Err(e), json, args))
        }
    }
}

/// A store held by a process that offers no admin socket (or one that
/// cannot be reached): said plainly.
#[cfg(unix)]
fn held_without_socket<T>(
    result: Result<T, CliError>,
    db: &Path,
    socket: &Path,
    connect: &io::Error,
) -> Result<T, CliError> {
    result.map_err(|mut e| {
        if e.message.contains("is held by another process") {
            let why = match connect.kind() {
                io::ErrorKind::NotFound => "offers no admin socket".to_string(),
                io::ErrorKind::ConnectionRefused => format!(
                    "does not answer on the admin socket {} (left by a process that was \
                     stopped?)",
                    socket.display()
                ),
                _ => format!(
                    "cannot be reached on the admin socket {}: {connect}",
                    socket.display()
                ),
            };
            e.message = format!(
                "the store {} is held by another process, which {why}; stop that process, \
                 or run it with an admin socket (`tokenvault serve` offers one unless \
                 --no-admin-socket)",
                db.display()
            );
        }
        e
    })
}

fn exit(out: &CommandOutput) -> ExitCode {
    out.print();
    ExitCode::from(out.exit_code())
}
