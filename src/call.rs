//! Owns the call layer both AWS services share: SDK config, credentials, endpoint, deadline,
//! retry classification, the attempt log, and what a failure outside the service's answer means.

use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_config::{retry::RetryConfig, timeout::TimeoutConfig, BehaviorVersion};
use aws_credential_types::{provider::ProvideCredentials, Credentials};
use aws_smithy_runtime_api::{
    box_error::BoxError,
    client::{
        http::SharedHttpClient,
        interceptors::{
            context::{
                BeforeTransmitInterceptorContextRef, Error as OperationError,
                FinalizerInterceptorContextRef, InterceptorContext,
            },
            Intercept,
        },
        orchestrator::{HttpResponse, Metadata, OrchestratorError},
        result::SdkError,
        retries::classifiers::{ClassifyRetry, RetryAction},
        runtime_components::RuntimeComponents,
    },
};
use aws_smithy_types::config_bag::ConfigBag;
use aws_types::service_config::ServiceConfigKey;

use crate::config::Config;

/// Backoff between attempts: full jitter between 0 and min(max, initial × 2^n).
const INITIAL_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How an attempt cut by its own timeout is described.
const TIMED_OUT: &str = "attempt timed out";
/// When AWS_MAX_ATTEMPTS is unset the deadline bounds retries; this only caps the count.
const MAX_ATTEMPTS_WITHIN_DEADLINE: u32 = 1000;
/// How long past the deadline the backstop waits for the SDK's own operation timeout.
const DEADLINE_BACKSTOP: Duration = Duration::from_millis(500);

/// The endpoint rules' inputs, as the SDK's client takes them from its configuration.
pub struct EndpointParams {
    pub region: Option<String>,
    pub use_fips: Option<bool>,
    pub use_dual_stack: Option<bool>,
    pub url: Option<String>,
}

/// What the endpoint rules of a service's SDK crate answer.
pub type Rules = fn(EndpointParams) -> Pin<Box<dyn Future<Output = Option<String>> + Send>>;

/// The [`Rules`] of a service's SDK crate: every SDK crate has the same endpoint parameters and
/// resolver, each its own types.
macro_rules! endpoint_rules {
    ($sdk:ident) => {
        |p: $crate::call::EndpointParams| -> ::std::pin::Pin<
                    Box<dyn ::std::future::Future<Output = Option<String>> + Send>,
                > {
                    Box::pin(async move {
                        use $sdk::config::endpoint::{DefaultResolver, Params, ResolveEndpoint};
                        let params = Params::builder()
                            .set_region(p.region)
                            .set_use_fips(p.use_fips)
                            .set_use_dual_stack(p.use_dual_stack)
                            .set_endpoint(p.url)
                            .build()
                            .ok()?;
                        let endpoint = DefaultResolver::new()
                            .resolve_endpoint(&params)
                            .await
                            .ok()?;
                        Some(endpoint.url().to_owned())
                    })
                }
    };
}
pub(crate) use endpoint_rules;

/// One AWS service, as the call layer needs to know it.
pub struct Service {
    /// How messages name it: "Metering", "License Manager".
    pub name: &'static str,
    /// The SDK's service ID: its `AWS_ENDPOINT_URL_*` variable and profile `services` key.
    pub service_id: &'static str,
    /// The endpoint rules of its SDK crate.
    pub rules: Rules,
    /// The error code of a failed operation of the service, if the answer had one.
    pub error_code: fn(&OperationError) -> Option<String>,
}

/// Why a call got no answer from the service to judge; each variant is one exit code (`exit`).
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Unreachable(String),
    #[error("the service's success answer is unusable ({0}): this endpoint is not the AWS service mpgate calls, or something in between altered the answer")]
    BadAnswer(String),
    #[error("no AWS region: set AWS_REGION to the region this task or pod runs in")]
    NoRegion,
    #[error("this mpgate build is pinned to the AWS endpoint, but {0}")]
    PinnedEndpoint(String),
    #[error("no AWS credentials ({0}): give the ECS task an IAM task role, or the EKS pod's service account an IAM role through IRSA (AWS Marketplace accepts no other identity on EKS)")]
    NoCredentials(String),
    /// What the SDK read from the AWS config files, or the region it resolved, is unusable.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// What a call left behind, whatever its outcome, for the logs and the result file.
