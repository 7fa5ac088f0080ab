//! Owns `--seat hold`: the workload runs as mpgate's child (signals forwarded, zombies reaped,
//! its exit status passed on, as tini does) while the license checkout is extended and, at the
//! end, checked in.

use std::ffi::OsString;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use rand::Rng;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::time::Instant;

use crate::call::{CallError, CallRecord};
use crate::config::TransientPolicy;
use crate::exec::{self, ExecError};
use crate::exit::code;
use crate::license::{rfc3339, Extension, LicenseError, Session};

/// The signals passed on to the workload, as tini passes them.
const FORWARDED: [(i32, &str); 7] = [
    (libc::SIGTERM, "SIGTERM"),
    (libc::SIGINT, "SIGINT"),
    (libc::SIGHUP, "SIGHUP"),
    (libc::SIGQUIT, "SIGQUIT"),
    (libc::SIGUSR1, "SIGUSR1"),
    (libc::SIGUSR2, "SIGUSR2"),
    (libc::SIGWINCH, "SIGWINCH"),
];
/// After a transient failure, the next extension comes this soon (or at a quarter of what is
/// left, if sooner), so a short outage does not cost the seat.
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// With `--on-transient-error allow`, how often (at most) a consumption that expired
/// unextended is checked out again; sooner for short lifetimes (half the first one).
const RECHECKOUT_EVERY: Duration = Duration::from_secs(30);

