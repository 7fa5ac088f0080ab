//! Black-box tests of the license token's exchange (Containers Anywhere): GetAccessToken,
//! STS's AssumeRoleWithWebIdentity, the role credentials' expiry, revocation, the faults and
//! `run --anywhere`, over raw HTTP/1.1.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use mpgate_testkit::anywhere::{
    assume_role, expect_sts_error, form, get_access_token, post_form, role_signing, xml_text,
};
use mpgate_testkit::license::{call, checkout_body, request, send, Reply, IO_TIMEOUT};
use mpgate_testkit::sigv4::Signing;
use mpgate_testkit::{run_bounded, wait_until, Emulator};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_mpgate-emulator");
const LIMIT: Duration = Duration::from_secs(60);
const OTHER_ACCOUNT_ROLE: &str =
    "arn:aws:iam::444455556666:role/service-role/AWSMarketplaceLicenseTokenConsumptionRole";

/// An emulator that wrote its license token to `license_token` in its scratch dir.
fn start(flags: &[&str]) -> (Emulator, String) {
    let dir = mpgate_testkit::scratch("anywhere-token");
    let file = dir.join("license_token");
    let file_s = file.to_str().unwrap().to_string();
    let mut all = vec!["--license-token-file", file_s.as_str()];
    all.extend_from_slice(flags);
    let emu = Emulator::start_with_shared_keys(&all);
    let token = std::fs::read_to_string(&file).expect("the license token file");
    assert_eq!(
        emu.ready["licenseTokenFile"].as_str(),
        Some(std::fs::canonicalize(&file).unwrap().to_str().unwrap())
    );
    (emu, token)
}

fn role(emu: &Emulator) -> String {
    emu.ready["licenseRoleArn"].as_str().unwrap().to_string()
}

fn access_token(emu: &Emulator, token: &str) -> String {
    let r = get_access_token(&emu.addr, token, None);
    r.ok("GetAccessToken")["AccessToken"]
        .as_str()
        .expect("an AccessToken")
        .to_string()
}

fn checkout_with(emu: &Emulator, signing: &Signing, client_token: &str) -> Reply {
    let body = checkout_body(
        &emu.product_sku,
        json!([{"Name": "Seats", "Value": "1", "Unit": "Count"}]),
        client_token,
    );
    send(
        &emu.addr,
        &request("CheckoutLicense", &body.to_string(), signing),
        IO_TIMEOUT,
    )
    .unwrap()
}

/// A 403 of the signature checks (their member is `message`, as AWS's front end writes it).
fn auth_error(r: &Reply, error_type: &str) {
    assert_eq!(
        (r.status, r.error_type().as_deref()),
        (403, Some(error_type)),
        "{:?}",
        r.json()
    );
    assert_eq!(r.header("x-amzn-errortype"), Some(error_type));
}

fn claims(jwt: &str) -> Value {
    use base64::Engine as _;
    let part = jwt.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap(),
    )
    .unwrap()
}

