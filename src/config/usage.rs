//! Owns usage pricing's settings: the product code, the dimensions, the start's dimension and the metering hour.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use crate::cli::Args;
use crate::config::error::{quoted, ConfigError};
use crate::config::pricing::product_code;
use crate::config::scrape;
use crate::pinned::{self, Refused};
use crate::settings::{duration_setting, parse_duration, path_setting, text_setting};

/// A product has at most 24 pricing dimensions (AWS Marketplace seller guide).
pub const MAX_DIMENSIONS: usize = 24;
/// MeterUsage's bound on UsageDimension (its model: 1..=255).
const MAX_DIMENSION_CHARS: usize = 255;
/// AWS's metering hour.
pub const AWS_HOUR: Duration = Duration::from_secs(3600);

/// What a usage-priced (custom metering) product reports with MeterUsage.
#[derive(Clone, Debug)]
pub struct Usage {
    pub product_code: String,
    /// The dimension API names, in the order given (or pinned).
    pub dimensions: Vec<String>,
    /// The dimension of the start's MeterUsage of quantity 0.
    pub start_dimension: String,
    /// AWS's hour, or `MPGATE_METERING_HOUR`'s for tests and demos.
    pub metering_hour: Duration,
    /// Where acknowledged usage is kept until AWS recorded it; `None`: in memory.
    pub ledger_dir: Option<PathBuf>,
    /// The push API's socket; `None`: in the ledger directory, or a private one.
    pub socket: Option<PathBuf>,
    /// The push API on TCP too, on a loopback address (opt-in).
    pub listen: Option<std::net::SocketAddr>,
    /// The most a record waits after its hour ends (at most a tenth of the hour).
    pub send_jitter: Duration,
    /// At a stop, how long the partial hour's records may take.
    pub flush_timeout: Duration,
    /// How long the workload gets between SIGTERM and SIGKILL at a stop.
    pub grace: Duration,
    /// A record of 0 for a dimension without usage in an hour.
    pub send_zero: bool,
    /// The dimensions read from the workload's Prometheus metrics, if any.
    pub scrape: Option<scrape::Scrape>,
}

const DEFAULT_SEND_JITTER: Duration = Duration::from_secs(300);
const DEFAULT_FLUSH_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// The product code, dimensions and metering hour of a usage-priced product. The hourly key
/// and token-age settings are not read: an INFO line names those set.
pub fn usage(args: &Args, env: &dyn Fn(&str) -> Option<OsString>) -> Result<Usage, ConfigError> {
    let product_code = product_code(args, env)?;
    let from_env;
    let (given, setting): (Vec<&str>, &str) = if args.dimensions.is_empty() {
        from_env = text_setting(None, "MPGATE_DIMENSIONS", env)?.unwrap_or_default();
        (scrape::split_list(&from_env), "MPGATE_DIMENSIONS")
    } else {
        (
            args.dimensions.iter().map(|d| d.trim()).collect(),
            "--dimension",
        )
    };
    // `NAME=METRIC...` reads a dimension from the workload's metrics; a bare NAME is pushed.
    let mut sources = Vec::new();
    let mut names = Vec::with_capacity(given.len());
    for item in &given {
        match item.split_once('=') {
            Some((name, spec)) => {
                sources.push(scrape::source(name, spec, setting)?);
                names.push(name);
            }
            None => names.push(item),
        }
    }
    let dimensions = if pinned::is_pinned() {
        pinned_dimensions(&names, setting)?
    } else {
        check_dimensions(&names, setting)?
    };
    let flag = args.start_dimension.is_some();
    let start_dimension =
        match text_setting(args.start_dimension.clone(), "MPGATE_START_DIMENSION", env)? {
            None => dimensions[0].clone(),
            Some(name) if dimensions.contains(&name) => name,
            Some(name) => {
                return Err(ConfigError::UnknownStartDimension {
                    setting: if flag {
                        "--start-dimension"
                    } else {
                        "MPGATE_START_DIMENSION"
                    },
                    given: quoted(&name),
                    dimensions: dimensions.join(","),
                })
            }
        };
    let metering_hour = metering_hour(env)?;
    let scrape = scrape_settings(args, env, sources, setting, metering_hour)?;
    let ledger_dir = path_setting(args.ledger.as_ref(), "MPGATE_LEDGER_DIR", env);
    if ledger_dir.is_none() {
        tracing::warn!(
            "no ledger directory (--ledger / MPGATE_LEDGER_DIR): usage is kept in memory, so a crash, an OOM kill or a restart loses every unit not yet sent to AWS (up to an hour's and more); give the container a volume (a Kubernetes emptyDir, an ECS task volume) and set MPGATE_LEDGER_DIR"
        );
    }
    let socket = path_setting(args.usage_socket.as_ref(), "MPGATE_USAGE_SOCKET", env);
    let listen = match text_setting(args.usage_listen.clone(), "MPGATE_USAGE_LISTEN", env)? {
        None => None,
        Some(text) => match text.parse::<std::net::SocketAddr>() {
            Ok(addr) if addr.ip().is_loopback() => Some(addr),
            _ => {
                return Err(ConfigError::InvalidValue {
                    name: "MPGATE_USAGE_LISTEN",
                    value: text,
                    expected: "use a loopback address and port, e.g. 127.0.0.1:8787 or [::1]:8787: the push API is never served beyond the pod's own network namespace",
                })
            }
        },
    };
    // A fleet must not send on the minute, and a record must leave well inside its hour.
    let send_jitter = duration_setting(
        args.send_jitter.clone(),
        "MPGATE_SEND_JITTER",
        "send jitter",
        env,
    )?
    .unwrap_or(DEFAULT_SEND_JITTER)
    .min(metering_hour / 10);
    let flush_timeout = duration_setting(
        args.flush_timeout.clone(),
        "MPGATE_FLUSH_TIMEOUT",
        "flush timeout",
        env,
    )?
    .unwrap_or(DEFAULT_FLUSH_TIMEOUT);
    let grace = duration_setting(args.grace.clone(), "MPGATE_GRACE", "grace", env)?
        .unwrap_or(DEFAULT_GRACE);
    let send_zero = args.send_zero
        || match text_setting(None, "MPGATE_SEND_ZERO", env)?.as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(ConfigError::InvalidValue {
                    name: "MPGATE_SEND_ZERO",
                    value: other.to_string(),
                    expected: "use 'true' (a record of 0 for every dimension without usage in an hour) or 'false' (the default)",
                })
            }
        };
    let ignored: Vec<&str> = [
        (args.public_key_version.is_some(), "--public-key-version"),
        (args.public_key_file.is_some(), "--public-key-file"),
        (args.public_key_dir.is_some(), "--public-key-dir"),
        (args.max_token_age.is_some(), "--max-token-age"),
    ]
    .into_iter()
    .filter_map(|(given, name)| given.then_some(name))
    .chain(
        NOT_USED
            .into_iter()
            .filter(|name| env(name).is_some_and(|v| !v.is_empty())),
    )
    .collect();
    if !ignored.is_empty() {
        tracing::info!(
            "usage pricing reports usage with MeterUsage, which answers with no signed token and holds no license: {} not used",
            ignored.join(", ")
        );
    }
    Ok(Usage {
        product_code,
        dimensions,
        start_dimension,
        metering_hour,
        ledger_dir,
        socket,
        listen,
        send_jitter,
        flush_timeout,
        grace,
        send_zero,
        scrape,
    })
}

