//! The accept loop: axum's router on hyper connections with the limits a public-facing service needs.
//!
//! `axum::serve` sets no timer on hyper, so a client that sends its headers a byte a minute keeps a
//! connection (and its task) forever. Here every connection gets a header-read timeout and a bounded
//! read buffer; a request body is bounded in size and in time by the handlers' body reader
//! (`api::read_body`). Shutdown stops accepting, lets open connections finish their requests, and closes
//! idle keep-alive connections at once.

use std::future::Future;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::api::hot::App;

/// How long a client may take to send a request's headers (also bounds idle keep-alive waits).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The most a connection buffers while reading a request head (headers above this are refused).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// How often HTTP/2 connections are pinged, and how long a ping may go unanswered.
pub const HTTP2_KEEP_ALIVE: Duration = Duration::from_secs(20);

/// Serves `app` on `listener` until `shutdown` resolves, then waits for open connections to finish
/// (bound it from outside if it must end by a deadline).
pub async fn serve(listener: TcpListener, app: App, shutdown: impl Future<Output = ()>) {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT).max_buf_size(MAX_HEAD_BYTES);
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
        let service =
            TowerToHyperService::new(app.clone().map_request(|request: Request<Incoming>| request.map(Body::new)));
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
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
