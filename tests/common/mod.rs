//! The real binary as a process, for the tests that need one: durability, faults, signals.
//! Each test binary that includes this module uses part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_session-pool");

/// A fresh, empty directory path (not created) unique to this test process and call.
pub fn temp_dir(name: &str) -> PathBuf {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "session-pool-{name}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// A server process on a data directory. Killed when dropped, so a failing test leaves none behind.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub client: reqwest::Client,
    /// Where its stdout (the log) goes, when the test asked for it.
    pub log: Option<PathBuf>,
}

impl Server {
    /// Starts the binary on `dir` with `extra` flags and waits until `/readyz` answers 200.
    pub async fn start(dir: &Path, extra: &[&str]) -> Server {
        Self::spawn(dir, extra, None).await
    }

    /// Like [`Server::start`], keeping the log in a file beside `dir`.
    pub async fn start_logged(dir: &Path, extra: &[&str]) -> Server {
        let log = dir.with_extension("log");
        Self::spawn(dir, extra, Some(log)).await
    }

    async fn spawn(dir: &Path, extra: &[&str], log: Option<PathBuf>) -> Server {
        let port = free_port();
        let stdout = match &log {
            Some(path) => Stdio::from(std::fs::File::create(path).expect("create the log file")),
            None => Stdio::null(),
        };
        let child = Command::new(BIN)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(dir)
            .args(extra)
            .env_remove("SESSION_POOL_API_KEY")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the server");
        let server = Server { child, base: format!("http://127.0.0.1:{port}"), client: reqwest::Client::new(), log };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = server.client.get(format!("{}/readyz", server.base)).send().await {
                if r.status() == 200 {
                    return server;
                }
            }
            assert!(Instant::now() < deadline, "the server did not become ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the server answers");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, body: Value) -> Value {
        let (status, body) = self.call(reqwest::Method::POST, path, Some(body)).await;
        assert!((200..300).contains(&status), "POST {path}: {status} {body}");
        body
    }

    pub async fn put(&self, path: &str, body: Value) -> Value {
        let (status, body) = self.call(reqwest::Method::PUT, path, Some(body)).await;
        assert!((200..300).contains(&status), "PUT {path}: {status} {body}");
        body
    }

    pub async fn get(&self, path: &str) -> Value {
        let (status, body) = self.call(reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// The value of one unlabelled counter or gauge in `/metrics` (0 when absent).
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self.client.get(format!("{}/metrics", self.base)).send().await.expect("metrics").text().await;
        let text = text.unwrap_or_default();
        text.lines()
            .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// Sends SIGTERM and waits (at most `timeout`) for the exit; returns the status and stderr.
    pub fn terminate_within(mut self, timeout: Duration) -> (ExitStatus, String) {
        signal(self.child.id(), "TERM");
        let status = wait_with_timeout(&mut self.child, timeout);
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
        }
        (status, stderr)
    }

    pub fn terminate(self) -> ExitStatus {
        self.terminate_within(Duration::from_secs(30)).0
    }

    /// SIGKILL, as a crash or the OOM killer would.
    pub fn kill9(mut self) {
        signal(self.child.id(), "KILL");
        let _ = self.child.wait();
    }

    /// What the server logged so far (for a server started with [`Server::start_logged`]).
    pub fn log_text(&self) -> String {
        self.log.as_ref().and_then(|p| std::fs::read_to_string(p).ok()).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn signal(pid: u32, name: &str) {
    Command::new("kill").args([&format!("-{name}"), &pid.to_string()]).status().expect("send a signal");
}

pub fn wait_with_timeout(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "the server did not exit in time");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `session-pool ARGS` to its end; returns the status, stdout and stderr.
pub fn run(args: &[&std::ffi::OsStr]) -> (ExitStatus, String, String) {
    let output = Command::new(BIN).args(args).stdin(Stdio::null()).output().expect("run the binary");
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs the server on `dir` expecting it to refuse to start; returns its stderr. A server that
/// starts after all is killed after a while, and the test fails.
pub fn refuses_to_start(dir: &Path) -> String {
    let mut child = Command::new(BIN)
        .args(["--listen", &format!("127.0.0.1:{}", free_port()), "--data-dir"])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the binary");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server started on {dir:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success(), "the server started on {dir:?}");
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
    }
    stderr
}

/// Polls `condition` every 50 ms until it holds, failing after `timeout` with `what`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
