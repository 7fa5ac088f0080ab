//! Owns usage pricing's hand-over: the metering agent started, the workload supervised beside it (or none: a sidecar), the end reported.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use crate::agent::{self, Agent, SOCKET_FILE, SOCKET_VARIABLE};
use crate::check::{Facts, Kept};
use crate::config::{ConfigError, Pricing};
use crate::exit::Failure;
use crate::handover::plan::Environment;
use crate::handover::result::{self, fail};
use crate::outcome::Outcome;
use crate::report::Reporter;
use crate::supervisor::{self, Ended, Signals};

/// Usage pricing after the start's MeterUsage: the agent, and the workload if there is one.
pub struct Metering {
    pub facts: Facts,
    pub env: Environment,
    pub kept: Kept,
    pub signals: Signals,
}

impl Metering {
    /// Runs the agent (and the workload) to the end, then reports how it ended.
    pub async fn run(self, reporter: &Reporter) -> ExitCode {
        let Metering {
            mut facts,
            mut env,
            kept,
            signals,
        } = self;
        let (Some(config), Some(ledger)) = (kept.config, kept.ledger) else {
            unreachable!("a metered start keeps its configuration and ledger");
        };
        let Pricing::Usage(usage) = &config.pricing else {
            unreachable!("the metering agent is usage pricing's");
        };
        let socket = match socket_path(usage.socket.clone(), ledger.dir.clone()) {
            Ok(socket) => socket,
            Err(e) => return fail(&Failure::Config(e), &facts, reporter),
        };
        let settings = agent::Settings {
            dimensions: usage.dimensions.clone(),
            metering_hour: usage.metering_hour,
            socket: socket.clone(),
            listen: usage.listen,
            jitter: usage.send_jitter,
            send_zero: usage.send_zero,
            deadline: config.timeout,
            flush_timeout: usage.flush_timeout,
            scrape: usage.scrape.clone(),
            workload: !facts.command.is_empty(),
        };
        let grace = usage.grace;
        let start = facts.usage.as_ref().and_then(|u| u.start.clone());
        let shared = Arc::new((*config).clone());
        let mut agent =
            match Agent::start(settings, ledger, kept.meter, shared, start.as_ref()).await {
                Ok(agent) => agent,
                Err(e) => {
                    return fail(
                        &Failure::Config(ConfigError::Agent(e.to_string())),
                        &facts,
                        reporter,
                    )
                }
            };
        env.set
            .push((SOCKET_VARIABLE, socket.to_string_lossy().into_owned()));
        if let Some(url) = agent.url() {
            env.set.push((agent::URL_VARIABLE, url.to_owned()));
        }
        let set = env.pairs();
        let ended = if facts.command.is_empty() {
            supervisor::alone(signals, &mut [&mut agent]).await
        } else {
            let mut workload = supervisor::Workload {
                command: &facts.command,
                set: &set,
                remove: &env.remove,
                grace,
                inherit: None,
            };
            supervisor::run(&mut workload, signals, &mut [&mut agent]).await
        };
        // Closed whatever happens next, so that the next start needs no repair.
        let unsent = agent.close().await.map(|s| s.unsent());
        if let Some(usage) = &mut facts.usage {
            usage.sent = Some(agent.sent());
            usage.unsent = unsent;
        }
        let verified = start.is_some();
        let (exit_code, loss) = match ended {
            Ended::Exited { exit_code, loss } => (exit_code, loss),
            Ended::NotStarted { signal, name } => {
                return fail(&Failure::Interrupted { signal, name }, &facts, reporter)
            }
            Ended::Failed(error) => return fail(&Failure::Exec(error), &facts, reporter),
        };
        let (exit_code, outcome, message) = match loss {
            Some(loss) => result::lost(loss, reporter),
            None => {
                let outcome = if verified {
                    Outcome::Verified
                } else {
                    Outcome::Unverified
                };
                let message = if facts.command.is_empty() {
                    "the metering sidecar stopped".to_string()
                } else {
                    format!("the workload exited with {exit_code}")
                };
                (exit_code, outcome, message)
            }
        };
        let unsent = facts
            .usage
            .as_ref()
            .and_then(|u| u.unsent.clone())
            .unwrap_or_default();
        if unsent.is_empty() {
            tracing::info!(
                exit_code,
                "{message}; every acknowledged unit is recorded by AWS"
            );
        } else {
            tracing::warn!(
                exit_code,
                unsent = %serde_json::to_string(&unsent).unwrap_or_default(),
                "{message}; usage not yet recorded by AWS stays in the ledger for the next start{}",
                if config_has_ledger(&facts) { "" } else { " (in memory: lost now)" }
            );
        }
        let last = result::report(
            &facts,
            outcome == Outcome::Verified,
            outcome,
            exit_code,
            None,
            None,
            &message,
        );
        if let Err(e) = reporter.write_result(&last) {
            tracing::warn!(error = %e, "cannot write the result file");
        }
        ExitCode::from(exit_code)
    }
}

fn config_has_ledger(facts: &Facts) -> bool {
    facts.usage.as_ref().is_some_and(|u| u.ledger.is_some())
}

/// The push API's socket: the one configured, else in the ledger directory, else in a
/// private directory made for it (the workload finds it in `MPGATE_USAGE_SOCKET`).
fn socket_path(
    configured: Option<PathBuf>,
    ledger: Option<PathBuf>,
) -> Result<PathBuf, ConfigError> {
    if let Some(socket) = configured {
        return Ok(socket);
    }
    if let Some(dir) = ledger {
        return Ok(dir.join(SOCKET_FILE));
    }
    use std::os::unix::fs::DirBuilderExt;
    let random = crate::nonce::generate().map_err(|e| ConfigError::Random(e.to_string()))?;
    let dir = std::env::temp_dir().join(format!("mpgate-usage-{}", &random[..16]));
    // Searchable by the group, so the workload's group reaches the socket (mode 0660).
    std::fs::DirBuilder::new()
        .mode(0o710)
        .create(&dir)
        .map_err(|e| {
            ConfigError::Agent(format!(
                "cannot create a directory for the usage socket in {}: {e}; set MPGATE_USAGE_SOCKET or MPGATE_LEDGER_DIR",
                std::env::temp_dir().display()
            ))
        })?;
    Ok(dir.join(SOCKET_FILE))
}
