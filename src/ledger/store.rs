//! Owns the ledger's tables and the transactions on them: increments, the plan of what to send, and what an answer settles.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;

use crate::config::scrape::Kind;

// Every table has the one key and value type (bytes): redb's B-tree code is generic over
// them, and each other pair of types would be compiled in again (tens of KiB each). Hour keys
// are the hour's start in ms (8 bytes, big-endian, so they sort by time) then the dimension.
type Table = TableDefinition<'static, &'static [u8], &'static [u8]>;
/// (hour, dimension) -> usage acknowledged and not yet planned for a record (u64).
const USAGE: Table = TableDefinition::new("usage");
/// dimension -> usage of hours that could not take it (locked, out of the window, a
/// duplicate), for the next hour that can (u64).
const CARRY: Table = TableDefinition::new("carry");
/// (hour, dimension) -> a record planned and perhaps sent, its answer not yet recorded:
/// quantity (u64) then `uncertain` (1 byte: an attempt may have been recorded by AWS).
const OUTBOX: Table = TableDefinition::new("outbox");
/// (hour, dimension) -> what AWS holds for it (JSON of [`Sent`]): the hour is locked.
const SENT: Table = TableDefinition::new("sent");
/// (hour, dimension) -> what a scraped dimension's samples add up to in the hour
/// ([`Scraped::bytes`]); it becomes the hour's usage when the hour is planned.
const SCRAPED: Table = TableDefinition::new("scraped");
/// dimension -> a scraped counter's last value (f64, big-endian bits): the next sample's
/// increase is measured from it, across restarts of the agent.
const LAST: Table = TableDefinition::new("last");

fn hour_key(hour_ms: u64, dimension: &str) -> Vec<u8> {
    let mut key = hour_ms.to_be_bytes().to_vec();
    key.extend_from_slice(dimension.as_bytes());
    key
}

fn split_key(key: &[u8]) -> (u64, String) {
    let (hour, dimension) = key.split_at(8.min(key.len()));
    let mut bytes = [0u8; 8];
    bytes[..hour.len()].copy_from_slice(hour);
    (
        u64::from_be_bytes(bytes),
        String::from_utf8_lossy(dimension).into_owned(),
    )
}

/// A usage or carry key's tag set: after a NUL (no dimension holds one), the canonical JSON
/// of the tags (`""`: untagged).
fn tagged(mut key: Vec<u8>, tags: &str) -> Vec<u8> {
    if !tags.is_empty() {
        key.push(0);
        key.extend_from_slice(tags.as_bytes());
    }
    key
}

/// A dimension and the tag set after it, if any.
fn split_tags(bytes: &[u8]) -> (String, String) {
    match bytes.iter().position(|b| *b == 0) {
        Some(i) => (
            String::from_utf8_lossy(&bytes[..i]).into_owned(),
            String::from_utf8_lossy(&bytes[i + 1..]).into_owned(),
        ),
        None => (String::from_utf8_lossy(bytes).into_owned(), String::new()),
    }
}

/// (hour, dimension, tags) of a usage key.
fn split_usage_key(key: &[u8]) -> (u64, String, String) {
    let (hour, _) = split_key(key);
    let (dimension, tags) = split_tags(key.get(8..).unwrap_or_default());
    (hour, dimension, tags)
}

/// Units per tag set (`""`: untagged), in the tag sets' order.
pub type Allocations = BTreeMap<String, u64>;

fn number(value: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    let n = value.len().min(8);
    bytes[..n].copy_from_slice(&value[..n]);
    u64::from_be_bytes(bytes)
}

fn outbox_value(quantity: u64, uncertain: bool, allocations: &[(String, u64)]) -> Vec<u8> {
    let mut value = quantity.to_be_bytes().to_vec();
    value.push(u8::from(uncertain));
    if !allocations.is_empty() {
        value.extend(serde_json::to_vec(allocations).unwrap_or_default());
    }
    value
}

/// A planned record: its quantity, whether it may be recorded already, its allocations.
type Planned = (u64, bool, Vec<(String, u64)>);

fn outbox_entry(value: &[u8]) -> Planned {
    let allocations = value
        .get(9..)
        .filter(|rest| !rest.is_empty())
        .and_then(|rest| serde_json::from_slice(rest).ok())
        .unwrap_or_default();
    (
        number(value),
        value.get(8).is_some_and(|b| *b != 0),
        allocations,
    )
}

