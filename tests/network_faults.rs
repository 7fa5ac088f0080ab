//! Network faults end to end: the real `mpgate` against the emulator's slow, truncated,
//! oversized, mislabelled, proxy-HTML, reset and TLS faults. Every case checks the exit code
//! (docs/reference.md's table), that the gate ends inside its deadline, a message fragment a person can
//! act on, a side effect in the emulator's record, and the gate's peak RSS (wait4).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use common::*;
use mpgate_testkit::{result_file, Emulator};
use serde_json::Value;

/// MPGATE_TIMEOUT for these tests (the attempt timeout is then a third of it, 1 s).
const DEADLINE: Duration = Duration::from_secs(3);
/// Slack over the deadline for a loaded 2-core CI machine.
const SLACK: Duration = Duration::from_secs(10);
/// How much more than an ordinary run a gate may hold, whatever the answer (the body limit is
/// 64 KiB; the emulator's oversize answers are 10 MiB, which buffered would show).
const EXTRA_RSS_KIB: i64 = 6 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(15);

/// An outcome with the gate's own peak RSS.
struct Measured {
    out: Outcome,
    max_rss_kib: i64,
}

/// Runs the gate and checks its own peak RSS stays bounded: an answer of up to 10 MiB must
/// not be buffered.
fn run_measured(gate: &mut Gate) -> Measured {
    let out = gate.run();
    let max_rss_kib = out.max_rss_kib;
    assert_memory_bounded(&out, EXTRA_RSS_KIB, "network fault");
    Measured { out, max_rss_kib }
}

/// Where [`gate`] has the result file written.
fn result_path(emu: &Emulator) -> PathBuf {
    emu.dir.join("result.json")
}

/// A gate with the short deadline and a result file.
fn gate(emu: &Emulator) -> Gate {
    let mut gate = emu.gate();
    gate.env("MPGATE_TIMEOUT", "3s")
        .env("MPGATE_RESULT_FILE", result_path(emu));
    gate
}

/// Asserts the exit code, the time bound and that the message has every fragment.
fn check(m: &Measured, code: i32, fragments: &[&str]) -> String {
    m.out.expect(code);
    assert!(
        m.out.elapsed < DEADLINE + SLACK,
        "took {:?} (deadline {DEADLINE:?})",
        m.out.elapsed
    );
    assert_eq!(m.out.stdout, "", "mpgate must write nothing to stdout");
    let message = m.out.error_message();
    for fragment in fragments {
        assert!(
            message.contains(fragment),
            "message lacks {fragment:?}: {message}"
        );
    }
    message
}

/// Asserts that the gate called at least `min` times, always with the same nonce and always
/// getting `fault`; returns the calls.
fn retried_with_one_nonce(emu: &Emulator, fault: &str, min: usize) -> Vec<Value> {
    let calls = emu.calls();
    assert!(calls.len() >= min, "{fault}: {} call(s)", calls.len());
    let nonce = calls[0]["nonce"]
        .as_str()
        .unwrap_or_else(|| panic!("{fault}: no nonce: {calls:?}"));
    assert_eq!(nonce.len(), 64, "{calls:?}");
    for call in &calls {
        assert_eq!(
            call["nonce"], nonce,
            "{fault}: the nonce changed: {calls:?}"
        );
        assert_eq!(call["fault"], fault, "{calls:?}");
    }
    // The result file counts the attempts of a failed run too: every call the emulator saw,
    // plus at most one the deadline cut before its request arrived (still connecting).
    let recorded = result_file(&result_path(emu))["attempts"]
        .as_u64()
        .unwrap_or(0) as usize;
    assert!(
        (calls.len()..=calls.len() + 1).contains(&recorded),
        "{fault}: {recorded} attempts in the result file, {} calls seen",
        calls.len()
    );
    calls
}

/// The HTML of the proxy pages must never reach the logs.
fn assert_no_html(out: &Outcome) {
    for needle in [
        "<html",
        "<h1>",
        "<body",
        "squid",
        "Access control configuration",
    ] {
        assert!(
            !out.stderr.contains(needle),
            "stderr contains {needle:?}:\n{}",
            out.stderr
        );
    }
}

// ------------------------------------------------------------------ 1. slow answers

