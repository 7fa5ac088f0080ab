//! Owns the License Manager calls of contract pricing: CheckoutLicense, ExtendLicenseConsumption
//! and CheckInLicense, what their answers must hold, and what each of their errors means.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_licensemanager::{
    config::{IdentityCache, StalledStreamProtectionConfig},
    error::{ProvideErrorMetadata, SdkError},
    operation::{
        check_in_license::CheckInLicenseError, checkout_license::CheckoutLicenseError,
        extend_license_consumption::ExtendLicenseConsumptionError,
    },
    types::{CheckoutType, EntitlementData, EntitlementDataUnit},
};
use aws_smithy_types::date_time::{DateTime, Format};
use serde::Serialize;

use crate::call::{self, AttemptLog, CallError, CallRecord, Prepared, Service};
use crate::config::{Config, Contract};

/// The AWS Marketplace issuer's key fingerprint: only licenses AWS Marketplace issued are
/// checked out (a license the buyer's own account issued would carry another).
pub const KEY_FINGERPRINT: &str = "aws:294406891311:AWS/Marketplace:issuer-fingerprint";
/// The IAM actions contract pricing needs, named in access-denied messages, and their policy.
const IAM: (&str, &str) = (
    "license-manager:CheckoutLicense, ExtendLicenseConsumption and CheckInLicense",
    "deploy/iam-policy-license-manager.json",
);
/// The model's bound on `Expiration` (ISO8601DateTime: at most 50 characters).
const MAX_TIMESTAMP_CHARS: usize = 50;
/// Bounds on what the answer hands on: ARNs are at most 2048 characters in the model.
const MAX_ARN_CHARS: usize = 2048;
const MAX_CONSUMPTION_TOKEN_CHARS: usize = 4096;

/// AWS License Manager, as the call layer needs to know it.
pub const SERVICE: Service = Service {
    name: "License Manager",
    service_id: "License Manager",
    rules: call::endpoint_rules!(aws_sdk_licensemanager),
    error_code: |e| {
        e.downcast_ref::<CheckoutLicenseError>()
            .and_then(|e| e.code())
            .or_else(|| {
                e.downcast_ref::<ExtendLicenseConsumptionError>()
                    .and_then(|e| e.code())
            })
            .or_else(|| {
                e.downcast_ref::<CheckInLicenseError>()
                    .and_then(|e| e.code())
            })
            .map(str::to_owned)
    },
};

/// An entitlement the license allowed, as the workload gets it (`MPGATE_LICENSE_ENTITLEMENTS`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct Allowed {
    pub name: String,
    pub unit: String,
    pub value: Option<String>,
}

/// A checked-out consumption: what the answer held, checked.
#[derive(Debug, Clone)]
pub struct Checkout {
    pub license_arn: String,
    pub consumption_token: String,
    pub entitlements: Vec<Allowed>,
    /// `Expiration` as License Manager wrote it (for the workload and the result file).
    pub expiration: SystemTime,
    /// When the consumption expires on this node's monotonic clock (never later than it does).
    pub expires_at: Instant,
    /// The `SignedToken`: handed to the workload, never logged.
    pub signed_token: Option<String>,
}

/// A renewed consumption.
#[derive(Debug)]
pub struct Extension {
    pub consumption_token: String,
    pub expiration: SystemTime,
    pub expires_at: Instant,
}

/// License Manager's clock read against this node's monotonic one, from a checkout answer:
/// seat timing never uses the node's wall clock, which the buyer may set.
#[derive(Debug, Clone, Copy)]
pub struct Anchor {
    /// License Manager's time at `local` at the latest: the answer's `IssuedAt` (plus its
    /// precision: a whole-second `IssuedAt` may be up to a second behind).
    server: SystemTime,
    /// When the checkout was sent: License Manager issued it no earlier.
    local: Instant,
}

impl Anchor {
    /// When License Manager's time `at` comes on the monotonic clock: never later than it does.
    pub fn instant_of(&self, at: SystemTime) -> Instant {
        match at.duration_since(self.server) {
            Ok(ahead) => self.local + ahead,
            Err(behind) => self
                .local
                .checked_sub(behind.duration())
                .unwrap_or(self.local),
        }
    }

