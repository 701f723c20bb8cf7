//! A minimal axum server to measure session-pool against: the same stack (tokio multi-thread runtime,
//! axum, serde_json) with one `POST /echo` route that parses a small JSON body, shaped like a
//! `mark_good` request, into a typed struct and answers it back as JSON. No state, no locks, no
//! middleware: whatever session-pool costs on top of this is its own.
//!
//! ```text
//! cargo run --release --example echo_baseline -- 127.0.0.1:8090
//! curl -s -XPOST -H 'content-type: application/json' -d '{"lease_id":null}' 127.0.0.1:8090/echo
//! ```
//!
//! `scripts/http-bench.sh` starts it and loads it with wrk next to session-pool.

use axum::{routing::post, Json, Router};
use serde::{Deserialize, Serialize};

/// The body of a `mark_good` call: one optional lease id, unknown fields rejected as session-pool does.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct EchoBody {
    /// The lease to end, when the caller holds one.
    #[serde(default)]
    lease_id: Option<String>,
}

/// Parses the body and answers it back.
async fn echo(Json(body): Json<EchoBody>) -> Json<EchoBody> {
    Json(body)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8090".to_owned());
    let app = Router::new().route("/echo", post(echo));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("echo_baseline listening on {}", listener.local_addr()?);
    axum::serve(listener, app).await
}