#[test]
fn the_license_token_buys_role_credentials_that_check_out_the_license() {
    let (emu, token) = start(&[]);
    let role_arn = role(&emu);
    assert_eq!(
        role_arn,
        "arn:aws:iam::111122223333:role/service-role/AWSMarketplaceLicenseTokenConsumptionRole"
    );
    let iam_role =
        Path::new(emu.ready["licenseTokenFile"].as_str().unwrap()).with_file_name("iam_role");
    assert_eq!(std::fs::read_to_string(iam_role).unwrap(), role_arn);
    let c = claims(&token);
    assert_eq!(c["aud"], emu.license_arn.as_str());
    assert_eq!(
        c["amr"][0],
        "aws:license-manager:token-issuer-account-id:111122223333"
    );
    assert!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap() >= 365 * 86400);

    // Unsigned, as AWS's reference code sends it, and signed: both answer an access token
    // valid an hour.
    let unsigned = access_token(&emu, &token);
    let signed = get_access_token(&emu.addr, &token, Some(&Signing::license_manager()))
        .ok("signed GetAccessToken")["AccessToken"]
        .as_str()
        .unwrap()
        .to_string();
    for t in [&unsigned, &signed] {
        let a = claims(t);
        assert_eq!(
            a["exp"].as_i64().unwrap() - a["iat"].as_i64().unwrap(),
            3600
        );
        assert_eq!(a["iss"], "openid-license-manager.amazonaws.com");
    }
    // A signed call is still verified: a wrong secret is refused.
    let wrong = Signing::license_manager().key(
        "ASIAMPGATETESTKEY123",
        "wrong",
        Some("mpgateTestSessionTokenDoNotLogMe9876543210"),
    );
    auth_error(
        &get_access_token(&emu.addr, &token, Some(&wrong)),
        "InvalidSignatureException",
    );

    let sts = assume_role(&emu.addr, &role_arn, "mpgate-test", &unsigned);
    let body = String::from_utf8_lossy(&sts.body).to_string();
    assert_eq!(sts.status, 200, "{body}");
    assert_eq!(sts.header("content-type"), Some("text/xml"));
    assert!(body.starts_with("<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><AssumeRoleWithWebIdentityResult>"), "{body}");
    assert_eq!(
        xml_text(&sts, "Arn").as_deref(),
        Some("arn:aws:sts::111122223333:assumed-role/AWSMarketplaceLicenseTokenConsumptionRole/mpgate-test")
    );
    assert_eq!(
        xml_text(&sts, "RequestId").as_deref(),
        sts.header("x-amzn-requestid")
    );
    let key = xml_text(&sts, "AccessKeyId").unwrap();
    assert!(key.starts_with("ASIA") && key.len() == 20, "{key}");
    let expiration = xml_text(&sts, "Expiration").unwrap();
    assert!(expiration.ends_with('Z'), "{expiration}");

    let creds = role_signing(&sts);
    let out = checkout_with(&emu, &creds, "role-1");
    let answer = out.ok("CheckoutLicense with the role's credentials");
    let consumption = answer["LicenseConsumptionToken"].as_str().unwrap();
    send(
        &emu.addr,
        &request(
            "ExtendLicenseConsumption",
            &json!({"LicenseConsumptionToken": consumption}).to_string(),
            &creds,
        ),
        IO_TIMEOUT,
    )
    .unwrap()
    .ok("ExtendLicenseConsumption with the role's credentials");

    // The record names the calls and ids, never a token or a secret; nor does the log.
    let calls = emu.wait_for_calls(6);
    let targets: Vec<&str> = calls
        .iter()
        .map(|c| c["target"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        targets[..4],
        [
            "AWSLicenseManager.GetAccessToken",
            "AWSLicenseManager.GetAccessToken",
            "AWSLicenseManager.GetAccessToken",
            "AssumeRoleWithWebIdentity"
        ]
    );
    assert_eq!(calls[0]["tokenId"], c["jti"]);
    assert_eq!(calls[3]["issuedAccessKeyId"], key.as_str());
    assert_eq!(calls[3]["roleArn"], role_arn.as_str());
    let record = std::fs::read_to_string(&emu.record).unwrap();
    let log = std::fs::read_to_string(emu.dir.join("emulator.stderr")).unwrap();
    let secret = xml_text(&sts, "SecretAccessKey").unwrap();
    let session = xml_text(&sts, "SessionToken").unwrap();
    for (name, s) in [
        ("refresh token", &token),
        ("access token", &unsigned),
        ("secret", &secret),
        ("session token", &session),
    ] {
        assert!(!record.contains(s.as_str()), "the record holds the {name}");
        assert!(!log.contains(s.as_str()), "the log holds the {name}");
    }
}

