//! Owns sending: after each metering hour (and a jitter) one MeterUsage per dimension, retries, and the flush of the partial hour at a stop.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::{Rng, TryRngCore};
use tokio::sync::watch;

use crate::aws::{CallError, CallRecord};
use crate::config::Config;
use crate::ledger::{Answer, Ledger, Pending, Rules, Sent};
use crate::metering::meter_usage::{self, rfc3339_ms, Session};
use crate::metering::MeteringError;
use crate::supervisor::Loss;

/// What the sender needs.
pub struct Sender {
    pub ledger: Ledger,
    /// The start's caller; `None` when the start was not verified: connected on first use.
    pub session: Option<Session>,
    pub config: Arc<Config>,
    pub dimensions: Vec<String>,
    pub metering_hour: Duration,
    /// The most a send waits after the hour ends (already at most a tenth of the hour).
    pub jitter: Duration,
    pub send_zero: bool,
    /// The deadline of one MeterUsage (MPGATE_TIMEOUT).
    pub deadline: Duration,
    pub flush_timeout: Duration,
    /// What this run's records were, for the result file.
    pub sent: Arc<Mutex<Vec<serde_json::Value>>>,
    /// The start's record (hour, dimension), to lock in the ledger before the first plan.
    pub start: Option<(u64, String, Sent)>,
}

/// How sending one record ended.
enum Sending {
    /// MeterUsage's answer is in the ledger (recorded, a duplicate, out of the window).
    Settled,
    /// Refused, or the ledger failed: this record waits; the others may go.
    Failed,
    /// Throttled, a 5xx, a network failure (after the SDK's retries): none would go now.
    Unreachable,
}

/// Where the sender says the workload must stop: MeterUsage answered a first record (after a
/// start that could not be verified) with CustomerNotEntitledException.
pub type Lose = watch::Sender<Option<Loss>>;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Locks the start's record (hour, dimension) in the ledger; a failure is a WARN, not a stop.
async fn lock_start(ledger: &Ledger, start: Option<(u64, String, Sent)>) {
    if let Some((hour, dimension, sent)) = start {
        if let Err(e) = ledger.lock(hour, &dimension, sent).await {
            tracing::warn!(
                "cannot lock the start's hour in the ledger ({e}); its usage goes in a later record"
            );
        }
    }
}

impl Sender {
    fn hour_ms(&self) -> u64 {
        (self.metering_hour.as_millis() as u64).max(1)
    }

    /// The first retry after a failed send comes this soon, doubling up to [`Self::max_backoff`].
    fn base_backoff(&self) -> Duration {
        (self.metering_hour / 20).clamp(Duration::from_millis(100), Duration::from_secs(30))
    }

    fn max_backoff(&self) -> Duration {
        (self.metering_hour / 2).clamp(Duration::from_millis(200), Duration::from_secs(300))
    }

