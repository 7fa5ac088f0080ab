//! Black-box tests of the `mpgate-emulator` binary over raw HTTP/1.1 (and HTTPS), and of
//! the test proxy in `mpgate_testkit::proxy`.

use mpgate_testkit::emulator::shared_key_dir;
use mpgate_testkit::{proxy, run_bounded, scratch, wait_until, Emulator, Live};

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_mpgate-emulator");
const PRODUCT: &str = "prod-demo1234567890abcdef";
/// Bound on every run of the binary (its keys may be generated first).
const STARTUP: Duration = Duration::from_secs(60);
const IO_TIMEOUT: Duration = Duration::from_secs(15);
const SIG: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    fn error_type(&self) -> String {
        self.json()["__type"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

fn send_raw(addr: &str, request: &[u8], read_timeout: Duration) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(read_timeout))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    s.write_all(request)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    Ok(out)
}

fn build(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

fn parse(raw: &[u8]) -> Resp {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Resp {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

fn auth(region: &str, service: &str) -> String {
    format!("AWS4-HMAC-SHA256 Credential=AKIDTEST/20240101/{region}/{service}/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature={SIG}")
}

/// POST / with the given headers (None = leave out) and body.
fn call_with(
    addr: &str,
    target: Option<&str>,
    content_type: Option<&str>,
    authorization: Option<&str>,
    body: &str,
) -> Resp {
    let mut headers = vec![("X-Amz-Date", "20240101T000000Z")];
    if let Some(t) = target {
        headers.push(("X-Amz-Target", t));
    }
    if let Some(c) = content_type {
        headers.push(("Content-Type", c));
    }
    if let Some(a) = authorization {
        headers.push(("Authorization", a));
    }
    let raw = send_raw(
        addr,
        &build("POST", "/", &headers, body.as_bytes()),
        IO_TIMEOUT,
    )
    .unwrap();
    parse(&raw)
}

fn register(addr: &str, body: &Value) -> Resp {
    let a = auth("us-east-1", "aws-marketplace");
    call_with(
        addr,
        Some("AWSMPMeteringService.RegisterUsage"),
        Some("application/x-amz-json-1.1"),
        Some(&a),
        &body.to_string(),
    )
}

fn ok_body() -> Value {
    json!({"ProductCode": PRODUCT, "PublicKeyVersion": 1, "Nonce": "n-123"})
}

fn jwt_parts(token: &str) -> (Value, Value, String) {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut it = token.split('.');
    let h = b64.decode(it.next().unwrap()).unwrap();
    let c = b64.decode(it.next().unwrap()).unwrap();
    let s = it.next().unwrap().to_string();
    assert!(it.next().is_none());
    (
        serde_json::from_slice(&h).unwrap(),
        serde_json::from_slice(&c).unwrap(),
        s,
    )
}

fn validation(alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    v.required_spec_claims.clear();
    v.validate_exp = false;
    v
}

fn verify(token: &str, pem: &[u8]) -> Result<Value, jsonwebtoken::errors::Error> {
    let key = DecodingKey::from_rsa_pem(pem).unwrap();
    jsonwebtoken::decode::<Value>(token, &key, &validation(Algorithm::PS256)).map(|d| d.claims)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn rejections_have_aws_types_and_statuses() {
    let emu = Emulator::start_with_shared_keys(&[]);
    let a = &emu.addr;
    let good_auth = auth("us-east-1", "aws-marketplace");
    let ct = Some("application/x-amz-json-1.1");
    let target = Some("AWSMPMeteringService.RegisterUsage");
    let body = ok_body().to_string();

    let cases: Vec<(&str, Resp, u16, &str)> = vec![
        (
            "other operation",
            call_with(
                a,
                Some("AWSMPMeteringService.MeterUsage"),
                ct,
                Some(&good_auth),
                &body,
            ),
            400,
            "UnknownOperationException",
        ),
        (
            "missing target",
            call_with(a, None, ct, Some(&good_auth), &body),
            400,
            "UnknownOperationException",
        ),
        (
            "foreign target",
            call_with(
                a,
                Some("DynamoDB_20120810.GetItem"),
                ct,
                Some(&good_auth),
                &body,
            ),
            400,
            "UnknownOperationException",
        ),
        (
            "content type",
            call_with(a, target, Some("application/json"), Some(&good_auth), &body),
            400,
            "SerializationException",
        ),
        (
            "missing auth",
            call_with(a, target, ct, None, &body),
            400,
            "MissingAuthenticationTokenException",
        ),
        (
            "malformed auth",
            call_with(a, target, ct, Some("AWS4-HMAC-SHA256 Credential=x"), &body),
            403,
            "InvalidSignatureException",
        ),
        (
            "wrong service",
            call_with(
                a,
                target,
                ct,
                Some(&auth("us-east-1", "execute-api")),
                &body,
            ),
            403,
            "InvalidSignatureException",
        ),
        (
            "wrong region",
            call_with(
                a,
                target,
                ct,
                Some(&auth("eu-west-1", "aws-marketplace")),
                &body,
            ),
            403,
            "InvalidSignatureException",
        ),
        (
            "bad json",
            call_with(a, target, ct, Some(&good_auth), "{nope"),
            400,
            "SerializationException",
        ),
        (
            "unknown product",
            register(
                a,
                &json!({"ProductCode": "prod-other", "PublicKeyVersion": 1}),
            ),
            400,
            "InvalidProductCodeException",
        ),
        (
            "unknown key version",
            register(a, &json!({"ProductCode": PRODUCT, "PublicKeyVersion": 9})),
            400,
            "InvalidPublicKeyVersionException",
        ),
    ];
    for (what, resp, status, ty) in cases {
        assert_eq!(
            (resp.status, resp.error_type().as_str()),
            (status, ty),
            "{what}: {resp:?}"
        );
        assert_eq!(resp.header("x-amzn-errortype"), Some(ty), "{what}");
    }
    let wrong_region = call_with(
        a,
        target,
        ct,
        Some(&auth("eu-west-1", "aws-marketplace")),
        &body,
    );
    assert!(wrong_region.json()["message"]
        .as_str()
        .unwrap()
        .contains("Credential should be scoped to a valid region"));

    let get = parse(&send_raw(a, &build("GET", "/", &[], b""), IO_TIMEOUT).unwrap());
    assert_eq!(
        (get.status, get.error_type().as_str()),
        (400, "UnknownOperationException")
    );

    let shape_cases = [
        (json!({"PublicKeyVersion": 1}), "ProductCode"),
        (
            json!({"ProductCode": 5, "PublicKeyVersion": 1}),
            "ProductCode",
        ),
        (
            json!({"ProductCode": "", "PublicKeyVersion": 1}),
            "ProductCode",
        ),
        (
            json!({"ProductCode": "p".repeat(256), "PublicKeyVersion": 1}),
            "ProductCode",
        ),
        (json!({"ProductCode": PRODUCT}), "PublicKeyVersion"),
        (
            json!({"ProductCode": PRODUCT, "PublicKeyVersion": "1"}),
            "PublicKeyVersion",
        ),
        (
            json!({"ProductCode": PRODUCT, "PublicKeyVersion": 0}),
            "PublicKeyVersion",
        ),
        (
            json!({"ProductCode": PRODUCT, "PublicKeyVersion": 1, "Nonce": "n".repeat(256)}),
            "Nonce",
        ),
        (
            json!({"ProductCode": PRODUCT, "PublicKeyVersion": 1, "Nonce": 7}),
            "Nonce",
        ),
    ];
    for (body, field) in shape_cases {
        let resp = register(a, &body);
        assert_eq!(
            (resp.status, resp.error_type().as_str()),
            (400, "ValidationException"),
            "{body}"
        );
        let msg = resp.json()["message"].as_str().unwrap().to_string();
        assert!(msg.contains(&format!("'{field}'")), "{body}: {msg}");
    }
    let not_object = register(a, &json!([1, 2]));
    assert_eq!(not_object.error_type(), "SerializationException");

    // Oversized bodies are refused without reading them whole.
    let huge = "x".repeat(70 * 1024);
    let resp = call_with(a, target, ct, Some(&good_auth), &huge);
    assert_eq!(resp.status, 413);
}

#[test]
fn success_is_a_ps256_token_with_the_claims_as_sent() {
    let emu = Emulator::start_with_shared_keys(&[
        "--key-versions",
        "1,2",
        "--rotation-timestamp",
        "1700000000",
    ]);
    assert_eq!(emu.ready["region"], "us-east-1");
    assert_eq!(emu.ready["productCode"], PRODUCT);
    assert_eq!(emu.ready["publicKeyVersion"], 1);
    assert_eq!(emu.ready["publicKeyFile"], emu.ready["publicKeyFiles"]["1"]);
    let pem2 = emu.public_pem(2);
    let pem_text = String::from_utf8(pem2.clone()).unwrap();
    assert!(pem_text.starts_with("-----BEGIN PUBLIC KEY-----\n"));
    assert!(pem_text.lines().all(|l| l.len() <= 64));

    let before = now();
    let resp = register(
        &emu.addr,
        &json!({"ProductCode": PRODUCT, "PublicKeyVersion": 2, "Nonce": "abc-123"}),
    );
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(
        resp.header("content-type"),
        Some("application/x-amz-json-1.1")
    );
    let body = resp.json();
    assert_eq!(body["PublicKeyRotationTimestamp"], 1700000000);
    let token = body["Signature"].as_str().unwrap();
    let (header, _, _) = jwt_parts(token);
    assert_eq!(header, json!({"alg": "PS256", "typ": "JWT"}));
    let raw_header = token.split('.').next().unwrap();
    use base64::Engine as _;
    assert_eq!(
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(raw_header)
            .unwrap(),
        br#"{"alg":"PS256","typ":"JWT"}"#
    );
    let claims = verify(token, &pem2).expect("verifies with the v2 public key");
    assert_eq!(claims["productCode"], PRODUCT);
    assert_eq!(claims["publicKeyVersion"], 2);
    assert_eq!(claims["nonce"], "abc-123");
    let iat = claims["iat"].as_i64().unwrap();
    assert!(iat >= before && iat <= now(), "iat {iat}");
    assert!(claims.get("exp").is_none());
    assert!(
        verify(token, &emu.public_pem(1)).is_err(),
        "v1 key must not verify a v2 token"
    );

    // No nonce sent: no nonce claim.
    let resp = register(
        &emu.addr,
        &json!({"ProductCode": PRODUCT, "PublicKeyVersion": 1}),
    );
    let claims = verify(
        resp.json()["Signature"].as_str().unwrap(),
        &emu.public_pem(1),
    )
    .unwrap();
    assert!(claims.get("nonce").is_none());
}

#[test]
fn fail_first_throttles_then_succeeds_and_records_every_call() {
    let emu = Emulator::start_with_shared_keys(&["--fault", "throttle", "--fail-first", "2"]);
    // A rejected call is recorded but does not use up a fault slot.
    let rejected = call_with(
        &emu.addr,
        Some("AWSMPMeteringService.RegisterUsage"),
        Some("application/x-amz-json-1.1"),
        None,
        "{}",
    );
    assert_eq!(rejected.status, 400);
    let mut seen = Vec::new();
    for _ in 0..3 {
        let r = register(&emu.addr, &ok_body());
        seen.push((r.status, r.json().get("__type").cloned()));
    }
    assert_eq!(
        seen,
        vec![
            (400, Some(json!("ThrottlingException"))),
            (400, Some(json!("ThrottlingException"))),
            (200, None)
        ]
    );
    let lines = emu.calls();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert_eq!(lines[0]["call"], 1);
    assert_eq!(lines[0]["status"], 400);
    assert_eq!(lines[0]["credentialScope"], Value::Null);
    for (i, line) in lines[1..].iter().enumerate() {
        assert_eq!(line["call"], i as u64 + 2);
        assert_eq!(line["target"], "AWSMPMeteringService.RegisterUsage");
        assert_eq!(line["productCode"], PRODUCT);
        assert_eq!(line["publicKeyVersion"], 1);
        assert_eq!(line["nonce"], "n-123");
        assert_eq!(
            line["credentialScope"],
            "AKIDTEST/20240101/us-east-1/aws-marketplace/aws4_request"
        );
    }
    let faults: Vec<_> = lines[1..]
        .iter()
        .map(|l| (l["fault"].clone(), l["status"].clone()))
        .collect();
    assert_eq!(
        faults,
        vec![
            (json!("throttle"), json!(400)),
            (json!("throttle"), json!(400)),
            (json!("none"), json!(200))
        ]
    );
}

#[test]
fn service_error_faults() {
    let cases = [
        ("not-entitled", 400, "CustomerNotEntitledException"),
        (
            "platform-not-supported",
            400,
            "PlatformNotSupportedException",
        ),
        ("invalid-product-code", 400, "InvalidProductCodeException"),
        ("invalid-region", 400, "InvalidRegionException"),
        (
            "invalid-public-key-version",
            400,
            "InvalidPublicKeyVersionException",
        ),
        ("disabled-api", 400, "DisabledApiException"),
        ("internal-error", 500, "InternalServiceErrorException"),
        ("throttle", 400, "ThrottlingException"),
        ("access-denied", 400, "AccessDeniedException"),
        ("unrecognized-client", 400, "UnrecognizedClientException"),
    ];
    for (fault, status, ty) in cases {
        let emu = Emulator::start_with_shared_keys(&["--fault", fault]);
        let r = register(&emu.addr, &ok_body());
        assert_eq!((r.status, r.error_type().as_str()), (status, ty), "{fault}");
        assert!(!r.json()["message"].as_str().unwrap().is_empty());
    }
    let emu = Emulator::start_with_shared_keys(&["--fault", "http-502-html"]);
    let r = register(&emu.addr, &ok_body());
    assert_eq!(r.status, 502);
    assert_eq!(r.header("content-type"), Some("text/html"));
    assert!(String::from_utf8_lossy(&r.body).contains("502 Bad Gateway"));
}

#[test]
fn hang_and_drop_faults() {
    let emu = Emulator::start_with_shared_keys(&["--fault", "drop"]);
    let a = auth("us-east-1", "aws-marketplace");
    let req = build(
        "POST",
        "/",
        &[
            ("X-Amz-Target", "AWSMPMeteringService.RegisterUsage"),
            ("Content-Type", "application/x-amz-json-1.1"),
            ("X-Amz-Date", "20240101T000000Z"),
            ("Authorization", &a),
        ],
        ok_body().to_string().as_bytes(),
    );
    match send_raw(&emu.addr, &req, IO_TIMEOUT) {
        Ok(bytes) => assert!(
            bytes.is_empty(),
            "drop answered: {:?}",
            String::from_utf8_lossy(&bytes)
        ),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
    let lines = emu.wait_for_calls(1);
    assert_eq!(
        (lines[0]["fault"].clone(), lines[0]["status"].clone()),
        (json!("drop"), Value::Null)
    );

    let emu = Emulator::start_with_shared_keys(&["--fault", "hang", "--fail-first", "1"]);
    let mut s = TcpStream::connect(&emu.addr).unwrap();
    s.write_all(&req).unwrap();
    let lines = emu.wait_for_calls(1);
    assert_eq!(
        (lines[0]["fault"].clone(), lines[0]["status"].clone()),
        (json!("hang"), Value::Null)
    );
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 64];
    let err = s
        .read(&mut buf)
        .expect_err("hang must not answer (nor close)");
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{err}"
    );
    // The second call is past --fail-first and gets answered.
    assert_eq!(register(&emu.addr, &ok_body()).status, 200);
}

#[test]
fn latency_delays_the_answer() {
    let emu = Emulator::start_with_shared_keys(&["--latency", "300ms"]);
    let t = Instant::now();
    assert_eq!(register(&emu.addr, &ok_body()).status, 200);
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn token_faults() {
    let sent = ok_body();
    let cases = [
        "token-wrong-key",
        "token-alg-none",
        "token-hs256-public-key",
        "token-rs256",
        "token-bad-signature",
        "token-wrong-nonce",
        "token-wrong-product",
        "token-wrong-version",
        "token-version-string",
        "token-missing-nonce",
        "token-stale-iat",
        "token-future-iat",
        "token-expired",
        "token-no-iat",
        "token-oversize",
        "token-garbage",
        "token-missing",
        "token-empty",
    ];
    for fault in cases {
        let emu = Emulator::start_with_shared_keys(&["--fault", fault]);
        let pem = emu.public_pem(1);
        let r = register(&emu.addr, &sent);
        assert_eq!(r.status, 200, "{fault}");
        let body = r.json();
        let sig = body.get("Signature").and_then(Value::as_str);
        match fault {
            "token-missing" => {
                assert_eq!(body, json!({}));
                continue;
            }
            "token-empty" => {
                assert_eq!(sig, Some(""));
                continue;
            }
            "token-garbage" => {
                assert_eq!(sig, Some("not-a-jwt"));
                continue;
            }
            _ => {}
        }
        let token = sig.unwrap_or_else(|| panic!("{fault}: no Signature"));
        let (header, claims, signature) = jwt_parts(token);
        let verified = verify(token, &pem);
        let t = now();
        match fault {
            "token-wrong-key" | "token-bad-signature" => {
                assert!(verified.is_err(), "{fault}");
                assert_eq!(claims["nonce"], "n-123");
            }
            "token-alg-none" => {
                assert_eq!(header, json!({"alg": "none", "typ": "JWT"}));
                assert!(signature.is_empty());
            }
            "token-hs256-public-key" => {
                assert_eq!(header["alg"], "HS256");
                let key = DecodingKey::from_secret(&pem);
                jsonwebtoken::decode::<Value>(token, &key, &validation(Algorithm::HS256))
                    .expect("HMAC with the public PEM as secret");
            }
            "token-rs256" => {
                assert_eq!(header["alg"], "RS256");
                let key = DecodingKey::from_rsa_pem(&pem).unwrap();
                jsonwebtoken::decode::<Value>(token, &key, &validation(Algorithm::RS256))
                    .expect("RS256 verifies");
            }
            _ => {
                let c = verified.unwrap_or_else(|e| panic!("{fault}: {e}"));
                assert_eq!(c, claims);
                match fault {
                    "token-wrong-nonce" => assert_ne!(c["nonce"], "n-123"),
                    "token-wrong-product" => assert_ne!(c["productCode"], PRODUCT),
                    "token-wrong-version" => assert_eq!(c["publicKeyVersion"], 2),
                    "token-version-string" => assert_eq!(c["publicKeyVersion"], "1"),
                    "token-missing-nonce" => assert!(c.get("nonce").is_none()),
                    "token-stale-iat" => assert!(c["iat"].as_i64().unwrap() <= t - 3500),
                    "token-future-iat" => assert!(c["iat"].as_i64().unwrap() >= t + 3500),
                    "token-expired" => assert!(c["exp"].as_i64().unwrap() < t),
                    "token-no-iat" => {
                        assert!(c.get("iat").is_none());
                        assert_eq!(
                            (
                                c["productCode"].clone(),
                                c["publicKeyVersion"].clone(),
                                c["nonce"].clone()
                            ),
                            (json!(PRODUCT), json!(1), json!("n-123"))
                        );
                    }
                    "token-oversize" => assert!(token.len() > 64 * 1024),
                    other => panic!("unhandled {other}"),
                }
            }
        }
    }
}

/// Run the binary with `args` and `env`, bounded by STARTUP; returns (status, stdout, stderr).
fn run_bin(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String, String) {
    let out = run_bounded(
        Command::new(BIN).args(args).envs(env.iter().copied()),
        STARTUP,
    );
    (out.status, out.stdout, out.stderr)
}

fn run_cmd(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String) {
    let kd = shared_key_dir();
    let mut full = vec!["run", "--key-dir", kd.to_str().unwrap()];
    full.extend_from_slice(args);
    let (st, out, _) = run_bin(&full, env);
    (st, out)
}

#[test]
fn run_passes_env_and_exit_code() {
    let (st, _) = run_cmd(
        &[
            "--",
            "sh",
            "-c",
            r#"test -n "$AWS_ENDPOINT_URL_MARKETPLACE_METERING" && exit 7"#,
        ],
        &[],
    );
    assert_eq!(st.code(), Some(7));

    let script = r#"echo "$AWS_ENDPOINT_URL_MARKETPLACE_METERING|$AWS_REGION|$AWS_ACCESS_KEY_ID|$AWS_EC2_METADATA_DISABLED|$MPGATE_PRODUCT_CODE|$MPGATE_PUBLIC_KEY_VERSION|${AWS_PROFILE-unset}|${AWS_SESSION_TOKEN-unset}|${AWS_ENDPOINT_URL-unset}"; test -s "$MPGATE_PUBLIC_KEY_FILE" && test -n "$AWS_SECRET_ACCESS_KEY""#;
    let (st, out) = run_cmd(
        &[
            "--region",
            "eu-central-1",
            "--product-code",
            "prod-x",
            "--key-versions",
            "2",
            "--",
            "sh",
            "-c",
            script,
        ],
        &[
            ("AWS_PROFILE", "p"),
            ("AWS_SESSION_TOKEN", "t"),
            ("AWS_ENDPOINT_URL", "http://elsewhere"),
        ],
    );
    assert_eq!(st.code(), Some(0), "{out}");
    let f: Vec<&str> = out.trim().split('|').collect();
    assert!(f[0].starts_with("http://127.0.0.1:"), "{out}");
    assert_eq!(
        &f[1..],
        [
            "eu-central-1",
            "AKIAEMULATOREXAMPLE",
            "true",
            "prod-x",
            "2",
            "unset",
            "unset",
            "unset"
        ]
    );

    // The child can reach the emulator through the URL it was given.
    let (st, _) = run_cmd(&["--", "sh", "-c", "exit 0"], &[]);
    assert!(st.success());

    let (st, _) = run_cmd(&["--", "/nonexistent/command-xyz"], &[]);
    assert_eq!(st.code(), Some(127));

    let (st, _) = run_cmd(&["--", "sh", "-c", "kill -TERM $$"], &[]);
    assert_eq!(st.code(), Some(128 + 15));
}

#[test]
fn serve_exits_zero_on_sigterm_and_bad_flags_exit_two() {
    let mut emu = Emulator::start_with_shared_keys(&[]);
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(emu.pid() as libc::pid_t, libc::SIGTERM);
    }
    let st = emu.wait(IO_TIMEOUT);
    assert_eq!(st.code(), Some(0));

    for args in [
        &["--bogus"][..],
        &["--fault", "nope"],
        &["--latency", "soon"],
        &["run"],
        &["serve", "extra"],
    ] {
        let (st, _, err) = run_bin(args, &[]);
        assert_eq!(st.code(), Some(2), "{args:?}");
        assert!(err.starts_with("mpgate-emulator: error: "), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
    let (st, text, _) = run_bin(&["--help"], &[]);
    assert!(st.success());
    for flag in [
        "--listen",
        "--region",
        "--product-code",
        "--key-versions",
        "--key-dir",
        "--fault",
        "--fail-first",
        "--latency",
        "--rotation-timestamp",
        "--record",
        "--tls",
        "caFile",
        "token-no-iat",
        "tls-handshake-failure",
    ] {
        assert!(text.contains(flag), "help lacks {flag}");
    }
}

#[test]
fn run_forwards_sigterm_to_the_child() {
    let marker = scratch("run-signal").join("started.marker");
    let script = format!(
        r#"trap 'exit 42' TERM; touch '{}'; while :; do sleep 0.05; done"#,
        marker.display()
    );
    let kd = shared_key_dir();
    let mut run = Live::spawn(
        Command::new(BIN).args([
            "run",
            "--key-dir",
            kd.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            &script,
        ]),
        STARTUP,
    );
    // Killed when dropped, should the child of run never start.
    wait_until(STARTUP, "start of the child of run", || {
        marker.exists().then_some(())
    });
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(run.pid() as libc::pid_t, libc::SIGTERM);
    }
    assert_eq!(run.finish().status.code(), Some(42));
}

// ---------------------------------------------------------------------------------------
// HTTPS (--tls) and the test proxy

use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

/// A rustls client (aws-lc-rs, ALPN http/1.1) trusting only the CA in `ca_file`, or nothing.
fn client_config(ca_file: Option<&str>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca) = ca_file {
        for cert in CertificateDer::pem_file_iter(ca).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

/// Send `request` over TLS on `stream` (verifying `name`); returns the raw answer and the
/// negotiated ALPN protocol.
fn tls_exchange(
    stream: TcpStream,
    name: &str,
    cfg: Arc<rustls::ClientConfig>,
    request: &[u8],
) -> std::io::Result<(Vec<u8>, Option<Vec<u8>>)> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let server_name = ServerName::try_from(name.to_string()).unwrap();
    let conn = rustls::ClientConnection::new(cfg, server_name).map_err(std::io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(conn, stream);
    tls.write_all(request)?;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tls.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            // A peer that closes without close_notify after a complete answer.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !out.is_empty() => break,
            Err(e) => return Err(e),
        }
    }
    let alpn = tls.conn.alpn_protocol().map(<[u8]>::to_vec);
    Ok((out, alpn))
}

fn send_tls(
    addr: &str,
    name: &str,
    cfg: Arc<rustls::ClientConfig>,
    request: &[u8],
) -> std::io::Result<(Vec<u8>, Option<Vec<u8>>)> {
    tls_exchange(TcpStream::connect(addr)?, name, cfg, request)
}

/// A complete RegisterUsage request (`path` may be absolute-form, for proxies).
fn register_request(path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let a = auth("us-east-1", "aws-marketplace");
    let mut headers = vec![
        ("X-Amz-Target", "AWSMPMeteringService.RegisterUsage"),
        ("Content-Type", "application/x-amz-json-1.1"),
        ("X-Amz-Date", "20240101T000000Z"),
        ("Authorization", a.as_str()),
    ];
    headers.extend_from_slice(extra);
    build("POST", path, &headers, ok_body().to_string().as_bytes())
}

fn assert_signed(r: &Resp, pem: &[u8]) {
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let token = r.json()["Signature"].as_str().unwrap().to_string();
    let claims = verify(&token, pem).unwrap();
    assert_eq!(claims["nonce"], json!("n-123"));
}

#[test]
fn tls_serves_https_with_a_test_ca() {
    let plain = Emulator::start_with_shared_keys(&[]);
    assert_eq!(plain.ready["caFile"], Value::Null);

    let emu = Emulator::start_with_shared_keys(&["--tls"]);
    let url = emu.ready["url"].as_str().unwrap();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let ca = emu.ready["caFile"].as_str().expect("caFile").to_string();
    assert!(std::path::Path::new(&ca).is_absolute(), "{ca}");
    assert!(ca.ends_with("/ca.pem"), "{ca}");
    let key_dir = emu.ready["keyDir"].as_str().unwrap();
    assert!(ca.starts_with(key_dir), "{ca} not in {key_dir}");
    let ca_text = fs::read_to_string(&ca).unwrap();
    assert_eq!(ca_text.matches("BEGIN CERTIFICATE").count(), 1, "{ca_text}");
    assert!(!ca_text.contains("PRIVATE KEY"));

    // A client that trusts ca.pem completes RegisterUsage, by name and by IP.
    let pem = emu.public_pem(1);
    for name in ["localhost", "127.0.0.1"] {
        let (raw, alpn) = send_tls(
            &emu.addr,
            name,
            client_config(Some(&ca)),
            &register_request("/", &[]),
        )
        .unwrap_or_else(|e| panic!("TLS to {name}: {e}"));
        assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
        assert_signed(&parse(&raw), &pem);
    }
    // One that does not trust it fails the handshake.
    let err = send_tls(
        &emu.addr,
        "localhost",
        client_config(None),
        &register_request("/", &[]),
    )
    .expect_err("an untrusting client must fail");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    // Plain HTTP to the TLS port gets no HTTP answer.
    let raw = send_raw(&emu.addr, &register_request("/", &[]), IO_TIMEOUT).unwrap_or_default();
    assert!(!raw.starts_with(b"HTTP/1.1 200"));

    // A second emulator on the same key dir reuses the CA.
    let again = Emulator::start_with_shared_keys(&["--tls"]);
    assert_eq!(again.ready["caFile"].as_str(), Some(ca.as_str()));
    assert_eq!(fs::read_to_string(&ca).unwrap(), ca_text);
    let (raw, _) = send_tls(
        &again.addr,
        "localhost",
        client_config(Some(&ca)),
        &register_request("/", &[]),
    )
    .unwrap();
    assert_signed(&parse(&raw), &pem);
}

#[test]
fn tls_handshake_failure_fault() {
    let emu = Emulator::start_with_shared_keys(&[
        "--tls",
        "--fault",
        "tls-handshake-failure",
        "--fail-first",
        "1",
    ]);
    let ca = emu.ready["caFile"].as_str().unwrap().to_string();
    let err = send_tls(
        &emu.addr,
        "localhost",
        client_config(Some(&ca)),
        &register_request("/", &[]),
    )
    .expect_err("the first handshake must fail");
    assert!(err.to_string().contains("HandshakeFailure"), "{err}");
    // Past --fail-first, connections are served.
    let (raw, _) = send_tls(
        &emu.addr,
        "localhost",
        client_config(Some(&ca)),
        &register_request("/", &[]),
    )
    .unwrap();
    assert_signed(&parse(&raw), &emu.public_pem(1));
    let lines = emu.wait_for_calls(2);
    assert_eq!(
        (lines[0]["fault"].clone(), lines[0]["status"].clone()),
        (json!("tls-handshake-failure"), Value::Null)
    );
    assert_eq!(lines[1]["status"], json!(200));

    // Without --tls the connection is closed at once.
    let emu = Emulator::start_with_shared_keys(&["--fault", "tls-handshake-failure"]);
    match send_raw(&emu.addr, &register_request("/", &[]), IO_TIMEOUT) {
        Ok(bytes) => assert!(bytes.is_empty(), "{:?}", String::from_utf8_lossy(&bytes)),
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ),
            "{e}"
        ),
    }
}

#[test]
fn run_with_tls_sets_ssl_cert_file() {
    let script = r#"echo "$AWS_ENDPOINT_URL_MARKETPLACE_METERING|$SSL_CERT_FILE"; grep -q 'BEGIN CERTIFICATE' "$SSL_CERT_FILE""#;
    let kd = shared_key_dir();
    let (st, out, err) = run_bin(
        &[
            "run",
            "--tls",
            "--key-dir",
            kd.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            script,
        ],
        &[],
    );
    assert_eq!(st.code(), Some(0), "{out}{err}");
    let (url, ca) = out.trim().split_once('|').unwrap();
    assert!(url.starts_with("https://127.0.0.1:"), "{out}");
    let ready: Value = serde_json::from_str(err.lines().next().unwrap()).unwrap();
    assert_eq!(ready["caFile"].as_str(), Some(ca));
    assert_eq!(ready["url"].as_str(), Some(url));
}

/// Read an HTTP answer head from a proxy (up to the blank line), byte by byte.
fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).unwrap(), 1, "EOF in the proxy's answer");
        head.push(b[0]);
    }
    String::from_utf8(head).unwrap()
}

