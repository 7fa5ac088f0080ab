//! Owns the entitlement phase end to end: configure, check (RegisterUsage and its token, or a
//! License Manager checkout), then hand over.

use std::ffi::OsString;
use std::process::ExitCode;
use std::time::{Instant, SystemTime};

use tokio::signal::unix::{signal, SignalKind};

use crate::aws::{CallError, CallRecord};
use crate::config::{Config, ConfigError, Hourly, Pricing, SeatMode, TransientPolicy};
use crate::exit::{code, Failure};
use crate::lease::{self, Lease, LicenseManager};
use crate::license::{self, Checkout, LicenseError, Session};
use crate::metering::{self, MeteringError};
use crate::report::{now_rfc3339, Report, Reporter};
use crate::supervisor::{self, Ended, Signals};
use crate::{exec, nonce};
use mpgate_proof::token;

/// What the phase learned, for the result file and the hand-over.
#[derive(Debug, Default)]
pub struct Facts {
    /// `hourly` or `contract`, once the configuration is read.
    pub pricing: Option<&'static str>,
    pub product_code: Option<String>,
    pub public_key_version: Option<i32>,
    pub nonce: Option<String>,
    pub product_sku: Option<String>,
    /// Attempts, the last request ID and warnings of the entitlement call.
    pub call: CallRecord,
    pub command: Vec<OsString>,
    /// A CheckoutLicense under way, with its ClientToken: if a stop signal cuts it, what it
    /// may have taken is settled (`settle`).
    pub checkout_in_flight: Option<InFlight>,
}

/// A CheckoutLicense under way: what `settle` needs to learn what it took.
pub struct InFlight(Box<Config>, String);

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InFlight")
    }
}

