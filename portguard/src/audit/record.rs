//! The JSON-lines records of the audit log, and how a ring-buffer [`Event`] reads as one.
//!
//! One line per record, tagged by `kind`: `flow` (identical denied packets of one window, with
//! a count), `overflow` (packets of flows that did not fit the window's bound) and `summary`
//! (events the datapath suppressed or lost), so the log shows what it does not contain too.
//!
//! Every record says which host wrote it under which policy, and which [`SCHEMA`] it follows,
//! so records shipped off the host (journald, rsyslog, Loki) still stand on their own.
//! Schema 1 (no `schema` field) wrote an unnamed protocol's number as a string
//! (`"proto":"47"`); schema 2 gives every IP record its `proto_number` and names in `proto`
//! only the protocols that have a name. Records of both schemas read back
//! ([`Record::upgrade`]).

use std::{
    ffi::CStr,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use jiff::Timestamp;
use portguard_common::{event::Event, reason::Reason};
use serde::{Deserialize, Serialize};

/// The record schema this build writes.
pub const SCHEMA: u32 = 2;

/// Who wrote a record: the same fields in every kind of record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// [`SCHEMA`] when written; 1 for records written before the field existed.
    #[serde(default = "schema_1")]
    pub schema: u32,
    /// The host's name (`gethostname`); `null` in schema 1.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Version of the policy in force when the record was written; `null` in schema 1 or
    /// when the daemon did not know it.
    #[serde(default)]
    pub policy_version: Option<String>,
}

fn schema_1() -> u32 {
    1
}

impl Default for Origin {
    /// An origin of this schema, not stamped yet.
    fn default() -> Self {
        Origin {
            schema: SCHEMA,
            hostname: None,
            policy_version: None,
        }
    }
}

/// One line of the audit log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Record {
    /// Identical denied packets seen in one window.
    Flow(FlowRecord),
    /// Denied packets of flows beyond the window's bound on distinct flows.
    Overflow(OverflowRecord),
    /// Events the datapath did not deliver since the previous summary.
    Summary(SummaryRecord),
}

impl Record {
    /// The time the record is about: a flow's or overflow's last packet, a summary's writing.
    #[must_use]
    pub fn time(&self) -> Timestamp {
        match self {
            Record::Flow(f) => f.last_seen,
            Record::Overflow(o) => o.last_seen,
            Record::Summary(s) => s.time,
        }
    }

    /// Who wrote the record.
    #[must_use]
    pub fn origin(&self) -> &Origin {
        match self {
            Record::Flow(f) => &f.origin,
            Record::Overflow(o) => &o.origin,
            Record::Summary(s) => &s.origin,
        }
    }

    /// Stamp the record with the host and policy that wrote it.
    pub fn set_origin(&mut self, origin: Origin) {
        match self {
            Record::Flow(f) => f.origin = origin,
            Record::Overflow(o) => o.origin = origin,
            Record::Summary(s) => s.origin = origin,
        }
    }

    /// A record as this build reads it, whatever schema wrote it: schema 1's `"proto":"47"`
    /// becomes `proto_number` 47 (and `proto` its name, if it has one).
    #[must_use]
    pub fn upgrade(mut self) -> Self {
        if let Record::Flow(f) = &mut self
            && f.proto_number.is_none()
            && let Some(name) = f.proto.as_deref()
        {
            let number = name.parse::<u8>().ok().or_else(|| proto_number(name));
            f.proto_number = number;
            f.proto = number.and_then(proto_name);
        }
        self
    }
}

