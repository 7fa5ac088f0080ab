//! Owns the HTTP client: plain HTTP with no TLS set-up at all, HTTPS trusting the built-in
//! Mozilla roots (plus `SSL_CERT_FILE` / `SSL_CERT_DIR`), and the `*_PROXY` environment.
//!
//! Requests go out through hyper's HTTP/1.1 client, HTTPS through rustls with aws-lc, proxies
//! through hyper-util's matcher and `CONNECT` tunnel: the pieces the SDK's own connector is
//! made of, put together so that the roots reach rustls as ready trust anchors and nothing
//! else (HTTP/2, the SDK's connector layers) is built or linked.

use std::ffi::OsString;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::{
    http::{
        HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
        SharedHttpConnector,
    },
    orchestrator::{HttpRequest, HttpResponse},
    result::ConnectorError,
    retries::ErrorKind,
    runtime_components::RuntimeComponents,
};
use aws_smithy_types::body::SdkBody;
use hyper::http::uri::{Scheme, Uri};
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector as TcpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls_pki_types::{pem::PemObject, CertificateDer, ServerName};
use tower_service::Service;

/// The Mozilla CA roots, from the locked `webpki-roots`: trust anchors (subject, key, name
/// constraints) as static data, so trusting them parses nothing at run time.
const MOZILLA_ROOTS: &[rustls_pki_types::TrustAnchor<'static>] = webpki_roots::TLS_SERVER_ROOTS;
/// The largest answer mpgate reads from any server: the Metering call, and the credential
/// endpoints (ECS and EKS container credentials, STS, IMDS) the SDK asks through this client.
/// Real answers are under 4 KiB; past this bound, it is not the AWS service answering.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Bounds on what `SSL_CERT_FILE` / `SSL_CERT_DIR` may make mpgate read.
const MAX_CERT_BYTES: u64 = 8 * 1024 * 1024;
const MAX_CERT_DIR_FILES: usize = 1000;

/// The proxy variables curl and boto3 honour, in both cases.
const PROXY_VARS: [&str; 6] = [
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// Extra CA certificates from `SSL_CERT_FILE` / `SSL_CERT_DIR`, each PEM blob validated
/// (the SDK's TLS set-up panics on a certificate it cannot parse).
#[derive(Debug, Clone)]
pub enum ExtraRoots {
    /// Read and validated up front: the endpoint is HTTPS, so a bad file is a usage error.
    Loaded(Vec<Vec<u8>>),
    /// The endpoint is plain HTTP: read them only if something (an STS call, an HTTPS proxy)
    /// needs TLS after all, so the common emulator/VPC-proxy path does no certificate I/O.
    Deferred,
}

impl Default for ExtraRoots {
    fn default() -> Self {
        ExtraRoots::Loaded(Vec::new())
    }
}

/// Reads and validates `SSL_CERT_FILE` and `SSL_CERT_DIR`; an error names the bad file.
pub fn extra_roots(env: &dyn Fn(&str) -> Option<OsString>) -> Result<ExtraRoots, String> {
    let mut roots = Vec::new();
    if let Some(file) = env("SSL_CERT_FILE").filter(|v| !v.is_empty()) {
        let pem = read_bounded(Path::new(&file))
            .map_err(|e| format!("SSL_CERT_FILE {}: {e}", Path::new(&file).display()))?;
        validate(&pem).map_err(|e| format!("SSL_CERT_FILE {}: {e}", Path::new(&file).display()))?;
        roots.push(pem);
    }
    if let Some(dir) = env("SSL_CERT_DIR").filter(|v| !v.is_empty()) {
        // OpenSSL allows a colon-separated list of directories.
        for dir in std::env::split_paths(&dir) {
            let entries = std::fs::read_dir(&dir)
                .map_err(|e| format!("SSL_CERT_DIR {}: {e}", dir.display()))?;
            let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
            paths.sort();
            if paths.len() > MAX_CERT_DIR_FILES {
                return Err(format!(
                    "SSL_CERT_DIR {}: more than {MAX_CERT_DIR_FILES} files",
                    dir.display()
                ));
            }
            for path in paths.into_iter().filter(|p| p.is_file()) {
                let pem = read_bounded(&path)
                    .map_err(|e| format!("SSL_CERT_DIR {}: {e}", path.display()))?;
                // Like OpenSSL, ignore files that hold no certificate (READMEs, CRLs).
                match validate(&pem) {
                    Ok(()) => roots.push(pem),
                    Err(e) if e.starts_with("no certificate") => {}
                    Err(e) => return Err(format!("SSL_CERT_DIR {}: {e}", path.display())),
                }
            }
        }
    }
    Ok(ExtraRoots::Loaded(roots))
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    file.take(MAX_CERT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_CERT_BYTES {
        return Err(format!("larger than {} MiB", MAX_CERT_BYTES / 1024 / 1024));
    }
    Ok(bytes)
}

/// Accepts a PEM blob only if every certificate in it can serve as a trust anchor.
fn validate(pem: &[u8]) -> Result<(), String> {
    let mut store = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| format!("not a valid PEM certificate file ({e:?})"))?;
        store
            .add(cert)
            .map_err(|e| format!("a certificate cannot be parsed ({e})"))?;
    }
    if store.is_empty() {
        return Err("no certificate in the file".into());
    }
    Ok(())
}

/// The SDK's HTTP client for mpgate. Nothing is built until the first request, and the
/// TLS set-up (trust store, rustls config) only for an `https://` request or an HTTPS proxy,
/// so a plain-HTTP endpoint (a VPC-internal proxy, the emulator) pays nothing for it.
pub fn client(extra_roots: ExtraRoots) -> Http {
    let shared = Arc::new(Shared {
        tls: LazyTls {
            extra_roots,
            config: OnceLock::new(),
        },
        proxies: proxies_from_env(),
        early: Early::default(),
    });
    Http {
        sdk: SharedHttpClient::new(LazyClient {
            shared: shared.clone(),
            cache: Mutex::new(Vec::new()),
        }),
        shared,
    }
}

/// The HTTP client handed to the SDK, and the means to open its first connection early.
pub struct Http {
    pub sdk: SharedHttpClient,
    shared: Arc<Shared>,
}

/// What every connection of one client shares: one TLS configuration (for the credential
/// fetch and the call alike), the proxy settings, read once, and the early connection.
#[derive(Debug)]
struct Shared {
    tls: LazyTls,
    proxies: Option<Matcher>,
    early: Early,
}

impl Http {
    /// Starts opening a connection to `endpoint` (TCP, TLS, through a proxy as a request
    /// would) on the runtime, for the first request to that origin to take over: the
    /// connection is set up while the credentials load and the SDK prepares the request.
    /// Its outcome, failure included, is that first attempt's; later attempts connect anew.
    pub fn preconnect(&self, endpoint: &str, connect_timeout: Duration) {
        let Ok(uri) = endpoint.parse::<Uri>() else {
            return;
        };
        let connect = Connect::new(Some(connect_timeout), self.shared.clone());
        let key = origin(&uri);
        let opening = tokio::spawn(connect.connect(uri));
        *lock(&self.shared.early.0) = Some((key, opening));
    }
}

/// The connection [`Http::preconnect`] is opening, and the origin it is for.
#[derive(Default)]
struct Early(Mutex<Option<(String, Opening)>>);

/// A connection being opened by a task of its own.
type Opening = tokio::task::JoinHandle<Result<Conn, BoxError>>;

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
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `scheme://authority`, what hyper opens one connection per.
fn origin(uri: &Uri) -> String {
    format!(
        "{}://{}",
        uri.scheme_str().unwrap_or_default(),
        uri.authority().map(|a| a.as_str()).unwrap_or_default()
    )
}

#[derive(Debug)]
struct LazyClient {
    shared: Arc<Shared>,
    /// One transport per connect timeout, so retries reuse pooled connections.
    cache: Mutex<Vec<(Option<Duration>, SharedHttpConnector)>>,
}

impl HttpClient for LazyClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        let key = settings.connect_timeout();
        let mut cache = lock(&self.cache);
        if let Some((_, connector)) = cache.iter().find(|(k, _)| *k == key) {
            return connector.clone();
        }
        let connector = SharedHttpConnector::new(Transport::new(key, self.shared.clone()));
        cache.push((key, connector.clone()));
        connector
    }
}

