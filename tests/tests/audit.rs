//! Audit events through the real XDP program: denied frames pushed with `BPF_PROG_TEST_RUN`,
//! the audit reader draining the pinned ring buffer into its log, and the log read back.
//! Checks the fields and counts of each flow, audit mode's would-deny records, and that a
//! flood is thinned by the token bucket with every denied packet accounted for.

use std::{
    collections::HashMap,
    net::IpAddr,
    path::Path,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use aya::programs::{TestRun as _, TestRunOptions};
use integration_tests::{
    DROP, PASS, Scratch, TestDp,
    addrs::{HOST4, HOST6, PEER4, PEER6, STRANGER4},
    frames::{Frame, L4},
    net::Netns,
    rules::{echo_from_anywhere, ssh_from_peers},
};
use portguard::{
    audit::{
        AuditConfig, Reader, Record, RuleIds,
        query::{self, Filter},
        record::{FlowRecord, interface_name},
        totals_at,
    },
    compile::tables::build,
};
use portguard_common::config::{Config, MODE_AUDIT, MODE_ENFORCE};

/// The reader's window in these tests: short, so records appear while the test waits.
const WINDOW: Duration = Duration::from_millis(200);

/// Slot 0: tcp/22 from the peers' networks; slot 1: icmp echo from anywhere (so every source
/// has a role, and a stranger to tcp/22 is "source not allowed").
fn setup(mode: u32, rate: u32, burst: u32) -> TestDp {
    let rules = [ssh_from_peers(0), echo_from_anywhere(1)];
    let config = Config {
        mode,
        audit_rate: rate,
        audit_burst: burst,
        ..Config::default()
    };
    let tables = build(&rules, config).expect("tables");
    let mut t = TestDp::new(&tables);
    t.dp.set_local_addrs(&[IpAddr::from(HOST4), IpAddr::from(HOST6)], &[])
        .expect("local addresses");
    t
}

fn rule_ids() -> RuleIds {
    Arc::new(RwLock::new(HashMap::from([
        (0, "T-SSH".to_owned()),
        (1, "T-ICMP".to_owned()),
    ])))
}

fn config(dir: &Path) -> AuditConfig {
    AuditConfig {
        sink: portguard::policy::AuditSink::File,
        path: dir.join("log/audit.jsonl"),
        max_bytes: 1 << 20,
        keep: 2,
        window: WINDOW,
        max_flows: 1000,
    }
}

/// Run the reader on a runtime of this thread while `push` sends frames (it runs after the
/// reader has started), then stop it after two more windows.
fn with_reader(t: &mut TestDp, cfg: AuditConfig, push: impl FnOnce(&mut TestDp)) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let reader = Reader::open(&t.pins.0, cfg).expect("open audit reader");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(reader.run(interface_name, rule_ids(), async {
            let _ = stopped.await;
        }));
        tokio::time::sleep(WINDOW / 2).await;
        push(t);
        tokio::time::sleep(WINDOW * 3).await;
        stop.send(()).expect("reader still running");
        task.await.expect("reader task").expect("reader");
    });
}

fn flows(path: &Path) -> Vec<FlowRecord> {
    query::read(path, &Filter::default())
        .expect("read log")
        .into_iter()
        .filter_map(|r| match r {
            Record::Flow(f) => Some(f),
            _ => None,
        })
        .collect()
}

fn find<'a>(flows: &'a [FlowRecord], src: &str, dport: u16) -> &'a FlowRecord {
    let src: IpAddr = src.parse().unwrap();
    flows
        .iter()
        .find(|f| f.src == Some(src) && f.dport == Some(dport))
        .unwrap_or_else(|| panic!("no flow {src} -> {dport} in {flows:#?}"))
}

#[test]
fn denied_flows_are_logged_with_their_fields_and_counts() {
    Netns::new().run(|| {
        let mut t = setup(MODE_ENFORCE, 1000, 1000);
        let dir = Scratch::new("pg-audit-");
        let cfg = config(&dir.0);
        let path = cfg.path.clone();
        let started = unix_now();
        // Some events wait in the ring before the reader starts; it must drain them too.
        assert_eq!(
            t.run(&Frame::v4(PEER4, HOST4, L4::syn(40_000, 23)).build()),
            DROP
        );
        with_reader(&mut t, cfg, |t| {
            for sport in [40_001, 40_002] {
                assert_eq!(
                    t.run(&Frame::v4(PEER4, HOST4, L4::syn(sport, 23)).build()),
                    DROP
                );
            }
            for _ in 0..2 {
                assert_eq!(
                    t.run(&Frame::v4(STRANGER4, HOST4, L4::syn(50_000, 22)).build()),
                    DROP
                );
            }
            let mut tagged = Frame::v6(
                PEER6,
                HOST6,
                L4::Udp {
                    sport: 5353,
                    dport: 53,
                },
            );
            tagged.vlans = vec![(0x8100, 100)];
            assert_eq!(t.run(&tagged.build()), DROP);
        });
        let flows = flows(&path);
        assert_eq!(flows.len(), 3, "{flows:#?}");
        assert_eq!(flows.iter().map(|f| f.count).sum::<u64>(), 6);

        let closed = find(&flows, "198.18.1.7", 23);
        assert_eq!(closed.count, 3);
        assert_eq!(
            closed.sport,
            Some(40_000),
            "the first packet's port is the sample"
        );
        assert_eq!(closed.proto.as_deref(), Some("tcp"));
        assert_eq!(closed.tcp_flags.as_deref(), Some("S"));
        assert_eq!(closed.dst, Some(IpAddr::from(HOST4)));
        assert_eq!(closed.reason, "port-not-open");
        assert_eq!(closed.rule, None);
        assert!(!closed.would_deny);
        assert_eq!(closed.vlan, None);
        // BPF_PROG_TEST_RUN runs XDP as if received on the namespace's loopback.
        assert_eq!(closed.interface.as_deref(), Some("lo"));
        let when = closed.first_seen.as_second();
        assert!(
            (started - 5..started + 60).contains(&when),
            "{when} vs {started}"
        );
        assert!(closed.first_seen <= closed.last_seen);

        let stranger = find(&flows, "198.19.200.1", 22);
        assert_eq!(stranger.count, 2);
        assert_eq!(stranger.reason, "source-not-allowed");
        assert_eq!(stranger.rule.as_deref(), Some("T-SSH"));

        let v6 = find(&flows, "2001:db8:1::7", 53);
        assert_eq!((v6.count, v6.vlan), (1, Some(100)));
        assert_eq!(v6.proto.as_deref(), Some("udp"));
        assert_eq!(v6.tcp_flags, None);

        // Nothing was suppressed or lost, so no summary line.
        let all = query::read(&path, &Filter::default()).unwrap();
        assert!(all.iter().all(|r| matches!(r, Record::Flow(_))), "{all:#?}");
    });
}

