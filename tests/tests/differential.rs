//! Differential test: random and edge-case frames through the XDP program and the reference
//! classifier, on random rule sets; verdicts must agree frame by frame and counters batch by
//! batch. Replay a failure with `PORTGUARD_SEED=<seed printed below>`.

use std::{collections::HashMap, net::IpAddr};

use integration_tests::{
    DROP, PASS, Twin,
    addrs::BCAST4,
    frames::{Frame, L4},
    net::KnownRoutes,
};
use portguard::{
    compile::tables::{TableRule, build},
    policy::{Match, Proto},
};
use portguard_common::{
    classify::Outcome,
    config::{Config, DROP as CFG_DROP, JUDGE, MODE_AUDIT},
    reason::{REASON_COUNT, Reason},
};
use rand::{Rng, SeedableRng, rngs::SmallRng, seq::IndexedRandom};

const FRAMES: usize = 120_000;
const RULE_SETS: usize = 24;

/// Addresses drawn from a small pool so that rules, locals and sources meet often.
struct Pools {
    v4_src: Vec<[u8; 4]>,
    v6_src: Vec<[u8; 16]>,
    v4_local: Vec<[u8; 4]>,
    v6_local: Vec<[u8; 16]>,
    ports: Vec<u16>,
}

fn v6addr(r: &mut SmallRng, net: u16) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
    a[4..6].copy_from_slice(&net.to_be_bytes());
    a[15] = r.random_range(0..4);
    a
}

fn pools(r: &mut SmallRng) -> Pools {
    let v4_src = (0..12)
        .map(|_| {
            [
                198,
                18 + r.random_range(0..2),
                r.random_range(0..4),
                r.random_range(0..6),
            ]
        })
        .collect();
    let v6_src = (0..8)
        .map(|_| {
            let n = r.random_range(0..4);
            v6addr(r, n)
        })
        .collect();
    let mut ports: Vec<u16> = vec![0, 1, 22, 53, 443, 2500, 3300, 5900, 6923, 49152, 65535];
    ports.extend((0..10).map(|_| r.random::<u16>()));
    Pools {
        v4_src,
        v6_src,
        v4_local: vec![[198, 18, 0, 1], [198, 18, 9, 1]],
        v6_local: vec![v6addr(r, 9)],
        ports,
    }
}

#[expect(
    clippy::many_single_char_names,
    reason = "short names for the generator's dice and pools keep each line readable"
)]
fn random_rules(r: &mut SmallRng, p: &Pools) -> Vec<TableRule> {
    let n = r.random_range(1..40);
    (0..n)
        .map(|slot| {
            let mut sources = Vec::new();
            for _ in 0..r.random_range(1..4) {
                let net = if r.random_bool(0.1) {
                    if r.random_bool(0.5) {
                        "0.0.0.0/0".parse().unwrap()
                    } else {
                        "::/0".parse().unwrap()
                    }
                } else if r.random_bool(0.6) {
                    let a = *p.v4_src.choose(r).unwrap();
                    ipnet::IpNet::new(IpAddr::from(a), r.random_range(14..=32))
                        .unwrap()
                        .trunc()
                } else {
                    let a = *p.v6_src.choose(r).unwrap();
                    ipnet::IpNet::new(IpAddr::from(a), r.random_range(30..=128))
                        .unwrap()
                        .trunc()
                };
                sources.push(net);
            }
            let kind = r.random_range(0..10);
            let (protos, matches) = if kind < 2 {
                let t: u8 = *[0u8, 3, 8, 11, 128, 129, 133, 135, 136].choose(r).unwrap();
                let code = r.random_bool(0.3).then(|| r.random_range(0..5));
                (
                    vec![Proto::Icmp, Proto::Icmpv6],
                    Match::Icmp {
                        types: vec![t..=t.saturating_add(r.random_range(0..3))],
                        code,
                    },
                )
            } else {
                let protos = [
                    vec![Proto::Tcp],
                    vec![Proto::Udp],
                    vec![Proto::Sctp],
                    vec![Proto::Tcp, Proto::Udp],
                ]
                .choose(r)
                .unwrap()
                .clone();
                let a = (*p.ports.choose(r).unwrap()).max(1);
                let b = if r.random_bool(0.5) {
                    a
                } else {
                    a.saturating_add(r.random_range(0..2000))
                };
                (protos, Match::Ports(vec![a..=b]))
            };
            TableRule {
                slot: slot * 3 + 1,
                sources,
                protos,
                matches,
            }
        })
        .collect()
}

