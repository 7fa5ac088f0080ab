//! `--seat hold`: mpgate as the workload's parent. The seat is extended across short
//! consumption lifetimes, checked in when the workload exits or on SIGTERM, and when the
//! license is lost the workload is stopped (SIGTERM, then SIGKILL after the grace period) and
//! mpgate exits 10 (14 when License Manager stayed unreachable). Signals are forwarded,
//! orphans reaped, the workload's exit status passed through.

mod common;

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use mpgate_testkit::wait::wait_until;
use mpgate_testkit::{result_file, Emulator, CHILD_LIMIT};

/// A workload that says it is up, then runs until `stop` exists (exiting 3) or it is told to
/// stop by SIGTERM (exiting 0 after saying so).
fn workload(stop: &Path) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        format!(
            "trap 'echo got SIGTERM; exit 0' TERM; echo ready; while [ ! -e '{}' ]; do sleep 0.05; done; exit 3",
            stop.display()
        ),
    ]
}

/// The License Manager calls mpgate made (the test's own GetLicenseUsage left out).
fn ops(emu: &Emulator) -> Vec<String> {
    license_calls(emu)
        .into_iter()
        .map(|(op, _)| op)
        .filter(|op| op != "GetLicenseUsage")
        .collect()
}

/// Waits (bounded) until the emulator has answered `n` extensions.
fn wait_for_extensions(emu: &Emulator, n: usize) {
    wait_until(CHILD_LIMIT, "extensions", || {
        let extended = license_calls(emu)
            .iter()
            .filter(|(op, c)| op == "ExtendLicenseConsumption" && c["status"] == 200)
            .count();
        (extended >= n).then_some(())
    });
}

fn hold_gate(emu: &Emulator, entitlements: &str) -> Gate {
    let mut gate = emu.contract_gate(entitlements);
    gate.env("MPGATE_SEAT", "hold");
    gate
}

fn stop_file(emu: &Emulator, name: &str) -> PathBuf {
    let path = emu.dir.join(name);
    let _ = std::fs::remove_file(&path);
    path
}

#[test]
fn the_seat_is_extended_across_short_lifetimes_and_checked_in_when_the_workload_exits() {
    let emu = Emulator::start(&[
        "--license-entitlement",
        "Seats=1",
        "--consumption-ttl",
        "2s",
    ]);
    let result = emu.dir.join("hold-result.json");
    let stop = stop_file(&emu, "stop-extend");
    let mut running = hold_gate(&emu, "Seats=1")
        .env("MPGATE_RESULT_FILE", &result)
        .args(workload(&stop))
        .spawn();
    assert_eq!(running.next_line("workload ready"), "ready");
    // Three extensions: the seat outlives three of its 2-second lifetimes.
    wait_for_extensions(&emu, 3);
    assert_eq!(in_use(&emu, "Seats"), "1", "the seat is held");
    // Another start finds no seat while this one holds it.
    emu.contract_gate("Seats=1")
        .run()
        .expect_error(10, "seats in use");
    let held = result_file(&result);
    assert_eq!(held["checkedIn"], false, "{held}");
    assert_eq!(held["outcome"], "verified");

    std::fs::write(&stop, "").unwrap();
    let out = running.wait();
    out.expect(3);
    let calls = license_calls(&emu);
    let (last_op, last) = calls.last().unwrap();
    assert_eq!(last_op, "CheckInLicense", "{calls:?}");
    assert_eq!(last["status"], 200, "{last}");
    // Each extension and the check-in carried the token the previous answer gave.
    let tokens: Vec<&str> = calls
        .iter()
        .filter(|(op, _)| op == "ExtendLicenseConsumption" || op == "CheckInLicense")
        .map(|(_, c)| c["licenseConsumptionToken"].as_str().unwrap())
        .collect();
    let distinct: std::collections::BTreeSet<&&str> = tokens.iter().collect();
    assert_eq!(
        distinct.len(),
        tokens.len(),
        "a token was reused: {tokens:?}"
    );
    assert_eq!(in_use(&emu, "Seats"), "0");
    let ended = result_file(&result);
    assert_eq!(ended["checkedIn"], true, "{ended}");
    assert_eq!(ended["exitCode"], 3);
    assert_eq!(ended["pricing"], "contract");
}