#[test]
fn a_trickling_answer_hits_the_attempt_timeout_and_ends_in_14_at_the_deadline() {
    let emu = Emulator::start(&["--fault", "trickle", "--trickle-interval", "200ms"]);
    let m = run_measured(&mut gate(&emu));
    let message = check(
        &m,
        14,
        &[
            "within the 3s deadline",
            "attempt timed out",
            "MPGATE_TIMEOUT",
        ],
    );
    // Each attempt is cut at the attempt timeout (1 s), so several fit in the deadline.
    retried_with_one_nonce(&emu, "trickle", 2);
    assert!(
        m.out.elapsed >= DEADLINE - Duration::from_millis(500),
        "{:?}: {message}",
        m.out.elapsed
    );
    assert_eq!(
        result_file(&result_path(&emu))["outcome"],
        "service-unreachable"
    );
}

// ------------------------------------------------------------------ 2. truncated answers

#[test]
fn a_truncated_answer_is_retried_like_a_network_failure_and_ends_in_14() {
    // A 200 whose body stops short of its Content-Length is a broken transfer, not an
    // answer: the SDK retries it (a transient response error) with the same nonce, and at
    // the deadline it is a 14, never a 12.
    let emu = Emulator::start(&["--fault", "truncated-body"]);
    let m = run_measured(&mut gate(&emu));
    check(&m, 14, &["within the 3s deadline", "MPGATE_TIMEOUT"]);
    retried_with_one_nonce(&emu, "truncated-body", 2);

    // So one cut-short answer followed by a whole one is a success.
    let emu = Emulator::start(&["--fault", "truncated-body", "--fail-first", "1"]);
    let m = run_measured(&mut gate(&emu));
    m.out.expect(0);
    let calls = emu.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0]["nonce"], calls[1]["nonce"]);
    assert_eq!(
        (calls[0]["fault"].as_str(), calls[1]["fault"].as_str()),
        (Some("truncated-body"), Some("none"))
    );
    assert_eq!(result_file(&result_path(&emu))["attempts"], 2);
}

// ------------------------------------------------------------------ 3. oversized answers

#[test]
fn an_oversize_answer_with_content_length_is_rejected_at_once_with_12() {
    let emu = Emulator::start(&["--fault", "oversize-body"]);
    let m = run_measured(&mut gate(&emu));
    check(&m, 12, &["unusable", "larger than 64 KiB"]);
    assert_eq!(
        emu.calls().len(),
        1,
        "an oversize answer must not be retried"
    );
    assert_eq!(result_file(&result_path(&emu))["outcome"], "token-rejected");
    eprintln!("oversize-body: peak RSS {} KiB", m.max_rss_kib);
}

#[test]
fn an_oversize_streamed_answer_is_rejected_at_once_with_12_and_bounded_memory() {
    // Without a Content-Length the 64 KiB bound trips while the body is read: that is as
    // final as a declared length, so no retry, and the same exit code.
    for fault in ["oversize-chunked", "oversize-eof"] {
        let emu = Emulator::start(&["--fault", fault]);
        let m = run_measured(&mut gate(&emu));
        check(&m, 12, &["unusable", "larger than 64 KiB"]);
        assert_eq!(emu.calls().len(), 1, "{fault} must not be retried");
        assert_eq!(result_file(&result_path(&emu))["outcome"], "token-rejected");
        eprintln!("{fault}: peak RSS {} KiB", m.max_rss_kib);
    }
}

// ------------------------------------------------------------------ 4. content types

#[test]
fn the_content_type_of_a_valid_answer_does_not_matter() {
    // The awsJson1.1 deserializer reads the body whatever its label, and the token is
    // verified cryptographically, so a mislabelled valid answer is accepted.
    for fault in ["content-type-html", "content-type-json"] {
        let emu = Emulator::start(&["--fault", fault]);
        let m = run_measured(&mut gate(&emu));
        m.out.expect(0);
        let calls = emu.calls();
        assert_eq!(calls.len(), 1, "{fault}: {calls:?}");
        assert_eq!(calls[0]["fault"], fault);
        let result = result_file(&result_path(&emu));
        assert_eq!(result["outcome"], "verified", "{fault}");
        assert_eq!(result["nonce"], calls[0]["nonce"]);
    }
}

// ------------------------------------------------------------------ 5. proxy HTML pages

#[test]
fn a_proxy_503_page_is_retried_and_ends_in_14_without_dumping_the_html() {
    let emu = Emulator::start(&["--fault", "http-503-html"]);
    let m = run_measured(&mut gate(&emu));
    check(&m, 14, &["HTTP 503", "deadline", "MPGATE_TIMEOUT"]);
    assert_no_html(&m.out);
    retried_with_one_nonce(&emu, "http-503-html", 2);

    let emu = Emulator::start(&["--fault", "http-503-html", "--fail-first", "2"]);
    run_measured(&mut gate(&emu)).out.expect(0);
    assert_eq!(emu.calls().len(), 3);
}

