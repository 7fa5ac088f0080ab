//! Owns the check phase: configure, then RegisterUsage and its token, a License Manager checkout, or the start's MeterUsage: a decision, as data.

use std::ffi::OsString;
use std::rc::Rc;
use std::time::{Instant, SystemTime};

use crate::aws::{CallError, CallRecord};
use crate::config::{Config, ConfigError, Hourly, Pricing, SeatMode, TransientPolicy};
use crate::exit::Failure;
use crate::lease;
use crate::ledger::Ledger;
use crate::license::{self, Checkout, LicenseError, Session};
use crate::metering::meter_usage::{self, StartRecord};
use crate::metering::{self, MeteringError};
use crate::nonce;
use mpgate_proof::{token, Place, Process};

/// What the phase learned, for the result file and the hand-over.
#[derive(Debug, Default)]
pub struct Facts {
    /// `hourly` or `contract`, once the configuration is read.
    pub pricing: Option<&'static str>,
    pub product_code: Option<String>,
    pub public_key_version: Option<i32>,
    /// The nonce sent: derived from `salt` for the process mpgate execs, or (init mode) for
    /// this boot and pod (`mpgate_proof::binding`).
    pub nonce: Option<String>,
    /// 256 bits from the kernel's CSPRNG, as hex: what the workload or result file gets.
    pub salt: Option<String>,
    /// The kernel's boot id, and the pod's UID when `MPGATE_POD_UID` gives one.
    pub boot_id: Option<String>,
    pub pod_uid: Option<String>,
    pub product_sku: Option<String>,
    /// Usage pricing: the dimensions, and the start's MeterUsage record.
    pub usage: Option<UsageFacts>,
    /// Attempts, the last request ID and warnings of the entitlement call.
    pub call: CallRecord,
    pub command: Vec<OsString>,
    /// A CheckoutLicense under way, with its ClientToken: if a stop signal cuts it, what it
    /// may have taken is settled (`settle`).
    pub checkout_in_flight: Option<InFlight>,
}

/// What usage pricing's check learned.
#[derive(Debug, Clone)]
pub struct UsageFacts {
    pub dimensions: Vec<String>,
    pub metering_hour: std::time::Duration,
    /// The start's MeterUsage, once it answered.
    pub start: Option<StartRecord>,
    /// The ledger's directory (`None`: memory).
    pub ledger: Option<String>,
    /// At the end: this run's records, and what AWS has not recorded yet per dimension.
    pub sent: Option<Vec<serde_json::Value>>,
    pub unsent: Option<std::collections::BTreeMap<String, u64>>,
}

/// A CheckoutLicense under way: what `settle` needs to learn what it took.
pub struct InFlight(pub(crate) Rc<Config>, pub(crate) String);

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InFlight")
    }
}

/// What the check decided: data the hand-over plan reads.
#[derive(Debug)]
pub enum Decision {
    /// The token verified: the buyer is entitled.
    Verified {
        signature: String,
    },
    /// The license was checked out (`--seat check`: and checked in again).
    Licensed {
        checkout: Checkout,
        checked_in: bool,
    },
    /// The license was checked out and is to be held while the workload runs (`--seat
    /// hold`), or (`Err`: why) License Manager was unreachable and `allow` starts the
    /// workload unverified while the lease keeps trying to check it out.
    Held {
        checkout: Result<Checkout, String>,
        /// With no checkout: its ClientToken, for the next one (`lease::Lease`).
        client_token: String,
    },
    /// Usage pricing: the start's MeterUsage said the buyer is entitled (its record in
    /// `Facts::usage`), or (`Some`: why) Metering was unreachable and `allow` starts the
    /// workload unverified.
    Metered {
        unverified: Option<String>,
    },
    /// The service was unreachable and `--on-transient-error allow` let the workload start.
    Unverified {
        reason: String,
    },
    Failed(Failure),
}

/// What a held seat's lease needs besides the decision: the contract's configuration and
/// the checkout's session (endpoint, credentials, clock anchor).
#[derive(Default)]
pub struct Kept {
    pub config: Option<Rc<Config>>,
    pub session: Option<Session>,
    /// Usage pricing: the start's caller, for the metering agent's records.
    pub meter: Option<meter_usage::Session>,
    /// Usage pricing: the ledger, opened before the start's call.
    pub ledger: Option<Ledger>,
}

