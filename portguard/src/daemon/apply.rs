//! Carrying out a [`Plan`]: switch the pinned program's tables to the new policy (or load a
//! program, once per build), relink, attach and record on each interface, and write down what is
//! in force. Everything that can fail for the whole host (compiling, laying out the tables,
//! loading, the verifier) happens before the first interface is touched.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Instant,
};

use aya::programs::Xdp;

use super::{
    Compiled, Daemon, DaemonError, Selection,
    reconcile::{Current, Held, Plan, Use},
};
use crate::{
    audit,
    ebpf::{
        self, Buffers, counters,
        image::{self, Image},
        instance::{self, Instance, InstanceError},
        links, policy,
    },
    policy::{Mode, Policy},
    state::{self, IfaceEntry, RuleEntry, UnattachedEntry},
};

impl Daemon {
    /// The interfaces this host protects, those that exist now.
    fn targets(&mut self, policy: &Policy) -> Result<Vec<String>, DaemonError> {
        self.targets_for(policy.host.interfaces.as_deref())
    }

    /// The interfaces to protect when the site lists `listed` (`None`: every interface with a
    /// global address), those that exist now; the missing ones are remembered as waiting.
    fn targets_for(&mut self, listed: Option<&[String]>) -> Result<Vec<String>, DaemonError> {
        let addrs = crate::host::addresses()
            .map_err(DaemonError::system("reading interfaces and addresses"))?;
        let existing = existing_interfaces()?;
        let wanted: Vec<String> = if !self.opts.ifaces.is_empty() {
            self.opts.ifaces.clone()
        } else if let Some(i) = listed {
            i.to_vec()
        } else {
            addrs
                .interfaces
                .iter()
                .filter(|(name, global)| **global && name.as_str() != "lo")
                .map(|(name, _)| name.clone())
                .collect()
        };
        // Loopback carries no frame from the wire, and its index marks the self-test's frames.
        let wanted: Vec<String> = wanted
            .into_iter()
            .filter(|i| {
                let lo = i == "lo";
                if lo {
                    log::warn!("lo: never attached (nothing from the wire arrives there)");
                }
                !lo
            })
            .collect();
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

    /// What is in force now, as the kernel's pins say: the links and the program each runs,
    /// the egress recorders, and the pinned programs with the policy each enforces. Incomplete
    /// program pins (a daemon killed while pinning) hold nothing in force and are removed.
    fn current(&self, image: &Image) -> Result<Current, DaemonError> {
        let pin_dir = &self.opts.pin_dir;
        let pinned = links::pinned(pin_dir)?;
        let (instances, partial) = Instance::list(pin_dir)?;
        for dir in partial {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                log::warn!(
                    "removing the incomplete program pins {}: {e}",
                    dir.display()
                );
            }
        }
        let mut programs = Vec::new();
        for i in instances {
            match i.summary(self.buffers()) {
                Ok(s) => programs.push(Held {
                    id: i.id,
                    ours: s.ours,
                    version: format!("{:016x}", s.config.policy_version),
                    fits: image.chunks() <= s.half,
                }),
                // Unreadable: not a program this daemon can write tables for; it is replaced
                // wherever it runs, and removed once nothing runs it.
                Err(e) => {
                    log::warn!("program {}: {}", i.id, super::chain(&e));
                    programs.push(Held {
                        id: i.id,
                        ours: false,
                        version: String::new(),
                        fits: false,
                    });
                }
            }
        }
        Ok(Current {
            recorded: pinned
                .iter()
                .filter(|i| links::egress_pin(pin_dir, i).exists())
                .cloned()
                .collect(),
            pinned: pinned
                .iter()
                .map(|i| {
                    let id = links::pinned_program_id(pin_dir, i).unwrap_or(0);
                    (i.clone(), id)
                })
                .collect(),
            programs,
        })
    }