/// The allocations a record sends: none when all its usage is untagged.
fn allocation_list(units: &Allocations) -> Vec<(String, u64)> {
    if units.keys().all(String::is_empty) {
        return Vec::new();
    }
    units
        .iter()
        .filter(|(_, q)| **q > 0)
        .map(|(t, q)| (t.clone(), *q))
        .collect()
}

/// What a planned record holds, per tag set.
fn units_of(quantity: u64, allocations: &[(String, u64)]) -> Allocations {
    if allocations.is_empty() {
        return BTreeMap::from([(String::new(), quantity)]);
    }
    allocations.iter().cloned().collect()
}

fn merge(into: &mut Allocations, from: &Allocations) {
    for (tags, q) in from {
        *into.entry(tags.clone()).or_default() += q;
    }
}

/// A key and its value, copied out of a table.
type Entry = (Vec<u8>, Vec<u8>);

/// Every (key, value) of a table, in key order, from `from` on.
fn entries(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    from: &[u8],
) -> Result<Vec<Entry>, Error> {
    Ok(table
        .range(from..)
        .map_err(err)?
        .filter_map(Result::ok)
        .map(|(k, v)| (k.value().to_vec(), v.value().to_vec()))
        .collect())
}

fn get(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    key: &[u8],
) -> Result<Option<Vec<u8>>, Error> {
    Ok(table.get(key).map_err(err)?.map(|v| v.value().to_vec()))
}

/// MeterUsage's bound on UsageQuantity.
pub const MAX_QUANTITY: u64 = i32::MAX as u64;
/// AWS accepts records up to six (metering) hours old.
pub const WINDOW_HOURS: u64 = 6;
/// MeterUsage takes at most this many UsageAllocations a record.
pub const MAX_ALLOCATIONS: usize = 2500;

pub type Error = String;

fn err(e: impl std::fmt::Display) -> Error {
    e.to_string()
}

/// Opens (or creates) the ledger file in `dir`, or an in-memory ledger; every table exists
/// after it, and every record planned before is marked uncertain (it may have been sent
/// before the process ended). With it, whether the file had not been closed cleanly (redb
/// then checked it and rolled back to its last commit).
pub fn open(dir: Option<&Path>) -> Result<(Database, bool), Error> {
    let repaired = Arc::new(AtomicBool::new(false));
    let db = match dir {
        // The ledger holds a few hundred keys: a small cache keeps the agent's memory small.
        Some(dir) => {
            let path = dir.join(FILE);
            // redb "repairs" a new file too (it has no allocator state yet).
            let existed = path.metadata().is_ok_and(|m| m.len() > 0);
            let flag = repaired.clone();
            Database::builder()
                .set_cache_size(CACHE_BYTES)
                .set_repair_callback(move |_| flag.store(existed, Ordering::Relaxed))
                .create(path)
                .map_err(err)?
        }
        None => Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(err)?,
    };
    let repaired = repaired.load(Ordering::Relaxed);
    if ready(&db)? {
        return Ok((db, repaired));
    }
    let txn = db.begin_write().map_err(err)?;
    {
        for table in [USAGE, CARRY, SENT, SCRAPED, LAST] {
            txn.open_table(table).map_err(err)?;
        }
        let mut outbox = txn.open_table(OUTBOX).map_err(err)?;
        for (key, value) in entries(&outbox, &[])? {
            let (quantity, _, allocations) = outbox_entry(&value);
            outbox
                .insert(
                    key.as_slice(),
                    outbox_value(quantity, true, &allocations).as_slice(),
                )
                .map_err(err)?;
        }
    }
    txn.commit().map_err(err)?;
    Ok((db, repaired))
}

/// Whether the ledger already has every table and no planned record, so that opening it
/// needs no write: a read transaction instead of a commit and its sync before the start's
/// call (0.1 M instructions; on a disk, a sync is milliseconds).
fn ready(db: &Database) -> Result<bool, Error> {
    use redb::{ReadableTableMetadata, TableError};
    let txn = db.begin_read().map_err(err)?;
    for table in [USAGE, CARRY, SENT, SCRAPED, LAST] {
        match txn.open_table(table) {
            Ok(_) => {}
            Err(TableError::TableDoesNotExist(_)) => return Ok(false),
            Err(e) => return Err(err(e)),
        }
    }
    match txn.open_table(OUTBOX) {
        Ok(outbox) => outbox.is_empty().map_err(err),
        Err(TableError::TableDoesNotExist(_)) => Ok(false),
        Err(e) => Err(err(e)),
    }
}

