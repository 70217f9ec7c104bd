//! What `explain` says about a lab flow: the shared classifier run on the host's compiled tables,
//! exactly as `portguard explain` runs it, plus the sockets the host holds for reply flows.

use std::net::IpAddr;

use portguard_common::{
    classify::{Outcome, classify},
    config::MODE_AUDIT,
    maps::LOCAL_UNICAST,
    packet::{Family, Kind, L4Kind, Packet, ipproto, tcp_flags},
    reason::Reason,
    reference::RefEnv,
};
use serde::Serialize;

use crate::compile::HostPolicy;

/// The upper layer of a flow: what is sent, to which port or ICMP type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4 {
    /// A TCP connection to this port.
    Tcp(u16),
    /// A UDP datagram to this port.
    Udp(u16),
    /// An SCTP INIT to this port.
    Sctp(u16),
    /// An ICMP (IPv4) or `ICMPv6` message (by the address family).
    Icmp {
        /// Type.
        ty: u8,
        /// Code.
        code: u8,
    },
    /// A packet of another IP protocol (IGMP, VRRP...), by number.
    Ip(u8),
}

impl L4 {
    /// `tcp/22`, `udp/6081`, `icmp 3/4`, `icmpv6 135`.
    #[must_use]
    pub fn label(self, family: Family) -> String {
        match self {
            L4::Tcp(p) => format!("tcp/{p}"),
            L4::Udp(p) => format!("udp/{p}"),
            L4::Sctp(p) => format!("sctp/{p}"),
            L4::Ip(n) => crate::policy::ip_protocol_name(n),
            L4::Icmp { ty, code } => {
                let name = if family == Family::V4 {
                    "icmp"
                } else {
                    "icmpv6"
                };
                if code == 0 {
                    format!("{name} {ty}")
                } else {
                    format!("{name} {ty}/{code}")
                }
            }
        }
    }

    fn proto(self, family: Family) -> u8 {
        match self {
            L4::Tcp(_) => ipproto::TCP,
            L4::Udp(_) => ipproto::UDP,
            L4::Sctp(_) => ipproto::SCTP,
            L4::Icmp { .. } if family == Family::V4 => ipproto::ICMP,
            L4::Icmp { .. } => ipproto::ICMPV6,
            L4::Ip(n) => n,
        }
    }
}

/// The family of an address.
#[must_use]
pub fn family_of(a: IpAddr) -> Family {
    if a.is_ipv4() { Family::V4 } else { Family::V6 }
}

/// An address in the classifier's 16-byte form.
#[must_use]
pub fn wide(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v) => {
            let mut w = [0u8; 16];
            w[..4].copy_from_slice(&v.octets());
            w
        }
        IpAddr::V6(v) => v.octets(),
    }
}

/// A connected socket of the protected host: (protocol, remote, remote port, local port).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owned {
    /// `ipproto::TCP` or `ipproto::UDP`.
    pub proto: u8,
    /// The peer's address.
    pub remote: IpAddr,
    /// The peer's port.
    pub rport: u16,
    /// The host's port.
    pub lport: u16,
}

/// One packet as the protected host's datapath would see it arrive.
#[derive(Clone, Copy, Debug)]
pub struct Pkt {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Upper layer.
    pub l4: L4,
    /// Source port (TCP, UDP, SCTP).
    pub sport: u16,
    /// TCP flags (a bare SYN for a new connection).
    pub tcp_flags: u8,
    /// For ICMP errors: the host's flow the error quotes.
    pub quote: Option<Owned>,
    /// A connected socket the host holds while this packet arrives.
    pub owned: Option<Owned>,
}

impl Pkt {
    /// The first packet of a new flow from `src` to `dst` (a SYN for TCP).
    #[must_use]
    pub fn new(src: IpAddr, dst: IpAddr, l4: L4) -> Self {
        Pkt {
            src,
            dst,
            l4,
            sport: 40000,
            tcp_flags: if matches!(l4, L4::Tcp(_)) {
                tcp_flags::SYN
            } else {
                0
            },
            quote: None,
            owned: None,
        }
    }
}

/// How a flow is expected to be treated, in the lab's terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Passed to the host's stack (by a rule, or as a reply, ARP, ...).
    Allowed,
    /// Dropped (in audit mode: passed, counted as would-deny).
    Denied,
    /// Not addressed to the host: passed untouched (a VM bridged behind the NIC).
    NotJudged,
}

impl Verdict {
    /// Short name for tables.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Allowed => "allow",
            Verdict::Denied => "deny",
            Verdict::NotJudged => "not judged",
        }
    }
}

