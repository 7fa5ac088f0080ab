//! Owns the faults of the token exchange: `--license-fault GetAccessToken=…`, `--sts-fault`.

use std::str::FromStr;

use serde_json::{json, Value};

use crate::fault::{by_name, schedule, scheduled};
use crate::ops::anywhere::Op;
use crate::ops::license::{LicenseFault, LmError};

/// What a faulted GetAccessToken or AssumeRoleWithWebIdentity gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnywhereFault {
    // --- GetAccessToken's modelled errors (License Manager's JSON errors) ---
    Validation,
    Authorization,
    /// License Manager's `AccessDeniedException`; for STS its `AccessDenied`, what AWS answers
    /// a role that does not trust the token (a common error, not in the model's list).
    AccessDenied,
    RateLimitExceeded,
    ServerInternal,
    // --- AssumeRoleWithWebIdentity's modelled errors (STS's XML errors) ---
    ExpiredToken,
    IdpCommunicationError,
    IdpRejectedClaim,
    InvalidIdentityToken,
    MalformedPolicyDocument,
    PackedPolicyTooLarge,
    RegionDisabled,
    /// STS's common `Throttling` error ("Rate exceeded").
    Throttling,
    // --- both ---
    /// A load balancer's 503 HTML page.
    Http503Html,
    /// No answer, the connection kept open.
    Hang,
    /// The connection closed without an answer.
    Drop,
}

/// Every fault, in the order `--help` and `--list-faults` list them.
pub const ALL_ANYWHERE_FAULTS: &[AnywhereFault] = &[
    AnywhereFault::Validation,
    AnywhereFault::Authorization,
    AnywhereFault::AccessDenied,
    AnywhereFault::RateLimitExceeded,
    AnywhereFault::ServerInternal,
    AnywhereFault::ExpiredToken,
    AnywhereFault::IdpCommunicationError,
    AnywhereFault::IdpRejectedClaim,
    AnywhereFault::InvalidIdentityToken,
    AnywhereFault::MalformedPolicyDocument,
    AnywhereFault::PackedPolicyTooLarge,
    AnywhereFault::RegionDisabled,
    AnywhereFault::Throttling,
    AnywhereFault::Http503Html,
    AnywhereFault::Hang,
    AnywhereFault::Drop,
];

/// An STS error as the awsQuery protocol sends it: status, `Type`, `Code`, `Message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StsError {
    pub status: u16,
    /// `Sender` (the caller's fault) or `Receiver` (STS's).
    pub kind: &'static str,
    pub code: &'static str,
    pub message: String,
}

pub(crate) fn sts_error(status: u16, code: &'static str, message: impl Into<String>) -> StsError {
    StsError {
        status,
        kind: if status >= 500 { "Receiver" } else { "Sender" },
        code,
        message: message.into(),
    }
}

/// The `AccessDenied` STS answers a role that does not exist or does not trust the caller.
pub(crate) fn not_authorized() -> StsError {
    sts_error(
        403,
        "AccessDenied",
        "Not authorized to perform sts:AssumeRoleWithWebIdentity",
    )
}

/// A fault's error answer: License Manager's for GetAccessToken, STS's for
/// AssumeRoleWithWebIdentity.
pub(crate) enum FaultAnswer {
    License(LmError),
    Sts(StsError),
    /// The network faults: the answer is a page, or none.
    Network,
}

