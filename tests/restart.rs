//! Restarts of an entitled pod never crash-loop: entrypoint mode checks again on every start,
//! and an app container's `mpgate verify --result-file FILE --renew` renews an init
//! container's check that has only grown too old, while everything else stays refused.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use mpgate_testkit::{result_file, Emulator};
use serde_json::{json, Value};

const REGISTER_USAGE: &str = "AWSMPMeteringService.RegisterUsage";

fn register_usage_calls(emu: &Emulator) -> Vec<Value> {
    emu.calls()
        .into_iter()
        .filter(|c| c["target"] == REGISTER_USAGE)
        .collect()
}

#[test]
fn entrypoint_mode_checks_again_on_every_start_long_after_the_first_token_aged() {
    let emu = Emulator::start(&[]);
    let first = emu.dir.join("first.json");
    // Each start's workload re-checks its own hand-over under a 3 s age. A fresh token is
    // under 1 s + the call old (its iat has whole seconds): 3 s leaves a margin for a loaded
    // machine.
    let start = |result: &Path| {
        emu.gate()
            .env("MPGATE_MAX_TOKEN_AGE", "3s")
            .env("MPGATE_RESULT_FILE", result)
            .args(["--", MPGATE, "verify"])
            .run()
    };
    start(&first).expect(0);
    // Ages the first token past its 3 s bound: a restart's time, not a wait for something
    // to happen.
    std::thread::sleep(std::time::Duration::from_millis(3100));
    let recorded = result_file(&first);
    let first_token = mpgate_proof::Handover {
        signature: recorded["signature"].as_str().unwrap().into(),
        nonce: recorded["nonce"].as_str().unwrap().into(),
        bound_to: mpgate_proof::Bound::Process("the first start".into()),
    };
    let pem = std::fs::read(&emu.public_key_file).unwrap();
    assert!(matches!(
        first_token.verify(
            &pem,
            &emu.product_code,
            1,
            std::time::Duration::from_secs(3)
        ),
        Err(mpgate_proof::ProofError::Token(
            mpgate_proof::TokenError::Stale(..)
        ))
    ));
    // Its file holds no salt: an entrypoint-mode hand-over is bound to the process mpgate
    // exec'd, never to a file.
    emu.gate()
        .args(["verify", "--result-file"])
        .args([&first])
        .run()
        .expect_error(12, "entrypoint mode");

    let second = emu.dir.join("second.json");
    let out = start(&second);
    out.expect(0);
    assert!(
        out.stderr.contains("the hand-over is verified"),
        "{}",
        out.stderr
    );
    let calls = register_usage_calls(&emu);
    assert_eq!(calls.len(), 2, "one RegisterUsage per start: {calls:?}");
    assert_ne!(
        calls[0]["nonce"], calls[1]["nonce"],
        "a fresh nonce per start"
    );
    assert_eq!(result_file(&second)["nonce"], calls[1]["nonce"]);
}

/// An init container's check ten minutes ago: the result file a gate wrote against an
/// emulator whose clock (AWS's) is ten minutes behind, so its token's `iat` is 600 s old.
/// Every emulator of this file signs with the same keys and sells the same product.
fn old_result_file() -> (Emulator, PathBuf) {
    let past = Emulator::start_with_shared_keys(&["--clock-offset", "-10m"]);
    let result = past.dir.join("result.json");
    past.gate()
        .env("MPGATE_MAX_TOKEN_AGE", "15m")
        .env("MPGATE_RESULT_FILE", &result)
        .run()
        .expect(0);
    (past, result)
}

/// A token with `claims`, signed with the shared emulator key of version 1.
fn sign(claims: &Value) -> String {
    let pem = std::fs::read(mpgate_testkit::emulator::shared_key_dir().join("private-key-v1.pem"))
        .unwrap();
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(&pem).unwrap();
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::PS256);
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The app container's `mpgate verify`, configured like the gate for emulator `emu`.
fn verify(emu: &Emulator, result: &Path, extra: &[&str]) -> Outcome {
    emu.gate()
        .args(["verify"])
        .args(extra)
        .args([Path::new("--result-file"), result])
        .run()
}

#[test]
fn a_stale_result_file_is_exit_12_and_says_to_add_renew_or_use_entrypoint_mode() {
    let (_past, result) = old_result_file();
    let now = Emulator::start_with_shared_keys(&[]);
    let out = verify(&now, &result, &[]);
    out.expect(12);
    let message = out.error_message();
    for words in [
        &format!("the token in result file {}", result.display()),
        "was issued 6",
        "more than the allowed 300s (MPGATE_MAX_TOKEN_AGE)",
        "if the app container restarted after its init container's check, add --renew",
        "or use entrypoint mode ('mpgate -- COMMAND'), which checks on every start",
    ] {
        assert!(message.contains(words), "no {words:?} in: {message}");
    }
    assert_eq!(now.calls().len(), 0, "without --renew, no call");
}

