//! The site's choices: features and parameters in force, role addresses, the failsafe, and the
//! `[host]`, `[datapath]` and `[audit]` settings.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
};

use ipnet::IpNet;
use toml::Spanned;

use super::{
    ANY,
    catalog::{Catalog, Resolved},
};
use crate::policy::{
    AuditSettings, AuditSink, DatapathSettings, HostSettings, Mode,
    diag::{Loc, Sink, SourceFile, did_you_mean},
    files::{
        AuditSection, BroadcastSpec, DatapathSection, ModeSpec, PassDrop, SinkSpec, SiteFile, Str,
    },
    ports,
};

const DEFAULT_AUDIT_RATE: u32 = 100;
const DEFAULT_AUDIT_BURST: u32 = 200;
const DEFAULT_AUDIT_MAX_BYTES: u64 = 10 * 1024 * 1024;
const DEFAULT_AUDIT_KEEP: u32 = 5;
/// Linux interface names are at most `IFNAMSIZ - 1` bytes.
const MAX_IFNAME: usize = 15;

/// Features in force (declared defaults + site features - disabled features), and where the
/// site switched each one on (for warnings).
pub(super) fn features_in_force(
    sink: &mut Sink,
    catalog: &Catalog,
    src: &SourceFile,
    site: &SiteFile,
) -> (BTreeSet<String>, BTreeMap<String, Loc>) {
    let mut on: BTreeSet<String> = catalog
        .features
        .iter()
        .filter(|(_, f)| f.default)
        .map(|(n, _)| n.clone())
        .collect();
    let mut switched_on = BTreeMap::new();
    for name in &site.features {
        let at = src.loc(&name.span());
        if check_feature(sink, catalog, &at, name.get_ref()) {
            on.insert(name.get_ref().clone());
            switched_on.insert(name.get_ref().clone(), at);
        }
    }
    for name in &site.disabled_features {
        let at = src.loc(&name.span());
        if !check_feature(sink, catalog, &at, name.get_ref()) {
            continue;
        }
        if switched_on.contains_key(name.get_ref()) {
            sink.error(
                &at,
                format!("feature `{name}` is both in `features` and in `disabled_features`"),
            );
        }
        on.remove(name.get_ref());
    }
    (on, switched_on)
}

/// Reports a feature name no loaded product declares; true when it is declared.
fn check_feature(sink: &mut Sink, catalog: &Catalog, at: &Loc, name: &str) -> bool {
    if catalog.features.contains_key(name) {
        return true;
    }
    let hint = did_you_mean(name, catalog.features.keys().map(String::as_str));
    sink.error(
        at,
        format!("unknown feature `{name}`: no loaded product declares it{hint}"),
    );
    false
}

/// Parameter values: the site's where given, else the declared defaults.
pub(super) fn params_in_force(
    sink: &mut Sink,
    catalog: &Catalog,
    src: &SourceFile,
    site: &SiteFile,
) -> BTreeMap<String, String> {
    let mut values: BTreeMap<String, String> = catalog
        .params
        .iter()
        .map(|(name, p)| (name.clone(), p.default.clone()))
        .collect();
    let mut set_at: BTreeMap<&str, Loc> = BTreeMap::new();
    for (name, value) in &site.params {
        let at = src.loc(&name.span());
        if let Some(first) = set_at.get(name.get_ref().as_str()) {
            // A drop-in may add a param, not silently change one another file sets.
            sink.error(
                &at,
                format!("param `{name}` is set again (first at {first})"),
            );
            sink.error(first, format!("param `{name}` is set again at {at}"));
            continue;
        }
        set_at.insert(name.get_ref(), at);
        if !catalog.params.contains_key(name.get_ref()) {
            let hint = did_you_mean(name.get_ref(), catalog.params.keys().map(String::as_str));
            sink.error(
                &src.loc(&name.span()),
                format!("unknown param `{name}`: no loaded product declares it{hint}"),
            );
            continue;
        }
        match ports::parse_param_value(value.get_ref()) {
            Ok(_) => {
                values.insert(name.get_ref().clone(), value.get_ref().clone());
            }
            Err(e) => sink.error(
                &src.loc(&value.span()),
                format!("bad value \"{value}\" for param `{name}`: {e}"),
            ),
        }
    }
    values
}

