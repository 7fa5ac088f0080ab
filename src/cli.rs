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
    /// `--dimension`, in order (repeatable): usage pricing's dimension API names.
    pub dimensions: Vec<String>,
    pub start_dimension: Option<String>,
    pub ledger: Option<OsString>,
    pub usage_socket: Option<OsString>,
    pub usage_listen: Option<String>,
    pub send_jitter: Option<String>,
    pub flush_timeout: Option<String>,
    pub send_zero: bool,
    pub scrape: Option<String>,
    pub scrape_interval: Option<String>,
    /// `mpgate verify --renew`: a result file too old is renewed by a fresh check.
    pub renew: bool,
    /// The workload: empty in init mode.
    pub command: Vec<OsString>,
}

/// `mpgate lease watch`'s command line.
#[derive(Debug, Default, Clone)]
pub struct WatchArgs {
    pub grace: Option<String>,
    /// The workload: never empty.
    pub command: Vec<OsString>,
}

#[derive(Debug)]
pub enum Parsed {
    Run(Box<Args>),
    /// `mpgate verify`: check a hand-over instead of making one.
    Verify(Box<Args>),
    /// `mpgate lease watch`: run a command while a held seat's heartbeat keeps coming.
    LeaseWatch(WatchArgs),
    /// `mpgate lease watch`'s own help ([`LEASE_USAGE`]).
    LeaseHelp,
    /// The gate's help ([`USAGE`]).
    Help,
    /// `mpgate verify`'s own help ([`VERIFY_USAGE`]).
    VerifyHelp,
    Version,
    /// `mpgate usage add|show`: the metering agent's client.
    Usage(UsageArgs),
    /// `mpgate usage --help` ([`USAGE_CLIENT_USAGE`]).
    UsageHelp,
    /// A `mpgate usage` command line it cannot use: said on stderr, exit 2.
    UsageRefused(String),
}

/// `mpgate usage`: what to ask the metering agent, and where it listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageArgs {
    pub action: UsageAction,
    /// `--socket`; else `MPGATE_USAGE_SOCKET`, else the socket in `MPGATE_LEDGER_DIR`.
    pub socket: Option<OsString>,
    /// `--tag K=V`, in order (repeatable).
    pub tags: Vec<String>,
}

/// What `mpgate usage` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsageAction {
    /// `add DIMENSION N`: add N units of DIMENSION to the current hour, durably.
    Add { dimension: String, quantity: String },
    /// `show`: what the ledger holds.
    Show,
}

/// A command line mpgate cannot use; always exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{message} (run '{help}' for the options)")]
pub struct UsageError {
    message: String,
    help: &'static str,
    /// A `mpgate verify` command line: reported as verify reports, never in a result file.
    pub verify: bool,
    /// A `mpgate lease watch` command line: reported on stderr alone, never in a result file
    /// (the gate that started the workload owns that).
    pub lease: bool,
}

impl UsageError {
    fn gate(message: String) -> Self {
        UsageError {
            message,
            help: "mpgate --help",
            verify: false,
            lease: false,
        }
    }

    fn verify(message: String) -> Self {
        UsageError {
            message,
            help: "mpgate verify --help",
            verify: true,
            lease: false,
        }
    }

    fn lease(message: String) -> Self {
        UsageError {
            message,
            help: "mpgate lease watch --help",
            verify: false,
            lease: true,
        }
    }
}

pub const USAGE: &str = "\
mpgate: gate a container on the buyer's AWS Marketplace entitlement, then run the workload

Usage: mpgate [OPTIONS] [--] [COMMAND [ARG...]]
       mpgate verify [OPTIONS]    check the hand-over from inside the workload ('mpgate verify --help')
       mpgate lease watch [--grace DURATION] -- COMMAND [ARG...]
                                  run COMMAND while the seat mpgate --seat hold holds keeps its heartbeat
                                  ('mpgate lease watch --help')
       mpgate help                print this help (as --help)
       mpgate usage add DIMENSION N   report usage to the metering agent ('mpgate usage --help')

Hourly pricing calls AWS Marketplace Metering RegisterUsage with a fresh nonce, verifies the
signed answer, then execs COMMAND in place (same PID and stdio; the hand-over is bound to that
process). Contract pricing checks the entitlements out of the buyer's AWS License Manager
license instead. Usage pricing (custom metering) makes one MeterUsage call of quantity 0 at
start, then stays COMMAND's parent as its metering agent (without COMMAND: a sidecar until
SIGTERM). Without COMMAND (init mode) hourly and contract pricing exit 0 when the buyer is
entitled. Every option can also be set by the environment variable in brackets; a flag wins
over its variable.

