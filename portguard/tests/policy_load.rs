//! The policy loader through its public API: the shipped example sites must load, every broken
//! fixture must fail at the line it names, and a few semantics (aliases, warnings, defaults) are
//! pinned on small scratch policies.

use std::{
    fs,
    path::{Path, PathBuf},
};

use portguard::policy::{self, Diagnostic, Diagnostics, Match, Mode, Policy, Proto, Severity};

use crate::common::{broken_fixtures, policies, toml_files};

fn load_example(name: &str) -> Policy {
    let site = policies().join("examples").join(name);
    policy::load(&site, &policies())
        .unwrap_or_else(|d| panic!("{} fails to load:\n{d}", site.display()))
}

// ---------------------------------------------------------------------------------------------
// Shipped files

#[test]
fn every_example_site_loads() {
    let sites = toml_files(&policies().join("examples"));
    assert!(!sites.is_empty(), "no example sites");
    let mut failures = Vec::new();
    for site in &sites {
        match policy::load(site, &policies()) {
            Ok(p) => {
                assert!(p.warnings.iter().all(|w| w.severity == Severity::Warning));
                for w in &p.warnings {
                    eprintln!("{w}");
                }
            }
            Err(d) => failures.push(format!("{}:\n{d}", site.display())),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn rhv_example_resolves_rules_and_aliases() {
    let p = load_example("rhv.toml");
    let h10 = p.rules.iter().find(|r| r.id == "RHV-H10").expect("RHV-H10");
    assert_eq!(h10.matches, Match::Ports(vec![54321..=54321]));
    assert_eq!(h10.protos, vec![Proto::Tcp]);
    assert_eq!(h10.from, vec!["rhv.manager", "rhv.host"]);
    assert_eq!(h10.to, vec!["rhv.host"]);
    assert!(h10.enabled);
    assert_eq!(h10.product, "rhv");
    assert!(h10.origin.file.ends_with("rhv.toml"));

    assert_eq!(
        p.aliases.get("ovirt.manager").map(String::as_str),
        Some("rhv.manager")
    );
    assert_eq!(
        p.aliases.get("ovirt.host").map(String::as_str),
        Some("rhv.host")
    );
    assert_eq!(
        p.aliases.get("rhv.imageio-proxy").map(String::as_str),
        Some("rhv.manager")
    );
    assert!(
        !p.roles.contains_key("ovirt.manager"),
        "aliases are not roles of their own"
    );
    assert!(p.roles["rhv.manager"].managed);
    assert!(!p.roles["rhv.manager"].sources.is_empty());
    // H11 is written with the alias rhv.imageio-proxy.
    let h11 = p.rules.iter().find(|r| r.id == "RHV-H11").expect("RHV-H11");
    assert_eq!(h11.from, vec!["rhv.manager"]);

    assert_eq!(p.products.first().map(String::as_str), Some("essentials"));
    assert_eq!(
        p.rules.first().map(|r| r.product.as_str()),
        Some("essentials")
    );
    assert!(p.features.contains("ovn"));
    assert!(
        p.features.contains("dhcpv4-client"),
        "default-on features are in force"
    );
}

#[test]
fn veeam_ovirt_aliases_resolve_in_rules() {
    let p = load_example("rhv-veeam-ovirt.toml");
    assert!(p.products.iter().any(|id| id == "veeam-ovirt"));
    for rule in &p.rules {
        for role in rule.from.iter().chain(&rule.to) {
            assert!(
                !p.aliases.contains_key(role),
                "{} keeps alias {role}",
                rule.id
            );
            assert!(
                p.roles.contains_key(role) || role == "any",
                "{}: {role} is not a role",
                rule.id
            );
        }
    }
    let to_manager = p
        .rules
        .iter()
        .filter(|r| r.product == "veeam-ovirt" && r.to.iter().any(|t| t == "rhv.manager"));
    assert!(
        to_manager.count() > 0,
        "veeam-ovirt rules to ovirt.manager resolve to rhv.manager"
    );
}

/// Product ids of the shipped product files (essentials aside).
fn product_ids() -> Vec<String> {
    toml_files(&policies())
        .iter()
        .filter_map(|f| f.file_stem()?.to_str().map(str::to_owned))
        .filter(|id| id != "essentials")
        .collect()
}

/// A site listing `products` and nothing else, in a scratch dir.
fn bare_site(name: &str, products: &[String]) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("policy_load/bare");
    fs::create_dir_all(&dir).expect("scratch dir");
    let list = products
        .iter()
        .map(|p| format!("{p:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let site = dir.join(format!("{name}.toml"));
    fs::write(&site, format!("products = [{list}]\n")).expect("write site");
    site
}

#[test]
fn every_product_loads_on_its_own() {
    let ids = product_ids();
    assert!(!ids.is_empty());
    for id in &ids {
        let site = bare_site(id, std::slice::from_ref(id));
        if let Err(d) = policy::load(&site, &policies()) {
            panic!("{id} alone:\n{d}");
        }
    }
}

#[test]
fn all_products_load_together() {
    // Shared roles, features and params must agree across files, and rule ids must be unique.
    let site = bare_site("all", &product_ids());
    let p = policy::load(&site, &policies()).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(p.products.len(), product_ids().len() + 1);
    for w in &p.warnings {
        eprintln!("{w}");
    }
}

// ---------------------------------------------------------------------------------------------
// Broken fixtures

/// `# expect: [FILE:]LINE:substring` and `# policies: real` from a fixture's site.toml.
struct Expect {
    file: String,
    line: usize,
    substring: String,
    real_policies: bool,
}

fn parse_expect(text: &str) -> Expect {
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default();
    let spec = first
        .strip_prefix("# expect:")
        .unwrap_or_else(|| panic!("first line is not `# expect:`: {first}"))
        .trim();
    let (head, rest) = spec.split_once(':').expect("LINE:substring");
    let (file, line, substring) = if let Ok(line) = head.parse::<usize>() {
        ("site.toml".to_owned(), line, rest)
    } else {
        let (line, substring) = rest.split_once(':').expect("FILE:LINE:substring");
        (
            head.to_owned(),
            line.parse().expect("line number"),
            substring,
        )
    };
    let real_policies = lines.next().is_some_and(|l| l.trim() == "# policies: real");
    Expect {
        file,
        line,
        substring: substring.to_owned(),
        real_policies,
    }
}

fn matches_expect(d: &Diagnostic, e: &Expect) -> bool {
    d.severity == Severity::Error
        && d.file.file_name().is_some_and(|f| f == e.file.as_str())
        && d.line == e.line
        && d.message
            .to_lowercase()
            .contains(&e.substring.to_lowercase())
}

/// A fixture's own product files, plus the real essentials.toml when the fixture has none:
/// essentials always applies, and without it every case would also fail for that reason.
fn fixture_policies(case: &Path) -> PathBuf {
    let name = case.file_name().expect("case name");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("policy_load/fixtures")
        .join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("scratch dir");
    for file in toml_files(case)
        .iter()
        .filter(|f| !f.ends_with("site.toml"))
    {
        fs::copy(file, dir.join(file.file_name().expect("file name"))).expect("copy fixture");
    }
    if !dir.join("essentials.toml").exists() {
        fs::copy(
            policies().join("essentials.toml"),
            dir.join("essentials.toml"),
        )
        .expect("copy essentials");
    }
    dir
}

#[test]
fn every_broken_fixture_fails_where_it_says() {
    let cases = broken_fixtures();
    assert!(!cases.is_empty(), "no broken fixtures");
    let mut failures = Vec::new();
    for case in &cases {
        let site = case.join("site.toml");
        let expect = parse_expect(&fs::read_to_string(&site).expect("site.toml"));
        let dir = if expect.real_policies {
            policies()
        } else {
            fixture_policies(case)
        };
        match policy::load(&site, &dir) {
            Ok(_) => failures.push(format!("{}: loaded without errors", case.display())),
            Err(d) if d.0.iter().any(|x| matches_expect(x, &expect)) => {}
            Err(d) => failures.push(format!(
                "{}: no error at {}:{} containing {:?}; got:\n{d}",
                case.display(),
                expect.file,
                expect.line,
                expect.substring
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

// ---------------------------------------------------------------------------------------------
// Scratch policies

const ESSENTIALS: &str = r#"
[product]
id = "essentials"
name = "e"
document = "d"

[roles.host]
description = "this host"
managed = true

[features.dhcp]
default = true

[[rules]]
id = "ESS-DHCP"
from = ["any"]
to = ["host"]
proto = "udp"
ports = "68"
purpose = "p"
doc = "d"
when = ["dhcp"]
"#;

const PRODUCT: &str = r#"
[product]
id = "prod"
name = "n"
document = "d"

[roles."p.server"]
managed = true

[roles."p.client"]

[roles."p.old-server"]
alias_of = "p.server"

[features.extra]
default = false

[features.legacy-compat]
default = false

[params."p.port"]
default = "900-902"

[[rules]]
id = "P-1"
from = ["p.client"]
to = ["p.old-server"]
proto = "tcp+udp"
ports = "80,${p.port},443"
purpose = "p"
doc = "d"

[[rules]]
id = "P-2"
from = ["p.client"]
to = ["p.server"]
proto = "tcp"
ports = "443"
purpose = "p"
doc = "d"

[[rules]]
id = "P-3"
from = ["any"]
to = ["p.server"]
proto = "icmp"
icmp_type = "3"
icmp_code = 4
purpose = "p"
doc = "d"
when = ["extra", "!legacy-compat"]
"#;

/// A policies dir with essentials and `prod`, and a site file; returns (site, dir).
fn scratch(name: &str, site: &str, product: &str) -> (PathBuf, PathBuf) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("policy_load")
        .join(name);
    fs::create_dir_all(&dir).expect("scratch dir");
    fs::write(dir.join("essentials.toml"), ESSENTIALS).expect("write");
    fs::write(dir.join("prod.toml"), product).expect("write");
    fs::write(dir.join("site.toml"), site).expect("write");
    (dir.join("site.toml"), dir)
}

fn load_scratch(name: &str, site: &str, product: &str) -> Result<Policy, Diagnostics> {
    let (site, dir) = scratch(name, site, product);
    policy::load(&site, &dir)
}

fn has(d: &Diagnostics, severity: Severity, line: usize, text: &str) -> bool {
    d.0.iter()
        .any(|x| x.severity == severity && x.line == line && x.message.contains(text))
}

const GOOD_SITE: &str = r#"products = ["prod"]
[roles]
"p.old-server" = ["198.18.1.10", "2001:db8::10"]
"p.client" = ["198.18.2.0/24"]
[failsafe]
ssh_from = ["198.18.0.0/24"]
"#;

#[test]
fn scratch_policy_resolves_and_defaults() {
    let p = load_scratch("good", GOOD_SITE, PRODUCT).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(p.mode, Mode::Enforce);
    assert_eq!(p.products, vec!["essentials", "prod"]);
    assert_eq!(
        p.rules.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        vec!["ESS-DHCP", "P-1", "P-2", "P-3"]
    );
    let p1 = &p.rules[1];
    assert_eq!(p1.to, vec!["p.server"]);
    assert_eq!(p1.protos, vec![Proto::Tcp, Proto::Udp]);
    assert_eq!(
        p1.matches,
        Match::Ports(vec![80..=80, 443..=443, 900..=902])
    );
    assert_eq!(
        p.rules[3].matches,
        Match::Icmp {
            types: vec![3..=3],
            code: Some(4)
        }
    );
    assert!(!p.rules[3].enabled, "`extra` is off");
    let server = &p.roles["p.server"];
    assert_eq!(
        server
            .sources
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        vec!["198.18.1.10/32", "2001:db8::10/128"]
    );
    assert_eq!(p.audit.path, Path::new("/var/log/portguard/audit.jsonl"));
    assert_eq!(p.audit.sink, policy::AuditSink::File);
    assert_eq!(
        (p.audit.rate, p.audit.burst, p.audit.max_bytes, p.audit.keep),
        (100, 200, 10 * 1024 * 1024, 5)
    );
    // Broadcast and multicast are judged unless the site says otherwise: a wildcard socket
    // takes them like unicast (issue #17).
    assert!(p.datapath.judge_broadcast && !p.datapath.drop_non_ip && !p.datapath.drop_not_for_host);
    // P-2 (tcp/443 client -> server) is covered by P-1.
    let shadow = p
        .warnings
        .iter()
        .find(|w| w.message.contains("`P-2` is shadowed by `P-1`"))
        .expect("shadow warning");
    assert!(shadow.file.ends_with("prod.toml"));
}

#[test]
fn site_params_features_and_any() {
    let site = r#"products = ["prod"]
features = ["extra", "legacy-compat"]
disabled_features = ["dhcp"]
mode = "audit"
[roles]
"p.server" = ["198.18.1.10/32"]
"p.client" = ["any"]
[params]
"p.port" = "1000"
[failsafe]
ssh_from = ["198.18.0.0/24"]
"#;
    let p = load_scratch("choices", site, PRODUCT).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(p.mode, Mode::Audit);
    assert!(!p.rules[0].enabled, "dhcp disabled");
    assert!(!p.rules[3].enabled, "!legacy-compat");
    assert_eq!(
        p.rules[1].matches,
        Match::Ports(vec![80..=80, 443..=443, 1000..=1000])
    );
    let client = &p.roles["p.client"];
    assert!(client.any);
    assert_eq!(
        client
            .sources
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        vec!["0.0.0.0/0", "::/0"]
    );
    let warned = |line: usize, text: &str| {
        p.warnings
            .iter()
            .any(|w| w.line == line && w.message.contains(text))
    };
    assert!(warned(7, "mapped to any"), "{:?}", p.warnings);
    assert!(warned(2, "legacy-compat"), "{:?}", p.warnings);
}

#[test]
fn documented_contradictions_switched_on_are_warned() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("policy_load/contradictions");
    fs::create_dir_all(&dir).expect("scratch dir");
    let site = dir.join("site.toml");
    let text =
        "products = [\"rhv\"]\nfeatures = [\"ovn\", \"ovn-sb-6442-compat\", \"snmp\", \"nfs\"]\n";
    fs::write(&site, text).expect("write site");
    let p = policy::load(&site, &policies()).unwrap_or_else(|d| panic!("{d}"));
    let warned = |text: &str| p.warnings.iter().find(|w| w.message.contains(text));
    let compat = warned("`ovn-sb-6442-compat` is on").expect("compat feature warning");
    assert_eq!((compat.file.as_path(), compat.line), (site.as_path(), 2));
    for id in ["`RHV-H3`", "`RHV-H4`"] {
        let w = warned(id).expect("doubtful rule warning");
        assert!(
            w.file.ends_with("rhv.toml") && w.message.contains("doubtful"),
            "{w}"
        );
    }
}

#[test]
fn every_error_is_collected_with_its_line() {
    let site = r#"products = ["prod", "prod"]
features = ["nope"]
[roles]
"p.server" = ["198.18.1.1/24"]
"p.old-server" = ["198.18.1.10"]
"p.client" = []
"p.ghost" = ["198.18.3.0/24"]
[params]
"p.port" = "0"
"p.nope" = "1"
[host]
roles = ["p.servre"]
interfaces = ["a/b"]
[audit]
path = "relative.jsonl"
"#;
    let d = load_scratch("many", site, PRODUCT).expect_err("broken site");
    let e = Severity::Error;
    assert!(has(&d, e, 1, "listed twice"), "{d}");
    assert!(has(&d, e, 2, "unknown feature `nope`"), "{d}");
    assert!(
        has(&d, e, 4, "did you mean the network 198.18.1.0/24"),
        "{d}"
    );
    assert!(has(&d, e, 5, "mapped twice"), "{d}");
    assert!(has(&d, e, 6, "empty list"), "{d}");
    assert!(has(&d, e, 7, "unknown role `p.ghost`"), "{d}");
    assert!(has(&d, e, 9, "out of range"), "{d}");
    assert!(has(&d, e, 10, "unknown param `p.nope`"), "{d}");
    assert!(has(&d, e, 12, "did you mean `p.server`"), "{d}");
    assert!(has(&d, e, 13, "interface"), "{d}");
    assert!(has(&d, e, 15, "absolute"), "{d}");
    let text = d.to_string();
    assert!(
        text.lines()
            .all(|l| l.contains(": error: ") || l.contains(": warning: ")),
        "{text}"
    );
    assert!(
        text.lines()
            .next()
            .is_some_and(|l| l.contains("site.toml:1:")),
        "sorted by file and line: {text}"
    );
}

#[test]
fn product_errors_are_collected_per_rule() {
    let product = PRODUCT
        .replace("id = \"prod\"", "id = \"other\"")
        .replace("ports = \"443\"", "ports = \"443\"\nicmp_code = 1")
        + r#"
[[rules]]
id = "P-1"
from = ["host"]
to = ["any"]
proto = "icmp"
ports = "1"
icmp_type = "3,4"
icmp_code = 1
purpose = "p"
doc = "d"

[[rules]]
id = "P-5"
from = ["p.client"]
to = ["p.server"]
proto = "sctp"
purpose = "p"
doc = "d"
when = ["nosuch"]
colour = "red"
"#;
    let d = load_scratch("product", GOOD_SITE, &product).expect_err("broken product");
    let msgs: Vec<String> = d
        .errors()
        .map(|x| format!("{}:{}", x.line, x.message))
        .collect();
    let want = [
        "differs from the file name",
        "icmp_code",
        "duplicate rule id `P-1`",
        "`host` cannot be a source",
        "`any` cannot be a destination",
        "`ports` on a icmp rule",
        "needs exactly one",
        "unknown field `colour`",
    ];
    for w in want {
        assert!(msgs.iter().any(|m| m.contains(w)), "missing {w:?} in\n{d}");
    }
}

#[test]
fn product_declarations_must_agree() {
    let (site, dir) = scratch(
        "agree",
        &GOOD_SITE.replace("[\"prod\"]", "[\"prod\", \"second\"]"),
        PRODUCT,
    );
    let second = r#"
[product]
id = "second"
name = "n"
document = "d"

[roles."p.server"]
managed = false

[roles."p.old-server"]
alias_of = "p.client"

[roles."p.mirror"]
alias_of = "p.old-server"

[features.extra]
default = true

[params."p.port"]
default = "901"
"#;
    fs::write(dir.join("second.toml"), second).expect("write");
    let d = policy::load(&site, &dir).expect_err("conflicts");
    let e = Severity::Error;
    assert!(has(&d, e, 7, "managed"), "{d}");
    assert!(has(&d, e, 11, "alias_of"), "{d}");
    assert!(has(&d, e, 14, "itself an alias"), "{d}");
    assert!(has(&d, e, 16, "default = true"), "{d}");
    assert!(has(&d, e, 19, "declared again"), "{d}");
}
