//! Owns what a duty is: work beside the workload that watches its phase and reports a loss as data.

use std::future::Future;
use std::pin::Pin;

use crate::outcome::Outcome;

/// Where the workload is; each duty is told every change, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Running,
    /// A stop signal came, or a duty reported a loss: the workload was signalled and is
    /// killed (SIGKILL to its group) the grace period later if it has not ended.
    Stopping,
    /// It ended, or never started: each duty finishes (bounded by its own deadlines) and
    /// reports `Event::Done`.
    Exited,
}

/// Why the workload may not run on, as plain data: the supervisor stops it and mpgate ends
/// with `exit_code` instead of the workload's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loss {
    pub exit_code: u8,
    /// How the run ended, for the result file.
    pub outcome: Outcome,
    pub message: String,
}

/// What a duty tells the supervisor.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    Lost(Loss),
    /// Finished, after `Phase::Exited`: it is not asked again.
    Done,
}

/// Work that runs beside the workload (holding a seat, metering usage). The supervisor alone
/// owns the workload's process.
pub trait Duty {
    /// The workload entered `phase`.
    fn enter(&mut self, phase: Phase);

    /// The duty's next event. Cancel-safe: the supervisor drops it when something else comes
    /// first, and asks again.
    fn next(&mut self) -> Pin<Box<dyn Future<Output = Event> + '_>>;

    /// What a stop does for this duty, for the supervisor's "stopping" line.
    fn when_stopping(&self) -> Option<&'static str> {
        None
    }
}
