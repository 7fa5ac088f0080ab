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
}

const fn fault(
    fault: &'static str,
    status: u16,
    error_type: &'static str,
    modelled: bool,
) -> ServiceFault {
    ServiceFault {
        fault,
        status,
        error_type,
        modelled,
    }
}

/// Every service-error fault of the emulator.
pub const SERVICE_FAULTS: &[ServiceFault] = &[
    fault("not-entitled", 400, "CustomerNotEntitledException", true),
    fault(
        "platform-not-supported",
        400,
        "PlatformNotSupportedException",
        true,
    ),
    fault(
        "invalid-product-code",
        400,
        "InvalidProductCodeException",
        true,
    ),
    fault("invalid-region", 400, "InvalidRegionException", true),
    fault(
        "invalid-public-key-version",
        400,
        "InvalidPublicKeyVersionException",
        true,
    ),
    fault("disabled-api", 400, "DisabledApiException", true),
    fault("internal-error", 500, "InternalServiceErrorException", true),
    fault("throttle", 400, "ThrottlingException", true),
    fault("access-denied", 400, "AccessDeniedException", false),
    fault(
        "unrecognized-client",
        403,
        "UnrecognizedClientException",
        false,
    ),
];

/// The entry for `--fault name`, if it is a service error.
pub fn service_fault(name: &str) -> Option<&'static ServiceFault> {
    SERVICE_FAULTS.iter().find(|f| f.fault == name)
}
