#!/usr/bin/env python3
"""Check mpgate-emulator's MeterUsage against botocore's own model of AWS Marketplace Metering.

Usage:
  boto3_meter_usage_conformance.py --region R --product-code P --dimension D \
      --credentials ID:SECRET:TOKEN --faults FILE [--model-only] \
      [--success URL] [--long-term ID:SECRET=URL] [--task-region URL] \
      [--fault NAME=URL ...] [--lost NAME=URL ...] [--network NAME=URL ...]

The errors MeterUsage can raise, and their HTTP statuses, come from botocore's model
(meteringmarketplace/2016-01-14/service-2.json), never from a copied table; where botocore's
model states no status and the newest Smithy model (aws-sdk-go-v2's marketplace-metering.json)
does, that status (NEWER_STATUS below). FILE is `mpgate-emulator --list-faults`: every modelled
error must be one of the emulator's `meter` faults with that status.

  --success URL       an emulator selling D: boto3 (and the AWS CLI) meter usage; one record per
                      dimension and hour (an identical repeat, with botocore's own fresh
                      ClientToken, gets the same MeteringRecordId), DuplicateRequest, DryRun,
                      allocations and every rule the emulator checks itself
  --long-term ID:SECRET=URL  an emulator knowing that long-term pair: PlatformNotSupportedException
  --task-region URL   an emulator whose caller's task is in another region:
                      InvalidEndpointRegionException
  --fault NAME=URL    an emulator with `--meter-fault NAME`: boto3 raises its error
  --lost NAME=URL     an emulator with `--meter-fault NAME*1` (processed-then-*): the call is
                      recorded and its answer lost as botocore sees it; the retry gets a record ID
  --network NAME=URL  an emulator with `--meter-fault NAME` (http-503-html, hang, drop)

Prints one line per check; exits 0 when all pass, 1 when one fails, 3 when boto3 is missing.
"""

import argparse
import datetime
import json
import os
import subprocess
import sys

from conformance_common import boto3, botocore, check, expect_error, finish
from conformance_common import client as service_client

# Statuses the newest Smithy model states where botocore's model (so far) states none.
NEWER_STATUS = {"IdempotencyConflictException": 409}


def model_errors():
    """MeterUsage's errors and their HTTP statuses, from botocore's model (an explicit
    `error.httpStatusCode`, else 500 for a `fault`, else NEWER_STATUS, else 400)."""
    model = botocore.loaders.Loader().load_service_model("meteringmarketplace", "service-2")
    errors = {}
    for ref in model["operations"]["MeterUsage"]["errors"]:
        shape = model["shapes"][ref["shape"]]
        status = shape.get("error", {}).get("httpStatusCode")
        if status is None:
            status = 500 if shape.get("fault") else NEWER_STATUS.get(ref["shape"], 400)
        errors[ref["shape"]] = status
    return model, errors


def client(url, args, creds, validate=True, read_timeout=None):
    return service_client("meteringmarketplace", url, args.region, creds, validate, read_timeout)


def now():
    return datetime.datetime.now(datetime.timezone.utc)


def hours_ago(n):
    return now() - datetime.timedelta(hours=n)


def aws_cli(url, args, creds, timestamp):
    """MeterUsage through the AWS CLI (botocore's signer and serializer, as boto3's) with the
    credentials in the environment."""
    access_key, secret, token = creds
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID=access_key,
        AWS_SECRET_ACCESS_KEY=secret,
        AWS_SESSION_TOKEN=token,
        AWS_CONFIG_FILE="/dev/null",
        AWS_SHARED_CREDENTIALS_FILE="/dev/null",
        AWS_MAX_ATTEMPTS="1",
    )
    cmd = [sys.executable, "-m", "awscli", "meteringmarketplace", "meter-usage",
           "--region", args.region, "--endpoint-url", url, "--output", "json",
           "--product-code", args.product_code, "--usage-dimension", args.dimension,
           "--usage-quantity", "9", "--timestamp", timestamp.strftime("%Y-%m-%dT%H:%M:%SZ")]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)


