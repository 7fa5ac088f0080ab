//! Owns the hand-over: the decision reported, then its plan carried out (exit 0, exec, or supervise with duties).

mod meter;
pub mod plan;
mod result;

use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Instant;

use crate::check::{self, Decision, Facts, Kept};
use crate::config::{ConfigError, Pricing, TransientPolicy};
use crate::exec;
use crate::exit::{code, Failure};
use crate::gate::Checked;
use crate::lease::{self, Heartbeat, Lease, LicenseManager};
use crate::license;
use crate::outcome::Outcome;
use crate::report::Reporter;
use crate::supervisor::{self, Ended, Signals};
use plan::{Environment, LicenseFacts, Plan};
pub use result::fail;

/// What is left to do once the result is reported.
pub enum Next {
    Exit(ExitCode),
    /// Exec in place (after `main` has stopped the runtime).
    Exec(Box<Exec>),
    /// Run the workload under the supervisor, on `main`'s runtime.
    Supervise(Box<Hold>),
    /// Usage pricing: the metering agent beside the workload (or alone, as a sidecar), on
    /// `main`'s runtime.
    Meter(Box<meter::Metering>),
}

/// Reports the decision and plans the hand-over.
pub async fn prepare(checked: Checked, reporter: &Reporter, started: Instant) -> Next {
    let Checked {
        facts,
        decision,
        kept,
        signals,
    } = checked;
    let elapsed_ms = started.elapsed().as_millis() as u64;
    let (signature, license, unverified) = match &decision {
        Decision::Failed(failure) => return Next::Exit(fail(failure, &facts, reporter)),
        Decision::Verified { signature } => (Some(signature.as_str()), None, None),
        Decision::Licensed {
            checkout,
            checked_in,
        } => (None, Some(LicenseFacts::of(checkout, *checked_in)), None),
        Decision::Held {
            checkout: Ok(checkout),
            ..
        } => (None, Some(LicenseFacts::of(checkout, false)), None),
        Decision::Metered { unverified: None } => (None, None, None),
        Decision::Held {
            checkout: Err(reason),
            ..
        }
        | Decision::Metered {
            unverified: Some(reason),
        }
        | Decision::Unverified { reason } => (None, None, Some(reason.as_str())),
    };
    let (entitlement, message) = match unverified {
        Some(reason) => (
            Outcome::Unverified,
            format!("started without verification: {reason}"),
        ),
        None => (Outcome::Verified, "the buyer is entitled".to_string()),
    };
    let success = result::report(
        &facts,
        unverified.is_none(),
        entitlement,
        code::ENTITLED,
        signature,
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
        check::give_back_held(&decision, &kept).await;
        return Next::Exit(fail(&failure, &facts, reporter));
    }
    let start = facts.usage.as_ref().and_then(|u| u.start.as_ref());
    match (&license, &facts.product_sku) {
        _ if facts.usage.is_some() => tracing::info!(
            product_code = facts.product_code.as_deref().unwrap_or(""),
            dimension = start.map(|s| s.dimension.as_str()),
            meteringRecordId = start.and_then(|s| s.metering_record_id.as_deref()),
            hour = start.map(|s| s.hour.as_str()),
            duplicate = start.map(|s| s.duplicate),
            attempts = facts.call.attempts,
            requestId = facts.call.request_id.as_deref(),
            elapsed_ms,
            entitlement = entitlement.as_str(),
            "{message}"
        ),
        (None, None) => tracing::info!(
            product_code = facts.product_code.as_deref().unwrap_or(""),
            public_key_version = facts.public_key_version.unwrap_or(0),
            attempts = facts.call.attempts,
            requestId = facts.call.request_id.as_deref(),
            elapsed_ms,
            entitlement = entitlement.as_str(),
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
            entitlement = entitlement.as_str(),
            "{message}"
        ),
    }
    let plan = Plan::of(&decision, !facts.command.is_empty());
    if plan == Plan::Exit {
        // The process exits next: the SDK client the call kept for its owner
        // (`facts.call.client`) is the kernel's to reclaim; its teardown would be 65 k
        // instructions, 2.3 % of an init-mode gate.
        std::mem::forget(facts);
        return Next::Exit(ExitCode::from(code::ENTITLED));
    }
    let hourly = facts.salt.as_deref().zip(signature);
    let env = Environment::of(entitlement, hourly, license.as_ref());
    match (plan, decision, signals) {
        (
            Plan::Supervise(_),
            Decision::Held {
                checkout,
                client_token,
            },
            Some(signals),
        ) => Next::Supervise(Box::new(Hold {
            facts,
            env,
            license,
            checkout: checkout.ok(),
            client_token,
            kept,
            signals,
        })),
        (
            Plan::Supervise(plan::Duties { meter: true, .. }) | Plan::Sidecar,
            Decision::Metered { .. },
            Some(signals),
        ) => Next::Meter(Box::new(meter::Metering {
            facts,
            env,
            kept,
            signals,
        })),
        _ => Next::Exec(Box::new(Exec { facts, env })),
    }
}

