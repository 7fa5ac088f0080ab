//! `mpgate_proof::verify` and `redacted` on arbitrary tokens: never a panic, and never an
//! accepted token that this process did not sign for exactly the expected claims.
//!
//! Input without a NUL byte is the token itself (lossy UTF-8): it can never verify, since
//! only this process holds the private key. Input with a NUL is `HEADER\0CLAIMS[\0SUFFIX]`:
//! the raw header and claims JSON are signed with that key (PS256), SUFFIX is appended, and
//! the result must verify only if the claims really are the expected ones.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mpgate_proof::{redacted, verify};
use mpgate_fuzz::{expected, keys, now, KEY_VERSION, MAX_AGE, NONCE, NOW_SECS, PRODUCT_CODE};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let keys = keys();
    let Some(nul) = data.iter().position(|&b| b == 0) else {
        let token = String::from_utf8_lossy(data);
        let result = verify(&token, &keys.decoding, &expected(), now());
        check_redacted(&token);
        if let Err(e) = result {
            let _ = e.to_string();
            return;
        }
        panic!("a token nobody signed was accepted: {token:?}");
    };

    let (header, rest) = (&data[..nul], &data[nul + 1..]);
    let (claims, suffix) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let mut token = keys.sign(header, claims);
    token.push_str(&String::from_utf8_lossy(suffix));
    let result = verify(&token, &keys.decoding, &expected(), now());
    check_redacted(&token);
    match result {
        Err(e) => {
            let _ = e.to_string();
        }
        Ok(()) => check_accepted(header, claims, &token),
    }
});

/// An accepted token's header and claims must say exactly what mpgate expects.
fn check_accepted(header: &[u8], claims: &[u8], token: &str) {
    let header: Value = serde_json::from_slice(header)
        .unwrap_or_else(|e| panic!("accepted a token whose header is not JSON ({e}): {token}"));
    let header = header
        .as_object()
        .unwrap_or_else(|| panic!("accepted a token whose header is not an object: {token}"));
    assert_eq!(
        header.get("alg"),
        Some(&Value::from("PS256")),
        "accepted alg: {token}"
    );
    for name in ["jku", "jwk", "x5u", "x5c", "crit"] {
        assert!(
            !header.contains_key(name),
            "accepted header {name}: {token}"
        );
    }
    let claims: Value = serde_json::from_slice(claims)
        .unwrap_or_else(|e| panic!("accepted a token whose claims are not JSON ({e}): {token}"));
    let claims = claims
        .as_object()
        .unwrap_or_else(|| panic!("accepted claims that are not an object: {token}"));
    assert_eq!(
        claims.get("productCode"),
        Some(&Value::from(PRODUCT_CODE)),
        "accepted productCode: {token}"
    );
    assert_eq!(
        claims.get("nonce"),
        Some(&Value::from(NONCE)),
        "accepted nonce: {token}"
    );
    assert_eq!(
        claims.get("publicKeyVersion").and_then(Value::as_i64),
        Some(i64::from(KEY_VERSION)),
        "accepted publicKeyVersion: {token}"
    );
    let now = NOW_SECS as f64;
    if let Some(iat) = claims.get("iat") {
        let iat = iat
            .as_f64()
            .unwrap_or_else(|| panic!("accepted a non-numeric iat: {token}"));
        assert!(
            iat <= now + 60.0 && now - iat <= MAX_AGE.as_secs_f64(),
            "accepted iat {iat}: {token}"
        );
    }
    if let Some(exp) = claims.get("exp") {
        let exp = exp
            .as_f64()
            .unwrap_or_else(|| panic!("accepted a non-numeric exp: {token}"));
        assert!(exp > now, "accepted an expired token (exp {exp}): {token}");
    }
}

/// `redacted` never panics, and never shows more than header, claims and 8 signature chars.
fn check_redacted(token: &str) {
    let shown = redacted(token);
    assert!(
        shown.len() <= token.len() + 64,
        "redacted({token:?}) = {shown:?} is longer than the token"
    );
}