/// The ledger's file name in its directory.
pub const FILE: &str = "usage.redb";
/// redb's page cache (its default is 1 GiB, filled as pages are read).
const CACHE_BYTES: usize = 64 * 1024;

/// An increment to add to an hour's usage.
#[derive(Debug, Clone)]
pub struct Increment {
    pub hour_ms: u64,
    pub dimension: String,
    pub quantity: u64,
    /// The canonical JSON of the usage's tags (`""`: untagged).
    pub tags: String,
}

/// Adds every increment in one transaction (one sync for all); each gets the hour's total
/// after it, or why it was not added (the hour's total would overflow).
pub fn add(db: &Database, increments: &[Increment]) -> Result<Vec<Result<u64, Error>>, Error> {
    let txn = db.begin_write().map_err(err)?;
    let mut answers = Vec::with_capacity(increments.len());
    {
        let mut usage = txn.open_table(USAGE).map_err(err)?;
        for inc in increments {
            let key = tagged(hour_key(inc.hour_ms, &inc.dimension), &inc.tags);
            let before = get(&usage, &key)?.map(|v| number(&v)).unwrap_or(0);
            match before.checked_add(inc.quantity) {
                Some(total) if total <= u64::MAX / 2 => {
                    usage
                        .insert(key.as_slice(), total.to_be_bytes().as_slice())
                        .map_err(err)?;
                    answers.push(Ok(total));
                }
                _ => answers.push(Err(format!(
                    "the hour's total of {} would overflow: nothing was added",
                    inc.dimension
                ))),
            }
        }
    }
    txn.commit().map_err(err)?;
    Ok(answers)
}

/// Where a counter's increase is measured from when the ledger knows no last value, or
/// should not use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prior {
    /// Zero: the workload was started by this agent, so its counters started at zero (a
    /// last value of an earlier workload process does not apply).
    Zero,
    /// The last value the ledger holds (the agent restarted beside a running workload), or
    /// zero in a new ledger (a new pod's workload starts with the sidecar).
    Last,
    /// The last value the ledger holds, or else the sample itself: a sidecar without a
    /// durable ledger cannot tell a new pod from its own restart, and must never bill a
    /// counter's past twice.
    LastOrSelf,
}

/// One scraped sample of a dimension's metric (finite, not negative).
#[derive(Debug, Clone)]
pub struct Sample {
    pub hour_ms: u64,
    pub dimension: String,
    pub kind: Kind,
    pub factor: f64,
    pub value: f64,
    pub prior: Prior,
}

/// A scraped dimension's hour so far.
#[derive(Debug, Clone)]
struct Scraped {
    kind: Kind,
    factor: f64,
    /// A counter's increase, or the sum of a gauge's samples.
    sum: f64,
    count: u64,
    max: f64,
}

impl Scraped {
    /// Five big-endian numbers, as every other value here: kind (0 counter, 1 max, 2 avg),
    /// factor, sum, count, max.
    fn bytes(&self) -> Vec<u8> {
        let kind = match self.kind {
            Kind::Counter => 0u64,
            Kind::Max => 1,
            Kind::Avg => 2,
        };
        [
            kind,
            self.factor.to_bits(),
            self.sum.to_bits(),
            self.count,
            self.max.to_bits(),
        ]
        .iter()
        .flat_map(|n| n.to_be_bytes())
        .collect()
    }

    fn from_bytes(value: &[u8]) -> Option<Scraped> {
        let n = |i: usize| value.get(i * 8..i * 8 + 8).map(number);
        Some(Scraped {
            kind: match n(0)? {
                0 => Kind::Counter,
                1 => Kind::Max,
                _ => Kind::Avg,
            },
            factor: f64::from_bits(n(1)?),
            sum: f64::from_bits(n(2)?),
            count: n(3)?,
            max: f64::from_bits(n(4)?),
        })
    }

