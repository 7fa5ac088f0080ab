//! Owns awsQuery's routing (STS's protocol): the operation a form body's `Action` names.

use hyper::body::Bytes;
use hyper::header::HeaderMap;

use crate::ops::{Operation, Protocol};

/// The operation the `Action` of a form-encoded body names, if the emulator serves it with
/// awsQuery (no operation does yet: STS is to come).
pub(crate) fn operation(headers: &HeaderMap, body: Option<&Bytes>) -> Option<Operation> {
    let content_type = headers.get("content-type")?.to_str().ok()?;
    if !Protocol::AwsQuery.accepts(content_type) {
        return None;
    }
    Operation::from_action(action(body?)?)
}

/// The value of the body's `Action` pair. An operation's name is plain letters and digits,
/// so a value that would need percent-decoding names none.
fn action(body: &[u8]) -> Option<&str> {
    let body = std::str::from_utf8(body).ok()?;
    body.split('&')
        .find_map(|pair| pair.strip_prefix("Action="))
        .filter(|name| !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_action_is_read_from_the_form() {
        assert_eq!(
            action(b"Action=GetCallerIdentity&Version=2011-06-15"),
            Some("GetCallerIdentity")
        );
        assert_eq!(
            action(b"Version=2011-06-15&Action=AssumeRole"),
            Some("AssumeRole")
        );
        for none in [
            &b"Version=2011-06-15"[..],
            b"Action=",
            b"Action=Get%43aller",
            b"\xff",
        ] {
            assert_eq!(action(none), None);
        }
    }
}
