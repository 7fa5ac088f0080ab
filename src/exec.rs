//! Owns the hand-over: exec the workload in place with a clean signal state and the proof in its env.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::process::Command;

use crate::exit::code;

/// Why the workload could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot run {program:?}: not found (searched PATH): check the image's CMD and that the program is installed")]
    NotFound { program: String },
    #[error("cannot run {program:?}: {reason}: check it is an executable file for this platform")]
    NotExecutable { program: String, reason: String },
}

impl ExecError {
    pub fn exit_code(&self) -> u8 {
        match self {
            ExecError::NotFound { .. } => code::COMMAND_NOT_FOUND,
            ExecError::NotExecutable { .. } => code::COMMAND_NOT_EXECUTABLE,
        }
    }

    pub fn outcome(&self) -> &'static str {
        match self {
            ExecError::NotFound { .. } => "command-not-found",
            ExecError::NotExecutable { .. } => "command-not-executable",
        }
    }
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
    // std empties the signal mask and restores SIGPIPE right before execvp.
    let error = cmd.exec();
    match error.kind() {
        std::io::ErrorKind::NotFound => ExecError::NotFound { program },
        _ => ExecError::NotExecutable {
            program,
            reason: error.to_string(),
        },
    }
}

/// Restores every catchable signal to its default action, so the workload starts as it
/// would without mpgate (tokio installed handlers; a parent may have left some ignored).
fn reset_signal_dispositions() {
    for signal in 1..32 {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            continue;
        }
        // SAFETY: installing SIG_DFL is async-signal-safe and has no memory effects;
        // the process is about to exec, and no other code relies on these handlers.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
        }
    }
}
