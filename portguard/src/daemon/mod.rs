//! `portguard run`: put this host's slice of the site policy in force and keep it there.
//!
//! The daemon is a reconciler. The kernel holds enforcement (pinned links, programs, maps);
//! the daemon compiles the policy, works out what must change ([`reconcile`]), makes the pins
//! match it ([`apply`]), records what it did in the run directory, and then waits: SIGHUP
//! reloads, link/address changes re-sync, a timer samples counters. It holds no BPF object
//! between steps, so killing it at any point leaves the last complete state enforcing, and the
//! next daemon adopts it.

mod apply;
mod audit_task;
pub mod datapath_log;
mod error;
mod health;
pub mod last_good;
pub mod metrics;
pub mod netwatch;
mod reconcile;
pub mod system;
mod trial;

use std::{
    collections::BTreeSet,
    path::PathBuf,
    time::{Duration, Instant},
};

use tokio::signal::unix::{SignalKind, signal};

pub use error::DaemonError;

use crate::error_chain as chain;
use crate::{
    audit,
    compile::{self, HostPolicy, host_roles, slots},
    doctor::{Feature, Status},
    ebpf::counters,
    policy::{self, Mode, Policy},
    state::{self, SavedSample, State},
};
use audit_task::AuditTask;
use trial::until;

/// How often counters are sampled for rates and last-hit times.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// Changes reported by netlink arrive in bursts: after attaching at once, reconcile the rest
/// this long after the first change of a burst.
const SETTLE: Duration = Duration::from_millis(200);
/// The loopback interface's index, in every network namespace.
const LOOPBACK_IFINDEX: u32 = 1;

/// Everything `portguard run` was asked to do.
#[derive(Clone, Debug)]
pub struct Options {
    /// The site file.
    pub site: PathBuf,
    /// Product-file directory (None: installed or ./policies).
    pub policies: Option<PathBuf>,
    /// Interfaces to protect (empty: the site's `[host] interfaces`, else every interface with
    /// a global address).
    pub ifaces: Vec<String>,
    /// Mode override.
    pub mode: Option<Mode>,
    /// Host roles override.
    pub host_roles: Vec<String>,
    /// bpffs directory of the pins.
    pub pin_dir: PathBuf,
    /// Directory of the state file and counter samples.
    pub run_dir: PathBuf,
    /// Directory that survives reboots: the last good policy ([`last_good`]).
    pub state_dir: PathBuf,
    /// Prometheus endpoint address.
    pub metrics: Option<std::net::SocketAddr>,
    /// Audit log path override (else the site's `[audit] path`).
    pub audit_log: Option<PathBuf>,
    /// Group (id) that may read status and audit without access to the maps.
    pub status_group: Option<u32>,
    /// Turn on the program's diagnostic messages and forward them to the log.
    pub datapath_log: bool,
    /// Load the single-buffer program even where the kernel has multi-buffer XDP.
    pub no_xdp_frags: bool,
}

/// A policy compiled for this host, with its counter slots, ready to load and not in force yet.
struct Compiled {
    policy: Policy,
    host: HostPolicy,
    version: String,
    /// Slots given to rule ids that had none: zeroed before the program that counts in them
    /// goes in force.
    fresh_slots: Vec<u32>,
}

/// Which interfaces the policy in force protects.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Selection {
    /// No policy put in force by this daemon yet.
    Unknown,
    /// The site's `[host] interfaces`, or `--iface`.
    Listed(Vec<String>),
    /// Every interface with a global address.
    Auto,
}

/// The daemon's view of what is in force.
struct Daemon {
    opts: Options,
    state: State,
    /// Interfaces asked for but missing so far (hot-plug will attach them).
    waiting: BTreeSet<String>,
    last_sample: SavedSample,
    /// Rule id per counter slot, shared with the audit reader.
    rule_ids: audit::RuleIds,
    /// Audit events read, by reason and rule: counted by the audit reader (across its
    /// restarts), served by the metrics endpoint.
    denied: audit::DeniedCounts,
    /// Where audit records go, as the policy in force says.
    audit: Option<audit::AuditConfig>,
    /// When the policy on trial reverts, if one is.
    trial_deadline: Option<Instant>,
    /// The self-test's frames for the policy in force.
    probes: Vec<health::ProbeFrame>,
    /// The interfaces the policy in force selects.
    selection: Selection,
    /// Whether a grace period has passed since the last table switch (so the idle generation
    /// may be rewritten at once). Unknown at start: a previous daemon may have just switched.
    settled: bool,
    /// What this kernel offers that portguard may do without (`doctor`'s probe at start).
    kernel: Kernel,
}

