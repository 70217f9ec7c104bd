//! The reference classifier: a slice-based parser and an [`Env`] over in-memory tables.
//!
//! It makes exactly the decision the XDP program makes, because the decision itself is the shared
//! [`classify`]; what it re-implements is only the parser (over `&[u8]` instead of packet
//! pointers) and the map lookups (over `std` collections holding the same compiled tables). The
//! differential test runs both on the same frames and tables.

use std::{
    cell::RefCell,
    collections::{HashMap, HashSet},
    vec::Vec,
};

use crate::{
    classify::{Env, Outcome, classify},
    config::Config,
    maps::FragKey,
    packet::{
        Family, Frag, Kind, L4Kind, Packet, cast_of, ethertype, icmp_is_error, ipproto, limits,
    },
    tables::Tables,
};

/// A socket tuple the reference environment pretends this host owns:
/// (family, proto, remote, remote port, local, local port).
pub type OwnedFlow = (Family, u8, [u8; 16], u16, [u8; 16], u16);

/// An [`Env`] over [`Tables`] plus the host state the kernel would supply.
#[derive(Debug)]
pub struct RefEnv<'a> {
    tables: &'a Tables,
    /// (prefix length, masked address) -> class, per family.
    lpm: [HashMap<(u8, [u8; 16]), u32>; 2],
    /// This host's addresses -> `LOCAL_UNICAST` / `LOCAL_BROADCAST`.
    pub local: HashMap<(Family, [u8; 16]), u32>,
    /// Connected sockets of this host.
    pub sockets: HashSet<OwnedFlow>,
    /// MAC addresses of this host's interfaces.
    pub host_macs: HashSet<[u8; 6]>,
    /// Destinations the kernel would forward (prefix, length) rather than deliver or drop: the
    /// routes of a host that routes. Empty: every address is the host's or nobody's.
    pub forwarded: Vec<(Family, [u8; 16], u8)>,
    /// First fragments that passed, with their verdicts.
    pub frags: RefCell<HashMap<FragKey, u32>>,
}

fn mask(addr: &[u8; 16], len: u8) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (i, b) in addr.iter().enumerate() {
        let bits = (len as usize).saturating_sub(i * 8).min(8);
        out[i] = if bits == 0 {
            0
        } else {
            b & (0xffu8 << (8 - bits))
        };
    }
    out
}

fn widen(v4: [u8; 4]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..4].copy_from_slice(&v4);
    out
}

impl<'a> RefEnv<'a> {
    /// An environment with no local addresses, sockets or fragments yet.
    #[must_use]
    pub fn new(tables: &'a Tables) -> Self {
        let mut lpm = [HashMap::new(), HashMap::new()];
        for (p, len, class) in &tables.src_v4 {
            lpm[0].insert((*len, mask(&widen(*p), *len)), *class);
        }
        for (p, len, class) in &tables.src_v6 {
            lpm[1].insert((*len, mask(p, *len)), *class);
        }
        RefEnv {
            tables,
            lpm,
            local: HashMap::new(),
            sockets: HashSet::new(),
            host_macs: HashSet::new(),
            forwarded: Vec::new(),
            frags: RefCell::default(),
        }
    }

    /// Parse and classify one frame.
    pub fn judge(&self, frame: &[u8]) -> Outcome {
        classify(self, &parse(frame))
    }
}