    /// From a checkout sent at `sent`: its `IssuedAt`, or without one (the model makes every
    /// member optional) this node's clock when it was sent.
    fn of(issued_at: Option<SystemTime>, sent: Instant, sent_wall: SystemTime) -> Anchor {
        let server = match issued_at {
            Some(at)
                if at
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .is_ok_and(|d| d.subsec_nanos() == 0) =>
            {
                at + Duration::from_secs(1)
            }
            Some(at) => at,
            None => sent_wall,
        };
        Anchor {
            server,
            local: sent,
        }
    }
}

/// Why a license could not be checked out or held; each variant is one exit code (`exit`).
#[derive(Debug, thiserror::Error)]
pub enum LicenseError {
    #[error("{0}")]
    NotEntitled(String),
    /// With `--seat hold`: a renewal failed finally (the license was revoked, expired or
    /// the consumption is gone).
    #[error("{0}")]
    Lost(String),
    #[error(transparent)]
    Call(#[from] CallError),
}

/// What later calls need: the SDK configuration (its credential provider refreshes what the
/// first call resolved once) and the endpoint.
#[derive(Clone)]
pub struct Session {
    sdk: aws_config::SdkConfig,
    endpoint_url: Option<String>,
    scope: call::Scope,
    attempt_timeout: Duration,
    anchor: Anchor,
}

/// Checks the entitlements out (PROVISIONAL) with one `client_token` across retries, and
/// checks the answer: every entitlement allowed, a license ARN, an expiration to come. The
/// call ends `timeout` after `started`.
pub async fn checkout(
    config: &Config,
    contract: &Contract,
    client_token: &str,
    (started, timeout): (Instant, Duration),
    record: &mut CallRecord,
) -> Result<(Checkout, Session), LicenseError> {
    let prepared = call::prepare(config, &SERVICE).await?;
    let remaining = timeout
        .saturating_sub(started.elapsed())
        .max(Duration::from_millis(1));
    let client = client(
        &prepared.sdk,
        prepared.endpoint_url.clone(),
        prepared.attempts.clone(),
        call::timeouts(config.attempt_timeout, remaining),
        Some(prepared.credentials.clone()),
    );
    let mut request = client
        .checkout_license()
        .product_sku(&contract.product_sku)
        .checkout_type(CheckoutType::Provisional)
        .key_fingerprint(KEY_FINGERPRINT)
        .client_token(client_token);
    for wanted in &contract.entitlements {
        request = request.entitlements(
            EntitlementData::builder()
                .name(&wanted.name)
                .set_value(wanted.value.clone())
                .unit(EntitlementDataUnit::from(wanted.unit.as_str()))
                .build()
                .map_err(|e| CallError::Refused(format!("the request could not be made: {e}")))?,
        );
    }
    let sent_at = (Instant::now(), SystemTime::now());
    let sent = call::send(
        std::pin::pin!(request.send()),
        prepared.log(),
        remaining,
        record,
    )
    .await?;
    let out = match sent {
        Ok(out) => out,
        Err(e) => return Err(classify_checkout(e, contract, &prepared)),
    };
    let (checkout, anchor) = checked(out, contract, sent_at).map_err(CallError::BadAnswer)?;
    let session = Session {
        sdk: prepared.sdk,
        endpoint_url: prepared.endpoint_url,
        scope: prepared.scope,
        attempt_timeout: config.attempt_timeout,
        anchor,
    };
    Ok((checkout, session))
}

/// Builds a client for one call, counting its attempts in `attempts`. `credentials`: the ones
/// the first call resolved; later calls use the SDK's provider, which refreshes them.
fn client(
    sdk: &aws_config::SdkConfig,
    endpoint_url: Option<String>,
    attempts: Arc<AttemptLog>,
    timeouts: aws_config::timeout::TimeoutConfig,
    credentials: Option<aws_credential_types::Credentials>,
) -> aws_sdk_licensemanager::Client {
    let mut builder = aws_sdk_licensemanager::config::Builder::from(sdk)
        // The answer is at most MAX_ANSWER_BYTES and every attempt has a timeout.
        .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
        .interceptor(call::AttemptObserver::new(attempts, &SERVICE))
        .retry_classifier(call::RetryingWontHelp::new(&SERVICE))
        .timeout_config(timeouts);
    if let Some(url) = endpoint_url {
        builder = builder.endpoint_url(url);
    }
    if let Some(credentials) = credentials {
        builder = builder
            .credentials_provider(credentials)
            .identity_cache(IdentityCache::no_cache());
    }
    aws_sdk_licensemanager::Client::from_conf(builder.build())
}

/// What a checkout answer (to a call sent at `sent`) must hold before the workload may start.
fn checked(
    out: aws_sdk_licensemanager::operation::checkout_license::CheckoutLicenseOutput,
    contract: &Contract,
    (sent, sent_wall): (Instant, SystemTime),
) -> Result<(Checkout, Anchor), String> {
    match out.checkout_type() {
        Some(CheckoutType::Provisional) => {}
        Some(_) => return Err("the checkout is not PROVISIONAL".into()),
        None => return Err("no checkout type (PROVISIONAL was asked for)".into()),
    }
    let license_arn = out
        .license_arn()
        .filter(|arn| is_license_arn(arn))
        .ok_or("no license ARN")?
        .to_owned();
    let consumption_token = out
        .license_consumption_token()
        .filter(|t| !t.is_empty() && t.len() <= MAX_CONSUMPTION_TOKEN_CHARS)
        .ok_or("no license consumption token")?
        .to_owned();
    let allowed: Vec<Allowed> = out
        .entitlements_allowed()
        .iter()
        .map(|e| Allowed {
            name: e.name().to_owned(),
            unit: e.unit().as_str().to_owned(),
            value: e.value().map(str::to_owned),
        })
        .collect();
    // Every entitlement asked for, with its unit and at least the value asked for: AWS
    // answers NoEntitlementsAllowedException otherwise, so a success without one is not AWS's.
    let mut entitlements = Vec::with_capacity(contract.entitlements.len());
    for wanted in &contract.entitlements {
        let granted = allowed
            .iter()
            .find(|a| a.name == wanted.name && a.unit == wanted.unit)
            .filter(|a| match &wanted.value {
                None => true,
                Some(value) => a.value.as_deref().and_then(amount) >= amount(value),
            })
            .ok_or_else(|| format!("entitlement {} is not among those allowed", wanted.name))?;
        entitlements.push(granted.clone());
    }
    let expiration = out.expiration().ok_or("no expiration")?;
    let expiration = parse_expiration(expiration)?;
    let issued_at = out.issued_at().map(parse_expiration).transpose()?;
    let anchor = Anchor::of(issued_at, sent, sent_wall);
    let expires_at = anchor.instant_of(expiration);
    if expires_at <= sent {
        return Err(match issued_at {
            Some(issued_at) => format!(
                "the checkout expired at {}, no later than it was issued ({})",
                rfc3339(expiration),
                rfc3339(issued_at)
            ),
            // Without IssuedAt only the node's clock can tell.
            None => format!(
                "the checkout expired at {} before it arrived: check the node's clock (NTP, chrony)",
                rfc3339(expiration)
            ),
        });
    }
    let checkout = Checkout {
        license_arn,
        consumption_token,
        entitlements,
        expiration,
        expires_at,
        signed_token: out.signed_token().map(str::to_owned),
    };
    Ok((checkout, anchor))
}

/// A License Manager license ARN: `arn:PARTITION:license-manager:[REGION]:ACCOUNT:license:l-ID`
/// (a 12-digit account, a 32-hex-digit ID), as AWS and the emulator write it.
fn is_license_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [prefix, partition, service, region, account, resource] = parts[..] else {
        return false;
    };
    let label = |s: &str| {
        !s.is_empty()
            && s.split('-').all(|l| {
                !l.is_empty()
                    && l.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            })
    };
    let id = resource.strip_prefix("license:l-").unwrap_or_default();
    arn.len() <= MAX_ARN_CHARS
        && prefix == "arn"
        && label(partition)
        && service == "license-manager"
        && (region.is_empty() || label(region))
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn amount(value: &str) -> Option<u64> {
    value.parse().ok()
}

/// License Manager's `Expiration`: RFC 3339 (ExtendLicenseConsumption) or the same without a
/// zone, meaning UTC (CheckoutLicense answers so, against its own model's pattern).
pub fn parse_expiration(text: &str) -> Result<SystemTime, String> {
    let bad = || {
        format!(
            "the expiration {:?} is not a timestamp",
            text.chars().take(MAX_TIMESTAMP_CHARS).collect::<String>()
        )
    };
    if text.len() > MAX_TIMESTAMP_CHARS {
        return Err(bad());
    }
    let parsed = DateTime::from_str(text, Format::DateTimeWithOffset)
        .or_else(|_| DateTime::from_str(&format!("{text}Z"), Format::DateTime))
        .map_err(|_| bad())?;
    SystemTime::try_from(parsed).map_err(|_| bad())
}

/// A time as RFC 3339 in UTC (`2026-12-01T15:04:05Z`).
pub fn rfc3339(time: SystemTime) -> String {
    DateTime::from(time)
        .fmt(Format::DateTime)
        .unwrap_or_default()
}

impl Session {
    /// Renews the consumption, within `deadline` and `config`'s retry policy.
    pub async fn extend(
        &self,
        consumption_token: &str,
        deadline: Duration,
        record: &mut CallRecord,
    ) -> Result<Extension, LicenseError> {
        let (client, attempts, text) = self.client(deadline);
        let sent = std::pin::pin!(client
            .extend_license_consumption()
            .license_consumption_token(consumption_token)
            .send());
        match call::send(sent, (&attempts, &text), deadline, record).await? {
            Ok(out) => Ok(self.extended(&out).map_err(CallError::BadAnswer)?),
            Err(e) => Err(classify_renewal(
                e,
                (&attempts, &text, &self.scope),
                "ExtendLicenseConsumption",
                consumption_token,
            )),
        }
    }

