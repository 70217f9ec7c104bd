//! Bounds-checked parsing of a frame into `portguard_common::packet::Packet`.
//!
//! Mirrors `portguard_common::reference::parse` line for line; the differential test holds the
//! two to the same answers. All packet access goes through [`Hdr`], made by [`ptr_at`]'s bounds
//! check; every loop is bounded by a named limit; every offset is bounded before it is added to
//! the packet pointer.

use core::mem::size_of;

use aya_ebpf::programs::XdpContext;
use portguard_common::packet::{
    Cast, Family, Frag, Kind, L4Kind, Packet, ethertype,
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

/// `N` bytes of the frame, bounds-checked, read field by field with one BPF load each, at a
/// constant offset from the checked pointer.
///
/// Why loads in asm: Rust cannot express "a u16 at any alignment" as anything but an unaligned
/// read, which LLVM's BPF backend splits into byte loads, shifts and ors (and a 16-byte address
/// into a call to a byte-by-byte `memcpy`). The BPF load instruction itself takes any
/// alignment of packet memory (the verifier asks for alignment only under strict alignment,
/// which x86-64 does not use), so one instruction does what Rust would spell in ten. The
/// register holding the pointer is the one the bounds check was made on, so the verifier
/// proves every access from that check.
#[derive(Clone, Copy)]
struct Hdr<const N: usize>(*const u8);

/// One BPF load of `$ty` (`u8`, `u16`, `u32`, `u64`) at `$p + $off`, zero-extended to u64.
macro_rules! load {
    ($ty:literal, $p:expr, $off:expr) => {{
        let v: u64;
        // SAFETY: the caller's pointer covers `N` bytes (ptr_at checked them) and `$off`
        // plus the load's size is at most `N` (asserted at compile time by the caller).
        unsafe {
            core::arch::asm!(
                concat!("{v} = *(", $ty, " *)({p} + {off})"),
                v = out(reg) v,
                p = in(reg) $p,
                off = const $off,
                options(readonly, nostack, preserves_flags),
            );
        }
        v
    }};
}

impl<const N: usize> Hdr<N> {
    /// The `N` bytes at `off`, if the frame's first buffer holds them.
    #[inline(always)]
    fn at(ctx: &XdpContext, off: usize) -> Option<Self> {
        ptr_at::<[u8; N]>(ctx, off).map(|p| Hdr(p.cast()))
    }

    #[inline(always)]
    fn u8<const OFF: usize>(self) -> u8 {
        const { assert!(OFF < N) };
        load!("u8", self.0, OFF) as u8
    }

    /// A big-endian u16 (a port, an ethertype), in host order.
    #[inline(always)]
    fn be16<const OFF: usize>(self) -> u16 {
        const { assert!(OFF + 2 <= N) };
        u16::from_be(load!("u16", self.0, OFF) as u16)
    }

    /// Four bytes as they lie in the frame (an IPv4 address), as a native u32.
    #[inline(always)]
    fn raw32<const OFF: usize>(self) -> u32 {
        const { assert!(OFF + 4 <= N) };
        load!("u32", self.0, OFF) as u32
    }

    /// Eight bytes as they lie in the frame (half an IPv6 address), as a native u64.
    #[inline(always)]
    fn raw64<const OFF: usize>(self) -> u64 {
        const { assert!(OFF + 8 <= N) };
        load!("u64", self.0, OFF)
    }

    /// The IPv4 address at `OFF`, widened to a 16-byte address field.
    #[inline(always)]
    fn v4_addr<const OFF: usize>(self) -> [u8; 16] {
        addr([u64::from(self.raw32::<OFF>()), 0])
    }

    /// Two bytes as they lie in the frame, as a native u16.
    #[inline(always)]
    fn raw16<const OFF: usize>(self) -> u16 {
        const { assert!(OFF + 2 <= N) };
        load!("u16", self.0, OFF) as u16
    }
}

impl Hdr<{ ipv6::LEN }> {
    /// The source address of an IPv6 header.
    #[inline(always)]
    fn v6_src(self) -> [u8; 16] {
        addr([
            self.raw64::<{ ipv6::SRC }>(),
            self.raw64::<{ ipv6::SRC + 8 }>(),
        ])
    }

    /// The destination address of an IPv6 header.
    #[inline(always)]
    fn v6_dst(self) -> [u8; 16] {
        addr([
            self.raw64::<{ ipv6::DST }>(),
            self.raw64::<{ ipv6::DST + 8 }>(),
        ])
    }
}

/// Two u64 of address bytes (in frame order) as an address field: two stores, not sixteen.
#[inline(always)]
fn addr(halves: [u64; 2]) -> [u8; 16] {
    // SAFETY: [u64; 2] and [u8; 16] have the same size; every byte pattern is valid.
    unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>(halves) }
}

