//! Owns what a hand-over is bound to: a process (boot id, PID namespace, PID, start time, read from the kernel's /proc), or a result file's boot and pod, and the nonce a salt derives for either.
//!
//! mpgate sends AWS Marketplace a nonce it derives, and hands over only the salt (256 bits from
//! the kernel's CSPRNG). The token AWS signs carries the derived nonce, so it proves the check
//! only to what derives the same nonce from the same salt:
//!
//! - **Exec mode** (`mpgate -- COMMAND`): the process mpgate execs, which keeps mpgate's PID
//!   namespace, PID and start time across `execve` (an `exec` wrapper such as
//!   `sh -c 'exec server'` keeps them too). A copy started beside it, in another container or
//!   by a later start is another process (another PID namespace, PID, start time or boot),
//!   whatever the clock says. The PID namespace counts: two containers' PID 1 started in the
//!   same clock tick on one node have the same PID and start time.
//! - **A result file** (init mode): the node's boot and, when the downward API gives one, the
//!   pod (`MPGATE_POD_UID`); the process that reads the file cannot be known in advance.
//!
//! The nonce is the lowercase hex SHA-256 of the fields, each preceded by its length in bytes
//! as an 8-byte big-endian integer (so no two lists of fields encode alike):
//!
//! - a process: `"mpgate hand-over v1"`, salt, boot id, PID namespace, PID, start time;
//! - a result file: `"mpgate result file v1"`, salt, boot id, pod UID (empty when none).
//!
//! The salt is the 64 hex digits as handed over; the PID namespace (the inode number of
//! `/proc/PID/ns/pid`, as `stat -L -c %i` prints it), PID and start time (field 22 of
//! `/proc/PID/stat`, clock ticks since boot) in decimal; the boot id as the kernel writes it
//! (`/proc/sys/kernel/random/boot_id`, without its newline). In Python:
//! `hashlib.sha256(b"".join(len(f).to_bytes(8, "big") + f for f in fields)).hexdigest()`.

use std::ffi::OsString;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

/// The first field of a process's nonce: what it is, and this encoding's version.
pub const PROCESS_DOMAIN: &str = "mpgate hand-over v1";
/// The first field of a result file's nonce.
pub const RESULT_FILE_DOMAIN: &str = "mpgate result file v1";
/// The salt is 256 bits, handed over as lowercase hex.
pub const SALT_HEX_DIGITS: usize = 64;

const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";
const SELF_STAT: &str = "/proc/self/stat";
const SELF_PID_NAMESPACE: &str = "/proc/self/ns/pid";
/// procfs's and nsfs's `f_type` (linux/magic.h): a file mounted over /proc is not the
/// kernel's word.
const PROC_SUPER_MAGIC: u64 = 0x9fa0;
const NSFS_MAGIC: u64 = 0x6e73_6673;
/// A stat line is 52 numbers and a 16-byte name: well under 1 KiB.
const MAX_STAT_BYTES: usize = 4096;
/// A boot id is 36 characters and a newline.
const MAX_BOOT_ID_BYTES: usize = 64;
/// Kubernetes UIDs are 36-character UUIDs.
const MAX_POD_UID_CHARS: usize = 128;

/// A process as the kernel knows it: these never change while it lives, `execve` included,
/// and no two live processes share them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    pub boot_id: String,
    /// The inode number of its PID namespace (`/proc/PID/ns/pid`).
    pub pid_namespace: u64,
    pub pid: u32,
    /// Clock ticks from boot to the process's start (field 22 of `/proc/PID/stat`).
    pub start_time: u64,
}

/// Where a result file is used: the node's boot and, when known, the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub boot_id: String,
    /// `MPGATE_POD_UID` (the downward API's `metadata.uid`), when set.
    pub pod_uid: Option<String>,
}

/// What `/proc/PID/stat` says that a binding uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub pid: u32,
    pub ppid: u32,
    pub start_time: u64,
}

