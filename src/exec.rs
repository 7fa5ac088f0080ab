//! Owns starting the workload's program: exec in place, or spawn the supervisor's child, with a clean signal state.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// A workload ended by signal N exits with 128 + N, as a shell reports it.
pub const SIGNAL_BASE: u8 = 128;

/// Why the workload could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot run {program:?}: not found (searched PATH): check the image's CMD and that the program is installed")]
    NotFound { program: String },
    #[error("cannot run {program:?}: {reason}: check it is an executable file for this platform")]
    NotExecutable { program: String, reason: String },
}

/// Replaces this process with `command` (execvp: PATH lookup, argv untouched, same PID and
/// stdio). `set` is added to the inherited environment, `remove` taken out of it. Returns
/// only on failure.
pub fn exec(command: &[OsString], set: &[(&str, &str)], remove: &[&str]) -> ExecError {
    let program = command
        .first()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let Some((first, rest)) = command.split_first() else {
        return ExecError::NotFound { program };
    };
    let mut cmd = Command::new(first);
    cmd.args(rest);
    for name in remove {
        cmd.env_remove(name);
    }
    cmd.envs(set.iter().copied());
    reset_signal_dispositions();
    // std no longer empties the signal mask before execvp (the new image inherits it), so
    // clear it here: the mask mpgate was started with must not reach the workload.
    clear_signal_mask();
    let error = cmd.exec();
    match error.kind() {
        std::io::ErrorKind::NotFound => ExecError::NotFound { program },
        _ => ExecError::NotExecutable {
            program,
            reason: error.to_string(),
        },
    }
}

/// Starts `command` as a child (PATH lookup, argv untouched, same stdio) with the signal state
/// and environment `exec` would give it; returns its PID. `inherit`, a close-on-exec
/// descriptor of mpgate's, is passed on to the child alone, at the same number.
pub fn spawn(
    command: &[OsString],
    set: &[(&str, &str)],
    remove: &[&str],
    inherit: Option<std::os::fd::RawFd>,
) -> Result<u32, ExecError> {
    let program = command
        .first()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let Some((first, rest)) = command.split_first() else {
        return Err(ExecError::NotFound { program });
    };
    let mut cmd = Command::new(first);
    cmd.args(rest);
    for name in remove {
        cmd.env_remove(name);
    }
    cmd.envs(set.iter().copied());
    // SAFETY: getpid is async-signal-safe and runs before the fork.
    let parent = unsafe { libc::getpid() };
    // SAFETY: between fork and exec the closure only makes system calls (setpgid, isatty,
    // sigprocmask, tcsetpgrp, rt_sigaction, prctl, getppid, fcntl), which are
    // async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            // A process group of its own, in the foreground of the terminal if there is one,
            // as tini does: a Ctrl-C reaches the workload once, from the terminal, instead of
            // also through mpgate. (SIGTTOU is blocked while a background group takes it.)
            libc::setpgid(0, 0);
            if libc::isatty(libc::STDIN_FILENO) == 1 {
                let mut ttou = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
                libc::sigemptyset(ttou.as_mut_ptr());
                libc::sigaddset(ttou.as_mut_ptr(), libc::SIGTTOU);
                libc::pthread_sigmask(libc::SIG_BLOCK, ttou.as_ptr(), std::ptr::null_mut());
                libc::tcsetpgrp(libc::STDIN_FILENO, libc::getpgrp());
            }
            reset_signal_dispositions();
            clear_signal_mask();
            // Cleared in the child only: mpgate's own copy stays close-on-exec.
            if let Some(fd) = inherit {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // The workload ends with its supervisor: killed (SIGKILL, which no one can
            // forward) mpgate no longer holds the seat, so the workload must not run on.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            if libc::getppid() != parent {
                return Err(std::io::Error::other(
                    "mpgate ended before the workload started",
                ));
            }
            Ok(())
        });
    }
    match cmd.spawn() {
        // The child is reaped by the supervisor's waitpid(-1), never through `Child`.
        Ok(child) => Ok(child.id()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            Err(ExecError::NotFound { program })
        }
        Err(error) => Err(ExecError::NotExecutable {
            program,
            reason: error.to_string(),
        }),
    }
}

/// Restores every catchable signal, real-time ones included, to its default action, so the
/// workload starts as it would without mpgate (tokio installed handlers; a parent may have
/// left some ignored). The kernel is called directly because the C library refuses to touch
/// its internal signals (32 and 33), which glibc's posix_spawn leaves ignored in a child of
/// a threaded parent, and an ignored signal stays ignored across exec.
fn reset_signal_dispositions() {
    // The kernel's struct sigaction (handler, flags, restorer, mask), all zero: SIG_DFL.
    let default = [0u64; 4];
    // _NSIG on Linux x86_64 and aarch64; the kernel's sigset is 8 bytes.
    for signal in 1..=64 {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            continue;
        }
        // SAFETY: rt_sigaction reads a valid, zeroed kernel sigaction and writes nothing;
        // installing SIG_DFL has no memory effects, the process is about to exec, and no
        // other code relies on these handlers.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                signal,
                default.as_ptr(),
                std::ptr::null_mut::<u64>(),
                8usize,
            );
        }
    }
}

/// Empties this thread's signal mask; execve keeps the mask of the thread that calls it.
fn clear_signal_mask() {
    // SAFETY: sigemptyset initialises the set; pthread_sigmask only changes this thread's
    // mask, and the process is about to exec.
    unsafe {
        let mut empty = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        libc::sigemptyset(empty.as_mut_ptr());
        libc::pthread_sigmask(libc::SIG_SETMASK, empty.as_ptr(), std::ptr::null_mut());
    }
}
