//! The lease a workload can watch (`--seat hold`): a heartbeat on `MPGATE_LEASE_FD` at the
//! checkout and at every extension, and the watchers that end the workload when it stops
//! (`mpgate_proof::lease`, shown by the proof crate's `watch_lease` example, and `mpgate lease
//! watch`): a frozen (SIGSTOP) mpgate cannot keep a watching workload alive past the seat's
//! expiry. A workload that never reads the heartbeat is never held up by it.

mod common;

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use mpgate_testkit::wait::{poll_until, wait_until};
use mpgate_testkit::{example_exe, Emulator, CHILD_LIMIT};
use serde_json::Value;

fn hold_gate(emu: &Emulator, entitlements: &str) -> Gate {
    let mut gate = emu.contract_gate(entitlements);
    gate.env("MPGATE_SEAT", "hold");
    gate
}

/// Waits (bounded) until the emulator has answered `n` extensions.
fn wait_for_extensions(emu: &Emulator, n: usize) {
    wait_until(CHILD_LIMIT, "extensions", || {
        (extensions(emu) >= n).then_some(())
    });
}

fn extensions(emu: &Emulator) -> usize {
    license_calls(emu)
        .iter()
        .filter(|(op, c)| op == "ExtendLicenseConsumption" && c["status"] == 200)
        .count()
}

/// Whether process `pid` has ended (gone, or a zombie its stopped parent has not reaped).
fn ended(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().next());
    matches!(state, None | Some("Z") | Some("X"))
}

/// The signals process `pid` ignores (`SigIgn` of /proc/PID/status).
fn ignored_signals(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .unwrap()
        .trim();
    u64::from_str_radix(mask, 16).unwrap()
}

/// Sends SIGCONT to a process a test froze, if an assertion fails before it does.
struct Frozen(u32);

impl Drop for Frozen {
    fn drop(&mut self) {
        // SAFETY: kill(2) of a process this test started (or nothing, once it has ended).
        unsafe { libc::kill(self.0 as libc::pid_t, libc::SIGCONT) };
    }
}

#[test]
fn the_workload_gets_a_heartbeat_at_the_checkout_and_at_every_extension() {
    let emu = Emulator::start(&["--consumption-ttl", "2s"]);
    // The workload prints what it inherited, then every heartbeat line as it comes (bash:
    // dash redirects descriptors 0 to 9 only, and the heartbeat's number may be higher).
    let bash = tool("bash", "apt-get install -y bash");
    let script = r#"echo "fd $MPGATE_LEASE_FD"; ls -l /proc/$$/fd/$MPGATE_LEASE_FD | sed 's/.*-> //'; exec cat <&"$MPGATE_LEASE_FD""#;
    let mut running = hold_gate(&emu, "Basic")
        // An inherited value is replaced, never passed on.
        .env("MPGATE_LEASE_FD", "0")
        .env("MPGATE_LOG", "mpgate=debug")
        .args([bash.as_os_str(), "-c".as_ref(), script.as_ref()])
        .spawn();
    let fd: u32 = running
        .next_line("the descriptor")
        .strip_prefix("fd ")
        .unwrap()
        .parse()
        .unwrap();
    assert!(fd >= 3, "{fd}");
    let target = running.next_line("what the descriptor is");
    assert!(target.starts_with("socket:["), "{target}");
    // mpgate itself ignores SIGPIPE (and the heartbeat raises none: MSG_NOSIGNAL).
    assert_ne!(
        ignored_signals(running.pid()) & (1 << (libc::SIGPIPE - 1)),
        0,
        "mpgate does not ignore SIGPIPE"
    );
    // One line at the checkout, then one per extension, each with the time left and the
    // expiration; the expiration moves on with the extensions. License Manager writes whole
    // seconds, and mpgate counts an expiration from the checkout's IssuedAt plus a second
    // (it may be up to one behind), so with a 2 s TTL several extensions can answer the same
    // second before one answers the next: read until it moves (at most 20 lines).
    let mut expirations: Vec<String> = Vec::new();
    while expirations.len() < 4 || expirations[0] == expirations[expirations.len() - 1] {
        assert!(expirations.len() < 20, "{expirations:?}");
        let line: Value = serde_json::from_str(&running.next_line("a heartbeat")).unwrap();
        let left = line["leftMs"].as_u64().unwrap_or_else(|| panic!("{line}"));
        assert!(left > 0 && left <= 2000, "{line}");
        let expiration = line["expiration"].as_str().unwrap().to_string();
        assert!(expiration.ends_with('Z'), "{line}");
        assert!(
            extensions(&emu) >= expirations.len(),
            "a heartbeat before its extension"
        );
        expirations.push(expiration);
    }
    assert!(
        expirations.windows(2).all(|w| w[0] <= w[1]),
        "{expirations:?}"
    );
    running.signal(libc::SIGTERM);
    let out = running.wait();
    out.expect(143);
    let seat_extended = out.stderr.matches("seat extended").count();
    assert!(seat_extended >= 3, "{}", out.stderr);
}

