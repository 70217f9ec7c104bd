//! A site's policy -> the rules that apply to one host, in evaluation order -> datapath tables.

use std::{collections::BTreeSet, net::IpAddr};

use ipnet::IpNet;
use portguard_common::{
    config::{Config, DROP, JUDGE, MODE_AUDIT, MODE_ENFORCE, PASS},
    reference::Tables,
};
use serde::Serialize;

use crate::policy::{Match, Mode, Origin, Policy, Proto};

pub mod flow;
pub mod tables;

pub use tables::{TableError, TableRule};

/// Id of the failsafe rule that always comes first.
pub const FAILSAFE_ID: &str = "FAILSAFE-SSH";

/// One rule in force on this host, with everything `compile`, `explain` and `status` show.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HostRule {
    /// Counter slot in the datapath.
    pub slot: u32,
    /// Rule id (document row), e.g. `RHV-H10`.
    pub id: String,
    /// Product, `essentials`, or `failsafe`.
    pub product: String,
    /// Purpose from the document.
    pub purpose: String,
    /// Document row.
    pub doc: String,
    /// Source roles.
    pub from: Vec<String>,
    /// Source prefixes (union of the roles' ranges).
    pub sources: Vec<IpNet>,
    /// Protocols.
    pub protos: Vec<Proto>,
    /// Ports or ICMP types.
    pub matches: Match,
    /// Where it is written (none for the failsafe, which comes from the site).
    pub origin: Option<Origin>,
}

impl From<&HostRule> for TableRule {
    fn from(r: &HostRule) -> Self {
        TableRule {
            slot: r.slot,
            sources: r.sources.clone(),
            protos: r.protos.clone(),
            matches: r.matches.clone(),
        }
    }
}

/// A rule that targets this host but cannot be enforced, with the reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Inactive {
    /// Rule id.
    pub id: String,
    /// Why it compiles to nothing.
    pub why: String,
}

/// The compiled slice of a site policy for one host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HostPolicy {
    /// The roles this host plays.
    pub roles: Vec<String>,
    /// Rules in evaluation order (slot = position unless a slot map was given).
    pub rules: Vec<HostRule>,
    /// Rules for this host that have no sources in the site file, or are disabled.
    pub inactive: Vec<Inactive>,
    /// The tables for the datapath.
    #[serde(skip)]
    pub tables: Tables,
}

