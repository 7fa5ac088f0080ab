//! Owns License Manager's input shapes: each operation's body, validated as AWS does.

use serde_json::{json, Map, Value};

use crate::ops::license::model::{validation, LmError, Op, UNITS};
use crate::ops::validation::{must_not_be_null, string_member, type_name, validation_message};

/// One entitlement a request names.
#[derive(Debug, Clone, PartialEq)]
pub struct Requested {
    pub(super) name: String,
    pub(super) value: Option<String>,
    pub(super) unit: String,
}

/// A validated CheckoutLicense request.
#[derive(Debug)]
pub struct Checkout {
    pub(super) product_sku: String,
    pub(super) checkout_type: String,
    pub(super) key_fingerprint: String,
    pub(super) entitlements: Vec<Requested>,
    pub(super) client_token: String,
    pub(super) node_id: Option<String>,
    /// The modelled members, for the ClientToken comparison.
    pub(super) canonical: Value,
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
pub(super) struct Errors(Vec<String>);

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

/// The model's `Arn` pattern, `^arn:aws[a-zA-Z-]*:[A-Za-z0-9][A-Za-z0-9_/.-]{0,62}:
/// [A-Za-z0-9_/.-]{0,63}:[A-Za-z0-9_/.-]{0,63}:[A-Za-z0-9][A-Za-z0-9:_/+=,@.-]{0,1023}$`.
pub(super) fn is_arn(s: &str) -> bool {
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
                    errors.push(must_not_be_null("Entitlements"));
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
pub(super) fn member_string(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::license::model::{license_arn, DEFAULT_PRODUCT_SKU};

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
