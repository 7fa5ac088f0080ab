//! Shared set-up of mpgate's fuzz targets: a signing key made once per process, the claims a
//! token must carry, and a scratch directory standing in for every path the fuzzer names.
//!
//! Nothing here reads the machine's own files: a fuzzed path is mapped onto one of a fixed set
//! of entries in the scratch directory (see [`sandboxed_path`]), so a run does the same on any
//! machine.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{KeyPair as _, RSA_PSS_SHA256};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jsonwebtoken::DecodingKey;

/// The clock of every verification: fixed, so a reproducer replays the same way.
pub const NOW_SECS: u64 = 1_750_000_000;
pub const PRODUCT_CODE: &str = "prod-fuzz";
pub const NONCE: &str = "nonce-fuzz";
pub const KEY_VERSION: i32 = 1;
pub const MAX_AGE: Duration = Duration::from_secs(300);

pub fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW_SECS)
}

/// What every fuzzed token is checked against.
pub fn expected() -> mpgate_proof::Expected<'static> {
    mpgate_proof::Expected {
        product_code: PRODUCT_CODE,
        public_key_version: KEY_VERSION,
        nonce: NONCE,
        max_age: MAX_AGE,
        require_iat: false,
    }
}

/// A real 1024-bit RSA public key (SPKI), too small for PS256 (from crates/proof/tests/adversarial.rs).
pub const RSA_1024_SPKI: &str = "-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQC6HaLQ5bEwcQARbTY3eNJnxPDa
JvyCjdOggJAlHot8zeytA+jiD4TPiWEoQnSsdgmtTpC4VF9YKsB8nkySuVZyrT45
NK2cGh8tJpfnBTRwQHctNcrERmaR4yKagWY7b0xqcCD/sVYLCbkXdUCz9ZUurxnT
3PuxBbbZb0IPeJfQFQIDAQAB
-----END PUBLIC KEY-----
";

/// A self-signed CA certificate (CN=mpgate-fuzz-ca), for `SSL_CERT_FILE` / `SSL_CERT_DIR`.
pub const CA_CERT: &str = include_str!("../ca-cert.pem");

/// An RSA-2048 key pair generated at start-up (so no private key is committed), its public
/// half as SPKI and PKCS#1 PEM, and mpgate's verification key for it.
pub struct Keys {
    pair: KeyPair,
    pub private_pem: String,
    pub public_pem: String,
    pub public_pkcs1_pem: String,
    pub decoding: DecodingKey,
}

impl Keys {
    /// `b64(header).b64(claims).b64(PS256 signature)`: a token this process's key signed, from
    /// raw bytes, so duplicated keys, odd types and non-UTF-8 survive.
    pub fn sign(&self, header: &[u8], claims: &[u8]) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let mut signature = vec![0u8; self.pair.public_modulus_len()];
        self.pair
            .sign(
                &RSA_PSS_SHA256,
                &SystemRandom::new(),
                input.as_bytes(),
                &mut signature,
            )
            .expect("PS256 signing");
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }
}

/// The process's key pair, generated on first use.
pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let pair = KeyPair::generate(KeySize::Rsa2048).expect("RSA-2048 key generation");
        let private_pem = pem_encode("PRIVATE KEY", pair.as_der().expect("PKCS#8").as_ref());
        let public_pem = pem_encode(
            "PUBLIC KEY",
            pair.public_key().as_der().expect("SPKI").as_ref(),
        );
        let decoding =
            mpgate_proof::decoding_key(public_pem.as_bytes()).expect("mpgate takes the key");
        let public_pkcs1_pem = pem_encode("RSA PUBLIC KEY", decoding.as_bytes());
        Keys {
            pair,
            private_pem,
            public_pem,
            public_pkcs1_pem,
            decoding,
        }
    })
}

pub fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The names a fuzzed path can take, each an entry of the scratch directory. A value equal to
/// one of them maps to it; any other value maps to one of them by hash.
pub const PATHS: &[&str] = &[
    "key.pem",
    "key-pkcs1.pem",
    "small.pem",
    "private.pem",
    "garbage.pem",
    "empty.pem",
    "huge.pem",
    "missing",
    "ring",
    "ring-mixed",
    "ring-badname",
    "ring-empty",
    "ca.pem",
    "certs",
    "result.json",
    "result-unverified.json",
    "result-denied.json",
    "result-garbage.json",
];

