//! Compiled tables -> one generation of the policy image (`portguard_common::image`): the
//! flat IPv4 source table, the packed port and decision tables, and the trie entries.

use portguard_common::{
    config::Config,
    image::{
        CHUNK_WORDS, GROUP, GROUP_LEN, MAX_SRC4_GROUPS, SRC4_DIR, SRC4_L1_AT, SRC4_L1_LEN,
        SRC4_TRIE, TRIE_KEY_BYTES, TRIE_TAG_BITS, trie_key,
    },
    maps::{PORT_SPACE, PROTO_SLOTS},
    tables::Tables,
};

/// Why tables cannot be laid out as an image.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImageError {
    /// A table does not have the size its geometry says.
    #[error("the {table} table has {got} entries where the geometry needs {want}")]
    Geometry {
        /// Which table.
        table: &'static str,
        /// Entries given.
        got: usize,
        /// Entries needed.
        want: usize,
    },
    /// A value does not fit the 16 bits the image stores it in.
    #[error("{table} entry {value} does not fit 16 bits")]
    TooWide {
        /// Which table.
        table: &'static str,
        /// The value.
        value: u32,
    },
    /// The image would exceed what a BPF array can hold.
    #[error("the policy image needs {words} words, more than a BPF array holds")]
    TooLarge {
        /// Words needed.
        words: usize,
    },
}

/// One trie entry: key bytes, prefix length in bits (the tag's 32 included), source class.
pub type TrieEntry = ([u8; TRIE_KEY_BYTES], u32, u32);

/// One generation of the policy image, ready to be written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    /// The generation's words, a whole number of chunks; its first chunk is [`Image::config`].
    pub words: Vec<u32>,
    /// The generation's trie: every IPv6 prefix, and the IPv4 ones when [`Config::src4`] is
    /// [`SRC4_TRIE`].
    pub trie: Vec<TrieEntry>,
    /// The config as written in the image (with its geometry filled in).
    pub config: Config,
}

impl Image {
    /// Chunks the generation occupies.
    #[must_use]
    pub fn chunks(&self) -> u32 {
        (self.words.len() / CHUNK_WORDS as usize) as u32
    }
}

/// Port classes and decisions are stored as u16, two per word.
fn pack(
    table: &'static str,
    values: impl ExactSizeIterator<Item = u32>,
) -> Result<Vec<u32>, ImageError> {
    let mut out = vec![0u32; values.len().div_ceil(2)];
    for (i, v) in values.enumerate() {
        let v16 = u16::try_from(v).map_err(|_| ImageError::TooWide { table, value: v })?;
        out[i / 2] |= u32::from(v16) << ((i % 2) * 16);
    }
    Ok(out)
}

/// The IPv4 flat table: level 1 and the groups, or `None` when the prefixes need more than
/// [`MAX_SRC4_GROUPS`] groups.
fn src4_dir(prefixes: &[([u8; 4], u8, u32)]) -> Option<(Vec<u32>, Vec<u32>)> {
    let mut l1 = vec![0u32; SRC4_L1_LEN as usize];
    let mut groups: Vec<u32> = Vec::new();
    // Shorter prefixes first: a longer one, written later, overrides them where it applies, and
    // a group created for it starts as a copy of the entry it replaces, so addresses it does not
    // cover keep the shorter prefix's class. Prefixes of one length never overlap.
    let mut sorted: Vec<&([u8; 4], u8, u32)> = prefixes.iter().collect();
    sorted.sort_by_key(|(_, len, _)| *len);
    for (addr, len, class) in sorted {
        let len = u32::from(*len);
        let a = u32::from_be_bytes(*addr) & u32::MAX.checked_shl(32 - len).unwrap_or(0);
        let top = (a >> 16) as usize;
        if len <= 16 {
            let n = 1usize << (16 - len);
            l1[top..top + n].fill(*class);
            continue;
        }
        let l2 = group_of(&mut l1[top], &mut groups)?;
        let second = ((a >> 8) & 0xff) as usize;
        if len <= 24 {
            let n = 1usize << (24 - len);
            groups[l2 + second..l2 + second + n].fill(*class);
            continue;
        }
        let mut entry = groups[l2 + second];
        let l3 = group_of(&mut entry, &mut groups)?;
        groups[l2 + second] = entry;
        let third = (a & 0xff) as usize;
        let n = 1usize << (32 - len);
        groups[l3 + third..l3 + third + n].fill(*class);
    }
    Some((l1, groups))
}

