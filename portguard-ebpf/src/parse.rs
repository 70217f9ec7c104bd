//! Bounds-checked parsing of a frame into `portguard_common::packet::Packet`.
//!
//! Mirrors `portguard_common::reference::parse` line for line; the differential test holds the
//! two to the same answers. All packet access goes through [`ptr_at`]; every loop is bounded by a
//! named limit; every offset is bounded before it is added to the packet pointer.

use core::mem::size_of;

use aya_ebpf::programs::XdpContext;
use portguard_common::packet::{
    Family, Frag, Kind, L4Kind, Packet, cast_of, ethertype,
    hdr::{eth, icmp, ipv4, ipv6, l4, vlan},
    icmp_is_error, ipproto, limits,
};

/// A pointer to a `T` at `offset` in the frame's first buffer, if the whole `T` is inside it.
#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*const T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if offset > limits::MAX_HDR_OFFSET + 128 {
        return None;
    }
    let mut p = start + offset;
    // Make the pointer opaque to LLVM (libbpf's `barrier_var`): otherwise it re-derives the
    // pointer for the bounds check and for the access in different ways (`pkt + (off + n)` vs
    // `(pkt + n) + off`), and the verifier, which tracks ranges per derivation, cannot connect
    // the two. The asm is one register move (an empty one would leave a zero-length line-info
    // entry, which the kernel rejects) and keeps the value in a register: no stack slot to reuse.
    // SAFETY: a register-to-itself move; the value is passed through unchanged.
    unsafe {
        core::arch::asm!("{0} = {0}", inout(reg) p, options(nomem, nostack, preserves_flags));
    };
    if p + size_of::<T>() > end {
        return None;
    }
    Some(p as *const T)
}

/// Two bytes at `off`. There is deliberately no one-byte reader: LLVM folds a one-byte bounds
/// check `p + 1 > end` into `p >= end`, which the verifier cannot use to prove the access. Every
/// byte the parser needs sits inside a header at least two bytes longer, so reading pairs
/// changes no verdict (the reference parser reads single bytes; the differential test checks).
#[inline(always)]
fn pair_at(ctx: &XdpContext, off: usize) -> Option<[u8; 2]> {
    // SAFETY: ptr_at checked bounds; read_unaligned because headers are not aligned.
    ptr_at::<[u8; 2]>(ctx, off).map(|p| unsafe { p.read_unaligned() })
}

/// Parse the frame in `ctx` into `p` (which starts as `Packet::EMPTY`). Inlined: packet
/// pointers cannot cross into a BPF subprogram.
#[inline(always)]
pub(crate) fn parse(ctx: &XdpContext, p: &mut Packet) {
    // SAFETY: ptr_at checked that 14 bytes are there.
    let Some(eth) = ptr_at::<[u8; eth::LEN]>(ctx, 0).map(|h| unsafe { h.read_unaligned() }) else {
        if let Some(mac) = ptr_at::<[u8; 6]>(ctx, eth::DST) {
            // SAFETY: checked above.
            p.dst_mac = unsafe { mac.read_unaligned() };
            p.cast = cast_of(&p.dst_mac);
        }
        return;
    };
    let d = eth::DST;
    p.dst_mac = [
        eth[d],
        eth[d + 1],
        eth[d + 2],
        eth[d + 3],
        eth[d + 4],
        eth[d + 5],
    ];
    p.cast = cast_of(&p.dst_mac);
    let mut proto = u16::from_be_bytes([eth[eth::TYPE], eth[eth::TYPE + 1]]);
    let mut off = eth::LEN;
    for _ in 0..limits::MAX_VLAN_TAGS {
        if proto != ethertype::VLAN && proto != ethertype::QINQ {
            break;
        }
        let Some(tag) = ptr_at::<[u8; vlan::LEN]>(ctx, off) else {
            return;
        };
        // SAFETY: checked by ptr_at.
        let tag = unsafe { tag.read_unaligned() };
        p.vlan = u16::from_be_bytes([tag[vlan::TCI], tag[vlan::TCI + 1]]) & 0x0fff;
        proto = u16::from_be_bytes([tag[vlan::TYPE], tag[vlan::TYPE + 1]]);
        off += vlan::LEN;
    }
    match proto {
        ethertype::VLAN | ethertype::QINQ => p.kind = Kind::TooDeep,
        ethertype::ARP => p.kind = Kind::Arp,
        ethertype::IPV4 => parse_v4(ctx, off, p),
        ethertype::IPV6 => parse_v6(ctx, off, p),
        other => {
            p.kind = Kind::NonIp;
            p.ethertype = other;
        }
    }
}

