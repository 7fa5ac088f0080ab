//! Owns the retry decisions: which failed attempts are worth another, by status and error code.

use aws_smithy_runtime_api::client::{
    interceptors::context::{Error as OperationError, InterceptorContext},
    orchestrator::OrchestratorError,
    retries::classifiers::{ClassifyRetry, RetryAction},
};

use crate::aws::service::Service;

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

pub fn is_final(error: &OrchestratorError<OperationError>) -> bool {
    error
        .as_connector_error()
        .is_some_and(|c| is_untrusted_certificate(c) || is_proxy_auth_required(c))
        || (error.is_response_error() && is_over_size_limit(error))
}

pub fn is_proxy_auth_required(connector: &(dyn std::error::Error + 'static)) -> bool {
    crate::http::error_chain(connector).any(|e| e.is::<crate::http::ProxyAuthRequired>())
}

/// Whether the body outgrew the transport's bound (`http::MAX_ANSWER_BYTES`), declared or not.
fn is_over_size_limit(error: &(dyn std::error::Error + 'static)) -> bool {
    crate::http::error_chain(error).any(|e| e.is::<crate::http::AnswerTooLarge>())
}

pub fn is_untrusted_certificate(connector: &(dyn std::error::Error + 'static)) -> bool {
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

/// Throttling and server-side failures: worth retrying, and what `allow` may let through.
pub fn is_transient(code: &str, status: u16) -> bool {
    status >= 500 || status == 429 || is_throttling(code) || is_retryable_code(code)
}

/// Error codes whose documentation says to try again, whatever the HTTP status: License
/// Manager's `ConflictException` (CheckInLicense: "Try your request again"), and STS's
/// `IDPCommunicationError` (400: "the error is likely transient", which AWS's license token
/// sample retries).
pub fn is_retryable_code(code: &str) -> bool {
    [
        "InternalServiceErrorException",
        "ServiceUnavailable",
        "ConflictException",
        "IDPCommunicationError",
    ]
    .iter()
    .any(|c| code.starts_with(c))
}

/// Whether an error code (or an attempt's description, which starts with it) is throttling.
pub fn is_throttling(code: &str) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
