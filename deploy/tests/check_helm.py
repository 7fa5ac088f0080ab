"""Lint, render and test the Helm charts offline (helm-python-sdk embeds Helm's engine).

Usage: python check_helm.py HELM_DIR OUT_DIR

Works in a temporary copy, so the tree gets no charts/ or Chart.lock. Writes the manifests
rendered with each ci/*-values.yaml (and the umbrella release) to OUT_DIR/<case>/, for
checkov. Prints one line per check ("ok ..." or "FAIL ...") and exits 1 if any failed.
Lint findings of severity warning or error fail; info findings are printed.
"""

import copy
import os
import re
import shutil
import sys
import tarfile
import tempfile

import yaml
from helm_python.chart import Chart, lint, package
from helm_python.registry import dependency_update

import kube
from mpgate_env import HOURLY_VARS, KEY_VARS, pod_uid_problems, seconds

PRODUCT_CODE = "prod-abc123example"  # the example shape used throughout deploy/

RELEASE, NAMESPACE = "rel", "my-product"
results = []
CASES = ("initContainer", "entrypoint", "image", "pinned", "disabled", "contract", "contract-init", "contract-anywhere", "usage", "usage-sidecar")
TOKEN_DIR = "/var/run/secrets/product-license"  # AWS's seller guide's mount path


def check(name, problems, notes=()):
    problems = [p for p in problems if p]
    results.append(not problems)
    print(f"{'ok  ' if not problems else 'FAIL'} helm: {name}")
    for p in problems:
        for line in str(p).splitlines():
            print(f"       {line}")
    for n in notes:
        print(f"       {n}")


def guarded(name, fn, *args):
    """check(name, fn(*args)), where an exception is a failure too."""
    try:
        problems = fn(*args)
    except Exception as e:  # noqa: BLE001 - any error is the check's failure
        problems = [f"{type(e).__name__}: {e}"]
    check(name, problems)


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


def render(chart_dir, values, name=RELEASE):
    chart = Chart.load(chart_dir)
    try:
        return chart.render(values, name=name, namespace=NAMESPACE)
    finally:
        chart.close()


def resources_of(rendered):
    out = []
    for path, text in sorted(rendered.items()):
        if path.endswith((".yaml", ".yml")):
            out += kube.load_all(text)
    return out


