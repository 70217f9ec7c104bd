//! What is in force and what it has done: the data behind `status`, its JSON, and metrics.
//!
//! Built from two sources that both outlive the daemon: the pinned counter maps (the truth about
//! packets) and the state file (which rule owns which slot, what is attached where). So the
//! report works the same whether the daemon runs or not.

use std::path::Path;

use serde::Serialize;

use portguard_common::{maps::MAX_RULES, reason::Reason};

use super::{
    HealthEntry, IfaceEntry, ReloadEntry, SavedSample, State, StateError, TrialEntry,
    UnattachedEntry, now_ms, now_secs,
};
use crate::ebpf::counters::{self, CountersError, Sample};

/// Why the report could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The state file could not be read.
    #[error(transparent)]
    State(#[from] StateError),
    /// The pinned counters could not be read (and no daemon sample stands in for them).
    #[error(transparent)]
    Counters(#[from] CountersError),
}

/// One rule's line in the report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RuleReport {
    /// Counter slot.
    pub slot: u32,
    /// Rule id (`slot-N` when the state file is missing).
    pub id: String,
    /// Product.
    pub product: String,
    /// Purpose.
    pub purpose: String,
    /// False for rules removed by a reload (totals kept until restart).
    pub active: bool,
    /// Packets allowed by this rule.
    pub packets: u64,
    /// Bytes allowed by this rule.
    pub bytes: u64,
    /// Packets per second over the last interval, when one is known.
    pub rate_pps: Option<f64>,
    /// Last time the rule was seen to match (RFC 3339), when known.
    pub last_hit: Option<String>,
    /// The same in Unix seconds, 0 = never (for metrics).
    #[serde(skip)]
    pub last_hit_unix: u64,
}

/// One reason's line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReasonReport {
    /// Reason name.
    pub reason: &'static str,
    /// `pass` or `drop` (in enforce mode).
    pub verdict: &'static str,
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

/// Audit emission counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AuditReport {
    /// Events written to the ring buffer.
    pub emitted: u64,
    /// Denied packets not reported by the rate limit.
    pub suppressed: u64,
    /// Events lost because the ring buffer was full.
    pub lost: u64,
}

/// The whole report (`status --json` prints this; field names are stable).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// Pid of the daemon, when one is running.
    pub daemon_pid: Option<u32>,
    /// When the counters come from the daemon's sample rather than the maps (RFC 3339).
    pub snapshot_at: Option<String>,
    /// Site file in force.
    pub site: String,
    /// `enforce` or `audit`.
    pub mode: String,
    /// Version of the policy in force.
    pub policy_version: String,
    /// The site file in force: the first 16 hex digits of its SHA-256 (see
    /// [`crate::policy::site_sha256`]); empty before a daemon recorded it.
    pub site_sha256: String,
    /// When it was loaded (RFC 3339).
    pub loaded_at: Option<String>,
    /// The host's roles.
    pub roles: Vec<String>,
    /// Interfaces attached.
    pub interfaces: Vec<IfaceEntry>,
    /// Rules, in slot order of the state file (active first).
    pub rules: Vec<RuleReport>,
    /// Everything not allowed by a rule, by reason.
    pub reasons: Vec<ReasonReport>,
    /// Audit event counters.
    pub audit: AuditReport,
    /// The last reload.
    pub reload: ReloadEntry,
    /// The policy in force is on trial (`apply --confirm-within`).
    pub trial: Option<TrialEntry>,
    /// The daemon's last self-test.
    pub health: HealthEntry,
    /// Interfaces the site selects that run no program of the policy.
    pub unattached: Vec<UnattachedEntry>,
    /// Why the host is not enforcing what the site says (empty: it is); `status` exits 1
    /// when this is not empty.
    pub not_enforcing: Vec<String>,
}

/// RFC 3339 form of a Unix time in seconds.
#[must_use]
pub fn rfc3339(secs: u64) -> Option<String> {
    let secs = i64::try_from(secs).ok().filter(|s| *s > 0)?;
    jiff::Timestamp::from_second(secs)
        .ok()
        .map(|t| t.to_string())
}

