//! portguard and journald: a real `systemd-journald` started by the test (in a private mount
//! namespace, see `integration_tests::journal`), the real daemon logging to it as under
//! systemd, denied flows sent to it through the native protocol (`[audit] sink = "both"`) and
//! read back with `journalctl -o json`, field by field; and a daemon that cannot start leaves
//! its error at priority err.

use std::{net::SocketAddr, path::Path, process::Command, time::Duration};

use integration_tests::{
    daemon::{self, Daemon, GENEVE, connects},
    journal::Journald,
    net::Pair,
    unique,
};
use portguard::audit::journal::FLOW_MESSAGE_ID;
use serde_json::Value;

fn field<'a>(e: &'a Value, name: &str) -> &'a str {
    e[name].as_str().unwrap_or_default()
}

#[test]
fn denied_flows_reach_a_real_journald_with_their_fields() {
    let journald = Journald::start();
    let pair = Pair::new(142, 1500);
    let site = daemon::site(&pair, false);
    // The portal clients are elsewhere: the peer's tcp/5900 is refused, RHV-H5 the hint.
    let text = std::fs::read_to_string(&site).expect("site").replace(
        "[failsafe]",
        "\"rhv.vm-portal-client\" = [\"198.18.142.100/32\"]\n\n[audit]\nsink = \"both\"\n\n\
         [failsafe]",
    );
    std::fs::write(&site, text).expect("site");
    let d = Daemon::start_journaled(&pair.b, &site, &[], &journald);
    assert!(!connects(&pair, 5900));
    assert!(pair.udp_delivered(0, SocketAddr::new(pair.b4, GENEVE), 2) > 0);

    let flow = journald
        .wait_for(
            &[&format!("MESSAGE_ID={FLOW_MESSAGE_ID}")],
            Duration::from_secs(30),
            |e| field(e, "DPORT") == "5900",
        )
        .unwrap_or_else(|| panic!("no flow record in the journal: {:?}", journald.entries(&[])));
    let version = d.state().expect("state")["policy_version"]
        .as_str()
        .expect("version")
        .to_owned();
    for (name, want) in [
        ("RULE", "RHV-H5"),
        ("SOURCE", &pair.a4.to_string()),
        ("DESTINATION", &pair.b4.to_string()),
        ("PROTOCOL", "tcp"),
        ("PROTOCOL_NUMBER", "6"),
        ("DPORT", "5900"),
        ("REASON", "source-not-allowed"),
        ("ACTION", "drop"),
        ("POLICY_VERSION", &version),
        ("INTERFACE", &pair.b_if),
        ("SYSLOG_IDENTIFIER", "portguard"),
        ("PRIORITY", "5"),
        ("AUDIT_SCHEMA", "2"),
        ("_TRANSPORT", "journal"),
    ] {
        assert_eq!(field(&flow, name), want, "{name} in {flow:#}");
    }
    assert!(
        field(&flow, "COUNT").parse::<u64>().is_ok_and(|n| n >= 1),
        "{flow:#}"
    );
    assert!(field(&flow, "SPORT").parse::<u16>().is_ok(), "{flow:#}");
    assert!(
        field(&flow, "MESSAGE").starts_with(&format!("denied tcp {}:", pair.a4))
            && field(&flow, "MESSAGE").contains("source-not-allowed (port opened by RHV-H5"),
        "{flow:#}"
    );
    // Nothing allowed is logged as denied.
    assert!(
        journald
            .entries(&[&format!("MESSAGE_ID={FLOW_MESSAGE_ID}"), "DPORT=6081"])
            .is_empty()
    );

    // The file got the same record, with host, policy and schema.
    let recs = d.audit_records();
    let rec = recs
        .iter()
        .find(|r| r["dport"] == 5900)
        .unwrap_or_else(|| panic!("{recs:?}"));
    assert_eq!(rec["schema"], 2, "{rec}");
    assert_eq!(rec["policy_version"], version.as_str(), "{rec}");
    assert_eq!(rec["proto_number"], 6, "{rec}");
    assert_eq!(
        rec["hostname"].as_str(),
        Some(field(&flow, "_HOSTNAME")),
        "{rec}"
    );

    // The daemon's own log lines came through its stream, with their priorities.
    let ready = journald.wait_for(
        &["SYSLOG_IDENTIFIER=portguard", "_TRANSPORT=stdout"],
        Duration::from_secs(10),
        |e| field(e, "MESSAGE") == "ready",
    );
    let ready = ready.unwrap_or_else(|| panic!("{:?}", journald.entries(&[])));
    assert_eq!(field(&ready, "PRIORITY"), "6", "{ready:#}");
    drop(d);
}

#[test]
fn a_daemon_that_cannot_start_logs_its_error_at_priority_err() {
    let journald = Journald::start();
    let dir = std::env::temp_dir().join(unique("pg-journal-"));
    std::fs::create_dir_all(&dir).expect("dir");
    let site = dir.join("site.toml");
    std::fs::write(&site, "products = [\"no-such-product\"]\n").expect("site");
    let run = |journal: bool| {
        let mut cmd = Command::new(daemon::binary());
        cmd.args(["run", "--site"])
            .arg(&site)
            .arg("--policies")
            .arg(daemon::policies_dir())
            .arg("--pin-dir")
            .arg(Path::new("/sys/fs/bpf").join(unique("pg-jr-")))
            .arg("--run-dir")
            .arg(dir.join("run"));
        if journal {
            let (stream, id) = journald.stream("portguard");
            cmd.stderr(stream).env("JOURNAL_STREAM", id);
        } else {
            cmd.env_remove("JOURNAL_STREAM");
        }
        cmd.output().expect("portguard run")
    };
    let out = run(true);
    assert_eq!(out.status.code(), Some(1), "a policy problem");
    let error = journald
        .wait_for(&["-p", "err"], Duration::from_secs(10), |e| {
            field(e, "MESSAGE").starts_with("portguard: error:")
        })
        .unwrap_or_else(|| panic!("not at priority err: {:?}", journald.entries(&[])));
    assert_eq!(field(&error, "PRIORITY"), "3", "{error:#}");
    assert_eq!(field(&error, "SYSLOG_IDENTIFIER"), "portguard");
    // Every line of it, the diagnostics too.
    let lines: Vec<Value> = journald.entries(&["SYSLOG_IDENTIFIER=portguard"]);
    assert!(
        lines
            .iter()
            .any(|e| field(e, "MESSAGE").contains("no-such-product") && field(e, "PRIORITY") == "3"),
        "{lines:?}"
    );
    // Without the journal (a terminal, a pipe), no priority prefix.
    let plain = run(false);
    let err = String::from_utf8_lossy(&plain.stderr);
    assert!(err.contains("portguard: error:"), "{err}");
    assert!(!err.contains("<3>"), "{err}");
    // JOURNAL_STREAM inherited by a process whose stderr is elsewhere: no prefix either.
    let mut cmd = Command::new(daemon::binary());
    let stale = cmd
        .args(["run", "--site"])
        .arg(&site)
        .arg("--policies")
        .arg(daemon::policies_dir())
        .env("JOURNAL_STREAM", "1:2")
        .output()
        .expect("portguard run");
    assert!(
        !String::from_utf8_lossy(&stale.stderr).contains("<3>"),
        "{}",
        String::from_utf8_lossy(&stale.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
