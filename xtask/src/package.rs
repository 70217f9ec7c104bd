//! `cargo xtask release` and `cargo xtask package`: the release binary, and the `.deb` and
//! `.rpm` built around it.
//!
//! The release binary is the one users get: built with cargo-zigbuild, which links through zig
//! against glibc 2.28's symbol versions (EL8; EL9 has 2.34, Debian 12 2.36), so it starts on
//! every host portguard is for. The BPF object is built by portguard/build.rs as in every build
//! and embedded the same way. Everything lands in `target/release-dist/`.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail, ensure};

use crate::{run, setup};

/// Where the release binary, the generated files and the packages go (from the workspace root).
pub(crate) const DIST: &str = "target/release-dist";

/// The oldest glibc the release binary may need: EL8's.
pub(crate) const GLIBC_FLOOR: (u32, u32) = (2, 28);

/// cargo-zigbuild's spelling of "x86-64 Linux, glibc 2.28".
const ZIG_TARGET: &str = "x86_64-unknown-linux-gnu.2.28";
/// Where cargo puts what it builds for that target (the glibc suffix is zig's business).
const TARGET_TRIPLE: &str = "x86_64-unknown-linux-gnu";

/// Build the release binary into `target/release-dist/portguard` and check its glibc floor.
pub(crate) fn release() -> anyhow::Result<PathBuf> {
    setup::packaging()?;
    let zig = setup::zig().context("zig is missing: run `cargo xtask setup`")?;
    let zig = zig.display().to_string();
    run::cargo_env(
        &[
            "zigbuild",
            "--release",
            "--locked",
            "-p",
            "portguard",
            "--bin",
            "portguard",
            "--target",
            ZIG_TARGET,
        ],
        &[("CARGO_ZIGBUILD_ZIG_PATH", &zig)],
    )?;
    let root = setup::workspace();
    let built = root
        .join("target")
        .join(TARGET_TRIPLE)
        .join("release/portguard");
    let dist = root.join(DIST);
    std::fs::create_dir_all(&dist).with_context(|| format!("creating {}", dist.display()))?;
    let bin = dist.join("portguard");
    std::fs::copy(&built, &bin)
        .with_context(|| format!("copying {} to {}", built.display(), bin.display()))?;
    // Symbols only make the packages larger; the embedded BPF object is data and stays.
    let mut strip = Command::new("strip");
    strip.arg(&bin);
    run::status(strip, "strip")?;
    let newest = newest_glibc(&bin)?;
    if let Some(v) = newest {
        ensure!(
            v <= GLIBC_FLOOR,
            "{} needs GLIBC_{}.{}, above the floor {}.{}",
            bin.display(),
            v.0,
            v.1,
            GLIBC_FLOOR.0,
            GLIBC_FLOOR.1
        );
    }
    println!(
        "release binary: {} (newest glibc symbol version: {})",
        bin.display(),
        newest.map_or_else(
            || "none (static)".to_owned(),
            |v| format!("{}.{}", v.0, v.1)
        )
    );
    Ok(bin)
}

/// The release binary, then its man page and completions, then the `.deb` and the `.rpm`.
pub(crate) fn package() -> anyhow::Result<()> {
    let bin = release()?;
    let root = setup::workspace();
    let dist = root.join(DIST);
    let generate = |args: &[&str]| -> anyhow::Result<Vec<u8>> {
        let out = Command::new(&bin)
            .args(args)
            .output()
            .with_context(|| format!("running {}", bin.display()))?;
        ensure!(out.status.success(), "portguard {} failed", args.join(" "));
        Ok(out.stdout)
    };
    let completions = dist.join("completions");
    std::fs::create_dir_all(&completions)?;
    for (shell, name) in [
        ("bash", "portguard"),
        ("zsh", "_portguard"),
        ("fish", "portguard.fish"),
    ] {
        std::fs::write(completions.join(name), generate(&["completions", shell])?)?;
    }
    let man = dist.join("portguard.8");
    std::fs::write(&man, generate(&["man"])?)?;
    // -n: no name or time stamp in the header, so the same page gives the same bytes.
    let mut gzip = Command::new("gzip");
    gzip.args(["-9", "-n", "-f"]).arg(&man);
    run::status(gzip, "gzip")?;

    for old in std::fs::read_dir(&dist)? {
        let path = old?.path();
        if path.extension().is_some_and(|e| e == "deb" || e == "rpm") {
            std::fs::remove_file(&path)?;
        }
    }
    let out = dist.display().to_string();
    // The binary is built and stripped already: cargo-deb only packs (and asks dpkg-shlibdeps
    // for the libc6 version it needs).
    run::cargo(&[
        "deb",
        "-p",
        "portguard",
        "--no-build",
        "--no-strip",
        "-o",
        &out,
    ])?;
    // xz: the payload compression every rpm since EL8's reads.
    run::cargo(&[
        "generate-rpm",
        "-p",
        "portguard",
        "--payload-compress",
        "xz",
        "-o",
        &out,
    ])?;
    for entry in std::fs::read_dir(&dist)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "deb" || e == "rpm") {
            println!("package: {}", path.display());
        }
    }
    Ok(())
}

/// The newest `GLIBC_x.y` version among the dynamic symbols `bin` needs (`objdump -T`); none
/// for a static binary.
pub(crate) fn newest_glibc(bin: &Path) -> anyhow::Result<Option<(u32, u32)>> {
    let out = Command::new("objdump")
        .arg("-T")
        .arg(bin)
        .output()
        .context("running objdump (binutils)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("not a dynamic object") {
            return Ok(None);
        }
        bail!("objdump -T {}: {err}", bin.display());
    }
    Ok(text
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter_map(|w| w.strip_prefix("GLIBC_"))
        .filter_map(|v| {
            let mut parts = v.split('.');
            let major = parts.next()?.parse().ok()?;
            let minor = parts.next().map_or(Some(0), |m| m.parse().ok())?;
            Some((major, minor))
        })
        .max())
}