#[test]
fn sigterm_is_forwarded_and_the_seat_checked_in_while_the_workload_stops() {
    let emu = Emulator::start(&["--license-entitlement", "Seats=1"]);
    let stop = stop_file(&emu, "stop-term");
    // A workload that takes its time to stop: the seat must be back before it has.
    let script = format!(
        "trap 'echo got SIGTERM; while [ ! -e {0} ]; do sleep 0.05; done; exit 0' TERM; echo ready; while :; do sleep 0.05; done",
        stop.display()
    );
    let mut running = hold_gate(&emu, "Seats=1")
        .env("MPGATE_GRACE", "10m")
        .args(["sh", "-c", &script])
        .spawn();
    assert_eq!(running.next_line("workload ready"), "ready");
    running.signal(libc::SIGTERM);
    assert_eq!(running.next_line("SIGTERM forwarded"), "got SIGTERM");
    wait_until(CHILD_LIMIT, "the check-in while the workload stops", || {
        (in_use(&emu, "Seats") == "0").then_some(())
    });
    std::fs::write(&stop, "").unwrap();
    let out = running.wait();
    out.expect(0);
    assert_eq!(
        ops(&emu),
        ["CheckoutLicense", "CheckInLicense"],
        "checked in once"
    );
}

/// When mpgate logged the first line whose message contains `part`, in seconds since the
/// epoch (its JSON lines carry an RFC 3339 UTC timestamp).
fn logged_at(out: &common::Outcome, part: &str) -> f64 {
    let line = out
        .log_lines()
        .into_iter()
        .find(|l| l["message"].as_str().is_some_and(|m| m.contains(part)))
        .unwrap_or_else(|| panic!("no log line with {part:?}:\n{}", out.stderr));
    let at = line["timestamp"].as_str().unwrap();
    let (date, time) = at.trim_end_matches('Z').split_once('T').unwrap();
    let d: Vec<i64> = date.split('-').map(|p| p.parse().unwrap()).collect();
    let t: Vec<f64> = time.split(':').map(|p| p.parse().unwrap()).collect();
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, m) = if d[1] <= 2 {
        (d[0] - 1, d[1] + 9)
    } else {
        (d[0], d[1] - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    days as f64 * 86_400.0 + t[0] * 3600.0 + t[1] * 60.0 + t[2]
}

fn epoch_secs(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

#[test]
fn a_stopped_workload_that_ignores_sigterm_is_killed_grace_after_the_check_in() {
    let emu = Emulator::start(&["--license-entitlement", "Seats=1"]);
    let grace = 3.0;
    let mut running = hold_gate(&emu, "Seats=1")
        .env("MPGATE_GRACE", "3s")
        .args([
            "sh",
            "-c",
            "trap 'echo got SIGTERM' TERM; echo ready; while :; do sleep 0.05; done",
        ])
        .spawn();
    assert_eq!(running.next_line("workload ready"), "ready");
    assert_eq!(in_use(&emu, "Seats"), "1");
    let signalled = epoch_secs(SystemTime::now());
    running.signal(libc::SIGTERM);
    assert_eq!(running.next_line("SIGTERM forwarded"), "got SIGTERM");
    let out = running.wait();
    let exited = epoch_secs(SystemTime::now() - out.exited_at.elapsed());
    // The workload ignored SIGTERM: SIGKILL ended it (128 + 9).
    out.expect(137);
    let calls = license_calls(&emu);
    let (op, check_in) = calls
        .iter()
        .rfind(|(op, _)| op != "GetLicenseUsage")
        .unwrap();
    assert_eq!(op, "CheckInLicense", "{calls:?}");
    assert_eq!(check_in["status"], 200, "{check_in}");
    assert_eq!(in_use(&emu, "Seats"), "0");
    let checked_in = check_in["receivedAtMs"].as_f64().unwrap() / 1000.0;
    let stopping = logged_at(&out, "stopping: the seat is checked in");
    let killed = logged_at(&out, "did not end within the grace period");
    eprintln!(
        "check-in {:.3}s after SIGTERM; SIGKILL {:.3}s after the stop; unheld {:.3}s (grace {grace}s)",
        checked_in - signalled,
        killed - stopping,
        exited - checked_in
    );
    // The seat went back at once, not when the workload ended...
    assert!(
        checked_in - signalled < 1.5,
        "check-in {checked_in} after {signalled}"
    );
    // ...and the workload was killed `--grace` later, never running unheld for longer.
    assert!(
        killed - stopping >= grace - 0.01,
        "killed {killed}, stopping {stopping}"
    );
    assert!(
        killed - stopping < grace + 1.0,
        "killed {killed}, stopping {stopping}"
    );
    assert!(
        exited - checked_in < grace + 1.5,
        "unheld from {checked_in} to {exited}"
    );
}

/// Every signal mpgate forwards but the two that stop the workload (SIGTERM, SIGINT), as
/// tini does (`src/supervisor/signals.rs`: `FORWARDED`), and two real-time ones.
fn forwarded_signals() -> Vec<(i32, &'static str)> {
    let mut signals = vec![
        (libc::SIGHUP, "SIGHUP"),
        (libc::SIGQUIT, "SIGQUIT"),
        (libc::SIGUSR1, "SIGUSR1"),
        (libc::SIGUSR2, "SIGUSR2"),
        (libc::SIGWINCH, "SIGWINCH"),
        (libc::SIGALRM, "SIGALRM"),
        (libc::SIGCONT, "SIGCONT"),
        (libc::SIGTSTP, "SIGTSTP"),
        (libc::SIGVTALRM, "SIGVTALRM"),
        (libc::SIGPROF, "SIGPROF"),
        (libc::SIGIO, "SIGIO"),
        (libc::SIGPWR, "SIGPWR"),
        (libc::SIGURG, "SIGURG"),
        // Those tini forwards and mpgate once did not: they ended it without a check-in.
        (libc::SIGXCPU, "SIGXCPU"),
        (libc::SIGXFSZ, "SIGXFSZ"),
        (libc::SIGSTKFLT, "SIGSTKFLT"),
    ];
    // Above the C libraries' reserved ones (glibc's SIGRTMIN is 34, musl's 35).
    signals.push((libc::SIGRTMIN() + 2, "a real-time signal"));
    signals.push((libc::SIGRTMAX(), "a real-time signal"));
    signals.push((libc::SIGINT, "SIGINT"));
    signals
}

#[test]
fn every_forwarded_signal_reaches_the_workload() {
    let emu = Emulator::start(&[]);
    let signals = forwarded_signals();
    // dash knows some of them by number only.
    let traps = signals
        .iter()
        .map(|(n, _)| format!("trap 'echo got {n}' {n};"))
        .collect::<String>();
    let script = format!("{traps} echo ready; while :; do sleep 0.05; done");
    let mut running = hold_gate(&emu, "Basic")
        .env("MPGATE_GRACE", "10m")
        .args(["sh", "-c", &script])
        .spawn();
    assert_eq!(running.next_line("workload ready"), "ready");
    for (number, name) in &signals {
        running.signal(*number);
        assert_eq!(running.next_line(name), format!("got {number}"), "{name}");
    }
    // SIGINT checked the seat in already; SIGTERM (untrapped) ends the workload: 128 + 15.
    running.signal(libc::SIGTERM);
    let out = running.wait();
    out.expect(143);
    assert_eq!(ops(&emu), ["CheckoutLicense", "CheckInLicense"]);
}

#[test]
fn a_revoked_license_stops_the_workload_and_exits_10() {
    let emu = Emulator::start(&["--consumption-ttl", "2s"]);
    let result = emu.dir.join("revoked.json");
    let stop = stop_file(&emu, "stop-revoked");
    let mut running = hold_gate(&emu, "Basic")
        .env("MPGATE_RESULT_FILE", &result)
        .args(workload(&stop))
        .spawn();
    assert_eq!(running.next_line("workload ready"), "ready");
    wait_for_extensions(&emu, 1);
    send(emu.pid(), libc::SIGUSR1);
    let out = running.wait();
    out.expect_error(10, "no longer knows the checkout");
    assert!(out.stdout.contains("got SIGTERM"), "{out:?}");
    let ended = result_file(&result);
    assert_eq!(ended["outcome"], "license-lost", "{ended}");
    assert_eq!(ended["exitCode"], 10);
    assert_eq!(ended["entitled"], false);
    let termination = std::fs::read_to_string(emu.dir.join("termination-log")).unwrap();
    assert!(termination.contains("revoked"), "{termination}");
}

#[test]
fn a_workload_that_ignores_sigterm_is_killed_after_the_grace_period() {
    let emu = Emulator::start(&["--consumption-ttl", "2s"]);
    let mut running = hold_gate(&emu, "Basic")
        .env("MPGATE_GRACE", "1s")
        .args([
            "sh",
            "-c",
            "trap '' TERM; echo ready; while :; do sleep 0.05; done",
        ])
        .spawn();
    assert_eq!(running.next_line("workload ready"), "ready");
    wait_for_extensions(&emu, 1);
    send(emu.pid(), libc::SIGUSR1);
    let out = running.wait();
    out.expect(10);
    // SIGKILL came the grace period after the loss, not with it (the loss line names
    // SIGKILL too, so the kill's own line and its time are what show it).
    let lost = logged_at(&out, "the seat is lost");
    let killed = logged_at(&out, "did not end within the grace period");
    assert!(
        (1.0..2.0).contains(&(killed - lost)),
        "SIGKILL {}s after the loss",
        killed - lost
    );
}

#[test]
fn license_manager_unreachable_until_the_seat_expires_exits_14() {
    let emu = Emulator::start(&[
        "--consumption-ttl",
        "3s",
        "--license-fault",
        "ExtendLicenseConsumption=server-internal",
    ]);
    let stop = stop_file(&emu, "stop-unreachable");
    let out = hold_gate(&emu, "Basic")
        .env("MPGATE_TIMEOUT", "1s")
        .args(workload(&stop))
        .run();
    out.expect_error(14, "License Manager");
    assert!(out.stdout.contains("got SIGTERM"), "{out:?}");
    let extensions = ops(&emu)
        .iter()
        .filter(|op| *op == "ExtendLicenseConsumption")
        .count();
    assert!(
        extensions >= 2,
        "retried before the expiration: {extensions}"
    );
}

#[test]
fn the_workload_exit_status_is_passed_through_and_128_plus_n_for_a_signal() {
    let emu = Emulator::start(&[]);
    hold_gate(&emu, "Basic")
        .args(["sh", "-c", "exit 7"])
        .run()
        .expect(7);
    hold_gate(&emu, "Basic")
        .args(["sh", "-c", "kill -KILL $$"])
        .run()
        .expect(137);
    // A command that cannot start gives its seat back and exits 127.
    let out = hold_gate(&emu, "Basic")
        .args(["/nonexistent/workload"])
        .run();
    out.expect_error(127, "not found");
    let calls = ops(&emu);
    assert_eq!(
        calls.last().map(String::as_str),
        Some("CheckInLicense"),
        "{calls:?}"
    );
    assert_eq!(
        calls.iter().filter(|op| *op == "CheckoutLicense").count(),
        calls.iter().filter(|op| *op == "CheckInLicense").count(),
        "every seat went back: {calls:?}"
    );
}

/// A workload that orphans a short-lived grandchild and waits until it is reaped: a zombie
/// answers `kill -0`, a reaped process does not.
const ORPHAN: &str = r#"g=$(sh -c 'sleep 0.2 >/dev/null 2>&1 & echo $!'); echo "orphan $g"; while kill -0 "$g" 2>/dev/null; do sleep 0.05; done; echo reaped"#;

#[test]
fn orphaned_grandchildren_are_reaped_as_a_subreaper_and_as_pid_1() {
    let emu = Emulator::start(&[]);
    let out = hold_gate(&emu, "Basic").args(["sh", "-c", ORPHAN]).run();
    out.expect(0);
    assert!(out.stdout.ends_with("reaped\n"), "{out:?}");

    // As PID 1 of a new PID namespace, as in a container.
    let unshare = tool("unshare", "apt-get install -y util-linux");
    let mut gate = emu.gate_with(&unshare);
    let out = gate
        .env("AWS_ENDPOINT_URL_LICENSE_MANAGER", &emu.url)
        .env("MPGATE_PRICING", "contract")
        .env("MPGATE_PRODUCT_SKU", &emu.product_sku)
        .env("MPGATE_ENTITLEMENTS", "Basic")
        .env("MPGATE_SEAT", "hold")
        .args(pid_namespace())
        .args([
            MPGATE,
            "--",
            "sh",
            "-c",
            &format!("echo pid $PPID; {ORPHAN}"),
        ])
        .run();
    out.expect(0);
    assert!(
        out.stdout.starts_with("pid 1\n"),
        "mpgate is PID 1: {out:?}"
    );
    assert!(out.stdout.ends_with("reaped\n"), "{out:?}");
}

#[test]
fn allow_keeps_the_workload_running_past_an_unextended_expiry_and_checks_out_again() {
    let emu = Emulator::start(&[
        "--consumption-ttl",
        "2s",
        "--license-fault",
        "ExtendLicenseConsumption=server-internal",
    ]);
    let stop = stop_file(&emu, "stop-allow");
    let mut running = hold_gate(&emu, "Basic")
        .env("MPGATE_TIMEOUT", "1s")
        .env("MPGATE_ON_TRANSIENT_ERROR", "allow")
        .args(workload(&stop))
        .spawn();
    assert_eq!(running.next_line("workload ready"), "ready");
    // The first consumption expires unextended; a second checkout takes its place.
    wait_until(CHILD_LIMIT, "a second checkout", || {
        let checkouts = license_calls(&emu)
            .iter()
            .filter(|(op, c)| op == "CheckoutLicense" && c["status"] == 200)
            .count();
        (checkouts >= 2).then_some(())
    });
    std::fs::write(&stop, "").unwrap();
    let out = running.wait();
    out.expect(3);
    assert!(!out.stdout.contains("got SIGTERM"), "{out:?}");
    assert!(out.stderr.contains("keeps running"), "{}", out.stderr);
    assert_eq!(ops(&emu).last().map(String::as_str), Some("CheckInLicense"));
}

#[test]
fn allow_starts_unverified_when_license_manager_is_down_and_takes_the_seat_when_it_is_back() {
    let emu = Emulator::start(&[
        "--license-entitlement",
        "Seats=1",
        "--license-fault",
        "CheckoutLicense=server-internal*1",
    ]);
    let stop = stop_file(&emu, "stop-late-seat");
    let mut running = hold_gate(&emu, "Seats=1")
        .env("MPGATE_TIMEOUT", "1s")
        // One attempt: the first checkout fails as a whole.
        .env("AWS_MAX_ATTEMPTS", "1")
        .env("MPGATE_ON_TRANSIENT_ERROR", "allow")
        .args(workload(&stop))
        .spawn();
    assert_eq!(running.next_line("workload ready"), "ready");
    wait_until(CHILD_LIMIT, "a later checkout", || {
        license_calls(&emu)
            .iter()
            .any(|(op, c)| op == "CheckoutLicense" && c["status"] == 200)
            .then_some(())
    });
    assert_eq!(
        in_use(&emu, "Seats"),
        "1",
        "the seat is held once License Manager is back"
    );
    std::fs::write(&stop, "").unwrap();
    let out = running.wait();
    out.expect(3);
    assert!(out.stderr.contains("seat checked out"), "{}", out.stderr);
    assert_eq!(in_use(&emu, "Seats"), "0");
}

#[test]
fn a_killed_mpgate_takes_the_workload_with_it() {
    let emu = Emulator::start(&[]);
    let mut running = hold_gate(&emu, "Basic")
        .args([
            "sh",
            "-c",
            "echo $$; cut -d' ' -f5 /proc/$$/stat; while :; do sleep 0.05; done",
        ])
        .spawn();
    let workload: u32 = running.next_line("workload pid").parse().unwrap();
    // Its own process group, as tini gives it: a terminal's Ctrl-C reaches it once.
    let group: u32 = running.next_line("workload group").parse().unwrap();
    assert_eq!(group, workload);
    // SIGKILL cannot be forwarded: without the parent-death signal the workload would run on
    // with no seat held for it.
    running.signal(libc::SIGKILL);
    let _ = running.wait();
    wait_until(CHILD_LIMIT, "the workload to end", || {
        let stat = std::fs::read_to_string(format!("/proc/{workload}/stat")).unwrap_or_default();
        // Gone, or a zombie waiting for its new parent.
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next());
        matches!(state, None | Some("Z") | Some("X")).then_some(())
    });
}

/// Whether process `pid` is gone (or a zombie waiting for its parent).
fn ended(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().next());
    matches!(state, None | Some("Z") | Some("X"))
}

