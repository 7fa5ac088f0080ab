//! `run -- COMMAND...`: run a command wired to the emulator, forwarding signals.

use std::ffi::OsString;
use std::io;
use std::os::unix::process::ExitStatusExt;

use tokio::signal::unix::{signal, SignalKind};

use super::credentials::Credential;
use super::server::log;

/// What the child's environment points at.
pub struct ChildEnv {
    pub url: String,
    pub region: String,
    pub product_code: String,
    pub public_key_file: String,
    pub public_key_version: u32,
    /// The CA to trust (`SSL_CERT_FILE`) when serving HTTPS.
    pub ca_file: Option<String>,
    /// The temporary credentials handed to the child, as a task role would (the emulator
    /// knows them).
    pub credentials: Option<Credential>,
    /// License Manager's product SKU (`MPGATE_PRODUCT_SKU`).
    pub product_sku: String,
}

/// Run `command` to completion; returns the exit code to use.
pub async fn run_child(command: OsString, args: Vec<OsString>, env: &ChildEnv) -> i32 {
    let mut cmd = tokio::process::Command::new(&command);
    cmd.args(&args)
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_ENDPOINT_URL")
        .env("AWS_ENDPOINT_URL_MARKETPLACE_METERING", &env.url)
        .env("AWS_ENDPOINT_URL_LICENSE_MANAGER", &env.url)
        .env("MPGATE_PRODUCT_SKU", &env.product_sku)
        .env("AWS_REGION", &env.region)
        .env("AWS_DEFAULT_REGION", &env.region)
        .env("AWS_EC2_METADATA_DISABLED", "true");
    // RegisterUsage's settings, unless the command is set up for contract pricing (which
    // does not read them, and would say so).
    if std::env::var_os("MPGATE_PRICING").is_none_or(|p| p != "contract") {
        cmd.env("MPGATE_PRODUCT_CODE", &env.product_code)
            .env("MPGATE_PUBLIC_KEY_FILE", &env.public_key_file)
            .env(
                "MPGATE_PUBLIC_KEY_VERSION",
                env.public_key_version.to_string(),
            );
    }
    if let Some(c) = &env.credentials {
        cmd.env("AWS_ACCESS_KEY_ID", &c.access_key_id)
            .env("AWS_SECRET_ACCESS_KEY", &c.secret_access_key);
        if let Some(token) = &c.session_token {
            cmd.env("AWS_SESSION_TOKEN", token);
        }
    }
    if let Some(ca) = &env.ca_file {
        cmd.env("SSL_CERT_FILE", ca);
    }
    let shown = command.to_string_lossy().into_owned();
    // Listen before spawning so no signal is lost in between.
    let (mut term, mut int, mut hup, mut quit) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
        signal(SignalKind::quit()),
    ) {
        (Ok(a), Ok(b), Ok(c), Ok(d)) => (a, b, c, d),
        _ => {
            log("error: cannot install signal handlers");
            return 1;
        }
    };
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            log(&format!("error: {shown}: command not found"));
            return 127;
        }
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            log(&format!("error: {shown}: permission denied"));
            return 126;
        }
        Err(e) => {
            log(&format!("error: cannot run {shown}: {e}"));
            return 126;
        }
    };
    let pid = child.id().and_then(|p| libc::pid_t::try_from(p).ok());
    let forward = |sig: libc::c_int| {
        if let Some(pid) = pid {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe {
                libc::kill(pid, sig);
            }
        }
    };
    let status = loop {
        tokio::select! {
            st = child.wait() => break st,
            _ = term.recv() => forward(libc::SIGTERM),
            _ = int.recv() => forward(libc::SIGINT),
            _ = hup.recv() => forward(libc::SIGHUP),
            _ = quit.recv() => forward(libc::SIGQUIT),
        }
    };
    match status {
        Ok(st) => match (st.code(), st.signal()) {
            (Some(code), _) => code,
            (None, Some(sig)) => 128 + sig,
            (None, None) => 1,
        },
        Err(e) => {
            log(&format!("error: waiting for {shown}: {e}"));
            1
        }
    }
}
