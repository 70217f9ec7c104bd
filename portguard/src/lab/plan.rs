//! What the lab builds and sends, decided from the compiled policy before anything is created:
//! the machines (one namespace per address a flow needs), and the flows, each with the reason
//! it was chosen or could not be.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use ipnet::IpNet;
use portguard_common::packet::Family;
use serde::Serialize;

use super::LabError;
pub use super::alloc::{LAB_V4, LAB_V6, in_lab};
use super::{
    alloc::{Alloc, of_family, v4, v6},
    expect::{Judge, L4},
    planner::Planner,
};
use crate::{
    compile::HostPolicy,
    policy::{Match, Policy, Proto},
};

/// Index of the protected host in [`Plan::endpoints`].
pub const HOST: usize = 0;
/// Index of the VM bridged behind the protected host.
pub const VM: usize = 1;
/// Index of the outsider: an address in no role.
pub const OUTSIDER: usize = 2;

/// One machine of the lab: a network namespace with one address per family.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    /// Short name: `host`, `vm`, `outsider`, or the role it stands for (`rhv-manager`).
    pub label: String,
    /// Its network namespace, `<prefix>-<label>`.
    pub ns: String,
    /// IPv4 address.
    pub v4: Option<Ipv4Addr>,
    /// IPv6 address.
    pub v6: Option<Ipv6Addr>,
    /// The role (or `failsafe.ssh_from`) it was created for.
    pub role: Option<String>,
    /// MAC address of its lab interface (fixed, so neighbours can be entered statically).
    pub mac: [u8; 6],
}

impl Endpoint {
    /// Its address of `family`.
    #[must_use]
    pub fn addr(&self, family: Family) -> Option<IpAddr> {
        match family {
            Family::V4 => self.v4.map(IpAddr::V4),
            Family::V6 => self.v6.map(IpAddr::V6),
        }
    }

    /// Both addresses, IPv4 first.
    #[must_use]
    pub fn addrs(&self) -> Vec<IpAddr> {
        [self.addr(Family::V4), self.addr(Family::V6)]
            .into_iter()
            .flatten()
            .collect()
    }

    /// `02:70:67:..` as text.
    #[must_use]
    pub fn mac_text(&self) -> String {
        self.mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    }
}

/// Where an inbound flow goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The protected host.
    Host,
    /// The VM bridged behind it.
    Vm,
}

/// One thing the lab does to produce traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// From endpoint `from` to the host or the VM.
    Inbound {
        /// Index into [`Plan::endpoints`].
        from: usize,
        /// Destination.
        to: Target,
        /// Address family.
        family: Family,
        /// What is sent.
        l4: L4,
    },
    /// The host connects to the outsider over TCP (the SYN-ACK must pass as a reply), then the
    /// outsider sends a SYN of its own to the host's port of that connection (must be dropped).
    OutboundTcp {
        /// Address family.
        family: Family,
    },
    /// The host sends a UDP request to the outsider; the response must pass as a reply.
    OutboundUdp {
        /// Address family.
        family: Family,
    },
    /// The host sends UDP to a closed port of the outsider; the port-unreachable error that
    /// quotes the host's flow must pass.
    OutboundUdpClosed {
        /// Address family.
        family: Family,
    },
    /// The host pings the outsider; the echo reply must reach it.
    OutboundPing {
        /// Address family.
        family: Family,
    },
}

/// Why a flow is in the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Group {
    /// Exercises a rule in force.
    Rule,
    /// A flow the matrix does not allow.
    Negative,
    /// What the host needs to keep working (replies, ping, bridged guests).
    HostSafety,
}

/// Why a rule cannot be exercised in the lab.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Skip {
    /// Every source address of the rule is the protected host's own.
    OwnAddress,
    /// The rule's sources lie outside 198.18.0.0/15 and `2001:db8::/32`.
    OutsideLab,
    /// The rule's sources are all of a family its protocol cannot use.
    NoFamily,
}

/// One row to produce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowSpec {
    /// Why it is there.
    pub group: Group,
    /// The rule it exercises.
    pub rule: Option<String>,
    /// What to do; `None` when the rule cannot be exercised (`skip` says why).
    pub probe: Option<Probe>,
    /// Requirement from host safety that the classifier must agree with.
    pub required: Option<super::expect::Verdict>,
    /// Remark for the table (shadowing, what the flow stands for).
    pub note: Option<String>,
    /// Why there is no probe.
    pub skip: Option<(Skip, String)>,
}

