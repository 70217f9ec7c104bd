//! `portguard suggest`: the site changes that a rollout's audit records (and the rule
//! counters) argue for, as a reviewable diff of the site file. Nothing is applied.
//!
//! Three kinds of findings:
//! - a source refused on a port a documented rule opens to other sources (the datapath's hint
//!   names the rule): map the source into one of that rule's roles;
//! - refused flows that a rule of a feature now off would allow: switch the feature on (found
//!   by compiling the site with the feature on and replaying the flows through the reference
//!   classifier, the one the XDP program runs);
//! - rules that saw no traffic over the window (from the daemon's last-hit times, which
//!   survive restarts): listed for review, not edited, since a rule used once a quarter
//!   (fencing, migration) may be the one that matters.
//!
//! Every proposed edit is tried before it is shown: the edited site must load and compile,
//! and must allow the flows it is proposed for.

pub mod edit;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::{Path, PathBuf},
};

use jiff::{SignedDuration, Timestamp};
use portguard_common::classify::Outcome;
use serde::Serialize;

use self::edit::SiteEdit;
use crate::{
    audit::{
        query::target,
        record::{FlowRecord, Record},
    },
    compile::{
        self, HostPolicy,
        flow::{Decider, Flow},
    },
    error_chain as chain,
    policy::{Diagnostics, Policy, Proto},
    state::{SavedSample, State},
};

/// Why no suggestions could be made.
#[derive(Debug, thiserror::Error)]
pub enum SuggestError {
    /// The site as it is does not load.
    #[error("the site policy has errors")]
    Policy(#[from] Diagnostics),
    /// It does not compile for this host.
    #[error("compiling the policy for this host")]
    Compile(#[from] compile::CompileError),
    /// A site file could not be read.
    #[error("reading {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A site file is not TOML (it loaded a moment ago: it changed meanwhile).
    #[error("{path} is not TOML")]
    Toml {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: Box<toml_edit::TomlError>,
    },
    /// A copy of the edited site could not be written to try it.
    #[error("writing {path}")]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// What `suggest` works from.
#[derive(Debug)]
pub struct Input<'a> {
    /// The site file.
    pub site: &'a Path,
    /// The product files.
    pub policies: &'a Path,
    /// The host's roles when given (`--host-roles`); else the daemon's, the site's `[host]`
    /// roles, or those of the flows' destination.
    pub host_roles: &'a [String],
    /// Audit records (flows of other kinds are ignored).
    pub records: &'a [Record],
    /// The start of the window.
    pub since: Timestamp,
    /// The daemon's state and last sample, when there is a run directory.
    pub state: Option<&'a State>,
    /// The daemon's last counter sample.
    pub sample: Option<&'a SavedSample>,
}

/// Denied packets of one kind, over the window.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Seen {
    /// Packets.
    pub packets: u64,
    /// First one.
    pub first_seen: Option<Timestamp>,
    /// Last one.
    pub last_seen: Option<Timestamp>,
    /// What they were sent to: `tcp/5900`, `icmp/8:0`.
    pub targets: BTreeSet<String>,
}

impl Seen {
    fn add(&mut self, f: &FlowRecord) {
        self.packets += f.count;
        self.first_seen = Some(
            self.first_seen
                .map_or(f.first_seen, |t| t.min(f.first_seen)),
        );
        self.last_seen = Some(self.last_seen.map_or(f.last_seen, |t| t.max(f.last_seen)));
        self.targets.insert(target(f));
    }

    /// `312 packets over 3 days`.
    fn describe(&self) -> String {
        let span = match (self.first_seen, self.last_seen) {
            (Some(a), Some(b)) => b.duration_since(a),
            _ => SignedDuration::ZERO,
        };
        let hours = span.as_hours();
        let over = if hours >= 48 {
            format!(" over {} days", hours / 24)
        } else if hours >= 2 {
            format!(" over {hours} hours")
        } else if span.as_mins() >= 2 {
            format!(" over {} minutes", span.as_mins())
        } else {
            String::new()
        };
        format!(
            "{} packet{}{over}",
            self.packets,
            if self.packets == 1 { "" } else { "s" }
        )
    }
}

/// Map a source into a role.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Mapping {
    /// The source refused.
    pub source: IpAddr,
    /// The role to add it to: of the hinted rule's roles, the one the fewest enabled rules
    /// name (what grants the least besides).
    pub role: String,
    /// The hinted rule's other roles that would do too.
    pub alternatives: Vec<String>,
    /// The rule that opens the port to that role.
    pub rule: String,
    /// What was refused.
    pub seen: Seen,
}

