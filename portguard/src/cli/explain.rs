//! `portguard explain`: the verdict for one flow, from the same classifier the tests check
//! against the XDP program, on the same compiled tables.

use std::{net::IpAddr, process::ExitCode};

use portguard_common::{
    classify::{Outcome, classify},
    maps::LOCAL_UNICAST,
    packet::{Family, Kind, L4Kind, Packet, ipproto, tcp_flags},
    reference::RefEnv,
};

use super::args::{HostArgs, PolicyArgs, ProtoArg};

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

fn wide(a: IpAddr) -> (Family, [u8; 16]) {
    match a {
        IpAddr::V4(v) => {
            let mut w = [0u8; 16];
            w[..4].copy_from_slice(&v.octets());
            (Family::V4, w)
        }
        IpAddr::V6(v) => (Family::V6, v.octets()),
    }
}

pub(super) fn run(
    args: &PolicyArgs,
    host: &HostArgs,
    f: &Flow,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let policy = super::load_policy(args)?;
    let hp = super::host_policy(&policy, host, Some(f.dst))?;
    let (family, src) = wide(f.src);
    let (dfam, dst) = wide(f.dst);
    anyhow::ensure!(
        family == dfam,
        "--src and --dst must be of the same address family"
    );
    let mut packet = Packet {
        kind: Kind::Ip,
        family,
        src,
        dst,
        dst_known: true,
        ..Packet::EMPTY
    };
    match f.proto {
        ProtoArg::Icmp => {
            packet.proto = if family == Family::V4 {
                ipproto::ICMP
            } else {
                ipproto::ICMPV6
            };
            packet.l4 = L4Kind::Icmp;
            packet.icmp_type = f.icmp_type.unwrap_or(8);
            packet.icmp_code = f.icmp_code;
        }
        p => {
            packet.proto = match p {
                ProtoArg::Tcp => ipproto::TCP,
                ProtoArg::Udp => ipproto::UDP,
                _ => ipproto::SCTP,
            };
            packet.l4 = L4Kind::Ports;
            packet.sport = f.sport;
            packet.dport = f.dport.unwrap_or(0);
            // A new flow: a TCP SYN, so no reply or established state can explain it away.
            packet.tcp_flags = if p == ProtoArg::Tcp {
                tcp_flags::SYN
            } else {
                0
            };
        }
    }
    let mut env = RefEnv::new(&hp.tables);
    env.local.insert((family, dst), LOCAL_UNICAST);
    let outcome = classify(&env, &packet);
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
    Ok(ExitCode::SUCCESS)
}
