//! Contract pricing with a license token (Containers Anywhere) against the emulator: the
//! token exchanged for the role's credentials (GetAccessToken unsigned, then STS), which
//! alone sign License Manager's calls; every error with its exit code and words; the role's
//! credentials renewed across several lifetimes of a held seat, a revoked token a loss; and
//! the token, the role's keys and any JWT of the exchange never in an output.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use mpgate_testkit::wait::wait_until;
use mpgate_testkit::{result_file, scratch, Emulator, CHILD_LIMIT};
use serde_json::Value;

/// The role the emulator's launch page "creates" (its default `--license-role-arn`).
const ROLE: &str =
    "arn:aws:iam::111122223333:role/service-role/AWSMarketplaceLicenseTokenConsumptionRole";

/// An emulator that wrote its license token (and `iam_role` beside it) into a directory of
/// its own, as the buyer's secret is mounted; the token file's path.
fn start(flags: &[&str]) -> (Emulator, PathBuf) {
    let secret = scratch("license-secret");
    let file = secret.join("license_token");
    let mut all = vec!["--license-token-file", file.to_str().unwrap()];
    all.extend_from_slice(flags);
    let emu = Emulator::start(&all);
    assert!(file.is_file() && secret.join("iam_role").is_file());
    (emu, file)
}

/// A contract gate with the license token (the role from `iam_role` beside it) and STS at the
/// emulator. The hermetic test credentials stay set: the token must beat them.
fn token_gate(emu: &Emulator, file: &Path) -> Gate {
    let mut gate = emu.contract_gate("Basic");
    gate.env("AWS_ENDPOINT_URL_STS", &emu.url)
        .env("MPGATE_LICENSE_TOKEN_FILE", file);
    gate
}

/// The calls the emulator received, as (operation, record line), GetLicenseUsage left out.
fn calls(emu: &Emulator) -> Vec<(String, Value)> {
    emu.calls()
        .into_iter()
        .filter_map(|c| {
            let target = c["target"].as_str()?;
            let op = target.rsplit('.').next()?.to_string();
            (op != "GetLicenseUsage").then_some((op, c))
        })
        .collect()
}

/// The access key ID a License Manager call was signed with.
fn signed_with(call: &Value) -> &str {
    call["credentialScope"]
        .as_str()
        .and_then(|s| s.split('/').next())
        .unwrap_or_else(|| panic!("an unsigned call: {call}"))
}

/// The access key IDs STS handed out.
fn issued_keys(emu: &Emulator) -> Vec<String> {
    calls(emu)
        .iter()
        .filter(|(op, _)| op == "AssumeRoleWithWebIdentity")
        .filter_map(|(_, c)| c["issuedAccessKeyId"].as_str().map(str::to_owned))
        .collect()
}

/// Asserts that nothing the exchange holds secret is in `text` (`what` names it): the
/// license token, any access key the role got, and any JWT at all (a log or message has none).
fn assert_no_secret(text: &str, token: &str, keys: &[String], what: &str) {
    assert_no_token(text, token, what);
    for key in keys {
        assert!(!text.contains(key.as_str()), "role key {key} in {what}");
    }
}

/// Asserts that neither the license token nor any JWT (an access token) is in `text`, and
/// that every secret key the SDK's own debug lines name is redacted.
fn assert_no_token(text: &str, token: &str, what: &str) {
    assert!(!text.contains(token.trim()), "the license token in {what}");
    assert!(!text.contains("eyJ"), "a JWT in {what}:\n{text}");
    for (at, _) in text.match_indices("secret_access_key") {
        let rest = &text[at..(at + 60).min(text.len())];
        assert!(
            rest.contains("** redacted **"),
            "a secret key in {what}: {rest}"
        );
    }
    assert!(
        !text.contains("session_token: \\\""),
        "a session token in {what}"
    );
}

