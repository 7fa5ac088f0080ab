//! Owns the trusted public keys: the ring pinned into the build, or the configured key(s), by version.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use mpgate_proof::{decoding_key, DecodingKey, KeyError};

use crate::pinned::{self, Refused};
use crate::settings::path_setting;

/// The largest PEM file mpgate reads: real RSA public keys are well under 4 KiB.
const MAX_KEY_BYTES: u64 = 64 * 1024;
/// A key directory holds a handful of versions; more is a wrong directory.
const MAX_RING_KEYS: usize = 64;

/// A key version as AWS Marketplace numbers them, `^[1-9][0-9]*$` within `i32`: one spelling
/// per number (`+1`, `01` and ` 1` are refused, not read as 1).
pub fn parse_version(text: &str) -> Option<i32> {
    let digits_only = text.bytes().all(|b| b.is_ascii_digit());
    if !digits_only || text.starts_with('0') {
        return None;
    }
    text.parse().ok()
}

/// Why the keys cannot be used; always exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("no public key: set MPGATE_PUBLIC_KEY_FILE (or --public-key-file) to the PEM file of the public key AWS Marketplace gave you for version {0}, or put the PEM in MPGATE_PUBLIC_KEY")]
    MissingKey(i32),
    #[error("more than one of MPGATE_PUBLIC_KEY_FILE, MPGATE_PUBLIC_KEY_DIR and MPGATE_PUBLIC_KEY is set: keep exactly one key source")]
    TwoKeys,
    #[error(transparent)]
    Pinned(#[from] Refused),
    #[error("no key for public key version {version}: {} holds version(s) {available}; set MPGATE_PUBLIC_KEY_VERSION to one of them{}", if *pinned { "this build" } else { "the key directory" }, if *pinned { ", or rebuild with the new key" } else { ", or add public-key-v<version>.pem" })]
    KeyVersionNotInRing {
        version: i32,
        available: String,
        pinned: bool,
    },
    #[error("cannot read public key {path} ({setting}): {reason}")]
    UnreadableKey {
        /// The variable or flag that named it.
        setting: &'static str,
        path: String,
        reason: String,
    },
    #[error("{source_name} cannot be the public key: {reason}")]
    InvalidKey {
        source_name: String,
        reason: KeyError,
    },
    #[error("MPGATE_PUBLIC_KEY is not valid UTF-8")]
    NotUnicode,
}

/// The key the token must verify under, and what else the ring holds.
pub struct Selected {
    pub version: i32,
    pub key: DecodingKey,
    /// Where the key came from, as messages name it: `MPGATE_PUBLIC_KEY_DIR /keys/public-key-v2.pem
    /// (key version 2)`.
    pub source: String,
    /// Every version in the ring, ascending (one entry for a single key file).
    pub versions: Vec<i32>,
}

/// Where the key options point, as given on the command line (the environment is read here).
pub struct KeyOptions<'a> {
    pub version: Option<i32>,
    pub file: Option<&'a OsString>,
    pub dir: Option<&'a OsString>,
}

