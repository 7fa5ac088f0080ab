//! Usage read from the workload's Prometheus metrics (`NAME=METRIC:counter|max|avg`,
//! `MPGATE_SCRAPE_URL`), end to end with two-second hours: a counter's increases (resets
//! included) and a gauge's hourly max are billed, once, one record per dimension and hour;
//! failed scrapes never stop the workload and lose no counter increase; a restarted sidecar
//! counts on from the counter's last value. The metrics server is the test's own, on
//! loopback; every wait is on a scrape it served, with a deadline.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use mpgate_testkit::{run_bounded, scratch, wait_until, Emulator, CHILD_LIMIT};
use serde_json::Value;

/// A workload's `/metrics`: the test sets the answer, and counts the answers given.
struct Metrics {
    url: String,
    answer: Arc<Mutex<(u16, String)>>,
    served: Arc<AtomicUsize>,
}

impl Metrics {
    fn start() -> Metrics {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/metrics", listener.local_addr().unwrap());
        let answer = Arc::new(Mutex::new((200, String::new())));
        let served = Arc::new(AtomicUsize::new(0));
        let (a, s) = (answer.clone(), served.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let (status, body) = a.lock().unwrap().clone();
                let head = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(body.as_bytes());
                drop(stream);
                s.fetch_add(1, Ordering::SeqCst);
            }
        });
        Metrics {
            url,
            answer,
            served,
        }
    }

    fn set(&self, status: u16, body: &str) {
        *self.answer.lock().unwrap() = (status, body.to_string());
    }

    /// Waits until the agent has read the answer as it is now (two answers later: the first
    /// may have been made before the change).
    fn seen(&self) {
        let from = self.served.load(Ordering::SeqCst);
        wait_until(Duration::from_secs(20), "two scrapes", || {
            (self.served.load(Ordering::SeqCst) >= from + 2).then_some(())
        });
    }
}

/// An exposition with `bytes_total{job="api"}` at `bytes` (and a series the selector skips)
/// and the gauge `active_nodes` at `nodes`.
fn exposition(bytes: u64, nodes: u64) -> String {
    format!(
        "# HELP bytes_total Bytes scanned.\n# TYPE bytes_total counter\nbytes_total{{job=\"api\"}} {bytes}\nbytes_total{{job=\"batch\"}} 1000\n# TYPE active_nodes gauge\nactive_nodes {nodes}\n"
    )
}

const DIMENSIONS: &str = r#"gb=bytes_total{job="api"}:counter,nodes=active_nodes:max"#;

fn gate(emu: &Emulator, metrics: &Metrics, ledger: &Path) -> Gate {
    let mut gate = emu.usage_gate(DIMENSIONS);
    gate.env("MPGATE_METERING_HOUR", "2s")
        .env("MPGATE_SEND_JITTER", "100ms")
        .env("MPGATE_SCRAPE_URL", &metrics.url)
        .env("MPGATE_SCRAPE_INTERVAL", "100ms")
        .env("MPGATE_LEDGER_DIR", ledger);
    gate
}

fn total(dir: &Path, dimension: &str) -> u64 {
    totals(&billed(dir)).get(dimension).copied().unwrap_or(0)
}

/// Waits until the emulator has billed `units` of `dimension` while the agent runs (the
/// start's hour is locked: its usage goes into a later hour's record, once that hour ends).
fn billed_while_running(dir: &Path, dimension: &str, units: u64) {
    wait_until(Duration::from_secs(20), "the usage billed", || {
        (total(dir, dimension) >= units).then_some(())
    });
}

/// A workload that runs until the test creates `stop`.
fn until(stop: &Path) -> [String; 3] {
    [
        "sh".into(),
        "-c".into(),
        format!("while [ ! -e {} ]; do sleep 0.05; done", stop.display()),
    ]
}