Options:
      --product-code CODE        product code from the AWS Marketplace Management Portal [MPGATE_PRODUCT_CODE]
      --public-key-version N     public key version (default: the highest in the key directory, else 1) [MPGATE_PUBLIC_KEY_VERSION]
      --public-key-file PATH     PEM RSA public key for that version [MPGATE_PUBLIC_KEY_FILE]
                                 (or the PEM itself in MPGATE_PUBLIC_KEY)
      --public-key-dir DIR       key ring: one public-key-v<N>.pem per key version [MPGATE_PUBLIC_KEY_DIR]
      --timeout DURATION         deadline of the whole entitlement check (default 30s) [MPGATE_TIMEOUT]
      --attempt-timeout DURATION deadline of one attempt: connect, send, answer (default: a third of --timeout,
                                 between 500ms and 10s; never more than --timeout) [MPGATE_ATTEMPT_TIMEOUT]
      --max-token-age DURATION   oldest accepted token 'iat' (default 300s) [MPGATE_MAX_TOKEN_AGE]
      --on-transient-error MODE  deny | allow: start unverified when only the service is unreachable (default deny) [MPGATE_ON_TRANSIENT_ERROR]
      --result-file PATH         write the outcome as JSON here [MPGATE_RESULT_FILE]
      --termination-log PATH     write a one-line failure reason here (default /dev/termination-log if writable) [MPGATE_TERMINATION_LOG]
      --log-format FORMAT        auto | text | json (default auto: text on a terminal) [MPGATE_LOG_FORMAT]
      --endpoint-url URL         the service's endpoint (default: the SDK's, e.g. AWS_ENDPOINT_URL_MARKETPLACE_METERING
                                 or, for contract pricing, AWS_ENDPOINT_URL_LICENSE_MANAGER)
      --pricing MODEL            hourly (RegisterUsage, the default) | contract (License Manager) | usage
                                 (MeterUsage: custom metering dimensions) [MPGATE_PRICING]

Contract pricing (--pricing contract; the product code and key options are not used):
      --product-sku SKU          the product's SKU: its product ID in the AWS Marketplace Management Portal [MPGATE_PRODUCT_SKU]
      --entitlement SPEC         what to check out, repeatable: NAME (a feature), NAME=VALUE (VALUE of a counted
                                 entitlement), NAME=VALUE:UNIT (another License Manager unit) [MPGATE_ENTITLEMENTS, comma-separated]
      --seat MODE                check (check out, check back in, run) | hold (keep the seat while COMMAND
                                 runs: mpgate stays its parent and extends the checkout) (default check) [MPGATE_SEAT]
      --grace DURATION           with hold: how long COMMAND gets between SIGTERM and SIGKILL when the license
                                 is lost (default 30s) [MPGATE_GRACE]