    /// Put the compiled policy in force: work out the plan, then carry it out. Fails without
    /// changing anything if the tables cannot be laid out or the program does not load.
    /// Whether a new policy went in force.
    pub(super) fn apply(&mut self, c: Compiled) -> Result<bool, DaemonError> {
        let targets = self.targets(&c.policy)?;
        let image = image::build(&c.host.tables)?;
        let plan = Plan::new(&targets, &self.current(&image)?, &c.version);
        let view = host_view()?;
        self.probes = probe_destination(&view)
            .map(|dst| super::health::probes(&c.host, dst))
            .unwrap_or_default();
        let mut ifaces: BTreeMap<String, IfaceEntry> = self
            .state
            .interfaces
            .iter()
            .filter(|i| plan.adopt.contains(&i.name) || plan.relink.contains(&i.name))
            .map(|i| (i.name.clone(), i.clone()))
            .collect();
        let started = Instant::now();
        let instance = self.program_for(&plan, &image, &c)?;
        let switch_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        ebpf::sync_pinned_host(&self.opts.pin_dir, &view)?;
        if !plan.changes_policy() && !plan.adopt.is_empty() {
            log::info!(
                "adopted policy {} already in force on {}",
                c.version,
                plan.adopt.join(", ")
            );
        }
        let mut failures = Vec::new();
        self.put_in_force(&instance, &c, &plan, &mut ifaces, &mut failures);
        for name in &plan.remove {
            links::unpin(&self.opts.pin_dir, name)?;
            ifaces.remove(name);
            log::info!("{name}: detached (no longer selected)");
        }
        self.remove_stale_programs(instance.id);
        self.selection = c
            .policy
            .host
            .interfaces
            .clone()
            .map_or(Selection::Auto, Selection::Listed);
        let changed = plan.changes_policy();
        self.state.unattached = self
            .waiting
            .iter()
            .map(|name| UnattachedEntry {
                name: name.clone(),
                why: "no such interface yet".to_owned(),
            })
            .chain(failures.iter().map(|(name, why)| UnattachedEntry {
                name: name.clone(),
                why: why.clone(),
            }))
            .collect();
        self.record(&c, ifaces.into_values().collect(), changed, switch_us);
        if !failures.is_empty() {
            // What succeeded is in force and recorded; the rest is reported, not hidden.
            return Err(DaemonError::PartlyInForce {
                version: c.version,
                failures: failures
                    .iter()
                    .map(|(_, why)| why.as_str())
                    .collect::<Vec<_>>()
                    .join("; "),
            });
        }
        Ok(changed)
    }

    /// The program `plan` says the interfaces run, with `c`'s tables in force in it: loaded
    /// (once per build), switched to `c`'s tables, or kept as it is.
    fn program_for(
        &mut self,
        plan: &Plan,
        image: &Image,
        c: &Compiled,
    ) -> Result<Instance, DaemonError> {
        let pin_dir = &self.opts.pin_dir;
        // A rule that gets a slot another rule had must not inherit its totals: its counters
        // are zeroed before the tables that count in them go in force (after a load, which
        // creates the counter maps on a fresh host, and before any link runs the program).
        let zero_fresh = || -> Result<(), DaemonError> {
            for slot in &c.fresh_slots {
                counters::zero_rule(pin_dir, *slot)?;
            }
            Ok(())
        };
        let id = match plan.program {
            Use::Load => {
                let i = Instance::create(pin_dir, image, self.buffers())?;
                zero_fresh()?;
                log::info!(
                    "loaded program {} with policy {} (the program is verified once per build; \
                     reloads switch its tables)",
                    i.id,
                    c.version
                );
                return Ok(i);
            }
            Use::Keep(id) | Use::Switch(id) => id,
        };
        let instance =
            Instance::find(pin_dir, id)?.ok_or(DaemonError::Instance(InstanceError::Dir {
                what: "finding the pins of program",
                path: instance::programs_dir(pin_dir).join(id.to_string()),
                source: std::io::ErrorKind::NotFound.into(),
            }))?;
        if let Use::Switch(_) = plan.program {
            zero_fresh()?;
            if !self.settled {
                // The idle generation was live before the last switch: wait until no packet
                // can still be reading it.
                policy::grace_period();
            }
            instance.policy()?.switch(image)?;
            self.settled = false;
            log::info!(
                "program {}: tables of policy {} in force",
                instance.id,
                c.version
            );
        }
        Ok(instance)
    }