    /// What an extension answer must hold, as a checkout's: a consumption token (License
    /// Manager may retire the one it was asked with, so an answer without one leaves none
    /// known to be valid) and an expiration to come, on the monotonic clock.
    fn extended(
        &self,
        out: &aws_sdk_licensemanager::operation::extend_license_consumption::ExtendLicenseConsumptionOutput,
    ) -> Result<Extension, String> {
        let consumption_token = out
            .license_consumption_token()
            .filter(|t| !t.is_empty() && t.len() <= MAX_CONSUMPTION_TOKEN_CHARS)
            .ok_or("no license consumption token")?
            .to_owned();
        let expiration = parse_expiration(out.expiration().ok_or("no expiration")?)?;
        let expires_at = self.anchor.instant_of(expiration);
        if expires_at <= Instant::now() {
            return Err(format!(
                "the extension expired at {} before it arrived",
                rfc3339(expiration)
            ));
        }
        Ok(Extension {
            consumption_token,
            expiration,
            expires_at,
        })
    }

    /// Gives the consumption back, within `deadline`.
    pub async fn check_in(
        &self,
        consumption_token: &str,
        deadline: Duration,
        record: &mut CallRecord,
    ) -> Result<(), LicenseError> {
        let (client, attempts, text) = self.client(deadline);
        let sent = std::pin::pin!(client
            .check_in_license()
            .license_consumption_token(consumption_token)
            .send());
        match call::send(sent, (&attempts, &text), deadline, record).await? {
            Ok(_) => Ok(()),
            Err(e) => Err(classify_renewal(
                e,
                (&attempts, &text, &self.scope),
                "CheckInLicense",
                consumption_token,
            )),
        }
    }

