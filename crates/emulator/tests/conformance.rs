//! Conformance of `mpgate-emulator` with botocore's own model of the Metering service:
//! runs tests/conformance/boto3_conformance.py (boto3 `register_usage`) against emulators.
//! Needs python3 with boto3 (`pip install boto3`); fails, never skips, without them.

use mpgate_testkit::ready;

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_mpgate-emulator");
const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/conformance/boto3_conformance.py"
);
const STARTUP: Duration = Duration::from_secs(60);
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);
const ROTATION: &str = "1700000000";

struct Emu {
    child: Child,
    ready: Value,
}

impl Emu {
    fn start(name: &str, args: &[&str]) -> Emu {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let log = File::create(dir.join(format!("conformance-{name}.stderr"))).unwrap();
        let mut child = Command::new(BIN)
            .arg("serve")
            .arg("--key-dir")
            .arg(dir.join("emulator-keys"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn mpgate-emulator");
        let ready = ready::ready_line(&mut child, name, STARTUP);
        Emu { child, ready }
    }

    fn url(&self) -> &str {
        self.ready["url"].as_str().unwrap()
    }
}

impl Drop for Emu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn boto3_sees_the_emulator_as_the_metering_service() {
    let faults = [
        ("not-entitled", "CustomerNotEntitledException"),
        ("platform-not-supported", "PlatformNotSupportedException"),
        ("invalid-product-code", "InvalidProductCodeException"),
        ("invalid-region", "InvalidRegionException"),
        (
            "invalid-public-key-version",
            "InvalidPublicKeyVersionException",
        ),
        ("disabled-api", "DisabledApiException"),
        ("throttle", "ThrottlingException"),
        ("internal-error", "InternalServiceErrorException"),
    ];
    let normal = Emu::start("success", &["--rotation-timestamp", ROTATION]);
    let faulty: Vec<(Emu, &str)> = faults
        .iter()
        .map(|(fault, name)| (Emu::start(fault, &["--fault", fault]), *name))
        .collect();

    let mut cmd = Command::new("python3");
    cmd.arg(SCRIPT)
        .args(["--region", normal.ready["region"].as_str().unwrap()])
        .args([
            "--product-code",
            normal.ready["productCode"].as_str().unwrap(),
        ])
        .args([
            "--key-version",
            &normal.ready["publicKeyVersion"].to_string(),
        ])
        .args(["--rotation-timestamp", ROTATION])
        .arg("--case")
        .arg(format!("success={}", normal.url()));
    for (emu, name) in &faulty {
        cmd.arg("--case").arg(format!("{name}={}", emu.url()));
    }
    // Loopback only: keep any proxy settings and ambient AWS config away from boto3.
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "AWS_PROFILE",
        "AWS_CONFIG_FILE",
        "AWS_SHARED_CREDENTIALS_FILE",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_MARKETPLACE_METERING",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("NO_PROXY", "127.0.0.1,localhost")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => panic!("cannot run python3 ({e}): install Python 3, then `pip install boto3`"),
    };
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + SCRIPT_TIMEOUT;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("boto3_conformance.py did not finish within {SCRIPT_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    println!("{out}");
    eprintln!("{err}");
    match status.code() {
        Some(0) => {}
        Some(3) => panic!("boto3 is missing for python3: run `pip install boto3`\n{err}"),
        _ => panic!("boto3 conformance failed ({status}):\n{out}\n{err}"),
    }
    assert!(out.contains("all checks passed"), "{out}");
    // Every modelled error was exercised.
    for (_, name) in faults {
        assert!(
            out.contains(&format!("ok   fault -> client.exceptions.{name}")),
            "{name} not checked:\n{out}"
        );
    }
}
