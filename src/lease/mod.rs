//! Owns the `--seat hold` duty: the seat's state machine (extend, check out again, expire, check in) beside the workload.

pub mod calls;
pub mod heartbeat;

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use rand::{Rng, TryRngCore};
use tokio::time::Instant;

use crate::aws::CallError;
use crate::config::TransientPolicy;
use crate::exit::Failure;
use crate::license::{rfc3339, Extension, LicenseError};
use crate::supervisor::{Duty, Event, Loss, Phase};
pub use calls::{LicenseManager, Licenses, Seat};
pub use heartbeat::Heartbeat;

/// After a transient failure, the next extension comes this soon (or at a quarter of what is
/// left, if sooner), so a short outage does not cost the seat.
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// With `--on-transient-error allow` and no seat (it expired unextended, or License Manager
/// was unreachable at the start), how often (at most: MPGATE_TIMEOUT if shorter) mpgate tries
/// to check the license out again.
const RECHECKOUT_EVERY: Duration = Duration::from_secs(30);
/// A check-in is only given this long (at most: MPGATE_TIMEOUT if shorter): a failed one is a
/// warning, and the platform's stop timeout is running.
const CHECK_IN_DEADLINE: Duration = Duration::from_secs(5);

/// How long a check-in may take, given MPGATE_TIMEOUT.
pub fn check_in_deadline(timeout: Duration) -> Duration {
    CHECK_IN_DEADLINE.min(timeout)
}

/// The rules for keeping a seat.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// The workload's grace period (for the loss's log line: the supervisor applies it).
    pub grace: Duration,
    /// The deadline of each call (MPGATE_TIMEOUT).
    pub timeout: Duration,
    pub on_transient_error: TransientPolicy,
}

/// A lease operation in flight.
type Task<S> = Pin<Box<dyn Future<Output = Done<S>>>>;

enum Done<S> {
    Extended(Result<Extension, LicenseError>),
    CheckedOut(Result<Seat<S>, LicenseError>),
    CheckedIn(Result<(), LicenseError>),
}

/// A held seat, kept while the workload runs and given back when it stops or ends.
pub struct Lease<L: Licenses> {
    calls: L,
    rules: Rules,
    /// `None` when the workload started unverified (`allow`): the lease keeps checking out.
    seat: Option<Seat<L::Session>>,
    /// With no seat: the ClientToken of the checkout that got no answer, reused by the next
    /// one, so that a seat License Manager took for it is the one mpgate gets.
    client_token: Option<String>,
    phase: Phase,
    next_renewal: Option<Instant>,
    task: Option<Task<L::Session>>,
    /// A check-in was made (`checked_in`: and License Manager took the seat back).
    check_in_done: bool,
    checked_in: bool,
    /// License Manager said it no longer knows the consumption: nothing to check in.
    gone: bool,
    /// The last extension failed transiently: an expiry now is License Manager's doing.
    failing: bool,
    /// A loss was reported: the lease only checks in at the end.
    lost: bool,
    /// What the workload is told at the checkout and every extension (`MPGATE_LEASE_FD`).
    heartbeat: Option<Heartbeat>,
}

impl<L: Licenses> Lease<L> {
    pub fn new(
        calls: L,
        rules: Rules,
        seat: Option<Seat<L::Session>>,
        client_token: Option<String>,
    ) -> Self {
        let next_renewal = Some(match &seat {
            Some(seat) => renewal_time(seat.expires_at),
            None => Instant::now() + RECHECKOUT_EVERY.min(rules.timeout),
        });
        Lease {
            client_token: client_token.filter(|_| seat.is_none()),
            calls,
            rules,
            seat,
            phase: Phase::Running,
            next_renewal,
            task: None,
            check_in_done: false,
            checked_in: false,
            gone: false,
            failing: false,
            lost: false,
            heartbeat: None,
        }
    }