#[derive(Debug, Default)]
pub struct CallRecord {
    pub attempts: u32,
    /// `x-amzn-RequestId` of the last answer, for an AWS Support case.
    pub request_id: Option<String>,
    /// What works today but AWS Marketplace does not support (logged as well).
    pub warnings: Vec<String>,
}

/// Everything a call needs before its client is built: the SDK configuration, the region,
/// credentials resolved once, and where the call goes.
pub struct Prepared {
    pub sdk: aws_config::SdkConfig,
    pub region: String,
    pub credentials: Credentials,
    /// An endpoint to set on the client programmatically: a pinned build's, or --endpoint-url.
    pub endpoint_url: Option<String>,
    /// The region and endpoint the call is signed for and sent to, for the advice.
    pub scope: Scope,
    pub attempts: Arc<AttemptLog>,
    /// `30s`: the deadline as messages write it.
    pub deadline: String,
}

impl Prepared {
    /// The attempt log and the deadline's text, for `send` and the error messages.
    pub fn log(&self) -> (&AttemptLog, &str) {
        (&self.attempts, &self.deadline)
    }

    /// Whatever part of the deadline loading took, the call gets only the rest.
    pub fn remaining(&self, config: &Config, started: Instant) -> Duration {
        config
            .timeout
            .saturating_sub(started.elapsed())
            .max(Duration::from_millis(1))
    }
}

/// Loads the SDK configuration, region and credentials within the deadline, and opens the
/// connection to the service's endpoint meanwhile.
pub async fn prepare(config: &Config, service: &Service) -> Result<Prepared, CallError> {
    let deadline = humantime(config.timeout);
    let http = crate::http::client(config.extra_roots.clone());
    let load = async {
        crate::config::check_profile(service.service_id).await?;
        let sdk = load_sdk_config(config, http.sdk.clone()).await;
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
        let endpoint = if config.pinned {
            Some(pinned_endpoint(&sdk, &region, config.endpoint_url.as_deref(), service).await?)
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
        let provider = sdk
            .credentials_provider()
            .ok_or_else(|| CallError::NoCredentials("no credential provider".into()))?;
        // Resolve credentials once, up front: a missing role fails fast with exit 15 instead
        // of surfacing as a dispatch failure, and the call below never fetches them again.
        let credentials = provider
            .provide_credentials()
            .await
            .map_err(|e| CallError::NoCredentials(causes(&e)))?;
        Ok((sdk, region, credentials, endpoint))
    };
    let (sdk, region, credentials, endpoint) = match tokio::time::timeout(config.timeout, load).await {
        Ok(loaded) => loaded?,
        Err(_) => return Err(CallError::Unreachable(format!(
            "no answer within the {deadline} deadline while loading the AWS configuration and credentials: check the credential source is reachable (IMDS, ECS or EKS credential endpoint, STS), or raise MPGATE_TIMEOUT"
        ))),
    };
    tracing::debug!(region = %region, access_key_id = %credentials.access_key_id(), "credentials loaded");
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
        sdk,
        scope,
        region: region.as_ref().to_owned(),
        credentials,
        endpoint_url,
        attempts: Arc::new(AttemptLog::default()),
        deadline,
    })
}

/// Sends a call (pinned by the caller: it is not moved again) within `remaining` (plus a backstop should the SDK ever overrun its own
/// operation timeout); `record` gets the attempts and the last request ID.
pub async fn send<T, E>(
    call: impl Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    (attempts, deadline): (&AttemptLog, &str),
    remaining: Duration,
    record: &mut CallRecord,
) -> Result<Result<T, SdkError<E, HttpResponse>>, CallError> {
    let result = tokio::time::timeout(remaining + DEADLINE_BACKSTOP, call).await;
    {
        let log = attempts.lock();
        record.attempts = log.count;
        record.request_id = log.request_id.clone();
    }
    result.map_err(|_| deadline_passed(deadline, &attempts.summary()))
}

