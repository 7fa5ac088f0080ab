//! Owns `--seat hold`: the workload runs as mpgate's child (signals forwarded, zombies reaped,
//! its exit status passed on, as tini does) while the license checkout is extended and, at the
//! end, checked in.

use std::ffi::OsString;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use rand::Rng;
use tokio::signal::unix::Signal;
use tokio::time::Instant;

use crate::call::{CallError, CallRecord};
use crate::config::TransientPolicy;
use crate::exec;
use crate::exit::{code, Failure};
use crate::license::{rfc3339, Extension, LicenseError, Session};
use crate::supervisor::signals::{next, STOPPING};
pub use crate::supervisor::signals::{Signals, FORWARDED};

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

/// A checked-out consumption and the session that renews it.
pub struct Seat {
    pub session: Session,
    pub consumption_token: String,
    /// `Expiration` as License Manager wrote it, for the logs and the result file.
    pub expiration: SystemTime,
    /// When it expires on the monotonic clock the timers run on (`license::Anchor`).
    pub expires_at: Instant,
}

/// A new checkout of the same entitlements with the given ClientToken (with `allow`, when
/// there is no seat to extend).
pub type Recheckout<'a> =
    &'a dyn Fn(String) -> Pin<Box<dyn Future<Output = Result<Seat, LicenseError>> + 'a>>;

/// What a hold needs: the workload, the seat and the rules for keeping it.
pub struct Hold<'a> {
    pub command: &'a [OsString],
    pub set: &'a [(&'a str, &'a str)],
    pub remove: &'a [&'a str],
    /// `None` when the workload starts unverified (`allow`): mpgate keeps trying to check out.
    pub seat: Option<Seat>,
    /// With no seat: the ClientToken of the checkout that got no answer, reused by the next
    /// one, so that a seat License Manager took for it is the one mpgate gets.
    pub client_token: Option<String>,
    /// How long the workload gets between SIGTERM and SIGKILL when it is stopped.
    pub grace: Duration,
    /// The deadline of each call (MPGATE_TIMEOUT).
    pub timeout: Duration,
    pub on_transient_error: TransientPolicy,
    pub recheckout: Recheckout<'a>,
}

