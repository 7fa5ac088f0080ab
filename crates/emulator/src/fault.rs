//! The faults the emulator can inject (`--fault NAME`).

use std::fmt;
use std::str::FromStr;

/// One injectable fault. The names (see [`Fault::name`]) are a stable interface: tests use them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer normally.
    None,
    // --- service errors ---
    NotEntitled,
    PlatformNotSupported,
    InvalidProductCode,
    InvalidRegion,
    InvalidPublicKeyVersion,
    DisabledApi,
    InternalError,
    Throttle,
    AccessDenied,
    UnrecognizedClient,
    Http502Html,
    /// A proxy's 403 Forbidden HTML page.
    Http403Html,
    /// A proxy's 407 Proxy Authentication Required HTML page (with `Proxy-Authenticate`).
    Http407Html,
    /// A load balancer's 503 Service Unavailable HTML page.
    Http503Html,
    // --- network ---
    Hang,
    Drop,
    /// Fail the TLS handshake of the connection (or close it at once without `--tls`).
    TlsHandshakeFailure,
    /// Send the success answer (status line, headers, body) one byte per `--trickle-interval`.
    Trickle,
    /// A 200 whose `Content-Length` is the full body, but only half of the body is sent
    /// before the connection is closed (FIN).
    TruncatedBody,
    /// Send the status line and part of the headers, then reset the connection (RST).
    ResetHeaders,
    /// Send the headers and half of the body, then reset the connection (RST).
    ResetBody,
    // --- oversized and mislabelled 200 answers ---
    /// A 200 of `--oversize-bytes` with that `Content-Length`.
    OversizeBody,
    /// A 200 of `--oversize-bytes`, `Transfer-Encoding: chunked`.
    OversizeChunked,
    /// A 200 of `--oversize-bytes` without length, ended by closing the connection.
    OversizeEof,
    /// The valid success answer labelled `Content-Type: text/html`.
    ContentTypeHtml,
    /// The valid success answer labelled `Content-Type: application/json`.
    ContentTypeJson,
    // --- bad tokens (200 answers) ---
    TokenWrongKey,
    TokenAlgNone,
    TokenHs256PublicKey,
    TokenRs256,
    TokenBadSignature,
    TokenWrongNonce,
    TokenWrongProduct,
    TokenWrongVersion,
    TokenVersionString,
    TokenMissingNonce,
    TokenStaleIat,
    TokenFutureIat,
    TokenExpired,
    TokenNoIat,
    TokenOversize,
    TokenGarbage,
    TokenMissing,
    TokenEmpty,
    /// A 200 whose body is an HTML page, as from a captive portal or a misrouted proxy.
    TokenHtmlAnswer,
}

/// Every fault, in the order `--help` lists them.
pub const ALL_FAULTS: &[Fault] = &[
    Fault::None,
    Fault::NotEntitled,
    Fault::PlatformNotSupported,
    Fault::InvalidProductCode,
    Fault::InvalidRegion,
    Fault::InvalidPublicKeyVersion,
    Fault::DisabledApi,
    Fault::InternalError,
    Fault::Throttle,
    Fault::AccessDenied,
    Fault::UnrecognizedClient,
    Fault::Http502Html,
    Fault::Http403Html,
    Fault::Http407Html,
    Fault::Http503Html,
    Fault::Hang,
    Fault::Drop,
    Fault::TlsHandshakeFailure,
    Fault::Trickle,
    Fault::TruncatedBody,
    Fault::ResetHeaders,
    Fault::ResetBody,
    Fault::OversizeBody,
    Fault::OversizeChunked,
    Fault::OversizeEof,
    Fault::ContentTypeHtml,
    Fault::ContentTypeJson,
    Fault::TokenWrongKey,
    Fault::TokenAlgNone,
    Fault::TokenHs256PublicKey,
    Fault::TokenRs256,
    Fault::TokenBadSignature,
    Fault::TokenWrongNonce,
    Fault::TokenWrongProduct,
    Fault::TokenWrongVersion,
    Fault::TokenVersionString,
    Fault::TokenMissingNonce,
    Fault::TokenStaleIat,
    Fault::TokenFutureIat,
    Fault::TokenExpired,
    Fault::TokenNoIat,
    Fault::TokenOversize,
    Fault::TokenGarbage,
    Fault::TokenMissing,
    Fault::TokenEmpty,
    Fault::TokenHtmlAnswer,
];

/// A proxy's HTML error page: HTTP status, extra headers, body.
pub type HtmlPage = (u16, &'static [(&'static str, &'static str)], &'static str);

/// How a service-error fault answers: HTTP status, `__type`, message.
pub struct ServiceError {
    pub status: u16,
    pub error_type: &'static str,
    pub message: &'static str,
}