/// Parse the frame in `ctx` into `p` (which starts as `Packet::EMPTY`). Inlined: packet
/// pointers cannot cross into a BPF subprogram.
#[inline(always)]
pub(crate) fn parse(ctx: &XdpContext, p: &mut Packet) {
    let Some(eth) = Hdr::<{ eth::LEN }>::at(ctx, 0) else {
        if let Some(mac) = Hdr::<6>::at(ctx, eth::DST) {
            set_mac(p, mac.raw32::<0>(), mac.raw16::<4>());
        }
        return;
    };
    set_mac(
        p,
        eth.raw32::<{ eth::DST }>(),
        eth.raw16::<{ eth::DST + 4 }>(),
    );
    let mut proto = eth.be16::<{ eth::TYPE }>();
    let mut off = eth::LEN;
    for _ in 0..limits::MAX_VLAN_TAGS {
        if proto != ethertype::VLAN && proto != ethertype::QINQ {
            break;
        }
        let Some(tag) = Hdr::<{ vlan::LEN }>::at(ctx, off) else {
            return;
        };
        p.vlan = tag.be16::<{ vlan::TCI }>() & 0x0fff;
        proto = tag.be16::<{ vlan::TYPE }>();
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

/// The destination MAC, from its first four bytes and last two (as they lie in the frame), and
/// the link-layer class it gives (`packet::cast_of`, computed from the registers rather than
/// from bytes stored and read back).
#[inline(always)]
#[expect(
    clippy::cast_ptr_alignment,
    reason = "the field's alignment is asserted below, from the struct's layout"
)]
fn set_mac(p: &mut Packet, first4: u32, last2: u16) {
    let mac = p.dst_mac.as_mut_ptr();
    // SAFETY: `dst_mac` is 6 bytes at a 4-aligned offset of the 8-aligned Packet (asserted
    // below): a u32 and a u16 store fill it exactly, in frame order.
    unsafe {
        mac.cast::<u32>().write(first4);
        mac.add(4).cast::<u16>().write(last2);
    }
    p.cast = if first4 == u32::MAX && last2 == u16::MAX {
        Cast::Broadcast
    } else if first4.to_ne_bytes()[0] & 1 == 1 {
        Cast::Multicast
    } else {
        Cast::Unicast
    };
}

const _: () = assert!(core::mem::offset_of!(Packet, dst_mac) % 4 == 0);

#[inline(always)]
fn parse_v4(ctx: &XdpContext, off: usize, p: &mut Packet) {
    let Some(h) = Hdr::<{ ipv4::MIN_LEN }>::at(ctx, off) else {
        return;
    };
    let ver_ihl = h.u8::<{ ipv4::VER_IHL }>();
    if ver_ihl >> 4 != 4 {
        return;
    }
    p.dst = h.v4_addr::<{ ipv4::DST }>();
    p.dst_known = true;
    let ihl = (ver_ihl & 0x0f) as usize * 4;
    if ihl < ipv4::MIN_LEN || Hdr::<2>::at(ctx, off + ihl - 2).is_none() {
        return;
    }
    let frag_field = h.be16::<{ ipv4::FRAG }>();
    p.frag = if frag_field & ipv4::OFFSET_MASK != 0 {
        Frag::Later
    } else if frag_field & ipv4::MF != 0 {
        Frag::First
    } else {
        Frag::None
    };
    p.src = h.v4_addr::<{ ipv4::SRC }>();
    p.proto = h.u8::<{ ipv4::PROTO }>();
    p.frag_id = u32::from(h.be16::<{ ipv4::ID }>());
    finish_l4(ctx, off + ihl, p);
}

