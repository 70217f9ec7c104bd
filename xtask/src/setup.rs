//! `cargo xtask setup`: the recipe of shared/reference/toolchain.md, made idempotent.
//!
//! Each step first checks whether its result is already there and does nothing if so; a machine
//! that is set up is checked in well under a second. Steps that reach a package registry run
//! under a time limit, so a missing network ends in a clear error instead of a hang.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

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
    // `promtool` checks and unit-tests the alert rules in packaging/prometheus (tests). The
    // package's service is not started here (no systemd as PID 1; policy-rc.d in images).
    "prometheus",
    // Debian's python3 with venv, for the Ansible tools below and zig.
    "python3-venv",
    // Packaging: `objdump -T` checks the release binary's glibc floor, `strip` shrinks it,
    // dpkg-shlibdeps gives the .deb its libc6 dependency, `rpm` inspects the .rpm in the tests,
    // man-db finds the installed man page.
    "binutils",
    "dpkg-dev",
    "rpm",
    "man-db",
    // Independent tools that attack the protected host in tests/tests/tools.rs: port scans
    // (SYN, ACK, FIN, NULL, Xmas), crafted packets (scapy, for Debian's /usr/bin/python3, not
    // whatever python3 comes first on PATH), and floods.
    "nmap",
    "python3-scapy",
    "hping3",
];

/// Debian packages for `cargo xtask test --kernel` only (installed by it, not by `setup`): the
/// VM, its init (a static busybox), the initramfs packer, and `depmod`, which writes the
/// modules.dep a kernel package leaves to its postinst.
const VM_PACKAGES: &[&str] = &["qemu-system-x86", "busybox-static", "cpio", "kmod"];

/// Cargo subcommands for `cargo xtask release` and `package`, at pinned versions: (crate,
/// version). Each is installed with `cargo install --locked` when its `--version` does not
/// name that version.
const CARGO_TOOLS: &[(&str, &str)] = &[
    // Links through zig against glibc 2.28's symbol versions (the release binary).
    ("cargo-zigbuild", "0.24.1"),
    ("cargo-deb", "3.8.0"),
    ("cargo-generate-rpm", "0.21.1"),
];

/// The venv holding zig (`PyPI`'s `ziglang` wheel: the zig toolchain, with the glibc symbol
/// lists cargo-zigbuild links against).
const ZIG_VENV: &str = "/opt/portguard-ci/zig";
/// The pinned zig.
const ZIG_VERSION: &str = "0.15.2";

/// The venv holding ansible-core and ansible-lint for the role's tests (tests/tests/ansible.rs
/// finds them here). A fixed path outside the work tree, so every checkout shares one.
pub(crate) const CI_VENV: &str = "/opt/portguard-ci/venv";

/// The pinned Python packages (every one, dependencies too).
const CI_REQUIREMENTS: &str = "packaging/ansible/requirements-ci.txt";

/// The rustup name under which the Debian toolchain is linked (portguard/build.rs uses it).
const LINKED_TOOLCHAIN: &str = "portguard-bpf";

pub(crate) fn setup() -> anyhow::Result<()> {
    debian_packages(PACKAGES)?;
    bpf_linker()?;
    linked_toolchain()?;
    bpffs()?;
    ci_venv()?;
    Ok(())
}

