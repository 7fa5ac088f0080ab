"""Validate ECS task definition JSON files against botocore's RegisterTaskDefinition input.

Usage: python check_ecs.py FILE...   (exit 1 on any problem)

botocore's model is the one the AWS CLI and SDKs use, so a file that passes here has the
shape `aws ecs register-task-definition --cli-input-json file://FILE` accepts. Beyond the
shape, it checks what the mpgate patterns need (see deploy/README.md).
"""

import json
import sys

import botocore.session
from botocore.validate import ParamValidator


def problems(path, shape):
    with open(path, encoding="utf-8") as f:
        params = json.load(f)
    found = []
    report = ParamValidator().validate(params, shape)
    if report.has_errors():
        found.append(report.generate_report())
    containers = {c.get("name"): c for c in params.get("containerDefinitions", [])}
    if not params.get("taskRoleArn"):
        found.append("no taskRoleArn: mpgate needs a task role allowed aws-marketplace:RegisterUsage")
    for name, c in containers.items():
        if c.get("logConfiguration", {}).get("logDriver") != "awslogs":
            found.append(f"container {name}: logDriver is not awslogs")
    gated = [c for c in containers.values() if c.get("entryPoint") == ["/mpgate", "--"]]
    gate = containers.get("mpgate")
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
        env = gate.get("environment", [])
    elif gated:
        if not gated[0].get("command"):
            found.append("the gated container has no command after /mpgate --")
        env = gated[0].get("environment", [])
    else:
        found.append("neither a container with entryPoint [/mpgate, --] nor a container named mpgate")
        env = []
    names = {e.get("name") for e in env}
    if "MPGATE_PRODUCT_CODE" not in names:
        found.append("MPGATE_PRODUCT_CODE is not set")
    if not names & {"MPGATE_PUBLIC_KEY", "MPGATE_PUBLIC_KEY_FILE"}:
        found.append("neither MPGATE_PUBLIC_KEY nor MPGATE_PUBLIC_KEY_FILE is set")
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
