//! AWS License Manager, as AWS Marketplace contract pricing uses it: `CheckoutLicense`,
//! `ExtendLicenseConsumption`, `CheckInLicense` and `GetLicenseUsage` (awsJson1.1, target
//! prefix `AWSLicenseManager.`, SigV4 signing name `license-manager`), served on the same
//! listener as Metering.
//!
//! The emulator sells one license (`--product-sku`, `--license-entitlement`) and keeps a book
//! of consumptions: a checkout holds the counted values it asked for until it is checked in
//! or expires (`--consumption-ttl` after its checkout or last extension); `GetLicenseUsage`
//! sums what the live consumptions hold. `--no-license` stands for a buyer without the
//! license, SIGUSR1 revokes it (see [`License::revoke`]).

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use aws_lc_rs::rsa::KeyPair;
use serde_json::{json, Map, Value};

use crate::clock::{iso_local_seconds, rfc3339, unix_secs};
use crate::fault::by_name;

/// The target prefix of License Manager's operations.
pub const TARGET_PREFIX: &str = "AWSLicenseManager.";
/// License Manager's SigV4 signing name.
pub const SIGNING_NAME: &str = "license-manager";
/// The key fingerprint of AWS Marketplace's license issuer.
pub const ISSUER_FINGERPRINT: &str = "aws:294406891311:AWS/Marketplace:issuer-fingerprint";
/// The AWS Marketplace account that issues the licenses.
const ISSUER_ACCOUNT: &str = "294406891311";
pub const DEFAULT_PRODUCT_SKU: &str = "prod-sku-demo1234567890";
/// `--consumption-ttl` default.
pub const DEFAULT_CONSUMPTION_TTL: Duration = Duration::from_secs(3600);
/// The length `SignedToken` is padded to (the model's minimum is 4096).
const SIGNED_TOKEN_LENGTH: usize = 4200;

/// The License Manager operations the emulator serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    CheckoutLicense,
    CheckInLicense,
    ExtendLicenseConsumption,
    GetLicenseUsage,
}

pub const ALL_OPS: &[Op] = &[
    Op::CheckoutLicense,
    Op::CheckInLicense,
    Op::ExtendLicenseConsumption,
    Op::GetLicenseUsage,
];

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::CheckoutLicense => "CheckoutLicense",
            Op::CheckInLicense => "CheckInLicense",
            Op::ExtendLicenseConsumption => "ExtendLicenseConsumption",
            Op::GetLicenseUsage => "GetLicenseUsage",
        }
    }

    fn index(self) -> usize {
        ALL_OPS.iter().position(|o| *o == self).unwrap_or(0)
    }

    /// The operation an `X-Amz-Target` names, if the emulator serves it.
    pub fn from_target(target: &str) -> Option<Op> {
        let name = target.strip_prefix(TARGET_PREFIX)?;
        ALL_OPS.iter().copied().find(|o| o.name() == name)
    }
}

/// The `EntitlementDataUnit` enum of the model.
pub const UNITS: &[&str] = &[
    "Count",
    "None",
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
];

/// One entitlement of the license: a feature (`max` `None`, unit `None`) or a counted one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entitlement {
    pub name: String,
    pub max: Option<u64>,
    pub unit: &'static str,
}

