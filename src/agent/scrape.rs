//! Owns the pull side of the agent: reads the workload's Prometheus metrics every interval and adds each scraped dimension's sample to the ledger.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::Request;
use prom_text_format_parser::{Metric, ScrapeParseError, Type, ValueType};
use tokio::sync::{watch, Notify};

use crate::config::scrape::{Scrape, Source};
use crate::ledger::{Ledger, Prior, Sample};
use crate::metering::meter_usage::hour_start_ms;

/// An exposition larger than this is refused (a workload's metrics are kilobytes).
const MAX_BODY_BYTES: usize = 4 << 20;
/// The most one scrape may take, whatever the interval.
const MAX_TIMEOUT: Duration = Duration::from_secs(10);
/// The last scrape at a stop: the flush waits for it, within the pod's grace period.
const FINAL_TIMEOUT: Duration = Duration::from_secs(1);

pub struct Scraper {
    pub scrape: Scrape,
    pub ledger: Ledger,
    pub metering_hour: Duration,
    /// How a counter's first sample in this process is counted (see [`Prior`]).
    pub first: Prior,
    /// A scrape now (the workload is about to be stopped: its last usage).
    pub now: Arc<Notify>,
}

impl Scraper {
    /// Scrapes every interval until `stop`, then once more (a sidecar's neighbour may still
    /// serve its metrics), so the flush that follows holds the last samples.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut ticks = tokio::time::interval_at(
            tokio::time::Instant::now() + self.scrape.interval,
            self.scrape.interval,
        );
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut state = State {
            url: format!(
                "http://{}{}",
                self.scrape.target.authority, self.scrape.target.path
            ),
            seen: Vec::new(),
            failing: None,
            missing: Vec::new(),
        };
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = self.now.notified() => {}
                _ = stop.changed() => {
                    self.once(&mut state, FINAL_TIMEOUT).await;
                    return;
                }
            }
            let timeout = self
                .scrape
                .interval
                .clamp(Duration::from_secs(1), MAX_TIMEOUT);
            self.once(&mut state, timeout).await;
        }
    }

    async fn once(&self, state: &mut State, timeout: Duration) {
        let text = match tokio::time::timeout(timeout, fetch(&self.scrape)).await {
            Ok(Ok(text)) => text,
            Ok(Err(e)) => return state.failed(&self.scrape, e),
            Err(_) => {
                return state.failed(
                    &self.scrape,
                    format!("no answer within {}s", timeout.as_secs()),
                )
            }
        };
        let (metrics, error) = prom_text_format_parser::parse_scrape(&text);
        if let Some(e) = error {
            let first = match e {
                ScrapeParseError::Parse(text) => text.lines().next().unwrap_or("empty").to_owned(),
                ScrapeParseError::Collect(errors) => errors
                    .first()
                    .map(|e| format!("line {}: {}", e.line_no.start + 1, e.error))
                    .unwrap_or_default(),
            };
            return state.failed(
                &self.scrape,
                format!("the answer is not the Prometheus text format ({first})"),
            );
        }
        let hour_ms = hour_start_ms(SystemTime::now(), self.metering_hour);
        let mut samples = Vec::new();
        for source in &self.scrape.sources {
            let value = match value_of(&metrics, source) {
                Ok(value) => value,
                Err(why) => {
                    state.missing(source, why);
                    continue;
                }
            };
            state.found(source);
            let prior = if state.seen.contains(&source.dimension) {
                Prior::Last
            } else {
                state.seen.push(source.dimension.clone());
                self.first
            };
            samples.push(Sample {
                hour_ms,
                dimension: source.dimension.clone(),
                kind: source.kind,
                factor: source.factor,
                value,
                prior,
            });
        }
        if samples.is_empty() {
            return;
        }
        match self.ledger.sample(samples).await {
            Ok(()) => state.recovered(),
            // The counter's increase is measured again at the next scrape: nothing is lost
            // but a gauge's sample.
            Err(e) => state.failed(&self.scrape, format!("the ledger cannot be written: {e}")),
        }
    }
}

/// What the log has said, so a lasting failure is one WARN and not one per interval.
struct State {
    /// The metrics URL, for the log.
    url: String,
    /// Dimensions sampled at least once in this process.
    seen: Vec<String>,
    failing: Option<String>,
    missing: Vec<String>,
}

impl State {
    fn failed(&mut self, scrape: &Scrape, why: String) {
        if self.failing.as_deref() != Some(why.as_str()) {
            tracing::warn!(
                url = %self.url,
                "cannot read the workload's metrics: {why}; retried every {}ms (MPGATE_SCRAPE_URL), the workload runs on",
                scrape.interval.as_millis()
            );
            self.failing = Some(why);
        }
    }

