//! Running the real `portguard run` in a test's namespace, with pins and state of its own, and
//! steady traffic to measure what a reload or a crash costs.

use std::{
    io::Write as _,
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use crate::{
    PinDir,
    journal::{JournalLink, Journald},
    net::{Netns, Pair},
    unique,
};

/// The CLI binary built by this crate from the code under test. Cargo builds a package's
/// binaries before its integration tests and puts them one level above the test executables
/// (`target/<profile>/deps/<test>` -> `target/<profile>/portguard-cli`). The benchmark driver
/// (`portguard-bench`, another package) is a binary in `target/release/`, where
/// `cargo xtask bench` builds this one first.
#[must_use]
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let beside = exe.parent().expect("exe dir");
    [beside, beside.parent().unwrap_or(beside)]
        .iter()
        .map(|d| d.join("portguard-cli"))
        .find(|b| b.exists())
        .unwrap_or_else(|| {
            panic!(
                "portguard-cli missing beside {}: run through `cargo xtask test` or `cargo xtask bench`",
                exe.display()
            )
        })
}

/// How long a daemon may take to start (load, attach, write its state).
const READY_LIMIT: Duration = Duration::from_secs(300);

/// A `portguard run` process inside a namespace, its pins and run directory. Dropping it kills
/// the process (by its pid) and removes everything it attached and pinned.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    /// bpffs directory of its pins.
    pub pins: PinDir,
    /// Its state directory.
    pub run_dir: PathBuf,
    /// Where its stderr goes.
    pub log: PathBuf,
    netns: String,
    site: PathBuf,
    extra: Vec<String>,
    umask: Option<libc::mode_t>,
    /// Log to this journald as a service does: in its mount namespace, stderr its stream.
    journal: Option<JournalLink>,
}

impl Daemon {
    /// Start `portguard run --site site <extra>` in `ns` and wait until it is ready.
    #[must_use]
    pub fn start(ns: &Netns, site: &Path, extra: &[&str]) -> Self {
        Self::start_inner(ns, site, extra, None, None)
    }

    /// Like [`Daemon::start`], with the daemon's umask set to `umask` (the test's own stays).
    #[must_use]
    pub fn start_with_umask(ns: &Netns, site: &Path, extra: &[&str], umask: u32) -> Self {
        Self::start_inner(ns, site, extra, Some(umask as libc::mode_t), None)
    }

    fn start_inner(
        ns: &Netns,
        site: &Path,
        extra: &[&str],
        umask: Option<libc::mode_t>,
        journal: Option<&Journald>,
    ) -> Self {
        let run_dir = std::env::temp_dir().join(unique("pg-run-"));
        std::fs::create_dir_all(&run_dir).expect("run dir");
        let mut d = Daemon {
            child: None,
            pins: PinDir::new(),
            log: run_dir.join("daemon.log"),
            run_dir,
            netns: format!("/run/netns/{}", ns.name),
            site: site.to_owned(),
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            umask,
            journal: journal.map(Journald::link),
        };
        d.restart();
        d
    }

    /// Like [`Daemon::start`], logging to `journal` as under systemd: the daemon runs in the
    /// journald's mount namespace (so the native journal socket is at its usual path) with its
    /// stderr a journal stream and `JOURNAL_STREAM` set. Its log is then in the journal, not in
    /// [`Daemon::log_text`].
    #[must_use]
    pub fn start_journaled(ns: &Netns, site: &Path, extra: &[&str], journal: &Journald) -> Self {
        Self::start_inner(ns, site, extra, None, Some(journal))
    }

    /// Start the daemon again (after `kill9` or `stop`) and wait until it is ready.
    pub fn restart(&mut self) {
        self.spawn();
        self.wait_ready();
    }

