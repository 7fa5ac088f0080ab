//! Contract pricing with `--seat check` against the emulator's License Manager: each
//! entitlement form, what the workload and the result file get, no seat left held, every
//! error class with its exit code and advice, and one ClientToken across retries.

mod common;

use common::*;
use mpgate_testkit::faults::LICENSE_FAULTS;
use mpgate_testkit::wait::wait_until;
use mpgate_testkit::{result_file, Emulator, CHILD_LIMIT};
use serde_json::{json, Value};

/// A workload that prints what the hand-over gave it, one variable per line.
const SHOW_LICENSE: &str = r#"printf '%s\n' "$MPGATE_ENTITLEMENT" "$MPGATE_LICENSE_ARN" "$MPGATE_LICENSE_EXPIRATION" "${#MPGATE_LICENSE_TOKEN}" "$MPGATE_LICENSE_ENTITLEMENTS" "${MPGATE_SIGNATURE-unset}" "${MPGATE_NONCE-unset}""#;

#[test]
fn each_entitlement_form_is_checked_out_handed_over_and_checked_back_in() {
    let emu = Emulator::start(&[
        "--license-entitlement",
        "Basic",
        "--license-entitlement",
        "Seats=5",
        "--license-entitlement",
        "Storage=100:Gigabytes",
    ]);
    let result = emu.dir.join("contract-result.json");
    let out = emu
        .contract_gate("Basic, Seats=2 ,Storage=10:Gigabytes")
        .env("MPGATE_RESULT_FILE", &result)
        // Inherited proof variables must not reach the workload as if this hand-over set them.
        .env("MPGATE_SIGNATURE", "forged")
        .env("MPGATE_NONCE", "forged")
        .args(["sh", "-c", SHOW_LICENSE])
        .run();
    out.expect(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "verified", "{out:?}");
    assert_eq!(lines[1], emu.license_arn);
    // RFC 3339, about the emulator's default 60 minutes ahead.
    let expiration = lines[2];
    assert!(
        expiration.len() == 20 && expiration.ends_with('Z'),
        "{expiration}"
    );
    assert!(lines[3].parse::<usize>().unwrap() >= 4096, "{out:?}");
    let allowed: Value = serde_json::from_str(lines[4]).unwrap();
    assert_eq!(
        allowed,
        json!([
            {"Name": "Basic", "Unit": "None", "Value": null},
            {"Name": "Seats", "Unit": "Count", "Value": "2"},
            {"Name": "Storage", "Unit": "Gigabytes", "Value": "10"},
        ])
    );
    assert_eq!(&lines[5..], ["unset", "unset"], "{out:?}");

    // What went over the wire: one checkout as the issue specifies, then its check-in.
    let calls = license_calls(&emu);
    let ops: Vec<&str> = calls.iter().map(|(op, _)| op.as_str()).collect();
    assert_eq!(ops, ["CheckoutLicense", "CheckInLicense"], "{calls:?}");
    let checkout = &calls[0].1;
    assert_eq!(checkout["checkoutType"], "PROVISIONAL");
    assert_eq!(
        checkout["keyFingerprint"],
        "aws:294406891311:AWS/Marketplace:issuer-fingerprint"
    );
    assert_eq!(checkout["productSku"], emu.product_sku);
    assert_eq!(
        checkout["entitlements"],
        json!([
            {"Name": "Basic", "Unit": "None"},
            {"Name": "Seats", "Unit": "Count", "Value": "2"},
            {"Name": "Storage", "Unit": "Gigabytes", "Value": "10"},
        ])
    );
    let token = checkout["clientToken"].as_str().unwrap();
    assert!(
        token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit()),
        "{token}"
    );
    assert_eq!(calls[1].1["status"], 200, "{calls:?}");

    // `check` holds nothing once the workload runs.
    assert_eq!(in_use(&emu, "Seats"), "0");
    assert_eq!(in_use(&emu, "Storage"), "0");

    let recorded = result_file(&result);
    assert_eq!(recorded["pricing"], "contract", "{recorded}");
    assert_eq!(recorded["entitled"], true);
    assert_eq!(recorded["outcome"], "verified");
    assert_eq!(recorded["productSku"], emu.product_sku);
    assert_eq!(recorded["licenseArn"], emu.license_arn);
    assert_eq!(recorded["entitlements"], allowed);
    assert_eq!(recorded["expiration"], expiration);
    assert_eq!(recorded["checkedIn"], true);
    assert_eq!(recorded["productCode"], Value::Null);
    assert!(recorded.get("signature").is_none(), "{recorded}");
}

#[test]
fn check_mode_leaves_no_seat_held_so_a_one_seat_license_serves_start_after_start() {
    let emu = Emulator::start(&["--license-entitlement", "Seats=1"]);
    for _ in 0..3 {
        emu.contract_gate("Seats=1").run().expect(0);
    }
    let ops: Vec<String> = license_calls(&emu).into_iter().map(|(op, _)| op).collect();
    assert_eq!(ops.len(), 6, "{ops:?}");
    assert_eq!(in_use(&emu, "Seats"), "0");
}

#[test]
fn init_mode_checks_the_license_and_exits_0() {
    let emu = Emulator::start(&[]);
    let out = emu.contract_gate("Basic,Seats=1").run();
    out.expect(0);
    assert_eq!(out.stdout, "", "init mode prints nothing on stdout");
    assert_eq!(in_use(&emu, "Seats"), "0");
}

#[test]
fn not_entitled_answers_exit_10_with_what_to_do_and_start_nothing() {
    let cases: [(&[&str], &str, &str); 4] = [
        // No license at all: AWS answers NoEntitlementsAllowedException.
        (&["--no-license"], "Basic", "accept the license grant"),
        // A feature the contract does not include.
        (&[], "Pro", "contract includes these entitlements"),
        // More seats than the contract has.
        (
            &["--license-entitlement", "Seats=2"],
            "Seats=3",
            "seats in use",
        ),
        // A counted entitlement asked for as a feature (`Unit: None`).
        (
            &["--license-entitlement", "Seats=2"],
            "Seats",
            "NoEntitlementsAllowedException",
        ),
    ];
    for (flags, entitlements, advice) in cases {
        let emu = Emulator::start(flags);
        let result = emu.dir.join("refused.json");
        let out = emu
            .contract_gate(entitlements)
            .env("MPGATE_RESULT_FILE", &result)
            .args(["sh", "-c", "echo WORKLOAD STARTED"])
            .run();
        out.expect_error(10, advice);
        assert!(!out.stdout.contains("WORKLOAD STARTED"), "{out:?}");
        let recorded = result_file(&result);
        assert_eq!(recorded["outcome"], "not-entitled", "{recorded}");
        assert_eq!(recorded["exitCode"], 10);
        let termination = std::fs::read_to_string(emu.dir.join("termination-log")).unwrap();
        assert!(termination.contains(advice), "{termination}");
        assert_eq!(license_calls(&emu).len(), 1, "a refusal is never retried");
    }
}

#[test]
fn a_wrong_sku_exits_10_and_names_the_sku() {
    let emu = Emulator::start(&[]);
    let out = emu
        .contract_gate("Basic")
        .env("MPGATE_PRODUCT_SKU", "prod-sku-other")
        .run();
    out.expect_error(10, "prod-sku-other");
}

