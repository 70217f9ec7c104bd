//! `bench throughput`: packets per second a veth receiver handles with portguard attached, with
//! the `XDP_DROP` / `XDP_PASS` limits, with the peer XDP filters a user would pick instead
//! (xdp-tools' `xdp-filter`, and `xdp-bench drop` as a second `XDP_DROP`), and with nftables
//! doing the same job, on the same traffic: one flow, thousands of sources, and an ACK flood.
//!
//! Topology: two namespaces of the benchmark's own joined by a veth pair (198.18.200.0/24).
//! Traffic is generated in the kernel: a tiny `XDP_TX` program is run with `BPF_PROG_TEST_RUN`
//! in live-frames mode (kernel 5.18) with the sender veth as ingress, so every frame is
//! transmitted out of it into the receiver veth's queue, where the program under test (or the
//! stack and nftables) handles it. No socket, no syscall per packet. For the many-source traffic
//! the generator gives each frame a random source among 4096 (`sys::load_xdp_tx_spray`).
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

mod nft;
mod peers;
mod rig;

use std::{fmt::Write as _, path::Path, sync::Arc, time::Duration};

use integration_tests::{
    PinDir,
    frames::{Frame, L4},
    net::Pair,
};
use portguard::ebpf::{DROP_PROGRAM, Datapath, NOOP_PROGRAM, PROGRAM};
use portguard_common::reason::Reason;

use self::{
    nft::nft_rules,
    peers::{XdpFilter, allowed_ports},
    rig::{Peers, Rig, Sample, ksoftirqd},
};
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
/// The other CPU: where the peers' user-space parts (xdp-bench's statistics) run.
const OTHER_CPU: usize = 1;
/// A host of another role (a hypervisor, RHV-H12 opens Geneve udp/6081 to it).
const HYPERVISOR: [u8; 4] = [198, 18, 2, 5];
/// The many-source traffic's sources: 198.18.0.0/20 (the spray sets the low 12 bits). The RHV
/// example site's roles are in it (admin network .0, Manager .1.10, hypervisors .2, portal
/// clients .4, BMCs .6): a quarter of the sources have a role, the rest none.
const SPRAY_BASE: [u8; 4] = [198, 18, 0, 0];
/// A port nobody's connection uses: the ACK flood's destination.
const ACK_PORT: u16 = 40_000;

/// What handles the traffic on the receiver veth.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Receiver {
    /// portguard with the RHV host policy, native XDP.
    Portguard,
    /// The same with auditing off (the site default audits denials, rate-limited).
    PortguardQuiet,
    /// xdp-tools' xdp-filter, native, deny by default, the policy's destination ports allowed.
    XdpFilter,
    /// `portguard_drop`: `XDP_DROP`, the limit for dropped traffic.
    XdpDrop,
    /// xdp-tools' `xdp-bench drop`: another `XDP_DROP`, with its per-CPU statistics.
    XdpBenchDrop,
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
            Receiver::XdpFilter => "xdp_filter",
            Receiver::XdpDrop => "xdp_drop",
            Receiver::XdpBenchDrop => "xdp_bench_drop",
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
            Receiver::XdpFilter => {
                "xdp-filter 1.3.1 (native, deny by default, the policy's destination ports \
                 allowed: from any source, it cannot match source and port)"
            }
            Receiver::XdpDrop => "`portguard_drop` (XDP_DROP): the limit",
            Receiver::XdpBenchDrop => {
                "`xdp-bench drop` (xdp-tools 1.3.1, XDP_DROP with statistics)"
            }
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

/// Which generator program sends a traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Generator {
    /// The frame as it is: one flow.
    OneFlow,
    /// A random source among 4096 per frame (source port and IP id moved to match).
    Spray,
}

