//! The policy maps of one loaded program: two generations of tables, and the one store that
//! switches between them.
//!
//! `PG_POLICY` is mapped into this process (`BPF_F_MMAPABLE`): a generation is written with a
//! `memcpy`, and [`PolicyMaps::switch`] stores the live generation's number in the control chunk,
//! after which every packet is judged by the new tables (the program reads that word once per
//! packet and takes everything else from the generation it names). The idle generation may only
//! be rewritten once no packet can still be reading it: a grace period ([`grace_period`]) after
//! the switch that made it idle.

use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

use aya::maps::{
    Map, MapData, MapError,
    lpm_trie::{Key, LpmTrie},
};
use portguard_common::{
    config::Config,
    image::{CHUNK_WORDS, Control, LAYOUT, TRIE_KEY_BYTES},
    maps,
};

use super::image::Image;

/// Why the policy maps could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A policy map could not be opened or used.
    #[error("policy map `{name}`")]
    Map {
        /// The map.
        name: &'static str,
        /// Cause.
        #[source]
        source: MapError,
    },
    /// `PG_POLICY` could not be mapped into memory.
    #[error("mapping `{}` into memory", maps::POLICY)]
    Mmap(#[source] std::io::Error),
    /// The array is not the shape this build writes (another build's program).
    #[error(
        "`{}` has {chunks} chunks of {value_size} bytes, not a policy image of this build",
        maps::POLICY
    )]
    Shape {
        /// Entries of the array.
        chunks: u32,
        /// Its value size.
        value_size: u32,
    },
    /// The policy does not fit the generations this program was loaded with.
    #[error("the policy needs {need} chunks per generation; the loaded program holds {have}")]
    TooLarge {
        /// Chunks needed.
        need: u32,
        /// Chunks per generation.
        have: u32,
    },
}

fn map_err(name: &'static str) -> impl FnOnce(MapError) -> PolicyError {
    move |source| PolicyError::Map { name, source }
}

/// A shared, writable mapping of a BPF array's values, unmapped on drop.
#[derive(Debug)]
pub(super) struct Mapping {
    /// Page-aligned, so aligned for every value type mapped here.
    ptr: *mut u64,
    len: usize,
}

impl Mapping {
    /// Map the first `bytes` of `map` (rounded up to whole pages).
    pub(super) fn new(map: &MapData, bytes: usize) -> Result<Self, PolicyError> {
        let bytes = bytes.next_multiple_of(page_size());
        // SAFETY: mapping a BPF map fd: the kernel checks the flags and the length against the
        // map (an mmap-able array of at least `bytes` bytes); nothing else is touched.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(PolicyError::Mmap(std::io::Error::last_os_error()));
        }
        Ok(Mapping {
            ptr: ptr.cast(),
            len: bytes,
        })
    }

    /// The mapping's length in 32-bit words.
    fn words(&self) -> usize {
        self.len / 4
    }

    /// Start of the mapping (page-aligned).
    pub(super) fn ptr(&self) -> *mut u64 {
        self.ptr
    }

    /// Start of the mapping, as 32-bit words.
    fn words_ptr(&self) -> *mut u32 {
        self.ptr.cast()
    }
}

// SAFETY: the mapping belongs to the process, not to a thread; writes go through `&mut
// PolicyMaps` (or a short-lived mapping owned by one call), reads are of plain integers.
unsafe impl Send for Mapping {}
// SAFETY: as above: shared references only read.
unsafe impl Sync for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the region mapped in `new`, unmapped once.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// The policy maps of one program, open for reading and switching.
#[derive(Debug)]
pub struct PolicyMaps {
    mem: Mapping,
    /// Chunks of the array.
    chunks: u32,
    /// `PG_POLICY` (kept open for pinning; the mapping alone keeps the memory).
    policy: Map,
    /// The tries of generations 0 and 1.
    tries: [Map; 2],
}

/// Bytes of one chunk.
const CHUNK_BYTES: u32 = CHUNK_WORDS * 4;

impl PolicyMaps {
    /// Open the maps of a program: `PG_POLICY` and the two tries.
    pub fn new(policy: MapData, trie0: MapData, trie1: MapData) -> Result<Self, PolicyError> {
        let info = policy.info().map_err(map_err(maps::POLICY))?;
        let (chunks, value_size) = (info.max_entries(), info.value_size());
        if value_size != CHUNK_BYTES || chunks < 3 {
            return Err(PolicyError::Shape { chunks, value_size });
        }
        let mem = Mapping::new(&policy, chunks as usize * CHUNK_BYTES as usize)?;
        Ok(PolicyMaps {
            mem,
            chunks,
            policy: Map::Array(policy),
            tries: [Map::LpmTrie(trie0), Map::LpmTrie(trie1)],
        })
    }

    /// Open the maps pinned in `dir` under their names.
    pub fn from_pins(dir: &Path) -> Result<Self, PolicyError> {
        let open = |name: &'static str| MapData::from_pin(dir.join(name)).map_err(map_err(name));
        Self::new(
            open(maps::POLICY)?,
            open(maps::SRC_TRIE0)?,
            open(maps::SRC_TRIE1)?,
        )
    }

