//! mpgate: checks the buyer's AWS Marketplace entitlement, then execs the workload in place.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use mpgate::cli::{self, Parsed};
use mpgate::config::{self, path_setting, ConfigError, LogFormat};
use mpgate::{gate, logging, report::Reporter};

fn main() -> ExitCode {
    let started = Instant::now();
    let env = |name: &str| std::env::var_os(name);
    let (args, usage_error) = match cli::parse(std::env::args_os().skip(1)) {
        Ok(Parsed::Help) => {
            print!("{}", cli::USAGE);
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::Version) => {
            println!("mpgate {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::Run(args)) => (*args, None),
        Err(e) => (cli::Args::default(), Some(ConfigError::from(e))),
    };

    // Logging starts first so that even configuration errors come out in the chosen format.
    let (format, format_error) = match config::log_format(args.log_format.clone(), &env) {
        Ok(f) => (f, None),
        Err(e) => (LogFormat::Auto, Some(e)),
    };
    let filter_error = logging::init(format).map(|value| ConfigError::InvalidValue {
        name: "MPGATE_LOG",
        value,
        expected: "use a log filter such as info, debug or warn,mpgate=debug",
    });
    let reporter = Reporter {
        result_file: path_setting(args.result_file.as_ref(), "MPGATE_RESULT_FILE", &env),
        termination_log: path_setting(
            args.termination_log.as_ref(),
            "MPGATE_TERMINATION_LOG",
            &env,
        ),
    };
    let preflight = usage_error.or(format_error).or(filter_error);

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
    let (facts, verdict) = runtime.block_on(gate::run(args, preflight, &env, started));
    // Stop the runtime (and its blocking DNS threads) before exec replaces the process.
    runtime.shutdown_timeout(Duration::from_millis(50));
    gate::finish(facts, verdict, &reporter, started)
}