/// Kills a test's stray process if an assertion failed before it ended.
struct Stray(u32);

impl Drop for Stray {
    fn drop(&mut self) {
        // SAFETY: kill(2) of a process this test started (or nothing, if it has ended).
        unsafe { libc::kill(self.0 as libc::pid_t, libc::SIGKILL) };
    }
}

#[test]
fn nothing_of_the_workload_s_process_group_outlives_it() {
    let emu = Emulator::start(&["--consumption-ttl", "2s"]);
    // The workload exits, leaving a background child that would run on unheld.
    let mut running = hold_gate(&emu, "Basic")
        .args(["sh", "-c", "sleep 600 & echo $!; exit 0"])
        .spawn();
    let left: u32 = running.next_line("background pid").parse().unwrap();
    let _stray = Stray(left);
    running.wait().expect(0);
    wait_until(CHILD_LIMIT, "the background child to end", || {
        ended(left).then_some(())
    });

    // A loss: the workload and a child of its both ignore SIGTERM; SIGKILL reaches both.
    let mut running = hold_gate(&emu, "Basic")
        .env("MPGATE_GRACE", "1s")
        .args([
            "sh",
            "-c",
            "trap '' TERM; (trap '' TERM; while :; do sleep 0.05; done) & echo $!; while :; do sleep 0.05; done",
        ])
        .spawn();
    let child: u32 = running.next_line("child pid").parse().unwrap();
    let _stray = Stray(child);
    wait_for_extensions(&emu, 1);
    send(emu.pid(), libc::SIGUSR1);
    running.wait().expect(10);
    wait_until(CHILD_LIMIT, "the workload's child to end", || {
        ended(child).then_some(())
    });
}

