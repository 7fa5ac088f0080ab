//! Owns Containers Anywhere's token exchange: GetAccessToken, STS, role credentials, revocation.
//!
//! The buyer's license token (a refresh token) buys an access token from License Manager's
//! `GetAccessToken`; STS's `AssumeRoleWithWebIdentity` trades that for the consumption role's
//! temporary credentials, which the emulator then knows (and expires) like any other pair.

mod faults;
pub mod sts;
pub mod token;

pub use faults::{AnywhereFault, AnywhereFaultSpec, StsError, ALL_ANYWHERE_FAULTS};

use std::ops::ControlFlow::{Break, Continue};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use aws_lc_rs::rsa::KeyPair;
use hyper::body::Bytes;
use serde_json::{json, Map, Value};

use crate::answer::{html_page, json_answer, request_id, settle, Outcome, Step};
use crate::clock::{shift, unix_secs};
use crate::credentials::Credential;
use crate::fault::Fault;
use crate::ops::license::{self, LmError};
use crate::ops::validation::{json_object, Rejected};
use crate::record::{RecordLine, RATE_LIMITED};
use crate::shared::Shared;
use faults::FaultAnswer;
use token::{Claims, Invalid, Use, ISSUER_ACCOUNT_AMR};

/// The buyer account that creates license tokens by default (AWS's documentation example).
pub const DEFAULT_ISSUER_ACCOUNT: &str = "111122223333";
/// The role the launch page creates, in the issuer account by default.
pub const ROLE_PATH: &str = "role/service-role/AWSMarketplaceLicenseTokenConsumptionRole";
/// GetAccessToken's access tokens: "valid for one hour".
pub const DEFAULT_ACCESS_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// CreateToken's default expiry: 365 days.
pub const DEFAULT_REFRESH_TOKEN_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// The role's maximum session (IAM's default): DurationSeconds above it is refused.
pub const MAX_SESSION: Duration = Duration::from_secs(3600);
/// Where `mpgate-emulator revoke-token` posts a refresh token to revoke it.
pub const REVOKE_PATH: &str = "/mpgate-emulator/revoke-token";
/// The role credentials kept (the oldest are forgotten first: they get UnrecognizedClient).
const MAX_ROLE_CREDENTIALS: usize = 10_000;

/// The two operations of the exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// License Manager's, awsJson1.1, signed or not.
    GetAccessToken,
    /// STS's, awsQuery, unsigned.
    AssumeRoleWithWebIdentity,
}

pub const ALL_OPS: &[Op] = &[Op::GetAccessToken, Op::AssumeRoleWithWebIdentity];

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::GetAccessToken => "GetAccessToken",
            Op::AssumeRoleWithWebIdentity => "AssumeRoleWithWebIdentity",
        }
    }

    fn index(self) -> usize {
        match self {
            Op::GetAccessToken => 0,
            Op::AssumeRoleWithWebIdentity => 1,
        }
    }
}

/// The command line's side of the exchange.
#[derive(Debug, Clone)]
pub struct AnywhereConfig {
    /// `--token-issuer-account`: the buyer account whose tokens these are.
    pub issuer_account: String,
    /// `--license-role-arn` (default: the launch page's role in the issuer account).
    pub role_arn: Option<String>,
    /// `--access-token-ttl`.
    pub access_token_ttl: Duration,
    /// `--role-credentials-ttl` (default: DurationSeconds, else an hour).
    pub role_credentials_ttl: Option<Duration>,
    /// `--refresh-token-ttl`.
    pub refresh_token_ttl: Duration,
    /// `--license-token-file`: where the refresh token is written (`iam_role` beside it).
    pub token_file: Option<PathBuf>,
    /// `--license-fault GetAccessToken=…`, `--sts-fault AssumeRoleWithWebIdentity=…`.
    pub faults: Vec<AnywhereFaultSpec>,
}

impl Default for AnywhereConfig {
    fn default() -> Self {
        AnywhereConfig {
            issuer_account: DEFAULT_ISSUER_ACCOUNT.into(),
            role_arn: None,
            access_token_ttl: DEFAULT_ACCESS_TOKEN_TTL,
            role_credentials_ttl: None,
            refresh_token_ttl: DEFAULT_REFRESH_TOKEN_TTL,
            token_file: None,
            faults: Vec::new(),
        }
    }
}