    /// The three maps, by name (for their kernel-side figures).
    #[must_use]
    pub fn maps(&self) -> [(&'static str, &Map); 3] {
        [
            (maps::POLICY, &self.policy),
            (maps::SRC_TRIE0, &self.tries[0]),
            (maps::SRC_TRIE1, &self.tries[1]),
        ]
    }

    /// Pin the three maps in `dir` under their names.
    pub fn pin(&self, dir: &Path) -> Result<(), (PathBuf, aya::pin::PinError)> {
        for (name, map) in [
            (maps::POLICY, &self.policy),
            (maps::SRC_TRIE0, &self.tries[0]),
            (maps::SRC_TRIE1, &self.tries[1]),
        ] {
            let path = dir.join(name);
            map.pin(&path).map_err(|e| (path, e))?;
        }
        Ok(())
    }

    /// Chunks per generation that fit the array (the capacity this program was loaded with).
    #[must_use]
    pub fn half(&self) -> u32 {
        (self.chunks - 1) / 2
    }

    /// The control chunk.
    #[must_use]
    pub fn control(&self) -> Control {
        // SAFETY: chunk 0 is inside the mapping; Control is plain integers, 64 bytes.
        unsafe { self.mem.ptr.cast::<Control>().read_volatile() }
    }

    /// The config of the live generation: the policy in force.
    #[must_use]
    pub fn live_config(&self) -> Config {
        let c = self.control();
        self.config_of(c.live & 1)
    }

    fn config_of(&self, generation: u32) -> Config {
        let at = self.chunk_of(generation) as usize * CHUNK_WORDS as usize / 2;
        // SAFETY: chunk_of is inside the array, and the array inside the mapping; a chunk is
        // 64 bytes at a multiple of 64, so 8-aligned as Config needs.
        unsafe { self.mem.ptr.add(at).cast::<Config>().read_volatile() }
    }

    /// First chunk of `generation`.
    fn chunk_of(&self, generation: u32) -> u32 {
        1 + generation * self.half()
    }

    /// Whether `image` fits a generation of this program.
    #[must_use]
    pub fn fits(&self, image: &Image) -> bool {
        image.chunks() <= self.half()
    }

    /// Write `image` as generation `generation` (its tables and its trie), leaving the control
    /// chunk alone. The caller makes sure no packet reads that generation (it is idle, and a
    /// grace period has passed since it was last live).
    fn write(&mut self, generation: u32, image: &Image) -> Result<(), PolicyError> {
        let have = self.half();
        if image.chunks() > have {
            return Err(PolicyError::TooLarge {
                need: image.chunks(),
                have,
            });
        }
        let start = self.chunk_of(generation) as usize * CHUNK_WORDS as usize;
        let len = have as usize * CHUNK_WORDS as usize;
        assert!(
            start + len <= self.mem.words(),
            "generation outside the mapping"
        );
        // SAFETY: [start, start + len) is inside the mapping (asserted); the image is at most
        // `len` words (checked above); the kernel reads these words concurrently only through
        // the live generation, which this is not.
        unsafe {
            let dst = self.mem.words_ptr().add(start);
            std::ptr::copy_nonoverlapping(image.words.as_ptr(), dst, image.words.len());
            // What a larger policy left behind is never read (every index the program computes
            // stays inside its tables), but a generation should hold exactly one policy.
            std::ptr::write_bytes(dst.add(image.words.len()), 0, len - image.words.len());
        }
        let name = if generation == 0 {
            maps::SRC_TRIE0
        } else {
            maps::SRC_TRIE1
        };
        let mut trie: LpmTrie<&mut MapData, [u8; TRIE_KEY_BYTES], u32> =
            LpmTrie::try_from(&mut self.tries[generation as usize]).map_err(map_err(name))?;
        let stale: Vec<Key<[u8; TRIE_KEY_BYTES]>> = trie.keys().filter_map(Result::ok).collect();
        for k in &stale {
            trie.remove(k).map_err(map_err(name))?;
        }
        for (key, len, class) in &image.trie {
            trie.insert(&Key::new(*len, *key), class, 0)
                .map_err(map_err(name))?;
        }
        Ok(())
    }

    /// Fill a freshly created array: `image` as generation 0, live, for program build `build`.
    pub fn init(&mut self, image: &Image, build: u64) -> Result<(), PolicyError> {
        self.write(0, image)?;
        let control = Control {
            live: 0,
            half: self.half(),
            build,
            layout: LAYOUT,
            pad: [0; 11],
        };
        // SAFETY: chunk 0 is inside the mapping; nothing runs the program yet.
        unsafe { self.mem.ptr.cast::<Control>().write_volatile(control) };
        Ok(())
    }

    /// Put `image` in force: write it as the idle generation, then switch to it with one store.
    /// A grace period must have passed since the previous switch (see [`grace_period`]).
    pub fn switch(&mut self, image: &Image) -> Result<(), PolicyError> {
        let idle = (self.control().live & 1) ^ 1;
        self.write(idle, image)?;
        // SAFETY: the control chunk's first word, inside the mapping and aligned; the kernel
        // reads it with one 32-bit load. Release: the generation's words are written before
        // any reader can see its number.
        let live = unsafe { AtomicU32::from_ptr(self.mem.words_ptr()) };
        live.store(idle, Ordering::Release);
        Ok(())
    }
}

fn page_size() -> usize {
    // SAFETY: plain sysconf query.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096)
}

/// `membarrier(2)`'s command that returns after an RCU grace period (`synchronize_rcu`).
const MEMBARRIER_CMD_GLOBAL: libc::c_int = 1;

/// Wait until no XDP program run that started before this call is still running: an RCU grace
/// period (XDP runs inside RCU read-side sections). After it, a generation (or local-address
/// set) that was switched away from before the call is read by nobody and may be rewritten.
/// `membarrier(MEMBARRIER_CMD_GLOBAL)` (4.3) is exactly `synchronize_rcu()`; where it is refused
/// (`nohz_full` kernels), a sleep far longer than any program run stands in for it.
pub fn grace_period() {
    // SAFETY: plain syscall without pointers.
    let rc = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) };
    if rc != 0 {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
