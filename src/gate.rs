//! Owns the entitlement phase: the check under stop signals (mpgate may be PID 1), a checkout they cut settled.

use std::ffi::OsString;
use std::time::Instant;

use tokio::signal::unix::{signal, SignalKind};

use crate::check::{self, check, Decision, Facts, InFlight, Kept};
use crate::config::{ConfigError, Pricing};
use crate::exit::Failure;
use crate::supervisor::Signals;

/// How the phase ended: what it learned and decided, and what the hand-over needs to carry
/// the decision out.
pub struct Checked {
    pub facts: Facts,
    pub decision: Decision,
    pub kept: Kept,
    /// A held seat's supervisor's handlers, installed as the check ended.
    pub signals: Option<Signals>,
}

impl Checked {
    fn new(facts: Facts, decision: Decision, kept: Kept) -> Self {
        Checked {
            facts,
            decision,
            kept,
            signals: None,
        }
    }
}

/// Runs the entitlement phase, ending early on SIGTERM, SIGINT or SIGHUP (mpgate may be PID 1,
/// where signals without a handler are ignored by the kernel).
pub async fn run(
    args: crate::cli::Args,
    preflight: Option<ConfigError>,
    env: &dyn Fn(&str) -> Option<OsString>,
    started: Instant,
) -> Checked {
    let mut facts = Facts::default();
    let mut kept = Kept::default();
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
            return Checked::new(facts, Decision::Failed(error.into()), kept);
        }
    };
    // A parent may have started mpgate with them blocked (the mask survives exec): they would
    // then never reach the handlers. Unblocked after the handlers exist, so one already
    // pending is handled too.
    unblock(&[libc::SIGTERM, libc::SIGINT, libc::SIGHUP]);
    let decision = tokio::select! {
        decision = check(args, preflight, env, started, &mut facts, &mut kept) => decision,
        _ = term.recv() => Decision::Failed(Failure::Interrupted { signal: libc::SIGTERM, name: "SIGTERM" }),
        _ = int.recv() => Decision::Failed(Failure::Interrupted { signal: libc::SIGINT, name: "SIGINT" }),
        _ = hup.recv() => Decision::Failed(Failure::Interrupted { signal: libc::SIGHUP, name: "SIGHUP" }),
    };
    // A held seat's supervisor takes every signal from here: its handlers are installed
    // before the next await, so none that comes meanwhile is lost.
    let signals = match &decision {
        // The metering agent runs beside the workload, or alone as a sidecar: supervised.
        Decision::Held { .. } | Decision::Metered { .. } => match Signals::install() {
            Ok(signals) => Some(signals),
            Err(e) => {
                check::give_back_held(&decision, &kept).await;
                let error = ConfigError::InvalidValue {
                    name: "signal handlers",
                    value: e.to_string(),
                    expected:
                        "mpgate must be able to handle the signals it forwards to the workload",
                };
                return Checked::new(facts, Decision::Failed(error.into()), Kept::default());
            }
        },
        _ => None,
    };
    if let Decision::Failed(Failure::Interrupted { .. }) = &decision {
        // A checkout the signal cut may have taken a seat.
        if let Some(InFlight(config, client_token)) = facts.checkout_in_flight.take() {
            if let Pricing::Contract(contract) = &config.pricing {
                check::settle(&config, contract, &client_token).await;
            }
        }
    }
    if matches!(decision, Decision::Failed(_)) {
        return Checked::new(facts, decision, kept);
    }
    // Decided: from here to the exec nothing reads these handlers, so a signal they caught
    // would be lost and the workload start anyway. Give the signals their default action (one
    // that comes now ends mpgate, as it would end the workload), then honour one caught just
    // before (the yield lets the runtime's signal driver deliver it). A held seat keeps the
    // handlers: the supervisor's own streams, installed already, take every signal from here.
    if signals.is_none() {
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
    match interrupted {
        None => Checked {
            facts,
            decision,
            kept,
            signals,
        },
        Some(failure) => {
            // The workload never starts: a held seat goes back at once.
            check::give_back_held(&decision, &kept).await;
            Checked::new(facts, Decision::Failed(failure), Kept::default())
        }
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
