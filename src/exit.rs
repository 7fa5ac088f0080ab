//! Owns the exit-code contract: every way mpgate can end, and the number the container sees.

use crate::{
    config::ConfigError, exec::ExecError, metering::MeteringError, proof::ProofError,
    token::TokenError,
};

/// Exit codes, as documented in README.md. They never change meaning between releases.
pub mod code {
    pub const ENTITLED: u8 = 0;
    pub const USAGE: u8 = 2;
    pub const NOT_ENTITLED: u8 = 10;
    pub const PLATFORM_NOT_SUPPORTED: u8 = 11;
    pub const TOKEN_REJECTED: u8 = 12;
    pub const SERVICE_REFUSED: u8 = 13;
    pub const SERVICE_UNREACHABLE: u8 = 14;
    pub const NO_REGION_OR_CREDENTIALS: u8 = 15;
    /// A panic: a bug in mpgate (release builds abort on panic; the hook exits with this).
    pub const BUG: u8 = 101;
    pub const COMMAND_NOT_EXECUTABLE: u8 = 126;
    pub const COMMAND_NOT_FOUND: u8 = 127;
    /// 128 + the signal number, as a shell reports it.
    pub const SIGNAL_BASE: u8 = 128;
}

/// Why mpgate did not hand over to the workload.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Metering(#[from] MeteringError),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error(transparent)]
    Proof(#[from] ProofError),
    #[error("interrupted by {name} before the hand-over; the workload was not started")]
    Interrupted { signal: i32, name: &'static str },
}

impl Failure {
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Config(_) => code::USAGE,
            Failure::Metering(e) => e.exit_code(),
            Failure::Token(_) => code::TOKEN_REJECTED,
            Failure::Exec(e) => e.exit_code(),
            Failure::Proof(e) => e.exit_code(),
            Failure::Interrupted { signal, .. } => code::SIGNAL_BASE + *signal as u8,
        }
    }

    /// A stable, machine-readable name for the result file.
    pub fn outcome(&self) -> &'static str {
        match self {
            Failure::Config(_) => "config-error",
            Failure::Metering(e) => e.outcome(),
            Failure::Token(_) => "token-rejected",
            Failure::Exec(e) => e.outcome(),
            Failure::Proof(ProofError::Key(_)) => "config-error",
            Failure::Proof(_) => "token-rejected",
            Failure::Interrupted { .. } => "interrupted",
        }
    }
}
