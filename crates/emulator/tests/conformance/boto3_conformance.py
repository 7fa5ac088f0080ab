#!/usr/bin/env python3
"""Check mpgate-emulator against botocore's own model of AWS Marketplace Metering.

Usage:
  boto3_conformance.py --region R --product-code P --key-version V \
      --case EXPECT=URL [--case EXPECT=URL ...]

EXPECT is `success` (a normal emulator: RegisterUsage must parse, Signature present, and
bad shapes and an unknown product code must be rejected) or the name of a modelled error
(e.g. `CustomerNotEntitledException`) that an emulator started with the matching --fault
must raise as `client.exceptions.<Name>`.

Prints one line per check; exits 0 when all pass, 1 when one fails, 3 when boto3 is missing.
"""

import argparse
import sys

try:
    import boto3
    import botocore
    from botocore.config import Config
    from botocore.exceptions import ClientError
except ImportError as e:  # pragma: no cover - depends on the machine
    print(f"boto3 is not importable ({e}); install it with: pip install boto3", file=sys.stderr)
    sys.exit(3)

MODELLED = {
    "CustomerNotEntitledException": 400,
    "PlatformNotSupportedException": 400,
    "InvalidProductCodeException": 400,
    "InvalidRegionException": 400,
    "InvalidPublicKeyVersionException": 400,
    "DisabledApiException": 400,
    "ThrottlingException": 400,
    "InternalServiceErrorException": 500,
}

failures = []


def check(name, ok, detail=""):
    print(f"{'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}")
    if not ok:
        failures.append(name)


def client(url, region, validate=True):
    return boto3.client(
        "meteringmarketplace",
        endpoint_url=url,
        region_name=region,
        aws_access_key_id="AKIAEMULATOREXAMPLE",
        aws_secret_access_key="emulator-dummy-secret",
        # total_max_attempts=1: exactly one call, no retries (max_attempts counts retries
        # in botocore's legacy mode).
        config=Config(
            retries={"total_max_attempts": 1, "mode": "standard"},
            parameter_validation=validate,
            connect_timeout=5,
            read_timeout=10,
        ),
    )


def expect_error(name, fn, error_code, status=None, exc_class=None):
    try:
        fn()
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code")
        got_status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        ok = code == error_code and (status is None or got_status == status)
        if exc_class is not None:
            ok = ok and isinstance(e, exc_class)
        check(name, ok, f"code={code} status={got_status} class={type(e).__name__}")
        return
    except Exception as e:  # noqa: BLE001 - report anything else as a failure
        check(name, False, f"unexpected {type(e).__name__}: {e}")
        return
    check(name, False, "no error raised")


def success_case(url, args):
    c = client(url, args.region)
    try:
        r = c.register_usage(
            ProductCode=args.product_code, PublicKeyVersion=args.key_version, Nonce="conformance-nonce"
        )
    except Exception as e:  # noqa: BLE001
        check("success parses", False, f"{type(e).__name__}: {e}")
        return
    sig = r.get("Signature")
    check("success parses", isinstance(sig, str) and sig.count(".") == 2, repr(sig)[:60])
    ts = r.get("PublicKeyRotationTimestamp")
    if args.rotation_timestamp is not None:
        ok = ts is not None and int(ts.timestamp()) == args.rotation_timestamp
        check("PublicKeyRotationTimestamp parses as a timestamp", ok, repr(ts))
    check(
        "answer has a request id",
        bool(r.get("ResponseMetadata", {}).get("RequestId")),
        repr(r.get("ResponseMetadata", {}).get("RequestId")),
    )

    expect_error(
        "unknown product code -> InvalidProductCodeException",
        lambda: c.register_usage(ProductCode="prod-not-ours", PublicKeyVersion=args.key_version),
        "InvalidProductCodeException",
        400,
        c.exceptions.InvalidProductCodeException,
    )
    expect_error(
        "unknown key version -> InvalidPublicKeyVersionException",
        lambda: c.register_usage(ProductCode=args.product_code, PublicKeyVersion=args.key_version + 100),
        "InvalidPublicKeyVersionException",
        400,
        c.exceptions.InvalidPublicKeyVersionException,
    )
    # Bad shapes must be rejected by the server (client-side validation off).
    raw = client(url, args.region, validate=False)
    expect_error(
        "PublicKeyVersion 0 -> ValidationException",
        lambda: raw.register_usage(ProductCode=args.product_code, PublicKeyVersion=0),
        "ValidationException",
        400,
    )
    expect_error(
        "missing ProductCode -> ValidationException",
        lambda: raw.register_usage(PublicKeyVersion=args.key_version),
        "ValidationException",
        400,
    )
    expect_error(
        "Nonce of 256 chars -> ValidationException",
        lambda: raw.register_usage(ProductCode=args.product_code, PublicKeyVersion=1, Nonce="n" * 256),
        "ValidationException",
        400,
    )
    # The client in another region signs for that region: the emulator must refuse it.
    other = "eu-west-1" if args.region != "eu-west-1" else "us-west-2"
    expect_error(
        "wrong signing region -> InvalidSignatureException",
        lambda: client(url, other).register_usage(ProductCode=args.product_code, PublicKeyVersion=1),
        "InvalidSignatureException",
        403,
    )


def error_case(url, name, args):
    c = client(url, args.region)
    exc_class = getattr(c.exceptions, name, None)
    check(f"{name} is in botocore's model", exc_class is not None)
    if exc_class is None:
        return
    expect_error(
        f"fault -> client.exceptions.{name}",
        lambda: c.register_usage(ProductCode=args.product_code, PublicKeyVersion=args.key_version),
        name,
        MODELLED.get(name),
        exc_class,
    )


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--region", required=True)
    p.add_argument("--product-code", required=True)
    p.add_argument("--key-version", type=int, required=True)
    p.add_argument("--rotation-timestamp", type=int)
    p.add_argument("--case", action="append", default=[], metavar="EXPECT=URL")
    args = p.parse_args()
    print(f"boto3 {boto3.__version__}, botocore {botocore.__version__}")
    if not args.case:
        check("at least one --case", False)
    for case in args.case:
        expect, _, url = case.partition("=")
        if expect == "success":
            success_case(url, args)
        else:
            error_case(url, expect, args)
    if failures:
        print(f"{len(failures)} check(s) failed: {', '.join(failures)}")
        sys.exit(1)
    print("all checks passed")


if __name__ == "__main__":
    main()