#[test]
fn renew_checks_a_stale_result_file_again_with_a_fresh_nonce_and_leaves_the_file() {
    let (_past, result) = old_result_file();
    let before = std::fs::read(&result).unwrap();
    let recorded = result_file(&result);
    let now = Emulator::start_with_shared_keys(&[]);
    let out = verify(&now, &result, &["--renew"]);
    out.expect(0);
    let message = out
        .log_lines()
        .into_iter()
        .filter_map(|l| l["message"].as_str().map(String::from))
        .next_back()
        .unwrap();
    assert!(
        message.contains("the entitlement check was renewed")
            && message.contains(&now.product_code),
        "{message}"
    );
    let calls = register_usage_calls(&now);
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0]["status"], 200);
    assert_ne!(calls[0]["nonce"], recorded["nonce"], "a fresh nonce");
    assert_eq!(
        std::fs::read(&result).unwrap(),
        before,
        "the file is not rewritten"
    );

    // The renewed check is the gate's: its refusal is the gate's exit code.
    let refusing = Emulator::start_with_shared_keys(&["--fault", "not-entitled"]);
    verify(&refusing, &result, &["--renew"]).expect_error(10, "not entitled");
    assert_eq!(register_usage_calls(&refusing).len(), 1);
    // And it never starts unverified, whatever MPGATE_ON_TRANSIENT_ERROR says.
    let unreachable = Emulator::start_with_shared_keys(&["--fault", "throttle"]);
    let out = unreachable
        .gate()
        .env("MPGATE_ON_TRANSIENT_ERROR", "allow")
        .env("MPGATE_TIMEOUT", "1s")
        .args(["verify", "--renew", "--result-file"])
        .args([&result])
        .run();
    out.expect(14);
}

#[test]
fn renew_never_renews_a_file_that_fails_any_other_check() {
    let (_past, result) = old_result_file();
    let now = Emulator::start_with_shared_keys(&[]);
    let recorded = result_file(&result);
    let variant = |name: &str, edit: &dyn Fn(&mut Value)| {
        let mut json = recorded.clone();
        edit(&mut json);
        let path = now.dir.join(name);
        std::fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
        path
    };
    let signature = recorded["signature"].as_str().unwrap().to_string();
    let (signed, _) = signature.rsplit_once('.').unwrap();
    let forged = variant("forged.json", &|j| {
        j["signature"] = format!("{signed}.{}", "A".repeat(342)).into()
    });
    let replayed = variant("replayed.json", &|j| {
        j["outcome"] = "not-entitled".into();
        j["exitCode"] = 10.into();
    });
    // The nonce is derived from the salt where the file is read, never taken from it: a
    // salt of the attacker's derives one the token was not issued for.
    let other_nonce = variant("other-nonce.json", &|j| {
        j["salt"] = "0123456789abcdef".repeat(4).into()
    });
    // Correctly signed and too old, but also past its `exp`: age is not its only fault.
    let nonce = recorded["nonce"].as_str().unwrap();
    let expired_token = sign(&json!({
        "productCode": now.product_code, "publicKeyVersion": 1, "nonce": nonce,
        "iat": unix_now() - 600, "exp": unix_now() - 60,
    }));
    let expired = variant("expired.json", &|j| {
        j["signature"] = expired_token.clone().into()
    });
    let cases: [(&Path, &[&str], &str); 6] = [
        (&expired, &[], "the token expired"),
        (&forged, &[], "does not verify"),
        (&replayed, &[], "outcome \"not-entitled\""),
        (&other_nonce, &[], "nonce"),
        (
            &result,
            &["--product-code", "prod-someoneelse"],
            "productCode",
        ),
        (&now.dir.join("missing.json"), &[], "cannot use result file"),
    ];
    for (file, extra, words) in cases {
        let out = verify(&now, file, &[&["--renew"], extra].concat());
        out.expect_error(12, words);
    }
    assert_eq!(now.calls().len(), 0, "nothing was renewed");
}

#[test]
fn renew_without_a_result_file_is_exit_2_and_writes_no_result_file() {
    let now = Emulator::start(&[]);
    let written = now.dir.join("would-be-written.json");
    let out = now
        .gate()
        .env("MPGATE_RESULT_FILE", &written)
        .args(["verify", "--renew"])
        .run();
    out.expect_error(2, "--renew needs --result-file");
    assert!(out.error_message().contains("mpgate verify --help"));
    assert!(
        !written.exists(),
        "a verify usage error is not a gate's result"
    );
    assert_eq!(now.calls().len(), 0);

    // The gate takes no --renew.
    let out = now.gate().args(["--renew"]).run();
    out.expect_error(2, "an option of 'mpgate verify --result-file PATH'");
}
