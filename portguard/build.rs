//! Builds `portguard-ebpf` for the BPF target and embeds the object (aya-build).
//!
//! Toolchain choice, automatic: a nightly with `rust-src` (a developer laptop) is used as is; else
//! the Debian toolchain that `cargo xtask setup` links into rustup as `portguard-bpf` (rustc with
//! `rust-web-src`, made to accept `-Z build-std` with `RUSTC_BOOTSTRAP=1`). With neither, the build
//! stops with one error that names the command that fixes it.

use std::{path::Path, process::Command};

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

/// The rustup name `cargo xtask setup` gives the Debian toolchain.
const LINKED_TOOLCHAIN: &str = "portguard-bpf";

fn has_rust_src(toolchain: &str) -> bool {
    let Ok(out) = Command::new("rustup")
        .args(["run", toolchain, "rustc", "--print", "sysroot"])
        .output()
    else {
        return false;
    };
    if !out.status.success() {
        return false;
    }
    let sysroot = String::from_utf8_lossy(&out.stdout);
    Path::new(sysroot.trim())
        .join("lib/rustlib/src/rust/library/core")
        .is_dir()
}

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=PORTGUARD_BPF_TOOLCHAIN");
    let chosen = std::env::var("PORTGUARD_BPF_TOOLCHAIN").ok();
    let toolchain = match chosen.as_deref() {
        Some(name) => name.to_owned(),
        None if has_rust_src("nightly") => "nightly".to_owned(),
        None if has_rust_src(LINKED_TOOLCHAIN) => LINKED_TOOLCHAIN.to_owned(),
        None => {
            return Err(anyhow!(
                "no toolchain can build the eBPF program: need a nightly with rust-src, or the Debian \
                 toolchain linked as `{LINKED_TOOLCHAIN}`; run `cargo xtask setup`"
            ));
        }
    };
    if which_bpf_linker().is_none() {
        return Err(anyhow!(
            "bpf-linker is not on PATH; run `cargo xtask setup`"
        ));
    }
    if toolchain != "nightly" {
        // The Debian compiler is a stable release: allow the -Z build-std that aya-build passes.
        // SAFETY: build scripts are single-threaded at this point.
        unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
    }
    let meta = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let pkg = meta
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == "portguard-ebpf")
        .ok_or_else(|| anyhow!("portguard-ebpf package not found"))?;
    let root = pkg
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("manifest has no parent"))?;
    // The program compiles portguard-common's classifier into itself: a change there must
    // rebuild the object too (aya-build only watches the eBPF crate's own directory).
    if let Some(workspace) = root.parent() {
        println!(
            "cargo:rerun-if-changed={}",
            workspace.join("portguard-common").as_str()
        );
    }
    aya_build::build_ebpf(
        [Package {
            name: "portguard-ebpf",
            root_dir: root.as_str(),
            ..Default::default()
        }],
        Toolchain::Custom(&toolchain),
    )
}

fn which_bpf_linker() -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join("bpf-linker"))
        .find(|p| p.is_file())
}