/// Why a process's identity or a place cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum BindingError {
    #[error("cannot read {path} ({reason}): mpgate binds the hand-over to the process it execs through /proc; run it where the kernel's /proc is mounted (every container runtime mounts it)")]
    Unreadable { path: String, reason: String },
    #[error("{path} is not served by the kernel's procfs (a file mounted over /proc?): mpgate binds the hand-over only to what the kernel itself says")]
    NotProcfs { path: String },
    #[error("{path} is not what the kernel writes there ({problem})")]
    Malformed { path: String, problem: &'static str },
    #[error("the parent of this process (PID {ppid}) is gone")]
    ParentGone { ppid: u32 },
    #[error("MPGATE_POD_UID {problem}: set it from the downward API (env valueFrom.fieldRef.fieldPath: metadata.uid), or unset it")]
    PodUid { problem: String },
}

impl Process {
    /// The calling process (`/proc/self`).
    pub fn current() -> Result<Process, BindingError> {
        let stat = own_stat()?;
        Ok(Process {
            boot_id: boot_id()?,
            pid_namespace: pid_namespace(SELF_PID_NAMESPACE)?,
            pid: stat.pid,
            start_time: stat.start_time,
        })
    }

    /// The calling process's parent, as /proc sees it now. Once the parent has exited, the
    /// kernel gives the process to PID 1 or a subreaper, and that is the parent read here;
    /// `ParentGone` when none is visible (the parent outside this PID namespace, or gone
    /// between the reads).
    pub fn parent() -> Result<Process, BindingError> {
        let own = own_stat()?;
        let gone = BindingError::ParentGone { ppid: own.ppid };
        let path = format!("/proc/{}/stat", own.ppid);
        let stat = match read_stat(&path) {
            Err(BindingError::Unreadable { .. }) if own.ppid == 0 || !exists(&path) => {
                return Err(gone)
            }
            other => other?,
        };
        if stat.pid != own.ppid {
            return Err(BindingError::Malformed {
                path,
                problem: "another PID than the one named",
            });
        }
        let process = Process {
            boot_id: boot_id()?,
            // A parent with a PID in this namespace is in this namespace: a child's PID
            // namespace is its parent's or one below it, where the parent has no PID. (Read
            // from this process, not the parent's /proc/PID/ns, which a parent that changed
            // its credentials would keep from it.)
            pid_namespace: pid_namespace(SELF_PID_NAMESPACE)?,
            pid: stat.pid,
            start_time: stat.start_time,
        };
        // Still the process that was read: had it exited meanwhile and its PID been reused,
        // the start time would differ.
        match read_stat(&path) {
            Ok(again) if again == stat => Ok(process),
            _ => Err(gone),
        }
    }

    /// The nonce `salt` derives for this process.
    pub fn nonce(&self, salt: &str) -> String {
        derive(&[
            PROCESS_DOMAIN.as_bytes(),
            salt.as_bytes(),
            self.boot_id.as_bytes(),
            self.pid_namespace.to_string().as_bytes(),
            self.pid.to_string().as_bytes(),
            self.start_time.to_string().as_bytes(),
        ])
    }
}

impl Place {
    /// This node's boot, and the pod `MPGATE_POD_UID` names in this process's environment.
    pub fn current() -> Result<Place, BindingError> {
        Self::from_vars(&|name| std::env::var_os(name))
    }

    /// [`Place::current`] with the environment given as a lookup function.
    pub fn from_vars(env: &dyn Fn(&str) -> Option<OsString>) -> Result<Place, BindingError> {
        Ok(Place {
            boot_id: boot_id()?,
            pod_uid: pod_uid(env)?,
        })
    }

    /// The nonce `salt` derives for this boot and pod.
    pub fn nonce(&self, salt: &str) -> String {
        derive(&[
            RESULT_FILE_DOMAIN.as_bytes(),
            salt.as_bytes(),
            self.boot_id.as_bytes(),
            self.pod_uid.as_deref().unwrap_or_default().as_bytes(),
        ])
    }
}

/// `MPGATE_POD_UID`: unset is `None`; a value must look like a Kubernetes UID (letters,
/// digits and dashes, at most 128).
pub fn pod_uid(env: &dyn Fn(&str) -> Option<OsString>) -> Result<Option<String>, BindingError> {
    let Some(value) = env(crate::handover::var::POD_UID) else {
        return Ok(None);
    };
    let problem = |problem: &str| BindingError::PodUid {
        problem: problem.to_string(),
    };
    let value = value
        .into_string()
        .map_err(|_| problem("is not valid UTF-8"))?;
    if value.is_empty() {
        return Err(problem("is set but empty"));
    }
    if value.chars().count() > MAX_POD_UID_CHARS
        || !value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        let shown: String = value.chars().take(40).collect();
        return Err(problem(&format!(
            "{shown:?} is not a pod UID (letters, digits and dashes, at most {MAX_POD_UID_CHARS})"
        )));
    }
    Ok(Some(value))
}