    fn recovered(&mut self) {
        if self.failing.take().is_some() {
            tracing::info!(
                url = %self.url,
                "the workload's metrics are read again"
            );
        }
    }

    fn missing(&mut self, source: &Source, why: String) {
        if !self.missing.contains(&source.dimension) {
            tracing::warn!(
                dimension = %source.dimension,
                "no usage read for {}: {why}; check the metric named in MPGATE_DIMENSIONS",
                source.dimension
            );
            self.missing.push(source.dimension.clone());
        }
    }

    fn found(&mut self, source: &Source) {
        self.missing.retain(|d| *d != source.dimension);
    }
}

/// GET the metrics over plain HTTP on loopback: the answer's body as text.
async fn fetch(scrape: &Scrape) -> Result<String, String> {
    let stream = tokio::net::TcpStream::connect(scrape.target.addr)
        .await
        .map_err(|e| e.to_string())?;
    let request = Request::get(scrape.target.path.as_str())
        .header("host", scrape.target.authority.as_str())
        // The text format; an OpenMetrics or protobuf answer is not asked for.
        .header("accept", "text/plain;version=0.0.4")
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let (status, body) = super::client::send(Box::new(stream), request, MAX_BODY_BYTES).await?;
    if !status.is_success() {
        return Err(format!("HTTP {status}"));
    }
    String::from_utf8(body.to_vec()).map_err(|_| "the answer is not UTF-8".to_string())
}

/// The sum of the samples named by `source` (a series' full name: a histogram's `_bucket`,
/// `_sum`, `_count` included), or why there is none to use.
fn value_of(metrics: &[Metric], source: &Source) -> Result<f64, String> {
    let mut total = None;
    for metric in metrics {
        let Some(suffix) = source.metric.strip_prefix(metric.name.as_str()) else {
            continue;
        };
        for sample in &metric.samples {
            let name_suffix = match (metric.kind, sample.value.value_type) {
                (_, ValueType::Sum) => "_sum",
                (_, ValueType::Count) => "_count",
                (Type::Histogram, ValueType::Sample) => "_bucket",
                _ => "",
            };
            if suffix != name_suffix
                || !source
                    .labels
                    .iter()
                    .all(|(k, v)| sample.labels.iter().any(|l| l.key == *k && l.value == *v))
            {
                continue;
            }
            let value: f64 = sample
                .value
                .value
                .parse()
                .map_err(|_| format!("{} has no number", source.metric))?;
            if !value.is_finite() || value < 0.0 {
                return Err(format!(
                    "{} is {value}: usage is a finite number of at least 0",
                    source.metric
                ));
            }
            total = Some(total.unwrap_or(0.0) + value);
        }
    }
    total.ok_or_else(|| {
        format!(
            "the metrics have no series {}{}",
            source.metric,
            selector(source)
        )
    })
}

fn selector(source: &Source) -> String {
    if source.labels.is_empty() {
        return String::new();
    }
    let pairs: Vec<String> = source
        .labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{v}\""))
        .collect();
    format!("{{{}}}", pairs.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::scrape::source;

    const TEXT: &str = "# TYPE req_total counter\nreq_total{code=\"200\",job=\"a\"} 10\nreq_total{code=\"500\",job=\"a\"} 5\n# TYPE lat histogram\nlat_bucket{le=\"1\"} 2\nlat_bucket{le=\"+Inf\"} 3\nlat_sum 7.5\nlat_count 3\nnodes 4\nbad -1\n";

    fn value(spec: &str) -> Result<f64, String> {
        let (metrics, error) = prom_text_format_parser::parse_scrape(TEXT);
        assert!(error.is_none(), "{error:?}");
        value_of(&metrics, &source("d", spec, "--dimension").unwrap())
    }

    #[test]
    fn the_matching_series_are_summed() {
        assert_eq!(value("req_total:counter"), Ok(15.0));
        assert_eq!(value("req_total{code=\"500\"}:counter"), Ok(5.0));
        assert_eq!(value("lat_count:counter"), Ok(3.0));
        assert_eq!(value("lat_sum:counter"), Ok(7.5));
        assert_eq!(value("lat_bucket{le=\"+Inf\"}:counter"), Ok(3.0));
        assert_eq!(value("nodes:max"), Ok(4.0));
    }

    #[test]
    fn a_missing_or_negative_series_says_so() {
        let e = value("req_total{code=\"404\"}:counter").unwrap_err();
        assert!(e.contains("no series req_total{code=\"404\"}"), "{e}");
        assert!(value("lat:counter").unwrap_err().contains("no series lat"));
        let e = value("bad:max").unwrap_err();
        assert!(e.contains("at least 0"), "{e}");
    }
}
