//! Owns what License Manager's answers must hold: the checkout, the extension, and their times.

use std::time::{Duration, Instant, SystemTime};

use aws_sdk_licensemanager::{
    operation::{
        checkout_license::CheckoutLicenseOutput,
        extend_license_consumption::ExtendLicenseConsumptionOutput,
    },
    types::CheckoutType,
};
use aws_smithy_types::date_time::{DateTime, Format};
use serde::Serialize;

use crate::config::Contract;

/// The model's bound on `Expiration` (ISO8601DateTime: at most 50 characters).
const MAX_TIMESTAMP_CHARS: usize = 50;
/// Bounds on what the answer hands on: ARNs are at most 2048 characters in the model.
const MAX_ARN_CHARS: usize = 2048;
const MAX_CONSUMPTION_TOKEN_CHARS: usize = 4096;

/// An entitlement the license allowed, as the workload gets it (`MPGATE_LICENSE_ENTITLEMENTS`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct Allowed {
    pub name: String,
    pub unit: String,
    pub value: Option<String>,
}

/// A checked-out consumption: what the answer held, checked.
#[derive(Debug, Clone)]
pub struct Checkout {
    pub license_arn: String,
    pub consumption_token: String,
    pub entitlements: Vec<Allowed>,
    /// `Expiration` as License Manager wrote it (for the workload and the result file).
    pub expiration: SystemTime,
    /// When the consumption expires on this node's monotonic clock (never later than it does).
    pub expires_at: Instant,
    /// The `SignedToken`: handed to the workload, never logged.
    pub signed_token: Option<String>,
}

/// A renewed consumption.
#[derive(Debug)]
pub struct Extension {
    pub consumption_token: String,
    pub expiration: SystemTime,
    pub expires_at: Instant,
}

/// License Manager's clock read against this node's monotonic one, from a checkout answer:
/// seat timing never uses the node's wall clock, which the buyer may set.
#[derive(Debug, Clone, Copy)]
pub struct Anchor {
    /// License Manager's time at `local` at the latest: the answer's `IssuedAt` (plus its
    /// precision: a whole-second `IssuedAt` may be up to a second behind).
    server: SystemTime,
    /// When the checkout was sent: License Manager issued it no earlier.
    local: Instant,
}

impl Anchor {
    /// When License Manager's time `at` comes on the monotonic clock: never later than it does.
    pub fn instant_of(&self, at: SystemTime) -> Instant {
        match at.duration_since(self.server) {
            Ok(ahead) => self.local + ahead,
            Err(behind) => self
                .local
                .checked_sub(behind.duration())
                .unwrap_or(self.local),
        }
    }

    /// From a checkout sent at `sent`: its `IssuedAt`, or without one (the model makes every
    /// member optional) this node's clock when it was sent.
    pub fn of(issued_at: Option<SystemTime>, sent: Instant, sent_wall: SystemTime) -> Anchor {
        let server = match issued_at {
            Some(at)
                if at
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .is_ok_and(|d| d.subsec_nanos() == 0) =>
            {
                at + Duration::from_secs(1)
            }
            Some(at) => at,
            None => sent_wall,
        };
        Anchor {
            server,
            local: sent,
        }
    }
}

