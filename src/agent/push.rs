//! Owns the push API on the Unix socket: `POST /v1/usage` (answered once the increment is durable), `GET /v1/usage`, and what bad input is told.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::UnixListener;
use tokio::sync::{watch, Semaphore};

use crate::ledger::{Increment, Ledger, Snapshot, MAX_QUANTITY};
use crate::metering::meter_usage::{hour_start_ms, rfc3339_ms};

/// The largest request body read; a usage record is a few dozen bytes.
pub const MAX_BODY_BYTES: usize = 4096;
/// A client gets this long to send its request's head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// At most this many connections are served at once; more wait in the listen queue.
const MAX_CONNECTIONS: usize = 256;

/// What the push API needs to answer.
pub struct Push {
    pub ledger: Ledger,
    pub dimensions: Vec<String>,
    pub metering_hour: Duration,
}

/// Where the push API listens: its Unix socket, and with `--usage-listen` a loopback port.
pub enum Listener {
    Unix(UnixListener),
    Tcp(tokio::net::TcpListener),
}

/// A connection of either: one type, so that hyper's server is compiled once.
enum Stream {
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream),
}

impl Listener {
    async fn accept(&self) -> std::io::Result<Stream> {
        match self {
            Listener::Unix(l) => l.accept().await.map(|(s, _)| Stream::Unix(s)),
            Listener::Tcp(l) => l.accept().await.map(|(s, _)| Stream::Tcp(s)),
        }
    }
}