Usage pricing (--pricing usage; --product-code as for hourly; the key and token-age options are not
used: MeterUsage answers with no signed token, so the answer is trusted through TLS to the endpoint,
which only a pinned build fixes):
      --dimension NAME           a pricing dimension's API name from the AWS Marketplace Management Portal,
                                 repeatable, 1 to 24 [MPGATE_DIMENSIONS, comma-separated]; or
                                 NAME=METRIC[{label=\"v\"}]:counter|max|avg[*FACTOR] to read it from --scrape: a
                                 counter's increase or a gauge's max or mean over the hour, times FACTOR, rounded up
      --scrape URL               the workload's Prometheus metrics, on loopback (e.g. http://127.0.0.1:9100/metrics)
                                 [MPGATE_SCRAPE_URL]
      --scrape-interval DURATION how often the metrics are read (default 15s) [MPGATE_SCRAPE_INTERVAL]
      --start-dimension NAME     the dimension of the start's MeterUsage of quantity 0, whose record locks that
                                 dimension's first hour (default: the first dimension) [MPGATE_START_DIMENSION]
      --ledger DIR               where acknowledged usage is kept until AWS has recorded it (an emptyDir or a task
                                 volume; default: memory, which a crash loses) [MPGATE_LEDGER_DIR]
      --usage-socket PATH        the push API's Unix socket (default DIR/usage.sock) [MPGATE_USAGE_SOCKET]
      --usage-listen ADDR:PORT   also serve the push API on TCP, loopback only (e.g. 127.0.0.1:8787; the workload
                                 gets MPGATE_USAGE_URL) [MPGATE_USAGE_LISTEN]
      --send-jitter DURATION     most a record waits after its hour ends (default 5m, at most a tenth of the
                                 hour) [MPGATE_SEND_JITTER]
      --flush-timeout DURATION   at a stop, how long the partial hour's records may take (default 10s) [MPGATE_FLUSH_TIMEOUT]
      --send-zero                send a record of 0 for a dimension without usage in an hour [MPGATE_SEND_ZERO=true]
      --grace DURATION           how long COMMAND gets between SIGTERM and SIGKILL at a stop (default 30s) [MPGATE_GRACE]
                                 With COMMAND mpgate stays its parent and meters beside it; without COMMAND it is a
                                 sidecar until SIGTERM. The workload reports usage with 'mpgate usage add DIMENSION N'
                                 or POST /v1/usage on the socket in MPGATE_USAGE_SOCKET.
  -h, --help                     print this help
  -V, --version                  print the version

mpgate verify checks, from inside the workload, the token mpgate handed over (MPGATE_SIGNATURE
and MPGATE_SALT, or --result-file) against the product code and key: exit 0 or 12; see
'mpgate verify --help'. A workload named 'verify', 'help' or 'usage' is run as
'mpgate -- verify', 'mpgate -- help' or 'mpgate -- usage' (and one named 'lease' as
'mpgate -- lease'). A pinned build (see 'mpgate --version') refuses product code and key
options.

DURATION is a number with an optional unit: 30, 30s, 1500ms, 2m.
MPGATE_METERING_HOUR shortens usage pricing's hour for tests and demos (e.g. 2s; AWS's is 3600s).
Log filter: MPGATE_LOG (default info). AWS region and credentials come from the standard
AWS_* variables, profile files, ECS/EKS container credentials, IRSA or IMDS.
Exit codes: 0 entitled, 2 usage, 10 not entitled (with hold: the license was lost), 11
platform not supported, 12 token or answer rejected, 13 request refused, 14 service
unreachable (with hold: until the seat expired), 15 no region or credentials, 101 a bug in
mpgate (it panicked: please report it), 126/127 command not executable/found, 128+N
interrupted by signal N before the hand-over; with hold or usage pricing, otherwise COMMAND's
own exit status.
";

pub const USAGE_CLIENT_USAGE: &str = "\
mpgate usage: report usage to the metering agent of a usage-priced product

Usage: mpgate usage add DIMENSION N [--tag K=V]... [--socket PATH]
       mpgate usage show [--socket PATH]

'add' adds N units (a whole number, 0 to 2147483647) of DIMENSION to the current metering
hour and returns once the agent has synced them to its ledger; 'show' prints the hours the
ledger holds (open, unsent, sending, recorded) as JSON. The agent is 'mpgate --pricing usage'
running as this workload's parent or as a sidecar.

Options:
      --socket PATH              the agent's socket (default: MPGATE_USAGE_SOCKET, which the agent sets for its
                                 workload, else MPGATE_LEDGER_DIR/usage.sock, as a sidecar's neighbours share it)
      --tag K=V                  a tag of this usage, repeatable (at most 5): the hour's record allocates the
                                 usage to its tag sets (UsageAllocations, for the buyer's cost allocation)
  -h, --help                     print this help

Exit codes: 0 recorded, 2 refused (unknown dimension, bad quantity: nothing recorded) or a bad
command line, 14 the agent cannot be reached or its ledger cannot be written (nothing recorded).
";

pub const VERIFY_USAGE: &str = "\
mpgate verify: check, from inside the workload, that mpgate verified the buyer's entitlement

Usage: mpgate verify [OPTIONS]
       mpgate verify --result-file PATH [--renew] [OPTIONS]

Checks the token mpgate handed over: in this process's environment (MPGATE_SIGNATURE and
MPGATE_SALT, set by 'mpgate -- COMMAND'), or with --result-file in the result file an init
container's mpgate wrote (read, never written). The token must be signed by AWS Marketplace
under the key below, for the product code and key version, at most the max token age ago, and
for the nonce the salt derives here: for the process mpgate exec'd, which must be the one that
runs 'mpgate verify' (its parent: sh -c 'mpgate verify && exec server') or 'mpgate verify'
itself; or, for a result file, for this node's boot and the pod MPGATE_POD_UID names, and the
file must record outcome 'verified'. A copy of the hand-over in any other process fails, whatever
the age. No call to AWS: exit 0 when verified, 12 when not, 2 for a bad option or key, or
without a readable /proc.

Options:
      --result-file PATH         check this result file instead of the environment
      --renew                    with --result-file: when the file's token is only too old (the app container
                                 restarted after its init container's check), check the entitlement again as
                                 the gate does (RegisterUsage with a fresh nonce) and exit with the gate's code
      --product-code CODE        product code from the AWS Marketplace Management Portal [MPGATE_PRODUCT_CODE]
      --public-key-version N     public key version (default: the highest in the key directory, else 1) [MPGATE_PUBLIC_KEY_VERSION]
      --public-key-file PATH     PEM RSA public key for that version [MPGATE_PUBLIC_KEY_FILE]
                                 (or the PEM itself in MPGATE_PUBLIC_KEY)
      --public-key-dir DIR       key ring: one public-key-v<N>.pem per key version [MPGATE_PUBLIC_KEY_DIR]
      --max-token-age DURATION   oldest accepted token 'iat' (default 300s) [MPGATE_MAX_TOKEN_AGE]
      --log-format FORMAT        auto | text | json (default auto: text on a terminal) [MPGATE_LOG_FORMAT]
  -h, --help                     print this help

With --renew only, as for the gate ('mpgate --help'):
      --timeout DURATION         deadline of the whole entitlement check (default 30s) [MPGATE_TIMEOUT]
      --attempt-timeout DURATION deadline of one attempt [MPGATE_ATTEMPT_TIMEOUT]
      --endpoint-url URL         the service's endpoint (default: the SDK's, e.g. AWS_ENDPOINT_URL_MARKETPLACE_METERING)