/// A role as the site maps it.
pub(super) struct SiteRole {
    /// The name the site wrote (the canonical id or an alias).
    pub(super) written: String,
    pub(super) sources: Vec<IpNet>,
    pub(super) any: bool,
    pub(super) loc: Loc,
}

/// `[roles]`, by canonical id. A role may be mapped under its id or an alias, once per file;
/// a drop-in that maps it again adds ranges to it.
pub(super) fn site_roles(
    sink: &mut Sink,
    catalog: &Catalog,
    src: &SourceFile,
    site: &SiteFile,
) -> BTreeMap<String, SiteRole> {
    let mut out: BTreeMap<String, SiteRole> = BTreeMap::new();
    // Every mapping, even those with bad addresses, so that a second mapping is still caught.
    let mut first_mapping: BTreeMap<String, (&str, Loc)> = BTreeMap::new();
    for (name, list) in &site.roles {
        let at = src.loc(&name.span());
        let Some(id) = site_role_id(sink, catalog, &at, name.get_ref()) else {
            continue;
        };
        if let Some((written, first)) = first_mapping.get(&id)
            && first.file == at.file
        {
            let msg = format!(
                "role `{id}` is mapped twice: as `{written}` at {first} and as `{name}` here (an alias and its target are the same role); map it once"
            );
            sink.error(&at, msg);
            continue;
        }
        first_mapping.insert(id.clone(), (name.get_ref(), at.clone()));
        if list.get_ref().is_empty() {
            let msg = format!(
                "role `{name}` is mapped to an empty list: list its addresses, or remove the line to leave it unmapped"
            );
            sink.error(&at, msg);
            continue;
        }
        let Some((sources, any)) = parse_sources(sink, src, list.get_ref()) else {
            continue;
        };
        if any {
            sink.warn(
                &at,
                format!("role `{name}` is mapped to any: every address counts as `{name}`"),
            );
        }
        match out.get_mut(&id) {
            // A drop-in adds ranges to a role an earlier file maps.
            Some(earlier) => {
                for net in sources {
                    if !earlier.sources.contains(&net) {
                        earlier.sources.push(net);
                    }
                }
                earlier.any |= any;
            }
            None => {
                out.insert(
                    id,
                    SiteRole {
                        written: name.get_ref().clone(),
                        sources,
                        any,
                        loc: at,
                    },
                );
            }
        }
    }
    out
}

/// The canonical id of a role the site names (in `[roles]` or `[host] roles`).
fn site_role_id(sink: &mut Sink, catalog: &Catalog, at: &Loc, name: &str) -> Option<String> {
    match catalog.resolve(name) {
        Resolved::Role(id) => Some(id.to_owned()),
        Resolved::Builtin(id) => {
            sink.error(at, format!("`{id}` is a built-in role (any = every address, host = every managed host): a site does not map it"));
            None
        }
        Resolved::Unknown => {
            let hint = did_you_mean(name, catalog.role_names());
            sink.error(
                at,
                format!("unknown role `{name}`: no loaded product declares it{hint}"),
            );
            None
        }
    }
}

/// A list of CIDRs / addresses, or `["any"]` (`0.0.0.0/0` and `::/0`); the flag says it was `any`.
fn parse_sources(sink: &mut Sink, src: &SourceFile, list: &[Str]) -> Option<(Vec<IpNet>, bool)> {
    if let Some(any) = list.iter().find(|s| s.get_ref() == ANY) {
        if list.len() > 1 {
            sink.error(
                &src.loc(&any.span()),
                "\"any\" must be the only entry (it already covers every address)",
            );
            return None;
        }
        let every = [
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        ];
        let every = every
            .into_iter()
            .filter_map(|a| IpNet::new(a, 0).ok())
            .collect();
        return Some((every, true));
    }
    let mut nets: Vec<IpNet> = Vec::new();
    // A set beside the list: a role may list hundreds of thousands of prefixes.
    let mut seen = std::collections::HashSet::new();
    let mut ok = true;
    for text in list {
        match parse_net(text.get_ref()) {
            Ok(net) if !seen.insert(net) => {}
            Ok(net) => nets.push(net),
            Err(msg) => {
                sink.error(&src.loc(&text.span()), msg);
                ok = false;
            }
        }
    }
    ok.then_some((nets, false))
}

