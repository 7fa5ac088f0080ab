//! Raw calls of the license token's exchange: GetAccessToken (unsigned or signed) and STS's
//! AssumeRoleWithWebIdentity (an unsigned awsQuery form), and reading STS's XML.

use serde_json::json;

use crate::license::{send, Reply, IO_TIMEOUT};
use crate::sigv4::{signed_request, Signing};

/// The raw bytes of an unsigned awsJson1.1 call (as AWS's reference code sends
/// GetAccessToken: anonymous credentials).
pub fn unsigned_json_request(target: &str, body: &str) -> Vec<u8> {
    format!(
        "POST / HTTP/1.1\r\nHost: localhost\r\nX-Amz-Target: {target}\r\nContent-Type: application/x-amz-json-1.1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// GetAccessToken with `token`, unsigned, or signed with `signing`.
pub fn get_access_token(addr: &str, token: &str, signing: Option<&Signing>) -> Reply {
    let body = json!({ "Token": token }).to_string();
    let target = "AWSLicenseManager.GetAccessToken";
    let request = match signing {
        Some(s) => signed_request(target, &body, s),
        None => unsigned_json_request(target, &body),
    };
    send(addr, &request, IO_TIMEOUT).unwrap_or_else(|e| panic!("GetAccessToken to {addr}: {e}"))
}

/// A form body, each value percent-encoded.
pub fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// POSTs a form `body` to `/` (unsigned, `application/x-www-form-urlencoded`).
pub fn post_form(addr: &str, body: &str) -> Reply {
    let request = format!(
        "POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded; charset=utf-8\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    send(addr, request.as_bytes(), IO_TIMEOUT).unwrap_or_else(|e| panic!("STS call to {addr}: {e}"))
}

/// AssumeRoleWithWebIdentity with `role_arn`, session `session` and `web_token`.
pub fn assume_role(addr: &str, role_arn: &str, session: &str, web_token: &str) -> Reply {
    post_form(
        addr,
        &form(&[
            ("Action", "AssumeRoleWithWebIdentity"),
            ("Version", "2011-06-15"),
            ("RoleArn", role_arn),
            ("RoleSessionName", session),
            ("WebIdentityToken", web_token),
        ]),
    )
}

/// The text of the first `<tag>…</tag>` in an XML body (the emulator writes no attributes
/// on these elements and escapes nothing in the values tests read).
pub fn xml_text(reply: &Reply, tag: &str) -> Option<String> {
    let body = String::from_utf8_lossy(&reply.body);
    let open = format!("<{tag}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find(&format!("</{tag}>"))? + start;
    Some(body[start..end].to_string())
}

/// Asserts an STS error: status, `text/xml`, `ErrorResponse` with `Type`, `Code` and a
/// `Message`, and the `RequestId` the header names.
pub fn expect_sts_error(reply: &Reply, status: u16, code: &str, kind: &str, what: &str) {
    let body = String::from_utf8_lossy(&reply.body);
    assert_eq!(reply.status, status, "{what}: {body}");
    assert_eq!(reply.header("content-type"), Some("text/xml"), "{what}");
    assert!(
        body.starts_with("<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">"),
        "{what}: {body}"
    );
    assert_eq!(
        xml_text(reply, "Code").as_deref(),
        Some(code),
        "{what}: {body}"
    );
    assert_eq!(
        xml_text(reply, "Type").as_deref(),
        Some(kind),
        "{what}: {body}"
    );
    assert!(
        xml_text(reply, "Message").is_some_and(|m| !m.is_empty()),
        "{what}: {body}"
    );
    assert_eq!(
        xml_text(reply, "RequestId").as_deref(),
        reply.header("x-amzn-requestid"),
        "{what}: {body}"
    );
}

/// The role credentials of a successful AssumeRoleWithWebIdentity, as a [`Signing`] for
/// License Manager.
pub fn role_signing(reply: &Reply) -> Signing {
    let get = |t: &str| {
        xml_text(reply, t)
            .unwrap_or_else(|| panic!("no {t} in {}", String::from_utf8_lossy(&reply.body)))
    };
    Signing::license_manager().key(
        &get("AccessKeyId"),
        &get("SecretAccessKey"),
        Some(&get("SessionToken")),
    )
}
