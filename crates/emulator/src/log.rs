//! Owns stderr: the request log and the emulator's own errors.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether [`log`] prints: `serve` always logs its requests, `run` only with `--verbose` (its
/// stderr is the command's, where a request log would bury the command's own story).
static REQUEST_LOG: AtomicBool = AtomicBool::new(true);

/// Turns the request log ([`log`]) on or off; [`error`] always prints.
pub fn set_request_log(on: bool) {
    REQUEST_LOG.store(on, Ordering::Relaxed);
}

/// One line of the request log on stderr, unless turned off.
pub fn log(msg: &str) {
    if REQUEST_LOG.load(Ordering::Relaxed) {
        error(msg);
    }
}

/// Write one line to stderr whatever the verbosity, ignoring errors (never panic on a closed
/// stderr): the emulator's own failures.
pub fn error(msg: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "mpgate-emulator: {msg}");
}
