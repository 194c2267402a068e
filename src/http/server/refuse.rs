//! Connections turned away over a cap: the complete `503` written without
//! reading the request, a short linger, and the rate-limited log line that
//! counts them.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use super::TARGET;

/// Seconds a turned-away client is asked to wait (also the `Retry-After` of
/// a 503 for a store that cannot answer for now).
pub(crate) const RETRY_AFTER_SECS: u64 = 1;

/// Turned-away connections given a moment to read their 503 before the
/// socket closes (the rest are closed at once).
pub(super) const MAX_LINGERING: usize = 64;

/// How long a turned-away connection lingers, and how much of what it sends
/// is read and dropped meanwhile.
const LINGER: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 16 * 1024;

/// The longest interval between two log lines about refused connections.
pub(super) const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

pub(super) const BUSY_FULL: &str =
    "the server is serving as many connections as it may; retry shortly";
pub(super) const BUSY_PEER: &str = "too many connections from this address; retry shortly";

/// The whole `503` answer for a connection over a cap.
fn busy_response(message: &str) -> Vec<u8> {
    let body = serde_json::json!({"meta": {"status": 503, "error_message": message}}).to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: {RETRY_AFTER_SECS}\r\ncache-control: no-store\r\nconnection: close\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Answers `503` without reading the request (the socket's buffer is empty
/// on a fresh connection, so the write does not wait), then closes the
/// connection, after a short linger if one is free so that the client reads
/// the answer rather than a reset.
pub(super) fn turn_away(stream: TcpStream, message: &'static str, lingering: &Arc<Semaphore>) {
    thread_local! {
        static ANSWERS: (Vec<u8>, Vec<u8>) = (busy_response(BUSY_FULL), busy_response(BUSY_PEER));
    }
    ANSWERS.with(|(full, peer)| {
        let answer = if message == BUSY_FULL { full } else { peer };
        let _ = stream.try_write(answer);
    });
    let Ok(permit) = lingering.clone().try_acquire_owned() else {
        return;
    };
    tokio::spawn(async move {
        let _permit = permit;
        let mut stream = stream;
        let _ = tokio::time::timeout(LINGER, async {
            let _ =
                std::future::poll_fn(|cx| std::pin::Pin::new(&mut stream).poll_shutdown(cx)).await;
            let mut buf = [0u8; 1024];
            let mut read = 0;
            while read < LINGER_BYTES {
                if stream.readable().await.is_err() {
                    break;
                }
                match stream.try_read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => read += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => break,
                }
            }
        })
        .await;
    });
}

#[derive(Clone, Copy)]
pub(super) enum Refusal {
    Full,
    Peer,
}

/// Refused connections, logged as counts: the first of a quiet spell at
/// once, the rest at most once per [`REFUSAL_LOG_EVERY`].
pub(super) struct Refusals {
    addr: SocketAddr,
    full: u64,
    peer: u64,
    since: Instant,
    last_line: Option<Instant>,
}

impl Refusals {
    pub(super) fn new(addr: SocketAddr) -> Self {
        Refusals {
            addr,
            full: 0,
            peer: 0,
            since: Instant::now(),
            last_line: None,
        }
    }

    pub(super) fn note(&mut self, why: Refusal) {
        if self.full + self.peer == 0 {
            self.since = Instant::now();
        }
        #[cfg(feature = "metrics")]
        crate::http::metrics_route::connection_refused(match why {
            Refusal::Full => "full",
            Refusal::Peer => "peer",
        });
        match why {
            Refusal::Full => self.full += 1,
            Refusal::Peer => self.peer += 1,
        }
        let quiet = self
            .last_line
            .is_none_or(|t| t.elapsed() >= REFUSAL_LOG_EVERY);
        if quiet {
            self.flush(true);
        }
    }

    /// Logs the refusals counted since the last line, if any, when `now` or
    /// when the last line is old enough.
    pub(super) fn flush(&mut self, now: bool) {
        let total = self.full + self.peer;
        if total == 0 {
            return;
        }
        if !now
            && self
                .last_line
                .is_some_and(|t| t.elapsed() < REFUSAL_LOG_EVERY)
        {
            return;
        }
        let secs = self.since.elapsed().as_secs();
        tracing::warn!(
            target: TARGET,
            addr = %self.addr,
            refused = total,
            server_full = self.full,
            peer_over_cap = self.peer,
            "{total} connection{} refused in the last {secs}s (503, server full or too many from one address)",
            if total == 1 { "" } else { "s" },
        );
        self.full = 0;
        self.peer = 0;
        self.last_line = Some(Instant::now());
        self.since = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_busy_answer_is_complete_http() {
        let a = String::from_utf8(busy_response(BUSY_PEER)).unwrap();
        let (head, body) = a.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(head.contains("\r\nretry-after: 1\r\n"));
        assert!(head.contains(&format!("\r\ncontent-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["meta"]["status"], 503);
        assert_eq!(v["meta"]["error_message"], BUSY_PEER);
    }
}
