//! The tool's failure: a stable kind (the library's [`crate::Error::kind`]
//! names, plus `usage` for bad command lines), a sentence, and an exit code.
#![allow(missing_docs)]

use serde_json::{json, Value};

/// A failed command.
#[derive(Debug)]
pub struct CliError {
    /// One of `malformed`, `invalid_token`, `expired`, `revoked`,
    /// `forbidden`, `insufficient_scope`, `not_found`, `conflict`, `limit`,
    /// `key_mismatch`, `corrupt`, `io`, `unavailable`, `usage`.
    pub kind: &'static str,
    /// A sentence for a person.
    pub message: String,
    /// Extra lines (e.g. the problems `check` found), if any.
    pub details: Vec<String>,
}

impl CliError {
    pub fn new(kind: &'static str, message: impl Into<String>) -> Self {
        CliError {
            kind,
            message: message.into(),
            details: Vec::new(),
        }
    }

    /// 2 for bad usage (including the library's `InvalidArgument`), 1 for
    /// everything else.
    pub fn exit_code(&self) -> u8 {
        if self.kind == "usage" {
            2
        } else {
            1
        }
    }

    /// `{"error": {"kind": …, "message": …}}`, with `details` when there are
    /// any.
    pub fn to_json(&self) -> Value {
        let mut e = json!({ "kind": self.kind, "message": self.message });
        if !self.details.is_empty() {
            e["details"] = json!(self.details);
        }
        json!({ "error": e })
    }
}

impl From<crate::Error> for CliError {
    fn from(e: crate::Error) -> Self {
        // `unavailable`: the store refused the call while it opened its
        // storage again after a fault (retrying later may succeed).
        CliError::new(e.kind(), e.to_string())
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError::new("io", e.to_string())
    }
}
