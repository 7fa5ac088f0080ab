//! Owns the `--license-fault`s: what each does to a call, and when.

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use crate::clock::{rfc3339, unix_secs};
use crate::fault::{by_name, schedule, scheduled};
use crate::ops::license::model::{lm_error, LmError, Op, ALL_OPS};

/// A `--license-fault`: what a faulted call gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LicenseFault {
    NoEntitlementsAllowed,
    ResourceNotFound,
    Validation,
    InvalidParameterValue,
    Redirect,
    UnsupportedDigitalSignatureMethod,
    Authorization,
    AccessDenied,
    RateLimitExceeded,
    ServerInternal,
    Conflict,
    /// A load balancer's 503 HTML page (as the Metering fault of that name).
    Http503Html,
    /// No answer, the connection kept open.
    Hang,
    /// The connection closed without an answer.
    Drop,
    // --- bad 200 answers of a processed extension (the seat book extends it) ---
    /// `Expiration` an hour before AWS's clock.
    AnswerPastExpiration,
    /// No `LicenseConsumptionToken`.
    AnswerMissingToken,
    /// No `Expiration`.
    AnswerMissingExpiration,
    /// `Expiration` a string that is no date (`never`).
    AnswerBadExpiration,
    /// `LicenseConsumptionToken` and `Expiration` numbers, not strings.
    AnswerWrongTypes,
    /// A body that is not JSON (the answer cut in the middle of a member).
    AnswerGarbage,
    // --- the call is processed (seat taken / extended / returned), then its answer lost ---
    /// The connection closed without an answer.
    ProcessedThenDrop,
    /// No answer, the connection kept open.
    ProcessedThenHang,
    /// `ServerInternalException` (500) instead of the answer.
    ProcessedThenServerInternal,
}

/// When a license fault acts on a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Instead of the call: the seat book never sees it.
    Before,
    /// On the success answer of a call the seat book processed.
    BadAnswer,
    /// After the seat book processed the call: the answer is lost.
    LostAnswer,
}

/// Every license fault, in the order `--help` and `--list-faults` list them.
pub const ALL_LICENSE_FAULTS: &[LicenseFault] = &[
    LicenseFault::NoEntitlementsAllowed,
    LicenseFault::ResourceNotFound,
    LicenseFault::Validation,
    LicenseFault::InvalidParameterValue,
    LicenseFault::Redirect,
    LicenseFault::UnsupportedDigitalSignatureMethod,
    LicenseFault::Authorization,
    LicenseFault::AccessDenied,
    LicenseFault::RateLimitExceeded,
    LicenseFault::ServerInternal,
    LicenseFault::Conflict,
    LicenseFault::Http503Html,
    LicenseFault::Hang,
    LicenseFault::Drop,
    LicenseFault::AnswerPastExpiration,
    LicenseFault::AnswerMissingToken,
    LicenseFault::AnswerMissingExpiration,
    LicenseFault::AnswerBadExpiration,
    LicenseFault::AnswerWrongTypes,
    LicenseFault::AnswerGarbage,
    LicenseFault::ProcessedThenDrop,
    LicenseFault::ProcessedThenHang,
    LicenseFault::ProcessedThenServerInternal,
];

/// The error a `RedirectException` points to.
pub const REDIRECT_LOCATION: &str = "https://license-manager.us-west-2.amazonaws.com/";