/// The pull side: the metrics URL, the interval and the scraped dimensions, or `None` when
/// every dimension is pushed. A pinned build refuses it: a buyer could point it at metrics of
/// their own.
fn scrape_settings(
    args: &Args,
    env: &dyn Fn(&str) -> Option<OsString>,
    sources: Vec<scrape::Source>,
    setting: &'static str,
    hour: Duration,
) -> Result<Option<scrape::Scrape>, ConfigError> {
    let url_setting = if args.scrape.is_some() {
        "--scrape"
    } else {
        "MPGATE_SCRAPE_URL"
    };
    let interval_setting = if args.scrape_interval.is_some() {
        "--scrape-interval"
    } else {
        "MPGATE_SCRAPE_INTERVAL"
    };
    let url = text_setting(args.scrape.clone(), "MPGATE_SCRAPE_URL", env)?;
    let given_interval = duration_setting(
        args.scrape_interval.clone(),
        "MPGATE_SCRAPE_INTERVAL",
        "scrape interval",
        env,
    )?;
    if pinned::is_pinned() {
        if !sources.is_empty() {
            return Err(Refused(format!("the metrics named in {setting}")).into());
        }
        if url.is_some() {
            return Err(Refused(url_setting.into()).into());
        }
        if given_interval.is_some() {
            return Err(Refused(interval_setting.into()).into());
        }
    }
    match (url, sources.is_empty()) {
        (None, true) => {
            if given_interval.is_some() {
                return Err(ConfigError::UrlWithoutSource {
                    setting: interval_setting,
                });
            }
            Ok(None)
        }
        (None, false) => Err(ConfigError::ScrapeWithoutUrl { setting }),
        (Some(_), true) => Err(ConfigError::UrlWithoutSource {
            setting: url_setting,
        }),
        (Some(url), false) => Ok(Some(scrape::Scrape {
            target: scrape::target(&url, url_setting)?,
            interval: scrape::interval(given_interval, hour, interval_setting)?,
            sources,
        })),
    }
}

/// The key and token settings of hourly pricing, which usage pricing does not read (it shares
/// the product code).
const NOT_USED: [&str; 5] = [
    "MPGATE_PUBLIC_KEY_VERSION",
    "MPGATE_PUBLIC_KEY",
    "MPGATE_PUBLIC_KEY_FILE",
    "MPGATE_PUBLIC_KEY_DIR",
    "MPGATE_MAX_TOKEN_AGE",
];

