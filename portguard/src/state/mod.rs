//! What the daemon has put in force, written to the run directory for `status`, `reload`,
//! `detach`, the lab and the next daemon.
//!
//! The kernel keeps the enforcement itself (pinned links, programs and maps); this file keeps
//! what the kernel objects cannot say: which rule owns which counter slot, which policy version
//! is attached where and since when. It is replaced atomically (write, fsync, rename), so a
//! reader never sees half of it, and a crash leaves the previous complete version.

use std::{
    collections::BTreeMap,
    io::Write as _,
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::paths::{SAMPLE_FILE, STATE_FILE};

pub mod report;

/// Why a file of the run directory could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The file exists but could not be read.
    #[error("reading {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not what portguard writes there (another program's, or corrupt).
    #[error("{path}: not a portguard state file")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// The file (or its directory) could not be written, synced or renamed into place.
    #[error("writing {path}")]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Giving a file to the status group failed (chown or chmod).
    #[error("giving {path} to group {gid}")]
    Share {
        /// The file.
        path: PathBuf,
        /// The group.
        gid: u32,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// One rule that owns a counter slot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleEntry {
    /// Counter slot.
    pub slot: u32,
    /// Rule id, e.g. `RHV-H10`.
    pub id: String,
    /// Product (`essentials`, `failsafe`, `rhv`, ...).
    pub product: String,
    /// Purpose from the document.
    pub purpose: String,
    /// False once a reload removed the rule: its totals stay visible until the next restart.
    pub active: bool,
}

/// One interface portguard is attached to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IfaceEntry {
    /// Interface name.
    pub name: String,
    /// Interface index when attached.
    pub ifindex: u32,
    /// `driver` (native) or `generic` (skb).
    pub mode: String,
    /// Policy version attached to it (hex).
    pub policy_version: String,
    /// Unix time (seconds) of the attach or last program switch on it.
    pub since: u64,
}

/// Result of the last reload request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadEntry {
    /// Reloads handled since the daemon started (successful or not).
    pub count: u64,
    /// Unix time (seconds) of the last one.
    pub at: u64,
    /// Whether it put a new policy in force (false: unchanged, or failed).
    pub switched: bool,
    /// Time from the start of the program switch to the last interface switched, in µs.
    pub switch_us: u64,
    /// Why the last reload failed; the running policy was left in force.
    pub error: Option<String>,
    /// Reloads since the daemon started that failed (the policy in force stayed); the others
    /// (`count - failed`) put their policy in force or found it unchanged.
    #[serde(default)]
    pub failed: u64,
}

/// A policy on trial (`portguard apply --confirm-within`): reverted unless confirmed in time.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrialEntry {
    /// Unix time (seconds) after which the previous policy comes back.
    pub deadline: u64,
    /// Version of the policy that comes back.
    pub previous_version: String,
}

/// What `portguard apply` asks of the daemon, written to [`TRIAL_REQUEST`] before SIGHUP.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrialRequest {
    /// Seconds the administrator has to confirm.
    pub confirm_within: u64,
}

/// Everything `status` and the next daemon need to know.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Pid of the daemon that wrote this, if it is a daemon.
    pub pid: u32,
    /// The site file in force.
    pub site: PathBuf,
    /// The product-file directory given to the daemon, if one was.
    #[serde(default)]
    pub policies: Option<PathBuf>,
    /// The host roles given to the daemon (`--host-roles`), if any.
    #[serde(default)]
    pub host_roles: Vec<String>,
    /// `enforce` or `audit`.
    pub mode: String,
    /// Version (hash of the tables) of the policy in force (hex).
    pub policy_version: String,
    /// The site file in force, as [`crate::policy::site_sha256`] identifies it: the same on
    /// every host that runs the same file (what `portguard_policy_info` shows).
    #[serde(default)]
    pub site_sha256: String,
    /// Unix time (seconds) the policy in force was loaded.
    pub loaded_at: u64,
    /// The host's roles.
    pub roles: Vec<String>,
    /// Interfaces attached.
    pub interfaces: Vec<IfaceEntry>,
    /// Rules by slot, including removed ones until restart.
    pub rules: Vec<RuleEntry>,
    /// The last reload.
    pub reload: ReloadEntry,
    /// The policy in force is on trial.
    #[serde(default)]
    pub trial: Option<TrialEntry>,
    /// Group allowed to read the state, counter samples and audit log (`run --status-group`).
    #[serde(default)]
    pub status_group: Option<u32>,
    /// The daemon's last self-test of what the kernel enforces.
    #[serde(default)]
    pub health: HealthEntry,
    /// Interfaces selected but not attached (missing, or refused), with why.
    #[serde(default)]
    pub unattached: Vec<UnattachedEntry>,
    /// In force is the last good policy, not the site file's: why (the site's error).
    #[serde(default)]
    pub last_good: Option<String>,
}