/// The region a call is signed for and the endpoint it goes to (if known), which a
/// signature scoped to the wrong region must name.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub region: String,
    pub endpoint: Option<String>,
}

impl Scope {
    /// The scope of calls made with `sdk` to `endpoint`.
    pub fn of(sdk: &aws_config::SdkConfig, endpoint: Option<String>) -> Self {
        Scope {
            region: sdk
                .region()
                .map(|r| r.as_ref().to_owned())
                .unwrap_or_default(),
            endpoint,
        }
    }
}

/// Where the region came from, as the advice names it.
fn region_source() -> &'static str {
    let set = |name| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    if set("AWS_REGION") {
        "AWS_REGION"
    } else if set("AWS_DEFAULT_REGION") {
        "AWS_DEFAULT_REGION"
    } else {
        "the AWS config profile or the instance metadata"
    }
}

/// What to do about a credentials error AWS answers before it looks at the request (always
/// final: the same signature fails the same way on a retry); `None` for other errors.
pub fn credential_advice(
    code: &str,
    message: &str,
    service: &Service,
    scope: &Scope,
) -> Option<String> {
    let signature = matches!(
        code,
        "InvalidSignatureException" | "SignatureDoesNotMatch" | "IncompleteSignatureException"
    );
    Some(match code {
        // AWS accepts a signing time within 15 minutes of its own clock: "expired" when the
        // node's clock is behind, "not yet current" when it is ahead.
        _ if signature && (message.contains("Signature expired") || message.contains("Signature not yet current")) => {
            let way = if message.contains("not yet current") { "ahead of" } else { "behind" };
            format!("the node's clock is more than 15 minutes {way} AWS's: fix the node's time synchronisation (NTP, chrony)")
        }
        _ if signature && message.contains("scoped to a valid region") => {
            let endpoint = scope.endpoint.as_deref().unwrap_or("the configured endpoint");
            format!(
                "the request was signed for region {} (from {}), but the endpoint {endpoint} serves another region: set AWS_REGION to the region of that endpoint, or point AWS_ENDPOINT_URL_{} at the {} endpoint of {}",
                scope.region,
                region_source(),
                service.service_id.to_ascii_uppercase().replace(' ', "_"),
                service.name,
                scope.region,
            )
        }
        _ if signature && message.contains("scoped to correct service") => format!(
            "the endpoint {} is not the {} service: check the endpoint URL",
            scope.endpoint.as_deref().unwrap_or("configured"),
            service.name
        ),
        _ if signature => {
            "the signature does not match the secret key AWS has: check AWS_SECRET_ACCESS_KEY, or that no proxy alters the request".into()
        }
        "ExpiredTokenException" => {
            "the session token has expired: the task role or IRSA renews it; if AWS_SESSION_TOKEN is set by hand, remove it and use the role".into()
        }
        "UnrecognizedClientException" | "InvalidClientTokenId" => {
            "AWS does not know the access key or session token: use the ECS task's IAM role, or an IAM role through IRSA on EKS, not copied keys".into()
        }
        "MissingAuthenticationTokenException" => {
            "the request carried no credentials: give the ECS task an IAM role, or the EKS pod's service account one through IRSA".into()
        }
        _ => return None,
    })
}

/// Whether AWS refused the call for a missing IAM permission.
pub fn is_access_denied(code: &str) -> bool {
    code.contains("AccessDenied") || code == "AuthorizationException"
}

