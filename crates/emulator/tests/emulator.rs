//! Black-box tests of the `mpgate-emulator` binary over raw HTTP/1.1 (and HTTPS), and of
//! the test proxy in `mpgate_testkit::proxy`. Every request is signed for real with SigV4
//! (AWS's signer, `aws-sigv4`); the ones that must fail change what was signed.

use mpgate_testkit::emulator::{shared_key_dir, ACCESS_KEY_ID, SECRET_ACCESS_KEY, SESSION_TOKEN};
use mpgate_testkit::faults::{service_fault, SERVICE_FAULTS};
use mpgate_testkit::sigv4::{sign, Signing};
use mpgate_testkit::{proxy, run_bounded, scratch, wait_until, Emulator, Live};

use std::collections::HashSet;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant, SystemTime};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_mpgate-emulator");
const PRODUCT: &str = "prod-demo1234567890abcdef";
/// Bound on every run of the binary (its keys may be generated first).
const STARTUP: Duration = Duration::from_secs(60);
const IO_TIMEOUT: Duration = Duration::from_secs(15);
const TARGET: &str = "AWSMPMeteringService.RegisterUsage";
const JSON_1_1: &str = "application/x-amz-json-1.1";
/// AWS's documented example pair, the emulator's default (long-term) credentials.
const EXAMPLE_ID: &str = "AKIAIOSFODNN7EXAMPLE";
const EXAMPLE_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const SIGNATURE_MISMATCH: &str =
    "The request signature we calculated does not match the signature you provided.";

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
            .unwrap_or_else(|| panic!("no __type in {self:?}"))
            .to_string()
    }
    fn message(&self) -> String {
        self.json()["message"]
            .as_str()
            .unwrap_or_else(|| panic!("no message in {self:?}"))
            .to_string()
    }
    /// Asserts an AWS error answer: status, `__type` and `x-amzn-errortype`.
    fn expect_error(&self, status: u16, error_type: &str, what: &str) -> &Self {
        assert_eq!(
            (self.status, self.error_type().as_str()),
            (status, error_type),
            "{what}: {self:?}"
        );
        assert_eq!(self.header("x-amzn-errortype"), Some(error_type), "{what}");
        self
    }
    fn request_id(&self) -> &str {
        self.header("x-amzn-requestid")
            .unwrap_or_else(|| panic!("no x-amzn-RequestId in {self:?}"))
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

/// An HTTP/1.1 request, built header by header; [`Req::signed`] signs what it holds so far.
#[derive(Clone)]
struct Req {
    method: String,
    /// Origin-form (`/`) or absolute-form (`http://host/`, through a proxy).
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Req {
    fn new(method: &str, path: &str, body: &[u8]) -> Req {
        Req {
            method: method.into(),
            path: path.into(),
            headers: vec![("Host".into(), "localhost".into())],
            body: body.to_vec(),
        }
    }

    /// An unsigned RegisterUsage call with `body`.
    fn register(body: &str) -> Req {
        Req::new("POST", "/", body.as_bytes())
            .header("X-Amz-Target", TARGET)
            .header("Content-Type", JSON_1_1)
    }

    /// Sets `name` (replacing any value it had).
    fn header(mut self, name: &str, value: &str) -> Req {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self.headers.push((name.into(), value.into()));
        self
    }

    fn without(mut self, name: &str) -> Req {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self
    }

    /// Signs every header it holds and the body with AWS's signer, and adds `X-Amz-Date`,
    /// `X-Amz-Security-Token` (temporary keys) and `Authorization`.
    fn signed(self, s: &Signing) -> Req {
        let path = match self.path.split_once("://") {
            Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]).to_string(),
            None => self.path.clone(),
        };
        let added = sign(&self.method, &path, &self.headers, &self.body, s);
        added
            .into_iter()
            .fold(self, |req, (k, v)| req.header(&k, &v))
    }

    fn bytes(&self) -> Vec<u8> {
        let mut head = format!("{} {} HTTP/1.1\r\n", self.method, self.path);
        for (k, v) in &self.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str(&format!(
            "Connection: close\r\nContent-Length: {}\r\n\r\n",
            self.body.len()
        ));
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }

    fn send(&self, addr: &str) -> Resp {
        parse(&send_raw(addr, &self.bytes(), IO_TIMEOUT).unwrap())
    }
}

/// RegisterUsage with `body`, signed with the test pair.
fn register(addr: &str, body: &Value) -> Resp {
    Req::register(&body.to_string())
        .signed(&Signing::new())
        .send(addr)
}

fn ok_body() -> Value {
    json!({"ProductCode": PRODUCT, "PublicKeyVersion": 1, "Nonce": "n-123"})
}

