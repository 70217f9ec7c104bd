//! `check` refuses, unless forced, a site that would refuse the next login of the SSH session
//! it runs in (and `apply` uses the same guard, with the daemon's site file).

use std::process::Command;

use crate::common::policies;

fn check(ssh_connection: Option<&str>, force: bool) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_portguard"));
    cmd.args(["check", "--site"])
        .arg(policies().join("examples/lab.toml"))
        .arg("--policies")
        .arg(policies())
        .env_remove("SSH_CONNECTION");
    if force {
        cmd.arg("--force");
    }
    if let Some(c) = ssh_connection {
        cmd.env("SSH_CONNECTION", c);
    }
    cmd.output().unwrap()
}

#[test]
fn check_refuses_a_site_that_locks_out_the_current_ssh_session() {
    // From the failsafe network: fine.
    let ok = check(Some("198.18.0.7 50000 198.18.2.1 22"), false);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // From the Manager, which RHV-H1 lets in: fine.
    let ok = check(Some("198.18.1.10 50000 198.18.2.1 22"), false);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // From a portal client, which no rule lets reach tcp/22: refused, saying why.
    let cut = check(Some("198.18.4.7 50000 198.18.2.1 22"), false);
    let err = String::from_utf8_lossy(&cut.stderr);
    assert!(!cut.status.success());
    assert!(
        err.contains(
            "lab.toml: error: this policy would refuse new SSH connections from 198.18.4.7"
        ),
        "{err}"
    );
    // Unless forced; and outside SSH nothing is checked.
    assert!(
        check(Some("198.18.4.7 50000 198.18.2.1 22"), true)
            .status
            .success()
    );
    assert!(check(None, false).status.success());
}