#[test]
fn deny_never_checks_out_again_after_the_seat_expired_while_mpgate_was_stopped() {
    let emu = Emulator::start(&[
        "--license-entitlement",
        "Seats=1",
        "--consumption-ttl",
        "2s",
    ]);
    let stop = stop_file(&emu, "stop-frozen");
    let mut running = hold_gate(&emu, "Seats=1").args(workload(&stop)).spawn();
    assert_eq!(running.next_line("workload ready"), "ready");
    // Frozen for longer than the checkout's lifetime: License Manager releases the seat.
    running.signal(libc::SIGSTOP);
    wait_until(CHILD_LIMIT, "the seat to expire", || {
        (in_use(&emu, "Seats") == "0").then_some(())
    });
    running.signal(libc::SIGCONT);
    let out = running.wait();
    out.expect_error(10, "before mpgate could extend it");
    assert!(out.stdout.contains("got SIGTERM"), "{out:?}");
    let checkouts = ops(&emu)
        .iter()
        .filter(|op| *op == "CheckoutLicense")
        .count();
    assert_eq!(checkouts, 1, "no second checkout: {:?}", ops(&emu));
    assert_eq!(in_use(&emu, "Seats"), "0");
}

#[test]
fn an_unusable_extension_answer_stops_the_workload_with_exit_12_even_with_allow() {
    for (fault, says) in [
        ("answer-past-expiration", "before it arrived"),
        ("answer-missing-token", "no license consumption token"),
        ("answer-garbage", "unusable"),
    ] {
        let emu = Emulator::start(&[
            "--consumption-ttl",
            "2s",
            "--license-fault",
            &format!("ExtendLicenseConsumption={fault}*1"),
        ]);
        let stop = stop_file(&emu, "stop-bad-extension");
        let out = hold_gate(&emu, "Basic")
            .env("MPGATE_ON_TRANSIENT_ERROR", "allow")
            .env("MPGATE_GRACE", "1s")
            .args(workload(&stop))
            .run();
        out.expect_error(12, says);
        assert!(out.stdout.contains("got SIGTERM"), "{fault}: {out:?}");
        assert!(
            !out.stderr.contains("seat extended"),
            "{fault}: {}",
            out.stderr
        );
        // The extension was processed: its seat is checked in with the token mpgate holds
        // (the emulator keeps superseded tokens valid by default).
        assert_eq!(
            ops(&emu).last().map(String::as_str),
            Some("CheckInLicense"),
            "{fault}"
        );
        assert_eq!(in_use(&emu, "Basic"), "0", "{fault}");
    }
}