/// Whether `salt` is what mpgate hands over: 64 lowercase hex digits.
pub fn is_salt(salt: &str) -> bool {
    salt.len() == SALT_HEX_DIGITS && salt.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The kernel's id of this boot (`/proc/sys/kernel/random/boot_id`), without its newline.
pub fn boot_id() -> Result<String, BindingError> {
    let bytes = read_proc(BOOT_ID, MAX_BOOT_ID_BYTES)?;
    let malformed = |problem| BindingError::Malformed {
        path: BOOT_ID.into(),
        problem,
    };
    let text = bytes
        .strip_suffix(b"\n")
        .ok_or(malformed("no newline at the end"))?;
    let uuid = text.len() == 36
        && text.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => matches!(b, b'0'..=b'9' | b'a'..=b'f'),
        });
    if !uuid {
        return Err(malformed("not a lowercase UUID"));
    }
    Ok(String::from_utf8_lossy(text).into_owned())
}

/// Reads the PID, parent PID and start time from a `/proc/PID/stat` line. The process's name
/// (field 2, in parentheses) may hold spaces and parentheses of its own, so the fields after
/// it are counted from the line's last `)`.
pub fn parse_stat(line: &[u8]) -> Result<Stat, &'static str> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let open = line
        .iter()
        .position(|b| *b == b'(')
        .ok_or("no process name")?;
    let close = line
        .iter()
        .rposition(|b| *b == b')')
        .ok_or("no process name")?;
    let pid = line[..open]
        .strip_suffix(b" ")
        .and_then(number::<u32>)
        .ok_or("no PID before the name")?;
    let rest = line[close + 1..]
        .strip_prefix(b" ")
        .ok_or("nothing after the name")?;
    // Fields 3 (state) onwards; field N is at index N - 3.
    let fields: Vec<&[u8]> = rest.split(|b| *b == b' ').collect();
    let field = |n: usize| fields.get(n - 3).copied().ok_or("too few fields");
    Ok(Stat {
        pid,
        ppid: number(field(4)?).ok_or("the parent PID is not a number")?,
        start_time: number(field(22)?).ok_or("the start time is not a number")?,
    })
}

