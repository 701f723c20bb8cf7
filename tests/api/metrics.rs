//! What `/metrics` and the log show of a server that has just started: the real binary as a process
//! of its own, so no other test's counts are in its metrics.

use serde_json::Value;

use crate::common::{temp_dir, Server};
use crate::helpers::{skipped_on_redis, store_args};

/// The counters a fresh server lists at 0: those without labels and those of the `default` pool.
const AT_ZERO: &[&str] = &[
    "session_pool_persist_errors_total",
    "session_pool_persist_sessions_written_total",
    "session_pool_log_lines_dropped_total",
    "session_pool_http_connections_refused_total",
    "session_pool_acquires_total{pool=\"default\",result=\"ok\"}",
    "session_pool_acquires_total{pool=\"default\",result=\"exhausted\"}",
    "session_pool_marks_total{pool=\"default\",outcome=\"good\"}",
    "session_pool_marks_total{pool=\"default\",outcome=\"bad\"}",
    "session_pool_sessions_created_total{pool=\"default\"}",
    "session_pool_retirements_total{pool=\"default\",reason=\"expired\"}",
];

/// Counters that a fresh server may have moved already: the requests of the start-up wait, and the
/// first write of the `default` pool's record.
const MOVED_AT_START: &[&str] = &["http_requests_total", "session_pool_persist_bytes_written_total"];

/// Every sample of `text` as (series, value), the series with its labels.
fn samples(text: &str) -> Vec<(&str, f64)> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.rsplit_once(' '))
        .map(|(series, value)| (series, value.parse().unwrap_or(f64::NAN)))
        .collect()
}

#[tokio::test]
async fn a_fresh_server_lists_every_counter_at_zero_before_its_first_event() {
    if skipped_on_redis("it counts the memory store's session_pool_persist_* counters") {
        return;
    }
    let dir = temp_dir("metrics-fresh");
    let server = Server::start(&dir, &[]).await;
    let text = server.client.get(format!("{}/metrics", server.base)).send().await.unwrap().text().await.unwrap();
    let samples = samples(&text);
    for series in AT_ZERO {
        let value = samples.iter().find(|(s, _)| s == series).map(|(_, v)| *v);
        assert_eq!(value, Some(0.0), "{series} in:\n{text}");
    }
    for series in MOVED_AT_START {
        assert!(samples.iter().any(|(s, _)| s.starts_with(series)), "no {series} in:\n{text}");
    }
    // And every other counter too.
    let counters: Vec<&str> =
        text.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
    assert!(counters.len() >= 8, "{text}");
    for (series, value) in &samples {
        let name = series.split('{').next().unwrap_or(series);
        if counters.contains(&name) && !MOVED_AT_START.contains(&name) {
            assert_eq!(*value, 0.0, "{series} in:\n{text}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_help_of_the_sessions_gauge_says_leased_is_part_of_usable() {
    let dir = temp_dir("metrics-help");
    let server = Server::on(&dir).args(store_args()).start().await;
    let text = server.client.get(format!("{}/metrics", server.base)).send().await.unwrap().text().await.unwrap();
    let help = text.lines().find(|l| l.starts_with("# HELP session_pool_sessions ")).unwrap_or_default();
    assert!(help.contains("leased (a subset of usable)"), "{help:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn json_logs_are_one_object_a_line_and_reach_the_file_before_exit() {
    if skipped_on_redis("its last line is the memory store's final write, \"state written; stopped\"") {
        return;
    }
    let dir = temp_dir("metrics-json-log");
    let server = Server::start_logged(&dir, &["--log-format", "json"]).await;
    let log = server.log.clone().expect("a log file");
    assert!(server.terminate().success());
    let text = std::fs::read_to_string(&log).expect("the log");
    let lines: Vec<Value> =
        text.lines().map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))).collect();
    for line in &lines {
        assert!(line["timestamp"].is_string() && line["level"].is_string() && line["target"].is_string(), "{line}");
    }
    let messages: Vec<&str> = lines.iter().filter_map(|l| l["fields"]["message"].as_str()).collect();
    assert!(messages.contains(&"listening"), "{text}");
    assert!(messages.contains(&"state written; stopped"), "the last line before exit is missing:\n{text}");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&log);
}
