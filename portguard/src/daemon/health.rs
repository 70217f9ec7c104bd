//! The self-test: every few seconds, check that the kernel still enforces what the daemon put
//! in force, and that what it enforces behaves as the policy says.
//!
//! For each interface: its link pin is there, the interface runs the program that link holds
//! (a pin removed by hand, or a program detached behind the daemon's back, shows here), and
//! that very program, found by id, drops a frame the policy denies and passes one it allows
//! (`BPF_PROG_TEST_RUN`; the program counts such frames under `self-test` only, never on a rule).
//! A problem is logged at error priority, recorded for `status` and the metrics, and what can
//! be repaired (a missing or dead link) is re-attached.

use std::net::IpAddr;

use portguard_common::{classify::Outcome, config::MODE_AUDIT};

use super::{Daemon, chain};
use crate::{
    compile::{
        HostPolicy,
        flow::{Decider, Flow},
    },
    ebpf::{links, probe},
    policy::{Match, Proto},
    state,
};

/// `XDP_DROP` and `XDP_PASS`.
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

/// A frame and the action the policy in force gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ProbeFrame {
    /// What it is, for messages.
    what: String,
    frame: Vec<u8>,
    expect: u32,
}

/// Sources that are in no role of a sensible site: the documentation ranges.
const NOBODY_V4: [&str; 3] = ["192.0.2.1", "198.51.100.1", "203.0.113.1"];
const NOBODY_V6: [&str; 2] = ["100::1", "3fff::1"];

/// Frames to test the program compiled as `host` with: one the policy denies (from a source in
/// no role, to a port not open to it) and one it allows (from a rule's source to its port),
/// both to `dst`, one of the host's addresses.
pub(super) fn probes(host: &HostPolicy, dst: IpAddr) -> Vec<ProbeFrame> {
    let audit = host.tables.config.mode == MODE_AUDIT;
    let action = |o: &Outcome| match o {
        Outcome::Deny { .. } if !audit => XDP_DROP,
        _ => XDP_PASS,
    };
    let flow = |src: IpAddr, proto: Proto, dport: u16| Flow {
        src,
        dst,
        proto,
        sport: 40000,
        dport,
    };
    let mut decider = Decider::new(host);
    let mut out = Vec::new();
    let nobody: Vec<IpAddr> = if dst.is_ipv4() {
        NOBODY_V4.iter().filter_map(|a| a.parse().ok()).collect()
    } else {
        NOBODY_V6.iter().filter_map(|a| a.parse().ok()).collect()
    };
    'deny: for src in nobody {
        for port in [5555, 1, 7, 9, 13, 65535].into_iter().chain(2..=65534) {
            let f = flow(src, Proto::Tcp, port);
            let o = decider.decide(&f);
            if matches!(o, Outcome::Deny { .. }) {
                out.push(ProbeFrame {
                    what: format!("tcp/{port} from {src} (denied)"),
                    frame: syn(&f),
                    expect: action(&o),
                });
                break 'deny;
            }
        }
    }
    let allowed = host.rules.iter().find_map(|r| {
        let proto = *r
            .protos
            .iter()
            .find(|p| matches!(p, Proto::Tcp | Proto::Udp))?;
        let Match::Ports(ranges) = &r.matches else {
            return None;
        };
        let port = *ranges.first()?.start();
        let net = r
            .sources
            .iter()
            .find(|n| n.addr().is_ipv4() == dst.is_ipv4())?;
        let src = net.hosts().next().unwrap_or(net.addr());
        (src != dst).then(|| flow(src, proto, port.max(1)))
    });
    if let Some(f) = allowed {
        let o = decider.decide(&f);
        out.push(ProbeFrame {
            what: format!("{:?}/{} from {} (allowed)", f.proto, f.dport, f.src).to_lowercase(),
            frame: if f.proto == Proto::Tcp {
                syn(&f)
            } else {
                udp(&f)
            },
            expect: action(&o),
        });
    }
    out
}

