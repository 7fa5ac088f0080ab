//! Owns the listener: accepting, the connection faults, TLS, and a transport per connection.

mod hyper;
mod raw;

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::log::{error, log};
use crate::state::State;

/// Longest a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accept connections forever; with `tls`, serve HTTPS.
pub async fn serve(listener: TcpListener, state: Arc<State>, tls: Option<TlsAcceptor>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                error(&format!("accept failed: {e}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Answers go out as several small writes (TLS session tickets, then the response):
        // with Nagle's algorithm the second waits for the client's delayed ACK, 40 ms a call.
        let _ = stream.set_nodelay(true);
        if state.shared.fault.is_connection_fault() && state.shared.take_fault() {
            fail_connection(stream, &state, tls.is_some());
            continue;
        }
        tokio::spawn(connection(stream, state.clone(), tls.clone()));
    }
}

/// A connection fault (`tls-handshake-failure`): recorded as a line with only `call` and
/// `fault`, then a fatal alert (with TLS) or the connection closed.
fn fail_connection(stream: TcpStream, state: &State, tls: bool) {
    let mut rec = state.record.next();
    rec.fault = state.shared.fault.name();
    let line = state.record.write(&rec, serde_json::Map::new);
    log(&format!("connection {line}"));
    if tls {
        tokio::spawn(crate::tls::fail_handshake(stream));
    }
}

/// One connection: the TLS handshake (with `tls`), then its transport.
async fn connection(stream: TcpStream, state: Arc<State>, tls: Option<TlsAcceptor>) {
    let Some(acceptor) = tls else {
        return transport(stream, state, plain).await;
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls_stream)) => transport(tls_stream, state, under_tls).await,
        Ok(Err(e)) => log(&format!("TLS handshake failed: {e}")),
        Err(_) => log("TLS handshake timed out"),
    }
}

fn plain(s: &TcpStream) -> &TcpStream {
    s
}

fn under_tls(s: &TlsStream<TcpStream>) -> &TcpStream {
    s.get_ref().0
}

/// hyper serves every connection, unless the `--fault` is one hyper cannot be made to write
/// ([`crate::fault::Fault::is_raw`]): then the raw transport serves all of them.
async fn transport<S>(io: S, state: Arc<State>, tcp: fn(&S) -> &TcpStream)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if state.shared.fault.is_raw() {
        raw::serve(io, &state, tcp).await;
    } else {
        hyper::serve(io, state).await;
    }
}
