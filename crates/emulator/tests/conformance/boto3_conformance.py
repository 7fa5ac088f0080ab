#!/usr/bin/env python3
"""Check mpgate-emulator against botocore's own model of AWS Marketplace Metering.

Usage:
  boto3_conformance.py --region R --product-code P --key-version V --public-key-file PEM \
      --credentials ID:SECRET:TOKEN --faults FILE \
      --case EXPECT=URL [--case EXPECT=URL ...]

The errors RegisterUsage can raise, and their HTTP statuses, come from botocore's model
(botocore/data/meteringmarketplace/2016-01-14/service-2.json, shipped with boto3), never from a
copied table. FILE is `mpgate-emulator --list-faults`: every modelled error must be one of the
emulator's service-error faults, with the model's status, else the check fails.

EXPECT is one of:
  success          a normal emulator that knows --credentials (temporary): RegisterUsage signed
                   by boto3 (botocore's signer) and by the AWS CLI must succeed, the token must
                   verify with PyJWT (PS256, the emulator's public key), bad shapes and signatures
                   must be refused
  <ErrorName>      an emulator started with the service-error fault the emulator lists for that
                   error type: boto3 must raise it (client.exceptions.<ErrorName> when modelled)
  long-term=ID:SECRET  an emulator that knows that long-term pair: PlatformNotSupportedException
  task-region      an emulator whose caller's task is in another region: InvalidRegionException
  expired=ID:SECRET:TOKEN  an emulator that knows that pair as expired: ExpiredTokenException
  bad-token        an emulator that signs with an unrelated key: PyJWT must refuse the token

--model-only stops after comparing the fault list with the model (no --case needed).

Prints one line per check; exits 0 when all pass, 1 when one fails, 3 when boto3 or PyJWT is
missing.
"""

import argparse
import json
import os
import subprocess
import sys

from conformance_common import boto3, botocore, check, expect_error, finish, jwt, load_pem_public_key
from conformance_common import client as service_client


def model_errors():
    """RegisterUsage's errors and their HTTP statuses, from botocore's model: an explicit
    `error.httpStatusCode`, else 500 for a `fault` (server error), else 400 (client error)."""
    model = botocore.loaders.Loader().load_service_model("meteringmarketplace", "service-2")
    errors = {}
    for ref in model["operations"]["RegisterUsage"]["errors"]:
        shape = model["shapes"][ref["shape"]]
        status = shape.get("error", {}).get("httpStatusCode") or (500 if shape.get("fault") else 400)
        errors[ref["shape"]] = status
    return model, errors


def client(url, region, creds, validate=True):
    return service_client("meteringmarketplace", url, region, creds, validate)


def verify_with_pyjwt(token, pem, args, nonce):
    """The positive control: an independent verifier (PyJWT, `cryptography`) accepts the token."""
    key = load_pem_public_key(pem)
    claims = jwt.decode(token, key, algorithms=["PS256"], options={"require": ["iat"]})
    header = jwt.get_unverified_header(token)
    return header, claims, (
        claims.get("productCode") == args.product_code
        and claims.get("publicKeyVersion") == args.key_version
        and claims.get("nonce") == nonce
    )


def aws_cli(url, args, creds):
    """RegisterUsage through the AWS CLI (v1: botocore's signer, as boto3's) with the
    credentials in the environment, as a task role's reach the CLI."""
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
    cmd = [sys.executable, "-m", "awscli", "meteringmarketplace", "register-usage",
           "--region", args.region, "--endpoint-url", url, "--output", "json",
           "--product-code", args.product_code, "--public-key-version", str(args.key_version),
           "--nonce", "conformance-cli-nonce"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)


def success_case(url, args, creds, pem):
    c = client(url, args.region, creds)
    try:
        r = c.register_usage(
            ProductCode=args.product_code, PublicKeyVersion=args.key_version, Nonce="conformance-nonce"
        )
    except Exception as e:  # noqa: BLE001
        check("boto3's signature (temporary credentials) is accepted", False, f"{type(e).__name__}: {e}")
        return
    check("boto3's signature (temporary credentials) is accepted", True)
    sig = r.get("Signature")
    check("success parses", isinstance(sig, str) and sig.count(".") == 2, repr(sig)[:60])
    try:
        header, claims, matches = verify_with_pyjwt(sig, pem, args, "conformance-nonce")
        check("PyJWT verifies the token (PS256, the emulator's public key)", header == {"alg": "PS256", "typ": "JWT"}, repr(header))
        check("the token's claims are the request's", matches, repr(claims))
    except Exception as e:  # noqa: BLE001
        check("PyJWT verifies the token (PS256, the emulator's public key)", False, f"{type(e).__name__}: {e}")
    ts = r.get("PublicKeyRotationTimestamp")
    if args.rotation_timestamp is not None:
        ok = ts is not None and int(ts.timestamp()) == args.rotation_timestamp
        check("PublicKeyRotationTimestamp parses as a timestamp", ok, repr(ts))
    check(
        "answer has a request id",
        bool(r.get("ResponseMetadata", {}).get("RequestId")),
        repr(r.get("ResponseMetadata", {}).get("RequestId")),
    )

    cli = aws_cli(url, args, creds)
    if cli.returncode == 0:
        answer = json.loads(cli.stdout)
        try:
            _, _, matches = verify_with_pyjwt(answer.get("Signature", ""), pem, args, "conformance-cli-nonce")
        except Exception as e:  # noqa: BLE001
            matches = False
            cli.stderr += f"{type(e).__name__}: {e}"
        check("the AWS CLI's signature is accepted and its token verifies", matches, cli.stderr.strip()[:200])
    elif "No module named awscli" in cli.stderr:
        check("the AWS CLI is installed (pip install awscli)", False, cli.stderr.strip()[:200])
    else:
        check("the AWS CLI's signature is accepted", False, f"exit {cli.returncode}: {cli.stderr.strip()[:300]}")

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
    raw = client(url, args.region, creds, validate=False)
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
        lambda: client(url, other, creds).register_usage(ProductCode=args.product_code, PublicKeyVersion=1),
        "InvalidSignatureException",
        403,
    )
    access_key, secret, token = creds
    expect_error(
        "wrong secret -> InvalidSignatureException",
        lambda: client(url, args.region, (access_key, secret + "x", token)).register_usage(
            ProductCode=args.product_code, PublicKeyVersion=1
        ),
        "InvalidSignatureException",
        403,
    )
    expect_error(
        "temporary key without its session token -> UnrecognizedClientException",
        lambda: client(url, args.region, (access_key, secret, None)).register_usage(
            ProductCode=args.product_code, PublicKeyVersion=1
        ),
        "UnrecognizedClientException",
        403,
    )


