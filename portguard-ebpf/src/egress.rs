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
    packet::{ethertype, ipproto},
};

use crate::maps::UDP_OUT;

const ETH_LEN: usize = 14;

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
    let l4 = match proto {
        ethertype::IPV4 => {
            let ip: [u8; 20] = ctx.load(ETH_LEN).ok()?;
            let fragmented = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0;
            if ip[9] != ipproto::UDP || fragmented {
                return None;
            }
            key.family = 4;
            key.local[..4].copy_from_slice(&ip[12..16]);
            key.remote[..4].copy_from_slice(&ip[16..20]);
            ETH_LEN + usize::from(ip[0] & 0x0f) * 4
        }
        ethertype::IPV6 => {
            let ip: [u8; 40] = ctx.load(ETH_LEN).ok()?;
            // Datagrams behind extension headers are not recorded: their answers are judged
            // by the rules, as before this recorder existed.
            if ip[6] != ipproto::UDP {
                return None;
            }
            key.family = 6;
            key.local.copy_from_slice(&ip[8..24]);
            key.remote.copy_from_slice(&ip[24..40]);
            ETH_LEN + 40
        }
        _ => return None,
    };
    let ports: [u8; 4] = ctx.load(l4).ok()?;
    key.lport = u16::from_be_bytes([ports[0], ports[1]]);
    key.rport = u16::from_be_bytes([ports[2], ports[3]]);
    Some(key)
}
