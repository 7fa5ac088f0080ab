//! The gate's own test helpers: the `mpgate` command line and how a run of it ended.
//!
//! `Gate` builds the command line (hermetic, or configured for an emulator), `Running` and
//! `Outcome` wait for it and parse its log. The generic helpers come from `mpgate_testkit`.
// Each test binary compiles this module and uses only a part of it.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use mpgate_testkit::{Emulator, Live, CHILD_LIMIT};
use serde_json::Value;

pub const MPGATE: &str = env!("CARGO_BIN_EXE_mpgate");

/// The WARN an unpinned gate logs once at start.
pub const UNPINNED: &str = "unpinned build: it trusts its environment; sell pinned builds";

/// The temporary test credentials every test emulator knows (a task role's, as on ECS/EKS):
/// the emulator verifies SigV4 and answers long-term keys with PlatformNotSupportedException.
pub use mpgate_testkit::emulator::{ACCESS_KEY_ID, SECRET_ACCESS_KEY, SESSION_TOKEN};

/// Gates configured for an emulator (the emulator itself knows nothing of mpgate).
pub trait EmulatorGate {
    /// A gate configured to use this emulator, with a clean, hermetic environment.
    fn gate(&self) -> Gate;
    /// [`EmulatorGate::gate`] running another binary (a pinned build, or a wrapper such as
    /// `unshare` or `env` that runs mpgate in turn).
    fn gate_with(&self, binary: &Path) -> Gate;
    /// A gate for contract pricing against this emulator's License Manager, checking out
    /// `entitlements` (MPGATE_ENTITLEMENTS) of its product SKU.
    fn contract_gate(&self, entitlements: &str) -> Gate;
    /// A gate for usage pricing (MeterUsage) of this emulator's product code, metering
    /// `dimensions` (MPGATE_DIMENSIONS, comma-separated).
    fn usage_gate(&self, dimensions: &str) -> Gate;
}

impl EmulatorGate for Emulator {
    fn gate(&self) -> Gate {
        self.gate_with(Path::new(MPGATE))
    }

    fn gate_with(&self, binary: &Path) -> Gate {
        let mut gate = Gate::hermetic_with(binary, &self.dir);
        gate.env("AWS_ENDPOINT_URL_MARKETPLACE_METERING", &self.url)
            .env("AWS_REGION", &self.region)
            .env("MPGATE_PRODUCT_CODE", &self.product_code)
            .env("MPGATE_PUBLIC_KEY_FILE", &self.public_key_file);
        gate
    }

    fn contract_gate(&self, entitlements: &str) -> Gate {
        let mut gate = Gate::hermetic(&self.dir);
        gate.env("AWS_ENDPOINT_URL_LICENSE_MANAGER", &self.url)
            .env("AWS_REGION", &self.region)
            .env("MPGATE_PRICING", "contract")
            .env("MPGATE_PRODUCT_SKU", &self.product_sku)
            .env("MPGATE_ENTITLEMENTS", entitlements);
        gate
    }

    fn usage_gate(&self, dimensions: &str) -> Gate {
        let mut gate = Gate::hermetic(&self.dir);
        gate.env("AWS_ENDPOINT_URL_MARKETPLACE_METERING", &self.url)
            .env("AWS_REGION", &self.region)
            .env("MPGATE_PRICING", "usage")
            .env("MPGATE_PRODUCT_CODE", &self.product_code)
            .env("MPGATE_DIMENSIONS", dimensions);
        gate
    }
}

/// The MeterUsage calls the emulator received, in order (their record lines).
pub fn meter_calls(emu: &Emulator) -> Vec<Value> {
    emu.calls()
        .into_iter()
        .filter(|c| c["target"] == mpgate_testkit::meter_usage::TARGET)
        .collect()
}

