//! `portguard run`: put this host's slice of the site policy in force and keep it there.
//!
//! The daemon is a reconciler. The kernel holds enforcement (pinned links, programs, maps);
//! the daemon compiles the policy, makes the pins match it, records what it did in the run
//! directory, and then waits: SIGHUP reloads, link/address changes re-sync, a timer samples
//! counters. It holds no BPF object between steps, so killing it at any point leaves the last
//! complete state enforcing, and the next daemon adopts it.

mod audit_task;
pub mod datapath_log;
pub mod links;
pub mod metrics;
pub mod netwatch;
pub mod slots;
pub mod state;
pub mod system;
mod trial;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    audit,
    compile::{HostPolicy, for_host, host_roles},
    ebpf::{self, Datapath},
    policy::{self, Mode, Policy},
};
use audit_task::AuditTask;
use state::{IfaceEntry, RuleEntry, SavedSample, State};
use trial::until;

/// How often counters are sampled for rates and last-hit times.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// Changes reported by netlink arrive in bursts; wait this long for the burst to end.
const SETTLE: Duration = Duration::from_millis(200);

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
    /// Prometheus endpoint address.
    pub metrics: Option<std::net::SocketAddr>,
    /// Audit log path override (else the site's `[audit] path`).
    pub audit_log: Option<PathBuf>,
    /// Group (id) that may read status and audit without access to the maps.
    pub status_group: Option<u32>,
    /// Turn on the program's diagnostic messages and forward them to the log.
    pub datapath_log: bool,
}

/// A policy compiled and ready to load, not yet in force.
struct Compiled {
    policy: Policy,
    host: HostPolicy,
    version: String,
    fresh_slots: Vec<u32>,
}

/// Which interfaces an `apply` touches, and how.
struct Plan<'a> {
    /// Pinned links whose program is replaced.
    switch: &'a [&'a String],
    /// Interfaces attached for the first time.
    attach: &'a [&'a String],
    /// Interfaces that get the egress recorder.
    record: &'a [&'a String],
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
    /// Where audit records go, as the policy in force says.
    audit: Option<audit::AuditConfig>,
    /// When the policy on trial reverts, if one is.
    trial_deadline: Option<Instant>,
}

/// Run the daemon until SIGTERM or SIGINT. Enforcement stays in place when it returns.
pub fn run(opts: Options) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?
        .block_on(serve(opts))
}

/// Everything before the daemon waits for events: check, compile, create the directories, put
/// the policy in force (or adopt it), and resume a trial a previous daemon left running.
fn start(opts: Options) -> anyhow::Result<Daemon> {
    system::check_capabilities()?;
    let previous = match State::read(&opts.run_dir) {
        Ok(s) => s,
        Err(e) => {
            log::warn!("ignoring the previous state: {e:#}");
            None
        }
    };
    let mut daemon = Daemon::new(opts, previous);
    // A policy that does not compile changes nothing, not even a directory.
    daemon
        .compile()
        .context("compiling the policy (nothing was changed)")?;
    let opts = &daemon.opts;
    system::ensure_pin_dir(&opts.pin_dir)?;
    std::fs::create_dir_all(&opts.run_dir)
        .with_context(|| format!("creating {}", opts.run_dir.display()))?;
    if let Some(gid) = opts.status_group {
        state::share_with(&opts.run_dir, gid, 0o750)?;
    }
    daemon
        .apply()
        .context("putting the policy in force (nothing was changed)")?;
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
        None => daemon.confirm(),
    }
    Ok(daemon)
}