impl AnywhereConfig {
    /// The consumption role the emulator knows.
    pub fn role_arn(&self) -> String {
        self.role_arn
            .clone()
            .unwrap_or_else(|| format!("arn:aws:iam::{}:{ROLE_PATH}", self.issuer_account))
    }
}

/// A pair STS handed out, and when it expires (AWS's clock).
struct RoleCredential {
    credential: Credential,
    expires: SystemTime,
}

/// The exchange's state: the refresh token issued at start, revocations, the role
/// credentials handed out, and the faults' counters.
#[derive(Default)]
pub struct Anywhere {
    pub config: AnywhereConfig,
    pub role_arn: String,
    pub license_arn: String,
    /// The refresh token issued at start (`--license-token-file`, `run --anywhere`).
    pub refresh_token: String,
    refresh_id: String,
    revoked: Mutex<Vec<String>>,
    issued: Mutex<Vec<RoleCredential>>,
    calls: [AtomicU64; 2],
}

impl Anywhere {
    /// Issues the refresh token for `license_arn`, signed by `key`, as of `now`.
    pub fn new(
        config: AnywhereConfig,
        license_arn: &str,
        key: &KeyPair,
        now: SystemTime,
    ) -> Result<Anywhere, String> {
        let id = fresh_id();
        let iat = unix_secs(now);
        let claims = Claims {
            id: id.clone(),
            sub: id.clone(),
            aud: license_arn.into(),
            issuer_account: config.issuer_account.clone(),
            amr: vec![format!("{ISSUER_ACCOUNT_AMR}{}", config.issuer_account)],
            iat,
            exp: iat.saturating_add(config.refresh_token_ttl.as_secs() as i64),
        };
        let refresh_token = token::mint(Use::Refresh, &claims, key)?;
        Ok(Anywhere {
            role_arn: config.role_arn(),
            license_arn: license_arn.into(),
            refresh_token,
            refresh_id: id,
            config,
            ..Anywhere::default()
        })
    }

    /// Revokes the refresh token issued at start (SIGUSR2); returns its id.
    pub fn revoke_issued(&self) -> String {
        self.revoke(&self.refresh_id);
        self.refresh_id.clone()
    }

    fn revoke(&self, id: &str) {
        if let Ok(mut r) = self.revoked.lock() {
            if !r.iter().any(|x| x == id) {
                r.push(id.to_string());
            }
        }
    }

    fn is_revoked(&self, id: &str) -> bool {
        self.revoked
            .lock()
            .map(|r| r.iter().any(|x| x == id))
            .unwrap_or(true)
    }

    /// A role pair STS handed out, as of `now`: `expired` once its expiry has passed (every
    /// signed call then gets ExpiredTokenException).
    pub fn role_credential(&self, access_key_id: &str, now: SystemTime) -> Option<Credential> {
        let issued = self.issued.lock().ok()?;
        let found = issued
            .iter()
            .find(|c| c.credential.access_key_id == access_key_id)?;
        let mut c = found.credential.clone();
        c.expired = now >= found.expires;
        Some(c)
    }

    fn remember(&self, credential: Credential, expires: SystemTime) {
        if let Ok(mut issued) = self.issued.lock() {
            if issued.len() >= MAX_ROLE_CREDENTIALS {
                issued.remove(0);
            }
            issued.push(RoleCredential {
                credential,
                expires,
            });
        }
    }

    /// The fault for this call of `op`, if one applies (the first listed wins).
    fn take_fault(&self, op: Op) -> Option<AnywhereFault> {
        let n = self.calls[op.index()].fetch_add(1, Ordering::SeqCst) + 1;
        self.config
            .faults
            .iter()
            .find(|s| s.op == op && s.applies(n))
            .map(|s| s.fault)
    }
}

/// A fresh id, shaped like AWS's token ids (a random UUID).
fn fresh_id() -> String {
    request_id()
}

