//! Tools nobody here wrote, against the real daemon (issue #17): nmap scans of every TCP port
//! from each role's machine and stealth scans from an outsider, packets crafted with scapy (IPv4
//! options, IPv6 extension-header chains, overlapping and tiny fragments), and hping3 floods
//! while an allowed flow keeps connecting.
//!
//! Each test builds a LAN in namespaces ([`lan`]): the protected RHV host running
//! `portguard run` on its interface, and a machine for each role it needs (the RHV Manager,
//! another RHV host, an outsider in no role) behind a bridge. What the host must open comes from
//! `portguard compile --json` of the same site file, never from a list in the test. Listeners sit
//! on every port a rule opens and on ports none opens, so a port the datapath lets through is
//! seen: the kernel answers it.
//!
//! Every test also shows what the host does without portguard, or relies on the kernel's
//! documented answer to the same packet, so a pass means the datapath stopped it; and the
//! counters of `portguard status --json` tie the drops to the datapath. No timing is asserted:
//! every wait is bounded, and all a slow machine can make fail is a connection attempt (10 s)
//! or an nmap scan (120 s).

mod flood;
mod lan;
mod nmap;
mod scapy;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
    process::Output,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use integration_tests::{
    Scratch,
    daemon::{Daemon, GENEVE, VDSM},
};
use serde_json::Value;

use self::{
    flood::{Echo, Prober, hping3},
    lan::{Bounded, Compiled, Lan, MANAGER, OTHER_HOST, OUTSIDER, tcp_listeners},
    scapy::{Listener, Ports},
};

/// TCP ports no rule of the test site opens, each with a listener on the host: the lowest and
/// the highest, two well-known ones, one next to the console range, one in the ephemeral range.
/// A scan that sees one of them answer found a hole.
const DECOYS: [u16; 6] = [1, 80, 6924, 8080, 40000, 65535];

/// A UDP port no rule opens (a listener waits on it in the scapy tests).
const CLOSED_UDP: u16 = 5999;
/// A TCP port the site opens only to the portal clients (RHV-H5, 5900-6923): closed to the
/// other RHV host that sends the crafted packets.
const CONSOLE: u16 = 5900;

/// The counters of `portguard status --json`: packets per reason (with its verdict) and per
/// rule.
#[derive(Debug)]
struct Counters {
    reasons: BTreeMap<String, (String, u64)>,
    rules: BTreeMap<String, u64>,
}

impl Counters {
    fn read(d: &Daemon) -> Self {
        let s = d.status();
        let reasons = s["reasons"]
            .as_array()
            .expect("reasons")
            .iter()
            .map(|r| {
                (
                    r["reason"].as_str().expect("reason").to_owned(),
                    (
                        r["verdict"].as_str().expect("verdict").to_owned(),
                        r["packets"].as_u64().expect("packets"),
                    ),
                )
            })
            .collect();
        let rules = s["rules"]
            .as_array()
            .expect("rules")
            .iter()
            .map(|r: &Value| {
                (
                    r["id"].as_str().expect("id").to_owned(),
                    r["packets"].as_u64().expect("packets"),
                )
            })
            .collect();
        Counters { reasons, rules }
    }

    fn reason(&self, name: &str) -> u64 {
        self.reasons
            .get(name)
            .unwrap_or_else(|| panic!("no reason {name} in status: {:?}", self.reasons))
            .1
    }

    /// Packets dropped, for whatever reason.
    fn dropped(&self) -> u64 {
        self.reasons
            .values()
            .filter(|(verdict, _)| verdict == "drop")
            .map(|(_, n)| n)
            .sum()
    }

    /// Packets allowed by a rule, all rules together.
    fn allowed(&self) -> u64 {
        self.rules.values().sum()
    }
}

/// The LAN, its site file and what compile opens, with listeners on every TCP port a rule opens
/// and on the decoys (but the ones a test serves itself), and (with `daemon`) `portguard run` on
/// the host.
struct Setup {
    lan: Lan,
    compiled: Compiled,
    site_file: std::path::PathBuf,
    listening: BTreeSet<u16>,
    _listeners: Vec<std::net::TcpListener>,
    _dir: Scratch,
}

impl Setup {
    fn new(subnet: u8, served: &[u16]) -> Self {
        let lan = Lan::new(subnet);
        let dir = Scratch::new("pg-tools-");
        let site = lan.site(&dir.0);
        let compiled = Compiled::new(&site);
        let mut listening = compiled.tcp_ports();
        for p in DECOYS {
            assert!(listening.insert(p), "decoy tcp/{p} is opened by a rule");
        }
        let passive = listening
            .iter()
            .filter(|p| !served.contains(p))
            .copied()
            .collect();
        let listeners = tcp_listeners(&lan.host.ns, &passive);
        Setup {
            lan,
            compiled,
            site_file: site,
            listening,
            _listeners: listeners,
            _dir: dir,
        }
    }

