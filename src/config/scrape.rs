//! Owns usage pricing's pull settings: the metric each scraped dimension is read from (`NAME=METRIC{...}:KIND*FACTOR`), the URL and the interval.

use std::time::Duration;

use crate::config::error::{quoted, ConfigError};

/// How a dimension's hourly quantity comes from its metric's samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A counter's increase over the hour, reset-aware.
    Counter,
    /// The largest sample of a gauge in the hour.
    Max,
    /// The mean of a gauge's samples in the hour.
    Avg,
}

/// Where one dimension's usage is read: the samples of `metric` whose labels include every
/// one of `labels` (summed, when several series match).
#[derive(Clone, Debug, PartialEq)]
pub struct Source {
    pub dimension: String,
    pub metric: String,
    /// (name, value) as written in the exposition format (escapes kept).
    pub labels: Labels,
    pub kind: Kind,
    /// Units per metric unit; the hour's quantity is rounded up after scaling.
    pub factor: f64,
}

/// The workload's metrics endpoint, on loopback.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// `host:port`, a loopback address.
    pub authority: String,
    pub addr: std::net::SocketAddr,
    /// The path and query, e.g. `/metrics`.
    pub path: String,
}

/// What the agent pulls, and how often.
#[derive(Clone, Debug)]
pub struct Scrape {
    pub target: Target,
    pub interval: Duration,
    pub sources: Vec<Source>,
}

pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(15);
const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// A factor scales a metric's unit to the dimension's (e.g. bytes to GB: 1e-9).
const MAX_FACTOR: f64 = 1e9;
const MAX_LABELS: usize = 16;
const MAX_SPEC_CHARS: usize = 1024;

const SPEC_SYNTAX: &str = "NAME=METRIC[{label=\"value\",...}]:counter|max|avg[*FACTOR], e.g. nodes=active_nodes:max or gb_scanned=bytes_scanned_total:counter*1e-9";

/// Splits `MPGATE_DIMENSIONS` at the commas outside a label selector's braces and quotes.
pub fn split_list(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut quoted, mut escaped, mut start) = (0u32, false, false, 0);
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' if depth > 0 => quoted = !quoted,
            '{' if !quoted => depth += 1,
            '}' if !quoted => depth = depth.saturating_sub(1),
            ',' if depth == 0 && !quoted => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
        .into_iter()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// A dimension's source from the text after `NAME=`; `setting` names where it was given.
pub fn source(dimension: &str, spec: &str, setting: &'static str) -> Result<Source, ConfigError> {
    let bad = |why: &str| ConfigError::InvalidSource {
        setting,
        spec: quoted(&format!("{dimension}={spec}")),
        why: format!("{why}; write {SPEC_SYNTAX}"),
    };
    if spec.len() > MAX_SPEC_CHARS {
        return Err(bad("it is too long"));
    }
    // A metric name may hold ':' itself: the kind is after the last one (or the selector).
    let name_end = match spec.find('{') {
        Some(i) => i,
        None => spec.rfind(':').unwrap_or(spec.len()),
    };
    let metric = &spec[..name_end];
    if metric.is_empty()
        || metric.starts_with(|c: char| c.is_ascii_digit())
        || !metric
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    {
        return Err(bad(
            "no metric name (letters, digits, '_' and ':', not first a digit)",
        ));
    }
    let mut rest = &spec[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let (parsed, after) = selector(inner).map_err(|why| bad(&why))?;
        labels = parsed;
        rest = after;
    }
    let Some(rest) = rest.strip_prefix(':') else {
        return Err(bad("no ':counter', ':max' or ':avg' after the metric"));
    };
    let (kind, factor) = match rest.split_once('*') {
        Some((kind, factor)) => (kind, Some(factor)),
        None => (rest, None),
    };
    let kind = match kind {
        "counter" => Kind::Counter,
        "max" => Kind::Max,
        "avg" => Kind::Avg,
        _ => return Err(bad("the kind is none of counter, max, avg")),
    };
    let factor = match factor {
        None => 1.0,
        Some(text) => match text.parse::<f64>() {
            Ok(f) if f.is_finite() && f > 0.0 && f <= MAX_FACTOR => f,
            _ => return Err(bad("the factor is not a number above 0 and at most 1e9")),
        },
    };
    Ok(Source {
        dimension: dimension.to_owned(),
        metric: metric.to_owned(),
        labels,
        kind,
        factor,
    })
}

/// A selector's (name, value) pairs.
type Labels = Vec<(String, String)>;

/// A selector's `name="value"` pairs up to its `}`, and the text after it.
fn selector(mut text: &str) -> Result<(Labels, &str), String> {
    let mut labels = Vec::new();
    loop {
        if let Some(after) = text.strip_prefix('}') {
            return Ok((labels, after));
        }
        if labels.len() == MAX_LABELS {
            return Err(format!("more than {MAX_LABELS} labels"));
        }
        let end = text
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(text.len());
        let name = &text[..end];
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            return Err("a label name is missing or malformed".into());
        }
        let Some(value) = text[end..].strip_prefix("=\"") else {
            return Err(format!("label {name} has no =\"value\""));
        };
        let mut escaped = false;
        let close = value.char_indices().find_map(|(i, c)| match c {
            _ if escaped => {
                escaped = false;
                None
            }
            '\\' => {
                escaped = true;
                None
            }
            '"' => Some(i),
            _ => None,
        });
        let Some(close) = close else {
            return Err(format!("label {name}'s value has no closing quote"));
        };
        labels.push((name.to_owned(), value[..close].to_owned()));
        text = &value[close + 1..];
        text = text.strip_prefix(',').unwrap_or(text);
    }
}

