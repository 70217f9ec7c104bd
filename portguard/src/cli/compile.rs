//! `portguard compile`: the rules in force on a host, in evaluation order, with provenance.

use std::{net::IpAddr, process::ExitCode};

use super::args::{HostArgs, PolicyArgs};
use crate::compile::HostRule;

pub(super) fn run(
    args: &PolicyArgs,
    host: &HostArgs,
    dst: Option<IpAddr>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let policy = super::load_policy(args)?;
    let hp = super::host_policy(&policy, host, dst)?;
    if json {
        let out = serde_json::json!({
            "roles": hp.roles,
            "policy_version": format!("{:016x}", hp.tables.config.policy_version),
            "rules": hp.rules,
            "inactive": hp.inactive,
            "essentials_builtin": builtin(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("host roles: {}", hp.roles.join(", "));
    println!("policy version: {:016x}", hp.tables.config.policy_version);
    println!("built in, ahead of every rule:");
    for (what, action) in builtin() {
        println!("  {what:<58} {action}");
    }
    println!("rules, first match wins:");
    println!(
        "  {:<4} {:<22} {:<12} {:<22} {:<34} from",
        "#", "id", "proto", "ports/types", "sources"
    );
    for r in &hp.rules {
        println!(
            "  {:<4} {:<22} {:<12} {:<22} {:<34} {}",
            r.slot,
            r.id,
            protos(r),
            matches(r),
            sources(r),
            r.origin.as_ref().map_or_else(
                || r.doc.clone(),
                |o| format!("{}:{}", o.file.display(), o.line)
            )
        );
    }
    if !hp.inactive.is_empty() {
        println!("not in force on this host:");
        for i in &hp.inactive {
            println!("  {:<22} {}", i.id, i.why);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What the datapath does before any rule, from `classify` (and the site's [datapath]).
fn builtin() -> Vec<(&'static str, &'static str)> {
    vec![
        ("ARP", "pass (counter: arp)"),
        (
            "other non-IP ethertypes",
            "per [datapath] non_ip (counter: non-ip-*)",
        ),
        (
            "unicast to other stations' MACs (bridged VMs)",
            "per [datapath] not_for_host; with \"drop\", DHCPv4 offers (udp 67->68) to the \
             address being offered are still judged by the rules",
        ),
        (
            "unicast to this host's MACs, address not known yet",
            "the kernel's routing table decides: forwarded -> as above, else judged by the \
             rules (an address added a moment ago, on lo, an AnyIP route)",
        ),
        (
            "broadcast / multicast",
            "judged by the rules (default), or [datapath] broadcast = \"pass\" (counter: \
             broadcast-passed)",
        ),
        (
            "replies to this host's own connections and UDP",
            "pass (counter: reply): socket lookup, and for unconnected UDP sockets the \
             egress recorder (180 s)",
        ),
        (
            "ICMP errors quoting this host's own flows",
            "pass (counter: icmp-error-own-flow)",
        ),
        (
            "later fragments of a datagram whose first fragment passed",
            "pass, counted as the first (its rule, or reply)",
        ),
    ]
}

fn protos(r: &HostRule) -> String {
    r.protos
        .iter()
        .map(|p| format!("{p:?}").to_lowercase())
        .collect::<Vec<_>>()
        .join("+")
}

pub(super) fn matches(r: &HostRule) -> String {
    use crate::policy::Match;
    let fmt = |a: String, b: String| if a == b { a } else { format!("{a}-{b}") };
    match &r.matches {
        Match::Ports(ranges) => ranges
            .iter()
            .map(|x| fmt(x.start().to_string(), x.end().to_string()))
            .collect::<Vec<_>>()
            .join(","),
        Match::Icmp { types, code } => {
            let t = types
                .iter()
                .map(|x| fmt(x.start().to_string(), x.end().to_string()))
                .collect::<Vec<_>>()
                .join(",");
            match code {
                Some(c) => format!("type {t} code {c}"),
                None => format!("type {t}"),
            }
        }
        Match::Protocol(n) => format!("{} ({n})", crate::policy::ip_protocol_name(*n)),
    }
}

fn sources(r: &HostRule) -> String {
    let s: Vec<String> = r.sources.iter().map(ToString::to_string).collect();
    if s.len() > 2 {
        format!("{}, {} (+{})", s[0], s[1], s.len() - 2)
    } else {
        s.join(", ")
    }
}
