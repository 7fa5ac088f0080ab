//! Owns AWS Marketplace Metering's MeterUsage (custom metering): checks, faults, records.

mod book;
mod config;
mod faults;
mod input;
pub mod ledger;

pub use book::MeterUsage;
pub use config::{options_help, section_help, MeterConfig, FLAGS};
pub use faults::{MeterFault, ALL_METER_FAULTS};

use std::ops::ControlFlow::{Break, Continue};

use hyper::body::Bytes;
use hyper::header::HeaderValue;
use serde_json::{json, Map, Value};

use crate::answer::{base_response, error_answer, html_page, settle, Outcome, Step};
use crate::answer::{json_answer, CONTENT_TYPE_JSON};
use crate::credentials::Credential;
use crate::fault::Fault;
use crate::ops::validation::{json_object, Rejected};
use crate::record::{RecordLine, RATE_LIMITED};
use crate::shared::Shared;
use book::{rfc3339_ms, Effect};
use faults::{MeterError, Stage};
use input::Input;

/// The operation's name, as its target ends.
pub const OPERATION: &str = "MeterUsage";

/// Copies the members of a MeterUsage request, as sent, into its record line.
pub(crate) fn note_members(obj: Option<&Map<String, Value>>, rec: &mut RecordLine) {
    let get = |k: &str| obj.and_then(|o| o.get(k)).cloned().unwrap_or(Value::Null);
    rec.product_code = get("ProductCode");
    let mut members = Map::new();
    for (field, key) in [
        ("UsageDimension", "usageDimension"),
        ("UsageQuantity", "usageQuantity"),
        ("Timestamp", "timestamp"),
        ("DryRun", "dryRun"),
        ("ClientToken", "clientToken"),
        ("UsageAllocations", "usageAllocations"),
    ] {
        members.insert(key.into(), get(field));
    }
    for key in ["caller", "hour", "meteringRecordId"] {
        members.insert(key.into(), Value::Null);
    }
    members.insert("recorded".into(), json!(false));
    members.insert("replayed".into(), json!(false));
    rec.members = Some(members);
}

/// Sets record member `key` (the line's MeterUsage members).
fn note(rec: &mut RecordLine, key: &str, value: Value) {
    if let Some(m) = rec.members.as_mut() {
        m.insert(key.into(), value);
    }
}

/// MeterUsage, once routed, of the right content type and signed by `caller`.
pub(crate) fn call(
    shared: &Shared,
    product_code: &str,
    meter: &MeterUsage,
    parsed: Result<Value, serde_json::Error>,
    caller: Option<&Credential>,
    rec: &mut RecordLine,
) -> Outcome {
    let caller_id = caller.map(|c| c.access_key_id.as_str()).unwrap_or("");
    note(rec, "caller", json!(caller_id));
    let steps = || {
        let input = input(parsed)?;
        note(
            rec,
            "hour",
            json!(rfc3339_ms(meter.hour_of(input.timestamp_ms))),
        );
        refuse_caller(shared, caller)?;
        throttle(shared, rec)?;
        let fault = fault_before(meter, caller_id, rec)?;
        let now = shared.clock.now();
        let mut effect = Effect::default();
        let result = business(product_code, meter, caller_id, &input, now, &mut effect);
        note(rec, "recorded", json!(effect.recorded));
        note(rec, "replayed", json!(effect.replayed));
        note(rec, "meteringRecordId", json!(effect.record_id));
        Continue(fault_after(fault, result, rec))
    };
    settle(steps())
}

/// The body's shape.
fn input(parsed: Result<Value, serde_json::Error>) -> Step<Input> {
    match json_object(parsed).and_then(|obj| input::validate(&obj)) {
        Ok(input) => Continue(input),
        Err(Rejected(t, m)) => Break(error_answer(400, t, &m)),
    }
}

