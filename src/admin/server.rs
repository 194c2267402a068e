//! The admin socket's server: a thread that accepts connections on a Unix
//! socket in the store's directory, checks each peer's credentials, and
//! runs each request's command line on a thread of its own (a bounded
//! number at once).

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use serde_json::{json, Value};
use zeroize::Zeroizing;

use super::commands::{Caller, MAX_STDIN};
use super::{execute, socket_path, CommandOutput, MAX_REQUEST};
use crate::error::{Error, IoError};
use crate::TokenStore;

/// The limits of an admin socket. The defaults suit an operator's command
/// line: 8 connections at once, 5 s to send a request, 5 minutes to send
/// standard input when asked (a person may be typing a token), 30 s for a
/// client to take an answer.
#[derive(Clone, Debug)]
pub struct AdminConfig {
    max_connections: usize,
    request_timeout: Duration,
    stdin_timeout: Duration,
    write_timeout: Duration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            max_connections: 8,
            request_timeout: Duration::from_secs(5),
            stdin_timeout: Duration::from_secs(300),
            write_timeout: Duration::from_secs(30),
        }
    }
}

impl AdminConfig {
    /// Connections served at once (at least 1); one more is answered with
    /// an error (`busy`) and closed.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// The time a client has, from its connection, to send its whole
    /// request line; a slower one is answered with an error (`timeout`)
    /// and closed.
    pub fn request_timeout(mut self, t: Duration) -> Self {
        self.request_timeout = t;
        self
    }

    /// The time a client has to send its standard input once asked.
    pub fn stdin_timeout(mut self, t: Duration) -> Self {
        self.stdin_timeout = t;
        self
    }
}

/// A running admin socket (see [`serve_admin`]). Dropping it stops
/// accepting connections, waits up to 10 s for the requests in progress,
/// and removes the socket file (if it is still this one's).
#[must_use = "dropping the AdminSocket stops serving it at once"]
pub struct AdminSocket {
    path: PathBuf,
    /// The socket file's device and inode, to remove only our own.
    id: (u64, u64),
    shared: Arc<Shared>,
    /// Written to wake the accept thread.
    wake: UnixStream,
    accept: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for AdminSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminSocket")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl AdminSocket {
    /// The socket file's path (`DB/admin.sock`). Does not block.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// What the accept thread and the connection threads share.
struct Shared {
    store: TokenStore,
    cfg: AdminConfig,
    stop: AtomicBool,
    /// Connections being served.
    active: Mutex<usize>,
    idle: Condvar,
}

/// Offers the admin socket of `store` at `DB/admin.sock`, with the default
/// [`AdminConfig`], until the returned guard is dropped. See
/// [`serve_admin_with`].
///
/// Blocks as [`serve_admin_with`]: a few file system calls.
///
/// # Errors
/// As [`serve_admin_with`].
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let store = tokenvault::TokenStore::open(dir.path().join("tokens.db"))?;
/// let socket = tokenvault::admin::serve_admin(&store)?;
/// assert!(socket.path().exists());
/// let path = socket.path().to_path_buf();
/// drop(socket);
/// assert!(!path.exists());
/// # Ok::<(), tokenvault::Error>(())
/// ```
pub fn serve_admin(store: &TokenStore) -> crate::Result<AdminSocket> {
    serve_admin_with(store, AdminConfig::default())
}

/// Offers the admin socket of `store` at `DB/admin.sock` with the limits
/// `cfg`, on a thread of its own, until the returned guard is dropped
/// (drop it before [`TokenStore::close`]: it holds a handle of the store).
///
/// The socket file is made with mode 0600 under a temporary name and
/// renamed into place. A socket file left by a process that was killed
/// (nobody answers on it) is replaced; one that answers is left alone.
///
/// Blocks for a few file system calls and the start of a thread.
///
/// # Errors
/// [`Error::InvalidArgument`] for a store that has no directory (a
/// temporary or shared store); [`Error::Conflict`] if another process
/// answers on the socket already, or something other than a socket has
/// its name; [`Error::Io`] if the socket cannot be made (a read-only
/// directory, a file system without sockets, a path longer than a socket
/// address holds: about 107 bytes).
///
/// ```
/// let store = tokenvault::TokenStore::temporary()?;
/// let refused = tokenvault::admin::serve_admin_with(&store, Default::default());
/// assert_eq!(refused.unwrap_err().kind(), "usage");
/// # Ok::<(), tokenvault::Error>(())
/// ```
pub fn serve_admin_with(store: &TokenStore, cfg: AdminConfig) -> crate::Result<AdminSocket> {
    let dir = store.dir().ok_or_else(|| {
        Error::InvalidArgument(
            "the admin socket lives in a store's directory; this store has none \
             (a temporary or shared store)"
                .into(),
        )
    })?;
    let dir = std::path::absolute(dir).map_err(|e| io_err("cannot resolve", dir, e))?;
    let path = socket_path(&dir);
    clear_stale(&path)?;
    let temp = dir.join(format!(".{}.{}", super::SOCKET_NAME, std::process::id()));
    let _ = std::fs::remove_file(&temp);
    let listener = UnixListener::bind(&temp).map_err(|e| io_err("cannot make", &path, e))?;
    let placed = std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::rename(&temp, &path));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&temp);
        return Err(io_err("cannot make", &path, e));
    }
    let meta = std::fs::symlink_metadata(&path).map_err(|e| io_err("cannot read", &path, e))?;
    let id = (meta.dev(), meta.ino());
    let started = start(store, cfg, listener);
    match started {
        Ok((wake, shared, accept)) => Ok(AdminSocket {
            path,
            id,
            shared,
            wake,
            accept: Some(accept),
        }),
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            Err(io_err("cannot serve", &path, e))
        }
    }
}

