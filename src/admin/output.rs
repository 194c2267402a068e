//! What a command prints: one JSON document, or text for a person.
#![allow(missing_docs)]

use std::fmt::Write as _;
use std::io::Write as _;

use serde_json::Value;

use super::error::CliError;
use super::parse::{format_time, redact_tokens, tokens_in};

/// The outcome of a successful command in both forms; `main` prints one.
pub struct Report {
    pub json: Value,
    pub human: String,
}

impl Report {
    pub fn new(json: Value, human: impl Into<String>) -> Self {
        Report {
            json,
            human: human.into(),
        }
    }
}

/// What a command line printed and how it ended: its standard output, its
/// standard error, and its exit code (0 success, 1 refused or failed, 2
/// bad usage), exactly as the `tokenvault` binary prints them.
///
/// The output of `token generate`, `token assign` or `exchange` holds a
/// secret: its `Debug` shows only lengths, and its text is wiped when it
/// is dropped.
#[derive(Clone, PartialEq, Eq, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
pub struct CommandOutput {
    stdout: String,
    stderr: String,
    #[zeroize(skip)]
    exit_code: u8,
}

impl CommandOutput {
    /// Puts an output together (the admin socket's client, from an answer).
    pub(crate) fn new(stdout: String, stderr: String, exit_code: u8) -> Self {
        CommandOutput {
            stdout,
            stderr,
            exit_code,
        }
    }

    /// What the command printed on standard output.
    pub fn stdout(&self) -> &str {
        &self.stdout
    }

    /// What the command printed on standard error.
    pub fn stderr(&self) -> &str {
        &self.stderr
    }

    /// The exit code: 0 success, 1 refused or failed, 2 bad usage.
    pub fn exit_code(&self) -> u8 {
        self.exit_code
    }

    /// Writes standard output and standard error of this process as the
    /// command printed them, ignoring a closed pipe.
    pub fn print(&self) {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(self.stdout.as_bytes());
        let _ = out.flush();
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(self.stderr.as_bytes());
        let _ = err.flush();
    }
}

impl std::fmt::Debug for CommandOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The text may hold a secret (a token just generated).
        f.debug_struct("CommandOutput")
            .field("stdout_bytes", &self.stdout.len())
            .field("stderr_bytes", &self.stderr.len())
            .field("exit_code", &self.exit_code)
            .finish()
    }
}

/// `text` as a line: with a newline at its end.
fn line(text: &str) -> String {
    let mut s = text.to_string();
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

fn json_text(v: &Value) -> String {
    // Serializing a `Value` cannot fail.
    line(&serde_json::to_string_pretty(v).unwrap_or_default())
}

/// What a finished command prints: the report (JSON with `--json`, else
/// text) on standard output, or the failure (JSON on standard output with
/// `--json`, else a sentence on standard error). Every piece of the failure
/// that looks like a token, or like one of `args`' tokens, shows as
/// `<token>`.
pub fn render(result: Result<Report, CliError>, json: bool, args: &[String]) -> CommandOutput {
    match result {
        Ok(report) if json => CommandOutput::new(json_text(&report.json), String::new(), 0),
        Ok(report) => CommandOutput::new(line(&report.human), String::new(), 0),
        Err(mut e) => {
            let texts = secret_args(args);
            e.message = redact_tokens(&e.message, &texts);
            for d in &mut e.details {
                *d = redact_tokens(d, &texts);
            }
            let code = e.exit_code();
            if json {
                CommandOutput::new(json_text(&e.to_json()), String::new(), code)
            } else {
                let mut s = format!("error: {}", e.message);
                for d in &e.details {
                    let _ = write!(s, "\n  - {d}");
                }
                CommandOutput::new(String::new(), line(&s), code)
            }
        }
    }
}

/// The arguments that look like they hold a token: never repeated in an
/// error (a token pasted where an id belongs, say).
pub fn secret_args(args: &[String]) -> Vec<String> {
    args.iter()
        .filter(|a| !tokens_in(a).is_empty())
        .cloned()
        .collect()
}

/// Whether `--json` is among the arguments, for reporting a command line
/// clap could not parse. Stops at `--`, after which everything is a value.
pub fn wants_json(args: &[String]) -> bool {
    args.iter()
        .take_while(|a| a.as_str() != "--")
        .any(|a| a == "--json")
}

/// A command line clap could not parse: help and version print on standard
/// output and exit 0; anything else is bad usage (exit 2), as JSON when
/// `--json` was asked for. A value that looks like a token shows as
/// `<token>`.
pub fn render_usage(e: &clap::Error, args: &[String]) -> CommandOutput {
    use clap::error::ErrorKind;
    let rendered = e.render().to_string();
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        return CommandOutput::new(rendered, String::new(), 0);
    }
    let redacted = redact_tokens(&rendered, &secret_args(args));
    if wants_json(args) {
        let first = redacted
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("bad usage");
        let message = first.strip_prefix("error: ").unwrap_or(first);
        CommandOutput::new(
            json_text(&CliError::new("usage", message).to_json()),
            String::new(),
            2,
        )
    } else {
        CommandOutput::new(String::new(), redacted, 2)
    }
}

/// Writes to standard error, ignoring failures.
pub fn print_stderr(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_bytes());
    if !text.ends_with('\n') {
        let _ = err.write_all(b"\n");
    }
}

/// An aligned text table; the last column is not padded.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<const N: usize>(header: [&str; N]) -> Self {
        Table {
            rows: vec![header.iter().map(|h| h.to_string()).collect()],
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let cols = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths = vec![0; cols];
        for r in &self.rows {
            for (i, c) in r.iter().enumerate() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
        let mut out = String::new();
        for r in &self.rows {
            let mut line = String::new();
            for (i, c) in r.iter().enumerate() {
                if i + 1 == r.len() {
                    line.push_str(c);
                } else {
                    let _ = write!(line, "{c:<w$}  ", w = widths[i]);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// A time for people, or `never` / `-`.
pub fn when(t: Option<u64>, none: &str) -> String {
    t.map_or_else(|| none.to_string(), format_time)
}

/// `1 token` / `2 tokens`.
pub fn plural(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("{n} {one}")
    } else {
        format!("{n} {many}")
    }
}
