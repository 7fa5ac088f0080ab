//! The seller's own settings under `mpgate-emulator run`: kept, never overwritten, so a typo fails as on AWS.

use std::path::Path;
use std::process::Command;

use mpgate_testkit::{emulator_exe, run_bounded, scratch, Exit, CHILD_LIMIT};

const MPGATE: &str = env!("CARGO_BIN_EXE_mpgate");

/// `mpgate-emulator run ARGS -- mpgate` in an environment of PATH, a private HOME and `env`
/// only: the seller's image, as far as its settings go.
fn run_gate(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Exit {
    run_bounded(
        Command::new(emulator_exe())
            .arg("run")
            .args(args)
            .args(["--", MPGATE])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", dir)
            .env("MPGATE_TERMINATION_LOG", dir.join("termination-log"))
            .env("MPGATE_TIMEOUT", "10s")
            .envs(env.iter().copied()),
        CHILD_LIMIT,
    )
}

/// run's one line: the first line of its stderr.
fn run_line(out: &Exit) -> &str {
    let line = out.stderr.lines().next().unwrap_or_default();
    assert!(
        line.starts_with("mpgate-emulator: serving "),
        "{}",
        out.stderr
    );
    line
}

#[test]
fn a_product_code_typo_fails_as_on_aws() {
    let dir = scratch("run-typo");
    let out = run_gate(
        &dir,
        &["--product-code", "prod-real"],
        &[("MPGATE_PRODUCT_CODE", "prod-typo")],
    );
    assert_eq!(out.status.code(), Some(13), "{}", out.stderr);
    assert!(
        run_line(&out).contains("product code prod-real")
            && run_line(&out).contains("kept MPGATE_PRODUCT_CODE=prod-typo"),
        "{}",
        out.stderr
    );
    for words in [
        "InvalidProductCodeException",
        "prod-typo",
        "MPGATE_PRODUCT_CODE",
    ] {
        assert!(out.stderr.contains(words), "lacks {words}: {}", out.stderr);
    }
    // The right code passes.
    let out = run_gate(
        &dir,
        &["--product-code", "prod-real"],
        &[("MPGATE_PRODUCT_CODE", "prod-real")],
    );
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
}

#[test]
fn a_product_sku_typo_gets_the_answer_for_no_license() {
    let dir = scratch("run-sku-typo");
    let contract = [
        ("MPGATE_PRICING", "contract"),
        ("MPGATE_ENTITLEMENTS", "Basic"),
    ];
    let typo = [contract.as_slice(), &[("MPGATE_PRODUCT_SKU", "sku-typo")]].concat();
    let out = run_gate(&dir, &["--product-sku", "sku-real"], &typo);
    assert_eq!(out.status.code(), Some(10), "{}", out.stderr);
    assert!(
        run_line(&out).contains("kept MPGATE_PRICING=contract, MPGATE_PRODUCT_SKU=sku-typo"),
        "{}",
        out.stderr
    );
    for words in ["NoEntitlementsAllowedException", "sku-typo"] {
        assert!(out.stderr.contains(words), "lacks {words}: {}", out.stderr);
    }
    // Left to run, the SKU is the emulator's.
    let out = run_gate(&dir, &["--product-sku", "sku-real"], &contract);
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    assert!(
        run_line(&out).contains("MPGATE_PRODUCT_SKU=sku-real"),
        "{}",
        out.stderr
    );
}

#[test]
fn the_image_s_key_directory_written_by_the_emulator_is_used_alone() {
    let dir = scratch("run-key-dir");
    let ring = dir.join("keys");
    let ring_str = ring.to_str().unwrap();
    let keys = dir.join("emulator-keys");
    let out = run_gate(
        &dir,
        &[
            "--key-dir",
            keys.to_str().unwrap(),
            "--key-versions",
            "1,2",
            "--write-key-dir",
            ring_str,
        ],
        &[("MPGATE_PUBLIC_KEY_DIR", ring_str)],
    );
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    assert!(!out.stderr.contains("more than one"), "{}", out.stderr);
    let line = run_line(&out);
    assert!(
        line.ends_with(&format!("; kept MPGATE_PUBLIC_KEY_DIR={ring_str}"))
            && !line.contains("MPGATE_PUBLIC_KEY_FILE"),
        "{line}"
    );
    // The gate took the highest version of the ring.
    assert!(
        out.stderr.contains(r#""public_key_version":2"#),
        "{}",
        out.stderr
    );
}
