//! Which kernel the VM boots: Debian's newest package of a version, or a kernel on disk; and the
//! modules the guest loads from it, dependencies first.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::run::{output, status, with_timeout};

/// A kernel to boot.
#[derive(Debug)]
pub(crate) struct Kernel {
    /// `uname -r` of the kernel, read from the image (`6.1.0-57-amd64`).
    pub(crate) release: String,
    /// The bzImage.
    pub(crate) vmlinuz: PathBuf,
    /// `lib/modules/<release>` with a `modules.dep`, when the kernel has modules on disk.
    pub(crate) modules: Option<PathBuf>,
    /// Where it came from, for the summary: the package and its version, or the path given.
    pub(crate) origin: String,
}

/// A kernel from `spec`: an existing path (a bzImage, or a directory holding an extracted
/// kernel package: `boot/vmlinuz-*` and `lib/modules/*`), or a version such as `6.1`, which
/// resolves to the newest `linux-image-<version>...-amd64-unsigned` that apt knows of, fetched
/// once into `cache`.
pub(crate) fn resolve(spec: &str, cache: &Path) -> anyhow::Result<Kernel> {
    let path = Path::new(spec);
    if path.exists() {
        return from_path(path);
    }
    let Some(version) = parse_version(spec) else {
        bail!("--kernel {spec}: neither a file or directory nor a version such as 6.1 or 6.12");
    };
    let package = newest_package(version)?;
    let root = fetch(&package, cache)?;
    let mut kernel = from_tree(&root)?;
    let version = root.parent().and_then(deb_version).unwrap_or_default();
    kernel.origin = format!("Debian {package} {version}");
    Ok(kernel)
}

