//! What a buyer who controls the container's environment cannot make the gate do: take its
//! nonce from a file, buffer a huge credentials answer, read an oddly spelled key version, or
//! trust a key whose private half is published.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use common::*;
use mpgate_testkit::Emulator;

/// The bound on any answer the gate reads, and how much more than an ordinary run the gate
/// may hold while refusing a 64 MiB one (buffering the answer would take more than 64 MiB).
const ANSWER_BOUND: &str = "larger than 64 KiB";
const EXTRA_RSS_KIB: i64 = 16 * 1024;

/// Makes the getrandom(2) system call fail with `errno` for the process about to exec, as a
/// seccomp profile that does not allow it would.
fn refuse_getrandom(errno: i32) -> impl FnMut() -> std::io::Result<()> {
    move || {
        let deny = libc::SECCOMP_RET_ERRNO | (errno as u32 & libc::SECCOMP_RET_DATA);
        let program = [
            // The system call number.
            libc::sock_filter {
                code: 0x20,
                jt: 0,
                jf: 0,
                k: 0,
            }, // BPF_LD | BPF_W | BPF_ABS
            libc::sock_filter {
                code: 0x15,
                jt: 0,
                jf: 1,
                k: libc::SYS_getrandom as u32,
            }, // BPF_JMP | BPF_JEQ | BPF_K
            libc::sock_filter {
                code: 0x06,
                jt: 0,
                jf: 0,
                k: deny,
            }, // BPF_RET | BPF_K
            libc::sock_filter {
                code: 0x06,
                jt: 0,
                jf: 0,
                k: libc::SECCOMP_RET_ALLOW,
            },
        ];
        let filter = libc::sock_fprog {
            len: program.len() as u16,
            filter: program.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: prctl with these arguments only changes this (forked, about to exec) process;
        // `filter` points at `program`, which outlives the call.
        unsafe {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &filter as *const libc::sock_fprog,
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

#[test]
fn the_nonce_never_comes_from_a_file_when_getrandom_is_refused() {
    let emu = Emulator::start(&[]);
    // A buyer's seccomp profile answers ENOSYS (unknown call) or EPERM (blocked); either way
    // a fallback to /dev/urandom would read whatever the buyer mounted there.
    for (errno, name) in [(libc::EPERM, "EPERM"), (libc::ENOSYS, "ENOSYS")] {
        let out = emu
            .gate()
            .pre_exec(refuse_getrandom(errno))
            .args(["--", "sh", "-c", "echo WORKLOAD STARTED"])
            .run();
        out.expect_error(2, "random number generator");
        assert!(
            out.error_message().contains("getrandom"),
            "{name}: {}",
            out.error_message()
        );
        assert!(!out.stdout.contains("WORKLOAD STARTED"), "{name}: {out:?}");
    }
    assert_eq!(emu.calls().len(), 0, "no call without a nonce");
    // Control: the same gate with the call allowed is entitled.
    emu.gate().run().expect(0);
}

/// Mounts a file of zeros over `/dev/urandom` and `/dev/random` for the process about to exec,
/// as a buyer who controls the container's mounts can (a private mount namespace, so nothing
/// outside the test sees it; a user namespace too when the tests do not run as root).
fn zeros_over_urandom() -> impl FnMut() -> std::io::Result<()> {
    // Formatted before the fork: pre_exec may only make system calls.
    let (uid, gid) = (unsafe { libc::geteuid() }, unsafe { libc::getegid() });
    let uid_map = format!("0 {uid} 1\0");
    let gid_map = format!("0 {gid} 1\0");
    move || {
        let check = |r: libc::c_int| {
            if r == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        };
        let write = |path: &[u8], data: &[u8]| {
            // SAFETY: NUL-terminated path and a buffer that outlives the calls.
            unsafe {
                let fd = libc::open(path.as_ptr().cast(), libc::O_WRONLY);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let n = libc::write(fd, data.as_ptr().cast(), data.len() - 1);
                libc::close(fd);
                if n < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        };
        // SAFETY: unshare and mount change only this forked child's namespaces.
        unsafe {
            if uid == 0 {
                check(libc::unshare(libc::CLONE_NEWNS))?;
            } else {
                check(libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS))?;
                write(b"/proc/self/setgroups\0", b"deny\0")?;
                write(b"/proc/self/uid_map\0", uid_map.as_bytes())?;
                write(b"/proc/self/gid_map\0", gid_map.as_bytes())?;
            }
            let none = std::ptr::null::<libc::c_char>();
            check(libc::mount(
                none,
                c"/".as_ptr(),
                none,
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            for target in [c"/dev/urandom", c"/dev/random"] {
                check(libc::mount(
                    c"/dev/zero".as_ptr(),
                    target.as_ptr(),
                    none,
                    libc::MS_BIND,
                    std::ptr::null(),
                ))?;
            }
        }
        Ok(())
    }
}

#[test]
fn the_nonce_stays_fresh_with_zeros_mounted_over_dev_urandom() {
    // The fixture works: a reader of /dev/urandom under it gets zeros.
    let mut reader = std::process::Command::new("od");
    reader.args(["-An", "-tx1", "-N8", "/dev/urandom"]);
    // SAFETY: the closure makes only system calls (see zeros_over_urandom).
    unsafe { std::os::unix::process::CommandExt::pre_exec(&mut reader, zeros_over_urandom()) };
    let read = reader.output().expect("od runs");
    assert!(read.status.success(), "{read:?}");
    assert_eq!(
        String::from_utf8_lossy(&read.stdout)
            .split_whitespace()
            .collect::<String>(),
        "0000000000000000",
        "the fixture must put zeros at /dev/urandom"
    );

    let emu = Emulator::start(&[]);
    for _ in 0..2 {
        emu.gate().pre_exec(zeros_over_urandom()).run().expect(0);
    }
    let calls = emu.calls();
    assert_eq!(calls.len(), 2);
    let nonce = |i: usize| calls[i]["nonce"].as_str().unwrap_or_default().to_string();
    assert_eq!(nonce(0).len(), 64, "{calls:?}");
    assert_ne!(
        nonce(0),
        nonce(1),
        "two starts over a file of zeros sent the same nonce"
    );

    // And with getrandom refused as well, nothing falls back to the file: exit 2, no call.
    emu.gate()
        .pre_exec(zeros_over_urandom())
        .pre_exec(refuse_getrandom(libc::EPERM))
        .run()
        .expect_error(2, "random number generator");
    assert_eq!(emu.calls().len(), 2, "no call without a nonce");
}

/// A container credentials endpoint that answers 200 with 64 MiB, declared or not.
fn huge_credentials_server(declare_length: bool) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || serve_huge(&mut stream, declare_length));
        }
    });
    format!("http://{addr}/v2/credentials/mpgate-test")
}

fn serve_huge(stream: &mut TcpStream, declare_length: bool) {
    const SIZE: usize = 64 * 1024 * 1024;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
    let mut head = [0u8; 4096];
    let _ = stream.read(&mut head);
    let length = if declare_length {
        format!("Content-Length: {SIZE}\r\n")
    } else {
        "Connection: close\r\n".to_string()
    };
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{length}\r\n{{\"AccessKeyId\":\""
    );
    let chunk = vec![b'A'; 64 * 1024];
    // Stops when the gate hangs up, as it must long before the end.
    for _ in 0..SIZE / chunk.len() {
        if stream.write_all(&chunk).is_err() {
            return;
        }
    }
}

#[test]
fn a_64_mib_credentials_answer_ends_with_a_clear_error_and_bounded_memory() {
    let emu = Emulator::start(&[]);
    for declare_length in [true, false] {
        let out = emu
            .gate()
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env(
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                huge_credentials_server(declare_length),
            )
            .run();
        out.expect_error(15, ANSWER_BOUND);
        assert_memory_bounded(&out, EXTRA_RSS_KIB, "a 64 MiB credentials answer");
    }
    assert_eq!(emu.calls().len(), 0, "no call without credentials");
}

#[test]
fn a_key_version_has_one_spelling() {
    let emu = Emulator::start(&[]);
    for spelling in ["+1", "01", " 1", "1 ", "1.0", "0x1"] {
        emu.gate()
            .env("MPGATE_PUBLIC_KEY_VERSION", spelling)
            .run()
            .expect_error(2, "digits only");
    }
    // A key directory: public-key-v01.pem would be a second spelling of version 1.
    let dir = emu.dir.join("oddly-spelled-ring");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(&emu.public_key_file, dir.join("public-key-v01.pem")).unwrap();
    emu.gate()
        .env_remove("MPGATE_PUBLIC_KEY_FILE")
        .env("MPGATE_PUBLIC_KEY_DIR", &dir)
        .run()
        .expect_error(2, "no sign or leading zero");
    assert_eq!(emu.calls().len(), 0);
    // Control: the one spelling works.
    emu.gate()
        .env("MPGATE_PUBLIC_KEY_VERSION", "1")
        .run()
        .expect(0);
}

#[test]
fn a_published_key_is_refused_as_the_configured_key_before_any_call() {
    let emu = Emulator::start(&[]);
    let keys = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/proof/tests/published-keys");
    for (key, named) in [
        ("aws-seller-guide", "AWS Marketplace seller guide"),
        ("jwtio-rs256", "jwt.io's demo RSA key"),
        ("jwtio-2019-2021", "jwt.io's 2019-2021 demo RSA key"),
        ("rfc7515-a2", "RFC 7515"),
        ("rfc7520-3.4", "RFC 7520"),
    ] {
        let out = emu
            .gate()
            .env("MPGATE_PUBLIC_KEY_FILE", keys.join(key).join("public.pem"))
            .run();
        out.expect_error(2, named);
        assert!(
            out.error_message().contains("private key is public"),
            "{key}"
        );
    }
    assert_eq!(emu.calls().len(), 0);
}

/// A container credentials endpoint on loopback that hands out an accomplice's credentials.
fn accomplice_credentials_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let mut head = [0u8; 4096];
            let _ = stream.read(&mut head);
            let body = format!(
                r#"{{"AccessKeyId":"{ACCESS_KEY_ID}","SecretAccessKey":"{SECRET_ACCESS_KEY}","Token":"{SESSION_TOKEN}","Expiration":"2099-01-01T00:00:00Z"}}"#
            );
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://{addr}/v2/credentials/accomplice")
}

#[test]
fn residual_risk_an_accomplice_s_credentials_make_a_genuine_call() {
    // docs/threat-model.md, residual risks: credentials of a subscribed account, served to
    // the gate like a task role's, make a real RegisterUsage call whose token is genuine.
    // Nothing in the container can tell; the subscribed account is metered for it.
    let emu = Emulator::start(&[]);
    emu.gate()
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            accomplice_credentials_server(),
        )
        .run()
        .expect(0);
    assert_eq!(emu.calls().len(), 1);
}

