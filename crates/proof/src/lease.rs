//! Owns the workload's side of `mpgate --seat hold`'s heartbeat: the line mpgate writes, and a
//! watcher that ends the workload when no heartbeat comes before the seat's expiry.
//!
//! With `--seat hold` mpgate hands the workload one end of a Unix socket (its descriptor number
//! in `MPGATE_LEASE_FD`) and writes one line to it when the seat is checked out and after
//! every extension:
//!
//! ```text
//! {"leftMs":1799000,"expiration":"2026-12-06T08:00:00Z"}
//! ```
//!
//! `leftMs` is how long the seat has left, measured by mpgate as it wrote the line. The
//! watcher counts it from the moment it reads the line, on its own monotonic clock (never the
//! node's wall clock, which the node's owner sets), less a small safety margin. When no line
//! comes before that deadline (mpgate was frozen with SIGSTOP, or could not extend the seat),
//! or the socket closes (mpgate is gone), License Manager may already have given the seat to
//! another copy: the workload ends. `"leftMs": null` means no deadline: mpgate runs the
//! workload even without a seat (`MPGATE_ON_TRANSIENT_ERROR=allow`, which a pinned build
//! refuses); only the socket's end counts then. `expiration` (RFC 3339, License Manager's) is
//! for messages only.
//!
//! A frozen mpgate cannot stop a workload, but a watcher inside the workload cannot be frozen
//! without freezing the workload with it:
//!
//! ```no_run
//! // First thing in the workload's main(): the deadline counts from when the first line is
//! // read.
//! if let Err(e) = mpgate_proof::lease::watch() {
//!     eprintln!("{e}");
//!     std::process::exit(i32::from(mpgate_proof::lease::EXIT_CODE));
//! }
//! // ... the workload; the watcher ends the process (exit 10) if the lease lapses.
//! ```

use std::ffi::OsString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The variable that names the descriptor the workload inherits.
pub const VAR: &str = "MPGATE_LEASE_FD";
/// What a workload the watcher ends exits with: mpgate's own code for a lost seat.
pub const EXIT_CODE: u8 = 10;
/// The longest line read; mpgate's are under 100 bytes. A longer one is refused.
pub const MAX_LINE_BYTES: usize = 512;
/// The watcher ends the workload this long before the seat's expiry (at most a tenth of the
/// time left): room for the time between mpgate's measurement and the read, and for the exit.
pub const SAFETY_MARGIN: Duration = Duration::from_secs(1);
/// mpgate writes the first line before it starts the workload: a watcher that reads none
/// within this long of its start is not watching a lease mpgate holds.
pub const FIRST_BEAT_WITHIN: Duration = Duration::from_secs(5);

/// One heartbeat: what a line says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Beat {
    /// How long the seat has left; `None`: no deadline (the workload runs without a seat
    /// when License Manager is unreachable, as `MPGATE_ON_TRANSIENT_ERROR=allow` says).
    pub left: Option<Duration>,
    /// The seat's expiration as License Manager wrote it (RFC 3339), for messages.
    pub expiration: Option<String>,
}

impl Beat {
    /// The line mpgate writes, newline included.
    pub fn to_line(&self) -> String {
        let left = self
            .left
            .map(|d| d.as_millis().min(u128::from(u64::MAX)) as u64);
        let line = serde_json::json!({ "leftMs": left, "expiration": self.expiration });
        format!("{line}\n")
    }

    /// Reads one line (without its newline). Strict where it matters: an object whose
    /// `leftMs` is present and a whole number of milliseconds or `null`; `expiration` a
    /// string or `null` if present. Other members are ignored, so a newer mpgate may add some.
    pub fn parse(line: &[u8]) -> Result<Beat, LeaseEnded> {
        let malformed = |why: &str| LeaseEnded::Malformed(why.to_string());
        if line.len() > MAX_LINE_BYTES {
            return Err(malformed("longer than 512 bytes"));
        }
        let value: serde_json::Value =
            serde_json::from_slice(line).map_err(|_| malformed("not JSON"))?;
        let object = value
            .as_object()
            .ok_or_else(|| malformed("not a JSON object"))?;
        let left = match object.get("leftMs") {
            None => return Err(malformed("no leftMs")),
            Some(serde_json::Value::Null) => None,
            Some(n) => Some(Duration::from_millis(n.as_u64().ok_or_else(|| {
                malformed("leftMs is not a whole number of milliseconds")
            })?)),
        };
        let expiration = match object.get("expiration") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) if s.len() <= 64 => Some(s.clone()),
            Some(_) => return Err(malformed("expiration is not a short string")),
        };
        Ok(Beat { left, expiration })
    }
}