    fn daemon(&self) -> Daemon {
        Daemon::start(&self.lan.host.ns, &self.site_file, &[])
    }
}

/// `f` for both of the host's addresses at once (two threads); the results, IPv4 first. A
/// panic in either is the test's panic, with its own message.
fn both_families<T: Send>(setup: &Setup, f: impl Fn(IpAddr) -> T + Sync) -> [(IpAddr, T); 2] {
    let host = &setup.lan.host;
    thread::scope(|s| {
        let f = &f;
        let v4 = s.spawn(move || f(host.v4));
        let v6 = s.spawn(move || f(host.v6));
        let join = |h: thread::ScopedJoinHandle<'_, T>| {
            h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))
        };
        [(host.v4, join(v4)), (host.v6, join(v6))]
    })
}

// ---------------------------------------------------------------------------------------------
// nmap

/// A SYN scan of all 65535 TCP ports from the Manager, another RHV host and an outsider, over
/// IPv4 and IPv6, finds open exactly the ports `compile --json` opens to the scanner's address
/// (every one has a listener), and gets no answer at all from any other port: not from the
/// ports opened to other roles, not from the decoys no rule opens (listeners wait on all of
/// them, so a SYN let through would be answered).
#[test]
fn nmap_syn_scans_from_each_role_find_exactly_what_compile_opens() {
    let setup = Setup::new(70, &[]);
    let lan = &setup.lan;
    let scanners = [
        ("the RHV Manager", lan.machine(MANAGER)),
        ("another RHV host", lan.machine(OTHER_HOST)),
        ("an outsider", lan.machine(OUTSIDER)),
    ];
    let d = setup.daemon();
    let before = Counters::read(&d);
    for (who, m) in &scanners {
        for (target, scan) in both_families(&setup, |t| nmap::scan(m, t, "-sS", "1-65535")) {
            let src = m.addr_like(target);
            let expected = setup.compiled.tcp_open_to(src);
            if *who != "an outsider" {
                assert!(
                    !expected.is_empty(),
                    "compile opens nothing to {who} ({src}): the site is not what this test needs"
                );
            }
            let open = scan.in_state("open");
            assert_eq!(
                open, expected,
                "{}: {who} must find open exactly what compile opens to {src}",
                scan.what
            );
            let mut answered = scan.answered();
            answered.retain(|p, _| !expected.contains(p));
            assert!(
                answered.is_empty(),
                "{}: the host answered {who} on ports not open to {src}: {answered:?}",
                scan.what
            );
        }
    }
    let after = Counters::read(&d);
    // Every port no rule opens was probed and dropped by the datapath at least once (six scans,
    // up to three probes each), and the ports opened to other roles were refused to these
    // sources by the datapath too.
    let unopened = 65535 - setup.compiled.tcp_ports().len() as u64;
    let not_open = after.reason("port-not-open") - before.reason("port-not-open");
    assert!(
        not_open >= unopened,
        "port-not-open moved by {not_open}, fewer than the {unopened} ports no rule opens"
    );
    let refused = (after.reason("source-not-allowed") + after.reason("no-source-role"))
        - (before.reason("source-not-allowed") + before.reason("no-source-role"));
    let others = setup
        .compiled
        .tcp_ports()
        .difference(&setup.compiled.tcp_open_to(scanners[0].1.v4))
        .count() as u64;
    assert!(
        refused >= others,
        "ports opened to other roles: source-not-allowed + no-source-role moved by {refused}, \
         fewer than the {others} such ports the Manager probed"
    );
}

