#!/usr/bin/env python3
"""Check mpgate-emulator's AWS License Manager side against botocore's own model.

Usage:
  boto3_license_conformance.py --region R --credentials ID:SECRET:TOKEN --faults FILE \
      --product-sku SKU --license-arn ARN --public-key-file PEM \
      --success URL [--fault NAME=URL ...] [--model-only]

The operations, their input and output shapes and the errors each may raise come from
botocore's model (botocore/data/license-manager/2018-08-01/service-2.json, shipped with boto3),
never from a copied table. FILE is `mpgate-emulator --list-faults`: its `kind: license` lines
must name, for each fault, an error the model lists for exactly the operations the line says.

--success URL   a normal emulator (default license: Basic, Seats=5): boto3's license-manager
                client checks out, extends, checks in and reads the usage, every answer parsed
                with the model (botocore validates the requests it sends); the SignedToken
                verifies with PyJWT (PS384, the emulator's key); refusals raise the modelled
                exception classes
--fault NAME=URL  an emulator started with `--license-fault OP=NAME` for every operation the
                listing names: each must raise client.exceptions.<errorType> with the listed
                HTTP status and a request id
--processed NAME=URL  an emulator started with `--license-fault OP=NAME*1` for every operation
                the listing names, NAME a fault that acts after the seat book: a bad extension
                answer (kind license-answer) must parse as the 200 it is, its oddity visible
                to the caller; a lost answer (kind license-lost-answer) must reach boto3 as the
                modelled exception or as the dropped or silent connection, while the seat book
                took, extended or returned the seats, and a retried ClientToken gets the
                processed checkout

Prints one line per check; exits 0 when all pass, 1 when one fails, 3 when boto3 or PyJWT is
missing.
"""

import argparse
import datetime
import json
import re

import botocore.exceptions
from conformance_common import Config, boto3, botocore, check, expect_error, finish, jwt, load_pem_public_key
from conformance_common import client as service_client

OPERATIONS = ["CheckoutLicense", "CheckInLicense", "ExtendLicenseConsumption", "GetLicenseUsage"]
FINGERPRINT = "aws:294406891311:AWS/Marketplace:issuer-fingerprint"
NO_ZONE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$")
RFC3339_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")


def load_model():
    model = botocore.loaders.Loader().load_service_model("license-manager", "service-2")
    errors = {op: [ref["shape"] for ref in model["operations"][op]["errors"]] for op in OPERATIONS}
    return model, errors


def client(url, region, creds, read_timeout=None):
    return service_client("license-manager", url, region, creds, read_timeout=read_timeout)


def checkout(c, sku, entitlements, token):
    return c.checkout_license(
        ProductSKU=sku,
        CheckoutType="PROVISIONAL",
        KeyFingerprint=FINGERPRINT,
        Entitlements=entitlements,
        ClientToken=token,
    )


def seats(n):
    return [{"Name": "Seats", "Value": str(n), "Unit": "Count"}]


def consumed(usage, name):
    for u in usage["LicenseUsage"]["EntitlementUsages"]:
        if u["Name"] == name:
            return u["ConsumedValue"]
    return None


