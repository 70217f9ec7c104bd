//! Loading the XDP program with a policy's tables, and the local-address maps it consults.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{
        Array, HashMap, MapData, MapError,
        lpm_trie::{Key, LpmTrie},
    },
    programs::{Program, ProgramError, SchedClassifier, Xdp},
};
use portguard_common::{
    config::Config,
    maps::{self, Counters, LOCAL_BROADCAST, LOCAL_UNICAST, MacKey},
    reason::Reason,
    tables::Tables,
};

use super::counters::{self, CountersError};

/// Name of the enforcing program in the object.
pub const PROGRAM: &str = "portguard";
/// Name of the pass-everything baseline program in the object.
pub const NOOP_PROGRAM: &str = "portguard_noop";
/// Name of the egress recorder (tc) in the object.
pub const EGRESS_PROGRAM: &str = "portguard_egress";
/// Name of the drop-everything baseline program in the object.
pub const DROP_PROGRAM: &str = "portguard_drop";

/// The program types this object holds, as far as loading them goes (aya gives each type its
/// own `load`, with no trait in common).
trait Loadable {
    fn is_loaded(&self) -> bool;
    fn load_now(&mut self) -> Result<(), ProgramError>;
}

impl Loadable for Xdp {
    fn is_loaded(&self) -> bool {
        self.fd().is_ok()
    }
    fn load_now(&mut self) -> Result<(), ProgramError> {
        self.load()
    }
}

impl Loadable for SchedClassifier {
    fn is_loaded(&self) -> bool {
        self.fd().is_ok()
    }
    fn load_now(&mut self) -> Result<(), ProgramError> {
        self.load()
    }
}

