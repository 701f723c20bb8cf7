//! The accept loop: axum's router on hyper connections with the limits a public-facing service needs.
//!
//! `axum::serve` sets no timer on hyper, so a client that sends its headers a byte a minute keeps a
//! connection (and its task) forever. Here every connection gets a header-read timeout, from the
//! moment it is accepted (see `FirstBytesDeadline` below), and a bounded read buffer; a request body is
//! bounded in size and in time by the handlers' body reader (`api::read_body`). At most
//! `--max-connections` are open at once, sized by default to the open-files limit, so a flood of
//! connections is refused one by one instead of running the process out of descriptors. Shutdown
//! stops accepting, lets open connections finish their requests, and closes idle keep-alive
//! connections at once.
//!
//! A head hyper cannot parse (400 for a bad request line or header, 431 for a head over
//! [`MAX_HEAD_BYTES`] or past 100 headers) is answered by hyper itself with a bare status and
//! `content-length: 0`, not problem+json: hyper writes that answer inside its HTTP/1 state machine
//! (`Conn::on_parse_error` writes the head that `Http1Transaction::on_error` returns, with no body)
//! before any service sees a request, and neither hyper 1.x's builders nor hyper-util offer a hook to
//! give it a body. Rewriting hyper's bytes on the wire, or parsing every head a second time, would be
//! a second HTTP parser for the sake of clients that sent malformed requests.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;

use crate::metric_names as names;
use crate::Config;

/// The most a connection buffers while reading a request head (headers above this are refused).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// How often HTTP/2 connections are pinged, and how long a ping may go unanswered.
pub const HTTP2_KEEP_ALIVE: Duration = Duration::from_secs(20);
/// File descriptors the default `--max-connections` leaves to the server itself: the listener, the
/// state database and its lock, stdout, the runtime's epoll and wakers, with room to spare.
pub const RESERVED_FILES: u64 = 64;

/// The limits the accept loop puts on connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How long a client may take to send a request's head, counted from when it connects or its last
    /// answer was written.
    pub header_read_timeout: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
}

impl Limits {
    /// The limits `config` asks for; an unset `--max-connections` is sized to the open-files limit
    /// in force now.
    pub fn from_config(config: &Config) -> Self {
        let max_connections = config.max_connections.unwrap_or_else(|| {
            let (soft, _hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap_or((u64::MAX, u64::MAX));
            soft.saturating_sub(RESERVED_FILES).max(1)
        });
        Self {
            header_read_timeout: Duration::from_secs_f64(config.header_timeout_secs),
            max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX).min(Semaphore::MAX_PERMITS),
        }
    }
}

/// Raises the soft limit on open files to the hard limit (the soft one is often 1024, the hard one far
/// higher), so the default `--max-connections` is as high as the system allows.
///
/// # Errors
/// The system refused to tell or to change the limit.
pub fn raise_open_files_limit() -> io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

/// Serves `app` on `listener` until `shutdown` resolves, then waits for open connections to finish
/// (bound it from outside if it must end by a deadline).
pub async fn serve(listener: TcpListener, app: Router, limits: Limits, shutdown: impl Future<Output = ()>) {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_HEAD_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(HTTP2_KEEP_ALIVE)
        .keep_alive_timeout(HTTP2_KEEP_ALIVE)
        .max_header_list_size(MAX_HEAD_BYTES as u32);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let open = metrics::gauge!(names::CONNECTIONS_OPEN);
    let refused = metrics::counter!(names::CONNECTIONS_REFUSED);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Full: close the connection at once rather than leave it in the kernel's backlog, so the
        // client learns it now and the accept loop never waits on a slot (nor spins: each turn
        // takes one connection off the backlog).
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            refused.increment(1);
            continue;
        };
        let slot = Slot::new(permit, open.clone());
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(FirstBytesDeadline::new(stream, limits.header_read_timeout));
        let service = TowerToHyperService::new(app.clone());
        let connection = builder.serve_connection_with_upgrades(io, service).into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("connection ended with an error: {e}");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// A connection's place under `--max-connections`, given back and taken off the gauge of open
/// connections when the connection's task ends, however it ends.
struct Slot {
    _permit: OwnedSemaphorePermit,
    open: metrics::Gauge,
}

impl Slot {
    fn new(permit: OwnedSemaphorePermit, open: metrics::Gauge) -> Self {
        open.increment(1.0);
        Self { _permit: permit, open }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.decrement(1.0);
    }
}

/// What an HTTP/2 client sends first; hyper-util's `auto` reads until the bytes differ from it.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// An accepted stream whose first bytes must arrive within the header-read timeout.
///
/// hyper's HTTP/1 header-read timer starts only once hyper-util's `auto` connection has read enough
/// to tell HTTP/1 from HTTP/2 (hyperium/hyper#3962), so a client that connects and sends nothing, or
/// the start of the HTTP/2 preface and then nothing, would hold its connection and its descriptor
/// forever. Until the bytes read settle that question as `auto` settles it (they stop matching the
/// preface, the preface is complete, or the stream ends), a read still waiting at the deadline fails
/// with `TimedOut`, which ends the connection; from then on reads pass straight through and hyper's
/// own timer bounds the head, so a head may take up to twice the timeout in all.
struct FirstBytesDeadline {
    stream: TcpStream,
    /// `None` once the protocol is settled.
    deadline: Option<Pin<Box<Sleep>>>,
    /// How many bytes of the preface have been read so far.
    preface_read: usize,
}

impl FirstBytesDeadline {
    fn new(stream: TcpStream, timeout: Duration) -> Self {
        Self { stream, deadline: Some(Box::pin(tokio::time::sleep(timeout))), preface_read: 0 }
    }
}

impl AsyncRead for FirstBytesDeadline {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let Some(deadline) = this.deadline.as_mut() else {
            return Pin::new(&mut this.stream).poll_read(cx, buf);
        };
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Pending if deadline.as_mut().poll(cx).is_ready() => {
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "no request within the header-read timeout")))
            }
            Poll::Ready(Ok(())) => {
                let read = &buf.filled()[before..];
                let end = this.preface_read + read.len();
                if read.is_empty() || end >= H2_PREFACE.len() || read != &H2_PREFACE[this.preface_read..end] {
                    this.deadline = None;
                } else {
                    this.preface_read = end;
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl AsyncWrite for FirstBytesDeadline {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
