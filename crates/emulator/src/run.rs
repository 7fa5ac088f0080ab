//! `run -- COMMAND...`: run a command wired to the emulator, forwarding signals.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::process::ExitStatusExt;

use tokio::signal::unix::{signal, SignalKind};

use crate::credentials::Credential;
use crate::log::error;

/// What the child's environment points at.
pub struct ChildEnv {
    pub url: String,
    pub region: String,
    pub product_code: String,
    /// The public key file of each served version.
    pub public_key_files: BTreeMap<u32, String>,
    /// The first served version (`--key-versions`).
    pub public_key_version: u32,
    /// The CA to trust (`SSL_CERT_FILE`) when serving HTTPS.
    pub ca_file: Option<String>,
    /// The temporary credentials handed to the child, as a task role would (the emulator
    /// knows them).
    pub credentials: Option<Credential>,
    /// License Manager's product SKU (`MPGATE_PRODUCT_SKU`).
    pub product_sku: String,
    /// MeterUsage's dimensions, comma-separated (`MPGATE_DIMENSIONS`).
    pub dimensions: String,
    /// `--metering-hour` when it is not AWS's (`MPGATE_METERING_HOUR`, e.g. `2s`).
    pub metering_hour: Option<String>,
    /// `run --anywhere`: the license token and role handed over instead of credentials.
    pub anywhere: Option<AnywhereEnv>,
}

/// What `run --anywhere` hands the command: the buyer's license token and role.
pub struct AnywhereEnv {
    /// The refresh token's file (`iam_role` beside it).
    pub token_file: String,
    pub role_arn: String,
}

/// The variables the gate reads a license token file from: with any of them set, the
/// token is the caller's.
pub const TOKEN_FILE_SETTINGS: [&str; 3] = [
    "MPGATE_LICENSE_TOKEN_FILE",
    "AWS_WEB_IDENTITY_REFRESH_TOKEN_FILE",
    "AWS_LICENSE_ACCESS_FILE",
];

/// The variables the gate reads the consumption role from.
pub const ROLE_SETTINGS: [&str; 2] = ["MPGATE_LICENSE_ROLE_ARN", "AWS_ROLE_ARN"];

/// The gate's key sources (src/keyring.rs): with any of them set, the key is the caller's.
const KEY_SOURCES: [&str; 3] = [
    "MPGATE_PUBLIC_KEY_FILE",
    "MPGATE_PUBLIC_KEY_DIR",
    "MPGATE_PUBLIC_KEY",
];

/// The seller's product settings the gate reads, reported as kept when the caller has them.
const SELLER_SETTINGS: [&str; 16] = [
    "MPGATE_LICENSE_TOKEN_FILE",
    "AWS_WEB_IDENTITY_REFRESH_TOKEN_FILE",
    "AWS_LICENSE_ACCESS_FILE",
    "MPGATE_LICENSE_ROLE_ARN",
    "AWS_ROLE_ARN",
    "MPGATE_PRICING",
    "MPGATE_PRODUCT_CODE",
    "MPGATE_DIMENSIONS",
    "MPGATE_METERING_HOUR",
    "MPGATE_PRODUCT_SKU",
    "MPGATE_ENTITLEMENTS",
    "MPGATE_SEAT",
    "MPGATE_PUBLIC_KEY_FILE",
    "MPGATE_PUBLIC_KEY_DIR",
    "MPGATE_PUBLIC_KEY",
    "MPGATE_PUBLIC_KEY_VERSION",
];

/// AWS settings that would take the command's calls elsewhere than the emulator.
const REDIRECTS: [&str; 3] = [
    "AWS_PROFILE",
    "AWS_ENDPOINT_URL",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
];

/// The caller's credentials, replaced by the pair run hands out.
const CREDENTIALS: [&str; 3] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
];

/// The longest value the summary shows in full.
const MAX_SHOWN_CHARS: usize = 100;

