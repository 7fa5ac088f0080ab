//! Owns the Metering service: the RegisterUsage call (hourly pricing), its answer and errors; MeterUsage in `meter_usage`.

pub mod meter_usage;

use std::time::Instant;

use aws_credential_types::credential_feature::AwsCredentialFeature;
use aws_sdk_marketplacemetering::{
    error::{ProvideErrorMetadata, SdkError},
    operation::register_usage::RegisterUsageError,
};

use crate::aws::{self, Auth, CallError, CallRecord, Service};
use crate::config::{Config, Hourly};

/// The IAM action RegisterUsage needs, named in access-denied messages.
const IAM: (&str, &str) = ("aws-marketplace:RegisterUsage", "deploy/iam-policy.json");

/// AWS Marketplace Metering, as the call layer needs to know it.
pub const SERVICE: Service = Service {
    name: "Metering",
    service_id: "Marketplace Metering",
    rules: aws::endpoint_rules!(aws_sdk_marketplacemetering),
    error_code: |e| {
        e.downcast_ref::<RegisterUsageError>()
            .and_then(|e| e.code())
            .or_else(|| {
                e.downcast_ref::<aws_sdk_marketplacemetering::operation::meter_usage::MeterUsageError>()
                    .and_then(|e| e.code())
            })
            .map(str::to_owned)
    },
    auth: Auth::Signed,
};

/// A verified-to-be-well-formed answer from the service (the token is checked by `token`).
pub struct Registration {
    pub signature: Option<String>,
    pub key_rotation: Option<String>,
}

