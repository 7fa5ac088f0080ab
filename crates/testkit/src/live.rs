//! Children under test: output drained, waited for within a limit, killed when dropped.

use std::io;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::drain::Drain;
use crate::wait::{reap_by, try_wait};

/// How long a child killed at its limit may take to close its stderr: only for the failure
/// message, which is worth more with the child's last words.
const GRACE: Duration = Duration::from_secs(2);

/// A child that is killed and reaped when dropped, unless it has been reaped already: a failed
/// assertion must never leave a process running.
pub(crate) struct Guard {
    pub(crate) child: Child,
    /// Reaped by a bounded wait (with `try_wait`, or with `wait4` behind std's back, after
    /// which its pid may belong to another process: it must not be killed then).
    pub(crate) reaped: bool,
}

impl Guard {
    pub(crate) fn new(child: Child) -> Guard {
        Guard {
            child,
            reaped: false,
        }
    }

    pub(crate) fn kill(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.reaped = true;
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running child whose stdout and stderr are drained as they come; every wait on it ends
/// `limit` after its start (killed and failed past it); killed and reaped when dropped.
pub struct Live {
    guard: Guard,
    /// The program, for failure messages.
    what: String,
    started: Instant,
    limit: Duration,
    /// Taken by the one [`Live::finish_with`].
    stdout: Option<Drain>,
    stderr: Option<Drain>,
}

/// How a [`Live`] child ended.
#[derive(Debug)]
pub struct Exit {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// When the exit was seen (tests measure how long after a signal a child ended).
    pub at: Instant,
}

impl Live {
    /// Starts `cmd` with stdin from /dev/null and its stdout and stderr drained; fails the test
    /// if it cannot be started.
    pub fn spawn(cmd: &mut Command, limit: Duration) -> Live {
        Live::try_spawn(cmd, limit)
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", cmd.get_program().to_string_lossy()))
    }

    /// [`Live::spawn`], for a test that says itself what is missing when the program is.
    pub fn try_spawn(cmd: &mut Command, limit: Duration) -> io::Result<Live> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let started = Instant::now();
        let stdout = Drain::spawn(child.stdout.take().expect("stdout is piped"));
        let stderr = Drain::spawn(child.stderr.take().expect("stderr is piped"));
        Ok(Live {
            guard: Guard::new(child),
            what: cmd.get_program().to_string_lossy().into_owned(),
            started,
            limit,
            stdout: Some(stdout),
            stderr: Some(stderr),
        })
    }

    pub fn pid(&self) -> u32 {
        self.guard.child.id()
    }

    /// When the child was started.
    pub fn started(&self) -> Instant {
        self.started
    }

    fn deadline(&self) -> Instant {
        self.started + self.limit
    }

    fn drains(&mut self) -> (&mut Drain, &mut Drain) {
        match (&mut self.stdout, &mut self.stderr) {
            (Some(out), Some(err)) => (out, err),
            _ => panic!("{} has already been waited for", self.what),
        }
    }

    /// The next stdout line (without its newline); kills the child and fails the test, with
    /// its output so far, if none comes within the limit.
    pub fn next_line(&mut self, what: &str) -> String {
        let deadline = self.deadline();
        if let Some(line) = self.drains().0.next_line(deadline) {
            return line;
        }
        self.guard.kill();
        let (limit, program) = (self.limit, self.what.clone());
        let (stdout, stderr) = self.drains();
        panic!(
            "no {what} line on the stdout of {program} within {limit:?}; stdout so far {:?}; stderr:\n{}",
            stdout.so_far(),
            stderr.so_far()
        );
    }

    /// Waits for the exit and the end of both outputs, within the limit.
    pub fn finish(&mut self) -> Exit {
        self.finish_with(|child| try_wait(child).map(|status| (status, ())))
            .0
    }

    /// [`Live::finish`] with another reaper (polled, `None` while the child runs), e.g. `wait4`
    /// for the child's own resource usage, which it returns beside the exit.
    pub fn finish_with<T>(
        &mut self,
        reap: impl FnMut(&mut Child) -> Option<(ExitStatus, T)>,
    ) -> (Exit, T) {
        let deadline = self.deadline();
        let (Some(stdout), Some(stderr)) = (self.stdout.take(), self.stderr.take()) else {
            panic!("{} has already been waited for", self.what);
        };
        let reaped = reap_by(&mut self.guard.child, deadline, reap);
        // Either way the child is gone: reaped, or killed and reaped past the deadline.
        self.guard.reaped = true;
        let Some((status, extra)) = reaped else {
            let stderr = stderr
                .until_end(Instant::now() + GRACE)
                .unwrap_or_else(|partial| partial);
            panic!(
                "{} did not exit within {:?}; stderr:\n{stderr}",
                self.what, self.limit
            );
        };
        let at = Instant::now();
        // A pipe closes when the last process holding it ends: bounded too, since a process
        // left behind by the child would hold it open.
        let leaked = |name: &str, partial: String| -> String {
            panic!(
                "the {name} of {} is still open {:?} after its start: a process leaked; so far {partial:?}",
                self.what, self.limit
            )
        };
        let stdout = stdout
            .until_end(deadline)
            .unwrap_or_else(|p| leaked("stdout", p));
        let stderr = stderr
            .until_end(deadline)
            .unwrap_or_else(|p| leaked("stderr", p));
        (
            Exit {
                status,
                stdout,
                stderr,
                at,
            },
            extra,
        )
    }
}

/// Runs `cmd` to its end (stdin from /dev/null, output captured), bounded by `limit`.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Exit {
    Live::spawn(cmd, limit).finish()
}

