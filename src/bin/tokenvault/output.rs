//! What a command prints: one JSON document, or text for a person.

use std::fmt::Write as _;
use std::io::Write as _;

use serde_json::Value;

use crate::error::CliError;
use crate::parse::format_time;

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

/// Writes to standard output, ignoring a closed pipe (`tokenvault … | head`).
pub fn print_stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    if !text.ends_with('\n') {
        let _ = out.write_all(b"\n");
    }
    let _ = out.flush();
}

/// Writes to standard error, ignoring failures.
pub fn print_stderr(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_bytes());
    if !text.ends_with('\n') {
        let _ = err.write_all(b"\n");
    }
}

pub fn print_json(v: &Value) {
    // Serializing a `Value` cannot fail.
    print_stdout(&serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Prints a failure: the JSON document on stdout with `--json`, else a
/// sentence on stderr.
pub fn print_error(e: &CliError, json: bool) {
    if json {
        print_json(&e.to_json());
    } else {
        let mut s = format!("error: {}", e.message);
        for d in &e.details {
            let _ = write!(s, "\n  - {d}");
        }
        print_stderr(&s);
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
