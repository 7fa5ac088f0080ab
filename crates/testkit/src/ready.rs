//! Reads a spawned emulator's first stdout line (its JSON ready line), bounded in time.

use std::io::{BufRead, BufReader};
use std::process::Child;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

/// Takes the child's stdout and returns its first line parsed as JSON; kills the child and
/// panics if nothing arrives within `limit` or the line is not JSON.
pub fn ready_line(child: &mut Child, name: &str, limit: Duration) -> Value {
    let stdout = child.stdout.take().expect("the emulator's stdout is piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let Ok(line) = rx.recv_timeout(limit) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("emulator {name} printed no ready line within {limit:?}");
    };
    serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("emulator {name}: bad ready line {line:?}: {e}"))
}