/// Sends `signal` to `pid`, a process this test started (directly or inside its namespace).
pub fn send(pid: u32, signal: i32) {
    // SAFETY: kill(2) on a process of this test.
    let rc = unsafe { libc::kill(pid as libc::pid_t, signal) };
    assert_eq!(rc, 0, "kill({pid}, {signal}) failed");
}

/// An `mpgate` command line under construction.
pub struct Gate {
    cmd: Command,
    pub dir: PathBuf,
}

impl Gate {
    /// No inherited AWS or mpgate settings, IMDS off, no profile files: only loopback traffic.
    /// The credentials are the test emulators' temporary pair.
    pub fn hermetic(dir: &Path) -> Gate {
        Gate::hermetic_with(Path::new(MPGATE), dir)
    }

    pub fn hermetic_with(binary: &Path, dir: &Path) -> Gate {
        let mut cmd = Command::new(binary);
        cmd.env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
            )
            .env("HOME", dir)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
            .env("AWS_SESSION_TOKEN", SESSION_TOKEN)
            .env("MPGATE_TERMINATION_LOG", dir.join("termination-log"))
            .env("MPGATE_TIMEOUT", "10s")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Gate {
            cmd,
            dir: dir.to_path_buf(),
        }
    }

    pub fn env(&mut self, k: &str, v: impl AsRef<OsStr>) -> &mut Self {
        self.cmd.env(k, v);
        self
    }

    pub fn env_remove(&mut self, k: &str) -> &mut Self {
        self.cmd.env_remove(k);
        self
    }

    /// Runs `f` in the forked child just before the exec (e.g. to install a seccomp filter).
    pub fn pre_exec(
        &mut self,
        f: impl FnMut() -> std::io::Result<()> + Send + Sync + 'static,
    ) -> &mut Self {
        use std::os::unix::process::CommandExt;
        // SAFETY: callers pass only async-signal-safe work (prctl), as pre_exec requires.
        unsafe {
            self.cmd.pre_exec(f);
        }
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(&mut self, args: I) -> &mut Self {
        self.cmd.args(args);
        self
    }

    /// Starts the gate, bounded by [`CHILD_LIMIT`], its output drained from the start.
    pub fn spawn(&mut self) -> Running {
        self.spawn_for(CHILD_LIMIT)
    }

    /// [`Gate::spawn`] bounded by `limit`, for a run that outlasts [`CHILD_LIMIT`] by design
    /// (hours of a short metering clock).
    pub fn spawn_for(&mut self, limit: Duration) -> Running {
        Running {
            live: Live::spawn(&mut self.cmd, limit),
        }
    }

    pub fn run(&mut self) -> Outcome {
        self.spawn().wait()
    }
}

/// A running gate (or the wrapper that runs it); killed when dropped.
pub struct Running {
    live: Live,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.live.pid()
    }

    pub fn signal(&self, signal: i32) {
        send(self.pid(), signal);
    }

    /// Waits (bounded) for the next stdout line, e.g. a workload's "ready".
    pub fn next_line(&mut self, what: &str) -> String {
        self.live.next_line(what)
    }

    /// Waits, bounded by [`CHILD_LIMIT`], and collects the output.
    pub fn wait(mut self) -> Outcome {
        let pid = self.live.pid();
        // Reaped with wait4 rather than try_wait for the child's own resource usage.
        let (exit, usage) = self.live.finish_with(|_| wait4(pid));
        Outcome {
            status: exit.status,
            stdout: exit.stdout,
            stderr: exit.stderr,
            elapsed: exit.at.duration_since(self.live.started()),
            exited_at: exit.at,
            pid,
            // Linux reports ru_maxrss in KiB.
            max_rss_kib: usage.ru_maxrss,
        }
    }
}

/// Reaps child `pid` if it has exited, with its resource usage.
fn wait4(pid: u32) -> Option<(ExitStatus, libc::rusage)> {
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it in for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on our own child's pid with valid out-pointers.
    let rc = unsafe { libc::wait4(pid as i32, &mut status, libc::WNOHANG, &mut usage) };
    if rc == pid as i32 {
        return Some((ExitStatus::from_raw(status), usage));
    }
    assert_eq!(rc, 0, "wait4: {}", std::io::Error::last_os_error());
    None
}

