//! The one home of the integration tests' helpers: binaries, scratch directories, bounded
//! waits, output drains, ready lines and result files, shared by the gate's and the
//! emulator's tests.

pub mod proxy;
pub mod ready;

use std::path::PathBuf;

/// The `mpgate-emulator` binary of this build. Cargo names only a package's own binaries to
/// its tests, and the emulator is a package of its own: `cargo test --workspace` builds it
/// into the same directory as the test's own package binaries.
pub fn emulator_exe() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/<test> -> target/<profile>/mpgate-emulator
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("mpgate-emulator"))
        .expect("the test binary lives in target/<profile>/deps");
    assert!(
        bin.is_file(),
        "{} is missing: build it with `cargo build -p mpgate-emulator`, or run the tests with `cargo test --workspace`",
        bin.display()
    );
    bin
}
