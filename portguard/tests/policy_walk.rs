//! Every rule of every product file, through the compiler and the reference classifier: a flow
//! from inside the rule's source roles to a port in its range is allowed by that rule, and the
//! same flow from outside every role is denied. Then the counts and ports of each product file
//! against the inventory in port-matrix.md §8.

use std::{collections::BTreeSet, net::IpAddr};

use ipnet::IpNet;
use portguard::{
    compile::{
        flow::{Flow, decide},
        for_host,
    },
    policy::{self, Match, Policy, Proto},
};
use portguard_common::classify::Outcome;

use crate::common::policies;

/// An address no example site maps to a role (198.19.255.0/24 and `2001:db8:ffff::/48`).
fn outsider(v4: bool) -> IpAddr {
    if v4 {
        "198.19.255.254".parse().unwrap()
    } else {
        "2001:db8:ffff::fe".parse().unwrap()
    }
}

/// A host address for the destination role (any address works: tables do not depend on it).
fn host_addr(v4: bool) -> IpAddr {
    if v4 {
        "198.19.254.1".parse().unwrap()
    } else {
        "2001:db8:fffe::1".parse().unwrap()
    }
}

/// The first usable address of a prefix.
fn inside(net: &IpNet) -> IpAddr {
    net.hosts().next().unwrap_or(net.addr())
}

/// A key (port, or ICMP type<<8|code) the rule covers for `proto`.
fn key(m: &Match) -> u16 {
    match m {
        Match::Ports(r) => {
            let r = &r[0];
            // The middle of the range: not only its edges are in force.
            r.start() + (r.end() - r.start()) / 2
        }
        Match::Icmp { types, code } => {
            u16::from(*types[0].start()) << 8 | u16::from(code.unwrap_or(0))
        }
        // A portless protocol: flows carry its number where ports go.
        Match::Protocol(n) => u16::from(*n),
    }
}

/// Walk every non-essentials rule of the products of `example`.
fn walk(example: &str) -> usize {
    let site = policies().join("examples").join(example);
    let base = policy::load(&site, &policies()).unwrap_or_else(|d| panic!("{example}: {d}"));
    let mut walked = 0;
    for (index, rule) in base.rules.iter().enumerate() {
        if rule.product == "essentials" {
            continue;
        }
        let mut p: Policy = base.clone();
        // Switch the rule on whatever its condition, and give its source roles addresses if the
        // example site leaves them unmapped, so every rule of the file is checked.
        p.rules[index].enabled = true;
        for (n, from) in rule.from.iter().enumerate() {
            if let Some(role) = p.roles.get_mut(from)
                && role.sources.is_empty()
            {
                role.sources = vec![
                    format!("198.19.{}.0/24", 100 + n).parse().unwrap(),
                    format!("2001:db8:ff{n:02x}::/64").parse().unwrap(),
                ];
            }
        }
        let dest = rule
            .to
            .iter()
            .find(|t| p.roles.contains_key(*t))
            .unwrap_or_else(|| panic!("{}: no destination role", rule.id))
            .clone();
        let host = for_host(&p, &[dest]).unwrap_or_else(|e| panic!("{example} {}: {e}", rule.id));
        let compiled = host
            .rules
            .iter()
            .find(|r| r.id == rule.id)
            .unwrap_or_else(|| panic!("{example} {}: not in force on its destination", rule.id));
        let position = host.rules.iter().position(|r| r.id == rule.id).unwrap();
        for proto in &compiled.protos {
            for src_net in &compiled.sources {
                let v4 = src_net.addr().is_ipv4();
                if (*proto == Proto::Icmp && !v4) || (*proto == Proto::Icmpv6 && v4) {
                    continue;
                }
                let flow = Flow {
                    src: inside(src_net),
                    dst: host_addr(v4),
                    proto: *proto,
                    sport: 40_000,
                    dport: key(&compiled.matches),
                };
                match decide(&host, &flow) {
                    Outcome::Allow { slot } => {
                        let by = host.rules.iter().position(|r| r.slot == slot).unwrap();
                        // Another rule may allow the same flow first (the failsafe, or a
                        // document that opens the port twice); it must come earlier.
                        assert!(
                            by <= position,
                            "{example} {}: {flow:?} allowed by later rule {}",
                            rule.id,
                            host.rules[by].id
                        );
                    }
                    other => panic!("{example} {}: {flow:?} not allowed: {other:?}", rule.id),
                }
                let any_source = compiled.sources.iter().any(|n| n.prefix_len() == 0);
                if any_source {
                    continue;
                }
                let from_outside = Flow {
                    src: outsider(v4),
                    ..flow
                };
                match decide(&host, &from_outside) {
                    Outcome::Deny { .. } => {}
                    // Only a rule open to every source may let an outsider in.
                    Outcome::Allow { slot } => {
                        let by = host.rules.iter().find(|r| r.slot == slot).unwrap();
                        assert!(
                            by.sources.iter().any(|n| n.contains(&outsider(v4))),
                            "{example} {}: outsider allowed by {}",
                            rule.id,
                            by.id
                        );
                    }
                    Outcome::Pass(r) => panic!("{example} {}: outsider passed: {r:?}", rule.id),
                }
            }
        }
        walked += 1;
    }
    walked
}

