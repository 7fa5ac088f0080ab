//! Owns MeterUsage's command line: the dimensions sold, the metering hour, the usage file,
//! the `--meter-fault`s, and their `--help` text.

use std::path::PathBuf;
use std::time::Duration;

use crate::ops::meter_usage::faults::{MeterFaultSpec, Stage, ALL_METER_FAULTS};

/// AWS's metering hour.
pub const AWS_HOUR: Duration = Duration::from_secs(3600);
/// The dimension sold when no `--dimension` is given.
pub const DEFAULT_DIMENSION: &str = "nodes";
/// A product has at most this many dimensions (seller guide).
pub const MAX_DIMENSIONS: usize = 24;
/// The records AWS accepts this many metering hours in the past, no more.
pub const WINDOW_HOURS: i64 = 6;

/// What MeterUsage sells and how it fails (the command line).
#[derive(Debug, Clone)]
pub struct MeterConfig {
    /// `--dimension`, in order (default [`DEFAULT_DIMENSION`]).
    pub dimensions: Vec<String>,
    /// `--metering-hour`: the clock hour records are rounded down to (default 3600 s).
    pub hour: Duration,
    /// `--usage-file`: where every accepted record is appended.
    pub usage_file: Option<PathBuf>,
    pub faults: Vec<MeterFaultSpec>,
    /// Whether a `--dimension` was given (the first one replaces the default).
    named: bool,
}

impl Default for MeterConfig {
    fn default() -> Self {
        MeterConfig {
            dimensions: vec![DEFAULT_DIMENSION.into()],
            hour: AWS_HOUR,
            usage_file: None,
            faults: Vec::new(),
            named: false,
        }
    }
}

/// The command-line flags [`MeterConfig::set`] takes (each with a value).
pub const FLAGS: &[&str] = &["dimension", "metering-hour", "usage-file", "meter-fault"];

impl MeterConfig {
    /// Sets `--FLAG VALUE` (one of [`FLAGS`]); `parse_duration` reads durations as the rest
    /// of the command line does.
    pub fn set(
        &mut self,
        flag: &str,
        value: &str,
        parse_duration: fn(&str) -> Result<Duration, String>,
    ) -> Result<(), String> {
        match flag {
            "dimension" => {
                let n = value.chars().count();
                if n == 0
                    || n > 255
                    || value
                        .chars()
                        .any(|c| c == ',' || c.is_whitespace() || c.is_control())
                {
                    return Err(format!("--dimension: {value:?} must be 1 to 255 characters, without commas or spaces (a dimension's API name)"));
                }
                if !self.named {
                    self.dimensions.clear();
                    self.named = true;
                }
                if self.dimensions.iter().any(|d| d == value) {
                    return Err(format!("--dimension: {value} is given twice"));
                }
                if self.dimensions.len() == MAX_DIMENSIONS {
                    return Err(format!(
                        "--dimension: a product has at most {MAX_DIMENSIONS} dimensions"
                    ));
                }
                self.dimensions.push(value.into());
            }
            "metering-hour" => {
                let d = parse_duration(value).map_err(|m| format!("--metering-hour: {m}"))?;
                if d.subsec_nanos() != 0 || d < Duration::from_secs(1) || d > AWS_HOUR {
                    return Err(format!("--metering-hour: {value:?} must be whole seconds from 1s to 3600s (AWS's hour)"));
                }
                self.hour = d;
            }
            "usage-file" => {
                if value.is_empty() {
                    return Err("--usage-file: empty path".into());
                }
                self.usage_file = Some(PathBuf::from(value));
            }
            "meter-fault" => {
                self.faults.push(
                    MeterFaultSpec::parse(value, parse_duration)
                        .map_err(|m| format!("--meter-fault: {m}"))?,
                );
            }
            other => return Err(format!("unknown MeterUsage flag --{other}")),
        }
        Ok(())
    }

    /// The metering hour in milliseconds.
    pub fn hour_ms(&self) -> i64 {
        self.hour.as_millis() as i64
    }

    /// The WARN a shortened hour deserves (`None` with AWS's hour).
    pub fn short_hour_warning(&self) -> Option<String> {
        (self.hour != AWS_HOUR).then(|| {
            format!(
                "WARN: --metering-hour {}s: MeterUsage rounds timestamps down to {}-second hours and accepts records {} of them old; AWS's hour is 3600 s (a test clock, not AWS's)",
                self.hour.as_secs(),
                self.hour.as_secs(),
                WINDOW_HOURS
            )
        })
    }
}

