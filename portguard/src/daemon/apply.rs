//! Carrying out a [`Plan`]: load the program with the new tables, switch, attach and record on
//! each interface, and write down what is in force. Everything that can fail for the whole host
//! (compiling, loading, the verifier) happens before the first interface is touched.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Instant,
};

use super::{
    Compiled, Daemon, DaemonError,
    reconcile::{Current, Plan},
};
use crate::{
    audit,
    ebpf::{self, Datapath, counters, links},
    policy::{Mode, Policy},
    state::{self, IfaceEntry, RuleEntry, UnattachedEntry},
};

impl Daemon {
    /// The interfaces this host protects, those that exist now.
    fn targets(&mut self, policy: &Policy) -> Result<Vec<String>, DaemonError> {
        let addrs = crate::host::addresses()
            .map_err(DaemonError::system("reading interfaces and addresses"))?;
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

    /// What is in force now: the pins, with the versions the state file records for them.
    fn current(&self) -> Result<Current, DaemonError> {
        let pin_dir = &self.opts.pin_dir;
        let pinned = links::pinned(pin_dir)?;
        let version = |name: &str| {
            self.state
                .interfaces
                .iter()
                .find(|i| i.name == name)
                .map(|i| i.policy_version.clone())
                .unwrap_or_default()
        };
        Ok(Current {
            recorded: pinned
                .iter()
                .filter(|i| links::egress_pin(pin_dir, i).exists())
                .cloned()
                .collect(),
            pinned: pinned.iter().map(|i| (i.clone(), version(i))).collect(),
        })
    }

    /// Put the compiled policy in force: work out the plan, then carry it out. Fails without
    /// changing anything if the program does not load. Whether a new policy went in force.
    pub(super) fn apply(&mut self, c: Compiled) -> Result<bool, DaemonError> {
        let targets = self.targets(&c.policy)?;
        let plan = Plan::new(&targets, &self.current()?, &c.version);
        let view = host_view()?;
        self.probes = probe_destination(&view)
            .map(|dst| super::health::probes(&c.host, dst))
            .unwrap_or_default();
        let mut ifaces: BTreeMap<String, IfaceEntry> = self
            .state
            .interfaces
            .iter()
            .filter(|i| plan.adopt.contains(&i.name) || plan.switch.contains(&i.name))
            .map(|i| (i.name.clone(), i.clone()))
            .collect();
        let mut switch_us = 0;
        let mut failures = Vec::new();
        if plan.needs_program() {
            let mut dp = Datapath::load(&c.host.tables, &self.opts.pin_dir)?;
            for slot in &c.fresh_slots {
                counters::zero_rule(&self.opts.pin_dir, *slot)?;
            }
            ebpf::sync_pinned_host(&self.opts.pin_dir, &view)?;
            switch_us = self.put_in_force(&mut dp, &c, &plan, &mut ifaces, &mut failures);
            // Dropping the datapath closes our handles only: the pins hold what is attached.
            drop(dp);
        } else {
            ebpf::sync_pinned_host(&self.opts.pin_dir, &view)?;
            if !plan.adopt.is_empty() {
                log::info!(
                    "adopted policy {} already in force on {}",
                    c.version,
                    plan.adopt.join(", ")
                );
            }
        }
        for name in &plan.remove {
            links::unpin(&self.opts.pin_dir, name)?;
            ifaces.remove(name);
            log::info!("{name}: detached (no longer selected)");
        }
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

    /// Switch, attach and add the egress recorder as `plan` says, with the loaded `dp`.
    /// Interfaces that fail are listed in `failures`, the others carry on; the time from the
    /// first switch to the last, in µs.
    fn put_in_force(
        &self,
        dp: &mut Datapath,
        c: &Compiled,
        plan: &Plan,
        ifaces: &mut BTreeMap<String, IfaceEntry>,
        failures: &mut Vec<(String, String)>,
    ) -> u64 {
        let now = state::now_secs();
        let started = Instant::now();
        for name in &plan.switch {
            // One interface failing (its link went away under us) must not leave the
            // others unswitched, nor the state silent about what happened.
            if let Err(e) = links::switch(dp, &self.opts.pin_dir, name) {
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
            log::info!("{name}: switched to policy {}", c.version);
        }
        let switch_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        for name in &plan.attach {
            let mode = match links::attach(dp, &self.opts.pin_dir, name) {
                Ok(mode) => mode,
                Err(e) => {
                    failures.push((name.clone(), super::chain(&e)));
                    continue;
                }
            };
            log::info!(
                "{name}: attached policy {} in {} mode",
                c.version,
                mode.name()
            );
            ifaces.insert(
                name.clone(),
                IfaceEntry {
                    name: name.clone(),
                    ifindex: ifindex(name),
                    mode: mode.name().into(),
                    policy_version: c.version.clone(),
                    since: now,
                },
            );
        }
        for name in &plan.record {
            match links::attach_egress(dp, &self.opts.pin_dir, name) {
                Ok(()) => {
                    log::info!("{name}: egress recorder attached (replies to unconnected UDP)");
                }
                Err(e) => log::warn!(
                    "{}; answers to unconnected UDP sockets will be judged by the rules",
                    super::chain(&e)
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

    /// Interfaces or addresses changed: refresh the local addresses, attach to interfaces that
    /// appeared, forget those that went away.
    pub(super) fn sync_interfaces(&mut self) -> Result<(), DaemonError> {
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
        if appeared || auto_new || !gone.is_empty() {
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
