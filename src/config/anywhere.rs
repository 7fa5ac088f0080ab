//! Owns the license token's settings (Containers Anywhere): its file, the role, the session name and the license's home region, checked before any call.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::config::aws_env::is_region_name;
use crate::config::error::{aws_setting, quoted, ConfigError};
use crate::pinned::{self, Refused};
use crate::settings::{read_regular, text_setting};

/// Where a license token file may be named, first wins: mpgate's own, the variable AWS's
/// seller guide sets, and the one AWS's Go sample reads.
pub const TOKEN_FILE_VARIABLES: [&str; 3] = [
    "MPGATE_LICENSE_TOKEN_FILE",
    "AWS_WEB_IDENTITY_REFRESH_TOKEN_FILE",
    "AWS_LICENSE_ACCESS_FILE",
];
/// GetAccessToken's bound on `Token` (the model: at most 4096 characters).
const MAX_TOKEN_CHARS: usize = 4096;
/// The bound on what is read of the token and role files.
const MAX_FILE_BYTES: u64 = 16 * 1024;
/// The key of the buyer's secret that holds the role, as the launch page saves it.
const ROLE_FILE: &str = "iam_role";
const ROLE_EXAMPLE: &str =
    "arn:aws:iam::111122223333:role/service-role/AWSMarketplaceLicenseTokenConsumptionRole";

/// A secret read from a file: its Debug never shows it, and nothing formats it.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A license token and what it is exchanged for: the role's credentials (GetAccessToken, then
/// STS AssumeRoleWithWebIdentity), which then sign every License Manager call.
#[derive(Debug, Clone)]
pub struct LicenseToken {
    /// The variable that named the file (for messages: never the token).
    pub variable: &'static str,
    pub file: PathBuf,
    pub token: Secret,
    pub role_arn: String,
    /// Where the role came from, as messages name it.
    pub role_source: String,
    pub session_name: String,
    /// The license's home region (`MPGATE_LICENSE_REGION`, else `AWS_REGION`); none is
    /// assumed, the call layer refuses to start without one (exit 15).
    pub region: Option<String>,
    /// A pinned build's compiled-in STS URL; otherwise the SDK's configuration and rules.
    pub sts_endpoint_url: Option<String>,
}

/// The variable naming a license token file, if one is set (and not empty).
pub fn token_variable(env: &dyn Fn(&str) -> Option<OsString>) -> Option<&'static str> {
    TOKEN_FILE_VARIABLES
        .into_iter()
        .find(|name| env(name).is_some_and(|v| !v.is_empty()))
}

