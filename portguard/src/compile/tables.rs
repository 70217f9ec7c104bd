//! Rules in evaluation order -> the datapath's tables (source classes, port classes, decisions).
//!
//! The datapath answers "first rule whose sources contain the packet's source and whose ports
//! contain its port" with three lookups whatever the number of rules (see
//! `portguard_common::classify`). That works because this compiler does the set algebra ahead
//! of time:
//! - every distinct source prefix gets the set of rules whose sources contain it, including
//!   through shorter, overlapping prefixes, so the longest-prefix match alone is enough;
//! - every (protocol slot, port) gets the set of rules covering it, computed by sweeping range
//!   boundaries, so a 16384-port range costs no more than one port;
//! - equal sets share one class id, and a table indexed by (source class, port class) holds the
//!   first rule both sets share. Row 0 holds, per port class, the first rule covering the port:
//!   the "would have matched" hint for audit events.

use std::collections::{BTreeMap, HashMap};

use ipnet::IpNet;
use portguard_common::{
    config::Config,
    maps::{
        MAX_DECISIONS, MAX_PREFIXES, MAX_RULES, PORT_SPACE, PROTO_SLOTS, SLOT_ICMP, SLOT_ICMPV6,
        SLOT_IP_PROTO, SLOT_SCTP, SLOT_TCP, SLOT_UDP,
    },
    tables::Tables,
};

use crate::policy::{Match, Proto};

/// One rule as the table compiler needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableRule {
    /// Counter slot (stable across reloads; chosen by the caller).
    pub slot: u32,
    /// Source prefixes, both families.
    pub sources: Vec<IpNet>,
    /// Protocols.
    pub protos: Vec<Proto>,
    /// Ports or ICMP types.
    pub matches: Match,
}

/// Why a rule set cannot be turned into tables.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TableError {
    /// More rules than counter slots.
    #[error("{count} rules exceed the datapath's {max} rule slots")]
    TooManyRules {
        /// Rules given.
        count: usize,
        /// The limit.
        max: u32,
    },
    /// A slot number outside the counter map.
    #[error("rule slot {slot} is outside the datapath's {max} rule slots")]
    SlotOutOfRange {
        /// The slot.
        slot: u32,
        /// The limit.
        max: u32,
    },
    /// More source prefixes than the LPM tries hold.
    #[error("{count} IPv{family} source prefixes exceed the datapath's {max}")]
    TooManyPrefixes {
        /// 4 or 6.
        family: u8,
        /// Prefixes given.
        count: usize,
        /// The limit.
        max: u32,
    },
    /// The decision table would be larger than allowed.
    #[error(
        "the policy needs a {src} x {ports} decision table ({} entries), over the datapath's {max}; \
         merge roles with identical rules or split the site",
        (*src as u64) * (*ports as u64)
    )]
    DecisionTableTooLarge {
        /// Source classes (rows).
        src: u32,
        /// Port classes (columns).
        ports: u32,
        /// The limit.
        max: u32,
    },
}

/// Interns sorted rule-index sets as class ids, starting at 1 (0 = no rule).
#[derive(Default)]
struct Classes {
    ids: HashMap<Vec<u32>, u32>,
    sets: Vec<Vec<u32>>,
}

impl Classes {
    fn intern(&mut self, set: Vec<u32>) -> u32 {
        if set.is_empty() {
            return 0;
        }
        if let Some(id) = self.ids.get(&set) {
            return *id;
        }
        self.sets.push(set.clone());
        let id = self.sets.len() as u32;
        self.ids.insert(set, id);
        id
    }
}

fn proto_slot(p: Proto) -> u32 {
    match p {
        Proto::Tcp => SLOT_TCP,
        Proto::Udp => SLOT_UDP,
        Proto::Sctp => SLOT_SCTP,
        Proto::Icmp => SLOT_ICMP,
        Proto::Icmpv6 => SLOT_ICMPV6,
        Proto::Ip => SLOT_IP_PROTO,
    }
}

/// The key ranges a rule covers in one protocol slot.
fn key_ranges(m: &Match) -> Vec<(u32, u32)> {
    match m {
        Match::Ports(ranges) => ranges
            .iter()
            .map(|r| (u32::from(*r.start()), u32::from(*r.end())))
            .collect(),
        Match::Icmp {
            types,
            code: Some(c),
        } => types
            .iter()
            .flat_map(|r| {
                r.clone().map(|t| {
                    (
                        u32::from(t) << 8 | u32::from(*c),
                        u32::from(t) << 8 | u32::from(*c),
                    )
                })
            })
            .collect(),
        Match::Icmp { types, code: None } => types
            .iter()
            .map(|r| (u32::from(*r.start()) << 8, u32::from(*r.end()) << 8 | 0xff))
            .collect(),
        Match::Protocol(n) => vec![(u32::from(*n), u32::from(*n))],
    }
}

