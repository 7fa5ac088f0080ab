//! Owns the HTTP client: plain HTTP with no TLS set-up at all, HTTPS trusting the built-in
//! Mozilla roots (plus `SSL_CERT_FILE` / `SSL_CERT_DIR`), and the `*_PROXY` environment.
//!
//! Every request goes out through hyper; HTTPS through rustls with aws-lc. Through a proxy
//! the SDK's own connector does it (CONNECT tunnels, proxy credentials). Without one, which
//! is the common case, mpgate's `DirectTls` does, only to hand rustls the roots as DER: the
//! SDK takes trust anchors only as PEM, and base64-decoding the 150 Mozilla roots costs 7 M
//! instructions, more than all the rest of a TLS hand-over.

use std::ffi::OsString;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use aws_smithy_http_client::{
    proxy::ProxyConfig,
    tls::{self, rustls_provider::CryptoMode, TlsContext, TrustStore},
    Connector,
};
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
use hyper_util::client::legacy::{connect::HttpConnector as TcpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls_pki_types::{pem::PemObject, CertificateDer};

/// The Mozilla CA roots (DER), from the locked `webpki-root-certs`.
const MOZILLA_ROOTS: &[CertificateDer<'static>] = webpki_root_certs::TLS_SERVER_ROOT_CERTS;
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
pub fn client(extra_roots: ExtraRoots) -> SharedHttpClient {
    SharedHttpClient::new(LazyClient {
        extra_roots: Arc::new(extra_roots),
        cache: Mutex::new(Vec::new()),
    })
}

#[derive(Debug)]
struct LazyClient {
    extra_roots: Arc<ExtraRoots>,
    /// One connector per distinct timeout settings, so retries reuse pooled connections.
    cache: Mutex<Vec<(Timeouts, SharedHttpConnector)>>,
}

type Timeouts = (Option<Duration>, Option<Duration>);

impl HttpClient for LazyClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        let key = (settings.connect_timeout(), settings.read_timeout());
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((_, connector)) = cache.iter().find(|(k, _)| *k == key) {
            return connector.clone();
        }
        let connector = SharedHttpConnector::new(SchemeConnector {
            settings: settings.clone(),
            sleep: components.sleep_impl(),
            extra_roots: self.extra_roots.clone(),
            proxy: proxy_from_env(),
            http: OnceLock::new(),
            proxied_https: OnceLock::new(),
            direct_https: OnceLock::new(),
        });
        cache.push((key, connector.clone()));
        connector
    }
}

/// Picks the plain or the TLS connector by the request's scheme, building each on first use.
#[derive(Debug)]
struct SchemeConnector {
    settings: HttpConnectorSettings,
    sleep: Option<aws_smithy_async::rt::sleep::SharedAsyncSleep>,
    extra_roots: Arc<ExtraRoots>,
    proxy: Proxy,
    http: OnceLock<Connector>,
    proxied_https: OnceLock<Connector>,
    direct_https: OnceLock<DirectTls>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Proxy {
    None,
    Plain,
    /// An `https://` proxy URL: even plain requests need TLS to reach it.
    Tls,
}

/// Reads the proxy variables once: with none set, no proxy layer is built at all.
fn proxy_from_env() -> Proxy {
    let values: Vec<String> = PROXY_VARS
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .filter(|v| !v.is_empty())
        .collect();
    if values.is_empty() {
        Proxy::None
    } else if values.iter().any(|v| v.starts_with("https://")) {
        Proxy::Tls
    } else {
        Proxy::Plain
    }
}

impl SchemeConnector {
    fn builder(&self) -> aws_smithy_http_client::ConnectorBuilder {
        let mut builder = Connector::builder().connector_settings(self.settings.clone());
        builder.set_sleep_impl(self.sleep.clone());
        if self.proxy != Proxy::None {
            builder = builder.proxy_config(ProxyConfig::from_env());
        }
        builder
    }

    /// The SDK's TLS connector, for HTTPS through a proxy; it takes the roots as PEM.
    fn proxied_https(&self) -> &Connector {
        self.proxied_https.get_or_init(|| {
            let mut trust = TrustStore::empty().with_native_roots(false);
            for root in MOZILLA_ROOTS {
                trust.add_pem_certificate(crate::pem::pem_encode("CERTIFICATE", root));
            }
            for pem in self.extra_roots() {
                trust.add_pem_certificate(pem);
            }
            let context = TlsContext::builder()
                .with_trust_store(trust)
                .build()
                .expect("a TLS context from validated roots cannot fail");
            self.builder()
                .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
                .tls_context(context)
                .build()
        })
    }

    fn direct_https(&self) -> &DirectTls {
        self.direct_https.get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            roots.add_parsable_certificates(MOZILLA_ROOTS.iter().cloned());
            for pem in self.extra_roots() {
                // Validated when read: every certificate in it parses.
                roots.add_parsable_certificates(CertificateDer::pem_slice_iter(&pem).flatten());
            }
            DirectTls::new(roots, &self.settings)
        })
    }

    /// `SSL_CERT_FILE` / `SSL_CERT_DIR`: as read up front, or now if they were deferred.
    fn extra_roots(&self) -> Vec<Vec<u8>> {
        match &*self.extra_roots {
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
}

impl HttpConnector for SchemeConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let https = request.uri().starts_with("https:");
        if https && self.proxy == Proxy::None {
            return self.direct_https().call(request);
        }
        let connector = if https || self.proxy == Proxy::Tls {
            self.proxied_https()
        } else {
            self.http.get_or_init(|| self.builder().build_http())
        };
        connector.call(request)
    }
}

/// HTTPS straight to the endpoint: hyper over rustls (aws-lc), HTTP/1.1, TLS 1.2 and 1.3,
/// the connect timeout from the SDK's settings (the attempt timeout bounds the rest).
#[derive(Debug)]
struct DirectTls {
    client: Client<hyper_rustls::HttpsConnector<TcpConnector>, SdkBody>,
}

impl DirectTls {
    fn new(roots: rustls::RootCertStore, settings: &HttpConnectorSettings) -> Self {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("aws-lc supports TLS 1.2 and 1.3")
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let mut tcp = TcpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(settings.connect_timeout());
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .build(hyper_rustls::HttpsConnector::from((tcp, tls)));
        DirectTls { client }
    }

    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let request = match request.try_into_http1x() {
            Ok(request) => request,
            Err(e) => return HttpConnectorFuture::ready(Err(ConnectorError::user(e.into()))),
        };
        let answer = self.client.request(request);
        HttpConnectorFuture::new(async move {
            match answer.await {
                Ok(response) => HttpResponse::try_from(response.map(SdkBody::from_body_1_x))
                    .map_err(|e| ConnectorError::other(e.into(), None)),
                Err(e) => Err(connector_error(e)),
            }
        })
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
    fn the_built_in_roots_are_all_valid_trust_anchors() {
        let mut store = rustls::RootCertStore::empty();
        let (valid, invalid) = store.add_parsable_certificates(MOZILLA_ROOTS.iter().cloned());
        assert_eq!(invalid, 0);
        assert!(valid > 100, "{valid} roots");
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
