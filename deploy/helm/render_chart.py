"""Render a chart with a seller's own values files, offline, with Helm v4's engine.

Usage: python render_chart.py [--chart DIR] [--release NAME] [--namespace NS] VALUES.yaml...
(scripts/render-chart.sh runs it in target/deploy-venv.)

Works like `helm template --dependency-update -f VALUES.yaml...`: the values files are merged
in order (maps key by key, a later file wins; null deletes a default), `file://` dependencies
such as mpgate-lib are resolved in a temporary copy (the tree gets no charts/ or Chart.lock),
and the manifests go to stdout. On a template `fail` or a values.schema.json error it prints
the chart's message to stderr, without a traceback, and exits 1; a bad argument or values
file exits 2.
"""

import argparse
import os
import shutil
import sys
import tempfile

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))


class Refused(Exception):
    """A problem to print as one message (exit 2)."""


def merged(base, patch):
    """patch over base as Helm merges values files: maps key by key, anything else replaced."""
    out = dict(base)
    for k, v in patch.items():
        out[k] = merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_values(paths):
    values = {}
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                doc = yaml.safe_load(f)
        except OSError as e:
            raise Refused(f"cannot read the values file {path}: {e.strerror}") from None
        except yaml.YAMLError as e:
            raise Refused(f"{path} is not valid YAML: {e}") from None
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise Refused(f"{path} must be a YAML mapping of values (key: value), not a {type(doc).__name__}")
        values = merged(values, doc)
    return values


def copy_chart(chart_dir, tmp):
    """Copies the chart, and each file:// dependency at the same relative place, into tmp."""
    meta_path = os.path.join(chart_dir, "Chart.yaml")
    if not os.path.isfile(meta_path):
        raise Refused(f"{chart_dir} is not a chart: it has no Chart.yaml")
    ignore = shutil.ignore_patterns("charts", "Chart.lock", "*.tgz")
    dest = os.path.join(tmp, "chart", os.path.basename(os.path.normpath(chart_dir)))
    shutil.copytree(chart_dir, dest, ignore=ignore)
    with open(meta_path, encoding="utf-8") as f:
        meta = yaml.safe_load(f) or {}
    for dep in meta.get("dependencies") or []:
        repo = str(dep.get("repository") or "")
        if not repo.startswith("file://"):
            continue
        rel = repo[len("file://"):]
        source = os.path.normpath(os.path.join(chart_dir, rel))
        target = os.path.normpath(os.path.join(dest, rel))
        if not target.startswith(tmp + os.sep):
            raise Refused(f"dependency {dep.get('name')}: {repo} is too far outside the chart to copy")
        if not os.path.isdir(source):
            raise Refused(f"dependency {dep.get('name')}: {source} does not exist ({repo} in {meta_path})")
        if not os.path.exists(target):
            shutil.copytree(source, target, ignore=ignore)
    return dest, bool(meta.get("dependencies"))


def refusal(error):
    """The chart's own message from a helm_python error, without Go's location prefix."""
    text = str(error).strip()
    if text.startswith("execution error at ("):
        where, _, message = text.partition("): ")
        return f"{message}\n(from {where[len('execution error at ('):]})"
    return text


def main(argv):
    parser = argparse.ArgumentParser(
        prog="scripts/render-chart.sh",
        description="Render the example chart (or --chart DIR) with your values files, offline.")
    parser.add_argument("--chart", default=os.path.join(HERE, "example-app"),
                        help="the chart directory (default: deploy/helm/example-app)")
    parser.add_argument("--release", default="my-product", help="release name (default: my-product)")
    parser.add_argument("--namespace", default="my-product", help="namespace (default: my-product)")
    parser.add_argument("values", nargs="+", metavar="VALUES.yaml", help="values files, merged in order")
    args = parser.parse_args(argv)

    # Imported late: it loads Helm's engine (a shared library), slow for --help.
    from helm_python.chart import Chart
    from helm_python.errors import HelmError
    from helm_python.registry import dependency_update

    try:
        values = load_values(args.values)
        with tempfile.TemporaryDirectory(prefix="render-chart-") as tmp:
            chart_dir, has_deps = copy_chart(os.path.abspath(args.chart), os.path.realpath(tmp))
            if has_deps:
                dependency_update(chart_dir, skip_refresh=True)
            chart = Chart.load(chart_dir)
            try:
                rendered = chart.render(values, name=args.release, namespace=args.namespace)
            finally:
                chart.close()
    except Refused as e:
        print(f"render-chart: {e}", file=sys.stderr)
        return 2
    except HelmError as e:
        print(f"render-chart: the chart refused these values:\n{refusal(e)}", file=sys.stderr)
        return 1
    out = []
    for path in sorted(rendered):
        text = rendered[path].strip()
        if path.endswith((".yaml", ".yml")) and text:
            out.append(f"---\n# Source: {path}\n{text}\n")
    sys.stdout.write("".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