/// `198.18.1.10`, `198.18.1.0/24`, `2001:db8::/64`: bare addresses are /32 or /128; a prefix
/// with host bits set is refused (it is usually a typo for the network or the address).
fn parse_net(text: &str) -> Result<IpNet, String> {
    if let Ok(addr) = text.parse::<IpAddr>() {
        return Ok(IpNet::from(addr));
    }
    let Ok(net) = text.parse::<IpNet>() else {
        return Err(bad_net(text));
    };
    if net.addr() != net.network() {
        return Err(format!(
            "`{text}` has host bits set: did you mean the network {} (or the single address {}/{})?",
            net.trunc(),
            net.addr(),
            net.max_prefix_len()
        ));
    }
    Ok(net)
}

/// Why `text` is not an address or CIDR, as precisely as cheaply possible.
fn bad_net(text: &str) -> String {
    let example = "e.g. 198.18.1.10, 198.18.2.0/24, 2001:db8::/64, or \"any\"";
    match text.split_once('/') {
        Some((addr, len)) => match (addr.parse::<IpAddr>(), len.parse::<u8>()) {
            (Err(_), _) => format!("`{text}`: `{addr}` is not an IPv4 or IPv6 address ({example})"),
            (Ok(a), Ok(n)) => {
                let max = if a.is_ipv4() { 32 } else { 128 };
                format!("`{text}`: prefix length /{n} is longer than {max} bits")
            }
            (Ok(_), Err(_)) => format!("`{text}`: `{len}` is not a prefix length"),
        },
        None => format!("`{text}` is not an IPv4/IPv6 address or CIDR ({example})"),
    }
}

/// `[failsafe] ssh_from`.
pub(super) fn failsafe(sink: &mut Sink, src: &SourceFile, site: &SiteFile) -> Vec<IpNet> {
    let list = &site.failsafe.ssh_from;
    let Some(first) = list.first() else {
        let msg = "no [failsafe] ssh_from: a policy mistake can lock administrators out of SSH";
        sink.warn(&Loc::start_of(&src.path), msg);
        return Vec::new();
    };
    let Some((nets, any)) = parse_sources(sink, src, list) else {
        return Vec::new();
    };
    if any {
        sink.warn(
            &src.loc(&first.span()),
            "failsafe ssh_from is any: tcp/22 is open to every address on every host",
        );
    }
    nets
}

