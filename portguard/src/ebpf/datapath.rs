//! Loading the XDP program with a policy's tables, switching its tables, and the host maps
//! (local addresses, MACs) it consults.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, Map, MapData, MapError},
    programs::{Program, ProgramError, SchedClassifier, Xdp},
};
use portguard_common::{
    maps::{
        self, Counters, LOCAL_BROADCAST, LOCAL_FAST_V4, LOCAL_FAST_V6, LOCAL_OVERFLOW,
        LOCAL_UNICAST, LocalSet, MacKey,
    },
    reason::Reason,
    tables::Tables,
};

use super::{
    counters::{self, CountersError},
    image::{self, Image, ImageError},
    policy::{self, PolicyError, PolicyMaps},
};

/// Name of the enforcing program in the object (multi-buffer, `xdp.frags`).
pub const PROGRAM: &str = "portguard";
/// Name of the same program without multi-buffer support, for kernels before 5.18.
pub const SINGLE_BUFFER_PROGRAM: &str = "portguard_single";
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
    /// The tables could not be laid out as a policy image.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The policy maps could not be opened or written.
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

fn map_err(name: &'static str) -> impl FnOnce(MapError) -> DatapathError {
    move |source| DatapathError::Map { name, source }
}

/// A loaded program and its maps, tables filled, not attached yet.
#[derive(Debug)]
pub struct Datapath {
    ebpf: Ebpf,
    policy: PolicyMaps,
    buffers: Buffers,
}

/// Which of the object's two enforcing programs a host runs. They share every line of code; only
/// the `BPF_F_XDP_HAS_FRAGS` load flag differs, which kernels before 5.18 refuse.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Buffers {
    /// `portguard`: takes multi-buffer frames, so interfaces with jumbo MTUs attach natively.
    #[default]
    Multi,
    /// `portguard_single`: one buffer per frame. A driver refuses it natively on an interface
    /// whose MTU does not fit one page; the daemon then attaches in generic mode (and says why).
    Single,
}

impl Buffers {
    /// The program's name in the object.
    #[must_use]
    pub fn program(self) -> &'static str {
        match self {
            Buffers::Multi => PROGRAM,
            Buffers::Single => SINGLE_BUFFER_PROGRAM,
        }
    }

    /// The identity written into a loaded program's policy maps: the object's, told apart by
    /// program, so a daemon started with the other kind replaces the pinned one.
    #[must_use]
    pub fn build_id(self) -> u64 {
        match self {
            Buffers::Multi => build_id(),
            Buffers::Single => build_id() ^ 1,
        }
    }
}

