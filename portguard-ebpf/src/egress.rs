//! The egress recorder: a tc program on the same interfaces that remembers the UDP datagrams
//! this host sends, so answers to unconnected UDP sockets (a resolver or NTP client that uses
//! `sendto` on an unconnected socket) are replies, not unsolicited datagrams to a bound port.
//!
//! It never drops or changes anything (always `TC_ACT_OK`), reads headers with
//! `bpf_skb_load_bytes` (no packet pointers to bounds-check), and only records: the decision
//! stays in the XDP program.

use aya_ebpf::{
    bindings::TC_ACT_OK, helpers::generated::bpf_ktime_get_coarse_ns, programs::TcContext,
};
use portguard_common::{
    maps::UdpOutKey,
    packet::{
        ethertype,
        hdr::{eth, ipv4, ipv6, l4},
        ipproto,
    },
};

use crate::maps::UDP_OUT;

/// Record the flow of an outgoing UDP datagram, if the frame is one.
#[inline(always)]
pub(crate) fn record(ctx: &TcContext) -> i32 {
    if let Some(key) = udp_out_key(ctx) {
        // SAFETY: plain helper call (base helper, Linux 5.11).
        let now = unsafe { bpf_ktime_get_coarse_ns() };
        // A full LRU forgets the oldest flows: their late answers are then judged by the rules.
        let _ = UDP_OUT.insert(&key, &now, 0);
    }
    TC_ACT_OK
}

#[inline(always)]
fn udp_out_key(ctx: &TcContext) -> Option<UdpOutKey> {
    // The skb's protocol is the frame's ethertype with any VLAN tag already taken off.
    let proto = u16::from_be(ctx.skb.protocol() as u16);
    let mut key = UdpOutKey::default();
    let l4_off = match proto {
        ethertype::IPV4 => {
            let ip: [u8; ipv4::MIN_LEN] = ctx.load(eth::LEN).ok()?;
            // A later fragment has no UDP header; a first one does (a large request).
            let frag = u16::from_be_bytes([ip[ipv4::FRAG], ip[ipv4::FRAG + 1]]);
            let later = frag & ipv4::OFFSET_MASK != 0;
            if ip[ipv4::PROTO] != ipproto::UDP || later {
                return None;
            }
            key.family = 4;
            key.local[..4].copy_from_slice(&ip[ipv4::SRC..ipv4::SRC + 4]);
            key.remote[..4].copy_from_slice(&ip[ipv4::DST..ipv4::DST + 4]);
            eth::LEN + usize::from(ip[ipv4::VER_IHL] & 0x0f) * 4
        }
        ethertype::IPV6 => {
            let ip: [u8; ipv6::LEN] = ctx.load(eth::LEN).ok()?;
            // Datagrams behind extension headers are not recorded: their answers are judged
            // by the rules, as before this recorder existed.
            if ip[ipv6::NEXT] != ipproto::UDP {
                return None;
            }
            key.family = 6;
            key.local.copy_from_slice(&ip[ipv6::SRC..ipv6::SRC + 16]);
            key.remote.copy_from_slice(&ip[ipv6::DST..ipv6::DST + 16]);
            eth::LEN + ipv6::LEN
        }
        _ => return None,
    };
    let ports: [u8; 4] = ctx.load(l4_off).ok()?;
    key.lport = u16::from_be_bytes([ports[l4::SPORT], ports[l4::SPORT + 1]]);
    key.rport = u16::from_be_bytes([ports[l4::DPORT], ports[l4::DPORT + 1]]);
    Some(key)
}
