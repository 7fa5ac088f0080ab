//! A small HTTP forward proxy for integration tests (std threads, no async).
//!
//! Every connection is sent to one fixed `upstream` address, whatever host the request
//! names, so tests can use an unresolvable host name (`metering.emulator.test`) and prove
//! that the traffic went through the proxy. It understands `CONNECT host:port` (answers
//! `200 Connection Established`, then tunnels) and absolute-form requests
//! (`POST http://host:port/ HTTP/1.1`: the head is forwarded as received, then both
//! directions are spliced). Only the first request line of each connection is recorded
//! (later requests on a kept-alive connection are tunnelled as bytes). Every socket has
//! read/write timeouts, and a connection idle in both directions for [`IDLE`] is closed, so
//! nothing can hang a test forever.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

/// Largest request head read from a client.
pub const MAX_HEAD: usize = 64 * 1024;
/// Read/write timeout of every socket, and how long a connection may sit idle.
pub const IDLE: Duration = Duration::from_secs(10);
/// The granularity of idle checks while splicing.
const TICK: Duration = Duration::from_millis(500);

/// A running proxy; stops accepting when dropped.
pub struct Proxy {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

struct Shared {
    upstream: SocketAddr,
    /// The expected `Proxy-Authorization` value, when authentication is required.
    auth: Option<String>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Proxy {
    /// Every CONNECT or absolute-form request is sent to `upstream` (e.g. "127.0.0.1:4567"),
    /// whatever host it names.
    pub fn start(upstream: SocketAddr) -> Proxy {
        Self::spawn(upstream, None)
    }

    /// Like [`Proxy::start`], but answers `407 Proxy Authentication Required` unless the
    /// request carries `Proxy-Authorization: Basic base64(user_pass)` (`"user:pass"`).
    pub fn start_requiring_auth(upstream: SocketAddr, user_pass: &str) -> Proxy {
        Self::spawn(
            upstream,
            Some(format!("Basic {}", STANDARD.encode(user_pass))),
        )
    }

    /// The request lines seen so far, e.g. `"CONNECT metering.emulator.test:443 HTTP/1.1"`
    /// or `"POST http://metering.emulator.test:1234/ HTTP/1.1"`.
    pub fn requests(&self) -> Vec<String> {
        // A poisoned log means a proxy thread panicked: the test must fail, not see no requests.
        self.requests
            .lock()
            .map(|r| r.clone())
            .unwrap_or_else(|_| panic!("a test proxy thread panicked"))
    }

    fn spawn(upstream: SocketAddr, auth: Option<String>) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the test proxy");
        let addr = listener.local_addr().expect("proxy local_addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            upstream,
            auth,
            requests: requests.clone(),
        });
        let stop2 = stop.clone();
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let shared = shared.clone();
                std::thread::spawn(move || {
                    let _ = handle(conn, &shared);
                });
            }
        });
        Proxy {
            url: format!("http://{addr}"),
            addr,
            requests,
            stop,
            accept: Some(accept),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees `stop`; connection threads end on EOF or idleness.
        if TcpStream::connect_timeout(&self.addr, Duration::from_secs(2)).is_ok() {
            if let Some(t) = self.accept.take() {
                let _ = t.join();
            }
        }
    }
}

fn set_timeouts(s: &TcpStream) -> io::Result<()> {
    s.set_read_timeout(Some(IDLE))?;
    s.set_write_timeout(Some(IDLE))?;
    s.set_nodelay(true)
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

fn reply(client: &mut TcpStream, status: &str, extra: &str) -> io::Result<()> {
    client.write_all(
        format!("HTTP/1.1 {status}\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )?;
    client.flush()
}

fn handle(mut client: TcpStream, shared: &Shared) -> io::Result<()> {
    set_timeouts(&client)?;
    // Read the head (bounded); anything after it is body or tunnel bytes, kept as is.
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(end) = find_head_end(&buf) {
            break end;
        }
        if buf.len() > MAX_HEAD {
            return reply(&mut client, "431 Request Header Fields Too Large", "");
        }
        let n = client.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_string();
    if let Ok(mut r) = shared.requests.lock() {
        r.push(request_line.clone());
    }
    if let Some(expected) = &shared.auth {
        let given = lines
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("proxy-authorization"))
            .map(|(_, v)| v.trim());
        if given != Some(expected.as_str()) {
            return reply(
                &mut client,
                "407 Proxy Authentication Required",
                "Proxy-Authenticate: Basic realm=\"mpgate-test-proxy\"\r\n",
            );
        }
    }
    let mut parts = request_line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let connect = method.eq_ignore_ascii_case("CONNECT");
    if !connect && !target.to_ascii_lowercase().starts_with("http://") {
        return reply(&mut client, "400 Bad Request", "");
    }
    let mut upstream = match TcpStream::connect_timeout(&shared.upstream, IDLE) {
        Ok(s) => s,
        Err(_) => return reply(&mut client, "502 Bad Gateway", ""),
    };
    set_timeouts(&upstream)?;
    if connect {
        client.write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")?;
        client.flush()?;
        // Bytes the client sent right after CONNECT belong to the tunnel.
        upstream.write_all(&buf[head_end..])?;
    } else {
        upstream.write_all(&buf)?;
    }
    splice(client, upstream);
    Ok(())
}

/// Copy both directions until each has ended (EOF is passed on as a write shutdown) or the
/// connection has been idle in both directions for [`IDLE`].
fn splice(client: TcpStream, upstream: TcpStream) {
    let start = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let pump = {
        let (from, to, last) = match (upstream.try_clone(), client.try_clone()) {
            (Ok(f), Ok(t)) => (f, t, last.clone()),
            _ => return,
        };
        std::thread::spawn(move || copy(from, to, start, &last))
    };
    copy(client, upstream, start, &last);
    let _ = pump.join();
}

fn copy(mut from: TcpStream, mut to: TcpStream, start: Instant, last: &AtomicU64) {
    let _ = from.set_read_timeout(Some(TICK));
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => {
                last.store(start.elapsed().as_millis() as u64, Ordering::SeqCst);
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                let idle = (start.elapsed().as_millis() as u64)
                    .saturating_sub(last.load(Ordering::SeqCst));
                if idle >= IDLE.as_millis() as u64 {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    // A failure or idleness ends both directions.
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
