//! Reading the audit log back: every file oldest first, filters, a tail that survives
//! rotation, and the top sources and ports refused.

use std::{
    collections::HashMap,
    fs::{self, File},
    io::{BufRead as _, BufReader, Read as _, Seek as _, SeekFrom},
    net::IpAddr,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    str::FromStr,
};

use ipnet::IpNet;
use jiff::{SignedDuration, Span, SpanRelativeTo, Timestamp, civil::Date, tz::TimeZone};

use super::{
    AuditError,
    logfile::rotated,
    record::{FlowRecord, Record},
};

/// `--since`: a duration before now (`90s`, `10m`, `2h`, `1d`, `1w`, `1h30m`) or a time (RFC
/// 3339, or a date meaning its midnight UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Since {
    /// This long before now.
    Ago(SignedDuration),
    /// From this time on.
    At(Timestamp),
}

impl Since {
    /// The earliest time this selects, seen from `now`.
    #[must_use]
    pub fn resolve(self, now: Timestamp) -> Timestamp {
        match self {
            Since::At(t) => t,
            Since::Ago(d) => now.checked_sub(d).unwrap_or(Timestamp::MIN),
        }
    }
}

impl FromStr for Since {
    type Err = AuditError;

    fn from_str(text: &str) -> Result<Self, AuditError> {
        let t = text.trim();
        if let Ok(ts) = t.parse::<Timestamp>() {
            return Ok(Since::At(ts));
        }
        if let Ok(date) = t.parse::<Date>()
            && let Ok(ts) =
                TimeZone::UTC.to_timestamp(date.to_datetime(jiff::civil::Time::midnight()))
        {
            return Ok(Since::At(ts));
        }
        // Days count as 24 hours: "1d" means the last 24 hours whatever the DST rules.
        t.parse::<Span>()
            .ok()
            .and_then(|s| {
                s.abs()
                    .to_duration(SpanRelativeTo::days_are_24_hours())
                    .ok()
            })
            .map(Since::Ago)
            .ok_or_else(|| AuditError::Time { text: text.into() })
    }
}

/// Which records to show.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Records about this time or later (flows by their last packet).
    pub since: Option<Timestamp>,
    /// Flows from this network. Setting it (or `port`) selects flows only.
    pub src: Option<IpNet>,
    /// Flows to this destination port (TCP, UDP, SCTP).
    pub port: Option<u16>,
}

impl Filter {
    /// Whether `rec` passes.
    #[must_use]
    pub fn matches(&self, rec: &Record) -> bool {
        let Filter { since, src, port } = self;
        if since.is_some_and(|t| rec.time() < t) {
            return false;
        }
        if src.is_none() && port.is_none() {
            return true;
        }
        let Record::Flow(f) = rec else {
            return false;
        };
        src.is_none_or(|net| f.src.is_some_and(|a| net.contains(&a)))
            && port.is_none_or(|p| f.dport == Some(p))
    }
}

/// The files of the log at `path` that exist, oldest first: `path.N` ... `path.1`, `path`.
/// Found by listing the directory, so files kept under an older `keep` are read too.
pub fn log_files(path: &Path) -> Result<Vec<PathBuf>, AuditError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return Ok(vec![]);
    };
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(source) => {
            return Err(AuditError::Read {
                path: dir.to_owned(),
                source,
            });
        }
    };
    let mut numbered: Vec<u32> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix(name)?
                .strip_prefix('.')?
                .parse::<u32>()
                .ok()
        })
        .filter(|n| *n > 0)
        .collect();
    numbered.sort_unstable_by(|a, b| b.cmp(a));
    let mut files: Vec<PathBuf> = numbered.into_iter().map(|n| rotated(path, n)).collect();
    if path.is_file() {
        files.push(path.to_owned());
    }
    Ok(files)
}

