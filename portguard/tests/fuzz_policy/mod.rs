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

mod mutate;

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

use self::mutate::{Rng, mutate};
use crate::common::{broken_fixtures, repo, toml_files};

/// Cases of the campaign that runs with the tests.
const TEST_CASES: u64 = 2_000;
/// A case still running after this long is a hang: the watchdog saves it and aborts.
const HANG: Duration = Duration::from_secs(60);

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
                    let _ = compile::for_host(&p, &roles);
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
