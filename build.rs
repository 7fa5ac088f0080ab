//! Build script: writes the Mozilla CA roots (from the locked `webpki-root-certs` crate) as one
//! PEM bundle that `src/http.rs` compiles in, so HTTPS works in images without a CA store.

use base64::Engine;
use std::fmt::Write;

fn main() {
    let mut pem = String::new();
    for cert in webpki_root_certs::TLS_SERVER_ROOT_CERTS {
        let b64 = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
    }
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    let path = std::path::Path::new(&out).join("mozilla-roots.pem");
    std::fs::write(&path, pem).expect("write mozilla-roots.pem");
    let mut count = String::new();
    let _ = write!(count, "{}", webpki_root_certs::TLS_SERVER_ROOT_CERTS.len());
    println!("cargo:rustc-env=MPGATE_MOZILLA_ROOTS={count}");
    println!("cargo:rerun-if-changed=build.rs");
}
