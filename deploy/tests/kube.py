"""Shared checks: strict Kubernetes schema validation and the pod security baseline."""

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


def pod_spec(resource):
    if resource.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return resource["spec"]["template"]["spec"]
    if resource.get("kind") == "Pod":
        return resource["spec"]
    return None


def security_problems(resource):
    """Every container: limits and requests, read-only root, non-root, no escalation,
    all capabilities dropped, RuntimeDefault seccomp (from the container or the pod)."""
    spec = pod_spec(resource)
    if spec is None:
        return []
    pod_sc = spec.get("securityContext") or {}
    found = []
    for c in spec.get("initContainers", []) + spec.get("containers", []):
        name = f"{resource['kind']}/{resource['metadata']['name']} container {c['name']}"
        sc = c.get("securityContext") or {}
        res = c.get("resources") or {}
        if not res.get("requests") or not res.get("limits"):
            found.append(f"{name}: resources.requests and resources.limits are required")
        if sc.get("readOnlyRootFilesystem") is not True:
            found.append(f"{name}: readOnlyRootFilesystem must be true")
        if sc.get("allowPrivilegeEscalation") is not False:
            found.append(f"{name}: allowPrivilegeEscalation must be false")
        if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
            found.append(f"{name}: runAsNonRoot must be true")
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            found.append(f"{name}: capabilities.drop must contain ALL")
        seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
        if seccomp != "RuntimeDefault":
            found.append(f"{name}: seccompProfile must be RuntimeDefault")
    return found


def load_all(text):
    return [doc for doc in yaml.safe_load_all(text) if doc]
