//! The task that drains the datapath's audit ring buffer into the log and the journal.
//!
//! It sleeps in epoll (tokio's [`AsyncFd`] on the ring buffer's descriptor) until the kernel
//! signals new events, counts them by reason and rule ([`DeniedCounts`], for the metrics),
//! drains them into the [`Aggregator`], and at each window's end stamps the window's records
//! with host and policy ([`Stamp`]) and writes them, plus a summary when the datapath
//! suppressed or lost events, to the sinks the site chose.

use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    mem::size_of,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use aya::maps::{Map, MapData, PerCpuArray, RingBuf};
use portguard_common::{
    event::{AuditState, Event},
    maps,
};
use tokio::io::{Interest, unix::AsyncFd};

use super::{
    AuditError,
    aggregate::{Aggregator, DEFAULT_MAX_FLOWS, DEFAULT_WINDOW},
    clock::WallClock,
    journal::JournalSink,
    logfile::LogWriter,
    record::{Origin, Record, SummaryRecord, reason_name},
};
use crate::policy::{AuditSettings, AuditSink};

/// Rule ids by rule slot, as the loaded tables number them. The daemon replaces the contents
/// on every reload; the reader resolves an event's hint (slot + 1) when it reads the event.
pub type RuleIds = Arc<RwLock<HashMap<u32, String>>>;

/// Audit events read, by reason and by the id of the rule the event's hint names (`""` when
/// none): what `portguard_denied_events_total` serves. The daemon keeps one for its lifetime,
/// so the counts go on across restarts of the reader (a reload that moves the log).
#[derive(Clone, Debug, Default)]
pub struct DeniedCounts(Arc<Mutex<BTreeMap<(String, String), u64>>>);

impl DeniedCounts {
    /// Count one event.
    pub fn add(&self, reason: &str, rule: Option<&str>) {
        let mut counts = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = (reason.to_owned(), rule.unwrap_or_default().to_owned());
        *counts.entry(key).or_default() += 1;
    }

    /// The counts so far, by (reason, rule), in order.
    #[must_use]
    pub fn snapshot(&self) -> Vec<((String, String), u64)> {
        let counts = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        counts.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

/// What the reader stamps on every record: the host's name, and the version of the policy in
/// force when the record is written (asked for at each window's end).
#[derive(Clone)]
pub struct Stamp {
    /// The host's name.
    pub hostname: Option<String>,
    /// The version of the policy in force now.
    pub policy_version: Arc<dyn Fn() -> Option<String> + Send + Sync>,
}

impl Stamp {
    /// This host's name and a policy version from `version`.
    pub fn new(version: impl Fn() -> Option<String> + Send + Sync + 'static) -> Self {
        Stamp {
            hostname: hostname(),
            policy_version: Arc::new(version),
        }
    }

    fn origin(&self) -> Origin {
        Origin {
            hostname: self.hostname.clone(),
            policy_version: (self.policy_version)(),
            ..Origin::default()
        }
    }
}

impl Default for Stamp {
    /// The host's name, no policy version.
    fn default() -> Self {
        Stamp::new(|| None)
    }
}

impl std::fmt::Debug for Stamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stamp")
            .field("hostname", &self.hostname)
            .finish_non_exhaustive()
    }
}

/// This host's name (`gethostname(2)`), as records carry it.
#[must_use]
pub fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is writable for its whole length, which is passed.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    Some(String::from_utf8_lossy(&buf[..end]).into_owned()).filter(|h| !h.is_empty())
}

/// Events drained per wake-up before the reader lets its timer run: a ring refilled as fast
/// as it is read must not delay the window's records.
const DRAIN_BATCH: usize = 4096;

/// Where and how the reader writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditConfig {
    /// Where records go: the file at `path`, the journal, or both.
    pub sink: AuditSink,
    /// The JSON-lines log.
    pub path: PathBuf,
    /// Rotate the log past this many bytes.
    pub max_bytes: u64,
    /// Rotated files kept.
    pub keep: u32,
    /// Aggregation window: identical flows within it become one record.
    pub window: Duration,
    /// Distinct flows per window; packets of further flows go into one overflow record.
    pub max_flows: usize,
}

