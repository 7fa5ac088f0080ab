//! The gate's contract, end to end: the real `mpgate` against the real emulator on loopback.

mod common;

use std::time::Duration;

use common::*;
use mpgate_testkit::faults::{ServiceFault, SERVICE_FAULTS};
use mpgate_testkit::{result_file, scratch, Emulator};
use serde_json::Value;

const SELLER_GUIDE_DEMO_KEY: &str = "-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDdlatRjRjogo3WojgGHFHYLugd
UWAY9iR3fy4arWNA1KoS8kVw33cJibXr8bvwUAUparCwlvdbH6dvEOfou0/gCFQs
HUfQrSDv+MuSUMAe8jzKE4qW+jK+xQU9a03GUnKHkkle+Q0pX/g6jXZ7r1/xAK5D
o2kQ+X5xK9cipRgEKwIDAQAB
-----END PUBLIC KEY-----
";

fn nonce_of(call: &Value) -> String {
    call["nonce"]
        .as_str()
        .unwrap_or_else(|| panic!("the call carried no nonce: {call}"))
        .to_string()
}

#[test]
fn init_mode_exits_0_when_entitled_and_sends_a_fresh_256_bit_nonce() {
    let emu = Emulator::start(&[]);
    let out = emu.gate().run();
    out.expect(0);
    assert_eq!(out.stdout, "", "mpgate must write nothing to stdout");
    let calls = emu.calls();
    assert_eq!(calls.len(), 1);
    let nonce = nonce_of(&calls[0]);
    assert_eq!(nonce.len(), 64);
    assert!(nonce.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(calls[0]["credentialScope"]
        .as_str()
        .unwrap()
        .ends_with("/us-east-1/aws-marketplace/aws4_request"));
    let info = out
        .log_lines()
        .into_iter()
        .find(|l| l["level"] == "INFO")
        .expect("an INFO line");
    assert_eq!(info["entitlement"], "verified");

    emu.gate().run().expect(0);
    assert_ne!(
        nonce_of(&emu.calls()[1]),
        nonce,
        "each run must use a new nonce"
    );
}

#[test]
fn hand_over_execs_in_place_with_argv_stdio_exit_code_and_proof() {
    let emu = Emulator::start(&[]);
    // Field 22 of /proc/$$/stat: the start time the exec kept (the name "sh" has no spaces).
    let script = r#"echo "$$"; printf '%s|' "$0" "$@"; echo; echo "$MPGATE_ENTITLEMENT"; echo "$MPGATE_SALT"; echo "$MPGATE_SIGNATURE"; echo "$KEEP_ME"; echo "${MPGATE_NONCE-unset}"; cut -d' ' -f22 /proc/$$/stat; stat -L -c %i /proc/$$/ns/pid; exit 42"#;
    let out = emu
        .gate()
        .env("KEEP_ME", "inherited")
        .env("MPGATE_NONCE", "inherited")
        .env("MPGATE_SALT", "inherited")
        .args([
            "--",
            "sh",
            "-c",
            script,
            "arg zero",
            "one two",
            "--timeout",
            "",
        ])
        .run();
    out.expect(42);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines[0],
        out.pid.to_string(),
        "the workload must keep mpgate's PID"
    );
    assert_eq!(
        lines[1], "arg zero|one two|--timeout||",
        "argv must be untouched"
    );
    assert_eq!(lines[2], "verified");
    assert_eq!(
        lines[4].split('.').count(),
        3,
        "MPGATE_SIGNATURE is the JWT"
    );
    assert_eq!(lines[5], "inherited");
    assert_eq!(lines[6], "unset", "the nonce itself is never handed over");
    // The nonce sent is the salt's for the workload's own process: this boot, the PID
    // namespace, mpgate's PID and the start time execve kept.
    let salt = lines[3];
    assert!(mpgate_proof::binding::is_salt(salt), "{salt:?}");
    let workload = mpgate_proof::Process {
        boot_id: mpgate_proof::binding::boot_id().unwrap(),
        pid_namespace: lines[8].parse().unwrap(),
        pid: out.pid,
        start_time: lines[7].parse().unwrap(),
    };
    assert_eq!(nonce_of(&emu.calls()[0]), workload.nonce(salt));
}

