//! Owns the command line: flags, `--help`, `--version`, and where the workload's command starts.

use std::ffi::OsString;

/// What the command line asked for, before the environment is consulted.
#[derive(Debug, Default, Clone)]
pub struct Args {
    pub product_code: Option<String>,
    pub public_key_version: Option<String>,
    pub public_key_file: Option<OsString>,
    pub public_key_dir: Option<OsString>,
    pub timeout: Option<String>,
    pub attempt_timeout: Option<String>,
    pub max_token_age: Option<String>,
    pub on_transient_error: Option<String>,
    pub result_file: Option<OsString>,
    pub termination_log: Option<OsString>,
    pub log_format: Option<String>,
    pub endpoint_url: Option<String>,
    pub pricing: Option<String>,
    pub product_sku: Option<String>,
    /// `--entitlement`, in order (repeatable).
    pub entitlements: Vec<String>,
    pub seat: Option<String>,
    pub grace: Option<String>,
    /// The workload: empty in init mode.
    pub command: Vec<OsString>,
}

#[derive(Debug)]
pub enum Parsed {
    Run(Box<Args>),
    /// `mpgate verify`: check a hand-over instead of making one.
    Verify(Box<Args>),
    Help,
    Version,
}

/// A command line mpgate cannot use; always exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0} (run 'mpgate --help' for the options)")]
pub struct UsageError(String);

pub const USAGE: &str = "\
mpgate: gate a container on the buyer's AWS Marketplace entitlement, then run the workload

Usage: mpgate [OPTIONS] [--] [COMMAND [ARG...]]
       mpgate verify [--result-file PATH] [KEY OPTIONS]

Hourly pricing calls AWS Marketplace Metering RegisterUsage with a fresh nonce, verifies the
signed answer, then execs COMMAND in place (same PID and stdio). Contract pricing checks the
entitlements out of the buyer's AWS License Manager license instead. Without COMMAND (init
mode) it exits 0 when the buyer is entitled. Every option can also be set by the environment
variable in brackets; a flag wins over its variable.

Options:
      --product-code CODE        product code from the AWS Marketplace Management Portal [MPGATE_PRODUCT_CODE]
      --public-key-version N     public key version (default: the highest in the key directory, else 1) [MPGATE_PUBLIC_KEY_VERSION]
      --public-key-file PATH     PEM RSA public key for that version [MPGATE_PUBLIC_KEY_FILE]
                                 (or the PEM itself in MPGATE_PUBLIC_KEY)
      --public-key-dir DIR       key ring: one public-key-v<N>.pem per key version [MPGATE_PUBLIC_KEY_DIR]
      --timeout DURATION         deadline of the whole entitlement check (default 30s) [MPGATE_TIMEOUT]
      --attempt-timeout DURATION deadline of one attempt (default: a third of --timeout, at most 10s) [MPGATE_ATTEMPT_TIMEOUT]
      --max-token-age DURATION   oldest accepted token 'iat' (default 300s) [MPGATE_MAX_TOKEN_AGE]
      --on-transient-error MODE  deny | allow: start unverified when only the service is unreachable (default deny) [MPGATE_ON_TRANSIENT_ERROR]
      --result-file PATH         write the outcome as JSON here [MPGATE_RESULT_FILE]
      --termination-log PATH     write a one-line failure reason here (default /dev/termination-log if writable) [MPGATE_TERMINATION_LOG]
      --log-format FORMAT        auto | text | json (default auto: text on a terminal) [MPGATE_LOG_FORMAT]
      --endpoint-url URL         the service's endpoint (default: the SDK's, e.g. AWS_ENDPOINT_URL_MARKETPLACE_METERING
                                 or, for contract pricing, AWS_ENDPOINT_URL_LICENSE_MANAGER)
      --pricing MODEL            hourly (RegisterUsage, the default) | contract (License Manager) [MPGATE_PRICING]

Contract pricing (--pricing contract; the product code and key options are not used):
      --product-sku SKU          the product's SKU: its product ID in the AWS Marketplace Management Portal [MPGATE_PRODUCT_SKU]
      --entitlement SPEC         what to check out, repeatable: NAME (a feature), NAME=VALUE (VALUE of a counted
                                 entitlement), NAME=VALUE:UNIT (another License Manager unit) [MPGATE_ENTITLEMENTS, comma-separated]
      --seat MODE                check (check out, check back in, run) | hold (keep the seat while COMMAND
                                 runs: mpgate stays its parent and extends the checkout) (default check) [MPGATE_SEAT]
      --grace DURATION           with hold: how long COMMAND gets between SIGTERM and SIGKILL when the license
                                 is lost (default 30s) [MPGATE_GRACE]
  -h, --help                     print this help
  -V, --version                  print the version

mpgate verify checks, from inside the workload, the token mpgate handed over (MPGATE_SIGNATURE
and MPGATE_NONCE, or --result-file) against the product code and key: exit 0 or 12. A
workload named 'verify' is run as 'mpgate -- verify'. A pinned build (see 'mpgate --version')
refuses product code and key options.

DURATION is a number with an optional unit: 30, 30s, 1500ms, 2m.
Log filter: MPGATE_LOG (default info). AWS region and credentials come from the standard
AWS_* variables, profile files, ECS/EKS container credentials, IRSA or IMDS.
Exit codes: 0 entitled, 2 usage, 10 not entitled (with hold: the license was lost), 11
platform not supported, 12 token or answer rejected, 13 request refused, 14 service
unreachable (with hold: until the seat expired), 15 no region or credentials, 126/127
command not executable/found, 128+N interrupted by signal N before the hand-over; with
hold, otherwise COMMAND's own exit status.
";

/// Parses mpgate's arguments (without the program name).
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Parsed, UsageError> {
    let mut args = args.into_iter().peekable();
    // `verify` as the first word is the subcommand; a workload of that name is `mpgate -- verify`.
    if args.peek().is_some_and(|a| a == "verify") {
        args.next();
        return match parse_options(args)? {
            Parsed::Run(options) => verify_options(options),
            Parsed::Help => Ok(Parsed::Help),
            other => Ok(other),
        };
    }
    parse_options(args)
}

/// Only the options that say what to trust apply to `verify`; `--result-file` is read, not written.
fn verify_options(options: Box<Args>) -> Result<Parsed, UsageError> {
    let ignored = [
        (options.timeout.is_some(), "--timeout"),
        (options.attempt_timeout.is_some(), "--attempt-timeout"),
        (options.on_transient_error.is_some(), "--on-transient-error"),
        (options.termination_log.is_some(), "--termination-log"),
        (options.endpoint_url.is_some(), "--endpoint-url"),
        (options.pricing.is_some(), "--pricing"),
        (options.product_sku.is_some(), "--product-sku"),
        (!options.entitlements.is_empty(), "--entitlement"),
        (options.seat.is_some(), "--seat"),
        (options.grace.is_some(), "--grace"),
        (!options.command.is_empty(), "COMMAND"),
    ];
    match ignored.iter().find(|(given, _)| *given) {
        Some((_, name)) => Err(UsageError(format!(
            "mpgate verify takes no {name}: it only checks the hand-over"
        ))),
        None => Ok(Parsed::Verify(options)),
    }
}

