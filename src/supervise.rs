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
use crate::exit::{code, Failure};
use crate::license::{rfc3339, Extension, LicenseError, Session};

/// The signals passed on to the workload: every one tini passes on, but SIGPIPE (mpgate's own
/// writes raise it) and those the kernel sends for a fault of mpgate itself (SIGSEGV...),
/// plus the real-time ones. A signal mpgate neither forwards nor handles would end it and
/// leave the workload without its supervisor.
const FORWARDED: [(i32, &str); 17] = [
    (libc::SIGTERM, "SIGTERM"),
    (libc::SIGINT, "SIGINT"),
    (libc::SIGHUP, "SIGHUP"),
    (libc::SIGQUIT, "SIGQUIT"),
    (libc::SIGUSR1, "SIGUSR1"),
    (libc::SIGUSR2, "SIGUSR2"),
    (libc::SIGWINCH, "SIGWINCH"),
    (libc::SIGALRM, "SIGALRM"),
    (libc::SIGCONT, "SIGCONT"),
    (libc::SIGTSTP, "SIGTSTP"),
    (libc::SIGTTIN, "SIGTTIN"),
    (libc::SIGTTOU, "SIGTTOU"),
    (libc::SIGVTALRM, "SIGVTALRM"),
    (libc::SIGPROF, "SIGPROF"),
    (libc::SIGIO, "SIGIO"),
    (libc::SIGPWR, "SIGPWR"),
    (libc::SIGURG, "SIGURG"),
];
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