    /// Remove the pins of programs no link runs any more, but `keep`'s. The kernel frees them
    /// (and their tables) in its own deferred work once the last reference goes.
    fn remove_stale_programs(&self, keep: u32) {
        let pin_dir = &self.opts.pin_dir;
        let running: BTreeSet<u32> = links::pinned(pin_dir)
            .unwrap_or_default()
            .iter()
            .filter_map(|i| links::pinned_program_id(pin_dir, i).ok())
            .collect();
        let Ok((instances, _)) = Instance::list(pin_dir) else {
            return;
        };
        for i in instances {
            if i.id != keep && !running.contains(&i.id) {
                match i.remove() {
                    Ok(()) => log::info!("program {}: unpinned (no interface runs it)", i.id),
                    Err(e) => log::warn!("{}", super::chain(&e)),
                }
            }
        }
    }

    /// A grace period after a table switch, once the switch is reported: from then on the idle
    /// generation may be rewritten without waiting (see [`policy::grace_period`]).
    pub(super) fn settle(&mut self) {
        if !self.settled {
            policy::grace_period();
            self.settled = true;
        }
    }

    /// Relink, attach and add the egress recorder as `plan` says, with `instance`'s programs.
    /// Interfaces that fail are listed in `failures`, the others carry on.
    fn put_in_force(
        &self,
        instance: &Instance,
        c: &Compiled,
        plan: &Plan,
        ifaces: &mut BTreeMap<String, IfaceEntry>,
        failures: &mut Vec<(String, String)>,
    ) {
        let now = state::now_secs();
        for (name, e) in ifaces.iter_mut() {
            if plan.adopt.contains(name) && e.policy_version != c.version {
                e.policy_version.clone_from(&c.version);
                e.since = now;
            }
        }
        if plan.relink.is_empty() && plan.attach.is_empty() && plan.record.is_empty() {
            return;
        }
        let mut xdp = match instance.xdp() {
            Ok(p) => p,
            Err(e) => {
                let why = super::chain(&e);
                for name in plan.relink.iter().chain(&plan.attach) {
                    failures.push((name.clone(), why.clone()));
                }
                return;
            }
        };
        for name in &plan.relink {
            // One interface failing (its link went away under us) must not leave the
            // others unswitched, nor the state silent about what happened.
            if let Err(e) = links::switch(&mut xdp, &self.opts.pin_dir, name) {
                failures.push((name.clone(), super::chain(&e)));
                continue;
            }
            let e = ifaces.entry(name.clone()).or_insert_with(|| IfaceEntry {
                name: name.clone(),
                ifindex: ifindex(name),
                mode: "unknown".into(),
                policy_version: String::new(),
                since: now,
            });
            e.policy_version.clone_from(&c.version);
            e.since = now;
            log::info!(
                "{name}: switched to program {} (policy {})",
                instance.id,
                c.version
            );
        }
        for name in &plan.attach {
            match self.attach_one(&mut xdp, instance.id, name, &c.version) {
                Ok(entry) => {
                    ifaces.insert(name.clone(), entry);
                }
                Err(why) => failures.push((name.clone(), why)),
            }
        }
        self.record_egress(instance, &plan.record);
    }

    /// Attach `xdp` (program `id`, enforcing `version`) to `name`; its state entry, or why not.
    fn attach_one(
        &self,
        xdp: &mut Xdp,
        id: u32,
        name: &str,
        version: &str,
    ) -> Result<IfaceEntry, String> {
        let mode = links::attach(xdp, &self.opts.pin_dir, name).map_err(|e| super::chain(&e))?;
        log::info!(
            "{name}: attached program {id} (policy {version}) in {} mode",
            mode.name()
        );
        Ok(IfaceEntry {
            name: name.to_owned(),
            ifindex: ifindex(name),
            mode: mode.name().into(),
            policy_version: version.to_owned(),
            since: state::now_secs(),
        })
    }