#[test]
fn a_proxy_403_or_407_page_is_refused_at_once_without_dumping_the_html() {
    // A 4xx whose body is not JSON is no Metering answer: a proxy or firewall said no. That
    // is a configuration to fix (13), not an outage to wait out, and it is not retried.
    for (fault, hints) in [
        ("http-403-html", ["HTTP 403", "proxy or firewall"]),
        (
            "http-407-html",
            ["HTTP 407", "HTTPS_PROXY=http://user:password@"],
        ),
    ] {
        let emu = Emulator::start(&["--fault", fault]);
        let m = run_measured(&mut gate(&emu));
        check(&m, 13, &hints);
        assert_no_html(&m.out);
        let calls = emu.calls();
        assert_eq!(calls.len(), 1, "{fault} must not be retried: {calls:?}");
        assert_eq!(calls[0]["fault"], fault);
        assert_eq!(
            result_file(&result_path(&emu))["outcome"],
            "service-refused"
        );
    }
}

// ------------------------------------------------------------------ 6. connection resets

#[test]
fn a_reset_in_the_headers_is_retried_and_ends_in_14() {
    let emu = Emulator::start(&["--fault", "reset-headers"]);
    let m = run_measured(&mut gate(&emu));
    check(
        &m,
        14,
        &["deadline", "Connection reset by peer", "MPGATE_TIMEOUT"],
    );
    retried_with_one_nonce(&emu, "reset-headers", 2);
    // The retries are logged as they happen.
    assert!(
        m.out
            .log_lines()
            .iter()
            .filter(|l| l["message"]
                .as_str()
                .unwrap_or("")
                .contains("retrying within the deadline"))
            .count()
            >= 1,
        "{}",
        m.out.stderr
    );
}

#[test]
fn a_reset_in_the_body_is_retried_and_ends_in_14() {
    let emu = Emulator::start(&["--fault", "reset-body"]);
    let m = run_measured(&mut gate(&emu));
    check(&m, 14, &["deadline", "MPGATE_TIMEOUT"]);
    retried_with_one_nonce(&emu, "reset-body", 2);

    let emu = Emulator::start(&["--fault", "reset-body", "--fail-first", "2"]);
    run_measured(&mut gate(&emu)).out.expect(0);
    let calls = emu.calls();
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert!(calls.iter().all(|c| c["nonce"] == calls[0]["nonce"]));
}

// ------------------------------------------------------------------ 7. TLS

#[test]
fn a_failed_tls_handshake_is_retried_and_ends_in_14() {
    let emu = Emulator::start(&["--tls", "--fault", "tls-handshake-failure"]);
    let ca = emu.ca_file.clone().unwrap();
    let m = run_measured(gate(&emu).env("SSL_CERT_FILE", &ca));
    check(
        &m,
        14,
        &["TLS handshake failed", "deadline", "MPGATE_TIMEOUT"],
    );
    // Connection faults are recorded per connection, before any request (so no nonce).
    let calls = emu.calls();
    assert!(calls.len() >= 2, "{calls:?}");
    assert!(calls
        .iter()
        .all(|c| c["fault"] == "tls-handshake-failure" && c["nonce"].is_null()));

    let emu = Emulator::start(&[
        "--tls",
        "--fault",
        "tls-handshake-failure",
        "--fail-first",
        "1",
    ]);
    let ca = emu.ca_file.clone().unwrap();
    run_measured(gate(&emu).env("SSL_CERT_FILE", &ca))
        .out
        .expect(0);
    let calls = emu.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[1]["status"], 200);
}

#[test]
fn an_untrusted_certificate_fails_at_once_with_14() {
    let emu = Emulator::start(&["--tls"]);
    // No SSL_CERT_FILE: the built-in roots do not trust the emulator's test CA.
    let m = run_measured(gate(&emu).env("MPGATE_TIMEOUT", "30s"));
    check(
        &m,
        14,
        &[
            "TLS certificate is not trusted",
            "SSL_CERT_FILE",
            "UnknownIssuer",
        ],
    );
    assert!(
        m.out.elapsed < Duration::from_secs(10),
        "an untrusted certificate must not be retried until the 30 s deadline: {:?}",
        m.out.elapsed
    );
    assert!(!m.out.stderr.contains("retrying"), "{}", m.out.stderr);
    assert_eq!(emu.calls().len(), 0, "no request may be sent");
}