#[test]
fn a_license_token_checks_the_license_out_with_the_role_s_credentials_only() {
    let (emu, file) = start(&[]);
    let token = std::fs::read_to_string(&file).unwrap();
    let result = emu.dir.join("token-result.json");
    let out = token_gate(&emu, &file)
        .env("MPGATE_RESULT_FILE", &result)
        .args(["sh", "-c", "env; echo WORKLOAD STARTED"])
        .run();
    out.expect(0);
    assert!(out.stdout.contains("WORKLOAD STARTED"), "{out:?}");
    assert!(
        out.stderr
            .contains("credentials: license token (MPGATE_LICENSE_TOKEN_FILE"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("the default credential chain is not consulted (AWS_ACCESS_KEY_ID not used)"),
        "{}",
        out.stderr
    );

    let seen = calls(&emu);
    let ops: Vec<&str> = seen.iter().map(|(op, _)| op.as_str()).collect();
    assert_eq!(
        ops,
        [
            "GetAccessToken",
            "AssumeRoleWithWebIdentity",
            "CheckoutLicense",
            "CheckInLicense"
        ],
        "{seen:?}"
    );
    // GetAccessToken unsigned, as AWS's reference code sends it.
    assert_eq!(seen[0].1["credentialScope"], Value::Null, "{:?}", seen[0]);
    assert_eq!(seen[0].1["status"], 200);
    let sts = &seen[1].1;
    assert_eq!(sts["roleArn"], ROLE, "{sts}");
    let session = sts["roleSessionName"].as_str().unwrap();
    assert!(
        session.len() == 23 && session.starts_with("mpgate-"),
        "{session}"
    );
    // The checkout and check-in signed with the role's key, never the ambient test pair.
    let keys = issued_keys(&emu);
    assert_eq!(keys.len(), 1);
    for (op, call) in &seen[2..] {
        assert_eq!(signed_with(call), keys[0], "{op}: {call}");
        assert_ne!(signed_with(call), ACCESS_KEY_ID);
    }

    // No secret in the logs, the result file, the termination log or the workload's
    // environment (where only MPGATE_LICENSE_TOKEN, the checkout's own signed token, is a JWT).
    assert_no_secret(&out.stderr, &token, &keys, "the logs");
    let recorded = std::fs::read_to_string(&result).unwrap();
    assert_no_secret(&recorded, &token, &keys, "the result file");
    assert_eq!(result_file(&result)["outcome"], "verified");
    let environment: String = out
        .stdout
        .lines()
        .filter(|l| !l.starts_with("MPGATE_LICENSE_TOKEN="))
        .collect::<Vec<_>>()
        .join("\n");
    assert_no_secret(&environment, &token, &keys, "the workload's environment");
    assert!(
        environment.contains("MPGATE_LICENSE_TOKEN_FILE="),
        "{environment}"
    );
    assert_eq!(in_use(&emu, "Seats"), "0");

    // The most the logs can say (the SDK's own lines capped, logging.rs): its debug lines
    // name the role's access key ID (as they do any credentials'), never its secrets.
    let out = token_gate(&emu, &file).env("MPGATE_LOG", "trace").run();
    out.expect(0);
    assert!(
        out.stderr.contains("GetAccessToken answered"),
        "{}",
        out.stderr
    );
    assert_no_token(&out.stderr, &token, "the trace-level logs");

    // A failure's termination log and result file hold no secret either.
    let failed = emu.dir.join("token-failed.json");
    let out = token_gate(&emu, &file)
        .env("MPGATE_ENTITLEMENTS", "Pro")
        .env("MPGATE_RESULT_FILE", &failed)
        .run();
    out.expect_error(10, "NoEntitlementsAllowedException");
    let keys = issued_keys(&emu);
    let termination = std::fs::read_to_string(emu.dir.join("termination-log")).unwrap();
    assert_no_secret(&termination, &token, &keys, "the termination log");
    assert_no_secret(
        &std::fs::read_to_string(&failed).unwrap(),
        &token,
        &keys,
        "a failure's result file",
    );
    assert_no_secret(&out.stderr, &token, &keys, "a failure's logs");
}

#[test]
fn the_token_and_role_are_found_where_aws_s_samples_and_the_buyer_s_secret_put_them() {
    let (emu, file) = start(&[]);
    let role_of_last_call = |emu: &Emulator| {
        let seen = calls(emu);
        let (_, sts) = seen
            .iter()
            .rev()
            .find(|(op, _)| op == "AssumeRoleWithWebIdentity")
            .expect("an STS call");
        sts["roleArn"].as_str().unwrap().to_string()
    };
    // AWS's seller guide's variables, and its Go sample's.
    for variable in [
        "AWS_WEB_IDENTITY_REFRESH_TOKEN_FILE",
        "AWS_LICENSE_ACCESS_FILE",
    ] {
        let mut gate = emu.contract_gate("Basic");
        gate.env("AWS_ENDPOINT_URL_STS", &emu.url)
            .env(variable, &file)
            .env("AWS_ROLE_ARN", ROLE);
        let out = gate.run();
        out.expect(0);
        assert!(
            out.stderr
                .contains(&format!("credentials: license token ({variable}")),
            "{}",
            out.stderr
        );
    }
    // MPGATE_LICENSE_ROLE_ARN wins over the iam_role file, which wins over AWS_ROLE_ARN (it
    // may be an IRSA role).
    let other = "arn:aws:iam::111122223333:role/other";
    let out = token_gate(&emu, &file)
        .env("MPGATE_LICENSE_ROLE_ARN", other)
        .env("AWS_ROLE_ARN", other)
        .run();
    out.expect_error(
        13,
        "arn:aws:iam::111122223333:role/other (from MPGATE_LICENSE_ROLE_ARN)",
    );
    assert_eq!(role_of_last_call(&emu), other);
    token_gate(&emu, &file)
        .env("AWS_ROLE_ARN", other)
        .run()
        .expect(0);
    assert_eq!(role_of_last_call(&emu), ROLE);
    // A token file written by hand may end in a newline; the session name may be given.
    let copy = emu.dir.join("hand-made");
    std::fs::create_dir_all(&copy).unwrap();
    let token = std::fs::read_to_string(&file).unwrap();
    std::fs::write(copy.join("license_token"), format!("{token}\n")).unwrap();
    let out = token_gate(&emu, &copy.join("license_token"))
        .env("AWS_ROLE_ARN", ROLE)
        .env("AWS_ROLE_SESSION_NAME", "buyer-session")
        .run();
    out.expect(0);
    let seen = calls(&emu);
    let (_, sts) = seen
        .iter()
        .rev()
        .find(|(op, _)| op == "AssumeRoleWithWebIdentity")
        .unwrap();
    assert_eq!(sts["roleSessionName"], "buyer-session");

    // --version says where the credentials come from.
    let version = mpgate_testkit::run_bounded(
        std::process::Command::new(MPGATE)
            .arg("--version")
            .env("MPGATE_LICENSE_TOKEN_FILE", &file),
        CHILD_LIMIT,
    );
    assert!(
        version
            .stdout
            .contains("credentials: license token (MPGATE_LICENSE_TOKEN_FILE)"),
        "{}",
        version.stdout
    );
}

/// A token file, variables beside it, the exit code and words of the refusal.
type Case<'a> = (&'a Path, Vec<(&'a str, &'a str)>, i32, &'a str);

#[test]
fn a_bad_token_file_role_or_region_is_refused_before_any_call() {
    let (emu, file) = start(&[]);
    let dir = emu.dir.join("bad");
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let empty = write("empty", "\n");
    let not_jwt = write("not-jwt", "this is not a token");
    let missing = dir.join("missing");
    let cases: Vec<Case> = vec![
        (&missing, vec![], 2, "which is not a readable file"),
        (&dir, vec![], 2, "is not a regular file"),
        (&empty, vec![], 2, "which is empty: save the license token"),
        (&not_jwt, vec![], 2, "does not hold a license token (a JWT"),
        // No iam_role beside these files and no role variable.
        (
            &file,
            vec![("MPGATE_LICENSE_ROLE_ARN", "admin")],
            2,
            "MPGATE_LICENSE_ROLE_ARN \"admin\" is not an IAM role ARN",
        ),
        (
            &file,
            vec![("MPGATE_LICENSE_REGION", "not a region")],
            2,
            "MPGATE_LICENSE_REGION \"not a region\" is not a region name",
        ),
    ];
    let before = emu.calls().len();
    for (path, env, code, words) in cases {
        let mut gate = token_gate(&emu, path);
        for (k, v) in env {
            gate.env(k, v);
        }
        let out = gate.run();
        out.expect_error(code, words);
        assert!(
            !out.stderr.contains("this is not a token"),
            "a message quotes the file: {}",
            out.stderr
        );
    }
    // A readable JWT but no role anywhere.
    let alone = dir.join("alone");
    std::fs::create_dir_all(&alone).unwrap();
    std::fs::copy(&file, alone.join("license_token")).unwrap();
    token_gate(&emu, &alone.join("license_token")).run().expect_error(
        2,
        "MPGATE_LICENSE_ROLE_ARN is not set, and there is neither an iam_role file beside the license token",
    );
    std::fs::write(alone.join("iam_role"), "nonsense").unwrap();
    token_gate(&emu, &alone.join("license_token"))
        .run()
        .expect_error(
            2,
            "iam_role holds \"nonsense\", which is not an IAM role ARN",
        );
    // No region is assumed: AWS_DEFAULT_REGION is not the license's home region.
    token_gate(&emu, &file)
        .env_remove("AWS_REGION")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .run()
        .expect_error(15, "set MPGATE_LICENSE_REGION (or AWS_REGION)");
    assert_eq!(emu.calls().len(), before, "no call was made");
    // MPGATE_LICENSE_REGION wins over AWS_REGION.
    let out = token_gate(&emu, &file)
        .env("AWS_REGION", "eu-west-1")
        .env("MPGATE_LICENSE_REGION", "us-east-1")
        .run();
    out.expect(0);
}

/// How a fault of the exchange ends the gate: the flag, its spec, the exit code and words.
const EXCHANGE_FAULTS: &[(&str, &str, i32, &str)] = &[
    ("--license-fault", "GetAccessToken=access-denied", 10, "create a new token on the product's launch page"),
    ("--license-fault", "GetAccessToken=validation", 10, "it has expired, was revoked, or is for another product's license"),
    ("--license-fault", "GetAccessToken=authorization", 10, "create a new token"),
    ("--license-fault", "GetAccessToken=rate-limit-exceeded", 14, "RateLimitExceededException"),
    ("--license-fault", "GetAccessToken=server-internal", 14, "License Manager service kept failing"),
    ("--license-fault", "GetAccessToken=http-503-html", 14, "License Manager"),
    ("--sts-fault", "AssumeRoleWithWebIdentity=access-denied", 13, "openid-license-manager.amazonaws.com:amr\": \"aws:license-manager:token-issuer-account-id:111122223333\""),
    ("--sts-fault", "AssumeRoleWithWebIdentity=idp-rejected-claim", 13, "trust policy must allow sts:AssumeRoleWithWebIdentity"),
    ("--sts-fault", "AssumeRoleWithWebIdentity=idp-communication-error", 14, "STS service kept failing"),
    ("--sts-fault", "AssumeRoleWithWebIdentity=throttling", 14, "STS"),
    ("--sts-fault", "AssumeRoleWithWebIdentity=region-disabled", 13, "activate it in the IAM console"),
    ("--sts-fault", "AssumeRoleWithWebIdentity=invalid-identity-token", 13, "is the license's home region"),
    ("--sts-fault", "AssumeRoleWithWebIdentity=expired-token", 13, "STS did not take the access token"),
    ("--sts-fault", "AssumeRoleWithWebIdentity=malformed-policy-document", 13, "MalformedPolicyDocument"),
    ("--sts-fault", "AssumeRoleWithWebIdentity=hang", 14, "deadline"),
    ("--license-fault", "CheckoutLicense=access-denied", 13, "attach the AWS managed policy AWSLicenseManagerConsumptionPolicy"),
];

#[test]
fn every_error_of_the_exchange_has_its_exit_code_and_advice() {
    for (flag, spec, code, words) in EXCHANGE_FAULTS {
        let (emu, file) = start(&[flag, spec]);
        let token = std::fs::read_to_string(&file).unwrap();
        let result = emu.dir.join("fault.json");
        let out = token_gate(&emu, &file)
            // Retried faults are retried until the deadline: keep it short.
            .env("MPGATE_TIMEOUT", "2s")
            .env("MPGATE_RESULT_FILE", &result)
            .args(["sh", "-c", "echo WORKLOAD STARTED"])
            .run();
        out.expect_error(*code, words);
        assert!(!out.stdout.contains("WORKLOAD STARTED"), "{spec}: {out:?}");
        assert_eq!(result_file(&result)["exitCode"], *code, "{spec}");
        let keys = issued_keys(&emu);
        assert_no_secret(&out.stderr, &token, &keys, spec);
        let failed = calls(&emu)
            .iter()
            .filter(|(_, c)| {
                c["fault"]
                    .as_str()
                    .is_some_and(|f| f != "none" && !f.is_empty())
            })
            .count();
        if *code == 14 {
            assert!(
                failed >= 2,
                "{spec}: a transient fault is retried ({failed} calls)"
            );
        } else {
            assert_eq!(failed, 1, "{spec}: a final answer is not retried");
        }
    }
}

#[test]
fn throttling_and_the_identity_provider_s_failures_are_retried_to_success() {
    for (flag, spec) in [
        (
            "--sts-fault",
            "AssumeRoleWithWebIdentity=idp-communication-error*2",
        ),
        ("--sts-fault", "AssumeRoleWithWebIdentity=throttling*2"),
        ("--license-fault", "GetAccessToken=rate-limit-exceeded*1"),
    ] {
        let (emu, file) = start(&[flag, spec]);
        token_gate(&emu, &file).run().expect(0);
    }
}

#[test]
fn a_revoked_or_foreign_token_is_not_entitled() {
    let (emu, file) = start(&[]);
    // Another emulator's token (its own keys): License Manager did not issue it to this buyer.
    let (_other, foreign) = start(&[]);
    token_gate(&emu, &foreign)
        .env("AWS_ROLE_ARN", ROLE)
        .run()
        .expect_error(10, "create a new token on the product's launch page");
    send(emu.pid(), libc::SIGUSR2);
    wait_until(CHILD_LIMIT, "the token revoked", || {
        let out = token_gate(&emu, &file).run();
        (out.code() == 10).then_some(out)
    })
    .expect_error(10, "License Manager refused the license token in");
}

/// A workload that says it is up, then runs until `stop` exists (exiting 3) or SIGTERM
/// (exiting 0 after saying so).
fn workload(stop: &Path) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        format!(
            "trap 'echo got SIGTERM; exit 0' TERM; echo ready; while [ ! -e '{}' ]; do sleep 0.05; done; exit 3",
            stop.display()
        ),
    ]
}