async fn serve(opts: Options) -> anyhow::Result<()> {
    let mut daemon = start(opts)?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let watch = netwatch::NetWatch::new().context("subscribing to rtnetlink")?;
    let mut ticks = tokio::time::interval(SAMPLE_EVERY);
    // Enforcement does not depend on auditing: a log that cannot be written is an error in the
    // log, not a reason to leave the host unprotected.
    let mut auditor = daemon.audit.clone().and_then(|cfg| {
        AuditTask::start(&daemon, cfg)
            .map_err(|e| log::error!("{e:#}"))
            .ok()
    });
    if let Some(addr) = daemon.opts.metrics {
        let (pins, run) = (daemon.opts.pin_dir.clone(), daemon.opts.run_dir.clone());
        let listener = metrics::bind(addr).await?;
        tokio::spawn(async move {
            if let Err(e) = metrics::serve(listener, pins, run).await {
                log::error!("metrics endpoint: {e:#}");
            }
        });
    }
    let mut diag = daemon.follow_datapath_log(None);
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
                            Err(e) => log::error!("{e:#}"),
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
                tokio::time::sleep(SETTLE).await;
                if let Err(e) = daemon.sync_interfaces() {
                    log::error!("re-syncing interfaces and addresses: {e:#}");
                }
            }
            _ = ticks.tick() => daemon.sample(),
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

impl Daemon {
    fn new(opts: Options, previous: Option<State>) -> Self {
        let mut state = previous.unwrap_or_default();
        // A new daemon forgets removed rules: their slots are free again.
        state.rules.retain(|r| r.active);
        state.pid = std::process::id();
        state.reload = state::ReloadEntry::default();
        state.status_group = opts.status_group;
        let last_sample = SavedSample::read(&opts.run_dir).unwrap_or_default();
        Daemon {
            opts,
            state,
            waiting: BTreeSet::new(),
            last_sample,
            rule_ids: audit::RuleIds::default(),
            audit: None,
            trial_deadline: None,
        }
    }

    /// Compile the site policy for this host, with slots kept from what is in force.
    fn compile(&self) -> anyhow::Result<Compiled> {
        let dir = crate::paths::policies_dir(self.opts.policies.as_deref());
        let mut policy = policy::load(&self.opts.site, &dir).map_err(|d| anyhow::anyhow!("{d}"))?;
        if let Some(m) = self.opts.mode {
            policy.mode = m;
        }
        let roles = host_roles(&policy, &self.opts.host_roles, None)?;
        // The rule ids come first, then slots for them, then the tables with those slots.
        let ids = for_host(&policy, &roles, None)?;
        let assignment =
            slots::assign(ids.rules.iter().map(|r| r.id.as_str()), &self.state.slots())
                .context("no free counter slots")?;
        let slot_of = |id: &str| assignment.slots[id];
        let mut host = for_host(&policy, &roles, Some(&slot_of))?;
        if self.opts.datapath_log {
            host.tables.config.diagnostics = portguard_common::config::DIAG_UNPARSED;
            host.tables.config.policy_version = crate::compile::version_of(&host.tables);
        }
        let version = format!("{:016x}", host.tables.config.policy_version);
        Ok(Compiled {
            policy,
            host,
            version,
            fresh_slots: assignment.fresh,
        })
    }

    /// The interfaces this host protects, those that exist now.
    fn targets(&mut self, policy: &Policy) -> anyhow::Result<Vec<String>> {
        let addrs = crate::host::addresses().context("reading interfaces")?;
        let existing = existing_interfaces()?;
        let wanted: Vec<String> = if !self.opts.ifaces.is_empty() {
            self.opts.ifaces.clone()
        } else if let Some(i) = &policy.host.interfaces {
            i.clone()
        } else {
            addrs
                .interfaces
                .iter()
                .filter(|(name, global)| **global && name.as_str() != "lo")
                .map(|(name, _)| name.clone())
                .collect()
        };
        self.waiting = wanted
            .iter()
            .filter(|i| !existing.contains(*i))
            .cloned()
            .collect();
        for w in &self.waiting {
            log::warn!("{w}: no such interface yet; it will be attached when it appears");
        }
        Ok(wanted
            .into_iter()
            .filter(|i| existing.contains(i))
            .collect())
    }

