//! Every variable the AWS SDK reads for the gate's calls, empty and with garbage: exit 2 with a
//! sentence naming it (result file and termination log written), or a working default;
//! never a panic (exit 101) and never a value the SDK silently ignores.

mod common;

use common::*;
use mpgate_testkit::{result_file, Emulator};

/// What a bad value must end as.
enum Expect {
    /// Exit 2, the message naming the variable and containing this.
    Refused(&'static str),
    /// The SDK never uses it for these calls (or any value works): the gate passes.
    Works,
}
use Expect::{Refused, Works};

/// Runs the emulator-configured gate with `name=value` and checks the outcome.
fn check(emu: &Emulator, name: &str, value: &str, expect: &Expect) {
    let result = emu.dir.join("settings-result.json");
    let termination = emu.dir.join("termination-log");
    let _ = std::fs::remove_file(&result);
    let _ = std::fs::remove_file(&termination);
    let out = emu
        .gate()
        .env(name, value)
        .env("MPGATE_RESULT_FILE", &result)
        .args(["sh", "-c", "echo WORKLOAD STARTED"])
        .run();
    let what = format!("{name}={value:?}");
    assert_ne!(
        out.status.code(),
        Some(101),
        "{what} panicked:\n{}",
        out.stderr
    );
    match expect {
        Works => {
            out.expect(0);
            assert!(out.stdout.contains("WORKLOAD STARTED"), "{what}: {out:?}");
        }
        Refused(words) => {
            assert_eq!(out.status.code(), Some(2), "{what}:\n{}", out.stderr);
            let message = out.error_message();
            assert!(
                message.contains(name) && message.contains(words),
                "{what}: no {name} and {words:?} in: {message}"
            );
            assert!(!out.stdout.contains("WORKLOAD STARTED"), "{what}: {out:?}");
            let recorded = result_file(&result);
            assert_eq!(recorded["exitCode"], 2, "{what}: {recorded}");
            assert_eq!(recorded["outcome"], "config-error", "{what}: {recorded}");
            let log = std::fs::read_to_string(&termination)
                .unwrap_or_else(|e| panic!("{what}: no termination log: {e}"));
            assert!(log.contains(name), "{what}: {log}");
        }
    }
}

#[test]
fn every_endpoint_variable_that_is_empty_blank_or_not_a_url_is_exit_2_naming_it() {
    let emu = Emulator::start(&[]);
    for name in [
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_MARKETPLACE_METERING",
        "AWS_ENDPOINT_URL_LICENSE_MANAGER",
        "AWS_ENDPOINT_URL_STS",
    ] {
        for (value, words) in [
            ("", "set but empty"),
            (" ", "set but blank"),
            ("127.0.0.1:9", "has no scheme"),
            ("not a url", "has no scheme"),
            ("http://", "has no host"),
            ("ftp://127.0.0.1:9", "not http or https"),
            ("http://127.0.0.1:9/a b", "not a URL"),
        ] {
            check(&emu, name, value, &Refused(words));
        }
    }
    // A URL without a scheme gets the URL it probably meant.
    let out = emu
        .gate()
        .env("AWS_ENDPOINT_URL_MARKETPLACE_METERING", "127.0.0.1:9")
        .run();
    out.expect_error(2, "http://127.0.0.1:9");
    // With AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true the SDK reads none of them.
    let out = emu
        .gate()
        .env("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true")
        .env("AWS_ENDPOINT_URL", "")
        .args(["--endpoint-url", &emu.url])
        .run();
    out.expect(0);
    let out = emu.gate().args(["--endpoint-url", "127.0.0.1:9"]).run();
    out.expect_error(2, "--endpoint-url \"127.0.0.1:9\" has no scheme");
    assert_eq!(emu.calls().len(), 1, "a bad endpoint never calls anything");
}

#[test]
fn every_other_variable_the_sdk_reads_is_checked_or_harmless() {
    let emu = Emulator::start(&[]);
    let missing = emu.dir.join("missing");
    let missing = missing.to_str().unwrap();
    let table: &[(&str, &[(&str, Expect)])] = &[
        (
            "AWS_REGION",
            &[
                ("", Refused("set but empty")),
                ("garbage value", Refused("not a region name")),
                ("us-east-1.evil", Refused("not a region name")),
            ],
        ),
        (
            "AWS_USE_FIPS_ENDPOINT",
            &[
                ("", Refused("set but empty")),
                ("yes", Refused("true or false")),
            ],
        ),
        (
            "AWS_USE_DUALSTACK_ENDPOINT",
            &[
                ("", Refused("set but empty")),
                ("1", Refused("true or false")),
            ],
        ),
        (
            "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
            &[
                ("", Refused("set but empty")),
                ("maybe", Refused("true or false")),
            ],
        ),
        (
            "AWS_EC2_METADATA_DISABLED",
            &[
                ("", Refused("set but empty")),
                ("off", Refused("true or false")),
            ],
        ),
        (
            "AWS_DISABLE_CLOCK_SKEW_CORRECTION",
            &[
                ("", Refused("set but empty")),
                ("nah", Refused("true or false")),
            ],
        ),
        (
            "AWS_DISABLE_REQUEST_COMPRESSION",
            &[
                ("", Refused("set but empty")),
                ("nah", Refused("true or false")),
            ],
        ),
        (
            "AWS_EC2_METADATA_SERVICE_ENDPOINT",
            &[
                ("", Refused("set but empty")),
                ("169.254.169.254", Refused("has no scheme")),
            ],
        ),
        (
            "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE",
            &[("", Refused("set but empty")), ("IPv5", Refused("IPv4"))],
        ),
        (
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            &[
                ("", Refused("set but empty")),
                ("garbage value", Refused("has no scheme")),
            ],
        ),
        (
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            &[
                ("", Refused("set but empty")),
                ("v2/credentials", Refused("not a path")),
            ],
        ),
        (
            "AWS_CONTAINER_AUTHORIZATION_TOKEN",
            &[
                ("", Refused("set but empty")),
                ("token\n", Refused("line breaks")),
            ],
        ),
        (
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
            &[
                ("", Refused("set but empty")),
                (missing, Refused("is its volume mounted?")),
            ],
        ),
        (
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            &[
                ("", Refused("set but empty")),
                (missing, Refused("is its volume mounted?")),
            ],
        ),
        (
            "AWS_CONFIG_FILE",
            &[
                ("", Refused("set but empty")),
                (missing, Refused("not a readable file")),
            ],
        ),
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            &[
                ("", Refused("set but empty")),
                (missing, Refused("not a readable file")),
            ],
        ),
        (
            "AWS_ROLE_ARN",
            &[
                ("", Refused("set but empty")),
                ("my-role", Refused("not an IAM role ARN")),
            ],
        ),
        (
            "AWS_ROLE_SESSION_NAME",
            &[
                ("", Refused("set but empty")),
                ("a session", Refused("not a role session name")),
            ],
        ),
        (
            "AWS_PROFILE",
            &[
                ("", Refused("set but empty")),
                ("garbage", Refused("no AWS config")),
            ],
        ),
        (
            "AWS_REQUEST_CHECKSUM_CALCULATION",
            &[
                ("", Refused("set but empty")),
                ("always", Refused("when_supported")),
            ],
        ),
        (
            "AWS_RESPONSE_CHECKSUM_VALIDATION",
            &[
                ("", Refused("set but empty")),
                ("always", Refused("when_supported")),
            ],
        ),
        (
            "AWS_ACCOUNT_ID_ENDPOINT_MODE",
            &[
                ("", Refused("set but empty")),
                ("sometimes", Refused("preferred")),
            ],
        ),
        (
            "AWS_REQUEST_MIN_COMPRESSION_SIZE_BYTES",
            &[
                ("", Refused("set but empty")),
                ("-1", Refused("whole number")),
            ],
        ),
        (
            "AWS_AUTH_SCHEME_PREFERENCE",
            &[
                ("", Refused("set but empty")),
                ("sigv4,,", Refused("comma-separated")),
            ],
        ),
        (
            "AWS_SIGV4A_SIGNING_REGION_SET",
            &[
                ("", Refused("set but empty")),
                ("us-east-1, ", Refused("comma-separated")),
            ],
        ),
        (
            "AWS_SDK_UA_APP_ID",
            &[
                ("", Refused("set but empty")),
                ("my app", Refused("not an app ID")),
            ],
        ),
        (
            "AWS_ACCESS_KEY_ID",
            &[
                ("", Refused("set but empty")),
                ("garbage value", Refused("not an access key ID")),
            ],
        ),
        (
            "AWS_SECRET_ACCESS_KEY",
            &[
                ("", Refused("set but empty")),
                ("a secret\n", Refused("line breaks")),
            ],
        ),
        (
            "AWS_SESSION_TOKEN",
            &[("token with spaces", Refused("spaces"))],
        ),
        // The SDK reads it only when AWS_REGION is unset (below).
        (
            "AWS_DEFAULT_REGION",
            &[("", Works), ("garbage value", Works)],
        ),
        // Validated the way mpgate uses them (tests/gate.rs): empty is unset.
        (
            "AWS_MAX_ATTEMPTS",
            &[("", Works), ("many", Refused("whole number"))],
        ),
        (
            "AWS_RETRY_MODE",
            &[("", Works), ("legacy", Refused("'standard'"))],
        ),
        // Read by the SDK but without effect on these calls, whatever the value.
        (
            "AWS_STS_REGIONAL_ENDPOINTS",
            &[("", Works), ("garbage value", Works)],
        ),
        (
            "AWS_EXECUTION_ENV",
            &[("", Works), ("garbage value", Works)],
        ),
        (
            "AWS_LAMBDA_FUNCTION_NAME",
            &[("", Works), ("garbage value", Works)],
        ),
        ("AWS_ACCOUNT_ID", &[("", Works), ("garbage value", Works)]),
        (
            "AWS_LOGIN_CACHE_DIRECTORY",
            &[("", Works), ("garbage value", Works)],
        ),
    ];
    let mut working = 0;
    for (name, cases) in table {
        for (value, expect) in *cases {
            check(&emu, name, value, expect);
            working += usize::from(matches!(expect, Works));
        }
    }
    // AWS_DEFAULT_REGION when it is the one the SDK reads.
    for value in ["", "garbage value"] {
        let out = emu
            .gate()
            .env_remove("AWS_REGION")
            .env("AWS_DEFAULT_REGION", value)
            .run();
        out.expect_error(2, "AWS_DEFAULT_REGION");
    }
    // Credentials come in pairs: a secret key without its key ID is not silently skipped.
    let out = emu.gate().env_remove("AWS_ACCESS_KEY_ID").run();
    out.expect_error(2, "AWS_ACCESS_KEY_ID is not set, but AWS_SECRET_ACCESS_KEY");
    // A credential is never quoted back.
    let out = emu
        .gate()
        .env("AWS_SECRET_ACCESS_KEY", "s3cr3t\nvalue")
        .run();
    out.expect(2);
    assert!(!out.stderr.contains("s3cr3t"), "{}", out.stderr);
    assert_eq!(emu.calls().len(), working, "a bad setting never calls AWS");
}