impl From<&AuditSettings> for AuditConfig {
    fn from(s: &AuditSettings) -> Self {
        AuditConfig {
            sink: s.sink,
            path: s.path.clone(),
            max_bytes: s.max_bytes,
            keep: s.keep,
            window: DEFAULT_WINDOW,
            max_flows: DEFAULT_MAX_FLOWS,
        }
    }
}

/// Totals of the per-CPU `AuditState` counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuditTotals {
    /// Events written to the ring.
    pub emitted: u64,
    /// Denied packets not reported (token bucket empty).
    pub suppressed: u64,
    /// Events dropped (ring full).
    pub lost: u64,
}

/// The pinned audit maps and the open sinks, ready to [`Reader::run`].
pub struct Reader {
    ring_path: PathBuf,
    ring: RingBuf<MapData>,
    state_path: PathBuf,
    state: PerCpuArray<MapData, AuditState>,
    sinks: Sinks,
    cfg: AuditConfig,
    counts: Option<DeniedCounts>,
    stamp: Stamp,
}

/// Where a window's records go.
#[derive(Debug)]
struct Sinks {
    log: Option<LogWriter>,
    journal: Option<JournalSink>,
}

impl Sinks {
    fn write(&mut self, records: &[Record]) {
        if let Some(j) = &self.journal {
            j.send(records);
        }
        if let Some(log) = &mut self.log
            && let Err(e) = log.write(records)
        {
            log::error!("audit: {} records not written: {e}", records.len());
        }
    }
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("ring", &self.ring_path)
            .field("state", &self.state_path)
            .field("sinks", &self.sinks)
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl Reader {
    /// Open the ring buffer and loss counters pinned in `pin_dir` (the datapath must have been
    /// loaded with that pin directory) and the log. Synchronous, so a daemon can fail at start
    /// on a missing pin or an unwritable log before it spawns anything.
    pub fn open(pin_dir: &Path, cfg: AuditConfig) -> Result<Self, AuditError> {
        let ring_path = pin_dir.join(maps::AUDIT);
        let ring =
            RingBuf::try_from(open_pinned(&ring_path)?).map_err(|source| AuditError::MapType {
                path: ring_path.clone(),
                expected: "ring buffer",
                source,
            })?;
        let state_path = pin_dir.join(maps::AUDIT_STATE);
        let state = PerCpuArray::try_from(open_pinned(&state_path)?).map_err(|source| {
            AuditError::MapType {
                path: state_path.clone(),
                expected: "per-CPU array of AuditState",
                source,
            }
        })?;
        let log = if cfg.sink.file() {
            Some(LogWriter::open(&cfg.path, cfg.max_bytes, cfg.keep)?)
        } else {
            None
        };
        let journal = if cfg.sink.journal() {
            Some(JournalSink::start().map_err(|source| AuditError::Journal { source })?)
        } else {
            None
        };
        Ok(Reader {
            ring_path,
            ring,
            state_path,
            state,
            sinks: Sinks { log, journal },
            cfg,
            counts: None,
            stamp: Stamp::default(),
        })
    }

    /// Count every event read into `counts` (by reason and rule), for the metrics.
    #[must_use]
    pub fn counting(mut self, counts: DeniedCounts) -> Self {
        self.counts = Some(counts);
        self
    }

    /// Stamp records with `stamp`'s host and policy version (by default: the host's name and
    /// no version).
    #[must_use]
    pub fn stamped(mut self, stamp: Stamp) -> Self {
        self.stamp = stamp;
        self
    }

    /// The datapath's audit counters, summed over CPUs.
    pub fn totals(&self) -> Result<AuditTotals, AuditError> {
        totals(&self.state, &self.state_path)
    }

    /// Read events until `shutdown` completes, then drain what is left, write the last window
    /// and return. Interface names come from `names` (e.g. [`super::record::interface_name`]),
    /// rule ids from `rules`. Losses are reported relative to the counters at start.
    ///
    /// Write errors (disk full) are logged and the window's records dropped; the reader goes
    /// on, since stopping would lose every later record too. Errors are returned only for
    /// what stops it from reading at all.
    pub async fn run<N, S>(self, names: N, rules: RuleIds, shutdown: S) -> Result<(), AuditError>
    where
        N: Fn(u32) -> Option<String>,
        S: Future<Output = ()>,
    {
        let Reader {
            ring_path,
            ring,
            state_path,
            state,
            mut sinks,
            cfg,
            counts,
            stamp,
        } = self;
        let counts = counts.as_ref();
        // SAFETY: the RingBuf owns the MapData that owns the descriptor: it stays open, and
        // `as_raw_fd` returns the same one, for as long as the AsyncFd holds the RingBuf.
        let registered = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) };
        let mut fd = registered.map_err(|e| AuditError::Poll {
            path: ring_path.clone(),
            source: e.into(),
        })?;
        let mut agg = Aggregator::new(cfg.max_flows);
        let mut reported = totals(&state, &state_path)?;
        let mut names = |i| names(i);
        let mut tick = tokio::time::interval(cfg.window);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick completes at once: nothing to flush yet.
        tick.tick().await;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                ready = fd.readable_mut() => {
                    let mut guard = ready.map_err(|source| AuditError::Poll {
                        path: ring_path.clone(),
                        source,
                    })?;
                    if drain(guard.get_inner_mut(), &mut agg, &rules, counts, DRAIN_BATCH) < DRAIN_BATCH {
                        // Empty now. Tokio keeps the readiness if a wake-up came meanwhile.
                        guard.clear_ready();
                    }
                }
                _ = tick.tick() => {
                    // A safety net for a missed wake-up, and the events of this window.
                    drain(fd.get_mut(), &mut agg, &rules, counts, usize::MAX);
                    flush(&mut agg, &mut names, &state, &state_path, &mut reported, &stamp, &mut sinks);
                }
            }
        }
        drain(fd.get_mut(), &mut agg, &rules, counts, usize::MAX);
        flush(
            &mut agg,
            &mut names,
            &state,
            &state_path,
            &mut reported,
            &stamp,
            &mut sinks,
        );
        Ok(())
    }
}