#[test]
fn audit_mode_passes_and_records_would_deny() {
    Netns::new().run(|| {
        let mut t = setup(MODE_AUDIT, 1000, 1000);
        let dir = Scratch::new("pg-audit-");
        let cfg = config(&dir.0);
        let path = cfg.path.clone();
        with_reader(&mut t, cfg, |t| {
            for sport in 1..=4 {
                assert_eq!(
                    t.run(&Frame::v4(PEER4, HOST4, L4::syn(sport, 3389)).build()),
                    PASS
                );
            }
            // Allowed traffic is not an event.
            assert_eq!(
                t.run(&Frame::v4(PEER4, HOST4, L4::syn(1, 22)).build()),
                PASS
            );
        });
        let flows = flows(&path);
        assert_eq!(flows.len(), 1, "{flows:#?}");
        let f = &flows[0];
        assert!(f.would_deny);
        assert_eq!(
            (f.dport, f.count, f.reason.as_str()),
            (Some(3389), 4, "port-not-open")
        );
    });
}

#[test]
fn a_flood_is_rate_limited_and_every_denied_packet_accounted_for() {
    const FLOOD: u32 = 100_000;
    const RATE: u32 = 100;
    const BURST: u32 = 50;
    Netns::new().run(|| {
        let mut t = setup(MODE_ENFORCE, RATE, BURST);
        let dir = Scratch::new("pg-audit-");
        let cfg = config(&dir.0);
        let path = cfg.path.clone();
        let pins = t.pins.0.clone();
        let frame = Frame::v4(STRANGER4, HOST4, L4::syn(40_000, 3389)).build();
        let mut elapsed = Duration::ZERO;
        with_reader(&mut t, cfg, |t| {
            let prog = t.dp.program().expect("program");
            let mut opts = TestRunOptions::new();
            opts.data_in = Some(&frame);
            opts.repeat = FLOOD;
            let start = Instant::now();
            let out = prog.test_run(opts).expect("BPF_PROG_TEST_RUN x 100000");
            elapsed = start.elapsed();
            assert_eq!(out.return_value, DROP);
        });
        let totals = totals_at(&pins).expect("audit counters");
        assert_eq!(
            totals.emitted + totals.suppressed + totals.lost,
            u64::from(FLOOD),
            "{totals:?}"
        );
        // The bucket starts full; it refills at RATE per second (the kernel rounds 5% up).
        let ms = u64::try_from(elapsed.as_millis()).expect("a short run");
        let bound = u64::from(BURST) + u64::from(RATE) * 11 * ms / 10_000 + 2;
        assert!(
            (u64::from(BURST)..=bound).contains(&totals.emitted),
            "{totals:?} in {elapsed:?}, bound {bound}"
        );
        assert_eq!(totals.lost, 0, "a 1 MiB ring holds a burst of {BURST}");

        let records = query::read(&path, &Filter::default()).expect("read log");
        let flow_packets: u64 = records
            .iter()
            .map(|r| match r {
                Record::Flow(f) => {
                    assert_eq!((f.dport, f.rule.as_deref()), (Some(3389), None));
                    f.count
                }
                _ => 0,
            })
            .sum();
        assert_eq!(
            flow_packets, totals.emitted,
            "every emitted event is in a flow"
        );
        let (suppressed, emitted): (u64, u64) = records
            .iter()
            .filter_map(|r| match r {
                Record::Summary(s) => Some((s.suppressed, s.emitted)),
                _ => None,
            })
            .fold((0, 0), |(a, b), (s, e)| (a + s, b + e));
        assert_eq!(
            (suppressed, emitted),
            (totals.suppressed, totals.emitted),
            "the summary records account for the rest: {records:#?}"
        );
        assert!(records.len() < 10, "a flood is a few lines: {records:#?}");
    });
}

/// Seconds since the epoch, from the system clock.
fn unix_now() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(d.as_secs()).expect("seconds fit")
}
