//! The command line: one file per verb, each a thin call into the library.

pub mod args;
mod audit;
mod check;
mod compile;
mod detach;
mod doctor;
mod explain;
mod lab;
mod reload;
mod run;
mod status;
mod suggest;
mod trial;

use std::{io::Write as _, process::ExitCode};

use clap::CommandFactory as _;

pub use args::Cli;
use args::{Command, HostArgs, PolicyArgs};

use crate::{
    compile::{HostPolicy, for_host},
    paths,
    policy::{self, Policy},
};

/// The whole program: parse the command line, run it, map errors to exit code 2. Logs go to
/// stderr without colour when it is not a terminal, which is how journald keeps them best.
#[must_use]
pub fn main() -> ExitCode {
    let mut logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    let journal = stderr_is_journal();
    if journal {
        // Under systemd: journald stamps the time itself and reads the level from an sd-daemon
        // `<N>` prefix, so `journalctl -p err -u portguard` filters by severity.
        logger.format(|buf, record| {
            let priority = match record.level() {
                log::Level::Error => 3,
                log::Level::Warn => 4,
                log::Level::Info => 6,
                log::Level::Debug | log::Level::Trace => 7,
            };
            writeln!(buf, "<{priority}>{}", record.args())
        });
    }
    logger.init();
    if journal {
        // A panic is a crash: `journalctl -p crit` must show it, in one entry.
        std::panic::set_hook(Box::new(|info| {
            let at = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            let what = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_default();
            eprintln!("<2>portguard: panic{at}: {}", what.replace('\n', " / "));
        }));
    }
    let cli = <Cli as clap::Parser>::parse();
    if !matches!(cli.command, Command::Run { .. }) {
        // A command piped into `head` ends quietly when the pipe closes, as other Unix tools
        // do. The daemon keeps Rust's default (SIGPIPE ignored): a closed log stream must not
        // kill the process that keeps enforcement current.
        // SAFETY: restoring the default disposition of one signal before any thread starts.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprint!("{}", fatal_message(&e, journal));
            ExitCode::from(exit_status(&e))
        }
    }
}

/// The last words of a command that failed: `portguard: error: ...`, every line of it marked
/// `<3>` (error) for journald when stderr is the journal, so `journalctl -p err` shows a
/// daemon that could not start, and why (a policy's diagnostics take several lines).
fn fatal_message(e: &anyhow::Error, journal: bool) -> String {
    let text = format!("portguard: error: {e:#}");
    let prefix = if journal { "<3>" } else { "" };
    text.lines().fold(String::new(), |mut out, line| {
        out.push_str(prefix);
        out.push_str(line);
        out.push('\n');
        out
    })
}

/// Whether stderr is connected to the journal: `JOURNAL_STREAM` (set by systemd for services
/// whose output goes to the journal) names the device and inode of that stream, and stderr is
/// still it (not redirected by a shell in between), as systemd.exec(5) says to check.
fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    // SAFETY: fstat(2) writes a `stat` into the zeroed struct it is given.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd 2 is only inspected; a closed one makes fstat fail.
    let rc = unsafe { libc::fstat(2, &raw mut st) };
    rc == 0 && st.st_dev == dev && st.st_ino == ino
}

/// The exit status of every verb: 0 when all is well, [`EXIT_POLICY`] when the policy (or the
/// verdict asked for) is the problem, [`EXIT_USAGE`] when the command line or the environment
/// is (clap exits 2 on usage errors too). Documented in the man page and the README.
pub const EXIT_POLICY: u8 = 1;
/// See [`EXIT_POLICY`].
pub const EXIT_USAGE: u8 = 2;

/// Which kind of failure `e` is: a policy that does not load or compile for this host is the
/// policy's problem; anything else (files, permissions, the kernel, a daemon that does not
/// answer) is the environment's.
fn exit_status(e: &anyhow::Error) -> u8 {
    let policy = e.chain().any(|c| {
        c.is::<policy::Diagnostics>()
            || c.downcast_ref::<crate::compile::CompileError>()
                .is_some_and(crate::compile::CompileError::is_policy)
    });
    if policy { EXIT_POLICY } else { EXIT_USAGE }
}