/// hyper's HTTP/1.1 client over [`Connect`]. Read timeouts are the SDK's attempt timeout.
#[derive(Debug)]
struct Transport {
    client: Client<Connect, SdkBody>,
    shared: Arc<Shared>,
}

impl Transport {
    fn new(connect_timeout: Option<Duration>, shared: Arc<Shared>) -> Self {
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .build(Connect::new(connect_timeout, shared.clone()));
        Transport { client, shared }
    }
}

impl HttpConnector for Transport {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let mut request = match request.try_into_http1x() {
            Ok(request) => request,
            Err(e) => return HttpConnectorFuture::ready(Err(ConnectorError::user(e.into()))),
        };
        // A plain-HTTP request through a proxy goes to the proxy itself: it carries the
        // proxy's credentials (from the proxy URL). HTTPS sends them in the CONNECT instead.
        let via = self
            .shared
            .proxies
            .as_ref()
            .and_then(|p| p.intercept(request.uri()));
        if let Some(auth) = via.as_ref().and_then(|v| v.basic_auth()) {
            if request.uri().scheme() == Some(&Scheme::HTTP) {
                request
                    .headers_mut()
                    .insert(hyper::header::PROXY_AUTHORIZATION, auth.clone());
            }
        }
        capture_for_poisoning(&mut request);
        let from = origin(request.uri());
        let answer = self.client.request(request);
        HttpConnectorFuture::new(async move {
            match answer.await {
                Ok(response) => HttpResponse::try_from(response.map(|body| bounded(body, from)))
                    .map_err(|e| ConnectorError::other(e.into(), None)),
                Err(e) => Err(connector_error(e)),
            }
        })
    }
}