#[inline(always)]
fn parse_v4(ctx: &XdpContext, off: usize, p: &mut Packet) {
    let Some(h) = ptr_at::<[u8; ipv4::MIN_LEN]>(ctx, off) else {
        return;
    };
    // SAFETY: checked by ptr_at.
    let h = unsafe { &*h };
    if h[ipv4::VER_IHL] >> 4 != 4 {
        return;
    }
    p.dst = widen_v4(h, ipv4::DST);
    p.dst_known = true;
    let ihl = (h[ipv4::VER_IHL] & 0x0f) as usize * 4;
    if ihl < ipv4::MIN_LEN || pair_at(ctx, off + ihl - 2).is_none() {
        return;
    }
    let frag_field = u16::from_be_bytes([h[ipv4::FRAG], h[ipv4::FRAG + 1]]);
    p.frag = if frag_field & ipv4::OFFSET_MASK != 0 {
        Frag::Later
    } else if frag_field & ipv4::MF != 0 {
        Frag::First
    } else {
        Frag::None
    };
    p.src = widen_v4(h, ipv4::SRC);
    p.proto = h[ipv4::PROTO];
    p.frag_id = u32::from(u16::from_be_bytes([h[ipv4::ID], h[ipv4::ID + 1]]));
    finish_l4(ctx, off + ihl, p);
}

#[inline(always)]
fn parse_v6(ctx: &XdpContext, off: usize, p: &mut Packet) {
    let Some(h) = ptr_at::<[u8; ipv6::LEN]>(ctx, off) else {
        return;
    };
    // SAFETY: checked by ptr_at.
    let h = unsafe { &*h };
    if h[ipv6::VER] >> 4 != 6 {
        return;
    }
    p.family = Family::V6;
    // SAFETY: inside the 40 checked bytes.
    p.dst =
        unsafe { ptr_at::<[u8; 16]>(ctx, off + ipv6::DST).map_or([0; 16], |a| a.read_unaligned()) };
    p.dst_known = true;
    // SAFETY: as above.
    p.src =
        unsafe { ptr_at::<[u8; 16]>(ctx, off + ipv6::SRC).map_or([0; 16], |a| a.read_unaligned()) };
    p.proto = h[ipv6::NEXT];
    let mut off = off + ipv6::LEN;
    for _ in 0..limits::MAX_IPV6_EXT {
        match p.proto {
            ipproto::HOPOPTS | ipproto::ROUTING | ipproto::DSTOPTS => {
                // Next header and length are the first two bytes (`ipv6::EXT_NEXT`, `EXT_LEN`).
                let Some([nh, len]) = pair_at(ctx, off + ipv6::EXT_NEXT) else {
                    return;
                };
                p.proto = nh;
                off += (len as usize + 1) * 8;
                if off > limits::MAX_HDR_OFFSET {
                    p.kind = Kind::TooDeep;
                    return;
                }
            }
            ipproto::FRAGMENT => {
                let Some(fh) = ptr_at::<[u8; ipv6::FRAG_LEN]>(ctx, off) else {
                    return;
                };
                // SAFETY: checked by ptr_at.
                let fh = unsafe { fh.read_unaligned() };
                let id = ipv6::FRAG_ID;
                p.proto = fh[ipv6::EXT_NEXT];
                p.frag_id = u32::from_be_bytes([fh[id], fh[id + 1], fh[id + 2], fh[id + 3]]);
                off += ipv6::FRAG_LEN;
                if off > limits::MAX_HDR_OFFSET {
                    p.kind = Kind::TooDeep;
                    return;
                }
                let fo = u16::from_be_bytes([fh[ipv6::FRAG_OFFSET], fh[ipv6::FRAG_OFFSET + 1]]);
                if fo >> 3 != 0 {
                    p.frag = Frag::Later;
                    p.kind = Kind::Ip;
                    return;
                }
                if fo & 1 != 0 {
                    p.frag = Frag::First;
                }
            }
            _ => return finish_l4(ctx, off, p),
        }
    }
    if matches!(
        p.proto,
        ipproto::HOPOPTS | ipproto::ROUTING | ipproto::DSTOPTS | ipproto::FRAGMENT
    ) {
        p.kind = Kind::TooDeep;
        return;
    }
    finish_l4(ctx, off, p);
}

