"""Validate ECS task definition JSON files against botocore's RegisterTaskDefinition input.

Usage: python check_ecs.py FILE...   (exit 1 on any problem)

botocore's model is the one the AWS CLI and SDKs use, so a file that passes here (after
the documented `envsubst '$REGISTRY $AWS_REGION'`) has the shape
`aws ecs register-task-definition --cli-input-json file://FILE` accepts. Beyond the shape,
it checks what the mpgate patterns and key sources need (deploy/README.md): checkov has
no policy for raw task definitions, so the container hardening is checked here too.

Key sources: a container that runs /mpgate -- COMMAND in the seller's image takes the key
from the image (or a pinned build) and must set no key variable (a second one makes mpgate
exit 2); a gate container of an unpinned mpgate image gets MPGATE_PUBLIC_KEY inline.

Secure by default: every hourly task definition says what it runs in its tag mpgate-build:
"pinned" (no product code, no key variable; a gate container runs an mpgate-pinned image)
or, only in a file named *-unpinned.json, "unpinned - for CI and testing ...".

Contract pricing (MPGATE_PRICING=contract, AWS License Manager): no product code and no key
variable at all, a product SKU, valid entitlements; seat hold only in the container that
runs /mpgate -- COMMAND (mpgate stays PID 1, so initProcessEnabled is not needed there), with
a stopTimeout of at least MPGATE_GRACE + 5 s (at most 120) to check the seat in.

Usage pricing (MPGATE_PRICING=usage, MeterUsage): no key variable, valid dimensions; only in
the container that runs /mpgate -- COMMAND (mpgate stays the workload's parent and meters
beside it); MPGATE_LEDGER_DIR mounted writable from a task volume of this task alone (a host
path or a shared file system could replay another task's ledger: usage billed twice); a
stopTimeout of at least MPGATE_GRACE + MPGATE_FLUSH_TIMEOUT + 5 s (at most 120) for the last
partial hour.
"""

import json
import os
import re
import sys

import botocore.session
from botocore.validate import ParamValidator

from mpgate_env import KEY_VARS, contract_env_problems, seconds, usage_env_problems

PLACEHOLDERS = {"REGISTRY", "AWS_REGION"}


def env_of(container):
    return {e.get("name"): e.get("value") for e in container.get("environment", [])}


def contract_problems(c, wrapper):
    """The container that runs mpgate with MPGATE_PRICING=contract."""
    env = env_of(c)
    name = c.get("name")
    found, seat = contract_env_problems(f"container {name}", env)
    if seat == "hold":
        if not wrapper:
            found.append(f"container {name}: seat hold works only with mpgate as the entrypoint wrapper (init mode + hold exits 2)")
        grace = seconds(env.get("MPGATE_GRACE", "30s"))
        stop = c.get("stopTimeout", 30)
        if grace is None:
            found.append(f"container {name}: MPGATE_GRACE is not a duration: {env.get('MPGATE_GRACE')}")
        elif not grace + 5 <= stop <= 120:
            found.append(f"container {name}: stopTimeout {stop} must leave MPGATE_GRACE ({grace} s) + a few seconds to check the seat in (ECS allows at most 120)")
    return found


def usage_problems(c, wrapper, params):
    """The container that runs mpgate with MPGATE_PRICING=usage."""
    env = env_of(c)
    name = c.get("name")
    found, grace, flush = usage_env_problems(f"container {name}", env)
    if not wrapper:
        found.append(f"container {name}: pricing usage works only with mpgate as the entrypoint wrapper: the metering agent runs as long as the workload (a gate container exits before it starts)")
    stop = c.get("stopTimeout", 30)
    if not grace + flush + 5 <= stop <= 120:
        found.append(f"container {name}: stopTimeout {stop} must leave MPGATE_GRACE ({grace} s) + MPGATE_FLUSH_TIMEOUT ({flush} s) + a few seconds to send the last partial hour (ECS allows at most 120)")
    ledger = env.get("MPGATE_LEDGER_DIR")
    mount = next((m for m in c.get("mountPoints") or [] if m.get("containerPath") == ledger), None)
    if mount is None or mount.get("readOnly"):
        found.append(f"container {name}: MPGATE_LEDGER_DIR ({ledger}) must be a writable mountPoint of a task volume, is {mount}")
    else:
        volume = next((v for v in params.get("volumes") or [] if v.get("name") == mount.get("sourceVolume")), None)
        if volume is None or set(volume) - {"name"}:
            found.append(f"container {name}: the ledger's volume must be a task volume of this task alone ({{\"name\": ...}}, no host path, EFS or shared Docker volume: another task's ledger would be sent again), is {volume}")
    return found


def env_names(container):
    return [e.get("name") for e in container.get("environment", [])]


def substituted(text):
    """The file as `envsubst '$REGISTRY $AWS_REGION'` would leave it, with example values."""
    return text.replace("${REGISTRY}", "registry.example.com/seller").replace("${AWS_REGION}", "REGION")


