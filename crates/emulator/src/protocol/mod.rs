//! Owns the protocol front: one request in, one [`Outcome`] out, whatever transport read it.

mod json;
mod query;
pub mod sigv4;

use std::ops::ControlFlow::{Break, Continue};

use hyper::body::Bytes;
use hyper::header::{HeaderMap, HeaderValue};
use hyper::Method;
use serde_json::Value;

use crate::answer::{error_answer, request_id, settle, Outcome, Step};
use crate::clock::http_date;
use crate::credentials::Credential;
use crate::fault::Fault;
use crate::log::log;
use crate::ops::{anywhere, container_credentials, license, meter_usage, metering, Operation};
use crate::record::RecordLine;
use crate::state::State;
use sigv4::{Authorization, Rejection};

/// Largest request body read (bytes); larger bodies get 413.
pub const MAX_BODY: usize = 64 * 1024;

/// One request, as a transport read it.
pub(crate) struct Request<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    /// `Err(true)`: larger than [`MAX_BODY`]; `Err(false)`: the peer went away.
    pub body: Result<Bytes, bool>,
}

/// Decide, record and log the answer to one request whose body has been read.
pub(crate) fn process(state: &State, req: Request<'_>) -> Outcome {
    let mut rec = state.record.next();
    rec.target =
        header_str(req.headers, "x-amz-target").map(|r| r.unwrap_or("<non-ASCII>").to_string());
    rec.fault = Fault::None.name();
    let (method, path) = (req.method, req.path);
    let mut outcome = settle(decide(state, req, &mut rec));
    stamp(state, &mut outcome, &mut rec);
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
    let line = state
        .record
        .write(&rec, || state.license.held(state.shared.clock.now()));
    log(&format!("{method} {path} {line}"));
    outcome
}

/// The steps a request goes through, in the order of the crate's documentation, filling in
/// `rec` along the way.
fn decide(state: &State, req: Request<'_>, rec: &mut RecordLine) -> Step<Outcome> {
    // The body first, so the record has the members even for refused requests.
    let parsed = req
        .body
        .as_ref()
        .ok()
        .map(|b| serde_json::from_slice::<Value>(b));
    note_members(parsed.as_ref(), rec);
    let auth = authorization(req.headers, rec);
    credentials_endpoint(state, &req, rec)?;
    revoke_endpoint(state, &req, rec)?;
    let op = operation(&req, rec)?;
    content_type(op, req.headers)?;
    let auth = signature(op, auth)?;
    // Bytes are shared, not copied.
    let (body, parsed) = body(req.body.clone(), parsed)?;
    let caller = verify(state, op, auth.as_ref(), &req, &body)?;
    Continue(operate(state, op, &body, parsed, caller.as_ref(), rec))
}

/// `POST /mpgate-emulator/revoke-token` (`mpgate-emulator revoke-token`): the emulator's
/// own endpoint, by its path, before any AWS operation.
fn revoke_endpoint(state: &State, req: &Request<'_>, rec: &mut RecordLine) -> Step<()> {
    if req.path != anywhere::REVOKE_PATH || req.method != Method::POST {
        return Continue(());
    }
    match &req.body {
        Ok(body) => Break(anywhere::revoke_request(
            &state.shared,
            &state.anywhere,
            body,
            rec,
        )),
        Err(_) => Break(Outcome::Drop),
    }
}

/// The record's members: License Manager's for its targets, else Metering's.
fn note_members(parsed: Option<&Result<Value, serde_json::Error>>, rec: &mut RecordLine) {
    let obj = match parsed {
        Some(Ok(Value::Object(obj))) => Some(obj),
        _ => None,
    };
    let to_license = rec
        .target
        .as_deref()
        .is_some_and(|t| t.starts_with(license::TARGET_PREFIX));
    let to_meter_usage =
        rec.target.as_deref().and_then(Operation::from_target) == Some(Operation::MeterUsage);
    if to_license {
        license::note_members(obj, rec);
    } else if to_meter_usage {
        meter_usage::note_members(obj, rec);
    } else if let Some(obj) = obj {
        metering::note_members(obj, rec);
    }
}