/// The first word of the group `entry` refers to, making one from the class it holds if it
/// holds one; `None` past the group budget.
fn group_of(entry: &mut u32, groups: &mut Vec<u32>) -> Option<usize> {
    if *entry & GROUP == 0 {
        let index = (groups.len() / GROUP_LEN as usize) as u32;
        if index >= MAX_SRC4_GROUPS {
            return None;
        }
        groups.extend(std::iter::repeat_n(*entry, GROUP_LEN as usize));
        *entry = GROUP | index;
    }
    Some(((*entry & !GROUP) * GROUP_LEN) as usize)
}

/// Lay out `tables` as one generation of the image.
pub fn build(tables: &Tables) -> Result<Image, ImageError> {
    let want_ports = (PROTO_SLOTS * PORT_SPACE) as usize;
    if tables.ports.len() != want_ports {
        return Err(ImageError::Geometry {
            table: "port",
            got: tables.ports.len(),
            want: want_ports,
        });
    }
    let cols = tables.config.port_classes.max(1) as usize;
    if tables.decisions.is_empty() || !tables.decisions.len().is_multiple_of(cols) {
        return Err(ImageError::Geometry {
            table: "decision",
            got: tables.decisions.len(),
            want: tables.decisions.len().div_ceil(cols).max(1) * cols,
        });
    }
    let mut trie: Vec<TrieEntry> = Vec::new();
    let (src4, l1, groups) = if let Some((l1, groups)) = src4_dir(&tables.src_v4) {
        (SRC4_DIR, l1, groups)
    } else {
        for (addr, len, class) in &tables.src_v4 {
            let mut wide = [0u8; 16];
            wide[..4].copy_from_slice(addr);
            trie.push((trie_key(4, &wide), TRIE_TAG_BITS + u32::from(*len), *class));
        }
        (SRC4_TRIE, vec![0; SRC4_L1_LEN as usize], Vec::new())
    };
    for (addr, len, class) in &tables.src_v6 {
        trie.push((trie_key(6, addr), TRIE_TAG_BITS + u32::from(*len), *class));
    }
    let ports = pack("port class", tables.ports.iter().map(|p| u32::from(*p)))?;
    let decisions = pack("decision", tables.decisions.iter().copied())?;
    let ports_at = SRC4_L1_AT + SRC4_L1_LEN;
    let groups_at = ports_at + ports.len() as u32;
    let decisions_at = groups_at + groups.len() as u32;
    let end = decisions_at as usize + decisions.len();
    let total = end.div_ceil(CHUNK_WORDS as usize) * CHUNK_WORDS as usize;
    if u32::try_from(total / CHUNK_WORDS as usize).is_err() || total > (1 << 30) {
        return Err(ImageError::TooLarge { words: total });
    }
    let config = Config {
        src4,
        groups_at,
        ports_at,
        decisions_at,
        ..tables.config
    };
    let mut words = Vec::with_capacity(total);
    words.extend_from_slice(&config_words(&config));
    words.extend_from_slice(&l1);
    words.extend_from_slice(&ports);
    words.extend_from_slice(&groups);
    words.extend_from_slice(&decisions);
    words.resize(total, 0);
    Ok(Image {
        words,
        trie,
        config,
    })
}

/// The config as the 16 words of its chunk.
fn config_words(c: &Config) -> [u32; CHUNK_WORDS as usize] {
    // SAFETY: Config is 64 bytes of plain integers without padding (asserted in
    // portguard-common), exactly one chunk.
    unsafe { std::mem::transmute::<Config, [u32; CHUNK_WORDS as usize]>(*c) }
}

#[cfg(test)]
mod tests {
    use portguard_common::{
        classify::Env as _,
        image::{Words, src4_class, u16_at},
        packet::Family,
        reference::RefEnv,
    };
    use rand::{Rng as _, SeedableRng as _, rngs::SmallRng};

    use super::*;
    use crate::{
        compile::tables::{TableRule, build as build_tables},
        policy::{Match, Proto},
    };

