//! Owns the License Manager calls of contract pricing (checkout, extend, check in) and what each of their errors means.

mod answer;

pub use answer::{rfc3339, Checkout, Extension};

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_licensemanager::{
    error::{ProvideErrorMetadata, SdkError},
    operation::{
        check_in_license::CheckInLicenseError, checkout_license::CheckoutLicenseError,
        extend_license_consumption::ExtendLicenseConsumptionError,
    },
    types::{CheckoutType, EntitlementData, EntitlementDataUnit},
};

use crate::anywhere::{Exchange, TokenError};
use crate::aws::{self, Auth, Call, CallError, CallRecord, Caller, Prepared, Scope, Service};
use crate::config::{Config, Contract};
use crate::license::answer::{checked, extended, Anchor};

/// The AWS Marketplace issuer's key fingerprint: only licenses AWS Marketplace issued are
/// checked out (a license the buyer's own account issued would carry another).
pub const KEY_FINGERPRINT: &str = "aws:294406891311:AWS/Marketplace:issuer-fingerprint";
/// The IAM actions contract pricing needs, named in access-denied messages, and their policy.
const IAM: (&str, &str) = (
    "license-manager:CheckoutLicense, ExtendLicenseConsumption and CheckInLicense",
    "deploy/iam-policy-license-manager.json",
);
/// AWS License Manager, as the call layer needs to know it.
pub const SERVICE: Service = Service {
    name: "License Manager",
    service_id: "License Manager",
    rules: aws::endpoint_rules!(aws_sdk_licensemanager),
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
    auth: Auth::Signed,
};

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

/// At the checkout, a refused license token is no entitlement (10).
impl From<TokenError> for LicenseError {
    fn from(error: TokenError) -> Self {
        match error {
            TokenError::Refused(reason) => LicenseError::NotEntitled(reason),
            TokenError::Call(call) => LicenseError::Call(call),
        }
    }
}

/// While a seat is held, a refused license token is the license lost (10): the seat cannot
/// be extended, and a new token is the buyer's to create.
fn held_with(error: TokenError) -> LicenseError {
    match error {
        TokenError::Refused(reason) => LicenseError::Lost(format!(
            "the role's credentials cannot be renewed: {reason}"
        )),
        TokenError::Call(call) => LicenseError::Call(call),
    }
}

/// What later calls need: the checkout's caller (its credentials cached and refreshed),
/// License Manager's clock read against this node's, and the license token's exchange if
/// the credentials come from one.
#[derive(Clone)]
pub struct Session {
    caller: Caller,
    anchor: Anchor,
    exchange: Option<Arc<Exchange>>,
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
    let exchange = match &config.license_token {
        Some(token) => Some(Exchange::start(config, token, (started, timeout)).await?),
        None => None,
    };
    let prepared =
        aws::prepare(config, &SERVICE, exchange.as_ref().map(Exchange::provider)).await?;
    let remaining = timeout
        .saturating_sub(started.elapsed())
        .max(Duration::from_millis(1));
    let client: aws_sdk_licensemanager::Client =
        prepared.caller.client(&SERVICE, &prepared.call, remaining);
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
    let sent = aws::send(
        std::pin::pin!(request.send()),
        &prepared.call,
        remaining,
        record,
    )
    .await?;
    let out = match sent {
        Ok(out) => out,
        Err(e) => {
            return Err(classify_checkout(
                e,
                contract,
                &prepared,
                exchange.as_deref(),
            ))
        }
    };
    let (checkout, anchor) = checked(out, contract, sent_at).map_err(CallError::BadAnswer)?;
    let session = Session {
        caller: prepared.caller,
        anchor,
        exchange,
    };
    Ok((checkout, session))
}

impl Session {
    /// Renews the consumption, within `deadline` and `config`'s retry policy.
    pub async fn extend(
        &self,
        consumption_token: &str,
        deadline: Duration,
        record: &mut CallRecord,
    ) -> Result<Extension, LicenseError> {
        let deadline = self.renew_credentials(deadline).await?;
        let (client, call) = self.client(deadline);
        let sent = std::pin::pin!(client
            .extend_license_consumption()
            .license_consumption_token(consumption_token)
            .send());
        match aws::send(sent, &call, deadline, record).await? {
            Ok(out) => Ok(extended(&self.anchor, &out).map_err(CallError::BadAnswer)?),
            Err(e) => Err(classify_renewal(
                e,
                (&call, &self.caller.scope),
                "ExtendLicenseConsumption",
                consumption_token,
                self.exchange.as_deref(),
            )),
        }
    }

