#!/usr/bin/env bash
# The whole flow on one machine, against the local emulator: an entitled buyer (the workload
# starts), a buyer who is not subscribed (it does not), then contract pricing: a seat held
# while the workload runs, and more seats than the contract has (refused).
#
#   bash scripts/demo.sh            # one line per step
#   bash scripts/demo.sh --verbose  # also the emulator's ready line and request log
#
# Every step's exit code is checked; the first unexpected one stops the demo with a hint.
set -uo pipefail
cd "$(dirname "$0")/.."

emulator_output=--quiet
case "${1:-}" in
  "") ;;
  -v | --verbose) emulator_output=--verbose ;;
  *) echo "usage: bash scripts/demo.sh [--verbose]" >&2; exit 2 ;;
esac

echo "building mpgate and mpgate-emulator (the first build takes a few minutes: aws-lc compiles C)"
# Every binary of the workspace (at its root a bare `cargo build` builds the root package
# only), with the examples: cargo then resolves features as `cargo test --workspace` does, so
# scripts/test.sh (and the other scripts) reuse this build instead of compiling the
# dependencies again with other features.
if ! cargo build --locked --quiet --workspace --bins --examples; then
  echo "demo: the build failed (above); it needs Rust (rustup) and a C compiler (gcc) for aws-lc" >&2
  exit 1
fi
bin=target/debug
# The gate's one log line per run, readable (JSON lines are for log collectors).
export MPGATE_LOG_FORMAT=text
step=0

# scenario WANT TITLE EMULATOR_ARGS... -- GATE_ARGS...: runs the gate under the emulator and
# stops the demo unless it exits with WANT.
scenario() {
  local want=$1 title=$2 status
  shift 2
  step=$((step + 1))
  echo
  echo "$step. $title"
  timeout 60 "$bin/mpgate-emulator" run "$emulator_output" "$@"
  status=$?
  if [ "$status" -ne "$want" ]; then
    echo "demo: step $step exited $status, expected $want; run 'bash scripts/demo.sh --verbose' to see the emulator's requests" >&2
    exit 1
  fi
  echo "   -> exit $status, as expected"
}

scenario 0 "An entitled buyer: mpgate verifies AWS's signed answer, then execs the workload" \
  -- "$bin/mpgate" -- sh -c 'echo "   workload: PID $$, MPGATE_ENTITLEMENT=$MPGATE_ENTITLEMENT"'

scenario 10 "A buyer who is not subscribed: mpgate refuses (exit 10) and the workload never starts" \
  --fault not-entitled -- "$bin/mpgate" -- sh -c 'echo "   workload: this line must not appear"'

MPGATE_PRICING=contract MPGATE_ENTITLEMENTS=Basic,Seats=1 MPGATE_SEAT=hold \
  scenario 0 "Contract pricing: a seat is checked out, held while the workload runs, then checked in" \
  -- "$bin/mpgate" -- sh -c 'echo "   workload: PID $$ under mpgate (PID $PPID), which holds the seat"'

MPGATE_PRICING=contract MPGATE_ENTITLEMENTS=Seats=6 \
  scenario 10 "More seats than the contract has (the emulator sells 5): refused" \
  -- "$bin/mpgate" -- sh -c 'echo "   workload: this line must not appear"'

echo
echo "demo: all $step steps behaved as expected"
