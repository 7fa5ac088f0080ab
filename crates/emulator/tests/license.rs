//! Black-box tests of the emulator's AWS License Manager side (CheckoutLicense,
//! ExtendLicenseConsumption, CheckInLicense, GetLicenseUsage) over raw HTTP/1.1, every request
//! signed for real with SigV4 (signing name `license-manager`).

use mpgate_testkit::emulator::shared_key_dir;
use mpgate_testkit::faults::{license_fault_named, LICENSE_FAULTS, PROCESSED_FAULTS};
use mpgate_testkit::license::{
    call, checkout_body, consumed, request, send, Reply, ISSUER_FINGERPRINT,
};
use mpgate_testkit::sigv4::{register_request, signed_request, Signing};
use mpgate_testkit::{run_bounded, wait_until, Emulator};

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_smithy_types::date_time::{DateTime, Format};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_mpgate-emulator");
const LIMIT: Duration = Duration::from_secs(60);

fn seats(n: &str) -> Value {
    json!([{"Name": "Seats", "Value": n, "Unit": "Count"}])
}

fn checkout(emu: &Emulator, entitlements: Value, client_token: &str) -> Reply {
    call(
        &emu.addr,
        "CheckoutLicense",
        &checkout_body(&emu.product_sku, entitlements, client_token),
    )
}

fn usage(emu: &Emulator) -> Value {
    call(
        &emu.addr,
        "GetLicenseUsage",
        &json!({"LicenseArn": emu.license_arn}),
    )
    .ok("GetLicenseUsage")
}

fn seats_used(emu: &Emulator) -> String {
    consumed(&usage(emu), "Seats").expect("a Seats usage")
}

fn extend(emu: &Emulator, token: &str) -> Reply {
    call(
        &emu.addr,
        "ExtendLicenseConsumption",
        &json!({"LicenseConsumptionToken": token}),
    )
}

fn check_in(emu: &Emulator, token: &str) -> Reply {
    call(
        &emu.addr,
        "CheckInLicense",
        &json!({"LicenseConsumptionToken": token}),
    )
}

fn token_of(v: &Value) -> String {
    v["LicenseConsumptionToken"]
        .as_str()
        .unwrap_or_else(|| panic!("no LicenseConsumptionToken in {v}"))
        .to_string()
}

