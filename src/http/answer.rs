//! Owns what comes back: the answer's size bound, and failures named and classified as the SDK's connector does.

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::{result::ConnectorError, retries::ErrorKind};
use aws_smithy_types::body::SdkBody;

/// The largest answer mpgate reads from any server: the Metering call, and the credential
/// endpoints (ECS and EKS container credentials, STS, IMDS) the SDK asks through this client.
/// Real answers are under 4 KiB; past this bound, it is not the AWS service answering.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Classifies a failed request as the SDK's own connector does, so retries are the same:
/// connection failures, resets and cut-off answers are I/O (retried), timeouts are timeouts.
pub fn connector_error(error: hyper_util::client::legacy::Error) -> ConnectorError {
    type Make = fn(aws_smithy_runtime_api::box_error::BoxError) -> ConnectorError;
    let has_io_error = error_chain(&error).any(|e| e.is::<std::io::Error>());
    if error_chain(&error).any(|e| e.is::<rustls::Error>()) {
        return ConnectorError::io(Box::new(TlsHandshakeFailed(error)));
    }
    let hyper = error_chain(&error).find_map(|e| e.downcast_ref::<hyper::Error>());
    let make: Make = match hyper {
        Some(h) if h.is_timeout() => ConnectorError::timeout,
        Some(h) if h.is_user() => ConnectorError::user,
        Some(h) if h.is_closed() || h.is_canceled() || has_io_error => ConnectorError::io,
        Some(h) if h.is_incomplete_message() => {
            |e| ConnectorError::other(e, Some(ErrorKind::TransientError))
        }
        Some(_) => |e| ConnectorError::other(e, None),
        None if error.is_connect() || has_io_error => ConnectorError::io,
        None => |e| ConnectorError::other(e, None),
    };
    make(error.into())
}

/// Whether a failed request never left: the connection (TCP, the proxy's tunnel, TLS) could
/// not be made, so the service cannot have processed it. Anything else (a reset, an answer
/// cut off) may have been processed.
pub fn never_sent(error: &(dyn std::error::Error + 'static)) -> bool {
    error_chain(error).any(|e| {
        e.is::<TlsHandshakeFailed>()
            || e.downcast_ref::<hyper_util::client::legacy::Error>()
                .is_some_and(|h| h.is_connect())
    })
}

/// Lets the SDK close a connection after a failed attempt (a 5xx, a timeout) instead of
/// reusing it, as its own connector does: the SDK asks the request for the connection, and
/// without one it logs an ERROR ("no connection was found") on every retry.
pub fn capture_for_poisoning(request: &mut hyper::Request<SdkBody>) {
    use aws_smithy_runtime_api::client::connection::{CaptureSmithyConnection, ConnectionMetadata};
    let Some(smithy) = request
        .extensions()
        .get::<CaptureSmithyConnection>()
        .cloned()
    else {
        return;
    };
    let captured = hyper_util::client::legacy::connect::capture_connection(request);
    smithy.set_connection_retriever(move || {
        let proxied = captured.connection_metadata().as_ref()?.is_proxied();
        let captured = captured.clone();
        let poison = move || {
            if let Some(connected) = captured.connection_metadata().as_ref() {
                connected.poison();
            }
        };
        Some(
            ConnectionMetadata::builder()
                .proxied(proxied)
                .poison_fn(poison)
                .build(),
        )
    });
}

/// An answer's body as the SDK reads it, failing with [`AnswerTooLarge`] past
/// [`MAX_ANSWER_BYTES`] (declared or not), so no server can make mpgate buffer more.
pub fn bounded(body: hyper::body::Incoming, from: String) -> SdkBody {
    use http_body_util::BodyExt as _;
    let limited = http_body_util::Limited::new(body, MAX_ANSWER_BYTES).map_err(move |e| {
        if e.is::<http_body_util::LengthLimitError>() {
            Box::new(AnswerTooLarge { from: from.clone() }) as BoxError
        } else {
            e
        }
    });
    SdkBody::from_body_1_x(limited)
}

/// An answer larger than [`MAX_ANSWER_BYTES`].
#[derive(Debug, thiserror::Error)]
#[error("the answer from {from} is larger than {} KiB, more than any AWS answer mpgate reads: something on the path is not the AWS service", MAX_ANSWER_BYTES / 1024)]
pub struct AnswerTooLarge {
    from: String,
}

/// The proxy answered the `CONNECT` with 407: it wants credentials (from the proxy URL).
#[derive(Debug, thiserror::Error)]
#[error("the proxy refused the tunnel with 407 Proxy Authentication Required")]
pub struct ProxyAuthRequired;

/// A connection whose TLS handshake failed (an alert, an untrusted certificate), named as
/// the SDK's connector names it.
#[derive(Debug, thiserror::Error)]
#[error("TLS handshake failed")]
struct TlsHandshakeFailed(#[source] hyper_util::client::legacy::Error);

/// An error and its causes, stepping into each `io::Error`'s payload, which `source()` hides
/// (hyper-rustls nests the rustls error two `io::Error`s deep).
pub fn error_chain<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error), |&error| {
        match error.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as _),
            None => error.source(),
        }
    })
}
