//! Addresses for the lab's machines: only from the lab's own space (`198.18.0.0/15` and
//! `2001:db8::/32`), inside a role's ranges when a flow needs one, outside every role when it
//! needs an outsider.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use portguard_common::packet::Family;

use super::expect::family_of;

/// The only IPv4 space the lab uses (RFC 2544 benchmarking).
pub const LAB_V4: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(198, 18, 0, 0), 15);
/// The only IPv6 space the lab uses (RFC 3849 documentation).
pub const LAB_V6: Ipv6Net = Ipv6Net::new_assert(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32);

pub(super) fn lab_net(family: Family) -> IpNet {
    match family {
        Family::V4 => IpNet::V4(LAB_V4),
        Family::V6 => IpNet::V6(LAB_V6),
    }
}

/// The part of `net` inside the lab's address space.
pub(super) fn within_lab(net: &IpNet) -> Option<IpNet> {
    let lab = lab_net(if net.addr().is_ipv4() {
        Family::V4
    } else {
        Family::V6
    });
    if lab.contains(net) {
        Some(*net)
    } else if net.contains(&lab) {
        Some(lab)
    } else {
        None
    }
}

/// Host addresses of `net` in order, without the IPv4 network and broadcast addresses and the
/// IPv6 subnet-router anycast address.
pub(super) fn hosts(net: IpNet) -> Box<dyn Iterator<Item = IpAddr>> {
    match net {
        IpNet::V4(n) => Box::new(n.hosts().map(IpAddr::V4)),
        IpNet::V6(n) => {
            let skip = usize::from(n.prefix_len() < 127);
            Box::new(n.hosts().skip(skip).map(IpAddr::V6))
        }
    }
}

/// Addresses handed out so far, and the site's role ranges (to stay out of them when needed).
pub(super) struct Alloc {
    pub(super) taken: BTreeSet<IpAddr>,
    pub(super) mapped: Vec<IpNet>,
}

impl Alloc {
    /// The first address of `nets` (in the lab's space) not handed out yet.
    pub(super) fn first_free(&self, nets: &[IpNet]) -> Option<IpAddr> {
        nets.iter()
            .filter_map(within_lab)
            .find_map(|n| hosts(n).find(|a| !self.taken.contains(a)))
    }

    /// `preferred`, else the first of `pattern(0..=255)`, that no role maps and is free.
    pub(super) fn outside_roles(
        &self,
        preferred: IpAddr,
        pattern: impl Fn(u8) -> IpAddr,
    ) -> IpAddr {
        std::iter::once(preferred)
            .chain((0..=255).map(pattern))
            .find(|a| !self.taken.contains(a) && !self.mapped.iter().any(|n| n.contains(a)))
            .unwrap_or(preferred)
    }

    pub(super) fn take(&mut self, a: Option<IpAddr>) {
        if let Some(a) = a {
            self.taken.insert(a);
        }
    }
}

pub(super) fn v4(a: Option<IpAddr>) -> Option<Ipv4Addr> {
    match a {
        Some(IpAddr::V4(v)) => Some(v),
        _ => None,
    }
}

pub(super) fn v6(a: Option<IpAddr>) -> Option<Ipv6Addr> {
    match a {
        Some(IpAddr::V6(v)) => Some(v),
        _ => None,
    }
}

pub(super) fn of_family(nets: &[IpNet], family: Family) -> Vec<IpNet> {
    nets.iter()
        .filter(|n| n.addr().is_ipv4() == (family == Family::V4))
        .copied()
        .collect()
}

/// Whether `a` is inside the lab's address space.
#[must_use]
pub fn in_lab(a: IpAddr) -> bool {
    lab_net(family_of(a)).contains(&a)
}