/// Why the lease ended, or cannot be watched: each means the workload must not run on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseEnded {
    #[error("MPGATE_LEASE_FD is not set: this process was not started by mpgate with --seat hold (with another seat mode, or without mpgate, there is no lease to watch)")]
    NotHeld,
    #[error("MPGATE_LEASE_FD {value:?} {problem}: it must name the socket mpgate --seat hold hands over")]
    BadDescriptor { value: String, problem: String },
    #[error("no heartbeat from mpgate within {FIRST_BEAT_WITHIN:?} of the watcher's start: MPGATE_LEASE_FD does not carry mpgate's lease")]
    NoFirstBeat,
    #[error("no heartbeat from mpgate before the seat's expiry ({}): mpgate could not extend it, or was stopped, so License Manager may have released the seat; the workload ends", .expiration.as_deref().unwrap_or("time unknown"))]
    Expired { expiration: Option<String> },
    #[error(
        "mpgate closed the lease (it has ended, and no longer holds the seat); the workload ends"
    )]
    Closed,
    #[error("a line on MPGATE_LEASE_FD is not mpgate's heartbeat ({0}); the workload ends")]
    Malformed(String),
    #[error("cannot read MPGATE_LEASE_FD ({0}); the workload ends")]
    Read(String),
}

/// What a watcher knows: the deadline, from the lines read so far.
#[derive(Debug)]
pub struct Watch {
    /// Bytes of a line not ended yet.
    partial: Vec<u8>,
    /// When the workload must have ended; `None`: no deadline.
    deadline: Option<Instant>,
    expiration: Option<String>,
    beats: u64,
}

impl Watch {
    /// A watch started at `now`: the first line must come within [`FIRST_BEAT_WITHIN`].
    pub fn new(now: Instant) -> Watch {
        Watch {
            partial: Vec::new(),
            deadline: Some(now + FIRST_BEAT_WITHIN),
            expiration: None,
            beats: 0,
        }
    }

    /// Takes what was read at `now`: each complete line sets the deadline anew. A malformed
    /// or overlong line ends the lease (fail closed).
    pub fn feed(&mut self, bytes: &[u8], now: Instant) -> Result<(), LeaseEnded> {
        let mut rest = bytes;
        while let Some(end) = rest.iter().position(|b| *b == b'\n') {
            self.partial.extend_from_slice(&rest[..end]);
            rest = &rest[end + 1..];
            let line = std::mem::take(&mut self.partial);
            self.beat(Beat::parse(&line)?, now)?;
        }
        if self.partial.len() + rest.len() > MAX_LINE_BYTES {
            return Err(LeaseEnded::Malformed("longer than 512 bytes".into()));
        }
        self.partial.extend_from_slice(rest);
        Ok(())
    }

    fn beat(&mut self, beat: Beat, now: Instant) -> Result<(), LeaseEnded> {
        self.beats += 1;
        self.expiration = beat.expiration;
        self.deadline =
            match beat.left {
                None => None,
                Some(left) => {
                    let margin = SAFETY_MARGIN.min(left / 10);
                    Some(now.checked_add(left - margin).ok_or_else(|| {
                        LeaseEnded::Malformed("leftMs is beyond any clock".into())
                    })?)
                }
            };
        Ok(())
    }

    /// When the workload must have ended, if there is a deadline.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// How many heartbeats were read.
    pub fn beats(&self) -> u64 {
        self.beats
    }

    /// Why the lease ended when the deadline passed.
    pub fn expired(&self) -> LeaseEnded {
        if self.beats == 0 {
            LeaseEnded::NoFirstBeat
        } else {
            LeaseEnded::Expired {
                expiration: self.expiration.clone(),
            }
        }
    }
}

/// The descriptor mpgate handed over, owned by this process.
#[derive(Debug)]
pub struct Lease {
    fd: OwnedFd,
}

impl Lease {
    /// Takes the descriptor `MPGATE_LEASE_FD` names. Call it once, early: the descriptor is
    /// this process's from then on (duplicated close-on-exec, so the workload's own children
    /// do not inherit it, and the inherited number closed).
    pub fn from_env() -> Result<Lease, LeaseEnded> {
        Self::from_vars(&|name| std::env::var_os(name))
    }

