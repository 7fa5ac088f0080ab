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

# deploy_venv DIR REQUIREMENTS (shared with scripts/render-chart.sh).
. scripts/deploy-venv.sh
if ! deploy_venv target/deploy-venv deploy/requirements.txt; then
    echo "FAIL setup: could not install deploy/requirements.txt into target/deploy-venv"
    exit 1
fi
if ! deploy_venv target/checkov-venv deploy/checkov-requirements.txt; then
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

# scripts/render-chart.sh, as a seller runs it: a good render prints the manifests; a refused
# one prints the chart's sentence (no traceback) and exits 1.
render_chart_good() {
    local out rc=0
    out=$(scripts/render-chart.sh --release shop deploy/helm/example-app/ci/image-values.yaml "$RC_DIR/tag.yaml" 2>"$RC_DIR/err") || rc=$?
    [ "$rc" -eq 0 ] || { echo "exit $rc"; cat "$RC_DIR/err"; return 1; }
    [ ! -s "$RC_DIR/err" ] || { echo "stderr is not empty:"; cat "$RC_DIR/err"; return 1; }
    grep -q '^# Source: example-app/templates/deployment.yaml$' <<<"$out" || { echo "no Deployment in the output"; return 1; }
    grep -q 'name: shop-example-app$' <<<"$out" || { echo "--release not applied"; return 1; }
    grep -q 'image: "registry.example.com/my-product/server-gated:2.0@sha256:' <<<"$out" || { echo "the second values file did not win"; return 1; }
    if grep -q 'MPGATE_PRODUCT_CODE' <<<"$out"; then echo "keySource image without productCode rendered MPGATE_PRODUCT_CODE"; return 1; fi
}
render_chart_refused() {
    local out rc=0 want="marketplace.entitlement.productSku is a setting of pricing contract (AWS License Manager), but pricing is hourly (RegisterUsage), which would ignore it: remove it, or set marketplace.entitlement.pricing to contract"
    out=$(scripts/render-chart.sh "$RC_DIR/hourly-with-sku.yaml" 2>"$RC_DIR/err") || rc=$?
    [ "$rc" -eq 1 ] || { echo "exit $rc, want 1"; cat "$RC_DIR/err"; return 1; }
    [ -z "$out" ] || { echo "printed manifests although refused"; return 1; }
    grep -qxF "$want" "$RC_DIR/err" || { echo "stderr lacks the sentence:"; cat "$RC_DIR/err"; return 1; }
    if grep -q Traceback "$RC_DIR/err"; then cat "$RC_DIR/err"; return 1; fi
    rc=0
    scripts/render-chart.sh "$RC_DIR/schema.yaml" >/dev/null 2>"$RC_DIR/err" || rc=$?
    [ "$rc" -eq 1 ] && grep -qF "at '/marketplace/entitlement/mode': value must be one of 'initContainer', 'entrypoint', 'sidecar'" "$RC_DIR/err" \
        || { echo "schema error: exit $rc"; cat "$RC_DIR/err"; return 1; }
}
RC_DIR=$(mktemp -d)
trap 'rm -f "$LOG"; rm -rf "$RC_DIR"' EXIT
printf 'image:\n  tag: "2.0"\n' > "$RC_DIR/tag.yaml"
printf 'marketplace:\n  entitlement:\n    productSku: prod-sku-abc123example\n' > "$RC_DIR/hourly-with-sku.yaml"
printf 'marketplace:\n  entitlement:\n    mode: daemonset\n' > "$RC_DIR/schema.yaml"
check "scripts/render-chart.sh: renders a seller's values files (merged in order) to stdout" render_chart_good
check "scripts/render-chart.sh: a refused render prints the chart's sentence, no traceback, exit 1" render_chart_refused

# ECS task definitions: botocore's RegisterTaskDefinition input shape + the pattern.
for f in deploy/ecs/taskdef-*.json; do
    check "ECS RegisterTaskDefinition shape + mpgate wiring + key source / contract pricing: $f" "$BIN/python" deploy/tests/check_ecs.py "$f"
done

# CloudFormation: errors, warnings and informational findings all fail.
QUIET_OK=1 check "cfn-lint deploy/ecs/cloudformation.yaml" \
    "$BIN/cfn-lint" --include-checks I -- deploy/ecs/cloudformation.yaml

# IAM: parliament prints findings (any severity) and exits 1 on them. iam-policy.json is
# hourly pricing (RegisterUsage), iam-policy-license-manager.json contract pricing,
# iam-policy-meter-usage.json usage pricing (MeterUsage).
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
