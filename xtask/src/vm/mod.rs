//! `cargo xtask test --kernel <version|path>`: portguard's packet-level and attach-level tests
//! on another kernel, in a QEMU VM (issue #16 part 4), including the bond and VLAN tests this
//! machine's kernel cannot run (issue #17 part 8).
//!
//! How a run goes, and why this way:
//! - **Kernel.** A version (`6.1`, `6.12`) is Debian's newest generic `linux-image-*-amd64-
//!   unsigned` package of it, fetched with `apt-get download` into `target/vm/kernels/` and
//!   unpacked with `dpkg-deb -x`, once. A path is a bzImage, or an unpacked package tree. A
//!   package has no `modules.dep` (its postinst writes it), so `depmod -b` writes one.
//! - **Guest root: the host's `/`, read-only over virtio-9p**, chrooted into after tmpfs is
//!   mounted over `/tmp`, `/var/tmp`, `/run`, `/root` and fresh proc, sysfs, devtmpfs and bpffs
//!   over theirs. `policies/`, the shared libraries and every tool a test runs (`ip`,
//!   `ethtool`, `ping`, `tcpdump`, `nft`) are then exactly the host's, at the same paths, with
//!   no list to keep in step as tests change; and read-only means nothing in the guest can
//!   change the host. Copying binaries and libraries into the initramfs would work too, but
//!   every new tool would need a new line. The test binaries and the `portguard-cli` beside
//!   them are built on the host (`cargo test --no-run`) and copied to
//!   `target/vm/<release>/bin/` first, so a build on the host during a long run cannot
//!   rewrite them under the guest.
//! - **Init:** Debian's static busybox and a shell script (`guest.rs`) in an initramfs packed
//!   with `cpio -H newc`. It loads the modules the tests need from the kernel's own tree, in
//!   `modules.dep` order ([`MODULES`]), mounts, runs each suite, and reboots, which ends QEMU
//!   (`-no-reboot`).
//! - **Results** come back over the serial console as marker lines (`@@pg-vm begin|end|done`)
//!   around the test harness's own output (`console.rs`). The run fails if a test fails, a
//!   suite does not finish, the kernel panics (`panic=-1` reboots, which ends QEMU at once) or
//!   the time limit passes. Every console line is also kept in
//!   `target/vm/<release>/console.log`, the summary in `summary.md` beside it.
//! - **TCG, not KVM:** on this project's machines `/dev/kvm` exists but a KVM guest hangs at
//!   boot, so QEMU emulates the CPU (`-accel tcg -cpu max`). That makes the BPF verifier, which
//!   is CPU-bound, 10 to 50 times slower than on the host; see `docs/kernels.md`.
//!
//! aya runs its integration tests on other kernels the same way (`cargo xtask integration-test
//! vm`, an init of its own in Rust and everything copied into the initramfs); this runner was
//! written after reading it.

mod console;
mod guest;
mod kernel;

use std::{
    fmt::Write as _,
    io::BufRead as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};

use self::{
    console::VmResult,
    guest::{GuestRun, ROOT_TAG},
    kernel::Kernel,
};

/// How deep a suite tests, for `--only packet-level|attach-level`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Level {
    /// Frames through `BPF_PROG_TEST_RUN`: the program and the verifier, no device.
    Packet,
    /// The program attached to veth devices in network namespaces, real traffic.
    Attach,
}

/// One module of the integration test binary, run as its own binary in the guest.
#[derive(Debug)]
struct Suite {
    /// Name in `--only` and the summary.
    name: &'static str,
    /// How deep it tests.
    level: Level,
    /// Cargo target name of the test binary.
    binary: &'static str,
    /// Test-name filter for the binary (a module path once the tests are one binary).
    filter: Option<&'static str>,
    /// Also run its `#[ignore]` tests: the ones that need a kernel this machine lacks.
    include_ignored: bool,
}

/// What runs in the VM, in this order: modules of the one `integration` test binary.
const SUITES: &[Suite] = &[
    Suite {
        name: "datapath",
        level: Level::Packet,
        binary: "integration",
        filter: Some("datapath::"),
        include_ignored: false,
    },
    Suite {
        name: "differential",
        level: Level::Packet,
        binary: "integration",
        filter: Some("differential::"),
        include_ignored: false,
    },
    Suite {
        name: "hostile",
        level: Level::Packet,
        binary: "integration",
        filter: Some("hostile::"),
        include_ignored: false,
    },
    Suite {
        name: "attach",
        level: Level::Attach,
        binary: "integration",
        filter: Some("attach::"),
        include_ignored: false,
    },
    Suite {
        name: "host_safety",
        level: Level::Attach,
        binary: "integration",
        filter: Some("host_safety::"),
        include_ignored: false,
    },
    Suite {
        name: "daemon",
        level: Level::Attach,
        binary: "integration",
        filter: Some("daemon::"),
        include_ignored: false,
    },
    Suite {
        name: "bonds",
        level: Level::Attach,
        binary: "integration",
        filter: Some("bonds::"),
        include_ignored: true,
    },
];