/// Everything the lab will build and do.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Host, VM, outsider, then the role machines.
    pub endpoints: Vec<Endpoint>,
    /// Namespace of the switch.
    pub lan_ns: String,
    /// The protected interface (the site's first `[host] interfaces`, or `eth1`).
    pub iface: String,
    /// The flows, in the order they run.
    pub flows: Vec<FlowSpec>,
}

/// The roles the lab's protected host plays: the site's `[host] roles`, else the pseudo-role
/// `host` (essentials and failsafe only). Never derived from this machine's addresses: the lab
/// runs in the root namespace, whose addresses have nothing to do with the site.
#[must_use]
pub fn host_roles(policy: &Policy) -> (Vec<String>, Option<String>) {
    match &policy.host.roles {
        Some(r) if !r.is_empty() => (r.clone(), None),
        _ => (
            vec!["host".to_owned()],
            Some(format!(
                "{} has no [host] roles: the lab protects a host with no product role (essentials \
                 and failsafe only); add `[host] roles = [...]` to rehearse a product's host",
                policy.site_file.display()
            )),
        ),
    }
}

/// The protected interface name, checked to be a valid device name.
pub fn interface(policy: &Policy) -> Result<String, LabError> {
    let name = policy
        .host
        .interfaces
        .as_ref()
        .and_then(|i| i.first().cloned())
        .unwrap_or_else(|| "eth1".to_owned());
    let refuse = |why| {
        Err(LabError::Interface {
            site: policy.site_file.clone(),
            name: name.clone(),
            why,
        })
    };
    let valid = !name.is_empty()
        && name.len() <= 15
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !valid {
        return refuse("cannot be a lab device name (at most 15 letters, digits, - _ .)");
    }
    if ["lo", "br0", "vnet0"].contains(&name.as_str()) {
        return refuse("is a name the lab uses for something else");
    }
    Ok(name)
}

/// The address families a protocol is sent over.
pub(super) fn families(proto: Proto) -> &'static [Family] {
    match proto {
        // Portless protocols (`Ip`) are sent over both families: the datapath matches their
        // number whatever the family (IGMP over IPv6 is nobody's, and harmless).
        Proto::Tcp | Proto::Udp | Proto::Sctp | Proto::Ip => &[Family::V4, Family::V6],
        Proto::Icmp => &[Family::V4],
        Proto::Icmpv6 => &[Family::V6],
    }
}

/// The ports or types worth trying for a rule, best first: each range's first and last port;
/// for ICMP, echo request first when the rule opens it (its reply shows delivery).
pub(super) fn l4_candidates(proto: Proto, m: &Match) -> Vec<L4> {
    let mut out = Vec::new();
    match m {
        Match::Ports(ranges) => {
            for r in ranges {
                for p in [(*r.start()).max(1), *r.end()] {
                    let l4 = match proto {
                        Proto::Udp => L4::Udp(p),
                        Proto::Sctp => L4::Sctp(p),
                        _ => L4::Tcp(p),
                    };
                    if p != 0 && !out.contains(&l4) {
                        out.push(l4);
                    }
                }
            }
        }
        Match::Icmp { types, code } => {
            let echo = if proto == Proto::Icmp { 8 } else { 128 };
            let code = code.unwrap_or(0);
            if types.iter().any(|r| r.contains(&echo)) {
                out.push(L4::Icmp { ty: echo, code });
            }
            for r in types {
                let l4 = L4::Icmp {
                    ty: *r.start(),
                    code,
                };
                if !out.contains(&l4) {
                    out.push(l4);
                }
            }
        }
        Match::Protocol(n) => out.push(L4::Ip(*n)),
    }
    out
}

