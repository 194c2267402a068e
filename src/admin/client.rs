//! The admin socket's client: what the `tokenvault` binary does with a
//! command line when another process holds the store.

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use serde_json::{json, Value};
use zeroize::Zeroizing;

use super::commands::read_stdin;
use super::output::CommandOutput;

/// A connection to an admin socket (see [`super::serve_admin`]), for one
/// command line.
#[derive(Debug)]
pub struct AdminClient {
    stream: UnixStream,
}

impl AdminClient {
    /// Connects to the admin socket at `path` (`DB/admin.sock`). Blocks for
    /// the connection only (the server answers a connection at once).
    ///
    /// # Errors
    /// The operating system's error: `NotFound` when there is no socket
    /// (no process offers one), `ConnectionRefused` when nobody answers on
    /// it (its process was killed), `PermissionDenied` for a socket of
    /// another user.
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let missing = tokenvault::admin::AdminClient::connect(dir.path().join("admin.sock"));
    /// assert_eq!(missing.unwrap_err().kind(), std::io::ErrorKind::NotFound);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn connect(path: impl AsRef<Path>) -> io::Result<AdminClient> {
        Ok(AdminClient {
            stream: UnixStream::connect(path)?,
        })
    }

    /// Sends a `tokenvault` command line (without the program name) and
    /// returns what it printed in the serving process, and its exit code.
    /// If the command reads a TOKEN from `-`, the server asks for standard
    /// input, and `stdin` is read to its end (at most 64 KiB) and sent.
    ///
    /// Blocks until the command has run in the serving process (no
    /// timeout: as long as the same command run locally).
    ///
    /// # Errors
    /// An I/O error if the connection fails; the server's refusal (`busy`,
    /// `forbidden` for a user other than the server's own or root, `limit`,
    /// `timeout`, `malformed`) as an error whose message is the server's,
    /// of kind `PermissionDenied` for `forbidden` and `Other` for the rest.
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let store = tokenvault::TokenStore::open(dir.path().join("tokens.db"))?;
    /// let socket = tokenvault::admin::serve_admin(&store)?;
    /// let mut client = tokenvault::admin::AdminClient::connect(socket.path())?;
    /// let out = client.run(&["--json", "stats"], &mut std::io::empty())?;
    /// assert_eq!(out.exit_code(), 0);
    /// assert!(out.stdout().contains("\"members\": 0"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn run<S: AsRef<str>>(
        &mut self,
        args: &[S],
        stdin: &mut dyn Read,
    ) -> io::Result<CommandOutput> {
        let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
        // A server that refuses at once (`forbidden`, `busy`) may close
        // before the request is written: its answer is read all the same.
        let sent = send(&mut self.stream, &json!({ "args": args }));
        let mut reader = BufReader::new(self.stream.try_clone()?);
        loop {
            let mut line = Zeroizing::new(String::new());
            let read = reader.read_line(&mut line);
            match (read, &sent) {
                (Ok(n), _) if n > 0 => {}
                (_, Err(e)) => return Err(io::Error::new(e.kind(), e.to_string())),
                (Ok(_), Ok(())) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the admin socket closed the connection without an answer",
                    ))
                }
                (Err(e), Ok(())) => return Err(e),
            }
            let answer: Answer = serde_json::from_str(&line).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the admin socket's answer is not one it sends",
                )
            })?;
            drop(line);
            if answer.stdin == Some(true) {
                let raw = read_stdin(stdin)?;
                let mut hex = Zeroizing::new(String::with_capacity(raw.len() * 2));
                for b in raw.iter() {
                    let _ = write!(hex, "{b:02x}");
                }
                send(&mut self.stream, &json!({ "stdin_hex": &*hex }))?;
                continue;
            }
            if let Some(e) = answer.error {
                let io_kind = if e.kind == "forbidden" {
                    io::ErrorKind::PermissionDenied
                } else {
                    io::ErrorKind::Other
                };
                return Err(io::Error::new(
                    io_kind,
                    format!(
                        "the admin socket refused the request ({}): {}",
                        e.kind, e.message
                    ),
                ));
            }
            return match (answer.stdout, answer.stderr, answer.exit) {
                (Some(out), Some(err), Some(code)) => Ok(CommandOutput::new(
                    out,
                    err,
                    u8::try_from(code).unwrap_or(1),
                )),
                _ => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the admin socket's answer lacks stdout, stderr or exit",
                )),
            };
        }
    }
}

/// One line from the server: a request for standard input, a refusal, or
/// the command's output.
#[derive(serde::Deserialize)]
struct Answer {
    stdin: Option<bool>,
    error: Option<Refusal>,
    stdout: Option<String>,
    stderr: Option<String>,
    exit: Option<u64>,
}

#[derive(serde::Deserialize)]
struct Refusal {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    message: String,
}

fn send(stream: &mut UnixStream, v: &Value) -> io::Result<()> {
    let mut text = Zeroizing::new(serde_json::to_string(v).unwrap_or_default());
    text.push('\n');
    stream.write_all(text.as_bytes())?;
    stream.flush()
}
