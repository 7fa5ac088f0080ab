//! Build script: for a pinned build, compiles in what the seller pins (an hourly product's code
//! and key ring, a contract product's SKU and entitlements, or a usage product's code and
//! dimensions; the endpoint, CA certificates, token age); for the static x86_64 release, links without unwind tables.

use std::fmt::Write;
use std::path::Path;

fn main() {
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    println!("cargo:rerun-if-changed=build.rs");
    write_pinned(Path::new(&out));
    drop_unwind_tables();
}

/// A static musl build that aborts on panic never unwinds, so its `.eh_frame` (a seventh of
/// the binary) only fed backtraces, and a stripped binary prints none worth reading. The
/// linker script discards it; measured in bench/README.md. Only where checked: x86_64 musl.
fn drop_unwind_tables() {
    let cfg = |name: &str| std::env::var(name).unwrap_or_default();
    if cfg("CARGO_CFG_TARGET_ENV") == "musl"
        && cfg("CARGO_CFG_TARGET_ARCH") == "x86_64"
        // The release profiles abort on panic (Cargo.toml); cargo tells build scripts the
        // profile, not the panic strategy.
        && cfg("PROFILE") == "release"
    {
        let script = Path::new(&cfg("CARGO_MANIFEST_DIR")).join("build/no-eh-frame.ld");
        println!("cargo:rerun-if-changed={}", script.display());
        println!("cargo:rustc-link-arg-bins=-Wl,-T,{}", script.display());
    }
}