/// Kernel modules the guest loads (with what they depend on): virtio-9p for the host's root,
/// then the devices and qdiscs the tests create. Built-in ones are skipped.
const MODULES: &[&str] = &[
    "virtio_pci",
    "9pnet_virtio",
    "9p",
    "veth",
    "bridge",
    "8021q",
    "bonding",
    // clsact and direct-action tc programs, where tcx (6.6) is missing.
    "sch_ingress",
    "cls_bpf",
];

/// Guest memory: enough for two test threads each loading the program and a daemon.
const MEMORY: &str = "2G";

/// What `cargo xtask test --kernel` was asked for.
#[derive(Debug)]
pub(crate) struct Options {
    /// Kernels, each a version or a path.
    pub(crate) kernels: Vec<String>,
    /// Suites or levels (`packet-level`, `attach-level`) to run; empty: all.
    pub(crate) only: Vec<String>,
    /// Time limit of one VM.
    pub(crate) limit: Duration,
    /// Virtual CPUs, and test threads per binary.
    pub(crate) cpus: u32,
    /// Extra arguments for every test binary (filters, `--exact`, ...).
    pub(crate) args: Vec<String>,
}

/// Run the selected suites on each kernel; an error if anything failed on any of them.
pub(crate) fn test(opts: &Options) -> anyhow::Result<()> {
    let suites = select(&opts.only)?;
    let out = target_dir().join("vm");
    let out = std::path::absolute(&out).unwrap_or(out);
    if let Some(hidden) = guest::HIDDEN.iter().find(|h| out.starts_with(h)) {
        bail!(
            "{} is under {hidden}, which the guest covers with a tmpfs: move the checkout (or \
             CARGO_TARGET_DIR) elsewhere",
            out.display()
        );
    }
    let kernels: Vec<Kernel> = opts
        .kernels
        .iter()
        .map(|k| kernel::resolve(k, &out.join("kernels")))
        .collect::<anyhow::Result<_>>()?;
    let built = build_tests()?;
    let mut failed = Vec::new();
    let mut summaries = String::new();
    for k in &kernels {
        let dir = out.join(&k.release);
        let exes = snapshot(&built, &suites, &dir.join("bin"))?;
        let runs = guest_runs(&suites, &exes, opts);
        let modules = if let Some(m) = &k.modules {
            kernel::load_order(m, MODULES)?
        } else {
            eprintln!(
                "xtask: {} has no module tree beside it: 9p, veth, bridge, 8021q and bonding \
                 must be built in",
                k.vmlinuz.display()
            );
            Vec::new()
        };
        let initrd = guest::build(&dir, &modules, &runs)?;
        eprintln!(
            "xtask: booting Linux {} ({}) under TCG, {} vCPUs, limit {} min",
            k.release,
            k.origin,
            opts.cpus,
            opts.limit.as_secs() / 60
        );
        let result = console::run(
            qemu(k, &initrd, opts.cpus),
            opts.limit,
            &dir.join("console.log"),
        )?;
        let summary = summarize(k, &result, &suites, opts);
        std::fs::write(dir.join("summary.md"), &summary).context("writing summary.md")?;
        summaries.push_str(&summary);
        if !result.ok() {
            failed.push(k.release.clone());
        }
    }
    println!("\n{summaries}");
    if !failed.is_empty() {
        bail!("tests failed on {}", failed.join(", "));
    }
    Ok(())
}

/// The suites `--only` names (suite names or `packet-level` / `attach-level`), in [`SUITES`]
/// order.
fn select(only: &[String]) -> anyhow::Result<Vec<&'static Suite>> {
    for o in only {
        let known = matches!(o.as_str(), "packet-level" | "attach-level")
            || SUITES.iter().any(|s| s.name == o);
        if !known {
            let names: Vec<&str> = SUITES.iter().map(|s| s.name).collect();
            bail!(
                "--only {o}: not a suite ({}) nor a level (packet-level, attach-level)",
                names.join(", ")
            );
        }
    }
    Ok(SUITES
        .iter()
        .filter(|s| {
            only.is_empty()
                || only.iter().any(|o| {
                    o == s.name
                        || (o == "packet-level" && s.level == Level::Packet)
                        || (o == "attach-level" && s.level == Level::Attach)
                })
        })
        .collect())
}

