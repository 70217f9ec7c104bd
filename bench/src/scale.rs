//! `bench scale`: the datapath figures, compile time, load time and map memory as the policy
//! grows from 10 to 1000 rules and from 10 to 100,000 source prefixes.
//!
//! The rule sets are synthetic (seeded, so every run measures the same tables): rule `i` opens
//! tcp and udp port 10000 + i to its share of random source prefixes. The allowed frames hit
//! the *last* rule, the one a linear scan would reach last; the denied frame comes from the
//! first rule's sources. Random prefixes are drawn from 198.19.0.0/16 (lengths 24 to 32, so
//! they nest and the compiler has overlaps to flatten) and `2001:db8:8000::/33` (lengths 48 to
//! 128); the frames' own sources sit in 198.18.0.0/16 and `2001:db8:0::/33`, outside them.

use std::{
    collections::HashSet,
    fmt::Write as _,
    os::fd::{AsFd as _, AsRawFd as _},
    path::Path,
    time::Instant,
};

use integration_tests::PinDir;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use portguard::{
    compile::tables::{self, TableRule},
    ebpf::Datapath,
    policy::{Match, Proto},
};
use portguard_common::{config::Config, maps};
use rand::{Rng as _, SeedableRng as _, rngs::StdRng, seq::SliceRandom as _};

use crate::{
    datapath::{self, ReplyNs, Scenario},
    probe::{self, Case, Measured},
    report::{Report, table},
    sys,
};

/// Rounds; every size's cases are measured in each.
const ROUNDS: usize = 7;
/// The generator's seed: the same tables on every run.
const SEED: u64 = 0x9067_a4d0;
/// First port of the synthetic rules.
const BASE_PORT: u16 = 10_000;

/// One policy size.
#[derive(Clone, Copy, Debug)]
struct Size {
    /// `rules` or `prefixes`: which dimension this sweep grows.
    sweep: &'static str,
    /// Number of rules.
    rules: usize,
    /// Random source prefixes, both families together (plus four fixed ones).
    prefixes: usize,
}

const SIZES: [Size; 6] = [
    Size {
        sweep: "rules",
        rules: 10,
        prefixes: 20,
    },
    Size {
        sweep: "rules",
        rules: 100,
        prefixes: 200,
    },
    Size {
        sweep: "rules",
        rules: 1000,
        prefixes: 2000,
    },
    Size {
        sweep: "prefixes",
        rules: 10,
        prefixes: 10,
    },
    Size {
        sweep: "prefixes",
        rules: 10,
        prefixes: 1000,
    },
    Size {
        sweep: "prefixes",
        rules: 10,
        prefixes: 100_000,
    },
];

/// `n` distinct IPv4 prefixes inside 198.19.0.0/16, lengths 24..=32: all candidates, shuffled.
fn v4_prefixes(rng: &mut StdRng, n: usize) -> Vec<IpNet> {
    let mut all: Vec<IpNet> = (24u8..=32)
        .flat_map(|len| {
            let step = 1u32 << (32 - len);
            (0..(1u32 << 16) / step).map(move |k| {
                let addr = u32::from_be_bytes([198, 19, 0, 0]) + k * step;
                IpNet::V4(Ipv4Net::new(addr.into(), len).expect("valid length"))
            })
        })
        .collect();
    assert!(n <= all.len(), "{n} IPv4 prefixes do not fit 198.19.0.0/16");
    all.shuffle(rng);
    all.truncate(n);
    all
}

/// `n` distinct IPv6 prefixes inside `2001:db8:8000::/33`, lengths 48..=128.
fn v6_prefixes(rng: &mut StdRng, n: usize) -> Vec<IpNet> {
    let base = u128::from_be_bytes([
        0x20, 0x01, 0x0d, 0xb8, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ]);
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let len: u8 = rng.random_range(48..=128);
        let addr = base | (rng.random::<u128>() >> 33);
        let net = Ipv6Net::new(addr.into(), len)
            .expect("valid length")
            .trunc();
        if seen.insert(net) {
            out.push(IpNet::V6(net));
        }
    }
    out
}

