//! Owns the workload's life as mpgate's child, as tini does (start, forward, stop with grace, kill, reap), beside its duties.

mod child;
pub mod duty;
pub mod signals;

use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use tokio::time::Instant;

use crate::exec::ExecError;
use child::Child;
pub use duty::{Duty, Event, Loss, Phase};
pub use signals::Signals;

/// The workload to run, with the environment the hand-over gives it.
pub struct Workload<'a> {
    pub command: &'a [OsString],
    pub set: &'a [(&'a str, &'a str)],
    pub remove: &'a [&'a str],
    /// How long the workload gets between a stop (or a loss) and SIGKILL to its group.
    pub grace: Duration,
    /// A close-on-exec descriptor the workload alone inherits, at the same number (a held
    /// seat's heartbeat); every other descriptor of mpgate's stays close-on-exec. mpgate's
    /// own copy is closed once the workload has started: the workload's is the only one.
    pub inherit: Option<OwnedFd>,
}

/// How supervision ended.
#[derive(Debug)]
pub enum Ended {
    /// The workload ran and ended with `exit_code` (128+N for signal N); `loss` is the first
    /// a duty reported, if any.
    Exited { exit_code: u8, loss: Option<Loss> },
    /// A stop signal came before the workload could start: it was not started.
    NotStarted { signal: i32, name: &'static str },
    /// The workload could not be started.
    Failed(ExecError),
}

/// Runs the workload to its end, the duties beside it; every duty has finished on return.
pub async fn run(
    workload: &mut Workload<'_>,
    mut signals: Signals,
    duties: &mut [&mut dyn Duty],
) -> Ended {
    let started = match signals.stopped_before_start().await {
        Some((signal, name)) => Err(Ended::NotStarted { signal, name }),
        None => Child::start(
            workload.command,
            workload.set,
            workload.remove,
            workload.inherit.as_ref().map(|fd| fd.as_raw_fd()),
        )
        .map_err(Ended::Failed),
    };
    drop(workload.inherit.take());
    let child = match started {
        Ok(child) => child,
        Err(ended) => {
            // The workload never ran: the duties give back what they hold before mpgate says why.
            finish(duties, &mut vec![false; duties.len()]).await;
            return ended;
        }
    };
    let mut done = vec![false; duties.len()];
    let (mut phase, mut loss, mut kill_at, mut killed) = (Phase::Running, None, None, false);
    let exit_code = loop {
        let stop = tokio::select! {
            biased;
            _ = signals.child.recv() => match child.reap() {
                Some(exit_code) => break exit_code,
                None => false,
            },
            (number, name) = signals::next(&mut signals.forwarded) => {
                child.signal(number);
                tracing::debug!(signal = name, number, "forwarded to the workload");
                let stop = signals::STOPPING.contains(&number) && phase == Phase::Running;
                if stop {
                    tracing::info!(signal = name, grace = ?workload.grace, "stopping: {}the workload killed (SIGKILL) if it has not ended within the grace period", notes(duties));
                }
                stop
            }
            (i, event) = next_event(duties, &done) => match event {
                Event::Done => {
                    done[i] = true;
                    false
                }
                Event::Lost(lost) => {
                    // The workload is asked to stop (SIGTERM, as a platform's stop does: it
                    // stops its own children); its group is killed after the grace period.
                    child.signal(libc::SIGTERM);
                    loss.get_or_insert(lost);
                    true
                }
            },
            () = sleep_until(kill_at) => {
                (kill_at, killed) = (None, true);
                tracing::warn!(grace = ?workload.grace, "the workload did not end within the grace period after SIGTERM: SIGKILL to its process group");
                child.kill_group();
                false
            }
        };
        if stop && !killed {
            kill_at.get_or_insert(Instant::now() + workload.grace);
        }
        if stop && phase == Phase::Running {
            phase = enter(duties, Phase::Stopping);
        }
    };
    finish(duties, &mut done).await;
    Ended::Exited { exit_code, loss }
}

/// No workload (a sidecar): the duties run until SIGTERM or SIGINT, or until one reports a
/// loss; the other signals have no one to go to and are ignored. Every duty has finished on
/// return; the exit code is 0 (a stop is how a sidecar ends).
pub async fn alone(mut signals: Signals, duties: &mut [&mut dyn Duty]) -> Ended {
    let mut done = vec![false; duties.len()];
    let mut loss = None;
    loop {
        tokio::select! {
            biased;
            (number, name) = signals::next(&mut signals.forwarded) => {
                if signals::STOPPING.contains(&number) {
                    tracing::info!(signal = name, "stopping: {}mpgate exits", notes(duties));
                    break;
                }
                tracing::debug!(signal = name, number, "ignored: no workload to forward it to");
            }
            (i, event) = next_event(duties, &done) => match event {
                Event::Done => done[i] = true,
                Event::Lost(lost) => {
                    loss = Some(lost);
                    break;
                }
            },
        }
    }
    enter(duties, Phase::Stopping);
    finish(duties, &mut done).await;
    Ended::Exited { exit_code: 0, loss }
}

/// Tells every duty the workload entered `phase`.
fn enter(duties: &mut [&mut dyn Duty], phase: Phase) -> Phase {
    for duty in duties.iter_mut() {
        duty.enter(phase);
    }
    phase
}

/// Tells the duties the workload has exited and lets each finish (bounded by its own
/// deadlines); a loss reported now comes too late to matter.
async fn finish(duties: &mut [&mut dyn Duty], done: &mut [bool]) {
    enter(duties, Phase::Exited);
    while done.iter().any(|d| !d) {
        if let (i, Event::Done) = next_event(duties, done).await {
            done[i] = true;
        }
    }
}

/// The next event of a duty not done yet (pending for ever if none is left).
async fn next_event(duties: &mut [&mut dyn Duty], done: &[bool]) -> (usize, Event) {
    let polls = duties
        .iter_mut()
        .enumerate()
        .filter(|(i, _)| !done[*i])
        .map(|(i, duty)| {
            let next = duty.next();
            Box::pin(async move { (i, next.await) })
        });
    let polls: Vec<_> = polls.collect();
    if polls.is_empty() {
        return std::future::pending().await;
    }
    signals::select_all(polls).await
}

/// What the duties do at a stop, for the "stopping" line: "the seat is checked in, and ".
fn notes(duties: &[&mut dyn Duty]) -> String {
    duties
        .iter()
        .filter_map(|d| d.when_stopping())
        .map(|note| format!("{note}, and "))
        .collect()
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::Pin;

    use super::*;
    use crate::outcome::Outcome;

    /// One test at a time installs and raises signals (signals.rs owns the lock).
    use super::signals::tests::SIGNALS;

    /// A duty that records the phases it is told and reports a loss `lose_after` into the run.
    struct Fake {
        seen: Vec<Phase>,
        lose_after: Option<Duration>,
        /// Set once the duty has finished (after `Exited`).
        finished: bool,
    }

    impl Fake {
        fn new(lose_after: Option<Duration>) -> Self {
            Fake {
                seen: Vec::new(),
                lose_after,
                finished: false,
            }
        }
    }

    impl Duty for Fake {
        fn enter(&mut self, phase: Phase) {
            self.seen.push(phase);
        }

        fn next(&mut self) -> Pin<Box<dyn Future<Output = Event> + '_>> {
            Box::pin(async move {
                match (self.seen.last(), self.lose_after) {
                    (Some(Phase::Exited), _) => {
                        // Some work of its own first, as a check-in is.
                        tokio::task::yield_now().await;
                        self.finished = true;
                        Event::Done
                    }
                    (Some(Phase::Running) | None, Some(after)) => {
                        tokio::time::sleep(after).await;
                        self.lose_after = None;
                        Event::Lost(Loss {
                            exit_code: 10,
                            outcome: Outcome::NotEntitled,
                            message: "revoked".into(),
                        })
                    }
                    _ => std::future::pending().await,
                }
            })
        }

        fn when_stopping(&self) -> Option<&'static str> {
            Some("the fake is told")
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    fn sh(script: String) -> Vec<OsString> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    fn supervise(command: &[OsString], grace: Duration, duty: &mut Fake) -> Ended {
        let mut workload = Workload {
            command,
            set: &[("MPGATE_ENTITLEMENT", "verified")],
            remove: &["HOME"],
            grace,
            inherit: None,
        };
        runtime().block_on(async {
            let signals = Signals::install().unwrap();
            run(&mut workload, signals, &mut [duty]).await
        })
    }

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("mpgate-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_stop_signal_before_the_start_keeps_the_workload_from_starting() {
        let _one = SIGNALS.lock().unwrap_or_else(|e| e.into_inner());
        let dir = temp_dir("supervisor-start");
        for (signal, name) in [
            (libc::SIGTERM, "SIGTERM"),
            (libc::SIGINT, "SIGINT"),
            (libc::SIGHUP, "SIGHUP"),
        ] {
            let marker = dir.join(name);
            let command = sh(format!("touch '{}'", marker.display()));
            let mut duty = Fake::new(None);
            let mut workload = Workload {
                command: &command,
                set: &[],
                remove: &[],
                grace: Duration::from_secs(1),
                inherit: None,
            };
            let ended = runtime().block_on(async {
                let signals = Signals::install().unwrap();
                // After the check, before the spawn: as while the hand-over is prepared.
                // SAFETY: raise(3) of a signal this process now handles.
                unsafe { libc::raise(signal) };
                run(&mut workload, signals, &mut [&mut duty]).await
            });
            match ended {
                Ended::NotStarted { signal: s, name: n } => assert_eq!((s, n), (signal, name)),
                other => panic!("{name}: {other:?}"),
            }
            assert!(!marker.exists(), "{name}: the workload started");
            // The duty was told at once and finished (a seat goes back before mpgate says why).
            assert_eq!(duty.seen, [Phase::Exited], "{name}");
            assert!(duty.finished, "{name}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_workload_that_cannot_start_lets_the_duties_finish() {
        let _one = SIGNALS.lock().unwrap_or_else(|e| e.into_inner());
        let mut duty = Fake::new(None);
        let command: Vec<OsString> = vec!["/nonexistent/mpgate-test-program".into()];
        let ended = supervise(&command, Duration::from_secs(1), &mut duty);
        assert!(
            matches!(ended, Ended::Failed(ExecError::NotFound { .. })),
            "{ended:?}"
        );
        assert_eq!(duty.seen, [Phase::Exited]);
        assert!(duty.finished);
    }

    #[test]
    fn the_workload_s_status_and_environment_pass_and_its_group_ends_with_it() {
        let _one = SIGNALS.lock().unwrap_or_else(|e| e.into_inner());
        let dir = temp_dir("supervisor-group");
        let (pid_file, env_file) = (dir.join("pid"), dir.join("env"));
        let command = sh(format!(
            "sleep 600 & echo $! > '{}'; echo \"$MPGATE_ENTITLEMENT ${{HOME-unset}}\" > '{}'; exit 7",
            pid_file.display(),
            env_file.display()
        ));
        let mut duty = Fake::new(None);
        let ended = supervise(&command, Duration::from_secs(1), &mut duty);
        assert!(
            matches!(
                ended,
                Ended::Exited {
                    exit_code: 7,
                    loss: None
                }
            ),
            "{ended:?}"
        );
        assert_eq!(duty.seen, [Phase::Exited]);
        assert!(duty.finished);
        let env = std::fs::read_to_string(&env_file).unwrap();
        assert_eq!(env.trim(), "verified unset");
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
    fn a_duty_s_loss_stops_the_workload_and_its_code_is_mpgate_s() {
        let _one = SIGNALS.lock().unwrap_or_else(|e| e.into_inner());
        // `exec`: the shell becomes sleep, which SIGTERM ends.
        let command = sh("exec sleep 600".into());
        let mut duty = Fake::new(Some(Duration::from_millis(50)));
        let ended = supervise(&command, Duration::from_secs(60), &mut duty);
        match ended {
            Ended::Exited { exit_code, loss } => {
                assert_eq!(exit_code, 128 + libc::SIGTERM as u8);
                assert_eq!(loss.unwrap().exit_code, 10);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(duty.seen, [Phase::Stopping, Phase::Exited]);
        assert!(duty.finished);
    }

    #[test]
    fn a_workload_that_ignores_sigterm_is_killed_with_its_group_after_the_grace_period() {
        let _one = SIGNALS.lock().unwrap_or_else(|e| e.into_inner());
        let command = sh("trap '' TERM; sleep 600".into());
        let mut duty = Fake::new(Some(Duration::from_millis(50)));
        let grace = Duration::from_millis(300);
        let before = std::time::Instant::now();
        let ended = supervise(&command, grace, &mut duty);
        let took = before.elapsed();
        match ended {
            Ended::Exited { exit_code, loss } => {
                assert_eq!(exit_code, 128 + libc::SIGKILL as u8);
                assert!(loss.is_some());
            }
            other => panic!("{other:?}"),
        }
        assert!(took >= grace, "{took:?}");
        assert!(took < Duration::from_secs(30), "{took:?}");
        assert_eq!(duty.seen, [Phase::Stopping, Phase::Exited]);
    }

    #[test]
    fn a_stop_signal_is_forwarded_and_the_duties_are_told() {
        let _one = SIGNALS.lock().unwrap_or_else(|e| e.into_inner());
        let dir = temp_dir("supervisor-stop");
        let ready = dir.join("ready");
        // The workload says when its trap is set; the test then signals mpgate (this process).
        let command = sh(format!(
            "trap 'exit 42' USR1; trap 'exit 43' TERM; touch '{}'; while :; do sleep 0.05; done",
            ready.display()
        ));
        let mut duty = Fake::new(None);
        let mut workload = Workload {
            command: &command,
            set: &[],
            remove: &[],
            grace: Duration::from_secs(60),
            inherit: None,
        };
        let ended = runtime().block_on(async {
            let signals = Signals::install().unwrap();
            let raise = async {
                while !ready.exists() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                // SAFETY: raise(3) of a signal this process handles.
                unsafe { libc::raise(libc::SIGTERM) };
                std::future::pending::<()>().await
            };
            let duties: &mut [&mut dyn Duty] = &mut [&mut duty];
            tokio::select! {
                ended = run(&mut workload, signals, duties) => ended,
                () = raise => unreachable!(),
                () = tokio::time::sleep(Duration::from_secs(30)) => panic!("the workload ran on"),
            }
        });
        assert!(
            matches!(
                ended,
                Ended::Exited {
                    exit_code: 43,
                    loss: None
                }
            ),
            "{ended:?}"
        );
        assert_eq!(duty.seen, [Phase::Stopping, Phase::Exited]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
