//! Packets crafted with scapy (`tests/fixtures/scapy/crafted.py`, run by Debian's
//! `/usr/bin/python3`), sent from a peer's namespace with `sendp`, and what became of each case:
//! the datagrams a listener on the host received, and the host's answers the script sniffed.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::{IpAddr, Ipv6Addr, SocketAddr, UdpSocket},
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::Duration,
};

use integration_tests::net::Netns;
use serde_json::{Value, json};

use super::lan::{Machine, run_bounded};

/// The ports the cases go to.
#[derive(Clone, Copy, Debug)]
pub(super) struct Ports {
    /// A UDP port the policy opens to the sender.
    pub(super) allowed_udp: u16,
    /// A UDP port the policy does not open to the sender (a listener waits on it).
    pub(super) closed_udp: u16,
    /// A TCP port the policy opens to the sender.
    pub(super) allowed_tcp: u16,
    /// A TCP port the policy does not open to the sender (a listener waits on it).
    pub(super) closed_tcp: u16,
}

/// One crafted case, as the script describes it.
#[derive(Clone, Debug)]
pub(super) struct Case {
    pub(super) id: String,
    pub(super) proto: String,
    /// `allowed` or `closed`.
    pub(super) target: String,
    pub(super) dport: u16,
    /// Frames sent for it.
    pub(super) frames: u64,
    /// `judged`, `too-deep` or `tiny` (see the script's documentation).
    pub(super) expect: String,
}

/// A datagram the host's listener received: the port, the version (`a`, or `b` for a
/// rewritten first fragment) and the case it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Delivery {
    pub(super) port: u16,
    pub(super) tag: String,
    pub(super) case: String,
}

/// An answer of the host to a case: the host's port it concerns (when known) and scapy's
/// summary of the frame.
#[derive(Clone, Debug)]
pub(super) struct Answer {
    pub(super) port: Option<u16>,
    pub(super) summary: String,
}

/// What one run of a suite did.
#[derive(Debug)]
pub(super) struct Run {
    pub(super) cases: Vec<Case>,
    pub(super) deliveries: Vec<Delivery>,
    pub(super) answers: BTreeMap<String, Vec<Answer>>,
    /// Datagrams the listeners received that belong to no case of this run.
    pub(super) strays: Vec<(u16, String)>,
}

impl Run {
    /// What reached the host's stack for `case`: datagrams delivered, answers sent.
    pub(super) fn reached(&self, case: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .deliveries
            .iter()
            .filter(|d| d.case == case)
            .map(|d| format!("udp/{} got version {}", d.port, d.tag))
            .collect();
        for a in self.answers.get(case).into_iter().flatten() {
            out.push(format!("answered: {}", a.summary));
        }
        out
    }

    /// Whether the case's own datagram (version `a`) reached its port: delivered to the UDP
    /// listener, or answered from that TCP port.
    pub(super) fn arrived(&self, case: &Case) -> bool {
        self.deliveries
            .iter()
            .any(|d| d.case == case.id && d.tag == "a" && d.port == case.dport)
            || self
                .answers
                .get(&case.id)
                .into_iter()
                .flatten()
                .any(|a| case.proto == "tcp" && a.port == Some(case.dport))
    }

    /// One line per case: its id, expectation and what reached the host.
    pub(super) fn table(&self, other: Option<(&str, &Run)>, label: &str) -> String {
        let mut s = String::new();
        for c in &self.cases {
            let _ = write!(
                s,
                "{:<48} {:<8} {label}: {:?}",
                c.id,
                c.expect,
                self.reached(&c.id)
            );
            if let Some((other_label, other)) = other {
                let _ = write!(s, "  {other_label}: {:?}", other.reached(&c.id));
            }
            s.push('\n');
        }
        s
    }
}