#[test]
fn proxy_forwards_absolute_form_and_tunnels_connect() {
    // Absolute-form to a plain emulator, whatever host the URL names.
    let emu = Emulator::start_with_shared_keys(&[]);
    let pem = emu.public_pem(1);
    let p = proxy::Proxy::start(emu.addr.parse().unwrap());
    assert!(p.url.starts_with("http://127.0.0.1:"));
    let proxy_addr = p.addr.to_string();
    let target = "http://metering.emulator.test:1234/";
    let raw = send_raw(&proxy_addr, &register_request(target, &[]), IO_TIMEOUT).unwrap();
    assert_signed(&parse(&raw), &pem);
    assert_eq!(p.requests(), vec![format!("POST {target} HTTP/1.1")]);

    // With authentication required: 407 without credentials, forwarded with them.
    let pa = proxy::Proxy::start_requiring_auth(emu.addr.parse().unwrap(), "user:pass");
    let pa_addr = pa.addr.to_string();
    let r = parse(&send_raw(&pa_addr, &register_request(target, &[]), IO_TIMEOUT).unwrap());
    assert_eq!(r.status, 407);
    assert!(r.header("proxy-authenticate").is_some());
    let wrong = [("Proxy-Authorization", "Basic dXNlcjp3cm9uZw==")];
    let r = parse(&send_raw(&pa_addr, &register_request(target, &wrong), IO_TIMEOUT).unwrap());
    assert_eq!(r.status, 407);
    let good = [("Proxy-Authorization", "Basic dXNlcjpwYXNz")];
    let raw = send_raw(&pa_addr, &register_request(target, &good), IO_TIMEOUT).unwrap();
    assert_signed(&parse(&raw), &pem);
    assert_eq!(pa.requests().len(), 3);

    // CONNECT tunnel to a TLS emulator, verified as metering.emulator.test.
    let tls_emu = Emulator::start_with_shared_keys(&["--tls"]);
    let ca = tls_emu.ready["caFile"].as_str().unwrap().to_string();
    let pt = proxy::Proxy::start(tls_emu.addr.parse().unwrap());
    let mut s = TcpStream::connect(pt.addr).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(
        b"CONNECT metering.emulator.test:443 HTTP/1.1\r\nHost: metering.emulator.test:443\r\n\r\n",
    )
    .unwrap();
    let head = read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let (raw, _) = tls_exchange(
        s,
        "metering.emulator.test",
        client_config(Some(&ca)),
        &register_request("/", &[]),
    )
    .unwrap();
    assert_signed(&parse(&raw), &pem);
    assert_eq!(
        pt.requests(),
        vec!["CONNECT metering.emulator.test:443 HTTP/1.1".to_string()]
    );

    // After drop, the proxy no longer accepts.
    let gone = pt.addr;
    drop(pt);
    let refused = TcpStream::connect(gone)
        .and_then(|mut s| {
            s.set_read_timeout(Some(IO_TIMEOUT))?;
            s.write_all(b"CONNECT x:1 HTTP/1.1\r\n\r\n")?;
            let mut b = [0u8; 1];
            s.read(&mut b)
        })
        .map_or(true, |n| n == 0);
    assert!(refused, "the proxy still answers after drop");
}
