//! What the gate trusts: key rings and rotation, and the proof a workload can check after the
//! hand-over (`mpgate verify` and the `mpgate-proof` library).

mod common;

use std::time::Duration;

use common::*;
use mpgate_proof::TokenError;
use mpgate_proof::{Handover, Process, ProofError};
use mpgate_testkit::{result_file, Emulator};

fn key_dir(emu: &Emulator) -> std::path::PathBuf {
    emu.dir.join("keys")
}

/// A gate that takes its keys from the emulator's key directory instead of one file.
fn ring_gate(emu: &Emulator) -> Gate {
    let mut gate = emu.gate();
    gate.env_remove("MPGATE_PUBLIC_KEY_FILE")
        .env("MPGATE_PUBLIC_KEY_DIR", key_dir(emu));
    gate
}

#[test]
fn a_key_directory_uses_the_highest_version_unless_told_otherwise() {
    let emu = Emulator::start(&["--key-versions", "1,2"]);
    ring_gate(&emu).run().expect(0);
    ring_gate(&emu)
        .env("MPGATE_PUBLIC_KEY_VERSION", "1")
        .run()
        .expect(0);
    let versions: Vec<_> = emu
        .calls()
        .iter()
        .map(|c| c["publicKeyVersion"].clone())
        .collect();
    assert_eq!(versions, [2, 1]);

    let out = ring_gate(&emu).env("MPGATE_PUBLIC_KEY_VERSION", "3").run();
    out.expect_error(2, "holds version(s) 1, 2");
    assert_eq!(emu.calls().len(), 2, "a missing version never calls AWS");
}

#[test]
fn every_key_in_the_directory_is_checked_at_start() {
    let emu = Emulator::start(&["--key-versions", "1,2"]);
    let dir = emu.dir.join("ring");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(&emu.public_key_file, dir.join("public-key-v1.pem")).unwrap();
    std::fs::write(dir.join("README.md"), "ignored: not public-key-v<N>.pem\n").unwrap();
    std::fs::write(dir.join("public-key-v7.pem"), "not a key\n").unwrap();
    let out = emu
        .gate()
        .env_remove("MPGATE_PUBLIC_KEY_FILE")
        .env("MPGATE_PUBLIC_KEY_DIR", &dir)
        .env("MPGATE_PUBLIC_KEY_VERSION", "1")
        .run();
    out.expect(2);
    let message = out.error_message();
    assert!(
        message.contains("public-key-v7.pem (key version 7)") && message.contains("not a PEM"),
        "{message}"
    );

    std::fs::remove_file(dir.join("public-key-v7.pem")).unwrap();
    std::fs::write(dir.join("public-key-v01.pem"), "").unwrap();
    let out = emu
        .gate()
        .env_remove("MPGATE_PUBLIC_KEY_FILE")
        .args(["--public-key-dir"])
        .args([&dir])
        .run();
    out.expect_error(2, "public-key-v<N>.pem");

    let empty = emu.dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = ring_gate(&emu).env("MPGATE_PUBLIC_KEY_DIR", &empty).run();
    out.expect_error(2, "holds no public-key-v<N>.pem");

    // A file and a directory at once: which one is meant is not guessed.
    let out = ring_gate(&emu)
        .env("MPGATE_PUBLIC_KEY_FILE", &emu.public_key_file)
        .run();
    out.expect_error(2, "exactly one key source");
    assert_eq!(emu.calls().len(), 0);
}

#[test]
fn rotation_advice_names_the_newer_key_already_in_the_ring() {
    let emu = Emulator::start(&[
        "--key-versions",
        "1,2",
        "--rotation-timestamp",
        "1893456000",
    ]);
    let out = ring_gate(&emu).env("MPGATE_PUBLIC_KEY_VERSION", "1").run();
    out.expect(0);
    let warning = out
        .warnings()
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no rotation warning: {}", out.stderr));
    let message = warning["message"].as_str().unwrap();
    assert!(
        message.contains("expires at 2030-01-01T00:00:00Z")
            && message.contains("set MPGATE_PUBLIC_KEY_VERSION=2"),
        "{message}"
    );
    assert_eq!(warning["key_expires_at"], "2030-01-01T00:00:00Z");

    // With only the expiring key, the advice is to fetch the new one.
    let out = emu.gate().run();
    out.expect(0);
    assert!(
        out.stderr.contains("AWS Marketplace Management Portal"),
        "{}",
        out.stderr
    );
}

#[test]
fn mpgate_verify_accepts_the_hand_over_it_made() {
    let emu = Emulator::start(&[]);
    // The workload is `mpgate verify` itself, with the environment the gate handed over.
    let out = emu.gate().args(["--", MPGATE, "verify"]).run();
    out.expect(0);
    assert!(
        out.stderr.contains("the hand-over is verified"),
        "{}",
        out.stderr
    );
    assert_eq!(emu.calls().len(), 1, "verify makes no call");
}

