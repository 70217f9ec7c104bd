//! The Ansible role (packaging/ansible): syntax, ansible-lint, and a check-mode run on this
//! machine that renders the fleet's site file and has the binary under test check it, changing
//! nothing. Nothing here starts portguard or touches an interface: in check mode the role only
//! reads (service facts, stat) and validates in a scratch directory it removes.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::SystemTime,
};

use integration_tests::{daemon::binary, unique};
use serde_json::{Value, json};

/// Where `cargo xtask setup` installs ansible-core and ansible-lint (xtask/src/setup.rs,
/// `CI_VENV`), at the versions packaging/ansible/requirements-ci.txt pins.
const VENV: &str = "/opt/portguard-ci/venv";

/// What a run of the role on a host would install or write. None of it may appear or change in
/// check mode.
const HOST_PATHS: &[&str] = &[
    "/etc/portguard",
    "/etc/portguard/site.toml",
    "/etc/systemd/system/portguard.service.d",
    "/usr/local/bin/portguard",
    "/usr/local/lib/systemd/system/portguard.service",
    "/usr/local/share/portguard",
    "/var/cache/portguard",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

fn ansible_dir() -> PathBuf {
    repo().join("packaging/ansible")
}

fn tool(name: &str) -> PathBuf {
    let path = Path::new(VENV).join("bin").join(name);
    assert!(
        path.is_file(),
        "{} missing: run `cargo xtask setup`",
        path.display()
    );
    path
}

/// A directory of this test's own, removed on drop (also when the test fails).
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(unique("pg-ansible-"));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An Ansible tool run in `dir`, with temporary files in `scratch`, plain output and no SSH
/// session in the environment (the lockout guard of `portguard check` looks for one).
fn run(name: &str, dir: &Path, scratch: &Scratch, args: &[&str], env: &[(&str, &str)]) -> Output {
    let path = format!(
        "{VENV}/bin:{}",
        std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".to_owned())
    );
    let out = Command::new(tool(name))
        .args(args)
        .current_dir(dir)
        .env("PATH", path)
        .env("ANSIBLE_LOCAL_TEMP", scratch.0.join("local-tmp"))
        .env("ANSIBLE_REMOTE_TEMP", scratch.0.join("remote-tmp"))
        .env("ANSIBLE_NOCOLOR", "1")
        .env("NO_COLOR", "1")
        .env_remove("SSH_CONNECTION")
        .env_remove("SSH_CLIENT")
        .env_remove("SSH_TTY")
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("running {name}: {e}"));
    println!(
        "$ {name} {}\n--- stdout\n{}\n--- stderr\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn playbook_passes_syntax_check() {
    let scratch = Scratch::new();
    let out = run(
        "ansible-playbook",
        &ansible_dir(),
        &scratch,
        &["--syntax-check", "-i", "inventory/hosts.yml", "rollout.yml"],
        &[],
    );
    assert!(out.status.success(), "syntax check failed: {}", out.status);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("playbook: rollout.yml"),
        "syntax check did not read rollout.yml"
    );
}

#[test]
fn role_passes_ansible_lint_production_profile() {
    let scratch = Scratch::new();
    // --offline: nothing is fetched from Galaxy; the role needs no collection beyond
    // ansible.builtin.
    let out = run(
        "ansible-lint",
        &ansible_dir(),
        &scratch,
        &["--offline", "--profile", "production"],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "ansible-lint found problems ({})",
        out.status
    );
    assert!(
        stderr.contains("Profile 'production' was required, and it passed"),
        "ansible-lint did not pass the production profile: {stderr}"
    );
}

