//! Owns `mpgate verify`: the workload's re-check of its hand-over, with the gate's configuration.

use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant};

use mpgate_proof::{BindingError, Bound, Handover, Place, Process, ProofError, TokenError};

use crate::check::Decision;
use crate::cli::Args;
use crate::config::{self, ConfigError, Trust};
use crate::exit::Failure;
use crate::gate;
use crate::pinned;

/// What the offline check found.
enum Offline {
    Verified(String),
    /// A result file whose token passed every check but its age: what `--renew` renews.
    /// `refusal` is the answer without it.
    Stale {
        age: u64,
        refusal: Failure,
    },
}

/// `mpgate verify`: the offline check, and with `--renew` the gate's check again when the
/// result file's only fault is its age. Returns what was verified.
pub fn run(
    args: &Args,
    env: &dyn Fn(&str) -> Option<OsString>,
    started: Instant,
) -> Result<String, Failure> {
    match check_offline(args, env)? {
        Offline::Verified(message) => Ok(message),
        Offline::Stale { age, refusal } if args.renew => renew(args, env, started, age, refusal),
        Offline::Stale { refusal, .. } => Err(refusal),
    }
}

/// Checks the hand-over (or `--result-file`) against the configured or pinned product code and
/// key, as the gate would, without a call to AWS; returns what was verified.
pub fn check_command(
    args: &Args,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<String, Failure> {
    match check_offline(args, env)? {
        Offline::Verified(message) => Ok(message),
        Offline::Stale { refusal, .. } => Err(refusal),
    }
}

fn check_offline(args: &Args, env: &dyn Fn(&str) -> Option<OsString>) -> Result<Offline, Failure> {
    // A contract hand-over carries no token to check: License Manager's SignedToken is signed
    // with a key AWS does not publish.
    if pinned::kind() == Some(pinned::Kind::Contract) {
        return Err(
            ConfigError::VerifyContract("this pinned build (see 'mpgate --version')").into(),
        );
    }
    if env("MPGATE_PRICING").is_some_and(|p| p == "contract") {
        return Err(ConfigError::VerifyContract("MPGATE_PRICING").into());
    }
    if pinned::kind() == Some(pinned::Kind::Usage) {
        return Err(ConfigError::VerifyUsage("this pinned build (see 'mpgate --version')").into());
    }
    if env("MPGATE_PRICING").is_some_and(|p| p == "usage") {
        return Err(ConfigError::VerifyUsage("MPGATE_PRICING").into());
    }
    let trust = Trust::from_args(args, env)?;
    let max_age = config::max_token_age(args.max_token_age.clone(), env)?;
    let handovers = match &args.result_file {
        Some(path) => vec![Handover::from_result_file_in(
            Path::new(path),
            &Place::from_vars(env).map_err(ProofError::from)?,
        )?],
        None => bound_to_the_caller(env)?,
    };
    // A signature that fails names where the key came from, as the gate's does.
    let verify_one = |handover: &Handover, max_age| {
        handover
            .verify_with(
                &trust.key.key,
                &trust.product_code,
                trust.key.version,
                max_age,
            )
            .map_err(|e| match e {
                ProofError::Token(t) => ProofError::Token(t.with_key_source(&trust.key.source)),
                other => other,
            })
    };
    // The first process the token was issued for decides; when it was issued for none of
    // them, the refusal names them all.
    let verify = |max_age| {
        let mut refused = Vec::new();
        for handover in &handovers {
            match (verify_one(handover, max_age), &handover.bound_to) {
                (Err(ProofError::OtherProcess(_)), Bound::Process(which)) => {
                    refused.push(which.as_str())
                }
                (other, _) => return other,
            }
        }
        Err(ProofError::OtherProcess(refused.join(" or ")))
    };
    match (verify(max_age), &args.result_file) {
        (Ok(()), _) => Ok(Offline::Verified(format!(
            "the hand-over is verified: AWS Marketplace signed it for product {} with key version {} within the last {}s",
            trust.product_code,
            trust.key.version,
            max_age.as_secs()
        ))),
        (Err(ProofError::Token(TokenError::Stale(age, max))), Some(path)) => {
            // Age is the only fault when the same token passes every other check (signature,
            // product code, key version, nonce, exp) without the age bound.
            verify(Duration::MAX)?;
            let refusal = Failure::StaleResultFile {
                path: Path::new(path).display().to_string(),
                age,
                max,
                setting: if pinned::is_pinned() {
                    "the age compiled into this pinned build"
                } else {
                    "MPGATE_MAX_TOKEN_AGE"
                },
            };
            Ok(Offline::Stale { age, refusal })
        }
        (Err(e), _) => Err(e.into()),
    }
}

/// The environment's hand-over, bound to the process that runs `mpgate verify` (its parent:
/// `sh -c 'mpgate verify && exec server'`) and, second, to `mpgate verify` itself (exec'd in
/// that process's place, as shells do with a last command). So it passes only when run by,
/// or as, the process mpgate exec'd: a copy of the workload is a process of its own, and so
/// is each of a shell's subshells, and the `mpgate verify` they run fails. A parent that
/// exited before the check leaves it to PID 1 or a subreaper, which is then checked instead:
/// it fails unless that is the very process mpgate exec'd, to which its answer then goes.
fn bound_to_the_caller(env: &dyn Fn(&str) -> Option<OsString>) -> Result<Vec<Handover>, Failure> {
    let me = Process::current().map_err(ProofError::from)?;
    let parent = match Process::parent() {
        Ok(parent) => Some(parent),
        Err(BindingError::ParentGone { .. }) => None,
        Err(e) => return Err(ProofError::from(e).into()),
    };
    let mut handovers = Vec::new();
    for (process, which) in parent
        .iter()
        .map(|p| {
            (
                p,
                format!(
                    "the process that runs this check (its parent, PID {})",
                    p.pid
                ),
            )
        })
        .chain([(
            &me,
            format!("this check itself (PID {}, if exec'd)", me.pid),
        )])
    {
        let mut handover = Handover::from_vars(env, process)?;
        handover.bound_to = Bound::Process(which);
        handovers.push(handover);
    }
    Ok(handovers)
}

/// `--renew`: the gate's own check (a fresh nonce, RegisterUsage, the token verified) with the
/// same configuration, as in init mode. It never starts unverified (`allow` is not read: this
/// command's promise is a verified entitlement) and writes no result file: the app container
/// mounts it read-only, and the init container's record stays as it was.
fn renew(
    args: &Args,
    env: &dyn Fn(&str) -> Option<OsString>,
    started: Instant,
    age: u64,
    stale: Failure,
) -> Result<String, Failure> {
    tracing::info!("{stale}; --renew: checking the entitlement again");
    let check = Args {
        on_transient_error: Some("deny".into()),
        result_file: None,
        termination_log: None,
        renew: false,
        command: Vec::new(),
        ..args.clone()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ConfigError::InvalidValue {
            name: "async runtime",
            value: e.to_string(),
            expected: "mpgate needs a thread and an epoll instance to call AWS",
        })?;
    let gate::Checked {
        facts, decision, ..
    } = runtime.block_on(gate::run(check, None, env, started));
    runtime.shutdown_timeout(Duration::from_millis(50));
    match decision {
        Decision::Verified { .. } => Ok(format!(
            "the entitlement check was renewed: the result file's token was {age}s old, and AWS Marketplace signed a fresh one for product {} with key version {} (attempts: {})",
            facts.product_code.as_deref().unwrap_or_default(),
            facts.public_key_version.unwrap_or_default(),
            facts.call.attempts
        )),
        Decision::Failed(failure) => Err(failure),
        // Not reached with `deny` and hourly pricing; never a pass.
        _ => Err(ProofError::Unverified.into()),
    }
}
