//! `portguard lab`: a site built in network namespaces on this machine, the real daemon
//! protecting one host of it, a real flow for every rule in force (and for what the matrix does
//! not allow, and what the host needs to keep working), and the counters that show what the
//! datapath did with each, compared with what `explain` says.
//!
//! Modules, in the order a run uses them: [`plan`] decides machines and flows from the compiled
//! policy, [`topology`] builds the namespaces, [`service`] starts `portguard run`, [`flows`]
//! sends (with [`wire`] for crafted packets) and [`observe`] reads the counters around each
//! flow, [`expect`] asks the reference classifier, [`render`] prints.

mod alloc;
pub mod embedded;
mod error;
pub mod expect;
pub mod flows;
pub mod observe;
pub mod plan;
mod planner;
pub mod render;
pub mod service;
pub mod topology;
pub mod wire;

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus},
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

pub use error::LabError;
use error::failed;

use crate::{compile, ebpf::links, policy};
use expect::Judge;
use flows::{Row, Runner};
use observe::Observer;
use plan::{OUTSIDER, Plan, VM};
use service::LabPaths;

/// The prefix of a lab's names when none is given.
pub const DEFAULT_PREFIX: &str = "pglab";
/// Longest prefix accepted (namespace names are `<prefix>-<role>`).
const MAX_PREFIX: usize = 12;
/// Left in a lab's run directory, so nothing but a lab's own directory is ever removed.
const MARKER: &str = ".portguard-lab";
/// Time after a flow for its last packets (a final ACK) to be counted before the next one.
const SETTLE: Duration = Duration::from_millis(25);

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Whether SIGINT, SIGTERM or SIGHUP arrived while the lab ran.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic store: the one thing a signal handler may safely do here.
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// The lab's signal handlers while it runs: a signal only sets a flag, checked between steps
/// and flows (each bounded to a second or less), so the lab unwinds and removes itself.
struct Signals(Vec<(libc::c_int, libc::sigaction)>);

impl Signals {
    fn install() -> Result<Signals, LabError> {
        INTERRUPTED.store(false, Ordering::SeqCst);
        let mut old = Vec::new();
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            // SAFETY: sigaction with a handler that only stores to an atomic; the previous
            // action is kept and restored on drop.
            unsafe {
                let mut act: libc::sigaction = std::mem::zeroed();
                act.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
                libc::sigemptyset(&raw mut act.sa_mask);
                let mut prev: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, &raw const act, &raw mut prev) != 0 {
                    return Err(failed("installing a signal handler")(
                        std::io::Error::last_os_error(),
                    ));
                }
                old.push((sig, prev));
            }
        }
        Ok(Signals(old))
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        for (sig, prev) in &self.0 {
            // SAFETY: restoring the action saved by `install`.
            unsafe { libc::sigaction(*sig, prev, std::ptr::null_mut()) };
        }
    }
}

fn check_interrupt() -> Result<(), LabError> {
    if interrupted() {
        return Err(LabError::Interrupted);
    }
    Ok(())
}

/// What `portguard lab` was asked to do.
#[derive(Clone, Debug)]
pub struct Options {
    /// Site file (default: the built-in `policies/examples/lab.toml`).
    pub site: Option<PathBuf>,
    /// Product-file directory (default: the usual lookup, else the built-in copies).
    pub policies: Option<PathBuf>,
    /// Leave the lab up at the end.
    pub keep: bool,
    /// Write the picture here.
    pub svg: Option<PathBuf>,
    /// Write the rows as JSON here.
    pub json: Option<PathBuf>,
    /// Name prefix of everything the lab creates.
    pub prefix: String,
}

/// How a lab run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Rows observed as expected.
    pub ok: usize,
    /// Rows that differ.
    pub mismatches: usize,
    /// Rules that could not be exercised (each says why).
    pub not_exercised: usize,
}

/// Check that `prefix` is a usable lab name: letters and digits (no `-`, so `<prefix>-` never
/// matches another lab's names), short, and not the service's own pin directory name.
pub fn check_prefix(prefix: &str) -> Result<(), LabError> {
    if prefix.is_empty()
        || prefix.len() > MAX_PREFIX
        || !prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        || !prefix.as_bytes()[0].is_ascii_lowercase()
    {
        return Err(LabError::Prefix {
            prefix: prefix.to_owned(),
            why: "use 1 to 12 lowercase letters and digits, starting with a letter",
        });
    }
    if prefix == "portguard" {
        return Err(LabError::Prefix {
            prefix: prefix.to_owned(),
            why: "that is the service's own pin directory; choose another",
        });
    }
    Ok(())
}