impl LicenseFault {
    pub fn name(self) -> &'static str {
        match self {
            LicenseFault::NoEntitlementsAllowed => "no-entitlements-allowed",
            LicenseFault::ResourceNotFound => "resource-not-found",
            LicenseFault::Validation => "validation",
            LicenseFault::InvalidParameterValue => "invalid-parameter-value",
            LicenseFault::Redirect => "redirect",
            LicenseFault::UnsupportedDigitalSignatureMethod => {
                "unsupported-digital-signature-method"
            }
            LicenseFault::Authorization => "authorization",
            LicenseFault::AccessDenied => "access-denied",
            LicenseFault::RateLimitExceeded => "rate-limit-exceeded",
            LicenseFault::ServerInternal => "server-internal",
            LicenseFault::Conflict => "conflict",
            LicenseFault::Http503Html => "http-503-html",
            LicenseFault::Hang => "hang",
            LicenseFault::Drop => "drop",
            LicenseFault::AnswerPastExpiration => "answer-past-expiration",
            LicenseFault::AnswerMissingToken => "answer-missing-token",
            LicenseFault::AnswerMissingExpiration => "answer-missing-expiration",
            LicenseFault::AnswerBadExpiration => "answer-bad-expiration",
            LicenseFault::AnswerWrongTypes => "answer-wrong-types",
            LicenseFault::AnswerGarbage => "answer-garbage",
            LicenseFault::ProcessedThenDrop => "processed-then-drop",
            LicenseFault::ProcessedThenHang => "processed-then-hang",
            LicenseFault::ProcessedThenServerInternal => "processed-then-server-internal",
        }
    }

    pub fn stage(self) -> Stage {
        match self {
            LicenseFault::AnswerPastExpiration
            | LicenseFault::AnswerMissingToken
            | LicenseFault::AnswerMissingExpiration
            | LicenseFault::AnswerBadExpiration
            | LicenseFault::AnswerWrongTypes
            | LicenseFault::AnswerGarbage => Stage::BadAnswer,
            LicenseFault::ProcessedThenDrop
            | LicenseFault::ProcessedThenHang
            | LicenseFault::ProcessedThenServerInternal => Stage::LostAnswer,
            _ => Stage::Before,
        }
    }

    /// The body of a bad-answer fault, from the extension's true answer (`None` for the other
    /// faults). `now` is AWS's clock.
    pub fn bad_answer(self, answer: &Value, now: SystemTime) -> Option<String> {
        let mut v = answer.clone();
        let obj = v.as_object_mut()?;
        match self {
            LicenseFault::AnswerPastExpiration => {
                obj.insert(
                    "Expiration".into(),
                    json!(rfc3339(now - Duration::from_secs(3600))),
                );
            }
            LicenseFault::AnswerMissingToken => {
                obj.remove("LicenseConsumptionToken");
            }
            LicenseFault::AnswerMissingExpiration => {
                obj.remove("Expiration");
            }
            LicenseFault::AnswerBadExpiration => {
                obj.insert("Expiration".into(), json!("never"));
            }
            LicenseFault::AnswerWrongTypes => {
                obj.insert("LicenseConsumptionToken".into(), json!(1234567890));
                obj.insert("Expiration".into(), json!(unix_secs(now) + 3600));
            }
            LicenseFault::AnswerGarbage => {
                // A whole answer cut in the middle of its first member: not JSON.
                let whole = v.to_string();
                return Some(whole[..whole.len().min(28)].to_string());
            }
            _ => return None,
        }
        Some(v.to_string())
    }

    /// The error answer (HTTP status as in the Smithy model, `__type`, `Message`); `None` for
    /// the network faults.
    pub fn error(self) -> Option<LmError> {
        let (status, error_type, message) = match self {
            LicenseFault::NoEntitlementsAllowed => (
                400,
                "NoEntitlementsAllowedException",
                "There are no entitlements found for this license, or the entitlement maximum count is reached.",
            ),
            LicenseFault::ResourceNotFound => (
                400,
                "ResourceNotFoundException",
                "The resource cannot be found.",
            ),
            LicenseFault::Validation => (
                400,
                "ValidationException",
                "The provided input is not valid. Try your request again.",
            ),
            LicenseFault::InvalidParameterValue => (
                400,
                "InvalidParameterValueException",
                "One or more parameter values are not valid.",
            ),
            LicenseFault::Redirect => (
                308,
                "RedirectException",
                "This is not the correct Region for the resource. Try again.",
            ),
            LicenseFault::UnsupportedDigitalSignatureMethod => (
                400,
                "UnsupportedDigitalSignatureMethodException",
                "The digital signature method is unsupported. Try your request again.",
            ),
            LicenseFault::Authorization => (
                403,
                "AuthorizationException",
                "The Amazon Web Services user account does not have permission to perform the action. Check the IAM policy associated with this account.",
            ),
            LicenseFault::AccessDenied => (
                401,
                "AccessDeniedException",
                "User: arn:aws:sts::123456789012:assumed-role/task/abc is not authorized to perform: license-manager:CheckoutLicense because no identity-based policy allows the license-manager:CheckoutLicense action",
            ),
            LicenseFault::RateLimitExceeded => (
                429,
                "RateLimitExceededException",
                "Too many requests have been submitted. Try again after a brief wait.",
            ),
            LicenseFault::ServerInternal => (
                500,
                "ServerInternalException",
                "The server experienced an internal error. Try again.",
            ),
            LicenseFault::Conflict => (
                409,
                "ConflictException",
                "There was a conflict processing the request. Try your request again.",
            ),
            _ => return None,
        };
        let mut e = lm_error(status, error_type, message);
        if self == LicenseFault::Redirect {
            e.location = Some(REDIRECT_LOCATION.into());
        }
        Some(e)
    }

    /// The operations whose model lists the error (every operation for the network faults).
    pub fn operations(self) -> &'static [Op] {
        use Op::*;
        match self {
            LicenseFault::NoEntitlementsAllowed
            | LicenseFault::Redirect
            | LicenseFault::UnsupportedDigitalSignatureMethod => &[CheckoutLicense],
            LicenseFault::ResourceNotFound => {
                &[CheckoutLicense, CheckInLicense, ExtendLicenseConsumption]
            }
            LicenseFault::Conflict => &[CheckInLicense],
            _ if self.stage() == Stage::BadAnswer => &[ExtendLicenseConsumption],
            // GetLicenseUsage changes nothing: there is nothing to process.
            _ if self.stage() == Stage::LostAnswer => {
                &[CheckoutLicense, CheckInLicense, ExtendLicenseConsumption]
            }
            _ => ALL_OPS,
        }
    }

    /// The error a lost-answer fault answers instead of the true answer (`None`: no answer).
    pub fn lost_answer_error(self) -> Option<LmError> {
        match self {
            LicenseFault::ProcessedThenServerInternal => LicenseFault::ServerInternal.error(),
            _ => None,
        }
    }

    /// One line of `--list-faults`: the service errors (kind `license`), the bad answers
    /// (kind `license-answer`, status 200) and the lost answers (kind `license-lost-answer`,
    /// with the status and errorType of the error answered instead, if any). The network
    /// faults are listed as the Metering faults of the same names.
    pub fn listing(self) -> Option<Value> {
        let ops: Vec<&str> = self.operations().iter().map(|o| o.name()).collect();
        let mut line = json!({"name": self.name(), "operations": ops});
        match self.stage() {
            Stage::Before => {
                let e = self.error()?;
                line["kind"] = json!("license");
                line["status"] = json!(e.status);
                line["errorType"] = json!(e.error_type);
            }
            Stage::BadAnswer => {
                line["kind"] = json!("license-answer");
                line["status"] = json!(200);
            }
            Stage::LostAnswer => {
                line["kind"] = json!("license-lost-answer");
                if let Some(e) = self.lost_answer_error() {
                    line["status"] = json!(e.status);
                    line["errorType"] = json!(e.error_type);
                }
            }
        }
        Some(line)
    }
}

