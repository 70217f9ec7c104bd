//! `cargo xtask install`: the binary, the systemd unit, the policies, completions and the man
//! page, under a prefix (and an optional staging root for packagers).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context as _;

use crate::run;

/// Install into `destdir` + `prefix` (e.g. `--prefix /usr`, or `--destdir pkgroot` to stage).
pub(crate) fn install(prefix: &Path, destdir: Option<&Path>) -> anyhow::Result<()> {
    run::cargo(&["build", "--release", "-p", "portguard"])?;
    let root = |p: &Path| -> PathBuf {
        match destdir {
            Some(d) => d.join(p.strip_prefix("/").unwrap_or(p)),
            None => p.to_owned(),
        }
    };
    let bin_dir = prefix.join("bin");
    let share = prefix.join("share");
    let data = share.join("portguard");
    let binary = bin_dir.join("portguard");

    let built = workspace().join("target/release/portguard");
    copy(&built, &root(&binary), 0o755)?;

    // The unit names the installed binary and policies, whatever the prefix.
    let unit = std::fs::read_to_string(workspace().join("packaging/portguard.service"))?
        .replace(
            "/usr/bin/portguard run --site /etc/portguard/site.toml",
            &format!(
                "{} run --site /etc/portguard/site.toml --policies {}",
                binary.display(),
                data.join("policies").display()
            ),
        )
        .replace("/usr/bin/portguard", &binary.display().to_string());
    let unit_dir = if prefix == Path::new("/usr") {
        PathBuf::from("/usr/lib/systemd/system")
    } else {
        prefix.join("lib/systemd/system")
    };
    write(
        &root(&unit_dir.join("portguard.service")),
        unit.as_bytes(),
        0o644,
    )?;

    for sub in ["", "examples"] {
        let from = workspace().join("policies").join(sub);
        let to = if sub.is_empty() {
            data.join("policies")
        } else {
            data.join("examples")
        };
        for entry in std::fs::read_dir(&from).with_context(|| format!("{}", from.display()))? {
            let path = entry?.path();
            if path.is_file() {
                let name = path.file_name().expect("file name");
                copy(&path, &root(&to.join(name)), 0o644)?;
            }
        }
    }
    std::fs::create_dir_all(root(Path::new("/etc/portguard")))?;

    let generate = |args: &[&str]| -> anyhow::Result<Vec<u8>> {
        let out = Command::new(&built).args(args).output()?;
        anyhow::ensure!(out.status.success(), "portguard {}", args.join(" "));
        Ok(out.stdout)
    };
    for (shell, path) in [
        ("bash", share.join("bash-completion/completions/portguard")),
        ("zsh", share.join("zsh/site-functions/_portguard")),
        (
            "fish",
            share.join("fish/vendor_completions.d/portguard.fish"),
        ),
    ] {
        write(&root(&path), &generate(&["completions", shell])?, 0o644)?;
    }
    write(
        &root(&share.join("man/man8/portguard.8")),
        &generate(&["man"])?,
        0o644,
    )?;
    println!(
        "installed portguard under {}{}; next: write /etc/portguard/site.toml (examples in {}), \
         then `systemctl daemon-reload && systemctl enable --now portguard`",
        destdir
            .map(|d| format!("{}/", d.display()))
            .unwrap_or_default(),
        prefix.display(),
        data.join("examples").display()
    );
    Ok(())
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

fn copy(from: &Path, to: &Path, mode: u32) -> anyhow::Result<()> {
    let bytes = std::fs::read(from).with_context(|| format!("reading {}", from.display()))?;
    write(to, &bytes, mode)
}

fn write(to: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(to, bytes).with_context(|| format!("writing {}", to.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", to.display()))
}
