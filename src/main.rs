//! mpgate: checks the buyer's AWS Marketplace entitlement, then execs the workload in place.

use std::process::ExitCode;
use std::time::Instant;

use mpgate::cli::{self, Parsed};
use mpgate::config::{self, ConfigError, LogFormat};
use mpgate::handover::{self, Next};
use mpgate::settings::path_setting;
use mpgate::{gate, logging, pinned, report::Reporter, verify};

/// What an unpinned gate says at start (docs/threat-model.md, "Residual risks": an unpinned build).
const UNPINNED: &str = "unpinned build: it trusts its environment; sell pinned builds";

fn main() -> ExitCode {
    let started = Instant::now();
    exit_101_on_panic();
    let env = |name: &str| mpgate::settings::var_os(name);
    let (args, usage_error) = match cli::parse(std::env::args_os().skip(1)) {
        Ok(Parsed::Help) => {
            print!("{}", cli::USAGE);
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::VerifyHelp) => {
            print!("{}", cli::VERIFY_USAGE);
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::Version) => {
            println!("mpgate {}", env!("CARGO_PKG_VERSION"));
            print!("{}", pinned::describe().unwrap_or_default());
            if let Some(variable) = config::token_variable(&env) {
                // Contract pricing's credentials: the role the token is exchanged for.
                println!("credentials: license token ({variable})");
            }
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::LeaseHelp) => {
            print!("{}", cli::LEASE_USAGE);
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::UsageHelp) => {
            print!("{}", cli::USAGE_CLIENT_USAGE);
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::Usage(args)) => return usage_client(&args, &env),
        Ok(Parsed::UsageRefused(message)) => {
            eprintln!("{message}");
            return ExitCode::from(mpgate::exit::code::USAGE);
        }
        Ok(Parsed::Verify(args)) => return verify(Ok(*args), &env, started),
        // Never the gate's result file: the gate that started the workload owns it.
        Ok(Parsed::LeaseWatch(args)) => return lease_watch(Ok(args), &env),
        Err(e) if e.lease => return lease_watch(Err(e), &env),
        // Reported as verify reports: never into a result file the gate would write.
        Err(e) if e.verify => return verify(Err(e), &env, started),
        Ok(Parsed::Run(args)) => (*args, None),
        Err(e) => (cli::Args::default(), Some(ConfigError::from(e))),
    };

    // Logging starts first so that even configuration errors come out in the chosen format.
    let logging_error = start_logging(args.log_format.clone(), &env);
    if !pinned::is_pinned() {
        // Once, before anything else: whoever sets this build's environment chooses its key,
        // endpoint and CA roots, so what it hands over proves only what that environment says.
        tracing::warn!(pinned = false, "{UNPINNED}");
    }
    let reporter = Reporter {
        result_file: path_setting(args.result_file.as_ref(), "MPGATE_RESULT_FILE", &env),
        termination_log: path_setting(
            args.termination_log.as_ref(),
            "MPGATE_TERMINATION_LOG",
            &env,
        ),
    };
    let preflight = usage_error.or(logging_error);

    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mpgate: error: cannot start the async runtime: {e}");
            return ExitCode::from(mpgate::exit::code::USAGE);
        }
    };
    // One entry into the runtime for the check and the report (each costs instructions).
    let next = runtime.block_on(async {
        let checked = gate::run(args, preflight, &env, started).await;
        handover::prepare(checked, &reporter, started).await
    });
    match next {
        Next::Exit(code) => code,
        Next::Exec(exec) => {
            // Stop the runtime (and its blocking DNS threads) before exec replaces the process.
            runtime.shutdown_timeout(std::time::Duration::from_millis(50));
            exec.run(&reporter)
        }
        Next::Supervise(hold) => runtime.block_on(hold.run(&reporter)),
        Next::Meter(metering) => runtime.block_on(metering.run(&reporter)),
    }
}