#[test]
fn every_checkout_error_class_has_its_exit_code_and_advice() {
    for fault in LICENSE_FAULTS
        .iter()
        .filter(|f| f.operations.contains(&"CheckoutLicense"))
    {
        let spec = format!("CheckoutLicense={}", fault.fault);
        let emu = Emulator::start(&["--license-fault", &spec]);
        let out = emu
            .contract_gate("Basic")
            // Transient classes are retried until the deadline: keep it short.
            .env("MPGATE_TIMEOUT", "2s")
            .args(["sh", "-c", "echo WORKLOAD STARTED"])
            .run();
        out.expect_error(fault.exit_code, fault.hint);
        assert!(
            !out.stdout.contains("WORKLOAD STARTED"),
            "{}: {out:?}",
            fault.fault
        );
        let attempts = license_calls(&emu).len();
        if fault.exit_code == 14 {
            assert!(attempts >= 2, "{}: retried {attempts} times", fault.fault);
        } else {
            assert_eq!(
                attempts, 1,
                "{}: a final answer is not retried",
                fault.fault
            );
        }
    }
}

#[test]
fn throttled_checkouts_are_retried_with_one_client_token_and_hold_one_seat() {
    let emu = Emulator::start(&[
        "--license-entitlement",
        "Seats=1",
        "--license-fault",
        "CheckoutLicense=rate-limit-exceeded*2",
    ]);
    let out = emu.contract_gate("Seats=1").run();
    out.expect(0);
    let checkouts: Vec<Value> = license_calls(&emu)
        .into_iter()
        .filter(|(op, _)| op == "CheckoutLicense")
        .map(|(_, c)| c)
        .collect();
    let statuses: Vec<&Value> = checkouts.iter().map(|c| &c["status"]).collect();
    assert_eq!(statuses, [429, 429, 200], "{checkouts:?}");
    let tokens: Vec<&Value> = checkouts.iter().map(|c| &c["clientToken"]).collect();
    assert!(tokens.iter().all(|t| *t == tokens[0]), "{tokens:?}");
    assert_eq!(in_use(&emu, "Seats"), "0");
    // A second gate gets a fresh token.
    emu.contract_gate("Seats=1").run().expect(0);
    let last = license_calls(&emu)
        .into_iter()
        .rfind(|(op, _)| op == "CheckoutLicense")
        .unwrap()
        .1;
    assert_ne!(last["clientToken"], *tokens[0]);
}

#[test]
fn a_checkout_whose_answer_was_lost_is_retried_with_its_client_token_and_holds_one_seat() {
    // The first attempt takes a seat, then its answer is lost: the emulator answers faults
    // after its seat book here, so a retry with another ClientToken would take a second one.
    let emu = Emulator::start(&[
        "--license-entitlement",
        "Seats=2",
        "--license-fault",
        "CheckoutLicense=processed-then-server-internal*1",
    ]);
    let stop = emu.dir.join("stop-lost-checkout");
    let mut running = emu
        .contract_gate("Seats=1")
        .env("MPGATE_SEAT", "hold")
        .args([
            "sh",
            "-c",
            &format!(
                "echo ready; while [ ! -e '{}' ]; do sleep 0.05; done",
                stop.display()
            ),
        ])
        .spawn();
    assert_eq!(running.next_line("workload ready"), "ready");
    let checkouts: Vec<Value> = license_calls(&emu)
        .into_iter()
        .filter(|(op, _)| op == "CheckoutLicense")
        .map(|(_, c)| c)
        .collect();
    assert_eq!(checkouts.len(), 2, "{checkouts:?}");
    assert_eq!(checkouts[0]["processed"], true, "{checkouts:?}");
    assert_eq!(checkouts[1]["replayed"], true, "{checkouts:?}");
    assert_eq!(in_use(&emu, "Seats"), "1", "one seat held, not two");
    std::fs::write(&stop, "").unwrap();
    running.wait().expect(0);
    assert_eq!(in_use(&emu, "Seats"), "0");
}