--renew renews nothing else: a token that fails any other check (signature, product code, key
version, nonce: another node, boot or pod), a file that records no verified outcome, or a
missing file is exit 12 without a call to AWS. The renewed check never starts unverified
(MPGATE_ON_TRANSIENT_ERROR is not used) and does not rewrite the result file; its exit codes
are the gate's (0, 2, 10 to 15, 128+N).
AWS region and credentials come from the standard AWS_* variables, as for the gate.

Hourly pricing only: a contract checkout or a usage-priced start (MeterUsage) carries no token
mpgate can check (exit 2). A pinned
build (see 'mpgate --version') refuses the product code, key and age options. A workload named
'verify' is run as 'mpgate -- verify'.
";

pub const LEASE_USAGE: &str = "\
mpgate lease watch: run COMMAND only while mpgate --seat hold keeps its seat

Usage: mpgate lease watch [--grace DURATION] [--] COMMAND [ARG...]

With contract pricing and --seat hold, mpgate gives the workload a heartbeat (MPGATE_LEASE_FD):
a line at the checkout and at every extension with the time the seat has left. This runs
COMMAND as its child (signals forwarded, orphans reaped, its exit status passed on) and watches
the heartbeat on its own monotonic clock. When no heartbeat comes before the seat's expiry
(mpgate was frozen with SIGSTOP, or could not extend the seat), or mpgate is gone, License
Manager may give the seat to another copy: COMMAND gets SIGTERM, its process group SIGKILL
--grace later, and this exits 10. COMMAND does not inherit the heartbeat. Use it as the
workload of 'mpgate --seat hold -- mpgate lease watch -- COMMAND' for a workload not written in
Rust; a Rust workload watches in-process with mpgate_proof::lease::watch(), which cannot be
frozen without freezing the workload.

Options:
      --grace DURATION           how long COMMAND gets between SIGTERM and SIGKILL (default 10s)
  -h, --help                     print this help