#[derive(Debug)]
pub struct Outcome {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
    /// When the exit was seen (tests measure how long after a signal the gate ended).
    pub exited_at: Instant,
    pub pid: u32,
    /// The gate's own peak RSS (it survives exec, so with a workload it is the larger of both).
    pub max_rss_kib: i64,
}

impl Outcome {
    pub fn code(&self) -> i32 {
        self.status
            .code()
            .unwrap_or_else(|| panic!("killed by a signal: {self:?}"))
    }

    /// Asserts the exit code, showing the output when it differs.
    pub fn expect(&self, code: i32) -> &Self {
        assert_eq!(
            self.status.code(),
            Some(code),
            "unexpected exit ({}); stdout {:?}; stderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        assert!(
            !self.stderr.contains("panicked"),
            "mpgate panicked:\n{}",
            self.stderr
        );
        self
    }

    /// Asserts the exit code and that the final error message contains `text`.
    pub fn expect_error(&self, code: i32, text: &str) -> &Self {
        self.expect(code);
        let message = self.error_message();
        assert!(message.contains(text), "no {text:?} in: {message}");
        self
    }

    /// The stderr lines as JSON objects (mpgate logs JSON lines when stderr is not a terminal).
    pub fn log_lines(&self) -> Vec<Value> {
        self.stderr
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("stderr line is not JSON ({e}): {l:?}"))
            })
            .collect()
    }

    /// The WARN lines but the one every unpinned build logs at start (`UNPINNED`, tested on
    /// its own).
    pub fn warnings(&self) -> Vec<Value> {
        self.log_lines()
            .into_iter()
            .filter(|l| l["level"] == "WARN" && l["message"] != UNPINNED)
            .collect()
    }

    /// The final error message (the last ERROR line).
    pub fn error_message(&self) -> String {
        let line = self
            .log_lines()
            .into_iter()
            .rev()
            .find(|l| l["level"] == "ERROR")
            .unwrap_or_else(|| panic!("no ERROR line in stderr:\n{}", self.stderr));
        message_of(&line)
    }

    /// The one error message among mpgate's JSON log lines, when stderr may also hold other
    /// lines (an init's or a wrapper's).
    pub fn only_error_message(&self) -> String {
        let errors: Vec<String> = self
            .stderr
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| l["level"] == "ERROR")
            .map(|l| message_of(&l))
            .collect();
        assert_eq!(errors.len(), 1, "one ERROR line expected:\n{}", self.stderr);
        errors[0].clone()
    }
}

/// A log line's message; a line without one fails the test rather than read as empty.
fn message_of(line: &Value) -> String {
    line["message"]
        .as_str()
        .unwrap_or_else(|| panic!("log line without a message: {line}"))
        .to_string()
}

/// Asserts that `out`'s peak RSS is at most `extra_kib` above that of an ordinary entitled run
/// made just before. A debug build's resident size moves with the page cache (a freshly
/// linked binary maps more of itself per fault), so an absolute bound is noise; a body
/// buffered in memory shows as the difference.
pub fn assert_memory_bounded(out: &Outcome, extra_kib: i64, what: &str) {
    let control = Emulator::start(&[]);
    let ordinary = control.gate().run();
    ordinary.expect(0);
    let (peak, baseline) = (out.max_rss_kib, ordinary.max_rss_kib);
    assert!(
        peak > 0 && peak <= baseline + extra_kib,
        "{what}: peak RSS {peak} KiB, an ordinary run's {baseline} KiB (at most {extra_kib} KiB more allowed)"
    );
}

/// The License Manager calls the emulator received, as (operation, record line).
pub fn license_calls(emu: &Emulator) -> Vec<(String, Value)> {
    emu.calls()
        .into_iter()
        .filter_map(|c| {
            let op = c["target"].as_str()?.strip_prefix("AWSLicenseManager.")?;
            Some((op.to_string(), c))
        })
        .collect()
}