/// How the phase ended.
pub enum Verdict {
    /// The token verified: the buyer is entitled.
    Verified {
        signature: String,
    },
    /// The license was checked out (`--seat check`: and checked in again).
    Licensed {
        checkout: Checkout,
        checked_in: bool,
    },
    /// The license was checked out and is held while the workload runs (`--seat hold`), or
    /// (`Err`: why) License Manager was unreachable and `allow` starts the workload unverified
    /// while mpgate keeps trying to check it out.
    Held {
        checkout: Result<(Checkout, Box<Session>), String>,
        /// With no checkout: its ClientToken, for the next one (`lease::Lease`).
        client_token: String,
        /// Its pricing is the contract being held.
        config: Box<Config>,
        signals: Signals,
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
    if let Verdict::Failed(Failure::Interrupted { .. }) = &verdict {
        // A checkout the signal cut may have taken a seat.
        if let Some(InFlight(config, client_token)) = facts.checkout_in_flight.take() {
            if let Pricing::Contract(contract) = &config.pricing {
                settle(&config, contract, &client_token).await;
            }
        }
    }
    if matches!(verdict, Verdict::Failed(_)) {
        return (facts, verdict);
    }
    // Decided: from here to the exec nothing reads these handlers, so a signal they caught
    // would be lost and the workload start anyway. Give the signals their default action (one
    // that comes now ends mpgate, as it would end the workload), then honour one caught just
    // before (the yield lets the runtime's signal driver deliver it). A held seat keeps the
    // handlers: the supervisor's own streams, installed already, take every signal from here.
    if !matches!(verdict, Verdict::Held { .. }) {
        default_action(&[libc::SIGTERM, libc::SIGINT, libc::SIGHUP]);
    }
    tokio::task::yield_now().await;
    let interrupted = tokio::select! {
        biased;
        _ = term.recv() => Some(Failure::Interrupted { signal: libc::SIGTERM, name: "SIGTERM" }),
        _ = int.recv() => Some(Failure::Interrupted { signal: libc::SIGINT, name: "SIGINT" }),
        _ = hup.recv() => Some(Failure::Interrupted { signal: libc::SIGHUP, name: "SIGHUP" }),
        () = std::future::ready(()) => None,
    };
    match (interrupted, verdict) {
        (None, verdict) => (facts, verdict),
        (
            Some(failure),
            Verdict::Held {
                checkout: Ok((checkout, session)),
                config,
                ..
            },
        ) => {
            // The workload never starts: the seat goes back at once.
            give_back(&session, &checkout, &config).await;
            (facts, Verdict::Failed(failure))
        }
        (Some(failure), _) => (facts, Verdict::Failed(failure)),
    }
}

/// Checks a consumption in (a short deadline: a failure is only a warning, and the workload
/// waits); true if License Manager took it back.
async fn give_back(session: &Session, checkout: &Checkout, config: &Config) -> bool {
    let mut record = CallRecord::default();
    let deadline = lease::check_in_deadline(config.timeout);
    match session
        .check_in(&checkout.consumption_token, deadline, &mut record)
        .await
    {
        Ok(()) => true,
        Err(error) => {
            // Never a lock-out: the seat comes back when the checkout expires.
            tracing::warn!(
                expiration = %license::rfc3339(checkout.expiration),
                "cannot check the license back in ({error}); the seat is released when the checkout expires"
            );
            false
        }
    }
}

/// Settles a checkout whose outcome is unknown (cut by a stop signal, or failed transiently:
/// an attempt may have been processed, its answer lost): it is asked again with its
/// ClientToken, which License Manager answers with the first checkout's answer (taking no
/// second seat) or, if none was made, a new one, and what that answer holds is checked in.
/// Bounded by two check-in deadlines; a failure is a warning.
async fn settle(config: &Config, contract: &crate::config::Contract, client_token: &str) {
    let deadline = lease::check_in_deadline(config.timeout);
    let mut record = CallRecord::default();
    let settled = tokio::time::timeout(deadline * 2, async {
        let (checkout, session) = license::checkout(
            config,
            contract,
            client_token,
            (Instant::now(), deadline),
            &mut record,
        )
        .await?;
        session
            .check_in(&checkout.consumption_token, deadline, &mut record)
            .await
    })
    .await;
    match settled {
        Ok(Ok(())) => tracing::info!(
            "the checkout that got no answer was asked again with its ClientToken, and the seat it took checked back in"
        ),
        Ok(Err(LicenseError::NotEntitled(_))) => {
            tracing::debug!("the checkout that got no answer took no seat")
        }
        Ok(Err(error)) => tracing::warn!(
            "cannot learn whether the checkout that got no answer took a seat ({error}); if it did, the seat is released when that checkout expires"
        ),
        Err(_) => tracing::warn!(
            "cannot learn whether the checkout that got no answer took a seat (no answer within {}); if it did, the seat is released when that checkout expires",
            crate::settings::humantime(deadline * 2)
        ),
    }
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
    match &config.pricing {
        Pricing::Hourly(hourly) => {
            facts.pricing = Some("hourly");
            check_hourly(&config, hourly, started, facts).await
        }
        Pricing::Contract(_) => {
            facts.pricing = Some("contract");
            check_contract(config, started, facts).await
        }
    }
}

/// RegisterUsage with a fresh nonce, then its token checked against the product's key.
async fn check_hourly(
    config: &Config,
    hourly: &Hourly,
    started: Instant,
    facts: &mut Facts,
) -> Verdict {
    facts.product_code = Some(hourly.product_code.clone());
    facts.public_key_version = Some(hourly.public_key_version);
    let nonce = match nonce::generate() {
        Ok(n) => n,
        Err(e) => return Verdict::Failed(ConfigError::Random(e.to_string()).into()),
    };
    facts.nonce = Some(nonce.clone());
    tracing::debug!(product_code = %hourly.product_code, public_key_version = hourly.public_key_version, nonce = %nonce, "calling RegisterUsage");

    let registration = match metering::register_usage(
        config,
        hourly,
        &nonce,
        started,
        &mut facts.call,
    )
    .await
    {
        Ok(r) => r,
        Err(MeteringError::Call(CallError::Unreachable(reason)))
            if config.on_transient_error == TransientPolicy::Allow =>
        {
            tracing::warn!(
                product_code = %hourly.product_code,
                "entitlement NOT verified: {reason}; starting anyway because MPGATE_ON_TRANSIENT_ERROR=allow"
            );
            return Verdict::Unverified { reason };
        }
        Err(e) => return Verdict::Failed(e.into()),
    };
    if let Some(expiry) = &registration.key_rotation {
        tracing::warn!(
            public_key_version = hourly.public_key_version,
            key_expires_at = %expiry,
            "public key version {} of product {} expires at {expiry}: {}",
            hourly.public_key_version,
            hourly.product_code,
            rotation_advice(hourly, config.pinned)
        );
    }
    let signature = registration.signature.unwrap_or_default();
    let expected = token::Expected {
        product_code: &hourly.product_code,
        public_key_version: hourly.public_key_version,
        nonce: &nonce,
        max_age: hourly.max_token_age,
        // This run's fresh nonce rules out a replay; `iat` is checked when present.
        require_iat: false,
    };
    match token::verify(&signature, &hourly.key, &expected, SystemTime::now()) {
        Ok(()) => {
            tracing::debug!(token = %token::redacted(&signature), "token verified");
            Verdict::Verified { signature }
        }
        Err(e) => {
            tracing::debug!(token = %token::redacted(&signature), "token rejected");
            Verdict::Failed(e.with_key_source(&hourly.key_source).into())
        }
    }
}

/// CheckoutLicense with a fresh client token; then the seat checked back in, or held.
async fn check_contract(config: Config, started: Instant, facts: &mut Facts) -> Verdict {
    let Pricing::Contract(contract) = &config.pricing else {
        unreachable!("check_contract is called for contract pricing only");
    };
    facts.product_sku = Some(contract.product_sku.clone());
    // Reused by the SDK's retries: a retried checkout whose first answer was lost is the same
    // checkout to License Manager, not a second seat.
    let client_token = match nonce::generate() {
        Ok(n) => n,
        Err(e) => return Verdict::Failed(ConfigError::Random(e.to_string()).into()),
    };
    tracing::debug!(product_sku = %contract.product_sku, "calling CheckoutLicense");
    facts.checkout_in_flight = Some(InFlight(Box::new(config.clone()), client_token.clone()));
    let checked_out = license::checkout(
        &config,
        contract,
        &client_token,
        (started, config.timeout),
        &mut facts.call,
    )
    .await;
    facts.checkout_in_flight = None;
    let allow = config.on_transient_error == TransientPolicy::Allow;
    if let Err(LicenseError::Call(CallError::Unreachable(_))) = &checked_out {
        // Its outcome is unknown; a hold with `allow` reuses the ClientToken instead, so the
        // seat it may have taken is the one the supervisor gets.
        if !(allow && contract.seat == SeatMode::Hold) {
            settle(&config, contract, &client_token).await;
        }
    }
    let checkout = match checked_out {
        Ok(done) => Ok(done),
        Err(LicenseError::Call(CallError::Unreachable(reason))) if allow => {
            tracing::warn!(
                product_sku = %contract.product_sku,
                "entitlement NOT verified: {reason}; starting anyway because MPGATE_ON_TRANSIENT_ERROR=allow"
            );
            Err(reason)
        }
        Err(e) => return Verdict::Failed(e.into()),
    };
    match (contract.seat, checkout) {
        (SeatMode::Check, Ok((checkout, session))) => {
            let checked_in = give_back(&session, &checkout, &config).await;
            Verdict::Licensed {
                checkout,
                checked_in,
            }
        }
        (SeatMode::Check, Err(reason)) => Verdict::Unverified { reason },
        (SeatMode::Hold, checkout) => match Signals::install() {
            Ok(signals) => Verdict::Held {
                checkout: checkout.map(|(c, s)| (c, Box::new(s))),
                client_token,
                config: Box::new(config),
                signals,
            },
            Err(e) => {
                if let Ok((checkout, session)) = &checkout {
                    give_back(session, checkout, &config).await;
                }
                Verdict::Failed(
                    ConfigError::InvalidValue {
                        name: "signal handlers",
                        value: e.to_string(),
                        expected:
                            "mpgate must be able to handle the signals it forwards to the workload",
                    }
                    .into(),
                )
            }
        },
    }
}

/// What to do before a rotating key expires, given what this build and configuration hold.
fn rotation_advice(hourly: &Hourly, pinned: bool) -> String {
    let newer = hourly
        .key_versions
        .iter()
        .filter(|v| **v > hourly.public_key_version)
        .max();
    match (newer, pinned) {
        (Some(v), _) => format!("key version {v} is already here; set MPGATE_PUBLIC_KEY_VERSION={v} before then"),
        (None, true) => "get the new key and version from the AWS Marketplace Management Portal and rebuild this pinned mpgate with it".into(),
        (None, false) => "get the new key and version from the AWS Marketplace Management Portal, add the key (MPGATE_PUBLIC_KEY_DIR, or MPGATE_PUBLIC_KEY_FILE) and set MPGATE_PUBLIC_KEY_VERSION".into(),
    }
}

/// The variables a hand-over may set: each one not set is removed, so a value inherited from
/// the environment never passes for a proof.
const PROOF_VARIABLES: [&str; 6] = [
    "MPGATE_NONCE",
    "MPGATE_SIGNATURE",
    "MPGATE_LICENSE_ARN",
    "MPGATE_LICENSE_ENTITLEMENTS",
    "MPGATE_LICENSE_EXPIRATION",
    "MPGATE_LICENSE_TOKEN",
];

/// What a checkout tells the workload and the result file.
struct LicenseFacts {
    arn: String,
    entitlements: serde_json::Value,
    expiration: String,
    signed_token: Option<String>,
    checked_in: bool,
    /// When the checkout was verified (kept when a hold rewrites the result file).
    verified_at: Option<String>,
}

impl LicenseFacts {
    fn of(checkout: &Checkout, checked_in: bool) -> Self {
        LicenseFacts {
            arn: checkout.license_arn.clone(),
            entitlements: serde_json::to_value(&checkout.entitlements).unwrap_or_default(),
            expiration: license::rfc3339(checkout.expiration),
            signed_token: checkout.signed_token.clone(),
            checked_in,
            verified_at: now_rfc3339(),
        }
    }
}

/// Reports the verdict, then hands over: execs the workload (never returns on success), runs
/// it as a child while holding the seat, or gives the exit code.
pub fn finish(
    facts: Facts,
    verdict: Verdict,
    reporter: &Reporter,
    started: Instant,
    runtime: tokio::runtime::Runtime,
) -> ExitCode {
    let elapsed_ms = started.elapsed().as_millis() as u64;
    let (signature, license, unverified) = match &verdict {
        Verdict::Failed(failure) => return fail(failure, &facts, reporter),
        Verdict::Verified { signature } => (Some(signature.clone()), None, None),
        Verdict::Licensed {
            checkout,
            checked_in,
        } => (None, Some(LicenseFacts::of(checkout, *checked_in)), None),
        Verdict::Held {
            checkout: Ok((checkout, _)),
            ..
        } => (None, Some(LicenseFacts::of(checkout, false)), None),
        Verdict::Held {
            checkout: Err(reason),
            ..
        }
        | Verdict::Unverified { reason } => (None, None, Some(reason.as_str())),
    };
    let (entitlement, message) = match unverified {
        Some(reason) => (
            "unverified",
            format!("started without verification: {reason}"),
        ),
        None => ("verified", "the buyer is entitled".to_string()),
    };
    let success = report(
        &facts,
        unverified.is_none(),
        entitlement,
        code::ENTITLED,
        signature.as_deref(),
        license.as_ref(),
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
        if let Verdict::Held {
            checkout: Ok((checkout, session)),
            config,
            ..
        } = &verdict
        {
            runtime.block_on(give_back(session, checkout, config));
        }
        return fail(&failure, &facts, reporter);
    }
    match (&license, &facts.product_sku) {
        (None, None) => tracing::info!(
            product_code = facts.product_code.as_deref().unwrap_or(""),
            public_key_version = facts.public_key_version.unwrap_or(0),
            attempts = facts.call.attempts,
            requestId = facts.call.request_id.as_deref(),
            elapsed_ms,
            entitlement,
            "{message}"
        ),
        (l, sku) => tracing::info!(
            product_sku = sku.as_deref().unwrap_or(""),
            license_arn = l.as_ref().map(|l| l.arn.as_str()),
            entitlements = l.as_ref().map(|l| l.entitlements.to_string()),
            expiration = l.as_ref().map(|l| l.expiration.as_str()),
            attempts = facts.call.attempts,
            requestId = facts.call.request_id.as_deref(),
            elapsed_ms,
            entitlement,
            "{message}"
        ),
    }
    if facts.command.is_empty() {
        return ExitCode::from(code::ENTITLED);
    }
    let mut set: Vec<(&str, String)> = vec![("MPGATE_ENTITLEMENT", entitlement.into())];
    if let (Some(nonce), Some(signature)) = (&facts.nonce, signature) {
        set.extend([
            ("MPGATE_NONCE", nonce.clone()),
            ("MPGATE_SIGNATURE", signature),
        ]);
    }
    if let Some(l) = &license {
        set.extend([
            ("MPGATE_LICENSE_ARN", l.arn.clone()),
            ("MPGATE_LICENSE_ENTITLEMENTS", l.entitlements.to_string()),
            ("MPGATE_LICENSE_EXPIRATION", l.expiration.clone()),
        ]);
        if let Some(token) = &l.signed_token {
            set.push(("MPGATE_LICENSE_TOKEN", token.clone()));
        }
    }
    let set: Vec<(&str, &str)> = set.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let remove: Vec<&str> = PROOF_VARIABLES
        .into_iter()
        .filter(|name| !set.iter().any(|(set, _)| set == name))
        .collect();
    if let Verdict::Held {
        checkout,
        client_token,
        config,
        signals,
    } = verdict
    {
        let seat = checkout.ok().map(|(checkout, session)| lease::Seat {
            session: *session,
            consumption_token: checkout.consumption_token,
            expiration: checkout.expiration,
            expires_at: tokio::time::Instant::from_std(checkout.expires_at),
        });
        return hold(
            runtime,
            (seat, client_token, &config, signals),
            (&facts, &set, &remove),
            license,
            reporter,
        );
    }
    // Stop the runtime (and its blocking DNS threads) before exec replaces the process.
    runtime.shutdown_timeout(std::time::Duration::from_millis(50));
    let failure = Failure::Exec(exec::exec(&facts.command, &set, &remove));
    fail(&failure, &facts, reporter)
}

/// `--seat hold`: runs the workload under the supervisor, the lease beside it, then reports
/// how the hold ended.
fn hold(
    runtime: tokio::runtime::Runtime,
    (seat, client_token, config, signals): (
        Option<lease::Seat<license::Session>>,
        String,
        &Config,
        Signals,
    ),
    (facts, set, remove): (&Facts, &[(&str, &str)], &[&str]),
    license: Option<LicenseFacts>,
    reporter: &Reporter,
) -> ExitCode {
    let Pricing::Contract(contract) = &config.pricing else {
        unreachable!("a held seat is contract pricing's");
    };
    let rules = lease::Rules {
        grace: contract.grace,
        timeout: config.timeout,
        on_transient_error: config.on_transient_error,
    };
    let manager = LicenseManager(std::rc::Rc::new(config.clone()));
    let mut lease = Lease::new(manager, rules, seat, Some(client_token));
    let workload = supervisor::Workload {
        command: &facts.command,
        set,
        remove,
        grace: contract.grace,
    };
    let ended = runtime.block_on(supervisor::run(&workload, signals, &mut [&mut lease]));
    let (exit_code, loss) = match ended {
        Ended::Exited { exit_code, loss } => (exit_code, loss),
        Ended::NotStarted { signal, name } => {
            return fail(&Failure::Interrupted { signal, name }, facts, reporter)
        }
        Ended::Failed(error) => return fail(&Failure::Exec(error), facts, reporter),
    };
    let license = license.map(|mut l| {
        l.checked_in = lease.checked_in();
        if let Some(expiration) = lease.expiration() {
            l.expiration = license::rfc3339(expiration);
        }
        l
    });
    // The exit code of the README's table for why the seat went (an IAM denial is 13, as
    // at the checkout), or the workload's own.
    let (exit_code, outcome, message) = match loss {
        Some(loss) => {
            tracing::error!(
                exit_code = loss.exit_code,
                outcome = loss.outcome,
                "{}",
                loss.message
            );
            reporter.write_termination_log(&loss.message);
            (loss.exit_code, loss.outcome, loss.message)
        }
        None if license.is_none() => (
            exit_code,
            "unverified",
            format!("the workload exited with {exit_code}"),
        ),
        None => (
            exit_code,
            "verified",
            format!("the workload exited with {exit_code}"),
        ),
    };
    let last = report(
        facts,
        outcome == "verified",
        outcome,
        exit_code,
        None,
        license.as_ref(),
        &message,
    );
    if let Err(e) = reporter.write_result(&last) {
        tracing::warn!(error = %e, "cannot write the result file");
    }
    ExitCode::from(exit_code)
}

fn report<'a>(
    facts: &'a Facts,
    entitled: bool,
    outcome: &'a str,
    exit_code: u8,
    signature: Option<&'a str>,
    license: Option<&'a LicenseFacts>,
    message: &'a str,
) -> Report<'a> {
    Report {
        entitled,
        outcome,
        exit_code,
        pricing: facts.pricing,
        product_code: facts.product_code.as_deref(),
        public_key_version: facts.public_key_version,
        nonce: facts.nonce.as_deref(),
        signature,
        product_sku: facts.product_sku.as_deref(),
        license_arn: license.map(|l| l.arn.as_str()),
        entitlements: license.map(|l| &l.entitlements),
        expiration: license.map(|l| l.expiration.as_str()),
        checked_in: license.map(|l| l.checked_in),
        // Present exactly when `entitled` is: the time of the check that verified it (a held
        // seat keeps its start's). A lost license is not entitled, so it has none.
        verified_at: match (entitled, license) {
            (false, _) => None,
            (true, Some(l)) => l.verified_at.clone(),
            (true, None) => signature.and_then(|_| now_rfc3339()),
        },
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