/// Loads every key of the ring (so a bad key shows at once, not on rotation day) and picks the
/// one for the requested version: by default the highest, or 1 for a single key.
pub fn select(
    options: KeyOptions,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<Selected, KeyringError> {
    let file = path_setting(options.file, "MPGATE_PUBLIC_KEY_FILE", env);
    let dir = path_setting(options.dir, "MPGATE_PUBLIC_KEY_DIR", env);
    let inline = env("MPGATE_PUBLIC_KEY").filter(|v| !v.is_empty());
    let pinned = pinned::is_pinned();

    let ring: Vec<(i32, Vec<u8>, String)> = if pinned {
        let given = [
            (options.file.is_some(), "--public-key-file"),
            (options.dir.is_some(), "--public-key-dir"),
            (file.is_some(), "MPGATE_PUBLIC_KEY_FILE"),
            (dir.is_some(), "MPGATE_PUBLIC_KEY_DIR"),
            (inline.is_some(), "MPGATE_PUBLIC_KEY"),
        ];
        if let Some((_, name)) = given.iter().find(|(set, _)| *set) {
            return Err(Refused(name.to_string()).into());
        }
        pinned::keys()
            .iter()
            .map(|(v, pem)| {
                (
                    *v,
                    pem.as_bytes().to_vec(),
                    format!("this build's pinned key version {v}"),
                )
            })
            .collect()
    } else {
        // A flag overrides the environment, including an inline key.
        let file = options.file.map(PathBuf::from).or(file);
        let dir = options.dir.map(PathBuf::from).or(dir);
        let inline = if options.file.is_some() || options.dir.is_some() {
            None
        } else {
            inline
        };
        let single_version = options.version.unwrap_or(1);
        let file_setting = if options.file.is_some() {
            "--public-key-file"
        } else {
            "MPGATE_PUBLIC_KEY_FILE"
        };
        let dir_setting = if options.dir.is_some() {
            "--public-key-dir"
        } else {
            "MPGATE_PUBLIC_KEY_DIR"
        };
        match (file, dir, inline) {
            (Some(path), None, None) => vec![(
                single_version,
                read_key_file(&path, file_setting)?,
                format!("{file_setting} {}", display(&path)),
            )],
            (None, None, Some(pem)) => vec![(
                single_version,
                pem.into_string()
                    .map_err(|_| KeyringError::NotUnicode)?
                    .into_bytes(),
                "MPGATE_PUBLIC_KEY".to_string(),
            )],
            (None, Some(dir), None) => read_key_dir(&dir, dir_setting)?,
            (None, None, None) => return Err(KeyringError::MissingKey(single_version)),
            _ => return Err(KeyringError::TwoKeys),
        }
    };

    let versions: Vec<i32> = ring.iter().map(|(v, ..)| *v).collect();
    let version = options
        .version
        .unwrap_or_else(|| versions.iter().copied().max().unwrap_or(1));
    let mut selected = None;
    for (v, pem, source_name) in ring {
        let key = decoding_key(&pem).map_err(|reason| KeyringError::InvalidKey {
            source_name: source_name.clone(),
            reason,
        })?;
        if v == version {
            selected = Some((key, source_name));
        }
    }
    let key = selected.ok_or_else(|| KeyringError::KeyVersionNotInRing {
        version,
        available: versions
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        pinned,
    })?;
    let (key, source) = key;
    Ok(Selected {
        version,
        key,
        source,
        versions,
    })
}

/// Reads `public-key-v<N>.pem` files from a directory (named by `setting`); other names are
/// ignored.
fn read_key_dir(
    dir: &Path,
    setting: &'static str,
) -> Result<Vec<(i32, Vec<u8>, String)>, KeyringError> {
    let unreadable = |reason: String| KeyringError::UnreadableKey {
        setting,
        path: display(dir),
        reason,
    };
    let mut ring = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| unreadable(io_reason(&e)))? {
        let entry = entry.map_err(|e| unreadable(io_reason(&e)))?;
        let name = entry.file_name();
        let Some(version) = name
            .to_str()
            .and_then(|n| n.strip_prefix("public-key-v"))
            .and_then(|n| n.strip_suffix(".pem"))
        else {
            continue;
        };
        let Some(version) = parse_version(version) else {
            return Err(unreadable(format!(
                "{}: name key files public-key-v<N>.pem with N the key version (1 or more, no sign or leading zero)",
                name.to_string_lossy()
            )));
        };
        if ring.len() == MAX_RING_KEYS {
            return Err(unreadable(format!(
                "more than {MAX_RING_KEYS} key files; is it the right directory?"
            )));
        }
        let path = entry.path();
        ring.push((
            version,
            read_key_file(&path, setting)?,
            format!("{setting} {} (key version {version})", display(&path)),
        ));
    }
    if ring.is_empty() {
        return Err(unreadable(
            "it holds no public-key-v<N>.pem file: save each key AWS Marketplace gave you as public-key-v<version>.pem".into(),
        ));
    }
    ring.sort_by_key(|(v, ..)| *v);
    // One spelling per number makes this impossible today; keep it so that no change to the
    // parsing can let a second key for a version silently replace the first.
    if let Some(pair) = ring.windows(2).find(|pair| pair[0].0 == pair[1].0) {
        return Err(unreadable(format!(
            "two files for key version {}: {} and {}",
            pair[0].0, pair[0].2, pair[1].2
        )));
    }
    Ok(ring)
}

fn display(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Why a key file or directory cannot be read, with what to check in a container.
fn io_reason(error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::NotFound => format!("{error}: is the ConfigMap (or Secret) with the key mounted there?"),
        std::io::ErrorKind::PermissionDenied => format!("{error}: the container's user cannot read it; check the volume's defaultMode or the pod's fsGroup"),
        _ => error.to_string(),
    }
}

fn read_key_file(path: &Path, setting: &'static str) -> Result<Vec<u8>, KeyringError> {
    let unreadable = |reason: String| KeyringError::UnreadableKey {
        setting,
        path: display(path),
        reason,
    };
    // One byte past the bound, so an oversized file is detected, not truncated; a FIFO or a
    // device is refused before anything is read.
    let pem = crate::settings::read_regular(path, MAX_KEY_BYTES)
        .map_err(|e| unreadable(io_reason(&e)))?;
    if pem.len() as u64 > MAX_KEY_BYTES {
        return Err(unreadable(format!(
            "larger than {} KiB; is it really a public key?",
            MAX_KEY_BYTES / 1024
        )));
    }
    Ok(pem)
}

#[cfg(test)]
mod tests {
    use super::parse_version;

    #[test]
    fn a_key_version_has_one_spelling() {
        assert_eq!(parse_version("1"), Some(1));
        assert_eq!(parse_version("12"), Some(12));
        assert_eq!(parse_version("2147483647"), Some(i32::MAX));
        for refused in [
            "",
            "0",
            "01",
            "+1",
            "-1",
            " 1",
            "1 ",
            "1e3",
            "1.0",
            "2147483648",
            "１",
        ] {
            assert_eq!(parse_version(refused), None, "{refused:?}");
        }
    }
}
