//! `bench throughput`: packets per second a veth receiver handles with portguard attached, with
//! the XDP_DROP / XDP_PASS limits, and with nftables doing the same job, on the same traffic.
//!
//! Topology: two namespaces of the benchmark's own joined by a veth pair (198.18.200.0/24).
//! Traffic is generated in the kernel: a two-instruction `XDP_TX` program is run with
//! BPF_PROG_TEST_RUN in live-frames mode (kernel 5.18) with the sender veth as ingress, so every
//! frame is transmitted out of it and lands in the receiver veth's queue, where the program
//! under test (or the stack and nftables) handles it. No socket, no syscall per packet.
//!
//! The receiver's NAPI runs threaded (`/sys/class/net/<dev>/threaded`), pinned to CPU 1 while
//! the generator is pinned to CPU 0: the receiver's work is then in one kernel thread whose CPU
//! time we read, so each configuration gets both a rate (packets the receiver handled per
//! second) and a cost (receiver CPU ns per packet), which stays meaningful when the generator,
//! not the receiver, is the bottleneck.

use std::{
    io::Write as _,
    os::fd::OwnedFd,
    path::Path,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use aya::programs::{XdpMode, xdp::XdpLinkId};
use integration_tests::{
    PinDir,
    frames::{Frame, L4},
    net::{Pair, enter},
};
use ipnet::IpNet;
use portguard::{
    compile::HostRule,
    ebpf::{DROP_PROGRAM, Datapath, NOOP_PROGRAM, PROGRAM},
    policy::{Match, Proto},
};
use portguard_common::reason::Reason;

use super::{
    datapath::{rhv_policy, slot_of},
    probe::{median, round3},
    report::{Report, table},
    sys,
};

/// The pair's subnet: 198.18.200.0/24 and 2001:db8:200::/64.
const SUBNET: u8 = 200;
/// Traffic before the measured interval, so queues and caches are in their steady state.
const WARMUP: Duration = Duration::from_millis(500);
/// The measured interval.
const INTERVAL: Duration = Duration::from_secs(2);
/// Rounds; every configuration is measured once per round, in a rotated order.
const ROUNDS: usize = 3;
/// Frames per live-frames call; the generator checks for "stop" between calls.
const GEN_REPEAT: u32 = 1 << 16;
/// Frames per batch in live-frames mode (the kernel's default NAPI weight).
const GEN_BATCH: u32 = 64;
/// Nice value of the generator and the receiver thread. The machine is shared: at the default
/// priority a compiler on the same CPU takes most of it and the figures measure the scheduler.
/// Still SCHED_OTHER, so nothing else starves outright.
const NICE: i32 = -20;
/// A host of another role (a hypervisor, RHV-H12 opens Geneve udp/6081 to it).
const HYPERVISOR: [u8; 4] = [198, 18, 2, 5];

/// What handles the traffic on the receiver veth.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Receiver {
    /// portguard with the RHV host policy, native XDP.
    Portguard,
    /// `portguard_drop`: XDP_DROP, the limit for dropped traffic.
    XdpDrop,
    /// `portguard_noop`: XDP_PASS, the limit for passed traffic.
    XdpPass,
    /// No XDP program; nftables `inet` chain on the ingress hook of the veth, stateless.
    NftIngress,
    /// No XDP program; nftables `inet` chain on the input hook, stateless.
    NftInput,
    /// No XDP program; nftables input hook with `ct state established,related accept` first,
    /// as firewalld writes it (conntrack on every packet).
    NftInputCt,
}

impl Receiver {
    fn key(self) -> &'static str {
        match self {
            Receiver::Portguard => "portguard",
            Receiver::XdpDrop => "xdp_drop",
            Receiver::XdpPass => "xdp_pass",
            Receiver::NftIngress => "nft_ingress",
            Receiver::NftInput => "nft_input",
            Receiver::NftInputCt => "nft_input_ct",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Receiver::Portguard => "portguard (XDP, native), RHV host policy",
            Receiver::XdpDrop => "`portguard_drop` (XDP_DROP): the limit",
            Receiver::XdpPass => "`portguard_noop` (XDP_PASS): the limit",
            Receiver::NftIngress => "nftables, inet ingress hook on the veth, same rules",
            Receiver::NftInput => "nftables, inet input hook, same rules",
            Receiver::NftInputCt => {
                "nftables, input hook + `ct state established,related accept` (firewalld-style)"
            }
        }
    }

    fn nft(self) -> bool {
        matches!(
            self,
            Receiver::NftIngress | Receiver::NftInput | Receiver::NftInputCt
        )
    }
}

