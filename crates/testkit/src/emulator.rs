//! The emulator wrapper: `mpgate-emulator serve` with flags, its ready line and `--record` file.
//!
//! Each emulator runs in a scratch directory of its own and is killed when dropped. It knows
//! the temporary test credentials below (`--credentials`), as a task role's: the emulator
//! verifies SigV4, so a client must sign with a pair it knows.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::live::Guard;
use crate::wait::{poll_until, wait_bounded};
use crate::{emulator_exe, ready, scratch, target_tmpdir, CHILD_LIMIT};

/// Bound on an emulator's start: generating its RSA keys on a loaded 2-core machine.
pub const READY_LIMIT: Duration = Duration::from_secs(60);

/// The temporary test credentials every [`Emulator`] knows, shaped like a task role's (an
/// `ASIA` key id with a session token). The secret and token are distinctive so that tests can
/// search logs for them.
pub const ACCESS_KEY_ID: &str = "ASIAMPGATETESTKEY123";
pub const SECRET_ACCESS_KEY: &str = "mpgateTestSecretKeyDoNotLogMe0123456789ab";
pub const SESSION_TOKEN: &str = "mpgateTestSessionTokenDoNotLogMe9876543210";

/// The `--credentials` value of the test pair.
pub fn test_credentials() -> String {
    format!("{ACCESS_KEY_ID}:{SECRET_ACCESS_KEY}:{SESSION_TOKEN}")
}

/// A running emulator; killed when dropped.
pub struct Emulator {
    guard: Guard,
    /// The whole ready line, for what the fields below leave out.
    pub ready: Value,
    /// `http://127.0.0.1:PORT`, or `https://` with `--tls`.
    pub url: String,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    pub region: String,
    pub product_code: String,
    /// License Manager: the product SKU the emulator sells (`--product-sku`).
    pub product_sku: String,
    /// License Manager: the ARN of that license (GetLicenseUsage's `LicenseArn`).
    pub license_arn: String,
    pub public_key_file: PathBuf,
    /// The test CA's certificate, with `--tls`.
    pub ca_file: Option<PathBuf>,
    /// The `--record` file: one JSON line per call received.
    pub record: PathBuf,
    /// This emulator's scratch directory (its keys unless shared, record and stderr log), free
    /// for the test's own files too.
    pub dir: PathBuf,
}

/// One key directory for all the emulator's own tests (both of its test binaries), so that
/// its RSA keys are generated once; the gate's tests use a fresh one per emulator instead.
pub fn shared_key_dir() -> PathBuf {
    target_tmpdir().join("emulator-keys")
}

impl Emulator {
    /// `serve` with `flags` (after `--credentials` with the test pair, so `flags` may name
    /// more pairs) and fresh keys of its own.
    pub fn start(flags: &[&str]) -> Emulator {
        let dir = scratch("emu");
        Emulator::serve(&dir.join("keys"), dir, flags)
    }

    /// `serve` with `flags` and the keys in [`shared_key_dir`].
    pub fn start_with_shared_keys(flags: &[&str]) -> Emulator {
        Emulator::serve(&shared_key_dir(), scratch("emu"), flags)
    }

    fn serve(key_dir: &Path, dir: PathBuf, flags: &[&str]) -> Emulator {
        let record = dir.join("record.jsonl");
        let log = dir.join("emulator.stderr");
        let stderr = std::fs::File::create(&log)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        let child = Command::new(emulator_exe())
            .arg("serve")
            .arg("--key-dir")
            .arg(key_dir)
            .arg("--record")
            .arg(&record)
            .arg("--credentials")
            .arg(test_credentials())
            .args(flags)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start mpgate-emulator");
        // Guarded before anything can fail, so that no emulator outlives its test.
        let mut guard = Guard::new(child);
        let name = format!("{flags:?} (stderr in {})", log.display());
        let ready = ready::ready_line(&mut guard.child, &name, READY_LIMIT);
        let field = |key: &str| -> String {
            ready[key]
                .as_str()
                .unwrap_or_else(|| panic!("emulator {name}: no {key} in the ready line {ready}"))
                .to_string()
        };
        let url = field("url");
        let addr = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
            .unwrap_or_else(|| panic!("emulator {name}: url {url} is not http(s)"))
            .trim_end_matches('/')
            .to_string();
        Emulator {
            region: field("region"),
            product_code: field("productCode"),
            product_sku: field("productSku"),
            license_arn: field("licenseArn"),
            public_key_file: PathBuf::from(field("publicKeyFile")),
            ca_file: ready["caFile"].as_str().map(PathBuf::from),
            guard,
            ready,
            url,
            addr,
            record,
            dir,
        }
    }

    /// The port the emulator listens on.
    pub fn port(&self) -> u16 {
        let port = self.addr.rsplit(':').next().unwrap_or_default();
        port.parse()
            .unwrap_or_else(|e| panic!("no port in {} ({e})", self.addr))
    }

    /// The public key (PEM) of key version `version`.
    pub fn public_pem(&self, version: u32) -> Vec<u8> {
        let file = self.ready["publicKeyFiles"][version.to_string()]
            .as_str()
            .unwrap_or_else(|| panic!("no public key version {version} in {}", self.ready));
        std::fs::read(file).unwrap_or_else(|e| panic!("cannot read {file}: {e}"))
    }

    /// The calls the emulator has received so far. The record file exists from the start
    /// (the emulator creates it before its ready line), so a missing one fails the test rather
    /// than read as "no call".
    pub fn calls(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_else(|e| panic!("cannot read the record {}: {e}", self.record.display()))
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("record line is not JSON ({e}): {l:?}"))
            })
            .collect()
    }

    /// Waits (bounded by [`CHILD_LIMIT`]) until at least `n` calls have arrived; returns them.
    /// The emulator writes a call's line before it answers.
    pub fn wait_for_calls(&self, n: usize) -> Vec<Value> {
        poll_until(Instant::now() + CHILD_LIMIT, || {
            let calls = self.calls();
            (calls.len() >= n).then_some(calls)
        })
        .unwrap_or_else(|| {
            panic!(
                "the emulator received {} of {n} call(s) within {CHILD_LIMIT:?}",
                self.calls().len()
            )
        })
    }

    /// Units of counted entitlement `name` held now, from GetLicenseUsage (a recorded call:
    /// its record line's `target` is `AWSLicenseManager.GetLicenseUsage`).
    pub fn held(&self, name: &str) -> u64 {
        let usage = crate::license::call(
            &self.addr,
            "GetLicenseUsage",
            &serde_json::json!({ "LicenseArn": self.license_arn }),
        )
        .ok("GetLicenseUsage");
        crate::license::consumed(&usage, name)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no usage of {name}: {usage}"))
    }

    /// The record lines of License Manager calls that changed the seat book (`processed`:
    /// a seat taken, extended or returned), whether their answers arrived or not.
    pub fn processed_calls(&self) -> Vec<Value> {
        self.calls()
            .into_iter()
            .filter(|c| c["processed"] == true)
            .collect()
    }

    pub fn pid(&self) -> u32 {
        self.guard.child.id()
    }

    /// Waits for the emulator to exit (after the test has signalled it), bounded by `limit`.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let status = wait_bounded(&mut self.guard.child, Instant::now(), limit, "the emulator");
        self.guard.reaped = true;
        status
    }
}
