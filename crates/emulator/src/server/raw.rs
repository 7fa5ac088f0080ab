//! Owns the raw transport: the answers hyper cannot be made to write, mangled on the wire.

use std::io;
use std::time::Duration;

use http_body_util::BodyExt;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Response, Uri};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::answer::Outcome;
use crate::fault::Fault;
use crate::log::log;
use crate::protocol::{self, MAX_BODY};
use crate::state::State;

/// Largest request head (request line and headers) read.
const MAX_HEAD: usize = 64 * 1024;
/// How long an idle keep-alive connection (or a slow request) is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Pause between the partial answer and the reset, so the client has read what was sent.
const BEFORE_RESET: Duration = Duration::from_millis(100);
/// How long a closed-for-writing connection is drained, so closing does not reset it.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Size of the writes of an oversize body.
const CHUNK: usize = 64 * 1024;

/// Serves one connection (after the TLS handshake, if any) with every fault configured: it
/// reads requests with a `Content-Length` body (keep-alive, pipelining), runs them through
/// the protocol front, and writes normal answers itself; a call the fault applies to gets the
/// mangled answer and the connection ends. `tcp` reaches the socket under `io`, to reset it.
pub(super) async fn serve<S>(io: S, state: &State, tcp: fn(&S) -> &TcpStream)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    connection(io, state, |s: &S| set_reset(tcp(s))).await
}

/// `SO_LINGER` 0: closing the socket then sends a TCP reset instead of a FIN.
fn set_reset(stream: &TcpStream) {
    if let Err(e) = stream.set_zero_linger() {
        log(&format!("cannot set SO_LINGER: {e}"));
    }
}

/// One request as read off the wire.
struct RawRequest {
    method: Method,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Result<Bytes, bool>,
    /// The connection ends after this request's answer.
    close: bool,
}

async fn connection<S>(io: S, state: &State, reset: impl Fn(&S))
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut io = BufReader::new(io);
    loop {
        let request = match tokio::time::timeout(IDLE_TIMEOUT, read_request(&mut io)).await {
            Ok(Ok(Some(request))) => request,
            Ok(Ok(None)) | Err(_) => return,
            Ok(Err(e)) => {
                log(&format!("bad request: {e}"));
                let _ = io.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
                let _ = io.shutdown().await;
                return;
            }
        };
        let outcome = protocol::process(
            state,
            protocol::Request {
                method: &request.method,
                path: &request.path,
                query: request.query.as_deref(),
                headers: &request.headers,
                body: request.body,
            },
        );
        if matches!(outcome, Outcome::Answer(..) | Outcome::Raw(..))
            && !state.network.latency.is_zero()
        {
            tokio::time::sleep(state.network.latency).await;
        }
        match outcome {
            Outcome::Answer(resp, _) => {
                let (head, body) = split(resp).await;
                let mut head = head;
                if request.close {
                    head.extend_from_slice(b"connection: close\r\n");
                }
                head.extend_from_slice(
                    format!("content-length: {}\r\n\r\n", body.len()).as_bytes(),
                );
                let sent = async {
                    io.write_all(&head).await?;
                    io.write_all(&body).await?;
                    io.flush().await
                }
                .await;
                if sent.is_err() || request.close {
                    let _ = io.shutdown().await;
                    return;
                }
            }
            Outcome::Hang => std::future::pending::<()>().await,
            Outcome::Drop => return,
            Outcome::Raw(fault, resp) => {
                if let Err(e) = mangle(&mut io, fault, resp, state, &reset).await {
                    log(&format!("{fault}: the client went away: {e}"));
                }
                return;
            }
        }
    }
}

/// Reads one request; `Ok(None)` when the peer closed the connection between requests.
async fn read_request<R>(r: &mut R) -> io::Result<Option<RawRequest>>
where
    R: tokio::io::AsyncBufRead + Unpin,
{
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
    let mut lines: Vec<Vec<u8>> = Vec::new();
    let mut size = 0usize;
    loop {
        let mut line = Vec::new();
        let limit = (MAX_HEAD - size) as u64;
        let n = (&mut *r).take(limit).read_until(b'\n', &mut line).await?;
        if n == 0 {
            return if lines.is_empty() && size == 0 {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        if line.last() != Some(&b'\n') {
            return Err(bad("request head too large"));
        }
        size += n;
        let trimmed = line
            .strip_suffix(b"\r\n")
            .or_else(|| line.strip_suffix(b"\n"));
        match trimmed {
            // Empty lines before the request line are allowed (RFC 9112 2.2).
            Some([]) if lines.is_empty() => continue,
            Some([]) => break,
            Some(content) => lines.push(content.to_vec()),
            None => return Err(bad("bad line")),
        }
    }
    let request_line = String::from_utf8(lines.remove(0)).map_err(|_| bad("request line"))?;
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("request line"));
    };
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| bad("method"))?;
    let target = target.parse::<Uri>().map_err(|_| bad("request target"))?;
    let path = target.path().to_string();
    let query = target.query().map(str::to_string);
    let mut headers = HeaderMap::new();
    for line in lines {
        let colon = line
            .iter()
            .position(|b| *b == b':')
            .ok_or_else(|| bad("header"))?;
        let name = HeaderName::from_bytes(&line[..colon]).map_err(|_| bad("header name"))?;
        let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii())
            .map_err(|_| bad("header value"))?;
        headers.append(name, value);
    }
    let connection = headers
        .get("connection")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let mut close = connection.contains("close")
        || (version == "HTTP/1.0" && !connection.contains("keep-alive"));
    let body = if headers.contains_key("transfer-encoding") {
        // Chunked requests are not read (the SDK sends a Content-Length): answer and close.
        close = true;
        Err(false)
    } else {
        let length: usize = match headers.get("content-length") {
            None => 0,
            Some(v) => v
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| bad("content-length"))?,
        };
        if length > MAX_BODY {
            close = true;
            Err(true)
        } else {
            let mut body = vec![0u8; length];
            r.read_exact(&mut body).await?;
            Ok(Bytes::from(body))
        }
    };
    Ok(Some(RawRequest {
        method,
        path,
        query,
        headers,
        body,
        close,
    }))
}

