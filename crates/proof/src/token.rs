//! Owns token verification: the RegisterUsage `Signature` JWT, PS256 only, claims compared exactly.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;

/// Real tokens are under 1 KiB; anything near this bound is not from AWS Marketplace.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// How far in the future `iat` may be: clock skew between AWS and the node.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(60);

/// Why a token was refused; always exit code 12.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the service answered without a Signature token")]
    Missing,
    #[error("the token is {0} bytes, more than the {MAX_TOKEN_BYTES} a real one could be")]
    Oversize(usize),
    #[error("the token is not a JWS compact token ({0})")]
    Malformed(String),
    #[error("the token's algorithm is {0:?}, but AWS Marketplace signs with PS256 and nothing else is accepted")]
    WrongAlgorithm(String),
    #[error("the token's header carries {0:?}, which could point at an attacker's key; mpgate only trusts the configured key")]
    UntrustedHeader(&'static str),
    #[error("the token's signature does not verify with the configured public key version {0}: check that the configured key is the one AWS Marketplace gave you for that version")]
    BadSignature(i32),
    /// [`TokenError::BadSignature`], naming where the key came from.
    #[error("the token's signature does not verify with public key version {version} from {source_name}: check that it is the key AWS Marketplace gave you for that version")]
    WrongKey { version: i32, source_name: String },
    #[error("the token's claims are not valid JSON ({0})")]
    MalformedClaims(String),
    #[error("the token's claim {claim} is {found}, expected {expected}")]
    ClaimMismatch {
        claim: &'static str,
        found: String,
        expected: String,
    },
    #[error("the token was issued {0}s ago, more than the allowed {1}s (MPGATE_MAX_TOKEN_AGE): it may be a replay; check the node's clock")]
    Stale(u64, u64),
    #[error("the token was issued {0}s in the future: check the node's clock (NTP)")]
    Future(u64),
    #[error("the token expired {0}s ago")]
    Expired(u64),
}

impl TokenError {
    /// Names the key's source (`MPGATE_PUBLIC_KEY_DIR /keys/public-key-v2.pem`) in a
    /// signature failure; other errors are returned as they are.
    pub fn with_key_source(self, source_name: &str) -> TokenError {
        match self {
            TokenError::BadSignature(version) => TokenError::WrongKey {
                version,
                source_name: source_name.to_owned(),
            },
            other => other,
        }
    }
}

/// What the token must say: exactly what this run sent.
pub struct Expected<'a> {
    pub product_code: &'a str,
    pub public_key_version: i32,
    pub nonce: &'a str,
    pub max_age: Duration,
    /// Refuse a token without `iat`. The gate's fresh nonce already rules out replay; a
    /// re-check of a hand-over has only `iat` to bound it, so it requires one.
    pub require_iat: bool,
}

/// The claims mpgate reads. `Option<Value>` so a wrong type gets its own message; serde's
/// derive rejects duplicated keys, so `{"nonce":"a","nonce":"b"}` cannot smuggle a value in.
/// `present` keeps a JSON `null` as `Some(Null)`: a claim that is there must be right, and
/// `"iat": null` must not read as "no iat" and skip the time checks.
#[derive(Deserialize)]
struct Claims {
    #[serde(rename = "productCode", default, deserialize_with = "present")]
    product_code: Option<Value>,
    #[serde(rename = "publicKeyVersion", default, deserialize_with = "present")]
    public_key_version: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    nonce: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    iat: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    exp: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    nbf: Option<Value>,
}

/// The header fields mpgate inspects before jsonwebtoken does (a `null` counts as present).
#[derive(Deserialize)]
struct Header {
    #[serde(default, deserialize_with = "present")]
    alg: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    jku: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    jwk: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    x5u: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    x5c: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    crit: Option<Value>,
}

/// A field that is in the JSON, whatever its value (`null` included); absent fields take
/// `default` (`None`).
fn present<'de, D: serde::Deserializer<'de>>(field: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(field).map(Some)
}

