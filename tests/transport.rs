//! HTTPS trust (built-in roots, SSL_CERT_FILE, SSL_CERT_DIR) and egress proxies, end to end.

mod common;

use common::*;
use mpgate_testkit::proxy::Proxy;
use mpgate_testkit::Emulator;

#[test]
fn https_works_with_a_ca_from_ssl_cert_file_and_fails_without_it() {
    let emu = Emulator::start(&["--tls"]);
    assert!(emu.url.starts_with("https://"));
    let ca = emu.ca_file.clone().expect("caFile with --tls");
    emu.gate().env("SSL_CERT_FILE", &ca).run().expect(0);

    // The built-in Mozilla roots do not trust a test CA: no silent fallback to anything else,
    // and no retrying until the deadline either, since the same certificate comes back.
    let started = std::time::Instant::now();
    let out = emu.gate().env("MPGATE_TIMEOUT", "60s").run();
    out.expect(14);
    let message = out.error_message();
    assert!(
        message.contains("TLS certificate is not trusted") && message.contains("SSL_CERT_FILE"),
        "{message}"
    );
    assert_failed_at_once(&out, started, "an untrusted certificate");
}

/// The proxy saw the CONNECT of an HTTPS tunnel to the emulator's test host name.
fn assert_tunnelled(proxy: &Proxy) {
    let seen = proxy.requests();
    assert!(
        seen.iter()
            .any(|r| r.starts_with("CONNECT metering.emulator.test:")),
        "{seen:?}"
    );
}

/// A failure that would come back the same way is not retried until the 60 s deadline.
fn assert_failed_at_once(out: &Outcome, started: std::time::Instant, what: &str) {
    assert!(!out.stderr.contains("retrying"), "{}", out.stderr);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "{what} must fail at once, took {:?}",
        started.elapsed()
    );
}

#[test]
fn ssl_cert_dir_is_honoured() {
    let emu = Emulator::start(&["--tls"]);
    let dir = emu.dir.join("certs");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(emu.ca_file.as_ref().unwrap(), dir.join("test-ca.pem")).unwrap();
    std::fs::write(
        dir.join("README"),
        "not a certificate, ignored like OpenSSL does\n",
    )
    .unwrap();
    emu.gate().env("SSL_CERT_DIR", &dir).run().expect(0);
}

