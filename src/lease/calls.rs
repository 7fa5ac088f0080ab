//! Owns the License Manager calls a lease makes (extend, check in, check out again), behind a trait a test can fake.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use crate::aws::CallRecord;
use crate::config::Config;
use crate::license::{self, Extension, LicenseError, Session};

/// A call in flight.
pub type Call<T> = Pin<Box<dyn Future<Output = T>>>;

/// A checked-out consumption and the session that renews it.
#[derive(Clone)]
pub struct Seat<S> {
    pub session: S,
    pub consumption_token: String,
    /// `Expiration` as License Manager wrote it, for the logs and the result file.
    pub expiration: SystemTime,
    /// When it expires on the monotonic clock the timers run on (`license::Anchor`).
    pub expires_at: tokio::time::Instant,
}

/// The calls a lease makes.
pub trait Licenses {
    /// What renews a checkout (its endpoint, credentials, clock anchor).
    type Session: Clone + 'static;
    fn extend(
        &self,
        seat: &Seat<Self::Session>,
        deadline: Duration,
    ) -> Call<Result<Extension, LicenseError>>;
    fn check_in(
        &self,
        seat: &Seat<Self::Session>,
        deadline: Duration,
    ) -> Call<Result<(), LicenseError>>;
    /// A new checkout of the same entitlements with `client_token` (with `allow`, when there is
    /// no seat to extend).
    fn checkout(&self, client_token: String) -> Call<Result<Seat<Self::Session>, LicenseError>>;
}

/// License Manager itself, for the contract in `config`.
pub struct LicenseManager(pub Rc<Config>);

impl Licenses for LicenseManager {
    type Session = Session;

    fn extend(
        &self,
        seat: &Seat<Session>,
        deadline: Duration,
    ) -> Call<Result<Extension, LicenseError>> {
        let (session, token) = (seat.session.clone(), seat.consumption_token.clone());
        Box::pin(async move {
            let mut record = CallRecord::default();
            session.extend(&token, deadline, &mut record).await
        })
    }

    fn check_in(&self, seat: &Seat<Session>, deadline: Duration) -> Call<Result<(), LicenseError>> {
        let (session, token) = (seat.session.clone(), seat.consumption_token.clone());
        Box::pin(async move {
            let mut record = CallRecord::default();
            session.check_in(&token, deadline, &mut record).await
        })
    }

    fn checkout(&self, client_token: String) -> Call<Result<Seat<Session>, LicenseError>> {
        let config = self.0.clone();
        Box::pin(async move {
            let crate::config::Pricing::Contract(contract) = &config.pricing else {
                unreachable!("a lease is contract pricing's");
            };
            let mut record = CallRecord::default();
            let (checkout, session) = license::checkout(
                &config,
                contract,
                &client_token,
                (Instant::now(), config.timeout),
                &mut record,
            )
            .await?;
            Ok(Seat {
                session,
                consumption_token: checkout.consumption_token,
                expiration: checkout.expiration,
                expires_at: tokio::time::Instant::from_std(checkout.expires_at),
            })
        })
    }
}
