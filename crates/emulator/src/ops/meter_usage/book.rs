//! Owns what MeterUsage has billed: one record per caller, dimension and metering hour, the
//! ClientTokens, the subscription, and the usage file.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::clock::rfc3339;
use crate::log::error;
use crate::ops::meter_usage::config::MeterConfig;
use crate::ops::meter_usage::faults::{meter_error, MeterError, MeterFault};
use crate::ops::meter_usage::input::Input;

/// The most records the emulator keeps (a bound, far beyond any test).
pub const MAX_RECORDS: usize = 1_000_000;

/// One accepted record.
struct Record {
    id: String,
    quantity: i64,
    /// `UsageAllocations` as sent (an identical repeat must send the same).
    allocations: Value,
}

#[derive(Default)]
struct Book {
    /// (caller, dimension, hour start in ms) -> the record.
    records: HashMap<(String, String, i64), Record>,
    /// ClientToken -> (the caller and the request's members, the record ID).
    client_tokens: HashMap<String, (Value, String)>,
    /// Callers with a record accepted: AWS checks the subscription on the initial call only.
    admitted: HashSet<String>,
}

/// What a call did to the book, for its `--record` line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effect {
    /// A new record was billed.
    pub recorded: bool,
    /// An identical repeat: the first record's ID again, nothing more billed.
    pub replayed: bool,
    pub record_id: Option<String>,
}

/// MeterUsage's state.
pub struct MeterUsage {
    pub config: MeterConfig,
    book: Mutex<Book>,
    usage_file: Option<Mutex<File>>,
    /// SIGUSR1: the buyer's subscription ended.
    unsubscribed: AtomicBool,
    /// Calls that reached the fault step; and those of them from callers not yet admitted.
    calls: AtomicU64,
    initial_calls: AtomicU64,
    /// When each `--meter-fault` with a window first failed a call (by its index).
    outages: Mutex<Vec<Option<Instant>>>,
}

impl Default for MeterUsage {
    fn default() -> Self {
        MeterUsage::new(MeterConfig::default(), None)
    }
}

