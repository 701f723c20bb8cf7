//! A private `redis-server` for the tests of the Redis store: started from `PATH` on a free
//! `127.0.0.1` port in a temporary directory, with command-line options only (no config file, no
//! RDB snapshots), optionally with an append-only file fsynced on every write so a SIGKILL loses
//! nothing acknowledged. It can be killed (SIGKILL) or stopped (SIGTERM) and started again on the
//! same port and directory, which replays the append-only file; it is killed when dropped.
//!
//! Without `redis-server` on `PATH` a test is skipped with a line on stderr, so `cargo test` works on
//! a machine with only the Rust toolchain; with `CI` set it fails instead, since CI must run them.
//!
//! [`Redis::command`] speaks just enough RESP to look at the keys a store wrote, with a plain TCP
//! socket, so the tests need no Redis client crate.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::{free_port, signal, wait_with_timeout, TempDir};

/// How long a started redis-server may take to answer `PING` (an append-only file is replayed first).
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Whether `redis-server` can be run. When it cannot: with `CI` set this panics (CI installs it, and
/// a test that silently did not run must not pass there); otherwise it says on stderr that the
/// calling test is skipped, and answers false.
pub fn available() -> bool {
    let found = on_path();
    if !found {
        let test = std::thread::current().name().unwrap_or("a test").to_owned();
        assert!(std::env::var_os("CI").is_none(), "CI must run {test}, but redis-server is not on PATH");
        say(&format!("skipping {test}: redis-server is not on PATH"));
    }
    found
}

/// Writes `line` to the process's stderr past the test harness's capture (which takes what
/// `eprintln!` prints and shows it only for a failed test), so a skipped test is seen.
pub fn say(line: &str) {
    // One write, so the line is not split by the harness's own lines on stdout.
    let _ = std::io::stderr().write_all(format!("{line}\n").as_bytes());
}

/// Whether `redis-server --version` runs.
pub fn on_path() -> bool {
    static FOUND: OnceLock<bool> = OnceLock::new();
    *FOUND.get_or_init(|| {
        Command::new("redis-server")
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// A reply of Redis, as far as the tests need one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK` and the like.
    Status(String),
    /// `-ERR ...`.
    Error(String),
    Integer(i64),
    /// A bulk string; `None` for the null bulk string.
    Bulk(Option<String>),
    Array(Vec<Reply>),
}

/// One redis-server process on `port` with its directory; killed (and the directory removed) when
/// dropped.
pub struct Redis {
    pub port: u16,
    /// The append-only file, fsynced on every write, when started with [`Redis::start_durable`].
    pub durable: bool,
    /// The port of its Cluster bus, when started with [`Redis::start_cluster_node`].
    pub bus_port: Option<u16>,
    dir: TempDir,
    child: Option<Child>,
}

impl Redis {
    /// A redis-server that keeps nothing on disk; `None` when [`available`] says to skip the test.
    pub fn start() -> Option<Redis> {
        Self::start_at(None, false)
    }

    /// A redis-server with `--appendonly yes --appendfsync always`: every write it acknowledged
    /// survives a SIGKILL and is back after [`Redis::restart`].
    pub fn start_durable() -> Option<Redis> {
        Self::start_at(None, true)
    }

    /// A redis-server on `port` (a free one when `None`); `None` when [`available`] says to skip.
    /// A port taken in the meantime by someone else is replaced by another, unless it was asked for.
    pub fn start_at(port: Option<u16>, durable: bool) -> Option<Redis> {
        Self::start_with(port, durable, false)
    }

    /// A redis-server with `--cluster-enabled yes`, on a free port and a free bus port, that is
    /// in no Cluster yet (see [`RedisCluster`]); `None` when [`available`] says to
    /// skip.
    pub fn start_cluster_node() -> Option<Redis> {
        Self::start_with(None, false, true)
    }

    fn start_with(port: Option<u16>, durable: bool, cluster: bool) -> Option<Redis> {
        if !available() {
            return None;
        }
        let mut tries = 0;
        loop {
            tries += 1;
            let dir = TempDir::new("redis");
            std::fs::create_dir_all(&*dir).expect("create the redis-server directory");
            // The bus port is given: the default, port + 10000, may not exist.
            let bus_port = cluster.then(free_port);
            let mut redis = Redis { port: port.unwrap_or_else(free_port), durable, bus_port, dir, child: None };
            match redis.spawn() {
                Ok(()) => return Some(redis),
                Err(why) if port.is_none() && tries < 3 => eprintln!("redis-server did not start ({why}); again"),
                Err(why) => panic!("redis-server did not start on port {}: {why}", redis.port),
            }
        }
    }

    /// `redis://127.0.0.1:PORT/0`, the `--store` value of a server on this Redis.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// The directory the process runs in (its append-only file and its log `redis.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What the process logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().expect("wait for redis-server").is_none())
    }

    /// SIGKILL, as a crash or the OOM killer would; returns once the process is gone.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "KILL");
            let _ = child.wait();
        }
    }

    /// SIGTERM, a clean shutdown; returns once the process is gone.
    pub fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "TERM");
            wait_with_timeout(&mut child, Duration::from_secs(20));
        }
    }

    /// Starts the stopped process again on the same port and directory (replaying the append-only
    /// file of a durable one) and waits until it answers `PING`.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart of a redis-server that still runs");
        let port = self.port;
        self.spawn().unwrap_or_else(|why| panic!("redis-server did not start again on port {port}: {why}"));
    }

    /// Keeps this process until the test process ends, then kills it with a watchdog (a small shell
    /// loop): statics are never dropped, and a test process may end by SIGKILL too.
    pub fn keep_for_this_process(self) -> &'static Redis {
        let pid = self.child.as_ref().expect("a running redis-server").id();
        let script = r#"while kill -0 "$1" 2>/dev/null; do sleep 0.2; done; kill -9 "$2"; rm -rf "$3""#;
        // Never waited for: the watchdog outlives this process by design, and init reaps it.
        #[allow(clippy::zombie_processes)]
        Command::new("sh")
            .args(["-c", script, "redis-watchdog", &std::process::id().to_string(), &pid.to_string()])
            .arg(&*self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the redis-server watchdog");
        Box::leak(Box::new(self))
    }

    /// Sends one command and reads its reply.
    ///
    /// # Panics
    /// When Redis cannot be reached or answers something that is not RESP.
    pub fn command(&self, args: &[&str]) -> Reply {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to redis-server");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("a read timeout");
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(request.as_bytes()).expect("send the command");
        read_reply(&mut BufReader::new(stream))
    }

    /// Sends one command after `AUTH password` on the same connection and reads its reply.
    ///
    /// # Panics
    /// When Redis cannot be reached, refuses the password, or answers something that is not RESP.
    pub fn command_as(&self, password: &str, args: &[&str]) -> Reply {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to redis-server");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("a read timeout");
        let mut request = String::new();
        for command in [&["AUTH", password][..], args] {
            request.push_str(&format!("*{}\r\n", command.len()));
            for arg in command {
                request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
            }
        }
        stream.write_all(request.as_bytes()).expect("send the commands");
        let mut reader = BufReader::new(stream);
        let auth = read_reply(&mut reader);
        assert!(matches!(auth, Reply::Status(ref ok) if ok == "OK"), "AUTH answered {auth:?}");
        read_reply(&mut reader)
    }

    /// Every key in database 0 (`KEYS *`; fine for the small databases of tests).
    pub fn keys(&self) -> Vec<String> {
        match self.command(&["KEYS", "*"]) {
            Reply::Array(keys) => keys
                .into_iter()
                .map(|k| match k {
                    Reply::Bulk(Some(k)) => k,
                    other => panic!("KEYS answered {other:?}"),
                })
                .collect(),
            other => panic!("KEYS answered {other:?}"),
        }
    }

    fn spawn(&mut self) -> Result<(), String> {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--dir"])
            .arg(&*self.dir)
            .args(["--daemonize", "no", "--save", "", "--logfile", "redis.log"])
            .args(if self.durable { ["--appendonly", "yes"] } else { ["--appendonly", "no"] })
            .args(["--appendfsync", "always"]);
        if let Some(bus) = self.bus_port {
            command.args(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]);
            command.args(["--cluster-port", &bus.to_string(), "--cluster-node-timeout", "2000"]);
        }
        command.current_dir(&*self.dir).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        let mut child = command.spawn().map_err(|e| format!("cannot run redis-server: {e}"))?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("wait for redis-server") {
                return Err(format!("it exited ({status}); its log:\n{}", self.log_text()));
            }
            if ping(self.port) {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no PONG within {START_TIMEOUT:?}; its log:\n{}", self.log_text()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Whether a Redis on `port` answers `PING` with `PONG` (not `-LOADING`, while it replays its file).
pub fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).is_ok() && line == "+PONG\r\n"
}

