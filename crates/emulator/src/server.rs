//! The HTTP side: request checks, faults, answers, the record file and the request log.

use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use serde_json::{json, Value};
use tokio_rustls::TlsAcceptor;

use crate::clock::{http_date, Clock};
use crate::credentials::{Credential, Keyring};
use crate::fault::{Fault, ServiceError};
use crate::jwt;
use crate::keys::VersionKey;
use crate::license::{self, Effect, License, LicenseFault, LmError, Op, Stage};
use crate::log::{error, log};
use crate::sigv4::{self, Rejection};

/// Largest request body read (bytes); larger bodies get 413.
pub const MAX_BODY: usize = 64 * 1024;
pub const TARGET: &str = "AWSMPMeteringService.RegisterUsage";
pub const TARGET_PREFIX: &str = "AWSMPMeteringService.";
pub const CONTENT_TYPE_JSON: &str = "application/x-amz-json-1.1";

/// Everything the request handler needs.
pub struct State {
    pub region: String,
    pub product_code: String,
    pub keys: Vec<VersionKey>,
    pub wrong_key: Option<aws_lc_rs::rsa::KeyPair>,
    pub fault: Fault,
    pub fail_first: Option<u64>,
    pub latency: Duration,
    pub rotation_timestamp: Option<i64>,
    /// The key versions `rotation_timestamp` is sent for.
    pub expiring_key_versions: Vec<u32>,
    pub record: Option<Mutex<File>>,
    /// The callers: who is known, and what each key stands for.
    pub callers: Callers,
    /// AWS's clock (`--clock-offset`).
    pub clock: Clock,
    /// `--rate-limit`: the token bucket valid calls draw from.
    rate: Option<Mutex<Bucket>>,
    /// `--trickle-interval`.
    pub trickle_interval: Duration,
    /// `--oversize-bytes`.
    pub oversize_bytes: u64,
    /// License Manager: the license sold, its consumptions and `--license-fault`s.
    pub license: License,
    /// `--container-credentials-token`: the token and the pair the credentials endpoint hands out.
    pub container_credentials: Option<(String, Credential)>,
    calls: AtomicU64,
    eligible: AtomicU64,
}

/// Who may call, and what AWS would say to each (the caller model).
#[derive(Debug, Default)]
pub struct Callers {
    pub keyring: Keyring,
    /// Long-term keys stand for a task (`--long-term-keys-are-tasks`); else for an IAM user.
    pub long_term_keys_are_tasks: bool,
    /// The region the caller's task runs in (`--task-region`); `None`: the emulator's.
    pub task_region: Option<String>,
}

