//! The real `portguard run`, started inside the protected host's namespace the way systemd
//! would start it on a real host, and stopped by its pid.

use std::{
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::{LabError, error::failed};
use crate::state::State;

/// How long the daemon may take to compile, load, attach and write its state.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stopped daemon may take to exit before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a lab keeps the daemon's pins, state, log and audit records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabPaths {
    /// The lab's name prefix.
    pub prefix: String,
    /// bpffs directory of the daemon's pins: `/sys/fs/bpf/<prefix>`.
    pub pin_dir: PathBuf,
    /// The daemon's run directory, also holding the lab's site and log: `<tmp>/<prefix>`.
    pub run_dir: PathBuf,
}

impl LabPaths {
    /// The paths of the lab named `prefix`.
    #[must_use]
    pub fn new(prefix: &str) -> Self {
        LabPaths {
            prefix: prefix.to_owned(),
            pin_dir: Path::new("/sys/fs/bpf").join(prefix),
            run_dir: std::env::temp_dir().join(prefix),
        }
    }

    /// The daemon's audit log.
    #[must_use]
    pub fn audit_log(&self) -> PathBuf {
        self.run_dir.join("audit.jsonl")
    }

    /// The daemon's stderr.
    #[must_use]
    pub fn daemon_log(&self) -> PathBuf {
        self.run_dir.join("daemon.log")
    }
}

/// What the daemon is started with.
#[derive(Clone, Debug)]
pub struct Launch<'a> {
    /// Namespace of the protected host.
    pub ns: &'a str,
    /// Site file.
    pub site: &'a Path,
    /// Product-file directory.
    pub policies: &'a Path,
    /// Host roles.
    pub roles: &'a [String],
    /// Interface to protect.
    pub iface: &'a str,
}

/// Start `portguard run` in the host's namespace and wait until its state file names it.
///
/// Only the network namespace changes (setns in the child before exec): the daemon must see
/// the machine's bpffs to pin there, as under systemd; `ip netns exec` would give it a private
/// /sys without one and its pins would vanish with it. It gets a process group of its own, so a
/// Ctrl-C in the terminal reaches the lab, which then stops it in order.
pub fn start(paths: &LabPaths, launch: &Launch<'_>) -> Result<Child, LabError> {
    let exe = std::env::current_exe().map_err(failed("finding this program's path"))?;
    let log = std::fs::File::create(paths.daemon_log())
        .map_err(failed(format!("creating {}", paths.daemon_log().display())))?;
    let ns_path = Path::new("/run/netns").join(launch.ns);
    let ns =
        std::fs::File::open(&ns_path).map_err(failed(format!("opening {}", ns_path.display())))?;
    let ns_fd = ns.as_raw_fd();
    let mut cmd = Command::new(exe);
    cmd.arg("run")
        .arg("--site")
        .arg(launch.site)
        .arg("--policies")
        .arg(launch.policies)
        .arg("--host-roles")
        .arg(launch.roles.join(","))
        .arg("--iface")
        .arg(launch.iface)
        .arg("--pin-dir")
        .arg(&paths.pin_dir)
        .arg("--run-dir")
        .arg(&paths.run_dir)
        .arg("--state-dir")
        .arg(paths.run_dir.join("lib"))
        .arg("--audit-log")
        .arg(paths.audit_log())
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(failed("duplicating the log fd"))?)
        .stderr(log)
        .process_group(0);
    // SAFETY: runs in the child between fork and exec; setns(2) is async-signal-safe and the
    // namespace fd was opened by the parent (O_CLOEXEC, so it is closed at exec).
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(ns_fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(failed("starting portguard run"))?;
    drop(ns);
    let pid = child.id();
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(Some(state)) = State::read(&paths.run_dir)
            && state.pid == pid
            && state.interfaces.iter().any(|i| i.name == launch.iface)
        {
            return Ok(child);
        }
        if let Some(status) = child
            .try_wait()
            .map_err(failed("waiting for portguard run"))?
        {
            return Err(LabError::Daemon {
                what: format!("exited with {status} before it was ready"),
                log: paths.daemon_log(),
                tail: tail(&paths.daemon_log()),
            });
        }
        if super::interrupted() || Instant::now() > deadline {
            stop_child(&mut child);
            let what = if super::interrupted() {
                "interrupted before it was"
            } else {
                "not"
            };
            return Err(LabError::Daemon {
                what: format!("{what} ready after {} s", READY_TIMEOUT.as_secs()),
                log: paths.daemon_log(),
                tail: tail(&paths.daemon_log()),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The last lines of a log, for error messages.
#[must_use]
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// SIGTERM our child, give it [`STOP_TIMEOUT`] to exit, then SIGKILL it; reap it.
pub fn stop_child(child: &mut Child) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    signal(child.id(), libc::SIGTERM);
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn signal(pid: u32, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) on a pid this module verified to be a lab daemon.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Pids of the `portguard run` processes pinning into `pin_dir`: found by their command line,
/// which names that exact directory, so `lab down` never stops anything but a lab's daemon.
#[must_use]
pub fn daemons_of(pin_dir: &Path) -> Vec<u32> {
    let want = pin_dir.as_os_str().as_encoded_bytes();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            args.get(1) == Some(&b"run".as_slice())
                && args
                    .windows(2)
                    .any(|w| w[0] == b"--pin-dir" && w[1] == want)
        })
        .collect()
}

/// Stop a daemon that is not our child (found by [`daemons_of`]): SIGTERM, wait, SIGKILL.
pub fn stop_pid(pid: u32) {
    let alive = || Path::new(&format!("/proc/{pid}")).exists() && !zombie(pid);
    signal(pid, libc::SIGTERM);
    let deadline = Instant::now() + STOP_TIMEOUT;
    while alive() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if alive() {
        signal(pid, libc::SIGKILL);
    }
}

fn zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}
