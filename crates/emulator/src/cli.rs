//! Command-line parsing (lexopt).

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::credentials::Credential;
use crate::fault::{Fault, ALL_FAULTS};
use crate::ops::anywhere::{self, AnywhereConfig, AnywhereFaultSpec, ALL_ANYWHERE_FAULTS};
use crate::ops::license::{
    self, Entitlement, FaultSpec, LicenseConfig, Stage, ALL_LICENSE_FAULTS, DEFAULT_PRODUCT_SKU,
};
use crate::ops::meter_usage::{self, MeterConfig};

pub const DEFAULT_PRODUCT_CODE: &str = "prod-demo1234567890abcdef";
/// `--trickle-interval` default: one byte every 200 ms.
pub const DEFAULT_TRICKLE_INTERVAL: Duration = Duration::from_millis(200);
/// `--oversize-bytes` default: 10 MiB.
pub const DEFAULT_OVERSIZE_BYTES: u64 = 10 * 1024 * 1024;
/// Largest `--oversize-bytes` (the emulator streams it; this only bounds a typo).
const MAX_OVERSIZE_BYTES: u64 = 1 << 40;

/// How much `run` prints on stderr besides errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    /// `--quiet`: errors only.
    Quiet,
    /// The default: the one line naming what run set and kept.
    Summary,
    /// `--verbose`: that line, the ready line and the request log.
    Verbose,
}

/// What to do after the server is up.
#[derive(Debug)]
pub enum Mode {
    Serve,
    Run {
        command: OsString,
        args: Vec<OsString>,
    },
    /// `revoke-token --url URL --token-file PATH`: ask a serving emulator to revoke a
    /// refresh token.
    RevokeToken {
        url: String,
        token_file: PathBuf,
    },
}

#[derive(Debug)]
pub struct Options {
    pub listen: SocketAddr,
    pub region: String,
    pub product_code: String,
    pub key_versions: Vec<u32>,
    pub key_dir: Option<PathBuf>,
    /// `--write-key-dir`: where the public keys (only) are also written, for the gate.
    pub write_key_dir: Option<PathBuf>,
    /// `run`'s `--quiet` / `--verbose`.
    pub verbosity: Verbosity,
    pub fault: Fault,
    pub fail_first: Option<u64>,
    pub latency: Duration,
    pub rotation_timestamp: Option<i64>,
    pub record: Option<PathBuf>,
    pub tls: bool,
    /// `--rate-limit`: valid calls per second (token bucket), the rest are throttled.
    pub rate_limit: Option<u32>,
    /// `--rate-burst`: the bucket's size (default: the rate).
    pub rate_burst: Option<u32>,
    pub trickle_interval: Duration,
    pub oversize_bytes: u64,
    /// `--credentials`, in order (empty: the documented example pair, unless
    /// `--expired-credentials` names some).
    pub credentials: Vec<Credential>,
    /// `--expired-credentials`.
    pub expired_credentials: Vec<Credential>,
    /// `--container-credentials-token`: serve the ECS container credentials endpoint.
    pub container_credentials_token: Option<String>,
    /// `--long-term-keys-are-tasks`: long-term keys stand for a task, not an IAM user.
    pub long_term_keys_are_tasks: bool,
    /// `--task-region`: the region the caller's task runs in (default: the emulator's).
    pub task_region: Option<String>,
    /// `--clock-offset` in milliseconds: AWS's clock minus the machine's.
    pub clock_offset_ms: i64,
    /// `--expiring-key-versions`, resolved: the versions `--rotation-timestamp` applies to.
    pub expiring_key_versions: Vec<u32>,
    /// License Manager: `--product-sku`, `--license-entitlement`, `--no-license`,
    /// `--consumption-ttl`, `--license-fault`.
    pub license: LicenseConfig,
    /// MeterUsage: `--dimension`, `--metering-hour`, `--usage-file`, `--meter-fault`.
    pub meter_usage: MeterConfig,
    /// The license token's exchange: `--token-issuer-account`, `--license-role-arn`,
    /// `--access-token-ttl`, `--role-credentials-ttl`, `--refresh-token-ttl`,
    /// `--license-token-file`, `--license-fault GetAccessToken=…`, `--sts-fault`.
    pub anywhere: AnywhereConfig,
    /// `run --anywhere`: hand the command a license token and role, not task credentials.
    pub anywhere_run: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            region: "us-east-1".into(),
            product_code: DEFAULT_PRODUCT_CODE.into(),
            key_versions: vec![1],
            key_dir: None,
            write_key_dir: None,
            verbosity: Verbosity::Summary,
            fault: Fault::None,
            fail_first: None,
            latency: Duration::ZERO,
            rotation_timestamp: None,
            record: None,
            tls: false,
            rate_limit: None,
            rate_burst: None,
            trickle_interval: DEFAULT_TRICKLE_INTERVAL,
            oversize_bytes: DEFAULT_OVERSIZE_BYTES,
            credentials: Vec::new(),
            expired_credentials: Vec::new(),
            container_credentials_token: None,
            long_term_keys_are_tasks: false,
            task_region: None,
            clock_offset_ms: 0,
            expiring_key_versions: Vec::new(),
            license: LicenseConfig::default(),
            meter_usage: MeterConfig::default(),
            anywhere: AnywhereConfig::default(),
            anywhere_run: false,
        }
    }
}

#[derive(Debug)]
pub enum Parsed {
    Help,
    Version,
    /// `--list-faults`: one JSON line per fault.
    ListFaults,
    Go(Mode, Box<Options>),
}