/// The command's environment: the caller's, minus `remove`, plus `set`.
pub struct Plan {
    remove: Vec<&'static str>,
    set: Vec<(&'static str, String)>,
    /// The one line naming what run set, kept and removed (names and non-secret values).
    pub summary: String,
}

/// Wires the command to the emulator, filling in (never overwriting) the seller's settings:
/// a setting the caller has, even empty, is what the gate would read on AWS, so it is kept
/// and a wrong one fails here as it would there.
pub fn plan(env: &ChildEnv, caller: &dyn Fn(&str) -> Option<OsString>) -> Plan {
    let has = |name: &str| caller(name).is_some();
    let mut set: Vec<(&'static str, String)> = Vec::new();
    let mut shown: Vec<String> = Vec::new();
    for name in [
        "AWS_ENDPOINT_URL_MARKETPLACE_METERING",
        "AWS_ENDPOINT_URL_LICENSE_MANAGER",
    ] {
        set.push((name, env.url.clone()));
        shown.push(name.into());
    }
    for name in ["AWS_REGION", "AWS_DEFAULT_REGION"] {
        set.push((name, env.region.clone()));
        shown.push(name.into());
    }
    if env.anywhere.is_some() {
        set.push(("AWS_ENDPOINT_URL_STS", env.url.clone()));
        shown.push("AWS_ENDPOINT_URL_STS".into());
    }
    set.push(("AWS_EC2_METADATA_DISABLED", "true".into()));
    shown.push("AWS_EC2_METADATA_DISABLED=true".into());
    let mut remove: Vec<&'static str> = REDIRECTS.to_vec();
    remove.extend(CREDENTIALS);
    let mut removed: Vec<&str> = REDIRECTS.into_iter().filter(|n| has(n)).collect();
    match &env.credentials {
        Some(c) => {
            set.push(("AWS_ACCESS_KEY_ID", c.access_key_id.clone()));
            set.push(("AWS_SECRET_ACCESS_KEY", c.secret_access_key.clone()));
            // Names only: the values are secrets.
            shown.push(match &c.session_token {
                Some(token) => {
                    set.push(("AWS_SESSION_TOKEN", token.clone()));
                    "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN (temporary)".into()
                }
                None => "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY".into(),
            });
        }
        None => removed.extend(CREDENTIALS.into_iter().filter(|n| has(n))),
    }
    if let Some(ca) = &env.ca_file {
        set.push(("SSL_CERT_FILE", ca.clone()));
        shown.push(format!("SSL_CERT_FILE={}", show(ca.as_ref())));
    }

    let mut fill = |name: &'static str, value: String| {
        if !has(name) {
            shown.push(format!("{name}={}", show(value.as_ref())));
            set.push((name, value));
        }
    };
    fill("MPGATE_PRODUCT_SKU", env.product_sku.clone());
    // The license token and its role, unless the caller has a token of its own (whose role
    // is then its own too: its variable, or the iam_role file beside its token).
    if let Some(a) = &env.anywhere {
        if !TOKEN_FILE_SETTINGS.iter().any(|n| has(n)) {
            fill("MPGATE_LICENSE_TOKEN_FILE", a.token_file.clone());
            if !ROLE_SETTINGS.iter().any(|n| has(n)) {
                fill("MPGATE_LICENSE_ROLE_ARN", a.role_arn.clone());
            }
        }
    }
    // RegisterUsage's settings, unless the caller set up contract pricing (which does not
    // read them, and would say so); usage pricing's are the product code and dimensions (no
    // key: MeterUsage returns no token).
    let pricing = caller("MPGATE_PRICING");
    let usage = pricing.as_ref().is_some_and(|p| p == "usage");
    if pricing.is_none_or(|p| p != "contract") {
        fill("MPGATE_PRODUCT_CODE", env.product_code.clone());
        if usage {
            fill("MPGATE_DIMENSIONS", env.dimensions.clone());
            if let Some(hour) = &env.metering_hour {
                fill("MPGATE_METERING_HOUR", hour.clone());
            }
        } else if !KEY_SOURCES.iter().any(|n| has(n)) {
            // The file of the version the caller asks for, when served; else the first one's
            // (and AWS's answer for an unknown version).
            let asked = caller("MPGATE_PUBLIC_KEY_VERSION")
                .and_then(|v| v.to_str()?.parse::<u32>().ok())
                .filter(|v| env.public_key_files.contains_key(v));
            let file = env
                .public_key_files
                .get(&asked.unwrap_or(env.public_key_version))
                .cloned()
                .unwrap_or_default();
            fill("MPGATE_PUBLIC_KEY_FILE", file);
            fill(
                "MPGATE_PUBLIC_KEY_VERSION",
                env.public_key_version.to_string(),
            );
        }
    }

    let kept: Vec<String> = SELLER_SETTINGS
        .into_iter()
        .filter_map(|name| {
            let value = caller(name)?;
            Some(if name == "MPGATE_PUBLIC_KEY" {
                format!("{name} (inline key)")
            } else {
                format!("{name}={}", show(&value))
            })
        })
        .collect();
    let mut summary = format!(
        "mpgate-emulator: serving {} ({}; product code {}, product SKU {}); set {}",
        env.url,
        env.region,
        env.product_code,
        env.product_sku,
        shown.join(", ")
    );
    if !kept.is_empty() {
        summary.push_str(&format!("; kept {}", kept.join(", ")));
    }
    if !removed.is_empty() {
        summary.push_str(&format!("; removed {}", removed.join(", ")));
    }
    Plan {
        remove,
        set,
        summary,
    }
}

/// A value as the summary shows it: quoted when empty or holding spaces, separators or
/// control characters, and clipped.
fn show(value: &OsStr) -> String {
    let text = value.to_string_lossy();
    let mut clipped: String = text.chars().take(MAX_SHOWN_CHARS).collect();
    if text.chars().count() > MAX_SHOWN_CHARS {
        clipped.push_str("...");
    }
    let plain = !clipped.is_empty()
        && !clipped
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, ',' | ';' | '"'));
    if plain {
        clipped
    } else {
        format!("{clipped:?}")
    }
}