#[inline(always)]
fn parse_v6(ctx: &XdpContext, off: usize, p: &mut Packet) {
    let Some(h) = Hdr::<{ ipv6::LEN }>::at(ctx, off) else {
        return;
    };
    if h.u8::<{ ipv6::VER }>() >> 4 != 6 {
        return;
    }
    p.family = Family::V6;
    p.dst = h.v6_dst();
    p.dst_known = true;
    p.src = h.v6_src();
    p.proto = h.u8::<{ ipv6::NEXT }>();
    let mut off = off + ipv6::LEN;
    for _ in 0..limits::MAX_IPV6_EXT {
        match p.proto {
            ipproto::HOPOPTS | ipproto::ROUTING | ipproto::DSTOPTS => {
                let Some(ext) = Hdr::<2>::at(ctx, off) else {
                    return;
                };
                p.proto = ext.u8::<{ ipv6::EXT_NEXT }>();
                off += (ext.u8::<{ ipv6::EXT_LEN }>() as usize + 1) * 8;
                if off > limits::MAX_HDR_OFFSET {
                    p.kind = Kind::TooDeep;
                    return;
                }
            }
            ipproto::FRAGMENT => {
                let Some(fh) = Hdr::<{ ipv6::FRAG_LEN }>::at(ctx, off) else {
                    return;
                };
                p.proto = fh.u8::<{ ipv6::EXT_NEXT }>();
                p.frag_id = u32::from_be(fh.raw32::<{ ipv6::FRAG_ID }>());
                off += ipv6::FRAG_LEN;
                if off > limits::MAX_HDR_OFFSET {
                    p.kind = Kind::TooDeep;
                    return;
                }
                let fo = fh.be16::<{ ipv6::FRAG_OFFSET }>();
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
            let Some(h) = Hdr::<{ l4::TCP_LEN }>::at(ctx, off) else {
                return;
            };
            if h.u8::<{ l4::TCP_DOFF }>() >> 4 < 5 {
                return;
            }
            p.l4 = L4Kind::Ports;
            p.tcp_flags = h.u8::<{ l4::TCP_FLAGS }>();
            (p.sport, p.dport) = ports(h);
        }
        ipproto::UDP => {
            let Some(h) = Hdr::<{ l4::UDP_LEN }>::at(ctx, off) else {
                return;
            };
            p.l4 = L4Kind::Ports;
            (p.sport, p.dport) = ports(h);
        }
        ipproto::SCTP => {
            let Some(h) = Hdr::<{ l4::SCTP_LEN }>::at(ctx, off) else {
                return;
            };
            p.l4 = L4Kind::Ports;
            (p.sport, p.dport) = ports(h);
        }
        _ if icmp_here => {
            let Some(h) = Hdr::<{ icmp::LEN }>::at(ctx, off) else {
                return;
            };
            p.l4 = L4Kind::Icmp;
            p.icmp_type = h.u8::<{ icmp::TYPE }>();
            p.icmp_code = h.u8::<{ icmp::CODE }>();
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
            let Some(h) = Hdr::<{ ipv4::MIN_LEN }>::at(ctx, off) else {
                return;
            };
            let ver_ihl = h.u8::<{ ipv4::VER_IHL }>();
            let ihl = (ver_ihl & 0x0f) as usize * 4;
            if ver_ihl >> 4 != 4
                || ihl < ipv4::MIN_LEN
                || Hdr::<2>::at(ctx, off + ihl - 2).is_none()
            {
                return;
            }
            (
                h.u8::<{ ipv4::PROTO }>(),
                h.v4_addr::<{ ipv4::SRC }>(),
                h.v4_addr::<{ ipv4::DST }>(),
                off + ihl,
            )
        }
        Family::V6 => {
            let Some(h) = Hdr::<{ ipv6::LEN }>::at(ctx, off) else {
                return;
            };
            if h.u8::<{ ipv6::VER }>() >> 4 != 6 {
                return;
            }
            (
                h.u8::<{ ipv6::NEXT }>(),
                h.v6_src(),
                h.v6_dst(),
                off + ipv6::LEN,
            )
        }
    };
    let Some(quoted) = Hdr::<4>::at(ctx, l4_off) else {
        return;
    };
    if (proto != ipproto::TCP && proto != ipproto::UDP) || src != p.dst {
        return;
    }
    p.has_quote = true;
    p.quote_proto = proto;
    p.quote_remote = remote;
    // The quoted packet was sent by this host: its source port is ours.
    (p.quote_lport, p.quote_rport) = ports(quoted);
}

/// Source and destination port of a TCP, UDP or SCTP header (or the start of one).
#[inline(always)]
fn ports<const N: usize>(h: Hdr<N>) -> (u16, u16) {
    (h.be16::<{ l4::SPORT }>(), h.be16::<{ l4::DPORT }>())
}
