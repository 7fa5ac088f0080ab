#!/usr/bin/env bash
# Renders the example chart (deploy/helm/example-app with mpgate-lib) with your own values
# files, offline, with the Helm v4 engine scripts/validate-deploy.sh uses (helm-python-sdk in
# target/deploy-venv, set up on the first run; no helm binary, cluster or AWS needed):
#
#   scripts/render-chart.sh [--chart DIR] [--release NAME] [--namespace NS] VALUES.yaml...
#
# The files are merged in order, as `helm template -f A -f B` does. Prints the manifests on
# stdout and exits 0; on a template `fail` or a values.schema.json error prints the chart's
# message on stderr and exits 1; a bad argument or values file exits 2.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
if [ $# -eq 0 ]; then
    echo "usage: scripts/render-chart.sh [--chart DIR] [--release NAME] [--namespace NS] VALUES.yaml..." >&2
    exit 2
fi
. "$root/scripts/deploy-venv.sh"
if ! (cd "$root" && deploy_venv target/deploy-venv deploy/requirements.txt); then
    echo "render-chart: could not install deploy/requirements.txt into $root/target/deploy-venv (needs python3 with venv, and PyPI on the first run)" >&2
    exit 2
fi
exec "$root/target/deploy-venv/bin/python" "$root/deploy/helm/render_chart.py" "$@"