/// Release builds abort on panic (no unwinding code or tables: a smaller binary). A panic is
/// a bug; after its message, exit 101 as an unwinding panic would, never SIGABRT, so no
/// container sees a signal (or dumps core) for it.
fn exit_101_on_panic() {
    let print_message = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        print_message(info);
        std::process::exit(i32::from(mpgate::exit::code::BUG));
    }));
}

/// Starts logging in the chosen format; a bad format or filter is returned as a usage error.
fn start_logging(
    flag: Option<String>,
    env: &dyn Fn(&str) -> Option<std::ffi::OsString>,
) -> Option<ConfigError> {
    let (format, format_error) = match config::log_format(flag, env) {
        Ok(f) => (f, None),
        Err(e) => (LogFormat::Auto, Some(e)),
    };
    let filter_error = logging::init(format).map(|value| ConfigError::InvalidValue {
        name: "MPGATE_LOG",
        value,
        expected: "use a log filter such as info, debug or warn,mpgate=debug",
    });
    format_error.or(filter_error)
}

/// `mpgate usage add|show`: the metering agent's client. Its answer goes to stdout, a
/// refusal to stderr (no logging: a shell workload reads these lines).
fn usage_client(
    args: &cli::UsageArgs,
    env: &dyn Fn(&str) -> Option<std::ffi::OsString>,
) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mpgate usage: cannot start the async runtime: {e}");
            return ExitCode::from(mpgate::exit::code::USAGE);
        }
    };
    let done = runtime.block_on(mpgate::agent::client::run(args, env));
    if done.exit_code == 0 {
        println!("{}", done.output);
    } else {
        eprintln!("{}", done.output);
    }
    ExitCode::from(done.exit_code)
}

/// `mpgate verify`: logs the verdict like the gate does and exits 0, 12 or 2 (with `--renew`,
/// the gate's code).
fn verify(
    args: Result<cli::Args, cli::UsageError>,
    env: &dyn Fn(&str) -> Option<std::ffi::OsString>,
    started: Instant,
) -> ExitCode {
    let format = args.as_ref().ok().and_then(|a| a.log_format.clone());
    let checked = match (start_logging(format, env), args) {
        (Some(error), _) => Err(error.into()),
        (None, Err(usage)) => Err(ConfigError::from(usage).into()),
        (None, Ok(args)) => verify::run(&args, env, started),
    };
    match checked {
        Ok(message) => {
            tracing::info!("{message}");
            ExitCode::SUCCESS
        }
        Err(failure) => {
            let failure: mpgate::exit::Failure = failure;
            tracing::error!(
                exit_code = failure.exit_code(),
                outcome = failure.outcome().as_str(),
                "{failure}"
            );
            ExitCode::from(failure.exit_code())
        }
    }
}

/// `mpgate lease watch`: COMMAND run while a held seat's heartbeat keeps coming.
fn lease_watch(
    args: Result<cli::WatchArgs, cli::UsageError>,
    env: &dyn Fn(&str) -> Option<std::ffi::OsString>,
) -> ExitCode {
    if let Some(error) = start_logging(None, env) {
        tracing::error!(exit_code = mpgate::exit::code::USAGE, "{error}");
        return ExitCode::from(mpgate::exit::code::USAGE);
    }
    match args {
        Ok(args) => mpgate::watch::run(&args),
        Err(usage) => {
            tracing::error!(exit_code = mpgate::exit::code::USAGE, "{usage}");
            ExitCode::from(mpgate::exit::code::USAGE)
        }
    }
}

/// musl's allocator maps and unmaps memory a few pages at a time: a hand-over made some 60
/// mmap/munmap calls and page faults for them, 0.3 ms of its 1.6 ms (bench/README.md).
/// dlmalloc takes memory in 64 KiB steps and keeps what is freed. (aws-lc's C code still
/// allocates with musl's hardened malloc; only Rust's allocations come here.)
#[global_allocator]
static ALLOCATOR: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;