impl Entitlement {
    /// `NAME` (a feature), `NAME=MAX` (Count) or `NAME=MAX:UNIT`.
    pub fn parse(spec: &str) -> Result<Entitlement, String> {
        let (name, rest) = match spec.split_once('=') {
            Some((n, r)) => (n, Some(r)),
            None => (spec, None),
        };
        if name.is_empty() || name.chars().any(char::is_whitespace) {
            return Err(format!(
                "invalid entitlement {spec:?}: the name must be non-empty, without spaces"
            ));
        }
        let Some(rest) = rest else {
            return Ok(Entitlement {
                name: name.into(),
                max: None,
                unit: "None",
            });
        };
        let (max, unit) = match rest.split_once(':') {
            Some((m, u)) => (m, u),
            None => (rest, "Count"),
        };
        let max: u64 =
            max.parse().ok().filter(|m| *m >= 1).ok_or_else(|| {
                format!("invalid entitlement {spec:?}: MAX must be an integer >= 1")
            })?;
        let unit = UNITS
            .iter()
            .copied()
            .find(|u| *u == unit && *u != "None")
            .ok_or_else(|| {
                format!("invalid entitlement {spec:?}: UNIT must be one of the model's units but None ({})", UNITS[2..].join(", "))
            })?;
        Ok(Entitlement {
            name: name.into(),
            max: Some(max),
            unit,
        })
    }

    /// As the ready line lists it.
    pub fn listing(&self) -> Value {
        let mut v = json!({"name": self.name, "unit": self.unit});
        if let Some(m) = self.max {
            v["maxCount"] = json!(m);
        }
        v
    }
}

/// The default entitlements: the `Basic` feature and 5 `Seats`.
pub fn default_entitlements() -> Vec<Entitlement> {
    vec![
        Entitlement {
            name: "Basic".into(),
            max: None,
            unit: "None",
        },
        Entitlement {
            name: "Seats".into(),
            max: Some(5),
            unit: "Count",
        },
    ]
}

/// A License Manager error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LmError {
    pub status: u16,
    pub error_type: &'static str,
    pub message: String,
    /// `RedirectException`'s `Location` (member and header).
    pub location: Option<String>,
}

fn lm_error(status: u16, error_type: &'static str, message: impl Into<String>) -> LmError {
    LmError {
        status,
        error_type,
        message: message.into(),
        location: None,
    }
}

fn validation(message: impl Into<String>) -> LmError {
    lm_error(400, "ValidationException", message)
}

fn not_allowed(message: impl Into<String>) -> LmError {
    lm_error(400, "NoEntitlementsAllowedException", message)
}

fn not_found(message: impl Into<String>) -> LmError {
    lm_error(400, "ResourceNotFoundException", message)
}

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
        let (rest, count) = match rest.split_once('*') {
            Some((r, c)) => (
                r,
                Some(c.parse::<u64>().ok().filter(|c| *c >= 1).ok_or_else(|| {
                    format!("invalid COUNT {c:?} in {spec:?} (expected an integer >= 1)")
                })?),
            ),
            None => (rest, None),
        };
        let (fault, after) = match rest.split_once('@') {
            Some((f, a)) => (
                f,
                a.parse::<u64>().map_err(|_| {
                    format!("invalid AFTER {a:?} in {spec:?} (expected an integer >= 0)")
                })?,
            ),
            None => (rest, 0),
        };
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

    fn applies(&self, n: u64) -> bool {
        n > self.after && self.count.is_none_or(|c| n <= self.after.saturating_add(c))
    }
}

/// What the license is (the command line).
#[derive(Debug, Clone)]
pub struct LicenseConfig {
    pub product_sku: String,
    pub entitlements: Vec<Entitlement>,
    /// `false` with `--no-license`: the caller holds no license.
    pub licensed: bool,
    pub consumption_ttl: Duration,
    pub faults: Vec<FaultSpec>,
    /// `--retire-superseded-tokens`: an extension's new token retires the one it was asked
    /// with (which AWS does is unsettled: the gate must be safe both ways).
    pub retire_superseded_tokens: bool,
}

impl Default for LicenseConfig {
    fn default() -> Self {
        LicenseConfig {
            product_sku: DEFAULT_PRODUCT_SKU.into(),
            entitlements: default_entitlements(),
            licensed: true,
            consumption_ttl: DEFAULT_CONSUMPTION_TTL,
            faults: Vec::new(),
            retire_superseded_tokens: false,
        }
    }
}

/// The license ARN of a product SKU: stable across runs (from the SKU's SHA-256).
pub fn license_arn(product_sku: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, product_sku.as_bytes());
    let hex: String = digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("arn:aws:license-manager::{ISSUER_ACCOUNT}:license:l-{hex}")
}