fn parse_options(args: impl IntoIterator<Item = OsString>) -> Result<Parsed, UsageError> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_args(args);
    let mut out = Args::default();
    while let Some(arg) = parser.next().map_err(usage)? {
        match arg {
            Short('h') | Long("help") => return Ok(Parsed::Help),
            Short('V') | Long("version") => return Ok(Parsed::Version),
            Long("product-code") => out.product_code = Some(string(&mut parser)?),
            Long("public-key-version") => out.public_key_version = Some(string(&mut parser)?),
            Long("public-key-file") => out.public_key_file = Some(parser.value().map_err(usage)?),
            Long("public-key-dir") => out.public_key_dir = Some(parser.value().map_err(usage)?),
            Long("timeout") => out.timeout = Some(string(&mut parser)?),
            Long("attempt-timeout") => out.attempt_timeout = Some(string(&mut parser)?),
            Long("max-token-age") => out.max_token_age = Some(string(&mut parser)?),
            Long("on-transient-error") => out.on_transient_error = Some(string(&mut parser)?),
            Long("result-file") => out.result_file = Some(parser.value().map_err(usage)?),
            Long("termination-log") => out.termination_log = Some(parser.value().map_err(usage)?),
            Long("log-format") => out.log_format = Some(string(&mut parser)?),
            Long("endpoint-url") => out.endpoint_url = Some(string(&mut parser)?),
            Long("pricing") => out.pricing = Some(string(&mut parser)?),
            Long("product-sku") => out.product_sku = Some(string(&mut parser)?),
            Long("entitlement") => out.entitlements.push(string(&mut parser)?),
            Long("seat") => out.seat = Some(string(&mut parser)?),
            Long("grace") => out.grace = Some(string(&mut parser)?),
            Value(program) => {
                // Everything from the first operand on belongs to the workload, untouched:
                // `mpgate app --verbose` must pass `--verbose` to app. lexopt has already
                // consumed a `--` separator, if any, before yielding this operand.
                out.command.push(program);
                out.command.extend(parser.raw_args().map_err(usage)?);
                break;
            }
            other => return Err(usage(other.unexpected())),
        }
    }
    Ok(Parsed::Run(Box::new(out)))
}

fn string(parser: &mut lexopt::Parser) -> Result<String, UsageError> {
    use lexopt::ValueExt;
    parser.value().map_err(usage)?.string().map_err(usage)
}

fn usage(e: lexopt::Error) -> UsageError {
    UsageError(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Args {
        match parse(args.iter().map(OsString::from)).unwrap() {
            Parsed::Run(a) => *a,
            other => panic!("expected Run, got {other:?}"),
        }
    }

    #[test]
    fn flags_take_values_in_both_spellings() {
        let a = run(&["--product-code", "abc", "--timeout=5s"]);
        assert_eq!(a.product_code.as_deref(), Some("abc"));
        assert_eq!(a.timeout.as_deref(), Some("5s"));
        assert!(a.command.is_empty());
    }

    #[test]
    fn the_command_and_its_flags_are_left_untouched() {
        let a = run(&["--product-code", "p", "app", "--timeout", "x", "--"]);
        assert_eq!(a.command, ["app", "--timeout", "x", "--"]);
        let b = run(&["--", "--weird-name", "-h"]);
        assert_eq!(b.command, ["--weird-name", "-h"]);
    }

    #[test]
    fn unknown_flags_and_missing_values_are_usage_errors() {
        let e = parse(["--bogus"].map(OsString::from)).unwrap_err();
        assert!(e.to_string().contains("--bogus"), "{e}");
        assert!(parse(["--timeout"].map(OsString::from)).is_err());
    }

    #[test]
    fn verify_is_a_subcommand_only_as_the_first_word() {
        let parsed = |args: &[&str]| parse(args.iter().map(OsString::from));
        assert!(matches!(parsed(&["verify"]), Ok(Parsed::Verify(_))));
        match parsed(&["verify", "--result-file", "r.json"]) {
            Ok(Parsed::Verify(a)) => assert_eq!(a.result_file.as_deref(), Some("r.json".as_ref())),
            other => panic!("{other:?}"),
        }
        assert_eq!(run(&["--", "verify"]).command, ["verify"]);
        assert_eq!(run(&["app", "verify"]).command, ["app", "verify"]);
        let e = parsed(&["verify", "app"]).unwrap_err();
        assert!(e.to_string().contains("takes no COMMAND"), "{e}");
    }

    #[test]
    fn help_and_version() {
        assert!(matches!(
            parse(["-h"].map(OsString::from)),
            Ok(Parsed::Help)
        ));
        assert!(matches!(
            parse(["--version"].map(OsString::from)),
            Ok(Parsed::Version)
        ));
    }
}
