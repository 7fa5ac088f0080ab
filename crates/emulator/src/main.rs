//! A local AWS Marketplace Metering service (RegisterUsage) and AWS License Manager (contract
//! pricing: CheckoutLicense and its kin) with fault injection, for tests.
//!
//! `mpgate-emulator` plays `AWSMPMeteringService.RegisterUsage` (awsJson1.1, `POST /`,
//! SigV4 signing name `aws-marketplace`) over HTTP/1.1 on loopback (plain, or HTTPS with
//! `--tls`), and answers with real PS256 tokens signed by RSA-2048 keys it generates (or
//! reuses from `--key-dir`).
//! Run `mpgate-emulator --help` for the command line.
//!
//! # Request checks, in order
//! 1. Method `POST` and path `/`, else 400 `UnknownOperationException` (emulator choice).
//! 2. `X-Amz-Target` must name an operation served (`AWSMPMeteringService.RegisterUsage`,
//!    `.MeterUsage`, License Manager's below); anything else (another operation, missing,
//!    unknown prefix) is 400 `UnknownOperationException`.
//! 3. `Content-Type` must be `application/x-amz-json-1.1` (parameters such as `charset`
//!    allowed), else 400 `SerializationException`. Real Coral endpoints pick the protocol
//!    from the content type and fail to deserialize the body under a wrong one; the
//!    emulator answers `SerializationException` uniformly for that case.
//! 4. SigV4, verified in full ([`protocol::sigv4`]) with the credentials the emulator knows
//!    ([`credentials`]: `--credentials`, `--expired-credentials`, the documented example pair
//!    by default, and the temporary pair `run` hands out). In order:
//!    - no `Authorization` header: 400 `MissingAuthenticationTokenException`;
//!    - a header that is not `AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`
//!      with a 5-part credential: 403 `IncompleteSignatureException`; a signature that is not
//!      64 hex digits: 403 `InvalidSignatureException`;
//!    - a body over 64 KiB: 413 `SerializationException` (the signature covers the body);
//!    - no `X-Amz-Date` (the emulator does not take `Date`), or one not in ISO 8601 basic
//!      format: 403 `IncompleteSignatureException`;
//!    - the credential scope `<date>/<region>/aws-marketplace/aws4_request`: a date other than
//!      `X-Amz-Date`'s day, a region other than `--region` ("Credential should be scoped to a
//!      valid region."), another service or terminator: 403 `InvalidSignatureException`;
//!    - `host` and `x-amz-date` not both in `SignedHeaders`: 403 `IncompleteSignatureException`;
//!    - an unknown access key id, a temporary key without its `X-Amz-Security-Token` or with
//!      another token, a long-term key with a token: 403 `UnrecognizedClientException` ("The
//!      security token included in the request is invalid."); a temporary key whose token is
//!      not in `SignedHeaders`: 403 `IncompleteSignatureException`;
//!    - an `--expired-credentials` pair: 403 `ExpiredTokenException`;
//!    - an `X-Amz-Date` more than 15 minutes from the emulator's clock (`--clock-offset`): 403
//!      `InvalidSignatureException`, "Signature expired: … is now earlier than … (… - 15
//!      min.)" or "Signature not yet current: … is still later than … (… + 15 min.)";
//!    - the signature AWS's signer (`aws-sigv4`) computes over the method, path, query, the
//!      headers listed in `SignedHeaders` and the body, with the pair's secret (and token) at
//!      the request's `X-Amz-Date`, compared in constant time: 403
//!      `InvalidSignatureException` ("The request signature we calculated does not match …").
//! 5. The body must be a JSON object (else 400 `SerializationException`, as AWS does for
//!    unparseable bodies) matching `RegisterUsageRequest`: missing, null or wrong-typed
//!    `ProductCode`/`PublicKeyVersion`, `PublicKeyVersion` < 1 or not a 32-bit integer,
//!    `ProductCode` length outside 1..=255, a non-string `Nonce` or one longer than 255
//!    characters are 400 `ValidationException` in AWS's "N validation error(s) detected:
//!    Value ... at 'Field' ..." form (the field named as on the wire). Unknown members are
//!    ignored, like AWS does.
//! 6. The caller model: a long-term key (no session token) is an IAM user outside ECS/EKS, 400
//!    `PlatformNotSupportedException`, unless `--long-term-keys-are-tasks`; a task whose
//!    region (`--task-region`) is not `--region` gets 400 `InvalidRegionException`.
//! 7. `--rate-limit N` (a token bucket of `--rate-burst` tokens, default N, refilled at N a
//!    second, full at start) admits the call or answers it like the `throttle` fault (400
//!    `ThrottlingException`, recorded with fault `rate-limit`). Then the `--fault` is applied,
//!    to the first `--fail-first` calls that passed 1-6 and the rate limit (or to all of them).
//! 8. A product code other than `--product-code` is 400 `InvalidProductCodeException`; a
//!    key version not in `--key-versions` is 400 `InvalidPublicKeyVersionException`.
//! 9. Success: `{"Signature": JWT}`, plus `PublicKeyRotationTimestamp` (`--rotation-timestamp`)
//!    when the key version asked for is one of `--expiring-key-versions` (default: every
//!    served version but the highest), where the JWT header is exactly
//!    `{"alg":"PS256","typ":"JWT"}` and the claims are `productCode`, `publicKeyVersion`,
//!    `nonce` (when sent) and `iat` (the emulator's clock, `--clock-offset` included: AWS
//!    dates the token by its own clock). Token faults alter this answer.
//!
//! Errors are `{"__type": NAME, "message": ...}` with `x-amzn-errortype: NAME`. Every answer
//! of the service, errors included, carries a fresh `x-amzn-RequestId` (a random UUID) and a
//! `Date` from the emulator's clock (the AWS SDKs correct their clock skew from it); the HTML
//! pages of the proxy faults and `token-html-answer` carry no request ID, as they stand for
//! something that is not the service.
//!
//! # HTTPS (`--tls`)
//! At start the emulator creates, or reuses, in the key dir a test CA (`ca.pem`, self-signed,
//! `CA:TRUE`, key `ca-key.pem`) and a server certificate signed by it (`server.pem`, key
//! `server-key.pem`) for `localhost`, `127.0.0.1` and `metering.emulator.test` (a name tests
//! reach through a proxy); each file is created once, atomically, so emulators sharing a key
//! dir are safe. It then serves HTTPS (rustls, aws-lc-rs provider, TLS 1.2/1.3, ALPN
//! `http/1.1`) instead of HTTP: the url is `https://127.0.0.1:PORT` and the ready line's
//! `caFile` is the absolute path of `ca.pem` (the only file clients need to trust). `run`
//! also sets `SSL_CERT_FILE=<ca.pem>` for the child. See [`tls`].
//!
//! # Faults
//! `--fault NAME` (names in [`fault::Fault::name`]) applies to the calls that passed checks
//! 1-6; `--fail-first N` limits it to the first N of those (rejected calls do not count).
//! Service-error faults, `http-502-html`, `hang` and `drop` replace the answer before the
//! product/key checks; `token-*` faults alter the token of an otherwise successful answer.
//! The proxy pages `http-403-html`, `http-407-html`, `http-502-html`, `http-503-html` replace
//! the answer too. `content-type-html` / `content-type-json` relabel the valid success
//! answer. `trickle`, `truncated-body`, `reset-headers`, `reset-body` and `oversize-*` mangle
//! the valid success answer on the wire (one byte per `--trickle-interval`; half the body
//! under a full `Content-Length`, then FIN; part of it, then RST; `--oversize-bytes` with a
//! `Content-Length`, chunked, or until close); they need the raw connection, so with one of
//! them every connection is served by the raw transport ([`server`]) instead of hyper.
//! `tls-handshake-failure` acts on connections instead, before any request: with `--tls`
//! the emulator reads the ClientHello and answers a fatal `handshake_failure` alert, without
//! it the connection is closed right after accept; `--fail-first N` then counts connections,
//! and each failed connection is recorded as a line with only `call` and `fault` set.
//!
//! # Output
//! Once listening, one JSON line: `{"url","region","productCode","publicKeyVersion",
//! "publicKeyFile","publicKeyFiles":{"N":path},"keyDir","caFile","credentials":[{"accessKeyId",
//! "secretAccessKey","sessionToken","expired"}],…,"containerCredentialsUri"}` (`caFile` null
//! without `--tls`, `containerCredentialsUri` without `--container-credentials-token`;
//! `sessionToken` null for long-term pairs; usable pairs first; stdout for `serve`, stderr for
//! `run --verbose`). The ready line holds the secrets of the test credentials the emulator
//! knows: it is a test tool, and a client needs them to sign. Every request is logged as one
//! line on stderr (`serve`, `run --verbose`) and, with `--record FILE`, appended as one JSON line `{"call","receivedAtMs","target",
//! "productCode","publicKeyVersion","nonce","credentialScope","fault","status","errorType",
//! "requestId"}` (fields as sent, `null` when absent; `receivedAtMs` the arrival in
//! milliseconds since the Unix epoch; `status` `null` for `hang`/`drop`/`reset-headers`;
//! `requestId` the answer's `x-amzn-RequestId`, `null` when none was sent) and flushed before
//! the answer is sent. The `Authorization` signature, secrets and session tokens are never
//! logged or recorded.
//!
//! `run` ([`run`]) fills in the seller's settings only when the caller has none (a typo must
//! fail as on AWS), and by default prints one line on stderr naming what it set, kept and
//! removed, without secrets; `--quiet` prints errors only. `--write-key-dir DIR` (serve and
//! run) also writes the public keys, never the private ones, as `public-key-vN.pem` in DIR.
//!
//! `--list-faults` prints one JSON line per fault: `{"name","kind"}`, plus `status` and
//! `errorType` for service errors and `status` for HTML pages; then one line per License
//! Manager error fault, `{"name","kind":"license","status","errorType","operations"}`, per
//! bad extension answer (`kind` `license-answer`, status 200) and per lost answer (`kind`
//! `license-lost-answer`, with the error answered instead, if any).
//!
//! # MeterUsage ([`ops::meter_usage`])
//! `AWSMPMeteringService.MeterUsage` (custom metering) after checks 1-4, signed for
//! `aws-marketplace`: the body's shape (`ValidationException`), RegisterUsage's caller model
//! (a task in another region gets MeterUsage's `InvalidEndpointRegionException`),
//! `--rate-limit`, `--meter-fault [MeterUsage=]FAULT[@AFTER][*COUNT][~DURATION]`, then the product, the
//! subscription (a caller's initial call only; SIGUSR1 ends it for callers with no record),
//! the `--dimension`s sold, the window (six `--metering-hour`s back, no hour ahead), tags
//! and allocations, the ClientToken, and one record per caller (access key id), dimension
//! and metering hour: an identical repeat gets the same `MeteringRecordId`, another
//! `DuplicateRequestException`; `DryRun` records nothing and answers `DryRunOperation`.
//! Accepted records are appended to `--usage-file` before the answer; `mpgate-emulator usage`
//! prints them. `--help` has the rules and the faults.
//!
//! # AWS License Manager ([`ops::license`])
//! The same listener serves `AWSLicenseManager.CheckoutLicense`, `.ExtendLicenseConsumption`,
//! `.CheckInLicense` and `.GetLicenseUsage` (awsJson1.1). Checks 1-4 above apply as they are,
//! but the credential scope's service must be `license-manager` (and a RegisterUsage must be
//! signed for `aws-marketplace`): a request signed for the other service gets 403
//! `InvalidSignatureException` ("Credential should be scoped to correct service: …"). Another
//! `AWSLicenseManager.*` operation is 400 `UnknownOperationException`. Then: the body's shape
//! (a non-object 400 `SerializationException`; missing, null or mistyped members, enum and
//! length violations 400 `ValidationException`, unknown members ignored); no caller model
//! (License Manager answers any caller it knows; PlatformNotSupported and the task region are
//! RegisterUsage's); `--rate-limit` (429 `RateLimitExceededException`, recorded with fault
//! `rate-limit`); `--license-fault OP=FAULT[@AFTER][*COUNT]`, counted per operation over the
//! calls that got this far; then the license's answer. Errors are `{"__type", "Message"}` with
//! the Smithy model's statuses (`RedirectException` 308 with a `Location` header and member).
//!
//! Checkout answers `IssuedAt` and `Expiration` as `YYYY-MM-DDTHH:MM:SS` (UTC, no zone),
//! extension answers `Expiration` as `YYYY-MM-DDTHH:MM:SSZ`, as AWS does. `SignedToken` is a
//! PS384 JWT of the checkout signed by the first `--key-versions` key, padded to about 4.2 KB.
//! A ClientToken repeated with the same modelled members while its consumption is live gets
//! the first answer again (no more units held); with other members `ValidationException`; once
//! the consumption is checked in or expired, the ClientToken is free for a new checkout.
//! Extension gives a new token, and every token of a consumption stays valid until it ends
//! (with `--retire-superseded-tokens` only the newest: an older one is unknown);
//! `DryRun` answers the token sent and the current expiry without extending. PERPETUAL
//! checkouts are refused (`ValidationException`): Marketplace container licenses are
//! PROVISIONAL. SIGUSR1 revokes the license (logged on stderr).
//!
//! `--record` lines of License Manager calls have `call`, `receivedAtMs`, `target`,
//! `credentialScope`, `fault`, `status`, `errorType`, `requestId` and, when the body has them,
//! `productSku`, `clientToken`, `licenseConsumptionToken`, `entitlements` (JSON), `checkoutType`,
//! `keyFingerprint`, `licenseArn` (no Metering members), and what the call did to the seat
//! book: `processed` (a seat taken, extended or returned, even when a `processed-then-*` or
//! `answer-*` fault lost or mangled the answer), `replayed` (a ClientToken's first answer sent
//! again), `issuedToken` (the consumption token the call was given) and `held` (units of each
//! counted entitlement held right after the call). The ready line adds `productSku`,
//! `licenseArn`, `licenseEntitlements` (`[{name, unit, maxCount}]`) and `licensed`.

