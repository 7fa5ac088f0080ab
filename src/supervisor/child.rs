//! Owns the workload's process: its start as a child, signals to it or its group, reaping, subreaping.

use std::ffi::OsString;
use std::os::fd::RawFd;

use crate::exec::{self, ExecError, SIGNAL_BASE};

/// The workload, started and not reaped yet: its PID (and process group ID) cannot be reused.
pub(crate) struct Child(libc::pid_t);

impl Child {
    /// Starts the workload as this process's child, mpgate its subreaper; `inherit` is a
    /// descriptor the workload alone inherits.
    pub(crate) fn start(
        command: &[OsString],
        set: &[(&str, &str)],
        remove: &[&str],
        inherit: Option<RawFd>,
    ) -> Result<Child, ExecError> {
        become_subreaper();
        let pid = exec::spawn(command, set, remove, inherit)? as libc::pid_t;
        tracing::debug!(pid, "workload started");
        Ok(Child(pid))
    }

    /// Sends `signal` to the workload.
    pub(crate) fn signal(&self, signal: i32) {
        // SAFETY: kill has no memory effects; the workload is not reaped yet, so its PID
        // cannot have been reused.
        unsafe { libc::kill(self.0, signal) };
    }

    /// SIGKILL to the workload's whole process group.
    pub(crate) fn kill_group(&self) {
        // SAFETY: as above: the workload is not reaped yet, so its process group is its own.
        unsafe { libc::kill(-self.0, libc::SIGKILL) };
    }

    /// Reaps every exited child (as PID 1, or a subreaper, orphans are mpgate's to reap);
    /// returns the workload's exit code (128+N for signal N) once it has exited. What is left
    /// of the workload's process group is killed first, while the workload's zombie still
    /// holds the group's ID: no part of it may run on unsupervised once mpgate exits (as when
    /// a container's PID 1 exits).
    pub(crate) fn reap(&self) -> Option<u8> {
        let workload = self.0;
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
            self.kill_group();
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
                    SIGNAL_BASE.saturating_add(libc::WTERMSIG(status) as u8)
                } else {
                    continue;
                });
            } else {
                tracing::debug!(pid, "reaped an orphaned process");
            }
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
