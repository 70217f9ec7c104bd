//! A site's policy -> the rules that apply to one host, in evaluation order ([`select`]) ->
//! counter slots ([`slots`], the daemon's) -> datapath tables ([`tables`]).

use portguard_common::{
    config::{Config, DROP, JUDGE, MODE_AUDIT, MODE_ENFORCE, PASS},
    tables::Tables,
};
use serde::Serialize;

use crate::policy::{Mode, Policy};

pub mod flow;
pub mod select;
pub mod slots;
pub mod tables;

pub use select::{HostRule, Inactive, Selection, host_roles, roles_for, select};
pub use tables::{TableError, TableRule};

/// Id of the failsafe rule that always comes first.
pub const FAILSAFE_ID: &str = "FAILSAFE-SSH";

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

impl CompileError {
    /// Whether the policy is the problem (the site must change), not the machine.
    #[must_use]
    pub fn is_policy(&self) -> bool {
        !matches!(self, CompileError::Addresses(_))
    }
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

/// Build the datapath tables of a selection: the host's compiled policy.
pub fn build(policy: &Policy, selection: Selection) -> Result<HostPolicy, CompileError> {
    let Selection {
        roles,
        rules,
        inactive,
    } = selection;
    let table_rules: Vec<TableRule> = rules.iter().map(TableRule::from).collect();
    let mut tables = tables::build(&table_rules, config_for(policy))?;
    tables.config.policy_version = version_of(&tables);
    Ok(HostPolicy {
        roles,
        rules,
        inactive,
        tables,
    })
}

/// Select and build in one step, rules numbered in evaluation order (what `compile`,
/// `explain`, the lab and the tests use; the daemon numbers by stable slots instead).
pub fn for_host(policy: &Policy, roles: &[String]) -> Result<HostPolicy, CompileError> {
    build(policy, select(policy, roles)?)
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
        c.probe_ifindex,
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