    /// Gives the workload a heartbeat; its first line (the seat's time left, or no deadline
    /// with no seat) is written now, before the workload starts, so the workload finds it as
    /// soon as it looks.
    pub fn with_heartbeat(mut self, heartbeat: Heartbeat) -> Self {
        self.heartbeat = Some(heartbeat);
        self.beat();
        self
    }

    /// One heartbeat for the seat held now.
    fn beat(&mut self) {
        let Some(heartbeat) = &mut self.heartbeat else {
            return;
        };
        match &self.seat {
            Some(seat) => heartbeat.beat(
                seat.expires_at.saturating_duration_since(Instant::now()),
                seat.expiration,
            ),
            None => heartbeat.unheld(),
        }
    }

    /// Whether License Manager took the seat back.
    pub fn checked_in(&self) -> bool {
        self.checked_in
    }

    /// When the last consumption expires (or expired), if there was one.
    pub fn expiration(&self) -> Option<SystemTime> {
        self.seat.as_ref().map(|s| s.expiration)
    }

    fn deny(&self) -> bool {
        self.rules.on_transient_error == TransientPolicy::Deny
    }

    /// Runs until there is something to report: a loss, or (once the workload exited) the end.
    async fn step(&mut self) -> Event {
        loop {
            if self.phase == Phase::Exited && self.task.is_none() {
                match &self.seat {
                    Some(seat) if !self.check_in_done && !self.gone => {
                        let deadline = check_in_deadline(self.rules.timeout);
                        let call = self.calls.check_in(seat, deadline);
                        self.task = Some(Box::pin(async move { Done::CheckedIn(call.await) }));
                    }
                    _ => return Event::Done,
                }
            }
            if self.phase == Phase::Stopping
                && self.task.is_none()
                && !self.check_in_done
                && !self.gone
            {
                if let Some(seat) = &self.seat {
                    let call = self
                        .calls
                        .check_in(seat, check_in_deadline(self.rules.timeout));
                    self.task = Some(Box::pin(async move { Done::CheckedIn(call.await) }));
                }
            }
            // The seat's expiry matters while it is held and extensions may still fail.
            let expiry = self
                .seat
                .as_ref()
                .filter(|_| self.deny() && !self.lost && self.phase == Phase::Running)
                .map(|seat| seat.expires_at);
            let idle = self.task.is_none();
            let lost = tokio::select! {
                biased;
                done = run_task(&mut self.task), if !idle => {
                    self.task = None;
                    self.settle(done)
                }
                () = sleep_until(self.next_renewal), if self.next_renewal.is_some() && idle => {
                    self.next_renewal = None;
                    self.renew()
                }
                () = sleep_until(expiry), if expiry.is_some() => {
                    // Extensions kept failing, or one is still in flight, as the seat expires.
                    // A call in flight goes on: its answer may carry the token to check in.
                    let reason = match &self.seat {
                        Some(seat) => expired(seat, (self.failing || !idle) && !stopped(seat)),
                        None => CallError::Unreachable("no seat".into()).into(),
                    };
                    Some(reason)
                }
                else => std::future::pending().await,
            };
            if let Some(error) = lost {
                return Event::Lost(self.lose(error));
            }
        }
    }

