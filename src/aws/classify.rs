//! Owns what a failure means: the service's own answer refused, the path failing, and the advice.

use aws_smithy_runtime_api::client::{orchestrator::HttpResponse, result::SdkError};

use crate::aws::client::Scope;
use crate::aws::result::{causes, CallError};
use crate::aws::retry::{
    is_proxy_auth_required, is_throttling, is_transient, is_untrusted_certificate,
};
use crate::aws::send::{deadline_passed, Call};
use crate::aws::service::Service;

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
    (call, scope): (&Call, &Scope),
    context: &str,
) -> CallError {
    let name = service.name;
    let (attempts, deadline) = (&call.attempts, &call.deadline);
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
    call: &Call,
) -> CallError {
    let name = service.name;
    let (attempts, deadline) = (&call.attempts, &call.deadline);
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