/// Every record of the log at `path` (current and rotated files, oldest first) that `filter`
/// passes. Lines that are not records are skipped with a warning naming file and line.
pub fn read(path: &Path, filter: &Filter) -> Result<Vec<Record>, AuditError> {
    let mut out = Vec::new();
    for file in log_files(path)? {
        let f = match File::open(&file) {
            Ok(f) => f,
            // Rotated away between listing and opening: its lines are in the next file.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(AuditError::Open { path: file, source }),
        };
        for (i, line) in BufReader::new(f).lines().enumerate() {
            let line = line.map_err(|source| AuditError::Read {
                path: file.clone(),
                source,
            })?;
            if let Some(rec) = parse_line(&file, i + 1, &line)
                && filter.matches(&rec)
            {
                out.push(rec);
            }
        }
    }
    Ok(out)
}

fn parse_line(file: &Path, lineno: usize, line: &str) -> Option<Record> {
    if line.trim().is_empty() {
        return None;
    }
    match serde_json::from_str::<Record>(line) {
        Ok(r) => Some(r.upgrade()),
        Err(e) => {
            log::warn!(
                "{}:{lineno}: skipping a line that is not a record: {e}",
                file.display()
            );
            None
        }
    }
}

/// A tail of the current log file that follows it across rotations: each [`Follower::poll`]
/// returns the complete lines written since the previous one.
#[derive(Debug)]
pub struct Follower {
    path: PathBuf,
    file: Option<File>,
    /// Device and inode of `file`, to notice the path now names another file.
    id: (u64, u64),
    pos: u64,
    partial: Vec<u8>,
    lineno: usize,
}

impl Follower {
    /// Follow `path` from its current end (or from its start once it appears).
    pub fn at_end(path: &Path) -> Result<Self, AuditError> {
        let mut f = Follower {
            path: path.to_owned(),
            file: None,
            id: (0, 0),
            pos: 0,
            partial: Vec::new(),
            lineno: 0,
        };
        if f.reopen()? {
            // Skip what is there, counting lines so warnings name the right one.
            let mut buf = Vec::new();
            f.read_new(&mut buf)?;
            let end = buf.iter().rposition(|b| *b == b'\n').map_or(0, |e| e + 1);
            f.lineno = buf[..end].split_inclusive(|b| *b == b'\n').count();
            f.partial = buf[end..].to_vec();
        }
        Ok(f)
    }

    /// Records appended since the last call. After a rotation the rest of the old file comes
    /// first, then the new file from its start; a file truncated in place is read again from
    /// its start.
    pub fn poll(&mut self, filter: &Filter) -> Result<Vec<Record>, AuditError> {
        let mut out = Vec::new();
        self.read_lines(filter, &mut out)?;
        let now = fs::metadata(&self.path)
            .ok()
            .map(|m| (m.dev(), m.ino(), m.len()));
        match now {
            Some((dev, ino, _)) if self.file.is_none() || (dev, ino) != self.id => {
                // Rotated (or created). The writer finishes the old file before renaming it,
                // so reading the old descriptor once more now gets its last lines.
                self.read_lines(filter, &mut out)?;
                self.reopen()?;
                self.read_lines(filter, &mut out)?;
            }
            Some((_, _, len)) if len < self.pos => {
                self.pos = 0;
                self.lineno = 0;
                self.partial.clear();
                self.read_lines(filter, &mut out)?;
            }
            _ => {}
        }
        Ok(out)
    }