/// The options part of `--help` for MeterUsage.
pub fn options_help() -> &'static str {
    "\
  --dimension NAME           a usage dimension sold for MeterUsage (repeatable, at most 24;
                             the API name the seller registered). Default: nodes
  --metering-hour DURATION   the clock hour MeterUsage rounds Timestamp down to and locks
                             per caller and dimension (default 3600s; whole seconds from
                             1s, e.g. 2s for tests): a WARN says it is not AWS's hour
  --usage-file FILE          append every accepted MeterUsage record (what the buyer is
                             billed) to FILE as one JSON line, flushed before the answer;
                             `mpgate-emulator usage --usage-file FILE` prints them
  --meter-fault [MeterUsage=]FAULT[@AFTER][*COUNT][~DURATION]
                             fail MeterUsage with FAULT (below): the first AFTER calls it
                             could apply to are answered normally, then COUNT calls fail
                             (default: all), and with ~DURATION only for that long from
                             the first call it failed: an outage (throttle@1~18s, nine
                             2-second hours). Repeatable; the first listed one that applies
                             wins. The initial-call faults apply only to callers with no
                             record accepted yet, and count only their calls
"
}

/// The MeterUsage section of `--help`: the faults and the rules.
pub fn section_help() -> String {
    let faults: String = ALL_METER_FAULTS
        .iter()
        .map(|f| {
            let what = match (f.stage(), f.error()) {
                (Stage::Before, Some(e)) => format!("{} {}", e.status, e.error_type),
                (Stage::Before, None) => "the Metering fault of that name".into(),
                (Stage::LostAnswer, Some(e)) => {
                    format!("recorded, then {} {}", e.status, e.error_type)
                }
                (Stage::LostAnswer, None) => "recorded, then no answer (as hang/drop)".into(),
            };
            let when = if f.initial_call_only() {
                "; initial call only"
            } else {
                ""
            };
            let modelled = if f.error().is_some() && !f.modelled() {
                " (not in MeterUsage's model)"
            } else {
                ""
            };
            format!("  {:<32}{what}{modelled}{when}\n", f.name())
        })
        .collect();
    format!(
        "\
MeterUsage faults (--meter-fault; status, error):
{faults}
MeterUsage (custom metering): AWSMPMeteringService.MeterUsage, signed for aws-marketplace,
with RegisterUsage's caller model (a long-term key is PlatformNotSupportedException unless
--long-term-keys-are-tasks; a task in another --task-region InvalidEndpointRegionException,
MeterUsage's error for it). The caller is the credentials' access key id: one session, one
pod or task (run hands its command a pair of its own). Checks, in order: the body's shape
(ValidationException: Timestamp a number of epoch seconds, UsageQuantity 0 to 2147483647,
ClientToken 1 to 64 characters); the caller model; --rate-limit; --meter-fault; the product
code (InvalidProductCodeException); the subscription, on a caller's initial call only
(CustomerNotEntitledException once SIGUSR1 ended it: callers with a record keep metering);
the dimension sold (InvalidUsageDimensionException); the Timestamp (more than 6 metering
hours old, or in an hour that has not begun: TimestampOutOfBoundsException); the tags
(InvalidTagException: 1 to 5 per allocation, keys 1-100 and values 1-256 characters of
[a-zA-Z0-9+ -=._:/@], no key twice) and allocations (InvalidUsageAllocationsException: 1 to
2500, summing to UsageQuantity, no two with the same set of tags); a ClientToken used
before with other members (IdempotencyConflictException, 409); then the hour: ONE record per
caller, dimension and metering hour (Timestamp rounded down). A repeat identical after
rounding (same UsageQuantity, same UsageAllocations in the same order) gets the same
MeteringRecordId and bills nothing more; any other is DuplicateRequestException. DryRun
goes through every check, records nothing and answers MeteringRecordId DryRunOperation.
--record lines of MeterUsage calls add caller, usageDimension, usageQuantity, timestamp,
hour, dryRun, clientToken, usageAllocations, meteringRecordId, recorded (billed by this
call, even when a processed-then-* fault lost the answer) and replayed (an identical
repeat).
"
    )
}
