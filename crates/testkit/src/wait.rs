//! Bounded waits: for a condition, and for a child process's exit (killed and reaped past it).

use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// How often a bounded wait looks again: short, so that a measured exit time (tests compare
/// it with a signal's) is close to the real one.
const TICK: Duration = Duration::from_millis(5);

/// Polls `check` until it returns `Some`, or returns `None` once `deadline` has passed.
pub fn poll_until<T>(deadline: Instant, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(TICK);
    }
}

/// Polls `check` until it returns `Some`; fails the test, naming `what`, past `limit`.
pub fn wait_until<T>(limit: Duration, what: &str, check: impl FnMut() -> Option<T>) -> T {
    poll_until(Instant::now() + limit, check)
        .unwrap_or_else(|| panic!("no {what} within {limit:?}"))
}

/// `try_wait`, the reaper of [`wait_bounded`]: std then knows the child is gone, so a later
/// `kill` cannot hit another process that got its pid.
pub fn try_wait(child: &mut Child) -> Option<ExitStatus> {
    child.try_wait().expect("try_wait on a child of this test")
}

/// Polls `reap` (e.g. [`try_wait`], or a `wait4` that also returns the child's resource
/// usage) until it has reaped `child`; past `deadline` kills and reaps the child instead and
/// returns `None`, so that no child outlives its bound.
pub fn reap_by<T>(
    child: &mut Child,
    deadline: Instant,
    mut reap: impl FnMut(&mut Child) -> Option<T>,
) -> Option<T> {
    let reaped = poll_until(deadline, || reap(child));
    if reaped.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    reaped
}

/// Waits for `child` to exit within `limit` of `started`; past it kills it, reaps it and fails
/// the test, naming `what`.
pub fn wait_bounded(
    child: &mut Child,
    started: Instant,
    limit: Duration,
    what: &str,
) -> ExitStatus {
    reap_by(child, started + limit, try_wait)
        .unwrap_or_else(|| panic!("{what} did not exit within {limit:?}"))
}