/// A datapath counter: a rule's or a reason's.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "name")]
pub enum Counter {
    /// The counter of the rule with this id.
    Rule(String),
    /// The counter of a reason (`reply`, `port-not-open`, ...).
    Reason(&'static str),
}

impl std::fmt::Display for Counter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Counter::Rule(id) => f.write_str(id),
            Counter::Reason(r) => f.write_str(r),
        }
    }
}

/// The expected treatment of one flow, and the counter that must move.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Expected {
    /// Verdict.
    pub verdict: Verdict,
    /// The counter the datapath must increment.
    pub counter: Counter,
    /// Whether the site is in audit mode (denied flows are passed and counted as would-deny).
    pub audit: bool,
    /// As `explain` prints it: `allow RHV-H10`, `deny source-not-allowed (port opened by ...)`.
    pub text: String,
}

impl Expected {
    /// Whether the application at the other end must receive the flow.
    #[must_use]
    pub fn delivers(&self) -> bool {
        self.verdict != Verdict::Denied || self.audit
    }
}

/// The reference classifier over one host's compiled tables.
#[derive(Debug)]
pub struct Judge<'a> {
    hp: &'a HostPolicy,
    local: Vec<IpAddr>,
}

impl<'a> Judge<'a> {
    /// A judge for the host owning `local` addresses.
    #[must_use]
    pub fn new(hp: &'a HostPolicy, local: Vec<IpAddr>) -> Self {
        Judge { hp, local }
    }

    /// Whether the policy is in audit mode.
    #[must_use]
    pub fn audit(&self) -> bool {
        self.hp.tables.config.mode == MODE_AUDIT
    }

    /// The id of the rule in counter slot `slot` of the lab's compile.
    #[must_use]
    pub fn rule_id(&self, slot: u32) -> Option<&str> {
        self.hp
            .rules
            .iter()
            .find(|r| r.slot == slot)
            .map(|r| r.id.as_str())
    }

    /// The classifier's outcome for `p`.
    #[must_use]
    pub fn outcome(&self, p: &Pkt) -> Outcome {
        let family = family_of(p.src);
        let mut packet = Packet {
            kind: Kind::Ip,
            family,
            src: wide(p.src),
            dst: wide(p.dst),
            dst_known: true,
            proto: p.l4.proto(family),
            ..Packet::EMPTY
        };
        match p.l4 {
            L4::Tcp(port) | L4::Udp(port) | L4::Sctp(port) => {
                packet.l4 = L4Kind::Ports;
                packet.sport = p.sport;
                packet.dport = port;
                packet.tcp_flags = p.tcp_flags;
            }
            L4::Icmp { ty, code } => {
                packet.l4 = L4Kind::Icmp;
                packet.icmp_type = ty;
                packet.icmp_code = code;
                if let Some(q) = p.quote {
                    packet.has_quote = true;
                    packet.quote_proto = q.proto;
                    packet.quote_remote = wide(q.remote);
                    packet.quote_rport = q.rport;
                    packet.quote_lport = q.lport;
                }
            }
            L4::Ip(_) => packet.l4 = L4Kind::Other,
        }
        let mut env = RefEnv::new(&self.hp.tables);
        for a in &self.local {
            env.local.insert((family_of(*a), wide(*a)), LOCAL_UNICAST);
        }
        if let Some(o) = p.owned {
            env.sockets.insert((
                family,
                o.proto,
                wide(o.remote),
                o.rport,
                wide(p.dst),
                o.lport,
            ));
        }
        classify(&env, &packet)
    }

    /// The expected treatment of `p`, worded as `explain` words it.
    #[must_use]
    pub fn expect(&self, p: &Pkt) -> Expected {
        let audit = self.audit();
        match self.outcome(p) {
            Outcome::Allow { slot } => {
                let id = self
                    .rule_id(slot)
                    .map_or_else(|| format!("slot-{slot}"), str::to_owned);
                Expected {
                    verdict: Verdict::Allowed,
                    text: format!("allow {id}"),
                    counter: Counter::Rule(id),
                    audit,
                }
            }
            Outcome::Pass(reason) => Expected {
                verdict: if reason == Reason::NotForHost {
                    Verdict::NotJudged
                } else {
                    Verdict::Allowed
                },
                text: if reason == Reason::NotForHost {
                    format!("not judged ({})", reason.name())
                } else {
                    format!("allow ({})", reason.name())
                },
                counter: Counter::Reason(reason.name()),
                audit,
            },
            Outcome::Deny { reason, hint } => {
                let word = if audit { "would deny" } else { "deny" };
                let text = match hint.checked_sub(1).and_then(|s| self.rule_id(s)) {
                    Some(h) => format!("{word} {} (port opened by {h})", reason.name()),
                    None => format!("{word} {}", reason.name()),
                };
                Expected {
                    verdict: Verdict::Denied,
                    counter: Counter::Reason(reason.name()),
                    audit,
                    text,
                }
            }
        }
    }
}
