//! Owns the exit-code table: every way mpgate can end, and the number the container sees.

use mpgate_proof::{ProofError, TokenError};

use crate::{
    aws::CallError, config::ConfigError, exec::ExecError, license::LicenseError,
    metering::MeteringError, outcome::Outcome,
};

/// Exit codes, as documented in docs/reference.md ("Exit codes"). They never change meaning between releases.
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
    pub const SIGNAL_BASE: u8 = crate::exec::SIGNAL_BASE;
}

/// Why mpgate did not hand over to the workload.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Metering(#[from] MeteringError),
    #[error(transparent)]
    License(#[from] LicenseError),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error(transparent)]
    Proof(#[from] ProofError),
    /// `mpgate verify --result-file`: the token passed every check but its age.
    #[error("the token in result file {path} was issued {age}s ago, more than the allowed {max}s ({setting}): if the app container restarted after its init container's check, add --renew to check the entitlement with AWS Marketplace again, or use entrypoint mode ('mpgate -- COMMAND'), which checks on every start")]
    StaleResultFile {
        path: String,
        age: u64,
        max: u64,
        setting: &'static str,
    },
    #[error("interrupted by {name} before the hand-over; the workload was not started")]
    Interrupted { signal: i32, name: &'static str },
}

impl Failure {
    /// The exit code and a stable, machine-readable name for the result file: docs/reference.md's
    /// table, in one place.
    fn code_and_outcome(&self) -> (u8, Outcome) {
        use MeteringError as M;
        match self {
            // A key that cannot be used, or a /proc that cannot be read (or a malformed
            // MPGATE_POD_UID): the workload's configuration, as for the gate.
            Failure::Config(_)
            | Failure::Proof(ProofError::Key(_))
            | Failure::Proof(ProofError::Binding(_)) => (code::USAGE, Outcome::ConfigError),
            Failure::Metering(M::NotEntitled { .. })
            | Failure::License(LicenseError::NotEntitled(_)) => {
                (code::NOT_ENTITLED, Outcome::NotEntitled)
            }
            Failure::License(LicenseError::Lost(_)) => (code::NOT_ENTITLED, Outcome::LicenseLost),
            Failure::Metering(M::PlatformNotSupported { .. }) => {
                (code::PLATFORM_NOT_SUPPORTED, Outcome::PlatformNotSupported)
            }
            Failure::Metering(M::Call(call)) | Failure::License(LicenseError::Call(call)) => {
                call_code_and_outcome(call)
            }
            Failure::Token(_) | Failure::Proof(_) | Failure::StaleResultFile { .. } => {
                (code::TOKEN_REJECTED, Outcome::TokenRejected)
            }
            Failure::Exec(ExecError::NotFound { .. }) => {
                (code::COMMAND_NOT_FOUND, Outcome::CommandNotFound)
            }
            Failure::Exec(ExecError::NotExecutable { .. }) => {
                (code::COMMAND_NOT_EXECUTABLE, Outcome::CommandNotExecutable)
            }
            Failure::Interrupted { signal, .. } => {
                (code::SIGNAL_BASE + *signal as u8, Outcome::Interrupted)
            }
        }
    }

    pub fn exit_code(&self) -> u8 {
        self.code_and_outcome().0
    }

    /// A stable, machine-readable name for the result file.
    pub fn outcome(&self) -> Outcome {
        self.code_and_outcome().1
    }
}

/// The codes of a failure the call layer saw, the same for both services.
fn call_code_and_outcome(error: &CallError) -> (u8, Outcome) {
    match error {
        CallError::PinnedEndpoint(_) | CallError::Config(_) => (code::USAGE, Outcome::ConfigError),
        CallError::Refused(_) => (code::SERVICE_REFUSED, Outcome::ServiceRefused),
        CallError::Unreachable(_) => (code::SERVICE_UNREACHABLE, Outcome::ServiceUnreachable),
        // A 2xx answer without a usable token is a token failure, never "unreachable":
        // otherwise a tampered answer could pass the `allow` policy.
        CallError::BadAnswer(_) => (code::TOKEN_REJECTED, Outcome::TokenRejected),
        CallError::NoRegion | CallError::NoLicenseRegion => {
            (code::NO_REGION_OR_CREDENTIALS, Outcome::NoRegion)
        }
        CallError::NoCredentials(_) => (code::NO_REGION_OR_CREDENTIALS, Outcome::NoCredentials),
    }
}