/// How a hold ended.
#[derive(Debug)]
pub struct Ended {
    /// The container's exit code: the workload's (128+N for a signal), or 10/12/13/14 for a
    /// loss.
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

/// Runs the workload to its end, holding the seat meanwhile. A stop signal that came before
/// the workload could start gives the seat back and fails with `Failure::Interrupted`.
pub async fn run(hold: Hold<'_>, signals: Signals) -> Result<Ended, Failure> {
    let Signals {
        mut forwarded,
        child: mut sigchld,
    } = signals;
    let check_in_deadline = check_in_deadline(hold.timeout);
    let recheckout_every = RECHECKOUT_EVERY.min(hold.timeout);
    let deny = hold.on_transient_error == TransientPolicy::Deny;
    let mut seat = hold.seat;
    if let Some((signal, name)) = stopped_before_start(&mut forwarded).await {
        if let Some(seat) = &seat {
            if let Done::CheckedIn(result) = check_in(seat, check_in_deadline).await {
                checked_in_or_warn(result);
            }
        }
        return Err(Failure::Interrupted { signal, name });
    }
    become_subreaper();
    let child = match exec::spawn(hold.command, hold.set, hold.remove) {
        Ok(pid) => pid as libc::pid_t,
        Err(error) => {
            // The workload never ran: the seat goes back before mpgate reports why.
            if let Some(seat) = &seat {
                if let Done::CheckedIn(result) = check_in(seat, check_in_deadline).await {
                    checked_in_or_warn(result);
                }
            }
            return Err(error.into());
        }
    };
    tracing::debug!(pid = child, "workload started; holding the seat");
    let mut client_token = hold.client_token.filter(|_| seat.is_none());
    let mut next_renewal = Some(match &seat {
        Some(seat) => renewal_time(seat.expires_at),
        None => Instant::now() + recheckout_every,
    });
    let mut task: Option<Task> = None;
    // A stop signal came: no more renewals; the seat is checked in once no call is in flight.
    let mut stopping = false;
    // A check-in was made (`checked_in`: and License Manager took the seat back).
    let mut check_in_done = false;
    let mut checked_in = false;
    // License Manager said it no longer knows the consumption: nothing to check in.
    let mut gone = false;
    // The last extension failed transiently: an expiry now is License Manager's doing.
    let mut failing = false;
    let mut lost: Option<LicenseError> = None;
    let mut kill_at: Option<Instant> = None;
    let mut killed = false;
    let status = loop {
        if stopping && task.is_none() && !check_in_done && !gone {
            if let Some(seat) = &seat {
                task = Some(check_in(seat, check_in_deadline));
            }
        }
        // The seat's expiry matters while it is held and extensions may still fail.
        let expiry = seat
            .as_ref()
            .filter(|_| deny && lost.is_none() && !stopping)
            .map(|seat| seat.expires_at);
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
                if STOPPING.contains(&number) && !stopping {
                    // Stopping: the seat is given back now (after a call in flight, whose
                    // answer may carry a new token), while the workload shuts down, in case
                    // the platform's stop timeout ends mpgate first; and the workload may not
                    // run unheld for longer than the grace period.
                    stopping = true;
                    next_renewal = None;
                    if kill_at.is_none() && !killed {
                        kill_at = Some(Instant::now() + hold.grace);
                    }
                    tracing::info!(signal = name, grace = ?hold.grace, "stopping: the seat is checked in, and the workload killed (SIGKILL) if it has not ended within the grace period");
                }
            }
            done = run_task(&mut task), if task.is_some() => {
                task = None;
                match done {
                    Done::CheckedIn(result) => {
                        check_in_done = true;
                        checked_in = checked_in_or_warn(result);
                    }
                    Done::Extended(Ok(extension)) => {
                        failing = false;
                        if let Some(seat) = &mut seat {
                            seat.consumption_token = extension.consumption_token;
                            seat.expiration = extension.expiration;
                            seat.expires_at = Instant::from_std(extension.expires_at);
                            tracing::debug!(expiration = %rfc3339(seat.expiration), "seat extended");
                            if !stopping && lost.is_none() {
                                next_renewal = Some(renewal_time(seat.expires_at));
                            }
                        }
                    }
                    Done::CheckedOut(Ok(new)) => {
                        failing = false;
                        client_token = None;
                        tracing::info!(expiration = %rfc3339(new.expiration), "seat checked out");
                        if !stopping && lost.is_none() {
                            next_renewal = Some(renewal_time(new.expires_at));
                        }
                        seat = Some(*new);
                    }
                    Done::Extended(Err(error)) | Done::CheckedOut(Err(error)) => {
                        gone |= is_gone(&error);
                        let left = seat
                            .as_ref()
                            .map(|s| s.expires_at.saturating_duration_since(Instant::now()))
                            .unwrap_or_default();
                        if stopping || lost.is_some() {
                            // Already ending: only the check-in is left to do.
                        } else if !is_transient(&error) {
                            lose(error, child, hold.grace, &mut lost, &mut kill_at);
                            next_renewal = None;
                        } else if !left.is_zero() {
                            failing = true;
                            tracing::warn!(expiration = %seat.as_ref().map(|s| rfc3339(s.expiration)).unwrap_or_default(), "cannot extend the seat yet ({error}); trying again before it expires");
                            next_renewal = Some(Instant::now() + RETRY_AFTER.min(left / 4));
                        } else if !deny {
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
                let now = Instant::now();
                match seat.as_ref() {
                    Some(seat) if seat.expires_at > now => {
                        let left = seat.expires_at - now;
                        task = Some(extend(seat, hold.timeout.min(left).max(Duration::from_secs(1))));
                    }
                    // With `deny`, an expired seat is never replaced by a new checkout: the
                    // workload ran unheld meanwhile.
                    Some(seat) if deny => {
                        let reason = expired(seat, failing);
                        lose(reason, child, hold.grace, &mut lost, &mut kill_at);
                    }
                    _ => {
                        let token = match client_token.clone() {
                            Some(token) => Ok(token),
                            None => crate::nonce::generate().map_err(|e| e.to_string()),
                        };
                        task = Some(match token {
                            Ok(token) => {
                                client_token = Some(token.clone());
                                let recheckout = (hold.recheckout)(token);
                                Box::pin(async move { Done::CheckedOut(recheckout.await.map(Box::new)) })
                            }
                            Err(e) => {
                                let error = CallError::Unreachable(format!("no random client token: {e}"));
                                Box::pin(async move { Done::CheckedOut(Err(error.into())) })
                            }
                        });
                    }
                }
            }
            () = sleep_until(expiry), if expiry.is_some() => {
                // Extensions kept failing, or one is still in flight, as the seat expires. A
                // call in flight goes on: its answer may carry the token to check in.
                let reason = match &seat {
                    Some(seat) => expired(seat, failing || task.is_some()),
                    None => CallError::Unreachable("no seat".into()).into(),
                };
                lose(reason, child, hold.grace, &mut lost, &mut kill_at);
                next_renewal = None;
            }
            () = sleep_until(kill_at), if kill_at.is_some() => {
                kill_at = None;
                killed = true;
                tracing::warn!(grace = ?hold.grace, "the workload did not end within the grace period after SIGTERM: SIGKILL to its process group");
                // SAFETY: as above: `child` is not reaped yet, so its process group is its own.
                unsafe { libc::kill(-child, libc::SIGKILL) };
            }
        }
    };
    // A call in flight may have renewed or taken the seat: its outcome first (bounded by its
    // own deadline), so that the check-in carries the token License Manager knows now.
    if let Some(task) = task.take() {
        match task.await {
            Done::CheckedIn(result) => {
                check_in_done = true;
                checked_in = checked_in_or_warn(result);
            }
            Done::Extended(Ok(extension)) => {
                if let Some(seat) = &mut seat {
                    seat.consumption_token = extension.consumption_token;
                    seat.expiration = extension.expiration;
                    seat.expires_at = Instant::from_std(extension.expires_at);
                }
            }
            Done::CheckedOut(Ok(new)) => seat = Some(*new),
            Done::Extended(Err(error)) | Done::CheckedOut(Err(error)) => gone |= is_gone(&error),
        }
    }
    if !check_in_done && !gone {
        if let Some(seat) = &seat {
            if let Done::CheckedIn(result) = check_in(seat, check_in_deadline).await {
                checked_in = checked_in_or_warn(result);
            }
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

async fn stopped_before_start(
    forwarded: &mut Vec<(i32, &'static str, Signal)>,
) -> Option<(i32, &'static str)> {
    let mut signals = Signals {
        forwarded: std::mem::take(forwarded),
        child: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()).ok()?,
    };
    let stop = signals.stopped_before_start().await;
    *forwarded = signals.forwarded;
    stop
}

/// Why the seat expired: License Manager did not extend it in time (`failing`: 14), or mpgate
/// did not ask in time, having been stopped (SIGSTOP) or its node suspended for longer than
/// the checkout's lifetime: then License Manager has released it while the workload ran (10).
fn expired(seat: &Seat, failing: bool) -> LicenseError {
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

/// Whether License Manager's answer says the consumption is gone (nothing to check in).
fn is_gone(error: &LicenseError) -> bool {
    matches!(error, LicenseError::Lost(_) | LicenseError::NotEntitled(_))
}

/// How long a check-in may take, given MPGATE_TIMEOUT.
pub fn check_in_deadline(timeout: Duration) -> Duration {
    CHECK_IN_DEADLINE.min(timeout)
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

/// The license is gone: the workload is asked to stop (SIGTERM to it, as a platform's stop
/// does: it stops its own children), and its whole process group is killed (SIGKILL) after
/// the grace period.
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
    if kill_at.is_none() {
        *kill_at = Some(Instant::now() + grace);
    }
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

/// When to extend: between 40 % and 60 % of the way to `expires_at` (jittered, so a fleet
/// started together does not renew together), leaving room for retries before it.
fn renewal_time(expires_at: Instant) -> Instant {
    let now = Instant::now();
    let fraction = rand::rng().random_range(0.4..0.6);
    now + expires_at.saturating_duration_since(now).mul_f64(fraction)
}

/// Reaps every exited child (as PID 1, or a subreaper, orphans are mpgate's to reap);
/// returns the workload's exit code once it has exited. What is left of the workload's
/// process group is killed first, while the workload's zombie still holds the group's ID: no
/// part of it may run on unheld once mpgate exits (as when a container's PID 1 exits).
fn reap(workload: libc::pid_t) -> Option<u8> {
    // SAFETY: siginfo_t is plain data; waitid writes only to it, and WNOWAIT leaves the
    // workload unreaped.
    let exited = unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        libc::waitid(
            libc::P_PID,
            workload as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        ) == 0
            && info.si_pid() == workload
    };
    if exited {
        // SAFETY: the workload is a zombie, not reaped: its group ID is not reused.
        unsafe { libc::kill(-workload, libc::SIGKILL) };
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Signals go to the whole test process: one test at a time installs and raises them.
    use crate::supervisor::tests::SIGNALS;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    fn never<'a>(_: String) -> Pin<Box<dyn Future<Output = Result<Seat, LicenseError>> + 'a>> {
        Box::pin(std::future::pending())
    }

    fn hold<'a>(command: &'a [OsString], recheckout: Recheckout<'a>) -> Hold<'a> {
        Hold {
            command,
            set: &[],
            remove: &[],
            seat: None,
            client_token: None,
            grace: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
            on_transient_error: TransientPolicy::Allow,
            recheckout,
        }
    }

    #[test]
    fn a_stop_signal_before_the_start_keeps_the_workload_from_starting() {
        let _one = SIGNALS.lock().unwrap_or_else(|e| e.into_inner());
        let dir = std::env::temp_dir().join(format!("mpgate-supervise-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (signal, name) in [
            (libc::SIGTERM, "SIGTERM"),
            (libc::SIGINT, "SIGINT"),
            (libc::SIGHUP, "SIGHUP"),
        ] {
            let marker = dir.join(name);
            let command: Vec<OsString> = vec![
                "sh".into(),
                "-c".into(),
                format!("touch '{}'", marker.display()).into(),
            ];
            let result = runtime().block_on(async {
                let signals = Signals::install().unwrap();
                // After the checkout, before the spawn: as while the hand-over is prepared.
                // SAFETY: raise(3) of a signal this process now handles.
                unsafe { libc::raise(signal) };
                run(hold(&command, &never), signals).await
            });
            match result {
                Err(Failure::Interrupted { signal: s, name: n }) => {
                    assert_eq!((s, n), (signal, name))
                }
                other => panic!("{name}: {other:?}"),
            }
            assert!(!marker.exists(), "{name}: the workload started");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_workload_s_status_is_passed_on_and_its_group_ends_with_it() {
        let _one = SIGNALS.lock().unwrap_or_else(|e| e.into_inner());
        let dir = std::env::temp_dir().join(format!("mpgate-group-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pid_file = dir.join("pid");
        let command: Vec<OsString> = vec![
            "sh".into(),
            "-c".into(),
            format!("sleep 600 & echo $! > '{}'; exit 7", pid_file.display()).into(),
        ];
        let ended = runtime()
            .block_on(async { run(hold(&command, &never), Signals::install().unwrap()).await })
            .unwrap();
        assert_eq!(ended.exit_code, 7);
        assert!(!ended.checked_in && ended.lost.is_none() && ended.expiration.is_none());
        let left: libc::pid_t = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // Killed, and reaped by this process (the subreaper) or about to be.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let mut status = 0;
            // SAFETY: waitpid writes only to `status`.
            let reaped = unsafe { libc::waitpid(left, &mut status, libc::WNOHANG) };
            // SAFETY: kill with signal 0 only checks the process exists.
            let exists = unsafe { libc::kill(left, 0) } == 0;
            if reaped == left || !exists {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the background child runs on"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn what_ends_a_hold_and_what_may_clear() {
        let lost = LicenseError::Lost("revoked".into());
        assert!(!is_transient(&lost) && is_gone(&lost));
        let bad = LicenseError::Call(CallError::BadAnswer("no expiration".into()));
        assert!(!is_transient(&bad) && !is_gone(&bad));
        assert_eq!(Failure::License(bad).exit_code(), code::TOKEN_REJECTED);
        let refused = LicenseError::Call(CallError::Refused("denied".into()));
        assert!(!is_transient(&refused));
        let unreachable = LicenseError::Call(CallError::Unreachable("503".into()));
        assert!(is_transient(&unreachable) && !is_gone(&unreachable));
    }

    #[test]
    fn renewal_comes_between_40_and_60_percent_of_the_time_left() {
        for _ in 0..100 {
            let now = Instant::now();
            let at = renewal_time(now + Duration::from_secs(100));
            let after = at.saturating_duration_since(now);
            assert!(
                (Duration::from_secs(40)..=Duration::from_millis(60_100)).contains(&after),
                "{after:?}"
            );
        }
        // An expired seat is due at once.
        let now = Instant::now();
        assert!(renewal_time(now) <= Instant::now());
    }
}
