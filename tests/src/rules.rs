//! Table rules as the packet-level tests write them: compiled rules straight to the datapath's
//! tables, without a policy file, so a test states exactly what is open.

use portguard::{
    compile::tables::TableRule,
    policy::{Match, Proto},
};

use crate::addrs::{ANYWHERE, PEERS};

/// Rule `slot`: `protos` matching `matches` from `sources` (prefixes as text).
#[must_use]
pub fn rule(slot: u32, sources: &[&str], protos: &[Proto], matches: Match) -> TableRule {
    TableRule {
        slot,
        sources: sources
            .iter()
            .map(|s| s.parse().expect("a prefix"))
            .collect(),
        protos: protos.to_vec(),
        matches,
    }
}

/// Rule `slot`: tcp/22 from [`PEERS`].
#[must_use]
pub fn ssh_from_peers(slot: u32) -> TableRule {
    rule(slot, &PEERS, &[Proto::Tcp], Match::Ports(vec![22..=22]))
}

/// Rule `slot`: ICMP and `ICMPv6` echo requests from [`ANYWHERE`], which gives every source a
/// source class (a stranger to another rule is then "source not allowed", not "no role").
#[must_use]
pub fn echo_from_anywhere(slot: u32) -> TableRule {
    rule(
        slot,
        &ANYWHERE,
        &[Proto::Icmp, Proto::Icmpv6],
        Match::Icmp {
            types: vec![8..=8, 128..=128],
            code: None,
        },
    )
}