/// Verifies a RegisterUsage token; on success the claims matched `expected` exactly.
pub fn verify(
    token: &str,
    key: &DecodingKey,
    expected: &Expected,
    now: SystemTime,
) -> Result<(), TokenError> {
    if token.is_empty() {
        return Err(TokenError::Missing);
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::Oversize(token.len()));
    }
    let segments: Vec<&str> = token.split('.').collect();
    if segments.len() != 3 {
        return Err(TokenError::Malformed(format!(
            "{} segments instead of 3",
            segments.len()
        )));
    }
    // The header first: an unsigned `alg: none` token should be named as such.
    check_segment(segments[0])?;
    check_header(segments[0])?;
    segments[1..].iter().try_for_each(|s| check_segment(s))?;

    let mut validation = Validation::new(Algorithm::PS256);
    // Real tokens have no exp/aud; the time claims are checked below with specific messages.
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    let claims = jsonwebtoken::decode::<Claims>(token, key, &validation)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                TokenError::BadSignature(expected.public_key_version)
            }
            jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => {
                TokenError::WrongAlgorithm("not PS256".into())
            }
            jsonwebtoken::errors::ErrorKind::Json(e) => TokenError::MalformedClaims(e.to_string()),
            jsonwebtoken::errors::ErrorKind::Utf8(e) => TokenError::MalformedClaims(e.to_string()),
            _ => TokenError::Malformed(e.to_string()),
        })?
        .claims;
    // The segment is valid base64url, or decode above would have failed.
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segments[1])
        .unwrap_or_default();
    json_object(&payload)
        .map(drop)
        .map_err(|e| TokenError::MalformedClaims(format!("they are {e}")))?;

    expect_string("productCode", claims.product_code, expected.product_code)?;
    match claims.public_key_version {
        Some(Value::Number(n)) if n.as_i64() == Some(i64::from(expected.public_key_version)) => {}
        other => {
            return Err(mismatch(
                "publicKeyVersion",
                other,
                expected.public_key_version.to_string(),
            ))
        }
    }
    expect_string("nonce", claims.nonce, expected.nonce)?;

    let now = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    if let Some(iat) = claims.iat {
        let iat = numeric_date("iat", iat)?;
        if iat > now + MAX_CLOCK_SKEW.as_secs_f64() {
            return Err(TokenError::Future((iat - now) as u64));
        }
        if now - iat > expected.max_age.as_secs_f64() {
            return Err(TokenError::Stale(
                (now - iat) as u64,
                expected.max_age.as_secs(),
            ));
        }
    } else if expected.require_iat {
        return Err(mismatch(
            "iat",
            None,
            "a NumericDate (seconds since 1970): without it the token's age is unknown".into(),
        ));
    }
    // AWS sends no nbf; one that is there is honoured (RFC 7519), with iat's clock skew.
    if let Some(nbf) = claims.nbf {
        if numeric_date("nbf", nbf.clone())? > now + MAX_CLOCK_SKEW.as_secs_f64() {
            return Err(mismatch(
                "nbf",
                Some(nbf),
                "a NumericDate no later than now: the token is not valid yet; check the node's clock (NTP)".into(),
            ));
        }
    }
    if let Some(exp) = claims.exp {
        let exp = numeric_date("exp", exp)?;
        if exp <= now {
            return Err(TokenError::Expired((now - exp) as u64));
        }
    }
    Ok(())
}

fn check_segment(segment: &str) -> Result<(), TokenError> {
    if segment.is_empty() {
        return Err(TokenError::Malformed("an empty segment".into()));
    }
    if !segment
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(TokenError::Malformed(
            "a segment that is not base64url".into(),
        ));
    }
    Ok(())
}

