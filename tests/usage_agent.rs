//! The metering agent, end to end with short hours (`MPGATE_METERING_HOUR=2s` and the
//! emulator's `--metering-hour 2s`): what the workload pushes is billed exactly once, one
//! record per dimension and hour, through SIGTERM, SIGKILL and restarts. Every wait is on an
//! event (a line, a file, the ledger's own answer) with a deadline; the emulator's usage file
//! is the bill.

mod common;

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use mpgate_testkit::{result_file, run_bounded, scratch, wait_until, Emulator, CHILD_LIMIT};
use serde_json::Value;

/// A usage gate with two-second hours, a short jitter, and its ledger in `ledger`.
fn gate(emu: &Emulator, ledger: &Path) -> Gate {
    let mut gate = emu.usage_gate("nodes,gb");
    gate.env("MPGATE_METERING_HOUR", "2s")
        .env("MPGATE_SEND_JITTER", "100ms")
        .env("MPGATE_LEDGER_DIR", ledger);
    gate
}

fn sh(script: String) -> [String; 3] {
    ["sh".into(), "-c".into(), script]
}

/// `mpgate usage ARGS` as a neighbour of a sidecar: only the ledger directory in common.
fn neighbour(ledger: &Path, args: &[&str]) -> mpgate_testkit::Exit {
    run_bounded(
        Command::new(MPGATE)
            .env_clear()
            .env("MPGATE_LEDGER_DIR", ledger)
            .arg("usage")
            .args(args),
        CHILD_LIMIT,
    )
}

#[test]
fn hours_of_pushed_usage_make_one_record_per_dimension_and_hour_with_the_right_totals() {
    let dir = scratch("agent-hours");
    let emu = usage_emulator(&dir, &[]);
    let result = dir.join("result.json");
    // Six rounds over about four two-second hours; the start locks nodes' first hour, so its
    // usage of that hour goes into the next hour's record.
    let script = format!(
        "for i in 1 2 3 4 5 6; do {MPGATE} usage add nodes $i >/dev/null && {MPGATE} usage add gb 10 >/dev/null || exit 9; sleep 0.7; done"
    );
    let out = gate(&emu, &dir.join("ledger"))
        .env("MPGATE_RESULT_FILE", &result)
        .args(sh(script))
        .run();
    out.expect(0);
    let records = billed(&dir);
    let totals = totals(&records);
    assert_eq!(totals.get("nodes"), Some(&21), "{records:#?}");
    assert_eq!(totals.get("gb"), Some(&60), "{records:#?}");
    let hours: BTreeSet<String> = records.iter().map(|r| r["hour"].to_string()).collect();
    assert!(hours.len() >= 2, "{records:#?}");
    let report = result_file(&result);
    assert_eq!(report["usage"]["unsent"], serde_json::json!({}), "{report}");
    // The result file lists this run's records with their IDs, as billed.
    let sent = report["usage"]["sent"].as_array().unwrap();
    for s in sent {
        assert!(
            records
                .iter()
                .any(|r| r["meteringRecordId"] == s["meteringRecordId"]),
            "{s}"
        );
    }
    assert_eq!(report["exitCode"], 0);
}

#[test]
fn sigterm_flushes_the_partial_hour_and_keeps_the_locked_dimension_in_the_ledger() {
    let dir = scratch("agent-sigterm");
    // AWS's hour: nothing closes during the test, so only the stop sends.
    let emu = Emulator::start(&[
        "--dimension",
        "nodes",
        "--dimension",
        "gb",
        "--usage-file",
        dir.join("usage.jsonl").to_str().unwrap(),
    ]);
    let result = dir.join("result.json");
    let script = format!(
        "trap 'exit 0' TERM; {MPGATE} usage add gb 5 >/dev/null && {MPGATE} usage add nodes 2 >/dev/null && echo ready; while :; do sleep 0.05; done"
    );
    let mut running = emu
        .usage_gate("nodes,gb")
        .env("MPGATE_LEDGER_DIR", dir.join("ledger"))
        .env("MPGATE_RESULT_FILE", &result)
        .args(sh(script))
        .spawn();
    assert_eq!(running.next_line("the workload's ready line"), "ready");
    running.signal(libc::SIGTERM);
    let out = running.wait();
    out.expect(0);
    let records = billed(&dir);
    // gb's partial hour is sent and locked; nodes' hour was locked by the start: its 2 stay.
    assert_eq!(totals(&records).get("gb"), Some(&5), "{records:#?}");
    assert_eq!(records.iter().filter(|r| r["dimension"] == "gb").count(), 1);
    let report = result_file(&result);
    assert_eq!(report["usage"]["unsent"], serde_json::json!({"nodes": 2}));
    assert!(
        out.stderr
            .contains("stays in the ledger for the next start"),
        "{}",
        out.stderr
    );
}

