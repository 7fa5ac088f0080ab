"""Validate the plain Kubernetes manifests: official schemas (strict) and the mpgate wiring.

Usage: python check_k8s.py FILE...   (exit 1 on any problem, warnings included)

Pod security is checkov's (deploy/tests/check_checkov.py). Here: every file is valid
against the schema, and together they wire the gate as deploy/README.md says: no region
(IRSA sets the cluster's), the key ring ConfigMap mounted as a key directory with
public-key-v<N>.pem files, an IRSA-annotated ServiceAccount, a NetworkPolicy that selects
the pods, probes, and each pattern's command. A container with MPGATE_PRICING=contract
(AWS License Manager) sets no product code and no key instead, but a product SKU and valid
entitlements; seat hold only as the entrypoint wrapper, with a terminationGracePeriodSeconds
that leaves room to check the seat in. A contract gate with MPGATE_LICENSE_TOKEN_FILE (a
self-managed cluster: the buyer's license token instead of IRSA) mounts the buyer's Secret
read-only where the file is (optional: false, keys license_token and iam_role), sets
MPGATE_LICENSE_REGION, and its ServiceAccount has no IRSA role (the only ServiceAccounts
without one are those of such gates); no other container mounts the Secret.

Secure by default: an hourly gate is pinned (no product code, no key variable, no key
ring; the initContainer's image is an mpgate-pinned one) unless its file is named
*-unpinned.yaml and its header says UNPINNED and "for CI and testing"; deployment-initcontainer.yaml
and deployment-entrypoint.yaml, the examples deploy/README.md starts from, must be pinned.
"""

import os
import re
import sys

import kube
from mpgate_env import KEY_VARS, contract_env_problems, pod_uid_problems, seconds



def contract_problems(where, gate, spec):
    """pricing contract: SKU and entitlements, no product code or key; seat hold wraps the
    workload and the pod leaves time to check the seat in."""
    env = env_of(gate)
    found, seat = contract_env_problems(where, env, " (the product ID from the portal)")
    if any(v.get("configMap") for v in spec.get("volumes") or []) or any(
            m["mountPath"] not in ("/run/mpgate", token_dir(env)) for m in gate.get("volumeMounts") or []):
        found.append(f"{where}: pricing contract mounts no key ring")
    if token_dir(env):
        found += token_problems(where, gate, spec)
    if seat == "hold":
        if gate.get("command") != ["/mpgate", "--"]:
            found.append(f"{where}: seat hold works only with mpgate as the entrypoint wrapper (init mode + hold exits 2)")
        grace = seconds(env.get("MPGATE_GRACE", "30s"))
        period = spec.get("terminationGracePeriodSeconds", 30)
        if grace is None:
            found.append(f"{where}: MPGATE_GRACE is not a duration: {env.get('MPGATE_GRACE')}")
        elif period < grace + 5:
            found.append(f"{where}: terminationGracePeriodSeconds {period} must leave MPGATE_GRACE ({grace} s) + a few seconds to check the seat in")
    return found


def token_dir(env):
    """Where a gate's license token file is, if it has one."""
    path = env.get("MPGATE_LICENSE_TOKEN_FILE")
    return os.path.dirname(path) if path else None


