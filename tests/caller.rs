//! What AWS answers depending on who calls and how (the emulator's caller model, as strict as
//! AWS): each answer's exit code and advice, the request ID to quote to AWS Support, and no
//! retry after a 403.

mod common;

use common::*;
use mpgate_testkit::{result_file, Emulator};

/// Runs the gate with a result file and checks what every refused call must show: the exit
/// code and advice, one call only (a 403 is never retried), and the last answer's request ID
/// in the log, the result file and the termination log.
fn refused(emu: &Emulator, gate: &mut Gate, code: i32, advice: &str) {
    let result = emu.dir.join("caller-result.json");
    let out = gate
        .env("MPGATE_RESULT_FILE", &result)
        .args(["sh", "-c", "echo WORKLOAD STARTED"])
        .run();
    out.expect_error(code, advice);
    assert!(!out.stdout.contains("WORKLOAD STARTED"), "{out:?}");
    let calls = emu.calls();
    assert_eq!(calls.len(), 1, "retried: {calls:?}");
    let request_id = calls[0]["requestId"]
        .as_str()
        .unwrap_or_else(|| panic!("the emulator recorded no request ID: {calls:?}"));
    let recorded = result_file(&result);
    assert_eq!(recorded["requestId"], request_id, "{recorded}");
    assert_eq!(recorded["attempts"], 1, "{recorded}");
    let error_line = out
        .log_lines()
        .into_iter()
        .rfind(|l| l["level"] == "ERROR")
        .unwrap();
    assert_eq!(error_line["requestId"], request_id, "{error_line}");
    let termination = std::fs::read_to_string(emu.dir.join("termination-log")).unwrap();
    assert!(
        termination
            .trim_end()
            .ends_with(&format!("(request ID {request_id})")),
        "{termination}"
    );
}

#[test]
fn a_call_from_another_region_exits_13_and_says_to_let_the_platform_set_aws_region() {
    // The task runs in eu-west-3; AWS_REGION (set by hand) sends the call elsewhere.
    let emu = Emulator::start(&["--task-region", "eu-west-3"]);
    refused(&emu, &mut emu.gate(), 13, "let the platform set AWS_REGION");
}

#[test]
fn a_node_clock_20_minutes_off_exits_13_and_names_the_clock_without_a_retry() {
    // AWS's clock 20 minutes ahead of the node's: "Signature expired". The SDK would retry
    // once with a corrected signing time; the gate forbids it and names the cause.
    let emu = Emulator::start(&["--clock-offset", "20m"]);
    refused(&emu, &mut emu.gate(), 13, "node's clock");
    assert!(
        emu.calls()[0]["errorType"] == "InvalidSignatureException",
        "{:?}",
        emu.calls()
    );
}

#[test]
fn an_expired_session_token_exits_13_and_says_the_role_renews_it() {
    const EXPIRED: (&str, &str, &str) = (
        "ASIAMPGATEEXPIRED001",
        "mpgateExpiredSecretDoNotLogMe0123456789ab",
        "mpgateExpiredSessionTokenDoNotLogMe987654",
    );
    let (id, secret, token) = EXPIRED;
    let pair = format!("{id}:{secret}:{token}");
    let emu = Emulator::start(&["--expired-credentials", &pair]);
    let mut gate = emu.gate();
    gate.env("AWS_ACCESS_KEY_ID", id)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_SESSION_TOKEN", token);
    refused(&emu, &mut gate, 13, "session token has expired");
}

#[test]
fn long_term_keys_exit_11_and_point_to_the_task_role_or_irsa() {
    // An IAM user's keys: AWS answers PlatformNotSupportedException outside a task or pod.
    let (id, secret) = (
        "AKIAMPGATELONGTERM01",
        "mpgateLongTermSecretDoNotLogMe0123456789",
    );
    let pair = format!("{id}:{secret}");
    let emu = Emulator::start(&["--credentials", &pair]);
    let mut gate = emu.gate();
    gate.env("AWS_ACCESS_KEY_ID", id)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env_remove("AWS_SESSION_TOKEN");
    refused(&emu, &mut gate, 11, "IRSA");
}

#[test]
fn an_unknown_access_key_exits_13_and_is_not_retried() {
    let emu = Emulator::start(&[]);
    let mut gate = emu.gate();
    gate.env("AWS_ACCESS_KEY_ID", "ASIAMPGATEUNKNOWN001");
    refused(&emu, &mut gate, 13, "does not know the access key");
}

#[test]
fn a_changed_secret_key_exits_13_with_the_signature_advice() {
    let emu = Emulator::start(&[]);
    let mut gate = emu.gate();
    gate.env(
        "AWS_SECRET_ACCESS_KEY",
        "mpgateWrongSecretDoNotLogMe0123456789abcd",
    );
    refused(&emu, &mut gate, 13, "signature does not match");
}

#[test]
fn an_entitled_start_logs_and_records_the_request_id() {
    let emu = Emulator::start(&[]);
    let result = emu.dir.join("entitled-result.json");
    let out = emu.gate().env("MPGATE_RESULT_FILE", &result).run();
    out.expect(0);
    let calls = emu.calls();
    let request_id = calls[0]["requestId"].as_str().expect("a request ID");
    assert_eq!(result_file(&result)["requestId"], request_id);
    let info = out
        .log_lines()
        .into_iter()
        .rfind(|l| l["level"] == "INFO")
        .unwrap();
    assert_eq!(info["requestId"], request_id, "{info}");
}
