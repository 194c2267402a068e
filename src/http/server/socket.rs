//! A served connection's socket: its bounded send buffer, and the
//! [`Watched`] wrapper that marks the connection active on every byte and
//! fails a write the client leaves unread past the write timeout.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::caps::SlotState;

/// The send buffer asked for each connection (the kernel may double it).
/// Left to itself Linux grows it to 4 MiB for a client that does not read,
/// and the server would answer some 25,000 pipelined requests into it
/// before the write timeout even starts; the answers of this API are small,
/// so 32 KiB costs a client nothing.
const SEND_BUFFER: LibcInt = 32 * 1024;

#[cfg(unix)]
type LibcInt = libc::c_int;
#[cfg(not(unix))]
type LibcInt = i32;

/// Sets [`SEND_BUFFER`] on `stream` (best effort).
#[cfg(unix)]
#[allow(unsafe_code)]
pub(super) fn bound_send_buffer(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let size: libc::c_int = SEND_BUFFER;
    // SAFETY: a valid descriptor for the duration of the call, and an int
    // option passed with its own size.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

#[cfg(not(unix))]
pub(super) fn bound_send_buffer(_: &TcpStream) {}

/// A connection's socket, watched: reads and writes mark it active, and a
/// write that cannot hand over its bytes within the write timeout (the
/// client reads no answer) fails, which closes the connection. Generic over
/// the stream so that a wrapped one (TLS) is watched the same way.
pub(super) struct Watched<S = TcpStream> {
    pub(super) io: S,
    pub(super) slot: Arc<SlotState>,
    pub(super) write_timeout: Duration,
    /// Running since a write first found the socket full.
    pub(super) stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> Watched<S> {
    fn wrote(
        &mut self,
        cx: &mut Context<'_>,
        wanted: usize,
        r: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match r {
            Poll::Pending => {
                let t = self.write_timeout;
                let timer = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(t)));
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client read no answer within the write timeout",
                    )));
                }
                Poll::Pending
            }
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.slot.touch();
                }
                // Only a write taken whole ends the stall: a client that
                // reads a byte now and then does not restart the clock.
                if n >= wanted {
                    self.stalled = None;
                }
                Poll::Ready(Ok(n))
            }
            other => other,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.slot.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        this.wrote(cx, buf.len(), r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let wanted = bufs.iter().map(|b| b.len()).sum();
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.wrote(cx, wanted, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