def token_problems(where, gate, spec):
    """The buyer's license token Secret: read-only where MPGATE_LICENSE_TOKEN_FILE points,
    never optional, both keys; a region; only the gate mounts it."""
    found = []
    env = env_of(gate)
    mount = next((m for m in gate.get("volumeMounts") or [] if m["mountPath"] == token_dir(env)), None)
    volume = next((v for v in spec.get("volumes") or [] if mount and v["name"] == mount["name"]), {})
    secret = volume.get("secret") or {}
    keys = sorted(i["key"] for i in secret.get("items") or [])
    if not mount or not mount.get("readOnly") or not secret.get("secretName") or secret.get("optional") is not False:
        found.append(f"{where}: {token_dir(env)} must be a read-only mount of the buyer's Secret, optional: false")
    if keys != ["iam_role", "license_token"] or os.path.basename(env["MPGATE_LICENSE_TOKEN_FILE"]) != "license_token":
        found.append(f"{where}: the Secret's license_token and iam_role must be mounted side by side, are {keys}")
    if not env.get("MPGATE_LICENSE_REGION"):
        found.append(f"{where}: a license token needs MPGATE_LICENSE_REGION (nothing sets a region outside AWS)")
    for k in ("AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        if k in env:
            found.append(f"{where}: a license token needs no {k} (the role is in iam_role)")
    for c in spec.get("initContainers", []) + spec["containers"]:
        if c is not gate and mount and any(m["name"] == mount["name"] for m in c.get("volumeMounts") or []):
            found.append(f"{where}: container {c['name']} must not mount the license token")
    return found


def verify_problems(where, gate, app):
    """initContainer pattern, hourly: the app container runs `mpgate verify --result-file
    "$MPGATE_RESULT_FILE" --renew` at its own start, so it needs the gate's product code,
    key and result file, with the key ring and the result directory mounted read-only."""
    found = []
    genv, aenv = env_of(gate), env_of(app)
    for k in ("MPGATE_PRODUCT_CODE", "MPGATE_PUBLIC_KEY_VERSION", "MPGATE_RESULT_FILE") + KEY_VARS:
        if genv.get(k) != aenv.get(k):
            found.append(f"{where}: the app container needs the gate's {k} for mpgate verify (gate {genv.get(k)!r}, app {aenv.get(k)!r})")
    found += pod_uid_problems(f"{where}: {gate['name']}", gate) + pod_uid_problems(f"{where}: {app['name']}", app)
    mounts = {m["mountPath"]: m for m in app.get("volumeMounts") or []}
    for path in (genv.get("MPGATE_PUBLIC_KEY_DIR"), os.path.dirname(genv.get("MPGATE_RESULT_FILE") or "")):
        if path and not mounts.get(path, {}).get("readOnly"):
            found.append(f"{where}: the app container must mount {path} read-only (for mpgate verify)")
    return found


def env_of(c):
    return {e["name"]: e.get("value") for e in c.get("env") or []}


# The examples deploy/README.md and docs/deploy-reference.md start from: pinned builds.
PINNED_DEFAULTS = ("deployment-initcontainer.yaml", "deployment-entrypoint.yaml")


def header(text):
    """The leading comment block of a manifest file, where its form is stated."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line)
    return " ".join(line.lstrip("# ") for line in lines)


def pinned_problems(where, path, gate, app, spec):
    """An hourly gate with no key variable: a pinned build holds the product code and keys."""
    found = []
    env = env_of(gate)
    if "MPGATE_PRODUCT_CODE" in env:
        found.append(f"{where}: a pinned gate needs no MPGATE_PRODUCT_CODE (the build holds it); an example that sets it looks unpinned")
    if any(v.get("configMap") for v in spec.get("volumes") or []):
        found.append(f"{where}: a pinned gate mounts no key ring")
    if "unpinned" in os.path.basename(path):
        found.append(f"{where}: the file is named unpinned but its gate is wired as a pinned build")
    if gate is not app and "/mpgate-pinned:" not in gate.get("image", ""):
        found.append(f"{where}: the gate image should be a pinned mpgate image (REGISTRY/mpgate-pinned), is {gate.get('image')}")
    if gate is not app:
        found += verify_problems(where, gate, app)
    return found


def wiring_problems(by_file, texts):
    found = []
    every = [r for rs in by_file.values() for r in rs]
    configmaps = {r["metadata"]["name"]: r for r in every if r["kind"] == "ConfigMap"}
    sas = {r["metadata"]["name"]: r for r in every if r["kind"] == "ServiceAccount"}
    policies = [r for r in every if r["kind"] == "NetworkPolicy"]
    token_sas = set()
    for resources in by_file.values():
        for dep in (r for r in resources if r["kind"] == "Deployment"):
            spec = dep["spec"]["template"]["spec"]
            if any("MPGATE_LICENSE_TOKEN_FILE" in env_of(c) for c in spec.get("initContainers", []) + spec["containers"]):
                token_sas.add(spec.get("serviceAccountName"))
    for name, sa in sas.items():
        irsa = "eks.amazonaws.com/role-arn" in (sa["metadata"].get("annotations") or {})
        if name in token_sas and irsa:
            found.append(f"ServiceAccount {name}: a license token and IRSA are exclusive")
        elif name not in token_sas and not irsa:
            found.append(f"ServiceAccount {name}: no IRSA role annotation")
    for path, resources in by_file.items():
        for dep in (r for r in resources if r["kind"] == "Deployment"):
            where = f"{path}: Deployment {dep['metadata']['name']}"
            spec = dep["spec"]["template"]["spec"]
            labels = dep["spec"]["template"]["metadata"]["labels"]
            if spec.get("serviceAccountName") not in sas:
                found.append(f"{where}: its ServiceAccount is not among the manifests")
            if not any(all(labels.get(k) == v for k, v in (p["spec"]["podSelector"].get("matchLabels") or {}).items())
                       and p["spec"]["podSelector"].get("matchLabels") for p in policies):
                found.append(f"{where}: no NetworkPolicy selects its pods")
            containers = spec.get("initContainers", []) + spec["containers"]
            for c in containers:
                if {"AWS_REGION", "AWS_DEFAULT_REGION"} & set(env_of(c)):
                    found.append(f"{where}: container {c['name']} sets a region (the IRSA webhook sets the cluster's; a set one wins and is wrong elsewhere)")
            runs_gate = [c for c in containers if (c.get("command") or [None])[0] == "/mpgate"]
            if len(runs_gate) != 1:
                found.append(f"{where}: expected one container running /mpgate, got {len(runs_gate)}")
                continue
            gate = runs_gate[0]
            env = env_of(gate)
            if gate["command"] == ["/mpgate"] and (gate.get("args") or gate not in spec.get("initContainers", [])):
                found.append(f"{where}: /mpgate without -- must be an init container without args")
            if gate["command"] == ["/mpgate", "--"] and not gate.get("args"):
                found.append(f"{where}: /mpgate -- needs the workload command in args")
            app = next(c for c in spec["containers"] if c["name"] == "app")
            for probe in ("livenessProbe", "readinessProbe"):
                if not app.get(probe):
                    found.append(f"{where}: app has no {probe}")
            if gate is app and not app.get("startupProbe"):
                found.append(f"{where}: entrypoint mode needs a startupProbe that covers mpgate's check")
            if env.get("MPGATE_PRICING") == "contract":
                found += contract_problems(where, gate, spec)
                continue
            keys = [k for k in KEY_VARS if k in env]
            if not keys:
                found += pinned_problems(where, path, gate, app, spec)
                continue
            head = header(texts[path])
            if "unpinned" not in os.path.basename(path) or "UNPINNED" not in head or "for CI and testing" not in head:
                found.append(f"{where}: an unpinned gate (the key from the pod, {keys}) belongs in a file named *-unpinned.yaml "
                             "whose header says UNPINNED and 'for CI and testing'; the examples are pinned builds")
            if keys != ["MPGATE_PUBLIC_KEY_DIR"]:
                found.append(f"{where}: the key ring must be MPGATE_PUBLIC_KEY_DIR alone, is {keys}")
                continue
            mount = next((m for m in gate.get("volumeMounts") or [] if m["mountPath"] == env["MPGATE_PUBLIC_KEY_DIR"]), None)
            volume = next((v for v in spec.get("volumes") or [] if mount and v["name"] == mount["name"]), {})
            cm = configmaps.get((volume.get("configMap") or {}).get("name"))
            if not mount or not mount.get("readOnly") or cm is None:
                found.append(f"{where}: {env['MPGATE_PUBLIC_KEY_DIR']} must be a read-only mount of a ConfigMap among the manifests")
            elif not cm.get("data") or not all(re.fullmatch(r"public-key-v[1-9][0-9]*\.pem", k) for k in cm["data"]):
                found.append(f"{where}: ConfigMap {cm['metadata']['name']} must hold public-key-v<N>.pem files, holds {sorted(cm.get('data') or {})}")
            if gate is not app:
                found += verify_problems(where, gate, app)
            version = env.get("MPGATE_PUBLIC_KEY_VERSION")
            if version and cm is not None and f"public-key-v{version}.pem" not in (cm.get("data") or {}):
                found.append(f"{where}: MPGATE_PUBLIC_KEY_VERSION {version} is not in the key ring")
    return found


def main(paths):
    failed = False
    by_file = {}
    texts = {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            texts[path] = f.read()
        resources = kube.load_all(texts[path])
        by_file[path] = resources
        if not resources:
            print(f"ERROR {path}: no resource")
            failed = True
        for r in resources:
            for p in kube.validate(r):
                print(f"ERROR {path}: {p}")
                failed = True
    for name in PINNED_DEFAULTS:
        if not any(os.path.basename(p) == name for p in by_file):
            print(f"ERROR {name}: the pinned default example is missing")
            failed = True
    for p in wiring_problems(by_file, texts):
        print(f"ERROR {p}")
        failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
