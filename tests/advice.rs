//! Advice that points the right way: one test per message, asserting its key words (and, where
//! a wrong one was given before, that it is gone).

mod common;

use common::*;
use mpgate_testkit::{result_file, Emulator};

#[test]
fn a_node_clock_20_minutes_ahead_or_behind_gets_the_clock_advice() {
    // --clock-offset is AWS's clock minus the node's: +20m, the node is behind ("Signature
    // expired"); -20m, it is ahead ("Signature not yet current").
    for (offset, way) in [("20m", "behind"), ("-20m", "ahead of")] {
        let emu = Emulator::start(&["--clock-offset", offset]);
        let out = emu.gate().run();
        out.expect_error(13, "the node's clock is more than 15 minutes");
        let message = out.error_message();
        assert!(
            message.contains(way) && message.contains("NTP"),
            "{offset}: {message}"
        );
        assert!(!message.contains("AWS_SECRET_ACCESS_KEY"), "{message}");
        // License Manager answers the same way, with the same advice.
        let out = emu.contract_gate("Basic").run();
        out.expect_error(13, way);
    }
}

/// The node's clock minutes off, inside SigV4's 15-minute window, so the call succeeds and the
/// token itself is judged on the node's clock: AWS's `iat` too old or too far ahead fails
/// closed (exit 12) with the clock advice, the workload never starts. The clock is moved
/// under a real run (the emulator plays AWS with the right time), not injected into a check.
#[test]
fn a_node_clock_minutes_off_fails_closed_at_the_token_check() {
    // -10m: AWS is ten minutes behind the node, so the fresh token looks 600 s old (> 300 s);
    // +5m: AWS is ahead, so its `iat` is 300 s in the node's future (> 60 s of skew).
    for (offset, words) in [("-10m", "issued 600s ago"), ("5m", "s in the future")] {
        let emu = Emulator::start(&["--clock-offset", offset]);
        let out = emu
            .gate()
            .args(["--", "sh", "-c", "echo WORKLOAD STARTED"])
            .run();
        out.expect(12);
        let message = out.error_message();
        assert!(
            message.contains("clock") && message.contains(words),
            "{offset}: {message}"
        );
        assert!(
            !out.stdout.contains("WORKLOAD STARTED"),
            "{offset}: {out:?}"
        );
        assert_eq!(emu.calls().len(), 1, "{offset}: one real call was made");
    }
}

#[test]
fn a_signature_scoped_to_another_region_names_the_region_and_the_endpoint() {
    // The emulator serves us-east-1; the gate signs for eu-west-1.
    let emu = Emulator::start(&[]);
    assert_eq!(emu.region, "us-east-1");
    let out = emu.gate().env("AWS_REGION", "eu-west-1").run();
    out.expect_error(13, "signed for region eu-west-1 (from AWS_REGION)");
    let message = out.error_message();
    assert!(
        message.contains(&format!("the endpoint {}", emu.url))
            && message.contains("AWS_ENDPOINT_URL_MARKETPLACE_METERING"),
        "{message}"
    );
    assert!(!message.contains("AWS_SECRET_ACCESS_KEY"), "{message}");
    let out = emu
        .contract_gate("Basic")
        .env("AWS_REGION", "eu-west-1")
        .run();
    out.expect_error(13, "AWS_ENDPOINT_URL_LICENSE_MANAGER");
}

#[test]
fn a_wrong_key_in_a_key_directory_is_reported_against_the_directory_and_its_file() {
    let emu = Emulator::start(&["--key-versions", "1,2"]);
    // Version 2's key saved as version 1's: a real key, the wrong one.
    let dir = emu.dir.join("ring");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("public-key-v1.pem");
    std::fs::write(&file, emu.public_pem(2)).unwrap();
    let out = emu
        .gate()
        .env_remove("MPGATE_PUBLIC_KEY_FILE")
        .env("MPGATE_PUBLIC_KEY_DIR", &dir)
        .run();
    out.expect_error(
        12,
        "does not verify with public key version 1 from MPGATE_PUBLIC_KEY_DIR",
    );
    let message = out.error_message();
    assert!(message.contains(&file.display().to_string()), "{message}");
    assert!(!message.contains("MPGATE_PUBLIC_KEY_FILE"), "{message}");
    // The same key as a file is reported against the file's variable.
    let out = emu.gate().env("MPGATE_PUBLIC_KEY_FILE", &file).run();
    out.expect_error(12, "from MPGATE_PUBLIC_KEY_FILE");
}