    /// Start the daemon and SIGKILL it `after` this long, wherever it is in its startup.
    pub fn spawn_and_kill_after(&mut self, after: Duration) {
        self.spawn();
        thread::sleep(after);
        self.kill9();
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "daemon still running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        // Opened here, before the child changes its mount namespace (where /run/netns differs).
        let netns = std::fs::File::open(&self.netns).expect("open netns");
        let mount_ns = self
            .journal
            .as_ref()
            .map(|j| std::fs::File::open(&j.mount_ns).expect("open the journal's mount ns"));
        let umask = self.umask;
        let mut cmd = Command::new(binary());
        cmd.arg("run")
            .arg("--site")
            .arg(&self.site)
            .arg("--policies")
            .arg(policies_dir())
            .args(&self.extra)
            .arg("--audit-log")
            .arg(self.audit_log())
            .arg("--state-dir")
            .arg(self.state_dir())
            .args(self.state_args())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log);
        if let Some(j) = &self.journal {
            let (stream, id) = crate::journal::stream(&j.stdout, "portguard");
            cmd.stderr(stream).env("JOURNAL_STREAM", id);
        }
        let net_fd = std::os::fd::AsRawFd::as_raw_fd(&netns);
        let mnt_fd = mount_ns.as_ref().map(std::os::fd::AsRawFd::as_raw_fd);
        // Only the network namespace changes (and the mount namespace, to a journald's, which
        // shares the host's bpffs): the daemon must see the host's bpffs, as it does under
        // systemd (`ip netns exec` would give it a private /sys without one).
        // SAFETY: pre_exec runs in the child between fork and exec; umask and setns are
        // async-signal-safe, and the descriptors stay open in the parent until spawn returns.
        unsafe {
            cmd.pre_exec(move || {
                if let Some(mask) = umask {
                    libc::umask(mask);
                }
                if libc::setns(net_fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(fd) = mnt_fd
                    && libc::setns(fd, libc::CLONE_NEWNS) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn portguard run");
        drop((netns, mount_ns));
        self.child = Some(child);
    }

    fn wait_ready(&mut self) {
        let pid = self.pid().expect("spawned");
        // Generous: a kernel whose verifier is slow (an older one, under an emulated CPU in
        // `cargo xtask test --kernel`) needs about a minute for the program alone.
        let deadline = Instant::now() + READY_LIMIT;
        while Instant::now() < deadline {
            // Ready: its state names it, and its first self-test (the last step of its start,
            // right before it tells systemd READY=1) is recorded.
            if let Some(state) = self.state()
                && state["pid"] == pid
                && state["health"]["at"].as_u64().unwrap_or(0) > 0
            {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!("portguard run exited with {status}:\n{}", self.log_text());
            }
            thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "portguard run not ready after {} s:\n{}",
            READY_LIMIT.as_secs(),
            self.log_text()
        );
    }

    /// Its directory of what survives reboots (the last good policy), in its run directory.
    #[must_use]
    pub fn state_dir(&self) -> PathBuf {
        self.run_dir.join("lib")
    }

    /// The audit log this daemon writes (in its run directory).
    #[must_use]
    pub fn audit_log(&self) -> PathBuf {
        self.run_dir.join("audit.jsonl")
    }

    /// `audit --json --since 1h` records from this daemon's log, parsed.
    #[must_use]
    pub fn audit_records(&self) -> Vec<serde_json::Value> {
        let out = Command::new(binary())
            .args(["audit", "--json", "--log"])
            .arg(self.audit_log())
            .output()
            .expect("run portguard audit");
        assert!(
            out.status.success(),
            "audit: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("audit JSON line"))
            .collect()
    }

    /// Resident memory of the daemon in KiB (`VmRSS`).
    #[must_use]
    pub fn rss_kib(&self) -> u64 {
        let pid = self.pid().expect("daemon running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmRSS")
    }

    /// `--pin-dir` and `--run-dir` for this daemon.
    #[must_use]
    pub fn state_args(&self) -> Vec<String> {
        vec![
            "--pin-dir".into(),
            self.pins.0.display().to_string(),
            "--run-dir".into(),
            self.run_dir.display().to_string(),
        ]
    }

    /// Run a CLI verb against this daemon's pins and state (`status`, `reload`, `detach`).
    #[must_use]
    pub fn cli(&self, verb: &[&str]) -> Output {
        Command::new(binary())
            .args(verb)
            .args(self.state_args())
            .output()
            .expect("run portguard")
    }

    /// `status --json`, parsed. Exit 1 (the host not enforcing what the site says, e.g. with
    /// the daemon stopped) still prints the report; only 2 is a failure of `status` itself.
    #[must_use]
    pub fn status(&self) -> serde_json::Value {
        let out = self.cli(&["status", "--json"]);
        assert!(
            matches!(out.status.code(), Some(0 | 1)),
            "status: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("status JSON")
    }

    /// Packets counted for rule `id` in `status --json`.
    #[must_use]
    pub fn rule_packets(&self, id: &str) -> u64 {
        let s = self.status();
        s["rules"]
            .as_array()
            .expect("rules")
            .iter()
            .find(|r| r["id"] == id)
            .unwrap_or_else(|| panic!("rule {id} not in status: {s}"))["packets"]
            .as_u64()
            .expect("packets")
    }

    /// The state file, if written.
    #[must_use]
    pub fn state(&self) -> Option<serde_json::Value> {
        let bytes = std::fs::read(self.run_dir.join("state.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// The daemon's log so far.
    #[must_use]
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Pid of the running daemon.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGHUP the running daemon: a reload, without waiting for it.
    pub fn sighup(&self) {
        let pid = i32::try_from(self.pid().expect("daemon running")).expect("pid");
        // SAFETY: kill(2) on the pid of our own child.
        unsafe { libc::kill(pid, libc::SIGHUP) };
    }

    /// SIGKILL the daemon (a crash) and reap it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM the daemon and wait for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on the pid of our own child.
            unsafe { libc::kill(i32::try_from(c.id()).expect("pid"), libc::SIGTERM) };
            let _ = c.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
        // Remove links first (that detaches the program), then the rest of the pins; without
        // the binary (a panic in `binary()` brought us here), the pin directory's own drop
        // still removes the pins.
        if std::panic::catch_unwind(binary).is_ok() {
            let _ = self.cli(&["detach"]);
        }
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

/// The product files of this checkout.
#[must_use]
pub fn policies_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")
}

/// Datagrams sent from one namespace to another at a steady rate, each numbered, so a test can
/// tell whether any was lost while something changed underneath.
#[derive(Debug)]
pub struct Stream {
    stop: Arc<AtomicBool>,
    sender: Option<thread::JoinHandle<u64>>,
    receiver: Option<thread::JoinHandle<u64>>,
    received: Arc<AtomicU64>,
}

impl Stream {
    /// Geneve (udp/[`GENEVE`]) from the peer of `pair` to the protected side every `gap`: a
    /// flow the RHV site of [`site`] allows whatever the reloads switch.
    #[must_use]
    pub fn geneve(pair: &Pair, gap: Duration) -> Self {
        Stream::start(&pair.a, &pair.b, SocketAddr::new(pair.b4, GENEVE), gap)
    }

    /// Send from `from` to `to` (a UDP port in `into`) every `gap`.
    #[must_use]
    pub fn start(from: &Netns, into: &Netns, to: SocketAddr, gap: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let arrived = Arc::new(AtomicU64::new(0));
        let rx = into.run(move || UdpSocket::bind(to).expect("bind stream receiver"));
        // A buffer for seconds of the stream: a receiver thread starved on a loaded machine
        // must not lose datagrams the firewall let through (SO_RCVBUFFORCE: root passes the
        // machine's rmem_max).
        force_recv_buffer(&rx, 8 << 20);
        rx.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let (stop_flag, count) = (stop.clone(), arrived.clone());
        let receiver = thread::spawn(move || {
            let mut buf = [0u8; 64];
            let mut quiet = 0;
            // After the stop flag, keep reading until 1 s passes without a datagram.
            while !stop_flag.load(Ordering::Relaxed) || quiet < 10 {
                if rx.recv(&mut buf).is_ok() {
                    count.fetch_add(1, Ordering::Relaxed);
                    quiet = 0;
                } else {
                    quiet += 1;
                }
            }
            count.load(Ordering::Relaxed)
        });
        let stop_tx = stop.clone();
        let sender = from.spawn(move || {
            let bind: SocketAddr = if to.is_ipv4() {
                "0.0.0.0:0".parse().expect("addr")
            } else {
                "[::]:0".parse().expect("addr")
            };
            let tx = UdpSocket::bind(bind).expect("bind stream sender");
            let mut sent = 0u64;
            while !stop_tx.load(Ordering::Relaxed) {
                if tx.send_to(&sent.to_be_bytes(), to).is_ok() {
                    sent += 1;
                }
                thread::sleep(gap);
            }
            sent
        });
        Stream {
            stop,
            sender: Some(sender),
            receiver: Some(receiver),
            received: arrived,
        }
    }

    /// Datagrams received so far.
    #[must_use]
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Stop sending; (sent, received) once the last datagrams had time to arrive.
    #[must_use]
    pub fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let sent = self.sender.take().expect("sender").join().expect("sender");
        let received = self.receiver.take().expect("receiver").join().expect("rx");
        (sent, received)
    }
}

/// `SO_RCVBUFFORCE` on `sock`: root may pass `net.core.rmem_max`.
pub fn force_recv_buffer(sock: &UdpSocket, bytes: libc::c_int) {
    use std::os::fd::AsRawFd as _;
    // SAFETY: setsockopt on our own descriptor with an int of the size given.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const bytes).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

// A site for the daemon tests: the peer of a `Pair` is both the RHV Manager and another RHV
// host, so the RHV file opens udp/6081 (H12) and tcp/54321 (H10) to it; tcp/22 (H1) follows
// the `rhv-host-ssh` feature, which is what tests switch.

/// Geneve (OVN tunnels), udp/6081: RHV-H12 opens it to the peer of [`site`].
pub const GENEVE: u16 = 6081;
/// VDSM, tcp/54321: RHV-H10 opens it to the peer of [`site`].
pub const VDSM: u16 = 54321;

/// A site file for `pair`, in a directory of its own; `ssh` switches RHV-H1.
#[must_use]
pub fn site(pair: &Pair, ssh: bool) -> PathBuf {
    let dir = std::env::temp_dir().join(unique("pg-site-"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("site.toml");
    write_site(&path, pair, ssh);
    path
}

pub fn write_site(path: &Path, pair: &Pair, ssh: bool) {
    let disabled = if ssh { "" } else { "\"rhv-host-ssh\"" };
    let text = format!(
        r#"products = ["rhv"]
features = ["ovn"]
disabled_features = [{disabled}]
mode = "enforce"

[roles]
"rhv.manager" = ["{a4}/32", "{a6}/128"]
"rhv.host" = ["{a4}/32", "{a6}/128", "{b4}/32", "{b6}/128"]

[failsafe]
ssh_from = ["198.18.250.0/24"]

[host]
roles = ["rhv.host"]
interfaces = ["{b_if}"]
"#,
        a4 = pair.a4,
        a6 = pair.a6,
        b4 = pair.b4,
        b6 = pair.b6,
        b_if = pair.b_if,
    );
    // Write and rename, as an editor or configuration management does.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The site of [`site`] (RHV-H1 off) in `mode` (`enforce` or `audit`), with the audit rate
/// limit set to `rate` events per second and `burst`.
#[must_use]
pub fn site_with_audit(pair: &Pair, mode: &str, rate: u32, burst: u32) -> PathBuf {
    let path = site(pair, false);
    let text = std::fs::read_to_string(&path)
        .expect("site file")
        .replace("mode = \"enforce\"", &format!("mode = \"{mode}\""))
        .replace(
            "[failsafe]",
            &format!("[audit]\nrate = {rate}\nburst = {burst}\n\n[failsafe]"),
        );
    std::fs::write(&path, text).expect("write site file");
    path
}

/// A TCP listener in the protected namespace that accepts and closes.
pub fn listen(pair: &Pair, port: u16) {
    let addr = SocketAddr::new(pair.b4, port);
    let l = pair.b.run(move || TcpListener::bind(addr).expect("bind"));
    thread::spawn(move || for _ in l.incoming() {});
}

/// Whether the peer can open a TCP connection to `port` of the protected side (and send).
#[must_use]
pub fn connects(pair: &Pair, port: u16) -> bool {
    let to = SocketAddr::new(pair.b4, port);
    pair.a.run(move || {
        TcpStream::connect_timeout(&to, Duration::from_millis(800))
            .and_then(|mut s| s.write_all(b"x"))
            .is_ok()
    })
}
