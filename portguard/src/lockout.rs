//! Refusing policies that would cut the administrator off: `check` and `apply` look at the SSH
//! session they run from (`SSH_CONNECTION`, in this process or, under `sudo` and Ansible's
//! `become`, which strip it, in an ancestor) and ask the new policy whether a new connection
//! from that client to that port would still be allowed. When it cannot tell, it says so.
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

/// An SSH session: (client, client port, server, server port).
type Session = (IpAddr, u16, IpAddr, u16);

/// Where this process stands with respect to an SSH session.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    /// In this session (from this process's environment or an ancestor's).
    Session(Session),
    /// Not under sshd at all (a console, a timer, CI): there is no session to lock out.
    NoSsh,
    /// Under sshd, but the session could not be read: why.
    Unknown(String),
}

/// What the guard concluded about a policy.
#[derive(Debug, PartialEq, Eq)]
pub enum Guard {
    /// The next login of this session would still be allowed, or there is no session.
    Clear,
    /// The policy would refuse the next login of this session: why, and what to do.
    Cut(String),
    /// The guard could not tell which session this runs in, so it did not check: why.
    Unknown(String),
}

fn parse_ssh_connection(text: &str) -> Option<Session> {
    let mut it = text.split_whitespace();
    let client = it.next()?.parse().ok()?;
    let cport = it.next()?.parse().ok()?;
    let server = it.next()?.parse().ok()?;
    let sport = it.next()?.parse().ok()?;
    Some((client, cport, server, sport))
}

/// The SSH session this process runs in. `sudo` (and Ansible's `become`, which uses it) starts
/// the command with a fresh environment, without `SSH_CONNECTION`; the shell sshd started for the
/// session still has it, so the ancestors are asked too, nearest first. Under sshd with no
/// readable `SSH_CONNECTION` anywhere, the answer is "unknown", never "no session".
fn find_session() -> Found {
    if let Some(s) = std::env::var("SSH_CONNECTION")
        .ok()
        .as_deref()
        .and_then(parse_ssh_connection)
    {
        return Found::Session(s);
    }
    let mut under_sshd = None;
    let mut unreadable = Vec::new();
    let mut pid = std::os::unix::process::parent_id();
    // The chain ends above init or the PID namespace's first process (parent 0); bounded anyway.
    for _ in 0..64 {
        if pid == 0 {
            break;
        }
        let proc_dir = std::path::Path::new("/proc").join(pid.to_string());
        let Some((comm, parent)) = stat(&proc_dir) else {
            break;
        };
        match std::fs::read(proc_dir.join("environ")) {
            Ok(environ) => {
                let session = environ
                    .split(|b| *b == 0)
                    .filter_map(|kv| kv.strip_prefix(b"SSH_CONNECTION="))
                    .find_map(|v| parse_ssh_connection(&String::from_utf8_lossy(v)));
                if let Some(s) = session {
                    return Found::Session(s);
                }
            }
            Err(e) => unreadable.push(format!("{comm} ({pid}): {e}")),
        }
        // sshd's per-session processes: `sshd` (`sshd: user@pts/0`), `sshd-session` (9.8+).
        if comm.starts_with("sshd") && under_sshd.is_none() {
            under_sshd = Some(pid);
        }
        pid = parent;
    }
    match under_sshd {
        None => Found::NoSsh,
        Some(sshd) => Found::Unknown(format!(
            "this runs under sshd (pid {sshd}), but neither it nor a process between them has a              readable SSH_CONNECTION{}",
            if unreadable.is_empty() {
                String::new()
            } else {
                format!(" (unreadable: {})", unreadable.join(", "))
            }
        )),
    }
}

/// (comm, parent pid) of the process at `proc_dir`: the command name is in parentheses and may
/// hold spaces or parentheses itself, so the fields are read after the last `)`.
fn stat(proc_dir: &std::path::Path) -> Option<(String, u32)> {
    let text = std::fs::read_to_string(proc_dir.join("stat")).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    let mut rest = text.get(close + 1..)?.split_whitespace();
    let _state = rest.next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((comm, ppid))
}

/// Whether `policy` would refuse the next login of the SSH session this runs in.
#[must_use]
pub fn session_cut(policy: &Policy, host: &[String]) -> Guard {
    let (client, cport, server, sport) = match find_session() {
        Found::Session(s) => s,
        Found::NoSsh => return Guard::Clear,
        Found::Unknown(why) => {
            return Guard::Unknown(format!(
                "cannot tell which SSH session this runs in, so the lockout guard did not check:                  {why}; run it with SSH_CONNECTION set (e.g. `sudo --preserve-env=SSH_CONNECTION`)"
            ));
        }
    };
    let Ok(roles) = host_roles(policy, host, Some(server)) else {
        return Guard::Unknown(format!(
            "cannot tell which of this host's roles serves {server} (the SSH session's address),              so the lockout guard did not check"
        ));
    };
    let Ok(compiled) = for_host(policy, &roles) else {
        return Guard::Clear;
    };
    let flow = Flow {
        src: client,
        dst: server,
        proto: Proto::Tcp,
        sport: cport,
        dport: sport,
    };
    match decide(&compiled, &flow) {
        Outcome::Allow { .. } | Outcome::Pass(_) => Guard::Clear,
        Outcome::Deny { reason, .. } => Guard::Cut(format!(
            "this policy would refuse new SSH connections from {client} to {server} port {sport} \
             (your session; {}): add the address to [failsafe] ssh_from or a role that reaches \
             tcp/{sport}, or pass --force",
            reason.name()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_reads_the_command_and_parent_past_parentheses_in_the_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("stat"),
            "4242 (sshd: a (b)) S 17 4242 4242 0 -1\n",
        )
        .unwrap();
        assert_eq!(stat(dir.path()), Some(("sshd: a (b)".to_owned(), 17)));
    }

    #[test]
    fn ssh_connection_needs_four_fields() {
        assert_eq!(
            parse_ssh_connection("198.18.0.7 50000 198.18.2.1 22"),
            Some((
                "198.18.0.7".parse().unwrap(),
                50000,
                "198.18.2.1".parse().unwrap(),
                22
            ))
        );
        assert_eq!(parse_ssh_connection("198.18.0.7 50000"), None);
    }
}