/// The license token of contract pricing, if one is configured, read and checked: the file
/// (a JWT, never quoted), the role, the session name, the region and, in a pinned build, the
/// STS endpoint (a runtime override refused).
pub fn license_token(
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<Option<LicenseToken>, ConfigError> {
    let Some(variable) = token_variable(env) else {
        return Ok(None);
    };
    let file = PathBuf::from(env(variable).unwrap_or_default());
    let token = read_token(variable, &file)?;
    let (role_arn, role_source) = role(env, &file)?;
    let session_name = match text_setting(None, "AWS_ROLE_SESSION_NAME", env)? {
        // Checked with the other AWS variables.
        Some(name) => name,
        None => {
            let random =
                crate::nonce::generate().map_err(|e| ConfigError::Random(e.to_string()))?;
            format!("mpgate-{}", &random[..16])
        }
    };
    let region = match text_setting(None, "MPGATE_LICENSE_REGION", env)? {
        Some(region) if !is_home_region(&region) => {
            return Err(aws_setting(
                "MPGATE_LICENSE_REGION",
                format!("{} is not a region name", quoted(&region)),
                "set it to the license's home region, where the buyer created the token (e.g. us-east-1)",
            ))
        }
        Some(region) => Some(region),
        // AWS_REGION was checked with the other AWS variables; AWS_DEFAULT_REGION, a profile
        // or IMDS would only guess the license's home region.
        None => text_setting(None, "AWS_REGION", env)?,
    };
    let sts_endpoint_url = if pinned::is_pinned() {
        // The STS call is pinned like License Manager's: a relay could hand out any
        // account's credentials.
        if env("AWS_ENDPOINT_URL_STS").is_some_and(|v| !v.is_empty()) {
            return Err(Refused("AWS_ENDPOINT_URL_STS".into()).into());
        }
        pinned::sts_endpoint_url().map(str::to_owned)
    } else {
        None
    };
    Ok(Some(LicenseToken {
        variable,
        file,
        token: Secret(token),
        role_arn,
        role_source,
        session_name,
        region,
        sts_endpoint_url,
    }))
}

/// The token in `file`: a JWT, surrounding whitespace dropped (a hand-made file may end in
/// a newline). The messages name the file and never its contents.
fn read_token(variable: &'static str, file: &Path) -> Result<String, ConfigError> {
    let shown = quoted(&file.to_string_lossy());
    let problem = |problem: String, fix: &str| {
        aws_setting(variable, format!("names {shown}, which {problem}"), fix)
    };
    let save = "save the license token from the product's launch page (Self-managed Kubernetes, Create token) in the buyer's secret under the key license_token, and mount it there";
    let bytes = read_regular(file, MAX_FILE_BYTES).map_err(|e| {
        problem(
            format!("is not a readable file ({e})"),
            "mount the buyer's license token secret there (is its volume mounted?), or fix the path",
        )
    })?;
    let text = String::from_utf8(bytes).map_err(|_| problem("is not text".into(), save))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(problem("is empty".into(), save));
    }
    if token.chars().count() > MAX_TOKEN_CHARS {
        return Err(problem(
            format!("holds more than the {MAX_TOKEN_CHARS} characters of a license token"),
            save,
        ));
    }
    if !is_jwt(token) {
        return Err(problem(
            "does not hold a license token (a JWT: three base64url parts separated by dots)".into(),
            save,
        ));
    }
    Ok(token.to_owned())
}

/// A JWS compact token's shape: three non-empty base64url parts, the header a JSON object.
fn is_jwt(token: &str) -> bool {
    let parts: Vec<&str> = token.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        // `{"` in base64url: every JOSE header starts with it.
        && parts[0].starts_with("eyJ")
}

/// The role to assume, and where it came from: `MPGATE_LICENSE_ROLE_ARN`, else the
/// `iam_role` file beside the token (the buyer's secret holds both), else `AWS_ROLE_ARN`
/// (AWS's seller guide sets it from that key; it may also be an IRSA role, hence last).
fn role(
    env: &dyn Fn(&str) -> Option<OsString>,
    token_file: &Path,
) -> Result<(String, String), ConfigError> {
    let fix = format!("set it to the IAM role the product's launch page created with the token (the secret's iam_role), e.g. {ROLE_EXAMPLE}");
    if let Some(arn) = text_setting(None, "MPGATE_LICENSE_ROLE_ARN", env)? {
        let arn = arn.trim().to_owned();
        if !is_role_arn(&arn) {
            return Err(aws_setting(
                "MPGATE_LICENSE_ROLE_ARN",
                format!("{} is not an IAM role ARN", quoted(&arn)),
                fix,
            ));
        }
        return Ok((arn, "MPGATE_LICENSE_ROLE_ARN".into()));
    }
    let beside = token_file
        .parent()
        .unwrap_or(Path::new("."))
        .join(ROLE_FILE);
    if std::fs::symlink_metadata(&beside).is_ok() {
        let name = format!("the role file {}", beside.display());
        let bytes = read_regular(&beside, MAX_FILE_BYTES).map_err(|e| {
            aws_setting(
                &name,
                format!("is not a readable file ({e})"),
                "mount the buyer's secret with its iam_role key, or set MPGATE_LICENSE_ROLE_ARN",
            )
        })?;
        let arn = String::from_utf8_lossy(&bytes).trim().to_owned();
        if !is_role_arn(&arn) {
            return Err(aws_setting(
                &name,
                format!("holds {}, which is not an IAM role ARN", quoted(&arn)),
                format!("save the role the product's launch page created with the token under the secret's iam_role key, e.g. {ROLE_EXAMPLE}, or set MPGATE_LICENSE_ROLE_ARN"),
            ));
        }
        return Ok((arn, name));
    }
    match text_setting(None, "AWS_ROLE_ARN", env)? {
        Some(arn) if is_role_arn(arn.trim()) => Ok((arn.trim().to_owned(), "AWS_ROLE_ARN".into())),
        Some(arn) => Err(aws_setting(
            "AWS_ROLE_ARN",
            format!("{} is not an IAM role ARN", quoted(&arn)),
            fix,
        )),
        None => Err(aws_setting(
            "MPGATE_LICENSE_ROLE_ARN",
            format!(
                "is not set, and there is neither an iam_role file beside the license token ({}) nor AWS_ROLE_ARN",
                beside.display()
            ),
            fix,
        )),
    }
}