#[test]
fn the_command_may_follow_options_without_a_separator() {
    let emu = Emulator::start(&[]);
    let out = emu
        .gate()
        .args(["--timeout", "5s", "sh", "-c", "exit 3"])
        .run();
    out.expect(3);
}

#[test]
fn a_workload_signature_variable_is_never_inherited() {
    let emu = Emulator::start(&["--fault", "hang"]);
    let out = emu
        .gate()
        .env("MPGATE_SIGNATURE", "forged")
        .env("MPGATE_ON_TRANSIENT_ERROR", "allow")
        .env("MPGATE_TIMEOUT", "1s")
        .args([
            "sh",
            "-c",
            r#"echo "${MPGATE_SIGNATURE:-unset} $MPGATE_ENTITLEMENT""#,
        ])
        .run();
    out.expect(0);
    assert_eq!(out.stdout.trim(), "unset unverified");
}

#[test]
fn service_answers_map_to_their_exit_codes_and_say_what_to_do() {
    // The shared table (testkit's faults.rs): the emulator's tests check its statuses and
    // error types, the conformance test its list against botocore's model.
    let final_answers = SERVICE_FAULTS.iter().filter(|f| f.exit_code != 14);
    for fault in final_answers {
        let ServiceFault {
            fault,
            exit_code,
            hint,
            ..
        } = *fault;
        let emu = Emulator::start(&["--fault", fault]);
        let out = emu.gate().args(["sh", "-c", "echo workload ran"]).run();
        out.expect(exit_code);
        assert_eq!(out.stdout, "", "{fault}: the workload must not run");
        let message = out.error_message();
        assert!(message.contains(hint), "{fault}: {message}");
        assert_eq!(emu.calls().len(), 1, "{fault} must not be retried");
        let termination = std::fs::read_to_string(emu.dir.join("termination-log")).unwrap();
        assert_eq!(termination.lines().count(), 1, "{fault}: {termination}");
        assert!(termination.contains(hint), "{fault}: {termination}");
    }
}

#[test]
fn every_bad_token_is_rejected_with_exit_12() {
    let cases: &[(&str, &str)] = &[
        ("token-wrong-key", "does not verify"),
        ("token-bad-signature", "does not verify"),
        ("token-alg-none", "\"none\""),
        ("token-hs256-public-key", "\"HS256\""),
        ("token-rs256", "\"RS256\""),
        ("token-wrong-nonce", "nonce"),
        ("token-missing-nonce", "nonce is missing"),
        ("token-wrong-product", "productCode"),
        ("token-wrong-version", "publicKeyVersion"),
        ("token-version-string", "publicKeyVersion is \"1\""),
        ("token-stale-iat", "MPGATE_MAX_TOKEN_AGE"),
        ("token-future-iat", "in the future"),
        ("token-expired", "expired"),
        ("token-oversize", "more than"),
        ("token-garbage", "not a JWS"),
        ("token-missing", "without a Signature"),
        ("token-empty", "without a Signature"),
        ("token-html-answer", "unusable"),
    ];
    for (fault, hint) in cases {
        let emu = Emulator::start(&["--fault", fault]);
        let out = emu
            .gate()
            .env("MPGATE_ON_TRANSIENT_ERROR", "allow")
            .args(["sh", "-c", "echo ran"])
            .run();
        out.expect(12);
        assert_eq!(out.stdout, "", "{fault}: the workload must not run");
        let message = out.error_message();
        assert!(message.contains(hint), "{fault}: {message}");
    }
}

#[test]
fn a_valid_token_without_iat_is_accepted() {
    let emu = Emulator::start(&["--fault", "token-no-iat"]);
    emu.gate().run().expect(0);
}