/// Waits for the sidecar's socket, bounded.
fn socket_of(ledger: &Path) -> PathBuf {
    let socket = ledger.join("usage.sock");
    wait_until(CHILD_LIMIT, "usage socket", || {
        socket.exists().then_some(())
    });
    socket
}

#[test]
fn a_sidecar_serves_its_neighbours_through_the_ledger_directory_until_sigterm() {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch("agent-sidecar");
    let emu = Emulator::start(&[
        "--dimension",
        "nodes",
        "--dimension",
        "gb",
        "--usage-file",
        dir.join("usage.jsonl").to_str().unwrap(),
    ]);
    let ledger = dir.join("ledger");
    let running = emu
        .usage_gate("nodes,gb")
        .env("MPGATE_LEDGER_DIR", &ledger)
        .spawn();
    let socket = socket_of(&ledger);
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "the socket is the container group's only");
    let added = neighbour(&ledger, &["add", "gb", "4"]);
    assert!(added.status.success(), "{added:?}");
    let answer: Value = serde_json::from_str(added.stdout.trim()).unwrap();
    assert_eq!(answer["hourTotal"], 4);
    let shown = neighbour(&ledger, &["show"]);
    let shown: Value = serde_json::from_str(shown.stdout.trim()).unwrap();
    assert_eq!(shown["unsent"], serde_json::json!({"gb": 4}), "{shown}");
    running.signal(libc::SIGTERM);
    running.wait().expect(0);
    assert_eq!(totals(&billed(&dir)).get("gb"), Some(&4));
    assert!(!socket.exists(), "the socket is removed at the end");
}

