//! Test harness: the real `mpgate` binary against the real `mpgate-emulator` on loopback.
#![allow(dead_code)]

pub use mpgate_testkit::ready;

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Every child process is bounded by this; a test that hits it fails.
pub const CHILD_LIMIT: Duration = Duration::from_secs(30);

pub const MPGATE: &str = env!("CARGO_BIN_EXE_mpgate");

/// A private scratch directory per test.
pub fn scratch(name: &str) -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "{name}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A running emulator; killed when dropped.
pub struct Emulator {
    child: Child,
    pub url: String,
    pub region: String,
    pub product_code: String,
    pub public_key_file: PathBuf,
    /// The test CA's certificate, with `--tls`.
    pub ca_file: Option<PathBuf>,
    pub record: PathBuf,
    pub dir: PathBuf,
}

impl Emulator {
    pub fn start(flags: &[&str]) -> Emulator {
        let dir = scratch("emu");
        let record = dir.join("record.jsonl");
        let mut child = Command::new(mpgate_testkit::emulator_exe())
            .arg("serve")
            .arg("--key-dir")
            .arg(dir.join("keys"))
            .arg("--record")
            .arg(&record)
            .args(flags)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mpgate-emulator");
        let ready = ready::ready_line(&mut child, &format!("{flags:?}"), CHILD_LIMIT);
        Emulator {
            child,
            url: ready["url"].as_str().unwrap().to_string(),
            region: ready["region"].as_str().unwrap().to_string(),
            product_code: ready["productCode"].as_str().unwrap().to_string(),
            public_key_file: PathBuf::from(ready["publicKeyFile"].as_str().unwrap()),
            ca_file: ready["caFile"].as_str().map(PathBuf::from),
            record,
            dir,
        }
    }

    /// The port the emulator listens on.
    pub fn port(&self) -> u16 {
        self.url
            .rsplit(':')
            .next()
            .unwrap()
            .trim_end_matches('/')
            .parse()
            .unwrap()
    }

    /// The RegisterUsage calls the emulator has received so far.
    pub fn calls(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Waits (bounded) until at least `n` calls have arrived.
    pub fn wait_for_calls(&self, n: usize) {
        let start = Instant::now();
        while self.calls().len() < n {
            assert!(
                start.elapsed() < CHILD_LIMIT,
                "the emulator never received {n} call(s)"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A gate configured to use this emulator, with a clean, hermetic environment.
    pub fn gate(&self) -> Gate {
        self.gate_with(Path::new(MPGATE))
    }

    /// [`Emulator::gate`] running another mpgate binary (a pinned build).
    pub fn gate_with(&self, binary: &Path) -> Gate {
        let mut gate = Gate::hermetic_with(binary, &self.dir);
        gate.env("AWS_ENDPOINT_URL_MARKETPLACE_METERING", &self.url)
            .env("AWS_REGION", &self.region)
            .env("MPGATE_PRODUCT_CODE", &self.product_code)
            .env("MPGATE_PUBLIC_KEY_FILE", &self.public_key_file);
        gate
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub const ACCESS_KEY_ID: &str = "AKIAMPGATETESTKEY123";
pub const SECRET_ACCESS_KEY: &str = "mpgateTestSecretKeyDoNotLogMe0123456789ab";
pub const SESSION_TOKEN: &str = "mpgateTestSessionTokenDoNotLogMe9876543210";

/// An `mpgate` command line under construction.
pub struct Gate {
    cmd: Command,
    pub dir: PathBuf,
}

impl Gate {
    /// No inherited AWS or mpgate settings, IMDS off, no profile files: only loopback traffic.
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

    pub fn env(&mut self, k: &str, v: impl AsRef<std::ffi::OsStr>) -> &mut Self {
        self.cmd.env(k, v);
        self
    }

    pub fn env_remove(&mut self, k: &str) -> &mut Self {
        self.cmd.env_remove(k);
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<std::ffi::OsStr>>(
        &mut self,
        args: I,
    ) -> &mut Self {
        self.cmd.args(args);
        self
    }

    pub fn spawn(&mut self) -> Running {
        Running {
            child: self.cmd.spawn().expect("start mpgate"),
            started: Instant::now(),
        }
    }

    pub fn run(&mut self) -> Outcome {
        self.spawn().wait()
    }
}

pub struct Running {
    pub child: Child,
    pub started: Instant,
}

impl Running {
    pub fn signal(&self, signal: i32) {
        // SAFETY: sending a signal to our own child process.
        let rc = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// Waits, bounded by CHILD_LIMIT, and collects the output.
    pub fn wait(mut self) -> Outcome {
        let pid = self.child.id();
        let mut stdout = self.child.stdout.take().unwrap();
        let mut stderr = self.child.stderr.take().unwrap();
        let out_thread = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stdout.read_to_string(&mut s);
            s
        });
        let err_thread = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        // Reaped with wait4 rather than try_wait for the child's own resource usage.
        let (status, usage) = loop {
            let mut status = 0;
            // SAFETY: rusage is plain data; wait4 fills it in for our own child.
            let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: wait4 on our own child's pid with valid out-pointers.
            let rc = unsafe { libc::wait4(pid as i32, &mut status, libc::WNOHANG, &mut usage) };
            if rc == pid as i32 {
                break (ExitStatus::from_raw(status), usage);
            }
            assert_eq!(rc, 0, "wait4: {}", std::io::Error::last_os_error());
            if self.started.elapsed() > CHILD_LIMIT {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("mpgate did not finish within {CHILD_LIMIT:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let elapsed = self.started.elapsed();
        Outcome {
            status,
            stdout: out_thread.join().unwrap(),
            stderr: err_thread.join().unwrap(),
            elapsed,
            pid,
            // Linux reports ru_maxrss in KiB.
            max_rss_kib: usage.ru_maxrss,
        }
    }
}

#[derive(Debug)]
pub struct Outcome {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
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

    /// Asserts the exit code, showing stderr when it differs.
    pub fn expect(&self, code: i32) -> &Self {
        assert_eq!(
            self.status.code(),
            Some(code),
            "unexpected exit; stderr:\n{}",
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

    /// The final error message (the last ERROR line).
    pub fn error_message(&self) -> String {
        self.log_lines()
            .into_iter()
            .rev()
            .find(|l| l["level"] == "ERROR")
            .map(|l| l["message"].as_str().unwrap_or_default().to_string())
            .unwrap_or_else(|| panic!("no ERROR line in stderr:\n{}", self.stderr))
    }
}

pub fn os(s: &str) -> OsString {
    OsString::from(s)
}