#[test]
fn retries_reuse_one_nonce_until_the_service_answers() {
    let emu = Emulator::start(&["--fault", "throttle", "--fail-first", "2"]);
    let out = emu.gate().run();
    out.expect(0);
    let calls = emu.calls();
    assert_eq!(calls.len(), 3);
    assert!(
        calls.iter().all(|c| nonce_of(c) == nonce_of(&calls[0])),
        "{calls:?}"
    );
    let info = out
        .log_lines()
        .into_iter()
        .find(|l| l["entitlement"] == "verified")
        .unwrap();
    assert_eq!(info["attempts"], 3);
}

#[test]
fn a_retried_5xx_closes_its_connection_and_logs_no_error_when_the_retry_succeeds() {
    let emu = Emulator::start(&["--fault", "internal-error", "--fail-first", "1"]);
    let out = emu
        .gate()
        .env("MPGATE_LOG", "info,aws_smithy_runtime=debug")
        .run();
    out.expect(0);
    assert_eq!(emu.calls().len(), 2);
    let lines = out.log_lines();
    let errors: Vec<_> = lines.iter().filter(|l| l["level"] == "ERROR").collect();
    assert!(errors.is_empty(), "{errors:?}");
    // The SDK closes the connection of a failed attempt rather than reusing it.
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "the connection was marked for closure"),
        "{}",
        out.stderr
    );
}

#[test]
fn transient_failures_end_in_14_within_the_deadline() {
    for fault in [
        "throttle",
        "internal-error",
        "http-502-html",
        "drop",
        "hang",
    ] {
        let emu = Emulator::start(&["--fault", fault]);
        let out = emu.gate().env("MPGATE_TIMEOUT", "2s").run();
        out.expect(14);
        assert!(
            out.elapsed < Duration::from_secs(5),
            "{fault}: took {:?}",
            out.elapsed
        );
        let calls = emu.calls();
        assert!(
            calls.len() >= 2,
            "{fault} must be retried: {} call(s)",
            calls.len()
        );
        assert!(
            calls.iter().all(|c| nonce_of(c) == nonce_of(&calls[0])),
            "{fault}: nonce changed"
        );
        let message = out.error_message();
        assert!(
            message.contains("MPGATE_TIMEOUT") || message.contains("network path"),
            "{fault}: {message}"
        );
    }
}

#[test]
fn a_closed_port_is_unreachable() {
    let dir = scratch("closed");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let emu_key = Emulator::start(&[]);
    let out = Gate::hermetic(&dir)
        .env("AWS_REGION", "us-east-1")
        .env("MPGATE_PRODUCT_CODE", "prod-x")
        .env("MPGATE_PUBLIC_KEY_FILE", &emu_key.public_key_file)
        .env("MPGATE_TIMEOUT", "1500ms")
        .args(["--endpoint-url", &format!("http://127.0.0.1:{port}")])
        .run();
    out.expect(14);
    assert!(out.elapsed < Duration::from_secs(5));
}

#[test]
fn aws_max_attempts_caps_the_retries() {
    let emu = Emulator::start(&["--fault", "throttle"]);
    emu.gate().env("AWS_MAX_ATTEMPTS", "1").run().expect(14);
    assert_eq!(emu.calls().len(), 1);
}

#[test]
fn the_allow_policy_only_covers_an_unreachable_service() {
    let emu = Emulator::start(&["--fault", "throttle"]);
    let out = emu
        .gate()
        .env("MPGATE_TIMEOUT", "1s")
        .args([
            "--on-transient-error",
            "allow",
            "sh",
            "-c",
            r#"echo "$MPGATE_ENTITLEMENT""#,
        ])
        .run();
    out.expect(0);
    assert_eq!(out.stdout.trim(), "unverified");
    assert!(out
        .log_lines()
        .iter()
        .any(|l| l["level"] == "WARN" && l["message"].as_str().unwrap().contains("NOT verified")));

    let emu = Emulator::start(&["--fault", "not-entitled"]);
    emu.gate()
        .env("MPGATE_ON_TRANSIENT_ERROR", "allow")
        .run()
        .expect(10);
}

