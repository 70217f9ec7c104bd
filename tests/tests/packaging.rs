//! The systemd unit is valid as systemd reads it.

use std::process::Command;

use integration_tests::{Scratch, daemon::binary};

#[test]
fn unit_file_passes_systemd_analyze_verify() {
    // `cargo xtask setup` installs systemd (for its parser; nothing is started): a machine
    // without it fails here rather than passing unchecked.
    assert!(
        Command::new("systemd-analyze")
            .arg("--version")
            .output()
            .is_ok(),
        "systemd-analyze missing: run `cargo xtask setup`"
    );
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../packaging/portguard.service"
    ))
    .unwrap();
    // verify checks that ExecStart= names an executable: point it at the binary under test.
    let unit = unit.replace("/usr/bin/portguard", &binary().display().to_string());
    let dir = Scratch::new("pg-unit-");
    let path = dir.0.join("portguard.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Unknown or misspelt directives are only warnings to systemd: fail on any message.
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {}\n{stderr}",
        out.status
    );
}