/// 1 to 24 dimension API names, each 1 to 255 characters without spaces, commas, `=` or
/// control characters (a comma separates them in MPGATE_DIMENSIONS), none twice.
fn check_dimensions(given: &[&str], setting: &'static str) -> Result<Vec<String>, ConfigError> {
    if given.is_empty() {
        return Err(ConfigError::MissingDimensions);
    }
    if given.len() > MAX_DIMENSIONS {
        return Err(ConfigError::TooManyDimensions {
            setting,
            count: given.len(),
        });
    }
    let mut names: Vec<String> = Vec::with_capacity(given.len());
    for name in given {
        if name.is_empty()
            || name.chars().count() > MAX_DIMENSION_CHARS
            || name
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '=' || c == ',')
        {
            return Err(ConfigError::InvalidDimension {
                setting,
                name: quoted(name),
            });
        }
        if names.iter().any(|n| n == name) {
            return Err(ConfigError::DimensionTwice {
                setting,
                name: quoted(name),
            });
        }
        names.push((*name).to_owned());
    }
    Ok(names)
}

/// A pinned usage build's dimensions; `given` may name them again, in any order, but nothing
/// else.
fn pinned_dimensions(given: &[&str], setting: &'static str) -> Result<Vec<String>, ConfigError> {
    let pinned: Vec<String> = pinned::dimensions().iter().map(|d| d.to_string()).collect();
    if given.is_empty() {
        return Ok(pinned);
    }
    let mut sorted_given: Vec<&str> = given.to_vec();
    sorted_given.sort_unstable();
    let mut sorted_pinned: Vec<&str> = pinned::dimensions().to_vec();
    sorted_pinned.sort_unstable();
    if sorted_given == sorted_pinned {
        Ok(pinned)
    } else {
        Err(ConfigError::PinnedDimensions {
            pinned: pinned.join(","),
            given: given.join(","),
            setting,
        })
    }
}

/// `MPGATE_METERING_HOUR`: a shorter hour for tests and demos, whole seconds from 1 s to
/// 3600 s, said with a WARN; a pinned build refuses it (a buyer could otherwise make every
/// hour's record cover a few seconds of usage).
pub fn metering_hour(env: &dyn Fn(&str) -> Option<OsString>) -> Result<Duration, ConfigError> {
    let Some(text) = text_setting(None, "MPGATE_METERING_HOUR", env)? else {
        return Ok(AWS_HOUR);
    };
    if pinned::is_pinned() {
        return Err(Refused("MPGATE_METERING_HOUR".into()).into());
    }
    let hour = parse_duration(&text)
        .filter(|d| d.subsec_nanos() == 0)
        .ok_or(ConfigError::InvalidValue {
            name: "MPGATE_METERING_HOUR",
            value: text,
            expected: "use whole seconds from 1s to 3600s, e.g. 2s (tests and demos only; unset it for AWS's hour)",
        })?;
    if hour != AWS_HOUR {
        tracing::warn!(
            "MPGATE_METERING_HOUR={}s: usage is metered in hours of {}s, not AWS's 3600s (a test clock: unset it in production)",
            hour.as_secs(),
            hour.as_secs()
        );
    }
    Ok(hour)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dimensions_are_1_to_24_names_each_once() {
        let ok = check_dimensions(&["nodes", "gb_scanned"], "--dimension").unwrap();
        assert_eq!(ok, ["nodes", "gb_scanned"]);
        let long = "x".repeat(256);
        for bad in ["a b", "a=b", "tab\t", long.as_str()] {
            let e = check_dimensions(&[bad], "--dimension").unwrap_err();
            assert!(e.to_string().contains("--dimension"), "{e}");
        }
        let e = check_dimensions(&["nodes", "nodes"], "MPGATE_DIMENSIONS").unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
        let many: Vec<String> = (0..25).map(|i| format!("d{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let e = check_dimensions(&many, "MPGATE_DIMENSIONS").unwrap_err();
        assert!(e.to_string().contains("at most 24"), "{e}");
        assert!(check_dimensions(&many[..24], "MPGATE_DIMENSIONS").is_ok());
        let e = check_dimensions(&[], "MPGATE_DIMENSIONS").unwrap_err();
        assert!(e.to_string().contains("MPGATE_DIMENSIONS"), "{e}");
    }

    #[test]
    fn the_metering_hour_is_whole_seconds_up_to_aws_s() {
        let env = |v: &'static str| move |k: &str| (k == "MPGATE_METERING_HOUR").then(|| v.into());
        assert_eq!(metering_hour(&env("2s")).unwrap(), Duration::from_secs(2));
        assert_eq!(metering_hour(&env("")).unwrap(), AWS_HOUR);
        for bad in ["1500ms", "0", "2h", "soon"] {
            let e = metering_hour(&env(bad)).unwrap_err();
            assert!(e.to_string().contains("MPGATE_METERING_HOUR"), "{bad}: {e}");
        }
    }
}
