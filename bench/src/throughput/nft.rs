//! nftables doing the throughput benchmark's job: the host's rules as an `inet` chain, loaded
//! and read back with `nft(8)` in the receiver's namespace.

use std::{
    fmt::Write as _,
    io::Write as _,
    process::{Command, Stdio},
};

use ipnet::IpNet;
use portguard::{
    compile::HostRule,
    policy::{Match, Proto},
};

use super::Receiver;

/// The nftables equivalent of the host's rules: one `accept` per rule, family and protocol,
/// in the same order, then a counted drop. Stateless like portguard's rule matching (replies to
/// the host's own connections are portguard's socket lookup; only the `ct` variant has them).
pub(super) fn nft_rules(rules: &[HostRule]) -> Vec<String> {
    let mut out = Vec::new();
    for r in rules {
        for v4 in [true, false] {
            let srcs: Vec<String> = r
                .sources
                .iter()
                .filter(|n| matches!(n, IpNet::V4(_)) == v4)
                .map(ToString::to_string)
                .collect();
            if srcs.is_empty() {
                continue;
            }
            let from = if r
                .sources
                .iter()
                .any(|n| n.prefix_len() == 0 && matches!(n, IpNet::V4(_)) == v4)
            {
                format!("meta nfproto {}", if v4 { "ipv4" } else { "ipv6" })
            } else {
                format!(
                    "{} saddr {{ {} }}",
                    if v4 { "ip" } else { "ip6" },
                    srcs.join(", ")
                )
            };
            for p in &r.protos {
                let what = match (p, &r.matches) {
                    (Proto::Tcp | Proto::Udp | Proto::Sctp, Match::Ports(ranges)) => {
                        let ports: Vec<String> = ranges.iter().map(span).collect();
                        let l4 = match p {
                            Proto::Tcp => "tcp",
                            Proto::Udp => "udp",
                            _ => "sctp",
                        };
                        format!("{l4} dport {{ {} }}", ports.join(", "))
                    }
                    (Proto::Icmp, Match::Icmp { types, code }) if v4 => icmp("icmp", types, *code),
                    (Proto::Icmpv6, Match::Icmp { types, code }) if !v4 => {
                        icmp("icmpv6", types, *code)
                    }
                    _ => continue,
                };
                out.push(format!("{from} {what} accept"));
            }
        }
    }
    out
}

/// `22` or `5900-6923`, as nft writes a set element.
fn span<T: std::fmt::Display + PartialEq>(r: &std::ops::RangeInclusive<T>) -> String {
    if r.start() == r.end() {
        r.start().to_string()
    } else {
        format!("{}-{}", r.start(), r.end())
    }
}

fn icmp(kw: &str, types: &[std::ops::RangeInclusive<u8>], code: Option<u8>) -> String {
    let t: Vec<String> = types.iter().map(span).collect();
    let mut s = format!("{kw} type {{ {} }}", t.join(", "));
    if let Some(c) = code {
        let _ = write!(s, " {kw} code {c}");
    }
    s
}

/// The whole ruleset for one nftables receiver.
pub(super) fn nft_ruleset(r: Receiver, dev: &str, rules: &[String]) -> String {
    let hook = match r {
        Receiver::NftIngress => {
            format!("type filter hook ingress device \"{dev}\" priority filter;")
        }
        _ => "type filter hook input priority filter;".to_owned(),
    };
    let mut s = format!("table inet pgbench {{\n  chain c {{\n    {hook} policy accept;\n");
    if r == Receiver::NftInputCt {
        s.push_str("    ct state established,related accept\n");
    }
    for rule in rules {
        let _ = writeln!(s, "    {rule}");
    }
    s.push_str("    counter drop\n  }\n}\n");
    s
}

/// Run `nft` in the receiver's namespace with `input` on standard input.
pub(super) fn nft(ns: &str, args: &[&str], input: &str) -> String {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run nft(8)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write to nft");
    let out = child.wait_with_output().expect("nft");
    assert!(
        out.status.success(),
        "nft {}: {}\n{input}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Packets counted by the final `counter drop` of the nftables chain.
pub(super) fn nft_dropped(ns: &str) -> u64 {
    let out = nft(ns, &["list", "table", "inet", "pgbench"], "");
    out.lines()
        .find(|l| l.contains("counter packets") && l.trim_end().ends_with("drop"))
        .and_then(|l| l.split_whitespace().skip_while(|w| *w != "packets").nth(1))
        .and_then(|n| n.parse().ok())
        .expect("nft drop counter")
}
