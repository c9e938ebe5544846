//! How much of what an event stream produced its client's socket has not yet taken: the bytes this
//! process holds for that client (in hyper's write buffer), summed over clients in
//! [`names::RELAY_UNSENT_BYTES`].
//!
//! A client that never reads cannot make it grow without bound: hyper stops asking the stream for
//! more once its write buffer for the connection is full (16 frames or about 400 KiB), the stream
//! then queues nothing (later events wait in the tail's shared broadcast buffer, a client that falls
//! behind it catches up from the tail's state), and a write blocked for the shim's stall limit
//! drops the connection ([`assetgen_common::shim::WatchedListener`]). The client resumes with
//! `Last-Event-ID`.
//!
//! Counted against the connection's bytes written since the stream started, which include the
//! response head and chunk framing, so the figure can read up to a few hundred bytes low; never high.

use assetgen_common::observe::{GaugeShare, names};
use assetgen_common::shim::ConnectionWrites;
use axum::body::{Body, Bytes, HttpBody};
use http_body::{Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// An event stream's body, counting what it hands to the connection against what the socket took.
pub struct Unsent {
    inner: Body,
    writes: Arc<ConnectionWrites>,
    written_at_start: u64,
    produced: u64,
    gauge: GaugeShare,
}

impl Unsent {
    pub fn new(inner: Body, writes: Arc<ConnectionWrites>) -> Self {
        let written_at_start = writes.written();
        Self {
            inner,
            writes,
            written_at_start,
            produced: 0,
            gauge: GaugeShare::new(metrics::gauge!(names::RELAY_UNSENT_BYTES)),
        }
    }

    fn unsent(&self) -> u64 {
        self.produced.saturating_sub(self.writes.written().saturating_sub(self.written_at_start))
    }
}

impl HttpBody for Unsent {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            this.produced += data.len() as u64;
        }
        let unsent = this.unsent();
        this.gauge.set(unsent as f64);
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