impl Env for RefEnv<'_> {
    fn config(&self) -> &Config {
        &self.tables.config
    }

    fn local(&self, family: Family, addr: &[u8; 16]) -> Option<u32> {
        self.local.get(&(family, *addr)).copied()
    }

    fn src_class(&self, family: Family, addr: &[u8; 16]) -> u32 {
        let (table, max) = match family {
            Family::V4 => (&self.lpm[0], 32u8),
            Family::V6 => (&self.lpm[1], 128u8),
        };
        (0..=max)
            .rev()
            .find_map(|len| table.get(&(len, mask(addr, len))).copied())
            .unwrap_or(0)
    }

    fn port_class(&self, index: u32) -> u32 {
        self.tables
            .ports
            .get(index as usize)
            .map_or(0, |c| u32::from(*c))
    }

    fn decision(&self, index: u32) -> u32 {
        self.tables
            .decisions
            .get(index as usize)
            .copied()
            .unwrap_or(0)
    }

    fn host_mac(&self, mac: &[u8; 6]) -> bool {
        self.host_macs.contains(mac)
    }

    fn fib_local(&self, p: &Packet) -> bool {
        !self
            .forwarded
            .iter()
            .any(|(f, net, len)| *f == p.family && mask(&p.dst, *len) == mask(net, *len))
    }

    fn frag_get(&self, key: &FragKey) -> Option<u32> {
        self.frags.borrow().get(key).copied()
    }

    fn frag_put(&self, key: &FragKey, verdict: u32) {
        self.frags.borrow_mut().insert(*key, verdict);
    }

    fn owns_flow(&self, p: &Packet) -> bool {
        self.sockets
            .contains(&(p.family, p.proto, p.src, p.sport, p.dst, p.dport))
    }

    fn owns_quoted(&self, p: &Packet) -> bool {
        self.sockets.contains(&(
            p.family,
            p.quote_proto,
            p.quote_remote,
            p.quote_rport,
            p.dst,
            p.quote_lport,
        ))
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes([
        *b.get(at)?,
        *b.get(at + 1)?,
        *b.get(at + 2)?,
        *b.get(at + 3)?,
    ]))
}

fn addr<const N: usize>(b: &[u8], at: usize) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..N].copy_from_slice(&b[at..at + N]);
    out
}

/// Parse a frame the way the XDP program does (`portguard-ebpf/src/parse.rs`).
#[must_use]
pub fn parse(f: &[u8]) -> Packet {
    let mut p = Packet::EMPTY;
    if f.len() < 6 {
        return p;
    }
    p.dst_mac = [f[0], f[1], f[2], f[3], f[4], f[5]];
    p.cast = cast_of(&p.dst_mac);
    if f.len() < 14 {
        return p;
    }
    let mut off = 14;
    let mut proto = be16(f, 12).unwrap_or(0);
    for _ in 0..limits::MAX_VLAN_TAGS {
        if proto != ethertype::VLAN && proto != ethertype::QINQ {
            break;
        }
        let (Some(tci), Some(next)) = (be16(f, off), be16(f, off + 2)) else {
            return p;
        };
        p.vlan = tci & 0x0fff;
        proto = next;
        off += 4;
    }
    match proto {
        ethertype::VLAN | ethertype::QINQ => p.kind = Kind::TooDeep,
        ethertype::ARP => p.kind = Kind::Arp,
        ethertype::IPV4 => parse_v4(f, off, &mut p),
        ethertype::IPV6 => parse_v6(f, off, &mut p),
        other => {
            p.kind = Kind::NonIp;
            p.ethertype = other;
        }
    }
    p
}

/// Leaves `p.kind` `Malformed` (or sets `TooDeep`) on failure; `Kind::Ip` on success.
fn parse_v4(f: &[u8], off: usize, p: &mut Packet) {
    if f.len() < off + 20 || f[off] >> 4 != 4 {
        return;
    }
    p.dst = addr::<4>(f, off + 16);
    p.dst_known = true;
    let ihl = (f[off] & 0x0f) as usize * 4;
    if ihl < 20 || f.len() < off + ihl {
        return;
    }
    let frag_field = be16(f, off + 6).unwrap_or(0);
    p.frag = if frag_field & 0x1fff != 0 {
        Frag::Later
    } else if frag_field & 0x2000 != 0 {
        Frag::First
    } else {
        Frag::None
    };
    p.src = addr::<4>(f, off + 12);
    p.proto = f[off + 9];
    p.frag_id = u32::from(be16(f, off + 4).unwrap_or(0));
    finish_l4(f, off + ihl, p);
}