/// Run `command` to completion with the environment of `plan`; returns the exit code to use.
pub async fn run_child(command: OsString, args: Vec<OsString>, plan: &Plan) -> i32 {
    let mut cmd = tokio::process::Command::new(&command);
    cmd.args(&args);
    for name in &plan.remove {
        cmd.env_remove(name);
    }
    for (name, value) in &plan.set {
        cmd.env(name, value);
    }
    let shown = command.to_string_lossy().into_owned();
    // Listen before spawning so no signal is lost in between.
    let (mut term, mut int, mut hup, mut quit) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
        signal(SignalKind::quit()),
    ) {
        (Ok(a), Ok(b), Ok(c), Ok(d)) => (a, b, c, d),
        _ => {
            error("error: cannot install signal handlers");
            return 1;
        }
    };
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            error(&format!("error: {shown}: command not found"));
            return 127;
        }
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            error(&format!("error: {shown}: permission denied"));
            return 126;
        }
        Err(e) => {
            error(&format!("error: cannot run {shown}: {e}"));
            return 126;
        }
    };
    let pid = child.id().and_then(|p| libc::pid_t::try_from(p).ok());
    let forward = |sig: libc::c_int| {
        if let Some(pid) = pid {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe {
                libc::kill(pid, sig);
            }
        }
    };
    let status = loop {
        tokio::select! {
            st = child.wait() => break st,
            _ = term.recv() => forward(libc::SIGTERM),
            _ = int.recv() => forward(libc::SIGINT),
            _ = hup.recv() => forward(libc::SIGHUP),
            _ = quit.recv() => forward(libc::SIGQUIT),
        }
    };
    match status {
        Ok(st) => match (st.code(), st.signal()) {
            (Some(code), _) => code,
            (None, Some(sig)) => 128 + sig,
            (None, None) => 1,
        },
        Err(e) => {
            error(&format!("error: waiting for {shown}: {e}"));
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn child_env() -> ChildEnv {
        ChildEnv {
            url: "http://127.0.0.1:9".into(),
            region: "eu-west-1".into(),
            product_code: "prod-real".into(),
            public_key_files: BTreeMap::from([
                (1, "/k/public-key-v1.pem".to_string()),
                (2, "/k/public-key-v2.pem".to_string()),
            ]),
            public_key_version: 1,
            ca_file: None,
            credentials: Some(Credential::fresh_temporary()),
            product_sku: "sku-real".into(),
            dimensions: "nodes,gb".into(),
            metering_hour: Some("2s".into()),
            anywhere: None,
        }
    }

    #[test]
    fn usage_pricing_gets_the_dimensions_and_hour_and_no_key() {
        let p = plan_with(&[("MPGATE_PRICING", "usage")]);
        assert_eq!(value(&p, "MPGATE_PRODUCT_CODE"), Some("prod-real"));
        assert_eq!(value(&p, "MPGATE_DIMENSIONS"), Some("nodes,gb"));
        assert_eq!(value(&p, "MPGATE_METERING_HOUR"), Some("2s"));
        assert_eq!(value(&p, "MPGATE_PUBLIC_KEY_FILE"), None);
        assert_eq!(value(&p, "MPGATE_PUBLIC_KEY_VERSION"), None);
        // The seller's own dimensions are kept, and named.
        let p = plan_with(&[("MPGATE_PRICING", "usage"), ("MPGATE_DIMENSIONS", "gb")]);
        assert_eq!(value(&p, "MPGATE_DIMENSIONS"), None);
        assert!(
            p.summary
                .contains("kept MPGATE_PRICING=usage, MPGATE_DIMENSIONS=gb"),
            "{}",
            p.summary
        );
        // Hourly pricing gets neither.
        let p = plan_with(&[]);
        assert_eq!(value(&p, "MPGATE_DIMENSIONS"), None);
        assert_eq!(value(&p, "MPGATE_METERING_HOUR"), None);
    }

    fn plan_with(caller: &[(&str, &str)]) -> Plan {
        let caller: Vec<(String, OsString)> = caller
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        plan(&child_env(), &|name| {
            caller
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        })
    }

    fn value<'a>(plan: &'a Plan, name: &str) -> Option<&'a str> {
        plan.set
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn missing_settings_are_filled_in_and_named() {
        let p = plan_with(&[]);
        assert_eq!(value(&p, "MPGATE_PRODUCT_CODE"), Some("prod-real"));
        assert_eq!(value(&p, "MPGATE_PRODUCT_SKU"), Some("sku-real"));
        assert_eq!(
            value(&p, "MPGATE_PUBLIC_KEY_FILE"),
            Some("/k/public-key-v1.pem")
        );
        assert_eq!(value(&p, "MPGATE_PUBLIC_KEY_VERSION"), Some("1"));
        assert_eq!(
            p.summary,
            "mpgate-emulator: serving http://127.0.0.1:9 (eu-west-1; product code prod-real, product SKU sku-real); \
             set AWS_ENDPOINT_URL_MARKETPLACE_METERING, AWS_ENDPOINT_URL_LICENSE_MANAGER, AWS_REGION, \
             AWS_DEFAULT_REGION, AWS_EC2_METADATA_DISABLED=true, \
             AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN (temporary), \
             MPGATE_PRODUCT_SKU=sku-real, MPGATE_PRODUCT_CODE=prod-real, \
             MPGATE_PUBLIC_KEY_FILE=/k/public-key-v1.pem, MPGATE_PUBLIC_KEY_VERSION=1"
        );
    }

    #[test]
    fn the_callers_settings_are_kept_and_named() {
        let p = plan_with(&[
            ("MPGATE_PRODUCT_CODE", "prod-typo"),
            ("MPGATE_PRODUCT_SKU", "sku typo"),
            ("MPGATE_PUBLIC_KEY_DIR", "/keys"),
            ("AWS_PROFILE", "prod"),
            ("AWS_ACCESS_KEY_ID", "AKIAINHERITED0000000"),
        ]);
        for name in [
            "MPGATE_PRODUCT_CODE",
            "MPGATE_PRODUCT_SKU",
            "MPGATE_PUBLIC_KEY_FILE",
            "MPGATE_PUBLIC_KEY_DIR",
            "MPGATE_PUBLIC_KEY_VERSION",
        ] {
            assert_eq!(value(&p, name), None, "{name} overwritten");
        }
        assert!(
            p.summary.ends_with(
                "; kept MPGATE_PRODUCT_CODE=prod-typo, MPGATE_PRODUCT_SKU=\"sku typo\", \
                 MPGATE_PUBLIC_KEY_DIR=/keys; removed AWS_PROFILE"
            ),
            "{}",
            p.summary
        );
        assert!(p.remove.contains(&"AWS_PROFILE"));
        // The handed-out pair replaces the inherited one; its values never appear.
        let secret = value(&p, "AWS_SECRET_ACCESS_KEY").unwrap();
        let token = value(&p, "AWS_SESSION_TOKEN").unwrap();
        assert_ne!(value(&p, "AWS_ACCESS_KEY_ID"), Some("AKIAINHERITED0000000"));
        assert!(!p.summary.contains(secret) && !p.summary.contains(token));
    }

    #[test]
    fn any_key_source_or_an_empty_one_keeps_the_key_the_callers() {
        for source in KEY_SOURCES {
            for given in ["x", ""] {
                let p = plan_with(&[(source, given)]);
                assert_eq!(
                    value(&p, "MPGATE_PUBLIC_KEY_FILE"),
                    None,
                    "{source}={given:?}"
                );
                assert_eq!(value(&p, "MPGATE_PUBLIC_KEY_VERSION"), None);
                assert_eq!(value(&p, "MPGATE_PRODUCT_CODE"), Some("prod-real"));
            }
        }
        let p = plan_with(&[("MPGATE_PUBLIC_KEY", "-----BEGIN PUBLIC KEY-----\n...")]);
        assert!(
            p.summary.ends_with("; kept MPGATE_PUBLIC_KEY (inline key)"),
            "{}",
            p.summary
        );
        let p = plan_with(&[("MPGATE_PRODUCT_CODE", "")]);
        assert_eq!(value(&p, "MPGATE_PRODUCT_CODE"), None);
        assert!(
            p.summary.ends_with("; kept MPGATE_PRODUCT_CODE=\"\""),
            "{}",
            p.summary
        );
    }

    #[test]
    fn a_version_the_caller_asks_for_gets_its_file() {
        let p = plan_with(&[("MPGATE_PUBLIC_KEY_VERSION", "2")]);
        assert_eq!(
            value(&p, "MPGATE_PUBLIC_KEY_FILE"),
            Some("/k/public-key-v2.pem")
        );
        assert_eq!(value(&p, "MPGATE_PUBLIC_KEY_VERSION"), None);
        // An unserved version keeps the caller's number: AWS's answer tells.
        let p = plan_with(&[("MPGATE_PUBLIC_KEY_VERSION", "7")]);
        assert_eq!(
            value(&p, "MPGATE_PUBLIC_KEY_FILE"),
            Some("/k/public-key-v1.pem")
        );
        assert!(p.summary.ends_with("kept MPGATE_PUBLIC_KEY_VERSION=7"));
    }

    #[test]
    fn contract_pricing_gets_no_hourly_settings() {
        let p = plan_with(&[
            ("MPGATE_PRICING", "contract"),
            ("MPGATE_ENTITLEMENTS", "Basic,Seats=1"),
        ]);
        assert_eq!(value(&p, "MPGATE_PRODUCT_SKU"), Some("sku-real"));
        for name in [
            "MPGATE_PRODUCT_CODE",
            "MPGATE_PUBLIC_KEY_FILE",
            "MPGATE_PUBLIC_KEY_VERSION",
        ] {
            assert_eq!(value(&p, name), None, "{name}");
        }
        assert!(
            p.summary
                .ends_with("; kept MPGATE_PRICING=contract, MPGATE_ENTITLEMENTS=\"Basic,Seats=1\""),
            "{}",
            p.summary
        );
    }

    #[test]
    fn long_values_are_clipped() {
        let long = "p".repeat(300);
        let p = plan_with(&[("MPGATE_PRODUCT_CODE", &long)]);
        assert!(
            p.summary.ends_with(&format!("={}...", "p".repeat(100))),
            "{}",
            p.summary
        );
    }
}
