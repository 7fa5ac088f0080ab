#!/usr/bin/env python3
"""What sellers write today: boto3 RegisterUsage + PyJWT verification, then exec.

Usage: boto3_gate.py [-- COMMAND [ARG...]]   (no COMMAND: exit 0 when entitled, like mpgate)
Environment: MPGATE_PRODUCT_CODE, MPGATE_PUBLIC_KEY_FILE, MPGATE_PUBLIC_KEY_VERSION (default 1),
AWS_REGION, the AWS credential variables, AWS_ENDPOINT_URL_MARKETPLACE_METERING,
AWS_CA_BUNDLE for a private CA. Exit codes: 10 not entitled / refused, 12 bad token.
"""
import os
import secrets
import sys

import boto3
import jwt


def main() -> int:
    argv = sys.argv[1:]
    if argv and argv[0] == "--":
        argv = argv[1:]
    product_code = os.environ["MPGATE_PRODUCT_CODE"]
    key_version = int(os.environ.get("MPGATE_PUBLIC_KEY_VERSION", "1"))
    with open(os.environ["MPGATE_PUBLIC_KEY_FILE"], "rb") as f:
        pem = f.read()

    nonce = secrets.token_hex(32)
    client = boto3.client("meteringmarketplace")
    try:
        resp = client.register_usage(
            ProductCode=product_code, PublicKeyVersion=key_version, Nonce=nonce
        )
    except Exception as e:  # noqa: BLE001 - a gate refuses on any failure
        print(f"boto3_gate: RegisterUsage failed: {e}", file=sys.stderr)
        return 10
    sig = resp.get("Signature")
    if not sig:
        print("boto3_gate: no Signature in the answer", file=sys.stderr)
        return 12
    try:
        claims = jwt.decode(sig, pem, algorithms=["PS256"], options={"require": []})
    except jwt.PyJWTError as e:
        print(f"boto3_gate: bad token: {e}", file=sys.stderr)
        return 12
    if (
        claims.get("productCode") != product_code
        or claims.get("publicKeyVersion") != key_version
        or claims.get("nonce") != nonce
    ):
        print("boto3_gate: token claims do not match the request", file=sys.stderr)
        return 12
    if not argv:
        return 0
    os.execvp(argv[0], argv)
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main())
