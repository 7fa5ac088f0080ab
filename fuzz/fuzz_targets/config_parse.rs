//! mpgate's configuration: `cli::parse` on an arbitrary argv, then `Config::from_args` (or
//! `mpgate verify`'s `proof::check_command`) with an arbitrary environment, and
//! `parse_duration` on every string. Errors are fine; a panic is not, nor a `Config` that
//! breaks the bounds mpgate promises.
//!
//! Input: NUL-separated strings (any bytes). The argv comes first, up to an empty string
//! (`\0\0`); every string after it is an environment entry `NAME=VALUE`. Paths, in flags and
//! variables, are mapped onto a fixed scratch directory (`mpgate_fuzz::sandboxed_path`), so
//! the machine's own files are never read.
#![no_main]

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use mpgate::cli::{self, Args, Parsed};
use mpgate::config::{self, Config, Pricing, SeatMode};
use mpgate_fuzz::{sandboxed_path, sandboxed_path_list, split_nul};

/// Variables holding a path, read by mpgate's configuration.
const PATH_VARS: &[&str] = &[
    "MPGATE_PUBLIC_KEY_FILE",
    "MPGATE_PUBLIC_KEY_DIR",
    "MPGATE_RESULT_FILE",
    "MPGATE_TERMINATION_LOG",
    "SSL_CERT_FILE",
];

fuzz_target!(|data: &[u8]| {
    let strings = split_nul(data);
    for s in &strings {
        if let Some(text) = s.to_str() {
            check_duration(text);
        }
    }

    let split = strings
        .iter()
        .position(|s| s.is_empty())
        .unwrap_or(strings.len());
    let argv = strings[..split].to_vec();
    let env: Vec<(OsString, OsString)> = strings
        .get(split + 1..)
        .unwrap_or_default()
        .iter()
        .filter(|s| !s.is_empty())
        .map(|entry| {
            let bytes = entry.as_bytes();
            let (name, value) = match bytes.iter().position(|&b| b == b'=') {
                Some(i) => (&bytes[..i], &bytes[i + 1..]),
                None => (bytes, &[][..]),
            };
            let name = std::ffi::OsStr::from_bytes(name);
            let value = std::ffi::OsStr::from_bytes(value);
            let value = if name == "SSL_CERT_DIR" && !value.is_empty() {
                sandboxed_path_list(value)
            } else if PATH_VARS.iter().any(|v| name == *v) && !value.is_empty() {
                sandboxed_path(value)
            } else {
                value.to_os_string()
            };
            (name.to_os_string(), value)
        })
        .collect();
    // The last entry of a name wins, as in a shell's `env A=1 A=2`.
    let lookup = |name: &str| {
        env.iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };

    match cli::parse(argv) {
        Ok(Parsed::Run(args)) => {
            let args = sandbox(*args);
            if let Err(e) = config::log_format(args.log_format.clone(), &lookup) {
                let _ = e.to_string();
            }
            let command = args.command.clone();
            match Config::from_args(args, &lookup) {
                Ok(config) => check_config(&config, &command),
                Err(e) => {
                    let _ = e.to_string();
                }
            }
        }
        Ok(Parsed::Verify(args)) => {
            let args = sandbox(*args);
            match mpgate::verify::check_command(&args, &lookup) {
                Ok(message) => assert!(!message.is_empty()),
                Err(failure) => {
                    let _ = (failure.to_string(), failure.exit_code(), failure.outcome());
                }
            }
        }
        Ok(Parsed::Help | Parsed::VerifyHelp | Parsed::Version) => {}
        // `mpgate usage` talks to a running agent and `mpgate lease watch` runs a command: only
        // their parsing is fuzzed.
        Ok(Parsed::Usage(usage)) => {
            assert!(matches!(
                usage.action,
                cli::UsageAction::Add { .. } | cli::UsageAction::Show
            ));
        }
        Ok(Parsed::UsageRefused(message)) => assert!(message.contains("mpgate usage --help")),
        Ok(Parsed::UsageHelp | Parsed::LeaseWatch(_) | Parsed::LeaseHelp) => {}
        Err(e) => {
            let _ = e.to_string();
        }
    }
});

/// Points every path flag at the scratch directory.
fn sandbox(mut args: Args) -> Args {
    for path in [
        &mut args.public_key_file,
        &mut args.public_key_dir,
        &mut args.result_file,
        &mut args.termination_log,
    ] {
        if let Some(p) = path.as_mut() {
            *p = sandboxed_path(p);
        }
    }
    args
}

