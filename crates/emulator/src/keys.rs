//! RSA-2048 key pairs per public key version: generated with aws-lc-rs, or loaded from
//! `--key-dir`, and written there as PEM (`public-key-vN.pem` SPKI, `private-key-vN.pem` PKCS#8).

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;

/// One key version ready to sign with.
pub struct VersionKey {
    pub version: u32,
    /// The public key as PEM SPKI text (also the HS256 key-confusion secret).
    pub public_pem: String,
    pub public_path: PathBuf,
    /// Parsed once: aws-lc validates an RSA private key as it parses it (about 0.5 ms), which
    /// per call would double the emulator's answer time.
    pub signing_key: KeyPair,
}

/// DER as PEM text with LF line endings (the `pem` crate's default is CRLF).
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new(label, der), config)
}

/// The DER of the first PEM block labelled `label` in `text`.
pub fn pem_decode(label: &str, text: &str) -> Option<Vec<u8>> {
    pem::parse_many(text)
        .ok()?
        .into_iter()
        .find(|block| block.tag() == label)
        .map(pem::Pem::into_contents)
}

fn err(context: String, e: impl std::fmt::Display) -> String {
    format!("{context}: {e}")
}

/// A key pair with its PEM forms.
pub struct PemPair {
    pub private_pem: String,
    pub public_pem: String,
}

/// Generate a fresh RSA-2048 key pair.
pub fn generate() -> Result<PemPair, String> {
    let kp = KeyPair::generate(KeySize::Rsa2048)
        .map_err(|e| err("cannot generate an RSA-2048 key".into(), e))?;
    pair_from(&kp)
}

fn pair_from(kp: &KeyPair) -> Result<PemPair, String> {
    let private = kp
        .as_der()
        .map_err(|e| err("cannot encode the private key".into(), e))?;
    let public = kp
        .public_key()
        .as_der()
        .map_err(|e| err("cannot encode the public key".into(), e))?;
    Ok(PemPair {
        private_pem: pem_encode("PRIVATE KEY", private.as_ref()),
        public_pem: pem_encode("PUBLIC KEY", public.as_ref()),
    })
}

/// The pair of a PEM PKCS#8 private key read from `path`.
fn parse_private(text: &str, path: &Path) -> Result<PemPair, String> {
    let kp = signing_key(text).map_err(|e| format!("{}: {e}", path.display()))?;
    pair_from(&kp)
}

/// Signing key from a PEM PKCS#8 private key.
pub fn signing_key(private_pem: &str) -> Result<KeyPair, String> {
    let der = pem_decode("PRIVATE KEY", private_pem)
        .ok_or_else(|| "not a PKCS#8 PEM private key".to_string())?;
    KeyPair::from_pkcs8(&der).map_err(|e| err("not an RSA private key".into(), e))
}

/// Write `contents` to `path` atomically (temp file + rename), with `mode`.
pub(crate) fn write_atomic(path: &Path, contents: &str, mode: u32) -> io::Result<()> {
    let tmp = write_temp(path, contents, mode)?;
    let renamed = fs::rename(&tmp, path);
    if renamed.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    renamed
}

/// A complete, synced temporary file beside `path` holding `contents`, with `mode`; the
/// caller renames or links it into place (readers never see a partial file).
fn write_temp(path: &Path, contents: &str, mode: u32) -> io::Result<PathBuf> {
    let tmp = tmp_path(path);
    let written = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(contents.as_bytes())?;
        f.sync_all()
    })();
    match written {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(
        ".tmp.{}.{}",
        std::process::id(),
        crate::random::random_u64()
    ));
    path.with_file_name(name)
}

/// Return the contents of `path`, creating it first with `make()` (mode `mode`) if it does
/// not exist yet. Creation is a hard link of a complete temp file, so concurrent emulators
/// sharing a key dir agree on one version and never read a partial file.
pub(crate) fn create_once(
    path: &Path,
    mode: u32,
    make: impl FnOnce() -> Result<String, String>,
) -> Result<String, String> {
    let read = |p: &Path| {
        fs::read_to_string(p).map_err(|e| err(format!("cannot read {}", p.display()), e))
    };
    if path.exists() {
        return read(path);
    }
    let contents = make()?;
    let tmp = write_temp(path, &contents, mode)
        .map_err(|e| err(format!("cannot write a file beside {}", path.display()), e))?;
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(contents),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => read(path),
        Err(e) => Err(err(format!("cannot create {}", path.display()), e)),
    }
}

