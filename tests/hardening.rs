//! Slow and idle clients: the real binary must close a connection that dawdles over its headers,
//! and keep serving everyone else meanwhile.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn a_client_that_never_finishes_its_headers_is_cut_off_and_stalls_no_one() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a port").port();
    let dir = std::env::temp_dir().join(format!("session-pool-hardening-{}", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_session-pool"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the server");
    let get = |path: &str| -> String {
        let attempt = || -> std::io::Result<String> {
            let mut stream = TcpStream::connect(("127.0.0.1", port))?;
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
            let mut answer = String::new();
            stream.read_to_string(&mut answer)?;
            Ok(answer)
        };
        attempt().unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !get("/readyz").starts_with("HTTP/1.1 200") {
        assert!(Instant::now() < deadline, "the server did not become ready");
        std::thread::sleep(Duration::from_millis(50));
    }

    let mut slow = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    slow.write_all(b"GET /v1/pools HTTP/1.1\r\nHost: x\r\nX-Slow: ").expect("write a partial head");
    let started = Instant::now();
    assert!(get("/healthz").starts_with("HTTP/1.1 200"), "a slow client stalled another one");

    slow.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let mut buffer = Vec::new();
    let _ = slow.read_to_end(&mut buffer);
    let waited = started.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(waited < Duration::from_secs(25), "the slow connection was kept for {waited:?}");
    assert!(waited >= Duration::from_secs(5), "the connection was closed before any timeout: {waited:?}");
}
