"""Strict Kubernetes schema validation (kubernetes-validate, offline).

Pod security (non-root, no privilege escalation, capabilities, read-only root, seccomp,
host namespaces, limits, probes, NetworkPolicy, ...) is checked by checkov with
.checkov.yaml (deploy/tests/check_checkov.py), not by hand here."""

import kubernetes_validate
import yaml

KUBE_VERSION = kubernetes_validate.latest_version()


def validate(resource):
    """Problems of one resource against the official schema (strict: no unknown fields).

    A resource kind without a schema is a problem too (the CLI only warns about it)."""
    where = f"{resource.get('kind')}/{(resource.get('metadata') or {}).get('name')}"
    try:
        kubernetes_validate.validate(resource, KUBE_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        path = ".".join(str(p) for p in e.path)
        return [f"{where}: {path}: {e.message}"]
    except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as e:
        return [f"{where}: {getattr(e, 'message', e)}"]
    return []


def load_all(text):
    return [doc for doc in yaml.safe_load_all(text) if doc]