/// Identity of this build's BPF object: a hash of its bytes (FNV-1a). Written into the policy
/// maps, so a daemon can tell the program it finds pinned is its own before reusing it.
#[must_use]
pub fn build_id() -> u64 {
    static ID: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *ID.get_or_init(|| {
        crate::EBPF_OBJECT
            .iter()
            .fold(0xcbf2_9ce4_8422_2325, |h, b| {
                (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
            })
    })
}

/// Chunks per generation a program is loaded with for `image`: room for the policy to grow by
/// half, or by 1 MiB, before a reload needs a new program.
#[must_use]
pub fn capacity_for(image: &Image) -> u32 {
    let need = image.chunks();
    need.saturating_add((need / 2).max(1 << 14))
}

impl Datapath {
    /// Load the object with `tables`, pinning (or reusing) state maps in `pin_dir`, and load
    /// the enforcing program into the kernel. Nothing is attached.
    pub fn load(tables: &Tables, pin_dir: &Path) -> Result<Self, DatapathError> {
        let image = image::build(tables)?;
        Self::load_image(&image, pin_dir, capacity_for(&image))
    }

    /// Load the object with `image` live in generations of `half` chunks (at least the image's
    /// size), and load the enforcing program into the kernel.
    pub fn load_image(image: &Image, pin_dir: &Path, half: u32) -> Result<Self, DatapathError> {
        Self::load_image_with(image, pin_dir, half, Buffers::Multi)
    }

    /// [`Datapath::load_image`] with the enforcing program `buffers` names.
    pub fn load_image_with(
        image: &Image,
        pin_dir: &Path,
        half: u32,
        buffers: Buffers,
    ) -> Result<Self, DatapathError> {
        std::fs::create_dir_all(pin_dir).map_err(|source| DatapathError::PinDir {
            dir: pin_dir.to_owned(),
            source,
        })?;
        let half = half.max(image.chunks());
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(pin_dir)
            .map_max_entries(maps::POLICY, half.saturating_mul(2).saturating_add(1))
            .load(crate::EBPF_OBJECT)
            .map_err(|source| DatapathError::Load {
                dir: pin_dir.to_owned(),
                source: Box::new(source),
            })?;
        // The policy maps move to `PolicyMaps`, which keeps them open as long as the object.
        let mut take = |name: &'static str| match ebpf.take_map(name) {
            Some(Map::LpmTrie(data) | Map::Array(data)) => Ok(data),
            _ => Err(DatapathError::MissingMap(name)),
        };
        let (array, trie0, trie1) = (
            take(maps::POLICY)?,
            take(maps::SRC_TRIE0)?,
            take(maps::SRC_TRIE1)?,
        );
        let mut policy = PolicyMaps::new(array, trie0, trie1)?;
        policy.init(image, buffers.build_id())?;
        let mut dp = Datapath {
            ebpf,
            policy,
            buffers,
        };
        dp.load_program(buffers.program())?;
        Ok(dp)
    }

    /// Put `tables` in force in this program without loading anything: the idle generation is
    /// written, then switched to in one store, after a grace period since the last switch.
    pub fn switch_tables(&mut self, tables: &Tables) -> Result<(), DatapathError> {
        let image = image::build(tables)?;
        policy::grace_period();
        self.policy.switch(&image)?;
        Ok(())
    }

    /// The policy maps of this program.
    #[must_use]
    pub fn policy(&self) -> &PolicyMaps {
        &self.policy
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
        self.load_program(self.buffers.program())
    }

    /// The whole object, for callers that need other maps or programs.
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
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
    sync_hash(v6, maps::LOCAL_V6, &want6)?;
    let Some(Map::Array(fast)) = ebpf.map(maps::LOCAL_FAST) else {
        return Err(DatapathError::MissingMap(maps::LOCAL_FAST));
    };
    sync_local_fast(fast, &local_set(&want4, &want6))
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
            .map(Map::HashMap)
            .map_err(map_err(name))
    };
    sync_hash(&mut open(maps::LOCAL_V4)?, maps::LOCAL_V4, &want4)?;
    sync_hash(&mut open(maps::LOCAL_V6)?, maps::LOCAL_V6, &want6)?;
    sync_hash(
        &mut open(maps::HOST_MACS)?,
        maps::HOST_MACS,
        &wanted_macs(&view.macs),
    )?;
    let fast =
        MapData::from_pin(pin_dir.join(maps::LOCAL_FAST)).map_err(map_err(maps::LOCAL_FAST))?;
    sync_local_fast(&fast, &local_set(&want4, &want6))
}

/// The short list of the host's addresses, or [`LOCAL_OVERFLOW`] per family with more than
/// it holds (in a fixed order, so equal sets compare equal).
fn local_set(want4: &Wanted4, want6: &Wanted6) -> LocalSet {
    let mut set = LocalSet::EMPTY;
    let mut v4: Vec<(&[u8; 4], &u32)> = want4.iter().collect();
    v4.sort();
    if v4.len() > LOCAL_FAST_V4 {
        set.n4 = LOCAL_OVERFLOW;
    } else {
        set.n4 = v4.len() as u32;
        for (i, (a, kind)) in v4.into_iter().enumerate() {
            set.v4[i] = u32::from_ne_bytes(*a);
            set.v4_kind[i] = *kind as u8;
        }
    }
    let mut v6: Vec<(&[u8; 16], &u32)> = want6.iter().collect();
    v6.sort();
    if v6.len() > LOCAL_FAST_V6 {
        set.n6 = LOCAL_OVERFLOW;
    } else {
        set.n6 = v6.len() as u32;
        for (i, (a, kind)) in v6.into_iter().enumerate() {
            let (hi, lo) = a.split_at(8);
            set.v6[i] = [
                u64::from_ne_bytes(hi.try_into().unwrap_or_default()),
                u64::from_ne_bytes(lo.try_into().unwrap_or_default()),
            ];
            set.v6_kind[i] = *kind as u8;
        }
    }
    set
}

