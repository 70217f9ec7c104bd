//! The policy image: every table of one policy generation laid out as one flat array of 32-bit
//! words, and the lookups the XDP program makes in it.
//!
//! Why one flat image: the program reads it from a single mmap-able BPF array (`maps::POLICY`)
//! whose lookups the verifier inlines (a bounds check and an add, no helper call), and the
//! loader writes a whole generation with one `memcpy` into the mapped array instead of one
//! syscall per entry. The array holds two generations and a control chunk that says which one
//! is live, so a reload writes the idle generation and then switches every table at once by
//! storing one word ([`Control::live`]); the program itself is loaded and verified only when it
//! changes (see `docs/design.md`, "Reload: swap the tables, not the program").
//!
//! One generation, in words:
//!
//! | words | what |
//! |---|---|
//! | `0..16` | the [`Config`] (one 64-byte chunk) |
//! | `16..16 + 65536` | IPv4 sources, level 1: one entry per /16 ([`SRC4_L1_AT`]) |
//! | `ports_at..` | port classes, `PROTO_SLOTS x PORT_SPACE` u16, two per word |
//! | `groups_at..` | IPv4 sources, levels 2 and 3: groups of 256 entries |
//! | `decisions_at..` | the decision table, u16 (rule slot + 1), two per word |
//!
//! IPv4 sources are classified the way DPDK's `rte_lpm` does (DIR-24-8), with strides 16-8-8
//! instead: a level-1 entry per /16 holds the class of the longest prefix covering it, or, when
//! a longer prefix starts inside it, a [`GROUP`] reference to 256 entries, one per /24, which
//! may point in turn to 256 entries, one per address. Two or three dependent array reads,
//! whatever the number of prefixes. 16 bits rather than 24 at the first level: a 2^24-entry
//! level would be 64 MiB per generation, which no host firewall should pin in kernel memory, and
//! the 256 KiB level 1 stays in the CPU's caches. Prefix sets that would need more than
//! [`MAX_SRC4_GROUPS`] groups (tens of thousands of scattered host addresses) are classified by
//! the generation's LPM trie instead ([`SRC4_TRIE`]), as IPv6 always is.

use crate::config::Config;

/// Words per chunk: the array's value is one 64-byte chunk (a cache line).
pub const CHUNK_WORDS: u32 = 16;
/// One element of the policy array. Aligned as the kernel aligns map values (8 bytes), so the
/// first chunk of a generation can be read in place as its [`Config`].
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Chunk(pub [u32; CHUNK_WORDS as usize]);

impl Chunk {
    /// The chunk as the [`Config`] it holds when it is a generation's first.
    #[must_use]
    pub fn as_config(&self) -> &Config {
        // SAFETY: same size (asserted below), Config's alignment (8) is the chunk's, and every
        // bit pattern is a valid Config (only integers).
        unsafe { &*core::ptr::from_ref(self).cast::<Config>() }
    }
}

const _: () = assert!(size_of::<Chunk>() == size_of::<Config>());
const _: () = assert!(align_of::<Chunk>() == align_of::<Config>());

/// Word offset of the IPv4 level-1 table in a generation (right after the config chunk).
pub const SRC4_L1_AT: u32 = CHUNK_WORDS;
/// Entries of the IPv4 level-1 table: one per /16.
pub const SRC4_L1_LEN: u32 = 1 << 16;
/// Entries of an IPv4 group (levels 2 and 3): one per /24, or one per address.
pub const GROUP_LEN: u32 = 256;
/// Marks an IPv4 table entry that refers to a group (index in the low bits) instead of holding
/// a source class.
pub const GROUP: u32 = 1 << 31;
/// Groups a generation may hold before IPv4 falls back to the trie: 4096 groups are 4 MiB.
pub const MAX_SRC4_GROUPS: u32 = 4096;

/// [`Config::src4`]: IPv4 sources from the flat table.
pub const SRC4_DIR: u32 = 0;
/// [`Config::src4`]: IPv4 sources from the generation's LPM trie.
pub const SRC4_TRIE: u32 = 1;