/// `major.minor` of a version argument.
fn parse_version(spec: &str) -> Option<(u64, u64)> {
    let (major, minor) = spec.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// The numbers in a package's kernel version, for ordering: `6.1.0-57` -> [6, 1, 0, 57],
/// `6.12.117+deb12` -> [6, 12, 117, 12].
fn version_key(kver: &str) -> Vec<u64> {
    kver.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// The newest generic amd64 kernel package of `major.minor` (not the cloud or realtime
/// flavours: the cloud kernel leaves out drivers, bonding among them).
fn newest_package((major, minor): (u64, u64)) -> anyhow::Result<String> {
    let pick = |listing: &str| {
        listing
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter_map(|name| {
                let kver = name
                    .strip_prefix("linux-image-")?
                    .strip_suffix("-amd64-unsigned")?;
                if kver.ends_with("-cloud") || kver.ends_with("-rt") {
                    return None;
                }
                let key = version_key(kver);
                (key.len() > 2 && key[0] == major && key[1] == minor)
                    .then(|| (key, name.to_owned()))
            })
            .max()
            .map(|(_, name)| name)
    };
    let search = || {
        output(
            "apt-cache",
            &[
                "search",
                "--names-only",
                "^linux-image-[0-9].*-amd64-unsigned$",
            ],
        )
        .unwrap_or_default()
    };
    if let Some(name) = pick(&search()) {
        return Ok(name);
    }
    // A machine whose package lists were never fetched knows no kernel packages yet.
    eprintln!("xtask: no linux-image-{major}.{minor} package known to apt; running apt-get update");
    with_timeout(Duration::from_secs(300), "apt-get", &["update", "-qq"], &[])?;
    pick(&search()).with_context(|| {
        format!(
            "apt knows no linux-image-{major}.{minor}*-amd64-unsigned package \
             (Debian 12 has 6.1, and 6.12 through bookworm-security or bookworm-backports)"
        )
    })
}

/// Download `package` into `cache/<package>/` and extract it into `root/` beside the `.deb`,
/// once: a download or an extraction that finished is never repeated.
fn fetch(package: &str, cache: &Path) -> anyhow::Result<PathBuf> {
    let dir = cache.join(package);
    let root = dir.join("root");
    let done = dir.join("extracted");
    if done.exists() {
        return Ok(root);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let deb = if let Some(deb) = find_deb(&dir) {
        deb
    } else {
        eprintln!("xtask: downloading {package}");
        let mut cmd = Command::new("timeout");
        // apt drops privileges to `_apt` for downloads, which cannot write into a root-owned
        // cache; apt checks the file against the archive's signature either way.
        cmd.args(["600", "apt-get", "download", "-q", "-o"])
            .arg("APT::Sandbox::User=root")
            .arg(package)
            .current_dir(&dir);
        status(cmd, &format!("apt-get download {package}"))?;
        find_deb(&dir).with_context(|| format!("no .deb in {} after download", dir.display()))?
    };
    if root.exists() {
        std::fs::remove_dir_all(&root).with_context(|| format!("removing {}", root.display()))?;
    }
    let mut cmd = Command::new("dpkg-deb");
    cmd.arg("-x").arg(&deb).arg(&root);
    status(cmd, &format!("dpkg-deb -x {}", deb.display()))?;
    std::fs::write(&done, b"").context("marking the extraction done")?;
    Ok(root)
}

fn find_deb(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
}

/// The Debian version of the `.deb` in `dir` (its file name's middle part).
fn deb_version(dir: &Path) -> Option<String> {
    let deb = find_deb(dir)?;
    let name = deb.file_stem()?.to_string_lossy().into_owned();
    name.split('_').nth(1).map(str::to_owned)
}

fn from_path(path: &Path) -> anyhow::Result<Kernel> {
    if path.is_dir() {
        let mut k = from_tree(path)?;
        k.origin = path.display().to_string();
        return Ok(k);
    }
    let release = bzimage_release(path)?;
    // An image inside an extracted package tree finds its modules beside it.
    let modules = path
        .parent()
        .and_then(Path::parent)
        .map(|root| root.join("lib/modules").join(&release))
        .filter(|m| m.is_dir());
    let modules = modules.map(|m| depmod(&m, &release)).transpose()?;
    Ok(Kernel {
        release,
        vmlinuz: path.to_owned(),
        modules,
        origin: path.display().to_string(),
    })
}

/// A kernel package tree: exactly one `boot/vmlinuz-*`, its modules in `lib/modules/<release>`.
fn from_tree(root: &Path) -> anyhow::Result<Kernel> {
    let boot = root.join("boot");
    let images: Vec<PathBuf> = std::fs::read_dir(&boot)
        .with_context(|| format!("{}: no boot/ directory", root.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .collect();
    let [vmlinuz] = images.as_slice() else {
        bail!(
            "{}: expected one vmlinuz-*, found {images:?}",
            boot.display()
        );
    };
    let release = bzimage_release(vmlinuz)?;
    let modules = root.join("lib/modules").join(&release);
    let modules = if modules.is_dir() {
        Some(depmod(&modules, &release)?)
    } else {
        None
    };
    Ok(Kernel {
        release,
        vmlinuz: vmlinuz.clone(),
        modules,
        origin: root.display().to_string(),
    })
}

/// The release string a bzImage carries in its setup header: `kernel_version` (offset 0x20e)
/// points, relative to 0x200, at "<release> (<builder>) #<n> ...".
fn bzimage_release(image: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(image).with_context(|| format!("reading {}", image.display()))?;
    let field = |at: usize, len: usize| bytes.get(at..at + len);
    if field(0x202, 4) != Some(b"HdrS") {
        bail!("{}: not a bzImage (no HdrS header)", image.display());
    }
    let ptr = field(0x20e, 2).map(|b| usize::from(u16::from_le_bytes([b[0], b[1]])));
    let text = ptr
        .and_then(|p| bytes.get(0x200 + p..))
        .map(|s| &s[..s.iter().position(|&c| c == 0).unwrap_or(s.len()).min(256)])
        .map(String::from_utf8_lossy)
        .and_then(|s| s.split_whitespace().next().map(str::to_owned));
    text.with_context(|| format!("{}: no kernel version in the header", image.display()))
}

/// Write `modules.dep` for a module tree that has none: a package leaves that to its
/// postinst script, which extraction does not run.
fn depmod(modules: &Path, release: &str) -> anyhow::Result<PathBuf> {
    if modules.join("modules.dep").exists() {
        return Ok(modules.to_owned());
    }
    // `<base>/lib/modules/<release>`: depmod -b takes the base.
    let base = modules
        .ancestors()
        .nth(3)
        .context("module directory too shallow")?;
    let depmod = ["/usr/sbin/depmod", "/sbin/depmod"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("depmod");
    let mut cmd = Command::new(depmod);
    cmd.arg("-b").arg(base).arg(release);
    status(
        cmd,
        "depmod (Debian package kmod, installed by `cargo xtask setup`)",
    )?;
    Ok(modules.to_owned())
}

/// A module file to load in the guest.
#[derive(Debug)]
pub(crate) struct Module {
    /// Its name (`9pnet_virtio`).
    pub(crate) name: String,
    /// The file, possibly compressed (`.ko.xz`, `.ko.zst`, `.ko.gz`).
    pub(crate) file: PathBuf,
}

/// The modules to load for `wanted`, each after the modules it depends on, each once, as
/// `modules.dep` says. A module the kernel has built in (`modules.builtin`) needs nothing.
pub(crate) fn load_order(modules: &Path, wanted: &[&str]) -> anyhow::Result<Vec<Module>> {
    let dep_text = std::fs::read_to_string(modules.join("modules.dep"))
        .with_context(|| format!("reading {}/modules.dep", modules.display()))?;
    let builtin = std::fs::read_to_string(modules.join("modules.builtin")).unwrap_or_default();
    let deps: BTreeMap<String, (String, Vec<String>)> = dep_text
        .lines()
        .filter_map(|l| {
            let (file, rest) = l.split_once(':')?;
            let needs = rest.split_whitespace().map(module_name).collect();
            Some((module_name(file), (file.to_owned(), needs)))
        })
        .collect();
    let builtin: Vec<String> = builtin.lines().map(module_name).collect();
    let mut order = Vec::new();
    for name in wanted {
        let name = module_name(name);
        if !deps.contains_key(&name) && builtin.contains(&name) {
            continue;
        }
        visit(&name, &deps, modules, &mut order, 0)?;
    }
    Ok(order)
}

fn visit(
    name: &str,
    deps: &BTreeMap<String, (String, Vec<String>)>,
    modules: &Path,
    order: &mut Vec<Module>,
    depth: usize,
) -> anyhow::Result<()> {
    if order.iter().any(|m| m.name == name) {
        return Ok(());
    }
    if depth > 32 {
        bail!("module dependencies of {name} loop");
    }
    let (file, needs) = deps
        .get(name)
        .with_context(|| format!("module {name} is neither in modules.dep nor built in"))?;
    for n in needs {
        visit(n, deps, modules, order, depth + 1)?;
    }
    order.push(Module {
        name: name.to_owned(),
        file: modules.join(file),
    });
    Ok(())
}

/// `kernel/net/9p/9pnet-virtio.ko.xz` -> `9pnet_virtio`: the kernel treats `-` and `_` in
/// module names alike.
fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let stem = base.split(".ko").next().unwrap_or(base);
    stem.replace('-', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_numerically() {
        assert!(version_key("6.1.0-57") > version_key("6.1.0-9"));
        assert!(version_key("6.12.117+deb12") > version_key("6.12.107+deb12"));
        assert_eq!(parse_version("6.12"), Some((6, 12)));
        assert_eq!(parse_version("6.x"), None);
    }

    #[test]
    fn module_names_drop_path_suffix_and_dashes() {
        assert_eq!(
            module_name("kernel/net/9p/9pnet_virtio.ko.xz"),
            "9pnet_virtio"
        );
        assert_eq!(module_name("kernel/drivers/net/veth.ko"), "veth");
        assert_eq!(module_name("nf-tables"), "nf_tables");
    }

    #[test]
    fn dependencies_load_first_and_once() {
        let dir = std::env::temp_dir().join(format!("xtask-vm-deps-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("modules.dep"),
            "kernel/a.ko: kernel/b.ko kernel/c.ko\nkernel/b.ko: kernel/c.ko\nkernel/c.ko:\n",
        )
        .unwrap();
        std::fs::write(dir.join("modules.builtin"), "kernel/d.ko\n").unwrap();
        let order = load_order(&dir, &["a", "c", "d"]).unwrap();
        let names: Vec<&str> = order.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["c", "b", "a"]);
        assert!(load_order(&dir, &["e"]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
