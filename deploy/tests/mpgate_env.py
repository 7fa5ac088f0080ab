"""What every deploy checker knows of mpgate's environment: the key variables, durations, and
the settings of contract pricing (as src/config.rs and src/entitlement.rs read them)."""

import re

KEY_VARS = ("MPGATE_PUBLIC_KEY", "MPGATE_PUBLIC_KEY_FILE", "MPGATE_PUBLIC_KEY_DIR")
HOURLY_VARS = KEY_VARS + ("MPGATE_PRODUCT_CODE", "MPGATE_PUBLIC_KEY_VERSION")
ENTITLEMENT = re.compile(r"[^,=:\s]+(=0*[1-9][0-9]*(:[A-Za-z/]+)?)?")
DURATION = re.compile(r"([0-9]+)(ms|s|m|h)?")


def seconds(text):
    """A duration as mpgate reads it (30, 30s, 1500ms, 2m), in whole seconds; None if not one."""
    m = DURATION.fullmatch(str(text or ""))
    if not m:
        return None
    n, unit = int(m.group(1)), m.group(2) or "s"
    return -(-n // 1000) if unit == "ms" else n * {"s": 1, "m": 60, "h": 3600}[unit]


def pod_uid_problems(where, container):
    """initContainer pattern, hourly: MPGATE_POD_UID from the downward API, in the gate (the
    result file records it) and the app (mpgate verify compares it)."""
    for e in container.get("env") or []:
        if e.get("name") == "MPGATE_POD_UID":
            ref = ((e.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
            if ref == "metadata.uid" and "value" not in e:
                return []
            return [f"{where}: MPGATE_POD_UID must come from the downward API (valueFrom.fieldRef.fieldPath: metadata.uid), is {e}"]
    return [f"{where}: no MPGATE_POD_UID (valueFrom.fieldRef.fieldPath: metadata.uid): the result file would hold in any pod on the node"]


def contract_env_problems(where, env, sku_hint=""):
    """Contract pricing's variables: no hourly ones, a SKU, entitlement specs, a seat mode.
    Returns (problems, seat)."""
    found = []
    stray = [k for k in HOURLY_VARS if k in env]
    if stray:
        found.append(f"{where}: pricing contract uses no product code or key, sets {stray}")
    if not (env.get("MPGATE_PRODUCT_SKU") or "").strip():
        found.append(f"{where}: pricing contract needs MPGATE_PRODUCT_SKU{sku_hint}")
    specs = (env.get("MPGATE_ENTITLEMENTS") or "").split(",")
    bad = [x for x in specs if not ENTITLEMENT.fullmatch(x)]
    if not env.get("MPGATE_ENTITLEMENTS") or bad:
        found.append(f"{where}: MPGATE_ENTITLEMENTS must list NAME, NAME=VALUE or NAME=VALUE:UNIT, comma-separated (bad: {bad})")
    seat = env.get("MPGATE_SEAT", "check")
    if seat not in ("check", "hold"):
        found.append(f"{where}: MPGATE_SEAT must be check or hold, is {seat}")
    if seat != "hold" and "MPGATE_GRACE" in env:
        found.append(f"{where}: MPGATE_GRACE applies to seat hold only")
    return found, seat


DIMENSION = re.compile(r"[^\s,=\x00-\x1f\x7f]{1,255}")
CONTRACT_VARS = ("MPGATE_PRODUCT_SKU", "MPGATE_ENTITLEMENTS", "MPGATE_SEAT")


def usage_env_problems(where, env):
    """Usage pricing's variables (as src/config/usage.rs reads them): 1 to 24 dimension API
    names, a start dimension among them, a ledger directory (without one a crash loses the
    usage not yet sent), durations; no key variable, no contract setting. Returns (problems,
    grace seconds, flush-timeout seconds)."""
    found = []
    stray = [k for k in KEY_VARS + ("MPGATE_PUBLIC_KEY_VERSION",) + CONTRACT_VARS if k in env]
    if stray:
        found.append(f"{where}: pricing usage uses no key and no contract setting (MeterUsage answers with no token), sets {stray}")
    dims = [d.strip() for d in (env.get("MPGATE_DIMENSIONS") or "").split(",") if d.strip()]
    bad = [d for d in dims if not DIMENSION.fullmatch(d)]
    if not 1 <= len(dims) <= 24 or bad or len(set(dims)) != len(dims):
        found.append(f"{where}: MPGATE_DIMENSIONS must list 1 to 24 dimension API names, comma-separated, each once (bad: {bad}, got {dims})")
    start = env.get("MPGATE_START_DIMENSION")
    if start and start not in dims:
        found.append(f"{where}: MPGATE_START_DIMENSION {start!r} is not one of MPGATE_DIMENSIONS")
    if not (env.get("MPGATE_LEDGER_DIR") or "").startswith("/"):
        found.append(f"{where}: pricing usage needs MPGATE_LEDGER_DIR on a volume (without it a crash loses every unit not yet sent), is {env.get('MPGATE_LEDGER_DIR')!r}")
    grace, flush = seconds(env.get("MPGATE_GRACE", "30s")), seconds(env.get("MPGATE_FLUSH_TIMEOUT", "10s"))
    if grace is None or flush is None:
        found.append(f"{where}: MPGATE_GRACE and MPGATE_FLUSH_TIMEOUT must be durations, are {env.get('MPGATE_GRACE')!r}, {env.get('MPGATE_FLUSH_TIMEOUT')!r}")
    return found, grace or 0, flush or 0