/// What an error answer no service module has a meaning for says: retried until the deadline
/// (throttling, 5xx), the IAM action missing, the credentials refused, or the request refused.
pub fn other_service_error(
    service: &Service,
    (code, status, message): (&str, u16, &str),
    (actions, policy): (&str, &str),
    (attempts, deadline, scope): (&AttemptLog, &str, &Scope),
    context: &str,
) -> CallError {
    let name = service.name;
    if is_transient(code, status) {
        return CallError::Unreachable(format!(
            "the {name} service kept failing ({code}, HTTP {status}) {} before the {deadline} deadline: retry later, or raise MPGATE_TIMEOUT",
            attempts.summary()
        ));
    }
    if is_access_denied(code) {
        return CallError::Refused(format!(
            "the credentials may not call {actions} ({code}): add {policy} to the task role or the pod's IAM role; {context}"
        ));
    }
    CallError::Refused(match credential_advice(code, message, service, scope) {
        Some(advice) => format!("AWS rejected the credentials ({code}: {message}): {advice}"),
        None => format!(
            "the {name} service refused the request ({code}, HTTP {status}: {message}) for {context}"
        ),
    })
}

/// Maps a failure other than the service's own error answer: the deadline, the network, a
/// proxy, a certificate, an answer that is not the service's.
pub fn transport_error<E: std::error::Error + 'static>(
    error: &SdkError<E, HttpResponse>,
    service: &Service,
    attempts: &AttemptLog,
    deadline: &str,
) -> CallError {
    let name = service.name;
    let tried = attempts.summary();
    match error {
        SdkError::TimeoutError(_) if attempts.last().is_some_and(|l| is_throttling(&l)) => {
            CallError::Unreachable(format!(
                "AWS {name} throttled every attempt until the {deadline} deadline ({tried}): many tasks may be starting at once; raise MPGATE_TIMEOUT so the jittered retries can spread out"
            ))
        }
        // Every attempt got an answer, an error status: the service is there but failing.
        SdkError::TimeoutError(_) if attempts.last_was_error_status() => CallError::Unreachable(format!(
            "the {name} service kept failing ({tried}) until the {deadline} deadline: retry later, or raise MPGATE_TIMEOUT"
        )),
        SdkError::TimeoutError(_) => deadline_passed(deadline, &tried),
        SdkError::ResponseError(response) if response.raw().status().is_success() => {
            CallError::BadAnswer(causes(error))
        }
        // An answer that is not AWS JSON: a proxy's or firewall's own page.
        SdkError::ResponseError(response) if response.raw().status().as_u16() == 407 => proxy_wants_credentials(),
        SdkError::DispatchFailure(failure)
            if failure
                .as_connector_error()
                .is_some_and(|c| is_proxy_auth_required(c)) =>
        {
            proxy_wants_credentials()
        }
        SdkError::ResponseError(response) if response.raw().status().is_client_error() => CallError::Refused(format!(
            "HTTP {} from something that is not the {name} service (the answer is not AWS JSON): a proxy or firewall refuses the request; allow the {name} endpoint through it",
            response.raw().status().as_u16()
        )),
        SdkError::DispatchFailure(failure)
            if failure
                .as_connector_error()
                .is_some_and(|c| is_untrusted_certificate(c)) =>
        {
            CallError::Unreachable(format!(
                "the {name} endpoint's TLS certificate is not trusted ({}): if a proxy inspects TLS, add its CA with SSL_CERT_FILE or SSL_CERT_DIR; otherwise check the endpoint URL",
                attempts.last().unwrap_or_default()
            ))
        }
        SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => CallError::Unreachable(format!(
            "cannot reach the {name} service: {} ({tried}): check the network path to the endpoint (VPC endpoint, NAT gateway, proxy)",
            causes(error)
        )),
        _ => CallError::Refused(format!("the request could not be made: {}", causes(error))),
    }
}

/// A proxy's 407, to a request (plain HTTP) or to the `CONNECT` of an HTTPS tunnel.
fn proxy_wants_credentials() -> CallError {
    CallError::Refused(
        "the proxy asks for credentials (HTTP 407 Proxy Authentication Required): put them in the proxy URL, e.g. HTTPS_PROXY=http://user:password@proxy:3128".into(),
    )
}

