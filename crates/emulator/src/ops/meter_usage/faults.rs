//! Owns the `--meter-fault`s: what each does to a MeterUsage call, and when.

use std::str::FromStr;
use std::time::Duration;

use serde_json::{json, Value};

use crate::fault::{by_name, schedule, scheduled};

/// A `--meter-fault`: what a faulted MeterUsage call gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeterFault {
    NotEntitled,
    PlatformNotSupported,
    InvalidEndpointRegion,
    InvalidProductCode,
    InvalidUsageDimension,
    InvalidTag,
    InvalidUsageAllocations,
    TimestampOutOfBounds,
    DuplicateRequest,
    IdempotencyConflict,
    Throttle,
    InternalError,
    AccessDenied,
    UnrecognizedClient,
    /// A load balancer's 503 HTML page (as the Metering fault of that name).
    Http503Html,
    /// No answer, the connection kept open.
    Hang,
    /// The connection closed without an answer.
    Drop,
    // --- the record is made (billed), then its answer lost ---
    ProcessedThenDrop,
    ProcessedThenHang,
    /// `InternalServiceErrorException` (500) instead of the record ID.
    ProcessedThenInternalError,
}

/// When a meter fault acts on a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Instead of the call: nothing is recorded.
    Before,
    /// After the call was recorded (billed): the answer is lost.
    LostAnswer,
}

/// Every meter fault, in the order `--help` and `--list-faults` list them.
pub const ALL_METER_FAULTS: &[MeterFault] = &[
    MeterFault::NotEntitled,
    MeterFault::PlatformNotSupported,
    MeterFault::InvalidEndpointRegion,
    MeterFault::InvalidProductCode,
    MeterFault::InvalidUsageDimension,
    MeterFault::InvalidTag,
    MeterFault::InvalidUsageAllocations,
    MeterFault::TimestampOutOfBounds,
    MeterFault::DuplicateRequest,
    MeterFault::IdempotencyConflict,
    MeterFault::Throttle,
    MeterFault::InternalError,
    MeterFault::AccessDenied,
    MeterFault::UnrecognizedClient,
    MeterFault::Http503Html,
    MeterFault::Hang,
    MeterFault::Drop,
    MeterFault::ProcessedThenDrop,
    MeterFault::ProcessedThenHang,
    MeterFault::ProcessedThenInternalError,
];

/// A MeterUsage error: HTTP status, `__type`, message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterError {
    pub status: u16,
    pub error_type: &'static str,
    pub message: String,
}

/// The error `error_type` answers with its usual status and message.
pub fn meter_error(error_type: &'static str, message: impl Into<String>) -> MeterError {
    let status = match error_type {
        "InternalServiceErrorException" => 500,
        "IdempotencyConflictException" => 409,
        "UnrecognizedClientException" => 403,
        _ => 400,
    };
    MeterError {
        status,
        error_type,
        message: message.into(),
    }
}