fn preflight() -> Result<(), LabError> {
    // SAFETY: geteuid has no failure mode.
    if unsafe { libc::geteuid() } != 0 {
        return Err(LabError::NotRoot);
    }
    if !Path::new("/sys/fs/bpf").is_dir() {
        return Err(LabError::NoBpffs);
    }
    let kernel = crate::doctor::probe();
    kernel.log();
    match kernel.fatal() {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// Everything a lab created, removed on drop unless kept: on errors, on Ctrl-C (which turns
/// into an error at the next check) and on panics alike.
struct Lab {
    paths: LabPaths,
    namespaces: Vec<String>,
    daemon: Option<Child>,
    keep: bool,
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        let done = teardown(&self.paths, &self.namespaces, self.daemon.as_mut());
        if !done.is_empty() {
            eprintln!("portguard lab: removed {}", done.join(", "));
        }
    }
}

/// Stop the lab's daemon, detach and unpin, delete the namespaces and the run directory.
/// Each step runs even if an earlier one failed; the list says what was removed.
fn teardown(paths: &LabPaths, namespaces: &[String], child: Option<&mut Child>) -> Vec<String> {
    let mut done = Vec::new();
    if let Some(c) = child {
        service::stop_child(c);
        done.push(format!("the daemon (pid {})", c.id()));
    }
    for pid in service::daemons_of(&paths.pin_dir) {
        service::stop_pid(pid);
        done.push(format!("the daemon (pid {pid})"));
    }
    match links::pinned(&paths.pin_dir) {
        Ok(names) => {
            for n in names {
                match links::unpin(&paths.pin_dir, &n) {
                    Ok(()) => done.push(format!("the XDP link on {n}")),
                    Err(e) => eprintln!("portguard lab: {e:#}"),
                }
            }
        }
        Err(e) => eprintln!("portguard lab: {e:#}"),
    }
    if paths.pin_dir.exists() {
        match std::fs::remove_dir_all(&paths.pin_dir) {
            Ok(()) => done.push(paths.pin_dir.display().to_string()),
            Err(e) => eprintln!("portguard lab: removing {}: {e}", paths.pin_dir.display()),
        }
    }
    let mut gone = 0;
    for ns in namespaces {
        match topology::delete_namespace(ns) {
            Ok(()) => gone += 1,
            Err(e) => eprintln!("portguard lab: {e:#}"),
        }
    }
    if gone > 0 {
        done.push(format!("{gone} namespaces"));
    }
    if paths.run_dir.join(MARKER).exists() {
        match std::fs::remove_dir_all(&paths.run_dir) {
            Ok(()) => done.push(paths.run_dir.display().to_string()),
            Err(e) => eprintln!("portguard lab: removing {}: {e}", paths.run_dir.display()),
        }
    }
    done
}

/// Fail if anything of a lab with these names exists already.
fn refuse_leftovers(paths: &LabPaths) -> Result<(), LabError> {
    let mut found = topology::lab_namespaces(&paths.prefix)?;
    found.extend(
        service::daemons_of(&paths.pin_dir)
            .into_iter()
            .map(|p| format!("daemon pid {p}")),
    );
    if paths.pin_dir.exists() {
        found.push(paths.pin_dir.display().to_string());
    }
    if paths.run_dir.exists() {
        if !paths.run_dir.join(MARKER).exists() {
            return Err(LabError::ForeignRunDir {
                dir: paths.run_dir.clone(),
            });
        }
        found.push(paths.run_dir.display().to_string());
    }
    if !found.is_empty() {
        return Err(LabError::AlreadyUp {
            prefix: paths.prefix.clone(),
            found: found.join(", "),
        });
    }
    Ok(())
}

/// The product-file directory and how to describe it: the one given, else the usual lookup
/// (installed, then `./policies`), else the copies built into this binary.
fn policies_dir(given: Option<&Path>, paths: &LabPaths) -> Result<(PathBuf, String), LabError> {
    if let Some(g) = given {
        let abs =
            std::fs::canonicalize(g).map_err(failed(format!("--policies {}", g.display())))?;
        return Ok((abs, g.display().to_string()));
    }
    let found = crate::paths::policies_dir(None);
    if found.join("essentials.toml").is_file() {
        let abs = std::fs::canonicalize(&found).unwrap_or(found.clone());
        return Ok((abs, found.display().to_string()));
    }
    let dir = paths.run_dir.join("policies");
    embedded::write_products(&dir)?;
    Ok((dir, "the copies built into this binary".to_owned()))
}

/// Run another verb of this program (`status`, `audit`) with its output on ours.
fn verb(args: &[&str]) -> Result<ExitStatus, LabError> {
    let _ = std::io::stdout().flush();
    let exe = std::env::current_exe().map_err(failed("finding this program's path"))?;
    Command::new(exe)
        .args(args)
        .status()
        .map_err(failed(format!("running portguard {}", args.join(" "))))
}

fn describe(e: &plan::Endpoint, width: usize, what: &str) -> String {
    format!(
        "  {:<width$} {:<16} {:<20} {what}",
        e.ns,
        e.v4.map(|a| a.to_string()).unwrap_or_default(),
        e.v6.map(|a| a.to_string()).unwrap_or_default()
    )
}

/// Where the site and product files come from, and how to name them in the output.
struct Sources {
    site: PathBuf,
    site_shown: String,
    policies: PathBuf,
    policies_shown: String,
}

/// The site file (the one given, or the built-in one written to the run directory) and the
/// product files.
fn sources(opts: &Options, paths: &LabPaths) -> Result<Sources, LabError> {
    let (site, site_shown) = if let Some(s) = &opts.site {
        (
            std::fs::canonicalize(s).map_err(failed(format!("--site {}", s.display())))?,
            s.display().to_string(),
        )
    } else {
        let p = paths.run_dir.join("lab.toml");
        std::fs::write(&p, embedded::SITE).map_err(failed(format!("writing {}", p.display())))?;
        (p, format!("{} (built in)", embedded::SITE_NAME))
    };
    let (policies, policies_shown) = policies_dir(opts.policies.as_deref(), paths)?;
    Ok(Sources {
        site,
        site_shown,
        policies,
        policies_shown,
    })
}

/// What the lab is about to build, before it builds it.
fn print_plan(plan: &Plan, roles: &[String]) {
    println!(
        "machines (one network namespace each, all on the switch in {}):",
        plan.lan_ns
    );
    let width = plan.endpoints.iter().map(|e| e.ns.len()).max().unwrap_or(0);
    let what = format!(
        "protected host: portguard run on {} (bridge br0), roles {}",
        plan.iface,
        roles.join(", ")
    );
    println!("{}", describe(plan.host(), width, &what));
    println!(
        "{}",
        describe(
            &plan.endpoints[VM],
            width,
            "a VM bridged behind the host (in no role)"
        )
    );
    println!(
        "{}",
        describe(&plan.endpoints[OUTSIDER], width, "an outsider (in no role)")
    );
    for e in &plan.endpoints[OUTSIDER + 1..] {
        let what = format!("stands for {}", e.role.as_deref().unwrap_or("?"));
        println!("{}", describe(e, width, &what));
    }
}

/// Write the picture and the JSON rows, if asked for.
fn write_files(opts: &Options, plan: &Plan, rows: &[Row], title: &str) -> Result<(), LabError> {
    if let Some(p) = &opts.svg {
        std::fs::write(p, render::svg(plan, rows, title))
            .map_err(failed(format!("writing {}", p.display())))?;
        println!("picture: {}", p.display());
    }
    if let Some(p) = &opts.json {
        serde_json::to_vec_pretty(rows)
            .map_err(std::io::Error::from)
            .and_then(|bytes| std::fs::write(p, bytes))
            .map_err(failed(format!("writing {}", p.display())))?;
    }
    Ok(())
}

/// `status`, then the audit records (after stopping the daemon unless the lab is kept, so it
/// writes the records of its last window), then, for a kept lab, how to use it.
fn epilogue(opts: &Options, lab: &mut Lab, host_ns: &str) -> Result<(), LabError> {
    let paths = lab.paths.clone();
    // The lab's paths are made of its prefix (ASCII letters and digits): always valid text.
    let (pins, run) = (
        paths.pin_dir.display().to_string(),
        paths.run_dir.display().to_string(),
    );
    let state_args = ["--pin-dir", pins.as_str(), "--run-dir", run.as_str()];
    println!("\n$ portguard status {}", state_args.join(" "));
    let mut status_args = vec!["status"];
    status_args.extend(state_args);
    verb(&status_args)?;
    if !opts.keep
        && let Some(c) = lab.daemon.as_mut()
    {
        service::stop_child(c);
    }
    let log = paths.audit_log();
    let log_text = log.display().to_string();
    println!("\n$ portguard audit --log {log_text} --since 1d");
    if log.exists() {
        verb(&["audit", "--log", &log_text, "--since", "1d"])?;
    } else {
        println!(
            "(no audit records: the daemon has not written {log_text}; it writes denied flows there once per window)"
        );
    }
    if opts.keep {
        lab.keep = true;
        let exe = std::env::current_exe()
            .map_or_else(|_| "portguard".to_owned(), |p| p.display().to_string());
        println!(
            "\nThe lab is still up (--keep). As root, look around from inside a machine, e.g. the protected host:\n  \
             ip netns exec {host_ns} bash\n(`ip netns exec` is fine for people; the daemon itself was started with \
             only its network namespace changed, so its pins live in the machine's bpffs)\n  \
             {exe} status {}\n  {exe} audit --log {log_text}\nTake it all down with:\n  {exe} lab down --prefix {}",
            state_args.join(" "),
            opts.prefix
        );
    }
    Ok(())
}

/// Build the lab, run every flow, print the table, `status` and the audit records, and remove
/// the lab unless `keep`. The summary says whether everything was observed as expected.
pub fn run(opts: &Options) -> Result<Summary, LabError> {
    preflight()?;
    check_prefix(&opts.prefix)?;
    let paths = LabPaths::new(&opts.prefix);
    refuse_leftovers(&paths)?;
    let _signals = Signals::install()?;
    let mut lab = Lab {
        paths: paths.clone(),
        namespaces: Vec::new(),
        daemon: None,
        keep: false,
    };
    std::fs::create_dir_all(&paths.run_dir)
        .map_err(failed(format!("creating {}", paths.run_dir.display())))?;
    std::fs::write(paths.run_dir.join(MARKER), b"")?;
    let src = sources(opts, &paths)?;
    let policy = policy::load(&src.site, &src.policies)?;
    let (roles, roles_note) = plan::host_roles(&policy);
    let hp = compile::for_host(&policy, &roles)?;
    let plan = Plan::new(&policy, &hp, &roles, &opts.prefix)?;
    let host = plan.host();
    let judge = Judge::new(&hp, host.addrs());
    println!(
        "portguard lab `{}`: site {}, {} mode, product files from {}",
        opts.prefix,
        src.site_shown,
        if judge.audit() { "audit" } else { "enforce" },
        src.policies_shown
    );
    if let Some(n) = roles_note {
        println!("note: {n}");
    }
    println!(
        "{} rules in force on the host, {} flows planned",
        hp.rules.len(),
        plan.flows.iter().filter(|f| f.probe.is_some()).count()
    );
    print_plan(&plan, &roles);
    check_interrupt()?;
    topology::build(&plan, &mut lab.namespaces)?;
    check_interrupt()?;
    let launch = service::Launch {
        ns: &host.ns,
        site: &src.site,
        policies: &src.policies,
        roles: &roles,
        iface: &plan.iface,
    };
    let child = service::start(&paths, &launch)?;
    let pid = child.id();
    lab.daemon = Some(child);
    let state = crate::state::State::read(&paths.run_dir)?.unwrap_or_default();
    println!(
        "daemon: `portguard run` pid {pid} in {}, policy {}, {} ({} mode); pins {}, log {}\n",
        host.ns,
        state.policy_version,
        plan.iface,
        state.interfaces.first().map_or("?", |i| i.mode.as_str()),
        paths.pin_dir.display(),
        paths.daemon_log().display()
    );
    let observer = Observer::new(
        paths.pin_dir.clone(),
        &paths.run_dir,
        SETTLE,
        observe::background_rules(&hp),
    )?;
    let runner = Runner::new(&plan, &judge, &observer);
    let mut rows: Vec<Row> = Vec::new();
    for spec in &plan.flows {
        check_interrupt()?;
        rows.extend(runner.run(spec)?);
    }
    print!("{}", render::table(&rows));
    let (ok, mismatches, not_exercised) = render::counts(&rows);
    println!(
        "\n{} flows: {ok} as expected, {mismatches} mismatches; {not_exercised} rules not exercised (each says why)",
        ok + mismatches
    );
    let title = format!(
        "portguard lab: {}, host {} ({})",
        src.site_shown,
        host.v4.map(|a| a.to_string()).unwrap_or_default(),
        roles.join(", ")
    );
    write_files(opts, &plan, &rows, &title)?;
    epilogue(opts, &mut lab, &host.ns)?;
    drop(lab);
    Ok(Summary {
        ok,
        mismatches,
        not_exercised,
    })
}

/// `portguard lab down`: remove everything of the lab named `prefix`, found by its names (the
/// namespaces `<prefix>-*`, the daemon pinning into `/sys/fs/bpf/<prefix>`, the pins, the run
/// directory). What was removed, one item per entry.
pub fn down(prefix: &str) -> Result<Vec<String>, LabError> {
    preflight()?;
    check_prefix(prefix)?;
    let paths = LabPaths::new(prefix);
    let namespaces = topology::lab_namespaces(prefix)?;
    Ok(teardown(&paths, &namespaces, None))
}