/// The optional kernel features the daemon adapts to.
#[derive(Clone, Copy, Debug)]
struct Kernel {
    /// tcx (6.6): the egress recorder is attached; without it, it is off.
    tcx: bool,
    /// XDP multi-buffer (5.18): the program that takes jumbo frames; without it (or with
    /// `--no-xdp-frags`), the single-buffer one, which interfaces whose MTU needs more run in
    /// generic mode.
    frags: bool,
}

/// Run the daemon until SIGTERM or SIGINT. Enforcement stays in place when it returns.
pub fn run(opts: Options) -> Result<(), DaemonError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(DaemonError::system("starting the tokio runtime"))?
        .block_on(serve(opts))
}

/// Everything before the daemon waits for events: check, compile, create the directories, put
/// the policy in force (or adopt it), and resume a trial a previous daemon left running.
fn start(opts: Options) -> Result<Daemon, DaemonError> {
    system::check_capabilities()?;
    // Before anything changes: a kernel that cannot run the datapath is said so in its own
    // words (what is missing, since which version), not as a verifier log halfway through.
    let kernel = crate::doctor::probe();
    kernel.log();
    if let Some(e) = kernel.fatal() {
        return Err(e.into());
    }
    let previous = match State::read(&opts.run_dir) {
        Ok(s) => s,
        Err(e) => {
            log::warn!("ignoring the previous state: {e}");
            None
        }
    };
    let no_frags = opts.no_xdp_frags;
    let mut daemon = Daemon::new(opts, previous);
    // Unknown counts as present: the load or attach then says what is wrong.
    daemon.kernel = Kernel {
        tcx: kernel.status(Feature::Tcx) != Status::Absent,
        frags: kernel.status(Feature::XdpFrags) != Status::Absent && !no_frags,
    };
    if !daemon.kernel.tcx {
        log::warn!(
            "the egress recorder is off: tcx needs Linux 6.6; answers to unconnected UDP \
             clients of this host are judged by the rules"
        );
    }
    if !daemon.kernel.frags {
        log::warn!(
            "single-buffer XDP ({}): an interface whose MTU needs multi-buffer frames is \
             protected in generic mode (slower), since its driver refuses the program natively",
            if no_frags {
                "--no-xdp-frags"
            } else {
                "multi-buffer XDP needs Linux 5.18"
            }
        );
    }
    // A policy that does not compile changes nothing, not even a directory; unless a last good
    // policy was saved, in which case the host enforces that rather than nothing (it booted
    // with a broken site file, say) and says so.
    let mut fallback = None;
    let compiled = match daemon.compile() {
        Ok(c) => c,
        Err(e) => {
            let Some(copy) = last_good::LastGood::new(&daemon.opts.state_dir).current() else {
                return Err(e);
            };
            let why = format!(
                "the site file cannot be put in force ({}); enforcing the last good policy {}                  (saved {}, from {}) until a reload succeeds",
                chain(&e),
                copy.meta.version,
                state::report::rfc3339(copy.meta.saved_at).unwrap_or_default(),
                copy.meta.site.display()
            );
            log::error!("{why}");
            let c = daemon.compile_from(&copy.site, &copy.policies)?;
            fallback = Some(why);
            c
        }
    };
    let opts = &daemon.opts;
    system::ensure_pin_dir(&opts.pin_dir)?;
    // Only root (and the status group, when there is one) reads what is in force.
    system::own_dir(&opts.run_dir, 0o700)?;
    if let Some(gid) = opts.status_group {
        state::share_with(&opts.run_dir, gid, 0o750)?;
    }
    daemon.apply(compiled)?;
    daemon.state.last_good = fallback;
    // A trial survives a restart: its deadline still stands (else a crash would confirm it).
    match daemon.state.trial.clone() {
        Some(t) => {
            let left = t.deadline.saturating_sub(state::now_secs());
            daemon.trial_deadline = Some(Instant::now() + Duration::from_secs(left));
            log::warn!(
                "policy on trial: reverts to {} in {left} s unless confirmed",
                t.previous_version
            );
        }
        None if daemon.state.last_good.is_none() => daemon.confirm(),
        None => daemon.write_state(),
    }
    daemon.check();
    Ok(daemon)
}