impl AnywhereFault {
    pub fn name(self) -> &'static str {
        match self {
            AnywhereFault::Validation => "validation",
            AnywhereFault::Authorization => "authorization",
            AnywhereFault::AccessDenied => "access-denied",
            AnywhereFault::RateLimitExceeded => "rate-limit-exceeded",
            AnywhereFault::ServerInternal => "server-internal",
            AnywhereFault::ExpiredToken => "expired-token",
            AnywhereFault::IdpCommunicationError => "idp-communication-error",
            AnywhereFault::IdpRejectedClaim => "idp-rejected-claim",
            AnywhereFault::InvalidIdentityToken => "invalid-identity-token",
            AnywhereFault::MalformedPolicyDocument => "malformed-policy-document",
            AnywhereFault::PackedPolicyTooLarge => "packed-policy-too-large",
            AnywhereFault::RegionDisabled => "region-disabled",
            AnywhereFault::Throttling => "throttling",
            AnywhereFault::Http503Html => "http-503-html",
            AnywhereFault::Hang => "hang",
            AnywhereFault::Drop => "drop",
        }
    }

    /// The operations whose model lists the error (both for the network faults).
    pub fn operations(self) -> &'static [Op] {
        use AnywhereFault::*;
        match self {
            Validation | Authorization | RateLimitExceeded | ServerInternal => {
                &[Op::GetAccessToken]
            }
            ExpiredToken
            | IdpCommunicationError
            | IdpRejectedClaim
            | InvalidIdentityToken
            | MalformedPolicyDocument
            | PackedPolicyTooLarge
            | RegionDisabled
            | Throttling => &[Op::AssumeRoleWithWebIdentity],
            AccessDenied | Http503Html | Hang | Drop => {
                &[Op::GetAccessToken, Op::AssumeRoleWithWebIdentity]
            }
        }
    }

    /// What `op` answers under this fault.
    pub(crate) fn answer(self, op: Op) -> FaultAnswer {
        let license =
            |f: LicenseFault| f.error().map_or(FaultAnswer::Network, FaultAnswer::License);
        match (op, self) {
            (Op::GetAccessToken, AnywhereFault::Validation) => license(LicenseFault::Validation),
            (Op::GetAccessToken, AnywhereFault::Authorization) => {
                license(LicenseFault::Authorization)
            }
            (Op::GetAccessToken, AnywhereFault::AccessDenied) => {
                let mut e = LicenseFault::AccessDenied.error();
                if let Some(e) = e.as_mut() {
                    e.message = "Access to resource denied.".into();
                }
                e.map_or(FaultAnswer::Network, FaultAnswer::License)
            }
            (Op::GetAccessToken, AnywhereFault::RateLimitExceeded) => {
                license(LicenseFault::RateLimitExceeded)
            }
            (Op::GetAccessToken, AnywhereFault::ServerInternal) => {
                license(LicenseFault::ServerInternal)
            }
            (Op::AssumeRoleWithWebIdentity, f) => match f.sts_error() {
                Some(e) => FaultAnswer::Sts(e),
                None => FaultAnswer::Network,
            },
            _ => FaultAnswer::Network,
        }
    }

    /// STS's error for this fault (statuses and codes from botocore's sts model; messages as
    /// AWS words them where known).
    pub fn sts_error(self) -> Option<StsError> {
        Some(match self {
            AnywhereFault::AccessDenied => not_authorized(),
            AnywhereFault::ExpiredToken => sts_error(
                400,
                "ExpiredTokenException",
                "Token expired: current date/time must be before the expiration date/time.",
            ),
            AnywhereFault::IdpCommunicationError => sts_error(
                400,
                "IDPCommunicationError",
                "Couldn't retrieve verification key from your identity provider, please reference AssumeRoleWithWebIdentity documentation for requirements",
            ),
            AnywhereFault::IdpRejectedClaim => sts_error(
                403,
                "IDPRejectedClaim",
                "The identity provider rejected the claim in the web identity token.",
            ),
            AnywhereFault::InvalidIdentityToken => sts_error(
                400,
                "InvalidIdentityToken",
                "The web identity token that was passed could not be validated by Amazon Web Services. Get a new identity token from the identity provider and then retry the request.",
            ),
            AnywhereFault::MalformedPolicyDocument => sts_error(
                400,
                "MalformedPolicyDocument",
                "The request was rejected because the policy document was malformed.",
            ),
            AnywhereFault::PackedPolicyTooLarge => sts_error(
                400,
                "PackedPolicyTooLarge",
                "The request was rejected because the total packed size of the session policies and session tags combined was too large.",
            ),
            AnywhereFault::RegionDisabled => sts_error(
                403,
                "RegionDisabledException",
                "STS is not activated in this region for account. Your account administrator can activate STS in this region using the IAM Console.",
            ),
            AnywhereFault::Throttling => sts_error(400, "Throttling", "Rate exceeded"),
            _ => return None,
        })
    }

    /// Lines of `--list-faults`: one per operation the fault applies to, kind
    /// `license-token` (GetAccessToken's errors) or `sts`; the network faults are listed as
    /// the Metering faults of the same names.
    pub fn listing(self) -> Vec<Value> {
        self.operations()
            .iter()
            .filter_map(|op| {
                let (kind, status, error_type) = match self.answer(*op) {
                    FaultAnswer::License(e) => ("license-token", e.status, e.error_type),
                    FaultAnswer::Sts(e) => ("sts", e.status, e.code),
                    FaultAnswer::Network => return None,
                };
                Some(json!({
                    "name": self.name(),
                    "kind": kind,
                    "status": status,
                    "errorType": error_type,
                    "operations": [op.name()],
                }))
            })
            .collect()
    }
}