/// Why the service did not give a token; each variant is one exit code (`exit`).
#[derive(Debug, thiserror::Error)]
pub enum MeteringError {
    #[error("the buyer is not entitled to product {product_code} (CustomerNotEntitledException): subscribe to it in AWS Marketplace with the AWS account that runs this container")]
    NotEntitled { product_code: String },
    #[error("AWS Marketplace does not support this platform (PlatformNotSupportedException): run product {product_code} on Amazon ECS, Amazon EKS or AWS Fargate, with the ECS task's IAM role or, on EKS, an IAM role through IRSA; long-term IAM user keys, EKS Pod Identity and the node's role are refused")]
    PlatformNotSupported { product_code: String },
    #[error(transparent)]
    Call(#[from] CallError),
}

/// Calls RegisterUsage once (with the SDK's retries) and returns the raw answer; `record`
/// gets the attempts, the last request ID, any warning and the client whatever the outcome.
pub async fn register_usage(
    config: &Config,
    hourly: &Hourly,
    nonce: &str,
    started: Instant,
    record: &mut CallRecord,
) -> Result<Registration, MeteringError> {
    let prepared = aws::prepare(config, &SERVICE, None).await?;
    warn_of_identity(&prepared, REGISTER_USAGE_IDENTITY, record);
    // Once more, for an early TLS connection to send its ClientHello if TCP is up by now.
    tokio::task::yield_now().await;

    let remaining = prepared.remaining(config, started);
    let client: aws_sdk_marketplacemetering::Client =
        prepared.caller.client(&SERVICE, &prepared.call, remaining);
    let result = {
        // Pinned where it is made: the SDK's future is large, and moving it into `send` and
        // its timeout would copy it twice (5 k instructions each).
        let sent = std::pin::pin!(client
            .register_usage()
            .product_code(&hourly.product_code)
            .public_key_version(hourly.public_key_version)
            .nonce(nonce)
            .send());
        aws::send(sent, &prepared.call, remaining, record).await?
    };
    let answer = match result {
        Ok(out) => Ok(Registration {
            signature: out.signature,
            key_rotation: out
                .public_key_rotation_timestamp
                .and_then(|t| t.fmt(aws_smithy_types::date_time::Format::DateTime).ok()),
        }),
        Err(e) => Err(classify(e, hourly, &prepared)),
    };
    // The record's owner decides when the client goes: a gate that execs next never tears it
    // down (its config layers, plugins and connection pool: 60 k instructions).
    record.client.keep((client, prepared.caller));
    answer
}

/// The operation and the managed policy an identity warning names.
pub(crate) type Identity = (&'static str, &'static str);
const REGISTER_USAGE_IDENTITY: Identity = ("RegisterUsage", "AWSMarketplaceMeteringRegisterUsage");

/// Warns (and records) when the credentials the SDK resolved are of a kind AWS Marketplace
/// does not accept on EKS ([`identity_warning`]).
pub(crate) fn warn_of_identity(
    prepared: &aws::Prepared,
    identity: Identity,
    record: &mut CallRecord,
) {
    let features = prepared
        .credentials
        .as_ref()
        .and_then(|c| c.get_property::<Vec<AwsCredentialFeature>>())
        .map(Vec::as_slice)
        .unwrap_or_default();
    if let Some(warning) = identity_warning(features, identity, crate::settings::var) {
        tracing::warn!("{warning}");
        record.warnings.push(warning);
    }
}

/// Where EKS Pod Identity serves credentials: its agent's link-local address, and the token
/// file the pod identity webhook mounts.
const POD_IDENTITY_HOSTS: [&str; 2] = ["169.254.170.23", "[fd00:ec2::23]"];
const POD_IDENTITY_TOKEN_DIR: &str = "/var/run/secrets/pods.eks.amazonaws.com/";

/// AWS Marketplace accepts RegisterUsage on EKS only when it is signed with IRSA credentials:
/// EKS Pod Identity and the node's instance profile get PlatformNotSupportedException (or
/// work today and stop). Says so, naming the fix, for the credentials the SDK resolved
/// (`features`, which its providers record) and the environment they came from.
fn identity_warning(
    features: &[AwsCredentialFeature],
    (operation, policy): Identity,
    var: impl Fn(&'static str) -> Option<String>,
) -> Option<String> {
    let fix = format!("AWS Marketplace accepts {operation} on Amazon EKS only with IRSA credentials: give the pod's service account an IAM role through IRSA (eks.amazonaws.com/role-arn, policy {policy})");
    if features.contains(&AwsCredentialFeature::CredentialsHttp) {
        let host = var("AWS_CONTAINER_CREDENTIALS_FULL_URI")
            .and_then(|uri| uri.parse::<hyper::Uri>().ok())
            .and_then(|uri| uri.authority().map(|a| a.host().to_owned()));
        let pod_identity = host.is_some_and(|h| POD_IDENTITY_HOSTS.contains(&h.as_str()))
            || var("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
                .is_some_and(|file| file.starts_with(POD_IDENTITY_TOKEN_DIR));
        if pod_identity {
            return Some(format!("the credentials come from EKS Pod Identity; {fix}"));
        }
    }
    let on_kubernetes = var("KUBERNETES_SERVICE_HOST").is_some_and(|h| !h.is_empty());
    if on_kubernetes && features.contains(&AwsCredentialFeature::CredentialsImds) {
        return Some(format!(
            "the credentials come from the node's instance profile (IMDS); {fix}"
        ));
    }
    None
}

/// Maps the SDK's error to what happened and what the operator should do.
fn classify(
    error: SdkError<RegisterUsageError, aws_smithy_runtime_api::http::Response>,
    hourly: &Hourly,
    prepared: &aws::Prepared,
) -> MeteringError {
    let product = &hourly.product_code;
    let version = hourly.public_key_version;
    let region = &prepared.caller.scope.region;
    let SdkError::ServiceError(service) = &error else {
        return aws::transport_error(&error, &SERVICE, &prepared.call).into();
    };
    let refused = |text: String| MeteringError::Call(CallError::Refused(text));
    match service.err() {
        RegisterUsageError::CustomerNotEntitledException(_) => MeteringError::NotEntitled {
            product_code: product.clone(),
        },
        RegisterUsageError::PlatformNotSupportedException(_) => {
            MeteringError::PlatformNotSupported {
                product_code: product.clone(),
            }
        }
        RegisterUsageError::InvalidProductCodeException(_) => refused(format!(
            "AWS Marketplace does not know product code {product} (InvalidProductCodeException): set MPGATE_PRODUCT_CODE to the product code from the AWS Marketplace Management Portal"
        )),
        RegisterUsageError::InvalidPublicKeyVersionException(_) => refused(format!(
            "public key version {version} is not valid for product {product} (InvalidPublicKeyVersionException): set MPGATE_PUBLIC_KEY_VERSION to the version AWS Marketplace gave you with the key"
        )),
        RegisterUsageError::InvalidRegionException(_) => refused(format!(
            "RegisterUsage refused region {region} for product {product} (InvalidRegionException): the call must go to the region the ECS task or EKS pod runs in; let the platform set AWS_REGION (ECS and the EKS IRSA webhook do) instead of setting it yourself"
        )),
        RegisterUsageError::DisabledApiException(_) => refused(format!(
            "the RegisterUsage API is disabled for product {product} (DisabledApiException): contact AWS Marketplace Seller Operations"
        )),
        err => aws::other_service_error(
            &SERVICE,
            (
                err.code().unwrap_or("unknown error"),
                service.raw().status().as_u16(),
                err.message().unwrap_or(""),
            ),
            IAM,
            (&prepared.call, &prepared.caller.scope),
            &format!("product {product}, key version {version}"),
        )
        .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::tests::vars;

    /// A pinned URL is the rules' FIPS or dual-stack host when the flags are set (issue 26,
    /// item 4): the client must not keep the flags beside it, or the SDK refuses to build
    /// the request. Here the URL is loopback, where nothing listens: the attempt is made.
    #[tokio::test]
    async fn a_pinned_url_is_used_whatever_the_fips_and_dual_stack_flags() {
        let timeout = std::time::Duration::from_secs(2);
        let sdk = aws_config::SdkConfig::builder()
            .region(aws_config::Region::new("eu-west-1"))
            .use_fips(true)
            .use_dual_stack(true)
            .credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(
                    aws_credential_types::Credentials::new(
                        "AKIDEXAMPLE",
                        "secret",
                        None,
                        None,
                        "test",
                    ),
                ),
            )
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .http_client(crate::http::client(Default::default()).sdk)
            .behavior_version(aws_config::BehaviorVersion::latest())
            .build();
        let caller = crate::aws::Caller {
            sdk,
            endpoint_url: Some("http://127.0.0.1:9".into()),
            scope: Default::default(),
            attempt_timeout: timeout,
        };
        let client: aws_sdk_marketplacemetering::Client =
            caller.client(&SERVICE, &crate::aws::Call::new(timeout), timeout);
        let err = client
            .register_usage()
            .product_code("prod-x")
            .public_key_version(1)
            .nonce("n")
            .send()
            .await
            .expect_err("nothing listens on port 9");
        assert!(
            // The SDK reports a refused endpoint as a dispatch failure too, but not an I/O one.
            matches!(&err, aws_smithy_runtime_api::client::result::SdkError::DispatchFailure(f) if f.is_io()),
            "the request was not even sent: {err:?}"
        );
    }

    #[tokio::test]
    async fn the_call_goes_where_the_sdk_sends_it() {
        aws::tests::endpoints(
            &SERVICE,
            "https://metering.marketplace-fips.eu-west-1.amazonaws.com",
            "https://metering.marketplace.eu-west-1.amazonaws.com",
        )
        .await;
    }

    #[test]
    fn eks_pod_identity_and_the_node_role_get_a_warning_naming_irsa() {
        use AwsCredentialFeature::{
            CredentialsHttp, CredentialsImds, CredentialsStsAssumeRoleWebId,
        };
        type Vars = &'static [(&'static str, &'static str)];
        let warn = |features: &[AwsCredentialFeature], set: Vars| {
            identity_warning(features, REGISTER_USAGE_IDENTITY, vars(set))
        };
        const K8S: Vars = &[("KUBERNETES_SERVICE_HOST", "10.0.0.1")];
        let pod_identity: [Vars; 3] = [
            &[(
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "http://169.254.170.23/v1/credentials",
            )],
            &[(
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "http://[fd00:ec2::23]/v1/credentials",
            )],
            &[(
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount/eks-pod-identity-token",
            )],
        ];
        for set in pod_identity {
            let w = warn(&[CredentialsHttp], set).unwrap_or_else(|| panic!("{set:?}"));
            assert!(w.contains("EKS Pod Identity") && w.contains("IRSA"), "{w}");
        }
        let w = warn(&[CredentialsImds], K8S).unwrap();
        assert!(
            w.contains("node's instance profile") && w.contains("IRSA"),
            "{w}"
        );
        // What AWS accepts: IRSA on EKS, the task role on ECS (169.254.170.2), IMDS off EKS.
        assert_eq!(warn(&[CredentialsStsAssumeRoleWebId], K8S), None);
        let ecs: Vars = &[(
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "/v2/credentials/x",
        )];
        assert_eq!(warn(&[CredentialsHttp], ecs), None);
        assert_eq!(warn(&[CredentialsImds], &[]), None);
    }
}