/// The `--record` members of a call: never a token, only ids.
fn note(rec: &mut RecordLine, members: Map<String, Value>) {
    rec.license = None;
    rec.members = Some(members);
}

/// GetAccessToken, once routed, of the right content type and, when signed, verified: the
/// body's shape, `--rate-limit`, the faults, then the refresh token.
pub(crate) fn get_access_token(
    shared: &Shared,
    anywhere: &Anywhere,
    parsed: Result<Value, serde_json::Error>,
    rec: &mut RecordLine,
) -> Outcome {
    let steps = || {
        let (token, properties) = access_input(parsed, rec)?;
        if !shared.admit() {
            rec.fault = RATE_LIMITED;
            return Break(lm(license::LicenseFault::RateLimitExceeded.error()));
        }
        fault(anywhere, Op::GetAccessToken, rec)?;
        let Some(key) = shared.keys.first() else {
            return Break(lm(license::LicenseFault::ServerInternal.error()));
        };
        let now = shared.clock.now();
        let claims = refresh_claims(anywhere, &token, &properties, &key.signing_key, now)?;
        let id = fresh_id();
        let iat = unix_secs(now);
        let access = Claims {
            id: id.clone(),
            sub: claims.id.clone(),
            iat,
            exp: iat.saturating_add(anywhere.config.access_token_ttl.as_secs().max(1) as i64),
            ..claims
        };
        let Ok(access_token) = token::mint(Use::Access, &access, &key.signing_key) else {
            return Break(lm(license::LicenseFault::ServerInternal.error()));
        };
        if let Some(members) = rec.members.as_mut() {
            members.insert("issuedTokenId".into(), json!(id));
        }
        Continue(json_answer(
            json!({ "AccessToken": access_token }).to_string(),
        ))
    };
    settle(steps())
}

/// GetAccessToken's input: `Token` (required, up to 4096 characters, no spaces) and
/// `TokenProperties` (up to 3 strings).
fn access_input(
    parsed: Result<Value, serde_json::Error>,
    rec: &mut RecordLine,
) -> Step<(String, Vec<String>)> {
    let obj = match json_object(parsed) {
        Ok(obj) => obj,
        Err(Rejected(t, m)) => return Break(crate::answer::error_answer(400, t, &m)),
    };
    let mut members = Map::new();
    if let Some(id) = obj
        .get("Token")
        .and_then(Value::as_str)
        .and_then(token::claimed_id)
    {
        members.insert("tokenId".into(), json!(id));
    }
    note(rec, members);
    let mut errors = Vec::new();
    let token = crate::ops::validation::string_member(&obj, "Token", "token", true, &mut errors);
    if let Some(t) = &token {
        if t.chars().count() > 4096 {
            errors.push(
                "Value at 'token' failed to satisfy constraint: Member must have length less than or equal to 4096".into(),
            );
        } else if t.is_empty() || t.chars().any(char::is_whitespace) {
            errors.push(
                "Value at 'token' failed to satisfy constraint: Member must satisfy regular expression pattern: \\S+".into(),
            );
        }
    }
    let mut properties = Vec::new();
    match obj.get("TokenProperties") {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) if list.len() <= 3 => {
            for (i, v) in list.iter().enumerate() {
                match v.as_str() {
                    Some(s) => properties.push(s.to_string()),
                    None => errors.push(format!(
                        "Value {} at 'tokenProperties.{}.member' failed to satisfy constraint: Member must be a string",
                        crate::ops::validation::type_name(v),
                        i + 1
                    )),
                }
            }
        }
        Some(Value::Array(_)) => errors.push(
            "Value at 'tokenProperties' failed to satisfy constraint: Member must have length less than or equal to 3".into(),
        ),
        Some(other) => errors.push(format!(
            "Value {} at 'tokenProperties' failed to satisfy constraint: Member must be a list",
            crate::ops::validation::type_name(other)
        )),
    }
    match (token, errors.is_empty()) {
        (Some(t), true) => Continue((t, properties)),
        _ => Break(lm(Some(lm_error(
            400,
            "ValidationException",
            crate::ops::validation::validation_message(&errors),
        )))),
    }
}

