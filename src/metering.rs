//! Owns the RegisterUsage call: SDK set-up, credentials, retries within the deadline, error meaning.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_config::{retry::RetryConfig, timeout::TimeoutConfig, BehaviorVersion};
use aws_credential_types::credential_feature::AwsCredentialFeature;
use aws_credential_types::provider::ProvideCredentials;
use aws_sdk_marketplacemetering::{
    config::{
        endpoint::{DefaultResolver, Params, ResolveEndpoint},
        IdentityCache, SharedHttpClient, StalledStreamProtectionConfig,
    },
    error::{ProvideErrorMetadata, SdkError},
    operation::register_usage::RegisterUsageError,
};
use aws_smithy_runtime_api::{
    box_error::BoxError,
    client::{
        interceptors::{
            context::{
                BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextRef,
                InterceptorContext,
            },
            Intercept,
        },
        orchestrator::OrchestratorError,
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
/// The IAM action RegisterUsage needs, named in access-denied messages.
pub const IAM_ACTION: &str = "aws-marketplace:RegisterUsage";

/// A verified-to-be-well-formed answer from the service (the token is checked by `token`).
pub struct Registration {
    pub signature: Option<String>,
    pub key_rotation: Option<String>,
}

/// Why the service did not give a token; each variant is one exit code (`exit`).
#[derive(Debug, thiserror::Error)]
pub enum MeteringError {
    #[error("the buyer is not entitled to product {product_code} (CustomerNotEntitledException): subscribe to it in AWS Marketplace with the AWS account that runs this container")]
    NotEntitled { product_code: String },
    #[error("AWS Marketplace does not support this platform (PlatformNotSupportedException): run product {product_code} on Amazon ECS, Amazon EKS or AWS Fargate, with the ECS task's IAM role or, on EKS, an IAM role through IRSA; long-term IAM user keys, EKS Pod Identity and the node's role are refused")]
    PlatformNotSupported { product_code: String },
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Unreachable(String),
    #[error("the service's success answer is unusable ({0}): this endpoint is not the AWS Marketplace Metering service, or something in between altered the answer")]
    BadAnswer(String),
    #[error("no AWS region: set AWS_REGION to the region this task or pod runs in")]
    NoRegion,
    #[error("this mpgate build is pinned to the AWS Metering endpoint, but {0}")]
    PinnedEndpoint(String),
    #[error("no AWS credentials ({0}): give the ECS task an IAM task role, or the EKS pod's service account an IAM role through IRSA (AWS Marketplace accepts no other identity on EKS)")]
    NoCredentials(String),
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

/// Calls RegisterUsage once (with the SDK's retries) and returns the raw answer; `record`
/// gets the attempts, the last request ID and any warning whatever the outcome.
pub async fn register_usage(
    config: &Config,
    nonce: &str,
    started: Instant,
    record: &mut CallRecord,
) -> Result<Registration, MeteringError> {
    let deadline_text = humantime(config.timeout);
    let http = crate::http::client(config.extra_roots.clone());
    let load = async {
        let sdk = load_sdk_config(config, http.sdk.clone()).await;
        let region = sdk.region().cloned().ok_or(MeteringError::NoRegion)?;
        let endpoint = if config.pinned {
            Some(pinned_endpoint(&sdk, &region, config.endpoint_url.as_deref()).await?)
        } else {
            endpoint_of(&sdk, config.endpoint_url.as_deref(), true).await
        };
        // The Metering connection opens while the credentials load and the SDK prepares the
        // call (a credential fetch and the TCP and TLS handshakes are all round trips).
        if let Some(endpoint) = &endpoint {
            http.preconnect(endpoint, config.attempt_timeout.min(config.timeout));
            // Lets the connection start before the work below, which would not yield.
            tokio::task::yield_now().await;
        }
        let provider = sdk
            .credentials_provider()
            .ok_or_else(|| MeteringError::NoCredentials("no credential provider".into()))?;
        // Resolve credentials once, up front: a missing role fails fast with exit 15 instead
        // of surfacing as a dispatch failure, and the call below never fetches them again.
        let credentials = provider
            .provide_credentials()
            .await
            .map_err(|e| MeteringError::NoCredentials(causes(&e)))?;
        Ok((sdk, region, credentials, endpoint))
    };
    let (sdk, region, credentials, endpoint) = match tokio::time::timeout(config.timeout, load).await {
        Ok(loaded) => loaded?,
        Err(_) => return Err(MeteringError::Unreachable(format!(
            "no answer within the {deadline_text} deadline while loading the AWS configuration and credentials: check the credential source is reachable (IMDS, ECS or EKS credential endpoint, STS), or raise MPGATE_TIMEOUT"
        ))),
    };
    tracing::debug!(region = %region, access_key_id = %credentials.access_key_id(), "credentials loaded");
    let features = credentials
        .get_property::<Vec<AwsCredentialFeature>>()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if let Some(warning) = identity_warning(features, |name| std::env::var(name).ok()) {
        tracing::warn!("{warning}");
        record.warnings.push(warning);
    }
    // Once more, for an early TLS connection to send its ClientHello if TCP is up by now.
    tokio::task::yield_now().await;

    let attempts = Arc::new(AttemptLog::default());
    let mut builder = aws_sdk_marketplacemetering::config::Builder::from(&sdk)
        // Resolved above, once: there is nothing for an identity cache to refresh.
        .credentials_provider(credentials)
        .identity_cache(IdentityCache::no_cache())
        // The answer is at most MAX_ANSWER_BYTES and every attempt has a timeout; a
        // throughput monitor on the body would only add a timer per attempt.
        .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
        .interceptor(AttemptObserver(attempts.clone()))
        .retry_classifier(RetryingWontHelp);
    // A pinned build names its endpoint programmatically, which the SDK puts above every
    // configured one; an ordinary build only when --endpoint-url was given.
    let programmatic = if config.pinned {
        endpoint
    } else {
        config.endpoint_url.clone()
    };
    if let Some(url) = programmatic {
        builder = builder.endpoint_url(url);
    }
    // Whatever part of the deadline loading took, the call gets only the rest.
    let remaining = config
        .timeout
        .saturating_sub(started.elapsed())
        .max(Duration::from_millis(1));
    builder = builder.timeout_config(timeouts(config, remaining));
    let client = aws_sdk_marketplacemetering::Client::from_conf(builder.build());

    let call = client
        .register_usage()
        .product_code(&config.product_code)
        .public_key_version(config.public_key_version)
        .nonce(nonce)
        .send();
    // The SDK's operation timeout ends the call at the deadline; this backstop only keeps
    // the gate from hanging should the SDK ever overrun it.
    let result = tokio::time::timeout(remaining + DEADLINE_BACKSTOP, call).await;
    {
        let log = attempts.lock();
        record.attempts = log.count;
        record.request_id = log.request_id.clone();
    }
    let Ok(result) = result else {
        return Err(deadline_passed(&deadline_text, &attempts.summary()));
    };
    // The client is used once and the process ends or execs next: tearing down its config
    // layers, plugins and connection pool would be 60 k instructions of work the kernel
    // does anyway (the open connection closes when the runtime stops).
    std::mem::forget(client);
    std::mem::forget(sdk);
    match result {
        Ok(out) => Ok(Registration {
            signature: out.signature,
            key_rotation: out
                .public_key_rotation_timestamp
                .and_then(|t| t.fmt(aws_smithy_types::date_time::Format::DateTime).ok()),
        }),
        Err(e) => Err(classify(
            e,
            config,
            region.as_ref(),
            &attempts,
            &deadline_text,
        )),
    }
}

/// Where EKS Pod Identity serves credentials: its agent's link-local address, and the token
/// file the pod identity webhook mounts.
const POD_IDENTITY_HOSTS: [&str; 2] = ["169.254.170.23", "[fd00:ec2::23]"];
const POD_IDENTITY_TOKEN_DIR: &str = "/var/run/secrets/pods.eks.amazonaws.com/";

/// AWS Marketplace accepts RegisterUsage on EKS only when it is signed with IRSA credentials:
/// EKS Pod Identity and the node's instance profile get PlatformNotSupportedException (or
/// work today and stop). Says so, naming the fix, for the credentials the SDK resolved
/// (`features`, which its providers record) and the environment they came from.
fn identity_warning(
    features: &[AwsCredentialFeature],
    var: impl Fn(&'static str) -> Option<String>,
) -> Option<String> {
    const FIX: &str = "AWS Marketplace accepts RegisterUsage on Amazon EKS only with IRSA credentials: give the pod's service account an IAM role through IRSA (eks.amazonaws.com/role-arn, policy AWSMarketplaceMeteringRegisterUsage)";
    if features.contains(&AwsCredentialFeature::CredentialsHttp) {
        let host = var("AWS_CONTAINER_CREDENTIALS_FULL_URI")
            .and_then(|uri| uri.parse::<hyper::Uri>().ok())
            .and_then(|uri| uri.authority().map(|a| a.host().to_owned()));
        let pod_identity = host.is_some_and(|h| POD_IDENTITY_HOSTS.contains(&h.as_str()))
            || var("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
                .is_some_and(|file| file.starts_with(POD_IDENTITY_TOKEN_DIR));
        if pod_identity {
            return Some(format!("the credentials come from EKS Pod Identity; {FIX}"));
        }
    }
    let on_kubernetes = var("KUBERNETES_SERVICE_HOST").is_some_and(|h| !h.is_empty());
    if on_kubernetes && features.contains(&AwsCredentialFeature::CredentialsImds) {
        return Some(format!(
            "the credentials come from the node's instance profile (IMDS); {FIX}"
        ));
    }
    None
}

/// What to do about a credentials error AWS answers before it looks at the request (always
/// final: the same signature fails the same way on a retry); `None` for other errors.
fn credential_advice(code: &str, message: &str) -> Option<&'static str> {
    Some(match code {
        "InvalidSignatureException" if message.contains("Signature expired") => {
            "the node's clock is more than 15 minutes off AWS's: fix the node's time synchronisation (NTP, chrony)"
        }
        "InvalidSignatureException" | "SignatureDoesNotMatch" | "IncompleteSignatureException" => {
            "the signature does not match the secret key AWS has: check AWS_SECRET_ACCESS_KEY, or that no proxy alters the request"
        }
        "ExpiredTokenException" => {
            "the session token has expired: the task role or IRSA renews it; if AWS_SESSION_TOKEN is set by hand, remove it and use the role"
        }
        "UnrecognizedClientException" | "InvalidClientTokenId" => {
            "AWS does not know the access key or session token: use the ECS task's IAM role, or an IAM role through IRSA on EKS, not copied keys"
        }
        "MissingAuthenticationTokenException" => {
            "the request carried no credentials: give the ECS task an IAM role, or the EKS pod's service account one through IRSA"
        }
        _ => return None,
    })
}

/// A proxy's 407, to a request (plain HTTP) or to the `CONNECT` of an HTTPS tunnel.
fn proxy_wants_credentials() -> MeteringError {
    MeteringError::Refused(
        "the proxy asks for credentials (HTTP 407 Proxy Authentication Required): put them in the proxy URL, e.g. HTTPS_PROXY=http://user:password@proxy:3128".into(),
    )
}

fn deadline_passed(deadline: &str, tried: &str) -> MeteringError {
    MeteringError::Unreachable(format!(
        "no entitlement answer within the {deadline} deadline ({tried}): check the network path to the Metering endpoint (VPC endpoint, NAT, proxy), or raise MPGATE_TIMEOUT"
    ))
}

/// A pinned build's endpoint: the compiled-in URL, else the SDK's rules for the region (its
/// standard, FIPS or dual-stack host), never a configured one. The region must be a plain
/// region name: it becomes a label of the host name.
async fn pinned_endpoint(
    sdk: &aws_config::SdkConfig,
    region: &aws_config::Region,
    compiled_in: Option<&str>,
) -> Result<String, MeteringError> {
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
        return Err(MeteringError::PinnedEndpoint(format!(
            "the region {name:?} is not an AWS region name such as us-east-1: let the platform set AWS_REGION"
        )));
    }
    endpoint_of(sdk, None, false).await.ok_or_else(|| {
        MeteringError::PinnedEndpoint(format!(
            "the SDK has no Metering endpoint for region {name} with these FIPS and dual-stack settings (AWS_USE_FIPS_ENDPOINT, AWS_USE_DUALSTACK_ENDPOINT)"
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
) -> Option<String> {
    let url = given.map(str::to_owned).or_else(|| {
        if !configured {
            return None;
        }
        if sdk.get_origin("endpoint_url").is_client_config() {
            return sdk.endpoint_url().map(str::to_owned);
        }
        let key = ServiceConfigKey::builder()
            .service_id("Marketplace Metering")
            .env("AWS_ENDPOINT_URL")
            .profile("endpoint_url")
            .build()
            .ok()?;
        sdk.service_config()
            .and_then(|service| service.load_config(key))
            .or_else(|| sdk.endpoint_url().map(str::to_owned))
    });
    let params = Params::builder()
        .set_region(sdk.region().map(|r| r.as_ref().to_owned()))
        .set_use_fips(sdk.use_fips())
        .set_use_dual_stack(sdk.use_dual_stack())
        .set_endpoint(url)
        .build()
        .ok()?;
    let resolver = DefaultResolver::new();
    let endpoint = ResolveEndpoint::resolve_endpoint(&resolver, &params)
        .await
        .ok()?;
    Some(endpoint.url().to_owned())
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
        .timeout_config(timeouts(config, config.timeout));
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

fn timeouts(config: &Config, total: Duration) -> TimeoutConfig {
    let attempt = config.attempt_timeout.min(total);
    TimeoutConfig::builder()
        .connect_timeout(attempt)
        .read_timeout(attempt)
        .operation_attempt_timeout(attempt)
        .operation_timeout(total)
        .build()
}

/// Maps the SDK's error to what happened and what the operator should do.
fn classify(
    error: SdkError<RegisterUsageError, aws_smithy_runtime_api::http::Response>,
    config: &Config,
    region: &str,
    attempts: &AttemptLog,
    deadline: &str,
) -> MeteringError {
    let product = &config.product_code;
    let version = config.public_key_version;
    let tried = attempts.summary();
    match &error {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let err = service.err();
            let code = err.code().unwrap_or("unknown error");
            let message = err.message().unwrap_or("");
            match err {
                RegisterUsageError::CustomerNotEntitledException(_) => {
                    MeteringError::NotEntitled { product_code: product.clone() }
                }
                RegisterUsageError::PlatformNotSupportedException(_) => {
                    MeteringError::PlatformNotSupported { product_code: product.clone() }
                }
                RegisterUsageError::InvalidProductCodeException(_) => MeteringError::Refused(format!(
                    "AWS Marketplace does not know product code {product} (InvalidProductCodeException): set MPGATE_PRODUCT_CODE to the product code from the AWS Marketplace Management Portal"
                )),
                RegisterUsageError::InvalidPublicKeyVersionException(_) => MeteringError::Refused(format!(
                    "public key version {version} is not valid for product {product} (InvalidPublicKeyVersionException): set MPGATE_PUBLIC_KEY_VERSION to the version AWS Marketplace gave you with the key"
                )),
                RegisterUsageError::InvalidRegionException(_) => MeteringError::Refused(format!(
                    "RegisterUsage refused region {region} for product {product} (InvalidRegionException): the call must go to the region the ECS task or EKS pod runs in; let the platform set AWS_REGION (ECS and the EKS IRSA webhook do) instead of setting it yourself"
                )),
                RegisterUsageError::DisabledApiException(_) => MeteringError::Refused(format!(
                    "the RegisterUsage API is disabled for product {product} (DisabledApiException): contact AWS Marketplace Seller Operations"
                )),
                _ if is_transient(code, status) => MeteringError::Unreachable(format!(
                    "the Metering service kept failing ({code}, HTTP {status}) {tried} before the {deadline} deadline: retry later, or raise MPGATE_TIMEOUT"
                )),
                _ if code.contains("AccessDenied") => MeteringError::Refused(format!(
                    "the credentials may not call {IAM_ACTION} ({code}): allow that action in the task role or pod's IAM role (see deploy/iam-policy.json); product {product}, key version {version}"
                )),
                _ => MeteringError::Refused(match credential_advice(code, message) {
                    Some(advice) => format!("AWS rejected the credentials ({code}: {message}): {advice}"),
                    None => format!(
                        "the Metering service refused the request ({code}, HTTP {status}: {message}) for product {product}, key version {version}"
                    ),
                }),
            }
        }
        SdkError::TimeoutError(_) if attempts.last().is_some_and(|l| l.starts_with("Throttling")) => {
            MeteringError::Unreachable(format!(
                "AWS Marketplace throttled every attempt until the {deadline} deadline ({tried}): many tasks may be starting at once; raise MPGATE_TIMEOUT so the jittered retries can spread out"
            ))
        }
        SdkError::TimeoutError(_) => deadline_passed(deadline, &tried),
        SdkError::ResponseError(response) if response.raw().status().is_success() => {
            MeteringError::BadAnswer(causes(&error))
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
        SdkError::ResponseError(response) if response.raw().status().is_client_error() => MeteringError::Refused(format!(
            "HTTP {} from something that is not the Metering service (the answer is not AWS JSON): a proxy or firewall refuses the request; allow the Metering endpoint through it",
            response.raw().status().as_u16()
        )),
        SdkError::DispatchFailure(failure)
            if failure
                .as_connector_error()
                .is_some_and(|c| is_untrusted_certificate(c)) =>
        {
            MeteringError::Unreachable(format!(
                "the Metering endpoint's TLS certificate is not trusted ({}): if a proxy inspects TLS, add its CA with SSL_CERT_FILE or SSL_CERT_DIR; otherwise check the endpoint URL",
                attempts.last().unwrap_or_default()
            ))
        }
        SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => MeteringError::Unreachable(format!(
            "cannot reach the Metering service: {} ({tried}): check the network path to the endpoint (VPC endpoint, NAT gateway, proxy)",
            causes(&error)
        )),
        _ => MeteringError::Refused(format!("the request could not be made: {}", causes(&error))),
    }
}

/// An error and its sources on one line, without the SDK's Debug dump of the raw response.
fn causes(error: &dyn std::error::Error) -> String {
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

/// Throttling and server-side failures: worth retrying, and what `allow` may let through.
fn is_transient(code: &str, status: u16) -> bool {
    status >= 500
        || status == 429
        || matches!(
            code,
            "ThrottlingException"
                | "Throttling"
                | "TooManyRequestsException"
                | "RequestLimitExceeded"
                | "InternalServiceErrorException"
                | "ServiceUnavailable"
        )
}

/// Counts attempts and remembers the last failure, for the final message and the logs.
#[derive(Debug, Default)]
struct AttemptLog {
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
}

impl AttemptLog {
    /// Counts an attempt starting; returns its number.
    fn started(&self) -> u32 {
        let mut attempts = self.lock();
        attempts.count += 1;
        attempts.count
    }

    /// Records how the current attempt failed; `answered`: with an HTTP status.
    fn failed(&self, what: String, answered: bool) {
        let mut attempts = self.lock();
        if answered {
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

    fn last(&self) -> Option<String> {
        self.lock().last.clone()
    }

    fn summary(&self) -> String {
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

#[derive(Debug)]
struct AttemptObserver(Arc<AttemptLog>);

impl Intercept for AttemptObserver {
    fn name(&self) -> &'static str {
        "mpgate::AttemptObserver"
    }

    fn read_before_attempt(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let attempt = self.0.started();
        tracing::debug!(attempt, "calling RegisterUsage");
        Ok(())
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(id) = context
            .response()
            .and_then(|r| r.headers().get("x-amzn-requestid"))
            // A request ID is short and printable; anything else is not AWS's.
            .filter(|id| id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()))
        {
            self.0.lock().request_id = Some(id.to_owned());
        }
        let Some(Err(error)) = context.output_or_error() else {
            return Ok(());
        };
        let status = context.response().map(|r| r.status().as_u16());
        let what = if let Some(code) = error
            .as_operation_error()
            .and_then(|e| e.downcast_ref::<RegisterUsageError>())
            .and_then(|e| e.code())
        {
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
                || what.starts_with("Throttling"));
        let attempt = self.0.count();
        if retried {
            tracing::info!(attempt, error = %what, "RegisterUsage attempt failed; retrying within the deadline");
        } else {
            tracing::debug!(attempt, error = %what, "RegisterUsage attempt failed");
        }
        self.0.failed(what, status.is_some());
        Ok(())
    }
}

/// `30s`, `1500ms`: how durations are written in mpgate's messages and flags.
pub fn humantime(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Failures that would fail the same way again: retrying only burns the deadline.
/// A certificate the trust store rejects comes back, so does a proxy's demand for
/// credentials; an answer over the size bound is not from the Metering service (its length
/// may only show while the body is read). AWS answers 403 before it looks at the call (the
/// credentials, the signature, the clock): the SDK would retry a skewed clock once with a
/// corrected signing time, and the node's clock would then show only as a token refused for
/// its `iat`, instead of AWS's own "Signature expired".
#[derive(Debug)]
struct RetryingWontHelp;

impl ClassifyRetry for RetryingWontHelp {
    fn classify_retry(&self, context: &InterceptorContext) -> RetryAction {
        let forbidden_by_aws = context
            .response()
            .is_some_and(|r| r.status().as_u16() == 403);
        match context.output_or_error() {
            Some(Err(error)) if forbidden_by_aws || is_final(error) => RetryAction::RetryForbidden,
            _ => RetryAction::NoActionIndicated,
        }
    }

    fn name(&self) -> &'static str {
        "mpgate::RetryingWontHelp"
    }
}

fn is_final(
    error: &OrchestratorError<aws_smithy_runtime_api::client::interceptors::context::Error>,
) -> bool {
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
mod tests {
    use super::*;

    fn vars(
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
            log.failed(what.into(), answered);
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
        log.failed("TLS handshake failed: alert".into(), false);
        log.started();
        log.failed(TIMED_OUT.into(), false);
        assert_eq!(
            log.summary(),
            "2 attempts, last: attempt timed out; the last connection failure was TLS handshake failed: alert"
        );
    }

    #[tokio::test]
    async fn the_early_connection_goes_where_the_sdk_sends_the_call() {
        let sdk = |fips| {
            aws_config::SdkConfig::builder()
                .region(aws_config::Region::new("eu-west-1"))
                .use_fips(fips)
                .behavior_version(BehaviorVersion::latest())
                .build()
        };
        assert_eq!(
            endpoint_of(&sdk(false), None, true).await.as_deref(),
            Some("https://metering.marketplace.eu-west-1.amazonaws.com")
        );
        assert_eq!(
            endpoint_of(&sdk(true), None, true).await.as_deref(),
            Some("https://metering.marketplace-fips.eu-west-1.amazonaws.com")
        );
        assert_eq!(
            endpoint_of(&sdk(false), Some("http://127.0.0.1:9"), true)
                .await
                .as_deref(),
            Some("http://127.0.0.1:9")
        );
        // The SDK refuses FIPS with a custom endpoint; the call will say so, nothing opens.
        assert_eq!(
            endpoint_of(&sdk(true), Some("http://127.0.0.1:9"), true).await,
            None
        );
    }

    #[tokio::test]
    async fn a_pinned_endpoint_comes_from_the_rules_for_a_plain_region_only() {
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
            pinned_endpoint(&sdk, sdk.region().unwrap(), None).await
        };
        assert_eq!(
            pinned("eu-west-1").await.unwrap(),
            "https://metering.marketplace.eu-west-1.amazonaws.com"
        );
        assert_eq!(
            pinned("us-gov-west-1").await.unwrap(),
            "https://metering.marketplace.us-gov-west-1.amazonaws.com"
        );
        // A dotted "region" would put the buyer's labels into the host name.
        for region in [
            "x.execute-api.us-east-1",
            "eu-west-1.",
            "evil",
            "EU-WEST-1",
            "eu--1",
        ] {
            assert!(
                matches!(pinned(region).await, Err(MeteringError::PinnedEndpoint(_))),
                "{region}"
            );
        }
        // The compiled-in URL wins over everything.
        let sdk = sdk("eu-west-1");
        assert_eq!(
            pinned_endpoint(
                &sdk,
                sdk.region().unwrap(),
                Some("https://metering.internal")
            )
            .await
            .unwrap(),
            "https://metering.internal"
        );
    }

    #[test]
    fn eks_pod_identity_and_the_node_role_get_a_warning_naming_irsa() {
        use AwsCredentialFeature::{
            CredentialsHttp, CredentialsImds, CredentialsStsAssumeRoleWebId,
        };
        type Vars = &'static [(&'static str, &'static str)];
        let warn =
            |features: &[AwsCredentialFeature], set: Vars| identity_warning(features, vars(set));
        const K8S: Vars = &[("KUBERNETES_SERVICE_HOST", "10.0.0.1")];
        let pod_identity: [Vars; 3] = [
            &[(
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "http://169.254.170.23/v1/credentials",
            )],
            &[(
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "http://[fd00:ec2::23]/v1/credentials",
            )],
            &[(
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount/eks-pod-identity-token",
            )],
        ];
        for set in pod_identity {
            let w = warn(&[CredentialsHttp], set).unwrap_or_else(|| panic!("{set:?}"));
            assert!(w.contains("EKS Pod Identity") && w.contains("IRSA"), "{w}");
        }
        let w = warn(&[CredentialsImds], K8S).unwrap();
        assert!(
            w.contains("node's instance profile") && w.contains("IRSA"),
            "{w}"
        );
        // What AWS accepts: IRSA on EKS, the task role on ECS (169.254.170.2), IMDS off EKS.
        assert_eq!(warn(&[CredentialsStsAssumeRoleWebId], K8S), None);
        let ecs: Vars = &[(
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "/v2/credentials/x",
        )];
        assert_eq!(warn(&[CredentialsHttp], ecs), None);
        assert_eq!(warn(&[CredentialsImds], &[]), None);
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
}
