//! Owns `mpgate usage add` and `mpgate usage show`: the push API's client for shell workloads, over the agent's socket.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;

use super::{SOCKET_FILE, SOCKET_VARIABLE};
use crate::cli::{UsageAction, UsageArgs};

/// The whole exchange with the agent: connect, send, answer.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The agent's answers are small.
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// How a client run ended: its exit code and what to print (stdout on success, stderr
/// otherwise).
pub struct Done {
    pub exit_code: u8,
    pub output: String,
}

/// Where the agent listens: `--socket`, else `MPGATE_USAGE_SOCKET` (set for the workload),
/// else the socket in `MPGATE_LEDGER_DIR` (a sidecar's neighbours share that directory).
fn socket(flag: Option<OsString>, env: &dyn Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let set = |name: &str| env(name).filter(|v| !v.is_empty());
    flag.filter(|v| !v.is_empty())
        .or_else(|| set(SOCKET_VARIABLE))
        .map(PathBuf::from)
        .or_else(|| set("MPGATE_LEDGER_DIR").map(|dir| PathBuf::from(dir).join(SOCKET_FILE)))
}

/// Runs `mpgate usage` against the agent.
pub async fn run(args: &UsageArgs, env: &dyn Fn(&str) -> Option<OsString>) -> Done {
    let Some(socket) = socket(args.socket.clone(), env) else {
        return Done {
            exit_code: crate::exit::code::USAGE,
            output: format!("mpgate usage: no usage socket: run this inside a workload mpgate started (it sets {SOCKET_VARIABLE}), beside an mpgate sidecar with the same MPGATE_LEDGER_DIR, or give --socket PATH"),
        };
    };
    let mut tags = serde_json::Map::new();
    for tag in &args.tags {
        let Some((key, value)) = tag.split_once('=') else {
            return Done {
                exit_code: crate::exit::code::USAGE,
                output: format!("mpgate usage: --tag {tag:?} is not KEY=VALUE"),
            };
        };
        tags.insert(key.to_owned(), value.into());
    }
    let command = &args.action;
    let (method, body) = match command {
        UsageAction::Add {
            dimension,
            quantity,
        } => {
            // A quantity that is not a whole number is sent as text: the agent's sentence
            // says what it must be.
            let quantity: serde_json::Value = quantity
                .parse::<u64>()
                .map(Into::into)
                .unwrap_or_else(|_| quantity.clone().into());
            let mut body = serde_json::json!({"dimension": dimension, "quantity": quantity});
            if !tags.is_empty() {
                body["tags"] = tags.into();
            }
            (Method::POST, body.to_string())
        }
        UsageAction::Show => (Method::GET, String::new()),
    };
    match tokio::time::timeout(TIMEOUT, exchange(&socket, method, body)).await {
        Ok(Ok((status, answer))) if status.is_success() => Done {
            exit_code: 0,
            output: answer,
        },
        Ok(Ok((status, answer))) => {
            let sentence = serde_json::from_str::<serde_json::Value>(&answer)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or(answer);
            Done {
                exit_code: if status.is_client_error() {
                    crate::exit::code::USAGE
                } else {
                    crate::exit::code::SERVICE_UNREACHABLE
                },
                output: format!("mpgate usage: {sentence}"),
            }
        }
        Ok(Err(e)) => Done {
            exit_code: crate::exit::code::SERVICE_UNREACHABLE,
            output: format!(
                "mpgate usage: cannot reach the metering agent at {}: {e}; nothing was recorded ({})",
                socket.display(),
                // The socket is 0660: only the agent's user and group may push.
                if e.contains("ermission denied") {
                    "run this with the group of mpgate's container (in Kubernetes the pod's fsGroup owns the ledger volume)"
                } else {
                    "is mpgate running with --pricing usage?"
                }
            ),
        },
        Err(_) => Done {
            exit_code: crate::exit::code::SERVICE_UNREACHABLE,
            output: format!(
                "mpgate usage: the metering agent at {} did not answer within {}s; the usage may or may not be recorded",
                socket.display(),
                TIMEOUT.as_secs()
            ),
        },
    }
}

async fn exchange(
    socket: &std::path::Path,
    method: Method,
    body: String,
) -> Result<(hyper::StatusCode, String), String> {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| e.to_string())?;
    let request = Request::builder()
        .method(method)
        .uri("/v1/usage")
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let (status, bytes) = send(Box::new(stream), request, MAX_ANSWER_BYTES).await?;
    Ok((
        status,
        String::from_utf8_lossy(&bytes).trim_end().to_owned(),
    ))
}

/// A connection the agent's HTTP clients speak over: a Unix or a TCP stream.
pub(super) trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// One HTTP/1 request on a new connection, the answer's body read up to `limit` bytes. One
/// (boxed) stream type for both clients: hyper's client is compiled once, not per stream.
pub(super) async fn send(
    stream: Box<dyn Io>,
    request: Request<Full<Bytes>>,
    limit: usize,
) -> Result<(hyper::StatusCode, Bytes), String> {
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let answer = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = answer.status();
    let bytes = Limited::new(answer.into_body(), limit)
        .collect()
        .await
        .map_err(|e| format!("{e} (at most {limit} bytes)"))?
        .to_bytes();
    Ok((status, bytes))
}
