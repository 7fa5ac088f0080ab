//! A pinned build: product code, key ring (or product SKU and entitlements), endpoint, CA
//! certificates and token age compiled in, every runtime override refused before any call.
//!
//! The tests build their own pinned mpgate (in target/pinned, so the binary the other suites
//! run is untouched) with the emulator's public keys or SKU, URL and test CA, then try every
//! way to swap them, as a buyer who controls the container's environment would.

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use common::*;
use mpgate_testkit::{run_bounded, scratch, Emulator, CHILD_LIMIT};
use rustls_pki_types::{pem::PemObject, SubjectPublicKeyInfoDer};

/// A cold debug build of the whole dependency tree on 2 cores takes a few minutes.
const BUILD_LIMIT: Duration = Duration::from_secs(20 * 60);

/// The variables build.rs reads, none inherited from the test's environment.
const PIN_VARIABLES: [&str; 12] = [
    "MPGATE_PIN_PRICING",
    "MPGATE_PIN_DIMENSIONS",
    "MPGATE_PIN_PRODUCT_CODE",
    "MPGATE_PIN_KEY_DIR",
    "MPGATE_PIN_ENDPOINT_URL",
    "MPGATE_PIN_CA_FILE",
    "MPGATE_PIN_MAX_TOKEN_AGE",
    "MPGATE_PIN_PRODUCT_SKU",
    "MPGATE_PIN_ENTITLEMENTS",
    "MPGATE_PIN_LICENSE_MANAGER_ENDPOINT_URL",
    "MPGATE_PIN_SEAT",
    "MPGATE_PIN_STS_ENDPOINT_URL",
];

/// One build into target/pinned at a time, and its binary copied before the next one: the
/// tests of this file run in parallel and share that directory.
static BUILDS: Mutex<()> = Mutex::new(());

/// Runs `cargo build` of the workspace's binaries into target/pinned with `pins` and, if it
/// succeeds and `copy_to` is given, copies mpgate there; returns (success, stderr).
///
/// `--workspace --bins --examples` resolves features as `cargo test --workspace` does (an
/// example is a target that needs the dev-dependencies), and scripts/demo.sh builds the
/// same: with target/pinned seeded from this test's own build, every dependency is fresh
/// there and a pinned build compiles mpgate alone (a cold target/pinned compiled the whole
/// tree again: about 4 of this file's 5 minutes on 2 cores).
fn build_pinned(pins: &[(&str, &Path)], copy_to: Option<&Path>) -> (bool, String) {
    let _one_at_a_time = BUILDS.lock().unwrap_or_else(|e| e.into_inner());
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let pinned = manifest_dir.join("target/pinned");
    seed(&mpgate_testkit::profile_dir(), &pinned.join("debug"));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(manifest_dir)
        .args([
            "build",
            "--locked",
            "--quiet",
            "--workspace",
            "--bins",
            "--examples",
            "--target-dir",
        ])
        .arg(&pinned);
    for name in PIN_VARIABLES {
        cmd.env_remove(name);
    }
    for (name, value) in pins {
        cmd.env(name, value);
    }
    // The build yields the CPU to the tests running beside it (scripts/test.sh runs two test
    // runs at once), whose deadlines are seconds: a build of minutes can stretch.
    // SAFETY: setpriority(2) only, async-signal-safe, in the forked child before its exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::setpriority(libc::PRIO_PROCESS, 0, 10);
            Ok(())
        });
    }
    let out = run_bounded(&mut cmd, BUILD_LIMIT);
    let built = out.status.success();
    if let (true, Some(to)) = (built, copy_to) {
        std::fs::copy(pinned.join("debug/mpgate"), to).unwrap();
    }
    (built, out.stderr)
}

/// Seeds a profile directory that does not exist yet with what cargo needs from `from` to
/// find the dependencies fresh: fingerprints, build-script outputs, and the libraries and
/// dependency files in deps/ (not the test binaries). Modification times are kept: cargo
/// compares them. A directory half seeded is never left under its name.
fn seed(from: &Path, to: &Path) {
    if to.exists() {
        return;
    }
    let partial = to.with_extension("seeding");
    let _ = std::fs::remove_dir_all(&partial);
    copy_tree(
        &from.join(".fingerprint"),
        &partial.join(".fingerprint"),
        &|_| true,
    );
    copy_tree(&from.join("build"), &partial.join("build"), &|_| true);
    copy_tree(&from.join("deps"), &partial.join("deps"), &|file| {
        let ext = file.extension().and_then(|e| e.to_str());
        matches!(ext, Some("rlib" | "rmeta" | "so" | "d"))
    });
    std::fs::rename(&partial, to).unwrap();
}

/// Copies the files under `from` that `keep` keeps (and every directory) to `to`, with
/// their modification times; symbolic links are copied as links.
fn copy_tree(from: &Path, to: &Path, keep: &dyn Fn(&Path) -> bool) {
    std::fs::create_dir_all(to).unwrap();
    let Ok(entries) = std::fs::read_dir(from) else {
        return;
    };
    for entry in entries {
        let entry = entry.unwrap();
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            copy_tree(&source, &target, keep);
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&source).unwrap(), &target).unwrap();
        } else if keep(&source) {
            std::fs::copy(&source, &target).unwrap();
            let modified = entry.metadata().unwrap().modified().unwrap();
            std::fs::File::options()
                .write(true)
                .open(&target)
                .unwrap()
                .set_modified(modified)
                .unwrap();
        }
    }
}

/// `SHA256:<hex>` of bytes, as `sha256sum` prints it, computed independently of mpgate.
fn sha256(bytes: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("SHA256:{hex}")
}