/// A signed, valid RegisterUsage call.
fn ok_call() -> Req {
    Req::register(&ok_body().to_string()).signed(&Signing::new())
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

/// `X-Amz-Date`'s day of `t`, as the credential scope names it.
fn scope_day(t: SystemTime) -> String {
    let secs = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let out = run_bounded(
        Command::new("date").args(["-u", "-d", &format!("@{secs}"), "+%Y%m%d"]),
        IO_TIMEOUT,
    );
    out.stdout.trim().to_string()
}

#[test]
fn rejections_have_aws_types_and_statuses() {
    let emu = Emulator::start_with_shared_keys(&[]);
    let a = &emu.addr;
    let body = ok_body().to_string();
    let s = Signing::new();

    let cases: Vec<(&str, Req, u16, &str)> = vec![
        (
            "other operation",
            Req::register(&body)
                .header("X-Amz-Target", "AWSMPMeteringService.BatchMeterUsage")
                .signed(&s),
            400,
            "UnknownOperationException",
        ),
        (
            "missing target",
            Req::register(&body).without("X-Amz-Target").signed(&s),
            400,
            "UnknownOperationException",
        ),
        (
            "foreign target",
            Req::register(&body)
                .header("X-Amz-Target", "DynamoDB_20120810.GetItem")
                .signed(&s),
            400,
            "UnknownOperationException",
        ),
        (
            "content type",
            Req::register(&body)
                .header("Content-Type", "application/json")
                .signed(&s),
            400,
            "SerializationException",
        ),
        (
            "missing auth",
            Req::register(&body),
            400,
            "MissingAuthenticationTokenException",
        ),
        (
            "malformed auth",
            Req::register(&body)
                .signed(&s)
                .header("Authorization", "AWS4-HMAC-SHA256 Credential=x"),
            403,
            "IncompleteSignatureException",
        ),
        (
            "another scheme",
            Req::register(&body).header("Authorization", "Bearer abc"),
            403,
            "IncompleteSignatureException",
        ),
        (
            "wrong service",
            Req::register(&body).signed(&s.clone().service("execute-api")),
            403,
            "InvalidSignatureException",
        ),
        (
            "bad json",
            Req::register("{nope").signed(&s),
            400,
            "SerializationException",
        ),
        (
            "unknown product",
            Req::register(&json!({"ProductCode": "prod-other", "PublicKeyVersion": 1}).to_string())
                .signed(&s),
            400,
            "InvalidProductCodeException",
        ),
        (
            "unknown key version",
            Req::register(&json!({"ProductCode": PRODUCT, "PublicKeyVersion": 9}).to_string())
                .signed(&s),
            400,
            "InvalidPublicKeyVersionException",
        ),
    ];
    for (what, req, status, ty) in cases {
        req.send(a).expect_error(status, ty, what);
    }
    let wrong_region = Req::register(&body)
        .signed(&s.clone().region("eu-west-1"))
        .send(a);
    wrong_region.expect_error(403, "InvalidSignatureException", "wrong region");
    assert!(wrong_region
        .message()
        .contains("Credential should be scoped to a valid region"));

    let get = Req::new("GET", "/", b"").signed(&s).send(a);
    get.expect_error(400, "UnknownOperationException", "GET");

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
        resp.expect_error(400, "ValidationException", &body.to_string());
        let msg = resp.message();
        assert!(msg.contains(&format!("'{field}'")), "{body}: {msg}");
    }
    let not_object = register(a, &json!([1, 2]));
    assert_eq!(not_object.error_type(), "SerializationException");

    // Oversized bodies are refused without reading them whole, signed or not.
    let huge = "x".repeat(70 * 1024);
    let resp = Req::register(&huge).signed(&s).send(a);
    assert_eq!(resp.status, 413);
}

#[test]
fn a_changed_signed_byte_is_an_invalid_signature() {
    let emu = Emulator::start_with_shared_keys(&[]);
    let a = &emu.addr;
    // Control: the request as signed is answered.
    assert_eq!(ok_call().send(a).status, 200);

    // One byte of the body.
    let mut req = ok_call();
    let at = req.body.iter().position(|b| *b == b'1').unwrap();
    req.body[at] = b'2';
    let changed_body = req.send(a);
    changed_body.expect_error(403, "InvalidSignatureException", "changed body");
    assert!(changed_body.message().starts_with(SIGNATURE_MISMATCH));

    // One byte of signed headers: Host, and a header the client chose to sign.
    let changed_host = ok_call().header("Host", "localhosu").send(a);
    changed_host.expect_error(403, "InvalidSignatureException", "changed Host");
    let signed_extra = Req::register(&ok_body().to_string())
        .header("X-Amz-User-Agent", "aws-sdk-rust/1")
        .signed(&Signing::new());
    assert_eq!(signed_extra.send(a).status, 200, "control");
    signed_extra
        .header("X-Amz-User-Agent", "aws-sdk-rust/2")
        .send(a)
        .expect_error(403, "InvalidSignatureException", "changed X-Amz-User-Agent");

    // The signature itself, and a secret the emulator does not know for this key.
    let mut req = ok_call();
    let auth = req
        .headers
        .iter_mut()
        .find(|(k, _)| k == "authorization")
        .unwrap();
    let last = auth.1.pop().unwrap();
    auth.1.push(if last == '0' { '1' } else { '0' });
    req.send(a)
        .expect_error(403, "InvalidSignatureException", "changed signature");
    Req::register(&ok_body().to_string())
        .signed(&Signing::new().key(
            ACCESS_KEY_ID,
            "not-the-secret-key-of-this-pair-0000000",
            Some(SESSION_TOKEN),
        ))
        .send(a)
        .expect_error(403, "InvalidSignatureException", "wrong secret");

    // Unsigned headers may change, as proxies change them.
    let unsigned = ok_call().header("User-Agent", "changed-by-a-proxy");
    assert_eq!(unsigned.send(a).status, 200);

    // Host and X-Amz-Date must be signed; so must the session token of a temporary key.
    let mut no_host = ok_call();
    for (k, v) in &mut no_host.headers {
        if k == "authorization" {
            *v = v.replace(
                "SignedHeaders=content-type;host;",
                "SignedHeaders=content-type;",
            );
        }
    }
    let r = no_host.send(a);
    r.expect_error(403, "IncompleteSignatureException", "host unsigned");
    assert!(r.message().contains("'Host'"), "{}", r.message());
}

