//! Owns the checks of every AWS SDK variable, before the SDK reads (or panics on) one.

use std::ffi::OsString;

use crate::config::error::{aws_setting, quoted, ConfigError};

/// Whether `name` can be a region: one DNS label, as the SDK's endpoint rules require.
pub fn is_region_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
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

/// The bound on a file the AWS SDK reads (profile files, token files): larger is refused.
pub(crate) const MAX_AWS_FILE_BYTES: u64 = 1024 * 1024;

/// Checks every AWS SDK variable that is set before the SDK reads it: a bad one is exit 2
/// naming it, never a panic, a later failure under another exit code, or a value the SDK
/// ignores with a warning. Set but empty is refused too (the SDK does not read it as unset).
pub fn aws_variables(env: &dyn Fn(&str) -> Option<OsString>) -> Result<(), ConfigError> {
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
    // Quoted when a message is formatted, not for every value that passes (nor a secret's).
    let shown = Quoted(value);
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
            // The SDK reads it itself, unbounded and blocking: only a regular file of a
            // sane size goes on to it.
            if let Some(problem) =
                crate::settings::file_problem(std::path::Path::new(value), MAX_AWS_FILE_BYTES)
            {
                return bad(
                    format!("names {shown}, which {problem}"),
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

/// A value as a message shows it ([`quoted`]), formatted only when the message is.
struct Quoted<'a>(&'a str);

impl std::fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&quoted(self.0))
    }
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
