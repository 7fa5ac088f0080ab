//! Owns the pricing models' settings: the hourly product's code and key, the contract's SKU, entitlements and seat mode.

use std::ffi::OsString;
use std::time::Duration;

use mpgate_proof::DecodingKey;

use crate::cli::Args;
use crate::config::error::ConfigError;
use crate::entitlement::{self, Entitlement};
use crate::keyring::{self, KeyOptions, Selected};
use crate::pinned::{self, Refused};
use crate::settings::{duration_setting, text_setting};

/// The API's bound on ProductCode (botocore model: 1..=255).
const MAX_PRODUCT_CODE_CHARS: usize = 255;
use mpgate_proof::DEFAULT_MAX_TOKEN_AGE;
const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// What an hourly-priced product's token is checked against.
#[derive(Clone)]
pub struct Hourly {
    pub product_code: String,
    pub public_key_version: i32,
    pub key: DecodingKey,
    /// Where the key came from, for a signature that does not verify with it.
    pub key_source: String,
    /// Every key version configured (or pinned), for the rotation advice.
    pub key_versions: Vec<i32>,
    pub max_token_age: Duration,
}

/// What a contract-priced product checks out.
#[derive(Clone)]
pub struct Contract {
    pub product_sku: String,
    pub entitlements: Vec<Entitlement>,
    pub seat: SeatMode,
    /// With `hold`: how long the workload gets between SIGTERM and SIGKILL.
    pub grace: Duration,
}

/// Whether a contract checkout is given back at once or held while the workload runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeatMode {
    Check,
    Hold,
}

/// What a token must be checked against: the product code and the key, pinned or configured.
pub struct Trust {
    pub product_code: String,
    pub key: Selected,
}

impl Trust {
    /// Reads the product code, key version and key(s); shared by the gate and `mpgate verify`.
    pub fn from_args(
        args: &Args,
        env: &dyn Fn(&str) -> Option<OsString>,
    ) -> Result<Self, ConfigError> {
        let product_code = product_code(args, env)?;

        let version = match text_setting(args.public_key_version.clone(), "MPGATE_PUBLIC_KEY_VERSION", env)? {
            None => None,
            Some(v) => Some(keyring::parse_version(&v).ok_or(ConfigError::InvalidValue {
                name: "public key version",
                value: v,
                expected: "set MPGATE_PUBLIC_KEY_VERSION to the integer (1 or more, digits only) AWS Marketplace gave you with the key",
            })?),
        };
        let key = keyring::select(
            KeyOptions {
                version,
                file: args.public_key_file.as_ref(),
                dir: args.public_key_dir.as_ref(),
            },
            env,
        )?;
        Ok(Trust { product_code, key })
    }
}

/// The product code, pinned or configured (hourly and usage pricing).
pub fn product_code(
    args: &Args,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<String, ConfigError> {
    let given = text_setting(args.product_code.clone(), "MPGATE_PRODUCT_CODE", env)?;
    let product_code = match (pinned::product_code(), given) {
        (Some(pinned), Some(given)) if given != pinned => {
            return Err(ConfigError::PinnedProductCode { pinned, given })
        }
        (Some(pinned), _) => pinned.to_string(),
        (None, given) => given.ok_or(ConfigError::MissingProductCode)?,
    };
    if product_code.is_empty()
        || product_code.chars().count() > MAX_PRODUCT_CODE_CHARS
        || product_code
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(ConfigError::InvalidProductCode(product_code));
    }
    Ok(product_code)
}

/// The product code, key and token age an hourly-priced product's token is checked against.
pub fn hourly(args: &Args, env: &dyn Fn(&str) -> Option<OsString>) -> Result<Hourly, ConfigError> {
    let trust = Trust::from_args(args, env)?;
    Ok(Hourly {
        product_code: trust.product_code,
        public_key_version: trust.key.version,
        key: trust.key.key,
        key_source: trust.key.source,
        key_versions: trust.key.versions,
        max_token_age: max_token_age(args.max_token_age.clone(), env)?,
    })
}

