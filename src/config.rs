//! Owns the configuration: flags merged over environment, validated before any network call.

use std::ffi::OsString;
use std::time::Duration;

use mpgate_proof::DecodingKey;

use crate::cli::{Args, UsageError};
use crate::entitlement::{self, Entitlement, SpecError};
use crate::keyring::{self, KeyOptions, KeyringError, Selected};
use crate::pinned::{self, Kind, Refused};

/// The API's bound on ProductCode (botocore model: 1..=255).
const MAX_PRODUCT_CODE_CHARS: usize = 255;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
pub use mpgate_proof::DEFAULT_MAX_TOKEN_AGE;
const MAX_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
const MIN_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(500);
const DEFAULT_GRACE: Duration = Duration::from_secs(30);

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
}

/// Which AWS service says whether the buyer is entitled.
#[derive(Clone)]
pub enum Pricing {
    /// RegisterUsage, its signed token checked against the product's key.
    Hourly(Hourly),
    /// CheckoutLicense of the buyer's License Manager license.
    Contract(Contract),
}

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

/// A configuration mpgate refuses to start with; always exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Usage(#[from] UsageError),
    #[error("no product code: set MPGATE_PRODUCT_CODE (or --product-code) to the product code from the AWS Marketplace Management Portal")]
    MissingProductCode,
    #[error("invalid product code {0:?}: it must be 1 to 255 printable characters without spaces, as shown in the AWS Marketplace Management Portal")]
    InvalidProductCode(String),
    #[error("invalid {name} {value:?}: {expected}")]
    InvalidValue {
        name: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error(transparent)]
    Entitlement(#[from] SpecError),
    #[error("no product SKU: set MPGATE_PRODUCT_SKU (or --product-sku) to the product ID from the AWS Marketplace Management Portal (contract pricing checks out the license of that product)")]
    MissingProductSku,
    #[error("no entitlement to check out: set MPGATE_ENTITLEMENTS (or --entitlement) to what the workload needs, e.g. MPGATE_ENTITLEMENTS=Basic,Seats=1 (a feature, one seat)")]
    MissingEntitlements,
    #[error("--seat hold needs a COMMAND: mpgate holds the seat while it runs as the command's parent; in init mode (an initContainer or a dependsOn gate) use --seat check")]
    HoldWithoutCommand,
    #[error("{0} is not valid UTF-8")]
    NotUnicode(&'static str),
    #[error(transparent)]
    Keyring(#[from] KeyringError),
    #[error(transparent)]
    Pinned(#[from] Refused),
    #[error("this mpgate build pins product code {pinned}, not {given:?}: unset MPGATE_PRODUCT_CODE and --product-code, or use an mpgate built for {given:?}")]
    PinnedProductCode { pinned: &'static str, given: String },
    #[error("this mpgate build pins product SKU {pinned}, not {given:?}: unset MPGATE_PRODUCT_SKU and --product-sku, or use an mpgate built for {given:?}")]
    PinnedProductSku { pinned: &'static str, given: String },
    #[error("this mpgate build pins the entitlements {pinned}, not {given:?}: unset MPGATE_ENTITLEMENTS and --entitlement, or use an mpgate built for them")]
    PinnedEntitlements { pinned: String, given: String },
    #[error("this mpgate build pins an entitlement it cannot check out ({0}): rebuild it with MPGATE_PIN_ENTITLEMENTS corrected")]
    PinnedSpec(SpecError),
    #[error("'mpgate verify' checks the token of hourly pricing (RegisterUsage) only, and {0} is contract pricing: License Manager's SignedToken cannot be verified offline (AWS publishes no key for it); a contract-priced workload gets MPGATE_LICENSE_ARN and MPGATE_LICENSE_ENTITLEMENTS from the gate")]
    VerifyContract(&'static str),
    #[error("{0}: point SSL_CERT_FILE at a PEM file (or SSL_CERT_DIR at a directory) of CA certificates, or unset it to trust the built-in Mozilla roots")]
    Certificates(String),
    #[error("cannot read the operating system's random number generator ({0}): allow the getrandom system call in the container's seccomp profile (mpgate never falls back to reading /dev/urandom, which a mounted file could replace)")]
    Random(String),
    #[error("cannot write the result file {path}: {reason}: make its directory writable (e.g. an emptyDir volume)")]
    ResultFile { path: String, reason: String },
    /// A variable (or profile setting) the AWS SDK reads holds something it cannot use: the
    /// SDK would panic, fail later with another exit code, or silently ignore it.
    #[error("{name} {problem}: {fix}")]
    AwsSetting {
        name: String,
        problem: String,
        fix: String,
    },
}

/// Reads a setting: the flag if given, else the environment variable (empty counts as unset).
fn setting(
    flag: Option<String>,
    var: &'static str,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<Option<String>, ConfigError> {
    if flag.is_some() {
        return Ok(flag);
    }
    match env(var) {
        Some(v) if v.is_empty() => Ok(None),
        Some(v) => v
            .into_string()
            .map(Some)
            .map_err(|_| ConfigError::NotUnicode(var)),
        None => Ok(None),
    }
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
        let given = setting(args.product_code.clone(), "MPGATE_PRODUCT_CODE", env)?;
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

        let version = match setting(args.public_key_version.clone(), "MPGATE_PUBLIC_KEY_VERSION", env)? {
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

impl Config {
    /// Validates the command line and environment; performs no network I/O.
    pub fn from_args(
        args: Args,
        env: &dyn Fn(&str) -> Option<OsString>,
    ) -> Result<Self, ConfigError> {
        let pricing_flag = args.pricing.is_some();
        let given = setting(args.pricing.clone(), "MPGATE_PRICING", env)?;
        // A pinned build's pricing is its own: the other model's check (a contract checkout of
        // a SKU the buyer names, or a token of a product code the buyer names) would prove
        // nothing about the pinned product. Naming the pinned model is not an override.
        let pricing = match (given.as_deref(), pinned::kind()) {
            (Some(model @ ("hourly" | "contract")), Some(kind))
                if (model == "hourly") != (kind == Kind::Hourly) =>
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
            (None | Some("hourly"), _) => Pricing::Hourly(hourly(&args, env)?),
            (Some(other), _) => {
                return Err(ConfigError::InvalidValue {
                    name: "MPGATE_PRICING",
                    value: other.to_string(),
                    expected: "use 'hourly' (RegisterUsage, the default) or 'contract' (a License Manager license)",
                })
            }
        };
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
            match setting(args.on_transient_error, "MPGATE_ON_TRANSIENT_ERROR", env)?.as_deref() {
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
            Pricing::Hourly(_) => ServiceVariables::METERING,
            Pricing::Contract(_) => ServiceVariables::LICENSE_MANAGER,
        };
        aws_variables(env)?;
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
        })
    }
}

/// The product code, key and token age an hourly-priced product's token is checked against.
fn hourly(args: &Args, env: &dyn Fn(&str) -> Option<OsString>) -> Result<Hourly, ConfigError> {
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
fn contract(args: &Args, env: &dyn Fn(&str) -> Option<OsString>) -> Result<Contract, ConfigError> {
    let given = setting(args.product_sku.clone(), "MPGATE_PRODUCT_SKU", env)?;
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
        from_env = setting(None, "MPGATE_ENTITLEMENTS", env)?.unwrap_or_default();
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
        setting(args.seat.clone(), "MPGATE_SEAT", env)?,
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

/// The SDK's endpoint variable for the service a pricing model calls.
#[derive(Clone, Copy)]
struct ServiceVariables {
    endpoint: &'static str,
}

impl ServiceVariables {
    const METERING: Self = ServiceVariables {
        endpoint: "AWS_ENDPOINT_URL_MARKETPLACE_METERING",
    };
    const LICENSE_MANAGER: Self = ServiceVariables {
        endpoint: "AWS_ENDPOINT_URL_LICENSE_MANAGER",
    };
}

/// An ordinary build's endpoint (`--endpoint-url`, else the SDK's variables and profile) and
/// trust store (the built-in roots plus `SSL_CERT_FILE` / `SSL_CERT_DIR`).
fn configured_endpoint(
    flag: Option<String>,
    service: ServiceVariables,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<(Option<String>, crate::http::ExtraRoots), ConfigError> {
    let endpoint_url = match flag {
        Some(url) => match url_problem(&url) {
            Some(problem) => {
                return Err(aws_setting(
                    "--endpoint-url",
                    format!("{} {problem}", quoted(&url)),
                    "give a URL starting with https:// (or http:// for a local emulator)",
                ))
            }
            None => Some(url),
        },
        None => None,
    };
    let extra_roots = if endpoint_is_plain_http(endpoint_url.as_deref(), service, env) {
        crate::http::ExtraRoots::Deferred
    } else {
        crate::http::extra_roots(env).map_err(ConfigError::Certificates)?
    };
    Ok((endpoint_url, extra_roots))
}

/// A pinned build's endpoint, for Metering (hourly) or License Manager (contract): the
/// compiled-in URL, else the SDK's rules for the region (the call layer resolves it). Every
/// runtime override is refused: the service's and the general `AWS_ENDPOINT_URL*` variable
/// here, a profile's `endpoint_url` and `services` in [`refuse_profile_endpoints`]. A relay with
/// a publicly trusted certificate could otherwise forward the nonce (or the checkout) to a
/// subscribed account's call. TLS trusts the built-in roots and the compiled-in CA
/// certificates only.
fn pinned_endpoint(
    flag_given: bool,
    service: ServiceVariables,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<(Option<String>, crate::http::ExtraRoots), ConfigError> {
    if flag_given {
        return Err(Refused("--endpoint-url".into()).into());
    }
    if let Some(name) = [service.endpoint, "AWS_ENDPOINT_URL"]
        .into_iter()
        .find(|name| env(name).is_some_and(|v| !v.is_empty()))
    {
        return Err(Refused(name.into()).into());
    }
    let ignored: Vec<&str> = ["SSL_CERT_FILE", "SSL_CERT_DIR"]
        .into_iter()
        .filter(|name| env(name).is_some_and(|v| !v.is_empty()))
        .collect();
    if !ignored.is_empty() {
        tracing::warn!(
            "this mpgate build is pinned: {} ignored; it trusts the built-in CA roots{} only",
            ignored.join(" and "),
            if pinned::ca_pem().is_some() {
                " and the CA certificates compiled in"
            } else {
                ""
            }
        );
    }
    let roots = pinned::ca_pem()
        .map(|pem| vec![pem.as_bytes().to_vec()])
        .unwrap_or_default();
    let url = match pinned::kind() {
        Some(Kind::Contract) => pinned::license_manager_endpoint_url(),
        _ => pinned::endpoint_url(),
    };
    Ok((
        url.map(str::to_owned),
        crate::http::ExtraRoots::Loaded(roots),
    ))
}

/// In a pinned build, refuses an `endpoint_url` or `services` section in the selected AWS
/// profile (`~/.aws/config`, `AWS_CONFIG_FILE`, `AWS_PROFILE`), read with the SDK's own parser
/// before any network call. (The call is pinned to its endpoint programmatically as well.)
pub async fn refuse_profile_endpoints() -> Result<(), ConfigError> {
    use aws_config::profile::load;
    use aws_runtime::env_config::file::EnvConfigFiles;
    use aws_types::os_shim_internal::{Env, Fs};
    // A profile file the SDK cannot parse fails the SDK's own load later, as in any build.
    let Ok(profiles) = load(&Fs::real(), &Env::real(), &EnvConfigFiles::default(), None).await
    else {
        return Ok(());
    };
    let name = profiles.selected_profile();
    let Some(profile) = profiles.get_profile(name) else {
        return Ok(());
    };
    for key in ["endpoint_url", "services"] {
        if profile.get(key).is_some() {
            return Err(Refused(format!("{key} in the AWS config profile {name:?}")).into());
        }
    }
    Ok(())
}

/// Checks what the SDK will read from the AWS config and credentials files, with its own
/// parser, before any network call: files it cannot parse (the SDK would warn and go on
/// without them), a profile AWS_PROFILE names that they do not define, and an `endpoint_url`
/// (global, or in the profile's `services` section for `service_id`) that is not a URL (the
/// SDK panics on an empty one, or warns and falls back to AWS's endpoint).
pub async fn check_profile(service_id: &str) -> Result<(), ConfigError> {
    use aws_config::profile::load;
    use aws_runtime::env_config::{file::EnvConfigFiles, EnvConfigValue};
    use aws_types::os_shim_internal::{Env, Fs};
    let env = Env::real();
    let profiles = match load(&Fs::real(), &env, &EnvConfigFiles::default(), None).await {
        Ok(profiles) => profiles,
        Err(e) => {
            let mut reason = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                let text = cause.to_string();
                if !reason.contains(&text) {
                    reason = format!("{reason}: {text}");
                }
                source = cause.source();
            }
            let reason = reason.split_whitespace().collect::<Vec<_>>().join(" ");
            return Err(aws_setting(
                "the AWS config files",
                format!("cannot be used ({reason})"),
                "fix the file, or point AWS_CONFIG_FILE / AWS_SHARED_CREDENTIALS_FILE at a good one",
            ));
        }
    };
    let name = profiles.selected_profile().to_owned();
    if env.get("AWS_PROFILE").is_ok() && profiles.get_profile(&name).is_none() {
        return Err(aws_setting(
            "AWS_PROFILE",
            format!(
                "names the profile {}, which no AWS config or credentials file defines",
                quoted(&name)
            ),
            "fix the name (see ~/.aws/config, AWS_CONFIG_FILE), or unset AWS_PROFILE",
        ));
    }
    let ignored = env
        .get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")
        .ok()
        .or_else(|| {
            profiles
                .get("ignore_configured_endpoint_urls")
                .map(str::to_owned)
        })
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if ignored {
        return Ok(());
    }
    let global = profiles.get("endpoint_url");
    let none = Env::from_slice(&[]);
    let for_service = EnvConfigValue::new()
        .profile("endpoint_url")
        .service_id(service_id)
        .load(&none, Some(&profiles))
        .map(|(value, _)| value.into_owned());
    let found = [
        global.map(|v| (v.to_owned(), "endpoint_url".to_string())),
        for_service.filter(|v| Some(v.as_str()) != global).map(|v| {
            (
                v,
                format!("an endpoint_url for {service_id} in its services section"),
            )
        }),
    ];
    for (value, setting) in found.into_iter().flatten() {
        if let Some(problem) = url_problem(&value) {
            return Err(aws_setting(
                &format!("the AWS config profile {}", quoted(&name)),
                format!("has {setting} {}, which {problem}", quoted(&value)),
                "write the whole URL, e.g. https://metering.marketplace.us-east-1.amazonaws.com (http://127.0.0.1:PORT for a local emulator), or remove it",
            ));
        }
    }
    Ok(())
}

/// Whether `name` can be a region: one DNS label, as the SDK's endpoint rules require.
pub fn is_region_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

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

/// Whether the call goes to an explicit `http://` endpoint (flag or the SDK's variables).
fn endpoint_is_plain_http(
    flag: Option<&str>,
    service: ServiceVariables,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> bool {
    let from_env = || {
        let ignored = env("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        (!ignored)
            .then(|| env(service.endpoint).or_else(|| env("AWS_ENDPOINT_URL")))
            .flatten()
            .and_then(|v| v.into_string().ok())
    };
    match flag {
        Some(url) => url.starts_with("http://"),
        None => from_env().is_some_and(|url| url.starts_with("http://")),
    }
}

/// The endpoint variables the SDK reads for the calls mpgate makes (the services' own, the
/// global one, and STS's for IRSA). The SDK panics on an empty one ("URL was unset") and
/// reports one without a scheme only as a failed dispatch.
const ENDPOINT_VARIABLES: [(&str, &str); 4] = [
    (
        "AWS_ENDPOINT_URL",
        "https://metering.marketplace.us-east-1.amazonaws.com",
    ),
    (
        "AWS_ENDPOINT_URL_MARKETPLACE_METERING",
        "https://metering.marketplace.us-east-1.amazonaws.com",
    ),
    (
        "AWS_ENDPOINT_URL_LICENSE_MANAGER",
        "https://license-manager.us-east-1.amazonaws.com",
    ),
    (
        "AWS_ENDPOINT_URL_STS",
        "https://sts.us-east-1.amazonaws.com",
    ),
];
/// How much of a bad value a message quotes.
const MAX_QUOTED_CHARS: usize = 80;

/// What an AWS SDK variable must hold.
#[derive(Clone, Copy)]
enum Shape {
    /// An `http://` or `https://` URL with a host.
    Url(&'static str),
    /// A region name: one DNS label, as the endpoint rules require.
    Region,
    /// `true` or `false`, any case (the SDK's own parsing).
    Bool,
    /// One of these words, any case.
    Word(&'static [&'static str]),
    /// A whole number up to this bound.
    Number(u32),
    /// A comma-separated list of names.
    Names,
    /// A path to a file that must exist.
    File(&'static str),
    /// A path on the credential endpoint 169.254.170.2 (ECS).
    RelativeUri,
    /// Text that goes into an HTTP header, never quoted back (a credential).
    Secret,
    /// An IAM role ARN.
    RoleArn,
    /// An STS role session name: 2 to 64 of `[A-Za-z0-9_+=,.@-]`.
    SessionName,
    /// A user-agent app ID: up to 50 of the token characters of RFC 9110.
    AppId,
}

/// Every variable aws-config, aws-runtime and aws-types read for the calls mpgate makes, but
/// the endpoint variables (above), the region (below) and the retry settings
/// ([`retry_settings`]). Not here, because any value works or the SDK never uses it for
/// these services: AWS_EXECUTION_ENV and AWS_LAMBDA_FUNCTION_NAME (user agent, recursion
/// detection), AWS_ACCOUNT_ID (account-based endpoints, DynamoDB only),
/// AWS_STS_REGIONAL_ENDPOINTS (the Rust SDK always uses the regional STS endpoint),
/// AWS_LOGIN_CACHE_DIRECTORY (console-login profiles only).
const AWS_VARIABLES: [(&str, Shape); 24] = [
    ("AWS_EC2_METADATA_SERVICE_ENDPOINT", Shape::Url("http://169.254.169.254")),
    ("AWS_CONTAINER_CREDENTIALS_FULL_URI", Shape::Url("http://169.254.170.23/v1/credentials")),
    ("AWS_USE_FIPS_ENDPOINT", Shape::Bool),
    ("AWS_USE_DUALSTACK_ENDPOINT", Shape::Bool),
    ("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", Shape::Bool),
    ("AWS_EC2_METADATA_DISABLED", Shape::Bool),
    ("AWS_DISABLE_CLOCK_SKEW_CORRECTION", Shape::Bool),
    ("AWS_DISABLE_REQUEST_COMPRESSION", Shape::Bool),
    ("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE", Shape::Word(&["IPv4", "IPv6"])),
    ("AWS_REQUEST_CHECKSUM_CALCULATION", Shape::Word(&["when_supported", "when_required"])),
    ("AWS_RESPONSE_CHECKSUM_VALIDATION", Shape::Word(&["when_supported", "when_required"])),
    ("AWS_ACCOUNT_ID_ENDPOINT_MODE", Shape::Word(&["preferred", "disabled", "required"])),
    ("AWS_REQUEST_MIN_COMPRESSION_SIZE_BYTES", Shape::Number(10_485_760)),
    ("AWS_AUTH_SCHEME_PREFERENCE", Shape::Names),
    ("AWS_SIGV4A_SIGNING_REGION_SET", Shape::Names),
    ("AWS_CONFIG_FILE", Shape::File("the AWS config file")),
    ("AWS_SHARED_CREDENTIALS_FILE", Shape::File("the AWS credentials file")),
    ("AWS_WEB_IDENTITY_TOKEN_FILE", Shape::File("the service account token IRSA projects (eks.amazonaws.com/role-arn on the service account)")),
    ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", Shape::File("the EKS Pod Identity token")),
    ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", Shape::RelativeUri),
    ("AWS_CONTAINER_AUTHORIZATION_TOKEN", Shape::Secret),
    ("AWS_ROLE_ARN", Shape::RoleArn),
    ("AWS_ROLE_SESSION_NAME", Shape::SessionName),
    ("AWS_SDK_UA_APP_ID", Shape::AppId),
];

/// Checks every AWS SDK variable that is set before the SDK reads it: a bad one is exit 2
/// naming it, never a panic, a later failure under another exit code, or a value the SDK
/// ignores with a warning. Set but empty is refused too (the SDK does not read it as unset).
fn aws_variables(env: &dyn Fn(&str) -> Option<OsString>) -> Result<(), ConfigError> {
    let text = |name: &str| -> Result<Option<String>, ConfigError> {
        env(name)
            .map(|v| {
                v.into_string()
                    .map_err(|_| aws_setting(name, "is not valid UTF-8", "fix it or unset it"))
            })
            .transpose()
    };
    for (name, shape) in AWS_VARIABLES {
        if let Some(value) = text(name)? {
            check_shape(name, &value, shape)?;
        }
    }
    let ignored = text("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")?
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if !ignored {
        for (name, example) in ENDPOINT_VARIABLES {
            if let Some(value) = text(name)? {
                check_shape(name, &value, Shape::Url(example))?;
            }
        }
    }
    // The SDK reads AWS_DEFAULT_REGION only when AWS_REGION is not set.
    let region = ["AWS_REGION", "AWS_DEFAULT_REGION"]
        .into_iter()
        .find_map(|name| env(name).map(|_| name));
    if let Some(name) = region {
        if let Some(value) = text(name)? {
            check_shape(name, &value, Shape::Region)?;
        }
    }
    // The environment's credentials: both halves or neither (the chain would otherwise
    // skip them silently and find others, or none).
    let id = text("AWS_ACCESS_KEY_ID")?;
    let secret = text("AWS_SECRET_ACCESS_KEY")?.or(text("SECRET_ACCESS_KEY")?);
    let token = text("AWS_SESSION_TOKEN")?;
    // A session token alone is left alone, as the SDK does: no key pair uses it.
    if id.is_some() || secret.is_some() {
        let blank = |v: &Option<String>| v.as_deref().is_none_or(|v| v.trim().is_empty());
        if blank(&id) {
            return Err(aws_setting("AWS_ACCESS_KEY_ID", if id.is_some() { "is set but empty" } else { "is not set, but AWS_SECRET_ACCESS_KEY is" }, "set the access key ID and secret key together, or unset them all and use the task's or pod's IAM role"));
        }
        let id = id.unwrap_or_default();
        if !(16..=128).contains(&id.len()) || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(aws_setting("AWS_ACCESS_KEY_ID", "is not an access key ID (16 to 128 letters and digits, e.g. ASIA...)", "set the key ID of the credentials, or unset it and use the task's or pod's IAM role"));
        }
        if blank(&secret) {
            return Err(aws_setting("AWS_SECRET_ACCESS_KEY", if secret.is_some() { "is set but empty" } else { "is not set, but AWS_ACCESS_KEY_ID is" }, "set the secret key that goes with AWS_ACCESS_KEY_ID, or unset them all and use the task's or pod's IAM role"));
        }
        check_shape(
            "AWS_SECRET_ACCESS_KEY",
            secret.as_deref().unwrap_or_default(),
            Shape::Secret,
        )?;
        if let Some(token) = token {
            check_shape("AWS_SESSION_TOKEN", &token, Shape::Secret)?;
        }
    }
    if let Some(profile) = text("AWS_PROFILE")? {
        if profile.trim().is_empty() {
            return Err(aws_setting(
                "AWS_PROFILE",
                "is set but empty",
                "name the profile to use, or unset it for the default profile",
            ));
        }
    }
    Ok(())
}

fn aws_setting(name: &str, problem: impl Into<String>, fix: impl Into<String>) -> ConfigError {
    ConfigError::AwsSetting {
        name: name.to_owned(),
        problem: problem.into(),
        fix: fix.into(),
    }
}

/// `"value"`, shortened, with control characters escaped.
fn quoted(value: &str) -> String {
    let short: String = value.chars().take(MAX_QUOTED_CHARS).collect();
    if short.len() < value.len() {
        format!("{short:?}...")
    } else {
        format!("{short:?}")
    }
}

fn check_shape(name: &str, value: &str, shape: Shape) -> Result<(), ConfigError> {
    let unset = ", or unset it";
    if value.trim().is_empty() {
        let what = match shape {
            Shape::Url(example) => format!("the whole URL, e.g. {example}"),
            Shape::Region => "the region the task or pod runs in, e.g. us-east-1".into(),
            Shape::Bool => "true or false".into(),
            Shape::Word(words) => words.join(" or "),
            Shape::Number(_) => "a whole number".into(),
            Shape::Names => "a comma-separated list of names".into(),
            Shape::File(what) => format!("the path of {what}"),
            Shape::RelativeUri => "the path ECS gives the task, e.g. /v2/credentials/ID".into(),
            Shape::Secret => "the value the platform gives you".into(),
            Shape::RoleArn => "the IAM role's ARN, e.g. arn:aws:iam::123456789012:role/NAME".into(),
            Shape::SessionName => "2 to 64 letters, digits or _+=,.@-".into(),
            Shape::AppId => "up to 50 letters, digits or !#$%&'*+-.^_`|~".into(),
        };
        let problem = if value.is_empty() {
            "is set but empty"
        } else {
            "is set but blank"
        };
        return Err(aws_setting(
            name,
            problem,
            format!("set it to {what}{unset}"),
        ));
    }
    let shown = quoted(value);
    let bad = |problem: String, fix: String| Err(aws_setting(name, problem, fix));
    match shape {
        Shape::Url(example) => {
            if let Some(problem) = url_problem(value) {
                let fix = if !value.contains("://") && !value.contains(char::is_whitespace) {
                    format!("write the whole URL, e.g. http://{value} for a local emulator or {example}{unset}")
                } else {
                    format!("write the whole URL, e.g. {example}{unset}")
                };
                return bad(format!("{shown} {problem}"), fix);
            }
        }
        Shape::Region => {
            if !is_region_name(value) {
                return bad(format!("{shown} is not a region name"), format!("set it to the region the task or pod runs in, e.g. us-east-1 (ECS and the EKS IRSA webhook set AWS_REGION themselves){unset}"));
            }
        }
        Shape::Bool => {
            if !(value.eq_ignore_ascii_case("true") || value.eq_ignore_ascii_case("false")) {
                return bad(
                    format!("{shown} is not true or false"),
                    format!("set it to true or false{unset}"),
                );
            }
        }
        Shape::Word(words) => {
            if !words.iter().any(|w| w.eq_ignore_ascii_case(value)) {
                return bad(
                    format!("{shown} is not one of {}", words.join(", ")),
                    format!("set it to {}{unset}", words.join(" or ")),
                );
            }
        }
        Shape::Number(max) => {
            if !value.parse::<u32>().is_ok_and(|n| n <= max) {
                return bad(
                    format!("{shown} is not a whole number from 0 to {max}"),
                    format!("set it to a number of bytes{unset}"),
                );
            }
        }
        Shape::Names => {
            let names_ok = value
                .split(',')
                .map(str::trim)
                .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_graphic()));
            if !names_ok {
                return bad(
                    format!("{shown} is not a comma-separated list of names"),
                    format!("list the names, e.g. sigv4,sigv4a{unset}"),
                );
            }
        }
        Shape::File(what) => {
            if !std::path::Path::new(value).is_file() {
                return bad(
                    format!("names {shown}, which is not a readable file"),
                    format!("point it at {what} (is its volume mounted?){unset}"),
                );
            }
        }
        Shape::RelativeUri => {
            let ok = value.starts_with('/')
                && format!("http://169.254.170.2{value}")
                    .parse::<hyper::Uri>()
                    .is_ok();
            if !ok {
                return bad(format!("{shown} is not a path such as /v2/credentials/ID"), format!("leave it to the ECS agent, which sets it for a task with an IAM role{unset}"));
            }
        }
        Shape::Secret => {
            // Never quoted: it is a credential. It goes into an HTTP header as it is.
            if value
                .bytes()
                .any(|b| b.is_ascii_control() || b == b' ' || !b.is_ascii())
            {
                return bad(
                    "holds spaces, line breaks or other characters a credential does not have"
                        .into(),
                    format!("copy it again without them{unset}"),
                );
            }
        }
        Shape::RoleArn => {
            let ok = value.starts_with("arn:")
                && value.split(':').count() >= 6
                && !value.contains(char::is_whitespace);
            if !ok {
                return bad(format!("{shown} is not an IAM role ARN"), format!("set it to the role's ARN, e.g. arn:aws:iam::123456789012:role/NAME (the EKS IRSA webhook sets it from the service account's eks.amazonaws.com/role-arn){unset}"));
            }
        }
        Shape::SessionName => {
            let ok = (2..=64).contains(&value.len())
                && value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_+=,.@-".contains(&b));
            if !ok {
                return bad(
                    format!("{shown} is not a role session name"),
                    format!("use 2 to 64 letters, digits or _+=,.@-{unset}"),
                );
            }
        }
        Shape::AppId => {
            if aws_types::app_name::AppName::new(value.to_owned()).is_err() {
                return bad(
                    format!("{shown} is not an app ID"),
                    format!("use up to 50 letters, digits or !#$%&'*+-.^_`|~{unset}"),
                );
            }
        }
    }
    Ok(())
}

/// What is wrong with an endpoint URL, if anything: the SDK needs an `http` or `https` URL
/// with a host, and nothing around it.
pub fn url_problem(value: &str) -> Option<String> {
    if value.trim().is_empty() {
        return Some("is empty".into());
    }
    if value.trim() != value {
        return Some("has spaces around it".into());
    }
    let Some((scheme, rest)) = value.split_once("://") else {
        return Some("has no scheme (http:// or https://)".into());
    };
    if rest.is_empty() || rest.starts_with('/') {
        return Some("has no host".into());
    }
    if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
        return Some(format!(
            "has the scheme {}, not http or https",
            quoted(scheme)
        ));
    }
    match value.parse::<hyper::Uri>() {
        Err(e) => Some(format!("is not a URL ({e})")),
        Ok(uri) if uri.host().is_none_or(str::is_empty) => Some("has no host".into()),
        Ok(uri) if uri.query().is_some() => {
            Some("has a query (?...), which an endpoint cannot have".into())
        }
        Ok(_) => None,
    }
}

/// Reads `--log-format` / `MPGATE_LOG_FORMAT`; needed before logging starts.
pub fn log_format(
    flag: Option<String>,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<LogFormat, ConfigError> {
    match setting(flag, "MPGATE_LOG_FORMAT", env)?.as_deref() {
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

fn duration_setting(
    flag: Option<String>,
    var: &'static str,
    name: &'static str,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<Option<Duration>, ConfigError> {
    setting(flag, var, env)?
        .map(|v| {
            parse_duration(&v).ok_or(ConfigError::InvalidValue {
                name,
                value: v,
                expected: "use a positive number with an optional unit, e.g. 30, 30s, 1500ms or 2m (at most 1h)",
            })
        })
        .transpose()
}

/// Parses `30`, `30s`, `1500ms`, `2m` into a positive duration of at most an hour.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if number.is_empty() || number.len() > 9 {
        return None;
    }
    let n: u64 = number.parse().ok()?;
    let duration = match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n.checked_mul(60)?),
        _ => return None,
    };
    (!duration.is_zero() && duration <= Duration::from_secs(3600)).then_some(duration)
}

/// Validates `AWS_MAX_ATTEMPTS` and `AWS_RETRY_MODE` ourselves: aws-config panics on bad values.
fn retry_settings(env: &dyn Fn(&str) -> Option<OsString>) -> Result<RetrySettings, ConfigError> {
    let max_attempts = match setting(None, "AWS_MAX_ATTEMPTS", env)? {
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
    let adaptive = match setting(None, "AWS_RETRY_MODE", env)?
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

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("1500ms"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        for bad in [
            "",
            "0",
            "0s",
            "-1",
            "1.5s",
            "s",
            "10h",
            "61m",
            "99999999999",
            "1 s",
            "1sec",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }

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
