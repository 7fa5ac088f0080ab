//! Owns the hand-over: what mpgate gives the workload (`MPGATE_SIGNATURE`, `MPGATE_NONCE`, or
//! the result file) and its re-check after the exec.

use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::key::{decoding_key, DecodingKey, KeyError};
use crate::token::{self, Expected, TokenError};

/// The oldest `iat` accepted unless told otherwise (mpgate's `MPGATE_MAX_TOKEN_AGE`).
pub const DEFAULT_MAX_TOKEN_AGE: Duration = Duration::from_secs(300);
/// A result file is a few hundred bytes; anything far larger is not one.
const MAX_RESULT_FILE_BYTES: u64 = 64 * 1024;

/// The variables mpgate sets for the workload; the gate names them from here, so the hand-over
/// and its re-check never spell them differently.
pub mod var {
    /// `verified`, or `unverified` for a start `MPGATE_ON_TRANSIENT_ERROR=allow` let through.
    pub const ENTITLEMENT: &str = "MPGATE_ENTITLEMENT";
    /// The RegisterUsage token mpgate verified.
    pub const SIGNATURE: &str = "MPGATE_SIGNATURE";
    /// The nonce the token was issued for.
    pub const NONCE: &str = "MPGATE_NONCE";
}

/// What mpgate handed over: the verified token and the nonce it was issued for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handover {
    pub signature: String,
    pub nonce: String,
}

/// Why the workload must not trust its start (mpgate exits 12 for these, or 2 for a bad key).
#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    #[error("MPGATE_SIGNATURE is not set: this process was not started by mpgate after a verified entitlement check (was the ENTRYPOINT overridden?)")]
    NotHandedOver,
    #[error("mpgate started this process without verifying the entitlement (MPGATE_ENTITLEMENT=unverified, allowed by MPGATE_ON_TRANSIENT_ERROR=allow)")]
    Unverified,
    #[error("{0} is not valid UTF-8")]
    NotUnicode(&'static str),
    #[error("cannot use result file {path}: {reason}")]
    ResultFile { path: String, reason: String },
    #[error("the public key cannot be used: {0}")]
    Key(#[from] KeyError),
    #[error("the handed-over token is not valid: {0}")]
    Token(#[from] TokenError),
}

impl Handover {
    /// Reads `MPGATE_SIGNATURE` and `MPGATE_NONCE`, which mpgate sets before it execs.
    pub fn from_env() -> Result<Handover, ProofError> {
        Self::from_vars(&|name| std::env::var_os(name))
    }

    /// Like [`Handover::from_env`] with the environment given as a lookup function.
    pub fn from_vars(env: &dyn Fn(&str) -> Option<OsString>) -> Result<Handover, ProofError> {
        let read = |name: &'static str| {
            env(name)
                .filter(|v| !v.is_empty())
                .map(|v| v.into_string().map_err(|_| ProofError::NotUnicode(name)))
                .transpose()
        };
        let Some(signature) = read(var::SIGNATURE)? else {
            return Err(match read(var::ENTITLEMENT)?.as_deref() {
                Some("unverified") => ProofError::Unverified,
                _ => ProofError::NotHandedOver,
            });
        };
        Ok(Handover {
            signature,
            nonce: read(var::NONCE)?.unwrap_or_default(),
        })
    }

    /// Reads the `signature` and `nonce` of a result file mpgate wrote (`--result-file`); the
    /// file must record `"outcome": "verified"` and `"entitled": true`.
    pub fn from_result_file(path: &Path) -> Result<Handover, ProofError> {
        use std::io::Read;
        let failed = |reason: String| ProofError::ResultFile {
            path: path.display().to_string(),
            reason,
        };
        let mut text = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_RESULT_FILE_BYTES + 1).read_to_end(&mut text))
            .map_err(|e| failed(e.to_string()))?;
        if text.len() as u64 > MAX_RESULT_FILE_BYTES {
            return Err(failed("too large to be an mpgate result file".into()));
        }
        #[derive(Deserialize)]
        struct ResultFile {
            entitled: bool,
            outcome: String,
            signature: Option<String>,
            nonce: Option<String>,
        }
        let result: ResultFile = serde_json::from_slice(&text)
            .map_err(|e| failed(format!("not an mpgate result file ({e})")))?;
        // The outcome and `entitled` must both say verified: a file edited to carry a token
        // from elsewhere next to a failed check's outcome is not a proof.
        match (result.outcome.as_str(), result.entitled, result.signature, result.nonce) {
            ("verified", true, Some(signature), Some(nonce)) => Ok(Handover { signature, nonce }),
            ("verified", true, None, _) => Err(failed(
                "it records a verified check without a token (a contract checkout?): there is nothing to check offline".into(),
            )),
            ("unverified", ..) => Err(ProofError::Unverified),
            ("verified", false, ..) => Err(failed(
                "its outcome and \"entitled\" disagree: it is not a file mpgate wrote".into(),
            )),
            (outcome, ..) => {
                let shown: String = outcome.chars().take(40).collect();
                Err(failed(format!(
                    "it records outcome {shown:?}, not a verified entitlement"
                )))
            }
        }
    }

    /// Verifies the token under `public_key_pem` (PEM, as given to mpgate) for this product and
    /// key version, issued (`iat`, required) at most `max_age` ago, for this hand-over's nonce.
    /// `max_age` is the caller's: this library never reads it from the environment, which a
    /// buyer who bypassed the gate controls.
    pub fn verify(
        &self,
        public_key_pem: &[u8],
        product_code: &str,
        public_key_version: i32,
        max_age: Duration,
    ) -> Result<(), ProofError> {
        let key = decoding_key(public_key_pem)?;
        self.verify_with(&key, product_code, public_key_version, max_age)
    }

    /// [`Handover::verify`] with a key already loaded.
    pub fn verify_with(
        &self,
        key: &DecodingKey,
        product_code: &str,
        public_key_version: i32,
        max_age: Duration,
    ) -> Result<(), ProofError> {
        let expected = Expected {
            product_code,
            public_key_version,
            nonce: &self.nonce,
            max_age,
            require_iat: true,
        };
        token::verify(&self.signature, key, &expected, SystemTime::now())?;
        Ok(())
    }
}