def success_case(url, args, creds, pem):
    c = client(url, args.region, creds)
    try:
        r = checkout(c, args.product_sku, seats(2) + [{"Name": "Basic", "Unit": "None"}], "conformance-1")
    except Exception as e:  # noqa: BLE001
        check("CheckoutLicense signed by boto3 (license-manager) succeeds", False, f"{type(e).__name__}: {e}")
        return
    check("CheckoutLicense signed by boto3 (license-manager) succeeds", True)
    check("CheckoutLicense: IssuedAt is YYYY-MM-DDTHH:MM:SS without a zone", bool(NO_ZONE.match(r.get("IssuedAt", ""))), repr(r.get("IssuedAt")))
    check("CheckoutLicense: Expiration is YYYY-MM-DDTHH:MM:SS without a zone", bool(NO_ZONE.match(r.get("Expiration", ""))), repr(r.get("Expiration")))
    check("CheckoutLicense: LicenseArn is the ready line's", r.get("LicenseArn") == args.license_arn, repr(r.get("LicenseArn")))
    check("CheckoutLicense: CheckoutType PROVISIONAL", r.get("CheckoutType") == "PROVISIONAL")
    signed = r.get("SignedToken", "")
    check("CheckoutLicense: SignedToken meets the model's minimum length (4096)", len(signed) >= 4096, str(len(signed)))
    try:
        claims = jwt.decode(signed, load_pem_public_key(pem), algorithms=["PS384"], options={"verify_aud": False})
        check("PyJWT verifies the SignedToken (PS384, the emulator's key)", claims.get("licenseArn") == args.license_arn, repr(claims.get("licenseArn")))
    except Exception as e:  # noqa: BLE001
        check("PyJWT verifies the SignedToken (PS384, the emulator's key)", False, f"{type(e).__name__}: {e}")
    allowed = r.get("EntitlementsAllowed", [])
    check("CheckoutLicense: EntitlementsAllowed parses", [e["Name"] for e in allowed] == ["Seats", "Basic"], repr(allowed))
    token = r["LicenseConsumptionToken"]

    usage = c.get_license_usage(LicenseArn=args.license_arn)
    check("GetLicenseUsage parses and counts the seats held", consumed(usage, "Seats") == "2", repr(usage.get("LicenseUsage")))
    retry = checkout(c, args.product_sku, seats(2) + [{"Name": "Basic", "Unit": "None"}], "conformance-1")
    check("a repeated ClientToken gets the same token", retry["LicenseConsumptionToken"] == token)
    check("... and holds no more seats", consumed(c.get_license_usage(LicenseArn=args.license_arn), "Seats") == "2")

    x = c.extend_license_consumption(LicenseConsumptionToken=token)
    check("ExtendLicenseConsumption: a new token", x.get("LicenseConsumptionToken") not in (None, token))
    check("ExtendLicenseConsumption: Expiration is RFC 3339 with Z", bool(RFC3339_Z.match(x.get("Expiration", ""))), repr(x.get("Expiration")))
    dry = c.extend_license_consumption(LicenseConsumptionToken=token, DryRun=True)
    check("ExtendLicenseConsumption DryRun parses", dry.get("LicenseConsumptionToken") == token)

    expect_error(
        "too many seats -> client.exceptions.NoEntitlementsAllowedException",
        lambda: checkout(c, args.product_sku, seats(4), "conformance-2"),
        "NoEntitlementsAllowedException", 400, c.exceptions.NoEntitlementsAllowedException,
    )
    expect_error(
        "another ProductSKU -> client.exceptions.NoEntitlementsAllowedException",
        lambda: checkout(c, "prod-sku-not-ours", seats(1), "conformance-3"),
        "NoEntitlementsAllowedException", 400, c.exceptions.NoEntitlementsAllowedException,
    )
    expect_error(
        "another key fingerprint -> client.exceptions.ValidationException",
        lambda: c.checkout_license(
            ProductSKU=args.product_sku, CheckoutType="PROVISIONAL",
            KeyFingerprint="aws:123456789012:Other:fingerprint", Entitlements=seats(1),
            ClientToken="conformance-4",
        ),
        "ValidationException", 400, c.exceptions.ValidationException,
    )
    expect_error(
        "another license's ARN -> client.exceptions.InvalidParameterValueException",
        lambda: c.get_license_usage(LicenseArn="arn:aws:license-manager::294406891311:license:l-" + "0" * 32),
        "InvalidParameterValueException", 400, c.exceptions.InvalidParameterValueException,
    )
    r = c.check_in_license(LicenseConsumptionToken=x["LicenseConsumptionToken"])
    check("CheckInLicense parses (an empty answer)", {k: v for k, v in r.items() if k != "ResponseMetadata"} == {})
    check("CheckInLicense releases the seats", consumed(c.get_license_usage(LicenseArn=args.license_arn), "Seats") == "0")
    expect_error(
        "a checked-in token -> client.exceptions.ResourceNotFoundException",
        lambda: c.check_in_license(LicenseConsumptionToken=token),
        "ResourceNotFoundException", 400, c.exceptions.ResourceNotFoundException,
    )
    expect_error(
        "extending a checked-in token -> client.exceptions.ResourceNotFoundException",
        lambda: c.extend_license_consumption(LicenseConsumptionToken=token),
        "ResourceNotFoundException", 400, c.exceptions.ResourceNotFoundException,
    )
    # boto3 signs for license-manager; a Metering client's signature is for aws-marketplace.
    m = boto3.client(
        "meteringmarketplace", endpoint_url=url, region_name=args.region,
        aws_access_key_id=creds[0], aws_secret_access_key=creds[1], aws_session_token=creds[2],
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}),
    )
    check("boto3's Metering client still signs for aws-marketplace", m.meta.service_model.signing_name == "aws-marketplace")


def call(c, op, args):
    if op == "CheckoutLicense":
        return checkout(c, args.product_sku, [{"Name": "Basic", "Unit": "None"}], "conformance-fault")
    if op == "CheckInLicense":
        return c.check_in_license(LicenseConsumptionToken="conformance-unknown")
    if op == "ExtendLicenseConsumption":
        return c.extend_license_consumption(LicenseConsumptionToken="conformance-unknown")
    return c.get_license_usage(LicenseArn=args.license_arn)