fn deadline_passed(deadline: &str, tried: &str) -> CallError {
    CallError::Unreachable(format!(
        "no entitlement answer within the {deadline} deadline ({tried}): check the network path to the AWS endpoint (VPC endpoint, NAT, proxy), or raise MPGATE_TIMEOUT"
    ))
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
    let url = given.map(str::to_owned).or_else(|| {
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
    });
    (service.rules)(EndpointParams {
        region: sdk.region().map(|r| r.as_ref().to_owned()),
        use_fips: sdk.use_fips(),
        use_dual_stack: sdk.use_dual_stack(),
        url,
    })
    .await
}

async fn load_sdk_config(config: &Config, http: SharedHttpClient) -> aws_config::SdkConfig {
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
    // The default region and credential chains consult the environment first, so when it
    // settles a value the chain's answer is known: take it without building the chain. The
    // credential chain builds an STS and an IMDS client up front, a quarter of a gate's work.
    let var = |name| std::env::var(name).ok();
    if let Some(region) = region_from_env(var) {
        loader = loader.region(aws_config::Region::new(region));
    }
    if has_static_credentials(var) {
        loader = loader.credentials_provider(
            aws_config::environment::EnvironmentVariableCredentialsProvider::new(),
        );
    }
    loader.load().await
}

/// The region the default chain would take from the environment, if it settles it: `AWS_REGION`,
/// else `AWS_DEFAULT_REGION`. `None` (the chain decides) also when the chosen one is empty.
fn region_from_env(var: impl Fn(&'static str) -> Option<String>) -> Option<String> {
    var("AWS_REGION")
        .or_else(|| var("AWS_DEFAULT_REGION"))
        .filter(|region| !region.is_empty())
}

/// Whether the default chain's first provider, the environment, would answer with credentials:
/// an access key id and a secret key (either name), neither blank.
fn has_static_credentials(var: impl Fn(&'static str) -> Option<String>) -> bool {
    let set = |name| var(name).is_some_and(|v| !v.trim().is_empty());
    set("AWS_ACCESS_KEY_ID") && (set("AWS_SECRET_ACCESS_KEY") || set("SECRET_ACCESS_KEY"))
}

/// Each attempt gets `attempt`, the call `total` (the rest of the deadline).
pub fn timeouts(attempt: Duration, total: Duration) -> TimeoutConfig {
    let attempt = attempt.min(total);
    TimeoutConfig::builder()
        .connect_timeout(attempt)
        .read_timeout(attempt)
        .operation_attempt_timeout(attempt)
        .operation_timeout(total)
        .build()
}

/// An error and its sources on one line, without the SDK's Debug dump of the raw response.
pub fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            let _ = write!(text, ": {cause_text}");
        }
        source = cause.source();
    }
    text
}