/// The status line and headers of `resp` (without the blank line, without `content-length`),
/// and its body.
async fn split(resp: Response<Full<Bytes>>) -> (Vec<u8>, Bytes) {
    let (parts, body) = resp.into_parts();
    let mut head = format!(
        "HTTP/1.1 {} {}\r\n",
        parts.status.as_u16(),
        parts.status.canonical_reason().unwrap_or("")
    )
    .into_bytes();
    for (name, value) in &parts.headers {
        if name == "content-length" {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    (head, body)
}

/// Writes the mangled answer of `fault`.
async fn mangle<S>(
    io: &mut BufReader<S>,
    fault: Fault,
    resp: Response<Full<Bytes>>,
    state: &State,
    reset: &impl Fn(&S),
) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut head, body) = split(resp).await;
    match fault {
        Fault::Trickle => {
            head.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
            head.extend_from_slice(&body);
            for byte in head {
                io.write_all(&[byte]).await?;
                io.flush().await?;
                tokio::time::sleep(state.network.trickle_interval).await;
            }
            close(io).await
        }
        Fault::TruncatedBody => {
            head.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
            head.extend_from_slice(&body[..body.len() / 2]);
            io.write_all(&head).await?;
            io.flush().await?;
            close(io).await
        }
        Fault::ResetHeaders => {
            // The status line and the first header only.
            let cut = head
                .windows(2)
                .enumerate()
                .filter(|(_, w)| w == b"\r\n")
                .nth(1)
                .map_or(head.len(), |(i, _)| i + 2);
            io.write_all(&head[..cut]).await?;
            io.flush().await?;
            tokio::time::sleep(BEFORE_RESET).await;
            reset(io.get_ref());
            Ok(())
        }
        Fault::ResetBody => {
            head.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
            head.extend_from_slice(&body[..body.len() / 2]);
            io.write_all(&head).await?;
            io.flush().await?;
            tokio::time::sleep(BEFORE_RESET).await;
            reset(io.get_ref());
            Ok(())
        }
        Fault::OversizeBody | Fault::OversizeChunked | Fault::OversizeEof => {
            let size = state.network.oversize_bytes;
            match fault {
                Fault::OversizeBody => {
                    head.extend_from_slice(format!("content-length: {size}\r\n\r\n").as_bytes())
                }
                Fault::OversizeChunked => {
                    head.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n")
                }
                _ => head.extend_from_slice(b"connection: close\r\n\r\n"),
            }
            io.write_all(&head).await?;
            write_oversize(io, size, fault == Fault::OversizeChunked).await?;
            io.flush().await?;
            close(io).await
        }
        _ => Ok(()),
    }
}

/// A JSON-looking body of exactly `size` bytes, `{"Signature":"AAAA…"}`, written in pieces
/// of at most [`CHUNK`] bytes (each one HTTP chunk when `chunked`), so memory stays small.
async fn write_oversize<W>(io: &mut W, size: u64, chunked: bool) -> io::Result<()>
where
    W: AsyncWrite + Unpin,
{
    const PREFIX: &[u8] = b"{\"Signature\":\"";
    const SUFFIX: &[u8] = b"\"}";
    let filler = vec![b'A'; CHUNK];
    let framing = (PREFIX.len() + SUFFIX.len()) as u64;
    let (prefix, suffix, mut middle) = if size >= framing {
        (PREFIX, SUFFIX, size - framing)
    } else {
        (&b""[..], &b""[..], size)
    };
    let write = |piece: &[u8]| -> Vec<u8> {
        if chunked {
            let mut out = format!("{:x}\r\n", piece.len()).into_bytes();
            out.extend_from_slice(piece);
            out.extend_from_slice(b"\r\n");
            out
        } else {
            piece.to_vec()
        }
    };
    if !prefix.is_empty() {
        io.write_all(&write(prefix)).await?;
    }
    while middle > 0 {
        let n = middle.min(CHUNK as u64) as usize;
        io.write_all(&write(&filler[..n])).await?;
        middle -= n as u64;
    }
    if !suffix.is_empty() {
        io.write_all(&write(suffix)).await?;
    }
    if chunked {
        io.write_all(b"0\r\n\r\n").await?;
    }
    Ok(())
}

/// Closes for writing (FIN), then drains what the client still sends, bounded, so the close
/// is clean and the client reads everything that was sent.
async fn close<S>(io: &mut S) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    io.shutdown().await?;
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while io.read(&mut buf).await? > 0 {}
        Ok::<(), io::Error>(())
    })
    .await;
    Ok(())
}