fn random_hex<const N: usize>() -> String {
    let b: [u8; N] = crate::random::random_bytes();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// One entitlement a request names.
#[derive(Debug, Clone, PartialEq)]
pub struct Requested {
    name: String,
    value: Option<String>,
    unit: String,
}

/// A validated CheckoutLicense request.
#[derive(Debug)]
pub struct Checkout {
    product_sku: String,
    checkout_type: String,
    key_fingerprint: String,
    entitlements: Vec<Requested>,
    client_token: String,
    node_id: Option<String>,
    /// The modelled members, for the ClientToken comparison.
    canonical: Value,
}

/// A validated request.
#[derive(Debug)]
pub enum Input {
    Checkout(Checkout),
    CheckIn { token: String },
    Extend { token: String, dry_run: bool },
    Usage { arn: String },
}

/// Collects AWS-style validation errors ("Value ... at 'Field' failed to satisfy constraint").
#[derive(Default)]
struct Errors(Vec<String>);

impl Errors {
    fn push(&mut self, s: String) {
        self.0.push(s);
    }

    fn string(&mut self, obj: &Map<String, Value>, field: &str, required: bool) -> Option<String> {
        string_member(obj, field, field, required, &mut self.0)
    }

    fn finish<T>(self, value: Option<T>) -> Result<T, LmError> {
        match (self.0.len(), value) {
            (0, Some(v)) => Ok(v),
            (0, None) => Err(validation("1 validation error detected: invalid request")),
            _ => Err(validation(validation_message(&self.0))),
        }
    }
}

/// AWS's ValidationException message for `errors` (at least one): "N validation error(s)
/// detected: " and the errors, joined by "; ".
pub fn validation_message(errors: &[String]) -> String {
    let head = match errors.len() {
        1 => "1 validation error detected: ".to_string(),
        n => format!("{n} validation errors detected: "),
    };
    head + &errors.join("; ")
}

/// String member `key` of `obj`, named `at` in AWS's validation messages (the member's path:
/// `Field`, or `List.1.member.Field` in a nested structure): missing or null is an error when
/// `required`, another type always is.
pub fn string_member(
    obj: &Map<String, Value>,
    key: &str,
    at: &str,
    required: bool,
    errors: &mut Vec<String>,
) -> Option<String> {
    match obj.get(key) {
        None | Some(Value::Null) => {
            if required {
                errors.push(format!(
                    "Value null at '{at}' failed to satisfy constraint: Member must not be null"
                ));
            }
            None
        }
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            errors.push(format!(
                "Value {} at '{at}' failed to satisfy constraint: Member must be a string",
                type_name(other)
            ));
            None
        }
    }
}

/// How AWS's validation messages name a JSON value's type.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "of type boolean",
        Value::Number(_) => "of type number",
        Value::String(_) => "of type string",
        Value::Array(_) => "of type array",
        Value::Object(_) => "of type object",
    }
}

/// The model's `Arn` pattern, `^arn:aws[a-zA-Z-]*:[A-Za-z0-9][A-Za-z0-9_/.-]{0,62}:
/// [A-Za-z0-9_/.-]{0,63}:[A-Za-z0-9_/.-]{0,63}:[A-Za-z0-9][A-Za-z0-9:_/+=,@.-]{0,1023}$`.
fn is_arn(s: &str) -> bool {
    let parts: Vec<&str> = s.splitn(6, ':').collect();
    let [arn, partition, service, region, account, resource] = parts.as_slice() else {
        return false;
    };
    let plain = |c: char| c.is_ascii_alphanumeric() || "_/.-".contains(c);
    let starts_alnum = |p: &str| p.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    *arn == "arn"
        && partition
            .strip_prefix("aws")
            .is_some_and(|p| p.chars().all(|c| c.is_ascii_alphabetic() || c == '-'))
        && starts_alnum(service)
        && service.len() <= 63
        && service.chars().all(plain)
        && region.len() <= 63
        && region.chars().all(plain)
        && account.len() <= 63
        && account.chars().all(plain)
        && starts_alnum(resource)
        && resource.len() <= 1024
        && resource
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ":_/+=,@.-".contains(c))
}

