//! The oracle of the hostile tests: what the host's stack would see in a frame (read by an
//! independent, unlimited parser, neither of the two under test), and whether a verdict is one
//! the policy and configuration explain.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use portguard::{
    compile::tables::TableRule,
    policy::{Match, Proto},
};
use portguard_common::{
    classify::{Outcome, frag_key},
    config::{Config, PASS as CFG_PASS},
    maps::FragKey,
    packet::{Family, Frag, Kind, Packet},
    reason::Reason::{Arp, BroadcastPassed, FragmentUnmatched, NonIpPassed, NotForHost},
};

use super::policy::locals;

// ---------------------------------------------------------------------------------------------
// What the host's stack would see: an independent, unlimited reading of the frame

/// What an upper-layer header says, as the Linux stack would deliver it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Upper {
    /// The stack discards the packet before any socket sees it (lengths do not add up,
    /// transport header cut short).
    Discarded,
    /// A non-first fragment: the datagram's port is in its first fragment.
    Later,
    /// TCP, UDP or SCTP to this destination port.
    Port(Proto, u16),
    /// ICMP or `ICMPv6` of this type and code.
    Icmp(Proto, u8, u8),
    /// Another protocol.
    Other(u8),
}

/// The IP layer of a frame.
#[derive(Clone, Copy, Debug)]
struct IpView {
    src: IpAddr,
    dst: IpAddr,
    upper: Upper,
}

