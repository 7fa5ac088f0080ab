#!/usr/bin/env bash
# Every check CI runs: formatting, lints, unit and integration tests (including the
# boto3 conformance test of the emulator, which needs Python's boto3).
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -c 'import boto3' 2>/dev/null || python3 -m pip install --quiet --disable-pip-version-check boto3
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked
