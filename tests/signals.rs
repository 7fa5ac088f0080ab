//! Signals around the hand-over, end to end (docs/reference.md, "Signals and the hand-over"): the real
//! `mpgate` against the real emulator, as an ordinary process, as PID 1 of a new PID namespace
//! (`unshare`, where the kernel drops every signal that has no handler) and as PID 2 under
//! `tini` (what `docker --init` and ECS `initProcessEnabled` run). Also what the workload
//! inherits at exec: its PID, an empty signal mask, default dispositions, no thread, file
//! descriptor or child of the gate; and no signal lost between the verdict and the exec.
//!
//! Needs util-linux `unshare` with either root (CAP_SYS_ADMIN) or unprivileged user
//! namespaces, coreutils `env` >= 8.31 (`--block-signal`) and `tini`
//! (`apt-get install -y tini`). A missing one fails the test, saying what to install.

mod common;

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use mpgate_testkit::{result_file, run_bounded, scratch, wait_until, Drain, Emulator, CHILD_LIMIT};

/// How long a gate may take between a signal and its exit.
const PROMPT: Duration = Duration::from_secs(5);
/// The gate's deadline while the emulator hangs: far longer than PROMPT, shorter than
/// CHILD_LIMIT (the bound on every child of these tests, and on every wait for a line).
const HANG_TIMEOUT: &str = "15s";

const SIGNALS: [(i32, &str, i32); 3] = [
    (libc::SIGTERM, "SIGTERM", 143),
    (libc::SIGINT, "SIGINT", 130),
    (libc::SIGHUP, "SIGHUP", 129),
];

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// The pids of a process's children.
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect()
}

/// The only child of `pid` (the tree is settled when this is called).
fn only_child(pid: u32) -> u32 {
    match children(pid)[..] {
        [child] => child,
        ref other => panic!("process {pid} should have exactly one child, has {other:?}"),
    }
}