/// A pinned build pins one pricing model, and every runtime override of what it pinned is
/// refused (src/pinned.rs, src/config.rs):
///
/// - hourly: `MPGATE_PIN_PRODUCT_CODE` + `MPGATE_PIN_KEY_DIR` (a directory of
///   `public-key-v<N>.pem`); `MPGATE_PIN_ENDPOINT_URL` (one https:// Metering URL) and
///   `MPGATE_PIN_MAX_TOKEN_AGE` (seconds, default 300) refine it;
/// - contract: `MPGATE_PIN_PRODUCT_SKU` + `MPGATE_PIN_ENTITLEMENTS` (comma-separated specs,
///   as `MPGATE_ENTITLEMENTS`); `MPGATE_PIN_LICENSE_MANAGER_ENDPOINT_URL` (one https:// URL),
///   `MPGATE_PIN_STS_ENDPOINT_URL` (one https:// URL: STS, for a license token) and
///   `MPGATE_PIN_SEAT` (check or hold) refine it;
/// - usage: `MPGATE_PIN_PRICING=usage` + `MPGATE_PIN_PRODUCT_CODE` + `MPGATE_PIN_DIMENSIONS`
///   (comma-separated dimension API names); `MPGATE_PIN_ENDPOINT_URL` refines it;
/// - any: `MPGATE_PIN_CA_FILE` (extra CA certificates). `MPGATE_PIN_PRICING` may name the
///   hourly or contract model too, and must then match what is pinned.
fn write_pinned(out: &Path) {
    let var = |name: &str| {
        println!("cargo:rerun-if-env-changed={name}");
        std::env::var(name).ok().filter(|v| !v.is_empty())
    };
    let code = var("MPGATE_PIN_PRODUCT_CODE");
    let dir = var("MPGATE_PIN_KEY_DIR");
    let endpoint = var("MPGATE_PIN_ENDPOINT_URL");
    let max_age = var("MPGATE_PIN_MAX_TOKEN_AGE");
    let sku = var("MPGATE_PIN_PRODUCT_SKU");
    let entitlements = var("MPGATE_PIN_ENTITLEMENTS");
    let lm_endpoint = var("MPGATE_PIN_LICENSE_MANAGER_ENDPOINT_URL");
    let sts_endpoint = var("MPGATE_PIN_STS_ENDPOINT_URL");
    let seat = var("MPGATE_PIN_SEAT");
    let ca_file = var("MPGATE_PIN_CA_FILE");
    let pricing = var("MPGATE_PIN_PRICING");
    let dimensions = var("MPGATE_PIN_DIMENSIONS");
    if let Some(other) = pricing
        .as_deref()
        .filter(|p| !matches!(*p, "hourly" | "contract" | "usage"))
    {
        fail(&format!(
            "MPGATE_PIN_PRICING {other:?} must be hourly, contract or usage"
        ));
    }
    let usage = pricing.as_deref() == Some("usage");
    if dimensions.is_some() && !usage {
        fail("MPGATE_PIN_DIMENSIONS pins the dimensions of a usage-priced product: set MPGATE_PIN_PRICING=usage too");
    }
    let usage_dimensions = if usage {
        check_usage_pins(
            &code,
            &dir,
            &sku,
            &entitlements,
            &max_age,
            &lm_endpoint,
            &seat,
        );
        check_dimensions(dimensions.as_deref().unwrap_or_else(|| {
            fail("a pinned usage build needs MPGATE_PIN_DIMENSIONS: the dimension API names, comma-separated")
        }))
    } else {
        Vec::new()
    };
    let hourly = !usage && (code.is_some() || dir.is_some());
    let contract = sku.is_some() || entitlements.is_some();
    match pricing.as_deref() {
        Some("hourly") if !hourly => {
            fail("MPGATE_PIN_PRICING=hourly needs MPGATE_PIN_PRODUCT_CODE and MPGATE_PIN_KEY_DIR")
        }
        Some("contract") if !contract => fail(
            "MPGATE_PIN_PRICING=contract needs MPGATE_PIN_PRODUCT_SKU and MPGATE_PIN_ENTITLEMENTS",
        ),
        _ => {}
    }
    if hourly && contract {
        fail("a build pins hourly pricing (MPGATE_PIN_PRODUCT_CODE and MPGATE_PIN_KEY_DIR) or contract pricing (MPGATE_PIN_PRODUCT_SKU and MPGATE_PIN_ENTITLEMENTS), not both: build one mpgate per product");
    }
    if !hourly
        && !contract
        && !usage
        && (endpoint.is_some() || max_age.is_some() || lm_endpoint.is_some() || ca_file.is_some())
    {
        fail("MPGATE_PIN_ENDPOINT_URL, MPGATE_PIN_MAX_TOKEN_AGE, MPGATE_PIN_LICENSE_MANAGER_ENDPOINT_URL and MPGATE_PIN_CA_FILE refine a pinned build: set MPGATE_PIN_PRODUCT_CODE and MPGATE_PIN_KEY_DIR (hourly pricing), MPGATE_PIN_PRODUCT_SKU and MPGATE_PIN_ENTITLEMENTS (contract pricing) or MPGATE_PIN_PRICING=usage, MPGATE_PIN_PRODUCT_CODE and MPGATE_PIN_DIMENSIONS (usage pricing) too");
    }
    if hourly && lm_endpoint.is_some() {
        fail("MPGATE_PIN_LICENSE_MANAGER_ENDPOINT_URL refines a pinned contract build, and this build pins hourly pricing (MPGATE_PIN_PRODUCT_CODE): use MPGATE_PIN_ENDPOINT_URL for the Metering endpoint");
    }
    if !contract && sts_endpoint.is_some() {
        fail("MPGATE_PIN_STS_ENDPOINT_URL refines a pinned contract build (STS, for a license token): set MPGATE_PIN_PRODUCT_SKU and MPGATE_PIN_ENTITLEMENTS too");
    }
    if contract && endpoint.is_some() {
        fail("MPGATE_PIN_ENDPOINT_URL names the Metering endpoint of a pinned hourly build, and this build pins contract pricing (MPGATE_PIN_PRODUCT_SKU): use MPGATE_PIN_LICENSE_MANAGER_ENDPOINT_URL");
    }
    if !contract && seat.is_some() {
        fail("MPGATE_PIN_SEAT refines a pinned contract build: set MPGATE_PIN_PRODUCT_SKU and MPGATE_PIN_ENTITLEMENTS too");
    }
    if let Some(seat) = seat.as_deref().filter(|s| !matches!(*s, "check" | "hold")) {
        fail(&format!("MPGATE_PIN_SEAT {seat:?} must be check or hold"));
    }
    if contract && max_age.is_some() {
        fail("MPGATE_PIN_MAX_TOKEN_AGE bounds the age of an hourly product's token, and this build pins contract pricing (MPGATE_PIN_PRODUCT_SKU): unset it");
    }
    let mut rust = String::new();
    let _ = writeln!(rust, "pub const USAGE: bool = {usage};");
    let _ = writeln!(
        rust,
        "pub const DIMENSIONS: &[&str] = &{usage_dimensions:?};"
    );
    match (code, dir) {
        (Some(code), None) if usage => {
            check_product_code(&code);
            let _ = writeln!(rust, "pub const PRODUCT_CODE: Option<&str> = Some({code:?});");
            rust.push_str("pub const KEYS: &[(i32, &str)] = &[];\n");
        }
        (None, None) => {
            rust.push_str("pub const PRODUCT_CODE: Option<&str> = None;\npub const KEYS: &[(i32, &str)] = &[];\n");
        }
        (Some(code), Some(dir)) => {
            check_product_code(&code);
            println!("cargo:rerun-if-changed={dir}");
            let keys = read_key_dir(Path::new(&dir));
            let _ = writeln!(rust, "pub const PRODUCT_CODE: Option<&str> = Some({code:?});");
            rust.push_str("pub const KEYS: &[(i32, &str)] = &[\n");
            for (version, pem) in keys {
                let _ = writeln!(rust, "    ({version}, {pem:?}),");
            }
            rust.push_str("];\n");
        }
        _ => fail("a pinned build needs both MPGATE_PIN_PRODUCT_CODE and MPGATE_PIN_KEY_DIR: pinning one alone would let the other be swapped at run time"),
    }
    match (sku, entitlements) {
        (None, None) => {
            rust.push_str("pub const PRODUCT_SKU: Option<&str> = None;\npub const ENTITLEMENTS: &[&str] = &[];\n");
        }
        (Some(sku), Some(entitlements)) => {
            if sku.chars().count() > 255 || sku.chars().any(|c| c.is_whitespace() || c.is_control()) {
                fail(&format!("MPGATE_PIN_PRODUCT_SKU {sku:?} is not a product SKU: the product ID from the AWS Marketplace Management Portal, 1 to 255 printable characters without spaces"));
            }
            let specs = check_entitlements(&entitlements);
            let _ = writeln!(rust, "pub const PRODUCT_SKU: Option<&str> = Some({sku:?});");
            let _ = writeln!(rust, "pub const ENTITLEMENTS: &[&str] = &{specs:?};");
        }
        _ => fail("a pinned contract build needs both MPGATE_PIN_PRODUCT_SKU and MPGATE_PIN_ENTITLEMENTS: pinning one alone would let the other be swapped at run time"),
    }
    // TLS to a host the seller names, never plain HTTP: an answer over http:// could come from
    // anything on the path.
    for (name, url, service) in [
        ("MPGATE_PIN_ENDPOINT_URL", &endpoint, "Metering"),
        (
            "MPGATE_PIN_LICENSE_MANAGER_ENDPOINT_URL",
            &lm_endpoint,
            "License Manager",
        ),
        ("MPGATE_PIN_STS_ENDPOINT_URL", &sts_endpoint, "STS"),
    ] {
        let Some(url) = url else { continue };
        let host = url.strip_prefix("https://").unwrap_or_else(|| {
            fail(&format!("{name} {url:?} must start with https://: a pinned build never calls {service} over plain HTTP"))
        });
        if host.is_empty()
            || host.starts_with('/')
            || url.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            fail(&format!(
                "{name} {url:?} is not a URL such as https://{}.example.internal",
                match service {
                    "Metering" => "metering",
                    "STS" => "sts",
                    _ => "license-manager",
                }
            ));
        }
    }
    let _ = writeln!(rust, "pub const ENDPOINT_URL: Option<&str> = {endpoint:?};");
    let _ = writeln!(
        rust,
        "pub const LICENSE_MANAGER_ENDPOINT_URL: Option<&str> = {lm_endpoint:?};"
    );
    let _ = writeln!(
        rust,
        "pub const STS_ENDPOINT_URL: Option<&str> = {sts_endpoint:?};"
    );
    let ca_pem = ca_file.map(|path| {
        println!("cargo:rerun-if-changed={path}");
        let pem = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| fail(&format!("MPGATE_PIN_CA_FILE {path}: {e}")));
        if pem.contains("PRIVATE KEY") || !pem.contains("-----BEGIN CERTIFICATE-----") {
            fail(&format!("MPGATE_PIN_CA_FILE {path} is not a PEM file of CA certificates (and never put a private key in a build)"));
        }
        pem
    });
    let _ = writeln!(rust, "pub const CA_PEM: Option<&str> = {ca_pem:?};");
    let _ = writeln!(rust, "pub const SEAT: Option<&str> = {seat:?};");
    let max_age: u64 = match max_age.as_deref() {
        None => 300,
        Some(text) => match text.strip_suffix('s').unwrap_or(text).parse() {
            Ok(seconds @ 1..=3600) if !text.starts_with('0') && !text.starts_with('+') => seconds,
            _ => fail(&format!("MPGATE_PIN_MAX_TOKEN_AGE {text:?} must be a number of seconds from 1 to 3600, e.g. 300")),
        },
    };
    let _ = writeln!(rust, "pub const MAX_TOKEN_AGE_SECS: u64 = {max_age};");
    // For the unit test that keeps this list in step with the SDK's (src/pinned.rs).
    let _ = writeln!(
        rust,
        "#[cfg(test)]\npub const ENTITLEMENT_UNITS: &[&str] = &{UNITS:?};"
    );
    std::fs::write(out.join("pinned.rs"), rust).expect("write pinned.rs");
}

