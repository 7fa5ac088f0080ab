//! Owns the answers: what a request gets ([`Outcome`]) and the shapes every service shares.

use std::ops::ControlFlow;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde_json::json;

use crate::fault::Fault;

/// awsJson1.1's content type, of requests and answers.
pub const CONTENT_TYPE_JSON: &str = "application/x-amz-json-1.1";

/// What to do with the connection.
pub(crate) enum Outcome {
    /// The answer, and the error type the record names (`None`: a success or a page).
    Answer(Response<Full<Bytes>>, Option<&'static str>),
    Hang,
    Drop,
    /// A raw-connection fault ([`Fault::is_raw`]) and the success answer it mangles.
    Raw(Fault, Response<Full<Bytes>>),
}

/// A step of answering a request: go on with what it found, or stop with the answer.
pub(crate) type Step<T> = ControlFlow<Outcome, T>;

/// The answer a chain of steps came to, whether it stopped early or ran through.
pub(crate) fn settle(step: Step<Outcome>) -> Outcome {
    match step {
        ControlFlow::Continue(outcome) | ControlFlow::Break(outcome) => outcome,
    }
}

/// A fresh request ID, shaped like AWS's (a random UUID).
pub(crate) fn request_id() -> String {
    let mut b: [u8; 16] = crate::random::random_bytes();
    // Version 4 (random), RFC 9562 variant.
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// An answer without the headers the protocol front adds (`Date`, and the service's request
/// ID).
pub(crate) fn base_response(status: u16, content_type: &str, body: Bytes) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(CONTENT_TYPE, v);
    }
    resp
}

/// An awsJson1.1 error: `{"__type", "message"}` with `x-amzn-errortype`.
pub(crate) fn error_answer(status: u16, error_type: &'static str, message: &str) -> Outcome {
    let body = json!({"__type": error_type, "message": message}).to_string();
    let mut resp = base_response(status, CONTENT_TYPE_JSON, Bytes::from(body));
    resp.headers_mut()
        .insert("x-amzn-errortype", HeaderValue::from_static(error_type));
    Outcome::Answer(resp, Some(error_type))
}

/// The HTML page of a proxy or load balancer (`fault`'s), or `None` if it has none.
pub(crate) fn html_page(fault: Fault) -> Option<Outcome> {
    let (status, extra, page) = fault.html_page()?;
    let mut resp = base_response(status, "text/html", Bytes::from_static(page.as_bytes()));
    for (name, value) in extra {
        resp.headers_mut()
            .insert(*name, HeaderValue::from_static(value));
    }
    Some(Outcome::Answer(resp, None))
}

/// A 200 answer with a JSON body.
pub(crate) fn json_answer(body: String) -> Outcome {
    Outcome::Answer(
        base_response(200, CONTENT_TYPE_JSON, Bytes::from(body)),
        None,
    )
}