/// Checks this process's own hand-over (`MPGATE_SIGNATURE`, `MPGATE_NONCE`), issued at most
/// [`DEFAULT_MAX_TOKEN_AGE`] ago.
pub fn verify_handover(
    public_key_pem: &[u8],
    product_code: &str,
    public_key_version: i32,
) -> Result<(), ProofError> {
    Handover::from_env()?.verify(
        public_key_pem,
        product_code,
        public_key_version,
        DEFAULT_MAX_TOKEN_AGE,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `json` as a result file (written to a file of this test's own).
    fn read(name: &str, json: &str) -> Result<Handover, ProofError> {
        let path =
            std::env::temp_dir().join(format!("mpgate-proof-{}-{name}.json", std::process::id()));
        std::fs::write(&path, json).unwrap();
        let read = Handover::from_result_file(&path);
        std::fs::remove_file(&path).unwrap();
        read
    }

    #[test]
    fn a_result_file_passes_only_with_outcome_verified_and_entitled() {
        let verified = r#"{"entitled":true,"outcome":"verified","signature":"a.b.c","nonce":"n"}"#;
        assert_eq!(
            read("verified", verified).unwrap(),
            Handover {
                signature: "a.b.c".into(),
                nonce: "n".into()
            }
        );
        // A token pasted next to a failed check's outcome, or with `entitled` flipped.
        for (name, json, words) in [
            (
                "not-entitled",
                r#"{"entitled":true,"outcome":"not-entitled","signature":"a.b.c","nonce":"n"}"#,
                "outcome \"not-entitled\", not a verified entitlement",
            ),
            (
                "flipped",
                r#"{"entitled":false,"outcome":"verified","signature":"a.b.c","nonce":"n"}"#,
                "disagree",
            ),
            (
                "no-outcome",
                r#"{"entitled":true,"signature":"a.b.c","nonce":"n"}"#,
                "missing field `outcome`",
            ),
            (
                "contract",
                r#"{"entitled":true,"outcome":"verified","signature":null,"nonce":null}"#,
                "without a token",
            ),
        ] {
            match read(name, json) {
                Err(e @ ProofError::ResultFile { .. }) => {
                    assert!(e.to_string().contains(words), "{name}: {e}")
                }
                other => panic!("{name}: {other:?}"),
            }
        }
        let unverified =
            r#"{"entitled":false,"outcome":"unverified","signature":null,"nonce":"n"}"#;
        assert!(matches!(
            read("unverified", unverified),
            Err(ProofError::Unverified)
        ));
    }
}