/// What `cargo xtask release` and `package` need beyond [`setup`]: the cargo subcommands and
/// zig. Not part of `setup`: compiling them takes many minutes, and only packaging uses them.
pub(crate) fn packaging() -> anyhow::Result<()> {
    setup()?;
    cargo_tools()?;
    zig_venv()
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

/// What `cargo xtask test --kernel` needs beyond [`setup`]: [`VM_PACKAGES`].
pub(crate) fn vm() -> anyhow::Result<()> {
    setup()?;
    debian_packages(VM_PACKAGES)
}

fn debian_packages(wanted: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = wanted.iter().copied().filter(|p| !installed(p)).collect();
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

/// ansible-core and ansible-lint from `PyPI`, at the versions `CI_REQUIREMENTS` pins, in a venv of
/// Debian's python3 (the system's own packages stay untouched). The venv keeps a copy of the
/// requirements it was made from: when it matches the file, there is nothing to do; when the
/// pins change, the next setup installs the new ones.
fn ci_venv() -> anyhow::Result<()> {
    let wanted_path = workspace().join(CI_REQUIREMENTS);
    let wanted = std::fs::read_to_string(&wanted_path)
        .with_context(|| format!("reading {}", wanted_path.display()))?;
    let venv = Path::new(CI_VENV);
    let stamp = venv.join("portguard-requirements.txt");
    let tools = ["bin/ansible-playbook", "bin/ansible-lint"];
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == wanted)
        && tools.iter().all(|t| venv.join(t).is_file())
    {
        return Ok(());
    }
    require_root(&format!("creating the Python venv {CI_VENV}"))?;
    eprintln!("xtask setup: installing ansible-core and ansible-lint into {CI_VENV}");
    if !venv.join("bin/python").is_file() {
        with_timeout(
            Duration::from_secs(120),
            "/usr/bin/python3",
            &["-m", "venv", CI_VENV],
            &[],
        )
        .context("creating the venv (Debian's python3-venv)")?;
    }
    let pip = venv.join("bin/pip");
    with_timeout(
        Duration::from_secs(900),
        &pip.display().to_string(),
        &[
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--requirement",
            &wanted_path.display().to_string(),
        ],
        &[],
    )
    .context("installing the pinned Python packages")?;
    std::fs::write(&stamp, wanted).with_context(|| format!("writing {}", stamp.display()))
}

/// The cargo subcommands of [`CARGO_TOOLS`], each at its pinned version.
fn cargo_tools() -> anyhow::Result<()> {
    for &(krate, version) in CARGO_TOOLS {
        // The installed binary itself (`cargo zigbuild --version` is not a thing).
        let current = output(krate, &["--version"]).unwrap_or_default();
        if current.split_whitespace().any(|w| w == version) {
            continue;
        }
        eprintln!("xtask setup: installing {krate} {version} (a few minutes)");
        with_timeout(
            Duration::from_secs(1500),
            "cargo",
            &["install", "--locked", krate, "--version", version],
            &[],
        )
        .with_context(|| format!("installing {krate}"))?;
    }
    Ok(())
}

/// The zig executable of the pinned `ziglang` wheel, if it is installed.
pub(crate) fn zig() -> Option<PathBuf> {
    let lib = Path::new(ZIG_VENV).join("lib");
    std::fs::read_dir(lib)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path().join("site-packages/ziglang/zig"))
        .find(|p| p.is_file())
}

/// zig from `PyPI` in its own venv (the system's Python stays untouched), at [`ZIG_VERSION`].
fn zig_venv() -> anyhow::Result<()> {
    if let Some(zig) = zig()
        && output(&zig.display().to_string(), &["version"]).is_some_and(|v| v.trim() == ZIG_VERSION)
    {
        return Ok(());
    }
    require_root(&format!("creating the zig venv {ZIG_VENV}"))?;
    eprintln!("xtask setup: installing zig {ZIG_VERSION} (PyPI ziglang) into {ZIG_VENV}");
    let venv = Path::new(ZIG_VENV);
    if !venv.join("bin/python").is_file() {
        with_timeout(
            Duration::from_secs(120),
            "/usr/bin/python3",
            &["-m", "venv", ZIG_VENV],
            &[],
        )
        .context("creating the zig venv (Debian's python3-venv)")?;
    }
    with_timeout(
        Duration::from_secs(900),
        &venv.join("bin/pip").display().to_string(),
        &[
            "install",
            "--quiet",
            "--disable-pip-version-check",
            &format!("ziglang=={ZIG_VERSION}"),
        ],
        &[],
    )
    .context("installing ziglang")?;
    if zig().is_none() {
        bail!("ziglang {ZIG_VERSION} installed, but no zig executable in {ZIG_VENV}");
    }
    Ok(())
}

pub(crate) fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}
