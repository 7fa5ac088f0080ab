//! Owns the trusted public keys: the ring pinned into the build, or the configured key(s), by version.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};

use jsonwebtoken::DecodingKey;

use crate::config::{path_setting, ConfigError};
use crate::token;

/// Written by build.rs from `MPGATE_PIN_PRODUCT_CODE` and `MPGATE_PIN_KEY_DIR`.
mod pinned {
    include!(concat!(env!("OUT_DIR"), "/pinned.rs"));
}

/// The largest PEM file mpgate reads: real RSA public keys are well under 4 KiB.
const MAX_KEY_BYTES: u64 = 64 * 1024;
/// A key directory holds a handful of versions; more is a wrong directory.
const MAX_RING_KEYS: usize = 64;

/// The product code compiled into a pinned build.
pub fn pinned_product_code() -> Option<&'static str> {
    pinned::PRODUCT_CODE
}

/// What `mpgate --version` adds for a pinned build: product code, key versions, fingerprints.
pub fn describe_pinned() -> Option<String> {
    let code = pinned_product_code()?;
    let mut text = format!("pinned product code: {code}\n");
    for (version, pem) in pinned::KEYS {
        let print = token::decoding_key(pem.as_bytes())
            .map(|key| token::fingerprint(&key))
            .unwrap_or_else(|e| format!("UNUSABLE ({e})"));
        let _ = writeln!(text, "pinned key version {version}: {print}");
    }
    Some(text)
}

/// The key the token must verify under, and what else the ring holds.
pub struct Selected {
    pub version: i32,
    pub key: DecodingKey,
    /// Every version in the ring, ascending (one entry for a single key file).
    pub versions: Vec<i32>,
    pub pinned: bool,
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
) -> Result<Selected, ConfigError> {
    let file = path_setting(options.file, "MPGATE_PUBLIC_KEY_FILE", env);
    let dir = path_setting(options.dir, "MPGATE_PUBLIC_KEY_DIR", env);
    let inline = env("MPGATE_PUBLIC_KEY").filter(|v| !v.is_empty());
    let pinned = pinned_product_code().is_some();

    let ring: Vec<(i32, Vec<u8>, String)> = if pinned {
        let given = [
            (options.file.is_some(), "--public-key-file"),
            (options.dir.is_some(), "--public-key-dir"),
            (file.is_some(), "MPGATE_PUBLIC_KEY_FILE"),
            (dir.is_some(), "MPGATE_PUBLIC_KEY_DIR"),
            (inline.is_some(), "MPGATE_PUBLIC_KEY"),
        ];
        if let Some((_, name)) = given.iter().find(|(set, _)| *set) {
            return Err(ConfigError::PinnedOverride(name));
        }
        pinned::KEYS
            .iter()
            .map(|(v, pem)| {
                (
                    *v,
                    pem.as_bytes().to_vec(),
                    format!("pinned key version {v}"),
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
        match (file, dir, inline) {
            (Some(path), None, None) => {
                vec![(single_version, read_key_file(&path)?, display(&path))]
            }
            (None, None, Some(pem)) => vec![(
                single_version,
                pem.into_string()
                    .map_err(|_| ConfigError::NotUnicode("MPGATE_PUBLIC_KEY"))?
                    .into_bytes(),
                "MPGATE_PUBLIC_KEY".to_string(),
            )],
            (None, Some(dir), None) => read_key_dir(&dir)?,
            (None, None, None) => return Err(ConfigError::MissingKey(single_version)),
            _ => return Err(ConfigError::TwoKeys),
        }
    };

    let versions: Vec<i32> = ring.iter().map(|(v, ..)| *v).collect();
    let version = options
        .version
        .unwrap_or_else(|| versions.iter().copied().max().unwrap_or(1));
    let mut selected = None;
    for (v, pem, source_name) in ring {
        let key = token::decoding_key(&pem).map_err(|reason| ConfigError::InvalidKey {
            source_name,
            reason,
        })?;
        if v == version {
            selected = Some(key);
        }
    }
    let key = selected.ok_or_else(|| ConfigError::KeyVersionNotInRing {
        version,
        available: versions
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        pinned,
    })?;
    Ok(Selected {
        version,
        key,
        versions,
        pinned,
    })
}

/// Reads `public-key-v<N>.pem` files from a directory; other names are ignored.
fn read_key_dir(dir: &Path) -> Result<Vec<(i32, Vec<u8>, String)>, ConfigError> {
    let unreadable = |reason: String| ConfigError::UnreadableKey {
        path: display(dir),
        reason,
    };
    let mut ring = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| unreadable(e.to_string()))? {
        let entry = entry.map_err(|e| unreadable(e.to_string()))?;
        let name = entry.file_name();
        let Some(version) = name
            .to_str()
            .and_then(|n| n.strip_prefix("public-key-v"))
            .and_then(|n| n.strip_suffix(".pem"))
        else {
            continue;
        };
        let version = match version.parse::<i32>() {
            Ok(v) if v >= 1 && !version.starts_with('0') => v,
            _ => {
                return Err(unreadable(format!(
                    "{}: name key files public-key-v<N>.pem with N the key version (1 or more)",
                    name.to_string_lossy()
                )))
            }
        };
        if ring.len() == MAX_RING_KEYS {
            return Err(unreadable(format!(
                "more than {MAX_RING_KEYS} key files; is it the right directory?"
            )));
        }
        let path = entry.path();
        ring.push((
            version,
            read_key_file(&path)?,
            format!("{} (key version {version})", display(&path)),
        ));
    }
    if ring.is_empty() {
        return Err(unreadable(
            "it holds no public-key-v<N>.pem file: save each key AWS Marketplace gave you as public-key-v<version>.pem".into(),
        ));
    }
    ring.sort_by_key(|(v, ..)| *v);
    Ok(ring)
}

fn display(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

fn read_key_file(path: &Path) -> Result<Vec<u8>, ConfigError> {
    let unreadable = |reason: String| ConfigError::UnreadableKey {
        path: display(path),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| unreadable(e.to_string()))?;
    let mut pem = Vec::new();
    // Read one byte past the bound so an oversized file is detected, not truncated.
    file.take(MAX_KEY_BYTES + 1)
        .read_to_end(&mut pem)
        .map_err(|e| unreadable(e.to_string()))?;
    if pem.len() as u64 > MAX_KEY_BYTES {
        return Err(unreadable(format!(
            "larger than {} KiB; is it really a public key?",
            MAX_KEY_BYTES / 1024
        )));
    }
    Ok(pem)
}