/// The daemon's last self-test: every selected interface runs the program in force, and that
/// program drops and passes what the policy says (frames pushed through `BPF_PROG_TEST_RUN`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthEntry {
    /// Whether every check passed. False until the first self-test ran.
    pub ok: bool,
    /// Unix time (seconds) of the last self-test; 0 = none yet.
    pub at: u64,
    /// What failed, one line each.
    pub problems: Vec<String>,
    /// Self-tests run since the daemon started.
    pub runs: u64,
    /// Self-tests that found a problem since the daemon started.
    pub failures: u64,
}

/// An interface the site selects that runs no program of this policy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnattachedEntry {
    /// Interface name.
    pub name: String,
    /// Why it is not attached.
    pub why: String,
}

impl State {
    /// Why the host is not enforcing what the site says, if it is not: what `status` exits 1
    /// for and the metrics report as unhealthy.
    #[must_use]
    pub fn not_enforcing(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .unattached
            .iter()
            .map(|u| format!("{}: not attached ({})", u.name, u.why))
            .collect();
        if let Some(why) = &self.last_good {
            out.push(why.clone());
        }
        if let Some(e) = &self.reload.error {
            out.push(format!("the last reload failed: {e}"));
        }
        if let Some(t) = &self.trial {
            out.push(format!(
                "policy {} is on trial (reverts to {} unless confirmed)",
                self.policy_version, t.previous_version
            ));
        }
        if self.health.at == 0 {
            out.push("no self-test has run yet".to_owned());
        } else if !self.health.ok {
            out.extend(
                self.health
                    .problems
                    .iter()
                    .map(|p| format!("self-test: {p}")),
            );
        }
        out
    }
}

impl State {
    /// Read the state from `run_dir`, `None` if there is none.
    pub fn read(run_dir: &Path) -> Result<Option<Self>, StateError> {
        let path = run_dir.join(STATE_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| StateError::Parse { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StateError::Read { path, source }),
        }
    }

    /// Replace the state in `run_dir` atomically.
    pub fn write(&self, run_dir: &Path) -> Result<(), StateError> {
        write_json_shared(run_dir, STATE_FILE, self, self.status_group)
    }

    /// The daemon's pid, if the process that wrote this state is alive and is portguard
    /// (a pid read from a file may have been reused by another program since).
    #[must_use]
    pub fn daemon_pid(&self) -> Option<u32> {
        let pid = self.pid;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        (pid > 0 && pid != std::process::id() && comm.trim().starts_with("portguard"))
            .then_some(pid)
    }

    /// Slot of every rule, active or not.
    #[must_use]
    pub fn slots(&self) -> BTreeMap<String, u32> {
        self.rules.iter().map(|r| (r.id.clone(), r.slot)).collect()
    }
}

/// When the daemon began watching a rule, and when it last saw the rule match.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleHits {
    /// Unix time (seconds) of the first sample that knew the rule.
    pub since: u64,
    /// Unix time (seconds) at which its packets were last seen to grow; 0 = never since
    /// `since`.
    pub last: u64,
}

