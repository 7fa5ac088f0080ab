//! The hand-over bound to what it was made for: in exec mode the process mpgate execs (a copy
//! in any other process fails, whatever the age allowed), a result file to its node's boot and
//! its pod; and what an unpinned build says about itself.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use mpgate_proof::binding::{boot_id, is_salt};
use mpgate_proof::{Handover, Place, Process, ProofError};
use mpgate_testkit::{result_file, run_bounded, Emulator, CHILD_LIMIT};
use serde_json::{json, Value};

/// The Rust workload of `crates/proof/examples/`, compiled into this test binary: run as
/// `THIS_BINARY --exact workload_role --nocapture` with `BINDING_TEST_WORKLOAD_KEY` set, this
/// binary is that workload (its `start` with the emulator's key) and exits with its code.
#[path = "../crates/proof/examples/workload.rs"]
#[allow(dead_code)]
mod workload;

#[test]
fn workload_role() {
    // Run as an ordinary test: nothing to do.
    let Some(key) = std::env::var_os("BINDING_TEST_WORKLOAD_KEY") else {
        return;
    };
    let pem = std::fs::read(key).unwrap();
    let product = std::env::var("MPGATE_PRODUCT_CODE").unwrap();
    std::process::exit(workload::start(&pem, &product, 1).into());
}

/// `sh -c` that starts `"$@"` five times in the background, reports each copy's exit code,
/// then execs `"$@"` in its own place (the process mpgate exec'd).
const FIVE_COPIES: &str = r#"pids=; for i in 1 2 3 4 5; do "$@" & pids="$pids $!"; done
for p in $pids; do wait "$p"; echo "copy exit $?"; done
exec "$@""#;

/// A gate for `emu` whose workload is `FIVE_COPIES` of `workload`.
fn five_copies(gate: &mut Gate, workload: &[&Path]) -> Outcome {
    gate.args(["--", "sh", "-c", FIVE_COPIES, "sh"])
        .args(workload)
        .run()
}

fn copies_refused(out: &Outcome, code: i32) {
    let exits: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("copy exit"))
        .collect();
    assert_eq!(
        exits,
        vec![format!("copy exit {code}"); 5],
        "every copy refused; stdout {:?}, stderr:\n{}",
        out.stdout,
        out.stderr
    );
}

/// The reproduction of the review: one gate run, five copies of the workload started by the
/// shell mpgate exec'd, then the shell execs the workload itself. Only that one starts.
#[test]
fn five_copies_of_a_hand_over_fail_and_only_the_exec_d_process_passes() {
    let emu = Emulator::start(&[]);
    // A seller's start script that re-checks with `mpgate verify`: each copy runs it in a
    // process of its own, so its `mpgate verify` checks that process.
    let start = emu.dir.join("start.sh");
    std::fs::write(
        &start,
        "#!/bin/sh\n\"$MPGATE_BIN\" verify || exit 12\necho \"started $$\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&start, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = five_copies(emu.gate().env("MPGATE_BIN", MPGATE), &[&start]);
    out.expect(0);
    copies_refused(&out, 12);
    let started: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("started"))
        .collect();
    assert_eq!(started, [format!("started {}", out.pid)], "{}", out.stdout);
    let refusals = out
        .stderr
        .matches("the hand-over was made for another process than the process that runs this check (its parent, PID")
        .count();
    assert_eq!(refusals, 5, "{}", out.stderr);
    assert_eq!(emu.calls().len(), 1, "one RegisterUsage call");

    // The same as a container's PID 1, in a PID namespace with its own /proc.
    let unshare = tool("unshare", "apt-get install -y util-linux");
    let out = emu
        .gate_with(&unshare)
        .env("MPGATE_BIN", MPGATE)
        .args(pid_namespace())
        .args([
            Path::new(MPGATE),
            Path::new("--"),
            Path::new("sh"),
            Path::new("-c"),
        ])
        .args([Path::new(FIVE_COPIES), Path::new("sh"), &start])
        .run();
    out.expect(0);
    copies_refused(&out, 12);
    assert!(
        out.stdout.lines().any(|l| l == "started 1"),
        "{}",
        out.stdout
    );

    // The same with `mpgate verify` in a subshell of the exec'd shell, as a script would run
    // it: `( mpgate verify && … ) &` forks the subshell, which forks `mpgate verify`.
    let script = r#"for i in 1 2 3 4 5; do ( "$MPGATE_BIN" verify && echo "copy passed" || echo "copy refused" ) & done
wait
"$MPGATE_BIN" verify && echo "exec'd process passed""#;
    let out = emu
        .gate()
        .env("MPGATE_BIN", MPGATE)
        .args(["--", "sh", "-c", script])
        .run();
    out.expect(0);
    let mut lines: Vec<&str> = out.stdout.lines().collect();
    lines.sort_unstable();
    assert_eq!(
        lines,
        [vec!["copy refused"; 5], vec!["exec'd process passed"]].concat(),
        "{}",
        out.stderr
    );

    // The Rust workload (crates/proof/examples/workload.rs) checks its own process.
    let me = std::env::current_exe().unwrap();
    let out = five_copies(
        emu.gate()
            .env("BINDING_TEST_WORKLOAD_KEY", &emu.public_key_file)
            .env("MPGATE_BIN", MPGATE),
        &[
            &me,
            Path::new("--exact"),
            Path::new("workload_role"),
            Path::new("--nocapture"),
        ],
    );
    out.expect(0);
    copies_refused(&out, 12);
    assert_eq!(
        out.stdout.matches("entitled: started by mpgate").count(),
        1,
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains(&format!("bound to this process (PID {})", out.pid)),
        "{}",
        out.stdout
    );
    // Five copies write at once to one pipe, unbuffered: their messages may interleave
    // between the pieces of one line, so a piece written whole is counted.
    assert_eq!(
        out.stderr
            .matches("the hand-over was made for another process than")
            .count(),
        5,
        "{}",
        out.stderr
    );
    assert_eq!(emu.calls().len(), 4);
}