#[test]
fn a_stop_during_an_extension_checks_in_the_token_its_answer_brings_when_old_ones_are_retired() {
    // Every answer a second late: the SIGTERM comes while the extension is in flight, and
    // its answer retires the token mpgate had.
    let emu = Emulator::start(&[
        "--license-entitlement",
        "Seats=1",
        "--consumption-ttl",
        "10s",
        "--latency",
        "1s",
        "--retire-superseded-tokens",
    ]);
    let stop = stop_file(&emu, "stop-in-flight");
    let mut running = hold_gate(&emu, "Seats=1").args(workload(&stop)).spawn();
    assert_eq!(running.next_line("workload ready"), "ready");
    wait_until(CHILD_LIMIT, "an extension in flight", || {
        ops(&emu)
            .iter()
            .any(|op| op == "ExtendLicenseConsumption")
            .then_some(())
    });
    running.signal(libc::SIGTERM);
    let out = running.wait();
    out.expect(0);
    assert!(
        !out.stderr.contains("cannot check the seat in"),
        "{}",
        out.stderr
    );
    let calls = license_calls(&emu);
    let extension = calls
        .iter()
        .find(|(op, _)| op == "ExtendLicenseConsumption")
        .unwrap();
    let check_in = calls
        .iter()
        .rfind(|(op, _)| op == "CheckInLicense")
        .unwrap();
    assert_eq!(check_in.1["status"], 200, "{calls:?}");
    assert_eq!(
        check_in.1["licenseConsumptionToken"], extension.1["issuedToken"],
        "the check-in carries the extension's token"
    );
    assert_eq!(in_use(&emu, "Seats"), "0");
}

