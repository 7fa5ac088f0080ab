//! Owns where the call goes and whom TLS trusts: an ordinary build's configured endpoint, a pinned build's own.

use std::ffi::OsString;

use crate::config::aws_env::url_problem;
use crate::config::error::{aws_setting, quoted, ConfigError};
use crate::pinned::{self, Kind, Refused};

/// The SDK's endpoint variable for the service a pricing model calls.
#[derive(Clone, Copy)]
pub struct ServiceVariables {
    endpoint: &'static str,
}

impl ServiceVariables {
    pub const METERING: Self = ServiceVariables {
        endpoint: "AWS_ENDPOINT_URL_MARKETPLACE_METERING",
    };
    pub const LICENSE_MANAGER: Self = ServiceVariables {
        endpoint: "AWS_ENDPOINT_URL_LICENSE_MANAGER",
    };
}

/// An ordinary build's endpoint (`--endpoint-url`, else the SDK's variables and profile) and
/// trust store (the built-in roots plus `SSL_CERT_FILE` / `SSL_CERT_DIR`).
pub fn configured_endpoint(
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
            // URL schemes are case-insensitive; the rest of mpgate compares them lower-case.
            None => Some(lower_scheme(url)),
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
/// subscribed account's call. TLS trusts the built-in roots only, and for the pinned
/// endpoint's host the compiled-in CA certificates too.
pub fn pinned_endpoint(
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
    // The compiled-in CA certificates vouch for the pinned endpoint's host alone.
    let roots = match pinned::ca_pem() {
        Some(pem) => crate::http::ExtraRoots::Pinned(pem),
        None => crate::http::ExtraRoots::Loaded(Vec::new()),
    };
    let url = match pinned::kind() {
        Some(Kind::Contract) => pinned::license_manager_endpoint_url(),
        _ => pinned::endpoint_url(),
    };
    Ok((url.map(str::to_owned), roots))
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
        Some(url) => is_plain_http(url),
        None => from_env().is_some_and(|url| is_plain_http(&url)),
    }
}

/// Whether a URL's scheme is `http`, in any case (`HTTP://` is as plain as `http://`).
fn is_plain_http(url: &str) -> bool {
    url.get(..7)
        .is_some_and(|s| s.eq_ignore_ascii_case("http://"))
}

/// The URL with its scheme (before `://`) in lower case.
fn lower_scheme(mut url: String) -> String {
    if let Some(end) = url.find("://") {
        url[..end].make_ascii_lowercase();
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fuzzing found `Http://…` accepted and kept as given, while the plain-HTTP check wanted
    /// lower case: the scheme is now lower-cased once, and the check ignores case.
    #[test]
    fn an_endpoints_scheme_is_accepted_in_any_case_and_kept_lower_case() {
        let none = |_: &str| None;
        let (url, roots) = configured_endpoint(
            Some("HtTp://127.0.0.1:8080/Path".into()),
            ServiceVariables::METERING,
            &none,
        )
        .unwrap();
        assert_eq!(url.as_deref(), Some("http://127.0.0.1:8080/Path"));
        assert!(matches!(roots, crate::http::ExtraRoots::Deferred));
        let env = |name: &str| (name == "AWS_ENDPOINT_URL").then(|| "HTTP://127.0.0.1:1".into());
        assert!(endpoint_is_plain_http(
            None,
            ServiceVariables::METERING,
            &env
        ));
        assert!(!is_plain_http("https://x"));
        assert!(!is_plain_http("http:/"));
    }
}
