//! `cargo xtask setup`: the recipe of shared/reference/toolchain.md, made idempotent.
//!
//! Each step first checks whether its result is already there and does nothing if so; a machine
//! that is set up is checked in well under a second. Steps that reach a package registry run
//! under a time limit, so a missing network ends in a clear error instead of a hang.

use std::{path::Path, time::Duration};

use anyhow::{Context as _, bail};

use crate::run::{output, succeeds, with_timeout};

/// Debian packages: the Rust toolchain with its library source (for `-Z build-std=core`), the
/// LLVM bpf-linker links against, and the tools tests and benchmarks drive.
const PACKAGES: &[&str] = &[
    "rustc-web",
    "rust-web-src",
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "bpftool",
    "nftables",
    "iproute2",
    "iputils-ping",
    "tcpdump",
    "ethtool",
    // `setpriv` runs the daemon and `status` with fewer privileges in the access tests.
    "util-linux",
    // `systemd-analyze verify` checks the unit file in the tests.
    "systemd",
    // `cargo xtask test --kernel`: the VM, its init (a static busybox), the initramfs packer, and
    // `depmod`, which writes the modules.dep a kernel package leaves to its postinst.
    "qemu-system-x86",
    "busybox-static",
    "cpio",
    "kmod",
];

/// The rustup name under which the Debian toolchain is linked (portguard/build.rs uses it).
const LINKED_TOOLCHAIN: &str = "portguard-bpf";

pub(crate) fn setup() -> anyhow::Result<()> {
    debian_packages()?;
    bpf_linker()?;
    linked_toolchain()?;
    bpffs()?;
    Ok(())
}

pub(crate) fn require_root(why: &str) -> anyhow::Result<()> {
    let uid = output("id", &["-u"]).unwrap_or_default();
    if uid.trim() != "0" {
        bail!("root is needed: {why}. Run as root (CI does).");
    }
    Ok(())
}

fn installed(pkg: &str) -> bool {
    output("dpkg-query", &["-W", "-f=${Status}", pkg])
        .is_some_and(|s| s.contains("install ok installed"))
}

fn debian_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = PACKAGES.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    require_root("installing Debian packages")?;
    eprintln!(
        "xtask setup: installing Debian packages: {}",
        missing.join(" ")
    );
    let env = [("DEBIAN_FRONTEND", "noninteractive")];
    with_timeout(
        Duration::from_secs(300),
        "apt-get",
        &["update", "-qq"],
        &env,
    )?;
    let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
    args.extend(&missing);
    with_timeout(Duration::from_secs(1200), "apt-get", &args, &env)
}

fn bpf_linker() -> anyhow::Result<()> {
    if succeeds("bpf-linker", &["--version"]) {
        return Ok(());
    }
    eprintln!("xtask setup: building bpf-linker against Debian's LLVM 22 (a few minutes)");
    with_timeout(
        Duration::from_secs(1500),
        "cargo",
        &[
            "install",
            "bpf-linker",
            "--locked",
            "--no-default-features",
            "--features",
            "llvm-22",
        ],
        &[("LLVM_PREFIX", "/usr/lib/llvm-22")],
    )
    .context("installing bpf-linker")?;
    if !succeeds("bpf-linker", &["--version"]) {
        bail!("bpf-linker was installed but is not on PATH: add ~/.cargo/bin to PATH");
    }
    Ok(())
}

fn linked_toolchain() -> anyhow::Result<()> {
    let list = output("rustup", &["toolchain", "list"]).context("rustup is needed (rustup.rs)")?;
    if list
        .lines()
        .any(|l| l.split_whitespace().next() == Some(LINKED_TOOLCHAIN))
    {
        return Ok(());
    }
    if !Path::new("/usr/lib/rustlib/src/rust/library/core").is_dir() {
        bail!("Debian's rust-web-src is missing (/usr/lib/rustlib/src/rust/library)");
    }
    with_timeout(
        Duration::from_secs(30),
        "rustup",
        &["toolchain", "link", LINKED_TOOLCHAIN, "/usr"],
        &[],
    )
}

fn bpffs() -> anyhow::Result<()> {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(2) == Some("bpf"))
    {
        return Ok(());
    }
    require_root("mounting bpffs on /sys/fs/bpf")?;
    with_timeout(
        Duration::from_secs(10),
        "mount",
        &["-t", "bpf", "bpf", "/sys/fs/bpf"],
        &[],
    )
}
