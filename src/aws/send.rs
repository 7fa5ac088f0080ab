//! Owns sending a call: its deadline and per-attempt timeouts, and the attempt log the messages quote.

use std::fmt::Write as _;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_smithy_runtime_api::{
    box_error::BoxError,
    client::{
        interceptors::{
            context::{
                BeforeTransmitInterceptorContextRef, Error as OperationError,
                FinalizerInterceptorContextRef,
            },
            Intercept,
        },
        orchestrator::{HttpResponse, Metadata},
        result::SdkError,
        runtime_components::RuntimeComponents,
    },
};
use aws_smithy_types::config_bag::ConfigBag;

use crate::aws::result::{causes, CallError, CallRecord};
use crate::aws::retry::{is_final, is_retryable_code, is_throttling};
use crate::aws::service::Service;
use crate::settings::humantime;

/// How an attempt cut by its own timeout is described.
pub const TIMED_OUT: &str = "attempt timed out";
/// How long past the deadline the backstop waits for the SDK's own operation timeout.
const DEADLINE_BACKSTOP: Duration = Duration::from_millis(500);

/// One call: its attempt log, and its deadline as messages write it (`30s`).
pub struct Call {
    pub attempts: Arc<AttemptLog>,
    pub deadline: String,
}

impl Call {
    /// A call whose messages name `deadline`.
    pub fn new(deadline: Duration) -> Self {
        Call {
            attempts: Arc::new(AttemptLog::default()),
            deadline: humantime(deadline),
        }
    }
}

/// Sends a call (pinned by the caller: it is not moved again) within `remaining` (plus a backstop should the SDK ever overrun its own
/// operation timeout); `record` gets the attempts and the last request ID.
pub async fn send<T, E>(
    request: impl Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    call: &Call,
    remaining: Duration,
    record: &mut CallRecord,
) -> Result<Result<T, SdkError<E, HttpResponse>>, CallError> {
    let result = tokio::time::timeout(remaining + DEADLINE_BACKSTOP, request).await;
    {
        let log = call.attempts.lock();
        record.attempts = log.count;
        record.request_id = log.request_id.clone();
        // Cut by the deadline, the attempt in flight may have been processed too.
        record.maybe_processed = log.maybe_processed || result.is_err();
    }
    result.map_err(|_| deadline_passed(&call.deadline, &call.attempts.summary()))
}

pub fn deadline_passed(deadline: &str, tried: &str) -> CallError {
    CallError::Unreachable(format!(
        "no entitlement answer within the {deadline} deadline ({tried}): check the network path to the AWS endpoint (VPC endpoint, NAT, proxy), or raise MPGATE_TIMEOUT"
    ))
}

/// Each attempt gets `attempt`, the call `total` (the rest of the deadline).
pub fn timeouts(attempt: Duration, total: Duration) -> TimeoutConfig {
    let attempt = attempt.min(total);
    TimeoutConfig::builder()
        .connect_timeout(attempt)
        .read_timeout(attempt)
        .operation_attempt_timeout(attempt)
        .operation_timeout(total)
        .build()
}

/// Counts attempts and remembers the last failure, for the final message and the logs.
#[derive(Debug, Default)]
pub struct AttemptLog {
    inner: Mutex<Attempts>,
}

#[derive(Debug, Default, Clone)]
struct Attempts {
    count: u32,
    last: Option<String>,
    /// The last failure the endpoint answered (an HTTP status), which a timeout or network
    /// error on the attempt after it would otherwise hide from the final message.
    last_answer: Option<String>,
    /// The last connection failure (a refused TLS handshake, a reset) that a timed-out attempt
    /// after it would otherwise hide: on a loaded machine the deadline can cut the last try.
    last_connection_failure: Option<String>,
    /// `x-amzn-RequestId` of the last answer: what AWS Support asks for.
    request_id: Option<String>,
    /// Whether the last attempt that ended before its timeout ended in an error status (the
    /// service failing, not the path): on a loaded machine the deadline may cut the try after
    /// a run of 5xx answers, which does not make the service any less failing.
    last_was_error_status: bool,
    /// Whether a failed attempt may have been processed by the service all the same (a 5xx,
    /// a timeout, a connection lost after the request left): its answer is unknown.
    maybe_processed: bool,
}

impl AttemptLog {
    /// Counts an attempt starting; returns its number.
    fn started(&self) -> u32 {
        let mut attempts = self.lock();
        attempts.count += 1;
        attempts.count
    }