/// A region name as AWS writes them (`xx-name-N`, lowercase): a placeholder left in a
/// manifest is refused here, not found later as an unknown endpoint host.
fn is_home_region(region: &str) -> bool {
    let labels: Vec<&str> = region.split('-').collect();
    is_region_name(region)
        && labels.len() >= 3
        && labels[0].len() == 2
        && labels[..labels.len() - 1]
            .iter()
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_lowercase()))
        && labels[labels.len() - 1].bytes().all(|b| b.is_ascii_digit())
}

/// `arn:PARTITION:iam::ACCOUNT:role/PATH/NAME`, the account 12 digits.
fn is_role_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    matches!(parts.as_slice(), ["arn", partition, "iam", "", account, resource]
        if partition.starts_with("aws")
            && account.len() == 12
            && account.bytes().all(|b| b.is_ascii_digit())
            && resource.strip_prefix("role/").is_some_and(|name| !name.is_empty())
            && !arn.contains(char::is_whitespace))
}

/// The account of a role ARN (checked by [`is_role_arn`]).
pub fn role_account(arn: &str) -> &str {
    arn.split(':').nth(4).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jwt_is_three_base64url_parts_with_a_json_header() {
        assert!(is_jwt("eyJhbGciOiJQUzM4NCJ9.eyJzdWIiOiJ4In0.c2ln-_"));
        for bad in [
            "",
            "token",
            "eyJ.eyJ",
            "eyJa..sig",
            "abc.def.ghi",
            "eyJa.b c.d",
            "eyJa.b.c.d",
            "eyJa.b+/.c",
        ] {
            assert!(!is_jwt(bad), "{bad}");
        }
    }

    #[test]
    fn a_home_region_is_written_as_aws_writes_regions() {
        for good in [
            "us-east-1",
            "eu-central-2",
            "us-gov-west-1",
            "ap-southeast-5",
        ] {
            assert!(is_home_region(good), "{good}");
        }
        for bad in [
            "LICENSE-HOME-REGION",
            "us-east",
            "useast1",
            "US-EAST-1",
            "us-east-x",
            "east-1",
            "us--1",
        ] {
            assert!(!is_home_region(bad), "{bad}");
        }
    }

    #[test]
    fn role_arns_name_an_iam_role_in_a_12_digit_account() {
        assert!(is_role_arn(ROLE_EXAMPLE));
        assert!(is_role_arn("arn:aws-us-gov:iam::123456789012:role/r"));
        for bad in [
            "arn:aws:iam::12345678901:role/r",
            "arn:aws:iam::123456789012:user/r",
            "arn:aws:iam::123456789012:role/",
            "arn:aws:sts::123456789012:role/r",
            "role/r",
            "arn:aws:iam::123456789012:role/a b",
        ] {
            assert!(!is_role_arn(bad), "{bad}");
        }
        assert_eq!(role_account(ROLE_EXAMPLE), "111122223333");
    }
}