/// A process beside the gate that shares the result file's and the termination log's
/// directory (issue 26, item 5): symlinks planted as both paths are replaced, never written
/// through, so another file (a root-only one for a root gate) is untouched.
#[test]
fn symlinks_planted_as_the_result_file_and_termination_log_are_not_written_through() {
    let emu = Emulator::start(&[]);
    let dir = emu.dir.join("shared");
    std::fs::create_dir_all(&dir).unwrap();
    let victim = emu.dir.join("root-only");
    std::fs::write(&victim, "root only\n").unwrap();
    let (result, log) = (dir.join("result.json"), dir.join("termination-log"));
    std::os::unix::fs::symlink(&victim, &result).unwrap();
    std::os::unix::fs::symlink(&victim, &log).unwrap();
    emu.gate()
        .env("MPGATE_RESULT_FILE", &result)
        .env("MPGATE_TERMINATION_LOG", &log)
        .env("MPGATE_PUBLIC_KEY_VERSION", "01")
        .run()
        .expect_error(2, "digits only");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root only\n");
    for path in [&result, &log] {
        let meta = std::fs::symlink_metadata(path).unwrap();
        assert!(meta.is_file(), "{} replaced by a file", path.display());
    }
    assert_eq!(mpgate_testkit::result_file(&result)["exitCode"], 2);
    let line = std::fs::read_to_string(&log).unwrap();
    assert!(line.contains("digits only"), "{line}");
    // No temporary file left beside them.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// Every file the gate reads, or checks before the SDK reads it (issue 26, item 6), as a FIFO
/// no one writes (the open would block, past the deadline and SIGTERM) or as `/dev/zero`
/// (never ends): exit 2 naming the setting, within the deadline, before any call. (The CA
/// files, read only for an https endpoint: `src/http/tls.rs`.)
#[test]
fn a_fifo_or_a_device_as_a_file_the_gate_reads_is_exit_2_within_the_deadline() {
    let emu = Emulator::start(&[]);
    let fifo = emu.dir.join("fifo");
    mkfifo(&fifo);
    let zero = Path::new("/dev/zero");
    let ring = emu.dir.join("fifo-ring");
    std::fs::create_dir_all(&ring).unwrap();
    mkfifo(&ring.join("public-key-v1.pem"));
    let cases: [(&str, &Path, &str); 7] = [
        ("AWS_CONFIG_FILE", &fifo, "AWS_CONFIG_FILE"),
        ("AWS_CONFIG_FILE", zero, "AWS_CONFIG_FILE"),
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            zero,
            "AWS_SHARED_CREDENTIALS_FILE",
        ),
        (
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            &fifo,
            "AWS_WEB_IDENTITY_TOKEN_FILE",
        ),
        ("MPGATE_PUBLIC_KEY_FILE", &fifo, "MPGATE_PUBLIC_KEY_FILE"),
        ("MPGATE_PUBLIC_KEY_FILE", zero, "MPGATE_PUBLIC_KEY_FILE"),
        ("MPGATE_PUBLIC_KEY_DIR", &ring, "MPGATE_PUBLIC_KEY_DIR"),
    ];
    for (variable, path, named) in cases {
        let mut gate = emu.gate();
        if variable == "MPGATE_PUBLIC_KEY_DIR" {
            gate.env_remove("MPGATE_PUBLIC_KEY_FILE");
        }
        if variable == "AWS_WEB_IDENTITY_TOKEN_FILE" {
            gate.env("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/r");
        }
        let out = gate.env(variable, path).run();
        let what = format!("{variable}={}", path.display());
        assert_eq!(out.code(), 2, "{what}: {}", out.stderr);
        let message = out.error_message();
        assert!(message.contains(named), "{what}: {message}");
        assert!(message.contains("not a regular file"), "{what}: {message}");
        assert!(
            out.elapsed < Duration::from_secs(5),
            "{what}: {:?}",
            out.elapsed
        );
    }
    // The default profile files under HOME, which the SDK reads when they exist.
    for (file, target) in [("config", &fifo), ("credentials", &zero.to_path_buf())] {
        let home = emu.dir.join(format!("home-{file}"));
        std::fs::create_dir_all(home.join(".aws")).unwrap();
        std::os::unix::fs::symlink(target, home.join(".aws").join(file)).unwrap();
        let out = emu.gate().env("HOME", &home).run();
        out.expect(2);
        let message = out.error_message();
        assert!(message.contains(&format!(".aws/{file}")), "{message}");
        assert!(message.contains("not a regular file"), "{message}");
        assert!(
            out.elapsed < Duration::from_secs(5),
            "{file}: {:?}",
            out.elapsed
        );
    }
    assert_eq!(emu.calls().len(), 0, "no call with a refused file");
    let out = emu.gate().env("MPGATE_PUBLIC_KEY_FILE", zero).run();
    out.expect(2);
    assert_memory_bounded(&out, EXTRA_RSS_KIB, "/dev/zero as the key file");
}

#[test]
fn residual_risk_an_unpinned_build_obeys_a_key_and_endpoint_of_the_buyer_s() {
    // docs/threat-model.md, residual risks, "An unpinned build": the seller's configuration
    // with two settings of the buyer's (a key and an endpoint of a server that signs with
    // it) starts the workload without AWS ever being asked; the gate says what it is.
    let seller = Emulator::start(&[]);
    let buyer = Emulator::start(&["--product-code", &seller.product_code]);
    let out = seller
        .gate()
        .env("MPGATE_PUBLIC_KEY_FILE", &buyer.public_key_file)
        .env("AWS_ENDPOINT_URL_MARKETPLACE_METERING", &buyer.url)
        .args(["--", "sh", "-c", "echo WORKLOAD STARTED"])
        .run();
    out.expect(0);
    assert!(out.stdout.contains("WORKLOAD STARTED"), "{out:?}");
    assert!(
        out.stderr
            .contains("unpinned build: it trusts its environment"),
        "{}",
        out.stderr
    );
    assert_eq!(
        seller.calls().len(),
        0,
        "AWS (the seller's emulator) never asked"
    );
    assert_eq!(buyer.calls().len(), 1);
}
