//! `cargo xtask`: the project's tasks. Each is a thin sequence of commands, so a newcomer can
//! read what `setup` installs and what `test` runs.

mod bench;
mod fuzz;
mod install;
mod package;
mod run;
mod setup;
mod vm;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "portguard project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Make this machine able to build and test (idempotent; quiet when already set up).
    Setup,
    /// Build the workspace (the eBPF object is built by portguard's build.rs).
    Build,
    /// Setup, then unit tests and the policy tests, then the privileged integration tests
    /// (needs root), then (without a test filter) the packet-level tests on Debian's 6.1 in a
    /// QEMU VM. With --kernel: the packet- and attach-level tests in a VM booting that kernel
    /// instead. With --packages: the packages' tests instead.
    Test {
        /// Instead: build the release binary and the .deb and .rpm (`package`), then run the
        /// tests that inspect and install them (`packages::`). Its own suite: the first run
        /// on a machine compiles the packaging tools and zig's libc, which takes many minutes.
        #[arg(long, conflicts_with = "kernel")]
        packages: bool,
        /// Boot this kernel in a VM and run the tests there: a version (`6.1`, `6.12`: Debian's
        /// newest package of it) or a path (a bzImage, or an unpacked kernel package).
        /// Repeatable.
        #[arg(long, value_name = "VERSION|PATH")]
        kernel: Vec<String>,
        /// With --kernel: only these suites (`datapath`, `differential`, `hostile`, `attach`,
        /// `host_safety`, `daemon`, `bonds`) or levels
        /// (`packet-level`, `attach-level`).
        #[arg(long, value_delimiter = ',', requires = "kernel")]
        only: Vec<String>,
        /// With --kernel: time limit of each VM, in minutes.
        #[arg(long, default_value_t = 150, requires = "kernel")]
        vm_minutes: u64,
        /// With --kernel: virtual CPUs of the VM (also the test threads per binary).
        #[arg(long, default_value_t = 2, requires = "kernel")]
        vm_cpus: u32,
        /// Extra arguments for the integration test binary (e.g. a test name filter such as
        /// `hostile::`).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// rustfmt check and clippy (-D warnings) for host and BPF crates.
    Lint,
    /// Build in release mode and install the binary, unit, policies, completions, man page.
    Install {
        /// Installation prefix.
        #[arg(long, default_value = "/usr/local")]
        prefix: std::path::PathBuf,
        /// Staging root for packages (files go to DESTDIR/PREFIX/...).
        #[arg(long)]
        destdir: Option<std::path::PathBuf>,
    },
    /// Build the release binary (glibc >= 2.28, BPF object embedded) into target/release-dist/.
    Release,
    /// The release binary, then the .deb and .rpm packages, into target/release-dist/.
    Package,
    /// Setup, then the benchmarks (needs root); results go to bench/results/.
    Bench {
        /// Which benchmark.
        #[arg(default_value = "all", value_parser = bench::WHICH)]
        which: String,
    },
    /// Fuzz the policy loader and compiler for a while; failing inputs go to fuzz/failures/.
    Fuzz {
        /// How long to run, in seconds.
        #[arg(long, default_value_t = 120)]
        secs: u64,
        /// Seed of the campaign (default: from the clock; printed either way).
        #[arg(long)]
        seed: Option<u64>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Setup => setup::setup(),
        Task::Build => setup::setup().and_then(|()| run::cargo(&["build", "--workspace"])),
        Task::Test {
            packages: true,
            args,
            ..
        } => package::package().and_then(|()| packages_test(&args)),
        Task::Test {
            kernel,
            only,
            vm_minutes,
            vm_cpus,
            args,
            ..
        } if !kernel.is_empty() => setup::vm().and_then(|()| {
            vm::test(&vm::Options {
                kernels: kernel,
                only,
                limit: std::time::Duration::from_secs(vm_minutes * 60),
                cpus: vm_cpus,
                args,
            })
        }),
        Task::Test { args, .. } => test(&args).and_then(|()| {
            if !args.is_empty() {
                return Ok(());
            }
            // The oldest kernel the project supports, packet level (datapath, differential,
            // hostile: the verifier's verdict and the program's, about 5 minutes under TCG);
            // the attach-level suites and 6.12 have their own command (docs/kernels.md).
            setup::vm().and_then(|()| {
                vm::test(&vm::Options {
                    kernels: vec!["6.1".to_owned()],
                    only: vec!["packet-level".to_owned()],
                    limit: std::time::Duration::from_secs(25 * 60),
                    cpus: 2,
                    args: Vec::new(),
                })
            })
        }),
        Task::Lint => lint(),
        Task::Install { prefix, destdir } => install::install(&prefix, destdir.as_deref()),
        Task::Release => package::release().map(drop),
        Task::Package => package::package(),
        Task::Bench { which } => bench::bench(&which),
        Task::Fuzz { secs, seed } => fuzz::fuzz(secs, seed),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Unit tests of every host crate and portguard's `policy` test binary (no privileges
/// needed), then the one privileged `integration` binary, two tests at a time: they create
/// namespaces and load programs, and the machine has few cores. `args` (a name filter, say)
/// go to the integration binary.
fn test(args: &[String]) -> anyhow::Result<()> {
    setup::setup()?;
    setup::require_root("the integration tests load XDP programs and create network namespaces")?;
    run::cargo(&[
        "test",
        "--workspace",
        "--exclude",
        "integration-tests",
        "--exclude",
        "portguard-ebpf",
        "--lib",
        "--bins",
        "--tests",
    ])?;
    // A daemon a test starts without its own --state-dir must not leave a last good policy in
    // this machine's /var/lib/portguard (nor find one there).
    let scratch = setup::workspace().join("target/test-state");
    integration(&["--test-threads=2"], args, &scratch.display().to_string())
}

/// The tests of the packages `package` built (ignored in the default run, which builds none).
fn packages_test(args: &[String]) -> anyhow::Result<()> {
    setup::require_root("the packages test installs and purges the .deb")?;
    let mut filter = vec!["packages::".to_owned()];
    filter.extend_from_slice(args);
    // The installed daemon keeps its last good policy where the package says.
    integration(
        &["--ignored", "--test-threads=1"],
        &filter,
        "/var/lib/portguard",
    )
}

/// The `integration` test binary with `harness` options, then `args` (filters), with daemons'
/// default state directory at `state_dir`.
fn integration(harness: &[&str], args: &[String], state_dir: &str) -> anyhow::Result<()> {
    let mut integ = vec![
        "test",
        "-p",
        "integration-tests",
        "--test",
        "integration",
        "--",
    ];
    integ.extend_from_slice(harness);
    integ.extend(args.iter().map(String::as_str));
    run::cargo_env(&integ, &[("PORTGUARD_STATE_DIR", state_dir)])
}

fn lint() -> anyhow::Result<()> {
    setup::setup()?;
    run::cargo(&["fmt", "--all", "--check"])?;
    run::cargo(&[
        "clippy",
        "--workspace",
        "--exclude",
        "portguard-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    // The BPF crate is checked for the host target with the cfg aya-build sets: clippy sees the
    // same source, and needs no build-std.
    run::cargo_env(
        &["clippy", "-p", "portguard-ebpf", "--", "-D", "warnings"],
        &[
            (
                "RUSTFLAGS",
                "--cfg=bpf_target_arch=\"x86_64\" -C panic=abort",
            ),
            ("RUSTC_BOOTSTRAP", "1"),
        ],
    )
}
