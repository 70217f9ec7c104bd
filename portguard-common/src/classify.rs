//! The decision: given a parsed frame and the compiled tables, allow by which rule, or why not.
//!
//! This function is the policy. The XDP program calls it with an [`Env`] backed by BPF maps and
//! helpers; the reference classifier calls it with an `Env` backed by `std` collections holding
//! the same compiled tables. Keep it free of anything but table lookups and arithmetic.
//!
//! Cost does not depend on the number of rules: one array lookup gives the port class (ranges
//! cost nothing extra), a longest-prefix match gives the source class (the compiler flattens
//! overlapping prefixes so the longest match already carries the classes of the shorter ones;
//! the datapath answers it from a flat table, see [`crate::image`]), and one array lookup in the
//! `source class x port class` decision table gives the first rule, in policy order, that both
//! sets share. The compiler precomputes that intersection; the per-packet path never loops over
//! rules or bitmap words.

use crate::{
    config::{Config, DROP, PASS},
    maps::{
        FragKey, FragVerdict, LOCAL_BROADCAST, PORT_SPACE, SLOT_ICMP, SLOT_ICMPV6, SLOT_IP_PROTO,
        SLOT_SCTP, SLOT_TCP, SLOT_UDP,
    },
    packet::{Cast, Family, Frag, Kind, L4Kind, Packet, icmp_is_error, ipproto, tcp_flags},
    reason::Reason,
};

/// What the classifier consults. Every method is a table lookup or a kernel helper call.
pub trait Env {
    /// The policy configuration (by reference: the datapath's lives in a map, and copying its
    /// 64 bytes onto the stack for every packet costs more than reading the fields used).
    fn config(&self) -> &Config;
    /// `LOCAL_UNICAST` / `LOCAL_BROADCAST` when `addr` is one of this host's, else `None`.
    fn local(&self, family: Family, addr: &[u8; 16]) -> Option<u32>;
    /// Source class of the longest prefix containing `addr` (0 = none).
    fn src_class(&self, family: Family, addr: &[u8; 16]) -> u32;
    /// Port class at `index` of the ports table (0 = no rule covers it).
    fn port_class(&self, index: u32) -> u32;
    /// Decision table entry at `index`: rule slot + 1, or 0.
    fn decision(&self, index: u32) -> u32;
    /// Whether `mac` is one of this host's own interfaces' addresses: a frame sent to it goes
    /// to the host's stack (a bridge hands frames for other addresses to its guests).
    fn host_mac(&self, mac: &[u8; 6]) -> bool;
    /// Whether the kernel, routing `p` as it arrived, would deliver it to this host (or drop
    /// it) rather than forward it: the authority on addresses the local map does not hold yet
    /// (an address added a moment ago, an address on `lo`, an `AnyIP` route).
    fn fib_local(&self, p: &Packet) -> bool;
    /// The verdict of the first fragment of this datagram ([`FragVerdict`]), if it was seen.
    fn frag_get(&self, key: &FragKey) -> Option<u32>;
    /// Remember the verdict of the first fragment of this datagram.
    fn frag_put(&self, key: &FragKey, verdict: u32);
    /// Whether a connected socket of this host owns the flow of `p` (`p.src:sport` remote,
    /// `p.dst:dport` local): a TCP connection in any state but LISTEN (including `TIME_WAIT`
    /// and half-open request sockets), or a connected UDP socket. Listeners do not count: an
    /// open listener is what the policy decides on.
    fn owns_flow(&self, p: &Packet) -> bool;
    /// Whether a connected socket of this host owns the flow an ICMP error to `p.dst` quotes
    /// (`p.quote_*`).
    fn owns_quoted(&self, p: &Packet) -> bool;
}

/// The classifier's answer for one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Allowed by the rule in counter slot `slot`.
    Allow {
        /// Rule counter slot.
        slot: u32,
    },
    /// Passed for a reason other than a rule (ARP, reply, bridged guest, ...).
    Pass(Reason),
    /// Denied. `hint` is the slot + 1 of the rule that opens this port to other sources
    /// (0 = none), reported in audit events as "the rule it would have matched".
    Deny {
        /// Why.
        reason: Reason,
        /// Rule slot + 1 of the closest rule, or 0.
        hint: u32,
    },
}

/// Where an IP packet is going, from this host's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dest {
    Local,
    Broadcast,
    Foreign,
}