/// The synthetic rule set of one size, and where its cases send their frames.
fn synthetic(size: Size) -> (Vec<TableRule>, Scenario) {
    let mut rng = StdRng::seed_from_u64(SEED ^ (size.rules as u64) << 20 ^ size.prefixes as u64);
    let n4 = size.prefixes.div_ceil(2);
    let mut pool = v4_prefixes(&mut rng, n4);
    pool.extend(v6_prefixes(&mut rng, size.prefixes - n4));
    let mut rules: Vec<TableRule> = (0..size.rules)
        .map(|i| {
            let port = BASE_PORT + i as u16;
            TableRule {
                slot: i as u32,
                sources: vec![],
                protos: vec![Proto::Tcp, Proto::Udp],
                matches: Match::Ports(vec![port..=port]),
            }
        })
        .collect();
    for (k, net) in pool.into_iter().enumerate() {
        rules[k % size.rules].sources.push(net);
    }
    let fixed = |s: [&str; 2]| s.map(|n| n.parse::<IpNet>().expect("literal"));
    rules[0]
        .sources
        .extend(fixed(["198.18.4.0/24", "2001:db8:4::/48"]));
    let last = size.rules - 1;
    rules[last]
        .sources
        .extend(fixed(["198.18.1.0/24", "2001:db8:1::/48"]));
    let port = BASE_PORT + last as u16;
    let scenario = Scenario {
        allow4: [198, 18, 1, 7],
        allow6: [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7],
        deny4: [198, 18, 4, 20],
        tcp: (port, last as u32),
        udp: ([198, 18, 1, 5], port, last as u32),
    };
    (rules, scenario)
}

/// The kernel's memory figure for every map of a loaded datapath: (name, bytes).
fn map_memory(dp: &mut Datapath) -> Vec<(String, u64)> {
    use aya::maps::Map;
    let policy: Vec<(String, u64)> = dp
        .policy()
        .maps()
        .into_iter()
        .filter_map(|(name, m)| {
            let (Map::Array(data) | Map::LpmTrie(data)) = m else {
                return None;
            };
            let fd = data.fd().as_fd().as_raw_fd();
            Some((name.to_owned(), sys::map_memlock(fd).expect("map fdinfo")))
        })
        .collect();
    dp.ebpf_mut()
        .maps()
        .filter_map(|(name, m)| {
            let (Map::Array(data)
            | Map::PerCpuArray(data)
            | Map::LpmTrie(data)
            | Map::HashMap(data)
            | Map::LruHashMap(data)
            | Map::RingBuf(data)) = m
            else {
                return None;
            };
            let fd = data.fd().as_fd().as_raw_fd();
            Some((name.to_owned(), sys::map_memlock(fd).expect("map fdinfo")))
        })
        .chain(policy)
        .collect()
}

/// Whether a map is one of the policy tables (the program's own) rather than pinned state.
fn is_table(name: &str) -> bool {
    [maps::POLICY, maps::SRC_TRIE0, maps::SRC_TRIE1].contains(&name)
}

/// One measured size.
#[derive(Clone, Debug)]
pub(crate) struct Point {
    /// `rules` or `prefixes`.
    pub(crate) sweep: &'static str,
    /// Nominal size on the sweep's axis (rules, or random prefixes).
    pub(crate) size: usize,
    /// Per-case figures.
    pub(crate) cases: Vec<Measured>,
}

impl Point {
    /// A case's figures by key.
    pub(crate) fn case(&self, key: &str) -> &Measured {
        self.cases
            .iter()
            .find(|m| m.key == key)
            .expect("case measured")
    }
}

struct Row {
    size: Size,
    v4: usize,
    v6: usize,
    src_classes: usize,
    port_classes: u32,
    build_ms: f64,
    load_ms: f64,
    tables_bytes: u64,
    state_bytes: u64,
    memory: Vec<(String, u64)>,
    cases: Vec<Measured>,
}

/// Build and load one size; its datapath is measured later, interleaved with the others.
fn prepare(size: Size, base: Config, conn_port: u16) -> (Row, Datapath, PinDir, Vec<Case>) {
    let (rules, scenario) = synthetic(size);
    let t = Instant::now();
    let tables = tables::build(&rules, base).expect("synthetic tables");
    let build_ms = t.elapsed().as_secs_f64() * 1e3;
    drop(rules);
    let pins = PinDir::new();
    let t = Instant::now();
    let mut dp = Datapath::load(&tables, &pins.0).expect("load synthetic tables");
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    dp.set_local_addrs(&[datapath::HOST4.into(), datapath::HOST6.into()], &[])
        .expect("local addresses");
    let memory = map_memory(&mut dp);
    let sum = |tables: bool| {
        memory
            .iter()
            .filter(|(n, _)| is_table(n) == tables)
            .map(|(_, b)| b)
            .sum()
    };
    let cols = tables.config.port_classes as usize;
    let row = Row {
        size,
        v4: tables.src_v4.len(),
        v6: tables.src_v6.len(),
        src_classes: tables.decisions.len() / cols - 1,
        port_classes: tables.config.port_classes - 1,
        build_ms,
        load_ms,
        tables_bytes: sum(true),
        state_bytes: sum(false),
        memory,
        cases: Vec::new(),
    };
    (row, dp, pins, datapath::cases(&scenario, conn_port, None))
}