/// Why the datapath could not be loaded or updated.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    /// The pin directory could not be created.
    #[error("creating the pin directory {dir}")]
    PinDir {
        /// The pin directory.
        dir: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The object could not be loaded (verifier, permissions, bpffs).
    #[error("loading the XDP object with state pinned in {dir}")]
    Load {
        /// The pin directory.
        dir: PathBuf,
        /// Cause.
        #[source]
        source: Box<aya::EbpfError>,
    },
    /// A program was missing or would not load.
    #[error("loading program `{name}`")]
    Program {
        /// Program name.
        name: &'static str,
        /// Cause.
        #[source]
        source: ProgramError,
    },
    /// A map was missing from the object.
    #[error("map `{0}` missing from the XDP object")]
    MissingMap(&'static str),
    /// A map operation failed.
    #[error("writing map `{name}`")]
    Map {
        /// Map name.
        name: &'static str,
        /// Cause.
        #[source]
        source: MapError,
    },
}

fn map_err(name: &'static str) -> impl FnOnce(MapError) -> DatapathError {
    move |source| DatapathError::Map { name, source }
}

/// A loaded program and its maps, tables filled, not attached yet.
#[derive(Debug)]
pub struct Datapath {
    ebpf: Ebpf,
}

impl Datapath {
    /// Load the object with `tables`, pinning (or reusing) state maps in `pin_dir`, and load
    /// the enforcing program into the kernel. Nothing is attached.
    pub fn load(tables: &Tables, pin_dir: &Path) -> Result<Self, DatapathError> {
        std::fs::create_dir_all(pin_dir).map_err(|source| DatapathError::PinDir {
            dir: pin_dir.to_owned(),
            source,
        })?;
        let decisions = u32::try_from(tables.decisions.len())
            .unwrap_or(u32::MAX)
            .max(1);
        let ebpf = EbpfLoader::new()
            .default_map_pin_directory(pin_dir)
            .map_max_entries(maps::DECISIONS, decisions)
            .load(crate::EBPF_OBJECT)
            .map_err(|source| DatapathError::Load {
                dir: pin_dir.to_owned(),
                source: Box::new(source),
            })?;
        let mut dp = Datapath { ebpf };
        dp.write_tables(tables)?;
        dp.load_program(PROGRAM)?;
        Ok(dp)
    }

    /// Verify and load one of the object's XDP programs.
    pub fn load_program(&mut self, name: &'static str) -> Result<&mut Xdp, DatapathError> {
        self.loaded(name)
    }

    /// The egress recorder, loaded on first use.
    pub fn egress(&mut self) -> Result<&mut SchedClassifier, DatapathError> {
        self.loaded(EGRESS_PROGRAM)
    }

    /// The program `name` as type `P`, verified and loaded into the kernel if it is not yet.
    fn loaded<P>(&mut self, name: &'static str) -> Result<&mut P, DatapathError>
    where
        P: Loadable,
        for<'p> &'p mut P: TryFrom<&'p mut Program, Error = ProgramError>,
    {
        let prog: &mut P = self
            .ebpf
            .program_mut(name)
            .ok_or(DatapathError::Program {
                name,
                source: ProgramError::NotLoaded,
            })?
            .try_into()
            .map_err(|source| DatapathError::Program { name, source })?;
        if !prog.is_loaded() {
            prog.load_now()
                .map_err(|source| DatapathError::Program { name, source })?;
        }
        Ok(prog)
    }

    /// The loaded enforcing program.
    pub fn program(&mut self) -> Result<&mut Xdp, DatapathError> {
        self.load_program(PROGRAM)
    }

    /// The whole object, for callers that need other maps or programs.
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    fn map_mut(&mut self, name: &'static str) -> Result<&mut aya::maps::Map, DatapathError> {
        self.ebpf
            .map_mut(name)
            .ok_or(DatapathError::MissingMap(name))
    }

    fn write_tables(&mut self, t: &Tables) -> Result<(), DatapathError> {
        let mut v4: LpmTrie<&mut MapData, [u8; 4], u32> =
            LpmTrie::try_from(self.map_mut(maps::SRC_V4)?).map_err(map_err(maps::SRC_V4))?;
        for (addr, len, class) in &t.src_v4 {
            v4.insert(&Key::new(u32::from(*len), *addr), class, 0)
                .map_err(map_err(maps::SRC_V4))?;
        }
        let mut v6: LpmTrie<&mut MapData, [u8; 16], u32> =
            LpmTrie::try_from(self.map_mut(maps::SRC_V6)?).map_err(map_err(maps::SRC_V6))?;
        for (addr, len, class) in &t.src_v6 {
            v6.insert(&Key::new(u32::from(*len), *addr), class, 0)
                .map_err(map_err(maps::SRC_V6))?;
        }
        let mut ports: Array<&mut MapData, u16> =
            Array::try_from(self.map_mut(maps::PORTS)?).map_err(map_err(maps::PORTS))?;
        // Array maps start zeroed: only classes need writing.
        for (i, class) in t.ports.iter().enumerate().filter(|(_, c)| **c != 0) {
            ports
                .set(i as u32, class, 0)
                .map_err(map_err(maps::PORTS))?;
        }
        let mut decisions: Array<&mut MapData, u32> =
            Array::try_from(self.map_mut(maps::DECISIONS)?).map_err(map_err(maps::DECISIONS))?;
        for (i, rule) in t.decisions.iter().enumerate().filter(|(_, r)| **r != 0) {
            decisions
                .set(i as u32, rule, 0)
                .map_err(map_err(maps::DECISIONS))?;
        }
        let mut config: Array<&mut MapData, Config> =
            Array::try_from(self.map_mut(maps::CONFIG)?).map_err(map_err(maps::CONFIG))?;
        config.set(0, t.config, 0).map_err(map_err(maps::CONFIG))?;
        Ok(())
    }

    /// Replace the set of this host's addresses (unicast, and IPv4 directed broadcasts).
    pub fn set_local_addrs(
        &mut self,
        unicast: &[IpAddr],
        broadcast: &[IpAddr],
    ) -> Result<(), DatapathError> {
        set_local_addrs(&mut self.ebpf, unicast, broadcast)
    }

    /// Replace the set of this host's own MAC addresses.
    pub fn set_host_macs(&mut self, macs: &[[u8; 6]]) -> Result<(), DatapathError> {
        let map = self
            .ebpf
            .map_mut(maps::HOST_MACS)
            .ok_or(DatapathError::MissingMap(maps::HOST_MACS))?;
        sync_hash(map, maps::HOST_MACS, &wanted_macs(macs))
    }

    /// Counters of one rule slot, summed over CPUs.
    pub fn rule_counters(&self, slot: u32) -> Result<Counters, CountersError> {
        counters::rule(&self.ebpf, slot)
    }

    /// Counters of every reason, summed over CPUs.
    pub fn reason_counters(&self) -> Result<Vec<(Reason, Counters)>, CountersError> {
        counters::reasons(&self.ebpf)
    }
}

/// Replace the local-address maps of `ebpf` so they hold exactly these addresses.
pub fn set_local_addrs(
    ebpf: &mut Ebpf,
    unicast: &[IpAddr],
    broadcast: &[IpAddr],
) -> Result<(), DatapathError> {
    let (want4, want6) = wanted_addrs(unicast, broadcast);
    let v4 = ebpf
        .map_mut(maps::LOCAL_V4)
        .ok_or(DatapathError::MissingMap(maps::LOCAL_V4))?;
    sync_hash(v4, maps::LOCAL_V4, &want4)?;
    let v6 = ebpf
        .map_mut(maps::LOCAL_V6)
        .ok_or(DatapathError::MissingMap(maps::LOCAL_V6))?;
    sync_hash(v6, maps::LOCAL_V6, &want6)
}

/// What the datapath is told about this host: its addresses and its MACs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostView {
    /// Local unicast addresses.
    pub unicast: Vec<IpAddr>,
    /// IPv4 broadcast addresses.
    pub broadcast: Vec<IpAddr>,
    /// MACs whose frames reach the host's stack.
    pub macs: Vec<[u8; 6]>,
}

/// Replace the pinned host maps in `pin_dir` (local addresses, host MACs): what the daemon does
/// when addresses or links change, without holding (or reloading) the program. Entries are
/// added before stale ones go, so an address of the host is never missing in between.
pub fn sync_pinned_host(pin_dir: &Path, view: &HostView) -> Result<(), DatapathError> {
    let (want4, want6) = wanted_addrs(&view.unicast, &view.broadcast);
    let open = |name: &'static str| {
        MapData::from_pin(pin_dir.join(name))
            .map(aya::maps::Map::HashMap)
            .map_err(map_err(name))
    };
    sync_hash(&mut open(maps::LOCAL_V4)?, maps::LOCAL_V4, &want4)?;
    sync_hash(&mut open(maps::LOCAL_V6)?, maps::LOCAL_V6, &want6)?;
    sync_hash(
        &mut open(maps::HOST_MACS)?,
        maps::HOST_MACS,
        &wanted_macs(&view.macs),
    )
}

