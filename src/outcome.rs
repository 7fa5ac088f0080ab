//! Owns the outcome names: how a run ended, spelled once for the result file, the logs and `MPGATE_ENTITLEMENT`.

use serde::{Serialize, Serializer};

/// How a run ended: docs/reference.md's "Result file" lists these names; they never change
/// between releases (a seller's scripts match on them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Verified,
    /// Started without verification (`--on-transient-error allow`).
    Unverified,
    ConfigError,
    NotEntitled,
    PlatformNotSupported,
    TokenRejected,
    ServiceRefused,
    ServiceUnreachable,
    NoRegion,
    NoCredentials,
    CommandNotFound,
    CommandNotExecutable,
    Interrupted,
    /// Contract pricing: a held seat was lost while the workload ran.
    LicenseLost,
}

impl Outcome {
    /// Every outcome, in docs/reference.md's order.
    pub const ALL: [Outcome; 14] = [
        Outcome::Verified,
        Outcome::Unverified,
        Outcome::ConfigError,
        Outcome::NotEntitled,
        Outcome::PlatformNotSupported,
        Outcome::TokenRejected,
        Outcome::ServiceRefused,
        Outcome::ServiceUnreachable,
        Outcome::NoRegion,
        Outcome::NoCredentials,
        Outcome::CommandNotFound,
        Outcome::CommandNotExecutable,
        Outcome::Interrupted,
        Outcome::LicenseLost,
    ];

    /// The stable, machine-readable name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Verified => "verified",
            Outcome::Unverified => "unverified",
            Outcome::ConfigError => "config-error",
            Outcome::NotEntitled => "not-entitled",
            Outcome::PlatformNotSupported => "platform-not-supported",
            Outcome::TokenRejected => "token-rejected",
            Outcome::ServiceRefused => "service-refused",
            Outcome::ServiceUnreachable => "service-unreachable",
            Outcome::NoRegion => "no-region",
            Outcome::NoCredentials => "no-credentials",
            Outcome::CommandNotFound => "command-not-found",
            Outcome::CommandNotExecutable => "command-not-executable",
            Outcome::Interrupted => "interrupted",
            Outcome::LicenseLost => "license-lost",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// As its name, so the result file reads exactly as it did when outcomes were strings.
impl Serialize for Outcome {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::Outcome;

    #[test]
    fn every_outcome_serializes_as_the_name_the_reference_documents() {
        let names: Vec<String> = Outcome::ALL
            .iter()
            .map(|o| serde_json::to_string(o).unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "\"verified\"",
                "\"unverified\"",
                "\"config-error\"",
                "\"not-entitled\"",
                "\"platform-not-supported\"",
                "\"token-rejected\"",
                "\"service-refused\"",
                "\"service-unreachable\"",
                "\"no-region\"",
                "\"no-credentials\"",
                "\"command-not-found\"",
                "\"command-not-executable\"",
                "\"interrupted\"",
                "\"license-lost\"",
            ]
        );
        for outcome in Outcome::ALL {
            assert_eq!(outcome.to_string(), outcome.as_str());
        }
    }

    #[test]
    fn the_reference_lists_every_outcome() {
        let reference = include_str!("../docs/reference.md");
        for outcome in Outcome::ALL {
            assert!(
                reference.contains(&format!("`{}`", outcome.as_str())),
                "docs/reference.md does not name {outcome}"
            );
        }
    }
}