/// A token bucket: `rate` tokens a second, at most `burst`, starting full.
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: u32, burst: u32) -> Self {
        Bucket {
            rate: f64::from(rate),
            burst: f64::from(burst),
            tokens: f64::from(burst),
            last: Instant::now(),
        }
    }

    /// Takes one token if there is one.
    fn admit(&mut self, now: Instant) -> bool {
        let refill = now.saturating_duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl State {
    /// Count one more eligible call (or connection, for connection faults) and say whether
    /// the fault applies to it (`--fail-first`).
    fn take_fault(&self) -> bool {
        let n = self.eligible.fetch_add(1, Ordering::SeqCst) + 1;
        self.fail_first.is_none_or(|limit| n <= limit)
    }

    /// Whether `--rate-limit` admits one more valid call now.
    fn admit(&self) -> bool {
        match &self.rate {
            None => true,
            Some(bucket) => bucket
                .lock()
                .map(|mut b| b.admit(Instant::now()))
                .unwrap_or(true),
        }
    }

    /// Sets `--rate-limit` / `--rate-burst` (burst defaults to the rate), `--trickle-interval`
    /// and `--oversize-bytes`.
    pub fn with_network(
        mut self,
        rate_limit: Option<u32>,
        rate_burst: Option<u32>,
        trickle_interval: Duration,
        oversize_bytes: u64,
    ) -> Self {
        self.rate = rate_limit.map(|r| Mutex::new(Bucket::new(r, rate_burst.unwrap_or(r))));
        self.trickle_interval = trickle_interval;
        self.oversize_bytes = oversize_bytes;
        self
    }

    /// Serves the ECS container credentials endpoint, handing out `credentials` to callers
    /// that send `token` (`--container-credentials-token`).
    pub fn with_container_credentials(mut self, token: String, credentials: Credential) -> Self {
        self.container_credentials = Some((token, credentials));
        self
    }

    /// Sets the License Manager side: the license and its faults.
    pub fn with_license(mut self, license: License) -> Self {
        self.license = license;
        self
    }

    /// Sets the callers, AWS's clock and the key versions the rotation timestamp is sent for.
    pub fn with_callers(mut self, callers: Callers, clock: Clock, expiring: Vec<u32>) -> Self {
        self.callers = callers;
        self.clock = clock;
        self.expiring_key_versions = expiring;
        self
    }

    #[allow(clippy::too_many_arguments)]
    pub fn new(
        region: String,
        product_code: String,
        keys: Vec<VersionKey>,
        wrong_key: Option<aws_lc_rs::rsa::KeyPair>,
        fault: Fault,
        fail_first: Option<u64>,
        latency: Duration,
        rotation_timestamp: Option<i64>,
        record: Option<File>,
    ) -> Self {
        State {
            region,
            product_code,
            keys,
            wrong_key,
            fault,
            fail_first,
            latency,
            rotation_timestamp,
            expiring_key_versions: Vec::new(),
            record: record.map(Mutex::new),
            callers: Callers::default(),
            clock: Clock::default(),
            rate: None,
            trickle_interval: crate::cli::DEFAULT_TRICKLE_INTERVAL,
            oversize_bytes: crate::cli::DEFAULT_OVERSIZE_BYTES,
            license: License::default(),
            container_credentials: None,
            calls: AtomicU64::new(0),
            eligible: AtomicU64::new(0),
        }
    }
}

/// One line of the `--record` file (and of the request log on stderr).
#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct RecordLine {
    call: u64,
    /// When the request (or connection) arrived, in milliseconds since the Unix epoch.
    received_at_ms: u64,
    target: Option<String>,
    product_code: Value,
    public_key_version: Value,
    nonce: Value,
    credential_scope: Option<String>,
    fault: &'static str,
    status: Option<u16>,
    error_type: Option<&'static str>,
    /// The answer's `x-amzn-RequestId` (`null` when nothing, or a proxy's page, was answered).
    request_id: Option<String>,
    /// A License Manager call's members (its line then has no Metering members).
    #[serde(skip)]
    license: Option<LicenseRecord>,
}

/// The members of a License Manager request, as sent; absent ones are left out of the line.
#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct LicenseRecord {
    #[serde(skip_serializing_if = "Option::is_none")]
    product_sku: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_token: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    license_consumption_token: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    entitlements: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    checkout_type: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_fingerprint: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    license_arn: Option<Value>,
    /// What the call did to the seat book, whether its answer arrived or not.
    processed: bool,
    replayed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    issued_token: Option<String>,
}

impl LicenseRecord {
    fn from_body(obj: &serde_json::Map<String, Value>) -> LicenseRecord {
        let get = |k: &str| obj.get(k).cloned();
        LicenseRecord {
            product_sku: get("ProductSKU"),
            client_token: get("ClientToken"),
            license_consumption_token: get("LicenseConsumptionToken"),
            entitlements: get("Entitlements"),
            checkout_type: get("CheckoutType"),
            key_fingerprint: get("KeyFingerprint"),
            license_arn: get("LicenseArn"),
            ..LicenseRecord::default()
        }
    }
}

/// What to do with the connection.
pub(crate) enum Outcome {
    Answer(Response<Full<Bytes>>, Option<&'static str>),
    Hang,
    Drop,
    /// A raw-connection fault ([`Fault::is_raw`]) and the success answer it mangles.
    Raw(Fault, Response<Full<Bytes>>),
}

/// Returned to hyper to make it close the connection without answering (`drop` fault).
#[derive(Debug)]
pub struct DropConnection;

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped on purpose")
    }
}

impl std::error::Error for DropConnection {}

/// A fresh request ID, shaped like AWS's (a random UUID).
fn request_id() -> String {
    let mut b: [u8; 16] = crate::random::random_bytes();
    // Version 4 (random), RFC 9562 variant.
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// An answer without the headers [`process`] adds (`Date`, and the service's request ID).
pub(crate) fn base_response(status: u16, content_type: &str, body: Bytes) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(CONTENT_TYPE, v);
    }
    resp
}

fn error_answer(status: u16, error_type: &'static str, message: &str) -> Outcome {
    let body = json!({"__type": error_type, "message": message}).to_string();
    let mut resp = base_response(status, CONTENT_TYPE_JSON, Bytes::from(body));
    resp.headers_mut()
        .insert("x-amzn-errortype", HeaderValue::from_static(error_type));
    Outcome::Answer(resp, Some(error_type))
}