// ------------------------------------------------------------------ --rate-limit

/// One RegisterUsage call over a fresh connection (`Connection: close`); the raw answer.
fn register_raw(addr: &str) -> String {
    let body = r#"{"ProductCode":"prod-demo1234567890abcdef","PublicKeyVersion":1,"Nonce":"n-1"}"#;
    // Signed for real with the test pair: the emulator verifies SigV4.
    let request = mpgate_testkit::sigv4::register_request(body);
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(&request).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

fn addr(emu: &Emulator) -> String {
    emu.url.trim_start_matches("http://").to_string()
}

#[test]
fn rate_limit_throttles_calls_over_the_bucket_like_the_throttle_fault() {
    // Burst 2 at 1 call/s: the first two calls get through, and unless the other four take
    // more than 3 s one of them finds the bucket empty.
    let emu = Emulator::start(&["--rate-limit", "1", "--rate-burst", "2"]);
    let answers: Vec<String> = (0..6).map(|_| register_raw(&addr(&emu))).collect();
    assert!(answers[0].starts_with("HTTP/1.1 200"), "{}", answers[0]);
    assert!(answers[1].starts_with("HTTP/1.1 200"), "{}", answers[1]);
    let throttled = answers[2..]
        .iter()
        .position(|a| a.starts_with("HTTP/1.1 400"))
        .map(|i| i + 2)
        .unwrap_or_else(|| panic!("no call was throttled: {answers:?}"));
    let answer = &answers[throttled];
    assert!(
        answer.contains(r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#),
        "{answer}"
    );
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("x-amzn-errortype: throttlingexception"),
        "{answer}"
    );
    let calls = emu.calls();
    assert_eq!(calls.len(), 6);
    assert_eq!(calls[throttled]["fault"], "rate-limit");
    assert_eq!(calls[throttled]["status"], 400);
    assert_eq!(calls[throttled]["errorType"], "ThrottlingException");
    assert!(calls
        .iter()
        .all(|c| c["receivedAtMs"].as_u64().unwrap() > 0));

    // A gate that finds the bucket empty retries, with its nonce, until a token comes back.
    let emu = Emulator::start(&["--rate-limit", "1", "--rate-burst", "1"]);
    register_raw(&addr(&emu));
    // The backoff is capped at 5 s, so a 15 s deadline always leaves an attempt after the
    // bucket refills (1 s).
    let m = run_measured(gate(&emu).env("MPGATE_TIMEOUT", "15s"));
    m.out.expect(0);
    let gate_calls: Vec<Value> = emu.calls().into_iter().skip(1).collect();
    let last = gate_calls.last().unwrap();
    assert_eq!(last["status"], 200);
    assert!(gate_calls.iter().all(|c| c["nonce"] == last["nonce"]));
    assert!(
        gate_calls.len() >= 2 && gate_calls[0]["fault"] == "rate-limit",
        "{gate_calls:?}"
    );
}

// ------------------------------------------------------------------ the raw server itself

#[test]
fn raw_fault_answers_are_well_formed_on_the_wire() {
    let emu = Emulator::start(&[
        "--fault",
        "oversize-chunked",
        "--fail-first",
        "1",
        "--oversize-bytes",
        "200000",
    ]);
    let raw = register_raw(&addr(&emu));
    let (head, mut rest) = raw.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    let mut body = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").unwrap();
        let size = usize::from_str_radix(size, 16).unwrap();
        if size == 0 {
            break;
        }
        body.push_str(&after[..size]);
        rest = after[size..].strip_prefix("\r\n").unwrap();
    }
    assert_eq!(body.len(), 200_000);
    assert!(body.starts_with(r#"{"Signature":"AAAA"#) && body.ends_with(r#"A"}"#));

    // Past --fail-first the raw server answers normally.
    let raw = register_raw(&addr(&emu));
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(body.len(), length);
    let answer: Value = serde_json::from_str(body).unwrap();
    assert!(answer["Signature"].as_str().unwrap().starts_with("eyJ"));
    let calls = emu.calls();
    assert_eq!(
        calls.iter().map(|c| c["fault"].clone()).collect::<Vec<_>>(),
        [Value::from("oversize-chunked"), Value::from("none")]
    );
}