/// One kind of traffic and the receivers it is measured with.
struct Traffic {
    key: &'static str,
    label: &'static str,
    frame: Vec<u8>,
    /// The baseline its ratios are taken against.
    limit: Receiver,
    /// portguard's counter that must count every packet the receiver handled.
    counted_by: Counted,
}

#[derive(Clone, Copy)]
enum Counted {
    Reason(Reason),
    Rule(u32),
}

/// Set the IPv4 header checksum and the TCP checksum (the stack checks both before nftables'
/// input hook sees the packet: a frame with zero checksums would be measured as a
/// bad-checksum drop), set the destination MAC, and pad to the 60-byte Ethernet minimum.
fn finish(mut f: Vec<u8>, dst_mac: [u8; 6]) -> Vec<u8> {
    fn fold(mut sum: u32) -> u16 {
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }
    fn add(bytes: &[u8]) -> u32 {
        bytes
            .chunks(2)
            .map(|c| u32::from(c[0]) << 8 | u32::from(*c.get(1).unwrap_or(&0)))
            .sum()
    }
    f[..6].copy_from_slice(&dst_mac);
    let ip = 14;
    let ihl = usize::from(f[ip] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([f[ip + 2], f[ip + 3]]));
    let c = fold(add(&f[ip..ip + ihl]));
    f[ip + 10..ip + 12].copy_from_slice(&c.to_be_bytes());
    if f[ip + 9] == 6 {
        let l4 = ip + ihl;
        let len = total - ihl;
        let pseudo = add(&f[ip + 12..ip + 20]) + 6 + len as u32;
        let c = fold(pseudo + add(&f[l4..l4 + len]));
        f[l4 + 16..l4 + 18].copy_from_slice(&c.to_be_bytes());
    }
    f.resize(f.len().max(60), 0);
    f
}

/// The nftables equivalent of the host's rules: one `accept` per rule, family and protocol,
/// in the same order, then a counted drop. Stateless like portguard's rule matching (replies to
/// the host's own connections are portguard's socket lookup; only the `ct` variant has them).
fn nft_rules(rules: &[HostRule]) -> Vec<String> {
    let mut out = Vec::new();
    for r in rules {
        for v4 in [true, false] {
            let srcs: Vec<String> = r
                .sources
                .iter()
                .filter(|n| matches!(n, IpNet::V4(_)) == v4)
                .map(ToString::to_string)
                .collect();
            if srcs.is_empty() {
                continue;
            }
            let from = if r
                .sources
                .iter()
                .any(|n| n.prefix_len() == 0 && matches!(n, IpNet::V4(_)) == v4)
            {
                format!("meta nfproto {}", if v4 { "ipv4" } else { "ipv6" })
            } else {
                format!(
                    "{} saddr {{ {} }}",
                    if v4 { "ip" } else { "ip6" },
                    srcs.join(", ")
                )
            };
            for p in &r.protos {
                let what = match (p, &r.matches) {
                    (Proto::Tcp | Proto::Udp | Proto::Sctp, Match::Ports(ranges)) => {
                        let ports: Vec<String> = ranges
                            .iter()
                            .map(|x| {
                                if x.start() == x.end() {
                                    x.start().to_string()
                                } else {
                                    format!("{}-{}", x.start(), x.end())
                                }
                            })
                            .collect();
                        let l4 = match p {
                            Proto::Tcp => "tcp",
                            Proto::Udp => "udp",
                            _ => "sctp",
                        };
                        format!("{l4} dport {{ {} }}", ports.join(", "))
                    }
                    (Proto::Icmp, Match::Icmp { types, code }) if v4 => icmp("icmp", types, *code),
                    (Proto::Icmpv6, Match::Icmp { types, code }) if !v4 => {
                        icmp("icmpv6", types, *code)
                    }
                    _ => continue,
                };
                out.push(format!("{from} {what} accept"));
            }
        }
    }
    out
}

fn icmp(kw: &str, types: &[std::ops::RangeInclusive<u8>], code: Option<u8>) -> String {
    let t: Vec<String> = types
        .iter()
        .map(|x| {
            if x.start() == x.end() {
                x.start().to_string()
            } else {
                format!("{}-{}", x.start(), x.end())
            }
        })
        .collect();
    let mut s = format!("{kw} type {{ {} }}", t.join(", "));
    if let Some(c) = code {
        s.push_str(&format!(" {kw} code {c}"));
    }
    s
}

