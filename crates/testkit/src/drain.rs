//! Output drains: a child's stdout or stderr (or any pipe), read by a thread as it comes.
//!
//! A thread per stream, so that a full pipe never blocks the writer; the test takes the text
//! line by line or whole, in bounded time.

use std::io::{BufRead, BufReader, Read};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::Instant;

/// A stream read by its own thread, one line at a time.
pub struct Drain {
    /// Each line with its newline (the last one may have none); closed at the end of the stream.
    lines: Receiver<String>,
    /// Everything taken from `lines` so far.
    text: String,
}

impl Drain {
    /// Starts reading `stream` until its end (when every writer has closed it) or an error.
    pub fn spawn(stream: impl Read + Send + 'static) -> Drain {
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stream);
            loop {
                let mut line = Vec::new();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    // Lossy: a test asserts on text, and a stray byte must not hide the rest.
                    Ok(_) => {
                        if tx
                            .send(String::from_utf8_lossy(&line).into_owned())
                            .is_err()
                        {
                            break;
                        }
                    }
                }
            }
        });
        Drain {
            lines,
            text: String::new(),
        }
    }

    /// The next line, without its newline, if one comes by `deadline` (`None` also when the
    /// stream has ended).
    pub fn next_line(&mut self, deadline: Instant) -> Option<String> {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = self.lines.recv_timeout(left).ok()?;
        self.text.push_str(&line);
        Some(line.strip_suffix('\n').unwrap_or(&line).to_string())
    }

    /// Everything read so far (lines already taken and those waiting).
    pub fn so_far(&mut self) -> &str {
        while let Ok(line) = self.lines.try_recv() {
            self.text.push_str(&line);
        }
        &self.text
    }

    /// The whole stream once it has ended; `Err` with what came if it is still open at
    /// `deadline` (a process that still holds the pipe has outlived the one waited for).
    pub fn until_end(mut self, deadline: Instant) -> Result<String, String> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.text.push_str(&line),
                Err(RecvTimeoutError::Disconnected) => return Ok(self.text),
                Err(RecvTimeoutError::Timeout) => return Err(self.text),
            }
        }
    }
}
