//! The metering agent's push API parser (`mpgate::agent::parse_record`) on arbitrary bodies:
//! never a panic, and an accepted record is always one of the product's dimensions with a
//! quantity MeterUsage can take; a refusal is always a sentence.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dimensions = ["nodes".to_string(), "gb_scanned".to_string()];
    match mpgate::agent::parse_record(data, &dimensions) {
        Ok((dimension, quantity, tags)) => {
            assert!(dimensions.contains(&dimension), "accepted {dimension:?}");
            assert!(quantity <= i32::MAX as u64, "accepted {quantity}");
            if !tags.is_empty() {
                let tags: std::collections::BTreeMap<String, String> =
                    serde_json::from_str(&tags).expect("canonical tags are a JSON object");
                assert!((1..=5).contains(&tags.len()), "{tags:?}");
            }
        }
        Err(sentence) => assert!(!sentence.is_empty()),
    }
});
