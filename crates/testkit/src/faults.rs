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

/// A License Manager fault (`--license-fault OPERATION=FAULT`): how the emulator answers, and
/// what the gate makes of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LicenseFault {
    /// The FAULT name.
    pub fault: &'static str,
    /// The HTTP status of the answer (the Smithy model's).
    pub status: u16,
    /// The `__type` (and `x-amzn-errortype`) of the answer.
    pub error_type: &'static str,
    /// The operations whose model lists the error (the only ones it may be injected into).
    pub operations: &'static [&'static str],
    /// The gate's exit code for it (0 for `conflict`: a check-in conflict is a warning).
    pub exit_code: i32,
    /// A piece of the gate's advice for it.
    pub hint: &'static str,
}

const CHECKOUT: &[&str] = &["CheckoutLicense"];
const CHECKIN: &[&str] = &["CheckInLicense"];
const HAS_RESOURCES: &[&str] = &[
    "CheckoutLicense",
    "CheckInLicense",
    "ExtendLicenseConsumption",
];
const EVERY_OPERATION: &[&str] = &[
    "CheckoutLicense",
    "CheckInLicense",
    "ExtendLicenseConsumption",
    "GetLicenseUsage",
];

const fn license_fault(
    fault: &'static str,
    status: u16,
    error_type: &'static str,
    operations: &'static [&'static str],
    (exit_code, hint): (i32, &'static str),
) -> LicenseFault {
    LicenseFault {
        fault,
        status,
        error_type,
        operations,
        exit_code,
        hint,
    }
}

/// Every License Manager error fault of the emulator, in `--list-faults` order.
pub const LICENSE_FAULTS: &[LicenseFault] = &[
    license_fault(
        "no-entitlements-allowed",
        400,
        "NoEntitlementsAllowedException",
        CHECKOUT,
        (10, "seats"),
    ),
    license_fault(
        "resource-not-found",
        400,
        "ResourceNotFoundException",
        HAS_RESOURCES,
        (10, "SKU"),
    ),
    license_fault(
        "validation",
        400,
        "ValidationException",
        EVERY_OPERATION,
        (13, "ValidationException"),
    ),
    license_fault(
        "invalid-parameter-value",
        400,
        "InvalidParameterValueException",
        EVERY_OPERATION,
        (13, "InvalidParameterValueException"),
    ),
    license_fault(
        "redirect",
        308,
        "RedirectException",
        CHECKOUT,
        (13, "RedirectException"),
    ),
    license_fault(
        "unsupported-digital-signature-method",
        400,
        "UnsupportedDigitalSignatureMethodException",
        CHECKOUT,
        (13, "UnsupportedDigitalSignatureMethodException"),
    ),
    license_fault(
        "authorization",
        403,
        "AuthorizationException",
        EVERY_OPERATION,
        (13, "license-manager:CheckoutLicense"),
    ),
    license_fault(
        "access-denied",
        401,
        "AccessDeniedException",
        EVERY_OPERATION,
        (13, "license-manager:CheckoutLicense"),
    ),
    license_fault(
        "rate-limit-exceeded",
        429,
        "RateLimitExceededException",
        EVERY_OPERATION,
        (14, "throttled"),
    ),
    license_fault(
        "server-internal",
        500,
        "ServerInternalException",
        EVERY_OPERATION,
        (14, "ServerInternalException"),
    ),
    license_fault(
        "conflict",
        409,
        "ConflictException",
        CHECKIN,
        (0, "conflict"),
    ),
];

/// The entry for license fault `name`.
pub fn license_fault_named(name: &str) -> Option<&'static LicenseFault> {
    LICENSE_FAULTS.iter().find(|f| f.fault == name)
}

/// A License Manager fault that acts after the seat book processed the call: a bad 200
/// answer (`kind` `license-answer`, the `answer-*` faults) or a lost one (`kind`
/// `license-lost-answer`, the `processed-then-*` faults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessedFault {
    /// The FAULT name.
    pub fault: &'static str,
    /// `--list-faults`'s kind.
    pub kind: &'static str,
    /// The operations it may be injected into.
    pub operations: &'static [&'static str],
    /// The error answered instead of the true answer (`None`: a 200 answer, or none at all).
    pub error: Option<(u16, &'static str)>,
}

const EXTEND: &[&str] = &["ExtendLicenseConsumption"];
const PROCESSING: &[&str] = &[
    "CheckoutLicense",
    "CheckInLicense",
    "ExtendLicenseConsumption",
];

const fn answer(fault: &'static str) -> ProcessedFault {
    ProcessedFault {
        fault,
        kind: "license-answer",
        operations: EXTEND,
        error: None,
    }
}

const fn lost(fault: &'static str, error: Option<(u16, &'static str)>) -> ProcessedFault {
    ProcessedFault {
        fault,
        kind: "license-lost-answer",
        operations: PROCESSING,
        error,
    }
}

/// Every fault that acts after the seat book, in `--list-faults` order.
pub const PROCESSED_FAULTS: &[ProcessedFault] = &[
    answer("answer-past-expiration"),
    answer("answer-missing-token"),
    answer("answer-missing-expiration"),
    answer("answer-bad-expiration"),
    answer("answer-wrong-types"),
    answer("answer-garbage"),
    lost("processed-then-drop", None),
    lost("processed-then-hang", None),
    lost(
        "processed-then-server-internal",
        Some((500, "ServerInternalException")),
    ),
];