mod answer;
mod cli;
mod clock;
mod credentials;
mod fault;
mod jwt;
mod keys;
mod log;
mod ops;
mod protocol;
mod random;
mod record;
mod revoke;
mod run;
mod server;
mod shared;
mod state;
mod tls;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use tokio::signal::unix::{signal, SignalKind};

use cli::{Mode, Options, Parsed, Verbosity};
use clock::Clock;
use credentials::{Credential, Keyring};
use fault::{Fault, ALL_FAULTS};
use log::{error, log};
use ops::{anywhere, license};
use random::random_u64;
use shared::Callers;
use state::State;

/// The JSON line printed once the server listens.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Ready {
    pub url: String,
    pub region: String,
    pub product_code: String,
    pub public_key_version: u32,
    pub public_key_file: String,
    pub public_key_files: BTreeMap<String, String>,
    pub key_dir: String,
    /// `ca.pem` (the test CA to trust) with `--tls`, else `null`.
    pub ca_file: Option<String>,
    /// The pairs the emulator knows, secrets included (a test tool), usable ones first.
    pub credentials: Vec<Credential>,
    /// License Manager: the product SKU sold (`--product-sku`).
    pub product_sku: String,
    /// The license's ARN.
    pub license_arn: String,
    /// The configured entitlements: `{name, unit, maxCount}` (`maxCount` for counted ones).
    pub license_entitlements: Vec<serde_json::Value>,
    /// `false` with `--no-license`.
    pub licensed: bool,
    /// With `--container-credentials-token`: the credentials endpoint's URL.
    pub container_credentials_uri: Option<String>,
    /// MeterUsage: the dimensions sold (`--dimension`).
    pub dimensions: Vec<String>,
    /// MeterUsage: the metering hour in seconds (`--metering-hour`; AWS's is 3600).
    pub metering_hour_seconds: u64,
    /// MeterUsage: the usage file (`--usage-file`), absolute, or `null`.
    pub usage_file: Option<String>,
    /// The license token's exchange: where the refresh token was written
    /// (`--license-token-file`, `run --anywhere`), else `null`.
    pub license_token_file: Option<String>,
    /// The consumption role AssumeRoleWithWebIdentity trusts the token for.
    pub license_role_arn: String,
    /// The account the license token was created in.
    pub token_issuer_account: String,
}