/// The handlers the supervisor reads, installed before the hand-over so that no signal
/// between the checkout and the workload's start is lost (tokio delivers a signal only to
/// streams that exist when it arrives).
pub struct Signals {
    forwarded: Vec<(i32, &'static str, Signal)>,
    child: Signal,
}

impl Signals {
    pub fn install() -> std::io::Result<Self> {
        let mut forwarded = Vec::with_capacity(FORWARDED.len());
        for (number, name) in FORWARDED {
            forwarded.push((number, name, signal(SignalKind::from_raw(number))?));
        }
        Ok(Signals {
            forwarded,
            child: signal(SignalKind::child())?,
        })
    }
}

/// The next forwarded signal.
async fn next(forwarded: &mut [(i32, &'static str, Signal)]) -> (i32, &'static str) {
    let polls = forwarded.iter_mut().map(|(number, name, stream)| {
        let (number, name) = (*number, *name);
        Box::pin(async move {
            stream.recv().await;
            (number, name)
        })
    });
    select_all(polls).await
}

/// The first of `futures` to finish (a handful: a linear poll is cheapest).
async fn select_all<T, F: Future<Output = T> + Unpin>(futures: impl IntoIterator<Item = F>) -> T {
    let mut futures: Vec<F> = futures.into_iter().collect();
    std::future::poll_fn(move |cx| {
        for f in futures.iter_mut() {
            if let std::task::Poll::Ready(v) = Pin::new(f).poll(cx) {
                return std::task::Poll::Ready(v);
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// What a hold needs: the workload, the consumption and the rules for keeping it.
pub struct Hold<'a> {
    pub command: &'a [OsString],
    pub set: &'a [(&'a str, &'a str)],
    pub remove: &'a [&'a str],
    pub session: Session,
    pub consumption_token: String,
    pub expiration: SystemTime,
    /// How long the workload gets between SIGTERM and SIGKILL when the license is lost.
    pub grace: Duration,
    /// The deadline of each call (MPGATE_TIMEOUT).
    pub timeout: Duration,
    pub on_transient_error: TransientPolicy,
    /// A new checkout, for `allow` once a consumption has expired unextended.
    pub recheckout:
        &'a dyn Fn() -> Pin<Box<dyn Future<Output = Result<Extension, LicenseError>> + 'a>>,
}

/// How a hold ended.
#[derive(Debug)]
pub struct Ended {
    /// The container's exit code: the workload's (128+N for a signal), or 10/14 for a loss.
    pub exit_code: u8,
    pub checked_in: bool,
    /// Why the license was lost, when it was.
    pub lost: Option<LicenseError>,
}

/// A lease operation in flight.
type Task<'a> = Pin<Box<dyn Future<Output = Done> + 'a>>;

enum Done {
    Extended(Result<Extension, LicenseError>),
    CheckedIn(Result<(), LicenseError>),
}

/// Runs the workload to its end, holding the consumption meanwhile.
pub async fn run(hold: Hold<'_>, signals: Signals) -> Result<Ended, ExecError> {
    let Signals {
        mut forwarded,
        child: mut sigchld,
    } = signals;
    become_subreaper();
    let session = &hold.session;
    let child = match exec::spawn(hold.command, hold.set, hold.remove) {
        Ok(pid) => pid as libc::pid_t,
        Err(error) => {
            // The workload never ran: the seat goes back before mpgate reports why.
            if let Done::CheckedIn(result) =
                check_in(session, hold.consumption_token.clone(), hold.timeout).await
            {
                checked_in_or_warn(result);
            }
            return Err(error);
        }
    };
    tracing::debug!(pid = child, "workload started; holding the seat");
    let mut token = hold.consumption_token.clone();
    let mut expiration = hold.expiration;
    let recheckout_every = RECHECKOUT_EVERY.min(
        expiration
            .duration_since(SystemTime::now())
            .unwrap_or_default()
            / 2,
    );
    let mut next_renewal = Some(renewal_time(expiration));
    let mut task: Option<Task> = None;
    let mut checked_in = false;
    let mut checking_in = false;
    let mut lost: Option<LicenseError> = None;
    let mut kill_at: Option<Instant> = None;
    let status = loop {
        tokio::select! {
            biased;
            _ = sigchld.recv() => {
                if let Some(status) = reap(child) {
                    break status;
                }
            }
            (number, name) = next(&mut forwarded) => {
                // SAFETY: kill has no memory effects; `child` is not reaped yet, so its PID
                // cannot have been reused.
                unsafe { libc::kill(child, number) };
                tracing::debug!(signal = name, "forwarded to the workload");
                let stopping = number == libc::SIGTERM || number == libc::SIGINT;
                if stopping && !checked_in && !checking_in && lost.is_none() {
                    // Stopping: the seat is given back now, while the workload shuts down, in
                    // case the platform's stop timeout ends mpgate before the workload ends.
                    task = Some(check_in(session, token.clone(), hold.timeout));
                    checking_in = true;
                    next_renewal = None;
                }
            }
            done = run_task(&mut task), if task.is_some() => {
                task = None;
                match done {
                    Done::CheckedIn(result) => {
                        checking_in = false;
                        checked_in = checked_in_or_warn(result);
                    }
                    Done::Extended(Ok(extension)) => {
                        token = extension.consumption_token;
                        expiration = extension.expiration;
                        next_renewal = Some(renewal_time(expiration));
                        tracing::debug!(expiration = %rfc3339(expiration), "seat extended");
                    }
                    Done::Extended(Err(error)) => {
                        let transient = is_transient(&error);
                        let now = SystemTime::now();
                        if !transient {
                            lose(error, child, hold.grace, &mut lost, &mut kill_at);
                            next_renewal = None;
                        } else if now < expiration {
                            let left = expiration.duration_since(now).unwrap_or_default();
                            tracing::warn!(expiration = %rfc3339(expiration), "cannot extend the seat yet ({error}); trying again before it expires");
                            next_renewal = Some(Instant::now() + RETRY_AFTER.min(left / 4));
                        } else if hold.on_transient_error == TransientPolicy::Allow {
                            tracing::warn!("the seat expired unextended ({error}); the workload keeps running because MPGATE_ON_TRANSIENT_ERROR=allow, and mpgate checks the license out again");
                            next_renewal = Some(Instant::now() + recheckout_every);
                        } else {
                            lose(error, child, hold.grace, &mut lost, &mut kill_at);
                            next_renewal = None;
                        }
                    }
                }
            }
            () = sleep_until(next_renewal), if next_renewal.is_some() && task.is_none() => {
                next_renewal = None;
                let left = expiration.duration_since(SystemTime::now()).ok();
                task = Some(match left {
                    Some(left) => extend(session, token.clone(), hold.timeout.min(left).max(Duration::from_secs(1))),
                    None => {
                        let recheckout = (hold.recheckout)();
                        Box::pin(async move { Done::Extended(recheckout.await) })
                    }
                });
            }
            () = sleep_until(expiry_instant(expiration)), if lost.is_none() && !checked_in && !checking_in && hold.on_transient_error == TransientPolicy::Deny => {
                // Extensions kept failing (or are still in flight) as the seat expires.
                task = None;
                let reason = CallError::Unreachable(format!(
                    "the seat expired at {} before License Manager could extend it",
                    rfc3339(expiration)
                ));
                lose(reason.into(), child, hold.grace, &mut lost, &mut kill_at);
                next_renewal = None;
            }
            () = sleep_until(kill_at), if kill_at.is_some() => {
                kill_at = None;
                tracing::warn!(grace = ?hold.grace, "the workload did not stop within the grace period: SIGKILL");
                // SAFETY: as above: `child` is not reaped yet.
                unsafe { libc::kill(child, libc::SIGKILL) };
            }
        }
    };
    if lost.is_none() && !checked_in {
        let done = match task.take() {
            // A check-in already under way (SIGTERM) is awaited; an extension is dropped.
            Some(task) if checking_in => task.await,
            _ => check_in(session, token, hold.timeout).await,
        };
        if let Done::CheckedIn(result) = done {
            checked_in = checked_in_or_warn(result);
        }
    }
    let exit_code = match &lost {
        Some(LicenseError::Call(CallError::Unreachable(_))) => code::SERVICE_UNREACHABLE,
        Some(_) => code::NOT_ENTITLED,
        None => status,
    };
    Ok(Ended {
        exit_code,
        checked_in,
        lost,
    })
}

/// Only a loss License Manager itself declares is final; the rest may clear before expiration.
fn is_transient(error: &LicenseError) -> bool {
    !matches!(error, LicenseError::Lost(_) | LicenseError::NotEntitled(_))
}

/// The license is gone: the workload is asked to stop, and killed after the grace period.
fn lose(
    error: LicenseError,
    child: libc::pid_t,
    grace: Duration,
    lost: &mut Option<LicenseError>,
    kill_at: &mut Option<Instant>,
) {
    tracing::error!(
        "the seat is lost: {error}; stopping the workload (SIGTERM, then SIGKILL after {grace:?})"
    );
    // SAFETY: kill has no memory effects; `child` is not reaped yet.
    unsafe { libc::kill(child, libc::SIGTERM) };
    *kill_at = Some(Instant::now() + grace);
    *lost = Some(error);
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

fn extend<'a>(session: &'a Session, token: String, deadline: Duration) -> Task<'a> {
    Box::pin(async move {
        let mut record = CallRecord::default();
        Done::Extended(session.extend(&token, deadline, &mut record).await)
    })
}

fn check_in<'a>(session: &'a Session, token: String, deadline: Duration) -> Task<'a> {
    Box::pin(async move {
        let mut record = CallRecord::default();
        Done::CheckedIn(session.check_in(&token, deadline, &mut record).await)
    })
}

async fn run_task(task: &mut Option<Task<'_>>) -> Done {
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

/// When to extend: between 40 % and 60 % of the way to `expiration` (jittered, so a fleet
/// started together does not renew together), leaving room for retries before it.
fn renewal_time(expiration: SystemTime) -> Instant {
    let left = expiration
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    let fraction = rand::rng().random_range(0.4..0.6);
    Instant::now() + left.mul_f64(fraction)
}

fn expiry_instant(expiration: SystemTime) -> Option<Instant> {
    let left = expiration
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    Some(Instant::now() + left)
}

/// Reaps every exited child (as PID 1, or a subreaper, orphans are mpgate's to reap);
/// returns the workload's exit code once it has exited.
fn reap(workload: libc::pid_t) -> Option<u8> {
    let mut workload_status = None;
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes only to `status`.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return workload_status;
        }
        if pid == workload {
            workload_status = Some(if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status) as u8
            } else if libc::WIFSIGNALED(status) {
                code::SIGNAL_BASE.saturating_add(libc::WTERMSIG(status) as u8)
            } else {
                continue;
            });
        } else {
            tracing::debug!(pid, "reaped an orphaned process");
        }
    }
}

/// Orphans of the workload's tree become mpgate's children even when it is not PID 1, so
/// none is left a zombie while the workload runs.
fn become_subreaper() {
    // SAFETY: PR_SET_CHILD_SUBREAPER only sets a flag of this process.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
}
