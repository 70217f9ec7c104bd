//! Audit with the real daemon and real traffic: denied flows in `audit --json` with their
//! fields and counts, a flood that stays bounded and accounted for, and audit mode.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use integration_tests::{
    daemon::{Daemon, site_with_audit},
    net::Pair,
};

const CLOSED: u16 = 5999;
/// The peer's source port, which the records must show.
const SPORT: u16 = 40_123;

/// Wait until the daemon's log has flow records matching `pred` (the window is 5 s).
fn wait_records(d: &Daemon, pred: impl Fn(&[serde_json::Value]) -> bool) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let recs = d.audit_records();
        if pred(&recs) {
            return recs;
        }
        assert!(
            Instant::now() < deadline,
            "audit records never matched: {recs:#?}\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn flows(recs: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    recs.iter().filter(|r| r["kind"] == "flow").collect()
}

#[test]
fn denied_flows_appear_in_audit_with_fields_and_counts() {
    let pair = Pair::new(71, 1500);
    let d = Daemon::start(&pair.b, &site_with_audit(&pair, "enforce", 1000, 1000), &[]);
    assert_eq!(
        pair.udp_delivered(SPORT, SocketAddr::new(pair.b4, CLOSED), 7),
        0
    );
    assert_eq!(
        pair.udp_delivered(SPORT, SocketAddr::new(pair.b6, CLOSED + 1), 3),
        0
    );
    let recs = wait_records(&d, |r| {
        flows(r)
            .iter()
            .map(|f| f["count"].as_u64().unwrap_or(0))
            .sum::<u64>()
            >= 10
    });
    let v4 = flows(&recs)
        .into_iter()
        .find(|f| f["dport"] == CLOSED)
        .unwrap_or_else(|| panic!("{recs:#?}"))
        .clone();
    assert_eq!(v4["src"], pair.a4.to_string());
    assert_eq!(v4["dst"], pair.b4.to_string());
    assert_eq!(v4["proto"], "udp");
    assert_eq!(v4["sport"], SPORT);
    assert_eq!(v4["reason"], "port-not-open");
    assert_eq!(v4["interface"], pair.b_if.as_str());
    assert_eq!(v4["would_deny"], false);
    assert_eq!(v4["count"], 7);
    let v6 = flows(&recs)
        .into_iter()
        .find(|f| f["dport"] == CLOSED + 1)
        .unwrap_or_else(|| panic!("{recs:#?}"));
    assert_eq!(v6["src"], pair.a6.to_string());
    assert_eq!(v6["count"], 3);
}

#[test]
fn a_flood_of_denied_packets_stays_bounded_and_accounted_for() {
    let pair = Pair::new(72, 1500);
    let d = Daemon::start(&pair.b, &site_with_audit(&pair, "enforce", 100, 50), &[]);
    let rss_before = d.rss_kib();
    let to = SocketAddr::new(pair.b4, CLOSED);
    let sent = 100_000u32;
    assert_eq!(pair.udp_delivered(SPORT, to, sent), 0);
    let status = d.status();
    // Every denied packet, whatever the reason, goes through the audit rate limit.
    let dropped: u64 = status["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["verdict"] == "drop")
        .map(|r| r["packets"].as_u64().unwrap())
        .sum();
    assert!(dropped >= u64::from(sent), "{dropped} < {sent}");
    let (emitted, suppressed, lost) = (
        status["audit"]["emitted"].as_u64().unwrap(),
        status["audit"]["suppressed"].as_u64().unwrap(),
        status["audit"]["lost"].as_u64().unwrap(),
    );
    // Every denied packet is either reported or counted as not reported.
    assert_eq!(emitted + suppressed + lost, dropped);
    // The bucket holds 50 tokens and refills at 100/s per CPU: a burst of 100,000 packets
    // yields a few hundred events at most, not 100,000.
    assert!(emitted < 5_000, "{emitted} events for a flood");
    let recs = wait_records(&d, |r| {
        flows(r).iter().any(|f| f["dport"] == CLOSED) && r.iter().any(|x| x["kind"] == "summary")
    });
    let logged: u64 = flows(&recs)
        .iter()
        .map(|f| f["count"].as_u64().unwrap())
        .sum();
    assert!(logged <= emitted, "{logged} logged > {emitted} emitted");
    let summary_suppressed: u64 = recs
        .iter()
        .filter(|x| x["kind"] == "summary")
        .map(|x| x["suppressed"].as_u64().unwrap())
        .sum();
    assert!(
        summary_suppressed > 0,
        "the log must say events were suppressed"
    );
    let growth = d.rss_kib().saturating_sub(rss_before);
    assert!(
        growth < 32 * 1024,
        "daemon grew by {growth} KiB during a flood"
    );
}

#[test]
fn audit_mode_delivers_and_records_would_deny() {
    let pair = Pair::new(73, 1500);
    let d = Daemon::start(&pair.b, &site_with_audit(&pair, "audit", 1000, 1000), &[]);
    assert_eq!(
        pair.udp_delivered(SPORT, SocketAddr::new(pair.b4, CLOSED), 5),
        5,
        "audit mode must deliver"
    );
    let recs = wait_records(&d, |r| flows(r).iter().any(|f| f["dport"] == CLOSED));
    let f = flows(&recs)
        .into_iter()
        .find(|f| f["dport"] == CLOSED)
        .unwrap();
    assert_eq!(f["would_deny"], true);
    assert_eq!(f["count"], 5);
    assert_eq!(d.status()["mode"], "audit");
}
