//! The accept loop: axum's router on hyper connections with the limits a public-facing service needs.
//!
//! `axum::serve` sets no timer on hyper, so a client that sends its headers a byte a minute keeps a
//! connection (and its task) forever. Here every connection gets a header-read timeout, from the
//! moment it is accepted (see `FirstBytesDeadline` below), and a bounded read buffer; a request body is
//! bounded in size and in time by the handlers' body reader (`api::read_body`). Shutdown stops
//! accepting, lets open connections finish their requests, and closes idle keep-alive connections at
//! once.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;
use tower::ServiceExt;

use crate::api::hot::App;

/// The most a connection buffers while reading a request head (headers above this are refused).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// How often HTTP/2 connections are pinged, and how long a ping may go unanswered.
pub const HTTP2_KEEP_ALIVE: Duration = Duration::from_secs(20);

/// Raises the soft limit on open files to the hard limit (the soft one is often 1024, the hard one far
/// higher): every connection holds a descriptor.
///
/// # Errors
/// The system refused to tell or to change the limit.
pub fn raise_open_files_limit() -> io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

/// Serves `app` on `listener` until `shutdown` resolves, then waits for open connections to finish
/// (bound it from outside if it must end by a deadline).
pub async fn serve(listener: TcpListener, app: App, header_read_timeout: Duration, shutdown: impl Future<Output = ()>) {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(header_read_timeout).max_buf_size(MAX_HEAD_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(HTTP2_KEEP_ALIVE)
        .keep_alive_timeout(HTTP2_KEEP_ALIVE)
        .max_header_list_size(MAX_HEAD_BYTES as u32);
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
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(FirstBytesDeadline::new(stream, header_read_timeout));
        let service =
            TowerToHyperService::new(app.clone().map_request(|request: Request<Incoming>| request.map(Body::new)));
        let connection = builder.serve_connection_with_upgrades(io, service).into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("connection ended with an error: {e}");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
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
