//! Owns the hyper transport: HTTP/1.1 requests read and answered by hyper.

use std::sync::Arc;

use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::answer::Outcome;
use crate::protocol::{self, MAX_BODY};
use crate::state::State;

/// Returned to hyper to make it close the connection without answering (`drop` fault).
#[derive(Debug)]
pub struct DropConnection;

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped on purpose")
    }
}

impl std::error::Error for DropConnection {}

/// Serves one connection.
pub(super) async fn serve<S>(io: S, state: Arc<State>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| handle(state.clone(), req));
    // Errors from serve_connection are peers going away or the `drop` fault.
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(io), svc)
        .await;
}

/// Serve one request.
async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, DropConnection> {
    let (parts, body) = req.into_parts();
    // Err(true): too large; Err(false): read error (peer went away).
    let body: Result<Bytes, bool> = match Limited::new(body, MAX_BODY).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => Err(e.downcast_ref::<LengthLimitError>().is_some()),
    };
    let outcome = protocol::process(
        &state,
        protocol::Request {
            method: &parts.method,
            path: parts.uri.path(),
            query: parts.uri.query(),
            headers: &parts.headers,
            body,
        },
    );
    match outcome {
        Outcome::Answer(resp, _) => {
            if !state.network.latency.is_zero() {
                tokio::time::sleep(state.network.latency).await;
            }
            Ok(resp)
        }
        Outcome::Hang => {
            std::future::pending::<()>().await;
            Err(DropConnection)
        }
        // Raw faults are served by the raw transport; hyper never sees them (closing is the
        // safe answer).
        Outcome::Drop | Outcome::Raw(..) => Err(DropConnection),
    }
}
