//! Conformance of `mpgate-emulator` with botocore's own model of the Metering service:
//! runs tests/conformance/boto3_conformance.py (boto3 `register_usage`, the AWS CLI, PyJWT)
//! against emulators. The errors RegisterUsage raises and their statuses come from botocore's
//! model file; the faults from the emulator's `--list-faults`. Needs python3 with boto3, awscli,
//! PyJWT and cryptography (`pip install boto3 awscli PyJWT cryptography`); fails, never skips,
//! without them.

use mpgate_testkit::emulator::{test_credentials, ACCESS_KEY_ID};
use mpgate_testkit::faults::{LICENSE_FAULTS, PROCESSED_FAULTS, SERVICE_FAULTS};
use mpgate_testkit::meter_usage::{METER_FAULTS, METER_LOST_ANSWER_FAULTS, METER_NETWORK_FAULTS};
use mpgate_testkit::{emulator_exe, run_bounded, scratch, Emulator, Exit, Live};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/conformance/boto3_conformance.py"
);
const LICENSE_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/conformance/boto3_license_conformance.py"
);
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);
const ROTATION: &str = "1700000000";
const LONG_TERM: &str = "AKIAIOSFODNN7EXAMPLE:wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const EXPIRED: &str = "ASIAEXPIREDCONFORM00:expiredSecretConformance0123:expiredTokenConformance";

