//! Folding identical denied packets of one window into one record with a count.
//!
//! A flood of denied packets is already thinned by the datapath's token bucket; what arrives is
//! still one event per packet, and a scan of many ports or from many sources is many flows.
//! Memory stays bounded: a window holds at most `max_flows` distinct flows, and packets of
//! further flows are only counted, into one overflow record.

use std::{
    collections::{HashMap, hash_map::Entry},
    time::Duration,
};

use portguard_common::event::Event;

use super::{
    clock::WallClock,
    record::{FlowKey, FlowStats, Origin, OverflowRecord, Record},
};

/// How long identical packets are folded together before their record is written.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(5);
/// Distinct flows one window holds (about 200 bytes each: a few MiB at most).
pub const DEFAULT_MAX_FLOWS: usize = 10_000;

/// Table capacity kept between windows.
const KEEP_CAPACITY: usize = 1024;

/// Counts of one flow in the current window, times on `CLOCK_MONOTONIC`.
#[derive(Clone, Copy, Debug)]
struct Acc {
    first_ns: u64,
    last_ns: u64,
    count: u64,
    bytes: u64,
    sport: u16,
    tcp_flags: u8,
}

/// Packets of flows that did not fit.
#[derive(Clone, Copy, Debug)]
struct Overflow {
    first_ns: u64,
    last_ns: u64,
    count: u64,
}

/// The flows of the current window.
#[derive(Debug)]
pub struct Aggregator {
    max_flows: usize,
    flows: HashMap<FlowKey, Acc>,
    overflow: Option<Overflow>,
}

impl Aggregator {
    /// An empty window that holds at most `max_flows` distinct flows (at least one).
    #[must_use]
    pub fn new(max_flows: usize) -> Self {
        Aggregator {
            max_flows: max_flows.max(1),
            flows: HashMap::new(),
            overflow: None,
        }
    }

    /// Count one event; `rule` is the id of the rule its hint names, if any.
    pub fn add(&mut self, ev: &Event, rule: Option<String>) {
        let key = FlowKey::of(ev, rule);
        let len = u64::from(ev.len);
        let at_capacity = self.flows.len() >= self.max_flows;
        match self.flows.entry(key) {
            Entry::Occupied(mut e) => {
                let a = e.get_mut();
                // Events of different CPUs reach the ring slightly out of order.
                a.first_ns = a.first_ns.min(ev.time_ns);
                a.last_ns = a.last_ns.max(ev.time_ns);
                a.count += 1;
                a.bytes += len;
                a.tcp_flags |= ev.tcp_flags;
            }
            Entry::Vacant(_) if at_capacity => {
                let o = self.overflow.get_or_insert(Overflow {
                    first_ns: ev.time_ns,
                    last_ns: ev.time_ns,
                    count: 0,
                });
                o.first_ns = o.first_ns.min(ev.time_ns);
                o.last_ns = o.last_ns.max(ev.time_ns);
                o.count += 1;
            }
            Entry::Vacant(e) => {
                e.insert(Acc {
                    first_ns: ev.time_ns,
                    last_ns: ev.time_ns,
                    count: 1,
                    bytes: len,
                    sport: ev.sport,
                    tcp_flags: ev.tcp_flags,
                });
            }
        }
    }

