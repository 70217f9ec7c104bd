//! Warnings on a valid policy: mapped roles no enabled rule uses, rules an earlier rule
//! shadows, and documented contradictions switched on.

use std::collections::{BTreeMap, BTreeSet};

use super::{ANY, HOST, catalog::Catalog, site::SiteRole};
use crate::policy::{
    Match, Origin, Policy, Rule,
    diag::{Loc, Sink, SourceFile},
    files::SiteFile,
    ports,
};

/// Rules whose direction the product files document as doubtful (see the comments at them in
/// rhv.toml): enabling them is allowed, but should be a conscious choice.
const DOUBTFUL_RULES: &[&str] = &["RHV-H3", "RHV-H4"];
/// Features named after a documented contradiction they work around (`ovn-sb-6442-compat`,
/// `veeam-19000-reverse`): they open ports the documents disagree about.
const DOUBTFUL_FEATURE_WORDS: &[&str] = &["compat", "reverse"];

/// Enabled rules enforced on this site's hosts that admit a role the site gives no addresses.
/// For a managed role (the Manager, another hypervisor, a storage node: machines the host must
/// hear from) that is an error: the hosts would refuse it, and a host the Manager cannot reach
/// is declared non-responsive and fenced. For a client role it is a warning: those rules stay
/// inactive until the role is mapped. `at` is where the site maps roles.
pub(super) fn unmapped_sources(sink: &mut Sink, policy: &Policy, at: &Loc) {
    let site_hosts: BTreeSet<&str> = match &policy.host.roles {
        Some(roles) => roles.iter().map(String::as_str).collect(),
        None => policy
            .roles
            .values()
            .filter(|r| r.managed && !r.sources.is_empty())
            .map(|r| r.id.as_str())
            .collect(),
    };
    let mut missing: BTreeMap<&str, Vec<&Rule>> = BTreeMap::new();
    for rule in policy.rules.iter().filter(|r| r.enabled) {
        let here = rule
            .to
            .iter()
            .any(|t| t == HOST || site_hosts.contains(t.as_str()));
        if !here {
            continue;
        }
        for from in &rule.from {
            if policy.roles.get(from).is_some_and(|r| r.sources.is_empty()) {
                missing.entry(from).or_default().push(rule);
            }
        }
    }
    for (role, rules) in missing {
        let list = rules
            .iter()
            .map(|r| format!("{} ({}:{})", r.id, r.origin.file.display(), r.origin.line))
            .collect::<Vec<_>>()
            .join(", ");
        if policy.roles[role].managed {
            sink.error(
                at,
                format!(
                    "managed role `{role}` has no addresses, but enabled rules enforced on this \
                     site's hosts admit it: {list}; those hosts would refuse it (map `{role}` in \
                     [roles], or switch those rules' features off)"
                ),
            );
        } else {
            sink.warn(
                at,
                format!(
                    "role `{role}` has no addresses: {list} stay inactive on this site (map it \
                     in [roles], or switch those rules' features off)"
                ),
            );
        }
    }
}

/// A site role no enabled rule names: a typo'd feature list, or a leftover.
pub(super) fn unused_roles(sink: &mut Sink, rules: &[Rule], site: &BTreeMap<String, SiteRole>) {
    let used: BTreeSet<&str> = rules
        .iter()
        .filter(|r| r.enabled)
        .flat_map(|r| r.from.iter().chain(&r.to))
        .map(String::as_str)
        .collect();
    for (id, role) in site {
        if !used.contains(id.as_str()) {
            sink.warn(
                &role.loc,
                format!(
                    "role `{}` is mapped but no enabled rule uses it (is a feature off?)",
                    role.written
                ),
            );
        }
    }
}

/// An enabled rule every packet of which an earlier enabled rule already admits.
pub(super) fn shadowed_rules(sink: &mut Sink, rules: &[Rule]) {
    let enabled: Vec<&Rule> = rules.iter().filter(|r| r.enabled).collect();
    for (i, later) in enabled.iter().enumerate() {
        if let Some(earlier) = enabled[..i].iter().find(|e| rule_covers(e, later)) {
            let msg = format!(
                "rule `{}` is shadowed by `{}` ({}:{}): that earlier rule already admits all of its traffic, so it never matches first",
                later.id,
                earlier.id,
                earlier.origin.file.display(),
                earlier.origin.line
            );
            sink.warn(&origin_loc(&later.origin), msg);
        }
    }
}

/// Whether `outer` admits everything `inner` admits: protocols, ports/types, sources
/// (`any` covers all) and destinations (`host` covers all).
fn rule_covers(outer: &Rule, inner: &Rule) -> bool {
    let roles = |o: &[String], i: &[String], all: &str| {
        o.iter().any(|r| r == all) || i.iter().all(|r| o.contains(r))
    };
    inner.protos.iter().all(|p| outer.protos.contains(p))
        && match_covers(&outer.matches, &inner.matches)
        && roles(&outer.from, &inner.from, ANY)
        && roles(&outer.to, &inner.to, HOST)
}

fn match_covers(outer: &Match, inner: &Match) -> bool {
    match (outer, inner) {
        (Match::Ports(o), Match::Ports(i)) => ports::covers(o, i),
        (
            Match::Icmp {
                types: ot,
                code: oc,
            },
            Match::Icmp {
                types: it,
                code: ic,
            },
        ) => ports::covers(ot, it) && (oc.is_none() || oc == ic),
        (Match::Protocol(o), Match::Protocol(i)) => o == i,
        _ => false,
    }
}

fn origin_loc(origin: &Origin) -> Loc {
    Loc {
        file: origin.file.clone(),
        line: origin.line,
        col: 1,
    }
}

/// `acknowledged` names a feature or rule: a typo there would silently keep a warning.
pub(super) fn acknowledgements(
    sink: &mut Sink,
    src: &SourceFile,
    site: &SiteFile,
    policy: &Policy,
    catalog: &Catalog,
) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for name in &site.acknowledged {
        let n = name.get_ref();
        if catalog.features.contains_key(n) || policy.rules.iter().any(|r| &r.id == n) {
            out.insert(n.clone());
        } else {
            sink.error(
                &src.loc(&name.span()),
                format!("`acknowledged` names `{n}`, which is neither a feature nor a rule id"),
            );
        }
    }
    out
}

/// Documented contradictions switched on: allowed, but worth a second look.
pub(super) fn doubtful(
    sink: &mut Sink,
    policy: &Policy,
    catalog: &Catalog,
    switched_on: &BTreeMap<String, Loc>,
    acknowledged: &BTreeSet<String>,
) {
    for name in &policy.features {
        if !DOUBTFUL_FEATURE_WORDS.iter().any(|w| name.contains(w)) || acknowledged.contains(name) {
            continue;
        }
        let Some(decl) = catalog.features.get(name) else {
            continue;
        };
        let at = switched_on.get(name).unwrap_or(&decl.loc);
        let msg = format!(
            "feature `{name}` is on: it admits traffic the documents contradict each other about \
             ({}); list it in `acknowledged` once you have decided to keep it",
            decl.description
        );
        sink.warn(at, msg);
    }
    for rule in policy.rules.iter().filter(|r| {
        r.enabled && DOUBTFUL_RULES.contains(&r.id.as_str()) && !acknowledged.contains(&r.id)
    }) {
        let why = rule
            .note
            .as_deref()
            .unwrap_or("see the comment at the rule");
        sink.warn(
            &origin_loc(&rule.origin),
            format!(
                "rule `{}` is enabled, but its direction is documented as doubtful: {why} (list \
                 it in `acknowledged` once you have decided to keep it)",
                rule.id
            ),
        );
    }
}