/// The whole ruleset for one nftables receiver.
fn nft_ruleset(r: Receiver, dev: &str, rules: &[String]) -> String {
    let hook = match r {
        Receiver::NftIngress => {
            format!("type filter hook ingress device \"{dev}\" priority filter;")
        }
        _ => "type filter hook input priority filter;".to_owned(),
    };
    let mut s = format!("table inet pgbench {{\n  chain c {{\n    {hook} policy accept;\n");
    if r == Receiver::NftInputCt {
        s.push_str("    ct state established,related accept\n");
    }
    for rule in rules {
        s.push_str(&format!("    {rule}\n"));
    }
    s.push_str("    counter drop\n  }\n}\n");
    s
}

/// Run `nft` in the receiver's namespace with `input` on standard input.
fn nft(ns: &str, args: &[&str], input: &str) -> String {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run nft(8)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write to nft");
    let out = child.wait_with_output().expect("nft");
    assert!(
        out.status.success(),
        "nft {}: {}\n{input}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Packets counted by the final `counter drop` of the nftables chain.
fn nft_dropped(ns: &str) -> u64 {
    let out = nft(ns, &["list", "table", "inet", "pgbench"], "");
    out.lines()
        .find(|l| l.contains("counter packets") && l.trim_end().ends_with("drop"))
        .and_then(|l| l.split_whitespace().skip_while(|w| *w != "packets").nth(1))
        .and_then(|n| n.parse().ok())
        .expect("nft drop counter")
}

/// (`rx_packets`, `rx_dropped`) of `dev` from /proc/thread-self/net/dev: the calling thread's
/// namespace, read without spawning a process.
fn dev_stats(dev: &str) -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/thread-self/net/dev").expect("read net/dev");
    let line = text
        .lines()
        .find_map(|l| l.trim_start().strip_prefix(&format!("{dev}:")))
        .unwrap_or_else(|| panic!("{dev} not in /proc/thread-self/net/dev"));
    let f: Vec<u64> = line
        .split_whitespace()
        .map(|x| x.parse().expect("counter"))
        .collect();
    (f[1], f[3])
}

/// Nanoseconds a thread has run (first field of /proc/<pid>/schedstat).
fn run_ns(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The NAPI kernel thread of `dev` (`napi/<dev>-<id>`, a child of kthreadd), if exactly one.
/// Recent kernels show a kernel thread's full name in `comm`; older ones cut it at 15 bytes.
fn napi_thread(dev: &str) -> Option<i32> {
    let full = format!("napi/{dev}-");
    let named = |comm: &str| match comm.strip_prefix(&full) {
        Some(id) => !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()),
        None => comm.len() == 15 && full.starts_with(comm),
    };
    let found: Vec<i32> = std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            named(comm.trim_end())
                && std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .unwrap_or_default()
                    .lines()
                    .any(|l| l == "PPid:\t2")
        })
        .collect();
    (found.len() == 1).then(|| found[0])
}

/// One measured interval.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    /// Packets the receiver handled per second.
    pps: f64,
    /// Frames the generator sent per second.
    offered: f64,
    /// Frames per second lost before the receiver (its queue full), per `rx_dropped`.
    lost: f64,
    /// Receiver NAPI thread CPU ns per handled packet.
    cpu_ns: f64,
    /// Receiver NAPI thread CPU utilisation, 0..1.
    busy: f64,
    /// What the filter itself counted / packets handled (1.0 = every packet accounted for).
    accounted: f64,
}

/// The generator: a thread in the sender's namespace, pinned to CPU 0, running live frames
/// until told to stop.
struct Generator {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    tid: Arc<std::sync::atomic::AtomicI32>,
    handle: thread::JoinHandle<std::io::Result<()>>,
}

impl Generator {
    fn start(ns_path: String, prog: Arc<OwnedFd>, frame: Vec<u8>, ifindex: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let tid = Arc::new(std::sync::atomic::AtomicI32::new(0));
        let (s, n, t) = (stop.clone(), sent.clone(), tid.clone());
        let handle = thread::spawn(move || {
            // SAFETY: plain syscall.
            t.store(unsafe { libc::gettid() }, Ordering::Relaxed);
            enter(&ns_path);
            let _ = sys::pin_to_cpu(0, 0);
            let _ = sys::set_nice(0, NICE);
            while !s.load(Ordering::Relaxed) {
                sys::live_frames(&prog, &frame, ifindex, GEN_REPEAT, GEN_BATCH)?;
                n.fetch_add(u64::from(GEN_REPEAT), Ordering::Relaxed);
            }
            Ok(())
        });
        Generator {
            stop,
            sent,
            tid,
            handle,
        }
    }

    fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .join()
            .expect("generator thread")
            .expect("BPF_PROG_TEST_RUN in live-frames mode (needs Linux 5.18)");
    }
}

/// Everything the receiver-side thread needs.
struct Rig {
    a_path: String,
    b_ns: String,
    b_if: String,
    a_ifindex: u32,
    napi: Option<i32>,
    gen_prog: Arc<OwnedFd>,
    nft_rules: Vec<String>,
}

impl Rig {
    /// Measure one receiver on one traffic. Runs on a thread inside the receiver namespace.
    fn measure(&self, dp: &mut Datapath, r: Receiver, t: &Traffic) -> Sample {
        let link: Option<(&'static str, XdpLinkId)> = match r {
            Receiver::Portguard | Receiver::XdpDrop | Receiver::XdpPass => {
                let name = match r {
                    Receiver::Portguard => PROGRAM,
                    Receiver::XdpDrop => DROP_PROGRAM,
                    _ => NOOP_PROGRAM,
                };
                let id = dp
                    .load_program(name)
                    .expect("program")
                    .attach(&self.b_if, XdpMode::Driver)
                    .expect("attach to the receiver veth (native mode)");
                Some((name, id))
            }
            _ => {
                nft(
                    &self.b_ns,
                    &["-f", "-"],
                    &nft_ruleset(r, &self.b_if, &self.nft_rules),
                );
                None
            }
        };
        let counted = |dp: &Datapath| -> u64 {
            if r.nft() {
                return nft_dropped(&self.b_ns);
            }
            match t.counted_by {
                Counted::Reason(reason) => dp
                    .reason_counters()
                    .expect("counters")
                    .iter()
                    .find(|(x, _)| *x == reason)
                    .map_or(0, |(_, c)| c.packets),
                Counted::Rule(slot) => dp.rule_counters(slot).expect("counters").packets,
            }
        };
        let generator = Generator::start(
            self.a_path.clone(),
            self.gen_prog.clone(),
            t.frame.clone(),
            self.a_ifindex,
        );
        thread::sleep(WARMUP);
        let snap = |dp: &Datapath| {
            let at = Instant::now();
            let (rx, lost) = dev_stats(&self.b_if);
            let cpu = run_ns(self.napi.unwrap_or(generator.tid.load(Ordering::Relaxed)));
            let sent = generator.sent.load(Ordering::Relaxed);
            (at, rx, lost, cpu, sent, counted(dp))
        };
        let s0 = snap(dp);
        thread::sleep(INTERVAL);
        let s1 = snap(dp);
        generator.finish();
        match link {
            Some((name, id)) => dp
                .load_program(name)
                .expect("program")
                .detach(id)
                .expect("detach"),
            None => {
                nft(&self.b_ns, &["delete", "table", "inet", "pgbench"], "");
            }
        }
        let dt = (s1.0 - s0.0).as_secs_f64();
        let rx = (s1.1 - s0.1) as f64;
        let cpu = (s1.3 - s0.3) as f64;
        // Portguard and nftables count what they drop (or, for passed traffic, portguard
        // counts its rule); the limits and nftables' accept rules count nothing.
        let accounted = match r {
            Receiver::Portguard => (s1.5 - s0.5) as f64 / rx,
            _ if r.nft() && t.limit == Receiver::XdpDrop => (s1.5 - s0.5) as f64 / rx,
            _ => f64::NAN,
        };
        Sample {
            pps: rx / dt,
            offered: (s1.4 - s0.4) as f64 / dt,
            lost: (s1.2 - s0.2) as f64 / dt,
            cpu_ns: cpu / rx,
            busy: cpu / 1e9 / dt,
            accounted,
        }
    }
}

/// Medians over rounds.
struct Result {
    traffic: &'static str,
    receiver: Receiver,
    s: Sample,
    pps_rounds: Vec<f64>,
}