/// `secs` since the epoch as `YYYY-MM-DDTHH:MM:SS` (UTC), by the AWS SDK's own formatter.
fn utc(secs: i64) -> String {
    let rfc3339 = DateTime::from_secs(secs)
        .fmt(Format::DateTime)
        .expect("a date the SDK can write");
    rfc3339
        .strip_suffix('Z')
        .unwrap_or_else(|| panic!("{rfc3339} does not end in Z"))
        .to_string()
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Asserts `got` is `YYYY-MM-DDTHH:MM:SS` + `suffix` for a second within `[from, to]` + `ttl`.
fn assert_time(got: &str, suffix: &str, from: i64, to: i64, ttl: i64, what: &str) {
    let ok = (from..=to).any(|t| format!("{}{suffix}", utc(t + ttl)) == got);
    assert!(
        ok,
        "{what}: {got:?} is not {}{suffix} .. {}{suffix}",
        utc(from + ttl),
        utc(to + ttl)
    );
}

#[test]
fn checkout_answers_in_aws_s_formats_and_is_recorded() {
    let emu = Emulator::start_with_shared_keys(&[]);
    assert_eq!(emu.product_sku, "prod-sku-demo1234567890");
    let arn = &emu.license_arn;
    let hex = arn
        .strip_prefix("arn:aws:license-manager::294406891311:license:l-")
        .unwrap_or_else(|| panic!("{arn}"));
    assert!(
        hex.len() == 32
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{arn}"
    );
    assert_eq!(
        emu.ready["licenseEntitlements"],
        json!([{"name": "Basic", "unit": "None"}, {"name": "Seats", "unit": "Count", "maxCount": 5}])
    );
    let asked = json!([
        {"Name": "Seats", "Value": "2", "Unit": "Count"},
        {"Name": "Basic", "Unit": "None"},
    ]);
    let mut body = checkout_body(&emu.product_sku, asked.clone(), "token-1");
    body["NodeId"] = json!("node-7");
    body["SomethingNew"] = json!({"ignored": true});
    let from = now_secs();
    let r = call(&emu.addr, "CheckoutLicense", &body);
    let to = now_secs();
    let v = r.ok("checkout");
    assert_eq!(r.header("content-type"), Some("application/x-amz-json-1.1"));
    assert!(r.header("x-amzn-requestid").is_some());
    assert_eq!(v["CheckoutType"], "PROVISIONAL");
    assert_eq!(v["EntitlementsAllowed"], asked);
    assert_eq!(v["LicenseArn"], *arn);
    assert_eq!(v["NodeId"], "node-7");
    // IssuedAt and Expiration: YYYY-MM-DDTHH:MM:SS, no zone (UTC), as AWS writes them.
    assert_time(v["IssuedAt"].as_str().unwrap(), "", from, to, 0, "IssuedAt");
    assert_time(
        v["Expiration"].as_str().unwrap(),
        "",
        from,
        to,
        3600,
        "Expiration",
    );
    // SignedToken: a PS384 JWT of at least 4096 characters, by the emulator's key.
    let signed = v["SignedToken"].as_str().unwrap();
    assert!(
        signed.len() >= 4096 && signed.len() < 4400,
        "{}",
        signed.len()
    );
    let key = DecodingKey::from_rsa_pem(&emu.public_pem(1)).unwrap();
    let mut validation = Validation::new(Algorithm::PS384);
    validation.validate_aud = false;
    let claims = jsonwebtoken::decode::<Value>(signed, &key, &validation)
        .unwrap_or_else(|e| panic!("the SignedToken does not verify: {e}"))
        .claims;
    assert_eq!(claims["licenseArn"], *arn);
    assert_eq!(
        claims["licenseConsumptionToken"],
        v["LicenseConsumptionToken"]
    );
    assert_eq!(claims["productSKU"], emu.product_sku);
    assert!(!token_of(&v).is_empty());

    let calls = emu.wait_for_calls(1);
    let line = calls[0].as_object().unwrap();
    assert_eq!(line["target"], "AWSLicenseManager.CheckoutLicense");
    assert_eq!(line["productSku"], emu.product_sku);
    assert_eq!(line["clientToken"], "token-1");
    assert_eq!(line["entitlements"], asked);
    assert_eq!(line["checkoutType"], "PROVISIONAL");
    assert_eq!(line["keyFingerprint"], ISSUER_FINGERPRINT);
    assert_eq!(line["status"], 200);
    assert_eq!(line["fault"], "none");
    assert_eq!(line["requestId"], r.header("x-amzn-requestid").unwrap());
    assert!(line["credentialScope"]
        .as_str()
        .unwrap()
        .ends_with("/us-east-1/license-manager/aws4_request"));
    for absent in [
        "productCode",
        "publicKeyVersion",
        "nonce",
        "licenseArn",
        "licenseConsumptionToken",
    ] {
        assert!(!line.contains_key(absent), "{absent} in {line:?}");
    }
    let token = token_of(&v);
    extend(&emu, &token).ok("extend");
    usage(&emu);
    let calls = emu.wait_for_calls(3);
    assert_eq!(calls[1]["licenseConsumptionToken"], token.as_str());
    assert!(calls[1].get("productSku").is_none(), "{}", calls[1]);
    assert_eq!(calls[2]["licenseArn"], arn.as_str());
}

#[test]
fn seats_run_out_and_checkout_refuses_what_the_license_does_not_hold() {
    let emu = Emulator::start_with_shared_keys(&[]);
    checkout(&emu, seats("3"), "a").ok("3 seats");
    checkout(&emu, seats("3"), "b")
        .expect_error(400, "NoEntitlementsAllowedException", "3 more")
        .json()["Message"]
        .as_str()
        .filter(|m| m.contains("seats in use"))
        .expect("a message naming the seats in use");
    checkout(&emu, seats("2"), "c").ok("the last 2");
    assert_eq!(seats_used(&emu), "5");
    checkout(&emu, seats("1"), "d").expect_error(400, "NoEntitlementsAllowedException", "full");

    let refused = |entitlements: Value, status: u16, error_type: &str, what: &str| {
        checkout(&emu, entitlements, &format!("t-{}", what.replace(' ', "-")))
            .expect_error(status, error_type, what);
    };
    let nea = "NoEntitlementsAllowedException";
    refused(
        json!([{"Name": "Premium", "Unit": "None"}]),
        400,
        nea,
        "missing feature",
    );
    refused(
        json!([{"Name": "Seats", "Unit": "None"}]),
        400,
        nea,
        "Unit None on counted",
    );
    refused(
        json!([{"Name": "Seats", "Value": "1", "Unit": "Gigabytes"}]),
        400,
        nea,
        "unit mismatch",
    );
    refused(
        json!([{"Name": "Basic", "Unit": "Count", "Value": "1"}]),
        400,
        nea,
        "Count on a feature",
    );
    let val = "ValidationException";
    refused(
        json!([{"Name": "Seats", "Unit": "Count"}]),
        400,
        val,
        "Count without Value",
    );
    refused(
        json!([{"Name": "Seats", "Unit": "Count", "Value": "two"}]),
        400,
        val,
        "non-integer",
    );
    refused(
        json!([{"Name": "Seats", "Unit": "Count", "Value": "0"}]),
        400,
        val,
        "zero",
    );
    refused(
        json!([{"Name": "Seats", "Unit": "Parsecs", "Value": "1"}]),
        400,
        val,
        "bad unit",
    );
    refused(json!([]), 400, val, "no entitlements");
    refused(json!("Seats"), 400, val, "not a list");
    // Another SKU, another fingerprint, PERPETUAL, missing or mistyped members.
    let basic = json!([{"Name": "Basic", "Unit": "None"}]);
    let mut b = checkout_body("prod-sku-other", basic.clone(), "x1");
    let r = call(&emu.addr, "CheckoutLicense", &b);
    r.expect_error(400, nea, "wrong SKU");
    assert!(r.json()["Message"]
        .as_str()
        .unwrap()
        .contains("No entitlements found for ProductSKU prod-sku-other"));
    b = checkout_body(&emu.product_sku, basic.clone(), "x2");
    b["KeyFingerprint"] = json!("aws:123456789012:Someone:fingerprint");
    let r = call(&emu.addr, "CheckoutLicense", &b);
    r.expect_error(400, val, "wrong fingerprint");
    assert!(r.json()["Message"]
        .as_str()
        .unwrap()
        .contains("aws:123456789012:Someone:fingerprint"));
    b = checkout_body(&emu.product_sku, basic.clone(), "x3");
    b["CheckoutType"] = json!("PERPETUAL");
    call(&emu.addr, "CheckoutLicense", &b).expect_error(400, val, "PERPETUAL");
    b["CheckoutType"] = json!("FOREVER");
    call(&emu.addr, "CheckoutLicense", &b).expect_error(400, val, "bad CheckoutType");
    for member in [
        "ProductSKU",
        "CheckoutType",
        "KeyFingerprint",
        "Entitlements",
        "ClientToken",
    ] {
        let mut b = checkout_body(&emu.product_sku, basic.clone(), "x4");
        b.as_object_mut().unwrap().remove(member);
        let r = call(&emu.addr, "CheckoutLicense", &b);
        r.expect_error(400, val, member);
        assert!(r.json()["Message"]
            .as_str()
            .unwrap()
            .contains(&format!("'{member}'")));
        b[member] = json!(7);
        call(&emu.addr, "CheckoutLicense", &b).expect_error(400, val, member);
    }
    b = checkout_body(&emu.product_sku, basic, "has space");
    call(&emu.addr, "CheckoutLicense", &b).expect_error(400, val, "ClientToken with a space");
    // None of these took a seat; a feature alone takes none either.
    assert_eq!(seats_used(&emu), "5");
    checkout(&emu, json!([{"Name": "Basic", "Unit": "None"}]), "feature").ok("feature");
    assert_eq!(consumed(&usage(&emu), "Basic").as_deref(), Some("0"));
}

#[test]
fn a_repeated_client_token_gets_the_same_answer_and_no_extra_seat() {
    let emu = Emulator::start_with_shared_keys(&[]);
    let first = checkout(&emu, seats("2"), "retry-me").ok("first");
    let again = checkout(&emu, seats("2"), "retry-me").ok("retry");
    assert_eq!(first, again);
    assert_eq!(seats_used(&emu), "2");
    checkout(&emu, seats("3"), "retry-me").expect_error(
        400,
        "ValidationException",
        "other request",
    );
    assert_eq!(seats_used(&emu), "2");
    // Once checked in, the token is free for a new checkout.
    check_in(&emu, &token_of(&first)).ok("check in");
    let fresh = checkout(&emu, seats("3"), "retry-me").ok("after check-in");
    assert_ne!(token_of(&fresh), token_of(&first));
    assert_eq!(seats_used(&emu), "3");
}

#[test]
fn extend_gives_a_new_token_and_an_rfc3339_expiration() {
    let emu = Emulator::start_with_shared_keys(&["--consumption-ttl", "10m"]);
    let v = checkout(&emu, seats("1"), "e").ok("checkout");
    let old = token_of(&v);
    let from = now_secs();
    let x = extend(&emu, &old).ok("extend");
    let to = now_secs();
    let new = token_of(&x);
    assert_ne!(new, old);
    assert_time(
        x["Expiration"].as_str().unwrap(),
        "Z",
        from,
        to,
        600,
        "Expiration",
    );
    // DryRun checks only: the same token back, the expiry unchanged.
    let dry = call(
        &emu.addr,
        "ExtendLicenseConsumption",
        &json!({"LicenseConsumptionToken": new, "DryRun": true}),
    )
    .ok("dry run");
    assert_eq!(dry["LicenseConsumptionToken"], new.as_str());
    assert_eq!(dry["Expiration"], x["Expiration"]);
    call(
        &emu.addr,
        "ExtendLicenseConsumption",
        &json!({"LicenseConsumptionToken": new, "DryRun": "yes"}),
    )
    .expect_error(400, "ValidationException", "DryRun not a boolean");
    // The earlier token still names the consumption.
    extend(&emu, &old).ok("extend with the first token");
    assert_eq!(seats_used(&emu), "1");
    extend(&emu, "not-a-token").expect_error(400, "ResourceNotFoundException", "unknown");
    call(&emu.addr, "ExtendLicenseConsumption", &json!({})).expect_error(
        400,
        "ValidationException",
        "no token",
    );
    // Check-in releases the seat; the consumption's tokens are then unknown.
    check_in(&emu, &old).ok("check in with the first token");
    assert_eq!(seats_used(&emu), "0");
    check_in(&emu, &new).expect_error(400, "ResourceNotFoundException", "checked in twice");
    extend(&emu, &new).expect_error(400, "ResourceNotFoundException", "extend after check-in");
    check_in(&emu, "nope").expect_error(400, "ResourceNotFoundException", "unknown check-in");
}

#[test]
fn an_expired_consumption_releases_its_seats() {
    let emu = Emulator::start_with_shared_keys(&["--consumption-ttl", "1s"]);
    let v = checkout(&emu, seats("5"), "all").ok("all seats");
    assert_eq!(seats_used(&emu), "5");
    wait_until(
        Duration::from_secs(15),
        "release of the expired seats",
        || (seats_used(&emu) == "0").then_some(()),
    );
    extend(&emu, &token_of(&v)).expect_error(400, "ResourceNotFoundException", "expired");
    check_in(&emu, &token_of(&v)).expect_error(400, "ResourceNotFoundException", "expired");
    checkout(&emu, seats("5"), "again").ok("the seats are free again");
}

#[test]
fn get_license_usage_reports_the_configured_entitlements() {
    let emu = Emulator::start_with_shared_keys(&[
        "--product-sku",
        "sku-custom-1",
        "--license-entitlement",
        "Pro",
        "--license-entitlement",
        "Users=3",
        "--license-entitlement",
        "Data=10:Gigabytes",
    ]);
    assert_eq!(emu.product_sku, "sku-custom-1");
    checkout(
        &emu,
        json!([
            {"Name": "Data", "Value": "4", "Unit": "Gigabytes"},
            {"Name": "Users", "Value": "1", "Unit": "Count"},
            {"Name": "Pro", "Unit": "None"},
        ]),
        "c",
    )
    .ok("checkout");
    assert_eq!(
        usage(&emu),
        json!({"LicenseUsage": {"EntitlementUsages": [
            {"Name": "Pro", "ConsumedValue": "0", "Unit": "None"},
            {"Name": "Users", "ConsumedValue": "1", "MaxCount": "3", "Unit": "Count"},
            {"Name": "Data", "ConsumedValue": "4", "MaxCount": "10", "Unit": "Gigabytes"},
        ]}})
    );
    let other = "arn:aws:license-manager::294406891311:license:l-00000000000000000000000000000000";
    call(&emu.addr, "GetLicenseUsage", &json!({"LicenseArn": other})).expect_error(
        400,
        "InvalidParameterValueException",
        "another license",
    );
    call(
        &emu.addr,
        "GetLicenseUsage",
        &json!({"LicenseArn": "not-an-arn"}),
    )
    .expect_error(400, "ValidationException", "not an ARN");
    call(&emu.addr, "GetLicenseUsage", &json!({})).expect_error(
        400,
        "ValidationException",
        "no ARN",
    );
}

#[test]
fn without_a_license_checkout_is_not_allowed() {
    let emu = Emulator::start_with_shared_keys(&["--no-license"]);
    assert_eq!(emu.ready["licensed"], false);
    checkout(&emu, json!([{"Name": "Basic", "Unit": "None"}]), "n").expect_error(
        400,
        "NoEntitlementsAllowedException",
        "no license",
    );
    call(
        &emu.addr,
        "GetLicenseUsage",
        &json!({"LicenseArn": emu.license_arn}),
    )
    .expect_error(400, "InvalidParameterValueException", "no license");
}

#[test]
fn sigusr1_revokes_the_license() {
    let emu = Emulator::start_with_shared_keys(&[]);
    let v = checkout(&emu, seats("1"), "before").ok("before");
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(emu.pid() as libc::pid_t, libc::SIGUSR1);
    }
    let log = emu.dir.join("emulator.stderr");
    wait_until(Duration::from_secs(15), "the revocation's log line", || {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|l| l.contains("revoked"))
            .map(|_| ())
    });
    checkout(&emu, seats("1"), "after").expect_error(
        400,
        "NoEntitlementsAllowedException",
        "revoked",
    );
    extend(&emu, &token_of(&v)).expect_error(400, "ResourceNotFoundException", "revoked");
    check_in(&emu, &token_of(&v)).expect_error(400, "ResourceNotFoundException", "revoked");
    assert_eq!(seats_used(&emu), "0");
}