def is_past(expiration):
    try:
        t = datetime.datetime.fromisoformat(expiration.replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        return False
    return t < datetime.datetime.now(datetime.timezone.utc)


# What a caller sees of each bad extension answer, as botocore parses it (the model's
# ISO8601DateTime is a string shape: botocore checks no pattern, and passes a JSON number on).
BAD_ANSWERS = {
    "answer-past-expiration": ("an Expiration in the past",
                               lambda x: is_past(x.get("Expiration")) and isinstance(x.get("LicenseConsumptionToken"), str)),
    "answer-missing-token": ("no LicenseConsumptionToken",
                             lambda x: "LicenseConsumptionToken" not in x and isinstance(x.get("Expiration"), str)),
    "answer-missing-expiration": ("no Expiration",
                                  lambda x: "Expiration" not in x and isinstance(x.get("LicenseConsumptionToken"), str)),
    "answer-bad-expiration": ("an Expiration that is no date",
                              lambda x: x.get("Expiration") == "never"),
    "answer-wrong-types": ("numbers where the model has strings",
                           lambda x: isinstance(x.get("LicenseConsumptionToken"), int) and isinstance(x.get("Expiration"), int)),
    "answer-garbage": ("no members (botocore reads a body that is not JSON as none)",
                       lambda x: "LicenseConsumptionToken" not in x and "Expiration" not in x),
}

# How a lost answer without an error reaches boto3.
LOST = {
    "processed-then-drop": botocore.exceptions.ConnectionClosedError,
    "processed-then-hang": botocore.exceptions.ReadTimeoutError,
}


def members(r):
    return {k: v for k, v in r.items() if k != "ResponseMetadata"}


def bad_answer_case(name, url, args, creds):
    c = client(url, args.region, creds)
    token = checkout(c, args.product_sku, seats(1), f"conformance-{name}")["LicenseConsumptionToken"]
    what, ok = BAD_ANSWERS.get(name, (None, None))
    label = f"ExtendLicenseConsumption {name} -> a 200 boto3 parses, with {what}"
    if ok is None:
        check(f"{name}: the conformance script knows what it should look like", False)
        return
    try:
        x = members(c.extend_license_consumption(LicenseConsumptionToken=token))
    except Exception as e:  # noqa: BLE001
        check(label, False, f"{type(e).__name__}: {e}")
        return
    check(label, ok(x), repr(x))
    check(f"{name}: the extension was processed (the seat still held)",
          consumed(c.get_license_usage(LicenseArn=args.license_arn), "Seats") == "1")


def lost_case(name, x, url, args, creds):
    # A short read timeout: a hung call must end the check, not the run.
    c = client(url, args.region, creds, read_timeout=2)
    etype = x.get("errorType")

    def lost(op, fn):
        if etype:
            return expect_error(
                f"{op} {name} -> client.exceptions.{etype} ({x['status']})",
                fn, etype, x["status"], getattr(c.exceptions, etype, None), need_class=True,
            )
        want = LOST.get(name)
        label = f"{op} {name} -> {want.__name__ if want else '?'} (no answer)"
        try:
            fn()
        except Exception as e:  # noqa: BLE001
            check(label, want is not None and isinstance(e, want), f"{type(e).__name__}: {e}")
            return
        check(label, False, "an answer arrived")

    def usage():
        return consumed(c.get_license_usage(LicenseArn=args.license_arn), "Seats")

    def take():
        return checkout(c, args.product_sku, seats(2), f"conformance-{name}")

    lost("CheckoutLicense", take)
    check(f"{name}: the lost checkout took its seats", usage() == "2")
    r = take()
    check(f"{name}: a retry with the same ClientToken gets the processed checkout", usage() == "2")
    token = r["LicenseConsumptionToken"]
    lost("ExtendLicenseConsumption", lambda: c.extend_license_consumption(LicenseConsumptionToken=token))
    token = c.extend_license_consumption(LicenseConsumptionToken=token)["LicenseConsumptionToken"]
    lost("CheckInLicense", lambda: c.check_in_license(LicenseConsumptionToken=token))
    check(f"{name}: the lost check-in returned the seats", usage() == "0")
    expect_error(
        f"{name}: checking in again -> client.exceptions.ResourceNotFoundException",
        lambda: c.check_in_license(LicenseConsumptionToken=token),
        "ResourceNotFoundException", 400, c.exceptions.ResourceNotFoundException,
    )


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--region", required=True)
    p.add_argument("--credentials", required=True, metavar="ID:SECRET:TOKEN")
    p.add_argument("--faults", required=True, metavar="FILE")
    p.add_argument("--product-sku", required=True)
    p.add_argument("--license-arn", required=True)
    p.add_argument("--public-key-file", required=True)
    p.add_argument("--success", metavar="URL")
    p.add_argument("--fault", action="append", default=[], metavar="NAME=URL")
    p.add_argument("--processed", action="append", default=[], metavar="NAME=URL")
    p.add_argument("--model-only", action="store_true")
    args = p.parse_args()
    print(f"boto3 {boto3.__version__}, botocore {botocore.__version__}, PyJWT {jwt.__version__}")
    creds = tuple(args.credentials.split(":", 2))
    with open(args.public_key_file, "rb") as f:
        pem = f.read()

    model, errors = load_model()
    check("botocore's license-manager model signs as license-manager", model["metadata"].get("signingName", model["metadata"]["endpointPrefix"]) == "license-manager")
    check("botocore's license-manager model is awsJson1.1 with target prefix AWSLicenseManager",
          (model["metadata"]["protocol"], model["metadata"]["jsonVersion"], model["metadata"]["targetPrefix"]) == ("json", "1.1", "AWSLicenseManager"))
    for op in OPERATIONS:
        print(f"botocore's model: {op} raises " + ", ".join(errors[op]))
    with open(args.faults) as f:
        listed = [json.loads(line) for line in f if line.strip()]
    listed = [x for x in listed if x.get("kind") == "license"]
    by_type = {x["errorType"]: x for x in listed}
    for x in listed:
        name, etype, ops = x["name"], x["errorType"], x["operations"]
        model_ops = [op for op in OPERATIONS if etype in errors[op]]
        check(f"{name}: {etype} is what the model lists for {', '.join(ops)}", ops == model_ops, f"model: {model_ops}")
        shape = model["shapes"].get(etype, {})
        check(f"{name}: {etype} is an error shape with a Message member", shape.get("exception") is True and "Message" in shape.get("members", {}))
        explicit = shape.get("error", {}).get("httpStatusCode")
        if explicit is not None:
            check(f"{name}: the status is the model's ({explicit})", x["status"] == explicit, str(x["status"]))
        is_fault = bool(shape.get("fault"))
        check(f"{name}: a server fault in the model iff its status is 5xx", is_fault == (x["status"] >= 500), f"status {x['status']}, fault {is_fault}")
    for op in OPERATIONS:
        for etype in errors[op]:
            check(f"the emulator has a fault for {op}'s {etype}", etype in by_type and op in by_type[etype]["operations"])
    with open(args.faults) as f:
        processed = [json.loads(line) for line in f if line.strip()]
    processed = [x for x in processed if x.get("kind") in ("license-answer", "license-lost-answer")]
    for x in processed:
        name, ops = x["name"], x["operations"]
        check(f"{name}: operations the model has", bool(ops) and all(op in OPERATIONS for op in ops), repr(ops))
        if x["kind"] == "license-answer":
            check(f"{name}: a 200 answer with the output's members", x.get("status") == 200 and all(
                {"LicenseConsumptionToken", "Expiration"} <= set(model["shapes"][model["operations"][op]["output"]["shape"]]["members"])
                for op in ops))
        elif x.get("errorType"):
            check(f"{name}: {x['errorType']} is an error the model lists for {', '.join(ops)}",
                  all(x["errorType"] in errors[op] for op in ops))
    if args.model_only:
        finish()
        return

    if args.success:
        success_case(args.success, args, creds, pem)
    else:
        check("a --success case", False)
    seen = set()
    for case in args.fault:
        name, _, url = case.partition("=")
        x = next((x for x in listed if x["name"] == name), None)
        if x is None:
            check(f"{name} is a listed license fault", False)
            continue
        c = client(url, args.region, creds)
        exc_class = getattr(c.exceptions, x["errorType"], None)
        for op in x["operations"]:
            e = expect_error(
                f"{op} {name} -> client.exceptions.{x['errorType']} ({x['status']})",
                lambda: call(c, op, args),
                x["errorType"], x["status"], exc_class, need_class=True,
            )
            if name == "redirect" and e is not None:
                body = e.response.get("Error", {})
                location = e.response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("location")
                check("RedirectException carries a Location", bool(location), repr((location, body)))
        seen.add(name)
    for x in listed:
        check(f"{x['name']} was raised through boto3", x["name"] in seen)
    for case in args.processed:
        name, _, url = case.partition("=")
        x = next((x for x in processed if x["name"] == name), None)
        if x is None:
            check(f"{name} is a listed license fault that acts after the seat book", False)
            continue
        if x["kind"] == "license-answer":
            bad_answer_case(name, url, args, creds)
        else:
            lost_case(name, x, url, args, creds)
        seen.add(name)
    for x in processed:
        check(f"{x['name']} was seen through boto3", x["name"] in seen)
    finish()


if __name__ == "__main__":
    main()