/// Checks a request body against the operation's input shape (unknown members are ignored,
/// as AWS does).
pub fn validate(op: Op, obj: &Map<String, Value>) -> Result<Input, LmError> {
    let mut errors = Errors::default();
    match op {
        Op::CheckoutLicense => {
            let product_sku = errors.string(obj, "ProductSKU", true);
            let checkout_type = errors.string(obj, "CheckoutType", true);
            if let Some(t) = &checkout_type {
                if t != "PROVISIONAL" && t != "PERPETUAL" {
                    errors.push(format!("Value '{t}' at 'CheckoutType' failed to satisfy constraint: Member must satisfy enum value set: [PROVISIONAL, PERPETUAL]"));
                }
            }
            let key_fingerprint = errors.string(obj, "KeyFingerprint", true);
            let client_token = errors.string(obj, "ClientToken", true);
            if let Some(t) = &client_token {
                let n = t.chars().count();
                if n > 2048 {
                    errors.push(format!("Value of length {n} at 'ClientToken' failed to satisfy constraint: Member must have length less than or equal to 2048"));
                } else if t.is_empty() || t.chars().any(char::is_whitespace) {
                    errors.push(format!("Value '{t}' at 'ClientToken' failed to satisfy constraint: Member must satisfy regular expression pattern: \\S+"));
                }
            }
            let _ = errors.string(obj, "Beneficiary", false);
            let node_id = errors.string(obj, "NodeId", false);
            let entitlements = match obj.get("Entitlements") {
                None | Some(Value::Null) => {
                    errors.push("Value null at 'Entitlements' failed to satisfy constraint: Member must not be null".into());
                    None
                }
                Some(Value::Array(list)) => {
                    let mut out = Vec::new();
                    for (i, item) in list.iter().enumerate() {
                        let at = format!("Entitlements.{}.member", i + 1);
                        let Value::Object(e) = item else {
                            errors.push(format!(
                                "Value {} at '{at}' failed to satisfy constraint: Member must be a structure",
                                type_name(item)
                            ));
                            continue;
                        };
                        let name = member_string(&mut errors, e, "Name", &at, true);
                        let value = member_string(&mut errors, e, "Value", &at, false);
                        let unit = member_string(&mut errors, e, "Unit", &at, true);
                        if let Some(u) = &unit {
                            if !UNITS.contains(&u.as_str()) {
                                errors.push(format!("Value '{u}' at '{at}.Unit' failed to satisfy constraint: Member must satisfy enum value set: [{}]", UNITS.join(", ")));
                            }
                        }
                        if let (Some(name), Some(unit)) = (name, unit) {
                            out.push(Requested { name, value, unit });
                        }
                    }
                    Some(out)
                }
                Some(other) => {
                    errors.push(format!(
                        "Value {} at 'Entitlements' failed to satisfy constraint: Member must be a list",
                        type_name(other)
                    ));
                    None
                }
            };
            let canonical = json!({
                "ProductSKU": obj.get("ProductSKU"),
                "CheckoutType": obj.get("CheckoutType"),
                "KeyFingerprint": obj.get("KeyFingerprint"),
                "Entitlements": obj.get("Entitlements"),
                "Beneficiary": obj.get("Beneficiary"),
                "NodeId": obj.get("NodeId"),
            });
            let input = match (
                product_sku,
                checkout_type,
                key_fingerprint,
                entitlements,
                client_token,
            ) {
                (Some(p), Some(t), Some(k), Some(e), Some(c)) => Some(Input::Checkout(Checkout {
                    product_sku: p,
                    checkout_type: t,
                    key_fingerprint: k,
                    entitlements: e,
                    client_token: c,
                    node_id,
                    canonical,
                })),
                _ => None,
            };
            errors.finish(input)
        }
        Op::CheckInLicense => {
            let token = errors.string(obj, "LicenseConsumptionToken", true);
            let _ = errors.string(obj, "Beneficiary", false);
            errors.finish(token.map(|token| Input::CheckIn { token }))
        }
        Op::ExtendLicenseConsumption => {
            let token = errors.string(obj, "LicenseConsumptionToken", true);
            let dry_run = match obj.get("DryRun") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(other) => {
                    errors.push(format!(
                        "Value {} at 'DryRun' failed to satisfy constraint: Member must be a boolean",
                        type_name(other)
                    ));
                    false
                }
            };
            errors.finish(token.map(|token| Input::Extend { token, dry_run }))
        }
        Op::GetLicenseUsage => {
            let arn = errors.string(obj, "LicenseArn", true);
            if let Some(a) = &arn {
                let n = a.chars().count();
                if n > 2048 {
                    errors.push(format!("Value of length {n} at 'LicenseArn' failed to satisfy constraint: Member must have length less than or equal to 2048"));
                } else if !is_arn(a) {
                    errors.push(format!("Value '{a}' at 'LicenseArn' failed to satisfy constraint: Member must satisfy regular expression pattern: ^arn:aws[a-zA-Z-]*:[A-Za-z0-9][A-Za-z0-9_/.-]{{0,62}}:[A-Za-z0-9_/.-]{{0,63}}:[A-Za-z0-9_/.-]{{0,63}}:[A-Za-z0-9][A-Za-z0-9:_/+=,@.-]{{0,1023}}$"));
                }
            }
            errors.finish(arn.map(|arn| Input::Usage { arn }))
        }
    }
}