    fn reopen(&mut self) -> Result<bool, AuditError> {
        self.file = None;
        self.pos = 0;
        self.partial.clear();
        self.lineno = 0;
        let file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(source) => {
                return Err(AuditError::Open {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let m = file.metadata().map_err(|source| AuditError::Read {
            path: self.path.clone(),
            source,
        })?;
        self.id = (m.dev(), m.ino());
        self.file = Some(file);
        Ok(true)
    }

    /// Append the bytes written since the last read to `buf`.
    fn read_new(&mut self, buf: &mut Vec<u8>) -> Result<(), AuditError> {
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        let err = |source| AuditError::Read {
            path: self.path.clone(),
            source,
        };
        file.seek(SeekFrom::Start(self.pos)).map_err(err)?;
        let n = file.read_to_end(buf).map_err(err)?;
        self.pos += n as u64;
        Ok(())
    }

    /// Parse the complete lines written since the last read; keep a partial last line (the
    /// writer may be in the middle of it) for the next.
    fn read_lines(&mut self, filter: &Filter, out: &mut Vec<Record>) -> Result<(), AuditError> {
        let mut buf = std::mem::take(&mut self.partial);
        self.read_new(&mut buf)?;
        let end = buf.iter().rposition(|b| *b == b'\n').map_or(0, |e| e + 1);
        self.partial = buf.split_off(end);
        for line in buf.split_inclusive(|b| *b == b'\n') {
            self.lineno += 1;
            let text = String::from_utf8_lossy(line);
            if let Some(rec) = parse_line(&self.path, self.lineno, &text)
                && filter.matches(&rec)
            {
                out.push(rec);
            }
        }
        Ok(())
    }
}

/// `--src`: a network in CIDR notation, or one address (a /32 or /128).
pub fn parse_net(text: &str) -> Result<IpNet, String> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("`{text}` is neither an address nor a network (198.18.1.0/24)"))
}

/// Packets refused per source and per destination, largest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Top {
    /// Sources, with the packets refused from each.
    pub sources: Vec<(IpAddr, u64)>,
    /// Destinations (`tcp/22`, `icmp/8:0`, a bare protocol), with the packets refused to each.
    pub ports: Vec<(String, u64)>,
}

/// The `n` sources and the `n` ports most refused in `records` (flows only; ties by name).
#[must_use]
pub fn top(records: &[Record], n: usize) -> Top {
    let mut sources: HashMap<IpAddr, u64> = HashMap::new();
    let mut ports: HashMap<String, u64> = HashMap::new();
    for rec in records {
        let Record::Flow(f) = rec else { continue };
        if let Some(src) = f.src {
            *sources.entry(src).or_default() += f.count;
        }
        *ports.entry(target(f)).or_default() += f.count;
    }
    Top {
        sources: largest(sources, n),
        ports: largest(ports, n),
    }
}

/// What a flow was addressed to, as one word: `tcp/22`, `icmp/8:0`, `47`, `non-ip`.
#[must_use]
pub fn target(f: &FlowRecord) -> String {
    let proto = match (&f.proto, f.proto_number) {
        (Some(name), _) => name.clone(),
        (None, Some(n)) => n.to_string(),
        (None, None) => "non-ip".to_owned(),
    };
    match (f.dport, f.icmp_type, f.icmp_code) {
        (Some(p), _, _) => format!("{proto}/{p}"),
        (None, Some(t), Some(c)) => format!("{proto}/{t}:{c}"),
        _ => proto,
    }
}