    /// The enforcing program this kernel (and `--no-xdp-frags`) calls for.
    fn buffers(&self) -> Buffers {
        if self.kernel.frags {
            Buffers::Multi
        } else {
            Buffers::Single
        }
    }

    /// Attach the egress recorder of `instance` to `names`; failures are only logged (replies
    /// to unconnected UDP sockets depend on it, enforcement does not). Without tcx it stays
    /// off, as the daemon said at start.
    fn record_egress(&self, instance: &Instance, names: &[String]) {
        if names.is_empty() || !self.kernel.tcx {
            return;
        }
        let mut egress = match instance.egress() {
            Ok(p) => p,
            Err(e) => {
                log::warn!(
                    "{}; answers to unconnected UDP sockets will be judged by the rules",
                    super::chain(&e)
                );
                return;
            }
        };
        for name in names {
            match links::attach_egress(&mut egress, &self.opts.pin_dir, name) {
                Ok(()) => {
                    log::info!("{name}: egress recorder attached (replies to unconnected UDP)");
                }
                Err(e) => log::warn!(
                    "{}; answers to unconnected UDP sockets will be judged by the rules",
                    super::chain(&e)
                ),
            }
        }
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
        // Identifies the site file across the fleet (`portguard_policy_info{site_sha256}`).
        self.state.site_sha256 = crate::policy::site_sha256(&self.opts.site).unwrap_or_default();
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

    /// Interfaces that should be protected and are not yet get the program in force at once:
    /// the pinned program, attached as it is (nothing compiled, loaded or verified first), so
    /// an interface that appears carries no unjudged traffic while the daemon works out the
    /// rest. Whether any was attached.
    pub(super) fn attach_new(&mut self) -> Result<bool, DaemonError> {
        let listed = match self.selection.clone() {
            // Nothing was ever put in force by this daemon: the full apply attaches.
            Selection::Unknown => return Ok(false),
            Selection::Listed(l) => Some(l),
            Selection::Auto => None,
        };
        let pin_dir = self.opts.pin_dir.clone();
        let pinned = links::pinned(&pin_dir)?;
        let new: Vec<String> = self
            .targets_for(listed.as_deref())?
            .into_iter()
            .filter(|t| !pinned.contains(t))
            .collect();
        if new.is_empty() {
            return Ok(false);
        }
        let Some(instance) = self.in_force()? else {
            return Ok(false);
        };
        let mut xdp = instance.xdp()?;
        let version = self.state.policy_version.clone();
        // An interface this daemon attached whose link pin is gone: removed behind its back
        // (netlink tells the daemon before the self-test would). A failure to report, not a
        // new interface.
        let lost: Vec<String> = new
            .iter()
            .filter(|n| self.state.interfaces.iter().any(|i| &i.name == *n))
            .map(|n| {
                format!(
                    "{n}: its XDP link was gone (removed behind the daemon's back?); attached again"
                )
            })
            .collect();
        for p in &lost {
            log::error!("{p}");
        }
        if !lost.is_empty() {
            let h = &mut self.state.health;
            h.failures += 1;
            h.ok = false;
            h.problems = lost;
        }
        for name in &new {
            match self.attach_one(&mut xdp, instance.id, name, &version) {
                Ok(entry) => {
                    self.state.interfaces.retain(|i| &i.name != name);
                    self.state.interfaces.push(entry);
                    self.state.unattached.retain(|u| &u.name != name);
                }
                Err(why) => log::error!("{name}: {why}"),
            }
        }
        // A recorder whose XDP link went away may still be attached: keep it.
        let unrecorded: Vec<String> = new
            .into_iter()
            .filter(|n| !links::egress_pin(&pin_dir, n).exists())
            .collect();
        self.record_egress(&instance, &unrecorded);
        self.write_state();
        Ok(true)
    }

    /// The program in force: the one the pinned links run, else (no interface attached) this
    /// build's pinned program that enforces the policy the state records.
    fn in_force(&self) -> Result<Option<Instance>, DaemonError> {
        let pin_dir = &self.opts.pin_dir;
        let (instances, _) = Instance::list(pin_dir)?;
        let running = links::pinned(pin_dir)?.iter().find_map(|i| {
            links::pinned_program_id(pin_dir, i)
                .ok()
                .filter(|id| *id != 0)
        });
        if let Some(id) = running {
            return Ok(instances.into_iter().find(|i| i.id == id));
        }
        Ok(instances.into_iter().rev().find(|i| {
            i.summary(self.buffers()).is_ok_and(|s| {
                s.ours && format!("{:016x}", s.config.policy_version) == self.state.policy_version
            })
        }))
    }

    /// Interfaces or addresses changed: attach to interfaces that appeared, forget those that
    /// went away, and put the policy in force again (the host's roles may follow its
    /// addresses).
    pub(super) fn sync_interfaces(&mut self) -> Result<(), DaemonError> {
        let attached = self.attach_new()?;
        let addrs = crate::host::addresses().map_err(DaemonError::system("reading addresses"))?;
        self.refresh_host()?;
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
                log::warn!("{name}: removing the stale link pin: {}", super::chain(&e));
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
        if attached || appeared || auto_new || !gone.is_empty() {
            let c = self.compile()?;
            self.apply(c)?;
        } else {
            self.write_state();
        }
        Ok(())
    }
}

impl Daemon {
    /// Tell the datapath the host's addresses and MACs as the kernel has them now. Called on
    /// every rtnetlink event at once (before the settle delay): the datapath asks the routing
    /// table itself about addresses it does not know, so this keeps the fast path fast, and
    /// an address removed stops counting as the host's.
    pub(super) fn refresh_host(&self) -> Result<(), DaemonError> {
        ebpf::sync_pinned_host(&self.opts.pin_dir, &host_view()?)?;
        Ok(())
    }
}

/// The address the self-test's frames go to: one of the host's own, IPv4 first, not loopback
/// nor link-local (any would do for the program; these read best in messages).
fn probe_destination(view: &ebpf::HostView) -> Option<std::net::IpAddr> {
    let usable = |a: &&std::net::IpAddr| match a {
        std::net::IpAddr::V4(v) => !v.is_loopback(),
        std::net::IpAddr::V6(v) => !v.is_loopback() && v.segments()[0] & 0xffc0 != 0xfe80,
    };
    let mut candidates: Vec<&std::net::IpAddr> = view.unicast.iter().filter(usable).collect();
    candidates.sort_by_key(|a| a.is_ipv6());
    candidates.first().map(|a| **a)
}

/// The host's addresses (the local routing table) and the MACs its stack receives on.
fn host_view() -> Result<ebpf::HostView, DaemonError> {
    let addrs =
        crate::host::addresses().map_err(DaemonError::system("reading the local routing table"))?;
    let links = crate::host::links().map_err(DaemonError::system("listing links"))?;
    Ok(ebpf::HostView {
        unicast: addrs.unicast,
        broadcast: addrs.broadcast,
        macs: crate::host::host_macs(&links),
    })
}

/// Names of the interfaces of this network namespace (`if_nameindex` asks the kernel over
/// netlink, so it is right in any namespace, unlike `/sys/class/net`).
fn existing_interfaces() -> Result<BTreeSet<String>, DaemonError> {
    // SAFETY: if_nameindex returns an array terminated by a zero entry, freed below.
    let head = unsafe { libc::if_nameindex() };
    if head.is_null() {
        return Err(DaemonError::system("listing interfaces")(
            std::io::Error::last_os_error(),
        ));
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