#[expect(
    clippy::too_many_lines,
    reason = "one generator for every frame shape keeps the weights side by side"
)]
fn random_frame(r: &mut SmallRng, p: &Pools, recent_frag: &mut Option<Frame>) -> Vec<u8> {
    // Sometimes: the later fragment of a recent first fragment.
    if let Some(first) = recent_frag.as_ref().filter(|_| r.random_bool(0.3)) {
        let mut later = first.clone();
        later.l4 = L4::Raw {
            proto: 17,
            bytes: (0..16).map(|_| r.random()).collect(),
        };
        if let L4::Raw { proto, .. } = &mut later.l4 {
            *proto = match first.l4 {
                L4::Tcp { .. } => 6,
                L4::Sctp { .. } => 132,
                _ => 17,
            };
        }
        let (id, _, _) = first.frag.unwrap();
        later.frag = Some((id, r.random_range(1..200), r.random_bool(0.5)));
        *recent_frag = None;
        return later.build();
    }
    let v6 = r.random_bool(0.4);
    let port = |r: &mut SmallRng| {
        if r.random_bool(0.7) {
            *p.ports.choose(r).unwrap()
        } else {
            r.random()
        }
    };
    let l4 = match r.random_range(0..12) {
        0..=3 => L4::Tcp {
            sport: port(r),
            dport: port(r),
            flags: r.random(),
        },
        4..=6 => L4::Udp {
            sport: port(r),
            dport: port(r),
        },
        7 => L4::Sctp {
            sport: port(r),
            dport: port(r),
        },
        8..=10 => {
            let ty = *[
                0u8,
                1,
                2,
                3,
                4,
                8,
                11,
                12,
                128,
                129,
                133,
                135,
                136,
                r.random(),
            ]
            .choose(r)
            .unwrap();
            let quote: Vec<u8> = (0..r.random_range(0..70)).map(|_| r.random()).collect();
            L4::Icmp {
                ty,
                code: r.random_range(0..6),
                quote,
            }
        }
        _ => L4::Raw {
            proto: *[47u8, 50, 2, 89, 132, 0, 43].choose(r).unwrap(),
            bytes: vec![0; 12],
        },
    };
    let mut f = if v6 {
        let src = if r.random_bool(0.8) {
            *p.v6_src.choose(r).unwrap()
        } else {
            let net = r.random();
            v6addr(r, net)
        };
        let dst = match r.random_range(0..10) {
            0..=6 => p.v6_local[0],
            7 => {
                let mut m = [0u8; 16];
                m[0] = 0xff;
                m[1] = 2;
                m[15] = 1;
                m
            }
            8 => v6addr(r, 77),
            // Routed on by the namespace (net::FORWARDED_V6).
            _ => v6addr(r, 0xf0),
        };
        let mut f = Frame::v6(src, dst, l4);
        for _ in 0..r.random_range(0usize..9).saturating_sub(5) {
            let t = *[0u8, 43, 60].choose(r).unwrap();
            f.v6_ext
                .push((t, (0..r.random_range(1..30)).map(|_| r.random()).collect()));
        }
        f
    } else {
        let src = if r.random_bool(0.8) {
            *p.v4_src.choose(r).unwrap()
        } else {
            r.random()
        };
        let dst = match r.random_range(0..10) {
            0..=5 => *p.v4_local.choose(r).unwrap(),
            6 => [198, 18, 0, 255],
            7 => [255, 255, 255, 255],
            8 => [224, 0, 0, r.random()],
            9 if r.random_bool(0.5) => [198, 18, 0, 77],
            // Routed on by the namespace (net::FORWARDED_V4).
            _ => [198, 19, 200, r.random()],
        };
        let mut f = Frame::v4(src, dst, l4);
        if r.random_bool(0.2) {
            f.v4_options = vec![1; 4 * r.random_range(1..=10)];
        }
        f
    };
    if r.random_bool(0.2) {
        f.vlans = (0..r.random_range(1..4))
            .map(|_| {
                (
                    *[0x8100u16, 0x88a8].choose(r).unwrap(),
                    r.random_range(0..4096),
                )
            })
            .collect();
    }
    // Mostly the host's MAC (the default); sometimes a guest's behind the bridge, a group.
    if r.random_bool(0.2) {
        f.dst_mac = *[
            [0x02, 0, 0, 0, 0, 0x99],
            [0xff; 6],
            [0x01, 0, 0x5e, 0, 0, 1],
        ]
        .choose(r)
        .unwrap();
    }
    if r.random_bool(0.12) && !matches!(f.l4, L4::Raw { .. }) {
        f.frag = Some((r.random(), 0, true));
        *recent_frag = Some(f.clone());
    }
    f.payload = (0..r.random_range(0..40)).map(|_| r.random()).collect();
    let mut bytes = f.build();
    match r.random_range(0..10) {
        // Truncate: anywhere, often at a header boundary region.
        0 | 1 => {
            let len = r.random_range(14..=bytes.len());
            bytes.truncate(len);
        }
        // Flip a random byte.
        2 => {
            let i = r.random_range(0..bytes.len());
            bytes[i] = r.random();
        }
        // Non-IP ethertype or ARP.
        3 if r.random_bool(0.2) => {
            let et: u16 = *[0x0806u16, 0x88cc, 0x8035, r.random()].choose(r).unwrap();
            bytes[12..14].copy_from_slice(&et.to_be_bytes());
        }
        _ => {}
    }
    bytes
}