type Started = (UnixStream, Arc<Shared>, JoinHandle<()>);

fn start(store: &TokenStore, cfg: AdminConfig, listener: UnixListener) -> io::Result<Started> {
    listener.set_nonblocking(true)?;
    let (wake, woken) = UnixStream::pair()?;
    woken.set_nonblocking(true)?;
    let shared = Arc::new(Shared {
        store: store.clone(),
        cfg,
        stop: AtomicBool::new(false),
        active: Mutex::new(0),
        idle: Condvar::new(),
    });
    let s = shared.clone();
    let accept = std::thread::Builder::new()
        .name("tokenvault-admin".into())
        .spawn(move || accept_loop(&listener, &woken, &s))?;
    Ok((wake, shared, accept))
}

fn io_err(what: &str, path: &Path, e: io::Error) -> Error {
    Error::Io(IoError::with_source(
        format!("{what} the admin socket {}: {e}", path.display()),
        e,
    ))
}

/// Removes a socket file nobody answers on (its process was killed);
/// refuses to touch one that answers, or a file that is not a socket.
fn clear_stale(path: &Path) -> crate::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("cannot read", path, e)),
    };
    if !meta.file_type().is_socket() {
        return Err(Error::Conflict(format!(
            "{} is not a socket; move it away to offer the admin socket",
            path.display()
        )));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(Error::Conflict(format!(
            "another process answers on the admin socket {}",
            path.display()
        ))),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            match std::fs::remove_file(path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io_err("cannot remove the stale file of", path, e)),
            }
        }
        Err(e) => Err(io_err("cannot check", path, e)),
    }
}

impl Drop for AdminSocket {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = self.wake.write_all(b"x");
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        // The requests in progress finish (each is bounded by its timeouts
        // and its store calls), up to 10 s.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut active = self.shared.active.lock();
        while *active > 0 {
            if self
                .shared
                .idle
                .wait_until(&mut active, deadline)
                .timed_out()
            {
                break;
            }
        }
        drop(active);
        // Only our own file: a later process may have put its own there.
        let ours =
            std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.id);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Waits for a connection or the wake-up, without a timeout.
#[allow(unsafe_code)]
fn wait_readable(listener: &UnixListener, woken: &UnixStream) -> io::Result<()> {
    let mut fds = [
        libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: woken.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    // SAFETY: `fds` is a valid array of two pollfd for the duration of the
    // call, and its length is passed with it.
    let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn accept_loop(listener: &UnixListener, woken: &UnixStream, shared: &Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match wait_readable(listener, woken) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::error!(target: "tokenvault::admin", "admin socket stopped: {e}");
                return;
            }
        }
        loop {
            if shared.stop.load(Ordering::SeqCst) {
                return;
            }
            match listener.accept() {
                Ok((stream, _)) => dispatch(stream, shared),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Out of descriptors, say: let others finish first.
                    tracing::warn!(target: "tokenvault::admin", "admin socket accept: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                    break;
                }
            }
        }
    }
}

