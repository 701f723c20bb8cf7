//! The one harness every test binary shares: the real binary as a process ([`Server`]), the wait for
//! readiness that the in-process servers of `tests/api` use as well ([`wait_until_ready`]), and
//! [`eventually`], the poll with a deadline that replaces sleeping and hoping.
//! [`redis`] runs a private redis-server for the tests of the Redis store.
//! Each test binary that includes this module uses part of it.
#![allow(dead_code)]

pub mod redis;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_session-pool");

/// How long a server may take to restore its state and answer `/readyz` with 200.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

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

/// A [`temp_dir`] removed with everything in it when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        TempDir(temp_dir(name))
    }
}

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        let _ = std::fs::remove_file(self.0.with_extension("log"));
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// Polls `condition` every 50 ms until it holds, failing after `timeout` with `what`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the server at `base` answers `GET /readyz` with 200. `stopped` is asked before each
/// try and says why the server is gone, if it is, so a server that cannot start fails the test at
/// once with its reason instead of at the deadline.
pub async fn wait_until_ready(client: &reqwest::Client, base: &str, stopped: impl FnMut() -> Option<String>) {
    wait_for_200(client, &format!("{base}/readyz"), stopped).await;
}

/// Waits until `GET url` answers 200, failing at once when `stopped` says why the server is gone.
async fn wait_for_200(client: &reqwest::Client, url: &str, mut stopped: impl FnMut() -> Option<String>) {
    eventually(READY_TIMEOUT, &format!("{url} answers 200"), || {
        if let Some(why) = stopped() {
            panic!("the server stopped before {url} answered 200: {why}");
        }
        // Connection: close, so the probe leaves no idle connection behind in a server whose
        // connections a test counts.
        let probe = client.get(url).header(reqwest::header::CONNECTION, "close").send();
        async move { probe.await.is_ok_and(|r| r.status() == 200) }
    })
    .await;
}

