//! The audit pipeline without the kernel: events folded by the aggregator, written to a rotated
//! log, read back with filters, and shown by `portguard audit` (the real binary).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use portguard::audit::{
    Record,
    aggregate::Aggregator,
    clock::WallClock,
    logfile::{LogWriter, rotated},
    query::{self, Filter},
};
use portguard_common::{event::Event, reason::Reason};

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("pg-audit-it-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

const SEC: u64 = 1_000_000_000;
/// 2025-01-31T12:00:00Z as the wall-clock time of monotonic 0.
const EPOCH: i128 = 1_738_324_800_000_000_000;

fn event(src: [u8; 4], dport: u16, t: u64, reason: Reason, hint: u32) -> Event {
    let mut ev = Event {
        time_ns: t,
        ifindex: 1,
        reason: reason as u32,
        hint,
        len: 60,
        sport: 40_000 + (t / SEC) as u16,
        dport,
        proto: 6,
        family: 4,
        tcp_flags: 0x02,
        ..Event::default()
    };
    ev.src[..4].copy_from_slice(&src);
    ev.dst[..4].copy_from_slice(&[198, 18, 0, 1]);
    ev
}

/// Two windows of events from two sources, written to `dir/audit.jsonl` with small files.
fn write_log(dir: &Path) -> PathBuf {
    let path = dir.join("audit.jsonl");
    let clock = WallClock::with_offset_ns(EPOCH);
    let mut w = LogWriter::open(&path, 600, 5).expect("open log");
    let mut agg = Aggregator::new(100);
    let mut names = |i: u32| (i == 1).then(|| "lo".to_owned());
    for t in 0..5 {
        agg.add(
            &event([198, 18, 1, 7], 23, t * SEC, Reason::PortNotOpen, 0),
            None,
        );
    }
    agg.add(
        &event([198, 19, 9, 9], 22, 2 * SEC, Reason::SourceNotAllowed, 1),
        Some("SSH".into()),
    );
    w.write(&agg.flush(&clock, &mut names)).expect("write");
    for t in 3600..3603 {
        agg.add(
            &event([198, 19, 9, 9], 22, t * SEC, Reason::SourceNotAllowed, 1),
            Some("SSH".into()),
        );
    }
    w.write(&agg.flush(&clock, &mut names)).expect("write");
    path
}

#[test]
fn windows_written_rotated_and_read_back() {
    let dir = Scratch::new("pipeline");
    let path = write_log(&dir.0);
    assert!(
        rotated(&path, 1).exists(),
        "600-byte files must have rotated"
    );
    let all = query::read(&path, &Filter::default()).expect("read");
    let flows: Vec<_> = all
        .iter()
        .map(|r| match r {
            Record::Flow(f) => (f.src.unwrap().to_string(), f.dport, f.count, f.rule.clone()),
            r => panic!("unexpected {r:?}"),
        })
        .collect();
    assert_eq!(
        flows,
        [
            ("198.18.1.7".into(), Some(23), 5, None),
            ("198.19.9.9".into(), Some(22), 1, Some("SSH".into())),
            ("198.19.9.9".into(), Some(22), 3, Some("SSH".into())),
        ]
    );
    let Record::Flow(first) = &all[0] else {
        unreachable!()
    };
    assert_eq!(first.first_seen.to_string(), "2025-01-31T12:00:00Z");
    assert_eq!(first.last_seen.to_string(), "2025-01-31T12:00:04Z");
    assert_eq!(first.sport, Some(40_000));
    assert_eq!(first.interface.as_deref(), Some("lo"));
    assert_eq!(first.reason, "port-not-open");

    let since = Filter {
        since: Some("2025-01-31T12:30:00Z".parse().unwrap()),
        ..Filter::default()
    };
    assert_eq!(query::read(&path, &since).unwrap().len(), 1);
    let port = Filter {
        port: Some(23),
        ..Filter::default()
    };
    assert_eq!(query::read(&path, &port).unwrap().len(), 1);
    let top = query::top(&all, 1);
    assert_eq!(top.sources, [("198.18.1.7".parse().unwrap(), 5)]);
    assert_eq!(top.ports, [("tcp/23".to_owned(), 5)]);
}

fn portguard(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_portguard"))
        .args(args)
        .env("PORTGUARD_SITE", "/nonexistent/site.toml")
        .output()
        .expect("run portguard");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn audit_verb_prints_tables_json_and_top() {
    let dir = Scratch::new("verb");
    let path = write_log(&dir.0);
    let log = path.to_str().unwrap();
    let since = "2025-01-31T00:00:00Z";

    let (ok, out, err) = portguard(&["audit", "--log", log, "--since", since]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(lines[0].starts_with("LAST SEEN"), "{out}");
    assert!(
        lines[1].contains("198.18.1.7") && lines[1].contains("tcp/23"),
        "{out}"
    );
    assert!(
        lines[2].contains("SSH") && lines[2].contains("source-not-allowed"),
        "{out}"
    );

    let (ok, out, err) = portguard(&[
        "audit",
        "--log",
        log,
        "--since",
        since,
        "--json",
        "--src",
        "198.19.0.0/16",
    ]);
    assert!(ok, "{err}");
    let counts: Vec<u64> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["count"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(counts, [1, 3]);

    let (ok, out, err) = portguard(&[
        "audit", "--log", log, "--since", since, "--top", "5", "--json",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["sources"][0]["src"], "198.18.1.7");
    assert_eq!(v["sources"][0]["packets"], 5);
    assert_eq!(v["sources"][1]["packets"], 4);
    assert_eq!(v["ports"][0]["port"], "tcp/23");
    assert_eq!(v["ports"][1]["port"], "tcp/22");

    // The default window is the last hour: these records are older.
    let (ok, out, err) = portguard(&["audit", "--log", log]);
    assert!(
        ok && out.is_empty() && err.contains("no denied flows"),
        "{out}{err}"
    );

    let (ok, _, err) = portguard(&["audit", "--log", log, "--since", "yesterday"]);
    assert!(!ok && err.contains("`yesterday`"), "{err}");
}
