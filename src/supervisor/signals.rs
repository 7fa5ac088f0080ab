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
/// between the check and the workload's start is lost (a signal is kept from its arrival
/// until it is read).
pub struct Signals {
    pub(crate) forwarded: Forwarded,
    pub(crate) child: Signal,
}

/// The forwarded signals as they arrive: SIGTERM, SIGINT and SIGHUP through tokio (the gate
/// handles them from the start, so their handlers exist already), every other one through
/// [`caught`]'s handler.
pub(crate) struct Forwarded {
    stops: Vec<(i32, &'static str, Signal)>,
    caught: caught::Receiver,
}

impl Signals {
    pub fn install() -> std::io::Result<Self> {
        let mut stops = Vec::with_capacity(NOT_STARTING.len());
        for number in NOT_STARTING {
            let name = FORWARDED
                .iter()
                .find(|(n, _)| *n == number)
                .map_or("a stop signal", |(_, name)| name);
            stops.push((number, name, signal(SignalKind::from_raw(number))?));
        }
        for number in IGNORED {
            // SAFETY: installing SIG_IGN has no memory effects; the workload gets the default
            // again (exec::spawn resets every disposition).
            unsafe {
                libc::signal(number, libc::SIG_IGN);
            }
        }
        // SIGRTMIN() already leaves out the real-time signals the C library keeps for itself.
        let others = FORWARDED
            .iter()
            .map(|(number, _)| *number)
            .filter(|number| !NOT_STARTING.contains(number))
            .chain(libc::SIGRTMIN()..=libc::SIGRTMAX());
        let caught = caught::install(others)?;
        Ok(Signals {
            forwarded: Forwarded { stops, caught },
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
        for (number, name, stream) in self.forwarded.stops.iter_mut() {
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

/// The next of the forwarded signals.
pub(crate) async fn next(forwarded: &mut Forwarded) -> (i32, &'static str) {
    std::future::poll_fn(|cx| {
        for (number, name, stream) in forwarded.stops.iter_mut() {
            if stream.poll_recv(cx).is_ready() {
                return std::task::Poll::Ready((*number, *name));
            }
        }
        forwarded.caught.poll_next(cx).map(|number| {
            let name = FORWARDED
                .iter()
                .find(|(n, _)| *n == number)
                .map_or("a real-time signal", |(_, name)| name);
            (number, name)
        })
    })
    .await
}

/// The forwarded signals but the stop ones, caught by a handler of mpgate's own: through
/// tokio, each signal's registration copied every handler registered before it (signal-hook's
/// registry is copy-on-write), and the 45 of them cost 1.2 M instructions of the hand-over.
/// The handler does what tokio's does, and only what is async-signal-safe: it marks the
/// signal pending and writes a byte to wake the receiver.
mod caught {
    use std::io;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;
    use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
    use std::sync::OnceLock;
    use std::task::{Context, Poll};

    /// The signals that arrived and were not read yet: bit n - 1 for signal n (1 to 64).
    static PENDING: AtomicU64 = AtomicU64::new(0);
    /// The wake socket's sending end, which the handler writes to (-1: none yet).
    static WAKE: AtomicI32 = AtomicI32::new(-1);
    /// The wake socket pair: made once and never closed, so the handler never writes to a
    /// descriptor that has been closed and reused (the handlers stay, as tokio's do).
    static PAIR: OnceLock<Result<(UnixStream, UnixStream), (io::ErrorKind, String)>> =
        OnceLock::new();

    extern "C" fn on_signal(signal: libc::c_int) {
        // SAFETY: __errno_location is this thread's errno, saved and restored around write(2),
        // which is async-signal-safe, as atomic operations are.
        unsafe {
            let errno = *libc::__errno_location();
            if (1..=64).contains(&signal) {
                PENDING.fetch_or(1 << (signal - 1), Ordering::SeqCst);
            }
            let fd = WAKE.load(Ordering::SeqCst);
            if fd >= 0 {
                libc::write(fd, [1u8].as_ptr().cast(), 1);
            }
            *libc::__errno_location() = errno;
        }
    }

    /// Catches `signals` from now on; what arrived before is dropped.
    pub fn install(signals: impl Iterator<Item = i32>) -> io::Result<Receiver> {
        let pair =
            PAIR.get_or_init(|| wake_pair().map_err(|e: io::Error| (e.kind(), e.to_string())));
        let (reader, writer) = match pair {
            Ok(pair) => pair,
            Err((kind, message)) => return Err(io::Error::new(*kind, message.clone())),
        };
        let reader = tokio::net::UnixStream::from_std(reader.try_clone()?)?;
        WAKE.store(writer.as_raw_fd(), Ordering::SeqCst);
        PENDING.store(0, Ordering::SeqCst);
        for signal in signals {
            // SAFETY: a zeroed sigaction with its mask emptied and a handler that only does
            // async-signal-safe work (above), with the flags signal-hook's registry uses.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
                action.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut action.sa_mask);
                if libc::sigaction(signal, &action, std::ptr::null_mut()) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        Ok(Receiver { reader, taken: 0 })
    }

    fn wake_pair() -> io::Result<(UnixStream, UnixStream)> {
        let pair = UnixStream::pair()?;
        pair.0.set_nonblocking(true)?;
        pair.1.set_nonblocking(true)?;
        Ok(pair)
    }

    /// Reads the caught signals, one at a time.
    pub struct Receiver {
        reader: tokio::net::UnixStream,
        /// Arrived and not yet returned (bits as in `PENDING`).
        taken: u64,
    }

    impl Receiver {
        /// The next caught signal: the lowest-numbered of those pending.
        pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<i32> {
            loop {
                if self.taken != 0 {
                    let bit = self.taken.trailing_zeros();
                    self.taken &= !(1 << bit);
                    return Poll::Ready(bit as i32 + 1);
                }
                // Emptied before the pending set is read: a signal after the read writes a
                // byte that wakes the next poll.
                match self.reader.poll_read_ready(cx) {
                    Poll::Ready(Ok(())) => {}
                    // The runtime is shutting down: nothing more will be read.
                    Poll::Ready(Err(_)) | Poll::Pending => return Poll::Pending,
                }
                let mut bytes = [0u8; 64];
                while matches!(self.reader.try_read(&mut bytes), Ok(n) if n > 0) {}
                self.taken = PENDING.swap(0, Ordering::SeqCst);
            }
        }
    }
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
pub(super) mod tests {
    use super::*;

    /// Signals go to the whole test process: one test at a time installs and raises them.
    pub(in crate::supervisor) static SIGNALS: std::sync::Mutex<()> = std::sync::Mutex::new(());

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
    fn every_forwarded_signal_raised_before_the_read_is_read_once_the_stop_ones_first() {
        let _one = SIGNALS.lock().unwrap_or_else(|e| e.into_inner());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let raised = [
            libc::SIGRTMAX(),
            libc::SIGUSR1,
            libc::SIGRTMIN(),
            libc::SIGTERM,
            libc::SIGWINCH,
            libc::SIGUSR1,
        ];
        let read = runtime.block_on(async {
            let mut signals = Signals::install().unwrap();
            for signal in raised {
                // SAFETY: raise(3) of a signal this process now handles.
                unsafe { libc::raise(signal) };
            }
            let mut read = Vec::new();
            for _ in 0..5 {
                let signal = next(&mut signals.forwarded);
                let signal = tokio::time::timeout(std::time::Duration::from_secs(10), signal);
                read.push(signal.await.expect("a raised signal is read"));
            }
            // A repeat that arrived before the read is one signal, as with tokio's streams.
            let more = tokio::time::timeout(
                std::time::Duration::from_millis(50),
                next(&mut signals.forwarded),
            )
            .await;
            assert!(more.is_err(), "{more:?}");
            read
        });
        assert_eq!(
            read,
            [
                (libc::SIGTERM, "SIGTERM"),
                (libc::SIGUSR1, "SIGUSR1"),
                (libc::SIGWINCH, "SIGWINCH"),
                (libc::SIGRTMIN(), "a real-time signal"),
                (libc::SIGRTMAX(), "a real-time signal"),
            ]
        );
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
