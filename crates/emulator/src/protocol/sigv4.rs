//! Owns SigV4 verification of a request against the credentials the emulator knows.
//!
//! The `Authorization` header is parsed and its scope, dates and signed headers checked here;
//! the expected signature itself is computed by AWS's own signer, the `aws-sigv4` crate, over a
//! request rebuilt from exactly the headers the client listed in `SignedHeaders`, at the
//! client's own `X-Amz-Date`, and compared in constant time. No HMAC chain is written here: a
//! hand-rolled one could share a client's bug and accept what AWS refuses.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use hyper::header::HeaderMap;

use crate::clock::{format_amz_date, parse_amz_date};
use crate::credentials::{Credential, Keyring};

pub const SCHEME: &str = "AWS4-HMAC-SHA256";
/// How far `X-Amz-Date` may be from AWS's clock, either way.
pub const MAX_SKEW: Duration = Duration::from_secs(15 * 60);

pub const INVALID_SIGNATURE: &str = "InvalidSignatureException";
pub const INCOMPLETE_SIGNATURE: &str = "IncompleteSignatureException";
pub const UNRECOGNIZED_CLIENT: &str = "UnrecognizedClientException";
pub const EXPIRED_TOKEN: &str = "ExpiredTokenException";

pub const SIGNATURE_MISMATCH: &str = "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.";
pub const TOKEN_INVALID: &str = "The security token included in the request is invalid.";
pub const TOKEN_EXPIRED: &str = "The security token included in the request is expired";

/// A refused request: HTTP status, error type, message.
#[derive(Debug, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    pub error_type: &'static str,
    pub message: String,
}

fn reject(error_type: &'static str, message: impl Into<String>) -> Rejection {
    Rejection {
        status: 403,
        error_type,
        message: message.into(),
    }
}

/// A syntactically complete `Authorization` header.
#[derive(Debug)]
pub struct Authorization {
    pub access_key_id: String,
    pub date: String,
    pub region: String,
    pub service: String,
    pub terminator: String,
    /// As listed, lowercase, `;`-separated.
    pub signed_headers: Vec<String>,
    pub signature: String,
}

/// Parses the `Authorization` header. Returns the credential (`AKID/date/region/service/
/// aws4_request`) when one could be read, for the record, and the result.
pub fn parse_authorization(value: &str) -> (Option<String>, Result<Authorization, Rejection>) {
    let Some(rest) = value.strip_prefix(SCHEME).filter(|r| r.starts_with(' ')) else {
        let scheme = value.split(' ').next().unwrap_or_default();
        return (
            None,
            Err(reject(
                INCOMPLETE_SIGNATURE,
                format!("Unsupported Authorization Type: '{scheme}'; the service takes {SCHEME}."),
            )),
        );
    };
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed_headers = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = Some(v);
        }
    }
    let scope = credential.map(str::to_string);
    let mut missing = Vec::new();
    for (name, value) in [
        ("Credential", credential),
        ("Signature", signature),
        ("SignedHeaders", signed_headers),
    ] {
        if value.is_none() {
            missing.push(format!("Authorization header requires '{name}' parameter."));
        }
    }
    let (Some(credential), Some(signed_headers), Some(signature)) =
        (credential, signed_headers, signature)
    else {
        return (scope, Err(reject(INCOMPLETE_SIGNATURE, missing.join(" "))));
    };
    let parts: Vec<&str> = credential.split('/').collect();
    let [akid, date, region, service, terminator] = parts.as_slice() else {
        return (
            scope,
            Err(reject(
                INCOMPLETE_SIGNATURE,
                format!("Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term, got '{credential}'"),
            )),
        );
    };
    if akid.is_empty() {
        return (
            scope,
            Err(reject(
                INCOMPLETE_SIGNATURE,
                "Credential has an empty access key id.",
            )),
        );
    }
    let names: Vec<String> = signed_headers.split(';').map(str::to_string).collect();
    let well_formed = |h: &String| {
        !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
    };
    if !names.iter().all(well_formed) {
        return (
            scope,
            Err(reject(
                INCOMPLETE_SIGNATURE,
                "SignedHeaders must be a ';'-separated list of lowercase header names.",
            )),
        );
    }
    if signature.len() != 64
        || !signature
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        // A signature of the wrong shape cannot match: AWS answers as for a wrong one.
        return (scope, Err(reject(INVALID_SIGNATURE, SIGNATURE_MISMATCH)));
    }
    (
        scope,
        Ok(Authorization {
            access_key_id: akid.to_string(),
            date: date.to_string(),
            region: region.to_string(),
            service: service.to_string(),
            terminator: terminator.to_string(),
            signed_headers: names,
            signature: signature.to_string(),
        }),
    )
}

/// The request as the signature covers it.
pub struct Signed<'a> {
    pub method: &'a str,
    /// The path as sent (still percent-encoded).
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