/// A previous reading to compute rates against.
#[derive(Clone, Debug)]
pub struct Previous {
    /// When it was read (Unix ms).
    pub at_ms: u64,
    /// Packets per slot.
    pub packets: Vec<u64>,
}

/// Build the report from the pins in `pin_dir` and the state in `run_dir`. Rates come from
/// `previous` when given (watch mode), else from the daemon's last sample.
pub fn build(
    pin_dir: &Path,
    run_dir: &Path,
    previous: Option<&Previous>,
) -> Result<(Report, Previous), ReportError> {
    build_as(pin_dir, run_dir, previous, Viewer::Command)
}

/// The report as the daemon itself sees it (its metrics endpoint): the state's pid is this
/// process, which [`State::daemon_pid`] does not count as a running daemon for a command.
pub fn build_in_daemon(pin_dir: &Path, run_dir: &Path) -> Result<Report, ReportError> {
    build_as(pin_dir, run_dir, None, Viewer::Daemon).map(|(r, _)| r)
}

/// Who asks for the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Viewer {
    /// A command (`status`, the lab): the daemon is another process, if it runs.
    Command,
    /// The daemon that wrote the state.
    Daemon,
}

fn build_as(
    pin_dir: &Path,
    run_dir: &Path,
    previous: Option<&Previous>,
    viewer: Viewer,
) -> Result<(Report, Previous), ReportError> {
    let state = State::read(run_dir)?;
    let slots = state.as_ref().map_or(MAX_RULES, |s| {
        s.rules.iter().map(|r| r.slot + 1).max().unwrap_or(0)
    });
    let saved = SavedSample::read(run_dir);
    // Operators in the status group may read the run directory but not the maps: they get
    // the daemon's latest sample (at most a few seconds old) instead.
    let (sample, snapshot_ms) = match counters::read(pin_dir, slots) {
        Ok(s) => (s, None),
        Err(e) => match &saved {
            Some(s) if e.is_permission() => (s.to_sample(), Some(s.at_ms)),
            _ => return Err(e.into()),
        },
    };
    let at_ms = snapshot_ms.unwrap_or_else(now_ms);
    let baseline = previous.cloned().or_else(|| {
        saved.as_ref().map(|s| Previous {
            at_ms: s.at_ms,
            packets: s.packets.clone(),
        })
    });
    let rate = |slot: u32, packets: u64| {
        let b = baseline.as_ref()?;
        let dt = at_ms.checked_sub(b.at_ms)?;
        let before = *b.packets.get(slot as usize)?;
        (dt >= 500).then(|| packets.saturating_sub(before) as f64 * 1000.0 / dt as f64)
    };
    // Unix seconds, 0 = never: moved since the daemon's sample is now, else what the sample
    // recorded (by rule id, which survives restarts and reused slots; else by slot).
    let last_hit = |slot: u32, id: &str, packets: u64| {
        let Some(s) = saved.as_ref() else { return 0 };
        let before = s.packets.get(slot as usize).copied().unwrap_or(0);
        if packets != before && packets > 0 {
            now_secs()
        } else if let Some(h) = s.hits.get(id) {
            h.last
        } else {
            s.last_hit.get(slot as usize).copied().unwrap_or(0)
        }
    };
    let rule = |slot: u32, id: String, product: String, purpose: String, active: bool| {
        let c = sample.rules.get(slot as usize).copied().unwrap_or_default();
        let hit = last_hit(slot, &id, c.packets);
        RuleReport {
            slot,
            id,
            product,
            purpose,
            active,
            packets: c.packets,
            bytes: c.bytes,
            rate_pps: rate(slot, c.packets),
            last_hit: rfc3339(hit),
            last_hit_unix: hit,
        }
    };
    let rules: Vec<RuleReport> = match &state {
        Some(s) => {
            let mut entries = s.rules.clone();
            entries.sort_by_key(|r| !r.active);
            entries
                .into_iter()
                .map(|r| rule(r.slot, r.id, r.product, r.purpose, r.active))
                .collect()
        }
        // Without a state file only the counters are known: show the slots that counted.
        None => (0..slots)
            .filter(|s| sample.rules.get(*s as usize).is_some_and(|c| c.packets > 0))
            .map(|s| rule(s, format!("slot-{s}"), String::new(), String::new(), true))
            .collect(),
    };
    let daemon_pid = match viewer {
        Viewer::Command => state.as_ref().and_then(State::daemon_pid),
        Viewer::Daemon => Some(std::process::id()),
    };
    let not_enforcing = not_enforcing(state.as_ref(), pin_dir, daemon_pid.is_some());
    let s = state.unwrap_or_default();
    let report = Report {
        daemon_pid,
        snapshot_at: snapshot_ms.and_then(|ms| rfc3339(ms / 1000)),
        site: s.site.display().to_string(),
        mode: s.mode,
        policy_version: s.policy_version,
        site_sha256: s.site_sha256,
        loaded_at: rfc3339(s.loaded_at),
        roles: s.roles,
        interfaces: s.interfaces,
        rules,
        reasons: reasons(&sample),
        audit: AuditReport {
            emitted: sample.audit.emitted,
            suppressed: sample.audit.suppressed,
            lost: sample.audit.lost,
        },
        trial: s.trial,
        health: s.health,
        unattached: s.unattached,
        not_enforcing,
        reload: s.reload,
    };
    let now = Previous {
        at_ms,
        packets: sample.rules.iter().map(|c| c.packets).collect(),
    };
    Ok((report, now))
}

