//! Owns the HTTP client: plain HTTP with no TLS set-up at all, HTTPS trusting the built-in
//! Mozilla roots (plus `SSL_CERT_FILE` / `SSL_CERT_DIR`), and the `*_PROXY` environment.
//!
//! Requests go out through hyper's HTTP/1.1 client, HTTPS through rustls with aws-lc, proxies
//! through hyper-util's matcher and `CONNECT` tunnel: the pieces the SDK's own connector is
//! made of, put together so that the roots reach rustls as ready trust anchors and nothing
//! else (HTTP/2, the SDK's connector layers) is built or linked.

mod answer;
mod connect;
mod tls;

pub use answer::{error_chain, never_sent, AnswerTooLarge, ProxyAuthRequired};
pub use connect::lock;
pub use tls::{extra_roots, ExtraRoots};

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_smithy_runtime_api::client::{
    http::{
        HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
        SharedHttpConnector,
    },
    orchestrator::{HttpRequest, HttpResponse},
    result::ConnectorError,
    runtime_components::RuntimeComponents,
};
use aws_smithy_types::body::SdkBody;
use hyper::http::uri::{Scheme, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::http::answer::{bounded, capture_for_poisoning, connector_error};
use crate::http::connect::{origin, proxies_from_env, Connect, Early, Shared};
use crate::http::tls::LazyTls;

/// The SDK's HTTP client for mpgate. Nothing is built until the first request, and the
/// TLS set-up (trust store, rustls config) only for an `https://` request or an HTTPS proxy,
/// so a plain-HTTP endpoint (a VPC-internal proxy, the emulator) pays nothing for it.
pub fn client(extra_roots: ExtraRoots) -> Http {
    let shared = Arc::new(Shared {
        tls: LazyTls::new(extra_roots),
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

    /// A pinned build's endpoint, once known: the only host its compiled-in CA certificates
    /// are trusted for.
    pub fn pin_host(&self, endpoint: &str) {
        self.shared.tls.pin_host(endpoint);
    }
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
