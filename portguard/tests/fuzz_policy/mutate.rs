//! The fuzzer's mutation engine: splitmix64 randomness (no dependency, and a case replays from
//! its numbers), and mutations of TOML text that aim at what a loader must survive: extreme
//! numbers, broken structure, bad UTF-8, deep nesting, huge strings, splices of other files.

/// Largest file a mutation may produce: inputs stay bounded, so a case cannot take long for its
/// size alone.
const MAX_FILE: usize = 512 * 1024;

// ---------------------------------------------------------------------------------------------
// Randomness

pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn for_case(seed: u64, case: u64) -> Self {
        let mut r = Rng(seed ^ case.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        r.next();
        r
    }

    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub(super) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub(super) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

// ---------------------------------------------------------------------------------------------
// Mutations

/// Numbers a field may be checked against: bounds of ports, types, u32, u64, and past them.
const EXTREMES: &[&str] = &[
    "0",
    "1",
    "-1",
    "255",
    "256",
    "65535",
    "65536",
    "4294967295",
    "4294967296",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775809",
    "1e400",
    "-0",
    "0x10",
    "nan",
    "inf",
    "1_000",
    "00022",
    "\"\"",
    "true",
    "[]",
    "{}",
    "1979-05-27T07:32:00Z",
];

/// Fragments that mean something to the policy grammar, to be dropped in anywhere.
const FRAGMENTS: &[&str] = &[
    "[[rules]]\n",
    "[rules]\n",
    "[product]\n",
    "[roles]\n",
    "[roles.\"x\"]\nalias_of = \"x\"\n",
    "[params]\n",
    "[features.f]\ndefault = true\n",
    "products = []\n",
    "products = [\"essentials\", \"essentials\"]\n",
    "products = [\"../etc/passwd\"]\n",
    "products = [\"\"]\n",
    "id = \"\"\n",
    "ports = \"${\"\n",
    "ports = \"${rhv.nfs_mountd_port}\"\n",
    "ports = \"1-65535,0\"\n",
    "icmp_type = \"0-255\"\n",
    "icmp_code = 255\n",
    "from = []\n",
    "to = [\"any\"]\n",
    "from = [\"host\"]\n",
    "when = [\"!\"]\n",
    "ssh_from = [\"any\", \"any\"]\n",
    "interfaces = [\"\", \"a/b\", \"0123456789abcdef\"]\n",
    "roles = [\"any\"]\n",
    "\"rhv.host\" = [\"0.0.0.0/0\", \"::/0\", \"::ffff:1.2.3.4/96\", \"1.2.3.4/33\"]\n",
    "[audit]\nrate = 0\nburst = 0\nmax_bytes = 0\npath = \"\"\n",
    "mode = \"audit\"\n",
    "a.b.c.d = 1\n",
    "\"\\u0000\" = \"\\u0000\"\n",
    "\"a\\nb\" = [\"x\\ny\"]\n",
    "key = '''\nmulti\nline\n'''\n",
    "= \n",
    "[\n",
    "]]\n",
    "\u{feff}",
    "\r\n",
    "\r",
    "\t",
    "# comment \u{202e} rtl\n",
];

/// Byte sequences that are not UTF-8: a lone continuation byte, a truncated sequence, an
/// overlong NUL, a UTF-16 byte order mark.
const BAD_UTF8: &[&[u8]] = &[&[0x80], &[0xe2, 0x82], &[0xc0, 0x80], &[0xff, 0xfe]];

/// The line around byte `at`: its start, its end (after the newline) and its bytes.
fn extend_line(text: &[u8], at: usize) -> (usize, usize, &[u8]) {
    let start = text[..at]
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    let end = text[at..]
        .iter()
        .position(|b| *b == b'\n')
        .map_or(text.len(), |i| at + i + 1);
    (start, end, &text[start..end])
}

/// Byte ranges of "tokens": runs of identifier characters, digits, or a quoted string.
fn tokens(text: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < text.len() {
        let b = text[i];
        if b == b'"' {
            let end = text[i + 1..]
                .iter()
                .position(|c| *c == b'"' || *c == b'\n')
                .map_or(text.len(), |j| i + 1 + j + 1)
                .min(text.len());
            out.push((i, end));
            i = end;
        } else if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.') {
            let end = text[i..]
                .iter()
                .position(|c| !(c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.')))
                .map_or(text.len(), |j| i + j);
            out.push((i, end));
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

/// Byte ranges of decimal numbers.
fn numbers(text: &[u8]) -> Vec<(usize, usize)> {
    tokens(text)
        .into_iter()
        .filter(|(s, e)| text[*s..*e].iter().all(u8::is_ascii_digit))
        .collect()
}

fn nested(r: &mut Rng) -> Vec<u8> {
    let depth = *r.pick(&[8usize, 64, 200, 1_000, 10_000, 100_000]);
    let (open, close) = *r.pick(&[("[", "]"), ("{a=", "}"), ("[{a=", "}]")]);
    let mut s = String::from("deep = ");
    s.push_str(&open.repeat(depth));
    s.push('1');
    s.push_str(&close.repeat(depth));
    s.push('\n');
    s.into_bytes()
}

fn huge_string(r: &mut Rng) -> Vec<u8> {
    let n = *r.pick(&[256usize, 4_096, 65_536, 300_000]);
    let ch = *r.pick(&["a", "é", "\\u0041", "\\\"", "%"]);
    format!("huge = \"{}\"\n", ch.repeat(n)).into_bytes()
}

/// One mutation of `text`; `other` is a second corpus file for splicing. Returns its name.
#[expect(
    clippy::too_many_lines,
    reason = "one arm per mutation: the whole list reads best in one place"
)]
fn mutate_once(r: &mut Rng, text: &mut Vec<u8>, other: &[u8]) -> &'static str {
    let len = text.len();
    match r.below(16) {
        0 if len > 0 => {
            let i = r.below(len);
            text[i] ^= 1 << r.below(8);
            "bit flip"
        }
        1 if len > 0 => {
            let i = r.below(len);
            text[i] = *r.pick(&[
                0x00, 0xff, 0xc3, 0x80, b'"', b'[', b'=', b'\n', b'\\', b'$', b'{',
            ]);
            "byte set"
        }
        2 => {
            let at = r.below(len + 1);
            let bytes: Vec<u8> = (0..=r.below(8)).map(|_| r.next() as u8).collect();
            text.splice(at..at, bytes);
            "random bytes"
        }
        3 if len > 0 => {
            let at = r.below(len);
            let n = 1 + r.below(64.min(len - at));
            text.drain(at..at + n);
            "delete bytes"
        }
        4 if len > 0 => {
            let (s, e, _) = extend_line(text, r.below(len));
            text.drain(s..e);
            "delete line"
        }
        5 if len > 0 => {
            let (s, e, line) = extend_line(text, r.below(len));
            let line = line.to_vec();
            let times = *r.pick(&[1usize, 2, 50]);
            for _ in 0..times {
                text.splice(s..s, line.iter().copied());
            }
            let _ = e;
            "duplicate line"
        }
        6 if len > 0 => {
            let (s1, e1, a) = extend_line(text, r.below(len));
            let a = a.to_vec();
            text.drain(s1..e1);
            let at = if text.is_empty() {
                0
            } else {
                extend_line(text, r.below(text.len())).0
            };
            text.splice(at..at, a);
            "move line"
        }
        7 => {
            let toks = tokens(text);
            if toks.len() < 2 {
                return "swap tokens (none)";
            }
            let (mut a, mut b) = (*r.pick(&toks), *r.pick(&toks));
            if a.0 > b.0 {
                std::mem::swap(&mut a, &mut b);
            }
            if a.1 > b.0 {
                return "swap tokens (overlap)";
            }
            let (ta, tb) = (text[a.0..a.1].to_vec(), text[b.0..b.1].to_vec());
            text.splice(b.0..b.1, ta);
            text.splice(a.0..a.1, tb);
            "swap tokens"
        }
        8 => {
            let nums = numbers(text);
            if nums.is_empty() {
                return "extreme number (none)";
            }
            let (s, e) = *r.pick(&nums);
            let with = r.pick(EXTREMES).as_bytes();
            text.splice(s..e, with.iter().copied());
            "extreme number"
        }
        9 => {
            let toks = tokens(text);
            if toks.is_empty() {
                return "replace token (none)";
            }
            let (s, e) = *r.pick(&toks);
            let with = r.pick(EXTREMES).as_bytes();
            text.splice(s..e, with.iter().copied());
            "replace token"
        }
        10 => {
            text.truncate(r.below(len + 1));
            "truncate"
        }
        11 => {
            let cut = r.below(len + 1);
            let from = r.below(other.len() + 1);
            text.truncate(cut);
            text.extend_from_slice(&other[from..]);
            "splice"
        }
        12 => {
            let at = line_start(r, text);
            let frag = r.pick(FRAGMENTS).as_bytes();
            text.splice(at..at, frag.iter().copied());
            "insert fragment"
        }
        13 => {
            let at = line_start(r, text);
            let deep = nested(r);
            text.splice(at..at, deep);
            "deep nesting"
        }
        14 => {
            let at = line_start(r, text);
            let huge = huge_string(r);
            text.splice(at..at, huge);
            "huge string"
        }
        _ => {
            // Invalid UTF-8 (a lone continuation byte, a truncated sequence, an overlong NUL).
            let at = r.below(len + 1);
            let bad = *r.pick(BAD_UTF8);
            text.splice(at..at, bad.iter().copied());
            "invalid utf-8"
        }
    }
}

fn line_start(r: &mut Rng, text: &[u8]) -> usize {
    if text.is_empty() {
        0
    } else {
        extend_line(text, r.below(text.len())).0
    }
}

pub(super) fn mutate(r: &mut Rng, text: &mut Vec<u8>, other: &[u8], log: &mut Vec<&'static str>) {
    for _ in 0..=r.below(4) {
        log.push(mutate_once(r, text, other));
    }
    text.truncate(MAX_FILE);
}