/// Exit code for a bad command line.
pub const EXIT_USAGE: i32 = 2;
/// Exit code when the emulator itself cannot start.
pub const EXIT_FAILURE: i32 = 1;

fn main() {
    std::process::exit(run_emulator());
}

/// The whole command: returns the process exit code.
fn run_emulator() -> i32 {
    let mut args = std::env::args_os().skip(1).peekable();
    if args.peek().is_some_and(|a| a == "usage") {
        return ops::meter_usage::ledger::main(args.skip(1).collect());
    }
    let parsed = match cli::parse(args) {
        Ok(p) => p,
        Err(msg) => {
            error(&format!("error: {msg}"));
            return EXIT_USAGE;
        }
    };
    match parsed {
        Parsed::Help => {
            let _ = std::io::stdout().write_all(cli::usage().as_bytes());
            0
        }
        Parsed::ListFaults => {
            let mut out = std::io::stdout().lock();
            for f in ALL_FAULTS {
                let _ = writeln!(out, "{}", f.listing());
            }
            for line in license::ALL_LICENSE_FAULTS
                .iter()
                .filter_map(|f| f.listing())
            {
                let _ = writeln!(out, "{line}");
            }
            for f in ops::meter_usage::ALL_METER_FAULTS {
                let _ = writeln!(out, "{}", f.listing());
            }
            for line in anywhere::ALL_ANYWHERE_FAULTS
                .iter()
                .flat_map(|f| f.listing())
            {
                let _ = writeln!(out, "{line}");
            }
            0
        }
        Parsed::Version => {
            let _ = writeln!(
                std::io::stdout(),
                "mpgate-emulator {}",
                env!("CARGO_PKG_VERSION")
            );
            0
        }
        Parsed::Go(cli::Mode::RevokeToken { url, token_file }, _) => {
            match revoke::revoke(&url, &token_file) {
                Ok(line) => {
                    error(line.trim_start_matches("mpgate-emulator: "));
                    0
                }
                Err(e) => {
                    error(&format!("error: {e}"));
                    EXIT_FAILURE
                }
            }
        }
        Parsed::Go(mode, opts) => {
            let (key_dir, owned) = match &opts.key_dir {
                Some(d) => (d.clone(), false),
                None => match fresh_temp_dir() {
                    Ok(d) => (d, true),
                    Err(e) => {
                        error(&format!("error: {e}"));
                        return EXIT_FAILURE;
                    }
                },
            };
            let code = match start(mode, &opts, &key_dir) {
                Ok(code) => code,
                Err(e) => {
                    error(&format!("error: {e}"));
                    EXIT_FAILURE
                }
            };
            if owned {
                let _ = fs::remove_dir_all(&key_dir);
            }
            code
        }
    }
}

