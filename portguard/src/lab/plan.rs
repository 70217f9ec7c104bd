//! What the lab builds and sends, decided from the compiled policy before anything is created:
//! the machines (one namespace per address a flow needs), and the flows, each with the reason
//! it was chosen or could not be.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use portguard_common::{classify::Outcome, packet::Family, reason::Reason};
use serde::Serialize;

use super::expect::{Judge, L4, Pkt, family_of};
use crate::{
    compile::{FAILSAFE_ID, HostPolicy, HostRule},
    policy::{Match, Policy, Proto},
};

/// Index of the protected host in [`Plan::endpoints`].
pub const HOST: usize = 0;
/// Index of the VM bridged behind the protected host.
pub const VM: usize = 1;
/// Index of the outsider: an address in no role.
pub const OUTSIDER: usize = 2;

/// The only IPv4 space the lab uses (RFC 2544 benchmarking).
pub const LAB_V4: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(198, 18, 0, 0), 15);
/// The only IPv6 space the lab uses (RFC 3849 documentation).
pub const LAB_V6: Ipv6Net = Ipv6Net::new_assert(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32);

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
pub fn interface(policy: &Policy) -> anyhow::Result<String> {
    let name = policy
        .host
        .interfaces
        .as_ref()
        .and_then(|i| i.first().cloned())
        .unwrap_or_else(|| "eth1".to_owned());
    anyhow::ensure!(
        !name.is_empty()
            && name.len() <= 15
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
        "{}: [host] interfaces: `{name}` cannot be a lab device name (at most 15 letters, digits, - _ .)",
        policy.site_file.display()
    );
    anyhow::ensure!(
        !["lo", "br0", "vnet0"].contains(&name.as_str()),
        "{}: [host] interfaces: `{name}` is a name the lab uses for something else",
        policy.site_file.display()
    );
    Ok(name)
}

fn lab_net(family: Family) -> IpNet {
    match family {
        Family::V4 => IpNet::V4(LAB_V4),
        Family::V6 => IpNet::V6(LAB_V6),
    }
}

/// The part of `net` inside the lab's address space.
fn within_lab(net: &IpNet) -> Option<IpNet> {
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
fn hosts(net: IpNet) -> Box<dyn Iterator<Item = IpAddr>> {
    match net {
        IpNet::V4(n) => Box::new(n.hosts().map(IpAddr::V4)),
        IpNet::V6(n) => {
            let skip = usize::from(n.prefix_len() < 127);
            Box::new(n.hosts().skip(skip).map(IpAddr::V6))
        }
    }
}

/// Addresses handed out so far, and the site's role ranges (to stay out of them when needed).
struct Alloc {
    taken: BTreeSet<IpAddr>,
    mapped: Vec<IpNet>,
}

impl Alloc {
    /// The first address of `nets` (in the lab's space) not handed out yet.
    fn first_free(&self, nets: &[IpNet]) -> Option<IpAddr> {
        nets.iter()
            .filter_map(within_lab)
            .find_map(|n| hosts(n).find(|a| !self.taken.contains(a)))
    }

    /// `preferred`, else the first of `pattern(0..=255)`, that no role maps and is free.
    fn outside_roles(&self, preferred: IpAddr, pattern: impl Fn(u8) -> IpAddr) -> IpAddr {
        std::iter::once(preferred)
            .chain((0..=255).map(pattern))
            .find(|a| !self.taken.contains(a) && !self.mapped.iter().any(|n| n.contains(a)))
            .unwrap_or(preferred)
    }

    fn take(&mut self, a: Option<IpAddr>) {
        if let Some(a) = a {
            self.taken.insert(a);
        }
    }
}

fn v4(a: Option<IpAddr>) -> Option<Ipv4Addr> {
    match a {
        Some(IpAddr::V4(v)) => Some(v),
        _ => None,
    }
}

fn v6(a: Option<IpAddr>) -> Option<Ipv6Addr> {
    match a {
        Some(IpAddr::V6(v)) => Some(v),
        _ => None,
    }
}

fn of_family(nets: &[IpNet], family: Family) -> Vec<IpNet> {
    nets.iter()
        .filter(|n| n.addr().is_ipv4() == (family == Family::V4))
        .copied()
        .collect()
}

/// The address families a protocol is sent over.
fn families(proto: Proto) -> &'static [Family] {
    match proto {
        Proto::Tcp | Proto::Udp | Proto::Sctp => &[Family::V4, Family::V6],
        Proto::Icmp => &[Family::V4],
        Proto::Icmpv6 => &[Family::V6],
    }
}