#[test]
fn xdp_program_and_reference_classifier_agree() {
    let seed = integration_tests::seed("differential test");
    let total = KnownRoutes::new().run(move || run(seed));
    assert!(total >= 100_000, "ran {total} frames");
}

fn run(seed: u64) -> usize {
    let mut r = SmallRng::seed_from_u64(seed);
    let mut frames = 0;
    for set in 0..RULE_SETS {
        let p = pools(&mut r);
        let rules = random_rules(&mut r, &p);
        let cfg = Config {
            mode: if r.random_bool(0.15) { MODE_AUDIT } else { 0 },
            broadcast: if r.random_bool(0.5) { JUDGE } else { 0 },
            non_ip: if r.random_bool(0.3) { CFG_DROP } else { 0 },
            not_for_host: if r.random_bool(0.3) { CFG_DROP } else { 0 },
            ..Config::default()
        };
        let tables = build(&rules, cfg).expect("tables");
        let locals: Vec<IpAddr> = p
            .v4_local
            .iter()
            .map(|a| IpAddr::from(*a))
            .chain(p.v6_local.iter().map(|a| IpAddr::from(*a)))
            .collect();
        let Twin { mut dp, env } = Twin::new(&tables, &locals, &[IpAddr::from(BCAST4)]);
        let mut want_rules: HashMap<u32, u64> = HashMap::new();
        let mut want_reasons = [0u64; REASON_COUNT as usize];
        let mut recent = None;
        for i in 0..FRAMES / RULE_SETS {
            let frame = random_frame(&mut r, &p, &mut recent);
            let outcome = env.judge(&frame);
            let want = match outcome {
                Outcome::Allow { slot } => {
                    *want_rules.entry(slot).or_default() += 1;
                    PASS
                }
                Outcome::Pass(reason) => {
                    want_reasons[reason as usize] += 1;
                    PASS
                }
                Outcome::Deny { reason, .. } => {
                    want_reasons[reason as usize] += 1;
                    if cfg.mode == MODE_AUDIT {
                        want_reasons[Reason::AuditPassed as usize] += 1;
                        PASS
                    } else {
                        DROP
                    }
                }
            };
            let got = dp.run(&frame);
            assert_eq!(
                got, want,
                "seed {seed}, rule set {set}, frame {i}: XDP said {got}, reference {outcome:?}\nframe: {frame:02x?}\nrules: {rules:?}"
            );
            frames += 1;
        }
        for rule in &rules {
            let got = dp.dp.rule_counters(rule.slot).unwrap().packets;
            assert_eq!(
                got,
                want_rules.get(&rule.slot).copied().unwrap_or(0),
                "seed {seed} set {set}: rule slot {}",
                rule.slot
            );
        }
        for (reason, c) in dp.dp.reason_counters().unwrap() {
            assert_eq!(
                c.packets,
                want_reasons[reason as usize],
                "seed {seed} set {set}: reason {}",
                reason.name()
            );
        }
    }
    println!("differential: {frames} frames, {RULE_SETS} rule sets, 0 mismatches");
    frames
}