pub(crate) async fn check(
    args: crate::cli::Args,
    preflight: Option<ConfigError>,
    env: &dyn Fn(&str) -> Option<OsString>,
    started: Instant,
    facts: &mut Facts,
    kept: &mut Kept,
) -> Decision {
    facts.command = args.command.clone();
    if let Some(error) = preflight {
        return Decision::Failed(error.into());
    }
    let config = match Config::from_args(args, env) {
        Ok(c) => c,
        Err(e) => return Decision::Failed(e.into()),
    };
    if config.pinned {
        if let Err(e) = crate::config::refuse_profile_endpoints().await {
            return Decision::Failed(e.into());
        }
    }
    match &config.pricing {
        Pricing::Hourly(hourly) => {
            facts.pricing = Some("hourly");
            check_hourly(&config, hourly, env, started, facts).await
        }
        Pricing::Contract(_) => {
            facts.pricing = Some("contract");
            check_contract(config, started, facts, kept).await
        }
        Pricing::Usage(_) => {
            facts.pricing = Some("usage");
            check_usage(config, started, facts, kept).await
        }
    }
}

/// The start's MeterUsage of quantity 0: entitled, or not (exit 10), or refused, or (with
/// `allow`) unreachable and started unverified.
async fn check_usage(
    config: Config,
    started: Instant,
    facts: &mut Facts,
    kept: &mut Kept,
) -> Decision {
    let config = Rc::new(config);
    let Pricing::Usage(usage) = &config.pricing else {
        unreachable!("check_usage is called for usage pricing only");
    };
    facts.product_code = Some(usage.product_code.clone());
    facts.usage = Some(UsageFacts {
        dimensions: usage.dimensions.clone(),
        metering_hour: usage.metering_hour,
        start: None,
        ledger: usage.ledger_dir.as_ref().map(|d| d.display().to_string()),
        sent: None,
        unsent: None,
    });
    // Opened first: a ledger that cannot be used leaves no start record behind.
    match Ledger::open(usage.ledger_dir.as_deref()) {
        Ok(ledger) => kept.ledger = Some(ledger),
        Err(e) => return Decision::Failed(ConfigError::Ledger(e.to_string()).into()),
    }
    tracing::debug!(product_code = %usage.product_code, dimension = %usage.start_dimension, "calling MeterUsage");
    let decision = match meter_usage::start(&config, usage, started, &mut facts.call).await {
        Ok((start, session)) => {
            if start.duplicate {
                tracing::info!(
                    dimension = %start.dimension,
                    hour = %start.hour,
                    requestId = start.request_id.as_deref(),
                    "this pod or task already recorded dimension {} for the hour starting {} (DuplicateRequestException): the buyer is entitled; this hour's usage of {} goes into the next hour's record",
                    start.dimension, start.hour, start.dimension
                );
            }
            if let Some(usage) = &mut facts.usage {
                usage.start = Some(start);
            }
            kept.meter = Some(session);
            Decision::Metered { unverified: None }
        }
        Err(MeteringError::Call(CallError::Unreachable(reason)))
            if config.on_transient_error == TransientPolicy::Allow =>
        {
            tracing::warn!(
                product_code = %usage.product_code,
                "entitlement NOT verified: {reason}; starting anyway because MPGATE_ON_TRANSIENT_ERROR=allow"
            );
            Decision::Metered {
                unverified: Some(reason),
            }
        }
        Err(e) => return Decision::Failed(e.into()),
    };
    kept.config = Some(config);
    decision
}