/// `30s`, `1500ms`: how durations are written in mpgate's messages and flags.
pub fn humantime(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Throttling and server-side failures: worth retrying, and what `allow` may let through.
pub fn is_transient(code: &str, status: u16) -> bool {
    status >= 500 || status == 429 || is_throttling(code) || is_retryable_code(code)
}

/// Error codes whose documentation says to try again, whatever the HTTP status: License
/// Manager's `ConflictException` (CheckInLicense: "Try your request again").
fn is_retryable_code(code: &str) -> bool {
    [
        "InternalServiceErrorException",
        "ServiceUnavailable",
        "ConflictException",
    ]
    .iter()
    .any(|c| code.starts_with(c))
}

/// Whether an error code (or an attempt's description, which starts with it) is throttling.
fn is_throttling(code: &str) -> bool {
    const THROTTLING: [&str; 5] = [
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        // License Manager's (HTTP 429, but the code decides), which the SDK does not retry
        // by itself.
        "RateLimitExceededException",
    ];
    THROTTLING.iter().any(|t| code.starts_with(t))
}

/// Counts attempts and remembers the last failure, for the final message and the logs.
#[derive(Debug, Default)]
pub struct AttemptLog {
    inner: Mutex<Attempts>,
}

#[derive(Debug, Default, Clone)]
struct Attempts {
    count: u32,
    last: Option<String>,
    /// The last failure the endpoint answered (an HTTP status), which a timeout or network
    /// error on the attempt after it would otherwise hide from the final message.
    last_answer: Option<String>,
    /// The last connection failure (a refused TLS handshake, a reset) that a timed-out attempt
    /// after it would otherwise hide: on a loaded machine the deadline can cut the last try.
    last_connection_failure: Option<String>,
    /// `x-amzn-RequestId` of the last answer: what AWS Support asks for.
    request_id: Option<String>,
    /// Whether the last attempt ended in an error status (the service failing, not the path).
    last_was_error_status: bool,
}

impl AttemptLog {
    /// Counts an attempt starting; returns its number.
    fn started(&self) -> u32 {
        let mut attempts = self.lock();
        attempts.count += 1;
        attempts.count
    }

    /// Records how the current attempt failed; `status`: the HTTP status it was answered with.
    fn failed(&self, what: String, status: Option<u16>) {
        let mut attempts = self.lock();
        attempts.last_was_error_status = status.is_some_and(|s| s >= 400);
        if status.is_some() {
            attempts.last_answer = Some(what.clone());
        } else if what != TIMED_OUT {
            attempts.last_connection_failure = Some(what.clone());
        }
        attempts.last = Some(what);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Attempts> {
        crate::http::lock(&self.inner)
    }

    fn count(&self) -> u32 {
        self.lock().count
    }

    /// Whether the last attempt was answered with an error status, not cut by a timeout, a
    /// connection failure or a broken answer.
    fn last_was_error_status(&self) -> bool {
        self.lock().last_was_error_status
    }

    /// How the last attempt failed.
    pub fn last(&self) -> Option<String> {
        self.lock().last.clone()
    }

    /// `3 attempts, last: HTTP 503`, with an earlier answer or connection failure a timeout hid.
    pub fn summary(&self) -> String {
        let attempts = self.lock().clone();
        let count = attempts.count;
        let mut text = format!("{count} attempt{}", if count == 1 { "" } else { "s" });
        if let Some(last) = &attempts.last {
            let _ = write!(text, ", last: {last}");
        }
        let earlier =
            |what: &Option<String>| what.clone().filter(|w| Some(w) != attempts.last.as_ref());
        if let Some(answer) = earlier(&attempts.last_answer) {
            let _ = write!(text, "; the last answer was {answer}");
        }
        if let Some(failure) = earlier(&attempts.last_connection_failure) {
            let _ = write!(text, "; the last connection failure was {failure}");
        }
        text
    }
}

/// Counts a client's attempts and logs the ones that are retried, naming the operation.
#[derive(Debug)]
pub struct AttemptObserver {
    log: Arc<AttemptLog>,
    error_code: fn(&OperationError) -> Option<String>,
}

impl AttemptObserver {
    pub fn new(log: Arc<AttemptLog>, service: &Service) -> Self {
        AttemptObserver {
            log,
            error_code: service.error_code,
        }
    }
}

fn operation(cfg: &ConfigBag) -> &str {
    cfg.load::<Metadata>().map_or("the call", Metadata::name)
}

impl Intercept for AttemptObserver {
    fn name(&self) -> &'static str {
        "mpgate::AttemptObserver"
    }

    fn read_before_attempt(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let attempt = self.log.started();
        tracing::debug!(attempt, "calling {}", operation(cfg));
        Ok(())
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(id) = context
            .response()
            .and_then(|r| r.headers().get("x-amzn-requestid"))
            // A request ID is short and printable; anything else is not AWS's.
            .filter(|id| id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()))
        {
            self.log.lock().request_id = Some(id.to_owned());
        }
        let Some(Err(error)) = context.output_or_error() else {
            return Ok(());
        };
        let status = context.response().map(|r| r.status().as_u16());
        let what = if let Some(code) = error.as_operation_error().and_then(self.error_code) {
            format!("{code} (HTTP {})", status.unwrap_or(0))
        } else if error.is_timeout_error() {
            TIMED_OUT.to_string()
        } else if let Some(connector) = error.as_connector_error() {
            causes(connector)
        } else if let Some(status) = status {
            format!("HTTP {status}")
        } else {
            causes(error)
        };
        // Only failures the SDK retries are news; a final answer is reported once, by the gate.
        let body_cut_off = error.is_response_error() && status.is_some_and(|s| s < 300);
        let retried = !is_final(error)
            && (error.is_timeout_error()
                || error.is_connector_error()
                || body_cut_off
                || status.is_some_and(|s| s >= 500 || s == 429)
                || is_throttling(&what)
                || is_retryable_code(&what));
        let attempt = self.log.count();
        let operation = operation(cfg);
        if retried {
            tracing::info!(attempt, error = %what, "{operation} attempt failed; retrying within the deadline");
        } else {
            tracing::debug!(attempt, error = %what, "{operation} attempt failed");
        }
        self.log.failed(what, status);
        Ok(())
    }
}