impl Plan {
    /// Decide the lab for `policy` compiled as `hp` for the host roles `roles`. `judge_for`
    /// builds the reference classifier once the host's addresses are known.
    pub fn new(
        policy: &Policy,
        hp: &HostPolicy,
        roles: &[String],
        prefix: &str,
    ) -> Result<Plan, LabError> {
        let mapped: Vec<IpNet> = policy
            .roles
            .values()
            .filter(|r| !r.any)
            .flat_map(|r| r.sources.iter().copied())
            .chain(policy.failsafe_ssh.iter().copied())
            .collect();
        let mut alloc = Alloc {
            taken: BTreeSet::new(),
            mapped,
        };
        // The host: an address of its roles when they map one, else one outside every role.
        let host_nets: Vec<IpNet> = roles
            .iter()
            .filter_map(|r| policy.roles.get(r))
            .filter(|r| !r.any)
            .flat_map(|r| r.sources.iter().copied())
            .collect();
        let host_addr = |family: Family, alloc: &mut Alloc| {
            let a = alloc
                .first_free(&of_family(&host_nets, family))
                .unwrap_or_else(|| match family {
                    Family::V4 => alloc.outside_roles(Ipv4Addr::new(198, 18, 2, 1).into(), |k| {
                        Ipv4Addr::new(198, 18, k, 1).into()
                    }),
                    Family::V6 => alloc.outside_roles(
                        Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 1).into(),
                        |k| Ipv6Addr::new(0x2001, 0xdb8, u16::from(k), 0, 0, 0, 0, 1).into(),
                    ),
                });
            alloc.take(Some(a));
            a
        };
        let h4 = host_addr(Family::V4, &mut alloc);
        let h6 = host_addr(Family::V6, &mut alloc);
        let vm4 = alloc.outside_roles(Ipv4Addr::new(198, 18, 8, 50).into(), |k| {
            Ipv4Addr::new(198, 18, k, 50).into()
        });
        alloc.take(Some(vm4));
        let vm6 = alloc.outside_roles(
            Ipv6Addr::new(0x2001, 0xdb8, 8, 0, 0, 0, 0, 0x50).into(),
            |k| Ipv6Addr::new(0x2001, 0xdb8, u16::from(k), 0, 0, 0, 0, 0x50).into(),
        );
        alloc.take(Some(vm6));
        let out4 = alloc.outside_roles(Ipv4Addr::new(198, 18, 9, 99).into(), |k| {
            Ipv4Addr::new(198, 18, k, 99).into()
        });
        alloc.take(Some(out4));
        let out6 = alloc.outside_roles(
            Ipv6Addr::new(0x2001, 0xdb8, 9, 0, 0, 0, 0, 0x99).into(),
            |k| Ipv6Addr::new(0x2001, 0xdb8, u16::from(k), 0, 0, 0, 0, 0x99).into(),
        );
        alloc.take(Some(out6));
        let fixed = |label: &str, a4: IpAddr, a6: IpAddr, n: u8| Endpoint {
            label: label.to_owned(),
            ns: format!("{prefix}-{label}"),
            v4: v4(Some(a4)),
            v6: v6(Some(a6)),
            role: None,
            mac: [0x02, 0x70, 0x67, 0, 0, n],
        };
        let endpoints = vec![
            Endpoint {
                role: Some(roles.join(",")),
                ..fixed("host", h4, h6, 1)
            },
            fixed("vm", vm4, vm6, 2),
            fixed("outsider", out4, out6, 3),
        ];
        let judge = Judge::new(hp, vec![h4, h6]);
        let mut p = Planner {
            policy,
            judge: &judge,
            prefix,
            alloc,
            endpoints,
            flows: Vec::new(),
        };
        for rule in &hp.rules {
            p.rule(rule);
        }
        for family in [Family::V4, Family::V6] {
            p.negatives(hp, family);
        }
        for family in [Family::V4, Family::V6] {
            p.host_safety(family);
        }
        Ok(Plan {
            lan_ns: format!("{prefix}-lan"),
            iface: interface(policy)?,
            endpoints: p.endpoints,
            flows: p.flows,
        })
    }

    /// The protected host.
    #[must_use]
    pub fn host(&self) -> &Endpoint {
        &self.endpoints[HOST]
    }

    /// Every namespace the lab creates, the switch first.
    #[must_use]
    pub fn namespaces(&self) -> Vec<String> {
        std::iter::once(self.lan_ns.clone())
            .chain(self.endpoints.iter().map(|e| e.ns.clone()))
            .collect()
    }
}
