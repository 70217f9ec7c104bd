//! The program's maps. Names and value types come from `portguard_common::maps`.
//!
//! Policy maps belong to one loaded program (the loader pins them with it, and fills and
//! switches their generations); state maps are pinned by name, so a reload, restart or upgrade
//! reuses them and counters keep counting.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use portguard_common::{
    event::AuditState,
    image::{Chunk, TRIE_KEY_BYTES},
    maps::{
        AUDIT_RING_BYTES, Counters, FragKey, LocalSet, MAX_FRAGS, MAX_HOST_MACS, MAX_LOCAL_ADDRS,
        MAX_RULES, MAX_TRIE_ENTRIES, MAX_UDP_OUT, MacKey, UdpOutKey,
    },
    reason::REASON_COUNT,
};

/// Flag for LPM tries: the kernel requires them to be created without preallocation.
const BPF_F_NO_PREALLOC: u32 = 1;
/// Flag for arrays the loader maps into its memory (5.5): a whole generation of tables is one
/// `memcpy`, and the live generation switches with one store.
const BPF_F_MMAPABLE: u32 = 1 << 10;

/// Sized by the loader at load time: the control chunk and two generations.
#[map(name = "PG_POLICY")]
pub(crate) static POLICY: Array<Chunk> = Array::with_max_entries(1, BPF_F_MMAPABLE);

#[map(name = "PG_SRC_TRIE0")]
pub(crate) static SRC_TRIE0: LpmTrie<[u8; TRIE_KEY_BYTES], u32> =
    LpmTrie::with_max_entries(MAX_TRIE_ENTRIES, BPF_F_NO_PREALLOC);

#[map(name = "PG_SRC_TRIE1")]
pub(crate) static SRC_TRIE1: LpmTrie<[u8; TRIE_KEY_BYTES], u32> =
    LpmTrie::with_max_entries(MAX_TRIE_ENTRIES, BPF_F_NO_PREALLOC);

#[map(name = "PG_RULE_STATS")]
pub(crate) static RULE_STATS: PerCpuArray<Counters> = PerCpuArray::pinned(MAX_RULES, 0);

#[map(name = "PG_REASON_STATS")]
pub(crate) static REASON_STATS: PerCpuArray<Counters> = PerCpuArray::pinned(REASON_COUNT, 0);

#[map(name = "PG_LOCAL_FAST")]
pub(crate) static LOCAL_FAST: Array<LocalSet> = Array::pinned(2, BPF_F_MMAPABLE);

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