impl Fault {
    /// The command-line name of the fault.
    pub fn name(self) -> &'static str {
        match self {
            Fault::None => "none",
            Fault::NotEntitled => "not-entitled",
            Fault::PlatformNotSupported => "platform-not-supported",
            Fault::InvalidProductCode => "invalid-product-code",
            Fault::InvalidRegion => "invalid-region",
            Fault::InvalidPublicKeyVersion => "invalid-public-key-version",
            Fault::DisabledApi => "disabled-api",
            Fault::InternalError => "internal-error",
            Fault::Throttle => "throttle",
            Fault::AccessDenied => "access-denied",
            Fault::UnrecognizedClient => "unrecognized-client",
            Fault::Http502Html => "http-502-html",
            Fault::Http403Html => "http-403-html",
            Fault::Http407Html => "http-407-html",
            Fault::Http503Html => "http-503-html",
            Fault::Hang => "hang",
            Fault::Drop => "drop",
            Fault::TlsHandshakeFailure => "tls-handshake-failure",
            Fault::Trickle => "trickle",
            Fault::TruncatedBody => "truncated-body",
            Fault::ResetHeaders => "reset-headers",
            Fault::ResetBody => "reset-body",
            Fault::OversizeBody => "oversize-body",
            Fault::OversizeChunked => "oversize-chunked",
            Fault::OversizeEof => "oversize-eof",
            Fault::ContentTypeHtml => "content-type-html",
            Fault::ContentTypeJson => "content-type-json",
            Fault::TokenWrongKey => "token-wrong-key",
            Fault::TokenAlgNone => "token-alg-none",
            Fault::TokenHs256PublicKey => "token-hs256-public-key",
            Fault::TokenRs256 => "token-rs256",
            Fault::TokenBadSignature => "token-bad-signature",
            Fault::TokenWrongNonce => "token-wrong-nonce",
            Fault::TokenWrongProduct => "token-wrong-product",
            Fault::TokenWrongVersion => "token-wrong-version",
            Fault::TokenVersionString => "token-version-string",
            Fault::TokenMissingNonce => "token-missing-nonce",
            Fault::TokenStaleIat => "token-stale-iat",
            Fault::TokenFutureIat => "token-future-iat",
            Fault::TokenExpired => "token-expired",
            Fault::TokenNoIat => "token-no-iat",
            Fault::TokenOversize => "token-oversize",
            Fault::TokenGarbage => "token-garbage",
            Fault::TokenMissing => "token-missing",
            Fault::TokenEmpty => "token-empty",
            Fault::TokenHtmlAnswer => "token-html-answer",
        }
    }

    /// The error answer of a service-error fault, `None` for the other faults.
    pub fn service_error(self) -> Option<ServiceError> {
        let (status, error_type, message) = match self {
            Fault::NotEntitled => (
                400,
                "CustomerNotEntitledException",
                "Customer is not subscribed to the product.",
            ),
            Fault::PlatformNotSupported => (
                400,
                "PlatformNotSupportedException",
                "AWS Marketplace does not support metering usage from the underlying platform. Currently, Amazon ECS, Amazon EKS, and AWS Fargate are supported.",
            ),
            Fault::InvalidProductCode => (
                400,
                "InvalidProductCodeException",
                "The product code passed does not match the product code used for publishing the product.",
            ),
            Fault::InvalidRegion => (
                400,
                "InvalidRegionException",
                "RegisterUsage must be called in the same AWS Region the ECS task was launched in.",
            ),
            Fault::InvalidPublicKeyVersion => (
                400,
                "InvalidPublicKeyVersionException",
                "Public Key version is invalid.",
            ),
            Fault::DisabledApi => (
                400,
                "DisabledApiException",
                "The API is disabled in the Region.",
            ),
            Fault::InternalError => (
                500,
                "InternalServiceErrorException",
                "An internal error has occurred. Retry your request.",
            ),
            Fault::Throttle => (400, "ThrottlingException", "Rate exceeded"),
            Fault::AccessDenied => (
                400,
                "AccessDeniedException",
                "User: arn:aws:sts::123456789012:assumed-role/task/abc is not authorized to perform: aws-marketplace:RegisterUsage because no identity-based policy allows the aws-marketplace:RegisterUsage action",
            ),
            // 403, as the emulator's own credential check answers it (sigv4.rs).
            Fault::UnrecognizedClient => (
                403,
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            ),
            _ => return None,
        };
        Some(ServiceError {
            status,
            error_type,
            message,
        })
    }

    /// Whether the fault acts on connections (before any request) rather than on calls.
    pub fn is_connection_fault(self) -> bool {
        self == Fault::TlsHandshakeFailure
    }

    /// Whether the fault needs the raw connection: the emulator then serves every connection
    /// with its own minimal HTTP/1.1 code instead of hyper, to write malformed answers.
    pub fn is_raw(self) -> bool {
        matches!(
            self,
            Fault::Trickle
                | Fault::TruncatedBody
                | Fault::ResetHeaders
                | Fault::ResetBody
                | Fault::OversizeBody
                | Fault::OversizeChunked
                | Fault::OversizeEof
        )
    }

    /// A proxy's HTML error page: (status, extra headers, body).
    pub fn html_page(self) -> Option<HtmlPage> {
        Some(match self {
            Fault::Http502Html => (502, &[], "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n"),
            Fault::Http403Html => (403, &[], "<!DOCTYPE html>\n<html><head><title>ERROR: The requested URL could not be retrieved</title></head>\n<body><h1>Access Denied</h1><p>Access control configuration prevents your request from being allowed at this time. Please contact your service provider if you feel this is incorrect.</p><hr><p>Generated by proxy.corp.example (squid)</p></body></html>\n"),
            Fault::Http407Html => (407, &[("proxy-authenticate", "Basic realm=\"corporate proxy\"")], "<!DOCTYPE html>\n<html><head><title>ERROR: Cache Access Denied</title></head>\n<body><h1>Proxy Authentication Required</h1><p>Sorry, you are not currently allowed to request this page until you have authenticated yourself.</p><hr><p>Generated by proxy.corp.example (squid)</p></body></html>\n"),
            Fault::Http503Html => (503, &[("retry-after", "1")], "<html><body><h1>503 Service Unavailable</h1>\nNo server is available to handle this request.\n</body></html>\n"),
            _ => return None,
        })
    }

    /// Whether the fault changes the token of an otherwise successful answer.
    pub fn is_token_fault(self) -> bool {
        self.name().starts_with("token-")
    }

    /// What the fault does, for `--list-faults`.
    pub fn kind(self) -> &'static str {
        match self {
            Fault::None => "none",
            _ if self.service_error().is_some() => "service-error",
            _ if self.html_page().is_some() => "html-page",
            _ if self.is_connection_fault() => "connection",
            _ if self.is_raw() => "raw",
            _ if self.is_token_fault() => "token",
            Fault::ContentTypeHtml | Fault::ContentTypeJson => "content-type",
            Fault::Hang | Fault::Drop => "network",
            _ => "other",
        }
    }

    /// One line of `--list-faults`: `{"name","kind"}`, with `status` and `errorType` for
    /// service errors and `status` for HTML pages.
    pub fn listing(self) -> serde_json::Value {
        let mut line = serde_json::json!({"name": self.name(), "kind": self.kind()});
        if let Some(e) = self.service_error() {
            line["status"] = e.status.into();
            line["errorType"] = e.error_type.into();
        } else if let Some((status, _, _)) = self.html_page() {
            line["status"] = status.into();
        }
        line
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Fault {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        by_name(ALL_FAULTS, Fault::name, s, "fault")
    }
}

