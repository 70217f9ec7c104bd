//! `portguard explain`: the verdict for one flow, from the same classifier the tests check
//! against the XDP program, on the same compiled tables.

use std::{net::IpAddr, process::ExitCode};

use portguard_common::classify::Outcome;

use super::args::{HostArgs, PolicyArgs, ProtoArg};
use crate::{
    compile::flow::{Flow as FlowDesc, decide},
    policy::Proto,
};

/// The flow to explain.
pub(super) struct Flow {
    pub(super) src: IpAddr,
    pub(super) dst: IpAddr,
    pub(super) proto: ProtoArg,
    pub(super) dport: Option<u16>,
    pub(super) sport: u16,
    pub(super) icmp_type: Option<u8>,
    pub(super) icmp_code: u8,
}

pub(super) fn run(
    args: &PolicyArgs,
    host: &HostArgs,
    f: &Flow,
    json: bool,
    exit_status: bool,
) -> anyhow::Result<ExitCode> {
    let policy = super::load_policy(args)?;
    let hp = super::host_policy(&policy, host, Some(f.dst))?;
    anyhow::ensure!(
        f.src.is_ipv4() == f.dst.is_ipv4(),
        "--src and --dst must be of the same address family"
    );
    let (proto, dport) = match f.proto {
        ProtoArg::Icmp => (
            if f.src.is_ipv4() {
                Proto::Icmp
            } else {
                Proto::Icmpv6
            },
            u16::from(f.icmp_type.unwrap_or(8)) << 8 | u16::from(f.icmp_code),
        ),
        ProtoArg::Tcp => (Proto::Tcp, f.dport.unwrap_or(0)),
        ProtoArg::Udp => (Proto::Udp, f.dport.unwrap_or(0)),
        ProtoArg::Sctp => (Proto::Sctp, f.dport.unwrap_or(0)),
    };
    let outcome = decide(
        &hp,
        &FlowDesc {
            src: f.src,
            dst: f.dst,
            proto,
            sport: f.sport,
            dport,
        },
    );
    let rule_of = |slot: u32| hp.rules.iter().find(|r| r.slot == slot);
    let (verdict, rule, reason) = match outcome {
        Outcome::Allow { slot } => ("allow", rule_of(slot), "allowed by rule".to_owned()),
        Outcome::Pass(r) => ("allow", None, r.name().to_owned()),
        Outcome::Deny { reason, hint } => (
            "deny",
            None,
            match hint.checked_sub(1).and_then(rule_of) {
                Some(h) => format!(
                    "{} (port opened by {} to other sources)",
                    reason.name(),
                    h.id
                ),
                None => reason.name().to_owned(),
            },
        ),
    };
    if json {
        let out = serde_json::json!({
            "verdict": verdict,
            "rule": rule.map(|r| r.id.clone()),
            "reason": reason,
            "product": rule.map(|r| r.product.clone()),
            "purpose": rule.map(|r| r.purpose.clone()),
            "doc": rule.map(|r| r.doc.clone()),
            "host_roles": hp.roles,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        match rule {
            Some(r) => println!(
                "{verdict}: rule {} ({}): {} [{}]",
                r.id, r.product, r.purpose, r.doc
            ),
            None => println!("{verdict}: {reason}"),
        }
        println!("host roles: {}", hp.roles.join(", "));
    }
    if exit_status && verdict == "deny" {
        return Ok(ExitCode::from(super::EXIT_POLICY));
    }
    Ok(ExitCode::SUCCESS)
}