/// The body as the JSON object an awsJson1.1 request is. Err = (error type, message): the
/// SerializationException.
fn json_object(
    parsed: Result<Value, serde_json::Error>,
) -> Result<serde_json::Map<String, Value>, (&'static str, String)> {
    match parsed {
        Ok(Value::Object(obj)) => Ok(obj),
        Ok(_) => Err((
            "SerializationException",
            "Request body must be a JSON object".to_string(),
        )),
        Err(e) => Err((
            "SerializationException",
            format!("Request body is not valid JSON: {e}"),
        )),
    }
}

/// A License Manager error: `{"__type", "Message"}` (its error shapes' member is `Message`),
/// plus `Location` (member and header) for `RedirectException`.
fn license_error(e: LmError) -> Outcome {
    let mut body = json!({"__type": e.error_type, "Message": e.message});
    if let Some(location) = &e.location {
        body["Location"] = json!(location);
    }
    let mut resp = base_response(e.status, CONTENT_TYPE_JSON, Bytes::from(body.to_string()));
    resp.headers_mut()
        .insert("x-amzn-errortype", HeaderValue::from_static(e.error_type));
    if let Some(v) = e
        .location
        .as_deref()
        .and_then(|l| HeaderValue::from_str(l).ok())
    {
        resp.headers_mut().insert(hyper::header::LOCATION, v);
    }
    Outcome::Answer(resp, Some(e.error_type))
}

fn rejected(r: Rejection) -> Outcome {
    error_answer(r.status, r.error_type, &r.message)
}