def success_case(url, args, creds):
    c = client(url, args, creds)
    meter = lambda **kw: c.meter_usage(ProductCode=args.product_code, UsageDimension=args.dimension, **kw)  # noqa: E731
    t = hours_ago(1)
    try:
        first = meter(Timestamp=t, UsageQuantity=3)["MeteringRecordId"]
        check("MeterUsage signed by boto3 succeeds", isinstance(first, str) and len(first) > 0, repr(first))
    except Exception as e:  # noqa: BLE001
        check("MeterUsage signed by boto3 succeeds", False, f"{type(e).__name__}: {e}")
        return
    again = meter(Timestamp=t, UsageQuantity=3)["MeteringRecordId"]
    check("an identical repeat (another ClientToken from botocore) gets the same MeteringRecordId", again == first, f"{first} {again}")
    expect_error(
        "another quantity in that hour -> client.exceptions.DuplicateRequestException",
        lambda: meter(Timestamp=t, UsageQuantity=4),
        "DuplicateRequestException", 400, c.exceptions.DuplicateRequestException,
    )
    dry = meter(Timestamp=hours_ago(2), UsageQuantity=1, DryRun=True)["MeteringRecordId"]
    check("DryRun answers MeteringRecordId DryRunOperation", dry == "DryRunOperation", repr(dry))
    tagged = meter(
        Timestamp=hours_ago(2), UsageQuantity=5,
        UsageAllocations=[
            {"AllocatedUsageQuantity": 2},
            {"AllocatedUsageQuantity": 3, "Tags": [{"Key": "team", "Value": "blue"}]},
        ],
    )["MeteringRecordId"]
    check("UsageAllocations with tags are accepted (after a DryRun of that hour)", tagged not in ("", "DryRunOperation"), repr(tagged))
    token = "conformance-token-1"
    meter(Timestamp=hours_ago(3), UsageQuantity=1, ClientToken=token)
    expect_error(
        "a ClientToken again with other members -> client.exceptions.IdempotencyConflictException",
        lambda: meter(Timestamp=hours_ago(4), UsageQuantity=1, ClientToken=token),
        "IdempotencyConflictException", 409, c.exceptions.IdempotencyConflictException,
    )
    expect_error(
        "a dimension not sold -> client.exceptions.InvalidUsageDimensionException",
        lambda: c.meter_usage(ProductCode=args.product_code, UsageDimension="not-sold", Timestamp=now()),
        "InvalidUsageDimensionException", 400, c.exceptions.InvalidUsageDimensionException,
    )
    expect_error(
        "another product -> client.exceptions.InvalidProductCodeException",
        lambda: c.meter_usage(ProductCode="prod-not-ours", UsageDimension=args.dimension, Timestamp=now()),
        "InvalidProductCodeException", 400, c.exceptions.InvalidProductCodeException,
    )
    expect_error(
        "seven hours back -> client.exceptions.TimestampOutOfBoundsException",
        lambda: meter(Timestamp=hours_ago(7), UsageQuantity=1),
        "TimestampOutOfBoundsException", 400, c.exceptions.TimestampOutOfBoundsException,
    )
    expect_error(
        "allocations summing to another quantity -> client.exceptions.InvalidUsageAllocationsException",
        lambda: meter(Timestamp=hours_ago(5), UsageQuantity=3, UsageAllocations=[{"AllocatedUsageQuantity": 2}]),
        "InvalidUsageAllocationsException", 400, c.exceptions.InvalidUsageAllocationsException,
    )
    # Past botocore's own checks (max 5 tags, min quantity): the server must refuse them.
    raw = client(url, args, creds, validate=False)
    six = [{"Key": f"k{i}", "Value": "v"} for i in range(6)]
    expect_error(
        "six tags -> client.exceptions.InvalidTagException",
        lambda: raw.meter_usage(ProductCode=args.product_code, UsageDimension=args.dimension, Timestamp=hours_ago(5),
                                UsageQuantity=1, UsageAllocations=[{"AllocatedUsageQuantity": 1, "Tags": six}]),
        "InvalidTagException", 400, raw.exceptions.InvalidTagException,
    )
    expect_error(
        "UsageQuantity -1 -> ValidationException",
        lambda: raw.meter_usage(ProductCode=args.product_code, UsageDimension=args.dimension, Timestamp=now(), UsageQuantity=-1),
        "ValidationException", 400,
    )
    cli = aws_cli(url, args, creds, hours_ago(6) + datetime.timedelta(minutes=5))
    if cli.returncode == 0:
        rid = json.loads(cli.stdout).get("MeteringRecordId")
        check("the AWS CLI's meter-usage is accepted", bool(rid), cli.stdout.strip()[:200])
    else:
        check("the AWS CLI's meter-usage is accepted", False, f"exit {cli.returncode}: {cli.stderr.strip()[:300]}")


LOST = {
    "processed-then-drop": botocore.exceptions.ConnectionClosedError,
    "processed-then-hang": botocore.exceptions.ReadTimeoutError,
}


def lost_case(name, url, args, creds, modelled):
    c = client(url, args, creds, read_timeout=2)
    t = hours_ago(1)
    call = lambda: c.meter_usage(ProductCode=args.product_code, UsageDimension=args.dimension, Timestamp=t, UsageQuantity=7)  # noqa: E731
    if name in LOST:
        try:
            call()
            check(f"{name} -> {LOST[name].__name__}", False, "answered")
        except LOST[name]:
            check(f"{name} -> {LOST[name].__name__}", True)
        except Exception as e:  # noqa: BLE001
            check(f"{name} -> {LOST[name].__name__}", False, f"{type(e).__name__}: {e}")
    else:
        expect_error(
            f"{name} -> client.exceptions.InternalServiceErrorException",
            call, "InternalServiceErrorException", modelled["InternalServiceErrorException"],
            c.exceptions.InternalServiceErrorException,
        )
    try:
        rid = call()["MeteringRecordId"]
        check(f"{name}: the retry gets a MeteringRecordId", bool(rid), rid)
    except Exception as e:  # noqa: BLE001
        check(f"{name}: the retry gets a MeteringRecordId", False, f"{type(e).__name__}: {e}")


