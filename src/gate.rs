//! Owns the entitlement phase end to end: configure, nonce, RegisterUsage, verify, then hand over.

use std::ffi::OsString;
use std::process::ExitCode;
use std::time::{Instant, SystemTime};

use tokio::signal::unix::{signal, SignalKind};

use crate::config::{Config, ConfigError, TransientPolicy};
use crate::exit::{code, Failure};
use crate::metering::{self, MeteringError};
use crate::report::{now_rfc3339, Report, Reporter};
use crate::{exec, nonce};
use mpgate_proof::token;

/// What the phase learned, for the result file and the hand-over.
#[derive(Debug, Default)]
pub struct Facts {
    pub product_code: Option<String>,
    pub public_key_version: Option<i32>,
    pub nonce: Option<String>,
    /// Attempts, the last request ID and warnings of the Metering call.
    pub call: metering::CallRecord,
    pub command: Vec<OsString>,
}

/// How the phase ended.
#[derive(Debug)]
pub enum Verdict {
    /// The token verified: the buyer is entitled.
    Verified {
        signature: String,
    },
    /// The service was unreachable and `--on-transient-error allow` let the workload start.
    Unverified {
        reason: String,
    },
    Failed(Failure),
}

/// Runs the entitlement phase, ending early on SIGTERM, SIGINT or SIGHUP (mpgate may be PID 1,
/// where signals without a handler are ignored by the kernel).
pub async fn run(
    args: crate::cli::Args,
    preflight: Option<ConfigError>,
    env: &dyn Fn(&str) -> Option<OsString>,
    started: Instant,
) -> (Facts, Verdict) {
    let mut facts = Facts::default();
    let (mut term, mut int, mut hup) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) {
        (Ok(t), Ok(i), Ok(h)) => (t, i, h),
        (Err(e), ..) | (_, Err(e), _) | (.., Err(e)) => {
            let error = ConfigError::InvalidValue {
                name: "signal handlers",
                value: e.to_string(),
                expected: "mpgate must be able to install SIGTERM/SIGINT/SIGHUP handlers",
            };
            return (facts, Verdict::Failed(error.into()));
        }
    };
    // A parent may have started mpgate with them blocked (the mask survives exec): they would
    // then never reach the handlers. Unblocked after the handlers exist, so one already
    // pending is handled too.
    unblock(&[libc::SIGTERM, libc::SIGINT, libc::SIGHUP]);
    let verdict = tokio::select! {
        verdict = check(args, preflight, env, started, &mut facts) => verdict,
        _ = term.recv() => Verdict::Failed(Failure::Interrupted { signal: libc::SIGTERM, name: "SIGTERM" }),
        _ = int.recv() => Verdict::Failed(Failure::Interrupted { signal: libc::SIGINT, name: "SIGINT" }),
        _ = hup.recv() => Verdict::Failed(Failure::Interrupted { signal: libc::SIGHUP, name: "SIGHUP" }),
    };
    if matches!(verdict, Verdict::Failed(_)) {
        return (facts, verdict);
    }
    // Decided: from here to the exec nothing reads these handlers, so a signal they caught
    // would be lost and the workload start anyway. Give the signals their default action (one
    // that comes now ends mpgate, as it would end the workload), then honour one caught just
    // before (the yield lets the runtime's signal driver deliver it).
    default_action(&[libc::SIGTERM, libc::SIGINT, libc::SIGHUP]);
    tokio::task::yield_now().await;
    let verdict = tokio::select! {
        biased;
        _ = term.recv() => Verdict::Failed(Failure::Interrupted { signal: libc::SIGTERM, name: "SIGTERM" }),
        _ = int.recv() => Verdict::Failed(Failure::Interrupted { signal: libc::SIGINT, name: "SIGINT" }),
        _ = hup.recv() => Verdict::Failed(Failure::Interrupted { signal: libc::SIGHUP, name: "SIGHUP" }),
        () = std::future::ready(()) => verdict,
    };
    (facts, verdict)
}