/// Waits (bounded) until the emulator has answered `n` extensions.
fn wait_for_extensions(emu: &Emulator, n: usize) {
    wait_until(CHILD_LIMIT, "extensions", || {
        let extended = calls(emu)
            .iter()
            .filter(|(op, c)| op == "ExtendLicenseConsumption" && c["status"] == 200)
            .count();
        (extended >= n).then_some(())
    });
}

#[test]
fn a_held_seat_renews_the_role_s_credentials_across_several_of_their_lifetimes() {
    // Credentials and access tokens for 3 seconds, a seat for 4: every extension finds the
    // credentials due, and an unrenewed pair would be refused (ExpiredTokenException).
    let (emu, file) = start(&[
        "--license-entitlement",
        "Seats=1",
        "--consumption-ttl",
        "4s",
        "--role-credentials-ttl",
        "3s",
        "--access-token-ttl",
        "3s",
    ]);
    let token = std::fs::read_to_string(&file).unwrap();
    let stop = emu.dir.join("stop");
    let result = emu.dir.join("hold.json");
    let mut running = token_gate(&emu, &file)
        .env("MPGATE_ENTITLEMENTS", "Seats=1")
        .env("MPGATE_SEAT", "hold")
        .env("MPGATE_RESULT_FILE", &result)
        .args(workload(&stop))
        .spawn();
    assert_eq!(running.next_line("workload ready"), "ready");
    // Four pairs: the hold outlived three of their lifetimes (renewed when due, not at every
    // extension: a pair with more than half its life left is kept).
    wait_until(CHILD_LIMIT, "three renewals", || {
        (issued_keys(&emu).len() >= 4).then_some(())
    });
    wait_for_extensions(&emu, 3);
    std::fs::write(&stop, "").unwrap();
    let out = running.wait();
    out.expect(3);

    let seen = calls(&emu);
    let keys = issued_keys(&emu);
    // Every License Manager call signed with a pair STS issued, and none refused.
    let signed: Vec<&str> = seen
        .iter()
        .filter(|(op, _)| op.ends_with("License") || op == "ExtendLicenseConsumption")
        .map(|(op, c)| {
            assert_eq!(c["status"], 200, "{op}: {c}");
            signed_with(c)
        })
        .collect();
    assert!(
        signed.iter().all(|k| keys.iter().any(|i| i == k)),
        "{signed:?} {keys:?}"
    );
    let distinct: std::collections::BTreeSet<&&str> = signed.iter().collect();
    assert!(distinct.len() >= 3, "{signed:?}");
    assert_eq!(seen.last().unwrap().0, "CheckInLicense");
    assert_eq!(in_use(&emu, "Seats"), "0");
    assert_no_secret(&out.stderr, &token, &keys, "a hold's logs");
    assert_no_secret(
        &std::fs::read_to_string(&result).unwrap(),
        &token,
        &keys,
        "a hold's result file",
    );
}

