//! Timing one frame through a loaded program with `BPF_PROG_TEST_RUN`, against the no-op program
//! of the same object, interleaved and repeated so a busy shared machine shows as spread, not as
//! a wrong figure.

use aya::programs::{TestRun as _, TestRunOptions, Xdp};
use integration_tests::{DROP, PASS};
use portguard::ebpf::{Datapath, NOOP_PROGRAM};
use portguard_common::reason::Reason;

use crate::sys::thread_cpu_ns;

/// Runs of each program per measurement: the issue asks for at least a million.
pub(crate) const REPEAT: u32 = 1_000_000;

/// What a frame must do, checked once through the counters before it is timed, so a figure
/// can never be the cost of the wrong path.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Expect {
    /// Allowed, counted on this rule slot.
    Rule(u32),
    /// Passed for this reason.
    Pass(Reason),
    /// Dropped for this reason, or for any reason with `None`.
    Drop(Option<Reason>),
}

/// One packet case.
#[derive(Clone, Debug)]
pub(crate) struct Case {
    /// Key in the JSON output.
    pub(crate) key: &'static str,
    /// Row label in the markdown table.
    pub(crate) label: &'static str,
    /// Index of the datapath (policy load) it runs on.
    pub(crate) dp: usize,
    /// The frame.
    pub(crate) frame: Vec<u8>,
    /// A frame to run once first (the first fragment, so a later one has state to find).
    pub(crate) prime: Option<Vec<u8>>,
    /// What it must do.
    pub(crate) expect: Expect,
}

/// A case's figures: medians over the rounds.
#[derive(Clone, Debug)]
pub(crate) struct Measured {
    /// The case's key.
    pub(crate) key: &'static str,
    /// The case's label.
    pub(crate) label: &'static str,
    /// What the program did with it (rule or reason), as checked.
    pub(crate) outcome: String,
    /// ns/packet from the thread's CPU time across the call (sub-nanosecond resolution).
    pub(crate) ns: f64,
    /// ns/packet as the kernel reports it (`duration`, an integer: truncated).
    pub(crate) kernel_ns: f64,
    /// ns/packet of the no-op program run right before it, same frame.
    pub(crate) noop_ns: f64,
    /// Median over rounds of (case / no-op in the same round).
    pub(crate) ratio: f64,
    /// Spread: the smallest and largest per-round ratio.
    pub(crate) ratio_range: (f64, f64),
    /// ns/packet of each round, in round order: for comparisons paired within a round.
    pub(crate) rounds: Vec<f64>,
}

/// The median of a non-empty sample.
pub(crate) fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        f64::midpoint(s[n / 2 - 1], s[n / 2])
    }
}

/// One timed `BPF_PROG_TEST_RUN`: (CPU ns/packet, kernel ns/packet, XDP action).
fn timed(prog: &mut Xdp, frame: &[u8], repeat: u32) -> (f64, f64, u32) {
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.repeat = repeat;
    let t0 = thread_cpu_ns();
    let r = prog.test_run(opts).expect("BPF_PROG_TEST_RUN");
    let t1 = thread_cpu_ns();
    (
        (t1 - t0) as f64 / f64::from(repeat),
        r.duration.as_nanos() as f64,
        r.return_value,
    )
}

fn reasons(dp: &Datapath) -> Vec<u64> {
    dp.reason_counters()
        .expect("reason counters")
        .iter()
        .map(|(_, c)| c.packets)
        .collect()
}