/// What a checkout answer (to a call sent at `sent`) must hold before the workload may start.
pub fn checked(
    out: CheckoutLicenseOutput,
    contract: &Contract,
    (sent, sent_wall): (Instant, SystemTime),
) -> Result<(Checkout, Anchor), String> {
    match out.checkout_type() {
        Some(CheckoutType::Provisional) => {}
        Some(_) => return Err("the checkout is not PROVISIONAL".into()),
        None => return Err("no checkout type (PROVISIONAL was asked for)".into()),
    }
    let license_arn = out
        .license_arn()
        .filter(|arn| is_license_arn(arn))
        .ok_or("no license ARN")?
        .to_owned();
    let consumption_token = out
        .license_consumption_token()
        .filter(|t| !t.is_empty() && t.len() <= MAX_CONSUMPTION_TOKEN_CHARS)
        .ok_or("no license consumption token")?
        .to_owned();
    let allowed: Vec<Allowed> = out
        .entitlements_allowed()
        .iter()
        .map(|e| Allowed {
            name: e.name().to_owned(),
            unit: e.unit().as_str().to_owned(),
            value: e.value().map(str::to_owned),
        })
        .collect();
    // Every entitlement asked for, with its unit and at least the value asked for: AWS
    // answers NoEntitlementsAllowedException otherwise, so a success without one is not AWS's.
    let mut entitlements = Vec::with_capacity(contract.entitlements.len());
    for wanted in &contract.entitlements {
        let granted = allowed
            .iter()
            .find(|a| a.name == wanted.name && a.unit == wanted.unit)
            .filter(|a| match &wanted.value {
                None => true,
                Some(value) => a.value.as_deref().and_then(amount) >= amount(value),
            })
            .ok_or_else(|| format!("entitlement {} is not among those allowed", wanted.name))?;
        entitlements.push(granted.clone());
    }
    let expiration = out.expiration().ok_or("no expiration")?;
    let expiration = parse_expiration(expiration)?;
    let issued_at = out.issued_at().map(parse_expiration).transpose()?;
    let anchor = Anchor::of(issued_at, sent, sent_wall);
    let expires_at = anchor.instant_of(expiration);
    if expires_at <= sent {
        return Err(match issued_at {
            Some(issued_at) => format!(
                "the checkout expired at {}, no later than it was issued ({})",
                rfc3339(expiration),
                rfc3339(issued_at)
            ),
            // Without IssuedAt only the node's clock can tell.
            None => format!(
                "the checkout expired at {} before it arrived: check the node's clock (NTP, chrony)",
                rfc3339(expiration)
            ),
        });
    }
    let checkout = Checkout {
        license_arn,
        consumption_token,
        entitlements,
        expiration,
        expires_at,
        signed_token: out.signed_token().map(str::to_owned),
    };
    Ok((checkout, anchor))
}

/// A License Manager license ARN: `arn:PARTITION:license-manager:[REGION]:ACCOUNT:license:l-ID`
/// (a 12-digit account, a 32-hex-digit ID), as AWS and the emulator write it.
fn is_license_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [prefix, partition, service, region, account, resource] = parts[..] else {
        return false;
    };
    let label = |s: &str| {
        !s.is_empty()
            && s.split('-').all(|l| {
                !l.is_empty()
                    && l.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            })
    };
    let id = resource.strip_prefix("license:l-").unwrap_or_default();
    arn.len() <= MAX_ARN_CHARS
        && prefix == "arn"
        && label(partition)
        && service == "license-manager"
        && (region.is_empty() || label(region))
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn amount(value: &str) -> Option<u64> {
    value.parse().ok()
}

/// License Manager's `Expiration`: RFC 3339 (ExtendLicenseConsumption) or the same without a
/// zone, meaning UTC (CheckoutLicense answers so, against its own model's pattern).
pub fn parse_expiration(text: &str) -> Result<SystemTime, String> {
    let bad = || {
        format!(
            "the expiration {:?} is not a timestamp",
            text.chars().take(MAX_TIMESTAMP_CHARS).collect::<String>()
        )
    };
    if text.len() > MAX_TIMESTAMP_CHARS {
        return Err(bad());
    }
    let parsed = DateTime::from_str(text, Format::DateTimeWithOffset)
        .or_else(|_| DateTime::from_str(&format!("{text}Z"), Format::DateTime))
        .map_err(|_| bad())?;
    SystemTime::try_from(parsed).map_err(|_| bad())
}

