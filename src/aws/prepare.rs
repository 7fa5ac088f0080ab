//! Owns preparing a call: the SDK configuration, the region, the endpoint and its early connection.

use std::time::{Duration, Instant};

use aws_config::{retry::RetryConfig, BehaviorVersion};
use aws_credential_types::{provider::SharedCredentialsProvider, Credentials};
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use aws_types::service_config::ServiceConfigKey;

use crate::aws::client::{Caller, Scope};
use crate::aws::credentials;
use crate::aws::result::CallError;
use crate::aws::send::{timeouts, Call};
use crate::aws::service::{Auth, EndpointParams, Service};
use crate::config::Config;

/// Backoff between attempts: full jitter between 0 and min(max, initial × 2^n).
const INITIAL_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// When AWS_MAX_ATTEMPTS is unset the deadline bounds retries; this only caps the count.
const MAX_ATTEMPTS_WITHIN_DEADLINE: u32 = 1000;

/// What the first call to a service needs: its caller, the call's attempt log and deadline,
/// and (a signed service) the credentials resolved for it.
pub struct Prepared {
    pub caller: Caller,
    pub call: Call,
    /// What the source answered first: their provider's features name where they came from.
    pub credentials: Option<Credentials>,
}

impl Prepared {
    /// Whatever part of the deadline loading took, the call gets only the rest.
    pub fn remaining(&self, config: &Config, started: Instant) -> Duration {
        config
            .timeout
            .saturating_sub(started.elapsed())
            .max(Duration::from_millis(1))
    }
}

/// Loads the SDK configuration, region and (a signed service) credentials within the
/// deadline, and opens the connection to the service's endpoint meanwhile. The credentials
/// are `given`'s (the license token's exchange), else the default chain's.
pub async fn prepare(
    config: &Config,
    service: &Service,
    given: Option<SharedCredentialsProvider>,
) -> Result<Prepared, CallError> {
    let call = Call::new(config.timeout);
    // A license token's calls go to the license's home region, which is never guessed.
    if config
        .license_token
        .as_ref()
        .is_some_and(|t| t.region.is_none())
    {
        return Err(CallError::NoLicenseRegion);
    }
    let http = crate::http::client(config.extra_roots.clone());
    let quiet = given.is_some();
    // On the heap: the SDK's loading makes this future some 12 KB, which the deadline's
    // future and this one's state would otherwise each copy (25 k instructions).
    let load = Box::pin(async {
        crate::config::check_profile(service.service_id).await?;
        let sdk = load_sdk_config(config, http.sdk.clone(), service.auth, given).await;
        let region = sdk.region().cloned().ok_or(CallError::NoRegion)?;
        // AWS_REGION and AWS_DEFAULT_REGION were checked with the configuration; a region
        // from the profile or IMDS is checked here, before the endpoint rules refuse it.
        if !crate::config::is_region_name(region.as_ref()) {
            return Err(CallError::Config(crate::config::ConfigError::AwsSetting {
                name: "the region".into(),
                problem: format!("{:?}, from the AWS config profile or the instance metadata (IMDS), is not a region name", region.as_ref().chars().take(80).collect::<String>()),
                fix: "set AWS_REGION to the region the task or pod runs in, e.g. us-east-1".into(),
            }));
        }
        refuse_flags_with_a_url(&sdk, config, service)?;
        let endpoint = if config.pinned {
            let endpoint =
                pinned_endpoint(&sdk, &region, config.endpoint_url.as_deref(), service).await?;
            http.pin_host(&endpoint);
            Some(endpoint)
        } else {
            endpoint_of(&sdk, config.endpoint_url.as_deref(), true, service).await
        };
        // The connection opens while the credentials load and the SDK prepares the call (a
        // credential fetch and the TCP and TLS handshakes are all round trips).
        if let Some(endpoint) = &endpoint {
            http.preconnect(endpoint, config.attempt_timeout.min(config.timeout));
            // Lets the connection start before the work below, which would not yield.
            tokio::task::yield_now().await;
        }
        let (sdk, credentials) = match service.auth {
            Auth::Signed => {
                let (sdk, credentials) = credentials::resolve(sdk, config.timeout).await?;
                (sdk, Some(credentials))
            }
            Auth::Unsigned => (sdk, None),
        };
        Ok((sdk, region, credentials, endpoint))
    });
    let (sdk, region, credentials, endpoint) = match tokio::time::timeout(config.timeout, load).await {
        Ok(loaded) => loaded?,
        Err(_) => return Err(CallError::Unreachable(format!(
            "no answer within the {} deadline while loading the AWS configuration and credentials: check the credential source is reachable (IMDS, ECS or EKS credential endpoint, STS), or raise MPGATE_TIMEOUT", call.deadline
        ))),
    };
    if let Some(credentials) = credentials.as_ref().filter(|_| !quiet) {
        tracing::debug!(region = %region, access_key_id = %credentials.access_key_id(), "credentials loaded");
    }
    let scope = Scope {
        region: region.as_ref().to_owned(),
        endpoint: endpoint.clone(),
    };
    // A pinned build names its endpoint programmatically, which the SDK puts above every
    // configured one; an ordinary build only when --endpoint-url was given.
    let endpoint_url = if config.pinned {
        endpoint
    } else {
        config.endpoint_url.clone()
    };
    Ok(Prepared {
        caller: Caller {
            sdk,
            endpoint_url,
            scope,
            attempt_timeout: config.attempt_timeout,
        },
        call,
        credentials,
    })
}

