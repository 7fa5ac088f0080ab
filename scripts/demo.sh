#!/usr/bin/env bash
# The whole flow on one machine: the gate against the local Metering emulator,
# first for an entitled buyer (the workload starts), then for one who is not (it does not).
set -uo pipefail
cd "$(dirname "$0")/.."

cargo build --locked --quiet --bins || exit 1
bin=target/debug
export MPGATE_LOG_FORMAT=text

echo "== 1. An entitled buyer: mpgate verifies the token, then execs the workload"
"$bin/mpgate-emulator" run -- \
  "$bin/mpgate" -- sh -c 'echo "workload: started as PID $$, entitlement=$MPGATE_ENTITLEMENT, nonce=$MPGATE_NONCE"'
echo "   exit code: $?"
echo
echo "== 2. A buyer who is not subscribed: mpgate refuses and the workload never starts"
"$bin/mpgate-emulator" run --fault not-entitled -- \
  "$bin/mpgate" -- sh -c 'echo "workload: this line must not appear"'
status=$?
echo "   exit code: $status (10 = not entitled)"
[ "$status" -eq 10 ]