#[test]
fn mpgate_usage_add_refuses_an_unknown_dimension_and_records_nothing() {
    let dir = scratch("agent-refuse");
    let emu = Emulator::start(&["--dimension", "nodes", "--dimension", "gb"]);
    let ledger = dir.join("ledger");
    let running = emu
        .usage_gate("nodes,gb")
        .env("MPGATE_LEDGER_DIR", &ledger)
        .spawn();
    socket_of(&ledger);
    let out = neighbour(&ledger, &["add", "cpus", "1"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        out.stderr.contains(
            "unknown dimension \"cpus\": this product meters nodes, gb; nothing was recorded"
        ),
        "{}",
        out.stderr
    );
    for (quantity, words) in [
        ("-1", "quantity must be a whole number from 0 to 2147483647"),
        ("1.5", "quantity must be a whole number"),
        ("2147483648", "quantity must be a whole number"),
    ] {
        let out = neighbour(&ledger, &["add", "nodes", quantity]);
        assert_eq!(out.status.code(), Some(2), "{quantity}: {out:?}");
        assert!(out.stderr.contains(words), "{quantity}: {}", out.stderr);
    }
    let out = neighbour(&ledger, &["add", "nodes", "1", "--tag", "team!=blue"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stderr.contains("letters, digits"), "{}", out.stderr);
    let out = neighbour(&ledger, &["add", "nodes", "1", "--tag", "team"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stderr.contains("is not KEY=VALUE"), "{}", out.stderr);
    let shown = neighbour(&ledger, &["show"]);
    let shown: Value = serde_json::from_str(shown.stdout.trim()).unwrap();
    assert_eq!(shown["unsent"], serde_json::json!({}), "{shown}");
    running.signal(libc::SIGTERM);
    running.wait().expect(0);
    // Without a socket to talk to: exit 14, nothing recorded.
    let out = neighbour(&ledger, &["add", "nodes", "1"]);
    assert_eq!(out.status.code(), Some(14), "{out:?}");
    assert!(
        out.stderr.contains("cannot reach the metering agent"),
        "{}",
        out.stderr
    );
}

#[test]
fn the_push_api_answers_400_with_a_sentence_to_an_oversize_body_and_bad_json() {
    use std::io::{Read, Write};
    let dir = scratch("agent-http");
    let emu = Emulator::start(&["--dimension", "nodes"]);
    let ledger = dir.join("ledger");
    let running = emu
        .usage_gate("nodes")
        .env("MPGATE_LEDGER_DIR", &ledger)
        .spawn();
    let socket = socket_of(&ledger);
    let exchange = |request: Vec<u8>| -> String {
        let mut stream = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(&request).unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    };
    let post = |body: &[u8]| -> Vec<u8> {
        let mut request = format!(
            "POST /v1/usage HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        request
    };
    let big = format!(
        r#"{{"dimension":"nodes","quantity":1,"pad":"{}"}}"#,
        "x".repeat(5000)
    );
    let answer = exchange(post(big.as_bytes()));
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.contains("the body is larger than 4096 bytes"),
        "{answer}"
    );
    let answer = exchange(post(b"nodes=1"));
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("the body is not JSON"), "{answer}");
    let answer = exchange(post(br#"{"dimension":"nodes","quantity":1,"extra":true}"#));
    assert!(answer.contains("unknown member \\\"extra\\\""), "{answer}");
    let answer =
        exchange(b"GET /v2/usage HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".to_vec());
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    let answer = exchange(post(br#"{"dimension":"nodes","quantity":2}"#));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    running.signal(libc::SIGTERM);
    running.wait().expect(0);
}

#[test]
fn a_restart_in_the_same_pod_sends_what_the_killed_instance_acknowledged() {
    let dir = scratch("agent-restart");
    let emu = Emulator::start(&[
        "--dimension",
        "nodes",
        "--dimension",
        "gb",
        "--usage-file",
        dir.join("usage.jsonl").to_str().unwrap(),
    ]);
    let ledger = dir.join("ledger");
    // The workload's 5 gb are acknowledged, then mpgate is killed (its workload with it).
    let script = format!("{MPGATE} usage add gb 5 >/dev/null && kill -KILL $PPID; exec sleep 30");
    let out = emu
        .usage_gate("nodes,gb")
        .env("MPGATE_LEDGER_DIR", &ledger)
        .args(sh(script))
        .run();
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{out:?}");
    assert!(billed(&dir).iter().all(|r| r["dimension"] != "gb"));
    // The next container of the pod (same credentials: the same caller) sends them.
    const REPAIRED: &str = "not closed cleanly (mpgate was killed or crashed): repaired";
    let container = || {
        let out = emu
            .usage_gate("nodes,gb")
            .env("MPGATE_LEDGER_DIR", &ledger)
            .args(["true"])
            .run();
        out.expect(0);
        out
    };
    let next = container();
    assert!(next.stderr.contains(REPAIRED), "{}", next.stderr);
    assert_eq!(totals(&billed(&dir)).get("gb"), Some(&5));
    // That one ended cleanly and closed the ledger: the one after opens it as it was left.
    let after = container();
    assert!(!after.stderr.contains(REPAIRED), "{}", after.stderr);
}

#[test]
fn sigkill_at_random_points_loses_no_acknowledged_unit_and_bills_none_twice() {
    use rand_like::Lcg;
    let dir = scratch("agent-sigkill");
    let emu = usage_emulator(&dir, &[]);
    let ledger = dir.join("ledger");
    let acks = dir.join("acks");
    // Each acknowledged unit is a line in `acks`, written only after the agent's answer.
    let pusher = format!(
        "while :; do {MPGATE} usage add nodes 1 >/dev/null && echo 1 >> '{}' && {MPGATE} usage add gb 2 >/dev/null && echo 2 >> '{}'; done",
        acks.display(),
        acks.display()
    );
    let mut random = Lcg::seeded();
    let kills = 6;
    for _ in 0..kills {
        let running = gate(&emu, &ledger).args(sh(pusher.clone())).spawn();
        // A random point: during increments, a plan, a send or the recording of an answer.
        std::thread::sleep(Duration::from_millis(300 + random.below(2500)));
        running.signal(libc::SIGKILL);
        let out = running.wait();
        assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{out:?}");
    }
    // The last instance runs until the ledger says everything is recorded.
    let drain = format!(
        "while :; do case \"$({MPGATE} usage show)\" in *'\"unsent\":{{}}'*) exit 0;; esac; sleep 0.2; done"
    );
    let started = Instant::now();
    gate(&emu, &ledger).args(sh(drain)).run().expect(0);
    assert!(started.elapsed() < CHILD_LIMIT);
    let acked = std::fs::read_to_string(&acks).unwrap_or_default();
    let acked_nodes = acked.lines().filter(|l| *l == "1").count() as u64;
    let acked_gb = 2 * acked.lines().filter(|l| *l == "2").count() as u64;
    let records = billed(&dir);
    let totals = totals(&records);
    let (nodes, gb) = (
        totals.get("nodes").copied().unwrap_or(0),
        totals.get("gb").copied().unwrap_or(0),
    );
    // Every acknowledged unit billed; at most the one increment in flight per kill beyond.
    assert!(
        (acked_nodes..=acked_nodes + kills).contains(&nodes),
        "nodes: acknowledged {acked_nodes}, billed {nodes}: {records:#?}"
    );
    assert!(
        (acked_gb..=acked_gb + 2 * kills).contains(&gb),
        "gb: acknowledged {acked_gb}, billed {gb}: {records:#?}"
    );
    assert!(acked_nodes > 0 && acked_gb > 0, "nothing was pushed");
}

#[test]
fn throttling_and_a_duplicate_never_stop_the_workload_and_the_usage_is_carried() {
    let dir = scratch("agent-faults");
    // After the start: three throttled answers, then one DuplicateRequestException.
    let emu = usage_emulator(
        &dir,
        &[
            "--meter-fault",
            "throttle@1*3",
            "--meter-fault",
            "duplicate-request@4*1",
        ],
    );
    let script = format!(
        "{M} usage add gb 3 >/dev/null || exit 9; until {M} usage show | grep -q '\"state\":\"duplicate\"'; do sleep 0.1; done; {M} usage add gb 4 >/dev/null; exit 5",
        M = MPGATE
    );
    let out = gate(&emu, &dir.join("ledger")).args(sh(script)).run();
    out.expect(5);
    assert!(
        out.stderr.contains("DuplicateRequestException"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("retrying"), "{}", out.stderr);
    assert_eq!(totals(&billed(&dir)).get("gb"), Some(&7));
}

/// A small deterministic generator (seeded from the clock, printed for a rerun): the kill
/// points need no quality, only spread.
mod rand_like {
    pub struct Lcg(u64);

    impl Lcg {
        pub fn seeded() -> Lcg {
            let seed = std::env::var("MPGATE_TEST_SEED")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| {
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_nanos() as u64)
                        .unwrap_or(1)
                });
            eprintln!("kill points: MPGATE_TEST_SEED={seed}");
            Lcg(seed)
        }

        pub fn below(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }
    }
}

#[test]
fn an_unverified_start_whose_first_record_is_not_entitled_stops_the_workload_with_10() {
    let dir = scratch("agent-allow");
    // The start's one attempt hangs (Metering unreachable: `allow` starts the workload); the
    // agent's first record is then this pod's initial call, and the buyer is not subscribed.
    let emu = usage_emulator(
        &dir,
        &["--meter-fault", "hang@0*1", "--meter-fault", "not-entitled"],
    );
    let result = dir.join("result.json");
    let script = format!(
        "trap 'exit 0' TERM; {MPGATE} usage add gb 1 >/dev/null || exit 9; while :; do sleep 0.05; done"
    );
    let out = gate(&emu, &dir.join("ledger"))
        .env("MPGATE_ON_TRANSIENT_ERROR", "allow")
        .env("MPGATE_TIMEOUT", "2s")
        .env("MPGATE_ATTEMPT_TIMEOUT", "2s")
        .env("MPGATE_RESULT_FILE", &result)
        .args(sh(script))
        .run();
    out.expect_error(10, "CustomerNotEntitledException");
    let report = result_file(&result);
    assert_eq!(report["outcome"], "not-entitled");
    assert_eq!(report["entitled"], false);
    assert!(billed(&dir).is_empty());
}

#[test]
fn tagged_usage_is_sent_as_usage_allocations_that_sum_to_the_quantity() {
    let dir = scratch("agent-tags");
    let emu = Emulator::start(&[
        "--dimension",
        "nodes",
        "--dimension",
        "gb",
        "--usage-file",
        dir.join("usage.jsonl").to_str().unwrap(),
    ]);
    let script = format!(
        "{M} usage add gb 3 --tag team=blue --tag env=prod >/dev/null && {M} usage add gb 2 >/dev/null",
        M = MPGATE
    );
    // The hour is AWS's: the workload's exit flushes gb's partial hour (nodes' is the start's).
    emu.usage_gate("nodes,gb")
        .env("MPGATE_LEDGER_DIR", dir.join("ledger"))
        .args(sh(script))
        .run()
        .expect(0);
    let records = billed(&dir);
    let gb: Vec<&Value> = records.iter().filter(|r| r["dimension"] == "gb").collect();
    assert_eq!(gb.len(), 1, "{records:#?}");
    assert_eq!(gb[0]["quantity"], 5);
    let allocations = gb[0]["allocations"].as_array().expect("allocations sent");
    let untagged = allocations
        .iter()
        .find(|a| a.get("Tags").is_none())
        .unwrap();
    assert_eq!(untagged["AllocatedUsageQuantity"], 2, "{allocations:?}");
    let tagged = allocations
        .iter()
        .find(|a| a.get("Tags").is_some())
        .unwrap();
    assert_eq!(tagged["AllocatedUsageQuantity"], 3, "{allocations:?}");
    assert_eq!(
        tagged["Tags"],
        serde_json::json!([{"Key": "env", "Value": "prod"}, {"Key": "team", "Value": "blue"}])
    );
}

#[test]
fn the_push_api_is_served_on_loopback_tcp_when_asked_and_never_beyond() {
    use std::io::{Read, Write};
    let dir = scratch("agent-tcp");
    let emu = Emulator::start(&[
        "--dimension",
        "nodes",
        "--dimension",
        "gb",
        "--usage-file",
        dir.join("usage.jsonl").to_str().unwrap(),
    ]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    // The workload finds the URL in its environment and posts to it.
    let script = format!(
        "echo \"$MPGATE_USAGE_URL\"; {M} usage add nodes 0 >/dev/null",
        M = MPGATE
    );
    let ledger = dir.join("ledger");
    let out = emu
        .usage_gate("nodes,gb")
        .env("MPGATE_LEDGER_DIR", &ledger)
        .env("MPGATE_USAGE_LISTEN", &addr)
        .args(sh(script))
        .run();
    out.expect(0);
    assert_eq!(out.stdout.trim(), format!("http://{addr}"));
    // A sidecar serves its neighbours on the port too.
    let running = emu
        .usage_gate("nodes,gb")
        .env("MPGATE_LEDGER_DIR", &ledger)
        .env("MPGATE_USAGE_LISTEN", &addr)
        .spawn();
    socket_of(&ledger);
    let body = r#"{"dimension":"gb","quantity":6}"#;
    let answer = wait_until(CHILD_LIMIT, "the loopback listener", || {
        let mut stream = std::net::TcpStream::connect(&addr).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        write!(
            stream,
            "POST /v1/usage HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        Some(answer)
    });
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    running.signal(libc::SIGTERM);
    running.wait().expect(0);
    assert_eq!(totals(&billed(&dir)).get("gb"), Some(&6));
    // Never beyond loopback: refused before any call.
    let calls = emu.calls().len();
    let out = emu
        .usage_gate("nodes,gb")
        .env("MPGATE_USAGE_LISTEN", "0.0.0.0:8787")
        .args(["true"])
        .run();
    out.expect_error(2, "use a loopback address and port");
    assert_eq!(emu.calls().len(), calls);
}

/// `mpgate usage show` of the agent serving `ledger`: what the ledger holds now.
fn ledger_view(ledger: &Path) -> Value {
    let shown = neighbour(ledger, &["show"]);
    assert!(shown.status.success(), "{shown:?}");
    serde_json::from_str(shown.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {shown:?}"))
}

/// The (hour, dimension) pairs of `view` in `state`.
fn hours_in(view: &Value, state: &str) -> BTreeSet<(String, String)> {
    view["hours"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["state"] == state)
        .map(|h| {
            let text = |k: &str| h[k].as_str().unwrap().to_string();
            (text("hour"), text("dimension"))
        })
        .collect()
}

/// Looks at `check` every 100 ms (each look starts `mpgate usage show`, too often at the
/// test kit's 5 ms) until it returns `Some`; fails the test, naming `what`, past `limit`.
fn watch<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "no {what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_outage_longer_than_the_window_loses_no_unit_and_bills_none_twice() {
    const HOUR_MS: u64 = 2000;
    const WINDOW_MS: u64 = 6 * HOUR_MS;
    let dir = scratch("agent-outage");
    // After the start's call, MeterUsage is throttled for nine two-second hours: the first
    // hours' records leave AWS's six-hour window before it answers again.
    let emu = usage_emulator(&dir, &["--meter-fault", "throttle@1~18s"]);
    let ledger = dir.join("ledger");
    let (acks, failed, stop) = (dir.join("acks"), dir.join("failed"), dir.join("stop"));
    let result = dir.join("result.json");
    // The workload pushes throughout, noting each acknowledged unit (after the agent's
    // answer) and each refused push; it ends, with its own status, when the test says so (or
    // if mpgate is gone, so that a failed test leaves nothing behind).
    let script = format!(
        "echo started $$; while [ ! -e '{stop}' ] && kill -0 $PPID 2>/dev/null; do \
         if {M} usage add nodes 1 >/dev/null; then echo 1 >> '{acks}'; else echo nodes >> '{failed}'; fi; \
         if {M} usage add gb 2 >/dev/null; then echo 2 >> '{acks}'; else echo gb >> '{failed}'; fi; \
         sleep 0.2; done; exit 7",
        M = MPGATE,
        stop = stop.display(),
        acks = acks.display(),
        failed = failed.display(),
    );
    let mut running = gate(&emu, &ledger)
        // One attempt per record: the agent's own retries, scaled to the short hour, do the
        // rest. The SDK's retries within the 10 s deadline would stretch one pass over the
        // outbox across several two-second hours.
        .env("AWS_MAX_ATTEMPTS", "1")
        .env("MPGATE_RESULT_FILE", &result)
        .args(sh(script))
        .spawn_for(Duration::from_secs(120));
    assert!(running
        .next_line("the workload's start")
        .starts_with("started "));
    let acked = || {
        std::fs::read_to_string(&acks)
            .unwrap_or_default()
            .lines()
            .count()
    };

    // The outage begins with the first closed hour's records.
    watch(CHILD_LIMIT, "throttled MeterUsage", || {
        meter_calls(&emu)
            .iter()
            .any(|c| c["fault"] == "throttle")
            .then_some(())
    });
    let acked_at_outage = acked();
    // An hour's record planned during the outage (in the ledger, sending), later gone from the
    // outbox with no record billed: its hour left the window and its usage was carried on.
    let mut planned = BTreeSet::new();
    let carried = watch(
        Duration::from_secs(60),
        "an hour carried out of the window",
        || {
            let view = ledger_view(&ledger);
            let sending = hours_in(&view, "sending");
            let gone: Vec<_> = planned.difference(&sending).cloned().collect();
            planned.extend(sending);
            gone.into_iter().next()
        },
    );
    // Metering answers again: every closed hour is settled, nothing pending or carried.
    watch(
        Duration::from_secs(60),
        "a settled ledger after the outage",
        || {
            let view = ledger_view(&ledger);
            let pending = ["sending", "unsent"]
                .iter()
                .any(|s| !hours_in(&view, s).is_empty());
            let recovered = billed(&dir).iter().any(|r| r["quantity"] != 0);
            (recovered && !pending && view["carried"] == serde_json::json!({})).then_some(())
        },
    );
    let acked_at_recovery = acked();
    assert!(
        acked_at_recovery > acked_at_outage,
        "the workload stopped pushing during the outage"
    );
    std::fs::write(&stop, "").unwrap();
    let out = running.wait();
    // The workload ran through it all and ended with its own status.
    out.expect(7);
    assert_eq!(out.stdout.lines().count(), 1, "{}", out.stdout);
    assert!(
        !failed.exists(),
        "pushes refused: {}",
        std::fs::read_to_string(&failed).unwrap_or_default()
    );

    // Billed exactly what was acknowledged, one record per dimension and hour.
    let acked_text = std::fs::read_to_string(&acks).unwrap();
    let acked_nodes = acked_text.lines().filter(|l| *l == "1").count() as u64;
    let acked_gb = 2 * acked_text.lines().filter(|l| *l == "2").count() as u64;
    let records = billed(&dir);
    let totals = totals(&records);
    assert_eq!(totals.get("nodes"), Some(&acked_nodes), "{records:#?}");
    assert_eq!(totals.get("gb"), Some(&acked_gb), "{records:#?}");
    // No record for an hour older than the window when it was sent.
    for call in meter_calls(&emu).iter().filter(|c| c["recorded"] == true) {
        let sent_ms = call["receivedAtMs"].as_u64().unwrap();
        let timestamp_ms = (call["timestamp"].as_f64().unwrap() * 1000.0) as u64;
        assert!(
            timestamp_ms + WINDOW_MS >= sent_ms,
            "a record for an hour out of the window: {call}"
        );
    }
    // The hour that left the window has no record, and its units are in a later one.
    let (hour, dimension) = &carried;
    assert!(
        !records
            .iter()
            .any(|r| r["hour"] == hour.as_str() && r["dimension"] == dimension.as_str()),
        "{carried:?} was billed: {records:#?}"
    );
    assert!(
        records.iter().any(|r| r["dimension"] == dimension.as_str()
            && r["hour"].as_str().unwrap() > hour.as_str()
            && r["quantity"] != 0),
        "no later record of {dimension}: {records:#?}"
    );
    let report = result_file(&result);
    assert_eq!(report["usage"]["unsent"], serde_json::json!({}), "{report}");
    assert_eq!(report["exitCode"], 7, "{report}");
}

#[test]
fn while_metering_is_unreachable_a_pass_tries_only_its_first_record() {
    let dir = scratch("agent-unreachable");
    // After the start's call, MeterUsage is throttled for 8 s: four two-second hours, each
    // with a record per dimension, wait in the ledger (none leaves the six-hour window).
    let emu = usage_emulator(&dir, &["--meter-fault", "throttle@1~8s"]);
    let ledger = dir.join("ledger");
    let (acks, stop) = (dir.join("acks"), dir.join("stop"));
    let script = format!(
        "echo started; while [ ! -e '{stop}' ] && kill -0 $PPID 2>/dev/null; do \
         {M} usage add nodes 1 >/dev/null && echo 1 >> '{acks}'; \
         {M} usage add gb 2 >/dev/null && echo 2 >> '{acks}'; sleep 0.3; done",
        M = MPGATE,
        stop = stop.display(),
        acks = acks.display(),
    );
    let mut running = gate(&emu, &ledger)
        .env("AWS_MAX_ATTEMPTS", "1")
        .args(sh(script))
        .spawn_for(Duration::from_secs(60));
    assert_eq!(running.next_line("the workload's start"), "started");
    let throttled = || -> Vec<(String, String)> {
        meter_calls(&emu)
            .iter()
            .filter(|c| c["fault"] == "throttle")
            .map(|c| {
                let text = |k: &str| c[k].as_str().unwrap_or_default().to_string();
                (text("usageDimension"), text("hour"))
            })
            .collect()
    };
    // Several passes during the outage, each stopped at its first record: the oldest hour's
    // first dimension, every time.
    watch(Duration::from_secs(30), "the outage's end", || {
        let recovered = billed(&dir).iter().any(|r| r["quantity"] != 0);
        (throttled().len() >= 3 && recovered).then_some(())
    });
    std::fs::write(&stop, "").unwrap();
    let out = running.wait();
    out.expect(0);
    let tried = throttled();
    let first = &tried[0];
    assert!(
        tried.iter().all(|t| t == first),
        "a pass went on past an unreachable record: {tried:?}"
    );
    assert!(tried.len() >= 3, "{tried:?}");
    // And once Metering answered, everything acknowledged was billed (the stop flushed the rest).
    let acked = std::fs::read_to_string(&acks).unwrap();
    let records = billed(&dir);
    let totals = totals(&records);
    assert_eq!(
        totals.get("nodes"),
        Some(&(acked.lines().filter(|l| *l == "1").count() as u64)),
        "{records:#?}"
    );
    assert_eq!(
        totals.get("gb"),
        Some(&(2 * acked.lines().filter(|l| *l == "2").count() as u64)),
        "{records:#?}"
    );
}