/// A hand-over token for `mpgate verify`, signed with the emulator's private key of `version`.
fn handover_token(
    keys: &Path,
    product: &str,
    version: u32,
    nonce: &str,
    iat: Option<u64>,
) -> String {
    let pem = std::fs::read(keys.join(format!("private-key-v{version}.pem"))).unwrap();
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(&pem).unwrap();
    let mut claims = serde_json::json!({
        "productCode": product, "publicKeyVersion": version, "nonce": nonce
    });
    if let Some(iat) = iat {
        claims["iat"] = iat.into();
    }
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::PS256);
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn a_pinned_build_trusts_only_what_was_compiled_in() {
    // The pinned endpoint: the emulator over TLS, its test CA compiled in. Its first answer
    // is what a relay signing with a key of its own would give.
    let emu = Emulator::start(&[
        "--key-versions",
        "1,2",
        "--tls",
        "--fault",
        "token-wrong-key",
        "--fail-first",
        "1",
    ]);
    let keys: PathBuf = emu.dir.join("keys");
    let ca_file = emu.ca_file.clone().expect("--tls gives a CA file");
    // A copy: the builds below must not change the tested binary.
    let binary = emu.dir.join("mpgate-pinned");
    let (built, stderr) = build_pinned(
        &[
            ("MPGATE_PIN_PRODUCT_CODE", Path::new(&emu.product_code)),
            ("MPGATE_PIN_KEY_DIR", &keys),
            ("MPGATE_PIN_ENDPOINT_URL", Path::new(&emu.url)),
            ("MPGATE_PIN_CA_FILE", &ca_file),
        ],
        Some(&binary),
    );
    assert!(built, "pinned build failed:\n{stderr}");

    // --version shows what is pinned, with fingerprints a seller can recompute.
    let version = run_bounded(Command::new(&binary).arg("--version"), CHILD_LIMIT);
    assert!(version.status.success());
    let text = version.stdout;
    let ca_print = sha256(&std::fs::read(&ca_file).unwrap());
    let mut expected = vec![
        format!("pinned product code: {}", emu.product_code),
        format!("pinned endpoint: {}", emu.url),
        format!("pinned extra CA certificates: {ca_print}"),
        "pinned maximum token age: 300s".to_string(),
    ];
    for v in [1, 2] {
        let der = SubjectPublicKeyInfoDer::from_pem_file(keys.join(format!("public-key-v{v}.pem")));
        expected.push(format!("pinned key version {v}: {}", sha256(&der.unwrap())));
    }
    for line in &expected {
        assert!(text.contains(line.as_str()), "no {line:?} in:\n{text}");
    }

    // Nothing in the environment: the pinned product code, keys (newest version first) and
    // endpoint, over TLS trusted through the compiled-in CA.
    let bare = || {
        let mut gate = emu.gate_with(&binary);
        gate.env_remove("MPGATE_PRODUCT_CODE")
            .env_remove("MPGATE_PUBLIC_KEY_FILE")
            .env_remove("AWS_ENDPOINT_URL_MARKETPLACE_METERING");
        gate
    };
    // The relay's answer: a genuine-looking token under a key that is not pinned.
    bare().run().expect_error(12, "signature does not verify");
    bare().run().expect(0);
    bare().env("MPGATE_PUBLIC_KEY_VERSION", "1").run().expect(0);
    // Naming the pinned product code is not an override.
    bare()
        .env("MPGATE_PRODUCT_CODE", &emu.product_code)
        .args([Path::new("--"), &binary, Path::new("verify")])
        .run()
        .expect(0);
    // SSL_CERT_FILE is ignored, with a warning: the compiled-in CA still works (and below, a
    // build without it fails although SSL_CERT_FILE names the right CA).
    let out = bare().env("SSL_CERT_FILE", &ca_file).run();
    out.expect(0);
    assert!(
        out.stderr.contains("SSL_CERT_FILE ignored"),
        "{}",
        out.stderr
    );
    let versions: Vec<_> = emu
        .calls()
        .iter()
        .map(|c| c["publicKeyVersion"].clone())
        .collect();
    assert_eq!(versions, [2, 2, 1, 2, 2]);

    // Every override is refused before any call, and the relay never hears of it.
    let relay = Emulator::start(&[]);
    let relay_key = relay.public_key_file.to_str().unwrap().to_string();
    let relay_pem = std::fs::read_to_string(&relay.public_key_file).unwrap();
    let relay_dir = relay.dir.join("keys").to_str().unwrap().to_string();
    let (profile_endpoint, profile_services) = relay_profiles(&emu, &relay, "marketplace_metering");
    let mut cases: Vec<Case> = vec![
        (
            vec![("MPGATE_PRODUCT_CODE", "prod-other")],
            vec![],
            "pins product code",
        ),
        (
            vec![],
            vec!["--product-code", "prod-other"],
            "pins product code",
        ),
        (
            vec![("MPGATE_PUBLIC_KEY_FILE", &relay_key)],
            vec![],
            "unset MPGATE_PUBLIC_KEY_FILE",
        ),
        (
            vec![("MPGATE_PUBLIC_KEY", &relay_pem)],
            vec![],
            "unset MPGATE_PUBLIC_KEY;",
        ),
        (
            vec![("MPGATE_PUBLIC_KEY_DIR", &relay_dir)],
            vec![],
            "unset MPGATE_PUBLIC_KEY_DIR",
        ),
        (
            vec![],
            vec!["--public-key-file", &relay_key],
            "unset --public-key-file",
        ),
        (
            vec![],
            vec!["--public-key-dir", &relay_dir],
            "unset --public-key-dir",
        ),
        (
            vec![("MPGATE_PUBLIC_KEY_VERSION", "3")],
            vec![],
            "this build holds version(s) 1, 2",
        ),
        // The token age and the unverified start.
        (
            vec![("MPGATE_MAX_TOKEN_AGE", "1h")],
            vec![],
            "unset MPGATE_MAX_TOKEN_AGE",
        ),
        (
            vec![],
            vec!["--max-token-age", "1h"],
            "unset --max-token-age",
        ),
        (
            vec![("MPGATE_ON_TRANSIENT_ERROR", "allow")],
            vec![],
            "unset MPGATE_ON_TRANSIENT_ERROR=allow",
        ),
        // A contract checkout of a SKU the buyer names proves nothing about this product.
        (
            vec![
                ("MPGATE_PRICING", "contract"),
                ("MPGATE_PRODUCT_SKU", &relay.product_sku),
                ("MPGATE_ENTITLEMENTS", "Basic"),
                ("AWS_ENDPOINT_URL_LICENSE_MANAGER", &relay.url),
            ],
            vec![],
            "unset MPGATE_PRICING=contract",
        ),
        (
            vec![],
            vec!["--pricing", "contract", "--entitlement", "Basic"],
            "unset --pricing contract",
        ),
    ];
    cases.extend(relay_cases(
        &relay.url,
        "AWS_ENDPOINT_URL_MARKETPLACE_METERING",
        &profile_endpoint,
        &profile_services,
    ));
    refuse_all(&bare, &cases);
    assert_eq!(
        emu.calls().len(),
        5,
        "no override reached the pinned endpoint"
    );
    assert_eq!(relay.calls().len(), 0, "no override reached the relay");

    // A pinned gate says nothing of being unpinned, and its result file says it is pinned.
    let result = emu.dir.join("pinned-result.json");
    let out = bare().env("MPGATE_RESULT_FILE", &result).run();
    out.expect(0);
    assert!(!out.stderr.contains(UNPINNED), "{}", out.stderr);
    assert_eq!(mpgate_testkit::result_file(&result)["pinned"], true);

    // The review's reproduction with a pinned gate: one check, five copies of the seller's
    // start script beside the process mpgate exec'd, each refused by the pinned
    // `mpgate verify`; only the exec'd one starts.
    let start = emu.dir.join("start.sh");
    std::fs::write(
        &start,
        "#!/bin/sh\n\"$MPGATE_BIN\" verify || exit 12\necho \"started $$\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&start, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let copies = r#"pids=; for i in 1 2 3 4 5; do "$0" & pids="$pids $!"; done
for p in $pids; do wait "$p"; echo "copy exit $?"; done
exec "$0""#;
    let out = bare()
        .env("MPGATE_BIN", &binary)
        .args([
            Path::new("--"),
            Path::new("sh"),
            Path::new("-c"),
            Path::new(copies),
            &start,
        ])
        .run();
    out.expect(0);
    let mut lines: Vec<&str> = out.stdout.lines().collect();
    lines.sort_unstable();
    let started = format!("started {}", out.pid);
    assert_eq!(
        lines,
        [vec!["copy exit 12"; 5], vec![started.as_str()]].concat(),
        "{}",
        out.stderr
    );
    assert_eq!(out.stderr.matches("made for another process").count(), 5);
    // Its hand-over, copied into another process, fails there.
    let out = bare()
        .args(["--", "sh", "-c", r#"echo "$MPGATE_SALT $MPGATE_SIGNATURE""#])
        .run();
    out.expect(0);
    let (salt, signature) = out.stdout.trim().split_once(' ').unwrap();
    bare()
        .env("MPGATE_SALT", salt)
        .env("MPGATE_SIGNATURE", signature)
        .args(["verify"])
        .run()
        .expect_error(12, "made for another process");

    // `mpgate verify` bounds a replay by the compiled-in age, and needs an iat. The tokens
    // are made for the process that runs it: this test's.
    let salt = "ab".repeat(32);
    let nonce = mpgate_proof::Process::current().unwrap().nonce(&salt);
    let verify = |token: &str, extra: &[(&str, &str)]| {
        let mut gate = bare();
        gate.env("MPGATE_SIGNATURE", token)
            .env("MPGATE_SALT", &salt)
            .args(["verify"]);
        for (k, v) in extra {
            gate.env(k, v);
        }
        gate.run()
    };
    let product = emu.product_code.as_str();
    let fresh = handover_token(&keys, product, 2, &nonce, Some(unix_now()));
    verify(&fresh, &[]).expect(0);
    let stale = handover_token(&keys, product, 2, &nonce, Some(unix_now() - 301));
    verify(&stale, &[]).expect_error(12, "more than the allowed 300s");
    verify(&stale, &[("MPGATE_MAX_TOKEN_AGE", "3600")])
        .expect_error(2, "unset MPGATE_MAX_TOKEN_AGE");
    let ageless = handover_token(&keys, product, 2, &nonce, None);
    verify(&ageless, &[]).expect_error(12, "iat");
    // The same fresh token for another process's nonce: refused whatever its age.
    let elsewhere = handover_token(&keys, product, 2, &"cd".repeat(32), Some(unix_now()));
    verify(&elsewhere, &[]).expect_error(12, "made for another process");

    // Without the compiled-in CA the emulator's certificate is not trusted, even though
    // SSL_CERT_FILE names its CA: a pinned build takes its trust from the build only.
    let without_ca = emu.dir.join("mpgate-pinned-without-ca");
    let (built, stderr) = build_pinned(
        &[
            ("MPGATE_PIN_PRODUCT_CODE", Path::new(&emu.product_code)),
            ("MPGATE_PIN_KEY_DIR", &keys),
            ("MPGATE_PIN_ENDPOINT_URL", Path::new(&emu.url)),
        ],
        Some(&without_ca),
    );
    assert!(built, "pinned build failed:\n{stderr}");
    let calls = emu.calls().len();
    let mut gate = emu.gate_with(&without_ca);
    gate.env_remove("MPGATE_PRODUCT_CODE")
        .env_remove("MPGATE_PUBLIC_KEY_FILE")
        .env_remove("AWS_ENDPOINT_URL_MARKETPLACE_METERING")
        .env("SSL_CERT_FILE", &ca_file);
    gate.run().expect_error(14, "certificate");
    assert_eq!(
        emu.calls().len(),
        calls,
        "no request over an untrusted connection"
    );

    // Half a pin, or a pin that would weaken the build, is a build error.
    let failing: Vec<(Vec<(&str, &Path)>, &str)> = vec![
        (
            vec![("MPGATE_PIN_PRODUCT_CODE", Path::new("prod-x"))],
            "needs both MPGATE_PIN_PRODUCT_CODE and MPGATE_PIN_KEY_DIR",
        ),
        (
            vec![(
                "MPGATE_PIN_ENDPOINT_URL",
                Path::new("https://metering.example"),
            )],
            "refine a pinned build",
        ),
        (
            vec![
                ("MPGATE_PIN_PRODUCT_CODE", Path::new("prod-x")),
                ("MPGATE_PIN_KEY_DIR", &keys),
                ("MPGATE_PIN_ENDPOINT_URL", Path::new("http://127.0.0.1:9")),
            ],
            "must start with https://",
        ),
        (
            vec![
                ("MPGATE_PIN_PRODUCT_CODE", Path::new("prod-x")),
                ("MPGATE_PIN_KEY_DIR", &keys),
                ("MPGATE_PIN_MAX_TOKEN_AGE", Path::new("86400")),
            ],
            "from 1 to 3600",
        ),
    ];
    for (pins, hint) in &failing {
        let (built, stderr) = build_pinned(pins, None);
        assert!(!built, "{pins:?} built");
        assert!(stderr.contains(hint), "{hint}: {stderr}");
    }
    // Rings with a private key, or a second spelling of a version.
    for (file, source, hint) in [
        (
            "public-key-v1.pem",
            "private-key-v1.pem",
            "never put a private key in a build",
        ),
        ("public-key-v+1.pem", "public-key-v1.pem", "digits only"),
        ("public-key-v01.pem", "public-key-v1.pem", "no leading zero"),
    ] {
        let bad = scratch("bad-ring");
        std::fs::copy(keys.join(source), bad.join(file)).unwrap();
        let (built, stderr) = build_pinned(
            &[
                ("MPGATE_PIN_PRODUCT_CODE", Path::new("prod-x")),
                ("MPGATE_PIN_KEY_DIR", &bad),
            ],
            None,
        );
        assert!(!built, "{file} built");
        assert!(stderr.contains(hint), "{hint}: {stderr}");
    }
}

#[test]
fn a_pinned_contract_build_checks_out_only_what_was_compiled_in() {
    // The pinned License Manager and STS endpoint: the emulator over TLS (Basic and Seats=5
    // for sale), its test CA compiled in; a license token for it, as the buyer's secret. It
    // also serves ECS container credentials, under the same test CA.
    let secret = mpgate_testkit::scratch("pinned-secret");
    let token_file = secret.join("license_token");
    let emu = Emulator::start(&[
        "--tls",
        "--license-token-file",
        token_file.to_str().unwrap(),
        "--container-credentials-token",
        "pinned-ca-token",
    ]);
    let ca_file = emu.ca_file.clone().expect("--tls gives a CA file");
    let binary = emu.dir.join("mpgate-pinned-contract");
    let (built, stderr) = build_pinned(
        &[
            ("MPGATE_PIN_PRODUCT_SKU", Path::new(&emu.product_sku)),
            ("MPGATE_PIN_ENTITLEMENTS", Path::new("Basic, Seats=1")),
            (
                "MPGATE_PIN_LICENSE_MANAGER_ENDPOINT_URL",
                Path::new(&emu.url),
            ),
            ("MPGATE_PIN_STS_ENDPOINT_URL", Path::new(&emu.url)),
            ("MPGATE_PIN_CA_FILE", &ca_file),
            // Copies limited to the seats bought: the buyer cannot switch to `check`.
            ("MPGATE_PIN_SEAT", Path::new("hold")),
        ],
        Some(&binary),
    );
    assert!(built, "pinned contract build failed:\n{stderr}");

    let version = run_bounded(Command::new(&binary).arg("--version"), CHILD_LIMIT);
    assert!(version.status.success());
    let text = version.stdout;
    let ca_print = sha256(&std::fs::read(&ca_file).unwrap());
    for line in [
        "pinned pricing: contract (AWS License Manager)".to_string(),
        format!("pinned product SKU: {}", emu.product_sku),
        "pinned entitlements: Basic,Seats=1".to_string(),
        format!("pinned License Manager endpoint: {}", emu.url),
        format!("pinned STS endpoint (license token): {}", emu.url),
        format!("pinned extra CA certificates: {ca_print}"),
        "pinned seat: hold".to_string(),
    ] {
        assert!(text.contains(line.as_str()), "no {line:?} in:\n{text}");
    }
    assert!(
        !text.contains("product code") && !text.contains("token age"),
        "{text}"
    );

    // Nothing in the environment but the region and credentials: the pinned SKU and
    // entitlements, checked out at the pinned endpoint over TLS trusted through the
    // compiled-in CA, and checked back in.
    let bare = || {
        let mut gate = emu.gate_with(&binary);
        gate.env_remove("MPGATE_PRODUCT_CODE")
            .env_remove("MPGATE_PUBLIC_KEY_FILE")
            .env_remove("AWS_ENDPOINT_URL_MARKETPLACE_METERING");
        gate
    };
    let show = ["sh", "-c", r#"printf '%s\n' "$MPGATE_LICENSE_ARN""#];
    let out = bare().args(show).run();
    out.expect(0);
    assert_eq!(out.stdout.trim(), emu.license_arn, "{out:?}");
    let calls = license_calls(&emu);
    let ops: Vec<&str> = calls.iter().map(|(op, _)| op.as_str()).collect();
    assert_eq!(ops, ["CheckoutLicense", "CheckInLicense"], "{calls:?}");
    assert_eq!(calls[0].1["productSku"], emu.product_sku);
    assert_eq!(
        calls[0].1["entitlements"],
        serde_json::json!([
            {"Name": "Basic", "Unit": "None"},
            {"Name": "Seats", "Unit": "Count", "Value": "1"},
        ])
    );
    // Naming the pinned pricing, SKU, entitlements (in another order) and seat mode is not an
    // override; the grace stays a runtime setting.
    bare()
        .env("MPGATE_PRICING", "contract")
        .env("MPGATE_PRODUCT_SKU", &emu.product_sku)
        .env("MPGATE_ENTITLEMENTS", "Seats=1,Basic")
        .env("MPGATE_SEAT", "hold")
        .env("MPGATE_GRACE", "5s")
        .args(show)
        .run()
        .expect(0);
    // FIPS or dual-stack cannot move a compiled-in URL: exit 2 naming the variable, never
    // 14 (issue 26, item 4), and no checkout.
    let before = license_calls(&emu).len();
    for variable in ["AWS_USE_FIPS_ENDPOINT", "AWS_USE_DUALSTACK_ENDPOINT"] {
        let out = bare().env(variable, "true").args(show).run();
        out.expect_error(2, variable);
        assert!(
            out.error_message().contains("compiled into this build"),
            "{}",
            out.stderr
        );
    }
    assert_eq!(
        license_calls(&emu).len(),
        before,
        "no call with FIPS refused"
    );
    // SSL_CERT_FILE is ignored, with a warning; the compiled-in CA still works.
    let out = bare().env("SSL_CERT_FILE", &ca_file).args(show).run();
    out.expect(0);
    assert!(
        out.stderr.contains("SSL_CERT_FILE ignored"),
        "{}",
        out.stderr
    );
    let checkouts = || {
        license_calls(&emu)
            .iter()
            .filter(|(op, _)| op == "CheckoutLicense")
            .count()
    };
    assert_eq!(checkouts(), 3);

    // The compiled-in CA vouches for the pinned endpoint's host alone (issue 26, item 7):
    // the same server, with the same certificate from that CA, is refused as any other host.
    // Credentials from the container endpoint named by the pinned host work...
    let uri = emu.ready["containerCredentialsUri"].as_str().unwrap();
    let pinned_host = emu.url.strip_prefix("https://").unwrap();
    assert!(uri.contains(pinned_host), "{uri} is not at {pinned_host}");
    let from_container = |uri: &str| {
        let mut gate = bare();
        gate.env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_SESSION_TOKEN")
            .env("AWS_CONTAINER_CREDENTIALS_FULL_URI", uri)
            .env("AWS_CONTAINER_AUTHORIZATION_TOKEN", "pinned-ca-token")
            .args(show);
        gate.run()
    };
    let fetches = || {
        emu.calls()
            .iter()
            .filter(|c| c["target"] == "ContainerCredentials")
            .count()
    };
    from_container(uri).expect(0);
    assert_eq!((fetches(), checkouts()), (1, 4));
    // ...and by another name for the same address (the certificate names both) they are
    // refused at the handshake: the CA is not trusted for that host, so nothing is sent.
    let elsewhere = uri.replace("127.0.0.1", "localhost");
    let out = from_container(&elsewhere);
    out.expect(15);
    assert!(out.stderr.contains("certificate"), "{}", out.stderr);
    assert_eq!(
        (fetches(), checkouts()),
        (1, 4),
        "a request went over a connection the pinned CA vouched for, to another host"
    );

    // Every override is refused before any call, and the relay never hears of it.
    let relay = Emulator::start(&[]);
    let (profile_endpoint, profile_services) = relay_profiles(&emu, &relay, "license_manager");
    let mut cases: Vec<Case> = vec![
        (
            vec![("MPGATE_PRODUCT_SKU", "prod-sku-other")],
            vec![],
            "pins product SKU",
        ),
        (
            vec![],
            vec!["--product-sku", "prod-sku-other"],
            "pins product SKU",
        ),
        (
            vec![("MPGATE_ENTITLEMENTS", "Basic,Seats=5")],
            vec![],
            "pins the entitlements Basic,Seats=1",
        ),
        (
            vec![],
            vec!["--entitlement", "Basic"],
            "pins the entitlements Basic,Seats=1",
        ),
        (
            vec![("MPGATE_PRICING", "hourly")],
            vec![],
            "unset MPGATE_PRICING=hourly",
        ),
        (
            vec![],
            vec!["--pricing", "hourly"],
            "unset --pricing hourly",
        ),
        (
            vec![("MPGATE_ON_TRANSIENT_ERROR", "allow")],
            vec![],
            "unset MPGATE_ON_TRANSIENT_ERROR=allow",
        ),
        (
            vec![("MPGATE_SEAT", "check")],
            vec![],
            "unset MPGATE_SEAT=check",
        ),
        (vec![], vec!["--seat", "check"], "unset --seat check"),
    ];
    cases.extend(relay_cases(
        &relay.url,
        "AWS_ENDPOINT_URL_LICENSE_MANAGER",
        &profile_endpoint,
        &profile_services,
    ));
    let before = emu.calls().len();
    refuse_all(&bare, &cases);
    // `mpgate verify` checks an hourly product's token; this build has none to check.
    let mut verify = bare();
    verify
        .env("MPGATE_SIGNATURE", "t")
        .env("MPGATE_SALT", "ab".repeat(32))
        .args(["verify"]);
    verify
        .run()
        .expect_error(2, "checks the token of hourly pricing (RegisterUsage) only");
    assert_eq!(
        emu.calls().len(),
        before,
        "no override reached the pinned endpoint"
    );
    assert_eq!(relay.calls().len(), 0, "no override reached the relay");

    // The buyer's license token is theirs to give, but STS is pinned like License Manager:
    // the token goes to the compiled-in endpoint, never to one the environment names.
    let tokened = || {
        let mut gate = bare();
        gate.env("MPGATE_LICENSE_TOKEN_FILE", &token_file);
        gate
    };
    let before = emu.calls().len();
    let out = tokened().args(show).run();
    out.expect(0);
    assert_eq!(out.stdout.trim(), emu.license_arn, "{out:?}");
    let calls = emu.calls();
    let targets: Vec<&str> = calls[before..]
        .iter()
        .filter_map(|c| c["target"].as_str())
        .collect();
    assert_eq!(
        targets,
        [
            "AWSLicenseManager.GetAccessToken",
            "AssumeRoleWithWebIdentity",
            "AWSLicenseManager.CheckoutLicense",
            "AWSLicenseManager.CheckInLicense"
        ]
    );
    let issued = calls[before + 1]["issuedAccessKeyId"].as_str().unwrap();
    let scope = calls[before + 2]["credentialScope"].as_str().unwrap();
    assert!(
        scope.starts_with(issued),
        "{scope} signed with the role's {issued}"
    );
    let (_, sts_services) = relay_profiles(&emu, &relay, "sts");
    let before = emu.calls().len();
    refuse_all(
        &tokened,
        &[
            (
                vec![("AWS_ENDPOINT_URL_STS", relay.url.as_str())],
                vec![],
                "unset AWS_ENDPOINT_URL_STS;",
            ),
            (
                vec![("AWS_CONFIG_FILE", sts_services.as_str())],
                vec![],
                "unset services in the AWS config profile \"default\"",
            ),
        ],
    );
    assert_eq!(emu.calls().len(), before, "no call with an STS override");
    assert_eq!(relay.calls().len(), 0, "no token reached the relay");

    // Both pricing models, half a contract pin, or a pin that would weaken the build, is a
    // build error.
    let keys = emu.dir.join("keys");
    let sku = Path::new(&emu.product_sku);
    let failing: Vec<(Vec<(&str, &Path)>, &str)> = vec![
        (
            vec![
                ("MPGATE_PIN_PRODUCT_CODE", Path::new("prod-x")),
                ("MPGATE_PIN_KEY_DIR", &keys),
                ("MPGATE_PIN_PRODUCT_SKU", sku),
                ("MPGATE_PIN_ENTITLEMENTS", Path::new("Basic")),
            ],
            "not both",
        ),
        (
            vec![("MPGATE_PIN_PRODUCT_SKU", sku)],
            "needs both MPGATE_PIN_PRODUCT_SKU and MPGATE_PIN_ENTITLEMENTS",
        ),
        (
            vec![
                ("MPGATE_PIN_PRODUCT_SKU", sku),
                ("MPGATE_PIN_ENTITLEMENTS", Path::new("Basic")),
                (
                    "MPGATE_PIN_LICENSE_MANAGER_ENDPOINT_URL",
                    Path::new("http://127.0.0.1:9"),
                ),
            ],
            "must start with https://",
        ),
        (
            vec![
                ("MPGATE_PIN_PRODUCT_SKU", sku),
                ("MPGATE_PIN_ENTITLEMENTS", Path::new("Basic,Seats=0")),
            ],
            "whole number of units",
        ),
        (
            vec![
                ("MPGATE_PIN_PRODUCT_SKU", sku),
                ("MPGATE_PIN_ENTITLEMENTS", Path::new("Basic")),
                ("MPGATE_PIN_SEAT", Path::new("borrow")),
            ],
            "must be check or hold",
        ),
        (
            vec![
                ("MPGATE_PIN_PRODUCT_SKU", sku),
                ("MPGATE_PIN_ENTITLEMENTS", Path::new("Basic")),
                (
                    "MPGATE_PIN_STS_ENDPOINT_URL",
                    Path::new("http://127.0.0.1:9"),
                ),
            ],
            "MPGATE_PIN_STS_ENDPOINT_URL \"http://127.0.0.1:9\" must start with https://",
        ),
    ];
    for (pins, hint) in &failing {
        let (built, stderr) = build_pinned(pins, None);
        assert!(!built, "{pins:?} built");
        assert!(stderr.contains(hint), "{hint}: {stderr}");
    }
}

#[test]
fn a_pinned_usage_build_meters_only_what_was_compiled_in() {
    // The pinned Metering endpoint: the emulator over TLS, selling nodes and gb, its test CA
    // compiled in.
    let emu = Emulator::start(&["--tls", "--dimension", "nodes", "--dimension", "gb"]);
    let ca_file = emu.ca_file.clone().expect("--tls gives a CA file");
    let binary = emu.dir.join("mpgate-pinned-usage");
    let (built, stderr) = build_pinned(
        &[
            ("MPGATE_PIN_PRICING", Path::new("usage")),
            ("MPGATE_PIN_PRODUCT_CODE", Path::new(&emu.product_code)),
            ("MPGATE_PIN_DIMENSIONS", Path::new("nodes, gb")),
            ("MPGATE_PIN_ENDPOINT_URL", Path::new(&emu.url)),
            ("MPGATE_PIN_CA_FILE", &ca_file),
        ],
        Some(&binary),
    );
    assert!(built, "pinned usage build failed:\n{stderr}");
    let version = run_bounded(Command::new(&binary).arg("--version"), CHILD_LIMIT);
    assert!(version.status.success());
    let text = version.stdout;
    for line in [
        "pinned pricing: usage (MeterUsage)".to_string(),
        format!("pinned product code: {}", emu.product_code),
        "pinned dimensions: nodes,gb".to_string(),
        format!("pinned endpoint: {}", emu.url),
    ] {
        assert!(text.contains(line.as_str()), "no {line:?} in:\n{text}");
    }
    assert!(
        !text.contains("key version") && !text.contains("token age"),
        "{text}"
    );

    // Nothing in the environment but the region and credentials.
    let bare = || {
        let mut gate = emu.gate_with(&binary);
        gate.env_remove("MPGATE_PRODUCT_CODE")
            .env_remove("MPGATE_PUBLIC_KEY_FILE")
            .env_remove("AWS_ENDPOINT_URL_MARKETPLACE_METERING");
        gate
    };
    let show = ["sh", "-c", "echo \"$MPGATE_ENTITLEMENT\""];
    let out = bare().args(show).run();
    out.expect(0);
    assert_eq!(out.stdout.trim(), "verified");
    let calls = meter_calls(&emu);
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0]["usageDimension"], "nodes");
    // Naming the pinned pricing, product code and dimensions (in another order), and starting
    // with another pinned dimension, is no override.
    bare()
        .env("MPGATE_PRICING", "usage")
        .env("MPGATE_PRODUCT_CODE", &emu.product_code)
        .env("MPGATE_DIMENSIONS", "gb,nodes")
        .env("MPGATE_START_DIMENSION", "gb")
        .args(show)
        .run()
        .expect(0);
    assert_eq!(meter_calls(&emu)[1]["usageDimension"], "gb");

    let relay = Emulator::start(&[]);
    let (profile_endpoint, profile_services) = relay_profiles(&emu, &relay, "marketplace_metering");
    let mut cases: Vec<Case> = vec![
        (
            vec![("MPGATE_PRODUCT_CODE", "prod-other")],
            vec![],
            "pins product code",
        ),
        (
            vec![("MPGATE_DIMENSIONS", "nodes")],
            vec![],
            "pins the dimensions nodes,gb",
        ),
        (vec![], vec!["--dimension", "cpus"], "unset --dimension"),
        (
            vec![("MPGATE_METERING_HOUR", "2s")],
            vec![],
            "unset MPGATE_METERING_HOUR",
        ),
        // Metrics of the buyer's own would bill less: a pinned build meters by push only.
        (
            vec![("MPGATE_SCRAPE_URL", "http://127.0.0.1:9100/metrics")],
            vec![],
            "unset MPGATE_SCRAPE_URL",
        ),
        (
            vec![("MPGATE_DIMENSIONS", "nodes=active_nodes:max,gb")],
            vec![],
            "unset the metrics named in MPGATE_DIMENSIONS",
        ),
        (
            vec![("MPGATE_PRICING", "hourly")],
            vec![],
            "unset MPGATE_PRICING=hourly",
        ),
        (
            vec![],
            vec!["--pricing", "contract"],
            "unset --pricing contract",
        ),
        (
            vec![("MPGATE_ON_TRANSIENT_ERROR", "allow")],
            vec![],
            "unset MPGATE_ON_TRANSIENT_ERROR=allow",
        ),
    ];
    cases.extend(relay_cases(
        &relay.url,
        "AWS_ENDPOINT_URL_MARKETPLACE_METERING",
        &profile_endpoint,
        &profile_services,
    ));
    let before = emu.calls().len();
    refuse_all(&bare, &cases);
    bare().args(["verify"]).run().expect_error(
        2,
        "this pinned build (see 'mpgate --version') is usage pricing",
    );
    assert_eq!(emu.calls().len(), before, "no call for a refused override");
    assert!(relay.calls().is_empty(), "the relay was called");

    // What a pinned usage build cannot be built with.
    let code = Path::new("prod-x");
    let failing: Vec<(Vec<(&str, &Path)>, &str)> = vec![
        (
            vec![
                ("MPGATE_PIN_PRODUCT_CODE", code),
                ("MPGATE_PIN_DIMENSIONS", Path::new("nodes")),
            ],
            "set MPGATE_PIN_PRICING=usage too",
        ),
        (
            vec![
                ("MPGATE_PIN_PRICING", Path::new("usage")),
                ("MPGATE_PIN_PRODUCT_CODE", code),
            ],
            "needs MPGATE_PIN_DIMENSIONS",
        ),
        (
            vec![
                ("MPGATE_PIN_PRICING", Path::new("usage")),
                ("MPGATE_PIN_PRODUCT_CODE", code),
                ("MPGATE_PIN_DIMENSIONS", Path::new("nodes")),
                ("MPGATE_PIN_KEY_DIR", Path::new("/nonexistent")),
            ],
            "MPGATE_PIN_KEY_DIR does not apply to a pinned usage build",
        ),
        (
            vec![
                ("MPGATE_PIN_PRICING", Path::new("usage")),
                ("MPGATE_PIN_PRODUCT_CODE", code),
                ("MPGATE_PIN_DIMENSIONS", Path::new("nodes,nodes")),
            ],
            "names \"nodes\" twice",
        ),
        (
            vec![("MPGATE_PIN_PRICING", Path::new("metered"))],
            "must be hourly, contract or usage",
        ),
    ];
    for (pins, hint) in &failing {
        let (built, stderr) = build_pinned(pins, None);
        assert!(!built, "{pins:?} built");
        assert!(stderr.contains(hint), "{hint}: {stderr}");
    }
}

/// A refused override: variables, flags, and a piece of the message.
type Case<'a> = (Vec<(&'a str, &'a str)>, Vec<&'a str>, &'a str);

/// AWS config files whose default profile sends the service (`key` in a `services` section,
/// or `endpoint_url`) to `relay`.
fn relay_profiles(emu: &Emulator, relay: &Emulator, key: &str) -> (String, String) {
    let write = |name: &str, text: String| {
        let path = emu.dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    (
        write(
            "aws-config-endpoint",
            format!(
                "[default]\nregion = {}\nendpoint_url = {}\n",
                emu.region, relay.url
            ),
        ),
        write(
            "aws-config-services",
            format!(
                "[default]\nservices = relay\n\n[services relay]\n{key} =\n  endpoint_url = {}\n",
                relay.url
            ),
        ),
    )
}

/// The relay: every way the SDK would take an endpoint from the environment.
fn relay_cases<'a>(
    relay: &'a str,
    service_variable: &'a str,
    profile_endpoint: &'a str,
    profile_services: &'a str,
) -> Vec<Case<'a>> {
    vec![
        (
            vec![],
            vec!["--endpoint-url", relay],
            "unset --endpoint-url",
        ),
        (vec![(service_variable, relay)], vec![], service_variable),
        (
            vec![("AWS_ENDPOINT_URL", relay)],
            vec![],
            "unset AWS_ENDPOINT_URL;",
        ),
        (
            vec![("AWS_CONFIG_FILE", profile_endpoint)],
            vec![],
            "unset endpoint_url in the AWS config profile \"default\"",
        ),
        (
            vec![("AWS_CONFIG_FILE", profile_services)],
            vec![],
            "unset services in the AWS config profile \"default\"",
        ),
    ]
}

/// Runs each case: exit 2 with its message, and the workload never starts.
fn refuse_all(bare: &dyn Fn() -> Gate, cases: &[Case]) {
    for (env, args, hint) in cases {
        let mut gate = bare();
        for (k, v) in env {
            gate.env(k, v);
        }
        let out = gate
            .args(args)
            .args(["sh", "-c", "echo WORKLOAD STARTED"])
            .run();
        out.expect(2);
        assert!(!out.stdout.contains("WORKLOAD STARTED"), "{env:?} {args:?}");
        assert!(
            out.error_message().contains(hint),
            "{hint}: {}",
            out.error_message()
        );
    }
}

/// FIPS end to end in a build pinned to the SDK's rules (no compiled-in URL): the call goes to
/// the region's FIPS host, and to the ordinary one without the flag. The proxy (HTTPS_PROXY)
/// shows where the gate connected; the tunnel ends at the emulator, whose certificate is not
/// for that host, so the start fails (14) without a request: only the destination is shown.
#[test]
fn a_build_pinned_to_the_rules_calls_the_fips_host_when_asked() {
    let emu = Emulator::start(&["--tls"]);
    let keys: PathBuf = emu.dir.join("keys");
    let binary = emu.dir.join("mpgate-pinned-rules");
    let (built, stderr) = build_pinned(
        &[
            ("MPGATE_PIN_PRODUCT_CODE", Path::new(&emu.product_code)),
            ("MPGATE_PIN_KEY_DIR", &keys),
        ],
        Some(&binary),
    );
    assert!(built, "pinned build failed:\n{stderr}");
    for (fips, host) in [
        (
            Some("true"),
            "metering.marketplace-fips.us-east-1.amazonaws.com:443",
        ),
        (None, "metering.marketplace.us-east-1.amazonaws.com:443"),
    ] {
        let proxy = mpgate_testkit::proxy::Proxy::start(
            format!("127.0.0.1:{}", emu.port()).parse().unwrap(),
        );
        let mut gate = emu.gate_with(&binary);
        gate.env_remove("MPGATE_PRODUCT_CODE")
            .env_remove("MPGATE_PUBLIC_KEY_FILE")
            .env_remove("AWS_ENDPOINT_URL_MARKETPLACE_METERING")
            .env("AWS_REGION", "us-east-1")
            .env("HTTPS_PROXY", &proxy.url);
        if let Some(value) = fips {
            gate.env("AWS_USE_FIPS_ENDPOINT", value);
        }
        gate.run().expect_error(14, "certificate");
        let seen = proxy.requests();
        assert!(
            seen.iter()
                .any(|r| r.starts_with(&format!("CONNECT {host} "))),
            "{fips:?}: {seen:?}"
        );
    }
    assert_eq!(emu.calls().len(), 0, "no request over an untrusted tunnel");
}