fn service_error(fault: Fault) -> Outcome {
    match fault.service_error() {
        Some(e) => error_answer(e.status, e.error_type, e.message),
        None => error_answer(
            500,
            "InternalServiceErrorException",
            "no such service error",
        ),
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<Result<&'a str, ()>> {
    headers.get(name).map(|v| v.to_str().map_err(|_| ()))
}

fn is_json_content_type(value: &str) -> bool {
    let media = value.split(';').next().unwrap_or("").trim();
    media.eq_ignore_ascii_case(CONTENT_TYPE_JSON)
}

/// The validated RegisterUsage input.
struct Input {
    product_code: String,
    public_key_version: i64,
    nonce: Option<String>,
}

/// A string member of the request (at most 255 characters, at least 1 when `required`), with
/// AWS's validation messages for what is wrong.
fn string_member(
    obj: &serde_json::Map<String, Value>,
    field: &str,
    required: bool,
    errors: &mut Vec<String>,
) -> Option<String> {
    let s = license::string_member(obj, field, field, required, errors)?;
    let n = s.chars().count();
    if required && n < 1 {
        errors.push(format!("Value '' at '{field}' failed to satisfy constraint: Member must have length greater than or equal to 1"));
    } else if n > 255 {
        errors.push(format!("Value of length {n} at '{field}' failed to satisfy constraint: Member must have length less than or equal to 255"));
    }
    Some(s)
}

/// Check the body against the RegisterUsageRequest shape. Err = (error type, message).
fn validate_body(obj: &serde_json::Map<String, Value>) -> Result<Input, (&'static str, String)> {
    let mut errors = Vec::new();
    let product_code = string_member(obj, "ProductCode", true, &mut errors);
    let version = match obj.get("PublicKeyVersion") {
        None | Some(Value::Null) => {
            errors.push("Value null at 'PublicKeyVersion' failed to satisfy constraint: Member must not be null".to_string());
            None
        }
        Some(Value::Number(n)) => match n.as_i64().filter(|v| i32::try_from(*v).is_ok()) {
            Some(v) if v >= 1 => Some(v),
            Some(v) => {
                errors.push(format!("Value '{v}' at 'PublicKeyVersion' failed to satisfy constraint: Member must have value greater than or equal to 1"));
                None
            }
            None => {
                errors.push(format!("Value '{n}' at 'PublicKeyVersion' failed to satisfy constraint: Member must be a 32-bit integer"));
                None
            }
        },
        Some(other) => {
            errors.push(format!("Value {} at 'PublicKeyVersion' failed to satisfy constraint: Member must be an integer", license::type_name(other)));
            None
        }
    };
    let nonce = string_member(obj, "Nonce", false, &mut errors);
    match (errors.len(), product_code, version) {
        (0, Some(product_code), Some(public_key_version)) => Ok(Input {
            product_code,
            public_key_version,
            nonce,
        }),
        _ => Err(("ValidationException", license::validation_message(&errors))),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What AWS answers a correctly signed call from `caller` before looking at the product: an
/// IAM user's long-term key is not an ECS task or EKS pod (unless `--long-term-keys-are-tasks`),
/// and a task calls the endpoint of its own region only.
fn refuse_caller(state: &State, caller: &Credential) -> Option<Outcome> {
    if !caller.is_temporary() && !state.callers.long_term_keys_are_tasks {
        return Some(service_error(Fault::PlatformNotSupported));
    }
    match &state.callers.task_region {
        Some(task_region) if *task_region != state.region => {
            Some(service_error(Fault::InvalidRegion))
        }
        _ => None,
    }
}

/// Decide the answer to one request, filling in `rec` along the way.
/// Where `--container-credentials-token` serves credentials (the URL is the ready line's
/// `containerCredentialsUri`, for `AWS_CONTAINER_CREDENTIALS_FULL_URI`).
pub const CONTAINER_CREDENTIALS_PATH: &str = "/v2/credentials/mpgate-emulator";
/// The record line's `target` for a call to the credentials endpoint (it has no X-Amz-Target).
const CONTAINER_CREDENTIALS_TARGET: &str = "ContainerCredentials";

/// The ECS agent's answer: `GET` with the token as the whole `Authorization` header (what
/// the SDK sends from `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`) gets the pair, valid for six
/// hours of AWS's clock; anything else is refused as the agent refuses it.
fn container_credentials(
    state: &State,
    method: &Method,
    headers: &HeaderMap,
    token: &str,
    credentials: &Credential,
) -> Outcome {
    if method != Method::GET {
        return error_answer(
            405,
            "MethodNotAllowed",
            "the credentials endpoint answers GET only",
        );
    }
    match header_str(headers, "authorization") {
        Some(Ok(sent)) if sent == token => {}
        Some(_) => {
            return error_answer(401, "InvalidToken", "the authorization token is not valid")
        }
        None => return error_answer(401, "NoToken", "no authorization token was sent"),
    }
    let expires = crate::clock::shift(state.clock.now(), 6 * 3600 * 1000);
    let body = json!({
        "AccessKeyId": credentials.access_key_id,
        "SecretAccessKey": credentials.secret_access_key,
        "Token": credentials.session_token,
        "Expiration": crate::clock::rfc3339(expires),
        "RoleArn": "arn:aws:iam::111122223333:role/mpgate-emulator-task-role",
    });
    Outcome::Answer(
        base_response(200, "application/json", Bytes::from(body.to_string())),
        None,
    )
}

fn decide(
    state: &State,
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Result<Bytes, bool>,
    rec: &mut RecordLine,
) -> Outcome {
    // Body first, so the record has the fields even for rejected requests.
    let parsed: Option<Result<Value, serde_json::Error>> = body
        .as_ref()
        .ok()
        .map(|b| serde_json::from_slice::<Value>(b));
    let license_op = rec
        .target
        .as_deref()
        .filter(|t| t.starts_with(license::TARGET_PREFIX));
    if license_op.is_some() {
        rec.license = Some(match &parsed {
            Some(Ok(Value::Object(obj))) => LicenseRecord::from_body(obj),
            _ => LicenseRecord::default(),
        });
    } else if let Some(Ok(Value::Object(obj))) = &parsed {
        for (field, slot) in [
            ("ProductCode", &mut rec.product_code),
            ("PublicKeyVersion", &mut rec.public_key_version),
            ("Nonce", &mut rec.nonce),
        ] {
            if let Some(v) = obj.get(field) {
                *slot = v.clone();
            }
        }
    }
    let auth = header_str(headers, "authorization").map(|h| match h {
        Ok(v) => sigv4::parse_authorization(v),
        Err(()) => (
            None,
            Err(Rejection {
                status: 403,
                error_type: sigv4::INCOMPLETE_SIGNATURE,
                message: "Authorization header is not valid ASCII.".into(),
            }),
        ),
    });
    if let Some((scope, _)) = &auth {
        rec.credential_scope.clone_from(scope);
    }

    // 0. the container credentials endpoint (ECS, EKS Pod Identity), when served
    if let Some((token, credentials)) = &state.container_credentials {
        if path == CONTAINER_CREDENTIALS_PATH {
            rec.target = Some(CONTAINER_CREDENTIALS_TARGET.into());
            return container_credentials(state, method, headers, token, credentials);
        }
    }
    // 1. method and path
    if method != Method::POST || path != "/" {
        return error_answer(
            400,
            "UnknownOperationException",
            &format!("The emulator serves only POST / (got {method} {path})"),
        );
    }
    // 2. X-Amz-Target: Metering's RegisterUsage, or one of License Manager's operations
    let op = match rec.target.as_deref() {
        Some(TARGET) => None,
        Some(t) if Op::from_target(t).is_some() => Op::from_target(t),
        Some(t) if t.starts_with(TARGET_PREFIX) || t.starts_with(license::TARGET_PREFIX) => {
            return error_answer(
                400,
                "UnknownOperationException",
                &format!("Operation {t} is not served by this emulator"),
            );
        }
        _ => {
            return error_answer(
                400,
                "UnknownOperationException",
                "Unknown operation: missing or unrecognised X-Amz-Target",
            )
        }
    };
    let signing_name = match op {
        None => sigv4::SIGNING_NAME,
        Some(_) => license::SIGNING_NAME,
    };
    // 3. Content-Type
    match header_str(headers, "content-type") {
        Some(Ok(ct)) if is_json_content_type(ct) => {}
        _ => {
            return error_answer(
                400,
                "SerializationException",
                &format!("Content-Type must be {CONTENT_TYPE_JSON}"),
            )
        }
    }
    // 4. SigV4, verified with the credentials the emulator knows (over the body, so a body
    // too large to read is refused first)
    let Some((_, auth)) = auth else {
        return error_answer(
            400,
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        );
    };
    let auth = match auth {
        Ok(a) => a,
        Err(r) => return rejected(r),
    };
    let (body, parsed) = match (body, parsed) {
        (Err(true), _) => {
            return error_answer(
                413,
                "SerializationException",
                &format!("Request body is larger than {MAX_BODY} bytes"),
            );
        }
        (Err(false), _) | (_, None) => return Outcome::Drop,
        (Ok(b), Some(p)) => (b, p),
    };
    let request = sigv4::Signed {
        method: method.as_str(),
        path,
        query,
        headers,
        body: &body,
    };
    let caller = match sigv4::verify(
        &auth,
        &request,
        &state.callers.keyring,
        &state.region,
        signing_name,
        state.clock.now(),
    ) {
        Ok(c) => c,
        Err(r) => return rejected(r),
    };
    if let Some(op) = op {
        return license_call(state, op, parsed, rec);
    }
    // 5. Body shape
    let input = match json_object(parsed).and_then(|obj| validate_body(&obj)) {
        Ok(i) => i,
        Err((t, m)) => return error_answer(400, t, &m),
    };

    // 6. The caller: a long-term key outside a task, or a task in another region
    if let Some(refusal) = refuse_caller(state, caller) {
        return refusal;
    }

    // 7. --rate-limit, then faults (for the first --fail-first valid calls, or every call)
    if !state.admit() {
        rec.fault = RATE_LIMITED;
        let e = Fault::Throttle.service_error().unwrap_or(ServiceError {
            status: 400,
            error_type: "ThrottlingException",
            message: "Rate exceeded",
        });
        return error_answer(e.status, e.error_type, e.message);
    }
    let fault = if state.fault.is_connection_fault() {
        // Applied to connections in `serve`; calls that get this far are answered.
        Fault::None
    } else if state.take_fault() {
        state.fault
    } else {
        Fault::None
    };
    if fault.service_error().is_some() {
        rec.fault = fault.name();
        return service_error(fault);
    }
    if let Some((status, extra, page)) = fault.html_page() {
        rec.fault = fault.name();
        let mut resp = base_response(status, "text/html", Bytes::from_static(page.as_bytes()));
        for (name, value) in extra {
            resp.headers_mut()
                .insert(*name, HeaderValue::from_static(value));
        }
        return Outcome::Answer(resp, None);
    }
    match fault {
        Fault::Hang => {
            rec.fault = fault.name();
            return Outcome::Hang;
        }
        Fault::Drop => {
            rec.fault = fault.name();
            return Outcome::Drop;
        }
        _ => {}
    }

    // 8. Business checks
    if input.product_code != state.product_code {
        return error_answer(
            400,
            "InvalidProductCodeException",
            "The product code passed does not match the product code used for publishing the product.",
        );
    }
    let Some(key) = state
        .keys
        .iter()
        .find(|k| i64::from(k.version) == input.public_key_version)
    else {
        return error_answer(
            400,
            "InvalidPublicKeyVersionException",
            "Public Key version is invalid.",
        );
    };

    // 9. Success (maybe with a bad token)
    let token_fault = if fault.is_token_fault() {
        fault
    } else {
        Fault::None
    };
    rec.fault = token_fault.name();
    let req = jwt::Request {
        product_code: &input.product_code,
        public_key_version: input.public_key_version,
        nonce: input.nonce.as_deref(),
    };
    let signer = jwt::Signer {
        key: &key.signing_key,
        public_pem: &key.public_pem,
        wrong_key: state.wrong_key.as_ref(),
    };
    if token_fault == Fault::TokenHtmlAnswer {
        let page = "<html><body><h1>Welcome</h1><p>Please log in to continue.</p></body></html>";
        return Outcome::Answer(base_response(200, "text/html", Bytes::from(page)), None);
    }
    let signature = match jwt::mint(&req, &signer, token_fault, state.clock.now_secs()) {
        Ok(s) => s,
        Err(e) => {
            error(&format!("cannot mint a token: {e}"));
            return error_answer(
                500,
                "InternalServiceErrorException",
                "The emulator could not sign the token.",
            );
        }
    };
    let mut body = serde_json::Map::new();
    if let Some(s) = signature {
        body.insert("Signature".into(), Value::String(s));
        match state.rotation_timestamp {
            Some(ts) if state.expiring_key_versions.contains(&key.version) => {
                body.insert("PublicKeyRotationTimestamp".into(), json!(ts));
            }
            _ => {}
        }
    }
    let body = Value::Object(body).to_string();
    let mut resp = base_response(200, CONTENT_TYPE_JSON, Bytes::from(body));
    let relabel = match fault {
        Fault::ContentTypeHtml => Some("text/html"),
        Fault::ContentTypeJson => Some("application/json"),
        _ => None,
    };
    if let Some(content_type) = relabel {
        rec.fault = fault.name();
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    if fault.is_raw() {
        rec.fault = fault.name();
        return Outcome::Raw(fault, resp);
    }
    Outcome::Answer(resp, None)
}

/// A License Manager call that passed checks 1-4: the body's shape, `--rate-limit`, the
/// `--license-fault`s, then the license's answer. (Metering's caller model, the platform and
/// the task's region, is RegisterUsage's: License Manager answers any caller it knows.)
fn license_call(
    state: &State,
    op: Op,
    parsed: Result<Value, serde_json::Error>,
    rec: &mut RecordLine,
) -> Outcome {
    let input = match json_object(parsed).map(|obj| license::validate(op, &obj)) {
        Ok(Ok(i)) => i,
        Ok(Err(e)) => return license_error(e),
        Err((t, m)) => return error_answer(400, t, &m),
    };
    if !state.admit() {
        rec.fault = RATE_LIMITED;
        return license_error(LmError {
            status: 429,
            error_type: "RateLimitExceededException",
            message: "Rate exceeded".into(),
            location: None,
        });
    }
    let fault = state.license.take_fault(op);
    if let Some(fault) = fault.filter(|f| f.stage() == Stage::Before) {
        rec.fault = fault.name();
        if let Some(e) = fault.error() {
            return license_error(e);
        }
        return match fault {
            LicenseFault::Hang => Outcome::Hang,
            LicenseFault::Drop => Outcome::Drop,
            _ => match Fault::Http503Html.html_page() {
                Some((status, extra, page)) => {
                    let mut resp =
                        base_response(status, "text/html", Bytes::from_static(page.as_bytes()));
                    for (name, value) in extra {
                        resp.headers_mut()
                            .insert(*name, HeaderValue::from_static(value));
                    }
                    Outcome::Answer(resp, None)
                }
                None => Outcome::Drop,
            },
        };
    }
    let Some(key) = state.keys.first() else {
        return license_error(LmError {
            status: 500,
            error_type: "ServerInternalException",
            message: "The emulator has no key to sign with.".into(),
            location: None,
        });
    };
    let now = state.clock.now();
    let mut effect = Effect::default();
    let result = state
        .license
        .execute(input, now, &key.signing_key, &mut effect);
    if let Some(lm) = rec.license.as_mut() {
        lm.processed = effect.processed;
        lm.replayed = effect.replayed;
        lm.issued_token = effect.issued_token;
    }
    let Some(fault) = fault else {
        return license_answer(result);
    };
    rec.fault = fault.name();
    if fault.stage() == Stage::LostAnswer {
        return match fault.lost_answer_error() {
            Some(e) => license_error(e),
            None if fault == LicenseFault::ProcessedThenHang => Outcome::Hang,
            None => Outcome::Drop,
        };
    }
    // A bad-answer fault mangles a success; a refusal is answered as it is.
    match result {
        Ok(answer) => match fault.bad_answer(&answer, now) {
            Some(body) => Outcome::Answer(
                base_response(200, CONTENT_TYPE_JSON, Bytes::from(body)),
                None,
            ),
            None => license_answer(Ok(answer)),
        },
        Err(e) => license_error(e),
    }
}

/// The license's own answer to a call.
fn license_answer(result: Result<Value, LmError>) -> Outcome {
    match result {
        Ok(answer) => Outcome::Answer(
            base_response(200, CONTENT_TYPE_JSON, Bytes::from(answer.to_string())),
            None,
        ),
        Err(e) => license_error(e),
    }
}

/// Append `rec` to the `--record` file (flushed); returns the JSON line. A License Manager
/// call's line has its members instead of Metering's.
fn write_record(state: &State, rec: &RecordLine) -> String {
    let line = match &rec.license {
        None => serde_json::to_string(rec).unwrap_or_else(|_| "{}".into()),
        Some(lm) => {
            let mut v = serde_json::to_value(rec).unwrap_or_default();
            if let (Some(line), Ok(Value::Object(members))) =
                (v.as_object_mut(), serde_json::to_value(lm))
            {
                for k in ["productCode", "publicKeyVersion", "nonce"] {
                    line.remove(k);
                }
                line.extend(members);
                // The seat book right after the call: a test sees what is held at each call
                // without a GetLicenseUsage of its own.
                line.insert(
                    "held".into(),
                    Value::Object(state.license.held(state.clock.now())),
                );
            }
            v.to_string()
        }
    };
    if let Some(file) = &state.record {
        if let Ok(mut f) = file.lock() {
            let res = f
                .write_all(format!("{line}\n").as_bytes())
                .and_then(|()| f.flush());
            if let Err(e) = res {
                error(&format!("cannot write the record file: {e}"));
            }
        }
    }
    line
}

/// The `fault` a call throttled by `--rate-limit` is recorded with.
pub const RATE_LIMITED: &str = "rate-limit";

/// Decide, record and log the answer to one request whose body has been read
/// (`Err(true)`: larger than [`MAX_BODY`]; `Err(false)`: the peer went away).
pub(crate) fn process(
    state: &State,
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Result<Bytes, bool>,
) -> Outcome {
    let received_at_ms = now_ms();
    let call = state.calls.fetch_add(1, Ordering::SeqCst) + 1;
    let mut rec = RecordLine {
        call,
        received_at_ms,
        target: header_str(headers, "x-amz-target").map(|r| r.unwrap_or("<non-ASCII>").to_string()),
        fault: Fault::None.name(),
        ..RecordLine::default()
    };
    let mut outcome = decide(state, method, path, query, headers, body, &mut rec);
    // Every answer of the service carries AWS's clock and a fresh request ID, errors too; a
    // proxy's or portal's page (an HTML fault) stands for something that is not the service.
    let from_service = !rec
        .fault
        .parse::<Fault>()
        .is_ok_and(|f| f.html_page().is_some() || f == Fault::TokenHtmlAnswer);
    if let Outcome::Answer(resp, _) | Outcome::Raw(_, resp) = &mut outcome {
        let h = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&http_date(state.clock.now())) {
            h.insert(hyper::header::DATE, v);
        }
        if from_service {
            let id = request_id();
            if let Ok(v) = HeaderValue::from_str(&id) {
                h.insert("x-amzn-requestid", v);
            }
            rec.request_id = Some(id);
        }
    }
    match &outcome {
        Outcome::Answer(resp, error_type) => {
            rec.status = Some(resp.status().as_u16());
            rec.error_type = *error_type;
        }
        // The status line of a reset-headers answer is sent, but the answer never is.
        Outcome::Raw(Fault::ResetHeaders, _) => {}
        Outcome::Raw(_, resp) => rec.status = Some(resp.status().as_u16()),
        Outcome::Hang | Outcome::Drop => {}
    }
    let line = write_record(state, &rec);
    log(&format!("{method} {path} {line}"));
    outcome
}

/// Serve one request.
pub async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, DropConnection> {
    let (parts, body) = req.into_parts();
    // Err(true): too large; Err(false): read error (peer went away).
    let body: Result<Bytes, bool> = match Limited::new(body, MAX_BODY).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => Err(e.downcast_ref::<LengthLimitError>().is_some()),
    };
    let outcome = process(
        &state,
        &parts.method,
        parts.uri.path(),
        parts.uri.query(),
        &parts.headers,
        body,
    );
    match outcome {
        Outcome::Answer(resp, _) => {
            if !state.latency.is_zero() {
                tokio::time::sleep(state.latency).await;
            }
            Ok(resp)
        }
        Outcome::Hang => {
            std::future::pending::<()>().await;
            Err(DropConnection)
        }
        // Raw faults are served by `raw`; hyper never sees them (closing is the safe answer).
        Outcome::Drop | Outcome::Raw(..) => Err(DropConnection),
    }
}

/// Longest a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accept connections forever; with `tls`, serve HTTPS.
pub async fn serve(listener: tokio::net::TcpListener, state: Arc<State>, tls: Option<TlsAcceptor>) {
    loop {
        let (stream, _peer): (_, SocketAddr) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                error(&format!("accept failed: {e}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Answers go out as several small writes (TLS session tickets, then the response):
        // with Nagle's algorithm the second waits for the client's delayed ACK, 40 ms a call.
        let _ = stream.set_nodelay(true);
        if state.fault.is_connection_fault() && state.take_fault() {
            let call = state.calls.fetch_add(1, Ordering::SeqCst) + 1;
            let rec = RecordLine {
                call,
                received_at_ms: now_ms(),
                fault: state.fault.name(),
                ..RecordLine::default()
            };
            let line = write_record(&state, &rec);
            log(&format!("connection {line}"));
            match tls {
                Some(_) => {
                    tokio::spawn(crate::tls::fail_handshake(stream));
                }
                None => drop(stream),
            }
            continue;
        }
        let state = state.clone();
        let tls = tls.clone();
        if state.fault.is_raw() {
            tokio::spawn(crate::raw::serve(stream, state, tls));
            continue;
        }
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(state.clone(), req));
            let http = hyper::server::conn::http1::Builder::new();
            // Errors from serve_connection are peers going away or the `drop` fault.
            match tls {
                None => {
                    let _ = http
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                }
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => {
                            let _ = http
                                .serve_connection(hyper_util::rt::TokioIo::new(tls_stream), svc)
                                .await;
                        }
                        Ok(Err(e)) => log(&format!("TLS handshake failed: {e}")),
                        Err(_) => log("TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_validation() {
        let v = |s: &str| {
            validate_body(
                serde_json::from_str::<Value>(s)
                    .unwrap()
                    .as_object()
                    .unwrap(),
            )
        };
        assert!(v(r#"{"ProductCode":"p","PublicKeyVersion":1}"#).is_ok());
        assert!(v(r#"{"ProductCode":"p","PublicKeyVersion":1,"Nonce":null}"#).is_ok());
        let (_, m) = v(r#"{"PublicKeyVersion":1}"#).err().unwrap();
        assert!(m.contains("'ProductCode'"), "{m}");
        let (_, m) = v(r#"{"ProductCode":"p","PublicKeyVersion":"1"}"#)
            .err()
            .unwrap();
        assert!(m.contains("'PublicKeyVersion'"), "{m}");
        let (_, m) = v(r#"{"ProductCode":"p","PublicKeyVersion":0}"#)
            .err()
            .unwrap();
        assert!(m.contains("'PublicKeyVersion'"), "{m}");
        let (_, m) = v(r#"{"ProductCode":"p","PublicKeyVersion":1.5}"#)
            .err()
            .unwrap();
        assert!(m.contains("'PublicKeyVersion'"), "{m}");
        let long = "n".repeat(256);
        let (_, m) = v(&format!(
            r#"{{"ProductCode":"p","PublicKeyVersion":1,"Nonce":"{long}"}}"#
        ))
        .err()
        .unwrap();
        assert!(m.contains("'Nonce'"), "{m}");
        assert!(is_json_content_type(
            "application/x-amz-json-1.1; charset=utf-8"
        ));
        assert!(!is_json_content_type("application/json"));
    }
}
