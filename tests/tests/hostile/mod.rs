//! Hostile packets: a named corpus of malformed and crafted frames, each with the verdict it must
//! get (XDP action and the counter that records it), run through the real program
//! (`BPF_PROG_TEST_RUN`) and the reference classifier; then a campaign of mutated frames.
//!
//! The property behind every case: no malformed packet reaches a port the policy does not open.
//! An `XDP_PASS` must be explained by a rule that covers the port the packet really carries (read
//! by an independent, unlimited parser modelled on what the Linux stack delivers, not by the two
//! parsers under test), or by a pass reason that is not about ports (ARP, another ethertype,
//! another host's unicast, broadcast) and that the configuration allows.
//!
//! Replay a campaign with `PORTGUARD_SEED=<seed printed by the test>`.
//!
//! [`policy`] is what is open, [`corpus`] the cases and the verdicts they must get, [`oracle`]
//! the independent reading and the invariant; the tests and the mutation campaign are here.

mod corpus;
mod oracle;
mod policy;

use std::collections::HashMap;

use integration_tests::{TestDp, Twin, net::KnownRoutes, seed};
use portguard::compile::tables::build;
use portguard_common::{classify::Outcome, reason::REASON_COUNT, reference::parse, tables::Tables};
use rand::{Rng, SeedableRng, rngs::SmallRng, seq::IndexedRandom};

use self::{
    corpus::{Want, corpus},
    oracle::explained,
    policy::{TOO_BIG, lenient, locals, rules, strict},
};

/// Both classifiers over `tables` and the host's addresses.
fn twin(tables: &Tables) -> Twin<'_> {
    let (unicast, broadcast) = locals();
    Twin::new(tables, &unicast, &broadcast)
}

/// Every counter of the XDP program: rule slots 0..=6, then reasons.
fn counters(dp: &TestDp) -> Vec<u64> {
    let mut out: Vec<u64> = (0..=TOO_BIG)
        .map(|s| dp.dp.rule_counters(s).unwrap().packets)
        .collect();
    let mut reasons = [0u64; REASON_COUNT as usize];
    for (r, c) in dp.dp.reason_counters().unwrap() {
        reasons[r as usize] = c.packets;
    }
    out.extend(reasons);
    out
}

/// Index of a verdict's counter in [`counters`].
fn counter_index(want: Want) -> usize {
    match want {
        Want::Allow(slot) => slot as usize,
        Want::Pass(r) | Want::Deny(r) => (TOO_BIG + 1) as usize + r as usize,
    }
}

// ---------------------------------------------------------------------------------------------
// The corpus test

#[test]
fn hostile_corpus_gets_its_stated_verdicts_in_both_classifiers() {
    KnownRoutes::new().run(|| {
        let rules = rules();
        let cfg = lenient();
        let tables = build(&rules, cfg).expect("tables");
        let mut b = twin(&tables);
        let corpus = corpus();
        let mut firsts = HashMap::new();
        let mut failures = Vec::new();
        for case in &corpus.0 {
            let parsed = parse(&case.frame);
            let outcome = b.env.judge(&case.frame);
            let mut problems = Vec::new();
            if Want::of(outcome) != case.want {
                problems.push(format!("reference: {outcome:?}"));
            }
            if let Err(e) = explained(outcome, &parsed, &case.frame, &cfg, &rules, &mut firsts) {
                problems.push(format!("invariant: {e}"));
            }
            // The kernel refuses test runs shorter than an Ethernet header.
            if case.frame.len() >= 14 {
                let before = counters(&b.dp);
                let action = b.dp.run(&case.frame);
                let after = counters(&b.dp);
                if action != case.want.action() {
                    problems.push(format!("XDP action {action}"));
                }
                let moved: Vec<usize> = (0..after.len())
                    .filter(|i| after[*i] != before[*i])
                    .collect();
                if moved != [counter_index(case.want)] {
                    problems.push(format!(
                        "XDP counted under {moved:?}, want [{}]",
                        counter_index(case.want)
                    ));
                }
            }
            if !problems.is_empty() {
                failures.push(format!(
                    "{}: want {:?}; {}\n  frame: {:02x?}",
                    case.name,
                    case.want,
                    problems.join("; "),
                    case.frame
                ));
            }
        }
        println!("hostile corpus: {} cases", corpus.0.len());
        assert!(
            failures.is_empty(),
            "{} of {} cases failed:\n{}",
            failures.len(),
            corpus.0.len(),
            failures.join("\n")
        );
    });
}

// ---------------------------------------------------------------------------------------------
// The campaign: mutated corpus frames

const CAMPAIGN_FRAMES: usize = 200_000;
/// Frames per loaded program: a fresh fragment table and counters every batch, well inside the
/// fragment map's LRU capacity so that its evictions cannot make the two sides differ.
const BATCH: usize = 20_000;