/// Switch a feature on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Feature {
    /// The feature.
    pub feature: String,
    /// The rules of the feature that would have allowed the flows.
    pub rules: Vec<String>,
    /// The sources refused, each with its roles in the site.
    pub sources: BTreeMap<IpAddr, Vec<String>>,
    /// What was refused.
    pub seen: Seen,
}

/// A change that would allow observed flows but does not load or compile as it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Blocked {
    /// The change (`enable serial-console`, `map 198.18.4.7 into rhv.x`).
    pub change: String,
    /// Why the site would not load with it.
    pub why: String,
}

/// A rule of this host that saw no traffic over the window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Idle {
    /// Rule id.
    pub rule: String,
    /// Product.
    pub product: String,
    /// Purpose.
    pub purpose: String,
    /// When it last matched, if ever since the daemon began watching it.
    pub last_hit: Option<Timestamp>,
    /// Since when the daemon has watched it.
    pub watched_since: Option<Timestamp>,
}

/// Everything `suggest` found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Suggestions {
    /// Start of the window.
    pub since: Timestamp,
    /// Flow records read in the window.
    pub flows: usize,
    /// Sources to map into roles.
    pub mappings: Vec<Mapping>,
    /// Features to switch on.
    pub features: Vec<Feature>,
    /// Changes that would allow flows but do not load as they are.
    pub blocked: Vec<Blocked>,
    /// Rules with no traffic in the window (`None`: no daemon state to tell).
    pub idle: Option<Vec<Idle>>,
    /// Refused flows that the current site already allows (it changed since).
    pub already_allowed: Seen,
    /// Refused flows no change here explains, by source and target.
    pub unexplained: Vec<(IpAddr, String, u64)>,
    /// The edits, as a unified diff of the site file (and drop-ins).
    pub diff: String,
}

/// A denied flow as the classifier takes it, from an audit record.
fn flow_of(f: &FlowRecord) -> Option<Flow> {
    let (src, dst, number) = (f.src?, f.dst?, f.proto_number?);
    let (proto, dport) = match number {
        6 => (Proto::Tcp, f.dport?),
        17 => (Proto::Udp, f.dport?),
        132 => (Proto::Sctp, f.dport?),
        1 | 58 => (
            if number == 1 {
                Proto::Icmp
            } else {
                Proto::Icmpv6
            },
            u16::from(f.icmp_type?) << 8 | u16::from(f.icmp_code?),
        ),
        n => (Proto::Ip, u16::from(n)),
    };
    Some(Flow {
        src,
        dst,
        proto,
        sport: f.sport.unwrap_or(40_000),
        dport,
    })
}

/// Host policies of one site, by destination address (the host's roles may come from it).
struct Hosts<'a> {
    policy: &'a Policy,
    given: Vec<String>,
    by_dst: BTreeMap<IpAddr, HostPolicy>,
}

impl<'a> Hosts<'a> {
    fn new(policy: &'a Policy, given: &[String]) -> Self {
        Hosts {
            policy,
            given: given.to_vec(),
            by_dst: BTreeMap::new(),
        }
    }

    fn for_dst(&mut self, dst: IpAddr) -> Result<&HostPolicy, compile::CompileError> {
        if !self.by_dst.contains_key(&dst) {
            let roles = compile::host_roles(self.policy, &self.given, Some(dst))?;
            let hp = compile::for_host(self.policy, &roles)?;
            self.by_dst.insert(dst, hp);
        }
        Ok(&self.by_dst[&dst])
    }