def problems(path, shape):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    found = []
    unknown = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text)) - PLACEHOLDERS
    if unknown:
        found.append(f"placeholders {sorted(unknown)}: only ${{REGISTRY}} and ${{AWS_REGION}} are documented (envsubst)")
    params = json.loads(substituted(text))
    report = ParamValidator().validate(params, shape)
    if report.has_errors():
        found.append(report.generate_report())
    containers = {c.get("name"): c for c in params.get("containerDefinitions", [])}
    if not params.get("taskRoleArn"):
        found.append("no taskRoleArn: mpgate needs a task role allowed aws-marketplace:RegisterUsage (hourly), the License Manager actions (contract) or aws-marketplace:MeterUsage (usage)")
    for name, c in containers.items():
        if c.get("logConfiguration", {}).get("logDriver") != "awslogs":
            found.append(f"container {name}: logDriver is not awslogs")
        if not c.get("readonlyRootFilesystem"):
            found.append(f"container {name}: readonlyRootFilesystem must be true")
        if (c.get("user") or "0").split(":")[0] in ("0", "root"):
            found.append(f"container {name}: must run as a non-root user")
        if "ALL" not in c.get("linuxParameters", {}).get("capabilities", {}).get("drop", []):
            found.append(f"container {name}: must drop ALL capabilities")
        if c.get("privileged"):
            found.append(f"container {name}: must not be privileged")
        for var in ("AWS_REGION", "AWS_DEFAULT_REGION"):
            if var in env_names(c):
                found.append(f"container {name}: sets {var}; ECS sets the task's region")
        keys = [k for k in env_names(c) if k in KEY_VARS]
        if len(keys) > 1:
            found.append(f"container {name}: sets {keys}; mpgate accepts exactly one (exit 2)")
    tags = {t.get("key"): t.get("value", "") for t in params.get("tags", [])}
    build = tags.get("mpgate-build")
    unpinned_file = "unpinned" in os.path.basename(path)
    gated = [c for c in containers.values() if c.get("entryPoint") == ["/mpgate", "--"]]
    gate = containers.get("mpgate")
    runner = gate if gate is not None else (gated[0] if gated else None)
    contract = runner is not None and env_of(runner).get("MPGATE_PRICING") == "contract"
    usage = runner is not None and env_of(runner).get("MPGATE_PRICING") == "usage"
    if contract:
        found += contract_problems(runner, runner is not gate)
        pinned = False
    elif usage:
        found += usage_problems(runner, runner is not gate, params)
        pinned = False
    elif build == "pinned" and not unpinned_file:
        pinned = True
    elif unpinned_file and (build or "").startswith("unpinned - for CI and testing"):
        pinned = False
    else:
        found.append(f"tag mpgate-build is {build!r}: an hourly task definition is a pinned build (\"pinned\"), or, "
                     "only in a file named *-unpinned.json, \"unpinned - for CI and testing ...\"")
        pinned = not unpinned_file
    if pinned and runner is not None:
        names = env_names(runner)
        stray = [n for n in names if n in KEY_VARS or n == "MPGATE_PRODUCT_CODE"]
        if stray:
            found.append(f"pinned: the container that runs mpgate must set no key variable and no product code (the build holds them), sets {stray}")
        if runner is gate and "/mpgate-pinned:" not in gate.get("image", ""):
            found.append(f"pinned: the gate container should run a pinned mpgate image (REGISTRY/mpgate-pinned), runs {gate.get('image')}")
    if gate is not None:
        if gate.get("essential", True):
            found.append("container mpgate must be non-essential (essential: false)")
        if gate.get("entryPoint") != ["/mpgate"] or gate.get("command"):
            found.append("container mpgate must run /mpgate without a command (init mode)")
        waiting = [
            c for c in containers.values()
            if {"containerName": "mpgate", "condition": "SUCCESS"} in c.get("dependsOn", [])
        ]
        if not waiting:
            found.append("no container dependsOn mpgate with condition SUCCESS")
        for c in waiting:
            if not c.get("linuxParameters", {}).get("initProcessEnabled"):
                found.append(f"container {c['name']}: initProcessEnabled (mpgate is not an init)")
        names = env_names(gate)
        keys = [k for k in names if k in KEY_VARS]
        if contract or usage or pinned:
            pass
        else:
            if keys != ["MPGATE_PUBLIC_KEY"]:
                found.append(f"the mpgate image holds no key: the gate container needs MPGATE_PUBLIC_KEY inline (or use a pinned image), sets {keys}")
            if "MPGATE_PRODUCT_CODE" not in names:
                found.append("MPGATE_PRODUCT_CODE is not set")
    elif gated:
        c = gated[0]
        if not c.get("command"):
            found.append("the gated container has no command after /mpgate --")
        # With seat hold or usage pricing mpgate stays PID 1, the workload's parent, and reaps.
        parent = (contract and env_of(c).get("MPGATE_SEAT") == "hold") or usage
        if not parent and not c.get("linuxParameters", {}).get("initProcessEnabled"):
            found.append("the gated container needs initProcessEnabled (mpgate execs the workload and is no init; with seat hold or usage pricing it stays PID 1 and reaps)")
        keys = [k for k in env_names(c) if k in KEY_VARS]
        if keys:
            found.append(f"the gated image holds its key (keySource image) or is pinned: a key variable on top ({keys}) makes mpgate exit 2")
    else:
        found.append("neither a container with entryPoint [/mpgate, --] nor a container named mpgate")
    return found


def main(paths):
    model = botocore.session.get_session().get_service_model("ecs")
    shape = model.operation_model("RegisterTaskDefinition").input_shape
    failed = False
    for path in paths:
        found = problems(path, shape)
        for p in found:
            print(f"ERROR {path}: {p}")
        failed |= bool(found)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
