//! A workload that runs only when mpgate started it, after a verified entitlement check.
//!
//! The image's entrypoint is `mpgate -- /app/workload`: mpgate checks the buyer's
//! entitlement, then execs this program in its own place (same PID), handing over the token
//! (`MPGATE_SIGNATURE`) and a salt (`MPGATE_SALT`). The first thing `main` does is check that
//! hand-over: the token must be signed by AWS Marketplace for this product and key version,
//! within the last five minutes, and for the nonce the salt derives for *this* process. A
//! start that skipped mpgate has no token; a copy of this program started beside the one
//! mpgate exec'd (`sh -c 'workload & workload & exec workload'`), in another container or
//! later is another process, and the same hand-over fails there.
//!
//! The check is compiled into the workload's own binary on purpose: a check in a start
//! script can be skipped with the script.
//!
//! ```sh
//! cargo build -p mpgate-proof --examples
//! ./target/debug/examples/workload        # not started by mpgate: exit 12
//! ```

use std::process::ExitCode;

use mpgate_proof::{verify_handover, ProofError};

/// The product code from the AWS Marketplace Management Portal.
const PRODUCT_CODE: &str = "prod-abc123example";
/// The version of the public key below.
const PUBLIC_KEY_VERSION: i32 = 1;
/// The product's public key from the AWS Marketplace Management Portal, compiled in: never
/// read from a file or the environment at run time, which a buyer who skips mpgate controls.
/// (With the key in a file beside the source: `include_bytes!("public-key-v1.pem")`.)
const PUBLIC_KEY_PEM: &[u8] = b"-----BEGIN PUBLIC KEY-----
REPLACE-WITH-THE-PUBLIC-KEY-FROM-THE-AWS-MARKETPLACE-MANAGEMENT-PORTAL
-----END PUBLIC KEY-----
";

fn main() -> ExitCode {
    ExitCode::from(start(PUBLIC_KEY_PEM, PRODUCT_CODE, PUBLIC_KEY_VERSION))
}

/// Checks this process's hand-over, then runs the workload; returns the exit code: 12 when
/// mpgate did not start this process after a verified check, 2 when the key (or /proc)
/// cannot be used, as `mpgate verify` does.
pub fn start(public_key_pem: &[u8], product_code: &str, public_key_version: i32) -> u8 {
    match verify_handover(public_key_pem, product_code, public_key_version) {
        Ok(()) => {
            println!(
                "entitled: started by mpgate, the hand-over bound to this process (PID {})",
                std::process::id()
            );
            serve()
        }
        Err(e @ (ProofError::Key(_) | ProofError::Binding(_))) => {
            eprintln!("workload: cannot check the hand-over: {e}");
            2
        }
        Err(e) => {
            eprintln!("workload: not started through mpgate: {e}");
            12
        }
    }
}

/// The workload itself.
fn serve() -> u8 {
    0
}