/// Bytes of a trie key after its length: a 4-byte family tag, then the address. One trie per
/// generation holds both families; the tag keeps an IPv4 prefix from ever matching an IPv6
/// address that happens to share its bytes.
pub const TRIE_KEY_BYTES: usize = 20;
/// Bits of the tag, counted in every prefix length stored in the trie.
pub const TRIE_TAG_BITS: u32 = 32;

/// The trie key bytes of `addr` in `family` (4 or 6), as prefixes are stored and looked up.
#[must_use]
pub fn trie_key(family: u8, addr: &[u8; 16]) -> [u8; TRIE_KEY_BYTES] {
    // Built as five words rather than by filling a zeroed array: the XDP program calls this,
    // and LLVM turns a zero fill into a call of `memset` there (see portguard-ebpf's `mem`).
    let word = |i: usize| {
        if family == 4 && i > 0 {
            0
        } else {
            u32::from_ne_bytes([
                addr[4 * i],
                addr[4 * i + 1],
                addr[4 * i + 2],
                addr[4 * i + 3],
            ])
        }
    };
    let words = [
        u32::from_ne_bytes([0, 0, 0, family]),
        word(0),
        word(1),
        word(2),
        word(3),
    ];
    // SAFETY: five u32s are twenty bytes, every byte pattern is valid for both.
    unsafe { core::mem::transmute::<[u32; 5], [u8; TRIE_KEY_BYTES]>(words) }
}

/// Chunk 0 of the policy array: which generation is live. The rest of the array is two
/// generations of [`Control::half`] chunks each, generation `g` starting at chunk
/// `1 + g * half`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Control {
    /// The live generation, 0 or 1. Written last, with one aligned 32-bit store, after the
    /// generation it names is complete.
    pub live: u32,
    /// Chunks per generation (the capacity the array was created with).
    pub half: u32,
    /// Identity of the program build these tables belong to (a hash of the BPF object): a
    /// loader whose object differs loads its own program instead of writing tables for another.
    pub build: u64,
    /// Layout version of the image ([`LAYOUT`]).
    pub layout: u32,
    /// Explicit padding, to one chunk.
    pub pad: [u32; 11],
}

/// Version of this layout, in [`Control::layout`].
pub const LAYOUT: u32 = 1;

#[cfg(feature = "user")]
// SAFETY: repr(C), only integers, no implicit padding (asserted below).
unsafe impl aya::Pod for Control {}
#[cfg(feature = "user")]
// SAFETY: repr(C) array of integers, 64 bytes, no padding.
unsafe impl aya::Pod for Chunk {}

const _: () = assert!(size_of::<Control>() == 64);
const _: () = assert!(size_of::<Config>() == 64);

/// Read access to the words of one generation.
pub trait Words {
    /// The word at offset `at` of the generation; 0 past its end.
    fn word(&self, at: u32) -> u32;
}

/// The class of IPv4 source `addr` (host byte order) in the flat table of a generation whose
/// groups start at word `groups_at`. 0 = no prefix covers it.
#[expect(
    clippy::inline_always,
    reason = "on the XDP program's per-packet path: a BPF call would cost more than the body"
)]
#[inline(always)]
pub fn src4_class<W: Words>(w: &W, groups_at: u32, addr: u32) -> u32 {
    let group = |e: u32, byte: u32| {
        groups_at
            .wrapping_add((e & !GROUP).wrapping_mul(GROUP_LEN))
            .wrapping_add(byte & 0xff)
    };
    let mut e = w.word(SRC4_L1_AT + (addr >> 16));
    if e & GROUP != 0 {
        e = w.word(group(e, addr >> 8));
        if e & GROUP != 0 {
            e = w.word(group(e, addr));
        }
    }
    // A well-formed image has no group reference at level 3; a malformed one classifies
    // nothing (fail closed) rather than yield an index as a class.
    if e & GROUP != 0 { 0 } else { e }
}

/// The u16 at `index` of a table packed two per word from word `at` on.
#[expect(
    clippy::inline_always,
    reason = "on the XDP program's per-packet path: a BPF call would cost more than the body"
)]
#[inline(always)]
pub fn u16_at<W: Words>(w: &W, at: u32, index: u32) -> u32 {
    let word = w.word(at.wrapping_add(index >> 1));
    (word >> ((index & 1) * 16)) & 0xffff
}
