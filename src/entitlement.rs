//! Owns contract pricing's entitlement specs: `NAME`, `NAME=VALUE` and `NAME=VALUE:UNIT`.

use aws_sdk_licensemanager::types::EntitlementDataUnit;

/// More than any contract product defines; bounds what an environment variable can ask for.
const MAX_ENTITLEMENTS: usize = 32;
/// Entitlement names are dimension API names (AWS Marketplace: at most 100 characters).
const MAX_NAME_CHARS: usize = 255;
const MAX_VALUE_DIGITS: usize = 18;

/// One entitlement to check out, as License Manager's `EntitlementData` takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entitlement {
    pub name: String,
    /// `None` for a feature (`Unit: None`): the license must include it, nothing is counted.
    pub value: Option<String>,
    /// One of the model's `EntitlementDataUnit` values, spelled as the API spells it.
    pub unit: String,
}

/// A spec mpgate cannot use; always a usage error (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("invalid entitlement {spec:?}: {reason}")]
pub struct SpecError {
    pub spec: String,
    pub reason: String,
}

/// Parses the specs, in order; at least one, no name twice.
pub fn parse_all<'a>(
    specs: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<Entitlement>, SpecError> {
    let mut out: Vec<Entitlement> = Vec::new();
    for spec in specs {
        let entitlement = parse(spec)?;
        if out.iter().any(|e| e.name == entitlement.name) {
            return Err(error(
                spec,
                "the name is given twice: ask for each entitlement once",
            ));
        }
        out.push(entitlement);
        if out.len() > MAX_ENTITLEMENTS {
            return Err(error(
                spec,
                &format!("at most {MAX_ENTITLEMENTS} entitlements can be checked out at once"),
            ));
        }
    }
    Ok(out)
}

fn error(spec: &str, reason: &str) -> SpecError {
    SpecError {
        spec: spec.chars().take(80).collect(),
        reason: reason.into(),
    }
}

/// `NAME` (a feature), `NAME=VALUE` (VALUE of a counted entitlement), `NAME=VALUE:UNIT`.
pub fn parse(spec: &str) -> Result<Entitlement, SpecError> {
    let spec = spec.trim();
    let (name, rest) = match spec.split_once('=') {
        Some((name, rest)) => (name, Some(rest)),
        None => (spec, None),
    };
    if name.is_empty()
        || name.chars().count() > MAX_NAME_CHARS
        || name.chars().any(|c| c.is_control() || c == ',' || c == ':')
    {
        return Err(error(spec, "the name must be the entitlement's API name from the AWS Marketplace Management Portal (no commas, colons or control characters)"));
    }
    let Some(rest) = rest else {
        return Ok(Entitlement {
            name: name.into(),
            value: None,
            unit: EntitlementDataUnit::None.as_str().into(),
        });
    };
    let (value, unit) = match rest.split_once(':') {
        Some((value, unit)) => (value, unit),
        None => (rest, EntitlementDataUnit::Count.as_str()),
    };
    if !EntitlementDataUnit::values().contains(&unit) {
        return Err(error(spec, &format!("unknown unit {unit:?}: use one of License Manager's units, e.g. Count, Gigabytes, Bits/Second")));
    }
    if unit == EntitlementDataUnit::None.as_str() {
        return Err(error(
            spec,
            "a feature (unit None) takes no value: write the name alone",
        ));
    }
    let digits = !value.is_empty()
        && value.len() <= MAX_VALUE_DIGITS
        && value.bytes().all(|b| b.is_ascii_digit());
    if !digits || value.bytes().all(|b| b == b'0') {
        return Err(error(
            spec,
            "the value must be a whole number of units, 1 or more, e.g. Seats=1",
        ));
    }
    Ok(Entitlement {
        name: name.into(),
        value: Some(value.trim_start_matches('0').into()),
        unit: unit.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(spec: &str) -> (String, Option<String>, String) {
        let e = parse(spec).unwrap();
        (e.name, e.value, e.unit)
    }

    #[test]
    fn each_form_maps_to_the_unit_license_manager_takes() {
        assert_eq!(ok("Basic"), ("Basic".into(), None, "None".into()));
        assert_eq!(
            ok("Seats=3"),
            ("Seats".into(), Some("3".into()), "Count".into())
        );
        assert_eq!(
            ok("Storage=500:Gigabytes"),
            ("Storage".into(), Some("500".into()), "Gigabytes".into())
        );
        assert_eq!(
            ok("Rate=10:Bits/Second"),
            ("Rate".into(), Some("10".into()), "Bits/Second".into())
        );
    }

    #[test]
    fn bad_specs_say_what_to_write() {
        for (spec, says) in [
            ("", "API name"),
            ("=3", "API name"),
            ("a,b", "API name"),
            ("Seats=", "whole number"),
            ("Seats=0", "whole number"),
            ("Seats=-1", "whole number"),
            ("Seats=1.5", "whole number"),
            ("Seats=1:count", "unknown unit"),
            ("Seats=1:Furlongs", "unknown unit"),
            ("Basic=1:None", "takes no value"),
            ("Seats=1234567890123456789", "whole number"),
        ] {
            let e = parse(spec).unwrap_err().to_string();
            assert!(e.contains(says), "{spec:?}: {e}");
        }
        let e = parse_all(["Seats=1", "Seats=2"]).unwrap_err().to_string();
        assert!(e.contains("twice"), "{e}");
        let many: Vec<String> = (0..40).map(|i| format!("F{i}")).collect();
        assert!(parse_all(many.iter().map(String::as_str)).is_err());
    }
}
