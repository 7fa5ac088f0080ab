//! Owns awsJson1.1's routing: the operation an `X-Amz-Target` names.

use crate::ops::{Operation, TARGET_PREFIXES};

/// The operation `target` names, if the emulator serves it.
pub(crate) fn operation(target: &str) -> Option<Operation> {
    Operation::from_target(target)
}

/// Whether `target` names a service the emulator plays (its operation may still be unknown).
pub(crate) fn names_a_service(target: &str) -> bool {
    TARGET_PREFIXES.iter().any(|p| target.starts_with(p))
}