pub fn usage() -> String {
    let license_faults: Vec<String> = ALL_LICENSE_FAULTS
        .iter()
        .map(|f| {
            let ops: Vec<&str> = f.operations().iter().map(|o| o.name()).collect();
            let what = match (f.stage(), f.error(), f.lost_answer_error()) {
                (Stage::Before, Some(e), _) => format!("{} {}", e.status, e.error_type),
                (Stage::Before, None, _) => "the Metering fault of that name".into(),
                (Stage::BadAnswer, _, _) => "processed, then a bad 200 (below)".into(),
                (Stage::LostAnswer, _, Some(e)) => {
                    format!("processed, then {} {}", e.status, e.error_type)
                }
                (Stage::LostAnswer, _, None) => "processed, then no answer (below)".into(),
            };
            let ops = if ops.len() == license::ALL_OPS.len() {
                "every operation".to_string()
            } else {
                ops.join(", ")
            };
            format!("  {:<38}{what}; {ops}\n", f.name())
        })
        .collect();
    let license_faults = license_faults.concat();
    let anywhere_faults: String = ALL_ANYWHERE_FAULTS
        .iter()
        .map(|f| {
            let what: Vec<String> = f
                .listing()
                .iter()
                .map(|l| {
                    format!(
                        "{} {} ({})",
                        l["status"],
                        l["errorType"].as_str().unwrap_or(""),
                        l["operations"][0].as_str().unwrap_or("")
                    )
                })
                .collect();
            let what = if what.is_empty() {
                "the Metering fault of that name; both operations".to_string()
            } else {
                what.join("; ")
            };
            format!("  {:<26}{what}\n", f.name())
        })
        .collect();
    let faults: Vec<&str> = ALL_FAULTS.iter().map(|f| f.name()).collect();
    let mut fault_lines = String::new();
    let mut line = String::from("   ");
    for f in faults {
        if line.len() + f.len() + 1 > 78 {
            fault_lines.push_str(&line);
            fault_lines.push('\n');
            line = String::from("   ");
        }
        line.push(' ');
        line.push_str(f);
    }
    fault_lines.push_str(&line);
    format!(
        "\
mpgate-emulator {version}: local AWS Marketplace Metering (RegisterUsage) and AWS License Manager for tests

Both services on one listener: Metering's RegisterUsage, and License Manager's
CheckoutLicense, ExtendLicenseConsumption, CheckInLicense and GetLicenseUsage; and the
license token's exchange (Containers Anywhere): License Manager's GetAccessToken and STS's
AssumeRoleWithWebIdentity (below). Metering's MeterUsage (custom metering) too: see
MeterUsage below.

Usage:
  mpgate-emulator [serve] [OPTIONS]
  mpgate-emulator run [--anywhere] [OPTIONS] -- COMMAND [ARG...]
  mpgate-emulator usage --usage-file FILE [--json]   (what MeterUsage billed; usage --help)
  mpgate-emulator revoke-token --url URL --token-file PATH

serve prints one JSON line (url, region, productCode, publicKeyVersion, publicKeyFile,
publicKeyFiles, keyDir, caFile, credentials, productSku, licenseArn, licenseEntitlements,
containerCredentialsUri, licensed, dimensions, meteringHourSeconds, usageFile,
licenseTokenFile, licenseRoleArn, tokenIssuerAccount) to stdout, logs every request on
stderr, and serves until SIGTERM/SIGINT.

run serves while COMMAND runs, wired to it, and exits with COMMAND's exit
code (127 if it is not found); it forwards SIGTERM, SIGINT, SIGHUP and SIGQUIT. The AWS
wiring is run's: it sets AWS_ENDPOINT_URL_MARKETPLACE_METERING and
AWS_ENDPOINT_URL_LICENSE_MANAGER (the url), AWS_REGION, AWS_DEFAULT_REGION,
AWS_EC2_METADATA_DISABLED=true, fresh temporary credentials (AWS_ACCESS_KEY_ID ASIA...,
AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, as a task role hands out; the emulator knows
them) and SSL_CERT_FILE=caFile with --tls, and removes AWS_PROFILE, AWS_ENDPOINT_URL and
AWS_IGNORE_CONFIGURED_ENDPOINT_URLS. The seller's settings are never overwritten, only
filled in when missing (set, even empty, counts as given): MPGATE_PRODUCT_SKU
(--product-sku), MPGATE_PRODUCT_CODE (--product-code), and MPGATE_PUBLIC_KEY_FILE and
MPGATE_PUBLIC_KEY_VERSION when none of MPGATE_PUBLIC_KEY_FILE, MPGATE_PUBLIC_KEY_DIR and
MPGATE_PUBLIC_KEY is set (the product code and key not with MPGATE_PRICING=contract). The
emulator sells only its own --product-code, --product-sku and --license-entitlement, so
a wrong setting fails as it would on AWS. run prints one line on stderr (no secrets):
  mpgate-emulator: serving URL (REGION; product code CODE, product SKU SKU); set NAME,
  NAME=VALUE, ...; kept NAME=VALUE, ...; removed NAME, ...
and errors; --verbose adds the ready line and the request log, --quiet prints errors
only. SIGUSR1 revokes the license (see License Manager below) and ends the MeterUsage
subscription. With MPGATE_PRICING=usage run fills in MPGATE_PRODUCT_CODE, MPGATE_DIMENSIONS
(the --dimension list, comma-separated) and, with --metering-hour, MPGATE_METERING_HOUR,
and no key settings (MeterUsage returns no token).

Requests must be signed with SigV4 by a key the emulator knows, for its --region and the
signing name of the target's service (aws-marketplace for AWSMPMeteringService.*,
license-manager for AWSLicenseManager.*), within 15 minutes of its clock. The ready line's
credentials lists the pairs it knows, secrets included: this is a test tool.

Options:
  --listen ADDR              address to bind (default 127.0.0.1:0, port 0 = any free port)
  --region REGION            region the emulator serves (default us-east-1)
  --product-code CODE        product code it sells (default {DEFAULT_PRODUCT_CODE})
  --key-versions LIST        public key versions served, comma-separated (default 1)
  --key-dir DIR              where public-key-vN.pem / private-key-vN.pem are kept; an
                             existing private key there is reused (default: a fresh
                             temporary directory, removed on exit)
  --write-key-dir DIR        also write public-key-vN.pem of every served version into
                             DIR (created if missing; never a private key), a key ring
                             for the gate's MPGATE_PUBLIC_KEY_DIR; an existing file
                             holding another key is an error, never replaced (keep the
                             emulator's keys across runs with the same --key-dir)
  --quiet                    run: print errors only
  --verbose                  run: also print the ready line (test secrets included) and
                             the request log on stderr
  --fault FAULT              fault to inject (default none)
  --fail-first N             apply FAULT only to the first N valid RegisterUsage calls
  --latency DURATION         delay before every answer (e.g. 200ms, 2s, 1m)
  --rotation-timestamp SECS  add PublicKeyRotationTimestamp to successful answers for
                             the expiring key versions
  --expiring-key-versions LIST  the key versions --rotation-timestamp applies to,
                             comma-separated (default: every served version but the
                             highest; there must be one)
  --credentials ACCESS_KEY_ID:SECRET_ACCESS_KEY[:SESSION_TOKEN]
                             a pair the emulator knows (repeatable); with a session
                             token it is temporary (a task role's), without it long-term
                             (an IAM user's). Default, when neither this nor
                             --expired-credentials is given: the documented AWS example
                             pair AKIAIOSFODNN7EXAMPLE /
                             wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY (long-term). run
                             also knows the temporary pair it hands out
  --access-key-id ID --secret-access-key SECRET [--session-token TOKEN]
                             the same pair spelled out (repeatable: each
                             --access-key-id starts a pair)
  --expired-credentials ACCESS_KEY_ID:SECRET_ACCESS_KEY:SESSION_TOKEN
                             a temporary pair whose token has expired (repeatable):
                             calls with it get ExpiredTokenException
  --container-credentials-token TOKEN
                             also serve the ECS container credentials endpoint (the
                             ready line's containerCredentialsUri, for
                             AWS_CONTAINER_CREDENTIALS_FULL_URI): GET with TOKEN as
                             the Authorization header (AWS_CONTAINER_AUTHORIZATION_
                             TOKEN_FILE holds it) gets a fresh temporary pair the
                             emulator knows; another token gets 401
  --long-term-keys-are-tasks  long-term keys stand for an ECS task or EKS pod; without
                             this flag they get what AWS answers an IAM user outside
                             ECS/EKS: PlatformNotSupportedException
  --task-region REGION       the region the caller's task runs in (default: --region);
                             another region than --region answers a correctly signed
                             call with InvalidRegionException
  --clock-offset DURATION    AWS's clock minus this machine's (e.g. 20m, -20m; default
                             0): shifts the 15-minute signature window, the Date header
                             and the token's iat, as if this machine's clock were off
  --record FILE              append one JSON line per request received (flushed before
                             the answer is sent)
  --tls                      serve HTTPS (url https://...): create, or reuse, a test CA
                             (ca.pem, ca-key.pem) and a certificate for localhost,
                             127.0.0.1 and metering.emulator.test (server.pem,
                             server-key.pem) in the key dir; clients trust ca.pem, the
                             ready line's caFile (null without --tls)
  --rate-limit N             throttle like a real service under a fleet scale-out: a
                             token bucket admits N valid calls per second (bursts up to
                             --rate-burst), every other valid call gets the throttle
                             fault's answer (HTTP 400 ThrottlingException); applied
                             before --fault and recorded with fault rate-limit
  --rate-burst N             the bucket's size (default: the --rate-limit value; the
                             bucket starts full)
  --trickle-interval DURATION  delay between the bytes the trickle fault sends
                             (default 200ms)
  --oversize-bytes N         body size of the oversize-* faults (default 10485760)
  --product-sku SKU          the License Manager product SKU sold (default
                             {DEFAULT_PRODUCT_SKU})
  --license-entitlement SPEC an entitlement of the license (repeatable): NAME (a feature,
                             unit None), NAME=MAX (counted, unit Count) or NAME=MAX:UNIT
                             (another EntitlementDataUnit). Default: Basic and Seats=5
  --no-license               the caller holds no license: CheckoutLicense gets
                             NoEntitlementsAllowedException
  --consumption-ttl DURATION how long a checkout holds its units unless extended
                             (default 60m; e.g. 2s)
  --retire-superseded-tokens  an extension's new consumption token retires the token it
                             was asked with: CheckInLicense and ExtendLicenseConsumption
                             with it get ResourceNotFoundException, as an unknown token
                             does (default: every token of a live checkout stays valid)
  --license-fault OPERATION=FAULT[@AFTER][*COUNT]
                             fail License Manager's OPERATION (CheckoutLicense,
                             CheckInLicense, ExtendLicenseConsumption, GetLicenseUsage)
                             with FAULT (below; only errors the model lists for it):
                             the first AFTER valid calls of the operation are answered
                             normally, then COUNT calls fail (default: all). Repeatable;
                             the first listed one that applies wins. An error or network
                             fault answers instead of the call (no seat taken, extended
                             or returned); answer-* and processed-then-* act after the
                             seat book processed it (below)
{meter_options}  --list-faults              print one JSON line per fault (name, kind, and status and
                             errorType for the service errors; the license faults with
                             their operations: kind license for the errors,
                             license-answer for answer-*, license-lost-answer for
                             processed-then-*), then exit
  --token-issuer-account ACCOUNT  the buyer account the license token was created in
                             (default {issuer})
  --license-role-arn ARN     the consumption role STS knows (default
                             arn:aws:iam::ACCOUNT:{role_path}
                             in the issuer account); a role in another account than the
                             token's issuer does not trust it: AccessDenied
  --license-token-file PATH  write the license token (a refresh token) to PATH and the
                             role ARN to iam_role beside it (mode 0600, replaced
                             atomically), as the buyer's Kubernetes secret holds them; the
                             ready line's licenseTokenFile
  --access-token-ttl DURATION  how long GetAccessToken's access tokens last (default 60m)
  --role-credentials-ttl DURATION  how long AssumeRoleWithWebIdentity's credentials last
                             (default DurationSeconds, else 60m); once past, every signed
                             call with them gets ExpiredTokenException
  --refresh-token-ttl DURATION  how long the license token lasts (default 365 days)
  --sts-fault AssumeRoleWithWebIdentity=FAULT[@AFTER][*COUNT]
                             fail STS's AssumeRoleWithWebIdentity with FAULT (below), as
                             --license-fault does; GetAccessToken's faults are given with
                             --license-fault GetAccessToken=FAULT[@AFTER][*COUNT]
  --anywhere                 run: hand COMMAND a license token and role instead of task
                             credentials (below)
  -h, --help                 print this help
  -V, --version              print the version

Faults:
{fault_lines}

License Manager faults (--license-fault; status, error, operations the model lists it for):
{license_faults}
{meter_section}
The license token's exchange (Containers Anywhere; faults: status, error, operation):
{anywhere_faults}
At start the emulator issues one license token: a PS384 JWT signed by its first key, aud
the license ARN, amr aws:license-manager:token-issuer-account-id:ACCOUNT, valid
--refresh-token-ttl. AWSLicenseManager.GetAccessToken (awsJson1.1) takes it unsigned, as
AWS's reference code sends it, or SigV4-signed for license-manager (then verified as any
call); it answers an access token valid --access-token-ttl. A refresh token that is not a
JWT gets ValidationException; one the emulator did not sign, an expired or revoked one, or
one for another license AccessDeniedException (AWS does not publish which it answers).
STS's AssumeRoleWithWebIdentity (awsQuery: a form with Action and Version=2011-06-15,
unsigned; XML answers and ErrorResponse errors) takes RoleArn, RoleSessionName and the
access token as WebIdentityToken (ProviderId refused: InvalidParameterValue); a token that
is not an access token the emulator issued gets InvalidIdentityToken, an expired one
ExpiredTokenException, a role other than --license-role-arn or one whose account is not the
token's issuer account AccessDenied, DurationSeconds above 3600 ValidationError. It answers
temporary credentials (ASIA...) that the emulator knows from then on, until their
Expiration: then every signed call with them gets ExpiredTokenException.
Revocation: SIGUSR2 revokes the token issued at start; `mpgate-emulator revoke-token --url
URL --token-file FILE` posts a token to a serving emulator (plain http) to revoke it. A
revoked token gets AccessDeniedException from GetAccessToken; access tokens and role
credentials already issued stay valid until they expire.

run --anywhere writes the license token to license_token (--license-token-file, else a
private directory removed when run ends) and the role to iam_role beside it, sets
AWS_ENDPOINT_URL_STS (the url) besides the other endpoints, hands out no credentials (and
removes the caller's AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), and
fills in MPGATE_LICENSE_TOKEN_FILE and MPGATE_LICENSE_ROLE_ARN, unless the caller has a
token of its own (MPGATE_LICENSE_TOKEN_FILE, AWS_WEB_IDENTITY_REFRESH_TOKEN_FILE or
AWS_LICENSE_ACCESS_FILE: kept, and then no role is filled in either) or a role
(MPGATE_LICENSE_ROLE_ARN or AWS_ROLE_ARN: kept).

License Manager: the emulator sells one license, --product-sku with its entitlements, to
the callers it knows; its ARN is arn:aws:license-manager::294406891311:license:l-<32 hex>
(from the SKU; the ready line's licenseArn). CheckoutLicense needs KeyFingerprint
aws:294406891311:AWS/Marketplace:issuer-fingerprint and CheckoutType PROVISIONAL (PERPETUAL:
ValidationException); each entitlement must exist in the same Unit, a counted one with an
integer Value (1 or more) within MaxCount minus what live checkouts hold, else
NoEntitlementsAllowedException. A checkout holds its values for --consumption-ttl;
ExtendLicenseConsumption gives a new token and pushes the expiry (earlier tokens stay
valid, unless --retire-superseded-tokens), CheckInLicense releases it; an unknown,
expired or checked-in token gets ResourceNotFoundException. A repeated ClientToken with the same request, while its checkout
is live, gets the same answer and holds no more; with another request ValidationException.
GetLicenseUsage sums the live checkouts. SIGUSR1 revokes the license: checkouts then get
NoEntitlementsAllowedException, existing tokens ResourceNotFoundException.

License Manager answers that go wrong after the seat book processed the call (a retried
checkout with the same ClientToken gets the first answer again, as on AWS):
  answer-past-expiration  ExtendLicenseConsumption extended (a new token, the expiry
                        pushed), but the 200 answer's Expiration is an hour in the past
  answer-missing-token  ... the 200 answer has no LicenseConsumptionToken
  answer-missing-expiration  ... the 200 answer has no Expiration
  answer-bad-expiration  ... the 200 answer's Expiration is never (not a date)
  answer-wrong-types    ... LicenseConsumptionToken and Expiration are JSON numbers
  answer-garbage        ... the 200 answer is cut in its first member (not JSON)
  processed-then-drop   the call is processed (seat taken, extended or returned), then
                        the connection is closed without an answer
  processed-then-hang   ... then no answer, the connection kept open
  processed-then-server-internal  ... then 500 ServerInternalException
A refused call (no seat free, an unknown token) is not processed: answer-* then send the
refusal as it is, processed-then-* still lose it. The --record line of every License
Manager call says what it did: processed (true when a seat was taken, extended or
returned, whether the answer arrived or not), replayed (a ClientToken's answer sent
again), issuedToken (the consumption token the call was given) and held (units of each
counted entitlement held right after the call).

tls-handshake-failure acts on connections, before any request: with --tls the server reads
the ClientHello and answers a fatal handshake_failure alert, without --tls it closes the
connection right after accepting it; --fail-first then counts connections.

Network and answer faults (after the request checks, with a valid token):
  http-403-html, http-407-html, http-502-html, http-503-html
                        a proxy's or load balancer's text/html error page with that
                        status (407 with Proxy-Authenticate, 503 with Retry-After)
  trickle               the success answer, status line, headers and body, one byte
                        per --trickle-interval (never done within a short deadline)
  truncated-body        a 200 whose Content-Length is the whole body, but only half
                        of the body is sent, then the connection is closed (FIN)
  reset-headers         the status line and part of the headers, then a TCP reset
  reset-body            the headers and half of the body, then a TCP reset
  oversize-body         a 200 of --oversize-bytes with Content-Length
  oversize-chunked      the same, Transfer-Encoding: chunked
  oversize-eof          the same without a length, ended by closing the connection
  content-type-html     the valid success answer labelled Content-Type: text/html
  content-type-json     the valid success answer labelled Content-Type: application/json
trickle, truncated-body, reset-*, oversize-* need the raw connection: with one of them
the emulator serves every connection with its own minimal HTTP/1.1 code (requests with a
Content-Length body, keep-alive), and answers past --fail-first normally.
",
        version = env!("CARGO_PKG_VERSION"),
        meter_options = meter_usage::options_help(),
        meter_section = meter_usage::section_help(),
        issuer = anywhere::DEFAULT_ISSUER_ACCOUNT,
        role_path = anywhere::ROLE_PATH,
    )
}

/// Parse `200ms`, `2s`, `1.5s`, `1m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?} (expected e.g. 200ms, 2s, 1m)");
    let (num, mult_ms) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000.0)
    } else if s == "0" {
        ("0", 0.0)
    } else {
        return Err(bad());
    };
    let value: f64 = num.trim().parse().map_err(|_| bad())?;
    if !value.is_finite() || value < 0.0 {
        return Err(bad());
    }
    let ms = value * mult_ms;
    if ms > 24.0 * 3600.0 * 1000.0 {
        return Err(format!("duration {s:?} is longer than a day"));
    }
    Ok(Duration::from_micros((ms * 1000.0).round() as u64))
}