fn read_reply(reader: &mut impl BufRead) -> Reply {
    let mut line = String::new();
    reader.read_line(&mut line).expect("read a reply from redis-server");
    let line = line.strip_suffix("\r\n").unwrap_or_else(|| panic!("a RESP line without CRLF: {line:?}"));
    let (kind, rest) = line.split_at(1);
    let number = || rest.parse::<i64>().unwrap_or_else(|_| panic!("a RESP number: {line:?}"));
    match kind {
        "+" => Reply::Status(rest.to_owned()),
        "-" => Reply::Error(rest.to_owned()),
        ":" => Reply::Integer(number()),
        "$" if number() < 0 => Reply::Bulk(None),
        "$" => {
            let mut bulk = vec![0; number() as usize + 2];
            reader.read_exact(&mut bulk).expect("read a bulk string");
            bulk.truncate(bulk.len() - 2);
            Reply::Bulk(Some(String::from_utf8_lossy(&bulk).into_owned()))
        }
        "*" if number() < 0 => Reply::Array(Vec::new()),
        "*" => Reply::Array((0..number()).map(|_| read_reply(reader)).collect()),
        _ => panic!("not a RESP reply: {line:?}"),
    }
}

/// A Redis Cluster of three primaries, which share the 16384 slots in thirds, and one node that
/// becomes a replica with [`RedisCluster::replicate`]: enough for redirections and a failover.
pub struct RedisCluster {
    pub nodes: Vec<Redis>,
}

