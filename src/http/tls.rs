//! Owns whom TLS trusts and the handshake: the built-in Mozilla roots, `SSL_CERT_FILE` / `SSL_CERT_DIR`, rustls.

use std::ffi::OsString;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use aws_smithy_runtime_api::box_error::BoxError;
use hyper_util::rt::TokioIo;
use rustls_pki_types::{pem::PemObject, CertificateDer, ServerName};

/// The Mozilla CA roots, from the locked `webpki-roots`: trust anchors (subject, key, name
/// constraints) as static data, so trusting them parses nothing at run time.
const MOZILLA_ROOTS: &[rustls_pki_types::TrustAnchor<'static>] = webpki_roots::TLS_SERVER_ROOTS;
/// Bounds on what `SSL_CERT_FILE` / `SSL_CERT_DIR` may make mpgate read.
const MAX_CERT_BYTES: u64 = 8 * 1024 * 1024;
const MAX_CERT_DIR_FILES: usize = 1000;

/// Extra CA certificates from `SSL_CERT_FILE` / `SSL_CERT_DIR`, each PEM blob validated
/// (the SDK's TLS set-up panics on a certificate it cannot parse), or a pinned build's.
#[derive(Debug, Clone)]
pub enum ExtraRoots {
    /// Read and validated up front: the endpoint is HTTPS, so a bad file is a usage error.
    Loaded(Vec<Vec<u8>>),
    /// The endpoint is plain HTTP: read them only if something (an STS call, an HTTPS proxy)
    /// needs TLS after all, so the common emulator/VPC-proxy path does no certificate I/O.
    Deferred,
    /// A pinned build's compiled-in CA certificates (`MPGATE_PIN_CA_FILE`, checked by
    /// build.rs): trusted for the pinned endpoint's host alone ([`LazyTls::pin_host`]), never
    /// for a credentials endpoint, STS or a proxy, which get the built-in roots only. A CA
    /// a seller compiles in for one customer's TLS-inspecting proxy (or the emulator's test
    /// CA, whose key is public) then cannot vouch for any other host.
    Pinned(&'static str),
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
    // A FIFO or a device is refused before anything is read.
    let bytes = crate::settings::read_regular(path, MAX_CERT_BYTES).map_err(|e| e.to_string())?;
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

/// The rustls configuration, built on first use: the built-in roots as ready trust anchors
/// (the SDK's own connector takes roots only as PEM, and base64-decoding and parsing 150 of
/// them costs 7 M instructions, more than all the rest of a TLS hand-over), aws-lc, TLS 1.2
/// and 1.3, HTTP/1.1.
#[derive(Debug)]
pub struct LazyTls {
    extra_roots: ExtraRoots,
    /// Every host's: the built-in roots, and `SSL_CERT_FILE` / `SSL_CERT_DIR`'s.
    config: OnceLock<Arc<rustls::ClientConfig>>,
    /// A pinned build's endpoint host, once the call layer knows it, and its configuration:
    /// the built-in roots and the compiled-in CA certificates.
    pinned_host: OnceLock<String>,
    pinned_config: OnceLock<Arc<rustls::ClientConfig>>,
}

impl LazyTls {
    /// The configuration for a handshake with `host`.
    fn config(&self, host: &str) -> Arc<rustls::ClientConfig> {
        if let ExtraRoots::Pinned(pem) = &self.extra_roots {
            if self.pinned_host.get().map(String::as_str) == Some(host_name(host).as_str()) {
                return self
                    .pinned_config
                    .get_or_init(|| client_config(&[pem.as_bytes().to_vec()]))
                    .clone();
            }
        }
        self.config
            .get_or_init(|| client_config(&self.extra_roots()))
            .clone()
    }

    /// Trusts a pinned build's compiled-in CA certificates for `endpoint`'s host from now on
    /// (the pinned endpoint, compiled in or resolved from the region); once per client.
    pub fn pin_host(&self, endpoint: &str) {
        if let Some(host) = endpoint
            .parse::<hyper::http::Uri>()
            .ok()
            .and_then(|uri| uri.host().map(host_name))
        {
            let _ = self.pinned_host.set(host);
        }
    }

    /// `SSL_CERT_FILE` / `SSL_CERT_DIR`: as read up front, or now if they were deferred; a
    /// pinned build's are for its endpoint's host alone.
    fn extra_roots(&self) -> Vec<Vec<u8>> {
        match &self.extra_roots {
            ExtraRoots::Loaded(roots) => roots.clone(),
            ExtraRoots::Pinned(_) => Vec::new(),
            ExtraRoots::Deferred => match extra_roots(&crate::settings::var_os) {
                Ok(ExtraRoots::Loaded(roots)) => roots,
                Ok(ExtraRoots::Deferred | ExtraRoots::Pinned(_)) => Vec::new(),
                Err(e) => {
                    tracing::warn!("ignoring the extra CA certificates: {e}");
                    Vec::new()
                }
            },
        }
    }

    /// The TLS handshake with `host` over `io`.
    pub async fn handshake(&self, host: &str, io: BoxIo) -> Result<BoxIo, BoxError> {
        let config = self.config(host);
        // An IPv6 literal comes bracketed in a URI; the certificate names the bare address.
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_string())?;
        let stream = tokio_rustls::TlsConnector::from(config)
            .connect(name, TokioIo::new(io))
            .await?;
        Ok(Box::new(TokioIo::new(stream)))
    }
}

impl LazyTls {
    /// `extra_roots` trusted beside the built-in roots, once a connection needs TLS.
    pub fn new(extra_roots: ExtraRoots) -> Self {
        LazyTls {
            extra_roots,
            config: OnceLock::new(),
            pinned_host: OnceLock::new(),
            pinned_config: OnceLock::new(),
        }
    }
}

/// A host as a handshake compares it: lower case, without IPv6 brackets or a final dot.
fn host_name(host: &str) -> String {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

/// A rustls configuration trusting the built-in roots and `extra` (PEM blobs, validated
/// when read: every certificate in them parses): aws-lc, TLS 1.2 and 1.3, HTTP/1.1.
fn client_config(extra: &[Vec<u8>]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore {
        roots: MOZILLA_ROOTS.to_vec(),
    };
    for pem in extra {
        roots.add_parsable_certificates(CertificateDer::pem_slice_iter(pem).flatten());
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("aws-lc supports TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A connection's byte stream: TCP, or TLS over it.
pub trait Io: hyper::rt::Read + hyper::rt::Write + Send + Unpin {}
impl<T: hyper::rt::Read + hyper::rt::Write + Send + Unpin> Io for T {}
pub type BoxIo = Box<dyn Io>;

#[cfg(test)]
mod tests {
    use super::*;

    /// A FIFO no one writes would block the open; `/dev/zero` never ends (issue 26, item 6).
    #[test]
    fn a_fifo_or_a_device_as_a_ca_file_is_refused_without_reading_it() {
        let dir = std::env::temp_dir().join(format!("mpgate-tls-fifo-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("ca.pem");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        for path in [fifo.as_os_str(), std::ffi::OsStr::new("/dev/zero")] {
            let env = |name: &str| (name == "SSL_CERT_FILE").then(|| path.to_owned());
            let Err(e) = extra_roots(&env) else {
                panic!("{path:?} accepted");
            };
            assert!(e.starts_with("SSL_CERT_FILE"), "{e}");
            assert!(e.contains("not a regular file"), "{e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tls_offers_the_post_quantum_hybrid_first() {
        let tls = LazyTls::new(ExtraRoots::Loaded(Vec::new()));
        let config = tls.config("example.com");
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
    fn a_pinned_ca_is_for_the_pinned_host_alone() {
        let tls = LazyTls::new(ExtraRoots::Pinned(""));
        let every_host = tls.config("sts.us-east-1.amazonaws.com");
        // Before the call layer names the pinned host, no host gets the pinned CA.
        assert!(Arc::ptr_eq(
            &tls.config("license-manager.example"),
            &every_host
        ));
        tls.pin_host("https://License-Manager.Example.:443/path");
        let pinned = tls.config("license-manager.example");
        assert!(!Arc::ptr_eq(&pinned, &every_host));
        for spelling in ["LICENSE-MANAGER.example", "license-manager.example."] {
            assert!(Arc::ptr_eq(&tls.config(spelling), &pinned), "{spelling}");
        }
        for other in [
            "127.0.0.1",
            "localhost",
            "example",
            "manager.example",
            "proxy.corp",
        ] {
            assert!(Arc::ptr_eq(&tls.config(other), &every_host), "{other}");
        }
        // Named once: a later endpoint does not move it.
        tls.pin_host("https://other.example");
        assert!(Arc::ptr_eq(&tls.config("other.example"), &every_host));
        // IPv6 literals compare without their brackets.
        let tls = LazyTls::new(ExtraRoots::Pinned(""));
        tls.pin_host("https://[::1]:8443");
        assert!(!Arc::ptr_eq(&tls.config("[::1]"), &tls.config("::2")));
        assert!(Arc::ptr_eq(&tls.config("[::1]"), &tls.config("::1")));
        // An ordinary build's SSL_CERT_FILE is for every host.
        let tls = LazyTls::new(ExtraRoots::Loaded(Vec::new()));
        tls.pin_host("https://license-manager.example");
        assert!(Arc::ptr_eq(
            &tls.config("license-manager.example"),
            &tls.config("x")
        ));
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