    /// What a finished call changes; a final failure to report.
    fn settle(&mut self, done: Done<L::Session>) -> Option<LicenseError> {
        // After the workload's end only what the call changed is kept; before it, what it
        // means is said too.
        let exited = self.phase == Phase::Exited;
        let ending = self.phase != Phase::Running || self.lost;
        match done {
            Done::CheckedIn(result) => {
                self.check_in_done = true;
                self.checked_in = checked_in_or_warn(result);
            }
            Done::Extended(Ok(extension)) => {
                self.failing = false;
                if let Some(seat) = &mut self.seat {
                    seat.consumption_token = extension.consumption_token;
                    seat.expiration = extension.expiration;
                    seat.expires_at = Instant::from_std(extension.expires_at);
                    if !exited {
                        tracing::debug!(expiration = %rfc3339(seat.expiration), "seat extended");
                    }
                    if !ending {
                        self.next_renewal = Some(renewal_time(seat.expires_at));
                    }
                }
                if !ending {
                    self.beat();
                }
            }
            Done::CheckedOut(Ok(new)) => {
                self.failing = false;
                self.client_token = None;
                if !exited {
                    tracing::info!(expiration = %rfc3339(new.expiration), "seat checked out");
                }
                if !ending {
                    self.next_renewal = Some(renewal_time(new.expires_at));
                }
                self.seat = Some(new);
                if !ending {
                    self.beat();
                }
            }
            Done::Extended(Err(error)) | Done::CheckedOut(Err(error)) => {
                self.gone |= is_gone(&error);
                // Whatever the late call says, the seat ran out while mpgate was stopped.
                if let Some(seat) = self
                    .seat
                    .as_ref()
                    .filter(|s| !ending && self.deny() && stopped(s))
                {
                    return Some(expired(seat, false));
                }
                let left = self
                    .seat
                    .as_ref()
                    .map(|s| s.expires_at.saturating_duration_since(Instant::now()))
                    .unwrap_or_default();
                if ending {
                    // Already ending: only the check-in is left to do.
                } else if !is_transient(&error) {
                    return Some(error);
                } else if !left.is_zero() {
                    self.failing = true;
                    tracing::warn!(expiration = %self.seat.as_ref().map(|s| rfc3339(s.expiration)).unwrap_or_default(), "cannot extend the seat yet ({error}); trying again before it expires");
                    self.next_renewal = Some(Instant::now() + RETRY_AFTER.min(left / 4));
                } else if !self.deny() {
                    tracing::warn!("no seat is held ({error}); the workload keeps running because MPGATE_ON_TRANSIENT_ERROR=allow, and mpgate tries to check the license out again");
                    self.next_renewal =
                        Some(Instant::now() + RECHECKOUT_EVERY.min(self.rules.timeout));
                } else {
                    return Some(error);
                }
            }
        }
        None
    }

    /// Time to extend the seat, or (with none) to check out again; a final failure to report.
    fn renew(&mut self) -> Option<LicenseError> {
        let now = Instant::now();
        match &self.seat {
            Some(seat) if seat.expires_at > now => {
                let left = seat.expires_at - now;
                let deadline = self.rules.timeout.min(left).max(Duration::from_secs(1));
                let call = self.calls.extend(seat, deadline);
                self.task = Some(Box::pin(async move { Done::Extended(call.await) }));
            }
            // With `deny`, an expired seat is never replaced by a new checkout: the workload
            // ran unheld meanwhile.
            Some(seat) if self.deny() => return Some(expired(seat, self.failing)),
            _ => {
                let token = match self.client_token.clone() {
                    Some(token) => Ok(token),
                    None => crate::nonce::generate().map_err(|e| e.to_string()),
                };
                self.task = Some(match token {
                    Ok(token) => {
                        self.client_token = Some(token.clone());
                        let call = self.calls.checkout(token);
                        Box::pin(async move { Done::CheckedOut(call.await) })
                    }
                    Err(e) => {
                        let error = CallError::Unreachable(format!("no random client token: {e}"));
                        Box::pin(async move { Done::CheckedOut(Err(error.into())) })
                    }
                });
            }
        }
        None
    }

    /// The license is gone: said, and reported to the supervisor, which stops the workload.
    fn lose(&mut self, error: LicenseError) -> Loss {
        let what = match &error {
            LicenseError::Lost(_) | LicenseError::NotEntitled(_) => "the seat is lost",
            _ => "the seat cannot be kept",
        };
        let grace = self.rules.grace;
        tracing::error!(
            "{what}: {error}; stopping the workload (SIGTERM, then SIGKILL after {grace:?})"
        );
        self.lost = true;
        self.next_renewal = None;
        let failure = Failure::License(error);
        Loss {
            exit_code: failure.exit_code(),
            outcome: failure.outcome(),
            message: failure.to_string(),
        }
    }
}