/// Serves a connection on a thread of its own, or answers `busy`.
fn dispatch(stream: UnixStream, shared: &Arc<Shared>) {
    {
        let mut active = shared.active.lock();
        if *active >= shared.cfg.max_connections {
            drop(active);
            let mut stream = stream;
            let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
            let _ = answer_error(
                &mut stream,
                "busy",
                "the admin socket serves as many connections as it may; try again",
            );
            return;
        }
        *active += 1;
    }
    let s = shared.clone();
    let spawned = std::thread::Builder::new()
        .name("tokenvault-admin-conn".into())
        .spawn(move || {
            serve_connection(stream, &s);
            let mut active = s.active.lock();
            *active -= 1;
            s.idle.notify_all();
        });
    if let Err(e) = spawned {
        tracing::warn!(target: "tokenvault::admin", "admin socket: cannot start a thread: {e}");
        let mut active = shared.active.lock();
        *active -= 1;
        shared.idle.notify_all();
    }
}

/// The peer's process id and user id.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[allow(unsafe_code)]
fn peer(stream: &UnixStream) -> io::Result<(Option<i32>, u32)> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes, and `len` holds the
    // size of `cred`, as SO_PEERCRED requires.
    let r = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((Some(cred.pid), cred.uid))
}

/// The peer's user id (`getpeereid`).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
#[allow(unsafe_code)]
fn peer(stream: &UnixStream) -> io::Result<(Option<i32>, u32)> {
    let (mut uid, mut gid) = (0, 0);
    // SAFETY: both pointers are valid for writes of their types.
    let r = unsafe { libc::getpeereid(stream.as_raw_fd(), &mut uid, &mut gid) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((None, uid))
}

#[allow(unsafe_code)]
fn own_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Why a line could not be read.
enum LineFault {
    TooLarge,
    Slow,
    Closed,
    Io(io::Error),
}

/// Reads one line (without its newline) of at most `max` bytes, all of it
/// before `deadline`; the end of the stream also ends a non-empty line.
fn read_line(
    stream: &mut UnixStream,
    max: usize,
    deadline: Instant,
) -> Result<Zeroizing<Vec<u8>>, LineFault> {
    let mut buf = Zeroizing::new(Vec::new());
    let mut chunk = Zeroizing::new([0u8; 8192]);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(LineFault::Slow);
        }
        stream.set_read_timeout(Some(left)).map_err(LineFault::Io)?;
        let room = (max + 1 - buf.len()).min(chunk.len());
        match stream.read(&mut chunk[..room]) {
            Ok(0) if buf.is_empty() => return Err(LineFault::Closed),
            Ok(0) => return Ok(buf),
            Ok(n) => {
                if let Some(i) = chunk[..n].iter().position(|&b| b == b'\n') {
                    buf.extend_from_slice(&chunk[..i]);
                    if buf.len() > max {
                        return Err(LineFault::TooLarge);
                    }
                    return Ok(buf);
                }
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > max {
                    return Err(LineFault::TooLarge);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(LineFault::Slow)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(LineFault::Io(e)),
        }
    }
}

fn write_line(stream: &mut UnixStream, v: &Value) -> io::Result<()> {
    let mut text = Zeroizing::new(serde_json::to_string(v).unwrap_or_default());
    text.push('\n');
    stream.write_all(text.as_bytes())?;
    stream.flush()
}

/// Answers with what the command printed, without a copy of its text
/// that outlives the call (it may hold a secret).
fn send_answer(stream: &mut UnixStream, out: &CommandOutput) -> io::Result<()> {
    #[derive(serde::Serialize)]
    struct Answer<'a> {
        stdout: &'a str,
        stderr: &'a str,
        exit: u8,
    }
    let answer = Answer {
        stdout: out.stdout(),
        stderr: out.stderr(),
        exit: out.exit_code(),
    };
    let mut text = Zeroizing::new(serde_json::to_string(&answer).map_err(io::Error::other)?);
    text.push('\n');
    stream.write_all(text.as_bytes())?;
    stream.flush()
}

/// Answers a protocol error: `{"error": {"kind": …, "message": …}}`.
fn answer_error(stream: &mut UnixStream, kind: &str, message: &str) -> io::Result<()> {
    write_line(
        stream,
        &json!({ "error": { "kind": kind, "message": message } }),
    )
}

/// The command line of a request: `{"args": ["token", "list", …]}`.
fn request_args(line: &[u8]) -> Result<Vec<String>, &'static str> {
    let v: Value = serde_json::from_slice(line).map_err(|_| "the request is not JSON")?;
    let args = v
        .get("args")
        .and_then(Value::as_array)
        .ok_or("the request has no \"args\" array")?;
    args.iter()
        .map(|a| a.as_str().map(str::to_string))
        .collect::<Option<Vec<_>>>()
        .ok_or("every item of \"args\" must be a string")
}