#[test]
fn role_credentials_expire_and_are_refused_on_checkout_and_extension() {
    let (emu, token) = start(&["--role-credentials-ttl", "1s"]);
    // A seat checked out with the test pair, to extend with the expired role pair.
    let held = call(
        &emu.addr,
        "CheckoutLicense",
        &checkout_body(
            &emu.product_sku,
            json!([{"Name": "Seats", "Value": "1", "Unit": "Count"}]),
            "pair-1",
        ),
    )
    .ok("checkout");
    let sts = assume_role(&emu.addr, &role(&emu), "s1", &access_token(&emu, &token));
    assert_eq!(sts.status, 200);
    let creds = role_signing(&sts);
    wait_until(LIMIT, "role credentials refused as expired", || {
        (checkout_with(&emu, &creds, "role-late")
            .error_type()
            .as_deref()
            == Some("ExpiredTokenException"))
        .then_some(())
    });
    auth_error(
        &checkout_with(&emu, &creds, "role-late"),
        "ExpiredTokenException",
    );
    let extend = send(
        &emu.addr,
        &request(
            "ExtendLicenseConsumption",
            &json!({"LicenseConsumptionToken": held["LicenseConsumptionToken"]}).to_string(),
            &creds,
        ),
        IO_TIMEOUT,
    )
    .unwrap();
    auth_error(&extend, "ExpiredTokenException");
    assert!(extend.json()["message"]
        .as_str()
        .unwrap()
        .contains("expired"));
}

#[test]
fn sts_checks_the_token_the_role_and_the_form() {
    let (emu, token) = start(&["--access-token-ttl", "1s"]);
    let role_arn = role(&emu);
    let access = access_token(&emu, &token);
    // A role the emulator does not know, and the refresh token instead of the access token.
    expect_sts_error(
        &assume_role(&emu.addr, OTHER_ACCOUNT_ROLE, "s1", &access),
        403,
        "AccessDenied",
        "Sender",
        "another role",
    );
    expect_sts_error(
        &assume_role(&emu.addr, &role_arn, "s1", &token),
        400,
        "InvalidIdentityToken",
        "Sender",
        "the refresh token",
    );
    expect_sts_error(
        &assume_role(&emu.addr, &role_arn, "s1", "not-a-jwt"),
        400,
        "InvalidIdentityToken",
        "Sender",
        "not a JWT",
    );
    let missing = post_form(
        &emu.addr,
        &form(&[
            ("Action", "AssumeRoleWithWebIdentity"),
            ("Version", "2011-06-15"),
            ("RoleArn", &role_arn),
            ("WebIdentityToken", &access),
        ]),
    );
    expect_sts_error(
        &missing,
        400,
        "ValidationError",
        "Sender",
        "no session name",
    );
    assert!(xml_text(&missing, "Message")
        .unwrap()
        .contains("roleSessionName"));
    let with_provider = post_form(
        &emu.addr,
        &form(&[
            ("Action", "AssumeRoleWithWebIdentity"),
            ("Version", "2011-06-15"),
            ("RoleArn", &role_arn),
            ("RoleSessionName", "s1"),
            ("WebIdentityToken", &access),
            ("ProviderId", "www.amazon.com"),
        ]),
    );
    expect_sts_error(
        &with_provider,
        400,
        "InvalidParameterValue",
        "Sender",
        "ProviderId",
    );
    let old_version = post_form(
        &emu.addr,
        &form(&[
            ("Action", "AssumeRoleWithWebIdentity"),
            ("Version", "2010-01-01"),
        ]),
    );
    expect_sts_error(
        &old_version,
        400,
        "InvalidAction",
        "Sender",
        "another version",
    );
    let long = post_form(
        &emu.addr,
        &form(&[
            ("Action", "AssumeRoleWithWebIdentity"),
            ("Version", "2011-06-15"),
            ("RoleArn", &role_arn),
            ("RoleSessionName", "s1"),
            ("WebIdentityToken", &access),
            ("DurationSeconds", "7200"),
        ]),
    );
    expect_sts_error(
        &long,
        400,
        "ValidationError",
        "Sender",
        "DurationSeconds over the role's maximum",
    );
    // The access token expires after --access-token-ttl.
    wait_until(LIMIT, "the access token expired", || {
        (xml_text(&assume_role(&emu.addr, &role_arn, "s1", &access), "Code").as_deref()
            == Some("ExpiredTokenException"))
        .then_some(())
    });
    expect_sts_error(
        &assume_role(&emu.addr, &role_arn, "s1", &access),
        400,
        "ExpiredTokenException",
        "Sender",
        "an expired access token",
    );
}