/// Parses a duration with an optional sign (`20m`, `-20m`, `+1.5s`) into milliseconds.
pub fn parse_signed_duration(s: &str) -> Result<i64, String> {
    let (negative, rest) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let ms = parse_duration(rest)?.as_millis() as i64;
    Ok(if negative { -ms } else { ms })
}

fn parse_versions(s: &str) -> Result<Vec<u32>, String> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        let v: u32 = part
            .parse()
            .ok()
            .filter(|v| *v >= 1 && *v <= i32::MAX as u32)
            .ok_or_else(|| format!("invalid key version {part:?} (expected integers >= 1)"))?;
        if !out.contains(&v) {
            out.push(v);
        }
    }
    if out.is_empty() {
        return Err("--key-versions needs at least one version".into());
    }
    Ok(out)
}

/// A count from 1 to 1 000 000.
fn positive(s: &str) -> Result<u32, String> {
    s.parse()
        .ok()
        .filter(|n| (1..=1_000_000).contains(n))
        .ok_or_else(|| format!("invalid count {s:?} (expected 1 to 1000000)"))
}

fn string(v: OsString, flag: &str) -> Result<String, String> {
    v.into_string()
        .map_err(|_| format!("{flag}: value is not valid UTF-8"))
}

pub fn parse<I>(args: I) -> Result<Parsed, String>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_args(args);
    let mut opts = Options::default();
    let mut mode: Option<Mode> = None;
    let mut seen_positional = false;
    let mut run = false;
    let mut expiring: Option<Vec<u32>> = None;
    let mut entitlements: Vec<Entitlement> = Vec::new();
    // `--access-key-id ID --secret-access-key SECRET [--session-token TOKEN]`, the spelled-out
    // form of one `--credentials` pair: (id, secret, token) of the pair being given.
    let mut spelled: Option<(String, Option<String>, Option<String>)> = None;
    let mut verbosity_flag: Option<&'static str> = None;
    let (mut revoke, mut revoke_url, mut revoke_file) = (false, None, None);
    let e = |e: lexopt::Error| e.to_string();
    while let Some(arg) = parser.next().map_err(e)? {
        match arg {
            Short('h') | Long("help") => return Ok(Parsed::Help),
            Short('V') | Long("version") => return Ok(Parsed::Version),
            Long("list-faults") => return Ok(Parsed::ListFaults),
            Long("listen") => {
                let v = string(parser.value().map_err(e)?, "--listen")?;
                opts.listen = v
                    .parse()
                    .map_err(|_| format!("--listen: invalid address {v:?} (expected IP:PORT)"))?;
            }
            Long("region") => {
                let v = string(parser.value().map_err(e)?, "--region")?;
                if !is_region(&v) {
                    return Err(format!("--region: invalid region {v:?}"));
                }
                opts.region = v;
            }
            Long("product-code") => {
                let v = string(parser.value().map_err(e)?, "--product-code")?;
                if v.is_empty() || v.chars().count() > 255 {
                    return Err("--product-code: must be 1 to 255 characters".into());
                }
                opts.product_code = v;
            }
            Long("key-versions") => {
                opts.key_versions =
                    parse_versions(&string(parser.value().map_err(e)?, "--key-versions")?)
                        .map_err(|m| format!("--key-versions: {m}"))?;
            }
            Long("key-dir") => {
                let v = PathBuf::from(parser.value().map_err(e)?);
                if v.as_os_str().is_empty() {
                    return Err("--key-dir: empty path".into());
                }
                opts.key_dir = Some(v);
            }
            Long("write-key-dir") => {
                let v = PathBuf::from(parser.value().map_err(e)?);
                if v.as_os_str().is_empty() {
                    return Err("--write-key-dir: empty path".into());
                }
                opts.write_key_dir = Some(v);
            }
            Long(flag @ ("quiet" | "verbose")) => {
                let asked = if flag == "quiet" {
                    Verbosity::Quiet
                } else {
                    Verbosity::Verbose
                };
                if opts.verbosity != Verbosity::Summary && opts.verbosity != asked {
                    return Err("--quiet and --verbose: give one of them".into());
                }
                opts.verbosity = asked;
                verbosity_flag = Some(if flag == "quiet" { "quiet" } else { "verbose" });
            }
            Long("fault") => {
                let v = string(parser.value().map_err(e)?, "--fault")?;
                opts.fault = v.parse().map_err(|m| format!("--fault: {m}"))?;
            }
            Long("fail-first") => {
                let v = string(parser.value().map_err(e)?, "--fail-first")?;
                opts.fail_first = Some(
                    v.parse()
                        .map_err(|_| format!("--fail-first: invalid count {v:?}"))?,
                );
            }
            Long("latency") => {
                let v = string(parser.value().map_err(e)?, "--latency")?;
                opts.latency = parse_duration(&v).map_err(|m| format!("--latency: {m}"))?;
            }
            Long("rotation-timestamp") => {
                let v = string(parser.value().map_err(e)?, "--rotation-timestamp")?;
                opts.rotation_timestamp =
                    Some(v.parse().map_err(|_| {
                        format!("--rotation-timestamp: invalid epoch seconds {v:?}")
                    })?);
            }
            Long("container-credentials-token") => {
                let v = string(parser.value().map_err(e)?, "--container-credentials-token")?;
                // What fits in an HTTP header as the SDK sends it: visible ASCII, bounded.
                if v.is_empty() || v.len() > 1024 || !v.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(
                        "--container-credentials-token: 1 to 1024 visible ASCII characters".into(),
                    );
                }
                opts.container_credentials_token = Some(v);
            }
            Long("record") => {
                let v = PathBuf::from(parser.value().map_err(e)?);
                if v.as_os_str().is_empty() {
                    return Err("--record: empty path".into());
                }
                opts.record = Some(v);
            }
            Long("tls") => opts.tls = true,
            Long("credentials") => {
                let v = string(parser.value().map_err(e)?, "--credentials")?;
                opts.credentials
                    .push(Credential::parse(&v, false).map_err(|m| format!("--credentials: {m}"))?);
            }
            Long("access-key-id") => {
                let id = string(parser.value().map_err(e)?, "--access-key-id")?;
                if let Some(pair) = spelled.replace((id, None, None)) {
                    opts.credentials.push(spelled_pair(pair)?);
                }
            }
            Long(name @ ("secret-access-key" | "session-token")) => {
                let (flag, is_token) = (format!("--{name}"), name == "session-token");
                let v = string(parser.value().map_err(e)?, &flag)?;
                let Some((_, secret, token)) = spelled.as_mut() else {
                    return Err(format!("{flag}: give --access-key-id first"));
                };
                let slot = if is_token { token } else { secret };
                if slot.replace(v).is_some() {
                    return Err(format!("{flag}: given twice for one --access-key-id"));
                }
            }
            Long("expired-credentials") => {
                let v = string(parser.value().map_err(e)?, "--expired-credentials")?;
                opts.expired_credentials.push(
                    Credential::parse(&v, true)
                        .map_err(|m| format!("--expired-credentials: {m}"))?,
                );
            }
            Long("long-term-keys-are-tasks") => opts.long_term_keys_are_tasks = true,
            Long("task-region") => {
                let v = string(parser.value().map_err(e)?, "--task-region")?;
                if !is_region(&v) {
                    return Err(format!("--task-region: invalid region {v:?}"));
                }
                opts.task_region = Some(v);
            }
            Long("clock-offset") => {
                let v = string(parser.value().map_err(e)?, "--clock-offset")?;
                opts.clock_offset_ms =
                    parse_signed_duration(&v).map_err(|m| format!("--clock-offset: {m}"))?;
            }
            Long("expiring-key-versions") => {
                expiring = Some(
                    parse_versions(&string(
                        parser.value().map_err(e)?,
                        "--expiring-key-versions",
                    )?)
                    .map_err(|m| format!("--expiring-key-versions: {m}"))?,
                );
            }
            Long("rate-limit") => {
                let v = string(parser.value().map_err(e)?, "--rate-limit")?;
                opts.rate_limit = Some(positive(&v).map_err(|m| format!("--rate-limit: {m}"))?);
            }
            Long("rate-burst") => {
                let v = string(parser.value().map_err(e)?, "--rate-burst")?;
                opts.rate_burst = Some(positive(&v).map_err(|m| format!("--rate-burst: {m}"))?);
            }
            Long("trickle-interval") => {
                let v = string(parser.value().map_err(e)?, "--trickle-interval")?;
                opts.trickle_interval =
                    parse_duration(&v).map_err(|m| format!("--trickle-interval: {m}"))?;
            }
            Long("product-sku") => {
                let v = string(parser.value().map_err(e)?, "--product-sku")?;
                if v.is_empty() || v.chars().count() > 255 || v.chars().any(char::is_whitespace) {
                    return Err("--product-sku: must be 1 to 255 characters, without spaces".into());
                }
                opts.license.product_sku = v;
            }
            Long("license-entitlement") => {
                let v = string(parser.value().map_err(e)?, "--license-entitlement")?;
                let ent =
                    Entitlement::parse(&v).map_err(|m| format!("--license-entitlement: {m}"))?;
                if entitlements
                    .iter()
                    .any(|x: &Entitlement| x.name == ent.name)
                {
                    return Err(format!(
                        "--license-entitlement: {} is given twice",
                        ent.name
                    ));
                }
                entitlements.push(ent);
            }
            Long(flag) if meter_usage::FLAGS.contains(&flag) => {
                let flag = flag.to_string();
                let v = string(parser.value().map_err(e)?, &format!("--{flag}"))?;
                opts.meter_usage.set(&flag, &v, parse_duration)?;
            }
            Long("no-license") => opts.license.licensed = false,
            Long("retire-superseded-tokens") => opts.license.retire_superseded_tokens = true,
            Long("consumption-ttl") => {
                let v = string(parser.value().map_err(e)?, "--consumption-ttl")?;
                let ttl = parse_duration(&v).map_err(|m| format!("--consumption-ttl: {m}"))?;
                if ttl.is_zero() {
                    return Err("--consumption-ttl: must be longer than 0".into());
                }
                opts.license.consumption_ttl = ttl;
            }
            Long("license-fault") => {
                let v = string(parser.value().map_err(e)?, "--license-fault")?;
                // GetAccessToken is License Manager's too, but the token exchange's.
                if v.starts_with("GetAccessToken=") {
                    opts.anywhere.faults.push(
                        AnywhereFaultSpec::parse(&v, anywhere::Op::GetAccessToken)
                            .map_err(|m| format!("--license-fault: {m}"))?,
                    );
                } else {
                    opts.license
                        .faults
                        .push(FaultSpec::parse(&v).map_err(|m| format!("--license-fault: {m}"))?);
                }
            }
            Long("sts-fault") => {
                let v = string(parser.value().map_err(e)?, "--sts-fault")?;
                opts.anywhere.faults.push(
                    AnywhereFaultSpec::parse(&v, anywhere::Op::AssumeRoleWithWebIdentity)
                        .map_err(|m| format!("--sts-fault: {m}"))?,
                );
            }
            Long("token-issuer-account") => {
                let v = string(parser.value().map_err(e)?, "--token-issuer-account")?;
                if v.len() != 12 || !v.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(format!(
                        "--token-issuer-account: {v:?} is not an AWS account id (12 digits)"
                    ));
                }
                opts.anywhere.issuer_account = v;
            }
            Long("license-role-arn") => {
                let v = string(parser.value().map_err(e)?, "--license-role-arn")?;
                if !(20..=2048).contains(&v.len())
                    || !v.starts_with("arn:")
                    || !v.bytes().all(|b| b.is_ascii_graphic())
                {
                    return Err(format!(
                        "--license-role-arn: {v:?} is not a role ARN (arn:aws:iam::ACCOUNT:role/NAME)"
                    ));
                }
                opts.anywhere.role_arn = Some(v);
            }
            Long(name @ ("access-token-ttl" | "role-credentials-ttl" | "refresh-token-ttl")) => {
                let name = name.to_owned();
                let flag = format!("--{name}");
                let v = string(parser.value().map_err(e)?, &flag)?;
                let ttl = parse_duration(&v).map_err(|m| format!("{flag}: {m}"))?;
                if ttl < std::time::Duration::from_secs(1) {
                    return Err(format!(
                        "{flag}: must be 1s or longer (tokens count whole seconds)"
                    ));
                }
                match name.as_str() {
                    "access-token-ttl" => opts.anywhere.access_token_ttl = ttl,
                    "role-credentials-ttl" => opts.anywhere.role_credentials_ttl = Some(ttl),
                    _ => opts.anywhere.refresh_token_ttl = ttl,
                }
            }
            Long("license-token-file") => {
                let v = PathBuf::from(parser.value().map_err(e)?);
                if v.as_os_str().is_empty() || v.file_name().is_none() {
                    return Err("--license-token-file: give a file path".into());
                }
                opts.anywhere.token_file = Some(v);
            }
            Long("anywhere") => opts.anywhere_run = true,
            Long("url") if revoke => {
                let v = string(parser.value().map_err(e)?, "--url")?;
                revoke_url = Some(v);
            }
            Long("token-file") if revoke => {
                revoke_file = Some(PathBuf::from(parser.value().map_err(e)?));
            }
            Long("oversize-bytes") => {
                let v = string(parser.value().map_err(e)?, "--oversize-bytes")?;
                opts.oversize_bytes = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_OVERSIZE_BYTES).contains(n))
                    .ok_or_else(|| {
                        format!("--oversize-bytes: invalid size {v:?} (expected 1 to 2^40 bytes)")
                    })?;
            }
            Value(v)
                if !seen_positional
                    && !run
                    && mode.is_none()
                    && (v == "serve" || v == "run" || v == "revoke-token") =>
            {
                seen_positional = true;
                if v == "run" {
                    run = true;
                } else if v == "revoke-token" {
                    revoke = true;
                } else {
                    mode = Some(Mode::Serve);
                }
            }
            Value(v) if run => {
                let args = parser.raw_args().map_err(e)?.collect();
                mode = Some(Mode::Run { command: v, args });
            }
            Value(v) => {
                return Err(format!("unexpected argument {:?}", v.to_string_lossy()));
            }
            _ => return Err(arg.unexpected().to_string()),
        }
    }
    if revoke {
        let (Some(url), Some(token_file)) = (revoke_url, revoke_file) else {
            return Err("revoke-token: give --url URL (the ready line's url) and --token-file PATH (the license token to revoke)".into());
        };
        return Ok(Parsed::Go(
            Mode::RevokeToken { url, token_file },
            Box::new(opts),
        ));
    }
    if opts.anywhere_run && !run {
        return Err("--anywhere is for run: serve always serves the token exchange (give --license-token-file to get the token)".into());
    }
    let mode = match mode {
        Some(m) => m,
        None if run => {
            return Err("run: missing COMMAND (usage: run [OPTIONS] -- COMMAND [ARG...])".into())
        }
        None => Mode::Serve,
    };
    if let (Mode::Serve, Some(flag)) = (&mode, verbosity_flag) {
        return Err(format!(
            "--{flag} is for run: serve prints its ready line on stdout and its request log on stderr (redirect them instead)"
        ));
    }
    if let Some(pair) = spelled {
        opts.credentials.push(spelled_pair(pair)?);
    }
    opts.expiring_key_versions = resolve_expiring(&opts, expiring)?;
    if !entitlements.is_empty() {
        opts.license.entitlements = entitlements;
    }
    let mut ids: Vec<&str> = Vec::new();
    for c in opts.credentials.iter().chain(&opts.expired_credentials) {
        if ids.contains(&c.access_key_id.as_str()) {
            return Err(format!(
                "--credentials: access key id {} is given twice",
                c.access_key_id
            ));
        }
        ids.push(&c.access_key_id);
    }
    Ok(Parsed::Go(mode, Box::new(opts)))
}