def network_case(name, url, args, creds):
    c = client(url, args, creds, read_timeout=2)
    call = lambda: c.meter_usage(ProductCode=args.product_code, UsageDimension=args.dimension, Timestamp=now())  # noqa: E731
    want = {
        "hang": botocore.exceptions.ReadTimeoutError,
        "drop": botocore.exceptions.ConnectionClosedError,
    }.get(name, botocore.exceptions.ClientError)
    try:
        call()
        check(f"{name} -> {want.__name__}", False, "answered")
    except want as e:
        response = e.response if isinstance(e, botocore.exceptions.ClientError) else {}
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        ok = want is not botocore.exceptions.ClientError or status == 503
        check(f"{name} -> {want.__name__}", ok, f"status={status}")
    except Exception as e:  # noqa: BLE001
        check(f"{name} -> {want.__name__}", False, f"{type(e).__name__}: {e}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--region", required=True)
    p.add_argument("--product-code", required=True)
    p.add_argument("--dimension", required=True)
    p.add_argument("--credentials", required=True, metavar="ID:SECRET:TOKEN")
    p.add_argument("--faults", required=True, metavar="FILE")
    p.add_argument("--model-only", action="store_true")
    p.add_argument("--success")
    p.add_argument("--long-term", metavar="ID:SECRET=URL")
    p.add_argument("--task-region", metavar="URL")
    for flag in ("--fault", "--lost", "--network"):
        p.add_argument(flag, action="append", default=[], metavar="NAME=URL")
    args = p.parse_args()
    print(f"boto3 {boto3.__version__}, botocore {botocore.__version__}")
    creds = tuple(args.credentials.split(":", 2))
    model, modelled = model_errors()
    print("botocore's model: MeterUsage raises " + ", ".join(f"{k} ({v})" for k, v in sorted(modelled.items())))
    check("botocore's model has MeterUsage's ClientToken", "ClientToken" in model["shapes"]["MeterUsageRequest"]["members"])
    with open(args.faults) as f:
        faults = [json.loads(line) for line in f if line.strip()]
    listed = {f["errorType"]: f for f in faults if f.get("kind") == "meter"}
    for name, status in sorted(modelled.items()):
        present = name in listed
        check(f"the emulator has a meter fault for {name}", present, "" if present else "missing from --list-faults")
        if present:
            same = listed[name]["status"] == status
            check(f"{name}: the emulator's status is the model's ({status})", same, "" if same else f"emulator {listed[name]['status']}")
            check(f"{name}: listed as modelled", listed[name].get("modelled") is True)
    for name, f in sorted(listed.items()):
        if name not in modelled:
            check(f"{name}: listed as not modelled for MeterUsage", f.get("modelled") is False)
    if args.model_only:
        finish()
        return

    raised = set()
    if args.success:
        success_case(args.success, args, creds)
        raised |= {"DuplicateRequestException", "IdempotencyConflictException", "InvalidUsageDimensionException",
                   "InvalidProductCodeException", "TimestampOutOfBoundsException",
                   "InvalidUsageAllocationsException", "InvalidTagException"}
    if args.long_term:
        pair, _, url = args.long_term.rpartition("=")
        c = client(url, args, tuple(pair.split(":", 1)) + (None,))
        expect_error(
            "long-term key (an IAM user outside ECS/EKS) -> client.exceptions.PlatformNotSupportedException",
            lambda: c.meter_usage(ProductCode=args.product_code, UsageDimension=args.dimension, Timestamp=now()),
            "PlatformNotSupportedException", 400, c.exceptions.PlatformNotSupportedException,
        )
    if args.task_region:
        c = client(args.task_region, args, creds)
        expect_error(
            "a task in another region -> client.exceptions.InvalidEndpointRegionException",
            lambda: c.meter_usage(ProductCode=args.product_code, UsageDimension=args.dimension, Timestamp=now()),
            "InvalidEndpointRegionException", modelled["InvalidEndpointRegionException"],
            c.exceptions.InvalidEndpointRegionException,
        )
        raised.add("InvalidEndpointRegionException")
    by_name = {f["name"]: f for f in faults if f.get("kind", "").startswith("meter")}
    for spec in args.fault:
        name, _, url = spec.partition("=")
        f = by_name[name]
        error_type = f["errorType"]
        c = client(url, args, creds)
        exc_class = getattr(c.exceptions, error_type, None)
        label = f"client.exceptions.{error_type}" if exc_class is not None else f"{error_type} (no class)"
        expect_error(
            f"meter fault {name} -> {label} ({f['status']})",
            lambda: c.meter_usage(ProductCode=args.product_code, UsageDimension=args.dimension, Timestamp=now()),
            error_type, f["status"], exc_class, need_class=f.get("modelled", False),
        )
        raised.add(error_type)
    for spec in args.lost:
        name, _, url = spec.partition("=")
        lost_case(name, url, args, creds, modelled)
    for spec in args.network:
        name, _, url = spec.partition("=")
        network_case(name, url, args, creds)
    for name in sorted(modelled):
        check(f"{name} was raised by an emulator", name in raised)
    finish()


if __name__ == "__main__":
    main()
