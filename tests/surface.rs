//! What a seller reads first: the help of `mpgate` and `mpgate verify`, `mpgate help`, and
//! the result file's rule for `verifiedAt` (present exactly when `entitled` is true).

mod common;

use std::path::Path;

use common::*;
use mpgate_testkit::{result_file, Emulator, CHILD_LIMIT};
use serde_json::Value;

/// `mpgate ARGS` in an empty environment; its stdout.
fn help(args: &[&str]) -> String {
    let dir = mpgate_testkit::scratch("help");
    let out = Gate::hermetic(&dir).args(args).run();
    out.expect(0);
    assert!(out.stderr.is_empty(), "{}", out.stderr);
    out.stdout
}

#[test]
fn mpgate_verify_help_is_its_own() {
    let text = help(&["verify", "--help"]);
    assert_eq!(help(&["verify", "-h"]), text);
    assert_eq!(help(&["help", "verify"]), text);
    for words in [
        "Usage: mpgate verify [OPTIONS]",
        "mpgate verify --result-file PATH [--renew] [OPTIONS]",
        "--renew ",
        "--public-key-dir DIR",
        "--max-token-age DURATION",
        "With --renew only",
        "does not rewrite the result file",
        "MPGATE_ON_TRANSIENT_ERROR is not used",
    ] {
        assert!(text.contains(words), "no {words:?} in:\n{text}");
    }
    // Nothing of the gate's: no workload, no contract options, no undefined placeholder.
    for absent in ["[KEY OPTIONS]", "COMMAND [ARG", "--seat", "--product-sku"] {
        assert!(!text.contains(absent), "{absent:?} in:\n{text}");
    }
}

#[test]
fn mpgate_help_prints_the_help_and_mpgate_dash_dash_help_runs_a_workload_named_help() {
    let text = help(&["help"]);
    assert_eq!(help(&["--help"]), text);
    assert!(
        text.contains(
            "A workload named 'verify', 'help' or 'usage' is run as\n'mpgate -- verify', 'mpgate -- help' or 'mpgate -- usage'"
        ),
        "{text}"
    );

    let emu = Emulator::start(&[]);
    let bin = emu.dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let workload = bin.join("help");
    std::fs::write(&workload, "#!/bin/sh\necho the workload named help ran\n").unwrap();
    let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
    std::fs::set_permissions(&workload, mode).unwrap();
    let path = format!("{}:/usr/bin:/bin", bin.display());
    let out = emu.gate().env("PATH", &path).args(["--", "help"]).run();
    out.expect(0);
    assert_eq!(out.stdout, "the workload named help ran\n");
    // `mpgate help` runs nothing, even with that workload on PATH.
    let out = emu.gate().env("PATH", &path).args(["help"]).run();
    out.expect(0);
    assert!(out.stdout.starts_with("mpgate: gate a container"));
    assert_eq!(emu.calls().len(), 1, "only the workload's start called AWS");
}

#[test]
fn the_help_tells_the_attempt_timeout_as_the_code_applies_it_and_lists_exit_101() {
    let text = help(&["--help"]);
    for words in [
        "--attempt-timeout DURATION deadline of one attempt: connect, send, answer (default: a third of --timeout,\n                                 between 500ms and 10s; never more than --timeout)",
        "101 a bug in\nmpgate (it panicked: please report it)",
    ] {
        assert!(text.contains(words), "no {words:?} in:\n{text}");
    }
    assert!(!text.contains("[KEY OPTIONS]"), "{text}");
}

/// The result file of one run of `gate`.
fn result_of(gate: &mut Gate, dir: &Path, code: i32) -> Value {
    let result = dir.join("result.json");
    let _ = std::fs::remove_file(&result);
    gate.env("MPGATE_RESULT_FILE", &result).run().expect(code);
    result_file(&result)
}

#[test]
fn verified_at_is_present_exactly_when_entitled_is_true() {
    let emu = Emulator::start(&[]);
    let verified = result_of(&mut emu.gate(), &emu.dir, 0);
    assert_eq!(verified["entitled"], true);
    assert!(verified["verifiedAt"].as_str().unwrap().ends_with('Z'));

    let refusing = Emulator::start(&["--fault", "not-entitled"]);
    let failed = result_of(&mut refusing.gate(), &refusing.dir, 10);
    assert_eq!(failed["entitled"], false);
    assert!(failed.get("verifiedAt").is_none(), "not null: {failed}");

    // An unverified start (allow) is not entitled either.
    let unreachable = Emulator::start(&["--fault", "throttle"]);
    let mut allow = unreachable.gate();
    allow
        .env("MPGATE_TIMEOUT", "1s")
        .env("MPGATE_ON_TRANSIENT_ERROR", "allow");
    let unverified = result_of(&mut allow, &unreachable.dir, 0);
    assert_eq!(unverified["outcome"], "unverified");
    assert!(unverified.get("verifiedAt").is_none(), "{unverified}");

    // Contract pricing, checked: entitled, so verified at the checkout.
    let contract = result_of(&mut emu.contract_gate("Basic"), &emu.dir, 0);
    assert_eq!(contract["entitled"], true);
    assert!(contract["verifiedAt"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn a_lost_license_records_no_verified_at() {
    let emu = Emulator::start(&["--consumption-ttl", "2s"]);
    let result = emu.dir.join("lost.json");
    let mut running = emu
        .contract_gate("Basic")
        .env("MPGATE_SEAT", "hold")
        .env("MPGATE_GRACE", "1s")
        .env("MPGATE_RESULT_FILE", &result)
        .args(["sh", "-c", "echo ready; while :; do sleep 0.05; done"])
        .spawn();
    assert_eq!(running.next_line("workload ready"), "ready");
    // While held, the start's check is on record.
    let held = result_file(&result);
    assert_eq!(held["entitled"], true);
    let verified_at = held["verifiedAt"].as_str().unwrap().to_string();
    // Revoked at the first extension (SIGUSR1 tells the emulator to forget its checkouts).
    mpgate_testkit::wait::wait_until(CHILD_LIMIT, "an extension", || {
        license_calls(&emu)
            .iter()
            .any(|(op, c)| op == "ExtendLicenseConsumption" && c["status"] == 200)
            .then_some(())
    });
    send(emu.pid(), libc::SIGUSR1);
    running.wait().expect(10);
    let lost = result_file(&result);
    assert_eq!(lost["outcome"], "license-lost", "{lost}");
    assert_eq!(lost["entitled"], false);
    assert!(
        lost.get("verifiedAt").is_none(),
        "{lost} (held: {verified_at})"
    );
}
