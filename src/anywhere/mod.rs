//! Owns the license token's exchange (Containers Anywhere): GetAccessToken, then STS AssumeRoleWithWebIdentity, the role's credentials kept until shortly before they expire.

mod classify;
mod service;

pub use classify::TokenError;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::anywhere::service::{STS, TOKEN_SERVICE};
use crate::aws::{self, Call, CallError, CallRecord, Caller};
use crate::config::{Config, LicenseToken};
use aws_credential_types::{
    provider::{error::CredentialsError, future, ProvideCredentials, SharedCredentialsProvider},
    Credentials,
};

/// The role's session lasts an hour (STS's default; mpgate asks for no other): credentials
/// are never taken to live longer, whatever the node's clock (which may be behind) says.
const MAX_LIFETIME: Duration = Duration::from_secs(3600);
/// Credentials are renewed this long before they expire (at most half their lifetime), so
/// that an extension's retries never run past them.
const RENEW_BEFORE: Duration = Duration::from_secs(300);

/// The role's credentials and when, on the monotonic clock, they are renewed and expire.
struct Held {
    credentials: Credentials,
    renew_at: Instant,
    expires_at: Instant,
}

/// A license token, its two unsigned callers, and the role's credentials it last got.
pub struct Exchange {
    token: LicenseToken,
    license_manager: Caller,
    sts: Caller,
    /// MPGATE_TIMEOUT: the deadline of an exchange the SDK asks for itself.
    timeout: Duration,
    held: Mutex<Option<Held>>,
}

impl Exchange {
    /// Prepares both calls and makes the first exchange, within `timeout` of `started`.
    pub async fn start(
        config: &Config,
        token: &LicenseToken,
        (started, timeout): (Instant, Duration),
    ) -> Result<Arc<Exchange>, TokenError> {
        let ambient: Vec<&str> = [
            "AWS_ACCESS_KEY_ID",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "AWS_PROFILE",
        ]
        .into_iter()
        .filter(|name| crate::settings::var_os(name).is_some_and(|v| !v.is_empty()))
        .collect();
        tracing::info!(
            role = %token.role_arn,
            session = %token.session_name,
            region = token.region.as_deref().unwrap_or_default(),
            "credentials: license token ({} {}), exchanged for the role's from {}; the default credential chain is not consulted{}",
            token.variable,
            token.file.display(),
            token.role_source,
            if ambient.is_empty() {
                String::new()
            } else {
                format!(" ({} not used)", ambient.join(", "))
            }
        );
        // --endpoint-url and a pinned build's URL are License Manager's; STS has its own.
        let sts_config = Config {
            endpoint_url: token.sts_endpoint_url.clone(),
            ..config.clone()
        };
        let (license_manager, sts) = tokio::try_join!(
            aws::prepare(config, &TOKEN_SERVICE, None),
            aws::prepare(&sts_config, &STS, None)
        )?;
        let exchange = Arc::new(Exchange {
            token: token.clone(),
            license_manager: license_manager.caller,
            sts: sts.caller,
            timeout: config.timeout,
            held: Mutex::new(None),
        });
        exchange.renew((started, timeout)).await?;
        Ok(exchange)
    }

    /// The credentials source License Manager's calls are signed with.
    pub fn provider(self: &Arc<Self>) -> SharedCredentialsProvider {
        SharedCredentialsProvider::new(Provider(self.clone()))
    }

    /// The role ARN and where it came from, for License Manager's access-denied advice.
    pub fn role(&self) -> (&str, &str) {
        (&self.token.role_arn, &self.token.role_source)
    }

    /// Renews the role's credentials if they are due (before a call that needs them), within
    /// `timeout` of `started`.
    pub async fn ensure(&self, deadline: (Instant, Duration)) -> Result<(), TokenError> {
        let due = crate::http::lock(&self.held)
            .as_ref()
            .is_none_or(|held| Instant::now() >= held.renew_at);
        if due {
            self.renew(deadline).await?;
        }
        Ok(())
    }

    /// GetAccessToken with the license token, then AssumeRoleWithWebIdentity with the access
    /// token: the role's credentials, kept. AWS's sample does both on every renewal (an
    /// access token lasts an hour, as the credentials do).
    async fn renew(&self, deadline: (Instant, Duration)) -> Result<Credentials, TokenError> {
        self.exchange(deadline).await.map_err(|e| match e {
            TokenError::Call(CallError::Unreachable(reason)) => {
                TokenError::Call(CallError::Unreachable(format!(
                    "the license token could not be exchanged for the role's credentials: {reason}"
                )))
            }
            other => other,
        })
    }

