//! Conformance of `mpgate-emulator` with botocore's own model of the Metering service:
//! runs tests/conformance/boto3_conformance.py (boto3 `register_usage`) against emulators.
//! Needs python3 with boto3 (`pip install boto3`); fails, never skips, without them.

use mpgate_testkit::{Emulator, Live};

use std::process::Command;
use std::time::Duration;

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/conformance/boto3_conformance.py"
);
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);
const ROTATION: &str = "1700000000";

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
    let normal = Emulator::start_with_shared_keys(&["--rotation-timestamp", ROTATION]);
    let faulty: Vec<(Emulator, &str)> = faults
        .iter()
        .map(|(fault, name)| (Emulator::start_with_shared_keys(&["--fault", fault]), *name))
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
        .arg(format!("success={}", normal.url));
    for (emu, name) in &faulty {
        cmd.arg("--case").arg(format!("{name}={}", emu.url));
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
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let mut script = match Live::try_spawn(&mut cmd, SCRIPT_TIMEOUT) {
        Ok(live) => live,
        Err(e) => panic!("cannot run python3 ({e}): install Python 3, then `pip install boto3`"),
    };
    let done = script.finish();
    let (status, out, err) = (done.status, done.stdout, done.stderr);
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