    /// Records how the current attempt failed; `status`: the HTTP status it was answered with;
    /// `maybe_processed`: whether the service may have processed it all the same.
    fn failed(&self, what: String, status: Option<u16>, maybe_processed: bool) {
        let mut attempts = self.lock();
        attempts.maybe_processed |= maybe_processed;
        if what != TIMED_OUT {
            attempts.last_was_error_status = status.is_some_and(|s| s >= 400);
        }
        if status.is_some() {
            attempts.last_answer = Some(what.clone());
        } else if what != TIMED_OUT {
            attempts.last_connection_failure = Some(what.clone());
        }
        attempts.last = Some(what);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Attempts> {
        crate::http::lock(&self.inner)
    }

    fn count(&self) -> u32 {
        self.lock().count
    }

    /// Whether the last attempt not cut by its timeout was answered with an error status, not
    /// a connection failure or a broken answer.
    pub fn last_was_error_status(&self) -> bool {
        self.lock().last_was_error_status
    }

    /// How the last attempt failed.
    pub fn last(&self) -> Option<String> {
        self.lock().last.clone()
    }

    /// `3 attempts, last: HTTP 503`, with an earlier answer or connection failure a timeout hid.
    pub fn summary(&self) -> String {
        let attempts = self.lock().clone();
        let count = attempts.count;
        let mut text = format!("{count} attempt{}", if count == 1 { "" } else { "s" });
        if let Some(last) = &attempts.last {
            let _ = write!(text, ", last: {last}");
        }
        let earlier =
            |what: &Option<String>| what.clone().filter(|w| Some(w) != attempts.last.as_ref());
        if let Some(answer) = earlier(&attempts.last_answer) {
            let _ = write!(text, "; the last answer was {answer}");
        }
        if let Some(failure) = earlier(&attempts.last_connection_failure) {
            let _ = write!(text, "; the last connection failure was {failure}");
        }
        text
    }
}

/// Counts a client's attempts and logs the ones that are retried, naming the operation.
#[derive(Debug)]
pub struct AttemptObserver {
    log: Arc<AttemptLog>,
    error_code: fn(&OperationError) -> Option<String>,
}

impl AttemptObserver {
    pub fn new(log: Arc<AttemptLog>, service: &Service) -> Self {
        AttemptObserver {
            log,
            error_code: service.error_code,
        }
    }
}

fn operation(cfg: &ConfigBag) -> &str {
    cfg.load::<Metadata>().map_or("the call", Metadata::name)
}

impl Intercept for AttemptObserver {
    fn name(&self) -> &'static str {
        "mpgate::AttemptObserver"
    }

    fn read_before_attempt(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let attempt = self.log.started();
        tracing::debug!(attempt, "calling {}", operation(cfg));
        Ok(())
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(id) = context
            .response()
            .and_then(|r| r.headers().get("x-amzn-requestid"))
            // A request ID is short and printable; anything else is not AWS's.
            .filter(|id| id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()))
        {
            self.log.lock().request_id = Some(id.to_owned());
        }
        let Some(Err(error)) = context.output_or_error() else {
            return Ok(());
        };
        let status = context.response().map(|r| r.status().as_u16());
        let what = if let Some(code) = error.as_operation_error().and_then(self.error_code) {
            format!("{code} (HTTP {})", status.unwrap_or(0))
        } else if error.is_timeout_error() {
            TIMED_OUT.to_string()
        } else if let Some(connector) = error.as_connector_error() {
            causes(connector)
        } else if let Some(status) = status {
            format!("HTTP {status}")
        } else {
            causes(error)
        };
        // Only failures the SDK retries are news; a final answer is reported once, by the gate.
        let body_cut_off = error.is_response_error() && status.is_some_and(|s| s < 300);
        let retried = !is_final(error)
            && (error.is_timeout_error()
                || error.is_connector_error()
                || body_cut_off
                || status.is_some_and(|s| s >= 500 || s == 429)
                || is_throttling(&what)
                || is_retryable_code(&what));
        // An error answer below 500 was refused before anything was done (throttling, a
        // validation error); a connection never made carried nothing.
        let maybe_processed = match status {
            Some(status) => status >= 500 || body_cut_off,
            None => !error
                .as_connector_error()
                .is_some_and(|c| crate::http::never_sent(c)),
        };
        let attempt = self.log.count();
        let operation = operation(cfg);
        if retried {
            tracing::info!(attempt, error = %what, "{operation} attempt failed; retrying within the deadline");
        } else {
            tracing::debug!(attempt, error = %what, "{operation} attempt failed");
        }
        self.log.failed(what, status, maybe_processed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_keeps_the_last_answer_a_timeout_came_after() {
        let log = AttemptLog::default();
        let record = |what: &str, answered: bool| {
            log.started();
            log.failed(what.into(), answered.then_some(503), answered);
        };
        record("HTTP 503", true);
        assert_eq!(log.summary(), "1 attempt, last: HTTP 503");
        record("attempt timed out", false);
        assert_eq!(
            log.summary(),
            "2 attempts, last: attempt timed out; the last answer was HTTP 503"
        );
        // A try the deadline cut after 5xx answers: the service is still the one failing.
        assert!(log.last_was_error_status());
        assert_eq!(AttemptLog::default().summary(), "0 attempts");

        let log = AttemptLog::default();
        log.started();
        log.failed("TLS handshake failed: alert".into(), None, false);
        log.started();
        log.failed(TIMED_OUT.into(), None, true);
        assert_eq!(
            log.summary(),
            "2 attempts, last: attempt timed out; the last connection failure was TLS handshake failed: alert"
        );
        assert!(!log.last_was_error_status());
    }
}
