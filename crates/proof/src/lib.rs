//! Verifies what AWS Marketplace's `RegisterUsage` signs, and the hand-over
//! [mpgate](https://github.com/mpgate/mpgate) gives the workload it starts.
//!
//! This is the one verifier of the mpgate project: the gate checks the service's answer with
//! it, and a workload checks its own start with it. It accepts PS256 only, under one RSA
//! public key pinned by version, with `productCode`, `publicKeyVersion` and `nonce` compared
//! exactly, strict JSON in header and claims, and bounded token size and age.
//!
//! A workload started some other way than through the gate (ENTRYPOINT overridden,
//! initContainer removed) has no fresh token signed for its product, so it can refuse to run:
//!
//! ```no_run
//! // In the workload's main(), with the same public key the image gives mpgate:
//! const KEY: &[u8] = b"-----BEGIN PUBLIC KEY-----\n...\n-----END PUBLIC KEY-----\n";
//! if let Err(e) = mpgate_proof::verify_handover(KEY, "prod-abc123example", 1) {
//!     eprintln!("not started through mpgate: {e}");
//!     std::process::exit(12);
//! }
//! ```
//!
//! A process that mpgate did not start has nothing to show:
//!
//! ```
//! use mpgate_proof::{Handover, Process, ProofError};
//!
//! let environment = |_: &str| None; // no MPGATE_* variable set
//! let this_process = Process::current()?;
//! let refused = Handover::from_vars(&environment, &this_process).unwrap_err();
//! assert!(matches!(refused, ProofError::NotHandedOver));
//! println!("{refused}"); // "MPGATE_SIGNATURE is not set: this process was not started by mpgate ..."
//! # Ok::<(), mpgate_proof::BindingError>(())
//! ```
//!
//! The hand-over is bound to the process mpgate execs: mpgate sends AWS Marketplace a nonce
//! derived from a fresh salt and that process's identity (boot id, PID and start time, which
//! `execve` keeps), and hands over only the salt (`MPGATE_SALT`). The re-check derives the
//! nonce again from the salt and the calling process, so a copy of the hand-over in any other
//! process (a shell's background copy, another container, a later start) fails, whatever the
//! clock says ([`binding`] has the derivation). A result file (init mode) is bound to the
//! node's boot and the pod instead, and within them only the token's age (`max_age`, on the
//! node's clock) bounds a replay. For workloads not written in Rust the same check is
//! `mpgate verify`; `examples/workload.rs` is a workload that checks its start.
//!
//! With contract pricing and `mpgate --seat hold`, [`lease::watch`] ends the workload when the
//! seat mpgate holds for it may have lapsed (mpgate frozen, or gone); for workloads not
//! written in Rust the same watcher is `mpgate lease watch -- COMMAND`.

pub mod binding;
pub mod handover;
pub mod key;
pub mod lease;
pub mod token;

pub use binding::{BindingError, Place, Process};
pub use handover::{var, verify_handover, Bound, Handover, ProofError, DEFAULT_MAX_TOKEN_AGE};
pub use key::{decoding_key, fingerprint, DecodingKey, KeyError};
pub use token::{redacted, verify, Expected, TokenError, MAX_CLOCK_SKEW, MAX_TOKEN_BYTES};
