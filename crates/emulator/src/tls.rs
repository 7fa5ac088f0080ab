//! `--tls`: a test CA and a server certificate, kept in the key dir, and the rustls acceptor.
//!
//! Files (PEM), each created once and reused afterwards (hard link of a complete temp file,
//! so concurrent emulators sharing a key dir agree on one set):
//! `ca-key.pem` (PKCS#8, 0600), `ca.pem` (the self-signed CA certificate, `CA:TRUE`),
//! `server-key.pem` (PKCS#8, 0600) and `server.pem` (the leaf, signed by the CA, for
//! [`SERVER_NAMES`]). Keys are RSA-2048, as in the chain the Metering endpoints present
//! (Amazon RSA 2048 intermediates under Amazon Root CA 1), so a client spends on verifying
//! the emulator's chain what it spends on the real one. Clients trust `ca.pem` only.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::keys::pem_decode;
use crate::keys::{self, create_once};

/// The names the server certificate is valid for.
pub const SERVER_NAMES: &[&str] = &["localhost", "127.0.0.1", "metering.emulator.test"];
pub const CA_FILE: &str = "ca.pem";
pub const CA_KEY_FILE: &str = "ca-key.pem";
pub const SERVER_FILE: &str = "server.pem";
pub const SERVER_KEY_FILE: &str = "server-key.pem";

/// The TLS side, ready to accept.
pub struct Tls {
    /// Absolute path of `ca.pem` when the key dir is absolute.
    pub ca_file: PathBuf,
    pub acceptor: TlsAcceptor,
}

fn rc(context: &str) -> impl Fn(rcgen::Error) -> String + '_ {
    move |e| format!("{context}: {e}")
}

fn new_key() -> Result<String, String> {
    Ok(keys::generate()?.private_pem)
}

fn load_key(path: &Path, pem: &str) -> Result<KeyPair, String> {
    KeyPair::from_pem(pem).map_err(|e| format!("{}: not a usable private key: {e}", path.display()))
}

/// The CA's parameters. Only the name and key matter to a verifier, so a CA certificate
/// re-created from the same key is interchangeable with the first one.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "mpgate-emulator");
    dn.push(DnType::CommonName, "mpgate-emulator test CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn server_params() -> Result<CertificateParams, String> {
    let names: Vec<String> = SERVER_NAMES.iter().map(|s| s.to_string()).collect();
    let mut params = CertificateParams::new(names).map_err(rc("server certificate names"))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "localhost");
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// Load or create the CA and server certificate in `dir` (which must exist), and build the
/// acceptor (aws-lc-rs provider, TLS 1.2/1.3, ALPN `http/1.1`).
pub fn prepare(dir: &Path) -> Result<Tls, String> {
    let ca_key_path = dir.join(CA_KEY_FILE);
    let ca_path = dir.join(CA_FILE);
    let server_key_path = dir.join(SERVER_KEY_FILE);
    let server_path = dir.join(SERVER_FILE);

    let ca_key_pem = create_once(&ca_key_path, 0o600, new_key)?;
    let ca_key = load_key(&ca_key_path, &ca_key_pem)?;
    create_once(&ca_path, 0o644, || {
        Ok(ca_params()
            .self_signed(&ca_key)
            .map_err(rc("cannot sign the CA certificate"))?
            .pem())
    })?;
    let server_key_pem = create_once(&server_key_path, 0o600, new_key)?;
    let server_key = load_key(&server_key_path, &server_key_pem)?;
    let server_pem = create_once(&server_path, 0o644, || {
        let issuer = Issuer::new(ca_params(), &ca_key);
        Ok(server_params()?
            .signed_by(&server_key, &issuer)
            .map_err(rc("cannot sign the server certificate"))?
            .pem())
    })?;

    let cert = pem_decode("CERTIFICATE", &server_pem)
        .ok_or_else(|| format!("{}: no PEM certificate", server_path.display()))?;
    let key = pem_decode("PRIVATE KEY", &server_key_pem)
        .ok_or_else(|| format!("{}: no PKCS#8 PEM key", server_key_path.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS configuration: {e}"))?
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert)],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
        )
        .map_err(|e| format!("TLS configuration: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Tls {
        ca_file: ca_path,
        acceptor: TlsAcceptor::from(Arc::new(config)),
    })
}

/// The `tls-handshake-failure` fault on a TLS listener: read the ClientHello record, answer
/// a fatal `handshake_failure` alert and close (after letting the client read the alert).
pub async fn fail_handshake(mut stream: TcpStream) {
    const ALERT: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28];
    let limit = std::time::Duration::from_secs(5);
    let _ = tokio::time::timeout(limit, async {
        let mut head = [0u8; 5];
        stream.read_exact(&mut head).await?;
        let len = usize::from(u16::from_be_bytes([head[3], head[4]]));
        let mut body = vec![0u8; len.min(1 << 15)];
        stream.read_exact(&mut body).await?;
        stream.write_all(&ALERT).await?;
        stream.shutdown().await?;
        // Drain until the client closes, so closing does not reset the alert away.
        let mut buf = [0u8; 4096];
        while stream.read(&mut buf).await? > 0 {}
        Ok::<(), std::io::Error>(())
    })
    .await;
}
