//! Owns the hand-over plan: a decision turned into exit 0, exec or supervise with duties, and the proof variables the workload gets.

use mpgate_proof::var;

use crate::check::Decision;
use crate::license::{self, Checkout};
use crate::outcome::Outcome;
use crate::report::now_rfc3339;

/// A checkout's proof variables (the hourly ones are the proof crate's, which re-checks them).
const LICENSE_ARN: &str = "MPGATE_LICENSE_ARN";
const LICENSE_ENTITLEMENTS: &str = "MPGATE_LICENSE_ENTITLEMENTS";
const LICENSE_EXPIRATION: &str = "MPGATE_LICENSE_EXPIRATION";
const LICENSE_TOKEN: &str = "MPGATE_LICENSE_TOKEN";
/// The nonce itself, which mpgate handed over before the hand-over was bound to the process:
/// never set now, and removed, so an inherited one is not taken for a proof.
const NONCE: &str = "MPGATE_NONCE";

/// The variables a hand-over may set: each one not set is removed, so a value inherited from
/// the environment never passes for a proof (nor an inherited descriptor for a held seat's
/// heartbeat: only `--seat hold` sets `MPGATE_LEASE_FD`).
pub const PROOF_VARIABLES: [&str; 8] = [
    NONCE,
    var::SALT,
    var::SIGNATURE,
    LICENSE_ARN,
    LICENSE_ENTITLEMENTS,
    LICENSE_EXPIRATION,
    LICENSE_TOKEN,
    mpgate_proof::lease::VAR,
];

/// What a checkout tells the workload and the result file.
#[derive(Debug, Clone)]
pub struct LicenseFacts {
    pub arn: String,
    pub entitlements: serde_json::Value,
    pub expiration: String,
    pub signed_token: Option<String>,
    pub checked_in: bool,
    /// When the checkout was verified (kept when a hold rewrites the result file).
    pub verified_at: Option<String>,
}

impl LicenseFacts {
    pub fn of(checkout: &Checkout, checked_in: bool) -> Self {
        LicenseFacts {
            arn: checkout.license_arn.clone(),
            entitlements: serde_json::to_value(&checkout.entitlements).unwrap_or_default(),
            expiration: license::rfc3339(checkout.expiration),
            signed_token: checkout.signed_token.clone(),
            checked_in,
            verified_at: now_rfc3339(),
        }
    }
}

/// What the workload is told: MPGATE_ENTITLEMENT, and the proof of the check that passed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Environment {
    pub set: Vec<(&'static str, String)>,
    /// Every proof variable not set.
    pub remove: Vec<&'static str>,
}

impl Environment {
    /// `entitlement` is `Verified` or `Unverified` (its name is the value); `hourly` the salt
    /// (whose nonce is bound to the process about to be exec'd) and the signature of a
    /// verified RegisterUsage token; `license` a checkout's facts.
    pub fn of(
        entitlement: Outcome,
        hourly: Option<(&str, &str)>,
        license: Option<&LicenseFacts>,
    ) -> Self {
        let mut set: Vec<(&'static str, String)> =
            vec![(var::ENTITLEMENT, entitlement.as_str().into())];
        if let Some((salt, signature)) = hourly {
            set.extend([(var::SALT, salt.into()), (var::SIGNATURE, signature.into())]);
        }
        if let Some(l) = license {
            set.extend([
                (LICENSE_ARN, l.arn.clone()),
                (LICENSE_ENTITLEMENTS, l.entitlements.to_string()),
                (LICENSE_EXPIRATION, l.expiration.clone()),
            ]);
            if let Some(token) = &l.signed_token {
                set.push((LICENSE_TOKEN, token.clone()));
            }
        }
        let remove = PROOF_VARIABLES
            .into_iter()
            .filter(|name| !set.iter().any(|(set, _)| set == name))
            .collect();
        Environment { set, remove }
    }

    /// `set` as the process layer takes it.
    pub fn pairs(&self) -> Vec<(&str, &str)> {
        self.set.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }
}

/// The duties that run beside a supervised workload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Duties {
    /// `--seat hold`: the seat is extended while the workload runs and checked in at the end.
    pub lease: bool,
    /// Usage pricing: the metering agent takes usage in and sends it hourly.
    pub meter: bool,
}

/// What the hand-over does once the result is reported.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// Init mode (no COMMAND): exit 0.
    Exit,
    /// Replace mpgate with the workload.
    Exec,
    /// Run the workload as mpgate's child, the duties beside it.
    Supervise(Duties),
    /// No workload (usage pricing without COMMAND): the metering agent alone, for the pod's
    /// other containers, until SIGTERM.
    Sidecar,
}