/// How long the Cluster may take to agree on its state after a change.
const CLUSTER_SETTLES: Duration = Duration::from_secs(30);

impl RedisCluster {
    /// Starts four nodes and joins them; `None` when [`available`] says to skip.
    pub fn start() -> Option<RedisCluster> {
        let nodes: Vec<Redis> = (0..4).map(|_| Redis::start_cluster_node()).collect::<Option<_>>()?;
        let cluster = RedisCluster { nodes };
        for (node, (first, last)) in [(0, (0, 5460)), (1, (5461, 10922)), (2, (10923, 16383))] {
            let (first, last) = (first.to_string(), last.to_string());
            cluster.expect_ok(node, &["CLUSTER", "ADDSLOTSRANGE", &first, &last]);
        }
        for other in 1..cluster.nodes.len() {
            let (port, bus) = (cluster.nodes[other].port.to_string(), cluster.nodes[other].bus_port_text());
            cluster.expect_ok(0, &["CLUSTER", "MEET", "127.0.0.1", &port, &bus]);
        }
        cluster.settle("every node knows the other three and every slot is served", |info| {
            info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:4")
        });
        Some(cluster)
    }

    /// The index of the primary that serves `key`'s slot, once every node that answers agrees on
    /// it (a node may learn of a failover a moment after the others).
    pub fn primary_of(&self, key: &str) -> usize {
        let deadline = Instant::now() + CLUSTER_SETTLES;
        loop {
            let seen: Vec<Option<usize>> =
                self.nodes.iter().filter(|node| ping(node.port)).map(|node| self.primary_seen_by(node, key)).collect();
            if let Some(&Some(first)) = seen.first() {
                if seen.iter().all(|other| *other == Some(first)) {
                    return first;
                }
            }
            assert!(Instant::now() < deadline, "the nodes do not agree on the primary of {key:?}: {seen:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until every node that answers agrees that `node` serves `key`'s slot.
    pub fn wait_for_primary(&self, key: &str, node: usize) {
        let deadline = Instant::now() + CLUSTER_SETTLES;
        while self.primary_of(key) != node {
            assert!(Instant::now() < deadline, "node {node} did not become the primary of {key:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The index of the primary that serves `key`'s slot as `node` sees it, if any does.
    fn primary_seen_by(&self, node: &Redis, key: &str) -> Option<usize> {
        let Reply::Integer(slot) = node.command(&["CLUSTER", "KEYSLOT", key]) else {
            panic!("CLUSTER KEYSLOT answered no number")
        };
        let Reply::Bulk(Some(table)) = node.command(&["CLUSTER", "NODES"]) else {
            panic!("CLUSTER NODES answered no table")
        };
        // id ip:port@bus flags primary ping pong epoch state slot-range...
        let serves = |line: &&str| {
            let fields: Vec<&str> = line.split(' ').collect();
            fields.len() > 8
                && fields[2].contains("master")
                && fields[8..].iter().any(|range| {
                    let (first, last) = range.split_once('-').unwrap_or((range, range));
                    first.parse().is_ok_and(|first: i64| first <= slot)
                        && last.parse().is_ok_and(|last: i64| slot <= last)
                })
        };
        let line = table.lines().find(serves)?;
        let port: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|a| a.split([':', '@']).nth(1))
            .and_then(|p| p.parse().ok())
            .expect("a port");
        Some(self.nodes.iter().position(|n| n.port == port).expect("a node of this Cluster"))
    }

    /// Waits until node `replica` has every write its primary, node `primary`, has now.
    pub fn wait_in_sync(&self, primary: usize, replica: usize) {
        let offset = |node: usize, field: &str| -> i64 {
            let Reply::Bulk(Some(info)) = self.nodes[node].command(&["INFO", "replication"]) else {
                panic!("INFO replication answered no text")
            };
            info.lines()
                .find_map(|line| line.strip_prefix(field)?.trim().parse().ok())
                .unwrap_or_else(|| panic!("no {field} in INFO replication of node {node}:\n{info}"))
        };
        let target = offset(primary, "master_repl_offset:");
        self.wait_for(replica, "INFO replication", "the replica has every write of its primary", |info| {
            info.lines()
                .find_map(|line| line.strip_prefix("slave_repl_offset:")?.trim().parse::<i64>().ok())
                .is_some_and(|at| at >= target)
        });
    }

    /// Makes node `replica` (the fourth, without slots) a replica of node `primary` and waits until
    /// it has the primary's data.
    pub fn replicate(&self, replica: usize, primary: usize) {
        let Reply::Bulk(Some(id)) = self.nodes[primary].command(&["CLUSTER", "MYID"]) else {
            panic!("CLUSTER MYID answered no id")
        };
        self.expect_ok(replica, &["CLUSTER", "REPLICATE", &id]);
        self.wait_for(replica, "INFO", "the replica is in sync", |info| info.contains("master_link_status:up"));
    }

    /// A manual failover: node `replica` takes its primary's slots, which it has every write of.
    pub fn fail_over_to(&self, replica: usize) {
        self.expect_ok(replica, &["CLUSTER", "FAILOVER"]);
        self.wait_for(replica, "INFO", "the replica is a primary", |info| info.contains("role:master"));
    }

    fn expect_ok(&self, node: usize, args: &[&str]) {
        let reply = self.nodes[node].command(args);
        assert_eq!(reply, Reply::Status("OK".into()), "{args:?} on node {node}");
    }

    /// Waits until every node that answers says the Cluster is in order (`cluster_state:ok`), as
    /// it does a moment after a failover.
    pub fn wait_until_ok(&self) {
        self.settle("the Cluster is in order", |info| info.contains("cluster_state:ok"));
    }

    /// Waits until `CLUSTER INFO` on every node that answers satisfies `done`.
    fn settle(&self, what: &str, done: impl Fn(&str) -> bool) {
        for node in 0..self.nodes.len() {
            if ping(self.nodes[node].port) {
                self.wait_for(node, "CLUSTER INFO", what, &done);
            }
        }
    }

    /// Waits until the text `command` answers on `node` satisfies `done`.
    fn wait_for(&self, node: usize, command: &str, what: &str, done: impl Fn(&str) -> bool) {
        let args: Vec<&str> = command.split(' ').collect();
        let deadline = Instant::now() + CLUSTER_SETTLES;
        loop {
            let text = match self.nodes[node].command(&args) {
                Reply::Bulk(Some(text)) => text,
                other => format!("{other:?}"),
            };
            if done(&text) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting until {what}; {command} on node {node}:\n{text}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Redis {
    fn bus_port_text(&self) -> String {
        self.bus_port.expect("a Cluster node").to_string()
    }
}