/// Where `p` goes. The local map is the fast answer for the host's known addresses; for any
/// other address the frame itself decides: addressed (at L2) to another station, it is a
/// guest's; addressed to this host or to a group, the kernel's routing table decides, exactly as
/// the stack will. So an address the map does not hold yet is judged, never passed as foreign.
#[expect(
    clippy::inline_always,
    reason = "in the XDP program an outlined copy is a BPF call on every packet's path"
)]
#[inline(always)]
fn destination<E: Env>(env: &E, p: &Packet) -> Dest {
    let dst = &p.dst;
    if let Some(kind) = env.local(p.family, dst) {
        return if kind == LOCAL_BROADCAST {
            Dest::Broadcast
        } else {
            Dest::Local
        };
    }
    let group = match p.family {
        Family::V4 => dst[0] & 0xf0 == 0xe0 || dst[..4] == [0xff; 4],
        Family::V6 => dst[0] == 0xff,
    };
    if group {
        return Dest::Broadcast;
    }
    if p.cast == Cast::Unicast && !env.host_mac(&p.dst_mac) {
        return Dest::Foreign;
    }
    if env.fib_local(p) {
        Dest::Local
    } else {
        Dest::Foreign
    }
}

/// What happens to a frame that is not for this host at all.
fn foreign(cfg: &Config) -> Outcome {
    if cfg.not_for_host == DROP {
        Outcome::Deny {
            reason: Reason::NotForHostDropped,
            hint: 0,
        }
    } else {
        Outcome::Pass(Reason::NotForHost)
    }
}

/// A `DHCPv4` server's (or relay's) reply, udp/67 -> udp/68. A server that does not broadcast
/// unicasts offers and acknowledgements to the address it offers (RFC 2131 §4.1), which is not
/// yet one of this host's. Where other hosts' unicast is dropped (`not_for_host = "drop"`: no
/// guests behind this NIC), such a reply can only be this host's, so it is judged by the rules
/// like one (essentials' ESS-DHCPV4-CLIENT) instead of being dropped as someone else's.
fn dhcpv4_reply(p: &Packet) -> bool {
    p.family == Family::V4
        && p.l4 == L4Kind::Ports
        && p.proto == ipproto::UDP
        && p.sport == 67
        && p.dport == 68
}

/// The `PORTS` index of an upper-layer header, or `None` when the policy cannot open it.
#[must_use]
pub fn port_index(p: &Packet) -> Option<u32> {
    let (slot, key) = match (p.l4, p.proto) {
        (L4Kind::Ports, ipproto::TCP) => (SLOT_TCP, p.dport as u32),
        (L4Kind::Ports, ipproto::UDP) => (SLOT_UDP, p.dport as u32),
        (L4Kind::Ports, ipproto::SCTP) => (SLOT_SCTP, p.dport as u32),
        (L4Kind::Icmp, _) => {
            let slot = if p.family == Family::V4 {
                SLOT_ICMP
            } else {
                SLOT_ICMPV6
            };
            (slot, ((p.icmp_type as u32) << 8) | p.icmp_code as u32)
        }
        (L4Kind::Other, proto) => (SLOT_IP_PROTO, proto as u32),
        _ => return None,
    };
    Some(slot * PORT_SPACE + key)
}

/// The fragment key of an IP packet: what the kernel reassembles by. IPv4 datagrams are
/// identified by (src, dst, id, protocol); IPv6 ones by (src, dst, id) alone, and the protocol
/// is no use there anyway: a first fragment's is the upper layer's after the whole header
/// chain, a later fragment's is whatever follows its fragment header (RFC 8200 puts
/// destination options there).
#[must_use]
pub fn frag_key(p: &Packet) -> FragKey {
    FragKey {
        src: p.src,
        dst: p.dst,
        id: p.frag_id,
        proto: if p.family == Family::V6 { 0 } else { p.proto },
        family: p.family as u8,
        pad: [0; 2],
    }
}