fn largest<K: Ord>(counts: HashMap<K, u64>, n: usize) -> Vec<(K, u64)> {
    let mut v: Vec<(K, u64)> = counts.into_iter().collect();
    v.sort_by(|(ka, a), (kb, b)| b.cmp(a).then_with(|| ka.cmp(kb)));
    v.truncate(n);
    v
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;
    use crate::audit::{
        logfile::{
            LogWriter,
            tests::{TempDir, summary},
        },
        record::FlowRecord,
    };

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn flow(src: &str, dport: u16, count: u64, last: &str) -> Record {
        Record::Flow(FlowRecord {
            origin: crate::audit::record::Origin::default(),
            first_seen: ts(last),
            last_seen: ts(last),
            interface: Some("eth1".into()),
            ifindex: 2,
            vlan: None,
            src: Some(src.parse().unwrap()),
            dst: Some("198.18.0.1".parse().unwrap()),
            proto: Some("tcp".into()),
            proto_number: Some(6),
            sport: Some(40_000),
            dport: Some(dport),
            icmp_type: None,
            icmp_code: None,
            tcp_flags: Some("S".into()),
            reason: "port-not-open".into(),
            rule: None,
            would_deny: false,
            count,
            bytes: count * 60,
        })
    }

    #[test]
    fn since_parses_durations_times_and_dates() {
        let now = ts("2025-01-31T12:00:00Z");
        let at = |s: &str| s.parse::<Since>().unwrap().resolve(now).to_string();
        assert_eq!(at("10m"), "2025-01-31T11:50:00Z");
        assert_eq!(at("2h"), "2025-01-31T10:00:00Z");
        assert_eq!(at("1d"), "2025-01-30T12:00:00Z");
        assert_eq!(at("1w"), "2025-01-24T12:00:00Z");
        assert_eq!(at("90s"), "2025-01-31T11:58:30Z");
        assert_eq!(at("1h30m"), "2025-01-31T10:30:00Z");
        assert_eq!(at("2h ago"), "2025-01-31T10:00:00Z");
        assert_eq!(at("2025-01-30T08:00:00Z"), "2025-01-30T08:00:00Z");
        assert_eq!(at("2025-01-30T09:00:00+01:00"), "2025-01-30T08:00:00Z");
        assert_eq!(at("2025-01-30"), "2025-01-30T00:00:00Z");
        for bad in ["", "yesterday", "10x", "2025-13-01", "1mo"] {
            let e = bad.parse::<Since>().unwrap_err();
            assert!(e.to_string().contains(&format!("`{bad}`")), "{e}");
        }
    }

    #[test]
    fn filters_select_by_time_source_and_port() {
        let recs = [
            flow("198.18.1.7", 22, 1, "2025-01-31T11:00:00Z"),
            flow("198.18.1.7", 23, 1, "2025-01-31T11:30:00Z"),
            flow("198.19.2.1", 22, 1, "2025-01-31T11:40:00Z"),
            flow("2001:db8::7", 22, 1, "2025-01-31T11:45:00Z"),
            summary(5),
        ];
        let pick = |f: &Filter| {
            recs.iter()
                .enumerate()
                .filter(|(_, r)| f.matches(r))
                .map(|(i, _)| i)
                .collect::<Vec<_>>()
        };
        assert_eq!(pick(&Filter::default()), [0, 1, 2, 3, 4]);
        let since = Some(ts("2025-01-31T11:30:00Z"));
        // The summary is stamped 12:00.
        assert_eq!(
            pick(&Filter {
                since,
                ..Filter::default()
            }),
            [1, 2, 3, 4]
        );
        let src = Some("198.18.0.0/15".parse().unwrap());
        assert_eq!(
            pick(&Filter {
                src,
                ..Filter::default()
            }),
            [0, 1, 2]
        );
        let src = Some("198.18.1.7/32".parse().unwrap());
        assert_eq!(
            pick(&Filter {
                src,
                port: Some(22),
                since: None
            }),
            [0]
        );
        assert_eq!(
            pick(&Filter {
                port: Some(22),
                ..Filter::default()
            }),
            [0, 2, 3]
        );
        let src = Some("2001:db8::/32".parse().unwrap());
        assert_eq!(
            pick(&Filter {
                src,
                ..Filter::default()
            }),
            [3]
        );
    }

    #[test]
    fn read_goes_through_rotated_files_oldest_first_and_skips_junk() {
        let tmp = TempDir::new("query");
        let path = tmp.0.join("audit.jsonl");
        let one = serde_json::to_vec(&summary(10)).unwrap().len() as u64 + 1;
        let mut w = LogWriter::open(&path, 2 * one, 3).unwrap();
        for n in 10..17 {
            w.write(&[summary(n)]).unwrap();
        }
        assert_eq!(log_files(&path).unwrap().len(), 4);
        let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
        writeln!(f, "not json").unwrap();
        let got: Vec<u64> = read(&path, &Filter::default())
            .unwrap()
            .into_iter()
            .map(|r| match r {
                Record::Summary(s) => s.emitted,
                r => panic!("{r:?}"),
            })
            .collect();
        assert_eq!(got, [10, 11, 12, 13, 14, 15, 16]);
        assert!(
            read(&tmp.0.join("none.jsonl"), &Filter::default())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn follower_sees_appends_partial_lines_and_rotation() {
        let tmp = TempDir::new("follow");
        let path = tmp.0.join("audit.jsonl");
        let all = Filter::default();
        let emitted = |recs: Vec<Record>| -> Vec<u64> {
            recs.into_iter()
                .map(|r| match r {
                    Record::Summary(s) => s.emitted,
                    r => panic!("{r:?}"),
                })
                .collect()
        };
        // Not there yet: picked up from its start once written.
        let mut fol = Follower::at_end(&path).unwrap();
        assert!(fol.poll(&all).unwrap().is_empty());
        let one = serde_json::to_vec(&summary(10)).unwrap().len() as u64 + 1;
        let mut w = LogWriter::open(&path, 3 * one, 1).unwrap();
        w.write(&[summary(1)]).unwrap();
        assert_eq!(emitted(fol.poll(&all).unwrap()), [1]);
        // From the end: old lines are not repeated.
        let mut late = Follower::at_end(&path).unwrap();
        // A partial line waits for its end.
        let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
        let line = serde_json::to_string(&summary(2)).unwrap();
        f.write_all(&line.as_bytes()[..10]).unwrap();
        assert!(fol.poll(&all).unwrap().is_empty());
        f.write_all(&line.as_bytes()[10..]).unwrap();
        f.write_all(b"\n").unwrap();
        assert_eq!(emitted(fol.poll(&all).unwrap()), [2]);
        assert_eq!(emitted(late.poll(&all).unwrap()), [2]);
        // Rotation between polls: the old file's tail, then the new file.
        w.write(&[summary(3), summary(4), summary(5)]).unwrap();
        assert!(rotated(&path, 1).exists());
        assert_eq!(emitted(fol.poll(&all).unwrap()), [3, 4, 5]);
        w.write(&[summary(6)]).unwrap();
        assert_eq!(emitted(fol.poll(&all).unwrap()), [6]);
        // Truncated in place (copytruncate): read again from the start.
        drop(w);
        fs::write(
            &path,
            format!("{}\n", serde_json::to_string(&summary(7)).unwrap()),
        )
        .unwrap();
        assert_eq!(emitted(fol.poll(&all).unwrap()), [7]);
    }

    #[test]
    fn src_accepts_networks_and_addresses() {
        assert_eq!(
            parse_net("198.18.1.0/24").unwrap().to_string(),
            "198.18.1.0/24"
        );
        assert_eq!(
            parse_net("198.18.1.7").unwrap().to_string(),
            "198.18.1.7/32"
        );
        assert_eq!(
            parse_net("2001:db8::1").unwrap().to_string(),
            "2001:db8::1/128"
        );
        assert!(
            parse_net("198.18.1.0/33")
                .unwrap_err()
                .contains("198.18.1.0/33")
        );
    }

    #[test]
    fn top_ranks_sources_and_ports_by_packets() {
        let recs = [
            flow("198.18.1.7", 22, 5, "2025-01-31T11:00:00Z"),
            flow("198.18.1.7", 23, 1, "2025-01-31T11:00:00Z"),
            flow("198.18.1.8", 23, 3, "2025-01-31T11:00:00Z"),
            flow("198.18.1.9", 3389, 3, "2025-01-31T11:00:00Z"),
            summary(99),
        ];
        let t = top(&recs, 2);
        assert_eq!(
            t.sources,
            [
                ("198.18.1.7".parse().unwrap(), 6),
                ("198.18.1.8".parse().unwrap(), 3)
            ]
        );
        assert_eq!(t.ports, [("tcp/22".into(), 5), ("tcp/23".into(), 4)]);
    }
}