    /// The hour's units: the aggregate times the factor, rounded up, where a value within a
    /// billionth of a whole number is that number (0.1 + 0.2 units is not 4 tenths' worth).
    fn units(&self) -> u64 {
        let value = match self.kind {
            Kind::Counter => self.sum,
            Kind::Max => self.max,
            Kind::Avg if self.count > 0 => self.sum / self.count as f64,
            Kind::Avg => 0.0,
        } * self.factor;
        if value.is_nan() || value <= 0.0 {
            return 0;
        }
        let units = (value - value * 1e-9).ceil();
        if units >= MAX_QUANTITY as f64 * 1024.0 {
            MAX_QUANTITY * 1024
        } else {
            units as u64
        }
    }
}

/// Adds samples to their hours, in one transaction: a counter's increase since its last
/// value (all of the value after a reset), a gauge's sample to the hour's max and mean.
pub fn sample(db: &Database, samples: &[Sample]) -> Result<(), Error> {
    let txn = db.begin_write().map_err(err)?;
    {
        let mut scraped = txn.open_table(SCRAPED).map_err(err)?;
        let mut last = txn.open_table(LAST).map_err(err)?;
        for s in samples {
            let key = hour_key(s.hour_ms, &s.dimension);
            let mut hour = get(&scraped, &key)?
                .and_then(|v| Scraped::from_bytes(&v))
                .unwrap_or(Scraped {
                    kind: s.kind,
                    factor: s.factor,
                    sum: 0.0,
                    count: 0,
                    max: 0.0,
                });
            match s.kind {
                Kind::Counter => {
                    let before = get(&last, s.dimension.as_bytes())?
                        .map(|v| f64::from_bits(number(&v)))
                        .filter(|_| s.prior != Prior::Zero);
                    let from = match (before, s.prior) {
                        (Some(before), _) => before,
                        (None, Prior::LastOrSelf) => s.value,
                        (None, _) => 0.0,
                    };
                    // A counter lower than before was reset: all of it is new.
                    hour.sum += if s.value >= from {
                        s.value - from
                    } else {
                        s.value
                    };
                    last.insert(
                        s.dimension.as_bytes(),
                        s.value.to_bits().to_be_bytes().as_slice(),
                    )
                    .map_err(err)?;
                }
                Kind::Max | Kind::Avg => {
                    hour.sum += s.value;
                    hour.max = hour.max.max(s.value);
                }
            }
            hour.count += 1;
            scraped
                .insert(key.as_slice(), hour.bytes().as_slice())
                .map_err(err)?;
        }
    }
    txn.commit().map_err(err)
}

/// What AWS holds for an hour and dimension.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sent {
    pub quantity: u64,
    /// `recorded`, `start` (the start's record), `duplicate` (another record was there:
    /// the quantity was carried), `out-of-window` (carried), `unknown` (an answer was lost
    /// and the hour has left the window: never carried, so never billed twice).
    pub how: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metering_record_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// Locks an hour of a dimension with a record made elsewhere (the start's), unless the
/// ledger already knows one.
pub fn lock(db: &Database, hour_ms: u64, dimension: &str, sent: &Sent) -> Result<(), Error> {
    let txn = db.begin_write().map_err(err)?;
    {
        let mut table = txn.open_table(SENT).map_err(err)?;
        let key = hour_key(hour_ms, dimension);
        if get(&table, &key)?.is_none() {
            let json = serde_json::to_vec(sent).map_err(err)?;
            table.insert(key.as_slice(), json.as_slice()).map_err(err)?;
        }
    }
    txn.commit().map_err(err)
}

/// What the sender is asked to plan.
#[derive(Debug, Clone)]
pub struct Rules {
    pub now_ms: u64,
    pub hour_ms: u64,
    /// At a stop: the current (partial) hour is closed too, and its records lock it.
    pub flush: bool,
    /// A record of 0 for every dimension without usage in the last closed hour.
    pub send_zero: bool,
    pub dimensions: Vec<String>,
}

/// A record to send: planned in the ledger before it is sent, so a resend after a crash is
/// identical (and AWS answers it with the same record ID).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub hour_ms: u64,
    pub dimension: String,
    pub quantity: u64,
    pub uncertain: bool,
    /// UsageAllocations: (tags' canonical JSON, units), `""` the untagged usage; empty when
    /// the record holds untagged usage only.
    pub allocations: Vec<(String, u64)>,
}

