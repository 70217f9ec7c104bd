//! Rules: every rule of every product, validated (roles, protocols, ports or ICMP types,
//! conditions), in evaluation order, with ids unique across all of them.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt,
};

use toml::Spanned;

use super::{
    ANY, HOST, Product, SITE_PRODUCT,
    catalog::{Catalog, Resolved},
};
use crate::policy::{
    Match, Origin as RuleOrigin, Proto, Rule,
    diag::{Loc, Sink, SourceFile, did_you_mean},
    files::{ProtoSpec, RuleDecl, SiteFile, Str},
    ports::{self, ParamLookup},
};

/// What rule validation needs from the rest of the load.
pub(super) struct RuleCx<'a> {
    pub(super) catalog: &'a Catalog,
    pub(super) params: &'a BTreeMap<String, String>,
    pub(super) features: &'a BTreeSet<String>,
}

/// Which end of a rule a role list is.
#[derive(Clone, Copy)]
enum Side {
    From,
    To,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::From => "from",
            Self::To => "to",
        })
    }
}

/// Where a group of rules is written: a product file, or the site file and its drop-ins.
struct Origin<'a> {
    /// Product id, or [`SITE_PRODUCT`].
    product: &'a str,
    src: &'a SourceFile,
    /// Site rules may leave out `to` (this host) and `doc` (their own file and line).
    site: bool,
}

/// Every rule of every product, then the site's own, in evaluation order; ids must be unique
/// across all of them.
pub(super) fn build_rules(
    sink: &mut Sink,
    cx: &RuleCx<'_>,
    products: &[Product],
    site_src: &SourceFile,
    site: &SiteFile,
) -> Vec<Rule> {
    let groups = products
        .iter()
        .map(|p| {
            let from = Origin {
                product: &p.id,
                src: &p.src,
                site: false,
            };
            (from, &p.file.rules)
        })
        .chain(std::iter::once((
            Origin {
                product: SITE_PRODUCT,
                src: site_src,
                site: true,
            },
            &site.rules,
        )));
    let mut first_seen: HashMap<&str, Loc> = HashMap::new();
    let mut rules = Vec::new();
    for (origin, decls) in groups {
        for decl in decls {
            let id = decl.get_ref().id.get_ref();
            let at = origin.src.loc(&decl.get_ref().id.span());
            if let Some(first) = first_seen.get(id.as_str()) {
                // Both places are wrong until one is renamed: say so at each.
                let msg = format!(
                    "duplicate rule id `{id}`: also at {first} (counters and audit records are \
                     keyed by rule id; site rules conventionally start with SITE-)"
                );
                sink.error(&at, msg);
                let msg = format!("duplicate rule id `{id}`: also at {at}");
                sink.error(first, msg);
            } else {
                first_seen.insert(id, at);
            }
            rules.extend(build_rule(sink, cx, &origin, decl));
        }
    }
    rules
}

/// One rule; `None` when any part of it is wrong (every part is still checked).
fn build_rule(
    sink: &mut Sink,
    cx: &RuleCx<'_>,
    origin: &Origin<'_>,
    decl: &Spanned<RuleDecl>,
) -> Option<Rule> {
    let src = origin.src;
    let rule = decl.get_ref();
    let at = src.loc(&decl.span());
    let from = rule_roles(sink, cx.catalog, src, &rule.from, Side::From);
    let to = match &rule.to {
        Some(to) => rule_roles(sink, cx.catalog, src, to, Side::To),
        None if origin.site => Some(vec![HOST.to_owned()]),
        None => {
            sink.error(
                &at,
                "missing field `to` (the roles the rule is enforced on)",
            );
            None
        }
    };
    let doc = match &rule.doc {
        Some(doc) => Some(doc.clone()),
        None if origin.site => Some(format!("site rule, {at}")),
        None => {
            sink.error(
                &at,
                "missing field `doc` (the document and row the rule comes from)",
            );
            None
        }
    };
    let proto_match = rule_match(sink, cx, src, decl);
    let enabled = rule_enabled(sink, cx, src, &rule.when);
    let ((protos, matches), from, to, enabled, doc) = (proto_match?, from?, to?, enabled?, doc?);
    Some(Rule {
        id: rule.id.get_ref().clone(),
        product: origin.product.to_owned(),
        from,
        to,
        protos,
        matches,
        purpose: rule.purpose.clone(),
        doc,
        when: rule.when.iter().map(|w| w.get_ref().clone()).collect(),
        note: rule.note.clone(),
        enabled,
        origin: RuleOrigin {
            file: at.file,
            line: at.line,
        },
    })
}