    /// The classifier's outcome for `flow`, and the id of the rule that allowed it.
    fn decide(&mut self, flow: &Flow) -> Result<(Outcome, Option<String>), compile::CompileError> {
        let hp = self.for_dst(flow.dst)?;
        let outcome = Decider::new(hp).decide(flow);
        let rule = match outcome {
            Outcome::Allow { slot } => hp
                .rules
                .iter()
                .find(|r| r.slot == slot)
                .map(|r| r.id.clone()),
            _ => None,
        };
        Ok((outcome, rule))
    }
}

/// Work out the suggestions.
pub fn suggest(input: &Input<'_>) -> Result<Suggestions, SuggestError> {
    let policy = crate::policy::load(input.site, input.policies)?;
    // The daemon's roles, unless others are given: the host the records come from.
    let given: Vec<String> = if input.host_roles.is_empty() {
        input.state.map(|s| s.roles.clone()).unwrap_or_default()
    } else {
        input.host_roles.to_vec()
    };
    let mut now = Hosts::new(&policy, &given);
    let flows: Vec<&FlowRecord> = input
        .records
        .iter()
        .filter_map(|r| match r {
            Record::Flow(f) if f.last_seen >= input.since => Some(f),
            _ => None,
        })
        .collect();
    let mut already_allowed = Seen::default();
    let mut denied: Vec<(&FlowRecord, Flow)> = Vec::new();
    for f in &flows {
        let Some(flow) = flow_of(f) else { continue };
        match now.decide(&flow)?.0 {
            Outcome::Deny { .. } => denied.push((f, flow)),
            _ => already_allowed.add(f),
        }
    }
    let mut edit = SiteEdit::read(input.site)?;
    let mut blocked = Vec::new();
    let (mappings, rest) = mappings(
        &policy,
        &given,
        input.policies,
        &denied,
        &mut edit,
        &mut blocked,
    )?;
    let (features, rest) = features(
        &policy,
        &given,
        input.policies,
        &rest,
        &mut edit,
        &mut blocked,
    )?;
    let mut unexplained: BTreeMap<(IpAddr, String), u64> = BTreeMap::new();
    for (f, flow) in &rest {
        *unexplained.entry((flow.src, target(f))).or_default() += f.count;
    }
    let mut unexplained: Vec<(IpAddr, String, u64)> = unexplained
        .into_iter()
        .map(|((s, t), n)| (s, t, n))
        .collect();
    unexplained.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| (a.0, &a.1).cmp(&(b.0, &b.1))));
    Ok(Suggestions {
        since: input.since,
        flows: flows.len(),
        mappings,
        features,
        blocked,
        idle: idle(input),
        already_allowed,
        unexplained,
        diff: edit.diff(),
    })
}

type Denied<'r> = Vec<(&'r FlowRecord, Flow)>;

