//! Harness for portguard's privileged tests: BPF pin directories, network namespaces and veth
//! pairs that clean up after themselves (also when a test panics), and frame builders.
//!
//! Every name is unique per process and call, so parallel tests and the remains of a crashed
//! run never collide. Addresses come only from 198.18.0.0/15 and `2001:db8::/32`.

pub mod bond;
pub mod daemon;
pub mod frames;
pub mod net;

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

use aya::programs::{TestRun, TestRunOptions};
use portguard::ebpf::Datapath;
use portguard_common::reference::Tables;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A short name unique in this machine's current runs: `pg<pid><n>` style, at most 15 bytes
/// with the prefix (interface names are limited to 15).
#[must_use]
pub fn unique(prefix: &str) -> String {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}{n}", std::process::id() % 100_000)
}

/// The seed of a randomised test: `PORTGUARD_SEED` if set (to replay a failure), else one
/// from the clock; printed either way, so every failure can be replayed.
#[must_use]
pub fn seed(test: &str) -> u64 {
    let seed = std::env::var("PORTGUARD_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    println!("{test} seed: {seed} (replay with PORTGUARD_SEED={seed})");
    seed
}

/// A directory in bpffs for one test's pinned state, removed on drop.
#[derive(Debug)]
pub struct PinDir(pub PathBuf);

impl PinDir {
    /// A fresh directory under /sys/fs/bpf.
    #[must_use]
    pub fn new() -> Self {
        let dir = Path::new("/sys/fs/bpf").join(unique("pg-test-"));
        std::fs::create_dir_all(&dir)
            .expect("create pin dir in bpffs (is bpffs mounted? run `cargo xtask setup`)");
        PinDir(dir)
    }
}

impl Default for PinDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        // bpffs supports unlink of pins and rmdir of empty directories.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A loaded datapath with its own pin directory: for `BPF_PROG_TEST_RUN` tests.
#[derive(Debug)]
pub struct TestDp {
    /// The datapath.
    pub dp: Datapath,
    /// Its pin directory (dropped after `dp`).
    pub pins: PinDir,
}

/// `XDP_DROP`.
pub const DROP: u32 = 1;
/// `XDP_PASS`.
pub const PASS: u32 = 2;

impl TestDp {
    /// Load the program with these tables.
    #[must_use]
    pub fn new(tables: &Tables) -> Self {
        let pins = PinDir::new();
        let dp = Datapath::load(tables, &pins.0).expect("load XDP program");
        TestDp { dp, pins }
    }

    /// Run one frame through the program; the XDP action.
    pub fn run(&mut self, frame: &[u8]) -> u32 {
        let prog = self.dp.program().expect("program");
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        prog.test_run(opts).expect("BPF_PROG_TEST_RUN").return_value
    }
}
