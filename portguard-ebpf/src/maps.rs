//! The program's maps. Names and value types come from `portguard_common::maps`.
//!
//! Policy tables are created with every load (the loader fills them before attaching); state
//! maps are pinned by name, so a reload or restart reuses them and counters keep counting.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use portguard_common::{
    config::Config,
    event::AuditState,
    maps::{
        AUDIT_RING_BYTES, Counters, FragKey, MAX_FRAGS, MAX_HOST_MACS, MAX_LOCAL_ADDRS,
        MAX_PREFIXES, MAX_RULES, MAX_UDP_OUT, MacKey, PORT_SPACE, PROTO_SLOTS, UdpOutKey,
    },
    reason::REASON_COUNT,
};

/// Flag for LPM tries: the kernel requires them to be created without preallocation.
const BPF_F_NO_PREALLOC: u32 = 1;

#[map(name = "PG_SRC_V4")]
pub(crate) static SRC_V4: LpmTrie<[u8; 4], u32> =
    LpmTrie::with_max_entries(MAX_PREFIXES, BPF_F_NO_PREALLOC);

#[map(name = "PG_SRC_V6")]
pub(crate) static SRC_V6: LpmTrie<[u8; 16], u32> =
    LpmTrie::with_max_entries(MAX_PREFIXES, BPF_F_NO_PREALLOC);

#[map(name = "PG_PORTS")]
pub(crate) static PORTS: Array<u16> = Array::with_max_entries(PROTO_SLOTS * PORT_SPACE, 0);

/// Sized by the loader (`source classes x port classes`) at load time.
#[map(name = "PG_DECISIONS")]
pub(crate) static DECISIONS: Array<u32> = Array::with_max_entries(1, 0);

#[map(name = "PG_CONFIG")]
pub(crate) static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

#[map(name = "PG_RULE_STATS")]
pub(crate) static RULE_STATS: PerCpuArray<Counters> = PerCpuArray::pinned(MAX_RULES, 0);

#[map(name = "PG_REASON_STATS")]
pub(crate) static REASON_STATS: PerCpuArray<Counters> = PerCpuArray::pinned(REASON_COUNT, 0);

#[map(name = "PG_LOCAL_V4")]
pub(crate) static LOCAL_V4: HashMap<[u8; 4], u32> = HashMap::pinned(MAX_LOCAL_ADDRS, 0);

#[map(name = "PG_LOCAL_V6")]
pub(crate) static LOCAL_V6: HashMap<[u8; 16], u32> = HashMap::pinned(MAX_LOCAL_ADDRS, 0);

#[map(name = "PG_HOST_MACS")]
pub(crate) static HOST_MACS: HashMap<MacKey, u32> = HashMap::pinned(MAX_HOST_MACS, 0);

#[map(name = "PG_FRAGS")]
pub(crate) static FRAGS: LruHashMap<FragKey, u32> = LruHashMap::pinned(MAX_FRAGS, 0);

#[map(name = "PG_UDP_OUT")]
pub(crate) static UDP_OUT: LruHashMap<UdpOutKey, u64> = LruHashMap::pinned(MAX_UDP_OUT, 0);

#[map(name = "PG_AUDIT")]
pub(crate) static AUDIT: RingBuf = RingBuf::pinned(AUDIT_RING_BYTES, 0);

#[map(name = "PG_AUDIT_STATE")]
pub(crate) static AUDIT_STATE: PerCpuArray<AuditState> = PerCpuArray::pinned(1, 0);
