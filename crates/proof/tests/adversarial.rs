//! An adversarial corpus of RegisterUsage tokens: every one must be refused by
//! `mpgate_proof::verify` with the specific `TokenError` it deserves, never accepted and
//! never with a panic. Keys are generated here with aws-lc-rs; tokens are signed from raw
//! header and payload strings so duplicated keys, odd types and non-UTF-8 bytes survive.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use mpgate_proof::{decoding_key, redacted, verify, Expected, TokenError, MAX_TOKEN_BYTES};

const NOW: u64 = 1_750_000_000;
const PRODUCT: &str = "prod-abc123";
const NONCE: &str = "good";
const VERSION: i32 = 1;
const PS256: &str = r#"{"alg":"PS256","typ":"JWT"}"#;

/// A real 1024-bit RSA public key (SPKI), too small for PS256.
const RSA_1024_SPKI: &str = "-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQC6HaLQ5bEwcQARbTY3eNJnxPDa
JvyCjdOggJAlHot8zeytA+jiD4TPiWEoQnSsdgmtTpC4VF9YKsB8nkySuVZyrT45
NK2cGh8tJpfnBTRwQHctNcrERmaR4yKagWY7b0xqcCD/sVYLCbkXdUCz9ZUurxnT
3PuxBbbZb0IPeJfQFQIDAQAB
-----END PUBLIC KEY-----
";
/// The same key as PKCS#1.
const RSA_1024_PKCS1: &str = "-----BEGIN RSA PUBLIC KEY-----
MIGJAoGBALodotDlsTBxABFtNjd40mfE8Nom/IKN06CAkCUei3zN7K0D6OIPhM+J
YShCdKx2Ca1OkLhUX1gqwHyeTJK5VnKtPjk0rZwaHy0ml+cFNHBAdy01ysRGZpHj
IpqBZjtvTGpwIP+xVgsJuRd1QLP1lS6vGdPc+7EFttlvQg94l9AVAgMBAAE=
-----END RSA PUBLIC KEY-----
";

/// The sample public key in the AWS Marketplace seller guide's RegisterUsage example. Its
/// private half is published too (jwt.io's demo RS256 key): anyone can sign with it.
const SELLER_GUIDE_DEMO_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDdlatRjRjogo3WojgGHFHYLugd
UWAY9iR3fy4arWNA1KoS8kVw33cJibXr8bvwUAUparCwlvdbH6dvEOfou0/gCFQs
HUfQrSDv+MuSUMAe8jzKE4qW+jK+xQU9a03GUnKHkkle+Q0pX/g6jXZ7r1/xAK5D
o2kQ+X5xK9cipRgEKwIDAQAB
-----END PUBLIC KEY-----
";
/// The corpus's good claims, PS256-signed offline (openssl, PSS salt 32) with that published
/// private key; aws-lc refuses to sign with a 1024-bit key, so the token is kept as text.
const SELLER_GUIDE_DEMO_TOKEN: &str = "eyJhbGciOiJQUzI1NiIsInR5cCI6IkpXVCJ9.eyJwcm9kdWN0Q29kZSI6InByb2QtYWJjMTIzIiwicHVibGljS2V5VmVyc2lvbiI6MSwibm9uY2UiOiJnb29kIiwiaWF0IjoxNzUwMDAwMDAwfQ.UnH9v9ZqTBbG6PJNY_qiIuVlVXFaMRsPJ2LZR5e523IyB967p7xklIfvlnFK-3PXNU8F_EPRwQjd2vwqtHFp5wzHfVRqldiRlzVcNWXNGTji-5yWyoBhzbnE1L1meL4AaeDM2Z0BWECv0Yt8jbwBVXD2vok0ooSoOOAvNy_VlKM";

fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

struct RsaKeys {
    private_pem: String,
    public_pem: String,
    signing: EncodingKey,
}

fn rsa_keys() -> RsaKeys {
    let kp = KeyPair::generate(KeySize::Rsa2048).expect("RSA-2048 key generation");
    let private_pem = pem_encode("PRIVATE KEY", kp.as_der().expect("PKCS#8").as_ref());
    let public_pem = pem_encode(
        "PUBLIC KEY",
        kp.public_key().as_der().expect("SPKI").as_ref(),
    );
    let signing = EncodingKey::from_rsa_pem(private_pem.as_bytes()).expect("signing key");
    RsaKeys {
        private_pem,
        public_pem,
        signing,
    }
}

struct Fixture {
    /// The key AWS Marketplace signs with (the one mpgate is configured with).
    right: RsaKeys,
    /// An unrelated RSA-2048 key an attacker holds.
    attacker: RsaKeys,
    /// A P-256 key.
    ec_signing: EncodingKey,
    ec_public_pem: String,
    ec_private_pem: String,
    /// `decoding_key(right.public_pem)`.
    key: DecodingKey,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let right = rsa_keys();
        let attacker = rsa_keys();
        let ec = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("P-256 key");
        let ec_pkcs8 = ec.to_pkcs8v1().expect("P-256 PKCS#8");
        let ec_public_pem = pem_encode(
            "PUBLIC KEY",
            ec.public_key().as_der().expect("P-256 SPKI").as_ref(),
        );
        let ec_private_pem = pem_encode("PRIVATE KEY", ec_pkcs8.as_ref());
        let key = decoding_key(right.public_pem.as_bytes()).expect("the right key is accepted");
        Fixture {
            right,
            attacker,
            ec_signing: EncodingKey::from_ec_der(ec_pkcs8.as_ref()),
            ec_public_pem,
            ec_private_pem,
            key,
        }
    })
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Sign raw header and payload bytes exactly as given (no re-serialisation).
fn sign_raw(header: &str, payload: &[u8], key: &EncodingKey, alg: Algorithm) -> String {
    let input = format!("{}.{}", b64(header.as_bytes()), b64(payload));
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), key, alg).expect("signing");
    format!("{input}.{sig}")
}

