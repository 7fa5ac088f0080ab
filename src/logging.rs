//! Owns logging: stderr only (stdout belongs to the workload), text on a terminal, JSON lines otherwise.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::{
    filter::{filter_fn, Targets},
    layer::{Context, SubscriberExt},
    util::SubscriberInitExt,
    Layer,
};

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
    let user = crate::settings::var("MPGATE_LOG").filter(|v| !v.trim().is_empty());
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
        .with(layer.with_filter(filter_fn(|meta| !is_sdk_warning(meta))))
        // After the formatter: an event logged from inside `on_event` would otherwise
        // overwrite the per-layer filter's decision for the event being handled.
        .with(ShortSdkWarnings::default())
        .init();
    rejected
}

/// The SDK logs the errors it recovers from at WARN through `DisplayErrorContext`, which
/// appends the error's Debug dump (raw HTTP responses, headers, bodies) to the message: when
/// IMDS refuses, a line of several hundred characters. Those warnings are logged again, once
/// each, as one short sentence, and the formatter drops the originals.
#[derive(Default)]
struct ShortSdkWarnings {
    seen: Mutex<HashSet<String>>,
}

fn is_sdk_warning(meta: &Metadata<'_>) -> bool {
    *meta.level() == Level::WARN && meta.target().starts_with("aws_")
}

impl<S: Subscriber> Layer<S> for ShortSdkWarnings {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        if !is_sdk_warning(event.metadata()) {
            return;
        }
        let mut sentence = Sentence::default();
        event.record(&mut sentence);
        let text = sentence.text();
        let first = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(text.clone());
        if first {
            tracing::warn!(target: "mpgate::sdk", "AWS SDK: {text}");
        }
    }
}

/// An SDK event's message, its other fields and its error on one line, each value without
/// its Debug dump: `failed to load region from IMDS: request forbidden...`.
#[derive(Default)]
struct Sentence {
    message: String,
    fields: Vec<String>,
    error: Option<String>,
}

impl Sentence {
    fn text(&self) -> String {
        let mut text = self.message.trim_end_matches('.').to_string();
        if !self.fields.is_empty() {
            let _ = write!(text, " ({})", self.fields.join(", "));
        }
        if let Some(error) = &self.error {
            let _ = write!(text, ": {error}");
        }
        text
    }

    fn record(&mut self, field: &Field, value: &str) {
        let value = without_debug_dump(value).to_string();
        match field.name() {
            "message" => self.message = value,
            "err" | "error" => self.error = Some(value),
            name => self.fields.push(format!("{name} {value}")),
        }
    }
}

impl Visit for Sentence {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.record(field, &format!("{value:?}"));
    }
}

/// `DisplayErrorContext` writes `chain (Debug)`: the chain is kept, from the first ` (` that
/// opens a Rust type's Debug form (`TypeName(` or `TypeName {`) on.
fn without_debug_dump(text: &str) -> &str {
    let mut from = 0;
    while let Some(at) = text[from..].find(" (").map(|i| i + from) {
        let rest = &text[at + 2..];
        let name_len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let starts_type = rest.starts_with(|c: char| c.is_ascii_uppercase())
            && (rest[name_len..].starts_with('(') || rest[name_len..].starts_with(" {"));
        if starts_type && text.ends_with(')') {
            return text[..at].trim_end();
        }
        from = at + 2;
    }
    text
}

#[cfg(test)]
mod tests {
    use super::without_debug_dump;

    #[test]
    fn the_sdk_error_context_loses_its_debug_dump() {
        let logged = "failed to load IMDS session token: service error: request forbidden: IMDS is disabled or the caller has insufficient permissions. (FailedToLoadToken(FailedToLoadToken { source: ServiceError(ServiceError { source: TokenError { kind: Forbidden }, raw: Response { status: StatusCode(403) } }) }))";
        assert_eq!(
            without_debug_dump(logged),
            "failed to load IMDS session token: service error: request forbidden: IMDS is disabled or the caller has insufficient permissions."
        );
        assert_eq!(
            without_debug_dump("x is not valid (see the docs)"),
            "x is not valid (see the docs)"
        );
        assert_eq!(
            without_debug_dump("Ec2InstanceMetadata"),
            "Ec2InstanceMetadata"
        );
    }
}