/// Identical denied packets (same interface, VLAN, addresses, protocol, destination port or
/// ICMP type and code, reason, rule and mode; the source port is ephemeral and not compared).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowRecord {
    /// Who wrote it.
    #[serde(flatten)]
    pub origin: Origin,
    /// First packet of the window, RFC 3339 UTC.
    pub first_seen: Timestamp,
    /// Last packet of the window.
    pub last_seen: Timestamp,
    /// Ingress interface name; `null` when the index no longer names one.
    pub interface: Option<String>,
    /// Ingress interface index.
    pub ifindex: u32,
    /// Innermost VLAN id; `null` for untagged frames.
    pub vlan: Option<u16>,
    /// Source address; `null` for non-IP frames.
    pub src: Option<IpAddr>,
    /// Destination address; `null` for non-IP frames.
    pub dst: Option<IpAddr>,
    /// The protocol's name: `tcp`, `udp`, `sctp`, `icmp`, `icmpv6`, or one of the portless
    /// protocols rules may name (`gre`, `esp`, `vrrp`...); `null` for non-IP frames and for
    /// protocols without a name here (`proto_number` has them all).
    pub proto: Option<String>,
    /// The IP protocol number; `null` for non-IP frames (and in schema 1 records).
    #[serde(default)]
    pub proto_number: Option<u8>,
    /// Source port of the first packet (a sample: the flows are not keyed by it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sport: Option<u16>,
    /// Destination port (TCP, UDP, SCTP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dport: Option<u16>,
    /// ICMP type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u8>,
    /// ICMP code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_code: Option<u8>,
    /// TCP flags seen on any packet of the flow, `FSRPAUEC` order (`S`, `SA`, `RA`...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_flags: Option<String>,
    /// Why it was denied: `Reason::name()`.
    pub reason: String,
    /// Id of the rule that opens this port to other sources; `null` when none does.
    pub rule: Option<String>,
    /// True in audit mode: the packets were passed, and would have been dropped.
    pub would_deny: bool,
    /// Packets.
    pub count: u64,
    /// Bytes (frame lengths).
    pub bytes: u64,
}

/// Packets that arrived after the window already held its maximum of distinct flows: counted,
/// so a flood of distinct flows bounds memory without hiding how much was left out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverflowRecord {
    /// Who wrote it.
    #[serde(flatten)]
    pub origin: Origin,
    /// First such packet.
    pub first_seen: Timestamp,
    /// Last such packet.
    pub last_seen: Timestamp,
    /// Packets.
    pub count: u64,
    /// The bound on distinct flows per window that was reached.
    pub max_flows: usize,
}

/// What the datapath could not report since the previous summary (or since the reader started:
/// earlier losses are only in the pinned counters). Written at the end of a window in which
/// events were suppressed or lost, so a quiet log has none.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SummaryRecord {
    /// Who wrote it.
    #[serde(flatten)]
    pub origin: Origin,
    /// When the counters were read.
    pub time: Timestamp,
    /// Events written to the ring buffer.
    pub emitted: u64,
    /// Denied packets not reported: the per-CPU token bucket was empty.
    pub suppressed: u64,
    /// Events dropped because the ring buffer was full (the reader fell behind).
    pub lost: u64,
}

/// What identifies the target of a denied packet beyond its protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// TCP, UDP or SCTP destination port.
    Port(u16),
    /// ICMP or `ICMPv6` type and code.
    Icmp {
        /// Type.
        ty: u8,
        /// Code.
        code: u8,
    },
    /// Another protocol, or not IP.
    None,
}

/// The fields of an [`Event`] that make two denied packets "the same flow".
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Ingress interface index.
    pub ifindex: u32,
    /// Innermost VLAN id, 0 = untagged.
    pub vlan: u16,
    /// Source address, `None` when not IP.
    pub src: Option<IpAddr>,
    /// Destination address.
    pub dst: Option<IpAddr>,
    /// IP protocol, `None` when not IP.
    pub proto: Option<u8>,
    /// Destination port or ICMP type and code.
    pub target: Target,
    /// [`Reason`] discriminant.
    pub reason: u32,
    /// Rule id of the event's hint, resolved when the event was read.
    pub rule: Option<String>,
    /// Audit mode.
    pub would_deny: bool,
}

const TCP: u8 = 6;
const UDP: u8 = 17;
const SCTP: u8 = 132;
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;

