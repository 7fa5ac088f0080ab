//! Owns STS's AssumeRoleWithWebIdentity: its form input, the trust check and its XML answers.

use std::ops::ControlFlow::{Break, Continue};
use std::time::Duration;

use aws_smithy_xml::encode::XmlWriter;
use hyper::body::Bytes;
use serde_json::{json, Map};

use crate::answer::{base_response, request_id, settle, Outcome, Step};
use crate::clock::{rfc3339, unix_secs};
use crate::credentials::Credential;
use crate::ops::anywhere::faults::{not_authorized, sts_error};
use crate::ops::anywhere::token::{self, Invalid, Use, ACCESS_ISSUER};
use crate::ops::anywhere::{expiry, fault, note, Anywhere, Op, StsError, MAX_SESSION};
use crate::record::{RecordLine, RATE_LIMITED};
use crate::shared::Shared;

/// STS's API version, the form's `Version`.
pub const VERSION: &str = "2011-06-15";
/// The namespace of STS's answers.
pub const XMLNS: &str = "https://sts.amazonaws.com/doc/2011-06-15/";
/// STS's answers are `text/xml`.
const CONTENT_TYPE_XML: &str = "text/xml";

/// The form's members this operation reads.
#[derive(Default)]
struct Input {
    version: Option<String>,
    role_arn: Option<String>,
    session: Option<String>,
    token: Option<String>,
    provider_id: Option<String>,
    duration: Option<String>,
    policy: Option<String>,
}

/// AssumeRoleWithWebIdentity (unsigned, as the model says: `noAuth`): the form, the
/// `Version`, `--rate-limit`, the faults, the access token, the role's trust, then the
/// role's temporary credentials, which the emulator knows from then on.
pub(crate) fn assume_role_with_web_identity(
    shared: &Shared,
    anywhere: &Anywhere,
    body: &Bytes,
    rec: &mut RecordLine,
) -> Outcome {
    rec.target = Some(Op::AssumeRoleWithWebIdentity.name().into());
    let mut steps = || {
        let input = parse(body);
        let mut members = Map::new();
        for (k, v) in [
            ("roleArn", &input.role_arn),
            ("roleSessionName", &input.session),
            ("durationSeconds", &input.duration),
        ] {
            if let Some(v) = v {
                members.insert(k.into(), json!(v));
            }
        }
        if let Some(id) = input.token.as_deref().and_then(token::claimed_id) {
            members.insert("tokenId".into(), json!(id));
        }
        note(rec, members);
        if input.version.as_deref() != Some(VERSION) {
            return Break(error(&sts_error(
                400,
                "InvalidAction",
                format!(
                    "Could not find operation AssumeRoleWithWebIdentity for version {}",
                    input.version.as_deref().unwrap_or("NO_VERSION_SPECIFIED")
                ),
            )));
        }
        let (role_arn, session, web_token, duration) = validate(&input)?;
        if !shared.admit() {
            rec.fault = RATE_LIMITED;
            return Break(error(&sts_error(400, "Throttling", "Rate exceeded")));
        }
        fault(anywhere, Op::AssumeRoleWithWebIdentity, rec)?;
        let Some(key) = shared.keys.first() else {
            return Break(error(&sts_error(
                500,
                "InternalFailure",
                "internal failure",
            )));
        };
        let now = shared.clock.now();
        let claims = match token::verify(&web_token, Use::Access, &key.signing_key) {
            Ok(c) => c,
            Err(Invalid::NotAJwt) => {
                return Break(error(&sts_error(
                    400,
                    "InvalidIdentityToken",
                    "The ID Token provided is not a valid JWT. (You may see this error if you sent an Access Token)",
                )))
            }
            Err(Invalid::NotOurs) => {
                return Break(error(&sts_error(
                    400,
                    "InvalidIdentityToken",
                    "Couldn't verify the token's signature: it was not issued by openid-license-manager.amazonaws.com (pass GetAccessToken's AccessToken, not the refresh token)",
                )))
            }
        };
        let at = unix_secs(now);
        if at >= claims.exp {
            return Break(error(&sts_error(
                400,
                "ExpiredTokenException",
                format!(
                    "Token expired: current date/time {at} must be before the expiration date/time {}",
                    claims.exp
                ),
            )));
        }
        // The role must be the one the emulator knows, trusting the token's issuer account
        // (the launch page's trust policy: the amr condition names the account).
        let trusted = role_account(&anywhere.role_arn) == Some(claims.issuer_account.as_str());
        if role_arn != anywhere.role_arn || !trusted {
            return Break(error(&not_authorized()));
        }
        if duration.is_some_and(|d| d > MAX_SESSION) {
            return Break(error(&sts_error(
                400,
                "ValidationError",
                "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.",
            )));
        }
        let ttl = anywhere
            .config
            .role_credentials_ttl
            .or(duration)
            .unwrap_or(MAX_SESSION);
        let credential = Credential::fresh_temporary();
        let expires = expiry(now, ttl);
        anywhere.remember(credential.clone(), expires);
        if let Some(members) = rec.members.as_mut() {
            members.insert("issuedAccessKeyId".into(), json!(credential.access_key_id));
            members.insert("expiration".into(), json!(rfc3339(expires)));
        }
        let role_name = role_arn.rsplit('/').next().unwrap_or_default();
        let account = role_account(&role_arn).unwrap_or_default();
        let answer = Answer {
            credential: &credential,
            expiration: rfc3339(expires),
            subject: &claims.sub,
            audience: &claims.aud,
            assumed_arn: format!("arn:aws:sts::{account}:assumed-role/{role_name}/{session}"),
            assumed_id: format!("AROA{}:{session}", role_id(&role_arn)),
        };
        Continue(success(&answer))
    };
    settle(steps())
}