/// RegisterUsage with a fresh nonce, then its token checked against the product's key.
async fn check_hourly(
    config: &Config,
    hourly: &Hourly,
    env: &dyn Fn(&str) -> Option<OsString>,
    started: Instant,
    facts: &mut Facts,
) -> Decision {
    facts.product_code = Some(hourly.product_code.clone());
    facts.public_key_version = Some(hourly.public_key_version);
    let nonce = match bound_nonce(env, facts) {
        Ok(n) => n,
        Err(e) => return Decision::Failed(e.into()),
    };
    facts.nonce = Some(nonce.clone());
    tracing::debug!(product_code = %hourly.product_code, public_key_version = hourly.public_key_version, nonce = %nonce, "calling RegisterUsage");

    let registration = match metering::register_usage(
        config,
        hourly,
        &nonce,
        started,
        &mut facts.call,
    )
    .await
    {
        Ok(r) => r,
        Err(MeteringError::Call(CallError::Unreachable(reason)))
            if config.on_transient_error == TransientPolicy::Allow =>
        {
            tracing::warn!(
                product_code = %hourly.product_code,
                "entitlement NOT verified: {reason}; starting anyway because MPGATE_ON_TRANSIENT_ERROR=allow"
            );
            return Decision::Unverified { reason };
        }
        Err(e) => return Decision::Failed(e.into()),
    };
    if let Some(expiry) = &registration.key_rotation {
        tracing::warn!(
            public_key_version = hourly.public_key_version,
            key_expires_at = %expiry,
            "public key version {} of product {} expires at {expiry}: {}",
            hourly.public_key_version,
            hourly.product_code,
            rotation_advice(hourly, config.pinned)
        );
    }
    let signature = registration.signature.unwrap_or_default();
    let expected = token::Expected {
        product_code: &hourly.product_code,
        public_key_version: hourly.public_key_version,
        nonce: &nonce,
        max_age: hourly.max_token_age,
        // This run's fresh nonce rules out a replay; `iat` is checked when present.
        require_iat: false,
    };
    match token::verify(&signature, &hourly.key, &expected, SystemTime::now()) {
        Ok(()) => {
            tracing::debug!(token = %token::redacted(&signature), "token verified");
            Decision::Verified { signature }
        }
        Err(e) => {
            tracing::debug!(token = %token::redacted(&signature), "token rejected");
            Decision::Failed(e.with_key_source(&hourly.key_source).into())
        }
    }
}

/// A fresh salt, and the nonce it derives for what the hand-over is bound to: the process
/// mpgate execs (this one: execve keeps its PID and start time), or in init mode this boot
/// and pod, which the result file records. Read before any call: without /proc the gate
/// stops here (exit 2), never sends a nonce bound to nothing.
fn bound_nonce(
    env: &dyn Fn(&str) -> Option<OsString>,
    facts: &mut Facts,
) -> Result<String, ConfigError> {
    let salt = nonce::generate().map_err(|e| ConfigError::Random(e.to_string()))?;
    let (nonce, boot_id, pod_uid) = if facts.command.is_empty() {
        let place = Place::from_vars(env)?;
        (place.nonce(&salt), place.boot_id, place.pod_uid)
    } else {
        let process = Process::current()?;
        let pod_uid = mpgate_proof::binding::pod_uid(env)?;
        (process.nonce(&salt), process.boot_id, pod_uid)
    };
    facts.salt = Some(salt);
    facts.boot_id = Some(boot_id);
    facts.pod_uid = pod_uid;
    Ok(nonce)
}

/// CheckoutLicense with a fresh client token; then the seat checked back in, or held.
async fn check_contract(
    config: Config,
    started: Instant,
    facts: &mut Facts,
    kept: &mut Kept,
) -> Decision {
    let config = Rc::new(config);
    let Pricing::Contract(contract) = &config.pricing else {
        unreachable!("check_contract is called for contract pricing only");
    };
    facts.product_sku = Some(contract.product_sku.clone());
    // Reused by the SDK's retries: a retried checkout whose first answer was lost is the same
    // checkout to License Manager, not a second seat.
    let client_token = match nonce::generate() {
        Ok(n) => n,
        Err(e) => return Decision::Failed(ConfigError::Random(e.to_string()).into()),
    };
    tracing::debug!(product_sku = %contract.product_sku, "calling CheckoutLicense");
    facts.checkout_in_flight = Some(InFlight(config.clone(), client_token.clone()));
    let checked_out = license::checkout(
        &config,
        contract,
        &client_token,
        (started, config.timeout),
        &mut facts.call,
    )
    .await;
    facts.checkout_in_flight = None;
    let allow = config.on_transient_error == TransientPolicy::Allow;
    if let Err(LicenseError::Call(CallError::Unreachable(_))) = &checked_out {
        // Its outcome is unknown; a hold with `allow` reuses the ClientToken instead, so the
        // seat it may have taken is the one the supervisor gets.
        if !(allow && contract.seat == SeatMode::Hold) {
            settle(&config, contract, &client_token).await;
        }
    }
    let checkout = match checked_out {
        Ok(done) => Ok(done),
        Err(LicenseError::Call(CallError::Unreachable(reason))) if allow => {
            tracing::warn!(
                product_sku = %contract.product_sku,
                "entitlement NOT verified: {reason}; starting anyway because MPGATE_ON_TRANSIENT_ERROR=allow"
            );
            Err(reason)
        }
        Err(e) => return Decision::Failed(e.into()),
    };
    match (contract.seat, checkout) {
        (SeatMode::Check, Ok((checkout, session))) => {
            let checked_in = give_back(&session, &checkout, &config).await;
            Decision::Licensed {
                checkout,
                checked_in,
            }
        }
        (SeatMode::Check, Err(reason)) => Decision::Unverified { reason },
        (SeatMode::Hold, checkout) => {
            let checkout = checkout.map(|(checkout, session)| {
                kept.session = Some(session);
                checkout
            });
            kept.config = Some(config);
            Decision::Held {
                checkout,
                client_token,
            }
        }
    }
}