    /// Sends what the ledger holds from a previous run, then each hour as it ends, until
    /// `stop` turns true; then flushes the partial hour within the flush timeout.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>, lost: Lose) {
        // Here, after the workload started, not before: the lock's commit is off the start's
        // path. Every plan comes after it. Should it fail, the hour's record is answered
        // DuplicateRequestException and its usage carried on, as for a restarted container.
        lock_start(&self.ledger, self.start.take()).await;
        let mut failures = 0u32;
        loop {
            // A stop cuts a send in flight: the flush sends it again (identical, so AWS answers
            // with the same record ID), and a record cut twice is resent at the next start.
            let ok = tokio::select! {
                biased;
                () = super::push::stopped(&mut stop) => break,
                ok = self.send_planned(false, None, &lost) => ok,
            };
            failures = if ok { 0 } else { failures.saturating_add(1) };
            let now = now_ms();
            let hour = self.hour_ms();
            let next_hour = now - now % hour + hour;
            let jitter = if self.jitter.is_zero() {
                0
            } else {
                // From the OS (as the lease's timing): no seeded generator compiled in.
                rand::rngs::OsRng
                    .unwrap_err()
                    .random_range(0..=self.jitter.as_millis() as u64)
            };
            let mut wait = Duration::from_millis(next_hour - now + jitter);
            if failures > 0 {
                let backoff = self
                    .base_backoff()
                    .saturating_mul(1 << failures.min(16))
                    .min(self.max_backoff());
                let backoff =
                    backoff.mul_f64(rand::rngs::OsRng.unwrap_err().random_range(0.5..=1.0));
                wait = wait.min(backoff);
            }
            tokio::select! {
                biased;
                () = super::push::stopped(&mut stop) => break,
                () = tokio::time::sleep(wait) => {}
            }
        }
        let flush_timeout = self.flush_timeout;
        let flush = async {
            let deadline = tokio::time::Instant::now() + flush_timeout;
            if !self.send_planned(true, Some(deadline), &lost).await {
                tracing::warn!("not every record could be sent within the flush timeout; the ledger keeps the rest for the next start");
            }
        };
        if tokio::time::timeout(flush_timeout, flush).await.is_err() {
            tracing::warn!(
                "the flush did not end within {}; the ledger keeps what was not sent for the next start",
                crate::settings::humantime(flush_timeout)
            );
        }
    }

    /// Plans and sends every record due; true if every one was settled.
    async fn send_planned(
        &mut self,
        flush: bool,
        deadline: Option<tokio::time::Instant>,
        lost: &Lose,
    ) -> bool {
        let rules = Rules {
            now_ms: now_ms(),
            hour_ms: self.hour_ms(),
            flush,
            send_zero: self.send_zero,
            dimensions: self.dimensions.clone(),
        };
        let planned = match self.ledger.plan(rules).await {
            Ok(planned) => planned,
            Err(e) => {
                tracing::error!("cannot plan the hour's records: the ledger failed ({e})");
                return false;
            }
        };
        let mut all = true;
        for pending in planned {
            let limit = match deadline {
                Some(at) => at
                    .saturating_duration_since(tokio::time::Instant::now())
                    .min(self.deadline),
                None => self.deadline,
            };
            if limit.is_zero() {
                return false;
            }
            match self.send(pending, limit, lost).await {
                Sending::Settled => {}
                Sending::Failed => all = false,
                // Metering (or the way to it) is down: each record after this one would wait
                // out its own retries. The next pass, after its backoff, starts again here.
                Sending::Unreachable => return false,
            }
        }
        all
    }

    /// Sends one planned record and records the answer.
    async fn send(&mut self, pending: Pending, limit: Duration, lost: &Lose) -> Sending {
        let mut record = CallRecord::default();
        let timestamp = UNIX_EPOCH + Duration::from_millis(pending.hour_ms);
        let quantity = i32::try_from(pending.quantity).unwrap_or(i32::MAX);
        if self.session.is_none() {
            match meter_usage::connect(&self.config).await {
                Ok(session) => self.session = Some(session),
                Err(e) => {
                    tracing::warn!(
                        "cannot reach Metering to send usage ({e}); the ledger keeps it"
                    );
                    return Sending::Unreachable;
                }
            }
        }
        let Some(session) = &self.session else {
            return Sending::Unreachable;
        };
        let result = session
            .meter(
                (&pending.dimension, quantity),
                &pending.allocations,
                timestamp,
                limit,
                &mut record,
            )
            .await;
        let request_id = record.request_id.clone();
        let hour = rfc3339_ms(pending.hour_ms);
        let mut unreachable = false;
        let answer = match result {
            Ok(meter_usage::Answer::Recorded { record_id }) => Answer::Recorded {
                record_id,
                request_id: request_id.clone(),
            },
            Ok(meter_usage::Answer::Duplicate) => Answer::Duplicate {
                request_id: request_id.clone(),
            },
            Ok(meter_usage::Answer::OutOfBounds) => Answer::OutOfWindow {
                request_id: request_id.clone(),
            },
            Err(error) => {
                // A record may exist when an attempt got no answer, a 5xx or an unusable
                // success; never when every attempt was refused (throttling) or never left.
                let maybe_recorded = record.maybe_processed
                    || matches!(error, MeteringError::Call(CallError::BadAnswer(_)));
                unreachable = matches!(error, MeteringError::Call(CallError::Unreachable(_)));
                let message = error.to_string();
                if matches!(error, MeteringError::NotEntitled { .. }) {
                    let loss = super::loss(error);
                    lost.send_if_modified(|slot| {
                        slot.get_or_insert(loss);
                        true
                    });
                }
                tracing::warn!(
                    dimension = %pending.dimension,
                    hour = %hour,
                    quantity = pending.quantity,
                    requestId = request_id.as_deref(),
                    "MeterUsage failed ({message}); the record stays in the ledger and is sent again"
                );
                Answer::Failed { maybe_recorded }
            }
        };
        match self.ledger.settle(pending.clone(), answer).await {
            Ok(Some(sent)) => {
                self.said(&pending, &sent, &hour);
                Sending::Settled
            }
            Ok(None) if unreachable => Sending::Unreachable,
            Ok(None) => Sending::Failed,
            Err(e) => {
                tracing::error!("cannot record MeterUsage's answer: the ledger failed ({e}); the record is sent again (identical, so AWS answers with the same record ID)");
                Sending::Failed
            }
        }
    }

    /// Logs a settled record, and keeps it for the result file.
    fn said(&self, pending: &Pending, sent: &Sent, hour: &str) {
        match sent.how.as_str() {
            "recorded" => tracing::info!(
                dimension = %pending.dimension,
                hour = %hour,
                quantity = sent.quantity,
                meteringRecordId = sent.metering_record_id.as_deref(),
                requestId = sent.request_id.as_deref(),
                "usage recorded"
            ),
            "duplicate" => tracing::warn!(
                dimension = %pending.dimension,
                hour = %hour,
                quantity = sent.quantity,
                requestId = sent.request_id.as_deref(),
                "this pod or task already has another record of {} for the hour starting {hour} (DuplicateRequestException): the {} units go into the next hour's record",
                pending.dimension, sent.quantity
            ),
            "out-of-window" => tracing::warn!(
                dimension = %pending.dimension,
                hour = %hour,
                quantity = sent.quantity,
                "the hour starting {hour} is older than AWS accepts (TimestampOutOfBoundsException): the {} units of {} go into the next hour's record",
                sent.quantity, pending.dimension
            ),
            _ => tracing::error!(
                dimension = %pending.dimension,
                hour = %hour,
                quantity = sent.quantity,
                "the record of {} {} for the hour starting {hour} got no answer while that hour could still be sent, and AWS now refuses the hour: it may or may not be billed, and is not carried forward so that it is never billed twice",
                sent.quantity, pending.dimension
            ),
        }
        let mut sent_list = crate::http::lock(self.sent.as_ref());
        sent_list.push(serde_json::json!({
            "hour": hour,
            "dimension": pending.dimension,
            "quantity": sent.quantity,
            "how": sent.how,
            "meteringRecordId": sent.metering_record_id,
            "requestId": sent.request_id,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer the test reads back: what a WARN printed.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_start_hour_the_ledger_cannot_lock_is_a_warning_that_says_where_its_usage_goes() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let ledger = Ledger::open(None).unwrap();
            let sent = Sent {
                quantity: 1,
                how: "start".into(),
                metering_record_id: None,
                request_id: None,
            };
            lock_start(&ledger, Some((0, "nodes".into(), sent.clone()))).await;
            assert!(
                captured.0.lock().unwrap().is_empty(),
                "a lock that worked warned"
            );
            // A stopped ledger thread stands for a store that fails the commit.
            ledger.close(0).await.unwrap();
            lock_start(&ledger, Some((0, "nodes".into(), sent))).await;
        });
        let out = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert!(
            out.contains("WARN")
                && out.contains("cannot lock the start's hour in the ledger")
                && out.contains("the ledger's thread has stopped")
                && out.contains("its usage goes in a later record"),
            "{out}"
        );
    }
}
