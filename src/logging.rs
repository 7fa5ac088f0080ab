//! Owns logging: stderr only (stdout belongs to the workload), text on a terminal, JSON lines otherwise.

use std::io::IsTerminal;

use tracing::level_filters::LevelFilter;
use tracing_subscriber::{filter::Targets, layer::SubscriberExt, util::SubscriberInitExt, Layer};

use crate::config::LogFormat;

/// Ceilings applied on top of MPGATE_LOG: these crates can print signed requests (with a
/// session token) at debug or trace level, which must never reach the logs.
fn secret_safe_caps() -> Targets {
    Targets::new()
        .with_default(LevelFilter::TRACE)
        .with_target("aws_sigv4", LevelFilter::INFO)
        .with_target("aws_smithy_runtime", LevelFilter::DEBUG)
        .with_target("hyper", LevelFilter::DEBUG)
        .with_target("hyper_util", LevelFilter::DEBUG)
}
/// Without MPGATE_LOG: mpgate's own messages at info, the SDK's only when something is wrong.
const DEFAULT_FILTER: &str = "warn,mpgate=info";

/// Starts logging; returns the MPGATE_LOG value if it was unusable (the default is used instead).
pub fn init(format: LogFormat) -> Option<String> {
    let user = std::env::var("MPGATE_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    // `Targets` understands `level` and `target=level` lists without a regex engine, which
    // would double the binary's size for a feature nobody needs in a gate.
    let default = || DEFAULT_FILTER.parse::<Targets>().unwrap_or_default();
    let (filter, rejected) = match user.as_deref().map(str::parse::<Targets>) {
        Some(Ok(filter)) => (filter, None),
        Some(Err(_)) => (default(), user.clone()),
        None => (default(), None),
    };
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let layer = if json {
        layer
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .boxed()
    } else {
        layer
            .without_time()
            .with_target(false)
            .with_ansi(std::io::stderr().is_terminal())
            .boxed()
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(secret_safe_caps())
        .with(layer)
        .init();
    rejected
}