/// A string member of a nested structure, named `at.member` in messages.
fn member_string(
    errors: &mut Errors,
    obj: &Map<String, Value>,
    member: &str,
    at: &str,
    required: bool,
) -> Option<String> {
    string_member(
        obj,
        member,
        &format!("{at}.{member}"),
        required,
        &mut errors.0,
    )
}

/// One checkout: the counted values it holds, until it is checked in or expires.
struct Consumption {
    /// (entitlement index, units held).
    held: Vec<(usize, u64)>,
    expires: SystemTime,
    checked_in: bool,
}

#[derive(Default)]
struct Book {
    consumptions: Vec<Consumption>,
    /// Every token a consumption was given (checkout and extensions), to its index.
    tokens: HashMap<String, usize>,
    /// ClientToken -> (the request's modelled members, consumption, the answer).
    client_tokens: HashMap<String, (Value, usize, Value)>,
}

/// What a call did to the seat book, for the `--record` line (whether its answer arrives or
/// not).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effect {
    /// The call changed the book: a checkout took its units, an extension pushed the expiry,
    /// a check-in returned the units.
    pub processed: bool,
    /// A checkout answered again from its ClientToken (nothing more held).
    pub replayed: bool,
    /// The consumption token the book issued for this call (checkout or extension).
    pub issued_token: Option<String>,
}

/// The license and its consumptions.
pub struct License {
    pub config: LicenseConfig,
    pub arn: String,
    revoked: AtomicBool,
    book: Mutex<Book>,
    /// Valid calls per operation, for the faults' `@AFTER` / `*COUNT`.
    calls: [AtomicU64; 4],
}

impl Default for License {
    fn default() -> Self {
        License::new(LicenseConfig::default())
    }
}

impl License {
    pub fn new(config: LicenseConfig) -> License {
        License {
            arn: license_arn(&config.product_sku),
            config,
            revoked: AtomicBool::new(false),
            book: Mutex::new(Book::default()),
            calls: Default::default(),
        }
    }