/// The form's members (the first of each name).
fn parse(body: &[u8]) -> Input {
    let mut input = Input::default();
    for (k, v) in form_urlencoded::parse(body) {
        let slot = match k.as_ref() {
            "Version" => &mut input.version,
            "RoleArn" => &mut input.role_arn,
            "RoleSessionName" => &mut input.session,
            "WebIdentityToken" => &mut input.token,
            "ProviderId" => &mut input.provider_id,
            "DurationSeconds" => &mut input.duration,
            "Policy" => &mut input.policy,
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(v.into_owned());
        }
    }
    input
}

/// The model's constraints, in STS's `ValidationError` words (members named in camelCase).
fn validate(input: &Input) -> Step<(String, String, String, Option<Duration>)> {
    let mut errors = Vec::new();
    let mut check = |v: &Option<String>, at: &str, min: usize, max: usize| {
        let Some(v) = v else {
            errors.push(crate::ops::validation::must_not_be_null(at));
            return;
        };
        let n = v.chars().count();
        if n < min {
            errors.push(format!("Value at '{at}' failed to satisfy constraint: Member must have length greater than or equal to {min}"));
        } else if n > max {
            errors.push(format!("Value at '{at}' failed to satisfy constraint: Member must have length less than or equal to {max}"));
        }
    };
    check(&input.role_arn, "roleArn", 20, 2048);
    check(&input.session, "roleSessionName", 2, 64);
    check(&input.token, "webIdentityToken", 4, 20000);
    if let Some(p) = &input.policy {
        if p.is_empty() || p.chars().count() > 2048 {
            errors.push("Value at 'policy' failed to satisfy constraint: Member must have length less than or equal to 2048".into());
        }
    }
    if let Some(s) = &input.session {
        let ok = |c: char| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c);
        if !s.chars().all(ok) {
            errors.push(format!("Value '{s}' at 'roleSessionName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]*"));
        }
    }
    let duration = match &input.duration {
        None => None,
        Some(d) => match d.parse::<u64>() {
            Ok(secs) if (900..=43200).contains(&secs) => Some(Duration::from_secs(secs)),
            Ok(_) => {
                errors.push(format!("Value '{d}' at 'durationSeconds' failed to satisfy constraint: Member must have value between 900 and 43200"));
                None
            }
            Err(_) => {
                return Break(error(&sts_error(
                    400,
                    "MalformedInput",
                    format!("Invalid value for DurationSeconds: {d}"),
                )))
            }
        },
    };
    if !errors.is_empty() {
        return Break(error(&sts_error(
            400,
            "ValidationError",
            crate::ops::validation::validation_message(&errors),
        )));
    }
    if input.provider_id.is_some() {
        // ProviderId is for OAuth 2.0 access tokens (Login with Amazon, Facebook); License
        // Manager's token is an OpenID Connect token, which STS refuses it with.
        return Break(error(&sts_error(
            400,
            "InvalidParameterValue",
            format!("ProviderId must not be given for an OpenID Connect token such as {ACCESS_ISSUER}'s"),
        )));
    }
    match (&input.role_arn, &input.session, &input.token) {
        (Some(r), Some(s), Some(t)) => Continue((r.clone(), s.clone(), t.clone(), duration)),
        _ => Break(error(&sts_error(
            500,
            "InternalFailure",
            "internal failure",
        ))),
    }
}