/// Run a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check {
            policy,
            json,
            strict,
            force,
        } => check::run(
            &policy,
            check::Options {
                json,
                strict,
                force,
            },
        ),
        Command::Compile {
            policy,
            host,
            dst,
            json,
        } => compile::run(&policy, &host, dst, json),
        Command::Explain {
            policy,
            host,
            src,
            dst,
            proto,
            dport,
            sport,
            icmp_type,
            icmp_code,
            json,
            exit_status,
        } => {
            let flow = explain::Flow {
                src,
                dst,
                proto,
                dport,
                sport,
                icmp_type,
                icmp_code,
            };
            explain::run(&policy, &host, &flow, json, exit_status)
        }
        Command::Run {
            policy,
            host,
            state,
            ifaces,
            mode,
            metrics,
            audit_log,
            status_group,
            datapath_log,
            no_xdp_frags,
            state_dir,
        } => run::run(
            &policy,
            &host,
            &state,
            run::Extra {
                ifaces,
                mode,
                metrics,
                audit_log,
                status_group,
                datapath_log,
                no_xdp_frags,
                state_dir,
            },
        ),
        Command::Reload { state, timeout } => reload::run(&state, timeout),
        Command::Apply {
            state,
            confirm_within,
            force,
        } => trial::apply(&state, confirm_within, force),
        Command::Confirm { state } => trial::confirm(&state),
        Command::Status { state, json, watch } => status::run(&state, json, watch),
        Command::Detach { state } => detach::run(&state),
        Command::Doctor { json } => doctor::run(json),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "portguard",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => {
            std::io::stdout().write_all(&man_page()?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit(args) => audit::run(&args),
        Command::Suggest(args) => suggest::run(&args),
        Command::Lab(args) => lab::run(&args),
    }
}

/// The man page: clap's sections, then EXIT STATUS and FILES, which clap cannot generate.
pub fn man_page() -> std::io::Result<Vec<u8>> {
    // Section 8: a system administration command (the unit says `man:portguard(8)`).
    let man = clap_mangen::Man::new(Cli::command()).section("8");
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    man.render_subcommands_section(&mut out)?;
    out.extend_from_slice(
        format!(
            ".SH \"EXIT STATUS\"\n\
             .TP\n0\nSuccess: the policy is valid, the flow is allowed, the host enforces what \
             the site says.\n\
             .TP\n{EXIT_POLICY}\nA policy or verdict problem: the site or a product file has \
             errors (or warnings, with \\fBcheck \\-\\-strict\\fR), the policy does not \
             compile for this host, \\fBexplain \\-\\-exit\\-status\\fR denies the flow, \
             \\fBstatus\\fR finds the host not enforcing what the site says, \\fBlab\\fR \
             observes a flow other than expected, a reload or an apply is refused.\n\
             .TP\n{EXIT_USAGE}\nA usage or environment error: bad arguments, a file that cannot \
             be read, missing privileges, no daemon where one is needed, a missing audit log.\n\
             .SH FILES\n\
             .TP\n{site}\nThe site file; drop-ins in {site_dir}/site.d/*.toml are read after it, \
             in name order.\n\
             .TP\n{policies}\nThe product files.\n\
             .TP\n{pins}\nPinned links and maps (bpffs): the enforcement itself.\n\
             .TP\n{run}\nThe daemon's state and counter samples.\n\
             .TP\n{state}/last-good\nA copy of the site file, its drop-ins and the product \
             files of the last policy confirmed in force: \\fBrun\\fR enforces it when the site \
             file is broken or missing (at boot, say), and \\fBstatus\\fR exits 1 until a \
             reload puts the site file in force.\n\
             .TP\n{audit}\nThe audit log of denied flows.\n",
            site = paths::SITE_FILE,
            site_dir = "/etc/portguard",
            policies = paths::POLICIES_DIR,
            pins = paths::PIN_DIR,
            run = paths::RUN_DIR,
            state = paths::STATE_DIR,
            audit = paths::AUDIT_LOG,
        )
        .as_bytes(),
    );
    man.render_version_section(&mut out)?;
    Ok(out)
}

/// Load the site policy, or print every problem as `FILE:LINE:COL: message` and fail.
fn load_policy(args: &PolicyArgs) -> anyhow::Result<Policy> {
    site_exists(args)?;
    let dir = paths::policies_dir(args.policies.as_deref());
    Ok(policy::load(&args.site, &dir)?)
}

/// A missing site file is the environment's problem (exit 2), not a policy's: say so before the
/// loader reports it as a diagnostic.
fn site_exists(args: &PolicyArgs) -> anyhow::Result<()> {
    if !args.site.exists() {
        anyhow::bail!(
            "no site file at {} (write one: policies/examples/ has examples; or pass --site)",
            args.site.display()
        );
    }
    Ok(())
}

/// Compile the policy for the host described by `host` (or owning `dst`, or this machine).
fn host_policy(
    policy: &Policy,
    host: &HostArgs,
    dst: Option<std::net::IpAddr>,
) -> anyhow::Result<HostPolicy> {
    let roles = crate::compile::host_roles(policy, &host.host_roles, dst)?;
    Ok(for_host(policy, &roles)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fatal_errors_carry_the_error_priority_on_every_line_under_journald() {
        let e = anyhow::anyhow!("site.toml:3:1: unknown role\nsite.toml:9:5: bad port")
            .context("the site policy has errors");
        assert_eq!(
            fatal_message(&e, true),
            "<3>portguard: error: the site policy has errors: site.toml:3:1: unknown role\n\
             <3>site.toml:9:5: bad port\n"
        );
        assert_eq!(
            fatal_message(&e, false),
            "portguard: error: the site policy has errors: site.toml:3:1: unknown role\n\
             site.toml:9:5: bad port\n"
        );
    }
}