fn check_product_code(code: &str) {
    if code.is_empty()
        || code.len() > 255
        || code.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        fail(&format!("MPGATE_PIN_PRODUCT_CODE {code:?} is not a product code: 1 to 255 printable characters without spaces"));
    }
}

/// A pinned usage build pins the product code and dimensions; the hourly key and token age,
/// and the contract settings, have nothing to refine.
fn check_usage_pins(
    code: &Option<String>,
    dir: &Option<String>,
    sku: &Option<String>,
    entitlements: &Option<String>,
    max_age: &Option<String>,
    lm_endpoint: &Option<String>,
    seat: &Option<String>,
) {
    if code.is_none() {
        fail("a pinned usage build needs MPGATE_PIN_PRODUCT_CODE: the product code MeterUsage reports usage for");
    }
    for (set, name) in [
        (dir.is_some(), "MPGATE_PIN_KEY_DIR"),
        (max_age.is_some(), "MPGATE_PIN_MAX_TOKEN_AGE"),
        (sku.is_some(), "MPGATE_PIN_PRODUCT_SKU"),
        (entitlements.is_some(), "MPGATE_PIN_ENTITLEMENTS"),
        (
            lm_endpoint.is_some(),
            "MPGATE_PIN_LICENSE_MANAGER_ENDPOINT_URL",
        ),
        (seat.is_some(), "MPGATE_PIN_SEAT"),
    ] {
        if set {
            fail(&format!("{name} does not apply to a pinned usage build (MPGATE_PIN_PRICING=usage: MeterUsage answers with no token, and holds no license): unset it"));
        }
    }
}

