//! End to end: `portguard lab` for every example site. Each run builds the site in namespaces,
//! runs the real daemon, and sends a flow for every rule in force plus flows the matrix does not
//! allow and what the host needs to keep working; the lab itself compares each flow with
//! `explain` and exits non-zero on any difference. These tests check that it passes, that every
//! rule in force shows up as exercised (or says why it cannot be), and that nothing is left
//! behind: no namespace, no pin, no daemon, no run directory.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use integration_tests::{
    Scratch,
    daemon::{binary, policies_dir},
    unique,
};
use portguard::{
    compile,
    lab::{plan::host_roles, service, topology},
    policy,
};
use serde_json::Value;

/// A lab name of this test: `pgl<pid><n>`, at most 12 characters as the lab requires.
fn prefix() -> String {
    let p = unique("pgl");
    assert!(p.len() <= 12, "prefix {p} too long");
    p
}

/// Takes the lab down if a test ends (or panics) with it still up, so a failing test leaves
/// nothing behind either; the tests assert separately that the lab removed itself.
struct Down(String);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = Command::new(binary())
            .args(["lab", "down", "--prefix", &self.0])
            .output();
    }
}

fn example(name: &str) -> PathBuf {
    policies_dir().join("examples").join(format!("{name}.toml"))
}

fn text(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// What of the lab `prefix` still exists.
fn leftovers(prefix: &str) -> Vec<String> {
    let paths = service::LabPaths::new(prefix);
    let mut found = topology::lab_namespaces(prefix).expect("ip netns list");
    if paths.pin_dir.exists() {
        found.push(paths.pin_dir.display().to_string());
    }
    if paths.run_dir.exists() {
        found.push(paths.run_dir.display().to_string());
    }
    found.extend(
        service::daemons_of(&paths.pin_dir)
            .iter()
            .map(|p| format!("daemon pid {p}")),
    );
    found
}

/// Run `portguard lab --prefix <prefix> --json <file> <args>`; its output and rows.
fn lab(prefix: &str, args: &[&str]) -> (Output, Vec<Value>) {
    let json = std::env::temp_dir().join(format!("{}.json", unique("pg-lab-rows-")));
    let started = Instant::now();
    let out = Command::new(binary())
        .arg("lab")
        .args(["--prefix", prefix, "--json"])
        .arg(&json)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run portguard lab");
    eprintln!("lab {args:?} took {:.1} s", started.elapsed().as_secs_f64());
    let rows = std::fs::read(&json)
        .ok()
        .and_then(|b| serde_json::from_slice::<Vec<Value>>(&b).ok())
        .unwrap_or_default();
    let _ = std::fs::remove_file(&json);
    (out, rows)
}

/// The rules in force on the lab's host for `site`, as the lab compiles them.
fn rules_in_force(site: &Path) -> Vec<String> {
    let policy = policy::load(site, &policies_dir()).expect("example site loads");
    let (roles, _) = host_roles(&policy);
    compile::for_host(&policy, &roles)
        .expect("example site compiles")
        .rules
        .into_iter()
        .map(|r| r.id)
        .collect()
}

/// Every rule in force has a row, and every row of it is either observed as expected or not
/// sent because its only sources are the host's own addresses (traffic that never crosses the
/// NIC); at least one rule per site is really exercised, and the negative and host-safety flows
/// are there and as expected.
fn check_rows(name: &str, site: &Path, rows: &[Value], out: &Output) {
    assert!(!rows.is_empty(), "{name}: no rows written\n{}", text(out));
    let mut exercised = 0;
    for id in rules_in_force(site) {
        let mine: Vec<&Value> = rows.iter().filter(|r| r["rule"] == id.as_str()).collect();
        assert!(
            !mine.is_empty(),
            "{name}: rule {id} has no row\n{}",
            text(out)
        );
        for r in &mine {
            let fine = r["result"] == "ok"
                || (r["result"] == "not-exercised" && r["skip"] == "own-address");
            assert!(fine, "{name}: rule {id}: {r}\n{}", text(out));
        }
        if mine.iter().any(|r| r["result"] == "ok") {
            exercised += 1;
        }
    }
    assert!(exercised > 0, "{name}: no rule exercised\n{}", text(out));
    for group in ["negative", "host-safety"] {
        let of: Vec<&Value> = rows.iter().filter(|r| r["group"] == group).collect();
        assert!(!of.is_empty(), "{name}: no {group} flows\n{}", text(out));
        for r in of {
            assert_eq!(r["result"], "ok", "{name}: {r}\n{}", text(out));
        }
    }
}

/// The lab for one example site passes, covers every rule, and removes itself.
fn site_passes(name: &str) {
    let prefix = prefix();
    let _down = Down(prefix.clone());
    let site = example(name);
    let policies = policies_dir();
    let (out, rows) = lab(
        &prefix,
        &[
            "--site",
            site.to_str().expect("path"),
            "--policies",
            policies.to_str().expect("path"),
        ],
    );
    assert!(out.status.success(), "{name}: lab failed\n{}", text(&out));
    check_rows(name, &site, &rows, &out);
    let left = leftovers(&prefix);
    assert!(left.is_empty(), "{name}: left behind {left:?}");
}

#[test]
fn lab_rhv() {
    site_passes("rhv");
}

#[test]
fn lab_veeam_ovirt() {
    site_passes("veeam-ovirt");
}

#[test]
fn lab_veeam_proxmox() {
    site_passes("veeam-proxmox");
}

/// A Proxmox VE node of a Ceph cluster backed up by Veeam: the node's own cluster traffic
/// (corosync between nodes, the web UI from the admin network, live migration, Ceph), and the
/// site's own rule for Prometheus, each delivered and counted on its rule.
#[test]
fn lab_proxmox_veeam_with_cluster_ceph_and_a_site_rule() {
    let prefix = prefix();
    let _down = Down(prefix.clone());
    let site = example("proxmox-veeam");
    let policies = policies_dir();
    let (out, rows) = lab(
        &prefix,
        &[
            "--site",
            site.to_str().expect("path"),
            "--policies",
            policies.to_str().expect("path"),
        ],
    );
    assert!(out.status.success(), "lab failed\n{}", text(&out));
    check_rows("proxmox-veeam", &site, &rows, &out);
    for rule in [
        "PVE-COROSYNC",
        "PVE-WEB",
        "PVE-MIGRATION",
        "PVE-CEPH-MON",
        "PVE-CEPH-DAEMONS",
        "SITE-PROMETHEUS",
    ] {
        assert!(
            rows.iter()
                .any(|r| r["rule"] == rule && r["result"] == "ok" && r["delivered"] == true),
            "{rule}: no flow delivered and counted\n{}",
            text(&out)
        );
    }
    let left = leftovers(&prefix);
    assert!(left.is_empty(), "left behind {left:?}");
}

#[test]
fn lab_avi() {
    site_passes("avi");
}

#[test]
fn lab_kvmnet2_protects_a_host_with_essentials_and_failsafe_only() {
    // The site has no [host] roles (its products run on appliances): the lab says so and
    // rehearses a plain host of that site.
    site_passes("kvmnet2");
}

#[test]
fn lab_rhv_veeam_ovirt_manager() {
    site_passes("rhv-veeam-ovirt");
}

/// The README's first command: no --site, no --policies, run from a directory without a
/// `policies/` (the test's working directory is `tests/`), so the built-in lab site and the
/// product files built into the binary are used. The picture is drawn too.
#[test]
fn lab_default_site_with_built_in_files_and_picture() {
    let prefix = prefix();
    let _down = Down(prefix.clone());
    let svg = std::env::temp_dir().join(format!("{}.svg", unique("pg-lab-svg-")));
    let (out, rows) = lab(&prefix, &["--svg", svg.to_str().expect("path")]);
    assert!(out.status.success(), "lab failed\n{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("policies/examples/lab.toml (built in)"),
        "{stdout}"
    );
    assert!(stdout.contains("$ portguard status"), "{stdout}");
    check_rows("lab", &example("lab"), &rows, &out);
    let picture = std::fs::read_to_string(&svg).expect("svg written");
    let _ = std::fs::remove_file(&svg);
    assert!(picture.starts_with("<svg") && picture.trim_end().ends_with("</svg>"));
    assert!(picture.contains(">host</text>") && picture.contains("tcp/54321"));
    let left = leftovers(&prefix);
    assert!(left.is_empty(), "left behind {left:?}");
}

/// `--keep` leaves the lab up and working (the daemon runs, the pins exist), and
/// `lab down` finds everything by its prefix and removes it.
#[test]
fn lab_keep_then_down() {
    let prefix = prefix();
    let _down = Down(prefix.clone());
    let site = example("rhv");
    let (out, _) = lab(&prefix, &["--site", site.to_str().expect("path"), "--keep"]);
    assert!(out.status.success(), "lab --keep failed\n{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("ip netns exec {prefix}-host bash"))
            && stdout.contains(&format!("lab down --prefix {prefix}")),
        "{stdout}"
    );
    let paths = service::LabPaths::new(&prefix);
    assert!(
        paths.pin_dir.join("links/eth1").exists(),
        "link pin missing"
    );
    assert_eq!(
        service::daemons_of(&paths.pin_dir).len(),
        1,
        "daemon not running"
    );
    assert!(
        topology::lab_namespaces(&prefix)
            .unwrap()
            .contains(&format!("{prefix}-host"))
    );
    let down = Command::new(binary())
        .args(["lab", "down", "--prefix", &prefix])
        .output()
        .expect("lab down");
    assert!(down.status.success(), "lab down failed\n{}", text(&down));
    let left = leftovers(&prefix);
    assert!(left.is_empty(), "lab down left {left:?}\n{}", text(&down));
}

/// Ctrl-C while flows run: the lab stops, removes everything and exits with 130.
#[test]
fn lab_interrupted_removes_everything() {
    let prefix = prefix();
    let _down = Down(prefix.clone());
    let child = Command::new(binary())
        .args(["lab", "--prefix", &prefix])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn lab");
    let link = service::LabPaths::new(&prefix).pin_dir.join("links/eth1");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !link.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(link.exists(), "the lab's daemon never attached");
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id().cast_signed(), libc::SIGINT) };
    let out = child.wait_with_output().expect("wait for lab");
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    let left = leftovers(&prefix);
    assert!(
        left.is_empty(),
        "interrupted lab left {left:?}\n{}",
        text(&out)
    );
}

