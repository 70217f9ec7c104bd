//! `portguard audit`: the denied (and would-deny) flows of the audit log, as a table, JSON
//! lines, or the top sources and ports refused; `--follow` keeps printing as the daemon writes.

use std::{
    io::{self, Write},
    path::PathBuf,
    process::ExitCode,
    time::Duration,
};

use jiff::Timestamp;

use super::args::AuditArgs;
use crate::audit::{
    Record,
    query::{self, Filter, Follower, Top},
    record::FlowRecord,
};
use crate::paths::AUDIT_LOG;

/// How often `--follow` looks for new lines: the daemon writes once per window (5 s).
const FOLLOW_POLL: Duration = Duration::from_millis(500);

pub(super) fn run(args: &AuditArgs) -> anyhow::Result<ExitCode> {
    let log = log_path(args);
    let since = args.since.resolve(Timestamp::now());
    let filter = Filter {
        since: Some(since),
        src: args.src,
        port: args.port,
    };
    // Follow from the current end before reading the history, so nothing written in between
    // is missed (a record written in that instant may show twice).
    let follower = if args.follow {
        Some(Follower::at_end(&log)?)
    } else {
        None
    };
    if query::log_files(&log)?.is_empty() {
        // The daemon creates its log when it starts: no log means no daemon writes here.
        anyhow::bail!(
            "no audit log at {} (is portguard running? the site's [audit] path, or --log, says \
             where it writes; with [audit] sink = \"journal\" records are in the journal: \
             journalctl MESSAGE_ID={})",
            log.display(),
            crate::audit::journal::FLOW_MESSAGE_ID
        );
    }
    let records = query::read(&log, &filter)?;
    let mut out = io::stdout().lock();
    let written = if let Some(n) = args.top {
        print_top(
            &mut out,
            &query::top(&records, n),
            &records,
            since,
            args.json,
        )
    } else {
        print_records(&mut out, &records, args.json, true).and_then(|()| {
            if records.is_empty() && !args.follow {
                eprintln!("no denied flows in {} since {since}", log.display());
            }
            match follower {
                Some(f) => follow(&mut out, f, &filter, args.json),
                None => Ok(()),
            }
        })
    };
    match written {
        // `portguard audit | head` is a success.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e.into()),
        Ok(()) => Ok(ExitCode::SUCCESS),
    }
}

/// `--log`, else the site file's `[audit] path`, else the default path.
fn log_path(args: &AuditArgs) -> PathBuf {
    if let Some(p) = &args.log {
        return p.clone();
    }
    if !args.policy.site.exists() {
        return PathBuf::from(AUDIT_LOG);
    }
    match super::load_policy(&args.policy) {
        Ok(p) => p.audit.path,
        Err(e) => {
            // The log is still worth reading when the policy has errors (it may be why).
            eprintln!("portguard: warning: {e:#}\nportguard: warning: reading {AUDIT_LOG}");
            PathBuf::from(AUDIT_LOG)
        }
    }
}

fn follow(out: &mut impl Write, mut f: Follower, filter: &Filter, json: bool) -> io::Result<()> {
    loop {
        let recs = f.poll(filter).map_err(io::Error::other)?;
        print_records(out, &recs, json, false)?;
        out.flush()?;
        std::thread::sleep(FOLLOW_POLL);
    }
}

fn print_records(
    out: &mut impl Write,
    records: &[Record],
    json: bool,
    header: bool,
) -> io::Result<()> {
    if json {
        for r in records {
            serde_json::to_writer(&mut *out, r)?;
            writeln!(out)?;
        }
        return Ok(());
    }
    let rows: Vec<Row> = records.iter().map(Row::of).collect();
    let mut widths = HEADER.map(str::len);
    for row in &rows {
        if let Row::Flow(cells) = row {
            for (w, c) in widths.iter_mut().zip(cells.iter()) {
                *w = (*w).max(c.len());
            }
        }
    }
    if header && !rows.is_empty() {
        write_cells(out, &HEADER.map(String::from), &widths)?;
    }
    for row in rows {
        match row {
            Row::Flow(cells) => write_cells(out, &cells, &widths)?,
            Row::Note(text) => writeln!(out, "{text}")?,
        }
    }
    Ok(())
}

const HEADER: [&str; 10] = [
    "LAST SEEN",
    "IFACE",
    "SRC",
    "DST",
    "TARGET",
    "FLAGS",
    "REASON",
    "RULE",
    "ACTION",
    "COUNT",
];

enum Row {
    Flow(Box<[String; 10]>),
    Note(String),
}

impl Row {
    fn of(rec: &Record) -> Row {
        match rec {
            Record::Flow(f) => Row::Flow(Box::new(flow_cells(f))),
            Record::Overflow(o) => Row::Note(format!(
                "{}  {} more packets of flows beyond the bound of {} per window",
                time(o.last_seen),
                o.count,
                o.max_flows
            )),
            Record::Summary(s) => Row::Note(format!(
                "{}  datapath: {} denied packets not reported (rate limit), {} events lost \
                 (ring full), {} reported",
                time(s.time),
                s.suppressed,
                s.lost,
                s.emitted
            )),
        }
    }
}

