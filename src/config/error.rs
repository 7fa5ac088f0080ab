//! Owns what a configuration mpgate refuses to start with says: ConfigError, always exit 2.

use crate::cli::UsageError;
use crate::entitlement::SpecError;
use crate::keyring::KeyringError;
use crate::pinned::Refused;
use crate::settings::SettingError;

/// How much of a bad value a message quotes.
const MAX_QUOTED_CHARS: usize = 80;

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
    #[error("no dimension to meter: set MPGATE_DIMENSIONS (or --dimension) to the API names of the product's pricing dimensions in the AWS Marketplace Management Portal, e.g. MPGATE_DIMENSIONS=nodes,gb_scanned")]
    MissingDimensions,
    #[error("{setting} names {count} dimensions: a product has at most 24; name only the product's pricing dimensions")]
    TooManyDimensions { setting: &'static str, count: usize },
    #[error("invalid dimension {name} in {setting}: use the dimension's API name from the AWS Marketplace Management Portal (1 to 255 characters, no spaces, commas, '=' or control characters)")]
    InvalidDimension { setting: &'static str, name: String },
    #[error("invalid scraped dimension {spec} in {setting}: {why}")]
    InvalidSource {
        setting: &'static str,
        spec: String,
        why: String,
    },
    #[error("{setting} reads dimensions from metrics, and no metrics URL is set: set MPGATE_SCRAPE_URL (or --scrape) to the workload's Prometheus endpoint, e.g. http://127.0.0.1:9100/metrics")]
    ScrapeWithoutUrl { setting: &'static str },
    #[error("{setting} is set, and no dimension names a metric to read: write the dimension as NAME=METRIC:counter|max|avg in MPGATE_DIMENSIONS (or --dimension), or unset {setting}")]
    UrlWithoutSource { setting: &'static str },
    #[error("{setting} names dimension {name} twice: name each dimension once")]
    DimensionTwice { setting: &'static str, name: String },
    #[error("{setting} {given} is not one of the dimensions ({dimensions}): name one of them, or unset it to use the first")]
    UnknownStartDimension {
        setting: &'static str,
        given: String,
        dimensions: String,
    },
    #[error("this mpgate build pins the dimensions {pinned}, not {given:?}: unset {setting}, or use an mpgate built for those dimensions")]
    PinnedDimensions {
        pinned: String,
        given: String,
        setting: &'static str,
    },
    #[error("--seat hold needs a COMMAND: mpgate holds the seat while it runs as the command's parent; in init mode (an initContainer or a dependsOn gate) use --seat check")]
    HoldWithoutCommand,
    /// A flag or variable that cannot be read: not UTF-8, or not a duration.
    #[error(transparent)]
    Setting(#[from] SettingError),
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
    #[error("'mpgate verify' checks the token of hourly pricing (RegisterUsage) only, and {0} is usage pricing: MeterUsage answers with a record ID, no signed token, so there is nothing to verify offline; a usage-priced workload gets MPGATE_ENTITLEMENT from the gate")]
    VerifyUsage(&'static str),
    #[error("{0}: point SSL_CERT_FILE at a PEM file (or SSL_CERT_DIR at a directory) of CA certificates, or unset it to trust the built-in Mozilla roots")]
    Certificates(String),
    #[error("cannot read the operating system's random number generator ({0}): allow the getrandom system call in the container's seccomp profile (mpgate never falls back to reading /dev/urandom, which a mounted file could replace)")]
    Random(String),
    /// The process the hand-over binds to, or the boot and pod a result file records, cannot
    /// be read (no /proc), or `MPGATE_POD_UID` is malformed.
    #[error(transparent)]
    Binding(#[from] mpgate_proof::BindingError),
    #[error("cannot use the usage ledger ({0}): make MPGATE_LEDGER_DIR a writable directory of this container alone (a Kubernetes emptyDir, an ECS task volume); one mpgate per ledger")]
    Ledger(String),
    /// The metering agent cannot start (its socket).
    #[error("{0}")]
    Agent(String),
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

/// A variable (or profile setting) the AWS SDK reads, and what is wrong with it.
pub fn aws_setting(name: &str, problem: impl Into<String>, fix: impl Into<String>) -> ConfigError {
    ConfigError::AwsSetting {
        name: name.to_owned(),
        problem: problem.into(),
        fix: fix.into(),
    }
}

/// `"value"`, shortened, with control characters escaped.
pub fn quoted(value: &str) -> String {
    let short: String = value.chars().take(MAX_QUOTED_CHARS).collect();
    if short.len() < value.len() {
        format!("{short:?}...")
    } else {
        format!("{short:?}")
    }
}
