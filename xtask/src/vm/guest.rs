//! The guest's initramfs: a static busybox, the kernel modules in load order, and an init
//! script that mounts the host's root read-only over virtio-9p, puts tmpfs over the places
//! tests write to, and runs each suite chrooted into it, reporting on the serial console.

use std::{
    fs::File,
    io::Write as _,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

use super::kernel::Module;

/// Prefix of the lines the init script writes for the host to read (see `console.rs`).
pub(crate) const MARK: &str = "@@pg-vm";

/// The 9p mount tag of the host's root.
pub(crate) const ROOT_TAG: &str = "hostroot";

/// Host directories the guest covers with a tmpfs (see `INIT`): a test binary under one of
/// them would be invisible in the guest.
pub(crate) const HIDDEN: &[&str] = &["/tmp", "/var/tmp", "/run", "/root", "/proc", "/sys", "/dev"];

/// Where the guest's init finds busybox-static's binary on the host.
const BUSYBOX: &str = "/bin/busybox";

/// One test binary run in the guest.
#[derive(Debug)]
pub(crate) struct GuestRun {
    /// Name in the summary.
    pub(crate) name: String,
    /// Working directory (the test crate's directory, as `cargo test` uses).
    pub(crate) dir: PathBuf,
    /// The command: executable and arguments, host paths (the guest sees the host's root).
    pub(crate) argv: Vec<String>,
}

/// The init script. `/suites` (written beside it) calls `run` once per test binary.
///
/// Its protocol on the console, one line each: `@@pg-vm kernel <release>`, `@@pg-vm
/// module-failed <name>`, `@@pg-vm begin <suite>`, `@@pg-vm end <suite> <exit status>`,
/// `@@pg-vm fatal <why>`, `@@pg-vm done`. It ends by rebooting, which ends QEMU
/// (`-no-reboot`); returning from init would panic the kernel instead.
const INIT: &str = r#"#!/bin/busybox sh
# Init of portguard's test VM, written by `cargo xtask test --kernel` (xtask/src/vm/guest.rs).
/bin/busybox --install -s /bin
export PATH=/bin
say() { echo "@@pg-vm $*"; }
halt() { sync; reboot -f; sleep 60; }
fatal() { say fatal "$*"; halt; }
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
say kernel "$(uname -r)"
while read -r m; do
    insmod "/lib/modules/$m.ko" || say module-failed "$m"
done < /modules.load
# The host's root, read-only: the guest can read the test binaries and every tool they run,
# and can change nothing on the host.
R=/host
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 hostroot $R \
    || fatal "mounting the host's root over virtio-9p"
mount -t proc proc $R/proc || fatal "proc"
mount -t sysfs sysfs $R/sys || fatal "sysfs"
mount -t bpf bpf $R/sys/fs/bpf || fatal "bpffs"
mount -t devtmpfs devtmpfs $R/dev || fatal "devtmpfs"
mkdir -p $R/dev/shm $R/dev/pts
mount -t tmpfs -o mode=1777 tmpfs $R/dev/shm || fatal "/dev/shm"
mount -t devpts devpts $R/dev/pts || fatal "/dev/pts"
mount -t tmpfs -o mode=1777 tmpfs $R/tmp || fatal "/tmp"
mount -t tmpfs -o mode=1777 tmpfs $R/var/tmp || fatal "/var/tmp"
mount -t tmpfs -o mode=0755 tmpfs $R/run || fatal "/run"
mount -t tmpfs -o mode=0700 tmpfs $R/root || fatal "/root"
ip link set lo up 2>/dev/null
run() {
    name=$1 dir=$2
    shift 2
    say begin "$name"
    chroot $R /usr/bin/env -i HOME=/root TMPDIR=/tmp RUST_BACKTRACE=0 \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        /bin/sh -c 'cd "$1" && shift && exec "$@"' sh "$dir" "$@" < /dev/null 2>&1
    say end "$name" $?
}
. /suites
say done
halt
"#;

/// Build the initramfs in `dir` (emptied first) and return the archive's path.
pub(crate) fn build(dir: &Path, modules: &[Module], runs: &[GuestRun]) -> anyhow::Result<PathBuf> {
    let tree = dir.join("initramfs");
    if tree.exists() {
        std::fs::remove_dir_all(&tree).with_context(|| format!("removing {}", tree.display()))?;
    }
    for d in ["bin", "proc", "sys", "dev", "host", "lib/modules"] {
        std::fs::create_dir_all(tree.join(d)).context("initramfs tree")?;
    }
    require_static(Path::new(BUSYBOX))?;
    std::fs::copy(BUSYBOX, tree.join("bin/busybox")).context("copying busybox")?;
    let mut load = String::new();
    for m in modules {
        let to = tree.join("lib/modules").join(format!("{}.ko", m.name));
        decompress(&m.file, &to)?;
        load.push_str(&m.name);
        load.push('\n');
    }
    std::fs::write(tree.join("modules.load"), load).context("modules.load")?;
    let mut suites = String::new();
    for r in runs {
        suites.push_str("run ");
        suites.push_str(&quote(&r.name));
        suites.push(' ');
        suites.push_str(&quote(&r.dir.to_string_lossy()));
        for a in &r.argv {
            suites.push(' ');
            suites.push_str(&quote(a));
        }
        suites.push('\n');
    }
    std::fs::write(tree.join("suites"), suites).context("suites")?;
    let init = tree.join("init");
    std::fs::write(&init, INIT).context("init")?;
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755)).context("chmod")?;
    let archive = dir.join("initramfs.cpio");
    cpio(&tree, &archive)?;
    Ok(archive)
}