def error_case(url, name, args, creds, model, modelled, listed):
    c = client(url, args.region, creds)
    if name in modelled:
        exc_class = getattr(c.exceptions, name, None)
        check(f"{name} is in botocore's model", exc_class is not None)
        expect_error(
            f"fault -> client.exceptions.{name}",
            lambda: c.register_usage(ProductCode=args.product_code, PublicKeyVersion=args.key_version),
            name,
            modelled[name],
            exc_class,
        )
    else:
        # AWS's authentication and authorization errors: not in the service's model.
        expect_error(
            f"fault -> {name} (not modelled)",
            lambda: c.register_usage(ProductCode=args.product_code, PublicKeyVersion=args.key_version),
            name,
            listed[name],
        )


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--region", required=True)
    p.add_argument("--product-code", required=True)
    p.add_argument("--key-version", type=int, required=True)
    p.add_argument("--public-key-file", required=True)
    p.add_argument("--credentials", required=True, metavar="ID:SECRET:TOKEN")
    p.add_argument("--faults", required=True, metavar="FILE")
    p.add_argument("--rotation-timestamp", type=int)
    p.add_argument("--case", action="append", default=[], metavar="EXPECT=URL")
    p.add_argument("--model-only", action="store_true", help="check the fault list against the model, then stop")
    args = p.parse_args()
    print(f"boto3 {boto3.__version__}, botocore {botocore.__version__}, PyJWT {jwt.__version__}")
    creds = tuple(args.credentials.split(":", 2))
    with open(args.public_key_file, "rb") as f:
        pem = f.read()

    model, modelled = model_errors()
    print("botocore's model: RegisterUsage raises " + ", ".join(f"{k} ({v})" for k, v in sorted(modelled.items())))
    with open(args.faults) as f:
        faults = [json.loads(line) for line in f if line.strip()]
    listed = {f["errorType"]: f["status"] for f in faults if f.get("kind") == "service-error"}
    for name, status in sorted(modelled.items()):
        present = name in listed
        check(f"the emulator has a fault for {name}", present, "" if present else "missing from mpgate-emulator --list-faults")
        if present:
            same = listed[name] == status
            check(f"{name}: the emulator's status is the model's ({status})", same, "" if same else f"emulator {listed[name]}")
    if args.model_only:
        finish()
        return

    if not args.case:
        check("at least one --case", False)
    seen = set()
    for case in args.case:
        expect, _, url = case.rpartition("=")
        kind, _, detail = expect.partition("=")
        seen.add(kind)
        if kind == "success":
            success_case(url, args, creds, pem)
        elif kind == "long-term":
            pair = tuple(detail.split(":", 1)) + (None,)
            c = client(url, args.region, pair)
            expect_error(
                "long-term key (an IAM user outside ECS/EKS) -> PlatformNotSupportedException",
                lambda: c.register_usage(ProductCode=args.product_code, PublicKeyVersion=args.key_version),
                "PlatformNotSupportedException",
                modelled.get("PlatformNotSupportedException"),
                c.exceptions.PlatformNotSupportedException,
            )
        elif kind == "task-region":
            c = client(url, args.region, creds)
            expect_error(
                "a task in another region -> InvalidRegionException",
                lambda: c.register_usage(ProductCode=args.product_code, PublicKeyVersion=args.key_version),
                "InvalidRegionException",
                modelled.get("InvalidRegionException"),
                c.exceptions.InvalidRegionException,
            )
        elif kind == "expired":
            c = client(url, args.region, tuple(detail.split(":", 2)))
            expect_error(
                "expired session token -> ExpiredTokenException",
                lambda: c.register_usage(ProductCode=args.product_code, PublicKeyVersion=args.key_version),
                "ExpiredTokenException",
                403,
            )
        elif kind == "bad-token":
            # The negative control: PyJWT refuses a token signed with another key.
            r = client(url, args.region, creds).register_usage(
                ProductCode=args.product_code, PublicKeyVersion=args.key_version, Nonce="conformance-nonce"
            )
            try:
                verify_with_pyjwt(r["Signature"], pem, args, "conformance-nonce")
                check("PyJWT refuses a token signed with another key", False, "it verified")
            except jwt.InvalidSignatureError:
                check("PyJWT refuses a token signed with another key", True)
        else:
            error_case(url, expect, args, creds, model, modelled, listed)
    for name in sorted(modelled):
        check(f"{name} was raised by an emulator", name in seen, "" if name in seen else "no --case for it")
    finish()


if __name__ == "__main__":
    main()