/// The metrics URL: `http://` to a loopback address (an IP or `localhost`) with a port, then
/// a path. Never beyond the pod: the workload's own metrics, read where only it serves them.
pub fn target(text: &str, setting: &'static str) -> Result<Target, ConfigError> {
    let bad = || {
        ConfigError::InvalidValue {
        name: setting,
        value: text.to_owned(),
        expected: "use http://127.0.0.1:PORT/PATH (or localhost, [::1]): the workload's Prometheus metrics on loopback, e.g. http://127.0.0.1:9100/metrics",
    }
    };
    let rest = text.strip_prefix("http://").ok_or_else(bad)?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = authority.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0).ok_or_else(bad)?;
    let ip: std::net::IpAddr = match host {
        "localhost" => std::net::Ipv4Addr::LOCALHOST.into(),
        _ => host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
            .parse()
            .map_err(|_| bad())?,
    };
    if !ip.is_loopback()
        || path.len() > 1024
        || path
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '#')
    {
        return Err(bad());
    }
    Ok(Target {
        authority: authority.to_owned(),
        addr: (ip, port).into(),
        path: path.to_owned(),
    })
}

/// The interval's bounds: at least 100 ms, and at most half the metering hour (every hour
/// gets samples).
pub fn interval(
    given: Option<Duration>,
    hour: Duration,
    setting: &'static str,
) -> Result<Duration, ConfigError> {
    let interval = given.unwrap_or(DEFAULT_INTERVAL.min(hour / 2));
    if interval < MIN_INTERVAL || interval > hour / 2 {
        return Err(ConfigError::InvalidValue {
            name: setting,
            value: format!("{}ms", interval.as_millis()),
            expected: "use a duration from 100ms to half the metering hour (default 15s)",
        });
    }
    Ok(interval)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_splits_outside_selectors() {
        assert_eq!(
            split_list(r#"a, b=m{x="1,2",y="q\"}"}:max ,c=n:counter"#),
            ["a", r#"b=m{x="1,2",y="q\"}"}:max"#, "c=n:counter"]
        );
    }

    #[test]
    fn a_source_names_metric_labels_kind_and_factor() {
        let s = source(
            "gb",
            r#"bytes_total{job="api",zone="a\"b"}:counter*1e-9"#,
            "--dimension",
        )
        .unwrap();
        assert_eq!(s.metric, "bytes_total");
        assert_eq!(
            s.labels,
            [
                ("job".to_string(), "api".to_string()),
                ("zone".to_string(), r#"a\"b"#.to_string())
            ]
        );
        assert_eq!((s.kind, s.factor), (Kind::Counter, 1e-9));
        let s = source("nodes", "up:max", "--dimension").unwrap();
        assert_eq!((s.kind, s.factor, s.labels.len()), (Kind::Max, 1.0, 0));
        let s = source("n", "job:nodes:avg*2", "--dimension").unwrap();
        assert_eq!(
            (s.metric.as_str(), s.kind, s.factor),
            ("job:nodes", Kind::Avg, 2.0)
        );
        for bad in [
            "",
            ":max",
            "9m:max",
            "m",
            "m:sum",
            "m:max*0",
            "m:max*-1",
            "m:max*NaN",
            "m:max*inf",
            "m{a=1}:max",
            "m{a=\"1}:max",
            "m{=\"1\"}:max",
            "m{a=\"1\"}",
            "m-x:max",
        ] {
            let e = source("d", bad, "MPGATE_DIMENSIONS")
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("MPGATE_DIMENSIONS") && e.contains("counter|max|avg"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn the_target_is_http_on_loopback() {
        let t = target("http://127.0.0.1:9100/metrics?x=1", "--scrape").unwrap();
        assert_eq!((t.addr.port(), t.path.as_str()), (9100, "/metrics?x=1"));
        assert_eq!(target("http://[::1]:80", "--scrape").unwrap().path, "/");
        assert!(target("http://localhost:9100/m", "--scrape").is_ok());
        for bad in [
            "https://127.0.0.1:1/m",
            "http://10.0.0.1:9100/m",
            "http://example.com:9100/m",
            "http://127.0.0.1/m",
            "http://127.0.0.1:0/m",
            "http://127.0.0.1:1/a b",
        ] {
            let e = target(bad, "MPGATE_SCRAPE_URL").unwrap_err().to_string();
            assert!(
                e.contains("MPGATE_SCRAPE_URL") && e.contains("loopback"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn the_interval_is_100ms_to_half_an_hour() {
        let hour = Duration::from_secs(3600);
        assert_eq!(interval(None, hour, "x").unwrap(), DEFAULT_INTERVAL);
        assert_eq!(
            interval(None, Duration::from_secs(2), "x").unwrap(),
            Duration::from_secs(1)
        );
        for bad in [Duration::from_millis(50), Duration::from_secs(1801)] {
            let e = interval(Some(bad), hour, "MPGATE_SCRAPE_INTERVAL").unwrap_err();
            assert!(e.to_string().contains("MPGATE_SCRAPE_INTERVAL"), "{e}");
        }
    }
}