impl FlowKey {
    /// The key of `ev`, with `rule` the id of the rule its hint slot names.
    #[must_use]
    pub fn of(ev: &Event, rule: Option<String>) -> Self {
        let (src, dst) = match ev.family {
            4 => (Some(v4(&ev.src)), Some(v4(&ev.dst))),
            6 => (
                Some(IpAddr::V6(Ipv6Addr::from(ev.src))),
                Some(IpAddr::V6(Ipv6Addr::from(ev.dst))),
            ),
            _ => (None, None),
        };
        let proto = src.map(|_| ev.proto);
        let target = match proto {
            Some(TCP | UDP | SCTP) => Target::Port(ev.dport),
            // The program puts the ICMP type in `sport` and the code in `dport`.
            Some(ICMP | ICMPV6) => Target::Icmp {
                ty: ev.sport as u8,
                code: ev.dport as u8,
            },
            _ => Target::None,
        };
        FlowKey {
            ifindex: ev.ifindex,
            vlan: ev.vlan,
            src,
            dst,
            proto,
            target,
            reason: ev.reason,
            rule,
            would_deny: ev.would_deny != 0,
        }
    }

    /// The flow record of this key, with what the aggregator counted.
    #[must_use]
    pub fn record(&self, stats: &FlowStats, interface: Option<String>) -> FlowRecord {
        let FlowKey {
            ifindex,
            vlan,
            src,
            dst,
            proto,
            target,
            reason,
            rule,
            would_deny,
        } = self;
        let (sport, dport, icmp_type, icmp_code) = match *target {
            Target::Port(p) => (Some(stats.sport), Some(p), None, None),
            Target::Icmp { ty, code } => (None, None, Some(ty), Some(code)),
            Target::None => (None, None, None, None),
        };
        FlowRecord {
            origin: Origin::default(),
            first_seen: stats.first_seen,
            last_seen: stats.last_seen,
            interface,
            ifindex: *ifindex,
            vlan: (*vlan != 0).then_some(*vlan),
            src: *src,
            dst: *dst,
            proto: proto.and_then(proto_name),
            proto_number: *proto,
            sport,
            dport,
            icmp_type,
            icmp_code,
            tcp_flags: (*proto == Some(TCP)).then(|| tcp_flags(stats.tcp_flags)),
            reason: reason_name(*reason),
            rule: rule.clone(),
            would_deny: *would_deny,
            count: stats.count,
            bytes: stats.bytes,
        }
    }
}

/// What a window counted for one flow, times already on the wall clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowStats {
    /// First packet.
    pub first_seen: Timestamp,
    /// Last packet.
    pub last_seen: Timestamp,
    /// Packets.
    pub count: u64,
    /// Bytes.
    pub bytes: u64,
    /// Source port of the first packet.
    pub sport: u16,
    /// Union of the TCP flags seen.
    pub tcp_flags: u8,
}

fn v4(a: &[u8; 16]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))
}

/// The name of an IP protocol in records: the transport protocols, ICMP, and the portless
/// protocols rules may name ([`crate::policy::IP_PROTOCOLS`]); `None` for the others.
#[must_use]
pub fn proto_name(proto: u8) -> Option<String> {
    Some(match proto {
        TCP => "tcp".into(),
        UDP => "udp".into(),
        SCTP => "sctp".into(),
        ICMP => "icmp".into(),
        ICMPV6 => "icmpv6".into(),
        n => crate::policy::IP_PROTOCOLS
            .iter()
            .find(|(_, v)| *v == n)
            .map(|(name, _)| (*name).to_owned())?,
    })
}

/// The number of a protocol [`proto_name`] names.
#[must_use]
pub fn proto_number(name: &str) -> Option<u8> {
    (0..=u8::MAX).find(|n| proto_name(*n).as_deref() == Some(name))
}

/// `Reason::name()` of a discriminant, or `reason-N` for one this build does not know (an
/// event from a newer datapath must still be logged).
#[must_use]
pub fn reason_name(reason: u32) -> String {
    Reason::from_u32(reason).map_or_else(|| format!("reason-{reason}"), |r| r.name().to_owned())
}