impl MeterFault {
    pub fn name(self) -> &'static str {
        match self {
            MeterFault::NotEntitled => "not-entitled",
            MeterFault::PlatformNotSupported => "platform-not-supported",
            MeterFault::InvalidEndpointRegion => "invalid-endpoint-region",
            MeterFault::InvalidProductCode => "invalid-product-code",
            MeterFault::InvalidUsageDimension => "invalid-usage-dimension",
            MeterFault::InvalidTag => "invalid-tag",
            MeterFault::InvalidUsageAllocations => "invalid-usage-allocations",
            MeterFault::TimestampOutOfBounds => "timestamp-out-of-bounds",
            MeterFault::DuplicateRequest => "duplicate-request",
            MeterFault::IdempotencyConflict => "idempotency-conflict",
            MeterFault::Throttle => "throttle",
            MeterFault::InternalError => "internal-error",
            MeterFault::AccessDenied => "access-denied",
            MeterFault::UnrecognizedClient => "unrecognized-client",
            MeterFault::Http503Html => "http-503-html",
            MeterFault::Hang => "hang",
            MeterFault::Drop => "drop",
            MeterFault::ProcessedThenDrop => "processed-then-drop",
            MeterFault::ProcessedThenHang => "processed-then-hang",
            MeterFault::ProcessedThenInternalError => "processed-then-internal-error",
        }
    }

    pub fn stage(self) -> Stage {
        match self {
            MeterFault::ProcessedThenDrop
            | MeterFault::ProcessedThenHang
            | MeterFault::ProcessedThenInternalError => Stage::LostAnswer,
            _ => Stage::Before,
        }
    }

    /// Whether AWS answers it only on a caller's initial call: "Exceptions other than
    /// ThrottlingException are thrown only on the initial call to MeterUsage. Subsequent calls
    /// from the same Amazon ECS task or Amazon EKS pod do not throw
    /// CustomerNotSubscribedException" (seller guide). These are the start-up errors: the
    /// subscription, the platform, the region and the product, which cannot change for a
    /// running pod; the others (throttling, 5xx, a bad record) can come at any call.
    pub fn initial_call_only(self) -> bool {
        matches!(
            self,
            MeterFault::NotEntitled
                | MeterFault::PlatformNotSupported
                | MeterFault::InvalidEndpointRegion
                | MeterFault::InvalidProductCode
        )
    }

    /// Whether botocore's model lists the error for MeterUsage (the others are the service's
    /// or AWS's common errors).
    pub fn modelled(self) -> bool {
        !matches!(
            self,
            MeterFault::PlatformNotSupported
                | MeterFault::AccessDenied
                | MeterFault::UnrecognizedClient
        )
    }

    /// The error answered (instead of the call, or instead of the record ID of a call
    /// recorded); `None` for the network faults.
    pub fn error(self) -> Option<MeterError> {
        let (error_type, message) = match self {
            MeterFault::NotEntitled => (
                "CustomerNotEntitledException",
                "Customer is not subscribed to the product.",
            ),
            MeterFault::PlatformNotSupported => (
                "PlatformNotSupportedException",
                "AWS Marketplace does not support metering usage from the underlying platform. Currently, Amazon ECS, Amazon EKS, and AWS Fargate are supported.",
            ),
            MeterFault::InvalidEndpointRegion => (
                "InvalidEndpointRegionException",
                "The endpoint being called is in a AWS Region different from your EC2 instance, ECS task, or EKS pod. The Region of the Metering Service endpoint and the AWS Region of the resource must match.",
            ),
            MeterFault::InvalidProductCode => (
                "InvalidProductCodeException",
                "The product code passed does not match the product code used for publishing the product.",
            ),
            MeterFault::InvalidUsageDimension => (
                "InvalidUsageDimensionException",
                "The usage dimension does not match one of the UsageDimensions associated with products.",
            ),
            MeterFault::InvalidTag => (
                "InvalidTagException",
                "The tag is invalid, or the number of tags is greater than 5.",
            ),
            MeterFault::InvalidUsageAllocations => (
                "InvalidUsageAllocationsException",
                "Sum of allocated usage quantities is not equal to the usage quantity.",
            ),
            MeterFault::TimestampOutOfBounds => (
                "TimestampOutOfBoundsException",
                "The timestamp value passed in the meter usage request is out of allowed range.",
            ),
            MeterFault::DuplicateRequest => (
                "DuplicateRequestException",
                "A metering record has already been emitted by the same EC2 instance, ECS task, or EKS pod for the given {usageDimension, timestamp} with a different usageQuantity.",
            ),
            MeterFault::IdempotencyConflict => (
                "IdempotencyConflictException",
                "The ClientToken is being used for multiple requests.",
            ),
            MeterFault::Throttle => ("ThrottlingException", "Rate exceeded"),
            MeterFault::InternalError | MeterFault::ProcessedThenInternalError => (
                "InternalServiceErrorException",
                "An internal error has occurred. Retry your request.",
            ),
            MeterFault::AccessDenied => (
                "AccessDeniedException",
                "User: arn:aws:sts::123456789012:assumed-role/task/abc is not authorized to perform: aws-marketplace:MeterUsage because no identity-based policy allows the aws-marketplace:MeterUsage action",
            ),
            MeterFault::UnrecognizedClient => (
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            ),
            _ => return None,
        };
        Some(meter_error(error_type, message))
    }

    /// What the fault does, for `--list-faults` and `--help`: `meter` (an error instead of the
    /// call), `meter-network` (a page or no answer) or `meter-lost-answer` (recorded, then the
    /// answer lost).
    pub fn kind(self) -> &'static str {
        match (self.stage(), self.error()) {
            (Stage::LostAnswer, _) => "meter-lost-answer",
            (Stage::Before, Some(_)) => "meter",
            (Stage::Before, None) => "meter-network",
        }
    }

    /// One line of `--list-faults`: `{"name","kind","operations":["MeterUsage"],
    /// "initialCallOnly"}`, plus `status`, `errorType` and `modelled` when it answers an
    /// error (`status` 503 for the HTML page).
    pub fn listing(self) -> Value {
        let mut line = json!({
            "name": self.name(),
            "kind": self.kind(),
            "operations": ["MeterUsage"],
            "initialCallOnly": self.initial_call_only(),
        });
        if let Some(e) = self.error() {
            line["status"] = json!(e.status);
            line["errorType"] = json!(e.error_type);
            line["modelled"] = json!(self.modelled());
        } else if self == MeterFault::Http503Html {
            line["status"] = json!(503);
        }
        line
    }
}

