//! Crafting frames for `BPF_PROG_TEST_RUN`: Ethernet, VLAN tags, IPv4 (with options), IPv6 (with
//! extension headers), TCP/UDP/SCTP/ICMP. Checksums are left zero: XDP verdicts do not read them.

/// An upper-layer header to put in a frame.
#[derive(Clone, Debug)]
pub enum L4 {
    /// TCP with ports and flags.
    Tcp { sport: u16, dport: u16, flags: u8 },
    /// UDP with ports.
    Udp { sport: u16, dport: u16 },
    /// SCTP common header.
    Sctp { sport: u16, dport: u16 },
    /// ICMP / `ICMPv6` (by family) with type, code, and a quoted packet for errors.
    Icmp { ty: u8, code: u8, quote: Vec<u8> },
    /// Raw bytes with an explicit protocol number.
    Raw { proto: u8, bytes: Vec<u8> },
}

/// The source port of the segments and datagrams [`tcp`] and [`udp`] build.
pub const SPORT: u16 = 40_000;

/// A TCP SYN from [`SPORT`] to `dport`.
#[must_use]
pub fn tcp(dport: u16) -> L4 {
    L4::syn(SPORT, dport)
}

/// A UDP datagram from [`SPORT`] to `dport`.
#[must_use]
pub fn udp(dport: u16) -> L4 {
    L4::Udp {
        sport: SPORT,
        dport,
    }
}

impl L4 {
    /// A TCP SYN from `sport` to `dport`.
    #[must_use]
    pub fn syn(sport: u16, dport: u16) -> Self {
        L4::Tcp {
            sport,
            dport,
            flags: 0x02,
        }
    }

    fn proto(&self, v6: bool) -> u8 {
        match self {
            L4::Tcp { .. } => 6,
            L4::Udp { .. } => 17,
            L4::Sctp { .. } => 132,
            L4::Icmp { .. } => {
                if v6 {
                    58
                } else {
                    1
                }
            }
            L4::Raw { proto, .. } => *proto,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        match self {
            L4::Tcp {
                sport,
                dport,
                flags,
            } => {
                let mut b = vec![0u8; 20];
                b[0..2].copy_from_slice(&sport.to_be_bytes());
                b[2..4].copy_from_slice(&dport.to_be_bytes());
                b[12] = 5 << 4;
                b[13] = *flags;
                b
            }
            L4::Udp { sport, dport } => {
                let mut b = vec![0u8; 8];
                b[0..2].copy_from_slice(&sport.to_be_bytes());
                b[2..4].copy_from_slice(&dport.to_be_bytes());
                b[4..6].copy_from_slice(&8u16.to_be_bytes());
                b
            }
            L4::Sctp { sport, dport } => {
                let mut b = vec![0u8; 12];
                b[0..2].copy_from_slice(&sport.to_be_bytes());
                b[2..4].copy_from_slice(&dport.to_be_bytes());
                b
            }
            L4::Icmp { ty, code, quote } => {
                let mut b = vec![*ty, *code, 0, 0, 0, 0, 0, 0];
                b.extend_from_slice(quote);
                b
            }
            L4::Raw { bytes, .. } => bytes.clone(),
        }
    }
}

/// A frame under construction.
#[derive(Clone, Debug)]
pub struct Frame {
    /// Destination MAC.
    pub dst_mac: [u8; 6],
    /// VLAN tags, outermost first: (TPID, VLAN id).
    pub vlans: Vec<(u16, u16)>,
    /// Source address (v4 or v6 by length 4/16).
    pub src: Vec<u8>,
    /// Destination address.
    pub dst: Vec<u8>,
    /// IPv4 options bytes (multiple of 4).
    pub v4_options: Vec<u8>,
    /// IPv6 extension headers: (type, body without the next-header byte; padded to 8n-1 by us).
    pub v6_ext: Vec<(u8, Vec<u8>)>,
    /// Fragment: (id, offset in 8-byte units, more fragments).
    pub frag: Option<(u32, u16, bool)>,
    /// Upper-layer header.
    pub l4: L4,
    /// Payload after the L4 header.
    pub payload: Vec<u8>,
}

impl Frame {
    /// A unicast IPv4 frame.
    #[must_use]
    pub fn v4(src: [u8; 4], dst: [u8; 4], l4: L4) -> Self {
        Frame {
            dst_mac: crate::HOST_MAC,
            vlans: vec![],
            src: src.to_vec(),
            dst: dst.to_vec(),
            v4_options: vec![],
            v6_ext: vec![],
            frag: None,
            l4,
            payload: vec![],
        }
    }