    /// Make the kernel enforce the current site policy. Fails without changing anything if the
    /// policy does not compile or the program does not load.
    fn apply(&mut self) -> anyhow::Result<bool> {
        let c = self.compile()?;
        let targets = self.targets(&c.policy)?;
        let pinned = links::pinned(&self.opts.pin_dir)?;
        let attached: BTreeMap<String, IfaceEntry> = self
            .state
            .interfaces
            .iter()
            .filter(|i| pinned.contains(&i.name))
            .map(|i| (i.name.clone(), i.clone()))
            .collect();
        let to_switch: Vec<&String> = targets
            .iter()
            .filter(|i| {
                pinned.contains(i)
                    && attached
                        .get(*i)
                        .is_none_or(|e| e.policy_version != c.version)
            })
            .collect();
        let to_attach: Vec<&String> = targets.iter().filter(|i| !pinned.contains(i)).collect();
        let to_record: Vec<&String> = targets
            .iter()
            .filter(|i| !links::egress_pin(&self.opts.pin_dir, i).exists())
            .collect();
        let to_remove: Vec<&String> = pinned.iter().filter(|i| !targets.contains(i)).collect();
        let changed = !to_switch.is_empty() || !to_attach.is_empty();
        let addrs = crate::host::addresses().context("reading addresses")?;
        let mut ifaces: BTreeMap<String, IfaceEntry> = attached;
        let mut switch_us = 0;
        let mut failures = Vec::new();
        if changed || !to_record.is_empty() {
            // Everything that can fail comes before the first interface is touched: the
            // program loads (and passes the verifier) with its tables complete.
            let mut dp = Datapath::load(&c.host.tables, &self.opts.pin_dir)
                .context("loading the XDP program")?;
            for slot in &c.fresh_slots {
                crate::stats::zero_rule(&self.opts.pin_dir, *slot)?;
            }
            ebpf::sync_pinned_local_addrs(&self.opts.pin_dir, &addrs.unicast, &addrs.broadcast)?;
            let plan = Plan {
                switch: &to_switch,
                attach: &to_attach,
                record: &to_record,
            };
            switch_us = self.put_in_force(&mut dp, &c, &plan, &mut ifaces, &mut failures);
            // Dropping the datapath closes our handles only: the pins hold what is attached.
            drop(dp);
        } else {
            ebpf::sync_pinned_local_addrs(&self.opts.pin_dir, &addrs.unicast, &addrs.broadcast)?;
            if !targets.is_empty() {
                log::info!(
                    "adopted policy {} already in force on {}",
                    c.version,
                    targets.join(", ")
                );
            }
        }
        for name in to_remove {
            links::unpin(&self.opts.pin_dir, name)?;
            ifaces.remove(name);
            log::info!("{name}: detached (no longer selected)");
        }
        self.record(&c, ifaces.into_values().collect(), changed, switch_us);
        if !failures.is_empty() {
            // What succeeded is in force and recorded; the rest is reported, not hidden.
            anyhow::bail!(
                "policy {} is not in force on every interface: {}",
                c.version,
                failures.join("; ")
            );
        }
        Ok(changed)
    }

