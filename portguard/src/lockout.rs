//! Refusing policies that would cut the administrator off: `check` and `apply` look at the SSH
//! session they run from (`SSH_CONNECTION`) and ask the new policy whether a new connection
//! from that client to that port would still be allowed.
//!
//! The session itself survives any policy (its packets belong to an established socket, which
//! the datapath passes as a reply); what a bad policy takes away is the next login, after the
//! session drops. That is the flow checked here.

use std::net::IpAddr;

use portguard_common::classify::Outcome;

use crate::{
    compile::{
        flow::{Flow, decide},
        for_host, host_roles,
    },
    policy::{Policy, Proto},
};

/// The SSH session this process runs in: (client, client port, server, server port).
fn ssh_session() -> Option<(IpAddr, u16, IpAddr, u16)> {
    let text = std::env::var("SSH_CONNECTION").ok()?;
    let mut it = text.split_whitespace();
    let client = it.next()?.parse().ok()?;
    let cport = it.next()?.parse().ok()?;
    let server = it.next()?.parse().ok()?;
    let sport = it.next()?.parse().ok()?;
    Some((client, cport, server, sport))
}

/// Why `policy` would refuse the next login of this SSH session, if it would.
#[must_use]
pub fn session_cut(policy: &Policy, host: &[String]) -> Option<String> {
    let (client, cport, server, sport) = ssh_session()?;
    let roles = host_roles(policy, host, Some(server)).ok()?;
    let compiled = for_host(policy, &roles).ok()?;
    let flow = Flow {
        src: client,
        dst: server,
        proto: Proto::Tcp,
        sport: cport,
        dport: sport,
    };
    match decide(&compiled, &flow) {
        Outcome::Allow { .. } | Outcome::Pass(_) => None,
        Outcome::Deny { reason, .. } => Some(format!(
            "this policy would refuse new SSH connections from {client} to {server} port {sport} \
             (your session; {}): add the address to [failsafe] ssh_from or a role that reaches \
             tcp/{sport}, or pass --force",
            reason.name()
        )),
    }
}