/// Failures that would fail the same way again: retrying only burns the deadline.
/// A certificate the trust store rejects comes back, so does a proxy's demand for
/// credentials; an answer over the size bound is not from the service (its length may only
/// show while the body is read). AWS answers 403 before it looks at the call (the
/// credentials, the signature, the clock): the SDK would retry a skewed clock once with a
/// corrected signing time, and the node's clock would then show only as a token refused for
/// its `iat`, instead of AWS's own "Signature expired". Throttling is decided by the status
/// (429) and by the error code (License Manager's RateLimitExceededException, whatever its
/// status), and a code that says to try again (ConflictException) is retried: the SDK would
/// retry none of these by itself.
#[derive(Debug)]
pub struct RetryingWontHelp {
    error_code: fn(&OperationError) -> Option<String>,
}

impl RetryingWontHelp {
    pub fn new(service: &Service) -> Self {
        RetryingWontHelp {
            error_code: service.error_code,
        }
    }
}

/// What to do after a failed attempt, from its HTTP status and error code.
fn retry_action(status: Option<u16>, code: Option<&str>) -> RetryAction {
    let code = code.unwrap_or_default();
    if status == Some(403) {
        RetryAction::RetryForbidden
    } else if status == Some(429) || is_throttling(code) {
        RetryAction::throttling_error()
    } else if is_retryable_code(code) {
        RetryAction::transient_error()
    } else {
        RetryAction::NoActionIndicated
    }
}

impl ClassifyRetry for RetryingWontHelp {
    fn classify_retry(&self, context: &InterceptorContext) -> RetryAction {
        let status = context.response().map(|r| r.status().as_u16());
        match context.output_or_error() {
            Some(Err(error)) if is_final(error) => RetryAction::RetryForbidden,
            Some(Err(error)) => retry_action(
                status,
                error
                    .as_operation_error()
                    .and_then(self.error_code)
                    .as_deref(),
            ),
            _ => RetryAction::NoActionIndicated,
        }
    }

    fn name(&self) -> &'static str {
        "mpgate::RetryingWontHelp"
    }
}

fn is_final(error: &OrchestratorError<OperationError>) -> bool {
    error
        .as_connector_error()
        .is_some_and(|c| is_untrusted_certificate(c) || is_proxy_auth_required(c))
        || (error.is_response_error() && is_over_size_limit(error))
}

