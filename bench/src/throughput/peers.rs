//! The peer XDP programs a user would pick instead of portguard, from Debian's `xdp-tools`
//! (1.3.1): `xdp-filter` in deny-by-default mode with the policy's destination ports allowed,
//! and `xdp-bench drop`, a second `XDP_DROP` reference. Both run on the benchmark's own
//! receiver veth, in its own namespace, through `nsenter --net` (not `ip netns exec`, whose
//! private mount of /sys would hide the bpffs libxdp pins its maps in), and are removed again
//! (also when the benchmark panics).

use std::{
    collections::BTreeSet,
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use portguard::{
    compile::HostRule,
    policy::{Match, Proto},
};

/// Where xdp-filter pins its maps (its own fixed directory, under the bpffs root).
const XDP_FILTER_PINS: &str = "/sys/fs/bpf/xdp-filter";

/// A command in the receiver's network namespace, with the host's mount namespace.
fn in_ns(ns: &str, program: &str) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/run/netns/{ns}")).arg(program);
    c
}

fn run(mut c: Command) {
    let out = c.output().expect("run an xdp-tools command");
    assert!(
        out.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether the tools are installed (`cargo xtask setup` installs Debian's `xdp-tools`).
pub(super) fn available() -> bool {
    ["xdp-filter", "xdp-bench"].iter().all(|t| {
        Command::new(t)
            .arg("help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    })
}

/// The destination ports the policy opens, by protocol: what xdp-filter can be told. It has no
/// notion of sources, ICMP types or other IP protocols.
pub(super) fn allowed_ports(rules: &[HostRule]) -> BTreeSet<(&'static str, u16)> {
    let mut out = BTreeSet::new();
    for r in rules {
        let Match::Ports(ranges) = &r.matches else {
            continue;
        };
        for p in &r.protos {
            let proto = match p {
                Proto::Tcp => "tcp",
                Proto::Udp => "udp",
                _ => continue,
            };
            for range in ranges {
                out.extend(range.clone().map(|port| (proto, port)));
            }
        }
    }
    out
}

/// xdp-filter on the receiver: its maps set up once (the ports), the program loaded and
/// unloaded around each measurement, everything removed on drop.
pub(super) struct XdpFilter {
    ns: String,
    dev: String,
    loaded: bool,
    has_maps: bool,
    ports: BTreeSet<(&'static str, u16)>,
}

impl XdpFilter {
    /// An xdp-filter for `dev` in namespace `ns` that will allow `ports`; `None` when another
    /// xdp-filter already has its pins on this machine (it keeps one set, shared by all its
    /// interfaces, which the benchmark must not touch).
    pub(super) fn new(ns: &str, dev: &str, ports: BTreeSet<(&'static str, u16)>) -> Option<Self> {
        if Path::new(XDP_FILTER_PINS).exists() {
            return None;
        }
        Some(XdpFilter {
            ns: ns.to_owned(),
            dev: dev.to_owned(),
            loaded: false,
            has_maps: false,
            ports,
        })
    }

    /// Load it, native, deny by default; the first time, allow the ports.
    pub(super) fn load(&mut self) {
        let mut c = in_ns(&self.ns, "xdp-filter");
        c.args(["load", "--mode", "native", "--policy", "deny", &self.dev]);
        run(c);
        self.loaded = true;
        if self.has_maps {
            return;
        }
        // From the first port on, the pins are ours to remove (also after a panic below).
        self.has_maps = true;
        // One at a time: concurrent calls fail on libxdp's lock file ("Unable to read PID from
        // lockfile").
        for (proto, port) in &self.ports {
            let mut c = in_ns(&self.ns, "xdp-filter");
            c.args(["port", &port.to_string(), "--mode", "dst", "--proto", proto]);
            run(c);
        }
    }

    /// Detach it, keeping its maps (the ports) for the next load.
    pub(super) fn unload(&mut self) {
        let mut c = in_ns(&self.ns, "xdp-filter");
        c.args(["unload", "--keep-maps", &self.dev]);
        run(c);
        self.loaded = false;
    }
}

impl Drop for XdpFilter {
    fn drop(&mut self) {
        if self.loaded {
            let _ = in_ns(&self.ns, "xdp-filter")
                .args(["unload", "--keep-maps", &self.dev])
                .output();
        }
        if self.has_maps {
            // Its pins are its own directory; nothing else of this machine's is in it (checked
            // in `new`).
            let _ = std::fs::remove_dir_all(XDP_FILTER_PINS);
        }
    }
}

/// `xdp-bench drop` running on the receiver, stopped (by its process id) on drop.
pub(super) struct XdpBench {
    child: Child,
    ns: String,
    dev: String,
}

/// Whether `dev` in `ns` has an XDP program attached.
fn has_xdp(ns: &str, dev: &str) -> bool {
    let out = in_ns(ns, "ip")
        .args(["-d", "link", "show", dev])
        .output()
        .expect("ip link show");
    String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
}

/// `xdp-bench drop` on `dev` in `ns`: native mode, not touching the packets, its statistics
/// printed rarely, its user-space side on `cpu` (not the one being measured).
fn xdp_bench_drop(ns: &str, dev: &str, cpu: usize) -> Command {
    let mut c = in_ns(ns, "taskset");
    c.args(["-c", &cpu.to_string(), "xdp-bench", "drop"])
        .args(["--xdp-mode", "native", "--program-mode", "no-touch"])
        .args(["--interval", "60", dev])
        .stdout(Stdio::null());
    c
}

/// The xdp-tools version the labels name (Debian's package).
pub(super) const VERSION: &str = "1.3.1";

/// Whether `xdp-bench drop` can attach to `dev` here: started once, stopped as soon as its
/// program is on the interface. xdp-tools 1.3.1 loads tracepoint programs for
/// `xdp_redirect_map_err`, which newer kernels (6.18) no longer have, and then gives up: the
/// error is what libbpf printed.
pub(super) fn xdp_bench_check(ns: &str, dev: &str, cpu: usize) -> Result<(), String> {
    let mut c = xdp_bench_drop(ns, dev, cpu);
    c.stderr(Stdio::piped());
    let mut child = c.spawn().map_err(|e| format!("running xdp-bench: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if has_xdp(ns, dev) {
            drop(XdpBench {
                child,
                ns: ns.to_owned(),
                dev: dev.to_owned(),
            });
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            let why: Vec<&str> = err
                .lines()
                .map(str::trim)
                .filter(|l| l.contains("BTF") || l.starts_with("Failed"))
                .collect();
            return Err(format!("it exits with {status}: {}", why.join("; ")));
        }
        if Instant::now() > deadline {
            drop(XdpBench {
                child,
                ns: ns.to_owned(),
                dev: dev.to_owned(),
            });
            return Err("it did not attach within 10 s".to_owned());
        }
        thread::sleep(Duration::from_millis(20));
    }
}

impl XdpBench {
    /// Start it, native mode, not touching the packets, its statistics printed rarely, its
    /// user-space side on `cpu` (not the one being measured); returns once the program is on
    /// the interface.
    pub(super) fn start(ns: &str, dev: &str, cpu: usize) -> Self {
        let mut c = xdp_bench_drop(ns, dev, cpu);
        c.stderr(Stdio::null());
        let bench = XdpBench {
            child: c.spawn().expect("run xdp-bench"),
            ns: ns.to_owned(),
            dev: dev.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if has_xdp(ns, dev) {
                return bench;
            }
            assert!(
                Instant::now() < deadline,
                "xdp-bench drop did not attach to {dev}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for XdpBench {
    fn drop(&mut self) {
        // SIGINT: it detaches its program and prints its summary on the way out.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: signalling the child this struct started, by its pid.
            unsafe { libc::kill(pid, libc::SIGINT) };
        }
        let _ = self.child.wait();
        let deadline = Instant::now() + Duration::from_secs(5);
        while has_xdp(&self.ns, &self.dev) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
    }
}