/// The stealth scans nmap offers: ACK, FIN, NULL and Xmas segments from an outsider, over IPv4
/// and IPv6, to the well-known ports, every port a rule opens and the decoys.
///
/// Without portguard the host answers them: a RST to an ACK on any port (listener or not), and
/// to a FIN, NULL or Xmas segment on a port without a listener (RFC 9293 3.10.7.1; a listener
/// ignores those). The control scan before the daemon starts shows it. With portguard, none of
/// these ports is open to the outsider, so no probe may get an answer of any kind: every port's
/// reason must be `no-response` (see [`nmap`]). The ACKs to ports with a listener go through the
/// datapath's socket lookup, which must not take a listener for a connection.
#[test]
fn nmap_ack_fin_null_xmas_scans_from_an_outsider_get_no_answer() {
    let setup = Setup::new(71, &[]);
    let outsider = setup.lan.machine(OUTSIDER);
    let kinds = ["-sA", "-sF", "-sN", "-sX"];

    // Without portguard: port 2 has no listener, 80 and 54321 have one.
    let control = "2,80,54321";
    for kind in kinds {
        let scan = nmap::scan(&outsider, setup.lan.host.v4, kind, control);
        let answered: BTreeSet<u16> = scan.answered().into_keys().collect();
        let want: BTreeSet<u16> = if kind == "-sA" {
            [2, 80, VDSM].into()
        } else {
            [2].into()
        };
        assert!(
            want.is_subset(&answered),
            "{}: without portguard the host must answer {want:?}: {:?}",
            scan.what,
            scan.ports
        );
    }

    let d = setup.daemon();
    let before = Counters::read(&d);
    let mut ports: BTreeSet<u16> = (1..=1024).collect();
    ports.extend(&setup.listening);
    let spec = ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",");
    for kind in kinds {
        for (target, scan) in both_families(&setup, |t| nmap::scan(&outsider, t, kind, &spec)) {
            let open = setup.compiled.tcp_open_to(outsider.addr_like(target));
            let mut answered = scan.answered();
            answered.retain(|p, _| !open.contains(p));
            assert!(
                answered.is_empty(),
                "{}: the host answered the outsider: {answered:?}",
                scan.what
            );
        }
    }
    let after = Counters::read(&d);
    let dropped = after.dropped() - before.dropped();
    let probes = (ports.len() * kinds.len() * 2) as u64;
    assert!(
        dropped >= probes,
        "{probes} stealth probes at least (one per port, scan and family), but the datapath \
         dropped {dropped} packets"
    );
}

// ---------------------------------------------------------------------------------------------
// scapy

/// Send a scapy suite from another RHV host, once before portguard runs (what the kernel alone
/// does with each case) and once with it, and check each case:
///
/// - nothing reaches a closed port: no datagram at the listener on udp/5999, no answer from the
///   host about a closed port (no SYN-ACK from tcp/5900, no ICMP error quoting a packet to one),
///   and no answer naming no port to a case aimed at one (an ICMP error about its headers). A
///   case aimed at a closed port whose rewritten first fragment went to the allowed port may
///   deliver that datagram there: it is the allowed one;
/// - cases beyond the parser's depth reach nothing, and count as `too-deep`;
/// - a case aimed at an allowed port that the kernel alone took (delivered or answered) still
///   arrives: portguard must not break what it allows;
/// - each of `reference` reached its port without portguard (the crafting is right, and the
///   closed ports were live).
fn crafted(suite: &str, subnet: u8, reference: &[&str]) {
    let setup = Setup::new(subnet, &[]);
    let lan = &setup.lan;
    let sender = lan.machine(OTHER_HOST);
    let host = &lan.host;
    // In the host's namespace only: accept segment routing headers (the kernel drops them
    // unless enabled), so a type 4 routing header with nothing left to route is delivered like
    // types 0 and 2; and answer every error without rate limits, so the run without portguard
    // shows every answer the kernel gives.
    host.ns.sysctl("net.ipv6.conf.all.seg6_enabled", "1");
    host.ns
        .sysctl(&format!("net.ipv6.conf.{}.seg6_enabled", host.ifname), "1");
    host.ns.sysctl("net.ipv4.icmp_ratelimit", "0");
    host.ns.sysctl("net.ipv6.icmp.ratelimit", "0");
    let ports = Ports {
        allowed_udp: GENEVE,
        closed_udp: CLOSED_UDP,
        allowed_tcp: VDSM,
        closed_tcp: CONSOLE,
    };
    for src in [sender.v4, sender.v6] {
        let (udp, tcp) = (
            setup.compiled.udp_open_to(src),
            setup.compiled.tcp_open_to(src),
        );
        assert!(
            udp.contains(&ports.allowed_udp) && !udp.contains(&ports.closed_udp),
            "{src}: {udp:?}"
        );
        assert!(
            tcp.contains(&ports.allowed_tcp) && !tcp.contains(&ports.closed_tcp),
            "{src}: {tcp:?}"
        );
    }
    assert!(setup.compiled.tcp_ports().contains(&CONSOLE));
    let listener = Listener::start(&host.ns, &[ports.allowed_udp, ports.closed_udp]);

    let control = scapy::send(suite, &sender, host, ports, 1, &listener);
    let d = setup.daemon();
    let before = Counters::read(&d);
    let guarded = scapy::send(suite, &sender, host, ports, 2, &listener);
    let after = Counters::read(&d);
    let table = guarded.table(Some(("without", &control)), "with portguard");
    println!("{suite}:\n{table}");
    let mut problems = case_problems(&control, &guarded, reference);
    problems.extend(counter_problems(&guarded, &before, &after));
    assert!(
        problems.is_empty(),
        "{suite}:\n{}\n\nper case (what reached the host's stack):\n{table}\nreasons before \
         {:?}\nafter {:?}",
        problems.join("\n"),
        before.reasons,
        after.reasons
    );
}