#[test]
fn every_rule_of_every_product_allows_its_roles_and_denies_outsiders() {
    let mut products = BTreeSet::new();
    let mut total = 0;
    for example in [
        "rhv.toml",
        "veeam-ovirt.toml",
        "veeam-proxmox.toml",
        "avi.toml",
        "kvmnet2.toml",
        "proxmox-ve.toml",
    ] {
        let n = walk(example);
        assert!(n > 0, "{example}: no rule walked");
        total += n;
        products.insert(example);
    }
    // Every rule of the six vendor files (COUNTS.md: 159 from port-matrix.md + 15 proxmox-ve).
    assert_eq!(total, 174, "rules walked");
}

/// §8 of port-matrix.md: one table row per product with its rule count, single ports and
/// ranges. Parsed from the file, so a change to the inventory shows up here.
fn matrix_row(prefix: &str) -> (BTreeSet<u16>, BTreeSet<(u16, u16)>) {
    // docs/port-matrix.md is a copy of the project's reference inventory.
    let text = std::fs::read_to_string(policies().join("../docs/port-matrix.md"))
        .expect("docs/port-matrix.md");
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("| {prefix}")))
        .unwrap_or_else(|| panic!("no §8 row for {prefix}"));
    let cols: Vec<&str> = line.split('|').collect();
    let numbers = |s: &str| -> Vec<String> {
        s.split(|c: char| !(c.is_ascii_digit() || c == '-'))
            .filter(|t| !t.is_empty() && t.chars().next().unwrap().is_ascii_digit())
            .map(str::to_owned)
            .collect()
    };
    let mut singles = BTreeSet::new();
    // Column 4 is "N: p1, p2, ..." (the leading count is not a port); the RHV row refers back
    // to the seed row's ports as "those 7", which is not a port either.
    let ports_col = cols[4]
        .split_once(':')
        .map_or(cols[4], |x| x.1)
        .replace("those 7", "");
    for t in numbers(&ports_col) {
        if let Ok(p) = t.parse::<u16>() {
            singles.insert(p);
        }
    }
    let mut ranges = BTreeSet::new();
    for t in numbers(cols[5]) {
        if let Some((a, b)) = t.split_once('-')
            && let (Ok(a), Ok(b)) = (a.parse(), b.parse())
        {
            ranges.insert((a, b));
        }
    }
    (singles, ranges)
}

/// Ports and ranges the product file opens, over all its rules, with the essentials every host
/// loads (KVM.net's DHCP client port 68 is there, not in kvmnet2.toml).
fn file_ports(product: &str) -> (BTreeSet<u16>, BTreeSet<(u16, u16)>) {
    let site = policies().join("examples").join(format!("{product}.toml"));
    let p = policy::load(&site, &policies()).unwrap();
    let mut singles = BTreeSet::new();
    let mut ranges = BTreeSet::new();
    for r in p
        .rules
        .iter()
        .filter(|r| r.product == product || r.product == "essentials")
    {
        if let Match::Ports(rs) = &r.matches {
            for x in rs {
                if x.start() == x.end() {
                    singles.insert(*x.start());
                } else {
                    ranges.insert((*x.start(), *x.end()));
                    singles.extend([*x.start(), *x.end()]);
                }
            }
        }
    }
    (singles, ranges)
}

#[test]
fn product_files_match_the_inventory_counts_and_ports() {
    // (file, rules in the file, rules in port-matrix.md §8, additions listed in COUNTS.md)
    let counts = [
        ("rhv", 40, 32, 8),
        ("veeam-ovirt", 13, 12, 1),
        ("veeam-proxmox", 49, 46, 3),
        ("avi", 42, 34, 8),
        ("kvmnet2", 15, 15, 0),
    ];
    for (product, file_rules, matrix, additions) in counts {
        let site = policies().join("examples").join(format!("{product}.toml"));
        let p = policy::load(&site, &policies()).unwrap();
        let n = p.rules.iter().filter(|r| r.product == product).count();
        assert_eq!(n, file_rules, "{product}: rules in the file");
        assert_eq!(
            n - additions,
            matrix,
            "{product}: rules of port-matrix.md §8"
        );
    }
    // Every single port and range §8 lists for a product is opened by some rule of its file.
    for (product, row) in [
        ("veeam-ovirt", "001"),
        ("avi", "002"),
        ("veeam-proxmox", "003"),
        ("kvmnet2", "004"),
        ("rhv", "000 RHV, full"),
        ("rhv", "000 RHV, seed"),
    ] {
        let (want_singles, want_ranges) = matrix_row(row);
        let (have_singles, have_ranges) = file_ports(product);
        let missing: Vec<_> = want_singles.difference(&have_singles).collect();
        assert!(
            missing.is_empty(),
            "{product}: §8 ports not in the file: {missing:?}"
        );
        let missing: Vec<_> = want_ranges.difference(&have_ranges).collect();
        assert!(
            missing.is_empty(),
            "{product}: §8 ranges not in the file: {missing:?}"
        );
    }
}