/// The lint configuration must not hide problems: a copy of the playbook tree with one bad task
/// added fails with the findings expected.
#[test]
fn ansible_lint_catches_a_bad_task() {
    let scratch = Scratch::new();
    let copy = scratch.0.join("ansible");
    copy_tree(&ansible_dir(), &copy);
    let tasks = copy.join("roles/portguard/tasks/main.yml");
    let mut text = std::fs::read_to_string(&tasks).unwrap();
    text.push_str("\n- command: systemctl restart portguard\n");
    std::fs::write(&tasks, text).unwrap();
    let out = run(
        "ansible-lint",
        &copy,
        &scratch,
        &["--offline", "--profile", "production"],
        &[],
    );
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "ansible-lint passed a bad task");
    for rule in ["fqcn", "name[missing]", "command-instead-of-module"] {
        assert!(all.contains(rule), "ansible-lint did not report {rule}");
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// What is at a path: whether a directory, size, modification time.
type PathState = Option<(bool, u64, SystemTime)>;

/// What exists at each of `HOST_PATHS`.
fn host_state() -> Vec<(&'static str, PathState)> {
    HOST_PATHS
        .iter()
        .map(|p| {
            let meta = std::fs::symlink_metadata(p)
                .ok()
                .map(|m| (m.is_dir(), m.len(), m.modified().unwrap()));
            (*p, meta)
        })
        .collect()
}

/// `ansible-playbook --check --diff` of `rollout.yml` against this machine (`-i localhost, -c
/// local`), with the example fleet variables (`inventory/group_vars`) and `extra` on top: every
/// task result (`tests/fixtures/ansible/callback_plugins`) and the exit status.
fn check_mode_run(scratch: &Scratch, extra: &Value) -> (Vec<Value>, Output) {
    let cli = binary();
    let mut vars = json!({
        "portguard_hosts": "localhost",
        // Root already; the play's `become` would need sudo, which CI machines lack.
        "ansible_become": false,
        "ansible_python_interpreter": format!("{VENV}/bin/python"),
        // The binary under test checks the site file; the product files of this checkout.
        "portguard_cli": cli,
        "portguard_binary_src": cli,
        "portguard_policies_dir": repo().join("policies"),
    });
    for (k, v) in extra.as_object().unwrap() {
        vars[k] = v.clone();
    }
    let vars_file = scratch.0.join("vars.json");
    std::fs::write(&vars_file, vars.to_string()).unwrap();
    let record = scratch.0.join("results.jsonl");
    let plugins = repo().join("tests/fixtures/ansible/callback_plugins");
    let group_vars = ansible_dir().join("inventory/group_vars/portguard_hosts.yml");
    let out = run(
        "ansible-playbook",
        &ansible_dir(),
        scratch,
        &[
            "--check",
            "--diff",
            "-i",
            "localhost,",
            "-c",
            "local",
            "-e",
            &format!("@{}", group_vars.display()),
            "-e",
            &format!("@{}", vars_file.display()),
            "rollout.yml",
        ],
        &[
            ("ANSIBLE_CALLBACK_PLUGINS", plugins.to_str().unwrap()),
            ("ANSIBLE_CALLBACKS_ENABLED", "record_results"),
            ("PORTGUARD_ANSIBLE_RECORD", record.to_str().unwrap()),
        ],
    );
    let results = std::fs::read_to_string(&record)
        .unwrap_or_else(|e| panic!("{}: {e}", record.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (results, out)
}

/// The record of the task named `name` on localhost: `status` (ok, failed, skipped,
/// unreachable) and the module's `result`.
fn task_record<'a>(results: &'a [Value], name: &str) -> &'a Value {
    results
        .iter()
        .find(|r| r["task"].as_str() == Some(name) && r["host"] == "localhost")
        .unwrap_or_else(|| panic!("task {name:?} not in the run"))
}

fn ran(results: &[Value], name: &str) -> bool {
    results.iter().any(|r| r["task"].as_str() == Some(name))
}

const CHECK_TASK: &str = "Check the rendered site file (portguard check --strict)";
const SCRATCH_TASK: &str = "Scratch directory for the rendered site file";
const SITE_TASK: &str = "Write the fleet site file";

#[test]
fn check_mode_renders_the_site_file_and_checks_it_without_changing_the_host() {
    let scratch = Scratch::new();
    let before = host_state();
    // The fleet switched to enforce with one variable.
    let (results, out) = check_mode_run(&scratch, &json!({ "portguard_mode": "enforce" }));
    assert_eq!(host_state(), before, "the check-mode run changed the host");
    assert!(
        out.status.success(),
        "check-mode run failed: {}",
        out.status
    );

    // `portguard check --strict` ran on the rendered file, with the binary under test.
    let record = task_record(&results, CHECK_TASK);
    assert_eq!(record["status"], "ok", "the check did not run, or failed");
    let check = &record["result"];
    assert_eq!(check["rc"], json!(0));
    let argv: Vec<&str> = check["cmd"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(argv[0], binary().display().to_string());
    assert_eq!(&argv[1..3], ["check", "--strict"]);
    // Its scratch directory is gone.
    let scratch_dir = task_record(&results, SCRATCH_TASK)["result"]["path"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        !Path::new(&scratch_dir).exists(),
        "{scratch_dir} left behind"
    );

    // The site file would be written, and the diff shows the fleet's one file: no [host]
    // section, the mode asked for, the Prometheus role and its scrape rule, the site rule.
    let site = &task_record(&results, SITE_TASK)["result"];
    assert_eq!(site["changed"], json!(true));
    let after = site["diff"][0]["after"].as_str().unwrap();
    for expected in [
        "mode = \"enforce\"",
        "products = [\"rhv\"]",
        "\"site.prometheus\" = [\"198.18.0.90/32\", \"2001:db8::90/128\"]",
        "id = \"SITE-prometheus-metrics\"",
        "from = [\"site.prometheus\"]",
        "ports = \"9742\"",
        "id = \"SITE-backup-agent\"",
        "ssh_from = [\"198.18.0.0/24\", \"2001:db8::/64\"]",
    ] {
        assert!(
            after.contains(expected),
            "rendered site file lacks {expected:?}:\n{after}"
        );
    }
    assert!(
        !after.lines().any(|l| l.trim() == "[host]"),
        "a fleet file has no [host]"
    );

    // The rendered file is exactly what the binary under test accepts: check it here too.
    let rendered = scratch.0.join("site.toml");
    std::fs::write(&rendered, after).unwrap();
    let direct = Command::new(binary())
        .args(["check", "--strict", "--site"])
        .arg(&rendered)
        .arg("--policies")
        .arg(repo().join("policies"))
        .output()
        .unwrap();
    assert!(
        direct.status.success(),
        "portguard check on the rendered file: {}",
        String::from_utf8_lossy(&direct.stderr)
    );
}

#[test]
fn check_mode_stops_at_a_site_file_portguard_check_refuses() {
    let scratch = Scratch::new();
    let before = host_state();
    // A site rule from a role nobody declared.
    let (results, out) = check_mode_run(
        &scratch,
        &json!({ "portguard_site_rules": [{
            "id": "SITE-undeclared",
            "from": ["site.nobody"],
            "proto": "tcp",
            "ports": 8443,
            "purpose": "from a role the site does not map",
        }]}),
    );
    assert_eq!(host_state(), before, "the check-mode run changed the host");
    assert!(!out.status.success(), "a refused site file passed");
    let record = task_record(&results, CHECK_TASK);
    assert_eq!(record["status"], "failed");
    let check = &record["result"];
    assert_eq!(check["rc"], json!(1), "policy problems exit 1");
    let stderr = check["stderr"].as_str().unwrap();
    // Every problem as FILE:LINE:COL, naming the role.
    assert!(
        stderr.contains("site.toml:") && stderr.contains("site.nobody"),
        "portguard check did not name the problem: {stderr}"
    );
    // The run stopped there: the site file task never ran.
    assert!(
        !ran(&results, SITE_TASK),
        "the role went on after a refused site file"
    );
    let scratch_dir = task_record(&results, SCRATCH_TASK)["result"]["path"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        !Path::new(&scratch_dir).exists(),
        "{scratch_dir} left behind"
    );
}