Exit codes: 10 the heartbeat stopped (the seat may be lost), 2 usage (or MPGATE_LEASE_FD unset
or not mpgate's socket: not started by mpgate --seat hold), 126/127 COMMAND not executable/not
found, 128+N interrupted by signal N before COMMAND started; otherwise COMMAND's own exit
status, 128+N if signal N ended it.
";

/// Parses `mpgate lease watch`'s arguments (after `lease`).
fn lease_watch(mut args: impl Iterator<Item = OsString>) -> Result<Parsed, UsageError> {
    use lexopt::prelude::*;
    match args.next() {
        Some(word) if word == "watch" => {}
        Some(word) if word == "-h" || word == "--help" || word == "help" => {
            return Ok(Parsed::LeaseHelp)
        }
        other => {
            return Err(UsageError::lease(format!(
                "mpgate lease takes one subcommand, watch{} (a workload named 'lease' is run as 'mpgate -- lease')",
                other
                    .map(|o| format!(", not {:?}", o.to_string_lossy()))
                    .unwrap_or_default()
            )))
        }
    }
    let mut parser = lexopt::Parser::from_args(args);
    let mut out = WatchArgs::default();
    let lease = |e: lexopt::Error| UsageError::lease(e.to_string());
    while let Some(arg) = parser.next().map_err(lease)? {
        match arg {
            Short('h') | Long("help") => return Ok(Parsed::LeaseHelp),
            Long("grace") => {
                use lexopt::ValueExt;
                out.grace = Some(parser.value().map_err(lease)?.string().map_err(lease)?);
            }
            Value(program) => {
                out.command.push(program);
                out.command.extend(parser.raw_args().map_err(lease)?);
                break;
            }
            other => return Err(lease(other.unexpected())),
        }
    }
    if out.command.is_empty() {
        return Err(UsageError::lease(
            "mpgate lease watch needs COMMAND: 'mpgate lease watch -- COMMAND [ARG...]'".into(),
        ));
    }
    Ok(Parsed::LeaseWatch(out))
}

/// Parses mpgate's arguments (without the program name).
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Parsed, UsageError> {
    let mut args = args.into_iter().peekable();
    // `verify` and `help` as the first word are subcommands; a workload of either name is
    // `mpgate -- verify`, `mpgate -- help`.
    if args.peek().is_some_and(|a| a == "verify") {
        args.next();
        return match parse_options(args).map_err(|e| UsageError::verify(e.message))? {
            Parsed::Run(options) => verify_options(options),
            Parsed::Help => Ok(Parsed::VerifyHelp),
            other => Ok(other),
        };
    }
    if args.peek().is_some_and(|a| a == "lease") {
        args.next();
        return lease_watch(args);
    }
    if args.peek().is_some_and(|a| a == "usage") {
        args.next();
        return usage_client(args);
    }
    if args.peek().is_some_and(|a| a == "help") {
        args.next();
        return match args.next() {
            None => Ok(Parsed::Help),
            Some(topic) if topic == "verify" && args.peek().is_none() => Ok(Parsed::VerifyHelp),
            Some(other) => Err(UsageError::gate(format!(
                "mpgate help takes no {:?} (a workload named 'help' is run as 'mpgate -- help')",
                other.to_string_lossy()
            ))),
        };
    }
    match parse_options(args)? {
        Parsed::Run(options) if options.renew => Err(UsageError::gate(
            "--renew is an option of 'mpgate verify --result-file PATH'".into(),
        )),
        other => Ok(other),
    }
}

/// `mpgate usage add DIMENSION N [--tag K=V]... [--socket PATH]`, `mpgate usage show`. Read
/// by hand, not with lexopt: N may be `-1`, which the agent, not the parser, refuses.
fn usage_client(args: impl IntoIterator<Item = OsString>) -> Result<Parsed, UsageError> {
    let bad = |message: &str| {
        Ok(Parsed::UsageRefused(format!(
            "mpgate usage: {message} (run 'mpgate usage --help' for the options)"
        )))
    };
    let mut args = args.into_iter();
    let (mut words, mut socket, mut tags) = (Vec::new(), None, Vec::new());
    while let Some(arg) = args.next() {
        let Some(text) = arg.to_str() else {
            return bad("the arguments must be valid UTF-8");
        };
        let (name, inline) = match text.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name, Some(value.to_owned())),
            _ => (text, None),
        };
        match name {
            "-h" | "--help" => return Ok(Parsed::UsageHelp),
            "--socket" | "--tag" => {
                let Some(value) = inline.or_else(|| args.next()?.into_string().ok()) else {
                    return bad(&format!("{name} needs a value"));
                };
                if name == "--socket" {
                    socket = Some(OsString::from(value));
                } else {
                    tags.push(value);
                }
            }
            flag if flag.starts_with("--") => return bad(&format!("unknown option {flag}")),
            word => words.push(word.to_owned()),
        }
    }
    let action = match words.as_slice() {
        [add, dimension, quantity] if add == "add" => UsageAction::Add {
            dimension: dimension.clone(),
            quantity: quantity.clone(),
        },
        [show] if show == "show" && tags.is_empty() => UsageAction::Show,
        _ => {
            return bad(
                "use 'mpgate usage add DIMENSION N [--tag K=V]' or 'mpgate usage show' (a workload named 'usage' is run as 'mpgate -- usage')",
            )
        }
    };
    Ok(Parsed::Usage(UsageArgs {
        action,
        socket,
        tags,
    }))
}

