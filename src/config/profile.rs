//! Owns the checks of the AWS config and credentials files, read with the SDK's own parser before any call.

use crate::config::aws_env::{url_problem, MAX_AWS_FILE_BYTES};
use crate::config::error::{aws_setting, quoted, ConfigError};
use crate::pinned::Refused;

/// In a pinned build, refuses an `endpoint_url` or `services` section in the selected AWS
/// profile (`~/.aws/config`, `AWS_CONFIG_FILE`, `AWS_PROFILE`), read with the SDK's own parser
/// before any network call. (The call is pinned to its endpoint programmatically as well.)
pub async fn refuse_profile_endpoints() -> Result<(), ConfigError> {
    use aws_config::profile::load;
    use aws_runtime::env_config::file::EnvConfigFiles;
    use aws_types::os_shim_internal::{Env, Fs};
    check_profile_files()?;
    // A profile file the SDK cannot parse fails the SDK's own load later, as in any build.
    let Ok(profiles) = load(&Fs::real(), &Env::real(), &EnvConfigFiles::default(), None).await
    else {
        return Ok(());
    };
    let name = profiles.selected_profile();
    let Some(profile) = profiles.get_profile(name) else {
        return Ok(());
    };
    for key in ["endpoint_url", "services"] {
        if profile.get(key).is_some() {
            return Err(Refused(format!("{key} in the AWS config profile {name:?}")).into());
        }
    }
    Ok(())
}

/// Checks what the SDK will read from the AWS config and credentials files, with its own
/// parser, before any network call: files it cannot parse (the SDK would warn and go on
/// without them), a profile AWS_PROFILE names that they do not define, and an `endpoint_url`
/// (global, or in the profile's `services` section for `service_id`) that is not a URL (the
/// SDK panics on an empty one, or warns and falls back to AWS's endpoint).
pub async fn check_profile(service_id: &str) -> Result<(), ConfigError> {
    use aws_config::profile::load;
    use aws_runtime::env_config::{file::EnvConfigFiles, EnvConfigValue};
    use aws_types::os_shim_internal::{Env, Fs};
    check_profile_files()?;
    let env = Env::real();
    let profiles = match load(&Fs::real(), &env, &EnvConfigFiles::default(), None).await {
        Ok(profiles) => profiles,
        Err(e) => {
            let mut reason = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                let text = cause.to_string();
                if !reason.contains(&text) {
                    reason = format!("{reason}: {text}");
                }
                source = cause.source();
            }
            let reason = reason.split_whitespace().collect::<Vec<_>>().join(" ");
            return Err(aws_setting(
                "the AWS config files",
                format!("cannot be used ({reason})"),
                "fix the file, or point AWS_CONFIG_FILE / AWS_SHARED_CREDENTIALS_FILE at a good one",
            ));
        }
    };
    let name = profiles.selected_profile().to_owned();
    if env.get("AWS_PROFILE").is_ok() && profiles.get_profile(&name).is_none() {
        return Err(aws_setting(
            "AWS_PROFILE",
            format!(
                "names the profile {}, which no AWS config or credentials file defines",
                quoted(&name)
            ),
            "fix the name (see ~/.aws/config, AWS_CONFIG_FILE), or unset AWS_PROFILE",
        ));
    }
    let ignored = env
        .get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")
        .ok()
        .or_else(|| {
            profiles
                .get("ignore_configured_endpoint_urls")
                .map(str::to_owned)
        })
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if ignored {
        return Ok(());
    }
    let global = profiles.get("endpoint_url");
    let none = Env::from_slice(&[]);
    let for_service = EnvConfigValue::new()
        .profile("endpoint_url")
        .service_id(service_id)
        .load(&none, Some(&profiles))
        .map(|(value, _)| value.into_owned());
    let found = [
        global.map(|v| (v.to_owned(), "endpoint_url".to_string())),
        for_service.filter(|v| Some(v.as_str()) != global).map(|v| {
            (
                v,
                format!("an endpoint_url for {service_id} in its services section"),
            )
        }),
    ];
    for (value, setting) in found.into_iter().flatten() {
        if let Some(problem) = url_problem(&value) {
            return Err(aws_setting(
                &format!("the AWS config profile {}", quoted(&name)),
                format!("has {setting} {}, which {problem}", quoted(&value)),
                "write the whole URL, e.g. https://metering.marketplace.us-east-1.amazonaws.com (http://127.0.0.1:PORT for a local emulator), or remove it",
            ));
        }
    }
    Ok(())
}

/// The SDK reads the AWS config and credentials files whole and blocking, on the runtime's
/// thread: a FIFO there would hang the gate past its deadline and SIGTERM, `/dev/zero` eat
/// memory. The variables that name them are checked with the other AWS variables; this
/// checks the default paths under `HOME`, which the SDK reads when they exist.
fn check_profile_files() -> Result<(), ConfigError> {
    let Some(home) = crate::settings::var_os("HOME").filter(|h| !h.is_empty()) else {
        return Ok(());
    };
    let aws = std::path::Path::new(&home).join(".aws");
    for (variable, file) in [
        ("AWS_CONFIG_FILE", "config"),
        ("AWS_SHARED_CREDENTIALS_FILE", "credentials"),
    ] {
        if crate::settings::var_os(variable).is_some() {
            continue;
        }
        let path = aws.join(file);
        // Missing is the SDK's ordinary case; a dangling symlink is missing to it too.
        if std::fs::metadata(&path).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound) {
            continue;
        }
        if let Some(problem) = crate::settings::file_problem(&path, MAX_AWS_FILE_BYTES) {
            return Err(aws_setting(
                &format!("the AWS {file} file {}", path.display()),
                problem,
                format!("make it a file, remove it, or point {variable} at one"),
            ));
        }
    }
    Ok(())
}