/// Why a host's policy cannot be compiled.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// No role's ranges contain any of the host's addresses and no roles were given.
    #[error(
        "this host matches no role of the site file (addresses: {addresses}); list its roles in [host] roles \
         or pass --host-roles"
    )]
    NoRole {
        /// The addresses tried.
        addresses: String,
    },
    /// This machine's addresses could not be read.
    #[error("reading this machine's addresses")]
    Addresses(#[source] std::io::Error),
    /// A role named for the host does not exist.
    #[error("unknown host role `{0}`")]
    UnknownRole(String),
    /// The tables do not fit the datapath.
    #[error(transparent)]
    Tables(#[from] TableError),
}

/// The roles a host with these addresses plays: every managed role whose site ranges contain
/// one of them (roles mapped to `any` are skipped: they would match every host).
#[must_use]
pub fn roles_for(policy: &Policy, addrs: &[IpAddr]) -> Vec<String> {
    policy
        .roles
        .values()
        .filter(|r| {
            r.managed
                && !r.any
                && r.sources
                    .iter()
                    .any(|n| addrs.iter().any(|a| n.contains(a)))
        })
        .map(|r| r.id.clone())
        .collect()
}

/// The roles of the host being compiled for: those `given` (aliases resolved), else the site's
/// `[host] roles`, else derived from `dst` or, without it, from this machine's addresses.
pub fn host_roles(
    policy: &Policy,
    given: &[String],
    dst: Option<IpAddr>,
) -> Result<Vec<String>, CompileError> {
    if !given.is_empty() {
        return Ok(given
            .iter()
            .map(|r| policy.aliases.get(r).cloned().unwrap_or_else(|| r.clone()))
            .collect());
    }
    if let Some(r) = &policy.host.roles {
        return Ok(r.clone());
    }
    let addrs = match dst {
        Some(d) => vec![d],
        None => {
            crate::host::addresses()
                .map_err(CompileError::Addresses)?
                .unicast
        }
    };
    let roles = roles_for(policy, &addrs);
    if roles.is_empty() {
        return Err(CompileError::NoRole {
            addresses: addrs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    Ok(roles)
}

fn config_for(policy: &Policy) -> Config {
    let d = &policy.datapath;
    Config {
        mode: if policy.mode == Mode::Audit {
            MODE_AUDIT
        } else {
            MODE_ENFORCE
        },
        broadcast: if d.judge_broadcast { JUDGE } else { PASS },
        non_ip: if d.drop_non_ip { DROP } else { PASS },
        not_for_host: if d.drop_not_for_host { DROP } else { PASS },
        audit_rate: policy.audit.rate,
        audit_burst: policy.audit.burst,
        ..Config::default()
    }
}

#[expect(
    clippy::similar_names,
    reason = "`roles` and `rules` are the domain's own words"
)]
/// Compile the rules that apply to a host playing `roles`. `slot_of` gives each rule id its
/// counter slot (the daemon keeps them stable across reloads); `None` numbers rules in order.
pub fn for_host(
    policy: &Policy,
    roles: &[String],
    slot_of: Option<&dyn Fn(&str) -> u32>,
) -> Result<HostPolicy, CompileError> {
    for r in roles {
        if !policy.roles.contains_key(r) {
            return Err(CompileError::UnknownRole(r.clone()));
        }
    }
    let mine: BTreeSet<&str> = roles.iter().map(String::as_str).chain(["host"]).collect();
    let mut rules = Vec::new();
    let mut inactive = Vec::new();
    let mut next = 0u32;
    let mut slot = |id: &str| {
        let s = slot_of.map_or(next, |f| f(id));
        next += 1;
        s
    };
    if !policy.failsafe_ssh.is_empty() {
        rules.push(HostRule {
            slot: slot(FAILSAFE_ID),
            id: FAILSAFE_ID.to_owned(),
            product: "failsafe".to_owned(),
            purpose: "site failsafe: SSH for administrators, ahead of every rule".to_owned(),
            doc: format!("{} [failsafe] ssh_from", policy.site_file.display()),
            from: vec!["failsafe.ssh_from".to_owned()],
            sources: policy.failsafe_ssh.clone(),
            protos: vec![Proto::Tcp],
            matches: Match::Ports(vec![22..=22]),
            origin: None,
        });
    }
    for rule in &policy.rules {
        if !rule.to.iter().any(|t| mine.contains(t.as_str())) {
            continue;
        }
        if !rule.enabled {
            inactive.push(Inactive {
                id: rule.id.clone(),
                why: format!("condition not met: {}", rule.when.join(", ")),
            });
            continue;
        }
        let mut sources = Vec::new();
        for from in &rule.from {
            if from == "any" {
                sources.extend(["0.0.0.0/0", "::/0"].map(|s| s.parse::<IpNet>().expect("literal")));
            } else if let Some(role) = policy.roles.get(from) {
                sources.extend(role.sources.iter().copied());
            }
        }
        sources.sort();
        sources.dedup();
        if sources.is_empty() {
            inactive.push(Inactive {
                id: rule.id.clone(),
                why: format!(
                    "no addresses for source role(s) {} in the site file",
                    rule.from.join(", ")
                ),
            });
            continue;
        }
        rules.push(HostRule {
            slot: slot(&rule.id),
            id: rule.id.clone(),
            product: rule.product.clone(),
            purpose: rule.purpose.clone(),
            doc: rule.doc.clone(),
            from: rule.from.clone(),
            sources,
            protos: rule.protos.clone(),
            matches: rule.matches.clone(),
            origin: Some(rule.origin.clone()),
        });
    }
    let table_rules: Vec<TableRule> = rules.iter().map(TableRule::from).collect();
    let mut tables = tables::build(&table_rules, config_for(policy))?;
    tables.config.policy_version = version_of(&tables);
    Ok(HostPolicy {
        roles: roles.to_vec(),
        rules,
        inactive,
        tables,
    })
}

/// A stable hash of the tables: equal tables, equal version (FNV-1a over the contents).
#[must_use]
pub fn version_of(t: &Tables) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    let c = Config {
        policy_version: 0,
        ..t.config
    };
    for v in [
        c.mode,
        c.broadcast,
        c.non_ip,
        c.not_for_host,
        c.port_classes,
        c.audit_rate,
        c.audit_burst,
        c.diagnostics,
    ] {
        feed(&v.to_le_bytes());
    }
    for (a, l, cl) in &t.src_v4 {
        feed(a);
        feed(&[*l]);
        feed(&cl.to_le_bytes());
    }
    for (a, l, cl) in &t.src_v6 {
        feed(a);
        feed(&[*l]);
        feed(&cl.to_le_bytes());
    }
    for p in &t.ports {
        feed(&p.to_le_bytes());
    }
    for d in &t.decisions {
        feed(&d.to_le_bytes());
    }
    h
}
