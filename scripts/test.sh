#!/usr/bin/env bash
# Every check CI runs: formatting, lints, unit and integration tests (including the
# boto3 conformance test of the emulator, which needs Python's boto3).
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -c 'import boto3, awscli, jwt, cryptography' 2>/dev/null || python3 -m pip install --quiet --disable-pip-version-check boto3 awscli PyJWT cryptography
# tests/signals.rs runs the gate as PID 2 under tini, what `docker --init` and ECS use.
if ! command -v tini >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq tini >/dev/null
fi
cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings
# --workspace: the gate, mpgate-proof (with its doc examples), the emulator (whose binary the
# gate's tests run) and the test kit.
cargo test --workspace --locked
