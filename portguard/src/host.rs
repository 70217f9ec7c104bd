//! This machine, as the kernel sees it: which addresses are local (the local routing table, the
//! authority the stack itself consults, so addresses on `lo`, `AnyIP` routes and broadcast
//! routes of addresses added without `brd` all count), the links and their MAC addresses, and
//! which program each link runs. Read over rtnetlink (`netlink-packet-route`).

use std::{
    collections::BTreeMap,
    ffi::CStr,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use ipnet::IpNet;
use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::{
    RouteNetlinkMessage,
    link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage, LinkXdp},
    route::{RouteAddress, RouteAttribute, RouteMessage, RouteType},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// The kernel's local routing table (`ip route show table local`).
const RT_TABLE_LOCAL: u8 = 255;

/// Addresses of this host, by kind.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Addresses {
    /// Every address the local routing table delivers locally (`local` routes of a single
    /// address), on any interface, `lo` included.
    pub unicast: Vec<IpAddr>,
    /// IPv4 broadcast addresses the local table accepts (`broadcast` routes).
    pub broadcast: Vec<IpAddr>,
    /// `local` routes of more than one address (`AnyIP`): the datapath asks the kernel's
    /// routing table for those, per packet, as for any address it does not hold.
    pub local_nets: Vec<IpNet>,
    /// Interface name -> whether it has a global (non-link-local, non-loopback) address.
    pub interfaces: BTreeMap<String, bool>,
}

/// One link of this network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Hardware address, when it is an Ethernet one.
    pub mac: Option<[u8; 6]>,
    /// `IFLA_INFO_KIND` (`bridge`, `bond`, `vlan`, `veth`, `macvtap`...), if any.
    pub kind: Option<String>,
    /// Id of the XDP program attached to it, if any.
    pub xdp_prog_id: Option<u32>,
    /// Its MTU.
    pub mtu: Option<u32>,
}

impl Link {
    /// Whether frames sent to this link's MAC reach this host's stack: every link's, except a
    /// macvtap's, whose address is its guest's.
    #[must_use]
    pub fn receives_for_host(&self) -> bool {
        self.kind.as_deref() != Some("macvtap")
    }
}

/// Read the current addresses of this network namespace.
pub fn addresses() -> io::Result<Addresses> {
    let mut out = Addresses {
        interfaces: interfaces_with_addresses()?,
        ..Addresses::default()
    };
    let request = RouteNetlinkMessage::GetRoute(RouteMessage::default());
    for msg in dump(request)? {
        let RouteNetlinkMessage::NewRoute(route) = msg else {
            continue;
        };
        if route.header.table != RT_TABLE_LOCAL {
            continue;
        }
        let Some(dst) = route.attributes.iter().find_map(|a| match a {
            RouteAttribute::Destination(RouteAddress::Inet(v4)) => Some(IpAddr::V4(*v4)),
            RouteAttribute::Destination(RouteAddress::Inet6(v6)) => Some(IpAddr::V6(*v6)),
            _ => None,
        }) else {
            continue;
        };
        let len = route.header.destination_prefix_length;
        let host_route = u32::from(len) == if dst.is_ipv4() { 32 } else { 128 };
        match route.header.kind {
            RouteType::Local if host_route => out.unicast.push(dst),
            RouteType::Local => out.local_nets.extend(IpNet::new(dst, len).ok()),
            RouteType::Broadcast if host_route && dst.is_ipv4() => out.broadcast.push(dst),
            _ => {}
        }
    }
    out.unicast.sort();
    out.unicast.dedup();
    out.broadcast.sort();
    out.broadcast.dedup();
    Ok(out)
}

/// The links of this network namespace.
pub fn links() -> io::Result<Vec<Link>> {
    let mut out = Vec::new();
    for msg in dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))? {
        let RouteNetlinkMessage::NewLink(link) = msg else {
            continue;
        };
        let mut l = Link {
            index: link.header.index,
            name: String::new(),
            mac: None,
            kind: None,
            xdp_prog_id: None,
            mtu: None,
        };
        for a in link.attributes {
            match a {
                LinkAttribute::IfName(n) => l.name = n,
                LinkAttribute::Mtu(m) => l.mtu = Some(m),
                LinkAttribute::Address(a) => l.mac = <[u8; 6]>::try_from(a.as_slice()).ok(),
                LinkAttribute::LinkInfo(info) => {
                    l.kind = info.into_iter().find_map(|i| match i {
                        LinkInfo::Kind(k) => Some(kind_name(&k)),
                        _ => None,
                    });
                }
                LinkAttribute::Xdp(xdp) => {
                    l.xdp_prog_id = xdp.into_iter().find_map(|x| match x {
                        LinkXdp::ProgId(id) if id != 0 => Some(id),
                        _ => None,
                    });
                }
                _ => {}
            }
        }
        out.push(l);
    }
    Ok(out)
}

/// The MAC addresses whose frames this host's stack receives (see [`Link::receives_for_host`]),
/// without the all-zero address of `lo`.
#[must_use]
pub fn host_macs(links: &[Link]) -> Vec<[u8; 6]> {
    let mut macs: Vec<[u8; 6]> = links
        .iter()
        .filter(|l| l.receives_for_host())
        .filter_map(|l| l.mac)
        .filter(|m| *m != [0; 6])
        .collect();
    macs.sort_unstable();
    macs.dedup();
    macs
}

fn kind_name(k: &InfoKind) -> String {
    match k {
        InfoKind::MacVtap => "macvtap".to_owned(),
        // The rest only ever matters for logs: the kernel's own name.
        other => other.to_string(),
    }
}

/// Send `request` as a dump request and collect every answer until `NLMSG_DONE`.
fn dump(request: RouteNetlinkMessage) -> io::Result<Vec<RouteNetlinkMessage>> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = 1;
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(request));
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    socket.send(&buf, 0)?;
    let mut out = Vec::new();
    let mut recv = vec![0u8; 1 << 16];
    loop {
        let size = socket.recv(&mut &mut recv[..], 0)?;
        let mut offset = 0;
        while offset < size {
            let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&recv[offset..size])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            let len = msg.header.length as usize;
            match msg.payload {
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::Error(e) => {
                    return Err(e.to_io());
                }
                NetlinkPayload::InnerMessage(m) => out.push(m),
                _ => {}
            }
            if len == 0 {
                break;
            }
            offset += len;
        }
    }
}

/// Interface name -> whether it has a global address (getifaddrs): which interfaces `run`
/// protects when the site names none.
fn interfaces_with_addresses() -> io::Result<BTreeMap<String, bool>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&raw mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = BTreeMap::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: a node of the list returned by getifaddrs.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_flags & libc::IFF_LOOPBACK as u32 != 0 {
            continue;
        }
        let Some(addr) = sockaddr(ifa.ifa_addr) else {
            continue;
        };
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        let global = match addr {
            IpAddr::V4(_) => true,
            IpAddr::V6(v) => v.segments()[0] & 0xffc0 != 0xfe80,
        };
        *out.entry(name).or_default() |= global;
    }
    // SAFETY: freeing the list getifaddrs allocated, once.
    unsafe { libc::freeifaddrs(head) };
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
                Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(s.sin_addr.s_addr))))
            }
            libc::AF_INET6 => {
                let s = &*sa.cast::<libc::sockaddr_in6>();
                Some(IpAddr::V6(Ipv6Addr::from(s.sin6_addr.s6_addr)))
            }
            _ => None,
        }
    }
}
