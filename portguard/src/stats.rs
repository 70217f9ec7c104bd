//! Reading the datapath's counters from their pins, with or without a running daemon.
//!
//! The counter maps are pinned by name (see `portguard_common::maps`), so `status`, the daemon's
//! sampler and the tests all read the same kernel objects the program writes, whichever
//! process loaded it.

use std::path::Path;

use anyhow::Context as _;
use aya::maps::{MapData, PerCpuArray};
use portguard_common::{
    event::AuditState,
    maps::{self, Counters},
    reason::{REASON_COUNT, Reason},
};

/// One sample of every counter the datapath keeps, summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    /// Per rule slot (index = slot), packets and bytes.
    pub rules: Vec<Counters>,
    /// Per reason (index = reason discriminant).
    pub reasons: Vec<Counters>,
    /// Audit emission and loss, summed over CPUs.
    pub audit: AuditState,
}

impl Sample {
    /// The counters of one reason.
    #[must_use]
    pub fn reason(&self, r: Reason) -> Counters {
        self.reasons.get(r as usize).copied().unwrap_or_default()
    }
}

/// Open a pinned per-CPU array of `T`.
fn open<T: aya::Pod>(pin_dir: &Path, name: &str) -> anyhow::Result<PerCpuArray<MapData, T>> {
    let path = pin_dir.join(name);
    let data = MapData::from_pin(&path).with_context(|| {
        format!(
            "opening {} (is portguard running or attached? `portguard run` creates it)",
            path.display()
        )
    })?;
    PerCpuArray::try_from(aya::maps::Map::PerCpuArray(data))
        .with_context(|| format!("{} is not a per-CPU array", path.display()))
}

fn sum(values: &[Counters]) -> Counters {
    values.iter().fold(Counters::default(), |acc, c| Counters {
        packets: acc.packets + c.packets,
        bytes: acc.bytes + c.bytes,
    })
}

/// Read rule slots `0..slots`, every reason and the audit state from the pins in `pin_dir`.
pub fn read(pin_dir: &Path, slots: u32) -> anyhow::Result<Sample> {
    let rules_map = open::<Counters>(pin_dir, maps::RULE_STATS)?;
    let reasons_map = open::<Counters>(pin_dir, maps::REASON_STATS)?;
    let audit_map = open::<AuditState>(pin_dir, maps::AUDIT_STATE)?;
    let rules = (0..slots.min(maps::MAX_RULES))
        .map(|i| Ok(sum(&rules_map.get(&i, 0)?)))
        .collect::<Result<Vec<_>, aya::maps::MapError>>()
        .context("reading rule counters")?;
    let reasons = (0..REASON_COUNT)
        .map(|i| Ok(sum(&reasons_map.get(&i, 0)?)))
        .collect::<Result<Vec<_>, aya::maps::MapError>>()
        .context("reading reason counters")?;
    let audit = audit_map
        .get(&0, 0)
        .context("reading audit state")?
        .iter()
        .fold(AuditState::default(), |acc, s| AuditState {
            emitted: acc.emitted + s.emitted,
            suppressed: acc.suppressed + s.suppressed,
            lost: acc.lost + s.lost,
            ..acc
        });
    Ok(Sample {
        rules,
        reasons,
        audit,
    })
}

/// Zero the counters of rule `slot` on every CPU: done before a slot is given to a new rule,
/// so a rule never inherits another's totals.
pub fn zero_rule(pin_dir: &Path, slot: u32) -> anyhow::Result<()> {
    let mut map = open::<Counters>(pin_dir, maps::RULE_STATS)?;
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
    let zeros = aya::maps::PerCpuValues::try_from(vec![Counters::default(); cpus])
        .context("building per-CPU zero values")?;
    map.set(slot, zeros, 0)
        .with_context(|| format!("zeroing counters of rule slot {slot}"))
}
