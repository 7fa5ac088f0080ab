//! Keys whose private halves are published: each is refused as the configured key (in SPKI
//! and PKCS#1 form, with a message that names it), and a token it signs is never accepted.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mpgate_proof::{decoding_key, verify, DecodingKey, Expected, KeyError, TokenError};

const PRODUCT: &str = "prod-abc123";
const NONCE: &str = "fresh-nonce";

fn fixture(key: &str, file: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/published-keys")
        .join(key)
        .join(file);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn pem(label: &str, der: &[u8]) -> Vec<u8> {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
    .into_bytes()
}

/// Refused as the configured key: the SPKI file as published and the same key as PKCS#1.
fn refused_as_configured_key(key: &str, named: &str) {
    let spki = fixture(key, "public.pem");
    let pkcs1 = pem(
        "RSA PUBLIC KEY",
        DecodingKey::from_rsa_pem(&spki).unwrap().as_bytes(),
    );
    for (form, text) in [("SPKI", spki), ("PKCS#1", pkcs1)] {
        match decoding_key(&text) {
            Err(KeyError::Unsafe(message)) => {
                assert!(message.contains(named), "{key} ({form}): {message}");
                assert!(
                    message.contains("private key is public"),
                    "{key} ({form}): {message}"
                );
            }
            Err(other) => panic!("{key} ({form}) refused for the wrong reason: {other}"),
            Ok(_) => panic!("{key} ({form}) was ACCEPTED as a configured key"),
        }
    }
}

/// A token with exactly the expected claims, PS256-signed with the published private key, is
/// refused under a genuine key; the fixture itself is sound (the token verifies under the
/// published public key when the deny list is bypassed), so the refusal is the deny list's.
fn refused_as_signer(key: &str) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "productCode": PRODUCT, "publicKeyVersion": 1, "nonce": NONCE, "iat": now
    });
    let signer = EncodingKey::from_rsa_pem(&fixture(key, "private.pem")).unwrap();
    let token = jsonwebtoken::encode(&Header::new(Algorithm::PS256), &claims, &signer).unwrap();

    let mut validation = jsonwebtoken::Validation::new(Algorithm::PS256);
    validation.required_spec_claims.clear();
    let published = DecodingKey::from_rsa_pem(&fixture(key, "public.pem")).unwrap();
    jsonwebtoken::decode::<serde_json::Value>(&token, &published, &validation)
        .unwrap_or_else(|e| panic!("{key}: the fixture's token does not verify: {e}"));

    let genuine = KeyPair::generate(KeySize::Rsa2048).unwrap();
    let genuine = decoding_key(&pem(
        "PUBLIC KEY",
        genuine.public_key().as_der().unwrap().as_ref(),
    ))
    .unwrap();
    let expected = Expected {
        product_code: PRODUCT,
        public_key_version: 1,
        nonce: NONCE,
        max_age: Duration::from_secs(300),
        require_iat: true,
    };
    assert_eq!(
        verify(&token, &genuine, &expected, SystemTime::now()),
        Err(TokenError::BadSignature(1)),
        "{key}"
    );
}

#[test]
fn the_aws_seller_guide_sample_key_is_refused() {
    // 1024-bit: refused by the deny list before its size; too small for aws-lc to sign with.
    refused_as_configured_key("aws-seller-guide", "AWS Marketplace seller guide");
}

#[test]
fn the_jwt_io_demo_key_is_refused() {
    refused_as_configured_key("jwtio-rs256", "jwt.io's demo RSA key");
    refused_as_signer("jwtio-rs256");
}

#[test]
fn the_jwt_io_2019_2021_demo_key_is_refused() {
    refused_as_configured_key("jwtio-2019-2021", "jwt.io's 2019-2021 demo RSA key");
    refused_as_signer("jwtio-2019-2021");
}

#[test]
fn the_rfc_7515_appendix_a2_key_is_refused() {
    refused_as_configured_key("rfc7515-a2", "RFC 7515");
    refused_as_signer("rfc7515-a2");
}

#[test]
fn the_rfc_7520_section_3_4_key_is_refused() {
    refused_as_configured_key("rfc7520-3.4", "RFC 7520");
    refused_as_signer("rfc7520-3.4");
}