async fn serve(opts: Options) -> Result<(), DaemonError> {
    let mut daemon = start(opts)?;
    let sig = |kind| signal(kind).map_err(DaemonError::system("installing a signal handler"));
    let mut hup = sig(SignalKind::hangup())?;
    let mut term = sig(SignalKind::terminate())?;
    let mut int = sig(SignalKind::interrupt())?;
    let mut usr1 = sig(SignalKind::user_defined1())?;
    let watch =
        netwatch::NetWatch::new().map_err(DaemonError::system("subscribing to rtnetlink"))?;
    let mut ticks = tokio::time::interval(SAMPLE_EVERY);
    // Enforcement does not depend on auditing: a log that cannot be written is an error in the
    // log, not a reason to leave the host unprotected.
    let mut auditor = daemon.audit.clone().and_then(|cfg| {
        AuditTask::start(&daemon, cfg)
            .map_err(|e| log::error!("starting the audit reader: {e}"))
            .ok()
    });
    if let Some(addr) = daemon.opts.metrics {
        metrics::start(&daemon, addr).await?;
    }
    let mut diag = daemon.follow_datapath_log(None);
    // When to re-sync after a burst of link and address changes.
    let mut resync: Option<Instant> = None;
    system::notify("READY=1");
    log::info!("ready");
    loop {
        tokio::select! {
            _ = hup.recv() => {
                system::notify(&format!("RELOADING=1\nMONOTONIC_USEC={}", system::monotonic_usec()));
                daemon.reload_or_trial();
                diag = daemon.follow_datapath_log(diag);
                // A reload may move the audit log: restart the reader on the new settings.
                if daemon.audit.as_ref() != auditor.as_ref().map(|a| &a.config) {
                    if let Some(a) = auditor.take() {
                        a.finish().await;
                    }
                    if let Some(cfg) = daemon.audit.clone() {
                        match AuditTask::start(&daemon, cfg) {
                            Ok(a) => auditor = Some(a),
                            Err(e) => log::error!("starting the audit reader: {e}"),
                        }
                    }
                }
                system::notify("READY=1");
            }
            _ = usr1.recv() => daemon.confirm(),
            () = until(daemon.trial_deadline) => daemon.revert(),
            _ = term.recv() => break,
            _ = int.recv() => break,
            changed = watch.changed() => {
                if let Err(e) = changed {
                    log::warn!("rtnetlink: {e}");
                }
                // Attach at once, before anything else: a new interface carries traffic as soon
                // as it is up with an address, and every millisecond before the program is on
                // it is open. The program in force is attached as it is, from its pin.
                if let Err(e) = daemon.attach_new() {
                    log::error!("attaching new interfaces: {}", chain(&e));
                }
                if let Err(e) = daemon.refresh_host() {
                    log::error!("refreshing the host's addresses: {}", chain(&e));
                }
                // The rest (roles that follow addresses, egress recorders, interfaces that went
                // away) once the burst of changes has settled. A timer, not a sleep here: the
                // loop keeps handling events meanwhile, so the next interface is attached as
                // soon as it appears too.
                resync.get_or_insert_with(|| Instant::now() + SETTLE);
            }
            () = until(resync) => {
                resync = None;
                if let Err(e) = daemon.sync_interfaces() {
                    log::error!("re-syncing interfaces and addresses: {}", chain(&e));
                }
                daemon.settle();
            }
            _ = ticks.tick() => {
                daemon.sample();
                daemon.check();
                system::notify("WATCHDOG=1");
            }
        }
    }
    system::notify("STOPPING=1");
    if let Some(a) = auditor {
        a.finish().await;
    }
    daemon.sample();
    log::info!(
        "exiting; enforcement stays in place (pins in {}); `portguard detach` removes it",
        daemon.opts.pin_dir.display()
    );
    Ok(())
}