/// Cargo's target directory: `CARGO_TARGET_DIR`, else `target/` in the workspace.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || {
            let xtask = Path::new(env!("CARGO_MANIFEST_DIR"));
            xtask.parent().unwrap_or(xtask).join("target")
        },
        PathBuf::from,
    )
}

/// A binary cargo built: target name, executable, crate directory.
#[derive(Debug)]
struct Built {
    name: String,
    exe: PathBuf,
    dir: PathBuf,
}

/// What cargo built for the VM: the test binaries, and the CLI the daemon tests run.
#[derive(Debug)]
struct Binaries {
    tests: Vec<Built>,
    cli: Option<PathBuf>,
}

/// Build the integration tests (and the CLI beside them) on the host, as `cargo test` would,
/// and list the executables from cargo's JSON messages.
fn build_tests() -> anyhow::Result<Binaries> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut child = Command::new(cargo)
        .args([
            "test",
            "-p",
            "integration-tests",
            "--no-run",
            "--message-format=json-render-diagnostics",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .context("starting cargo test --no-run")?;
    let stdout = child.stdout.take().context("cargo stdout")?;
    let mut built = Binaries {
        tests: Vec::new(),
        cli: None,
    };
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.context("reading cargo's output")?;
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let kind = |k: &str| {
            msg["target"]["kind"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|x| x == k))
        };
        let (Some(exe), Some(name), Some(manifest)) = (
            msg["executable"].as_str(),
            msg["target"]["name"].as_str(),
            msg["manifest_path"].as_str(),
        ) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        if msg["profile"]["test"] == true && kind("test") {
            built.tests.push(Built {
                name: name.to_owned(),
                exe: exe.into(),
                dir: Path::new(manifest)
                    .parent()
                    .context("manifest dir")?
                    .to_owned(),
            });
        } else if msg["profile"]["test"] == false && kind("bin") && name == CLI {
            built.cli = Some(exe.into());
        }
    }
    let st = child.wait().context("waiting for cargo")?;
    if !st.success() {
        bail!("building the integration tests failed ({st})");
    }
    Ok(built)
}

/// The CLI binary the daemon tests look for beside the test executable.
const CLI: &str = "portguard-cli";

/// Copy the binaries a run needs into `dir`: the guest reads them from the host while it
/// runs, for many minutes, and a build on the host in the meantime rewrites `target/` in
/// place. The CLI goes beside the test binaries, where `tests/src/daemon.rs` looks for it.
fn snapshot(built: &Binaries, suites: &[&Suite], dir: &Path) -> anyhow::Result<Vec<Built>> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let copy = |from: &Path| -> anyhow::Result<PathBuf> {
        let to = dir.join(from.file_name().context("file name")?);
        if !to.exists() {
            std::fs::copy(from, &to)
                .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        }
        Ok(to)
    };
    if let Some(cli) = &built.cli {
        copy(cli)?;
    }
    let mut copies = Vec::new();
    for s in suites {
        let t = built
            .tests
            .iter()
            .find(|e| e.name == s.binary)
            .with_context(|| {
                format!(
                    "cargo built no test binary named {} (tests/tests/{0}.rs)",
                    s.binary
                )
            })?;
        copies.push(Built {
            name: t.name.clone(),
            exe: copy(&t.exe)?,
            dir: t.dir.clone(),
        });
    }
    Ok(copies)
}

/// The command line of each suite in the guest.
fn guest_runs(suites: &[&Suite], exes: &[Built], opts: &Options) -> Vec<GuestRun> {
    suites
        .iter()
        .filter_map(|s| {
            let t = exes.iter().find(|e| e.name == s.binary)?;
            let mut argv = vec![
                t.exe.display().to_string(),
                format!("--test-threads={}", opts.cpus),
            ];
            if s.include_ignored {
                argv.push("--include-ignored".to_owned());
            }
            argv.extend(s.filter.map(str::to_owned));
            argv.extend(opts.args.iter().cloned());
            Some(GuestRun {
                name: s.name.to_owned(),
                dir: t.dir.clone(),
                argv,
            })
        })
        .collect()
}

