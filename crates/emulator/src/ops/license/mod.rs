//! Owns AWS License Manager's calls (contract pricing): checks, faults and answers.

mod book;
mod faults;
mod input;
mod model;

pub use book::{Effect, License, LicenseConfig};
pub use faults::{FaultSpec, LicenseFault, Stage, ALL_LICENSE_FAULTS};
pub use model::{
    Entitlement, LmError, Op, ALL_OPS, DEFAULT_PRODUCT_SKU, SIGNING_NAME, TARGET_PREFIX,
};

use hyper::body::Bytes;
use hyper::header::HeaderValue;
use serde_json::{json, Map, Value};

use crate::answer::CONTENT_TYPE_JSON;
use std::ops::ControlFlow::{Break, Continue};

use crate::answer::{base_response, error_answer, html_page, json_answer, settle, Outcome, Step};
use crate::fault::Fault;
use crate::ops::validation::{json_object, Rejected};
use crate::record::{LicenseRecord, RecordLine, RATE_LIMITED};
use crate::shared::Shared;

/// The members of a License Manager request, as sent, for its record line.
pub(crate) fn note_members(obj: Option<&Map<String, Value>>, rec: &mut RecordLine) {
    let get = |k: &str| obj.and_then(|o| o.get(k)).cloned();
    rec.license = Some(LicenseRecord {
        product_sku: get("ProductSKU"),
        client_token: get("ClientToken"),
        license_consumption_token: get("LicenseConsumptionToken"),
        entitlements: get("Entitlements"),
        checkout_type: get("CheckoutType"),
        key_fingerprint: get("KeyFingerprint"),
        license_arn: get("LicenseArn"),
        ..LicenseRecord::default()
    });
}

/// A License Manager call, once routed, of the right content type and signed: the body's
/// shape, `--rate-limit`, the `--license-fault`s, then the license's answer. (Metering's
/// caller model, the platform and the task's region, is RegisterUsage's: License Manager
/// answers any caller it knows.)
pub(crate) fn call(
    shared: &Shared,
    license: &License,
    op: Op,
    parsed: Result<Value, serde_json::Error>,
    rec: &mut RecordLine,
) -> Outcome {
    let steps = || {
        let input = input(op, parsed)?;
        throttle(shared, rec)?;
        let fault = fault_before(license, op, rec)?;
        let Some(key) = shared.keys.first() else {
            return Break(error(LmError {
                status: 500,
                error_type: "ServerInternalException",
                message: "The emulator has no key to sign with.".into(),
                location: None,
            }));
        };
        let now = shared.clock.now();
        let mut effect = Effect::default();
        let result = license.execute(input, now, &key.signing_key, &mut effect);
        if let Some(lm) = rec.license.as_mut() {
            lm.processed = effect.processed;
            lm.replayed = effect.replayed;
            lm.issued_token = effect.issued_token;
        }
        Continue(fault_after(fault, result, now, rec))
    };
    settle(steps())
}

/// The body's shape.
fn input(op: Op, parsed: Result<Value, serde_json::Error>) -> Step<input::Input> {
    match json_object(parsed).map(|obj| input::validate(op, &obj)) {
        Ok(Ok(i)) => Continue(i),
        Ok(Err(e)) => Break(error(e)),
        Err(Rejected(t, m)) => Break(error_answer(400, t, &m)),
    }
}

/// `--rate-limit`.
fn throttle(shared: &Shared, rec: &mut RecordLine) -> Step<()> {
    if shared.admit() {
        return Continue(());
    }
    rec.fault = RATE_LIMITED;
    Break(error(LmError {
        status: 429,
        error_type: "RateLimitExceededException",
        message: "Rate exceeded".into(),
        location: None,
    }))
}

/// The `--license-fault` of this call: one that acts before the seat book answers here; one
/// that acts on the answer is returned.
fn fault_before(license: &License, op: Op, rec: &mut RecordLine) -> Step<Option<LicenseFault>> {
    let fault = license.take_fault(op);
    let Some(before) = fault.filter(|f| f.stage() == Stage::Before) else {
        return Continue(fault);
    };
    rec.fault = before.name();
    if let Some(e) = before.error() {
        return Break(error(e));
    }
    Break(match before {
        LicenseFault::Hang => Outcome::Hang,
        LicenseFault::Drop => Outcome::Drop,
        _ => html_page(Fault::Http503Html).unwrap_or(Outcome::Drop),
    })
}

/// The seat book's answer, lost or mangled by `fault`.
fn fault_after(
    fault: Option<LicenseFault>,
    result: Result<Value, LmError>,
    now: std::time::SystemTime,
    rec: &mut RecordLine,
) -> Outcome {
    let Some(fault) = fault else {
        return answer(result);
    };
    rec.fault = fault.name();
    if fault.stage() == Stage::LostAnswer {
        return match fault.lost_answer_error() {
            Some(e) => error(e),
            None if fault == LicenseFault::ProcessedThenHang => Outcome::Hang,
            None => Outcome::Drop,
        };
    }
    // A bad-answer fault mangles a success; a refusal is answered as it is.
    match result {
        Ok(ok) => match fault.bad_answer(&ok, now) {
            Some(body) => Outcome::Answer(
                base_response(200, CONTENT_TYPE_JSON, Bytes::from(body)),
                None,
            ),
            None => answer(Ok(ok)),
        },
        Err(e) => error(e),
    }
}

/// The license's own answer to a call.
fn answer(result: Result<Value, LmError>) -> Outcome {
    match result {
        Ok(answer) => json_answer(answer.to_string()),
        Err(e) => error(e),
    }
}

/// A License Manager error: `{"__type", "Message"}` (its error shapes' member is `Message`),
/// plus `Location` (member and header) for `RedirectException`.
pub(crate) fn error(e: LmError) -> Outcome {
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