#[test]
fn mpgate_verify_refuses_a_start_that_bypassed_the_gate() {
    let emu = Emulator::start(&[]);
    // Started directly (ENTRYPOINT overridden): nothing was handed over.
    let out = emu.gate().args(["verify"]).run();
    out.expect_error(12, "not started by mpgate");

    // A forged token, a real token under a salt of the attacker's, and a token without a
    // salt (the unbound hand-over of an older mpgate, or one made up).
    let result = emu.dir.join("result.json");
    emu.gate()
        .env("MPGATE_RESULT_FILE", &result)
        .run()
        .expect(0);
    let recorded = result_file(&result);
    let signature = recorded["signature"].as_str().unwrap();
    let salt = recorded["salt"].as_str().unwrap();
    let nonce = recorded["nonce"].as_str().unwrap();
    for (sig, salt, hint) in [
        ("eyJhbGciOiJub25lIn0.e30.", salt, "algorithm"),
        (signature, salt, "made for another process"),
        (signature, "", "MPGATE_SALT is not"),
        (signature, "0123456789abcdef", "not 64 lowercase hex digits"),
    ] {
        let out = emu
            .gate()
            .env("MPGATE_SIGNATURE", sig)
            .env("MPGATE_SALT", salt)
            .env("MPGATE_NONCE", nonce)
            .args(["verify"])
            .run();
        out.expect_error(12, hint);
    }

    // An unverified start (the allow policy) is not a proof either.
    let emu = Emulator::start(&["--fault", "throttle"]);
    let out = emu
        .gate()
        .env("MPGATE_TIMEOUT", "1s")
        .env("MPGATE_ON_TRANSIENT_ERROR", "allow")
        .args(["--", MPGATE, "verify"])
        .run();
    out.expect_error(12, "without verifying");
}

#[test]
fn mpgate_verify_reads_a_result_file_and_checks_it_against_the_product() {
    let emu = Emulator::start(&[]);
    let result = emu.dir.join("result.json");
    emu.gate()
        .env("MPGATE_RESULT_FILE", &result)
        .run()
        .expect(0);
    let out = emu
        .gate()
        .args(["verify", "--result-file"])
        .args([&result])
        .run();
    out.expect(0);

    let out = emu
        .gate()
        .args([
            "verify",
            "--product-code",
            "prod-someoneelse",
            "--result-file",
        ])
        .args([&result])
        .run();
    out.expect_error(12, "productCode");

    let out = emu.gate().args(["verify", "--timeout", "5s"]).run();
    out.expect(2);
    assert!(out
        .error_message()
        .contains("mpgate verify takes no --timeout"));
}

#[test]
fn the_library_api_verifies_a_hand_over() {
    let emu = Emulator::start(&[]);
    let result = emu.dir.join("result.json");
    emu.gate()
        .env("MPGATE_RESULT_FILE", &result)
        .run()
        .expect(0);
    let pem = std::fs::read(&emu.public_key_file).unwrap();
    let handover = Handover::from_result_file(&result).expect("a verified result file");
    handover
        .verify(&pem, &emu.product_code, 1, Duration::from_secs(300))
        .expect("the hand-over verifies");

    match handover.verify(&pem, "prod-other", 1, Duration::from_secs(300)) {
        Err(ProofError::Token(TokenError::ClaimMismatch { claim, .. })) => {
            assert_eq!(claim, "productCode")
        }
        other => panic!("expected a productCode mismatch, got {other:?}"),
    }
    let forged = Handover {
        nonce: "forged".into(),
        ..handover.clone()
    };
    match forged.verify(&pem, &emu.product_code, 1, Duration::from_secs(300)) {
        Err(e @ ProofError::ResultFile { .. }) => {
            assert!(e.to_string().contains("another node, boot or pod"), "{e}")
        }
        other => panic!("expected a result file of elsewhere, got {other:?}"),
    }

    let me = Process::current().unwrap();
    let env = |name: &str| match name {
        "MPGATE_ENTITLEMENT" => Some("unverified".into()),
        _ => None,
    };
    assert!(matches!(
        Handover::from_vars(&env, &me),
        Err(ProofError::Unverified)
    ));
    assert!(matches!(
        Handover::from_vars(&|_| None, &me),
        Err(ProofError::NotHandedOver)
    ));
    let e = handover.verify(b"not a key", &emu.product_code, 1, Duration::from_secs(300));
    assert!(matches!(
        e,
        Err(ProofError::Key(mpgate_proof::KeyError::Format(_)))
    ));
    // mpgate maps a bad key to the usage class.
    assert_eq!(mpgate::exit::Failure::from(e.unwrap_err()).exit_code(), 2);
}
