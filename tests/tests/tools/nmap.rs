//! nmap against the protected host, bounded, and its XML report read back.
//!
//! What "no answer" means, precisely: nmap records for every port the state it concludes and
//! the `reason`, the evidence it had: `syn-ack` or `reset` (a TCP segment came back),
//! `port-unreach`, `admin-prohibited`, `host-unreach`... (an ICMP error came back), or
//! `no-response` (nothing came back, after every retransmission). A port the host did not
//! answer is one whose reason is `no-response`; any other reason is an answer, whatever state
//! nmap derives from it (`open`, `closed`, `unfiltered`, `filtered` by ICMP). Ports in nmap's
//! default state are summarised in `<extraports>`, whose `<extrareasons>` children give the
//! reason and the port list (nmap 7.80 and later), so every scanned port has a reason.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    time::Duration,
};

use super::lan::{Machine, run_bounded};

/// Probes per second nmap keeps up at least. A full TCP range with two retransmissions of
/// every unanswered probe takes a few seconds at this rate; veths in namespaces take it.
const MIN_RATE: &str = "50000";
/// nmap gives up on the host after this long (its own limit, reported in the XML).
const HOST_TIMEOUT: &str = "120s";
/// And the process is killed after this long.
const LIMIT: Duration = Duration::from_secs(180);

/// One port of a report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Port {
    /// nmap's conclusion: open, closed, filtered, unfiltered, open|filtered.
    pub(super) state: String,
    /// The evidence: syn-ack, reset, no-response, port-unreach, ...
    pub(super) reason: String,
}

impl Port {
    /// Whether the host answered the probes of this port at all.
    pub(super) fn answered(&self) -> bool {
        self.reason != "no-response"
    }
}

/// A finished scan: every scanned port with its state and reason.
#[derive(Debug)]
pub(super) struct Scan {
    pub(super) what: String,
    pub(super) ports: BTreeMap<u16, Port>,
}

impl Scan {
    /// Ports in `state`.
    pub(super) fn in_state(&self, state: &str) -> BTreeSet<u16> {
        self.ports
            .iter()
            .filter(|(_, p)| p.state == state)
            .map(|(n, _)| *n)
            .collect()
    }

    /// Ports the host answered, with how.
    pub(super) fn answered(&self) -> BTreeMap<u16, Port> {
        self.ports
            .iter()
            .filter(|(_, p)| p.answered())
            .map(|(n, p)| (*n, p.clone()))
            .collect()
    }
}

/// Scan `target` from `from` with scan type `kind` (`-sS`, `-sA`, `-sF`, `-sN`, `-sX`) over
/// `ports` (nmap's syntax), and check that the report covers exactly those ports.
pub(super) fn scan(from: &Machine, target: IpAddr, kind: &str, ports: &str) -> Scan {
    let target_s = target.to_string();
    let mut args = vec![
        "nmap",
        "-n",
        "-Pn",
        kind,
        "-p",
        ports,
        "--reason",
        "--max-retries",
        "2",
        "--min-rate",
        MIN_RATE,
        "--host-timeout",
        HOST_TIMEOUT,
        "-e",
        &from.ifname,
        // Raw Ethernet frames for IPv6 too: nmap's raw IPv6 socket path is three times slower.
        "--send-eth",
        "-oX",
        "-",
    ];
    if target.is_ipv6() {
        args.push("-6");
    }
    args.push(&target_s);
    let wanted = expand(ports).unwrap_or_else(|e| panic!("port list {ports}: {e}"));
    let listed = if ports.len() > 40 {
        format!("({} ports)", wanted.len())
    } else {
        ports.to_owned()
    };
    let what = format!(
        "nmap {kind} {listed} {target} from {}",
        from.addr_like(target)
    );
    let out = run_bounded(&from.ns, &args, LIMIT);
    let xml = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{what}: exit {}\n{}\n{xml}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let scanned = parse(&xml).unwrap_or_else(|e| panic!("{what}: {e}\n{xml}"));
    let got: BTreeSet<u16> = scanned.keys().copied().collect();
    assert_eq!(
        got, wanted,
        "{what}: the report must give every scanned port a state\n{xml}"
    );
    Scan {
        what,
        ports: scanned,
    }
}

/// `1-21,23,80-90` -> the ports.
pub(super) fn expand(spec: &str) -> Result<BTreeSet<u16>, String> {
    let mut out = BTreeSet::new();
    for part in spec.split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let a: u16 = a.parse().map_err(|_| format!("bad port in {part}"))?;
        let b: u16 = b.parse().map_err(|_| format!("bad port in {part}"))?;
        if a > b {
            return Err(format!("empty range {part}"));
        }
        out.extend(a..=b);
    }
    Ok(out)
}