/// TCP flags as letters in bit order, tcpdump's: FIN SYN RST PSH ACK URG ECE CWR, so a SYN-ACK
/// reads `SA`; no flags reads `.` (as tcpdump prints it).
#[must_use]
pub fn tcp_flags(flags: u8) -> String {
    const LETTERS: [char; 8] = ['F', 'S', 'R', 'P', 'A', 'U', 'E', 'C'];
    let s: String = LETTERS
        .iter()
        .enumerate()
        .filter(|(bit, _)| flags & (1 << bit) != 0)
        .map(|(_, c)| *c)
        .collect();
    if s.is_empty() { ".".into() } else { s }
}

/// The name of an interface index in this network namespace (`if_indextoname(3)`); `None` when
/// no interface has it (any more).
#[must_use]
pub fn interface_name(ifindex: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` has the IF_NAMESIZE bytes the call may write, NUL included.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: on success the buffer holds a NUL-terminated name.
    let name = unsafe { CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Event {
        let mut ev = Event {
            time_ns: 1_000,
            ifindex: 3,
            reason: Reason::PortNotOpen as u32,
            hint: 0,
            len: 60,
            sport: 40_000,
            dport: 23,
            vlan: 0,
            proto: TCP,
            family: 4,
            tcp_flags: 0x12,
            would_deny: 0,
            ..Event::default()
        };
        ev.src[..4].copy_from_slice(&[198, 18, 1, 7]);
        ev.dst[..4].copy_from_slice(&[198, 18, 0, 1]);
        ev
    }

    fn stats() -> FlowStats {
        FlowStats {
            first_seen: "2025-01-31T12:00:00Z".parse().unwrap(),
            last_seen: "2025-01-31T12:00:04.5Z".parse().unwrap(),
            count: 3,
            bytes: 180,
            sport: 40_000,
            tcp_flags: 0x12,
        }
    }

    #[test]
    fn tcp_event_becomes_a_flow_record() {
        let key = FlowKey::of(&event(), Some("RHV-H10".into()));
        let rec = Record::Flow(key.record(&stats(), Some("eth1".into())));
        let json = serde_json::to_value(&rec).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "kind": "flow",
                "schema": 2,
                "hostname": null,
                "policy_version": null,
                "first_seen": "2025-01-31T12:00:00Z",
                "last_seen": "2025-01-31T12:00:04.5Z",
                "interface": "eth1",
                "ifindex": 3,
                "vlan": null,
                "src": "198.18.1.7",
                "dst": "198.18.0.1",
                "proto": "tcp",
                "proto_number": 6,
                "sport": 40000,
                "dport": 23,
                "tcp_flags": "SA",
                "reason": "port-not-open",
                "rule": "RHV-H10",
                "would_deny": false,
                "count": 3,
                "bytes": 180,
            })
        );
        let back: Record = serde_json::from_value(json).unwrap();
        assert_eq!(back, rec);
    }

    #[test]
    fn icmpv6_event_has_type_and_code_and_no_ports() {
        let mut ev = event();
        ev.family = 6;
        ev.proto = ICMPV6;
        ev.src = "2001:db8:1::7".parse::<Ipv6Addr>().unwrap().octets();
        ev.dst = "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets();
        ev.sport = 128;
        ev.dport = 0;
        ev.vlan = 42;
        ev.would_deny = 1;
        let rec = FlowKey::of(&ev, None).record(&stats(), None);
        assert_eq!(rec.proto.as_deref(), Some("icmpv6"));
        assert_eq!((rec.icmp_type, rec.icmp_code), (Some(128), Some(0)));
        assert_eq!((rec.sport, rec.dport, &rec.tcp_flags), (None, None, &None));
        assert_eq!(rec.src, Some("2001:db8:1::7".parse().unwrap()));
        assert_eq!(rec.vlan, Some(42));
        assert!(rec.would_deny);
        let line = serde_json::to_string(&Record::Flow(rec)).unwrap();
        assert!(line.contains(r#""rule":null"#), "{line}");
        assert!(!line.contains("sport"), "{line}");
    }

    #[test]
    fn non_ip_event_has_no_addresses() {
        let mut ev = event();
        ev.family = 0;
        ev.reason = Reason::NonIpDropped as u32;
        let key = FlowKey::of(&ev, None);
        assert_eq!((key.src, key.proto, key.target), (None, None, Target::None));
        let rec = key.record(&stats(), None);
        assert_eq!(rec.reason, "non-ip-dropped");
        assert_eq!(rec.proto, None);
    }

    #[test]
    fn sport_is_not_part_of_the_key() {
        let a = event();
        let mut b = event();
        b.sport = 50_000;
        assert_eq!(FlowKey::of(&a, None), FlowKey::of(&b, None));
        b.dport = 24;
        assert_ne!(FlowKey::of(&a, None), FlowKey::of(&b, None));
    }

    #[test]
    fn flags_and_names() {
        assert_eq!(tcp_flags(0x02), "S");
        assert_eq!(tcp_flags(0x12), "SA");
        assert_eq!(tcp_flags(0x14), "RA");
        assert_eq!(tcp_flags(0xff), "FSRPAUEC");
        assert_eq!(tcp_flags(0), ".");
        assert_eq!(proto_name(47).as_deref(), Some("gre"));
        assert_eq!(proto_name(253), None);
        assert_eq!(proto_number("vrrp"), Some(112));
        assert_eq!(reason_name(999), "reason-999");
        assert_eq!(interface_name(1).as_deref(), Some("lo"));
        assert_eq!(interface_name(0), None);
    }

    #[test]
    fn summary_and_overflow_lines_round_trip() {
        let t: Timestamp = "2025-01-31T12:00:00Z".parse().unwrap();
        for rec in [
            Record::Summary(SummaryRecord {
                origin: Origin::default(),
                time: t,
                emitted: 200,
                suppressed: 99_800,
                lost: 0,
            }),
            Record::Overflow(OverflowRecord {
                origin: Origin {
                    schema: SCHEMA,
                    hostname: Some("hv1".into()),
                    policy_version: Some("00112233aabbccdd".into()),
                },
                first_seen: t,
                last_seen: t,
                count: 7,
                max_flows: 10_000,
            }),
        ] {
            let line = serde_json::to_string(&rec).unwrap();
            assert_eq!(serde_json::from_str::<Record>(&line).unwrap(), rec);
        }
    }

    #[test]
    fn schema_1_records_read_with_numbers_as_numbers() {
        let old = r#"{"kind":"flow","first_seen":"2025-01-31T12:00:00Z","last_seen":"2025-01-31T12:00:00Z","interface":"eth1","ifindex":2,"vlan":null,"src":"198.18.1.7","dst":"198.18.0.1","proto":"47","reason":"proto-not-open","rule":null,"would_deny":false,"count":1,"bytes":60}"#;
        let Record::Flow(f) = serde_json::from_str::<Record>(old).unwrap().upgrade() else {
            panic!("a flow");
        };
        assert_eq!(f.origin.schema, 1);
        assert_eq!(
            (f.proto.as_deref(), f.proto_number),
            (Some("gre"), Some(47))
        );
        let unnamed = old.replace(r#""47""#, r#""253""#);
        let Record::Flow(f) = serde_json::from_str::<Record>(&unnamed).unwrap().upgrade() else {
            panic!("a flow");
        };
        assert_eq!((f.proto, f.proto_number), (None, Some(253)));
        let tcp = old.replace(r#""47""#, r#""tcp""#);
        let Record::Flow(f) = serde_json::from_str::<Record>(&tcp).unwrap().upgrade() else {
            panic!("a flow");
        };
        assert_eq!((f.proto.as_deref(), f.proto_number), (Some("tcp"), Some(6)));
        // Schema 2 writes the number as a number.
        let mut ev = event();
        ev.proto = 253;
        let line =
            serde_json::to_string(&Record::Flow(FlowKey::of(&ev, None).record(&stats(), None)))
                .unwrap();
        assert!(
            line.contains(r#""proto":null,"proto_number":253"#),
            "{line}"
        );
        assert!(line.contains(r#""schema":2"#), "{line}");
    }
}
