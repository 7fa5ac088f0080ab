//! Owns what the call layer knows of a service: its name, endpoint rules, error codes and auth.

use std::future::Future;
use std::pin::Pin;

use aws_smithy_runtime_api::client::interceptors::context::Error as OperationError;

/// The endpoint rules' inputs, as the SDK's client takes them from its configuration.
pub struct EndpointParams {
    pub region: Option<String>,
    pub use_fips: Option<bool>,
    pub use_dual_stack: Option<bool>,
    pub url: Option<String>,
}

/// What the endpoint rules of a service's SDK crate answer.
pub type Rules = fn(EndpointParams) -> Pin<Box<dyn Future<Output = Option<String>> + Send>>;

/// The [`Rules`] of a service's SDK crate: every SDK crate has the same endpoint parameters and
/// resolver, each its own types.
macro_rules! endpoint_rules {
    ($sdk:ident) => {
        |p: $crate::aws::service::EndpointParams| -> ::std::pin::Pin<
                    Box<dyn ::std::future::Future<Output = Option<String>> + Send>,
                > {
                    Box::pin(async move {
                        use $sdk::config::endpoint::{DefaultResolver, Params, ResolveEndpoint};
                        let params = Params::builder()
                            .set_region(p.region)
                            .set_use_fips(p.use_fips)
                            .set_use_dual_stack(p.use_dual_stack)
                            .set_endpoint(p.url)
                            .build()
                            .ok()?;
                        let endpoint = DefaultResolver::new()
                            .resolve_endpoint(&params)
                            .await
                            .ok()?;
                        Some(endpoint.url().to_owned())
                    })
                }
    };
}
pub(crate) use endpoint_rules;

/// How a service's calls are authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// SigV4, with the credentials `aws::credentials` resolved before the first call and
    /// refreshes after it.
    Signed,
    /// No credentials at all: the license token's GetAccessToken (unsigned, as AWS's
    /// reference code sends it) and STS AssumeRoleWithWebIdentity, which run before any
    /// credentials exist.
    Unsigned,
}

/// One AWS service, as the call layer needs to know it.
pub struct Service {
    /// How messages name it: "Metering", "License Manager".
    pub name: &'static str,
    /// The SDK's service ID: its `AWS_ENDPOINT_URL_*` variable and profile `services` key.
    pub service_id: &'static str,
    /// The endpoint rules of its SDK crate.
    pub rules: Rules,
    /// The error code of a failed operation of the service, if the answer had one.
    pub error_code: fn(&OperationError) -> Option<String>,
    pub auth: Auth,
}