#[test]
fn a_bad_profile_file_or_profile_endpoint_is_exit_2_naming_it() {
    let emu = Emulator::start(&[]);
    let config = emu.dir.join("aws-config");
    let run = |text: &str| {
        std::fs::write(&config, text).unwrap();
        emu.gate().env("AWS_CONFIG_FILE", &config).run()
    };
    for (text, words) in [
        ("[default]\nendpoint_url =\n", "has endpoint_url \"\", which is empty"),
        ("[default]\nendpoint_url = 127.0.0.1:9\n", "which has no scheme"),
        (
            "[default]\nservices = local\n[services local]\nmarketplace-metering =\n  endpoint_url = localhost:9\n",
            "services section",
        ),
        ("[default]\nendpoint_url = ftp://x\n", "not http or https"),
    ] {
        let out = run(text);
        out.expect_error(2, "the AWS config profile \"default\"");
        out.expect_error(2, words);
    }
    let out = run("garbage = = [[\n[profile\n");
    out.expect_error(2, "the AWS config files cannot be used");
    assert!(
        out.error_message().contains("line 1"),
        "{}",
        out.error_message()
    );
    let out = run("[default]\nregion = bad region\n");
    // AWS_REGION wins over the profile's region; without it, the profile's is checked.
    out.expect(0);
    let out = emu
        .gate()
        .env("AWS_CONFIG_FILE", &config)
        .env_remove("AWS_REGION")
        .run();
    out.expect_error(2, "\"bad region\", from the AWS config profile");
    // A good profile endpoint (the emulator) is used as it is.
    let out = run(&format!("[default]\nendpoint_url = {}\n", emu.url));
    out.expect(0);
    assert_eq!(emu.calls().len(), 2);
}

