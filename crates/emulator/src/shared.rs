//! Owns what every operation family shares: region, clock, callers, keys, limits, `--fault`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crate::clock::Clock;
use crate::credentials::Keyring;
use crate::fault::Fault;
use crate::keys::VersionKey;

/// What every operation family shares.
pub struct Shared {
    pub region: String,
    /// The signing keys by version (License Manager signs with the first).
    pub keys: Vec<VersionKey>,
    /// The callers: who is known, and what each key stands for.
    pub callers: Callers,
    /// AWS's clock (`--clock-offset`).
    pub clock: Clock,
    /// `--fault`: Metering's calls, or the connections (network faults).
    pub fault: Fault,
    pub fail_first: Option<u64>,
    /// `--rate-limit`: the token bucket valid calls draw from.
    rate: Option<Mutex<Bucket>>,
    eligible: AtomicU64,
}

/// Who may call, and what AWS would say to each (the caller model).
#[derive(Debug, Default)]
pub struct Callers {
    pub keyring: Keyring,
    /// Long-term keys stand for a task (`--long-term-keys-are-tasks`); else for an IAM user.
    pub long_term_keys_are_tasks: bool,
    /// The region the caller's task runs in (`--task-region`); `None`: the emulator's.
    pub task_region: Option<String>,
}

/// A token bucket: `rate` tokens a second, at most `burst`, starting full.
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: u32, burst: u32) -> Self {
        Bucket {
            rate: f64::from(rate),
            burst: f64::from(burst),
            tokens: f64::from(burst),
            last: Instant::now(),
        }
    }

    /// Takes one token if there is one.
    fn admit(&mut self, now: Instant) -> bool {
        let refill = now.saturating_duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Shared {
    pub fn new(
        region: String,
        keys: Vec<VersionKey>,
        fault: Fault,
        fail_first: Option<u64>,
    ) -> Shared {
        Shared {
            region,
            keys,
            callers: Callers::default(),
            clock: Clock::default(),
            fault,
            fail_first,
            rate: None,
            eligible: AtomicU64::new(0),
        }
    }

    /// Sets `--rate-limit` / `--rate-burst` (burst defaults to the rate).
    pub fn set_rate_limit(&mut self, rate_limit: Option<u32>, rate_burst: Option<u32>) {
        self.rate = rate_limit.map(|r| Mutex::new(Bucket::new(r, rate_burst.unwrap_or(r))));
    }

    /// Count one more eligible call (or connection, for connection faults) and say whether
    /// the fault applies to it (`--fail-first`).
    pub fn take_fault(&self) -> bool {
        let n = self.eligible.fetch_add(1, Ordering::SeqCst) + 1;
        self.fail_first.is_none_or(|limit| n <= limit)
    }

    /// Whether `--rate-limit` admits one more valid call now.
    pub fn admit(&self) -> bool {
        match &self.rate {
            None => true,
            Some(bucket) => bucket
                .lock()
                .map(|mut b| b.admit(Instant::now()))
                .unwrap_or(true),
        }
    }
}