fn setup_receiver(pair: &Pair) -> Option<i32> {
    let b = &pair.b;
    let dev = &pair.b_if;
    b.exec(&["sysctl", "-q", "-w", "net.ipv4.conf.all.rp_filter=0"]);
    b.exec(&[
        "sysctl",
        "-q",
        "-w",
        &format!("net.ipv4.conf.{dev}.rp_filter=0"),
    ]);
    // GRO gives the veth a NAPI context even with no XDP program, so the nftables runs receive
    // the generator's frames the same way; threaded NAPI moves that context into a kernel
    // thread that can be pinned and timed.
    b.exec(&["ethtool", "-K", dev, "gro", "on"]);
    if std::env::var_os("PGBENCH_SOFTIRQ").is_some() {
        return None;
    }
    let threaded = b.output(&[
        "sh",
        "-c",
        &format!("echo 1 > /sys/class/net/{dev}/threaded"),
    ]);
    if !threaded.status.success() {
        eprintln!(
            "portguard-bench: threaded NAPI unavailable ({}); receiver CPU not measured",
            String::from_utf8_lossy(&threaded.stderr).trim()
        );
        return None;
    }
    let Some(pid) = napi_thread(dev) else {
        eprintln!(
            "portguard-bench: no single NAPI thread of {dev} found; receiver CPU not measured"
        );
        return None;
    };
    if thread::available_parallelism().map_or(1, usize::from) >= 2 {
        sys::pin_to_cpu(pid, 1).expect("pin the receiver's NAPI thread");
    }
    sys::set_nice(pid, NICE).expect("raise the receiver's NAPI thread priority");
    Some(pid)
}