/// The roles of `from` or `to`, canonical, without duplicates.
fn rule_roles(
    sink: &mut Sink,
    catalog: &Catalog,
    src: &SourceFile,
    list: &Spanned<Vec<Str>>,
    side: Side,
) -> Option<Vec<String>> {
    if list.get_ref().is_empty() {
        sink.error(
            &src.loc(&list.span()),
            format!("`{side}` is empty: a rule needs at least one role"),
        );
        return None;
    }
    let mut roles: Vec<String> = Vec::new();
    let mut ok = true;
    for name in list.get_ref() {
        match rule_role(catalog, name.get_ref(), side) {
            Ok(id) if roles.contains(&id) => {}
            Ok(id) => roles.push(id),
            Err(msg) => {
                sink.error(&src.loc(&name.span()), msg);
                ok = false;
            }
        }
    }
    ok.then_some(roles)
}

fn rule_role(catalog: &Catalog, name: &str, side: Side) -> Result<String, String> {
    match (catalog.resolve(name), side) {
        (Resolved::Builtin(ANY), Side::To) => Err(
            "`any` cannot be a destination: rules are enforced on managed hosts (`host` = every managed host)".to_owned(),
        ),
        (Resolved::Builtin(HOST), Side::From) => {
            Err("`host` cannot be a source: it has no addresses; name the roles that connect (or `any`)".to_owned())
        }
        (Resolved::Builtin(id) | Resolved::Role(id), _) => Ok(id.to_owned()),
        (Resolved::Unknown, _) => Err(format!(
            "unknown role `{name}` in `{side}`: no loaded product declares it{}",
            did_you_mean(name, catalog.role_names())
        )),
    }
}

/// Protocols and what they match: ports for tcp/udp/sctp, types (and a code) for ICMP.
fn rule_match(
    sink: &mut Sink,
    cx: &RuleCx<'_>,
    src: &SourceFile,
    decl: &Spanned<RuleDecl>,
) -> Option<(Vec<Proto>, Match)> {
    let lookup = |name: &str| cx.params.get(name).map(String::as_str);
    let proto = *decl.get_ref().proto.get_ref();
    if let Some(number) = proto.ip_protocol() {
        return protocol_match(sink, src, decl.get_ref(), number).map(|m| (vec![Proto::Ip], m));
    }
    let matches = match proto {
        ProtoSpec::Icmp | ProtoSpec::Icmpv6 => icmp_match(sink, src, decl.get_ref(), &lookup),
        _ => port_match(sink, src, decl, &lookup),
    }?;
    let protos = match proto {
        ProtoSpec::Udp => vec![Proto::Udp],
        ProtoSpec::Sctp => vec![Proto::Sctp],
        ProtoSpec::TcpUdp => vec![Proto::Tcp, Proto::Udp],
        ProtoSpec::Icmp => vec![Proto::Icmp],
        ProtoSpec::Icmpv6 => vec![Proto::Icmpv6],
        _ => vec![Proto::Tcp],
    };
    Some((protos, matches))
}

fn port_match(
    sink: &mut Sink,
    src: &SourceFile,
    decl: &Spanned<RuleDecl>,
    params: ParamLookup<'_>,
) -> Option<Match> {
    let rule = decl.get_ref();
    let proto = proto_name(*rule.proto.get_ref());
    let mut ok = true;
    let icmp_fields = [
        ("icmp_type", rule.icmp_type.as_ref().map(Spanned::span)),
        ("icmp_code", rule.icmp_code.as_ref().map(Spanned::span)),
    ];
    for (field, span) in icmp_fields {
        if let Some(span) = span {
            sink.error(
                &src.loc(&span),
                format!("`{field}` on a {proto} rule: only icmp and icmpv6 rules have ICMP types"),
            );
            ok = false;
        }
    }
    let Some(spec) = &rule.ports else {
        sink.error(
            &src.loc(&decl.span()),
            format!("missing `ports` on a {proto} rule (e.g. ports = \"443\")"),
        );
        return None;
    };
    let ports = ports::parse_ports(spec.get_ref(), params)
        .map_err(|e| {
            sink.error(
                &src.loc(&spec.span()),
                format!("bad port spec \"{spec}\": {e}"),
            );
        })
        .ok()?;
    ok.then_some(Match::Ports(ports))
}