/// One kind of traffic and the receivers it is measured with.
struct Traffic {
    key: &'static str,
    label: &'static str,
    frame: Vec<u8>,
    generator: Generator,
    /// The baseline its ratios are taken against.
    limit: Receiver,
    /// Receivers measured with it.
    receivers: Vec<Receiver>,
    /// portguard's counters that together must count every packet the receiver handled.
    counted_by: Vec<Counted>,
    /// What the reader should know about the peers on this traffic.
    note: &'static str,
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

/// The template of the many-source traffic: a TCP segment from 198.18.0.0 with the
/// identification and source port the spray generator counts back from, checksums finished.
fn spray_frame(dst: [u8; 4], dport: u16, flags: u8, mac: [u8; 6]) -> Vec<u8> {
    let mut f = Frame::v4(
        SPRAY_BASE,
        dst,
        L4::Tcp {
            sport: sys::SPRAY_TEMPLATE_SPORT,
            dport,
            flags,
        },
    )
    .build();
    f[18..20].copy_from_slice(&sys::SPRAY_TEMPLATE_ID.to_be_bytes());
    finish(f, mac)
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

/// The traffic kinds and who is measured with each.
#[expect(
    clippy::too_many_lines,
    reason = "one table of data: each traffic, its frame and its receivers"
)]
fn traffic_kinds(
    hp: &portguard::compile::HostPolicy,
    a4: [u8; 4],
    b4: [u8; 4],
    mac: [u8; 6],
    peers: bool,
    xdp_bench: bool,
) -> Vec<Traffic> {
    let with_peers = |mut v: Vec<Receiver>, which: &[Receiver]| {
        if peers {
            v.extend(
                which
                    .iter()
                    .filter(|r| xdp_bench || **r != Receiver::XdpBenchDrop),
            );
        }
        v
    };
    let syn = Frame::v4(
        a4,
        b4,
        L4::Tcp {
            sport: 40000,
            dport: 23,
            flags: 0x02,
        },
    );
    let geneve = Frame::v4(
        HYPERVISOR,
        b4,
        L4::Udp {
            sport: 40000,
            dport: 6081,
        },
    );
    let vdsm = slot_of(hp, "RHV-H10");
    vec![
        Traffic {
            key: "drop",
            label: "out-of-matrix traffic (TCP SYN to port 23 from 198.18.200.1, a source with \
                    no role): dropped",
            frame: finish(syn.build(), mac),
            generator: Generator::OneFlow,
            limit: Receiver::XdpDrop,
            receivers: with_peers(
                vec![
                    Receiver::Portguard,
                    Receiver::PortguardQuiet,
                    Receiver::XdpDrop,
                    Receiver::NftIngress,
                    Receiver::NftInput,
                    Receiver::NftInputCt,
                    Receiver::Refused,
                ],
                &[Receiver::XdpFilter, Receiver::XdpBenchDrop],
            ),
            counted_by: vec![Counted::Reason(Reason::PortNotOpen)],
            note: "xdp-filter drops it too (port 23 is not in its list).",
        },
        Traffic {
            key: "drop_many",
            label: "the same from 4096 sources (198.18.0.0/20, a quarter of them in a role): \
                    dropped",
            frame: spray_frame(b4, 23, 0x02, mac),
            generator: Generator::Spray,
            limit: Receiver::XdpDrop,
            receivers: with_peers(
                vec![Receiver::Portguard, Receiver::XdpDrop, Receiver::Refused],
                &[Receiver::XdpFilter, Receiver::XdpBenchDrop],
            ),
            counted_by: vec![Counted::Reason(Reason::PortNotOpen)],
            note: "A closed port is refused whoever sends: portguard does not look the source \
                   up.",
        },
        Traffic {
            key: "role_many",
            label: "TCP SYN to port 54321 (vdsm, RHV-H10: the Manager and the hypervisors) \
                    from the 4096 sources: 1 in 16 allowed, the rest dropped by source",
            frame: spray_frame(b4, 54321, 0x02, mac),
            generator: Generator::Spray,
            limit: Receiver::XdpDrop,
            receivers: with_peers(
                vec![Receiver::Portguard, Receiver::XdpDrop],
                &[Receiver::XdpFilter],
            ),
            counted_by: vec![
                Counted::Reason(Reason::NoSourceRole),
                Counted::Reason(Reason::SourceNotAllowed),
                Counted::Rule(vdsm),
            ],
            note: "The source table on every packet, thousands of sources. xdp-filter cannot \
                   tell the Manager from anyone else on an open port: it passes every one of \
                   these SYNs to the stack (which answers each with a RST), so its row is the \
                   cost of not enforcing the matrix, not of enforcing it.",
        },
        Traffic {
            key: "ack_flood",
            label: "ACK flood: TCP ACKs to port 40000 from the 4096 sources, no connection: \
                    dropped after a socket lookup",
            frame: spray_frame(b4, ACK_PORT, 0x10, mac),
            generator: Generator::Spray,
            limit: Receiver::XdpDrop,
            receivers: with_peers(
                vec![
                    Receiver::Portguard,
                    Receiver::PortguardQuiet,
                    Receiver::XdpDrop,
                    Receiver::NftInputCt,
                ],
                &[Receiver::XdpFilter],
            ),
            counted_by: vec![Counted::Reason(Reason::PortNotOpen)],
            note: "Every segment could be part of a connection of the host's: portguard asks \
                   the kernel's socket table (`bpf_skc_lookup_tcp`), which misses. xdp-filter \
                   drops them by port alone, and with them the answers to every connection the \
                   host opens (they come back to ephemeral ports it would have to open whole).",
        },
        Traffic {
            key: "pass",
            label: "in-matrix traffic (UDP to port 6081, Geneve, RHV-H12, from hypervisor \
                    198.18.2.5): passed to the stack",
            frame: finish(geneve.build(), mac),
            generator: Generator::OneFlow,
            limit: Receiver::XdpPass,
            receivers: vec![
                Receiver::Portguard,
                Receiver::XdpPass,
                Receiver::NftIngress,
                Receiver::NftInput,
                Receiver::NftInputCt,
            ],
            counted_by: vec![Counted::Rule(slot_of(hp, "RHV-H12"))],
            note: "",
        },
    ]
}

