//! The program under test loaded with a compiled policy and attached inside a namespace, with
//! the counters and audit events the host-safety tests read back.

use std::thread;

use aya::programs::XdpMode;
use integration_tests::{
    PinDir,
    net::{Netns, enter},
    reason_packets,
};
use portguard::ebpf::Datapath;
use portguard_common::{event::Event, reason::Reason};

use super::policy::Compiled;

/// The program loaded with a policy and attached inside a namespace; detached on drop.
pub(super) struct Attached {
    /// Dropped first: the link goes with it, then the pins.
    pub(super) dp: Datapath,
    _pins: PinDir,
}

impl Attached {
    /// Load `c`, give the datapath the namespace's addresses (as the daemon does), and attach
    /// to `ifname` from a thread inside `ns`.
    pub(super) fn new(ns: &Netns, ifname: &str, c: &Compiled, mode: XdpMode) -> Self {
        let pins = PinDir::new();
        let (tables, pin_dir, path) = (
            c.tables.clone(),
            pins.0.clone(),
            format!("/run/netns/{}", ns.name),
        );
        let addrs = ns.local_addrs();
        let ifname = ifname.to_owned();
        let dp = thread::spawn(move || {
            enter(&path);
            let mut dp = Datapath::load(&tables, &pin_dir).expect("load");
            dp.set_local_addrs(&addrs.unicast, &addrs.broadcast)
                .expect("local addresses");
            dp.program()
                .expect("program")
                .attach(&ifname, mode)
                .unwrap_or_else(|e| panic!("attach to {ifname} in {mode:?} mode: {e:?}"));
            dp
        })
        .join()
        .expect("attach thread");
        Attached { dp, _pins: pins }
    }

    /// Packets counted for reason `r`.
    pub(super) fn reason(&self, r: Reason) -> u64 {
        reason_packets(&self.dp, r)
    }

    /// Every reason that dropped something, with its count: empty when nothing was dropped.
    pub(super) fn drops(&self) -> Vec<(Reason, u64)> {
        self.dp
            .reason_counters()
            .expect("reason counters")
            .into_iter()
            .filter(|(r, c)| !r.passes() && c.packets > 0)
            .map(|(r, c)| (r, c.packets))
            .collect()
    }

    /// Packets counted on rule `slot`.
    pub(super) fn hits(&self, slot: u32) -> u64 {
        self.dp.rule_counters(slot).expect("rule counters").packets
    }

    /// Bytes counted on rule `slot`.
    pub(super) fn bytes(&self, slot: u32) -> u64 {
        self.dp.rule_counters(slot).expect("rule counters").bytes
    }

    /// Audit events emitted so far (the program reports denied packets, rate-limited).
    pub(super) fn events(&mut self) -> Vec<Event> {
        let map = self
            .dp
            .ebpf_mut()
            .map_mut(portguard_common::maps::AUDIT)
            .expect("audit ring");
        let mut ring = aya::maps::RingBuf::try_from(map).expect("ring buffer");
        let mut out = Vec::new();
        while let Some(item) = ring.next() {
            assert_eq!(item.len(), size_of::<Event>(), "event size");
            // SAFETY: the item holds one Event written by the program (size checked above);
            // read_unaligned because the ring gives no alignment guarantee for the copy.
            out.push(unsafe { item.as_ptr().cast::<Event>().read_unaligned() });
        }
        out
    }
}
