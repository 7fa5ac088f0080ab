//! The emulator's service-error faults as the tests expect them: one table, checked against the
//! emulator's own `--list-faults` by its tests and against botocore's model by the conformance
//! test, for the gate's tests to build on.

/// A service-error fault: how the emulator answers a call it applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceFault {
    /// The `--fault` name.
    pub fault: &'static str,
    /// The HTTP status of the answer.
    pub status: u16,
    /// The `__type` (and `x-amzn-errortype`) of the answer.
    pub error_type: &'static str,
    /// Whether botocore's model lists the error for RegisterUsage (the others are AWS's
    /// authentication and authorization errors, common to every service).
    pub modelled: bool,
    /// The gate's exit code for it (14: retried until the deadline).
    pub exit_code: i32,
    /// A piece of the gate's advice for it, in its error message and termination log.
    pub hint: &'static str,
}

const fn fault(
    fault: &'static str,
    status: u16,
    error_type: &'static str,
    modelled: bool,
    (exit_code, hint): (i32, &'static str),
) -> ServiceFault {
    ServiceFault {
        fault,
        status,
        error_type,
        modelled,
        exit_code,
        hint,
    }
}

/// Every service-error fault of the emulator.
pub const SERVICE_FAULTS: &[ServiceFault] = &[
    fault(
        "not-entitled",
        400,
        "CustomerNotEntitledException",
        true,
        (10, "not entitled"),
    ),
    fault(
        "platform-not-supported",
        400,
        "PlatformNotSupportedException",
        true,
        (11, "IRSA"),
    ),
    fault(
        "invalid-product-code",
        400,
        "InvalidProductCodeException",
        true,
        (13, "MPGATE_PRODUCT_CODE"),
    ),
    fault(
        "invalid-region",
        400,
        "InvalidRegionException",
        true,
        (13, "let the platform set AWS_REGION"),
    ),
    fault(
        "invalid-public-key-version",
        400,
        "InvalidPublicKeyVersionException",
        true,
        (13, "MPGATE_PUBLIC_KEY_VERSION"),
    ),
    fault(
        "disabled-api",
        400,
        "DisabledApiException",
        true,
        (13, "DisabledApiException"),
    ),
    fault(
        "internal-error",
        500,
        "InternalServiceErrorException",
        true,
        (14, "kept failing"),
    ),
    fault(
        "throttle",
        400,
        "ThrottlingException",
        true,
        (14, "throttled"),
    ),
    fault(
        "access-denied",
        400,
        "AccessDeniedException",
        false,
        (13, "aws-marketplace:RegisterUsage"),
    ),
    fault(
        "unrecognized-client",
        403,
        "UnrecognizedClientException",
        false,
        (13, "does not know the access key"),
    ),
];

/// The entry for `--fault name`, if it is a service error.
pub fn service_fault(name: &str) -> Option<&'static ServiceFault> {
    SERVICE_FAULTS.iter().find(|f| f.fault == name)
}
