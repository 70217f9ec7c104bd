//! Which rules of a site policy apply to one host, in evaluation order: the failsafe first, then
//! every enabled rule whose destination roles include one of the host's, with its sources
//! resolved from the site's role ranges.

use std::{collections::BTreeSet, net::IpAddr};

use ipnet::IpNet;
use serde::Serialize;

use super::{CompileError, FAILSAFE_ID, TableRule};
use crate::policy::{Match, Origin, Policy, Proto};

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

/// The rules a host enforces, before they become tables.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Selection {
    /// The roles this host plays.
    pub roles: Vec<String>,
    /// Rules in evaluation order (slot = position until [`Selection::with_slots`]).
    pub rules: Vec<HostRule>,
    /// Rules for this host that have no sources in the site file, or are disabled.
    pub inactive: Vec<Inactive>,
}

impl Selection {
    /// Give every rule the counter slot `slot_of` says (the daemon's stable slots).
    #[must_use]
    pub fn with_slots(mut self, slot_of: impl Fn(&str) -> u32) -> Self {
        for r in &mut self.rules {
            r.slot = slot_of(&r.id);
        }
        self
    }
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

#[expect(
    clippy::similar_names,
    reason = "`roles` and `rules` are the domain's own words"
)]
/// The rules that apply to a host playing `roles`, in evaluation order, numbered in that order
/// (the daemon gives them stable slots with [`Selection::with_slots`] before building tables).
pub fn select(policy: &Policy, roles: &[String]) -> Result<Selection, CompileError> {
    for r in roles {
        if !policy.roles.contains_key(r) {
            return Err(CompileError::UnknownRole(r.clone()));
        }
    }
    let mine: BTreeSet<&str> = roles.iter().map(String::as_str).chain(["host"]).collect();
    let mut rules = Vec::new();
    let mut inactive = Vec::new();
    let mut next = 0u32;
    let mut slot = || {
        next += 1;
        next - 1
    };
    if !policy.failsafe_ssh.is_empty() {
        rules.push(HostRule {
            slot: slot(),
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
            slot: slot(),
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
    Ok(Selection {
        roles: roles.to_vec(),
        rules,
        inactive,
    })
}
