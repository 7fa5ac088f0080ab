//! `mpgate_proof::decoding_key` (and `fingerprint`) on arbitrary PEM input: never a panic,
//! and never an accepted private key or a key under 2048 bits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mpgate_proof::{decoding_key, fingerprint, redacted};

fuzz_target!(|data: &[u8]| {
    match decoding_key(data) {
        Ok(key) => {
            let text = std::str::from_utf8(data).expect("accepted a key file that is not UTF-8");
            assert!(
                !text.contains("PRIVATE KEY-----"),
                "accepted a private key: {text:?}"
            );
            let modulus_bytes = aws_lc_rs::rsa::PublicKey::from_der(key.as_bytes())
                .expect("accepted a key aws-lc cannot parse")
                .modulus_len();
            assert!(
                modulus_bytes >= 256,
                "accepted a {}-byte modulus: {text:?}",
                modulus_bytes
            );
            let print = fingerprint(&key);
            assert!(
                print.starts_with("SHA256:") && print.len() == 7 + 64,
                "fingerprint {print:?}"
            );
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    let _ = redacted(&String::from_utf8_lossy(data));
});
