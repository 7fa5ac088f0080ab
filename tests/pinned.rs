//! A pinned build: product code and key ring compiled in, every runtime override refused.
//!
//! The test builds its own pinned mpgate (in target/pinned, so the binary the other suites run
//! is untouched) with the emulator's public keys, then tries every way to swap them.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use mpgate_testkit::{run_bounded, Emulator, CHILD_LIMIT};
use rustls_pki_types::{pem::PemObject, SubjectPublicKeyInfoDer};

/// A cold debug build of the whole dependency tree on 2 cores takes a few minutes.
const BUILD_LIMIT: Duration = Duration::from_secs(20 * 60);

/// Runs `cargo build --bin mpgate` into target/pinned with `pins`; returns (success, stderr).
fn build_pinned(pins: &[(&str, &Path)]) -> (bool, String) {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(manifest_dir)
        .args([
            "build",
            "--locked",
            "--quiet",
            "--bin",
            "mpgate",
            "--target-dir",
        ])
        .arg(manifest_dir.join("target/pinned"))
        .env_remove("MPGATE_PIN_PRODUCT_CODE")
        .env_remove("MPGATE_PIN_KEY_DIR");
    for (name, value) in pins {
        cmd.env(name, value);
    }
    let out = run_bounded(&mut cmd, BUILD_LIMIT);
    (out.status.success(), out.stderr)
}

/// `SHA256:<hex>` of a PEM SPKI file, computed independently of mpgate.
fn spki_fingerprint(pem_file: &Path) -> String {
    let der = SubjectPublicKeyInfoDer::from_pem_file(pem_file).unwrap();
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("SHA256:{hex}")
}

#[test]
fn a_pinned_build_trusts_only_what_was_compiled_in() {
    let emu = Emulator::start(&["--key-versions", "1,2"]);
    let keys: PathBuf = emu.dir.join("keys");
    let (built, stderr) = build_pinned(&[
        ("MPGATE_PIN_PRODUCT_CODE", Path::new(&emu.product_code)),
        ("MPGATE_PIN_KEY_DIR", &keys),
    ]);
    assert!(built, "pinned build failed:\n{stderr}");
    let pinned = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pinned/debug/mpgate");
    // Keep a copy: the failing builds below must not leave the tested binary half-written.
    let binary = emu.dir.join("mpgate-pinned");
    std::fs::copy(&pinned, &binary).unwrap();

    // --version shows what is pinned, with fingerprints a seller can recompute.
    let version = run_bounded(Command::new(&binary).arg("--version"), CHILD_LIMIT);
    assert!(version.status.success());
    let text = version.stdout;
    assert!(
        text.contains(&format!("pinned product code: {}", emu.product_code)),
        "{text}"
    );
    for v in [1, 2] {
        let print = spki_fingerprint(&keys.join(format!("public-key-v{v}.pem")));
        assert!(
            text.contains(&format!("pinned key version {v}: {print}")),
            "{text}"
        );
    }

    // No product code or key in the environment: the pinned ones, newest version first.
    let bare = || {
        let mut gate = emu.gate_with(&binary);
        gate.env_remove("MPGATE_PRODUCT_CODE")
            .env_remove("MPGATE_PUBLIC_KEY_FILE");
        gate
    };
    bare().run().expect(0);
    bare().env("MPGATE_PUBLIC_KEY_VERSION", "1").run().expect(0);
    // Naming the pinned product code is not an override.
    bare()
        .env("MPGATE_PRODUCT_CODE", &emu.product_code)
        .args([Path::new("--"), &binary, Path::new("verify")])
        .run()
        .expect(0);
    let versions: Vec<_> = emu
        .calls()
        .iter()
        .map(|c| c["publicKeyVersion"].clone())
        .collect();
    assert_eq!(versions, [2, 1, 2]);

    // Every override is refused before any call.
    let attacker = Emulator::start(&[]);
    let attacker_key = attacker.public_key_file.to_str().unwrap().to_string();
    let attacker_pem = std::fs::read_to_string(&attacker.public_key_file).unwrap();
    let attacker_dir = attacker.dir.join("keys").to_str().unwrap().to_string();
    type Case<'a> = (Vec<(&'a str, &'a str)>, Vec<&'a str>, &'a str);
    let cases: Vec<Case> = vec![
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
            vec![("MPGATE_PUBLIC_KEY_FILE", &attacker_key)],
            vec![],
            "unset MPGATE_PUBLIC_KEY_FILE",
        ),
        (
            vec![("MPGATE_PUBLIC_KEY", &attacker_pem)],
            vec![],
            "unset MPGATE_PUBLIC_KEY;",
        ),
        (
            vec![("MPGATE_PUBLIC_KEY_DIR", &attacker_dir)],
            vec![],
            "unset MPGATE_PUBLIC_KEY_DIR",
        ),
        (
            vec![],
            vec!["--public-key-file", &attacker_key],
            "unset --public-key-file",
        ),
        (
            vec![],
            vec!["--public-key-dir", &attacker_dir],
            "unset --public-key-dir",
        ),
        (
            vec![("MPGATE_PUBLIC_KEY_VERSION", "3")],
            vec![],
            "this build holds version(s) 1, 2",
        ),
    ];
    for (env, args, hint) in &cases {
        let mut gate = bare();
        for (k, v) in env {
            gate.env(k, v);
        }
        let out = gate.args(args).args(["sh", "-c", "echo ran"]).run();
        out.expect(2);
        assert_eq!(out.stdout, "", "{env:?} {args:?}");
        assert!(
            out.error_message().contains(hint),
            "{hint}: {}",
            out.error_message()
        );
    }
    assert_eq!(emu.calls().len(), 3, "no override reached the network");

    // A fake endpoint signs with its own key: refused even though nothing was overridden.
    let out = attacker
        .gate_with(&binary)
        .env_remove("MPGATE_PRODUCT_CODE")
        .env_remove("MPGATE_PUBLIC_KEY_FILE")
        .env("MPGATE_PUBLIC_KEY_VERSION", "1")
        .run();
    out.expect_error(12, "signature does not verify");

    // Half a pin is a build error, not a binary that trusts the environment for the rest.
    let (built, stderr) = build_pinned(&[("MPGATE_PIN_PRODUCT_CODE", Path::new("prod-x"))]);
    assert!(!built);
    assert!(
        stderr.contains("needs both MPGATE_PIN_PRODUCT_CODE and MPGATE_PIN_KEY_DIR"),
        "{stderr}"
    );
    let bad = emu.dir.join("bad-ring");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::copy(
        keys.join("private-key-v1.pem"),
        bad.join("public-key-v1.pem"),
    )
    .unwrap();
    let (built, stderr) = build_pinned(&[
        ("MPGATE_PIN_PRODUCT_CODE", Path::new("prod-x")),
        ("MPGATE_PIN_KEY_DIR", &bad),
    ]);
    assert!(!built);
    assert!(
        stderr.contains("never put a private key in a build"),
        "{stderr}"
    );
}
