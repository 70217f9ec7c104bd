//! A real host's whole policy: site-local rules with their provenance, drop-ins, rule ids that
//! clash, managed roles left unmapped, one error per syntax error, files others could write,
//! and every shipped example passing `check --strict`.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use super::common::{policies, toml_files};
use portguard::{
    compile::{self, flow::Flow},
    policy::{self, Diagnostics, Proto, Severity},
};
use portguard_common::classify::Outcome;

/// A scratch directory for one test, empty.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("site_rules")
        .join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn write(path: &Path, text: &str) {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).expect("dir");
    }
    fs::write(path, text).expect("write");
}

fn load(site: &Path) -> Result<policy::Policy, Diagnostics> {
    policy::load(site, &policies())
}

fn check(args: &[&str]) -> std::process::Output {
    crate::common::portguard()
        .arg("check")
        .args(args)
        .arg("--policies")
        .arg(policies())
        .env_remove("SSH_CONNECTION")
        .output()
        .expect("run portguard check")
}

/// The RHV lab example without its `rhv.manager` mapping: the Manager could not reach VDSM.
fn lab_without_manager(dir: &Path) -> PathBuf {
    let text = fs::read_to_string(policies().join("examples/lab.toml")).expect("lab.toml");
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("\"rhv.manager\""))
        .collect();
    let site = dir.join("site.toml");
    write(&site, &kept.join("\n"));
    site
}

const SITE: &str = r#"products = ["rhv"]
[roles]
"rhv.manager" = ["198.18.1.10/32"]
"rhv.host" = ["198.18.2.0/24"]
"site.prometheus" = ["198.18.7.5/32"]
[failsafe]
ssh_from = ["198.18.0.0/24"]

[[rules]]
id = "SITE-PROMETHEUS"
from = ["site.prometheus"]
proto = "tcp"
ports = "9742"
purpose = "Prometheus scrapes portguard"
"#;

#[test]
fn a_site_rule_is_compiled_and_explained_with_the_site_as_its_provenance() {
    let dir = scratch("site-rule");
    let site = dir.join("site.toml");
    write(&site, SITE);
    let p = load(&site).unwrap_or_else(|d| panic!("{d}"));
    let rule = p
        .rules
        .iter()
        .find(|r| r.id == "SITE-PROMETHEUS")
        .expect("site rule");
    assert_eq!(rule.product, "site");
    assert_eq!(rule.to, vec!["host"], "to defaults to this host");
    assert_eq!(
        (rule.origin.file.as_path(), rule.origin.line),
        (site.as_path(), 9)
    );
    assert!(rule.doc.contains("site.toml:9"), "{}", rule.doc);
    let host = compile::for_host(&p, &["rhv.host".to_owned()]).expect("compile");
    let slot = host
        .rules
        .iter()
        .find(|r| r.id == "SITE-PROMETHEUS")
        .expect("in force")
        .slot;
    let flow = |src: &str| Flow {
        src: src.parse().expect("addr"),
        dst: "198.18.2.1".parse().expect("addr"),
        proto: Proto::Tcp,
        sport: 40000,
        dport: 9742,
    };
    assert_eq!(
        compile::flow::decide(&host, &flow("198.18.7.5")),
        Outcome::Allow { slot }
    );
    assert!(matches!(
        compile::flow::decide(&host, &flow("198.18.7.6")),
        Outcome::Deny { .. }
    ));
}

#[test]
fn a_rule_id_that_clashes_with_a_product_rule_is_an_error_at_both_places() {
    let dir = scratch("clash");
    let site = dir.join("site.toml");
    write(&site, &SITE.replace("SITE-PROMETHEUS", "RHV-H10"));
    let d = load(&site).expect_err("clashing id");
    let at = |file: &str| {
        d.errors()
            .find(|e| e.message.contains("duplicate rule id `RHV-H10`") && e.file.ends_with(file))
            .unwrap_or_else(|| panic!("no clash error in {file}:\n{d}"))
    };
    let in_site = at("site.toml");
    assert_eq!(in_site.line, 10);
    assert!(in_site.message.contains("rhv.toml:"), "{in_site}");
    let in_product = at("rhv.toml");
    assert!(in_product.message.contains("site.toml:10"), "{in_product}");
}

#[test]
fn drop_ins_add_rules_and_role_ranges_in_name_order() {
    let dir = scratch("drop-ins");
    let site = dir.join("site.toml");
    write(&site, SITE);
    // 10-: another Prometheus server; 20-: an agent port for the monitoring hosts; the later
    // file sets the mode.
    write(
        &dir.join("site.d/10-prometheus.toml"),
        "[roles]\n\"site.prometheus\" = [\"198.18.7.6/32\"]\n",
    );
    write(
        &dir.join("site.d/20-agent.toml"),
        "mode = \"audit\"\n[[rules]]\nid = \"SITE-AGENT\"\nfrom = [\"site.prometheus\"]\nproto = \"tcp\"\nports = \"9100\"\npurpose = \"node exporter\"\n",
    );
    write(
        &dir.join("site.d/README"),
        "not a drop-in: only *.toml are read\n",
    );
    let p = load(&site).unwrap_or_else(|d| panic!("{d}"));
    let prom = &p.roles["site.prometheus"].sources;
    assert_eq!(
        prom.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["198.18.7.5/32", "198.18.7.6/32"]
    );
    assert_eq!(p.mode, policy::Mode::Audit);
    let agent = p
        .rules
        .iter()
        .find(|r| r.id == "SITE-AGENT")
        .expect("drop-in rule");
    assert!(agent.origin.file.ends_with("site.d/20-agent.toml"));
    assert_eq!(agent.origin.line, 2);
    assert_eq!(policy::drop_ins(&site).len(), 2);

    // A param may be set once; a second setting is an error at both places.
    write(
        &dir.join("site.d/30-param.toml"),
        "[params]\n\"rhv.ovn_sb_port\" = \"6642\"\n",
    );
    write(
        &dir.join("site.d/40-param.toml"),
        "[params]\n\"rhv.ovn_sb_port\" = \"6442\"\n",
    );
    let d = load(&site).expect_err("param set twice");
    let files: Vec<&str> = d
        .errors()
        .filter(|e| e.message.contains("set again"))
        .filter_map(|e| e.file.file_name()?.to_str())
        .collect();
    assert_eq!(files, ["30-param.toml", "40-param.toml"], "{d}");
}