/// Percent-encodes everything but unreserved characters (for query values).
pub fn encode(raw: &str) -> String {
    let mut out = String::new();
    for b in raw.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The value of an unlabelled sample in a Prometheus text page.
pub fn sample(page: &str, name: &str) -> Option<f64> {
    page.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// How to start a [`Server`]: flags, environment, an open-files limit, a log file.
pub struct Launch<'a> {
    dir: &'a Path,
    args: Vec<String>,
    env: Vec<(String, String)>,
    ulimit: Option<String>,
    log: Option<PathBuf>,
}

impl Launch<'_> {
    /// More flags.
    pub fn args(mut self, args: impl IntoIterator<Item = impl AsRef<str>>) -> Self {
        self.args.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// An environment variable for the process.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Starts the binary through `bash -c 'ulimit LIMIT && exec ...'` (e.g. `-n 1024`).
    pub fn ulimit(mut self, limit: &str) -> Self {
        self.ulimit = Some(limit.to_owned());
        self
    }

    /// Keeps the log (stdout) in a file beside the data directory; see [`Server::log_text`].
    pub fn logged(self) -> Self {
        let path = self.dir.with_extension("log");
        self.log_to(path)
    }

    /// Keeps the log (stdout) in the file `path`, for a data directory whose disk is made to fail.
    pub fn log_to(mut self, path: PathBuf) -> Self {
        self.log = Some(path);
        self
    }

    /// Starts the binary and waits until `/readyz` answers 200.
    pub async fn start(self) -> Server {
        self.start_until("/readyz").await
    }

    /// Starts the binary and waits only until `/healthz` answers 200: for a server that cannot be
    /// ready yet (its store is out of reach).
    pub async fn start_unready(self) -> Server {
        self.start_until("/healthz").await
    }

    /// Starts the binary on a free port and waits until `GET path` answers 200. The port is free
    /// when picked, but another test's process may take it before the server binds it: then the
    /// server is started again on another.
    async fn start_until(self, path: &str) -> Server {
        for attempt in 1.. {
            let mut server = self.spawn();
            let url = format!("{}{path}", server.base);
            let deadline = Instant::now() + READY_TIMEOUT;
            loop {
                if let Some(why) = server.exited() {
                    if why.contains("Address already in use") && attempt < 3 {
                        break;
                    }
                    panic!("the server stopped before {url} answered 200: {why}");
                }
                // Connection: close, so the probe leaves no idle connection behind in a server
                // whose connections a test counts.
                let probe = server.client.get(&url).header(reqwest::header::CONNECTION, "close");
                let answered = probe.timeout(Duration::from_secs(1)).send().await.is_ok_and(|r| r.status() == 200);
                // Whoever answered, the server must still run: another process may hold the port.
                if answered && server.exited().is_none() {
                    return server;
                }
                assert!(Instant::now() < deadline, "timed out after {READY_TIMEOUT:?} waiting until {url} answers 200");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        unreachable!("the attempts above either return or panic")
    }

    fn spawn(&self) -> Server {
        let port = free_port();
        let log = self.log.clone();
        let stdout = match &log {
            Some(path) => Stdio::from(std::fs::File::create(path).expect("create the log file")),
            None => Stdio::null(),
        };
        let mut command = match &self.ulimit {
            Some(limit) => {
                let mut command = Command::new("bash");
                command.args(["-c", &format!("ulimit {limit} && exec \"$0\" \"$@\""), BIN]);
                command
            }
            None => Command::new(BIN),
        };
        let child = command
            .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(self.dir)
            .args(&self.args)
            .env_remove("SESSION_POOL_API_KEY")
            .envs(self.env.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the server");
        Server { child, port, base: format!("http://127.0.0.1:{port}"), client: reqwest::Client::new(), log }
    }
}

/// A server process on a data directory. Killed when dropped, so a failing test leaves none behind.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub base: String,
    pub client: reqwest::Client,
    /// Where its stdout (the log) goes, when the test asked for it.
    pub log: Option<PathBuf>,
}

impl Server {
    /// How to start the binary on `dir`; [`Launch::start`] starts it.
    pub fn on(dir: &Path) -> Launch<'_> {
        Launch { dir, args: Vec::new(), env: Vec::new(), ulimit: None, log: None }
    }

    /// Starts the binary on `dir` with `extra` flags and waits until `/readyz` answers 200.
    pub async fn start(dir: &Path, extra: &[&str]) -> Server {
        Self::on(dir).args(extra).start().await
    }

    /// Like [`Server::start`], keeping the log in a file beside `dir`.
    pub async fn start_logged(dir: &Path, extra: &[&str]) -> Server {
        Self::on(dir).args(extra).logged().start().await
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Why the process is gone (its exit status and stderr), or `None` while it runs.
    fn exited(&mut self) -> Option<String> {
        let status = self.child.try_wait().expect("wait")?;
        Some(format!("{status}: {}", self.stderr()))
    }

    fn stderr(&mut self) -> String {
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
        }
        stderr
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
        sample(&text.unwrap_or_default(), name).unwrap_or(0.0)
    }

    /// Sends SIGTERM and waits (at most `timeout`) for the exit; returns the status and stderr.
    pub fn terminate_within(mut self, timeout: Duration) -> (ExitStatus, String) {
        signal(self.child.id(), "TERM");
        let status = wait_with_timeout(&mut self.child, timeout);
        let stderr = self.stderr();
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

    /// Kills the process and returns what it logged (for a server started with [`Launch::logged`]).
    pub fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.log_text()
    }

    /// What the server logged so far (for a server started with [`Launch::logged`]).
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
    refuses_to_start_with(dir, &[])
}

/// [`refuses_to_start`] with `args` besides.
pub fn refuses_to_start_with(dir: &Path, args: &[&str]) -> String {
    let mut child = Command::new(BIN)
        .args(["--listen", &format!("127.0.0.1:{}", free_port()), "--data-dir"])
        .arg(dir)
        .args(args)
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