/// The fields of /proc/PID/status (or a status text), by name.
fn status_fields(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn proc_status(pid: u32) -> BTreeMap<String, String> {
    status_fields(&std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap())
}

/// Asserts that host process `pid` is mpgate itself and has PID `ns_pid` in its innermost
/// PID namespace (1: init of a new namespace; 2: the child of an init).
fn assert_is_gate_with_ns_pid(pid: u32, ns_pid: u32) {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert_eq!(
        exe,
        std::fs::canonicalize(MPGATE).unwrap(),
        "process {pid} is not mpgate"
    );
    let nspid = proc_status(pid)["NSpid"].clone();
    let pids: Vec<u32> = nspid
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(
        pids.len(),
        2,
        "not in a nested PID namespace: NSpid {nspid}"
    );
    assert_eq!(pids, [pid, ns_pid], "NSpid {nspid}");
}

/// A signal set from /proc/PID/status (SigBlk, SigCgt, ...).
fn mask(pid: u32, field: &str) -> u64 {
    u64::from_str_radix(&proc_status(pid)[field], 16).unwrap()
}

/// Asserts that the waiting gate catches TERM, INT and HUP and does not block them: as PID 1
/// a signal without a handler would be dropped by the kernel, a blocked one never handled.
fn assert_catches_the_stop_signals(pid: u32) {
    let (caught, blocked) = (mask(pid, "SigCgt"), mask(pid, "SigBlk"));
    for (signal, name, _) in SIGNALS {
        let bit = 1u64 << (signal - 1);
        assert_ne!(
            caught & bit,
            0,
            "{name} has no handler: SigCgt {caught:016x}"
        );
        assert_eq!(blocked & bit, 0, "{name} is blocked: SigBlk {blocked:016x}");
    }
}

/// `unshare <pid namespace> [inner...] mpgate`, as a Gate (mpgate's arguments follow).
fn in_pid_namespace(emu: &Emulator, inner: &[&str]) -> Gate {
    // Gate runs the wrapper with the emulator's hermetic environment; mpgate follows.
    let mut gate = emu.gate_with(&tool("unshare", "apt-get install -y util-linux"));
    gate.args(pid_namespace()).args(inner).args([MPGATE]);
    gate
}

/// Asserts what an interrupted gate leaves behind: exit 128+n within PROMPT of the signal,
/// nothing on stdout, the one-line reason in the log, the result file and the termination
/// log.
fn assert_interrupted(done: &Outcome, signalled: Instant, name: &str, code: i32, emu: &Emulator) {
    done.expect(code);
    let took = done.exited_at.duration_since(signalled);
    assert!(took < PROMPT, "{name}: exit took {took:?} after the signal");
    assert_eq!(done.stdout, "", "{name}: the workload must not have run");
    let message = done.only_error_message();
    assert_eq!(
        message,
        format!("interrupted by {name} before the hand-over; the workload was not started")
    );
    let result = result_file(&emu.dir.join("result.json"));
    assert_eq!(result["outcome"], "interrupted", "{result}");
    assert_eq!(result["exitCode"], code, "{result}");
    assert_eq!(result["entitled"], false, "{result}");
    assert_eq!(
        std::fs::read_to_string(emu.dir.join("termination-log")).unwrap(),
        format!("mpgate: {message}\n")
    );
}

/// Removes the previous gate's result file and termination log.
fn reset_reports(emu: &Emulator) {
    let _ = std::fs::remove_file(emu.dir.join("result.json"));
    let _ = std::fs::remove_file(emu.dir.join("termination-log"));
}

fn hanging_gate(gate: &mut Gate, emu: &Emulator) {
    gate.env("MPGATE_TIMEOUT", HANG_TIMEOUT)
        .env("MPGATE_RESULT_FILE", emu.dir.join("result.json"))
        .env("MPGATE_TERMINATION_LOG", emu.dir.join("termination-log"));
}

// ---------------------------------------------------------------------------------------
// 1. Before the hand-over, as PID 1
// ---------------------------------------------------------------------------------------

#[test]
fn as_pid_1_sigterm_sigint_sighup_end_the_network_wait_with_128_plus_n() {
    let emu = Emulator::start(&["--fault", "hang"]);
    for (n, (signal, name, code)) in SIGNALS.into_iter().enumerate() {
        reset_reports(&emu);
        let mut gate = in_pid_namespace(&emu, &[]);
        hanging_gate(&mut gate, &emu);
        let live = gate.args(["--", "sh", "-c", "echo ran"]).spawn();
        emu.wait_for_calls(n + 1);
        let gate_pid = only_child(live.pid());
        assert_is_gate_with_ns_pid(gate_pid, 1);
        assert_catches_the_stop_signals(gate_pid);
        let signalled = Instant::now();
        send(gate_pid, signal);
        let done = live.wait();
        assert_interrupted(&done, signalled, name, code, &emu);
        assert_eq!(
            emu.calls().len(),
            n + 1,
            "one call per gate, no retry after {name}"
        );
    }
}

/// A parent may start mpgate with these signals blocked (the mask survives exec; some
/// supervisors leave it so): the gate must still end on them at once, not at its deadline.
#[test]
fn signals_blocked_by_the_parent_still_end_the_network_wait() {
    let emu = Emulator::start(&["--fault", "hang"]);
    let env = tool("env", "apt-get install -y coreutils");
    for (n, (signal, name, code)) in SIGNALS.into_iter().enumerate() {
        reset_reports(&emu);
        let mut gate = emu.gate_with(&env);
        hanging_gate(&mut gate, &emu);
        let live = gate
            .args(["--block-signal=TERM,INT,HUP"])
            .args([MPGATE])
            .args(["--", "sh", "-c", "echo ran"])
            .spawn();
        emu.wait_for_calls(n + 1);
        // env execs mpgate in place: the child is the gate, started with the signals blocked.
        assert_eq!(
            std::fs::read_link(format!("/proc/{}/exe", live.pid())).unwrap(),
            std::fs::canonicalize(MPGATE).unwrap()
        );
        assert_catches_the_stop_signals(live.pid());
        let signalled = Instant::now();
        send(live.pid(), signal);
        let done = live.wait();
        assert_interrupted(&done, signalled, name, code, &emu);
    }
}

/// The gate's end of a FIFO that is full before it starts, so that its first log line (the
/// INFO line after the verdict and the result file, just before the exec) blocks: the gate
/// is held inside the window between the end of the check and the hand-over.
struct FullPipe {
    path: PathBuf,
    reader: std::fs::File,
}

impl FullPipe {
    fn new(dir: &Path) -> FullPipe {
        use std::io::Write;
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::fs::OpenOptionsExt;
        let path = dir.join("stderr.fifo");
        let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: mkfifo on a NUL-terminated path this test owns.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0, "mkfifo");
        let reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .unwrap();
        let mut writer = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .unwrap();
        for chunk in [4096, 1] {
            while writer.write(&vec![b'#'; chunk]).is_ok() {}
        }
        FullPipe { path, reader }
    }

    /// Unblocks the gate: reads everything until every writer is gone.
    fn drain(self) -> Drain {
        use std::os::fd::AsRawFd;
        // SAFETY: fcntl on a descriptor this test owns: back to blocking reads.
        unsafe { libc::fcntl(self.reader.as_raw_fd(), libc::F_SETFL, 0) };
        Drain::spawn(self.reader)
    }
}