#[test]
fn a_drop_in_error_points_into_the_drop_in() {
    let dir = scratch("drop-in-error");
    let site = dir.join("site.toml");
    write(&site, SITE);
    write(
        &dir.join("site.d/50-typo.toml"),
        "\n[roles]\n\"site.prometheus\" = [\"198.18.7.300\"]\n",
    );
    let d = load(&site).expect_err("bad address");
    let e = d.errors().next().expect("an error");
    assert!(e.file.ends_with("site.d/50-typo.toml"), "{d}");
    assert_eq!((e.line, e.col), (3, 22), "{d}");
}

#[test]
fn an_unmapped_managed_source_fails_check_naming_the_rules_and_the_role() {
    let dir = scratch("no-manager");
    let site = lab_without_manager(&dir);
    let out = check(&["--site", site.to_str().expect("utf-8")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let line = err
        .lines()
        .find(|l| l.contains("error: managed role `rhv.manager` has no addresses"))
        .unwrap_or_else(|| panic!("no unmapped-role error:\n{err}"));
    assert!(line.starts_with(&format!("{}:", site.display())), "{line}");
    for rule in ["RHV-H1 ", "RHV-H10 ", "RHV-H11 "] {
        assert!(line.contains(rule), "{rule} missing: {line}");
    }
}

#[test]
fn an_unmapped_client_role_is_a_warning_and_its_rules_stay_inactive() {
    let dir = scratch("no-client");
    let text = fs::read_to_string(policies().join("examples/lab.toml")).expect("lab.toml");
    let site = dir.join("site.toml");
    write(
        &site,
        &text
            .lines()
            .filter(|l| !l.starts_with("\"rhv.vm-portal-client\""))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    let p = load(&site).unwrap_or_else(|d| panic!("{d}"));
    assert!(
        p.warnings.iter().any(|w| w
            .message
            .contains("role `rhv.vm-portal-client` has no addresses")),
        "{:?}",
        p.warnings
    );
    let strict = check(&["--strict", "--site", site.to_str().expect("utf-8")]);
    assert_eq!(
        strict.status.code(),
        Some(1),
        "--strict refuses the warning"
    );
    let plain = check(&["--site", site.to_str().expect("utf-8")]);
    assert_eq!(plain.status.code(), Some(0));
}

#[test]
fn every_shipped_example_passes_check_strict() {
    for site in toml_files(&policies().join("examples")) {
        let out = check(&["--strict", "--site", site.to_str().expect("utf-8")]);
        assert!(
            out.status.success(),
            "{}:\n{}",
            site.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn a_syntax_error_is_one_located_error() {
    let dir = scratch("syntax");
    let text = fs::read_to_string(policies().join("examples/lab.toml")).expect("lab.toml");
    // A single missing `]`, as in the report that found ~100 cascaded errors.
    let broken = text.replacen(
        "\"rhv.host\" = [\"198.18.2.0/24\", \"2001:db8:2::/64\"]",
        "\"rhv.host\" = [\"198.18.2.0/24\", \"2001:db8:2::/64\"",
        1,
    );
    assert_ne!(
        broken, text,
        "the example changed: update the test's anchor"
    );
    let site = dir.join("site.toml");
    write(&site, &broken);
    let d = load(&site).expect_err("syntax error");
    assert_eq!(d.0.len(), 1, "one diagnostic, no echoes, no warnings:\n{d}");
    let e = &d.0[0];
    assert_eq!(e.severity, Severity::Error);
    let line = broken
        .lines()
        .position(|l| l.starts_with("\"rhv.host\""))
        .expect("line")
        + 1;
    // TOML arrays may span lines: the parser notices at the next entry, a few lines on.
    assert!(
        (line..line + 6).contains(&e.line),
        "error at {}:{}, the bracket is missing on line {line}: {e}",
        e.line,
        e.col
    );
}

#[test]
fn a_site_file_others_can_write_is_refused() {
    let dir = scratch("writable");
    let site = dir.join("site.toml");
    write(&site, SITE);
    fs::set_permissions(&site, fs::Permissions::from_mode(0o666)).expect("chmod");
    let d = load(&site).expect_err("world-writable site");
    assert!(
        d.errors()
            .any(|e| e.file == site && e.message.contains("writable by its group or by every user")),
        "{d}"
    );
    fs::set_permissions(&site, fs::Permissions::from_mode(0o644)).expect("chmod");
    load(&site).unwrap_or_else(|d| panic!("{d}"));
    // A drop-in directory others may write to lets them add rules.
    write(&dir.join("site.d/10-x.toml"), "features = []\n");
    fs::set_permissions(dir.join("site.d"), fs::Permissions::from_mode(0o777)).expect("chmod");
    let d = load(&site).expect_err("world-writable drop-in dir");
    assert!(
        d.errors()
            .any(|e| e.message.contains("is not root's alone")),
        "{d}"
    );
}