/// The workload replaces mpgate.
pub struct Exec {
    facts: Facts,
    env: Environment,
}

impl Exec {
    /// Execs the workload; returns only on failure, reported.
    pub fn run(self, reporter: &Reporter) -> ExitCode {
        let failure = Failure::Exec(exec::exec(
            &self.facts.command,
            &self.env.pairs(),
            &self.env.remove,
        ));
        fail(&failure, &self.facts, reporter)
    }
}

/// `--seat hold`: the workload under the supervisor, the lease beside it.
pub struct Hold {
    facts: Facts,
    env: Environment,
    license: Option<LicenseFacts>,
    checkout: Option<license::Checkout>,
    client_token: String,
    kept: Kept,
    signals: Signals,
}

impl Hold {
    /// Runs the workload to its end, then reports how the hold ended.
    pub async fn run(self, reporter: &Reporter) -> ExitCode {
        let Hold {
            facts,
            env,
            license,
            checkout,
            client_token,
            kept,
            signals,
        } = self;
        let Some(config) = kept.config else {
            unreachable!("a held seat keeps its configuration");
        };
        let Pricing::Contract(contract) = &config.pricing else {
            unreachable!("a held seat is contract pricing's");
        };
        let rules = lease::Rules {
            grace: contract.grace,
            timeout: config.timeout,
            on_transient_error: config.on_transient_error,
        };
        let seat = checkout
            .zip(kept.session)
            .map(|(checkout, session)| lease::Seat {
                session,
                consumption_token: checkout.consumption_token,
                expiration: checkout.expiration,
                expires_at: tokio::time::Instant::from_std(checkout.expires_at),
            });
        let grace = contract.grace;
        let mut lease = Lease::new(
            LicenseManager(Rc::clone(&config)),
            rules,
            seat,
            Some(client_token),
        );
        // The workload's heartbeat (MPGATE_LEASE_FD): without it a watcher in the workload
        // cannot tell a frozen mpgate from a healthy one. Without a socket the workload
        // runs unwatched, as before: mpgate still holds the seat.
        let heartbeat = Heartbeat::open(config.on_transient_error == TransientPolicy::Deny)
            .map_err(|e| tracing::warn!("no heartbeat for the workload (MPGATE_LEASE_FD): {e}"))
            .ok();
        let mut inherit = None;
        if let Some((heartbeat, theirs)) = heartbeat {
            lease = lease.with_heartbeat(heartbeat);
            inherit = Some(theirs);
        }
        let lease_fd = inherit.as_ref().map(|fd| fd.as_raw_fd().to_string());
        let mut set = env.pairs();
        if let Some(fd) = &lease_fd {
            set.push((mpgate_proof::lease::VAR, fd));
        }
        let mut workload = supervisor::Workload {
            command: &facts.command,
            set: &set,
            remove: &env.remove,
            grace,
            inherit,
        };
        let ended = supervisor::run(&mut workload, signals, &mut [&mut lease]).await;
        let (exit_code, loss) = match ended {
            Ended::Exited { exit_code, loss } => (exit_code, loss),
            Ended::NotStarted { signal, name } => {
                return fail(&Failure::Interrupted { signal, name }, &facts, reporter)
            }
            Ended::Failed(error) => return fail(&Failure::Exec(error), &facts, reporter),
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
            Some(loss) => result::lost(loss, reporter),
            None if license.is_none() => (
                exit_code,
                Outcome::Unverified,
                format!("the workload exited with {exit_code}"),
            ),
            None => (
                exit_code,
                Outcome::Verified,
                format!("the workload exited with {exit_code}"),
            ),
        };
        let last = result::report(
            &facts,
            outcome == Outcome::Verified,
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
}