#[test]
fn only_a_held_seat_gives_a_heartbeat() {
    // `--seat check` execs the workload: an inherited MPGATE_LEASE_FD is removed, not passed
    // on as if a seat were held.
    let emu = Emulator::start(&[]);
    let out = emu
        .contract_gate("Basic")
        .env("MPGATE_LEASE_FD", "5")
        .args(["sh", "-c", "echo \"${MPGATE_LEASE_FD-unset}\""])
        .run();
    out.expect(0);
    assert_eq!(out.stdout, "unset\n");
}

#[test]
fn a_workload_that_never_reads_the_heartbeat_keeps_running_while_mpgate_extends() {
    let emu = Emulator::start(&["--consumption-ttl", "2s"]);
    let bash = tool("bash", "apt-get install -y bash");
    // Holds the socket, never reads it; and a second run whose workload closes it at once.
    for (script, what) in [
        ("echo ready; while :; do sleep 0.05; done", "kept unread"),
        (
            r#"exec {MPGATE_LEASE_FD}<&-; echo ready; while :; do sleep 0.05; done"#,
            "closed",
        ),
    ] {
        let before = extensions(&emu);
        let mut running = hold_gate(&emu, "Basic")
            .env("MPGATE_LOG", "mpgate=debug")
            .args([bash.as_os_str(), "-c".as_ref(), script.as_ref()])
            .spawn();
        assert_eq!(running.next_line("workload ready"), "ready", "{what}");
        // mpgate keeps only a few lines for a workload that does not read: enough
        // extensions to fill the socket, and more after it is full.
        wait_for_extensions(&emu, before + 16);
        running.signal(libc::SIGTERM);
        let out = running.wait();
        out.expect(143);
        if what == "kept unread" {
            assert!(
                out.stderr.contains("the socket is full"),
                "{what}: never full:\n{}",
                out.stderr
            );
        } else {
            assert!(
                out.stderr.contains("closed its heartbeat socket"),
                "{what}:\n{}",
                out.stderr
            );
        }
        assert!(
            !out.stderr.contains("cannot extend"),
            "{what}: {}",
            out.stderr
        );
    }
}

/// Freezes the gate (`running`, already holding its seat), then waits for the watching
/// process `watcher` to end: it must end before License Manager releases the seat, within a
/// lifetime of the freeze. Returns how long after the freeze it ended.
fn freeze_and_wait_for_the_watcher(
    emu: &Emulator,
    running: &Running,
    watcher: u32,
    ttl: Duration,
) -> Duration {
    wait_for_extensions(emu, 1);
    assert_eq!(in_use(emu, "Seats"), "1");
    let frozen = Frozen(running.pid());
    let stopped = Instant::now();
    running.signal(libc::SIGSTOP);
    let gone = poll_until(stopped + ttl + Duration::from_secs(5), || {
        ended(watcher).then(Instant::now)
    })
    .unwrap_or_else(|| {
        panic!(
            "the watcher ran on {:?} after the freeze",
            ttl + Duration::from_secs(5)
        )
    });
    // The seat is still taken when the watching workload has ended...
    assert_eq!(
        in_use(emu, "Seats"),
        "1",
        "the watcher ended after the seat expired"
    );
    let took = gone - stopped;
    assert!(
        took <= ttl,
        "{took:?} after the freeze, the seat lasts {ttl:?}"
    );
    // ...and License Manager releases it later, for another copy.
    wait_until(CHILD_LIMIT, "the seat to expire", || {
        (in_use(emu, "Seats") == "0").then_some(())
    });
    eprintln!(
        "the watcher ended {took:?} after the freeze; License Manager released the seat {:?} after that",
        gone.elapsed()
    );
    drop(frozen);
    took
}