#[test]
fn missing_region_or_credentials_exit_15_before_any_call() {
    let emu = Emulator::start(&[]);
    let out = emu.gate().env_remove("AWS_REGION").run();
    out.expect(15);
    assert!(out.error_message().contains("AWS_REGION"));

    let out = emu
        .gate()
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .run();
    out.expect_error(15, "task role");
    assert_eq!(emu.calls().len(), 0);
}

#[test]
fn configuration_errors_exit_2_before_any_call() {
    let emu = Emulator::start(&[]);
    let dir = emu.dir.clone();
    std::fs::write(dir.join("junk.pem"), "not a key").unwrap();
    std::fs::write(
        dir.join("private.pem"),
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let pem = std::fs::read_to_string(&emu.public_key_file).unwrap();
    type Case<'a> = (Vec<(&'a str, String)>, Vec<&'a str>, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec![("MPGATE_PRODUCT_CODE", String::new())],
            vec![],
            "AWS Marketplace Management Portal",
        ),
        (
            vec![],
            vec!["--product-code", "has space"],
            "invalid product code",
        ),
        (
            vec![("MPGATE_PUBLIC_KEY_VERSION", "0".into())],
            vec![],
            "MPGATE_PUBLIC_KEY_VERSION",
        ),
        (
            vec![("MPGATE_PUBLIC_KEY_VERSION", "one".into())],
            vec![],
            "MPGATE_PUBLIC_KEY_VERSION",
        ),
        (
            vec![("MPGATE_PUBLIC_KEY_FILE", String::new())],
            vec![],
            "MPGATE_PUBLIC_KEY_FILE",
        ),
        (
            vec![(
                "MPGATE_PUBLIC_KEY_FILE",
                dir.join("nope.pem").display().to_string(),
            )],
            vec![],
            "cannot read public key",
        ),
        (
            vec![(
                "MPGATE_PUBLIC_KEY_FILE",
                dir.join("junk.pem").display().to_string(),
            )],
            vec![],
            "not a PEM RSA public key",
        ),
        (
            vec![(
                "MPGATE_PUBLIC_KEY_FILE",
                dir.join("private.pem").display().to_string(),
            )],
            vec![],
            "private key",
        ),
        (
            vec![("MPGATE_PUBLIC_KEY", pem)],
            vec![],
            "exactly one key source",
        ),
        (vec![("MPGATE_TIMEOUT", "soon".into())], vec![], "30s"),
        (vec![], vec!["--max-token-age", "0"], "max token age"),
        (
            vec![("MPGATE_ON_TRANSIENT_ERROR", "maybe".into())],
            vec![],
            "'allow'",
        ),
        (
            vec![("MPGATE_LOG_FORMAT", "xml".into())],
            vec![],
            "auto, text or json",
        ),
        (
            vec![("AWS_MAX_ATTEMPTS", "0".into())],
            vec![],
            "AWS_MAX_ATTEMPTS",
        ),
        (
            vec![("AWS_MAX_ATTEMPTS", "lots".into())],
            vec![],
            "AWS_MAX_ATTEMPTS",
        ),
        (
            vec![("AWS_RETRY_MODE", "yolo".into())],
            vec![],
            "AWS_RETRY_MODE",
        ),
        (
            vec![("MPGATE_LOG", "mpgate=loud".into())],
            vec![],
            "MPGATE_LOG",
        ),
        (
            // The AWS seller guide's sample key: its private half is public.
            vec![
                ("MPGATE_PUBLIC_KEY_FILE", String::new()),
                ("MPGATE_PUBLIC_KEY", SELLER_GUIDE_DEMO_KEY.into()),
            ],
            vec![],
            "whose private key is public",
        ),
        (vec![], vec!["--bogus"], "--bogus"),
        (vec![], vec!["--endpoint-url", "ftp://x"], "https://"),
    ];
    for (env, args, hint) in cases {
        let mut gate = emu.gate();
        for (k, v) in &env {
            gate.env(k, v);
        }
        let out = gate.args(&args).args(["sh", "-c", "echo ran"]).run();
        out.expect(2);
        assert_eq!(out.stdout, "", "{env:?} {args:?}");
        let message = out.error_message();
        assert!(message.contains(hint), "{env:?} {args:?}: {message}");
    }
    assert_eq!(
        emu.calls().len(),
        0,
        "no configuration error may reach the network"
    );
}