fn check_duration(text: &str) {
    if let Some(d) = mpgate::settings::parse_duration(text) {
        assert!(
            !d.is_zero() && d <= Duration::from_secs(3600),
            "parse_duration({text:?}) = {d:?}"
        );
        let _ = mpgate::settings::humantime(d);
    }
}

/// What a `Config` mpgate starts with must satisfy.
fn check_config(config: &Config, command: &[OsString]) {
    let hour = Duration::from_secs(3600);
    match &config.pricing {
        Pricing::Hourly(hourly) => {
            let code = &hourly.product_code;
            assert!(
                !code.is_empty()
                    && code.chars().count() <= 255
                    && !code.chars().any(|c| c.is_whitespace() || c.is_control()),
                "accepted product code {code:?}"
            );
            assert!(
                hourly.public_key_version >= 1,
                "key version {}",
                hourly.public_key_version
            );
            assert!(
                hourly.key_versions.contains(&hourly.public_key_version),
                "key version {} not in {:?}",
                hourly.public_key_version,
                hourly.key_versions
            );
            assert!(
                !hourly.max_token_age.is_zero() && hourly.max_token_age <= hour,
                "max token age {:?}",
                hourly.max_token_age
            );
        }
        Pricing::Contract(contract) => {
            let sku = &contract.product_sku;
            assert!(
                !sku.is_empty()
                    && sku.chars().count() <= 255
                    && !sku.chars().any(|c| c.is_whitespace() || c.is_control()),
                "accepted product SKU {sku:?}"
            );
            assert!(
                (1..=32).contains(&contract.entitlements.len()),
                "{} entitlements",
                contract.entitlements.len()
            );
            for e in &contract.entitlements {
                assert!(
                    !e.name.is_empty() && !e.name.contains(','),
                    "entitlement {e:?}"
                );
                match &e.value {
                    None => assert_eq!(e.unit, "None", "{e:?}"),
                    Some(v) => assert!(
                        !v.is_empty()
                            && v.bytes().all(|b| b.is_ascii_digit())
                            && !v.starts_with('0'),
                        "{e:?}"
                    ),
                }
            }
            assert!(
                !contract.grace.is_zero() && contract.grace <= hour,
                "grace {:?}",
                contract.grace
            );
            if contract.seat == SeatMode::Hold {
                assert!(!command.is_empty(), "hold without a command");
            }
        }
        Pricing::Usage(usage) => {
            let code = &usage.product_code;
            assert!(
                !code.is_empty()
                    && code.chars().count() <= 255
                    && !code.chars().any(|c| c.is_whitespace() || c.is_control()),
                "accepted product code {code:?}"
            );
            assert!(
                (1..=24).contains(&usage.dimensions.len()),
                "{} dimensions",
                usage.dimensions.len()
            );
            for (i, d) in usage.dimensions.iter().enumerate() {
                assert!(
                    !d.is_empty()
                        && d.chars().count() <= 255
                        && !d
                            .chars()
                            .any(|c| c.is_whitespace() || c.is_control() || c == ',' || c == '=')
                        && !usage.dimensions[..i].contains(d),
                    "dimension {d:?}"
                );
            }
            assert!(
                usage.dimensions.contains(&usage.start_dimension),
                "start dimension {:?}",
                usage.start_dimension
            );
            assert!(
                usage.metering_hour.as_secs() >= 1
                    && usage.metering_hour <= hour
                    && usage.metering_hour.subsec_nanos() == 0,
                "metering hour {:?}",
                usage.metering_hour
            );
        }
    }
    assert!(
        !config.timeout.is_zero() && config.timeout <= hour,
        "timeout {:?}",
        config.timeout
    );
    assert!(
        !config.attempt_timeout.is_zero() && config.attempt_timeout <= config.timeout,
        "attempt timeout {:?} with timeout {:?}",
        config.attempt_timeout,
        config.timeout
    );
    if let Some(url) = &config.endpoint_url {
        assert!(
            url.starts_with("https://") || url.starts_with("http://"),
            "endpoint {url:?}"
        );
    }
    if let Some(n) = config.retry.max_attempts {
        assert!(n >= 1, "AWS_MAX_ATTEMPTS {n}");
    }
    assert_eq!(
        config.command, command,
        "the workload's command was changed"
    );
    assert!(!config.pinned, "a fuzz build is never pinned");
}
