//! Owns reading one setting: the flag if given, else its environment variable, empty meaning unset.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

/// The process environment, copied at the first lookup.
static ENVIRONMENT: OnceLock<Vec<(OsString, OsString)>> = OnceLock::new();

/// A variable of the process environment, as `std::env::var_os` reads it (the first entry of
/// that name). mpgate never changes its own environment, so it is copied once: each
/// `getenv` takes a lock, builds a C string and scans the whole environment, and a hand-over
/// looks up some 60 names (70 k instructions, most of them for variables that are not set).
pub fn var_os(name: &str) -> Option<OsString> {
    ENVIRONMENT
        .get_or_init(|| std::env::vars_os().collect())
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.clone())
}

/// A variable as `std::env::var(name).ok()` reads it: unset or not UTF-8 is `None`.
pub fn var(name: &str) -> Option<String> {
    var_os(name).and_then(|value| value.into_string().ok())
}

/// A setting that cannot be read; always exit 2 (as a `config::ConfigError`).
#[derive(Debug, thiserror::Error)]
pub enum SettingError {
    #[error("{0} is not valid UTF-8")]
    NotUnicode(&'static str),
    #[error("invalid {name} {value:?}: {expected}")]
    Invalid {
        name: &'static str,
        value: String,
        expected: &'static str,
    },
}

/// A text setting.
pub(crate) fn text_setting(
    flag: Option<String>,
    var: &'static str,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<Option<String>, SettingError> {
    if flag.is_some() {
        return Ok(flag);
    }
    match env(var) {
        Some(v) if v.is_empty() => Ok(None),
        Some(v) => v
            .into_string()
            .map(Some)
            .map_err(|_| SettingError::NotUnicode(var)),
        None => Ok(None),
    }
}

/// A duration setting (`30`, `30s`, `1500ms`, `2m`); `name` is how the message calls it.
pub(crate) fn duration_setting(
    flag: Option<String>,
    var: &'static str,
    name: &'static str,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<Option<Duration>, SettingError> {
    text_setting(flag, var, env)?
        .map(|v| {
            parse_duration(&v).ok_or(SettingError::Invalid {
                name,
                value: v,
                expected: "use a positive number with an optional unit, e.g. 30, 30s, 1500ms or 2m (at most 1h)",
            })
        })
        .transpose()
}

/// Parses `30`, `30s`, `1500ms`, `2m` into a positive duration of at most an hour.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if number.is_empty() || number.len() > 9 {
        return None;
    }
    let n: u64 = number.parse().ok()?;
    let duration = match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n.checked_mul(60)?),
        _ => return None,
    };
    (!duration.is_zero() && duration <= Duration::from_secs(3600)).then_some(duration)
}

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
pub fn humantime(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// What a file a setting names is, when it is not a regular file.
const NOT_REGULAR: &str = "is not a regular file (a FIFO, a device, a socket or a directory)";

/// Opens a file a setting names for reading, refusing anything but a regular file: opened
/// without blocking (a FIFO with no writer would block the open, SIGTERM and the deadline
/// with it), then checked with fstat on what was opened, so nothing is read from a FIFO or
/// a device (`/dev/zero` never ends).
pub(crate) fn open_regular(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    if !file.metadata()?.file_type().is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            NOT_REGULAR,
        ));
    }
    Ok(file)
}

/// Reads at most `max + 1` bytes of the regular file at `path` ([`open_regular`]): a result
/// longer than `max` tells the caller the file is over its bound, without reading the rest.
pub(crate) fn read_regular(path: &std::path::Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    open_regular(path)?.take(max + 1).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Why a file the AWS SDK will read itself cannot be handed to it, checked on what was
/// opened ([`open_regular`]): not readable, not a regular file, or larger than `max` bytes.
/// `None` when it can. Missing is a problem too: callers skip paths the SDK may lack.
pub(crate) fn file_problem(path: &std::path::Path, max: u64) -> Option<String> {
    let file = match open_regular(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => return Some(NOT_REGULAR.into()),
        Err(e) => return Some(format!("is not a readable file ({e})")),
    };
    match file.metadata() {
        Ok(meta) if meta.len() > max => Some(format!("is larger than {} KiB", max / 1024)),
        Ok(_) => None,
        Err(e) => Some(format!("is not a readable file ({e})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("1500ms"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        for bad in [
            "",
            "0",
            "0s",
            "-1",
            "1.5s",
            "s",
            "10h",
            "61m",
            "99999999999",
            "1 s",
            "1sec",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_copied_environment_reads_as_getenv_does() {
        for name in ["PATH", "HOME", "MPGATE_SURELY_NOT_SET_ANYWHERE", ""] {
            assert_eq!(var_os(name), std::env::var_os(name), "{name:?}");
        }
    }

    #[test]
    fn a_flag_wins_and_an_empty_variable_is_unset() {
        let env = |name: &str| match name {
            "SET" => Some(OsString::from("env")),
            "EMPTY" => Some(OsString::new()),
            _ => None,
        };
        assert_eq!(
            text_setting(Some("flag".into()), "SET", &env)
                .unwrap()
                .as_deref(),
            Some("flag")
        );
        assert_eq!(
            text_setting(None, "SET", &env).unwrap().as_deref(),
            Some("env")
        );
        assert_eq!(text_setting(None, "EMPTY", &env).unwrap(), None);
        assert_eq!(text_setting(None, "UNSET", &env).unwrap(), None);
    }
}
