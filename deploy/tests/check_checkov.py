"""Run checkov (its own virtualenv) with the repository's .checkov.yaml over every deploy
artefact it has a policy for, and fail on any failed check, parse error or bad skip.

Usage: python check_checkov.py CHECKOV_BIN RENDERED_DIR

Targets: deploy/kubernetes (kubernetes), each directory of RENDERED_DIR (the Helm chart
rendered by check_helm.py, one directory per case: checkov's kubernetes framework names a
resource by kind, namespace and name, so renders of one release are scanned one at a time),
both Dockerfiles (dockerfile) and deploy/ecs/cloudformation.yaml (cloudformation).

.checkov.yaml is checked too: every skip has a one-line reason, no skip touches the pod
and image security baseline (FORBIDDEN), no option softens failures, and every skip is
still needed (the skipped check, run alone without the config, fails somewhere).
Prints one line per check and exits 1 if any failed.
"""

import concurrent.futures
import glob
import json
import os
import re
import subprocess
import sys
import tempfile

import yaml

CONFIG = ".checkov.yaml"
# Privilege escalation, privileged, root, capabilities, read-only root filesystem, seccomp,
# host namespaces, security contexts; the image's non-root user.
FORBIDDEN = {f"CKV_K8S_{n}" for n in (1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 22, 23, 24, 25, 28, 29, 30, 31, 32, 36, 37, 39, 40)} | {"CKV_DOCKER_3", "CKV_DOCKER_8"}
ALLOWED_OPTIONS = {"skip-check", "skip-download", "compact", "quiet"}
results = []


def report(name, problems):
    results.append(not problems)
    print(f"{'ok  ' if not problems else 'FAIL'} checkov: {name}")
    for p in problems:
        for line in str(p).splitlines():
            print(f"       {line}")


def config_problems():
    with open(CONFIG, encoding="utf-8") as f:
        text = f.read()
    config = yaml.safe_load(text) or {}
    found = [f"{CONFIG}: option {k!r} is not allowed (only {sorted(ALLOWED_OPTIONS)}): it could hide failures"
             for k in config if k not in ALLOWED_OPTIONS]
    skips = config.get("skip-check") or []
    if isinstance(skips, str):
        skips = [s.strip() for s in skips.split(",")]
    for check_id in skips:
        if check_id in FORBIDDEN:
            found.append(f"{CONFIG}: {check_id} must not be skipped (pod / image security baseline)")
        line = next((l for l in text.splitlines() if re.match(rf"^\s*-\s*{re.escape(check_id)}\b", l)), "")
        reason = line.split("#", 1)[1].strip() if "#" in line else ""
        if len(reason.split()) < 4:
            found.append(f"{CONFIG}: {check_id} needs its one-line reason as a comment on its own line")
    return found, skips


def run(framework, args, cwd=None, extra=()):
    """checkov's JSON reports for one target (a list: one per framework that ran)."""
    cmd = [CHECKOV, "--framework", framework, "--skip-download", "-o", "json", *extra, *args]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    try:
        out = json.loads(proc.stdout) if proc.stdout.strip() else []
    except json.JSONDecodeError:
        raise RuntimeError(f"checkov printed no JSON (exit {proc.returncode}): {proc.stdout[-2000:]}{proc.stderr[-2000:]}") from None
    reports = out if isinstance(out, list) else [out]
    return [r for r in reports if isinstance(r, dict) and "results" in r], proc


def documents(path):
    files = [path] if os.path.isfile(path) else glob.glob(os.path.join(path, "*.yaml"))
    count = 0
    for f in files:
        with open(f, encoding="utf-8") as fh:
            count += sum(1 for d in yaml.safe_load_all(fh) if d)
    return count


def target_problems(framework, path):
    args = ["-d", path] if os.path.isdir(path) else ["-f", path]
    reports, proc = run(framework, args, extra=["--config-file", CONFIG])
    if not reports:
        return [f"no {framework} report (exit {proc.returncode}): {proc.stderr[-2000:]}"], 0
    found = []
    passed = 0
    for r in reports:
        s = r.get("summary", {})
        passed += s.get("passed", 0)
        if s.get("parsing_errors"):
            found.append(f"{s['parsing_errors']} file(s) checkov could not parse (their checks did not run): {r['results'].get('parsing_errors')}")
        for c in r["results"].get("failed_checks", []):
            found.append(f"{c['check_id']} {c['check_name']}: {c['resource']} ({c['file_path']}:{c['file_line_range']})")
        want = documents(path) if framework == "kubernetes" else 1
        if s.get("resource_count", 0) < want:
            found.append(f"checkov saw {s.get('resource_count', 0)} resources, expected at least {want}")
    if not passed:
        found.append("no check passed: checkov did not scan anything")
    if proc.returncode != 0 and not found:
        found.append(f"checkov exited {proc.returncode}: {proc.stderr[-2000:]}")
    return found, passed


def framework_of(check_id):
    if re.match(r"CKV2?_K8S_", check_id):
        return "kubernetes"
    if re.match(r"CKV2?_DOCKER_", check_id):
        return "dockerfile"
    return "cloudformation"


def stale_problems(skips, targets):
    """Each skipped check, run alone without the config, must fail on some target."""
    found = []
    needed = {}
    with tempfile.TemporaryDirectory() as empty:  # no .checkov.yaml to discover here
        for check_id in skips:
            fw = framework_of(check_id)
            hits = 0
            for framework, path in targets:
                if framework != fw:
                    continue
                path = os.path.abspath(path)
                args = ["-d", path] if os.path.isdir(path) else ["-f", path]
                reports, _ = run(framework, args, cwd=empty, extra=["--check", check_id])
                hits += sum(1 for r in reports for c in r["results"].get("failed_checks", []) if c["check_id"] == check_id)
            needed[check_id] = hits
            if not hits:
                found.append(f"{check_id} is skipped in {CONFIG} but fails nowhere: remove the skip")
    return found, needed


def main(rendered_dir):
    problems, skips = config_problems()
    report(f"{CONFIG}: every skip has a reason, none touches the security baseline, no option softens failures", problems)
    targets = [("kubernetes", "deploy/kubernetes")]
    targets += [("kubernetes", d) for d in sorted(glob.glob(os.path.join(rendered_dir, "*"))) if os.path.isdir(d)]
    if len(targets) < 3:
        report("rendered Helm chart present", [f"no rendered cases under {rendered_dir} (check_helm.py writes them)"])
    targets += [("dockerfile", "Dockerfile"), ("dockerfile", "deploy/examples/seller-image/Dockerfile"),
                ("cloudformation", "deploy/ecs/cloudformation.yaml")]
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        futures = {t: pool.submit(target_problems, *t) for t in targets}
        stale = pool.submit(stale_problems, skips, targets)
        for (framework, path), fut in futures.items():
            try:
                found, passed = fut.result()
            except Exception as e:  # noqa: BLE001
                found, passed = [f"{type(e).__name__}: {e}"], 0
            report(f"{framework} {path}: {passed} passed, {len(found)} problem(s)", found)
        found, needed = stale.result()
        report(f"every skip is still needed ({', '.join(f'{k}: {v} finding(s)' for k, v in needed.items()) or 'no skips'})", found)
    return 0 if all(results) else 1


if __name__ == "__main__":
    CHECKOV = os.path.abspath(sys.argv[1])
    sys.exit(main(sys.argv[2] if len(sys.argv) > 2 else "target/deploy-rendered"))
