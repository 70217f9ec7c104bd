//! `bench throughput`: packets per second a veth receiver handles with portguard attached, with
//! the `XDP_DROP` / `XDP_PASS` limits, and with nftables doing the same job, on the same traffic.
//!
//! Topology: two namespaces of the benchmark's own joined by a veth pair (198.18.200.0/24).
//! Traffic is generated in the kernel: a two-instruction `XDP_TX` program is run with
//! `BPF_PROG_TEST_RUN` in live-frames mode (kernel 5.18) with the sender veth as ingress, so every
//! frame is transmitted out of it into the receiver veth's queue, where the program under test
//! (or the stack and nftables) handles it. No socket, no syscall per packet.
//!
//! Generator and receiver share one CPU, as a NIC's receive path and its softirq do: after each
//! batch the generator's CPU runs the receiver's NAPI poll in softirq context. (A receiver on
//! the other CPU, in a threaded NAPI, was tried: every batch then pays a cross-CPU wake-up,
//! which on this virtual machine costs more than the filtering being measured.) So the CPU time
//! of the generator thread (plus that CPU's ksoftirqd, should the kernel defer work to it) is
//! the cost of generating *and* receiving each packet. That time is what the figures are built
//! on: the machine is shared, and its scheduler gives this benchmark a varying share of the CPU,
//! so wall-clock rates are reported too but not compared. The generator's own share is measured
//! in a run whose receiver refuses the frames, so the receive path's cost can be separated out.

use std::{
    fmt::Write as _,
    io::Write as _,
    os::fd::OwnedFd,
    path::Path,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering},
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

use crate::{
    datapath::{rhv_policy, slot_of},
    probe::{median, round3},
    report::{Report, table},
    sys,
};

/// The pair's subnet: 198.18.200.0/24 and `2001:db8:200::/64`.
const SUBNET: u8 = 200;
/// Traffic before the measured interval, so queues and caches are in their steady state.
const WARMUP: Duration = Duration::from_millis(500);
/// The measured interval.
const INTERVAL: Duration = Duration::from_secs(2);
/// Rounds; every configuration is measured once per round, in a rotated order.
const ROUNDS: usize = 3;
/// Wall time the generator aims each live-frames call at. Every call with repeat > 1 swaps
/// the XDP dispatcher twice, which waits for an RCU grace period: short calls would spend most
/// of their time asleep. The generator checks for "stop" between calls.
const GEN_CALL: Duration = Duration::from_millis(200);
/// Frames in the generator's first call; later calls are sized to last [`GEN_CALL`].
const GEN_REPEAT: u32 = 1 << 16;
/// Frames per batch in live-frames mode (the kernel's default NAPI weight).
const GEN_BATCH: u32 = 64;
/// The CPU generator and receiver run on.
const CPU: usize = 0;
/// A host of another role (a hypervisor, RHV-H12 opens Geneve udp/6081 to it).
const HYPERVISOR: [u8; 4] = [198, 18, 2, 5];

/// What handles the traffic on the receiver veth.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Receiver {
    /// portguard with the RHV host policy, native XDP.
    Portguard,
    /// The same with auditing off (the site default audits denials, rate-limited).
    PortguardQuiet,
    /// `portguard_drop`: `XDP_DROP`, the limit for dropped traffic.
    XdpDrop,
    /// `portguard_noop`: `XDP_PASS`, the limit for passed traffic.
    XdpPass,
    /// No XDP program; nftables `inet` chain on the ingress hook of the veth, stateless.
    NftIngress,
    /// No XDP program; nftables `inet` chain on the input hook, stateless.
    NftInput,
    /// No XDP program; nftables input hook with `ct state established,related accept` first,
    /// as firewalld writes it (conntrack on every packet).
    NftInputCt,
    /// No receive path at all: GRO off and no XDP program leave the veth without a NAPI
    /// context, so it refuses every frame. What remains is the generator's own cost.
    Refused,
}