impl<L: Licenses> Duty for Lease<L> {
    fn enter(&mut self, phase: Phase) {
        // After its own loss, the seat is checked in when the workload has ended.
        if phase == Phase::Stopping && self.lost {
            return;
        }
        self.phase = phase;
        self.next_renewal = None;
    }

    fn next(&mut self) -> Pin<Box<dyn Future<Output = Event> + '_>> {
        Box::pin(self.step())
    }

    fn when_stopping(&self) -> Option<&'static str> {
        Some("the seat is checked in")
    }
}

/// Why the seat expired: License Manager did not extend it in time (`failing`: 14), or mpgate
/// did not ask in time, having been stopped (SIGSTOP) or its node suspended for longer than
/// the checkout's lifetime: then License Manager has released it while the workload ran (10).
fn expired<S>(seat: &Seat<S>, failing: bool) -> LicenseError {
    let at = rfc3339(seat.expiration);
    if failing {
        CallError::Unreachable(format!(
            "the seat expired at {at} before License Manager could extend it"
        ))
        .into()
    } else {
        LicenseError::Lost(format!(
            "the seat expired at {at} before mpgate could extend it (mpgate was stopped, or its node suspended, for longer than the checkout's lifetime), so License Manager has released it: run mpgate as the container's PID 1 with no shared PID namespace"
        ))
    }
}

/// A call's deadline ends by the seat's expiry, so one that ends well after it was held up
/// by mpgate itself being stopped (SIGSTOP, a suspended node), not by the network: the seat
/// expired unextended (exit 10), whatever the call then says.
fn stopped<S>(seat: &Seat<S>) -> bool {
    Instant::now() > seat.expires_at + STOPPED_AFTER
}

/// How late past the seat's expiry a call may end on a busy machine.
const STOPPED_AFTER: Duration = Duration::from_secs(2);

/// Whether License Manager's answer says the consumption is gone (nothing to check in).
fn is_gone(error: &LicenseError) -> bool {
    matches!(error, LicenseError::Lost(_) | LicenseError::NotEntitled(_))
}

/// A loss License Manager declares, a call it refuses (an IAM denial: the same call is
/// refused again) and a success answer that is unusable (as at the checkout: exit 12, never
/// covered by `allow`) are final; the rest may clear before expiration.
fn is_transient(error: &LicenseError) -> bool {
    !matches!(
        error,
        LicenseError::Lost(_)
            | LicenseError::NotEntitled(_)
            | LicenseError::Call(
                CallError::Refused(_) | CallError::Config(_) | CallError::BadAnswer(_)
            )
    )
}

fn checked_in_or_warn(result: Result<(), LicenseError>) -> bool {
    match result {
        Ok(()) => {
            tracing::info!("seat checked in");
            true
        }
        Err(error) => {
            // Never a lock-out: an unreturned seat comes back when its consumption expires.
            tracing::warn!(
                "cannot check the seat in ({error}); it is released when its checkout expires"
            );
            false
        }
    }
}

async fn run_task<S>(task: &mut Option<Task<S>>) -> Done<S> {
    match task {
        Some(task) => task.as_mut().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// When to extend: between 40 % and 60 % of the way to `expires_at` (jittered, so a fleet
/// started together does not renew together), leaving room for retries before it.
fn renewal_time(expires_at: Instant) -> Instant {
    let now = Instant::now();
    // From the OS each time: a rarely-needed random number does not pay for a seeded
    // generator's code (the binary's size budget).
    let fraction = rand::rngs::OsRng.unwrap_err().random_range(0.4..0.6);
    now + expires_at.saturating_duration_since(now).mul_f64(fraction)
}

#[cfg(test)]
mod tests;