    /// Revokes the license (SIGUSR1): later checkouts get `NoEntitlementsAllowedException`,
    /// extensions and check-ins of existing consumptions `ResourceNotFoundException`.
    pub fn revoke(&self) {
        self.revoked.store(true, Ordering::SeqCst);
    }

    pub fn is_revoked(&self) -> bool {
        self.revoked.load(Ordering::SeqCst)
    }

    /// Counts one more valid call of `op` and returns the `--license-fault` that applies to
    /// it, if any (the first listed one whose window holds it).
    pub fn take_fault(&self, op: Op) -> Option<LicenseFault> {
        let n = self.calls[op.index()].fetch_add(1, Ordering::SeqCst) + 1;
        self.config
            .faults
            .iter()
            .find(|f| f.op == op && f.applies(n))
            .map(|f| f.fault)
    }

    fn live(&self, c: &Consumption, now: SystemTime) -> bool {
        !c.checked_in && now < c.expires && !self.is_revoked()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Units of entitlement `index` the live consumptions hold.
    fn in_use(&self, book: &Book, index: usize, now: SystemTime) -> u64 {
        book.consumptions
            .iter()
            .filter(|c| self.live(c, now))
            .flat_map(|c| c.held.iter())
            .filter(|(i, _)| *i == index)
            .map(|(_, v)| *v)
            .sum()
    }

    /// Units each counted entitlement's live consumptions hold at `now`, by name.
    pub fn held(&self, now: SystemTime) -> Map<String, Value> {
        let book = self.lock();
        self.config
            .entitlements
            .iter()
            .enumerate()
            .filter(|(_, e)| e.max.is_some())
            .map(|(i, e)| (e.name.clone(), json!(self.in_use(&book, i, now))))
            .collect()
    }

    /// Runs a validated call at AWS's time `now`; `key` signs the checkout's `SignedToken`.
    /// `effect` says what it did to the book.
    pub fn execute(
        &self,
        input: Input,
        now: SystemTime,
        key: &KeyPair,
        effect: &mut Effect,
    ) -> Result<Value, LmError> {
        match input {
            Input::Checkout(req) => self.checkout(req, now, key, effect),
            Input::CheckIn { token } => {
                let mut book = self.lock();
                let index = self.live_consumption(&book, &token, now)?;
                book.consumptions[index].checked_in = true;
                effect.processed = true;
                Ok(json!({}))
            }
            Input::Extend { token, dry_run } => {
                let mut book = self.lock();
                let index = self.live_consumption(&book, &token, now)?;
                if dry_run {
                    let expires = book.consumptions[index].expires;
                    return Ok(json!({
                        "LicenseConsumptionToken": token,
                        "Expiration": rfc3339(expires),
                    }));
                }
                let expires = now + self.config.consumption_ttl;
                book.consumptions[index].expires = expires;
                let fresh = random_hex::<16>();
                book.tokens.insert(fresh.clone(), index);
                if self.config.retire_superseded_tokens {
                    // Only the newest token names the consumption: the one sent is now as
                    // unknown as a token never issued.
                    book.tokens.remove(&token);
                }
                effect.processed = true;
                effect.issued_token = Some(fresh.clone());
                Ok(json!({
                    "LicenseConsumptionToken": fresh,
                    "Expiration": rfc3339(expires),
                }))
            }
            Input::Usage { arn } => {
                if arn != self.arn || !self.config.licensed {
                    return Err(lm_error(
                        400,
                        "InvalidParameterValueException",
                        format!("License {arn} is not a license of this account."),
                    ));
                }
                let book = self.lock();
                let usages: Vec<Value> = self
                    .config
                    .entitlements
                    .iter()
                    .enumerate()
                    .map(|(i, e)| {
                        let mut u = json!({
                            "Name": e.name,
                            "ConsumedValue": self.in_use(&book, i, now).to_string(),
                            "Unit": e.unit,
                        });
                        if let Some(m) = e.max {
                            u["MaxCount"] = json!(m.to_string());
                        }
                        u
                    })
                    .collect();
                Ok(json!({"LicenseUsage": {"EntitlementUsages": usages}}))
            }
        }
    }

    /// The consumption a token names, if it is live.
    fn live_consumption(
        &self,
        book: &Book,
        token: &str,
        now: SystemTime,
    ) -> Result<usize, LmError> {
        match book.tokens.get(token) {
            Some(&i) if self.live(&book.consumptions[i], now) => Ok(i),
            Some(&i) => Err(not_found(format!(
                "License consumption {token} is {}.",
                if self.is_revoked() {
                    "no longer valid: the license was revoked"
                } else if book.consumptions[i].checked_in {
                    "checked in"
                } else {
                    "expired"
                }
            ))),
            None => Err(not_found(format!("License consumption {token} not found."))),
        }
    }

    fn checkout(
        &self,
        req: Checkout,
        now: SystemTime,
        key: &KeyPair,
        effect: &mut Effect,
    ) -> Result<Value, LmError> {
        if req.key_fingerprint != ISSUER_FINGERPRINT {
            return Err(validation(format!(
                "KeyFingerprint {} is not a known issuer's key fingerprint (AWS Marketplace's is {ISSUER_FINGERPRINT}).",
                req.key_fingerprint
            )));
        }
        if req.checkout_type != "PROVISIONAL" {
            return Err(validation(format!(
                "CheckoutType {} is not allowed for ProductSKU {}: AWS Marketplace container licenses are checked out PROVISIONAL.",
                req.checkout_type, req.product_sku
            )));
        }
        if req.entitlements.is_empty() {
            return Err(validation(
                "Entitlements must name at least one entitlement.",
            ));
        }
        let mut book = self.lock();
        // A retry of a checkout whose consumption is live gets the same answer.
        if let Some((canonical, index, answer)) = book.client_tokens.get(&req.client_token) {
            if self.live(&book.consumptions[*index], now) {
                if *canonical == req.canonical {
                    effect.replayed = true;
                    return Ok(answer.clone());
                }
                return Err(validation(format!(
                    "ClientToken {} was already used with a different request.",
                    req.client_token
                )));
            }
        }
        let sku = &req.product_sku;
        if !self.config.licensed || self.is_revoked() || *sku != self.config.product_sku {
            return Err(not_allowed(format!(
                "No entitlements found for ProductSKU {sku}."
            )));
        }
        let mut held: Vec<(usize, u64)> = Vec::new();
        for r in &req.entitlements {
            let Some(index) = self
                .config
                .entitlements
                .iter()
                .position(|e| e.name == r.name)
            else {
                return Err(not_allowed(format!(
                    "No entitlements allowed: ProductSKU {sku} has no entitlement {}.",
                    r.name
                )));
            };
            let e = &self.config.entitlements[index];
            if held.iter().any(|(i, _)| *i == index) {
                return Err(validation(format!(
                    "Entitlements names {} more than once.",
                    r.name
                )));
            }
            if r.unit != e.unit {
                return Err(not_allowed(format!(
                    "No entitlements allowed: {} is in unit {}, not {}.",
                    r.name, e.unit, r.unit
                )));
            }
            let Some(max) = e.max else {
                continue;
            };
            let want = r
                .value
                .as_deref()
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|v| *v >= 1)
                .ok_or_else(|| {
                    validation(format!(
                        "Entitlement {} ({}) needs an integer Value of at least 1, got {}.",
                        r.name,
                        r.unit,
                        r.value
                            .as_deref()
                            .map_or("none".to_string(), |v| format!("{v:?}"))
                    ))
                })?;
            let used = self.in_use(&book, index, now);
            let free = max.saturating_sub(used);
            if want > free {
                return Err(not_allowed(format!(
                    "No entitlements allowed: {} asks for {want} {} but {used} of {max} seats in use ({free} free).",
                    r.name, r.unit
                )));
            }
            held.push((index, want));
        }
        let expires = now + self.config.consumption_ttl;
        let token = random_hex::<16>();
        let index = book.consumptions.len();
        book.consumptions.push(Consumption {
            held,
            expires,
            checked_in: false,
        });
        book.tokens.insert(token.clone(), index);
        let allowed: Vec<Value> = req
            .entitlements
            .iter()
            .map(|r| {
                let mut v = json!({"Name": r.name, "Unit": r.unit});
                if let Some(value) = &r.value {
                    v["Value"] = json!(value);
                }
                v
            })
            .collect();
        let signed_token = self.signed_token(&req, &token, &allowed, now, expires, key)?;
        let mut answer = json!({
            "CheckoutType": req.checkout_type,
            "LicenseConsumptionToken": token,
            "EntitlementsAllowed": allowed,
            "SignedToken": signed_token,
            "IssuedAt": iso_local_seconds(now),
            "Expiration": iso_local_seconds(expires),
            "LicenseArn": self.arn,
        });
        if let Some(node) = &req.node_id {
            answer["NodeId"] = json!(node);
        }
        book.client_tokens.insert(
            req.client_token.clone(),
            (req.canonical, index, answer.clone()),
        );
        effect.processed = true;
        effect.issued_token = Some(token);
        Ok(answer)
    }

