//! Owns what a pinned build compiled in (build.rs): the product code and key ring, and the
//! Metering endpoint, extra CA certificates and token age the seller allows.

use std::fmt::Write as _;
use std::time::Duration;

use mpgate_proof::{decoding_key, fingerprint};

/// Written by build.rs from the `MPGATE_PIN_*` variables.
mod compiled {
    include!(concat!(env!("OUT_DIR"), "/pinned.rs"));
}

/// A runtime setting a pinned build refuses; always exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("this mpgate build is pinned (see 'mpgate --version'): unset {0}; a pinned build takes its product code, keys, endpoint and token age only from the build, and never starts a workload unverified")]
pub struct Refused(pub String);

/// The product code compiled into a pinned build; `None` for an ordinary build.
pub fn product_code() -> Option<&'static str> {
    compiled::PRODUCT_CODE
}

/// Whether this build is pinned.
pub fn is_pinned() -> bool {
    product_code().is_some()
}

/// The pinned key ring: (version, PEM), ascending.
pub fn keys() -> &'static [(i32, &'static str)] {
    compiled::KEYS
}

/// The one Metering endpoint a pinned build calls, if the seller named one; otherwise the
/// SDK's own rules give it from the region.
pub fn endpoint_url() -> Option<&'static str> {
    compiled::ENDPOINT_URL
}

/// CA certificates a pinned build trusts beside the built-in roots (a TLS-inspecting proxy's).
pub fn ca_pem() -> Option<&'static str> {
    compiled::CA_PEM
}

/// The oldest `iat` a pinned build accepts, in the gate and in `mpgate verify`.
pub fn max_token_age() -> Duration {
    Duration::from_secs(compiled::MAX_TOKEN_AGE_SECS)
}

/// What `mpgate --version` adds for a pinned build: everything pinned, with fingerprints a
/// seller can recompute.
pub fn describe() -> Option<String> {
    let code = product_code()?;
    let mut text = format!("pinned product code: {code}\n");
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
    if let Some(pem) = ca_pem() {
        // As `sha256sum` prints it for the file given as MPGATE_PIN_CA_FILE.
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, pem.as_bytes());
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let _ = writeln!(
            text,
            "pinned extra CA certificates: SHA256:{hex} (of the PEM file)"
        );
    }
    let _ = writeln!(
        text,
        "pinned maximum token age: {}s",
        max_token_age().as_secs()
    );
    Some(text)
}