/// The whole frame.
#[derive(Clone, Copy, Debug)]
enum View {
    /// Shorter than an Ethernet header.
    Runt,
    Arp,
    OtherEthertype,
    /// IPv4 or IPv6 ethertype; `None` when there is no readable fixed header of that version.
    Ip(Option<IpView>),
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Reads the frame the way the host's stack would: every VLAN tag (no depth limit), IPv4 with
/// its total length, IPv6 with its payload length and every extension header.
fn stack_view(f: &[u8]) -> View {
    if f.len() < 14 {
        return View::Runt;
    }
    let mut off = 12;
    let mut et = be16(f, off);
    while et == 0x8100 || et == 0x88a8 {
        off += 4;
        if f.len() < off + 2 {
            return View::Runt;
        }
        et = be16(f, off);
    }
    let rest = &f[off + 2..];
    match et {
        0x0806 => View::Arp,
        0x0800 => View::Ip(stack_v4(rest)),
        0x86dd => View::Ip(stack_v6(rest)),
        _ => View::OtherEthertype,
    }
}

fn stack_v4(h: &[u8]) -> Option<IpView> {
    if h.len() < 20 || h[0] >> 4 != 4 {
        return None;
    }
    let addr = |at: usize| IpAddr::from(Ipv4Addr::new(h[at], h[at + 1], h[at + 2], h[at + 3]));
    let (src, dst) = (addr(12), addr(16));
    let ihl = usize::from(h[0] & 0x0f) * 4;
    let total = usize::from(be16(h, 2));
    let upper = if ihl < 20 || total < ihl || total > h.len() {
        Upper::Discarded
    } else if be16(h, 6) & 0x1fff != 0 {
        Upper::Later
    } else {
        transport(Family::V4, h[9], &h[ihl..total])
    };
    Some(IpView { src, dst, upper })
}

fn stack_v6(h: &[u8]) -> Option<IpView> {
    if h.len() < 40 || h[0] >> 4 != 6 {
        return None;
    }
    let addr = |at: usize| {
        let mut a = [0u8; 16];
        a.copy_from_slice(&h[at..at + 16]);
        IpAddr::from(Ipv6Addr::from(a))
    };
    let (src, dst) = (addr(8), addr(24));
    let len = usize::from(be16(h, 4));
    let view = |upper| Some(IpView { src, dst, upper });
    if 40 + len > h.len() {
        return view(Upper::Discarded);
    }
    let data = &h[40..40 + len];
    let mut next = h[6];
    let mut at = 0;
    // However long the chain: the stack has no limit but the packet's length.
    loop {
        match next {
            0 | 43 | 60 => {
                if data.len() < at + 2 || data.len() < at + (usize::from(data[at + 1]) + 1) * 8 {
                    return view(Upper::Discarded);
                }
                next = data[at];
                at += (usize::from(data[at + 1]) + 1) * 8;
            }
            44 => {
                if data.len() < at + 8 {
                    return view(Upper::Discarded);
                }
                if be16(data, at + 2) >> 3 != 0 {
                    return view(Upper::Later);
                }
                next = data[at];
                at += 8;
            }
            _ => return view(transport(Family::V6, next, &data[at..])),
        }
    }
}

fn transport(family: Family, proto: u8, l4: &[u8]) -> Upper {
    let port = |p| {
        if l4.len() < 4 {
            Upper::Discarded
        } else {
            Upper::Port(p, be16(l4, 2))
        }
    };
    match (family, proto) {
        (_, 6) => port(Proto::Tcp),
        (_, 17) => port(Proto::Udp),
        (_, 132) => port(Proto::Sctp),
        (Family::V4, 1) | (Family::V6, 58) if l4.len() < 8 => Upper::Discarded,
        (Family::V4, 1) => Upper::Icmp(Proto::Icmp, l4[0], l4[1]),
        (Family::V6, 58) => Upper::Icmp(Proto::Icmpv6, l4[0], l4[1]),
        _ => Upper::Other(proto),
    }
}

// ---------------------------------------------------------------------------------------------
// The invariant

fn opens(r: &TableRule, src: IpAddr, upper: Upper) -> bool {
    let port_or_type = match (upper, &r.matches) {
        (Upper::Port(p, port), Match::Ports(ranges)) => {
            r.protos.contains(&p) && ranges.iter().any(|x| x.contains(&port))
        }
        (Upper::Icmp(p, ty, code), Match::Icmp { types, code: want }) => {
            r.protos.contains(&p)
                && types.iter().any(|x| x.contains(&ty))
                && want.is_none_or(|w| w == code)
        }
        _ => false,
    };
    port_or_type && r.sources.iter().any(|n| n.contains(&src))
}

fn is_local(dst: IpAddr) -> bool {
    locals().0.contains(&dst)
}

fn is_group_or_broadcast(dst: IpAddr) -> bool {
    match dst {
        IpAddr::V4(a) => a.is_multicast() || a.is_broadcast() || locals().1.contains(&dst),
        IpAddr::V6(a) => a.is_multicast(),
    }
}

/// Whether a verdict is one the policy and configuration explain (see the module doc).
/// `firsts` holds the rule that allowed each first fragment seen so far.
pub(super) fn explained(
    outcome: Outcome,
    p: &Packet,
    frame: &[u8],
    cfg: &Config,
    rules: &[TableRule],
    firsts: &mut HashMap<FragKey, u32>,
) -> Result<(), String> {
    let view = stack_view(frame);
    match outcome {
        Outcome::Deny { .. } => Ok(()),
        Outcome::Allow { slot } => {
            let rule = rules
                .iter()
                .find(|r| r.slot == slot)
                .ok_or_else(|| format!("allowed by unknown slot {slot}"))?;
            let View::Ip(Some(ip)) = view else {
                return Err(format!("allowed by {slot}, but the stack sees {view:?}"));
            };
            if p.kind != Kind::Ip {
                return Err(format!("allowed a {:?} packet", p.kind));
            }
            if p.frag == Frag::Later {
                if !matches!(ip.upper, Upper::Later | Upper::Discarded) {
                    return Err(format!(
                        "judged as a later fragment, but the stack reads {:?}",
                        ip.upper
                    ));
                }
                return match firsts.get(&frag_key(p)) {
                    Some(s) if *s == slot => Ok(()),
                    other => Err(format!(
                        "later fragment allowed by {slot}; its first fragment was allowed by {other:?}"
                    )),
                };
            }
            if p.frag == Frag::First {
                firsts.insert(frag_key(p), slot);
            }
            match ip.upper {
                Upper::Discarded => Ok(()),
                upper if opens(rule, ip.src, upper) => Ok(()),
                upper => Err(format!(
                    "allowed by slot {slot} ({rule:?}), but the stack delivers {upper:?} from {}",
                    ip.src
                )),
            }
        }
        Outcome::Pass(reason) => {
            let ok = match (reason, view) {
                (Arp, View::Arp) => true,
                (NonIpPassed, View::OtherEthertype) => cfg.non_ip == CFG_PASS,
                (NotForHost, View::Ip(Some(ip))) => {
                    cfg.not_for_host == CFG_PASS
                        && !is_local(ip.dst)
                        && !is_group_or_broadcast(ip.dst)
                }
                (BroadcastPassed, View::Ip(Some(ip))) => {
                    cfg.broadcast == CFG_PASS && is_group_or_broadcast(ip.dst)
                }
                // A later fragment before its first: the stack holds it, delivers nothing alone.
                (FragmentUnmatched, View::Ip(Some(ip))) => {
                    matches!(ip.upper, Upper::Later | Upper::Discarded)
                }
                // No socket in the test's namespace, enforce mode: nothing else may pass.
                _ => false,
            };
            if ok {
                Ok(())
            } else {
                Err(format!("passed as {reason:?}, but the stack sees {view:?}"))
            }
        }
    }
}