/// What went wrong case by case (see [`crafted`]).
fn case_problems(control: &scapy::Run, guarded: &scapy::Run, reference: &[&str]) -> Vec<String> {
    let mut problems = Vec::new();
    for id in reference {
        let case = control.cases.iter().find(|c| c.id == *id);
        let case = case.unwrap_or_else(|| panic!("no case {id}"));
        if !control.arrived(case) {
            problems.push(format!(
                "{id}: without portguard it must reach tcp|udp/{}",
                case.dport
            ));
        }
    }
    let closed_ports = [CONSOLE, CLOSED_UDP];
    for c in &guarded.cases {
        for a in guarded.answers.get(&c.id).into_iter().flatten() {
            let hole = match a.port {
                Some(p) => closed_ports.contains(&p),
                None => c.target == "closed",
            };
            if hole {
                problems.push(format!(
                    "HOLE {} (aimed at {}): the host answered: {}",
                    c.id, c.dport, a.summary
                ));
            }
        }
        let reached = guarded.reached(&c.id);
        if c.expect == "too-deep" && !reached.is_empty() {
            problems.push(format!(
                "HOLE {}: beyond the parser's depth, reached the host: {reached:?}",
                c.id
            ));
        }
        if c.target == "allowed"
            && c.expect == "judged"
            && control.arrived(c)
            && !guarded.arrived(c)
        {
            problems.push(format!(
                "BROKEN {}: allowed tcp|udp/{}; the kernel alone took it ({:?}), with portguard \
                 it never arrived",
                c.id,
                c.dport,
                control.reached(&c.id)
            ));
        }
    }
    for d in guarded.deliveries.iter().filter(|d| d.port == CLOSED_UDP) {
        problems.push(format!("HOLE: udp/{CLOSED_UDP} received {d:?}"));
    }
    for (port, payload) in &guarded.strays {
        problems.push(format!("stray datagram on udp/{port}: {payload:?}"));
    }
    problems
}

/// The counters of the run with portguard: every too-deep frame counted as such, at least one
/// drop per case aimed at a closed port, and a rule's count for every case that arrived.
fn counter_problems(guarded: &scapy::Run, before: &Counters, after: &Counters) -> Vec<String> {
    let mut problems = Vec::new();
    let too_deep: u64 = guarded
        .cases
        .iter()
        .filter(|c| c.expect == "too-deep")
        .map(|c| c.frames)
        .sum();
    let counted = after.reason("too-deep") - before.reason("too-deep");
    if counted < too_deep {
        problems.push(format!(
            "too-deep counted {counted}, {too_deep} frames sent"
        ));
    }
    let closed = guarded
        .cases
        .iter()
        .filter(|c| c.target == "closed")
        .count() as u64;
    let dropped = after.dropped() - before.dropped();
    if dropped < closed {
        problems.push(format!(
            "{closed} cases aimed at closed ports, {dropped} packets dropped"
        ));
    }
    let arrived = guarded.cases.iter().filter(|c| guarded.arrived(c)).count() as u64;
    let allowed = after.allowed() - before.allowed();
    if allowed < arrived {
        problems.push(format!(
            "{arrived} cases arrived, rules allowed {allowed} packets"
        ));
    }
    problems
}

/// IPv4 options (record route, timestamp, an unknown option, 40 bytes of options, an option
/// longer than the header) and IPv6 extension-header chains (hop-by-hop, destination options,
/// routing types 0, 2 and 4, hop-by-hop out of place, unknown options, six headers, seven, a
/// 608-byte header), over UDP and TCP, to an allowed and to a closed port.
#[test]
fn scapy_ip_options_and_ipv6_extension_chains_reach_only_open_ports() {
    crafted(
        "options",
        72,
        &[
            "v4-plain-closed",
            "v4-record-route-closed",
            "v6-plain-closed",
            "v6-hop-dst-rh0-closed",
            "v6-7-headers-closed",
            "v4-tcp-plain-closed",
            "v6-tcp-plain-closed",
        ],
    );
}