/// Verifies `auth` over `req`: scope, signed headers, the caller's key and session token, the
/// skew window around `now`, then the signature. `service` is the signing name of the service
/// the request's target belongs to: a request signed for another is refused. Returns the
/// caller's credentials.
pub fn verify<'k>(
    auth: &Authorization,
    req: &Signed<'_>,
    keyring: &'k Keyring,
    region: &str,
    service: &str,
    now: SystemTime,
) -> Result<&'k Credential, Rejection> {
    // X-Amz-Date: present, in basic format, and the scope's day.
    let Some(amz_date) = req.headers.get("x-amz-date") else {
        return Err(reject(
            INCOMPLETE_SIGNATURE,
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
        ));
    };
    let amz_date = amz_date.to_str().unwrap_or("<non-ASCII>");
    let Some(time) = parse_amz_date(amz_date) else {
        return Err(reject(
            INCOMPLETE_SIGNATURE,
            format!("Date must be in ISO-8601 'basic format'. Got '{amz_date}'. See http://en.wikipedia.org/wiki/ISO_8601"),
        ));
    };
    if !amz_date.starts_with(&auth.date) || auth.date.len() != 8 {
        return Err(reject(
            INVALID_SIGNATURE,
            format!(
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{}', from '{amz_date}'.",
                auth.date,
                &amz_date[..8]
            ),
        ));
    }
    if auth.region != region {
        return Err(reject(
            INVALID_SIGNATURE,
            "Credential should be scoped to a valid region. ",
        ));
    }
    if auth.service != service {
        return Err(reject(
            INVALID_SIGNATURE,
            format!("Credential should be scoped to correct service: '{service}'. "),
        ));
    }
    if auth.terminator != "aws4_request" {
        return Err(reject(
            INVALID_SIGNATURE,
            format!(
                "Credential should be scoped with a valid terminator: 'aws4_request', not '{}'. ",
                auth.terminator
            ),
        ));
    }
    let signs = |name: &str| auth.signed_headers.iter().any(|h| h == name);
    if !signs("host") {
        return Err(reject(
            INCOMPLETE_SIGNATURE,
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.",
        ));
    }
    if !signs("x-amz-date") {
        return Err(reject(
            INCOMPLETE_SIGNATURE,
            "'X-Amz-Date' must be a 'SignedHeader' in the AWS Authorization.",
        ));
    }

    // Whose key: unknown keys, and temporary keys without their session token, are not
    // recognised (a temporary key id means nothing without its token).
    let Some(credential) = keyring.find(&auth.access_key_id) else {
        return Err(reject(UNRECOGNIZED_CLIENT, TOKEN_INVALID));
    };
    let sent_token = req.headers.get("x-amz-security-token");
    match (&credential.session_token, sent_token) {
        (None, None) => {}
        (None, Some(_)) | (Some(_), None) => {
            return Err(reject(UNRECOGNIZED_CLIENT, TOKEN_INVALID));
        }
        (Some(known), Some(sent)) => {
            let same = aws_lc_rs::constant_time::verify_slices_are_equal(
                known.as_bytes(),
                sent.as_bytes(),
            )
            .is_ok();
            if !same {
                return Err(reject(UNRECOGNIZED_CLIENT, TOKEN_INVALID));
            }
            if !signs("x-amz-security-token") {
                return Err(reject(
                    INCOMPLETE_SIGNATURE,
                    "'X-Amz-Security-Token' must be a 'SignedHeader' in the AWS Authorization.",
                ));
            }
        }
    }
    if credential.expired {
        return Err(reject(EXPIRED_TOKEN, TOKEN_EXPIRED));
    }

    // The skew window, around AWS's clock.
    let earliest = now.checked_sub(MAX_SKEW).unwrap_or(now);
    if time < earliest {
        return Err(reject(
            INVALID_SIGNATURE,
            format!(
                "Signature expired: {amz_date} is now earlier than {} ({} - 15 min.)",
                format_amz_date(earliest),
                format_amz_date(now)
            ),
        ));
    }
    let latest = now + MAX_SKEW;
    if time > latest {
        return Err(reject(
            INVALID_SIGNATURE,
            format!(
                "Signature not yet current: {amz_date} is still later than {} ({} + 15 min.)",
                format_amz_date(latest),
                format_amz_date(now)
            ),
        ));
    }

    let expected = expected_signature(auth, req, credential, time)
        .map_err(|_| reject(INVALID_SIGNATURE, SIGNATURE_MISMATCH))?;
    aws_lc_rs::constant_time::verify_slices_are_equal(
        expected.as_bytes(),
        auth.signature.as_bytes(),
    )
    .map_err(|_| reject(INVALID_SIGNATURE, SIGNATURE_MISMATCH))?;
    Ok(credential)
}

