//! Owns the credentials of signed calls: the default chain, resolved before the first call, cached and refreshed after it.

use std::sync::Mutex;
use std::time::Duration;

use aws_config::{identity::IdentityCache, ConfigLoader};
use aws_credential_types::{
    provider::{future, ProvideCredentials, SharedCredentialsProvider},
    Credentials,
};

use crate::aws::result::{causes, CallError};
use crate::aws::service::Auth;

/// The credential source of a service's calls, set on the SDK's loader: `given` (the license
/// token's exchange, `anywhere`), which the default chain never replaces, else the SDK's
/// default chain.
pub fn source(
    loader: ConfigLoader,
    auth: Auth,
    given: Option<SharedCredentialsProvider>,
) -> ConfigLoader {
    match (auth, given) {
        // Nothing to resolve, and no chain (an STS and an IMDS client) to build.
        (Auth::Unsigned, _) => loader.no_credentials(),
        // A license token beats ambient credentials: a stray node role must not check out.
        (Auth::Signed, Some(given)) => loader.credentials_provider(given),
        // The default chain consults the environment first, so when it settles the answer it
        // is known: take it without building the chain, a quarter of a gate's work.
        (Auth::Signed, None) if has_static_credentials(crate::settings::var) => loader
            .credentials_provider(
                aws_config::environment::EnvironmentVariableCredentialsProvider::new(),
            ),
        (Auth::Signed, None) => loader,
    }
}

/// Resolves the configuration's credentials once (a missing role fails fast with exit 15,
/// not as a dispatch failure), and returns the configuration every client is built from: the
/// same source behind one identity cache, which starts with what was just resolved (the first
/// call fetches nothing again) and refreshes it before it expires, each fetch bounded by
/// `load_timeout`. A process that holds a seat or meters usage lives for days, its
/// credentials for an hour.
pub async fn resolve(
    sdk: aws_config::SdkConfig,
    load_timeout: Duration,
) -> Result<(aws_config::SdkConfig, Credentials), CallError> {
    let source = sdk
        .credentials_provider()
        .ok_or_else(|| CallError::NoCredentials("no credential provider".into()))?;
    let credentials = source
        .provide_credentials()
        .await
        .map_err(|e| CallError::NoCredentials(causes(&e)))?;
    let seeded = Seeded {
        first: Mutex::new(Some(credentials.clone())),
        source,
    };
    let sdk = sdk
        .to_builder()
        .credentials_provider(SharedCredentialsProvider::new(seeded))
        // An explicit load timeout: without one the cache estimates it from the retry
        // settings, once per allowed attempt (up to 1000) on every call.
        .identity_cache(IdentityCache::lazy().load_timeout(load_timeout).build())
        .build();
    Ok((sdk, credentials))
}

/// A source that answers its first request with credentials already resolved.
#[derive(Debug)]
struct Seeded {
    first: Mutex<Option<Credentials>>,
    source: SharedCredentialsProvider,
}

impl ProvideCredentials for Seeded {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        match crate::http::lock(&self.first).take() {
            Some(first) => future::ProvideCredentials::ready(Ok(first)),
            None => self.source.provide_credentials(),
        }
    }
}

/// Whether the default chain's first provider, the environment, would answer with credentials:
/// an access key id and a secret key (either name), neither blank.
fn has_static_credentials(var: impl Fn(&'static str) -> Option<String>) -> bool {
    let set = |name| var(name).is_some_and(|v| !v.trim().is_empty());
    set("AWS_ACCESS_KEY_ID") && (set("AWS_SECRET_ACCESS_KEY") || set("SECRET_ACCESS_KEY"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An environment of `pairs`, for the functions that read one through `var`.
    pub(crate) fn vars(
        pairs: &'static [(&'static str, &'static str)],
    ) -> impl Fn(&'static str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn static_credentials_need_a_key_id_and_a_secret() {
        assert!(has_static_credentials(vars(&[
            ("AWS_ACCESS_KEY_ID", "AKID"),
            ("AWS_SECRET_ACCESS_KEY", "s")
        ])));
        assert!(has_static_credentials(vars(&[
            ("AWS_ACCESS_KEY_ID", "AKID"),
            ("SECRET_ACCESS_KEY", "s")
        ])));
        assert!(!has_static_credentials(vars(&[(
            "AWS_ACCESS_KEY_ID",
            "AKID"
        )])));
        assert!(!has_static_credentials(vars(&[
            ("AWS_ACCESS_KEY_ID", " "),
            ("AWS_SECRET_ACCESS_KEY", "s")
        ])));
        assert!(!has_static_credentials(vars(&[
            ("AWS_ACCESS_KEY_ID", "AKID"),
            ("AWS_SECRET_ACCESS_KEY", "")
        ])));
    }

    #[tokio::test]
    async fn the_first_request_gets_the_credentials_resolved_and_later_ones_ask_the_source() {
        let source = |key: &str| {
            SharedCredentialsProvider::new(Credentials::new(key, "secret", None, None, "test"))
        };
        let seeded = Seeded {
            first: Mutex::new(Some(Credentials::new("FIRST", "s", None, None, "test"))),
            source: source("AGAIN"),
        };
        let key = |c: Credentials| c.access_key_id().to_owned();
        assert_eq!(key(seeded.provide_credentials().await.unwrap()), "FIRST");
        assert_eq!(key(seeded.provide_credentials().await.unwrap()), "AGAIN");
        assert_eq!(key(seeded.provide_credentials().await.unwrap()), "AGAIN");
    }

    #[tokio::test]
    async fn an_unsigned_service_gets_no_credential_source_and_a_signed_one_does() {
        let load = |auth| async move {
            let loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
                .http_client(crate::http::client(Default::default()).sdk)
                .region(aws_config::Region::new("us-east-1"));
            source(loader, auth, None).load().await
        };
        assert!(load(Auth::Unsigned).await.credentials_provider().is_none());
        assert!(load(Auth::Signed).await.credentials_provider().is_some());
    }
}
