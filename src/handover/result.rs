//! Owns what the result file and the termination log say when mpgate hands over, or fails to.

use std::process::ExitCode;

use crate::check::{Facts, UsageFacts};
use crate::exit::Failure;
use crate::handover::plan::LicenseFacts;
use crate::outcome::Outcome;
use crate::report::{now_rfc3339, Report, Reporter};
use crate::supervisor::Loss;

pub(crate) fn report<'a>(
    facts: &'a Facts,
    entitled: bool,
    outcome: Outcome,
    exit_code: u8,
    signature: Option<&'a str>,
    license: Option<&'a LicenseFacts>,
    message: &'a str,
) -> Report<'a> {
    let start = facts.usage.as_ref().and_then(|u| u.start.as_ref());
    Report {
        entitled,
        outcome,
        exit_code,
        pricing: facts.pricing,
        pinned: crate::pinned::is_pinned(),
        product_code: facts.product_code.as_deref(),
        public_key_version: facts.public_key_version,
        nonce: facts.nonce.as_deref(),
        // Only a verified init-mode check's: its nonce is derived for this boot and pod, which
        // a re-check can derive again; an exec's is bound to the process it exec'd.
        salt: facts
            .salt
            .as_deref()
            .filter(|_| facts.command.is_empty() && signature.is_some()),
        boot_id: facts.boot_id.as_deref(),
        pod_uid: facts.pod_uid.as_deref(),
        signature,
        product_sku: facts.product_sku.as_deref(),
        license_arn: license.map(|l| l.arn.as_str()),
        entitlements: license.map(|l| &l.entitlements),
        expiration: license.map(|l| l.expiration.as_str()),
        checked_in: license.map(|l| l.checked_in),
        // Present exactly when `entitled` is: the time of the check that verified it (a held
        // seat keeps its start's). A lost license is not entitled, so it has none.
        verified_at: match (entitled, license, start) {
            (false, ..) => None,
            (true, Some(l), _) => l.verified_at.clone(),
            (true, None, Some(start)) => Some(start.timestamp.clone()),
            (true, None, None) => signature.and_then(|_| now_rfc3339()),
        },
        usage: facts.usage.as_ref().map(usage_report),
        attempts: facts.call.attempts,
        request_id: facts.call.request_id.as_deref(),
        warnings: &facts.call.warnings,
        message,
    }
}

/// The result file's `usage`: the dimensions, the metering hour, the ledger, the start's
/// record and, at the end, this run's records and what is not recorded yet.
fn usage_report(usage: &UsageFacts) -> serde_json::Value {
    let mut report = serde_json::json!({
        "dimensions": usage.dimensions,
        "meteringHourSeconds": usage.metering_hour.as_secs(),
        "ledger": usage.ledger,
        "start": usage.start,
    });
    if let Some(sent) = &usage.sent {
        report["sent"] = serde_json::json!(sent);
    }
    if let Some(unsent) = &usage.unsent {
        report["unsent"] = serde_json::json!(unsent);
    }
    report
}

pub fn fail(failure: &Failure, facts: &Facts, reporter: &Reporter) -> ExitCode {
    let message = failure.to_string();
    let request_id = facts.call.request_id.as_deref();
    tracing::error!(
        exit_code = failure.exit_code(),
        outcome = failure.outcome().as_str(),
        requestId = request_id,
        "{message}"
    );
    let report = report(
        facts,
        false,
        failure.outcome(),
        failure.exit_code(),
        None,
        None,
        &message,
    );
    if let Err(e) = reporter.write_result(&report) {
        tracing::warn!(error = %e, "cannot write the result file");
    }
    match request_id {
        // AWS Support asks for it; the pod's events then carry it.
        Some(id) => reporter.write_termination_log(&format!("{message} (request ID {id})")),
        None => reporter.write_termination_log(&message),
    }
    ExitCode::from(failure.exit_code())
}

/// A duty's loss that ended a supervised run (a seat lost, the agent's account refused):
/// logged once, written to the termination log, and carried into the result file.
pub fn lost(loss: Loss, reporter: &Reporter) -> (u8, Outcome, String) {
    tracing::error!(
        exit_code = loss.exit_code,
        outcome = loss.outcome.as_str(),
        "{}",
        loss.message
    );
    reporter.write_termination_log(&loss.message);
    (loss.exit_code, loss.outcome, loss.message)
}
