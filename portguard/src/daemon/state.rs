//! What the daemon has put in force, written to the run directory for `status`, `reload`,
//! `detach` and the next daemon.
//!
//! The kernel keeps the enforcement itself (pinned links, programs and maps); this file keeps
//! what the kernel objects cannot say: which rule owns which counter slot, which policy version
//! is attached where and since when. It is replaced atomically (write, fsync, rename), so a
//! reader never sees half of it, and a crash leaves the previous complete version.

use std::{
    collections::BTreeMap,
    io::Write as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// File name of the state in the run directory.
pub const STATE_FILE: &str = "state.json";
/// File name of the daemon's latest counter sample (for rates and last-hit times).
pub const SAMPLE_FILE: &str = "counters.json";

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
}

/// Everything `status` and the next daemon need to know.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Pid of the daemon that wrote this, if it is a daemon.
    pub pid: u32,
    /// The site file in force.
    pub site: PathBuf,
    /// `enforce` or `audit`.
    pub mode: String,
    /// Version (hash of the tables) of the policy in force (hex).
    pub policy_version: String,
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
}

impl State {
    /// Read the state from `run_dir`, `None` if there is none.
    pub fn read(run_dir: &Path) -> anyhow::Result<Option<Self>> {
        let path = run_dir.join(STATE_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .with_context(|| format!("{}: not a portguard state file", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Replace the state in `run_dir` atomically.
    pub fn write(&self, run_dir: &Path) -> anyhow::Result<()> {
        write_json(run_dir, STATE_FILE, self)
    }

    /// Slot of every rule, active or not.
    #[must_use]
    pub fn slots(&self) -> BTreeMap<String, u32> {
        self.rules.iter().map(|r| (r.id.clone(), r.slot)).collect()
    }
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
}

impl SavedSample {
    /// Read the latest sample, `None` if there is none or it cannot be read.
    #[must_use]
    pub fn read(run_dir: &Path) -> Option<Self> {
        let bytes = std::fs::read(run_dir.join(SAMPLE_FILE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Replace the sample atomically.
    pub fn write(&self, run_dir: &Path) -> anyhow::Result<()> {
        write_json(run_dir, SAMPLE_FILE, self)
    }
}

fn write_json<T: Serialize>(dir: &Path, name: &str, value: &T) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    serde_json::to_writer_pretty(&mut f, value)?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path).with_context(|| format!("replacing {}", path.display()))
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
