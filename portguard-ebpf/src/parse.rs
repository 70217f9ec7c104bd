//! Bounds-checked parsing of a frame into `portguard_common::packet::Parsed`.
//!
//! Mirrors `portguard_common::reference::parse` line for line; the differential test holds the
//! two to the same answers. All packet access goes through [`ptr_at`]; every loop is bounded by a
//! named limit; every offset is bounded before it is added to the packet pointer.

use core::mem::size_of;

use aya_ebpf::programs::XdpContext;
use portguard_common::packet::{
    Family, Frag, Kind, L4Kind, Packet, cast_of, ethertype, icmp_is_error, ipproto, limits,
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
    let Some(eth) = ptr_at::<[u8; 14]>(ctx, 0).map(|h| unsafe { h.read_unaligned() }) else {
        if let Some(mac) = ptr_at::<[u8; 6]>(ctx, 0) {
            // SAFETY: checked above.
            p.cast = cast_of(&unsafe { mac.read_unaligned() });
        }
        return;
    };
    p.cast = cast_of(&[eth[0], eth[1], eth[2], eth[3], eth[4], eth[5]]);
    let mut proto = u16::from_be_bytes([eth[12], eth[13]]);
    let mut off = 14usize;
    for _ in 0..limits::MAX_VLAN_TAGS {
        if proto != ethertype::VLAN && proto != ethertype::QINQ {
            break;
        }
        let Some(tag) = ptr_at::<[u8; 4]>(ctx, off) else {
            return;
        };
        // SAFETY: checked by ptr_at.
        let tag = unsafe { tag.read_unaligned() };
        p.vlan = u16::from_be_bytes([tag[0], tag[1]]) & 0x0fff;
        proto = u16::from_be_bytes([tag[2], tag[3]]);
        off += 4;
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
    let Some(h) = ptr_at::<[u8; 20]>(ctx, off) else {
        return;
    };
    // SAFETY: checked by ptr_at.
    let h = unsafe { &*h };
    if h[0] >> 4 != 4 {
        return;
    }
    p.dst = [
        h[16], h[17], h[18], h[19], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    p.dst_known = true;
    let ihl = (h[0] & 0x0f) as usize * 4;
    if ihl < 20 || pair_at(ctx, off + ihl - 2).is_none() {
        return;
    }
    let frag_field = u16::from_be_bytes([h[6], h[7]]);
    p.frag = if frag_field & 0x1fff != 0 {
        Frag::Later
    } else if frag_field & 0x2000 != 0 {
        Frag::First
    } else {
        Frag::None
    };
    p.src = [
        h[12], h[13], h[14], h[15], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    p.proto = h[9];
    p.frag_id = u32::from(u16::from_be_bytes([h[4], h[5]]));
    finish_l4(ctx, off + ihl, p);
}

#[inline(always)]
fn parse_v6(ctx: &XdpContext, off: usize, p: &mut Packet) {
    let Some(h) = ptr_at::<[u8; 40]>(ctx, off) else {
        return;
    };
    // SAFETY: checked by ptr_at.
    let h = unsafe { &*h };
    if h[0] >> 4 != 6 {
        return;
    }
    p.family = Family::V6;
    // SAFETY: inside the 40 checked bytes.
    p.dst = unsafe { ptr_at::<[u8; 16]>(ctx, off + 24).map_or([0; 16], |a| a.read_unaligned()) };
    p.dst_known = true;
    // SAFETY: as above.
    p.src = unsafe { ptr_at::<[u8; 16]>(ctx, off + 8).map_or([0; 16], |a| a.read_unaligned()) };
    p.proto = h[6];
    let mut off = off + 40;
    for _ in 0..limits::MAX_IPV6_EXT {
        match p.proto {
            ipproto::HOPOPTS | ipproto::ROUTING | ipproto::DSTOPTS => {
                let Some([nh, len]) = pair_at(ctx, off) else {
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
                let Some(fh) = ptr_at::<[u8; 8]>(ctx, off) else {
                    return;
                };
                // SAFETY: checked by ptr_at.
                let fh = unsafe { fh.read_unaligned() };
                p.proto = fh[0];
                p.frag_id = u32::from_be_bytes([fh[4], fh[5], fh[6], fh[7]]);
                off += 8;
                if off > limits::MAX_HDR_OFFSET {
                    p.kind = Kind::TooDeep;
                    return;
                }
                let fo = u16::from_be_bytes([fh[2], fh[3]]);
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
            let Some(h) = ptr_at::<[u8; 20]>(ctx, off) else {
                return;
            };
            // SAFETY: checked by ptr_at.
            let h = unsafe { &*h };
            if h[12] >> 4 < 5 {
                return;
            }
            p.l4 = L4Kind::Ports;
            p.tcp_flags = h[13];
            p.sport = u16::from_be_bytes([h[0], h[1]]);
            p.dport = u16::from_be_bytes([h[2], h[3]]);
        }
        ipproto::UDP => {
            let Some(h) = ptr_at::<[u8; 8]>(ctx, off) else {
                return;
            };
            // SAFETY: checked by ptr_at.
            let h = unsafe { h.read_unaligned() };
            p.l4 = L4Kind::Ports;
            p.sport = u16::from_be_bytes([h[0], h[1]]);
            p.dport = u16::from_be_bytes([h[2], h[3]]);
        }
        ipproto::SCTP => {
            let Some(h) = ptr_at::<[u8; 12]>(ctx, off) else {
                return;
            };
            // SAFETY: checked by ptr_at.
            let h = unsafe { h.read_unaligned() };
            p.l4 = L4Kind::Ports;
            p.sport = u16::from_be_bytes([h[0], h[1]]);
            p.dport = u16::from_be_bytes([h[2], h[3]]);
        }
        _ if icmp_here => {
            let Some(h) = ptr_at::<[u8; 8]>(ctx, off) else {
                return;
            };
            // SAFETY: checked by ptr_at.
            let h = unsafe { h.read_unaligned() };
            p.l4 = L4Kind::Icmp;
            p.icmp_type = h[0];
            p.icmp_code = h[1];
            if icmp_is_error(p.family, p.icmp_type) {
                parse_quote(ctx, off + 8, p);
            }
        }
        _ => p.l4 = L4Kind::Other,
    }
    p.kind = Kind::Ip;
}

/// The quoted TCP/UDP flow of an ICMP error, when it was sent from `p.dst`.
#[inline(always)]
fn parse_quote(ctx: &XdpContext, off: usize, p: &mut Packet) {
    let (proto, src, remote, l4) = match p.family {
        Family::V4 => {
            let Some(h) = ptr_at::<[u8; 20]>(ctx, off) else {
                return;
            };
            // SAFETY: checked by ptr_at.
            let h = unsafe { &*h };
            let ihl = (h[0] & 0x0f) as usize * 4;
            if h[0] >> 4 != 4 || ihl < 20 || pair_at(ctx, off + ihl - 2).is_none() {
                return;
            }
            let w = |a: usize| {
                [
                    h[a],
                    h[a + 1],
                    h[a + 2],
                    h[a + 3],
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                ]
            };
            (h[9], w(12), w(16), off + ihl)
        }
        Family::V6 => {
            let Some(h) = ptr_at::<[u8; 40]>(ctx, off) else {
                return;
            };
            // SAFETY: checked by ptr_at.
            let h = unsafe { &*h };
            if h[0] >> 4 != 6 {
                return;
            }
            // SAFETY: inside the 40 checked bytes.
            let (src, remote) = unsafe {
                (
                    ptr_at::<[u8; 16]>(ctx, off + 8).map_or([0; 16], |a| a.read_unaligned()),
                    ptr_at::<[u8; 16]>(ctx, off + 24).map_or([0; 16], |a| a.read_unaligned()),
                )
            };
            (h[6], src, remote, off + 40)
        }
    };
    let Some(ports) = ptr_at::<[u8; 4]>(ctx, l4) else {
        return;
    };
    // SAFETY: checked by ptr_at.
    let ports = unsafe { ports.read_unaligned() };
    if (proto != ipproto::TCP && proto != ipproto::UDP) || src != p.dst {
        return;
    }
    p.has_quote = true;
    p.quote_proto = proto;
    p.quote_remote = remote;
    p.quote_lport = u16::from_be_bytes([ports[0], ports[1]]);
    p.quote_rport = u16::from_be_bytes([ports[2], ports[3]]);
}
