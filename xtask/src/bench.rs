//! `cargo xtask bench`: build the benchmark driver in release mode and run it as root.
//!
//! The driver lives in the integration-tests crate (`portguard-bench`) because it needs the same
//! harness as the privileged tests: pin directories, namespaces, veth pairs, frame builders.
//! Release mode because the driver compiles policies of 100,000 prefixes, and that build time
//! is one of the figures.

use crate::{run, setup};

/// The benchmarks the driver knows, `all` running every one of them.
pub(crate) const WHICH: [&str; 5] = ["datapath", "throughput", "scale", "reload", "all"];

pub(crate) fn bench(which: &str) -> anyhow::Result<()> {
    setup::setup()?;
    setup::require_root("the benchmarks load XDP programs and create network namespaces")?;
    // The reload benchmark runs the real daemon: build the CLI binary beside the driver.
    run::cargo(&[
        "build",
        "--release",
        "-p",
        "integration-tests",
        "--bin",
        "portguard-cli",
    ])?;
    run::cargo(&[
        "run",
        "--release",
        "-p",
        "integration-tests",
        "--bin",
        "portguard-bench",
        "--",
        which,
    ])
}