/// The VM: TCG (KVM hangs on these machines), serial console on standard output, no network
/// card (the tests make their own devices), the host's root as a read-only 9p share.
fn qemu(k: &Kernel, initrd: &Path, cpus: u32) -> Command {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-accel", "tcg", "-cpu", "max", "-m", MEMORY])
        .args(["-smp", &cpus.to_string()])
        .args(["-nographic", "-no-reboot", "-nic", "none"]);
    // qboot starts a -kernel boot in milliseconds where SeaBIOS takes seconds and draws escape
    // sequences on the console.
    let qboot = Path::new("/usr/share/qemu/qboot.rom");
    if qboot.exists() {
        cmd.arg("-bios").arg(qboot);
    }
    cmd.arg("-kernel")
        .arg(&k.vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 panic=-1 quiet"])
        .arg("-virtfs")
        .arg(format!(
            "local,path=/,mount_tag={ROOT_TAG},security_model=none,readonly=on,multidevs=remap"
        ));
    cmd
}

/// The per-kernel summary, as markdown (printed, and kept in `summary.md`).
fn summarize(kernel: &Kernel, run: &VmResult, suites: &[&Suite], opts: &Options) -> String {
    let mut out = String::new();
    let verdict = if run.ok() { "PASSED" } else { "FAILED" };
    let _ = writeln!(
        out,
        "## Linux {} ({}): {verdict}\n",
        run.release.as_deref().unwrap_or(&kernel.release),
        kernel.origin
    );
    let _ = writeln!(
        out,
        "QEMU TCG, {} vCPUs, {MEMORY}; boot to first test {}, whole run {}.\n",
        opts.cpus,
        run.boot.map_or_else(|| "-".to_owned(), mins),
        mins(run.total)
    );
    let _ = writeln!(
        out,
        "| suite | level | result | passed | failed | ignored | time |\n\
         |---|---|---|---|---|---|---|"
    );
    let mut packet = Duration::ZERO;
    for suite in suites {
        let row = match run.suites.iter().find(|r| r.name == suite.name) {
            Some(done) => {
                if suite.level == Level::Packet {
                    packet += done.time;
                }
                let result = match (done.ok(), done.exit) {
                    (true, _) => "ok".to_owned(),
                    (false, Some(code)) => format!("FAILED (exit {code})"),
                    (false, None) => "did not finish".to_owned(),
                };
                format!(
                    "{result} | {} | {} | {} | {}",
                    done.passed,
                    done.failed.len(),
                    done.ignored,
                    mins(done.time)
                )
            }
            None => "not run | - | - | - | -".to_owned(),
        };
        let _ = writeln!(out, "| {} | {:?} | {row} |", suite.name, suite.level);
    }
    if suites.iter().any(|suite| suite.level == Level::Packet) {
        let _ = writeln!(out, "\nPacket-level suites together: {}.", mins(packet));
    }
    for done in run.suites.iter().filter(|r| !r.failed.is_empty()) {
        let _ = writeln!(out, "\nFailed in {}:", done.name);
        for name in &done.failed {
            let _ = writeln!(out, "- `{name}`");
        }
    }
    let notes = [
        run.timed_out
            .then(|| format!("the time limit ({}) ended the run", mins(opts.limit))),
        run.panicked.then(|| "the kernel panicked".to_owned()),
        run.fatal
            .as_ref()
            .map(|why| format!("the init gave up: {why}")),
        (!run.done && !run.timed_out && !run.panicked)
            .then(|| "the VM ended before the init said it was done".to_owned()),
        (!run.module_failures.is_empty()).then(|| {
            format!(
                "modules that did not load: {}",
                run.module_failures.join(", ")
            )
        }),
    ];
    for note in notes.into_iter().flatten() {
        let _ = writeln!(out, "\n**{note}**");
    }
    if !run.kernel_trouble.is_empty() {
        let _ = writeln!(out, "\nKernel messages:\n```");
        for line in &run.kernel_trouble {
            let _ = writeln!(out, "{line}");
        }
        let _ = writeln!(out, "```");
    }
    out.push('\n');
    out
}

/// `12m05s` style.
fn mins(d: Duration) -> String {
    let secs = d.as_secs();
    format!("{}m{:02}s", secs / 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_selects_by_name_and_level() {
        let names = |o: &[&str]| -> Vec<&str> {
            let o: Vec<String> = o.iter().map(ToString::to_string).collect();
            select(&o).unwrap().iter().map(|s| s.name).collect()
        };
        assert_eq!(
            names(&["packet-level"]),
            ["datapath", "differential", "hostile"]
        );
        assert_eq!(names(&["attach"]), ["attach"]);
        assert_eq!(names(&["bonds", "datapath"]), ["datapath", "bonds"]);
        assert_eq!(names(&[]).len(), SUITES.len());
        assert!(select(&["nope".to_owned()]).is_err());
    }
}
