"""What both conformance scripts share: boto3 and PyJWT (exit 3 when missing), one-line
checks, a boto3 client for an emulator and the check of a raised AWS error.

The scripts import it from their own directory (Python puts a script's directory first on
sys.path), so they run from any working directory.
"""

import sys

try:
    import boto3
    import botocore
    import botocore.loaders
    from botocore.config import Config
    from botocore.exceptions import ClientError
except ImportError as e:  # pragma: no cover - depends on the machine
    print(f"boto3 is not importable ({e}); install it with: pip install boto3", file=sys.stderr)
    sys.exit(3)
try:
    import jwt  # PyJWT, with its `cryptography` backend for PS256/PS384
    from cryptography.hazmat.primitives.serialization import load_pem_public_key
except ImportError as e:  # pragma: no cover - depends on the machine
    print(f"PyJWT is not importable ({e}); install it with: pip install PyJWT cryptography", file=sys.stderr)
    sys.exit(3)

__all__ = [
    "boto3", "botocore", "Config", "ClientError", "jwt", "load_pem_public_key",
    "check", "finish", "client", "expect_error",
]

failures = []


def check(name, ok, detail=""):
    print(f"{'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}")
    if not ok:
        failures.append(name)


def finish():
    if failures:
        print(f"{len(failures)} check(s) failed: {', '.join(failures)}")
        sys.exit(1)
    print("all checks passed")


def client(service, url, region, creds, validate=True, read_timeout=None):
    access_key, secret, token = creds
    return boto3.client(
        service,
        endpoint_url=url,
        region_name=region,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret,
        aws_session_token=token,
        # total_max_attempts=1: exactly one call, no retries (max_attempts counts retries
        # in botocore's legacy mode).
        config=Config(
            retries={"total_max_attempts": 1, "mode": "standard"},
            parameter_validation=validate,
            connect_timeout=5,
            read_timeout=read_timeout or 10,
        ),
    )


def expect_error(name, fn, error_code, status=None, exc_class=None, need_class=False):
    """Checks that `fn` raises AWS error `error_code` with a request id, and `status` and an
    instance of `exc_class` when given (`need_class`: a missing class fails). Returns the
    ClientError, or None."""
    try:
        fn()
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code")
        got_status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        request_id = e.response.get("ResponseMetadata", {}).get("RequestId")
        ok = code == error_code and (status is None or got_status == status) and bool(request_id)
        if exc_class is not None or need_class:
            ok = ok and exc_class is not None and isinstance(e, exc_class)
        check(name, ok, f"code={code} status={got_status} class={type(e).__name__} requestId={request_id}")
        return e
    except Exception as e:  # noqa: BLE001 - report anything else as a failure
        check(name, False, f"unexpected {type(e).__name__}: {e}")
        return None
    check(name, False, "no error raised")
    return None
