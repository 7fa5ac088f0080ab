//! The caller's identity as AWS Marketplace sees it: on EKS only IRSA credentials are accepted
//! for RegisterUsage, so credentials from the node's instance profile (or EKS Pod Identity)
//! get a warning naming IRSA, in the log and the result file, and the gate still runs.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::time::Duration;

use common::*;
use mpgate_testkit::{result_file, Emulator};

/// A minimal IMDSv2 on loopback that hands out one role's temporary credentials.
fn fake_imds() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            let _ = reader.read_line(&mut request_line);
            // The rest of the head; IMDS requests have no body worth reading.
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let path = request_line.split_whitespace().nth(1).unwrap_or("");
            let (status, extra, body) = match (request_line.split(' ').next(), path) {
                (Some("PUT"), "/latest/api/token") => (
                    "200 OK",
                    "x-aws-ec2-metadata-token-ttl-seconds: 21600\r\n",
                    "imds-session-token".to_string(),
                ),
                (Some("GET"), "/latest/meta-data/iam/security-credentials/") => {
                    ("200 OK", "", "node-role".to_string())
                }
                (Some("GET"), "/latest/meta-data/iam/security-credentials/node-role") => (
                    "200 OK",
                    "",
                    format!(
                        r#"{{"Code":"Success","Type":"AWS-HMAC","AccessKeyId":"{ACCESS_KEY_ID}","SecretAccessKey":"{SECRET_ACCESS_KEY}","Token":"{SESSION_TOKEN}","Expiration":"2099-01-01T00:00:00Z","LastUpdated":"2026-01-01T00:00:00Z"}}"#
                    ),
                ),
                _ => ("404 Not Found", "", String::new()),
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

#[test]
fn the_node_role_on_eks_gets_a_warning_naming_irsa_in_the_log_and_result_file() {
    let emu = Emulator::start(&[]);
    let imds = fake_imds();
    let result = emu.dir.join("identity-result.json");
    let run = |on_eks: bool| {
        let mut gate = emu.gate();
        gate.env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_EC2_METADATA_DISABLED")
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &imds)
            .env("MPGATE_RESULT_FILE", &result);
        if on_eks {
            gate.env("KUBERNETES_SERVICE_HOST", "10.100.0.1");
        }
        gate.run()
    };

    let out = run(true);
    out.expect(0);
    let warnings: Vec<String> = out
        .warnings()
        .iter()
        .map(|l| l["message"].as_str().expect("a message").to_string())
        .collect();
    assert_eq!(warnings.len(), 1, "{}", out.stderr);
    assert!(
        warnings[0].contains("node's instance profile"),
        "{warnings:?}"
    );
    assert!(warnings[0].contains("IRSA"), "{warnings:?}");
    let recorded = result_file(&result);
    assert_eq!(
        recorded["warnings"],
        serde_json::json!(warnings),
        "{recorded}"
    );
    assert_eq!(recorded["entitled"], true);
    assert_eq!(
        emu.calls().len(),
        1,
        "the credentials came from the fake IMDS"
    );

    // Off EKS the instance profile is not a Marketplace problem: no warning, no field.
    let out = run(false);
    out.expect(0);
    assert!(out.warnings().is_empty(), "{}", out.stderr);
    assert!(result_file(&result).get("warnings").is_none());
}
