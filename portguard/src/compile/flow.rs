//! One flow through the reference classifier on a host's compiled tables: what `explain`, the
//! rule-walking tests and the lab ask ("would this pass, and by which rule?").

use std::net::IpAddr;

use portguard_common::{
    classify::{Outcome, classify},
    maps::LOCAL_UNICAST,
    packet::{Family, Kind, L4Kind, Packet, ipproto, tcp_flags},
    reference::RefEnv,
};

use super::HostPolicy;
use crate::policy::Proto;

/// A new flow towards the host: a TCP SYN, a UDP or SCTP packet, or an ICMP message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    /// Source address.
    pub src: IpAddr,
    /// Destination address (one of the host's).
    pub dst: IpAddr,
    /// Protocol; `Icmp` and `Icmpv6` must match the address family.
    pub proto: Proto,
    /// Source port (ports protocols).
    pub sport: u16,
    /// Destination port, for ICMP `type << 8 | code`, for [`Proto::Ip`] the protocol number.
    pub dport: u16,
}

fn wide(a: IpAddr) -> (Family, [u8; 16]) {
    match a {
        IpAddr::V4(v) => {
            let mut w = [0u8; 16];
            w[..4].copy_from_slice(&v.octets());
            (Family::V4, w)
        }
        IpAddr::V6(v) => (Family::V6, v.octets()),
    }
}

/// The datapath's decision for `flow` on `host`'s tables (the destination counts as one of
/// the host's unicast addresses).
#[must_use]
pub fn decide(host: &HostPolicy, flow: &Flow) -> Outcome {
    Decider::new(host).decide(flow)
}

/// Decides many flows on one host's tables, building the reference environment once.
#[derive(Debug)]
pub struct Decider<'a> {
    env: RefEnv<'a>,
}

impl<'a> Decider<'a> {
    /// A decider over `host`'s tables.
    #[must_use]
    pub fn new(host: &'a HostPolicy) -> Self {
        Decider {
            env: RefEnv::new(&host.tables),
        }
    }

    /// The datapath's decision for `flow` (its destination counts as the host's).
    #[must_use]
    pub fn decide(&mut self, flow: &Flow) -> Outcome {
        let packet = packet(flow);
        self.env.local.clear();
        self.env
            .local
            .insert((packet.family, packet.dst), LOCAL_UNICAST);
        classify(&self.env, &packet)
    }
}

/// The packet of a new flow towards the host.
fn packet(flow: &Flow) -> Packet {
    let (family, src) = wide(flow.src);
    let (_, dst) = wide(flow.dst);
    let mut packet = Packet {
        kind: Kind::Ip,
        family,
        src,
        dst,
        dst_known: true,
        ..Packet::EMPTY
    };
    match flow.proto {
        Proto::Ip => {
            // A portless protocol: `dport` carries its number.
            packet.proto = flow.dport as u8;
            packet.l4 = L4Kind::Other;
        }
        Proto::Icmp | Proto::Icmpv6 => {
            packet.proto = if family == Family::V4 {
                ipproto::ICMP
            } else {
                ipproto::ICMPV6
            };
            packet.l4 = L4Kind::Icmp;
            packet.icmp_type = (flow.dport >> 8) as u8;
            packet.icmp_code = (flow.dport & 0xff) as u8;
        }
        p => {
            packet.proto = match p {
                Proto::Tcp => ipproto::TCP,
                Proto::Udp => ipproto::UDP,
                _ => ipproto::SCTP,
            };
            packet.l4 = L4Kind::Ports;
            packet.sport = flow.sport;
            packet.dport = flow.dport;
            // A new flow: a SYN, so no reply or established state can explain it away.
            packet.tcp_flags = if p == Proto::Tcp { tcp_flags::SYN } else { 0 };
        }
    }
    packet
}