/// The handlers the supervisor reads, installed before the hand-over so that no signal
/// between the checkout and the workload's start is lost (tokio delivers a signal only to
/// streams that exist when it arrives).
pub struct Signals {
    forwarded: Vec<(i32, &'static str, Signal)>,
    child: Signal,
}

impl Signals {
    pub fn install() -> std::io::Result<Self> {
        let mut forwarded = Vec::with_capacity(FORWARDED.len() + 31);
        for (number, name) in FORWARDED {
            forwarded.push((number, name, signal(SignalKind::from_raw(number))?));
        }
        // SIGRTMIN() already leaves out the real-time signals the C library keeps for itself.
        for number in libc::SIGRTMIN()..=libc::SIGRTMAX() {
            forwarded.push((
                number,
                "a real-time signal",
                signal(SignalKind::from_raw(number))?,
            ));
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

/// A checked-out consumption and the session that renews it.
pub struct Seat {
    pub session: Session,
    pub consumption_token: String,
    pub expiration: SystemTime,
}

/// A new checkout of the same entitlements (with `allow`, when there is no seat to extend).
pub type Recheckout<'a> =
    &'a dyn Fn() -> Pin<Box<dyn Future<Output = Result<Seat, LicenseError>> + 'a>>;

/// What a hold needs: the workload, the seat and the rules for keeping it.
pub struct Hold<'a> {
    pub command: &'a [OsString],
    pub set: &'a [(&'a str, &'a str)],
    pub remove: &'a [&'a str],
    /// `None` when the workload starts unverified (`allow`): mpgate keeps trying to check out.
    pub seat: Option<Seat>,
    /// How long the workload gets between SIGTERM and SIGKILL when the license is lost.
    pub grace: Duration,
    /// The deadline of each call (MPGATE_TIMEOUT).
    pub timeout: Duration,
    pub on_transient_error: TransientPolicy,
    pub recheckout: Recheckout<'a>,
}

/// How a hold ended.
#[derive(Debug)]
pub struct Ended {
    /// The container's exit code: the workload's (128+N for a signal), or 10/14 for a loss.
    pub exit_code: u8,
    pub checked_in: bool,
    /// When the last consumption expires (or expired), if there was one.
    pub expiration: Option<SystemTime>,
    /// Why the license was lost, when it was.
    pub lost: Option<LicenseError>,
}

/// A lease operation in flight.
type Task<'a> = Pin<Box<dyn Future<Output = Done> + 'a>>;

enum Done {
    Extended(Result<Extension, LicenseError>),
    CheckedOut(Result<Box<Seat>, LicenseError>),
    CheckedIn(Result<(), LicenseError>),
}

/// Runs the workload to its end, holding the seat meanwhile.
pub async fn run(hold: Hold<'_>, signals: Signals) -> Result<Ended, ExecError> {
    let Signals {
        mut forwarded,
        child: mut sigchld,
    } = signals;
    become_subreaper();
    let check_in_deadline = check_in_deadline(hold.timeout);
    let recheckout_every = RECHECKOUT_EVERY.min(hold.timeout);
    let mut seat = hold.seat;
    let child = match exec::spawn(hold.command, hold.set, hold.remove) {
        Ok(pid) => pid as libc::pid_t,
        Err(error) => {
            // The workload never ran: the seat goes back before mpgate reports why.
            if let Some(seat) = &seat {
                if let Done::CheckedIn(result) = check_in(seat, check_in_deadline).await {
                    checked_in_or_warn(result);
                }
            }
            return Err(error);
        }
    };
    tracing::debug!(pid = child, "workload started; holding the seat");
    let mut next_renewal = Some(match &seat {
        Some(seat) => renewal_time(seat.expiration),
        None => Instant::now() + recheckout_every,
    });
    let mut task: Option<Task> = None;
    let mut checked_in = false;
    let mut checking_in = false;
    let mut lost: Option<LicenseError> = None;
    let mut kill_at: Option<Instant> = None;
    let status = loop {
        // The seat's expiry matters only while it is held and extensions may still fail.
        let expiry = seat
            .as_ref()
            .filter(|_| lost.is_none() && !checked_in && !checking_in)
            .filter(|_| hold.on_transient_error == TransientPolicy::Deny)
            .map(|seat| instant_of(seat.expiration));
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
                tracing::debug!(signal = name, number, "forwarded to the workload");
                let stopping = number == libc::SIGTERM || number == libc::SIGINT;
                if stopping && !checked_in && !checking_in && lost.is_none() {
                    // Stopping: the seat is given back now, while the workload shuts down, in
                    // case the platform's stop timeout ends mpgate before the workload ends.
                    task = seat.as_ref().map(|seat| check_in(seat, check_in_deadline));
                    checking_in = task.is_some();
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
                        if let Some(seat) = &mut seat {
                            seat.consumption_token = extension.consumption_token;
                            seat.expiration = extension.expiration;
                            next_renewal = Some(renewal_time(seat.expiration));
                            tracing::debug!(expiration = %rfc3339(seat.expiration), "seat extended");
                        }
                    }
                    Done::CheckedOut(Ok(new)) => {
                        tracing::info!(expiration = %rfc3339(new.expiration), "seat checked out");
                        next_renewal = Some(renewal_time(new.expiration));
                        seat = Some(*new);
                    }
                    Done::Extended(Err(error)) | Done::CheckedOut(Err(error)) => {
                        let now = SystemTime::now();
                        let expiration = seat.as_ref().map_or(now, |s| s.expiration);
                        if !is_transient(&error) {
                            lose(error, child, hold.grace, &mut lost, &mut kill_at);
                            next_renewal = None;
                        } else if now < expiration {
                            let left = expiration.duration_since(now).unwrap_or_default();
                            tracing::warn!(expiration = %rfc3339(expiration), "cannot extend the seat yet ({error}); trying again before it expires");
                            next_renewal = Some(Instant::now() + RETRY_AFTER.min(left / 4));
                        } else if hold.on_transient_error == TransientPolicy::Allow {
                            tracing::warn!("no seat is held ({error}); the workload keeps running because MPGATE_ON_TRANSIENT_ERROR=allow, and mpgate tries to check the license out again");
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
                let now = SystemTime::now();
                task = Some(match seat.as_ref().filter(|s| s.expiration > now) {
                    Some(seat) => {
                        let left = seat.expiration.duration_since(now).unwrap_or_default();
                        extend(seat, hold.timeout.min(left).max(Duration::from_secs(1)))
                    }
                    None => {
                        let recheckout = (hold.recheckout)();
                        Box::pin(async move { Done::CheckedOut(recheckout.await.map(Box::new)) })
                    }
                });
            }
            () = sleep_until(expiry), if expiry.is_some() => {
                // Extensions kept failing (or are still in flight) as the seat expires.
                task = None;
                let expiration = seat.as_ref().map(|s| s.expiration).unwrap_or_else(SystemTime::now);
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
        let done = match (task.take(), &seat) {
            // A check-in already under way (SIGTERM) is awaited; an extension is dropped.
            (Some(task), _) if checking_in => Some(task.await),
            (_, Some(seat)) if seat.expiration > SystemTime::now() => {
                Some(check_in(seat, check_in_deadline).await)
            }
            _ => None,
        };
        if let Some(Done::CheckedIn(result)) = done {
            checked_in = checked_in_or_warn(result);
        }
    }
    // The exit code of the README's table for why the seat went (an IAM denial is 13, as
    // at the checkout), or the workload's own.
    let exit_code = match lost.take().map(Failure::License) {
        Some(failure) => {
            let code = failure.exit_code();
            if let Failure::License(error) = failure {
                lost = Some(error);
            }
            code
        }
        None => status,
    };
    Ok(Ended {
        exit_code,
        checked_in,
        expiration: seat.map(|s| s.expiration),
        lost,
    })
}

/// How long a check-in may take, given MPGATE_TIMEOUT.
pub fn check_in_deadline(timeout: Duration) -> Duration {
    CHECK_IN_DEADLINE.min(timeout)
}

/// A loss License Manager declares, and a call it refuses (an IAM denial: the same call is
/// refused again), are final; the rest may clear before expiration.
fn is_transient(error: &LicenseError) -> bool {
    !matches!(
        error,
        LicenseError::Lost(_)
            | LicenseError::NotEntitled(_)
            | LicenseError::Call(CallError::Refused(_) | CallError::Config(_))
    )
}

/// The license is gone: the workload is asked to stop, and killed after the grace period.
fn lose(
    error: LicenseError,
    child: libc::pid_t,
    grace: Duration,
    lost: &mut Option<LicenseError>,
    kill_at: &mut Option<Instant>,
) {
    let what = match &error {
        LicenseError::Lost(_) | LicenseError::NotEntitled(_) => "the seat is lost",
        _ => "the seat cannot be kept",
    };
    tracing::error!(
        "{what}: {error}; stopping the workload (SIGTERM, then SIGKILL after {grace:?})"
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

fn extend(seat: &Seat, deadline: Duration) -> Task<'static> {
    let (session, token) = (seat.session.clone(), seat.consumption_token.clone());
    Box::pin(async move {
        let mut record = CallRecord::default();
        Done::Extended(session.extend(&token, deadline, &mut record).await)
    })
}

fn check_in(seat: &Seat, deadline: Duration) -> Task<'static> {
    let (session, token) = (seat.session.clone(), seat.consumption_token.clone());
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

/// `at` on the monotonic clock the timers run on.
fn instant_of(at: SystemTime) -> Instant {
    Instant::now() + at.duration_since(SystemTime::now()).unwrap_or_default()
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
