//! Harness for portguard's privileged tests (the `integration` test binary) and its benchmarks
//! (`bench/`): BPF pin directories, scratch directories, network namespaces and veth pairs that
//! clean up after themselves (also when a test panics), frame builders, the test addresses and
//! table rules, the two classifiers side by side, and the daemon runner.
//!
//! Every name is unique per process and call, so parallel tests and the remains of a crashed
//! run never collide. Addresses come only from 198.18.0.0/15 and `2001:db8::/32`.

pub mod addrs;
pub mod bond;
pub mod daemon;
pub mod frames;
pub mod journal;
pub mod net;
pub mod rules;

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

use aya::programs::{TestRun, TestRunOptions};
use portguard::ebpf::Datapath;
use portguard_common::{
    maps::{LOCAL_BROADCAST, LOCAL_UNICAST},
    packet::Family,
    reason::Reason,
    reference::RefEnv,
    tables::Tables,
};

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

/// A scratch directory under the system's temporary directory, removed on drop (also when the
/// test panics).
#[derive(Debug)]
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// A fresh directory named `<prefix><unique>`.
    #[must_use]
    pub fn new(prefix: &str) -> Self {
        let dir = std::env::temp_dir().join(unique(prefix));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
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

    /// Packets counted for reason `r`.
    #[must_use]
    pub fn reason(&self, r: Reason) -> u64 {
        reason_packets(&self.dp, r)
    }
}

/// Packets the datapath counted for reason `r`.
#[must_use]
pub fn reason_packets(dp: &Datapath, r: Reason) -> u64 {
    dp.reason_counters()
        .expect("reason counters")
        .into_iter()
        .find(|(x, _)| *x == r)
        .expect("every reason has a counter")
        .1
        .packets
}

/// The MAC address [`Twin`] gives the host, and the one frames carry by default
/// ([`frames::Frame`]): frames to it with an unknown address are judged as the kernel routes them.
pub const HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];

/// The two classifiers over the same tables and the same host, for tests that compare them: the
/// XDP program (through `BPF_PROG_TEST_RUN`) and the reference classifier. The host has
/// [`HOST_MAC`], the given addresses, and the routes of a [`net::KnownRoutes`] namespace, which the
/// calling thread must be in (the program asks the kernel's routing table of its namespace).
#[derive(Debug)]
pub struct Twin<'t> {
    /// The XDP program.
    pub dp: TestDp,
    /// The reference classifier.
    pub env: RefEnv<'t>,
}

impl<'t> Twin<'t> {
    /// Load both with `tables`; `unicast` and `broadcast` are the host's addresses.
    ///
    /// # Panics
    /// Outside a [`net::KnownRoutes`] namespace.
    #[must_use]
    pub fn new(tables: &'t Tables, unicast: &[IpAddr], broadcast: &[IpAddr]) -> Self {
        assert!(
            net::KnownRoutes::here(),
            "Twin needs the known routing table of a net::KnownRoutes namespace: build it in KnownRoutes::run"
        );
        let mut dp = TestDp::new(tables);
        dp.dp
            .set_local_addrs(unicast, broadcast)
            .expect("local addresses");
        dp.dp.set_host_macs(&[HOST_MAC]).expect("host MACs");
        let mut env = RefEnv::new(tables);
        let locals = unicast.iter().map(|a| (a, LOCAL_UNICAST));
        for (addr, kind) in locals.chain(broadcast.iter().map(|a| (a, LOCAL_BROADCAST))) {
            let key = match addr {
                IpAddr::V4(a) => {
                    let mut wide = [0u8; 16];
                    wide[..4].copy_from_slice(&a.octets());
                    (Family::V4, wide)
                }
                IpAddr::V6(a) => (Family::V6, a.octets()),
            };
            env.local.insert(key, kind);
        }
        env.host_macs.insert(HOST_MAC);
        let (v4, v4_len) = net::FORWARDED_V4;
        let mut wide = [0u8; 16];
        wide[..4].copy_from_slice(&v4);
        env.forwarded.push((Family::V4, wide, v4_len));
        env.forwarded
            .push((Family::V6, net::FORWARDED_V6.0, net::FORWARDED_V6.1));
        Twin { dp, env }
    }
}