/// Fragmented UDP and TCP over IPv4 and IPv6: in order, reversed, a first fragment repeated to
/// the other port after or before the genuine one (without portguard the kernel keeps the one
/// that came first: a rewrite to the closed port), a later fragment overlapping the first, later
/// fragments alone, a TCP first fragment of 8 bytes, an IPv6 first fragment that ends before
/// the transport header, an atomic fragment.
#[test]
fn scapy_overlapping_and_tiny_fragments_reach_only_open_ports() {
    crafted(
        "fragments",
        73,
        &[
            "v4-in-order-closed",
            "v6-in-order-closed",
            "v4-tcp-in-order-closed",
            "v4-tcp-tiny-first-closed",
            "v6-atomic-closed",
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// hping3

/// Packets each hping3 process sends. hping3 sleeps between packets even at `-i u1`, about
/// 10,000 a second here; four processes run at once.
const FLOOD: u32 = 25_000;

/// Four hping3 floods of TCP segments with `flags` from spoofed sources (addresses of the LAN
/// that no machine has and no role names), two to VDSM (open to the Manager) and two to a
/// decoy with a listener, while the Manager opens connections to VDSM over IPv4 and IPv6 and
/// exchanges data on each, one after another. Every attempt must succeed; the host must never
/// answer a spoofed source (it would first resolve the address: no neighbour entry may
/// appear); the datapath must count the flood as dropped.
fn flood(flags: &str, subnet: u8) {
    let setup = Setup::new(subnet, &[VDSM]);
    let lan = &setup.lan;
    let manager = lan.machine(MANAGER);
    let outsider = lan.machine(OUTSIDER);
    assert!(setup.compiled.tcp_open_to(manager.v4).contains(&VDSM));
    let _echo = Echo::start(&lan.host.ns, VDSM);
    let d = setup.daemon();
    let before = Counters::read(&d);

    let flooding = Arc::new(AtomicBool::new(false));
    let prober = Prober::start(
        &manager,
        vec![
            SocketAddr::new(lan.host.v4, VDSM),
            SocketAddr::new(lan.host.v6, VDSM),
        ],
        flooding.clone(),
    );
    let spoofed: Vec<IpAddr> = (200..204).map(|n| lan.addr4(n)).collect();
    flooding.store(true, Ordering::Relaxed);
    let floods: Vec<Bounded> = spoofed
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let port = if i % 2 == 0 { VDSM } else { DECOYS[2] };
            hping3(
                &outsider,
                flags,
                *s,
                lan.host.v4,
                port,
                FLOOD,
                Duration::from_secs(120),
            )
        })
        .collect();
    let outs: Vec<Output> = floods.into_iter().map(Bounded::wait).collect();
    flooding.store(false, Ordering::Relaxed);
    let attempts = prober.finish();
    let after = Counters::read(&d);
    let sent: u64 = outs.iter().map(flood::sent).sum();
    println!(
        "hping3 {flags}: {sent} sent; the Manager made {} attempts, {} during the flood",
        attempts.made, attempts.during_flood
    );

    assert!(
        attempts.failed.is_empty(),
        "allowed connections failed during the {flags} flood:\n{}",
        attempts.failed.join("\n")
    );
    assert!(
        attempts.during_flood >= 1,
        "no connection attempt overlapped the flood"
    );
    let neigh = lan.host.ns.output(&["ip", "-j", "neigh", "show"]);
    let neigh: Value = serde_json::from_slice(&neigh.stdout).expect("ip -j neigh");
    let answered: Vec<&Value> = neigh
        .as_array()
        .expect("neighbours")
        .iter()
        .filter(|n| spoofed.iter().any(|s| n["dst"] == s.to_string()))
        .collect();
    assert!(
        answered.is_empty(),
        "the host tried to answer spoofed sources of the {flags} flood: {answered:?}"
    );
    let dropped = after.dropped() - before.dropped();
    assert!(
        dropped >= sent / 2,
        "hping3 sent {sent}, the datapath dropped {dropped}"
    );
    let allowed = after.allowed() - before.allowed();
    assert!(
        allowed >= attempts.made as u64,
        "{} connections, rules allowed {allowed} packets",
        attempts.made
    );
}

/// SYN floods (`hping3 -S`): the half-open connections a flood would leave never start.
#[test]
fn allowed_connections_keep_working_during_an_hping3_syn_flood() {
    flood("-S", 74);
}

/// ACK floods (`hping3 -A`): each ACK misses every rule and costs a socket lookup (the reply
/// path), which must find nothing, listeners included, and not slow the allowed flow to a halt.
#[test]
fn allowed_connections_keep_working_during_an_hping3_ack_flood() {
    flood("-A", 75);
}