/// RegisterUsage's caller model, with MeterUsage's error for another region.
fn refuse_caller(shared: &Shared, caller: Option<&Credential>) -> Step<()> {
    if caller.is_some_and(|c| !c.is_temporary()) && !shared.callers.long_term_keys_are_tasks {
        return Break(error(MeterFault::PlatformNotSupported.error()));
    }
    match &shared.callers.task_region {
        Some(task_region) if *task_region != shared.region => {
            Break(error(MeterFault::InvalidEndpointRegion.error()))
        }
        _ => Continue(()),
    }
}

/// `--rate-limit` (its bucket shared with every operation).
fn throttle(shared: &Shared, rec: &mut RecordLine) -> Step<()> {
    if shared.admit() {
        return Continue(());
    }
    rec.fault = RATE_LIMITED;
    Break(error(MeterFault::Throttle.error()))
}

/// The `--meter-fault` of this call: one that acts before the book answers here; a lost
/// answer is returned.
fn fault_before(
    meter: &MeterUsage,
    caller: &str,
    rec: &mut RecordLine,
) -> Step<Option<MeterFault>> {
    let fault = meter.take_fault(caller);
    let Some(before) = fault.filter(|f| f.stage() == Stage::Before) else {
        return Continue(fault);
    };
    rec.fault = before.name();
    if let Some(e) = before.error() {
        return Break(error(Some(e)));
    }
    Break(match before {
        MeterFault::Hang => Outcome::Hang,
        MeterFault::Drop => Outcome::Drop,
        _ => html_page(Fault::Http503Html).unwrap_or(Outcome::Drop),
    })
}

/// The product, the subscription, the dimension, the Timestamp, the allocations, then the
/// book (ClientToken, the hour, the record).
fn business(
    product_code: &str,
    meter: &MeterUsage,
    caller: &str,
    input: &Input,
    now: std::time::SystemTime,
    effect: &mut Effect,
) -> Result<String, MeterError> {
    if input.product_code != product_code {
        return Err(faults::meter_error(
            "InvalidProductCodeException",
            "The product code passed does not match the product code used for publishing the product.",
        ));
    }
    meter.check_subscription(caller)?;
    if !meter.config.dimensions.contains(&input.dimension) {
        return Err(faults::meter_error(
            "InvalidUsageDimensionException",
            format!(
                "The usage dimension does not match one of the UsageDimensions associated with products: {} is not one of {}.",
                input.dimension,
                meter.config.dimensions.join(", ")
            ),
        ));
    }
    meter.check_timestamp(input.timestamp_ms, now)?;
    input::check_allocations(input)?;
    meter.meter(caller, input, now, effect)
}

/// The book's answer, lost when `fault` says so.
fn fault_after(
    fault: Option<MeterFault>,
    result: Result<String, MeterError>,
    rec: &mut RecordLine,
) -> Outcome {
    if let Some(fault) = fault.filter(|f| f.stage() == Stage::LostAnswer) {
        rec.fault = fault.name();
        return match (fault, fault.error()) {
            (_, Some(e)) => error(Some(e)),
            (MeterFault::ProcessedThenHang, None) => Outcome::Hang,
            _ => Outcome::Drop,
        };
    }
    match result {
        Ok(id) => json_answer(json!({ "MeteringRecordId": id }).to_string()),
        Err(e) => error(Some(e)),
    }
}

/// A Metering error: `{"__type", "message"}` with `x-amzn-errortype`.
fn error(e: Option<MeterError>) -> Outcome {
    let e =
        e.unwrap_or_else(|| faults::meter_error("InternalServiceErrorException", "no such error"));
    let body = json!({"__type": e.error_type, "message": e.message}).to_string();
    let mut resp = base_response(e.status, CONTENT_TYPE_JSON, Bytes::from(body));
    resp.headers_mut()
        .insert("x-amzn-errortype", HeaderValue::from_static(e.error_type));
    Outcome::Answer(resp, Some(e.error_type))
}