/// The SKU, entitlements and seat mode of a contract-priced product, the SKU and entitlements
/// pinned or configured. The hourly settings are not read: a note names the ones set, which a
/// seller moving a product over may have left.
pub fn contract(
    args: &Args,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<Contract, ConfigError> {
    let given = text_setting(args.product_sku.clone(), "MPGATE_PRODUCT_SKU", env)?;
    let product_sku = match (pinned::product_sku(), given) {
        (Some(pinned), Some(given)) if given != pinned => {
            return Err(ConfigError::PinnedProductSku { pinned, given })
        }
        (Some(pinned), _) => pinned.to_string(),
        (None, given) => given.ok_or(ConfigError::MissingProductSku)?,
    };
    if product_sku.chars().count() > MAX_PRODUCT_CODE_CHARS
        || product_sku
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(ConfigError::InvalidValue {
            name: "product SKU",
            value: product_sku,
            expected: "set MPGATE_PRODUCT_SKU to the product ID from the AWS Marketplace Management Portal (printable, no spaces)",
        });
    }
    let from_env;
    let specs: Vec<&str> = if args.entitlements.is_empty() {
        from_env = text_setting(None, "MPGATE_ENTITLEMENTS", env)?.unwrap_or_default();
        from_env
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect()
    } else {
        args.entitlements.iter().map(String::as_str).collect()
    };
    let entitlements = if pinned::product_sku().is_some() {
        pinned_entitlements(&specs)?
    } else if specs.is_empty() {
        return Err(ConfigError::MissingEntitlements);
    } else {
        entitlement::parse_all(specs)?
    };
    let seat_flag = args.seat.is_some();
    let seat = match (
        pinned::seat(),
        text_setting(args.seat.clone(), "MPGATE_SEAT", env)?,
    ) {
        // A seat mode the seller pinned (`hold`: copies limited to the seats bought).
        (Some(pinned), Some(given)) if given != pinned => {
            return Err(Refused(if seat_flag {
                format!("--seat {given}")
            } else {
                format!("MPGATE_SEAT={given}")
            })
            .into())
        }
        (Some(pinned), _) => Some(pinned.to_string()),
        (None, given) => given,
    };
    let seat = match seat.as_deref() {
        None | Some("check") => SeatMode::Check,
        Some("hold") => SeatMode::Hold,
        Some(other) => {
            return Err(ConfigError::InvalidValue {
                name: "MPGATE_SEAT",
                value: other.to_string(),
                expected: "use 'check' (check out and back in at start, the default) or 'hold' (hold the seat while the command runs)",
            })
        }
    };
    let grace = duration_setting(args.grace.clone(), "MPGATE_GRACE", "grace", env)?
        .unwrap_or(DEFAULT_GRACE);
    let ignored: Vec<&str> = [
        (args.product_code.is_some(), "--product-code"),
        (args.public_key_version.is_some(), "--public-key-version"),
        (args.public_key_file.is_some(), "--public-key-file"),
        (args.public_key_dir.is_some(), "--public-key-dir"),
        (args.max_token_age.is_some(), "--max-token-age"),
        (!args.dimensions.is_empty(), "--dimension"),
        (args.start_dimension.is_some(), "--start-dimension"),
    ]
    .into_iter()
    .filter_map(|(given, name)| given.then_some(name))
    .chain(
        HOURLY_VARIABLES
            .into_iter()
            .filter(|name| env(name).is_some_and(|v| !v.is_empty())),
    )
    .collect();
    if !ignored.is_empty() {
        tracing::info!(
            "contract pricing checks out a License Manager license: {} not used",
            ignored.join(", ")
        );
    }
    Ok(Contract {
        product_sku,
        entitlements,
        seat,
        grace,
    })
}

/// A pinned contract build's entitlements. `given` (from `--entitlement` or
/// `MPGATE_ENTITLEMENTS`) may name them again, in any order, but nothing else.
fn pinned_entitlements(given: &[&str]) -> Result<Vec<Entitlement>, ConfigError> {
    let pinned = entitlement::parse_all(pinned::entitlements().iter().copied())
        .map_err(ConfigError::PinnedSpec)?;
    if given.is_empty() {
        return Ok(pinned);
    }
    let sorted = |list: &[Entitlement]| {
        let mut list: Vec<Entitlement> = list.to_vec();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    };
    match entitlement::parse_all(given.iter().copied()) {
        Ok(same) if sorted(&same) == sorted(&pinned) => Ok(pinned),
        _ => Err(ConfigError::PinnedEntitlements {
            pinned: pinned::entitlements().join(","),
            given: given.join(","),
        }),
    }
}

/// The settings of hourly pricing only.
const HOURLY_VARIABLES: [&str; 6] = [
    "MPGATE_PRODUCT_CODE",
    "MPGATE_PUBLIC_KEY_VERSION",
    "MPGATE_PUBLIC_KEY",
    "MPGATE_PUBLIC_KEY_FILE",
    "MPGATE_PUBLIC_KEY_DIR",
    "MPGATE_MAX_TOKEN_AGE",
];

/// `--max-token-age` / `MPGATE_MAX_TOKEN_AGE`: the oldest `iat` accepted. A pinned build
/// uses its compiled-in age and refuses both: for `mpgate verify`, the buyer controls the
/// environment, and a long age would turn a stream of shared tokens into a bypass.
pub fn max_token_age(
    flag: Option<String>,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<Duration, ConfigError> {
    if pinned::is_pinned() {
        if flag.is_some() {
            return Err(Refused("--max-token-age".into()).into());
        }
        if env("MPGATE_MAX_TOKEN_AGE").is_some_and(|v| !v.is_empty()) {
            return Err(Refused("MPGATE_MAX_TOKEN_AGE".into()).into());
        }
        return Ok(pinned::max_token_age());
    }
    Ok(
        duration_setting(flag, "MPGATE_MAX_TOKEN_AGE", "max token age", env)?
            .unwrap_or(DEFAULT_MAX_TOKEN_AGE),
    )
}