#[test]
fn the_clock_window_is_fifteen_minutes_either_way() {
    let emu = Emulator::start_with_shared_keys(&[]);
    let twenty = Duration::from_secs(20 * 60);
    let old = Req::register(&ok_body().to_string())
        .signed(&Signing::new().at(SystemTime::now() - twenty))
        .send(&emu.addr);
    old.expect_error(403, "InvalidSignatureException", "20 minutes old");
    let msg = old.message();
    assert!(
        msg.starts_with("Signature expired: ") && msg.contains(" is now earlier than "),
        "{msg}"
    );
    assert!(msg.ends_with(" - 15 min.)"), "{msg}");
    let future = Req::register(&ok_body().to_string())
        .signed(&Signing::new().at(SystemTime::now() + twenty))
        .send(&emu.addr);
    future.expect_error(403, "InvalidSignatureException", "20 minutes ahead");
    assert!(
        future.message().starts_with("Signature not yet current: "),
        "{}",
        future.message()
    );
    // Inside the window, either way.
    for offset in [-600i64, 600] {
        let t = if offset < 0 {
            SystemTime::now() - Duration::from_secs(600)
        } else {
            SystemTime::now() + Duration::from_secs(600)
        };
        let r = Req::register(&ok_body().to_string())
            .signed(&Signing::new().at(t))
            .send(&emu.addr);
        assert_eq!(r.status, 200, "{offset}s: {r:?}");
    }
    // A malformed X-Amz-Date.
    let r = ok_call()
        .header("X-Amz-Date", "2026-12-01T12:00:00Z")
        .send(&emu.addr);
    r.expect_error(403, "IncompleteSignatureException", "extended format");
}

#[test]
fn clock_offset_stands_for_a_node_clock_that_is_off() {
    // AWS's clock 20 minutes ahead of this machine: a fresh signature is already expired.
    let ahead = Emulator::start_with_shared_keys(&["--clock-offset", "20m"]);
    let r = ok_call().send(&ahead.addr);
    r.expect_error(403, "InvalidSignatureException", "clock 20m ahead");
    let msg = r.message();
    assert!(msg.starts_with("Signature expired: "), "{msg}");
    // Its answers are dated by its clock (what the SDKs correct their skew from).
    let date = r.header("date").expect("a Date header");
    let secs = run_bounded(
        Command::new("date").args(["-u", "-d", date, "+%s"]),
        IO_TIMEOUT,
    )
    .stdout
    .trim()
    .parse::<i64>()
    .unwrap_or_else(|e| panic!("Date {date:?}: {e}"));
    assert!(
        (secs - now() - 1200).abs() <= 5,
        "Date {date} is not 20 min ahead"
    );
    // Signed by its clock, the call works, and the token's iat is AWS's time.
    let r = Req::register(&ok_body().to_string())
        .signed(&Signing::new().at(SystemTime::now() + Duration::from_secs(1200)))
        .send(&ahead.addr);
    assert_eq!(r.status, 200, "{r:?}");
    let (_, claims, _) = jwt_parts(r.json()["Signature"].as_str().unwrap());
    let iat = claims["iat"].as_i64().unwrap();
    assert!((iat - now() - 1200).abs() <= 5, "iat {iat}");

    let behind = Emulator::start_with_shared_keys(&["--clock-offset", "-20m"]);
    let r = ok_call().send(&behind.addr);
    r.expect_error(403, "InvalidSignatureException", "clock 20m behind");
    assert!(
        r.message().starts_with("Signature not yet current: "),
        "{}",
        r.message()
    );
    // A few minutes off is inside the window.
    let close = Emulator::start_with_shared_keys(&["--clock-offset", "-5m"]);
    assert_eq!(ok_call().send(&close.addr).status, 200);
}

#[test]
fn temporary_keys_need_their_signed_session_token() {
    let emu = Emulator::start_with_shared_keys(&[]);
    let a = &emu.addr;
    let no_token = ok_call().without("X-Amz-Security-Token").send(a);
    no_token.expect_error(403, "UnrecognizedClientException", "no token");
    assert_eq!(
        no_token.message(),
        "The security token included in the request is invalid."
    );
    // Signed without the token (as if the key were long-term), the token sent unsigned.
    let unsigned = Req::register(&ok_body().to_string())
        .signed(&Signing::new().key(ACCESS_KEY_ID, SECRET_ACCESS_KEY, None))
        .header("X-Amz-Security-Token", SESSION_TOKEN)
        .send(a);
    unsigned.expect_error(403, "IncompleteSignatureException", "token unsigned");
    assert!(
        unsigned.message().contains("X-Amz-Security-Token"),
        "{}",
        unsigned.message()
    );
    // Another token, signed.
    Req::register(&ok_body().to_string())
        .signed(&Signing::new().key(
            ACCESS_KEY_ID,
            SECRET_ACCESS_KEY,
            Some("someone-else-s-token"),
        ))
        .send(a)
        .expect_error(403, "UnrecognizedClientException", "wrong token");
    // A key the emulator does not know.
    let unknown = Req::register(&ok_body().to_string())
        .signed(&Signing::new().key("ASIAUNKNOWNKEY000000", SECRET_ACCESS_KEY, Some("t")))
        .send(a);
    unknown.expect_error(403, "UnrecognizedClientException", "unknown key");
    assert_eq!(
        unknown.message(),
        "The security token included in the request is invalid."
    );
}

#[test]
fn expired_credentials_get_expired_token_exception() {
    let emu = Emulator::start_with_shared_keys(&[
        "--expired-credentials",
        "ASIAEXPIREDKEY000000:expiredSecret/0123456789:expiredToken0123",
    ]);
    let r = Req::register(&ok_body().to_string())
        .signed(&Signing::new().key(
            "ASIAEXPIREDKEY000000",
            "expiredSecret/0123456789",
            Some("expiredToken0123"),
        ))
        .send(&emu.addr);
    r.expect_error(403, "ExpiredTokenException", "expired token");
    assert_eq!(
        r.message(),
        "The security token included in the request is expired"
    );
    // The ready line lists it after the usable pair.
    let creds = emu.ready["credentials"].as_array().unwrap();
    assert_eq!(creds.len(), 2, "{creds:?}");
    assert_eq!(creds[0]["accessKeyId"], ACCESS_KEY_ID);
    assert_eq!(creds[1]["expired"], true);
    // The test pair still works beside it.
    assert_eq!(ok_call().send(&emu.addr).status, 200);
}