impl FromStr for MeterFault {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        by_name(ALL_METER_FAULTS, MeterFault::name, s, "meter fault")
    }
}

/// `--meter-fault [MeterUsage=]FAULT[@AFTER][*COUNT][~DURATION]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeterFaultSpec {
    pub fault: MeterFault,
    /// The first `after` calls it can apply to are answered normally.
    pub after: u64,
    /// Only `count` calls fail (`None`: every later one).
    pub count: Option<u64>,
    /// An outage: the calls fail for this long from the first one failed, then never again.
    pub window: Option<Duration>,
}

impl MeterFaultSpec {
    /// Reads a spec; `parse_duration` reads the window as the rest of the command line does.
    pub fn parse(
        spec: &str,
        parse_duration: fn(&str) -> Result<Duration, String>,
    ) -> Result<MeterFaultSpec, String> {
        let usage = "expected [MeterUsage=]FAULT[@AFTER][*COUNT][~DURATION]";
        let rest = match spec.split_once('=') {
            Some(("MeterUsage", rest)) => rest,
            Some((op, _)) => return Err(format!("unknown operation {op:?} in {spec:?} ({usage})")),
            None => spec,
        };
        let (rest, window) = match rest.split_once('~') {
            Some((r, w)) => {
                let d = parse_duration(w)
                    .ok()
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| {
                        format!("invalid DURATION {w:?} in {spec:?} (a duration above 0, e.g. 18s; {usage})")
                    })?;
                (r, Some(d))
            }
            None => (rest, None),
        };
        let (fault, after, count) = schedule(rest, spec)?;
        Ok(MeterFaultSpec {
            fault: fault.parse()?,
            after,
            count,
            window,
        })
    }

    /// Whether it applies to the `n`th call (from 1) it could apply to, its window aside.
    pub fn applies(&self, n: u64) -> bool {
        scheduled(self.after, self.count, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whole seconds or milliseconds: enough for these specs.
    fn duration(s: &str) -> Result<Duration, String> {
        let number = |n: &str| n.parse::<u64>().map_err(|e| e.to_string());
        match (s.strip_suffix("ms"), s.strip_suffix('s')) {
            (Some(ms), _) => number(ms).map(Duration::from_millis),
            (None, Some(secs)) => number(secs).map(Duration::from_secs),
            _ => Err(format!("{s:?}")),
        }
    }

    fn parse(spec: &str) -> Result<MeterFaultSpec, String> {
        MeterFaultSpec::parse(spec, duration)
    }

    #[test]
    fn specs_parse_with_or_without_the_operation() {
        let f = parse("MeterUsage=throttle@2*3").unwrap();
        assert_eq!(
            (f.fault, f.after, f.count),
            (MeterFault::Throttle, 2, Some(3))
        );
        assert!(!f.applies(2) && f.applies(3) && f.applies(5) && !f.applies(6));
        let f = parse("not-entitled").unwrap();
        assert_eq!(
            (f.fault, f.after, f.count),
            (MeterFault::NotEntitled, 0, None)
        );
        assert!(f.applies(1) && f.applies(1000));
        assert_eq!(f.window, None);
        let f = parse("throttle@1~18s").unwrap();
        assert_eq!(
            (f.fault, f.after, f.count, f.window),
            (MeterFault::Throttle, 1, None, Some(Duration::from_secs(18)))
        );
        let f = parse("MeterUsage=internal-error*4~500ms").unwrap();
        assert_eq!(
            (f.after, f.count, f.window),
            (0, Some(4), Some(Duration::from_millis(500)))
        );
        for bad in [
            "RegisterUsage=throttle",
            "nope",
            "throttle*0",
            "throttle@x",
            "token-wrong-key",
            "",
            "throttle~0s",
            "throttle~",
            "throttle~soon",
            "throttle~5s@1",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_round_trip_and_kinds_are_known() {
        for f in ALL_METER_FAULTS {
            assert_eq!(f.name().parse::<MeterFault>(), Ok(*f));
            let line = f.listing();
            assert!(line["kind"].as_str().unwrap().starts_with("meter"));
            if let Some(e) = f.error() {
                assert!(e.error_type.ends_with("Exception"), "{f:?}");
            }
        }
    }
}
