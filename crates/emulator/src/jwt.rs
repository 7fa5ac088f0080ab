//! Minting RegisterUsage tokens: real PS256 JWTs, and the deliberately bad variants.

use aws_lc_rs::rsa::KeyPair;
use aws_lc_rs::signature::{RsaEncoding, RSA_PKCS1_SHA256, RSA_PSS_SHA256, RSA_PSS_SHA384};
use aws_lc_rs::{hmac, rand::SystemRandom};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Map, Value};

use crate::fault::Fault;

/// What the request asked for.
pub struct Request<'a> {
    pub product_code: &'a str,
    pub public_key_version: i64,
    pub nonce: Option<&'a str>,
}

/// What signs the token.
pub struct Signer<'a> {
    pub key: &'a KeyPair,
    pub public_pem: &'a str,
    /// A key unrelated to any served version (`token-wrong-key`).
    pub wrong_key: Option<&'a KeyPair>,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// What signs a token: an RSA key with its padding (PS256, RS256), or an HMAC secret.
enum Signing<'a> {
    Rsa(&'a KeyPair, &'static dyn RsaEncoding),
    Hs256(&'a [u8]),
}

fn sign(header: &str, claims: &Value, signing: Signing<'_>) -> Result<String, String> {
    let signing_input = format!(
        "{}.{}",
        b64(header.as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = match signing {
        Signing::Rsa(key, padding) => {
            let mut sig = vec![0; key.public_modulus_len()];
            key.sign(
                padding,
                &SystemRandom::new(),
                signing_input.as_bytes(),
                &mut sig,
            )
            .map_err(|e| format!("signing failed: {e}"))?;
            sig
        }
        Signing::Hs256(secret) => {
            let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
            hmac::sign(&key, signing_input.as_bytes()).as_ref().to_vec()
        }
    };
    Ok(format!("{signing_input}.{}", b64(&sig)))
}

/// A PS384 JWT of `claims` (License Manager's `SignedToken`, digital signature method
/// `JWT_PS384`), signed by `key`.
pub fn sign_ps384(claims: &Value, key: &KeyPair) -> Result<String, String> {
    sign(
        r#"{"alg":"PS384","typ":"JWT"}"#,
        claims,
        Signing::Rsa(key, &RSA_PSS_SHA384),
    )
}

const PS256_HEADER: &str = r#"{"alg":"PS256","typ":"JWT"}"#;

/// The `Signature` field of the answer, or `None` to leave it out (`token-missing`).
pub fn mint(
    req: &Request<'_>,
    signer: &Signer<'_>,
    fault: Fault,
    now: i64,
) -> Result<Option<String>, String> {
    let mut claims = Map::new();
    claims.insert("productCode".into(), json!(req.product_code));
    claims.insert("publicKeyVersion".into(), json!(req.public_key_version));
    if let Some(n) = req.nonce {
        claims.insert("nonce".into(), json!(n));
    }
    claims.insert("iat".into(), json!(now));

    let mut header = PS256_HEADER;
    let mut key = signer.key;
    let mut padding: &'static dyn RsaEncoding = &RSA_PSS_SHA256;
    match fault {
        Fault::TokenGarbage => return Ok(Some("not-a-jwt".into())),
        Fault::TokenMissing => return Ok(None),
        Fault::TokenEmpty => return Ok(Some(String::new())),
        Fault::TokenAlgNone => {
            let h = r#"{"alg":"none","typ":"JWT"}"#;
            let claims = Value::Object(claims);
            return Ok(Some(format!(
                "{}.{}.",
                b64(h.as_bytes()),
                b64(claims.to_string().as_bytes())
            )));
        }
        Fault::TokenWrongKey => {
            key = signer
                .wrong_key
                .ok_or_else(|| "no wrong key prepared".to_string())?;
        }
        Fault::TokenRs256 => {
            header = r#"{"alg":"RS256","typ":"JWT"}"#;
            padding = &RSA_PKCS1_SHA256;
        }
        Fault::TokenHs256PublicKey => {
            let claims = Value::Object(claims);
            return sign(
                r#"{"alg":"HS256","typ":"JWT"}"#,
                &claims,
                Signing::Hs256(signer.public_pem.as_bytes()),
            )
            .map(Some);
        }
        Fault::TokenWrongNonce => {
            let wrong = match req.nonce {
                Some(n) => format!("{n}-not-yours"),
                None => "nonce-nobody-sent".into(),
            };
            claims.insert("nonce".into(), json!(wrong));
        }
        Fault::TokenWrongProduct => {
            claims.insert(
                "productCode".into(),
                json!(format!("{}x", req.product_code)),
            );
        }
        Fault::TokenWrongVersion => {
            claims.insert(
                "publicKeyVersion".into(),
                json!(req.public_key_version.saturating_add(1)),
            );
        }
        Fault::TokenVersionString => {
            claims.insert(
                "publicKeyVersion".into(),
                json!(req.public_key_version.to_string()),
            );
        }
        Fault::TokenMissingNonce => {
            claims.remove("nonce");
        }
        Fault::TokenStaleIat => {
            claims.insert("iat".into(), json!(now - 3600));
        }
        Fault::TokenFutureIat => {
            claims.insert("iat".into(), json!(now + 3600));
        }
        Fault::TokenExpired => {
            claims.insert("exp".into(), json!(now - 60));
        }
        Fault::TokenNoIat => {
            claims.remove("iat");
        }
        Fault::TokenOversize => {
            claims.insert("junk".into(), json!("A".repeat(64 * 1024)));
        }
        _ => {}
    }
    let token = sign(header, &Value::Object(claims), Signing::Rsa(key, padding))?;
    if fault == Fault::TokenBadSignature {
        return Ok(Some(flip_signature_byte(&token)));
    }
    Ok(Some(token))
}

/// Flip one bit in the middle byte of the signature.
fn flip_signature_byte(token: &str) -> String {
    let Some((input, sig)) = token.rsplit_once('.') else {
        return token.to_string();
    };
    let Ok(mut bytes) = URL_SAFE_NO_PAD.decode(sig) else {
        return token.to_string();
    };
    if bytes.is_empty() {
        return token.to_string();
    }
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    format!("{input}.{}", b64(&bytes))
}