/// Sources refused on a port a rule opens to other sources: map them into one of its roles.
fn mappings<'r>(
    policy: &Policy,
    given: &[String],
    policies: &Path,
    denied: &Denied<'r>,
    edit: &mut SiteEdit,
    blocked: &mut Vec<Blocked>,
) -> Result<(Vec<Mapping>, Denied<'r>), SuggestError> {
    let uses = |role: &str| {
        policy
            .rules
            .iter()
            .filter(|r| r.enabled && r.from.iter().any(|f| f == role))
            .count()
    };
    // (source, rule) -> the flows
    let mut groups: BTreeMap<(IpAddr, String), Vec<(&'r FlowRecord, Flow)>> = BTreeMap::new();
    let mut rest = Vec::new();
    for (f, flow) in denied {
        let hinted = f
            .rule
            .as_ref()
            .filter(|_| matches!(f.reason.as_str(), "no-source-role" | "source-not-allowed"));
        match hinted.and_then(|id| policy.rules.iter().find(|r| &r.id == id)) {
            Some(rule) => groups
                .entry((flow.src, rule.id.clone()))
                .or_default()
                .push((*f, *flow)),
            None => rest.push((*f, *flow)),
        }
    }
    let mut out = Vec::new();
    for ((src, rule_id), group) in groups {
        let rule = policy
            .rules
            .iter()
            .find(|r| r.id == rule_id)
            .expect("found above");
        // Roles a site can map: not `any`, not the host itself.
        let mut roles: Vec<&String> = rule
            .from
            .iter()
            .filter(|r| policy.roles.contains_key(*r))
            .collect();
        roles.sort_by_key(|r| uses(r));
        let Some(chosen) = roles.first() else {
            rest.extend(group);
            continue;
        };
        let mut trial = edit.clone();
        trial.add_to_role(chosen, src);
        match allows(&trial, policies, given, &group)? {
            Ok(true) => {
                *edit = trial;
                let mut seen = Seen::default();
                for (f, _) in &group {
                    seen.add(f);
                }
                out.push(Mapping {
                    source: src,
                    role: (*chosen).clone(),
                    alternatives: roles[1..].iter().map(|r| (*r).clone()).collect(),
                    rule: rule_id,
                    seen,
                });
            }
            Ok(false) => rest.extend(group),
            Err(why) => {
                blocked.push(Blocked {
                    change: format!("map {src} into {chosen}"),
                    why,
                });
                rest.extend(group);
            }
        }
    }
    Ok((out, rest))
}

/// Refused flows that a rule of a feature now off would allow: switch the feature on.
fn features<'r>(
    policy: &Policy,
    given: &[String],
    policies: &Path,
    denied: &Denied<'r>,
    edit: &mut SiteEdit,
    blocked: &mut Vec<Blocked>,
) -> Result<(Vec<Feature>, Denied<'r>), SuggestError> {
    // Features some disabled rule waits for (`when = ["x"]`, not `"!x"`) and the site has off.
    let off: BTreeSet<&str> = policy
        .rules
        .iter()
        .filter(|r| !r.enabled)
        .flat_map(|r| r.when.iter())
        .filter(|w| !w.starts_with('!') && !policy.features.contains(w.as_str()))
        .map(String::as_str)
        .collect();
    let mut rest: Denied<'r> = denied.clone();
    let mut out = Vec::new();
    for feature in off {
        if rest.is_empty() {
            break;
        }
        let mut trial = edit.clone();
        trial.enable_feature(feature);
        let loaded = match trial.load(policies)? {
            Ok(p) => p,
            Err(d) => {
                // Only worth saying if the feature's rules would match the flows at all.
                if rest.iter().any(|(_, flow)| opens(policy, feature, flow)) {
                    blocked.push(Blocked {
                        change: format!("enable {feature}"),
                        why: d.to_string(),
                    });
                }
                continue;
            }
        };
        let gated: BTreeSet<&str> = loaded
            .rules
            .iter()
            .filter(|r| r.enabled && r.when.iter().any(|w| w == feature))
            .map(|r| r.id.as_str())
            .collect();
        let mut hosts = Hosts::new(&loaded, given);
        let mut allowed = Vec::new();
        let mut still = Vec::new();
        for (f, flow) in rest {
            match hosts.decide(&flow) {
                Ok((_, Some(rule))) if gated.contains(rule.as_str()) => {
                    allowed.push((f, flow, rule));
                }
                Ok(_) => still.push((f, flow)),
                Err(e) => {
                    blocked.push(Blocked {
                        change: format!("enable {feature}"),
                        why: chain(&e),
                    });
                    still.push((f, flow));
                }
            }
        }
        rest = still;
        if allowed.is_empty() {
            continue;
        }
        *edit = trial;
        let mut seen = Seen::default();
        let mut rules = BTreeSet::new();
        let mut sources: BTreeMap<IpAddr, Vec<String>> = BTreeMap::new();
        for (f, flow, rule) in &allowed {
            seen.add(f);
            rules.insert(rule.clone());
            sources.entry(flow.src).or_insert_with(|| {
                policy
                    .roles
                    .values()
                    .filter(|r| r.sources.iter().any(|n| n.contains(&flow.src)))
                    .map(|r| r.id.clone())
                    .collect()
            });
        }
        out.push(Feature {
            feature: feature.to_owned(),
            rules: rules.into_iter().collect(),
            sources,
            seen,
        });
    }
    Ok((out, rest))
}

