#!/usr/bin/env bash
# The whole flow on one machine: the gate against the local emulator, first for an entitled
# buyer (the workload starts), then for one who is not (it does not); then contract pricing
# (a License Manager license): a seat checked out and held while the workload runs, and more
# seats than the contract has (refused).
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
[ "$status" -eq 10 ] || exit 1
echo
echo "== 3. Contract pricing: mpgate checks a seat out, holds it while the workload runs, checks it in"
MPGATE_PRICING=contract MPGATE_ENTITLEMENTS=Basic,Seats=1 MPGATE_SEAT=hold \
  "$bin/mpgate-emulator" run -- \
  "$bin/mpgate" -- sh -c 'echo "workload: started as PID $$ under mpgate (PID $PPID), license $MPGATE_LICENSE_ARN"; echo "workload: entitlements $MPGATE_LICENSE_ENTITLEMENTS"'
status=$?
echo "   exit code: $status"
[ "$status" -eq 0 ] || exit 1
echo
echo "== 4. More seats than the contract has (the emulator sells 5): refused"
MPGATE_PRICING=contract MPGATE_ENTITLEMENTS=Seats=6 \
  "$bin/mpgate-emulator" run -- \
  "$bin/mpgate" -- sh -c 'echo "workload: this line must not appear"'
status=$?
echo "   exit code: $status (10 = not entitled)"
[ "$status" -eq 10 ]