impl FromStr for LicenseFault {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        by_name(ALL_LICENSE_FAULTS, LicenseFault::name, s, "license fault")
    }
}

/// `--license-fault OPERATION=FAULT[@AFTER][*COUNT]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultSpec {
    pub op: Op,
    pub fault: LicenseFault,
    /// The first `after` valid calls of the operation are answered normally.
    pub after: u64,
    /// Only `count` calls fail (`None`: every later one).
    pub count: Option<u64>,
}

impl FaultSpec {
    pub fn parse(spec: &str) -> Result<FaultSpec, String> {
        let usage = "expected OPERATION=FAULT[@AFTER][*COUNT]";
        let (op, rest) = spec
            .split_once('=')
            .ok_or_else(|| format!("invalid license fault {spec:?} ({usage})"))?;
        let op = ALL_OPS
            .iter()
            .copied()
            .find(|o| o.name() == op)
            .ok_or_else(|| {
                format!("unknown operation {op:?} (expected CheckoutLicense, CheckInLicense, ExtendLicenseConsumption or GetLicenseUsage)")
            })?;
        let (fault, after, count) = schedule(rest, spec)?;
        let fault: LicenseFault = fault.parse()?;
        if !fault.operations().contains(&op) {
            let ops: Vec<&str> = fault.operations().iter().map(|o| o.name()).collect();
            return Err(format!(
                "{} is not an error {} returns (the model lists it for {} only)",
                fault.name(),
                op.name(),
                ops.join(", ")
            ));
        }
        Ok(FaultSpec {
            op,
            fault,
            after,
            count,
        })
    }

    pub(super) fn applies(&self, n: u64) -> bool {
        scheduled(self.after, self.count, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_specs() {
        let f = FaultSpec::parse("CheckoutLicense=server-internal@2*3").unwrap();
        assert_eq!(
            (f.op, f.fault, f.after, f.count),
            (
                Op::CheckoutLicense,
                LicenseFault::ServerInternal,
                2,
                Some(3)
            )
        );
        assert!(!f.applies(2) && f.applies(3) && f.applies(5) && !f.applies(6));
        for ok in [
            "ExtendLicenseConsumption=answer-garbage",
            "CheckoutLicense=processed-then-drop",
            "CheckInLicense=processed-then-server-internal",
            "ExtendLicenseConsumption=processed-then-hang",
        ] {
            assert!(FaultSpec::parse(ok).is_ok(), "{ok}");
        }
        let f = FaultSpec::parse("GetLicenseUsage=hang").unwrap();
        assert!(f.applies(1) && f.applies(1000));
        for bad in [
            "ExtendLicenseConsumption=no-entitlements-allowed",
            "CheckoutLicense=conflict",
            "GetLicenseUsage=resource-not-found",
            "CheckoutLicense=nope",
            "Nope=validation",
            "CheckoutLicense=validation*0",
            "CheckoutLicense=validation@x",
            "CheckoutLicense",
            "CheckoutLicense=answer-garbage",
            "CheckInLicense=answer-past-expiration",
            "GetLicenseUsage=processed-then-drop",
        ] {
            assert!(FaultSpec::parse(bad).is_err(), "{bad}");
        }
    }
}