/// Every size loaded side by side, then all their cases measured in the same rounds, ordered
/// case by case so that one case runs on every size back to back: the 10-rule and the
/// 1000-rule figures of a round come from the same second of a machine that other people use
/// too, and their ratio is compared round by round.
fn measure_all(base: Config, conn_port: u16) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut dps = Vec::new();
    let mut pins = Vec::new();
    let mut cases = Vec::new();
    for (i, s) in SIZES.iter().enumerate() {
        eprintln!(
            "portguard-bench: scale: {} rules, {} random prefixes: build and load",
            s.rules, s.prefixes
        );
        let (row, dp, pin, cs) = prepare(*s, base, conn_port);
        rows.push(row);
        dps.push(dp);
        pins.push(pin);
        cases.extend(cs.into_iter().map(|c| Case { dp: i, ..c }));
    }
    let per_size = cases.len() / SIZES.len();
    // Case-major: (case 0 on every size), (case 1 on every size), ...
    let order: Vec<usize> = (0..per_size)
        .flat_map(|k| (0..SIZES.len()).map(move |i| i * per_size + k))
        .collect();
    let cases: Vec<Case> = order.iter().map(|&j| cases[j].clone()).collect();
    eprintln!(
        "portguard-bench: scale: measuring {} cases x {ROUNDS} rounds",
        cases.len()
    );
    let name = |slot: u32| format!("rule #{slot}");
    let measured = probe::measure(&mut dps, &cases, ROUNDS, probe::REPEAT, &name);
    for (c, m) in cases.iter().zip(measured) {
        rows[c.dp].cases.push(m);
    }
    drop(dps);
    drop(pins);
    rows
}

fn mib(b: u64) -> String {
    format!("{:.2}", b as f64 / (1024.0 * 1024.0))
}