/// A pinned build's endpoint: the compiled-in URL, else the SDK's rules for the region (its
/// standard, FIPS or dual-stack host), never a configured one. The region must be a plain
/// region name: it becomes a label of the host name.
async fn pinned_endpoint(
    sdk: &aws_config::SdkConfig,
    region: &aws_config::Region,
    compiled_in: Option<&str>,
    service: &Service,
) -> Result<String, CallError> {
    if let Some(url) = compiled_in {
        return Ok(url.to_owned());
    }
    let name = region.as_ref();
    let plain = name.split('-').all(|label| {
        !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    });
    if !plain || !name.contains('-') {
        return Err(CallError::PinnedEndpoint(format!(
            "the region {name:?} is not an AWS region name such as us-east-1: let the platform set AWS_REGION"
        )));
    }
    endpoint_of(sdk, None, false, service).await.ok_or_else(|| {
        CallError::PinnedEndpoint(format!(
            "the SDK has no {} endpoint for region {name} with these FIPS and dual-stack settings (AWS_USE_FIPS_ENDPOINT, AWS_USE_DUALSTACK_ENDPOINT)",
            service.name
        ))
    })
}

/// FIPS and dual-stack choose a host from the SDK's endpoint rules; with a URL that the
/// rules do not resolve (a pinned build's compiled-in one, or a configured one in an
/// ordinary build) the SDK refuses the call. That is a configuration error (exit 2 naming
/// the setting), never "service unreachable", which `allow` would let through.
fn refuse_flags_with_a_url(
    sdk: &aws_config::SdkConfig,
    config: &Config,
    service: &Service,
) -> Result<(), CallError> {
    let url = if config.pinned {
        // A pinned build's configuration holds its compiled-in URL, if any.
        config.endpoint_url.clone()
    } else {
        configured_url(sdk, config.endpoint_url.as_deref(), true, service)
    };
    let Some(url) = url else {
        return Ok(());
    };
    for (on, variable, profile_key) in [
        (sdk.use_fips(), "AWS_USE_FIPS_ENDPOINT", "use_fips_endpoint"),
        (
            sdk.use_dual_stack(),
            "AWS_USE_DUALSTACK_ENDPOINT",
            "use_dualstack_endpoint",
        ),
    ] {
        if on == Some(true) {
            let whose = if config.pinned {
                "compiled into this build"
            } else {
                "configured"
            };
            return Err(CallError::Config(crate::config::ConfigError::AwsSetting {
                name: format!("{variable} (or {profile_key} in the AWS config profile)"),
                problem: format!("is true, but the {} endpoint is {whose} as {url:?}, which it cannot change", service.name),
                fix: format!("unset {variable}: the endpoint's URL decides the host (or remove the endpoint setting to let the SDK's rules pick the host)"),
            }));
        }
    }
    Ok(())
}

/// The URL given or configured for the service (`None`: the SDK's rules decide).
fn configured_url(
    sdk: &aws_config::SdkConfig,
    given: Option<&str>,
    configured: bool,
    service: &Service,
) -> Option<String> {
    given.map(str::to_owned).or_else(|| {
        if !configured {
            return None;
        }
        if sdk.get_origin("endpoint_url").is_client_config() {
            return sdk.endpoint_url().map(str::to_owned);
        }
        let key = ServiceConfigKey::builder()
            .service_id(service.service_id)
            .env("AWS_ENDPOINT_URL")
            .profile("endpoint_url")
            .build()
            .ok()?;
        sdk.service_config()
            .and_then(|config| config.load_config(key))
            .or_else(|| sdk.endpoint_url().map(str::to_owned))
    })
}

/// The endpoint the call will go to, resolved as the SDK's client does from the same
/// configuration (the endpoint rules, a given URL, and with `configured` the service's own
/// `AWS_ENDPOINT_URL_*` and profile settings); `None` if that fails, which the call itself
/// will then report.
async fn endpoint_of(
    sdk: &aws_config::SdkConfig,
    given: Option<&str>,
    configured: bool,
    service: &Service,
) -> Option<String> {
    let url = configured_url(sdk, given, configured, service);
    (service.rules)(EndpointParams {
        region: sdk.region().map(|r| r.as_ref().to_owned()),
        use_fips: sdk.use_fips(),
        use_dual_stack: sdk.use_dual_stack(),
        url,
    })
    .await
}