/// The value of attribute `name` in the start tag `tag`.
fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let key = format!(" {name}=\"");
    let start = tag.find(&key)? + key.len();
    let len = tag[start..].find('"')?;
    Some(&tag[start..start + len])
}

/// The start tags `<name ...>` (or `<name .../>`) in `xml`, in order.
fn tags<'a>(xml: &'a str, name: &str) -> Vec<&'a str> {
    let open = format!("<{name} ");
    xml.match_indices(&open)
        .map(|(i, _)| {
            let end = xml[i..].find('>').map_or(xml.len(), |e| i + e + 1);
            &xml[i..end]
        })
        .collect()
}

/// Every port of a `-oX` report with its state and reason; an error for a report of a scan that
/// did not finish, or of a host nmap gave up on.
pub(super) fn parse(xml: &str) -> Result<BTreeMap<u16, Port>, String> {
    let finished = tags(xml, "finished");
    if finished.len() != 1 || attr(finished[0], "exit") != Some("success") {
        return Err("the scan did not finish".into());
    }
    let hosts = tags(xml, "host");
    if hosts.len() != 1 {
        return Err(format!("{} hosts in the report, 1 expected", hosts.len()));
    }
    if attr(hosts[0], "timedout") == Some("true") {
        return Err("nmap gave up on the host (--host-timeout)".into());
    }
    let mut ports = BTreeMap::new();
    // Ports in the default state: `<extraports state=S><extrareasons reason=R ports=...>`.
    let mut rest = xml;
    while let Some(i) = rest.find("<extraports ") {
        let block = &rest[i..];
        let end = block.find("</extraports>").ok_or("unclosed <extraports>")?;
        let block = &block[..end];
        let state = attr(block, "state").ok_or("extraports without a state")?;
        for reasons in tags(block, "extrareasons") {
            let reason = attr(reasons, "reason").ok_or("extrareasons without a reason")?;
            let list = attr(reasons, "ports").ok_or("extrareasons without ports (nmap < 7.80?)")?;
            for p in expand(list)? {
                ports.insert(
                    p,
                    Port {
                        state: state.to_owned(),
                        reason: reason.to_owned(),
                    },
                );
            }
        }
        rest = &rest[i + end..];
    }
    // The others: `<port portid=N><state state=S reason=R .../>`.
    for (i, _) in xml.match_indices("<port ") {
        let element = &xml[i..];
        let element = &element[..element.find("</port>").ok_or("unclosed <port>")?];
        let id: u16 = attr(element, "portid")
            .and_then(|p| p.parse().ok())
            .ok_or("port without a portid")?;
        let state = tags(element, "state");
        let state = state.first().ok_or("port without a state")?;
        let port = Port {
            state: attr(state, "state")
                .ok_or("state without state")?
                .to_owned(),
            reason: attr(state, "reason")
                .ok_or("state without reason")?
                .to_owned(),
        };
        if ports.insert(id, port).is_some() {
            return Err(format!("port {id} listed twice"));
        }
    }
    Ok(ports)
}

#[test]
fn parses_a_report_of_nmap_7_93() {
    let xml = r#"<nmaprun scanner="nmap"><host starttime="1" endtime="2"><status state="up" reason="nd-response" reason_ttl="0"/>
<ports><extraports state="filtered" count="65534">
<extrareasons reason="no-response" count="65533" proto="tcp" ports="1-21,24-65535"/>
<extrareasons reason="admin-prohibited" count="1" proto="tcp" ports="23"/>
</extraports>
<port protocol="tcp" portid="22"><state state="closed" reason="reset" reason_ttl="64"/><service name="ssh" method="table" conf="3"/></port>
</ports></host>
<runstats><finished time="2" elapsed="9.28" exit="success"/></runstats></nmaprun>"#;
    let ports = parse(xml).expect("parse");
    assert_eq!(ports.len(), 65535);
    assert_eq!(ports[&22].reason, "reset");
    assert!(ports[&22].answered());
    assert_eq!(ports[&23].reason, "admin-prohibited");
    assert!(ports[&23].answered());
    assert!(!ports[&1].answered() && ports[&65535].state == "filtered");
    assert!(parse(&xml.replace("success", "error")).is_err());
    assert!(parse(&xml.replace("<host ", "<host timedout=\"true\" ")).is_err());
}