/// Open the pinned maps in `pin_dir` and log as `cfg` says, then [`Reader::run`] until
/// `shutdown` completes. The one-call form; the future borrows `pin_dir`, so a daemon that
/// spawns the reader uses `Reader::open(..)?.run(..)` (a `'static` future) instead.
pub async fn run<N, S>(
    pin_dir: &Path,
    cfg: AuditConfig,
    names: N,
    rules: RuleIds,
    shutdown: S,
) -> Result<(), AuditError>
where
    N: Fn(u32) -> Option<String>,
    S: Future<Output = ()>,
{
    Reader::open(pin_dir, cfg)?
        .run(names, rules, shutdown)
        .await
}

/// The datapath's audit counters pinned in `pin_dir`, summed over CPUs: for `status`, tests,
/// and anyone checking that emitted + suppressed + lost adds up to the denied packets.
pub fn totals_at(pin_dir: &Path) -> Result<AuditTotals, AuditError> {
    let path = pin_dir.join(maps::AUDIT_STATE);
    let state =
        PerCpuArray::try_from(open_pinned(&path)?).map_err(|source| AuditError::MapType {
            path: path.clone(),
            expected: "per-CPU array of AuditState",
            source,
        })?;
    totals(&state, &path)
}

fn open_pinned(path: &Path) -> Result<Map, AuditError> {
    let data = MapData::from_pin(path).map_err(|source| AuditError::Pin {
        path: path.to_owned(),
        source,
    })?;
    Map::from_map_data(data).map_err(|source| AuditError::Pin {
        path: path.to_owned(),
        source,
    })
}

/// Sum the per-CPU audit counters.
fn totals(
    state: &PerCpuArray<MapData, AuditState>,
    path: &Path,
) -> Result<AuditTotals, AuditError> {
    let values = state.get(&0, 0).map_err(|source| AuditError::MapRead {
        path: path.to_owned(),
        source,
    })?;
    Ok(values
        .iter()
        .fold(AuditTotals::default(), |t, s| AuditTotals {
            emitted: t.emitted + s.emitted,
            suppressed: t.suppressed + s.suppressed,
            lost: t.lost + s.lost,
        }))
}

/// Move up to `max` events from the ring into the window (and `counts`); how many were read.
fn drain(
    ring: &mut RingBuf<MapData>,
    agg: &mut Aggregator,
    rules: &RuleIds,
    counts: Option<&DeniedCounts>,
    max: usize,
) -> usize {
    let mut n = 0;
    while n < max {
        let Some(item) = ring.next() else { break };
        n += 1;
        let Some(ev) = decode(&item) else {
            log::warn!(
                "audit: skipping a {}-byte ring entry (an Event is {})",
                item.len(),
                size_of::<Event>()
            );
            continue;
        };
        drop(item);
        let rule = ev.hint.checked_sub(1).and_then(|slot| {
            // A poisoned lock only means a writer panicked mid-update: the ids are still the
            // best there are.
            let ids = rules
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            ids.get(&slot).cloned()
        });
        if let Some(c) = counts {
            c.add(&reason_name(ev.reason), rule.as_deref());
        }
        agg.add(&ev, rule);
    }
    n
}

