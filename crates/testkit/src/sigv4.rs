//! Signing raw test requests with SigV4, for real: the emulator verifies every signature, so
//! a test that writes its own HTTP request signs it with AWS's signer (`aws-sigv4`, as the SDK
//! does) and the test credentials the emulator knows.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign as sigv4_sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;

use crate::emulator::{ACCESS_KEY_ID, SECRET_ACCESS_KEY, SESSION_TOKEN};

/// Whose key, for which scope and when: what SigV4 signs with.
#[derive(Debug, Clone)]
pub struct Signing {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    pub region: String,
    pub service: String,
    pub time: SystemTime,
}

impl Default for Signing {
    fn default() -> Self {
        Signing::new()
    }
}

impl Signing {
    /// The test emulators' temporary pair, for us-east-1 and `aws-marketplace`, now.
    pub fn new() -> Signing {
        Signing {
            access_key_id: ACCESS_KEY_ID.into(),
            secret_access_key: SECRET_ACCESS_KEY.into(),
            session_token: Some(SESSION_TOKEN.into()),
            region: "us-east-1".into(),
            service: "aws-marketplace".into(),
            time: SystemTime::now(),
        }
    }

    /// The test pair for License Manager (signing name `license-manager`), us-east-1, now.
    pub fn license_manager() -> Signing {
        Signing::new().service("license-manager")
    }

    /// Another pair (`token` `None`: a long-term key).
    pub fn key(mut self, id: &str, secret: &str, token: Option<&str>) -> Signing {
        self.access_key_id = id.into();
        self.secret_access_key = secret.into();
        self.session_token = token.map(str::to_string);
        self
    }

    pub fn region(mut self, region: &str) -> Signing {
        self.region = region.into();
        self
    }

    pub fn service(mut self, service: &str) -> Signing {
        self.service = service.into();
        self
    }

    /// Signs as of `time` (a client whose clock is off).
    pub fn at(mut self, time: SystemTime) -> Signing {
        self.time = time;
        self
    }
}

/// The headers SigV4 adds to a request (`x-amz-date`, `x-amz-security-token` for a temporary
/// key, `authorization`), signing every header in `headers` (which must hold `host`), the
/// origin-form `path` (with any query) and `body`.
pub fn sign(
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
    s: &Signing,
) -> Vec<(String, String)> {
    let pairs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    // The authority is unused: the signer takes `host` from the headers.
    let request = SignableRequest::new(
        method,
        format!("http://signing.invalid{path}"),
        pairs.into_iter(),
        SignableBody::Bytes(body),
    )
    .expect("a signable request");
    let identity: Identity = Credentials::new(
        &s.access_key_id,
        &s.secret_access_key,
        s.session_token.clone(),
        None,
        "mpgate-testkit",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&s.region)
        .name(&s.service)
        .time(s.time)
        .settings(SigningSettings::default())
        .build()
        .expect("signing parameters")
        .into();
    let (instructions, _) = sigv4_sign(request, &params)
        .expect("SigV4 signing")
        .into_parts();
    instructions
        .headers()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A complete RegisterUsage request for the raw wire (`Host: localhost`, `Connection: close`),
/// signed with the test pair now.
pub fn register_request(body: &str) -> Vec<u8> {
    signed_request("AWSMPMeteringService.RegisterUsage", body, &Signing::new())
}

/// The raw HTTP/1.1 bytes of an awsJson1.1 call (`POST /`, `X-Amz-Target: target`,
/// `Host: localhost`, `Connection: close`) with `body`, signed with `signing`.
pub fn signed_request(target: &str, body: &str, signing: &Signing) -> Vec<u8> {
    let mut headers = vec![
        ("Host".to_string(), "localhost".to_string()),
        ("X-Amz-Target".to_string(), target.to_string()),
        (
            "Content-Type".to_string(),
            "application/x-amz-json-1.1".to_string(),
        ),
    ];
    let added = sign("POST", "/", &headers, body.as_bytes(), signing);
    headers.extend(added);
    let mut request = String::from("POST / HTTP/1.1\r\n");
    for (k, v) in &headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str(&format!(
        "Connection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    request.into_bytes()
}