/// PS256 with the right key: only the content is wrong.
fn ps256(header: &str, payload: &str) -> String {
    sign_raw(
        header,
        payload.as_bytes(),
        &fixture().right.signing,
        Algorithm::PS256,
    )
}

fn unsigned(header: &str, payload: &str) -> String {
    format!("{}.{}.", b64(header.as_bytes()), b64(payload.as_bytes()))
}

fn claims_with(nonce: &str, iat: u64) -> String {
    format!(
        r#"{{"productCode":"{PRODUCT}","publicKeyVersion":{VERSION},"nonce":"{nonce}","iat":{iat}}}"#
    )
}

/// The good claims with `iat` written exactly as given (a float, an exponent...).
fn claims_with_raw_iat(iat: &str) -> String {
    format!(
        r#"{{"productCode":"{PRODUCT}","publicKeyVersion":{VERSION},"nonce":"{NONCE}","iat":{iat}}}"#
    )
}

/// The good claims plus `nbf` written exactly as given.
fn claims_with_raw_nbf(nbf: &str) -> String {
    format!(
        r#"{{"productCode":"{PRODUCT}","publicKeyVersion":{VERSION},"nonce":"{NONCE}","iat":{NOW},"nbf":{nbf}}}"#
    )
}

fn good_claims() -> String {
    claims_with(NONCE, NOW)
}

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW)
}

fn expected() -> Expected<'static> {
    Expected {
        product_code: PRODUCT,
        public_key_version: VERSION,
        nonce: NONCE,
        max_age: Duration::from_secs(300),
        require_iat: false,
    }
}

fn check(token: &str) -> std::thread::Result<Result<(), TokenError>> {
    let fx = fixture();
    catch_unwind(AssertUnwindSafe(|| {
        verify(token, &fx.key, &expected(), now())
    }))
}

/// Split a token into its three segments.
fn parts(token: &str) -> (&str, &str, &str) {
    let (input, sig) = token.rsplit_once('.').expect("a signature segment");
    let (header, payload) = input.split_once('.').expect("a payload segment");
    (header, payload, sig)
}

