//! Owns MeterUsage's input: the body's shape as `MeterUsageRequest`, and the record's rules
//! (dimension, tags, allocations) the service checks itself.

use serde_json::{Map, Value};

use crate::ops::meter_usage::faults::{meter_error, MeterError};
use crate::ops::validation::{self, must_not_be_null, type_name, Rejected};

/// UsageQuantity's and AllocatedUsageQuantity's upper bound (the model's).
pub const MAX_QUANTITY: i64 = 2_147_483_647;
/// UsageAllocations: at most this many (the newest model; the 2020 one said 500).
pub const MAX_ALLOCATIONS: usize = 2500;
/// Tags of one allocation: 1 to this many.
pub const MAX_TAGS: usize = 5;
/// TagKey's and TagValue's longest lengths.
pub const MAX_TAG_KEY: usize = 100;
pub const MAX_TAG_VALUE: usize = 256;
/// ClientToken's longest length (1 to 64).
pub const MAX_CLIENT_TOKEN: usize = 64;

/// One usage allocation, as sent (its tags checked later, by [`check_allocations`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub quantity: i64,
    /// `None`: no `Tags` member (the untagged bucket).
    pub tags: Option<Vec<(String, String)>>,
}

/// The validated MeterUsage input.
#[derive(Debug, Clone)]
pub struct Input {
    pub product_code: String,
    /// `Timestamp` in milliseconds since the Unix epoch (fractions of a millisecond dropped).
    pub timestamp_ms: i64,
    pub dimension: String,
    /// `UsageQuantity` (0 when absent, as the model's default).
    pub quantity: i64,
    pub dry_run: bool,
    pub allocations: Option<Vec<Allocation>>,
    /// `UsageAllocations` as sent (compared as sent for the hour's idempotency).
    pub allocations_raw: Value,
    pub client_token: Option<String>,
}

/// Checks the body against the MeterUsageRequest shape: types, required members, lengths and
/// ranges are `ValidationException`; the tags' and allocations' own rules are left to
/// [`check_allocations`] (the service answers them with errors of their own).
pub fn validate(obj: &Map<String, Value>) -> Result<Input, Rejected> {
    let mut errors = Vec::new();
    let product_code =
        validation::string_member(obj, "ProductCode", "ProductCode", true, &mut errors);
    if let Some(p) = &product_code {
        let n = p.chars().count();
        if n > 255 {
            errors.push(format!("Value of length {n} at 'ProductCode' failed to satisfy constraint: Member must have length less than or equal to 255"));
        } else if !p
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-/=:_.@".contains(c))
        {
            errors.push(format!("Value '{p}' at 'ProductCode' failed to satisfy constraint: Member must satisfy regular expression pattern: ^[-a-zA-Z0-9/=:_.@]*$"));
        }
    }
    let timestamp_ms = timestamp(obj, &mut errors);
    let dimension =
        validation::string_member(obj, "UsageDimension", "UsageDimension", true, &mut errors);
    if let Some(d) = &dimension {
        let n = d.chars().count();
        if n < 1 {
            errors.push("Value '' at 'UsageDimension' failed to satisfy constraint: Member must have length greater than or equal to 1".into());
        } else if n > 255 {
            errors.push(format!("Value of length {n} at 'UsageDimension' failed to satisfy constraint: Member must have length less than or equal to 255"));
        }
    }
    let quantity = integer(obj, "UsageQuantity", "UsageQuantity", false, &mut errors).unwrap_or(0);
    let dry_run = match obj.get("DryRun") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            errors.push(format!(
                "Value {} at 'DryRun' failed to satisfy constraint: Member must be a boolean",
                type_name(other)
            ));
            false
        }
    };
    let client_token =
        validation::string_member(obj, "ClientToken", "ClientToken", false, &mut errors);
    if let Some(t) = &client_token {
        let n = t.chars().count();
        if !(1..=MAX_CLIENT_TOKEN).contains(&n) {
            errors.push(format!("Value of length {n} at 'ClientToken' failed to satisfy constraint: Member must have length between 1 and {MAX_CLIENT_TOKEN}"));
        }
    }
    let allocations_raw = obj.get("UsageAllocations").cloned().unwrap_or(Value::Null);
    let allocations = allocations(&allocations_raw, &mut errors);
    match (errors.len(), product_code, timestamp_ms, dimension) {
        (0, Some(product_code), Some(timestamp_ms), Some(dimension)) => Ok(Input {
            product_code,
            timestamp_ms,
            dimension,
            quantity,
            dry_run,
            allocations,
            allocations_raw,
            client_token,
        }),
        _ => Err(Rejected(
            "ValidationException",
            validation::validation_message(&errors),
        )),
    }
}