/// Measure every size and tabulate; the points feed the plot of `bench all`.
#[expect(
    clippy::too_many_lines,
    reason = "one linear script: measure, tabulate, describe"
)]
pub(crate) fn run(root: &Path) -> (Report, Vec<Point>) {
    // The site's settings (audit on, as a site has it by default), the synthetic geometry.
    let base = datapath::rhv_policy(root).tables.config;
    let rows: Vec<Row> = ReplyNs::new().run(move |conn| measure_all(base, conn.port));
    let policy_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.size.sweep.to_owned(),
                r.size.rules.to_string(),
                format!("{} + {}", r.v4, r.v6),
                r.src_classes.to_string(),
                r.port_classes.to_string(),
                format!("{:.1}", r.build_ms),
                format!("{:.1}", r.load_ms),
                mib(r.tables_bytes),
                mib(r.state_bytes),
            ]
        })
        .collect();
    let keys: Vec<(&str, &str)> = rows[0].cases.iter().map(|m| (m.key, m.label)).collect();
    let cost_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut v = vec![
                r.size.sweep.to_owned(),
                r.size.rules.to_string(),
                (r.v4 + r.v6).to_string(),
                format!(
                    "{:.1}",
                    probe::median(&r.cases.iter().map(|m| m.noop_ns).collect::<Vec<_>>())
                ),
            ];
            v.extend(
                r.cases
                    .iter()
                    .map(|m| format!("{:.1} ({:.2}×)", m.ns, m.ratio)),
            );
            v
        })
        .collect();
    // Growth from 10 to 1000 rules: the median of the per-round ratios, each pair measured
    // back to back.
    let growth_of = |key: &str| {
        let rounds = |rules: usize| {
            &rows
                .iter()
                .find(|r| r.size.sweep == "rules" && r.size.rules == rules)
                .expect("size measured")
                .cases
                .iter()
                .find(|m| m.key == key)
                .expect("case measured")
                .rounds
        };
        let ratios: Vec<f64> = rounds(1000)
            .iter()
            .zip(rounds(10))
            .map(|(big, small)| big / small)
            .collect();
        probe::median(&ratios) - 1.0
    };
    let growth = growth_of("allowed_tcp_v4");
    let growth_all: Vec<(&str, f64)> = keys.iter().map(|(k, _)| (*k, growth_of(k))).collect();
    let mut md = format!(
        "Synthetic policies (seeded, `bench/src/scale.rs`): rule *i* opens tcp+udp port \
         10000+*i* to its share of random source prefixes (IPv4 in 198.19.0.0/16, lengths 24–32, \
         nested; IPv6 in 2001:db8:8000::/33, lengths 48–128), plus one fixed prefix per family \
         for the first rule (the denied source) and the last rule (the allowed source): allowed \
         frames hit the last rule. Auditing as the RHV site has it (rate {} /s). Each ns figure: \
         median of {ROUNDS} rounds of BPF_PROG_TEST_RUN × {} against `portguard_noop` in the \
         same round (method as in datapath.md); all sizes are loaded side by side and measured in the same interleaved rounds.\n\n\
         ## Compile, load, memory\n\n\
         build = `compile::tables::build` (rules → tables); load = `Datapath::load` (object, maps, \
         table writes, verifier). Memory = the kernel's `memlock` of each map from \
         `/proc/self/fdinfo` (since 6.4 the memory in use: an LPM trie counts its entries), \
         policy tables (`PG_SRC_V4/V6`, `PG_PORTS`, `PG_DECISIONS`, `PG_CONFIG`) apart from the \
         pinned state maps (counters, local addresses, fragments, audit ring), which do not \
         depend on the policy.\n\n",
        base.audit_rate,
        probe::REPEAT
    );
    md.push_str(&table(
        &[
            "sweep",
            "rules",
            "prefixes v4 + v6",
            "source classes",
            "port classes",
            "build ms",
            "load ms",
            "tables MiB",
            "state MiB",
        ],
        &policy_rows,
    ));
    md.push_str("\n## ns/packet (× no-op)\n\n");
    let mut headers = vec!["sweep", "rules", "prefixes", "no-op ns"];
    headers.extend(keys.iter().map(|(_, l)| *l));
    md.push_str(&table(&headers, &cost_rows));
    let _ = writeln!(
        md,
        "\nTarget: cost grows ≤ 10% from 10 to 1000 rules (median over rounds of the 1000-rule / \
         10-rule ratio, the two measured back to back). Allowed TCP/IPv4: {:+.1}% — {}. Every \
         case, 10 → 1000 rules: {}.",
        growth * 100.0,
        if growth <= 0.10 { "met" } else { "not met" },
        growth_all
            .iter()
            .map(|(k, g)| format!("{k} {:+.1}%", g * 100.0))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let json_rows: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "sweep": r.size.sweep,
                "rules": r.size.rules,
                "random_prefixes": r.size.prefixes,
                "prefixes_v4": r.v4,
                "prefixes_v6": r.v6,
                "source_classes": r.src_classes,
                "port_classes": r.port_classes,
                "build_ms": probe::round3(r.build_ms),
                "load_ms": probe::round3(r.load_ms),
                "memory_method": "memlock from /proc/self/fdinfo of each map fd",
                "tables_bytes": r.tables_bytes,
                "state_bytes": r.state_bytes,
                "maps": r.memory.iter().map(|(n, b)| serde_json::json!({"map": n, "bytes": b})).collect::<Vec<_>>(),
                "cases": r.cases.iter().map(Measured::json).collect::<Vec<_>>(),
            })
        })
        .collect();
    let json = serde_json::json!({
        "seed": SEED,
        "repeat": probe::REPEAT,
        "rounds": ROUNDS,
        "sizes": json_rows,
        "targets": {
            "growth_le_10pct_10_to_1000_rules": {
                "allowed_tcp_v4_growth": probe::round3(growth),
                "met": growth <= 0.10,
                "per_case": growth_all.iter().map(|(k, g)| serde_json::json!({"case": k, "growth": probe::round3(*g)})).collect::<Vec<_>>(),
            }
        }
    });
    let points = rows
        .into_iter()
        .map(|r| Point {
            sweep: r.size.sweep,
            size: if r.size.sweep == "rules" {
                r.size.rules
            } else {
                r.size.prefixes
            },
            cases: r.cases,
        })
        .collect();
    (
        Report {
            name: "scale",
            title: "portguard datapath against policy size".to_owned(),
            md,
            json,
        },
        points,
    )
}
