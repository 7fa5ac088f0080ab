//! Usage pricing (custom metering) at start: one MeterUsage of quantity 0 decides, and every
//! answer AWS can give it has its exit code and its advice (one test per message).

mod common;

use common::*;
use mpgate_testkit::meter_usage::{body, call, now_secs};
use mpgate_testkit::{result_file, Emulator};

/// The emulator sells `nodes` and `gb` (`--dimension`), billing into its usage file.
fn emulator(extra: &[&str]) -> Emulator {
    let mut flags = vec!["--dimension", "nodes", "--dimension", "gb"];
    flags.extend_from_slice(extra);
    Emulator::start(&flags)
}

#[test]
fn the_start_meters_zero_of_the_start_dimension_then_execs_the_workload() {
    let emu = emulator(&[]);
    let result = emu.dir.join("result.json");
    let out = emu
        .usage_gate("nodes,gb")
        .env("MPGATE_RESULT_FILE", &result)
        .args(["--start-dimension", "gb"])
        .args([
            "sh",
            "-c",
            "echo \"$MPGATE_ENTITLEMENT ${MPGATE_SIGNATURE-none}\"",
        ])
        .run();
    out.expect(0);
    assert_eq!(out.stdout.trim(), "verified none");
    let calls = meter_calls(&emu);
    assert_eq!(calls.len(), 1, "{calls:?}");
    let sent = &calls[0];
    assert_eq!(sent["usageDimension"], "gb");
    assert_eq!(sent["usageQuantity"], 0);
    assert_eq!(sent["recorded"], true);
    let timestamp = sent["timestamp"].as_f64().expect("a numeric timestamp") as i64;
    assert!((timestamp - now_secs()).abs() < 60, "{sent}");

    let report = result_file(&result);
    assert_eq!(report["pricing"], "usage");
    assert_eq!(report["outcome"], "verified");
    assert_eq!(report["entitled"], true);
    let start = &report["usage"]["start"];
    assert_eq!(
        report["usage"]["dimensions"],
        serde_json::json!(["nodes", "gb"])
    );
    assert_eq!(start["dimension"], "gb");
    assert_eq!(start["quantity"], 0);
    assert_eq!(start["duplicate"], false);
    assert_eq!(start["meteringRecordId"], sent["meteringRecordId"]);
    assert!(start["requestId"].as_str().is_some_and(|id| !id.is_empty()));
    assert_eq!(report["verifiedAt"], start["timestamp"]);
    // The log line says it too: the record and request IDs an AWS Support case asks for.
    let line = out
        .log_lines()
        .into_iter()
        .find(|l| l["message"] == "the buyer is entitled")
        .expect("an entitled line");
    assert_eq!(line["meteringRecordId"], sent["meteringRecordId"]);
    assert_eq!(line["requestId"], start["requestId"]);
}

#[test]
fn a_restarted_container_gets_duplicate_request_and_is_entitled() {
    let emu = emulator(&[]);
    // The pod's earlier container recorded 5 nodes this hour (same credentials: same pod).
    let before = call(&emu.addr, &body(&emu.product_code, "nodes", 5, now_secs()));
    before.ok("MeterUsage of 5 nodes");
    let result = emu.dir.join("result.json");
    let out = emu
        .usage_gate("nodes")
        .env("MPGATE_RESULT_FILE", &result)
        .args(["true"])
        .run();
    out.expect(0);
    let calls = meter_calls(&emu);
    if calls[0]["hour"] != calls[1]["hour"] {
        // The clock hour turned between the two calls: nothing to learn this time.
        return;
    }
    let start = &result_file(&result)["usage"]["start"];
    assert_eq!(start["duplicate"], true);
    assert!(start["meteringRecordId"].is_null(), "{start}");
    assert!(
        out.stderr.contains("DuplicateRequestException")
            && out.stderr.contains("goes into the next hour's record"),
        "{}",
        out.stderr
    );
}

#[test]
fn not_entitled_is_exit_10_and_says_to_subscribe() {
    let emu = emulator(&["--meter-fault", "not-entitled"]);
    let result = emu.dir.join("result.json");
    let out = emu
        .usage_gate("nodes")
        .env("MPGATE_RESULT_FILE", &result)
        .args(["sh", "-c", "echo WORKLOAD STARTED"])
        .run();
    out.expect_error(10, "CustomerNotEntitledException");
    out.expect_error(10, "subscribe to it in AWS Marketplace");
    assert!(!out.stdout.contains("WORKLOAD STARTED"));
    let report = result_file(&result);
    assert_eq!(report["outcome"], "not-entitled");
    assert_eq!(report["pricing"], "usage");
    assert!(report["usage"]["start"].is_null(), "{report}");
}

