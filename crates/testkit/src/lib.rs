//! The one home of the integration tests' helpers, shared by the gate's and the emulator's.
//!
//! Binaries and scratch directories and result files (here), the license token's exchange
//! ([`anywhere`]), bounded waits ([`wait`]), output
//! drains ([`drain`]), running children ([`live`]), the emulator ([`emulator`]) and its test
//! credentials, its ready line ([`ready`]), its service-error and License Manager faults
//! ([`faults`]), SigV4 for raw requests ([`sigv4`]), raw License Manager calls ([`license`]),
//! raw MeterUsage calls and their faults ([`meter_usage`]) and a test HTTP proxy ([`proxy`]).
//!
//! It depends on none of the project's crates (the emulator is run as a binary), and on no
//! path that Cargo only names to integration tests at compile time: the target directory is
//! found at run time from the test binary's own path.

pub mod anywhere;
pub mod drain;
pub mod emulator;
pub mod faults;
pub mod license;
pub mod live;
pub mod meter_usage;
pub mod proxy;
pub mod ready;
pub mod sigv4;
pub mod wait;

pub use drain::Drain;
pub use emulator::Emulator;
pub use live::{run_bounded, Exit, Live};
pub use wait::{wait_bounded, wait_until};

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::Value;

/// Every child process of a test is bounded by this; a test that hits it fails.
pub const CHILD_LIMIT: Duration = Duration::from_secs(30);

/// `target/<profile>`, where Cargo puts a build's binaries: the test binary itself lives in
/// its `deps`.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.parent()
        .and_then(|deps| deps.parent())
        .map(Path::to_path_buf)
        .expect("the test binary lives in target/<profile>/deps")
}

/// The `mpgate-emulator` binary of this build. Cargo names only a package's own binaries to
/// its tests, and the emulator is a package of its own: `cargo test --workspace` builds it
/// into the same directory as the test's own package binaries.
pub fn emulator_exe() -> PathBuf {
    // target/<profile>/deps/<test> -> target/<profile>/mpgate-emulator
    let bin = profile_dir().join("mpgate-emulator");
    assert!(
        bin.is_file(),
        "{} is missing: build it with `cargo build -p mpgate-emulator`, or run the tests with `cargo test --workspace`",
        bin.display()
    );
    bin
}

/// The example `name` of a workspace crate, built into `target/<profile>/examples` as
/// `cargo test --workspace` builds every example (or `cargo build -p CRATE --example NAME`).
pub fn example_exe(name: &str) -> PathBuf {
    let bin = profile_dir().join("examples").join(name);
    assert!(
        bin.is_file(),
        "{} is missing: build it with `cargo build --workspace --examples`, or run the tests with `cargo test --workspace`",
        bin.display()
    );
    bin
}

/// `target/tmp`, the directory Cargo names `CARGO_TARGET_TMPDIR` to integration tests (only
/// at their compile time, so a library finds it from the running binary instead).
pub fn target_tmpdir() -> PathBuf {
    let profile = profile_dir();
    let target = profile.parent().expect("target/<profile> has a parent");
    target.join("tmp")
}

/// A fresh, private scratch directory under `target/tmp`: unique per process and call, so
/// tests running in parallel (and reruns) never share one.
pub fn scratch(name: &str) -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let dir = target_tmpdir().join(format!(
        "{name}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

/// The JSON object mpgate writes with `--result-file` (or `MPGATE_RESULT_FILE`); a missing or
/// malformed file fails the test, naming the path.
pub fn result_file(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read the result file {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "the result file {} is not JSON ({e}): {text}",
            path.display()
        )
    })
}