/// What to do before a rotating key expires, given what this build and configuration hold.
fn rotation_advice(hourly: &Hourly, pinned: bool) -> String {
    let newer = hourly
        .key_versions
        .iter()
        .filter(|v| **v > hourly.public_key_version)
        .max();
    match (newer, pinned) {
        (Some(v), _) => format!("key version {v} is already here; set MPGATE_PUBLIC_KEY_VERSION={v} before then"),
        (None, true) => "get the new key and version from the AWS Marketplace Management Portal and rebuild this pinned mpgate with it".into(),
        (None, false) => "get the new key and version from the AWS Marketplace Management Portal, add the key (MPGATE_PUBLIC_KEY_DIR, or MPGATE_PUBLIC_KEY_FILE) and set MPGATE_PUBLIC_KEY_VERSION".into(),
    }
}

/// Checks a consumption in (a short deadline: a failure is only a warning, and the workload
/// waits); true if License Manager took it back.
pub(crate) async fn give_back(session: &Session, checkout: &Checkout, config: &Config) -> bool {
    let mut record = CallRecord::default();
    let deadline = lease::check_in_deadline(config.timeout);
    match session
        .check_in(&checkout.consumption_token, deadline, &mut record)
        .await
    {
        Ok(()) => true,
        Err(error) => {
            // Never a lock-out: the seat comes back when the checkout expires.
            tracing::warn!(
                expiration = %license::rfc3339(checkout.expiration),
                "cannot check the license back in ({error}); the seat is released when the checkout expires"
            );
            false
        }
    }
}

/// Settles a checkout whose outcome is unknown (cut by a stop signal, or failed transiently:
/// an attempt may have been processed, its answer lost): it is asked again with its
/// ClientToken, which License Manager answers with the first checkout's answer (taking no
/// second seat) or, if none was made, a new one, and what that answer holds is checked in.
/// Bounded by two check-in deadlines; a failure is a warning.
pub(crate) async fn settle(
    config: &Config,
    contract: &crate::config::Contract,
    client_token: &str,
) {
    let deadline = lease::check_in_deadline(config.timeout);
    let mut record = CallRecord::default();
    let settled = tokio::time::timeout(deadline * 2, async {
        let (checkout, session) = license::checkout(
            config,
            contract,
            client_token,
            (Instant::now(), deadline),
            &mut record,
        )
        .await?;
        session
            .check_in(&checkout.consumption_token, deadline, &mut record)
            .await
    })
    .await;
    match settled {
        Ok(Ok(())) => tracing::info!(
            "the checkout that got no answer was asked again with its ClientToken, and the seat it took checked back in"
        ),
        Ok(Err(LicenseError::NotEntitled(_))) => {
            tracing::debug!("the checkout that got no answer took no seat")
        }
        Ok(Err(error)) => tracing::warn!(
            "cannot learn whether the checkout that got no answer took a seat ({error}); if it did, the seat is released when that checkout expires"
        ),
        Err(_) => tracing::warn!(
            "cannot learn whether the checkout that got no answer took a seat (no answer within {}); if it did, the seat is released when that checkout expires",
            crate::settings::humantime(deadline * 2)
        ),
    }
}

/// Checks a held seat back in, if one was checked out.
pub async fn give_back_held(decision: &Decision, kept: &Kept) {
    if let (
        Decision::Held {
            checkout: Ok(checkout),
            ..
        },
        Kept {
            config: Some(config),
            session: Some(session),
            ..
        },
    ) = (decision, kept)
    {
        give_back(session, checkout, config).await;
    }
}