/// Whether a rule of `feature` opens the protocol and port of `flow` (to anyone).
fn opens(policy: &Policy, feature: &str, flow: &Flow) -> bool {
    use crate::policy::Match;
    policy
        .rules
        .iter()
        .filter(|r| r.when.iter().any(|w| w == feature))
        .any(|r| {
            r.protos.contains(&flow.proto)
                && match &r.matches {
                    Match::Ports(p) => p.iter().any(|p| p.contains(&flow.dport)),
                    Match::Icmp { types, code } => {
                        let (t, c) = ((flow.dport >> 8) as u8, (flow.dport & 0xff) as u8);
                        types.iter().any(|x| x.contains(&t)) && code.is_none_or(|k| k == c)
                    }
                    Match::Protocol(n) => u16::from(*n) == flow.dport,
                }
        })
}

/// Whether the edited site loads, compiles and allows every flow of `group`; `Err` with why
/// when it does not load or compile.
fn allows(
    edit: &SiteEdit,
    policies: &Path,
    given: &[String],
    group: &[(&FlowRecord, Flow)],
) -> Result<Result<bool, String>, SuggestError> {
    let policy = match edit.load(policies)? {
        Ok(p) => p,
        Err(d) => return Ok(Err(d.to_string())),
    };
    let mut hosts = Hosts::new(&policy, given);
    for (_, flow) in group {
        match hosts.decide(flow) {
            Ok((Outcome::Allow { .. }, _)) => {}
            Ok(_) => return Ok(Ok(false)),
            Err(e) => return Ok(Err(chain(&e))),
        }
    }
    Ok(Ok(true))
}

/// Rules of this host with no hit since the window began, from the daemon's sample.
fn idle(input: &Input<'_>) -> Option<Vec<Idle>> {
    let state = input.state?;
    let sample = input.sample?;
    let since = input.since.as_second();
    let at = |s: u64| {
        i64::try_from(s)
            .ok()
            .filter(|s| *s > 0)
            .and_then(|s| Timestamp::from_second(s).ok())
    };
    Some(
        state
            .rules
            .iter()
            // Essentials and the failsafe are not the site's choice: nothing to review.
            .filter(|r| r.active && !matches!(r.product.as_str(), "essentials" | "failsafe"))
            .filter_map(|r| {
                let h = sample.hits.get(&r.id).copied().unwrap_or_default();
                let last = i64::try_from(h.last).unwrap_or(i64::MAX);
                (last < since).then(|| Idle {
                    rule: r.id.clone(),
                    product: r.product.clone(),
                    purpose: r.purpose.clone(),
                    last_hit: at(h.last),
                    watched_since: at(h.since),
                })
            })
            .collect(),
    )
}

/// The report a person reads (as `#` comments, which `patch` skips), then the diff.
#[must_use]
pub fn render(s: &Suggestions) -> String {
    let mut out = format!(
        "# portguard suggest: {} denied flow records since {}\n",
        s.flows,
        day(Some(s.since))
    );
    render_changes(&mut out, s);
    render_review(&mut out, s);
    if s.diff.is_empty() {
        out.push_str("#\n# No site change to suggest.\n");
    } else {
        out.push_str(
            "#\n# The changes, as a diff (review it; `patch SITE_FILE < this` applies it):\n",
        );
        out.push_str(&s.diff);
    }
    out
}

fn day(t: Option<Timestamp>) -> String {
    t.map_or_else(
        || "never".to_owned(),
        |t| t.strftime("%Y-%m-%d %H:%M UTC").to_string(),
    )
}

