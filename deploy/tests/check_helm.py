"""Lint and render the Helm charts offline (helm-python-sdk embeds Helm's engine).

Usage: python check_helm.py HELM_DIR

Works in a temporary copy, so the tree gets no charts/ or Chart.lock. Prints one line per
check ("ok ..." or "FAIL ...") and exits 1 if any failed. Lint findings of severity
warning or error fail; info findings are printed.
"""

import os
import shutil
import sys
import tempfile

import yaml
from helm_python.chart import Chart, lint
from helm_python.registry import dependency_update

import kube

RELEASE, NAMESPACE = "rel", "my-product"
APP_COMMAND = None  # read from example-app/values.yaml
results = []


def check(name, problems, notes=()):
    problems = [p for p in problems if p]
    results.append(not problems)
    print(f"{'ok  ' if not problems else 'FAIL'} helm: {name}")
    for p in problems:
        for line in str(p).splitlines():
            print(f"       {line}")
    for n in notes:
        print(f"       {n}")


def lint_check(name, path, values=None):
    report = lint(path, values, strict=True, quiet=False)
    found = list(report.get("errors") or [])
    notes = []
    for m in report.get("messages") or []:
        if m["severity"] >= 2:
            found.append(f"{m['path']}: {m['error']}")
        else:
            notes.append(f"(info, not a warning: {m['path']}: {m['error']})")
    check(name, sorted(set(found)), sorted(set(notes)))


def render(chart_dir, values):
    chart = Chart.load(chart_dir)
    try:
        return chart.render(values, name=RELEASE, namespace=NAMESPACE)
    finally:
        chart.close()


def resources_of(rendered):
    out = []
    for path, text in sorted(rendered.items()):
        if path.endswith(".yaml") or path.endswith(".yml"):
            out += kube.load_all(text)
    return out


def deployment(resources):
    deps = [r for r in resources if r["kind"] == "Deployment"]
    assert len(deps) == 1, f"expected one Deployment, got {len(deps)}"
    return deps[0]


def env_of(container):
    return {e["name"]: e.get("value") for e in container.get("env") or []}


def mounts_of(container):
    return {m["name"]: m for m in container.get("volumeMounts") or []}


def mode_problems(mode, resources):
    spec = deployment(resources)["spec"]["template"]["spec"]
    inits = spec.get("initContainers") or []
    app = next(c for c in spec["containers"] if c["name"] == "app")
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    configmaps = {r["metadata"]["name"]: r for r in resources if r["kind"] == "ConfigMap"}
    found = []
    if mode == "initContainer":
        if not inits or inits[0]["name"] != "mpgate":
            return ["the first initContainer is not mpgate"]
        gate = inits[0]
        if gate.get("command") != ["/mpgate"] or gate.get("args"):
            found.append(f"mpgate initContainer must run /mpgate with no args, has {gate.get('command')} {gate.get('args')}")
        env = env_of(gate)
        for k in ("MPGATE_PRODUCT_CODE", "MPGATE_PUBLIC_KEY_VERSION", "MPGATE_PUBLIC_KEY_FILE", "MPGATE_RESULT_FILE"):
            if not env.get(k):
                found.append(f"mpgate initContainer lacks {k}")
        if gate.get("terminationMessagePolicy") != "FallbackToLogsOnError":
            found.append("mpgate initContainer: terminationMessagePolicy is not FallbackToLogsOnError")
        if mounts_of(gate).get("mpgate-run", {}).get("readOnly"):
            found.append("mpgate initContainer must mount mpgate-run writable")
        if not mounts_of(app).get("mpgate-run", {}).get("readOnly"):
            found.append("app must mount mpgate-run read-only")
        if "emptyDir" not in volumes.get("mpgate-run", {}):
            found.append("no emptyDir volume mpgate-run")
        if (app.get("command") or [""])[0] == "/mpgate":
            found.append("app command must not be wrapped in initContainer mode")
        key = os.path.basename(env.get("MPGATE_PUBLIC_KEY_FILE") or "")
        cm = volumes.get("mpgate-public-key", {}).get("configMap", {}).get("name")
        if cm not in configmaps or key not in configmaps[cm].get("data", {}):
            found.append(f"no rendered ConfigMap {cm} with key {key}")
        if [c["name"] for c in inits[1:]] != ["migrate"]:
            found.append(f"the chart's own initContainers should follow mpgate, got {[c['name'] for c in inits]}")
    elif mode == "entrypoint":
        if any(c["name"] == "mpgate" for c in inits):
            found.append("entrypoint mode must not render an mpgate initContainer")
        if app.get("command") != ["/mpgate", "--"] + APP_COMMAND:
            found.append(f"app command must be /mpgate -- {APP_COMMAND}, is {app.get('command')}")
        env = env_of(app)
        if env.get("MPGATE_PRODUCT_CODE") != "prod-abc123":
            found.append("app lacks MPGATE_PRODUCT_CODE")
        if env.get("MPGATE_PUBLIC_KEY_VERSION") != "2" or env.get("MPGATE_PUBLIC_KEY_FILE") != "/etc/mpgate/key-2.pem":
            found.append(f"key version 2 not wired: {env}")
        if env.get("HTTPS_PROXY") is None:
            found.append("extraEnv (HTTPS_PROXY) not passed")
        if "MPGATE_RESULT_FILE" in env:
            found.append("entrypoint mode has no shared result file")
        if volumes.get("mpgate-public-key", {}).get("configMap", {}).get("name") != "my-product-marketplace-keys":
            found.append("existingConfigMap not used for the key volume")
        if configmaps:
            found.append(f"no ConfigMap should be rendered with existingConfigMap, got {list(configmaps)}")
        if not mounts_of(app).get("mpgate-public-key", {}).get("readOnly"):
            found.append("app must mount the key read-only")
    elif mode == "disabled":
        text = yaml.safe_dump_all(resources)
        if "/mpgate" in text or "MPGATE_" in text or "mpgate-" in text:
            found.append("entitlement disabled but mpgate still rendered")
        if app.get("command") != APP_COMMAND:
            found.append(f"app command must be unchanged, is {app.get('command')}")
    sa = [r for r in resources if r["kind"] == "ServiceAccount"]
    if not sa or spec.get("serviceAccountName") != sa[0]["metadata"]["name"]:
        found.append("the pod does not use the chart's ServiceAccount")
    elif mode != "disabled" and "eks.amazonaws.com/role-arn" not in (sa[0]["metadata"].get("annotations") or {}):
        found.append("serviceAccount.annotations (IRSA role) not rendered")
    return found