/// `ConsumedValue` of `name` now, from GetLicenseUsage.
pub fn in_use(emu: &Emulator, name: &str) -> String {
    let usage = mpgate_testkit::license::call(
        &emu.addr,
        "GetLicenseUsage",
        &serde_json::json!({ "LicenseArn": emu.license_arn }),
    )
    .ok("GetLicenseUsage");
    mpgate_testkit::license::consumed(&usage, name)
        .unwrap_or_else(|| panic!("no usage of {name}: {usage}"))
}

/// The absolute path of a tool on PATH; fails (never skips) with the way to install it.
pub fn tool(name: &str, install: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("`{name}` is not installed; these tests need it: {install}"))
}

/// `unshare` options that make the next program PID 1 of a new PID namespace (with its own
/// /proc), killed with it. As root plain `--pid` works; otherwise the PID namespace needs a
/// user namespace too (unprivileged user namespaces). When neither works the tests fail.
pub fn pid_namespace() -> &'static [&'static str] {
    static ARGS: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    ARGS.get_or_init(|| {
        let unshare = tool("unshare", "apt-get install -y util-linux");
        let plain = ["--pid", "--fork", "--mount-proc", "--kill-child"];
        let user = [
            "--user",
            "--map-root-user",
            "--pid",
            "--fork",
            "--mount-proc",
            "--kill-child",
        ];
        let mut errors = String::new();
        for candidate in [&plain[..], &user[..]] {
            let out = mpgate_testkit::run_bounded(
                std::process::Command::new(&unshare)
                    .args(candidate)
                    .args(["sh", "-c", "echo $$"]),
                CHILD_LIMIT,
            );
            if out.status.success() && out.stdout.trim() == "1" {
                return candidate.to_vec();
            }
            errors.push_str(&format!(
                "\n  unshare {}: {}, {}",
                candidate.join(" "),
                out.status,
                out.stderr.trim()
            ));
        }
        panic!(
            "cannot create a PID namespace, so mpgate cannot be tested as PID 1. Run the tests \
             as root (CAP_SYS_ADMIN, as CI does) or enable unprivileged user namespaces \
             (sysctl kernel.unprivileged_userns_clone=1, user.max_user_namespaces > 0):{errors}"
        )
    })
}

// Usage pricing: an emulator with short hours, and what it billed.

/// An emulator with two-second hours selling `nodes` and `gb`, billing into `dir/usage.jsonl`.
pub fn usage_emulator(dir: &Path, extra: &[&str]) -> Emulator {
    let usage = dir.join("usage.jsonl");
    let usage = usage.to_str().unwrap();
    let mut flags = vec![
        "--metering-hour",
        "2s",
        "--dimension",
        "nodes",
        "--dimension",
        "gb",
        "--usage-file",
        usage,
    ];
    flags.extend_from_slice(extra);
    Emulator::start(&flags)
}

/// What the emulator billed: its usage file's records (a line still being written, with no
/// newline yet, is not read: tests poll the file while the emulator writes).
pub fn billed(dir: &Path) -> Vec<Value> {
    let path = dir.join("usage.jsonl");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    complete
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Asserts one record per caller, dimension and hour; returns the total of each dimension.
pub fn totals(records: &[Value]) -> BTreeMap<String, u64> {
    let mut seen = BTreeSet::new();
    let mut totals = BTreeMap::new();
    for r in records {
        let key = (
            r["caller"].to_string(),
            r["dimension"].to_string(),
            r["hourStartMs"].to_string(),
        );
        assert!(
            seen.insert(key.clone()),
            "two records for {key:?}: {records:#?}"
        );
        *totals
            .entry(r["dimension"].as_str().unwrap().to_string())
            .or_insert(0) += r["quantity"].as_u64().unwrap();
    }
    totals
}