/// Decide one frame.
pub fn classify<E: Env>(env: &E, p: &Packet) -> Outcome {
    let cfg = env.config();
    match p.kind {
        Kind::Arp => return Outcome::Pass(Reason::Arp),
        Kind::NonIp => {
            return if cfg.non_ip == DROP {
                Outcome::Deny {
                    reason: Reason::NonIpDropped,
                    hint: 0,
                }
            } else {
                Outcome::Pass(Reason::NonIpPassed)
            };
        }
        Kind::Malformed | Kind::TooDeep => {
            let reason = if p.kind == Kind::TooDeep {
                Reason::TooDeep
            } else {
                Reason::Malformed
            };
            // A broken packet for a guest behind the bridge is the guest's business.
            if p.dst_known && p.cast == Cast::Unicast && destination(env, p) == Dest::Foreign {
                return foreign(cfg);
            }
            return Outcome::Deny { reason, hint: 0 };
        }
        Kind::Ip => {}
    }

    match destination(env, p) {
        Dest::Foreign if !(cfg.not_for_host == DROP && dhcpv4_reply(p)) => return foreign(cfg),
        Dest::Broadcast if cfg.broadcast == PASS => return Outcome::Pass(Reason::BroadcastPassed),
        Dest::Foreign | Dest::Broadcast | Dest::Local => {}
    }

    // Later fragments carry no ports: they follow their first fragment's verdict, whatever
    // passed it (a rule, or being the answer to the host's own request). One that comes before
    // its first fragment passes: the kernel holds it until the first fragment, judged when it
    // comes, completes the datagram or never does.
    if p.frag == Frag::Later {
        return match env.frag_get(&frag_key(p)) {
            None => Outcome::Pass(Reason::FragmentUnmatched),
            Some(v) if v & FragVerdict::DENIED != 0 => Outcome::Deny {
                reason: Reason::FragmentDropped,
                hint: 0,
            },
            Some(v) if v & FragVerdict::PASSED == 0 => Outcome::Allow { slot: v },
            Some(v) => Reason::from_u32(v & !FragVerdict::PASSED).map_or(
                Outcome::Deny {
                    reason: Reason::FragmentDropped,
                    hint: 0,
                },
                Outcome::Pass,
            ),
        };
    }

    let outcome = judge(env, p, cfg);
    if p.frag == Frag::First {
        let key = frag_key(p);
        match outcome {
            Outcome::Allow { slot } => env.frag_put(&key, slot),
            Outcome::Pass(reason) => env.frag_put(&key, FragVerdict::PASSED | reason as u32),
            // A denied first fragment never reaches the kernel, so it must not undo one that
            // passed: a spoofed duplicate would otherwise cut off the allowed datagram's rest.
            Outcome::Deny { reason, .. } if env.frag_get(&key).is_none() => {
                env.frag_put(&key, FragVerdict::DENIED | reason as u32);
            }
            Outcome::Deny { .. } => {}
        }
    }
    outcome
}

/// The verdict on an IP packet for this host (or a group it is in): the first rule that
/// admits it, else a reply to an exchange the host started, else denied with the reason.
#[expect(
    clippy::collapsible_match,
    reason = "the arm's pattern is about the packet, its body asks the kernel: kept apart so the \
              costly socket lookup reads as the separate step it is"
)]
fn judge<E: Env>(env: &E, p: &Packet, cfg: &Config) -> Outcome {
    let Some(port_idx) = port_index(p) else {
        return Outcome::Deny {
            reason: Reason::ProtoNotOpen,
            hint: 0,
        };
    };
    let port_class = env.port_class(port_idx);
    // A port no rule covers is refused whoever sends to it: the source is not looked up, so a
    // scan of closed ports costs one lookup less.
    let src_class = if port_class == 0 {
        0
    } else {
        env.src_class(p.family, &p.src)
    };
    if src_class != 0 {
        let rule = env.decision(src_class * cfg.port_classes + port_class);
        if rule != 0 {
            return Outcome::Allow { slot: rule - 1 };
        }
    }

    // Not opened by the policy: maybe part of an exchange this host started.
    match p.l4 {
        L4Kind::Ports => {
            let bare_syn = p.proto == ipproto::TCP
                && p.tcp_flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN;
            if !bare_syn && env.owns_flow(p) {
                return Outcome::Pass(Reason::Reply);
            }
        }
        L4Kind::Icmp if p.has_quote && icmp_is_error(p.family, p.icmp_type) => {
            if env.owns_quoted(p) {
                return Outcome::Pass(Reason::IcmpErrorForOwnFlow);
            }
        }
        _ => {}
    }

    let reason = if port_class == 0 && p.l4 == L4Kind::Other {
        Reason::ProtoNotOpen
    } else if port_class == 0 {
        Reason::PortNotOpen
    } else if src_class == 0 {
        Reason::NoSourceRole
    } else {
        Reason::SourceNotAllowed
    };
    // Row 0 of the decision table holds, per port class, the first rule covering it.
    let hint = if port_class == 0 {
        0
    } else {
        env.decision(port_class)
    };
    Outcome::Deny { reason, hint }
}
