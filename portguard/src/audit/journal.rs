//! Audit records to the systemd journal: one entry per record, with structured fields, over
//! journald's native protocol (libsystemd's `journal_send`: a datagram, or a sealed memfd
//! for a large one), so journal-remote, rsyslog or any shipper carries them across a fleet and
//! `journalctl MESSAGE_ID=... RULE=RHV-H5` finds them.
//!
//! Sending happens on a thread of its own behind a bounded queue: a journald that stalls must
//! not stall the daemon's event loop (reloads, trial deadlines, the watchdog). A queue that
//! fills is reported and the batch is dropped, never waited for.

use std::{
    fmt::Write as _,
    sync::mpsc::{self, Receiver, SyncSender, TrySendError},
    thread,
    time::Duration,
};

use libsystemd::logging::{Priority, journal_send};

use super::record::{FlowRecord, Record};

/// `MESSAGE_ID` of a denied (or would-deny) flow record.
pub const FLOW_MESSAGE_ID: &str = "56d1bbaf713b4bd39b1be965cb7f4b02";
/// `MESSAGE_ID` of a record of packets beyond the per-window flow bound.
pub const OVERFLOW_MESSAGE_ID: &str = "cc10f2c942ec4fdeacd3c56ef022293f";
/// `MESSAGE_ID` of a record of events the datapath suppressed or lost.
pub const SUMMARY_MESSAGE_ID: &str = "e5bee386e3e04e00853d37cf5b4bc36b";

/// Windows of records queued for the sending thread before batches are dropped.
const QUEUE: usize = 64;
/// How long a sink that is dropped (the daemon stopping) waits for its last records to go out.
const LAST_WORDS: Duration = Duration::from_secs(2);

/// The journal as an audit sink.
#[derive(Debug)]
pub struct JournalSink {
    queue: Option<SyncSender<Vec<Record>>>,
    /// Closed by the sending thread when it has sent everything queued.
    done: Receiver<()>,
}

impl JournalSink {
    /// Start the sending thread. Nothing is checked here: a journal that is not there (no
    /// systemd) shows as errors in the daemon's log when records are sent.
    pub fn start() -> std::io::Result<Self> {
        let (queue, batches) = mpsc::sync_channel::<Vec<Record>>(QUEUE);
        let (finished, done) = mpsc::channel::<()>();
        thread::Builder::new()
            .name("audit-journal".into())
            .spawn(move || {
                let _finished = finished;
                for batch in batches {
                    let mut failed = 0;
                    let mut last = None;
                    for rec in &batch {
                        let (priority, message, fields) = entry(rec);
                        let vars = fields.iter().map(|(k, v)| (*k, v.as_str()));
                        if let Err(e) = journal_send(priority, &message, vars) {
                            failed += 1;
                            last = Some(e);
                        }
                    }
                    if let Some(e) = last {
                        log::error!("audit: {failed} records not sent to the journal: {e}");
                    }
                }
            })?;
        Ok(JournalSink {
            queue: Some(queue),
            done,
        })
    }

    /// Queue one window's records. Never blocks: when the sending thread is that far behind,
    /// the window is dropped and said so.
    pub fn send(&self, records: &[Record]) {
        let Some(queue) = &self.queue else { return };
        match queue.try_send(records.to_vec()) {
            Ok(()) => {}
            Err(TrySendError::Full(batch)) => log::error!(
                "audit: the journal is {QUEUE} windows behind; {} records not sent",
                batch.len()
            ),
            Err(TrySendError::Disconnected(batch)) => log::error!(
                "audit: the journal thread is gone; {} records not sent",
                batch.len()
            ),
        }
    }
}

impl Drop for JournalSink {
    /// Let the last window's records go out (a stopping daemon flushes one), waiting a bounded
    /// time: a stalled journal must not hold up the stop.
    fn drop(&mut self) {
        self.queue = None;
        let _ = self.done.recv_timeout(LAST_WORDS);
    }
}

