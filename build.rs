//! Build script: for a pinned build, compiles in the seller's product code, key ring and what
//! else they pin (endpoint, CA certificates, token age); for the static x86_64 release, links
//! without unwind tables.

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

/// `MPGATE_PIN_PRODUCT_CODE` + `MPGATE_PIN_KEY_DIR` (a directory of `public-key-v<N>.pem`)
/// make a pinned build (src/pinned.rs): it then refuses runtime overrides of either, of the
/// Metering endpoint and of the token age. `MPGATE_PIN_ENDPOINT_URL` (one https:// URL),
/// `MPGATE_PIN_CA_FILE` (extra CA certificates) and `MPGATE_PIN_MAX_TOKEN_AGE` (seconds,
/// default 300) are what the seller allows instead, fixed at build time.
fn write_pinned(out: &Path) {
    let var = |name: &str| {
        println!("cargo:rerun-if-env-changed={name}");
        std::env::var(name).ok().filter(|v| !v.is_empty())
    };
    let code = var("MPGATE_PIN_PRODUCT_CODE");
    let dir = var("MPGATE_PIN_KEY_DIR");
    let endpoint = var("MPGATE_PIN_ENDPOINT_URL");
    let ca_file = var("MPGATE_PIN_CA_FILE");
    let max_age = var("MPGATE_PIN_MAX_TOKEN_AGE");
    let mut rust = String::new();
    match (code, dir) {
        (None, None) => {
            if endpoint.is_some() || ca_file.is_some() || max_age.is_some() {
                fail("MPGATE_PIN_ENDPOINT_URL, MPGATE_PIN_CA_FILE and MPGATE_PIN_MAX_TOKEN_AGE refine a pinned build: set MPGATE_PIN_PRODUCT_CODE and MPGATE_PIN_KEY_DIR too");
            }
            rust.push_str("pub const PRODUCT_CODE: Option<&str> = None;\npub const KEYS: &[(i32, &str)] = &[];\n");
        }
        (Some(code), Some(dir)) => {
            if code.is_empty() || code.len() > 255 || code.chars().any(|c| c.is_whitespace() || c.is_control()) {
                fail(&format!("MPGATE_PIN_PRODUCT_CODE {code:?} is not a product code: 1 to 255 printable characters without spaces"));
            }
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
    if let Some(url) = &endpoint {
        // TLS to a host the seller names, never plain HTTP: an answer over http:// could come
        // from anything on the path.
        let host = url.strip_prefix("https://").unwrap_or_else(|| {
            fail(&format!("MPGATE_PIN_ENDPOINT_URL {url:?} must start with https://: a pinned build never calls Metering over plain HTTP"))
        });
        if host.is_empty()
            || host.starts_with('/')
            || url.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            fail(&format!("MPGATE_PIN_ENDPOINT_URL {url:?} is not a URL such as https://metering.example.internal"));
        }
    }
    let _ = writeln!(rust, "pub const ENDPOINT_URL: Option<&str> = {endpoint:?};");
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
    let max_age: u64 = match max_age.as_deref() {
        None => 300,
        Some(text) => match text.strip_suffix('s').unwrap_or(text).parse() {
            Ok(seconds @ 1..=3600) if !text.starts_with('0') && !text.starts_with('+') => seconds,
            _ => fail(&format!("MPGATE_PIN_MAX_TOKEN_AGE {text:?} must be a number of seconds from 1 to 3600, e.g. 300")),
        },
    };
    let _ = writeln!(rust, "pub const MAX_TOKEN_AGE_SECS: u64 = {max_age};");
    std::fs::write(out.join("pinned.rs"), rust).expect("write pinned.rs");
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