    struct Gen<'a>(&'a [u32]);

    impl Words for Gen<'_> {
        fn word(&self, at: u32) -> u32 {
            self.0.get(at as usize).copied().unwrap_or(0)
        }
    }

    /// The trie as the kernel answers it: the longest stored prefix containing the key.
    fn trie_class(trie: &[TrieEntry], key: &[u8; TRIE_KEY_BYTES], bits: u32) -> u32 {
        let bit = |k: &[u8; TRIE_KEY_BYTES], i: u32| k[(i / 8) as usize] >> (7 - i % 8) & 1;
        trie.iter()
            .filter(|(k, len, _)| *len <= bits && (0..*len).all(|i| bit(k, i) == bit(key, i)))
            .max_by_key(|(_, len, _)| *len)
            .map_or(0, |(_, _, c)| *c)
    }

    fn random_rules(r: &mut SmallRng, many: bool) -> Vec<TableRule> {
        let n = r.random_range(1..30);
        (0..n)
            .map(|slot| {
                let sources = (0..r.random_range(1..if many { 400 } else { 6 }))
                    .map(|_| {
                        if r.random_bool(0.2) {
                            let mut a =
                                [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
                            a[4] = r.random_range(0..3);
                            a[15] = r.random_range(0..8);
                            let net = std::net::Ipv6Addr::from(a);
                            format!("{net}/{}", r.random_range(0..=128))
                        } else {
                            // Nested and overlapping prefixes in a small corner of the space.
                            let a = std::net::Ipv4Addr::new(
                                198,
                                18 + r.random_range(0..2),
                                r.random_range(0..4),
                                r.random_range(0..=255),
                            );
                            format!("{a}/{}", r.random_range(0..=32))
                        }
                    })
                    .map(|s| s.parse::<ipnet::IpNet>().unwrap().trunc())
                    .collect();
                let lo = r.random_range(1..2000u16);
                TableRule {
                    slot,
                    sources,
                    protos: vec![if r.random_bool(0.5) {
                        Proto::Tcp
                    } else {
                        Proto::Udp
                    }],
                    matches: Match::Ports(vec![lo..=lo + r.random_range(0..50)]),
                }
            })
            .collect()
    }

    /// The image answers every lookup as the tables do: source classes (flat table and trie),
    /// port classes and decisions, on random nested prefixes.
    #[test]
    #[expect(
        clippy::many_single_char_names,
        reason = "short names for the dice, the tables and the addresses keep each line readable"
    )]
    fn the_image_answers_as_the_tables() {
        let mut r = SmallRng::seed_from_u64(19);
        for round in 0..60 {
            let t = build_tables(&random_rules(&mut r, round % 3 == 0), Config::default()).unwrap();
            let img = build(&t).unwrap();
            let env = RefEnv::new(&t);
            let g = Gen(&img.words);
            assert_eq!(img.config.src4, SRC4_DIR);
            for _ in 0..3000 {
                let mut a = [0u8; 16];
                a[..4].copy_from_slice(&[
                    198,
                    18 + r.random_range(0..2),
                    r.random_range(0..4),
                    r.random(),
                ]);
                let want = env.src_class(Family::V4, &a);
                let got = src4_class(
                    &g,
                    img.config.groups_at,
                    u32::from_be_bytes([a[0], a[1], a[2], a[3]]),
                );
                assert_eq!(got, want, "round {round}: {a:?}");
                let mut b = [
                    0x20,
                    0x01,
                    0x0d,
                    0xb8,
                    r.random_range(0..3),
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    r.random_range(0..8),
                ];
                b[15] = r.random_range(0..8);
                let want6 = env.src_class(Family::V6, &b);
                assert_eq!(
                    trie_class(&img.trie, &trie_key(6, &b), TRIE_TAG_BITS + 128),
                    want6
                );
                let idx = r.random_range(0..PROTO_SLOTS * PORT_SPACE);
                assert_eq!(u16_at(&g, img.config.ports_at, idx), env.port_class(idx));
                let d = r.random_range(0..t.decisions.len() as u32);
                assert_eq!(u16_at(&g, img.config.decisions_at, d), env.decision(d));
            }
        }
    }

    /// Scattered host addresses beyond the group budget go to the trie, and are answered the
    /// same.
    #[test]
    fn too_many_groups_fall_back_to_the_trie() {
        let sources: Vec<ipnet::IpNet> = (0..(MAX_SRC4_GROUPS + 10))
            .map(|i| format!("10.{}.{}.1/32", i >> 8, i & 0xff).parse().unwrap())
            .collect();
        let rules = [TableRule {
            slot: 0,
            sources,
            protos: vec![Proto::Tcp],
            matches: Match::Ports(vec![22..=22]),
        }];
        let t = build_tables(&rules, Config::default()).unwrap();
        let img = build(&t).unwrap();
        assert_eq!(img.config.src4, SRC4_TRIE);
        let env = RefEnv::new(&t);
        for a in [[10, 0, 5, 1], [10, 0, 5, 2], [10, 16, 9, 1], [11, 0, 0, 1]] {
            let mut wide = [0u8; 16];
            wide[..4].copy_from_slice(&a);
            assert_eq!(
                trie_class(&img.trie, &trie_key(4, &wide), TRIE_TAG_BITS + 32),
                env.src_class(Family::V4, &wide)
            );
        }
    }
}
