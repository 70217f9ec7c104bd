//! Policy fuzzing: mutated site and product files through `policy::load` and
//! `compile::for_host`. Whatever the bytes, loading must not panic, must end, and must explain
//! every problem at a `FILE:LINE:COL` of a file it read; a policy that loads must compile for
//! its hosts without a panic.
//!
//! No cargo-fuzz (it needs a nightly with `rust-src`): a small mutation engine over a seed corpus
//! (the shipped products and example sites, and the hand-broken fixtures), deterministic per
//! `(seed, case)`. The short campaign runs with the tests; `cargo xtask fuzz` runs the ignored
//! `fuzz_campaign` for a time budget and keeps failing inputs under `fuzz/failures/`.
//!
//! Environment (all optional): `PORTGUARD_FUZZ_SEED` (else from the clock, printed),
//! `PORTGUARD_FUZZ_CASE` (replay that one case), `PORTGUARD_FUZZ_SECS` (budget of the ignored
//! campaign, default 120), `PORTGUARD_FUZZ_FAILURES` (where failing inputs go).

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    panic::{self, AssertUnwindSafe},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use portguard::{
    compile,
    policy::{self, Diagnostic, Diagnostics, Policy},
};

use crate::common::{broken_fixtures, repo, toml_files};

/// Cases of the campaign that runs with the tests.
const TEST_CASES: u64 = 2_000;
/// Largest file a mutation may produce: inputs stay bounded, so a case cannot take long for its
/// size alone.
const MAX_FILE: usize = 512 * 1024;
/// A case still running after this long is a hang: the watchdog saves it and aborts.
const HANG: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Randomness: splitmix64, so the test needs no dependency and a case replays from its numbers

struct Rng(u64);

