//! Owns what the exchange's failures mean: the token refused, the role's trust, STS's region, and the advice.

use aws_sdk_licensemanager::{
    error::{ProvideErrorMetadata, SdkError},
    operation::get_access_token::GetAccessTokenError,
};
use aws_sdk_sts::operation::assume_role_with_web_identity::AssumeRoleWithWebIdentityError;
use aws_smithy_runtime_api::http::Response;

use crate::anywhere::service::{STS, TOKEN_SERVICE};
use crate::aws::{self, Call, CallError, Scope};
use crate::config::{role_account, LicenseToken};

/// How much of AWS's message an error quotes.
const MAX_MESSAGE_CHARS: usize = 300;

/// Why the license token bought no credentials; each variant is one exit code (`exit`, through
/// `license::LicenseError`).
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// License Manager refused the token itself: expired, revoked, or another license's (10).
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Call(#[from] CallError),
}

/// AWS's message with every secret of the exchange taken out, shortened: an error may quote
/// the input it refused.
fn scrubbed(message: Option<&str>, secrets: &[&str]) -> String {
    let mut text = message.unwrap_or_default().to_owned();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        text = text.replace(secret, "<redacted>");
    }
    text.chars().take(MAX_MESSAGE_CHARS).collect()
}

/// GetAccessToken's refusals of the token (AWS does not say which error it answers an
/// expired, revoked or foreign token with: the model's AccessDenied, Authorization and
/// Validation are read alike), else the call layer's meaning.
pub fn get_access_token(
    error: SdkError<GetAccessTokenError, Response>,
    token: &LicenseToken,
    (call, scope): (&Call, &Scope),
) -> TokenError {
    let SdkError::ServiceError(service) = &error else {
        return aws::transport_error(&error, &TOKEN_SERVICE, call).into();
    };
    let err = service.err();
    let code = err.code().unwrap_or("unknown error");
    let message = scrubbed(err.message(), &[token.token.expose()]);
    let status = service.raw().status().as_u16();
    let refusal = matches!(
        code,
        "AccessDeniedException" | "AuthorizationException" | "ValidationException"
    );
    if refusal && !aws::is_transient(code, status) {
        return TokenError::Refused(format!(
            "License Manager refused the license token in {} ({}) ({code}: {message}): it has expired, was revoked, or is for another product's license; create a new token on the product's launch page (Self-managed Kubernetes, Create token), save it in the buyer's secret under license_token, and restart",
            token.file.display(),
            token.variable,
        ));
    }
    aws::other_service_error(
        &TOKEN_SERVICE,
        (code, status, &message),
        (
            "license-manager:GetAccessToken",
            "nothing (it is sent unsigned)",
        ),
        (call, scope),
        "the license token's GetAccessToken",
    )
    .into()
}

/// AssumeRoleWithWebIdentity's refusals: the role's trust policy, STS's region, the access
/// token; throttling and the identity provider's failures are retried before they get here.
pub fn assume_role(
    error: SdkError<AssumeRoleWithWebIdentityError, Response>,
    token: &LicenseToken,
    access_token: &str,
    (call, scope): (&Call, &Scope),
) -> TokenError {
    let SdkError::ServiceError(service) = &error else {
        return aws::transport_error(&error, &STS, call).into();
    };
    let err = service.err();
    let code = err.code().unwrap_or("unknown error");
    let message = scrubbed(err.message(), &[access_token, token.token.expose()]);
    let status = service.raw().status().as_u16();
    let region = token.region.as_deref().unwrap_or_default();
    let role = &token.role_arn;
    let refused = |advice: String| {
        TokenError::Call(CallError::Refused(format!(
            "STS refused the role {role} (from {}) to the license token ({code}: {message}): {advice}",
            token.role_source
        )))
    };
    if aws::is_transient(code, status) {
        // Retried until the deadline already: the call layer says so.
    } else if matches!(code, "AccessDenied" | "IDPRejectedClaim") {
        return refused(format!(
            "the role's trust policy must allow sts:AssumeRoleWithWebIdentity to the federated principal openid-license-manager.amazonaws.com with the condition {{\"ForAnyValue:StringLike\": {{\"openid-license-manager.amazonaws.com:amr\": \"aws:license-manager:token-issuer-account-id:{}\"}}}} (the account that created the token); use the role the product's launch page created with the token (the secret's iam_role)",
            role_account(role)
        ));
    } else if code == "RegionDisabledException" {
        return refused(format!(
            "STS is not active in {region} for the role's account: activate it in the IAM console (Account settings, Security Token Service), or set MPGATE_LICENSE_REGION to the license's home region"
        ));
    } else if matches!(code, "InvalidIdentityToken" | "ExpiredTokenException") {
        return refused(format!(
            "STS did not take the access token License Manager issued for the license token: check that {region} (MPGATE_LICENSE_REGION, else AWS_REGION) is the license's home region, and that STS's endpoint is AWS's"
        ));
    }
    aws::other_service_error(
        &STS,
        (code, status, &message),
        (
            "sts:AssumeRoleWithWebIdentity",
            "a trust policy for openid-license-manager.amazonaws.com",
        ),
        (call, scope),
        &format!("the role {role} of the license token"),
    )
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_never_quotes_a_secret_of_the_exchange() {
        let text = scrubbed(
            Some("Value 'eyJ.a.b' at 'token' failed; access eyJ.c.d"),
            &["eyJ.a.b", "eyJ.c.d", ""],
        );
        assert_eq!(
            text,
            "Value '<redacted>' at 'token' failed; access <redacted>"
        );
        assert_eq!(scrubbed(None, &["x"]), "");
        assert_eq!(
            scrubbed(Some(&"m".repeat(400)), &[]).len(),
            MAX_MESSAGE_CHARS
        );
    }
}
