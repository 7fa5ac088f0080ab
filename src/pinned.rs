//! Owns what a pinned build compiled in (build.rs): an hourly product's code and key ring, a
//! contract product's SKU and entitlements, or a usage product's code and dimensions, and the
//! endpoint, extra CA certificates and token age the seller allows.

use std::fmt::Write as _;
use std::time::Duration;

use mpgate_proof::{decoding_key, fingerprint};

/// Written by build.rs from the `MPGATE_PIN_*` variables.
mod compiled {
    include!(concat!(env!("OUT_DIR"), "/pinned.rs"));
}

/// A runtime setting a pinned build refuses; always exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("this mpgate build is pinned (see 'mpgate --version'): unset {0}; a pinned build takes what it checks (product, keys or license entitlements), the endpoint it calls and the CA certificates it trusts only from the build, and never starts a workload unverified")]
pub struct Refused(pub String);

/// The pricing model a pinned build pins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Product code and key ring: RegisterUsage and its token.
    Hourly,
    /// Product SKU and entitlements: a License Manager checkout.
    Contract,
    /// Product code and dimensions: MeterUsage (custom metering).
    Usage,
}

/// What this build pins; `None` for an ordinary build.
pub fn kind() -> Option<Kind> {
    if compiled::USAGE {
        Some(Kind::Usage)
    } else if compiled::PRODUCT_CODE.is_some() {
        Some(Kind::Hourly)
    } else if compiled::PRODUCT_SKU.is_some() {
        Some(Kind::Contract)
    } else {
        None
    }
}

/// Whether this build is pinned (either pricing model).
pub fn is_pinned() -> bool {
    kind().is_some()
}

/// The product code compiled into a pinned hourly or usage build.
pub fn product_code() -> Option<&'static str> {
    compiled::PRODUCT_CODE
}

/// The dimension API names a pinned usage build meters; empty for any other build.
pub fn dimensions() -> &'static [&'static str] {
    compiled::DIMENSIONS
}

/// The pinned key ring of an hourly build: (version, PEM), ascending.
pub fn keys() -> &'static [(i32, &'static str)] {
    compiled::KEYS
}

/// The one Metering endpoint a pinned hourly build calls, if the seller named one; otherwise
/// the SDK's own rules give it from the region.
pub fn endpoint_url() -> Option<&'static str> {
    compiled::ENDPOINT_URL
}

/// The product SKU compiled into a pinned contract build.
pub fn product_sku() -> Option<&'static str> {
    compiled::PRODUCT_SKU
}

/// The entitlement specs a pinned contract build checks out (`NAME`, `NAME=VALUE`,
/// `NAME=VALUE:UNIT`), as given at build time; empty for any other build.
pub fn entitlements() -> &'static [&'static str] {
    compiled::ENTITLEMENTS
}

/// The one License Manager endpoint a pinned contract build calls, if the seller named one;
/// otherwise the SDK's own rules give it from the region.
pub fn license_manager_endpoint_url() -> Option<&'static str> {
    compiled::LICENSE_MANAGER_ENDPOINT_URL
}

/// The one STS endpoint a pinned contract build calls with a license token, if the seller
/// named one; otherwise the SDK's own rules give it from the region.
pub fn sts_endpoint_url() -> Option<&'static str> {
    compiled::STS_ENDPOINT_URL
}

/// The seat mode a pinned contract build compiled in (`check` or `hold`), if the seller did.
pub fn seat() -> Option<&'static str> {
    compiled::SEAT
}

/// CA certificates a pinned build trusts beside the built-in roots (a TLS-inspecting proxy's).
pub fn ca_pem() -> Option<&'static str> {
    compiled::CA_PEM
}

/// The oldest `iat` a pinned hourly build accepts, in the gate and in `mpgate verify`.
pub fn max_token_age() -> Duration {
    Duration::from_secs(compiled::MAX_TOKEN_AGE_SECS)
}

/// What `mpgate --version` adds for a pinned build: everything pinned, with fingerprints a
/// seller can recompute.
pub fn describe() -> Option<String> {
    let mut text = String::new();
    match kind()? {
        Kind::Hourly => {
            let _ = writeln!(text, "pinned product code: {}", product_code()?);
            for (version, pem) in keys() {
                let print = decoding_key(pem.as_bytes())
                    .map(|key| fingerprint(&key))
                    .unwrap_or_else(|e| format!("UNUSABLE ({e})"));
                let _ = writeln!(text, "pinned key version {version}: {print}");
            }
            let _ = writeln!(
                text,
                "pinned endpoint: {}",
                endpoint_url().unwrap_or("the AWS Metering endpoint of the region (SDK rules)")
            );
        }
        Kind::Usage => {
            let _ = writeln!(text, "pinned pricing: usage (MeterUsage)");
            let _ = writeln!(text, "pinned product code: {}", product_code()?);
            let _ = writeln!(text, "pinned dimensions: {}", dimensions().join(","));
            let _ = writeln!(
                text,
                "pinned endpoint: {}",
                endpoint_url().unwrap_or("the AWS Metering endpoint of the region (SDK rules)")
            );
        }
        Kind::Contract => {
            let _ = writeln!(text, "pinned pricing: contract (AWS License Manager)");
            let _ = writeln!(text, "pinned product SKU: {}", product_sku()?);
            let _ = writeln!(text, "pinned entitlements: {}", entitlements().join(","));
            let _ = writeln!(
                text,
                "pinned License Manager endpoint: {}",
                license_manager_endpoint_url()
                    .unwrap_or("the AWS License Manager endpoint of the region (SDK rules)")
            );
            let _ = writeln!(
                text,
                "pinned STS endpoint (license token): {}",
                sts_endpoint_url().unwrap_or("the AWS STS endpoint of the region (SDK rules)")
            );
            if let Some(seat) = seat() {
                let _ = writeln!(text, "pinned seat: {seat}");
            }
        }
    }
    if let Some(pem) = ca_pem() {
        // As `sha256sum` prints it for the file given as MPGATE_PIN_CA_FILE.
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, pem.as_bytes());
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let _ = writeln!(
            text,
            "pinned extra CA certificates: SHA256:{hex} (of the PEM file)"
        );
    }
    if kind() == Some(Kind::Hourly) {
        let _ = writeln!(
            text,
            "pinned maximum token age: {}s",
            max_token_age().as_secs()
        );
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use aws_sdk_licensemanager::types::EntitlementDataUnit;

    /// build.rs checks `MPGATE_PIN_ENTITLEMENTS` with its own copy of License Manager's units.
    #[test]
    fn the_build_script_knows_the_units_the_sdk_knows() {
        let mut sdk = EntitlementDataUnit::values().to_vec();
        let mut build = super::compiled::ENTITLEMENT_UNITS.to_vec();
        sdk.sort_unstable();
        build.sort_unstable();
        assert_eq!(build, sdk);
    }
}
