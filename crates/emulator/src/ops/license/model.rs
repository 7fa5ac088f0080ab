//! Owns License Manager's vocabulary: its operations, entitlements, units and errors.

use std::time::Duration;

use serde_json::{json, Value};

/// The target prefix of License Manager's operations.
pub const TARGET_PREFIX: &str = "AWSLicenseManager.";
/// License Manager's SigV4 signing name.
pub const SIGNING_NAME: &str = "license-manager";
/// The key fingerprint of AWS Marketplace's license issuer.
pub const ISSUER_FINGERPRINT: &str = "aws:294406891311:AWS/Marketplace:issuer-fingerprint";
/// The AWS Marketplace account that issues the licenses.
pub(super) const ISSUER_ACCOUNT: &str = "294406891311";
pub const DEFAULT_PRODUCT_SKU: &str = "prod-sku-demo1234567890";
/// `--consumption-ttl` default.
pub const DEFAULT_CONSUMPTION_TTL: Duration = Duration::from_secs(3600);
/// The length `SignedToken` is padded to (the model's minimum is 4096).
pub(super) const SIGNED_TOKEN_LENGTH: usize = 4200;

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

    pub(super) fn index(self) -> usize {
        ALL_OPS.iter().position(|o| *o == self).unwrap_or(0)
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

pub(super) fn lm_error(
    status: u16,
    error_type: &'static str,
    message: impl Into<String>,
) -> LmError {
    LmError {
        status,
        error_type,
        message: message.into(),
        location: None,
    }
}

pub(super) fn validation(message: impl Into<String>) -> LmError {
    lm_error(400, "ValidationException", message)
}

pub(super) fn not_allowed(message: impl Into<String>) -> LmError {
    lm_error(400, "NoEntitlementsAllowedException", message)
}

pub(super) fn not_found(message: impl Into<String>) -> LmError {
    lm_error(400, "ResourceNotFoundException", message)
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
}
