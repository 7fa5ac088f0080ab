//! Owns `mpgate-emulator usage`: what the buyer was billed, from the `--usage-file`.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;

use serde_json::{json, Value};

/// Exit code: printed, nothing billed twice.
const EXIT_OK: i32 = 0;
/// Exit code: the file cannot be read, a line is not a record, or a caller was billed twice
/// for one dimension and hour.
const EXIT_BAD: i32 = 1;
/// Exit code: a bad command line.
const EXIT_USAGE: i32 = 2;
/// The largest usage file read (bytes).
const MAX_FILE: u64 = 256 * 1024 * 1024;

/// `usage`'s help.
pub fn help() -> &'static str {
    "\
Usage: mpgate-emulator usage --usage-file FILE [--json]

Prints what the buyer was billed: every MeterUsage record the emulator accepted into FILE
(serve or run with --usage-file FILE), one per caller, dimension and metering hour, sorted
by caller, dimension and hour, then the total of each dimension. Columns: caller (the
access key id: one pod or task), dimension, hour (the metering hour's start, UTC), quantity,
metering record id. --json prints one JSON document instead:
  {\"records\":[{\"caller\",\"dimension\",\"hour\",\"quantity\",\"meteringRecordId\",
  \"allocations\"}],\"totals\":{\"DIMENSION\":QUANTITY},\"callers\":N}
Exit 0; 1 when FILE cannot be read, a line is not a record, or one caller has two records
for one dimension and hour (billed twice: the emulators that appended to FILE did not share
their book); 2 for a bad command line.
"
}

/// One record of the usage file.
struct Line {
    caller: String,
    dimension: String,
    hour: String,
    hour_ms: i64,
    quantity: i64,
    id: String,
    allocations: Value,
}

/// `mpgate-emulator usage ARGS`: returns the exit code.
pub fn main(args: Vec<OsString>) -> i32 {
    let mut file: Option<PathBuf> = None;
    let mut as_json = false;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("-h" | "--help") => {
                let _ = std::io::stdout().write_all(help().as_bytes());
                return EXIT_OK;
            }
            Some("--json") => as_json = true,
            Some("--usage-file") => match args.next() {
                Some(v) if !v.is_empty() => file = Some(PathBuf::from(v)),
                _ => return usage_error("--usage-file needs a FILE"),
            },
            Some(other) if other.starts_with("--usage-file=") => {
                file = Some(PathBuf::from(&other["--usage-file=".len()..]));
            }
            _ => return usage_error(&format!("unexpected argument {:?}", arg.to_string_lossy())),
        }
    }
    let Some(file) = file else {
        return usage_error("give --usage-file FILE (the file serve or run appended to)");
    };
    let lines = match read(&file) {
        Ok(lines) => lines,
        Err(e) => {
            eprintln!("mpgate-emulator usage: {e}");
            return EXIT_BAD;
        }
    };
    let mut twice = Vec::new();
    let mut seen: BTreeMap<(&str, &str, i64), &str> = BTreeMap::new();
    for l in &lines {
        if let Some(first) = seen.insert((&l.caller, &l.dimension, l.hour_ms), &l.id) {
            twice.push(format!(
                "caller {} was billed twice for {} in the hour of {}: records {first} and {}",
                l.caller, l.dimension, l.hour, l.id
            ));
        }
    }
    let mut totals: BTreeMap<&str, i64> = BTreeMap::new();
    for l in &lines {
        *totals.entry(&l.dimension).or_default() += l.quantity;
    }
    let callers: std::collections::BTreeSet<&str> =
        lines.iter().map(|l| l.caller.as_str()).collect();
    let mut out = std::io::stdout().lock();
    if as_json {
        let records: Vec<Value> = lines
            .iter()
            .map(|l| {
                json!({"caller": l.caller, "dimension": l.dimension, "hour": l.hour,
                "quantity": l.quantity, "meteringRecordId": l.id, "allocations": l.allocations})
            })
            .collect();
        let doc = json!({"records": records, "totals": totals, "callers": callers.len()});
        let _ = writeln!(out, "{doc}");
    } else {
        let w = lines
            .iter()
            .map(|l| l.caller.len())
            .max()
            .unwrap_or(0)
            .max(6);
        let d = lines
            .iter()
            .map(|l| l.dimension.len())
            .max()
            .unwrap_or(0)
            .max(9);
        let h = lines.iter().map(|l| l.hour.len()).max().unwrap_or(0).max(4);
        let _ = writeln!(
            out,
            "{:<w$}  {:<d$}  {:<h$}  {:>10}  METERING RECORD ID",
            "CALLER", "DIMENSION", "HOUR", "QUANTITY"
        );
        for l in &lines {
            let _ = writeln!(
                out,
                "{:<w$}  {:<d$}  {:<h$}  {:>10}  {}",
                l.caller, l.dimension, l.hour, l.quantity, l.id
            );
        }
        for (dimension, total) in &totals {
            let _ = writeln!(
                out,
                "{:<w$}  {dimension:<d$}  {:<h$}  {total:>10}",
                "TOTAL", ""
            );
        }
        let _ = writeln!(
            out,
            "{} record(s), {} caller(s)",
            lines.len(),
            callers.len()
        );
    }
    drop(out);
    if twice.is_empty() {
        EXIT_OK
    } else {
        for t in &twice {
            eprintln!("mpgate-emulator usage: {t}");
        }
        EXIT_BAD
    }
}

fn usage_error(msg: &str) -> i32 {
    eprintln!("mpgate-emulator usage: {msg} (see mpgate-emulator usage --help)");
    EXIT_USAGE
}

/// The records of `file`, sorted by caller, dimension and hour.
fn read(file: &PathBuf) -> Result<Vec<Line>, String> {
    let meta = std::fs::metadata(file)
        .map_err(|e| format!("cannot read the usage file {}: {e}", file.display()))?;
    if meta.len() > MAX_FILE {
        return Err(format!(
            "the usage file {} is larger than {MAX_FILE} bytes",
            file.display()
        ));
    }
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read the usage file {}: {e}", file.display()))?;
    let mut lines = Vec::new();
    for (n, raw) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let bad = || {
            format!(
                "{} line {}: not a usage record (written by serve --usage-file?): {}",
                file.display(),
                n + 1,
                raw.chars().take(120).collect::<String>()
            )
        };
        let v: Value = serde_json::from_str(raw).map_err(|_| bad())?;
        let s = |k: &str| v[k].as_str().map(str::to_string).ok_or_else(bad);
        lines.push(Line {
            caller: s("caller")?,
            dimension: s("dimension")?,
            hour: s("hour")?,
            hour_ms: v["hourStartMs"].as_i64().ok_or_else(bad)?,
            quantity: v["quantity"].as_i64().ok_or_else(bad)?,
            id: s("meteringRecordId")?,
            allocations: v["allocations"].clone(),
        });
    }
    lines.sort_by(|a, b| {
        (&a.caller, &a.dimension, a.hour_ms).cmp(&(&b.caller, &b.dimension, b.hour_ms))
    });
    Ok(lines)
}