/// Source sets per distinct prefix of one family (rule indices, ascending).
fn source_sets(rules: &[TableRule], v6: bool) -> BTreeMap<IpNet, Vec<u32>> {
    let mut direct: HashMap<IpNet, Vec<u32>> = HashMap::new();
    for (i, r) in rules.iter().enumerate() {
        for net in r.sources.iter().filter(|n| matches!(n, IpNet::V6(_)) == v6) {
            direct.entry(net.trunc()).or_default().push(i as u32);
        }
    }
    let mut out = BTreeMap::new();
    for net in direct.keys() {
        // Every shorter prefix that contains `net` contributes its rules.
        let mut set: Vec<u32> = (0..=net.prefix_len())
            .filter_map(|len| {
                let sup = IpNet::new(net.addr(), len).ok()?.trunc();
                direct.get(&sup)
            })
            .flatten()
            .copied()
            .collect();
        set.sort_unstable();
        set.dedup();
        out.insert(*net, set);
    }
    out
}

/// Port segments of one protocol slot: (first key, last key, rule set).
fn port_segments(rules: &[TableRule], slot: u32) -> Vec<(u32, u32, Vec<u32>)> {
    let mut covers: Vec<(u32, u32, u32)> = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        if r.protos.iter().any(|p| proto_slot(*p) == slot) {
            covers.extend(
                key_ranges(&r.matches)
                    .into_iter()
                    .map(|(a, b)| (a, b, i as u32)),
            );
        }
    }
    let mut bounds: Vec<u32> = covers.iter().flat_map(|(a, b, _)| [*a, b + 1]).collect();
    bounds.sort_unstable();
    bounds.dedup();
    bounds
        .windows(2)
        .filter_map(|w| {
            let (lo, hi) = (w[0], w[1] - 1);
            let mut set: Vec<u32> = covers
                .iter()
                .filter(|(a, b, _)| *a <= lo && hi <= *b)
                .map(|c| c.2)
                .collect();
            set.sort_unstable();
            set.dedup();
            (!set.is_empty()).then_some((lo, hi, set))
        })
        .collect()
}

/// The first element two ascending sets share.
fn first_common(a: &[u32], b: &[u32]) -> Option<u32> {
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => return Some(a[i]),
        }
    }
    None
}

/// Compile rules (in evaluation order) into tables. `config` supplies the non-geometry fields.
pub fn build(rules: &[TableRule], config: Config) -> Result<Tables, TableError> {
    if rules.len() > MAX_RULES as usize {
        return Err(TableError::TooManyRules {
            count: rules.len(),
            max: MAX_RULES,
        });
    }
    if let Some(r) = rules.iter().find(|r| r.slot >= MAX_RULES) {
        return Err(TableError::SlotOutOfRange {
            slot: r.slot,
            max: MAX_RULES,
        });
    }
    // Count distinct prefixes before flattening them: a site larger than the tries is refused
    // at once, not after the (linear, but not free) set computation.
    for v6 in [false, true] {
        let distinct: std::collections::HashSet<IpNet> = rules
            .iter()
            .flat_map(|r| r.sources.iter())
            .filter(|n| matches!(n, IpNet::V6(_)) == v6)
            .map(IpNet::trunc)
            .collect();
        if distinct.len() > MAX_PREFIXES as usize {
            return Err(TableError::TooManyPrefixes {
                family: if v6 { 6 } else { 4 },
                count: distinct.len(),
                max: MAX_PREFIXES,
            });
        }
    }
    let mut src_classes = Classes::default();
    let mut tables = Tables::empty();
    for v6 in [false, true] {
        let sets = source_sets(rules, v6);
        for (net, set) in sets {
            let class = src_classes.intern(set);
            match net {
                IpNet::V4(n) => tables
                    .src_v4
                    .push((n.addr().octets(), n.prefix_len(), class)),
                IpNet::V6(n) => tables
                    .src_v6
                    .push((n.addr().octets(), n.prefix_len(), class)),
            }
        }
    }
    let mut port_classes = Classes::default();
    for slot in 0..PROTO_SLOTS {
        for (lo, hi, set) in port_segments(rules, slot) {
            let class = port_classes.intern(set);
            let base = (slot * PORT_SPACE) as usize;
            for key in lo..=hi {
                tables.ports[base + key as usize] = class as u16;
            }
        }
    }
    let rows = src_classes.sets.len() as u32 + 1;
    let cols = port_classes.sets.len() as u32 + 1;
    if u64::from(rows) * u64::from(cols) > u64::from(MAX_DECISIONS) || cols > u32::from(u16::MAX) {
        return Err(TableError::DecisionTableTooLarge {
            src: rows,
            ports: cols,
            max: MAX_DECISIONS,
        });
    }
    let slot_of = |i: u32| rules[i as usize].slot + 1;
    let mut decisions = vec![0u32; (rows * cols) as usize];
    for (p, pset) in port_classes.sets.iter().enumerate() {
        let col = p + 1;
        decisions[col] = slot_of(pset[0]);
        for (s, sset) in src_classes.sets.iter().enumerate() {
            if let Some(first) = first_common(sset, pset) {
                decisions[(s + 1) * cols as usize + col] = slot_of(first);
            }
        }
    }
    tables.decisions = decisions;
    tables.config = Config {
        port_classes: cols,
        ..config
    };
    Ok(tables)
}