#[test]
fn a_bad_certificate_file_is_a_usage_error_not_a_panic() {
    let emu = Emulator::start(&["--tls"]);
    let bad = emu.dir.join("bad.pem");
    std::fs::write(
        &bad,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let out = emu.gate().env("SSL_CERT_FILE", &bad).run();
    out.expect_error(2, "SSL_CERT_FILE");
    let out = emu
        .gate()
        .env("SSL_CERT_FILE", emu.dir.join("absent.pem"))
        .run();
    out.expect(2);
    assert_eq!(emu.calls().len(), 0);
}

#[test]
fn plain_http_goes_through_http_proxy() {
    let emu = Emulator::start(&[]);
    let proxy = Proxy::start(format!("127.0.0.1:{}", emu.port()).parse().unwrap());
    // An unresolvable host: only the proxy can get the request to the emulator.
    let endpoint = format!("http://metering.emulator.test:{}", emu.port());
    emu.gate()
        .env("HTTP_PROXY", &proxy.url)
        .args(["--endpoint-url", &endpoint])
        .run()
        .expect(0);
    let seen = proxy.requests();
    assert!(
        seen.iter()
            .any(|r| r.starts_with("POST http://metering.emulator.test")),
        "{seen:?}"
    );
}

/// A downgrade to plain HTTP through a proxy that answers for AWS (here: sends every request to
/// a second emulator, which signs with its own key): the gate still verifies the token under
/// its own key, so the changed answer is exit 12 and the workload never starts.
#[test]
fn a_downgraded_call_through_a_proxy_that_changes_the_answer_is_refused() {
    let emu = Emulator::start(&[]);
    let interceptor = Emulator::start(&[]);
    let proxy = Proxy::start(format!("127.0.0.1:{}", interceptor.port()).parse().unwrap());
    let endpoint = format!("http://metering.emulator.test:{}", emu.port());
    let out = emu
        .gate()
        .env("HTTP_PROXY", &proxy.url)
        .args([
            "--endpoint-url",
            &endpoint,
            "--",
            "sh",
            "-c",
            "echo WORKLOAD STARTED",
        ])
        .run();
    out.expect_error(12, "signature does not verify");
    assert!(!out.stdout.contains("WORKLOAD STARTED"), "{out:?}");
    assert_eq!(proxy.requests().len(), 1, "the call went through the proxy");
    assert_eq!(
        interceptor.calls().len(),
        1,
        "and the interceptor answered it"
    );
    assert_eq!(emu.calls().len(), 0);
}

#[test]
fn https_tunnels_through_a_lowercase_https_proxy() {
    let emu = Emulator::start(&["--tls"]);
    let proxy = Proxy::start(format!("127.0.0.1:{}", emu.port()).parse().unwrap());
    let endpoint = format!("https://metering.emulator.test:{}", emu.port());
    emu.gate()
        .env("https_proxy", &proxy.url)
        .env("SSL_CERT_FILE", emu.ca_file.as_ref().unwrap())
        .args(["--endpoint-url", &endpoint])
        .run()
        .expect(0);
    assert_tunnelled(&proxy);
}

#[test]
fn no_proxy_bypasses_the_proxy() {
    let emu = Emulator::start(&[]);
    let proxy = Proxy::start(format!("127.0.0.1:{}", emu.port()).parse().unwrap());
    emu.gate()
        .env("HTTP_PROXY", &proxy.url)
        .env("NO_PROXY", "127.0.0.1,localhost")
        .run()
        .expect(0);
    assert!(proxy.requests().is_empty(), "{:?}", proxy.requests());
}

#[test]
fn a_plain_http_endpoint_reads_no_certificate_files() {
    let emu = Emulator::start(&[]);
    // Unreadable on purpose: with an http:// endpoint mpgate must not even open it.
    emu.gate()
        .env("SSL_CERT_FILE", emu.dir.join("absent.pem"))
        .env("SSL_CERT_DIR", emu.dir.join("absent"))
        .run()
        .expect(0);
}

#[test]
fn proxy_credentials_come_from_the_proxy_url() {
    // Plain HTTP: the credentials go to the proxy in Proxy-Authorization on each request.
    let emu = Emulator::start(&[]);
    let proxy = Proxy::start_requiring_auth(
        format!("127.0.0.1:{}", emu.port()).parse().unwrap(),
        "user:pass",
    );
    let endpoint = format!("http://metering.emulator.test:{}", emu.port());
    emu.gate()
        .env("HTTP_PROXY", format!("http://user:pass@{}", proxy.addr))
        .args(["--endpoint-url", &endpoint])
        .run()
        .expect(0);
    let out = emu
        .gate()
        .env("HTTP_PROXY", &proxy.url)
        .args(["--endpoint-url", &endpoint])
        .run();
    out.expect_error(13, "407");
    assert_eq!(
        emu.calls().len(),
        1,
        "only the authenticated request got through"
    );

    // HTTPS: the credentials go in the CONNECT, none inside the tunnel.
    let emu = Emulator::start(&["--tls"]);
    let proxy = Proxy::start_requiring_auth(
        format!("127.0.0.1:{}", emu.port()).parse().unwrap(),
        "user:pass",
    );
    let endpoint = format!("https://metering.emulator.test:{}", emu.port());
    emu.gate()
        .env("HTTPS_PROXY", format!("http://user:pass@{}", proxy.addr))
        .env("SSL_CERT_FILE", emu.ca_file.as_ref().unwrap())
        .args(["--endpoint-url", &endpoint])
        .run()
        .expect(0);
    assert!(
        proxy
            .requests()
            .iter()
            .any(|r| r.starts_with("CONNECT metering.emulator.test:")),
        "{:?}",
        proxy.requests()
    );
    // Without them the tunnel is refused: at once, with the same advice, never retried.
    let started = std::time::Instant::now();
    let out = emu
        .gate()
        .env("HTTPS_PROXY", &proxy.url)
        .env("SSL_CERT_FILE", emu.ca_file.as_ref().unwrap())
        .env("MPGATE_TIMEOUT", "60s")
        .args(["--endpoint-url", &endpoint])
        .run();
    out.expect(13);
    let message = out.error_message();
    assert!(
        message.contains("407") && message.contains("HTTPS_PROXY=http://user:password@"),
        "{message}"
    );
    assert_failed_at_once(&out, started, "a refused tunnel");
}

#[test]
fn the_first_attempt_takes_the_connection_opened_early() {
    // The connection opens while the credentials load, to where the SDK will send the call:
    // the service's own AWS_ENDPOINT_URL_* (the emulator's), plain or TLS, or through a proxy.
    const EARLY: &str = "using the connection opened early";
    for flags in [&[][..], &["--tls"][..]] {
        let emu = Emulator::start(flags);
        let mut gate = emu.gate();
        gate.env("MPGATE_LOG", "warn,mpgate=debug");
        if let Some(ca) = &emu.ca_file {
            gate.env("SSL_CERT_FILE", ca);
        }
        let out = gate.run();
        out.expect(0);
        assert!(out.stderr.contains(EARLY), "{flags:?}: {}", out.stderr);
        assert_eq!(emu.calls().len(), 1);
    }

    let emu = Emulator::start(&["--tls"]);
    let proxy = Proxy::start(format!("127.0.0.1:{}", emu.port()).parse().unwrap());
    let endpoint = format!("https://metering.emulator.test:{}", emu.port());
    let out = emu
        .gate()
        .env("HTTPS_PROXY", &proxy.url)
        .env("SSL_CERT_FILE", emu.ca_file.as_ref().unwrap())
        .env("MPGATE_LOG", "warn,mpgate=debug")
        .args(["--endpoint-url", &endpoint])
        .run();
    out.expect(0);
    assert!(out.stderr.contains(EARLY), "{}", out.stderr);
    let tunnels = proxy
        .requests()
        .iter()
        .filter(|r| r.starts_with("CONNECT "))
        .count();
    assert_eq!(tunnels, 1, "{:?}", proxy.requests());
}

#[test]
fn contract_pricing_takes_the_same_tls_and_proxy_path() {
    // License Manager through an HTTPS proxy, its certificate trusted through SSL_CERT_FILE:
    // one transport for both services.
    let emu = Emulator::start(&["--tls"]);
    let proxy = Proxy::start(format!("127.0.0.1:{}", emu.port()).parse().unwrap());
    let endpoint = format!("https://metering.emulator.test:{}", emu.port());
    emu.contract_gate("Basic")
        .env("HTTPS_PROXY", &proxy.url)
        .env("SSL_CERT_FILE", emu.ca_file.as_ref().unwrap())
        .args(["--endpoint-url", &endpoint])
        .run()
        .expect(0);
    assert_tunnelled(&proxy);
    let ops: Vec<String> = license_calls(&emu).into_iter().map(|(op, _)| op).collect();
    assert_eq!(ops, ["CheckoutLicense", "CheckInLicense"]);

    // Without the CA: refused at once, never retried until the deadline.
    let started = std::time::Instant::now();
    let out = emu
        .contract_gate("Basic")
        .env("MPGATE_TIMEOUT", "60s")
        .run();
    out.expect(14);
    let message = out.error_message();
    assert!(
        message.contains("License Manager endpoint's TLS certificate is not trusted"),
        "{message}"
    );
    assert_failed_at_once(&out, started, "an untrusted certificate");
}
