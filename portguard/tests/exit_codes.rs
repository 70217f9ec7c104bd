//! One exit-code convention for every verb: 0 fine, 1 a policy or verdict problem, 2 a usage or
//! environment error. Each verb is run as a user runs it, and its status compared.

use std::path::Path;

use super::common::policies;

/// Run the CLI with `args`, outside any SSH session; its exit status.
fn status(args: &[&str]) -> i32 {
    let out = crate::common::portguard()
        .args(args)
        .env_remove("SSH_CONNECTION")
        .output()
        .expect("run portguard");
    out.status.code().unwrap_or_else(|| {
        panic!(
            "portguard {} was killed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("exit_codes")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

#[test]
fn policy_verbs_follow_one_exit_code_convention() {
    let pol = policies();
    let pol = path(&pol);
    let good = policies().join("examples/lab.toml");
    let good = path(&good);
    let dir = scratch("verbs");
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "products = [\"nope\"]\n").expect("write");
    let bad = path(&bad);
    let missing = dir.join("missing.toml");
    let missing = path(&missing);
    // The lab site with one more mapping, of a role no enabled rule uses: valid, with a warning.
    let warned = dir.join("warned.toml");
    let lab = std::fs::read_to_string(good).expect("lab.toml");
    let lab = lab.replacen(
        "[roles]\n",
        "[roles]\n\"rhv.dwh-external\" = [\"198.18.6.1/32\"]\n",
        1,
    );
    std::fs::write(&warned, lab).expect("write");
    let warned = path(&warned);

    // check
    assert_eq!(status(&["check", "--site", good, "--policies", pol]), 0);
    assert_eq!(status(&["check", "--site", bad, "--policies", pol]), 1);
    assert_eq!(status(&["check", "--site", warned, "--policies", pol]), 0);
    assert_eq!(
        status(&["check", "--strict", "--site", warned, "--policies", pol]),
        1
    );
    assert_eq!(status(&["check", "--site", missing, "--policies", pol]), 2);
    assert_eq!(status(&["check", "--no-such-flag"]), 2);

    // compile
    assert_eq!(status(&["compile", "--site", good, "--policies", pol]), 0);
    assert_eq!(status(&["compile", "--site", bad, "--policies", pol]), 1);
    assert_eq!(
        status(&["compile", "--site", missing, "--policies", pol]),
        2
    );
    // A host role the site does not have is the policy's problem.
    assert_eq!(
        status(&[
            "compile",
            "--site",
            good,
            "--policies",
            pol,
            "--host-roles",
            "no.such-role"
        ]),
        1
    );

    // explain: a deny is a verdict, not a failure, unless asked for as one.
    let flow = |port: &str, extra: &[&str]| {
        let mut a = vec![
            "explain",
            "--site",
            good,
            "--policies",
            pol,
            "--src",
            "198.18.1.10",
            "--dst",
            "198.18.2.1",
            "--proto",
            "tcp",
            "--dport",
            port,
        ];
        a.extend_from_slice(extra);
        status(&a)
    };
    assert_eq!(flow("54321", &[]), 0, "RHV-H10 allows the Manager");
    assert_eq!(flow("54321", &["--exit-status"]), 0);
    assert_eq!(flow("5555", &[]), 0, "a deny is an answer");
    assert_eq!(flow("5555", &["--exit-status"]), 1);
    assert_eq!(
        status(&[
            "explain",
            "--site",
            bad,
            "--policies",
            pol,
            "--src",
            "198.18.1.10",
            "--dst",
            "198.18.2.1",
            "--proto",
            "tcp",
            "--dport",
            "22"
        ]),
        1
    );
    assert_eq!(status(&["explain", "--site", good, "--proto", "tcp"]), 2);
}

#[test]
fn verbs_without_a_daemon_or_its_files_fail_as_environment_errors() {
    let dir = scratch("environment");
    // audit: a log that is not there is an error, an empty one is not.
    let log = dir.join("audit.jsonl");
    assert_eq!(status(&["audit", "--log", path(&log)]), 2);
    std::fs::write(&log, "").expect("write");
    assert_eq!(status(&["audit", "--log", path(&log)]), 0);

    // Verbs that need a daemon or its state, where there is none.
    let pins = dir.join("pins");
    let run = dir.join("run");
    let state = ["--pin-dir", path(&pins), "--run-dir", path(&run)];
    for verb in ["reload", "confirm"] {
        let mut a = vec![verb];
        a.extend(state);
        assert_eq!(status(&a), 2, "{verb} without a daemon");
    }
    let mut a = vec!["apply", "--confirm-within", "60s"];
    a.extend(state);
    assert_eq!(status(&a), 2, "apply without a daemon");
    assert_eq!(status(&["apply", "--confirm-within", "soon"]), 2);
    assert_eq!(status(&["lab", "--prefix", "Not-Valid"]), 2);
}