/// The metrics endpoint listens where the host's own policy drops the scrapes: say which rule
/// is missing (loopback never crosses the NIC, so it needs none).
fn warn_unopened_metrics(host: &HostPolicy, addr: std::net::SocketAddr) {
    use crate::policy::{Match, Proto};
    if addr.ip().is_loopback() {
        return;
    }
    let port = addr.port();
    let opened = host.rules.iter().any(|r| {
        r.protos.contains(&Proto::Tcp)
            && matches!(&r.matches, Match::Ports(ranges) if ranges.iter().any(|p| p.contains(&port)))
    });
    if !opened {
        log::warn!(
            "metrics on {addr}, but no rule of this host opens tcp/{port}: scrapes from other \
             machines are dropped. Add a site rule, e.g. [[rules]] id = \"SITE-PROMETHEUS\" \
             from = [\"site.prometheus\"] proto = \"tcp\" ports = \"{port}\" purpose = \
             \"Prometheus scrapes portguard\", and map site.prometheus in [roles]"
        );
    }
}

impl Daemon {
    fn new(opts: Options, previous: Option<State>) -> Self {
        let mut state = previous.unwrap_or_default();
        // A new daemon forgets removed rules: their slots are free again.
        state.rules.retain(|r| r.active);
        state.pid = std::process::id();
        state.reload = state::ReloadEntry::default();
        state.last_good = None;
        // The health is this daemon's own findings: none until its first self-test.
        state.health = state::HealthEntry::default();
        state.status_group = opts.status_group;
        let last_sample = SavedSample::read(&opts.run_dir).unwrap_or_default();
        Daemon {
            opts,
            state,
            waiting: BTreeSet::new(),
            last_sample,
            rule_ids: audit::RuleIds::default(),
            denied: audit::DeniedCounts::default(),
            audit: None,
            trial_deadline: None,
            probes: Vec::new(),
            selection: Selection::Unknown,
            settled: false,
            kernel: Kernel {
                tcx: true,
                frags: true,
            },
        }
    }

    /// Compile the site policy for this host, with slots kept from what is in force. The
    /// tables are built once, with the final slots.
    fn compile(&self) -> Result<Compiled, DaemonError> {
        let dir = crate::paths::policies_dir(self.opts.policies.as_deref());
        self.compile_from(&self.opts.site, &dir)
    }

    /// The policy in force compiled again: the site file's, or the last good copy's while
    /// that is what is enforced.
    fn compile_in_force(&self) -> Result<Compiled, DaemonError> {
        if self.state.last_good.is_some()
            && let Some(copy) = last_good::LastGood::new(&self.opts.state_dir).current()
        {
            return self.compile_from(&copy.site, &copy.policies);
        }
        self.compile()
    }

    /// [`Daemon::compile`] of another site file and product directory (the last good copy).
    fn compile_from(
        &self,
        site: &std::path::Path,
        dir: &std::path::Path,
    ) -> Result<Compiled, DaemonError> {
        let mut policy = policy::load(site, dir)?;
        if let Some(m) = self.opts.mode {
            policy.mode = m;
        }
        let roles = host_roles(&policy, &self.opts.host_roles, None)?;
        let selection = compile::select(&policy, &roles)?;
        let ids: Vec<&str> = selection.rules.iter().map(|r| r.id.as_str()).collect();
        let assignment = slots::assign(ids.iter().copied(), &self.state.slots())
            .ok_or(DaemonError::Slots { rules: ids.len() })?;
        let selection = selection.with_slots(|id| assignment.slots[id]);
        let mut host = compile::build(&policy, selection)?;
        // The self-test's frames come through BPF_PROG_TEST_RUN, on loopback: never a real
        // frame's ingress, since portguard is never attached to lo.
        host.tables.config.probe_ifindex = LOOPBACK_IFINDEX;
        if self.opts.datapath_log {
            host.tables.config.diagnostics = portguard_common::config::DIAG_UNPARSED;
        }
        host.tables.config.policy_version = compile::version_of(&host.tables);
        let version = format!("{:016x}", host.tables.config.policy_version);
        if let Some(addr) = self.opts.metrics {
            warn_unopened_metrics(&host, addr);
        }
        Ok(Compiled {
            policy,
            host,
            version,
            fresh_slots: assignment.fresh,
        })
    }