fn serve_connection(mut stream: UnixStream, shared: &Shared) {
    let cfg = &shared.cfg;
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(cfg.write_timeout));
    let (pid, uid) = match peer(&stream) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(target: "tokenvault::admin", "admin socket: no peer credentials: {e}");
            let _ = answer_error(
                &mut stream,
                "forbidden",
                "the peer's credentials are unknown",
            );
            return;
        }
    };
    let me = own_uid();
    let pid_text = pid.map_or_else(|| "?".to_string(), |p| p.to_string());
    if uid != me && uid != 0 {
        tracing::warn!(
            target: "tokenvault::admin",
            "admin socket: refused uid {uid} (pid {pid_text}): only uid {me} or root"
        );
        let _ = answer_error(
            &mut stream,
            "forbidden",
            &format!("uid {uid} may not use this admin socket (only uid {me}, or root)"),
        );
        return;
    }
    let started = Instant::now();
    let line = match read_line(&mut stream, MAX_REQUEST, started + cfg.request_timeout) {
        Ok(line) => line,
        Err(fault) => {
            let (kind, message) = match fault {
                LineFault::TooLarge => (
                    "limit",
                    format!("the request is longer than {MAX_REQUEST} bytes"),
                ),
                LineFault::Slow => (
                    "timeout",
                    format!(
                        "no whole request line within {} s",
                        cfg.request_timeout.as_secs_f64()
                    ),
                ),
                LineFault::Closed => return,
                LineFault::Io(e) => ("io", format!("reading the request failed: {e}")),
            };
            tracing::warn!(
                target: "tokenvault::admin",
                "admin socket: uid {uid} (pid {pid_text}): {message}"
            );
            let _ = answer_error(&mut stream, kind, &message);
            return;
        }
    };
    let args = match request_args(&line) {
        Ok(a) => a,
        Err(message) => {
            tracing::warn!(
                target: "tokenvault::admin",
                "admin socket: uid {uid} (pid {pid_text}): malformed request: {message}"
            );
            let _ = answer_error(&mut stream, "malformed", message);
            return;
        }
    };
    drop(line);
    let stdin_timeout = cfg.stdin_timeout;
    let mut conn = stream
        .try_clone()
        .map_err(|e| tracing::warn!(target: "tokenvault::admin", "admin socket: {e}"));
    let mut ask = || -> io::Result<Zeroizing<Vec<u8>>> {
        let s = conn
            .as_mut()
            .map_err(|()| io::Error::other("the connection cannot be read again"))?;
        ask_stdin(s, stdin_timeout)
    };
    let (out, command) = execute(&shared.store, &args, &mut Caller::Remote(&mut ask));
    drop(args);
    let sent = send_answer(&mut stream, &out);
    // The command words only: an argument may hold a token, and the
    // output may hold a secret just made (it goes to the client alone).
    tracing::info!(
        target: "tokenvault::admin",
        "admin: uid {uid} (pid {pid_text}) ran `{command}`: exit {} in {} ms{}",
        out.exit_code(),
        started.elapsed().as_millis(),
        if sent.is_ok() { "" } else { " (the client left before the answer)" }
    );
}

/// Asks the client for its standard input: `{"stdin": true}`, answered by
/// `{"stdin_hex": "…"}` (at most [`MAX_STDIN`] + 1 bytes, hexadecimal).
fn ask_stdin(stream: &mut UnixStream, timeout: Duration) -> io::Result<Zeroizing<Vec<u8>>> {
    write_line(stream, &json!({ "stdin": true }))?;
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, format!("standard input: {m}"));
    let max = 2 * (MAX_STDIN as usize + 1) + 64;
    let line = read_line(stream, max, Instant::now() + timeout).map_err(|f| match f {
        LineFault::TooLarge => bad("longer than the protocol allows"),
        LineFault::Slow => bad("not sent in time"),
        LineFault::Closed => bad("the client closed the connection"),
        LineFault::Io(e) => e,
    })?;
    let v: Zeroizing<String> = Zeroizing::new(
        serde_json::from_slice::<Value>(&line)
            .ok()
            .and_then(|v| {
                v.get("stdin_hex")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .ok_or_else(|| bad("expected {\"stdin_hex\": …}"))?,
    );
    decode_hex(&v).ok_or_else(|| bad("not hexadecimal"))
}

/// Hexadecimal text as bytes.
fn decode_hex(s: &str) -> Option<Zeroizing<Vec<u8>>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Zeroizing::new(Vec::with_capacity(s.len() / 2));
    for pair in s.as_bytes().chunks(2) {
        out.push(digit(pair[0])? << 4 | digit(pair[1])?);
    }
    Some(out)
}
