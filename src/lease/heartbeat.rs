//! Owns the heartbeat a held seat gives the workload: a socket it inherits, one line at the checkout and at every extension.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, SystemTime};

use mpgate_proof::lease::Beat;

use crate::license::rfc3339;

/// mpgate's end writes, the workload's end (`MPGATE_LEASE_FD`) reads.
///
/// A Unix stream socket rather than a pipe: a pipe can be opened again through
/// `/proc/PID/fd/N` by anyone allowed to look at the workload, who could then write heartbeats
/// of their own into it; a socket cannot be opened that way. mpgate never blocks on it: a line
/// the socket has no room for (a workload that never reads) is dropped, and a workload that
/// closed its end costs nothing (no SIGPIPE: `MSG_NOSIGNAL`).
pub struct Heartbeat {
    ours: OwnedFd,
    /// With `MPGATE_ON_TRANSIENT_ERROR=allow` the workload runs on without a seat: the lines
    /// say so (no deadline) rather than give a deadline mpgate itself would not keep.
    deadline: bool,
    /// The rest of a line the socket took only in part: sent before any new line, so that
    /// the workload never reads half a line.
    unsent: Vec<u8>,
}

impl Heartbeat {
    /// A new socket pair: mpgate's end, and the workload's (numbered 3 or more), both
    /// close-on-exec: the supervisor hands the workload's end over to the workload alone, and
    /// closes its own copy once the workload has it.
    pub fn open(deadline: bool) -> std::io::Result<(Heartbeat, OwnedFd)> {
        let mut fds = [0; 2];
        // SAFETY: socketpair writes two descriptors into `fds`, which has room for them.
        let rc = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just created and belong to no one else.
        let (ours, theirs) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // A parent that started mpgate with a standard stream closed would otherwise see the
        // workload get the socket as its standard input, output or error.
        let theirs = if theirs.as_raw_fd() < 3 {
            // SAFETY: F_DUPFD_CLOEXEC duplicates an open descriptor of ours.
            let copy = unsafe { libc::fcntl(theirs.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
            if copy < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: a new descriptor, ours alone.
            unsafe { OwnedFd::from_raw_fd(copy) }
        } else {
            theirs
        };
        // One way: what the workload writes is refused (EPIPE), never queued for mpgate.
        // SAFETY: shutdown of a socket of ours.
        unsafe { libc::shutdown(ours.as_raw_fd(), libc::SHUT_RD) };
        // A few lines at most wait for a workload that does not read (the kernel's least
        // send buffer): the watcher needs the newest, and the kernel's memory stays small.
        let size: libc::c_int = 4096;
        // SAFETY: setsockopt reads one c_int from a live variable.
        unsafe {
            libc::setsockopt(
                ours.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        let heartbeat = Heartbeat {
            ours,
            deadline,
            unsent: Vec::new(),
        };
        Ok((heartbeat, theirs))
    }

    /// One heartbeat: the seat has `left` from now, and expires at `expiration`.
    pub fn beat(&mut self, left: Duration, expiration: SystemTime) {
        let beat = Beat {
            left: self.deadline.then_some(left),
            expiration: Some(rfc3339(expiration)),
        };
        self.send(beat.to_line().into_bytes());
    }

    /// A heartbeat without a seat (`allow` started the workload unverified): no deadline.
    pub fn unheld(&mut self) {
        let beat = Beat {
            left: None,
            expiration: None,
        };
        self.send(beat.to_line().into_bytes());
    }

    fn send(&mut self, line: Vec<u8>) {
        if !self.unsent.is_empty() {
            let rest = std::mem::take(&mut self.unsent);
            match self.send_some(&rest) {
                Some(n) if n == rest.len() => {}
                // Still no room: the new line is dropped, the old one's rest kept.
                Some(n) => {
                    self.unsent = rest[n..].to_vec();
                    return;
                }
                None => return,
            }
        }
        if let Some(n) = self.send_some(&line) {
            if n < line.len() {
                self.unsent = line[n..].to_vec();
            }
        }
    }

    /// What of `bytes` the socket took now (`Some(0)`: no room); `None` once the workload
    /// closed its end, which is its choice: nothing more is sent.
    fn send_some(&mut self, bytes: &[u8]) -> Option<usize> {
        loop {
            // SAFETY: send reads `bytes.len()` bytes from a live slice; MSG_DONTWAIT never
            // blocks, MSG_NOSIGNAL raises no SIGPIPE.
            let sent = unsafe {
                libc::send(
                    self.ours.as_raw_fd(),
                    bytes.as_ptr().cast(),
                    bytes.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if sent >= 0 {
                return Some(sent as usize);
            }
            let error = std::io::Error::last_os_error();
            match error.kind() {
                std::io::ErrorKind::Interrupted => continue,
                std::io::ErrorKind::WouldBlock => {
                    tracing::debug!(
                        "the workload reads no heartbeats: the socket is full, this one is dropped"
                    );
                    return Some(0);
                }
                _ => {
                    tracing::debug!(%error, "the workload closed its heartbeat socket");
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn open(deadline: bool) -> (Heartbeat, std::fs::File) {
        let (heartbeat, theirs) = Heartbeat::open(deadline).unwrap();
        assert!(theirs.as_raw_fd() >= 3);
        (heartbeat, std::fs::File::from(theirs))
    }

    fn nonblocking(file: &std::fs::File) {
        // SAFETY: fcntl on a descriptor the test owns.
        unsafe {
            let flags = libc::fcntl(file.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
    }

    #[test]
    fn a_line_per_beat_with_the_time_left_and_the_expiration() {
        let (mut heartbeat, mut theirs) = open(true);
        let expiration = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        heartbeat.beat(Duration::from_millis(1500), expiration);
        heartbeat.unheld();
        let (mut allow, mut allowed) = open(false);
        allow.beat(Duration::from_millis(1500), expiration);
        drop(heartbeat);
        let mut text = String::new();
        theirs.read_to_string(&mut text).unwrap();
        assert_eq!(
            text,
            "{\"expiration\":\"2027-01-15T08:00:00Z\",\"leftMs\":1500}\n{\"expiration\":null,\"leftMs\":null}\n"
        );
        drop(allow);
        let mut text = String::new();
        allowed.read_to_string(&mut text).unwrap();
        assert_eq!(
            text,
            "{\"expiration\":\"2027-01-15T08:00:00Z\",\"leftMs\":null}\n"
        );
    }

    #[test]
    fn a_workload_that_never_reads_never_blocks_mpgate_and_never_gets_half_a_line() {
        let (mut heartbeat, mut theirs) = open(true);
        let expiration = SystemTime::now();
        // Far more than the socket holds; every call returns at once.
        let started = std::time::Instant::now();
        for i in 0..100_000u64 {
            heartbeat.beat(Duration::from_millis(i), expiration);
        }
        assert!(started.elapsed() < Duration::from_secs(20));
        // Read what was kept: whole lines only, then the next beat once there is room.
        nonblocking(&theirs);
        let mut text = Vec::new();
        let mut buffer = [0u8; 65536];
        loop {
            match theirs.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => text.extend_from_slice(&buffer[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        heartbeat.beat(Duration::from_millis(7), expiration);
        drop(heartbeat);
        let mut last = Vec::new();
        theirs.read_to_end(&mut last).unwrap();
        text.extend_from_slice(&last);
        let text = String::from_utf8(text).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        // The kernel's least send buffer: a few lines, whole.
        assert!(
            (2..=64).contains(&lines.len()),
            "{} lines kept",
            lines.len()
        );
        for line in &lines {
            mpgate_proof::lease::Beat::parse(line.as_bytes())
                .unwrap_or_else(|e| panic!("{e}: {line:?}"));
        }
        assert!(
            text.ends_with("\"leftMs\":7}\n"),
            "{}",
            &text[text.len() - 80..]
        );
    }

    #[test]
    fn a_workload_that_closed_its_end_costs_nothing() {
        let (mut heartbeat, theirs) = open(true);
        // The workload's only copy closed: sends fail with EPIPE, without a SIGPIPE.
        drop(theirs);
        for _ in 0..3 {
            heartbeat.beat(Duration::from_secs(1), SystemTime::now());
        }
        assert!(heartbeat.unsent.is_empty());
    }
}
