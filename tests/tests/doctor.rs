//! `portguard doctor`: every feature listed with a version and an effect, a verdict that follows
//! from the results, and the exit code the verdict calls for; with full privileges, with the
//! unit's capabilities only, and with none.

use std::process::Command;

use integration_tests::daemon::binary;

/// Every feature the probe must list (the kernel features issue #16 names, and what the
/// daemon needs from the system).
const FEATURES: [&str; 17] = [
    "capabilities",
    "bpffs",
    "btf",
    "xdp",
    "lpm_trie",
    "mmap_array",
    "lru_hash",
    "ringbuf",
    "skc_lookup_tcp",
    "sk_lookup_udp",
    "ktime_get_coarse_ns",
    "xdp_get_buff_len",
    "xdp_frags",
    "prog_test_run",
    "xdp_link",
    "xdp_link_update",
    "tcx",
];

/// Run `doctor --json`, optionally under `setpriv` with `privs`; the report and the exit code.
fn doctor(privs: &[&str]) -> (serde_json::Value, i32) {
    let mut cmd = if privs.is_empty() {
        Command::new(binary())
    } else {
        let mut c = Command::new("setpriv");
        c.args(privs).arg(binary());
        c
    };
    let out = cmd
        .args(["doctor", "--json"])
        .output()
        .expect("run portguard doctor (setpriv from util-linux for the reduced runs)");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor --json is not JSON ({e}):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (report, out.status.code().expect("exit code"))
}

/// The shape every report has, and the verdict and exit code its own entries call for.
fn check_consistent(report: &serde_json::Value, code: i32) {
    let features = report["features"].as_array().expect("features array");
    let ids: Vec<&str> = features
        .iter()
        .map(|f| f["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, FEATURES, "every feature, once, in order");
    for f in features {
        let id = &f["id"];
        let status = f["status"].as_str().expect("status");
        assert!(
            ["present", "absent", "unknown"].contains(&status),
            "{id}: {status}"
        );
        assert_eq!(f["present"], status == "present", "{id}");
        let since = f["since"].as_str().expect("since");
        let parts: Vec<&str> = since.split('.').collect();
        assert!(
            parts.len() == 2 && parts.iter().all(|p| p.parse::<u32>().is_ok()),
            "{id}: kernel version {since}"
        );
        assert!(
            f["without"].as_str().is_some_and(|w| w.len() > 20),
            "{id}: what portguard does without it"
        );
        assert!(f["required"].is_boolean(), "{id}");
        assert!(f["detail"].is_string(), "{id}");
    }
    let status = |id: &str| {
        features
            .iter()
            .find(|f| f["id"] == id)
            .and_then(|f| f["status"].as_str())
            .expect("listed")
    };
    let required_absent = features
        .iter()
        .any(|f| f["required"] == true && f["status"] == "absent");
    let expected = if status("capabilities") == "absent" {
        "unprivileged"
    } else if required_absent {
        "cannot-run"
    } else if features.iter().all(|f| f["status"] == "present") {
        "ok"
    } else {
        "degraded"
    };
    assert_eq!(report["verdict"], expected, "{report:#}");
    let expected_code = match expected {
        "ok" | "degraded" => 0,
        "cannot-run" => 1,
        _ => 2,
    };
    assert_eq!(code, expected_code, "exit code for verdict {expected}");
    assert!(report["kernel"].as_str().is_some_and(|k| !k.is_empty()));
}

fn status_of<'a>(report: &'a serde_json::Value, id: &str) -> &'a str {
    report["features"]
        .as_array()
        .and_then(|fs| fs.iter().find(|f| f["id"] == id))
        .and_then(|f| f["status"].as_str())
        .expect("listed")
}

#[test]
fn doctor_as_root_lists_every_feature_and_finds_what_this_suite_uses() {
    let (report, code) = doctor(&[]);
    check_consistent(&report, code);
    // The rest of this test suite loads the real program (every helper, frags, ring buffer,
    // LPM tries), attaches and updates XDP links, and runs BPF_PROG_TEST_RUN on this machine:
    // a probe that calls any of those absent here is wrong.
    for id in [
        "capabilities",
        "bpffs",
        "xdp",
        "lpm_trie",
        "mmap_array",
        "lru_hash",
        "ringbuf",
        "skc_lookup_tcp",
        "sk_lookup_udp",
        "ktime_get_coarse_ns",
        "xdp_get_buff_len",
        "xdp_frags",
        "prog_test_run",
        "xdp_link",
        "xdp_link_update",
    ] {
        assert_eq!(status_of(&report, id), "present", "{id}: {report:#}");
    }
    // tcx is either there or not (Linux 6.6), never "unknown" for root: the probe has its own
    // namespace to try it in.
    assert_ne!(status_of(&report, "tcx"), "unknown", "{report:#}");
}

#[test]
fn doctor_with_the_units_capabilities_probes_what_it_can_and_still_says_it_can_run() {
    // The systemd unit grants CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON, not CAP_SYS_ADMIN: no
    // private network namespace, so the attach probes cannot be tried and say so; nothing is
    // fatal for that (run attaches for real and reports its own errors).
    let (report, code) = doctor(&["--bounding-set=-all,+bpf,+net_admin,+perfmon"]);
    check_consistent(&report, code);
    assert_eq!(status_of(&report, "capabilities"), "present");
    assert_eq!(status_of(&report, "xdp_frags"), "present", "{report:#}");
    for id in ["xdp_link", "xdp_link_update", "tcx"] {
        assert_eq!(status_of(&report, id), "unknown", "{id}: {report:#}");
    }
    assert_eq!(report["verdict"], "degraded");
    assert_eq!(code, 0);
}

#[test]
fn doctor_without_privileges_is_an_environment_error() {
    let (report, code) = doctor(&[
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
    ]);
    check_consistent(&report, code);
    assert_eq!(status_of(&report, "capabilities"), "absent");
    assert_eq!(report["verdict"], "unprivileged");
    assert_eq!(code, 2);
    // Nothing the kernel refused to an unprivileged caller is reported as missing from it.
    for id in ["xdp_link", "tcx", "xdp_frags", "ringbuf"] {
        assert_ne!(status_of(&report, id), "absent", "{id}: {report:#}");
    }
}

#[test]
fn doctor_table_names_the_verdict() {
    let out = Command::new(binary())
        .arg("doctor")
        .output()
        .expect("run portguard doctor");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("FEATURE") && text.contains("SINCE"), "{text}");
    for name in ["XDP bpf_link", "tcx", "LPM trie maps", "bpf_skc_lookup_tcp"] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }
    assert!(text.lines().any(|l| l.starts_with("verdict: ")), "{text}");
}