    /// Switch, attach and add the egress recorder as `plan` says, with the loaded `dp`.
    /// Interfaces that fail are listed in `failures`, the others carry on; the time from the
    /// first switch to the last, in µs.
    fn put_in_force(
        &self,
        dp: &mut Datapath,
        c: &Compiled,
        plan: &Plan<'_>,
        ifaces: &mut BTreeMap<String, IfaceEntry>,
        failures: &mut Vec<String>,
    ) -> u64 {
        let now = state::now_secs();
        let (to_switch, to_attach, to_record) = (plan.switch, plan.attach, plan.record);
        let started = Instant::now();
        for name in to_switch {
            // One interface failing (its link went away under us) must not leave the
            // others unswitched, nor the state silent about what happened.
            if let Err(e) = links::switch(dp, &self.opts.pin_dir, name) {
                failures.push(format!("{name}: {e:#}"));
                continue;
            }
            let e = ifaces.entry((*name).clone()).or_insert_with(|| IfaceEntry {
                name: (*name).clone(),
                ifindex: ifindex(name),
                mode: "unknown".into(),
                policy_version: String::new(),
                since: now,
            });
            e.policy_version.clone_from(&c.version);
            e.since = now;
            log::info!("{name}: switched to policy {}", c.version);
        }
        let switch_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        for name in to_attach {
            let mode = match links::attach(dp, &self.opts.pin_dir, name) {
                Ok(mode) => mode,
                Err(e) => {
                    failures.push(format!("{name}: {e:#}"));
                    continue;
                }
            };
            log::info!(
                "{name}: attached policy {} in {} mode",
                c.version,
                mode.name()
            );
            ifaces.insert(
                (*name).clone(),
                IfaceEntry {
                    name: (*name).clone(),
                    ifindex: ifindex(name),
                    mode: mode.name().into(),
                    policy_version: c.version.clone(),
                    since: now,
                },
            );
        }
        for name in to_record {
            match links::attach_egress(dp, &self.opts.pin_dir, name) {
                Ok(()) => {
                    log::info!("{name}: egress recorder attached (replies to unconnected UDP)");
                }
                Err(e) => log::warn!(
                    "{name}: {e:#}; answers to unconnected UDP sockets will be judged by the rules"
                ),
            }
        }
        switch_us
    }

    /// Update and write the state after `apply`.
    fn record(&mut self, c: &Compiled, interfaces: Vec<IfaceEntry>, changed: bool, switch_us: u64) {
        let active: BTreeSet<&str> = c.host.rules.iter().map(|r| r.id.as_str()).collect();
        let mut rules: Vec<RuleEntry> = c
            .host
            .rules
            .iter()
            .map(|r| RuleEntry {
                slot: r.slot,
                id: r.id.clone(),
                product: r.product.clone(),
                purpose: r.purpose.clone(),
                active: true,
            })
            .collect();
        rules.extend(
            self.state
                .rules
                .iter()
                .filter(|r| !active.contains(r.id.as_str()))
                .map(|r| RuleEntry {
                    active: false,
                    ..r.clone()
                }),
        );
        if changed || self.state.policy_version != c.version {
            self.state.loaded_at = state::now_secs();
        }
        self.state.site.clone_from(&self.opts.site);
        self.state.policies.clone_from(&self.opts.policies);
        self.state.host_roles.clone_from(&self.opts.host_roles);
        self.state.mode = if c.policy.mode == Mode::Audit {
            "audit".into()
        } else {
            "enforce".into()
        };
        self.state.policy_version.clone_from(&c.version);
        self.state.roles.clone_from(&c.host.roles);
        self.state.interfaces = interfaces;
        self.state.rules = rules;
        if let Ok(mut ids) = self.rule_ids.write() {
            *ids = c
                .host
                .rules
                .iter()
                .map(|r| (r.slot, r.id.clone()))
                .collect();
        }
        let mut audit_cfg = audit::AuditConfig::from(&c.policy.audit);
        if let Some(p) = &self.opts.audit_log {
            audit_cfg.path.clone_from(p);
        }
        self.audit = Some(audit_cfg);
        self.state.reload.switched = changed;
        self.state.reload.switch_us = switch_us;
        self.state.reload.error = None;
        self.write_state();
    }

    fn write_state(&self) {
        if let Err(e) = self.state.write(&self.opts.run_dir) {
            log::error!("writing the state: {e:#}");
        }
    }

