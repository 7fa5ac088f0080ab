//! Raw License Manager calls to the emulator, signed for real (signing name
//! `license-manager`), for tests that look at the wire: status, headers, JSON body.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{json, Value};

use crate::sigv4::{signed_request, Signing};

/// The key fingerprint of AWS Marketplace's license issuer (CheckoutLicense's
/// `KeyFingerprint`).
pub const ISSUER_FINGERPRINT: &str = "aws:294406891311:AWS/Marketplace:issuer-fingerprint";
/// Bound on reading one answer.
pub const IO_TIMEOUT: Duration = Duration::from_secs(15);

/// An answer as read off the wire.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (fails the test if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The error's `__type` (`None` for a success).
    pub fn error_type(&self) -> Option<String> {
        self.json()["__type"].as_str().map(str::to_string)
    }

    /// Asserts a License Manager error: status, `__type`, `x-amzn-errortype` and a `Message`.
    pub fn expect_error(&self, status: u16, error_type: &str, what: &str) -> &Reply {
        let body = self.json();
        assert_eq!(
            (self.status, body["__type"].as_str()),
            (status, Some(error_type)),
            "{what}: {self:?} {body}"
        );
        assert_eq!(self.header("x-amzn-errortype"), Some(error_type), "{what}");
        assert!(body["Message"].is_string(), "{what}: no Message in {body}");
        self
    }

    /// Asserts a 200 and returns the body.
    pub fn ok(&self, what: &str) -> Value {
        assert_eq!(
            self.status,
            200,
            "{what}: {self:?} {}",
            String::from_utf8_lossy(&self.body)
        );
        self.json()
    }
}

/// The raw HTTP/1.1 bytes of License Manager call `op` with `body`, signed with `signing`
/// (`Host: localhost`, `Connection: close`).
pub fn request(op: &str, body: &str, signing: &Signing) -> Vec<u8> {
    signed_request(&format!("AWSLicenseManager.{op}"), body, signing)
}

/// Sends `request` to `addr` and reads the whole answer (bounded by `timeout`).
pub fn send(addr: &str, request: &[u8], timeout: Duration) -> std::io::Result<Reply> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(request)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("no HTTP head in {:?}", String::from_utf8_lossy(&raw)),
            )
        })?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, head.clone()))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(Reply {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    })
}

/// Calls `op` with `body`, signed with the test pair for License Manager.
pub fn call(addr: &str, op: &str, body: &Value) -> Reply {
    send(
        addr,
        &request(op, &body.to_string(), &Signing::license_manager()),
        IO_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{op} to {addr}: {e}"))
}

/// A CheckoutLicense body: PROVISIONAL, AWS Marketplace's fingerprint, `entitlements`.
pub fn checkout_body(product_sku: &str, entitlements: Value, client_token: &str) -> Value {
    json!({
        "ProductSKU": product_sku,
        "CheckoutType": "PROVISIONAL",
        "KeyFingerprint": ISSUER_FINGERPRINT,
        "Entitlements": entitlements,
        "ClientToken": client_token,
    })
}

/// `ConsumedValue` of entitlement `name` in a GetLicenseUsage answer.
pub fn consumed(usage: &Value, name: &str) -> Option<String> {
    usage["LicenseUsage"]["EntitlementUsages"]
        .as_array()?
        .iter()
        .find(|u| u["Name"] == name)?["ConsumedValue"]
        .as_str()
        .map(str::to_string)
}