/// Why the host is not enforcing what the site says: what the daemon recorded, and what the
/// kernel shows now (an interface whose link no longer runs its program), which needs no
/// daemon. Without access to the pins (the status group), the daemon's record alone.
fn not_enforcing(state: Option<&State>, pin_dir: &Path, daemon_runs: bool) -> Vec<String> {
    let Some(s) = state else {
        return vec!["no daemon state: portguard has not put a policy in force".to_owned()];
    };
    let mut why = s.not_enforcing();
    if !daemon_runs {
        why.push(
            "the daemon is not running: the pinned policy stays in force, but nothing checks \
             or repairs it"
                .to_owned(),
        );
    }
    // The link objects say where they run whatever network namespace `status` is in; the
    // interface's own view (netlink) is checked too where this namespace can see it.
    let visible = crate::host::links().unwrap_or_default();
    for iface in &s.interfaces {
        match crate::ebpf::links::pinned_attachment(pin_dir, &iface.name) {
            Ok(at) if at.ifindex == 0 => why.push(format!(
                "{}: its link is detached (the interface is gone, or someone detached it)",
                iface.name
            )),
            Ok(at) if at.ifindex != iface.ifindex => why.push(format!(
                "{}: its link runs on interface index {} instead of {}",
                iface.name, at.ifindex, iface.ifindex
            )),
            Ok(at) => {
                let seen = visible
                    .iter()
                    .find(|l| l.index == iface.ifindex && l.name == iface.name);
                if let Some(l) = seen
                    && l.xdp_prog_id != Some(at.program_id)
                {
                    why.push(format!(
                        "{}: runs {} instead of program {} (its link's)",
                        iface.name,
                        l.xdp_prog_id.map_or_else(
                            || "no XDP program".to_owned(),
                            |r| format!("program {r}")
                        ),
                        at.program_id
                    ));
                }
            }
            Err(e) if !permission_denied(&e) => {
                why.push(format!("{}: its link pin is gone ({e})", iface.name));
            }
            Err(_) => {}
        }
    }
    why
}

/// Whether a link could not be opened for lack of permission (not because it is gone).
fn permission_denied(e: &crate::ebpf::links::LinkError) -> bool {
    let mut cause: Option<&dyn std::error::Error> = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>()
            && matches!(io.raw_os_error(), Some(libc::EACCES | libc::EPERM))
        {
            return true;
        }
        cause = c.source();
    }
    false
}

fn reasons(sample: &Sample) -> Vec<ReasonReport> {
    Reason::ALL
        .iter()
        .map(|r| {
            let c = sample.reason(*r);
            ReasonReport {
                reason: r.name(),
                verdict: match r {
                    Reason::SelfTest => "test",
                    r if r.passes() => "pass",
                    _ => "drop",
                },
                packets: c.packets,
                bytes: c.bytes,
            }
        })
        .collect()
}