impl Receiver {
    fn key(self) -> &'static str {
        match self {
            Receiver::Portguard => "portguard",
            Receiver::PortguardQuiet => "portguard_audit_off",
            Receiver::XdpDrop => "xdp_drop",
            Receiver::XdpPass => "xdp_pass",
            Receiver::NftIngress => "nft_ingress",
            Receiver::NftInput => "nft_input",
            Receiver::NftInputCt => "nft_input_ct",
            Receiver::Refused => "generator_only",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Receiver::Portguard => "portguard (XDP native), RHV host policy",
            Receiver::PortguardQuiet => "portguard, auditing off",
            Receiver::XdpDrop => "`portguard_drop` (XDP_DROP): the limit",
            Receiver::XdpPass => "`portguard_noop` (XDP_PASS): the limit",
            Receiver::NftIngress => "nftables, inet ingress hook on the veth, same rules",
            Receiver::NftInput => "nftables, inet input hook, same rules",
            Receiver::NftInputCt => {
                "nftables, input hook + `ct state established,related accept` (firewalld-style)"
            }
            Receiver::Refused => "no receiver (frames refused): the generator alone",
        }
    }

    fn nft(self) -> bool {
        matches!(
            self,
            Receiver::NftIngress | Receiver::NftInput | Receiver::NftInputCt
        )
    }

    /// The program to attach and the datapath (0: site config, 1: auditing off) it comes from.
    fn xdp(self) -> Option<(usize, &'static str)> {
        match self {
            Receiver::Portguard => Some((0, PROGRAM)),
            Receiver::PortguardQuiet => Some((1, PROGRAM)),
            Receiver::XdpDrop => Some((0, DROP_PROGRAM)),
            Receiver::XdpPass => Some((0, NOOP_PROGRAM)),
            _ => None,
        }
    }
}

/// One kind of traffic and the receivers it is measured with.
struct Traffic {
    key: &'static str,
    label: &'static str,
    frame: Vec<u8>,
    /// The baseline its ratios are taken against.
    limit: Receiver,
    /// Receivers measured with it.
    receivers: Vec<Receiver>,
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
                        let ports: Vec<String> = ranges.iter().map(span).collect();
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

/// `22` or `5900-6923`, as nft writes a set element.
fn span<T: std::fmt::Display + PartialEq>(r: &std::ops::RangeInclusive<T>) -> String {
    if r.start() == r.end() {
        r.start().to_string()
    } else {
        format!("{}-{}", r.start(), r.end())
    }
}

fn icmp(kw: &str, types: &[std::ops::RangeInclusive<u8>], code: Option<u8>) -> String {
    let t: Vec<String> = types.iter().map(span).collect();
    let mut s = format!("{kw} type {{ {} }}", t.join(", "));
    if let Some(c) = code {
        let _ = write!(s, " {kw} code {c}");
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
        let _ = writeln!(s, "    {rule}");
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

/// The `ksoftirqd` thread of `cpu` (a child of kthreadd).
fn ksoftirqd(cpu: usize) -> Option<i32> {
    let want = format!("ksoftirqd/{cpu}");
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .unwrap_or_default()
                .trim_end()
                == want
                && std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .unwrap_or_default()
                    .lines()
                    .any(|l| l == "PPid:\t2")
        })
}

/// One measured interval.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    /// Packets the receiver handled per wall-clock second.
    pps: f64,
    /// Frames the generator sent per wall-clock second.
    offered: f64,
    /// Frames per second lost before the receiver (its queue full), per `rx_dropped`.
    lost: f64,
    /// CPU ns (generator thread + ksoftirqd of its CPU) per packet handled, or per frame sent
    /// when nothing receives.
    cpu_ns: f64,
    /// CPU time / wall time of the generator (and ksoftirqd), 0..1: below 1 while the
    /// machine's other users hold the CPU, or while a call waits for an RCU grace period.
    share: f64,
    /// What the filter itself counted / packets handled (1.0 = every packet accounted for).
    counted: f64,
}