/// `[host]`: roles (canonical) and interface names.
pub(super) fn host_settings(
    sink: &mut Sink,
    catalog: &Catalog,
    src: &SourceFile,
    site: &SiteFile,
) -> HostSettings {
    let roles = site.host.roles.as_ref().map(|list| {
        let mut ids: Vec<String> = Vec::new();
        for name in list {
            let at = src.loc(&name.span());
            let Some(id) = site_role_id(sink, catalog, &at, name.get_ref()) else {
                continue;
            };
            if catalog.roles.get(&id).is_some_and(|r| !r.managed) {
                sink.warn(&at, format!("role `{name}` is not a managed role: portguard is not expected to run on it"));
            }
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        ids
    });
    let interfaces = site.host.interfaces.as_ref().map(|list| {
        list.iter()
            .filter(|name| check_interface(sink, src, name))
            .map(|name| name.get_ref().clone())
            .collect()
    });
    HostSettings { roles, interfaces }
}

fn check_interface(sink: &mut Sink, src: &SourceFile, name: &Str) -> bool {
    let text = name.get_ref();
    let valid = !text.is_empty()
        && text.len() <= MAX_IFNAME
        && text != "."
        && text != ".."
        && !text
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
    if !valid {
        sink.error(
            &src.loc(&name.span()),
            format!(
                "`{text}` is not an interface name (1-{MAX_IFNAME} bytes, no '/', ':' or spaces)"
            ),
        );
    }
    valid
}

pub(super) fn mode(written: Option<ModeSpec>) -> Mode {
    match written {
        Some(ModeSpec::Audit) => Mode::Audit,
        Some(ModeSpec::Enforce) | None => Mode::Enforce,
    }
}

pub(super) fn datapath_settings(d: &DatapathSection) -> DatapathSettings {
    DatapathSettings {
        // Judged unless the site says otherwise: a service bound to the wildcard address
        // answers broadcasts and multicasts too (mDNS, rpcbind, SNMP).
        judge_broadcast: d.broadcast != Some(BroadcastSpec::Pass),
        drop_non_ip: d.non_ip == Some(PassDrop::Drop),
        drop_not_for_host: d.not_for_host == Some(PassDrop::Drop),
    }
}

pub(super) fn audit_settings(sink: &mut Sink, src: &SourceFile, a: &AuditSection) -> AuditSettings {
    let value = |v: Option<&Spanned<u32>>, default| v.map_or(default, |v| *v.get_ref());
    let settings = AuditSettings {
        sink: match a.sink {
            None | Some(SinkSpec::File) => AuditSink::File,
            Some(SinkSpec::Journal) => AuditSink::Journal,
            Some(SinkSpec::Both) => AuditSink::Both,
        },
        path: a.path.as_ref().map_or_else(
            || PathBuf::from(crate::paths::AUDIT_LOG),
            |p| p.get_ref().clone(),
        ),
        rate: value(a.rate.as_ref(), DEFAULT_AUDIT_RATE),
        burst: value(a.burst.as_ref(), DEFAULT_AUDIT_BURST),
        max_bytes: a
            .max_bytes
            .as_ref()
            .map_or(DEFAULT_AUDIT_MAX_BYTES, |v| *v.get_ref()),
        keep: value(a.keep.as_ref(), DEFAULT_AUDIT_KEEP),
    };
    if let Some(path) = a.path.as_ref().filter(|p| !p.get_ref().is_absolute()) {
        sink.error(
            &src.loc(&path.span()),
            "audit path must be absolute (the daemon does not run in the site file's directory)",
        );
    }
    if let Some(burst) = a
        .burst
        .as_ref()
        .filter(|b| *b.get_ref() == 0 && settings.rate > 0)
    {
        sink.error(
            &src.loc(&burst.span()),
            "audit burst 0 lets no event through: use at least 1 (or rate = 0 to emit none)",
        );
    }
    if let Some(max) = a.max_bytes.as_ref().filter(|m| *m.get_ref() == 0) {
        sink.error(
            &src.loc(&max.span()),
            "audit max_bytes 0 would rotate on every event",
        );
    }
    settings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_networks() {
        let net = |s: &str| parse_net(s).map(|n| n.to_string());
        assert_eq!(net("198.18.1.10"), Ok("198.18.1.10/32".to_owned()));
        assert_eq!(net("2001:db8::10"), Ok("2001:db8::10/128".to_owned()));
        assert_eq!(net("198.18.2.0/24"), Ok("198.18.2.0/24".to_owned()));
        assert_eq!(net("::/0"), Ok("::/0".to_owned()));
        let host_bits = net("198.18.1.1/24").expect_err("host bits");
        assert!(
            host_bits.contains("198.18.1.0/24") && host_bits.contains("198.18.1.1/32"),
            "{host_bits}"
        );
        assert!(
            net("2001:db8::/129")
                .expect_err("too long")
                .contains("/129")
        );
        assert!(
            net("198.18.2.300/24")
                .expect_err("bad octet")
                .contains("198.18.2.300")
        );
        assert!(
            net("198.18.2.0/x")
                .expect_err("bad prefix")
                .contains("prefix length")
        );
        assert!(net("rhv-manager").is_err());
        assert!(net(" 198.18.1.10").is_err(), "no silent trimming");
    }
}