/// The `Authorization` header, parsed; its credential scope goes to the record.
fn authorization(
    headers: &HeaderMap,
    rec: &mut RecordLine,
) -> Option<Result<Authorization, Rejection>> {
    let (scope, auth) = match header_str(headers, "authorization")? {
        Ok(v) => sigv4::parse_authorization(v),
        Err(()) => (
            None,
            Err(Rejection {
                status: 403,
                error_type: sigv4::INCOMPLETE_SIGNATURE,
                message: "Authorization header is not valid ASCII.".into(),
            }),
        ),
    };
    rec.credential_scope = scope;
    Some(auth)
}

/// Check 0: the container credentials endpoint (ECS, EKS Pod Identity), when served, by
/// its path.
fn credentials_endpoint(state: &State, req: &Request<'_>, rec: &mut RecordLine) -> Step<()> {
    match &state.container_credentials {
        Some(endpoint) if req.path == container_credentials::PATH => {
            rec.target = Some(container_credentials::TARGET.into());
            Break(container_credentials::serve(
                endpoint,
                &state.shared.clock,
                req.method,
                req.headers,
            ))
        }
        _ => Continue(()),
    }
}

/// Checks 1 and 2: the method and path, then the operation: awsJson1.1's by
/// `X-Amz-Target`, else awsQuery's by the body's `Action`.
fn operation(req: &Request<'_>, rec: &RecordLine) -> Step<Operation> {
    if req.method != Method::POST || req.path != "/" {
        return Break(error_answer(
            400,
            "UnknownOperationException",
            &format!(
                "The emulator serves only POST / (got {} {})",
                req.method, req.path
            ),
        ));
    }
    let found = match rec.target.as_deref() {
        Some(target) => json::operation(target),
        None => query::operation(req.headers, req.body.as_ref().ok()),
    };
    if let Some(op) = found {
        return Continue(op);
    }
    Break(match rec.target.as_deref() {
        Some(t) if json::names_a_service(t) => error_answer(
            400,
            "UnknownOperationException",
            &format!("Operation {t} is not served by this emulator"),
        ),
        _ => error_answer(
            400,
            "UnknownOperationException",
            "Unknown operation: missing or unrecognised X-Amz-Target",
        ),
    })
}

/// Check 3: the protocol's `Content-Type`.
fn content_type(op: Operation, headers: &HeaderMap) -> Step<()> {
    match header_str(headers, "content-type") {
        Some(Ok(ct)) if op.protocol().accepts(ct) => Continue(()),
        _ => Break(error_answer(
            400,
            "SerializationException",
            &format!("Content-Type must be {}", op.protocol().content_type()),
        )),
    }
}

/// Check 4a: a signed operation needs a well-formed `Authorization` header; an unsigned
/// one (no signing name) is not asked for one, and one that may be sent either way
/// (GetAccessToken) is verified only when signed.
fn signature(
    op: Operation,
    auth: Option<Result<Authorization, Rejection>>,
) -> Step<Option<Authorization>> {
    if op.signing_name().is_none() || (auth.is_none() && op.unsigned_allowed()) {
        return Continue(None);
    }
    match auth {
        None => Break(error_answer(
            400,
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        )),
        Some(Ok(auth)) => Continue(Some(auth)),
        Some(Err(r)) => Break(rejected(r)),
    }
}

/// Check 4b: the whole body (the signature covers it, so one too large to read is refused
/// first).
fn body(
    body: Result<Bytes, bool>,
    parsed: Option<Result<Value, serde_json::Error>>,
) -> Step<(Bytes, Result<Value, serde_json::Error>)> {
    match (body, parsed) {
        (Err(true), _) => Break(error_answer(
            413,
            "SerializationException",
            &format!("Request body is larger than {MAX_BODY} bytes"),
        )),
        (Err(false), _) | (_, None) => Break(Outcome::Drop),
        (Ok(b), Some(p)) => Continue((b, p)),
    }
}