    /// A unicast IPv6 frame.
    #[must_use]
    pub fn v6(src: [u8; 16], dst: [u8; 16], l4: L4) -> Self {
        Frame {
            src: src.to_vec(),
            dst: dst.to_vec(),
            ..Frame::v4([0; 4], [0; 4], l4)
        }
    }

    /// Bytes of the frame.
    #[must_use]
    pub fn build(&self) -> Vec<u8> {
        let v6 = self.src.len() == 16;
        let mut f = Vec::with_capacity(128);
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 2]);
        for (tpid, vid) in &self.vlans {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&vid.to_be_bytes());
        }
        f.extend_from_slice(&(if v6 { 0x86ddu16 } else { 0x0800u16 }).to_be_bytes());
        let l4 = {
            let mut b = self.l4.bytes();
            b.extend_from_slice(&self.payload);
            b
        };
        let proto = self.l4.proto(v6);
        if v6 {
            // Chain: fixed header -> ext headers (in order) -> fragment header (last) -> l4.
            let mut chain: Vec<(u8, Vec<u8>)> = self.v6_ext.clone();
            if let Some((id, off, more)) = self.frag {
                let mut body = vec![0u8; 7];
                let fo = (off << 3) | u16::from(more);
                body[1..3].copy_from_slice(&fo.to_be_bytes());
                body[3..7].copy_from_slice(&id.to_be_bytes());
                chain.push((44, body));
            }
            let mut ext = Vec::new();
            for (i, (_, body)) in chain.iter().enumerate() {
                let next = chain.get(i + 1).map_or(proto, |(t, _)| *t);
                let mut h = vec![next];
                h.extend_from_slice(body);
                if chain[i].0 != 44 {
                    // Length in 8-octet units minus one, padded.
                    while (h.len() + 1) % 8 != 0 {
                        h.push(0);
                    }
                    h.insert(1, (((h.len() + 1) / 8) - 1) as u8);
                }
                ext.extend_from_slice(&h);
            }
            let first = chain.first().map_or(proto, |(t, _)| *t);
            let plen = (ext.len() + l4.len()) as u16;
            f.extend_from_slice(&[0x60, 0, 0, 0]);
            f.extend_from_slice(&plen.to_be_bytes());
            f.extend_from_slice(&[first, 64]);
            f.extend_from_slice(&self.src);
            f.extend_from_slice(&self.dst);
            f.extend_from_slice(&ext);
        } else {
            let ihl = 5 + self.v4_options.len() / 4;
            let total = (ihl * 4 + l4.len()) as u16;
            let (id, frag) = self.frag.map_or((0u16, 0u16), |(id, off, more)| {
                (id as u16, off | if more { 0x2000 } else { 0 })
            });
            f.push(0x40 | ihl as u8);
            f.push(0);
            f.extend_from_slice(&total.to_be_bytes());
            f.extend_from_slice(&id.to_be_bytes());
            f.extend_from_slice(&frag.to_be_bytes());
            f.extend_from_slice(&[64, proto, 0, 0]);
            f.extend_from_slice(&self.src);
            f.extend_from_slice(&self.dst);
            f.extend_from_slice(&self.v4_options);
        }
        f.extend_from_slice(&l4);
        f
    }
}

/// An ARP request frame.
#[must_use]
pub fn arp() -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 2, 0x08, 0x06]);
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&[0u8; 20]);
    f
}