impl Plan {
    /// The plan for a decision that let the workload start.
    pub fn of(decision: &Decision, has_command: bool) -> Plan {
        let duties = Duties {
            lease: matches!(decision, Decision::Held { .. }),
            meter: matches!(decision, Decision::Metered { .. }),
        };
        match (has_command, duties) {
            (false, Duties { meter: true, .. }) => Plan::Sidecar,
            (false, _) => Plan::Exit,
            (
                true,
                Duties {
                    lease: false,
                    meter: false,
                },
            ) => Plan::Exec,
            (true, duties) => Plan::Supervise(duties),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn license(signed_token: Option<&str>) -> LicenseFacts {
        LicenseFacts {
            arn: "arn:aws:license-manager::1:license:l-1".into(),
            entitlements: serde_json::json!([{"Name": "Seat", "Unit": "Count"}]),
            expiration: "2030-01-01T00:00:00Z".into(),
            signed_token: signed_token.map(str::to_string),
            checked_in: false,
            verified_at: None,
        }
    }

    fn names(env: &Environment) -> Vec<&'static str> {
        env.set.iter().map(|(name, _)| *name).collect()
    }

    /// Every proof variable is either set or removed, never both, never left as inherited.
    fn covers_every_proof_variable(env: &Environment) {
        for name in PROOF_VARIABLES {
            let set = env.set.iter().any(|(n, _)| *n == name);
            let removed = env.remove.contains(&name);
            assert!(set != removed, "{name}: set {set}, removed {removed}");
        }
        assert!(!env.remove.contains(&"MPGATE_ENTITLEMENT"));
    }

    #[test]
    fn a_verified_token_gives_its_salt_and_signature_and_removes_the_rest() {
        let env = Environment::of(Outcome::Verified, Some(("s4lt", "sig")), None);
        assert_eq!(
            env.set,
            [
                ("MPGATE_ENTITLEMENT", "verified".to_string()),
                ("MPGATE_SALT", "s4lt".into()),
                ("MPGATE_SIGNATURE", "sig".into()),
            ]
        );
        assert_eq!(
            env.remove,
            [
                "MPGATE_NONCE",
                "MPGATE_LICENSE_ARN",
                "MPGATE_LICENSE_ENTITLEMENTS",
                "MPGATE_LICENSE_EXPIRATION",
                "MPGATE_LICENSE_TOKEN",
                "MPGATE_LEASE_FD"
            ]
        );
        covers_every_proof_variable(&env);
    }

    #[test]
    fn a_checkout_gives_its_license_and_token_and_removes_the_hourly_proof() {
        let env = Environment::of(Outcome::Verified, None, Some(&license(Some("signed"))));
        assert_eq!(
            names(&env),
            [
                "MPGATE_ENTITLEMENT",
                "MPGATE_LICENSE_ARN",
                "MPGATE_LICENSE_ENTITLEMENTS",
                "MPGATE_LICENSE_EXPIRATION",
                "MPGATE_LICENSE_TOKEN"
            ]
        );
        assert_eq!(env.set[2].1, r#"[{"Name":"Seat","Unit":"Count"}]"#);
        // A held seat's heartbeat is set by the supervisor (handover::Hold), over this.
        assert_eq!(
            env.remove,
            [
                "MPGATE_NONCE",
                "MPGATE_SALT",
                "MPGATE_SIGNATURE",
                "MPGATE_LEASE_FD"
            ]
        );
        covers_every_proof_variable(&env);
        // Without a signed token, an inherited one is removed.
        let env = Environment::of(Outcome::Verified, None, Some(&license(None)));
        assert!(env.remove.contains(&"MPGATE_LICENSE_TOKEN"));
        covers_every_proof_variable(&env);
    }

    #[test]
    fn an_unverified_start_gives_no_proof_at_all() {
        let env = Environment::of(Outcome::Unverified, None, None);
        assert_eq!(env.set, [("MPGATE_ENTITLEMENT", "unverified".to_string())]);
        assert_eq!(env.remove, PROOF_VARIABLES);
        covers_every_proof_variable(&env);
    }

    #[test]
    fn the_plan_execs_supervises_a_held_seat_or_exits_in_init_mode() {
        let verified = Decision::Verified {
            signature: "sig".into(),
        };
        let held = Decision::Held {
            checkout: Err("unreachable".into()),
            client_token: "t".into(),
        };
        let unverified = Decision::Unverified {
            reason: "unreachable".into(),
        };
        assert_eq!(Plan::of(&verified, true), Plan::Exec);
        assert_eq!(Plan::of(&unverified, true), Plan::Exec);
        assert_eq!(
            Plan::of(&held, true),
            Plan::Supervise(Duties {
                lease: true,
                meter: false
            })
        );
        let metered = Decision::Metered { unverified: None };
        assert_eq!(
            Plan::of(&metered, true),
            Plan::Supervise(Duties {
                lease: false,
                meter: true
            })
        );
        assert_eq!(Plan::of(&metered, false), Plan::Sidecar);
        for decision in [verified, held, unverified] {
            assert_eq!(Plan::of(&decision, false), Plan::Exit);
        }
    }
}