fn check_header(encoded: &str) -> Result<(), TokenError> {
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| TokenError::Malformed("the header is not base64url".into()))?;
    let members =
        json_object(&json).map_err(|e| TokenError::Malformed(format!("the header is {e}")))?;
    let header: Header = serde_json::from_slice(&json)
        .map_err(|e| TokenError::Malformed(format!("the header is not a JSON object: {e}")))?;
    match header.alg {
        Some(Value::String(alg)) if alg == "PS256" => {}
        Some(Value::String(alg)) => return Err(TokenError::WrongAlgorithm(alg)),
        _ => return Err(TokenError::WrongAlgorithm("missing".into())),
    }
    for (name, present) in [
        ("jku", header.jku.is_some()),
        ("jwk", header.jwk.is_some()),
        ("x5u", header.x5u.is_some()),
        ("x5c", header.x5c.is_some()),
        ("crit", header.crit.is_some()),
    ] {
        if present {
            return Err(TokenError::UntrustedHeader(name));
        }
    }
    // RFC 7797: b64 changes what the signature covers; AWS Marketplace never sets it.
    if let Some(b64) = members.get("b64") {
        return Err(TokenError::Malformed(format!(
            "the header sets b64 ({}), an unencoded payload (RFC 7797), which AWS Marketplace never uses",
            shortened(b64.to_string())
        )));
    }
    // kid, x5t, typ...: ignored (the key is the configured one, whatever they name), but in
    // a header AWS Marketplace signs every member is a string. jsonwebtoken would refuse
    // another type too, as an error of the claims.
    if let Some((name, value)) = members.iter().find(|(_, value)| !value.is_string()) {
        return Err(TokenError::Malformed(format!(
            "the header's {} is {}, not a string",
            shortened(name.clone()),
            shortened(value.to_string())
        )));
    }
    // What jsonwebtoken reads: its refusals of the header are the header's, not the claims'.
    serde_json::from_slice::<jsonwebtoken::Header>(&json)
        .map_err(|e| TokenError::Malformed(format!("the header is not a JWS header: {e}")))?;
    Ok(())
}

/// Checks JSON text is one object that every JSON reader reads alike. serde's derive, used for
/// the fields mpgate inspects, reads a struct from an array too (by position), and skips the
/// fields it does not know without fully reading them: `{"x":1e999}` or a lone surrogate
/// would pass it, while other readers refuse them or read something else.
fn json_object(json: &[u8]) -> Result<serde_json::Map<String, Value>, String> {
    serde_json::from_slice::<serde_json::Map<String, Value>>(json)
        .map_err(|e| format!("not a JSON object: {e}"))
}

/// Text from a token, at most 80 characters in a message.
fn shortened(text: String) -> String {
    if text.chars().count() > 80 {
        text.chars().take(77).chain("...".chars()).collect()
    } else {
        text
    }
}

fn expect_string(
    claim: &'static str,
    found: Option<Value>,
    expected: &str,
) -> Result<(), TokenError> {
    match found {
        Some(Value::String(s)) if s == expected => Ok(()),
        other => Err(mismatch(claim, other, format!("{expected:?}"))),
    }
}

fn mismatch(claim: &'static str, found: Option<Value>, expected: String) -> TokenError {
    let found = match found {
        None => "missing".to_string(),
        Some(v) => shortened(v.to_string()),
    };
    TokenError::ClaimMismatch {
        claim,
        found,
        expected,
    }
}

fn numeric_date(claim: &'static str, value: Value) -> Result<f64, TokenError> {
    match value.as_f64() {
        Some(t) if t.is_finite() => Ok(t),
        _ => Err(mismatch(
            claim,
            Some(value),
            "a NumericDate (seconds since 1970)".into(),
        )),
    }
}

/// A loggable form of a token: header and claims are public, the signature is shortened
/// (with everything after it: a token with extra segments may carry a whole one there).
pub fn redacted(token: &str) -> String {
    let mut parts = token.splitn(3, '.');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(header), Some(claims), Some(rest)) => {
            let shown: String = rest.chars().take(8).collect();
            format!("{header}.{claims}.{shown}...({} bytes)", token.len())
        }
        _ => format!("({} bytes, not a JWT)", token.len()),
    }
}