/// `Timestamp`: awsJson1.1 sends a timestamp as seconds since the epoch, a JSON number
/// (fractions allowed).
fn timestamp(obj: &Map<String, Value>, errors: &mut Vec<String>) -> Option<i64> {
    match obj.get("Timestamp") {
        None | Some(Value::Null) => {
            errors.push(must_not_be_null("Timestamp"));
            None
        }
        Some(Value::Number(n)) => {
            let secs = n.as_f64().filter(|s| s.is_finite() && s.abs() < 1e13);
            match secs {
                Some(s) => Some((s * 1000.0).floor() as i64),
                None => {
                    errors.push(format!("Value '{n}' at 'Timestamp' failed to satisfy constraint: Member must be a timestamp"));
                    None
                }
            }
        }
        Some(other) => {
            errors.push(format!(
                "Value {} at 'Timestamp' failed to satisfy constraint: Member must be a timestamp (seconds since the epoch)",
                type_name(other)
            ));
            None
        }
    }
}

/// An integer member from 0 to [`MAX_QUANTITY`] (`None` when absent or wrong).
fn integer(
    obj: &Map<String, Value>,
    key: &str,
    at: &str,
    required: bool,
    errors: &mut Vec<String>,
) -> Option<i64> {
    match obj.get(key) {
        None | Some(Value::Null) => {
            if required {
                errors.push(must_not_be_null(at));
            }
            None
        }
        Some(Value::Number(n)) => match n.as_i64() {
            Some(v) if (0..=MAX_QUANTITY).contains(&v) => Some(v),
            Some(v) if v < 0 => {
                errors.push(format!("Value '{v}' at '{at}' failed to satisfy constraint: Member must have value greater than or equal to 0"));
                None
            }
            Some(v) => {
                errors.push(format!("Value '{v}' at '{at}' failed to satisfy constraint: Member must have value less than or equal to {MAX_QUANTITY}"));
                None
            }
            None => {
                errors.push(format!(
                    "Value '{n}' at '{at}' failed to satisfy constraint: Member must be an integer"
                ));
                None
            }
        },
        Some(other) => {
            errors.push(format!(
                "Value {} at '{at}' failed to satisfy constraint: Member must be an integer",
                type_name(other)
            ));
            None
        }
    }
}

/// `UsageAllocations`' shape: a list of structures, each with its AllocatedUsageQuantity and
/// optional Tags of Key/Value strings.
fn allocations(raw: &Value, errors: &mut Vec<String>) -> Option<Vec<Allocation>> {
    let list = match raw {
        Value::Null => return None,
        Value::Array(list) => list,
        other => {
            errors.push(format!(
                "Value {} at 'UsageAllocations' failed to satisfy constraint: Member must be a list",
                type_name(other)
            ));
            return None;
        }
    };
    let mut out = Vec::with_capacity(list.len().min(MAX_ALLOCATIONS + 1));
    // Bounded: the body is at most 64 KiB, so is the list.
    for (i, item) in list.iter().enumerate() {
        let at = format!("UsageAllocations.{}.member", i + 1);
        let Value::Object(a) = item else {
            errors.push(format!(
                "Value {} at '{at}' failed to satisfy constraint: Member must be a structure",
                type_name(item)
            ));
            continue;
        };
        let quantity = integer(
            a,
            "AllocatedUsageQuantity",
            &format!("{at}.AllocatedUsageQuantity"),
            true,
            errors,
        );
        let tags = match a.get("Tags") {
            None | Some(Value::Null) => None,
            Some(Value::Array(tags)) => {
                let mut pairs = Vec::with_capacity(tags.len());
                for (j, t) in tags.iter().enumerate() {
                    let tat = format!("{at}.Tags.{}.member", j + 1);
                    let Value::Object(t) = t else {
                        errors.push(format!("Value {} at '{tat}' failed to satisfy constraint: Member must be a structure", type_name(t)));
                        continue;
                    };
                    let k =
                        validation::string_member(t, "Key", &format!("{tat}.Key"), true, errors);
                    let v = validation::string_member(
                        t,
                        "Value",
                        &format!("{tat}.Value"),
                        true,
                        errors,
                    );
                    if let (Some(k), Some(v)) = (k, v) {
                        pairs.push((k, v));
                    }
                }
                Some(pairs)
            }
            Some(other) => {
                errors.push(format!(
                    "Value {} at '{at}.Tags' failed to satisfy constraint: Member must be a list",
                    type_name(other)
                ));
                None
            }
        };
        if let Some(quantity) = quantity {
            out.push(Allocation { quantity, tags });
        }
    }
    Some(out)
}