/// A site of one's own (`--site`, `--policies`) with what no shipped matrix has: an SCTP rule
/// (sent as a crafted INIT from a raw socket) and an ICMP type other than echo (seen by a raw
/// socket on the host).
#[test]
fn lab_custom_site_with_sctp_and_icmp_timestamp() {
    let dir = Scratch::new("pg-lab-site-");
    let policies = dir.0.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::copy(
        policies_dir().join("essentials.toml"),
        policies.join("essentials.toml"),
    )
    .unwrap();
    std::fs::write(
        policies.join("labtest.toml"),
        r#"[product]
id = "labtest"
name = "Lab test product"
document = "tests/tests/lab.rs"

[roles."lt.server"]
description = "A managed server"
managed = true

[roles."lt.client"]
description = "A client"

[[rules]]
id = "LT-SCTP"
from = ["lt.client"]
to = ["lt.server"]
proto = "sctp"
ports = "3868"
purpose = "Diameter over SCTP"
doc = "test"

[[rules]]
id = "LT-TIMESTAMP"
from = ["lt.client"]
to = ["lt.server"]
proto = "icmp"
icmp_type = "13"
purpose = "ICMP timestamp"
doc = "test"
"#,
    )
    .unwrap();
    let site = dir.0.join("site.toml");
    std::fs::write(
        &site,
        r#"products = ["labtest"]
features = []
disabled_features = []
mode = "enforce"

[roles]
"lt.server" = ["198.18.20.1/32", "2001:db8:20::1/128"]
"lt.client" = ["198.18.21.0/24", "2001:db8:21::/64"]

[failsafe]
ssh_from = ["198.18.0.0/24"]

[host]
roles = ["lt.server"]
interfaces = ["eth1"]
"#,
    )
    .unwrap();
    let prefix = prefix();
    let _down = Down(prefix.clone());
    let (out, rows) = lab(
        &prefix,
        &[
            "--site",
            site.to_str().unwrap(),
            "--policies",
            policies.to_str().unwrap(),
        ],
    );
    drop(dir);
    assert!(out.status.success(), "lab failed\n{}", text(&out));
    for (id, count) in [("LT-SCTP", 2), ("LT-TIMESTAMP", 1)] {
        let ok = rows
            .iter()
            .filter(|r| r["rule"] == id && r["result"] == "ok" && r["delivered"] == true)
            .count();
        assert_eq!(ok, count, "{id}\n{}", text(&out));
    }
    let left = leftovers(&prefix);
    assert!(left.is_empty(), "left behind {left:?}");
}
