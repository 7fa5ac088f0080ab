//! Owns what mpgate leaves behind for others: the JSON result file and the termination log.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::outcome::Outcome;

/// Kubernetes reads at most 4096 bytes of a termination message.
const MAX_TERMINATION_MESSAGE: usize = 4096;
const DEFAULT_TERMINATION_LOG: &str = "/dev/termination-log";

/// The result file's contents.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report<'a> {
    pub entitled: bool,
    pub outcome: Outcome,
    pub exit_code: u8,
    /// `hourly`, `contract` or `usage` (`null` when the configuration was refused).
    pub pricing: Option<&'a str>,
    /// Whether this build is pinned: an unpinned one trusts its environment.
    pub pinned: bool,
    pub product_code: Option<&'a str>,
    pub public_key_version: Option<i32>,
    pub nonce: Option<&'a str>,
    /// Init mode: the salt that derives `nonce` for this boot and pod (`mpgate verify
    /// --result-file` derives it again where it runs). Absent in entrypoint mode, whose nonce
    /// is bound to the process mpgate exec'd.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub salt: Option<&'a str>,
    /// The kernel's boot id where the check ran (hourly pricing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<&'a str>,
    /// The pod's UID from `MPGATE_POD_UID`, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<&'a str>,
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
    /// Usage pricing: `{"dimensions", "meteringHourSeconds", "start"}` (the start's
    /// MeterUsage record).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<serde_json::Value>,
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
        let bytes = format!("{line}\n").into_bytes();
        let result = match &self.termination_log {
            Some(path) if path.as_path() != Path::new(DEFAULT_TERMINATION_LOG) => {
                match write_atomically(path, &bytes) {
                    // A mount point (a custom terminationMessagePath is bind-mounted as
                    // the default is) cannot be renamed over: written in place instead.
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => write_in_place(path, &bytes),
                    other => other,
                }
            }
            // The default exists only inside Kubernetes; never create it elsewhere.
            _ => write_in_place(Path::new(DEFAULT_TERMINATION_LOG), &bytes),
        };
        if let (Err(e), Some(path)) = (result, &self.termination_log) {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the termination log");
        }
    }
}

/// Writes `bytes` to a temporary file beside `path`, then renames it over `path`. The
/// temporary name is random and created exclusively without following a symlink, so a
/// process that shares the directory cannot predict it or plant a link there; the rename
/// replaces whatever `path` is (a symlink included) and never writes through it.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("the path names no file"))?;
    let mut attempts = 0;
    let (tmp, mut file) = loop {
        let random = crate::nonce::generate().map_err(std::io::Error::other)?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".{}.tmp", &random[..16]));
        let tmp = dir.join(tmp_name);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
        {
            Ok(file) => break (tmp, file),
            // Taken (64 random bits: only by someone planting names): another one.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempts < 3 => {
                attempts += 1;
            }
            Err(e) => return Err(e),
        }
    };
    let result = (|| {
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes `bytes` over an existing regular file at `path`, which is not created, and not
/// followed when it is a symlink. A FIFO or a device is refused (opened without blocking,
/// then checked before it is truncated).
fn write_in_place(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    if !file.metadata()?.file_type().is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    file.set_len(0)?;
    file.write_all(bytes)
}

/// Now, as RFC 3339 (`2026-11-23T09:26:53Z`).
pub fn now_rfc3339() -> Option<String> {
    aws_smithy_types::DateTime::from(std::time::SystemTime::now())
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mpgate-report-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// The temporary name a process beside the gate could once predict (pid-based): a symlink
    /// planted there must not be written through, nor end up as the result file.
    #[test]
    fn a_planted_temporary_name_is_never_written_through() {
        let dir = scratch("planted");
        let victim = dir.join("victim");
        std::fs::write(&victim, "root only\n").unwrap();
        let planted = dir.join(format!(".result.json.{}.tmp", std::process::id()));
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        let target = dir.join("result.json");
        write_atomically(&target, b"{}\n").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root only\n");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "{}\n");
        assert!(!std::fs::symlink_metadata(&target).unwrap().is_symlink());
        // Only the planted link and the two files: no temporary left behind.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn in_place_refuses_a_symlink_a_fifo_and_a_missing_file() {
        let dir = scratch("in-place");
        let victim = dir.join("victim");
        std::fs::write(&victim, "root only\n").unwrap();
        let link = dir.join("link");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert!(write_in_place(&link, b"x\n").is_err());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root only\n");
        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(write_in_place(&fifo, b"x\n").is_err());
        assert!(write_in_place(&dir.join("missing"), b"x\n").is_err());
        assert!(!dir.join("missing").exists());
        write_in_place(&victim, b"x\n").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "x\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