/// The signature AWS's signer computes for the request as the client says it signed it: only
/// the headers in `SignedHeaders` (each with all its values; a listed header that is absent
/// signs as empty), the body, the scope's region, the client's own `X-Amz-Date`.
fn expected_signature(
    auth: &Authorization,
    req: &Signed<'_>,
    credential: &Credential,
    time: SystemTime,
) -> Result<String, ()> {
    let mut headers: Vec<(&str, &str)> = Vec::new();
    for name in &auth.signed_headers {
        let mut any = false;
        for value in req.headers.get_all(name.as_str()) {
            headers.push((name, value.to_str().map_err(|_| ())?));
            any = true;
        }
        if !any {
            headers.push((name, ""));
        }
    }
    // The authority is a placeholder: the signer takes `host` from the headers, which always
    // hold it here (it must be signed).
    let uri = match req.query {
        Some(q) => format!("http://emulator.invalid{}?{q}", req.path),
        None => format!("http://emulator.invalid{}", req.path),
    };
    let request = SignableRequest::new(
        req.method,
        uri,
        headers.into_iter(),
        SignableBody::Bytes(req.body),
    )
    .map_err(|_| ())?;
    let identity: Identity = Credentials::new(
        &credential.access_key_id,
        &credential.secret_access_key,
        credential.session_token.clone(),
        None,
        "mpgate-emulator",
    )
    .into();
    // Sign exactly the listed headers: none of the signer's default exclusions (User-Agent and
    // the like, which a client may have signed) applies.
    let mut settings = SigningSettings::default();
    settings.excluded_headers = None;
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&auth.region)
        .name(&auth.service)
        .time(time)
        .settings(settings)
        .build()
        .map_err(|_| ())?
        .into();
    // The signer adds `host` (here from the headers), `x-amz-date` and, for temporary keys,
    // `x-amz-security-token` to what it signs, with the values checked above; `verify` has made
    // sure the client listed them too, so both sign the same list.
    let output = sign(request, &params).map_err(|_| ())?;
    Ok(output.signature().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIG: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn authorization_parsing() {
        let h = format!("AWS4-HMAC-SHA256 Credential=AKID/20240101/us-east-1/aws-marketplace/aws4_request, SignedHeaders=host;x-amz-date, Signature={SIG}");
        let (scope, auth) = parse_authorization(&h);
        assert_eq!(
            scope.as_deref(),
            Some("AKID/20240101/us-east-1/aws-marketplace/aws4_request")
        );
        let auth = auth.unwrap();
        assert_eq!(
            (auth.region.as_str(), auth.service.as_str()),
            ("us-east-1", "aws-marketplace")
        );
        assert_eq!(auth.signed_headers, ["host", "x-amz-date"]);
        let err = |h: &str| parse_authorization(h).1.unwrap_err();
        assert_eq!(err("Bearer x").error_type, INCOMPLETE_SIGNATURE);
        let e = err("AWS4-HMAC-SHA256 Credential=a/b/c");
        assert_eq!(e.error_type, INCOMPLETE_SIGNATURE);
        assert!(e.message.contains("'Signature' parameter"), "{}", e.message);
        let e = err(&format!(
            "AWS4-HMAC-SHA256 Credential=a/b/c, SignedHeaders=host, Signature={SIG}"
        ));
        assert!(e.message.contains("5 slash-delimited"), "{}", e.message);
        let e = err(&format!("AWS4-HMAC-SHA256 Credential=AKID/20240101/us-east-1/aws-marketplace/aws4_request, SignedHeaders=Host, Signature={SIG}"));
        assert_eq!(e.error_type, INCOMPLETE_SIGNATURE);
        let e = err("AWS4-HMAC-SHA256 Credential=AKID/20240101/us-east-1/aws-marketplace/aws4_request, SignedHeaders=host, Signature=00");
        assert_eq!(e.error_type, INVALID_SIGNATURE);
    }

    /// AWS's published SigV4 test vector `get-vanilla` (aws-sig-v4-test-suite): the signature
    /// the emulator expects is the one AWS documents.
    #[test]
    fn the_expected_signature_of_aws_s_get_vanilla_vector() {
        let (_, auth) = parse_authorization("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
        let auth = auth.unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("host", "example.amazonaws.com".parse().unwrap());
        headers.insert("x-amz-date", "20150830T123600Z".parse().unwrap());
        let req = Signed {
            method: "GET",
            path: "/",
            query: None,
            headers: &headers,
            body: b"",
        };
        let credential = Credential {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
            expired: false,
        };
        let time = parse_amz_date("20150830T123600Z").unwrap();
        assert_eq!(
            expected_signature(&auth, &req, &credential, time).unwrap(),
            auth.signature
        );
        // Verified in full (for the emulator's service name this vector's scope is wrong).
        let mut keyring = Keyring::default();
        keyring.add(credential).unwrap();
        let e = verify(
            &auth,
            &req,
            &keyring,
            "us-east-1",
            crate::ops::metering::SIGNING_NAME,
            time,
        )
        .unwrap_err();
        assert!(e.message.contains("correct service"), "{e:?}");
    }
}