fn mac_of(pair: &Pair) -> [u8; 6] {
    let out = pair
        .b
        .output(&["ip", "-j", "link", "show", "dev", &pair.b_if]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j output");
    let s = v[0]["address"].as_str().expect("address");
    let mut mac = [0u8; 6];
    for (m, h) in mac.iter_mut().zip(s.split(':')) {
        *m = u8::from_str_radix(h, 16).expect("hex");
    }
    mac
}

/// A figure, or "n/a" where it was not measured (NaN).
fn na(x: f64, shown: String) -> String {
    if x.is_nan() { "n/a".to_owned() } else { shown }
}

fn mpps(x: f64) -> String {
    format!("{:.3}", x / 1e6)
}

#[expect(
    clippy::too_many_lines,
    reason = "one linear script: set up, measure, tabulate"
)]
pub(crate) fn run(root: &Path) -> Report {
    let hp = rhv_policy(root);
    let pair = Pair::new(SUBNET, 1500);
    let napi = setup_receiver(&pair);
    let mac = mac_of(&pair);
    let std::net::IpAddr::V4(a4) = pair.a4 else {
        unreachable!("Pair gives IPv4 addresses")
    };
    let std::net::IpAddr::V4(b4) = pair.b4 else {
        unreachable!("Pair gives IPv4 addresses")
    };
    let drop_frame = finish(
        Frame::v4(
            a4.octets(),
            b4.octets(),
            L4::Tcp {
                sport: 40000,
                dport: 23,
                flags: 0x02,
            },
        )
        .build(),
        mac,
    );
    let pass_frame = finish(
        Frame::v4(
            HYPERVISOR,
            b4.octets(),
            L4::Udp {
                sport: 40000,
                dport: 6081,
            },
        )
        .build(),
        mac,
    );
    let traffic = vec![
        Traffic {
            key: "drop",
            label: "out-of-matrix traffic (TCP SYN to port 23 from 198.18.200.1, a source with no role): dropped",
            frame: drop_frame,
            limit: Receiver::XdpDrop,
            counted_by: Counted::Reason(Reason::PortNotOpen),
        },
        Traffic {
            key: "pass",
            label: "in-matrix traffic (UDP to port 6081, Geneve, RHV-H12, from hypervisor 198.18.2.5): passed to the stack",
            frame: pass_frame,
            limit: Receiver::XdpPass,
            counted_by: Counted::Rule(slot_of(&hp, "RHV-H12")),
        },
    ];
    let traffic_labels: Vec<(&'static str, &'static str)> =
        traffic.iter().map(|t| (t.key, t.label)).collect();
    let a_if = pair.a_if.clone();
    let a_ifindex = pair
        .a
        .run(move || sys::ifindex(&a_if))
        .expect("sender ifindex");
    let rig = Rig {
        a_path: format!("/run/netns/{}", pair.a.name),
        b_ns: pair.b.name.clone(),
        b_if: pair.b_if.clone(),
        a_ifindex,
        napi,
        gen_prog: Arc::new(sys::load_xdp_tx().expect("load the XDP_TX generator program")),
        nft_rules: nft_rules(&hp.rules),
    };
    let nft_chain_len = rig.nft_rules.len();
    let tables = hp.tables.clone();
    let (b4ip, b6ip) = (pair.b4, pair.b6);
    let results: Vec<Result> = pair.b.run(move || {
        let pins = PinDir::new();
        let mut dp = Datapath::load(&tables, &pins.0).expect("load the XDP program");
        dp.set_local_addrs(&[b4ip, b6ip], &[])
            .expect("local addresses");
        for p in [PROGRAM, DROP_PROGRAM, NOOP_PROGRAM] {
            dp.load_program(p).expect("load program");
        }
        let receivers = |t: &Traffic| {
            [
                Receiver::Portguard,
                t.limit,
                Receiver::NftIngress,
                Receiver::NftInput,
                Receiver::NftInputCt,
            ]
        };
        let mut samples: Vec<(usize, Receiver, Vec<Sample>)> = Vec::new();
        for round in 0..ROUNDS {
            for (ti, t) in traffic.iter().enumerate() {
                let rs = receivers(t);
                for k in 0..rs.len() {
                    let r = rs[(k + round) % rs.len()];
                    eprintln!(
                        "portguard-bench: throughput: round {}/{ROUNDS}, {} traffic, {}",
                        round + 1,
                        t.key,
                        r.key()
                    );
                    let s = rig.measure(&mut dp, r, t);
                    match samples.iter_mut().find(|(i, x, _)| *i == ti && *x == r) {
                        Some((_, _, v)) => v.push(s),
                        None => samples.push((ti, r, vec![s])),
                    }
                }
            }
        }
        let mut out: Vec<Result> = samples
            .into_iter()
            .map(|(ti, r, v)| {
                let m = |f: fn(&Sample) -> f64| median(&v.iter().map(f).collect::<Vec<_>>());
                Result {
                    traffic: traffic[ti].key,
                    receiver: r,
                    s: Sample {
                        pps: m(|s| s.pps),
                        offered: m(|s| s.offered),
                        lost: m(|s| s.lost),
                        cpu_ns: m(|s| s.cpu_ns),
                        busy: m(|s| s.busy),
                        accounted: m(|s| s.accounted),
                    },
                    pps_rounds: v.iter().map(|s| s.pps).collect(),
                }
            })
            .collect();
        out.sort_by_key(|r| (r.traffic != "drop", r.receiver as u8));
        drop(dp);
        drop(pins);
        out
    });
    drop(pair);

    let find = |t: &str, r: Receiver| {
        results
            .iter()
            .find(|x| x.traffic == t && x.receiver == r)
            .expect("measured")
    };
    let mut md = format!(
        "Policy: `policies/examples/rhv.toml` for role `rhv.host` ({} rules; nftables: the same \
         rules as {nft_chain_len} `accept` rules in one chain, then `counter drop`). Receiver: \
         veth in a namespace of the benchmark's own, native XDP, GRO on, threaded NAPI pinned to \
         CPU 1. Generator: BPF_PROG_TEST_RUN live-frames mode (`XDP_TX`, batch {GEN_BATCH}) on \
         the peer veth, pinned to CPU 0; 60-byte frames, one flow. Each figure: median of \
         {ROUNDS} rounds of {:.1} s (after {:.1} s warm-up), configurations interleaved.\n\n\
         *rx Mpps*: packets the receiver handled per second (`rx_packets`); *× limit*: against \
         the XDP_DROP (dropped traffic) or XDP_PASS (passed traffic) program on the same traffic \
         in the same run; *CPU ns/pkt*: the receiver's NAPI thread CPU time per packet — its \
         cost, valid even when the generator, not the receiver, sets the rate; *busy*: that \
         thread's CPU use; *lost*: frames the sender could not queue (receiver full); \
         *counted*: packets the filter itself counted / packets handled.\n\n",
        hp.rules.len(),
        INTERVAL.as_secs_f64(),
        WARMUP.as_secs_f64()
    );
    for t in &traffic_labels {
        let (t, label) = (t.0, t.1);
        md.push_str(&format!("## {label}\n\n"));
        let rows: Vec<Vec<String>> = results
            .iter()
            .filter(|x| x.traffic == t)
            .map(|x| {
                let limit = find(
                    t,
                    if t == "drop" {
                        Receiver::XdpDrop
                    } else {
                        Receiver::XdpPass
                    },
                );
                vec![
                    x.receiver.label().to_owned(),
                    mpps(x.s.pps),
                    format!("{:.2}", x.s.pps / limit.s.pps),
                    na(x.s.cpu_ns, format!("{:.1}", x.s.cpu_ns)),
                    na(x.s.busy, format!("{:.0}%", x.s.busy * 100.0)),
                    mpps(x.s.offered),
                    mpps(x.s.lost),
                    na(x.s.accounted, format!("{:.3}", x.s.accounted)),
                    x.pps_rounds
                        .iter()
                        .map(|p| mpps(*p))
                        .collect::<Vec<_>>()
                        .join(" / "),
                ]
            })
            .collect();
        md.push_str(&table(
            &[
                "receiver",
                "rx Mpps",
                "× limit",
                "CPU ns/pkt",
                "busy",
                "offered Mpps",
                "lost Mpps",
                "counted",
                "rx Mpps per round",
            ],
            &rows,
        ));
        md.push('\n');
    }
    let pg = find("drop", Receiver::Portguard);
    let lim = find("drop", Receiver::XdpDrop);
    let nfts = [
        Receiver::NftIngress,
        Receiver::NftInput,
        Receiver::NftInputCt,
    ];
    let best_nft = nfts
        .iter()
        .map(|r| find("drop", *r))
        .max_by(|a, b| a.s.pps.total_cmp(&b.s.pps))
        .expect("nft measured");
    let vs_limit = pg.s.pps / lim.s.pps;
    let vs_nft = pg.s.pps / best_nft.s.pps;
    let cpu_vs_nft = best_nft.s.cpu_ns / pg.s.cpu_ns;
    md.push_str(&format!(
        "Targets, dropped traffic: ≥ 0.8× XDP_DROP: **{vs_limit:.2}×** — {}; ≥ 5× nftables \
         (against the fastest variant, {}): **{vs_nft:.2}×** in packets per second — {}; per \
         packet of receiver CPU, nftables costs {cpu_vs_nft:.1}× what portguard costs.\n",
        if vs_limit >= 0.8 { "met" } else { "not met" },
        best_nft.receiver.key(),
        if vs_nft >= 5.0 { "met" } else { "not met" },
    ));
    let json = serde_json::json!({
        "policy": {"site": "policies/examples/rhv.toml", "roles": ["rhv.host"], "rules": hp.rules.len(), "nft_accept_rules": nft_chain_len},
        "generator": {"method": "BPF_PROG_TEST_RUN live frames, XDP_TX on the sender veth", "batch": GEN_BATCH, "frame_bytes": 60, "cpu": 0},
        "receiver": {"xdp_mode": "native", "napi": if napi.is_some() { "threaded, pinned to CPU 1" } else { "softirq (threaded NAPI unavailable)" }},
        "rounds": ROUNDS,
        "interval_s": INTERVAL.as_secs_f64(),
        "results": results.iter().map(|x| serde_json::json!({
            "traffic": x.traffic,
            "receiver": x.receiver.key(),
            "rx_pps": x.s.pps.round(),
            "rx_pps_rounds": x.pps_rounds.iter().map(|p| p.round()).collect::<Vec<_>>(),
            "offered_pps": x.s.offered.round(),
            "lost_pps": x.s.lost.round(),
            "receiver_cpu_ns_per_packet": if x.s.cpu_ns.is_nan() { serde_json::Value::Null } else { round3(x.s.cpu_ns).into() },
            "receiver_busy": if x.s.busy.is_nan() { serde_json::Value::Null } else { round3(x.s.busy).into() },
            "counted_fraction": if x.s.accounted.is_nan() { serde_json::Value::Null } else { round3(x.s.accounted).into() },
        })).collect::<Vec<_>>(),
        "targets": {
            "drop_ge_0_8x_xdp_drop": {"ratio": round3(vs_limit), "met": vs_limit >= 0.8},
            "drop_ge_5x_nftables": {"against": best_nft.receiver.key(), "ratio": round3(vs_nft), "met": vs_nft >= 5.0, "cpu_per_packet_ratio": round3(cpu_vs_nft)},
        }
    });
    Report {
        name: "throughput",
        title: "portguard throughput on a veth pair against XDP_DROP and nftables".to_owned(),
        md,
        json,
    }
}
