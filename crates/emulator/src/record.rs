//! Owns the `--record` file: one JSON line per call (or faulted connection), numbered.

use std::fs::File;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::log::error;

/// One line of the `--record` file (and of the request log on stderr).
#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RecordLine {
    pub call: u64,
    /// When the request (or connection) arrived, in milliseconds since the Unix epoch.
    pub received_at_ms: u64,
    pub target: Option<String>,
    pub product_code: Value,
    pub public_key_version: Value,
    pub nonce: Value,
    pub credential_scope: Option<String>,
    pub fault: &'static str,
    pub status: Option<u16>,
    pub error_type: Option<&'static str>,
    /// The answer's `x-amzn-RequestId` (`null` when nothing, or a proxy's page, was answered).
    pub request_id: Option<String>,
    /// A License Manager call's members (its line then has no Metering members).
    #[serde(skip)]
    pub license: Option<LicenseRecord>,
    /// Another family's members (MeterUsage's), in place of `publicKeyVersion` and `nonce`.
    #[serde(skip)]
    pub members: Option<Map<String, Value>>,
}

/// The members of a License Manager request, as sent; absent ones are left out of the line.
#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LicenseRecord {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product_sku: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_token: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub license_consumption_token: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entitlements: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkout_type: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_fingerprint: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub license_arn: Option<Value>,
    /// What the call did to the seat book, whether its answer arrived or not.
    pub processed: bool,
    pub replayed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued_token: Option<String>,
}

/// The `fault` a call throttled by `--rate-limit` is recorded with.
pub const RATE_LIMITED: &str = "rate-limit";

/// The record file and the call counter.
#[derive(Default)]
pub(crate) struct Recorder {
    file: Option<Mutex<File>>,
    calls: AtomicU64,
}

impl Recorder {
    pub fn new(file: Option<File>) -> Recorder {
        Recorder {
            file: file.map(Mutex::new),
            calls: AtomicU64::new(0),
        }
    }

    /// A line for the next call (or faulted connection), arriving now.
    pub fn next(&self) -> RecordLine {
        RecordLine {
            call: self.calls.fetch_add(1, Ordering::SeqCst) + 1,
            received_at_ms: now_ms(),
            ..RecordLine::default()
        }
    }

    /// Appends `rec` to the `--record` file (flushed); returns the JSON line. A License
    /// Manager call's line has its members instead of Metering's, and `held`: the units each
    /// counted entitlement holds right after the call (a test sees what is held at each call
    /// without a GetLicenseUsage of its own).
    pub fn write(&self, rec: &RecordLine, held: impl FnOnce() -> Map<String, Value>) -> String {
        let line = match &rec.license {
            None if rec.members.is_some() => {
                let mut v = serde_json::to_value(rec).unwrap_or_default();
                if let (Some(line), Some(members)) = (v.as_object_mut(), &rec.members) {
                    for k in ["publicKeyVersion", "nonce"] {
                        line.remove(k);
                    }
                    line.extend(members.clone());
                }
                v.to_string()
            }
            None => serde_json::to_string(rec).unwrap_or_else(|_| "{}".into()),
            Some(lm) => {
                let mut v = serde_json::to_value(rec).unwrap_or_default();
                if let (Some(line), Ok(Value::Object(members))) =
                    (v.as_object_mut(), serde_json::to_value(lm))
                {
                    for k in ["productCode", "publicKeyVersion", "nonce"] {
                        line.remove(k);
                    }
                    line.extend(members);
                    line.insert("held".into(), Value::Object(held()));
                }
                v.to_string()
            }
        };
        if let Some(file) = &self.file {
            if let Ok(mut f) = file.lock() {
                let res = f
                    .write_all(format!("{line}\n").as_bytes())
                    .and_then(|()| f.flush());
                if let Err(e) = res {
                    error(&format!("cannot write the record file: {e}"));
                }
            }
        }
        line
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