#[test]
fn a_checkout_cut_by_the_deadline_is_settled_so_no_seat_stays_held() {
    // One attempt, taken by License Manager, its answer never sent: the deadline ends it.
    let emu = Emulator::start(&[
        "--license-entitlement",
        "Seats=1",
        "--license-fault",
        "CheckoutLicense=processed-then-hang*1",
    ]);
    let out = emu
        .contract_gate("Seats=1")
        .env("MPGATE_TIMEOUT", "2s")
        .env("AWS_MAX_ATTEMPTS", "1")
        .run();
    out.expect_error(14, "deadline");
    assert!(
        out.stderr.contains("asked again with its ClientToken"),
        "{}",
        out.stderr
    );
    let calls = license_calls(&emu);
    let tokens: Vec<&Value> = calls
        .iter()
        .filter(|(op, _)| op == "CheckoutLicense")
        .map(|(_, c)| &c["clientToken"])
        .collect();
    assert_eq!(tokens.len(), 2, "{calls:?}");
    assert_eq!(tokens[0], tokens[1], "the same ClientToken");
    assert_eq!(in_use(&emu, "Seats"), "0", "{calls:?}");
}

#[test]
fn a_stop_signal_during_the_checkout_settles_what_it_took() {
    // Every answer a second late: the signal comes after License Manager took the seat.
    let emu = Emulator::start(&["--license-entitlement", "Seats=1", "--latency", "1s"]);
    for (signal, code) in [(libc::SIGTERM, 143), (libc::SIGINT, 130)] {
        // Counted before the start: the call is recorded as it arrives, which a gate started
        // on a busy machine can do before this thread reads the record.
        let before = license_calls(&emu).len();
        let running = emu
            .contract_gate("Seats=1")
            .env("MPGATE_SEAT", "hold")
            .args(["sh", "-c", "echo WORKLOAD STARTED"])
            .spawn();
        wait_until(CHILD_LIMIT, "the checkout", || {
            license_calls(&emu)[before..]
                .iter()
                .any(|(op, c)| op == "CheckoutLicense" && c["processed"] == true)
                .then_some(())
        });
        running.signal(signal);
        let out = running.wait();
        out.expect_error(code, "the workload was not started");
        assert!(!out.stdout.contains("WORKLOAD STARTED"), "{out:?}");
        assert_eq!(in_use(&emu, "Seats"), "0", "{signal}: {}", out.stderr);
    }
}

#[test]
fn a_check_in_conflict_is_retried() {
    let emu = Emulator::start(&[
        "--license-entitlement",
        "Seats=1",
        "--license-fault",
        "CheckInLicense=conflict*1",
    ]);
    let out = emu.contract_gate("Seats=1").run();
    out.expect(0);
    assert!(!out.stderr.contains("cannot check"), "{}", out.stderr);
    let statuses: Vec<Value> = license_calls(&emu)
        .into_iter()
        .filter(|(op, _)| op == "CheckInLicense")
        .map(|(_, c)| c["status"].clone())
        .collect();
    assert_eq!(statuses, [409, 200]);
    assert_eq!(in_use(&emu, "Seats"), "0");
}

#[test]
fn a_failed_check_in_is_a_warning_never_a_lock_out() {
    let emu = Emulator::start(&["--license-fault", "CheckInLicense=server-internal"]);
    let result = emu.dir.join("checkin.json");
    let out = emu
        .contract_gate("Basic")
        .env("MPGATE_TIMEOUT", "30s")
        .env("MPGATE_RESULT_FILE", &result)
        .args(["sh", "-c", "echo WORKLOAD STARTED"])
        .run();
    out.expect(0);
    assert!(out.stdout.contains("WORKLOAD STARTED"), "{out:?}");
    assert!(
        out.stderr.contains("cannot check the license back in"),
        "{}",
        out.stderr
    );
    assert_eq!(result_file(&result)["checkedIn"], false);
    // The check-in gets a short deadline of its own (5s), not the whole MPGATE_TIMEOUT.
    assert!(
        out.elapsed < std::time::Duration::from_secs(20),
        "{:?}",
        out.elapsed
    );
}

