//! Owns `mpgate lease watch`: a held seat's heartbeat watched for a workload not written in Rust, which it supervises.

use std::future::Future;
use std::os::fd::{AsRawFd, OwnedFd};
use std::pin::Pin;
use std::process::ExitCode;
use std::time::Duration;

use mpgate_proof::lease::{Lease, LeaseEnded, Watch};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::cli::WatchArgs;
use crate::exec::ExecError;
use crate::exit::code;
use crate::outcome::Outcome;
use crate::settings::{humantime, parse_duration};
use crate::supervisor::{self, Duty, Ended, Event, Loss, Phase, Signals};

/// How long COMMAND gets between SIGTERM and SIGKILL unless `--grace` says otherwise: a
/// copy whose seat may be gone runs no longer than it needs to stop cleanly.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// Runs `mpgate lease watch`: COMMAND under the supervisor, the heartbeat watched beside it.
pub fn run(args: &WatchArgs) -> ExitCode {
    let grace = match args.grace.as_deref().map(|g| (g, parse_duration(g))) {
        None => DEFAULT_GRACE,
        Some((_, Some(grace))) => grace,
        Some((text, None)) => {
            return usage(&format!(
                "invalid --grace {text:?}: use a positive number with an optional unit, e.g. 10, 10s, 1500ms or 2m (at most 1h)"
            ))
        }
    };
    // Taken before anything else runs: the descriptor becomes this process's own,
    // close-on-exec, so COMMAND does not inherit it.
    let lease = match Lease::from_env() {
        Ok(lease) => lease,
        Err(ended) => {
            return usage(&format!(
                "{ended}; run COMMAND as 'mpgate --pricing contract --seat hold -- mpgate lease watch -- COMMAND'"
            ))
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return usage(&format!("cannot start the async runtime: {e}")),
    };
    runtime.block_on(supervise(args, lease, grace))
}

async fn supervise(args: &WatchArgs, lease: Lease, grace: Duration) -> ExitCode {
    let mut watcher = match Watcher::new(lease, grace) {
        Ok(watcher) => watcher,
        Err(e) => return usage(&format!("cannot watch MPGATE_LEASE_FD: {e}")),
    };
    let signals = match Signals::install() {
        Ok(signals) => signals,
        Err(e) => return usage(&format!("cannot handle the signals it forwards: {e}")),
    };
    let mut workload = supervisor::Workload {
        command: &args.command,
        set: &[],
        // Any copy of the variable: COMMAND has no heartbeat of its own.
        remove: &[mpgate_proof::lease::VAR],
        grace,
        inherit: None,
    };
    match supervisor::run(&mut workload, signals, &mut [&mut watcher]).await {
        Ended::Exited {
            exit_code,
            loss: None,
        } => ExitCode::from(exit_code),
        Ended::Exited {
            loss: Some(loss), ..
        } => {
            tracing::error!(
                exit_code = loss.exit_code,
                outcome = loss.outcome.as_str(),
                "{}",
                loss.message
            );
            ExitCode::from(loss.exit_code)
        }
        Ended::NotStarted { signal, name } => {
            tracing::error!("interrupted by {name} before COMMAND started; it was not started");
            ExitCode::from(code::SIGNAL_BASE.saturating_add(signal as u8))
        }
        Ended::Failed(error) => {
            let exit_code = match error {
                ExecError::NotFound { .. } => code::COMMAND_NOT_FOUND,
                ExecError::NotExecutable { .. } => code::COMMAND_NOT_EXECUTABLE,
            };
            tracing::error!(exit_code, "{error}");
            ExitCode::from(exit_code)
        }
    }
}

fn usage(message: &str) -> ExitCode {
    tracing::error!(exit_code = code::USAGE, "mpgate lease watch: {message}");
    ExitCode::from(code::USAGE)
}

/// The duty beside COMMAND: reads the heartbeat, and reports a loss when it stops.
struct Watcher {
    socket: AsyncFd<OwnedFd>,
    watch: Watch,
    grace: Duration,
    phase: Phase,
    lost: bool,
}

impl Watcher {
    fn new(lease: Lease, grace: Duration) -> std::io::Result<Self> {
        // SAFETY: an OwnedFd's descriptor stays open, and the same, for as long as it is owned
        // (here, by the AsyncFd).
        let socket =
            unsafe { AsyncFd::register_with_interest(OwnedFd::from(lease), Interest::READABLE)? };
        Ok(Watcher {
            socket,
            // The first line is waiting already: mpgate wrote it before it started this.
            watch: Watch::new(std::time::Instant::now()),
            grace,
            phase: Phase::Running,
            lost: false,
        })
    }

    /// Reads heartbeats until the lease ends; cancel-safe (a read and what it changes
    /// happen between two awaits).
    async fn ended(&mut self) -> LeaseEnded {
        let mut buffer = [0u8; 4096];
        loop {
            let deadline = self.watch.deadline().map(tokio::time::Instant::from_std);
            tokio::select! {
                biased;
                () = sleep_until(deadline) => return self.watch.expired(),
                ready = self.socket.readable() => {
                    let mut guard = match ready {
                        Ok(guard) => guard,
                        Err(e) => return LeaseEnded::Read(e.to_string()),
                    };
                    let read = guard.try_io(|socket| receive(socket.get_ref(), &mut buffer));
                    let now = std::time::Instant::now();
                    match read {
                        // Not ready after all: wait again.
                        Err(_) => {}
                        Ok(Ok(0)) => return LeaseEnded::Closed,
                        Ok(Ok(n)) => {
                            if self.watch.deadline().is_some_and(|d| now >= d) {
                                return self.watch.expired();
                            }
                            if let Err(ended) = self.watch.feed(&buffer[..n], now) {
                                return ended;
                            }
                            tracing::debug!(left = ?self.watch.deadline().map(|d| d - now), "heartbeat");
                        }
                        Ok(Err(e)) => return LeaseEnded::Read(e.to_string()),
                    }
                }
            }
        }
    }
}

impl Duty for Watcher {
    fn enter(&mut self, phase: Phase) {
        self.phase = phase;
    }

    fn next(&mut self) -> Pin<Box<dyn Future<Output = Event> + '_>> {
        Box::pin(async move {
            match self.phase {
                Phase::Exited => Event::Done,
                // Stopping: the grace period bounds what is left.
                _ if self.lost || self.phase == Phase::Stopping => std::future::pending().await,
                _ => {
                    let ended = self.ended().await;
                    self.lost = true;
                    tracing::error!(
                        "{ended}: COMMAND gets SIGTERM, its process group SIGKILL {} later",
                        humantime(self.grace)
                    );
                    Event::Lost(Loss {
                        exit_code: code::NOT_ENTITLED,
                        outcome: Outcome::LicenseLost,
                        message: ended.to_string(),
                    })
                }
            }
        })
    }
}

/// One `recv` that never blocks.
fn receive(socket: &OwnedFd, buffer: &mut [u8]) -> std::io::Result<usize> {
    // SAFETY: recv writes at most `buffer.len()` bytes into a live buffer.
    let n = unsafe {
        libc::recv(
            socket.as_raw_fd(),
            buffer.as_mut_ptr().cast(),
            buffer.len(),
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
