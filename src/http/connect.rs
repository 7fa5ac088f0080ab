//! Owns opening connections: TCP, TLS, through a proxy or a `CONNECT` tunnel, or the one opened early.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use aws_smithy_runtime_api::box_error::BoxError;
use hyper::http::uri::{Scheme, Uri};
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector as TcpConnector};
use hyper_util::client::proxy::matcher::Matcher;
use tower_service::Service;

use crate::http::answer::ProxyAuthRequired;
use crate::http::tls::{BoxIo, LazyTls};

/// The proxy variables curl and boto3 honour, in both cases.
const PROXY_VARS: [&str; 6] = [
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// What every connection of one client shares: one TLS configuration (for the credential
/// fetch and the call alike), the proxy settings, read once, and the early connection.
#[derive(Debug)]
pub struct Shared {
    pub tls: LazyTls,
    pub proxies: Option<Matcher>,
    pub early: Early,
}

/// The connection [`Http::preconnect`] is opening, and the origin it is for.
#[derive(Default)]
pub struct Early(pub Mutex<Option<(String, Opening)>>);

/// A connection being opened by a task of its own.
pub type Opening = tokio::task::JoinHandle<Result<Conn, BoxError>>;

impl std::fmt::Debug for Early {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Early").finish_non_exhaustive()
    }
}

impl Early {
    /// The early connection, if it is for `dst`'s origin and not taken yet.
    fn take(&self, dst: &Uri) -> Option<Opening> {
        let mut slot = lock(&self.0);
        match slot.as_ref() {
            Some((key, _)) if *key == origin(dst) => slot.take().map(|(_, opening)| opening),
            _ => None,
        }
    }
}

/// A lock's contents, also after a panic elsewhere poisoned it (they are replaced whole).
pub fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `scheme://authority`, what hyper opens one connection per.
pub fn origin(uri: &Uri) -> String {
    format!(
        "{}://{}",
        uri.scheme_str().unwrap_or_default(),
        uri.authority().map(|a| a.as_str()).unwrap_or_default()
    )
}

/// The proxy settings curl and boto3 honour (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, then
/// `NO_PROXY`, either case); `None`, and no proxy code on the path, when no proxy is set.
pub fn proxies_from_env() -> Option<Matcher> {
    PROXY_VARS
        .iter()
        .any(|v| crate::settings::var_os(v).is_some_and(|v| !v.is_empty()))
        .then(Matcher::from_env)
}

/// Opens connections: TCP, then TLS for `https://`; through a proxy when the environment
/// names one for the destination (an HTTPS destination through a `CONNECT` tunnel).
#[derive(Clone, Debug)]
pub struct Connect {
    tcp: TcpConnector,
    shared: Arc<Shared>,
}

impl Connect {
    pub fn new(connect_timeout: Option<Duration>, shared: Arc<Shared>) -> Self {
        let mut tcp = TcpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(connect_timeout);
        Connect { tcp, shared }
    }

    /// TCP to `uri`'s host and port, then TLS if its scheme is `https`.
    async fn open(&self, uri: Uri) -> Result<BoxIo, BoxError> {
        let tcp: BoxIo = Box::new(self.tcp.clone().call(uri.clone()).await?);
        if uri.scheme() == Some(&Scheme::HTTPS) {
            let host = uri.host().unwrap_or_default();
            self.shared.tls.handshake(host, tcp).await
        } else {
            Ok(tcp)
        }
    }

    pub async fn connect(self, dst: Uri) -> Result<Conn, BoxError> {
        let Some(proxy) = self.shared.proxies.as_ref().and_then(|p| p.intercept(&dst)) else {
            let io = self.open(dst).await?;
            return Ok(Conn { io, proxied: false });
        };
        if dst.scheme() != Some(&Scheme::HTTPS) {
            // Plain HTTP: requests go to the proxy in absolute form.
            let io = self.open(proxy.uri().clone()).await?;
            return Ok(Conn { io, proxied: true });
        }
        let mut tunnel = Tunnel::new(proxy.uri().clone(), ToProxy(self.clone()));
        if let Some(auth) = proxy.basic_auth() {
            tunnel = tunnel.with_auth(auth.clone());
        }
        let tunneled = tunnel.call(dst.clone()).await.map_err(|e| -> BoxError {
            // hyper-util's TunnelError cannot be named outside it; this is how its 407 reads.
            if e.to_string().ends_with("proxy authorization required") {
                Box::new(ProxyAuthRequired)
            } else {
                e.into()
            }
        })?;
        let io = self
            .shared
            .tls
            .handshake(dst.host().unwrap_or_default(), tunneled)
            .await?;
        Ok(Conn { io, proxied: false })
    }
}

impl Service<Uri> for Connect {
    type Response = Conn;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        if let Some(opening) = self.shared.early.take(&dst) {
            tracing::debug!(origin = %origin(&dst), "using the connection opened early");
            return Box::pin(async move { opening.await? });
        }
        Box::pin(self.clone().connect(dst))
    }
}

/// Connects to the proxy itself, for the `CONNECT` tunnel (TLS first for an `https://` proxy).
#[derive(Clone)]
struct ToProxy(Connect);

impl Service<Uri> for ToProxy {
    type Response = BoxIo;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<BoxIo, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, proxy: Uri) -> Self::Future {
        let connect = self.0.clone();
        Box::pin(async move { connect.open(proxy).await })
    }
}

/// One open connection: TCP, TLS over TCP, or either through a proxy.
pub struct Conn {
    io: BoxIo,
    /// Sent to an HTTP proxy: hyper then writes requests in absolute form.
    proxied: bool,
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        Connected::new().proxy(self.proxied)
    }
}

impl hyper::rt::Read for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}