/// The generator: a thread in the sender's namespace, pinned to [`CPU`], running live frames
/// until told to stop.
struct Generator {
    stop: Arc<AtomicBool>,
    /// Frames sent, updated after each call.
    sent: Arc<AtomicU64>,
    /// The generator thread's CPU time in those calls.
    cpu: Arc<AtomicU64>,
    tid: Arc<AtomicI32>,
    /// Taken by `finish`; still there on drop only when a panic unwinds past the generator.
    handle: Option<thread::JoinHandle<std::io::Result<()>>>,
}

impl Drop for Generator {
    /// Stop the generator even when the measurement panics: its thread holds the sender's
    /// namespace alive, and the benchmark's namespaces must go when it ends.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Generator {
    fn start(ns_path: String, prog: Arc<OwnedFd>, frame: Vec<u8>, ifindex: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let cpu = Arc::new(AtomicU64::new(0));
        let tid = Arc::new(AtomicI32::new(0));
        let (s, n, c, t) = (stop.clone(), sent.clone(), cpu.clone(), tid.clone());
        let handle = thread::spawn(move || {
            enter(&ns_path);
            sys::pin_to_cpu(0, CPU)?;
            // SAFETY: plain syscall.
            t.store(unsafe { libc::gettid() }, Ordering::Release);
            let mut repeat = GEN_REPEAT;
            while !s.load(Ordering::Relaxed) {
                let (wall, cpu0) = (Instant::now(), sys::thread_cpu_ns());
                sys::live_frames(&prog, &frame, ifindex, repeat, GEN_BATCH)?;
                c.fetch_add(sys::thread_cpu_ns() - cpu0, Ordering::Relaxed);
                n.fetch_add(u64::from(repeat), Ordering::Relaxed);
                let scale = GEN_CALL.as_secs_f64() / wall.elapsed().as_secs_f64().max(1e-6);
                #[expect(clippy::cast_sign_loss, reason = "clamped to 1e4..=1e8 first")]
                let next = (f64::from(repeat) * scale).clamp(1e4, 1e8) as u32;
                repeat = next;
            }
            Ok(())
        });
        Generator {
            stop,
            sent,
            cpu,
            tid,
            handle: Some(handle),
        }
    }

    fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .expect("running")
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
    softirqd: Option<i32>,
    gen_prog: Arc<OwnedFd>,
    nft_rules: Vec<String>,
}

impl Rig {
    fn configure(&self, dps: &mut [Datapath], r: Receiver) -> Option<(usize, XdpLinkId)> {
        if let Some((i, name)) = r.xdp() {
            let id = dps[i]
                .load_program(name)
                .expect("program")
                .attach(&self.b_if, XdpMode::Driver)
                .expect("attach to the receiver veth (native mode)");
            return Some((i, id));
        }
        if r.nft() {
            nft(
                &self.b_ns,
                &["-f", "-"],
                &nft_ruleset(r, &self.b_if, &self.nft_rules),
            );
        } else {
            self.gro(false);
        }
        None
    }

    fn unconfigure(&self, dps: &mut [Datapath], r: Receiver, link: Option<(usize, XdpLinkId)>) {
        if let (Some((i, id)), Some((_, name))) = (link, r.xdp()) {
            dps[i]
                .load_program(name)
                .expect("program")
                .detach(id)
                .expect("detach");
        } else if r.nft() {
            nft(&self.b_ns, &["delete", "table", "inet", "pgbench"], "");
        } else {
            self.gro(true);
        }
    }