/// The mappings and features the diff makes, and those that cannot be made as they are.
fn render_changes(out: &mut String, s: &Suggestions) {
    use std::fmt::Write as _;
    if !s.mappings.is_empty() {
        out.push_str("#\n# Sources refused on ports a rule opens to other sources:\n");
    }
    for m in &s.mappings {
        let targets: Vec<&str> = m.seen.targets.iter().map(String::as_str).collect();
        let _ = write!(
            out,
            "#   {} -> {} ({}), {}: add it to `{}`",
            m.source,
            targets.join(", "),
            m.rule,
            m.seen.describe(),
            m.role
        );
        if !m.alternatives.is_empty() {
            let _ = write!(out, " (or: {})", m.alternatives.join(", "));
        }
        out.push('\n');
    }
    if !s.features.is_empty() {
        out.push_str("#\n# Flows a feature that is off would allow:\n");
    }
    for f in &s.features {
        let targets: Vec<&str> = f.seen.targets.iter().map(String::as_str).collect();
        let from: Vec<String> = f
            .sources
            .iter()
            .map(|(a, roles)| {
                if roles.is_empty() {
                    a.to_string()
                } else {
                    format!("{a} ({})", roles.join(", "))
                }
            })
            .collect();
        let _ = writeln!(
            out,
            "#   {} from {} ({}), {}: enable `{}`",
            targets.join(", "),
            from.join(", "),
            f.rules.join(", "),
            f.seen.describe(),
            f.feature
        );
    }
    for b in &s.blocked {
        let _ = writeln!(
            out,
            "#\n# Would allow refused flows, but the site does not load with it: {}\n#   {}",
            b.change,
            b.why.replace('\n', "\n#   ")
        );
    }
}