/// Run the frame once and say what happened; panics when it is not what the case expects.
fn check(dp: &mut Datapath, case: &Case, rule_name: &dyn Fn(u32) -> String) -> String {
    if let Some(p) = &case.prime {
        timed(dp.program().expect("program"), p, 1);
    }
    let slot = match case.expect {
        Expect::Rule(s) => s,
        _ => 0,
    };
    let before = (reasons(dp), dp.rule_counters(slot).expect("rule counters"));
    let (_, _, action) = timed(dp.program().expect("program"), &case.frame, 1);
    let after = (reasons(dp), dp.rule_counters(slot).expect("rule counters"));
    let reason = (0..before.0.len())
        .find(|&i| after.0[i] > before.0[i])
        .and_then(|i| Reason::from_u32(i as u32));
    let ruled = after.1.packets > before.1.packets;
    let ok = match (case.expect, reason) {
        (Expect::Rule(_), None) => ruled && action == PASS,
        (Expect::Pass(want), Some(got)) => want == got && action == PASS,
        (Expect::Drop(want), Some(got)) => {
            !got.passes() && want.is_none_or(|w| w == got) && action == DROP
        }
        _ => false,
    };
    assert!(
        ok,
        "case `{}`: expected {:?}, got action {action}, reason {reason:?}, rule slot {slot} counted: {ruled}",
        case.key, case.expect
    );
    match reason {
        None => format!("allowed by {}", rule_name(slot)),
        Some(r) if r.passes() => format!("passed ({})", r.name()),
        Some(r) => format!("dropped ({})", r.name()),
    }
}

/// Check every case, then time them: `rounds` rounds, each running, for every case (in an
/// order rotated per round), the no-op program and then the case on the same frame, `repeat`
/// times each. The no-op program comes from `dps[0]`'s object.
pub(crate) fn measure(
    dps: &mut [Datapath],
    cases: &[Case],
    rounds: usize,
    repeat: u32,
    rule_name: &dyn Fn(u32) -> String,
) -> Vec<Measured> {
    let outcomes: Vec<String> = cases
        .iter()
        .map(|c| check(&mut dps[c.dp], c, rule_name))
        .collect();
    dps[0].load_program(NOOP_PROGRAM).expect("no-op program");
    // Warm caches and the JIT image once before anything counts.
    timed(
        dps[0].load_program(NOOP_PROGRAM).expect("no-op"),
        &cases[0].frame,
        repeat / 10,
    );
    let n = cases.len();
    let mut samples: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); n];
    for round in 0..rounds {
        for k in 0..n {
            let i = (k + round) % n;
            let c = &cases[i];
            let (noop, _, _) = timed(
                dps[0].load_program(NOOP_PROGRAM).expect("no-op"),
                &c.frame,
                repeat,
            );
            let (ns, kns, _) = timed(dps[c.dp].program().expect("program"), &c.frame, repeat);
            samples[i].push((ns, kns, noop));
        }
    }
    cases
        .iter()
        .zip(outcomes)
        .zip(samples)
        .map(|((c, outcome), s)| {
            let ratios: Vec<f64> = s.iter().map(|(ns, _, noop)| ns / noop).collect();
            let col = |f: fn(&(f64, f64, f64)) -> f64| median(&s.iter().map(f).collect::<Vec<_>>());
            Measured {
                key: c.key,
                label: c.label,
                outcome,
                ns: col(|x| x.0),
                kernel_ns: col(|x| x.1),
                noop_ns: col(|x| x.2),
                ratio: median(&ratios),
                rounds: s.iter().map(|x| x.0).collect(),
                ratio_range: (
                    ratios.iter().copied().fold(f64::INFINITY, f64::min),
                    ratios.iter().copied().fold(0.0, f64::max),
                ),
            }
        })
        .collect()
}

impl Measured {
    /// The figures as JSON.
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "case": self.key,
            "label": self.label,
            "outcome": self.outcome,
            "ns_per_packet": round3(self.ns),
            "kernel_ns_per_packet": self.kernel_ns,
            "noop_ns_per_packet": round3(self.noop_ns),
            "ratio_to_noop": round3(self.ratio),
            "ratio_to_noop_min": round3(self.ratio_range.0),
            "ratio_to_noop_max": round3(self.ratio_range.1),
        })
    }
}

/// A figure rounded to three decimals, for JSON that humans also read.
pub(crate) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