/// Restores the default action of `signals`, for the whole process.
fn default_action(signals: &[i32]) {
    for &signal in signals {
        // SAFETY: installing SIG_DFL has no memory effects; tokio's handler is not needed
        // any more (its streams are only polled once more, for what it already caught).
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
        }
    }
}

/// Unblocks `signals` on this thread, the one the current-thread runtime polls the phase on.
fn unblock(signals: &[i32]) {
    // SAFETY: sigemptyset initialises the set before use; pthread_sigmask only changes this
    // thread's mask.
    unsafe {
        let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        libc::sigemptyset(set.as_mut_ptr());
        for &signal in signals {
            libc::sigaddset(set.as_mut_ptr(), signal);
        }
        libc::pthread_sigmask(libc::SIG_UNBLOCK, set.as_ptr(), std::ptr::null_mut());
    }
}

async fn check(
    args: crate::cli::Args,
    preflight: Option<ConfigError>,
    env: &dyn Fn(&str) -> Option<OsString>,
    started: Instant,
    facts: &mut Facts,
) -> Verdict {
    facts.command = args.command.clone();
    if let Some(error) = preflight {
        return Verdict::Failed(error.into());
    }
    let config = match Config::from_args(args, env) {
        Ok(c) => c,
        Err(e) => return Verdict::Failed(e.into()),
    };
    if config.pinned {
        if let Err(e) = crate::config::refuse_profile_endpoints().await {
            return Verdict::Failed(e.into());
        }
    }
    facts.product_code = Some(config.product_code.clone());
    facts.public_key_version = Some(config.public_key_version);
    let nonce = match nonce::generate() {
        Ok(n) => n,
        Err(e) => return Verdict::Failed(ConfigError::Random(e.to_string()).into()),
    };
    facts.nonce = Some(nonce.clone());
    tracing::debug!(product_code = %config.product_code, public_key_version = config.public_key_version, nonce = %nonce, "calling RegisterUsage");

    let registration = match metering::register_usage(&config, &nonce, started, &mut facts.call)
        .await
    {
        Ok(r) => r,
        Err(MeteringError::Unreachable(reason))
            if config.on_transient_error == TransientPolicy::Allow =>
        {
            tracing::warn!(
                product_code = %config.product_code,
                "entitlement NOT verified: {reason}; starting anyway because MPGATE_ON_TRANSIENT_ERROR=allow"
            );
            return Verdict::Unverified { reason };
        }
        Err(e) => return Verdict::Failed(e.into()),
    };
    if let Some(expiry) = &registration.key_rotation {
        tracing::warn!(
            public_key_version = config.public_key_version,
            key_expires_at = %expiry,
            "public key version {} of product {} expires at {expiry}: {}",
            config.public_key_version,
            config.product_code,
            rotation_advice(&config)
        );
    }
    let signature = registration.signature.unwrap_or_default();
    let expected = token::Expected {
        product_code: &config.product_code,
        public_key_version: config.public_key_version,
        nonce: &nonce,
        max_age: config.max_token_age,
        // This run's fresh nonce rules out a replay; `iat` is checked when present.
        require_iat: false,
    };
    match token::verify(&signature, &config.key, &expected, SystemTime::now()) {
        Ok(()) => {
            tracing::debug!(token = %token::redacted(&signature), "token verified");
            Verdict::Verified { signature }
        }
        Err(e) => {
            tracing::debug!(token = %token::redacted(&signature), "token rejected");
            Verdict::Failed(e.into())
        }
    }
}

/// What to do before a rotating key expires, given what this build and configuration hold.
fn rotation_advice(config: &Config) -> String {
    let newer = config
        .key_versions
        .iter()
        .filter(|v| **v > config.public_key_version)
        .max();
    match (newer, config.pinned) {
        (Some(v), _) => format!("key version {v} is already here; set MPGATE_PUBLIC_KEY_VERSION={v} before then"),
        (None, true) => "get the new key and version from the AWS Marketplace Management Portal and rebuild this pinned mpgate with it".into(),
        (None, false) => "get the new key and version from the AWS Marketplace Management Portal, add the key (MPGATE_PUBLIC_KEY_DIR, or MPGATE_PUBLIC_KEY_FILE) and set MPGATE_PUBLIC_KEY_VERSION".into(),
    }
}