/// Plans the records to send now, in one transaction: every closed hour's usage becomes a
/// record of its own (or is carried, when its hour is already locked or out of the window),
/// what is carried joins the last closed hour's record, quantities over MeterUsage's bound
/// are carried on. Returns every planned record not yet answered, oldest first.
pub fn plan(db: &Database, rules: &Rules) -> Result<Vec<Pending>, Error> {
    let hour = rules.hour_ms.max(1);
    let current = rules.now_ms - rules.now_ms % hour;
    let limit = if rules.flush { current + hour } else { current };
    let last = limit.checked_sub(hour);
    // An hour is too old once it could be refused on arrival: its start six hours back,
    // with a tenth of an hour to spare.
    let oldest = (rules.now_ms + hour / 10).saturating_sub(WINDOW_HOURS * hour);
    let txn = db.begin_write().map_err(err)?;
    {
        let mut usage = txn.open_table(USAGE).map_err(err)?;
        let mut carry = txn.open_table(CARRY).map_err(err)?;
        let mut outbox = txn.open_table(OUTBOX).map_err(err)?;
        let mut sent = txn.open_table(SENT).map_err(err)?;
        let mut carried: BTreeMap<String, Allocations> = BTreeMap::new();
        for (key, value) in entries(&carry, &[])? {
            carry.remove(key.as_slice()).map_err(err)?;
            let (d, tags) = split_tags(&key);
            *carried.entry(d).or_default().entry(tags).or_default() += number(&value);
        }
        let in_flight: BTreeMap<(u64, String), Planned> = entries(&outbox, &[])?
            .into_iter()
            .map(|(k, v)| (split_key(&k), outbox_entry(&v)))
            .collect();
        let locked = |sent: &redb::Table<&'static [u8], &'static [u8]>, h: u64, d: &str| {
            get(sent, &hour_key(h, d)).map(|v| v.is_some())
        };
        let mut planned: BTreeMap<(u64, String), Allocations> = BTreeMap::new();
        // 0. Closed hours' samples become their hours' usage (untagged).
        let mut scraped = txn.open_table(SCRAPED).map_err(err)?;
        for (key, value) in entries(&scraped, &[])? {
            if split_key(&key).0 >= limit {
                break;
            }
            scraped.remove(key.as_slice()).map_err(err)?;
            let units = Scraped::from_bytes(&value).map_or(0, |s| s.units());
            let before = get(&usage, &key)?.map(|v| number(&v)).unwrap_or(0);
            usage
                .insert(key.as_slice(), (before + units).to_be_bytes().as_slice())
                .map_err(err)?;
        }
        // 1. Closed hours' usage.
        for (key, value) in entries(&usage, &[])? {
            let (h, d, tags) = split_usage_key(&key);
            if h >= limit {
                break;
            }
            usage.remove(key.as_slice()).map_err(err)?;
            let q = number(&value);
            if q == 0 {
                continue;
            }
            let taken =
                locked(&sent, h, &d)? || in_flight.contains_key(&(h, d.clone())) || h < oldest;
            let to = if taken {
                carried.entry(d).or_default()
            } else {
                planned.entry((h, d)).or_default()
            };
            *to.entry(tags).or_default() += q;
        }
        // 2. A record planned before whose hour left the window while nothing can have been
        // recorded: carried on. An uncertain one is sent again (AWS then says whether).
        for ((h, d), (q, uncertain, allocations)) in &in_flight {
            if *h < oldest && !uncertain {
                outbox.remove(hour_key(*h, d).as_slice()).map_err(err)?;
                merge(
                    carried.entry(d.clone()).or_default(),
                    &units_of(*q, allocations),
                );
            }
        }
        // 3. What is carried joins the last closed hour's record, if that hour can take one.
        if let Some(last) = last.filter(|l| *l >= oldest) {
            for (d, units) in carried.iter_mut() {
                if units.values().all(|q| *q == 0)
                    || locked(&sent, last, d)?
                    || in_flight.contains_key(&(last, d.clone()))
                {
                    continue;
                }
                merge(planned.entry((last, d.clone())).or_default(), units);
                units.clear();
            }
            if rules.send_zero {
                for d in &rules.dimensions {
                    if !locked(&sent, last, d)? && !in_flight.contains_key(&(last, d.clone())) {
                        planned.entry((last, d.clone())).or_default();
                    }
                }
            }
        }
        // 4. MeterUsage takes at most MAX_QUANTITY and MAX_ALLOCATIONS a record: the rest is
        // carried on.
        for ((h, d), mut units) in planned {
            let mut over = units.values().sum::<u64>().saturating_sub(MAX_QUANTITY);
            let extra: Vec<String> = units.keys().skip(MAX_ALLOCATIONS).cloned().collect();
            let back = carried.entry(d.clone()).or_default();
            for tags in extra {
                if let Some(q) = units.remove(&tags) {
                    *back.entry(tags).or_default() += q;
                    over = over.saturating_sub(q);
                }
            }
            for (tags, q) in units.iter_mut().rev() {
                let take = over.min(*q);
                if take > 0 {
                    *q -= take;
                    over -= take;
                    *back.entry(tags.clone()).or_default() += take;
                }
            }
            let total = units.values().sum::<u64>();
            let value = outbox_value(total, false, &allocation_list(&units));
            outbox
                .insert(hour_key(h, &d).as_slice(), value.as_slice())
                .map_err(err)?;
        }
        for (d, units) in &carried {
            for (tags, q) in units.iter().filter(|(_, q)| **q > 0) {
                let key = tagged(d.as_bytes().to_vec(), tags);
                carry
                    .insert(key.as_slice(), q.to_be_bytes().as_slice())
                    .map_err(err)?;
            }
        }
        // 5. Hours AWS can no longer be asked about need no lock.
        let stale = oldest.saturating_sub(hour);
        for (key, _) in entries(&sent, &[])? {
            if split_key(&key).0 >= stale {
                break;
            }
            sent.remove(key.as_slice()).map_err(err)?;
        }
    }
    txn.commit().map_err(err)?;
    pending(db)
}

