//! The `session-pool` binary: parse the config, set up logging, bind, serve until SIGTERM/SIGINT.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use session_pool::Config;

/// mimalloc: the service allocates small, short-lived buffers on every request from two or more
/// threads, where glibc's arenas contend. It buys 10% on acquire and 16% on mark_good over HTTP
/// (`COMPARE_BIN` in scripts/http-bench.sh against a build without it).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Keeps the sessions of a web-scraping cluster: Crawlee's Session/SessionPool as a shared HTTP
/// service.
#[derive(Debug, Parser)]
#[command(name = "session-pool", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    config: Config,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Exit 0 when the server at --listen answers /healthz with 200 (for container health checks).
    Healthcheck,
    /// Verify the state in --data-dir without changing it (every page and every record); exit
    /// non-zero on damage. The server must not be running on it.
    Check {
        /// The data directory to verify.
        #[arg(long, env = "SESSION_POOL_DATA_DIR", default_value = "./data")]
        data_dir: std::path::PathBuf,
    },
    /// Copy every pool (config and sessions) from one store to another, all or nothing: each of
    /// SOURCE and TARGET is a data directory or a redis:// (rediss://) URL. Refuses a target that
    /// already holds one of the pools with sessions. No server may be running on a directory.
    Migrate {
        /// Where the pools are: a data directory or a Redis URL.
        #[arg(long, value_name = "SOURCE")]
        from: String,
        /// Where they go: a data directory or a Redis URL.
        #[arg(long, value_name = "TARGET")]
        to: String,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Healthcheck) = cli.command {
        return match healthcheck(cli.config.listen) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("unhealthy: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(Command::Check { data_dir }) = &cli.command {
        return match session_pool::persist::check(data_dir) {
            Ok(stats) => {
                println!(
                    "{}: sound ({} pools, {} sessions, {} sessions of deleted pools still to remove)",
                    data_dir.join(session_pool::persist::STATE_FILE).display(),
                    stats.pools,
                    stats.sessions,
                    stats.orphans
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("session-pool check: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(Command::Migrate { from, to }) = &cli.command {
        return match session_pool::migrate::migrate(&cli.config, from, to).await {
            Ok(summary) => {
                println!("migrated {} pools, {} sessions", summary.pools, summary.sessions);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("session-pool migrate: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    // Dropped at the end of `main`, which writes out the lines still queued.
    let _log_writer = match session_pool::logging::init(cli.config.log_format) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("session-pool: cannot set up logging: {e}");
            return ExitCode::FAILURE;
        }
    };
    match serve(cli.config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("session-pool: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    config.validate()?;
    // Every connection holds a descriptor: take all the system grants before sizing
    // --max-connections on it.
    match session_pool::serve::raise_open_files_limit() {
        Ok(open_files) => tracing::info!(open_files, "open-files limit"),
        Err(e) => tracing::warn!("cannot raise the open-files limit: {e}"),
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    session_pool::run(listener, config, shutdown_signal()).await
}

/// Resolves on Ctrl-C or SIGTERM, whichever comes first.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

/// A plain HTTP/1.1 GET of /healthz, so the container image needs no curl.
fn healthcheck(listen: SocketAddr) -> anyhow::Result<()> {
    let mut target = listen;
    if target.ip().is_unspecified() {
        target.set_ip(if listen.is_ipv4() { [127, 0, 0, 1].into() } else { std::net::Ipv6Addr::LOCALHOST.into() });
    }
    let timeout = Duration::from_secs(3);
    let mut stream = TcpStream::connect_timeout(&target, timeout).with_context(|| format!("connect to {target}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(stream, "GET /healthz HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n")?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).context("read the answer")?;
    anyhow::ensure!(head.starts_with(b"HTTP/1.1 200"), "{target} answered {:?}", String::from_utf8_lossy(&head));
    Ok(())
}