/// A signal that arrives after the check has decided but before the exec must not be
/// swallowed by the gate's handler (nobody reads it any more) and leave the workload to run:
/// either the gate ends on it (128+n) or it dies of it (default action) before the exec.
/// (As PID 1 such a signal is dropped, as it is for a PID-1 workload that has not installed
/// its handler yet; that case is not a guarantee and not tested.)
#[test]
fn a_signal_between_the_verdict_and_the_exec_is_not_lost() {
    let emu = Emulator::start(&[]);
    for (n, (signal, name, code)) in SIGNALS.into_iter().enumerate() {
        let dir = scratch("signals-window");
        let pipe = FullPipe::new(&dir);
        let result = dir.join("result.json");
        // sh execs mpgate in place with its stderr on the full FIFO.
        let mut gate = emu.gate_with(Path::new("/bin/sh"));
        // Every log line before the verdict's is filtered out (the unpinned build's notice
        // at start, target `mpgate`), so the first to block is the verdict's.
        gate.env("MPGATE_RESULT_FILE", &result)
            .env("MPGATE_LOG", "info,mpgate=error,mpgate::handover=info")
            .env("STDERR_FIFO", &pipe.path)
            .args(["-c", r#"exec "$0" "$@" 2>"$STDERR_FIFO""#, MPGATE])
            .args(["--", "sh", "-c", "echo workload ran"]);
        let live = gate.spawn();
        // The result file is written after the verdict and before the blocked log line.
        wait_until(CHILD_LIMIT, "result file", || result.exists().then_some(()));
        assert_eq!(
            std::fs::read_link(format!("/proc/{}/exe", live.pid())).unwrap(),
            std::fs::canonicalize(MPGATE).unwrap(),
            "{name}: the gate must still be mpgate (held before the exec)"
        );
        let signalled = Instant::now();
        send(live.pid(), signal);
        let drained = pipe.drain();
        let done = live.wait();
        // The gate has ended and the workload never ran: no writer is left.
        drained
            .until_end(Instant::now() + CHILD_LIMIT)
            .expect("the FIFO is still open after the gate ended");
        assert_eq!(done.stdout, "", "{name} was lost: the workload ran");
        assert!(
            done.status.code() == Some(code) || done.status.signal() == Some(signal),
            "{name}: {}",
            done.status
        );
        assert!(done.exited_at.duration_since(signalled) < PROMPT);
        assert_eq!(emu.calls().len(), n + 1, "{name}");
    }
}

// ---------------------------------------------------------------------------------------
// 2. After the hand-over the workload receives signals normally
// ---------------------------------------------------------------------------------------

/// A workload that traps TERM, INT and HUP (exit 7, 8, 9) and says it is ready with its PID.
const TRAPPING: &str = r#"trap 'echo got TERM; exit 7' TERM
trap 'echo got INT; exit 8' INT
trap 'echo got HUP; exit 9' HUP
echo "ready $$ $MPGATE_ENTITLEMENT"
while :; do sleep 0.1; done"#;

fn traps_signals(gate: &mut Gate) -> &mut Gate {
    gate.args(["--", "sh", "-c", TRAPPING])
}

#[test]
fn after_the_hand_over_the_workload_gets_signals_at_the_same_pid() {
    let emu = Emulator::start(&[]);
    for (signal, name, _) in SIGNALS {
        let short = &name[3..];
        let code = match signal {
            libc::SIGTERM => 7,
            libc::SIGINT => 8,
            _ => 9,
        };
        // As an ordinary process: the workload is the very process the test started.
        let mut live = traps_signals(&mut emu.gate()).spawn();
        let ready = live.next_line("ready");
        assert_eq!(ready, format!("ready {} verified", live.pid()));
        send(live.pid(), signal);
        let done = live.wait();
        done.expect(code);
        assert_eq!(done.stdout, format!("{ready}\ngot {short}\n"));

        // As PID 1 of a PID namespace: the trap is a handler, so the signal is delivered.
        let mut live = traps_signals(&mut in_pid_namespace(&emu, &[])).spawn();
        let ready = live.next_line("ready");
        assert_eq!(ready, "ready 1 verified");
        let workload = only_child(live.pid());
        let nspid = proc_status(workload)["NSpid"].clone();
        assert_eq!(nspid, format!("{workload}\t1"));
        send(workload, signal);
        let done = live.wait();
        done.expect(code);
        assert_eq!(done.stdout, format!("{ready}\ngot {short}\n"));
    }
}

/// Even when the gate's parent ignored these signals (as `nohup` does for HUP) and the gate
/// caught them itself, a workload that sets no trap gets the default action: it dies of it.
#[test]
fn a_workload_without_traps_dies_of_term_int_and_hup() {
    let emu = Emulator::start(&[]);
    let env = tool("env", "apt-get install -y coreutils");
    for (signal, name, _) in SIGNALS {
        let mut gate = emu.gate_with(&env);
        let mut live = gate
            .args(["--ignore-signal=TERM,INT,HUP,QUIT,USR1"])
            .args([MPGATE])
            .args(["--", "sh", "-c", "echo \"ready $$\"; exec sleep 30"])
            .spawn();
        let ready = live.next_line("ready");
        assert_eq!(ready, format!("ready {}", live.pid()));
        let signalled = Instant::now();
        send(live.pid(), signal);
        let done = live.wait();
        assert_eq!(
            done.status.signal(),
            Some(signal),
            "{name}: the workload should have died of it: {}; stderr:\n{}",
            done.status,
            done.stderr
        );
        assert!(done.exited_at.duration_since(signalled) < PROMPT);
        assert_eq!(done.stdout, format!("{ready}\n"));
    }
}

/// The gate may start with signals blocked and ignored (env --block-signal/--ignore-signal);
/// the workload still starts with an empty mask, nothing ignored and nothing caught.
#[test]
fn the_workload_starts_with_an_empty_mask_and_default_dispositions() {
    let emu = Emulator::start(&[]);
    let env = tool("env", "apt-get install -y coreutils");
    let block = "--block-signal=TERM,INT,HUP,QUIT,USR1,USR2,ALRM,CHLD,RTMIN+3";
    let ignore = "--ignore-signal=TERM,INT,HUP,QUIT,USR1,USR2,ALRM,PIPE,RTMIN+3,RTMAX";

    // The set-up is real: without mpgate, `cat` inherits the mask and the ignored signals.
    let out = run_bounded(
        Command::new(&env).args([block, ignore, "cat", "/proc/self/status"]),
        CHILD_LIMIT,
    );
    assert!(out.status.success(), "{}", out.stderr);
    let control = status_fields(&out.stdout);
    assert_ne!(control["SigBlk"], "0000000000000000");
    assert_ne!(control["SigIgn"], "0000000000000000");

    for as_pid_1 in [false, true] {
        let mut gate = if as_pid_1 {
            in_pid_namespace(&emu, &[env.to_str().unwrap(), block, ignore])
        } else {
            let mut g = emu.gate_with(&env);
            g.args([block, ignore]).args([MPGATE]);
            g
        };
        let live = gate.args(["--", "cat", "/proc/self/status"]).spawn();
        let done = live.wait();
        done.expect(0);
        let status = status_fields(&done.stdout);
        let expected_pid = if as_pid_1 {
            "1".to_string()
        } else {
            done.pid.to_string()
        };
        assert_eq!(status["Pid"], expected_pid, "same PID as the gate");
        assert_eq!(status["Name"], "cat");
        for field in ["SigBlk", "SigIgn", "SigCgt", "SigPnd", "ShdPnd"] {
            assert_eq!(
                status[field], "0000000000000000",
                "{field} (PID 1: {as_pid_1}):\n{}",
                done.stdout
            );
        }
        assert_eq!(status["Threads"], "1");
    }
}

// ---------------------------------------------------------------------------------------
// 3. As PID 2 under an init (docker --init, ECS initProcessEnabled: tini)
// ---------------------------------------------------------------------------------------

fn tini() -> PathBuf {
    tool("tini", "apt-get install -y tini")
}

#[test]
fn under_tini_the_gate_is_pid_2_hands_over_and_the_exit_code_propagates() {
    let emu = Emulator::start(&[]);
    let tini = tini();
    let mut gate = in_pid_namespace(&emu, &[tini.to_str().unwrap(), "--"]);
    let live = gate
        .args([
            "--",
            "sh",
            "-c",
            "echo \"workload $$ $PPID $MPGATE_ENTITLEMENT\"; exit 42",
        ])
        .spawn();
    let done = live.wait();
    done.expect(42);
    assert_eq!(done.stdout, "workload 2 1 verified\n");
    assert_eq!(emu.calls().len(), 1);

    // docker stop / ECS StopTask signal PID 1 (tini), which forwards to the workload.
    let mut gate = in_pid_namespace(&emu, &[tini.to_str().unwrap(), "--"]);
    let mut live = traps_signals(&mut gate).spawn();
    assert_eq!(live.next_line("ready"), "ready 2 verified");
    let init = only_child(live.pid());
    send(init, libc::SIGTERM);
    let done = live.wait();
    done.expect(7);
    assert_eq!(done.stdout, "ready 2 verified\ngot TERM\n");
}

#[test]
fn under_tini_a_signal_to_pid_1_ends_the_gate_waiting_on_the_network() {
    let emu = Emulator::start(&["--fault", "hang"]);
    let tini = tini();
    for (n, (signal, name, code)) in SIGNALS.into_iter().enumerate() {
        reset_reports(&emu);
        let mut gate = in_pid_namespace(&emu, &[tini.to_str().unwrap(), "--"]);
        hanging_gate(&mut gate, &emu);
        let live = gate.args(["--", "sh", "-c", "echo ran"]).spawn();
        emu.wait_for_calls(n + 1);
        let init = only_child(live.pid());
        let tini_exe = std::fs::read_link(format!("/proc/{init}/exe")).unwrap();
        assert_eq!(tini_exe, std::fs::canonicalize(&tini).unwrap());
        let gate_pid = only_child(init);
        assert_is_gate_with_ns_pid(gate_pid, 2);
        assert_catches_the_stop_signals(gate_pid);
        let signalled = Instant::now();
        send(init, signal);
        let done = live.wait();
        assert_interrupted(&done, signalled, name, code, &emu);
    }
}

// ---------------------------------------------------------------------------------------
// 4. Nothing of the gate survives into the workload
// ---------------------------------------------------------------------------------------

/// The workload describes itself with shell builtins (no child of its own while it looks):
/// its children, its status, then its open descriptors as listed by a child `ls`. (Its
/// signal mask is checked with `cat` as the workload instead: dash blocks signals around its
/// own forks, so a child would see a transient mask.)
const INSPECT: &str = r#"read -r kids < /proc/$$/task/$$/children
echo "children=[$kids]"
while read -r line; do
  case $line in Pid:*|PPid:*|Threads:*|SigIgn:*) echo "$line";; esac
done < /proc/$$/status
ls -l /proc/$$/fd"#;

/// The inspected workload: its children, status fields and open descriptors (fd -> target).
struct Inspection {
    children: String,
    status: BTreeMap<String, String>,
    fds: BTreeMap<u32, String>,
}

fn inspect(stdout: &str) -> Inspection {
    let mut children = None;
    let mut status = BTreeMap::new();
    let mut fds = BTreeMap::new();
    for line in stdout.lines() {
        if let Some(kids) = line.strip_prefix("children=") {
            children = Some(kids.to_string());
        } else if let Some((_, link)) = line.split_once(" -> ") {
            let fd = line[..line.len() - link.len() - 4]
                .rsplit(' ')
                .next()
                .unwrap();
            fds.insert(fd.parse().unwrap(), link.to_string());
        } else if let Some((k, v)) = line.split_once(':') {
            status.insert(k.to_string(), v.trim().to_string());
        }
    }
    Inspection {
        children: children.unwrap_or_else(|| panic!("no children line in {stdout:?}")),
        status,
        fds,
    }
}

fn assert_nothing_leaked(stdout: &str, control: &Inspection, pid: &str, what: &str) {
    let seen = inspect(stdout);
    assert_eq!(
        seen.children, "[]",
        "{what}: the gate left a child or zombie"
    );
    assert_eq!(seen.status["Pid"], pid, "{what}: not the gate's PID");
    assert_eq!(seen.status["Threads"], "1", "{what}");
    assert_eq!(seen.status["SigIgn"], "0000000000000000", "{what}");
    for (fd, target) in &seen.fds {
        assert!(
            !target.starts_with("socket:") && !target.starts_with("anon_inode:"),
            "{what}: fd {fd} -> {target} leaked into the workload: {:?}",
            seen.fds
        );
    }
    assert_eq!(
        seen.fds.keys().collect::<Vec<_>>(),
        control.fds.keys().collect::<Vec<_>>(),
        "{what}: the workload's descriptors differ from the same script started without \
         mpgate: {:?} vs {:?}",
        seen.fds,
        control.fds
    );
    assert_eq!(seen.fds[&0], "/dev/null", "{what}");
    for fd in [1, 2] {
        assert!(seen.fds[&fd].starts_with("pipe:"), "{what}: {:?}", seen.fds);
    }
}

#[test]
fn no_descriptor_thread_or_child_of_the_gate_reaches_the_workload() {
    // The same script without mpgate, from the same harness: what any child inherits here.
    let dir = scratch("signals-control");
    let mut control = Gate::hermetic_with(Path::new("/bin/sh"), &dir);
    let live = control.args(["-c", INSPECT]).spawn();
    let done = live.wait();
    done.expect(0);
    let control = inspect(&done.stdout);
    assert_eq!(control.children, "[]");
    for fd in [0, 1, 2] {
        assert!(control.fds.contains_key(&fd), "{:?}", control.fds);
    }

    // HTTP to 127.0.0.1, and HTTPS to a host name (DNS on a blocking thread, TLS, the CA
    // file), each with the result file and the termination log configured.
    let plain = Emulator::start(&[]);
    let tls = Emulator::start(&["--tls"]);
    let tls_url = tls.url.replace("127.0.0.1", "localhost");
    let cases: [(&str, &Emulator, bool); 4] = [
        ("http", &plain, false),
        ("https via localhost", &tls, false),
        ("http as PID 1", &plain, true),
        ("https via localhost as PID 1", &tls, true),
    ];
    for (what, emu, as_pid_1) in cases {
        let result = emu.dir.join(format!("result-{}.json", as_pid_1));
        let _ = std::fs::remove_file(&result);
        let mut gate = if as_pid_1 {
            in_pid_namespace(emu, &[])
        } else {
            emu.gate()
        };
        gate.env("MPGATE_RESULT_FILE", &result)
            .env("MPGATE_TERMINATION_LOG", emu.dir.join("termination-log"));
        if let Some(ca) = &emu.ca_file {
            gate.env("SSL_CERT_FILE", ca)
                .env("AWS_ENDPOINT_URL_MARKETPLACE_METERING", &tls_url);
        }
        let live = gate.args(["--", "sh", "-c", INSPECT]).spawn();
        let done = live.wait();
        done.expect(0);
        let pid = if as_pid_1 {
            "1".to_string()
        } else {
            done.pid.to_string()
        };
        assert_nothing_leaked(&done.stdout, &control, &pid, what);
        let r = result_file(&result);
        assert_eq!(r["outcome"], "verified", "{what}: {r}");
        assert!(
            !emu.dir.join("termination-log").exists(),
            "{what}: a termination log was written on success"
        );
    }
    assert_eq!(plain.calls().len(), 2);
    assert_eq!(tls.calls().len(), 2);
}