#[test]
fn a_role_in_another_account_than_the_token_s_does_not_trust_it() {
    let (emu, token) = start(&["--license-role-arn", OTHER_ACCOUNT_ROLE]);
    assert_eq!(role(&emu), OTHER_ACCOUNT_ROLE);
    assert_eq!(emu.ready["tokenIssuerAccount"], "111122223333");
    let access = access_token(&emu, &token);
    expect_sts_error(
        &assume_role(&emu.addr, OTHER_ACCOUNT_ROLE, "s1", &access),
        403,
        "AccessDenied",
        "Sender",
        "untrusted role",
    );
}

#[test]
fn revoked_expired_and_foreign_refresh_tokens_are_refused() {
    let (emu, token) = start(&[]);
    access_token(&emu, &token);
    let file = emu.ready["licenseTokenFile"].as_str().unwrap();
    let out = run_bounded(
        Command::new(BIN).args(["revoke-token", "--url", &emu.url, "--token-file", file]),
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    assert!(out.stderr.contains("revoked"), "{}", out.stderr);
    let refused = get_access_token(&emu.addr, &token, None);
    refused.expect_error(401, "AccessDeniedException", "a revoked token");
    assert!(refused.json()["Message"]
        .as_str()
        .unwrap()
        .contains("revoked"));
    // revoke-token refuses what is not a token the emulator issued.
    let junk = emu.dir.join("junk");
    std::fs::write(&junk, "junk").unwrap();
    let out = run_bounded(
        Command::new(BIN).args([
            "revoke-token",
            "--url",
            &emu.url,
            "--token-file",
            junk.to_str().unwrap(),
        ]),
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("refused"), "{}", out.stderr);

    // SIGUSR2 revokes the token issued at start.
    let (emu2, token2) = start(&[]);
    access_token(&emu2, &token2);
    unsafe {
        libc::kill(emu2.pid() as libc::pid_t, libc::SIGUSR2);
    }
    wait_until(LIMIT, "SIGUSR2 revoke the token", || {
        (get_access_token(&emu2.addr, &token2, None).status != 200).then_some(())
    });
    get_access_token(&emu2.addr, &token2, None).expect_error(
        401,
        "AccessDeniedException",
        "SIGUSR2",
    );
    // emu's token is emu2's too (shared keys, same license) and was not revoked there.
    access_token(&emu2, &token);

    // Expired, not a JWT, another license's.
    let (emu3, token3) = start(&["--refresh-token-ttl", "1s"]);
    wait_until(LIMIT, "the refresh token expired", || {
        (get_access_token(&emu3.addr, &token3, None).status != 200).then_some(())
    });
    let r = get_access_token(&emu3.addr, &token3, None);
    r.expect_error(401, "AccessDeniedException", "an expired token");
    assert!(r.json()["Message"].as_str().unwrap().contains("expired"));
    get_access_token(&emu3.addr, "not-a-jwt", None).expect_error(
        400,
        "ValidationException",
        "not a JWT",
    );
    let (other, foreign) = start(&["--product-sku", "another-sku"]);
    drop(other);
    let r = get_access_token(&emu3.addr, &foreign, None);
    r.expect_error(401, "AccessDeniedException", "another license's token");
    assert!(r.json()["Message"].as_str().unwrap().contains("license"));
}

#[test]
fn every_fault_of_both_operations_answers_as_listed() {
    let out = run_bounded(Command::new(BIN).arg("--list-faults"), LIMIT);
    let lines: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of = |kind: &str| -> Vec<Value> {
        lines
            .iter()
            .filter(|l| l["kind"] == kind)
            .cloned()
            .collect()
    };
    let (lm, sts) = (of("license-token"), of("sts"));
    let names = |v: &[Value]| -> Vec<String> {
        v.iter()
            .map(|l| l["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        names(&lm),
        [
            "validation",
            "authorization",
            "access-denied",
            "rate-limit-exceeded",
            "server-internal"
        ]
    );
    assert_eq!(
        names(&sts),
        [
            "access-denied",
            "expired-token",
            "idp-communication-error",
            "idp-rejected-claim",
            "invalid-identity-token",
            "malformed-policy-document",
            "packed-policy-too-large",
            "region-disabled",
            "throttling"
        ]
    );
    // Fault i applies to call i+1 only (@i*1); the call after the last is answered.
    let mut flags: Vec<String> = Vec::new();
    for (i, f) in lm.iter().enumerate() {
        flags.push("--license-fault".into());
        flags.push(format!(
            "GetAccessToken={}@{i}*1",
            f["name"].as_str().unwrap()
        ));
    }
    for (i, f) in sts.iter().enumerate() {
        flags.push("--sts-fault".into());
        flags.push(format!(
            "AssumeRoleWithWebIdentity={}@{i}*1",
            f["name"].as_str().unwrap()
        ));
    }
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let (emu, token) = start(&flags);
    for f in &lm {
        get_access_token(&emu.addr, &token, None).expect_error(
            f["status"].as_u64().unwrap() as u16,
            f["errorType"].as_str().unwrap(),
            f["name"].as_str().unwrap(),
        );
    }
    let access = access_token(&emu, &token);
    for f in &sts {
        let r = assume_role(&emu.addr, &role(&emu), "s1", &access);
        let code = f["errorType"].as_str().unwrap();
        let kind = "Sender";
        expect_sts_error(
            &r,
            f["status"].as_u64().unwrap() as u16,
            code,
            kind,
            f["name"].as_str().unwrap(),
        );
    }
    assert_eq!(
        assume_role(&emu.addr, &role(&emu), "s1", &access).status,
        200
    );
    let faults: Vec<Value> = emu.calls().iter().map(|c| c["fault"].clone()).collect();
    assert_eq!(faults[0], "validation");
    assert_eq!(faults[lm.len() + 1], "access-denied");
    // A fault the operation's model does not list is refused at start.
    for (flag, spec) in [
        ("--license-fault", "GetAccessToken=idp-rejected-claim"),
        ("--sts-fault", "AssumeRoleWithWebIdentity=server-internal"),
        ("--sts-fault", "GetAccessToken=validation"),
    ] {
        let out = run_bounded(Command::new(BIN).args([flag, spec]), LIMIT);
        assert_eq!(out.status.code(), Some(2), "{spec}: {}", out.stderr);
    }
    // Network faults hang up.
    let (emu, token) = start(&["--license-fault", "GetAccessToken=drop*1"]);
    let body = json!({"Token": token}).to_string();
    let dropped = send(
        &emu.addr,
        &mpgate_testkit::anywhere::unsigned_json_request("AWSLicenseManager.GetAccessToken", &body),
        IO_TIMEOUT,
    );
    assert!(dropped.is_err(), "{dropped:?}");
    access_token(&emu, &token);
}

#[test]
fn run_anywhere_hands_over_a_license_token_and_role_not_credentials() {
    let kd = mpgate_testkit::emulator::shared_key_dir();
    let script = r#"echo "token=$MPGATE_LICENSE_TOKEN_FILE role=$MPGATE_LICENSE_ROLE_ARN sts=$AWS_ENDPOINT_URL_STS key=${AWS_ACCESS_KEY_ID-unset} secret=${AWS_SECRET_ACCESS_KEY-unset}"; test "$(cat "$(dirname "$MPGATE_LICENSE_TOKEN_FILE")/iam_role")" = "$MPGATE_LICENSE_ROLE_ARN" || exit 9; test "$(cut -c1-3 "$MPGATE_LICENSE_TOKEN_FILE")" = eyJ || exit 8; echo "$MPGATE_LICENSE_TOKEN_FILE" > "$1""#;
    let dir = mpgate_testkit::scratch("anywhere-run");
    let where_file = dir.join("where");
    let out = run_bounded(
        Command::new(BIN)
            .args(["run", "--anywhere", "--key-dir"])
            .arg(&kd)
            .args(["--", "sh", "-c", script, "sh"])
            .arg(&where_file)
            .env("AWS_ACCESS_KEY_ID", "AKIACALLER")
            .env_remove("MPGATE_LICENSE_TOKEN_FILE")
            .env_remove("AWS_WEB_IDENTITY_REFRESH_TOKEN_FILE")
            .env_remove("AWS_LICENSE_ACCESS_FILE")
            .env_remove("MPGATE_LICENSE_ROLE_ARN")
            .env_remove("AWS_ROLE_ARN"),
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(0), "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("role=arn:aws:iam::111122223333:role/service-role/AWSMarketplaceLicenseTokenConsumptionRole"), "{}", out.stdout);
    assert!(
        out.stdout.contains("sts=http://127.0.0.1:"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("key=unset secret=unset"),
        "{}",
        out.stdout
    );
    let summary = out.stderr.lines().next().unwrap_or_default();
    for name in [
        "AWS_ENDPOINT_URL_STS",
        "MPGATE_LICENSE_TOKEN_FILE=",
        "MPGATE_LICENSE_ROLE_ARN=arn:aws:iam::111122223333",
        "removed AWS_ACCESS_KEY_ID",
    ] {
        assert!(summary.contains(name), "{name} not in {summary}");
    }
    assert!(!summary.contains("AWS_SESSION_TOKEN"), "{summary}");
    // The private token directory is gone with run.
    let token_file = std::fs::read_to_string(&where_file).unwrap();
    assert!(
        !Path::new(token_file.trim()).exists(),
        "{token_file} outlived run"
    );

    // A caller's own token is kept, and no role is filled in for it.
    let out = run_bounded(
        Command::new(BIN)
            .args(["run", "--anywhere", "--key-dir"])
            .arg(&kd)
            .args(["--", "sh", "-c", r#"echo "token=$AWS_WEB_IDENTITY_REFRESH_TOKEN_FILE mine=${MPGATE_LICENSE_TOKEN_FILE-unset} role=${MPGATE_LICENSE_ROLE_ARN-unset}""#])
            .env("AWS_WEB_IDENTITY_REFRESH_TOKEN_FILE", "/buyer/license_token")
            .env_remove("MPGATE_LICENSE_TOKEN_FILE")
            .env_remove("MPGATE_LICENSE_ROLE_ARN")
            .env_remove("AWS_ROLE_ARN"),
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    assert!(
        out.stdout
            .contains("token=/buyer/license_token mine=unset role=unset"),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr
            .contains("kept AWS_WEB_IDENTITY_REFRESH_TOKEN_FILE=/buyer/license_token"),
        "{}",
        out.stderr
    );
    // --anywhere is run's.
    let out = run_bounded(Command::new(BIN).args(["serve", "--anywhere"]), LIMIT);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        out.stderr.contains("--anywhere is for run"),
        "{}",
        out.stderr
    );
    let help = run_bounded(Command::new(BIN).arg("--help"), LIMIT);
    for flag in [
        "--anywhere",
        "--sts-fault",
        "--license-token-file",
        "--access-token-ttl",
        "--role-credentials-ttl",
        "--refresh-token-ttl",
        "--token-issuer-account",
        "--license-role-arn",
        "revoke-token",
        "SIGUSR2",
    ] {
        assert!(help.stdout.contains(flag), "--help lacks {flag}");
    }
}