#[test]
fn a_flag_overrides_its_environment_variable() {
    let emu = Emulator::start(&[]);
    let product = emu.product_code.clone();
    emu.gate()
        .env("MPGATE_PRODUCT_CODE", "prod-wrong")
        .args(["--product-code", &product])
        .run()
        .expect(0);
}

#[test]
fn an_inline_pem_key_works() {
    let emu = Emulator::start(&[]);
    let pem = std::fs::read_to_string(&emu.public_key_file).unwrap();
    emu.gate()
        .env_remove("MPGATE_PUBLIC_KEY_FILE")
        .env("MPGATE_PUBLIC_KEY", pem)
        .run()
        .expect(0);
}

#[test]
fn a_missing_or_unexecutable_command_exits_127_or_126() {
    let emu = Emulator::start(&[]);
    let out = emu.gate().args(["--", "mpgate-no-such-command"]).run();
    out.expect(127);
    assert!(out.error_message().contains("not found"));
    let script = emu.dir.join("not-executable.sh");
    std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
    let out = emu.gate().args(["--"]).args([&script]).run();
    out.expect(126);
}

#[test]
fn the_result_file_records_success_and_failure_atomically() {
    let emu = Emulator::start(&[]);
    let result = emu.dir.join("out").join("result.json");
    std::fs::create_dir_all(result.parent().unwrap()).unwrap();
    emu.gate()
        .env("MPGATE_RESULT_FILE", &result)
        .run()
        .expect(0);
    let r = result_file(&result);
    assert_eq!(r["entitled"], true);
    assert_eq!(r["outcome"], "verified");
    assert_eq!(r["exitCode"], 0);
    assert_eq!(r["productCode"], emu.product_code.as_str());
    assert_eq!(r["publicKeyVersion"], 1);
    assert_eq!(r["nonce"].as_str().unwrap(), nonce_of(&emu.calls()[0]));
    assert_eq!(r["signature"].as_str().unwrap().split('.').count(), 3);
    assert!(r["verifiedAt"].as_str().unwrap().ends_with('Z'));
    assert!(r["message"].is_string());
    assert!(
        !emu.dir.join("termination-log").exists(),
        "success writes no termination log"
    );

    let emu = Emulator::start(&["--fault", "not-entitled"]);
    emu.gate()
        .args(["--result-file"])
        .args([&result])
        .run()
        .expect(10);
    let r = result_file(&result);
    assert_eq!(r["entitled"], false);
    assert_eq!(r["outcome"], "not-entitled");
    assert_eq!(r["exitCode"], 10);
    assert!(r.get("signature").is_none());
    assert!(r["message"].as_str().unwrap().contains("not entitled"));
    let leftovers: Vec<_> = std::fs::read_dir(result.parent().unwrap())
        .unwrap()
        .collect();
    assert_eq!(leftovers.len(), 1, "only result.json may remain");
}

#[test]
fn an_unwritable_result_file_stops_the_hand_over() {
    let emu = Emulator::start(&[]);
    let out = emu
        .gate()
        .env(
            "MPGATE_RESULT_FILE",
            "/proc/mpgate-cannot-write/result.json",
        )
        .args(["sh", "-c", "echo ran"])
        .run();
    out.expect(2);
    assert_eq!(out.stdout, "");
    assert!(out.error_message().contains("result file"));
}