/// A counter sample as the daemon saves it: what `status` needs for rates and last hits.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedSample {
    /// Unix time in milliseconds.
    pub at_ms: u64,
    /// Packets per slot.
    pub packets: Vec<u64>,
    /// Bytes per slot.
    pub bytes: Vec<u64>,
    /// Unix time (seconds) at which each slot's packets were last seen to grow, 0 = never.
    pub last_hit: Vec<u64>,
    /// Packets and bytes per reason, so `status` works from the sample alone for users who
    /// may read the run directory but not the maps.
    #[serde(default)]
    pub reasons: Vec<(u64, u64)>,
    /// Audit events emitted, suppressed, lost.
    #[serde(default)]
    pub audit: (u64, u64, u64),
    /// Last hits by rule id rather than slot: they survive daemon restarts (the run directory
    /// outlives the daemon), slots freed and given to another rule, and counters that start
    /// again from zero (a reboot, a fresh slot). `portguard suggest` reads them to find rules
    /// that saw no traffic over a window.
    #[serde(default)]
    pub hits: BTreeMap<String, RuleHits>,
}

impl SavedSample {
    /// Read the latest sample, `None` if there is none or it cannot be read.
    #[must_use]
    pub fn read(run_dir: &Path) -> Option<Self> {
        let bytes = std::fs::read(run_dir.join(SAMPLE_FILE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Replace the sample atomically, readable by `group` if given.
    pub fn write(&self, run_dir: &Path, group: Option<u32>) -> Result<(), StateError> {
        write_json_shared(run_dir, SAMPLE_FILE, self, group)
    }

    /// The next sample: `sample` read from the maps at `now_ms` (Unix milliseconds), for the
    /// rules the daemon has put in force. A rule's last hit moves to now when its packets
    /// changed and are not zero: more than before, or fewer (its counter was reset) but some.
    #[must_use]
    pub fn advance(
        &self,
        sample: &crate::ebpf::counters::Sample,
        rules: &[RuleEntry],
        now_ms: u64,
    ) -> SavedSample {
        let now = now_ms / 1000;
        let hit = |slot: usize| {
            let packets = sample.rules.get(slot).map_or(0, |c| c.packets);
            let before = self.packets.get(slot).copied().unwrap_or(0);
            packets != before && packets > 0
        };
        let last_hit = (0..sample.rules.len())
            .map(|i| {
                if hit(i) {
                    now
                } else {
                    self.last_hit.get(i).copied().unwrap_or(0)
                }
            })
            .collect();
        let mut hits = self.hits.clone();
        for rule in rules.iter().filter(|r| r.active) {
            let h = hits.entry(rule.id.clone()).or_insert(RuleHits {
                since: now,
                last: 0,
            });
            if hit(rule.slot as usize) {
                h.last = now;
            }
        }
        SavedSample {
            at_ms: now_ms,
            packets: sample.rules.iter().map(|c| c.packets).collect(),
            bytes: sample.rules.iter().map(|c| c.bytes).collect(),
            last_hit,
            reasons: sample
                .reasons
                .iter()
                .map(|c| (c.packets, c.bytes))
                .collect(),
            audit: (
                sample.audit.emitted,
                sample.audit.suppressed,
                sample.audit.lost,
            ),
            hits,
        }
    }

    /// The sample as a [`crate::ebpf::counters::Sample`], for `status` without access to the
    /// maps.
    #[must_use]
    pub fn to_sample(&self) -> crate::ebpf::counters::Sample {
        use portguard_common::maps::Counters;
        crate::ebpf::counters::Sample {
            rules: self
                .packets
                .iter()
                .zip(&self.bytes)
                .map(|(p, b)| Counters {
                    packets: *p,
                    bytes: *b,
                })
                .collect(),
            reasons: self
                .reasons
                .iter()
                .map(|(p, b)| Counters {
                    packets: *p,
                    bytes: *b,
                })
                .collect(),
            audit: portguard_common::event::AuditState {
                emitted: self.audit.0,
                suppressed: self.audit.1,
                lost: self.audit.2,
                ..Default::default()
            },
        }
    }
}

/// Write `value` as JSON to `dir/name`, atomically.
pub fn write_json<T: Serialize>(dir: &Path, name: &str, value: &T) -> Result<(), StateError> {
    write_json_shared(dir, name, value, None)
}

/// Like [`write_json`], readable by `group` (mode 0640, group owner) when one is given.
pub fn write_json_shared<T: Serialize>(
    dir: &Path,
    name: &str,
    value: &T,
    group: Option<u32>,
) -> Result<(), StateError> {
    let write_err = |path: &Path| {
        let path = path.to_owned();
        move |source| StateError::Write { path, source }
    };
    std::fs::create_dir_all(dir).map_err(write_err(dir))?;
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut bytes = serde_json::to_vec_pretty(value)
        .map_err(std::io::Error::from)
        .map_err(write_err(&tmp))?;
    bytes.push(b'\n');
    // Readable by root alone, whatever the umask, unless shared with the group below.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(write_err(&tmp))?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(write_err(&tmp))?;
    f.write_all(&bytes)
        .and_then(|()| f.sync_all())
        .map_err(write_err(&tmp))?;
    if let Some(gid) = group {
        share_with(&tmp, gid, 0o640)?;
    }
    std::fs::rename(&tmp, &path).map_err(write_err(&path))
}

/// Seconds since the Unix epoch.
#[must_use]
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Milliseconds since the Unix epoch.
#[must_use]
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Give `path` to group `gid` with `mode`: how `status` and `audit` become readable by a group
/// of operators while the maps stay root's.
pub fn share_with(path: &Path, gid: u32, mode: u32) -> Result<(), StateError> {
    std::os::unix::fs::chown(path, Some(0), Some(gid))
        .and_then(|()| std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)))
        .map_err(|source| StateError::Share {
            path: path.to_owned(),
            gid,
            source,
        })
}

#[cfg(test)]
mod tests {
    use portguard_common::maps::Counters;