/// A loopback IMDS that refuses every request, as one with IMDSv2 hop limits or a blocked
/// instance role does.
fn refusing_imds() -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(10)));
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let _ = write!(
                stream,
                "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    url
}

#[test]
fn a_refusing_imds_gets_a_short_warning_without_the_sdk_debug_dump() {
    let emu = Emulator::start(&[]);
    let imds = refusing_imds();
    let run = |region: bool| {
        let mut gate = emu.gate();
        gate.env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_EC2_METADATA_DISABLED")
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &imds);
        if !region {
            gate.env_remove("AWS_REGION");
        }
        gate.run()
    };
    for (region, error) in [(false, "no AWS region"), (true, "no AWS credentials")] {
        let out = run(region);
        out.expect_error(15, error);
        let warnings: Vec<String> = out.warnings().iter().map(|l| l.to_string()).collect();
        assert_eq!(warnings.len(), 1, "{}", out.stderr);
        let warning = &warnings[0];
        assert!(
            warning.contains("IMDS") && warning.contains("forbidden"),
            "{warning}"
        );
        for dump in ["StatusCode", "{ source", "Forbidden }", "headers"] {
            assert!(!warning.contains(dump), "a Debug dump ({dump}): {warning}");
        }
        assert!(warning.len() < 400, "not short: {warning}");
    }
}