#[test]
fn mpgate_verify_names_the_key_it_used_when_the_signature_fails() {
    let emu = Emulator::start(&["--key-versions", "1,2"]);
    let result = emu.dir.join("result.json");
    emu.gate()
        .env("MPGATE_RESULT_FILE", &result)
        .run()
        .expect(0);
    let dir = emu.dir.join("ring");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("public-key-v1.pem"), emu.public_pem(2)).unwrap();
    let out = emu
        .gate()
        .env_remove("MPGATE_PUBLIC_KEY_FILE")
        .env("MPGATE_PUBLIC_KEY_DIR", &dir)
        .args(["verify", "--result-file"])
        .args([&result])
        .run();
    out.expect_error(
        12,
        "does not verify with public key version 1 from MPGATE_PUBLIC_KEY_DIR",
    );
}

#[test]
fn a_missing_key_directory_or_file_names_the_variable_and_asks_if_the_configmap_is_mounted() {
    let emu = Emulator::start(&[]);
    let missing = emu.dir.join("not-mounted");
    let out = emu
        .gate()
        .env_remove("MPGATE_PUBLIC_KEY_FILE")
        .env("MPGATE_PUBLIC_KEY_DIR", &missing)
        .run();
    out.expect_error(2, "(MPGATE_PUBLIC_KEY_DIR)");
    out.expect_error(
        2,
        "is the ConfigMap (or Secret) with the key mounted there?",
    );
    let out = emu
        .gate()
        .env_remove("MPGATE_PUBLIC_KEY_FILE")
        .args(["--public-key-dir"])
        .args([&missing])
        .run();
    out.expect_error(2, "(--public-key-dir)");
    let out = emu.gate().env("MPGATE_PUBLIC_KEY_FILE", &missing).run();
    out.expect_error(2, "(MPGATE_PUBLIC_KEY_FILE)");
    out.expect_error(2, "is the ConfigMap");
    // A bad key file inside the directory is reported against the directory too.
    std::fs::create_dir_all(&missing).unwrap();
    std::fs::write(missing.join("public-key-v3.pem"), "not a key\n").unwrap();
    let out = emu
        .gate()
        .env_remove("MPGATE_PUBLIC_KEY_FILE")
        .env("MPGATE_PUBLIC_KEY_DIR", &missing)
        .run();
    out.expect_error(2, "MPGATE_PUBLIC_KEY_DIR");
    out.expect_error(2, "public-key-v3.pem (key version 3)");
    assert_eq!(emu.calls().len(), 0);
}

#[test]
fn a_wrong_sku_says_to_check_mpgate_product_sku_and_the_license_grant() {
    let emu = Emulator::start(&[]);
    // License Manager knows no license for it: NoEntitlementsAllowedException.
    let out = emu
        .contract_gate("Basic")
        .env("MPGATE_PRODUCT_SKU", "prod-sku-typo")
        .run();
    out.expect_error(10, "check MPGATE_PRODUCT_SKU");
    out.expect_error(10, "license grant");
    out.expect_error(10, "prod-sku-typo");
    // ResourceNotFoundException for the checkout says the same.
    let emu = Emulator::start(&["--license-fault", "CheckoutLicense=resource-not-found"]);
    let out = emu.contract_gate("Basic").run();
    out.expect_error(10, "check MPGATE_PRODUCT_SKU");
    out.expect_error(10, "license grant");
}

#[test]
fn an_iam_denial_of_the_extension_during_hold_exits_13_naming_the_action_and_the_policy() {
    let emu = Emulator::start(&[
        "--consumption-ttl",
        "2s",
        "--license-fault",
        "ExtendLicenseConsumption=access-denied",
    ]);
    let result = emu.dir.join("denied-result.json");
    let out = emu
        .contract_gate("Basic")
        .env("MPGATE_SEAT", "hold")
        .env("MPGATE_GRACE", "2s")
        .env("MPGATE_RESULT_FILE", &result)
        .args([
            "sh",
            "-c",
            "trap 'echo got SIGTERM; exit 0' TERM; echo ready; while :; do sleep 0.05; done",
        ])
        .run();
    out.expect(13);
    let message = out.error_message();
    assert!(
        message.starts_with("the credentials may not call license-manager:ExtendLicenseConsumption (AccessDeniedException)")
            && message.contains("deploy/iam-policy-license-manager.json"),
        "{message}"
    );
    // The workload was stopped as for a loss (SIGTERM), and no retry burnt the seat's life.
    assert!(out.stdout.contains("got SIGTERM"), "{out:?}");
    let recorded = result_file(&result);
    assert_eq!(recorded["exitCode"], 13, "{recorded}");
    assert_eq!(recorded["outcome"], "service-refused", "{recorded}");
    let denied = license_calls(&emu)
        .iter()
        .filter(|(op, _)| op == "ExtendLicenseConsumption")
        .count();
    assert_eq!(denied, 1, "an IAM denial is final");
}