/// The refresh token's claims, if it is one the emulator issued, for its license, neither
/// expired nor revoked, and holding the properties asked for. How AWS words these refusals
/// is not published: not a JWT is a ValidationException, every other refusal an
/// AccessDeniedException (the model lists no other error that fits).
fn refresh_claims(
    anywhere: &Anywhere,
    token: &str,
    properties: &[String],
    key: &KeyPair,
    now: SystemTime,
) -> Step<Claims> {
    let denied = |m: &str| Break(lm(Some(lm_error(401, "AccessDeniedException", m))));
    let claims = match token::verify(token, Use::Refresh, key) {
        Ok(c) => c,
        Err(Invalid::NotAJwt) => {
            return Break(lm(Some(lm_error(
                400,
                "ValidationException",
                "The refresh token is not a valid JWT.",
            ))))
        }
        Err(Invalid::NotOurs) => {
            return denied("The refresh token is not valid: License Manager did not issue it.")
        }
    };
    if anywhere.is_revoked(&claims.id) {
        return denied("The refresh token has been revoked.");
    }
    if unix_secs(now) >= claims.exp {
        return denied("The refresh token has expired.");
    }
    if claims.aud != anywhere.license_arn {
        return denied(&format!(
            "The refresh token is for license {}, which this account does not hold.",
            claims.aud
        ));
    }
    if let Some(p) = properties.iter().find(|p| !claims.amr[1..].contains(p)) {
        return Break(lm(Some(lm_error(
            400,
            "ValidationException",
            format!("Token property {p} is not present in the token."),
        ))));
    }
    Continue(claims)
}

fn lm_error(status: u16, error_type: &'static str, message: impl Into<String>) -> LmError {
    LmError {
        status,
        error_type,
        message: message.into(),
        location: None,
    }
}

/// License Manager's error answer (a server error if there is none to give).
fn lm(e: Option<LmError>) -> Outcome {
    license::error(e.unwrap_or_else(|| {
        lm_error(
            500,
            "ServerInternalException",
            "The server experienced an internal error. Try again.",
        )
    }))
}

/// The fault of this call of `op`, answered in the operation's protocol.
fn fault(anywhere: &Anywhere, op: Op, rec: &mut RecordLine) -> Step<()> {
    let Some(f) = anywhere.take_fault(op) else {
        return Continue(());
    };
    rec.fault = f.name();
    Break(match f.answer(op) {
        FaultAnswer::License(e) => lm(Some(e)),
        FaultAnswer::Sts(e) => sts::error(&e),
        FaultAnswer::Network => match f {
            AnywhereFault::Hang => Outcome::Hang,
            AnywhereFault::Drop => Outcome::Drop,
            _ => html_page(Fault::Http503Html).unwrap_or(Outcome::Drop),
        },
    })
}

/// `POST /mpgate-emulator/revoke-token` with a refresh token the emulator issued as the
/// body (only its holder can revoke it): GetAccessToken refuses it from then on.
pub(crate) fn revoke_request(
    shared: &Shared,
    anywhere: &Anywhere,
    body: &Bytes,
    rec: &mut RecordLine,
) -> Outcome {
    rec.target = Some("RevokeToken".into());
    let token = std::str::from_utf8(body).unwrap_or_default().trim();
    let key = shared.keys.first().map(|k| &k.signing_key);
    match key.map(|k| token::verify(token, Use::Refresh, k)) {
        Some(Ok(claims)) => {
            anywhere.revoke(&claims.id);
            crate::log::error(&format!("refresh token {} revoked", claims.id));
            note(rec, Map::from_iter([("tokenId".into(), json!(claims.id))]));
            json_answer(json!({ "revoked": claims.id }).to_string())
        }
        _ => crate::answer::error_answer(
            400,
            "ValidationException",
            "the body must be a refresh token this emulator issued (the license token file's contents)",
        ),
    }
}

/// Seconds from `now` to `t`, for messages.
pub(crate) fn expiry(now: SystemTime, ttl: Duration) -> SystemTime {
    shift(now, ttl.as_millis().min(i64::MAX as u128) as i64)
}