#[cfg(test)]
mod tests {
    //! The failure paths too: no suite exercises them, and a bound that never fires is no bound.
    use super::*;
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::path::Path;

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script]);
        cmd
    }

    fn panic_message(f: impl FnOnce()) -> String {
        let err = catch_unwind(AssertUnwindSafe(f)).expect_err("should have failed");
        err.downcast_ref::<String>().cloned().unwrap_or_default()
    }

    #[test]
    fn output_and_status_are_collected() {
        let out = run_bounded(
            &mut sh("echo out; echo err >&2; printf tail; exit 3"),
            crate::CHILD_LIMIT,
        );
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(out.stdout, "out\ntail");
        assert_eq!(out.stderr, "err\n");
    }

    #[test]
    fn lines_come_one_by_one_and_all_end_up_in_stdout() {
        let mut live = Live::spawn(&mut sh("echo one; echo two"), crate::CHILD_LIMIT);
        assert_eq!(live.next_line("first"), "one");
        assert_eq!(live.finish().stdout, "one\ntwo\n");
    }

    #[test]
    fn a_child_past_its_limit_is_killed_reaped_and_fails_the_test() {
        let mut live = Live::spawn(
            &mut sh("echo started >&2; exec sleep 30"),
            Duration::from_millis(300),
        );
        let pid = live.pid();
        let message = panic_message(|| {
            live.finish();
        });
        assert!(message.contains("did not exit within 300ms"), "{message}");
        assert!(message.contains("started"), "{message}");
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "{pid} survived"
        );
    }

    #[test]
    fn no_line_within_the_limit_fails_with_the_output_so_far() {
        let mut live = Live::spawn(
            &mut sh("echo partial; echo why >&2; exec sleep 30"),
            Duration::from_millis(300),
        );
        assert_eq!(live.next_line("first"), "partial");
        let pid = live.pid();
        let message = panic_message(|| {
            live.next_line("second");
        });
        assert!(message.contains("no second line"), "{message}");
        assert!(message.contains("partial"), "{message}");
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "{pid} survived"
        );
    }

    #[test]
    fn a_leftover_process_holding_the_output_fails_the_test() {
        // The shell exits at once; its background sleep keeps stdout open past the limit.
        let mut live = Live::spawn(&mut sh("sleep 6 & exit 0"), Duration::from_secs(2));
        let message = panic_message(|| {
            live.finish();
        });
        assert!(message.contains("a process leaked"), "{message}");
    }
}