fn icmp_match(
    sink: &mut Sink,
    src: &SourceFile,
    rule: &RuleDecl,
    params: ParamLookup<'_>,
) -> Option<Match> {
    let mut ok = true;
    if let Some(spec) = &rule.ports {
        let msg = format!(
            "`ports` on a {} rule: ICMP has no ports (use icmp_type)",
            proto_name(*rule.proto.get_ref())
        );
        sink.error(&src.loc(&spec.span()), msg);
        ok = false;
    }
    let types = match &rule.icmp_type {
        None => Some(vec![0..=u8::MAX]),
        Some(spec) => ports::parse_icmp_types(spec.get_ref(), params)
            .map_err(|e| {
                sink.error(
                    &src.loc(&spec.span()),
                    format!("bad icmp_type spec \"{spec}\": {e}"),
                );
            })
            .ok(),
    };
    let code = rule.icmp_code.as_ref().map(|c| *c.get_ref());
    if let (Some(written), Some(types)) = (&rule.icmp_code, &types) {
        let single =
            rule.icmp_type.is_some() && matches!(types.as_slice(), [t] if t.start() == t.end());
        if !single {
            sink.error(&src.loc(&written.span()), "`icmp_code` needs exactly one `icmp_type` (a code only means something for one type)");
            ok = false;
        }
    }
    let types = types?;
    ok.then_some(Match::Icmp { types, code })
}

/// A portless IP protocol (`proto = "igmp"`...): the protocol is the whole match.
fn protocol_match(sink: &mut Sink, src: &SourceFile, rule: &RuleDecl, number: u8) -> Option<Match> {
    let mut ok = true;
    let fields = [
        ("ports", rule.ports.as_ref().map(Spanned::span)),
        ("icmp_type", rule.icmp_type.as_ref().map(Spanned::span)),
        ("icmp_code", rule.icmp_code.as_ref().map(Spanned::span)),
    ];
    for (field, span) in fields {
        if let Some(span) = span {
            sink.error(
                &src.loc(&span),
                format!(
                    "`{field}` on a {} rule: that protocol has no ports or types",
                    proto_name(*rule.proto.get_ref())
                ),
            );
            ok = false;
        }
    }
    ok.then_some(Match::Protocol(number))
}

fn proto_name(proto: ProtoSpec) -> &'static str {
    match proto {
        ProtoSpec::Tcp => "tcp",
        ProtoSpec::Udp => "udp",
        ProtoSpec::Sctp => "sctp",
        ProtoSpec::TcpUdp => "tcp+udp",
        ProtoSpec::Icmp => "icmp",
        ProtoSpec::Icmpv6 => "icmpv6",
        ProtoSpec::Igmp => "igmp",
        ProtoSpec::Gre => "gre",
        ProtoSpec::Esp => "esp",
        ProtoSpec::Ah => "ah",
        ProtoSpec::Ospf => "ospf",
        ProtoSpec::Pim => "pim",
        ProtoSpec::Vrrp => "vrrp",
    }
}

/// Whether the features in force switch the rule on: every `when` entry holds (`!x` = x off).
fn rule_enabled(sink: &mut Sink, cx: &RuleCx<'_>, src: &SourceFile, when: &[Str]) -> Option<bool> {
    let mut ok = true;
    let mut enabled = true;
    for cond in when {
        let (negated, name) = cond
            .get_ref()
            .strip_prefix('!')
            .map_or((false, cond.get_ref().as_str()), |n| (true, n));
        if cx.catalog.features.contains_key(name) {
            enabled &= cx.features.contains(name) != negated;
        } else {
            let hint = did_you_mean(name, cx.catalog.features.keys().map(String::as_str));
            sink.error(
                &src.loc(&cond.span()),
                format!(
                    "`when` names unknown feature `{name}`: no loaded product declares it{hint}"
                ),
            );
            ok = false;
        }
    }
    ok.then_some(enabled)
}