    async fn exchange(
        &self,
        (started, timeout): (Instant, Duration),
    ) -> Result<Credentials, TokenError> {
        let remaining = || {
            timeout
                .saturating_sub(started.elapsed())
                .max(Duration::from_millis(1))
        };
        let mut record = CallRecord::default();
        let call = Call::new(timeout);
        let client: aws_sdk_licensemanager::Client =
            self.license_manager
                .client(&TOKEN_SERVICE, &call, remaining());
        let sent = client
            .get_access_token()
            .token(self.token.token.expose())
            .send();
        let access_token =
            match aws::send(std::pin::pin!(sent), &call, remaining(), &mut record).await? {
                Ok(out) => out.access_token.filter(|t| !t.is_empty()).ok_or_else(|| {
                    CallError::BadAnswer("GetAccessToken answered no AccessToken".into())
                })?,
                Err(e) => {
                    return Err(classify::get_access_token(
                        e,
                        &self.token,
                        (&call, &self.license_manager.scope),
                    ))
                }
            };
        log_request(&record, "GetAccessToken");

        let call = Call::new(timeout);
        let client: aws_sdk_sts::Client = self.sts.client(&STS, &call, remaining());
        let sent = client
            .assume_role_with_web_identity()
            .role_arn(&self.token.role_arn)
            .role_session_name(&self.token.session_name)
            .web_identity_token(&access_token)
            .send();
        let sent_at = (Instant::now(), SystemTime::now());
        let out = match aws::send(std::pin::pin!(sent), &call, remaining(), &mut record).await? {
            Ok(out) => out,
            Err(e) => {
                return Err(classify::assume_role(
                    e,
                    &self.token,
                    &access_token,
                    (&call, &self.sts.scope),
                ))
            }
        };
        log_request(&record, "AssumeRoleWithWebIdentity");
        let role = out.credentials.ok_or_else(|| {
            CallError::BadAnswer("AssumeRoleWithWebIdentity answered no Credentials".into())
        })?;
        let expiration_text = role
            .expiration
            .fmt(aws_smithy_types::date_time::Format::DateTime)
            .unwrap_or_default();
        let expiration = SystemTime::try_from(role.expiration).map_err(|_| {
            CallError::BadAnswer("the role's credentials expire at no valid time".into())
        })?;
        let lifetime = expiration
            .duration_since(sent_at.1)
            .unwrap_or_default()
            .min(MAX_LIFETIME);
        let expires_at = sent_at.0 + lifetime;
        let credentials = Credentials::new(
            role.access_key_id,
            role.secret_access_key,
            Some(role.session_token),
            Some(expiration),
            "license token",
        );
        tracing::debug!(
            expiration = %expiration_text,
            "the role's credentials from the license token"
        );
        *crate::http::lock(&self.held) = Some(Held {
            credentials: credentials.clone(),
            renew_at: expires_at - RENEW_BEFORE.min(lifetime / 2),
            expires_at,
        });
        Ok(credentials)
    }
}

fn log_request(record: &CallRecord, operation: &str) {
    tracing::debug!(
        attempts = record.attempts,
        request_id = record.request_id.as_deref().unwrap_or_default(),
        "{operation} answered"
    );
}

/// The exchange as the SDK asks for credentials: the ones held while they last (the gate
/// renews them before its calls, `Exchange::ensure`), else a new exchange.
struct Provider(Arc<Exchange>);

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LicenseTokenCredentials")
    }
}

impl ProvideCredentials for Provider {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        let held = crate::http::lock(&self.0.held)
            .as_ref()
            .filter(|held| Instant::now() < held.expires_at)
            .map(|held| held.credentials.clone());
        if let Some(credentials) = held {
            return future::ProvideCredentials::ready(Ok(credentials));
        }
        let exchange = self.0.clone();
        future::ProvideCredentials::new(async move {
            exchange
                .renew((Instant::now(), exchange.timeout))
                .await
                .map_err(CredentialsError::provider_error)
        })
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_licensemanager::config::{BehaviorVersion, Builder, Region};
    use mpgate_testkit::emulator::{ACCESS_KEY_ID, SECRET_ACCESS_KEY, SESSION_TOKEN};
    use serde_json::Value;

    /// The SDK sends GetAccessToken both ways against the emulator: unsigned (as mpgate
    /// sends it, like AWS's reference code: no credentials, no authentication allowed) and
    /// SigV4-signed with a pair the emulator knows.
    #[tokio::test]
    async fn get_access_token_works_unsigned_and_signed() {
        let dir = mpgate_testkit::scratch("sdk-token");
        let file = dir.join("license_token");
        let emu =
            mpgate_testkit::Emulator::start(&["--license-token-file", file.to_str().unwrap()]);
        let token = std::fs::read_to_string(&file).unwrap();
        let base = || {
            Builder::new()
                .behavior_version(BehaviorVersion::latest())
                .http_client(crate::http::client(Default::default()).sdk)
                .region(Region::new("us-east-1"))
                .endpoint_url(&emu.url)
        };
        let unsigned = aws_sdk_licensemanager::Client::from_conf(base().allow_no_auth().build());
        let signed = aws_sdk_licensemanager::Client::from_conf(
            base()
                .credentials_provider(aws_credential_types::Credentials::new(
                    ACCESS_KEY_ID,
                    SECRET_ACCESS_KEY,
                    Some(SESSION_TOKEN.into()),
                    None,
                    "test",
                ))
                .build(),
        );
        for client in [unsigned, signed] {
            let out = client.get_access_token().token(&token).send().await;
            let access = out
                .expect("GetAccessToken")
                .access_token
                .unwrap_or_default();
            assert!(access.starts_with("eyJ"), "{access}");
        }
        let scopes: Vec<Value> = emu
            .calls()
            .into_iter()
            .map(|c| c["credentialScope"].clone())
            .collect();
        assert_eq!(scopes.len(), 2);
        assert_eq!(scopes[0], Value::Null, "the first call is unsigned");
        assert!(
            scopes[1]
                .as_str()
                .is_some_and(|s| s.starts_with(ACCESS_KEY_ID)),
            "{scopes:?}"
        );
    }
}