    /// SIGHUP: apply the policy as it is now on disk; on failure keep what is in force.
    fn reload(&mut self) {
        let started = Instant::now();
        let count = self.state.reload.count + 1;
        let result = self.apply();
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
                log::error!(
                    "reload {count} failed, policy {} stays in force: {e:#}",
                    self.state.policy_version
                );
                self.state.reload.switched = false;
                self.state.reload.error = Some(format!("{e:#}"));
            }
        }
        self.write_state();
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
                log::error!("datapath diagnostics: {e:#}");
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

    /// Interfaces or addresses changed: refresh the local addresses, attach to interfaces that
    /// appeared, forget those that went away.
    fn sync_interfaces(&mut self) -> anyhow::Result<()> {
        let addrs = crate::host::addresses().context("reading addresses")?;
        ebpf::sync_pinned_local_addrs(&self.opts.pin_dir, &addrs.unicast, &addrs.broadcast)?;
        let existing = existing_interfaces()?;
        let gone: Vec<String> = self
            .state
            .interfaces
            .iter()
            .filter(|i| !existing.contains(&i.name) || ifindex(&i.name) != i.ifindex)
            .map(|i| i.name.clone())
            .collect();
        for name in &gone {
            // The kernel detached the link when the device went away; drop the stale pin.
            if let Err(e) = links::unpin(&self.opts.pin_dir, name) {
                log::warn!("{name}: removing the stale link pin: {e:#}");
            }
            log::info!("{name}: interface went away");
            self.state.interfaces.retain(|i| &i.name != name);
        }
        let appeared = self.waiting.iter().any(|w| existing.contains(w));
        let auto_new = self.opts.ifaces.is_empty()
            && addrs.interfaces.iter().any(|(name, global)| {
                *global
                    && name.as_str() != "lo"
                    && !self.state.interfaces.iter().any(|i| &i.name == name)
            });
        if appeared || auto_new || !gone.is_empty() {
            self.apply()?;
        } else {
            self.write_state();
        }
        Ok(())
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
        let Ok(s) = crate::stats::read(&self.opts.pin_dir, slots) else {
            return;
        };
        let now = state::now_secs();
        let last_hit = s
            .rules
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let before = self.last_sample.packets.get(i).copied().unwrap_or(0);
                let prev = self.last_sample.last_hit.get(i).copied().unwrap_or(0);
                if c.packets > before { now } else { prev }
            })
            .collect();
        self.last_sample = SavedSample {
            at_ms: state::now_ms(),
            packets: s.rules.iter().map(|c| c.packets).collect(),
            bytes: s.rules.iter().map(|c| c.bytes).collect(),
            last_hit,
            reasons: s.reasons.iter().map(|c| (c.packets, c.bytes)).collect(),
            audit: (s.audit.emitted, s.audit.suppressed, s.audit.lost),
        };
        if let Some(gid) = self.state.status_group {
            self.share_audit_log(gid);
        }
        if let Err(e) = self
            .last_sample
            .write(&self.opts.run_dir, self.state.status_group)
        {
            log::warn!("writing the counter sample: {e:#}");
        }
    }
}

/// Names of the interfaces of this network namespace (`if_nameindex` asks the kernel over
/// netlink, so it is right in any namespace, unlike `/sys/class/net`).
fn existing_interfaces() -> anyhow::Result<BTreeSet<String>> {
    // SAFETY: if_nameindex returns an array terminated by a zero entry, freed below.
    let head = unsafe { libc::if_nameindex() };
    if head.is_null() {
        return Err(std::io::Error::last_os_error()).context("listing interfaces");
    }
    let mut out = BTreeSet::new();
    let mut cur = head;
    // SAFETY: walking the array until its terminating entry.
    unsafe {
        while (*cur).if_index != 0 {
            out.insert(
                std::ffi::CStr::from_ptr((*cur).if_name)
                    .to_string_lossy()
                    .into_owned(),
            );
            cur = cur.add(1);
        }
        libc::if_freenameindex(head);
    }
    Ok(out)
}

/// Index of an interface, 0 if it does not exist.
fn ifindex(name: &str) -> u32 {
    std::ffi::CString::new(name).map_or(0, |c| {
        // SAFETY: a valid NUL-terminated name.
        unsafe { libc::if_nametoindex(c.as_ptr()) }
    })
}
