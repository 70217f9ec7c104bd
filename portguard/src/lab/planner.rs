//! Choosing the lab's flows: for each rule in force, a source inside its roles and a port or
//! type it opens; then flows the matrix must refuse, and the flows a host needs to keep working.

use std::net::IpAddr;

use ipnet::IpNet;
use portguard_common::{classify::Outcome, packet::Family, reason::Reason};

use super::{
    alloc::{Alloc, of_family, v4, v6, within_lab},
    expect::{Judge, L4, Pkt},
    plan::{
        Endpoint, FlowSpec, Group, HOST, OUTSIDER, Probe, Skip, Target, families, l4_candidates,
    },
};
use crate::{
    compile::{FAILSAFE_ID, HostPolicy, HostRule},
    policy::{Policy, Proto},
};

/// A source a rule's flow could come from.
pub(super) enum Cand {
    /// An endpoint that exists already.
    Existing(usize),
    /// A new machine for this role (or `failsafe.ssh_from`), with its ranges.
    New { role: String, nets: Vec<IpNet> },
}

/// Builds the plan.
pub(super) struct Planner<'a> {
    pub(super) policy: &'a Policy,
    pub(super) judge: &'a Judge<'a>,
    pub(super) prefix: &'a str,
    pub(super) alloc: Alloc,
    pub(super) endpoints: Vec<Endpoint>,
    pub(super) flows: Vec<FlowSpec>,
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
    pub(super) fn rule(&mut self, rule: &HostRule) {
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
    pub(super) fn negatives(&mut self, hp: &HostPolicy, family: Family) {
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
    pub(super) fn host_safety(&mut self, family: Family) {
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