impl Rng {
    fn for_case(seed: u64, case: u64) -> Self {
        let mut r = Rng(seed ^ case.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        r.next();
        r
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

// ---------------------------------------------------------------------------------------------
// Seed corpus

fn stem(path: &Path) -> String {
    path.file_stem()
        .expect("file stem")
        .to_string_lossy()
        .into_owned()
}

/// A site file and the product files it is loaded with (by stem; essentials included).
#[derive(Clone)]
struct Setting {
    name: String,
    site: Vec<u8>,
    products: BTreeMap<String, Vec<u8>>,
}

/// Every example site with the shipped products, and every broken fixture with its own.
fn settings() -> Vec<Setting> {
    let policies = repo().join("policies");
    let shipped: BTreeMap<String, Vec<u8>> = toml_files(&policies)
        .iter()
        .map(|p| (stem(p), fs::read(p).expect("read product")))
        .collect();
    let mut out: Vec<Setting> = toml_files(&policies.join("examples"))
        .iter()
        .map(|site| Setting {
            name: format!("examples/{}", stem(site)),
            site: fs::read(site).expect("read site"),
            products: shipped.clone(),
        })
        .collect();
    for case in broken_fixtures() {
        let site = fs::read(case.join("site.toml")).expect("fixture site");
        let real = String::from_utf8_lossy(&site).contains("# policies: real");
        let mut products = if real {
            shipped.clone()
        } else {
            BTreeMap::from([("essentials".to_owned(), shipped["essentials"].clone())])
        };
        for file in toml_files(&case) {
            if !file.ends_with("site.toml") {
                products.insert(stem(&file), fs::read(&file).expect("fixture product"));
            }
        }
        out.push(Setting {
            name: format!("broken/{}", stem(&case)),
            site,
            products,
        });
    }
    out
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

fn mutate(r: &mut Rng, text: &mut Vec<u8>, other: &[u8], log: &mut Vec<&'static str>) {
    for _ in 0..=r.below(4) {
        log.push(mutate_once(r, text, other));
    }
    text.truncate(MAX_FILE);
}

// ---------------------------------------------------------------------------------------------
// Cases

/// One generated input: a setting with some of its files mutated.
struct Case {
    seed: u64,
    index: u64,
    setting: String,
    site: Vec<u8>,
    products: BTreeMap<String, Vec<u8>>,
    /// What was done, for the failure report.
    log: Vec<String>,
}

fn generate(seed: u64, index: u64, settings: &[Setting], pool: &[Vec<u8>]) -> Case {
    let mut r = Rng::for_case(seed, index);
    // Half the cases start from a valid example: those are the ones that can still load and
    // reach the compiler after a mutation.
    let examples = settings
        .iter()
        .filter(|s| s.name.starts_with("examples/"))
        .count();
    let s = if r.below(2) == 0 {
        settings[r.below(examples)].clone()
    } else {
        r.pick(settings).clone()
    };
    let mut case = Case {
        seed,
        index,
        setting: s.name,
        site: s.site,
        products: s.products,
        log: Vec::new(),
    };
    let which = r.below(10);
    if which < 5 || which == 9 {
        let other = r.pick(pool).clone();
        let mut ops = Vec::new();
        mutate(&mut r, &mut case.site, &other, &mut ops);
        case.log.push(format!("site: {}", ops.join(", ")));
    }
    if which >= 5 {
        // Prefer the products the site lists: mutating one it does not load finds nothing.
        let names: Vec<String> = case.products.keys().cloned().collect();
        let site_text = String::from_utf8_lossy(&case.site).into_owned();
        let listed: Vec<&String> = names
            .iter()
            .filter(|n| *n == "essentials" || site_text.contains(&format!("\"{n}\"")))
            .collect();
        let name = if listed.is_empty() {
            r.pick(&names).clone()
        } else {
            (*r.pick(&listed)).clone()
        };
        let other = r.pick(pool).clone();
        let mut ops = Vec::new();
        let text = case.products.get_mut(&name).expect("product");
        mutate(&mut r, text, &other, &mut ops);
        case.log.push(format!("{name}.toml: {}", ops.join(", ")));
    }
    case
}

/// Where the loader reads a case: one directory per setting, whose files are rewritten only
/// where the case differs from what is already there (a case mutates one or two files).
struct Workdir {
    root: PathBuf,
    /// Per setting: the product files on disk.
    on_disk: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
}

/// The paths of one written case.
struct Written {
    site: PathBuf,
    policies: PathBuf,
}

impl Drop for Workdir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
        // The per-process parent, when it is now empty.
        if let Some(parent) = self.root.parent() {
            let _ = fs::remove_dir(parent);
        }
    }
}

impl Workdir {
    fn new(root: PathBuf) -> Self {
        let _ = fs::remove_dir_all(&root);
        Workdir {
            root,
            on_disk: BTreeMap::new(),
        }
    }

    fn write(&mut self, case: &Case) -> Written {
        let dir = self.root.join(case.setting.replace('/', "_"));
        let at = Written {
            site: dir.join("site.toml"),
            policies: dir.join("policies"),
        };
        let on_disk = self.on_disk.entry(case.setting.clone()).or_default();
        if on_disk.is_empty() {
            fs::create_dir_all(&at.policies).expect("work dir");
        }
        fs::write(&at.site, &case.site).expect("write site");
        for (name, text) in &case.products {
            if on_disk.get(name) != Some(text) {
                fs::write(at.policies.join(format!("{name}.toml")), text).expect("write");
                on_disk.insert(name.clone(), text.clone());
            }
        }
        at
    }
}

// ---------------------------------------------------------------------------------------------
// The oracle

/// What one case did, when it did nothing wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Rejected,
    Loaded,
}

/// Lines of each file the loader was given, by path: where a diagnostic may point.
fn line_counts(at: &Written, case: &Case) -> BTreeMap<PathBuf, usize> {
    let count = |t: &[u8]| t.split(|b| *b == b'\n').count();
    let mut out = BTreeMap::from([(at.site.clone(), count(&case.site))]);
    for (name, text) in &case.products {
        out.insert(at.policies.join(format!("{name}.toml")), count(text));
    }
    out
}

/// Every diagnostic names a file it was given, a line inside it and a column, and prints as
/// one `FILE:LINE:COL: severity: message` line.
fn check_located(diags: &[Diagnostic], files: &BTreeMap<PathBuf, usize>) -> Result<(), String> {
    for d in diags {
        let Some(lines) = files.get(&d.file) else {
            return Err(format!("diagnostic names a file it was not given: {d}"));
        };
        if d.line == 0 || d.col == 0 || d.line > *lines {
            return Err(format!("diagnostic outside its file ({lines} lines): {d}"));
        }
        let printed = d.to_string();
        let head = format!("{}:{}:{}: ", d.file.display(), d.line, d.col);
        if !printed.starts_with(&head) || printed.lines().count() != 1 {
            return Err(format!(
                "diagnostic does not print as one FILE:LINE:COL line: {printed:?}"
            ));
        }
    }
    Ok(())
}

/// The roles a loaded policy is compiled for: each managed role, the site's `[host] roles`,
/// and all managed roles together.
fn host_role_sets(p: &Policy) -> Vec<Vec<String>> {
    let managed: Vec<String> = p
        .roles
        .values()
        .filter(|r| r.managed)
        .map(|r| r.id.clone())
        .collect();
    let mut sets: Vec<Vec<String>> = managed.iter().take(3).map(|r| vec![r.clone()]).collect();
    if let Some(roles) = &p.host.roles {
        sets.push(roles.clone());
    }
    sets.push(managed);
    sets
}

/// Where a campaign's time goes: generating cases, writing files, loading, compiling.
#[derive(Default)]
struct Spent {
    generate: Duration,
    write: Duration,
    load: Duration,
    compile: Duration,
}

/// Runs one case; `Err` says what went wrong.
fn run_case(
    work: &mut Workdir,
    case: &Case,
    compile_all: bool,
    spent: &mut Spent,
) -> Result<Fate, String> {
    let t = Instant::now();
    let at = work.write(case);
    let files = line_counts(&at, case);
    let (site, dir) = (at.site, at.policies);
    spent.write += t.elapsed();
    let t = Instant::now();
    let loaded = panic::catch_unwind(|| policy::load(&site, &dir));
    spent.load += t.elapsed();
    let loaded = loaded.map_err(|_| format!("policy::load panicked: {}", last_panic()))?;
    match loaded {
        Err(Diagnostics(diags)) => {
            if !diags.iter().any(|d| d.severity == policy::Severity::Error) {
                return Err("load failed without an error".to_owned());
            }
            check_located(&diags, &files)?;
            Ok(Fate::Rejected)
        }
        Ok(p) => {
            check_located(&p.warnings, &files)?;
            let t = Instant::now();
            let mut sets = host_role_sets(&p);
            if !compile_all {
                // One role set per case (a different one each case): compiling costs more
                // than loading, and the short campaign has a few seconds.
                sets = vec![sets.swap_remove(case.index as usize % sets.len())];
            }
            for roles in sets {
                panic::catch_unwind(AssertUnwindSafe(|| {
                    let _ = compile::for_host(&p, &roles, None);
                }))
                .map_err(|_| format!("compile::for_host({roles:?}) panicked: {}", last_panic()))?;
            }
            spent.compile += t.elapsed();
            Ok(Fate::Loaded)
        }
    }
}

/// The message of the last panic, recorded by the hook [`quiet_panics`] installs.
static LAST_PANIC: Mutex<String> = Mutex::new(String::new());

fn last_panic() -> String {
    LAST_PANIC.lock().map(|s| s.clone()).unwrap_or_default()
}

/// Records panic messages (with their location) instead of printing each one; the previous
/// hook is back when the guard drops, so the test's own assertion failures print as usual.
struct QuietPanics;

fn quiet_panics() -> QuietPanics {
    panic::set_hook(Box::new(|info| {
        if let Ok(mut last) = LAST_PANIC.lock() {
            *last = info.to_string();
        }
    }));
    QuietPanics
}

impl Drop for QuietPanics {
    fn drop(&mut self) {
        let _ = panic::take_hook();
    }
}

/// Saves a failing case: its files as the loader saw them, and how to replay it.
fn save(dir: &Path, case: &Case, why: &str) -> PathBuf {
    let out = dir.join(format!("{}-{}", case.seed, case.index));
    let _ = fs::remove_dir_all(&out);
    fs::create_dir_all(out.join("policies")).expect("failure dir");
    fs::write(out.join("site.toml"), &case.site).expect("save site");
    for (name, text) in &case.products {
        fs::write(out.join("policies").join(format!("{name}.toml")), text).expect("save");
    }
    let mut info = String::new();
    let _ = writeln!(info, "why: {why}");
    let _ = writeln!(info, "setting: {}", case.setting);
    for l in &case.log {
        let _ = writeln!(info, "mutated {l}");
    }
    let _ = writeln!(
        info,
        "replay: PORTGUARD_FUZZ_SEED={} PORTGUARD_FUZZ_CASE={} cargo test -p portguard --test policy -- --ignored fuzz_campaign --nocapture",
        case.seed, case.index
    );
    let _ = writeln!(
        info,
        "or: portguard check --site {0}/site.toml --policies {0}/policies",
        out.display()
    );
    fs::write(out.join("README.txt"), info).expect("save info");
    out
}

// ---------------------------------------------------------------------------------------------
// Campaigns

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.trim().parse().ok())
}