#[expect(
    clippy::too_many_lines,
    reason = "one linear script: set up, measure, tabulate"
)]
pub(crate) fn run(root: &Path) -> Report {
    let hp = rhv_policy(root);
    let pair = Pair::new(SUBNET, 1500);
    setup_receiver(&pair);
    let mac = pair.b.mac(&pair.b_if);
    let std::net::IpAddr::V4(a4) = pair.a4 else {
        unreachable!("Pair gives IPv4 addresses")
    };
    let std::net::IpAddr::V4(b4) = pair.b4 else {
        unreachable!("Pair gives IPv4 addresses")
    };
    let ports = allowed_ports(&hp.rules);
    let xdp_filter = if peers::available() {
        XdpFilter::new(&pair.b.name, &pair.b_if, ports.clone())
    } else {
        None
    };
    let xdp_bench = if xdp_filter.is_some() {
        peers::xdp_bench_check(&pair.b.name, &pair.b_if, OTHER_CPU)
    } else {
        Ok(())
    };
    let mut peers_note = match (&xdp_filter, peers::available()) {
        (Some(_), _) => String::new(),
        (None, false) => "xdp-tools is not installed (`cargo xtask setup` installs it): the \
                          peer rows are missing.\n\n"
            .to_owned(),
        (None, true) => "/sys/fs/bpf/xdp-filter exists (another xdp-filter on this machine): \
                         the benchmark leaves it alone, and the peer rows are missing.\n\n"
            .to_owned(),
    };
    if let Err(why) = &xdp_bench {
        let _ = write!(
            peers_note,
            "`xdp-bench drop` (xdp-tools {}) cannot run on this kernel, so its row is missing: \
             {why}\n\n",
            peers::VERSION
        );
    }
    let traffic = traffic_kinds(
        &hp,
        a4.octets(),
        b4.octets(),
        mac,
        xdp_filter.is_some(),
        xdp_bench.is_ok(),
    );
    let labels: Vec<(&'static str, &'static str, &'static str)> =
        traffic.iter().map(|t| (t.key, t.label, t.note)).collect();
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
        one_flow: Arc::new(sys::load_xdp_tx().expect("load the XDP_TX generator program")),
        spray: Arc::new(sys::load_xdp_tx_spray().expect("load the spraying generator program")),
        nft_rules: nft_rules(&hp.rules),
    };
    let nft_chain_len = rig.nft_rules.len();
    let tables = hp.tables.clone();
    let (b4ip, b6ip) = (pair.b4, pair.b6);
    let mut peers = Peers {
        xdp_filter,
        other_cpu: OTHER_CPU,
    };
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
                    let s = rig.measure(&mut dps, &mut peers, r, t);
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
        let order = |t: &str| {
            traffic
                .iter()
                .position(|x| x.key == t)
                .unwrap_or(usize::MAX)
        };
        out.sort_by_key(|r| (order(r.traffic), r.receiver));
        drop(peers);
        drop(dps);
        drop(pins);
        out
    });
    drop(pair);

    let find = |t: &str, r: Receiver| results.iter().find(|x| x.traffic == t && x.receiver == r);
    let get = |t: &str, r: Receiver| find(t, r).expect("measured");
    // The generator's own cost, per generator program.
    let gen_one = get("drop", Receiver::Refused).s.cpu_ns;
    let gen_spray = get("drop_many", Receiver::Refused).s.cpu_ns;
    let gen_of = |t: &str| {
        if matches!(t, "drop_many" | "role_many" | "ack_flood") {
            gen_spray
        } else {
            gen_one
        }
    };
    let mut md = format!(
        "Policy: `policies/examples/rhv.toml` for role `rhv.host` ({} rules; nftables: the same \
         rules as {nft_chain_len} `accept` rules in one `inet` chain, then `counter drop`; \
         stateless but for the `ct` variant; xdp-filter: deny by default, the {} TCP and UDP \
         destination ports of those rules allowed, from any source). Receiver: veth in a \
         namespace of the benchmark's own, native XDP, GRO on. Generator: BPF_PROG_TEST_RUN in \
         live-frames mode, an `XDP_TX` program on the peer veth (batch {GEN_BATCH}), 60-byte \
         frames: one flow, or a random source among 4096 per frame; generator and receiver \
         share CPU {CPU} (the receive path runs in softirq after each batch, as a NIC's does). \
         Each figure: median of {ROUNDS} rounds of {:.0} s after {:.1} s of warm-up, \
         configurations interleaved.\n\n\
         *CPU ns/pkt*: CPU time of the generator thread and CPU {CPU}'s ksoftirqd per packet \
         received — generating and receiving it. *Mpps/CPU* = 1000 / that: the rate one CPU \
         sustains; *× limit*: against XDP_DROP (dropped traffic) or XDP_PASS (passed traffic), \
         from those CPU times. *receive ns* = CPU ns/pkt − the generator's own cost (the \
         \"generator alone\" rows: {gen_one:.1} ns for one flow, {gen_spray:.1} ns with random \
         sources): the receive path's cost. *wall Mpps*: packets received per second of \
         wall-clock time, and *CPU share*: CPU time / wall time of the generator — below 100% \
         while the machine's other users hold CPU {CPU}: these two are not compared. *lost*: \
         frames the receiver's queue refused; *counted*: packets portguard (or nftables' final \
         drop rule) counted / packets received.\n\n{peers_note}",
        hp.rules.len(),
        ports.len(),
        INTERVAL.as_secs_f64(),
        WARMUP.as_secs_f64()
    );
    for (t, label, note) in &labels {
        let _ = write!(md, "## {label}\n\n");
        let limit = get(
            t,
            if *t == "pass" {
                Receiver::XdpPass
            } else {
                Receiver::XdpDrop
            },
        );
        let gen_ns = gen_of(t);
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
        if !note.is_empty() {
            let _ = write!(md, "\n{note}\n");
        }
        md.push('\n');
    }
    let pg = get("drop", Receiver::Portguard);
    let lim = get("drop", Receiver::XdpDrop);
    let best_nft = [
        Receiver::NftIngress,
        Receiver::NftInput,
        Receiver::NftInputCt,
    ]
    .iter()
    .map(|r| get("drop", *r))
    .min_by(|a, b| a.s.cpu_ns.total_cmp(&b.s.cpu_ns))
    .expect("nft measured");
    let vs_limit = lim.s.cpu_ns / pg.s.cpu_ns;
    let vs_nft = best_nft.s.cpu_ns / pg.s.cpu_ns;
    let recv = |x: &Measured| x.s.cpu_ns - gen_one;
    let recv_vs_limit = recv(lim) / recv(pg);
    let recv_vs_nft = recv(best_nft) / recv(pg);
    // Against xdp-filter on the traffic both drop: one flow, and many sources.
    let vs_filter: Vec<(&str, f64)> = ["drop", "drop_many"]
        .iter()
        .filter_map(|t| {
            let f = find(t, Receiver::XdpFilter)?;
            Some((*t, f.s.cpu_ns / get(t, Receiver::Portguard).s.cpu_ns))
        })
        .collect();
    let filter_met = !vs_filter.is_empty() && vs_filter.iter().all(|(_, r)| *r >= 1.0);
    let _ = writeln!(
        md,
        "Targets, dropped traffic (rates per CPU, generator included): ≥ 0.7× XDP_DROP: \
         **{vs_limit:.2}×** — {}; ≥ 5× nftables (its fastest variant here, {}): **{vs_nft:.2}×** \
         — {}; a drop no dearer than xdp-filter's: {} — {}. The generator's cost sits in both \
         sides of each ratio and pulls it towards 1; the receive path alone: {recv_vs_limit:.2}× \
         XDP_DROP, {recv_vs_nft:.1}× nftables.",
        if vs_limit >= 0.7 { "met" } else { "not met" },
        best_nft.receiver.key(),
        if vs_nft >= 5.0 { "met" } else { "not met" },
        if vs_filter.is_empty() {
            "not measured".to_owned()
        } else {
            vs_filter
                .iter()
                .map(|(t, r)| format!("**{r:.2}×** xdp-filter's rate ({t})"))
                .collect::<Vec<_>>()
                .join(", ")
        },
        if filter_met { "met" } else { "not met" },
    );
    let json = serde_json::json!({
        "policy": {"site": "policies/examples/rhv.toml", "roles": ["rhv.host"], "rules": hp.rules.len(), "nft_accept_rules": nft_chain_len, "xdp_filter_ports": ports.len()},
        "generator": {"method": "BPF_PROG_TEST_RUN live frames, XDP_TX on the sender veth (one flow, or a random source among 4096)", "batch": GEN_BATCH, "frame_bytes": 60, "cpu": CPU, "own_cpu_ns_per_frame": round3(gen_one), "own_cpu_ns_per_frame_spray": round3(gen_spray)},
        "receiver": {"xdp_mode": "native", "gro": true, "napi": "softirq on the generator's CPU"},
        "peers": {"xdp_tools": "1.3.1 (Debian)", "measured": find("drop", Receiver::XdpFilter).is_some()},
        "cpu_method": "schedstat run time of the generator thread + ksoftirqd of its CPU, per packet received",
        "rounds": ROUNDS,
        "interval_s": INTERVAL.as_secs_f64(),
        "results": results.iter().map(|x| serde_json::json!({
            "traffic": x.traffic,
            "receiver": x.receiver.key(),
            "cpu_ns_per_packet": round3(x.s.cpu_ns),
            "cpu_ns_per_packet_rounds": x.cpu_rounds.iter().map(|v| round3(*v)).collect::<Vec<_>>(),
            "mpps_per_cpu": round3(per_cpu(x.s.cpu_ns)),
            "receive_ns_per_packet": if x.receiver == Receiver::Refused { serde_json::Value::Null } else { round3(x.s.cpu_ns - gen_of(x.traffic)).into() },
            "wall_rx_pps": x.s.pps.round(),
            "offered_pps": x.s.offered.round(),
            "lost_pps": x.s.lost.round(),
            "cpu_share": round3(x.s.share),
            "counted_fraction": if x.s.counted.is_nan() { serde_json::Value::Null } else { round3(x.s.counted).into() },
        })).collect::<Vec<_>>(),
        "targets": {
            "drop_ge_0_7x_xdp_drop": {"ratio": round3(vs_limit), "receive_path_ratio": round3(recv_vs_limit), "met": vs_limit >= 0.7},
            "drop_ge_5x_nftables": {"against": best_nft.receiver.key(), "ratio": round3(vs_nft), "receive_path_ratio": round3(recv_vs_nft), "met": vs_nft >= 5.0},
            "drop_no_dearer_than_xdp_filter": {"ratios": vs_filter.iter().map(|(t, r)| serde_json::json!({"traffic": t, "ratio": round3(*r)})).collect::<Vec<_>>(), "met": filter_met},
        }
    });
    Report {
        name: "throughput",
        title: "portguard throughput on a veth pair against XDP_DROP, xdp-filter and nftables"
            .to_owned(),
        md,
        json,
    }
}