fn wanted_macs(macs: &[[u8; 6]]) -> std::collections::HashMap<MacKey, u32> {
    macs.iter()
        .map(|m| {
            (
                MacKey {
                    mac: *m,
                    pad: [0; 2],
                },
                1,
            )
        })
        .collect()
}

type Wanted4 = std::collections::HashMap<[u8; 4], u32>;
type Wanted6 = std::collections::HashMap<[u8; 16], u32>;

/// The local-address map contents for these addresses (unicast wins over broadcast).
fn wanted_addrs(unicast: &[IpAddr], broadcast: &[IpAddr]) -> (Wanted4, Wanted6) {
    let mut want4 = Wanted4::new();
    let mut want6 = Wanted6::new();
    for (addrs, kind) in [(broadcast, LOCAL_BROADCAST), (unicast, LOCAL_UNICAST)] {
        for a in addrs {
            match a {
                IpAddr::V4(v) => {
                    want4.insert(v.octets(), kind);
                }
                IpAddr::V6(v) => {
                    want6.insert(v.octets(), kind);
                }
            }
        }
    }
    (want4, want6)
}

fn sync_hash<K: aya::Pod + Eq + std::hash::Hash>(
    map: &mut aya::maps::Map,
    name: &'static str,
    want: &std::collections::HashMap<K, u32>,
) -> Result<(), DatapathError> {
    let mut hash: HashMap<&mut MapData, K, u32> = HashMap::try_from(map).map_err(map_err(name))?;
    // Insert first, then remove the stale ones: an address never disappears while still ours.
    for (k, v) in want {
        hash.insert(k, v, 0).map_err(map_err(name))?;
    }
    let stale: Vec<K> = hash
        .keys()
        .filter_map(Result::ok)
        .filter(|k| !want.contains_key(k))
        .collect();
    for k in stale {
        hash.remove(&k).map_err(map_err(name))?;
    }
    Ok(())
}