fn seed() -> u64 {
    env_u64("PORTGUARD_FUZZ_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    })
}

enum Budget {
    Cases(u64),
    Time(Duration),
}

struct Summary {
    cases: u64,
    rejected: u64,
    loaded: u64,
    failures: Vec<String>,
    elapsed: Duration,
    spent: Spent,
}

/// Runs cases `0..` of `seed` until the budget is spent (or only `PORTGUARD_FUZZ_CASE`).
fn campaign(
    seed: u64,
    budget: &Budget,
    compile_all: bool,
    failures_dir: &Path,
    work: PathBuf,
) -> Summary {
    let settings = settings();
    let pool: Vec<Vec<u8>> = settings
        .iter()
        .flat_map(|s| std::iter::once(s.site.clone()).chain(s.products.values().cloned()))
        .collect();
    let mut work = Workdir::new(work);
    let only = env_u64("PORTGUARD_FUZZ_CASE");
    let start = Instant::now();
    let mut summary = Summary {
        cases: 0,
        rejected: 0,
        loaded: 0,
        failures: Vec::new(),
        elapsed: Duration::ZERO,
        spent: Spent::default(),
    };
    // The watchdog: a case that runs past HANG is saved and the process ends (a hang cannot
    // be interrupted from the inside).
    let current = Arc::new(AtomicU64::new(u64::MAX));
    let case_started = Arc::new(Mutex::new(Instant::now()));
    {
        let (current, case_started) = (Arc::clone(&current), Arc::clone(&case_started));
        let (settings, pool, failures_dir) =
            (settings.clone(), pool.clone(), failures_dir.to_owned());
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_secs(1));
                let index = current.load(Ordering::SeqCst);
                let since = case_started.lock().map(|t| t.elapsed()).unwrap_or_default();
                if index != u64::MAX && since > HANG {
                    let case = generate(seed, index, &settings, &pool);
                    let at = save(&failures_dir, &case, "hang: still loading after 60 s");
                    eprintln!(
                        "policy fuzz: seed {seed} case {index} hangs; input saved in {}",
                        at.display()
                    );
                    std::process::abort();
                }
            }
        });
    }
    let _quiet = quiet_panics();
    let mut index = only.unwrap_or(0);
    loop {
        let spent = match budget {
            Budget::Cases(n) => summary.cases >= *n,
            Budget::Time(t) => start.elapsed() >= *t,
        };
        if spent || (only.is_some() && summary.cases == 1) {
            break;
        }
        let t = Instant::now();
        let case = generate(seed, index, &settings, &pool);
        summary.spent.generate += t.elapsed();
        if let Ok(mut t) = case_started.lock() {
            *t = Instant::now();
        }
        current.store(index, Ordering::SeqCst);
        let result = run_case(&mut work, &case, compile_all, &mut summary.spent);
        current.store(u64::MAX, Ordering::SeqCst);
        match result {
            Ok(Fate::Rejected) => summary.rejected += 1,
            Ok(Fate::Loaded) => summary.loaded += 1,
            Err(why) => {
                let at = save(failures_dir, &case, &why);
                summary
                    .failures
                    .push(format!("case {index}: {why}\n  input: {}", at.display()));
            }
        }
        summary.cases += 1;
        index += 1;
    }
    summary.elapsed = start.elapsed();
    summary
}

