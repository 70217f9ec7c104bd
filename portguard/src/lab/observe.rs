//! What the datapath counted for one flow: the pinned counters read just before and just after
//! it (flows run one at a time), the difference named by rule id and reason.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use portguard_common::reason::Reason;
use serde::Serialize;

use super::LabError;
use super::expect::Counter;
use crate::{
    ebpf::counters::{self, Sample},
    state::State,
};

/// Reasons that count background traffic of any network (ARP, multicast such as MLD reports
/// and router solicitations, other ethertypes), never a flow of the lab: not reported per flow.
const BACKGROUND: [Reason; 3] = [Reason::Arp, Reason::BroadcastPassed, Reason::NonIpPassed];

/// The longest a flow's counters are watched for its last packets.
const SETTLE_MAX: Duration = Duration::from_millis(500);

/// One counter that moved during a flow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Moved {
    /// Which counter.
    pub counter: Counter,
    /// By how many packets.
    pub packets: u64,
    /// A rule that also counts what nodes of any network send to multicast groups unasked
    /// (router solicitations, MLD and IGMP reports): its count may include background.
    pub background: bool,
}

/// The rules of `host` that also count background multicast: `ICMPv6` neighbour discovery and
/// multicast listener messages, and IGMP. With broadcast and multicast judged by the rules (the
/// default), the lab's own machines send these to groups the host is in, at times of their
/// choosing.
#[must_use]
pub fn background_rules(host: &crate::compile::HostPolicy) -> std::collections::BTreeSet<String> {
    use crate::policy::{Match, Proto};
    let unasked = |t: u8| matches!(t, 130..=137 | 143);
    host.rules
        .iter()
        .filter(|r| match &r.matches {
            Match::Icmp { types, .. } => {
                r.protos.contains(&Proto::Icmpv6) && types.iter().all(|t| t.clone().all(unasked))
            }
            Match::Protocol(n) => *n == portguard_common::packet::ipproto::IGMP,
            Match::Ports(_) => false,
        })
        .map(|r| r.id.clone())
        .collect()
}

/// Reads the daemon's pinned counters, naming slots with the rule ids of its state file.
#[derive(Debug)]
pub struct Observer {
    pin_dir: PathBuf,
    ids: BTreeMap<u32, String>,
    slots: u32,
    settle: Duration,
    background: std::collections::BTreeSet<String>,
}

impl Observer {
    /// An observer of the daemon whose state is in `run_dir` and pins in `pin_dir`. `settle` is
    /// how long to wait after a flow for its last packets (a final ACK) to be counted.
    pub fn new(
        pin_dir: PathBuf,
        run_dir: &std::path::Path,
        settle: Duration,
        background: std::collections::BTreeSet<String>,
    ) -> Result<Self, LabError> {
        let state = State::read(run_dir)?.ok_or_else(|| LabError::NoState(run_dir.to_owned()))?;
        let ids: BTreeMap<u32, String> = state
            .rules
            .iter()
            .filter(|r| r.active)
            .map(|r| (r.slot, r.id.clone()))
            .collect();
        let slots = ids.keys().next_back().map_or(0, |s| s + 1);
        Ok(Observer {
            pin_dir,
            ids,
            slots,
            settle,
            background,
        })
    }

    /// The counters now.
    pub fn sample(&self) -> Result<Sample, LabError> {
        Ok(counters::read(&self.pin_dir, self.slots)?)
    }

    /// Run `flow` and report the counters it moved. The counters are read again once they
    /// have stopped changing for `settle` (bounded by [`SETTLE_MAX`]), so the last packets of a
    /// flow (a final ACK) are counted with it and not with the next one, on a busy machine too.
    pub fn measure<T>(
        &self,
        flow: impl FnOnce() -> Result<T, LabError>,
    ) -> Result<(T, Vec<Moved>), LabError> {
        let before = self.sample()?;
        let out = flow()?;
        let deadline = Instant::now() + SETTLE_MAX;
        let mut after = self.sample()?;
        let mut still_since = Instant::now();
        while Instant::now() < deadline {
            std::thread::sleep(self.settle / 5);
            let now = self.sample()?;
            // Background traffic (multicast, ARP) does not count as the flow still running.
            if self.moved(&after, &now).is_empty() {
                if still_since.elapsed() >= self.settle {
                    break;
                }
            } else {
                after = now;
                still_since = Instant::now();
            }
        }
        Ok((out, self.moved(&before, &after)))
    }

    /// The counters that differ between two samples, rules first.
    #[must_use]
    pub fn moved(&self, before: &Sample, after: &Sample) -> Vec<Moved> {
        let mut out = Vec::new();
        for (slot, id) in &self.ids {
            let at = |s: &Sample| s.rules.get(*slot as usize).map_or(0, |c| c.packets);
            let d = at(after).saturating_sub(at(before));
            if d > 0 {
                out.push(Moved {
                    counter: Counter::Rule(id.clone()),
                    packets: d,
                    background: self.background.contains(id),
                });
            }
        }
        for r in Reason::ALL {
            if BACKGROUND.contains(&r) {
                continue;
            }
            let d = after
                .reason(r)
                .packets
                .saturating_sub(before.reason(r).packets);
            if d > 0 {
                out.push(Moved {
                    counter: Counter::Reason(r.name()),
                    packets: d,
                    background: false,
                });
            }
        }
        out
    }
}