    /// Like [`Lease::from_env`] with the environment given as a lookup function.
    pub fn from_vars(env: &dyn Fn(&str) -> Option<OsString>) -> Result<Lease, LeaseEnded> {
        let value = env(VAR).ok_or(LeaseEnded::NotHeld)?;
        let value = value.to_string_lossy().into_owned();
        let bad = |problem: &str| LeaseEnded::BadDescriptor {
            value: value.clone(),
            problem: problem.to_string(),
        };
        if value.is_empty() || value.len() > 9 || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("is not a descriptor number"));
        }
        let number: RawFd = value
            .parse()
            .map_err(|_| bad("is not a descriptor number"))?;
        if number < 3 {
            // Standard input, output or error: never the lease.
            return Err(bad("is a standard stream"));
        }
        // SAFETY: fcntl(F_DUPFD_CLOEXEC) through try_clone_to_owned only duplicates the
        // descriptor; the borrow does not outlive this call, and a number that is not open
        // fails the duplication (EBADF) without touching anything.
        let borrowed = unsafe { BorrowedFd::borrow_raw(number) };
        let copy = borrowed
            .try_clone_to_owned()
            .map_err(|e| bad(&format!("is not open ({e})")))?;
        let file = File::from(copy);
        let is_socket = file
            .metadata()
            .map(|m| m.file_type().is_socket())
            .unwrap_or(false);
        if !is_socket {
            return Err(bad("is not a socket"));
        }
        // SAFETY: the number names a socket this process inherited for the lease (the
        // environment says so, and it is one); it is closed here so that only the
        // close-on-exec copy remains. Nothing else in the process owns it: `from_env` is the
        // lease's one reader.
        drop(unsafe { OwnedFd::from_raw_fd(number) });
        Ok(Lease { fd: file.into() })
    }

    /// Blocks until the lease ends, and says why. A thread of its own reads the socket.
    pub fn wait(self) -> LeaseEnded {
        // Few messages: mpgate writes one line per extension.
        let (sender, lines) = mpsc::sync_channel::<Result<Vec<u8>, String>>(4);
        let mut file = File::from(self.fd);
        let reader = std::thread::Builder::new()
            .name("mpgate-lease-reader".into())
            .spawn(move || {
                let mut buffer = [0u8; 4096];
                loop {
                    let read = match file.read(&mut buffer) {
                        Ok(n) => Ok(buffer[..n].to_vec()),
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => Err(e.to_string()),
                    };
                    let last = !matches!(&read, Ok(bytes) if !bytes.is_empty());
                    if sender.send(read).is_err() || last {
                        return;
                    }
                }
            });
        if let Err(e) = reader {
            return LeaseEnded::Read(format!("no thread to read it: {e}"));
        }
        let mut watch = Watch::new(Instant::now());
        loop {
            let received = match watch.deadline() {
                Some(deadline) => {
                    let wait = deadline.saturating_duration_since(Instant::now());
                    match lines.recv_timeout(wait) {
                        Ok(read) => Some(read),
                        Err(mpsc::RecvTimeoutError::Timeout) => return watch.expired(),
                        Err(mpsc::RecvTimeoutError::Disconnected) => None,
                    }
                }
                None => lines.recv().ok(),
            };
            let now = Instant::now();
            match received {
                // The reader ended: it saw the end of the socket, or could not go on.
                None => return LeaseEnded::Closed,
                Some(Err(e)) => return LeaseEnded::Read(e),
                Some(Ok(bytes)) if bytes.is_empty() => return LeaseEnded::Closed,
                Some(Ok(bytes)) => {
                    // A line read after the deadline does not revive the lease.
                    if watch.deadline().is_some_and(|d| now >= d) {
                        return watch.expired();
                    }
                    if let Err(ended) = watch.feed(&bytes, now) {
                        return ended;
                    }
                }
            }
        }
    }

    /// Watches on a thread of its own; `on_end` is called once, on that thread, when the
    /// lease ends. It must end the workload (or what of it the lease covers).
    pub fn watch_with(
        self,
        on_end: impl FnOnce(LeaseEnded) + Send + 'static,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("mpgate-lease".into())
            .spawn(move || on_end(self.wait()))
    }
}