/// What is for review only: idle rules, flows already allowed, flows nothing explains.
fn render_review(out: &mut String, s: &Suggestions) {
    use std::fmt::Write as _;
    match &s.idle {
        None => out.push_str(
            "#\n# Rules without traffic: unknown (no daemon state in the run directory)\n",
        ),
        Some(idle) if idle.is_empty() => {}
        Some(idle) => {
            let _ = writeln!(
                out,
                "#\n# Rules of this host that saw no traffic since {} (review them; not in the \
                 diff):",
                day(Some(s.since))
            );
            for i in idle {
                let named = if s.mappings.iter().any(|m| m.rule == i.rule) {
                    " (refused flows named it: see above)"
                } else {
                    ""
                };
                let _ = writeln!(
                    out,
                    "#   {} ({}): {}; last hit {}, watched since {}{named}",
                    i.rule,
                    i.product,
                    i.purpose,
                    day(i.last_hit),
                    day(i.watched_since)
                );
            }
        }
    }
    if s.already_allowed.packets > 0 {
        let _ = writeln!(
            out,
            "#\n# Already allowed by the site as it is now: {}",
            s.already_allowed.describe()
        );
    }
    if !s.unexplained.is_empty() {
        out.push_str("#\n# Refused, and no change here would allow them:\n");
        for (src, target, n) in s.unexplained.iter().take(10) {
            let _ = writeln!(
                out,
                "#   {src} -> {target}: {n} packet{}",
                if *n == 1 { "" } else { "s" }
            );
        }
        if s.unexplained.len() > 10 {
            let _ = writeln!(out, "#   ... and {} more", s.unexplained.len() - 10);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::Origin;

    fn flow(src: &str, dport: u16, reason: &str, rule: Option<&str>, count: u64) -> Record {
        Record::Flow(FlowRecord {
            origin: Origin::default(),
            first_seen: "2026-11-28T10:00:00Z".parse().unwrap(),
            last_seen: "2026-12-01T09:00:00Z".parse().unwrap(),
            interface: Some("eth1".into()),
            ifindex: 2,
            vlan: None,
            src: Some(src.parse().unwrap()),
            dst: Some("198.18.60.2".parse().unwrap()),
            proto: Some("tcp".into()),
            proto_number: Some(6),
            sport: Some(40_000),
            dport: Some(dport),
            icmp_type: None,
            icmp_code: None,
            tcp_flags: Some("S".into()),
            reason: reason.into(),
            rule: rule.map(Into::into),
            would_deny: true,
            count,
            bytes: count * 60,
        })
    }

    #[test]
    fn proposes_the_mapping_and_the_feature_and_leaves_the_rest() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let site = dir.join("site.toml");
        std::fs::write(
            &site,
            "products = [\"rhv\"]\nmode = \"audit\"\n\n[roles]\n\
             \"rhv.manager\" = [\"198.18.60.1/32\"]\n\
             \"rhv.host\" = [\"198.18.60.1/32\", \"198.18.60.2/32\"]\n\
             \"rhv.vm-portal-client\" = [\"198.18.60.100/32\"]\n\n\
             [host]\nroles = [\"rhv.host\"]\n",
        )
        .unwrap();
        let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
        let records = [
            flow("198.18.4.7", 5900, "no-source-role", Some("RHV-H5"), 300),
            flow("198.18.4.7", 5901, "no-source-role", Some("RHV-H5"), 12),
            flow("198.18.60.1", 2223, "port-not-open", None, 4),
            flow("198.18.60.1", 23, "port-not-open", None, 2),
        ];
        let s = suggest(&Input {
            site: &site,
            policies: &policies,
            host_roles: &[],
            records: &records,
            since: "2026-11-20T00:00:00Z".parse().unwrap(),
            state: None,
            sample: None,
        })
        .unwrap();
        assert_eq!(s.flows, 4);
        assert_eq!(s.mappings.len(), 1, "{s:#?}");
        let m = &s.mappings[0];
        assert_eq!(
            (m.source.to_string(), m.role.as_str(), m.rule.as_str()),
            ("198.18.4.7".into(), "rhv.vm-portal-client", "RHV-H5")
        );
        assert_eq!(m.alternatives, ["rhv.admin-portal-client"]);
        assert_eq!(m.seen.packets, 312);
        assert_eq!(m.seen.describe(), "312 packets over 2 days");
        assert_eq!(s.features.len(), 1, "{s:#?}");
        assert_eq!(s.features[0].feature, "serial-console");
        assert_eq!(s.features[0].rules, ["RHV-H2"]);
        assert!(s.blocked.is_empty(), "{:?}", s.blocked);
        assert_eq!(
            s.unexplained,
            [("198.18.60.1".parse().unwrap(), "tcp/23".to_owned(), 2)]
        );
        assert_eq!(s.idle, None);
        assert!(
            s.diff.contains("+features = [\"serial-console\"]"),
            "{}",
            s.diff
        );
        assert!(
            s.diff
                .contains("+\"rhv.vm-portal-client\" = [\"198.18.60.100/32\", \"198.18.4.7/32\"]"),
            "{}",
            s.diff
        );
        let text = render(&s);
        assert!(text.contains(
            "198.18.4.7 -> tcp/5900, tcp/5901 (RHV-H5), 312 packets over 2 days: add it to \
             `rhv.vm-portal-client` (or: rhv.admin-portal-client)"
        ));
        assert!(text.contains("tcp/2223 from 198.18.60.1 (rhv.host, rhv.manager) (RHV-H2)"));
        // Records already allowed by the site as it is are not proposed again.
        let mut applied = SiteEdit::read(&site).unwrap();
        applied.enable_feature("serial-console");
        for (path, text) in applied.changed() {
            std::fs::write(path, text).unwrap();
        }
        let again = suggest(&Input {
            site: &site,
            policies: &policies,
            host_roles: &[],
            records: &records,
            since: "2026-11-20T00:00:00Z".parse().unwrap(),
            state: None,
            sample: None,
        })
        .unwrap();
        assert!(again.features.is_empty(), "{again:#?}");
        assert_eq!(again.already_allowed.packets, 4);
    }

    #[test]
    fn records_become_classifier_flows() {
        let Record::Flow(mut f) = flow("198.18.4.7", 5900, "port-not-open", None, 1) else {
            unreachable!()
        };
        let got = flow_of(&f).unwrap();
        assert_eq!(
            (got.proto, got.dport, got.sport),
            (Proto::Tcp, 5900, 40_000)
        );
        (f.proto, f.proto_number, f.dport, f.icmp_type, f.icmp_code) =
            (Some("icmp".into()), Some(1), None, Some(8), Some(0));
        assert_eq!(
            flow_of(&f).map(|x| (x.proto, x.dport)),
            Some((Proto::Icmp, 8 << 8))
        );
        (f.proto, f.proto_number) = (Some("gre".into()), Some(47));
        assert_eq!(
            flow_of(&f).map(|x| (x.proto, x.dport)),
            Some((Proto::Ip, 47))
        );
        f.src = None;
        assert_eq!(flow_of(&f), None);
    }
}