    /// A client for one call within `deadline`, with its own attempt log.
    fn client(
        &self,
        deadline: Duration,
    ) -> (aws_sdk_licensemanager::Client, Arc<AttemptLog>, String) {
        let attempts = Arc::new(AttemptLog::default());
        let client = client(
            &self.sdk,
            self.endpoint_url.clone(),
            attempts.clone(),
            call::timeouts(self.attempt_timeout, deadline),
            None,
        );
        (client, attempts, call::humantime(deadline))
    }
}

/// An extension's or check-in's error: transient ones (`Call(Unreachable)`) may be tried
/// again before the consumption expires; `Lost` when License Manager no longer knows the
/// checkout; `Call(Refused)` when it refuses the call (an IAM denial, rejected credentials).
fn classify_renewal<E>(
    error: SdkError<E, aws_smithy_runtime_api::http::Response>,
    (attempts, deadline, scope): (&AttemptLog, &str, &call::Scope),
    operation: &str,
    consumption_token: &str,
) -> LicenseError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let SdkError::ServiceError(service) = &error else {
        return call::transport_error(&error, &SERVICE, attempts, deadline).into();
    };
    let err = service.err();
    let code = err.code().unwrap_or("unknown error");
    // The consumption token lets anyone extend or check in the seat: never in a log.
    let message: String = err
        .message()
        .unwrap_or("")
        .replace(consumption_token, "<consumption token>")
        .chars()
        .take(300)
        .collect();
    if code == "ResourceNotFoundException" {
        return LicenseError::Lost(format!(
            "License Manager no longer knows the checkout ({operation}: {code}: {message}): the license was revoked or has ended, or the consumption expired; check the license grant in AWS License Manager"
        ));
    }
    let status = service.raw().status().as_u16();
    if call::is_access_denied(code) && !call::is_transient(code, status) {
        return CallError::Refused(format!(
            "the credentials may not call license-manager:{operation} ({code}): add the actions of {} to the task role or the pod's IAM role; mpgate cannot hold a seat without it",
            IAM.1
        ))
        .into();
    }
    call::other_service_error(
        &SERVICE,
        (code, status, &message),
        IAM,
        (attempts, deadline, scope),
        &format!("the {operation} call"),
    )
    .into()
}

