//! Owns the configuration: flags merged over environment, validated before any network call.

mod anywhere;
mod aws_env;
mod endpoint;
mod error;
mod pricing;
mod profile;
pub mod scrape;
mod usage;

// What main.rs and the fuzz targets read; the rest is the crate's own.
pub use anywhere::token_variable;
pub use error::ConfigError;
pub use pricing::{Contract, Hourly, SeatMode};
pub use usage::Usage;

pub(crate) use anywhere::{role_account, LicenseToken};
pub(crate) use aws_env::is_region_name;
pub(crate) use pricing::{max_token_age, Trust};
pub(crate) use profile::{check_profile, refuse_profile_endpoints};

use std::ffi::OsString;
use std::time::Duration;

use crate::cli::Args;
use crate::config::aws_env::aws_variables;
use crate::config::endpoint::{configured_endpoint, pinned_endpoint, ServiceVariables};
use crate::config::pricing::{contract, hourly};
use crate::config::usage::usage;
use crate::pinned::{self, Kind, Refused};
use crate::settings::{duration_setting, text_setting};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
const MIN_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(500);

/// Everything the gate needs, validated.
#[derive(Clone)]
pub struct Config {
    pub pricing: Pricing,
    pub pinned: bool,
    pub timeout: Duration,
    pub attempt_timeout: Duration,
    pub on_transient_error: TransientPolicy,
    pub endpoint_url: Option<String>,
    pub retry: RetrySettings,
    pub extra_roots: crate::http::ExtraRoots,
    pub command: Vec<OsString>,
    /// Contract pricing with a license token (Containers Anywhere): the role's credentials
    /// come from it, never from the default chain.
    pub license_token: Option<LicenseToken>,
}

/// Which AWS service says whether the buyer is entitled.
#[derive(Clone)]
pub enum Pricing {
    /// RegisterUsage, its signed token checked against the product's key.
    Hourly(Hourly),
    /// CheckoutLicense of the buyer's License Manager license.
    Contract(Contract),
    /// MeterUsage: custom metering dimensions, the start's call the entitlement check.
    Usage(Usage),
}

/// What to do when only the service is unreachable (the exit-14 class).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransientPolicy {
    Deny,
    Allow,
}

/// The SDK's retry settings, read here because the SDK panics on bad values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetrySettings {
    /// `AWS_MAX_ATTEMPTS`; when unset the deadline alone bounds the attempts.
    pub max_attempts: Option<u32>,
    pub adaptive: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Auto,
    Text,
    Json,
}

impl Config {
    /// Validates the command line and environment; performs no network I/O.
    pub fn from_args(
        args: Args,
        env: &dyn Fn(&str) -> Option<OsString>,
    ) -> Result<Self, ConfigError> {
        let pricing_flag = args.pricing.is_some();
        let given = text_setting(args.pricing.clone(), "MPGATE_PRICING", env)?;
        // A pinned build's pricing is its own: the other model's check (a contract checkout of
        // a SKU the buyer names, or a token of a product code the buyer names) would prove
        // nothing about the pinned product. Naming the pinned model is not an override.
        let pricing = match (given.as_deref(), pinned::kind()) {
            (Some(model @ ("hourly" | "contract" | "usage")), Some(kind))
                if model != kind_name(kind) =>
            {
                return Err(Refused(if pricing_flag {
                    format!("--pricing {model}")
                } else {
                    format!("MPGATE_PRICING={model}")
                })
                .into());
            }
            (None, Some(Kind::Contract)) | (Some("contract"), _) => {
                Pricing::Contract(contract(&args, env)?)
            }
            (None, Some(Kind::Usage)) | (Some("usage"), _) => Pricing::Usage(usage(&args, env)?),
            (None | Some("hourly"), _) => Pricing::Hourly(hourly(&args, env)?),
            (Some(other), _) => {
                return Err(ConfigError::InvalidValue {
                    name: "MPGATE_PRICING",
                    value: other.to_string(),
                    expected: "use 'hourly' (RegisterUsage, the default), 'contract' (a License Manager license) or 'usage' (MeterUsage, custom metering dimensions)",
                })
            }
        };
        // A pinned build refuses the test clock whatever its pricing (usage pricing reads it).
        if pinned::is_pinned() && env("MPGATE_METERING_HOUR").is_some_and(|v| !v.is_empty()) {
            return Err(Refused("MPGATE_METERING_HOUR".into()).into());
        }
        let pinned = pinned::is_pinned();

        let timeout = duration_setting(args.timeout, "MPGATE_TIMEOUT", "timeout", env)?
            .unwrap_or(DEFAULT_TIMEOUT);
        let attempt_timeout = duration_setting(
            args.attempt_timeout,
            "MPGATE_ATTEMPT_TIMEOUT",
            "attempt timeout",
            env,
        )?
        .unwrap_or_else(|| (timeout / 3).clamp(MIN_ATTEMPT_TIMEOUT, MAX_ATTEMPT_TIMEOUT))
        .min(timeout);

        let policy_flag = args.on_transient_error.is_some();
        let on_transient_error =
            match text_setting(args.on_transient_error, "MPGATE_ON_TRANSIENT_ERROR", env)?
                .as_deref()
            {
                None | Some("deny") => TransientPolicy::Deny,
                Some("allow") => TransientPolicy::Allow,
                Some(other) => {
                    return Err(ConfigError::InvalidValue {
                        name: "MPGATE_ON_TRANSIENT_ERROR",
                        value: other.to_string(),
                        expected: "use 'deny' (the default) or 'allow'",
                    })
                }
            };

        // Anyone who can break the network path could otherwise start a pinned workload.
        if on_transient_error == TransientPolicy::Allow && pinned {
            return Err(Refused(
                if policy_flag {
                    "--on-transient-error allow"
                } else {
                    "MPGATE_ON_TRANSIENT_ERROR=allow"
                }
                .into(),
            )
            .into());
        }
        if let Pricing::Contract(Contract {
            seat: SeatMode::Hold,
            ..
        }) = &pricing
        {
            if args.command.is_empty() {
                return Err(ConfigError::HoldWithoutCommand);
            }
        }

        let service = match &pricing {
            Pricing::Hourly(_) | Pricing::Usage(_) => ServiceVariables::METERING,
            Pricing::Contract(_) => ServiceVariables::LICENSE_MANAGER,
        };
        aws_variables(env)?;
        let license_token = match &pricing {
            Pricing::Contract(_) => anywhere::license_token(env)?,
            Pricing::Hourly(_) | Pricing::Usage(_) => {
                if let Some(variable) = token_variable(env) {
                    tracing::info!("this pricing model calls AWS Marketplace Metering with the task's or pod's IAM role: {variable} (a license token, for contract pricing) not used");
                }
                None
            }
        };
        let (endpoint_url, extra_roots) = if pinned {
            pinned_endpoint(args.endpoint_url.is_some(), service, env)?
        } else {
            configured_endpoint(args.endpoint_url, service, env)?
        };

        Ok(Config {
            pricing,
            pinned,
            timeout,
            attempt_timeout,
            on_transient_error,
            endpoint_url,
            retry: retry_settings(env)?,
            extra_roots,
            command: args.command,
            license_token,
        })
    }
}

