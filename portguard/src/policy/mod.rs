//! The policy as data: product files and a site file, read, validated and resolved.
//!
//! Raw serde types (`files`, as written) are separate from the validated [`Policy`] (as used),
//! the way ripgrep separates low-level arguments from resolved settings. Nothing here touches
//! BPF: `crate::compile` turns a `Policy` and a host's roles into tables.

use std::{
    collections::{BTreeMap, BTreeSet},
    ops::RangeInclusive,
    path::PathBuf,
};

use ipnet::IpNet;

mod diag;
mod digest;
mod files;
mod load;
mod ports;

pub use diag::{Diagnostic, Diagnostics, Severity};
pub use digest::site_sha256;
pub use load::{drop_ins, load};

/// Where rules are enforced: dropping (`enforce`) or only reporting (`audit`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Denied packets are dropped.
    #[default]
    Enforce,
    /// Denied packets pass and are reported as would-deny.
    Audit,
}

/// Transport protocol of a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
    /// ICMP for IPv4.
    Icmp,
    /// `ICMPv6`.
    Icmpv6,
    /// Another IP protocol, by number ([`Match::Protocol`]): IGMP, VRRP, GRE...
    Ip,
}

/// What a rule opens: ports for TCP/UDP/SCTP, types (and optionally one code) for ICMP.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Match {
    /// Destination port ranges (single ports are one-element ranges), sorted, merged.
    Ports(Vec<RangeInclusive<u16>>),
    /// ICMP type ranges (all types = `0..=255`), and an optional single code.
    Icmp {
        /// Type ranges.
        types: Vec<RangeInclusive<u8>>,
        /// Code, when the rule names one.
        code: Option<u8>,
    },
    /// An IP protocol number, for [`Proto::Ip`] (no ports, no types).
    Protocol(u8),
}

/// IP protocols a rule may name with `proto = "<name>"`, beside tcp, udp, sctp and ICMP:
/// what hosts of a cluster exchange without ports (RFC 1700 / IANA numbers).
pub const IP_PROTOCOLS: &[(&str, u8)] = &[
    ("igmp", 2),
    ("gre", 47),
    ("esp", 50),
    ("ah", 51),
    ("ospf", 89),
    ("pim", 103),
    ("vrrp", 112),
];

/// The name of IP protocol `n` in [`IP_PROTOCOLS`], else its number.
#[must_use]
pub fn ip_protocol_name(n: u8) -> String {
    IP_PROTOCOLS
        .iter()
        .find(|(_, v)| *v == n)
        .map_or_else(|| n.to_string(), |(name, _)| (*name).to_owned())
}

/// Where something was written: for messages and `compile`/`explain` output.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Origin {
    /// File path as given.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
}

/// One rule of a product file, validated, with roles resolved through aliases.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Rule {
    /// Document row id, e.g. `RHV-H10`; unique across all loaded products.
    pub id: String,
    /// Product id (file stem).
    pub product: String,
    /// Source roles, canonical ids (aliases resolved); `any` for every address.
    pub from: Vec<String>,
    /// Destination roles, canonical ids; `host` matches every managed host.
    pub to: Vec<String>,
    /// One or two protocols (`tcp+udp` gives two).
    pub protos: Vec<Proto>,
    /// Ports or ICMP types, with `${param}` substituted from the site or the default.
    pub matches: Match,
    /// Purpose text from the document.
    pub purpose: String,
    /// Document and row the rule comes from.
    pub doc: String,
    /// Feature conditions as written (`"ovn"`, `"!avi-v20"`).
    pub when: Vec<String>,
    /// Free note.
    pub note: Option<String>,
    /// Whether the site's features switch this rule on.
    pub enabled: bool,
    /// Where the rule is written.
    pub origin: Origin,
}

/// A role as the site defines it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Role {
    /// Canonical id.
    pub id: String,
    /// Description from the product file.
    pub description: String,
    /// Whether portguard can run on machines of this role.
    pub managed: bool,
    /// Address ranges from the site file (`any` becomes `0.0.0.0/0` and `::/0`); empty when the
    /// site does not map the role.
    pub sources: Vec<IpNet>,
    /// Whether the site wrote `"any"` for this role.
    pub any: bool,
}

/// What to do with classes of traffic the rules do not describe (`[datapath]` in the site file).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DatapathSettings {
    /// Broadcast/multicast to this host: `pass` (default) or `judge` by the rules.
    pub judge_broadcast: bool,
    /// Non-IP ethertypes other than ARP: pass (default) or drop.
    pub drop_non_ip: bool,
    /// Unicast for other addresses (bridged guests): pass (default) or drop.
    pub drop_not_for_host: bool,
}

/// Where the daemon sends audit records (`[audit] sink`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditSink {
    /// The JSON-lines file at `path` (the default; `portguard audit` reads it).
    #[default]
    File,
    /// The systemd journal, one entry per record with structured fields (native protocol).
    Journal,
    /// Both.
    Both,
}

impl AuditSink {
    /// Whether records go to the file.
    #[must_use]
    pub fn file(self) -> bool {
        matches!(self, AuditSink::File | AuditSink::Both)
    }

    /// Whether records go to the journal.
    #[must_use]
    pub fn journal(self) -> bool {
        matches!(self, AuditSink::Journal | AuditSink::Both)
    }
}

/// Audit settings (`[audit]` in the site file).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AuditSettings {
    /// Where records go: the file, the journal, or both.
    pub sink: AuditSink,
    /// JSON-lines file of aggregated denied flows.
    pub path: PathBuf,
    /// Events per second per CPU the datapath may emit.
    pub rate: u32,
    /// Burst size of the per-CPU token bucket.
    pub burst: u32,
    /// Rotate the file when it exceeds this many bytes.
    pub max_bytes: u64,
    /// Rotated files kept.
    pub keep: u32,
}

/// Per-host overrides (`[host]` in the site file).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct HostSettings {
    /// Roles of this host; else derived from its addresses.
    pub roles: Option<Vec<String>>,
    /// Interfaces to protect; else every interface with a global address.
    pub interfaces: Option<Vec<String>>,
}

/// A site's whole policy: every loaded product's rules and roles, resolved against the site file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Policy {
    /// The site file.
    pub site_file: PathBuf,
    /// Enforce or audit.
    pub mode: Mode,
    /// Products in force (always includes `essentials`, first).
    pub products: Vec<String>,
    /// Features in force (site's plus defaults, minus disabled).
    pub features: BTreeSet<String>,
    /// Every role declared by a loaded product, by canonical id.
    pub roles: BTreeMap<String, Role>,
    /// Alias id -> canonical id.
    pub aliases: BTreeMap<String, String>,
    /// Every rule of the loaded products, in evaluation order: essentials first, then products
    /// in the order the site lists them, rules in file order. Disabled rules are kept
    /// (`enabled = false`) so `compile` can show them.
    pub rules: Vec<Rule>,
    /// `[failsafe] ssh_from`: always allowed to tcp/22, ahead of every rule.
    pub failsafe_ssh: Vec<IpNet>,
    /// `[host]`.
    pub host: HostSettings,
    /// `[datapath]`.
    pub datapath: DatapathSettings,
    /// `[audit]`.
    pub audit: AuditSettings,
    /// Warnings found while loading (any sources, unused roles, contradictions in force...).
    pub warnings: Vec<Diagnostic>,
}
