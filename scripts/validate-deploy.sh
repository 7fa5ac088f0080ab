#!/usr/bin/env bash
# Validates every deployment artefact under deploy/ (and the root Dockerfile) offline,
# with the real tools: hadolint, kubernetes-validate, Helm's engine (helm-python-sdk),
# botocore's ECS model, cfn-lint and parliament. No docker, helm, kubectl or AWS needed.
#
#   bash scripts/validate-deploy.sh
#
# The tools go into a virtualenv under target/deploy-venv, created on the first run and
# reinstalled only when deploy/requirements.txt changes. Prints one line per check and
# exits 1 if any check reported an error or a warning.
set -uo pipefail
cd "$(dirname "$0")/.."

VENV=target/deploy-venv
BIN=$VENV/bin
STAMP=$VENV/.requirements.sha256
want=$(sha256sum deploy/requirements.txt | cut -d' ' -f1)
if [ ! -x "$BIN/python" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
    echo "setting up $VENV (first run: about a minute)"
    mkdir -p target
    if ! { python3 -m venv "$VENV" \
        && "$BIN/pip" install --quiet --disable-pip-version-check -r deploy/requirements.txt \
        && echo "$want" > "$STAMP"; }; then
        echo "FAIL setup: could not install deploy/requirements.txt into $VENV"
        exit 1
    fi
fi

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

# Dockerfiles: every rule, down to style, is an error.
for f in Dockerfile deploy/examples/seller-image/Dockerfile; do
    QUIET_OK=1 check "hadolint $f" "$BIN/hadolint" --no-color --failure-threshold style "$f"
done

dockerignore_keeps() {
    local f
    for f in deploy/LICENSE deploy/NOTICE; do
        [ -s "$f" ] || { echo "$f is missing"; return 1; }
        grep -qx "!$f" .dockerignore || { echo ".dockerignore does not re-include $f"; return 1; }
    done
    grep -q '^COPY deploy/LICENSE /LICENSE$' Dockerfile || { echo "Dockerfile does not ship /LICENSE"; return 1; }
}
check ".dockerignore keeps the files the Dockerfile copies" dockerignore_keeps

# Kubernetes manifests: the official schemas, strict; a WARN (no schema) fails too.
k8s_cli() {
    "$BIN/kubernetes-validate" --strict --quiet deploy/kubernetes/*.yaml || return 1
}
QUIET_OK=1 check "kubernetes-validate --strict deploy/kubernetes/*.yaml" k8s_cli
check "deploy/kubernetes: schemas + security baseline (limits, read-only root, non-root, no escalation, drop ALL, RuntimeDefault)" \
    "$BIN/python" deploy/tests/check_k8s.py deploy/kubernetes/*.yaml

# Helm: lint, dependency, render both modes and disabled, validate, negative cases.
# check_helm.py prints its own line per check.
helm_out=$(cd deploy/tests && "../../$BIN/python" check_helm.py ../helm 2>&1)
helm_rc=$?
# Helm's engine logs each template `fail` it evaluates (expected in the negative cases).
printf '%s\n' "$helm_out" | grep -v 'INFO funcMap fail message='
if [ "$helm_rc" -ne 0 ]; then
    failures=$((failures + 1))
fi

# ECS task definitions: botocore's RegisterTaskDefinition input shape + the pattern.
for f in deploy/ecs/taskdef-*.json; do
    check "ECS RegisterTaskDefinition shape + mpgate wiring: $f" "$BIN/python" deploy/tests/check_ecs.py "$f"
done

# CloudFormation: errors, warnings and informational findings all fail.
QUIET_OK=1 check "cfn-lint deploy/ecs/cloudformation.yaml" \
    "$BIN/cfn-lint" --include-checks I -- deploy/ecs/cloudformation.yaml

# IAM: parliament prints findings (any severity) and exits 1 on them.
QUIET_OK=1 check "parliament deploy/iam-policy.json" \
    "$BIN/parliament" --string "$(cat deploy/iam-policy.json)"

if [ "$failures" -ne 0 ]; then
    echo "deploy validation: $failures check(s) FAILED"
    exit 1
fi
echo "deploy validation: all checks passed"
