//! `check` refuses, unless forced, a site that would refuse the next login of the SSH session
//! it runs in (and `apply` uses the same guard, with the daemon's site file).

use crate::common::{hermetic, policies, portguard};

fn check(ssh_connection: Option<&str>, force: bool) -> std::process::Output {
    let mut cmd = portguard();
    cmd.args(["check", "--site"])
        .arg(policies().join("examples/lab.toml"))
        .arg("--policies")
        .arg(policies());
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

/// `check` run the way `sudo` and Ansible's `become` run it: by a shell of the SSH session
/// (which has `SSH_CONNECTION`), with a fresh environment (which has not). `parent` is the
/// program that plays the session's shell.
fn check_stripped(parent: &std::path::Path, ssh_connection: Option<&str>) -> std::process::Output {
    let mut cmd = hermetic(parent);
    cmd.arg("-c")
        // Not the last command: the shell stays the parent instead of exec'ing.
        .arg("env -i PATH=/usr/bin:/bin \"$0\" \"$@\"; exit $?")
        .arg(env!("CARGO_BIN_EXE_portguard"))
        .args(["check", "--site"])
        .arg(policies().join("examples/lab.toml"))
        .arg("--policies")
        .arg(policies());
    if let Some(c) = ssh_connection {
        cmd.env("SSH_CONNECTION", c);
    }
    cmd.output().unwrap()
}

#[test]
fn the_guard_finds_the_session_when_sudo_or_become_strip_the_environment() {
    let sh = std::path::Path::new("/bin/sh");
    // The portal client again: refused, found in the parent shell's environment.
    let cut = check_stripped(sh, Some("198.18.4.7 50000 198.18.2.1 22"));
    let err = String::from_utf8_lossy(&cut.stderr);
    assert_eq!(cut.status.code(), Some(1), "{err}");
    assert!(
        err.contains("would refuse new SSH connections from 198.18.4.7"),
        "{err}"
    );
    // The failsafe network: allowed.
    let ok = check_stripped(sh, Some("198.18.0.7 50000 198.18.2.1 22"));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

#[test]
fn under_sshd_without_a_readable_session_the_guard_says_it_did_not_check() {
    // A shell named like sshd's session process, with no SSH_CONNECTION anywhere.
    let dir = std::env::temp_dir().join(format!("pg-sshd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sshd = dir.join("sshd");
    std::fs::copy("/bin/sh", &sshd).unwrap();
    let out = check_stripped(&sshd, None);
    std::fs::remove_dir_all(&dir).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "a warning, not a refusal: {err}");
    assert!(
        err.contains("cannot tell which SSH session this runs in")
            && err.contains("the lockout guard did not check"),
        "{err}"
    );
    // Outside sshd there is no session: nothing to say.
    let quiet = check_stripped(std::path::Path::new("/bin/sh"), None);
    assert!(
        !String::from_utf8_lossy(&quiet.stderr).contains("lockout guard"),
        "{}",
        String::from_utf8_lossy(&quiet.stderr)
    );
}