#[test]
fn a_frozen_mpgate_cannot_keep_a_watching_rust_workload_past_the_seat_s_expiry() {
    // Long enough for the whole 1 s safety margin: the seat is still taken when the test
    // looks, however loaded the machine.
    let ttl = Duration::from_secs(10);
    let emu = Emulator::start(&[
        "--license-entitlement",
        "Seats=1",
        "--consumption-ttl",
        "10s",
    ]);
    let example = example_exe("watch_lease");
    let mut running = hold_gate(&emu, "Seats=1")
        .args(["sh", "-c", r#"echo $$; exec "$0""#])
        .args([&example])
        .spawn();
    let workload: u32 = running.next_line("workload pid").parse().unwrap();
    assert_eq!(running.next_line("watching"), "watching the lease");
    let took = freeze_and_wait_for_the_watcher(&emu, &running, workload, ttl);
    eprintln!("the Rust watcher ended {took:?} after the freeze (seat lifetime {ttl:?})");
    // Resumed, mpgate finds its workload ended by the watcher (exit 10) and exits 10.
    let out = running.wait();
    out.expect(10);
    assert!(
        out.stderr
            .contains("no heartbeat from mpgate before the seat's expiry"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_frozen_mpgate_cannot_keep_a_workload_under_mpgate_lease_watch_past_the_seat_s_expiry() {
    // Long enough for the whole 1 s safety margin: the seat is still taken when the test
    // looks, however loaded the machine.
    let ttl = Duration::from_secs(10);
    let emu = Emulator::start(&[
        "--license-entitlement",
        "Seats=1",
        "--consumption-ttl",
        "10s",
    ]);
    let script = r#"echo $$; trap 'echo got SIGTERM; exit 0' TERM; echo "var ${MPGATE_LEASE_FD-unset}"; echo ready; while :; do sleep 0.05; done"#;
    let mut running = hold_gate(&emu, "Seats=1")
        .args([
            MPGATE, "lease", "watch", "--grace", "1s", "--", "sh", "-c", script,
        ])
        .spawn();
    let workload: u32 = running.next_line("workload pid").parse().unwrap();
    // The heartbeat is not passed on.
    assert_eq!(running.next_line("its variable"), "var unset");
    assert_eq!(running.next_line("ready"), "ready");
    let sockets: Vec<String> = std::fs::read_dir(format!("/proc/{workload}/fd"))
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .map(|target| target.to_string_lossy().into_owned())
        .filter(|target| target.starts_with("socket:"))
        .collect();
    assert!(sockets.is_empty(), "COMMAND inherited {sockets:?}");
    let took = freeze_and_wait_for_the_watcher(&emu, &running, workload, ttl);
    eprintln!("mpgate lease watch ended COMMAND {took:?} after the freeze (seat lifetime {ttl:?})");
    let out = running.wait();
    out.expect(10);
    assert!(out.stdout.contains("got SIGTERM"), "{out:?}");
}

#[test]
fn an_orphaned_watcher_ends_when_mpgate_is_gone() {
    // A watching process that outlives mpgate's own child (mpgate not PID 1: its parent-death
    // signal reaches the direct child only) ends at the end of the socket, not at the expiry.
    let emu = Emulator::start(&["--consumption-ttl", "60s"]);
    let example = example_exe("watch_lease");
    let mut running = hold_gate(&emu, "Basic")
        .args(["sh", "-c", r#""$0" & echo $!; wait"#])
        .args([&example])
        .spawn();
    // The shell's `echo $!` and the watcher's first line come in either order.
    let mut lines = [
        running.next_line("a first line"),
        running.next_line("a second line"),
    ];
    lines.sort();
    assert_eq!(lines[1], "watching the lease", "{lines:?}");
    let watcher: u32 = lines[0].parse().unwrap();
    let killed = Instant::now();
    running.signal(libc::SIGKILL);
    let _ = running.wait();
    wait_until(
        Duration::from_secs(10),
        "the orphaned watcher to end",
        || ended(watcher).then_some(()),
    );
    assert!(killed.elapsed() < Duration::from_secs(10));
}

/// `mpgate lease watch` with a socket of the test's as its heartbeat.
fn lease_watch(dir: &Path, grace: &str, script: &str) -> (Running, UnixStream) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let fd = theirs.as_raw_fd();
    let mut gate = Gate::hermetic(dir);
    gate.env("MPGATE_LEASE_FD", fd.to_string())
        .pre_exec(move || {
            // SAFETY: fcntl in the forked child, on the descriptor it is to inherit.
            if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
        .args(["lease", "watch", "--grace", grace, "--", "sh", "-c", script]);
    let running = gate.spawn();
    drop(theirs);
    (running, ours)
}

#[test]
fn mpgate_lease_watch_ends_command_on_the_socket_s_end_and_on_a_bad_line() {
    let dir = mpgate_testkit::scratch("lease-watch");
    let script = "trap 'echo got SIGTERM; exit 0' TERM; echo ready; while :; do sleep 0.05; done";
    // A heartbeat, then mpgate gone: COMMAND gets SIGTERM at once.
    let (running, mut mpgate) = lease_watch(&dir, "5s", script);
    mpgate
        .write_all(b"{\"leftMs\":600000,\"expiration\":\"2030-01-01T00:00:00Z\"}\n")
        .unwrap();
    let mut running = running;
    assert_eq!(running.next_line("ready"), "ready");
    let closed = Instant::now();
    drop(mpgate);
    let out = running.wait();
    out.expect_error(10, "mpgate closed the lease");
    assert!(out.stdout.contains("got SIGTERM"), "{out:?}");
    assert!(
        closed.elapsed() < Duration::from_secs(5),
        "{:?}",
        closed.elapsed()
    );

    // A line that is not mpgate's fails closed.
    let (mut running, mut mpgate) = lease_watch(&dir, "5s", script);
    assert_eq!(running.next_line("ready"), "ready");
    mpgate
        .write_all(b"{\"leftMs\":600000}\n{\"leftMs\":\"forever\"}\n")
        .unwrap();
    let out = running.wait();
    out.expect_error(10, "not mpgate's heartbeat (leftMs is not a whole number");
    assert!(out.stdout.contains("got SIGTERM"), "{out:?}");

    // No heartbeat at all within the first-beat window.
    let (running, mpgate) = lease_watch(&dir, "5s", script);
    let out = running.wait();
    out.expect_error(10, "no heartbeat from mpgate within");
    drop(mpgate);
}

#[test]
fn mpgate_lease_watch_kills_a_command_that_ignores_sigterm_after_the_grace() {
    let dir = mpgate_testkit::scratch("lease-watch-grace");
    let (mut running, mut mpgate) = lease_watch(
        &dir,
        "1s",
        "trap '' TERM; echo ready; while :; do sleep 0.05; done",
    );
    assert_eq!(running.next_line("ready"), "ready");
    // A short lease that is not renewed: it ends at its deadline (less a tenth), then SIGKILL
    // a grace later.
    let sent = Instant::now();
    mpgate
        .write_all(b"{\"leftMs\":1000,\"expiration\":\"E\"}\n")
        .unwrap();
    let out = running.wait();
    let took = out.exited_at - sent;
    out.expect_error(10, "no heartbeat from mpgate before the seat's expiry (E)");
    assert!(
        took >= Duration::from_millis(900 + 1000) && took < Duration::from_secs(6),
        "{took:?}"
    );
    assert!(
        out.stderr.contains("did not end within the grace period"),
        "{}",
        out.stderr
    );
}

#[test]
fn mpgate_lease_watch_passes_the_exit_status_and_signals_on() {
    let dir = mpgate_testkit::scratch("lease-watch-status");
    let beat = b"{\"leftMs\":600000}\n";
    let (running, mut mpgate) = lease_watch(&dir, "5s", "exit 7");
    mpgate.write_all(beat).unwrap();
    running.wait().expect(7);
    let (running, mut mpgate) = lease_watch(&dir, "5s", "kill -KILL $$");
    mpgate.write_all(beat).unwrap();
    running.wait().expect(137);
    let (mut running, mut mpgate) = lease_watch(
        &dir,
        "5s",
        "trap 'echo got USR1' USR1; trap 'exit 3' TERM; echo ready; while :; do sleep 0.05; done",
    );
    mpgate.write_all(beat).unwrap();
    assert_eq!(running.next_line("ready"), "ready");
    running.signal(libc::SIGUSR1);
    assert_eq!(running.next_line("USR1 forwarded"), "got USR1");
    running.signal(libc::SIGTERM);
    running.wait().expect(3);
    // Not started by mpgate --seat hold: COMMAND never runs.
    let marker = dir.join("ran");
    let out = Gate::hermetic(&dir)
        .args(["lease", "watch", "--", "touch"])
        .args([&marker])
        .run();
    out.expect_error(2, "MPGATE_LEASE_FD is not set");
    assert!(!marker.exists());
    let out = Gate::hermetic(&dir)
        .env("MPGATE_LEASE_FD", "1")
        .args(["lease", "watch", "--", "touch"])
        .args([&marker])
        .run();
    out.expect_error(2, "is a standard stream");
    assert!(!marker.exists());
    let out = Gate::hermetic(&dir)
        .args(["lease", "watch", "--grace", "forever", "--", "true"])
        .run();
    out.expect_error(2, "invalid --grace");
}

#[test]
fn mpgate_lease_watch_has_its_own_help() {
    let dir = mpgate_testkit::scratch("lease-help");
    let help = |args: &[&str]| {
        let out = Gate::hermetic(&dir).args(args).run();
        out.expect(0);
        assert!(out.stderr.is_empty(), "{}", out.stderr);
        out.stdout
    };
    let text = help(&["lease", "watch", "--help"]);
    assert_eq!(help(&["lease", "--help"]), text);
    for words in [
        "Usage: mpgate lease watch [--grace DURATION] [--] COMMAND [ARG...]",
        "MPGATE_LEASE_FD",
        "(default 10s)",
        "mpgate_proof::lease::watch()",
        "Exit codes: 10",
    ] {
        assert!(text.contains(words), "no {words:?} in:\n{text}");
    }
    assert!(help(&["--help"]).contains("mpgate lease watch [--grace DURATION] -- COMMAND"));
    // A workload named `lease` is run with `--`.
    let out = Gate::hermetic(&dir).args(["lease", "hold"]).run();
    out.expect_error(2, "'mpgate -- lease'");
}