#[test]
fn contract_configuration_errors_exit_2_before_any_call() {
    let emu = Emulator::start(&[]);
    let cases = [
        ("MPGATE_PRODUCT_SKU", "", "MPGATE_PRODUCT_SKU"),
        ("MPGATE_ENTITLEMENTS", " , ", "MPGATE_ENTITLEMENTS"),
        ("MPGATE_ENTITLEMENTS", "Seats=0", "whole number"),
        ("MPGATE_ENTITLEMENTS", "Seats=1:Furlongs", "unknown unit"),
        ("MPGATE_SEAT", "borrow", "MPGATE_SEAT"),
        // Holding a seat needs a command to hold it for (init mode has none).
        ("MPGATE_SEAT", "hold", "initContainer"),
    ];
    for (name, value, says) in cases {
        emu.contract_gate("Basic")
            .env(name, value)
            .run()
            .expect_error(2, says);
    }
    let out = emu.gate().env("MPGATE_PRICING", "monthly").run();
    out.expect_error(2, "'hourly'");
    assert!(emu.calls().is_empty(), "{:?}", emu.calls());
}

#[test]
fn the_hourly_settings_are_ignored_with_a_note_in_contract_pricing() {
    let emu = Emulator::start(&[]);
    let out = emu
        .contract_gate("Basic")
        .env("MPGATE_PRODUCT_CODE", "prod-ignored")
        .env("MPGATE_PUBLIC_KEY_FILE", "/nonexistent.pem")
        .run();
    out.expect(0);
    assert!(
        out.stderr
            .contains("MPGATE_PRODUCT_CODE, MPGATE_PUBLIC_KEY_FILE not used"),
        "{}",
        out.stderr
    );
    assert!(license_calls(&emu).len() == 2);
    assert!(emu
        .calls()
        .iter()
        .all(|c| c["target"] != "AWSMPMeteringService.RegisterUsage"));
}

#[test]
fn allow_starts_the_workload_unverified_when_license_manager_is_unreachable() {
    let emu = Emulator::start(&["--license-fault", "CheckoutLicense=server-internal"]);
    let out = emu
        .contract_gate("Basic")
        .env("MPGATE_TIMEOUT", "2s")
        .env("MPGATE_ON_TRANSIENT_ERROR", "allow")
        .env("MPGATE_LICENSE_ARN", "forged")
        .args([
            "sh",
            "-c",
            "echo \"$MPGATE_ENTITLEMENT ${MPGATE_LICENSE_ARN-unset}\"",
        ])
        .run();
    out.expect(0);
    assert_eq!(out.stdout.trim(), "unverified unset", "{out:?}");
}

#[test]
fn verify_says_a_contract_hand_over_has_no_token_to_check_offline() {
    let emu = Emulator::start(&[]);
    let out = emu.contract_gate("Basic").args(["verify"]).run();
    out.expect_error(2, "cannot be verified offline");
}

#[test]
fn flags_set_contract_pricing_and_win_over_the_variables() {
    let emu = Emulator::start(&["--license-entitlement", "Seats=3"]);
    let out = emu
        .contract_gate("Bogus")
        .env("MPGATE_PRICING", "hourly")
        .env("MPGATE_PRODUCT_SKU", "prod-sku-other")
        .args([
            "--pricing",
            "contract",
            "--product-sku",
            &emu.product_sku,
            "--entitlement",
            "Seats=2",
            "--seat",
            "check",
            "sh",
            "-c",
            "echo $MPGATE_LICENSE_ENTITLEMENTS",
        ])
        .run();
    out.expect(0);
    assert_eq!(
        out.stdout.trim(),
        r#"[{"Name":"Seats","Unit":"Count","Value":"2"}]"#
    );
}

#[test]
fn a_pricing_flag_wins_over_the_variable_both_ways() {
    let emu = Emulator::start(&[]);
    let out = emu
        .gate()
        .env("MPGATE_PRICING", "contract")
        .args([
            "--pricing",
            "hourly",
            "sh",
            "-c",
            "echo $MPGATE_ENTITLEMENT",
        ])
        .run();
    out.expect(0);
    assert_eq!(out.stdout.trim(), "verified");
    let calls = emu.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0]["target"], "AWSMPMeteringService.RegisterUsage");
}