/// Reports the verdict, then execs the workload (never returns on success) or gives the exit code.
pub fn finish(facts: Facts, verdict: Verdict, reporter: &Reporter, started: Instant) -> ExitCode {
    let elapsed_ms = started.elapsed().as_millis() as u64;
    let (entitlement, signature) = match &verdict {
        Verdict::Failed(failure) => return fail(failure, &facts, reporter),
        Verdict::Verified { signature } => ("verified", Some(signature.as_str())),
        Verdict::Unverified { .. } => ("unverified", None),
    };
    let message = match &verdict {
        Verdict::Unverified { reason } => format!("started without verification: {reason}"),
        _ => "the buyer is entitled".to_string(),
    };
    let success = report(
        &facts,
        signature.is_some(),
        entitlement,
        code::ENTITLED,
        signature,
        &message,
    );
    if let Err(e) = reporter.write_result(&success) {
        let failure = Failure::Config(ConfigError::ResultFile {
            path: reporter
                .result_file
                .as_deref()
                .unwrap_or(std::path::Path::new(""))
                .display()
                .to_string(),
            reason: e.to_string(),
        });
        return fail(&failure, &facts, reporter);
    }
    tracing::info!(
        product_code = facts.product_code.as_deref().unwrap_or(""),
        public_key_version = facts.public_key_version.unwrap_or(0),
        attempts = facts.call.attempts,
        requestId = facts.call.request_id.as_deref(),
        elapsed_ms,
        entitlement,
        "{message}"
    );
    if facts.command.is_empty() {
        return ExitCode::from(code::ENTITLED);
    }
    let nonce = facts.nonce.as_deref().unwrap_or("");
    let mut set = vec![("MPGATE_ENTITLEMENT", entitlement), ("MPGATE_NONCE", nonce)];
    let mut remove = vec![];
    match signature {
        Some(s) => set.push(("MPGATE_SIGNATURE", s)),
        // A value inherited from the environment must not pass for a verified token.
        None => remove.push("MPGATE_SIGNATURE"),
    }
    let failure = Failure::Exec(exec::exec(&facts.command, &set, &remove));
    fail(&failure, &facts, reporter)
}

fn report<'a>(
    facts: &'a Facts,
    entitled: bool,
    outcome: &'a str,
    exit_code: u8,
    signature: Option<&'a str>,
    message: &'a str,
) -> Report<'a> {
    Report {
        entitled,
        outcome,
        exit_code,
        product_code: facts.product_code.as_deref(),
        public_key_version: facts.public_key_version,
        nonce: facts.nonce.as_deref(),
        signature,
        verified_at: signature.and_then(|_| now_rfc3339()),
        attempts: facts.call.attempts,
        request_id: facts.call.request_id.as_deref(),
        warnings: &facts.call.warnings,
        message,
    }
}

fn fail(failure: &Failure, facts: &Facts, reporter: &Reporter) -> ExitCode {
    let message = failure.to_string();
    let request_id = facts.call.request_id.as_deref();
    tracing::error!(
        exit_code = failure.exit_code(),
        outcome = failure.outcome(),
        requestId = request_id,
        "{message}"
    );
    let report = report(
        facts,
        false,
        failure.outcome(),
        failure.exit_code(),
        None,
        &message,
    );
    if let Err(e) = reporter.write_result(&report) {
        tracing::warn!(error = %e, "cannot write the result file");
    }
    match request_id {
        // AWS Support asks for it; the pod's events then carry it.
        Some(id) => reporter.write_termination_log(&format!("{message} (request ID {id})")),
        None => reporter.write_termination_log(&message),
    }
    ExitCode::from(failure.exit_code())
}
