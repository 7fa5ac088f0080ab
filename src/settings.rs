//! Owns reading one setting: the flag if given, else its environment variable, empty meaning unset.

use std::ffi::OsString;
use std::path::PathBuf;

/// A path setting (paths need not be UTF-8).
pub fn path_setting(
    flag: Option<&OsString>,
    var: &str,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Option<PathBuf> {
    flag.cloned()
        .or_else(|| env(var))
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// `30s`, `1500ms`: how durations are written in mpgate's messages and flags.
pub fn humantime(d: std::time::Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}