/// The entry of `all` that `name` calls `s` (the `FromStr` of a list of faults); the error
/// calls it an unknown `what`.
pub fn by_name<T: Copy>(
    all: &[T],
    name: fn(T) -> &'static str,
    s: &str,
    what: &str,
) -> Result<T, String> {
    all.iter()
        .copied()
        .find(|f| name(*f) == s)
        .ok_or_else(|| format!("unknown {what} {s:?} (see --help for the list)"))
}

/// Splits the `FAULT[@AFTER][*COUNT]` part of a per-operation fault spec (`--license-fault`,
/// `--sts-fault`, `--meter-fault`): the fault's name, how many eligible calls pass first
/// (default 0) and how many get the fault (default: all). `spec` is the whole value, for
/// the error.
pub fn schedule<'a>(rest: &'a str, spec: &str) -> Result<(&'a str, u64, Option<u64>), String> {
    let (rest, count) = match rest.split_once('*') {
        Some((r, c)) => (
            r,
            Some(c.parse::<u64>().ok().filter(|c| *c >= 1).ok_or_else(|| {
                format!("invalid COUNT {c:?} in {spec:?} (expected an integer >= 1)")
            })?),
        ),
        None => (rest, None),
    };
    let (fault, after) = match rest.split_once('@') {
        Some((f, a)) => (
            f,
            a.parse::<u64>().map_err(|_| {
                format!("invalid AFTER {a:?} in {spec:?} (expected an integer >= 0)")
            })?,
        ),
        None => (rest, 0),
    };
    Ok((fault, after, count))
}

/// Whether the `n`th eligible call (from 1) gets a fault scheduled with `schedule`'s AFTER
/// and COUNT.
pub fn scheduled(after: u64, count: Option<u64>, n: u64) -> bool {
    n > after && count.is_none_or(|c| n <= after.saturating_add(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for f in ALL_FAULTS {
            assert_eq!(f.name().parse::<Fault>(), Ok(*f));
        }
        assert!("nope".parse::<Fault>().is_err());
    }

    #[test]
    fn every_fault_has_a_known_kind() {
        for f in ALL_FAULTS {
            assert_ne!(f.kind(), "other", "{f}");
            let line = f.listing();
            assert_eq!(line["name"], f.name());
            if f.kind() == "service-error" {
                assert!(line["errorType"].as_str().unwrap().ends_with("Exception"));
            }
        }
    }
}
