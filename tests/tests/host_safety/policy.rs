//! The policies of the host-safety tests: site files compiled for a host by the real loader
//! and compiler against the shipped policy files, with test rules appended.

use std::{collections::BTreeMap, net::IpAddr};

use integration_tests::{Scratch, daemon::policies_dir};
use ipnet::IpNet;
use portguard::{
    compile::{
        for_host,
        tables::{TableRule, build},
    },
    policy::{self, Match, Proto},
};
use portguard_common::tables::Tables;

/// The failsafe range of sites whose test is not about the failsafe (no test address is in it).
pub(super) const ELSEWHERE: &str = "198.18.250.0/24";

/// A compiled host policy: the tables, and every rule's counter slot by id.
pub(super) struct Compiled {
    pub(super) tables: Tables,
    pub(super) slots: BTreeMap<String, u32>,
}

impl Compiled {
    /// The counter slot of rule `id`; panics naming the rules in force when it is not one.
    pub(super) fn slot(&self, id: &str) -> u32 {
        *self
            .slots
            .get(id)
            .unwrap_or_else(|| panic!("rule {id} is not in force: {:?}", self.slots.keys()))
    }
}

/// Compile the site file `site` for a host playing `roles` against the shipped policy files,
/// then append `extra` rules (test ports) after them, the way a product's rules follow
/// essentials. The real loader and compiler decide what essentials and failsafe contribute.
pub(super) fn compile(site: &str, roles: &[&str], extra: &[(&str, TableRule)]) -> Compiled {
    let dir = Scratch::new("pg-safety-site-");
    let path = dir.0.join("site.toml");
    std::fs::write(&path, site).expect("write site file");
    let policy = policy::load(&path, &policies_dir())
        .unwrap_or_else(|d| panic!("site file does not load:\n{d}\n{site}"));
    let roles: Vec<String> = roles.iter().map(ToString::to_string).collect();
    let host = for_host(&policy, &roles).expect("compile for host");
    let mut table_rules: Vec<TableRule> = host.rules.iter().map(TableRule::from).collect();
    let mut slots: BTreeMap<String, u32> =
        host.rules.iter().map(|r| (r.id.clone(), r.slot)).collect();
    for (id, rule) in extra {
        let slot = table_rules.len() as u32;
        table_rules.push(TableRule {
            slot,
            ..rule.clone()
        });
        slots.insert((*id).to_owned(), slot);
    }
    let tables = build(&table_rules, host.tables.config).expect("tables");
    Compiled { tables, slots }
}

/// A site file with no products (essentials only), the failsafe given, and extra TOML.
pub(super) fn site(failsafe: &[&str], extra: &str) -> String {
    let list: Vec<String> = failsafe.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "products = []\nmode = \"enforce\"\n{extra}\n[failsafe]\nssh_from = [{}]\n",
        list.join(", ")
    )
}

/// A test rule: `ports` of `proto` open to exactly `from` (host addresses).
pub(super) fn open(from: &[IpAddr], proto: Proto, ports: u16) -> TableRule {
    TableRule {
        slot: 0,
        sources: from.iter().map(|a| IpNet::from(*a)).collect(),
        protos: vec![proto],
        matches: Match::Ports(vec![ports..=ports]),
    }
}