fn report(seed: u64, s: &Summary) {
    println!(
        "policy fuzz: seed {seed}: {} cases in {:.1} s ({} rejected with located errors, {} loaded and compiled), {} failures",
        s.cases,
        s.elapsed.as_secs_f64(),
        s.rejected,
        s.loaded,
        s.failures.len()
    );
    println!(
        "policy fuzz: {:.1} s generating cases, {:.1} s writing files, {:.1} s loading, {:.1} s compiling",
        s.spent.generate.as_secs_f64(),
        s.spent.write.as_secs_f64(),
        s.spent.load.as_secs_f64(),
        s.spent.compile.as_secs_f64()
    );
    assert!(
        s.failures.is_empty(),
        "seed {seed} (replay with PORTGUARD_FUZZ_SEED={seed}):\n{}",
        s.failures.join("\n")
    );
}

/// Where cases are written for the loader: tmpfs when there is one (every case writes a file or
/// two, and a busy disk should not decide how many cases fit in the time), else the target dir.
fn work_root(name: &str) -> PathBuf {
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.join(format!("portguard-fuzz-{}", std::process::id()))
    } else {
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz_policy")
    };
    base.join(name)
}

#[test]
fn mutated_policies_never_panic_and_always_say_where() {
    let seed = seed();
    println!("policy fuzz seed: {seed} (replay with PORTGUARD_FUZZ_SEED={seed})");
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz_policy");
    let summary = campaign(
        seed,
        &Budget::Cases(TEST_CASES),
        false,
        &tmp.join("failures"),
        work_root("test"),
    );
    report(seed, &summary);
}

/// The bounded campaign `cargo xtask fuzz` runs.
#[test]
#[ignore = "long: run by `cargo xtask fuzz`"]
fn fuzz_campaign() {
    let seed = seed();
    let secs = env_u64("PORTGUARD_FUZZ_SECS").unwrap_or(120);
    let failures = std::env::var_os("PORTGUARD_FUZZ_FAILURES")
        .map_or_else(|| repo().join("fuzz/failures"), PathBuf::from);
    println!("policy fuzz seed: {seed}, {secs} s (replay with PORTGUARD_FUZZ_SEED={seed})");
    let summary = campaign(
        seed,
        &Budget::Time(Duration::from_secs(secs)),
        true,
        &failures,
        work_root("campaign"),
    );
    report(seed, &summary);
}