/// Load or create the key for each version in `dir`.
pub fn prepare(dir: &Path, versions: &[u32]) -> Result<Vec<VersionKey>, String> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| err(format!("cannot create key dir {}", dir.display()), e))?;
    let mut keys = Vec::with_capacity(versions.len());
    for &version in versions {
        let private_path = dir.join(format!("private-key-v{version}.pem"));
        let public_path = dir.join(format!("public-key-v{version}.pem"));
        // The key in force: one emulator creates it, the others sharing the dir read it.
        let private_pem = create_once(&private_path, 0o600, || {
            generate().map(|fresh| fresh.private_pem)
        })?;
        let pair = parse_private(&private_pem, &private_path)?;
        // Same content from every writer (derived from the private key in force).
        write_atomic(&public_path, &pair.public_pem, 0o644)
            .map_err(|e| err(format!("cannot write {}", public_path.display()), e))?;
        keys.push(VersionKey {
            version,
            signing_key: signing_key(&pair.private_pem)?,
            public_pem: pair.public_pem,
            public_path,
        });
    }
    Ok(keys)
}

/// The largest file `--write-key-dir` reads back to compare: a PEM public key is under 1 KiB.
const MAX_EXISTING_KEY_BYTES: u64 = 64 * 1024;

/// Writes the public key of every version into `dir` (created if missing) as
/// `public-key-vN.pem`, the names the gate's `MPGATE_PUBLIC_KEY_DIR` reads. A file there
/// already holding the same key is left as it is; one holding anything else may be the
/// seller's real key from AWS Marketplace, so it is an error, never replaced.
pub fn write_public(dir: &Path, keys: &[VersionKey]) -> Result<(), String> {
    let flag = "--write-key-dir";
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|e| err(format!("{flag}: cannot create {}", dir.display()), e))?;
    let conflict = |path: &Path, version: u32| {
        format!(
            "{flag}: {} already exists and is not the emulator's key version {version}: give the emulator the --key-dir it wrote it with, write to an empty directory, or remove the file (it may be your real key from AWS Marketplace)",
            path.display()
        )
    };
    let paths: Vec<PathBuf> = keys
        .iter()
        .map(|k| dir.join(format!("public-key-v{}.pem", k.version)))
        .collect();
    // Every file is checked before any is written: a refusal leaves no half ring behind.
    for (key, path) in keys.iter().zip(&paths) {
        if fs::symlink_metadata(path).is_ok() && !holds_key(path, &key.public_pem)? {
            return Err(conflict(path, key.version));
        }
    }
    for (key, path) in keys.iter().zip(&paths) {
        if fs::symlink_metadata(path).is_ok() {
            continue;
        }
        // A hard link of a complete file: never a partial key, never over another writer's.
        let tmp = write_temp(path, &key.public_pem, 0o644).map_err(|e| {
            err(
                format!("{flag}: cannot write a file in {}", dir.display()),
                e,
            )
        })?;
        let linked = fs::hard_link(&tmp, path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if !holds_key(path, &key.public_pem)? {
                    return Err(conflict(path, key.version));
                }
            }
            Err(e) => return Err(err(format!("{flag}: cannot create {}", path.display()), e)),
        }
    }
    Ok(())
}

/// Whether `path` is a regular file holding the public key `pem` (compared as DER, so line
/// endings do not matter).
fn holds_key(path: &Path, pem: &str) -> Result<bool, String> {
    let cannot = |e: io::Error| {
        err(
            format!("--write-key-dir: cannot read {}", path.display()),
            e,
        )
    };
    let meta = fs::metadata(path).map_err(cannot)?;
    if !meta.is_file() || meta.len() > MAX_EXISTING_KEY_BYTES {
        return Ok(false);
    }
    let mut text = String::new();
    let read = fs::File::open(path).and_then(|f| {
        io::Read::read_to_string(&mut io::Read::take(f, MAX_EXISTING_KEY_BYTES), &mut text)
    });
    match read {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::InvalidData => return Ok(false),
        Err(e) => return Err(cannot(e)),
    }
    let theirs = pem_decode("PUBLIC KEY", &text);
    Ok(theirs.is_some() && theirs == pem_decode("PUBLIC KEY", pem))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trip() {
        let der: Vec<u8> = (0..=255u8).collect();
        let pem = pem_encode("PUBLIC KEY", &der);
        assert!(pem.lines().all(|l| l.len() <= 64));
        assert_eq!(pem_decode("PUBLIC KEY", &pem), Some(der));
        assert_eq!(pem_decode("PRIVATE KEY", &pem), None);
    }
}