/// The scratch directory, filled on first use (under `$TMPDIR`, one per process).
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("mpgate-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        fill_scratch(&dir).expect("cannot prepare the fuzz scratch directory");
        dir
    })
}

fn fill_scratch(dir: &Path) -> std::io::Result<()> {
    use std::fs::{create_dir_all, write};
    let keys = keys();
    create_dir_all(dir)?;
    write(dir.join("key.pem"), &keys.public_pem)?;
    write(dir.join("key-pkcs1.pem"), &keys.public_pkcs1_pem)?;
    write(dir.join("small.pem"), RSA_1024_SPKI)?;
    write(dir.join("private.pem"), &keys.private_pem)?;
    write(dir.join("garbage.pem"), "not a key\n")?;
    write(dir.join("empty.pem"), "")?;
    // One byte over mpgate's 64 KiB bound on key files.
    write(dir.join("huge.pem"), vec![b'A'; 64 * 1024 + 1])?;
    for (ring, files) in [
        (
            "ring",
            &[
                ("public-key-v1.pem", keys.public_pem.as_str()),
                ("public-key-v2.pem", keys.public_pkcs1_pem.as_str()),
                ("README", "not a key"),
            ][..],
        ),
        (
            "ring-mixed",
            &[
                ("public-key-v1.pem", keys.public_pem.as_str()),
                ("public-key-v3.pem", "not a key"),
            ][..],
        ),
        (
            "ring-badname",
            &[("public-key-v01.pem", keys.public_pem.as_str())][..],
        ),
        ("ring-empty", &[][..]),
        (
            "certs",
            &[("ca.pem", CA_CERT), ("README", "no certificate here")][..],
        ),
    ] {
        create_dir_all(dir.join(ring))?;
        for (name, text) in files {
            write(dir.join(ring).join(name), text)?;
        }
    }
    write(dir.join("ca.pem"), CA_CERT)?;
    let token = keys.sign(
        br#"{"alg":"PS256","typ":"JWT"}"#,
        format!(
            r#"{{"productCode":"{PRODUCT_CODE}","publicKeyVersion":{KEY_VERSION},"nonce":"{NONCE}","iat":{NOW_SECS}}}"#
        )
        .as_bytes(),
    );
    write(
        dir.join("result.json"),
        format!(r#"{{"entitled":true,"signature":"{token}","nonce":"{NONCE}"}}"#),
    )?;
    write(
        dir.join("result-unverified.json"),
        r#"{"entitled":true,"signature":null}"#,
    )?;
    write(dir.join("result-denied.json"), r#"{"entitled":false}"#)?;
    write(dir.join("result-garbage.json"), "{\"entitled\":")?;
    Ok(())
}

/// Maps a fuzzed path onto an entry of the scratch directory (see [`PATHS`]).
pub fn sandboxed_path(value: &OsStr) -> OsString {
    let bytes = value.as_bytes();
    let name = PATHS
        .iter()
        .find(|name| name.as_bytes() == bytes)
        .copied()
        .unwrap_or_else(|| {
            // FNV-1a: stable across runs and machines.
            let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
                (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
            });
            PATHS[(hash % PATHS.len() as u64) as usize]
        });
    scratch().join(name).into_os_string()
}

/// Like [`sandboxed_path`] for a colon-separated list (`SSL_CERT_DIR`).
pub fn sandboxed_path_list(value: &OsStr) -> OsString {
    let parts: Vec<OsString> = value
        .as_bytes()
        .split(|&b| b == b':')
        .map(|part| sandboxed_path(OsStr::from_bytes(part)))
        .collect();
    let mut out = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push(b':');
        }
        out.extend_from_slice(part.as_bytes());
    }
    OsString::from_vec(out)
}

/// Splits fuzz input into NUL-separated strings (not necessarily UTF-8).
pub fn split_nul(data: &[u8]) -> Vec<OsString> {
    data.split(|&b| b == 0)
        .map(|s| OsString::from_vec(s.to_vec()))
        .collect()
}