/// Whether `s` matches TagKey's and TagValue's pattern `^[a-zA-Z0-9+ -=._:\/@]+$` (where
/// ` -=` is the range from the space to `=`, as the regular expression reads).
fn tag_chars(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || (' '..='=').contains(&c) || "+._:/@".contains(c))
}

/// The rules the service checks on allocations, with its own errors: each allocation's tags
/// (1 to 5, keys 1-100 and values 1-256 characters of the pattern, no key twice) else
/// `InvalidTagException`; 1 to 2,500 allocations, their quantities summing to
/// `UsageQuantity`, no two with the same set of tags (no tags counts as one set) else
/// `InvalidUsageAllocationsException`.
pub fn check_allocations(input: &Input) -> Result<(), MeterError> {
    let Some(list) = &input.allocations else {
        return Ok(());
    };
    for (i, a) in list.iter().enumerate() {
        let Some(tags) = &a.tags else { continue };
        let bad = |why: String| {
            Err(meter_error(
                "InvalidTagException",
                format!("The tag is invalid, or the number of tags is greater than 5: allocation {} {why}.", i + 1),
            ))
        };
        if tags.is_empty() || tags.len() > MAX_TAGS {
            return bad(format!("has {} tags (1 to {MAX_TAGS})", tags.len()));
        }
        for (j, (k, v)) in tags.iter().enumerate() {
            if k.chars().count() > MAX_TAG_KEY || !tag_chars(k) {
                return bad(format!(
                    "tag {}: the key must be 1 to {MAX_TAG_KEY} characters of [a-zA-Z0-9+ -=._:/@]",
                    j + 1
                ));
            }
            if v.chars().count() > MAX_TAG_VALUE || !tag_chars(v) {
                return bad(format!("tag {}: the value must be 1 to {MAX_TAG_VALUE} characters of [a-zA-Z0-9+ -=._:/@]", j + 1));
            }
            if tags[..j].iter().any(|(other, _)| other == k) {
                return bad(format!("has the key {k:?} twice"));
            }
        }
    }
    let bad = |why: String| Err(meter_error("InvalidUsageAllocationsException", why));
    if list.is_empty() || list.len() > MAX_ALLOCATIONS {
        return bad(format!(
            "The usage allocations are invalid: {} allocations (1 to {MAX_ALLOCATIONS}).",
            list.len()
        ));
    }
    let sum: i64 = list.iter().map(|a| a.quantity).sum();
    if sum != input.quantity {
        return bad(format!(
            "Sum of allocated usage quantities is not equal to the usage quantity: {sum} allocated, UsageQuantity {}.",
            input.quantity
        ));
    }
    let mut sets: Vec<Vec<(&str, &str)>> = Vec::with_capacity(list.len());
    for (i, a) in list.iter().enumerate() {
        let mut set: Vec<(&str, &str)> = a
            .tags
            .iter()
            .flatten()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        set.sort_unstable();
        if let Some(j) = sets.iter().position(|s| *s == set) {
            return bad(format!(
                "The usage allocations are invalid: allocations {} and {} have the same set of tags; each allocation must have a unique set of tags.",
                j + 1,
                i + 1
            ));
        }
        sets.push(set);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn v(body: Value) -> Result<Input, Rejected> {
        validate(body.as_object().unwrap())
    }

    fn base() -> Value {
        json!({"ProductCode": "p", "Timestamp": 1700000000.5, "UsageDimension": "nodes"})
    }

    #[test]
    fn shape() {
        let i = v(base()).unwrap();
        assert_eq!(
            (i.timestamp_ms, i.quantity, i.dry_run),
            (1_700_000_000_500, 0, false)
        );
        for (member, bad) in [
            ("Timestamp", json!("2024-01-01T00:00:00Z")),
            ("Timestamp", Value::Null),
            ("UsageDimension", json!("")),
            ("UsageDimension", json!("d".repeat(256))),
            ("UsageQuantity", json!(-1)),
            ("UsageQuantity", json!(2_147_483_648_i64)),
            ("UsageQuantity", json!(1.5)),
            ("DryRun", json!("true")),
            ("ClientToken", json!("t".repeat(65))),
            ("ClientToken", json!("")),
            ("ProductCode", json!("a b")),
            ("UsageAllocations", json!({})),
            ("UsageAllocations", json!([{"Tags": []}])),
            (
                "UsageAllocations",
                json!([{"AllocatedUsageQuantity": 1, "Tags": [{"Key": "k"}]}]),
            ),
        ] {
            let mut body = base();
            body[member] = bad.clone();
            let Err(Rejected(t, m)) = v(body) else {
                panic!("{member}={bad} accepted")
            };
            assert_eq!(t, "ValidationException");
            assert!(m.contains(member), "{member}: {m}");
        }
        let mut body = base();
        body["UsageQuantity"] = json!(MAX_QUANTITY);
        assert!(v(body).is_ok());
    }

    fn with_allocations(quantity: i64, allocations: Value) -> Result<(), MeterError> {
        let mut body = base();
        body["UsageQuantity"] = json!(quantity);
        body["UsageAllocations"] = allocations;
        check_allocations(&v(body).unwrap())
    }

    #[test]
    fn allocation_rules() {
        let tag = |k: &str, v: &str| json!({"Key": k, "Value": v});
        assert!(with_allocations(
            3,
            json!([
                {"AllocatedUsageQuantity": 1},
                {"AllocatedUsageQuantity": 2, "Tags": [tag("team", "blue")]},
            ])
        )
        .is_ok());
        let err = |q, a| with_allocations(q, a).unwrap_err().error_type;
        assert_eq!(
            err(3, json!([{"AllocatedUsageQuantity": 2}])),
            "InvalidUsageAllocationsException"
        );
        assert_eq!(err(0, json!([])), "InvalidUsageAllocationsException");
        assert_eq!(
            err(
                2,
                json!([{"AllocatedUsageQuantity": 1}, {"AllocatedUsageQuantity": 1}])
            ),
            "InvalidUsageAllocationsException"
        );
        // The same set in another order is the same set.
        assert_eq!(
            err(
                2,
                json!([
                    {"AllocatedUsageQuantity": 1, "Tags": [tag("a", "1"), tag("b", "2")]},
                    {"AllocatedUsageQuantity": 1, "Tags": [tag("b", "2"), tag("a", "1")]},
                ])
            ),
            "InvalidUsageAllocationsException"
        );
        let six: Vec<Value> = (0..6).map(|i| tag(&format!("k{i}"), "v")).collect();
        for tags in [
            json!([]),
            json!(six),
            json!([tag(&"k".repeat(101), "v")]),
            json!([tag("k", &"v".repeat(257))]),
            json!([tag("k", "")]),
            json!([tag("k~", "v")]),
            json!([tag("k", "v"), tag("k", "w")]),
        ] {
            assert_eq!(
                err(1, json!([{"AllocatedUsageQuantity": 1, "Tags": tags}])),
                "InvalidTagException",
                "{tags}"
            );
        }
        let at_most: Vec<Value> = (0..5).map(|i| tag(&format!("k{i}"), "v")).collect();
        assert!(
            with_allocations(1, json!([{"AllocatedUsageQuantity": 1, "Tags": at_most}])).is_ok()
        );
        assert!(with_allocations(
            1,
            json!([{"AllocatedUsageQuantity": 1, "Tags": [tag(&"k".repeat(100), &"v ,;<=".repeat(42))]}])
        )
        .is_ok());
    }
}
