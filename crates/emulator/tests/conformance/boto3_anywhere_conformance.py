#!/usr/bin/env python3
"""Check mpgate-emulator's license token exchange against botocore's own models of License
Manager's GetAccessToken and STS's AssumeRoleWithWebIdentity.

Usage:
  boto3_anywhere_conformance.py --region R --credentials ID:SECRET:TOKEN --faults FILE \
      --token-file F --role-arn ARN --product-sku SKU --success URL --faulty URL

FILE is `mpgate-emulator --list-faults`: every error botocore's models list for the two
operations must be one of its faults (kind license-token or sts), with the model's status for
STS (awsQuery states them; License Manager's json model does not). --success is an emulator
that wrote its license token to F: boto3 exchanges it unsigned (botocore.UNSIGNED, as AWS's
reference code calls GetAccessToken) and signed, assumes ARN with STS (the operation is
unsigned in the model) and checks out SKU with the role's credentials. --faulty is an
emulator with its i-th listed fault of each operation scheduled at call i+1 (@i*1): boto3
raises each as its client.exceptions class (or the common error's code), then succeeds.

Prints one line per check; exits 0 when all pass, 1 when one fails, 3 when boto3 is missing.
"""

import argparse
import datetime
import json

from conformance_common import boto3, botocore, Config, ClientError, check, expect_error, finish
from conformance_common import client as service_client

from botocore import UNSIGNED


def model_errors(service, op):
    model = botocore.loaders.Loader().load_service_model(service, "service-2")
    errors = {}
    for ref in model["operations"][op]["errors"]:
        shape = model["shapes"][ref["shape"]]
        err = shape.get("error", {})
        errors[ref["shape"]] = (err.get("code", ref["shape"]), err.get("httpStatusCode"))
    return errors


def unsigned(service, url, region):
    return boto3.client(
        service,
        endpoint_url=url,
        region_name=region,
        config=Config(signature_version=UNSIGNED, retries={"total_max_attempts": 1, "mode": "standard"},
                      connect_timeout=5, read_timeout=10),
    )


def main():
    p = argparse.ArgumentParser()
    for a in ["--region", "--credentials", "--faults", "--token-file", "--role-arn", "--product-sku", "--success", "--faulty"]:
        p.add_argument(a, required=True)
    args = p.parse_args()
    creds = tuple(args.credentials.split(":", 2))
    listing = [json.loads(l) for l in open(args.faults) if l.strip()]
    lm_faults = [f for f in listing if f["kind"] == "license-token"]
    sts_faults = [f for f in listing if f["kind"] == "sts"]

    # The models' errors are the emulator's faults.
    lm_listed = {f["errorType"] for f in lm_faults}
    for shape in model_errors("license-manager", "GetAccessToken"):
        check(f"GetAccessToken's {shape} is a license-token fault", shape in lm_listed)
    sts_listed = {f["errorType"]: f["status"] for f in sts_faults}
    for shape, (code, status) in model_errors("sts", "AssumeRoleWithWebIdentity").items():
        check(f"AssumeRoleWithWebIdentity's {shape} is an sts fault ({code}, {status})",
              sts_listed.get(code) == status, f"listed {sts_listed.get(code)}")

    token = open(args.token_file).read()
    lm_unsigned = unsigned("license-manager", args.success, args.region)
    access = lm_unsigned.get_access_token(Token=token)["AccessToken"]
    check("unsigned GetAccessToken answers an access token", access.count(".") == 2)
    lm_signed = service_client("license-manager", args.success, args.region, creds)
    signed = lm_signed.get_access_token(Token=token)["AccessToken"]
    check("signed GetAccessToken answers an access token", signed.count(".") == 2)
    sts = unsigned("sts", args.success, args.region)
    out = sts.assume_role_with_web_identity(RoleArn=args.role_arn, RoleSessionName="mpgate-conformance",
                                            WebIdentityToken=access)
    c = out["Credentials"]
    exp = c["Expiration"]
    check("AssumeRoleWithWebIdentity's Expiration parses as a zoned datetime",
          isinstance(exp, datetime.datetime) and exp.tzinfo is not None
          and exp > datetime.datetime.now(datetime.timezone.utc), str(exp))
    check("AssumedRoleUser and the request id parse",
          out["AssumedRoleUser"]["Arn"].endswith("/mpgate-conformance")
          and bool(out["ResponseMetadata"]["RequestId"]), json.dumps(out["AssumedRoleUser"]))
    role = service_client("license-manager", args.success, args.region,
                          (c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"]))
    got = role.checkout_license(
        ProductSKU=args.product_sku, CheckoutType="PROVISIONAL",
        KeyFingerprint="aws:294406891311:AWS/Marketplace:issuer-fingerprint",
        Entitlements=[{"Name": "Seats", "Value": "1", "Unit": "Count"}], ClientToken="conformance-1")
    check("CheckoutLicense with the role's credentials", bool(got.get("LicenseConsumptionToken")))
    expect_error("the refresh token is no web identity token",
                 lambda: sts.assume_role_with_web_identity(RoleArn=args.role_arn, RoleSessionName="s1",
                                                           WebIdentityToken=token),
                 "InvalidIdentityToken", 400, sts.exceptions.InvalidIdentityTokenException, True)

    # Each fault once, in the listing's order, then a success.
    lm = unsigned("license-manager", args.faulty, args.region)
    for f in lm_faults:
        cls = getattr(lm.exceptions, f["errorType"], None)
        expect_error(f"GetAccessToken fault {f['name']} -> {f['errorType']}",
                     lambda: lm.get_access_token(Token=token), f["errorType"], f["status"], cls, True)
    access = lm.get_access_token(Token=token)["AccessToken"]
    sts = unsigned("sts", args.faulty, args.region)
    for f in sts_faults:
        # The modelled errors have classes named after their shapes; AccessDenied and
        # Throttling are STS's common errors, raised as ClientError with their code.
        cls = next((getattr(sts.exceptions, s) for s, (code, _) in
                    model_errors("sts", "AssumeRoleWithWebIdentity").items() if code == f["errorType"]), None)
        expect_error(f"AssumeRoleWithWebIdentity fault {f['name']} -> {f['errorType']}",
                     lambda: sts.assume_role_with_web_identity(RoleArn=args.role_arn, RoleSessionName="s1",
                                                               WebIdentityToken=access),
                     f["errorType"], f["status"], cls)
    out = sts.assume_role_with_web_identity(RoleArn=args.role_arn, RoleSessionName="s1", WebIdentityToken=access)
    check("after the faults, AssumeRoleWithWebIdentity succeeds", bool(out["Credentials"]["AccessKeyId"]))
    finish()


if __name__ == "__main__":
    main()
