//! mpgate: gate a container on the buyer's AWS Marketplace entitlement, then exec the workload.

pub mod call;
pub mod cli;
pub mod config;
pub mod entitlement;
pub mod exec;
pub mod exit;
pub mod gate;
pub mod http;
pub mod keyring;
pub mod lease;
pub mod license;
pub mod logging;
pub mod metering;
pub mod nonce;
pub mod pinned;
pub mod report;
pub mod settings;
pub mod supervisor;
pub mod verify;
