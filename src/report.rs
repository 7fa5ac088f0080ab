//! Owns what mpgate leaves behind for others: the JSON result file and the termination log.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// Kubernetes reads at most 4096 bytes of a termination message.
const MAX_TERMINATION_MESSAGE: usize = 4096;
const DEFAULT_TERMINATION_LOG: &str = "/dev/termination-log";

/// The result file's contents.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report<'a> {
    pub entitled: bool,
    pub outcome: &'a str,
    pub exit_code: u8,
    /// `hourly` or `contract` (`null` when the configuration was refused).
    pub pricing: Option<&'a str>,
    pub product_code: Option<&'a str>,
    pub public_key_version: Option<i32>,
    pub nonce: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product_sku: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub license_arn: Option<&'a str>,
    /// The allowed entitlements, `[{"Name", "Unit", "Value"}]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entitlements: Option<&'a serde_json::Value>,
    /// When the checkout expires (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiration: Option<&'a str>,
    /// Whether the seat was given back (`--seat check` at once, `hold` at the end).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checked_in: Option<bool>,
    /// When the entitlement was verified: present exactly when `entitled` is true.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified_at: Option<String>,
    pub attempts: u32,
    /// `x-amzn-RequestId` of the last answer, when there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub warnings: &'a [String],
    pub message: &'a str,
}

/// Where reports go; known before the rest of the configuration so config errors are reported too.
#[derive(Debug, Clone)]
pub struct Reporter {
    pub result_file: Option<PathBuf>,
    /// `None`: the Kubernetes default, used only if it exists and is writable.
    pub termination_log: Option<PathBuf>,
}

impl Reporter {
    /// Writes the result file atomically (a reader never sees half a file).
    pub fn write_result(&self, report: &Report) -> std::io::Result<()> {
        let Some(path) = &self.result_file else {
            return Ok(());
        };
        let mut json = serde_json::to_vec_pretty(report).map_err(std::io::Error::other)?;
        json.push(b'\n');
        write_atomically(path, &json)
    }

    /// Writes the one-line failure reason for `kubectl describe` / ECS stopped reasons.
    pub fn write_termination_log(&self, message: &str) {
        let line: String = format!("mpgate: {message}")
            .chars()
            .take(MAX_TERMINATION_MESSAGE - 1)
            .collect();
        let result = match &self.termination_log {
            Some(path) => std::fs::write(path, format!("{line}\n")),
            // The default exists only inside Kubernetes; never create it elsewhere.
            None => std::fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(DEFAULT_TERMINATION_LOG)
                .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes())),
        };
        if let (Err(e), Some(path)) = (result, &self.termination_log) {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the termination log");
        }
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("the path names no file"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Now, as RFC 3339 (`2026-11-23T09:26:53Z`).
pub fn now_rfc3339() -> Option<String> {
    aws_smithy_types::DateTime::from(std::time::SystemTime::now())
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .ok()
}
