//! Owns the operations the emulator serves: each one's family, protocol and signing.

pub mod anywhere;
pub mod container_credentials;
pub mod license;
pub mod meter_usage;
pub mod metering;
pub mod validation;

use crate::answer::CONTENT_TYPE_JSON;

/// How an operation is named and its input written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `X-Amz-Target: <prefix><Operation>` and a JSON body (Metering, License Manager).
    AwsJson11,
    /// A form body with `Action=<Operation>` (STS's protocol).
    AwsQuery,
}

impl Protocol {
    /// The request's `Content-Type` (its media type; parameters such as `charset` allowed).
    pub fn content_type(self) -> &'static str {
        match self {
            Protocol::AwsJson11 => CONTENT_TYPE_JSON,
            Protocol::AwsQuery => "application/x-www-form-urlencoded",
        }
    }

    /// Whether a request's `Content-Type` header is this protocol's.
    pub fn accepts(self, content_type: &str) -> bool {
        let media = content_type.split(';').next().unwrap_or("").trim();
        media.eq_ignore_ascii_case(self.content_type())
    }
}

/// An operation the emulator serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Metering's `RegisterUsage`.
    RegisterUsage,
    /// Metering's `MeterUsage` (custom metering).
    MeterUsage,
    /// One of License Manager's.
    License(license::Op),
    /// The license token's exchange (Containers Anywhere): License Manager's GetAccessToken,
    /// STS's AssumeRoleWithWebIdentity.
    Anywhere(anywhere::Op),
}

/// The `X-Amz-Target` prefixes of the awsJson1.1 services.
pub const TARGET_PREFIXES: &[&str] = &[metering::TARGET_PREFIX, license::TARGET_PREFIX];

impl Operation {
    /// Every operation served.
    pub fn all() -> impl Iterator<Item = Operation> {
        [Operation::RegisterUsage, Operation::MeterUsage]
            .into_iter()
            .chain(license::ALL_OPS.iter().map(|op| Operation::License(*op)))
            .chain(anywhere::ALL_OPS.iter().map(|op| Operation::Anywhere(*op)))
    }

    /// The operation's name, as its target or `Action` ends.
    pub fn name(self) -> &'static str {
        match self {
            Operation::RegisterUsage => "RegisterUsage",
            Operation::MeterUsage => meter_usage::OPERATION,
            Operation::License(op) => op.name(),
            Operation::Anywhere(op) => op.name(),
        }
    }

    /// The target prefix of its service (awsJson1.1).
    fn target_prefix(self) -> &'static str {
        match self {
            Operation::RegisterUsage | Operation::MeterUsage => metering::TARGET_PREFIX,
            Operation::License(_) | Operation::Anywhere(_) => license::TARGET_PREFIX,
        }
    }

    pub fn protocol(self) -> Protocol {
        match self {
            Operation::RegisterUsage
            | Operation::MeterUsage
            | Operation::License(_)
            | Operation::Anywhere(anywhere::Op::GetAccessToken) => Protocol::AwsJson11,
            Operation::Anywhere(anywhere::Op::AssumeRoleWithWebIdentity) => Protocol::AwsQuery,
        }
    }

    /// The SigV4 signing name the request must be signed for; `None`: the operation is
    /// unsigned (as STS's `AssumeRoleWithWebIdentity` or License Manager's
    /// `GetAccessToken`), and any `Authorization` header is ignored.
    pub fn signing_name(self) -> Option<&'static str> {
        match self {
            Operation::RegisterUsage | Operation::MeterUsage => Some(metering::SIGNING_NAME),
            Operation::License(_) | Operation::Anywhere(anywhere::Op::GetAccessToken) => {
                Some(license::SIGNING_NAME)
            }
            Operation::Anywhere(anywhere::Op::AssumeRoleWithWebIdentity) => None,
        }
    }

    /// Whether a request without `Authorization` is taken unsigned (a signed one is still
    /// verified): GetAccessToken, which the model signs but AWS's reference code calls with
    /// anonymous credentials.
    pub fn unsigned_allowed(self) -> bool {
        self.signing_name().is_none() || self == Operation::Anywhere(anywhere::Op::GetAccessToken)
    }

    /// The awsJson1.1 operation an `X-Amz-Target` names.
    pub fn from_target(target: &str) -> Option<Operation> {
        Operation::all().find(|op| {
            op.protocol() == Protocol::AwsJson11
                && target
                    .strip_prefix(op.target_prefix())
                    .is_some_and(|name| name == op.name())
        })
    }

    /// The awsQuery operation an `Action` names.
    pub fn from_action(action: &str) -> Option<Operation> {
        Operation::all().find(|op| op.protocol() == Protocol::AwsQuery && op.name() == action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_are_found_by_their_protocol_s_name() {
        assert_eq!(
            Operation::from_target("AWSMPMeteringService.RegisterUsage"),
            Some(Operation::RegisterUsage)
        );
        assert_eq!(
            Operation::from_target("AWSLicenseManager.CheckoutLicense"),
            Some(Operation::License(license::Op::CheckoutLicense))
        );
        assert_eq!(
            Operation::from_target("AWSMPMeteringService.MeterUsage"),
            Some(Operation::MeterUsage)
        );
        for unknown in [
            "AWSMPMeteringService.BatchMeterUsage",
            "AWSLicenseManager.MeterUsage",
            "AWSLicenseManager.RegisterUsage",
            "AWSMPMeteringService.CheckoutLicense",
            "RegisterUsage",
        ] {
            assert_eq!(Operation::from_target(unknown), None, "{unknown}");
        }
        assert_eq!(
            Operation::from_target("AWSLicenseManager.GetAccessToken"),
            Some(Operation::Anywhere(anywhere::Op::GetAccessToken))
        );
        // An Action names only an awsQuery operation, never a JSON one.
        assert_eq!(Operation::from_action("RegisterUsage"), None);
        assert_eq!(Operation::from_action("GetAccessToken"), None);
        assert_eq!(
            Operation::from_action("AssumeRoleWithWebIdentity"),
            Some(Operation::Anywhere(anywhere::Op::AssumeRoleWithWebIdentity))
        );
        assert_eq!(
            Operation::from_target("AWSLicenseManager.AssumeRoleWithWebIdentity"),
            None
        );
        assert!(Protocol::AwsJson11.accepts("application/x-amz-json-1.1; charset=utf-8"));
        assert!(!Protocol::AwsJson11.accepts("application/json"));
        assert!(Protocol::AwsQuery.accepts("application/x-www-form-urlencoded; charset=utf-8"));
    }
}
