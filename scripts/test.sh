#!/usr/bin/env bash
# Every check CI runs: formatting, lints, unit and integration tests (including the
# boto3 conformance test of the emulator).
#
# Python's packages (scripts/test-requirements.txt) go into a virtual environment,
# target/test-venv, made on the first run (about a minute) and put first on PATH for the
# tests: nothing is installed into the system's Python (which Debian 12 and Ubuntu 24.04
# refuse, PEP 668). tests/signals.rs also needs Debian's `tini` (what `docker --init` runs).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v tini >/dev/null 2>&1; then
  echo "scripts/test.sh: the signal tests need tini (Debian/Ubuntu: apt-get install tini)" >&2
  exit 1
fi
venv=target/test-venv
want=$(sha256sum scripts/test-requirements.txt | cut -d' ' -f1)
if [ ! -x "$venv/bin/python3" ] || [ "$(cat "$venv/.requirements.sha256" 2>/dev/null)" != "$want" ]; then
  echo "setting up $venv from scripts/test-requirements.txt (first run: about a minute)"
  mkdir -p target
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/test-requirements.txt
  echo "$want" > "$venv/.requirements.sha256"
fi
PATH="$PWD/$venv/bin:$PATH"
export PATH

python3 scripts/check-docs.py
cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings
# --workspace: the gate, mpgate-proof (with its doc examples), the emulator (whose binary the
# gate's tests run) and the test kit. Built first; then two runs at once: most tests wait on
# timers and child processes (a run alone keeps 2 cores a quarter busy), and
# tests/pinned.rs, which compiles, overlaps them. The first run takes the test targets
# named here, the second every other one (a new test file lands there) and the unit tests,
# then the doc tests (the examples are built, as cargo test builds them, by --no-run).
cargo test --workspace --locked --no-run
first=(pinned anywhere lease)
second=()
while read -r name; do
  [[ " ${first[*]} " == *" $name "* ]] || second+=(--test "$name")
done < <(cargo metadata --locked --no-deps --format-version 1 | python3 -c '
import json, sys
for package in json.load(sys.stdin)["packages"]:
    for target in package["targets"]:
        if "test" in target["kind"]:
            print(target["name"])')
first_log=$(mktemp)
trap 'rm -f "$first_log"' EXIT
cargo test --workspace --locked "${first[@]/#/--test=}" >"$first_log" 2>&1 &
first_pid=$!
status=0
cargo test --workspace --locked --lib --bins "${second[@]}" || status=$?
[ "$status" -ne 0 ] || cargo test --workspace --locked --doc || status=$?
first_status=0
wait "$first_pid" || first_status=$?
echo "== cargo test --workspace ${first[*]/#/--test=}"
cat "$first_log"
[ "$first_status" -eq 0 ] || { echo "scripts/test.sh: the tests above failed" >&2; exit "$first_status"; }
exit "$status"