/// Checks `MPGATE_PIN_DIMENSIONS` with the rules of src/config/usage.rs (1 to 24 names of 1
/// to 255 characters, no spaces, commas, `=` or control characters, none twice), which the
/// binary applies again at run time; returns the names.
fn check_dimensions(list: &str) -> Vec<String> {
    let names: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if names.is_empty() || names.len() > 24 {
        fail("MPGATE_PIN_DIMENSIONS must name 1 to 24 dimensions (a product has at most 24)");
    }
    for (i, name) in names.iter().enumerate() {
        if name.chars().count() > 255
            || name
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '=' || c == ',')
        {
            fail(&format!("MPGATE_PIN_DIMENSIONS: {name:?} is not a dimension API name (1 to 255 characters, no spaces, '=' or control characters)"));
        }
        if names[..i].contains(name) {
            fail(&format!("MPGATE_PIN_DIMENSIONS names {name:?} twice"));
        }
    }
    names
}

/// License Manager's `EntitlementDataUnit` values (a unit test in src/pinned.rs compares them
/// with the SDK's).
const UNITS: [&str; 27] = [
    "Bits",
    "Bits/Second",
    "Bytes",
    "Bytes/Second",
    "Count",
    "Count/Second",
    "Gigabits",
    "Gigabits/Second",
    "Gigabytes",
    "Gigabytes/Second",
    "Kilobits",
    "Kilobits/Second",
    "Kilobytes",
    "Kilobytes/Second",
    "Megabits",
    "Megabits/Second",
    "Megabytes",
    "Megabytes/Second",
    "Microseconds",
    "Milliseconds",
    "None",
    "Percent",
    "Seconds",
    "Terabits",
    "Terabits/Second",
    "Terabytes",
    "Terabytes/Second",
];

/// Checks `MPGATE_PIN_ENTITLEMENTS` with the grammar of src/entitlement.rs (`NAME`,
/// `NAME=VALUE`, `NAME=VALUE:UNIT`; at most 32, no name twice), which the binary applies
/// again at run time; returns the specs, trimmed.
fn check_entitlements(list: &str) -> Vec<String> {
    let specs: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if specs.is_empty() {
        fail("MPGATE_PIN_ENTITLEMENTS names no entitlement: give what the workload needs, e.g. Basic,Seats=1");
    }
    if specs.len() > 32 {
        fail("MPGATE_PIN_ENTITLEMENTS: at most 32 entitlements can be checked out at once");
    }
    let mut names = Vec::new();
    for spec in &specs {
        let bad = |reason: &str| -> ! {
            fail(&format!(
                "MPGATE_PIN_ENTITLEMENTS: invalid entitlement {spec:?}: {reason}"
            ))
        };
        let (name, rest) = match spec.split_once('=') {
            Some((name, rest)) => (name, Some(rest)),
            None => (spec.as_str(), None),
        };
        if name.is_empty()
            || name.chars().count() > 255
            || name.chars().any(|c| c.is_control() || c == ':')
        {
            bad("the name must be the entitlement's API name from the AWS Marketplace Management Portal (no commas, colons or control characters)");
        }
        if names.contains(&name) {
            bad("the name is given twice: ask for each entitlement once");
        }
        names.push(name);
        let Some(rest) = rest else { continue };
        let (value, unit) = rest.split_once(':').unwrap_or((rest, "Count"));
        if !UNITS.contains(&unit) {
            bad(&format!("unknown unit {unit:?}: use one of License Manager's units, e.g. Count, Gigabytes, Bits/Second"));
        }
        if unit == "None" {
            bad("a feature (unit None) takes no value: write the name alone");
        }
        if value.is_empty()
            || value.len() > 18
            || !value.bytes().all(|b| b.is_ascii_digit())
            || value.bytes().all(|b| b == b'0')
        {
            bad("the value must be a whole number of units, 1 or more, e.g. Seats=1");
        }
    }
    specs
}

/// Reads `public-key-v<N>.pem` files; the full key checks run in the binary (exit 2), so a
/// build only refuses what is clearly not a public key.
fn read_key_dir(dir: &Path) -> Vec<(i32, String)> {
    let entries = std::fs::read_dir(dir)
        .unwrap_or_else(|e| fail(&format!("MPGATE_PIN_KEY_DIR {}: {e}", dir.display())));
    let mut keys = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(version) = name
            .strip_prefix("public-key-v")
            .and_then(|rest| rest.strip_suffix(".pem"))
        else {
            continue;
        };
        // As src/keyring.rs reads versions at run time: ^[1-9][0-9]*$, one spelling per number.
        let version: i32 = match version.parse() {
            Ok(v) if v >= 1 && version.bytes().all(|b| b.is_ascii_digit()) && !version.starts_with('0') => v,
            _ => fail(&format!(
                "{name}: the version in public-key-v<N>.pem must be an integer >= 1, digits only, no leading zero"
            )),
        };
        let pem = std::fs::read_to_string(entry.path())
            .unwrap_or_else(|e| fail(&format!("{}: {e}", entry.path().display())));
        if pem.contains("PRIVATE KEY") || !pem.contains("PUBLIC KEY-----") {
            fail(&format!(
                "{name} is not a PEM public key (and never put a private key in a build)"
            ));
        }
        keys.push((version, pem));
    }
    if keys.is_empty() {
        fail(&format!(
            "MPGATE_PIN_KEY_DIR {} holds no public-key-v<N>.pem file",
            dir.display()
        ));
    }
    keys.sort();
    if let Some(pair) = keys.windows(2).find(|pair| pair[0].0 == pair[1].0) {
        fail(&format!("two key files for key version {}", pair[0].0));
    }
    keys
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    panic!("mpgate pinned build: {message}");
}
