//! Raw MeterUsage calls to the emulator, signed for real (signing name `aws-marketplace`),
//! and its `--meter-fault`s as the tests expect them.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::license::{send, Reply, IO_TIMEOUT};
use crate::sigv4::{signed_request, Signing};

/// The target of MeterUsage.
pub const TARGET: &str = "AWSMPMeteringService.MeterUsage";

/// The raw HTTP/1.1 bytes of a MeterUsage call with `body`, signed with `signing`.
pub fn request(body: &Value, signing: &Signing) -> Vec<u8> {
    signed_request(TARGET, &body.to_string(), signing)
}

/// MeterUsage with `body`, signed with `signing` (a caller: one pod or task per pair).
pub fn call_as(addr: &str, body: &Value, signing: &Signing) -> Reply {
    send(addr, &request(body, signing), IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("MeterUsage to {addr}: {e}"))
}

/// MeterUsage with `body`, signed with the test pair.
pub fn call(addr: &str, body: &Value) -> Reply {
    call_as(addr, body, &Signing::new())
}

/// Seconds since the Unix epoch now, as a JSON timestamp of awsJson1.1.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A MeterUsage body: `product_code`, `dimension`, `quantity`, at `timestamp` (epoch seconds).
pub fn body(product_code: &str, dimension: &str, quantity: i64, timestamp: i64) -> Value {
    json!({
        "ProductCode": product_code,
        "UsageDimension": dimension,
        "UsageQuantity": quantity,
        "Timestamp": timestamp,
    })
}

/// A `--meter-fault` that answers an error instead of the call (`--list-faults` kind
/// `meter`), or instead of the record ID of a call recorded (`meter-lost-answer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeterFault {
    pub fault: &'static str,
    pub status: u16,
    pub error_type: &'static str,
    /// AWS answers it on a caller's initial call only (no record accepted yet).
    pub initial_call_only: bool,
    /// botocore's model lists it for MeterUsage.
    pub modelled: bool,
}

const fn fault(
    fault: &'static str,
    status: u16,
    error_type: &'static str,
    initial_call_only: bool,
    modelled: bool,
) -> MeterFault {
    MeterFault {
        fault,
        status,
        error_type,
        initial_call_only,
        modelled,
    }
}

/// Every `--meter-fault` that answers an error instead of the call, in `--list-faults`
/// order.
pub const METER_FAULTS: &[MeterFault] = &[
    fault(
        "not-entitled",
        400,
        "CustomerNotEntitledException",
        true,
        true,
    ),
    fault(
        "platform-not-supported",
        400,
        "PlatformNotSupportedException",
        true,
        false,
    ),
    fault(
        "invalid-endpoint-region",
        400,
        "InvalidEndpointRegionException",
        true,
        true,
    ),
    fault(
        "invalid-product-code",
        400,
        "InvalidProductCodeException",
        true,
        true,
    ),
    fault(
        "invalid-usage-dimension",
        400,
        "InvalidUsageDimensionException",
        false,
        true,
    ),
    fault("invalid-tag", 400, "InvalidTagException", false, true),
    fault(
        "invalid-usage-allocations",
        400,
        "InvalidUsageAllocationsException",
        false,
        true,
    ),
    fault(
        "timestamp-out-of-bounds",
        400,
        "TimestampOutOfBoundsException",
        false,
        true,
    ),
    fault(
        "duplicate-request",
        400,
        "DuplicateRequestException",
        false,
        true,
    ),
    fault(
        "idempotency-conflict",
        409,
        "IdempotencyConflictException",
        false,
        true,
    ),
    fault("throttle", 400, "ThrottlingException", false, true),
    fault(
        "internal-error",
        500,
        "InternalServiceErrorException",
        false,
        true,
    ),
    fault("access-denied", 400, "AccessDeniedException", false, false),
    fault(
        "unrecognized-client",
        403,
        "UnrecognizedClientException",
        false,
        false,
    ),
];

/// The faults that record the call (bill it), then lose the answer: the error answered
/// instead, if any.
pub const METER_LOST_ANSWER_FAULTS: &[(&str, Option<(u16, &str)>)] = &[
    ("processed-then-drop", None),
    ("processed-then-hang", None),
    (
        "processed-then-internal-error",
        Some((500, "InternalServiceErrorException")),
    ),
];

/// The faults that answer a page, or nothing, instead of the call.
pub const METER_NETWORK_FAULTS: &[&str] = &["http-503-html", "hang", "drop"];