    /// The checkout's `SignedToken`: a PS384 JWT (`JWT_PS384`) of the checkout, signed with the
    /// emulator's first key version, padded to about 4.2 KB as AWS's are (the model's minimum
    /// is 4096 characters).
    fn signed_token(
        &self,
        req: &Checkout,
        token: &str,
        allowed: &[Value],
        now: SystemTime,
        expires: SystemTime,
        key: &KeyPair,
    ) -> Result<String, LmError> {
        let mut claims = json!({
            "iss": format!("aws:{ISSUER_ACCOUNT}:AWS/Marketplace"),
            "keyFingerprint": ISSUER_FINGERPRINT,
            "licenseArn": self.arn,
            "productSKU": req.product_sku,
            "checkoutType": req.checkout_type,
            "licenseConsumptionToken": token,
            "entitlementsAllowed": allowed,
            "nodeId": req.node_id,
            "iat": unix_secs(now),
            "exp": unix_secs(expires),
        });
        let sign = |claims: &Value| {
            crate::jwt::sign_ps384(claims, key)
                .map_err(|e| lm_error(500, "ServerInternalException", e))
        };
        let first = sign(&claims)?;
        // base64url grows 4/3: pad the claims so the token lands at SIGNED_TOKEN_LENGTH.
        let short = SIGNED_TOKEN_LENGTH.saturating_sub(first.len());
        let pad = (short * 3 / 4).saturating_sub(16);
        claims["emulatorPadding"] = json!("P".repeat(pad));
        sign(&claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entitlement_specs() {
        assert_eq!(
            Entitlement::parse("Basic").unwrap(),
            Entitlement {
                name: "Basic".into(),
                max: None,
                unit: "None"
            }
        );
        assert_eq!(Entitlement::parse("Seats=5").unwrap().max, Some(5));
        let e = Entitlement::parse("Data=10:Gigabytes").unwrap();
        assert_eq!((e.max, e.unit), (Some(10), "Gigabytes"));
        for bad in [
            "",
            "=5",
            "Seats=0",
            "Seats=x",
            "Seats=5:None",
            "Seats=5:Parsecs",
        ] {
            assert!(Entitlement::parse(bad).is_err(), "{bad}");
        }
    }

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

    #[test]
    fn arns() {
        let arn = license_arn(DEFAULT_PRODUCT_SKU);
        assert!(is_arn(&arn), "{arn}");
        assert_eq!(
            arn.len(),
            "arn:aws:license-manager::294406891311:license:l-".len() + 32
        );
        assert!(!is_arn("arn:aws:license-manager"));
        assert!(!is_arn("not-an-arn"));
        assert!(is_arn("arn:aws:license-manager::123456789012:license:l-0"));
    }
}