#[test]
fn platform_not_supported_is_exit_11_and_names_irsa() {
    let emu = emulator(&["--meter-fault", "platform-not-supported"]);
    let out = emu.usage_gate("nodes").run();
    out.expect_error(11, "PlatformNotSupportedException");
    out.expect_error(11, "IRSA");
}

#[test]
fn an_unknown_product_code_is_exit_13_naming_mpgate_product_code() {
    let emu = emulator(&[]);
    let out = emu
        .usage_gate("nodes")
        .env("MPGATE_PRODUCT_CODE", "prod-typo")
        .run();
    out.expect_error(13, "InvalidProductCodeException");
    out.expect_error(13, "set MPGATE_PRODUCT_CODE");
}

#[test]
fn a_dimension_the_product_does_not_sell_is_exit_13_naming_mpgate_dimensions() {
    let emu = emulator(&[]);
    let out = emu.usage_gate("nodez,gb").run();
    out.expect_error(13, "InvalidUsageDimensionException");
    out.expect_error(13, "no pricing dimension \"nodez\"");
    out.expect_error(13, "set MPGATE_DIMENSIONS");
}

#[test]
fn another_region_is_exit_13_naming_aws_region() {
    let emu = emulator(&["--meter-fault", "invalid-endpoint-region"]);
    let out = emu.usage_gate("nodes").run();
    out.expect_error(13, "InvalidEndpointRegionException");
    out.expect_error(13, "let the platform set AWS_REGION");
}

#[test]
fn access_denied_is_exit_13_naming_the_action_and_the_policy_that_grants_it() {
    let emu = emulator(&["--meter-fault", "access-denied"]);
    let out = emu.usage_gate("nodes").run();
    out.expect_error(13, "may not call aws-marketplace:MeterUsage");
    out.expect_error(13, "add deploy/iam-policy-meter-usage.json");
    out.expect_error(13, "AWSMarketplaceMeteringFullAccess grants it");
    out.expect_error(13, "AWSMarketplaceMeteringRegisterUsage does not");
}

#[test]
fn throttling_is_retried_within_the_deadline() {
    let emu = emulator(&["--meter-fault", "throttle*2"]);
    let result = emu.dir.join("result.json");
    emu.usage_gate("nodes")
        .env("MPGATE_RESULT_FILE", &result)
        .args(["true"])
        .run()
        .expect(0);
    let start = &result_file(&result)["usage"]["start"];
    assert!(start["meteringRecordId"].is_string(), "{start}");
    // The start's call: three attempts, the first two throttled.
    let calls = meter_calls(&emu);
    assert_eq!(calls.len(), 3, "{calls:?}");
}

#[test]
fn throttling_until_the_deadline_is_exit_14() {
    let emu = emulator(&["--meter-fault", "throttle"]);
    let out = emu
        .usage_gate("nodes")
        .env("MPGATE_TIMEOUT", "2s")
        .args(["sh", "-c", "echo WORKLOAD STARTED"])
        .run();
    out.expect_error(14, "throttled every attempt");
    assert!(!out.stdout.contains("WORKLOAD STARTED"));
}

#[test]
fn allow_starts_the_workload_unverified_when_metering_is_unreachable() {
    let emu = emulator(&["--meter-fault", "internal-error"]);
    let result = emu.dir.join("result.json");
    let out = emu
        .usage_gate("nodes")
        .env("MPGATE_TIMEOUT", "2s")
        .env("MPGATE_ON_TRANSIENT_ERROR", "allow")
        .env("MPGATE_RESULT_FILE", &result)
        .args(["sh", "-c", "echo \"$MPGATE_ENTITLEMENT\""])
        .run();
    out.expect(0);
    assert_eq!(out.stdout.trim(), "unverified");
    let report = result_file(&result);
    assert_eq!(report["outcome"], "unverified");
    assert_eq!(report["entitled"], false);
    assert!(report.get("verifiedAt").is_none(), "{report}");
}