impl tokio::io::AsyncRead for Stream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Unix(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Stream::Tcp(s) => std::pin::Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for Stream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Unix(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Stream::Tcp(s) => std::pin::Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Unix(s) => std::pin::Pin::new(s).poll_flush(cx),
            Stream::Tcp(s) => std::pin::Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Unix(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Stream::Tcp(s) => std::pin::Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Serves connections until `stop` turns true.
pub async fn serve(listener: Listener, push: Arc<Push>, mut stop: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            biased;
            () = stopped(&mut stop) => return,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let stream = tokio::select! {
            biased;
            () = stopped(&mut stop) => return,
            accepted = listener.accept() => match accepted {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "the usage socket cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let push = push.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let push = push.clone();
                async move { Ok::<_, Infallible>(answer(&push, request).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            drop(permit);
        });
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

async fn answer(push: &Push, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    match (request.method(), path.as_str()) {
        (&Method::POST, "/v1/usage") => {
            let body = match Limited::new(request.into_body(), MAX_BODY_BYTES)
                .collect()
                .await
            {
                Ok(body) => body.to_bytes(),
                Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                    return refused(&format!(
                        "the body is larger than {MAX_BODY_BYTES} bytes: send one usage record, e.g. {EXAMPLE}"
                    ))
                }
                Err(e) => return refused(&format!("the body could not be read: {e}")),
            };
            match parse(&body, &push.dimensions) {
                Ok((dimension, quantity, tags)) => add(push, dimension, quantity, tags).await,
                Err(sentence) => refused(&sentence),
            }
        }
        (&Method::GET, "/v1/usage") => show(push).await,
        (_, "/v1/usage") => json(
            StatusCode::METHOD_NOT_ALLOWED,
            &serde_json::json!({"error": "use POST to add usage, GET to see it"}),
        ),
        _ => json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": format!("no {path} here: the usage API is POST /v1/usage and GET /v1/usage")}),
        ),
    }
}

const EXAMPLE: &str = r#"{"dimension": "nodes", "quantity": 3}"#;

/// A usage record's tags: 1 to 5, keys of 1 to 100 and values of 1 to 256 characters of
/// MeterUsage's alphabet (letters, digits and `+ -=._:/@`).
const MAX_TAGS: usize = 5;
const MAX_TAG_KEY_CHARS: usize = 100;
const MAX_TAG_VALUE_CHARS: usize = 256;

fn tag_text(text: &str, max: usize) -> bool {
    let n = text.chars().count();
    (1..=max).contains(&n)
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+ -=._:/@".contains(c))
}

/// What a usage record asks for: the dimension, the quantity, and the canonical JSON of its
/// tags (`""`: untagged).
pub type Record = (String, u64, String);

/// The increment a body asks for, or the sentence that says what is wrong with it.
pub fn parse(body: &[u8], dimensions: &[String]) -> Result<Record, String> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| format!("the body is not JSON ({e}): send {EXAMPLE}"))?;
    let Some(object) = value.as_object() else {
        return Err(format!("the body is not a JSON object: send {EXAMPLE}"));
    };
    if let Some(other) = object
        .keys()
        .find(|k| !matches!(k.as_str(), "dimension" | "quantity" | "tags"))
    {
        return Err(format!(
            "unknown member {other:?}: a usage record has dimension, quantity and optionally tags"
        ));
    }
    let known = dimensions.join(", ");
    let dimension = match object.get("dimension") {
        Some(serde_json::Value::String(d)) if dimensions.contains(d) => d.clone(),
        Some(serde_json::Value::String(d)) => {
            let shown: String = d.chars().take(80).collect();
            return Err(format!(
                "unknown dimension {shown:?}: this product meters {known}"
            ));
        }
        _ => {
            return Err(format!(
                "dimension must be a string, one of: {known} (e.g. {EXAMPLE})"
            ))
        }
    };
    let quantity = object
        .get("quantity")
        .and_then(serde_json::Value::as_u64)
        .filter(|q| *q <= MAX_QUANTITY)
        .ok_or_else(|| {
            format!("quantity must be a whole number from 0 to {MAX_QUANTITY} (e.g. {EXAMPLE})")
        })?;
    let tags = match object.get("tags") {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::Object(tags)) => {
            if tags.len() > MAX_TAGS {
                return Err(format!(
                    "{} tags: a usage record has at most {MAX_TAGS}",
                    tags.len()
                ));
            }
            let mut canonical = std::collections::BTreeMap::new();
            for (key, value) in tags {
                let value = value.as_str().unwrap_or_default();
                if !tag_text(key, MAX_TAG_KEY_CHARS) || !tag_text(value, MAX_TAG_VALUE_CHARS) {
                    let shown: String = key.chars().take(40).collect();
                    return Err(format!(
                        "tag {shown:?} must have a key of 1 to {MAX_TAG_KEY_CHARS} and a string value of 1 to {MAX_TAG_VALUE_CHARS} letters, digits or + -=._:/@"
                    ));
                }
                canonical.insert(key.clone(), value.to_owned());
            }
            if canonical.is_empty() {
                String::new()
            } else {
                serde_json::to_string(&canonical).unwrap_or_default()
            }
        }
        Some(_) => {
            return Err(r#"tags must be an object of strings, e.g. {"team": "blue"}"#.into())
        }
    };
    Ok((dimension, quantity, tags))
}

async fn add(push: &Push, dimension: String, quantity: u64, tags: String) -> Response<Full<Bytes>> {
    let hour_ms = hour_start_ms(SystemTime::now(), push.metering_hour);
    let increment = Increment {
        hour_ms,
        dimension: dimension.clone(),
        quantity,
        tags: tags.clone(),
    };
    match push.ledger.add(increment).await {
        Ok(total) => json(
            StatusCode::OK,
            &serde_json::json!({
                "dimension": dimension,
                "quantity": quantity,
                "hour": rfc3339_ms(hour_ms),
                "hourTotal": total,
                "tags": serde_json::from_str::<serde_json::Value>(&tags).ok(),
            }),
        ),
        Err(e) if e.contains("overflow") => refused(&e),
        Err(e) => {
            tracing::error!("usage of {dimension} not recorded: {e}");
            json(
                StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({"error": format!("not recorded: {e}; send it again")}),
            )
        }
    }
}

async fn show(push: &Push) -> Response<Full<Bytes>> {
    let current = hour_start_ms(SystemTime::now(), push.metering_hour);
    match push.ledger.snapshot(current).await {
        Ok(snapshot) => json(StatusCode::OK, &view(&snapshot, push)),
        Err(e) => json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({"error": format!("the ledger cannot be read: {e}")}),
        ),
    }
}

/// `GET /v1/usage`: every hour the ledger holds, what is carried and what is unsent.
pub fn view(snapshot: &Snapshot, push: &Push) -> serde_json::Value {
    let hours: Vec<serde_json::Value> = snapshot
        .lines
        .iter()
        .map(|l| {
            let mut hour = serde_json::json!({
                "hour": rfc3339_ms(l.hour_ms),
                "dimension": l.dimension,
                "quantity": l.quantity,
                "state": l.state,
                "meteringRecordId": l.metering_record_id,
            });
            if l.scraped {
                // Read from the workload's metrics: the hour's aggregate so far, rounded up.
                hour["scraped"] = true.into();
            }
            hour
        })
        .collect();
    serde_json::json!({
        "dimensions": push.dimensions,
        "meteringHourSeconds": push.metering_hour.as_secs(),
        "hours": hours,
        "carried": snapshot.carried,
        "unsent": snapshot.unsent(),
    })
}

fn refused(sentence: &str) -> Response<Full<Bytes>> {
    json(
        StatusCode::BAD_REQUEST,
        &serde_json::json!({"error": format!("{sentence}; nothing was recorded")}),
    )
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut body = value.to_string();
    body.push('\n');
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn bad_records_get_a_sentence_that_says_what_to_send() {
        let dims = vec!["nodes".to_string(), "gb".to_string()];
        assert_eq!(
            parse(br#"{"dimension":"nodes","quantity":3}"#, &dims).unwrap(),
            ("nodes".to_string(), 3, String::new())
        );
        // Tags come out in one canonical order, so one tag set is one allocation.
        let tagged = br#"{"dimension":"gb","quantity":1,"tags":{"team":"blue","env":"prod"}}"#;
        assert_eq!(
            parse(tagged, &dims).unwrap().2,
            r#"{"env":"prod","team":"blue"}"#
        );
        for (body, words) in [
            (&b"nodes=3"[..], "not JSON"),
            (b"[1]", "not a JSON object"),
            (
                br#"{"dimension":"cpus","quantity":1}"#,
                "unknown dimension \"cpus\": this product meters nodes, gb",
            ),
            (br#"{"quantity":1}"#, "dimension must be a string"),
            (
                br#"{"dimension":"nodes","quantity":-1}"#,
                "whole number from 0 to 2147483647",
            ),
            (br#"{"dimension":"nodes","quantity":1.5}"#, "whole number"),
            (br#"{"dimension":"nodes","quantity":"3"}"#, "whole number"),
            (
                br#"{"dimension":"nodes","quantity":2147483648}"#,
                "whole number",
            ),
            (br#"{"dimension":"nodes"}"#, "whole number"),
            (
                br#"{"dimension":"nodes","quantity":1,"extra":1}"#,
                "unknown member \"extra\"",
            ),
            (br#"{"dimension":"nodes","quantity":1,"tags":["a"]}"#, "tags must be an object"),
            (br#"{"dimension":"nodes","quantity":1,"tags":{"a":1}}"#, "tag \"a\" must have"),
            (br#"{"dimension":"nodes","quantity":1,"tags":{"a!":"b"}}"#, "letters, digits"),
            (
                br#"{"dimension":"nodes","quantity":1,"tags":{"a":"1","b":"1","c":"1","d":"1","e":"1","f":"1"}}"#,
                "at most 5",
            ),
        ] {
            let e = parse(body, &dims).unwrap_err();
            assert!(e.contains(words), "{}: {e}", String::from_utf8_lossy(body));
        }
    }
}
