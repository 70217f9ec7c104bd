//! Raw sockets and the few packets the lab crafts itself: ICMP and `ICMPv6` messages of any type
//! (neighbour discovery with hop limit 255, MLD with 1, errors quoting a flow of the host), and
//! an SCTP INIT, which needs no kernel SCTP on either side.

use std::{
    io,
    net::{IpAddr, Ipv6Addr},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::Instant,
};

use portguard_common::packet::Family;

use super::expect::family_of;

/// Text carried by the lab's echo requests and other crafted messages.
const PAYLOAD: &[u8] = b"portguard lab";

/// A raw IP socket of one protocol.
#[derive(Debug)]
pub struct Raw {
    fd: OwnedFd,
    family: Family,
}

/// `sockaddr_in` / `sockaddr_in6` for `a`.
fn sockaddr(a: IpAddr, port: u16) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; all zeros is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match a {
        IpAddr::V4(v) => {
            // SAFETY: sockaddr_storage is large and aligned enough for any sockaddr.
            let sin = unsafe { &mut *(&raw mut ss).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = port.to_be();
            sin.sin_addr.s_addr = u32::from_ne_bytes(v.octets());
            size_of::<libc::sockaddr_in>()
        }
        IpAddr::V6(v) => {
            // SAFETY: as above.
            let sin6 = unsafe { &mut *(&raw mut ss).cast::<libc::sockaddr_in6>() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = port.to_be();
            sin6.sin6_addr.s6_addr = v.octets();
            size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

fn from_sockaddr(ss: &libc::sockaddr_storage) -> Option<IpAddr> {
    match i32::from(ss.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says this is a sockaddr_in.
            let sin = unsafe { &*std::ptr::from_ref(ss).cast::<libc::sockaddr_in>() };
            Some(IpAddr::from(
                u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
            ))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this is a sockaddr_in6.
            let sin6 = unsafe { &*std::ptr::from_ref(ss).cast::<libc::sockaddr_in6>() };
            Some(IpAddr::from(sin6.sin6_addr.s6_addr))
        }
        _ => None,
    }
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl Raw {
    /// A raw socket for IP protocol `proto` in the calling thread's network namespace.
    pub fn new(family: Family, proto: u8) -> io::Result<Raw> {
        let domain = if family == Family::V4 {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        // SAFETY: plain socket(2) call.
        let fd = unsafe {
            libc::socket(
                domain,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::c_int::from(proto),
            )
        };
        check(fd)?;
        // SAFETY: the kernel just returned this fd to us.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Raw { fd, family })
    }

    /// Send from this address.
    pub fn bind(&self, a: IpAddr) -> io::Result<()> {
        let (ss, len) = sockaddr(a, 0);
        // SAFETY: a valid sockaddr of `len` bytes.
        check(unsafe { libc::bind(self.fd.as_raw_fd(), (&raw const ss).cast(), len) })
    }

    /// TTL / unicast hop limit of what this socket sends.
    pub fn hops(&self, hops: i32) -> io::Result<()> {
        let (level, name) = if self.family == Family::V4 {
            (libc::IPPROTO_IP, libc::IP_TTL)
        } else {
            (libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS)
        };
        // SAFETY: an int option, passed by pointer with its size.
        check(unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                level,
                name,
                (&raw const hops).cast(),
                size_of::<i32>() as libc::socklen_t,
            )
        })
    }

    /// Send `buf` (the protocol's header and payload; the kernel adds the IP header) to `to`.
    pub fn send_to(&self, buf: &[u8], to: IpAddr) -> io::Result<()> {
        let (ss, len) = sockaddr(to, 0);
        // SAFETY: buffer and sockaddr valid for the given lengths.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                0,
                (&raw const ss).cast(),
                len,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Read packets until `deadline`; true as soon as `want(payload, from)` holds. The payload
    /// starts at the protocol header (the IPv4 header raw sockets deliver is skipped).
    pub fn wait_for(
        &self,
        deadline: Instant,
        mut want: impl FnMut(&[u8], IpAddr) -> bool,
    ) -> io::Result<bool> {
        let mut buf = vec![0u8; 2048];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = libc::c_int::try_from(left.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
            // SAFETY: one valid pollfd.
            let rc = unsafe { libc::poll(&raw mut pfd, 1, ms) };
            if rc < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if rc == 0 {
                continue;
            }
            // SAFETY: plain data, zero is valid.
            let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
            let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            // SAFETY: buffer and sockaddr valid for their lengths.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                    (&raw mut ss).cast(),
                    &raw mut len,
                )
            };
            let Ok(n) = usize::try_from(n) else {
                let e = io::Error::last_os_error();
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) {
                    continue;
                }
                return Err(e);
            };
            let Some(from) = from_sockaddr(&ss) else {
                continue;
            };
            let packet = &buf[..n];
            let payload = if self.family == Family::V4 {
                let ihl = usize::from(packet.first().copied().unwrap_or(0) & 0x0f) * 4;
                packet.get(ihl..).unwrap_or_default()
            } else {
                packet
            };
            if want(payload, from) {
                return Ok(true);
            }
        }
    }
}

/// The Internet checksum (RFC 1071).
#[must_use]
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// CRC-32C (Castagnoli), the SCTP checksum (RFC 9260 appendix A).
#[must_use]
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for b in data {
        crc ^= u32::from(*b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The payload of the lab's packets of portless IP protocols: recognisable, and meaningless to
/// the protocols' own handlers (an IGMP message of an unknown type, a VRRP packet of a wrong
/// version), which drop it after the raw socket has its copy.
pub const LAB_PAYLOAD: &[u8] = b"\xffportguard-lab\0";

/// An SCTP packet holding one INIT chunk from `sport` to `dport`.
#[must_use]
pub fn sctp_init(sport: u16, dport: u16) -> Vec<u8> {
    let mut p = Vec::with_capacity(32);
    p.extend(sport.to_be_bytes());
    p.extend(dport.to_be_bytes());
    // Verification tag 0, as every INIT carries; checksum filled in below.
    p.extend([0u8; 8]);
    // INIT: type 1, flags 0, length 20, initiate tag, a_rwnd, 1 stream each way, initial TSN.
    p.extend([1u8, 0]);
    p.extend(20u16.to_be_bytes());
    p.extend(0x7067_6c62u32.to_be_bytes());
    p.extend(65_535u32.to_be_bytes());
    p.extend(1u16.to_be_bytes());
    p.extend(1u16.to_be_bytes());
    p.extend(1u32.to_be_bytes());
    // The CRC goes in as the little-endian image of its value (RFC 9260 appendix A).
    let crc = crc32c(&p);
    p[8..12].copy_from_slice(&crc.to_le_bytes());
    p
}

/// Whether `payload` (from an SCTP raw socket) is an INIT to `dport`.
#[must_use]
pub fn is_sctp_init(payload: &[u8], dport: u16) -> bool {
    payload.len() >= 13 && payload[2..4] == dport.to_be_bytes() && payload[12] == 1
}

/// The IP protocol number of ICMP for `family`.
#[must_use]
pub fn icmp_proto(family: Family) -> u8 {
    if family == Family::V4 { 1 } else { 58 }
}

/// The echo request type of `family`, and its reply's.
#[must_use]
pub fn echo_types(family: Family) -> (u8, u8) {
    if family == Family::V4 {
        (8, 0)
    } else {
        (128, 129)
    }
}

/// The hop limit a message of this type must carry: 255 for neighbour discovery (RFC 4861
/// §6.1.2, receivers drop anything else), 1 for MLD (RFC 3810 §5), else the default.
#[must_use]
pub fn hop_limit(family: Family, ty: u8) -> Option<i32> {
    match (family, ty) {
        (Family::V6, 133..=137) => Some(255),
        (Family::V6, 130..=132 | 143) => Some(1),
        _ => None,
    }
}

/// The headers of a UDP datagram `from` -> `to` (port 40000 -> 9), as an ICMP error quotes it.
fn quote(from: IpAddr, to: IpAddr) -> Vec<u8> {
    let udp = [0x9c, 0x40, 0, 9, 0, 8, 0, 0];
    let mut q = if let (IpAddr::V4(f), IpAddr::V4(t)) = (from, to) {
        let mut h = vec![0x45, 0, 0, 28, 0x12, 0x34, 0x40, 0, 64, 17, 0, 0];
        h.extend(f.octets());
        h.extend(t.octets());
        let c = checksum(&h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        h
    } else {
        let mut h = vec![0x60, 0, 0, 0, 0, 8, 17, 64];
        h.extend(v6_of(from).octets());
        h.extend(v6_of(to).octets());
        h
    };
    q.extend(udp);
    q
}

fn v6_of(a: IpAddr) -> Ipv6Addr {
    match a {
        IpAddr::V6(v) => v,
        IpAddr::V4(v) => v.to_ipv6_mapped(),
    }
}

/// An ICMP (IPv4) or `ICMPv6` message of type `ty`, code `code`, sent by `sender` to `host`, with
/// the fields a receiver expects for that type. Errors quote a UDP datagram of `host` to
/// `sender`; echo requests carry `id`. IPv4 checksums are filled in; the kernel computes
/// `ICMPv6` checksums itself (it always does on raw `ICMPv6` sockets, RFC 3542 §3.1).
#[must_use]
pub fn icmp_message(ty: u8, code: u8, id: u16, sender: IpAddr, host: IpAddr) -> Vec<u8> {
    let family = family_of(host);
    let mut m = vec![ty, code, 0, 0];
    let addr = |a: IpAddr| match a {
        IpAddr::V4(v) => v.octets().to_vec(),
        IpAddr::V6(v) => v.octets().to_vec(),
    };
    match (family, ty) {
        (Family::V4, 8) | (Family::V6, 128) => {
            m.extend(id.to_be_bytes());
            m.extend(1u16.to_be_bytes());
            m.extend(PAYLOAD);
        }
        (Family::V4, 3 | 4 | 5 | 11 | 12) | (Family::V6, 1..=4) => {
            match (family, ty) {
                // Next-hop MTU / MTU 1500: not below the link's, so nothing changes on the host.
                (Family::V4, 3) => m.extend([0, 0, 0x05, 0xdc]),
                (Family::V6, 2) => m.extend(1500u32.to_be_bytes()),
                (Family::V4, 5) => m.extend(addr(sender)),
                _ => m.extend([0u8; 4]),
            }
            m.extend(quote(host, sender));
        }
        // Router solicitation: reserved; MLDv2 report: reserved and no records.
        (Family::V6, 133 | 143) => m.extend([0u8; 4]),
        // Router advertisement with router lifetime 0: not a default router.
        (Family::V6, 134) => m.extend([0u8; 12]),
        // Neighbour solicitation for the host's address.
        (Family::V6, 135) => {
            m.extend([0u8; 4]);
            m.extend(addr(host));
        }
        // Neighbour advertisement (override) for the sender's own address.
        (Family::V6, 136) => {
            m.extend([0x20, 0, 0, 0]);
            m.extend(addr(sender));
        }
        // Redirect: target and destination (ignored by hosts from non-link-local sources).
        (Family::V6, 137) => {
            m.extend([0u8; 4]);
            m.extend(addr(sender));
            m.extend(addr(sender));
        }
        // MLD general query.
        (Family::V6, 130) => m.extend([0u8; 20]),
        // MLDv1 report / done for ff02::16.
        (Family::V6, 131 | 132) => {
            m.extend([0u8; 4]);
            m.extend(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x16).octets());
        }
        _ => {
            m.extend([0u8; 4]);
            m.extend(PAYLOAD);
        }
    }
    if family == Family::V4 {
        let c = checksum(&m);
        m[2..4].copy_from_slice(&c.to_be_bytes());
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn checksum_of_a_message_with_its_checksum_is_zero() {
        let m = icmp_message(
            3,
            4,
            0,
            "198.18.9.99".parse().unwrap(),
            "198.18.2.1".parse().unwrap(),
        );
        assert_eq!(checksum(&m), 0);
        assert_eq!(m.len(), 8 + 28);
    }

    #[test]
    fn sctp_init_is_recognised() {
        let p = sctp_init(40000, 9899);
        assert_eq!(p.len(), 32);
        assert!(is_sctp_init(&p, 9899));
        assert!(!is_sctp_init(&p, 9898));
    }

    #[test]
    fn neighbour_solicitation_targets_the_host() {
        let host: IpAddr = "2001:db8:2::1".parse().unwrap();
        let m = icmp_message(135, 0, 0, "2001:db8:9::99".parse().unwrap(), host);
        assert_eq!(m.len(), 24);
        assert_eq!(
            m[8..],
            Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 1).octets()
        );
        assert_eq!(hop_limit(Family::V6, 135), Some(255));
    }
}