#[test]
fn no_dimension_is_exit_2_naming_mpgate_dimensions() {
    let emu = emulator(&[]);
    let out = emu.usage_gate("").run();
    out.expect_error(2, "no dimension to meter: set MPGATE_DIMENSIONS");
    assert!(meter_calls(&emu).is_empty());
}

#[test]
fn more_than_24_dimensions_is_exit_2() {
    let emu = emulator(&[]);
    let many: Vec<String> = (0..25).map(|i| format!("d{i}")).collect();
    let out = emu.usage_gate(&many.join(",")).run();
    out.expect_error(
        2,
        "MPGATE_DIMENSIONS names 25 dimensions: a product has at most 24",
    );
}

#[test]
fn a_dimension_given_twice_or_malformed_is_exit_2_naming_the_flag() {
    let emu = emulator(&[]);
    let out = emu
        .usage_gate("")
        .args(["--dimension", "nodes", "--dimension", "nodes"])
        .run();
    out.expect_error(2, "--dimension names dimension \"nodes\" twice");
    let out = emu.usage_gate("no des").run();
    out.expect_error(2, "invalid dimension \"no des\" in MPGATE_DIMENSIONS");
    // NAME=... reads a dimension from metrics: the syntax is said.
    let out = emu.usage_gate("nodes=up").run();
    out.expect_error(
        2,
        "invalid scraped dimension \"nodes=up\" in MPGATE_DIMENSIONS: no ':counter', ':max' or ':avg'",
    );
}

#[test]
fn a_start_dimension_not_metered_is_exit_2_listing_the_dimensions() {
    let emu = emulator(&[]);
    let out = emu
        .usage_gate("nodes,gb")
        .env("MPGATE_START_DIMENSION", "cpus")
        .run();
    out.expect_error(
        2,
        "MPGATE_START_DIMENSION \"cpus\" is not one of the dimensions (nodes,gb)",
    );
}

#[test]
fn a_short_metering_hour_is_warned_about_and_a_bad_one_refused() {
    let emu = emulator(&["--metering-hour", "2s"]);
    let out = emu
        .usage_gate("nodes")
        .env("MPGATE_METERING_HOUR", "2s")
        .args(["true"])
        .run();
    out.expect(0);
    assert!(
        out.stderr.contains("not AWS's 3600s (a test clock"),
        "{}",
        out.stderr
    );
    let out = emu
        .usage_gate("nodes")
        .env("MPGATE_METERING_HOUR", "1500ms")
        .run();
    out.expect_error(2, "MPGATE_METERING_HOUR");
    out.expect_error(2, "whole seconds from 1s to 3600s");
}

#[test]
fn the_key_options_are_noted_as_not_used() {
    let emu = emulator(&[]);
    let out = emu
        .usage_gate("nodes")
        .env("MPGATE_PUBLIC_KEY_FILE", &emu.public_key_file)
        .args(["--max-token-age", "60s", "true"])
        .run();
    out.expect(0);
    assert!(
        out.stderr.contains("answers with no signed token")
            && out
                .stderr
                .contains("--max-token-age, MPGATE_PUBLIC_KEY_FILE not used"),
        "{}",
        out.stderr
    );
}

#[test]
fn mpgate_verify_refuses_usage_pricing() {
    let emu = emulator(&[]);
    let out = emu.usage_gate("nodes").args(["verify"]).run();
    out.expect_error(2, "is usage pricing: MeterUsage answers with a record ID");
}

#[test]
fn another_user_is_refused_the_socket_and_told_which_group_may_push() {
    let emu = emulator(&[]);
    let ledger = emu.dir.join("ledger");
    // The workload pushes once as itself, then as nobody (uid and gid 65534, no groups): the
    // ledger directory (0710) and the socket (0660) keep that one out.
    let script = format!(
        "{MPGATE} usage add nodes 1 >/dev/null || exit 9; setpriv --reuid 65534 --regid 65534 --clear-groups {MPGATE} usage add nodes 5; echo \"exit $?\""
    );
    let out = emu
        .usage_gate("nodes")
        .env("MPGATE_LEDGER_DIR", &ledger)
        .args(["sh", "-c", script.as_str()])
        .run();
    out.expect(0);
    assert!(out.stdout.contains("exit 14"), "{out:?}");
    for words in [
        "cannot reach the metering agent",
        "Permission denied",
        "nothing was recorded",
        "pod's fsGroup",
    ] {
        assert!(
            out.stderr.contains(words),
            "no {words:?} in:\n{}",
            out.stderr
        );
    }
}