/// The event in a ring entry; `None` if the entry is too short to be one.
fn decode(bytes: &[u8]) -> Option<Event> {
    if bytes.len() < size_of::<Event>() {
        return None;
    }
    // SAFETY: at least size_of::<Event>() bytes; Event is plain old data (every bit pattern is
    // valid), and read_unaligned makes no alignment assumption about the ring's memory.
    Some(unsafe { bytes.as_ptr().cast::<Event>().read_unaligned() })
}

/// Write the window's records and, when the datapath suppressed or lost events since the last
/// summary, a summary record.
fn flush(
    agg: &mut Aggregator,
    names: &mut dyn FnMut(u32) -> Option<String>,
    state: &PerCpuArray<MapData, AuditState>,
    state_path: &Path,
    reported: &mut AuditTotals,
    stamp: &Stamp,
    sinks: &mut Sinks,
) {
    let clock = WallClock::now();
    let mut records = agg.flush(&clock, names);
    match totals(state, state_path) {
        Ok(now) => {
            let delta = AuditTotals {
                emitted: now.emitted.saturating_sub(reported.emitted),
                suppressed: now.suppressed.saturating_sub(reported.suppressed),
                lost: now.lost.saturating_sub(reported.lost),
            };
            if delta.suppressed > 0 || delta.lost > 0 {
                records.push(Record::Summary(SummaryRecord {
                    origin: Origin::default(),
                    time: jiff::Timestamp::now(),
                    emitted: delta.emitted,
                    suppressed: delta.suppressed,
                    lost: delta.lost,
                }));
                *reported = now;
            }
        }
        Err(e) => log::warn!("audit: {e}"),
    }
    if records.is_empty() {
        return;
    }
    let origin = stamp.origin();
    for r in &mut records {
        r.set_origin(origin.clone());
    }
    sinks.write(&records);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_reads_whole_events_only() {
        let ev = Event {
            time_ns: 7,
            dport: 23,
            ..Event::default()
        };
        // SAFETY: Event is repr(C) plain data without padding.
        let bytes: [u8; size_of::<Event>()] = unsafe { std::mem::transmute(ev) };
        let mut unaligned = vec![0u8];
        unaligned.extend_from_slice(&bytes);
        assert_eq!(decode(&unaligned[1..]), Some(ev));
        assert_eq!(decode(&bytes[..10]), None);
    }

    #[test]
    fn config_comes_from_the_site_settings() {
        let s = AuditSettings {
            sink: AuditSink::Both,
            path: "/var/log/x.jsonl".into(),
            rate: 1,
            burst: 2,
            max_bytes: 3,
            keep: 4,
        };
        let c = AuditConfig::from(&s);
        assert_eq!(
            (c.sink, c.path.to_str(), c.max_bytes, c.keep),
            (AuditSink::Both, Some("/var/log/x.jsonl"), 3, 4)
        );
        assert_eq!((c.window, c.max_flows), (DEFAULT_WINDOW, DEFAULT_MAX_FLOWS));
    }

    #[test]
    fn missing_pins_name_the_path() {
        let e = Reader::open(
            Path::new("/nonexistent-pg-pins"),
            AuditConfig::from(&AuditSettings {
                sink: AuditSink::File,
                path: "/nonexistent-pg-pins/audit.jsonl".into(),
                rate: 1,
                burst: 1,
                max_bytes: 1,
                keep: 1,
            }),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("/nonexistent-pg-pins/PG_AUDIT"),
            "{e}"
        );
    }

    /// The daemon spawns the reader on a multi-threaded runtime: its future must be `Send`.
    #[test]
    fn run_future_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let f = |reader: Reader| {
            reader.run(
                super::super::record::interface_name,
                RuleIds::default(),
                std::future::pending::<()>(),
            )
        };
        let _ = |reader: Reader| assert_send(&f(reader));
    }
}