/// Every planned record not yet answered, oldest first.
pub fn pending(db: &Database) -> Result<Vec<Pending>, Error> {
    let txn = db.begin_read().map_err(err)?;
    let outbox = txn.open_table(OUTBOX).map_err(err)?;
    Ok(entries(&outbox, &[])?
        .into_iter()
        .map(|(k, v)| {
            let (hour_ms, dimension) = split_key(&k);
            let (quantity, uncertain, allocations) = outbox_entry(&v);
            Pending {
                hour_ms,
                dimension,
                quantity,
                uncertain,
                allocations,
            }
        })
        .collect())
}

/// What MeterUsage answered a planned record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Recorded {
        record_id: String,
        request_id: Option<String>,
    },
    /// Another record of this pod or task holds the hour: the quantity is carried on.
    Duplicate { request_id: Option<String> },
    /// The hour left AWS's window.
    OutOfWindow { request_id: Option<String> },
    /// No answer that settles it; `maybe_recorded`: an attempt may have been recorded (no
    /// answer came, or a 5xx), so the record is resent as it is, never carried.
    Failed { maybe_recorded: bool },
}

/// Records what MeterUsage answered `pending`, in one transaction; returns what the hour now
/// holds, once settled.
pub fn settle(db: &Database, pending: &Pending, answer: &Answer) -> Result<Option<Sent>, Error> {
    let key = hour_key(pending.hour_ms, &pending.dimension);
    let txn = db.begin_write().map_err(err)?;
    let settled;
    {
        let mut outbox = txn.open_table(OUTBOX).map_err(err)?;
        let Some((quantity, uncertain, allocations)) =
            get(&outbox, &key)?.map(|v| outbox_entry(&v))
        else {
            return Ok(None);
        };
        let mut carry = txn.open_table(CARRY).map_err(err)?;
        let mut sent = txn.open_table(SENT).map_err(err)?;
        let dimension = pending.dimension.as_bytes();
        let mut carry_on = || -> Result<(), Error> {
            for (tags, q) in units_of(quantity, &allocations) {
                let key = tagged(dimension.to_vec(), &tags);
                let before = get(&carry, &key)?.map(|v| number(&v)).unwrap_or(0);
                carry
                    .insert(key.as_slice(), (before + q).to_be_bytes().as_slice())
                    .map_err(err)?;
            }
            Ok(())
        };
        let record = |how: &str, id: Option<&String>, request_id: &Option<String>| Sent {
            quantity,
            how: how.into(),
            metering_record_id: id.cloned(),
            request_id: request_id.clone(),
        };
        settled = match answer {
            Answer::Recorded {
                record_id,
                request_id,
            } => Some(record("recorded", Some(record_id), request_id)),
            Answer::Duplicate { request_id } => {
                carry_on()?;
                Some(record("duplicate", None, request_id))
            }
            Answer::OutOfWindow { request_id } if uncertain => {
                Some(record("unknown", None, request_id))
            }
            Answer::OutOfWindow { request_id } => {
                carry_on()?;
                Some(record("out-of-window", None, request_id))
            }
            Answer::Failed { maybe_recorded } => {
                if *maybe_recorded && !uncertain {
                    let value = outbox_value(quantity, true, &allocations);
                    outbox
                        .insert(key.as_slice(), value.as_slice())
                        .map_err(err)?;
                }
                None
            }
        };
        if let Some(done) = &settled {
            outbox.remove(key.as_slice()).map_err(err)?;
            let json = serde_json::to_vec(done).map_err(err)?;
            sent.insert(key.as_slice(), json.as_slice()).map_err(err)?;
        }
    }
    txn.commit().map_err(err)?;
    Ok(settled)
}

