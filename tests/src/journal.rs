//! A real `systemd-journald` of a test's own, without systemd as PID 1: started in a private
//! mount namespace with tmpfs on `/run/systemd`, `/run/log` and `/var/log/journal`, so it
//! neither sees nor touches the machine's journal. Processes write to it through the usual
//! sockets (a daemon that joins its mount namespace, or a stdout stream connected from here),
//! and `journalctl` reads its files back. Dropping it ends it by its pid.

use std::{
    io::Write as _,
    os::{
        fd::{AsRawFd as _, OwnedFd},
        unix::net::UnixStream,
    },
    path::PathBuf,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

/// Where Debian keeps journald.
const JOURNALD: &str = "/lib/systemd/systemd-journald";

/// A running journald and its mount namespace.
#[derive(Debug)]
pub struct Journald {
    child: Child,
}

impl Journald {
    /// Start journald and wait until its sockets are there.
    #[must_use]
    pub fn start() -> Self {
        // unshare(1) makes the namespace private (no mount propagates back to the host), the
        // shell mounts the tmpfs over the journal's directories there and becomes journald.
        let script = format!(
            "mount -t tmpfs -o mode=0755 tmpfs /run/systemd && mkdir -p /run/systemd/journal && \
             mount -t tmpfs -o mode=0755 tmpfs /run/log && \
             mount -t tmpfs -o mode=2755 tmpfs /var/log/journal && exec {JOURNALD}"
        );
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("unshare (util-linux) and sh");
        let mut j = Journald { child };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !(j.socket("socket").exists() && j.socket("stdout").exists()) {
            if let Ok(Some(status)) = j.child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = j.child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                panic!("systemd-journald exited with {status}: {err}");
            }
            assert!(Instant::now() < deadline, "journald did not start");
            thread::sleep(Duration::from_millis(50));
        }
        j
    }

    /// Its process id (the shell exec'd into it).
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its mount namespace, for a process that should log to it through the usual paths.
    #[must_use]
    pub fn mount_ns(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/mnt", self.pid()))
    }

    /// One of its sockets, as seen from here (through its root directory).
    fn socket(&self, name: &str) -> PathBuf {
        PathBuf::from(format!(
            "/proc/{}/root/run/systemd/journal/{name}",
            self.pid()
        ))
    }

    /// A stdout stream to it, as systemd gives a service: the connected socket (for a child's
    /// stderr) and the `JOURNAL_STREAM` value (`device:inode`) that tells the child so.
    /// Lines may carry a `<N>` priority prefix; the default is info.
    #[must_use]
    pub fn stream(&self, identifier: &str) -> (OwnedFd, String) {
        stream(&self.socket("stdout"), identifier)
    }

    /// What a process needs to log to this journald as a service would: its mount namespace
    /// (for the native socket at the usual path) and its stdout socket.
    #[must_use]
    pub fn link(&self) -> JournalLink {
        JournalLink {
            mount_ns: self.mount_ns(),
            stdout: self.socket("stdout"),
        }
    }

    /// Entries matching `matches` (`FIELD=value`, as journalctl takes them), oldest first, as
    /// `journalctl -o json` prints them.
    #[must_use]
    pub fn entries(&self, matches: &[&str]) -> Vec<serde_json::Value> {
        let dir = format!("/proc/{}/root/run/log/journal", self.pid());
        let out = Command::new("journalctl")
            .args(["--directory", &dir, "-o", "json", "--no-pager"])
            .args(matches)
            .output()
            .expect("journalctl");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Wait (at most `within`) for entries matching `matches` that `pick` accepts; `None` if
    /// none came in time.
    #[must_use]
    pub fn wait_for(
        &self,
        matches: &[&str],
        within: Duration,
        pick: impl Fn(&serde_json::Value) -> bool,
    ) -> Option<serde_json::Value> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(e) = self.entries(matches).into_iter().find(|e| pick(e)) {
                return Some(e);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(200));
        }
    }
}

/// A process's way to a [`Journald`]: see [`Journald::link`].
#[derive(Clone, Debug)]
pub struct JournalLink {
    /// The journald's mount namespace (`/proc/PID/ns/mnt`).
    pub mount_ns: PathBuf,
    /// Its stdout socket, as seen from the test's namespace.
    pub stdout: PathBuf,
}

/// Connect a stdout stream to the journald listening at `socket` (see [`Journald::stream`]).
#[must_use]
pub fn stream(socket: &std::path::Path, identifier: &str) -> (OwnedFd, String) {
    let mut s = UnixStream::connect(socket).expect("connect journal stream");
    // identifier, unit id, priority, level prefix, to syslog, to kmsg, to console
    write!(s, "{identifier}\n\n6\n1\n0\n0\n0\n").expect("stream header");
    // SAFETY: fstat on a descriptor this function owns, into a zeroed struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let rc = unsafe { libc::fstat(s.as_raw_fd(), &raw mut st) };
    assert_eq!(rc, 0, "fstat: {}", std::io::Error::last_os_error());
    (OwnedFd::from(s), format!("{}:{}", st.st_dev, st.st_ino))
}

impl Drop for Journald {
    fn drop(&mut self) {
        // Only the journald this test started; its namespace and tmpfs go with it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
