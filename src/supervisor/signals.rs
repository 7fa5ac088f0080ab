//! Owns the supervisor's signals: which are forwarded, ignored or stop the workload, and their handlers.

use std::future::Future;
use std::pin::Pin;

use tokio::signal::unix::{signal, Signal, SignalKind};

/// The signals passed on to the workload: every one tini passes on (all it can block, but
/// SIGCHLD and those it keeps for itself: the fault signals SIGFPE, SIGILL, SIGSEGV, SIGBUS,
/// SIGABRT, SIGTRAP, SIGSYS, and SIGTTIN and SIGTTOU, which it ignores), but SIGPIPE (mpgate's
/// own writes raise it, so it is ignored), plus the real-time ones. A signal mpgate neither
/// forwards nor handles would end it and leave the workload without its supervisor.
pub const FORWARDED: [(i32, &str); 18] = [
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
    (libc::SIGVTALRM, "SIGVTALRM"),
    (libc::SIGPROF, "SIGPROF"),
    (libc::SIGIO, "SIGIO"),
    (libc::SIGPWR, "SIGPWR"),
    (libc::SIGURG, "SIGURG"),
    (libc::SIGXCPU, "SIGXCPU"),
    (libc::SIGXFSZ, "SIGXFSZ"),
    (libc::SIGSTKFLT, "SIGSTKFLT"),
];
/// Ignored, as tini does: the workload's group owns the terminal, so a write of mpgate's to
/// it (with TOSTOP) would otherwise stop mpgate, or its handler stop the workload.
pub(crate) const IGNORED: [i32; 2] = [libc::SIGTTIN, libc::SIGTTOU];
/// The signals that stop the workload: the duties are told, and the workload is killed
/// `--grace` later if it has not ended.
pub(crate) const STOPPING: [i32; 2] = [libc::SIGTERM, libc::SIGINT];
/// The signals that, before the workload has started, mean it must not (as before the
/// hand-over: `gate::run`).
pub(crate) const NOT_STARTING: [i32; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

/// The handlers the supervisor reads, installed before the hand-over so that no signal
/// between the check and the workload's start is lost (tokio delivers a signal only to
/// streams that exist when it arrives).
pub struct Signals {
    pub(crate) forwarded: Vec<(i32, &'static str, Signal)>,
    pub(crate) child: Signal,
}

impl Signals {
    pub fn install() -> std::io::Result<Self> {
        let mut forwarded = Vec::with_capacity(FORWARDED.len() + 31);
        for (number, name) in FORWARDED {
            forwarded.push((number, name, signal(SignalKind::from_raw(number))?));
        }
        for number in IGNORED {
            // SAFETY: installing SIG_IGN has no memory effects; the workload gets the default
            // again (exec::spawn resets every disposition).
            unsafe {
                libc::signal(number, libc::SIG_IGN);
            }
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

    /// A stop signal that came before the workload started (after the check, while the
    /// hand-over was prepared): the workload must not start. The yield lets the runtime's
    /// signal driver deliver what has arrived; the other forwarded signals wait for the
    /// workload.
    pub(crate) async fn stopped_before_start(&mut self) -> Option<(i32, &'static str)> {
        tokio::task::yield_now().await;
        let mut stop = None;
        for (number, name, stream) in self.forwarded.iter_mut() {
            if !NOT_STARTING.contains(number) {
                continue;
            }
            let arrived =
                std::future::poll_fn(|cx| std::task::Poll::Ready(stream.poll_recv(cx).is_ready()))
                    .await;
            if arrived && stop.is_none() {
                stop = Some((*number, *name));
            }
        }
        stop
    }
}

/// The next of the `forwarded` signals.
pub(crate) async fn next(forwarded: &mut [(i32, &'static str, Signal)]) -> (i32, &'static str) {
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
pub(crate) async fn select_all<T, F: Future<Output = T> + Unpin>(
    futures: impl IntoIterator<Item = F>,
) -> T {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The signals tini forwards (krallin/tini, src/tini.c at 369448a, `configure_signals` and
    /// `wait_and_forward_signal`): every signal `sigfillset` blocks but `signals_for_tini`
    /// (SIGFPE, SIGILL, SIGSEGV, SIGBUS, SIGABRT, SIGTRAP, SIGSYS, SIGTTIN, SIGTTOU) and
    /// SIGCHLD; SIGKILL and SIGSTOP cannot be blocked, and the C library's own real-time
    /// signals are left out of `sigfillset`.
    fn tini_forwards() -> Vec<i32> {
        let kept = [
            libc::SIGFPE,
            libc::SIGILL,
            libc::SIGSEGV,
            libc::SIGBUS,
            libc::SIGABRT,
            libc::SIGTRAP,
            libc::SIGSYS,
            libc::SIGTTIN,
            libc::SIGTTOU,
            libc::SIGCHLD,
            libc::SIGKILL,
            libc::SIGSTOP,
        ];
        (1..libc::SIGRTMIN())
            .filter(|s| !kept.contains(s) && *s < 32)
            .chain(libc::SIGRTMIN()..=libc::SIGRTMAX())
            .collect()
    }

    #[test]
    fn the_forwarded_signals_are_tini_s_but_sigpipe() {
        let mut ours: Vec<i32> = FORWARDED
            .iter()
            .map(|(n, _)| *n)
            .chain(libc::SIGRTMIN()..=libc::SIGRTMAX())
            .collect();
        ours.sort_unstable();
        let mut tini = tini_forwards();
        // mpgate ignores SIGPIPE: its own writes to a closed pipe raise it, and forwarding
        // those would hurt the workload.
        tini.retain(|s| *s != libc::SIGPIPE);
        assert_eq!(ours, tini);
        // SIGTTIN and SIGTTOU are ignored, as tini does; the stopping ones are forwarded.
        assert!(IGNORED.iter().all(|s| !ours.contains(s)));
        assert!(STOPPING
            .iter()
            .chain(&NOT_STARTING)
            .all(|s| ours.contains(s)));
        for (number, name) in FORWARDED {
            // SAFETY: strsignal returns a static string for a valid signal number.
            let described = unsafe { std::ffi::CStr::from_ptr(libc::strsignal(number)) };
            assert!(!described.to_bytes().is_empty(), "{name}");
        }
    }
}