#[test]
fn boto3_the_aws_cli_and_pyjwt_see_the_emulator_as_the_metering_service() {
    // The emulator's own list of faults: the script checks botocore's model against it.
    let (faults_file, listing) = fault_listing(&scratch("conformance"));
    let service_faults: Vec<(String, String)> = listing
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|f| f["kind"] == "service-error")
        .map(|f| {
            (
                f["name"].as_str().unwrap().to_string(),
                f["errorType"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(!service_faults.is_empty());

    let normal = Emulator::start_with_shared_keys(&[
        "--rotation-timestamp",
        ROTATION,
        "--expiring-key-versions",
        "1",
    ]);
    let faulty: Vec<(Emulator, String)> = service_faults
        .iter()
        .map(|(fault, name)| {
            (
                Emulator::start_with_shared_keys(&["--fault", fault]),
                name.clone(),
            )
        })
        .collect();
    // The caller model, with no fault: a long-term key, a task in another region, an expired
    // session token; and a token no verifier may accept.
    let long_term = Emulator::start_with_shared_keys(&["--credentials", LONG_TERM]);
    let task_region = Emulator::start_with_shared_keys(&["--task-region", "eu-west-1"]);
    let expired = Emulator::start_with_shared_keys(&["--expired-credentials", EXPIRED]);
    let bad_token = Emulator::start_with_shared_keys(&["--fault", "token-wrong-key"]);
    // boto3 signs with the temporary pair the emulators know, as listed in their ready line.
    assert_eq!(normal.ready["credentials"][0]["accessKeyId"], ACCESS_KEY_ID);

    let mut cmd = python(SCRIPT);
    cmd.args(["--region", &normal.region])
        .args(["--product-code", &normal.product_code])
        .args([
            "--key-version",
            &normal.ready["publicKeyVersion"].to_string(),
        ])
        .arg("--public-key-file")
        .arg(&normal.public_key_file)
        .args(["--credentials", &test_credentials()])
        .arg("--faults")
        .arg(&faults_file)
        .args(["--rotation-timestamp", ROTATION])
        .arg("--case")
        .arg(format!("success={}", normal.url))
        .arg("--case")
        .arg(format!("long-term={LONG_TERM}={}", long_term.url))
        .arg("--case")
        .arg(format!("task-region={}", task_region.url))
        .arg("--case")
        .arg(format!("expired={EXPIRED}={}", expired.url))
        .arg("--case")
        .arg(format!("bad-token={}", bad_token.url));
    for (emu, name) in &faulty {
        cmd.arg("--case").arg(format!("{name}={}", emu.url));
    }
    let out = run_script(
        &mut cmd,
        "boto3 conformance",
        "boto3 awscli PyJWT cryptography",
    );
    assert!(out.contains("all checks passed"), "{out}");
    // Every service-error fault was exercised through boto3, modelled or not.
    for (_, name) in &service_faults {
        assert!(
            out.contains(&format!("ok   fault -> client.exceptions.{name}"))
                || out.contains(&format!("ok   fault -> {name} (not modelled)")),
            "{name} not checked:\n{out}"
        );
    }
    // The shared table says which of them botocore models: the script names those.
    for f in SERVICE_FAULTS {
        assert_eq!(
            out.contains(&format!(
                "ok   the emulator has a fault for {}",
                f.error_type
            )),
            f.modelled,
            "{}: the testkit table and botocore's model disagree:\n{out}",
            f.error_type
        );
    }
    for control in [
        "ok   boto3's signature (temporary credentials) is accepted",
        "ok   the AWS CLI's signature is accepted and its token verifies",
        "ok   PyJWT verifies the token",
        "ok   PyJWT refuses a token signed with another key",
        "ok   long-term key (an IAM user outside ECS/EKS) -> PlatformNotSupportedException",
        "ok   a task in another region -> InvalidRegionException",
        "ok   expired session token -> ExpiredTokenException",
    ] {
        assert!(out.contains(control), "no {control:?} in:\n{out}");
    }
}

#[test]
fn the_conformance_check_fails_when_the_emulator_lacks_a_modelled_error() {
    let dir = scratch("conformance-negative");
    let (_, listing) = fault_listing(&dir);
    let run = |faults: &str| {
        let file = dir.join("edited.jsonl");
        std::fs::write(&file, faults).unwrap();
        let pem = dir.join("unused.pem");
        std::fs::write(&pem, "").unwrap();
        let mut cmd = python(SCRIPT);
        cmd.args(["--region", "us-east-1", "--product-code", "prod-x"])
            .args(["--key-version", "1", "--credentials", "A:B:C"])
            .arg("--public-key-file")
            .arg(&pem)
            .arg("--faults")
            .arg(&file)
            .arg("--model-only");
        run_bounded(&mut cmd, SCRIPT_TIMEOUT)
    };
    // Control: the emulator's own list passes.
    let all = run(&listing);
    assert_eq!(all.status.code(), Some(0), "{}{}", all.stdout, all.stderr);
    // Without throttle, ThrottlingException has no fault; with another status, it differs.
    assert_fails(
        &run(&without_fault(&listing, "throttle")),
        "FAIL the emulator has a fault for ThrottlingException",
    );
    let wrong_status = listing.replace(
        r#""errorType":"ThrottlingException","kind":"service-error","name":"throttle","status":400"#,
        r#""errorType":"ThrottlingException","kind":"service-error","name":"throttle","status":429"#,
    );
    assert_ne!(wrong_status, listing, "the listing's shape changed");
    assert_fails(
        &run(&wrong_status),
        "FAIL ThrottlingException: the emulator's status is the model's (400)",
    );
}

/// `listing` without the lines of fault `name`.
fn without_fault(listing: &str, name: &str) -> String {
    let quoted = format!("\"{name}\"");
    listing
        .lines()
        .filter(|l| !l.contains(&quoted))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Asserts that a `--model-only` run on a doctored listing failed (exit 1) with `failure`.
fn assert_fails(out: &Exit, failure: &str) {
    assert_eq!(out.status.code(), Some(1), "{}", out.stdout);
    assert!(
        out.stdout.contains(failure),
        "no {failure:?} in:\n{}",
        out.stdout
    );
}

/// `python3 script`, its environment kept off any proxy and ambient AWS configuration (the
/// emulators are on loopback, the clients get their endpoint and keys as arguments).
fn python(script: &str) -> Command {
    let mut cmd = Command::new("python3");
    cmd.arg(script);
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
        "AWS_ENDPOINT_URL_LICENSE_MANAGER",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("NO_PROXY", "127.0.0.1,localhost")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("PYTHONDONTWRITEBYTECODE", "1");
    cmd
}

/// Runs a conformance script (`what`) to the end and returns its output; fails the test when
/// python3 cannot run, when the script lacks its packages (exit 3: `pip install {pip}`) or
/// when a check fails.
fn run_script(cmd: &mut Command, what: &str, pip: &str) -> String {
    let mut script = match Live::try_spawn(cmd, SCRIPT_TIMEOUT) {
        Ok(live) => live,
        Err(e) => panic!("cannot run python3 ({e}): install Python 3, then `pip install {pip}`"),
    };
    let done = script.finish();
    println!("{}", done.stdout);
    eprintln!("{}", done.stderr);
    match done.status.code() {
        Some(0) => {}
        Some(3) => panic!(
            "boto3 or PyJWT is missing for python3: run `pip install {pip}`\n{}",
            done.stderr
        ),
        _ => panic!(
            "{what} failed ({}):\n{}\n{}",
            done.status, done.stdout, done.stderr
        ),
    }
    done.stdout
}

/// `--list-faults`, written to a file of `dir` for the scripts.
fn fault_listing(dir: &Path) -> (PathBuf, String) {
    let listing = run_bounded(
        Command::new(emulator_exe()).arg("--list-faults"),
        Duration::from_secs(30),
    );
    assert!(listing.status.success(), "{}", listing.stderr);
    let file = dir.join("faults.jsonl");
    std::fs::write(&file, &listing.stdout).unwrap();
    (file, listing.stdout)
}

/// The License Manager script with the arguments every run needs, and a clean environment.
fn license_script(emu: &Emulator, faults: &Path) -> Command {
    let mut cmd = python(LICENSE_SCRIPT);
    cmd.args(["--region", &emu.region])
        .args(["--credentials", &test_credentials()])
        .arg("--faults")
        .arg(faults)
        .args(["--product-sku", &emu.product_sku])
        .args(["--license-arn", &emu.license_arn])
        .arg("--public-key-file")
        .arg(&emu.public_key_file);
    cmd
}

#[test]
fn boto3_sees_the_emulator_as_license_manager() {
    let dir = scratch("license-conformance");
    let (faults_file, listing) = fault_listing(&dir);
    let license_faults: Vec<Value> = listing
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|f| f["kind"] == "license")
        .collect();
    assert_eq!(license_faults.len(), LICENSE_FAULTS.len());
    let normal = Emulator::start_with_shared_keys(&[]);
    // One emulator per fault, the fault on every operation the listing names for it.
    let faulty: Vec<(Emulator, String)> = license_faults
        .iter()
        .map(|f| {
            let name = f["name"].as_str().unwrap().to_string();
            let specs: Vec<String> = f["operations"]
                .as_array()
                .unwrap()
                .iter()
                .map(|op| format!("{}={name}", op.as_str().unwrap()))
                .collect();
            let mut flags = Vec::new();
            for s in &specs {
                flags.extend(["--license-fault", s.as_str()]);
            }
            (Emulator::start_with_shared_keys(&flags), name)
        })
        .collect();
    // One emulator per fault that acts after the seat book, once on each of its operations.
    let processed: Vec<(Emulator, &str)> = PROCESSED_FAULTS
        .iter()
        .map(|f| {
            let specs: Vec<String> = f
                .operations
                .iter()
                .map(|op| format!("{op}={}*1", f.fault))
                .collect();
            let mut flags = Vec::new();
            for s in &specs {
                flags.extend(["--license-fault", s.as_str()]);
            }
            (Emulator::start_with_shared_keys(&flags), f.fault)
        })
        .collect();
    let mut cmd = license_script(&normal, &faults_file);
    cmd.args(["--success", &normal.url]);
    for (emu, name) in &faulty {
        cmd.args(["--fault", &format!("{name}={}", emu.url)]);
    }
    for (emu, name) in &processed {
        cmd.args(["--processed", &format!("{name}={}", emu.url)]);
    }
    let out = run_script(
        &mut cmd,
        "boto3 license conformance",
        "boto3 PyJWT cryptography",
    );
    assert!(out.contains("all checks passed"), "{out}");
    for f in LICENSE_FAULTS {
        for op in f.operations {
            let line = format!(
                "ok   {op} {} -> client.exceptions.{} ({})",
                f.fault, f.error_type, f.status
            );
            assert!(out.contains(&line), "no {line:?} in:\n{out}");
        }
    }
    for f in PROCESSED_FAULTS {
        for op in f.operations {
            let line = format!("ok   {op} {} -> ", f.fault);
            assert!(out.contains(&line), "no {line:?} in:\n{out}");
        }
        if f.kind == "license-lost-answer" {
            for effect in [
                "the lost checkout took its seats",
                "a retry with the same ClientToken gets the processed checkout",
                "the lost check-in returned the seats",
            ] {
                let line = format!("ok   {}: {effect}", f.fault);
                assert!(out.contains(&line), "no {line:?} in:\n{out}");
            }
        } else {
            let line = format!("ok   {}: the extension was processed", f.fault);
            assert!(out.contains(&line), "no {line:?} in:\n{out}");
        }
    }
    for control in [
        "ok   CheckoutLicense signed by boto3 (license-manager) succeeds",
        "ok   CheckoutLicense: IssuedAt is YYYY-MM-DDTHH:MM:SS without a zone",
        "ok   ExtendLicenseConsumption: Expiration is RFC 3339 with Z",
        "ok   PyJWT verifies the SignedToken (PS384, the emulator's key)",
        "ok   CheckInLicense releases the seats",
        "ok   RedirectException carries a Location",
    ] {
        assert!(out.contains(control), "no {control:?} in:\n{out}");
    }
}

#[test]
fn the_license_conformance_check_fails_when_the_listing_disagrees_with_the_model() {
    let dir = scratch("license-conformance-negative");
    let (_, listing) = fault_listing(&dir);
    let normal = Emulator::start_with_shared_keys(&[]);
    let run = |faults: &str| {
        let file = dir.join("edited.jsonl");
        std::fs::write(&file, faults).unwrap();
        let mut cmd = license_script(&normal, &file);
        cmd.arg("--model-only");
        run_bounded(&mut cmd, SCRIPT_TIMEOUT)
    };
    let all = run(&listing);
    assert_eq!(all.status.code(), Some(0), "{}{}", all.stdout, all.stderr);
    // Without conflict, CheckInLicense's ConflictException has no fault.
    assert_fails(
        &run(&without_fault(&listing, "conflict")),
        "FAIL the emulator has a fault for CheckInLicense's ConflictException",
    );
    // NoEntitlementsAllowedException is not an error of ExtendLicenseConsumption.
    let widened = listing.replace(
        r#""name":"no-entitlements-allowed","operations":["CheckoutLicense"]"#,
        r#""name":"no-entitlements-allowed","operations":["CheckoutLicense","ExtendLicenseConsumption"]"#,
    );
    assert_ne!(widened, listing, "the listing's shape changed");
    assert_fails(
        &run(&widened),
        "FAIL no-entitlements-allowed: NoEntitlementsAllowedException is what the model lists for CheckoutLicense, ExtendLicenseConsumption",
    );
}

const METER_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/conformance/boto3_meter_usage_conformance.py"
);

/// The MeterUsage script with the arguments every run needs.
fn meter_script(emu: &Emulator, faults: &Path) -> Command {
    let mut cmd = python(METER_SCRIPT);
    cmd.args(["--region", &emu.region])
        .args(["--product-code", &emu.product_code])
        .args(["--dimension", "nodes"])
        .args(["--credentials", &test_credentials()])
        .arg("--faults")
        .arg(faults);
    cmd
}

#[test]
fn boto3_sees_the_emulator_s_meter_usage_as_botocore_models_it() {
    let dir = scratch("meter-conformance");
    let (faults_file, listing) = fault_listing(&dir);
    let normal = Emulator::start_with_shared_keys(&[]);
    let long_term = Emulator::start_with_shared_keys(&["--credentials", LONG_TERM]);
    let task_region = Emulator::start_with_shared_keys(&["--task-region", "eu-west-1"]);
    let start = |flag: String| Emulator::start_with_shared_keys(&["--meter-fault", &flag]);
    let faulty: Vec<(Emulator, &str)> = METER_FAULTS
        .iter()
        .map(|f| (start(f.fault.to_string()), f.fault))
        .collect();
    let lost: Vec<(Emulator, &str)> = METER_LOST_ANSWER_FAULTS
        .iter()
        .map(|(f, _)| (start(format!("{f}*1")), *f))
        .collect();
    let network: Vec<(Emulator, &str)> = METER_NETWORK_FAULTS
        .iter()
        .map(|f| (start(f.to_string()), *f))
        .collect();
    let mut cmd = meter_script(&normal, &faults_file);
    cmd.args(["--success", &normal.url])
        .args(["--long-term", &format!("{LONG_TERM}={}", long_term.url)])
        .args(["--task-region", &task_region.url]);
    for (flag, emus) in [
        ("--fault", &faulty),
        ("--lost", &lost),
        ("--network", &network),
    ] {
        for (emu, name) in emus {
            cmd.args([flag, &format!("{name}={}", emu.url)]);
        }
    }
    let out = run_script(&mut cmd, "boto3 MeterUsage conformance", "boto3 awscli");
    assert!(out.contains("all checks passed"), "{out}");
    for f in METER_FAULTS {
        let class = if f.modelled {
            format!("client.exceptions.{}", f.error_type)
        } else {
            format!("{} (no class)", f.error_type)
        };
        let line = format!("ok   meter fault {} -> {class} ({})", f.fault, f.status);
        // Not in MeterUsage's model, but botocore knows the service's exception.
        let alt = format!(
            "ok   meter fault {} -> client.exceptions.{} ({})",
            f.fault, f.error_type, f.status
        );
        assert!(
            out.contains(&line) || (!f.modelled && out.contains(&alt)),
            "no {line:?} in:\n{out}"
        );
    }
    // A lost answer was billed once: the retry replays the record the lost call made.
    for (emu, name) in &lost {
        assert!(
            out.contains(&format!("ok   {name}: the retry gets a MeteringRecordId")),
            "{name}:\n{out}"
        );
        let calls = emu.wait_for_calls(2);
        assert_eq!(calls[0]["fault"], *name);
        assert_eq!(
            (calls[0]["recorded"].clone(), calls[1]["replayed"].clone()),
            (true.into(), true.into()),
            "{name}"
        );
        assert_eq!(
            calls[0]["meteringRecordId"], calls[1]["meteringRecordId"],
            "{name}"
        );
    }
    for control in [
        "ok   MeterUsage signed by boto3 succeeds",
        "ok   an identical repeat (another ClientToken from botocore) gets the same MeteringRecordId",
        "ok   DryRun answers MeteringRecordId DryRunOperation",
        "ok   the AWS CLI's meter-usage is accepted",
        "ok   long-term key (an IAM user outside ECS/EKS) -> client.exceptions.PlatformNotSupportedException",
        "ok   a task in another region -> client.exceptions.InvalidEndpointRegionException",
        "ok   hang -> ReadTimeoutError",
        "ok   drop -> ConnectionClosedError",
        "ok   http-503-html -> ClientError",
    ] {
        assert!(out.contains(control), "no {control:?} in:\n{out}");
    }
    // The check can fail: without duplicate-request, DuplicateRequestException has no fault.
    let file = dir.join("edited.jsonl");
    std::fs::write(&file, without_fault(&listing, "duplicate-request")).unwrap();
    let mut cmd = meter_script(&normal, &file);
    cmd.arg("--model-only");
    assert_fails(
        &run_bounded(&mut cmd, SCRIPT_TIMEOUT),
        "FAIL the emulator has a meter fault for DuplicateRequestException",
    );
}

const ANYWHERE_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/conformance/boto3_anywhere_conformance.py"
);

#[test]
fn boto3_exchanges_the_license_token_as_botocore_models_it() {
    let dir = scratch("anywhere-conformance");
    let (faults_file, listing) = fault_listing(&dir);
    let token_file = dir.join("license_token");
    let normal =
        Emulator::start_with_shared_keys(&["--license-token-file", token_file.to_str().unwrap()]);
    // The i-th fault of each operation at its call i+1, as the script expects.
    let mut flags: Vec<String> = Vec::new();
    let (mut lm, mut sts) = (0, 0);
    for line in listing.lines() {
        let f: serde_json::Value = serde_json::from_str(line).unwrap();
        let name = f["name"].as_str().unwrap();
        match f["kind"].as_str() {
            Some("license-token") => {
                flags.extend([
                    "--license-fault".into(),
                    format!("GetAccessToken={name}@{lm}*1"),
                ]);
                lm += 1;
            }
            Some("sts") => {
                flags.extend([
                    "--sts-fault".into(),
                    format!("AssumeRoleWithWebIdentity={name}@{sts}*1"),
                ]);
                sts += 1;
            }
            _ => {}
        }
    }
    let faulty_token = dir.join("faulty").join("license_token");
    std::fs::create_dir_all(faulty_token.parent().unwrap()).unwrap();
    flags.extend([
        "--license-token-file".into(),
        faulty_token.to_str().unwrap().into(),
    ]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let faulty = Emulator::start_with_shared_keys(&flags);
    let mut cmd = python(ANYWHERE_SCRIPT);
    cmd.args(["--region", &normal.region])
        .args(["--credentials", &test_credentials()])
        .arg("--faults")
        .arg(&faults_file)
        .arg("--token-file")
        .arg(&token_file)
        .args([
            "--role-arn",
            normal.ready["licenseRoleArn"].as_str().unwrap(),
        ])
        .args(["--product-sku", &normal.product_sku])
        .args(["--success", &normal.url])
        .args(["--faulty", &faulty.url]);
    let out = run_script(&mut cmd, "boto3 license token conformance", "boto3");
    assert!(out.contains("all checks passed"), "{out}");
    for line in [
        "ok   AssumeRoleWithWebIdentity's IDPCommunicationErrorException is an sts fault (IDPCommunicationError, 400)",
        "ok   GetAccessToken's AccessDeniedException is a license-token fault",
        "ok   CheckoutLicense with the role's credentials",
    ] {
        assert!(out.contains(line), "{line} not in {out}");
    }
}