impl AsFd for Lease {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Lease {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl From<Lease> for OwnedFd {
    fn from(lease: Lease) -> OwnedFd {
        lease.fd
    }
}

/// Watches the lease mpgate handed over on a thread of its own; when it ends, says why on
/// standard error and exits the process with [`EXIT_CODE`] (10). An error here (no lease, a
/// bad descriptor) is returned: the workload must not run on.
pub fn watch() -> Result<(), LeaseEnded> {
    let lease = Lease::from_env()?;
    lease
        .watch_with(|ended| {
            eprintln!("mpgate-proof: {ended}");
            std::process::exit(i32::from(EXIT_CODE));
        })
        .map(drop)
        .map_err(|e| LeaseEnded::Read(format!("no thread to watch it: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Option<Duration> {
        Some(Duration::from_millis(n))
    }

    #[test]
    fn a_line_says_the_time_left_and_the_expiration() {
        let beat = Beat::parse(br#"{"leftMs":1500,"expiration":"2026-12-06T08:00:00Z"}"#).unwrap();
        assert_eq!(beat.left, ms(1500));
        assert_eq!(beat.expiration.as_deref(), Some("2026-12-06T08:00:00Z"));
        // No deadline; members a newer mpgate adds are ignored.
        let beat = Beat::parse(br#"{"leftMs":null,"expiration":null,"seq":3}"#).unwrap();
        assert_eq!(
            beat,
            Beat {
                left: None,
                expiration: None
            }
        );
        // What mpgate writes reads back.
        let written = Beat {
            left: ms(42),
            expiration: Some("x".into()),
        };
        let line = written.to_line();
        assert!(
            line.ends_with('\n') && line.matches('\n').count() == 1,
            "{line:?}"
        );
        assert_eq!(Beat::parse(line.trim_end().as_bytes()).unwrap(), written);
        assert_eq!(
            Beat {
                left: None,
                expiration: None
            }
            .to_line(),
            "{\"expiration\":null,\"leftMs\":null}\n"
        );
    }

    #[test]
    fn a_malformed_line_is_refused_with_its_reason() {
        for (line, reason) in [
            (&b"hello"[..], "not JSON"),
            (b"", "not JSON"),
            (b"[1]", "not a JSON object"),
            (b"{}", "no leftMs"),
            (br#"{"expiration":"x"}"#, "no leftMs"),
            (br#"{"leftMs":-1}"#, "whole number"),
            (br#"{"leftMs":1.5}"#, "whole number"),
            (br#"{"leftMs":"1000"}"#, "whole number"),
            (br#"{"leftMs":1e3}"#, "whole number"),
            (br#"{"leftMs":18446744073709551616}"#, "whole number"),
            (br#"{"leftMs":1,"expiration":5}"#, "expiration"),
            (b"{\"leftMs\":1}\xff", "not JSON"),
        ] {
            match Beat::parse(line) {
                Err(LeaseEnded::Malformed(why)) => {
                    assert!(why.contains(reason), "{line:?}: {why}")
                }
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(line)),
            }
        }
        let long = format!(r#"{{"leftMs":1,"pad":"{}"}}"#, "x".repeat(MAX_LINE_BYTES));
        assert!(
            matches!(Beat::parse(long.as_bytes()), Err(LeaseEnded::Malformed(why)) if why.contains("512"))
        );
    }

    #[test]
    fn the_deadline_counts_from_the_read_less_the_margin() {
        let start = Instant::now();
        let mut watch = Watch::new(start);
        assert_eq!(watch.deadline(), Some(start + FIRST_BEAT_WITHIN));
        assert_eq!(watch.expired(), LeaseEnded::NoFirstBeat);
        let read = start + Duration::from_secs(2);
        watch
            .feed(b"{\"leftMs\":60000,\"expiration\":\"E\"}\n", read)
            .unwrap();
        // A second off a minute.
        assert_eq!(watch.deadline(), Some(read + Duration::from_secs(59)));
        // A tenth off two seconds.
        watch
            .feed(b"{\"leftMs\":2000,\"expiration\":\"F\"}\n", read)
            .unwrap();
        assert_eq!(watch.deadline(), Some(read + Duration::from_millis(1800)));
        assert_eq!(watch.beats(), 2);
        assert_eq!(
            watch.expired(),
            LeaseEnded::Expired {
                expiration: Some("F".into())
            }
        );
        // No deadline.
        watch.feed(b"{\"leftMs\":null}\n", read).unwrap();
        assert_eq!(watch.deadline(), None);
        // The largest time left neither wraps nor panics.
        let huge = format!("{{\"leftMs\":{}}}\n", u64::MAX);
        match watch.feed(huge.as_bytes(), read) {
            Ok(()) => assert!(watch.deadline().unwrap() > read + Duration::from_secs(1 << 40)),
            Err(e) => assert!(matches!(e, LeaseEnded::Malformed(_)), "{e:?}"),
        }
    }

    #[test]
    fn lines_may_come_in_pieces_and_several_at_once() {
        let start = Instant::now();
        let mut watch = Watch::new(start);
        watch.feed(b"{\"leftMs\":10", start).unwrap();
        assert_eq!(watch.beats(), 0);
        watch
            .feed(b"000}\n{\"leftMs\":20000}\n{\"left", start)
            .unwrap();
        assert_eq!(watch.beats(), 2);
        assert_eq!(watch.deadline(), Some(start + Duration::from_secs(19)));
        // A line that never ends is cut off at the bound.
        let endless = vec![b' '; MAX_LINE_BYTES];
        assert!(
            matches!(watch.feed(&endless, start), Err(LeaseEnded::Malformed(why)) if why.contains("512"))
        );
    }

    #[test]
    fn the_descriptor_must_be_a_socket_past_the_standard_streams() {
        let env = |value: Option<&str>| {
            let value = value.map(OsString::from);
            Lease::from_vars(&move |name| (name == VAR).then(|| value.clone()).flatten())
        };
        assert_eq!(env(None).unwrap_err(), LeaseEnded::NotHeld);
        for (value, problem) in [
            ("", "not a descriptor number"),
            ("x", "not a descriptor number"),
            ("+5", "not a descriptor number"),
            ("1234567890", "not a descriptor number"),
            ("0", "standard stream"),
            ("2", "standard stream"),
            ("999999", "is not open"),
        ] {
            match env(Some(value)).unwrap_err() {
                LeaseEnded::BadDescriptor { problem: p, .. } => {
                    assert!(p.contains(problem), "{value:?}: {p}")
                }
                other => panic!("{value:?}: {other:?}"),
            }
        }
        // A regular file is not the lease, and is left open for its owner.
        let file = File::open(env!("CARGO_MANIFEST_DIR").to_string() + "/Cargo.toml").unwrap();
        let number = file.as_raw_fd().to_string();
        match env(Some(&number)).unwrap_err() {
            LeaseEnded::BadDescriptor { problem, .. } => assert!(problem.contains("not a socket")),
            other => panic!("{other:?}"),
        }
        assert!(file.metadata().is_ok(), "the file was closed");
    }

    #[test]
    fn the_watcher_ends_on_a_missed_deadline_on_the_end_and_on_a_bad_line() {
        use std::io::Write;
        use std::os::unix::net::UnixStream;

        let lease = |stream: UnixStream| Lease { fd: stream.into() };
        // Lines keep it alive; the deadline of the last one ends it, not later.
        let (mut mpgate, theirs) = UnixStream::pair().unwrap();
        let started = Instant::now();
        let waiting = std::thread::spawn(move || (lease(theirs).wait(), Instant::now()));
        mpgate
            .write_all(b"{\"leftMs\":300,\"expiration\":\"A\"}\n")
            .unwrap();
        std::thread::sleep(Duration::from_millis(150));
        mpgate
            .write_all(b"{\"leftMs\":300,\"expiration\":\"B\"}\n")
            .unwrap();
        let (ended, at) = waiting.join().unwrap();
        assert_eq!(
            ended,
            LeaseEnded::Expired {
                expiration: Some("B".into())
            }
        );
        let took = at - started;
        // 150 ms, then 300 ms less a tenth, measured from each read.
        assert!(took >= Duration::from_millis(150 + 270), "{took:?}");
        assert!(took < Duration::from_millis(150 + 300 + 2000), "{took:?}");
        drop(mpgate);

        // mpgate gone: the end of the socket ends the lease, even without a deadline.
        let (mut mpgate, theirs) = UnixStream::pair().unwrap();
        let waiting = std::thread::spawn(move || lease(theirs).wait());
        mpgate.write_all(b"{\"leftMs\":null}\n").unwrap();
        drop(mpgate);
        assert_eq!(waiting.join().unwrap(), LeaseEnded::Closed);

        // Fail closed on a line that is not mpgate's.
        let (mut mpgate, theirs) = UnixStream::pair().unwrap();
        let waiting = std::thread::spawn(move || lease(theirs).wait());
        mpgate
            .write_all(b"{\"leftMs\":60000}\nrenew please\n")
            .unwrap();
        assert!(matches!(waiting.join().unwrap(), LeaseEnded::Malformed(why) if why == "not JSON"));

        // The callback runs once, on the watcher's thread.
        let (mpgate, theirs) = UnixStream::pair().unwrap();
        let (told, heard) = mpsc::channel();
        lease(theirs)
            .watch_with(move |ended| told.send(ended).unwrap())
            .unwrap();
        drop(mpgate);
        assert_eq!(
            heard.recv_timeout(Duration::from_secs(10)).unwrap(),
            LeaseEnded::Closed
        );
    }
}