fn is_region(v: &str) -> bool {
    !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// The versions `--rotation-timestamp` applies to: as named, or every served version but the
/// highest. A timestamp that would apply to none is refused rather than silently unused.
fn resolve_expiring(opts: &Options, named: Option<Vec<u32>>) -> Result<Vec<u32>, String> {
    let highest = opts.key_versions.iter().copied().max().unwrap_or(1);
    let expiring = match named {
        Some(list) => {
            if let Some(v) = list.iter().find(|v| !opts.key_versions.contains(v)) {
                return Err(format!(
                    "--expiring-key-versions: version {v} is not served (--key-versions)"
                ));
            }
            if opts.rotation_timestamp.is_none() {
                return Err("--expiring-key-versions needs --rotation-timestamp".into());
            }
            list
        }
        None => opts
            .key_versions
            .iter()
            .copied()
            .filter(|v| *v != highest)
            .collect(),
    };
    if opts.rotation_timestamp.is_some() && expiring.is_empty() {
        return Err("--rotation-timestamp: no key version is expiring; serve a newer one (--key-versions 1,2: all but the highest expire) or name them with --expiring-key-versions".into());
    }
    Ok(expiring)
}

/// A pair given as `--access-key-id` / `--secret-access-key` / `--session-token`.
fn spelled_pair(
    (id, secret, token): (String, Option<String>, Option<String>),
) -> Result<Credential, String> {
    let Some(secret) = secret else {
        return Err(format!(
            "--access-key-id {id}: give its --secret-access-key"
        ));
    };
    let joined = match token {
        Some(token) => format!("{id}:{secret}:{token}"),
        None => format!("{id}:{secret}"),
    };
    Credential::parse(&joined, false).map_err(|m| format!("--access-key-id {id}: {m}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn go(args: &[&str]) -> Result<(Mode, Options), String> {
        match parse(args.iter().copied())? {
            Parsed::Go(m, o) => Ok((m, *o)),
            other => Err(format!("{other:?}")),
        }
    }

    #[test]
    fn defaults_and_flags() {
        let (m, o) = go(&[]).unwrap();
        assert!(matches!(m, Mode::Serve));
        assert_eq!(o.region, "us-east-1");
        assert_eq!(o.key_versions, vec![1]);
        let (_, o) = go(&[
            "serve",
            "--key-versions",
            "2,1,2",
            "--fault=throttle",
            "--latency",
            "200ms",
        ])
        .unwrap();
        assert_eq!(o.key_versions, vec![2, 1]);
        assert_eq!(o.fault, Fault::Throttle);
        assert_eq!(o.latency, Duration::from_millis(200));
    }

    #[test]
    fn run_collects_command() {
        let (m, _) = go(&[
            "run",
            "--region",
            "eu-west-1",
            "--",
            "sh",
            "-c",
            "exit 3",
            "--fault",
        ])
        .unwrap();
        match m {
            Mode::Run { command, args } => {
                assert_eq!(command, "sh");
                assert_eq!(
                    args,
                    vec![OsString::from("-c"), "exit 3".into(), "--fault".into()]
                );
            }
            _ => panic!("expected run"),
        }
        assert!(go(&["run"]).is_err());
        let (_, o) = go(&["run", "--tls", "--", "true"]).unwrap();
        assert!(o.tls);
    }

    #[test]
    fn rejects_bad_values() {
        assert!(go(&["--fault", "nope"]).is_err());
        assert!(go(&["--key-versions", "0"]).is_err());
        assert!(go(&["--latency", "5"]).is_err());
        assert!(go(&["--listen", "nowhere"]).is_err());
        assert!(go(&["serve", "extra"]).is_err());
        assert!(go(&["--bogus"]).is_err());
        assert!(go(&["--rate-limit", "0"]).is_err());
        assert!(go(&["--rate-limit", "ten"]).is_err());
        assert!(go(&["--rate-burst", "-1"]).is_err());
        assert!(go(&["--oversize-bytes", "0"]).is_err());
        assert!(go(&["--trickle-interval", "fast"]).is_err());
    }

    #[test]
    fn rate_limit_and_raw_fault_options() {
        let (_, o) = go(&[]).unwrap();
        assert_eq!((o.rate_limit, o.rate_burst), (None, None));
        assert_eq!(o.trickle_interval, DEFAULT_TRICKLE_INTERVAL);
        assert_eq!(o.oversize_bytes, DEFAULT_OVERSIZE_BYTES);
        let (_, o) = go(&[
            "--rate-limit",
            "200",
            "--rate-burst",
            "50",
            "--trickle-interval",
            "50ms",
            "--oversize-bytes",
            "1048576",
            "--fault",
            "trickle",
        ])
        .unwrap();
        assert_eq!((o.rate_limit, o.rate_burst), (Some(200), Some(50)));
        assert_eq!(o.trickle_interval, Duration::from_millis(50));
        assert_eq!(o.oversize_bytes, 1 << 20);
        assert_eq!(o.fault, Fault::Trickle);
    }

    #[test]
    fn callers_clock_and_rotation() {
        let (_, o) = go(&[]).unwrap();
        assert!(o.credentials.is_empty() && o.expired_credentials.is_empty());
        assert_eq!(
            (o.long_term_keys_are_tasks, o.task_region.as_deref()),
            (false, None)
        );
        assert_eq!(o.clock_offset_ms, 0);
        assert!(o.expiring_key_versions.is_empty());
        let (_, o) = go(&[
            "--credentials",
            "ASIAONE:s1:t1",
            "--credentials",
            "AKIATWO:s2",
            "--expired-credentials",
            "ASIAOLD:s3:t3",
            "--long-term-keys-are-tasks",
            "--task-region",
            "eu-west-1",
            "--clock-offset",
            "-20m",
            "--key-versions",
            "1,2,3",
            "--rotation-timestamp",
            "1700000000",
        ])
        .unwrap();
        let ids: Vec<&str> = o
            .credentials
            .iter()
            .map(|c| c.access_key_id.as_str())
            .collect();
        assert_eq!(ids, ["ASIAONE", "AKIATWO"]);
        assert!(o.expired_credentials[0].expired);
        assert!(o.long_term_keys_are_tasks);
        assert_eq!(o.task_region.as_deref(), Some("eu-west-1"));
        assert_eq!(o.clock_offset_ms, -1_200_000);
        assert_eq!(o.expiring_key_versions, [1, 2]);
        let (_, o) = go(&[
            "--key-versions",
            "1,2",
            "--rotation-timestamp",
            "1",
            "--expiring-key-versions",
            "2",
        ])
        .unwrap();
        assert_eq!(o.expiring_key_versions, [2]);
        assert!(go(&["--rotation-timestamp", "1"]).is_err());
        assert!(go(&["--key-versions", "1,2", "--expiring-key-versions", "1"]).is_err());
        assert!(go(&[
            "--credentials",
            "ASIADUP:s",
            "--expired-credentials",
            "ASIADUP:s:t"
        ])
        .is_err());
        assert!(matches!(parse(["--list-faults"]), Ok(Parsed::ListFaults)));
        assert_eq!(parse_signed_duration("+1.5s"), Ok(1500));
        assert!(parse_signed_duration("--1s").is_err());
    }

    #[test]
    fn license_options() {
        let (_, o) = go(&[]).unwrap();
        assert_eq!(o.license.product_sku, DEFAULT_PRODUCT_SKU);
        assert_eq!(
            o.license.entitlements,
            LicenseConfig::default().entitlements
        );
        assert!(o.license.licensed);
        assert_eq!(o.license.consumption_ttl, Duration::from_secs(3600));
        let (_, o) = go(&[
            "--product-sku",
            "sku-1",
            "--license-entitlement",
            "Pro",
            "--license-entitlement",
            "Users=3",
            "--no-license",
            "--consumption-ttl",
            "2s",
            "--license-fault",
            "CheckoutLicense=server-internal@1*2",
        ])
        .unwrap();
        assert_eq!(o.license.product_sku, "sku-1");
        let names: Vec<&str> = o
            .license
            .entitlements
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(names, ["Pro", "Users"]);
        assert!(!o.license.licensed);
        assert_eq!(o.license.consumption_ttl, Duration::from_secs(2));
        assert_eq!(o.license.faults.len(), 1);
        for bad in [
            &[
                "--license-fault",
                "ExtendLicenseConsumption=no-entitlements-allowed",
            ][..],
            &["--license-fault", "CheckoutLicense=conflict"][..],
            &["--license-entitlement", "A", "--license-entitlement", "A=2"][..],
            &["--consumption-ttl", "0"][..],
            &["--product-sku", ""][..],
        ] {
            assert!(go(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn token_exchange_options() {
        let (_, o) = go(&[]).unwrap();
        assert_eq!(
            o.anywhere.role_arn(),
            "arn:aws:iam::111122223333:role/service-role/AWSMarketplaceLicenseTokenConsumptionRole"
        );
        let (m, o) = go(&[
            "run",
            "--anywhere",
            "--token-issuer-account",
            "444455556666",
            "--access-token-ttl",
            "2s",
            "--role-credentials-ttl",
            "3s",
            "--license-fault",
            "GetAccessToken=server-internal*1",
            "--license-fault",
            "CheckoutLicense=server-internal",
            "--sts-fault",
            "AssumeRoleWithWebIdentity=throttling@1",
            "--",
            "true",
        ])
        .unwrap();
        assert!(matches!(m, Mode::Run { .. }) && o.anywhere_run);
        assert_eq!(
            o.anywhere.role_arn(),
            "arn:aws:iam::444455556666:role/service-role/AWSMarketplaceLicenseTokenConsumptionRole"
        );
        assert_eq!(o.anywhere.access_token_ttl, Duration::from_secs(2));
        assert_eq!(
            o.anywhere.role_credentials_ttl,
            Some(Duration::from_secs(3))
        );
        assert_eq!((o.anywhere.faults.len(), o.license.faults.len()), (2, 1));
        match go(&[
            "revoke-token",
            "--url",
            "http://127.0.0.1:1",
            "--token-file",
            "t",
        ]) {
            Ok((Mode::RevokeToken { url, token_file }, _)) => {
                assert_eq!(
                    (url.as_str(), token_file),
                    ("http://127.0.0.1:1", PathBuf::from("t"))
                )
            }
            other => panic!("{other:?}"),
        }
        for (bad, says) in [
            (&["--token-issuer-account", "12"][..], "12 digits"),
            (&["--license-role-arn", "role"][..], "not a role ARN"),
            (&["--access-token-ttl", "0"][..], "1s or longer"),
            (&["--anywhere"][..], "--anywhere is for run"),
            (&["revoke-token", "--url", "http://x"][..], "--token-file"),
            (&["--url", "http://x"][..], "--url"),
        ] {
            let e = go(bad).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }

    #[test]
    fn verbosity_and_write_key_dir() {
        let (_, o) = go(&["run", "--", "true"]).unwrap();
        assert_eq!(o.verbosity, Verbosity::Summary);
        assert_eq!(o.write_key_dir, None);
        let (_, o) = go(&["run", "--quiet", "--quiet", "--", "true"]).unwrap();
        assert_eq!(o.verbosity, Verbosity::Quiet);
        let (_, o) = go(&["run", "--verbose", "--write-key-dir", "k", "--", "true"]).unwrap();
        assert_eq!(o.verbosity, Verbosity::Verbose);
        assert_eq!(o.write_key_dir, Some(PathBuf::from("k")));
        let (_, o) = go(&["serve", "--write-key-dir", "k"]).unwrap();
        assert_eq!(o.write_key_dir, Some(PathBuf::from("k")));
        for (bad, says) in [
            (
                &["run", "--quiet", "--verbose", "--", "true"][..],
                "give one of them",
            ),
            (&["serve", "--quiet"][..], "--quiet is for run"),
            (&["--verbose"][..], "--verbose is for run"),
            (&["--write-key-dir", ""][..], "--write-key-dir: empty path"),
        ] {
            let e = go(bad).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn a_pair_can_be_spelled_out_with_access_key_id_and_secret_access_key() {
        let (_, o) = go(&[
            "serve",
            "--access-key-id",
            "AKIAEXAMPLE0000001",
            "--secret-access-key",
            "secret1",
            "--access-key-id",
            "ASIAEXAMPLE0000002",
            "--secret-access-key",
            "secret2",
            "--session-token",
            "token2",
        ])
        .unwrap();
        let pairs: Vec<_> = o
            .credentials
            .iter()
            .map(|c| {
                (
                    c.access_key_id.as_str(),
                    c.secret_access_key.as_str(),
                    c.session_token.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            pairs,
            [
                ("AKIAEXAMPLE0000001", "secret1", None),
                ("ASIAEXAMPLE0000002", "secret2", Some("token2")),
            ]
        );
        for bad in [
            &["serve", "--secret-access-key", "s"][..],
            &["serve", "--access-key-id", "AKIAEXAMPLE0000001"][..],
            &[
                "serve",
                "--access-key-id",
                "AKIAEXAMPLE0000001",
                "--secret-access-key",
                "a",
                "--secret-access-key",
                "b",
            ][..],
        ] {
            assert!(go(bad).is_err(), "{bad:?}");
        }
    }
}