/// Check 4c: SigV4, verified with the credentials the emulator knows, for the operation's
/// signing name: the caller (`None` for an unsigned operation). The role credentials STS
/// handed out are known too, expired once their expiry has passed on AWS's clock.
fn verify(
    state: &State,
    op: Operation,
    auth: Option<&Authorization>,
    req: &Request<'_>,
    body: &Bytes,
) -> Step<Option<Credential>> {
    let (Some(auth), Some(service)) = (auth, op.signing_name()) else {
        return Continue(None);
    };
    let signed = sigv4::Signed {
        method: req.method.as_str(),
        path: req.path,
        query: req.query,
        headers: req.headers,
        body,
    };
    let now = state.shared.clock.now();
    let role = state
        .anywhere
        .role_credential(&auth.access_key_id, now)
        .map(|c| {
            let mut k = crate::credentials::Keyring::default();
            let _ = k.add(c);
            k
        });
    let keyring = role.as_ref().unwrap_or(&state.shared.callers.keyring);
    match sigv4::verify(auth, &signed, keyring, &state.shared.region, service, now) {
        Ok(caller) => Continue(Some(caller.clone())),
        Err(r) => Break(rejected(r)),
    }
}

/// Checks 5-9: the operation's family answers.
fn operate(
    state: &State,
    op: Operation,
    body: &Bytes,
    parsed: Result<Value, serde_json::Error>,
    caller: Option<&Credential>,
    rec: &mut RecordLine,
) -> Outcome {
    match op {
        Operation::RegisterUsage => {
            metering::register_usage(&state.shared, &state.metering, parsed, caller, rec)
        }
        Operation::MeterUsage => meter_usage::call(
            &state.shared,
            &state.metering.product_code,
            &state.meter_usage,
            parsed,
            caller,
            rec,
        ),
        Operation::License(op) => license::call(&state.shared, &state.license, op, parsed, rec),
        Operation::Anywhere(anywhere::Op::GetAccessToken) => {
            anywhere::get_access_token(&state.shared, &state.anywhere, parsed, rec)
        }
        Operation::Anywhere(anywhere::Op::AssumeRoleWithWebIdentity) => {
            anywhere::sts::assume_role_with_web_identity(&state.shared, &state.anywhere, body, rec)
        }
    }
}

/// Every answer of the service carries AWS's clock and a fresh request ID, errors too; a
/// proxy's or portal's page (an HTML fault) stands for something that is not the service.
fn stamp(state: &State, outcome: &mut Outcome, rec: &mut RecordLine) {
    let from_service = !rec
        .fault
        .parse::<Fault>()
        .is_ok_and(|f| f.html_page().is_some() || f == Fault::TokenHtmlAnswer);
    if let Outcome::Answer(resp, _) | Outcome::Raw(_, resp) = outcome {
        let h = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&http_date(state.shared.clock.now())) {
            h.insert(hyper::header::DATE, v);
        }
        if from_service {
            // An answer whose body names its request ID (STS's XML) has it already.
            let id = match h.get("x-amzn-requestid").map(|v| v.to_str()) {
                Some(Ok(id)) => id.to_string(),
                _ => request_id(),
            };
            if let Ok(v) = HeaderValue::from_str(&id) {
                h.insert("x-amzn-requestid", v);
            }
            rec.request_id = Some(id);
        }
    }
}

fn rejected(r: Rejection) -> Outcome {
    error_answer(r.status, r.error_type, &r.message)
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<Result<&'a str, ()>> {
    headers.get(name).map(|v| v.to_str().map_err(|_| ()))
}
