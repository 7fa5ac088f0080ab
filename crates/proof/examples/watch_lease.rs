//! A workload that runs only while mpgate holds its seat (contract pricing, `--seat hold`):
//!
//! ```sh
//! MPGATE_PRICING=contract MPGATE_SEAT=hold ... mpgate -- watch_lease
//! ```
//!
//! If mpgate is frozen (SIGSTOP) or can no longer extend the seat, no heartbeat comes before
//! the seat's expiry and the watcher ends this process (exit 10) before License Manager can
//! give the seat to another copy; if mpgate is gone, at once.

fn main() {
    // First thing in main: the deadline counts from the first line read.
    if let Err(e) = mpgate_proof::lease::watch() {
        eprintln!("watch_lease: {e}");
        std::process::exit(i32::from(mpgate_proof::lease::EXIT_CODE));
    }
    println!("watching the lease");
    // The workload's own work; here, none: it runs until the lease ends or a signal ends it.
    loop {
        std::thread::park();
    }
}