/// Run `suite` (`options` or `fragments`) from `from` to `to`; `run` makes this run's markers,
/// IP IDs and flow labels its own; `listener` must be listening on the UDP ports.
pub(super) fn send(
    suite: &str,
    from: &Machine,
    to: &Machine,
    ports: Ports,
    run: u32,
    listener: &Listener,
) -> Run {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/scapy/crafted.py");
    let cfg = json!({
        "iface": from.ifname,
        "src_mac": from.mac(),
        "dst_mac": to.mac(),
        "src4": from.v4.to_string(),
        "dst4": to.v4.to_string(),
        "src6": from.v6.to_string(),
        "dst6": to.v6.to_string(),
        "allowed_udp": ports.allowed_udp,
        "closed_udp": ports.closed_udp,
        "allowed_tcp": ports.allowed_tcp,
        "closed_tcp": ports.closed_tcp,
        "run": run,
        // Source ports of their own per run, so answers to one run never count for another.
        "sport_base": 20_000 + run * 1000,
    })
    .to_string();
    let out = run_bounded(
        &from.ns,
        &[
            // Debian's python3, which has python3-scapy (the python3 first on PATH may not).
            "/usr/bin/python3",
            &script.display().to_string(),
            suite,
            &cfg,
        ],
        Duration::from_secs(90),
    );
    assert!(
        out.status.success(),
        "crafted.py {suite}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "crafted.py output: {e}\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    let cases: Vec<Case> = report["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| Case {
            id: c["id"].as_str().expect("id").to_owned(),
            proto: c["proto"].as_str().expect("proto").to_owned(),
            target: c["target"].as_str().expect("target").to_owned(),
            dport: u16::try_from(c["dport"].as_u64().expect("dport")).expect("port"),
            frames: c["frames"].as_u64().expect("frames"),
            expect: c["expect"].as_str().expect("expect").to_owned(),
        })
        .collect();
    let answers = report["answers"]
        .as_object()
        .expect("answers")
        .iter()
        .map(|(case, list)| {
            let list = list
                .as_array()
                .expect("answer list")
                .iter()
                .map(|a| Answer {
                    port: a["port"].as_u64().map(|p| u16::try_from(p).expect("port")),
                    summary: a["summary"].as_str().expect("summary").to_owned(),
                })
                .collect();
            (case.clone(), list)
        })
        .collect();
    // The script lingers after its last frame; anything still on its way lands by now.
    thread::sleep(Duration::from_millis(300));
    let mut deliveries = Vec::new();
    let mut strays = Vec::new();
    let prefix = format!("pgtool {run} ");
    for (port, payload) in listener.take() {
        // "<tag>|pgtool <run> <case>|...."
        let mut fields = payload.splitn(3, '|');
        let (tag, marker) = (fields.next().unwrap_or(""), fields.next().unwrap_or(""));
        match marker.strip_prefix(&prefix) {
            Some(case) if cases.iter().any(|c| c.id == case) => deliveries.push(Delivery {
                port,
                tag: tag.to_owned(),
                case: case.to_owned(),
            }),
            _ => strays.push((port, payload)),
        }
    }
    Run {
        cases,
        deliveries,
        answers,
        strays,
    }
}

/// UDP sockets on `[::]:port` (both families) in a namespace, recording every datagram.
#[derive(Debug)]
pub(super) struct Listener {
    got: Arc<Mutex<Vec<(u16, String)>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Listener {
    pub(super) fn start(ns: &Netns, ports: &[u16]) -> Self {
        let got = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for &port in ports {
            let addr = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port);
            let sock = ns.run(move || UdpSocket::bind(addr).expect("bind udp listener"));
            sock.set_read_timeout(Some(Duration::from_millis(50)))
                .expect("timeout");
            let (got, stop) = (got.clone(), stop.clone());
            threads.push(thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(n) = sock.recv(&mut buf) {
                        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                        got.lock().expect("lock").push((port, text));
                    }
                }
            }));
        }
        Listener { got, stop, threads }
    }

    /// Everything received since the last call.
    pub(super) fn take(&self) -> Vec<(u16, String)> {
        std::mem::take(&mut *self.got.lock().expect("lock"))
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