    /// GRO on gives the veth a NAPI context with no XDP program attached, so the nftables runs
    /// receive the generator's frames the same way the XDP runs do; off (and no program) takes
    /// it away.
    fn gro(&self, on: bool) {
        let out = Command::new("ip")
            .args([
                "netns", "exec", &self.b_ns, "ethtool", "-K", &self.b_if, "gro",
            ])
            .arg(if on { "on" } else { "off" })
            .output()
            .expect("run ethtool");
        assert!(
            out.status.success(),
            "ethtool: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Measure one receiver on one traffic. Runs on a thread inside the receiver namespace.
    fn measure(&self, dps: &mut [Datapath], r: Receiver, t: &Traffic) -> Sample {
        let link = self.configure(dps, r);
        let counted = |dps: &[Datapath]| -> u64 {
            if r.nft() {
                return nft_dropped(&self.b_ns);
            }
            let Some((i, PROGRAM)) = r.xdp() else {
                return 0;
            };
            match t.counted_by {
                Counted::Reason(reason) => dps[i]
                    .reason_counters()
                    .expect("counters")
                    .iter()
                    .find(|(x, _)| *x == reason)
                    .map_or(0, |(_, c)| c.packets),
                Counted::Rule(slot) => dps[i].rule_counters(slot).expect("counters").packets,
            }
        };
        let generator = Generator::start(
            self.a_path.clone(),
            self.gen_prog.clone(),
            t.frame.clone(),
            self.a_ifindex,
        );
        thread::sleep(WARMUP);
        let tid = generator.tid.load(Ordering::Acquire);
        assert_ne!(
            tid, 0,
            "the generator did not start (live frames need Linux 5.18 and root)"
        );
        let snap = |dps: &[Datapath]| {
            let at = Instant::now();
            let (rx, lost) = dev_stats(&self.b_if);
            let cpu = run_ns(tid) + self.softirqd.map_or(0, run_ns);
            let sent = generator.sent.load(Ordering::Relaxed);
            let gen_cpu = generator.cpu.load(Ordering::Relaxed);
            (at, rx, lost, cpu, sent, counted(dps), gen_cpu)
        };
        let s0 = snap(dps);
        thread::sleep(INTERVAL);
        let s1 = snap(dps);
        generator.finish();
        self.unconfigure(dps, r, link);
        let dt = (s1.0 - s0.0).as_secs_f64();
        let rx = (s1.1 - s0.1) as f64;
        let sent = (s1.4 - s0.4) as f64;
        let cpu = (s1.3 - s0.3) as f64;
        if r == Receiver::Refused {
            assert!(rx == 0.0, "a veth without NAPI received {rx} frames");
        }
        // portguard counts every packet on a rule or reason; nftables' final rule counts what
        // it drops. The limits count nothing, nor do nftables' accept rules.
        let counted = if r.xdp().is_some_and(|(_, p)| p == PROGRAM)
            || (r.nft() && t.limit == Receiver::XdpDrop)
        {
            (s1.5 - s0.5) as f64 / rx
        } else {
            f64::NAN
        };
        Sample {
            pps: rx / dt,
            offered: sent / dt,
            lost: (s1.2 - s0.2) as f64 / dt,
            // Nothing is received without a receiver: the cost per frame sent, from the
            // generator's own accounting of whole calls.
            cpu_ns: if r == Receiver::Refused {
                (s1.6 - s0.6) as f64 / sent
            } else {
                cpu / rx
            },
            share: cpu / 1e9 / dt,
            counted,
        }
    }
}

/// Medians over rounds.
struct Measured {
    traffic: &'static str,
    receiver: Receiver,
    s: Sample,
    cpu_rounds: Vec<f64>,
}

fn setup_receiver(pair: &Pair) {
    let b = &pair.b;
    let dev = &pair.b_if;
    b.exec(&["sysctl", "-q", "-w", "net.ipv4.conf.all.rp_filter=0"]);
    b.exec(&[
        "sysctl",
        "-q",
        "-w",
        &format!("net.ipv4.conf.{dev}.rp_filter=0"),
    ]);
    b.exec(&["ethtool", "-K", dev, "gro", "on"]);
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

/// Mpps a CPU would sustain at `ns` CPU nanoseconds per packet.
fn per_cpu(ns: f64) -> f64 {
    1e3 / ns
}

#[expect(
    clippy::too_many_lines,
    reason = "one linear script: set up, measure, tabulate"
)]
pub(crate) fn run(root: &Path) -> Report {
    let hp = rhv_policy(root);
    let pair = Pair::new(SUBNET, 1500);
    setup_receiver(&pair);
    let mac = mac_of(&pair);
    let std::net::IpAddr::V4(a4) = pair.a4 else {
        unreachable!("Pair gives IPv4 addresses")
    };
    let std::net::IpAddr::V4(b4) = pair.b4 else {
        unreachable!("Pair gives IPv4 addresses")
    };
    let syn = Frame::v4(
        a4.octets(),
        b4.octets(),
        L4::Tcp {
            sport: 40000,
            dport: 23,
            flags: 0x02,
        },
    );
    let geneve = Frame::v4(
        HYPERVISOR,
        b4.octets(),
        L4::Udp {
            sport: 40000,
            dport: 6081,
        },
    );
    let traffic = [
        Traffic {
            key: "drop",
            label: "out-of-matrix traffic (TCP SYN to port 23 from 198.18.200.1, a source with \
                    no role): dropped",
            frame: finish(syn.build(), mac),
            limit: Receiver::XdpDrop,
            receivers: vec![
                Receiver::Portguard,
                Receiver::PortguardQuiet,
                Receiver::XdpDrop,
                Receiver::NftIngress,
                Receiver::NftInput,
                Receiver::NftInputCt,
                Receiver::Refused,
            ],
            counted_by: Counted::Reason(Reason::PortNotOpen),
        },
        Traffic {
            key: "pass",
            label: "in-matrix traffic (UDP to port 6081, Geneve, RHV-H12, from hypervisor \
                    198.18.2.5): passed to the stack",
            frame: finish(geneve.build(), mac),
            limit: Receiver::XdpPass,
            receivers: vec![
                Receiver::Portguard,
                Receiver::XdpPass,
                Receiver::NftIngress,
                Receiver::NftInput,
                Receiver::NftInputCt,
            ],
            counted_by: Counted::Rule(slot_of(&hp, "RHV-H12")),
        },
    ];
    let labels: Vec<(&'static str, &'static str)> =
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
        softirqd: ksoftirqd(CPU),
        gen_prog: Arc::new(sys::load_xdp_tx().expect("load the XDP_TX generator program")),
        nft_rules: nft_rules(&hp.rules),
    };
    let nft_chain_len = rig.nft_rules.len();
    let tables = hp.tables.clone();
    let (b4ip, b6ip) = (pair.b4, pair.b6);
    let results: Vec<Measured> = pair.b.run(move || {
        let pins = [PinDir::new(), PinDir::new()];
        let mut quiet = tables.clone();
        quiet.config.audit_rate = 0;
        let mut dps = [&tables, &quiet].map(|_| None::<Datapath>);
        for (i, t) in [&tables, &quiet].into_iter().enumerate() {
            let mut dp = Datapath::load(t, &pins[i].0).expect("load the XDP program");
            dp.set_local_addrs(&[b4ip, b6ip], &[])
                .expect("local addresses");
            for p in [PROGRAM, DROP_PROGRAM, NOOP_PROGRAM] {
                dp.load_program(p).expect("load program");
            }
            dps[i] = Some(dp);
        }
        let mut dps = dps.map(|d| d.expect("loaded"));
        let mut samples: Vec<(usize, Receiver, Vec<Sample>)> = Vec::new();
        for round in 0..ROUNDS {
            for (ti, t) in traffic.iter().enumerate() {
                let n = t.receivers.len();
                for k in 0..n {
                    let r = t.receivers[(k + round) % n];
                    eprintln!(
                        "portguard-bench: throughput: round {}/{ROUNDS}, {} traffic, {}",
                        round + 1,
                        t.key,
                        r.key()
                    );
                    let s = rig.measure(&mut dps, r, t);
                    match samples.iter_mut().find(|(i, x, _)| *i == ti && *x == r) {
                        Some((_, _, v)) => v.push(s),
                        None => samples.push((ti, r, vec![s])),
                    }
                }
            }
        }
        let mut out: Vec<Measured> = samples
            .into_iter()
            .map(|(ti, r, v)| {
                let m = |f: fn(&Sample) -> f64| median(&v.iter().map(f).collect::<Vec<_>>());
                Measured {
                    traffic: traffic[ti].key,
                    receiver: r,
                    s: Sample {
                        pps: m(|s| s.pps),
                        offered: m(|s| s.offered),
                        lost: m(|s| s.lost),
                        cpu_ns: m(|s| s.cpu_ns),
                        share: m(|s| s.share),
                        counted: m(|s| s.counted),
                    },
                    cpu_rounds: v.iter().map(|s| s.cpu_ns).collect(),
                }
            })
            .collect();
        out.sort_by_key(|r| (r.traffic != "drop", r.receiver));
        drop(dps);
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
    let gen_ns = find("drop", Receiver::Refused).s.cpu_ns;
    let mut md = format!(
        "Policy: `policies/examples/rhv.toml` for role `rhv.host` ({} rules; nftables: the same \
         rules as {nft_chain_len} `accept` rules in one `inet` chain, then `counter drop`; \
         stateless but for the `ct` variant). Receiver: veth in a namespace of the benchmark's \
         own, native XDP, GRO on. Generator: BPF_PROG_TEST_RUN in live-frames mode, an `XDP_TX` \
         program on the peer veth (batch {GEN_BATCH}), 60-byte frames, one flow; generator and \
         receiver share CPU {CPU} (the receive path runs in softirq after each batch, as a NIC's \
         does). Each figure: median of {ROUNDS} rounds of {:.0} s after {:.1} s of warm-up, \
         configurations interleaved.\n\n\
         *CPU ns/pkt*: CPU time of the generator thread and CPU {CPU}'s ksoftirqd per packet \
         received — generating and receiving it. *Mpps/CPU* = 1000 / that: the rate one CPU \
         sustains; *× limit*: against XDP_DROP (dropped traffic) or XDP_PASS (passed traffic), \
         from those CPU times. *receive ns* = CPU ns/pkt − the generator's own {gen_ns:.1} ns \
         (the \"generator alone\" row): the receive path's cost. *wall Mpps*: packets received \
         per second of wall-clock time, and *CPU share*: CPU time / wall time of the generator — \
         below 100% while the machine's other users hold CPU {CPU}: these two are not compared. \
         *lost*: frames the receiver's queue refused; *counted*: packets the filter counted / \
         packets received.\n\n",
        hp.rules.len(),
        INTERVAL.as_secs_f64(),
        WARMUP.as_secs_f64()
    );
    for (t, label) in &labels {
        let _ = write!(md, "## {label}\n\n");
        let limit = find(
            t,
            if *t == "drop" {
                Receiver::XdpDrop
            } else {
                Receiver::XdpPass
            },
        );
        let rows: Vec<Vec<String>> = results
            .iter()
            .filter(|x| x.traffic == *t)
            .map(|x| {
                let refused = x.receiver == Receiver::Refused;
                vec![
                    x.receiver.label().to_owned(),
                    format!("{:.1}", x.s.cpu_ns),
                    format!("{:.2}", per_cpu(x.s.cpu_ns)),
                    if refused {
                        "–".to_owned()
                    } else {
                        format!("**{:.2}**", limit.s.cpu_ns / x.s.cpu_ns)
                    },
                    if refused {
                        "–".to_owned()
                    } else {
                        format!("{:.1}", x.s.cpu_ns - gen_ns)
                    },
                    mpps(if refused { x.s.offered } else { x.s.pps }),
                    format!("{:.0}%", x.s.share * 100.0),
                    mpps(x.s.lost),
                    na(x.s.counted, format!("{:.3}", x.s.counted)),
                    x.cpu_rounds
                        .iter()
                        .map(|p| format!("{p:.1}"))
                        .collect::<Vec<_>>()
                        .join(" / "),
                ]
            })
            .collect();
        md.push_str(&table(
            &[
                "receiver",
                "CPU ns/pkt",
                "Mpps/CPU",
                "× limit",
                "receive ns",
                "wall Mpps",
                "CPU share",
                "lost Mpps",
                "counted",
                "CPU ns/pkt per round",
            ],
            &rows,
        ));
        md.push('\n');
    }
    let pg = find("drop", Receiver::Portguard);
    let lim = find("drop", Receiver::XdpDrop);
    let best_nft = [
        Receiver::NftIngress,
        Receiver::NftInput,
        Receiver::NftInputCt,
    ]
    .iter()
    .map(|r| find("drop", *r))
    .min_by(|a, b| a.s.cpu_ns.total_cmp(&b.s.cpu_ns))
    .expect("nft measured");
    let vs_limit = lim.s.cpu_ns / pg.s.cpu_ns;
    let vs_nft = best_nft.s.cpu_ns / pg.s.cpu_ns;
    let recv = |x: &Measured| x.s.cpu_ns - gen_ns;
    let recv_vs_limit = recv(lim) / recv(pg);
    let recv_vs_nft = recv(best_nft) / recv(pg);
    let _ = writeln!(
        md,
        "Targets, dropped traffic (rates per CPU, generator included): ≥ 0.8× XDP_DROP: \
         **{vs_limit:.2}×** — {}; ≥ 5× nftables (its fastest variant here, {}): **{vs_nft:.2}×** \
         — {}. The generator's cost sits in both sides of each ratio and pulls it towards 1; the \
         receive path alone: {recv_vs_limit:.2}× XDP_DROP, {recv_vs_nft:.1}× nftables.",
        if vs_limit >= 0.8 { "met" } else { "not met" },
        best_nft.receiver.key(),
        if vs_nft >= 5.0 { "met" } else { "not met" },
    );
    let json = serde_json::json!({
        "policy": {"site": "policies/examples/rhv.toml", "roles": ["rhv.host"], "rules": hp.rules.len(), "nft_accept_rules": nft_chain_len},
        "generator": {"method": "BPF_PROG_TEST_RUN live frames, XDP_TX on the sender veth", "batch": GEN_BATCH, "frame_bytes": 60, "cpu": CPU, "own_cpu_ns_per_frame": round3(gen_ns)},
        "receiver": {"xdp_mode": "native", "gro": true, "napi": "softirq on the generator's CPU"},
        "cpu_method": "schedstat run time of the generator thread + ksoftirqd of its CPU, per packet received",
        "rounds": ROUNDS,
        "interval_s": INTERVAL.as_secs_f64(),
        "results": results.iter().map(|x| serde_json::json!({
            "traffic": x.traffic,
            "receiver": x.receiver.key(),
            "cpu_ns_per_packet": round3(x.s.cpu_ns),
            "cpu_ns_per_packet_rounds": x.cpu_rounds.iter().map(|v| round3(*v)).collect::<Vec<_>>(),
            "mpps_per_cpu": round3(per_cpu(x.s.cpu_ns)),
            "receive_ns_per_packet": if x.receiver == Receiver::Refused { serde_json::Value::Null } else { round3(x.s.cpu_ns - gen_ns).into() },
            "wall_rx_pps": x.s.pps.round(),
            "offered_pps": x.s.offered.round(),
            "lost_pps": x.s.lost.round(),
            "cpu_share": round3(x.s.share),
            "counted_fraction": if x.s.counted.is_nan() { serde_json::Value::Null } else { round3(x.s.counted).into() },
        })).collect::<Vec<_>>(),
        "targets": {
            "drop_ge_0_8x_xdp_drop": {"ratio": round3(vs_limit), "receive_path_ratio": round3(recv_vs_limit), "met": vs_limit >= 0.8},
            "drop_ge_5x_nftables": {"against": best_nft.receiver.key(), "ratio": round3(vs_nft), "receive_path_ratio": round3(recv_vs_nft), "met": vs_nft >= 5.0},
        }
    });
    Report {
        name: "throughput",
        title: "portguard throughput on a veth pair against XDP_DROP and nftables".to_owned(),
        md,
        json,
    }
}