fn parse_v6(f: &[u8], off: usize, p: &mut Packet) {
    if f.len() < off + 40 || f[off] >> 4 != 6 {
        return;
    }
    p.family = Family::V6;
    p.dst = addr::<16>(f, off + 24);
    p.dst_known = true;
    p.src = addr::<16>(f, off + 8);
    p.proto = f[off + 6];
    let mut off = off + 40;
    for _ in 0..limits::MAX_IPV6_EXT {
        match p.proto {
            ipproto::HOPOPTS | ipproto::ROUTING | ipproto::DSTOPTS => {
                let (Some(&nh), Some(&len)) = (f.get(off), f.get(off + 1)) else {
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
                let (Some(&nh), Some(fo), Some(id)) =
                    (f.get(off), be16(f, off + 2), be32(f, off + 4))
                else {
                    return;
                };
                p.proto = nh;
                p.frag_id = id;
                off += 8;
                if off > limits::MAX_HDR_OFFSET {
                    p.kind = Kind::TooDeep;
                    return;
                }
                if fo >> 3 != 0 {
                    p.frag = Frag::Later;
                    p.kind = Kind::Ip;
                    return;
                }
                if fo & 1 != 0 {
                    p.frag = Frag::First;
                }
            }
            _ => return finish_l4(f, off, p),
        }
    }
    if matches!(
        p.proto,
        ipproto::HOPOPTS | ipproto::ROUTING | ipproto::DSTOPTS | ipproto::FRAGMENT
    ) {
        p.kind = Kind::TooDeep;
        return;
    }
    finish_l4(f, off, p);
}

/// Read the upper-layer header at `off`; `Kind::Ip` unless it is truncated.
fn finish_l4(f: &[u8], off: usize, p: &mut Packet) {
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
            if f.len() < off + 20 || f[off + 12] >> 4 < 5 {
                return;
            }
            p.l4 = L4Kind::Ports;
            p.tcp_flags = f[off + 13];
        }
        ipproto::UDP | ipproto::SCTP => {
            let need = if p.proto == ipproto::UDP { 8 } else { 12 };
            if f.len() < off + need {
                return;
            }
            p.l4 = L4Kind::Ports;
        }
        _ if icmp_here => {
            if f.len() < off + 8 {
                return;
            }
            p.l4 = L4Kind::Icmp;
            p.icmp_type = f[off];
            p.icmp_code = f[off + 1];
            if icmp_is_error(p.family, p.icmp_type) {
                parse_quote(f, off + 8, p);
            }
        }
        _ => p.l4 = L4Kind::Other,
    }
    if p.l4 == L4Kind::Ports {
        p.sport = be16(f, off).unwrap_or(0);
        p.dport = be16(f, off + 2).unwrap_or(0);
    }
    p.kind = Kind::Ip;
}

/// The TCP/UDP flow quoted by an ICMP error, if it was sent from `p.dst` and is complete
/// enough to read ports.
fn parse_quote(f: &[u8], off: usize, p: &mut Packet) {
    let quoted = match p.family {
        Family::V4 => {
            let Some(&b0) = f.get(off) else { return };
            let ihl = (b0 & 0x0f) as usize * 4;
            if b0 >> 4 != 4 || ihl < 20 || f.len() < off + ihl {
                return;
            }
            (
                f[off + 9],
                addr::<4>(f, off + 12),
                addr::<4>(f, off + 16),
                off + ihl,
            )
        }
        Family::V6 => {
            if f.len() < off + 40 || f[off] >> 4 != 6 {
                return;
            }
            (
                f[off + 6],
                addr::<16>(f, off + 8),
                addr::<16>(f, off + 24),
                off + 40,
            )
        }
    };
    let (proto, src, remote, l4) = quoted;
    let (Some(lport), Some(rport)) = (be16(f, l4), be16(f, l4 + 2)) else {
        return;
    };
    if (proto != ipproto::TCP && proto != ipproto::UDP) || src != p.dst {
        return;
    }
    p.has_quote = true;
    p.quote_proto = proto;
    p.quote_remote = remote;
    p.quote_lport = lport;
    p.quote_rport = rport;
}