    /// Gives the consumption back, within `deadline`.
    pub async fn check_in(
        &self,
        consumption_token: &str,
        deadline: Duration,
        record: &mut CallRecord,
    ) -> Result<(), LicenseError> {
        let deadline = self.renew_credentials(deadline).await?;
        let (client, call) = self.client(deadline);
        let sent = std::pin::pin!(client
            .check_in_license()
            .license_consumption_token(consumption_token)
            .send());
        match aws::send(sent, &call, deadline, record).await? {
            Ok(_) => Ok(()),
            Err(e) => Err(classify_renewal(
                e,
                (&call, &self.caller.scope),
                "CheckInLicense",
                consumption_token,
                self.exchange.as_deref(),
            )),
        }
    }

    /// With a license token: the role's credentials renewed if they are due, within
    /// `deadline`, under the call's own retry and loss rules; what is left of it.
    async fn renew_credentials(&self, deadline: Duration) -> Result<Duration, LicenseError> {
        let Some(exchange) = &self.exchange else {
            return Ok(deadline);
        };
        let started = Instant::now();
        exchange
            .ensure((started, deadline))
            .await
            .map_err(held_with)?;
        Ok(deadline
            .saturating_sub(started.elapsed())
            .max(Duration::from_millis(1)))
    }

    /// A client for one call within `deadline`, with its own attempt log.
    fn client(&self, deadline: Duration) -> (aws_sdk_licensemanager::Client, Call) {
        let call = Call::new(deadline);
        (self.caller.client(&SERVICE, &call, deadline), call)
    }
}

/// An extension's or check-in's error: transient ones (`Call(Unreachable)`) may be tried
/// again before the consumption expires; `Lost` when License Manager no longer knows the
/// checkout; `Call(Refused)` when it refuses the call (an IAM denial, rejected credentials).
fn classify_renewal<E>(
    error: SdkError<E, aws_smithy_runtime_api::http::Response>,
    (call, scope): (&Call, &Scope),
    operation: &str,
    consumption_token: &str,
    exchange: Option<&Exchange>,
) -> LicenseError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let SdkError::ServiceError(service) = &error else {
        return aws::transport_error(&error, &SERVICE, call).into();
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
    if aws::is_access_denied(code) && !aws::is_transient(code, status) {
        if let Some(exchange) = exchange {
            return token_role_denied(
                exchange,
                &format!("license-manager:{operation}"),
                code,
                "mpgate cannot hold a seat without it",
            );
        }
        return CallError::Refused(format!(
            "the credentials may not call license-manager:{operation} ({code}): add the actions of {} to the task role or the pod's IAM role; mpgate cannot hold a seat without it",
            IAM.1
        ))
        .into();
    }
    aws::other_service_error(
        &SERVICE,
        (code, status, &message),
        IAM,
        (call, scope),
        &format!("the {operation} call"),
    )
    .into()
}

/// Maps CheckoutLicense's errors to what happened and what the operator should do.
fn classify_checkout(
    error: SdkError<CheckoutLicenseError, aws_smithy_runtime_api::http::Response>,
    contract: &Contract,
    prepared: &Prepared,
    exchange: Option<&Exchange>,
) -> LicenseError {
    let sku = &contract.product_sku;
    let SdkError::ServiceError(service) = &error else {
        return aws::transport_error(&error, &SERVICE, &prepared.call).into();
    };
    let err = service.err();
    let code = err.code().unwrap_or("unknown error");
    let message: String = err.message().unwrap_or("").chars().take(300).collect();
    let refused = |advice: &str| {
        LicenseError::Call(CallError::Refused(format!(
            "License Manager refused the checkout of product SKU {sku} ({code}: {message}): {advice}"
        )))
    };
    let status = service.raw().status().as_u16();
    if let Some(exchange) =
        exchange.filter(|_| aws::is_access_denied(code) && !aws::is_transient(code, status))
    {
        return token_role_denied(
            exchange,
            "license-manager:CheckoutLicense",
            code,
            &format!("product SKU {sku}"),
        );
    }
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
        _ => aws::other_service_error(
            &SERVICE,
            (code, status, &message),
            IAM,
            (&prepared.call, &prepared.caller.scope),
            &format!("product SKU {sku}"),
        )
        .into(),
    }
}

/// The license token's role may not call `action`: it lacks the policy the launch page's
/// role has.
fn token_role_denied(exchange: &Exchange, action: &str, code: &str, context: &str) -> LicenseError {
    let (role, source) = exchange.role();
    CallError::Refused(format!(
        "the license token's role {role} (from {source}) may not call {action} ({code}): attach the AWS managed policy AWSLicenseManagerConsumptionPolicy to it (the role the product's launch page creates has it); {context}"
    ))
    .into()
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
        aws::tests::endpoints(
            &SERVICE,
            "https://license-manager-fips.eu-west-1.amazonaws.com",
            "https://license-manager.eu-west-1.amazonaws.com",
        )
        .await;
    }
}
