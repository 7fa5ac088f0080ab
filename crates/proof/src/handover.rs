//! Owns the hand-over: what mpgate gives the workload (`MPGATE_SIGNATURE` and `MPGATE_SALT`, or
//! the result file) and its re-check, bound to the process or to the boot and pod.

use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::binding::{is_salt, BindingError, Place, Process};
use crate::key::{decoding_key, DecodingKey, KeyError};
use crate::token::{self, Expected, TokenError};

/// The oldest `iat` accepted unless told otherwise (mpgate's `MPGATE_MAX_TOKEN_AGE`).
pub const DEFAULT_MAX_TOKEN_AGE: Duration = Duration::from_secs(300);
/// A result file is a few hundred bytes; anything far larger is not one.
const MAX_RESULT_FILE_BYTES: u64 = 64 * 1024;

/// The variables mpgate sets for the workload (and the one it reads for a result file); the
/// gate names them from here, so the hand-over and its re-check never spell them differently.
pub mod var {
    /// `verified`, or `unverified` for a start `MPGATE_ON_TRANSIENT_ERROR=allow` let through.
    pub const ENTITLEMENT: &str = "MPGATE_ENTITLEMENT";
    /// The RegisterUsage token mpgate verified.
    pub const SIGNATURE: &str = "MPGATE_SIGNATURE";
    /// 256 random bits as 64 lowercase hex digits: with the identity of the process mpgate
    /// exec'd, it derives the nonce the token was issued for (`crate::binding`).
    pub const SALT: &str = "MPGATE_SALT";
    /// The pod's UID from the downward API (`metadata.uid`): a result file written with it is
    /// accepted only where it has the same value.
    pub const POD_UID: &str = "MPGATE_POD_UID";
}

/// What mpgate handed over: the verified token and the nonce it must carry here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handover {
    pub signature: String,
    /// Derived from the salt for this process, or for this boot and pod (a result file).
    pub nonce: String,
    /// What the nonce was derived for: what a token issued for another nonce is refused as.
    pub bound_to: Bound,
}

/// What a hand-over's nonce was derived for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bound {
    /// A process, as the refusal names it (e.g. "this process (PID 7)").
    Process(String),
    /// The boot and pod of the result file at this path.
    ResultFile(String),
}