fn fresh_temp_dir() -> Result<PathBuf, String> {
    let base = std::env::temp_dir();
    for _ in 0..16 {
        let dir = base.join(format!(
            "mpgate-emulator-{}-{:016x}",
            std::process::id(),
            random_u64()
        ));
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(format!(
                    "cannot create a key dir under {}: {e}",
                    base.display()
                ))
            }
        }
    }
    Err("cannot create a fresh key dir".into())
}

/// `run --anywhere`'s private directory for the token files, removed when run ends.
struct TokenDir(PathBuf);

impl Drop for TokenDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Writes the refresh token to `path` and the role's ARN to `iam_role` beside it, as the
/// buyer's Kubernetes secret holds them (each without a trailing newline, readable by the
/// owner only, replaced atomically); returns the token file's absolute path.
fn write_license_token(path: &Path, anywhere: &anywhere::Anywhere) -> Result<PathBuf, String> {
    let role = path.with_file_name("iam_role");
    if role == path {
        return Err(format!(
            "--license-token-file {}: iam_role is written beside the token; name the token file otherwise (license_token, as in the buyer's secret)",
            path.display()
        ));
    }
    for (file, contents) in [(path, &anywhere.refresh_token), (&role, &anywhere.role_arn)] {
        keys::write_atomic(file, contents, 0o600)
            .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    }
    fs::canonicalize(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn path_string(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// The pairs the emulator knows: `--credentials` (default: the example pair, when no pair is
/// named at all), `--expired-credentials`, and the pair `run` hands its command.
fn keyring(opts: &Options, handed_out: Option<&Credential>) -> Result<Keyring, String> {
    let mut keyring = Keyring::default();
    let named = !opts.credentials.is_empty() || !opts.expired_credentials.is_empty();
    let defaults = if named {
        Vec::new()
    } else {
        vec![Credential::example()]
    };
    for c in opts
        .credentials
        .iter()
        .chain(&opts.expired_credentials)
        .chain(&defaults)
        .chain(handed_out)
    {
        keyring
            .add(c.clone())
            .map_err(|m| format!("credentials: {m}"))?;
    }
    Ok(keyring)
}

fn start(mode: Mode, opts: &Options, key_dir: &Path) -> Result<i32, String> {
    // `run` hands its command a task role's temporary credentials of its own, unless the
    // command is to get its own from the license token (`--anywhere`).
    let handed_out = match mode {
        Mode::Run { .. } if !opts.anywhere_run => Some(Credential::fresh_temporary()),
        _ => None,
    };
    // The container credentials endpoint hands out a pair of its own, as the ECS agent does.
    let container = opts
        .container_credentials_token
        .clone()
        .map(|token| (token, Credential::fresh_temporary()));
    let mut keyring = keyring(opts, handed_out.as_ref())?;
    if let Some((_, c)) = &container {
        keyring
            .add(c.clone())
            .map_err(|m| format!("credentials: {m}"))?;
    }
    // run's stderr is its command's: the request log only when asked for.
    log::set_request_log(match mode {
        Mode::Serve | Mode::RevokeToken { .. } => true,
        Mode::Run { .. } => opts.verbosity == Verbosity::Verbose,
    });
    let keys = keys::prepare(key_dir, &opts.key_versions)?;
    if let Some(dir) = &opts.write_key_dir {
        keys::write_public(dir, &keys)?;
    }
    let key_dir = fs::canonicalize(key_dir).map_err(|e| format!("{}: {e}", key_dir.display()))?;
    let wrong_key = if opts.fault == Fault::TokenWrongKey {
        Some(keys::signing_key(&keys::generate()?.private_pem)?)
    } else {
        None
    };
    let record = match &opts.record {
        Some(p) => Some(
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| format!("cannot open record file {}: {e}", p.display()))?,
        ),
        None => None,
    };
    let usage_file = match &opts.meter_usage.usage_file {
        Some(p) => {
            let f = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| format!("cannot open usage file {}: {e}", p.display()))?;
            let abs = fs::canonicalize(p).map_err(|e| format!("{}: {e}", p.display()))?;
            Some((f, path_string(&abs)))
        }
        None => None,
    };
    if let Some(warning) = opts.meter_usage.short_hour_warning() {
        if opts.verbosity != Verbosity::Quiet {
            error(&warning);
        }
    }
    let (usage_file, usage_path) = match usage_file {
        Some((f, p)) => (Some(f), Some(p)),
        None => (None, None),
    };
    let public_key_files: BTreeMap<String, String> = keys
        .iter()
        .map(|k| {
            (
                k.version.to_string(),
                path_string(&key_dir.join(k.public_path.file_name().unwrap_or_default())),
            )
        })
        .collect();
    let first = opts.key_versions[0];
    let public_key_file = public_key_files
        .get(&first.to_string())
        .cloned()
        .unwrap_or_default();
    let mut state = State::new(
        opts.region.clone(),
        opts.product_code.clone(),
        keys,
        wrong_key,
        opts.fault,
        opts.fail_first,
        opts.latency,
        opts.rotation_timestamp,
        record,
    )
    .with_network(
        opts.rate_limit,
        opts.rate_burst,
        opts.trickle_interval,
        opts.oversize_bytes,
    )
    .with_callers(
        Callers {
            keyring,
            long_term_keys_are_tasks: opts.long_term_keys_are_tasks,
            task_region: opts.task_region.clone(),
        },
        Clock {
            offset_ms: opts.clock_offset_ms,
        },
        opts.expiring_key_versions.clone(),
    )
    .with_license(license::License::new(opts.license.clone()))
    .with_meter_usage(ops::meter_usage::MeterUsage::new(
        opts.meter_usage.clone(),
        usage_file,
    ));
    // The license token (a refresh token the emulator signs with its first key), written
    // where asked, or for `run --anywhere` into a private directory of its own.
    let anywhere = {
        let key = &state.shared.keys[0].signing_key;
        let now = state.shared.clock.now();
        anywhere::Anywhere::new(opts.anywhere.clone(), &state.license.arn, key, now)?
    };
    let token_dir = match (&opts.anywhere.token_file, &mode) {
        (None, Mode::Run { .. }) if opts.anywhere_run => Some(TokenDir(fresh_temp_dir()?)),
        _ => None,
    };
    let token_file = match (&opts.anywhere.token_file, &token_dir) {
        (Some(f), _) => Some(f.clone()),
        (None, Some(d)) => Some(d.0.join("license_token")),
        (None, None) => None,
    };
    let token_file = match token_file {
        Some(f) => Some(write_license_token(&f, &anywhere)?),
        None => None,
    };
    state = state.with_anywhere(anywhere);
    if let Some((token, c)) = container {
        state = state.with_container_credentials(token, c);
    }
    let state = Arc::new(state);
    let tls = if opts.tls {
        Some(tls::prepare(&key_dir)?)
    } else {
        None
    };
    let ca_file = tls.as_ref().map(|t| path_string(&t.ca_file));
    let acceptor = tls.map(|t| t.acceptor);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let listen = opts.listen;
    let code = rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("local_addr: {e}"))?;
        let ready = Ready {
            url: format!(
                "{}://{addr}",
                if acceptor.is_some() { "https" } else { "http" }
            ),
            region: state.shared.region.clone(),
            product_code: state.metering.product_code.clone(),
            public_key_version: first,
            public_key_file,
            public_key_files,
            key_dir: path_string(&key_dir),
            ca_file: ca_file.clone(),
            credentials: state
                .shared
                .callers
                .keyring
                .all()
                .into_iter()
                .cloned()
                .collect(),
            product_sku: state.license.config.product_sku.clone(),
            license_arn: state.license.arn.clone(),
            license_entitlements: state
                .license
                .config
                .entitlements
                .iter()
                .map(license::Entitlement::listing)
                .collect(),
            licensed: state.license.config.licensed,
            container_credentials_uri: state.container_credentials.as_ref().map(|_| {
                format!(
                    "{}://{addr}{}",
                    if acceptor.is_some() { "https" } else { "http" },
                    ops::container_credentials::PATH
                )
            }),
            dimensions: state.meter_usage.config.dimensions.clone(),
            metering_hour_seconds: state.meter_usage.config.hour.as_secs(),
            usage_file: usage_path,
            license_token_file: token_file.as_deref().map(path_string),
            license_role_arn: state.anywhere.role_arn.clone(),
            token_issuer_account: state.anywhere.config.issuer_account.clone(),
        };
        let line = serde_json::to_string(&ready).map_err(|e| e.to_string())?;
        let child_env = run::ChildEnv {
            url: ready.url.clone(),
            region: ready.region.clone(),
            product_code: ready.product_code.clone(),
            public_key_files: ready
                .public_key_files
                .iter()
                .filter_map(|(v, path)| Some((v.parse().ok()?, path.clone())))
                .collect(),
            public_key_version: first,
            ca_file,
            credentials: handed_out,
            product_sku: ready.product_sku.clone(),
            dimensions: ready.dimensions.join(","),
            metering_hour: (ready.metering_hour_seconds != 3600)
                .then(|| format!("{}s", ready.metering_hour_seconds)),
            anywhere: match (opts.anywhere_run, &ready.license_token_file) {
                (true, Some(file)) => Some(run::AnywhereEnv {
                    token_file: file.clone(),
                    role_arn: ready.license_role_arn.clone(),
                }),
                _ => None,
            },
        };
        // SIGUSR1 revokes the license (listening before the ready line, so that a signal sent
        // after it never meets the default action, which would end the process).
        let mut usr1 = signal(SignalKind::user_defined1()).map_err(|e| format!("signal: {e}"))?;
        let revoking = state.clone();
        tokio::spawn(async move {
            while usr1.recv().await.is_some() {
                revoking.license.revoke();
                revoking.meter_usage.unsubscribe();
                log(&format!(
                    "SIGUSR1: license {} (ProductSKU {}) revoked; MeterUsage subscription ended (callers with no record get CustomerNotEntitledException)",
                    revoking.license.arn, revoking.license.config.product_sku
                ));
            }
        });
        // SIGUSR2 revokes the license token issued at start: GetAccessToken refuses it.
        let mut usr2 = signal(SignalKind::user_defined2()).map_err(|e| format!("signal: {e}"))?;
        let revoking = state.clone();
        tokio::spawn(async move {
            while usr2.recv().await.is_some() {
                let id = revoking.anywhere.revoke_issued();
                log::error(&format!(
                    "SIGUSR2: refresh token {id} revoked: GetAccessToken now refuses it"
                ));
            }
        });
        tokio::spawn(server::serve(listener, state, acceptor));
        match mode {
            Mode::Serve => {
                let mut term =
                    signal(SignalKind::terminate()).map_err(|e| format!("signal: {e}"))?;
                let mut int =
                    signal(SignalKind::interrupt()).map_err(|e| format!("signal: {e}"))?;
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}").and_then(|()| out.flush());
                drop(out);
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                Ok::<i32, String>(0)
            }
            Mode::Run { command, args } => {
                let plan = run::plan(&child_env, &|name| std::env::var_os(name));
                // The command's stdout stays clean: run's lines go to stderr. The ready line
                // holds test secrets and is long: only when asked for.
                let mut err = std::io::stderr().lock();
                if opts.verbosity == Verbosity::Verbose {
                    let _ = writeln!(err, "{line}");
                }
                if opts.verbosity != Verbosity::Quiet {
                    let _ = writeln!(err, "{}", plan.summary);
                }
                drop(err);
                Ok(run::run_child(command, args, &plan).await)
            }
            Mode::RevokeToken { .. } => Ok(EXIT_USAGE),
        }
    })?;
    drop(token_dir);
    // Do not wait for hanging connections (`hang` fault).
    rt.shutdown_background();
    Ok(code)
}