/// Only the options that say what to trust apply to `verify`; `--result-file` is read, not
/// written. `--renew` also takes the options of the call it may make.
fn verify_options(options: Box<Args>) -> Result<Parsed, UsageError> {
    let call_options = [
        (options.timeout.is_some(), "--timeout"),
        (options.attempt_timeout.is_some(), "--attempt-timeout"),
        (options.endpoint_url.is_some(), "--endpoint-url"),
    ];
    let never = [
        (options.on_transient_error.is_some(), "--on-transient-error"),
        (options.termination_log.is_some(), "--termination-log"),
        (options.pricing.is_some(), "--pricing"),
        (options.product_sku.is_some(), "--product-sku"),
        (!options.entitlements.is_empty(), "--entitlement"),
        (options.seat.is_some(), "--seat"),
        (options.grace.is_some(), "--grace"),
        (!options.dimensions.is_empty(), "--dimension"),
        (options.start_dimension.is_some(), "--start-dimension"),
        (options.ledger.is_some(), "--ledger"),
        (options.usage_socket.is_some(), "--usage-socket"),
        (options.usage_listen.is_some(), "--usage-listen"),
        (options.send_jitter.is_some(), "--send-jitter"),
        (options.flush_timeout.is_some(), "--flush-timeout"),
        (options.send_zero, "--send-zero"),
        (options.scrape.is_some(), "--scrape"),
        (options.scrape_interval.is_some(), "--scrape-interval"),
        (!options.command.is_empty(), "COMMAND"),
    ];
    if let Some((_, name)) = never.iter().find(|(given, _)| *given) {
        return Err(UsageError::verify(format!(
            "mpgate verify takes no {name}: it only checks the hand-over"
        )));
    }
    if !options.renew {
        if let Some((_, name)) = call_options.iter().find(|(given, _)| *given) {
            return Err(UsageError::verify(format!(
                "mpgate verify takes no {name} without --renew: it only checks the hand-over"
            )));
        }
    }
    if options.renew && options.result_file.is_none() {
        return Err(UsageError::verify(
            "--renew needs --result-file PATH: it renews the check an init container recorded there (in entrypoint mode, 'mpgate -- COMMAND' checks on every start)".into(),
        ));
    }
    Ok(Parsed::Verify(options))
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
            Long("dimension") => out.dimensions.push(string(&mut parser)?),
            Long("start-dimension") => out.start_dimension = Some(string(&mut parser)?),
            Long("ledger") => out.ledger = Some(parser.value().map_err(usage)?),
            Long("usage-socket") => out.usage_socket = Some(parser.value().map_err(usage)?),
            Long("usage-listen") => out.usage_listen = Some(string(&mut parser)?),
            Long("send-jitter") => out.send_jitter = Some(string(&mut parser)?),
            Long("flush-timeout") => out.flush_timeout = Some(string(&mut parser)?),
            Long("send-zero") => out.send_zero = true,
            Long("scrape") => out.scrape = Some(string(&mut parser)?),
            Long("scrape-interval") => out.scrape_interval = Some(string(&mut parser)?),
            Long("renew") => out.renew = true,
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
    UsageError::gate(e.to_string())
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
    fn help_is_a_subcommand_only_as_the_first_word() {
        let parsed = |args: &[&str]| parse(args.iter().map(OsString::from));
        assert!(matches!(parsed(&["help"]), Ok(Parsed::Help)));
        assert!(matches!(
            parsed(&["help", "verify"]),
            Ok(Parsed::VerifyHelp)
        ));
        assert!(matches!(
            parsed(&["verify", "--help"]),
            Ok(Parsed::VerifyHelp)
        ));
        assert!(matches!(parsed(&["verify", "-h"]), Ok(Parsed::VerifyHelp)));
        assert_eq!(run(&["--", "help"]).command, ["help"]);
        assert_eq!(run(&["app", "help"]).command, ["app", "help"]);
        let e = parsed(&["help", "me"]).unwrap_err();
        assert!(e.to_string().contains("mpgate -- help"), "{e}");
    }

    #[test]
    fn renew_belongs_to_verify_with_a_result_file() {
        let parsed = |args: &[&str]| parse(args.iter().map(OsString::from));
        match parsed(&["verify", "--renew", "--result-file", "r", "--timeout", "5s"]) {
            Ok(Parsed::Verify(a)) => assert!(a.renew && a.timeout.is_some()),
            other => panic!("{other:?}"),
        }
        let e = parsed(&["verify", "--renew"]).unwrap_err();
        assert!(
            e.verify && e.to_string().contains("--renew needs --result-file"),
            "{e}"
        );
        assert!(e.to_string().contains("mpgate verify --help"), "{e}");
        let e = parsed(&["verify", "--result-file", "r", "--endpoint-url", "x"]).unwrap_err();
        assert!(e.to_string().contains("without --renew"), "{e}");
        let e = parsed(&[
            "verify",
            "--renew",
            "--result-file",
            "r",
            "--on-transient-error",
            "allow",
        ])
        .unwrap_err();
        assert!(
            e.to_string().contains("takes no --on-transient-error"),
            "{e}"
        );
        let e = parsed(&["--renew"]).unwrap_err();
        assert!(
            !e.verify && e.to_string().contains("mpgate verify --result-file"),
            "{e}"
        );
    }

    #[test]
    fn lease_watch_is_a_subcommand_with_a_grace_and_a_command() {
        let parsed = |args: &[&str]| parse(args.iter().map(OsString::from));
        match parsed(&[
            "lease", "watch", "--grace", "3s", "--", "app", "--grace", "x",
        ]) {
            Ok(Parsed::LeaseWatch(w)) => {
                assert_eq!(w.grace.as_deref(), Some("3s"));
                assert_eq!(w.command, ["app", "--grace", "x"]);
            }
            other => panic!("{other:?}"),
        }
        match parsed(&["lease", "watch", "app"]) {
            Ok(Parsed::LeaseWatch(w)) => assert!(w.grace.is_none() && w.command == ["app"]),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parsed(&["lease", "watch", "-h"]),
            Ok(Parsed::LeaseHelp)
        ));
        assert!(matches!(
            parsed(&["lease", "--help"]),
            Ok(Parsed::LeaseHelp)
        ));
        assert_eq!(run(&["--", "lease", "watch"]).command, ["lease", "watch"]);
        for (args, says) in [
            (&["lease"][..], "one subcommand, watch"),
            (&["lease", "hold"], "not \"hold\""),
            (&["lease", "watch"], "needs COMMAND"),
            (&["lease", "watch", "--"], "needs COMMAND"),
            (&["lease", "watch", "--timeout", "1s", "app"], "--timeout"),
            (&["lease", "watch", "--grace"], "--grace"),
        ] {
            let e = parsed(args).unwrap_err();
            assert!(e.lease && !e.verify, "{args:?}");
            assert!(e.to_string().contains(says), "{args:?}: {e}");
            assert!(e.to_string().contains("mpgate lease watch --help"), "{e}");
        }
    }

    #[test]
    fn usage_is_the_agent_s_client_only_as_the_first_word() {
        let parsed = |args: &[&str]| parse(args.iter().map(OsString::from)).unwrap();
        match parsed(&[
            "usage",
            "add",
            "nodes",
            "-1",
            "--tag=team=blue",
            "--socket",
            "/s",
        ]) {
            Parsed::Usage(u) => {
                assert_eq!(
                    u.action,
                    UsageAction::Add {
                        dimension: "nodes".into(),
                        quantity: "-1".into()
                    }
                );
                assert_eq!(u.tags, ["team=blue"]);
                assert_eq!(u.socket.as_deref(), Some("/s".as_ref()));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(parsed(&["usage", "show"]), Parsed::Usage(_)));
        assert!(matches!(parsed(&["usage", "--help"]), Parsed::UsageHelp));
        for bad in [
            &["usage"][..],
            &["usage", "add", "nodes"],
            &["usage", "add", "a", "1", "--bogus"],
        ] {
            match parsed(bad) {
                Parsed::UsageRefused(m) => assert!(m.contains("mpgate usage --help"), "{m}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        assert_eq!(run(&["--", "usage"]).command, ["usage"]);
        assert_eq!(run(&["app", "usage"]).command, ["app", "usage"]);
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