#[test]
fn logs_are_json_lines_on_a_pipe_and_text_on_request() {
    let emu = Emulator::start(&["--fault", "throttle", "--fail-first", "1"]);
    let out = emu.gate().env("MPGATE_LOG", "debug").run();
    out.expect(0);
    let lines = out.log_lines();
    assert!(lines.len() >= 2, "{}", out.stderr);

    let out = emu
        .gate()
        .env("MPGATE_LOG_FORMAT", "text")
        .env("MPGATE_PRODUCT_CODE", "")
        .run();
    out.expect(2);
    // The unpinned build's notice, then the error.
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{}", out.stderr);
    assert!(
        lines[0].trim_start().starts_with("WARN") && lines[0].contains(UNPINNED),
        "{}",
        out.stderr
    );
    assert!(lines[1].starts_with("ERROR"), "{}", out.stderr);
}

#[test]
fn no_secret_reaches_stderr_even_at_trace_level() {
    let emu = Emulator::start(&[]);
    let result = emu.dir.join("result.json");
    let out = emu
        .gate()
        .env("AWS_SESSION_TOKEN", SESSION_TOKEN)
        .env("MPGATE_LOG", "trace")
        .env("MPGATE_RESULT_FILE", &result)
        .run();
    out.expect(0);
    assert!(out.stderr.len() > 200, "trace logging should say something");
    for secret in [SECRET_ACCESS_KEY, SESSION_TOKEN] {
        assert!(!out.stderr.contains(secret), "secret leaked to stderr");
    }
    let r = result_file(&result);
    let signature = r["signature"].as_str().unwrap();
    let sig_part = signature.rsplit('.').next().unwrap();
    assert!(
        !out.stderr.contains(sig_part),
        "the token's signature must not be logged in full"
    );
}

#[test]
fn signals_before_the_hand_over_exit_128_plus_n() {
    for (signal, code) in [
        (libc::SIGTERM, 143),
        (libc::SIGINT, 130),
        (libc::SIGHUP, 129),
    ] {
        let emu = Emulator::start(&["--fault", "hang"]);
        let result = emu.dir.join("result.json");
        let running = emu
            .gate()
            .env("MPGATE_TIMEOUT", "20s")
            .env("MPGATE_RESULT_FILE", &result)
            .args(["sh", "-c", "echo ran"])
            .spawn();
        emu.wait_for_calls(1);
        running.signal(signal);
        let out = running.wait();
        out.expect(code);
        assert_eq!(out.stdout, "");
        assert!(
            out.elapsed < Duration::from_secs(10),
            "took {:?}",
            out.elapsed
        );
        let r = result_file(&result);
        assert_eq!(r["outcome"], "interrupted");
        assert_eq!(r["exitCode"], code);
    }
}

#[test]
fn a_key_rotation_notice_is_logged() {
    // The only key version served is the one expiring (the emulator's default is every
    // version but the highest).
    let emu = Emulator::start(&[
        "--rotation-timestamp",
        "1893456000",
        "--expiring-key-versions",
        "1",
    ]);
    let out = emu.gate().run();
    out.expect(0);
    assert!(
        out.log_lines().iter().any(|l| l["level"] == "WARN"
            && l["message"]
                .as_str()
                .unwrap()
                .contains("2030-01-01T00:00:00Z")),
        "{}",
        out.stderr
    );
}

#[test]
fn help_and_version_print_to_stdout() {
    let dir = scratch("help");
    let out = Gate::hermetic(&dir).args(["--help"]).run();
    out.expect(0);
    for name in [
        "MPGATE_PRODUCT_CODE",
        "--public-key-file",
        "--on-transient-error",
        "Exit codes",
    ] {
        assert!(out.stdout.contains(name), "{name}");
    }
    let out = Gate::hermetic(&dir).args(["--version"]).run();
    out.expect(0);
    assert!(out.stdout.starts_with("mpgate "));
}