/// The journal entry of one record: priority, `MESSAGE` and the other fields.
#[must_use]
pub fn entry(rec: &Record) -> (Priority, String, Vec<(&'static str, String)>) {
    let origin = rec.origin();
    let mut fields: Vec<(&'static str, String)> = vec![
        ("SYSLOG_IDENTIFIER", "portguard".into()),
        ("AUDIT_SCHEMA", origin.schema.to_string()),
    ];
    if let Some(v) = &origin.policy_version {
        fields.push(("POLICY_VERSION", v.clone()));
    }
    match rec {
        Record::Flow(f) => {
            fields.push(("MESSAGE_ID", FLOW_MESSAGE_ID.into()));
            flow_fields(f, &mut fields);
            (Priority::Notice, flow_message(f), fields)
        }
        Record::Overflow(o) => {
            fields.push(("MESSAGE_ID", OVERFLOW_MESSAGE_ID.into()));
            fields.push(("COUNT", o.count.to_string()));
            fields.push(("MAX_FLOWS", o.max_flows.to_string()));
            fields.push(("FIRST_SEEN", o.first_seen.to_string()));
            fields.push(("LAST_SEEN", o.last_seen.to_string()));
            let message = format!(
                "{} denied packets of flows beyond the bound of {} per window",
                o.count, o.max_flows
            );
            (Priority::Warning, message, fields)
        }
        Record::Summary(s) => {
            fields.push(("MESSAGE_ID", SUMMARY_MESSAGE_ID.into()));
            fields.push(("EMITTED", s.emitted.to_string()));
            fields.push(("SUPPRESSED", s.suppressed.to_string()));
            fields.push(("LOST", s.lost.to_string()));
            let message = format!(
                "datapath: {} denied packets not reported (rate limit), {} events lost (ring \
                 full), {} reported",
                s.suppressed, s.lost, s.emitted
            );
            let priority = if s.lost > 0 {
                Priority::Warning
            } else {
                Priority::Info
            };
            (priority, message, fields)
        }
    }
}

fn flow_fields(f: &FlowRecord, fields: &mut Vec<(&'static str, String)>) {
    let mut put = |k: &'static str, v: Option<String>| {
        if let Some(v) = v {
            fields.push((k, v));
        }
    };
    put("RULE", f.rule.clone());
    put("SOURCE", f.src.map(|a| a.to_string()));
    put("DESTINATION", f.dst.map(|a| a.to_string()));
    put("PROTOCOL", f.proto.clone());
    put("PROTOCOL_NUMBER", f.proto_number.map(|n| n.to_string()));
    put("SPORT", f.sport.map(|p| p.to_string()));
    put("DPORT", f.dport.map(|p| p.to_string()));
    put("ICMP_TYPE", f.icmp_type.map(|t| t.to_string()));
    put("ICMP_CODE", f.icmp_code.map(|c| c.to_string()));
    put("TCP_FLAGS", f.tcp_flags.clone());
    put("REASON", Some(f.reason.clone()));
    put(
        "ACTION",
        Some(if f.would_deny { "would-drop" } else { "drop" }.into()),
    );
    put("COUNT", Some(f.count.to_string()));
    put("BYTES", Some(f.bytes.to_string()));
    put("INTERFACE", f.interface.clone());
    put("IFINDEX", Some(f.ifindex.to_string()));
    put("VLAN", f.vlan.map(|v| v.to_string()));
    put("FIRST_SEEN", Some(f.first_seen.to_string()));
    put("LAST_SEEN", Some(f.last_seen.to_string()));
}

/// One line a person reads: `denied tcp 198.18.4.7:40000 -> 198.18.0.2:5900 on eth1: ...`.
fn flow_message(f: &FlowRecord) -> String {
    let mut m = String::from(if f.would_deny {
        "would deny "
    } else {
        "denied "
    });
    let proto = f
        .proto
        .clone()
        .or_else(|| f.proto_number.map(|n| format!("protocol {n}")))
        .unwrap_or_else(|| "non-IP frames".into());
    m.push_str(&proto);
    let at = |a: Option<std::net::IpAddr>, port: Option<u16>| match (a, port) {
        (Some(a @ std::net::IpAddr::V6(_)), Some(p)) => format!("[{a}]:{p}"),
        (Some(a), Some(p)) => format!("{a}:{p}"),
        (Some(a), None) => a.to_string(),
        (None, _) => "?".into(),
    };
    if f.src.is_some() {
        let _ = write!(m, " {} -> {}", at(f.src, f.sport), at(f.dst, f.dport));
    }
    if let (Some(t), Some(c)) = (f.icmp_type, f.icmp_code) {
        let _ = write!(m, " type {t} code {c}");
    }
    if let Some(i) = &f.interface {
        let _ = write!(m, " on {i}");
    }
    if let Some(v) = f.vlan {
        let _ = write!(m, " vlan {v}");
    }
    let _ = write!(m, ": {}", f.reason);
    if let Some(r) = &f.rule {
        let _ = write!(m, " (port opened by {r} to other sources)");
    }
    let _ = write!(
        m,
        ", {} packet{}",
        f.count,
        if f.count == 1 { "" } else { "s" }
    );
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{Origin, SCHEMA, SummaryRecord};

    fn flow() -> FlowRecord {
        FlowRecord {
            origin: Origin {
                schema: SCHEMA,
                hostname: Some("hv1".into()),
                policy_version: Some("00112233aabbccdd".into()),
            },
            first_seen: "2025-01-31T12:00:00Z".parse().unwrap(),
            last_seen: "2025-01-31T12:00:04Z".parse().unwrap(),
            interface: Some("eth1".into()),
            ifindex: 2,
            vlan: None,
            src: Some("198.18.4.7".parse().unwrap()),
            dst: Some("198.18.0.2".parse().unwrap()),
            proto: Some("tcp".into()),
            proto_number: Some(6),
            sport: Some(40_000),
            dport: Some(5900),
            icmp_type: None,
            icmp_code: None,
            tcp_flags: Some("S".into()),
            reason: "no-source-role".into(),
            rule: Some("RHV-H5".into()),
            would_deny: true,
            count: 3,
            bytes: 180,
        }
    }

    #[test]
    fn a_flow_entry_has_its_fields_and_a_readable_message() {
        let (priority, message, fields) = entry(&Record::Flow(flow()));
        assert_eq!(u8::from(priority), 5);
        assert_eq!(
            message,
            "would deny tcp 198.18.4.7:40000 -> 198.18.0.2:5900 on eth1: no-source-role (port \
             opened by RHV-H5 to other sources), 3 packets"
        );
        let get = |k: &str| {
            fields
                .iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| v.as_str())
        };
        for (k, v) in [
            ("MESSAGE_ID", FLOW_MESSAGE_ID),
            ("RULE", "RHV-H5"),
            ("SOURCE", "198.18.4.7"),
            ("DESTINATION", "198.18.0.2"),
            ("PROTOCOL", "tcp"),
            ("PROTOCOL_NUMBER", "6"),
            ("SPORT", "40000"),
            ("DPORT", "5900"),
            ("REASON", "no-source-role"),
            ("COUNT", "3"),
            ("POLICY_VERSION", "00112233aabbccdd"),
            ("INTERFACE", "eth1"),
            ("ACTION", "would-drop"),
            ("AUDIT_SCHEMA", "2"),
        ] {
            assert_eq!(get(k), Some(v), "{k}");
        }
        assert_eq!(get("ICMP_TYPE"), None);
    }

    #[test]
    fn icmp_and_summary_entries() {
        let mut f = flow();
        f.proto = Some("icmpv6".into());
        f.src = Some("2001:db8::7".parse().unwrap());
        f.dst = Some("2001:db8::2".parse().unwrap());
        (f.sport, f.dport, f.icmp_type, f.icmp_code) = (None, None, Some(128), Some(0));
        f.would_deny = false;
        f.rule = None;
        f.count = 1;
        let (_, message, fields) = entry(&Record::Flow(f));
        assert_eq!(
            message,
            "denied icmpv6 2001:db8::7 -> 2001:db8::2 type 128 code 0 on eth1: no-source-role, \
             1 packet"
        );
        assert!(fields.contains(&("ICMP_TYPE", "128".into())));
        assert!(!fields.iter().any(|(k, _)| *k == "RULE" || *k == "DPORT"));
        let (priority, _, fields) = entry(&Record::Summary(SummaryRecord {
            origin: Origin::default(),
            time: "2025-01-31T12:00:00Z".parse().unwrap(),
            emitted: 1,
            suppressed: 2,
            lost: 3,
        }));
        assert_eq!(u8::from(priority), 4);
        assert!(fields.contains(&("MESSAGE_ID", SUMMARY_MESSAGE_ID.into())));
    }
}