/// The account of an IAM role ARN (`arn:aws:iam::ACCOUNT:role/...`).
fn role_account(arn: &str) -> Option<&str> {
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(_), Some("iam"), Some(""), Some(account), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    (account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && resource.starts_with("role/"))
    .then_some(account)
}

/// A stable role id for an ARN (IAM's `AROA…` ids are fixed per role).
fn role_id(arn: &str) -> String {
    const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, arn.as_bytes());
    digest.as_ref()[..17]
        .iter()
        .map(|b| char::from(UPPER[usize::from(*b) % UPPER.len()]))
        .collect()
}

/// What the success answer holds.
struct Answer<'a> {
    credential: &'a Credential,
    expiration: String,
    subject: &'a str,
    audience: &'a str,
    assumed_arn: String,
    assumed_id: String,
}

/// The 200 answer, as STS writes it (`text/xml`, the result wrapped, `ResponseMetadata`).
fn success(a: &Answer<'_>) -> Outcome {
    let id = request_id();
    let mut out = String::new();
    {
        let mut w = XmlWriter::new(&mut out);
        let mut root = w
            .start_el("AssumeRoleWithWebIdentityResponse")
            .write_ns(XMLNS, None)
            .finish();
        let mut result = root.start_el("AssumeRoleWithWebIdentityResult").finish();
        leaf(&mut result, "SubjectFromWebIdentityToken", a.subject);
        leaf(&mut result, "Audience", a.audience);
        {
            let mut user = result.start_el("AssumedRoleUser").finish();
            leaf(&mut user, "Arn", &a.assumed_arn);
            leaf(&mut user, "AssumedRoleId", &a.assumed_id);
        }
        {
            let mut c = result.start_el("Credentials").finish();
            leaf(&mut c, "AccessKeyId", &a.credential.access_key_id);
            leaf(&mut c, "SecretAccessKey", &a.credential.secret_access_key);
            leaf(
                &mut c,
                "SessionToken",
                a.credential.session_token.as_deref().unwrap_or_default(),
            );
            leaf(&mut c, "Expiration", &a.expiration);
        }
        leaf(&mut result, "Provider", ACCESS_ISSUER);
        result.finish();
        let mut meta = root.start_el("ResponseMetadata").finish();
        leaf(&mut meta, "RequestId", &id);
        meta.finish();
        root.finish();
    }
    with_request_id(
        base_response(200, CONTENT_TYPE_XML, Bytes::from(out)),
        &id,
        None,
    )
}

/// The answer with `x-amzn-RequestId: id` (the body's `RequestId`): the protocol front keeps
/// an ID the answer already has.
fn with_request_id(
    mut resp: hyper::Response<http_body_util::Full<Bytes>>,
    id: &str,
    error_type: Option<&'static str>,
) -> Outcome {
    if let Ok(v) = hyper::header::HeaderValue::from_str(id) {
        resp.headers_mut().insert("x-amzn-requestid", v);
    }
    Outcome::Answer(resp, error_type)
}

fn leaf(scope: &mut aws_smithy_xml::encode::ScopeWriter<'_, '_>, name: &str, value: &str) {
    let mut el = scope.start_el(name).finish();
    el.data(value);
    el.finish();
}

/// An STS error as awsQuery sends it: `ErrorResponse` with `Error` (`Type`, `Code`,
/// `Message`) and `RequestId`, `text/xml`.
pub(crate) fn error(e: &StsError) -> Outcome {
    let id = request_id();
    let mut out = String::new();
    {
        let mut w = XmlWriter::new(&mut out);
        let mut root = w.start_el("ErrorResponse").write_ns(XMLNS, None).finish();
        {
            let mut err = root.start_el("Error").finish();
            leaf(&mut err, "Type", e.kind);
            leaf(&mut err, "Code", e.code);
            leaf(&mut err, "Message", &e.message);
        }
        leaf(&mut root, "RequestId", &id);
        root.finish();
    }
    with_request_id(
        base_response(e.status, CONTENT_TYPE_XML, Bytes::from(out)),
        &id,
        Some(e.code),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_arns_and_forms() {
        assert_eq!(
            role_account("arn:aws:iam::111122223333:role/service-role/X"),
            Some("111122223333")
        );
        for bad in [
            "arn:aws:iam::1111:role/X",
            "arn:aws:sts::111122223333:role/X",
            "x",
        ] {
            assert_eq!(role_account(bad), None, "{bad}");
        }
        let i = parse(b"Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2FR&RoleSessionName=a+b&RoleArn=second");
        assert_eq!(i.role_arn.as_deref(), Some("arn:aws:iam::1:role/R"));
        assert_eq!(i.session.as_deref(), Some("a b"));
        assert_eq!(i.version.as_deref(), Some(VERSION));
    }
}