/// What a case must be refused with.
enum Want {
    /// Exactly this error.
    Is(TokenError),
    /// `WrongAlgorithm` naming this algorithm (`None`: any value).
    WrongAlg(Option<&'static str>),
    /// `Malformed` whose message contains this.
    Malformed(&'static str),
    /// `MalformedClaims` whose message contains this.
    MalformedClaims(&'static str),
    /// `ClaimMismatch` on this claim, with `found` containing the second string.
    Claim(&'static str, &'static str),
    /// `Oversize` of the token's own length.
    Oversize,
}

impl Want {
    fn accepts(&self, token: &str, err: &TokenError) -> bool {
        match (self, err) {
            (Want::Is(want), got) => want == got,
            (Want::WrongAlg(None), TokenError::WrongAlgorithm(_)) => true,
            (Want::WrongAlg(Some(alg)), TokenError::WrongAlgorithm(got)) => alg == got,
            (Want::Malformed(text), TokenError::Malformed(msg)) => msg.contains(text),
            (Want::MalformedClaims(text), TokenError::MalformedClaims(msg)) => msg.contains(text),
            (
                Want::Claim(claim, found),
                TokenError::ClaimMismatch {
                    claim: c, found: f, ..
                },
            ) => claim == c && f.contains(found),
            (Want::Oversize, TokenError::Oversize(n)) => *n == token.len(),
            _ => false,
        }
    }

    fn describe(&self) -> String {
        match self {
            Want::Is(e) => format!("{e:?}"),
            Want::WrongAlg(a) => format!("WrongAlgorithm({a:?})"),
            Want::Malformed(t) => format!("Malformed(..{t:?}..)"),
            Want::MalformedClaims(t) => format!("MalformedClaims(..{t:?}..)"),
            Want::Claim(c, f) => format!("ClaimMismatch {{ claim: {c:?}, found: ..{f:?}.. }}"),
            Want::Oversize => "Oversize(token length)".into(),
        }
    }
}

/// `sig` (an RSA-2048 signature, 342 characters) with the unused low bits of its last
/// character set, which decodes to the same bytes only if trailing bits are ignored.
fn non_canonical(sig: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    assert_eq!(sig.len(), 342, "an RSA-2048 signature");
    let last = sig.as_bytes()[sig.len() - 1];
    let value = ALPHABET.iter().position(|&c| c == last).expect("base64url");
    assert_eq!(value & 0x0f, 0, "canonical to start with");
    let twisted = char::from(ALPHABET[value | 0x0f]);
    format!("{}{twisted}", &sig[..sig.len() - 1])
}

fn mismatch_sig() -> TokenError {
    TokenError::BadSignature(VERSION)
}

fn corpus() -> Vec<(&'static str, String, Want)> {
    use Want::*;
    let fx = fixture();
    let good = good_claims();
    let g = good.as_str();
    let right = &fx.right.signing;
    let attacker = &fx.attacker.signing;
    let sign = |h: &str, p: &str, k: &EncodingKey, a: Algorithm| sign_raw(h, p.as_bytes(), k, a);
    let with_alg = |alg: &str| format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#);
    let real = ps256(PS256, g);
    let (rh, rp, rs) = parts(&real);
    let (rh, rp, rs) = (rh.to_string(), rp.to_string(), rs.to_string());
    let hmac_pem = EncodingKey::from_secret(fx.right.public_pem.as_bytes());
    let hmac_der = EncodingKey::from_secret(fx.key.as_bytes());
    let huge = "A".repeat(MAX_TOKEN_BYTES);

    let mut c: Vec<(&'static str, String, Want)> = vec![
        // --- alg: none, in three spellings, unsigned and with a real signature over it.
        ("alg_none_unsigned", unsigned(&with_alg("none"), g), WrongAlg(Some("none"))),
        ("alg_none_signed", sign(&with_alg("none"), g, right, Algorithm::PS256), WrongAlg(Some("none"))),
        ("alg_None_unsigned", unsigned(&with_alg("None"), g), WrongAlg(Some("None"))),
        ("alg_None_signed", sign(&with_alg("None"), g, right, Algorithm::PS256), WrongAlg(Some("None"))),
        ("alg_nOnE_unsigned", unsigned(&with_alg("nOnE"), g), WrongAlg(Some("nOnE"))),
        ("alg_nOnE_signed", sign(&with_alg("nOnE"), g, right, Algorithm::PS256), WrongAlg(Some("nOnE"))),
        ("alg_none_no_third_segment", format!("{}.{}", b64(with_alg("none").as_bytes()), rp), Malformed("2 segments")),
        // --- Key confusion: HMAC keyed with the RSA public key (PEM text, and the DER jsonwebtoken holds).
        ("hs256_public_pem_secret", sign(&with_alg("HS256"), g, &hmac_pem, Algorithm::HS256), WrongAlg(Some("HS256"))),
        ("hs384_public_pem_secret", sign(&with_alg("HS384"), g, &hmac_pem, Algorithm::HS384), WrongAlg(Some("HS384"))),
        ("hs512_public_pem_secret", sign(&with_alg("HS512"), g, &hmac_pem, Algorithm::HS512), WrongAlg(Some("HS512"))),
        ("hs256_public_der_secret", sign(&with_alg("HS256"), g, &hmac_der, Algorithm::HS256), WrongAlg(Some("HS256"))),
        ("hs256_header_says_ps256", sign(PS256, g, &hmac_pem, Algorithm::HS256), Is(mismatch_sig())),
        // --- Other algorithms and keys.
        ("rs256_right_key", sign(&with_alg("RS256"), g, right, Algorithm::RS256), WrongAlg(Some("RS256"))),
        ("rs256_other_key", sign(&with_alg("RS256"), g, attacker, Algorithm::RS256), WrongAlg(Some("RS256"))),
        ("rs256_signature_under_ps256_header", sign(PS256, g, right, Algorithm::RS256), Is(mismatch_sig())),
        ("es256_p256_key", sign(&with_alg("ES256"), g, &fx.ec_signing, Algorithm::ES256), WrongAlg(Some("ES256"))),
        ("es256_signature_under_ps256_header", sign(PS256, g, &fx.ec_signing, Algorithm::ES256), Is(mismatch_sig())),
        ("ps256_attacker_key", sign(PS256, g, attacker, Algorithm::PS256), Is(mismatch_sig())),
        ("ps256_seller_guide_demo_key", SELLER_GUIDE_DEMO_TOKEN.into(), Is(mismatch_sig())),
        ("ps384_right_key", sign(&with_alg("PS384"), g, right, Algorithm::PS384), WrongAlg(Some("PS384"))),
        ("ps512_right_key", sign(&with_alg("PS512"), g, right, Algorithm::PS512), WrongAlg(Some("PS512"))),
        ("ps384_signature_under_ps256_header", sign(PS256, g, right, Algorithm::PS384), Is(mismatch_sig())),
        ("alg_lowercase_ps256", ps256(r#"{"alg":"ps256"}"#, g), WrongAlg(Some("ps256"))),
        ("alg_ps256_trailing_space", ps256(r#"{"alg":"PS256 "}"#, g), WrongAlg(Some("PS256 "))),
        ("alg_ps256_trailing_nul", ps256(r#"{"alg":"PS256\u0000"}"#, g), WrongAlg(Some("PS256\0"))),
        // --- Header fields naming other keys; all signed by the attacker, who controls them.
        ("header_jwk", sign(r#"{"alg":"PS256","jwk":{"kty":"RSA","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw","e":"AQAB"}}"#, g, attacker, Algorithm::PS256), Is(TokenError::UntrustedHeader("jwk"))),
        ("header_jku", sign(r#"{"alg":"PS256","jku":"https://attacker.example/jwks.json"}"#, g, attacker, Algorithm::PS256), Is(TokenError::UntrustedHeader("jku"))),
        ("header_x5u", sign(r#"{"alg":"PS256","x5u":"https://attacker.example/cert.pem"}"#, g, attacker, Algorithm::PS256), Is(TokenError::UntrustedHeader("x5u"))),
        ("header_x5c", sign(r#"{"alg":"PS256","x5c":["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"]}"#, g, attacker, Algorithm::PS256), Is(TokenError::UntrustedHeader("x5c"))),
        ("header_jku_null", ps256(r#"{"alg":"PS256","jku":null}"#, g), Is(TokenError::UntrustedHeader("jku"))),
        ("header_crit", ps256(r#"{"alg":"PS256","crit":["b64"],"b64":false}"#, g), Is(TokenError::UntrustedHeader("crit"))),
        ("header_kid_attacker_key", sign(r#"{"alg":"PS256","kid":"attacker-key-v1"}"#, g, attacker, Algorithm::PS256), Is(mismatch_sig())),
        // kid, x5t and x5t#S256 only name a key: mpgate ignores them (the configured key for
        // the configured version verifies, whatever they say), so the attacker's signature
        // still fails as a signature. Not a string: a header error naming the member.
        ("header_x5t_attacker_key", sign(r#"{"alg":"PS256","typ":"JWT","x5t":"NTBGNTJEMkI1RjJCMzE0QTdFNjVDRUIyNTJDQkUxQ0I1MTEyQTUxNQ"}"#, g, attacker, Algorithm::PS256), Is(mismatch_sig())),
        ("header_x5t_s256_attacker_key", sign(r#"{"alg":"PS256","typ":"JWT","x5t#S256":"5Vqh6cI-4s0tcz4wXyQpe2j5eH6zv4iBCe3SVRFOKM0"}"#, g, attacker, Algorithm::PS256), Is(mismatch_sig())),
        ("header_kid_and_x5t_attacker_key", sign(r#"{"alg":"PS256","typ":"JWT","kid":"1","x5t":"AAAA"}"#, g, attacker, Algorithm::PS256), Is(mismatch_sig())),
        ("header_kid_number", ps256(r#"{"alg":"PS256","typ":"JWT","kid":1}"#, g), Malformed("the header's kid is 1")),
        ("header_kid_object", ps256(r#"{"alg":"PS256","typ":"JWT","kid":{"version":1}}"#, g), Malformed("the header's kid is {")),
        ("header_x5t_array", ps256(r#"{"alg":"PS256","typ":"JWT","x5t":["AAAA"]}"#, g), Malformed("the header's x5t is [")),
        // b64 (RFC 7797) changes what the signature covers; AWS Marketplace never sets it.
        // A header error, with or without crit, whatever its value.
        ("header_b64_false", ps256(r#"{"alg":"PS256","typ":"JWT","b64":false}"#, g), Malformed("b64")),
        ("header_b64_false_signed_over_raw_payload", sign_raw(r#"{"alg":"PS256","typ":"JWT","b64":false}"#, g.as_bytes(), right, Algorithm::PS256), Malformed("b64")),
        ("header_b64_true", ps256(r#"{"alg":"PS256","typ":"JWT","b64":true}"#, g), Malformed("b64")),
        ("header_b64_string", ps256(r#"{"alg":"PS256","typ":"JWT","b64":"false"}"#, g), Malformed("b64")),
        // typ, when there, is a string (AWS sends "JWT"); an object or a number is a header
        // error, not a claim error.
        ("header_typ_object", ps256(r#"{"alg":"PS256","typ":{"JWT":true}}"#, g), Malformed("the header's typ is {")),
        ("header_typ_number", ps256(r#"{"alg":"PS256","typ":1}"#, g), Malformed("the header's typ is 1")),
        ("header_typ_null", ps256(r#"{"alg":"PS256","typ":null}"#, g), Malformed("the header's typ is null")),
        // A member jsonwebtoken reads twice: a header error too, neither value wins.
        ("header_duplicate_kid", ps256(r#"{"alg":"PS256","typ":"JWT","kid":"1","kid":"2"}"#, g), Malformed("the header is not a JWS header: duplicate field `kid`")),
        ("header_duplicate_typ", ps256(r#"{"alg":"PS256","typ":"JWT","typ":"JWT"}"#, g), Malformed("the header is not a JWS header: duplicate field `typ`")),
        ("header_cty_object", ps256(r#"{"alg":"PS256","typ":"JWT","cty":{}}"#, g), Malformed("the header's cty is {}")),
        // --- Malformed headers.
        ("header_missing_alg", ps256(r#"{"typ":"JWT"}"#, g), WrongAlg(Some("missing"))),
        ("header_alg_number", ps256(r#"{"alg":256}"#, g), WrongAlg(None)),
        ("header_alg_array", ps256(r#"{"alg":["PS256"]}"#, g), WrongAlg(None)),
        ("header_alg_null", ps256(r#"{"alg":null}"#, g), WrongAlg(None)),
        ("header_duplicate_alg_ps256_then_none", ps256(r#"{"alg":"PS256","alg":"none"}"#, g), Malformed("duplicate field `alg`")),
        ("header_duplicate_alg_none_then_ps256", ps256(r#"{"alg":"none","alg":"PS256"}"#, g), Malformed("duplicate field `alg`")),
        ("header_not_json", ps256("PS256", g), Malformed("not a JSON object")),
        ("header_json_array", ps256(r#"["PS256",null,null,null,null,null]"#, g), Malformed("not a JSON object")),
        ("header_trailing_garbage", ps256(r#"{"alg":"PS256"}x"#, g), Malformed("not a JSON object")),
        ("header_number_out_of_range_unknown_field", ps256(r#"{"alg":"PS256","x":1e999}"#, g), Malformed("number out of range")),
        ("header_not_utf8", format!("{}.{rp}.{rs}", b64(b"{\"alg\":\"PS256\xff\"}")), Malformed("not a JSON object")),
        // --- Claims that are not what this run sent.
        ("nonce_wrong", ps256(PS256, &claims_with("bad", NOW)), Is(TokenError::ClaimMismatch { claim: "nonce", found: "\"bad\"".into(), expected: "\"good\"".into() })),
        ("nonce_missing", ps256(PS256, &format!(r#"{{"productCode":"{PRODUCT}","publicKeyVersion":1,"iat":{NOW}}}"#)), Claim("nonce", "missing")),
        ("nonce_number", ps256(PS256, &format!(r#"{{"productCode":"{PRODUCT}","publicKeyVersion":1,"nonce":0,"iat":{NOW}}}"#)), Claim("nonce", "0")),
        ("nonce_prefix", ps256(PS256, &claims_with("goo", NOW)), Claim("nonce", "\"goo\"")),
        ("nonce_escaped_nul_suffix", ps256(PS256, &claims_with("good\\u0000", NOW)), Claim("nonce", "good\\u0000")),
        ("nonce_raw_nul_byte", sign_raw(PS256, format!(r#"{{"productCode":"{PRODUCT}","publicKeyVersion":1,"nonce":"good{}","iat":{NOW}}}"#, '\0').as_bytes(), right, Algorithm::PS256), MalformedClaims("control character")),
        ("product_wrong", ps256(PS256, &format!(r#"{{"productCode":"other","publicKeyVersion":1,"nonce":"good","iat":{NOW}}}"#)), Claim("productCode", "\"other\"")),
        ("product_missing", ps256(PS256, &format!(r#"{{"publicKeyVersion":1,"nonce":"good","iat":{NOW}}}"#)), Claim("productCode", "missing")),
        ("version_missing", ps256(PS256, &format!(r#"{{"productCode":"{PRODUCT}","nonce":"good","iat":{NOW}}}"#)), Claim("publicKeyVersion", "missing")),
        ("version_2", ps256(PS256, &format!(r#"{{"productCode":"{PRODUCT}","publicKeyVersion":2,"nonce":"good","iat":{NOW}}}"#)), Is(TokenError::ClaimMismatch { claim: "publicKeyVersion", found: "2".into(), expected: "1".into() })),
        ("version_string_1", ps256(PS256, &format!(r#"{{"productCode":"{PRODUCT}","publicKeyVersion":"1","nonce":"good","iat":{NOW}}}"#)), Claim("publicKeyVersion", "\"1\"")),
        ("version_1_5", ps256(PS256, &format!(r#"{{"productCode":"{PRODUCT}","publicKeyVersion":1.5,"nonce":"good","iat":{NOW}}}"#)), Claim("publicKeyVersion", "1.5")),
        ("version_1_0", ps256(PS256, &format!(r#"{{"productCode":"{PRODUCT}","publicKeyVersion":1.0,"nonce":"good","iat":{NOW}}}"#)), Claim("publicKeyVersion", "1.0")),
        ("version_2_pow_32_plus_1", ps256(PS256, &format!(r#"{{"productCode":"{PRODUCT}","publicKeyVersion":4294967297,"nonce":"good","iat":{NOW}}}"#)), Claim("publicKeyVersion", "4294967297")),
        // --- Duplicated claims: neither the first nor the last value may win.
        ("duplicate_nonce_good_then_bad", ps256(PS256, &format!(r#"{{"productCode":"{PRODUCT}","publicKeyVersion":1,"nonce":"good","nonce":"bad","iat":{NOW}}}"#)), MalformedClaims("duplicate field `nonce`")),
        ("duplicate_nonce_bad_then_good", ps256(PS256, &format!(r#"{{"productCode":"{PRODUCT}","publicKeyVersion":1,"nonce":"bad","nonce":"good","iat":{NOW}}}"#)), MalformedClaims("duplicate field `nonce`")),
        ("duplicate_product_code", ps256(PS256, &format!(r#"{{"productCode":"other","productCode":"{PRODUCT}","publicKeyVersion":1,"nonce":"good","iat":{NOW}}}"#)), MalformedClaims("duplicate field `productCode`")),
        ("duplicate_version", ps256(PS256, &format!(r#"{{"productCode":"{PRODUCT}","publicKeyVersion":2,"publicKeyVersion":1,"nonce":"good","iat":{NOW}}}"#)), MalformedClaims("duplicate field `publicKeyVersion`")),
        ("duplicate_iat", ps256(PS256, &format!(r#"{{"productCode":"{PRODUCT}","publicKeyVersion":1,"nonce":"good","iat":1,"iat":{NOW}}}"#)), MalformedClaims("duplicate field `iat`")),
        // --- Time.
        ("iat_stale", ps256(PS256, &claims_with(NONCE, NOW - 3600)), Is(TokenError::Stale(3600, 300))),
        ("iat_far_future", ps256(PS256, &claims_with(NONCE, NOW + 3600)), Is(TokenError::Future(3600))),
        ("iat_string", ps256(PS256, &format!(r#"{{"productCode":"{PRODUCT}","publicKeyVersion":1,"nonce":"good","iat":"{NOW}"}}"#)), Claim("iat", "\"1750000000\"")),
        ("iat_array", ps256(PS256, &format!(r#"{{"productCode":"{PRODUCT}","publicKeyVersion":1,"nonce":"good","iat":[]}}"#)), Claim("iat", "[]")),
        ("iat_zero", ps256(PS256, &claims_with(NONCE, 0)), Is(TokenError::Stale(NOW, 300))),
        // NumericDate is any JSON number (RFC 7519): a float or an exponent is read as the
        // number it is, with the same bounds.
        ("iat_exponent_stale", ps256(PS256, &claims_with_raw_iat("1.7e9")), Is(TokenError::Stale(50_000_000, 300))),
        ("iat_float_stale", ps256(PS256, &claims_with_raw_iat("1700000000.0")), Is(TokenError::Stale(50_000_000, 300))),
        ("iat_exponent_future", ps256(PS256, &claims_with_raw_iat("1.76E+9")), Is(TokenError::Future(10_000_000))),
        ("iat_negative_exponent", ps256(PS256, &claims_with_raw_iat("-1e0")), Is(TokenError::Stale(NOW + 1, 300))),
        ("iat_exponent_out_of_range", ps256(PS256, &claims_with_raw_iat("1e999")), MalformedClaims("number out of range")),
        // nbf: AWS never sends one; when there it is honoured (RFC 7519: not accepted before
        // it), with the same clock skew as iat, and must be a NumericDate.
        ("nbf_future", ps256(PS256, &claims_with_raw_nbf(&(NOW + 3600).to_string())), Claim("nbf", "1750003600")),
        ("nbf_future_exponent", ps256(PS256, &claims_with_raw_nbf("1.76e9")), Claim("nbf", "1760000000")),
        ("nbf_just_past_the_skew", ps256(PS256, &claims_with_raw_nbf(&(NOW + 61).to_string())), Claim("nbf", "1750000061")),
        ("nbf_string", ps256(PS256, &claims_with_raw_nbf(&format!("\"{NOW}\""))), Claim("nbf", "\"1750000000\"")),
        ("nbf_null", ps256(PS256, &claims_with_raw_nbf("null")), Claim("nbf", "null")),
        ("exp_expired", ps256(PS256, &format!(r#"{{"productCode":"{PRODUCT}","publicKeyVersion":1,"nonce":"good","iat":{NOW},"exp":{}}}"#, NOW - 60)), Is(TokenError::Expired(60))),
        // A claim that is there with JSON null is a mismatch, never read as absent (which
        // would skip the iat/exp checks).
        ("iat_null", ps256(PS256, &format!(r#"{{"productCode":"{PRODUCT}","publicKeyVersion":1,"nonce":"good","iat":null}}"#)), Claim("iat", "null")),
        ("exp_null", ps256(PS256, &format!(r#"{{"productCode":"{PRODUCT}","publicKeyVersion":1,"nonce":"good","iat":{NOW},"exp":null}}"#)), Claim("exp", "null")),
        ("nonce_null", ps256(PS256, &format!(r#"{{"productCode":"{PRODUCT}","publicKeyVersion":1,"nonce":null,"iat":{NOW}}}"#)), Claim("nonce", "null")),
        ("product_null", ps256(PS256, &format!(r#"{{"productCode":null,"publicKeyVersion":1,"nonce":"good","iat":{NOW}}}"#)), Claim("productCode", "null")),
        ("version_null", ps256(PS256, &format!(r#"{{"productCode":"{PRODUCT}","publicKeyVersion":null,"nonce":"good","iat":{NOW}}}"#)), Claim("publicKeyVersion", "null")),
        ("exp_string", ps256(PS256, &format!(r#"{{"productCode":"{PRODUCT}","publicKeyVersion":1,"nonce":"good","iat":{NOW},"exp":"never"}}"#)), Claim("exp", "\"never\"")),
        // --- Structure.
        ("signature_truncated_by_1", format!("{rh}.{rp}.{}", &rs[..rs.len() - 1]), Malformed("Invalid input length")),
        ("signature_truncated_by_2", format!("{rh}.{rp}.{}", &rs[..rs.len() - 2]), Is(mismatch_sig())),
        ("signature_truncated_to_half", format!("{rh}.{rp}.{}", &rs[..168]), Is(mismatch_sig())),
        ("signature_segment_dropped", format!("{rh}.{rp}"), Malformed("2 segments instead of 3")),
        ("signature_empty", format!("{rh}.{rp}."), Malformed("an empty segment")),
        ("signature_one_char", format!("{rh}.{rp}.A"), Malformed("Invalid input length: 1")),
        ("signature_doubled", format!("{rh}.{rp}.{rs}{rs}"), Is(mismatch_sig())),
        ("four_segments", format!("{real}.{rs}"), Malformed("4 segments instead of 3")),
        ("five_segments", format!("{real}.{rs}.{rs}"), Malformed("5 segments instead of 3")),
        ("five_segments_jwe_like", format!("{}.{}.{}.{}.{}", b64(br#"{"alg":"RSA-OAEP","enc":"A256GCM"}"#), b64(&[7; 256]), b64(&[1; 12]), rp, b64(&[2; 16])), Malformed("5 segments instead of 3")),
        ("payload_segment_empty", format!("{rh}..{rs}"), Malformed("an empty segment")),
        ("header_segment_empty", format!(".{rp}.{rs}"), Malformed("an empty segment")),
        ("signature_with_plus", format!("{rh}.{rp}.{}+", &rs[..rs.len() - 1]), Malformed("not base64url")),
        ("signature_with_slash", format!("{rh}.{rp}.{}/", &rs[..rs.len() - 1]), Malformed("not base64url")),
        ("signature_with_padding", format!("{real}=="), Malformed("not base64url")),
        ("signature_with_space", format!("{rh}.{rp}.{} {}", &rs[..10], &rs[10..]), Malformed("not base64url")),
        ("header_with_padding", format!("{rh}=.{rp}.{rs}"), Malformed("not base64url")),
        ("payload_with_plus", format!("{rh}.+{rp}.{rs}"), Malformed("not base64url")),
        ("leading_space", format!(" {real}"), Malformed("not base64url")),
        ("trailing_newline", format!("{real}\n"), Malformed("not base64url")),
        ("header_non_canonical_base64", format!("{}B.{rp}.{rs}", &rh[..rh.len() - 1]), Malformed("the header is not a JSON object")),
        // Same 256 bytes, but the last character's 4 unused bits set: one signature, two spellings.
        ("signature_non_canonical_last_char", format!("{rh}.{rp}.{}", non_canonical(&rs)), Malformed("Invalid last symbol")),
        ("huge_header", ps256(&format!(r#"{{"alg":"PS256","pad":"{huge}"}}"#), g), Oversize),
        ("huge_payload", ps256(PS256, &format!(r#"{{"productCode":"{PRODUCT}","publicKeyVersion":1,"nonce":"good","iat":{NOW},"pad":"{huge}"}}"#)), Oversize),
        ("one_byte_over_the_limit", "A".repeat(MAX_TOKEN_BYTES + 1), Oversize),
        // --- Payloads that are not a JSON object.
        ("payload_not_json", ps256(PS256, "productCode=prod-abc123&nonce=good"), MalformedClaims("expected value at line 1 column 1")),
        ("payload_json_array", ps256(PS256, &format!(r#"["{PRODUCT}",1,"good",{NOW},null]"#)), MalformedClaims("not a JSON object")),
        ("payload_json_array_padded", ps256(PS256, &format!(" \n[\"{PRODUCT}\",1,\"good\",{NOW},null]")), MalformedClaims("not a JSON object")),
        ("payload_json_string", ps256(PS256, r#""good""#), MalformedClaims("invalid type: string")),
        ("payload_json_null", ps256(PS256, "null"), MalformedClaims("invalid type: null")),
        ("payload_trailing_garbage", ps256(PS256, &format!("{g}x")), MalformedClaims("trailing")),
        // A number no reader can hold, in a claim mpgate does not read: serde's derive would skip it.
        ("payload_number_out_of_range_unknown_claim", ps256(PS256, &format!(r#"{{"productCode":"{PRODUCT}","publicKeyVersion":1,"nonce":"good","iat":{NOW},"subiat":97501e4009}}"#)), MalformedClaims("number out of range")),
        ("payload_lone_surrogate_unknown_claim", ps256(PS256, &format!(r#"{{"productCode":"{PRODUCT}","publicKeyVersion":1,"nonce":"good","iat":{NOW},"x":"\ud800"}}"#)), MalformedClaims("hex escape")),
        ("payload_two_objects", ps256(PS256, &format!("{g}{}", claims_with("bad", NOW))), MalformedClaims("trailing")),
        ("payload_not_utf8", sign_raw(PS256, &[g.as_bytes(), b"\xff"].concat(), right, Algorithm::PS256), MalformedClaims("trailing characters")),
        ("payload_not_utf8_in_nonce", sign_raw(PS256, &[br#"{"productCode":"prod-abc123","publicKeyVersion":1,"nonce":"good"#.as_slice(), b"\xff\xfe", br#"","iat":1750000000}"#].concat(), right, Algorithm::PS256), MalformedClaims("invalid unicode code point")),
        // --- Genuine signatures in the wrong place.
        ("spliced_signature_of_another_token", {
            let other = ps256(PS256, &claims_with("other-run", NOW));
            let (_, _, other_sig) = parts(&other);
            format!("{rh}.{rp}.{other_sig}")
        }, Is(mismatch_sig())),
        ("replayed_from_earlier_run", ps256(PS256, &claims_with("nonce-of-an-earlier-run", NOW - 10)), Claim("nonce", "nonce-of-an-earlier-run")),
        ("payload_swapped_under_real_signature", format!("{rh}.{}.{rs}", b64(claims_with("bad", NOW).as_bytes())), Is(mismatch_sig())),
        ("header_swapped_under_real_signature", format!("{}.{rp}.{rs}", b64(br#"{"alg":"PS256"}"#)), Is(mismatch_sig())),
        // --- Degenerate strings.
        ("empty_string", String::new(), Is(TokenError::Missing)),
        ("only_dots", "..".into(), Malformed("an empty segment")),
        ("one_dot", ".".into(), Malformed("2 segments instead of 3")),
        ("three_dots", "...".into(), Malformed("4 segments instead of 3")),
        ("not_a_jwt", "not-a-jwt".into(), Malformed("1 segments instead of 3")),
        ("unicode_token", "ä.ö.ü".into(), Malformed("not base64url")),
    ];
    // A few that need the fixture directly.
    c.push((
        "ps256_signed_with_ec_public_pem_hmac",
        sign(
            PS256,
            g,
            &EncodingKey::from_secret(fx.ec_public_pem.as_bytes()),
            Algorithm::HS256,
        ),
        Is(mismatch_sig()),
    ));
    c
}

#[test]
fn control_a_correct_ps256_token_passes() {
    let fx = fixture();
    let token = ps256(PS256, &good_claims());
    assert_eq!(check(&token).expect("no panic"), Ok(()));
    // Also without a typ, with a future exp, and with iat inside the allowed window/skew.
    for payload in [
        good_claims(),
        format!(
            r#"{{"productCode":"{PRODUCT}","publicKeyVersion":1,"nonce":"good","iat":{},"exp":{}}}"#,
            NOW - 299,
            NOW + 60
        ),
        claims_with(NONCE, NOW + 59),
        // A NumericDate may be a float or carry an exponent (RFC 7519): the same instant.
        claims_with_raw_iat("1750000000.0"),
        claims_with_raw_iat("1.75e9"),
        claims_with_raw_iat("1.75E+9"),
        claims_with_raw_iat("17500000000e-1"),
        claims_with_raw_iat("1749999700.5"),
        // nbf in the past, now, or within the clock skew.
        claims_with_raw_nbf(&(NOW - 10).to_string()),
        claims_with_raw_nbf(&NOW.to_string()),
        claims_with_raw_nbf(&(NOW + 60).to_string()),
        claims_with_raw_nbf("1.7e9"),
    ] {
        let token = ps256(r#"{"alg":"PS256"}"#, &payload);
        assert_eq!(check(&token).expect("no panic"), Ok(()), "{payload}");
    }
    // kid, x5t and x5t#S256 are ignored: the key is the configured one for the configured
    // version, never one the header names, so they cannot change what verifies.
    for header in [
        r#"{"alg":"PS256","typ":"JWT","kid":"marketplace-key-v1"}"#,
        r#"{"alg":"PS256","typ":"JWT","kid":"attacker-key-v9"}"#,
        r#"{"alg":"PS256","typ":"JWT","x5t":"NTBGNTJEMkI1RjJCMzE0QTdFNjVDRUIyNTJDQkUxQ0I1MTEyQTUxNQ"}"#,
        r#"{"alg":"PS256","typ":"JWT","x5t#S256":"5Vqh6cI-4s0tcz4wXyQpe2j5eH6zv4iBCe3SVRFOKM0"}"#,
        r#"{"alg":"PS256","typ":"JWT","kid":"1","x5t":"AAAA","cty":"JWT"}"#,
    ] {
        let token = ps256(header, &good_claims());
        assert_eq!(check(&token).expect("no panic"), Ok(()), "{header}");
    }
    // And the same key parsed again from PEM verifies it.
    let key = decoding_key(fx.right.public_pem.as_bytes()).expect("key");
    assert_eq!(verify(&token, &key, &expected(), now()), Ok(()));
}

#[test]
fn a_re_check_requires_iat_and_the_gate_does_not() {
    let without_iat = ps256(
        PS256,
        &format!(r#"{{"productCode":"{PRODUCT}","publicKeyVersion":1,"nonce":"good"}}"#),
    );
    let key = decoding_key(fixture().right.public_pem.as_bytes()).expect("key");
    // The gate's own check: its fresh nonce rules out a replay.
    assert_eq!(verify(&without_iat, &key, &expected(), now()), Ok(()));
    // A hand-over's re-check has only iat to bound a replay.
    let recheck = Expected {
        require_iat: true,
        ..expected()
    };
    assert!(matches!(
        verify(&without_iat, &key, &recheck, now()),
        Err(TokenError::ClaimMismatch { claim: "iat", ref found, .. }) if found == "missing"
    ));
    assert_eq!(
        verify(&ps256(PS256, &good_claims()), &key, &recheck, now()),
        Ok(())
    );
}

#[test]
fn adversarial_corpus_is_refused_with_the_specific_error() {
    let corpus = corpus();
    let mut names = std::collections::HashSet::new();
    let mut tokens = std::collections::HashSet::new();
    for (name, token, _) in &corpus {
        assert!(names.insert(*name), "duplicate case name {name}");
        assert!(tokens.insert(token.clone()), "case {name} repeats a token");
    }
    assert!(corpus.len() >= 40, "only {} cases", corpus.len());

    let mut failures = Vec::new();
    for (name, token, want) in &corpus {
        match check(token) {
            Err(_) => failures.push(format!("{name}: PANICKED")),
            Ok(Ok(())) => failures.push(format!("{name}: ACCEPTED (want {})", want.describe())),
            Ok(Err(e)) if want.accepts(token, &e) => {
                // The message renders, and never echoes a whole huge token.
                let msg = e.to_string();
                assert!(!msg.is_empty());
                assert!(msg.len() < 1024, "{name}: message is {} bytes", msg.len());
            }
            Ok(Err(e)) => failures.push(format!("{name}: got {e:?}, want {}", want.describe())),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        corpus.len(),
        failures.join("\n")
    );
}

#[test]
fn decoding_key_refuses_weak_and_wrong_keys() {
    let fx = fixture();
    let refused: Vec<(&str, Vec<u8>, &str)> = vec![
        ("rsa_1024_spki", RSA_1024_SPKI.into(), "too small"),
        ("rsa_1024_pkcs1", RSA_1024_PKCS1.into(), "too small"),
        (
            "seller_guide_demo_key",
            SELLER_GUIDE_DEMO_PUBLIC.into(),
            "AWS Marketplace seller guide",
        ),
        ("ec_p256_public", fx.ec_public_pem.clone().into(), ""),
        (
            "rsa_private_pkcs8",
            fx.right.private_pem.clone().into(),
            "private key",
        ),
        (
            "ec_private_pkcs8",
            fx.ec_private_pem.clone().into(),
            "private key",
        ),
        (
            "rsa_private_pkcs1_label",
            fx.right
                .private_pem
                .replace("PRIVATE KEY", "RSA PRIVATE KEY")
                .into(),
            "private key",
        ),
        (
            "public_and_private_in_one_file",
            format!("{}{}", fx.right.public_pem, fx.right.private_pem).into(),
            "private key",
        ),
        ("garbage_text", b"this is not a key".to_vec(), ""),
        ("empty", Vec::new(), ""),
        ("not_utf8", vec![0xff, 0xfe, 0x00, 0x80], "not text"),
        (
            "pem_with_garbage_body",
            b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n".to_vec(),
            "",
        ),
        (
            "truncated_pem",
            fx.right.public_pem[..fx.right.public_pem.len() / 2].into(),
            "",
        ),
    ];
    for (name, pem, text) in refused {
        let got =
            catch_unwind(|| decoding_key(&pem)).unwrap_or_else(|_| panic!("{name}: panicked"));
        match got {
            Ok(_) => panic!("{name}: decoding_key accepted it"),
            Err(err) => {
                let msg = err.to_string();
                assert!(msg.contains(text), "{name}: {msg:?} lacks {text:?}")
            }
        }
    }
    // The attacker's (valid) key is a fine key, it just is not the one that signed.
    assert!(decoding_key(fx.attacker.public_pem.as_bytes()).is_ok());
}

#[test]
fn redacted_never_contains_the_full_signature() {
    let token = ps256(PS256, &good_claims());
    let (_, _, sig) = parts(&token);
    let shown = redacted(&token);
    assert!(!shown.contains(sig), "{shown}");
    assert!(shown.contains(&sig[..8]));
    assert!(shown.contains(&format!("({} bytes)", token.len())));
    for (name, token, _) in corpus() {
        let shown =
            catch_unwind(|| redacted(&token)).unwrap_or_else(|_| panic!("{name}: panicked"));
        // Nothing after the second dot is shown beyond 8 characters.
        for segment in token.split('.').skip(2).filter(|s| s.chars().count() > 8) {
            assert!(!shown.contains(segment), "{name}: {shown}");
        }
    }
}