#[test]
fn each_license_fault_applies_after_and_count_calls() {
    for f in LICENSE_FAULTS {
        // Every operation the fault may hit: the second and third valid calls fail.
        let specs: Vec<String> = f
            .operations
            .iter()
            .map(|op| format!("{op}={}@1*2", f.fault))
            .collect();
        let mut flags = Vec::new();
        for s in &specs {
            flags.extend(["--license-fault", s.as_str()]);
        }
        let emu = Emulator::start_with_shared_keys(&flags);
        let mut expected = Vec::new();
        for op in f.operations {
            let body = match *op {
                "CheckoutLicense" => checkout_body(
                    &emu.product_sku,
                    json!([{"Name": "Basic", "Unit": "None"}]),
                    "same",
                ),
                "GetLicenseUsage" => json!({"LicenseArn": emu.license_arn}),
                _ => json!({"LicenseConsumptionToken": "unknown-token"}),
            };
            for n in 1..=4 {
                let r = call(&emu.addr, op, &body);
                let faulted = n == 2 || n == 3;
                let what = format!("{} {op} call {n}", f.fault);
                if faulted {
                    r.expect_error(f.status, f.error_type, &what);
                    assert!(r.header("x-amzn-requestid").is_some(), "{what}");
                    if f.fault == "redirect" {
                        let location = r.header("location").expect("a Location header");
                        assert_eq!(r.json()["Location"], location, "{what}");
                    }
                } else if matches!(*op, "CheckoutLicense" | "GetLicenseUsage") {
                    r.ok(&what);
                } else {
                    // The token is unknown: the normal answer (the record tells it apart).
                    r.expect_error(400, "ResourceNotFoundException", &what);
                }
                expected.push((op.to_string(), if faulted { f.fault } else { "none" }));
            }
        }
        let calls = emu.wait_for_calls(expected.len());
        let got: Vec<(String, &str)> = calls
            .iter()
            .map(|c| {
                (
                    c["target"]
                        .as_str()
                        .unwrap()
                        .trim_start_matches("AWSLicenseManager.")
                        .to_string(),
                    c["fault"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(got, expected, "{}", f.fault);
    }
}

#[test]
fn network_faults_and_the_rate_limit_apply_to_license_manager_too() {
    let emu = Emulator::start_with_shared_keys(&[
        "--license-fault",
        "CheckoutLicense=http-503-html*1",
        "--license-fault",
        "GetLicenseUsage=drop*1",
        "--license-fault",
        "ExtendLicenseConsumption=hang*1",
    ]);
    let basic = json!([{"Name": "Basic", "Unit": "None"}]);
    let r = checkout(&emu, basic.clone(), "h");
    assert_eq!(r.status, 503);
    assert_eq!(r.header("content-type"), Some("text/html"));
    assert_eq!(r.header("x-amzn-requestid"), None);
    let v = checkout(&emu, basic, "h").ok("after the 503");
    let req = request(
        "GetLicenseUsage",
        &json!({"LicenseArn": emu.license_arn}).to_string(),
        &Signing::license_manager(),
    );
    assert!(
        send(&emu.addr, &req, Duration::from_secs(15)).is_err(),
        "drop"
    );
    usage(&emu);
    let req = request(
        "ExtendLicenseConsumption",
        &json!({"LicenseConsumptionToken": token_of(&v)}).to_string(),
        &Signing::license_manager(),
    );
    assert!(
        send(&emu.addr, &req, Duration::from_millis(500)).is_err(),
        "hang"
    );
    extend(&emu, &token_of(&v)).ok("after the hang");
    let faults: Vec<String> = emu
        .wait_for_calls(6)
        .iter()
        .map(|c| c["fault"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        faults,
        ["http-503-html", "none", "drop", "none", "hang", "none"]
    );

    let limited = Emulator::start_with_shared_keys(&["--rate-limit", "1", "--rate-burst", "1"]);
    usage(&limited);
    call(
        &limited.addr,
        "GetLicenseUsage",
        &json!({"LicenseArn": limited.license_arn}),
    )
    .expect_error(429, "RateLimitExceededException", "over the rate");
    let calls = limited.wait_for_calls(2);
    assert_eq!(calls[1]["fault"], "rate-limit");
}

#[test]
fn a_request_must_be_signed_for_its_target_s_service() {
    let emu = Emulator::start_with_shared_keys(&["--long-term-keys-are-tasks"]);
    let body = json!({"LicenseArn": emu.license_arn}).to_string();
    let wrong = request("GetLicenseUsage", &body, &Signing::new());
    let r = send(&emu.addr, &wrong, Duration::from_secs(15)).unwrap();
    r.expect_error_type(403, "InvalidSignatureException");
    assert!(String::from_utf8_lossy(&r.body).contains("correct service: 'license-manager'"));
    // RegisterUsage signed for License Manager.
    let register = json!({"ProductCode": emu.product_code, "PublicKeyVersion": 1}).to_string();
    let metering = register_request(&register);
    let ok = send(&emu.addr, &metering, Duration::from_secs(15)).unwrap();
    assert_eq!(ok.status, 200, "{ok:?}");
    let metering = signed_request(
        "AWSMPMeteringService.RegisterUsage",
        &register,
        &Signing::license_manager(),
    );
    let r = send(&emu.addr, &metering, Duration::from_secs(15)).unwrap();
    r.expect_error_type(403, "InvalidSignatureException");
    assert!(String::from_utf8_lossy(&r.body).contains("correct service: 'aws-marketplace'"));
    // An operation License Manager has but the emulator does not serve.
    let r = send(
        &emu.addr,
        &request("ListLicenses", "{}", &Signing::license_manager()),
        Duration::from_secs(15),
    )
    .unwrap();
    r.expect_error_type(400, "UnknownOperationException");
}

trait ErrorType {
    fn expect_error_type(&self, status: u16, error_type: &str);
}

impl ErrorType for Reply {
    /// An auth or protocol error (these keep AWS's common `message` member).
    fn expect_error_type(&self, status: u16, error_type: &str) {
        assert_eq!(
            (self.status, self.error_type().as_deref()),
            (status, Some(error_type)),
            "{self:?}"
        );
    }
}

#[test]
fn a_fault_an_operation_cannot_return_is_refused_at_start() {
    for (spec, says) in [
        (
            "ExtendLicenseConsumption=no-entitlements-allowed",
            "not an error ExtendLicenseConsumption returns",
        ),
        (
            "CheckoutLicense=conflict",
            "not an error CheckoutLicense returns",
        ),
        (
            "GetLicenseUsage=resource-not-found",
            "not an error GetLicenseUsage returns",
        ),
        ("CheckoutLicense=bogus", "unknown license fault"),
        ("ListLicenses=validation", "unknown operation"),
        ("CheckoutLicense=validation*0", "COUNT"),
    ] {
        let out = run_bounded(Command::new(BIN).args(["--license-fault", spec]), LIMIT);
        assert_eq!(out.status.code(), Some(2), "{spec}: {}", out.stderr);
        assert!(out.stderr.contains(says), "{spec}: {}", out.stderr);
    }
}

#[test]
fn list_faults_lists_the_license_faults_as_the_testkit_table_says() {
    let out = run_bounded(Command::new(BIN).arg("--list-faults"), LIMIT);
    assert!(out.status.success(), "{}", out.stderr);
    let listed: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|f| f["kind"] == "license")
        .collect();
    let table: Vec<Value> = LICENSE_FAULTS
        .iter()
        .map(|f| {
            json!({
                "name": f.fault,
                "kind": "license",
                "status": f.status,
                "errorType": f.error_type,
                "operations": f.operations,
            })
        })
        .collect();
    assert_eq!(listed, table);
    let listed: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|f| f["kind"] == "license-answer" || f["kind"] == "license-lost-answer")
        .collect();
    let table: Vec<Value> = PROCESSED_FAULTS
        .iter()
        .map(|f| {
            let mut line = json!({"name": f.fault, "kind": f.kind, "operations": f.operations});
            if f.kind == "license-answer" {
                line["status"] = json!(200);
            }
            if let Some((status, error_type)) = f.error {
                line["status"] = json!(status);
                line["errorType"] = json!(error_type);
            }
            line
        })
        .collect();
    assert_eq!(listed, table);
    assert_eq!(license_fault_named("conflict").unwrap().exit_code, 0);
    let help = run_bounded(Command::new(BIN).arg("--help"), LIMIT);
    let first = help.stdout.lines().next().unwrap_or_default();
    assert!(
        first.contains("Metering (RegisterUsage)") && first.contains("License Manager"),
        "{first}"
    );
    for f in LICENSE_FAULTS {
        assert!(help.stdout.contains(f.fault), "--help lacks {}", f.fault);
    }
    for f in PROCESSED_FAULTS {
        assert!(help.stdout.contains(f.fault), "--help lacks {}", f.fault);
    }
    for flag in [
        "--product-sku",
        "--license-entitlement",
        "--no-license",
        "--consumption-ttl",
        "--license-fault",
        "--retire-superseded-tokens",
    ] {
        assert!(help.stdout.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn run_points_the_command_at_license_manager() {
    let kd = shared_key_dir();
    let out = run_bounded(
        Command::new(BIN)
            .args(["run", "--verbose", "--key-dir", kd.to_str().unwrap()])
            .args(["--product-sku", "sku-run-1"])
            .args([
                "--",
                "sh",
                "-c",
                "echo \"$AWS_ENDPOINT_URL_LICENSE_MANAGER $AWS_ENDPOINT_URL_MARKETPLACE_METERING $MPGATE_PRODUCT_SKU\"",
            ]),
        LIMIT,
    );
    assert!(out.status.success(), "{}", out.stderr);
    let ready: Value = serde_json::from_str(out.stderr.lines().next().unwrap()).unwrap();
    let url = ready["url"].as_str().unwrap();
    assert_eq!(ready["productSku"], "sku-run-1");
    assert_eq!(out.stdout.trim(), format!("{url} {url} sku-run-1"));
}

/// The record lines of License Manager calls (GetLicenseUsage included).
fn license_lines(emu: &Emulator, n: usize) -> Vec<Value> {
    emu.wait_for_calls(n)
        .into_iter()
        .filter(|c| {
            c["target"]
                .as_str()
                .is_some_and(|t| t.starts_with("AWSLicenseManager."))
        })
        .collect()
}

/// Sends `op` with `body` and expects no answer (closed or still pending after `wait`).
fn no_answer(emu: &Emulator, op: &str, body: &Value, wait: Duration) {
    let req = request(op, &body.to_string(), &Signing::license_manager());
    let got = send(&emu.addr, &req, wait);
    assert!(got.is_err(), "{op}: an answer arrived: {got:?}");
}

#[test]
fn bad_extension_answers_come_from_an_extension_the_seat_book_made() {
    for (fault, check) in [
        ("answer-past-expiration", "past"),
        ("answer-missing-token", "no token"),
        ("answer-missing-expiration", "no expiration"),
        ("answer-bad-expiration", "never"),
        ("answer-wrong-types", "numbers"),
        ("answer-garbage", "not json"),
    ] {
        let spec = format!("ExtendLicenseConsumption={fault}@1*1");
        let emu = Emulator::start_with_shared_keys(&["--license-fault", &spec]);
        let first = token_of(&checkout(&emu, seats("2"), "c").ok("checkout"));
        // The first extension is normal (@1), the second faulted, the third normal again.
        let second = token_of(&extend(&emu, &first).ok("extension 1"));
        let from = now_secs();
        let r = extend(&emu, &second);
        let to = now_secs();
        assert_eq!(r.status, 200, "{fault}: {r:?}");
        assert_eq!(
            r.header("content-type"),
            Some("application/x-amz-json-1.1"),
            "{fault}"
        );
        assert!(r.header("x-amzn-requestid").is_some(), "{fault}");
        let text = String::from_utf8_lossy(&r.body).to_string();
        let body: Option<Value> = serde_json::from_slice(&r.body).ok();
        match check {
            "past" => {
                let v = body.clone().expect("JSON");
                assert!(v["LicenseConsumptionToken"].is_string(), "{fault}: {v}");
                assert_time(
                    v["Expiration"].as_str().unwrap(),
                    "Z",
                    from,
                    to,
                    -3600,
                    fault,
                );
            }
            "no token" => {
                let v = body.clone().expect("JSON");
                assert!(v.get("LicenseConsumptionToken").is_none(), "{fault}: {v}");
                assert_time(
                    v["Expiration"].as_str().unwrap(),
                    "Z",
                    from,
                    to,
                    3600,
                    fault,
                );
            }
            "no expiration" => {
                let v = body.clone().expect("JSON");
                assert!(v.get("Expiration").is_none(), "{fault}: {v}");
                assert!(v["LicenseConsumptionToken"].is_string(), "{fault}: {v}");
            }
            "never" => {
                let v = body.clone().expect("JSON");
                assert_eq!(v["Expiration"], "never", "{fault}");
                assert!(v["LicenseConsumptionToken"].is_string(), "{fault}: {v}");
            }
            "numbers" => {
                let v = body.clone().expect("JSON");
                assert!(v["LicenseConsumptionToken"].is_number(), "{fault}: {v}");
                assert!(v["Expiration"].is_number(), "{fault}: {v}");
            }
            _ => assert!(body.is_none(), "{fault}: {text}"),
        }
        // The seat book extended: the record names the new token, which checks in.
        let lines = license_lines(&emu, 3);
        let line = &lines[2];
        assert_eq!(line["fault"], fault);
        assert_eq!(line["status"], 200);
        assert_eq!(line["processed"], true, "{line}");
        assert_eq!(line["held"], json!({"Seats": 2}), "{line}");
        let issued = line["issuedToken"].as_str().expect("issuedToken");
        assert_ne!(issued, second);
        if let Some(sent) = body
            .as_ref()
            .and_then(|v| v["LicenseConsumptionToken"].as_str())
        {
            assert_eq!(sent, issued, "{fault}");
        }
        let third = token_of(&extend(&emu, issued).ok("after the fault"));
        check_in(&emu, &third).ok("check in");
        assert_eq!(seats_used(&emu), "0", "{fault}");
    }
}

#[test]
fn a_processed_call_whose_answer_is_lost_keeps_its_effect() {
    let emu = Emulator::start_with_shared_keys(&[
        "--license-fault",
        "CheckoutLicense=processed-then-drop*1",
        "--license-fault",
        "ExtendLicenseConsumption=processed-then-hang*1",
        "--license-fault",
        "CheckInLicense=processed-then-server-internal*1",
    ]);
    // The checkout takes its seats, then the connection closes without an answer.
    let body = checkout_body(&emu.product_sku, seats("2"), "lost-1");
    no_answer(&emu, "CheckoutLicense", &body, IO_WAIT);
    assert_eq!(seats_used(&emu), "2");
    // A retry with the same ClientToken gets the answer of the processed call: no more seats.
    let v = call(&emu.addr, "CheckoutLicense", &body).ok("retry");
    assert_eq!(seats_used(&emu), "2");
    let lines = license_lines(&emu, 4);
    let (lost, retry) = (&lines[0], &lines[2]);
    assert_eq!(
        (&lost["fault"], &lost["status"], &lost["processed"]),
        (&json!("processed-then-drop"), &Value::Null, &json!(true)),
        "{lost}"
    );
    assert_eq!(lost["held"], json!({"Seats": 2}), "{lost}");
    assert_eq!(lost["issuedToken"], v["LicenseConsumptionToken"], "{lost}");
    assert_eq!(
        (&retry["fault"], &retry["processed"], &retry["replayed"]),
        (&json!("none"), &json!(false), &json!(true)),
        "{retry}"
    );
    // The extension pushes the expiry and issues a token, then never answers.
    let token = token_of(&v);
    no_answer(
        &emu,
        "ExtendLicenseConsumption",
        &json!({"LicenseConsumptionToken": token}),
        Duration::from_millis(500),
    );
    let lines = license_lines(&emu, 5);
    let hung = &lines[4];
    assert_eq!(
        (&hung["fault"], &hung["processed"]),
        (&json!("processed-then-hang"), &json!(true)),
        "{hung}"
    );
    let issued = hung["issuedToken"]
        .as_str()
        .expect("issuedToken")
        .to_string();
    assert_ne!(issued, token);
    // The check-in returns the seats, then answers 500; a retry finds the token checked in.
    check_in(&emu, &issued).expect_error(500, "ServerInternalException", "lost check-in");
    assert_eq!(seats_used(&emu), "0");
    check_in(&emu, &issued).expect_error(400, "ResourceNotFoundException", "retry");
    assert_eq!(emu.held("Seats"), 0);
    let processed: Vec<String> = emu
        .processed_calls()
        .iter()
        .map(|c| c["fault"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        processed,
        [
            "processed-then-drop",
            "processed-then-hang",
            "processed-then-server-internal"
        ]
    );
    let lines = license_lines(&emu, 8);
    assert_eq!(lines[5]["fault"], "processed-then-server-internal");
    assert_eq!(lines[5]["processed"], true, "{}", lines[5]);
    assert_eq!(lines[5]["held"], json!({"Seats": 0}), "{}", lines[5]);
    assert_eq!(lines[7]["processed"], false, "{}", lines[7]);
}

/// Longest a test waits for an answer that must not come over a closed connection.
const IO_WAIT: Duration = Duration::from_secs(15);

#[test]
fn a_lost_answer_of_a_refused_call_changes_nothing_and_a_plain_drop_takes_no_seat() {
    let emu = Emulator::start_with_shared_keys(&[
        "--license-fault",
        "CheckoutLicense=drop*1",
        "--license-fault",
        "CheckoutLicense=processed-then-drop@2*1",
    ]);
    // drop answers before the seat book: nothing is taken.
    let body = checkout_body(&emu.product_sku, seats("5"), "d");
    no_answer(&emu, "CheckoutLicense", &body, IO_WAIT);
    assert_eq!(seats_used(&emu), "0");
    checkout(&emu, seats("5"), "all").ok("all seats");
    // Call 3: refused (no seat free), processed-then-drop loses the refusal.
    let more = checkout_body(&emu.product_sku, seats("1"), "more");
    no_answer(&emu, "CheckoutLicense", &more, IO_WAIT);
    let lines = license_lines(&emu, 4);
    assert_eq!(
        (&lines[0]["fault"], &lines[0]["processed"]),
        (&json!("drop"), &json!(false)),
        "{}",
        lines[0]
    );
    assert_eq!(lines[0]["held"], json!({"Seats": 0}));
    assert_eq!(
        (&lines[3]["fault"], &lines[3]["processed"]),
        (&json!("processed-then-drop"), &json!(false)),
        "{}",
        lines[3]
    );
    assert!(lines[3].get("issuedToken").is_none(), "{}", lines[3]);
    assert_eq!(lines[3]["held"], json!({"Seats": 5}));
}

#[test]
fn a_check_in_conflict_keeps_the_seat_until_the_retry() {
    let emu = Emulator::start_with_shared_keys(&["--license-fault", "CheckInLicense=conflict*1"]);
    let token = token_of(&checkout(&emu, seats("1"), "c").ok("checkout"));
    let r = check_in(&emu, &token);
    r.expect_error(409, "ConflictException", "first check-in");
    assert!(r.json()["Message"]
        .as_str()
        .unwrap()
        .contains("Try your request again"));
    assert_eq!(seats_used(&emu), "1", "a conflict returns nothing");
    check_in(&emu, &token).ok("the retry");
    assert_eq!(seats_used(&emu), "0");
    let lines = license_lines(&emu, 5);
    assert_eq!(
        (&lines[1]["fault"], &lines[1]["processed"]),
        (&json!("conflict"), &json!(false))
    );
    assert_eq!(lines[3]["processed"], true);
}

#[test]
fn retire_superseded_tokens_leaves_only_the_newest_token_valid() {
    let emu = Emulator::start_with_shared_keys(&["--retire-superseded-tokens"]);
    let first = token_of(&checkout(&emu, seats("1"), "r").ok("checkout"));
    let second = token_of(&extend(&emu, &first).ok("extend"));
    for (what, r) in [
        ("extend with the first token", extend(&emu, &first)),
        ("check in with the first token", check_in(&emu, &first)),
    ] {
        r.expect_error(400, "ResourceNotFoundException", what);
        // As AWS answers a token it never issued.
        assert_eq!(
            r.json()["Message"],
            format!("License consumption {first} not found."),
            "{what}"
        );
    }
    assert_eq!(seats_used(&emu), "1", "the seat is still held");
    // A dry run issues nothing, so retires nothing.
    call(
        &emu.addr,
        "ExtendLicenseConsumption",
        &json!({"LicenseConsumptionToken": second, "DryRun": true}),
    )
    .ok("dry run");
    let third = token_of(&extend(&emu, &second).ok("extend again"));
    check_in(&emu, &second).expect_error(400, "ResourceNotFoundException", "second token");
    check_in(&emu, &third).ok("check in with the newest token");
    assert_eq!(seats_used(&emu), "0");
}
