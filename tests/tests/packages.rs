//! The release binary and the packages `cargo xtask package` builds (`cargo xtask test
//! --packages` builds them, then runs these; the default run leaves them out): the binary's
//! glibc floor, the `.rpm`'s files, scripts
//! and requirements, and the `.deb` installed for real on this machine, used, and purged.
//!
//! The `.deb` test installs into this machine's /usr and /etc. It refuses to run where a
//! portguard package is installed or portguard enforces with its default pins (it would remove
//! them), moves an existing /etc/portguard aside and puts it back, and purges the package when
//! it ends, whether it passed or not. `cargo xtask install` uses /usr/local: no clash.

use std::{
    collections::BTreeSet,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use integration_tests::{net::Pair, unique};

/// EL8's glibc: the newest symbol version the release binary and the packages may ask for.
const GLIBC_FLOOR: (u32, u32) = (2, 28);

fn dist() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release-dist")
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The one package with this extension in target/release-dist.
fn package(ext: &str) -> PathBuf {
    let found: Vec<PathBuf> = std::fs::read_dir(dist())
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == ext))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        found.len(),
        1,
        "expected one .{ext} in {}: run `cargo xtask package` (`cargo xtask test` does)",
        dist().display()
    );
    found.into_iter().next().expect("one")
}

/// Run a command, panicking with its output unless it succeeds; its standard output.
fn run(cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every `GLIBC_x.y` in `text`.
fn glibc_versions(text: &str) -> Vec<(u32, u32)> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .filter_map(|w| w.strip_prefix("GLIBC_"))
        .filter_map(|v| {
            let mut parts = v.split('.');
            Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
        })
        .collect()
}

/// What both packages must install (beyond the product files and examples, checked apart).
const COMMON_FILES: &[&str] = &[
    "/usr/bin/portguard",
    "/usr/lib/systemd/system/portguard.service",
    "/etc/portguard/site.toml",
    "/usr/share/man/man8/portguard.8.gz",
    "/usr/share/bash-completion/completions/portguard",
    "/usr/share/fish/vendor_completions.d/portguard.fish",
    "/usr/share/doc/portguard/CHANGELOG.md",
];

/// Product files and examples in the tree, as the packages must install them.
fn policy_files() -> Vec<String> {
    let mut files = Vec::new();
    for (from, to) in [
        ("policies", "/usr/share/portguard/policies"),
        ("policies/examples", "/usr/share/portguard/examples"),
    ] {
        for e in std::fs::read_dir(workspace().join(from)).expect("policies") {
            let p = e.expect("entry").path();
            if p.extension().is_some_and(|x| x == "toml") {
                let name = p.file_name().expect("name").to_string_lossy().into_owned();
                files.push(format!("{to}/{name}"));
            }
        }
    }
    assert!(files.len() > 10, "product files and examples: {files:?}");
    files
}

/// Maintainer scripts may reload systemd, stop, disable or restart a running service; they
/// never enable or start one: installing a package never starts enforcing.
fn assert_scripts_never_start(scripts: &str) {
    for line in scripts.lines().filter(|l| !l.trim_start().starts_with('#')) {
        for (at, word) in line.match_indices("systemctl ") {
            if line[..at].ends_with("command -v ") {
                continue;
            }
            let verb = line[at + word.len()..]
                .split_whitespace()
                .next()
                .unwrap_or_default();
            assert!(
                ["daemon-reload", "stop", "disable", "try-restart"].contains(&verb),
                "a maintainer script runs `systemctl {verb}`: {line}"
            );
        }
    }
    assert!(
        scripts.contains("portguard detach"),
        "removal must detach:\n{scripts}"
    );
}