/// The proxy settings curl and boto3 honour (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, then
/// `NO_PROXY`, either case); `None`, and no proxy code on the path, when no proxy is set.
fn proxies_from_env() -> Option<Matcher> {
    PROXY_VARS
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty()))
        .then(Matcher::from_env)
}

/// The rustls configuration, built on first use: the built-in roots as ready trust anchors
/// (the SDK's own connector takes roots only as PEM, and base64-decoding and parsing 150 of
/// them costs 7 M instructions, more than all the rest of a TLS hand-over), aws-lc, TLS 1.2
/// and 1.3, HTTP/1.1.
#[derive(Debug)]
struct LazyTls {
    extra_roots: ExtraRoots,
    config: OnceLock<Arc<rustls::ClientConfig>>,
}

impl LazyTls {
    fn config(&self) -> Arc<rustls::ClientConfig> {
        self.config
            .get_or_init(|| {
                let mut roots = rustls::RootCertStore {
                    roots: MOZILLA_ROOTS.to_vec(),
                };
                for pem in self.extra_roots() {
                    // Validated when read: every certificate in it parses.
                    roots.add_parsable_certificates(CertificateDer::pem_slice_iter(&pem).flatten());
                }
                let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
                let mut config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .expect("aws-lc supports TLS 1.2 and 1.3")
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
                Arc::new(config)
            })
            .clone()
    }

    /// `SSL_CERT_FILE` / `SSL_CERT_DIR`: as read up front, or now if they were deferred.
    fn extra_roots(&self) -> Vec<Vec<u8>> {
        match &self.extra_roots {
            ExtraRoots::Loaded(roots) => roots.clone(),
            ExtraRoots::Deferred => match extra_roots(&|name| std::env::var_os(name)) {
                Ok(ExtraRoots::Loaded(roots)) => roots,
                Ok(ExtraRoots::Deferred) => Vec::new(),
                Err(e) => {
                    tracing::warn!("ignoring the extra CA certificates: {e}");
                    Vec::new()
                }
            },
        }
    }

    /// The TLS handshake with `host` over `io`.
    async fn handshake(&self, host: &str, io: BoxIo) -> Result<BoxIo, BoxError> {
        // An IPv6 literal comes bracketed in a URI; the certificate names the bare address.
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_string())?;
        let stream = tokio_rustls::TlsConnector::from(self.config())
            .connect(name, TokioIo::new(io))
            .await?;
        Ok(Box::new(TokioIo::new(stream)))
    }
}

/// Opens connections: TCP, then TLS for `https://`; through a proxy when the environment
/// names one for the destination (an HTTPS destination through a `CONNECT` tunnel).
#[derive(Clone, Debug)]
struct Connect {
    tcp: TcpConnector,
    shared: Arc<Shared>,
}

impl Connect {
    fn new(connect_timeout: Option<Duration>, shared: Arc<Shared>) -> Self {
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

    async fn connect(self, dst: Uri) -> Result<Conn, BoxError> {
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

trait Io: hyper::rt::Read + hyper::rt::Write + Send + Unpin {}
impl<T: hyper::rt::Read + hyper::rt::Write + Send + Unpin> Io for T {}
type BoxIo = Box<dyn Io>;

/// One open connection: TCP, TLS over TCP, or either through a proxy.
struct Conn {
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

/// Classifies a failed request as the SDK's own connector does, so retries are the same:
/// connection failures, resets and cut-off answers are I/O (retried), timeouts are timeouts.
fn connector_error(error: hyper_util::client::legacy::Error) -> ConnectorError {
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

/// Lets the SDK close a connection after a failed attempt (a 5xx, a timeout) instead of
/// reusing it, as its own connector does: the SDK asks the request for the connection, and
/// without one it logs an ERROR ("no connection was found") on every retry.
fn capture_for_poisoning(request: &mut hyper::Request<SdkBody>) {
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
fn bounded(body: hyper::body::Incoming, from: String) -> SdkBody {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_offers_the_post_quantum_hybrid_first() {
        let tls = LazyTls {
            extra_roots: ExtraRoots::Loaded(Vec::new()),
            config: OnceLock::new(),
        };
        let config = tls.config();
        let groups: Vec<_> = config
            .crypto_provider()
            .kx_groups
            .iter()
            .map(|g| g.name())
            .collect();
        assert_eq!(
            groups.first(),
            Some(&rustls::NamedGroup::X25519MLKEM768),
            "{groups:?}"
        );
        assert!(groups.contains(&rustls::NamedGroup::X25519), "{groups:?}");
    }

    #[test]
    fn the_mozilla_roots_are_built_in() {
        assert!(MOZILLA_ROOTS.len() > 100, "{} roots", MOZILLA_ROOTS.len());
        assert!(MOZILLA_ROOTS.iter().all(|root| !root.subject.is_empty()));
    }

    #[test]
    fn bad_certificate_files_are_refused() {
        assert!(validate(b"hello")
            .unwrap_err()
            .starts_with("no certificate"));
        let bad = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(validate(bad).is_err());
    }
}
