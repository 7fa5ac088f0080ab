//! Owns the one client builder every service's calls go through, and what their clients share.

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;

use crate::aws::retry::RetryingWontHelp;
use crate::aws::send::{timeouts, AttemptObserver, Call};
use crate::aws::service::{Auth, Service};

/// The region a call is signed for and the endpoint it goes to (if known), which a
/// signature scoped to the wrong region must name.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub region: String,
    pub endpoint: Option<String>,
}

/// What every call to one service shares: the SDK configuration (its credentials cached and
/// refreshed, `aws::credentials`), the endpoint, the scope the advice names, and the
/// per-attempt timeout.
#[derive(Clone)]
pub struct Caller {
    pub sdk: aws_config::SdkConfig,
    /// An endpoint to set on the client programmatically: a pinned build's, or --endpoint-url.
    pub endpoint_url: Option<String>,
    pub scope: Scope,
    pub attempt_timeout: Duration,
}

impl Caller {
    /// A client of `service` for one call that must end within `deadline`, counting its
    /// attempts in `call`.
    pub fn client<C: SdkClient>(&self, service: &Service, call: &Call, deadline: Duration) -> C {
        C::build(
            &self.sdk,
            Parts {
                endpoint_url: self.endpoint_url.as_deref(),
                observer: AttemptObserver::new(call.attempts.clone(), service),
                classifier: RetryingWontHelp::new(service),
                timeouts: timeouts(self.attempt_timeout, deadline),
                unsigned: service.auth == Auth::Unsigned,
            },
        )
    }
}

/// What mpgate sets on every client, whatever its service.
pub struct Parts<'a> {
    endpoint_url: Option<&'a str>,
    observer: AttemptObserver,
    classifier: RetryingWontHelp,
    timeouts: TimeoutConfig,
    /// Sent without a signature: the SDK falls back to no authentication when the
    /// configuration has no credentials (`aws::credentials::source`).
    unsigned: bool,
}

/// A service's SDK client: every SDK crate has the same configuration builder, each its own type.
pub trait SdkClient: Sized {
    fn build(sdk: &aws_config::SdkConfig, parts: Parts<'_>) -> Self;
}

macro_rules! sdk_client {
    ($sdk:ident) => {
        impl SdkClient for $sdk::Client {
            fn build(sdk: &aws_config::SdkConfig, parts: Parts<'_>) -> Self {
                let mut builder = $sdk::config::Builder::from(sdk)
                    // The answer is at most MAX_ANSWER_BYTES and every attempt has a timeout;
                    // a throughput monitor on the body would only add a timer per attempt.
                    .stalled_stream_protection(
                        $sdk::config::StalledStreamProtectionConfig::disabled(),
                    )
                    .interceptor(parts.observer)
                    .retry_classifier(parts.classifier)
                    .timeout_config(parts.timeouts);
                if parts.unsigned {
                    builder = builder.allow_no_auth();
                }
                if let Some(url) = parts.endpoint_url {
                    // A pinned URL already is the rules' FIPS or dual-stack host (prepare
                    // refused the flags with any other URL): left set, the SDK would refuse
                    // the flags beside a URL.
                    builder = builder
                        .endpoint_url(url)
                        .use_fips(false)
                        .use_dual_stack(false);
                }
                $sdk::Client::from_conf(builder.build())
            }
        }
    };
}

sdk_client!(aws_sdk_marketplacemetering);
sdk_client!(aws_sdk_licensemanager);
sdk_client!(aws_sdk_sts);