#[test]
fn long_term_keys_are_not_a_task_unless_said_so() {
    let pair = format!("{EXAMPLE_ID}:{EXAMPLE_SECRET}");
    let signing = Signing::new().key(EXAMPLE_ID, EXAMPLE_SECRET, None);
    let emu = Emulator::start_with_shared_keys(&["--credentials", &pair]);
    let r = Req::register(&ok_body().to_string())
        .signed(&signing)
        .send(&emu.addr);
    r.expect_error(400, "PlatformNotSupportedException", "long-term key");
    assert!(r.message().contains("Amazon ECS"), "{}", r.message());
    // A long-term key with a session token is not recognised.
    Req::register(&ok_body().to_string())
        .signed(&Signing::new().key(EXAMPLE_ID, EXAMPLE_SECRET, Some("t")))
        .send(&emu.addr)
        .expect_error(
            403,
            "UnrecognizedClientException",
            "long-term key with a token",
        );

    let tasks =
        Emulator::start_with_shared_keys(&["--credentials", &pair, "--long-term-keys-are-tasks"]);
    let r = Req::register(&ok_body().to_string())
        .signed(&signing)
        .send(&tasks.addr);
    assert_eq!(r.status, 200, "{r:?}");
}

#[test]
fn without_credentials_the_emulator_knows_the_documented_example_pair() {
    let kd = shared_key_dir();
    let (st, _, err) = run_bin(
        &[
            "run",
            "--verbose",
            "--key-dir",
            kd.to_str().unwrap(),
            "--",
            "true",
        ],
        &[],
    );
    assert!(st.success(), "{err}");
    let ready: Value = serde_json::from_str(err.lines().next().unwrap()).unwrap();
    let creds = ready["credentials"].as_array().unwrap();
    assert_eq!(
        creds[0],
        json!({"accessKeyId": EXAMPLE_ID, "secretAccessKey": EXAMPLE_SECRET, "sessionToken": null, "expired": false})
    );
    // Plus the temporary pair run hands out; --credentials replaces the default.
    assert_eq!(creds.len(), 2, "{creds:?}");
    let (st, _, err) = run_bin(
        &[
            "run",
            "--verbose",
            "--key-dir",
            kd.to_str().unwrap(),
            "--credentials",
            "ASIAMINE000000000000:s:t",
            "--",
            "true",
        ],
        &[],
    );
    assert!(st.success(), "{err}");
    let ready: Value = serde_json::from_str(err.lines().next().unwrap()).unwrap();
    let ids: Vec<&str> = ready["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["accessKeyId"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert_eq!(ids[0], "ASIAMINE000000000000");
    assert!(!ids.contains(&EXAMPLE_ID), "{ids:?}");
}

#[test]
fn a_task_in_another_region_gets_invalid_region_exception() {
    let emu = Emulator::start_with_shared_keys(&["--task-region", "eu-west-1"]);
    let r = ok_call().send(&emu.addr);
    r.expect_error(400, "InvalidRegionException", "task in eu-west-1");
    assert!(r.message().contains("same AWS Region"), "{}", r.message());
    // Signed for the task's region instead, the scope is wrong for this endpoint.
    Req::register(&ok_body().to_string())
        .signed(&Signing::new().region("eu-west-1"))
        .send(&emu.addr)
        .expect_error(403, "InvalidSignatureException", "signed for eu-west-1");
    // A task in the emulator's own region is served.
    let home = Emulator::start_with_shared_keys(&["--task-region", "us-east-1"]);
    assert_eq!(ok_call().send(&home.addr).status, 200);
}

#[test]
fn every_answer_has_a_fresh_request_id_that_is_recorded() {
    let emu = Emulator::start_with_shared_keys(&[]);
    let answers = [
        ok_call().send(&emu.addr),
        ok_call().send(&emu.addr),
        Req::register(&ok_body().to_string()).send(&emu.addr),
        ok_call().header("Host", "elsewhere").send(&emu.addr),
        register(&emu.addr, &json!({"ProductCode": PRODUCT})),
    ];
    let statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 200, 400, 403, 400]);
    let ids: Vec<&str> = answers.iter().map(Resp::request_id).collect();
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        ids.len(),
        "{ids:?}"
    );
    for id in &ids {
        let groups: Vec<usize> = id.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{id}");
        assert!(
            id.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit()),
            "{id}"
        );
    }
    let recorded: Vec<Value> = emu.calls().iter().map(|c| c["requestId"].clone()).collect();
    assert_eq!(recorded, ids.iter().map(|i| json!(i)).collect::<Vec<_>>());

    // Faults: service errors carry one; a proxy's page does not.
    let emu = Emulator::start_with_shared_keys(&["--fault", "throttle"]);
    assert!(!ok_call().send(&emu.addr).request_id().is_empty());
    let emu = Emulator::start_with_shared_keys(&["--fault", "http-503-html"]);
    let r = ok_call().send(&emu.addr);
    assert_eq!(r.status, 503);
    assert_eq!(r.header("x-amzn-requestid"), None, "{r:?}");
    assert_eq!(emu.calls()[0]["requestId"], Value::Null);
}