/// FIPS and dual-stack choose a host from the SDK's rules; beside an endpoint URL they are
/// a configuration error (issue 26, item 4): exit 2 naming the variable, never "service
/// unreachable" (14), so `--on-transient-error allow` never starts the workload on one.
#[test]
fn fips_or_dual_stack_beside_an_endpoint_url_is_exit_2_even_with_allow() {
    let emu = Emulator::start(&[]);
    for variable in ["AWS_USE_FIPS_ENDPOINT", "AWS_USE_DUALSTACK_ENDPOINT"] {
        let marker = emu.dir.join(format!("started-{variable}"));
        let out = emu
            .gate()
            .env(variable, "true")
            .env("MPGATE_ON_TRANSIENT_ERROR", "allow")
            .args([
                "--",
                "/bin/sh",
                "-c",
                &format!("touch {}", marker.display()),
            ])
            .run();
        out.expect_error(2, variable);
        let message = out.error_message();
        assert!(message.contains("cannot change"), "{message}");
        assert!(message.contains(&format!("unset {variable}")), "{message}");
        assert!(!marker.exists(), "{variable}: the workload started");
        // Control: false is the SDK's default and changes nothing.
        emu.gate().env(variable, "false").run().expect(0);
    }
    assert_eq!(emu.calls().len(), 2, "only the controls called");
}
