//! mpgate: gate a container on the buyer's AWS Marketplace entitlement, then exec the workload.

pub mod agent;
mod anywhere;
mod aws;
pub mod check;
pub mod cli;
pub mod config;
mod entitlement;
pub mod exec;
pub mod exit;
pub mod gate;
pub mod handover;
mod http;
mod keyring;
pub mod lease;
mod ledger;
mod license;
pub mod logging;
mod metering;
mod nonce;
pub mod outcome;
pub mod pinned;
pub mod report;
pub mod settings;
pub mod supervisor;
pub mod verify;
pub mod watch;