/// What the exec'd shell hands on: `MPGATE_SALT MPGATE_SIGNATURE`.
fn handed_over(emu: &Emulator) -> (String, String) {
    let out = emu
        .gate()
        .env("MPGATE_MAX_TOKEN_AGE", "3600")
        .args(["--", "sh", "-c", r#"echo "$MPGATE_SALT $MPGATE_SIGNATURE""#])
        .run();
    out.expect(0);
    let (salt, signature) = out.stdout.trim().split_once(' ').unwrap();
    assert!(is_salt(salt), "{salt:?}");
    (salt.to_string(), signature.to_string())
}

#[test]
fn a_hand_over_copied_into_another_process_fails_whatever_the_allowed_age() {
    // A genuine hand-over issued 14 minutes ago (AWS's clock behind: what a node clock set
    // back would take for fresh; SigV4 allows 15 minutes), and one from just now.
    let past = Emulator::start(&["--clock-offset", "-14m"]);
    let now = Emulator::start(&[]);
    for emu in [&past, &now] {
        let (salt, signature) = handed_over(emu);
        for age in ["1s", "300", "3600s"] {
            let out = emu
                .gate()
                .env("MPGATE_SALT", &salt)
                .env("MPGATE_SIGNATURE", &signature)
                .env("MPGATE_MAX_TOKEN_AGE", age)
                .args(["verify"])
                .run();
            out.expect_error(12, "the hand-over was made for another process than the process that runs this check (its parent, PID");
            assert!(
                out.error_message().contains("whatever the clock says"),
                "{}",
                out.error_message()
            );
        }
        // The library, in this process, with any age.
        let env = |name: &str| match name {
            "MPGATE_SALT" => Some(salt.clone().into()),
            "MPGATE_SIGNATURE" => Some(signature.clone().into()),
            _ => None,
        };
        let handover = Handover::from_vars(&env, &Process::current().unwrap()).unwrap();
        let pem = std::fs::read(&emu.public_key_file).unwrap();
        match handover.verify(&pem, &emu.product_code, 1, std::time::Duration::MAX) {
            Err(e @ ProofError::OtherProcess(_)) => {
                assert!(e.to_string().contains("this process (PID"), "{e}")
            }
            other => panic!("expected another process, got {other:?}"),
        }
    }
}

/// `mpgate verify` whose parent exits before it checks: adopted by PID 1 or a subreaper, which
/// is not the process mpgate exec'd, it fails.
#[test]
fn a_re_parented_verify_fails_closed() {
    let emu = Emulator::start(&[]);
    let log = emu.dir.join("orphan.log");
    // A shell starts the checker in the background and exits at once; the checker waits
    // until it has been adopted (its parent in /proc is no longer that shell), then execs
    // `mpgate verify`. The exec'd shell waits for its verdict.
    let checker = r#"while [ "$(cut -d' ' -f4 /proc/$$/stat)" = "$1" ]; do sleep 0.01; done
exec "$MPGATE_BIN" verify 2>"$LOG""#;
    let script = r#"sh -c 'sh -c "$CHECKER" checker $$ &'
until [ -s "$LOG" ]; do sleep 0.01; done
cat "$LOG""#;
    let out = emu
        .gate()
        .env("MPGATE_BIN", MPGATE)
        .env("LOG", &log)
        .env("CHECKER", checker)
        .args(["--", "sh", "-c", script])
        .run();
    out.expect(0);
    let verdict: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(verdict["level"], "ERROR", "{verdict}");
    assert_eq!(verdict["exit_code"], 12, "{verdict}");
    assert!(
        verdict["message"]
            .as_str()
            .unwrap()
            .contains("made for another process"),
        "{verdict}"
    );
}

/// A token of the emulator's key for `nonce`, issued now.
fn token_for(emu: &Emulator, nonce: &str) -> String {
    let pem = std::fs::read(emu.dir.join("keys/private-key-v1.pem")).unwrap();
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(&pem).unwrap();
    let iat = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({
        "productCode": emu.product_code, "publicKeyVersion": 1, "nonce": nonce, "iat": iat
    });
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::PS256);
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

#[test]
fn a_result_file_of_another_outcome_boot_or_pod_fails() {
    const POD: &str = "6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f";
    const OTHER_POD: &str = "7f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f";
    let emu = Emulator::start(&[]);
    let result = emu.dir.join("result.json");
    emu.gate()
        .env("MPGATE_RESULT_FILE", &result)
        .env("MPGATE_POD_UID", POD)
        .run()
        .expect(0);
    let recorded = result_file(&result);
    let here = boot_id().unwrap();
    assert_eq!(recorded["bootId"], here.as_str());
    assert_eq!(recorded["podUid"], POD);
    let salt = recorded["salt"].as_str().unwrap();
    assert!(is_salt(salt), "{recorded}");
    // The nonce sent is the salt's for this boot and pod.
    let place = Place {
        boot_id: here.clone(),
        pod_uid: Some(POD.into()),
    };
    assert_eq!(recorded["nonce"], place.nonce(salt).as_str());
    assert_eq!(emu.calls()[0]["nonce"], recorded["nonce"]);

    let verify = |file: &Path, pod: Option<&str>| {
        let mut gate = emu.gate();
        if let Some(pod) = pod {
            gate.env("MPGATE_POD_UID", pod);
        }
        gate.args(["verify", "--result-file"]).args([file]).run()
    };
    verify(&result, Some(POD)).expect(0);
    verify(&result, Some(OTHER_POD)).expect_error(12, "and this is pod");
    verify(&result, None).expect_error(12, "MPGATE_POD_UID is not set here");
    verify(&result, Some("not a uid")).expect_error(2, "MPGATE_POD_UID");

    let variant = |name: &str, edit: &dyn Fn(&mut Value)| -> PathBuf {
        let mut json = recorded.clone();
        edit(&mut json);
        let path = emu.dir.join(name);
        std::fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
        path
    };
    // Another outcome beside the genuine token.
    let foreign_outcome = variant("outcome.json", &|j| {
        j["outcome"] = "not-entitled".into();
        j["entitled"] = true.into();
    });
    // Written on another node (or boot).
    let other_boot = variant("boot.json", &|j| {
        j["bootId"] = here.replace(|c: char| c.is_ascii_digit(), "0").into()
    });
    // Written in another pod, its pod UID removed.
    let no_pod = variant("no-pod.json", &|j| {
        j.as_object_mut().unwrap().remove("podUid");
    });
    // A genuine token issued on another node, the file edited to name this boot and pod.
    let elsewhere = Place {
        boot_id: "00000000-0000-4000-8000-000000000000".into(),
        pod_uid: Some(POD.into()),
    };
    let token = token_for(&emu, &elsewhere.nonce(salt));
    let carried = variant("carried.json", &|j| j["signature"] = token.clone().into());
    for (file, words) in [
        (&foreign_outcome, "outcome \"not-entitled\""),
        (&other_boot, "another node, or before this node rebooted"),
        (&no_pod, "another node, boot or pod"),
        (&carried, "another node, boot or pod"),
    ] {
        verify(file, Some(POD)).expect_error(12, words);
    }
    // Read with the library in this process (MPGATE_POD_UID given as this pod's).
    let handover = Handover::from_result_file_in(&result, &place).unwrap();
    let pem = std::fs::read(&emu.public_key_file).unwrap();
    handover
        .verify(
            &pem,
            &emu.product_code,
            1,
            std::time::Duration::from_secs(300),
        )
        .unwrap();
    assert!(matches!(
        Handover::from_result_file_in(&carried, &place)
            .unwrap()
            .verify(
                &pem,
                &emu.product_code,
                1,
                std::time::Duration::from_secs(300)
            ),
        Err(ProofError::ResultFile { .. })
    ));

    // The gate refuses a malformed MPGATE_POD_UID before any call.
    let calls = emu.calls().len();
    let out = emu.gate().env("MPGATE_POD_UID", "").run();
    out.expect_error(2, "MPGATE_POD_UID is set but empty");
    assert_eq!(emu.calls().len(), calls);
}

/// `unshare` options that give the next program a mount namespace of its own (as root, or
/// with a user namespace).
fn mount_namespace() -> Vec<&'static str> {
    let unshare = tool("unshare", "apt-get install -y util-linux");
    for candidate in [&["--mount"][..], &["--user", "--map-root-user", "--mount"]] {
        let out = run_bounded(
            std::process::Command::new(&unshare).args(candidate).args([
                "sh",
                "-c",
                "mount -t tmpfs none /proc",
            ]),
            CHILD_LIMIT,
        );
        if out.status.success() {
            return candidate.to_vec();
        }
    }
    panic!("cannot create a mount namespace: run the tests as root (as CI does) or enable unprivileged user namespaces")
}

/// Without the kernel's /proc, exec mode cannot bind the hand-over: exit 2, before any call,
/// never a nonce bound to nothing. A /proc of the buyer's making (files on a tmpfs that say
/// what every copy should read) is refused the same way.
#[test]
fn without_the_kernel_s_proc_exec_mode_stops_before_any_call() {
    let emu = Emulator::start(&[]);
    let unshare = tool("unshare", "apt-get install -y util-linux");
    let fake = format!(
        r#"mkdir -p /proc/self /proc/sys/kernel/random
echo "1 (server) S 0 1 1 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 1000 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0" > /proc/self/stat
echo {} > /proc/sys/kernel/random/boot_id"#,
        boot_id().unwrap()
    );
    for (setup, words) in [
        ("true", "cannot read /proc/"),
        (fake.as_str(), "is not served by the kernel's procfs"),
    ] {
        let script = format!(
            "mount -t tmpfs none /proc && {setup} && exec \"$0\" -- sh -c 'echo workload ran'"
        );
        let out = emu
            .gate_with(&unshare)
            .args(mount_namespace())
            .args(["sh", "-c", &script, MPGATE])
            .run();
        out.expect_error(2, words);
        assert_eq!(out.stdout, "", "the workload must not run");
        assert!(
            out.error_message().contains("mpgate binds the hand-over"),
            "{}",
            out.error_message()
        );
    }
    assert_eq!(emu.calls().len(), 0, "no call without a binding");
}

#[test]
fn an_unpinned_gate_warns_once_at_start_and_records_pinned_false() {
    let emu = Emulator::start(&[]);
    let result = emu.dir.join("result.json");
    for command in [&[][..], &["--", "true"]] {
        let out = emu
            .gate()
            .env("MPGATE_RESULT_FILE", &result)
            .args(command)
            .run();
        out.expect(0);
        let lines = out.log_lines();
        let unpinned: Vec<&Value> = lines.iter().filter(|l| l["message"] == UNPINNED).collect();
        assert_eq!(unpinned.len(), 1, "{}", out.stderr);
        assert_eq!(lines[0]["message"], UNPINNED, "first: {}", out.stderr);
        assert_eq!(lines[0]["level"], "WARN");
        assert_eq!(result_file(&result)["pinned"], false);
    }
    // A failure records it too; `mpgate verify` does not warn.
    let refused = Emulator::start(&["--fault", "not-entitled"]);
    refused
        .gate()
        .env("MPGATE_RESULT_FILE", &result)
        .run()
        .expect(10);
    assert_eq!(result_file(&result)["pinned"], false);
    let out = emu.gate().args(["verify"]).run();
    out.expect(12);
    assert!(!out.stderr.contains(UNPINNED), "{}", out.stderr);
}
