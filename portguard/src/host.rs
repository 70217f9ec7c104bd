//! This machine's addresses (getifaddrs): what "addressed to this host" means to the datapath.

use std::{collections::BTreeMap, ffi::CStr, io, net::IpAddr};

/// Addresses of this host, by kind.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Addresses {
    /// Unicast addresses on every interface except loopback.
    pub unicast: Vec<IpAddr>,
    /// IPv4 directed-broadcast addresses of those interfaces' subnets.
    pub broadcast: Vec<IpAddr>,
    /// Interface name -> whether it has a global (non-link-local, non-loopback) address.
    pub interfaces: BTreeMap<String, bool>,
}

/// Read the current addresses of this network namespace.
pub fn addresses() -> io::Result<Addresses> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&raw mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Addresses::default();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: a node of the list returned by getifaddrs.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        let loopback = ifa.ifa_flags & libc::IFF_LOOPBACK as u32 != 0;
        let (Some(addr), bcast) = (sockaddr(ifa.ifa_addr), sockaddr(ifa.ifa_ifu)) else {
            continue;
        };
        if loopback {
            continue;
        }
        let global = match addr {
            IpAddr::V4(_) => true,
            IpAddr::V6(v) => v.segments()[0] & 0xffc0 != 0xfe80,
        };
        *out.interfaces.entry(name).or_default() |= global;
        out.unicast.push(addr);
        if let (IpAddr::V4(_), Some(b @ IpAddr::V4(_))) = (addr, bcast)
            && ifa.ifa_flags & libc::IFF_BROADCAST as u32 != 0
        {
            out.broadcast.push(b);
        }
    }
    // SAFETY: freeing the list getifaddrs allocated, once.
    unsafe { libc::freeifaddrs(head) };
    out.unicast.sort();
    out.unicast.dedup();
    out.broadcast.sort();
    out.broadcast.dedup();
    Ok(out)
}

#[expect(
    clippy::cast_ptr_alignment,
    reason = "getifaddrs allocates each address as the struct its family names"
)]
fn sockaddr(sa: *const libc::sockaddr) -> Option<IpAddr> {
    if sa.is_null() {
        return None;
    }
    // SAFETY: a non-null sockaddr from getifaddrs; the family says which struct it is.
    unsafe {
        match i32::from((*sa).sa_family) {
            libc::AF_INET => {
                let s = &*sa.cast::<libc::sockaddr_in>();
                Some(IpAddr::from(u32::from_be(s.sin_addr.s_addr).to_be_bytes()))
            }
            libc::AF_INET6 => {
                let s = &*sa.cast::<libc::sockaddr_in6>();
                Some(IpAddr::from(s.sin6_addr.s6_addr))
            }
            _ => None,
        }
    }
}