    fn write_state(&self) {
        if let Err(e) = self.state.write(&self.opts.run_dir) {
            log::error!("writing the state: {}", chain(&e));
        }
    }

    /// SIGHUP: apply the policy as it is now on disk; on failure keep what is in force.
    /// `then` runs after the outcome is recorded and before the state is written: whatever it
    /// adds (a trial, its end) is in the same write as the reload count, which `apply` and
    /// `confirm` wait for.
    fn reload(&mut self, then: impl FnOnce(&mut Self)) {
        let started = Instant::now();
        let count = self.state.reload.count + 1;
        let result = self.compile().and_then(|c| self.apply(c));
        if result.is_ok() {
            // The site file is in force again, not the last good copy.
            self.state.last_good = None;
        }
        self.state.reload.count = count;
        self.state.reload.at = state::now_secs();
        match result {
            Ok(true) => log::info!(
                "reload {count}: policy {} in force (switch {} µs, total {} ms)",
                self.state.policy_version,
                self.state.reload.switch_us,
                started.elapsed().as_millis()
            ),
            Ok(false) => log::info!("reload {count}: policy unchanged"),
            Err(e) => {
                let why = chain(&e);
                log::error!(
                    "reload {count} failed, policy {} stays in force: {why}",
                    self.state.policy_version
                );
                self.state.reload.switched = false;
                self.state.reload.error = Some(why);
                self.state.reload.failed += 1;
            }
        }
        then(self);
        self.write_state();
        // Reported in force; now the grace period that lets the next reload write at once.
        self.settle();
    }

    /// (Re)start forwarding the program's diagnostic messages, if asked for: after every load,
    /// since each program instance has its own message ring.
    fn follow_datapath_log(
        &self,
        previous: Option<tokio::task::JoinHandle<()>>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        if let Some(p) = previous {
            p.abort();
        }
        let iface = self.state.interfaces.first()?.name.clone();
        if !self.opts.datapath_log {
            return None;
        }
        let pins = self.opts.pin_dir.clone();
        Some(tokio::spawn(async move {
            if let Err(e) = datapath_log::follow(pins, iface).await {
                log::error!("datapath diagnostics: {}", chain(&e));
            }
        }))
    }

    /// Let the status group read the audit log and its rotations (the writer creates files as
    /// root; this runs with every sample, so new files are shared within seconds).
    fn share_audit_log(&self, gid: u32) {
        let Some(cfg) = &self.audit else { return };
        if let Some(dir) = cfg.path.parent() {
            let _ = state::share_with(dir, gid, 0o750);
        }
        for n in 0..=cfg.keep {
            let p = audit::logfile::rotated(&cfg.path, n);
            if p.exists() {
                let _ = state::share_with(&p, gid, 0o640);
            }
        }
    }

    /// The self-test, and a re-apply if it found something to repair (a link removed or
    /// detached behind the daemon's back).
    fn check(&mut self) {
        if self.self_test() {
            log::warn!("re-attaching what the self-test found detached");
            if let Err(e) = self.compile_in_force().and_then(|c| self.apply(c)) {
                log::error!("re-attaching: {}", chain(&e));
            }
            self.self_test();
        }
    }

    /// Sample counters for rates and last-hit times in `status`.
    fn sample(&mut self) {
        let slots = self
            .state
            .rules
            .iter()
            .map(|r| r.slot + 1)
            .max()
            .unwrap_or(0);
        let Ok(s) = counters::read(&self.opts.pin_dir, slots) else {
            return;
        };
        // Last hits by rule id, kept across restarts and counter resets (`portguard suggest`).
        self.last_sample = self
            .last_sample
            .advance(&s, &self.state.rules, state::now_ms());
        if let Some(gid) = self.state.status_group {
            self.share_audit_log(gid);
        }
        if let Err(e) = self
            .last_sample
            .write(&self.opts.run_dir, self.state.status_group)
        {
            log::warn!("writing the counter sample: {}", chain(&e));
        }
    }
}