#[test]
fn a_token_revoked_during_a_hold_loses_the_seat_with_its_own_message() {
    let (emu, file) = start(&[
        "--license-entitlement",
        "Seats=1",
        "--consumption-ttl",
        "4s",
        "--role-credentials-ttl",
        "2s",
    ]);
    let result = emu.dir.join("lost.json");
    let mut running = token_gate(&emu, &file)
        .env("MPGATE_ENTITLEMENTS", "Seats=1")
        .env("MPGATE_SEAT", "hold")
        .env("MPGATE_GRACE", "2s")
        .env("MPGATE_RESULT_FILE", &result)
        .args(workload(&emu.dir.join("never")))
        .spawn();
    assert_eq!(running.next_line("workload ready"), "ready");
    send(emu.pid(), libc::SIGUSR2);
    assert_eq!(running.next_line("SIGTERM to the workload"), "got SIGTERM");
    let out = running.wait();
    out.expect_error(
        10,
        "the role's credentials cannot be renewed: License Manager refused the license token",
    );
    assert!(
        out.error_message()
            .contains("create a new token on the product's launch page"),
        "{}",
        out.stderr
    );
    let recorded = result_file(&result);
    assert_eq!(recorded["outcome"], "license-lost", "{recorded}");
    assert_eq!(recorded["exitCode"], 10);
}