#[test]
fn a_counter_s_increases_and_a_gauge_s_hourly_max_are_billed_once_per_hour() {
    let dir = scratch("scrape-bill");
    let emu = usage_emulator(&dir, &[]);
    let metrics = Metrics::start();
    let ledger = dir.join("ledger");
    let stop = dir.join("stop");
    metrics.set(200, &exposition(30, 4));
    let running = gate(&emu, &metrics, &ledger).args(until(&stop)).spawn();
    metrics.seen();
    // What the ledger holds so far is marked as scraped.
    let show = run_bounded(
        std::process::Command::new(MPGATE)
            .env_clear()
            .env("MPGATE_LEDGER_DIR", &ledger)
            .args(["usage", "show"]),
        CHILD_LIMIT,
    );
    assert!(show.status.success(), "{show:?}");
    assert!(show.stdout.contains("\"scraped\":true"), "{}", show.stdout);
    // Counter: 30, 50, then a restart of the workload's counter (10), then 25:
    // 30 + 20 + 10 + 15 = 75 units. The gauge stays at 4 nodes.
    for bytes in [50, 10, 25] {
        metrics.set(200, &exposition(bytes, 4));
        metrics.seen();
    }
    billed_while_running(&dir, "gb", 75);
    std::fs::write(&stop, "").unwrap();
    let out = running.wait();
    out.expect(0);
    let records = billed(&dir);
    assert_eq!(
        totals(&records).get("gb"),
        Some(&75),
        "{records:#?}\n{}",
        out.stderr
    );
    // One record of the hour's max per hour with samples: never a sum of samples.
    let nodes: Vec<&Value> = records
        .iter()
        .filter(|r| r["dimension"] == "nodes")
        .collect();
    assert!(
        !nodes.is_empty() && nodes.iter().all(|r| r["quantity"] == 4),
        "{records:#?}\n{}",
        out.stderr
    );
}

#[test]
fn failed_scrapes_never_stop_the_workload_and_lose_no_counter_increase() {
    let dir = scratch("scrape-fail");
    let emu = usage_emulator(&dir, &[]);
    let metrics = Metrics::start();
    let stop = dir.join("stop");
    metrics.set(500, "oops");
    let running = gate(&emu, &metrics, &dir.join("ledger"))
        .args(until(&stop))
        .spawn();
    metrics.seen();
    metrics.seen();
    metrics.set(200, "this is { not the text format\n");
    metrics.seen();
    metrics.set(200, &exposition(40, 2));
    metrics.seen();
    billed_while_running(&dir, "gb", 40);
    std::fs::write(&stop, "").unwrap();
    let out = running.wait();
    out.expect(0);
    assert_eq!(total(&dir, "gb"), 40, "{:#?}\n{}", billed(&dir), out.stderr);
    // One line per failure, not one per scrape; one when it recovers.
    for (text, times) in [
        ("cannot read the workload's metrics: HTTP 500", 1),
        ("not the Prometheus text format", 1),
        ("the workload's metrics are read again", 1),
    ] {
        assert_eq!(
            out.stderr.matches(text).count(),
            times,
            "{text:?}:\n{}",
            out.stderr
        );
    }
    assert!(
        out.stderr.contains("MPGATE_SCRAPE_URL"),
        "the warning names the setting:\n{}",
        out.stderr
    );
}

#[test]
fn a_restarted_sidecar_counts_a_counter_on_from_its_last_value() {
    let dir = scratch("scrape-sidecar");
    let emu = usage_emulator(&dir, &[]);
    let metrics = Metrics::start();
    let ledger = dir.join("ledger");
    metrics.set(200, &exposition(100, 1));
    let first = gate(&emu, &metrics, &ledger).spawn();
    metrics.seen();
    first.signal(libc::SIGKILL);
    let out = first.wait();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&out.status),
        Some(libc::SIGKILL)
    );
    // The workload's counter went on while the sidecar was away.
    metrics.set(200, &exposition(150, 1));
    let second = gate(&emu, &metrics, &ledger).spawn();
    metrics.seen();
    billed_while_running(&dir, "gb", 150);
    second.signal(libc::SIGTERM);
    let out = second.wait();
    out.expect(0);
    assert_eq!(
        total(&dir, "gb"),
        150,
        "{:#?}\n{}",
        billed(&dir),
        out.stderr
    );
}

#[test]
fn scrape_settings_are_checked_before_any_call() {
    let dir = scratch("scrape-config");
    let emu = usage_emulator(&dir, &[]);
    for (dimensions, url, words) in [
        ("nodes=active_nodes:max", None, "set MPGATE_SCRAPE_URL"),
        (
            "nodes=active_nodes:max",
            Some("http://10.0.0.1:9100/metrics"),
            "loopback",
        ),
        (
            "nodes",
            Some("http://127.0.0.1:9100/metrics"),
            "no dimension names a metric",
        ),
        ("nodes=active_nodes:sum", None, "counter|max|avg"),
    ] {
        let mut gate = emu.usage_gate(dimensions);
        if let Some(url) = url {
            gate.env("MPGATE_SCRAPE_URL", url);
        }
        let out = gate.args(["true"]).run();
        out.expect_error(2, words);
    }
    assert!(
        meter_calls(&emu).is_empty(),
        "a bad setting makes no call: {:?}",
        meter_calls(&emu)
    );
}