/// Maps CheckoutLicense's errors to what happened and what the operator should do.
fn classify_checkout(
    error: SdkError<CheckoutLicenseError, aws_smithy_runtime_api::http::Response>,
    contract: &Contract,
    prepared: &Prepared,
) -> LicenseError {
    let sku = &contract.product_sku;
    let (attempts, deadline) = prepared.log();
    let SdkError::ServiceError(service) = &error else {
        return call::transport_error(&error, &SERVICE, attempts, deadline).into();
    };
    let err = service.err();
    let code = err.code().unwrap_or("unknown error");
    let message: String = err.message().unwrap_or("").chars().take(300).collect();
    let refused = |advice: &str| {
        LicenseError::Call(CallError::Refused(format!(
            "License Manager refused the checkout of product SKU {sku} ({code}: {message}): {advice}"
        )))
    };
    match err {
        CheckoutLicenseError::NoEntitlementsAllowedException(_) => LicenseError::NotEntitled(format!(
            "the buyer's license for product SKU {sku} does not allow {} (NoEntitlementsAllowedException: {message}): check MPGATE_PRODUCT_SKU is the product ID from the AWS Marketplace Management Portal; accept the license grant in AWS License Manager with the AWS account that runs this container, and check the seats in use (every held checkout counts) and that the contract includes these entitlements",
            wanted(contract)
        )),
        CheckoutLicenseError::ResourceNotFoundException(_) => LicenseError::NotEntitled(format!(
            "License Manager has no license for product SKU {sku} (ResourceNotFoundException: {message}): check MPGATE_PRODUCT_SKU is the product ID from the AWS Marketplace Management Portal, and that the buyer accepted the license grant in AWS License Manager"
        )),
        CheckoutLicenseError::ValidationException(_)
        | CheckoutLicenseError::InvalidParameterValueException(_) => refused(
            "check MPGATE_PRODUCT_SKU and the entitlement names and units (MPGATE_ENTITLEMENTS) against the product's pricing dimensions",
        ),
        CheckoutLicenseError::RedirectException(redirect) => refused(&format!(
            "the license is served in another region ({}): run the workload in the license's home region, or let the platform set AWS_REGION",
            redirect.location().unwrap_or("no location given").chars().take(200).collect::<String>()
        )),
        CheckoutLicenseError::UnsupportedDigitalSignatureMethodException(_) => refused(
            "the license's issuer signs with a method License Manager does not support here: contact AWS Marketplace Seller Operations",
        ),
        _ => call::other_service_error(
            &SERVICE,
            (code, service.raw().status().as_u16(), &message),
            IAM,
            (attempts, deadline, &prepared.scope),
            &format!("product SKU {sku}"),
        )
        .into(),
    }
}