def write_manifests(rendered, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    for path, text in rendered.items():
        if path.endswith((".yaml", ".yml")) and kube.load_all(text):
            name = path.replace("/templates/", "-").replace("/charts/", "-").replace("/", "-")
            with open(os.path.join(out_dir, name), "w", encoding="utf-8") as f:
                f.write(text)


def deployments(resources):
    return [r for r in resources if r["kind"] == "Deployment"]


def deployment(resources):
    deps = deployments(resources)
    assert len(deps) == 1, f"expected one Deployment, got {len(deps)}"
    return deps[0]


def env_of(container):
    return {e["name"]: e.get("value") for e in container.get("env") or []}


def mounts_of(container):
    return {m["name"]: m for m in container.get("volumeMounts") or []}


def merged(base, patch):
    """base with patch merged in, as Helm merges values (maps key by key)."""
    out = copy.deepcopy(base)
    for k, v in patch.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merged(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


# --- what each case needs ---------------------------------------------------------------

def key_problems(where, container, spec, configmaps, key_source, version=None):
    """The key wiring of the container that runs mpgate, for one key source."""
    env = env_of(container)
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    found = []
    set_vars = [k for k in KEY_VARS if k in env]
    if key_source in ("image", "pinned"):
        if set_vars:
            found.append(f"{where}: keySource {key_source} must set no key variable, sets {set_vars}")
        if "mpgate-keys" in volumes or "mpgate-keys" in mounts_of(container):
            found.append(f"{where}: keySource {key_source} must mount no key volume")
        if configmaps:
            found.append(f"{where}: keySource {key_source} must render no ConfigMap, got {sorted(configmaps)}")
    else:
        if set_vars != ["MPGATE_PUBLIC_KEY_DIR"] or env["MPGATE_PUBLIC_KEY_DIR"] != "/etc/mpgate/keys":
            found.append(f"{where}: keySource {key_source} must set MPGATE_PUBLIC_KEY_DIR=/etc/mpgate/keys alone, sets {set_vars}")
        mount = mounts_of(container).get("mpgate-keys", {})
        if mount.get("mountPath") != "/etc/mpgate/keys" or not mount.get("readOnly"):
            found.append(f"{where}: the key ring must be mounted read-only at /etc/mpgate/keys, is {mount}")
        cm = volumes.get("mpgate-keys", {}).get("configMap", {}).get("name")
        if key_source == "configMap":
            data = configmaps.get(cm, {}).get("data") or {}
            if not data or not all(re.fullmatch(r"public-key-v[1-9][0-9]*\.pem", k) for k in data):
                found.append(f"{where}: ConfigMap {cm} must hold public-key-v<N>.pem files, holds {sorted(data)}")
            if version is not None and f"public-key-v{version}.pem" not in data:
                found.append(f"{where}: version {version} is not in ConfigMap {cm}")
        elif cm != "my-product-marketplace-keys":
            found.append(f"{where}: existingConfigMap not used for the key volume (got {cm})")
    if version is None and "MPGATE_PUBLIC_KEY_VERSION" in env:
        found.append(f"{where}: no publicKeyVersion set, so no MPGATE_PUBLIC_KEY_VERSION (the highest version is the default)")
    if version is not None and env.get("MPGATE_PUBLIC_KEY_VERSION") != str(version):
        found.append(f"{where}: MPGATE_PUBLIC_KEY_VERSION should be {version}, is {env.get('MPGATE_PUBLIC_KEY_VERSION')}")
    return found


def case_problems(case, values, resources):
    spec = deployment(resources)["spec"]["template"]["spec"]
    inits = spec.get("initContainers") or []
    app = next(c for c in spec["containers"] if c["name"] == "app")
    configmaps = {r["metadata"]["name"]: r for r in resources if r["kind"] == "ConfigMap"}
    e = (values.get("marketplace") or {}).get("entitlement") or {}
    key_source = e.get("keySource", "configMap")
    version = e.get("publicKeyVersion")
    found = []
    command = values.get("command") or DEFAULTS["command"]
    if case in ("initContainer", "pinned"):
        if not inits or inits[0]["name"] != "mpgate":
            return ["the first initContainer is not mpgate"]
        gate = inits[0]
        if gate.get("command") != ["/mpgate"] or gate.get("args"):
            found.append(f"mpgate initContainer must run /mpgate with no args, has {gate.get('command')} {gate.get('args')}")
        env = env_of(gate)
        if env.get("MPGATE_RESULT_FILE") != "/run/mpgate/result.json":
            found.append("mpgate initContainer lacks MPGATE_RESULT_FILE")
        if gate.get("terminationMessagePolicy") != "FallbackToLogsOnError":
            found.append("mpgate initContainer: terminationMessagePolicy is not FallbackToLogsOnError")
        if mounts_of(gate).get("mpgate-run", {}).get("readOnly"):
            found.append("mpgate initContainer must mount mpgate-run writable")
        if not mounts_of(app).get("mpgate-run", {}).get("readOnly"):
            found.append("app must mount mpgate-run read-only")
        if (app.get("command") or [""])[0] == "/mpgate":
            found.append("app command must not be wrapped in initContainer mode")
        found += key_problems("mpgate initContainer", gate, spec, configmaps, key_source, version)
        # The app container runs `mpgate verify --result-file "$MPGATE_RESULT_FILE" --renew`
        # at its own start: it needs the gate's product code, key and settings, the key ring
        # and the result directory, read-only.
        if env_of(app) != env:
            found.append(f"the app must get the gate's variables for mpgate verify --renew: app {env_of(app)}, gate {env}")
        found += pod_uid_problems("mpgate initContainer", gate) + pod_uid_problems("app", app)
        found += key_problems("app", app, spec, configmaps, key_source, version)
        if case == "pinned":
            if "MPGATE_PRODUCT_CODE" in env:
                found.append("pinned without productCode must not set MPGATE_PRODUCT_CODE")
        else:
            if env.get("MPGATE_PRODUCT_CODE") != PRODUCT_CODE:
                found.append("mpgate initContainer lacks MPGATE_PRODUCT_CODE")
            if [c["name"] for c in inits[1:]] != ["migrate"]:
                found.append(f"the chart's own initContainers should follow mpgate, got {[c['name'] for c in inits]}")
            anno = deployment(resources)["spec"]["template"]["metadata"].get("annotations") or {}
            if "checksum/mpgate-keys" not in anno:
                found.append("keySource configMap: the pod template lacks checksum/mpgate-keys")
        image = e.get("image") or {}
        want = f"{DEFAULTS_GATE_IMAGE['registry']}/{image.get('repository', DEFAULTS_GATE_IMAGE['repository'])}:{DEFAULTS_GATE_IMAGE['tag']}@{image['digest']}"
        if gate.get("image") != want:
            found.append(f"gate image should be {want} (from values only), is {gate.get('image')}")
        if spec.get("imagePullSecrets") != ([{"name": "marketplace-pull"}] if case == "initContainer" else None):
            found.append(f"imagePullSecrets not rendered as given: {spec.get('imagePullSecrets')}")
    elif case in ("entrypoint", "image"):
        if any(c["name"] == "mpgate" for c in inits):
            found.append("entrypoint mode must not render an mpgate initContainer")
        if app.get("command") != ["/mpgate", "--"] + command:
            found.append(f"app command must be /mpgate -- {command}, is {app.get('command')}")
        env = env_of(app)
        if case == "entrypoint" and env.get("MPGATE_PRODUCT_CODE") != PRODUCT_CODE:
            found.append("app lacks MPGATE_PRODUCT_CODE")
        if case == "image" and "MPGATE_PRODUCT_CODE" in env:
            found.append("keySource image without productCode must render no MPGATE_PRODUCT_CODE: the image's own code must win")
        if "MPGATE_RESULT_FILE" in env:
            found.append("entrypoint mode has no shared result file")
        found += key_problems("app", app, spec, configmaps, key_source, version)
        if case == "entrypoint":
            if env.get("HTTPS_PROXY") is None:
                found.append("marketplace.entitlement.extraEnv (HTTPS_PROXY) not passed to the container that runs mpgate")
            if configmaps:
                found.append(f"no ConfigMap should be rendered with existingConfigMap, got {list(configmaps)}")
    elif case in ("contract", "contract-init", "contract-anywhere"):
        found += contract_problems(case, e, spec, app, inits, configmaps, deployment(resources), command)
    elif case in ("usage", "usage-sidecar"):
        found += usage_problems(case, e, spec, app, inits, configmaps, deployment(resources), command)
    elif case == "disabled":
        text = yaml.safe_dump_all(resources)
        if "/mpgate" in text or "MPGATE_" in text or "mpgate-" in text:
            found.append("entitlement disabled but mpgate still rendered")
        if app.get("command") != command:
            found.append(f"app command must be unchanged, is {app.get('command')}")
    for c in inits + spec["containers"]:
        if "AWS_REGION" in env_of(c) or "AWS_DEFAULT_REGION" in env_of(c):
            found.append(f"container {c['name']} sets a region: the platform must (IRSA webhook, ECS)")
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        if not app.get(probe):
            found.append(f"app has no {probe}")
    policies = [r for r in resources if r["kind"] == "NetworkPolicy"]
    if not policies:
        found.append("no NetworkPolicy rendered")
    else:
        found += netpol_problems(policies[0], spec, deployment(resources))
    sa = values.get("serviceAccount") or {}
    sas = [r for r in resources if r["kind"] == "ServiceAccount"]
    if sa.get("create", True):
        if not sas or spec.get("serviceAccountName") != sas[0]["metadata"]["name"]:
            found.append("the pod does not use the chart's ServiceAccount")
        elif case == "contract-anywhere":
            if "eks.amazonaws.com/role-arn" in (sas[0]["metadata"].get("annotations") or {}):
                found.append("a license token and IRSA are exclusive: the ServiceAccount has an IRSA role")
        elif case != "disabled" and "eks.amazonaws.com/role-arn" not in (sas[0]["metadata"].get("annotations") or {}):
            found.append("serviceAccount.annotations (IRSA role) not rendered")
    else:
        if sas:
            found.append("serviceAccount.create=false must render no ServiceAccount")
        if spec.get("serviceAccountName") != sa.get("name"):
            found.append(f"the pod must use serviceAccount.name {sa.get('name')}, uses {spec.get('serviceAccountName')}")
    for r in resources:
        if r["metadata"].get("namespace") != NAMESPACE:
            found.append(f"{r['kind']}/{r['metadata']['name']} has no metadata.namespace {NAMESPACE}")
    return found


def contract_problems(case, e, spec, app, inits, configmaps, dep, command):
    """pricing contract: License Manager settings, no product code and no key anywhere;
    seat hold only in entrypoint mode, with room to check the seat in at stop."""
    found = []
    init = case == "contract-init"
    if init:
        if not inits or inits[0]["name"] != "mpgate":
            return ["the first initContainer is not mpgate"]
        gate = inits[0]
        if gate.get("command") != ["/mpgate"] or gate.get("args"):
            found.append(f"mpgate initContainer must run /mpgate with no args, has {gate.get('command')} {gate.get('args')}")
        if env_of(gate).get("MPGATE_RESULT_FILE") != "/run/mpgate/result.json":
            found.append("mpgate initContainer lacks MPGATE_RESULT_FILE")
        if not mounts_of(app).get("mpgate-run", {}).get("readOnly"):
            found.append("app must mount mpgate-run read-only (result.json: pricing, licenseArn, entitlements...)")
        if set(env_of(app)) != {"MPGATE_RESULT_FILE"}:
            found.append(f"the app needs only MPGATE_RESULT_FILE, has {sorted(env_of(app))}")
        if (app.get("command") or [""])[0] == "/mpgate":
            found.append("app command must not be wrapped in initContainer mode")
    else:
        gate = app
        if any(c["name"] == "mpgate" for c in inits):
            found.append("entrypoint mode must not render an mpgate initContainer")
        if app.get("command") != ["/mpgate", "--"] + command:
            found.append(f"app command must be /mpgate -- {command}, is {app.get('command')}")
    env = env_of(gate)
    want = {"MPGATE_PRICING": "contract", "MPGATE_PRODUCT_SKU": e.get("productSku"),
            "MPGATE_ENTITLEMENTS": ",".join(e.get("entitlements") or []), "MPGATE_SEAT": e.get("seat", "check")}
    for k, v in want.items():
        if env.get(k) != v:
            found.append(f"{gate['name']}: {k} should be {v!r}, is {env.get(k)!r}")
    stray = [k for k in HOURLY_VARS if k in env]
    if stray:
        found.append(f"{gate['name']}: pricing contract needs no product code or key, sets {stray}")
    volumes = {v["name"] for v in spec.get("volumes") or []}
    if "mpgate-keys" in volumes or configmaps:
        found.append(f"pricing contract must render no key volume or ConfigMap, has {sorted(volumes)} {sorted(configmaps)}")
    if "checksum/mpgate-keys" in (dep["spec"]["template"]["metadata"].get("annotations") or {}):
        found.append("pricing contract: no checksum/mpgate-keys annotation (no key ring)")
    period = spec.get("terminationGracePeriodSeconds")
    if e.get("seat") == "hold":
        if init:
            found.append("seat hold cannot be an init container")
        if env.get("MPGATE_GRACE") != e.get("grace", "30s"):
            found.append(f"seat hold: MPGATE_GRACE should be {e.get('grace', '30s')}, is {env.get('MPGATE_GRACE')}")
        need = seconds(e.get("grace", "30s")) + 5
        if period is None or period < need:
            found.append(f"seat hold: terminationGracePeriodSeconds {period} leaves no room to stop the workload and check the seat in (at least grace + 5 = {need})")
    else:
        if "MPGATE_GRACE" in env:
            found.append("seat check: MPGATE_GRACE is for seat hold only")
        if period is not None:
            found.append(f"seat check: keep the default terminationGracePeriodSeconds, is {period}")
    found += token_problems(e, spec, gate, [c for c in inits + spec["containers"] if c is not gate])
    return found


def token_problems(e, spec, gate, others):
    """licenseToken: the buyer's Secret mounted read-only, only into the container that runs
    mpgate, which gets the token file and the region (the role from iam_role beside it);
    without one, no token variable or volume at all."""
    token = e.get("licenseToken") or {}
    env = env_of(gate)
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    found = []
    if not token.get("secretName"):
        if {"MPGATE_LICENSE_TOKEN_FILE", "MPGATE_LICENSE_REGION"} & set(env) or "mpgate-license-token" in volumes:
            found.append("no licenseToken: no token variable or volume may be rendered")
        return found
    want = {"MPGATE_LICENSE_TOKEN_FILE": f"{TOKEN_DIR}/license_token", "MPGATE_LICENSE_REGION": token.get("region")}
    for k, v in want.items():
        if env.get(k) != v:
            found.append(f"{gate['name']}: {k} should be {v!r}, is {env.get(k)!r}")
    for k in ("AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_REGION"):
        if k in env:
            found.append(f"{gate['name']}: a license token needs no {k}")
    secret = (volumes.get("mpgate-license-token") or {}).get("secret") or {}
    items = sorted((i["key"], i["path"]) for i in secret.get("items") or [])
    if (secret.get("secretName") != token["secretName"] or secret.get("optional") is not False
            or items != [("iam_role", "iam_role"), ("license_token", "license_token")] or secret.get("defaultMode") != 0o440):
        found.append(f"the token volume must be Secret {token['secretName']!r}, optional: false, items license_token and iam_role, mode 0440: {secret}")
    mount = mounts_of(gate).get("mpgate-license-token") or {}
    if mount.get("mountPath") != TOKEN_DIR or mount.get("readOnly") is not True:
        found.append(f"{gate['name']}: the token must be mounted read-only at {TOKEN_DIR}, is {mount}")
    for c in others:
        if "mpgate-license-token" in mounts_of(c) or {"MPGATE_LICENSE_TOKEN_FILE", "MPGATE_LICENSE_REGION"} & set(env_of(c)):
            found.append(f"{c['name']}: only the container that runs mpgate may see the license token")
    return found


def token_init_problems(app_dir, contract_init):
    """initContainer mode with a license token: only the init container mounts the Secret
    (the workload container never sees the token); global and the chart's own values merge
    field by field."""
    values = merged(contract_init, {
                                    "global": {"marketplace": {"entitlement": {"licenseToken": {"secretName": "awsmp-license-token-secret"}}}},
                                    # null: the chart's own "" would win over global.
                                    "marketplace": {"entitlement": {"licenseToken": {"secretName": None, "region": "xx-example-1"}}}})
    # No IRSA role beside a token (the render refuses both).
    values["serviceAccount"]["annotations"].pop("eks.amazonaws.com/role-arn", None)
    resources = resources_of(render(app_dir, values))
    found = []
    for r in resources:
        found += kube.validate(r)
    spec = deployment(resources)["spec"]["template"]["spec"]
    gate = spec["initContainers"][0]
    e = {"licenseToken": {"secretName": "awsmp-license-token-secret", "region": "xx-example-1"}}
    found += token_problems(e, spec, gate, [c for c in spec["initContainers"][1:] + spec["containers"]])
    app = next(c for c in spec["containers"] if c["name"] == "app")
    if set(env_of(app)) != {"MPGATE_RESULT_FILE"}:
        found.append(f"the app needs only MPGATE_RESULT_FILE, has {sorted(env_of(app))}")
    notes = next((t for p, t in render(app_dir, values).items() if p.endswith("NOTES.txt")), "")
    for want in ('Secret "awsmp-license-token-secret"', "AWSLicenseManagerConsumptionPolicy", "openid-license-manager.amazonaws.com"):
        if want not in notes:
            found.append(f"NOTES.txt (license token) does not mention {want!r}")
    if "WARNING: the ServiceAccount has no eks.amazonaws.com/role-arn" in notes:
        found.append("NOTES.txt (license token) must not ask for IRSA")
    return found


USAGE_VARS = ("MPGATE_PRICING", "MPGATE_DIMENSIONS", "MPGATE_START_DIMENSION", "MPGATE_LEDGER_DIR", "MPGATE_FLUSH_TIMEOUT")
CONTRACT_VARS = ("MPGATE_PRODUCT_SKU", "MPGATE_ENTITLEMENTS", "MPGATE_SEAT")


def usage_problems(case, e, spec, app, inits, configmaps, dep, command):
    """pricing usage: the agent's variables in the container that runs mpgate (the app in
    entrypoint mode, the native sidecar in sidecar mode), the ledger emptyDir on disk mounted
    writable there, and in sidecar mode read-only in the app with MPGATE_USAGE_SOCKET; no key,
    no contract setting; a stop timeout with room for the last partial hour."""
    found = []
    sidecar = case == "usage-sidecar"
    ledger = e.get("ledgerDir", "/var/lib/mpgate")
    if sidecar:
        if not inits or inits[0]["name"] != "mpgate":
            return ["the first initContainer is not the mpgate sidecar"]
        agent = inits[0]
        if agent.get("restartPolicy") != "Always":
            found.append(f"the mpgate sidecar needs restartPolicy Always (a native sidecar), has {agent.get('restartPolicy')}")
        if agent.get("command") != ["/mpgate"] or agent.get("args"):
            found.append(f"the mpgate sidecar must run /mpgate without a command, has {agent.get('command')} {agent.get('args')}")
        probe = agent.get("startupProbe") or {}
        if (probe.get("exec") or {}).get("command") != ["/mpgate", "usage", "show"]:
            found.append(f"the mpgate sidecar's startupProbe must run /mpgate usage show (the socket is open once the buyer is entitled), is {probe}")
        elif probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3) < seconds(e.get("timeout", "30s")) + 10:
            found.append(f"the startupProbe gives up before the start's check can end (timeout {e.get('timeout', '30s')}): {probe}")
        if (app.get("command") or [""])[0] == "/mpgate":
            found.append("app command must not be wrapped in sidecar mode")
        if app.get("command") != command:
            found.append(f"app command must be unchanged, is {app.get('command')}")
        socket = f"{ledger.rstrip('/')}/usage.sock"
        if env_of(app) != {"MPGATE_USAGE_SOCKET": socket}:
            found.append(f"sidecar mode: the app needs MPGATE_USAGE_SOCKET={socket} alone, has {env_of(app)}")
        mount = mounts_of(app).get("mpgate-ledger", {})
        if mount.get("mountPath") != ledger or not mount.get("readOnly"):
            found.append(f"sidecar mode: the app must mount the ledger read-only at {ledger} (it only connects to the socket), is {mount}")
        if [c["name"] for c in inits[1:]] != ["migrate"]:
            found.append(f"the chart's own initContainers should follow the mpgate sidecar, got {[c['name'] for c in inits]}")
        # The socket is 0660: the app must share the sidecar's group (the pod's fsGroup
        # owns the emptyDir, and every container of the pod has it).
        pod_sc = spec.get("securityContext") or {}
        agent_group = (agent.get("securityContext") or {}).get("runAsGroup", pod_sc.get("runAsGroup"))
        app_group = (app.get("securityContext") or {}).get("runAsGroup", pod_sc.get("runAsGroup"))
        if pod_sc.get("fsGroup") is None and agent_group != app_group:
            found.append("sidecar mode: the app cannot reach the 0660 socket: set the pod's fsGroup, or run both containers with one group")
        if "MPGATE_GRACE" in env_of(agent):
            found.append("sidecar mode: MPGATE_GRACE is for a workload mpgate runs (entrypoint mode)")
    else:
        agent = app
        if any(c["name"] == "mpgate" for c in inits):
            found.append("entrypoint mode must not render an mpgate initContainer")
        if app.get("command") != ["/mpgate", "--"] + command:
            found.append(f"app command must be /mpgate -- {command}, is {app.get('command')}")
        if env_of(app).get("MPGATE_GRACE") != e.get("grace", "30s"):
            found.append(f"entrypoint mode: MPGATE_GRACE should be {e.get('grace', '30s')}, is {env_of(app).get('MPGATE_GRACE')}")
        if "MPGATE_USAGE_SOCKET" in env_of(app):
            found.append("entrypoint mode: mpgate sets MPGATE_USAGE_SOCKET for the workload itself")
    env = env_of(agent)
    want = {"MPGATE_PRICING": "usage", "MPGATE_DIMENSIONS": ",".join(e.get("dimensions") or []),
            "MPGATE_LEDGER_DIR": ledger, "MPGATE_FLUSH_TIMEOUT": e.get("flushTimeout", "10s"),
            "MPGATE_START_DIMENSION": e.get("startDimension") or None,
            "MPGATE_SCRAPE_URL": e.get("scrapeUrl") or None, "MPGATE_SCRAPE_INTERVAL": e.get("scrapeInterval") or None}
    for k, v in want.items():
        if env.get(k) != v:
            found.append(f"{agent['name']}: {k} should be {v!r}, is {env.get(k)!r}")
    if e.get("productCode") and env.get("MPGATE_PRODUCT_CODE") != e["productCode"]:
        found.append(f"{agent['name']}: MPGATE_PRODUCT_CODE should be {e['productCode']!r}")
    stray = [k for k in HOURLY_VARS + CONTRACT_VARS + ("MPGATE_RESULT_FILE",) if k in env and k != "MPGATE_PRODUCT_CODE"]
    if stray:
        found.append(f"{agent['name']}: pricing usage uses no key, result file or contract setting, sets {stray}")
    mount = mounts_of(agent).get("mpgate-ledger", {})
    if mount.get("mountPath") != ledger or mount.get("readOnly"):
        found.append(f"{agent['name']}: the ledger must be mounted writable at {ledger}, is {mount}")
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    empty = volumes.get("mpgate-ledger", {}).get("emptyDir")
    if empty is None:
        found.append(f"the ledger volume must be an emptyDir (it survives container restarts), is {volumes.get('mpgate-ledger')}")
    elif empty.get("medium") == "Memory" or not empty.get("sizeLimit"):
        found.append(f"the ledger emptyDir must be on disk (synced writes) with a sizeLimit, is {empty}")
    if "mpgate-keys" in volumes or "mpgate-run" in volumes or configmaps:
        found.append(f"pricing usage must render no key volume, ConfigMap or result directory, has {sorted(volumes)} {sorted(configmaps)}")
    need = seconds(e.get("grace", "30s")) + seconds(e.get("flushTimeout", "10s")) + 5
    period = spec.get("terminationGracePeriodSeconds")
    if period is None or period < need:
        found.append(f"terminationGracePeriodSeconds {period} leaves no room for the workload to stop and the last partial hour to be sent (at least grace + flushTimeout + 5 = {need})")
    return found


def grace_period_problems(app_dir, base):
    """seat hold: terminationGracePeriodSeconds defaults to grace + 10 s; a set value wins;
    hourly pricing keeps the Kubernetes default."""
    found = []
    for grace, want in (("30s", 40), ("2m", 130), ("1500ms", 12), ("20", 30)):
        values = merged(base, {"marketplace": {"entitlement": {"grace": grace}}})
        got = deployment(resources_of(render(app_dir, values)))["spec"]["template"]["spec"].get("terminationGracePeriodSeconds")
        if got != want:
            found.append(f"grace {grace}: terminationGracePeriodSeconds should be {want}, is {got}")
    values = merged(base, {"terminationGracePeriodSeconds": 90})
    got = deployment(resources_of(render(app_dir, values)))["spec"]["template"]["spec"].get("terminationGracePeriodSeconds")
    if got != 90:
        found.append(f"an explicit terminationGracePeriodSeconds (90) must win, got {got}")
    usage = merged(base, {"marketplace": {"entitlement": {
        "pricing": "usage", "productSku": "", "entitlements": [], "seat": "check", "dimensions": ["nodes"]}}})
    for grace, flush, want in (("30s", "10s", 50), ("2m", "10s", 140), ("20s", "1500ms", 32), ("30", "1m", 100)):
        for mode in ("entrypoint", "sidecar"):
            values = merged(usage, {"marketplace": {"entitlement": {"grace": grace, "flushTimeout": flush, "mode": mode}}})
            got = deployment(resources_of(render(app_dir, values)))["spec"]["template"]["spec"].get("terminationGracePeriodSeconds")
            if got != want:
                found.append(f"pricing usage ({mode}), grace {grace}, flushTimeout {flush}: terminationGracePeriodSeconds should be {want}, is {got}")
    hourly = merged(base, {"marketplace": {"entitlement": {
        "pricing": "hourly", "productCode": PRODUCT_CODE, "keySource": "image",
        "productSku": "", "entitlements": [], "seat": "check", "grace": "30s"}}})
    spec = deployment(resources_of(render(app_dir, hourly)))["spec"]["template"]["spec"]
    if "terminationGracePeriodSeconds" in spec:
        found.append("pricing hourly: seat and grace do not apply, keep the Kubernetes default")
    if any(k in env_of(spec["containers"][0]) for k in ("MPGATE_PRICING", "MPGATE_SEAT", "MPGATE_GRACE", "MPGATE_PRODUCT_SKU")):
        found.append("pricing hourly must render no contract variable")
    return found


def netpol_problems(policy, spec, dep):
    """Selects the pods; egress to DNS (53) and HTTPS (443) only, plus the values' extras."""
    found = []
    labels = dep["spec"]["template"]["metadata"]["labels"]
    selector = policy["spec"]["podSelector"].get("matchLabels") or {}
    if not selector or any(labels.get(k) != v for k, v in selector.items()):
        found.append("the NetworkPolicy does not select the pods")
    if sorted(policy["spec"].get("policyTypes") or []) != ["Egress", "Ingress"]:
        found.append("the NetworkPolicy must restrict both Ingress and Egress")
    ports = set()
    for rule in policy["spec"].get("egress") or []:
        if rule.get("to"):
            continue  # a rule with peers is one of the values' extras
        for p in rule.get("ports") or []:
            ports.add((p.get("port"), p.get("protocol", "TCP")))
    extra = {3128} if any(e.get("name") == "HTTPS_PROXY" for c in spec["containers"] for e in c.get("env") or []) else set()
    allowed = {(53, "UDP"), (53, "TCP"), (443, "TCP")} | {(p, "TCP") for p in extra}
    if ports != allowed:
        found.append(f"NetworkPolicy egress ports should be {sorted(allowed)}, are {sorted(ports)}")
    return found


# --- negative cases ---------------------------------------------------------------------

def must_fail(app_dir, base, patch, expect, schema=False):
    values = patch(copy.deepcopy(base)) if callable(patch) else merged(base, patch)
    try:
        render(app_dir, values)
    except Exception as e:  # HelmValuesError, HelmRenderError
        text = str(e)
        found = []
        if expect not in text:
            found.append(f"failed, but without {expect!r}: {text}")
        if schema and "schema" not in text:
            found.append(f"failed, but not through values.schema.json: {text}")
        if not schema and "schema" in text:
            found.append(f"refused by the schema, so the template's own message is untested: {text}")
        return found
    return [f"rendered although {patch} is invalid"]


def schema_pattern_problems(app_dir):
    """A schema `pattern` shows the seller a raw regular expression: formats belong in the
    templates, which fail with a sentence."""
    import json
    with open(os.path.join(app_dir, "values.schema.json"), encoding="utf-8") as f:
        schema = json.load(f)
    found = []

    def walk(node, where):
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("pattern", "patternProperties", "propertyNames", "format"):
                    found.append(f"values.schema.json {where}: {k} (Helm prints it raw; check it in mpgate-lib with a sentence)")
                walk(v, f"{where}/{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{where}/{i}")
    walk(schema, "")
    return found


def image_code_problems(app_dir, base):
    """keySource image and pinned: no MPGATE_PRODUCT_CODE unless productCode is set, in
    both modes (the image's baked-in code must win); a set one reaches the gate and, for
    mpgate verify, the app container."""
    found = []
    for mode in ("initContainer", "entrypoint"):
        for source in ("image", "pinned"):
            values = merged(base, {"marketplace": {"entitlement": {"mode": mode, "keySource": source, "productCode": ""}}})
            text = yaml.safe_dump_all(resources_of(render(app_dir, values)))
            if "MPGATE_PRODUCT_CODE" in text:
                found.append(f"{mode}, keySource {source}, no productCode: MPGATE_PRODUCT_CODE rendered")
            if "MPGATE_PUBLIC_KEY" in text.replace("MPGATE_PUBLIC_KEY_VERSION", ""):
                found.append(f"{mode}, keySource {source}: a key variable rendered")
        values = merged(base, {"marketplace": {"entitlement": {"mode": mode, "keySource": "image", "productCode": PRODUCT_CODE}}})
        spec = deployment(resources_of(render(app_dir, values)))["spec"]["template"]["spec"]
        for c in [c for c in spec.get("initContainers") or [] if c["name"] == "mpgate"] + spec["containers"]:
            if env_of(c).get("MPGATE_PRODUCT_CODE") != PRODUCT_CODE:
                found.append(f"{mode}, keySource image with productCode: {c['name']} lacks it")
    return found


# --- static checks of the templates -----------------------------------------------------

IMAGE_LITERAL = re.compile(r"[a-z0-9.-]+(?::[0-9]+)?/[a-z0-9._/-]+(?::[\w.-]+|@sha256:[0-9a-f]{64})")


def template_problems(chart_dirs):
    found = []
    for d in chart_dirs:
        for root, _, files in os.walk(os.path.join(d, "templates")):
            for f in files:
                path = os.path.join(root, f)
                rel = os.path.relpath(path, os.path.dirname(d))
                with open(path, encoding="utf-8") as fh:
                    # Template comments ({{/* */}}, also multi-line) and YAML comments say
                    # what is not allowed; only the code counts.
                    text = re.sub(r"\{\{-?\s*/\*.*?\*/\s*-?\}\}", "", fh.read(), flags=re.S)
                text = "\n".join(re.sub(r"^\s*#.*$", "", line) for line in text.splitlines())
                for banned in (".Release.Service", "lookup ", ".Capabilities"):
                    if banned in text:
                        found.append(f"{rel} uses {banned.strip()} (the EKS add-on route does not allow it)")
                for n, line in enumerate(text.splitlines(), 1):
                    m = re.search(r"^\s*-?\s*image:\s*(\S.*)$", line)
                    if m and "{{" not in m.group(1):
                        found.append(f"{rel}:{n}: an image that does not come from values: {line.strip()}")
                    for m in re.finditer(r'"(registry|repository|tag|digest)"\s+"([^"]*)"', line):
                        if m.group(2):
                            found.append(f"{rel}:{n}: an image default ({m.group(1)} {m.group(2)!r}) inside a template")
                    if IMAGE_LITERAL.search(line) and "http" not in line:
                        found.append(f"{rel}:{n}: an image reference inside a template: {line.strip()}")
    return found


# --- the cases --------------------------------------------------------------------------

def pinned_default_problems(where, resources):
    """A render of the defaults: a pinned gate (the mpgate-pinned image, no product code, no
    key variable, no key volume or ConfigMap), valid against Kubernetes."""
    found = []
    for r in resources:
        found += kube.validate(r)
    kinds = sorted(r["kind"] for r in resources)
    if kinds != ["Deployment", "NetworkPolicy", "Service", "ServiceAccount"]:
        found.append(f"{where}: kinds {kinds}: a pinned gate renders no key ConfigMap")
    text = yaml.safe_dump_all(resources)
    for var in HOURLY_VARS:
        if var in text and var != "MPGATE_PUBLIC_KEY_VERSION":
            found.append(f"{where}: {var} rendered; a pinned build holds it (and refuses another key)")
    if "mpgate-keys" in text:
        found.append(f"{where}: a key volume rendered; a pinned build holds its keys")
    spec = deployment(resources)["spec"]["template"]["spec"]
    gate = next((c for c in spec.get("initContainers") or [] if c["name"] == "mpgate"), None)
    if gate is None or "/my-product/mpgate-pinned:" not in gate["image"]:
        found.append(f"{where}: the gate image should be the pinned one (my-product/mpgate-pinned), is {gate and gate['image']}")
    return found


def defaults_problems(app_dir):
    """Secure by default: values.yaml and mpgate-lib both default to keySource pinned, and the
    chart renders with its own defaults alone (no product code, no key: the pinned build
    holds them), with NOTES.txt silent about an unpinned build; an unpinned key source in
    NOTES.txt says UNPINNED."""
    found = []
    if DEFAULTS["marketplace"]["entitlement"].get("keySource") != "pinned":
        found.append(f"values.yaml: keySource should default to pinned, is {DEFAULTS['marketplace']['entitlement'].get('keySource')!r}")
    rendered = render(app_dir, {})
    found += pinned_default_problems("the chart's own defaults", resources_of(rendered))
    notes = next((t for p, t in rendered.items() if p.endswith("NOTES.txt")), "")
    if "UNPINNED" in notes:
        found.append("NOTES.txt calls the pinned default UNPINNED")
    # null deletes the chart's own value, so mpgate-lib's default applies.
    found += pinned_default_problems("mpgate-lib's default keySource", resources_of(
        render(app_dir, {"marketplace": {"entitlement": {"keySource": None}}})))
    for source, extra in (("configMap", {"productCode": PRODUCT_CODE, "publicKeys": {"1": "-----BEGIN PUBLIC KEY-----\nX\n-----END PUBLIC KEY-----\n"}}),
                          ("existingConfigMap", {"productCode": PRODUCT_CODE, "existingConfigMap": "keys"}),
                          ("image", {})):
        notes = next((t for p, t in render(app_dir, {"marketplace": {"entitlement": {"keySource": source, **extra}}}).items()
                      if p.endswith("NOTES.txt")), "")
        if f"UNPINNED: keySource {source}" not in notes or "sell a pinned mpgate build" not in notes:
            found.append(f"NOTES.txt with keySource {source} does not say UNPINNED and what to sell")
    return found


def notes_problems(app_dir, ci):
    found = []
    for case in ("initContainer", "entrypoint", "disabled", "contract", "contract-init", "usage", "usage-sidecar"):
        notes = next((t for p, t in render(app_dir, ci[case]).items() if p.endswith("NOTES.txt")), "")
        if case == "disabled":
            if "disabled" not in notes:
                found.append("NOTES.txt does not say the gate is disabled")
            continue
        contract = case.startswith("contract")
        usage = case.startswith("usage")
        wants = (("license-manager:CheckoutLicense", "license grant") if contract else
                 ("aws-marketplace:MeterUsage", "AWSMarketplaceMeteringFullAccess", "mpgate usage add", "$MPGATE_USAGE_SOCKET",
                  "/mpgate usage show", "nodes, requests") if usage else ("aws-marketplace:RegisterUsage",))
        for want in wants:
            if want not in notes:
                found.append(f"NOTES.txt ({case}) does not mention {want!r}")
        if (contract or usage) and "RegisterUsage" in notes:
            found.append(f"NOTES.txt ({case}): pricing {'contract' if contract else 'usage'} does not call RegisterUsage")
        if case == "usage-sidecar" and ('"Init Containers: mpgate"' not in notes or "logs POD -c mpgate" not in notes):
            found.append("NOTES.txt (usage-sidecar): a failed check is under the sidecar's \"Init Containers: mpgate\" and its logs")
        for want in ("kubectl -n my-product describe pod", "Exit Code", "10 ", "13 ", "14 ", "15 ", "IRSA", "--previous"):
            if want not in notes:
                found.append(f"NOTES.txt ({case}) does not mention {want!r}")
    return found


def rotation_problems(app_dir, base):
    """Adding a key version keeps the old one; unset publicKeyVersion means the highest."""
    v1 = copy.deepcopy(base)
    del v1["marketplace"]["entitlement"]["publicKeys"]["2"]
    found = []
    before = resources_of(render(app_dir, v1))
    after = resources_of(render(app_dir, base))
    cm_after = next(r for r in after if r["kind"] == "ConfigMap")
    if sorted(cm_after["data"]) != ["public-key-v1.pem", "public-key-v2.pem"]:
        found.append(f"both key versions must be in the ConfigMap during a rotation, got {sorted(cm_after['data'])}")
    if next(r for r in before if r["kind"] == "ConfigMap")["metadata"]["name"] != cm_after["metadata"]["name"]:
        found.append("the ConfigMap name must not change with the keys (running pods mount it)")
    anno = [deployment(x)["spec"]["template"]["metadata"]["annotations"]["checksum/mpgate-keys"] for x in (before, after)]
    if anno[0] == anno[1]:
        found.append("checksum/mpgate-keys must change with the keys (so the pods roll)")
    pinned_v1 = merged(base, {"marketplace": {"entitlement": {"publicKeyVersion": 1}}})
    gate = deployment(resources_of(render(app_dir, pinned_v1)))["spec"]["template"]["spec"]["initContainers"][0]
    if env_of(gate).get("MPGATE_PUBLIC_KEY_VERSION") != "1":
        found.append("publicKeyVersion 1 must be passed while version 2 is present")
    return found


def image_problems(app_dir, base):
    """global.imageRegistry replaces every registry; pull secrets from global and local."""
    values = merged(base, {"global": {"imageRegistry": "mirror.example.internal", "imagePullSecrets": ["mirror-pull", {"name": "marketplace-pull"}]}})
    spec = deployment(resources_of(render(app_dir, values)))["spec"]["template"]["spec"]
    found = []
    for c in [spec["initContainers"][0]] + spec["containers"]:
        if not c["image"].startswith("mirror.example.internal/my-product/"):
            found.append(f"{c['name']}: global.imageRegistry not applied: {c['image']}")
    if spec.get("imagePullSecrets") != [{"name": "mirror-pull"}, {"name": "marketplace-pull"}]:
        found.append(f"imagePullSecrets should merge global and local without repeats: {spec.get('imagePullSecrets')}")
    no_tag = merged(base, {"image": {"tag": "", "digest": "sha256:" + "a" * 64}})
    app = deployment(resources_of(render(app_dir, no_tag)))["spec"]["template"]["spec"]["containers"][0]
    if app["image"] != "registry.example.com/my-product/server@sha256:" + "a" * 64:
        found.append(f"a digest without a tag should give repository@digest: {app['image']}")
    return found


def zero_values_problems(app_dir, base):
    """A chart's own false / [] wins over a global true / list (mergeOverwrite would not)."""
    values = merged(base, {"global": {"marketplace": {"entitlement": {"enabled": True, "extraEnv": [{"name": "MPGATE_LOG", "value": "debug"}]}}}})
    found = []
    values["marketplace"]["entitlement"]["extraEnv"] = []
    gate = deployment(resources_of(render(app_dir, values)))["spec"]["template"]["spec"]["initContainers"][0]
    if "MPGATE_LOG" in env_of(gate):
        found.append("the chart's extraEnv: [] must win over the global extraEnv")
    values["marketplace"]["entitlement"]["enabled"] = False
    text = yaml.safe_dump_all(resources_of(render(app_dir, values)))
    if "MPGATE_" in text:
        found.append("the chart's enabled: false must win over the global enabled: true")
    return found


def umbrella_problems(tmp, app_dir, out_dir):
    """Two subcharts that both use mpgate-lib in one release, sharing global values."""
    shared = ("productCode", "keySource", "publicKeys", "image", "timeout")
    deps = []
    for sub in ("app-a", "app-b"):
        d = os.path.join(tmp, sub)
        shutil.copytree(app_dir, d)
        with open(os.path.join(d, "Chart.yaml"), encoding="utf-8") as f:
            meta = yaml.safe_load(f)
        meta["name"] = sub
        with open(os.path.join(d, "Chart.yaml"), "w", encoding="utf-8") as f:
            yaml.safe_dump(meta, f)
        # A subchart written for an umbrella leaves the shared settings to global.
        with open(os.path.join(d, "values.yaml"), encoding="utf-8") as f:
            values = yaml.safe_load(f)
        for k in shared:
            values["marketplace"]["entitlement"].pop(k)
        with open(os.path.join(d, "values.yaml"), "w", encoding="utf-8") as f:
            yaml.safe_dump(values, f)
        deps.append({"name": sub, "version": meta["version"], "repository": f"file://../{sub}"})
    umbrella = os.path.join(tmp, "umbrella")
    os.makedirs(umbrella)
    with open(os.path.join(umbrella, "Chart.yaml"), "w", encoding="utf-8") as f:
        yaml.safe_dump({"apiVersion": "v2", "name": "umbrella", "version": "0.1.0", "dependencies": deps}, f)
    values = {
        "global": {"marketplace": {"entitlement": {
            "productCode": PRODUCT_CODE,
            "keySource": "configMap",
            "timeout": "20s",
            "publicKeys": {"1": "-----BEGIN PUBLIC KEY-----\nPLACEHOLDER\n-----END PUBLIC KEY-----\n"},
            "image": {"registry": "registry.example.com", "repository": "my-product/mpgate", "tag": "0.1.0",
                      "digest": "sha256:56a03bfba238f88530aa8f143779f3a2321bee806e0660e4778028a1712147b2"},
        }}},
        "app-a": {"image": {"digest": "sha256:758dd2b094ef9160ba1186a0bd14171f6b8da5b7a62411fb50ebe50a9638104f"},
                  "serviceAccount": {"create": False, "name": "my-product-metering"}},
        "app-b": {"image": {"digest": "sha256:758dd2b094ef9160ba1186a0bd14171f6b8da5b7a62411fb50ebe50a9638104f"},
                  "serviceAccount": {"create": False, "name": "my-product-metering"},
                  "marketplace": {"entitlement": {"timeout": "45s"}}},
    }
    with open(os.path.join(umbrella, "values.yaml"), "w", encoding="utf-8") as f:
        yaml.safe_dump(values, f)
    dependency_update(umbrella, skip_refresh=True)
    rendered = render(umbrella, None)
    write_manifests(rendered, out_dir)
    resources = resources_of(rendered)
    found = []
    for r in resources:
        found += kube.validate(r)
    seen = {}
    for r in resources:
        key = (r["kind"], r["metadata"]["name"])
        if key in seen:
            found.append(f"{key[0]}/{key[1]} is rendered twice: the subcharts clash")
        seen[key] = True
    deps_by_chart = {d["metadata"]["labels"]["app.kubernetes.io/name"]: d for d in deployments(resources)}
    if sorted(deps_by_chart) != ["app-a", "app-b"]:
        return found + [f"expected the Deployments of app-a and app-b, got {sorted(deps_by_chart)}"]
    configmaps = {r["metadata"]["name"] for r in resources if r["kind"] == "ConfigMap"}
    for sub, timeout in (("app-a", "20s"), ("app-b", "45s")):
        spec = deps_by_chart[sub]["spec"]["template"]["spec"]
        gate = spec["initContainers"][0]
        env = env_of(gate)
        if env.get("MPGATE_PRODUCT_CODE") != PRODUCT_CODE:
            found.append(f"{sub}: the product code does not come from global")
        if env.get("MPGATE_TIMEOUT") != timeout:
            found.append(f"{sub}: MPGATE_TIMEOUT should be {timeout} (a chart's own value wins over global), is {env.get('MPGATE_TIMEOUT')}")
        if not gate["image"].startswith("registry.example.com/my-product/mpgate:0.1.0@sha256:"):
            found.append(f"{sub}: the gate image does not come from global: {gate['image']}")
        cm = next(v for v in spec["volumes"] if v["name"] == "mpgate-keys")["configMap"]["name"]
        if cm != f"{RELEASE}-{sub}-mpgate-keys" or cm not in configmaps:
            found.append(f"{sub}: key ConfigMap should be its own {RELEASE}-{sub}-mpgate-keys, is {cm}")
    return found


def package_problems(app_dir, tmp):
    tgz = package(app_dir, destination=tmp)
    with tarfile.open(tgz) as t:
        names = set(t.getnames())
    want = {"example-app/Chart.yaml", "example-app/values.yaml", "example-app/values.schema.json",
            "example-app/README.md", "example-app/templates/NOTES.txt", "example-app/charts/mpgate-lib/templates/_mpgate.tpl"}
    missing = sorted(want - names)
    stray = sorted(n for n in names if "/ci/" in n)
    return [f"the package lacks {m}" for m in missing] + ([f"ci/ values should stay out of the package (.helmignore): {stray}"] if stray else [])


def usage_refusals(app_dir, base, contract, usage, sidecar, ent):
    """pricing usage: every refusal with its sentence; no setting silently dropped."""
    check("schema refuses dimensions as a string", must_fail(app_dir, usage, ent(dimensions="nodes,requests"), "/marketplace/entitlement/dimensions", schema=True))
    to_usage = "pricing usage (MeterUsage, custom metering dimensions), but pricing is {}, which would ignore it: remove it, or set marketplace.entitlement.pricing to usage"
    for model, values, name in ((base, "hourly (RegisterUsage)", "hourly"), (contract, "contract (AWS License Manager)", "contract")):
        for key, value in (("dimensions", ["nodes"]), ("startDimension", "nodes"), ("ledgerDir", "/data/ledger"), ("flushTimeout", "20s"),
                           ("scrapeUrl", "http://127.0.0.1:9100/metrics"), ("scrapeInterval", "30s")):
            check(f"render refuses {key} (a usage setting) under pricing {name} with a sentence",
                  must_fail(app_dir, model, ent(**{key: value}), f"marketplace.entitlement.{key} is a setting of {to_usage.format(values)}"))
        check(f"render refuses mode sidecar under pricing {name} with a sentence",
              must_fail(app_dir, model, ent(mode="sidecar"), f"marketplace.entitlement.mode sidecar runs mpgate's metering agent beside the workload, which only pricing usage has; pricing {values} checks once before the workload starts: use mode initContainer or entrypoint, or set marketplace.entitlement.pricing to usage"))
    check("render names every usage setting under pricing hourly",
          must_fail(app_dir, base, ent(dimensions=["nodes"], flushTimeout="20s"), "marketplace.entitlement.dimensions, marketplace.entitlement.flushTimeout are settings of pricing usage"))
    to_contract = "is a setting of pricing contract (AWS License Manager), but pricing is usage (MeterUsage), which would ignore it: remove it, or set marketplace.entitlement.pricing to contract"
    for key, value in (("productSku", "prod-sku-abc123example"), ("entitlements", ["PremiumSupport"]), ("seat", "hold")):
        check(f"render refuses {key} (a contract setting) under pricing usage with a sentence",
              must_fail(app_dir, usage, ent(**{key: value}), f"marketplace.entitlement.{key} {to_contract}"))
    no_key = ("but pricing is usage: MeterUsage answers with no token, so mpgate uses no key: remove it (keySource pinned, or image), "
              "or set marketplace.entitlement.pricing to hourly")
    for key, value, named in (("publicKeys", {"1": "-----BEGIN PUBLIC KEY-----\nX\n-----END PUBLIC KEY-----\n"}, "publicKeys"),
                              ("publicKeyVersion", 2, "publicKeyVersion"),
                              ("existingConfigMap", "my-product-marketplace-keys", "existingConfigMap"),
                              ("keySource", "configMap", "keySource configMap")):
        check(f"render refuses {named} (an hourly key setting) under pricing usage with a sentence",
              must_fail(app_dir, usage, ent(**{key: value}), f"marketplace.entitlement.{named} is a setting of pricing hourly (the public key of RegisterUsage's signed token), {no_key}"))
    check("render refuses mode initContainer with pricing usage with a sentence",
          must_fail(app_dir, usage, ent(mode="initContainer"), "marketplace.entitlement.mode initContainer does not work with pricing usage: the metering agent must run as long as the workload, and an init container exits before it starts; use mode entrypoint (/mpgate -- COMMAND in the workload container) or sidecar (an mpgate container beside it)"))
    check("render refuses onTransientError allow with pricing usage and keySource pinned (a pinned build exits 2 on it) with a sentence",
          must_fail(app_dir, sidecar, ent(onTransientError="allow"), "marketplace.entitlement.onTransientError allow is refused by a pinned mpgate build (keySource pinned, exit 2)"))
    check("render fails clearly for pricing usage without dimensions",
          must_fail(app_dir, usage, ent(dimensions=[]), "marketplace.entitlement.dimensions is empty: with pricing usage, list your product's pricing dimensions by API name (your product's pricing in the AWS Marketplace Management Portal), 1 to 24"))
    check("render refuses 25 dimensions with a sentence",
          must_fail(app_dir, usage, ent(dimensions=[f"d{n}" for n in range(25)]), "marketplace.entitlement.dimensions lists 25 dimensions: a product has at most 24"))
    bad = "is not a dimension API name (1 to 255 characters, no spaces, commas, '=' or control characters): copy it from your product's pricing in the AWS Marketplace Management Portal"
    for name in ("gb scanned", "a,b", "x" * 256, ""):
        check(f"render refuses the dimension {name[:12]!r}{'...' if len(name) > 12 else ''} with a sentence",
              must_fail(app_dir, usage, ent(dimensions=["nodes", name]), f'marketplace.entitlement.dimensions: "{name}" {bad}'))
    scrape = "http://127.0.0.1:9100/metrics"
    check("render refuses a dimension's metric it cannot read with a sentence",
          must_fail(app_dir, usage, ent(dimensions=["nodes=3"], scrapeUrl=scrape), 'marketplace.entitlement.dimensions: "nodes=3" reads no metric mpgate understands: write NAME=METRIC[{label="value"}]:counter|max|avg[*FACTOR]'))
    check("render refuses a scraped dimension without scrapeUrl with a sentence",
          must_fail(app_dir, usage, ent(dimensions=["nodes=active_nodes:max"], scrapeUrl=""), "marketplace.entitlement.dimensions names a metric, and scrapeUrl is empty"))
    check("render refuses scrapeUrl without a scraped dimension with a sentence",
          must_fail(app_dir, usage, ent(dimensions=["nodes"], scrapeUrl=scrape), "marketplace.entitlement.scrapeUrl is set, and no dimension names a metric"))
    check("render refuses a scrapeUrl beyond loopback with a sentence",
          must_fail(app_dir, usage, ent(dimensions=["nodes=active_nodes:max"], scrapeUrl="http://10.0.0.7:9100/metrics"), 'marketplace.entitlement.scrapeUrl "http://10.0.0.7:9100/metrics" must be http:// on loopback with a port'))
    check("render refuses scrapeUrl with keySource pinned (a pinned build exits 2 on it) with a sentence",
          must_fail(app_dir, sidecar, ent(dimensions=["nodes=active_nodes:max", "requests"], scrapeUrl=scrape), "marketplace.entitlement.scrapeUrl is refused by a pinned mpgate build (keySource pinned, exit 2)"))
    check("render refuses a bad scrapeInterval with a sentence",
          must_fail(app_dir, usage, ent(scrapeInterval="often"), 'marketplace.entitlement.scrapeInterval must be a duration (15s, 500ms, 1m), not "often"'))
    check("render refuses a dimension named twice with a sentence",
          must_fail(app_dir, usage, ent(dimensions=["nodes", "requests", "nodes"]), 'marketplace.entitlement.dimensions names "nodes" twice'))
    check("render refuses a startDimension that is not a dimension with a sentence",
          must_fail(app_dir, usage, ent(startDimension="cpus"), 'marketplace.entitlement.startDimension "cpus" is not one of marketplace.entitlement.dimensions (nodes, requests, gb_scanned): the start\'s MeterUsage of quantity 0 goes to one of them'))
    check("render refuses a relative ledgerDir with a sentence",
          must_fail(app_dir, usage, ent(ledgerDir="var/lib/mpgate"), 'marketplace.entitlement.ledgerDir must be an absolute directory (the default is /var/lib/mpgate), not "var/lib/mpgate"'))
    check("render refuses a bad flushTimeout with a sentence",
          must_fail(app_dir, usage, ent(flushTimeout="ten seconds"), 'marketplace.entitlement.flushTimeout must be a duration: a whole number with an optional unit ms, s, m or h (30, 30s, 1500ms, 2m), not "ten seconds"'))
    check("render fails clearly without a sidecar image (no default)",
          must_fail(app_dir, sidecar, ent(image={"repository": ""}), "marketplace.entitlement.image.repository is required in sidecar mode"))
    check("render fails clearly without a sidecar tag or digest (no default)",
          must_fail(app_dir, sidecar, ent(image={"tag": "", "digest": ""}), "marketplace.entitlement.image.tag or marketplace.entitlement.image.digest is required in sidecar mode"))
    guarded("pricing usage through global: dimensions and mode from global.marketplace.entitlement, a chart's own ledgerDir wins",
            usage_global_problems, app_dir, sidecar)


def usage_global_problems(app_dir, sidecar):
    values = copy.deepcopy(sidecar)
    own = values["marketplace"]["entitlement"]
    # null deletes the chart's own value (values.yaml's pricing hourly...), so global applies.
    shared = {k: own[k] for k in ("pricing", "mode", "dimensions")}
    own.update({k: None for k in shared})
    values["global"] = merged(values.get("global") or {}, {"marketplace": {"entitlement": shared}})
    own["ledgerDir"] = "/run/ledger"
    spec = deployment(resources_of(render(app_dir, values)))["spec"]["template"]["spec"]
    agent = (spec.get("initContainers") or [{}])[0]
    env = env_of(agent)
    found = []
    if agent.get("restartPolicy") != "Always" or env.get("MPGATE_DIMENSIONS") != "nodes,requests":
        found.append(f"global pricing usage / mode sidecar / dimensions not applied: {agent.get('name')} {env}")
    if env.get("MPGATE_LEDGER_DIR") != "/run/ledger" or env_of(spec["containers"][0]).get("MPGATE_USAGE_SOCKET") != "/run/ledger/usage.sock":
        found.append(f"the chart's own ledgerDir must win and move the socket: {env}, app {env_of(spec['containers'][0])}")
    return found


DEFAULTS = {}
DEFAULTS_GATE_IMAGE = {}


def main(helm_dir, out_dir):
    helm_dir = os.path.abspath(helm_dir)
    out_dir = os.path.abspath(out_dir)
    shutil.rmtree(out_dir, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="mpgate-helm-") as tmp:
        ignore = shutil.ignore_patterns("charts", "Chart.lock", "*.tgz")
        for name in ("mpgate-lib", "example-app"):
            shutil.copytree(os.path.join(helm_dir, name), os.path.join(tmp, name), ignore=ignore)
        lib_dir, app_dir = os.path.join(tmp, "mpgate-lib"), os.path.join(tmp, "example-app")

        with open(os.path.join(lib_dir, "Chart.yaml"), encoding="utf-8") as f:
            lib_type = yaml.safe_load(f).get("type")
        check("mpgate-lib is a library chart", [] if lib_type == "library" else [f"type is {lib_type}"])
        lint_check("lint mpgate-lib (strict)", lib_dir)
        check("templates: no image default or image reference, no .Release.Service / lookup / .Capabilities",
              template_problems([lib_dir, app_dir]))

        with open(os.path.join(app_dir, "Chart.yaml"), encoding="utf-8") as f:
            meta = yaml.safe_load(f)
        missing = [k for k in ("kubeVersion", "home", "sources", "maintainers", "annotations") if not meta.get(k)]
        missing += [a for a in ("artifacthub.io/license",) if a not in (meta.get("annotations") or {})]
        check("example-app Chart.yaml metadata (kubeVersion, home, sources, maintainers, artifacthub annotations)",
              [f"Chart.yaml lacks {m}" for m in missing])

        try:
            dependency_update(app_dir, skip_refresh=True)
            problems = [] if os.listdir(os.path.join(app_dir, "charts")) else ["charts/ is empty"]
        except Exception as e:
            problems = [e]
        check("dependency update example-app (file://../mpgate-lib)", problems)
        if problems:
            return 1

        with open(os.path.join(app_dir, "values.yaml"), encoding="utf-8") as f:
            DEFAULTS.update(yaml.safe_load(f))
        DEFAULTS_GATE_IMAGE.update(DEFAULTS["marketplace"]["entitlement"]["image"])

        lint_check("lint example-app (strict) with its own defaults (keySource pinned)", app_dir)
        guarded("secure by default: values.yaml and mpgate-lib default to keySource pinned; the chart's own defaults render "
                "a pinned gate (mpgate-pinned image, no product code, no key, no ConfigMap) valid against Kubernetes (strict); "
                "NOTES.txt says UNPINNED for configMap, existingConfigMap and image", defaults_problems, app_dir)

        ci = {}
        for case in CASES:
            with open(os.path.join(app_dir, "ci", f"{case.lower()}-values.yaml"), encoding="utf-8") as f:
                ci[case] = yaml.safe_load(f)
            lint_check(f"lint example-app (strict) with ci/{case.lower()}-values.yaml", app_dir, ci[case])

        for case, values in ci.items():
            try:
                rendered = render(app_dir, values)
            except Exception as e:
                check(f"render example-app, {case}", [e])
                continue
            write_manifests(rendered, os.path.join(out_dir, case.lower()))
            resources = resources_of(rendered)
            problems = []
            for r in resources:
                problems += kube.validate(r)
            kinds = ", ".join(sorted(r["kind"] for r in resources))
            check(f"render example-app, {case}: {len(resources)} manifests ({kinds}) valid against Kubernetes {kube.KUBE_VERSION} (strict)", problems)
            guarded(f"render example-app, {case}: the gate, keys, probes, NetworkPolicy and ServiceAccount are wired as this case needs",
                    case_problems, case, merged(DEFAULTS, values), resources)

        base = merged(DEFAULTS, ci["initContainer"])
        contract = merged(DEFAULTS, ci["contract"])
        contract_init = merged(DEFAULTS, ci["contract-init"])
        guarded("NOTES.txt tells how to read a failed gate (kubectl describe, logs, exit codes, IRSA, the pricing's IAM actions)", notes_problems, app_dir, ci)
        guarded("key rotation: both versions in one ConfigMap, same name, pods roll, an older version can be chosen", rotation_problems, app_dir, base)
        guarded("images: global.imageRegistry, merged imagePullSecrets, digest without tag", image_problems, app_dir, base)
        guarded("a chart's own false and [] win over global (no mergeOverwrite)", zero_values_problems, app_dir, base)
        guarded("umbrella release: two subcharts with mpgate-lib coexist and share global.marketplace.entitlement",
                umbrella_problems, tmp, app_dir, os.path.join(out_dir, "umbrella"))
        guarded("helm package example-app (with values.schema.json, README.md, NOTES.txt)", package_problems, app_dir, tmp)
        guarded("seat hold: terminationGracePeriodSeconds is grace + 10 s unless set, usage grace + flushTimeout + 10 s; hourly renders no contract setting",
                grace_period_problems, app_dir, contract)
        guarded("license token, initContainer mode: only the init container mounts the Secret (read-only), global and local merge field by field, NOTES names the Secret and the role's policy",
                token_init_problems, app_dir, contract_init)

        def no_keys(values):
            values["marketplace"]["entitlement"]["publicKeys"] = {}
            return values

        def ent(**kw):
            return {"marketplace": {"entitlement": kw}}
        # values.schema.json checks types and choices; its messages name the value and the
        # allowed choices, never a regular expression.
        check("schema refuses a wrong mode", must_fail(app_dir, base, ent(mode="daemonset"), "at '/marketplace/entitlement/mode': value must be one of 'initContainer', 'entrypoint', 'sidecar'", schema=True))
        check("schema refuses a wrong keySource", must_fail(app_dir, base, ent(keySource="secret"), "/marketplace/entitlement/keySource", schema=True))
        check("schema refuses publicKeyVersion 0", must_fail(app_dir, base, ent(publicKeyVersion=0), "/marketplace/entitlement/publicKeyVersion", schema=True))
        check("schema refuses publicKeyVersion \"two\"", must_fail(app_dir, base, ent(publicKeyVersion="two"), "/marketplace/entitlement/publicKeyVersion", schema=True))
        check("schema refuses a misspelt setting", must_fail(app_dir, base, ent(keysource="image"), "additional properties 'keysource' not allowed", schema=True))
        check("schema refuses a wrong pricing", must_fail(app_dir, contract, ent(pricing="annual"), "/marketplace/entitlement/pricing", schema=True))
        check("schema refuses a wrong seat", must_fail(app_dir, contract, ent(seat="keep"), "/marketplace/entitlement/seat", schema=True))
        check("schema refuses entitlements as a string", must_fail(app_dir, contract, ent(entitlements="Users=5"), "/marketplace/entitlement/entitlements", schema=True))
        check("values.schema.json holds no pattern (formats are the templates' sentences)", schema_pattern_problems(app_dir))

        # Formats: the templates' own sentences.
        check("render refuses a private key in publicKeys with a sentence", must_fail(app_dir, base, ent(publicKeys={"3": "-----BEGIN PRIVATE KEY-----\n"}), "marketplace.entitlement.publicKeys.3 is not a PEM public key (-----BEGIN PUBLIC KEY-----...); never put a private key in values"))
        check("render refuses a key version that is not a number with a sentence", must_fail(app_dir, base, ent(publicKeys={"v2": "-----BEGIN PUBLIC KEY-----\nX\n-----END PUBLIC KEY-----\n"}), 'marketplace.entitlement.publicKeys: "v2" is not a key version (an integer >= 1)'))
        check("render refuses a bad workload image digest with a sentence", must_fail(app_dir, base, {"image": {"digest": "latest"}}, 'image.digest must be sha256: followed by 64 lowercase hex digits (the Digest that docker buildx imagetools inspect prints), not "latest"; leave it empty to pull by tag'))
        check("render refuses a bad gate image digest with a sentence", must_fail(app_dir, base, ent(image={"digest": "sha256:ABC"}), 'marketplace.entitlement.image.digest must be sha256: followed by 64 lowercase hex digits'))
        check("render refuses a product code with a space with a sentence", must_fail(app_dir, base, ent(productCode="abcd 1234"), 'marketplace.entitlement.productCode "abcd 1234" is not a product code: copy it from your product\'s page in the AWS Marketplace Management Portal (no spaces, at most 255 characters)'))
        check("render refuses a bad timeout with a sentence", must_fail(app_dir, base, ent(timeout="1 minute"), 'marketplace.entitlement.timeout must be a duration: a whole number with an optional unit ms, s, m or h (30, 30s, 1500ms, 2m), not "1 minute"'))
        check("render refuses a relative resultDir with a sentence", must_fail(app_dir, base, ent(resultDir="run/mpgate"), 'marketplace.entitlement.resultDir must be an absolute directory (the default is /run/mpgate), not "run/mpgate"'))
        check("render refuses a bad grace with a sentence", must_fail(app_dir, contract, ent(grace="30 seconds"), 'marketplace.entitlement.grace must be a duration: a whole number with an optional unit ms, s, m or h (30, 30s, 1500ms, 2m), not "30 seconds"'))
        check("render refuses a product ID with a space with a sentence", must_fail(app_dir, contract, ent(productSku="2205b290 19e6"), 'marketplace.entitlement.productSku "2205b290 19e6" is not a product ID: copy it from your product\'s page in the AWS Marketplace Management Portal'))
        bad_spec = "is not NAME, NAME=VALUE or NAME=VALUE:UNIT (no commas, colons or spaces in NAME; VALUE a whole number >= 1; a feature is NAME alone)"
        check("render refuses an entitlement with a comma with a sentence", must_fail(app_dir, contract, ent(entitlements=["A,B"]), f'marketplace.entitlement.entitlements: "A,B" {bad_spec}'))
        check("render refuses an entitlement of 0 units with a sentence", must_fail(app_dir, contract, ent(entitlements=["Users=0"]), f'marketplace.entitlement.entitlements: "Users=0" {bad_spec}'))
        check("render refuses an entitlement name with a colon with a sentence", must_fail(app_dir, contract, ent(entitlements=["Tier:Gold"]), f'marketplace.entitlement.entitlements: "Tier:Gold" {bad_spec}'))
        check("render refuses an entitlement with an unknown unit with a sentence", must_fail(app_dir, contract, ent(entitlements=["Users=5:Seats"]), 'marketplace.entitlement.entitlements: "Users=5:Seats" has the unit "Seats", which is not an AWS License Manager unit (Count, Seconds,'))
        check("render refuses a value with unit None with a sentence (a feature takes no value)", must_fail(app_dir, contract, ent(entitlements=["Support=1:None"]), 'has the unit "None", which is not an AWS License Manager unit'))

        # Required settings, no example default.
        check("render fails clearly without productCode (keySource configMap)", must_fail(app_dir, base, ent(productCode=""), "marketplace.entitlement.productCode is required with keySource configMap: set it to the product code shown on your product's page in the AWS Marketplace Management Portal (with keySource image or pinned, the image's own product code is used instead)"))
        check("render fails clearly without productCode (keySource existingConfigMap)", must_fail(app_dir, base, ent(productCode="", keySource="existingConfigMap", existingConfigMap="keys"), "marketplace.entitlement.productCode is required with keySource existingConfigMap: set it to the product code"))
        check("render fails clearly with empty publicKeys", must_fail(app_dir, base, no_keys, "publicKeys is empty"))
        check("render fails clearly when publicKeyVersion is not in publicKeys", must_fail(app_dir, base, ent(publicKeyVersion=3), "publicKeyVersion 3 is not in publicKeys"))
        check("render fails clearly without existingConfigMap's name", must_fail(app_dir, base, ent(keySource="existingConfigMap", existingConfigMap=""), "existingConfigMap is required"))
        check("render fails clearly without a gate image (no default)", must_fail(app_dir, base, ent(image={"repository": ""}), "marketplace.entitlement.image.repository is required"))
        check("render fails clearly without a gate tag or digest (no default)", must_fail(app_dir, base, ent(image={"tag": "", "digest": ""}), "image.tag or marketplace.entitlement.image.digest is required"))
        check("render fails clearly without a workload tag or digest (no default)", must_fail(app_dir, base, {"image": {"tag": "", "digest": ""}}, "image.tag or image.digest is required"))
        check("render fails clearly for pricing contract without productSku", must_fail(app_dir, contract, ent(productSku=""), "marketplace.entitlement.productSku is required with pricing contract: the product ID shown on your product's page in the AWS Marketplace Management Portal"))
        check("render fails clearly for pricing contract without entitlements", must_fail(app_dir, contract, ent(entitlements=[]), "entitlements is empty"))
        check("render fails clearly for seat hold with the initContainer pattern", must_fail(app_dir, contract_init, ent(seat="hold"), "seat hold works only with mode entrypoint"))
        check("render fails clearly for seat hold with the initContainer pattern (set through global)",
              must_fail(app_dir, contract_init, {"global": {"marketplace": {"entitlement": {"seat": "hold"}}}, "marketplace": {"entitlement": {"seat": None}}}, "seat hold works only with mode entrypoint"))

        # One pricing model's settings under the other: never silently dropped.
        to_contract = "pricing contract (AWS License Manager), but pricing is hourly (RegisterUsage), which would ignore"
        for key, value in (("productSku", "prod-sku-abc123example"), ("entitlements", ["PremiumSupport"]), ("seat", "hold"), ("grace", "45s")):
            check(f"render refuses {key} (a contract setting) under pricing hourly with a sentence",
                  must_fail(app_dir, base, ent(**{key: value}), f"marketplace.entitlement.{key} is a setting of {to_contract} it: remove it, or set marketplace.entitlement.pricing to contract"))
        check("render names every contract setting under pricing hourly",
              must_fail(app_dir, base, ent(productSku="prod-sku-abc123example", seat="hold"), f"marketplace.entitlement.productSku, marketplace.entitlement.seat are settings of {to_contract} them: remove them"))
        to_hourly = ("pricing hourly (RegisterUsage), but pricing is contract, which checks out the AWS License Manager license of productSku "
                     "and uses no product code or public key: remove it, or set marketplace.entitlement.pricing to hourly")
        for key, value in (("productCode", PRODUCT_CODE), ("publicKeys", {"1": "-----BEGIN PUBLIC KEY-----\nX\n-----END PUBLIC KEY-----\n"}),
                           ("publicKeyVersion", 2), ("existingConfigMap", "my-product-marketplace-keys")):
            check(f"render refuses {key} (an hourly setting) under pricing contract with a sentence",
                  must_fail(app_dir, contract, ent(**{key: value}), f"marketplace.entitlement.{key} is a setting of {to_hourly}"))
        check("render refuses onTransientError allow with keySource pinned (a pinned build exits 2 on it) with a sentence",
              must_fail(app_dir, DEFAULTS, ent(onTransientError="allow"), "marketplace.entitlement.onTransientError allow is refused by a pinned mpgate build (keySource pinned, exit 2): it would start the workload unverified whenever the network path to AWS is broken; keep deny"))
        check("render refuses grace with seat check with a sentence", must_fail(app_dir, contract_init, ent(grace="45s"), "marketplace.entitlement.grace applies to seat hold only (how long the workload gets to stop when the license is lost): remove it, or set marketplace.entitlement.seat to hold (mode entrypoint)"))
        guarded("keySource image / pinned render no product code unless set (the image's own code wins); a set one is rendered",
                image_code_problems, app_dir, base)
        usage_refusals(app_dir, base, contract, merged(DEFAULTS, ci["usage"]), merged(DEFAULTS, ci["usage-sidecar"]), ent)

        # The license token (Containers Anywhere): exclusive with IRSA, a region required,
        # contract pricing only, each with a sentence.
        anywhere = merged(DEFAULTS, ci["contract-anywhere"])
        token = {"secretName": "awsmp-license-token-secret", "region": "xx-example-1"}
        check("schema refuses a misspelt licenseToken setting", must_fail(app_dir, anywhere, ent(licenseToken={"secret": "x"}), "additional properties 'secret' not allowed", schema=True))
        exclusive = "marketplace.entitlement.licenseToken and IRSA (serviceAccount.annotations eks.amazonaws.com/role-arn, or AWS_ROLE_ARN / AWS_WEB_IDENTITY_TOKEN_FILE in extraEnv) are exclusive"
        check("render refuses a license token beside an IRSA ServiceAccount with a sentence",
              must_fail(app_dir, anywhere, {"serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::111122223333:role/r"}}}, exclusive))
        check("render refuses a license token beside AWS_WEB_IDENTITY_TOKEN_FILE in extraEnv with a sentence",
              must_fail(app_dir, anywhere, ent(extraEnv=[{"name": "AWS_WEB_IDENTITY_TOKEN_FILE", "value": "/x"}]), exclusive))
        check("render refuses a license token without a region with a sentence",
              must_fail(app_dir, anywhere, ent(licenseToken={"region": ""}), "marketplace.entitlement.licenseToken.region is required with licenseToken.secretName: the license's home region, where the buyer created the token (mpgate assumes none, and nothing sets one outside AWS)"))
        check("render refuses a region that is not one with a sentence",
              must_fail(app_dir, anywhere, ent(licenseToken={"region": "Home Region"}), 'marketplace.entitlement.licenseToken.region "Home Region" is not a region name'))
        check("render refuses a Secret name that is not one with a sentence",
              must_fail(app_dir, anywhere, ent(licenseToken={"secretName": "My_Secret"}), 'marketplace.entitlement.licenseToken.secretName "My_Secret" is not a Secret name'))
        check("render refuses a region without a Secret with a sentence",
              must_fail(app_dir, anywhere, ent(licenseToken={"secretName": ""}), "marketplace.entitlement.licenseToken.region applies with licenseToken.secretName only"))
        check("render refuses a license token under pricing hourly with a sentence",
              must_fail(app_dir, base, ent(licenseToken=token), f"marketplace.entitlement.licenseToken is a setting of {to_contract} it"))
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "deploy/helm",
                  sys.argv[2] if len(sys.argv) > 2 else "target/deploy-rendered"))