    /// Distinct flows held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// Whether the window has counted nothing (no flows, no overflow).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty() && self.overflow.is_none()
    }

    /// End the window: its records, flows in order of first packet then the overflow, and an
    /// empty window. `names` gives interface names (asked once per interface).
    pub fn flush(
        &mut self,
        clock: &WallClock,
        names: &mut dyn FnMut(u32) -> Option<String>,
    ) -> Vec<Record> {
        let mut flows: Vec<(FlowKey, Acc)> = self.flows.drain().collect();
        // A burst's full table is not kept through the quiet windows after it.
        if self.flows.capacity() > 2 * KEEP_CAPACITY {
            self.flows.shrink_to(KEEP_CAPACITY);
        }
        flows.sort_by(|(ka, a), (kb, b)| {
            (a.first_ns, ka.ifindex, ka.src, ka.dst).cmp(&(b.first_ns, kb.ifindex, kb.src, kb.dst))
        });
        let mut ifnames: HashMap<u32, Option<String>> = HashMap::new();
        let mut out: Vec<Record> = flows
            .into_iter()
            .map(|(key, a)| {
                let name = ifnames
                    .entry(key.ifindex)
                    .or_insert_with(|| names(key.ifindex))
                    .clone();
                let stats = FlowStats {
                    first_seen: clock.timestamp(a.first_ns),
                    last_seen: clock.timestamp(a.last_ns),
                    count: a.count,
                    bytes: a.bytes,
                    sport: a.sport,
                    tcp_flags: a.tcp_flags,
                };
                Record::Flow(key.record(&stats, name))
            })
            .collect();
        if let Some(o) = self.overflow.take() {
            out.push(Record::Overflow(OverflowRecord {
                origin: Origin::default(),
                first_seen: clock.timestamp(o.first_ns),
                last_seen: clock.timestamp(o.last_ns),
                count: o.count,
                max_flows: self.max_flows,
            }));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use portguard_common::reason::Reason;

    use super::*;
    use crate::audit::record::FlowRecord;

    const SEC: u64 = 1_000_000_000;

    fn ev(src: u8, sport: u16, dport: u16, t: u64, flags: u8) -> Event {
        let mut e = Event {
            time_ns: t,
            ifindex: 1,
            reason: Reason::PortNotOpen as u32,
            len: 60,
            sport,
            dport,
            proto: 6,
            family: 4,
            tcp_flags: flags,
            ..Event::default()
        };
        e.src[..4].copy_from_slice(&[198, 18, 1, src]);
        e.dst[..4].copy_from_slice(&[198, 18, 0, 1]);
        e
    }

    fn flows(records: &[Record]) -> Vec<&FlowRecord> {
        records
            .iter()
            .filter_map(|r| match r {
                Record::Flow(f) => Some(f),
                _ => None,
            })
            .collect()
    }

    fn flush(a: &mut Aggregator) -> Vec<Record> {
        a.flush(&WallClock::with_offset_ns(0), &mut |i| {
            Some(format!("if{i}"))
        })
    }

    #[test]
    fn identical_flows_fold_into_one_record_with_the_first_sport() {
        let mut a = Aggregator::new(DEFAULT_MAX_FLOWS);
        a.add(&ev(7, 40_000, 23, 2 * SEC, 0x02), None);
        a.add(&ev(7, 40_001, 23, SEC, 0x02), None);
        a.add(&ev(7, 40_002, 23, 3 * SEC, 0x10), None);
        a.add(&ev(8, 40_000, 23, 4 * SEC, 0x02), None);
        a.add(&ev(7, 40_000, 25, 5 * SEC, 0x02), None);
        a.add(&ev(7, 40_000, 23, 6 * SEC, 0x02), Some("R1".into()));
        assert_eq!(a.len(), 4);
        let recs = flush(&mut a);
        assert!(a.is_empty());
        let f = flows(&recs);
        assert_eq!(f.len(), 4);
        let first = f[0];
        assert_eq!(first.count, 3);
        assert_eq!(first.bytes, 180);
        assert_eq!(first.sport, Some(40_000));
        assert_eq!(first.tcp_flags.as_deref(), Some("SA"));
        assert_eq!(first.first_seen.as_second(), 1);
        assert_eq!(first.last_seen.as_second(), 3);
        assert_eq!(first.interface.as_deref(), Some("if1"));
        assert_eq!(f[3].rule.as_deref(), Some("R1"));
        assert!(flush(&mut a).is_empty());
    }

    #[test]
    fn would_deny_and_reason_split_flows() {
        let mut a = Aggregator::new(DEFAULT_MAX_FLOWS);
        let base = ev(7, 1, 23, SEC, 2);
        let mut audit = base;
        audit.would_deny = 1;
        let mut other = base;
        other.reason = Reason::SourceNotAllowed as u32;
        let mut vlan = base;
        vlan.vlan = 10;
        for e in [base, audit, other, vlan] {
            a.add(&e, None);
        }
        assert_eq!(a.len(), 4);
    }

    #[test]
    fn flows_beyond_the_bound_count_into_one_overflow_record() {
        let mut a = Aggregator::new(100);
        for port in 0..250u16 {
            a.add(&ev(7, 1, port, SEC + u64::from(port), 2), None);
        }
        // An existing flow still counts into its own record at capacity.
        a.add(&ev(7, 1, 0, 10 * SEC, 2), None);
        assert_eq!(a.len(), 100);
        let recs = flush(&mut a);
        let f = flows(&recs);
        assert_eq!(f.len(), 100);
        assert_eq!(f[0].count, 2);
        let Some(Record::Overflow(o)) = recs.last() else {
            panic!("no overflow record: {recs:?}");
        };
        assert_eq!(o.count, 150);
        assert_eq!(o.max_flows, 100);
        assert_eq!(o.first_seen.as_nanosecond(), i128::from(SEC + 100));
        assert_eq!(o.last_seen.as_nanosecond(), i128::from(SEC + 249));
        let total: u64 = f.iter().map(|r| r.count).sum::<u64>() + o.count;
        assert_eq!(total, 251);
    }

    #[test]
    fn interface_names_are_asked_once_per_flush() {
        let mut a = Aggregator::new(10);
        for port in 0..5 {
            a.add(&ev(7, 1, port, SEC, 2), None);
        }
        let mut asked = 0;
        let recs = a.flush(&WallClock::with_offset_ns(0), &mut |_| {
            asked += 1;
            None
        });
        assert_eq!((recs.len(), asked), (5, 1));
    }
}