/// Offsets where a header field starts in the common layouts (untagged, one tag, two tags).
const HOT: [usize; 24] = [
    12, 13, 14, 15, 16, 17, 18, 20, 21, 23, 30, 34, 36, 40, 46, 47, 54, 55, 56, 57, 58, 60, 62, 66,
];
const EXTREMES: [u8; 12] = [
    0x00, 0xff, 0x0f, 0xf0, 0x45, 0x4f, 0x40, 0x60, 0x81, 0x88, 0x86, 0x2c,
];

fn mutate(r: &mut SmallRng, base: &[u8], other: &[u8]) -> Vec<u8> {
    let mut f = base.to_vec();
    for _ in 0..r.random_range(1..=4) {
        match r.random_range(0..10) {
            0 | 1 if !f.is_empty() => {
                let i = r.random_range(0..f.len());
                f[i] = r.random();
            }
            2 | 3 => {
                let i = *HOT.choose(r).unwrap();
                if i < f.len() {
                    f[i] = *EXTREMES.choose(r).unwrap();
                }
            }
            4 => {
                let len = r.random_range(0..=f.len());
                f.truncate(len);
            }
            5 => {
                let at = r.random_range(0..=f.len());
                let n = *[1usize, 2, 4, 8, 40].choose(r).unwrap();
                let bytes: Vec<u8> = (0..n).map(|_| r.random()).collect();
                f.splice(at..at, bytes);
            }
            6 if !f.is_empty() => {
                let at = r.random_range(0..f.len());
                let n = r.random_range(1..=8usize.min(f.len() - at));
                f.drain(at..at + n);
            }
            // Duplicate a block: repeated VLAN tags, extension headers, IP headers.
            7 if f.len() > 16 => {
                let at = r.random_range(12..f.len());
                let n = *[4usize, 8, 16, 20, 40].choose(r).unwrap();
                let end = (at + n).min(f.len());
                let block = f[at..end].to_vec();
                f.splice(at..at, block);
            }
            // Splice: this frame's head onto another's tail.
            8 => {
                let cut = r.random_range(0..=f.len());
                let from = r.random_range(0..=other.len());
                f.truncate(cut);
                f.extend_from_slice(&other[from..]);
            }
            // Ethertype or VLAN TPID swapped for another known one.
            _ => {
                let at = *[12usize, 16, 20].choose(r).unwrap();
                if at + 2 <= f.len() {
                    let et: u16 = *[0x0800u16, 0x86dd, 0x8100, 0x88a8, 0x0806]
                        .choose(r)
                        .unwrap();
                    f[at..at + 2].copy_from_slice(&et.to_be_bytes());
                }
            }
        }
    }
    f.truncate(1500);
    f
}

#[test]
fn mutated_hostile_frames_never_reach_a_closed_port() {
    let seed = seed("hostile campaign");
    let frames = KnownRoutes::new().run(move || campaign(seed));
    assert_eq!(frames, CAMPAIGN_FRAMES);
}

fn campaign(seed: u64) -> usize {
    let mut r = SmallRng::seed_from_u64(seed);
    let corpus: Vec<Vec<u8>> = corpus().0.into_iter().map(|c| c.frame).collect();
    let rules = rules();
    let mut done = 0;
    // Allowed by a rule, passed for another reason, dropped: evidence the campaign reaches all.
    let mut tally = [0usize; 3];
    for batch in 0..CAMPAIGN_FRAMES / BATCH {
        let cfg = if batch % 2 == 0 { lenient() } else { strict() };
        let tables = build(&rules, cfg).expect("tables");
        let mut b = twin(&tables);
        let mut firsts = HashMap::new();
        let mut want = vec![0u64; (TOO_BIG + 1 + REASON_COUNT) as usize];
        for i in 0..BATCH {
            let base = corpus.choose(&mut r).unwrap();
            let other = corpus.choose(&mut r).unwrap();
            let frame = mutate(&mut r, base, other);
            let parsed = parse(&frame);
            let outcome = b.env.judge(&frame);
            let at = || format!("seed {seed}, batch {batch}, frame {i}");
            if let Err(e) = explained(outcome, &parsed, &frame, &cfg, &rules, &mut firsts) {
                panic!(
                    "{}: {e}\n  reference: {outcome:?}\n  frame: {frame:02x?}",
                    at()
                );
            }
            if frame.len() < 14 {
                continue;
            }
            want[counter_index(Want::of(outcome))] += 1;
            tally[match outcome {
                Outcome::Allow { .. } => 0,
                Outcome::Pass(_) => 1,
                Outcome::Deny { .. } => 2,
            }] += 1;
            let action = b.dp.run(&frame);
            assert_eq!(
                action,
                Want::of(outcome).action(),
                "{}: XDP action {action}, reference {outcome:?}\n  frame: {frame:02x?}",
                at()
            );
        }
        assert_eq!(
            counters(&b.dp),
            want,
            "seed {seed}, batch {batch}: XDP counters (rule slots 0..=6, then reasons) differ from the reference's"
        );
        done += BATCH;
    }
    let [allowed, passed, dropped] = tally;
    println!(
        "hostile campaign: {done} frames ({allowed} allowed by a rule, {passed} passed for another reason, {dropped} dropped), 0 unexplained passes, 0 disagreements"
    );
    done
}