/// `Basic, Seats=2`: the entitlements asked for, as the operator wrote them.
fn wanted(contract: &Contract) -> String {
    contract
        .entitlements
        .iter()
        .map(|e| match (&e.value, e.unit.as_str()) {
            (None, _) => e.name.clone(),
            (Some(v), "Count") => format!("{}={v}", e.name),
            (Some(v), unit) => format!("{}={v}:{unit}", e.name),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_call_goes_where_the_sdk_sends_it() {
        call::tests::endpoints(
            &SERVICE,
            "https://license-manager-fips.eu-west-1.amazonaws.com",
            "https://license-manager.eu-west-1.amazonaws.com",
        )
        .await;
    }

    #[test]
    fn both_expiration_formats_are_read_as_utc() {
        let at = |s: &str| {
            parse_expiration(s)
                .unwrap()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs()
        };
        // 2026-12-01T14:15:27Z
        let expected = 1_796_134_527;
        assert_eq!(at("2026-12-01T14:15:27"), expected);
        assert_eq!(at("2026-12-01T14:15:27.110091"), expected);
        assert_eq!(at("2026-12-01T14:15:27Z"), expected);
        assert_eq!(at("2026-12-01T15:15:27+01:00"), expected);
        for bad in [
            "",
            "2026-12-01 14:15:27",
            "tomorrow",
            "2026-12-01T14:15:27ZZ",
            &"9".repeat(60),
        ] {
            assert!(parse_expiration(bad).is_err(), "{bad:?}");
        }
    }

    fn allowed(name: &str, unit: EntitlementDataUnit, value: Option<&str>) -> EntitlementData {
        EntitlementData::builder()
            .name(name)
            .unit(unit)
            .set_value(value.map(str::to_owned))
            .build()
            .unwrap()
    }

    fn answer(
        edit: impl FnOnce(
            aws_sdk_licensemanager::operation::checkout_license::builders::CheckoutLicenseOutputBuilder,
        ) -> aws_sdk_licensemanager::operation::checkout_license::builders::CheckoutLicenseOutputBuilder,
    ) -> aws_sdk_licensemanager::operation::checkout_license::CheckoutLicenseOutput {
        edit(
            aws_sdk_licensemanager::operation::checkout_license::CheckoutLicenseOutput::builder()
                .checkout_type(CheckoutType::Provisional)
                .license_arn(
                    "arn:aws:license-manager::294406891311:license:l-0123456789abcdef0123456789abcdef",
                )
                .license_consumption_token("token")
                .entitlements_allowed(allowed("Basic", EntitlementDataUnit::None, None))
                .entitlements_allowed(allowed("Seats", EntitlementDataUnit::Count, Some("2")))
                .expiration("2026-12-01T15:00:00"),
        )
        .build()
    }

    fn contract() -> Contract {
        Contract {
            product_sku: "prod-sku".into(),
            entitlements: crate::entitlement::parse_all(["Basic", "Seats=2"]).unwrap(),
            seat: crate::config::Seat::Check,
            grace: Duration::from_secs(30),
        }
    }

    #[test]
    fn seat_timing_comes_from_the_answer_s_own_times_not_the_node_s_clock() {
        // The node's clock a day behind (or ahead): the seat still lasts IssuedAt to
        // Expiration, less a second for a whole-second IssuedAt, from when it was sent.
        let issued = "2026-12-01T14:00:00";
        for node in ["2026-11-30T14:00:00Z", "2026-12-02T14:00:00Z"] {
            let sent = (Instant::now(), parse_expiration(node).unwrap());
            let (ok, anchor) = checked(
                answer(|b| b.issued_at(issued).expiration("2026-12-01T14:10:00")),
                &contract(),
                sent,
            )
            .unwrap();
            assert_eq!(ok.expires_at - sent.0, Duration::from_secs(599), "{node}");
            // An extension's Expiration is read against the same anchor.
            let later = parse_expiration("2026-12-01T15:00:00").unwrap();
            assert_eq!(anchor.instant_of(later) - sent.0, Duration::from_secs(3599));
        }
        // A fractional IssuedAt is exact.
        let sent = (Instant::now(), SystemTime::now());
        let (ok, _) = checked(
            answer(|b| {
                b.issued_at("2026-12-01T14:00:00.5")
                    .expiration("2026-12-01T14:10:00")
            }),
            &contract(),
            sent,
        )
        .unwrap();
        assert_eq!(ok.expires_at - sent.0, Duration::from_millis(599_500));
        // Expired when issued, whatever the node's clock says.
        let e = checked(
            answer(|b| b.issued_at(issued).expiration("2026-12-01T14:00:01")),
            &contract(),
            sent,
        )
        .unwrap_err();
        assert!(e.contains("no later than it was issued"), "{e}");
    }

    #[test]
    fn a_success_answer_must_hold_every_entitlement_an_arn_and_a_future_expiration() {
        let now = parse_expiration("2026-12-01T14:00:00Z").unwrap();
        let sent = (Instant::now(), now);
        let (ok, _) = checked(answer(|b| b), &contract(), sent).unwrap();
        assert_eq!(ok.entitlements.len(), 2);
        assert_eq!(rfc3339(ok.expiration), "2026-12-01T15:00:00Z");
        let refused = |edit: fn(_) -> _, says: &str| {
            let e = checked(answer(edit), &contract(), sent).unwrap_err();
            assert!(e.contains(says), "{e}");
        };
        refused(|b| b.set_license_arn(None), "no license ARN");
        refused(|b| b.license_arn("l-1"), "no license ARN");
        // Only a License Manager license ARN: not any ARN, nor one with a made-up ID.
        refused(|b| b.license_arn("arn:aws:s3:::bucket"), "no license ARN");
        refused(
            |b| b.license_arn("arn:aws:license-manager::294406891311:license:l-1"),
            "no license ARN",
        );
        refused(
            |b| {
                b.license_arn("arn:aws:license-manager::29440689131:license:l-0123456789abcdef0123456789abcdef")
            },
            "no license ARN",
        );
        refused(|b| b.set_checkout_type(None), "no checkout type");
        refused(
            |b| b.set_license_consumption_token(None),
            "consumption token",
        );
        refused(|b| b.set_expiration(None), "no expiration");
        refused(|b| b.expiration("2026-12-01T13:59:59"), "node's clock");
        refused(|b| b.expiration("soon"), "not a timestamp");
        refused(|b| b.checkout_type(CheckoutType::Perpetual), "PROVISIONAL");
        refused(
            |b| b.set_entitlements_allowed(None),
            "entitlement Basic is not among those allowed",
        );
        // Fewer seats than asked for, or the right number in another unit.
        refused(
            |b| {
                b.set_entitlements_allowed(Some(vec![
                    allowed("Basic", EntitlementDataUnit::None, None),
                    allowed("Seats", EntitlementDataUnit::Count, Some("1")),
                ]))
            },
            "entitlement Seats",
        );
        refused(
            |b| {
                b.set_entitlements_allowed(Some(vec![
                    allowed("Basic", EntitlementDataUnit::None, None),
                    allowed("Seats", EntitlementDataUnit::Bytes, Some("2")),
                ]))
            },
            "entitlement Seats",
        );
    }
}