/// A time as RFC 3339 in UTC (`2026-12-01T15:04:05Z`).
pub fn rfc3339(time: SystemTime) -> String {
    DateTime::from(time)
        .fmt(Format::DateTime)
        .unwrap_or_default()
}

/// What an extension answer must hold, as a checkout's: a consumption token (License
/// Manager may retire the one it was asked with, so an answer without one leaves none
/// known to be valid) and an expiration to come, on the monotonic clock.
pub fn extended(
    anchor: &Anchor,
    out: &ExtendLicenseConsumptionOutput,
) -> Result<Extension, String> {
    let consumption_token = out
        .license_consumption_token()
        .filter(|t| !t.is_empty() && t.len() <= MAX_CONSUMPTION_TOKEN_CHARS)
        .ok_or("no license consumption token")?
        .to_owned();
    let expiration = parse_expiration(out.expiration().ok_or("no expiration")?)?;
    let expires_at = anchor.instant_of(expiration);
    if expires_at <= Instant::now() {
        return Err(format!(
            "the extension expired at {} before it arrived",
            rfc3339(expiration)
        ));
    }
    Ok(Extension {
        consumption_token,
        expiration,
        expires_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_licensemanager::types::{EntitlementData, EntitlementDataUnit};

    #[test]
    fn both_expiration_formats_are_read_as_utc() {
        let at = |s: &str| {
            parse_expiration(s)
                .unwrap()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs()
        };
        // 2026-12-01T14:15:27Z
        let expected = 1_796_134_527;
        assert_eq!(at("2026-12-01T14:15:27"), expected);
        assert_eq!(at("2026-12-01T14:15:27.110091"), expected);
        assert_eq!(at("2026-12-01T14:15:27Z"), expected);
        assert_eq!(at("2026-12-01T15:15:27+01:00"), expected);
        for bad in [
            "",
            "2026-12-01 14:15:27",
            "tomorrow",
            "2026-12-01T14:15:27ZZ",
            &"9".repeat(60),
        ] {
            assert!(parse_expiration(bad).is_err(), "{bad:?}");
        }
    }

    fn allowed(name: &str, unit: EntitlementDataUnit, value: Option<&str>) -> EntitlementData {
        EntitlementData::builder()
            .name(name)
            .unit(unit)
            .set_value(value.map(str::to_owned))
            .build()
            .unwrap()
    }

    fn answer(
        edit: impl FnOnce(
            aws_sdk_licensemanager::operation::checkout_license::builders::CheckoutLicenseOutputBuilder,
        ) -> aws_sdk_licensemanager::operation::checkout_license::builders::CheckoutLicenseOutputBuilder,
    ) -> aws_sdk_licensemanager::operation::checkout_license::CheckoutLicenseOutput {
        edit(
            aws_sdk_licensemanager::operation::checkout_license::CheckoutLicenseOutput::builder()
                .checkout_type(CheckoutType::Provisional)
                .license_arn(
                    "arn:aws:license-manager::294406891311:license:l-0123456789abcdef0123456789abcdef",
                )
                .license_consumption_token("token")
                .entitlements_allowed(allowed("Basic", EntitlementDataUnit::None, None))
                .entitlements_allowed(allowed("Seats", EntitlementDataUnit::Count, Some("2")))
                .expiration("2026-12-01T15:00:00"),
        )
        .build()
    }

    fn contract() -> Contract {
        Contract {
            product_sku: "prod-sku".into(),
            entitlements: crate::entitlement::parse_all(["Basic", "Seats=2"]).unwrap(),
            seat: crate::config::SeatMode::Check,
            grace: Duration::from_secs(30),
        }
    }

    #[test]
    fn seat_timing_comes_from_the_answer_s_own_times_not_the_node_s_clock() {
        // The node's clock a day behind (or ahead): the seat still lasts IssuedAt to
        // Expiration, less a second for a whole-second IssuedAt, from when it was sent.
        let issued = "2026-12-01T14:00:00";
        for node in ["2026-11-30T14:00:00Z", "2026-12-02T14:00:00Z"] {
            let sent = (Instant::now(), parse_expiration(node).unwrap());
            let (ok, anchor) = checked(
                answer(|b| b.issued_at(issued).expiration("2026-12-01T14:10:00")),
                &contract(),
                sent,
            )
            .unwrap();
            assert_eq!(ok.expires_at - sent.0, Duration::from_secs(599), "{node}");
            // An extension's Expiration is read against the same anchor.
            let later = parse_expiration("2026-12-01T15:00:00").unwrap();
            assert_eq!(anchor.instant_of(later) - sent.0, Duration::from_secs(3599));
        }
        // A fractional IssuedAt is exact.
        let sent = (Instant::now(), SystemTime::now());
        let (ok, _) = checked(
            answer(|b| {
                b.issued_at("2026-12-01T14:00:00.5")
                    .expiration("2026-12-01T14:10:00")
            }),
            &contract(),
            sent,
        )
        .unwrap();
        assert_eq!(ok.expires_at - sent.0, Duration::from_millis(599_500));
        // Expired when issued, whatever the node's clock says.
        let e = checked(
            answer(|b| b.issued_at(issued).expiration("2026-12-01T14:00:01")),
            &contract(),
            sent,
        )
        .unwrap_err();
        assert!(e.contains("no later than it was issued"), "{e}");
    }

    #[test]
    fn a_success_answer_must_hold_every_entitlement_an_arn_and_a_future_expiration() {
        let now = parse_expiration("2026-12-01T14:00:00Z").unwrap();
        let sent = (Instant::now(), now);
        let (ok, _) = checked(answer(|b| b), &contract(), sent).unwrap();
        assert_eq!(ok.entitlements.len(), 2);
        assert_eq!(rfc3339(ok.expiration), "2026-12-01T15:00:00Z");
        let refused = |edit: fn(_) -> _, says: &str| {
            let e = checked(answer(edit), &contract(), sent).unwrap_err();
            assert!(e.contains(says), "{e}");
        };
        refused(|b| b.set_license_arn(None), "no license ARN");
        refused(|b| b.license_arn("l-1"), "no license ARN");
        // Only a License Manager license ARN: not any ARN, nor one with a made-up ID.
        refused(|b| b.license_arn("arn:aws:s3:::bucket"), "no license ARN");
        refused(
            |b| b.license_arn("arn:aws:license-manager::294406891311:license:l-1"),
            "no license ARN",
        );
        refused(
            |b| {
                b.license_arn("arn:aws:license-manager::29440689131:license:l-0123456789abcdef0123456789abcdef")
            },
            "no license ARN",
        );
        refused(|b| b.set_checkout_type(None), "no checkout type");
        refused(
            |b| b.set_license_consumption_token(None),
            "consumption token",
        );
        refused(|b| b.set_expiration(None), "no expiration");
        refused(|b| b.expiration("2026-12-01T13:59:59"), "node's clock");
        refused(|b| b.expiration("soon"), "not a timestamp");
        refused(|b| b.checkout_type(CheckoutType::Perpetual), "PROVISIONAL");
        refused(
            |b| b.set_entitlements_allowed(None),
            "entitlement Basic is not among those allowed",
        );
        // Fewer seats than asked for, or the right number in another unit.
        refused(
            |b| {
                b.set_entitlements_allowed(Some(vec![
                    allowed("Basic", EntitlementDataUnit::None, None),
                    allowed("Seats", EntitlementDataUnit::Count, Some("1")),
                ]))
            },
            "entitlement Seats",
        );
        refused(
            |b| {
                b.set_entitlements_allowed(Some(vec![
                    allowed("Basic", EntitlementDataUnit::None, None),
                    allowed("Seats", EntitlementDataUnit::Bytes, Some("2")),
                ]))
            },
            "entitlement Seats",
        );
    }
}
