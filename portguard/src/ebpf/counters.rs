//! The one reader of the datapath's counters: per rule, per reason, and the audit state.
//!
//! The counter maps are pinned by name (see `portguard_common::maps`), so `status`, the daemon's
//! sampler, the lab and the tests all read the same kernel objects the program writes, whichever
//! process loaded it. Every count is a per-CPU array summed here, and nowhere else.

use std::path::{Path, PathBuf};

use aya::maps::{Map, MapData, MapError, PerCpuArray, PerCpuValues};
use portguard_common::{
    event::AuditState,
    maps::{self, Counters},
    reason::{REASON_COUNT, Reason},
};

/// Why counters could not be read or reset.
#[derive(Debug, thiserror::Error)]
pub enum CountersError {
    /// A pinned counter map could not be opened (nothing attached yet, or no access).
    #[error("opening {path} (is portguard running or attached? `portguard run` creates it)")]
    Open {
        /// The pin path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: MapError,
    },
    /// A map was missing from a loaded object.
    #[error("map `{0}` missing from the XDP object")]
    Missing(&'static str),
    /// The number of possible CPUs (the width of per-CPU values) could not be read.
    #[error("reading the number of possible CPUs")]
    Cpus {
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing an entry of a counter map failed.
    #[error("{action} `{name}`")]
    Access {
        /// What was being done.
        action: &'static str,
        /// The map.
        name: &'static str,
        /// Cause.
        #[source]
        source: MapError,
    },
}

impl CountersError {
    /// Whether the kernel refused access (bpffs permissions, or no `CAP_BPF`): users of the
    /// status group get the daemon's sample instead.
    #[must_use]
    pub fn is_permission(&self) -> bool {
        let CountersError::Open { source, .. } = self else {
            return false;
        };
        match source {
            MapError::SyscallError(e) => {
                matches!(e.io_error.kind(), std::io::ErrorKind::PermissionDenied)
                    || e.io_error.raw_os_error() == Some(libc::EPERM)
            }
            _ => false,
        }
    }
}

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
fn open<T: aya::Pod>(pin_dir: &Path, name: &str) -> Result<PerCpuArray<MapData, T>, CountersError> {
    let path = pin_dir.join(name);
    let open_err = |source| CountersError::Open {
        path: path.clone(),
        source,
    };
    let data = MapData::from_pin(&path).map_err(open_err)?;
    PerCpuArray::try_from(Map::PerCpuArray(data)).map_err(open_err)
}

/// Counters of entry `index` of a per-CPU counter map, summed over CPUs.
fn sum<M: std::borrow::Borrow<MapData>>(
    map: &PerCpuArray<M, Counters>,
    name: &'static str,
    index: u32,
) -> Result<Counters, CountersError> {
    let values = map.get(&index, 0).map_err(|source| CountersError::Access {
        action: "reading",
        name,
        source,
    })?;
    Ok(values.iter().fold(Counters::default(), |acc, c| Counters {
        packets: acc.packets + c.packets,
        bytes: acc.bytes + c.bytes,
    }))
}

/// Read rule slots `0..slots`, every reason and the audit state from the pins in `pin_dir`.
pub fn read(pin_dir: &Path, slots: u32) -> Result<Sample, CountersError> {
    let rules_map = open::<Counters>(pin_dir, maps::RULE_STATS)?;
    let reasons_map = open::<Counters>(pin_dir, maps::REASON_STATS)?;
    let audit_map = open::<AuditState>(pin_dir, maps::AUDIT_STATE)?;
    let rules = (0..slots.min(maps::MAX_RULES))
        .map(|i| sum(&rules_map, maps::RULE_STATS, i))
        .collect::<Result<Vec<_>, _>>()?;
    let reasons = (0..REASON_COUNT)
        .map(|i| sum(&reasons_map, maps::REASON_STATS, i))
        .collect::<Result<Vec<_>, _>>()?;
    let audit = audit_map
        .get(&0, 0)
        .map_err(|source| CountersError::Access {
            action: "reading",
            name: maps::AUDIT_STATE,
            source,
        })?
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

/// Counters of rule `slot` in the counter map of a loaded object.
pub fn rule(ebpf: &aya::Ebpf, slot: u32) -> Result<Counters, CountersError> {
    sum(&loaded(ebpf, maps::RULE_STATS)?, maps::RULE_STATS, slot)
}

/// Counters of every reason in the counter map of a loaded object.
pub fn reasons(ebpf: &aya::Ebpf) -> Result<Vec<(Reason, Counters)>, CountersError> {
    let map = loaded(ebpf, maps::REASON_STATS)?;
    Reason::ALL
        .iter()
        .map(|r| Ok((*r, sum(&map, maps::REASON_STATS, *r as u32)?)))
        .collect()
}

fn loaded<'a>(
    ebpf: &'a aya::Ebpf,
    name: &'static str,
) -> Result<PerCpuArray<&'a MapData, Counters>, CountersError> {
    let map = ebpf.map(name).ok_or(CountersError::Missing(name))?;
    PerCpuArray::try_from(map).map_err(|source| CountersError::Access {
        action: "opening",
        name,
        source,
    })
}

/// Zero the counters of rule `slot` on every CPU: done before a slot is given to a new rule,
/// so a rule never inherits another's totals.
pub fn zero_rule(pin_dir: &Path, slot: u32) -> Result<(), CountersError> {
    let mut map = open::<Counters>(pin_dir, maps::RULE_STATS)?;
    let access = |source| CountersError::Access {
        action: "zeroing",
        name: maps::RULE_STATS,
        source,
    };
    let cpus = aya::util::nr_cpus().map_err(|(_, source)| CountersError::Cpus { source })?;
    let zeros = PerCpuValues::try_from(vec![Counters::default(); cpus])
        .map_err(|source| CountersError::Cpus { source })?;
    map.set(slot, zeros, 0).map_err(access)
}
