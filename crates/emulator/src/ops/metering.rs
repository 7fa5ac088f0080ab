//! Owns AWS Marketplace Metering: RegisterUsage, from its input's shape to its token.

use hyper::body::Bytes;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use serde_json::{json, Map, Value};

use std::ops::ControlFlow::{Break, Continue};

use crate::answer::{
    base_response, error_answer, html_page, settle, Outcome, Step, CONTENT_TYPE_JSON,
};
use crate::credentials::Credential;
use crate::fault::{Fault, ServiceError};
use crate::jwt;
use crate::keys::VersionKey;
use crate::log::error;
use crate::ops::validation::{self, must_not_be_null, Rejected};
use crate::record::{RecordLine, RATE_LIMITED};
use crate::shared::Shared;

/// The target prefix of Metering's operations.
pub const TARGET_PREFIX: &str = "AWSMPMeteringService.";
/// Metering's SigV4 signing name.
pub const SIGNING_NAME: &str = "aws-marketplace";

/// What Metering alone is configured with.
pub struct Metering {
    pub product_code: String,
    /// `token-wrong-key`: the key that signs instead of the served one.
    pub wrong_key: Option<aws_lc_rs::rsa::KeyPair>,
    pub rotation_timestamp: Option<i64>,
    /// The key versions `rotation_timestamp` is sent for.
    pub expiring_key_versions: Vec<u32>,
}

/// The validated RegisterUsage input.
struct Input {
    product_code: String,
    public_key_version: i64,
    nonce: Option<String>,
}

/// Copies the members of a Metering request, as sent, into its record line.
pub(crate) fn note_members(obj: &Map<String, Value>, rec: &mut RecordLine) {
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

/// RegisterUsage, once the request is routed, of the right content type and signed by
/// `caller`: checks 5-9 of the crate's documentation, one function each.
pub(crate) fn register_usage(
    shared: &Shared,
    metering: &Metering,
    parsed: Result<Value, serde_json::Error>,
    caller: Option<&Credential>,
    rec: &mut RecordLine,
) -> Outcome {
    let steps = || {
        let input = input(parsed)?;
        refuse_caller(shared, caller)?;
        throttle(shared, rec)?;
        let fault = take_fault(shared, rec)?;
        let key = business_checks(shared, metering, &input)?;
        Continue(answer(shared, metering, &input, key, fault, rec))
    };
    settle(steps())
}

/// Check 5: the body's shape.
fn input(parsed: Result<Value, serde_json::Error>) -> Step<Input> {
    match validation::json_object(parsed).and_then(|obj| validate_body(&obj)) {
        Ok(input) => Continue(input),
        Err(Rejected(t, m)) => Break(error_answer(400, t, &m)),
    }
}

/// A string member of the request (at most 255 characters, at least 1 when `required`), with
/// AWS's validation messages for what is wrong.
fn string_member(
    obj: &Map<String, Value>,
    field: &str,
    required: bool,
    errors: &mut Vec<String>,
) -> Option<String> {
    let s = validation::string_member(obj, field, field, required, errors)?;
    let n = s.chars().count();
    if required && n < 1 {
        errors.push(format!("Value '' at '{field}' failed to satisfy constraint: Member must have length greater than or equal to 1"));
    } else if n > 255 {
        errors.push(format!("Value of length {n} at '{field}' failed to satisfy constraint: Member must have length less than or equal to 255"));
    }
    Some(s)
}

/// Check the body against the RegisterUsageRequest shape.
fn validate_body(obj: &Map<String, Value>) -> Result<Input, Rejected> {
    let mut errors = Vec::new();
    let product_code = string_member(obj, "ProductCode", true, &mut errors);
    let version = match obj.get("PublicKeyVersion") {
        None | Some(Value::Null) => {
            errors.push(must_not_be_null("PublicKeyVersion"));
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
            errors.push(format!("Value {} at 'PublicKeyVersion' failed to satisfy constraint: Member must be an integer", validation::type_name(other)));
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
        _ => Err(Rejected(
            "ValidationException",
            validation::validation_message(&errors),
        )),
    }
}

/// Check 6: what AWS answers a correctly signed call from `caller` before looking at the
/// product: an IAM user's long-term key is not an ECS task or EKS pod (unless
/// `--long-term-keys-are-tasks`), and a task calls the endpoint of its own region only.
fn refuse_caller(shared: &Shared, caller: Option<&Credential>) -> Step<()> {
    // RegisterUsage is signed: the front has verified who the caller is.
    if caller.is_some_and(|c| !c.is_temporary()) && !shared.callers.long_term_keys_are_tasks {
        return Break(service_error(Fault::PlatformNotSupported));
    }
    match &shared.callers.task_region {
        Some(task_region) if *task_region != shared.region => {
            Break(service_error(Fault::InvalidRegion))
        }
        _ => Continue(()),
    }
}

/// Check 7a: `--rate-limit`.
fn throttle(shared: &Shared, rec: &mut RecordLine) -> Step<()> {
    if shared.admit() {
        return Continue(());
    }
    rec.fault = RATE_LIMITED;
    let e = Fault::Throttle.service_error().unwrap_or(ServiceError {
        status: 400,
        error_type: "ThrottlingException",
        message: "Rate exceeded",
    });
    Break(error_answer(e.status, e.error_type, e.message))
}

/// Check 7b: the `--fault` (for the first `--fail-first` valid calls, or every call): a
/// fault that replaces the answer answers here; one that alters a success is returned.
fn take_fault(shared: &Shared, rec: &mut RecordLine) -> Step<Fault> {
    let fault = if shared.fault.is_connection_fault() {
        // Applied to connections by the listener; calls that get this far are answered.
        Fault::None
    } else if shared.take_fault() {
        shared.fault
    } else {
        Fault::None
    };
    if fault.service_error().is_some() {
        rec.fault = fault.name();
        return Break(service_error(fault));
    }
    if let Some(page) = html_page(fault) {
        rec.fault = fault.name();
        return Break(page);
    }
    match fault {
        Fault::Hang => {
            rec.fault = fault.name();
            Break(Outcome::Hang)
        }
        Fault::Drop => {
            rec.fault = fault.name();
            Break(Outcome::Drop)
        }
        _ => Continue(fault),
    }
}

/// Check 8: the product code and the key version asked for.
fn business_checks<'k>(
    shared: &'k Shared,
    metering: &Metering,
    input: &Input,
) -> Step<&'k VersionKey> {
    if input.product_code != metering.product_code {
        return Break(error_answer(
            400,
            "InvalidProductCodeException",
            "The product code passed does not match the product code used for publishing the product.",
        ));
    }
    match shared
        .keys
        .iter()
        .find(|k| i64::from(k.version) == input.public_key_version)
    {
        Some(key) => Continue(key),
        None => Break(error_answer(
            400,
            "InvalidPublicKeyVersionException",
            "Public Key version is invalid.",
        )),
    }
}