/// Make the live `LocalSet` of `map` (`LOCAL_FAST`) equal `want`: write the idle entry, then
/// point entry 0's `live` at it with one store. A grace period first, so no packet still reads
/// the entry being rewritten (it was live before the previous switch); nothing at all when the
/// live set is already right.
fn sync_local_fast(map: &MapData, want: &LocalSet) -> Result<(), DatapathError> {
    let mem = policy::Mapping::new(map, 2 * size_of::<LocalSet>())?;
    let sets = mem.ptr().cast::<LocalSet>();
    // SAFETY: two LocalSets are inside the mapping; read whole, as plain integers.
    let (live, current) = unsafe {
        let live = sets.read_volatile().live & 1;
        (live, sets.add(live as usize).read_volatile())
    };
    if (LocalSet { live: 0, ..current }) == (LocalSet { live: 0, ..*want }) {
        return Ok(());
    }
    policy::grace_period();
    let idle = live ^ 1;
    // SAFETY: the idle entry is inside the mapping and read by nobody (grace period above);
    // its `live` word, which only entry 0's readers use, is left as it is.
    unsafe {
        let dst = sets.add(idle as usize).cast::<u8>();
        let src = std::ptr::from_ref(want).cast::<u8>();
        std::ptr::copy_nonoverlapping(src.add(4), dst.add(4), size_of::<LocalSet>() - 4);
        std::sync::atomic::AtomicU32::from_ptr(sets.cast::<u32>())
            .store(idle, std::sync::atomic::Ordering::Release);
    }
    Ok(())
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
    map: &mut Map,
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

#[cfg(test)]
mod tests {
    use aya_obj::{Object, generated::bpf_insn};

    use super::{PROGRAM, SINGLE_BUFFER_PROGRAM};

    /// `BPF_JMP | BPF_CALL`, and the source register that makes it a call of a BPF function
    /// (`BPF_PSEUDO_CALL`) rather than of a kernel helper.
    const CALL: u8 = 0x85;
    const PSEUDO_CALL: u8 = 1;

    fn calls_a_bpf_function(insn: bpf_insn) -> bool {
        insn.code == CALL && insn.src_reg() == PSEUDO_CALL
    }

    /// The XDP program must stay one BPF function: with a second one (an `#[inline(never)]`, a
    /// `memset` the compiler calls), verifiers before Linux 6.4 mark every scalar precise and
    /// Linux 6.1 refuses the program as too complex (docs/kernels.md). This catches it at
    /// `cargo test`, without a 6.1 VM.
    #[test]
    fn the_xdp_program_calls_no_bpf_function() {
        let obj = Object::parse(crate::EBPF_OBJECT).expect("parse the embedded BPF object");
        for name in [PROGRAM, SINGLE_BUFFER_PROGRAM] {
            no_calls(&obj, name);
        }
    }

    fn no_calls(obj: &Object, name: &str) {
        let main = obj
            .functions
            .values()
            .find(|f| f.name == name)
            .expect("the XDP program's function");
        assert!(main.instructions.len() > 100, "not the program: too short");
        let calls: Vec<usize> = main
            .instructions
            .iter()
            .enumerate()
            .filter(|(_, i)| calls_a_bpf_function(**i))
            .map(|(n, _)| n)
            .collect();
        assert!(
            calls.is_empty(),
            "`{name}` calls BPF functions at instructions {calls:?}: inline them, and zero or \
             copy through portguard-ebpf's `mem` instead of letting LLVM call memset/memmove \
             (`llvm-objdump -dr` on the object shows which)"
        );
    }
}