/// How `--pricing` names the model a pinned build pins.
fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Hourly => "hourly",
        Kind::Contract => "contract",
        Kind::Usage => "usage",
    }
}

/// Reads `--log-format` / `MPGATE_LOG_FORMAT`; needed before logging starts.
pub fn log_format(
    flag: Option<String>,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<LogFormat, ConfigError> {
    match text_setting(flag, "MPGATE_LOG_FORMAT", env)?.as_deref() {
        None | Some("auto") => Ok(LogFormat::Auto),
        Some("text") => Ok(LogFormat::Text),
        Some("json") => Ok(LogFormat::Json),
        Some(other) => Err(ConfigError::InvalidValue {
            name: "log format",
            value: other.to_string(),
            expected: "use auto, text or json",
        }),
    }
}

/// Validates `AWS_MAX_ATTEMPTS` and `AWS_RETRY_MODE` ourselves: aws-config panics on bad values.
fn retry_settings(env: &dyn Fn(&str) -> Option<OsString>) -> Result<RetrySettings, ConfigError> {
    let max_attempts = match text_setting(None, "AWS_MAX_ATTEMPTS", env)? {
        None => None,
        Some(v) => match v.trim().parse::<u32>() {
            Ok(n) if n >= 1 => Some(n),
            _ => {
                return Err(ConfigError::InvalidValue {
                    name: "AWS_MAX_ATTEMPTS",
                    value: v,
                    expected: "use a whole number of attempts, 1 or more, or unset it to let --timeout bound the retries",
                })
            }
        },
    };
    let adaptive = match text_setting(None, "AWS_RETRY_MODE", env)?
        .map(|m| m.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("standard") => false,
        Some("adaptive") => true,
        Some(other) => {
            return Err(ConfigError::InvalidValue {
                name: "AWS_RETRY_MODE",
                value: other.to_string(),
                expected: "use 'standard' or 'adaptive'",
            })
        }
    };
    Ok(RetrySettings {
        max_attempts,
        adaptive,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<OsString> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn retry_settings_reject_what_would_panic_the_sdk() {
        for bad in ["0", "-1", "many", "1.5"] {
            let pairs: &'static [(&str, &str)] = Box::leak(Box::new([("AWS_MAX_ATTEMPTS", bad)]));
            let e = retry_settings(&env_of(pairs)).unwrap_err();
            assert!(e.to_string().contains("AWS_MAX_ATTEMPTS"), "{e}");
        }
        assert!(retry_settings(&env_of(&[("AWS_RETRY_MODE", "sometimes")])).is_err());
        assert_eq!(
            retry_settings(&env_of(&[
                ("AWS_MAX_ATTEMPTS", "3"),
                ("AWS_RETRY_MODE", "Adaptive")
            ]))
            .unwrap(),
            RetrySettings {
                max_attempts: Some(3),
                adaptive: true
            }
        );
    }

    #[test]
    fn missing_product_code_says_where_to_find_it() {
        let e = Config::from_args(Args::default(), &env_of(&[]))
            .err()
            .unwrap();
        assert!(
            e.to_string().contains("AWS Marketplace Management Portal"),
            "{e}"
        );
    }
}
