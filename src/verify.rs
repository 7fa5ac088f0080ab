//! Owns `mpgate verify`: the workload's re-check of its hand-over, with the gate's configuration.

use std::ffi::OsString;
use std::path::Path;

use mpgate_proof::Handover;

use crate::cli::Args;
use crate::config::{self, ConfigError, Trust};
use crate::exit::Failure;
use crate::pinned;

/// Checks the hand-over (or `--result-file`) against the configured or pinned product code and
/// key, as the gate would; returns what was verified.
pub fn check_command(
    args: &Args,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<String, Failure> {
    // A contract hand-over carries no token to check: License Manager's SignedToken is signed
    // with a key AWS does not publish.
    if pinned::kind() == Some(pinned::Kind::Contract) {
        return Err(
            ConfigError::VerifyContract("this pinned build (see 'mpgate --version')").into(),
        );
    }
    if env("MPGATE_PRICING").is_some_and(|p| p == "contract") {
        return Err(ConfigError::VerifyContract("MPGATE_PRICING").into());
    }
    let trust = Trust::from_args(args, env)?;
    let max_age = config::max_token_age(args.max_token_age.clone(), env)?;
    let handover = match &args.result_file {
        Some(path) => Handover::from_result_file(Path::new(path))?,
        None => Handover::from_vars(env)?,
    };
    handover.verify_with(
        &trust.key.key,
        &trust.product_code,
        trust.key.version,
        max_age,
    )?;
    Ok(format!(
        "the hand-over is verified: AWS Marketplace signed it for product {} with key version {} within the last {}s",
        trust.product_code,
        trust.key.version,
        max_age.as_secs()
    ))
}