#[test]
fn success_is_a_ps256_token_with_the_claims_as_sent() {
    let emu = Emulator::start_with_shared_keys(&["--key-versions", "1,2"]);
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
    assert_eq!(resp.header("content-type"), Some(JSON_1_1));
    let body = resp.json();
    assert!(body.get("PublicKeyRotationTimestamp").is_none(), "{body}");
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
fn the_rotation_timestamp_is_sent_for_expiring_key_versions_only() {
    let rotation = |emu: &Emulator, version: u32| {
        register(
            &emu.addr,
            &json!({"ProductCode": PRODUCT, "PublicKeyVersion": version}),
        )
        .json()
        .get("PublicKeyRotationTimestamp")
        .cloned()
    };
    // Default: every served version but the highest expires.
    let emu = Emulator::start_with_shared_keys(&[
        "--key-versions",
        "1,2,3",
        "--rotation-timestamp",
        "1700000000",
    ]);
    let got: Vec<Option<Value>> = (1..=3).map(|v| rotation(&emu, v)).collect();
    assert_eq!(
        got,
        [Some(json!(1700000000)), Some(json!(1700000000)), None]
    );
    // Named.
    let emu = Emulator::start_with_shared_keys(&[
        "--key-versions",
        "1,2,3",
        "--rotation-timestamp",
        "1700000000",
        "--expiring-key-versions",
        "2",
    ]);
    let got: Vec<Option<Value>> = (1..=3).map(|v| rotation(&emu, v)).collect();
    assert_eq!(got, [None, Some(json!(1700000000)), None]);
    // No timestamp without --rotation-timestamp.
    let emu = Emulator::start_with_shared_keys(&["--key-versions", "1,2"]);
    assert_eq!(rotation(&emu, 1), None);

    // A timestamp that applies to no version, or a version not served, is a usage error.
    for args in [
        &["--rotation-timestamp", "1700000000"][..],
        &[
            "--key-versions",
            "1,2",
            "--rotation-timestamp",
            "1700000000",
            "--expiring-key-versions",
            "3",
        ],
        &["--key-versions", "1,2", "--expiring-key-versions", "1"],
    ] {
        let (st, _, err) = run_bin(args, &[]);
        assert_eq!(st.code(), Some(2), "{args:?}: {err}");
    }
}

#[test]
fn fail_first_throttles_then_succeeds_and_records_every_call() {
    let emu = Emulator::start_with_shared_keys(&["--fault", "throttle", "--fail-first", "2"]);
    // A rejected call is recorded but does not use up a fault slot.
    let rejected = Req::register("{}").send(&emu.addr);
    assert_eq!(rejected.status, 400);
    let mut seen = Vec::new();
    let signed_at = SystemTime::now();
    for _ in 0..3 {
        let r = Req::register(&ok_body().to_string())
            .signed(&Signing::new().at(signed_at))
            .send(&emu.addr);
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
    let scope = format!(
        "{ACCESS_KEY_ID}/{}/us-east-1/aws-marketplace/aws4_request",
        scope_day(signed_at)
    );
    for (i, line) in lines[1..].iter().enumerate() {
        assert_eq!(line["call"], i as u64 + 2);
        assert_eq!(line["target"], TARGET);
        assert_eq!(line["productCode"], PRODUCT);
        assert_eq!(line["publicKeyVersion"], 1);
        assert_eq!(line["nonce"], "n-123");
        assert_eq!(line["credentialScope"], scope.as_str());
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
    // No secret in the record or the log.
    let record = fs::read_to_string(&emu.record).unwrap();
    let log = fs::read_to_string(emu.dir.join("emulator.stderr")).unwrap();
    for text in [&record, &log] {
        assert!(!text.contains(SECRET_ACCESS_KEY) && !text.contains(SESSION_TOKEN));
        assert!(!text.contains("Signature="), "{text}");
    }
}

#[test]
fn service_error_faults_answer_as_the_shared_table_says() {
    for f in SERVICE_FAULTS {
        let emu = Emulator::start_with_shared_keys(&["--fault", f.fault]);
        let r = register(&emu.addr, &ok_body());
        r.expect_error(f.status, f.error_type, f.fault);
        assert!(!r.message().is_empty());
        assert!(!r.request_id().is_empty());
    }
    let emu = Emulator::start_with_shared_keys(&["--fault", "http-502-html"]);
    let r = register(&emu.addr, &ok_body());
    assert_eq!(r.status, 502);
    assert_eq!(r.header("content-type"), Some("text/html"));
    assert!(String::from_utf8_lossy(&r.body).contains("502 Bad Gateway"));
}

/// `--list-faults`, parsed.
fn listed_faults() -> Vec<Value> {
    let (st, out, err) = run_bin(&["--list-faults"], &[]);
    assert!(st.success(), "{err}");
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

/// Reads from `s` until EOF, a reset or `limit`; returns what arrived and how it ended.
fn read_all(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, Result<(), std::io::ErrorKind>) {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (out, Ok(())),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => return (out, Err(e.kind())),
        }
    }
}

#[test]
fn every_listed_fault_does_what_its_kind_says() {
    let listed = listed_faults();
    let names: Vec<&str> = listed.iter().map(|f| f["name"].as_str().unwrap()).collect();
    // The help lists the same faults.
    let (_, help, _) = run_bin(&["--help"], &[]);
    for name in &names {
        assert!(help.contains(name), "--help lacks {name}");
    }
    // The shared table holds exactly the service errors the emulator lists.
    let listed_service: Vec<&str> = listed
        .iter()
        .filter(|f| f["kind"] == "service-error")
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    let table: Vec<&str> = SERVICE_FAULTS.iter().map(|f| f.fault).collect();
    assert_eq!(listed_service, table);

    for fault in &listed {
        let name = fault["name"].as_str().unwrap();
        let kind = fault["kind"].as_str().unwrap();
        if kind.starts_with("license") || kind.starts_with("meter") || kind == "sts" {
            // License Manager's faults (`--license-fault`): tests/license.rs; MeterUsage's
            // (`--meter-fault`): tests/meter_usage.rs; the token exchange's (`license-token`,
            // `sts`): tests/anywhere.rs.
            continue;
        }
        let mut flags = vec!["--fault", name];
        if kind == "raw" {
            flags.extend(["--trickle-interval", "1ms", "--oversize-bytes", "100000"]);
        }
        let emu = Emulator::start_with_shared_keys(&flags);
        let pem = emu.public_pem(1);
        let mut s = TcpStream::connect(&emu.addr).unwrap();
        // A connection fault may close the connection before the request is written.
        let _ = s.write_all(&ok_call().bytes());
        let limit = if name == "hang" {
            Duration::from_millis(500)
        } else {
            IO_TIMEOUT
        };
        let (raw, end) = read_all(&mut s, limit);
        let what = format!("{name} ({kind}): {:?}", String::from_utf8_lossy(&raw));
        match kind {
            "none" => assert_signed(&parse(&raw), &pem),
            "service-error" => {
                let want = service_fault(name).unwrap();
                assert_eq!(fault["status"], want.status, "{name}");
                assert_eq!(fault["errorType"], want.error_type, "{name}");
                parse(&raw).expect_error(want.status, want.error_type, name);
            }
            "html-page" => {
                let r = parse(&raw);
                assert_eq!(json!(r.status), fault["status"], "{what}");
                assert_eq!(r.header("content-type"), Some("text/html"), "{what}");
            }
            "token" => {
                let r = parse(&raw);
                assert_eq!(r.status, 200, "{what}");
                if name != "token-html-answer" {
                    // The answer parses; what is wrong is the token (token_faults below).
                    r.json();
                }
            }
            "content-type" => {
                let r = parse(&raw);
                assert_eq!(r.status, 200, "{what}");
                assert_ne!(r.header("content-type"), Some(JSON_1_1), "{what}");
                assert_signed(&r, &pem);
            }
            "network" | "connection" => {
                assert!(raw.is_empty(), "{what}");
                if name == "hang" {
                    assert!(
                        matches!(
                            end,
                            Err(std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
                        ),
                        "{what}: {end:?}"
                    );
                }
            }
            "raw" if name == "reset-headers" => {
                assert!(raw.starts_with(b"HTTP/1.1 200 "), "{what}");
                assert!(!raw.windows(4).any(|w| w == b"\r\n\r\n"), "{what}");
                assert_eq!(end, Err(std::io::ErrorKind::ConnectionReset), "{what}");
            }
            "raw" => {
                let r = parse(&raw);
                assert_eq!(r.status, 200, "{what}");
                let length: Option<usize> = r.header("content-length").map(|l| l.parse().unwrap());
                match name {
                    "trickle" => assert_signed(&r, &pem),
                    "truncated-body" | "reset-body" => {
                        assert!(length.unwrap() > r.body.len(), "{what}")
                    }
                    "oversize-body" => assert_eq!(length, Some(100_000)),
                    "oversize-chunked" => {
                        assert_eq!(r.header("transfer-encoding"), Some("chunked"))
                    }
                    "oversize-eof" => assert_eq!(r.body.len(), 100_000),
                    other => panic!("no check for raw fault {other}"),
                }
            }
            other => panic!("{name}: unknown kind {other}"),
        }
    }
}

#[test]
fn hang_and_drop_faults() {
    let emu = Emulator::start_with_shared_keys(&["--fault", "drop"]);
    let req = ok_call().bytes();
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
        (
            lines[0]["fault"].clone(),
            lines[0]["status"].clone(),
            lines[0]["requestId"].clone()
        ),
        (json!("drop"), Value::Null, Value::Null)
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
/// The binary with `args`, in an environment of `env` and PATH only (a developer's own
/// MPGATE_* or AWS_* settings would change what run does).
fn run_bin(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String, String) {
    let out = run_bounded(
        Command::new(BIN)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(env.iter().copied()),
        STARTUP,
    );
    (out.status, out.stdout, out.stderr)
}

fn run_cmd(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String) {
    let (st, out, _) = run_cmd_with_ready(args, env);
    (st, out)
}

/// `run --verbose` with the shared keys; returns (status, stdout, stderr: the ready line
/// first).
fn run_cmd_with_ready(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String, String) {
    let kd = shared_key_dir();
    let mut full = vec!["run", "--verbose", "--key-dir", kd.to_str().unwrap()];
    full.extend_from_slice(args);
    run_bin(&full, env)
}

#[test]
fn run_sets_license_manager_and_leaves_out_the_hourly_settings_for_contract_pricing() {
    let script = r#"echo "$AWS_ENDPOINT_URL_LICENSE_MANAGER|$MPGATE_PRODUCT_SKU|${MPGATE_PRODUCT_CODE-unset}|${MPGATE_PUBLIC_KEY_FILE-unset}|${MPGATE_PUBLIC_KEY_VERSION-unset}""#;
    let (st, out) = run_cmd(
        &["--product-sku", "prod-sku-x", "--", "sh", "-c", script],
        &[("MPGATE_PRICING", "contract")],
    );
    assert_eq!(st.code(), Some(0), "{out}");
    let f: Vec<&str> = out.trim().split('|').collect();
    assert!(f[0].starts_with("http://127.0.0.1:"), "{out}");
    assert_eq!(&f[1..], ["prod-sku-x", "unset", "unset", "unset"], "{out}");
    // Without contract pricing, both sets.
    let (_, out) = run_cmd(&["--", "sh", "-c", script], &[]);
    let f: Vec<&str> = out.trim().split('|').collect();
    assert_eq!(f[1], "prod-sku-demo1234567890", "{out}");
    assert!(f[2..].iter().all(|v| *v != "unset"), "{out}");
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

    let script = r#"echo "$AWS_ENDPOINT_URL_MARKETPLACE_METERING|$AWS_REGION|$AWS_EC2_METADATA_DISABLED|$MPGATE_PRODUCT_CODE|$MPGATE_PUBLIC_KEY_VERSION|${AWS_PROFILE-unset}|${AWS_ENDPOINT_URL-unset}|$AWS_ACCESS_KEY_ID|$AWS_SECRET_ACCESS_KEY|$AWS_SESSION_TOKEN"; test -s "$MPGATE_PUBLIC_KEY_FILE""#;
    let (st, out, err) = run_cmd_with_ready(
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
            ("AWS_ACCESS_KEY_ID", "AKIAINHERITED0000000"),
            ("AWS_SECRET_ACCESS_KEY", "inherited"),
            ("AWS_SESSION_TOKEN", "t"),
            ("AWS_ENDPOINT_URL", "http://elsewhere"),
        ],
    );
    assert_eq!(st.code(), Some(0), "{out}");
    let f: Vec<&str> = out.trim().split('|').collect();
    assert!(f[0].starts_with("http://127.0.0.1:"), "{out}");
    assert_eq!(
        &f[1..7],
        ["eu-central-1", "true", "prod-x", "2", "unset", "unset"]
    );
    // Fresh temporary credentials, as a task role's, replacing the inherited ones; the
    // emulator knows them (its ready line lists them).
    let (id, secret, token) = (f[7], f[8], f[9]);
    assert!(id.starts_with("ASIA") && id.len() == 20, "{out}");
    assert!(
        secret.len() >= 40 && !token.is_empty() && token != "t",
        "{out}"
    );
    let ready: Value = serde_json::from_str(err.lines().next().unwrap()).unwrap();
    assert!(
        ready["credentials"]
            .as_array()
            .unwrap()
            .contains(&json!({"accessKeyId": id, "secretAccessKey": secret, "sessionToken": token, "expired": false})),
        "{ready}"
    );
    // Each run hands out another pair.
    let (_, again, _) = run_cmd_with_ready(&["--", "sh", "-c", "echo $AWS_ACCESS_KEY_ID"], &[]);
    assert_ne!(again.trim(), id);

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
        &["--credentials", "AKIDONLY"],
        &["--expired-credentials", "ASIAX:secret"],
        &["--credentials", "ASIAX:s:t", "--credentials", "ASIAX:s2"],
        &["--clock-offset", "soon"],
        &["--task-region", "eu west"],
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
        "--write-key-dir",
        "--quiet",
        "--verbose",
        "--fault",
        "--fail-first",
        "--latency",
        "--rotation-timestamp",
        "--expiring-key-versions",
        "--credentials",
        "--expired-credentials",
        "--long-term-keys-are-tasks",
        "--task-region",
        "--clock-offset",
        "--list-faults",
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
fn run_keeps_the_callers_settings_and_names_them_in_one_line() {
    let script = r#"echo "${MPGATE_PRODUCT_CODE-unset}|${MPGATE_PRODUCT_SKU-unset}|${MPGATE_PUBLIC_KEY_DIR-unset}|${MPGATE_PUBLIC_KEY_FILE-unset}|${MPGATE_PUBLIC_KEY_VERSION-unset}|${AWS_PROFILE-unset}|$AWS_SECRET_ACCESS_KEY|$AWS_SESSION_TOKEN""#;
    let kd = shared_key_dir();
    let (st, out, err) = run_bin(
        &[
            "run",
            "--key-dir",
            kd.to_str().unwrap(),
            "--product-code",
            "prod-real",
            "--",
            "sh",
            "-c",
            script,
        ],
        &[
            ("MPGATE_PRODUCT_CODE", "prod-typo"),
            ("MPGATE_PUBLIC_KEY_DIR", "/keys"),
            ("AWS_PROFILE", "p"),
        ],
    );
    assert_eq!(st.code(), Some(0), "{err}");
    let f: Vec<&str> = out.trim().split('|').collect();
    assert_eq!(
        &f[..6],
        [
            "prod-typo",
            "prod-sku-demo1234567890",
            "/keys",
            "unset",
            "unset",
            "unset"
        ],
        "{out}"
    );
    let (secret, token) = (f[6], f[7]);
    assert!(secret.len() >= 40 && !token.is_empty(), "{out}");
    // One line, naming what run set and what it kept, never a secret.
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("mpgate-emulator: serving http://127.0.0.1:"),
        "{err}"
    );
    for words in [
        " (us-east-1; product code prod-real, product SKU prod-sku-demo1234567890); set AWS_ENDPOINT_URL_MARKETPLACE_METERING, AWS_ENDPOINT_URL_LICENSE_MANAGER, AWS_REGION, ",
        "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN (temporary), MPGATE_PRODUCT_SKU=prod-sku-demo1234567890; ",
        "; kept MPGATE_PRODUCT_CODE=prod-typo, MPGATE_PUBLIC_KEY_DIR=/keys; removed AWS_PROFILE\n",
    ] {
        assert!(err.contains(words), "lacks {words:?}: {err}");
    }
    assert!(!err.contains(secret) && !err.contains(token), "{err}");
    assert!(!err.contains("MPGATE_PUBLIC_KEY_FILE"), "{err}");
}

/// `run` (with `flag`) of a command that publishes the emulator's url in a file and waits for
/// the test to have sent a request (unsigned: the request log shows rejected calls too);
/// returns run's exit.
fn run_with_a_request(flag: Option<&str>) -> mpgate_testkit::Exit {
    let dir = scratch("run-verbosity");
    let (url_file, done) = (dir.join("url"), dir.join("done"));
    let script = format!(
        r#"echo "$AWS_ENDPOINT_URL_MARKETPLACE_METERING" > '{u}.tmp' && mv '{u}.tmp' '{u}'; while [ ! -e '{d}' ]; do sleep 0.05; done"#,
        u = url_file.display(),
        d = done.display()
    );
    let kd = shared_key_dir();
    let mut args = vec!["run", "--key-dir", kd.to_str().unwrap()];
    args.extend(flag);
    args.extend(["--", "sh", "-c", &script]);
    let mut run = Live::spawn(Command::new(BIN).args(&args), STARTUP);
    let url = wait_until(STARTUP, "the url of run's emulator", || {
        fs::read_to_string(&url_file).ok()
    });
    let addr = url.trim().strip_prefix("http://").unwrap().to_string();
    Req::register(&ok_body().to_string())
        .send(&addr)
        .expect_error(400, "MissingAuthenticationTokenException", "unsigned");
    fs::write(&done, "").unwrap();
    let exit = run.finish();
    assert_eq!(exit.status.code(), Some(0), "{}", exit.stderr);
    exit
}

#[test]
fn run_prints_one_line_by_default_errors_only_when_quiet_and_everything_when_verbose() {
    let default = run_with_a_request(None);
    assert_eq!(default.stderr.lines().count(), 1, "{}", default.stderr);
    assert!(
        default.stderr.starts_with("mpgate-emulator: serving "),
        "{}",
        default.stderr
    );

    let quiet = run_with_a_request(Some("--quiet"));
    assert_eq!(quiet.stderr, "");
    // Errors still show.
    let (st, _, err) = run_bin(&["run", "--quiet", "--", "/nonexistent/command-xyz"], &[]);
    assert_eq!(st.code(), Some(127));
    assert_eq!(
        err,
        "mpgate-emulator: error: /nonexistent/command-xyz: command not found\n"
    );

    let verbose = run_with_a_request(Some("--verbose"));
    let lines: Vec<&str> = verbose.stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{}", verbose.stderr);
    let ready: Value = serde_json::from_str(lines[0]).unwrap();
    assert!(ready["credentials"].is_array(), "{ready}");
    assert!(
        lines[1].starts_with("mpgate-emulator: serving "),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].starts_with("mpgate-emulator: POST / {")
            && lines[2].contains("MissingAuthenticationTokenException"),
        "{}",
        lines[2]
    );
}

#[test]
fn write_key_dir_writes_a_public_key_ring_and_never_replaces_another_key() {
    let dir = scratch("write-key-dir");
    let ring = dir.join("nested/keys");
    let kd = dir.join("emulator-keys");
    let serve = |ring: &std::path::Path| {
        run_bounded(
            Command::new(BIN).args([
                "run",
                "--key-dir",
                kd.to_str().unwrap(),
                "--key-versions",
                "1,2",
                "--write-key-dir",
                ring.to_str().unwrap(),
                "--",
                "true",
            ]),
            STARTUP,
        )
    };
    let first = serve(&ring);
    assert_eq!(first.status.code(), Some(0), "{}", first.stderr);
    let mut names: Vec<String> = fs::read_dir(&ring)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    // The public keys only, the very ones the emulator serves.
    assert_eq!(names, ["public-key-v1.pem", "public-key-v2.pem"]);
    for v in [1, 2] {
        let name = format!("public-key-v{v}.pem");
        assert_eq!(
            fs::read_to_string(ring.join(&name)).unwrap(),
            fs::read_to_string(kd.join(&name)).unwrap()
        );
    }
    // Again, over the same keys: nothing to change.
    let again = serve(&ring);
    assert_eq!(again.status.code(), Some(0), "{}", again.stderr);

    // Another key in the way (say, the seller's real one): refused, left as it was.
    let other = dir.join("other");
    fs::create_dir(&other).unwrap();
    let theirs = "-----BEGIN PUBLIC KEY-----\nnot the emulator's\n-----END PUBLIC KEY-----\n";
    fs::write(other.join("public-key-v2.pem"), theirs).unwrap();
    let refused = serve(&other);
    assert_eq!(refused.status.code(), Some(1), "{}", refused.stderr);
    let path = other.join("public-key-v2.pem");
    assert_eq!(
        refused.stderr,
        format!(
            "mpgate-emulator: error: --write-key-dir: {} already exists and is not the emulator's key version 2: give the emulator the --key-dir it wrote it with, write to an empty directory, or remove the file (it may be your real key from AWS Marketplace)\n",
            path.display()
        )
    );
    assert_eq!(fs::read_to_string(&path).unwrap(), theirs);
    // Checked before anything is written: no half ring.
    assert!(!other.join("public-key-v1.pem").exists());

    // A file where the directory should be.
    let file = dir.join("a-file");
    fs::write(&file, "").unwrap();
    let out = serve(&file);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr.starts_with(&format!(
            "mpgate-emulator: error: --write-key-dir: cannot create {}: ",
            file.display()
        )),
        "{}",
        out.stderr
    );

    // serve writes it too, before its ready line.
    let served = dir.join("served");
    let emu = Emulator::start_with_shared_keys(&["--write-key-dir", served.to_str().unwrap()]);
    assert_eq!(
        fs::read(served.join("public-key-v1.pem")).unwrap(),
        emu.public_pem(1)
    );
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

/// A complete, signed RegisterUsage request (`path` may be absolute-form, for proxies), with
/// `extra` headers added after signing (as a proxy's credentials are).
fn register_request(path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut req = Req::register(&ok_body().to_string());
    req.path = path.into();
    let req = req.signed(&Signing::new());
    extra
        .iter()
        .fold(req, |req, (k, v)| req.header(k, v))
        .bytes()
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
            "--verbose",
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

#[test]
fn the_container_credentials_endpoint_hands_a_known_pair_to_the_token_only() {
    let emu = Emulator::start_with_shared_keys(&["--container-credentials-token", "tok-123"]);
    let uri = emu.ready["containerCredentialsUri"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(uri, format!("{}/v2/credentials/mpgate-emulator", emu.url));
    let get = |auth: Option<&str>| {
        let mut req = String::from(
            "GET /v2/credentials/mpgate-emulator HTTP/1.1\r\nhost: x\r\nconnection: close\r\n",
        );
        if let Some(a) = auth {
            req.push_str(&format!("authorization: {a}\r\n"));
        }
        req.push_str("\r\n");
        parse(&send_raw(&emu.addr, req.as_bytes(), IO_TIMEOUT).unwrap())
    };
    let r = get(Some("tok-123"));
    assert_eq!(r.status, 200, "{r:?}");
    let body = r.json();
    let id = body["AccessKeyId"].as_str().unwrap();
    assert!(id.starts_with("ASIA"), "{body}");
    assert!(
        body["Token"].as_str().is_some_and(|t| !t.is_empty()),
        "{body}"
    );
    assert!(
        body["Expiration"].as_str().unwrap().ends_with('Z'),
        "{body}"
    );
    // The pair is one the emulator knows: listed in the ready line, so it signs calls.
    let known: Vec<&str> = emu.ready["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["accessKeyId"].as_str())
        .collect();
    assert!(known.contains(&id), "{known:?}");
    get(Some("tok-124")).expect_error(401, "InvalidToken", "a wrong token");
    get(None).expect_error(401, "NoToken", "no token");
    // Without the flag there is no such endpoint.
    let plain = Emulator::start_with_shared_keys(&[]);
    assert!(plain.ready["containerCredentialsUri"].is_null());
}