/// Check 9: success (maybe with a bad token, relabelled, or mangled on the wire).
fn answer(
    shared: &Shared,
    metering: &Metering,
    input: &Input,
    key: &VersionKey,
    fault: Fault,
    rec: &mut RecordLine,
) -> Outcome {
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
        wrong_key: metering.wrong_key.as_ref(),
    };
    if token_fault == Fault::TokenHtmlAnswer {
        let page = "<html><body><h1>Welcome</h1><p>Please log in to continue.</p></body></html>";
        return Outcome::Answer(base_response(200, "text/html", Bytes::from(page)), None);
    }
    let signature = match jwt::mint(&req, &signer, token_fault, shared.clock.now_secs()) {
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
    let mut body = Map::new();
    if let Some(s) = signature {
        body.insert("Signature".into(), Value::String(s));
        match metering.rotation_timestamp {
            Some(ts) if metering.expiring_key_versions.contains(&key.version) => {
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

/// A Metering service error (a `--fault`'s, or the caller model's).
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
        let Rejected(_, m) = v(r#"{"PublicKeyVersion":1}"#).err().unwrap();
        assert!(m.contains("'ProductCode'"), "{m}");
        let Rejected(_, m) = v(r#"{"ProductCode":"p","PublicKeyVersion":"1"}"#)
            .err()
            .unwrap();
        assert!(m.contains("'PublicKeyVersion'"), "{m}");
        let Rejected(_, m) = v(r#"{"ProductCode":"p","PublicKeyVersion":0}"#)
            .err()
            .unwrap();
        assert!(m.contains("'PublicKeyVersion'"), "{m}");
        let Rejected(_, m) = v(r#"{"ProductCode":"p","PublicKeyVersion":1.5}"#)
            .err()
            .unwrap();
        assert!(m.contains("'PublicKeyVersion'"), "{m}");
        let long = "n".repeat(256);
        let Rejected(_, m) = v(&format!(
            r#"{{"ProductCode":"p","PublicKeyVersion":1,"Nonce":"{long}"}}"#
        ))
        .err()
        .unwrap();
        assert!(m.contains("'Nonce'"), "{m}");
    }
}