async fn load_sdk_config(
    config: &Config,
    http: SharedHttpClient,
    auth: Auth,
    given: Option<SharedCredentialsProvider>,
) -> aws_config::SdkConfig {
    let retry = if config.retry.adaptive {
        RetryConfig::adaptive()
    } else {
        RetryConfig::standard()
    }
    .with_max_attempts(
        config
            .retry
            .max_attempts
            .unwrap_or(MAX_ATTEMPTS_WITHIN_DEADLINE),
    )
    .with_initial_backoff(INITIAL_BACKOFF)
    .with_max_backoff(MAX_BACKOFF);
    // Setting retry and timeout configs explicitly also keeps aws-config from reading
    // AWS_MAX_ATTEMPTS itself, which panics on 0 (validated in config instead).
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .retry_config(retry)
        .timeout_config(timeouts(config.attempt_timeout, config.timeout));
    // The default region chain consults the environment first, so when it settles the region
    // the chain's answer is known: take it without building the chain.
    let fixed = config.license_token.as_ref().and_then(|t| t.region.clone());
    if let Some(region) = fixed.or_else(|| region_from_env(crate::settings::var)) {
        loader = loader.region(aws_config::Region::new(region));
    }
    credentials::source(loader, auth, given).load().await
}

/// The region the default chain would take from the environment, if it settles it: `AWS_REGION`,
/// else `AWS_DEFAULT_REGION`. `None` (the chain decides) also when the chosen one is empty.
fn region_from_env(var: impl Fn(&'static str) -> Option<String>) -> Option<String> {
    var("AWS_REGION")
        .or_else(|| var("AWS_DEFAULT_REGION"))
        .filter(|region| !region.is_empty())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::aws::credentials::tests::vars;

    #[test]
    fn the_region_comes_from_the_environment_as_the_default_chain_takes_it() {
        assert_eq!(
            region_from_env(vars(&[
                ("AWS_REGION", "eu-west-1"),
                ("AWS_DEFAULT_REGION", "us-east-2")
            ]))
            .as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(
            region_from_env(vars(&[("AWS_DEFAULT_REGION", "us-east-2")])).as_deref(),
            Some("us-east-2")
        );
        // An empty AWS_REGION is the chain's to judge, not a reason to read AWS_DEFAULT_REGION.
        assert_eq!(
            region_from_env(vars(&[
                ("AWS_REGION", ""),
                ("AWS_DEFAULT_REGION", "us-east-2")
            ])),
            None
        );
        assert_eq!(region_from_env(vars(&[])), None);
    }

    /// The endpoint tests of each service module call this with their `SERVICE`.
    pub(crate) async fn endpoints(service: &Service, fips_host: &str, host: &str) {
        let sdk = |fips| {
            aws_config::SdkConfig::builder()
                .region(aws_config::Region::new("eu-west-1"))
                .use_fips(fips)
                .behavior_version(BehaviorVersion::latest())
                .build()
        };
        assert_eq!(
            endpoint_of(&sdk(false), None, true, service)
                .await
                .as_deref(),
            Some(host)
        );
        assert_eq!(
            endpoint_of(&sdk(true), None, true, service)
                .await
                .as_deref(),
            Some(fips_host)
        );
        assert_eq!(
            endpoint_of(&sdk(false), Some("http://127.0.0.1:9"), true, service)
                .await
                .as_deref(),
            Some("http://127.0.0.1:9")
        );
        // The SDK refuses FIPS with a custom endpoint; the call will say so, nothing opens.
        assert_eq!(
            endpoint_of(&sdk(true), Some("http://127.0.0.1:9"), true, service).await,
            None
        );
        let sdk = |region: &str| {
            aws_config::SdkConfig::builder()
                .region(aws_config::Region::new(region.to_owned()))
                // What AWS_ENDPOINT_URL or a profile would configure: never used when pinned.
                .endpoint_url("https://relay.example")
                .behavior_version(BehaviorVersion::latest())
                .build()
        };
        let pinned = |region: &'static str| async move {
            let sdk = sdk(region);
            pinned_endpoint(&sdk, sdk.region().unwrap(), None, service).await
        };
        assert_eq!(pinned("eu-west-1").await.unwrap(), host);
        // A dotted "region" would put the buyer's labels into the host name.
        for region in [
            "x.execute-api.us-east-1",
            "eu-west-1.",
            "evil",
            "EU-WEST-1",
            "eu--1",
        ] {
            assert!(
                matches!(pinned(region).await, Err(CallError::PinnedEndpoint(_))),
                "{region}"
            );
        }
        // The compiled-in URL wins over everything.
        let sdk = sdk("eu-west-1");
        assert_eq!(
            pinned_endpoint(
                &sdk,
                sdk.region().unwrap(),
                Some("https://pinned.internal"),
                service
            )
            .await
            .unwrap(),
            "https://pinned.internal"
        );
    }
}