/// The ports or types worth trying for a rule, best first: each range's first and last port;
/// for ICMP, echo request first when the rule opens it (its reply shows delivery).
fn l4_candidates(proto: Proto, m: &Match) -> Vec<L4> {
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
    }
    out
}

/// A source a rule's flow could come from.
enum Cand {
    /// An endpoint that exists already.
    Existing(usize),
    /// A new machine for this role (or `failsafe.ssh_from`), with its ranges.
    New { role: String, nets: Vec<IpNet> },
}

/// Builds the plan.
struct Planner<'a> {
    policy: &'a Policy,
    judge: &'a Judge<'a>,
    prefix: &'a str,
    alloc: Alloc,
    endpoints: Vec<Endpoint>,
    flows: Vec<FlowSpec>,
}

impl Plan {
    /// Decide the lab for `policy` compiled as `hp` for the host roles `roles`. `judge_for`
    /// builds the reference classifier once the host's addresses are known.
    pub fn new(
        policy: &Policy,
        hp: &HostPolicy,
        roles: &[String],
        prefix: &str,
    ) -> anyhow::Result<Plan> {
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

impl Planner<'_> {
    fn host_addr(&self, family: Family) -> IpAddr {
        self.endpoints[HOST]
            .addr(family)
            .expect("the host has both families")
    }

    /// Where a flow of `rule` over `family` can come from, best first.
    fn candidates(&self, rule: &HostRule, family: Family) -> Vec<Cand> {
        let sources = of_family(&rule.sources, family);
        let mut out: Vec<Cand> = (OUTSIDER..self.endpoints.len())
            .filter(|i| {
                self.endpoints[*i]
                    .addr(family)
                    .is_some_and(|a| sources.iter().any(|n| n.contains(&a)))
            })
            .map(Cand::Existing)
            .collect();
        for from in &rule.from {
            let nets = if rule.id == FAILSAFE_ID {
                self.policy.failsafe_ssh.clone()
            } else {
                match self.policy.roles.get(from) {
                    Some(r) if !r.any => r.sources.clone(),
                    _ => continue,
                }
            };
            if self.alloc.first_free(&of_family(&nets, family)).is_some() {
                out.push(Cand::New {
                    role: from.clone(),
                    nets,
                });
            }
        }
        out
    }

    fn cand_addr(&self, c: &Cand, family: Family) -> Option<IpAddr> {
        match c {
            Cand::Existing(i) => self.endpoints[*i].addr(family),
            Cand::New { nets, .. } => self.alloc.first_free(&of_family(nets, family)),
        }
    }

    /// Create the machine for a chosen candidate; its index.
    fn materialize(&mut self, c: Cand) -> usize {
        match c {
            Cand::Existing(i) => i,
            Cand::New { role, nets } => {
                let a4 = self.alloc.first_free(&of_family(&nets, Family::V4));
                self.alloc.take(a4);
                let a6 = self.alloc.first_free(&of_family(&nets, Family::V6));
                self.alloc.take(a6);
                let base = if role == "failsafe.ssh_from" {
                    "failsafe-admin".to_owned()
                } else {
                    role.chars()
                        .map(|c| {
                            if c.is_ascii_alphanumeric() {
                                c.to_ascii_lowercase()
                            } else {
                                '-'
                            }
                        })
                        .collect()
                };
                let mut label = base.clone();
                let mut n = 2;
                while self.endpoints.iter().any(|e| e.label == label) {
                    label = format!("{base}{n}");
                    n += 1;
                }
                let index = self.endpoints.len();
                self.endpoints.push(Endpoint {
                    ns: format!("{}-{label}", self.prefix),
                    label,
                    v4: v4(a4),
                    v6: v6(a6),
                    role: Some(role),
                    mac: [0x02, 0x70, 0x67, 0, 1, index as u8],
                });
                index
            }
        }
    }

    /// The flows that exercise `rule`: one per protocol and family it has sources in.
    /// Why a rule's flow over `family` cannot be sent: its sources are the host's own address
    /// or lie outside the lab's address space.
    fn skip_reason(&self, sources: &[IpNet]) -> (Skip, String) {
        if sources.iter().find_map(within_lab).is_none() {
            return (
                Skip::OutsideLab,
                format!(
                    "not exercised: its sources ({}) are outside the lab's 198.18.0.0/15 and 2001:db8::/32",
                    join(sources)
                ),
            );
        }
        let own: Vec<String> = self.endpoints[HOST]
            .addrs()
            .iter()
            .map(ToString::to_string)
            .collect();
        (
            Skip::OwnAddress,
            format!(
                "not exercised: its sources ({}) are only this host's own address ({}), and a host's \
                 traffic to itself never crosses its NIC",
                join(sources),
                own.join(", ")
            ),
        )
    }

    /// The candidate and port that make the classifier allow the flow by `rule` itself; else the
    /// first of each, with a note naming the earlier rule that shadows it.
    fn choose(
        &self,
        rule: &HostRule,
        cands: &[Cand],
        l4s: &[L4],
        family: Family,
    ) -> (usize, L4, Option<String>) {
        let host = self.host_addr(family);
        for (ci, c) in cands.iter().enumerate() {
            let Some(src) = self.cand_addr(c, family) else {
                continue;
            };
            for l4 in l4s {
                if let Outcome::Allow { slot } = self.judge.outcome(&Pkt::new(src, host, *l4))
                    && self.judge.rule_id(slot) == Some(rule.id.as_str())
                {
                    return (ci, *l4, None);
                }
            }
        }
        let by = self
            .cand_addr(&cands[0], family)
            .map(
                |src| match self.judge.outcome(&Pkt::new(src, host, l4s[0])) {
                    Outcome::Allow { slot } => self.judge.rule_id(slot).unwrap_or("?").to_owned(),
                    _ => "nothing".to_owned(),
                },
            )
            .unwrap_or_default();
        (
            0,
            l4s[0],
            Some(format!(
                "shadowed: {by} matches first for every source and port tried"
            )),
        )
    }

    /// The flows that exercise `rule`: one per protocol and family it has sources in; a row
    /// saying why for what cannot be sent.
    fn rule(&mut self, rule: &HostRule) {
        let before = self.flows.len();
        // Sources of the flows that cannot be sent, for the row that says why.
        let mut unsent: Vec<IpNet> = Vec::new();
        for proto in &rule.protos {
            for family in families(*proto) {
                let sources = of_family(&rule.sources, *family);
                if sources.is_empty() {
                    continue;
                }
                let l4s = l4_candidates(*proto, &rule.matches);
                let cands = self.candidates(rule, *family);
                if cands.is_empty() || l4s.is_empty() {
                    for n in sources {
                        if !unsent.contains(&n) {
                            unsent.push(n);
                        }
                    }
                    continue;
                }
                let (ci, l4, note) = self.choose(rule, &cands, &l4s, *family);
                let cand = cands.into_iter().nth(ci).expect("chosen candidate");
                let from = self.materialize(cand);
                let note = note.or_else(|| {
                    (rule.id == FAILSAFE_ID).then(|| "the failsafe source reaches SSH".to_owned())
                });
                self.flows.push(FlowSpec {
                    group: Group::Rule,
                    rule: Some(rule.id.clone()),
                    probe: Some(Probe::Inbound {
                        from,
                        to: Target::Host,
                        family: *family,
                        l4,
                    }),
                    required: None,
                    note,
                    skip: None,
                });
            }
        }
        let mut skip = (!unsent.is_empty()).then(|| self.skip_reason(&unsent));
        if skip.is_none() && self.flows.len() == before {
            skip = Some((
                Skip::NoFamily,
                "not exercised: it has no sources of the address family its protocol uses"
                    .to_owned(),
            ));
        }
        if let Some(s) = skip {
            self.flows.push(FlowSpec {
                group: Group::Rule,
                rule: Some(rule.id.clone()),
                probe: None,
                required: None,
                note: None,
                skip: Some(s),
            });
        }
    }

    fn negative(&mut self, from: usize, family: Family, l4: L4, note: String) {
        self.flows.push(FlowSpec {
            group: Group::Negative,
            rule: None,
            probe: Some(Probe::Inbound {
                from,
                to: Target::Host,
                family,
                l4,
            }),
            required: Some(super::expect::Verdict::Denied),
            note: Some(note),
            skip: None,
        });
    }

    /// Flows the matrix does not allow: the outsider to an open port, a role to a port open
    /// only to another role, a role to a closed port (TCP and UDP).
    fn negatives(&mut self, hp: &HostPolicy, family: Family) {
        let host = self.host_addr(family);
        // Denied, and (when `rule` is given) with that rule named as the one opening the port,
        // so the example reads "port opened by RHV-H10" rather than by an earlier rule.
        let denied = |j: &Judge<'_>, src: IpAddr, l4: L4, rule: Option<&HostRule>| match j
            .outcome(&Pkt::new(src, host, l4))
        {
            Outcome::Deny { hint, .. } => rule.is_none_or(|r| hint == r.slot + 1),
            _ => false,
        };
        // Product rules make the clearer examples; the failsafe and essentials come last.
        let mut ordered: Vec<&HostRule> = hp.rules.iter().collect();
        ordered.sort_by_key(|r| matches!(r.product.as_str(), "failsafe" | "essentials"));
        let port_rules: Vec<(&HostRule, L4)> = ordered
            .into_iter()
            .filter(|r| {
                r.protos
                    .iter()
                    .any(|p| matches!(p, Proto::Tcp | Proto::Udp))
            })
            .filter_map(|r| {
                let proto = if r.protos.contains(&Proto::Tcp) {
                    Proto::Tcp
                } else {
                    Proto::Udp
                };
                l4_candidates(proto, &r.matches).first().map(|l4| (r, *l4))
            })
            .collect();
        if let Some(out) = self.endpoints[OUTSIDER].addr(family)
            && let Some((r, l4)) = port_rules
                .iter()
                .find(|(r, l4)| denied(self.judge, out, *l4, Some(r)))
                .or_else(|| {
                    port_rules
                        .iter()
                        .find(|(_, l4)| denied(self.judge, out, *l4, None))
                })
        {
            let note = format!("the outsider to a port {} opens", r.id);
            self.negative(OUTSIDER, family, *l4, note);
        }
        // Machines standing for product roles first: the failsafe source makes a poor example.
        let mut peers: Vec<usize> = (OUTSIDER + 1..self.endpoints.len())
            .filter(|i| self.endpoints[*i].addr(family).is_some())
            .collect();
        peers.sort_by_key(|i| self.endpoints[*i].role.as_deref() == Some("failsafe.ssh_from"));
        let other_role = |strict: bool| {
            port_rules.iter().find_map(|(r, l4)| {
                peers.iter().find_map(|i| {
                    let src = self.endpoints[*i].addr(family)?;
                    (!r.sources.iter().any(|n| n.contains(&src))
                        && denied(self.judge, src, *l4, strict.then_some(*r)))
                    .then(|| (*i, *l4, r.id.clone()))
                })
            })
        };
        let other_role = other_role(true).or_else(|| other_role(false));
        if let Some((i, l4, id)) = other_role {
            let note = format!(
                "{} to a port {id} opens to other roles only",
                self.endpoints[i].label
            );
            self.negative(i, family, l4, note);
        }
        let sender = peers.first().copied().unwrap_or(OUTSIDER);
        if let Some(src) = self.endpoints[sender].addr(family) {
            for make in [L4::Tcp as fn(u16) -> L4, L4::Udp] {
                let closed = [9u16, 7, 13, 19, 1]
                    .into_iter()
                    .chain(1..1024)
                    .map(make)
                    .find(|l4| {
                        matches!(
                            self.judge.outcome(&Pkt::new(src, host, *l4)),
                            Outcome::Deny {
                                reason: Reason::PortNotOpen,
                                ..
                            }
                        )
                    });
                if let Some(l4) = closed {
                    let note = format!("{} to a port no rule opens", self.endpoints[sender].label);
                    self.negative(sender, family, l4, note);
                }
            }
        }
    }

    /// What the host needs to keep working: replies to its own connections and pings, ICMP
    /// errors about its own flows, and full connectivity for the VM bridged behind it.
    fn host_safety(&mut self, family: Family) {
        use super::expect::Verdict;
        let safety = |probe: Probe, required: Option<Verdict>, note: &str| FlowSpec {
            group: Group::HostSafety,
            rule: None,
            probe: Some(probe),
            required,
            note: Some(note.to_owned()),
            skip: None,
        };
        self.flows.extend([
            safety(
                Probe::OutboundTcp { family },
                Some(Verdict::Allowed),
                "the host's own TCP connection: its SYN-ACK is a reply",
            ),
            safety(
                Probe::OutboundUdp { family },
                Some(Verdict::Allowed),
                "the host's own UDP request: the response is a reply",
            ),
            safety(
                Probe::OutboundUdpClosed { family },
                Some(Verdict::Allowed),
                "an ICMP error about the host's own flow",
            ),
            safety(
                Probe::OutboundPing { family },
                Some(Verdict::Allowed),
                "ping from the host: the echo reply",
            ),
            safety(
                Probe::Inbound {
                    from: OUTSIDER,
                    to: Target::Vm,
                    family,
                    l4: L4::Tcp(9),
                },
                None,
                "the outsider to the VM bridged behind the host",
            ),
        ]);
    }
}

fn join(nets: &[IpNet]) -> String {
    nets.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether `a` is inside the lab's address space.
#[must_use]
pub fn in_lab(a: IpAddr) -> bool {
    lab_net(family_of(a)).contains(&a)
}
