//! `cargo xtask bench`: build the benchmark driver in release mode and run it as root.
//!
//! The driver is its own crate (`bench/`, package `portguard-bench`); it uses the integration
//! tests' library for the harness (pin directories, namespaces, veth pairs, frame builders, the
//! daemon runner). Release mode because the driver compiles policies of 100,000 prefixes, and
//! that build time is one of the figures.

use crate::{run, setup};

/// The benchmarks the driver knows, `all` running every one of them.
pub(crate) const WHICH: [&str; 5] = ["datapath", "throughput", "scale", "reload", "all"];

pub(crate) fn bench(which: &str) -> anyhow::Result<()> {
    setup::setup()?;
    setup::require_root("the benchmarks load XDP programs and create network namespaces")?;
    // The reload benchmark runs the real daemon: the harness looks for the `portguard-cli`
    // binary of the integration tests beside the driver (both land in target/release/).
    run::cargo(&[
        "build",
        "--release",
        "-p",
        "integration-tests",
        "--bin",
        "portguard-cli",
    ])?;
    run::cargo(&["run", "--release", "-p", "portguard-bench", "--", which])
}
