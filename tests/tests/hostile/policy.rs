//! The policy every hostile case is judged against: a few open ports from the peers' networks,
//! echo and two ICMP errors from anywhere, and the two datapath configurations the campaign
//! alternates between.

use std::net::IpAddr;

use integration_tests::{
    addrs::{ANYWHERE, BCAST4, HOST4, HOST6, PEERS},
    rules::{echo_from_anywhere, rule, ssh_from_peers},
};
use portguard::{
    compile::tables::TableRule,
    policy::{Match, Proto},
};
use portguard_common::config::{Config, DROP as CFG_DROP, JUDGE};

/// Rule slots, named so the corpus reads as the policy does.
pub(super) const SSH: u32 = 0;
pub(super) const DNS: u32 = 1;
pub(super) const TOP: u32 = 2;
pub(super) const ECHO: u32 = 3;
pub(super) const DIAMETER: u32 = 4;
pub(super) const UNREACH: u32 = 5;
pub(super) const TOO_BIG: u32 = 6;

/// A few open ports from the peers' networks, echo and two ICMP errors from anywhere. Port 0
/// is never open (the loader refuses it); port 65535 is open on TCP only.
pub(super) fn rules() -> Vec<TableRule> {
    let icmp = |types: Vec<std::ops::RangeInclusive<u8>>| Match::Icmp { types, code: None };
    vec![
        ssh_from_peers(SSH),
        rule(
            DNS,
            &PEERS,
            &[Proto::Tcp, Proto::Udp],
            Match::Ports(vec![53..=53]),
        ),
        rule(
            TOP,
            &PEERS,
            &[Proto::Tcp],
            Match::Ports(vec![65535..=65535]),
        ),
        echo_from_anywhere(ECHO),
        rule(
            DIAMETER,
            &PEERS,
            &[Proto::Sctp],
            Match::Ports(vec![3868..=3868]),
        ),
        rule(UNREACH, &ANYWHERE, &[Proto::Icmp], icmp(vec![3..=3])),
        rule(TOO_BIG, &ANYWHERE, &[Proto::Icmpv6], icmp(vec![2..=2])),
    ]
}

/// The datapath's defaults: pass ARP, other ethertypes, other hosts' unicast and broadcast.
pub(super) fn lenient() -> Config {
    Config::default()
}

/// Everything optional switched the other way: judge broadcast, drop the rest.
pub(super) fn strict() -> Config {
    Config {
        broadcast: JUDGE,
        non_ip: CFG_DROP,
        not_for_host: CFG_DROP,
        ..Config::default()
    }
}

/// The host's addresses: (unicast, broadcast).
pub(super) fn locals() -> (Vec<IpAddr>, Vec<IpAddr>) {
    (
        vec![IpAddr::from(HOST4), IpAddr::from(HOST6)],
        vec![IpAddr::from(BCAST4)],
    )
}