fn is_proxy_auth_required(connector: &(dyn std::error::Error + 'static)) -> bool {
    crate::http::error_chain(connector).any(|e| e.is::<crate::http::ProxyAuthRequired>())
}

/// Whether the body outgrew the transport's bound (`http::MAX_ANSWER_BYTES`), declared or not.
fn is_over_size_limit(error: &(dyn std::error::Error + 'static)) -> bool {
    crate::http::error_chain(error).any(|e| e.is::<crate::http::AnswerTooLarge>())
}

fn is_untrusted_certificate(connector: &(dyn std::error::Error + 'static)) -> bool {
    crate::http::error_chain(connector)
        .find_map(|e| e.downcast_ref::<rustls::Error>())
        .is_some_and(|tls| {
            matches!(
                tls,
                rustls::Error::InvalidCertificate(_)
                    | rustls::Error::NoCertificatesPresented
                    | rustls::Error::UnsupportedNameType
            )
        })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn vars(
        pairs: &'static [(&'static str, &'static str)],
    ) -> impl Fn(&'static str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn the_summary_keeps_the_last_answer_a_timeout_came_after() {
        let log = AttemptLog::default();
        let record = |what: &str, answered: bool| {
            log.started();
            log.failed(what.into(), answered.then_some(503));
        };
        record("HTTP 503", true);
        assert_eq!(log.summary(), "1 attempt, last: HTTP 503");
        record("attempt timed out", false);
        assert_eq!(
            log.summary(),
            "2 attempts, last: attempt timed out; the last answer was HTTP 503"
        );
        assert_eq!(AttemptLog::default().summary(), "0 attempts");

        let log = AttemptLog::default();
        log.started();
        log.failed("TLS handshake failed: alert".into(), None);
        log.started();
        log.failed(TIMED_OUT.into(), None);
        assert_eq!(
            log.summary(),
            "2 attempts, last: attempt timed out; the last connection failure was TLS handshake failed: alert"
        );
    }

    #[test]
    fn throttling_and_server_failures_are_transient_and_nothing_else() {
        for (code, status) in [
            ("ThrottlingException", 400),
            ("RateLimitExceededException", 429),
            ("ServerInternalException", 500),
            ("anything", 503),
        ] {
            assert!(is_transient(code, status), "{code}");
        }
        for (code, status) in [
            ("NoEntitlementsAllowedException", 400),
            ("AccessDeniedException", 401),
            ("ValidationException", 400),
            ("RedirectException", 308),
        ] {
            assert!(!is_transient(code, status), "{code}");
        }
    }

    #[test]
    fn retries_are_decided_by_the_error_code_as_well_as_the_status() {
        let throttling = RetryAction::throttling_error();
        // RateLimitExceededException is throttling whatever status carries it.
        assert_eq!(
            retry_action(Some(400), Some("RateLimitExceededException")),
            throttling
        );
        assert_eq!(
            retry_action(Some(429), Some("RateLimitExceededException")),
            throttling
        );
        assert_eq!(retry_action(Some(429), None), throttling);
        assert_eq!(
            retry_action(Some(409), Some("ConflictException")),
            RetryAction::transient_error()
        );
        assert_eq!(
            retry_action(Some(403), Some("ThrottlingException")),
            RetryAction::RetryForbidden
        );
        assert_eq!(
            retry_action(Some(400), Some("ValidationException")),
            RetryAction::NoActionIndicated
        );
        assert!(is_transient("ConflictException", 409));
        assert!(is_transient("RateLimitExceededException", 400));
    }

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

    #[test]
    fn static_credentials_need_a_key_id_and_a_secret() {
        assert!(has_static_credentials(vars(&[
            ("AWS_ACCESS_KEY_ID", "AKID"),
            ("AWS_SECRET_ACCESS_KEY", "s")
        ])));
        assert!(has_static_credentials(vars(&[
            ("AWS_ACCESS_KEY_ID", "AKID"),
            ("SECRET_ACCESS_KEY", "s")
        ])));
        assert!(!has_static_credentials(vars(&[(
            "AWS_ACCESS_KEY_ID",
            "AKID"
        )])));
        assert!(!has_static_credentials(vars(&[
            ("AWS_ACCESS_KEY_ID", " "),
            ("AWS_SECRET_ACCESS_KEY", "s")
        ])));
        assert!(!has_static_credentials(vars(&[
            ("AWS_ACCESS_KEY_ID", "AKID"),
            ("AWS_SECRET_ACCESS_KEY", "")
        ])));
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