#[inline(always)]
fn finish_l4(ctx: &XdpContext, off: usize, p: &mut Packet) {
    if p.frag == Frag::Later {
        p.kind = Kind::Ip;
        return;
    }
    let icmp_here = match p.family {
        Family::V4 => p.proto == ipproto::ICMP,
        Family::V6 => p.proto == ipproto::ICMPV6,
    };
    match p.proto {
        ipproto::TCP => {
            let Some(h) = ptr_at::<[u8; l4::TCP_LEN]>(ctx, off) else {
                return;
            };
            // SAFETY: checked by ptr_at.
            let h = unsafe { &*h };
            if h[l4::TCP_DOFF] >> 4 < 5 {
                return;
            }
            p.l4 = L4Kind::Ports;
            p.tcp_flags = h[l4::TCP_FLAGS];
            (p.sport, p.dport) = ports(h);
        }
        ipproto::UDP => {
            let Some(h) = ptr_at::<[u8; l4::UDP_LEN]>(ctx, off) else {
                return;
            };
            // SAFETY: checked by ptr_at.
            let h = unsafe { h.read_unaligned() };
            p.l4 = L4Kind::Ports;
            (p.sport, p.dport) = ports(&h);
        }
        ipproto::SCTP => {
            let Some(h) = ptr_at::<[u8; l4::SCTP_LEN]>(ctx, off) else {
                return;
            };
            // SAFETY: checked by ptr_at.
            let h = unsafe { h.read_unaligned() };
            p.l4 = L4Kind::Ports;
            (p.sport, p.dport) = ports(&h);
        }
        _ if icmp_here => {
            let Some(h) = ptr_at::<[u8; icmp::LEN]>(ctx, off) else {
                return;
            };
            // SAFETY: checked by ptr_at.
            let h = unsafe { h.read_unaligned() };
            p.l4 = L4Kind::Icmp;
            p.icmp_type = h[icmp::TYPE];
            p.icmp_code = h[icmp::CODE];
            if icmp_is_error(p.family, p.icmp_type) {
                parse_quote(ctx, off + icmp::LEN, p);
            }
        }
        _ => p.l4 = L4Kind::Other,
    }
    p.kind = Kind::Ip;
}

/// The quoted TCP/UDP flow of an ICMP error, when it was sent from `p.dst`.
#[inline(always)]
fn parse_quote(ctx: &XdpContext, off: usize, p: &mut Packet) {
    let (proto, src, remote, l4_off) = match p.family {
        Family::V4 => {
            let Some(h) = ptr_at::<[u8; ipv4::MIN_LEN]>(ctx, off) else {
                return;
            };
            // SAFETY: checked by ptr_at.
            let h = unsafe { &*h };
            let ihl = (h[ipv4::VER_IHL] & 0x0f) as usize * 4;
            if h[ipv4::VER_IHL] >> 4 != 4
                || ihl < ipv4::MIN_LEN
                || pair_at(ctx, off + ihl - 2).is_none()
            {
                return;
            }
            (
                h[ipv4::PROTO],
                widen_v4(h, ipv4::SRC),
                widen_v4(h, ipv4::DST),
                off + ihl,
            )
        }
        Family::V6 => {
            let Some(h) = ptr_at::<[u8; ipv6::LEN]>(ctx, off) else {
                return;
            };
            // SAFETY: checked by ptr_at.
            let h = unsafe { &*h };
            if h[ipv6::VER] >> 4 != 6 {
                return;
            }
            // SAFETY: inside the 40 checked bytes.
            let (src, remote) = unsafe {
                (
                    ptr_at::<[u8; 16]>(ctx, off + ipv6::SRC)
                        .map_or([0; 16], |a| a.read_unaligned()),
                    ptr_at::<[u8; 16]>(ctx, off + ipv6::DST)
                        .map_or([0; 16], |a| a.read_unaligned()),
                )
            };
            (h[ipv6::NEXT], src, remote, off + ipv6::LEN)
        }
    };
    let Some(quoted) = ptr_at::<[u8; 4]>(ctx, l4_off) else {
        return;
    };
    // SAFETY: checked by ptr_at.
    let quoted = unsafe { quoted.read_unaligned() };
    if (proto != ipproto::TCP && proto != ipproto::UDP) || src != p.dst {
        return;
    }
    p.has_quote = true;
    p.quote_proto = proto;
    p.quote_remote = remote;
    // The quoted packet was sent by this host: its source port is ours.
    (p.quote_lport, p.quote_rport) = ports(&quoted);
}

/// Source and destination port of a TCP, UDP or SCTP header (or the start of one).
#[inline(always)]
fn ports<const N: usize>(h: &[u8; N]) -> (u16, u16) {
    (
        u16::from_be_bytes([h[l4::SPORT], h[l4::SPORT + 1]]),
        u16::from_be_bytes([h[l4::DPORT], h[l4::DPORT + 1]]),
    )
}

/// The IPv4 address at `at` in `h`, in the first four bytes of a 16-byte address field.
#[inline(always)]
fn widen_v4(h: &[u8; ipv4::MIN_LEN], at: usize) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[0] = h[at];
    a[1] = h[at + 1];
    a[2] = h[at + 2];
    a[3] = h[at + 3];
    a
}
