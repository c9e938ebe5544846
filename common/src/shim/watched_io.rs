//! Connections whose writes are watched, so that a client that stops reading cannot hold a
//! connection, and what the server buffered for it, for ever.
//!
//! Every accepted TCP stream counts the bytes its socket took ([`ConnectionWrites`], handed to
//! each request as [`Connection`] connect info, so that an event stream can tell how much of what it
//! produced still sits in this process) and fails a write once the socket has been refusing writes
//! for the stall limit without the server's write buffer draining once: the kernel's buffers are
//! full and the peer has taken next to nothing for that long. hyper
//! then drops the connection, and with it the response, its buffers and its stream. Event-stream
//! clients come back with `Last-Event-ID` and lose nothing.

use crate::observe::names;
use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;

/// How long writes may stay blocked, the server's buffer never draining, before the connection is
/// dropped. The kernel's send buffer (megabytes) absorbs a slow but live reader; a peer that reads
/// nothing fills it and then this runs out.
pub const WRITE_STALL_LIMIT: Duration = Duration::from_secs(30);

/// Bytes one connection's socket has taken so far.
#[derive(Debug, Default)]
pub struct ConnectionWrites {
    written: AtomicU64,
}

impl ConnectionWrites {
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }
}

/// The connect info of a request on a [`WatchedListener`]: the peer, and its connection's writes.
#[derive(Debug, Clone)]
pub struct Connection {
    pub remote: SocketAddr,
    pub writes: Arc<ConnectionWrites>,
}

impl Connected<IncomingStream<'_, WatchedListener>> for Connection {
    fn connect_info(stream: IncomingStream<'_, WatchedListener>) -> Self {
        Self { remote: *stream.remote_addr(), writes: stream.io().writes.clone() }
    }
}

/// A TCP listener whose connections are [`WatchedStream`]s.
#[derive(Debug)]
pub struct WatchedListener {
    inner: TcpListener,
    stall_limit: Duration,
}

impl WatchedListener {
    pub fn new(inner: TcpListener, stall_limit: Duration) -> Self {
        Self { inner, stall_limit }
    }
}

impl Listener for WatchedListener {
    type Io = WatchedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (inner, remote) = Listener::accept(&mut self.inner).await;
        let stream =
            WatchedStream { inner, writes: Arc::default(), stall_limit: self.stall_limit, blocked_since: None };
        (stream, remote)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A TCP stream that counts what it writes and fails a write blocked for longer than its limit.
#[derive(Debug)]
pub struct WatchedStream {
    inner: TcpStream,
    writes: Arc<ConnectionWrites>,
    stall_limit: Duration,
    /// Armed by the first write that found the socket full; cleared when hyper flushes.
    blocked_since: Option<Pin<Box<Sleep>>>,
}

impl WatchedStream {
    fn watch(&mut self, cx: &mut Context<'_>, polled: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        match polled {
            // Progress alone does not end a stall: a peer that takes a few bytes now and then
            // (the kernel's window probes do that for a peer that reads nothing) must not hold the
            // connection for ever. A stall ends when everything queued was written (`poll_flush`).
            Poll::Ready(Ok(n)) => {
                self.writes.written.fetch_add(n as u64, Ordering::Relaxed);
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let limit = self.stall_limit;
                let timer = self.blocked_since.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                // Polled here so that the connection's task wakes when the limit passes, even if
                // the socket never becomes writable again.
                if timer.as_mut().poll(cx).is_ready() {
                    metrics::counter!(names::WRITES_STALLED).increment(1);
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("writes blocked for {} s: the peer is not reading", limit.as_secs_f64()),
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncRead for WatchedStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for WatchedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    /// hyper (HTTP/1 and HTTP/2 alike) flushes once its write buffer is empty: every byte it had
    /// was taken, and the stall, if any, is over.
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.blocked_since = None;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