/// One hour of one dimension, as `GET /v1/usage` and the result file show it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Line {
    pub hour_ms: u64,
    pub dimension: String,
    pub quantity: u64,
    /// `open` (the current hour), `unsent` (closed, not yet planned), `sending` (planned,
    /// no answer yet), or a [`Sent::how`].
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metering_record_id: Option<String>,
    /// The tags of usage not yet planned for a record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<serde_json::Value>,
    /// Units read from the workload's metrics so far (rounded up), not pushed.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub scraped: bool,
}

/// What the ledger holds: every hour's lines, and what is carried per dimension.
#[derive(Debug, Clone, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    pub lines: Vec<Line>,
    pub carried: BTreeMap<String, u64>,
}

impl Snapshot {
    /// Units acknowledged but not yet in a record AWS answered, per dimension.
    pub fn unsent(&self) -> BTreeMap<String, u64> {
        let mut unsent = self.carried.clone();
        for line in &self.lines {
            if matches!(line.state.as_str(), "open" | "unsent" | "sending") {
                *unsent.entry(line.dimension.clone()).or_default() += line.quantity;
            }
        }
        unsent.retain(|_, q| *q > 0);
        unsent
    }
}

/// Everything the ledger holds; `current_ms` is the start of the open hour.
pub fn snapshot(db: &Database, current_ms: u64) -> Result<Snapshot, Error> {
    let txn = db.begin_read().map_err(err)?;
    let mut lines = Vec::new();
    let line = |key: &[u8], quantity: u64, state: String, id: Option<String>| {
        let (hour_ms, dimension) = split_key(key);
        Line {
            hour_ms,
            dimension,
            quantity,
            state,
            metering_record_id: id,
            tags: None,
            scraped: false,
        }
    };
    for (k, v) in entries(&txn.open_table(USAGE).map_err(err)?, &[])? {
        let (hour_ms, dimension, tags) = split_usage_key(&k);
        let state = if hour_ms >= current_ms {
            "open"
        } else {
            "unsent"
        };
        lines.push(Line {
            tags: serde_json::from_str(&tags).ok(),
            ..line(
                &hour_key(hour_ms, &dimension),
                number(&v),
                state.into(),
                None,
            )
        });
    }
    for (k, v) in entries(&txn.open_table(SCRAPED).map_err(err)?, &[])? {
        let units = Scraped::from_bytes(&v).map_or(0, |s| s.units());
        let state = if split_key(&k).0 >= current_ms {
            "open"
        } else {
            "unsent"
        };
        lines.push(Line {
            scraped: true,
            ..line(&k, units, state.into(), None)
        });
    }
    for (k, v) in entries(&txn.open_table(OUTBOX).map_err(err)?, &[])? {
        lines.push(line(&k, outbox_entry(&v).0, "sending".into(), None));
    }
    for (k, v) in entries(&txn.open_table(SENT).map_err(err)?, &[])? {
        if let Ok(s) = serde_json::from_slice::<Sent>(&v) {
            lines.push(line(&k, s.quantity, s.how, s.metering_record_id));
        }
    }
    lines.sort_by(|a, b| (a.hour_ms, &a.dimension).cmp(&(b.hour_ms, &b.dimension)));
    let mut carried: BTreeMap<String, u64> = BTreeMap::new();
    for (k, v) in entries(&txn.open_table(CARRY).map_err(err)?, &[])? {
        *carried.entry(split_tags(&k).0).or_default() += number(&v);
    }
    carried.retain(|_, q| *q > 0);
    Ok(Snapshot { lines, carried })
}