    use super::*;
    use crate::ebpf::counters::Sample;

    fn sample(packets: &[u64]) -> Sample {
        Sample {
            rules: packets
                .iter()
                .map(|p| Counters {
                    packets: *p,
                    bytes: p * 100,
                })
                .collect(),
            ..Sample::default()
        }
    }

    fn rule(slot: u32, id: &str) -> RuleEntry {
        RuleEntry {
            slot,
            id: id.into(),
            product: "rhv".into(),
            purpose: String::new(),
            active: true,
        }
    }

    #[test]
    fn last_hits_follow_rule_ids_across_restarts_resets_and_reused_slots() {
        let rules = [rule(0, "A"), rule(1, "B")];
        let s1 = SavedSample::default().advance(&sample(&[0, 5]), &rules, 1_000_000);
        assert_eq!(
            s1.hits["A"],
            RuleHits {
                since: 1000,
                last: 0
            }
        );
        assert_eq!(
            s1.hits["B"],
            RuleHits {
                since: 1000,
                last: 1000
            }
        );
        // Read back as the next daemon does: nothing moved, nothing is a hit.
        let text = serde_json::to_vec(&s1).unwrap();
        let back: SavedSample = serde_json::from_slice(&text).unwrap();
        let s2 = back.advance(&sample(&[0, 5]), &rules, 2_000_000);
        assert_eq!(s2.hits["B"].last, 1000);
        // A reboot (or a fresh slot) starts counters from zero: fewer packets, but some, is a
        // hit; zero is not.
        let s3 = s2.advance(&sample(&[0, 2]), &rules, 3_000_000);
        assert_eq!(s3.hits["B"].last, 3000);
        // Slot 1 now belongs to C (B was removed and a new daemon reused its slot): B keeps its
        // history, C starts its own.
        let s4 = s3.advance(&sample(&[0, 0]), &[rule(0, "A"), rule(1, "C")], 4_000_000);
        assert_eq!(s4.hits["B"].last, 3000);
        assert_eq!(
            s4.hits["C"],
            RuleHits {
                since: 4000,
                last: 0
            }
        );
        assert_eq!(
            s4.hits["A"],
            RuleHits {
                since: 1000,
                last: 0
            }
        );
        // Samples written before `hits` existed still read.
        let old: SavedSample = serde_json::from_str(
            r#"{"at_ms":1,"packets":[1],"bytes":[2],"last_hit":[3],"reasons":[],"audit":[0,0,0]}"#,
        )
        .unwrap();
        assert!(old.hits.is_empty());
    }

    #[test]
    fn reload_entries_without_failed_counts_still_read() {
        let r: ReloadEntry = serde_json::from_str(
            r#"{"count":2,"at":5,"switched":true,"switch_us":7,"error":null}"#,
        )
        .unwrap();
        assert_eq!((r.count, r.failed), (2, 0));
    }
}