impl Daemon {
    /// Run the self-test, record its result, and repair what can be: an interface whose link
    /// is gone or dead is detached from the state so the next apply attaches it afresh.
    /// Whether a repair is due.
    pub(super) fn self_test(&mut self) -> bool {
        let mut problems = Vec::new();
        let mut repair = false;
        let links = match crate::host::links() {
            Ok(l) => l,
            Err(e) => {
                problems.push(format!("listing links: {e}"));
                Vec::new()
            }
        };
        let pin_dir = self.opts.pin_dir.clone();
        for iface in self.state.interfaces.clone() {
            let name = &iface.name;
            let Some(link) = links.iter().find(|l| l.index == iface.ifindex) else {
                // Gone: the next netlink event re-syncs it.
                continue;
            };
            let pinned = match links::pinned_program_id(&pin_dir, name) {
                Ok(id) => id,
                Err(e) => {
                    problems.push(format!("{name}: {} (was it removed?)", chain(&e)));
                    repair = true;
                    continue;
                }
            };
            if link.xdp_prog_id != Some(pinned) {
                problems.push(format!(
                    "{name}: runs {} instead of the pinned link's program {pinned}",
                    link.xdp_prog_id
                        .map_or_else(|| "no XDP program".to_owned(), |id| format!("program {id}"))
                ));
                // The link lost its interface: its pin only holds a dead link.
                if let Err(e) = links::unpin(&pin_dir, name) {
                    log::warn!("{name}: removing the dead link's pin: {}", chain(&e));
                }
                repair = true;
                continue;
            }
            for p in &self.probes {
                match probe::xdp_action(pinned, &p.frame) {
                    Ok(got) if got == p.expect => {}
                    Ok(got) => problems.push(format!(
                        "{name}: program {pinned} returned {} for {}, the policy says {}",
                        action_name(got),
                        p.what,
                        action_name(p.expect)
                    )),
                    Err(e) => problems.push(format!("{name}: {}", chain(&e))),
                }
            }
        }
        if repair {
            let gone: Vec<String> = self
                .state
                .interfaces
                .iter()
                .filter(|i| !links::link_pin(&pin_dir, &i.name).exists())
                .map(|i| i.name.clone())
                .collect();
            self.state.interfaces.retain(|i| !gone.contains(&i.name));
        }
        for p in &problems {
            log::error!("self-test: {p}");
        }
        let h = &mut self.state.health;
        h.runs += 1;
        h.failures += u64::from(!problems.is_empty());
        h.ok = problems.is_empty();
        h.at = state::now_secs();
        h.problems = problems;
        self.write_state();
        repair
    }
}

fn action_name(a: u32) -> &'static str {
    match a {
        XDP_DROP => "drop",
        XDP_PASS => "pass",
        _ => "another action",
    }
}

/// Ethernet and IP headers for a frame from `f.src` to `f.dst` carrying `proto`, then `l4`.
fn frame(f: &Flow, proto: u8, l4: &[u8]) -> Vec<u8> {
    // To a locally administered MAC: the destination address is the host's, which is what
    // makes the frame the host's.
    let mut out = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    match (f.src, f.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.extend([0x08, 0x00, 0x45, 0]);
            out.extend(((20 + l4.len()) as u16).to_be_bytes());
            out.extend([0, 1, 0, 0, 64, proto, 0, 0]);
            out.extend(s.octets());
            out.extend(d.octets());
        }
        (s, d) => {
            let v6 = |a: IpAddr| match a {
                IpAddr::V6(v) => v.octets(),
                IpAddr::V4(v) => v.to_ipv6_mapped().octets(),
            };
            out.extend([0x86, 0xdd, 0x60, 0, 0, 0]);
            out.extend((l4.len() as u16).to_be_bytes());
            out.extend([proto, 64]);
            out.extend(v6(s));
            out.extend(v6(d));
        }
    }
    out.extend_from_slice(l4);
    out
}

/// A TCP SYN of `f` (checksums are not the program's business).
fn syn(f: &Flow) -> Vec<u8> {
    let mut tcp = Vec::with_capacity(20);
    tcp.extend(f.sport.to_be_bytes());
    tcp.extend(f.dport.to_be_bytes());
    tcp.extend([0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    frame(f, 6, &tcp)
}

/// A small UDP datagram of `f`.
fn udp(f: &Flow) -> Vec<u8> {
    let mut u = Vec::with_capacity(12);
    u.extend(f.sport.to_be_bytes());
    u.extend(f.dport.to_be_bytes());
    u.extend(12u16.to_be_bytes());
    u.extend([0, 0, b'p', b'g', b'h', b'c']);
    frame(f, 17, &u)
}

#[cfg(test)]
mod tests {
    use portguard_common::reference::{RefEnv, parse};

    use super::*;
    use crate::policy;

    /// The probes of the lab site get the verdicts they promise from the reference classifier
    /// reading the frames themselves (so the frame builder and the flow agree).
    #[test]
    fn probes_are_judged_as_promised() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let p = policy::load(
            &root.join("policies/examples/lab.toml"),
            &root.join("policies"),
        )
        .expect("lab site");
        let host = crate::compile::for_host(&p, &["rhv.host".to_owned()]).expect("compile");
        let dst: IpAddr = "198.18.2.1".parse().expect("addr");
        let frames = probes(&host, dst);
        assert_eq!(frames.len(), 2, "{frames:?}");
        let mut env = RefEnv::new(&host.tables);
        env.local.insert(
            (
                portguard_common::packet::Family::V4,
                [198, 18, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ),
            portguard_common::maps::LOCAL_UNICAST,
        );
        let got: Vec<u32> = frames
            .iter()
            .map(
                |f| match portguard_common::classify::classify(&env, &parse(&f.frame)) {
                    Outcome::Deny { .. } => XDP_DROP,
                    _ => XDP_PASS,
                },
            )
            .collect();
        assert_eq!(got, vec![XDP_DROP, XDP_PASS]);
        assert_eq!(
            frames.iter().map(|f| f.expect).collect::<Vec<_>>(),
            vec![XDP_DROP, XDP_PASS]
        );
    }
}
