//! Owns the whole configuration: shared, per family, the network's, and the record.

use std::fs::File;
use std::time::Duration;

use crate::clock::Clock;
use crate::credentials::Credential;
use crate::fault::Fault;
use crate::keys::VersionKey;
use crate::ops::anywhere::Anywhere;
use crate::ops::container_credentials::Endpoint;
use crate::ops::license::License;
use crate::ops::meter_usage::MeterUsage;
use crate::ops::metering::Metering;
use crate::record::Recorder;
use crate::shared::{Callers, Shared};

/// Everything a connection and its requests see.
pub struct State {
    pub shared: Shared,
    pub metering: Metering,
    /// MeterUsage: the dimensions sold, the records billed, `--meter-fault`s.
    pub meter_usage: MeterUsage,
    /// License Manager: the license sold, its consumptions and `--license-fault`s.
    pub license: License,
    /// The license token's exchange: GetAccessToken, AssumeRoleWithWebIdentity, role pairs.
    pub anywhere: Anywhere,
    /// `--container-credentials-token`: the token and the pair the endpoint hands out.
    pub container_credentials: Option<Endpoint>,
    pub network: Network,
    pub record: Recorder,
}

/// How answers travel.
pub struct Network {
    /// `--latency`: before each answer.
    pub latency: Duration,
    /// `--trickle-interval`.
    pub trickle_interval: Duration,
    /// `--oversize-bytes`.
    pub oversize_bytes: u64,
}

impl State {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        region: String,
        product_code: String,
        keys: Vec<VersionKey>,
        wrong_key: Option<aws_lc_rs::rsa::KeyPair>,
        fault: Fault,
        fail_first: Option<u64>,
        latency: Duration,
        rotation_timestamp: Option<i64>,
        record: Option<File>,
    ) -> Self {
        State {
            shared: Shared::new(region, keys, fault, fail_first),
            metering: Metering {
                product_code,
                wrong_key,
                rotation_timestamp,
                expiring_key_versions: Vec::new(),
            },
            license: License::default(),
            meter_usage: MeterUsage::default(),
            anywhere: Anywhere::default(),
            container_credentials: None,
            network: Network {
                latency,
                trickle_interval: crate::cli::DEFAULT_TRICKLE_INTERVAL,
                oversize_bytes: crate::cli::DEFAULT_OVERSIZE_BYTES,
            },
            record: Recorder::new(record),
        }
    }

    /// Sets `--rate-limit` / `--rate-burst` (burst defaults to the rate), `--trickle-interval`
    /// and `--oversize-bytes`.
    pub fn with_network(
        mut self,
        rate_limit: Option<u32>,
        rate_burst: Option<u32>,
        trickle_interval: Duration,
        oversize_bytes: u64,
    ) -> Self {
        self.shared.set_rate_limit(rate_limit, rate_burst);
        self.network.trickle_interval = trickle_interval;
        self.network.oversize_bytes = oversize_bytes;
        self
    }

    /// Serves the ECS container credentials endpoint, handing out `credentials` to callers
    /// that send `token` (`--container-credentials-token`).
    pub fn with_container_credentials(mut self, token: String, credentials: Credential) -> Self {
        self.container_credentials = Some(Endpoint { token, credentials });
        self
    }

    /// Sets the License Manager side: the license and its faults.
    pub fn with_license(mut self, license: License) -> Self {
        self.license = license;
        self
    }

    /// Sets MeterUsage's side: dimensions, hour, usage file and faults.
    pub fn with_meter_usage(mut self, meter_usage: MeterUsage) -> Self {
        self.meter_usage = meter_usage;
        self
    }

    /// Sets the license token's exchange.
    pub fn with_anywhere(mut self, anywhere: Anywhere) -> Self {
        self.anywhere = anywhere;
        self
    }

    /// Sets the callers, AWS's clock and the key versions the rotation timestamp is sent for.
    pub fn with_callers(mut self, callers: Callers, clock: Clock, expiring: Vec<u32>) -> Self {
        self.shared.callers = callers;
        self.shared.clock = clock;
        self.metering.expiring_key_versions = expiring;
        self
    }
}