def must_fail(app_dir, base, overrides, expect):
    values = yaml.safe_load(yaml.safe_dump(base))
    values["marketplace"]["entitlement"].update(overrides)
    try:
        render(app_dir, values)
    except Exception as e:  # HelmRenderError
        return [] if expect in str(e) else [f"failed, but without {expect!r}: {e}"]
    return [f"rendered although {overrides} is invalid"]


def main(helm_dir):
    global APP_COMMAND
    helm_dir = os.path.abspath(helm_dir)
    with tempfile.TemporaryDirectory(prefix="mpgate-helm-") as tmp:
        ignore = shutil.ignore_patterns("charts", "Chart.lock", "*.tgz")
        for name in ("mpgate-lib", "example-app"):
            shutil.copytree(os.path.join(helm_dir, name), os.path.join(tmp, name), ignore=ignore)
        lib_dir, app_dir = os.path.join(tmp, "mpgate-lib"), os.path.join(tmp, "example-app")

        with open(os.path.join(lib_dir, "Chart.yaml"), encoding="utf-8") as f:
            lib_type = yaml.safe_load(f).get("type")
        check("mpgate-lib is a library chart", [] if lib_type == "library" else [f"type is {lib_type}"])
        lint_check("lint mpgate-lib (strict)", lib_dir)

        try:
            dependency_update(app_dir, skip_refresh=True)
            problems = [] if os.listdir(os.path.join(app_dir, "charts")) else ["charts/ is empty"]
        except Exception as e:
            problems = [e]
        check("dependency update example-app (file://../mpgate-lib)", problems)
        if problems:
            return 1

        with open(os.path.join(app_dir, "values.yaml"), encoding="utf-8") as f:
            APP_COMMAND = yaml.safe_load(f)["command"]
        ci = {}
        for mode in ("initContainer", "entrypoint", "disabled"):
            with open(os.path.join(app_dir, "ci", f"{mode.lower()}-values.yaml"), encoding="utf-8") as f:
                ci[mode] = yaml.safe_load(f)
            lint_check(f"lint example-app (strict) with ci/{mode.lower()}-values.yaml", app_dir, ci[mode])

        for mode, values in ci.items():
            try:
                resources = resources_of(render(app_dir, values))
            except Exception as e:
                check(f"render example-app, {mode}", [e])
                continue
            problems = []
            for r in resources:
                problems += kube.validate(r) + kube.security_problems(r)
            kinds = ", ".join(sorted(f"{r['kind']}" for r in resources))
            check(f"render example-app, {mode}: {len(resources)} manifests ({kinds}) valid against Kubernetes {kube.KUBE_VERSION} (strict) and secure", problems)
            try:
                problems = mode_problems(mode, resources)
            except Exception as e:
                problems = [f"{type(e).__name__}: {e}"]
            check(f"render example-app, {mode}: the gate is wired as this mode needs", problems)

        base = ci["initContainer"]
        check("render fails clearly without productCode", must_fail(app_dir, base, {"productCode": ""}, "productCode is required"))
        check("render fails clearly on an invalid mode", must_fail(app_dir, base, {"mode": "sidecar"}, 'mode must be "initContainer" or "entrypoint"'))
        check("render fails clearly without a public key", must_fail(app_dir, base, {"publicKey": ""}, "set publicKey"))
        check("render fails clearly on a bad onTransientError", must_fail(app_dir, base, {"onTransientError": "maybe"}, "onTransientError must be"))
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "deploy/helm"))