#[cfg(test)]
mod tests {
    use portguard_common::{classify::Outcome, reason::Reason, reference::RefEnv};

    use super::*;

    fn rule(
        slot: u32,
        sources: &[&str],
        proto: Proto,
        ports: std::ops::RangeInclusive<u16>,
    ) -> TableRule {
        TableRule {
            slot,
            sources: sources.iter().map(|s| s.parse().unwrap()).collect(),
            protos: vec![proto],
            matches: Match::Ports(vec![ports]),
        }
    }

    fn lookup(t: &Tables, src: [u8; 4], port: u16) -> Outcome {
        use portguard_common::{
            classify::classify,
            packet::{Family, Kind, L4Kind, Packet},
        };
        let mut env = RefEnv::new(t);
        let dst = [198, 18, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        env.local.insert((Family::V4, dst), 1);
        let mut s = [0u8; 16];
        s[..4].copy_from_slice(&src);
        let p = Packet {
            kind: Kind::Ip,
            src: s,
            dst,
            dst_known: true,
            proto: 6,
            l4: L4Kind::Ports,
            sport: 40000,
            dport: port,
            tcp_flags: 0x02,
            ..Packet::EMPTY
        };
        classify(&env, &p)
    }

    #[test]
    fn overlapping_prefixes_carry_the_shorter_prefixes_rules() {
        let rules = [
            rule(7, &["198.18.0.0/16"], Proto::Tcp, 22..=22),
            rule(9, &["198.18.2.0/24"], Proto::Tcp, 5900..=6923),
        ];
        let t = build(&rules, Config::default()).unwrap();
        assert_eq!(lookup(&t, [198, 18, 2, 5], 22), Outcome::Allow { slot: 7 });
        assert_eq!(
            lookup(&t, [198, 18, 2, 5], 6000),
            Outcome::Allow { slot: 9 }
        );
        assert_eq!(
            lookup(&t, [198, 18, 3, 5], 6000),
            Outcome::Deny {
                reason: Reason::SourceNotAllowed,
                hint: 10
            }
        );
        assert_eq!(
            lookup(&t, [198, 19, 3, 5], 22),
            Outcome::Deny {
                reason: Reason::NoSourceRole,
                hint: 8
            }
        );
        assert_eq!(
            lookup(&t, [198, 18, 3, 5], 23),
            Outcome::Deny {
                reason: Reason::PortNotOpen,
                hint: 0
            }
        );
    }

    #[test]
    fn first_rule_in_order_wins_and_ranges_split_into_segments() {
        let rules = [
            rule(0, &["198.18.0.0/24"], Proto::Tcp, 5989..=5989),
            rule(1, &["0.0.0.0/0"], Proto::Tcp, 5900..=6923),
        ];
        let t = build(&rules, Config::default()).unwrap();
        assert_eq!(
            lookup(&t, [198, 18, 0, 9], 5989),
            Outcome::Allow { slot: 0 }
        );
        assert_eq!(
            lookup(&t, [198, 18, 1, 9], 5989),
            Outcome::Allow { slot: 1 }
        );
        assert_eq!(
            lookup(&t, [198, 18, 0, 9], 5988),
            Outcome::Allow { slot: 1 }
        );
        // segments: [5900,5988] [5989] [5990,6923] -> 3 classes ({1}, {0,1}, {1} shares a class)
        assert_eq!(t.config.port_classes, 3);
    }

    #[test]
    fn limits_are_errors_not_truncation() {
        let rules: Vec<_> = (0..=MAX_RULES)
            .map(|i| rule(i, &["198.18.0.1/32"], Proto::Tcp, 1..=1))
            .collect();
        assert!(matches!(
            build(&rules, Config::default()),
            Err(TableError::TooManyRules { .. })
        ));
    }
}
