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

mod cli;
mod commands;
mod demo;
mod error;
mod logs;
mod output;
mod parse;
mod serve;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::Parser;

use crate::error::CliError;

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    // What the arguments hold that looks like a token: never repeated in
    // an error (a token pasted where an id belongs, say).
    let texts: Vec<String> = args
        .iter()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .filter(|a| !parse::tokens_in(a).is_empty())
        .collect();
    let cli = match cli::Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e, wants_json(&args), &texts),
    };
    let json = cli.global.json;
    match commands::run(&cli) {
        Ok(report) => {
            if json {
                output::print_json(&report.json);
            } else {
                output::print_stdout(&report.human);
            }
            ExitCode::SUCCESS
        }
        Err(mut e) => {
            e.message = parse::redact_tokens(&e.message, &texts);
            for d in &mut e.details {
                *d = parse::redact_tokens(d, &texts);
            }
            output::print_error(&e, json);
            ExitCode::from(e.exit_code())
        }
    }
}

/// Whether `--json` is among the arguments, for reporting a command line
/// clap could not parse. Stops at `--`, after which everything is a value.
fn wants_json(args: &[OsString]) -> bool {
    args.iter()
        .skip(1)
        .take_while(|a| a.as_os_str() != "--")
        .any(|a| a.as_os_str() == "--json")
}

/// Help and version print and exit 0; any other parse failure is bad usage
/// (exit 2), reported as JSON when `--json` was asked for.
/// A value that looks like a token is shown as `<token>`.
fn usage_error(e: &clap::Error, json: bool, tokens: &[String]) -> ExitCode {
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        // Help text goes to stdout; nothing sensible to do if that fails.
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    let rendered = e.render().to_string();
    let redacted = parse::redact_tokens(&rendered, tokens);
    if json {
        let rendered = redacted;
        let first = rendered
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("bad usage");
        let message = first.strip_prefix("error: ").unwrap_or(first);
        output::print_json(&CliError::new("usage", message).to_json());
    } else if redacted != rendered {
        eprint!("{redacted}");
    } else {
        let _ = e.print();
    }
    ExitCode::from(2)
}