#[test]
#[ignore = "needs the packages: cargo xtask test --packages"]
fn release_binary_needs_glibc_2_28_at_most_and_embeds_the_program() {
    let bin = dist().join("portguard");
    assert!(
        bin.is_file(),
        "{} missing: run `cargo xtask release`",
        bin.display()
    );
    let out = Command::new("objdump")
        .arg("-T")
        .arg(&bin)
        .output()
        .expect("objdump (binutils)");
    let text = String::from_utf8_lossy(&out.stdout);
    if out.status.success() {
        let versions = glibc_versions(&text);
        let newest = versions.iter().max().copied();
        assert!(
            newest.is_some(),
            "a dynamic binary with no glibc symbols?\n{text}"
        );
        assert!(
            newest <= Some(GLIBC_FLOOR),
            "{} needs GLIBC_{:?}, above {GLIBC_FLOOR:?}:\n{}",
            bin.display(),
            newest,
            text.lines()
                .filter(|l| glibc_versions(l).iter().any(|v| *v > GLIBC_FLOOR))
                .collect::<Vec<_>>()
                .join("\n")
        );
    } else {
        // The other acceptable answer: a static binary.
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("not a dynamic object"),
            "objdump -T: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Only glibc's own libraries: the packages' glibc dependency is the whole of it.
    let dynamic = run(Command::new("objdump").arg("-p").arg(&bin));
    for lib in dynamic
        .lines()
        .filter_map(|l| l.trim().strip_prefix("NEEDED"))
        .map(str::trim)
    {
        assert!(
            [
                "libc.so.6",
                "libm.so.6",
                "libpthread.so.0",
                "libdl.so.2",
                "librt.so.1",
                "ld-linux-x86-64.so.2"
            ]
            .contains(&lib),
            "the release binary links {lib}, which is not part of glibc"
        );
    }
    // The XDP object is embedded: an ELF for EM_BPF (247) with the program's section inside.
    let bytes = std::fs::read(&bin).expect("read binary");
    let bpf_elf = bytes.windows(20).position(|w| {
        w.starts_with(b"\x7fELF\x02\x01") && u16::from_le_bytes([w[18], w[19]]) == 247
    });
    let at = bpf_elf.expect("no BPF ELF object embedded in the release binary");
    let rest = &bytes[at..];
    assert!(
        rest.windows(b"xdp.frags".len()).any(|w| w == b"xdp.frags"),
        "the embedded object has no xdp.frags program"
    );
    let version = run(Command::new(&bin).arg("--version"));
    assert!(version.starts_with("portguard "), "{version}");
}

#[test]
#[ignore = "needs the packages: cargo xtask test --packages"]
fn rpm_lists_its_files_config_scripts_and_requires_no_glibc_above_2_28() {
    let rpm = package("rpm");
    let files: BTreeSet<String> = run(Command::new("rpm").arg("-qlp").arg(&rpm))
        .lines()
        .map(str::to_owned)
        .collect();
    let mut wanted: Vec<String> = COMMON_FILES.iter().map(|s| (*s).to_owned()).collect();
    wanted.extend(policy_files());
    wanted.extend(
        [
            "/usr/share/zsh/site-functions/_portguard",
            "/usr/share/licenses/portguard/LICENSE-MIT",
            "/usr/share/licenses/portguard/LICENSE-APACHE",
        ]
        .map(str::to_owned),
    );
    for w in &wanted {
        assert!(files.contains(w), "{w} not in the rpm: {files:#?}");
    }
    // The site file is a config file that an upgrade leaves alone when edited.
    let flags = run(Command::new("rpm")
        .args(["-qp", "--qf", "[%{FILENAMES} %{FILEFLAGS:fflags}\\n]"])
        .arg(&rpm));
    let site = flags
        .lines()
        .find(|l| l.starts_with("/etc/portguard/site.toml "))
        .expect("site.toml flags");
    assert!(
        site.split_whitespace()
            .nth(1)
            .is_some_and(|f| f.contains('c') && f.contains('n')),
        "site.toml must be %config(noreplace): {site}"
    );
    let requires = run(Command::new("rpm").args(["-qp", "--requires"]).arg(&rpm));
    assert!(
        requires.lines().any(|l| l.starts_with("libc.so.6")),
        "no libc requirement found (auto-req did not run?):\n{requires}"
    );
    let newest = glibc_versions(&requires).into_iter().max();
    assert!(
        newest.is_some_and(|v| v <= GLIBC_FLOOR),
        "requires glibc {newest:?}, floor {GLIBC_FLOOR:?}:\n{requires}"
    );
    let scripts = run(Command::new("rpm").args(["-qp", "--scripts"]).arg(&rpm));
    assert!(scripts.contains("preuninstall"), "{scripts}");
    assert_scripts_never_start(&scripts);
}

/// Puts the machine back however the test ends: purges the package (its prerm detaches), and
/// restores an /etc/portguard that was there before.
struct Installed {
    backup: Option<PathBuf>,
}

impl Drop for Installed {
    fn drop(&mut self) {
        if dpkg_installed() {
            let out = Command::new("dpkg")
                .args(["--purge", "portguard"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdin(Stdio::null())
                .output();
            if !out.is_ok_and(|o| o.status.success()) || dpkg_installed() {
                // The scripts failed (that is a test failure already): remove regardless.
                let _ = Command::new("/usr/bin/portguard").arg("detach").output();
                let _ = Command::new("dpkg")
                    .args([
                        "--purge",
                        "--force-remove-reinstreq",
                        "--force-all",
                        "portguard",
                    ])
                    .stdin(Stdio::null())
                    .output();
            }
        }
        if let Some(backup) = self.backup.take() {
            let _ = std::fs::remove_dir_all("/etc/portguard");
            let _ = std::fs::rename(&backup, "/etc/portguard");
        }
    }
}

/// A daemon started from the installed binary; killed (by its pid) if it still runs at the end.
struct RunningDaemon(Child);

impl Drop for RunningDaemon {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn dpkg_installed() -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "portguard"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("ok installed"))
}

/// Paths the package owns or creates, and the ones it must leave nothing in.
fn deb_paths(deb: &Path) -> Vec<PathBuf> {
    let listing = run(Command::new("dpkg-deb").arg("-c").arg(deb));
    let mut paths: Vec<PathBuf> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .map(|p| PathBuf::from(p.trim_start_matches('.').trim_end_matches('/')))
        .filter(|p| p.as_os_str().len() > 1)
        .collect();
    paths.extend(
        [
            "/etc/portguard",
            "/var/lib/portguard",
            "/var/log/portguard",
            "/run/portguard",
            "/sys/fs/bpf/portguard",
            "/etc/systemd/system/multi-user.target.wants/portguard.service",
        ]
        .map(PathBuf::from),
    );
    paths
}

/// The `.deb`'s control data: a libc6 dependency no newer than the floor, the site as a
/// conffile, scripts that never start anything and detach on removal.
fn check_deb_control(deb: &Path) {
    let depends = run(Command::new("dpkg-deb")
        .args(["-f"])
        .arg(deb)
        .arg("Depends"));
    assert!(depends.contains("libc6"), "Depends: {depends}");
    let newest = depends
        .split(',')
        .filter(|d| d.trim().starts_with("libc6"))
        .filter_map(|d| d.split(">=").nth(1))
        .filter_map(|v| {
            let v = v.trim().trim_end_matches(')');
            let mut p = v.split('.');
            Some((
                p.next()?.parse::<u32>().ok()?,
                p.next()?.parse::<u32>().ok()?,
            ))
        })
        .max();
    assert!(
        newest.is_some_and(|v| v <= GLIBC_FLOOR),
        "Depends asks for libc6 {newest:?}: {depends}"
    );
    let ctrl = std::env::temp_dir().join(unique("pg-deb-ctl-"));
    run(Command::new("dpkg-deb").arg("-e").arg(deb).arg(&ctrl));
    let conffiles = std::fs::read_to_string(ctrl.join("conffiles")).unwrap_or_default();
    let scripts: String = ["postinst", "prerm", "postrm"]
        .iter()
        .map(|s| std::fs::read_to_string(ctrl.join(s)).unwrap_or_default())
        .collect();
    let _ = std::fs::remove_dir_all(&ctrl);
    assert!(
        conffiles
            .lines()
            .any(|l| l.trim() == "/etc/portguard/site.toml"),
        "conffiles: {conffiles}"
    );
    assert_scripts_never_start(&scripts);
}

/// What the installed package put where the tools look by default, and that it started nothing.
fn check_installed() {
    let bin = Path::new("/usr/bin/portguard");
    let version = run(Command::new(bin).arg("--version"));
    assert!(version.starts_with("portguard "), "{version}");
    for f in COMMON_FILES
        .iter()
        .copied()
        .chain(["/usr/share/zsh/vendor-completions/_portguard"])
    {
        let len = std::fs::metadata(f).map_or(0, |m| m.len());
        assert!(len > 0, "{f} missing or empty after install");
    }
    for f in policy_files() {
        assert!(Path::new(&f).is_file(), "{f} missing after install");
    }
    let man = run(Command::new("man").args(["-w", "portguard"]));
    assert_eq!(man.trim(), "/usr/share/man/man8/portguard.8.gz");
    let page = run(Command::new("sh").args(["-c", "zcat /usr/share/man/man8/portguard.8.gz"]));
    assert!(
        page.contains(".TH portguard 8"),
        "man page section: {}",
        &page[..200.min(page.len())]
    );
    assert!(page.contains("EXIT STATUS"), "man page without EXIT STATUS");
    let bash = std::fs::read_to_string("/usr/share/bash-completion/completions/portguard")
        .expect("bash completion");
    assert!(
        bash.contains("doctor") && bash.contains("check"),
        "bash completion"
    );
    let unit = std::fs::read_to_string("/usr/lib/systemd/system/portguard.service").expect("unit");
    assert!(unit.contains("Documentation=man:portguard(8)"));
    assert!(unit.contains("ExecStart=/usr/bin/portguard run"));

    // The installed example passes check from the installed paths (defaults: the site in /etc,
    // the product files in /usr/share/portguard/policies).
    let check = Command::new(bin)
        .args(["check", "--strict"])
        .env_remove("PORTGUARD_SITE")
        .env_remove("PORTGUARD_POLICIES")
        .env_remove("SSH_CONNECTION")
        .env_remove("SSH_CLIENT")
        .current_dir("/")
        .output()
        .expect("portguard check");
    assert!(
        check.status.success(),
        "portguard check --strict on the installed example: {}\n{}{}",
        check.status,
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    // Installing started nothing.
    assert!(
        !Path::new("/sys/fs/bpf/portguard").exists(),
        "enforcing after install"
    );
    assert!(
        !Path::new("/etc/systemd/system/multi-user.target.wants/portguard.service").exists(),
        "enabled after install"
    );
}

/// `portguard run` of the installed binary in `pair.b`, on `pair.b_if`, with every default path
/// (site, product files, pins, run directory, audit log), as the unit would start it.
fn start_installed_daemon(pair: &Pair) -> RunningDaemon {
    // By hand here (no systemd as PID 1).
    let netns = format!("/run/netns/{}", pair.b.name);
    let mut cmd = Command::new("/usr/bin/portguard");
    cmd.args(["run", "--iface", &pair.b_if])
        .env_remove("PORTGUARD_PIN_DIR")
        .env_remove("PORTGUARD_RUN_DIR")
        .env_remove("PORTGUARD_SITE")
        .env_remove("PORTGUARD_POLICIES")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // Only the network namespace changes: the daemon sees this machine's bpffs and /run.
    // SAFETY: pre_exec runs in the child between fork and exec; open and setns are
    // async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            let f = std::fs::File::open(&netns)?;
            if libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut daemon = RunningDaemon(cmd.spawn().expect("start the installed portguard run"));
    let link = Path::new("/sys/fs/bpf/portguard/links").join(&pair.b_if);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(link.exists() && Path::new("/run/portguard/state.json").exists()) {
        if let Some(status) = daemon.0.try_wait().expect("wait") {
            let mut err = String::new();
            if let Some(mut e) = daemon.0.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            panic!("installed portguard run exited with {status}:\n{err}");
        }
        assert!(
            Instant::now() < deadline,
            "portguard run not attached after 60 s"
        );
        thread::sleep(Duration::from_millis(100));
    }
    daemon
}

/// Whether an XDP program is attached to `pair.b_if`.
fn xdp_on(pair: &Pair) -> bool {
    let out =
        run(Command::new("ip").args(["-n", &pair.b.name, "-d", "link", "show", "dev", &pair.b_if]));
    out.contains("prog/xdp")
}

#[test]
#[ignore = "needs the packages: cargo xtask test --packages"]
fn deb_installs_checks_runs_and_leaves_nothing_behind_when_purged() {
    let deb = package("deb");
    check_deb_control(&deb);
    // This machine must not hold a portguard the test would replace or detach.
    assert!(
        !dpkg_installed(),
        "a portguard package is installed on this machine: the test installs and purges its \
         own, so remove it first"
    );
    for p in [
        "/usr/bin/portguard",
        "/sys/fs/bpf/portguard",
        "/run/portguard/state.json",
    ] {
        assert!(
            !Path::new(p).exists(),
            "{p} exists: portguard is installed or enforcing here outside a package; the test \
             would remove it"
        );
    }
    let paths = deb_paths(&deb);
    let existed: BTreeSet<PathBuf> = paths.iter().filter(|p| p.exists()).cloned().collect();
    let mut guard = Installed { backup: None };
    if Path::new("/etc/portguard").exists() {
        let backup = PathBuf::from(format!("/etc/portguard.{}", unique("pg-test-")));
        std::fs::rename("/etc/portguard", &backup).expect("move /etc/portguard aside");
        guard.backup = Some(backup);
    }

    run(Command::new("dpkg")
        .arg("-i")
        .arg(&deb)
        .env("DEBIAN_FRONTEND", "noninteractive"));
    assert!(dpkg_installed());

    check_installed();
    let pair = Pair::new(61, 1500);
    let mut daemon = start_installed_daemon(&pair);
    assert!(xdp_on(&pair), "the installed daemon attached nothing");

    // Purge: prerm stops the daemon and detaches, postrm removes /etc/portguard and the logs.
    run(Command::new("dpkg")
        .args(["--purge", "portguard"])
        .env("DEBIAN_FRONTEND", "noninteractive"));
    assert!(!dpkg_installed());
    let deadline = Instant::now() + Duration::from_secs(20);
    while daemon.0.try_wait().expect("wait").is_none() {
        assert!(
            Instant::now() < deadline,
            "the daemon still runs after purge"
        );
        thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !xdp_on(&pair),
        "an XDP program is still attached after purge"
    );
    let left: Vec<&PathBuf> = paths
        .iter()
        .filter(|p| !existed.contains(*p) && p.exists())
        .collect();
    assert!(left.is_empty(), "left behind after purge: {left:#?}");
    drop(daemon);
    drop(guard);
}