/// Single-quote for the shell.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Copy a module into the initramfs uncompressed: busybox's `insmod` reads plain ELF only.
fn decompress(from: &Path, to: &Path) -> anyhow::Result<()> {
    let name = from.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        Some("xz")
    } else if name.ends_with(".zst") {
        Some("zstd")
    } else if name.ends_with(".gz") {
        Some("gzip")
    } else {
        None
    };
    let Some(tool) = tool else {
        std::fs::copy(from, to).with_context(|| format!("copying {name}"))?;
        return Ok(());
    };
    let out = File::create(to).with_context(|| format!("creating {}", to.display()))?;
    let st = Command::new(tool)
        .arg("-dc")
        .arg(from)
        .stdout(out)
        .status()
        .with_context(|| format!("running {tool}"))?;
    if !st.success() {
        bail!("{tool} -dc {name} failed ({st})");
    }
    Ok(())
}

/// The guest has no libraries before the host's root is mounted: its busybox must be static.
fn require_static(exe: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(exe)
        .with_context(|| format!("{} missing: run `cargo xtask setup`", exe.display()))?;
    let u16_at = |at: usize| {
        bytes
            .get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u64_at = |at: usize| {
        bytes
            .get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    // ELF64: e_phoff at 0x20, e_phentsize at 0x36, e_phnum at 0x38; PT_INTERP is type 3.
    let (Some(phoff), Some(size), Some(count)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else {
        bail!("{}: not an ELF executable", exe.display());
    };
    let has_interp = (0..usize::from(count)).any(|i| {
        let at = usize::try_from(phoff).unwrap_or(usize::MAX) + i * usize::from(size);
        bytes.get(at..at + 4) == Some(&3u32.to_le_bytes())
    });
    if has_interp || bytes.get(..4) != Some(b"\x7fELF") {
        bail!(
            "{} is not a static executable: install Debian's busybox-static (`cargo xtask setup`)",
            exe.display()
        );
    }
    Ok(())
}

/// Pack `tree` as a newc cpio archive (the format the kernel unpacks as initramfs).
fn cpio(tree: &Path, archive: &Path) -> anyhow::Result<()> {
    let mut names = Vec::new();
    list(tree, Path::new("."), &mut names)?;
    let out = File::create(archive).with_context(|| format!("creating {}", archive.display()))?;
    let mut child = Command::new("cpio")
        .args(["-o", "-H", "newc", "--quiet"])
        .current_dir(tree)
        .stdin(Stdio::piped())
        .stdout(out)
        .spawn()
        .context("running cpio (Debian package cpio, installed by `cargo xtask setup`)")?;
    let mut stdin = child.stdin.take().context("cpio stdin")?;
    for n in &names {
        writeln!(stdin, "{}", n.display()).context("writing to cpio")?;
    }
    drop(stdin);
    let st = child.wait().context("waiting for cpio")?;
    if !st.success() {
        bail!("cpio failed ({st})");
    }
    Ok(())
}

/// Every path under `root/rel`, each directory before what it holds.
fn list(root: &Path, rel: &Path, names: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    names.push(rel.to_owned());
    let path = root.join(rel);
    if path.is_dir() && !path.is_symlink() {
        let mut entries: Vec<_> = std::fs::read_dir(&path)
            .with_context(|| format!("listing {}", path.display()))?
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect();
        entries.sort();
        for e in entries {
            list(root, &rel.join(e), names)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_quotes() {
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn every_hidden_directory_is_covered_by_the_init() {
        for h in HIDDEN {
            assert!(INIT.contains(&format!(" $R{h}")), "{h}");
        }
    }

    #[test]
    fn the_init_speaks_the_protocol_the_console_reads() {
        assert!(INIT.contains(&format!("echo \"{MARK} $*\"")));
        assert!(INIT.contains(&format!(" {ROOT_TAG} $R")));
    }
}