/// Digits only (no sign, no space), as the kernel writes them.
fn number<T: std::str::FromStr>(bytes: &[u8]) -> Option<T> {
    if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// This process's stat, from a /proc of its own PID namespace: the PIDs it names are the ones
/// this namespace gives (a /proc of another namespace names other numbers).
fn own_stat() -> Result<Stat, BindingError> {
    let stat = read_stat(SELF_STAT)?;
    if stat.pid != std::process::id() {
        return Err(BindingError::Malformed {
            path: SELF_STAT.into(),
            problem: "another PID than this process's: /proc is another PID namespace's",
        });
    }
    Ok(stat)
}

fn read_stat(path: &str) -> Result<Stat, BindingError> {
    let bytes = read_proc(path, MAX_STAT_BYTES)?;
    parse_stat(&bytes).map_err(|problem| BindingError::Malformed {
        path: path.to_string(),
        problem,
    })
}

fn exists(path: &str) -> bool {
    std::path::Path::new(path).exists()
}

/// Opens `path` without blocking (a FIFO mounted there cannot hang the caller), refused
/// unless the kernel's file system of type `magic` serves it.
fn open_kernel_file(path: &str, magic: u64) -> Result<std::fs::File, BindingError> {
    let unreadable = |e: std::io::Error| BindingError::Unreadable {
        path: path.to_string(),
        reason: e.to_string(),
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(unreadable)?;
    // SAFETY: fstatfs writes one statfs into the zeroed buffer it is given, for an open fd.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatfs(file.as_raw_fd(), &mut fs) } != 0 {
        return Err(unreadable(std::io::Error::last_os_error()));
    }
    #[allow(clippy::unnecessary_cast)] // f_type's type differs between C libraries
    if fs.f_type as u64 != magic {
        return Err(BindingError::NotProcfs {
            path: path.to_string(),
        });
    }
    Ok(file)
}

/// The inode number of the PID namespace at `path` (`/proc/PID/ns/pid`).
fn pid_namespace(path: &str) -> Result<u64, BindingError> {
    let file = open_kernel_file(path, NSFS_MAGIC)?;
    file.metadata()
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .map_err(|e| BindingError::Unreadable {
            path: path.to_string(),
            reason: e.to_string(),
        })
}

/// Reads at most `bound` bytes of a procfs file ([`open_kernel_file`]).
fn read_proc(path: &str, bound: usize) -> Result<Vec<u8>, BindingError> {
    let unreadable = |e: std::io::Error| BindingError::Unreadable {
        path: path.to_string(),
        reason: e.to_string(),
    };
    let file = open_kernel_file(path, PROC_SUPER_MAGIC)?;
    let mut bytes = Vec::new();
    file.take(bound as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() > bound {
        return Err(BindingError::Malformed {
            path: path.to_string(),
            problem: "longer than the kernel writes",
        });
    }
    Ok(bytes)
}

/// Lowercase hex SHA-256 of the length-prefixed fields (the module's documentation).
fn derive(fields: &[&[u8]]) -> String {
    let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for field in fields {
        context.update(&(field.len() as u64).to_be_bytes());
        context.update(field);
    }
    // Two digits a byte from a table: format! per byte was 32 allocations, 25 k instructions.
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let digest = context.finish();
    let mut hex = String::with_capacity(2 * digest.as_ref().len());
    for b in digest.as_ref() {
        hex.push(char::from(DIGITS[usize::from(b >> 4)]));
        hex.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    const SALT: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const BOOT: &str = "0f6e2d2c-3b1a-4c1e-9f0a-2f6b7c9d1e4a";

    /// A stat line as the kernel writes it for a process named `name`.
    fn stat_line(pid: u32, name: &str, ppid: u32, start: u64) -> Vec<u8> {
        let mut fields: Vec<String> = vec!["S".into(), ppid.to_string()];
        // Fields 5 to 21, then 22 (start time), then the rest up to 52.
        fields.extend((5..=21).map(|n| (n * 10).to_string()));
        fields.push(start.to_string());
        fields.extend((23..=52).map(|n| n.to_string()));
        format!("{pid} ({name}) {}\n", fields.join(" ")).into_bytes()
    }

    #[test]
    fn the_stat_fields_are_counted_from_the_last_parenthesis() {
        let plain = stat_line(4242, "server", 1, 987654);
        assert_eq!(
            parse_stat(&plain),
            Ok(Stat {
                pid: 4242,
                ppid: 1,
                start_time: 987654
            })
        );
        // A name that imitates the end of the name and the fields after it (a process may
        // name itself anything up to 15 bytes): only the last ')' ends it.
        for name in [") (", "a) R 7 7 7", "x (y) z", "))", "(", " ", ""] {
            assert_eq!(
                parse_stat(&stat_line(17, name, 3, 55)),
                Ok(Stat {
                    pid: 17,
                    ppid: 3,
                    start_time: 55
                }),
                "{name:?}"
            );
        }
        // Not valid UTF-8 in the name: the fields still read.
        let mut odd = b"9 (\xff\xfe) ".to_vec();
        odd.extend_from_slice(&stat_line(9, "n", 2, 3)[6..]);
        assert_eq!(parse_stat(&odd).map(|s| s.start_time), Ok(3));
    }

    #[test]
    fn a_stat_line_that_is_not_the_kernel_s_is_refused() {
        let full = stat_line(5, "n", 1, 2);
        let short = &full[..full.len() / 3];
        for (line, problem) in [
            (&b""[..], "no process name"),
            (b"5 n S 1", "no process name"),
            (b"(n) S 1", "no PID before the name"),
            (b"-5 (n) S 1", "no PID before the name"),
            (b"5 (n)", "nothing after the name"),
            (short, "too few fields"),
            (b"5 (n) S +1 2 3", "the parent PID is not a number"),
        ] {
            assert_eq!(parse_stat(line), Err(problem), "{line:?}");
        }
        let bad_start = String::from_utf8(stat_line(5, "n", 1, 2))
            .unwrap()
            .replacen(" 2 23 ", " 2x 23 ", 1);
        assert_eq!(
            parse_stat(bad_start.as_bytes()),
            Err("the start time is not a number")
        );
    }

    /// A fixed vector, computed independently (the module documentation's Python line): a
    /// reimplementation in another language must give these.
    #[test]
    fn the_derivation_is_fixed() {
        let process = Process {
            boot_id: BOOT.into(),
            pid_namespace: 4026531836,
            pid: 1,
            start_time: 12345,
        };
        assert_eq!(
            process.nonce(SALT),
            "3411f3bc323e291e29b9dd9adfd49986a5a9619d06b7d7fa33eaf6c7546f359a"
        );
        let place = Place {
            boot_id: BOOT.into(),
            pod_uid: Some("6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f".into()),
        };
        assert_eq!(
            place.nonce(SALT),
            "5ba1be0764e59748a86c3a6b9218b2d24b6b804c791ba9b0e0cdc7477e586de0"
        );
    }

    #[test]
    fn every_field_changes_the_nonce_and_fields_never_run_together() {
        let base = Process {
            boot_id: BOOT.into(),
            pid_namespace: 4026531836,
            pid: 12,
            start_time: 345,
        };
        let nonce = base.nonce(SALT);
        assert_eq!(nonce.len(), 64);
        assert!(nonce
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        let other_salt = SALT.replace('0', "1");
        for other in [
            Process {
                pid: 13,
                ..base.clone()
            },
            // Two containers' PID 1, started in the same clock tick.
            Process {
                pid_namespace: 4026532001,
                ..base.clone()
            },
            Process {
                start_time: 346,
                ..base.clone()
            },
            Process {
                boot_id: BOOT.replace('0', "1"),
                ..base.clone()
            },
            // "12" + "345" and "123" + "45" must differ.
            Process {
                pid: 123,
                start_time: 45,
                ..base.clone()
            },
        ] {
            assert_ne!(other.nonce(SALT), nonce, "{other:?}");
        }
        assert_ne!(base.nonce(&other_salt), nonce);
        // A place and a process never share a nonce (their first fields differ).
        let place = Place {
            boot_id: BOOT.into(),
            pod_uid: None,
        };
        assert_ne!(place.nonce(SALT), nonce);
        assert_ne!(
            place.nonce(SALT),
            Place {
                pod_uid: Some("u".into()),
                ..place.clone()
            }
            .nonce(SALT)
        );
    }

    #[test]
    fn this_process_is_read_from_the_kernel() {
        let me = Process::current().unwrap();
        assert_eq!(me.pid, std::process::id());
        assert_eq!(
            me,
            Process::current().unwrap(),
            "the same process every time"
        );
        assert_eq!(me.boot_id, boot_id().unwrap());
        let parent = Process::parent().unwrap();
        assert_eq!(parent.pid, std::os::unix::process::parent_id());
        let ns = std::fs::read_link("/proc/self/ns/pid").unwrap();
        assert_eq!(ns.to_str().unwrap(), format!("pid:[{}]", me.pid_namespace));
        assert_ne!(parent.nonce(SALT), me.nonce(SALT));
    }

    #[test]
    fn a_pod_uid_is_optional_but_never_empty_or_odd() {
        let with = |v: &'static str| move |n: &str| (n == "MPGATE_POD_UID").then(|| v.into());
        assert_eq!(pod_uid(&|_| None).unwrap(), None);
        let uid = "6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f";
        assert_eq!(pod_uid(&with(uid)).unwrap().as_deref(), Some(uid));
        for (bad, words) in [
            ("", "is set but empty"),
            ("a b", "is not a pod UID"),
            ("ü", "is not a pod UID"),
        ] {
            let e = pod_uid(&with(bad)).unwrap_err().to_string();
            assert!(
                e.contains(words) && e.contains("metadata.uid"),
                "{bad:?}: {e}"
            );
        }
        let long: &'static str = "a".repeat(129).leak();
        assert!(pod_uid(&with(long)).is_err());
    }

    #[test]
    fn a_salt_is_64_lowercase_hex_digits() {
        assert!(is_salt(SALT));
        assert!(!is_salt(&SALT.to_uppercase()));
        assert!(!is_salt(&SALT[1..]));
        assert!(!is_salt(&format!("{SALT}0")));
        assert!(!is_salt(&SALT.replace('a', "g")));
    }
}