/// Why the workload must not trust its start (mpgate exits 12 for these, or 2 for a bad key
/// or a /proc it cannot read).
#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    #[error("MPGATE_SIGNATURE is not set: this process was not started by mpgate after a verified entitlement check (was the ENTRYPOINT overridden?)")]
    NotHandedOver,
    #[error("mpgate started this process without verifying the entitlement (MPGATE_ENTITLEMENT=unverified, allowed by MPGATE_ON_TRANSIENT_ERROR=allow)")]
    Unverified,
    #[error("{0} is not valid UTF-8")]
    NotUnicode(&'static str),
    #[error("MPGATE_SIGNATURE is set but MPGATE_SALT is not: the hand-over is bound to no process (made up, or from an mpgate older than this check); start the workload through an mpgate that hands over MPGATE_SALT")]
    Unbound,
    #[error("MPGATE_SALT is not 64 lowercase hex digits: it is not a salt mpgate handed over")]
    BadSalt,
    #[error("the hand-over was made for another process than {0}: mpgate binds it to the process it execs (MPGATE_SALT derives the token's nonce only there), so a copy started beside that process, in another container or by a later start cannot use it, whatever the clock says")]
    OtherProcess(String),
    #[error("cannot use result file {path}: {reason}")]
    ResultFile { path: String, reason: String },
    #[error(transparent)]
    Binding(#[from] BindingError),
    #[error("the public key cannot be used: {0}")]
    Key(#[from] KeyError),
    #[error("the handed-over token is not valid: {0}")]
    Token(#[from] TokenError),
}

impl Handover {
    /// Reads `MPGATE_SIGNATURE` and `MPGATE_SALT`, which mpgate sets before it execs, and binds
    /// them to this process.
    pub fn from_env() -> Result<Handover, ProofError> {
        Self::from_vars(&|name| std::env::var_os(name), &Process::current()?)
    }

    /// Like [`Handover::from_env`], with the environment given as a lookup function and the
    /// process the hand-over must have been made for.
    pub fn from_vars(
        env: &dyn Fn(&str) -> Option<OsString>,
        process: &Process,
    ) -> Result<Handover, ProofError> {
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
        let salt = read(var::SALT)?.ok_or(ProofError::Unbound)?;
        if !is_salt(&salt) {
            return Err(ProofError::BadSalt);
        }
        Ok(Handover {
            signature,
            nonce: process.nonce(&salt),
            bound_to: Bound::Process(format!("this process (PID {})", process.pid)),
        })
    }

    /// Reads a result file mpgate wrote in init mode (`--result-file`) for use here: this
    /// node's boot and the pod `MPGATE_POD_UID` names ([`Place::current`]).
    pub fn from_result_file(path: &Path) -> Result<Handover, ProofError> {
        Self::from_result_file_in(path, &Place::current()?)
    }

    /// Reads a result file for use in `place`. The file must record `"outcome": "verified"`,
    /// `"entitled": true`, a token and its salt, `place`'s boot id and, when it records a pod
    /// UID, `place`'s. The nonce is derived from the salt for `place`, never read from the
    /// file: a file carried to another node or pod, edited to say it was written there, still
    /// holds a token issued for the nonce of where it was written.
    pub fn from_result_file_in(path: &Path, place: &Place) -> Result<Handover, ProofError> {
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
        #[serde(rename_all = "camelCase")]
        struct ResultFile {
            entitled: bool,
            outcome: String,
            signature: Option<String>,
            salt: Option<String>,
            boot_id: Option<String>,
            pod_uid: Option<String>,
        }
        let result: ResultFile = serde_json::from_slice(&text)
            .map_err(|e| failed(format!("not an mpgate result file ({e})")))?;
        // The outcome and `entitled` must both say verified: a file edited to carry a token
        // from elsewhere next to a failed check's outcome is not a proof.
        let signature = match (result.outcome.as_str(), result.entitled, result.signature) {
            ("verified", true, Some(signature)) => signature,
            ("verified", true, None) => return Err(failed(
                "it records a verified check without a token (a contract checkout?): there is nothing to check offline".into(),
            )),
            ("unverified", ..) => return Err(ProofError::Unverified),
            ("verified", false, _) => return Err(failed(
                "its outcome and \"entitled\" disagree: it is not a file mpgate wrote".into(),
            )),
            (outcome, ..) => {
                let shown: String = outcome.chars().take(40).collect();
                return Err(failed(format!(
                    "it records outcome {shown:?}, not a verified entitlement"
                )));
            }
        };
        let Some(salt) = result.salt else {
            return Err(failed(
                "it records no salt: mpgate wrote it in entrypoint mode, whose hand-over is bound to the process it exec'd (check it there with 'mpgate verify' or mpgate_proof::verify_handover), or an mpgate older than this check wrote it".into(),
            ));
        };
        if !is_salt(&salt) {
            return Err(failed("its salt is not 64 lowercase hex digits".into()));
        }
        match result.boot_id {
            Some(boot) if boot == place.boot_id => {}
            Some(_) => return Err(failed(
                "it was written on another node, or before this node rebooted (its bootId is not this kernel's): a result file holds only in the pod whose init container wrote it".into(),
            )),
            None => return Err(failed(
                "it records no bootId: an mpgate older than this check wrote it".into(),
            )),
        }
        match (&result.pod_uid, &place.pod_uid) {
            (None, _) => {}
            (Some(file), Some(here)) if file == here => {}
            (Some(file), Some(here)) => {
                return Err(failed(format!(
                    "it was written in pod {}, and this is pod {} (MPGATE_POD_UID): a result file holds only in the pod whose init container wrote it",
                    shown(file),
                    shown(here)
                )))
            }
            (Some(file), None) => {
                return Err(failed(format!(
                    "it was written in pod {}, and MPGATE_POD_UID is not set here: set it from the downward API (valueFrom.fieldRef.fieldPath: metadata.uid) in this container as in the init container",
                    shown(file)
                )))
            }
        }
        // The pod the gate derived with: the file's, which is this one's when it names one.
        let written_in = Place {
            boot_id: place.boot_id.clone(),
            pod_uid: result.pod_uid,
        };
        Ok(Handover {
            signature,
            nonce: written_in.nonce(&salt),
            bound_to: Bound::ResultFile(path.display().to_string()),
        })
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
        match token::verify(&self.signature, key, &expected, SystemTime::now()) {
            Ok(()) => Ok(()),
            // Signed by AWS for this product, but for a nonce this salt does not derive here.
            Err(TokenError::ClaimMismatch { claim: "nonce", .. }) => Err(match &self.bound_to {
                Bound::Process(which) => ProofError::OtherProcess(which.clone()),
                Bound::ResultFile(path) => ProofError::ResultFile {
                    path: path.clone(),
                    reason: "its token was issued for another node, boot or pod (the nonce its salt derives here differs): a result file holds only in the pod whose init container wrote it".into(),
                },
            }),
            Err(e) => Err(e.into()),
        }
    }
}

/// A value from a file or the environment, shortened and quoted for a message.
fn shown(value: &str) -> String {
    format!("{:?}", value.chars().take(64).collect::<String>())
}

/// Checks this process's own hand-over (`MPGATE_SIGNATURE`, `MPGATE_SALT`), made for this
/// process and issued at most [`DEFAULT_MAX_TOKEN_AGE`] ago.
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

    const SALT: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const BOOT: &str = "0f6e2d2c-3b1a-4c1e-9f0a-2f6b7c9d1e4a";
    const POD: &str = "6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f";

    fn here(pod_uid: Option<&str>) -> Place {
        Place {
            boot_id: BOOT.into(),
            pod_uid: pod_uid.map(str::to_string),
        }
    }

    /// Reads `json` as a result file (written to a file of this test's own) in `place`.
    fn read_in(name: &str, json: &str, place: &Place) -> Result<Handover, ProofError> {
        let path =
            std::env::temp_dir().join(format!("mpgate-proof-{}-{name}.json", std::process::id()));
        std::fs::write(&path, json).unwrap();
        let read = Handover::from_result_file_in(&path, place);
        std::fs::remove_file(&path).unwrap();
        read
    }

    fn read(name: &str, json: &str) -> Result<Handover, ProofError> {
        read_in(name, json, &here(None))
    }

    /// A verified result file with `extra` members (JSON text, each with a leading comma).
    fn verified(extra: &str) -> String {
        format!(
            r#"{{"entitled":true,"outcome":"verified","signature":"a.b.c","nonce":"n"{extra}}}"#
        )
    }

    fn refused(name: &str, json: &str, place: &Place, words: &str) {
        match read_in(name, json, place) {
            Err(e @ ProofError::ResultFile { .. }) => {
                assert!(e.to_string().contains(words), "{name}: {e}")
            }
            other => panic!("{name}: {other:?}"),
        }
    }

    #[test]
    fn a_result_file_passes_only_with_outcome_verified_and_entitled() {
        let salted = format!(r#","salt":"{SALT}","bootId":"{BOOT}""#);
        let handover = read("verified", &verified(&salted)).unwrap();
        assert_eq!(handover.signature, "a.b.c");
        // Derived here, never read from the file.
        assert_eq!(handover.nonce, here(None).nonce(SALT));
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
            refused(name, json, &here(None), words);
        }
        let unverified =
            r#"{"entitled":false,"outcome":"unverified","signature":null,"nonce":"n"}"#;
        assert!(matches!(
            read("unverified", unverified),
            Err(ProofError::Unverified)
        ));
    }

    #[test]
    fn a_result_file_holds_only_on_its_boot_and_in_its_pod() {
        let at = |boot: &str, pod: Option<&str>| {
            let pod = pod
                .map(|p| format!(r#","podUid":"{p}""#))
                .unwrap_or_default();
            verified(&format!(r#","salt":"{SALT}","bootId":"{boot}"{pod}"#))
        };
        let other_boot = BOOT.replace('0', "1");
        let other_pod = POD.replace('6', "7");
        // Its pod, here: the nonce derived with the pod UID.
        let ok = read_in("pod", &at(BOOT, Some(POD)), &here(Some(POD))).unwrap();
        assert_eq!(ok.nonce, here(Some(POD)).nonce(SALT));
        assert_ne!(ok.nonce, here(None).nonce(SALT));
        // A file without a pod UID holds whether or not this container knows its pod.
        assert!(read_in("no-pod", &at(BOOT, None), &here(Some(POD))).is_ok());
        for (name, json, place, words) in [
            (
                "other-boot",
                at(&other_boot, None),
                here(None),
                "another node, or before this node rebooted",
            ),
            (
                "other-pod",
                at(BOOT, Some(&other_pod)),
                here(Some(POD)),
                "this is pod",
            ),
            (
                "pod-unknown-here",
                at(BOOT, Some(POD)),
                here(None),
                "MPGATE_POD_UID is not set here",
            ),
            (
                "no-boot",
                verified(&format!(r#","salt":"{SALT}""#)),
                here(None),
                "no bootId",
            ),
            (
                "no-salt",
                verified(&format!(r#","bootId":"{BOOT}""#)),
                here(None),
                "entrypoint mode",
            ),
            (
                "bad-salt",
                verified(&format!(
                    r#","salt":"{}","bootId":"{BOOT}""#,
                    SALT.to_uppercase()
                )),
                here(None),
                "64 lowercase hex",
            ),
        ] {
            refused(name, &json, &place, words);
        }
    }

    #[test]
    fn an_environment_hand_over_needs_a_salt_and_is_bound_to_the_process() {
        let process = Process {
            boot_id: BOOT.into(),
            pid_namespace: 4026531836,
            pid: 7,
            start_time: 99,
        };
        let env = |salt: &'static str| {
            move |name: &str| match name {
                "MPGATE_SIGNATURE" => Some("a.b.c".into()),
                "MPGATE_SALT" if !salt.is_empty() => Some(salt.into()),
                // Never read: the nonce is derived, not handed over.
                "MPGATE_NONCE" => Some("n".into()),
                _ => None,
            }
        };
        let handover = Handover::from_vars(&env(SALT), &process).unwrap();
        assert_eq!(handover.nonce, process.nonce(SALT));
        assert_eq!(
            handover.bound_to,
            Bound::Process("this process (PID 7)".into())
        );
        assert!(matches!(
            Handover::from_vars(&env(""), &process),
            Err(ProofError::Unbound)
        ));
        assert!(matches!(
            Handover::from_vars(&env("0123"), &process),
            Err(ProofError::BadSalt)
        ));
    }
}