impl FromStr for AnywhereFault {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        by_name(ALL_ANYWHERE_FAULTS, AnywhereFault::name, s, "fault")
    }
}

/// `--license-fault GetAccessToken=FAULT[@AFTER][*COUNT]` or `--sts-fault
/// AssumeRoleWithWebIdentity=FAULT[@AFTER][*COUNT]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnywhereFaultSpec {
    pub op: Op,
    pub fault: AnywhereFault,
    /// The first `after` calls of the operation that reached the faults are answered normally.
    pub after: u64,
    /// Only `count` calls fail (`None`: every later one).
    pub count: Option<u64>,
}

impl AnywhereFaultSpec {
    /// Parses a spec whose operation must be `op`.
    pub fn parse(spec: &str, op: Op) -> Result<AnywhereFaultSpec, String> {
        let usage = format!("expected {}=FAULT[@AFTER][*COUNT]", op.name());
        let (name, rest) = spec
            .split_once('=')
            .ok_or_else(|| format!("invalid fault {spec:?} ({usage})"))?;
        if name != op.name() {
            return Err(format!("unknown operation {name:?} ({usage})"));
        }
        let (fault, after, count) = schedule(rest, spec)?;
        let fault: AnywhereFault = fault
            .parse()
            .map_err(|_| format!("unknown fault {fault:?} for {} (see --help)", op.name()))?;
        if !fault.operations().contains(&op) {
            return Err(format!(
                "{} is not an error {} returns (see --help for its faults)",
                fault.name(),
                op.name()
            ));
        }
        Ok(AnywhereFaultSpec {
            op,
            fault,
            after,
            count,
        })
    }

    pub(super) fn applies(&self, n: u64) -> bool {
        scheduled(self.after, self.count, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_name_only_the_errors_the_operation_returns() {
        let f = AnywhereFaultSpec::parse(
            "AssumeRoleWithWebIdentity=idp-communication-error@1*2",
            Op::AssumeRoleWithWebIdentity,
        )
        .unwrap();
        assert_eq!(
            (f.fault, f.after, f.count),
            (AnywhereFault::IdpCommunicationError, 1, Some(2))
        );
        assert!(!f.applies(1) && f.applies(2) && f.applies(3) && !f.applies(4));
        assert!(
            AnywhereFaultSpec::parse("GetAccessToken=access-denied", Op::GetAccessToken).is_ok()
        );
        for (bad, op) in [
            ("GetAccessToken=idp-rejected-claim", Op::GetAccessToken),
            (
                "AssumeRoleWithWebIdentity=server-internal",
                Op::AssumeRoleWithWebIdentity,
            ),
            ("GetAccessToken=validation", Op::AssumeRoleWithWebIdentity),
            ("GetAccessToken=nope", Op::GetAccessToken),
            ("GetAccessToken=hang*0", Op::GetAccessToken),
            ("GetAccessToken", Op::GetAccessToken),
        ] {
            assert!(AnywhereFaultSpec::parse(bad, op).is_err(), "{bad}");
        }
        for f in ALL_ANYWHERE_FAULTS {
            assert_eq!(f.name().parse::<AnywhereFault>(), Ok(*f));
        }
    }
}