fn flow_cells(f: &FlowRecord) -> [String; 10] {
    let dash = || "-".to_owned();
    let iface = match (&f.interface, f.vlan) {
        (Some(i), Some(v)) => format!("{i}.{v}"),
        (Some(i), None) => i.clone(),
        (None, Some(v)) => format!("#{}.{v}", f.ifindex),
        (None, None) => format!("#{}", f.ifindex),
    };
    [
        time(f.last_seen),
        iface,
        f.src.map_or_else(dash, |a| a.to_string()),
        f.dst.map_or_else(dash, |a| a.to_string()),
        query::target(f),
        f.tcp_flags.clone().unwrap_or_else(dash),
        f.reason.clone(),
        f.rule.clone().unwrap_or_else(dash),
        if f.would_deny { "would-drop" } else { "drop" }.to_owned(),
        f.count.to_string(),
    ]
}

fn write_cells(out: &mut impl Write, cells: &[String; 10], widths: &[usize; 10]) -> io::Result<()> {
    let last = cells.len() - 1;
    for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
        if i == last {
            // Counts right-aligned, the end of the line not padded.
            writeln!(out, "{c:>w$}")?;
        } else {
            write!(out, "{c:<w$}  ")?;
        }
    }
    Ok(())
}

/// Whole seconds are enough to read; the JSON keeps nanoseconds.
fn time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn print_top(
    out: &mut impl Write,
    top: &Top,
    records: &[Record],
    since: Timestamp,
    json: bool,
) -> io::Result<()> {
    let (mut overflow, mut suppressed, mut lost) = (0u64, 0u64, 0u64);
    for r in records {
        match r {
            Record::Overflow(o) => overflow += o.count,
            Record::Summary(s) => {
                suppressed += s.suppressed;
                lost += s.lost;
            }
            Record::Flow(_) => {}
        }
    }
    if json {
        let v = serde_json::json!({
            "since": since,
            "sources": top.sources.iter()
                .map(|(src, n)| serde_json::json!({ "src": src, "packets": n }))
                .collect::<Vec<_>>(),
            "ports": top.ports.iter()
                .map(|(port, n)| serde_json::json!({ "port": port, "packets": n }))
                .collect::<Vec<_>>(),
            "unattributed": { "overflow": overflow, "suppressed": suppressed, "lost": lost },
        });
        return writeln!(out, "{v}");
    }
    writeln!(out, "Packets refused since {}", time(since))?;
    let w = top
        .sources
        .iter()
        .map(|(s, _)| s.to_string().len())
        .chain(top.ports.iter().map(|(p, _)| p.len()))
        .max()
        .unwrap_or(0)
        .max("SOURCE".len());
    writeln!(out, "\n{:<w$}  {:>10}", "SOURCE", "PACKETS")?;
    for (src, n) in &top.sources {
        writeln!(out, "{:<w$}  {n:>10}", src.to_string())?;
    }
    writeln!(out, "\n{:<w$}  {:>10}", "PORT", "PACKETS")?;
    for (port, n) in &top.ports {
        writeln!(out, "{port:<w$}  {n:>10}")?;
    }
    if overflow + suppressed + lost > 0 {
        writeln!(
            out,
            "\nNot attributed: {overflow} packets beyond the per-window flow bound, {suppressed} \
             not reported (rate limit), {lost} lost (ring full)."
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow() -> FlowRecord {
        FlowRecord {
            origin: crate::audit::record::Origin::default(),
            first_seen: "2025-01-31T12:00:00Z".parse().unwrap(),
            last_seen: "2025-01-31T12:00:04.5Z".parse().unwrap(),
            interface: Some("eth1".into()),
            ifindex: 2,
            vlan: Some(10),
            src: Some("198.18.1.7".parse().unwrap()),
            dst: Some("198.18.0.1".parse().unwrap()),
            proto: Some("tcp".into()),
            proto_number: Some(6),
            sport: Some(40_000),
            dport: Some(23),
            icmp_type: None,
            icmp_code: None,
            tcp_flags: Some("S".into()),
            reason: "port-not-open".into(),
            rule: None,
            would_deny: true,
            count: 3,
            bytes: 180,
        }
    }

    #[test]
    fn table_has_a_header_aligned_rows_and_notes() {
        let recs = [
            Record::Flow(flow()),
            Record::Summary(crate::audit::record::SummaryRecord {
                origin: crate::audit::record::Origin::default(),
                time: "2025-01-31T12:00:05Z".parse().unwrap(),
                emitted: 1,
                suppressed: 2,
                lost: 0,
            }),
        ];
        let mut out = Vec::new();
        print_records(&mut out, &recs, false, true).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("LAST SEEN"), "{text}");
        assert!(
            lines[1].starts_with("2025-01-31T12:00:04Z  eth1.10"),
            "{text}"
        );
        assert!(lines[1].contains("tcp/23"), "{text}");
        assert!(lines[1].contains("would-drop"), "{text}");
        assert_eq!(lines[0].find("SRC"), lines[1].find("198.18.1.7"), "{text}");
        assert!(lines[2].contains("2 denied packets not reported"), "{text}");
    }

    #[test]
    fn json_lines_round_trip() {
        let recs = [Record::Flow(flow())];
        let mut out = Vec::new();
        print_records(&mut out, &recs, true, true).unwrap();
        let back: Record = serde_json::from_slice(&out).unwrap();
        assert_eq!(back, recs[0]);
    }

    #[test]
    fn top_json_names_the_unattributed() {
        let recs = [Record::Flow(flow())];
        let mut out = Vec::new();
        let since = "2025-01-31T11:00:00Z".parse().unwrap();
        print_top(&mut out, &query::top(&recs, 5), &recs, since, true).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["sources"][0]["src"], "198.18.1.7");
        assert_eq!(v["ports"][0]["port"], "tcp/23");
        assert_eq!(v["ports"][0]["packets"], 3);
        assert_eq!(v["unattributed"]["suppressed"], 0);
    }
}
