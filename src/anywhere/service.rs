//! Owns what the call layer knows of the exchange's two services: GetAccessToken's License Manager and STS.

use aws_sdk_licensemanager::{
    error::ProvideErrorMetadata, operation::get_access_token::GetAccessTokenError,
};
use aws_sdk_sts::operation::assume_role_with_web_identity::AssumeRoleWithWebIdentityError;

use crate::aws::{self, Auth, Service};

/// License Manager's GetAccessToken, sent unsigned as AWS's reference code sends it (the
/// seller guide's Java sample: anonymous credentials); the emulator takes it signed too.
pub const TOKEN_SERVICE: Service = Service {
    name: "License Manager",
    service_id: "License Manager",
    rules: aws::endpoint_rules!(aws_sdk_licensemanager),
    error_code: |e| {
        e.downcast_ref::<GetAccessTokenError>()
            .and_then(|e| e.code())
            .map(str::to_owned)
    },
    auth: Auth::Unsigned,
};
/// STS's AssumeRoleWithWebIdentity, unsigned as its model says.
pub const STS: Service = Service {
    name: "STS",
    service_id: "STS",
    rules: aws::endpoint_rules!(aws_sdk_sts),
    error_code: |e| {
        e.downcast_ref::<AssumeRoleWithWebIdentityError>()
            .and_then(|e| e.code())
            .map(str::to_owned)
    },
    auth: Auth::Unsigned,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_calls_go_where_the_sdk_sends_them() {
        aws::tests::endpoints(
            &STS,
            "https://sts-fips.eu-west-1.amazonaws.com",
            "https://sts.eu-west-1.amazonaws.com",
        )
        .await;
    }
}