impl MeterUsage {
    pub fn new(config: MeterConfig, usage_file: Option<File>) -> MeterUsage {
        MeterUsage {
            outages: Mutex::new(vec![None; config.faults.len()]),
            config,
            book: Mutex::new(Book::default()),
            usage_file: usage_file.map(Mutex::new),
            unsubscribed: AtomicBool::new(false),
            calls: AtomicU64::new(0),
            initial_calls: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends the buyer's subscription (SIGUSR1): callers with no record yet get
    /// CustomerNotEntitledException; running ones keep metering, as on AWS.
    pub fn unsubscribe(&self) {
        self.unsubscribed.store(true, Ordering::SeqCst);
    }

    fn admitted(&self, caller: &str) -> bool {
        self.lock().admitted.contains(caller)
    }

    /// The `--meter-fault` of this call from `caller`, counting it.
    pub fn take_fault(&self, caller: &str) -> Option<MeterFault> {
        self.fault_at(caller, Instant::now())
    }

    /// [`Self::take_fault`] at `now`: a fault with a window fails calls from the first one
    /// it fails until the window has passed, then none.
    fn fault_at(&self, caller: &str, now: Instant) -> Option<MeterFault> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let initial = !self.admitted(caller);
        let n_initial = if initial {
            self.initial_calls.fetch_add(1, Ordering::SeqCst) + 1
        } else {
            0
        };
        let mut outages = self.outages.lock().unwrap_or_else(|p| p.into_inner());
        for (f, began) in self.config.faults.iter().zip(outages.iter_mut()) {
            let applies = if f.fault.initial_call_only() {
                initial && f.applies(n_initial)
            } else {
                f.applies(n)
            };
            if !applies {
                continue;
            }
            if let Some(window) = f.window {
                if now.duration_since(*began.get_or_insert(now)) >= window {
                    continue;
                }
            }
            return Some(f.fault);
        }
        None
    }

    /// The subscription, checked on a caller's initial call only.
    pub fn check_subscription(&self, caller: &str) -> Result<(), MeterError> {
        if self.unsubscribed.load(Ordering::SeqCst) && !self.admitted(caller) {
            return Err(MeterFault::NotEntitled
                .error()
                .unwrap_or_else(|| meter_error("CustomerNotEntitledException", "")));
        }
        Ok(())
    }

    /// The start (ms since the epoch) of the metering hour holding `ms`.
    pub fn hour_of(&self, ms: i64) -> i64 {
        let h = self.config.hour_ms();
        ms - ms.rem_euclid(h)
    }

    /// The Timestamp's window on AWS's clock `now`: at most six metering hours old, and in
    /// an hour that has begun (UNCONFIRMED for AWS: the emulator refuses a record for a
    /// future hour, so a client must date records by the hour it measured, never ahead).
    pub fn check_timestamp(&self, timestamp_ms: i64, now: SystemTime) -> Result<(), MeterError> {
        let now_ms = ms_since_epoch(now);
        let window = crate::ops::meter_usage::config::WINDOW_HOURS * self.config.hour_ms();
        let out = |why: String| {
            Err(meter_error(
                "TimestampOutOfBoundsException",
                format!("The timestamp value passed in the meter usage request is out of allowed range: {why}."),
            ))
        };
        if timestamp_ms < now_ms - window {
            return out(format!(
                "{} is more than {} metering hours ({} s) before now ({})",
                rfc3339_ms(timestamp_ms),
                crate::ops::meter_usage::config::WINDOW_HOURS,
                window / 1000,
                rfc3339_ms(now_ms)
            ));
        }
        if self.hour_of(timestamp_ms) > self.hour_of(now_ms) {
            return out(format!(
                "{} is in a metering hour that has not begun (now {})",
                rfc3339_ms(timestamp_ms),
                rfc3339_ms(now_ms)
            ));
        }
        Ok(())
    }

    /// The hour's rule and the ClientToken's, then the record: `dry_run` checks without
    /// recording. `now` dates the usage file's line.
    pub fn meter(
        &self,
        caller: &str,
        input: &Input,
        now: SystemTime,
        effect: &mut Effect,
    ) -> Result<String, MeterError> {
        let hour = self.hour_of(input.timestamp_ms);
        let key = (caller.to_string(), input.dimension.clone(), hour);
        // A ClientToken stands for one request: the caller's, with these members.
        let members = json!({
            "caller": caller,
            "ProductCode": input.product_code,
            "TimestampMs": input.timestamp_ms,
            "UsageDimension": input.dimension,
            "UsageQuantity": input.quantity,
            "UsageAllocations": input.allocations_raw,
        });
        let mut book = self.lock();
        if let Some(token) = &input.client_token {
            if let Some((first, id)) = book.client_tokens.get(token) {
                if *first != members {
                    return Err(MeterFault::IdempotencyConflict
                        .error()
                        .unwrap_or_else(|| meter_error("IdempotencyConflictException", "")));
                }
                if !input.dry_run {
                    effect.replayed = true;
                    effect.record_id = Some(id.clone());
                }
                return Ok(if input.dry_run {
                    DRY_RUN.into()
                } else {
                    id.clone()
                });
            }
        }
        if let Some(r) = book.records.get(&key) {
            if r.quantity != input.quantity || r.allocations != input.allocations_raw {
                return Err(meter_error(
                    "DuplicateRequestException",
                    format!(
                        "A metering record has already been emitted by the same EC2 instance, ECS task, or EKS pod for the given {{usageDimension, timestamp}} with a different usageQuantity: {} for the hour of {} holds UsageQuantity {} (record {}).",
                        input.dimension,
                        rfc3339_ms(hour),
                        r.quantity,
                        r.id
                    ),
                ));
            }
            if input.dry_run {
                return Ok(DRY_RUN.into());
            }
            let id = r.id.clone();
            effect.replayed = true;
            effect.record_id = Some(id.clone());
            if let Some(token) = &input.client_token {
                book.client_tokens
                    .insert(token.clone(), (members, id.clone()));
            }
            return Ok(id);
        }
        if input.dry_run {
            return Ok(DRY_RUN.into());
        }
        if book.records.len() >= MAX_RECORDS {
            error(&format!(
                "MeterUsage: {MAX_RECORDS} records kept, the emulator's bound: refusing more"
            ));
            return Err(meter_error(
                "InternalServiceErrorException",
                "The emulator keeps no more records (its bound).",
            ));
        }
        let id = crate::answer::request_id();
        let line = json!({
            "meteringRecordId": id,
            "caller": caller,
            "productCode": input.product_code,
            "dimension": input.dimension,
            "hour": rfc3339_ms(hour),
            "hourStartMs": hour,
            "quantity": input.quantity,
            "allocations": input.allocations_raw,
            "timestampMs": input.timestamp_ms,
            "recordedAt": rfc3339(now),
        });
        // Billed before answered: the line is in the file before the answer leaves.
        if let Some(file) = &self.usage_file {
            let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(e) = writeln!(f, "{line}").and_then(|()| f.flush()) {
                error(&format!("cannot write the usage file: {e}"));
            }
        }
        book.records.insert(
            key,
            Record {
                id: id.clone(),
                quantity: input.quantity,
                allocations: input.allocations_raw.clone(),
            },
        );
        if let Some(token) = &input.client_token {
            book.client_tokens
                .insert(token.clone(), (members, id.clone()));
        }
        book.admitted.insert(caller.to_string());
        effect.recorded = true;
        effect.record_id = Some(id.clone());
        Ok(id)
    }
}

/// The MeteringRecordId a successful DryRun answers.
pub const DRY_RUN: &str = "DryRunOperation";

pub fn ms_since_epoch(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

/// `ms` since the epoch in RFC 3339 (UTC), with milliseconds only when there are some.
pub fn rfc3339_ms(ms: i64) -> String {
    let whole = UNIX_EPOCH + Duration::from_secs(ms.div_euclid(1000).max(0) as u64);
    let s = rfc3339(whole);
    match ms.rem_euclid(1000) {
        0 => s,
        frac => format!("{}.{frac:03}Z", s.trim_end_matches('Z')),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::meter_usage::faults::MeterFaultSpec;

    #[test]
    fn a_fault_with_a_window_fails_calls_from_its_first_until_the_window_has_passed() {
        let spec = MeterFaultSpec {
            fault: MeterFault::Throttle,
            after: 1,
            count: None,
            window: Some(Duration::from_secs(10)),
        };
        let mut config = MeterConfig::default();
        config.faults = vec![spec];
        let meter = MeterUsage::new(config, None);
        let t0 = Instant::now();
        let at = |s: u64| meter.fault_at("caller", t0 + Duration::from_secs(s));
        // The first call is answered (AFTER 1); the window opens with the second.
        assert_eq!(at(0), None);
        assert_eq!(at(5), Some(MeterFault::Throttle));
        assert_eq!(at(14), Some(MeterFault::Throttle));
        assert_eq!(at(15), None);
        assert_eq!(at(16), None);
    }
}