#[test]
fn a_lost_extension_answer_is_safe_whether_or_not_license_manager_retires_the_old_token() {
    // Kept valid (the emulator's default): the retry with the old token extends the seat.
    let emu = Emulator::start(&[
        "--consumption-ttl",
        "3s",
        "--license-fault",
        "ExtendLicenseConsumption=processed-then-drop*1",
    ]);
    let stop = stop_file(&emu, "stop-lost-kept");
    let mut running = hold_gate(&emu, "Basic").args(workload(&stop)).spawn();
    assert_eq!(running.next_line("workload ready"), "ready");
    wait_for_extensions(&emu, 2);
    std::fs::write(&stop, "").unwrap();
    running.wait().expect(3);
    assert_eq!(in_use(&emu, "Basic"), "0");

    // Retired: the retry is refused as for an unknown token; mpgate cannot tell that from a
    // revoked license, so it stops the workload (exit 10) rather than run it unheld.
    let emu = Emulator::start(&[
        "--consumption-ttl",
        "3s",
        "--retire-superseded-tokens",
        "--license-fault",
        "ExtendLicenseConsumption=processed-then-drop*1",
    ]);
    let stop = stop_file(&emu, "stop-lost-retired");
    let out = hold_gate(&emu, "Basic")
        .env("MPGATE_GRACE", "1s")
        .args(workload(&stop))
        .run();
    out.expect_error(10, "no longer knows the checkout");
    assert!(out.stdout.contains("got SIGTERM"), "{out:?}");
}
